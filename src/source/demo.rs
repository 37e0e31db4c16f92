//! The demo dataset: synthetic HTTP request logs of a small shop, one Parquet
//! file per UTC day, so the service can be tried without real data. Content is
//! a pure function of the seed and the calendar day, so regenerating (or
//! extending the range later) reproduces the same rows.

use std::f64::consts::TAU;
use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;

use chrono::{Days, NaiveDate};
use datafusion::arrow::array::{
    ArrayRef, BooleanBuilder, Float64Builder, Int64Builder, RecordBatch, StringBuilder,
    TimestampMicrosecondBuilder,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::basic::{Compression, ZstdLevel};
use datafusion::parquet::file::properties::{EnabledStatistics, WriterProperties};
use datafusion::parquet::schema::types::ColumnPath;

use super::SourceError;

pub const DEMO_ROWS_PER_DAY: u32 = 60_000;
pub const DEMO_DAYS: u32 = 90;
pub const DEMO_SEED: u64 = 0x5EED_DA7A_2026;

/// Rows per Parquet row group (and per Arrow batch we build).
const ROW_GROUP_ROWS: usize = 64 * 1024;
/// Rows per data page. Rows are sorted by time and every page's min/max go
/// into the page index, so a query for a slice of a day (a job's first
/// window) decodes the few pages that overlap it, not the whole row group.
const PAGE_ROWS: usize = 2048;
const DAY_US: u64 = 86_400_000_000;

/// SplitMix64: tiny, fast, and good enough for synthetic data; written here so
/// the output never changes with a dependency's version.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in [0, n); n > 0.
    fn below(&mut self, n: u64) -> u64 {
        // Multiply-shift: unbiased enough for demo data, and branch-free.
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    fn chance(&mut self, p: f64) -> bool {
        self.f64() < p
    }

    /// Standard normal (Box–Muller).
    fn normal(&mut self) -> f64 {
        let u1 = 1.0 - self.f64(); // (0, 1], so ln is finite
        let u2 = self.f64();
        (-2.0 * u1.ln()).sqrt() * (TAU * u2).cos()
    }

    /// Index drawn with the given weights.
    fn weighted(&mut self, weights: &[u32]) -> usize {
        let total: u32 = weights.iter().sum();
        let mut r = self.below(u64::from(total)) as u32;
        for (i, w) in weights.iter().enumerate() {
            if r < *w {
                return i;
            }
            r -= w;
        }
        weights.len().saturating_sub(1)
    }
}

struct Service {
    name: &'static str,
    weight: u32,
    /// Median latency in ms.
    median_ms: f64,
    /// Share of 5xx responses on a normal day.
    error_rate: f64,
    /// What the service's resources are called in messages.
    noun: &'static str,
    /// Its two endpoint templates; `{id}` becomes a number.
    endpoints: [&'static str; 2],
}

const SERVICES: [Service; 12] = [
    Service {
        name: "checkout",
        weight: 8,
        median_ms: 180.0,
        error_rate: 0.012,
        noun: "order",
        endpoints: ["/api/v1/orders", "/api/v2/orders/{id}"],
    },
    Service {
        name: "payments",
        weight: 7,
        median_ms: 240.0,
        error_rate: 0.035,
        noun: "payment",
        endpoints: ["/api/v1/payments", "/api/v1/payments/{id}/capture"],
    },
    Service {
        name: "search",
        weight: 14,
        median_ms: 45.0,
        error_rate: 0.008,
        noun: "query",
        endpoints: ["/api/v1/search", "/api/v2/search/suggest"],
    },
    Service {
        name: "auth",
        weight: 12,
        median_ms: 25.0,
        error_rate: 0.005,
        noun: "session",
        endpoints: ["/api/v1/login", "/api/v1/sessions/{id}"],
    },
    Service {
        name: "inventory",
        weight: 6,
        median_ms: 60.0,
        error_rate: 0.010,
        noun: "item",
        endpoints: ["/api/v1/inventory/{id}", "/api/v1/inventory/reserve"],
    },
    Service {
        name: "shipping",
        weight: 5,
        median_ms: 120.0,
        error_rate: 0.015,
        noun: "shipment",
        endpoints: ["/api/v1/shipments", "/api/v1/shipments/{id}/track"],
    },
    Service {
        name: "catalog",
        weight: 10,
        median_ms: 35.0,
        error_rate: 0.004,
        noun: "product",
        endpoints: ["/api/v1/products/{id}", "/api/v2/products"],
    },
    Service {
        name: "cart",
        weight: 9,
        median_ms: 30.0,
        error_rate: 0.006,
        noun: "cart",
        endpoints: ["/api/v1/cart/{id}", "/api/v1/cart/{id}/items"],
    },
    Service {
        name: "notifications",
        weight: 5,
        median_ms: 90.0,
        error_rate: 0.020,
        noun: "notification",
        endpoints: ["/api/v1/notifications", "/api/v1/notifications/{id}/read"],
    },
    Service {
        name: "recommendations",
        weight: 8,
        median_ms: 110.0,
        error_rate: 0.025,
        noun: "recommendation",
        endpoints: ["/api/v1/recommendations/{id}", "/api/v2/recommendations"],
    },
    Service {
        name: "pricing",
        weight: 6,
        median_ms: 40.0,
        error_rate: 0.007,
        noun: "price",
        endpoints: ["/api/v1/prices/{id}", "/api/v1/prices/quote"],
    },
    Service {
        name: "gateway",
        weight: 10,
        median_ms: 8.0,
        error_rate: 0.030,
        noun: "route",
        endpoints: ["/api/v1/status", "/api/v1/routes/{id}"],
    },
];

/// Endpoints every service has, picked now and then.
const COMMON_ENDPOINTS: [&str; 6] = [
    "/health",
    "/metrics",
    "/ready",
    "/api/v1/config",
    "/api/v1/version",
    "/api/v1/feature-flags/{id}",
];

const REGIONS: [&str; 8] = [
    "us-east-1",
    "us-west-2",
    "eu-west-1",
    "eu-central-1",
    "ap-southeast-1",
    "ap-northeast-1",
    "sa-east-1",
    "ca-central-1",
];
const REGION_WEIGHTS: [u32; 8] = [30, 15, 20, 12, 8, 7, 4, 4];

const METHODS: [&str; 4] = ["GET", "POST", "PUT", "DELETE"];
const METHOD_WEIGHTS: [u32; 4] = [62, 24, 9, 5];

const SERVER_ERRORS: [i64; 4] = [500, 502, 503, 504];
const SERVER_ERROR_WEIGHTS: [u32; 4] = [30, 15, 30, 25];
const CLIENT_ERRORS: [i64; 5] = [400, 401, 403, 404, 429];
const CLIENT_ERROR_WEIGHTS: [u32; 5] = [30, 20, 10, 30, 10];
const CLIENT_ERROR_RATE: f64 = 0.05;

const CUSTOMERS: f64 = 5000.0;

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new(
            "ts",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            false,
        ),
        Field::new("service", DataType::Utf8, false),
        Field::new("endpoint", DataType::Utf8, false),
        Field::new("method", DataType::Utf8, false),
        Field::new("status", DataType::Int64, false),
        Field::new("latency_ms", DataType::Float64, false),
        Field::new("region", DataType::Utf8, false),
        Field::new("customer", DataType::Utf8, false),
        Field::new("bytes", DataType::Int64, false),
        Field::new("cached", DataType::Boolean, false),
        Field::new("message", DataType::Utf8, false),
    ]))
}

