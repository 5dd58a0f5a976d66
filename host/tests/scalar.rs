//! Exchangers as scalar functions in SQL (`exchanger_varchar(EXCHANGER, arg, …)`
//! and its siblings), on a real server with real guests: the same values as the
//! native built-in, and every lie or attack a scalar guest can make ending the
//! query with its status while a bystander is served.

mod common;

use arrow::array::{Array, AsArray};
use arrow::datatypes::Int64Type;
use common::ALICE;
use std::time::Duration;
use tonic::Code;

const KEY: &str = "the scalar test key, of 32 bytes";

/// A server holding `rows` flights, with admin's and alice's clients.
async fn server_with_flights(
    rows: usize,
) -> (
    mallard::RunningServer,
    arrow_flight::FlightClient,
    arrow_flight::FlightClient,
) {
    let server = common::start_with(common::config_with_accounts()).await;
    let mut admin = common::client(&server).await;
    common::put(&mut admin, "flights", common::flights(rows, 10_000))
        .await
        .unwrap();
    let alice = common::login(&server, ALICE).await;
    (server, admin, alice)
}

fn pseudonymize(exchanger: &str, sandbox: &str) -> String {
    format!(
        r#"{{"exchanger": "{exchanger}", "sandbox": "{sandbox}", "params": {{"column": "arg1", "key": "{KEY}"}}}}"#
    )
}

