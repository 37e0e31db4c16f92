//! The command-line client, the real binary against the real server:
//! `pseudostream query` prints the rows polling gives, in each format; a bad
//! filter exits non-zero saying what and where; Ctrl-C cancels the job;
//! `pseudostream jobs` lists it. These run on a server with or without push
//! (the client falls back to polling when the events route is missing).

use std::process::Stdio;
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;
use serde_json::value::RawValue;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

use crate::support::*;

const FILTER: &str = "status >= 500";
const FIELDS: [&str; 5] = ["ts", "service", "status", "latency_ms", "message"];

fn pseudostream(server: &Server, key: &str, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_pseudostream"));
    command
        .args(args)
        .env("PSEUDOSTREAM_SERVER", &server.base)
        .env("PSEUDOSTREAM_KEY", key)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    command
}

struct Ran {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

async fn run(server: &Server, key: &str, args: &[&str]) -> Ran {
    let output = pseudostream(server, key, args).output().await.unwrap();
    Ran {
        code: output.status.code(),
        stdout: String::from_utf8(output.stdout).unwrap(),
        stderr: String::from_utf8(output.stderr).unwrap(),
    }
}

/// `query FILTER --last 7d --fields … --max-rows 45 --format FORMAT`.
async fn query(server: &Server, format: &str) -> Ran {
    let fields = FIELDS.join(",");
    let args = [
        "query",
        FILTER,
        "--last",
        "7d",
        "--fields",
        &fields,
        "--max-rows",
        "45",
        "--format",
        format,
    ];
    let ran = run(server, ALICE, &args).await;
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    // Not a terminal: no progress bar, nothing at all on stderr.
    assert_eq!(ran.stderr, "");
    ran
}

/// The rows of the caller's newest job as polling gives them, as text.
async fn polled_rows(server: &Server) -> Vec<String> {
    #[derive(Deserialize)]
    struct Page {
        chunks: Vec<Chunk>,
    }
    #[derive(Deserialize)]
    struct Chunk {
        rows: Vec<Box<RawValue>>,
    }
    let (_, list) = server.get(ALICE, "/v1/jobs?limit=1").await;
    let job = list["jobs"][0]["jobId"].as_str().unwrap().to_owned();
    let chunks = server.read_all(ALICE, &job).await;
    let path = format!("/v1/jobs/{job}/chunks?from=0&limit={}", chunks.len());
    let text = body_text(server.http.get(server.url(&path)).bearer_auth(ALICE)).await;
    let page: Page = serde_json::from_str(&text).unwrap();
    let rows: Vec<String> = page
        .chunks
        .iter()
        .flat_map(|c| c.rows.iter().map(|r| r.get().to_owned()))
        .collect();
    assert!(
        rows.len() > 10,
        "more than one chunk of rows: {}",
        rows.len()
    );
    rows
}

/// The cells of a polled row in `FIELDS` order, as CSV and tables show them.
fn cells(row: &str) -> Vec<String> {
    let row: Value = serde_json::from_str(row).unwrap();
    FIELDS
        .iter()
        .map(|f| match &row[*f] {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        })
        .collect()
}

#[tokio::test]
async fn query_prints_the_polled_rows_in_each_format() {
    let server = Server::start().await;

    let jsonl = query(&server, "jsonl").await;
    let rows = polled_rows(&server).await;
    let lines: Vec<&str> = jsonl.stdout.lines().collect();
    assert_eq!(lines, rows, "each row exactly as the server wrote it");

    let csv = query(&server, "csv").await;
    let mut expected = format!("{}\r\n", FIELDS.join(","));
    for row in &rows {
        let quoted: Vec<String> = cells(row)
            .into_iter()
            .map(|c| match c.contains([',', '"', '\n', '\r']) {
                true => format!("\"{}\"", c.replace('"', "\"\"")),
                false => c,
            })
            .collect();
        expected.push_str(&quoted.join(","));
        expected.push_str("\r\n");
    }
    assert_eq!(csv.stdout, expected);

    let table = query(&server, "table").await;
    let lines: Vec<&str> = table.stdout.lines().collect();
    assert_eq!(lines.len(), rows.len() + 2, "a header, a rule, the rows");
    // Each column starts where its heading does.
    let starts: Vec<usize> = FIELDS.iter().map(|f| lines[0].find(f).unwrap()).collect();
    for (line, row) in lines[2..].iter().zip(&rows) {
        let chars: Vec<char> = line.chars().collect();
        for (n, expected) in cells(row).iter().enumerate() {
            let end = starts
                .get(n + 1)
                .map_or(chars.len(), |s| s - 2)
                .min(chars.len());
            let cell: String = chars[starts[n]..end].iter().collect();
            assert_eq!(cell.trim_end(), expected, "{line}");
        }
    }

    // The three runs shared one job; `jobs` lists it, joined by nobody else.
    let listed = run(&server, ALICE, &["jobs", "--format", "jsonl"]).await;
    assert_eq!(listed.code, Some(0), "{}", listed.stderr);
    let jobs: Vec<Value> = listed
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(jobs.len(), 1, "{}", listed.stdout);
    assert_eq!(jobs[0]["joined"], false);
    let (_, list) = server.get(ALICE, "/v1/jobs").await;
    assert_eq!(jobs[0]["jobId"], list["jobs"][0]["jobId"]);
    let table = run(&server, ALICE, &["jobs"]).await;
    assert!(table.stdout.starts_with("JOB "), "{}", table.stdout);
    assert!(table.stdout.contains(jobs[0]["jobId"].as_str().unwrap()));
    server.stop().await;
}

#[tokio::test]
async fn jobs_follows_the_pages() {
    let server = Server::start().await;
    let mut ids = Vec::new();
    for service in ["a", "b", "c"] {
        let job = server
            .submit(ALICE, &format!("service = {service:?}"))
            .await;
        ids.push(job["jobId"].as_str().unwrap().to_owned());
    }
    ids.reverse();
    // `--limit 2` stops after two; without it, every page is read (the
    // client asks for pages of 100, so page through the API to be sure it
    // follows `next`: two pages of one, then the rest).
    let two = run(
        &server,
        ALICE,
        &["jobs", "--format", "jsonl", "--limit", "2"],
    )
    .await;
    let listed: Vec<String> = two
        .stdout
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["jobId"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(listed, ids[..2]);
    let completed = run(&server, ALICE, &["jobs", "--status", "no-such"]).await;
    assert_eq!(completed.code, Some(1));
    assert!(
        completed.stderr.contains("`status`"),
        "{}",
        completed.stderr
    );
    server.stop().await;
}

#[tokio::test]
async fn a_bad_filter_exits_1_with_the_problem_and_where_it_is() {
    let server = Server::start().await;
    let bad = "status >= 500 and\n  stauts = 1";
    let (status, problem) = server
        .post(
            ALICE,
            "/v1/jobs",
            serde_json::json!({ "filter": bad, "timeRange": { "last": "7d" } }),
        )
        .await;
    assert_eq!(status, 400);
    let ran = run(&server, ALICE, &["query", bad, "--last", "7d"]).await;
    assert_eq!(ran.code, Some(1));
    assert_eq!(ran.stdout, "");
    let title = problem["title"].as_str().unwrap();
    let detail = problem["detail"].as_str().unwrap();
    assert!(ran.stderr.contains(title), "{}", ran.stderr);
    assert!(ran.stderr.contains(detail), "{}", ran.stderr);
    let place = format!("line {}, column {}", problem["line"], problem["column"]);
    assert_eq!(problem["line"], 2);
    assert!(ran.stderr.contains(&place), "{}", ran.stderr);

    // No service there: a different exit code, and why.
    let nowhere = Command::new(env!("CARGO_BIN_EXE_pseudostream"))
        .args([
            "query",
            "status = 1",
            "--server",
            "http://127.0.0.1:9",
            "--key",
            ALICE,
        ])
        .env_remove("PSEUDOSTREAM_SERVER")
        .output()
        .await
        .unwrap();
    assert_eq!(nowhere.status.code(), Some(3));
    server.stop().await;
}

#[cfg(unix)]
#[tokio::test]
async fn ctrl_c_cancels_the_job_and_exits_130() {
    // Two chunks pass, then the worker is held mid-job.
    let (server, gate) = Server::start_gated(2).await;
    let mut child = pseudostream(&server, ALICE, &["query", "", "--last", "7d"])
        .spawn()
        .unwrap();
    // The client is following once it has printed the first rows.
    let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
    for _ in 0..20 {
        assert!(stdout.next_line().await.unwrap().is_some());
    }
    let pid = child.id().unwrap() as libc::pid_t;
    // SAFETY: kill(2) on our own child's pid, which has not been reaped.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGINT) }, 0);
    let status = tokio::time::timeout(Duration::from_secs(20), child.wait())
        .await
        .expect("the client exits")
        .unwrap();
    assert_eq!(status.code(), Some(130));

    let (_, list) = server.get(ALICE, "/v1/jobs").await;
    let job = list["jobs"][0]["jobId"].as_str().unwrap().to_owned();
    assert_eq!(list["jobs"][0]["cancelRequested"], true);
    gate.add_permits(1000);
    wait_until("the job is cancelled", Duration::from_secs(10), || async {
        server.get(ALICE, &format!("/v1/jobs/{job}")).await.1["status"] == "cancelled"
    })
    .await;
    server.stop().await;
}
