//! Sandboxed exchangers: built from `guest-exchangers/`, uploaded over do_action,
//! run through do_exchange against a real server.

mod common;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use arrow::datatypes::Int64Type;
use arrow_flight::FlightDescriptor;
use arrow_flight::encode::FlightDataEncoderBuilder;
use common::*;
use futures::StreamExt;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tonic::Code;

const DEADLINE: Duration = Duration::from_millis(500);

async fn sandboxed_server() -> mallard::RunningServer {
    let mut config = test_config();
    config.limits.call_timeout = DEADLINE;
    config.limits.max_memory_bytes = 256 << 20;
    start_with(config).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn add_processed_over_a_million_flights_rows_matches_in_and_out_of_the_sandbox() {
    let server = sandboxed_server().await;
    let mut client = client(&server).await;
    assert_eq!(upload(&mut client, "add_processed").await, "add_processed");
    let input = flights(1_000_000, 131_072);
    let wasm = within(
        Duration::from_secs(120),
        exchange(&mut client, "add_processed", input.clone()),
    )
    .await
    .unwrap();
    let native = exchange(
        &mut client,
        r#"{"exchanger": "add_processed", "sandbox": "off"}"#,
        input.clone(),
    )
    .await
    .unwrap();
    assert_eq!(rows(&wasm), 1_000_000);
    for out in [&wasm, &native] {
        let mut offset = 0;
        for batch in out.iter() {
            let processed = batch.column_by_name("processed").unwrap().as_boolean();
            assert_eq!(processed.null_count(), 0);
            assert_eq!(processed.true_count(), batch.num_rows());
            let expected = mallard_flights::batch(offset as u64, batch.num_rows());
            for (i, column) in expected.columns().iter().enumerate() {
                assert_eq!(
                    batch.column(i).to_data(),
                    column.to_data(),
                    "column {i} at row {offset}"
                );
            }
            offset += batch.num_rows();
        }
    }
    assert_eq!(wasm, native, "sandbox on and off give the same batches");
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn running_totals_carries_state_across_batches() {
    let server = sandboxed_server().await;
    let mut client = client(&server).await;
    upload(&mut client, "running_totals").await;
    let input = flights(50_000, 7_000);
    let command =
        r#"{"exchanger": "running_totals", "params": {"value": "passengers", "key": "origin"}}"#;
    let out = exchange(&mut client, command, input.clone()).await.unwrap();
    let mut reference: HashMap<String, i64> = HashMap::new();
    let mut checked = 0;
    for (batch, source) in out.iter().zip(input.iter()) {
        let totals = batch
            .column_by_name("running_total")
            .unwrap()
            .as_primitive::<Int64Type>();
        let origins = source.column_by_name("origin").unwrap().as_string::<i32>();
        let passengers = source
            .column_by_name("passengers")
            .unwrap()
            .as_primitive::<arrow::datatypes::Int32Type>();
        for row in 0..source.num_rows() {
            let total = reference.entry(origins.value(row).to_owned()).or_default();
            if passengers.is_valid(row) {
                *total += passengers.value(row) as i64;
            }
            assert_eq!(totals.value(row), *total, "row {row}");
            checked += 1;
        }
    }
    assert_eq!(checked, 50_000);
    let native_command = r#"{"exchanger": "running_totals", "params": {"value": "passengers", "key": "origin"}, "sandbox": "off"}"#;
    let native = exchange(&mut client, native_command, input.clone())
        .await
        .unwrap();
    assert_eq!(out, native);
    let err = exchange(
        &mut client,
        r#"{"exchanger": "running_totals", "params": {"value": "nope"}}"#,
        input[..1].to_vec(),
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err}");
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn classify_delays_summarises_routes() {
    let server = sandboxed_server().await;
    let mut client = client(&server).await;
    upload(&mut client, "delay_classifier").await;
    let input = flights(20_000, 4_096);
    let classes = exchange(&mut client, "classify_delays", input.clone())
        .await
        .unwrap();
    assert_eq!(rows(&classes), 20_000);
    let summary = exchange(
        &mut client,
        r#"{"exchanger": "classify_delays", "params": {"summary": "true"}}"#,
        input,
    )
    .await
    .unwrap();
    let flights_total: i64 = summary
        .iter()
        .map(|b| {
            arrow::compute::sum(
                b.column_by_name("flights")
                    .unwrap()
                    .as_primitive::<Int64Type>(),
            )
            .unwrap()
        })
        .sum();
    assert_eq!(flights_total, 20_000);
    server.stop().await.unwrap();
}

/// Runs a hostile guest on one 1,000-row batch and checks its status, that it ends
/// within two call deadlines and 1.5 s, and that the server keeps answering.
async fn expect_contained(
    server: &mallard::RunningServer,
    command: &str,
    code: Code,
    needle: &str,
) {
    let limit = DEADLINE * 2 + Duration::from_millis(1500);
    let input = flights(1000, 1000);
    expect_hostile_contained(server, command, command, input, (code, needle), limit).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hostile_guests_end_with_precise_statuses_and_the_server_keeps_serving() {
    let server = sandboxed_server().await;
    let mut client = client(&server).await;
    for guest in [
        "hostile_endless_loop",
        "hostile_memory_bomb",
        "hostile_deep_recursion",
        "hostile_panic",
        "hostile_bad_ipc",
        "hostile_schema_drift",
        "hostile_wasi_probe",
    ] {
        upload(&mut client, guest).await;
    }
    expect_contained(
        &server,
        "hostile_endless_loop",
        Code::DeadlineExceeded,
        "deadline",
    )
    .await;
    expect_contained(
        &server,
        "hostile_memory_bomb",
        Code::ResourceExhausted,
        "memory limit",
    )
    .await;
    expect_contained(
        &server,
        "hostile_deep_recursion",
        Code::ResourceExhausted,
        "stack",
    )
    .await;
    expect_contained(
        &server,
        "hostile_panic",
        Code::Aborted,
        "hostile_panic gives up",
    )
    .await;
    expect_contained(
        &server,
        "hostile_bad_ipc",
        Code::InvalidArgument,
        "invalid output",
    )
    .await;
    expect_contained(
        &server,
        "hostile_schema_drift",
        Code::InvalidArgument,
        "invalid output",
    )
    .await;
    expect_contained(
        &server,
        r#"{"exchanger": "hostile_wasi_probe", "params": {"probe": "sleep"}}"#,
        Code::PermissionDenied,
        "capability denied",
    )
    .await;
    for probe in ["read_file", "write_file", "env", "connect"] {
        let command =
            format!(r#"{{"exchanger": "hostile_wasi_probe", "params": {{"probe": "{probe}"}}}}"#);
        let out: Vec<RecordBatch> = exchange(&mut client, &command, flights(10, 10))
            .await
            .unwrap();
        let outcome = out[0]
            .column_by_name("outcome")
            .unwrap()
            .as_string::<i32>()
            .value(0)
            .to_owned();
        assert!(outcome.starts_with("denied"), "{probe}: {outcome}");
    }
    // Uploaded code never runs natively.
    let err = exchange(
        &mut client,
        r#"{"exchanger": "hostile_panic", "sandbox": "off"}"#,
        flights(10, 10),
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert_eq!(scalar_i64(&mut client, "SELECT 1").await, 1);
    // The spinning guest's CPU time was metered (it ran until its deadline).
    let spun = listed_exchanger(&mut client, "admin/hostile_endless_loop").await["cpu_ms"]
        .as_f64()
        .unwrap();
    assert!(spun >= 100.0, "endless loop metered at {spun} ms");
    // Every trapped or refused guest released its instance and its slot.
    assert_idle(&mut client).await;
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_uploads_are_invalid_arguments_with_clear_messages() {
    let mut config = test_config();
    config.limits.max_component_bytes = 4 << 20;
    let server = start_with(config).await;
    let mut client = client(&server).await;
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "garbage",
            b"definitely not wasm".to_vec(),
            "not a WebAssembly file",
        ),
        (
            "core module",
            vec![0, 97, 115, 109, 1, 0, 0, 0],
            "core WebAssembly module",
        ),
        (
            "oversized",
            {
                let mut v = component("add_processed");
                v.resize(5 << 20, 0);
                v
            },
            "limit",
        ),
        (
            "truncated component",
            component("add_processed")[..4096].to_vec(),
            "invalid component",
        ),
        (
            "another world",
            wasi_command_component(),
            "mallard:exchanger",
        ),
    ];
    for (what, bytes, needle) in cases {
        let err = action(&mut client, "upload_exchanger", bytes)
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{what}: {err}");
        assert!(err.message().contains(needle), "{what}: {err}");
    }
    let err = exchange(&mut client, "nobody", flights(1, 1))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let err = exchange(&mut client, "{not json", flights(1, 1))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    server.stop().await.unwrap();
}

/// A component of a different world: a guest's own .wasm with its export renamed
/// is awkward to make, so use the smallest WASI command component: the wasi-probe
/// guest is an exchanger; instead build a component that exports nothing we know by
/// wrapping an empty core module as a component by hand.
fn wasi_command_component() -> Vec<u8> {
    // (component (core module)) — a valid component exporting nothing.
    vec![
        0x00, 0x61, 0x73, 0x6d, 0x0d, 0x00, 0x01, 0x00, // component header
        0x01, 0x08, // core module section, 8 bytes
        0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00, // empty core module
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn exchangers_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config();
    config.data_dir = Some(dir.path().to_owned());
    let server = start_with(config.clone()).await;
    let mut client = client(&server).await;
    let uploaded = action(&mut client, "upload_exchanger", component("add_processed"))
        .await
        .unwrap();
    assert_eq!(uploaded["name"], "add_processed");
    assert_eq!(uploaded["sha256"].as_str().unwrap().len(), 64);
    server.stop().await.unwrap();

    let server = start_with(config).await;
    let mut client = common::client(&server).await;
    let entry = listed_exchanger(&mut client, "admin/add_processed").await;
    assert_eq!(entry["versions"][0]["sha256"], uploaded["sha256"]);
    let out = exchange(&mut client, "add_processed", flights(1000, 500))
        .await
        .unwrap();
    assert_eq!(rows(&out), 1000);
    let removed = action(&mut client, "remove_exchanger", "add_processed")
        .await
        .unwrap();
    assert_eq!(removed["removed"].as_array().unwrap().len(), 1, "{removed}");
    let err = exchange(&mut client, "add_processed", flights(10, 10))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    server.stop().await.unwrap();
}

/// Exchanges one string column of `rows` copies of "abcd" through `command`, with
/// `corrupt` applied to the record batch's IPC body; returns the rows that came back.
async fn exchange_corrupted(
    client: &mut arrow_flight::FlightClient,
    command: &str,
    rows: usize,
    corrupt: impl Fn(&mut Vec<u8>),
) -> Result<usize, tonic::Status> {
    use arrow::array::StringArray;
    use futures::TryStreamExt;
    let names: ArrayRef = Arc::new(StringArray::from(vec!["abcd"; rows]));
    let batch = RecordBatch::try_from_iter([("name", names)]).unwrap();
    let mut messages: Vec<_> = FlightDataEncoderBuilder::new()
        .with_flight_descriptor(Some(FlightDescriptor::new_cmd(command.to_owned())))
        .build(futures::stream::iter([Ok(batch)]))
        .try_collect()
        .await
        .unwrap();
    let data = messages
        .iter_mut()
        .find(|m| !m.data_body.is_empty())
        .unwrap();
    let mut body = data.data_body.to_vec();
    corrupt(&mut body);
    data.data_body = body.into();
    match client
        .do_exchange(futures::stream::iter(messages.into_iter().map(Ok)))
        .await
    {
        Ok(output) => drain(output).await,
        Err(e) => Err(to_status(e)),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn malformed_exchange_input_is_the_clients_error_in_and_out_of_the_sandbox() {
    let server = sandboxed_server().await;
    let mut client = client(&server).await;
    upload(&mut client, "add_processed").await;
    upload(&mut client, "pseudonymize").await;
    let rows = 1000;
    let invalid_utf8 = |body: &mut Vec<u8>| {
        let at = body.windows(4).position(|w| w == b"abcd").unwrap();
        body[at + 1] = 0xFF;
    };
    // Offsets come first in the body (no validity buffer): make the second one
    // point far past the values.
    let wild_offset = |body: &mut Vec<u8>| {
        assert_eq!(body[4..8], 4i32.to_le_bytes());
        body[4..8].copy_from_slice(&i32::MAX.to_le_bytes());
    };
    // A body shorter than the header's buffers: the header alone (all an
    // exchanger reading on demand is sent) looks fine.
    let truncated = |body: &mut Vec<u8>| body.truncate(8);
    let corruptions = [
        ("invalid UTF-8", invalid_utf8 as fn(&mut Vec<u8>)),
        ("an offset past the values", wild_offset),
        ("a body cut short", truncated),
    ];
    let key = "a key of sixteen+ bytes";
    let pseudonymize = |sandbox: &str| {
        format!(
            r#"{{"exchanger": "pseudonymize", "sandbox": "{sandbox}", "params": {{"column": "name", "key": "{key}"}}}}"#
        )
    };
    for (what, corrupt) in corruptions {
        // add_processed reads no column (the host finds the fault when it passes
        // them through); pseudonymize reads the corrupt one on demand.
        for command in [
            "add_processed".to_owned(),
            r#"{"exchanger": "add_processed", "sandbox": "off"}"#.to_owned(),
            pseudonymize("on"),
            pseudonymize("off"),
        ] {
            let command = command.as_str();
            let result = exchange_corrupted(&mut client, command, rows, corrupt).await;
            let err = result.expect_err(what);
            assert_eq!(
                err.code(),
                Code::InvalidArgument,
                "{what} via {command}: {err}"
            );
            assert!(
                err.message().contains("exchange input at batch 0"),
                "{what} via {command}: {err}"
            );
        }
    }
    let intact = exchange_corrupted(&mut client, "add_processed", rows, |_| {}).await;
    assert_eq!(intact.unwrap(), rows);
    let intact = exchange_corrupted(&mut client, &pseudonymize("on"), rows, |_| {}).await;
    assert_eq!(intact.unwrap(), rows);
    assert_idle(&mut client).await;
    server.stop().await.unwrap();
}

/// pyarrow's pattern: writes the whole input (1M flights rows, ~100 MB each way:
/// far past the HTTP/2 windows and the input channel) through `add_processed`, and
/// only then reads the output. Returns whether all input left the client within
/// `wait`, then the output rows (or the status the stream ended with).
async fn add_processed_writing_first(
    client: &mut arrow_flight::FlightClient,
    wait: Duration,
) -> (bool, Result<usize, tonic::Status>) {
    let input = flights(1_000_000, 131_072);
    let schema = input[0].schema();
    let (sent_tx, sent_rx) = tokio::sync::oneshot::channel();
    let mut sent_tx = Some(sent_tx);
    let end = futures::stream::poll_fn(move |_| {
        if let Some(tx) = sent_tx.take() {
            let _ = tx.send(());
        }
        std::task::Poll::Ready(None)
    });
    let batches = futures::stream::iter(input.into_iter().map(Ok)).chain(end);
    let data = FlightDataEncoderBuilder::new()
        .with_schema(schema)
        .with_flight_descriptor(Some(FlightDescriptor::new_cmd("add_processed")))
        .build(batches);
    let output = client.do_exchange(data).await.map_err(to_status).unwrap();
    let all_sent = tokio::time::timeout(wait, sent_rx).await.is_ok();
    (all_sent, drain(output).await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_client_that_writes_everything_before_reading_is_served_from_the_output_buffer() {
    let server = sandboxed_server().await;
    let mut client = client(&server).await;
    upload(&mut client, "add_processed").await;
    let (all_sent, output) = within(
        Duration::from_secs(120),
        add_processed_writing_first(&mut client, Duration::from_secs(60)),
    )
    .await;
    assert!(
        all_sent,
        "the server stopped taking input it could not answer yet"
    );
    assert_eq!(output.unwrap(), 1_000_000);
    assert_idle(&mut client).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_exchange_whose_output_is_never_read_fails_with_resource_exhausted_instead_of_hanging() {
    let mut config = test_config();
    config.exchange_output = mallard_exchange::output::OutputBudget {
        bytes: 1 << 20,
        stall: Duration::from_secs(1),
    };
    let server = start_with(config).await;
    let mut client = client(&server).await;
    upload(&mut client, "add_processed").await;
    let started = Instant::now();
    let (_, output) = within(
        Duration::from_secs(60),
        add_processed_writing_first(&mut client, Duration::from_secs(5)),
    )
    .await;
    let status = output.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(
        status.message().contains("--exchange-output-buffer-mib"),
        "{status:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(30));
    assert_idle(&mut client).await;
    // The server keeps serving, and a reading client is unaffected by the small buffer.
    let out = exchange(&mut client, "add_processed", flights(300_000, 65_536))
        .await
        .unwrap();
    assert_eq!(rows(&out), 300_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contract_0_1_and_0_2_components_run_side_by_side_with_equal_output() {
    let server = sandboxed_server().await;
    let mut admin = client(&server).await;
    let old = action(&mut admin, "upload_exchanger", component_0_1())
        .await
        .unwrap();
    assert_eq!(old["wit"], "mallard:exchanger/exchanger@0.1.0", "{old}");
    let new = action(&mut admin, "upload_exchanger", component("add_processed"))
        .await
        .unwrap();
    assert_eq!(new["wit"], "mallard:exchanger/exchanger@0.2.0", "{new}");
    assert_ne!(old["pinned"], new["pinned"], "two versions of one name");

    let input = flights(30_000, 4_096);
    let mut outputs = Vec::new();
    for command in [
        format!(r#"{{"exchanger": {}}}"#, old["pinned"]),
        format!(r#"{{"exchanger": {}}}"#, new["pinned"]),
        r#"{"exchanger": "shared/add_processed", "sandbox": "off"}"#.to_owned(),
    ] {
        let out = exchange(&mut admin, &command, input.clone()).await.unwrap();
        let schema = out[0].schema();
        outputs.push(arrow::compute::concat_batches(&schema, &out).unwrap());
    }
    assert_eq!(outputs[0].num_rows(), 30_000);
    assert_eq!(outputs[0], outputs[1], "0.1 and 0.2 agree");
    assert_eq!(
        outputs[1], outputs[2],
        "the sandbox agrees with the native build"
    );
    server.stop().await.unwrap();
}
