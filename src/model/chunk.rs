//! A chunk: one published piece of a result, as readers see it.

use std::fmt::Write as _;

use super::{JobId, JobStatus, Offset, Row, push_json_str};

/// One published piece of a result, as readers see it (the JSON of
/// [`Chunk::to_json`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Chunk {
    pub job_id: JobId,
    pub offset: Offset,
    pub chunk_seq: u64,
    /// Which attempt at the job wrote the chunk (see
    /// [`JobRecord::attempt`](super::JobRecord::attempt)): a job taken over
    /// from a worker that went silent goes on under a higher number.
    pub attempt: u32,
    pub is_last: bool,
    pub rows: Vec<Row>,
    /// Only on the last chunk: how the job ended.
    pub status: Option<JobStatus>,
    pub total_rows: Option<u64>,
    pub truncated: Option<bool>,
    pub error: Option<String>,
}

impl Chunk {
    /// The chunk as stored and served, encoded once at publish. Written by
    /// hand because rows are already JSON text: serde would need each row
    /// re-parsed (`RawValue`) or rebuilt as a map.
    pub fn to_json(&self) -> String {
        // Sized to hold the whole text: the buffer is what is stored, and
        // the result log counts a chunk by its length, so a buffer that
        // doubled when it overflowed would hold memory nobody counts.
        let rows: usize = self.rows.iter().map(|r| r.as_json().len() + 1).sum();
        let ending = if self.is_last {
            // Status, totalRows, truncated, and the error escaped.
            80 + self.error.as_ref().map_or(0, |e| 16 + 2 * e.len())
        } else {
            0
        };
        let mut out = String::with_capacity(rows + 160 + ending);
        let _ = write!(
            out,
            r#"{{"jobId":"{}","offset":{},"chunkSeq":{},"attempt":{},"isLast":{},"rows":["#,
            self.job_id, self.offset, self.chunk_seq, self.attempt, self.is_last
        );
        for (i, row) in self.rows.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(row.as_json());
        }
        out.push(']');
        if let Some(status) = self.status {
            let _ = write!(out, r#","status":"{}""#, status.as_str());
        }
        if let Some(total) = self.total_rows {
            let _ = write!(out, r#","totalRows":{total}"#);
        }
        if let Some(truncated) = self.truncated {
            let _ = write!(out, r#","truncated":{truncated}"#);
        }
        if let Some(error) = &self.error {
            out.push_str(r#","error":"#);
            push_json_str(&mut out, error);
        }
        out.push('}');
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value as Json, json};

    #[test]
    fn chunk_json_has_every_field_readers_use() {
        let job = JobId::new();
        let row = Row::from_pairs([("service", &json!("a\"b")), ("status", &json!(500))]);
        let mut chunk = Chunk {
            job_id: job,
            offset: Offset(7),
            chunk_seq: 3,
            attempt: 2,
            is_last: false,
            rows: vec![row.clone(), row],
            status: None,
            total_rows: None,
            truncated: None,
            error: None,
        };
        let parsed: Json = serde_json::from_str(&chunk.to_json()).unwrap();
        assert_eq!(
            parsed,
            json!({"jobId": job.to_string(), "offset": 7, "chunkSeq": 3, "attempt": 2, "isLast": false,
                   "rows": [{"service": "a\"b", "status": 500}, {"service": "a\"b", "status": 500}]})
        );
        chunk.rows.clear();
        chunk.is_last = true;
        chunk.status = Some(JobStatus::Failed);
        chunk.total_rows = Some(20);
        chunk.truncated = Some(false);
        chunk.error = Some("line\n\"quoted\"".into());
        let parsed: Json = serde_json::from_str(&chunk.to_json()).unwrap();
        assert_eq!(
            parsed,
            json!({"jobId": job.to_string(), "offset": 7, "chunkSeq": 3, "attempt": 2, "isLast": true,
                   "rows": [], "status": "failed", "totalRows": 20, "truncated": false,
                   "error": "line\n\"quoted\""})
        );
    }

    /// The stored buffer is the encoding's own, and the result log counts
    /// its length: the capacity sized up front must hold the whole text,
    /// the largest last chunk's included, so it never doubles.
    #[test]
    fn the_encoding_fits_the_capacity_it_sizes() {
        let row = Row::from_pairs([("message", &json!("x".repeat(200))), ("n", &json!(1))]);
        let mut chunk = Chunk {
            job_id: JobId::new(),
            offset: Offset(999),
            chunk_seq: u64::MAX,
            attempt: u32::MAX,
            is_last: false,
            rows: vec![row; 10],
            status: None,
            total_rows: None,
            truncated: None,
            error: None,
        };
        let fits = |chunk: &Chunk| {
            let json = chunk.to_json();
            json.capacity() - json.len() < 200
        };
        assert!(fits(&chunk));
        chunk.is_last = true;
        chunk.status = Some(JobStatus::Cancelled);
        chunk.total_rows = Some(u64::MAX);
        chunk.truncated = Some(false);
        chunk.error = Some("\"".repeat(100));
        assert!(fits(&chunk));
    }
}
