"""Mallard through the ADBC Flight SQL driver (Python, from PyPI), as a data
engineer uses it, plus the seeds' pyarrow client on the same port.

argv: server URL. The server holds `flights` (1,000,000 rows, put by the Rust
test), admin/password123, alice (user) and rita (reader). Prints one line per
check; exits non-zero at the first failure.
"""
import sys
import threading
import time

import adbc_driver_flightsql.dbapi as flight_sql
import adbc_driver_manager
import pyarrow as pa
import pyarrow.flight as paflight

URL = sys.argv[1]


def connect(user, password, autocommit=True):
    return flight_sql.connect(
        URL, db_kwargs={"username": user, "password": password}, autocommit=autocommit
    )


def checksum(cur, table):
    cur.execute(f'SELECT count(*), sum(hash(t)::HUGEINT)::VARCHAR FROM "{table}" t')
    return tuple(cur.fetchone())


def expect_error(what, status, fn):
    try:
        fn()
    except adbc_driver_manager.Error as e:
        if e.status_code != status:
            sys.exit(f"{what}: expected {status!r}, got {e.status_code!r}: {e}")
        print(f"{what}: refused with {status.name}")
        return
    sys.exit(f"{what}: was not refused")


def main():
    status = adbc_driver_manager.AdbcStatusCode
    admin = connect("admin", "password123")
    cur = admin.cursor()

    cur.execute("SELECT 40 + 2 AS answer")
    assert cur.fetchone() == (42,)
    print("query with default credentials: ok")

    source = checksum(cur, "flights")
    assert source[0] == 1_000_000, source
    cur.execute("SELECT * FROM flights")
    table = cur.fetch_arrow_table()
    assert table.num_rows == 1_000_000
    print(f"fetched flights as Arrow: {table.num_rows} rows, {table.num_columns} columns")

    alice = connect("alice", "alice-pw")
    acur = alice.cursor()
    assert acur.adbc_ingest("flights_adbc", table, mode="create") == 1_000_000
    assert checksum(cur, "flights_adbc") == source
    print("ingest create: 1000000 rows, checksum equal")
    expect_error(
        "ingest create over an existing table",
        status.ALREADY_EXISTS,
        lambda: acur.adbc_ingest("flights_adbc", table, mode="create"),
    )
    assert acur.adbc_ingest("flights_adbc", table, mode="append") == 1_000_000
    doubled = checksum(cur, "flights_adbc")
    assert doubled[0] == 2_000_000 and int(doubled[1]) == 2 * int(source[1]), doubled
    print("ingest append: 2000000 rows, checksum doubled")
    expect_error(
        "ingest replace as a user",
        status.UNAUTHORIZED,
        lambda: acur.adbc_ingest("flights_adbc", table, mode="replace"),
    )
    assert cur.adbc_ingest("flights_adbc", table, mode="replace") == 1_000_000
    assert checksum(cur, "flights_adbc") == source
    print("ingest replace: 1000000 rows, checksum equal")
    cur.execute("SELECT * FROM flights_adbc")
    back = cur.fetch_arrow_table()
    assert back.num_rows == table.num_rows and back.schema == table.schema
    print("read back through ADBC: same rows, same schema")

    cur.execute("SELECT count(*) FROM flights WHERE origin = ?", ("JFK",))
    bound = cur.fetchone()[0]
    cur.execute("SELECT count(*) FROM flights WHERE origin = 'JFK'")
    literal = cur.fetchone()[0]
    assert bound == literal and bound > 0, (bound, literal)
    print(f"prepared statement with a bound parameter: {bound} rows, as the literal")

    # A result typed only by its parameter: the schema is described after binding.
    cur.execute("SELECT ? + 1 AS answer", (41,))
    assert cur.fetchone() == (42,)
    cur.execute("SELECT ? AS echoed", ("text",))
    assert cur.fetchone() == ("text",)
    print("SELECT ? + 1 with a bound integer: 42")

    objects = admin.adbc_get_objects(depth="all").read_all().to_pylist()
    catalogs = [c["catalog_name"] for c in objects]
    assert "memory" in catalogs, catalogs
    memory = next(c for c in objects if c["catalog_name"] == "memory")
    schemas = {s["db_schema_name"]: s for s in memory["catalog_db_schemas"]}
    tables = {t["table_name"]: t for t in schemas["main"]["db_schema_tables"]}
    columns = [c["column_name"] for c in tables["flights"]["table_columns"]]
    assert columns == table.schema.names, columns
    print(f"adbc_get_objects: catalogs {catalogs}, tables {sorted(tables)}, flights columns listed")

    schema = admin.adbc_get_table_schema("flights")
    assert schema.names == table.schema.names, schema
    print("adbc_get_table_schema: equals the fetched schema")

    info = admin.adbc_get_info()
    assert info["vendor_name"] == "Mallard", info
    print(f"adbc_get_info: vendor {info['vendor_name']} {info.get('vendor_version')}")

    cur.execute("CREATE TABLE updates (x INTEGER)")
    cur.executemany("INSERT INTO updates VALUES (?)", [(1,), (2,), (3,)])
    assert cur.rowcount == 3, cur.rowcount
    statement = adbc_driver_manager.AdbcStatement(admin.adbc_connection)
    statement.set_sql_query("UPDATE updates SET x = x + 10 WHERE x >= 2")
    assert statement.execute_update() == 2
    statement.close()
    print("update row counts: 3 inserted, 2 updated")

    manual = connect("admin", "password123", autocommit=False)
    mcur = manual.cursor()
    mcur.execute("INSERT INTO updates VALUES (99)")
    mcur.execute("SELECT count(*) FROM updates WHERE x = 99")
    assert mcur.fetchone()[0] == 1
    manual.rollback()
    cur.execute("SELECT count(*) FROM updates WHERE x = 99")
    assert cur.fetchone()[0] == 0
    mcur.execute("INSERT INTO updates VALUES (100)")
    manual.commit()
    cur.execute("SELECT count(*) FROM updates WHERE x = 100")
    assert cur.fetchone()[0] == 1
    mcur.close()
    manual.close()
    print("transaction rolled back leaves nothing; committed keeps its row")

    long = admin.cursor()
    outcome = {}

    def run_long():
        try:
            long.execute("SELECT count(*) FROM range(100000000000)")
            long.fetchall()
            outcome["ended"] = "finished"
        except adbc_driver_manager.Error as e:
            outcome["ended"] = e.status_code

    thread = threading.Thread(target=run_long)
    started = time.monotonic()
    thread.start()
    time.sleep(1.0)
    long.adbc_cancel()
    thread.join(30)
    assert not thread.is_alive(), "the cancelled query did not end"
    assert outcome["ended"] != "finished", outcome
    print(f"cancel of a long query: ended with {outcome['ended']!r} after {time.monotonic() - started:.1f} s")
    cur.execute("SELECT 1")
    assert cur.fetchone() == (1,)

    rita = connect("rita", "rita-pw")
    rcur = rita.cursor()
    rcur.execute("SELECT count(*) FROM flights")
    assert rcur.fetchone()[0] == 1_000_000
    expect_error(
        "a reader's DDL",
        status.UNAUTHORIZED,
        lambda: rcur.execute("CREATE TABLE evil (x INTEGER)"),
    )
    expect_error(
        "a reader's DDL through a prepared statement",
        status.UNAUTHORIZED,
        lambda: rcur.adbc_prepare("DROP TABLE flights"),
    )
    expect_error(
        "a reader's ingest",
        status.UNAUTHORIZED,
        lambda: rcur.adbc_ingest("evil", table.slice(0, 10), mode="create"),
    )
    cur.execute("SELECT count(*) FROM flights")
    assert cur.fetchone()[0] == 1_000_000

    client = paflight.FlightClient(URL)
    token = client.authenticate_basic_token(b"admin", b"password123")
    options = paflight.FlightCallOptions(headers=[token])
    reader = client.do_get(paflight.Ticket(b"SELECT count(*) AS n FROM flights"), options)
    assert reader.read_all().column("n")[0].as_py() == 1_000_000
    small = table.slice(0, 1000)
    writer, _ = client.do_put(
        paflight.FlightDescriptor.for_command(b"seeds_put"), small.schema, options
    )
    writer.write_table(small)
    writer.close()
    cur.execute("SELECT count(*) FROM seeds_put")
    assert cur.fetchone()[0] == 1000
    actions = [a.type for a in client.list_actions(options)]
    assert "healthcheck" in actions and "CreatePreparedStatement" in actions, actions
    print("the seeds' pyarrow flow on the same port: do_get, do_put, list_actions ok")

    for c in (cur, acur, rcur, long):
        c.close()
    for conn in (admin, alice, rita):
        conn.close()
    print("all ADBC checks passed")


if __name__ == "__main__":
    main()
