"""The ADBC Flight SQL driver (Go Flight client) opens a connection to Mallard.

argv: server URL. Exits 0 when the default credentials authenticate (the Go
client sends Basic credentials without base64 padding) and a wrong password is
refused; prints what happened either way.
"""
import sys

import adbc_driver_flightsql
import adbc_driver_manager


def open_connection(url, user, password):
    db = adbc_driver_flightsql.connect(
        url, db_kwargs={"username": user, "password": password}
    )
    try:
        conn = adbc_driver_manager.AdbcConnection(db)
        conn.close()
    finally:
        db.close()


def main():
    url = sys.argv[1]
    open_connection(url, "admin", "password123")
    print("handshake with admin/password123: ok")
    try:
        open_connection(url, "admin", "wrong")
    except adbc_driver_manager.Error as e:
        print(f"wrong password refused: {e}")
    else:
        sys.exit("a wrong password was accepted")


if __name__ == "__main__":
    main()
