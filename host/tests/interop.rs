//! Other Flight clients against Mallard: the ADBC Flight SQL driver (its Go
//! Flight client sends Basic credentials without base64 padding) completes its
//! handshake. The driver is installed from PyPI into a cached directory.

mod common;

use common::{python_packages, run_python};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_adbc_flight_sql_driver_completes_its_handshake() {
    let packages = tokio::task::spawn_blocking(|| python_packages(&["adbc-driver-flightsql"]))
        .await
        .unwrap();
    let server = common::start().await;
    let stdout = run_python("adbc_handshake.py", vec![server.url()], packages).await;
    assert!(
        stdout.contains("handshake with admin/password123: ok"),
        "{stdout}"
    );
    assert!(stdout.contains("wrong password refused"), "{stdout}");
    server.stop().await.unwrap();
}

/// The ADBC Flight SQL driver as a data engineer uses it: queries, 1M-row
/// ingest in every mode with checksums, bound parameters, catalog objects,
/// info, update counts, transactions, cancellation, a reader refused DDL; and
/// the seeds' pyarrow flow on the same port (`tests/python/adbc_flight_sql.py`).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_adbc_flight_sql_driver_queries_ingests_and_is_refused_what_it_may_not_do() {
    let packages = tokio::task::spawn_blocking(|| {
        python_packages(&["adbc-driver-flightsql", "adbc-driver-manager", "pyarrow"])
    })
    .await
    .unwrap();
    let server = common::start_with(common::config_with_accounts()).await;
    let mut client = common::client(&server).await;
    let rows = common::put(&mut client, "flights", common::flights(1_000_000, 131_072))
        .await
        .unwrap();
    assert_eq!(rows, 1_000_000);
    let stdout = run_python("adbc_flight_sql.py", vec![server.url()], packages).await;
    println!("{stdout}");
    for line in [
        "ingest create: 1000000 rows, checksum equal",
        "ingest append: 2000000 rows, checksum doubled",
        "ingest replace: 1000000 rows, checksum equal",
        "a reader's DDL: refused with UNAUTHORIZED",
        "a reader's DDL through a prepared statement: refused with UNAUTHORIZED",
        "the seeds' pyarrow flow on the same port",
        "all ADBC checks passed",
    ] {
        assert!(stdout.contains(line), "missing {line:?} in\n{stdout}");
    }
    common::assert_idle(&mut client).await;
    server.stop().await.unwrap();
}