/// The int64 columns of a one-row result.
async fn row_i64(client: &mut arrow_flight::FlightClient, sql: &str) -> Vec<i64> {
    let batches = common::query(client, sql).await.unwrap();
    let batch = arrow::compute::concat_batches(&batches[0].schema(), &batches).unwrap();
    (0..batch.num_columns())
        .map(|i| {
            let column =
                arrow::compute::cast(batch.column(i), &arrow::datatypes::DataType::Int64).unwrap();
            column.as_primitive::<Int64Type>().value(0)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stateless_exchanger_maps_a_column_in_sql_as_the_native_one_does() {
    let (server, mut admin, mut alice) = server_with_flights(200_000).await;
    common::upload(&mut alice, "pseudonymize").await;
    let wasm = pseudonymize("alice/pseudonymize", "on");
    let native = pseudonymize("pseudonymize", "off");
    let sql = format!(
        "SELECT count(*), count(DISTINCT p), count(DISTINCT carrier), min(length(p)), \
         max(length(p)) FROM (SELECT carrier, exchanger_varchar('{wasm}', carrier) AS p \
         FROM flights)"
    );
    let [rows, pseudonyms, carriers, shortest, longest] =
        <[i64; 5]>::try_from(row_i64(&mut alice, &sql).await).unwrap();
    assert_eq!(rows, 200_000);
    assert_eq!(pseudonyms, carriers, "one pseudonym per carrier");
    assert_eq!((shortest, longest), (32, 32));
    let differ = format!(
        "SELECT count(*) FROM flights WHERE exchanger_varchar('{wasm}', carrier) \
         IS DISTINCT FROM exchanger_varchar('{native}', carrier)"
    );
    assert_eq!(row_i64(&mut alice, &differ).await, vec![0]);
    // The arguments under names of the caller's choosing.
    let named = format!(
        r#"{{"exchanger": "alice/pseudonymize", "arguments": ["carrier"], "params": {{"column": "carrier", "key": "{KEY}"}}}}"#
    );
    let differ = format!(
        "SELECT count(*) FROM flights WHERE exchanger_varchar('{named}', carrier) \
         IS DISTINCT FROM exchanger_varchar('{wasm}', carrier)"
    );
    assert_eq!(row_i64(&mut alice, &differ).await, vec![0]);
    common::assert_idle(&mut admin).await;
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_scalar_call_refuses_what_cannot_be_one_value_per_row() {
    let (server, mut admin, mut alice) = server_with_flights(20_000).await;
    common::upload(&mut alice, "hostile_liar").await;
    let wasm = pseudonymize("pseudonymize", "off");
    for (sql, code, says) in [
        (
            format!("SELECT exchanger_bigint('{wasm}', carrier) FROM flights"),
            Code::InvalidArgument,
            "call exchanger_varchar() instead",
        ),
        (
            r#"SELECT exchanger_bigint('{"exchanger": "running_totals", "sandbox": "off", "params": {"value": "arg1"}}', passengers::BIGINT) FROM flights"#.to_owned(),
            Code::InvalidArgument,
            "stateless",
        ),
        (
            r#"SELECT exchanger_varchar('{"exchanger": "pseudonymize", "sandbox": "off", "arguments": ["a", "b"]}', carrier) FROM flights"#.to_owned(),
            Code::InvalidArgument,
            "names 2 columns for 1 arguments",
        ),
        (
            "SELECT exchanger_varchar(carrier, carrier) FROM flights".to_owned(),
            Code::InvalidArgument,
            "constant",
        ),
        (
            "SELECT exchanger_boolean('add_processed') FROM flights".to_owned(),
            Code::InvalidArgument,
            "at least one argument",
        ),
        (
            r#"SELECT exchanger_bigint('[{"exchanger": "add_processed"}, {"exchanger": "add_processed"}]', flight_id) FROM flights"#.to_owned(),
            Code::InvalidArgument,
            "not a pipeline",
        ),
        (
            r#"SELECT exchanger_bigint('{"exchanger": "alice/hostile_liar", "params": {"lie": "one-row"}}', flight_id) FROM flights"#.to_owned(),
            Code::InvalidArgument,
            "returned 1 rows",
        ),
        (
            r#"SELECT exchanger_bigint('{"exchanger": "bob/anything"}', flight_id) FROM flights"#.to_owned(),
            Code::NotFound,
            "",
        ),
    ] {
        let err = common::query(&mut alice, &sql).await.unwrap_err();
        assert_eq!(err.code(), code, "{sql}: {err}");
        assert!(err.message().contains(says), "{sql}: {err}");
    }
    common::assert_idle(&mut admin).await;
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hostile_scalar_guests_end_their_query_and_nothing_else() {
    let (server, mut admin, mut alice) = server_with_flights(20_000).await;
    for guest in [
        "hostile_endless_loop",
        "hostile_memory_bomb",
        "hostile_panic",
    ] {
        common::upload(&mut alice, guest).await;
    }
    for (guest, code) in [
        ("hostile_endless_loop", Code::DeadlineExceeded),
        ("hostile_memory_bomb", Code::ResourceExhausted),
        ("hostile_panic", Code::Aborted),
    ] {
        let sql = format!(
            r#"SELECT sum(exchanger_bigint('{{"exchanger": "alice/{guest}"}}', flight_id)) FROM flights"#
        );
        let attack = common::query(&mut alice, &sql);
        let mut bob = common::login(&server, common::BOB).await;
        let bystander = async {
            tokio::time::sleep(Duration::from_millis(200)).await;
            common::scalar_i64(&mut bob, "SELECT count(*) FROM flights").await
        };
        let (attacked, served) = common::within(Duration::from_secs(30), async {
            tokio::join!(attack, bystander)
        })
        .await;
        let err = attacked.unwrap_err();
        assert_eq!(err.code(), code, "{guest}: {err}");
        assert_eq!(served, 20_000, "the bystander is served");
    }
    common::assert_idle(&mut admin).await;
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sums_of_a_scalar_exchanger_match_duckdbs_own_arithmetic() {
    // `add_processed` passes its input through and appends `processed`; the
    // value is the last column, so a BOOLEAN call gives `true` per row.
    let (server, mut admin, mut alice) = server_with_flights(50_000).await;
    common::upload(&mut alice, "add_processed").await;
    let sql = r#"SELECT count(*) FILTER (WHERE exchanger_boolean('alice/add_processed', flight_id)), count(*) FROM flights"#;
    let [processed, rows] = <[i64; 2]>::try_from(row_i64(&mut alice, sql).await).unwrap();
    assert_eq!((processed, rows), (50_000, 50_000));
    let batches = common::query(
        &mut alice,
        r#"SELECT exchanger_boolean('{"exchanger": "add_processed", "sandbox": "off"}', flight_id) AS p FROM flights LIMIT 3"#,
    )
    .await
    .unwrap();
    assert_eq!(batches[0].column(0).null_count(), 0);
    // The call's receipt arrives in the do_get's trailer, as exchange()'s does.
    let sql = "SELECT count(*) FILTER (WHERE exchanger_boolean('alice/add_processed', flight_id)) FROM flights";
    let (processed, receipt) = scalar_receipt(&mut alice, sql).await;
    assert_eq!(processed, 50_000);
    assert_eq!(receipt.stages[0].rows_in, 50_000);
    assert!(receipt.stages[0].instances >= 1);
    common::assert_idle(&mut admin).await;
    server.stop().await.unwrap();
}

/// The receipt in a scalar query's trailer, and the query's one value.
async fn scalar_receipt(
    client: &mut arrow_flight::FlightClient,
    sql: &str,
) -> (i64, mallard_protocol::Receipt) {
    let mut stream = client
        .do_get(arrow_flight::Ticket::new(sql.to_owned()))
        .await
        .unwrap();
    let mut value = None;
    while let Some(batch) = futures::StreamExt::next(&mut stream).await {
        let batch = batch.unwrap();
        if batch.num_rows() > 0 {
            let column =
                arrow::compute::cast(batch.column(0), &arrow::datatypes::DataType::Int64).unwrap();
            value = Some(column.as_primitive::<Int64Type>().value(0));
        }
    }
    let mut receipts = stream
        .trailers()
        .and_then(|t| {
            t.get_bin(mallard_protocol::receipt::TRAILER)
                .and_then(|v| v.to_bytes().ok())
        })
        .and_then(|bytes| mallard_protocol::receipt::list_from_json(&bytes))
        .unwrap_or_default();
    assert_eq!(receipts.len(), 1, "{receipts:?}");
    (value.unwrap(), receipts.remove(0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn further_scalar_instances_take_the_users_extra_slots_or_share_the_first() {
    for extra in [0, 1] {
        let mut config = common::config_with_accounts();
        config.db.threads = Some(4);
        config.exchange_instances = 4;
        config.max_extra_instances_per_user = extra;
        let server = common::start_with(config).await;
        let mut admin = common::client(&server).await;
        common::put(&mut admin, "flights", common::flights(500_000, 50_000))
            .await
            .unwrap();
        let mut alice = common::login(&server, ALICE).await;
        common::upload(&mut alice, "pseudonymize").await;
        let wasm = pseudonymize("alice/pseudonymize", "on");
        let sql =
            format!("SELECT count(DISTINCT exchanger_varchar('{wasm}', carrier)) FROM flights");
        let expected = row_i64(&mut alice, "SELECT count(DISTINCT carrier) FROM flights").await[0];
        let (first_value, first) = scalar_receipt(&mut alice, &sql).await;
        let (second_value, second) = scalar_receipt(&mut alice, &sql).await;
        assert_eq!(
            (first_value, second_value),
            (expected, expected),
            "extra {extra}"
        );
        let stage = (&first.stages[0], &second.stages[0]);
        assert_eq!(stage.0.rows_in, 500_000);
        // One instance, plus at most one per extra slot; every slot given back
        // (the second query may open as many as the first).
        assert!(
            (1..=1 + extra).contains(&(stage.0.instances as usize)),
            "extra {extra}: {:?}",
            stage.0
        );
        if extra == 0 {
            assert_eq!(stage.0.instances, 1);
        }
        assert_eq!(stage.0.instances, stage.1.instances, "extra {extra}");
        common::assert_idle(&mut admin).await;
        server.stop().await.unwrap();
    }
}
