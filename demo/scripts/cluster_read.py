"""One timed read of a table spread over a Mallard cluster, for
`mallard-demo cluster-bench`.

argv: URL USER PASSWORD MODE TABLE. MODE is `pyarrow_all` (one FlightInfo with
`x-mallard-nodes: all`, every endpoint read at once, one thread each, from its
node with the same bearer token), `adbc_all` (the ADBC Flight SQL driver with
the header, which reads the endpoints itself) or `adbc_one` (the driver without
it: this node's part only). Prints one JSON line: {"rows": N, "seconds": S}.
"""
import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import adbc_driver_flightsql.dbapi as flight_sql
import pyarrow.flight as paflight

NODES_OPTION = "adbc.flight.sql.rpc.call_header.x-mallard-nodes"


def pyarrow_all(url, user, password, table):
    client = paflight.connect(url)
    token = client.authenticate_basic_token(user, password)
    started = time.perf_counter()
    options = paflight.FlightCallOptions(headers=[token, (b"x-mallard-nodes", b"all")])
    info = client.get_flight_info(paflight.FlightDescriptor.for_path(table), options)

    def read(endpoint):
        node = paflight.connect(endpoint.locations[0]) if endpoint.locations else client
        reader = node.do_get(endpoint.ticket, paflight.FlightCallOptions(headers=[token]))
        return sum(chunk.data.num_rows for chunk in reader)

    with ThreadPoolExecutor(len(info.endpoints)) as pool:
        rows = sum(pool.map(read, info.endpoints))
    return rows, time.perf_counter() - started


def adbc(url, user, password, table, every_node):
    kwargs = {"username": user, "password": password}
    if every_node:
        kwargs[NODES_OPTION] = "all"
    conn = flight_sql.connect(url, db_kwargs=kwargs, autocommit=True)
    cur = conn.cursor()
    started = time.perf_counter()
    cur.execute(f'SELECT * FROM "{table}"')
    rows = sum(batch.num_rows for batch in cur.fetch_record_batch())
    seconds = time.perf_counter() - started
    cur.close()
    conn.close()
    return rows, seconds


def main():
    url, user, password, mode, table = sys.argv[1:6]
    if mode == "pyarrow_all":
        rows, seconds = pyarrow_all(url, user, password, table)
    elif mode in ("adbc_all", "adbc_one"):
        rows, seconds = adbc(url, user, password, table, mode == "adbc_all")
    else:
        sys.exit(f"unknown mode {mode!r}")
    print(json.dumps({"rows": rows, "seconds": seconds}))


if __name__ == "__main__":
    main()
