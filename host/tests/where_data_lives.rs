//! Exchangers where the data lives: the SQL function `exchange(…)`, pipelines,
//! and receipts, against a real server with real guests and real accounts.

mod common;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::compute::concat_batches;
use arrow::datatypes::{Int32Type, Int64Type};
use arrow_flight::{FlightClient, Ticket};
use common::*;
use futures::StreamExt;
use mallard_protocol::Receipt;
use mallard_protocol::receipt::{TRAILER, list_from_json};
use std::collections::HashMap;
use std::time::{Duration, Instant};
use tonic::Code;

const ROWS: usize = 200_000;
const TOTALS: &str = r#"{"value": "passengers", "key": "origin"}"#;

/// A server with the accounts, `flights` holding [`ROWS`] rows, and alice's own
/// `add_processed` and `running_totals`.
async fn server_with_flights(
    config: mallard::ServerConfig,
) -> (mallard::RunningServer, FlightClient) {
    let server = start_with(config).await;
    let mut alice = login(&server, ALICE).await;
    put(&mut alice, "flights", flights(ROWS, 50_000))
        .await
        .unwrap();
    upload(&mut alice, "add_processed").await;
    upload(&mut alice, "running_totals").await;
    (server, alice)
}

/// Runs `sql`; returns its batches and the receipts of its trailer.
async fn query_with_receipts(
    client: &mut FlightClient,
    sql: &str,
) -> Result<(Vec<RecordBatch>, Vec<Receipt>), tonic::Status> {
    let mut stream = client
        .do_get(Ticket::new(sql.to_owned()))
        .await
        .map_err(to_status)?;
    let mut batches = Vec::new();
    while let Some(batch) = stream.next().await {
        batches.push(batch.map_err(to_status)?);
    }
    let receipts = stream
        .trailers()
        .and_then(|t| t.get_bin(TRAILER).and_then(|v| v.to_bytes().ok()))
        .and_then(|bytes| list_from_json(&bytes))
        .unwrap_or_default();
    Ok((batches, receipts))
}

/// Both results as one batch each, the SQL side cast to the exchange's types
/// (DuckDB may hand back an equivalent Arrow type).
fn assert_same_rows(via_sql: &[RecordBatch], via_exchange: &[RecordBatch]) {
    let expected = concat_batches(&via_exchange[0].schema(), via_exchange).unwrap();
    let got = concat_batches(&via_sql[0].schema(), via_sql).unwrap();
    assert_eq!(got.num_rows(), expected.num_rows());
    assert_eq!(got.num_columns(), expected.num_columns());
    for (i, field) in expected.schema().fields().iter().enumerate() {
        assert_eq!(got.schema().field(i).name(), field.name());
        let column = arrow::compute::cast(got.column(i), field.data_type()).unwrap();
        assert_eq!(
            column.to_data(),
            expected.column(i).to_data(),
            "column {}",
            field.name()
        );
    }
}

fn running_totals_reference(input: &[RecordBatch]) -> Vec<i64> {
    let mut totals: HashMap<String, i64> = HashMap::new();
    let mut out = Vec::new();
    for batch in input {
        let origins = batch.column_by_name("origin").unwrap().as_string::<i32>();
        let passengers = batch
            .column_by_name("passengers")
            .unwrap()
            .as_primitive::<Int32Type>();
        for row in 0..batch.num_rows() {
            let total = totals.entry(origins.value(row).to_owned()).or_default();
            if passengers.is_valid(row) {
                *total += passengers.value(row) as i64;
            }
            out.push(*total);
        }
    }
    out
}

