-- Submissions turned away (429 rate limited, 503 pool exhausted, overloaded,
-- audit or backend unavailable, shutting down). They never became jobs, so they have no
-- row in audit_submissions; each instance counts them in memory and adds its
-- counts here every PSEUDOSTREAM_REJECTION_FLUSH, one row per UTC minute,
-- tenant, user and reason (instances add to the same rows).
CREATE TABLE audit_rejections (
    minute        timestamptz NOT NULL,
    tenant        text NOT NULL,
    user_id       text NOT NULL,
    reason        text NOT NULL,
    count         bigint NOT NULL,
    sample_filter text NOT NULL,
    PRIMARY KEY (minute, tenant, user_id, reason)
);

CREATE INDEX audit_rejections_by_tenant ON audit_rejections (tenant, minute);

COMMENT ON TABLE audit_rejections IS
    'Submissions turned away, counted per UTC minute (its start), tenant, user and reason (a pseudostream_rejections_total reason). user_id ''(other)'' counts the users past the service''s bound on distinct users between two flushes. sample_filter: the filter text of one of them (the first written), cut to 512 bytes.';

-- Per tenant, user, UTC day and reason: how many submissions were turned
-- away, in how many distinct minutes, and one filter they sent.
CREATE VIEW audit_rejections_by_day AS
SELECT
    tenant,
    user_id,
    (minute AT TIME ZONE 'UTC')::date                       AS day,
    reason,
    sum(count)::bigint                                      AS count,
    count(*)                                                AS minutes,
    min(sample_filter)                                      AS sample_filter
FROM audit_rejections
GROUP BY tenant, user_id, day, reason;

COMMENT ON VIEW audit_rejections_by_day IS
    'Per tenant, user, UTC day and reason: submissions turned away, the distinct minutes they fell in, and one filter sent. ORDER BY count DESC for who was turned away most.';
