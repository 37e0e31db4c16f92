//! The API's requests as the client makes them, and the problem documents
//! (`application/problem+json`) it gets back. No request has a total
//! timeout except where said: long-polls and event streams are long by
//! design; connecting is bounded, and so is every request that should answer
//! at once.

use std::fmt;
use std::time::Duration;

use reqwest::{RequestBuilder, Response, StatusCode};
use serde::Deserialize;
use serde_json::value::RawValue;

use super::{ClientError, ServerArgs};
use crate::api::jobs::SubmitRequest;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// For the requests that answer at once (submit, cancel, list).
const PROMPT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a poll may wait for chunks (the server caps it at 25 s, well
/// under a 60 s gateway).
pub const POLL_WAIT_SECS: u64 = 20;

/// A failed request: the service's problem, or no usable answer at all.
#[derive(Debug)]
pub enum Failure {
    Problem(Problem),
    /// No connection: the request was never sent.
    NotSent(String),
    /// The request went out, but no usable answer came back.
    Transport(String),
}

impl From<Failure> for ClientError {
    fn from(f: Failure) -> ClientError {
        match f {
            Failure::Problem(p) => ClientError::Refused(p.to_string()),
            Failure::NotSent(t) | Failure::Transport(t) => ClientError::Unreachable(t),
        }
    }
}

/// A problem document, with the members a user needs to fix the request.
#[derive(Debug, Default, Deserialize)]
pub struct Problem {
    #[serde(default)]
    pub title: String,
    #[serde(default)]
    pub status: u16,
    #[serde(default)]
    pub detail: String,
    /// Where a filter error is (1-based; the column counts characters).
    pub line: Option<u64>,
    pub column: Option<u64>,
    pub expected: Option<String>,
    /// From the `Retry-After` header (429, 503).
    #[serde(skip)]
    pub retry_after: Option<Duration>,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({}): {}", self.title, self.status, self.detail)?;
        if let (Some(line), Some(column)) = (self.line, self.column) {
            write!(f, "\n  at line {line}, column {column}")?;
            // The detail usually says it already.
            if let Some(expected) = self.expected.as_ref().filter(|e| !self.detail.contains(*e)) {
                write!(f, "; expected {expected}")?;
            }
        }
        Ok(())
    }
}

/// The 202 answer to a submission, as far as the client reads it.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Accepted {
    pub job_id: String,
    pub offset: u64,
    pub deduplicated: bool,
}

/// A page of chunks, each kept as the server wrote it (so rows keep their
/// fields' order).
#[derive(Debug, Deserialize)]
pub struct ChunkPage {
    pub chunks: Vec<Box<RawValue>>,
    pub next: u64,
}

/// A page of the caller's jobs, each kept as the server wrote it.
#[derive(Debug, Deserialize)]
pub struct JobsPage {
    pub jobs: Vec<Box<RawValue>>,
    pub next: Option<String>,
}

/// The service at one base URL, called with one key.
pub struct Api {
    http: reqwest::Client,
    base: String,
    key: String,
}

