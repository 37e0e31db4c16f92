#!/usr/bin/env bash
# Runs one k6 script against a freshly started release server and records
# the server's peak RSS. Usage:
#   BIN=./target/release/pseudostream DATA=/work/perfdata loadtest/run.sh NAME SCRIPT [k6 args...]
# DATA must hold the demo dataset under demo/ (`pseudostream gen-data --dir $DATA/demo`).
# Output goes to ${OUT:-loadtest-out}/NAME.{k6.txt,server.log,metrics.txt}.
set -u
NAME=$1; SCRIPT=$2; shift 2
BIN=${BIN:-./target/release/pseudostream}
DATA=${DATA:-./pseudostream-data}
OUT=${OUT:-loadtest-out}
ulimit -n 65536
mkdir -p "$OUT"
RUN_DIR="$DATA/k6run-$NAME"; rm -rf "$RUN_DIR"; mkdir -p "$RUN_DIR"
PSEUDOSTREAM_API_KEYS=loadtest-key-0001=load:load:ops PSEUDOSTREAM_RATE_LIMIT=0/1s \
PSEUDOSTREAM_SOURCE="$DATA/demo" PSEUDOSTREAM_DATA_DIR="$RUN_DIR" \
PSEUDOSTREAM_OFFSET_POOL_SIZE=${POOL:-1000} RUST_LOG=${RUST_LOG:-warn} \
  "$BIN" serve > "$OUT/$NAME.server.log" 2>&1 &
SPID=$!
for _ in $(seq 1 100); do curl -sf localhost:8080/healthz >/dev/null && break; sleep 0.2; done
( peak=0; while kill -0 $SPID 2>/dev/null; do
    r=$(awk '/VmRSS/{print $2}' /proc/$SPID/status 2>/dev/null)
    if [ -n "$r" ] && [ "$r" -gt "$peak" ]; then peak=$r; echo $peak > "$OUT/$NAME.rss_peak_kb"; fi
    sleep 0.5
  done ) &
MON=$!
# PROBE=PATH also polls PATH from loadtest/probe.py beside k6, from
# PROBE_AFTER seconds (k6's setup) for PROBE_FOR seconds.
if [ -n "${PROBE:-}" ]; then
  python3 "$(dirname "$0")/probe.py" "$PROBE" --after "${PROBE_AFTER:-15}" \
    --for "${PROBE_FOR:-30}" > "$OUT/$NAME.probe.json" 2>&1 &
  PROBE_PID=$!
fi
k6 run "$@" "$SCRIPT" > "$OUT/$NAME.k6.txt" 2>&1
echo "k6 rc=$?" >> "$OUT/$NAME.k6.txt"
if [ -n "${PROBE_PID:-}" ]; then wait "$PROBE_PID"; fi
curl -s localhost:8080/metrics > "$OUT/$NAME.metrics.txt"
kill $SPID; wait $SPID; kill $MON 2>/dev/null
echo "peak RSS kB: $(cat "$OUT/$NAME.rss_peak_kb")" >> "$OUT/$NAME.k6.txt"
