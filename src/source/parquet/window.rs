//! Time windows read straight from the Parquet files, without DataFusion's
//! planner (how segments are cut into windows is `parts`).
//!
//! Planning a window through DataFusion (listing, schema checks, a dozen
//! optimiser passes, a physical plan) cost more CPU than reading it, and a
//! hundred concurrent jobs each plan several before their first chunk.
//! Here each file's footer and page index are read once, when the source
//! opens; a window then takes just the pages whose time range overlaps it
//! (those a first chunk waits for decoded once for all jobs, through the
//! [`PageCache`]), evaluates the filter (the same DataFusion expression,
//! made physical without a plan), and sorts in memory with Arrow's kernels
//! (or keeps the order the rows already have, when it is the one asked).
//!
//! The result is the one DataFusion gives for the same part: same filter,
//! same sort keys and options (see `Job::segment_frame`); the source's tests
//! run both paths.

use std::sync::Arc;

use datafusion::arrow::array::{AsArray, RecordBatch, UInt32Array};
use datafusion::arrow::compute::{
    SortColumn, SortOptions, concat_batches, filter_record_batch, lexsort_to_indices,
    take_record_batch,
};
use datafusion::arrow::datatypes::{
    DataType, Int64Type, Schema as ArrowSchema, SchemaRef, TimeUnit, TimestampMicrosecondType,
    TimestampMillisecondType, TimestampNanosecondType, TimestampSecondType,
};
use datafusion::common::DFSchema;
use datafusion::logical_expr::Expr;
use datafusion::physical_expr::PhysicalExpr;

use super::error::arrow_err;
use super::index::IndexedFile;
use super::page_cache::{PageCache, PageKey};
use crate::source::SourceError;

/// What reading a job's time windows directly (see the module doc) needs:
/// the same columns, filter and sort as the planned query.
pub(super) struct DirectRead {
    /// Columns read: `sort_input`, then those only the filter uses.
    pub(super) schema: SchemaRef,
    pub(super) df_schema: DFSchema,
    /// The planned sort's keys, as positions in `schema`.
    pub(super) sort_keys: Vec<SortKey>,
    /// The output columns, as positions in `schema`.
    pub(super) output: Vec<usize>,
}

impl DirectRead {
    pub(super) fn new(
        arrow_schema: &ArrowSchema,
        filter: &Expr,
        sort_input: &[String],
        output: &[String],
        time: &str,
        asc: bool,
    ) -> Result<DirectRead, SourceError> {
        let mut columns: Vec<String> = sort_input.to_vec();
        let mut filter_only: Vec<String> = filter
            .column_refs()
            .into_iter()
            .map(|c| c.name.clone())
            .filter(|n| !columns.contains(n))
            .collect();
        filter_only.sort();
        filter_only.dedup();
        columns.extend(filter_only);
        let fields = columns
            .iter()
            .map(|n| arrow_schema.field_with_name(n).cloned())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| SourceError::Internal(e.to_string()))?;
        let schema = Arc::new(ArrowSchema::new(fields));
        let position = |name: &str| columns.iter().position(|c| c == name);
        let mut sort_keys = Vec::with_capacity(sort_input.len());
        sort_keys.extend(position(time).map(|i| SortKey::new(i, asc)));
        sort_keys.extend(
            sort_input
                .iter()
                .filter(|n| *n != time)
                .filter_map(|n| position(n))
                .map(|i| SortKey::new(i, true)),
        );
        let output = output.iter().filter_map(|n| position(n)).collect();
        Ok(DirectRead {
            df_schema: DFSchema::try_from(schema.as_ref().clone())?,
            schema,
            sort_keys,
            output,
        })
    }
}

/// What a window read needs besides its files.
pub(super) struct WindowRead<'a> {
    /// Columns read, in this order; `schema` describes them.
    pub(super) schema: &'a SchemaRef,
    /// `[from_us, to_us)`.
    pub(super) window: (i64, i64),
    /// The part's whole filter (job filter and window bounds) over `schema`.
    pub(super) filter: &'a Arc<dyn PhysicalExpr>,
}

