//! The measurements, each against the service started by `run`: the
//! warm-up, first-chunk latency, admission, delivery and the whole result.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use pseudostream::app::RunningApp;
use pseudostream::config::Config;
use pseudostream::model::JobId;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::BenchArgs;
use crate::client::{Client, KEY, last_90_days, rfc3339};
use crate::cpu::{ProcessCpu, StepCpu};
use crate::report::{Figure, Table, ms, percentile};
use crate::{duckdb, raw_delivery};

pub(crate) async fn first_chunk(
    client: &Client,
    concurrency: usize,
    cpu_of: &[String],
    table: &mut Table,
) -> anyhow::Result<()> {
    eprintln!("first chunk: {concurrency} concurrent 90-day regex queries");
    // CPU is read when the last first chunk is in (by the task the
    // barrier below names its leader): what producing them all cost.
    let cpu_before = Arc::new(StepCpu::start(cpu_of)?);
    let cpu_spent = Arc::new(std::sync::OnceLock::new());
    let client = Arc::new(Client::new(client.base.clone()));
    let (from, to) = last_90_days();
    // Every job keeps running until all have their first chunk, then all are cancelled.
    let all_measured = Arc::new(tokio::sync::Barrier::new(concurrency));
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..concurrency {
        let (client, all_measured) = (client.clone(), all_measured.clone());
        let (cpu_before, cpu_spent) = (cpu_before.clone(), cpu_spent.clone());
        let body = json!({
            "filter": format!("endpoint ~ \"^/api/v[12]/(orders|cart)\" and message !~ \"cache hit {n}$\" and latency_ms > 1"),
            "timeRange": {"from": rfc3339(from), "to": rfc3339(to)},
            "maxRows": 100_000 + n,
        });
        tasks.spawn(async move {
            let started = Instant::now();
            let measured = async {
                let job = client.submit(&body, Some(5)).await?;
                if job.first_chunk.is_some() {
                    return anyhow::Ok((started.elapsed(), job.job_id));
                }
                loop {
                    let (page, _) = client.page(&job.job_id, 0, 20).await?;
                    if !page.chunks.is_empty() {
                        return Ok((started.elapsed(), job.job_id));
                    }
                }
            }
            .await;
            if all_measured.wait().await.is_leader() {
                let _ = cpu_spent.set(cpu_before.read());
            }
            let (latency, job) = measured?;
            client.cancel(&job).await?;
            anyhow::Ok(latency)
        });
    }
    let mut latencies = Vec::with_capacity(concurrency);
    while let Some(done) = tasks.join_next().await {
        latencies.push(done??);
    }
    let cpu_spent = cpu_spent.get().cloned().unwrap_or_default();
    latencies.sort();
    for p in [50.0, 95.0, 99.0] {
        table.push(Figure {
            what: format!("first chunk p{p:.0}, {concurrency} concurrent 90-day regex queries"),
            ours: ms(percentile(&latencies, p)),
            baseline: "-".into(),
            ratio: "-".into(),
            target: if p == 95.0 {
                "≤ 100 ms".into()
            } else {
                "-".into()
            },
        });
    }
    // On one machine the first chunks share its cores with Redis and the
    // broker: their CPU, beside this process's, says what a run cost.
    let step = format!("first chunk, CPU until the last of the {concurrency}");
    for figure in cpu_spent.figures(&step) {
        table.push(figure);
    }
    Ok(())
}

/// Runs one small query to its end, so figures are those of a service that
/// has served before (in Kafka mode, a producer that knows the topic), not
/// of its first seconds.
pub(crate) async fn warm_up(client: &Client) -> anyhow::Result<()> {
    let (from, to) = last_90_days();
    let body = json!({
        "filter": "latency_ms > 1",
        "timeRange": {"from": rfc3339(from), "to": rfc3339(to)},
        "maxRows": 100,
    });
    let started = Instant::now();
    let job = client.submit(&body, None).await?;
    client.read_all(&job.job_id).await?;
    eprintln!("warm-up query read in {:.1?}", started.elapsed());
    Ok(())
}

