//! `pseudostream query`: submit a filter, follow the job's chunks, print
//! the rows as they arrive, and on a terminal show the progress on stderr.
//! A busy service (429, 503) is waited out as its `Retry-After` says, a
//! bounded number of times; Ctrl-C cancels the job and exits 130.

use std::io::{self, BufWriter, IsTerminal};
use std::time::Duration;

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};

use super::follow::{Chunk, Transport, follow};
use super::http::{Accepted, Api, Failure};
use super::output::{Format, RowWriter};
use super::{ClientError, ServerArgs};
use crate::api::jobs::{SubmitRequest, TimeRangeRequest};
use crate::explain::OrderArg;

/// Submissions tried while the service answers 429 or 503 (or cannot be
/// reached), before giving up.
const MAX_SUBMIT_ATTEMPTS: u32 = 5;
/// The longest wait between two of them, whatever `Retry-After` says.
const MAX_RETRY_WAIT: Duration = Duration::from_secs(60);

#[derive(Debug, Args)]
pub struct QueryArgs {
    /// The filter, e.g. 'status >= 500 and service = "checkout"'.
    pub filter: String,
    /// A range ending now, e.g. `15m`, `24h`, `7d` (at most 90 days).
    /// Without it and without --from/--to: the last 24 hours.
    #[arg(long, conflicts_with_all = ["from", "to"])]
    pub last: Option<String>,
    /// Range start (RFC 3339, inclusive); with --to.
    #[arg(long, requires = "to")]
    pub from: Option<String>,
    /// Range end (RFC 3339, exclusive); with --from.
    #[arg(long, requires = "from")]
    pub to: Option<String>,
    /// Comma-separated fields to return, in this order (default: all).
    #[arg(long, value_delimiter = ',')]
    pub fields: Vec<String>,
    /// By time: newest first (the default) or oldest first.
    #[arg(long, value_enum)]
    pub order: Option<OrderArg>,
    /// Stop after this many rows (the service caps it too).
    #[arg(long)]
    pub max_rows: Option<u64>,
    /// For a relative range: share a live identical job whose range ended
    /// at most this long ago (e.g. `2m`; `0` always starts a fresh job).
    #[arg(long)]
    pub max_staleness: Option<String>,
    /// jsonl: one JSON object per row; csv: RFC 4180 with a header line;
    /// table: aligned columns, printed once the last row is in.
    #[arg(long, value_enum, default_value = "jsonl")]
    pub format: Format,
    #[command(flatten)]
    pub server: ServerArgs,
}

impl QueryArgs {
    fn request(&self) -> SubmitRequest {
        let last = match (&self.last, &self.from) {
            (None, None) => Some("24h".to_owned()),
            (last, _) => last.clone(),
        };
        SubmitRequest {
            filter: self.filter.clone(),
            time_range: TimeRangeRequest {
                from: self.from.clone(),
                to: self.to.clone(),
                last,
            },
            fields: (!self.fields.is_empty()).then(|| self.fields.clone()),
            order: self.order.map(Into::into),
            max_rows: self.max_rows,
            max_staleness: self.max_staleness.clone(),
        }
    }
}

pub async fn run(args: QueryArgs) -> Result<(), ClientError> {
    let api = Api::new(&args.server)?;
    // Installed first, so a Ctrl-C at any moment from here on is ours.
    let mut interrupt = Interrupt::new()?;
    let request = args.request();
    let accepted = tokio::select! {
        accepted = submit(&api, &request) => accepted?,
        () = interrupt.wait() => return Err(ClientError::Interrupted),
    };
    let progress = Progress::new(&accepted);
    let mut rows = RowWriter::new(BufWriter::new(io::stdout()), args.format);
    let followed = follow(&api, &accepted.job_id, |chunk, transport| {
        rows.write_rows(&chunk.rows).map_err(ClientError::from)?;
        progress.chunk(chunk, transport);
        Ok(())
    });
    let outcome = tokio::select! {
        last = followed => last,
        () = interrupt.wait() => Err(ClientError::Interrupted),
    };
    let outcome = outcome.and_then(|last| {
        rows.finish().map_err(ClientError::from)?;
        Ok(last)
    });
    match outcome {
        Ok(last) => {
            progress.done(&last);
            ended(&last)
        }
        Err(e @ (ClientError::Interrupted | ClientError::OutputClosed)) => {
            progress.bar.abandon();
            stop(&api, &accepted).await;
            // Whoever closed our output (`| head`) has what they wanted.
            match e {
                ClientError::OutputClosed => Ok(()),
                e => Err(e),
            }
        }
        Err(e) => {
            progress.bar.abandon();
            Err(e)
        }
    }
}

