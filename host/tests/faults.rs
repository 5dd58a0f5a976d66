//! Clients that vanish mid-stream: a cancelled exchange interrupts its guest and
//! frees its slot at once; an abandoned do_get stops its query; the server serves
//! on, and afterwards holds no query, exchange or wasm instance.

mod common;

use arrow_flight::FlightDescriptor;
use arrow_flight::encode::FlightDataEncoderBuilder;
use common::*;
use futures::StreamExt;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cancelled_exchange_interrupts_its_guest() {
    let mut config = test_config();
    config.limits.call_timeout = Duration::from_secs(60);
    config.max_exchanges_per_user = 1;
    let server = start_with(config).await;
    let mut client = client(&server).await;
    upload(&mut client, "hostile_endless_loop").await;

    // Start an exchange whose guest spins (deadline 60 s), then walk away.
    let url = server.url();
    let call = tokio::spawn(async move {
        let mut c = mallard::client::connect(&url, "admin", "password123")
            .await
            .unwrap();
        let data = FlightDataEncoderBuilder::new()
            .with_flight_descriptor(Some(FlightDescriptor::new_cmd("hostile_endless_loop")))
            .build(futures::stream::iter(flights(100, 100).into_iter().map(Ok)));
        let mut out = c.do_exchange(data).await.unwrap();
        while out.next().await.is_some() {}
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    call.abort();
    let _ = call.await;

    // The guest must be interrupted (freeing the user's only slot) long before its
    // 60 s deadline.
    let started = Instant::now();
    loop {
        match exchange(
            &mut client,
            r#"{"exchanger": "add_processed", "sandbox": "off"}"#,
            flights(10, 10),
        )
        .await
        {
            Ok(out) => {
                assert_eq!(rows(&out), 10);
                break;
            }
            Err(e)
                if e.code() == tonic::Code::ResourceExhausted
                    && started.elapsed() < Duration::from_secs(5) =>
            {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("slot not freed after {:?}: {e}", started.elapsed()),
        }
    }
    assert_idle(&mut client).await;
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abandoned_get_stops_and_the_server_serves_on() {
    let server = start().await;
    let mut client = client(&server).await;
    for _ in 0..5 {
        let mut stream = client
            .do_get(arrow_flight::Ticket::new(
                "SELECT * FROM range(1000000000) t(i)",
            ))
            .await
            .unwrap();
        let first = stream.next().await.unwrap().unwrap();
        assert!(first.num_rows() > 0);
        drop(stream);
    }
    let started = Instant::now();
    assert_eq!(scalar_i64(&mut client, "SELECT 42").await, 42);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "abandoned queries slowed the server"
    );
    assert_idle(&mut client).await;
    server.stop().await.unwrap();
}