/// The matching rows of `files` in the window, unsorted, as one batch, and
/// how many rows were read to find them; `None` when a file changed since
/// the source opened (the caller then plans the part instead). Pages are decoded through `cache` when given;
/// otherwise each decoded batch is filtered as it comes, so a window holds
/// its matches, not all its rows.
pub(super) async fn read_window(
    files: &[Arc<IndexedFile>],
    read: &WindowRead<'_>,
    cache: Option<&PageCache>,
) -> Result<Option<(RecordBatch, u64)>, SourceError> {
    let mut matched = Vec::new();
    let mut scanned = 0;
    for indexed in files {
        let Some(file) = indexed.reopen()? else {
            return Ok(None);
        };
        let file_schema = indexed.meta.schema();
        // Root `i` of a flat Parquet schema is Arrow field `i`.
        let mut roots = Vec::with_capacity(read.schema.fields().len());
        for f in read.schema.fields() {
            match file_schema.index_of(f.name()) {
                Ok(i) => roots.push(i),
                Err(_) => return Ok(None),
            }
        }
        let mut sorted_roots = roots.clone();
        sorted_roots.sort_unstable();
        // The reader yields columns in file order; put them in ours.
        let order: Vec<usize> = roots
            .iter()
            .map(|r| sorted_roots.binary_search(r).unwrap_or_default())
            .collect();
        let mut keep = |batch: &RecordBatch| {
            let batch = RecordBatch::try_new(
                Arc::clone(read.schema),
                order.iter().map(|&i| Arc::clone(batch.column(i))).collect(),
            )
            .map_err(arrow_err)?;
            let kept = filtered(&batch, read.filter)?;
            if kept.num_rows() > 0 {
                matched.push(kept);
            }
            Ok::<_, SourceError>(())
        };
        for run in indexed.runs(read.window.0, read.window.1) {
            scanned += run.rows as u64;
            match cache {
                Some(cache) => {
                    let key = PageKey::new(indexed, &run, &sorted_roots);
                    let decoded = cache
                        .get_or_decode(key, || {
                            indexed.read_run(&file, &run, &sorted_roots)?.collect()
                        })
                        .await?;
                    decoded.iter().try_for_each(&mut keep)?;
                }
                None => {
                    for batch in indexed.read_run(&file, &run, &sorted_roots)? {
                        keep(&batch?)?;
                    }
                }
            }
        }
    }
    let matched = concat_batches(read.schema, &matched).map_err(arrow_err)?;
    Ok(Some((matched, scanned)))
}

/// The rows of `batch` for which `filter` holds; nulls (unknown) do not
/// match, as in a plan's filter.
fn filtered(
    batch: &RecordBatch,
    filter: &Arc<dyn PhysicalExpr>,
) -> Result<RecordBatch, SourceError> {
    let keep = filter.evaluate(batch)?.into_array(batch.num_rows())?;
    let keep = keep.as_boolean_opt().ok_or_else(|| {
        SourceError::Internal(format!(
            "filter gave {} instead of booleans",
            keep.data_type()
        ))
    })?;
    filter_record_batch(batch, keep).map_err(arrow_err)
}

/// A sort key: a column of the batch and its direction.
pub(super) struct SortKey {
    pub(super) column: usize,
    pub(super) options: SortOptions,
}

impl SortKey {
    pub(super) fn new(column: usize, ascending: bool) -> SortKey {
        SortKey {
            column,
            // Nulls last, in either direction, as the planned sort.
            options: SortOptions {
                descending: !ascending,
                nulls_first: false,
            },
        }
    }
}

