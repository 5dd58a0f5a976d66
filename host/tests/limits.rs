//! Server-wide limits: query timeout, exchanges per user, and refusing the
//! development credentials on a non-loopback address.

mod common;

use arrow_flight::FlightDescriptor;
use arrow_flight::encode::FlightDataEncoderBuilder;
use common::*;
use futures::StreamExt;
use std::time::{Duration, Instant};
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runaway_query_is_interrupted_at_the_query_timeout() {
    let mut config = test_config();
    config.db.query_timeout = Duration::from_millis(300);
    let server = start_with(config).await;
    let mut client = client(&server).await;
    let started = Instant::now();
    let err = query(
        &mut client,
        "SELECT sum(hash(i)) FROM range(100000000000) t(i)",
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(
        scalar_i64(&mut client, "SELECT 42").await,
        42,
        "the server still serves"
    );
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exchanges_per_user_are_capped() {
    let mut config = test_config();
    config.max_exchanges_per_user = 1;
    let server = start_with(config).await;
    let mut first = client(&server).await;
    // Hold one exchange open: schema and one batch sent, input not finished.
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    let input = tokio_stream::wrappers::ReceiverStream::new(rx).map(Ok);
    let data = FlightDataEncoderBuilder::new()
        .with_flight_descriptor(Some(FlightDescriptor::new_cmd(
            r#"{"exchanger": "add_processed", "sandbox": "off"}"#,
        )))
        .build(input);
    tx.send(flights(10, 10).remove(0)).await.unwrap();
    let mut open = first.do_exchange(data).await.unwrap();
    assert_eq!(open.next().await.unwrap().unwrap().num_rows(), 10);

    let mut second = common::client(&server).await;
    let err = exchange(
        &mut second,
        r#"{"exchanger": "add_processed", "sandbox": "off"}"#,
        flights(10, 10),
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err}");
    drop(tx);
    while open.next().await.is_some() {}
    // The slot is free again once the first stream ends.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let out = exchange(
        &mut second,
        r#"{"exchanger": "add_processed", "sandbox": "off"}"#,
        flights(10, 10),
    )
    .await
    .unwrap();
    assert_eq!(rows(&out), 10);
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn development_credentials_are_refused_off_loopback() {
    let mut config = test_config();
    config.listen = "0.0.0.0:0".parse().unwrap();
    let err = mallard::start(config.clone()).await.err().expect("refused");
    assert_eq!(err.kind(), mallard::ErrorKind::PermissionDenied, "{err}");
    config.allow_default_credentials = true;
    let server = mallard::start(config).await.expect("explicitly allowed");
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stored_exchanger_bytes_are_capped() {
    let mut config = test_config();
    config.quotas.stored_bytes_per_user = 3 << 20;
    let server = start_with(config).await;
    let mut client = client(&server).await;
    upload(&mut client, "add_processed").await;
    // The same bytes again are the same version: nothing more is stored.
    upload(&mut client, "add_processed").await;
    let err = action(&mut client, "upload_exchanger", component("running_totals"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err}");
    assert!(
        err.message().contains("--exchanger-storage-per-user-mib"),
        "{err}"
    );
    action(&mut client, "remove_exchanger", "add_processed")
        .await
        .unwrap();
    upload(&mut client, "running_totals").await;
    server.stop().await.unwrap();
}
