//! Stateless stages on several instances, against a real server with real
//! guests: the output of one instance, in input order (or any order when asked),
//! counted in receipts and metrics; bounded by the user's extra-instance cap;
//! hostile guests that claim to be stateless stopped in every instance; a client
//! that vanishes frees them all.

mod common;

use arrow::array::{AsArray, RecordBatch};
use arrow::datatypes::Int64Type;
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::{FlightClient, FlightData, FlightDescriptor};
use common::*;
use futures::StreamExt;
use mallard_protocol::Receipt;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;

const KEY: &str = "a test key of 16+ bytes";
const DEADLINE: Duration = Duration::from_millis(500);

/// `pseudonymize` over `carrier` on at most `instances`, sandboxed or native,
/// in `order`.
fn pseudonymize(instances: u32, sandbox: &str, order: &str) -> String {
    format!(
        r#"{{"exchanger": "pseudonymize", "sandbox": "{sandbox}", "instances": {instances},
            "order": "{order}", "params": {{"column": "carrier", "key": "{KEY}"}}}}"#
    )
}

/// (flight_id, carrier) of every row, in output order.
fn ids_and_carriers(batches: &[RecordBatch]) -> Vec<(i64, String)> {
    batches
        .iter()
        .flat_map(|b| {
            let ids = b
                .column_by_name("flight_id")
                .unwrap()
                .as_primitive::<Int64Type>();
            let carriers = b.column_by_name("carrier").unwrap().as_string::<i32>();
            (0..b.num_rows())
                .map(|i| (ids.value(i), carriers.value(i).to_owned()))
                .collect::<Vec<_>>()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stateless_stage_on_two_instances_gives_the_output_of_one_in_order() {
    let server = start().await;
    let mut client = client(&server).await;
    upload(&mut client, "pseudonymize").await;
    let input = flights(120_000, 4_000);
    let (one, r1) =
        exchange_with_receipt(&mut client, &pseudonymize(1, "on", "input"), input.clone()).await;
    let (two, r2) =
        exchange_with_receipt(&mut client, &pseudonymize(2, "on", "input"), input.clone()).await;
    let (native, r3) =
        exchange_with_receipt(&mut client, &pseudonymize(2, "off", "input"), input.clone()).await;
    let instances = |r: &Receipt| r.stages[0].instances;
    assert_eq!((instances(&r1), instances(&r2), instances(&r3)), (1, 2, 2));
    assert_eq!(one, two, "two instances, batch for batch the output of one");
    assert_eq!(two, native, "and of the native build");
    let stage = &r2.stages[0];
    assert_eq!((stage.rows_in, stage.rows_out), (120_000, 120_000));
    assert_eq!((stage.batches_in, stage.batches_out), (30, 30));
    assert!(
        stage.peak_memory_bytes > r1.stages[0].peak_memory_bytes,
        "both instances' memory: {stage:?}"
    );
    let first = &ids_and_carriers(&one)[0];
    assert_eq!(first.1.len(), 32, "a pseudonym, not {:?}", first.1);
    let listed = listed_exchanger(&mut client, "admin/pseudonymize").await;
    assert_eq!(
        listed["versions"][0]["metrics"]["rows_in"], 240_000,
        "{listed}"
    );
    assert_idle(&mut client).await;
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn any_order_delivers_every_row_exactly_once() {
    let server = start().await;
    let mut client = client(&server).await;
    upload(&mut client, "pseudonymize").await;
    let input = flights(60_000, 2_000);
    let (ordered, _) =
        exchange_with_receipt(&mut client, &pseudonymize(2, "on", "input"), input.clone()).await;
    let (any, receipt) =
        exchange_with_receipt(&mut client, &pseudonymize(2, "on", "any"), input).await;
    assert_eq!(receipt.stages[0].instances, 2);
    let mut any = ids_and_carriers(&any);
    any.sort();
    assert_eq!(any, ids_and_carriers(&ordered), "the same rows, each once");
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stateful_dictionary_and_contract_0_1_stages_stay_on_one_instance() {
    let server = start().await;
    let mut client = client(&server).await;
    for guest in ["running_totals", "delay_classifier"] {
        upload(&mut client, guest).await;
    }
    let input = flights(20_000, 2_000);
    for (command, why) in [
        (
            r#"{"exchanger": "running_totals", "params": {"key": "origin", "value": "passengers"}}"#,
            "stateful",
        ),
        (r#"{"exchanger": "classify_delays"}"#, "dictionary output"),
        (
            r#"{"exchanger": "classify_delays", "params": {"summary": "true"}}"#,
            "stateful when summarising",
        ),
        (
            r#"{"exchanger": "add_processed", "sandbox": "off", "instances": 1}"#,
            "asked for one",
        ),
    ] {
        let (_, receipt) = exchange_with_receipt(&mut client, command, input.clone()).await;
        assert_eq!(receipt.stages[0].instances, 1, "{why}: {receipt:?}");
    }
    // A 0.1 component cannot say it is stateless.
    action(&mut client, "upload_exchanger", component_0_1())
        .await
        .unwrap();
    let (out, receipt) = exchange_with_receipt(&mut client, "add_processed", input).await;
    assert_eq!(receipt.stages[0].instances, 1, "{receipt:?}");
    assert_eq!(rows(&out), 20_000);
    server.stop().await.unwrap();
}

/// A `do_exchange` held open: the input sender (schema and first batch sent),
/// and the output, whose schema message has been read (so every instance is open).
async fn open_exchange(
    client: &mut FlightClient,
    command: &str,
    input: &[RecordBatch],
) -> (
    mpsc::Sender<FlightData>,
    tonic::Streaming<FlightData>,
    Vec<FlightData>,
) {
    let owned: Vec<RecordBatch> = input.to_owned();
    let mut messages: Vec<FlightData> = FlightDataEncoderBuilder::new()
        .with_schema(input[0].schema())
        .with_flight_descriptor(Some(FlightDescriptor::new_cmd(command.to_owned())))
        .build(futures::stream::iter(owned.into_iter().map(Ok)))
        .map(|d| d.unwrap())
        .collect()
        .await;
    let rest = messages.split_off(2);
    let (tx, rx) = mpsc::channel(8);
    for m in messages {
        tx.send(m).await.unwrap();
    }
    let mut output = exchange_raw(client, ReceiverStream::new(rx)).await;
    let schema = output.message().await.unwrap().expect("the output schema");
    assert!(!schema.data_header.is_empty());
    (tx, output, rest)
}

/// Sends the rest of a held exchange's input, ends it, and returns its receipt.
async fn finish_exchange(
    tx: mpsc::Sender<FlightData>,
    mut output: tonic::Streaming<FlightData>,
    rest: Vec<FlightData>,
) -> Receipt {
    let sending = tokio::spawn(async move {
        for m in rest {
            if tx.send(m).await.is_err() {
                break;
            }
        }
    });
    while output.message().await.unwrap().is_some() {}
    sending.await.unwrap();
    let trailers = output.trailers().await.unwrap().expect("trailers");
    let bytes = trailers
        .get_bin(mallard_protocol::receipt::TRAILER)
        .and_then(|v| v.to_bytes().ok())
        .expect("a receipt");
    Receipt::from_json(&bytes).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_client_that_waits_for_each_output_is_answered_batch_by_batch() {
    let server = start().await;
    let mut client = client(&server).await;
    upload(&mut client, "pseudonymize").await;
    let input = flights(4_000, 1_000);
    let (tx, mut held, rest) =
        open_exchange(&mut client, &pseudonymize(2, "on", "input"), &input).await;
    // The first batch went with the schema; its output comes before any other input.
    let mut answered = 0;
    let mut rest = rest.into_iter();
    loop {
        let message = within(Duration::from_secs(5), held.message())
            .await
            .unwrap()
            .expect("an output batch");
        assert!(!message.data_body.is_empty(), "a record batch");
        answered += 1;
        match rest.next() {
            Some(next) => tx.send(next).await.unwrap(),
            None => break,
        }
    }
    assert_eq!(
        answered, 4,
        "one output per batch, each before the next input"
    );
    drop(tx);
    while held.message().await.unwrap().is_some() {}
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_extra_instance_cap_gives_fewer_instances_never_a_refusal() {
    let mut config = config_with_accounts();
    config.exchange_instances = 3;
    config.max_extra_instances_per_user = 2;
    let server = start_with(config).await;
    let mut alice = login(&server, ALICE).await;
    let mut bob = login(&server, BOB).await;
    let native = pseudonymize(3, "off", "input");
    let input = flights(8_000, 1_000);

    // Alice's first stream takes both her extra instances and holds them.
    let (tx, held, rest) = open_exchange(&mut alice, &native, &input).await;
    let live = listed_exchanger(&mut alice, "pseudonymize").await["versions"][0]["metrics"]["live"]
        .clone();
    assert_eq!(live, 3, "one stream on three instances");
    // Her second runs on one, at the cap; Bob's cap is his own.
    let (out, receipt) = exchange_with_receipt(&mut alice, &native, input.clone()).await;
    assert_eq!((receipt.stages[0].instances, rows(&out)), (1, 8_000));
    let (_, receipt) = exchange_with_receipt(&mut bob, &native, input.clone()).await;
    assert_eq!(receipt.stages[0].instances, 3);
    let first = finish_exchange(tx, held, rest).await;
    assert_eq!(
        (first.stages[0].instances, first.stages[0].rows_out),
        (3, 8_000)
    );
    // Given back: her next stream has them again.
    let (_, receipt) = exchange_with_receipt(&mut alice, &native, input.clone()).await;
    assert_eq!(receipt.stages[0].instances, 3);

    // A client that vanishes mid-stream frees every instance and slot.
    upload(&mut alice, "pseudonymize").await;
    let (tx, held, _rest) =
        open_exchange(&mut alice, &pseudonymize(3, "on", "input"), &input).await;
    drop((tx, held));
    assert_idle(&mut alice).await;
    let (_, receipt) =
        exchange_with_receipt(&mut alice, &pseudonymize(3, "on", "input"), input).await;
    assert_eq!(
        receipt.stages[0].instances, 3,
        "the vanished stream's extra slots came back"
    );
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hostile_guests_claiming_statelessness_are_stopped_in_every_instance() {
    let mut config = test_config();
    config.limits.call_timeout = DEADLINE;
    config.limits.max_memory_bytes = 64 << 20;
    config.quotas.guest_memory_per_user = 160 << 20;
    let server = start_with(config).await;
    let mut client = client(&server).await;
    for guest in [
        "hostile_endless_loop",
        "hostile_memory_bomb",
        "hostile_panic",
    ] {
        upload(&mut client, guest).await;
    }
    let limit = DEADLINE * 3 + Duration::from_millis(1500);
    for (guest, code, needle) in [
        ("hostile_endless_loop", Code::DeadlineExceeded, "deadline"),
        ("hostile_memory_bomb", Code::ResourceExhausted, "memory"),
        ("hostile_panic", Code::Aborted, "hostile_panic gives up"),
    ] {
        let command = format!(r#"{{"exchanger": "{guest}", "instances": 2}}"#);
        // Eight batches: both instances are busy when the first fails.
        let input = flights(8_000, 1_000);
        expect_hostile_contained(&server, guest, &command, input, (code, needle), limit).await;
        assert_idle(&mut client).await;
    }
    let health = action(&mut client, "healthcheck", "").await.unwrap();
    assert_eq!(health["live"]["guest_memory_bytes"], 0, "{health}");
    server.stop().await.unwrap();
}
