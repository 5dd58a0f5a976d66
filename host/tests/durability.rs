//! Durability with a real `mallard serve` child process: data acknowledged by
//! do_put and exchangers acknowledged by upload_exchanger survive `kill -9`; SIGTERM
//! shuts down gracefully and promptly.

mod common;

use common::*;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Kills the server if the test fails before it does.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(port: u16, dir: &std::path::Path) -> Guard {
    let child = Command::new(env!("CARGO_BIN_EXE_mallard"))
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .arg("--db")
        .arg(dir.join("mallard.duckdb"))
        .arg("--data-dir")
        .arg(dir.join("data"))
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .expect("start mallard serve");
    Guard(child)
}

async fn connect_when_up(url: &str) -> arrow_flight::FlightClient {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match mallard::client::connect(url, "admin", "password123").await {
            Ok(c) => return c,
            Err(e) if Instant::now() > deadline => panic!("server at {url} never came up: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

fn url(port: u16) -> String {
    format!("grpc://127.0.0.1:{port}")
}

/// Starts (or starts again) the server of `port` on the files in `dir`, and connects.
async fn start_on(port: u16, dir: &std::path::Path) -> (Guard, arrow_flight::FlightClient) {
    let child = spawn(port, dir);
    let client = connect_when_up(&url(port)).await;
    (child, client)
}

/// A server on a free port with files in a fresh directory, and its admin client.
async fn start_file_backed() -> (tempfile::TempDir, u16, Guard, arrow_flight::FlightClient) {
    let dir = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let (child, client) = start_on(port, dir.path()).await;
    (dir, port, child, client)
}

/// Kills the server with SIGKILL (no shutdown path runs), starts it again on the
/// same files and connects.
async fn kill_9_and_restart(
    mut child: Guard,
    port: u16,
    dir: &std::path::Path,
) -> (Guard, arrow_flight::FlightClient) {
    child.0.kill().unwrap();
    child.0.wait().unwrap();
    start_on(port, dir).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_data_and_exchangers_survive_kill_9() {
    let (dir, port, child, mut client) = start_file_backed().await;
    assert_eq!(
        put(&mut client, "flights", flights(200_000, 50_000))
            .await
            .unwrap(),
        200_000
    );
    upload(&mut client, "add_processed").await;
    let (mut child, mut client) = kill_9_and_restart(child, port, dir.path()).await;
    assert_eq!(
        scalar_i64(&mut client, "SELECT count(*) FROM flights").await,
        200_000
    );
    assert_eq!(
        scalar_i64(&mut client, "SELECT sum(flight_id) FROM flights").await,
        199_999 * 200_000 / 2
    );
    let out = exchange(&mut client, "add_processed", flights(1000, 1000))
        .await
        .unwrap();
    assert_eq!(rows(&out), 1000);

    // SIGTERM: graceful, bounded.
    let started = Instant::now();
    Command::new("kill")
        .args(["-TERM", &child.0.id().to_string()])
        .status()
        .unwrap();
    let status = loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "no exit within 20 s of SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "graceful exit, got {status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_to_a_server_that_dies_midway_fails_and_leaves_no_partial_table() {
    let source = start().await;
    let mut a = client(&source).await;
    put(&mut a, "flights", flights(3_000_000, 131_072))
        .await
        .unwrap();

    let (dir, port, mut target, _) = start_file_backed().await;

    let body = serde_json::json!({"table": "flights", "to": url(port), "target_table": "landed"})
        .to_string();
    let push = tokio::spawn(async move { action(&mut a, "push_table", body).await });
    tokio::time::sleep(Duration::from_millis(150)).await;
    target.0.kill().unwrap();
    target.0.wait().unwrap();
    let outcome = within(Duration::from_secs(60), push).await.unwrap();
    let err = outcome.expect_err("the push must fail when its target dies");
    assert_ne!(err.code(), tonic::Code::Ok);

    let (_target, mut b) = start_on(port, dir.path()).await;
    let landed = scalar_i64(
        &mut b,
        "SELECT count(*) FROM duckdb_tables() WHERE table_name = 'landed'",
    )
    .await;
    assert_eq!(landed, 0, "no partial table on the target");
    source.stop().await.unwrap();
}

/// File-backed puts: a put that fails midway leaves nothing, appends add to what
/// was there, no view is ever left in the catalog, and what was acknowledged
/// survives `kill -9`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_backed_puts_are_all_or_nothing_and_leave_no_views() {
    let (dir, port, child, mut client) = start_file_backed().await;
    assert_eq!(
        put(&mut client, "kept", flights(300_000, 65_536))
            .await
            .unwrap(),
        300_000
    );
    assert_eq!(
        put(&mut client, "kept", flights(1_000, 1_000))
            .await
            .unwrap(),
        1_000
    );

    assert!(
        put_ending_in_garbage(&mut client, "kept", flights(200_000, 50_000))
            .await
            .is_some(),
        "a put with a malformed message must fail"
    );
    assert_eq!(
        scalar_i64(&mut client, "SELECT count(*) FROM kept").await,
        301_000
    );
    assert_eq!(
        scalar_i64(
            &mut client,
            "SELECT count(*) FROM duckdb_views() WHERE NOT internal"
        )
        .await,
        0
    );
    let (_child, mut client) = kill_9_and_restart(child, port, dir.path()).await;
    assert_eq!(
        scalar_i64(&mut client, "SELECT count(*) FROM kept").await,
        301_000
    );
}

/// Flight SQL ingest inside a transaction on a file-backed server: rolled back it
/// leaves nothing, committed it survives `kill -9`, and it reads the same as the
/// rows sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_backed_ingest_inside_a_transaction_commits_and_rolls_back() {
    use arrow_flight::sql::client::FlightSqlServiceClient;
    use arrow_flight::sql::{
        CommandStatementIngest, EndTransaction, TableDefinitionOptions, TableExistsOption,
        TableNotExistOption,
    };
    let (dir, port, child, _) = start_file_backed().await;
    let channel = mallard::transport::connect_with(&url(port), None)
        .await
        .unwrap();
    let mut sql = FlightSqlServiceClient::new(channel);
    sql.handshake("admin", "password123").await.unwrap();
    let command = |table: &str, tx: bytes::Bytes| CommandStatementIngest {
        table_definition_options: Some(TableDefinitionOptions {
            if_not_exist: TableNotExistOption::Create as i32,
            if_exists: TableExistsOption::Append as i32,
        }),
        table: table.into(),
        schema: None,
        catalog: None,
        temporary: false,
        transaction_id: Some(tx),
        options: Default::default(),
    };
    let batches = |n| futures::stream::iter(flights(n, 40_000).into_iter().map(Ok));

    let tx = sql.begin_transaction().await.unwrap();
    let n = sql
        .execute_ingest(command("dropped", tx.clone()), batches(100_000))
        .await
        .unwrap();
    assert_eq!(n, 100_000);
    sql.end_transaction(tx, EndTransaction::Rollback)
        .await
        .unwrap();

    let tx = sql.begin_transaction().await.unwrap();
    for _ in 0..2 {
        sql.execute_ingest(command("kept", tx.clone()), batches(150_000))
            .await
            .unwrap();
    }
    sql.end_transaction(tx, EndTransaction::Commit)
        .await
        .unwrap();
    let (_child, mut client) = kill_9_and_restart(child, port, dir.path()).await;
    assert_eq!(
        scalar_i64(&mut client, "SELECT count(*) FROM kept").await,
        300_000
    );
    assert_eq!(
        scalar_i64(&mut client, "SELECT sum(flight_id) FROM kept").await,
        2 * (149_999 * 150_000 / 2)
    );
    assert_eq!(
        scalar_i64(
            &mut client,
            "SELECT count(*) FROM duckdb_tables() WHERE table_name = 'dropped'"
        )
        .await,
        0
    );
}

/// What a hostile writer puts into a file-backed server (where ingest runs through
/// the C++ relation shim): into a view, into a table of another shape, a column type
/// DuckDB has no column for, no columns at all. Each is InvalidArgument, nothing
/// changes, and the database still opens after `kill -9`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_file_backed_puts_are_refused_and_change_nothing() {
    use arrow::array::{ArrayRef, Int64Array, RecordBatch, RecordBatchOptions, UnionArray};
    use arrow::datatypes::{DataType, Field, Schema, UnionFields};
    use std::sync::Arc;
    let (dir, port, child, mut client) = start_file_backed().await;
    for sql in [
        "CREATE TABLE base (a BIGINT)",
        "CREATE VIEW v AS SELECT * FROM base",
    ] {
        action(&mut client, "sql", sql).await.unwrap();
    }
    let column = |name: &str, array: ArrayRef| {
        let schema = Schema::new(vec![Field::new(name, array.data_type().clone(), true)]);
        RecordBatch::try_new(Arc::new(schema), vec![array]).unwrap()
    };
    let one_bigint = column("a", Arc::new(Int64Array::from(vec![1, 2, 3])));
    let two_columns = RecordBatch::try_from_iter([
        ("a", Arc::new(Int64Array::from(vec![1])) as ArrayRef),
        ("b", Arc::new(Int64Array::from(vec![2])) as ArrayRef),
    ])
    .unwrap();
    let fields = UnionFields::try_new([0], [Field::new("i", DataType::Int64, true)]).unwrap();
    let union = UnionArray::try_new(
        fields,
        vec![0i8, 0].into(),
        None,
        vec![Arc::new(Int64Array::from(vec![1, 2])) as ArrayRef],
    )
    .unwrap();
    let no_columns = RecordBatch::try_new_with_options(
        Arc::new(Schema::empty()),
        vec![],
        &RecordBatchOptions::new().with_row_count(Some(3)),
    )
    .unwrap();
    for (table, batch) in [
        ("v", one_bigint),
        ("base", two_columns),
        ("u", column("u", Arc::new(union))),
        ("z", no_columns),
    ] {
        let err = put(&mut client, table, vec![batch]).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{table}: {err}");
    }
    assert_eq!(
        scalar_i64(&mut client, "SELECT count(*) FROM base").await,
        0
    );
    assert_eq!(
        scalar_i64(
            &mut client,
            "SELECT count(*) FROM duckdb_tables() WHERE table_name IN ('u', 'z')"
        )
        .await,
        0
    );
    let (_child, mut client) = kill_9_and_restart(child, port, dir.path()).await;
    assert_eq!(scalar_i64(&mut client, "SELECT count(*) FROM v").await, 0);
}
