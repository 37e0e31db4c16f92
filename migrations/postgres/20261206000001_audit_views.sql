-- Views for the questions ops ask of the audit trail (docs/AUDIT.md has
-- the questions and the query for each). Views only: nothing is stored.

-- The queries run most, per tenant: how often, by how many users, how many
-- jobs they started (the rest shared a live job), and when last.
CREATE VIEW audit_top_fingerprints AS
SELECT
    tenant,
    fingerprint,
    min(canonical_filter)                                   AS canonical_filter,
    count(*)                                                AS submissions,
    count(DISTINCT user_id)                                 AS users,
    count(*) FILTER (WHERE deduplicated_from IS NULL)       AS jobs_started,
    max(submitted_at)                                       AS last_submitted_at
FROM audit_submissions
GROUP BY tenant, fingerprint;

COMMENT ON VIEW audit_top_fingerprints IS
    'Per tenant and fingerprint: submissions, distinct users, jobs started (the others joined a live job) and the last submission. ORDER BY submissions DESC for the top queries.';

-- First-chunk latency per job that was started (a submission that joined a
-- live job may arrive after its first chunk, so it says nothing of speed).
CREATE VIEW audit_first_chunk_latency AS
SELECT
    tenant,
    user_id,
    job_id,
    canonical_filter,
    time_from,
    time_to,
    submitted_at,
    extract(epoch FROM first_chunk_at - submitted_at)       AS first_chunk_seconds,
    status,
    row_count
FROM audit_submissions
WHERE deduplicated_from IS NULL AND first_chunk_at IS NOT NULL;

COMMENT ON VIEW audit_first_chunk_latency IS
    'Seconds from submission to the first chunk, per started job. ORDER BY first_chunk_seconds DESC for the slowest.';