/// Relative traffic by hour of day (UTC): a night trough and an evening peak.
fn traffic(hour: f64) -> f64 {
    0.6 + 0.4 * ((hour - 9.0) / 24.0 * TAU).sin()
}

/// Sorted request times of one day, as µs offsets from midnight.
fn day_offsets(rng: &mut Rng, n: usize) -> Vec<u64> {
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let off = rng.below(DAY_US);
        // Rejection sampling shapes the uniform draw into the daily curve.
        if rng.f64() < traffic(off as f64 / 3.6e9) {
            out.push(off);
        }
    }
    out.sort_unstable();
    out
}

/// The state of one day: its own random stream and its incident.
struct Day {
    rng: Rng,
    midnight_us: i64,
    incident_service: usize,
    incident_hour: u64,
}

struct Builders {
    ts: TimestampMicrosecondBuilder,
    service: StringBuilder,
    endpoint: StringBuilder,
    method: StringBuilder,
    status: Int64Builder,
    latency: Float64Builder,
    region: StringBuilder,
    customer: StringBuilder,
    bytes: Int64Builder,
    cached: BooleanBuilder,
    message: StringBuilder,
}

impl Builders {
    fn new(n: usize) -> Self {
        Builders {
            ts: TimestampMicrosecondBuilder::with_capacity(n).with_timezone("UTC"),
            service: StringBuilder::with_capacity(n, n * 10),
            endpoint: StringBuilder::with_capacity(n, n * 24),
            method: StringBuilder::with_capacity(n, n * 4),
            status: Int64Builder::with_capacity(n),
            latency: Float64Builder::with_capacity(n),
            region: StringBuilder::with_capacity(n, n * 10),
            customer: StringBuilder::with_capacity(n, n * 10),
            bytes: Int64Builder::with_capacity(n),
            cached: BooleanBuilder::with_capacity(n),
            message: StringBuilder::with_capacity(n, n * 32),
        }
    }

