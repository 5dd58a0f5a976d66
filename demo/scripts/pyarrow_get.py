"""pyarrow's Flight client reading one query from a server: median of 3 after a warm-up.

Lets the same C++ client time Mallard and the Python peer. With the peer's environment:

    ../shared/peers/seed_python/.venv/bin/python demo/scripts/pyarrow_get.py 8815 "SELECT * FROM flights"
"""
import sys
import time

import pyarrow.flight as flight

port = int(sys.argv[1])
sql = sys.argv[2] if len(sys.argv) > 2 else "SELECT * FROM flights"
client = flight.FlightClient(f"grpc://127.0.0.1:{port}")
token = client.authenticate_basic_token("admin", "password123")
options = flight.FlightCallOptions(headers=[token])
times = []
for _ in range(4):
    started = time.perf_counter()
    rows = sum(chunk.data.num_rows for chunk in client.do_get(flight.Ticket(sql.encode()), options))
    times.append(time.perf_counter() - started)
median = sorted(times[1:])[1]
print(f"{rows} rows, median {median:.3f} s, {rows / median / 1e6:.2f}M rows/s")
