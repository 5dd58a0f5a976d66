//! do_get, do_put, actions and push_table against real servers and a real DuckDB.

mod common;

use arrow::array::{
    Array, BooleanArray, Date32Array, Decimal128Array, Float64Array, Int32Array, Int64Array,
    RecordBatch, StringArray, TimestampMicrosecondArray,
};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::{FlightClient, FlightDescriptor};
use common::*;
use futures::StreamExt;
use std::sync::Arc;
use std::time::Duration;
use tonic::Code;

fn typed_batch(start: i64, n: usize) -> RecordBatch {
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, true),
        Field::new("score", DataType::Float64, true),
        Field::new("name", DataType::Utf8, true),
        Field::new("ok", DataType::Boolean, true),
        Field::new("day", DataType::Date32, true),
        Field::new("at", DataType::Timestamp(TimeUnit::Microsecond, None), true),
        Field::new("amount", DataType::Decimal128(18, 3), true),
        Field::new("small", DataType::Int32, true),
    ]));
    let ids: Vec<i64> = (start..start + n as i64).collect();
    let null_every = |i: &i64, k: i64| (i % k != 0).then_some(*i);
    RecordBatch::try_new(
        schema,
        vec![
            Arc::new(Int64Array::from(ids.clone())),
            Arc::new(Float64Array::from_iter(
                ids.iter().map(|i| null_every(i, 7).map(|v| v as f64 * 0.5)),
            )),
            Arc::new(StringArray::from_iter(
                ids.iter()
                    .map(|i| null_every(i, 5).map(|v| format!("name-{v}-é"))),
            )),
            Arc::new(BooleanArray::from_iter(
                ids.iter().map(|i| null_every(i, 3).map(|v| v % 2 == 0)),
            )),
            Arc::new(Date32Array::from_iter(
                ids.iter()
                    .map(|i| null_every(i, 11).map(|v| 19_000 + v as i32)),
            )),
            Arc::new(TimestampMicrosecondArray::from_iter(ids.iter().map(|i| {
                null_every(i, 13).map(|v| 1_700_000_000_000_000 + v * 1_000_003)
            }))),
            Arc::new(
                Decimal128Array::from_iter(
                    ids.iter()
                        .map(|i| null_every(i, 4).map(|v| v as i128 * 1234 - 99)),
                )
                .with_precision_and_scale(18, 3)
                .unwrap(),
            ),
            Arc::new(Int32Array::from_iter(
                ids.iter().map(|i| null_every(i, 2).map(|v| v as i32)),
            )),
        ],
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn select_42_round_trip() {
    let server = start().await;
    let mut client = client(&server).await;
    assert_eq!(scalar_i64(&mut client, "SELECT 42 AS answer").await, 42);
    // Statements without a result set, as the seeds send them through do_get.
    let batches = query(
        &mut client,
        "CREATE TABLE foo (a INT, b VARCHAR); INSERT INTO foo VALUES (1, 'x'), (2, 'y')",
    )
    .await
    .unwrap();
    assert_eq!(rows(&batches), 1, "a one-row status");
    assert_eq!(scalar_i64(&mut client, "SELECT count(*) FROM foo").await, 2);
    let err = query(&mut client, "SELEKT nonsense").await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err}");
    let err = query(&mut client, "SELECT * FROM no_such_table")
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err}");
    // Several statements: all run, the last one's rows stream back.
    assert_eq!(
        scalar_i64(
            &mut client,
            "CREATE TABLE bar AS SELECT 5 AS v; INSERT INTO bar VALUES (7); SELECT sum(v) FROM bar"
        )
        .await,
        12
    );
    // A failing statement before the last stops the request with its error.
    let err = query(&mut client, "SELECT 1; SELEKT 2; SELECT 3")
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err}");
    let err = query(&mut client, " ; ").await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err}");
    // Dynamic PIVOT expands into several statements; its schema is known only as it runs.
    let pivoted = query(&mut client, "PIVOT foo ON b USING sum(a)")
        .await
        .unwrap();
    assert_eq!(pivoted[0].num_columns(), 2, "{:?}", pivoted[0].schema());
    server.stop().await.unwrap();
}

