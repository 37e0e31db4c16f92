-- One row per accepted submission (deduplicated ones included), written
-- before the 202 and updated as the job moves.
CREATE TABLE audit_submissions (
    submission_id     TEXT PRIMARY KEY,
    job_id            TEXT NOT NULL,
    fingerprint       TEXT NOT NULL,
    user_id           TEXT NOT NULL,
    tenant            TEXT NOT NULL,
    result_offset     INTEGER NOT NULL,
    filter_text       TEXT NOT NULL,
    canonical_filter  TEXT NOT NULL,
    time_from         TEXT NOT NULL,
    time_to           TEXT NOT NULL,
    -- The job this submission joined instead of starting one; NULL for the
    -- submission that started the job.
    deduplicated_from TEXT,
    status            TEXT NOT NULL,
    row_count         INTEGER NOT NULL DEFAULT 0,
    chunk_count       INTEGER NOT NULL DEFAULT 0,
    truncated         INTEGER NOT NULL DEFAULT 0,
    error             TEXT,
    submitted_at      TEXT NOT NULL,
    started_at        TEXT,
    first_chunk_at    TEXT,
    finished_at       TEXT,
    expired_at        TEXT
);

CREATE INDEX audit_by_job ON audit_submissions (job_id);
CREATE INDEX audit_by_user_time ON audit_submissions (tenant, user_id, submitted_at);
CREATE INDEX audit_by_time ON audit_submissions (submitted_at);
CREATE INDEX audit_by_fingerprint ON audit_submissions (fingerprint);
