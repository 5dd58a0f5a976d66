"""DuckDB alone, in one process, on the peer's data: the ceiling for PUT and GET.

No network, no Flight: how fast DuckDB itself ingests a stream of Arrow batches
and scans a table back out as Arrow batches, and the CPU seconds (this process's
user + system time, all DuckDB threads) each takes; the last line is JSON.
`mallard-demo bench` runs it with the peer's pinned packages (installed into a
cache) unless given --no-ceiling. By hand, with the peer's environment:

    ../shared/peers/seed_python/run.sh --rows 1000   # once, creates its .venv
    ../shared/peers/seed_python/.venv/bin/python demo/scripts/duckdb_ceiling.py 10000000
"""
import json
import os
import statistics
import sys
import tempfile
import time

PEER = os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared", "peers", "seed_python")
sys.path.insert(0, os.path.abspath(PEER))

import duckdb  # noqa: E402
import pyarrow as pa  # noqa: E402
from bench import make_flights  # noqa: E402  (the peer's own data generator)

BATCH_ROWS = 122_880
n = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000_000
table = make_flights(n)
batches = table.to_batches(max_chunksize=BATCH_ROWS)
con = duckdb.connect()
ingest, scan, ingest_cpu, scan_cpu = [], [], [], []
for _ in range(4):  # the first run is a warm-up
    con.execute("DROP TABLE IF EXISTS t")
    source = pa.RecordBatchReader.from_batches(table.schema, batches)
    started, cpu = time.perf_counter(), time.process_time()
    con.execute("CREATE TABLE t AS SELECT * FROM source")
    ingest.append(time.perf_counter() - started)
    ingest_cpu.append(time.process_time() - cpu)
    started, cpu = time.perf_counter(), time.process_time()
    rows = sum(b.num_rows for b in con.sql("SELECT * FROM t").to_arrow_reader(BATCH_ROWS))
    scan.append(time.perf_counter() - started)
    scan_cpu.append(time.process_time() - cpu)
    assert rows == n
# The same ingest into a file database (what `mallard serve --db` does).
file_ingest = []
with tempfile.TemporaryDirectory() as scratch:
    for i in range(4):
        file_con = duckdb.connect(os.path.join(scratch, f"ceiling{i}.duckdb"))
        source = pa.RecordBatchReader.from_batches(table.schema, batches)
        started = time.perf_counter()
        file_con.execute("CREATE TABLE t AS SELECT * FROM source")
        file_ingest.append(time.perf_counter() - started)
        file_con.close()
print(f"duckdb {duckdb.__version__}, {n:,} rows, median of {len(ingest) - 1} after a warm-up")
print(f"ingest into a file database:     {n / statistics.median(file_ingest[1:]) / 1e6:.2f}M rows/s")
print(f"ingest (Arrow batches -> table): {n / statistics.median(ingest[1:]) / 1e6:.2f}M rows/s")
print(f"scan (table -> Arrow batches):   {n / statistics.median(scan[1:]) / 1e6:.2f}M rows/s")
print(json.dumps({
    "duckdb": duckdb.__version__,
    "rows": n,
    "ingest_rows_per_s": n / statistics.median(ingest[1:]),
    "scan_rows_per_s": n / statistics.median(scan[1:]),
    "file_ingest_rows_per_s": n / statistics.median(file_ingest[1:]),
    "ingest_cpu_s_per_m_rows": statistics.median(ingest_cpu[1:]) / (n / 1e6),
    "scan_cpu_s_per_m_rows": statistics.median(scan_cpu[1:]) / (n / 1e6),
}))
