//! The validated, canonical filter: what reaches a source. Every literal is
//! already typed to its field, so a source translates it without guessing.

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CompareOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

/// A literal, typed to the field it is compared with.
#[derive(Debug, Clone, PartialEq, PartialOrd)]
pub enum Value {
    String(String),
    Integer(i64),
    Float(f64),
    Boolean(bool),
    /// Microseconds since the Unix epoch, UTC.
    Time(i64),
}

/// A validated filter. `And(vec![])` matches every row (the empty filter).
#[derive(Debug, Clone, PartialEq)]
pub enum Predicate {
    And(Vec<Predicate>),
    Or(Vec<Predicate>),
    Not(Box<Predicate>),
    Compare {
        field: String,
        op: CompareOp,
        value: Value,
    },
    /// `field in (...)` / `field not in (...)`; `values` is sorted and free of duplicates.
    In {
        field: String,
        negated: bool,
        values: Vec<Value>,
    },
    /// `field ~ "re"` / `field !~ "re"`: unanchored match (Rust `regex` syntax),
    /// already compiled once under the size limit during validation.
    Regex {
        field: String,
        negated: bool,
        pattern: String,
    },
    /// `field contains "text"`: case-sensitive substring.
    Contains {
        field: String,
        needle: String,
    },
}
