//! The traffic stream: every HTTP exchange the API answers, as one JSON
//! record in the HTTP Types format (`request`, `response`, with method,
//! path, query, headers, timestamps and status), produced to a Kafka topic
//! for audit and for spotting abuse. It stays off the request path: the
//! middleware only queues the record (a bounded queue; when it is full the
//! record is dropped and counted), and one task produces them.
//!
//! Never recorded: bodies, `Authorization`, cookies and the idempotency key.
//! Added: `user` and `tenant` when the request's key is valid, the time the
//! exchange took, and the body sizes as declared or known.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::Response;
use chrono::Utc;
use rdkafka::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde::Serialize;
use serde_json::{Map, Value};
use tokio::sync::mpsc;
use tracing::warn;

use super::AppState;
use super::auth::bearer_key;
use crate::audit::rfc3339;
use crate::metrics::Metrics;

/// Headers whose values are secrets, never recorded.
const SECRET_HEADERS: [&str; 4] = ["authorization", "cookie", "set-cookie", "idempotency-key"];

/// How long the producer may hold a record before giving up on it.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(30);

/// Where exchanges go: the queue the middleware fills.
pub struct TrafficRecorder {
    queue: mpsc::Sender<Exchange>,
    metrics: Arc<Metrics>,
}

#[derive(Debug, Serialize)]
struct Exchange {
    request: RecordedRequest,
    response: RecordedResponse,
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tenant: Option<String>,
    #[serde(rename = "durationMs")]
    duration_ms: f64,
}

#[derive(Debug, Serialize)]
struct RecordedRequest {
    method: String,
    protocol: &'static str,
    host: String,
    pathname: String,
    query: Map<String, Value>,
    headers: BTreeMap<String, String>,
    timestamp: String,
    #[serde(rename = "bodySize", skip_serializing_if = "Option::is_none")]
    body_size: Option<u64>,
}

#[derive(Debug, Serialize)]
struct RecordedResponse {
    #[serde(rename = "statusCode")]
    status_code: u16,
    headers: BTreeMap<String, String>,
    timestamp: String,
    #[serde(rename = "bodySize", skip_serializing_if = "Option::is_none")]
    body_size: Option<u64>,
}

impl TrafficRecorder {
    /// Creates the topic unless it exists (time-retained, not compacted)
    /// and starts the task that produces queued records; it ends, flushing
    /// what it holds, once the recorder (the API's state) is dropped.
    pub async fn start(
        brokers: &str,
        topic: &str,
        queue: usize,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<TrafficRecorder> {
        crate::results::kafka::ensure_topic_with_policy(brokers, topic, 1, "delete").await?;
        let producer: FutureProducer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            // Records are many and small: batch them.
            .set("linger.ms", "100")
            .set(
                "message.timeout.ms",
                DELIVERY_TIMEOUT.as_millis().to_string(),
            )
            .create()?;
        let (tx, rx) = mpsc::channel(queue.max(1));
        tokio::spawn(produce(producer, topic.to_owned(), rx, metrics.clone()));
        Ok(TrafficRecorder { queue: tx, metrics })
    }

    fn record(&self, exchange: Exchange) {
        if self.queue.try_send(exchange).is_err() {
            self.metrics.traffic_dropped_total.inc();
        }
    }
}

/// Produces queued records one after the other, each without waiting for
/// the previous one's acknowledgement (librdkafka batches them).
async fn produce(
    producer: FutureProducer,
    topic: String,
    mut queue: mpsc::Receiver<Exchange>,
    metrics: Arc<Metrics>,
) {
    while let Some(exchange) = queue.recv().await {
        let Ok(payload) = serde_json::to_vec(&exchange) else {
            continue;
        };
        let key = exchange.user.clone().unwrap_or_default();
        let record = FutureRecord::to(&topic).key(&key).payload(&payload);
        match producer.send_result(record) {
            Ok(delivery) => {
                let metrics = metrics.clone();
                tokio::spawn(async move {
                    match delivery.await {
                        Ok(Ok(_)) => metrics.traffic_recorded_total.inc(),
                        _ => metrics.traffic_dropped_total.inc(),
                    }
                });
            }
            Err((e, _)) => {
                warn!(error = %e, "traffic record not produced");
                metrics.traffic_dropped_total.inc();
            }
        }
    }
    // What is queued in librdkafka gets a moment to go out.
    let _ = tokio::task::spawn_blocking(move || {
        use rdkafka::producer::Producer;
        producer.flush(Duration::from_secs(5))
    })
    .await;
}

/// The middleware: records the exchange once the response is ready.
pub async fn record(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let Some(recorder) = &state.traffic else {
        return next.run(request).await;
    };
    let started = std::time::Instant::now();
    let at = Utc::now();
    let who = request
        .headers()
        .get("authorization")
        .and_then(bearer_key)
        .and_then(|key| state.keys.principal(key));
    let uri = request.uri();
    let recorded = RecordedRequest {
        method: request.method().as_str().to_ascii_lowercase(),
        protocol: "http",
        host: header(request.headers(), "host").unwrap_or_default(),
        pathname: uri.path().to_owned(),
        query: query_map(uri.query().unwrap_or("")),
        headers: kept_headers(request.headers()),
        timestamp: rfc3339(at),
        body_size: header(request.headers(), "content-length").and_then(|v| v.parse().ok()),
    };
    let response = next.run(request).await;
    let exchange = Exchange {
        request: recorded,
        response: RecordedResponse {
            status_code: response.status().as_u16(),
            headers: kept_headers(response.headers()),
            timestamp: rfc3339(Utc::now()),
            body_size: http_body::Body::size_hint(response.body()).exact(),
        },
        user: who.as_ref().map(|p| p.user.clone()),
        tenant: who.map(|p| p.tenant),
        duration_ms: started.elapsed().as_secs_f64() * 1000.0,
    };
    recorder.record(exchange);
    response
}

fn header(headers: &HeaderMap, name: &str) -> Option<String> {
    headers.get(name)?.to_str().ok().map(str::to_owned)
}

/// Every header but the secret ones; values that are not text are left out.
fn kept_headers(headers: &HeaderMap) -> BTreeMap<String, String> {
    headers
        .iter()
        .filter(|(name, _)| !SECRET_HEADERS.contains(&name.as_str()))
        .filter_map(|(name, value)| {
            Some((name.as_str().to_owned(), value.to_str().ok()?.to_owned()))
        })
        .collect()
}

/// The query string as a map of decoded names to values (the last value of
/// a repeated name wins, as HTTP Types records it).
fn query_map(query: &str) -> Map<String, Value> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query).unwrap_or_default();
    pairs
        .into_iter()
        .map(|(k, v)| (k, Value::String(v)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_leave_and_the_query_is_decoded() {
        let mut headers = HeaderMap::new();
        headers.insert("authorization", "Bearer key-alice".parse().unwrap());
        headers.insert("cookie", "a=b".parse().unwrap());
        headers.insert("idempotency-key", "k1".parse().unwrap());
        headers.insert("user-agent", "k6".parse().unwrap());
        let kept = kept_headers(&headers);
        assert_eq!(kept.keys().collect::<Vec<_>>(), ["user-agent"]);
        let query = query_map("from=3&wait=2.5&user=a%20b");
        assert_eq!(query["user"], "a b");
        assert_eq!(query["from"], "3");
    }
}