/// Asserts that `table`, read back in `id` order, holds exactly `batches`: the
/// same types and the same values.
async fn assert_table_holds(client: &mut FlightClient, table: &str, batches: &[RecordBatch]) {
    let got = query(client, &format!("SELECT * FROM {table} ORDER BY id"))
        .await
        .unwrap();
    let want = arrow::compute::concat_batches(&batches[0].schema(), batches).unwrap();
    let got = arrow::compute::concat_batches(&got[0].schema(), &got).unwrap();
    assert_eq!(got.num_rows(), want.num_rows(), "rows of {table}");
    for (i, field) in want.schema().fields().iter().enumerate() {
        assert_eq!(
            got.schema().field(i).data_type(),
            field.data_type(),
            "type of {}",
            field.name()
        );
        assert_eq!(
            got.column(i).to_data(),
            want.column(i).to_data(),
            "values of {} in {table}",
            field.name()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_then_get_returns_identical_values_for_every_type() {
    let server = start().await;
    let mut client = client(&server).await;
    let batches = vec![typed_batch(0, 1000), typed_batch(1000, 777)];
    assert_eq!(
        put(&mut client, "typed", batches.clone()).await.unwrap(),
        1777
    );
    assert_table_holds(&mut client, "typed", &batches).await;
    // A second put appends.
    assert_eq!(
        put(&mut client, "typed", vec![typed_batch(5000, 10)])
            .await
            .unwrap(),
        10
    );
    assert_eq!(
        scalar_i64(&mut client, "SELECT count(*) FROM typed").await,
        1787
    );
    server.stop().await.unwrap();
}

/// Bodies of 256 KiB and more reuse buffers that every stream shares
/// (`mallard_protocol::body_pool`): three puts at once, of large batches, must each
/// land exactly what its client sent, however the buffers pass between them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_puts_of_pooled_bodies_land_exactly_what_was_sent() {
    let server = start().await;
    let puts = (0..3i64).map(|k| {
        let server = &server;
        async move {
            let mut client = client(server).await;
            let batches: Vec<_> = (0..6i64)
                .map(|b| typed_batch(k * 1_000_000 + b * 50_000, 50_000))
                .collect();
            let body = batches[0].get_array_memory_size();
            assert!(
                body > mallard_protocol::body_pool::MIN_POOLED_BYTES,
                "{body}"
            );
            let table = format!("pooled{k}");
            put(&mut client, &table, batches.clone()).await.unwrap();
            (table, batches)
        }
    });
    let sent = within(Duration::from_secs(120), futures::future::join_all(puts)).await;
    let mut client = client(&server).await;
    for (table, batches) in &sent {
        assert_table_holds(&mut client, table, batches).await;
    }
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_million_rows_stream_through_put_and_get() {
    let server = start().await;
    let mut client = client(&server).await;
    let n = 2_000_000usize;
    let batch_rows = 100_000usize;
    let input = futures::stream::iter(
        (0..n)
            .step_by(batch_rows)
            .map(move |s| Ok(typed_batch(s as i64, batch_rows))),
    );
    let data = FlightDataEncoderBuilder::new()
        .with_flight_descriptor(Some(FlightDescriptor::new_cmd("big")))
        .build(input);
    let results: Vec<_> = within(Duration::from_secs(120), async {
        client.do_put(data).await.unwrap().collect::<Vec<_>>().await
    })
    .await;
    assert!(results.iter().all(|r| r.is_ok()));
    let stream = client
        .do_get(arrow_flight::Ticket::new("SELECT * FROM big"))
        .await
        .unwrap();
    let mut seen = 0usize;
    let mut batches = 0usize;
    let mut stream = stream;
    while let Some(batch) = stream.next().await {
        let batch = batch.unwrap();
        assert!(batch.num_rows() <= mallard_db::query::TARGET_BATCH_ROWS);
        seen += batch.num_rows();
        batches += 1;
    }
    assert_eq!(seen, n);
    assert!(
        batches >= n / mallard_db::query::TARGET_BATCH_ROWS,
        "streamed in many batches, not one"
    );
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_put_that_fails_midway_leaves_nothing_behind() {
    let server = start().await;
    let mut client = client(&server).await;
    // Malformed message after good batches: InvalidArgument and no table.
    let good = (0..3).map(|i| typed_batch(i * 1000, 1000)).collect();
    let err = put_ending_in_garbage(&mut client, "half", good)
        .await
        .expect("the put fails");
    assert_eq!(err.code(), Code::InvalidArgument, "{err}");
    let tables = action(&mut client, "list_tables", "").await.unwrap();
    assert!(
        tables
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t["name"] != "half"),
        "{tables}"
    );

    // A client that vanishes mid-stream (its runtime, sockets and all, torn down
    // like a killed process): rolled back too.
    let url = server.url();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let mut c = mallard::client::connect(&url, "admin", "password123")
                .await
                .unwrap();
            let (tx, rx) = tokio::sync::mpsc::channel::<arrow::array::RecordBatch>(1);
            tokio::spawn(async move {
                let input = tokio_stream::wrappers::ReceiverStream::new(rx).map(Ok);
                let data = FlightDataEncoderBuilder::new()
                    .with_flight_descriptor(Some(FlightDescriptor::new_cmd("vanished")))
                    .build(input);
                let _ = c.do_put(data).await;
            });
            for i in 0..3 {
                tx.send(typed_batch(i * 1000, 1000)).await.unwrap();
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
            std::mem::forget(tx); // never end the stream cleanly
        });
        drop(runtime);
    })
    .join()
    .unwrap();
    // Its ingest and DuckDB connection are gone, and no table was left.
    assert_idle(&mut client).await;
    let tables = action(&mut client, "list_tables", "").await.unwrap();
    assert!(
        tables
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t["name"] != "vanished"),
        "{tables}"
    );
    // The table name is free again: nothing half-created holds it.
    assert_eq!(
        put(&mut client, "vanished", vec![typed_batch(0, 1)])
            .await
            .unwrap(),
        1
    );
    // A schema change mid-stream is refused.
    let other = RecordBatch::try_new(
        Arc::new(Schema::new(vec![Field::new("x", DataType::Utf8, false)])),
        vec![Arc::new(StringArray::from(vec!["a"]))],
    )
    .unwrap();
    // Two well-formed streams glued together, so the server (not the client's
    // encoder) sees the schema change.
    let first = FlightDataEncoderBuilder::new()
        .with_flight_descriptor(Some(FlightDescriptor::new_cmd("mixed")))
        .build(futures::stream::iter(vec![Ok(typed_batch(0, 10))]));
    let second = FlightDataEncoderBuilder::new().build(futures::stream::iter(vec![Ok(other)]));
    let mixed = first.chain(second);
    let failed = match client.do_put(mixed).await {
        Ok(results) => results
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .any(|r| r.is_err()),
        Err(_) => true,
    };
    assert!(failed);
    assert_eq!(
        scalar_i64(
            &mut client,
            "SELECT count(*) FROM duckdb_tables() WHERE table_name = 'mixed'"
        )
        .await,
        0
    );
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_table_names_are_quoted_harmlessly() {
    let server = start().await;
    let mut client = client(&server).await;
    put(&mut client, "y", vec![typed_batch(0, 5)])
        .await
        .unwrap();
    let hostile = "x; DROP TABLE y";
    assert_eq!(
        put(&mut client, hostile, vec![typed_batch(0, 3)])
            .await
            .unwrap(),
        3
    );
    assert_eq!(
        scalar_i64(&mut client, "SELECT count(*) FROM y").await,
        5,
        "y survived"
    );
    assert_eq!(
        scalar_i64(&mut client, "SELECT count(*) FROM \"x; DROP TABLE y\"").await,
        3
    );
    let err = action(&mut client, "drop_table", "\"y\"; DROP TABLE y; --")
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err}");
    assert_eq!(scalar_i64(&mut client, "SELECT count(*) FROM y").await, 5);
    let err = put(&mut client, "bad\u{0}name", vec![typed_batch(0, 1)])
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_table_moves_a_table_between_servers() {
    let mut config = test_config();
    let dead: std::net::SocketAddr = "127.0.0.1:1".parse().unwrap();
    let source = start_with(config.clone()).await;
    let target = start().await;
    // A source that may push to the dead address too, to see Unavailable.
    config.push_allow = vec![
        mallard_protocol::PushTarget::parse(&target.url()).unwrap(),
        mallard_protocol::PushTarget::parse(&format!("grpc://{dead}")).unwrap(),
    ];
    let open_source = start_with(config).await;
    let target = start().await;
    let mut a = client(&source).await;
    let mut b = client(&target).await;
    put(&mut a, "flights", flights(300_000, 65_536))
        .await
        .unwrap();
    let body =
        serde_json::json!({"table": "flights", "to": target.url(), "target_table": "flights_copy"});
    let result = action(&mut a, "push_table", body.to_string())
        .await
        .unwrap();
    assert_eq!(result["rows"], 300_000);
    let checksum = "SELECT count(*)::BIGINT, sum(flight_id)::BIGINT, sum(hash(carrier, origin, destination, arrival_delay_min, passengers, cancelled) % 1000003)::BIGINT FROM ";
    for part in 0..3 {
        let sql_a = format!("SELECT col{part} FROM ({checksum} flights) t(col0, col1, col2)");
        let sql_b = format!("SELECT col{part} FROM ({checksum} flights_copy) t(col0, col1, col2)");
        assert_eq!(
            scalar_i64(&mut a, &sql_a).await,
            scalar_i64(&mut b, &sql_b).await,
            "checksum part {part}"
        );
    }
    // Pushing a missing table is NotFound; pushing to a dead server is Unavailable.
    let err = action(
        &mut a,
        "push_table",
        serde_json::json!({"table": "nope", "to": target.url()}).to_string(),
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let mut open = client(&open_source).await;
    put(&mut open, "flights", flights(10, 10)).await.unwrap();
    let err = action(
        &mut open,
        "push_table",
        serde_json::json!({"table": "flights", "to": format!("grpc://{dead}")}).to_string(),
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err}");
    let err = action(&mut a, "push_table", "not json").await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    source.stop().await.unwrap();
    target.stop().await.unwrap();
    open_source.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn actions_and_flight_metadata() {
    let server = start().await;
    let mut client = client(&server).await;
    let health = action(&mut client, "healthcheck", "").await.unwrap();
    assert_eq!(health["status"], "ok");
    put(&mut client, "t", vec![typed_batch(0, 42)])
        .await
        .unwrap();
    let tables = action(&mut client, "list_tables", "").await.unwrap();
    assert_eq!(tables[0]["name"], "t");
    assert_eq!(tables[0]["rows"], 42);
    let infos: Vec<_> = client
        .list_flights(bytes::Bytes::new())
        .await
        .unwrap()
        .collect::<Vec<_>>()
        .await;
    assert_eq!(infos.len(), 1);
    assert_eq!(infos[0].as_ref().unwrap().total_records, 42);
    let schema = client
        .get_schema(FlightDescriptor::new_path(vec!["t".into()]))
        .await
        .unwrap();
    assert_eq!(schema.fields().len(), 8);
    let info = client
        .get_flight_info(FlightDescriptor::new_cmd("SELECT 1 AS one"))
        .await
        .unwrap();
    assert_eq!(info.try_decode_schema().unwrap().field(0).name(), "one");
    let err = client
        .get_flight_info(FlightDescriptor::new_path(vec!["missing".into()]))
        .await
        .err()
        .map(to_status)
        .unwrap();
    assert_eq!(err.code(), Code::NotFound);
    assert_eq!(
        action(&mut client, "sql", "CREATE TABLE u AS SELECT 1 AS a")
            .await
            .unwrap()["rows_affected"],
        1
    );
    assert_eq!(
        action(&mut client, "drop_table", "t").await.unwrap()["dropped"],
        "t"
    );
    let err = action(&mut client, "no_such_action", "").await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let actions: Vec<_> = client
        .list_actions()
        .await
        .unwrap()
        .collect::<Vec<_>>()
        .await;
    assert!(actions.len() >= 8);
    let err = query(&mut client, "SELECT * FROM read_csv('/etc/passwd')")
        .await
        .unwrap_err();
    assert_ne!(err.code(), Code::Ok);
    let err = query(&mut client, "SET enable_external_access = true")
        .await
        .unwrap_err();
    assert_ne!(err.code(), Code::Ok);
    server.stop().await.unwrap();
}

/// Each kind of malformed request gets its precise status, and the server serves on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_get_precise_statuses() {
    let server = start().await;
    let mut client = client(&server).await;
    fn invalid<T>(r: Result<T, tonic::Status>, what: &str) {
        let err = r.err().unwrap_or_else(|| panic!("{what} was accepted"));
        assert_eq!(err.code(), Code::InvalidArgument, "{what}: {err}");
    }

    let ticket = client
        .do_get(arrow_flight::Ticket::new(vec![0xffu8, 0xfe, b'S']))
        .await
        .map(|_| ())
        .map_err(to_status);
    invalid(ticket, "an invalid UTF-8 ticket");

    let batch = typed_batch(0, 10);
    for (what, descriptor) in [
        (
            "an UNKNOWN descriptor",
            FlightDescriptor {
                r#type: 0,
                ..Default::default()
            },
        ),
        (
            "a two-element path",
            FlightDescriptor::new_path(vec!["a".into(), "b".into()]),
        ),
        ("an empty table name", FlightDescriptor::new_cmd("")),
    ] {
        let data = FlightDataEncoderBuilder::new()
            .with_flight_descriptor(Some(descriptor))
            .build(futures::stream::iter(vec![Ok(batch.clone())]));
        let outcome = put_error(&mut client, data).await.map_or(Ok(()), Err);
        invalid(outcome, what);
    }

    // Wrong types for an existing table: refused, and the table keeps its rows.
    action(
        &mut client,
        "sql",
        "CREATE TABLE typed (id BIGINT, score DOUBLE)",
    )
    .await
    .unwrap();
    invalid(
        put(&mut client, "typed", vec![typed_batch(0, 3)]).await,
        "eight columns into a two-column table",
    );
    action(&mut client, "sql", "INSERT INTO typed VALUES (1, 1.5)")
        .await
        .unwrap();
    let text = RecordBatch::try_new(
        Arc::new(Schema::new(vec![
            Field::new("id", DataType::Utf8, false),
            Field::new("score", DataType::Utf8, false),
        ])),
        vec![
            Arc::new(StringArray::from(vec!["not a number"])),
            Arc::new(StringArray::from(vec!["nor this"])),
        ],
    )
    .unwrap();
    invalid(
        put(&mut client, "typed", vec![text]).await,
        "text into BIGINT/DOUBLE columns",
    );
    assert_eq!(
        scalar_i64(&mut client, "SELECT count(*) FROM typed").await,
        1
    );

    invalid(
        action(&mut client, "push_table", "{not json").await,
        "a non-JSON push_table body",
    );
    invalid(
        exchange(&mut client, r#"{"exchanger": 3}"#, flights(10, 10)).await,
        "a malformed exchange descriptor",
    );
    assert_eq!(scalar_i64(&mut client, "SELECT 1").await, 1);
    assert_idle(&mut client).await;
    server.stop().await.unwrap();
}

/// While a put streams, its Arrow scan must be invisible to every other connection:
/// another query that could bind it would steal batches and outlive the stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn in_flight_puts_are_invisible_to_other_queries() {
    let server = start().await;
    let mut writer = client(&server).await;
    let mut reader = client(&server).await;
    let (more, rest) = tokio::sync::oneshot::channel::<()>();
    let first = futures::stream::iter([Ok(typed_batch(0, 1000))]);
    let second = futures::stream::once(async move {
        let _ = rest.await;
        Ok(typed_batch(1000, 1000))
    });
    let data = FlightDataEncoderBuilder::new()
        .with_flight_descriptor(Some(FlightDescriptor::new_cmd("streaming")))
        .build(first.chain(second));
    let put = tokio::spawn(async move {
        let results: Vec<_> = writer
            .do_put(data)
            .await
            .map_err(to_status)?
            .collect()
            .await;
        results
            .into_iter()
            .map(|r| r.map_err(to_status))
            .collect::<Result<Vec<_>, _>>()
    });
    // Wait until the ingest is running, then look for anything it registered.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let live = action(&mut reader, "healthcheck", "").await.unwrap();
        if live["live"]["ingests"] == 1 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{live}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let visible = scalar_i64(
        &mut reader,
        "SELECT count(*) FROM duckdb_views() WHERE NOT internal AND view_name LIKE 'mallard%'",
    )
    .await;
    assert_eq!(
        visible, 0,
        "the ingest's Arrow scan is visible to other queries"
    );
    let _ = more.send(());
    put.await.unwrap().unwrap();
    assert_eq!(
        scalar_i64(&mut reader, "SELECT count(*) FROM streaming").await,
        2000
    );
    assert_idle(&mut reader).await;
    server.stop().await.unwrap();
}

/// A client that cancels its put mid-stream (HTTP/2 `RST_STREAM(CANCEL)`, which
/// tonic hands the server as a clean end of stream) writes nothing, and the
/// server knows at once (well before the 30 s stall timeout).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_put_the_client_cancels_writes_nothing() {
    let server = common::start().await;
    let mut client = common::client(&server).await;
    let (tx, rx) = tokio::sync::mpsc::channel::<arrow::array::RecordBatch>(4);
    let mut cancelling = common::client(&server).await;
    let call = tokio::spawn(async move {
        let input = tokio_stream::wrappers::ReceiverStream::new(rx).map(Ok);
        let data = FlightDataEncoderBuilder::new()
            .with_flight_descriptor(Some(FlightDescriptor::new_cmd("cancelled")))
            .build(input);
        let _ = cancelling.do_put(data).await;
    });
    for i in 0..3 {
        tx.send(typed_batch(i * 1000, 1000)).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let cancelled_at = std::time::Instant::now();
    call.abort();
    assert_idle(&mut client).await;
    assert!(cancelled_at.elapsed() < Duration::from_secs(5));
    let tables = action(&mut client, "list_tables", "").await.unwrap();
    assert!(
        tables
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t["name"] != "cancelled"),
        "{tables}"
    );
    drop(tx);
    server.stop().await.unwrap();
}

