//! One day of requests: when they come (a daily traffic curve) and what
//! each one looks like, appended to Arrow builders.

use std::f64::consts::TAU;
use std::fmt::Write as _;
use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, BooleanBuilder, Float64Builder, Int64Builder, RecordBatch, StringBuilder,
    TimestampMicrosecondBuilder,
};
use datafusion::arrow::datatypes::SchemaRef;

use super::rng::Rng;
use super::shop::{
    CLIENT_ERROR_RATE, CLIENT_ERROR_WEIGHTS, CLIENT_ERRORS, COMMON_ENDPOINTS, CUSTOMERS,
    METHOD_WEIGHTS, METHODS, REGION_WEIGHTS, REGIONS, SERVER_ERROR_WEIGHTS, SERVER_ERRORS,
    SERVICES,
};
use crate::source::SourceError;

pub(super) const DAY_US: u64 = 86_400_000_000;

/// Relative traffic by hour of day (UTC): a night trough and an evening peak.
fn traffic(hour: f64) -> f64 {
    0.6 + 0.4 * ((hour - 9.0) / 24.0 * TAU).sin()
}

/// Sorted request times of one day, as µs offsets from midnight.
pub(super) fn day_offsets(rng: &mut Rng, n: usize) -> Vec<u64> {
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
pub(super) struct Day {
    pub(super) rng: Rng,
    pub(super) midnight_us: i64,
    pub(super) incident_service: usize,
    pub(super) incident_hour: u64,
}

pub(super) struct Builders {
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
    pub(super) fn new(n: usize) -> Self {
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

    pub(super) fn finish(mut self, schema: SchemaRef) -> Result<RecordBatch, SourceError> {
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
        RecordBatch::try_new(schema, cols).map_err(|e| SourceError::Internal(e.to_string()))
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
    pub(super) fn row(&mut self, offset: u64, b: &mut Builders, scratch: &mut String) {
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
