# The whole-result baseline of pseudostream-bench (bench/src/duckdb.rs).
# argv: parquet glob, from and to (microseconds), endpoint regex, message
# regex it must not match, row limit. Prints the rows written and seconds.
import sys, time, duckdb
glob, frm, to, re1, re2, limit = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5], int(sys.argv[6])
started = time.perf_counter()
con = duckdb.connect()
con.execute('SET enable_progress_bar = false')  # it would draw on stdout
con.execute('SET threads = 2')
rows = con.execute(
    f"COPY (SELECT * FROM read_parquet('{glob}') WHERE ts >= make_timestamp({frm}) AND ts < make_timestamp({to}) "
    f"AND regexp_matches(endpoint, '{re1}') AND NOT regexp_matches(message, '{re2}') AND latency_ms > 1 "
    f"ORDER BY ts DESC LIMIT {limit}) TO '/dev/null' (FORMAT JSON)").fetchone()[0]
print(rows, time.perf_counter() - started)
