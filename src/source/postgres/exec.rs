//! A running query: the statement streams from one pooled connection, each
//! row is decoded into the JSON the Parquet source gives, and the residual
//! (if any) and the skip and limit are applied here.

use futures::StreamExt;
use serde_json::Value as Json;
use sqlx::postgres::PgRow;
use sqlx::{PgPool, Postgres, Row as _};
use tokio::sync::mpsc;

use super::catalog::{Column, PgType};
use super::residual::Residual;
use super::sql::{Param, bind};
use crate::source::rows::format_micros;
use crate::source::stream::Sent;
use crate::source::{Row, SourceError};

/// Rows buffered between the query task and the consumer.
pub(super) const CHANNEL_ROWS: usize = 256;

fn float(v: f64) -> Json {
    // As rows.rs: JSON has no NaN/∞.
    serde_json::Number::from_f64(v).map_or(Json::Null, Json::Number)
}

/// Reads column `i` of a row as the JSON rows.rs would produce.
fn cell(row: &PgRow, i: usize, ty: PgType) -> Result<Json, SourceError> {
    Ok(match ty {
        PgType::Timestamptz | PgType::Timestamp => match row.try_get::<Option<i64>, _>(i)? {
            None => Json::Null,
            Some(us) => Json::String(format_micros(us).ok_or_else(|| {
                SourceError::Internal(format!(
                    "timestamp {us} µs is outside the representable date range"
                ))
            })?),
        },
        PgType::Text => row
            .try_get::<Option<String>, _>(i)?
            .map_or(Json::Null, Json::String),
        PgType::Integer => row
            .try_get::<Option<i64>, _>(i)?
            .map_or(Json::Null, Json::from),
        PgType::Float4 => row
            .try_get::<Option<f32>, _>(i)?
            .map_or(Json::Null, |v| float(f64::from(v))),
        PgType::Float8 => row.try_get::<Option<f64>, _>(i)?.map_or(Json::Null, float),
        PgType::Boolean => row
            .try_get::<Option<bool>, _>(i)?
            .map_or(Json::Null, Json::Bool),
    })
}

/// Everything a running query owns, so its stream can be `'static`.
pub(super) struct Job {
    pub(super) pool: PgPool,
    pub(super) sql: String,
    pub(super) params: Vec<Param>,
    /// The columns read, in SELECT order (boolean condition columns follow).
    pub(super) fields: Vec<Column>,
    pub(super) conds: usize,
    /// Output key → index into `fields`, in output order.
    pub(super) output: Vec<(String, usize)>,
    pub(super) residual: Option<Residual>,
    /// Rows to skip and return here (the server already applied them when
    /// there is no residual).
    pub(super) skip: u64,
    pub(super) limit: u64,
}

/// Closes the connection instead of returning it to the pool when the query
/// is abandoned midway: a returned connection would first have to drain the
/// rest of the result, a closed one makes the server stop.
struct ConnGuard(Option<sqlx::pool::PoolConnection<Postgres>>);

impl Drop for ConnGuard {
    fn drop(&mut self) {
        if let Some(c) = self.0.as_mut() {
            c.close_on_drop();
        }
    }
}

impl Job {
    pub(super) async fn run(self, tx: mpsc::Sender<Sent<[Row; 1]>>) -> Result<(), SourceError> {
        let mut guard = ConnGuard(Some(self.pool.acquire().await?));
        let Some(conn) = guard.0.as_mut() else {
            return Ok(());
        };
        let mut query = sqlx::query(&self.sql);
        for p in self.params.iter().cloned() {
            query = bind(query, p);
        }
        let mut rows = query.fetch(&mut **conn);
        let (mut skip_left, mut remaining) = (self.skip, self.limit);
        let mut drained = true;
        while let Some(row) = rows.next().await {
            let row = row?;
            if remaining == 0 {
                // Only reachable with a residual: the server has more rows.
                drained = false;
                break;
            }
            let mut vals = Vec::with_capacity(self.fields.len());
            for (i, c) in self.fields.iter().enumerate() {
                vals.push(cell(&row, i, c.ty)?);
            }
            if let Some(residual) = &self.residual {
                let base = self.fields.len();
                let conds = (0..self.conds)
                    .map(|k| row.try_get::<Option<bool>, _>(base + k))
                    .collect::<Result<Vec<_>, _>>()?;
                if residual.eval(&vals, &conds) != Some(true) {
                    continue;
                }
            }
            if skip_left > 0 {
                skip_left -= 1;
                continue;
            }
            let out = Row::from_pairs(
                self.output
                    .iter()
                    .map(|(name, i)| (name.as_str(), &vals[*i])),
            );
            remaining -= 1;
            if tx.send(Ok([out])).await.is_err() {
                return Ok(()); // consumer gone; the guard closes the connection
            }
            if remaining == 0 && self.residual.is_some() {
                drained = false;
                break;
            }
        }
        drop(rows);
        if drained {
            // Finished normally: the connection goes back to the pool.
            drop(guard.0.take());
        }
        Ok(())
    }
}