/// Accepted connections have Nagle off: a small streamed response (data, then
/// trailers) is not held back until the client's delayed ACK (about 40 ms on
/// Linux), which made every `do_get`/`do_action`/`do_exchange` take 40+ ms.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_streamed_calls_do_not_wait_for_delayed_acks() {
    let server = start().await;
    let mut client = client(&server).await;
    let mut took = Vec::new();
    for _ in 0..21 {
        let started = std::time::Instant::now();
        assert_eq!(scalar_i64(&mut client, "SELECT 1").await, 1);
        took.push(started.elapsed());
    }
    took.sort();
    let median = took[took.len() / 2];
    assert!(
        median < Duration::from_millis(20),
        "median SELECT 1 round trip {median:?}: a delayed-ACK stall is back"
    );
    server.stop().await.unwrap();
}

/// A put of many small batches (joined on the server before DuckDB sees them) lands
/// complete, in the order sent, and a failure between joins still writes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_batches_land_complete_and_in_order() {
    let server = start().await;
    let mut client = client(&server).await;
    let n = 300_001;
    assert_eq!(
        put(&mut client, "small", flights(n, 1_000)).await.unwrap(),
        n as u64
    );
    assert_eq!(
        scalar_i64(
            &mut client,
            "SELECT count(*) FILTER (WHERE flight_id = rn - 1) \
             FROM (SELECT flight_id, row_number() OVER () AS rn FROM small)"
        )
        .await,
        n as i64
    );
    // 150 small batches are pending when the malformed message arrives.
    assert!(
        put_ending_in_garbage(&mut client, "small", flights(150_000, 1_000))
            .await
            .is_some()
    );
    assert_eq!(
        scalar_i64(&mut client, "SELECT count(*) FROM small").await,
        n as i64
    );
    server.stop().await.unwrap();
}

