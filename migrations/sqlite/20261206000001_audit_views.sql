-- Views for the questions ops ask of the audit trail (docs/AUDIT.md has
-- the questions and the query for each), as in migrations/postgres.

-- Per UTC day, tenant and user: load, deduplication, failures.
CREATE VIEW audit_daily_by_user AS
SELECT
    substr(submitted_at, 1, 10)                                     AS day,
    tenant,
    user_id,
    count(*)                                                        AS submissions,
    sum(deduplicated_from IS NOT NULL)                              AS deduplicated,
    coalesce(sum(CASE WHEN deduplicated_from IS NULL THEN row_count END), 0) AS rows_produced,
    sum(status = 'failed')                                          AS failed,
    sum(truncated)                                                  AS truncated
FROM audit_submissions
GROUP BY 1, 2, 3;

-- The queries run most, per tenant.
CREATE VIEW audit_top_fingerprints AS
SELECT
    tenant,
    fingerprint,
    min(canonical_filter)                                           AS canonical_filter,
    count(*)                                                        AS submissions,
    count(DISTINCT user_id)                                         AS users,
    sum(deduplicated_from IS NULL)                                  AS jobs_started,
    max(submitted_at)                                               AS last_submitted_at
FROM audit_submissions
GROUP BY tenant, fingerprint;

-- First-chunk latency per started job.
CREATE VIEW audit_first_chunk_latency AS
SELECT
    tenant,
    user_id,
    job_id,
    canonical_filter,
    time_from,
    time_to,
    submitted_at,
    (julianday(first_chunk_at) - julianday(submitted_at)) * 86400.0 AS first_chunk_seconds,
    status,
    row_count
FROM audit_submissions
WHERE deduplicated_from IS NULL AND first_chunk_at IS NOT NULL;
