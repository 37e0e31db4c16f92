//! `field ~ "re"` as a DataFusion function that holds its compiled regex.
//!
//! DataFusion's own `~` operator compiles its pattern again each time it
//! evaluates a batch, and compiling (the regex crate builds a DFA for small
//! patterns) costs more than matching a batch's rows: a job reads many
//! batches, and a hundred concurrent jobs spent a fifth of their CPU
//! compiling. Here a query compiles each pattern once, when its filter is
//! translated. Matching is the same: the `regex` crate's `is_match`, and a
//! null field gives null (unknown), as with `~`.

use std::hash::{Hash, Hasher};
use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, AsArray, BooleanArray};
use datafusion::arrow::datatypes::DataType;
use datafusion::common::{Result, ScalarValue, exec_err};
use datafusion::logical_expr::{
    ColumnarValue, Expr, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use regex::Regex;

/// Whether `column` matches `regex`, as an expression.
pub(crate) fn regex_match(column: Expr, regex: Regex) -> Expr {
    let strings = vec![DataType::Utf8, DataType::LargeUtf8, DataType::Utf8View];
    ScalarUDF::new_from_impl(RegexMatch {
        regex,
        signature: Signature::uniform(1, strings, Volatility::Immutable),
    })
    .call(vec![column])
}

#[derive(Debug)]
struct RegexMatch {
    regex: Regex,
    signature: Signature,
}

// Two instances are the same function when their patterns are equal.
impl PartialEq for RegexMatch {
    fn eq(&self, other: &Self) -> bool {
        self.regex.as_str() == other.regex.as_str()
    }
}

impl Eq for RegexMatch {}

impl Hash for RegexMatch {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.regex.as_str().hash(state);
    }
}

impl RegexMatch {
    fn matches(&self, values: &ArrayRef) -> Result<BooleanArray> {
        let one = |s: Option<&str>| s.map(|s| self.regex.is_match(s));
        Ok(match values.data_type() {
            DataType::Utf8 => values.as_string::<i32>().iter().map(one).collect(),
            DataType::LargeUtf8 => values.as_string::<i64>().iter().map(one).collect(),
            DataType::Utf8View => values.as_string_view().iter().map(one).collect(),
            other => return exec_err!("a regex match needs strings, not {other}"),
        })
    }
}

impl ScalarUDFImpl for RegexMatch {
    fn name(&self) -> &str {
        "regex_match"
    }

    /// Shows the pattern in plans: `regex_match(endpoint, '^/api')`.
    fn display_name(&self, args: &[Expr]) -> Result<String> {
        let args: Vec<String> = args.iter().map(ToString::to_string).collect();
        Ok(format!(
            "regex_match({}, {:?})",
            args.join(", "),
            self.regex.as_str()
        ))
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(DataType::Boolean)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let [value] = args.args.as_slice() else {
            return exec_err!("regex_match takes one argument, got {}", args.args.len());
        };
        match value {
            ColumnarValue::Array(values) => {
                Ok(ColumnarValue::Array(Arc::new(self.matches(values)?)))
            }
            ColumnarValue::Scalar(value) => {
                let matched = self.matches(&value.to_array()?)?;
                Ok(ColumnarValue::Scalar(ScalarValue::try_from_array(
                    &matched, 0,
                )?))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Array, StringArray, StringViewArray};

    fn udf(pattern: &str) -> RegexMatch {
        RegexMatch {
            regex: Regex::new(pattern).unwrap(),
            signature: Signature::any(1, Volatility::Immutable),
        }
    }

    #[test]
    fn matches_like_the_operator_with_nulls_unknown() {
        let m = udf(r"^/api/v[12]/(orders|cart)");
        let values: ArrayRef = Arc::new(StringArray::from(vec![
            Some("/api/v1/orders/7"),
            None,
            Some("/api/v3/cart"),
        ]));
        let got = m.matches(&values).unwrap();
        assert_eq!(got, BooleanArray::from(vec![Some(true), None, Some(false)]));
        let views: ArrayRef = Arc::new(StringViewArray::from(vec![Some("x/api/v2/cart")]));
        assert!(!m.matches(&views).unwrap().value(0));
        assert!(udf("cart").matches(&views).unwrap().value(0));
        let ints: ArrayRef = Arc::new(datafusion::arrow::array::Int32Array::from(vec![1]));
        assert!(m.matches(&ints).is_err());
        assert_eq!(got.null_count(), 1);
    }

    #[test]
    fn equal_patterns_are_the_same_function() {
        assert_eq!(udf("a+"), udf("a+"));
        assert_ne!(udf("a+"), udf("a*"));
    }
}