    fn finish(mut self, schema: SchemaRef) -> Result<RecordBatch, SourceError> {
        let cols: Vec<ArrayRef> = vec![
            Arc::new(self.ts.finish()),
            Arc::new(self.service.finish()),
            Arc::new(self.endpoint.finish()),
            Arc::new(self.method.finish()),
            Arc::new(self.status.finish()),
            Arc::new(self.latency.finish()),
            Arc::new(self.region.finish()),
            Arc::new(self.customer.finish()),
            Arc::new(self.bytes.finish()),
            Arc::new(self.cached.finish()),
            Arc::new(self.message.finish()),
        ];
        RecordBatch::try_new(schema, cols).map_err(|e| SourceError::Engine(e.to_string()))
    }
}

fn render(template: &str, id: u64, out: &mut String) {
    out.clear();
    match template.split_once("{id}") {
        Some((a, b)) => {
            let _ = write!(out, "{a}{id}{b}");
        }
        None => out.push_str(template),
    }
}

impl Day {
    /// Appends one request at `offset` µs after midnight.
    fn row(&mut self, offset: u64, b: &mut Builders, scratch: &mut String) {
        let rng = &mut self.rng;
        let weights: [u32; 12] = std::array::from_fn(|i| SERVICES[i].weight);
        let si = rng.weighted(&weights);
        let svc = &SERVICES[si];
        let template = if rng.chance(0.1) {
            COMMON_ENDPOINTS[rng.below(COMMON_ENDPOINTS.len() as u64) as usize]
        } else {
            svc.endpoints[rng.below(2) as usize]
        };
        let id = 1000 + rng.below(99_000);
        render(template, id, scratch);
        b.endpoint.append_value(scratch.as_str());
        let method = if template.starts_with("/api") {
            METHODS[rng.weighted(&METHOD_WEIGHTS)]
        } else {
            "GET" // probes are always GET
        };

        let hour = offset / 3_600_000_000;
        let incident = si == self.incident_service && hour == self.incident_hour;
        let error_rate = if incident { 0.35 } else { svc.error_rate };
        let status = if rng.chance(error_rate) {
            SERVER_ERRORS[rng.weighted(&SERVER_ERROR_WEIGHTS)]
        } else if rng.chance(CLIENT_ERROR_RATE) {
            CLIENT_ERRORS[rng.weighted(&CLIENT_ERROR_WEIGHTS)]
        } else {
            match method {
                "POST" if rng.chance(0.7) => 201,
                "DELETE" => 204,
                "GET" if rng.chance(0.01) => 301,
                _ => 200,
            }
        };

        let latency = match status {
            504 => 3000.0 + rng.f64() * 50.0,
            503 | 429 => 1.0 + rng.f64() * 4.0,
            _ => {
                let slow = if incident { 4.0 } else { 1.0 };
                svc.median_ms * slow * (0.6 * rng.normal()).exp()
            }
        };
        let latency = (latency * 1000.0).round() / 1000.0;
        let cached = method == "GET" && status == 200 && rng.chance(0.3);
        let bytes = match status {
            204 | 301 => 0,
            s if s >= 400 => 80 + rng.below(300) as i64,
            _ if method == "GET" => (2048.0 * (0.8 * rng.normal()).exp()) as i64,
            _ => (600.0 * (0.5 * rng.normal()).exp()) as i64,
        };
        let region = REGIONS[rng.weighted(&REGION_WEIGHTS)];
        // Squaring skews traffic towards low customer numbers: a few big customers.
        let u = rng.f64();
        let customer = (u * u * CUSTOMERS) as u64;

        b.ts.append_value(self.midnight_us + offset as i64);
        b.service.append_value(svc.name);
        b.method.append_value(method);
        b.status.append_value(status);
        b.latency.append_value(latency);
        b.region.append_value(region);
        scratch.clear();
        let _ = write!(scratch, "cust-{customer:05}");
        b.customer.append_value(scratch.as_str());
        b.bytes.append_value(bytes);
        b.cached.append_value(cached);

        scratch.clear();
        let noun = svc.noun;
        let _ = match status {
            200 if cached => write!(scratch, "cache hit for {noun} {id}"),
            200 => write!(scratch, "{noun} {id} served in {}ms", latency.round()),
            201 => write!(scratch, "{noun} {id} created"),
            204 => write!(scratch, "{noun} {id} deleted"),
            301 => write!(scratch, "moved permanently to /api/v2"),
            400 => write!(scratch, "invalid request: missing field 'quantity'"),
            401 => write!(scratch, "missing or expired token"),
            403 => write!(scratch, "customer cust-{customer:05} not allowed"),
            404 => write!(scratch, "{noun} {id} not found"),
            429 => write!(
                scratch,
                "rate limit exceeded: 100% of quota_per_minute used"
            ),
            500 => write!(scratch, "internal error in handle_{noun}: unexpected null"),
            502 => {
                let other = SERVICES[rng.below(SERVICES.len() as u64) as usize].name;
                write!(scratch, "bad gateway: {other} returned garbage")
            }
            503 => write!(
                scratch,
                "service unavailable: cpu at {}% on node_{}",
                90 + rng.below(10),
                rng.below(8)
            ),
            504 => write!(scratch, "upstream timeout after 3000ms"),
            _ => write!(scratch, "status {status}"),
        };
        b.message.append_value(scratch.as_str());
    }
}

