//! What the catalog says about the source's relation: its columns and
//! their types, as this source reads them, and how each is named in SQL.

use sqlx::PgPool;

use crate::filter::{FieldType, Schema};
use crate::source::SourceError;

/// The column types this source reads, after mapping the catalog's names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum PgType {
    Timestamptz,
    Timestamp,
    Text,
    Integer,
    Float4,
    Float8,
    Boolean,
}

impl PgType {
    fn from_catalog(name: &str) -> Option<PgType> {
        Some(match name {
            "timestamptz" => PgType::Timestamptz,
            "timestamp" => PgType::Timestamp,
            "text" | "varchar" | "bpchar" => PgType::Text,
            "int2" | "int4" | "int8" => PgType::Integer,
            "float4" => PgType::Float4,
            "float8" => PgType::Float8,
            "bool" => PgType::Boolean,
            _ => return None,
        })
    }

    pub(super) fn field_type(self) -> FieldType {
        match self {
            PgType::Timestamptz | PgType::Timestamp => FieldType::Time,
            PgType::Text => FieldType::String,
            PgType::Integer => FieldType::Integer,
            PgType::Float4 | PgType::Float8 => FieldType::Float,
            PgType::Boolean => FieldType::Boolean,
        }
    }
}

/// A column of the relation, as offered to filters.
#[derive(Debug, Clone)]
pub(super) struct Column {
    pub(super) name: String,
    /// `"name"` with `"` doubled: safe to splice into SQL text.
    pub(super) quoted: String,
    pub(super) ty: PgType,
}

impl Column {
    /// The expression compared against string literals: byte order, like Arrow.
    pub(super) fn compared(&self) -> String {
        match self.ty {
            PgType::Text => format!("{} COLLATE \"C\"", self.quoted),
            _ => self.quoted.clone(),
        }
    }

    /// What the SELECT list reads; casts make the decoded type fixed (domains
    /// and narrow integers included). Times come back as µs since the epoch:
    /// sqlx's chrono decoder panics on `infinity`, a cast to int8 errors instead.
    pub(super) fn selected(&self) -> String {
        let q = &self.quoted;
        match self.ty {
            PgType::Timestamptz | PgType::Timestamp => {
                format!("(extract(epoch FROM {q}) * 1000000)::int8")
            }
            // Not cast: `::text` would strip a char(n)'s padding.
            PgType::Text => q.clone(),
            PgType::Integer => format!("{q}::int8"),
            PgType::Float4 => format!("{q}::float4"),
            PgType::Float8 => format!("{q}::float8"),
            PgType::Boolean => format!("{q}::bool"),
        }
    }
}

pub(super) fn quote(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

/// One attribute as the catalog describes it.
#[derive(sqlx::FromRow)]
struct CatalogColumn {
    schema_name: String,
    table_name: String,
    database: String,
    column_name: String,
    type_name: String,
}

/// The relation a source reads, as the catalog found it.
pub(super) struct Relation {
    /// `postgres:host/database/schema.table`, without credentials.
    pub(super) id: String,
    /// `"schema"."table"`.
    pub(super) quoted: String,
    pub(super) schema: Schema,
    pub(super) columns: Columns,
}

/// The offered columns, in schema order.
#[derive(Debug)]
pub(super) struct Columns(Vec<Column>);

impl Columns {
    pub(super) fn get(&self, name: &str) -> Result<&Column, SourceError> {
        self.0
            .iter()
            .find(|c| c.name == name)
            .ok_or_else(|| SourceError::UnknownField {
                field: name.to_owned(),
                available: self
                    .0
                    .iter()
                    .map(|c| c.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }
}

/// Reads the columns of `table` (`name` found via the search path, or
/// `schema.name`) and checks its time column; `host` goes into the id.
pub(super) async fn read_relation(
    pool: &PgPool,
    host: &str,
    table: &str,
    time_column: &str,
) -> Result<Relation, SourceError> {
    let (schema_name, table_name) = match table.split_once('.') {
        Some((s, t)) => (Some(s), t),
        None => (None, table),
    };
    // to_regclass resolves through the search path like a query would;
    // quote_ident keeps the names exact.
    let catalog: Vec<CatalogColumn> = sqlx::query_as(
        "SELECT n.nspname::text AS schema_name, c.relname::text AS table_name,
                current_database()::text AS database, a.attname::text AS column_name,
                CASE WHEN t.typtype = 'd' THEN bt.typname ELSE t.typname END::text AS type_name
         FROM pg_attribute a
         JOIN pg_class c ON c.oid = a.attrelid
         JOIN pg_namespace n ON n.oid = c.relnamespace
         JOIN pg_type t ON t.oid = a.atttypid
         LEFT JOIN pg_type bt ON bt.oid = t.typbasetype
         WHERE a.attrelid = to_regclass(CASE WHEN $1::text IS NULL THEN quote_ident($2)
                                             ELSE quote_ident($1) || '.' || quote_ident($2) END)
           AND a.attnum > 0 AND NOT a.attisdropped
         ORDER BY a.attnum",
    )
    .bind(schema_name)
    .bind(table_name)
    .fetch_all(pool)
    .await?;
    let Some(first) = catalog.first() else {
        return Err(SourceError::BadLocation {
            location: table.to_owned(),
            reason:
                "no table or view of that name is visible on the search path (use schema.table)"
                    .into(),
        });
    };
    let qualified = format!("{}.{}", first.schema_name, first.table_name);
    let relation = format!("{}.{}", quote(&first.schema_name), quote(&first.table_name));
    let id = format!("postgres:{host}/{}/{qualified}", first.database);

    let time = catalog
        .iter()
        .find(|c| c.column_name == time_column)
        .ok_or_else(|| SourceError::NoTimeColumn {
            column: time_column.to_owned(),
            file: qualified.clone(),
            available: catalog
                .iter()
                .map(|c| c.column_name.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        })?;
    if PgType::from_catalog(&time.type_name).map(PgType::field_type) != Some(FieldType::Time) {
        return Err(SourceError::TimeColumnType {
            column: time_column.to_owned(),
            file: qualified,
            found: time.type_name.clone(),
        });
    }
    let mut columns = Vec::new();
    for c in &catalog {
        match PgType::from_catalog(&c.type_name) {
            Some(ty) => columns.push(Column {
                name: c.column_name.clone(),
                quoted: quote(&c.column_name),
                ty,
            }),
            None => tracing::warn!(
                column = %c.column_name,
                data_type = %c.type_name,
                "column type not supported by filters; leaving it out of the schema"
            ),
        }
    }
    let schema = Schema {
        fields: columns
            .iter()
            .map(|c| (c.name.clone(), c.ty.field_type()))
            .collect(),
        time_column: time_column.to_owned(),
    };
    Ok(Relation {
        id,
        quoted: relation,
        schema,
        columns: Columns(columns),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_quoted_with_doubled_quotes() {
        assert_eq!(quote("ts"), "\"ts\"");
        assert_eq!(quote("a\"b; --"), "\"a\"\"b; --\"");
    }
}
