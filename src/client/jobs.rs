//! `pseudostream jobs`: the caller's jobs (started, or joined by dedup while
//! they live), newest first, every page of `GET /v1/jobs` followed by its
//! `cursor`.

use std::io::{self, Write};

use clap::Args;
use serde_json::Value;

use super::http::Api;
use super::output::{cell_text, write_table};
use super::{ClientError, ServerArgs};

/// Jobs asked for per page.
const PAGE: usize = 100;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum JobsFormat {
    Table,
    Jsonl,
}

#[derive(Debug, Args)]
pub struct JobsArgs {
    /// Only jobs in this state: queued, running, completed, failed,
    /// cancelled or expired.
    #[arg(long)]
    pub status: Option<String>,
    /// At most this many jobs (default: all of them).
    #[arg(long)]
    pub limit: Option<usize>,
    /// table: one line per job; jsonl: each job as the API gives it.
    #[arg(long, value_enum, default_value = "table")]
    pub format: JobsFormat,
    #[command(flatten)]
    pub server: ServerArgs,
}

/// The table's columns: heading, and the job's member.
const COLUMNS: [(&str, &str); 8] = [
    ("JOB", "jobId"),
    ("STATUS", "status"),
    ("ROWS", "rows"),
    ("CHUNKS", "chunks"),
    ("OFFSET", "offset"),
    ("SUBMITTED", "submittedAt"),
    ("JOINED", "joined"),
    ("FILTER", "filter"),
];

pub async fn run(args: JobsArgs) -> Result<(), ClientError> {
    let api = Api::new(&args.server)?;
    let mut wanted = args.limit.unwrap_or(usize::MAX);
    let mut cursor: Option<String> = None;
    let mut table = vec![COLUMNS.iter().map(|(h, _)| (*h).to_owned()).collect()];
    let mut out = io::stdout().lock();
    while wanted > 0 {
        let mut query = vec![("limit", PAGE.min(wanted).to_string())];
        query.extend(args.status.clone().map(|s| ("status", s)));
        query.extend(cursor.take().map(|c| ("cursor", c)));
        let page = api.jobs(&query).await?;
        wanted -= page.jobs.len().min(wanted);
        for job in &page.jobs {
            match args.format {
                JobsFormat::Jsonl => writeln!(out, "{}", job.get()).map_err(ClientError::from)?,
                JobsFormat::Table => {
                    let job: Value = serde_json::from_str(job.get()).unwrap_or_default();
                    table.push(COLUMNS.iter().map(|(_, m)| cell_text(&job[*m])).collect());
                }
            }
        }
        match page.next {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    if args.format == JobsFormat::Table {
        write_table(&mut out, &table).map_err(ClientError::from)?;
    }
    out.flush().map_err(ClientError::from)
}
