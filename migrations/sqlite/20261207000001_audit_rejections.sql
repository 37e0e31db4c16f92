-- Submissions turned away (429 rate limited, 503 pool exhausted, overloaded,
-- audit or backend unavailable, shutting down). They never became jobs, so they have no
-- row in audit_submissions; the service counts them in memory and adds its
-- counts here every PSEUDOSTREAM_REJECTION_FLUSH, one row per UTC minute,
-- tenant, user and reason. As in migrations/postgres.
CREATE TABLE audit_rejections (
    -- The start of the UTC minute, RFC 3339 like every time here.
    minute        TEXT NOT NULL,
    tenant        TEXT NOT NULL,
    -- '(other)' counts the users past the service's bound on distinct
    -- users between two flushes.
    user_id       TEXT NOT NULL,
    -- A pseudostream_rejections_total reason: rate_limited, pool_exhausted,
    -- result_store_full, audit_unavailable, backend_unavailable,
    -- shutting_down.
    reason        TEXT NOT NULL,
    count         INTEGER NOT NULL,
    -- The filter text of one of them (the first written), cut to 512 bytes.
    sample_filter TEXT NOT NULL,
    PRIMARY KEY (minute, tenant, user_id, reason)
);

CREATE INDEX audit_rejections_by_tenant ON audit_rejections (tenant, minute);

-- Per tenant, user, UTC day and reason: how many submissions were turned
-- away, in how many distinct minutes, and one filter they sent.
CREATE VIEW audit_rejections_by_day AS
SELECT
    tenant,
    user_id,
    substr(minute, 1, 10)                                           AS day,
    reason,
    sum(count)                                                      AS count,
    count(*)                                                        AS minutes,
    min(sample_filter)                                              AS sample_filter
FROM audit_rejections
GROUP BY tenant, user_id, day, reason;