/// A gRPC codec that sends and receives message bytes as they are, so a test can
/// say what no well-behaved client would.
#[derive(Clone, Default)]
struct RawBytes;

impl tonic::codec::Codec for RawBytes {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawBytes;
    type Decoder = RawBytes;

    fn encoder(&mut self) -> RawBytes {
        RawBytes
    }

    fn decoder(&mut self) -> RawBytes {
        RawBytes
    }
}

impl tonic::codec::Encoder for RawBytes {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn encode(
        &mut self,
        item: Vec<u8>,
        dst: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        bytes::BufMut::put_slice(dst, &item);
        Ok(())
    }
}

impl tonic::codec::Decoder for RawBytes {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn decode(
        &mut self,
        src: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<Vec<u8>>, tonic::Status> {
        let n = bytes::Buf::remaining(src);
        Ok(Some(bytes::Buf::copy_to_bytes(src, n).to_vec()))
    }
}

/// A gRPC client of `server` that speaks [`RawBytes`].
async fn raw_client(
    server: &mallard::server::RunningServer,
) -> tonic::client::Grpc<tonic::transport::Channel> {
    let channel = tonic::transport::Channel::from_shared(server.url())
        .unwrap()
        .connect()
        .await
        .unwrap();
    tonic::client::Grpc::new(channel)
}

/// The status that ends a raw streaming call: at once or after any answers;
/// a clean end is a test failure (`what` names the call).
async fn refusal(
    grpc: &mut tonic::client::Grpc<tonic::transport::Channel>,
    request: tonic::Request<futures::stream::Iter<std::vec::IntoIter<Vec<u8>>>>,
    path: http::uri::PathAndQuery,
    what: &str,
) -> tonic::Status {
    grpc.ready().await.unwrap();
    let mut stream = match grpc.streaming(request, path, RawBytes).await {
        Err(status) => return status,
        Ok(response) => response.into_inner(),
    };
    loop {
        match stream.message().await {
            Ok(Some(_)) => continue,
            Ok(None) => panic!("{what} was answered in full"),
            Err(status) => return status,
        }
    }
}

/// `DoGet` is answered below tonic's codec: a request that is not exactly one
/// ticket within the message limit is refused with its own status before any
/// work, a caller without credentials is refused first, and the server serves on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn do_get_requests_that_are_not_one_ticket_are_refused() {
    let mut config = test_config();
    config.max_message_bytes = 4096;
    let server = start_with(config).await;
    let mut client = client(&server).await;
    let metadata = client.metadata().clone();
    let mut grpc = raw_client(&server).await;
    let path = http::uri::PathAndQuery::from_static("/arrow.flight.protocol.FlightService/DoGet");
    let ticket =
        |sql: &str| prost::Message::encode_to_vec(&arrow_flight::Ticket::new(sql.to_owned()));
    let with_auth = |messages: Vec<Vec<u8>>| {
        let mut request = tonic::Request::new(futures::stream::iter(messages));
        *request.metadata_mut() = metadata.clone();
        request
    };
    let mut refusals = Vec::new();
    for (what, messages, code) in [
        ("no ticket", vec![], Code::InvalidArgument),
        (
            "two tickets",
            vec![ticket("SELECT 1"), ticket("SELECT 2")],
            Code::InvalidArgument,
        ),
        (
            "bytes that are no ticket",
            vec![vec![0xff, 0xff, 0xff]],
            Code::InvalidArgument,
        ),
        (
            "a ticket over the limit",
            vec![ticket(&"x".repeat(5000))],
            Code::ResourceExhausted,
        ),
    ] {
        let status = refusal(&mut grpc, with_auth(messages), path.clone(), what).await;
        assert_eq!(status.code(), code, "{what}: {status}");
        refusals.push(status.message().to_owned());
    }
    assert!(
        refusals[1].contains("exactly one message"),
        "{}",
        refusals[1]
    );
    // No credentials: refused before the body is read.
    grpc.ready().await.unwrap();
    let status = grpc
        .streaming(
            tonic::Request::new(futures::stream::iter(vec![ticket("SELECT 1")])),
            path.clone(),
            RawBytes,
        )
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "{status}");
    // One well-formed ticket through the raw codec is answered in full.
    grpc.ready().await.unwrap();
    let mut answer = grpc
        .streaming(with_auth(vec![ticket("SELECT 42 AS v")]), path, RawBytes)
        .await
        .unwrap()
        .into_inner();
    let mut messages = 0;
    while answer.message().await.unwrap().is_some() {
        messages += 1;
    }
    assert_eq!(messages, 2, "a schema and one batch");
    assert_eq!(scalar_i64(&mut client, "SELECT 1").await, 1);
    assert_idle(&mut client).await;
    server.stop().await.unwrap();
}

