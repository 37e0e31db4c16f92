# The first-chunk baseline of pseudostream-bench (bench/src/duckdb.rs).
# argv: parquet glob, row limit, then a JSON list of queries
# [from_us, to_us, endpoint regex, message regex it must not match, latency
# bound]. Runs each on one connection (its start-up is not counted) and
# prints the seconds each took, one per line.
import json, sys, time, duckdb
glob, limit, queries = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3])
con = duckdb.connect()
con.execute('SET enable_progress_bar = false')  # it would draw on stdout
con.execute('SET threads = 2')
for frm, to, re1, re2, latency in queries:
    started = time.perf_counter()
    con.execute(
        f"SELECT * FROM read_parquet('{glob}') WHERE ts >= make_timestamp({frm}) AND ts < make_timestamp({to}) "
        f"AND regexp_matches(endpoint, '{re1}') AND NOT regexp_matches(message, '{re2}') AND latency_ms > {latency} "
        f"ORDER BY ts DESC LIMIT {limit}").fetchall()
    print(time.perf_counter() - started)