/// Rows `skip..skip + fetch` of `batch` in `keys` order, as columns `output`.
pub(super) fn sort_window(
    batch: &RecordBatch,
    keys: &[SortKey],
    skip: usize,
    fetch: usize,
    output: &[usize],
) -> Result<RecordBatch, SourceError> {
    let end = skip.saturating_add(fetch).min(batch.num_rows());
    if skip >= end {
        return batch
            .project(output)
            .map(|b| b.slice(0, 0))
            .map_err(arrow_err);
    }
    let projected = batch.project(output).map_err(arrow_err)?;
    // Files sorted by time give a window's matches in time order already:
    // then the order asked for is the batch's, or the batch's reversed.
    match keys.first().and_then(|first| in_time_order(batch, first)) {
        Some(Order::AsStored) => return Ok(projected.slice(skip, end - skip)),
        Some(Order::Reversed) => {
            let last = batch.num_rows() - 1;
            let indices: UInt32Array = (skip..end).map(|n| (last - n) as u32).collect();
            return take_record_batch(&projected, &indices).map_err(arrow_err);
        }
        None => {}
    }
    let columns: Vec<SortColumn> = keys
        .iter()
        .map(|k| SortColumn {
            values: Arc::clone(batch.column(k.column)),
            options: Some(k.options),
        })
        .collect();
    // Only the first `end` positions are ordered: a top-k, as with a limit
    // on the planned sort.
    let indices = lexsort_to_indices(&columns, Some(end)).map_err(arrow_err)?;
    let indices = indices.slice(skip, end - skip);
    take_record_batch(&projected, &indices).map_err(arrow_err)
}

/// How a batch's rows already stand against the sort.
#[derive(Debug, PartialEq, Eq)]
enum Order {
    AsStored,
    Reversed,
}

