//! The command-line client: `pseudostream query` submits a filter and prints
//! its rows as they arrive; `pseudostream jobs` lists the caller's jobs. It
//! is a plain HTTP client of the public API (the same binary, so nothing
//! more to install): it shares only the wire types with the server and
//! never touches its backends. `http` makes the requests and reads problem
//! documents, `follow` reads a job's chunks (pushed as Server-Sent Events,
//! `sse`, or polled when the server has no push), `output` prints rows as
//! JSON lines, CSV or a table, `query` and `jobs` are the two commands.

mod follow;
mod http;
pub mod jobs;
mod output;
pub mod query;
mod sse;

use std::process::ExitCode;

use clap::Args;

pub use jobs::JobsArgs;
pub use query::QueryArgs;

/// How to reach the service, shared by the client's commands.
#[derive(Debug, Clone, Args)]
pub struct ServerArgs {
    /// The service's base URL (plain http).
    #[arg(
        long,
        env = "PSEUDOSTREAM_SERVER",
        default_value = "http://127.0.0.1:8080"
    )]
    pub server: String,
    /// The API key, sent as `Authorization: Bearer`; `serve` prints a
    /// development key at start-up.
    #[arg(long, env = "PSEUDOSTREAM_KEY", hide_env_values = true)]
    pub key: String,
}

/// What ended a command, and the exit code it gives.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The service answered with a problem document (a refused request, a
    /// failed job).
    #[error("{0}")]
    Refused(String),
    /// The service could not be reached, or answered something that is not
    /// this API.
    #[error("{0}")]
    Unreachable(String),
    /// Ctrl-C: the job was cancelled (or left to those sharing it).
    #[error("interrupted")]
    Interrupted,
    /// Whoever reads the output closed it (`| head`): stop quietly.
    #[error("the output was closed")]
    OutputClosed,
    /// The output cannot be written.
    #[error("cannot write the output: {0}")]
    Output(String),
}

impl ClientError {
    pub fn exit_code(&self) -> u8 {
        match self {
            ClientError::Refused(_) | ClientError::Output(_) => 1,
            ClientError::OutputClosed => 0,
            ClientError::Unreachable(_) => 3,
            // 128 + SIGINT, what a shell reports for a command Ctrl-C ended.
            ClientError::Interrupted => 130,
        }
    }
}

impl From<std::io::Error> for ClientError {
    /// Writing the output failed.
    fn from(e: std::io::Error) -> ClientError {
        match e.kind() {
            std::io::ErrorKind::BrokenPipe => ClientError::OutputClosed,
            _ => ClientError::Output(e.to_string()),
        }
    }
}

/// Runs a client command to its exit code, saying on stderr why it failed.
pub async fn run(command: impl Future<Output = Result<(), ClientError>>) -> ExitCode {
    match command.await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if !matches!(e, ClientError::Interrupted | ClientError::OutputClosed) {
                eprintln!("pseudostream: {e}");
            }
            ExitCode::from(e.exit_code())
        }
    }
}
