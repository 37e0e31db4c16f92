#!/usr/bin/env python3
"""The soak's pass rule on its RSS samples (loadtest/soak.sh).

Reads the CSV of `seconds,rss_kib` samples (one every 5 s from the start of
the load), prints the curve as a Markdown table, one row a minute, with
what k6 and the server's log said, and exits 1 when the rule fails:
- RSS at minute MINUTES <= RSS at minute BASELINE x 1.1 (no growth once
  warm: by minute 2 the offsets' first jobs have expired and been replaced,
  and the RSS curve has flattened); BASELINE 0 skips this rule, for runs
  too short to get past the warm-up (RSS rose for the first 90-120 s in
  every run measured);
- the peak over the whole run <= BOUND_MIB.
"RSS at minute m" is the last sample taken at or before m x 60 s.
k6's own thresholds (0 errors) are checked by k6's exit code in soak.sh.
"""

import argparse
import csv
import json
import sys
from collections import Counter

GROWTH = 1.10


def samples(path):
    """(seconds, KiB) pairs; a sample taken as the server exited is empty."""
    with open(path, newline="") as f:
        return [(int(r["seconds"]), int(r["rss_kib"])) for r in csv.DictReader(f) if r["rss_kib"]]


def at_minute(points, minute):
    before = [kib for s, kib in points if s <= minute * 60]
    return before[-1] if before else None


def mib(kib):
    return f"{kib / 1024:.0f}"


def k6_figures(path):
    """What the run's k6 summary says, as `name: value` lines."""
    metrics = json.load(open(path))["metrics"]

    def count(name):
        return int(metrics.get(name, {}).get("count", 0))

    failed = metrics.get("http_req_failed", {})
    return [
        f"requests: {count('http_reqs')}",
        f"errors: {count('errors')}; failed requests (k6): {int(failed.get('passes', 0))}",
        f"submissions accepted: {count('submissions_accepted')} "
        f"({count('submissions_deduplicated')} deduplicated)",
        f"results read to their last chunk: {count('results_read')}; "
        f"jobs replaced under a dashboard: {count('job_replaced')}; "
        f"reads of a vacant offset (404): {count('offset_vacant')}",
    ]


def log_levels(path):
    levels = Counter()
    with open(path, errors="replace") as f:
        for line in f:
            for level in ("ERROR", "WARN"):
                if f'"level":"{level}"' in line:
                    levels[level] += 1
    return f"server log: {levels['ERROR']} ERROR, {levels['WARN']} WARN lines"


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("csv")
    p.add_argument("--minutes", type=int, required=True)
    p.add_argument("--baseline", type=int, required=True)
    p.add_argument("--bound-mib", type=float, required=True)
    p.add_argument("--summary", help="k6 --summary-export JSON")
    p.add_argument("--server-log")
    args = p.parse_args()

    points = samples(args.csv)
    if not points:
        print("no RSS samples", file=sys.stderr)
        return 1
    print("| minute | RSS at the minute (MiB) | peak in the minute (MiB) |")
    print("|---|---|---|")
    for minute in range(0, args.minutes + 1):
        within = [kib for s, kib in points if (minute - 1) * 60 < s <= minute * 60]
        mark = at_minute(points, minute)
        print(f"| {minute} | {mib(mark) if mark else '-'} | {mib(max(within)) if within else '-'} |")
    print()

    checked = args.baseline > 0
    base = at_minute(points, args.baseline if checked else 1)
    end = at_minute(points, args.minutes)
    peak = max(kib for _, kib in points)
    growth_ok = not checked or (base is not None and end is not None and end <= base * GROWTH)
    peak_ok = peak <= args.bound_mib * 1024
    growth = f"{(end / base - 1) * 100:+.1f} %" if base and end else "n/a"
    verdict = ("limit +10 %: " + ("pass" if growth_ok else "FAIL")) if checked else \
        "not checked: a run this short is all warm-up"
    print(f"- RSS at minute {args.minutes}: {mib(end) if end else '-'} MiB; at minute "
          f"{args.baseline if checked else 1}: {mib(base) if base else '-'} MiB ({growth}, {verdict})")
    print(f"- peak RSS: {mib(peak)} MiB (bound {args.bound_mib:.0f} MiB): "
          f"{'pass' if peak_ok else 'FAIL'}")
    if args.summary:
        try:
            for line in k6_figures(args.summary):
                print(f"- {line}")
        except (OSError, ValueError, KeyError) as e:
            print(f"- k6 summary unreadable: {e}")
    if args.server_log:
        print(f"- {log_levels(args.server_log)}")
    return 0 if growth_ok and peak_ok else 1


if __name__ == "__main__":
    sys.exit(main())
