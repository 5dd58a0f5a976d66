"""One table in parts on three Mallard nodes, read through one FlightInfo by
pyarrow and by the ADBC Flight SQL driver, as a data engineer would.

argv: node A's URL, then the expected row count, sum(flight_id) and
sum(passengers) of the whole table (computed by the Rust test on each node).
Every node holds alice/alice-pw (user) and rita/rita-pw (reader) and shares a cluster key, so the bearer token
node A issues is accepted by the others. Prints one line per check; exits
non-zero at the first failure.
"""
import sys
import time

import adbc_driver_flightsql.dbapi as flight_sql
import adbc_driver_manager
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.flight as paflight

URL = sys.argv[1]
EXPECTED = tuple(int(x) for x in sys.argv[2:5])
NODES = (b"x-mallard-nodes", b"all")
NODES_OPTION = "adbc.flight.sql.rpc.call_header.x-mallard-nodes"


def checksum(table):
    return (
        table.num_rows,
        pc.sum(table["flight_id"]).as_py(),
        pc.sum(table["passengers"]).as_py(),
    )


def check(what, table, seconds):
    got = checksum(table)
    if got != EXPECTED:
        sys.exit(f"{what}: expected {EXPECTED}, got {got}")
    print(f"{what}: {table.num_rows} rows, checksum equal, {table.num_rows / seconds:,.0f} rows/s")


def with_pyarrow():
    client = paflight.connect(URL)
    token = client.authenticate_basic_token("alice", "alice-pw")
    options = paflight.FlightCallOptions(headers=[token, NODES])
    start = time.perf_counter()
    info = client.get_flight_info(paflight.FlightDescriptor.for_path("flights"), options)
    located = [e for e in info.endpoints if e.locations]
    if len(info.endpoints) != 3 or len(located) != 2:
        sys.exit(f"pyarrow: expected 3 endpoints, 2 located elsewhere; got {info.endpoints}")
    parts = []
    for endpoint in info.endpoints:
        node = paflight.connect(endpoint.locations[0]) if endpoint.locations else client
        # The same token: the other nodes accept it (the cluster key).
        parts.append(node.do_get(endpoint.ticket, paflight.FlightCallOptions(headers=[token])).read_all())
    table = pa.concat_tables(parts)
    check("pyarrow, one FlightInfo, 3 endpoints", table, time.perf_counter() - start)
    if info.total_records != EXPECTED[0]:
        sys.exit(f"pyarrow: total_records {info.total_records}, expected {EXPECTED[0]}")


def connect(user="alice", password="alice-pw", **options):
    return flight_sql.connect(
        URL, db_kwargs={"username": user, "password": password, **options}, autocommit=True
    )


def with_adbc():
    # Every statement of this connection asks every node (metadata calls stay
    # local); rita is a reader, the lowest role, on every node.
    conn = connect("rita", "rita-pw", **{NODES_OPTION: "all"})
    cur = conn.cursor()
    start = time.perf_counter()
    cur.execute("SELECT * FROM flights")
    table = cur.fetch_arrow_table()
    check("ADBC Flight SQL, one statement, 3 endpoints", table, time.perf_counter() - start)
    try:
        cur.execute("SELECT * FROM flights WHERE flight_id < ?", (10,))
        cur.fetch_arrow_table()
        sys.exit("a prepared statement with parameters asked of every node was not refused")
    except adbc_driver_manager.Error as e:
        if e.status_code != adbc_driver_manager.AdbcStatusCode.INVALID_ARGUMENT:
            sys.exit(f"parameters asked of every node: {e.status_code!r}: {e}")
    print("a prepared statement with parameters asked of every node: refused with INVALID_ARGUMENT")
    admin = connect("admin", "password123", **{NODES_OPTION: "all"}).cursor()
    try:
        admin.execute("CREATE TABLE everywhere AS SELECT 1 AS x")
        sys.exit("a change asked of every node was not refused")
    except adbc_driver_manager.Error as e:
        if e.status_code != adbc_driver_manager.AdbcStatusCode.INVALID_ARGUMENT:
            sys.exit(f"a change asked of every node: {e.status_code!r}: {e}")
    local = connect().cursor()
    local.execute("SELECT count(*) FROM duckdb_tables() WHERE table_name = 'everywhere'")
    if local.fetchone() != (0,):
        sys.exit("a refused change ran anyway")
    print("a change asked of every node: refused with INVALID_ARGUMENT, nothing ran")
    local.execute("SELECT count(*) FROM flights")
    (rows,) = local.fetchone()
    if rows * 3 != EXPECTED[0]:
        sys.exit(f"ADBC without the header: {rows} rows, expected this node's third")
    print(f"ADBC without the header reads this node only: {rows} rows")


if __name__ == "__main__":
    with_pyarrow()
    with_adbc()
    print("all cluster reads passed")
