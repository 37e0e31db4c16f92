//! The delivery baselines: the same chunks published straight to the
//! result topic's medium, with no job, worker or HTTP in between.

use std::time::{Duration, Instant};

use anyhow::Context;
use futures::StreamExt;
use pseudostream::model::{Chunk, JobId, Offset};
use pseudostream::results::ResultTopic;
use pseudostream::results::kafka::Compression;
use pseudostream::results::memory::MemoryResultLog;
use pseudostream::source::Row;
use serde_json::Value;

use crate::client::Client;
use crate::cpu::{CpuSpent, StepCpu};

pub(crate) async fn sample_chunk(client: &Client, job: &str) -> anyhow::Result<Chunk> {
    let page: Value = client
        .get_json(&format!("/v1/jobs/{job}/chunks?from=0&limit=1"))
        .await?;
    let rows = page["chunks"][0]["rows"]
        .as_array()
        .context("the delivery job has no first chunk")?
        .iter()
        .filter_map(|r| {
            r.as_object()
                .map(|o| Row::from_pairs(o.iter().map(|(k, v)| (k.as_str(), v))))
        })
        .collect();
    Ok(Chunk {
        job_id: JobId::new(),
        offset: Offset(0),
        chunk_seq: 0,
        attempt: 1,
        is_last: false,
        rows,
        status: None,
        total_rows: None,
        truncated: None,
        error: None,
    })
}

/// Chunks per second appended to a fresh embedded log, encoding included.
pub(crate) async fn raw_memory(
    sample: &Chunk,
    count: u64,
    cpu_of: &[String],
) -> anyhow::Result<(f64, CpuSpent)> {
    let log = MemoryResultLog::new(u64::MAX);
    let mut chunk = sample.clone();
    let started = Instant::now();
    let cpu = StepCpu::start(cpu_of)?;
    for seq in 0..count {
        chunk.chunk_seq = seq;
        log.publish(&chunk).await?;
    }
    Ok((count as f64 / started.elapsed().as_secs_f64(), cpu.read()))
}

/// Messages per second of a plain rdkafka producer (same acks, idempotence
/// and compression as the result topic) sending `payloads` (at least 10,000
/// messages, cycling), every message in flight at once. Real chunks, not
/// filler: compression works on them as on the result topic's.
pub(crate) async fn raw_kafka(
    brokers: &str,
    compression: Compression,
    payloads: &[String],
    cpu_of: &[String],
) -> anyhow::Result<(f64, CpuSpent)> {
    use rdkafka::producer::{FutureProducer, FutureRecord};
    anyhow::ensure!(!payloads.is_empty(), "no chunks to re-send");
    let topic = format!("pseudostream.bench-raw-{}", std::process::id());
    let producer: FutureProducer =
        pseudostream::results::kafka::producer_config(brokers, compression)
            .set("allow.auto.create.topics", "true")
            .create()?;
    // Created like the result topic (a broker may not auto-create topics).
    pseudostream::results::kafka::ensure_topic(brokers, &topic, 1).await?;
    // Warm up: metadata.
    producer
        .send(
            FutureRecord::<str, str>::to(&topic)
                .key("warm")
                .payload(&payloads[0]),
            Duration::from_secs(30),
        )
        .await
        .map_err(|(e, _)| e)?;
    let count = payloads.len().max(10_000);
    let keys: Vec<String> = (0..count).map(|n| format!("0/{n}")).collect();
    let started = Instant::now();
    let cpu = StepCpu::start(cpu_of)?;
    let mut inflight = futures::stream::FuturesUnordered::new();
    for (key, payload) in keys.iter().zip(payloads.iter().cycle()) {
        inflight.push(
            producer.send(
                FutureRecord::<str, str>::to(&topic)
                    .key(key.as_str())
                    .payload(payload.as_str()),
                Duration::from_secs(30),
            ),
        );
    }
    while let Some(sent) = inflight.next().await {
        sent.map_err(|(e, _)| e)?;
    }
    let rate = count as f64 / started.elapsed().as_secs_f64();
    // Read while the producer's threads still live.
    Ok((rate, cpu.read()))
}

/// Rows per second of the query alone: the same query through the service's
/// own source, its rows cut into chunks and encoded as the worker does,
/// nothing published. Returns the rows and the seconds.
pub(crate) async fn query_only(
    jobs: &pseudostream::jobs::Jobs,
    filter: &str,
    (from, to): (chrono::DateTime<chrono::Utc>, chrono::DateTime<chrono::Utc>),
    limit: u64,
) -> anyhow::Result<(u64, f64)> {
    let source = &jobs.backends.source;
    let filter = pseudostream::filter::compile(
        filter,
        source.schema(),
        &jobs.settings.filter_limits,
        &jobs.regexes,
    )?;
    let query = pseudostream::source::SourceQuery {
        predicate: filter.predicate().clone(),
        from_us: from.timestamp_micros(),
        to_us: to.timestamp_micros(),
        fields: Vec::new(),
        order: pseudostream::model::Order::Desc,
        skip: 0,
        limit,
    };
    let chunk_rows = jobs.settings.chunk_rows;
    let started = Instant::now();
    let mut stream = source.query(query).await?;
    let (mut rows, mut bytes) = (0u64, 0usize);
    let mut chunk = Chunk {
        job_id: JobId::new(),
        offset: Offset(0),
        chunk_seq: 0,
        attempt: 1,
        is_last: false,
        rows: Vec::with_capacity(chunk_rows),
        status: None,
        total_rows: None,
        truncated: None,
        error: None,
    };
    loop {
        let row = stream.next().await.transpose()?;
        let end = row.is_none();
        if let Some(row) = row {
            chunk.rows.push(row);
            rows += 1;
        }
        if chunk.rows.len() == chunk_rows || (end && !chunk.rows.is_empty()) {
            bytes += chunk.to_json().len();
            chunk.rows.clear();
            chunk.chunk_seq += 1;
        }
        if end {
            break;
        }
    }
    let secs = started.elapsed().as_secs_f64();
    anyhow::ensure!(bytes > 0 || rows == 0, "no chunk was encoded");
    Ok((rows, secs))
}
