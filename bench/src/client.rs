//! A minimal client of the service's API, and the time range the
//! measurements query.

use std::time::Duration;

use anyhow::bail;
use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use serde::Deserialize;
use serde_json::Value;

/// The bench's API key (user and tenant `bench`, role ops).
pub(crate) const KEY: &str = "bench-key-0001";

/// A minimal API client.
pub(crate) struct Client {
    pub(crate) http: reqwest::Client,
    pub(crate) base: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Submitted {
    pub(crate) job_id: String,
    #[serde(default)]
    pub(crate) first_chunk: Option<ChunkHead>,
}

/// What the bench reads of a chunk; its rows are skipped, not built.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ChunkHead {
    pub(crate) is_last: bool,
    #[serde(default)]
    pub(crate) total_rows: Option<u64>,
    #[serde(default)]
    pub(crate) status: Option<String>,
}

#[derive(Deserialize)]
pub(crate) struct Page {
    pub(crate) chunks: Vec<ChunkHead>,
    pub(crate) next: u64,
}

impl Client {
    pub(crate) fn new(base: String) -> Client {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(1024)
            .build()
            .expect("a default HTTP client builds");
        Client { http, base }
    }

    pub(crate) async fn submit(
        &self,
        body: &Value,
        wait: Option<u32>,
    ) -> anyhow::Result<Submitted> {
        let url = match wait {
            Some(w) => format!("{}/v1/jobs?wait={w}", self.base),
            None => format!("{}/v1/jobs", self.base),
        };
        let res = self
            .http
            .post(url)
            .bearer_auth(KEY)
            .json(body)
            .send()
            .await?;
        let status = res.status();
        let text = res.text().await?;
        if status.as_u16() != 202 {
            bail!("submit answered {status}: {text}");
        }
        Ok(serde_json::from_str(&text)?)
    }

    pub(crate) async fn page(
        &self,
        job: &str,
        from: u64,
        wait: u32,
    ) -> anyhow::Result<(Page, usize)> {
        let url = format!(
            "{}/v1/jobs/{job}/chunks?from={from}&limit=1000&wait={wait}",
            self.base
        );
        let res = self.http.get(url).bearer_auth(KEY).send().await?;
        let status = res.status();
        let bytes = res.bytes().await?;
        if !status.is_success() {
            bail!(
                "chunks answered {status}: {}",
                String::from_utf8_lossy(&bytes)
            );
        }
        Ok((serde_json::from_slice(&bytes)?, bytes.len()))
    }

    pub(crate) async fn cancel(&self, job: &str) -> anyhow::Result<()> {
        self.http
            .delete(format!("{}/v1/jobs/{job}", self.base))
            .bearer_auth(KEY)
            .send()
            .await?;
        Ok(())
    }

    /// `GET` of an API path, decoded.
    pub(crate) async fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
    ) -> anyhow::Result<T> {
        let url = format!("{}{path}", self.base);
        Ok(self
            .http
            .get(url)
            .bearer_auth(KEY)
            .send()
            .await?
            .json()
            .await?)
    }

    /// Every chunk of a finished job, as JSON text of its stored size.
    pub(crate) async fn chunk_texts(&self, job: &str) -> anyhow::Result<Vec<String>> {
        #[derive(Deserialize)]
        struct Texts {
            chunks: Vec<Value>,
            next: u64,
        }
        let (mut from, mut texts) = (0, Vec::new());
        loop {
            let page: Texts = self
                .get_json(&format!("/v1/jobs/{job}/chunks?from={from}&limit=1000"))
                .await?;
            if page.chunks.is_empty() {
                return Ok(texts);
            }
            texts.extend(page.chunks.iter().map(Value::to_string));
            from = page.next;
        }
    }

    /// Waits, without reading a chunk, until the job finished; returns its
    /// rows and its time from submission to finish, by its own record.
    pub(crate) async fn wait_until_finished(&self, job: &str) -> anyhow::Result<(u64, f64)> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
        loop {
            let view: Value = self.get_json(&format!("/v1/jobs/{job}")).await?;
            if let Some(secs) = view["timings"]["totalSeconds"].as_f64() {
                return Ok((view["rows"].as_u64().unwrap_or(0), secs));
            }
            if tokio::time::Instant::now() > deadline {
                bail!("job {job} did not finish within two minutes");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Reads a job to its last chunk: (rows, chunks, bytes of chunk pages, status).
    pub(crate) async fn read_all(&self, job: &str) -> anyhow::Result<(u64, u64, u64, String)> {
        let (mut from, mut bytes) = (0, 0u64);
        loop {
            let (page, n) = self.page(job, from, 20).await?;
            bytes += n as u64;
            from = page.next;
            if let Some(last) = page.chunks.last().filter(|c| c.is_last) {
                let status = last.status.clone().unwrap_or_default();
                return Ok((last.total_rows.unwrap_or(0), from, bytes, status));
            }
        }
    }
}

/// `[from, to)` of "the last 90 days", as the API resolves `{last: "90d"}`.
pub(crate) fn last_90_days() -> (DateTime<Utc>, DateTime<Utc>) {
    let now = Utc::now();
    let to = now
        .duration_trunc(TimeDelta::minutes(1))
        .unwrap_or(now)
        .checked_add_signed(TimeDelta::minutes(1))
        .unwrap_or(now);
    (to - TimeDelta::days(90), to)
}

pub(crate) fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}