fn write_day(
    path: &Path,
    date: NaiveDate,
    rows: u32,
    seed: u64,
    progress: &mut dyn FnMut(u64),
) -> Result<(), SourceError> {
    let epoch = chrono::DateTime::UNIX_EPOCH.date_naive();
    let day_index = date.signed_duration_since(epoch).num_days();
    // Seeding from the calendar day (not the position in the range) keeps a
    // day's content stable when the range is extended.
    let mut rng = Rng(seed ^ (day_index as u64).wrapping_mul(0xD1B5_4A32_D192_ED03));
    let incident_service = rng.below(SERVICES.len() as u64) as usize;
    let incident_hour = rng.below(24);
    let offsets = day_offsets(&mut rng, rows as usize);
    let mut day = Day {
        rng,
        midnight_us: day_index * DAY_US as i64,
        incident_service,
        incident_hour,
    };

    let parquet_err = |e: datafusion::parquet::errors::ParquetError| SourceError::Parquet {
        file: path.display().to_string(),
        message: e.to_string(),
    };
    let file = std::fs::File::create(path).map_err(|source| SourceError::Io {
        path: path.display().to_string(),
        source,
    })?;
    let props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::default()))
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_data_page_row_count_limit(PAGE_ROWS)
        .set_write_batch_size(PAGE_ROWS)
        .set_dictionary_enabled(false);
    // Dictionaries only where values repeat: a reader must decode a
    // column's whole dictionary page before any of its data pages, so a
    // dictionary of unique times or messages would cost a small query as
    // much as the whole row group.
    let props = ["service", "method", "status", "region", "customer"]
        .into_iter()
        .fold(props, |p, c| {
            p.set_column_dictionary_enabled(ColumnPath::from(c), true)
        })
        .build();
    let schema = schema();
    let mut writer =
        ArrowWriter::try_new(file, Arc::clone(&schema), Some(props)).map_err(parquet_err)?;
    let mut scratch = String::with_capacity(64);
    let mut done = 0u64;
    for chunk in offsets.chunks(ROW_GROUP_ROWS) {
        let mut b = Builders::new(chunk.len());
        for off in chunk {
            day.row(*off, &mut b, &mut scratch);
        }
        writer
            .write(&b.finish(Arc::clone(&schema))?)
            .map_err(parquet_err)?;
        done += chunk.len() as u64;
        progress(done);
    }
    writer.close().map_err(parquet_err)?;
    Ok(())
}