/// The order `batch` already has against `first`, the sort's first key
/// (the time), when that key is a 64-bit integer or timestamp column with
/// no nulls and strictly monotone: no two rows tie on it, so the later
/// keys never decide, and the sort would keep the rows as they are or
/// reverse them. `None` otherwise (the sort runs).
fn in_time_order(batch: &RecordBatch, first: &SortKey) -> Option<Order> {
    let column = batch.column(first.column);
    if column.null_count() > 0 {
        return None;
    }
    let values: &[i64] = match column.data_type() {
        DataType::Timestamp(TimeUnit::Second, _) => {
            column.as_primitive::<TimestampSecondType>().values()
        }
        DataType::Timestamp(TimeUnit::Millisecond, _) => {
            column.as_primitive::<TimestampMillisecondType>().values()
        }
        DataType::Timestamp(TimeUnit::Microsecond, _) => {
            column.as_primitive::<TimestampMicrosecondType>().values()
        }
        DataType::Timestamp(TimeUnit::Nanosecond, _) => {
            column.as_primitive::<TimestampNanosecondType>().values()
        }
        DataType::Int64 => column.as_primitive::<Int64Type>().values(),
        _ => return None,
    };
    let rising = values.windows(2).all(|w| w[0] < w[1]);
    let falling = !rising && values.windows(2).all(|w| w[0] > w[1]);
    match (rising, falling, first.options.descending) {
        (true, _, false) | (_, true, true) => Some(Order::AsStored),
        (true, _, true) | (_, true, false) => Some(Order::Reversed),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sorting_keeps_nulls_last_both_ways_and_pages_by_skip() {
        use datafusion::arrow::array::{Int64Array, TimestampMicrosecondArray};
        use datafusion::arrow::datatypes::Field;
        let schema = Arc::new(ArrowSchema::new(vec![
            Field::new("ts", DataType::Timestamp(TimeUnit::Microsecond, None), true),
            Field::new("n", DataType::Int64, true),
        ]));
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(TimestampMicrosecondArray::from(vec![
                    Some(2),
                    None,
                    Some(1),
                    Some(2),
                ])),
                Arc::new(Int64Array::from(vec![Some(5), Some(0), Some(9), None])),
            ],
        )
        .unwrap();
        let ns = |b: RecordBatch| -> Vec<Option<i64>> {
            b.column(0).as_primitive::<Int64Type>().iter().collect()
        };
        let desc = [SortKey::new(0, false), SortKey::new(1, true)];
        let all = sort_window(&batch, &desc, 0, usize::MAX, &[1]).unwrap();
        assert_eq!(ns(all), [Some(5), None, Some(9), Some(0)]);
        let page = sort_window(&batch, &desc, 1, 2, &[1]).unwrap();
        assert_eq!(ns(page), [None, Some(9)]);
        let asc = [SortKey::new(0, true), SortKey::new(1, true)];
        let all = sort_window(&batch, &asc, 0, usize::MAX, &[1]).unwrap();
        assert_eq!(ns(all), [Some(9), Some(5), None, Some(0)]);
        assert_eq!(sort_window(&batch, &asc, 9, 1, &[1]).unwrap().num_rows(), 0);
    }

    /// A batch of `(ts, n)` rows, microsecond times.
    fn batch_of(rows: &[(Option<i64>, i64)]) -> RecordBatch {
        use datafusion::arrow::array::{Int64Array, TimestampMicrosecondArray};
        use datafusion::arrow::datatypes::Field;
        let schema = Arc::new(ArrowSchema::new(vec![
            Field::new("ts", DataType::Timestamp(TimeUnit::Microsecond, None), true),
            Field::new("n", DataType::Int64, false),
        ]));
        let ts: TimestampMicrosecondArray = rows.iter().map(|r| r.0).collect();
        let n: Int64Array = rows.iter().map(|r| Some(r.1)).collect();
        RecordBatch::try_new(schema, vec![Arc::new(ts), Arc::new(n)]).unwrap()
    }

    #[test]
    fn rows_already_in_time_order_come_out_as_the_sort_would_put_them() {
        let ns = |b: RecordBatch| -> Vec<i64> {
            b.column(0).as_primitive::<Int64Type>().values().to_vec()
        };
        let desc = [SortKey::new(0, false), SortKey::new(1, true)];
        let asc = [SortKey::new(0, true), SortKey::new(1, true)];
        // Rising times, as a time-sorted file stores them.
        let rising = batch_of(&[(Some(1), 10), (Some(2), 20), (Some(5), 30), (Some(9), 40)]);
        assert_eq!(in_time_order(&rising, &desc[0]), Some(Order::Reversed));
        assert_eq!(in_time_order(&rising, &asc[0]), Some(Order::AsStored));
        assert_eq!(
            ns(sort_window(&rising, &desc, 0, 10, &[1]).unwrap()),
            [40, 30, 20, 10]
        );
        assert_eq!(
            ns(sort_window(&rising, &desc, 1, 2, &[1]).unwrap()),
            [30, 20]
        );
        assert_eq!(
            ns(sort_window(&rising, &asc, 1, 2, &[1]).unwrap()),
            [20, 30]
        );
        // Falling times.
        let falling = batch_of(&[(Some(9), 40), (Some(5), 30), (Some(2), 20)]);
        assert_eq!(in_time_order(&falling, &desc[0]), Some(Order::AsStored));
        assert_eq!(
            ns(sort_window(&falling, &asc, 0, 2, &[1]).unwrap()),
            [20, 30]
        );
        assert_eq!(ns(sort_window(&falling, &desc, 2, 5, &[1]).unwrap()), [20]);
        // A tie on the time: the next key decides, so the sort runs.
        let tied = batch_of(&[(Some(1), 10), (Some(2), 30), (Some(2), 20), (Some(3), 40)]);
        assert_eq!(in_time_order(&tied, &desc[0]), None);
        assert_eq!(
            ns(sort_window(&tied, &desc, 0, 10, &[1]).unwrap()),
            [40, 20, 30, 10]
        );
        // A null time sorts last: the sort runs.
        let null = batch_of(&[(Some(1), 10), (None, 0), (Some(3), 30)]);
        assert_eq!(in_time_order(&null, &asc[0]), None);
        assert_eq!(
            ns(sort_window(&null, &asc, 0, 10, &[1]).unwrap()),
            [10, 30, 0]
        );
        // One row is in any order.
        let one = batch_of(&[(Some(7), 70)]);
        assert_eq!(ns(sort_window(&one, &desc, 0, 1, &[1]).unwrap()), [70]);
        // Any strictly monotone 64-bit integer first key will do.
        let by_n = [SortKey::new(1, false)];
        assert_eq!(in_time_order(&rising, &by_n[0]), Some(Order::Reversed));
    }
}
