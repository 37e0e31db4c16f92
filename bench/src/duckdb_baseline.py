# The whole-result baseline of pseudostream-bench (bench/src/duckdb.rs).
# argv: parquet glob, from and to (microseconds), endpoint regex, message
# regex it must not match, row limit, least latency_ms (exclusive); an
# empty endpoint regex leaves both regexes out. Prints the rows written and
# seconds.
import sys, time, duckdb
glob, frm, to, re1, re2, limit, latency = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5], int(sys.argv[6]), float(sys.argv[7])
started = time.perf_counter()
con = duckdb.connect()
con.execute('SET enable_progress_bar = false')  # it would draw on stdout
con.execute('SET threads = 2')
where = [f"ts >= make_timestamp({frm})", f"ts < make_timestamp({to})"]
if re1:
    where += [f"regexp_matches(endpoint, '{re1}')", f"NOT regexp_matches(message, '{re2}')"]
where.append(f"latency_ms > {latency}")
rows = con.execute(
    f"COPY (SELECT * FROM read_parquet('{glob}') WHERE {' AND '.join(where)} "
    f"ORDER BY ts DESC LIMIT {limit}) TO '/dev/null' (FORMAT JSON)").fetchone()[0]
print(rows, time.perf_counter() - started)