/// Writes `events-YYYY-MM-DD.parquet` for the `days` days ending with
/// `end_day`, `rows_per_day` rows each, sorted by `ts`. Existing files are
/// kept, so an interrupted run can simply be repeated; each file is written
/// under a hidden temporary name and renamed when complete.
pub fn generate(
    dir: &Path,
    end_day: NaiveDate,
    days: u32,
    rows_per_day: u32,
    seed: u64,
    progress: &dyn Fn(u64, u64),
) -> Result<(), SourceError> {
    let io = |path: &Path| {
        let path = path.display().to_string();
        move |source| SourceError::Io { path, source }
    };
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let total = u64::from(days) * u64::from(rows_per_day);
    let mut done = 0u64;
    progress(0, total);
    for back in (0..days).rev() {
        let date = end_day
            .checked_sub_days(Days::new(u64::from(back)))
            .ok_or_else(|| SourceError::BadLocation {
                location: dir.display().to_string(),
                reason: format!("{days} days before {end_day} is outside the supported calendar"),
            })?;
        let name = format!("events-{}.parquet", date.format("%Y-%m-%d"));
        let path = dir.join(&name);
        if !path.exists() {
            let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
            let written = write_day(&tmp, date, rows_per_day, seed, &mut |n| {
                progress(done + n, total)
            })
            .and_then(|()| std::fs::rename(&tmp, &path).map_err(io(&path)));
            if let Err(e) = written {
                // Best effort: a leftover hidden temp file is ignored by sources anyway.
                let _ = std::fs::remove_file(&tmp);
                return Err(e);
            }
        }
        done += u64::from(rows_per_day);
        progress(done, total);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::{ParquetSource, QueryRuntime, QuerySource, Row, SourceQuery};
    use futures::TryStreamExt;

    async fn all_rows(dir: &Path) -> Vec<Row> {
        let runtime = QueryRuntime::new(2).unwrap();
        let src = ParquetSource::open(dir.to_str().unwrap(), "ts", &runtime)
            .await
            .unwrap();
        let q = SourceQuery::everything();
        src.query(q).await.unwrap().try_collect().await.unwrap()
    }

    #[tokio::test]
    async fn generation_is_deterministic_and_resumable() {
        let end = NaiveDate::from_ymd_opt(2026, 11, 1).unwrap();
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let last = std::sync::Mutex::new((0, 0));
        generate(a.path(), end, 2, 300, DEMO_SEED, &|d, t| {
            *last.lock().unwrap() = (d, t)
        })
        .unwrap();
        assert_eq!(*last.lock().unwrap(), (600, 600));
        // b gets the days one at a time, as an extended range would.
        generate(
            b.path(),
            end.pred_opt().unwrap(),
            1,
            300,
            DEMO_SEED,
            &|_, _| {},
        )
        .unwrap();
        generate(b.path(), end, 2, 300, DEMO_SEED, &|_, _| {}).unwrap();
        let names = |d: &Path| {
            let mut v: Vec<String> = std::fs::read_dir(d)
                .unwrap()
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .collect();
            v.sort();
            v
        };
        assert_eq!(
            names(a.path()),
            ["events-2026-10-31.parquet", "events-2026-11-01.parquet"]
        );
        assert_eq!(names(b.path()), names(a.path()));
        let (ra, rb) = (all_rows(a.path()).await, all_rows(b.path()).await);
        assert_eq!(ra.len(), 600);
        assert_eq!(ra, rb);
        assert!(
            ra.iter()
                .map(Row::fields)
                .all(|r| r["ts"].as_str().unwrap() >= "2026-10-31T00:00:00"
                    && r["ts"].as_str().unwrap() < "2026-11-02")
        );
        // A different seed gives different data.
        let c = tempfile::tempdir().unwrap();
        generate(c.path(), end, 2, 300, DEMO_SEED + 1, &|_, _| {}).unwrap();
        assert_ne!(all_rows(c.path()).await, ra);
    }

    #[test]
    fn rng_is_stable() {
        let mut r = Rng(0);
        // Reference values of SplitMix64 seeded with 0.
        assert_eq!(r.next_u64(), 0xE220_A839_7B1D_CDAF);
        assert_eq!(r.next_u64(), 0x6E78_9E6A_A1B9_65F4);
        assert!((0..1000).all(|_| r.below(7) < 7));
    }
}
