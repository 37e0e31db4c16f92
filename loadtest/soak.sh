#!/usr/bin/env bash
# The soak (docs/RELIABILITY.md, "Soak"): starts the service on the
# distributed stack (Redis, Kafka, Postgres) under a Redis key prefix, a
# topic and an audit schema of its own, runs loadtest/soak.js for MINUTES
# (2,500 long-polling dashboards, 1 submission a second), samples the
# server's RSS every 5 s, and applies the pass rule (k6's thresholds and
# loadtest/soak_rss.py): 0 errors, RSS at the last minute <= RSS at minute
# BASELINE x 1.1, peak <= RSS_BOUND_MIB. Exits non-zero when any part fails.
#
#   BIN=target/release/pseudostream loadtest/soak.sh [MINUTES]   # default 10
#
# Settings (environment): BIN; OUT (default loadtest-out); DATA (where the
# demo dataset is generated once, default $OUT/data) with DAYS and
# ROWS_PER_DAY (default 90 and 60000, the README's demo data);
# REDIS_URL, KAFKA_BROKERS, DATABASE_URL (default: the local services of
# .ci/services.sh); DASHBOARDS (2500), RATE (submissions/s, 1); TTL (result
# TTL, 30s) and OFFSETS (pool size, 45). A job holds its offset for its run
# time plus TTL, so about RATE x TTL offsets are held: the pool is half as
# large again, so it never runs out (a 503 would fail the run) while most
# dashboards find a job at their offset, and every offset is leased again
# every OFFSETS / RATE seconds (each dashboard sees its job replaced about
# every 45 s). A short cycle puts the server in its steady state well
# before the baseline minute: with a 60 s TTL and 80 offsets, RSS still
# rose until minute 3.5, and the rule measured the warm-up. BASELINE: the minute the end is compared with (2; 0 skips
# the growth rule, the default for runs under 4 minutes, which are all
# warm-up); RSS_BOUND_MIB (peak bound, 512); HEAPTRACK=1 runs the server
# under heaptrack (its profile goes to $OUT).
# Output: $OUT/soak.{k6.txt,summary.json,rss.csv,server.log,metrics.txt,result.md}.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
MINUTES=${1:-10}
BIN=$(realpath "${BIN:-./target/release/pseudostream}")
OUT=${OUT:-loadtest-out}
DATA=${DATA:-$OUT/data}
DAYS=${DAYS:-90}
ROWS_PER_DAY=${ROWS_PER_DAY:-60000}
REDIS_URL=${REDIS_URL:-redis://127.0.0.1:6379}
KAFKA_BROKERS=${KAFKA_BROKERS:-127.0.0.1:9092}
DATABASE_URL=${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/test}
DASHBOARDS=${DASHBOARDS:-2500}
OFFSETS=${OFFSETS:-45}
if [ "$MINUTES" -ge 4 ]; then BASELINE=${BASELINE:-2}; else BASELINE=${BASELINE:-0}; fi
KEY=soak-key-0001
mkdir -p "$OUT"
OUT=$(realpath "$OUT")

# One descriptor per connection, in k6 and in the server (each its own
# process): raise the soft limit as far as the hard one allows.
ulimit -n "$(ulimit -Hn)"
if [ "$(ulimit -n)" -lt $((DASHBOARDS + 1000)) ]; then
  echo "open-file limit $(ulimit -n) is too low for $DASHBOARDS dashboards" >&2
  exit 2
fi

DATASET="$DATA/demo-${DAYS}d-${ROWS_PER_DAY}"
if [ ! -f "$DATASET.complete" ]; then
  echo "generating the demo dataset ($DAYS days x $ROWS_PER_DAY rows) in $DATASET"
  "$BIN" gen-data --dir "$DATASET" --days "$DAYS" --rows-per-day "$ROWS_PER_DAY" > "$OUT/gen-data.log" 2>&1
  touch "$DATASET.complete"
fi

# The run's own names on the shared services, removed again at the end
# (the topic stays: the service never deletes topics; a memory broker
# forgets it at its restart).
RUN_ID="soak-$(date -u +%Y%m%d%H%M%S)-$$"
SCHEMA="soak_$(date -u +%Y%m%d%H%M%S)_$$"
sql() { PGOPTIONS=--client-min-messages=warning psql -qX -v ON_ERROR_STOP=1 "$DATABASE_URL" "$@"; }
sql -c "CREATE SCHEMA $SCHEMA"
SPID=""; MON=""
cleanup() {
  [ -n "$MON" ] && kill "$MON" 2>/dev/null || true
  [ -n "$SPID" ] && kill "$SPID" 2>/dev/null && wait "$SPID" 2>/dev/null || true
  redis-cli -u "$REDIS_URL" --scan --pattern "$RUN_ID*" | xargs -r -n 500 redis-cli -u "$REDIS_URL" del >/dev/null
  sql -c "DROP SCHEMA IF EXISTS $SCHEMA CASCADE" || true
}
trap cleanup EXIT

SERVER=("$BIN" serve)
if [ "${HEAPTRACK:-0}" = 1 ]; then
  SERVER=(heaptrack -o "$OUT/soak.heaptrack" "$BIN" serve)
fi
PSEUDOSTREAM_LISTEN=127.0.0.1:0 PSEUDOSTREAM_API_KEYS="$KEY=soak:soak:ops" \
PSEUDOSTREAM_RATE_LIMIT=0/1s PSEUDOSTREAM_OFFSET_POOL_SIZE="$OFFSETS" \
PSEUDOSTREAM_RESULT_TTL="${TTL:-30s}" \
PSEUDOSTREAM_SOURCE="$DATASET" PSEUDOSTREAM_DATA_DIR="$OUT/server-data" \
PSEUDOSTREAM_REDIS_URL="$REDIS_URL" PSEUDOSTREAM_REDIS_PREFIX="$RUN_ID" \
PSEUDOSTREAM_KAFKA_BROKERS="$KAFKA_BROKERS" PSEUDOSTREAM_KAFKA_TOPIC="$RUN_ID" \
PSEUDOSTREAM_DATABASE_URL="$DATABASE_URL?options=-c%20search_path%3D$SCHEMA" \
RUST_LOG=${RUST_LOG:-warn} \
  "${SERVER[@]}" > "$OUT/soak.server.out" 2> "$OUT/soak.server.log" &
SPID=$!

# The server prints its address on its first line (it chose a free port).
BASE_URL=""
for _ in $(seq 1 300); do
  BASE_URL=$(grep -o 'listening on http://[0-9.:]*' "$OUT/soak.server.out" 2>/dev/null | cut -d' ' -f3 || true)
  [ -n "$BASE_URL" ] && break
  kill -0 "$SPID" 2>/dev/null || { echo "the server exited:" >&2; tail -20 "$OUT/soak.server.log" >&2; exit 1; }
  sleep 0.2
done
[ -n "$BASE_URL" ] || { echo "the server printed no address within 60 s" >&2; exit 1; }
for _ in $(seq 1 150); do curl -sf "$BASE_URL/readyz" >/dev/null && break; sleep 0.2; done
curl -sf "$BASE_URL/readyz" >/dev/null || { echo "$BASE_URL/readyz never answered 200" >&2; exit 1; }
# Under heaptrack the server is a descendant of heaptrack's script: sample
# (and stop) the process running $BIN.
RSS_PID=$SPID
if [ "${HEAPTRACK:-0}" = 1 ]; then
  for child in $(pgrep -P "$SPID") $(for c in $(pgrep -P "$SPID"); do pgrep -P "$c"; done); do
    [ "$(readlink "/proc/$child/exe")" = "$BIN" ] && RSS_PID=$child
  done
  [ "$RSS_PID" != "$SPID" ] || { echo "no $BIN process under heaptrack" >&2; exit 1; }
fi
echo "server $BASE_URL (pid $RSS_PID), Redis prefix and topic $RUN_ID, audit schema $SCHEMA"

# RSS every 5 s, seconds since the load started.
START=$(date +%s)
( echo "seconds,rss_kib"
  while kill -0 "$RSS_PID" 2>/dev/null; do
    echo "$(( $(date +%s) - START )),$(awk '/VmRSS/{print $2}' "/proc/$RSS_PID/status")"
    sleep 5
  done ) > "$OUT/soak.rss.csv" &
MON=$!

echo "k6: $DASHBOARDS dashboards, ${RATE:-1} submission/s, $MINUTES min (output in $OUT/soak.k6.txt)"
K6_RC=0
k6 run --quiet -e BASE_URL="$BASE_URL" -e API_KEY="$KEY" -e DURATION="${MINUTES}m" \
  -e DASHBOARDS="$DASHBOARDS" -e OFFSETS="$OFFSETS" -e RATE="${RATE:-1}" -e DAYS="$DAYS" \
  --summary-export "$OUT/soak.summary.json" "$HERE/soak.js" > "$OUT/soak.k6.txt" 2>&1 || K6_RC=$?
kill "$MON"; MON=""
curl -s "$BASE_URL/metrics" > "$OUT/soak.metrics.txt" || true
# The server itself (under heaptrack, heaptrack then writes the profile).
kill "$RSS_PID"; wait "$SPID" || true; SPID=""
# What the audit log says of the run's jobs: every one ended, and how long
# they ran (submission to last chunk).
sql -A -F ' ' -t -c "SELECT status || CASE WHEN error IS NULL THEN '' ELSE '+error' END, count(*),
    round(percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM finished_at - submitted_at))::numeric, 1),
    round(max(extract(epoch FROM finished_at - submitted_at))::numeric, 1)
  FROM $SCHEMA.audit_submissions WHERE deduplicated_from IS NULL GROUP BY 1 ORDER BY 1" \
  | awk '{printf "- audit: %s jobs %s, run time median %s s, max %s s\n", $2, $1, $3, $4}' > "$OUT/soak.audit.md"

RULE_RC=0
python3 "$HERE/soak_rss.py" "$OUT/soak.rss.csv" --baseline "$BASELINE" --minutes "$MINUTES" \
  --bound-mib "${RSS_BOUND_MIB:-512}" --summary "$OUT/soak.summary.json" \
  --server-log "$OUT/soak.server.log" > "$OUT/soak.result.md" || RULE_RC=$?
cat "$OUT/soak.audit.md" >> "$OUT/soak.result.md"
cat "$OUT/soak.result.md"
if [ "$K6_RC" -ne 0 ]; then
  echo "k6 failed (rc $K6_RC): its thresholds, in $OUT/soak.k6.txt:" >&2
  grep -E '✗|errors|http_req_failed|checks' "$OUT/soak.k6.txt" >&2 || true
fi
[ "$K6_RC" -eq 0 ] && [ "$RULE_RC" -eq 0 ]
