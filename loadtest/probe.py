#!/usr/bin/env python3
"""One more client beside k6: polls PATH every INTERVAL seconds on one
keep-alive connection and prints what it saw as latency percentiles.

k6 measures from inside the load generator. With 2,500 VUs on the same two
cores as the server, k6's own scheduling ends up in its figures; this
probe, which does almost nothing, shows what a client that is not itself
overloaded gets from the server under the same load.

Usage: probe.py PATH [--base URL] [--key KEY] [--for SECONDS]
                [--after SECONDS] [--interval SECONDS]
"""
import argparse
import http.client
import json
import time
import urllib.parse


def main():
    args = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    args.add_argument("path", help="e.g. /v1/offsets/0/chunks?from=3&limit=10&wait=0")
    args.add_argument("--base", default="http://127.0.0.1:8080")
    args.add_argument("--key", default="loadtest-key-0001")
    args.add_argument("--for", dest="seconds", type=float, default=60)
    args.add_argument("--after", type=float, default=0, help="wait this long first (k6's setup)")
    args.add_argument("--interval", type=float, default=0.01)
    a = args.parse_args()

    time.sleep(a.after)
    base = urllib.parse.urlsplit(a.base)
    conn = http.client.HTTPConnection(base.hostname, base.port or 80, timeout=10)
    headers = {"Authorization": f"Bearer {a.key}"}
    latencies, statuses, errors = [], {}, 0
    end = time.monotonic() + a.seconds
    while time.monotonic() < end:
        started = time.perf_counter()
        try:
            conn.request("GET", a.path, headers=headers)
            response = conn.getresponse()
            response.read()
            statuses[response.status] = statuses.get(response.status, 0) + 1
            latencies.append((time.perf_counter() - started) * 1000)
        except (OSError, http.client.HTTPException):
            errors += 1
            conn.close()
        time.sleep(a.interval)
    latencies.sort()

    def pct(q):
        return round(latencies[min(len(latencies) - 1, int(len(latencies) * q))], 2) if latencies else None

    print(json.dumps({
        "path": a.path,
        "requests": len(latencies),
        "statuses": statuses,
        "errors": errors,
        "ms": {"p50": pct(0.5), "p90": pct(0.9), "p99": pct(0.99), "max": pct(1.0)},
    }))


if __name__ == "__main__":
    main()