/// Submits, waiting out 429 and 503 as `Retry-After` says and retrying a
/// lost answer (but not a refused connection: a wrong `--server` should
/// not take seconds to say so); one idempotency key for every try, so a retry whose
/// first try was admitted after all gets that job.
async fn submit(api: &Api, request: &SubmitRequest) -> Result<Accepted, ClientError> {
    let key = uuid::Uuid::new_v4().to_string();
    let mut attempt = 1;
    loop {
        let failure = match api.submit(request, &key).await {
            Ok(accepted) => return Ok(accepted),
            Err(failure) => failure,
        };
        let (why, wait) = match &failure {
            Failure::Problem(p) if matches!(p.status, 429 | 503) => (
                format!("{} ({})", p.title, p.status),
                p.retry_after.unwrap_or(Duration::from_secs(1)),
            ),
            Failure::Transport(t) => (t.clone(), Duration::from_secs(1)),
            Failure::Problem(_) | Failure::NotSent(_) => return Err(failure.into()),
        };
        if attempt == MAX_SUBMIT_ATTEMPTS {
            return Err(failure.into());
        }
        attempt += 1;
        let wait = wait.min(MAX_RETRY_WAIT);
        eprintln!(
            "pseudostream: {why}; retrying in {} s (attempt {attempt} of {MAX_SUBMIT_ATTEMPTS})",
            wait.as_secs_f64().ceil()
        );
        tokio::time::sleep(wait).await;
    }
}

/// Cancels an interrupted job, unless it was shared: others are reading it.
async fn stop(api: &Api, accepted: &Accepted) {
    let id = &accepted.job_id;
    if accepted.deduplicated {
        eprintln!("pseudostream: job {id} is shared with other submissions; left running");
        return;
    }
    match api.cancel(id).await {
        Ok(()) => eprintln!("pseudostream: job {id} cancelled"),
        Err(e) => eprintln!(
            "pseudostream: could not cancel job {id}: {}",
            ClientError::from(e)
        ),
    }
}

/// How the job ended, as an exit: a failed or cancelled job is an error, a
/// truncated one says so.
fn ended(last: &Chunk) -> Result<(), ClientError> {
    let rows = last.total_rows.unwrap_or_default();
    match last.status.as_deref() {
        Some("failed") => Err(ClientError::Refused(format!(
            "the job failed after {rows} rows: {}",
            last.error.as_deref().unwrap_or("no reason given")
        ))),
        Some("cancelled") => Err(ClientError::Refused(format!(
            "the job was cancelled after {rows} rows"
        ))),
        _ if last.truncated => {
            eprintln!(
                "pseudostream: stopped at {rows} rows (--max-rows, or the service's row cap)"
            );
            Ok(())
        }
        _ => Ok(()),
    }
}

/// The progress line on stderr, drawn only when stderr is a terminal (a
/// script reading stderr gets only errors): rows, chunks, elapsed time, the
/// job and whether it is shared, and how its chunks come.
struct Progress {
    bar: ProgressBar,
    /// `job {id} at offset {n} (new|shared`, the part that does not change.
    job: String,
}

impl Progress {
    fn new(accepted: &Accepted) -> Progress {
        let bar = if io::stderr().is_terminal() {
            let bar = ProgressBar::new_spinner();
            bar.set_style(
                ProgressStyle::with_template("{spinner} {pos} rows, {msg} [{elapsed}]")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        } else {
            ProgressBar::hidden()
        };
        let shared = if accepted.deduplicated {
            "shared"
        } else {
            "new"
        };
        let job = format!(
            "job {} at offset {} ({shared}",
            accepted.job_id, accepted.offset
        );
        bar.set_message(format!("0 chunks · {job})"));
        Progress { bar, job }
    }

    fn chunk(&self, chunk: &Chunk, transport: Transport) {
        self.bar.inc(chunk.rows.len() as u64);
        let how = match transport {
            Transport::Push => "pushed",
            Transport::Polling => "polled",
        };
        let chunks = chunk.chunk_seq + 1;
        self.bar
            .set_message(format!("{chunks} chunks · {}, {how})", self.job));
    }

    fn done(&self, last: &Chunk) {
        let status = last.status.as_deref().unwrap_or("completed");
        let chunks = last.chunk_seq + 1;
        self.bar
            .finish_with_message(format!("{chunks} chunks · {}) {status}", self.job));
    }
}

/// Ctrl-C, caught from the start: the job is cancelled before exiting.
struct Interrupt {
    #[cfg(unix)]
    signal: tokio::signal::unix::Signal,
}

impl Interrupt {
    fn new() -> Result<Interrupt, ClientError> {
        #[cfg(unix)]
        {
            let signal = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
                .map_err(|e| ClientError::Output(format!("cannot catch Ctrl-C: {e}")))?;
            Ok(Interrupt { signal })
        }
        #[cfg(not(unix))]
        Ok(Interrupt {})
    }

    async fn wait(&mut self) {
        #[cfg(unix)]
        self.signal.recv().await;
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
    }
}