/// Drives `POST url` from `clients` concurrent clients for `duration`;
/// returns accepted requests per second and the failures. Each body is a
/// new query over a realistic range: one to seven days ending within the
/// last day, on the dataset's own days, so admission does the work it does
/// for dashboards (no short-circuit for a range with no data).
async fn drive(
    http: reqwest::Client,
    url: String,
    clients: usize,
    duration: Duration,
    prefix: &'static str,
) -> (f64, u64) {
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let now = chrono::Utc::now();
    let mut tasks = tokio::task::JoinSet::new();
    let started = Instant::now();
    for c in 0..clients {
        let (http, url, ok, failed, stop) = (
            http.clone(),
            url.clone(),
            ok.clone(),
            failed.clone(),
            stop.clone(),
        );
        tasks.spawn(async move {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let to = now - chrono::TimeDelta::minutes(((c as u64 * 131 + i * 7) % 1440) as i64);
                let from = to - chrono::TimeDelta::days(1 + (i % 7) as i64);
                let body = json!({
                    // Distinct text, so no two share a job; a first chunk found
                    // at once, so the jobs admitted do not pile up behind it.
                    "filter": format!("message contains \"{prefix}-{c}-{i}\" or latency_ms >= 0"),
                    "timeRange": {"from": rfc3339(from), "to": rfc3339(to)},
                    "maxRows": 10,
                });
                let res = http.post(&url).bearer_auth(KEY).json(&body).send().await;
                match res {
                    Ok(r) if r.status().as_u16() == 202 => {
                        let _ = r.bytes().await;
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        });
    }
    tokio::time::sleep(duration).await;
    stop.store(true, Ordering::Relaxed);
    while tasks.join_next().await.is_some() {}
    let secs = started.elapsed().as_secs_f64();
    (
        ok.load(Ordering::Relaxed) as f64 / secs,
        failed.load(Ordering::Relaxed),
    )
}

/// The admission baseline: a route that authenticates the caller, parses
/// the same body and answers 202 with a small JSON body, served by this
/// process beside the API, behind the API's own middleware and listener
/// code (`api::with_layers`, `api::server::serve`).
async fn trivial_route(
    running: &RunningApp,
    config: &Config,
) -> anyhow::Result<(String, CancellationToken)> {
    use axum::Json;
    use axum::http::StatusCode;
    use pseudostream::api::{self, auth::Caller, guard::BodyLimits, server::ListenerLimits};
    let routes = axum::Router::new().route(
        "/trivial",
        axum::routing::post(|Caller(who): Caller, Json(body): Json<Value>| async move {
            let filter_len = body["filter"].as_str().map_or(0, str::len);
            (
                StatusCode::ACCEPTED,
                Json(json!({"jobId": JobId::new().to_string(), "offset": filter_len, "user": who.user})),
            )
        }),
    );
    let router = api::with_layers(routes, running.state.clone(), BodyLimits::of(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let stop = CancellationToken::new();
    tokio::spawn(api::server::serve(
        listener,
        router,
        ListenerLimits::of(config),
        stop.clone(),
    ));
    Ok((format!("http://{addr}/trivial"), stop))
}

pub(crate) async fn admission(
    client: &Client,
    running: &RunningApp,
    config: &Config,
    args: &BenchArgs,
    table: &mut Table,
) -> anyhow::Result<()> {
    eprintln!(
        "admission: {} clients for {:?} on each side",
        args.admission_clients, args.admission_for
    );
    let (trivial, stop) = trivial_route(running, config).await?;
    let cpu = ProcessCpu::start();
    let (base_rate, base_failed) = drive(
        client.http.clone(),
        trivial,
        args.admission_clients,
        args.admission_for,
        "trivial",
    )
    .await;
    let base_cpu = cpu.seconds();
    stop.cancel();
    let accepted_before = running.jobs.metrics.jobs_accepted_total.get();
    let cpu = StepCpu::start(&args.cpu_of)?;
    let (rate, failed) = drive(
        client.http.clone(),
        format!("{}/v1/jobs", client.base),
        args.admission_clients,
        args.admission_for,
        "admit",
    )
    .await;
    let admitted = running.jobs.metrics.jobs_accepted_total.get() - accepted_before;
    let spent = cpu.read();
    let ours_cpu = spent.own;
    table.push(Figure {
        what: format!(
            "admission, POST /v1/jobs (1-7 day ranges within the last day) vs a trivial route behind the same middleware ({} clients; failures {failed} / {base_failed}); process CPU per request, clients included",
            args.admission_clients
        ),
        ours: format!(
            "{rate:.0} req/s, {:.0} µs CPU/job",
            1e6 * ours_cpu / (admitted.max(1) as f64)
        ),
        baseline: format!(
            "{base_rate:.0} req/s, {:.0} µs CPU/req",
            1e6 * base_cpu / (base_rate * args.admission_for.as_secs_f64()).max(1.0)
        ),
        ratio: format!("{:.0} %", 100.0 * rate / base_rate.max(1e-9)),
        target: "≥ 50 %".into(),
    });
    // Where an admitted job's CPU goes, by kind of thread (and, with
    // `--cpu-of`, Redis's and the broker's share).
    let per_job = 1e6 / (admitted.max(1) as f64);
    for figure in spent.figures_in("admission, CPU a job", per_job, "µs") {
        table.push(figure);
    }
    Ok(())
}

pub(crate) async fn delivery(
    client: &Client,
    running: &RunningApp,
    demo: &std::path::Path,
    config: &Config,
    args: &BenchArgs,
    kafka: bool,
    table: &mut Table,
) -> anyhow::Result<()> {
    eprintln!(
        "delivery: {} rows through the result topic",
        args.delivery_rows
    );
    let (from, to) = last_90_days();
    let filter = "latency_ms >= 0";
    let body = json!({
        "filter": filter,
        "timeRange": {"from": rfc3339(from), "to": rfc3339(to)},
        "maxRows": args.delivery_rows,
    });
    let started = Instant::now();
    let cpu = StepCpu::start(&args.cpu_of)?;
    let job = client.submit(&body, None).await?;
    let (rows, chunks, bytes, status) = client.read_all(&job.job_id).await?;
    let elapsed = started.elapsed();
    let cpu = cpu.read();
    let cpu_own = cpu.own;
    // Each step's CPU, of this process and of `--cpu-of`'s: on one machine
    // they share its cores, so together they bound the rows/s.
    let mut steps_cpu = vec![("end to end", cpu)];
    let rate = rows as f64 / elapsed.as_secs_f64();
    // When the worker finished, by the job's own record: a reader far
    // behind it is the read path's time, not the query's or the publish's.
    let view: Value = client.get_json(&format!("/v1/jobs/{}", job.job_id)).await?;
    let finished = view["timings"]["totalSeconds"].as_f64().unwrap_or(f64::NAN);
    // The same chunk, re-published raw: one full chunk of real rows.
    let sample = raw_delivery::sample_chunk(client, &job.job_id).await?;
    let chunk_bytes = sample.to_json().len();
    let (raw_rate, raw_what) = if kafka {
        let brokers = config.kafka_brokers.clone().unwrap_or_default();
        let payloads = client.chunk_texts(&job.job_id).await?;
        let (raw, cpu) =
            raw_delivery::raw_kafka(&brokers, config.kafka_compression, &payloads, &args.cpu_of)
                .await?;
        steps_cpu.push(("the raw producer", cpu));
        (
            raw * sample.rows.len() as f64,
            "a raw rdkafka producer (the result topic's settings) re-sending the job's chunks",
        )
    } else {
        let (raw, cpu) =
            raw_delivery::raw_memory(&sample, chunks.max(10_000), &args.cpu_of).await?;
        steps_cpu.push(("the raw producer", cpu));
        (raw * sample.rows.len() as f64, "raw embedded-log appends")
    };
    // The same job with nobody reading it: how long the service takes to
    // run and publish it, from its own record, so the reader's share of the
    // two cores shows. A row cap one higher makes it a job of its own.
    let unread_cpu = StepCpu::start(&args.cpu_of)?;
    let unread = client
        .submit(
            &json!({
                "filter": filter,
                "timeRange": {"from": rfc3339(from), "to": rfc3339(to)},
                "maxRows": args.delivery_rows + 1,
            }),
            None,
        )
        .await?;
    let (unread_rows, unread_secs) = client.wait_until_finished(&unread.job_id).await?;
    let unread_cpu = unread_cpu.read();
    let unread_own = unread_cpu.own;
    steps_cpu.push(("nobody reading", unread_cpu));
    let unread_rate = unread_rows as f64 / unread_secs.max(1e-9);
    // The reader alone: that job read back once it has finished, so no
    // query runs beside it.
    let reading = Instant::now();
    let read_cpu = StepCpu::start(&args.cpu_of)?;
    let (read_rows, ..) = client.read_all(&unread.job_id).await?;
    let (read_secs, read_cpu) = (reading.elapsed().as_secs_f64(), read_cpu.read());
    let read_own = read_cpu.own;
    steps_cpu.push(("the reader alone", read_cpu));
    let read_rate = read_rows as f64 / read_secs.max(1e-9);
    // The same query with nothing published, and DuckDB writing its rows as
    // JSON: what the query part alone costs.
    let query_cpu = StepCpu::start(&args.cpu_of)?;
    let (query_rows, query_secs) =
        raw_delivery::query_only(&running.jobs, filter, (from, to), args.delivery_rows).await?;
    let query_cpu = query_cpu.read();
    let query_own = query_cpu.own;
    steps_cpu.push(("the query alone", query_cpu));
    let query_rate = query_rows as f64 / query_secs.max(1e-9);
    let (duck_rows, duck_secs) = duckdb::whole_result(
        &args.python,
        demo,
        (from, to),
        ("", "", -1.0),
        args.delivery_rows,
    )
    .await?;
    let duck_rate = duck_rows as f64 / duck_secs.max(1e-9);
    let lower = raw_rate.min(query_rate);
    table.push(Figure {
        what: format!(
            "delivery: rows/s submit→last chunk read, {rows} rows in {chunks} chunks ({status}, {:.0} B/chunk on the wire), vs the lower of {raw_what} ({chunk_bytes} B a chunk) and the query alone",
            bytes as f64 / chunks.max(1) as f64
        ),
        ours: format!(
            "{rate:.0} rows/s ({:.2} s; the job finished at {finished:.2} s; {:.2} s of CPU, client included)",
            elapsed.as_secs_f64(),
            cpu_own
        ),
        baseline: format!("{lower:.0} rows/s (raw {raw_rate:.0}, query alone {query_rate:.0})"),
        ratio: format!("{:.1} %", 100.0 * rate / lower.max(1e-9)),
        target: "≥ 80 %".into(),
    });
    table.push(beside_query_alone(
        format!(
            "delivery, nobody reading: the same job's {unread_rows} rows, submission to its last chunk published (its record)"
        ),
        (unread_rate, unread_secs, unread_own),
        query_rate,
    ));
    table.push(beside_query_alone(
        format!(
            "delivery, the reader alone: that job's {read_rows} rows read back over HTTP after it finished (pages of up to 1,000 chunks, parsed by the bench's client)"
        ),
        (read_rate, read_secs, read_own),
        query_rate,
    ));
    table.push(Figure {
        what: format!(
            "query alone: the same query through the source, {query_rows} rows cut into chunks and encoded, nothing published, vs DuckDB writing {duck_rows} rows as JSON (two threads)"
        ),
        ours: format!(
            "{query_rate:.0} rows/s ({query_secs:.2} s; {:.2} s of CPU)",
            query_own
        ),
        baseline: format!("{duck_rate:.0} rows/s ({duck_secs:.2} s)"),
        ratio: format!("{:.1} %", 100.0 * query_rate / duck_rate.max(1e-9)),
        target: "≥ 50 %".into(),
    });
    if !args.cpu_of.is_empty() {
        for (step, spent) in steps_cpu {
            let step = format!("delivery CPU, {step}");
            for figure in spent.figures(&step) {
                table.push(figure);
            }
        }
    }
    Ok(())
}

/// A part of delivery measured on its own, `(rows/s, seconds, CPU
/// seconds)`, beside the query alone's rows/s: no target of its own, it
/// shows which part sets the pace.
fn beside_query_alone(what: String, (rate, secs, cpu): (f64, f64, f64), query_rate: f64) -> Figure {
    Figure {
        what: format!("{what}, vs the query alone"),
        ours: format!("{rate:.0} rows/s ({secs:.2} s; {cpu:.2} s of CPU)"),
        baseline: format!("{query_rate:.0} rows/s"),
        ratio: format!("{:.1} %", 100.0 * rate / query_rate.max(1e-9)),
        target: "-".into(),
    }
}

pub(crate) async fn whole_result(
    client: &Client,
    demo: &std::path::Path,
    args: &BenchArgs,
    table: &mut Table,
) -> anyhow::Result<()> {
    // Both read 90 days newest first: the first stops at the row cap, the
    // second (a rarer latency) matches fewer rows than the cap, so both
    // sides scan every day.
    for (latency, ending) in [
        (1.0, "the row cap stops it"),
        (args.whole_scan_latency, "no cap hit: every day scanned"),
    ] {
        whole_query(client, demo, args, latency, ending, table).await?;
    }
    Ok(())
}

/// The whole result's regexes: an endpoint family, and a message ending.
const WHOLE_REGEXES: (&str, &str) = ("^/api/v[12]/(orders|cart)", "cache hit 0$");

/// The whole result's filter, keeping rows with `latency_ms` above `latency`.
pub(crate) fn whole_filter(latency: f64) -> String {
    let (re1, re2) = WHOLE_REGEXES;
    format!("endpoint ~ \"{re1}\" and message !~ \"{re2}\" and latency_ms > {latency}")
}

async fn whole_query(
    client: &Client,
    demo: &std::path::Path,
    args: &BenchArgs,
    latency: f64,
    ending: &str,
    table: &mut Table,
) -> anyhow::Result<()> {
    let (re1, re2) = WHOLE_REGEXES;
    let (from, to) = last_90_days();
    eprintln!("whole result ({ending}): 90-day regex query, ours then DuckDB");
    let body = json!({
        "filter": whole_filter(latency),
        "timeRange": {"from": rfc3339(from), "to": rfc3339(to)},
        "maxRows": args.whole_rows,
    });
    let started = Instant::now();
    let job = client.submit(&body, None).await?;
    let (rows, _, _, status) = client.read_all(&job.job_id).await?;
    let ours = started.elapsed();

    let (duck_rows, duck_secs) = duckdb::whole_result(
        &args.python,
        demo,
        (from, to),
        (re1, re2, latency),
        args.whole_rows,
    )
    .await?;
    table.push(Figure {
        what: format!(
            "whole result, 90-day regex query, latency_ms > {latency} ({ending}): {rows} rows ({status}) read over HTTP vs DuckDB {duck_rows} rows, ORDER BY ts DESC, COPY to JSON"
        ),
        ours: format!("{:.2} s", ours.as_secs_f64()),
        baseline: format!("{duck_secs:.2} s"),
        ratio: format!("{:.2}×", ours.as_secs_f64() / duck_secs.max(1e-9)),
        target: "≤ 1.5×".into(),
    });
    Ok(())
}
