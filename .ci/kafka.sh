#!/usr/bin/env bash
# CI: makes a Kafka-compatible broker (tansu, in memory) answer on
# 127.0.0.1:9092 for the Kafka result-topic tests. Idempotent: installs tansu
# only when missing and starts it only when nothing answers on the port.
set -euo pipefail

HOST=127.0.0.1
PORT=9092
STATE_DIR="${PSEUDOSTREAM_KAFKA_STATE_DIR:-$HOME/.cache/pseudostream/tansu}"
LOG="$STATE_DIR/broker.log"
PIDFILE="$STATE_DIR/broker.pid"
WAIT_SECS="${PSEUDOSTREAM_KAFKA_WAIT_SECS:-60}"

answers() { (exec 3<>"/dev/tcp/$HOST/$PORT") 2>/dev/null; }

mkdir -p "$STATE_DIR"

if answers; then
  echo "a broker already answers on $HOST:$PORT"
  exit 0
fi

TANSU="$(command -v tansu || true)"
if [ -z "$TANSU" ] && [ -x "$HOME/.cargo/bin/tansu" ]; then
  TANSU="$HOME/.cargo/bin/tansu"
fi
if [ -z "$TANSU" ]; then
  echo "installing tansu (first run builds it; the build dir persists outside the repo)"
  # Its own target dir: tansu's dependencies must not churn the project's.
  CARGO_TARGET_DIR="$HOME/.cache/pseudostream/tansu-target" \
    cargo install tansu --locked --features dynostore
  TANSU="$HOME/.cargo/bin/tansu"
fi

echo "starting tansu on $HOST:$PORT (log: $LOG)"
nohup "$TANSU" broker \
  --listener-url "tcp://$HOST:$PORT" \
  --advertised-listener-url "tcp://$HOST:$PORT" \
  --storage-engine memory://tansu/ \
  >>"$LOG" 2>&1 &
echo $! >"$PIDFILE"

for _ in $(seq 1 "$WAIT_SECS"); do
  if answers; then
    echo "tansu answers on $HOST:$PORT (pid $(cat "$PIDFILE"))"
    exit 0
  fi
  if ! kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then
    echo "tansu exited; last lines of $LOG:" >&2
    tail -n 20 "$LOG" >&2
    exit 1
  fi
  sleep 1
done
echo "tansu did not answer on $HOST:$PORT within ${WAIT_SECS}s; last lines of $LOG:" >&2
tail -n 20 "$LOG" >&2
exit 1
