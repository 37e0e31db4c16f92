//! AST → typed `Predicate`, checked against a source's `Schema`: every field
//! must exist, every operator must suit the field's type, and every literal is
//! converted to the field's `Value` (times from RFC 3339, integers widened for
//! float fields, regexes compiled once under the size limit). Errors point at
//! the token to blame: the field name, the operator or the literal.

mod suggest;
mod values;

#[cfg(test)]
pub(crate) mod tests;

use crate::filter::Limits;
use crate::filter::ast::{Condition, Expr, Literal, Operand, Operator, Spanned};
use crate::filter::error::{FilterError, FilterErrorKind};
use crate::filter::predicate::{CompareOp, Predicate};
use crate::filter::regexes::RegexCache;
use crate::filter::schema::{FieldType, Schema};

use suggest::unknown_field;
use values::typed_value;

/// Type `expr` against `schema`. The result is not yet canonical (operand
/// order and `in` lists are as written); see `canonical::canonicalize`.
pub fn validate(
    expr: &Expr,
    schema: &Schema,
    limits: &Limits,
    regexes: &RegexCache,
) -> Result<Predicate, FilterError> {
    match expr {
        Expr::And(operands) => Ok(Predicate::And(
            operands
                .iter()
                .map(|e| validate(e, schema, limits, regexes))
                .collect::<Result<_, _>>()?,
        )),
        Expr::Or(operands) => Ok(Predicate::Or(
            operands
                .iter()
                .map(|e| validate(e, schema, limits, regexes))
                .collect::<Result<_, _>>()?,
        )),
        Expr::Not { expr, .. } => Ok(Predicate::Not(Box::new(validate(
            expr, schema, limits, regexes,
        )?))),
        Expr::Condition(c) => condition(c, schema, limits, regexes),
    }
}

fn condition(
    c: &Condition,
    schema: &Schema,
    limits: &Limits,
    regexes: &RegexCache,
) -> Result<Predicate, FilterError> {
    let name = &c.field.node;
    let Some(ty) = schema.field_type(name) else {
        return Err(unknown_field(&c.field, schema));
    };
    check_operator(c, ty)?;
    let field = name.clone();
    match (c.op.node, &c.operand) {
        (Operator::Compare(op), Operand::Single(lit)) => Ok(Predicate::Compare {
            value: typed_value(lit, name, ty)?,
            field,
            op,
        }),
        (Operator::In | Operator::NotIn, Operand::List(items)) => Ok(Predicate::In {
            values: items
                .iter()
                .map(|lit| typed_value(lit, name, ty))
                .collect::<Result<_, _>>()?,
            negated: c.op.node == Operator::NotIn,
            field,
        }),
        (Operator::Matches | Operator::NotMatches, Operand::Single(lit)) => {
            let pattern = string_operand(lit, c.op.node, "a regex in double quotes")?;
            compile_regex(pattern, lit, limits, regexes)?;
            Ok(Predicate::Regex {
                field,
                negated: c.op.node == Operator::NotMatches,
                pattern: pattern.to_string(),
            })
        }
        (Operator::Contains, Operand::Single(lit)) => Ok(Predicate::Contains {
            field,
            needle: string_operand(lit, c.op.node, "a string in double quotes")?.to_string(),
        }),
        // Only reachable for a hand-built AST; the parser pairs operators and
        // operands correctly.
        _ => Err(FilterError::new(
            FilterErrorKind::Syntax,
            c.op.pos,
            format!(
                "operator `{}` does not take this operand",
                c.op.node.as_str()
            ),
        )),
    }
}

/// The operators each type accepts, in words for the error message.
fn allowed_operators(ty: FieldType) -> &'static str {
    match ty {
        FieldType::String => "=, !=, <, <=, >, >=, `in`, `not in`, `~`, `!~` or `contains`",
        FieldType::Time | FieldType::Integer | FieldType::Float => {
            "=, !=, <, <=, >, >=, `in` or `not in`"
        }
        FieldType::Boolean => "=, !=, `in` or `not in`",
    }
}

fn check_operator(c: &Condition, ty: FieldType) -> Result<(), FilterError> {
    let ok = match c.op.node {
        Operator::In | Operator::NotIn | Operator::Compare(CompareOp::Eq | CompareOp::Ne) => true,
        Operator::Compare(_) => ty != FieldType::Boolean,
        Operator::Matches | Operator::NotMatches | Operator::Contains => ty == FieldType::String,
    };
    if ok {
        return Ok(());
    }
    Err(FilterError::new(
        FilterErrorKind::TypeMismatch,
        c.op.pos,
        format!(
            "operator `{}` cannot be used with {} field `{}`",
            c.op.node.as_str(),
            ty,
            c.field.node
        ),
    )
    .with_expected(allowed_operators(ty)))
}
fn string_operand<'a>(
    lit: &'a Spanned<Literal>,
    op: Operator,
    expected: &str,
) -> Result<&'a str, FilterError> {
    match &lit.node {
        Literal::String(s) => Ok(s),
        other => Err(FilterError::new(
            FilterErrorKind::TypeMismatch,
            lit.pos,
            format!(
                "`{}` needs a string, but the value is {}",
                op.as_str(),
                other.describe()
            ),
        )
        .with_expected(expected)),
    }
}

/// Compile once here so that a bad or oversized regex is the user's error at
/// submit time, not a source's failure later.
fn compile_regex(
    pattern: &str,
    lit: &Spanned<Literal>,
    limits: &Limits,
    regexes: &RegexCache,
) -> Result<(), FilterError> {
    regexes
        .within(pattern, limits.regex_size_limit)
        .map(drop)
        .map_err(|e| {
            let reason = match &e {
                regex::Error::CompiledTooBig(limit) => {
                    format!("it compiles to more than the limit of {limit} bytes")
                }
                // Syntax errors are multi-line drawings; the line starting
                // with "error:" is the readable part.
                other => {
                    let text = other.to_string();
                    text.lines()
                        .find_map(|l| l.trim().strip_prefix("error:"))
                        .or_else(|| text.lines().find(|l| !l.trim().is_empty()))
                        .unwrap_or("unknown error")
                        .trim()
                        .to_string()
                }
            };
            FilterError::new(
                FilterErrorKind::InvalidRegex,
                lit.pos,
                format!("invalid regex: {reason}"),
            )
        })
}