impl Api {
    pub fn new(args: &ServerArgs) -> Result<Api, ClientError> {
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .user_agent(concat!("pseudostream-cli/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ClientError::Unreachable(format!("cannot build an HTTP client: {e}")))?;
        Ok(Api {
            http,
            base: args.server.trim_end_matches('/').to_owned(),
            key: args.key.clone(),
        })
    }

    fn get(&self, path: &str) -> RequestBuilder {
        self.http
            .get(format!("{}{path}", self.base))
            .bearer_auth(&self.key)
    }

    /// Submits `request`; a retry with the same `idempotency_key` gets the
    /// job the first try got, even when its answer was lost.
    pub async fn submit(
        &self,
        request: &SubmitRequest,
        idempotency_key: &str,
    ) -> Result<Accepted, Failure> {
        let call = self
            .http
            .post(format!("{}/v1/jobs", self.base))
            .bearer_auth(&self.key)
            .header("idempotency-key", idempotency_key)
            .timeout(PROMPT_TIMEOUT)
            .json(request);
        json(self.send(call).await?).await
    }

    /// Chunks `from..` of a job, waiting up to [`POLL_WAIT_SECS`] for one.
    pub async fn chunks(&self, job: &str, from: u64) -> Result<ChunkPage, Failure> {
        let path = format!("/v1/jobs/{job}/chunks?from={from}&wait={POLL_WAIT_SECS}");
        let call = self
            .get(&path)
            .timeout(Duration::from_secs(POLL_WAIT_SECS) + PROMPT_TIMEOUT);
        json(self.send(call).await?).await
    }

    /// Opens the job's event stream from chunk `from`; `None` when this
    /// server has no push (the route answers 404 or 405), so polling it is.
    pub async fn events(&self, job: &str, from: u64) -> Result<Option<Response>, Failure> {
        let call = self
            .get(&format!("/v1/jobs/{job}/events?from={from}"))
            .header(reqwest::header::ACCEPT, "text/event-stream");
        let response = call.send().await.map_err(transport)?;
        match response.status() {
            s if s.is_success() => Ok(Some(response)),
            StatusCode::NOT_FOUND | StatusCode::METHOD_NOT_ALLOWED => Ok(None),
            _ => Err(Failure::Problem(problem(response).await)),
        }
    }

    pub async fn cancel(&self, job: &str) -> Result<(), Failure> {
        let call = self
            .http
            .delete(format!("{}/v1/jobs/{job}", self.base))
            .bearer_auth(&self.key)
            .timeout(PROMPT_TIMEOUT);
        self.send(call).await.map(drop)
    }

    pub async fn jobs(&self, query: &[(&str, String)]) -> Result<JobsPage, Failure> {
        let call = self.get("/v1/jobs").query(query).timeout(PROMPT_TIMEOUT);
        json(self.send(call).await?).await
    }

    async fn send(&self, call: RequestBuilder) -> Result<Response, Failure> {
        let response = call.send().await.map_err(transport)?;
        if response.status().is_success() {
            Ok(response)
        } else {
            Err(Failure::Problem(problem(response).await))
        }
    }
}

/// A request that got no answer, said once: where to, and the deepest
/// cause (reqwest's own message repeats the URL at every level).
pub fn transport(e: reqwest::Error) -> Failure {
    let mut cause: &dyn std::error::Error = &e;
    while let Some(deeper) = cause.source() {
        cause = deeper;
    }
    let url = e
        .url()
        .map(|u| format!(" at {}", u.origin().ascii_serialization()));
    let url = url.unwrap_or_default();
    if e.is_connect() {
        Failure::NotSent(format!("cannot reach the service{url}: {cause}"))
    } else {
        Failure::Transport(format!("no answer from the service{url}: {cause}"))
    }
}

async fn json<T: serde::de::DeserializeOwned>(response: Response) -> Result<T, Failure> {
    let body = response.bytes().await.map_err(transport)?;
    serde_json::from_slice(&body).map_err(|e| {
        Failure::Transport(format!(
            "the service's answer is not what this client reads: {e}"
        ))
    })
}

/// The response's problem document; a body that is not one (a proxy's
/// error page) becomes a problem with the status's reason as its title.
async fn problem(response: Response) -> Problem {
    let status = response.status();
    let retry_after = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    let body = response.text().await.unwrap_or_default();
    let mut problem = serde_json::from_str::<Problem>(&body).unwrap_or_else(|_| Problem {
        detail: body.chars().take(200).collect(),
        ..Problem::default()
    });
    if problem.title.is_empty() {
        problem.title = status.canonical_reason().unwrap_or("Error").to_owned();
    }
    problem.status = status.as_u16();
    problem.retry_after = retry_after;
    problem
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_filter_problem_says_where_and_what_was_expected() {
        let problem: Problem = serde_json::from_str(
            r#"{"type":"x","title":"Invalid filter","status":400,"detail":"unknown field `stauts`","line":1,"column":3,"expected":"a field"}"#,
        )
        .unwrap();
        assert_eq!(
            problem.to_string(),
            "Invalid filter (400): unknown field `stauts`\n  at line 1, column 3; expected a field"
        );
    }
}
