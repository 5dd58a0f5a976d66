"""One timed Flight SQL operation through the ADBC driver, for `mallard-demo bench`.

argv: URL USER PASSWORD OP TABLE. OP is `get` (stream `SELECT * FROM TABLE`,
counting rows batch by batch) or `ingest` (read TABLE once, untimed, then time
`adbc_ingest` of it into `TABLE_adbc`, created anew). Prints one JSON line:
{"rows": N, "seconds": S}.
"""
import json
import sys
import time

import adbc_driver_flightsql.dbapi as flight_sql


def main():
    url, user, password, op, table = sys.argv[1:6]
    conn = flight_sql.connect(
        url, db_kwargs={"username": user, "password": password}, autocommit=True
    )
    cur = conn.cursor()
    if op == "get":
        started = time.perf_counter()
        cur.execute(f'SELECT * FROM "{table}"')
        rows = sum(batch.num_rows for batch in cur.fetch_record_batch())
        seconds = time.perf_counter() - started
    elif op == "ingest":
        cur.execute(f'SELECT * FROM "{table}"')
        data = cur.fetch_arrow_table()
        target = f"{table}_adbc"
        cur.execute(f'DROP TABLE IF EXISTS "{target}"')
        cur.fetchall()
        started = time.perf_counter()
        rows = cur.adbc_ingest(target, data, mode="create")
        seconds = time.perf_counter() - started
    else:
        sys.exit(f"unknown op {op!r}")
    cur.close()
    conn.close()
    print(json.dumps({"rows": rows, "seconds": seconds}))


if __name__ == "__main__":
    main()
