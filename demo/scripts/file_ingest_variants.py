"""DuckDB alone: Arrow ingest into a file database under different settings.

Shows how much of durable ingest is DuckDB's own (threads, compression), on the
peer's data, one `INSERT INTO t SELECT * FROM reader` per run inside a transaction
(what a Mallard put does). With the peer's environment:

    ../shared/peers/seed_python/.venv/bin/python demo/scripts/file_ingest_variants.py 10000000
"""
import os
import sys
import tempfile
import time

PEER = os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared", "peers", "seed_python")
sys.path.insert(0, os.path.abspath(PEER))

import duckdb  # noqa: E402
import pyarrow as pa  # noqa: E402
from bench import make_flights  # noqa: E402  (the peer's own data generator)

n = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000_000
rows = make_flights(n)
batches = rows.to_batches(max_chunksize=122_880)


def run(label, settings):
    times = []
    with tempfile.TemporaryDirectory() as scratch:
        for i in range(3):
            con = duckdb.connect(os.path.join(scratch, f"variant{i}.duckdb"))
            for setting in settings:
                con.execute(setting)
            con.execute("CREATE TABLE t AS SELECT * FROM rows LIMIT 0")
            source = pa.RecordBatchReader.from_batches(rows.schema, batches)
            started = time.perf_counter()
            con.execute("BEGIN")
            con.execute("INSERT INTO t SELECT * FROM source")
            con.execute("COMMIT")
            times.append(time.perf_counter() - started)
            con.close()
    times.sort()
    print(f"{label:40s} {n / times[1] / 1e6:.2f}M rows/s (median of 3)", flush=True)


run("default", [])
run("threads=1", ["SET threads=1"])
run("preserve_insertion_order=false", ["SET preserve_insertion_order=false"])
run("threads=1, uncompressed", ["SET threads=1", "PRAGMA force_compression='uncompressed'"])