/// `DoPut` and `DoExchange` read client messages below tonic's codec: bytes
/// that are no FlightData, a message over the limit and a field that claims more
/// than its message each end the call with their status, nothing is written,
/// and the server serves on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_messages_that_do_not_decode_are_refused_and_write_nothing() {
    let mut config = test_config();
    config.max_message_bytes = 1 << 20;
    let server = start_with(config).await;
    let mut client = client(&server).await;
    let metadata = client.metadata().clone();
    let mut grpc = raw_client(&server).await;
    // A real first message: the descriptor of table `t` and its schema.
    let batch = typed_batch(0, 10);
    let mut encoded: Vec<arrow_flight::FlightData> = FlightDataEncoderBuilder::new()
        .with_flight_descriptor(Some(FlightDescriptor::new_path(vec!["t".into()])))
        .build(futures::stream::iter(vec![Ok(batch)]))
        .map(Result::unwrap)
        .collect()
        .await;
    let first = prost::Message::encode_to_vec(&encoded.remove(0));
    let one_batch = prost::Message::encode_to_vec(&encoded.remove(0));
    let mut lying_field = one_batch.clone();
    lying_field.extend_from_slice(&[(2 << 3) | 2, 0x7f]); // a header of 127 bytes, none follow
    for method in ["DoPut", "DoExchange"] {
        let path: http::uri::PathAndQuery =
            format!("/arrow.flight.protocol.FlightService/{method}")
                .parse()
                .unwrap();
        for (what, next, code) in [
            (
                "bytes that are no FlightData",
                vec![0xff; 9],
                Code::InvalidArgument,
            ),
            (
                "a message over the limit",
                vec![0; (1 << 20) + 1],
                Code::OutOfRange,
            ),
            (
                "a field longer than its message",
                lying_field.clone(),
                Code::InvalidArgument,
            ),
        ] {
            // A put is refused after it began; an exchange at its first message.
            let messages = match method {
                "DoPut" => vec![first.clone(), next],
                _ => vec![next],
            };
            let mut request = tonic::Request::new(futures::stream::iter(messages));
            *request.metadata_mut() = metadata.clone();
            let status = refusal(&mut grpc, request, path.clone(), what).await;
            assert_eq!(status.code(), code, "{method} with {what}: {status}");
        }
    }
    let tables = action(&mut client, "list_tables", "").await.unwrap();
    assert_eq!(tables, serde_json::json!([]), "nothing was written");
    put(&mut client, "t", vec![typed_batch(0, 10)])
        .await
        .unwrap();
    assert_eq!(scalar_i64(&mut client, "SELECT count(*) FROM t").await, 10);
    assert_idle(&mut client).await;
    server.stop().await.unwrap();
}
