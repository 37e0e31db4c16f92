-- The audit trail on Postgres: the same rows as the embedded SQLite log
-- (migrations/sqlite), with real types so ops can query it with plain SQL.
-- One row per accepted submission (deduplicated ones included), written
-- before the 202 and updated as the job moves.

CREATE TABLE audit_submissions (
    submission_id     uuid PRIMARY KEY,
    -- Several submissions share a job when they were deduplicated onto it.
    job_id            uuid NOT NULL,
    fingerprint       text NOT NULL,
    user_id           text NOT NULL,
    tenant            text NOT NULL,
    result_offset     bigint NOT NULL,
    filter_text       text NOT NULL,
    canonical_filter  text NOT NULL,
    time_from         timestamptz NOT NULL,
    time_to           timestamptz NOT NULL,
    -- The job this submission joined instead of starting one; NULL for the
    -- submission that started the job.
    deduplicated_from uuid,
    -- The states of JobStatus; a typo in code fails loudly instead of
    -- silently hiding rows from status-based reports.
    status            text NOT NULL
        CHECK (status IN ('queued', 'running', 'completed', 'failed', 'cancelled', 'expired')),
    row_count         bigint NOT NULL DEFAULT 0,
    chunk_count       bigint NOT NULL DEFAULT 0,
    truncated         boolean NOT NULL DEFAULT false,
    error             text,
    submitted_at      timestamptz NOT NULL,
    started_at        timestamptz,
    first_chunk_at    timestamptz,
    finished_at       timestamptz,
    expired_at        timestamptz
);

COMMENT ON TABLE audit_submissions IS
    'One row per accepted query submission (deduplicated ones included); written before the 202, updated as the job runs. Fail closed: no row, no job.';
COMMENT ON COLUMN audit_submissions.job_id IS
    'The job that serves this submission; shared by deduplicated submissions.';
COMMENT ON COLUMN audit_submissions.deduplicated_from IS
    'Set when the submission joined an existing job instead of starting one.';
COMMENT ON COLUMN audit_submissions.result_offset IS
    'The result pool slot (0..pool size) the job publishes to, as returned to the client.';
COMMENT ON COLUMN audit_submissions.row_count IS
    'Rows the job has published so far (copied from the job on every progress update).';
COMMENT ON COLUMN audit_submissions.expired_at IS
    'When the job''s result was dropped; expired rows no longer receive progress updates.';

-- Progress updates and expiry address every row of one job.
CREATE INDEX audit_by_job ON audit_submissions (job_id);
COMMENT ON INDEX audit_by_job IS
    'record_progress/record_expired update all submissions of a job.';

-- The /v1/audit question: one user of one tenant, newest first.
CREATE INDEX audit_by_user_time ON audit_submissions (tenant, user_id, submitted_at DESC);
COMMENT ON INDEX audit_by_user_time IS
    'Per-user audit search within a tenant, newest first (/v1/audit?user=...).';

-- Time-window questions across users, and retention deletes by age.
CREATE INDEX audit_by_time ON audit_submissions (submitted_at);
COMMENT ON INDEX audit_by_time IS
    'Time-window reports across users and retention deletes by age.';

-- "Who else ran this query?": the fingerprint identifies a query's meaning.
CREATE INDEX audit_by_fingerprint ON audit_submissions (fingerprint);
COMMENT ON INDEX audit_by_fingerprint IS
    'Find every submission of the same query (same fingerprint), e.g. to trace a hot or abusive query.';

-- Restart recovery marks queued/running jobs failed; a partial index keeps
-- that scan proportional to the jobs in flight, not to the whole history.
CREATE INDEX audit_in_flight ON audit_submissions (status)
    WHERE status IN ('queued', 'running');
COMMENT ON INDEX audit_in_flight IS
    'Jobs in flight, for record_interrupted at start-up and for "what is running now" checks.';

-- The daily ops report: load, deduplication and latency per user. Latency
-- (seconds from submission to the first chunk) only counts submissions that
-- started their job: a deduplicated submission may join after the first
-- chunk, so its difference says nothing about the service's speed. Rows are
-- counted on those submissions too, so a shared job is not counted twice.
CREATE VIEW audit_daily_by_user AS
SELECT
    (submitted_at AT TIME ZONE 'UTC')::date                                AS day,
    tenant,
    user_id,
    count(*)                                                               AS submissions,
    count(*) FILTER (WHERE deduplicated_from IS NOT NULL)                  AS deduplicated,
    coalesce(sum(row_count) FILTER (WHERE deduplicated_from IS NULL), 0)   AS rows_produced,
    count(*) FILTER (WHERE status = 'failed')                              AS failed,
    count(*) FILTER (WHERE truncated)                                      AS truncated,
    percentile_cont(0.5) WITHIN GROUP (
        ORDER BY extract(epoch FROM first_chunk_at - submitted_at)
    ) FILTER (WHERE deduplicated_from IS NULL AND first_chunk_at IS NOT NULL)
                                                                           AS p50_first_chunk_seconds,
    percentile_cont(0.95) WITHIN GROUP (
        ORDER BY extract(epoch FROM first_chunk_at - submitted_at)
    ) FILTER (WHERE deduplicated_from IS NULL AND first_chunk_at IS NOT NULL)
                                                                           AS p95_first_chunk_seconds
FROM audit_submissions
GROUP BY 1, 2, 3;

COMMENT ON VIEW audit_daily_by_user IS
    'Per UTC day, tenant and user: submissions, deduplicated ones, rows produced by the jobs they started, failures, truncations, and p50/p95 seconds to the first chunk (jobs they started only).';