fn column_i64(batches: &[RecordBatch], name: &str) -> Vec<i64> {
    batches
        .iter()
        .flat_map(|b| {
            let column = arrow::compute::cast(
                b.column_by_name(name).unwrap(),
                &arrow::datatypes::DataType::Int64,
            )
            .unwrap();
            column.as_primitive::<Int64Type>().values().to_vec()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_sql_function_equals_do_exchange_and_composes_with_sql() {
    let (server, mut alice) = server_with_flights(config_with_accounts()).await;
    let source = query(&mut alice, "SELECT * FROM flights").await.unwrap();

    let (via_sql, receipts) = query_with_receipts(
        &mut alice,
        "SELECT * FROM exchange('add_processed', 'SELECT * FROM flights')",
    )
    .await
    .unwrap();
    let (via_exchange, receipt) =
        exchange_with_receipt(&mut alice, "add_processed", source.clone()).await;
    assert_eq!(rows(&via_sql), ROWS);
    assert_same_rows(&via_sql, &via_exchange);

    // Receipts: what went in and came out, per stage.
    assert_eq!(receipts.len(), 1, "{receipts:?}");
    let stage = &receipts[0].stages[0];
    assert!(
        stage.exchanger.starts_with("alice/add_processed@"),
        "{stage:?}"
    );
    assert_eq!((stage.rows_in, stage.rows_out), (ROWS as u64, ROWS as u64));
    assert_eq!(
        stage.instances, 2,
        "add_processed is stateless: both instances"
    );
    assert!(
        stage.cpu_ms > 0.0 && stage.peak_memory_bytes > 0,
        "{stage:?}"
    );
    let stage = &receipt.stages[0];
    assert_eq!((stage.rows_in, stage.rows_out), (ROWS as u64, ROWS as u64));
    assert_eq!(stage.batches_out as usize, via_exchange.len());
    assert!(
        stage.bytes_in > 0 && stage.bytes_out > stage.bytes_in,
        "{stage:?}"
    );

    // Aggregates, joins and CREATE TABLE … AS over the function's output.
    let by_origin = "SELECT origin, count(*) AS n FROM {} GROUP BY 1 ORDER BY 1";
    let plain = query(&mut alice, &by_origin.replace("{}", "flights"))
        .await
        .unwrap();
    let through = query(
        &mut alice,
        &by_origin.replace(
            "{}",
            "exchange('add_processed', 'SELECT * FROM flights') WHERE processed",
        ),
    )
    .await
    .unwrap();
    assert_eq!(column_i64(&plain, "n"), column_i64(&through, "n"));
    let joined = scalar_i64(
        &mut alice,
        "SELECT count(*) FROM exchange('add_processed', 'SELECT * FROM flights WHERE passengers > 100') e \
         JOIN flights f ON e.flight_id = f.flight_id",
    )
    .await;
    let expected = scalar_i64(
        &mut alice,
        "SELECT count(*) FROM flights WHERE passengers > 100",
    )
    .await;
    assert_eq!(joined, expected);
    // (DDL is for admins; an admin may name alice's exchanger.)
    let mut admin = client(&server).await;
    query(
        &mut admin,
        "CREATE TABLE processed AS SELECT * FROM exchange('alice/add_processed', 'SELECT * FROM flights')",
    )
    .await
    .unwrap();
    assert_eq!(
        scalar_i64(&mut alice, "SELECT count(*) FROM processed WHERE processed").await,
        ROWS as i64
    );
    // A LIMIT stops the exchange early; nothing stays running.
    let few = query(
        &mut alice,
        "SELECT * FROM exchange('add_processed', 'SELECT * FROM flights') LIMIT 10",
    )
    .await
    .unwrap();
    assert_eq!(rows(&few), 10);
    assert_idle(&mut alice).await;
    server.stop().await.unwrap();
}

/// Queries answered straight from their exchange so far.
fn bare_selects(server: &mallard::RunningServer) -> u64 {
    server.state().metrics.bare_selects.get()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_bare_select_is_answered_by_its_exchange_exactly_as_duckdb_would() {
    let (server, mut alice) = server_with_flights(config_with_accounts()).await;
    let bare = "SELECT * FROM exchange('add_processed', 'SELECT * FROM flights')";
    let before = bare_selects(&server);
    let (direct, receipts) = query_with_receipts(&mut alice, bare).await.unwrap();
    assert_eq!(
        bare_selects(&server),
        before + 1,
        "answered by the exchange"
    );
    // Any other shape goes through DuckDB, and gives the same answer.
    let (through, through_receipts) =
        query_with_receipts(&mut alice, &format!("{bare} WHERE true"))
            .await
            .unwrap();
    assert_eq!(bare_selects(&server), before + 1, "answered by DuckDB");
    assert_eq!(
        direct[0].schema(),
        through[0].schema(),
        "the same result schema"
    );
    assert_same_rows(&direct, &through);
    assert_eq!(rows(&direct), ROWS);
    for receipts in [&receipts, &through_receipts] {
        assert_eq!(receipts.len(), 1, "{receipts:?}");
        let stage = &receipts[0].stages[0];
        assert_eq!((stage.rows_in, stage.rows_out), (ROWS as u64, ROWS as u64));
    }
    // Spelling, comments and a terminator do not matter; quoting is DuckDB's.
    let spelled = "/* mine */ select *\n FROM Exchange ( 'add_processed' , \
                   'SELECT * FROM flights WHERE origin = ''JFK''' ) ; -- done";
    let (jfk, _) = query_with_receipts(&mut alice, spelled).await.unwrap();
    assert_eq!(bare_selects(&server), before + 2);
    let expected = scalar_i64(
        &mut alice,
        "SELECT count(*) FROM flights WHERE origin = 'JFK'",
    )
    .await;
    assert!(expected > 0);
    assert_eq!(rows(&jfk) as i64, expected);
    // Shapes that look alike but are not: DuckDB answers them.
    for other in [
        "SELECT * FROM exchange('add_processed', 'SELECT * FROM flights') LIMIT 5",
        "SELECT * FROM exchange('add_processed', 'SELECT * FROM flights', params := map{})",
        "SELECT * FROM exchange('add_processed', 'SELECT * FROM flights') ORDER BY flight_id",
    ] {
        query(&mut alice, other).await.expect(other);
    }
    assert_eq!(bare_selects(&server), before + 2);
    assert_idle(&mut alice).await;
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_macro_named_exchange_is_never_bypassed() {
    let (server, mut alice) = server_with_flights(config_with_accounts()).await;
    let mut admin = client(&server).await;
    query(
        &mut admin,
        "CREATE MACRO exchange(a, b) AS TABLE SELECT 42 AS answer, a AS first",
    )
    .await
    .unwrap();
    let bare = "SELECT * FROM exchange('add_processed', 'SELECT * FROM flights')";
    let before = bare_selects(&server);
    // Whichever function DuckDB resolves, the bare form answers what DuckDB's
    // own plan answers.
    for who in [&mut alice, &mut admin] {
        let (direct, _) = query_with_receipts(who, bare).await.unwrap();
        let (through, _) = query_with_receipts(who, &format!("{bare} WHERE true"))
            .await
            .unwrap();
        assert_eq!(direct[0].schema(), through[0].schema());
        assert_same_rows(&direct, &through);
    }
    // DuckDB resolves the macro (in `main`) before the server's function.
    let answered = query(&mut admin, bare).await.unwrap();
    assert!(answered[0].schema().field_with_name("answer").is_ok());
    assert_eq!(
        bare_selects(&server),
        before,
        "the macro ran, not the exchange"
    );
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn queries_over_exchange_read_only_their_columns_and_get_them_right() {
    let (server, mut alice) = server_with_flights(config_with_accounts()).await;
    let through =
        |sql: &str| sql.replace("{}", "exchange('add_processed', 'SELECT * FROM flights')");
    // Columns in another order, one twice, one only filtered on.
    let (got, _) = query_with_receipts(
        &mut alice,
        &through("SELECT processed, origin, flight_id, flight_id + 1 AS next FROM {} ORDER BY flight_id LIMIT 1000"),
    )
    .await
    .unwrap();
    let (expected, _) = query_with_receipts(
        &mut alice,
        "SELECT true AS processed, origin, flight_id, flight_id + 1 AS next FROM flights ORDER BY flight_id LIMIT 1000",
    )
    .await
    .unwrap();
    assert_same_rows(&got, &expected);
    for (over_exchange, over_table) in [
        (
            "SELECT sum(flight_id) FROM {} WHERE processed",
            "SELECT sum(flight_id) FROM flights",
        ),
        ("SELECT count(*) FROM {}", "SELECT count(*) FROM flights"),
        (
            "SELECT count(*) FROM {} WHERE passengers > 100",
            "SELECT count(*) FROM flights WHERE passengers > 100",
        ),
        (
            "SELECT count(DISTINCT origin) FROM {}",
            "SELECT count(DISTINCT origin) FROM flights",
        ),
    ] {
        assert_eq!(
            scalar_i64(&mut alice, &through(over_exchange)).await,
            scalar_i64(&mut alice, over_table).await,
            "{over_exchange}"
        );
    }
    assert_idle(&mut alice).await;
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn running_totals_and_pipelines_equal_their_references() {
    let (server, mut alice) = server_with_flights(config_with_accounts()).await;
    let source = query(&mut alice, "SELECT * FROM flights").await.unwrap();
    let reference = running_totals_reference(&source);

    let via_sql = query(
        &mut alice,
        "SELECT * FROM exchange('running_totals', 'SELECT * FROM flights', \
         params := map{'value': 'passengers', 'key': 'origin'})",
    )
    .await
    .unwrap();
    assert_eq!(column_i64(&via_sql, "running_total"), reference);

    // A two-stage pipeline equals the two exchanges one after the other.
    let totals = format!(r#"{{"exchanger": "running_totals", "params": {TOTALS}}}"#);
    let first = exchange(&mut alice, "add_processed", source.clone())
        .await
        .unwrap();
    let second = exchange(&mut alice, &totals, first).await.unwrap();
    let pipeline = format!(r#"[{{"exchanger": "add_processed"}}, {totals}]"#);
    let (piped, receipt) = exchange_with_receipt(&mut alice, &pipeline, source.clone()).await;
    assert_eq!(
        concat_batches(&second[0].schema(), &second).unwrap(),
        concat_batches(&piped[0].schema(), &piped).unwrap()
    );
    assert_eq!(receipt.stages.len(), 2);
    assert_eq!(receipt.stages[0].rows_out, receipt.stages[1].rows_in);
    assert_eq!(receipt.rows_out(), ROWS as u64);
    assert!(
        receipt.stages[1]
            .exchanger
            .starts_with("alice/running_totals@")
    );

    // The same pipeline from SQL.
    let (via_sql, receipts) = query_with_receipts(
        &mut alice,
        &format!("SELECT * FROM exchange('{pipeline}', 'SELECT * FROM flights')"),
    )
    .await
    .unwrap();
    assert_same_rows(&via_sql, &piped);
    assert_eq!(receipts[0].stages.len(), 2);
    assert_eq!(column_i64(&via_sql, "running_total"), reference);
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_sql_function_grants_nothing_the_role_does_not_have() {
    let (server, mut alice) = server_with_flights(config_with_accounts()).await;
    let mut rita = login(&server, RITA).await;
    let mut admin = client(&server).await;
    upload_shared(&mut admin, "add_processed").await;
    let refused = |sql: &str| format!("SELECT * FROM exchange('add_processed', '{sql}')");
    for (who, sql, code) in [
        // The inner query runs with the caller's rights.
        ("rita", refused("CREATE TABLE t AS SELECT 1"), Code::PermissionDenied),
        ("rita", refused("DELETE FROM flights"), Code::PermissionDenied),
        ("rita", refused("SELECT * FROM read_csv(''/etc/passwd'')"), Code::PermissionDenied),
        ("alice", refused("SELECT * FROM read_csv(''/etc/passwd'')"), Code::PermissionDenied),
        ("alice", refused("SET threads = 1"), Code::PermissionDenied),
        ("alice", refused("SELECT 1; DROP TABLE flights"), Code::InvalidArgument),
        // The outer statement too.
        (
            "rita",
            "CREATE TABLE mine AS SELECT * FROM exchange('add_processed', 'SELECT * FROM flights')".into(),
            Code::PermissionDenied,
        ),
        // Others' exchangers stay invisible; nesting is refused.
        (
            "rita",
            "SELECT * FROM exchange('alice/add_processed', 'SELECT * FROM flights')".into(),
            Code::NotFound,
        ),
        (
            "alice",
            refused("SELECT * FROM exchange(''add_processed'', ''SELECT 1 AS x'')"),
            Code::InvalidArgument,
        ),
        // Native builds only for built-ins.
        (
            "alice",
            "SELECT * FROM exchange('{\"exchanger\": \"alice/add_processed\", \"sandbox\": \"off\"}', 'SELECT * FROM flights')".into(),
            Code::PermissionDenied,
        ),
    ] {
        let client = if who == "rita" { &mut rita } else { &mut alice };
        let err = query(client, &sql).await.expect_err(&sql);
        assert_eq!(err.code(), code, "{who}: {sql}: {err}");
    }
    // What the reader may do, it may do: the shared exchanger over a read.
    assert_eq!(
        scalar_i64(
            &mut rita,
            "SELECT count(*) FROM exchange('add_processed', 'SELECT * FROM flights') WHERE processed"
        )
        .await,
        ROWS as i64
    );
    // The table is untouched and the server idle.
    assert_eq!(
        scalar_i64(&mut alice, "SELECT count(*) FROM flights").await,
        ROWS as i64
    );
    assert_idle(&mut alice).await;
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hostile_guests_inside_sql_end_the_query_with_their_status() {
    let mut config = config_with_accounts();
    config.limits.call_timeout = Duration::from_millis(500);
    config.limits.max_memory_bytes = 256 << 20;
    let (server, mut alice) = server_with_flights(config).await;
    upload(&mut alice, "hostile_endless_loop").await;
    upload(&mut alice, "hostile_memory_bomb").await;
    let mut bob = login(&server, BOB).await;
    for (guest, code, outer) in [
        ("hostile_endless_loop", Code::DeadlineExceeded, "count(*)"),
        ("hostile_memory_bomb", Code::ResourceExhausted, "count(*)"),
        // The bare form, answered by the exchange itself.
        ("hostile_endless_loop", Code::DeadlineExceeded, "*"),
        ("hostile_memory_bomb", Code::ResourceExhausted, "*"),
    ] {
        let sql = format!("SELECT {outer} FROM exchange('{guest}', 'SELECT * FROM flights')");
        let started = Instant::now();
        let hostile = query(&mut alice, &sql);
        let bystander = async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            scalar_i64(&mut bob, "SELECT count(*) FROM flights").await
        };
        let (result, answer) = tokio::join!(hostile, bystander);
        let err = result.expect_err(guest);
        assert_eq!(err.code(), code, "{guest}: {err}");
        assert!(err.message().contains(guest), "{err}");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(answer, ROWS as i64);
    }
    assert_idle(&mut alice).await;
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cancelling_the_outer_query_interrupts_the_guest() {
    let mut config = config_with_accounts();
    // The guest's own deadline is far away: only the query's end can stop it.
    config.limits.call_timeout = Duration::from_secs(60);
    config.db.query_timeout = Duration::from_secs(2);
    let (server, mut alice) = server_with_flights(config).await;
    upload(&mut alice, "hostile_endless_loop").await;
    let mut admin = client(&server).await;
    // Through DuckDB, and the bare form answered by the exchange itself.
    for outer in ["count(*)", "*"] {
        let sql = format!(
            "SELECT {outer} FROM exchange('hostile_endless_loop', 'SELECT * FROM flights')"
        );
        // The query timeout.
        let started = Instant::now();
        let err = query(&mut alice, &sql).await.unwrap_err();
        assert_eq!(err.code(), Code::DeadlineExceeded, "{sql}: {err}");
        assert!(
            started.elapsed() < Duration::from_secs(6),
            "{sql}: {:?}",
            started.elapsed()
        );
        assert_idle(&mut alice).await;

        // A client that goes away.
        let stream = alice.do_get(Ticket::new(sql.clone()));
        let _ = tokio::time::timeout(Duration::from_millis(500), stream).await;
        assert_idle(&mut admin).await;
    }
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn push_through_an_exchanger_lands_the_transformed_rows_on_the_target() {
    let (source, mut alice) = server_with_flights(config_with_accounts()).await;
    let target = start_with(config_with_accounts()).await;
    let mut target_admin = client(&target).await;
    let filter = "WHERE passengers > 100";
    let body = serde_json::json!({
        "query": format!("SELECT * FROM flights {filter}"),
        "exchangers": [{"exchanger": "add_processed"}],
        "to": target.url(),
        "target_table": "processed",
    });
    let result = action(&mut alice, "push_table", body.to_string())
        .await
        .unwrap();
    let expected = scalar_i64(
        &mut alice,
        &format!("SELECT count(*) FROM flights {filter}"),
    )
    .await;
    assert_eq!(result["rows"], expected);
    let receipt: Receipt = serde_json::from_value(result["receipt"].clone()).unwrap();
    assert_eq!(receipt.stages[0].rows_in, expected as u64);
    assert_eq!(receipt.rows_out(), expected as u64);

    // Equal rows and checksums, and every row went through the exchanger.
    let checksum = "SELECT count(*)::BIGINT, sum(flight_id)::BIGINT, sum(hash(carrier, origin, \
                    destination, arrival_delay_min, passengers, cancelled) % 1000003)::BIGINT FROM";
    for part in 0..3 {
        let on_source = format!("SELECT c{part} FROM ({checksum} flights {filter}) t(c0, c1, c2)");
        let on_target = format!("SELECT c{part} FROM ({checksum} processed) t(c0, c1, c2)");
        assert_eq!(
            scalar_i64(&mut alice, &on_source).await,
            scalar_i64(&mut target_admin, &on_target).await,
            "checksum part {part}"
        );
    }
    assert_eq!(
        scalar_i64(
            &mut target_admin,
            "SELECT count(*) FROM processed WHERE processed"
        )
        .await,
        expected
    );

    // The pushed query runs with the caller's rights; a missing exchanger is
    // NotFound before anything reaches the target.
    let refused = serde_json::json!({
        "query": "SELECT * FROM read_csv('/etc/passwd')",
        "to": target.url(),
        "target_table": "stolen",
    });
    let err = action(&mut alice, "push_table", refused.to_string())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err}");
    let missing = serde_json::json!({
        "table": "flights",
        "exchangers": "bob/add_processed",
        "to": target.url(),
        "target_table": "never",
    });
    let err = action(&mut alice, "push_table", missing.to_string())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err}");
    let tables = action(&mut target_admin, "list_tables", "").await.unwrap();
    assert!(!tables.to_string().contains("never") && !tables.to_string().contains("stolen"));
    assert_idle(&mut alice).await;
    source.stop().await.unwrap();
    target.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_sql_exchanges_do_not_starve_duckdbs_threads() {
    // Each running exchange() holds a DuckDB thread while it waits for its guest,
    // and its inner query needs DuckDB threads too: with two of them and six
    // such queries at once, every query must still finish.
    let mut config = config_with_accounts();
    config.db.threads = Some(2);
    let (server, _alice) = server_with_flights(config).await;
    let mut admin = client(&server).await;
    upload_shared(&mut admin, "add_processed").await;
    let sql =
        "SELECT count(*) FROM exchange('add_processed', 'SELECT * FROM flights') WHERE processed";
    let mut clients = Vec::new();
    for who in [ALICE, BOB, ALICE, BOB, RITA, RITA] {
        clients.push(login(&server, who).await);
    }
    let counts = within(
        Duration::from_secs(120),
        futures::future::join_all(clients.iter_mut().map(|c| scalar_i64(c, sql))),
    )
    .await;
    assert_eq!(counts, vec![ROWS as i64; 6]);
    assert_idle(&mut admin).await;
    server.stop().await.unwrap();
}
