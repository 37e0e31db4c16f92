//! What a filter is checked against: the fields a source offers and their types.

use std::fmt;

/// The type of a field, as the filter language sees it. Sources map their own
/// column types onto these five.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FieldType {
    /// A point in time (UTC). Filter literals are RFC 3339 strings.
    Time,
    String,
    Integer,
    Float,
    Boolean,
}

impl fmt::Display for FieldType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FieldType::Time => "time",
            FieldType::String => "string",
            FieldType::Integer => "integer",
            FieldType::Float => "float",
            FieldType::Boolean => "boolean",
        })
    }
}

/// The fields of a source, in the source's own order, and which one is the
/// time column that orders results and bounds the time range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schema {
    pub fields: Vec<(String, FieldType)>,
    pub time_column: String,
}

impl Schema {
    pub fn field_type(&self, name: &str) -> Option<FieldType> {
        self.fields.iter().find(|(n, _)| n == name).map(|(_, t)| *t)
    }

    pub fn field_names(&self) -> impl Iterator<Item = &str> {
        self.fields.iter().map(|(n, _)| n.as_str())
    }
}
