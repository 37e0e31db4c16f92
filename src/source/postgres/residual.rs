//! Predicates with a regex, split between the server and this process: the
//! regex-free subtrees run in SQL (as boolean columns), the regexes here,
//! and the tree is recombined with three-valued logic.

use regex::Regex;
use serde_json::Value as Json;

use super::catalog::{Column, Columns};
use crate::filter::Predicate;
use crate::source::SourceError;

pub(super) fn has_regex(p: &Predicate) -> bool {
    match p {
        Predicate::And(ps) | Predicate::Or(ps) => ps.iter().any(has_regex),
        Predicate::Not(inner) => has_regex(inner),
        Predicate::Regex { .. } => true,
        _ => false,
    }
}

/// A predicate with regexes, split between the server and this process.
pub(super) enum Split {
    /// A regex-free subtree, as SQL.
    Sql(String),
    Regex {
        field: String,
        negated: bool,
        re: Regex,
    },
    And(Vec<Split>),
    Or(Vec<Split>),
    Not(Box<Split>),
}

impl Split {
    /// SQL that holds whenever the whole predicate holds (`None`: no such
    /// condition known), so filtering on it on the server never loses a row.
    pub(super) fn necessary(&self) -> Option<String> {
        match self {
            Split::Sql(s) => Some(s.clone()),
            Split::Regex { .. } | Split::Not(_) => None,
            Split::And(parts) => {
                let known: Vec<String> = parts.iter().filter_map(Split::necessary).collect();
                (!known.is_empty()).then(|| format!("({})", known.join(" AND ")))
            }
            Split::Or(parts) => {
                let all: Option<Vec<String>> = parts.iter().map(Split::necessary).collect();
                all.filter(|v| !v.is_empty())
                    .map(|v| format!("({})", v.join(" OR ")))
            }
        }
    }

    /// Turns the split into its evaluator: SQL parts become indexes of
    /// boolean columns (appended to `conds`), regex fields indexes of fields
    /// (appended to `fields` when not already read).
    pub(super) fn plan(
        self,
        conds: &mut Vec<String>,
        fields: &mut Vec<Column>,
        columns: &Columns,
    ) -> Result<Residual, SourceError> {
        Ok(match self {
            Split::Sql(s) => {
                conds.push(s);
                Residual::Cond(conds.len() - 1)
            }
            Split::Regex { field, negated, re } => {
                let idx = match fields.iter().position(|c| c.name == field) {
                    Some(i) => i,
                    None => {
                        fields.push(columns.get(&field)?.clone());
                        fields.len() - 1
                    }
                };
                Residual::Regex { idx, negated, re }
            }
            Split::And(parts) => Residual::And(
                parts
                    .into_iter()
                    .map(|p| p.plan(conds, fields, columns))
                    .collect::<Result<_, _>>()?,
            ),
            Split::Or(parts) => Residual::Or(
                parts
                    .into_iter()
                    .map(|p| p.plan(conds, fields, columns))
                    .collect::<Result<_, _>>()?,
            ),
            Split::Not(inner) => Residual::Not(Box::new(inner.plan(conds, fields, columns)?)),
        })
    }
}

/// The exact predicate, evaluated here on each streamed row.
pub(super) enum Residual {
    /// The server's value of a regex-free subtree (a boolean column).
    Cond(usize),
    /// A regex on the field read into column `idx`.
    Regex {
        idx: usize,
        negated: bool,
        re: Regex,
    },
    And(Vec<Residual>),
    Or(Vec<Residual>),
    Not(Box<Residual>),
}

impl Residual {
    /// Three-valued: `None` is unknown, which does not match.
    pub(super) fn eval(&self, vals: &[Json], conds: &[Option<bool>]) -> Option<bool> {
        match self {
            Residual::Cond(i) => conds.get(*i).copied().flatten(),
            Residual::Regex { idx, negated, re } => match vals.get(*idx) {
                Some(Json::String(s)) => Some(re.is_match(s) != *negated),
                _ => None,
            },
            Residual::And(parts) => {
                let mut unknown = false;
                for p in parts {
                    match p.eval(vals, conds) {
                        Some(false) => return Some(false),
                        None => unknown = true,
                        Some(true) => {}
                    }
                }
                (!unknown).then_some(true)
            }
            Residual::Or(parts) => {
                let mut unknown = false;
                for p in parts {
                    match p.eval(vals, conds) {
                        Some(true) => return Some(true),
                        None => unknown = true,
                        Some(false) => {}
                    }
                }
                (!unknown).then_some(false)
            }
            Residual::Not(inner) => inner.eval(vals, conds).map(|b| !b),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn residual_logic_is_three_valued() {
        let t = Residual::Cond(0);
        let u = Residual::Cond(1);
        let f = Residual::Cond(2);
        let conds = [Some(true), None, Some(false)];
        let and = Residual::And(vec![Residual::Cond(0), Residual::Cond(1)]);
        assert_eq!(and.eval(&[], &conds), None);
        let or = Residual::Or(vec![u, t]);
        assert_eq!(or.eval(&[], &conds), Some(true));
        assert_eq!(Residual::Not(Box::new(f)).eval(&[], &conds), Some(true));
        let re = Residual::Regex {
            idx: 0,
            negated: true,
            re: Regex::new(r"^\d+$").unwrap(),
        };
        assert_eq!(re.eval(&[Json::Null], &conds), None);
        assert_eq!(re.eval(&[Json::String("12".into())], &conds), Some(false));
    }
}
