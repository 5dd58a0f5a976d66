//! Exchangers for every user: namespaces, versions and pins, quotas, the upload
//! report and its dry run, and the metrics (`list_exchangers` and Prometheus),
//! with three accounts against a real server.

mod common;

use arrow::array::RecordBatch;
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::{FlightClient, FlightDescriptor};
use common::*;
use futures::StreamExt;
use serde_json::Value;
use std::time::Duration;
use tonic::Code;

/// The same component with a custom section appended: another sha256, the
/// same name and version (a rebuild, as far as the server can tell).
fn variant(file_stem: &str, tag: u8) -> Vec<u8> {
    let mut bytes = component(file_stem);
    let name = b"mallard-test-variant";
    bytes.push(0); // custom section id
    bytes.push((1 + name.len() + 1) as u8); // section size (one LEB byte)
    bytes.push(name.len() as u8);
    bytes.extend_from_slice(name);
    bytes.push(tag);
    bytes
}

fn listed<'a>(listing: &'a Value, exchanger: &str) -> Option<&'a Value> {
    listing
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["exchanger"] == exchanger)
}

fn calls_of(entry: &Value) -> Vec<u64> {
    entry["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["metrics"]["calls"].as_u64().unwrap())
        .collect()
}

async fn run(client: &mut FlightClient, exchanger: &str) -> Result<usize, tonic::Status> {
    exchange(client, exchanger, flights(1000, 500))
        .await
        .map(|out| rows(&out))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_user_owns_a_namespace_and_admins_share() {
    let server = start_with(config_with_accounts()).await;
    let mut admin = client(&server).await;
    let mut alice = login(&server, ALICE).await;
    let mut bob = login(&server, BOB).await;
    let mut rita = login(&server, RITA).await;

    let report = action(&mut alice, "upload_exchanger", component("add_processed"))
        .await
        .unwrap();
    assert_eq!(report["exchanger"], "alice/add_processed");
    assert_eq!(report["owner"], "alice");

    // Bob sees nothing of alice's: not in his listing, and NotFound by name,
    // exactly as a name that does not exist.
    let listing = action(&mut bob, "list_exchangers", "").await.unwrap();
    assert!(
        listed(&listing, "alice/add_processed").is_none(),
        "{listing}"
    );
    let hidden = run(&mut bob, "alice/add_processed").await.unwrap_err();
    let missing = run(&mut bob, "carol/add_processed").await.unwrap_err();
    assert_eq!(hidden.code(), Code::NotFound, "{hidden}");
    assert_eq!(missing.code(), Code::NotFound);
    assert_eq!(
        hidden.message().replace("alice", "X"),
        missing.message().replace("carol", "X")
    );
    // Bare, the name finds bob's own first, then shared: no wasm there yet.
    assert_eq!(
        run(&mut bob, "add_processed").await.unwrap_err().code(),
        Code::NotFound
    );
    let removed = action(&mut bob, "remove_exchanger", "alice/add_processed").await;
    assert_eq!(removed.unwrap_err().code(), Code::NotFound);

    // Bob uploads his own of the same name; each runs their own.
    let report = action(&mut bob, "upload_exchanger", component("add_processed"))
        .await
        .unwrap();
    assert_eq!(report["exchanger"], "bob/add_processed");
    assert_eq!(run(&mut alice, "add_processed").await.unwrap(), 1000);
    assert_eq!(run(&mut alice, "add_processed").await.unwrap(), 1000);
    assert_eq!(run(&mut bob, "add_processed").await.unwrap(), 1000);
    let listing = action(&mut admin, "list_exchangers", "").await.unwrap();
    assert_eq!(
        calls_of(listed(&listing, "alice/add_processed").unwrap()),
        [2]
    );
    assert_eq!(
        calls_of(listed(&listing, "bob/add_processed").unwrap()),
        [1]
    );

    // A reader may not upload, nor may a user upload into shared or publish.
    let err = action(&mut rita, "upload_exchanger", component("running_totals"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err}");
    let shared_body = mallard_protocol::UploadRequest::encode(
        &component("running_totals"),
        &mallard_protocol::UploadOptions {
            shared: true,
            to_peers: false,
            ..Default::default()
        },
    );
    let err = action(&mut alice, "upload_exchanger", shared_body.clone())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err}");
    let err = action(&mut bob, "publish_exchanger", "bob/add_processed")
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err}");

    // An admin uploads into shared; everyone, the reader too, runs it.
    let report = action(&mut admin, "upload_exchanger", shared_body)
        .await
        .unwrap();
    assert_eq!(report["exchanger"], "running_totals");
    assert_eq!(report["owner"], "shared");
    for client in [&mut alice, &mut bob, &mut rita] {
        assert_eq!(run(client, "running_totals").await.unwrap(), 1000);
    }
    // And publishes alice's, which the reader can run by its bare name.
    assert_eq!(
        run(&mut rita, "add_processed").await.unwrap_err().code(),
        Code::NotFound
    );
    let published = action(&mut admin, "publish_exchanger", "alice/add_processed")
        .await
        .unwrap();
    assert_eq!(published["exchanger"], "add_processed");
    assert_eq!(run(&mut rita, "add_processed").await.unwrap(), 1000);
    // Shared ones can be named explicitly even where a user has their own.
    assert_eq!(run(&mut bob, "shared/add_processed").await.unwrap(), 1000);
    let listing = action(&mut rita, "list_exchangers", "").await.unwrap();
    let shared = listed(&listing, "add_processed").unwrap();
    assert_eq!(shared["owner"], "shared");
    assert_eq!(calls_of(shared), [0, 2], "native built-in, then the wasm");
    assert!(listed(&listing, "alice/add_processed").is_none());

    // Users cannot remove shared exchangers; admins can.
    let err = action(&mut bob, "remove_exchanger", "shared/running_totals")
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err}");
    action(&mut admin, "remove_exchanger", "shared/running_totals")
        .await
        .unwrap();
    assert_eq!(
        run(&mut alice, "running_totals").await.unwrap_err().code(),
        Code::NotFound
    );
    assert_idle(&mut admin).await;
    server.stop().await.unwrap();
}

/// An exchange fed by hand: batches go in when the test sends them.
struct OpenExchange {
    input: futures::channel::mpsc::UnboundedSender<Result<RecordBatch, FlightError>>,
    output: arrow_flight::decode::FlightRecordBatchStream,
}

async fn open_exchange(client: &mut FlightClient, exchanger: &str) -> OpenExchange {
    let (input, rx) = futures::channel::mpsc::unbounded();
    let data = FlightDataEncoderBuilder::new()
        .with_schema(mallard_flights::schema())
        .with_flight_descriptor(Some(FlightDescriptor::new_cmd(exchanger.to_owned())))
        .build(rx);
    let output = client.do_exchange(data).await.expect("exchange opens");
    OpenExchange { input, output }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn versions_pin_and_a_running_version_is_never_disturbed() {
    let server = start_with(config_with_accounts()).await;
    let mut alice = login(&server, ALICE).await;
    let mut alice2 = login(&server, ALICE).await;
    let v1 = action(&mut alice, "upload_exchanger", variant("add_processed", 1))
        .await
        .unwrap();
    let v1_sha = v1["sha256"].as_str().unwrap().to_owned();

    // An exchange starts on v1 and stays open.
    let mut first = open_exchange(&mut alice2, "add_processed").await;
    first
        .input
        .unbounded_send(Ok(mallard_flights::batch(0, 500)))
        .unwrap();
    let got = first.output.next().await.unwrap().unwrap();
    assert_eq!(got.num_rows(), 500);

    // v2 arrives; new exchanges run it, the open one stays on v1.
    let v2 = action(&mut alice, "upload_exchanger", variant("add_processed", 2))
        .await
        .unwrap();
    let v2_sha = v2["sha256"].as_str().unwrap().to_owned();
    assert_ne!(v1_sha, v2_sha);
    assert_eq!(run(&mut alice, "add_processed").await.unwrap(), 1000);
    // Pins: by hash (a 12-digit prefix is enough) and by declared version.
    let pinned = format!("add_processed@sha256:{}", &v1_sha[..12]);
    assert_eq!(run(&mut alice, &pinned).await.unwrap(), 1000);
    let version = v1["version"].as_str().unwrap();
    assert_eq!(
        run(&mut alice, &format!("add_processed@{version}"))
            .await
            .unwrap(),
        1000
    );
    let err = run(&mut alice, "add_processed@9.9.9").await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err}");
    let err = run(&mut alice, "alice/add_processed@9.9.9")
        .await
        .unwrap_err();
    assert!(
        err.message().contains(&v1_sha[..12]),
        "lists versions: {err}"
    );
    let listing = action(&mut alice, "list_exchangers", "").await.unwrap();
    // v1: the open exchange and the pinned one; v2: latest and version pin
    // (both declare the same version, the later upload wins).
    assert_eq!(
        calls_of(listed(&listing, "alice/add_processed").unwrap()),
        [2, 2]
    );

    // v1 is running: removing it (or everything) is refused, naming it.
    for reference in [
        format!("add_processed@sha256:{v1_sha}"),
        "add_processed".into(),
    ] {
        let err = action(&mut alice, "remove_exchanger", reference.clone())
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::FailedPrecondition, "{reference}: {err}");
        assert!(err.message().contains(&v1_sha[..12]), "{err}");
    }
    // The open exchange finishes on v1, untouched.
    for start in [500, 1000] {
        first
            .input
            .unbounded_send(Ok(mallard_flights::batch(start, 500)))
            .unwrap();
    }
    drop(first.input);
    let mut rest = 0;
    while let Some(batch) = first.output.next().await {
        rest += batch.unwrap().num_rows();
    }
    assert_eq!(rest, 1000);
    let listing = action(&mut alice, "list_exchangers", "").await.unwrap();
    let entry = listed(&listing, "alice/add_processed").unwrap();
    assert_eq!(entry["versions"][0]["metrics"]["rows_in"], 2500);
    assert_eq!(entry["versions"][0]["metrics"]["live"], 0);

    // Now v1 can go; the bare name still runs v2; then all of it goes.
    let removed = action(
        &mut alice,
        "remove_exchanger",
        format!("add_processed@sha256:{v1_sha}"),
    )
    .await
    .unwrap();
    assert_eq!(removed["removed"].as_array().unwrap().len(), 1);
    assert_eq!(
        run(&mut alice, &pinned).await.unwrap_err().code(),
        Code::NotFound
    );
    assert_eq!(run(&mut alice, "add_processed").await.unwrap(), 1000);
    action(&mut alice, "remove_exchanger", "add_processed")
        .await
        .unwrap();
    assert_eq!(
        run(&mut alice, "add_processed").await.unwrap_err().code(),
        Code::NotFound
    );
    assert_idle(&mut alice).await;
    server.stop().await.unwrap();
}

async fn refused(client: &mut FlightClient, body: Vec<u8>, flag: &str) {
    let err = action(client, "upload_exchanger", body).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err}");
    assert!(err.message().contains(flag), "{flag} not named: {err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_quota_is_refused_naming_its_flag() {
    let mut config = config_with_accounts();
    config.quotas.max_exchangers_per_user = 1;
    config.quotas.max_versions_per_exchanger = 2;
    config.max_exchanges_per_user = 1;
    let server = start_with(config).await;
    let mut alice = login(&server, ALICE).await;
    let mut alice2 = login(&server, ALICE).await;
    action(&mut alice, "upload_exchanger", variant("add_processed", 1))
        .await
        .unwrap();
    refused(
        &mut alice,
        component("running_totals"),
        "--max-exchangers-per-user",
    )
    .await;
    action(&mut alice, "upload_exchanger", variant("add_processed", 2))
        .await
        .unwrap();
    refused(
        &mut alice,
        variant("add_processed", 3),
        "--max-versions-per-exchanger",
    )
    .await;
    // Bob's quotas are his own.
    let mut bob = login(&server, BOB).await;
    action(&mut bob, "upload_exchanger", component("running_totals"))
        .await
        .unwrap();

    // Concurrent exchanges.
    let open = open_exchange(&mut alice2, "add_processed").await;
    let err = run(&mut alice, "add_processed").await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err}");
    assert!(err.message().contains("--max-exchanges-per-user"), "{err}");
    drop(open);
    within(Duration::from_secs(10), async {
        while run(&mut alice, "add_processed").await.is_err() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    server.stop().await.unwrap();

    // Compile time of one upload.
    let mut config = config_with_accounts();
    config.quotas.max_compile_time = Duration::from_millis(1);
    let server = start_with(config).await;
    let mut alice = login(&server, ALICE).await;
    refused(&mut alice, component("add_processed"), "--max-compile-secs").await;
    server.stop().await.unwrap();

    // Guest memory across a user's live instances.
    let mut config = config_with_accounts();
    config.quotas.guest_memory_per_user = 1 << 20;
    let server = start_with(config).await;
    let mut alice = login(&server, ALICE).await;
    upload(&mut alice, "add_processed").await;
    let err = run(&mut alice, "add_processed").await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err}");
    assert!(
        err.message().contains("--guest-memory-per-user-mib"),
        "{err}"
    );
    assert_idle(&mut alice).await;
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_upload_report_lists_imports_exports_and_a_dry_run() {
    let server = start_with(config_with_accounts()).await;
    let mut alice = login(&server, ALICE).await;
    let report = action(&mut alice, "upload_exchanger", component("add_processed"))
        .await
        .unwrap();
    let list = |key: &str| -> Vec<String> {
        report[key]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_owned())
            .collect()
    };
    assert!(
        list("exports").contains(&"mallard:exchanger/exchange@0.2.0".to_owned()),
        "{report}"
    );
    assert!(
        list("imports")
            .iter()
            .all(|i| i.starts_with("wasi:") || i.starts_with("mallard:exchanger/")),
        "{report}"
    );
    assert_eq!(report["wit"], "mallard:exchanger/exchanger@0.2.0");
    assert!(
        list("imports").contains(&"mallard:exchanger/output@0.2.0".to_owned()),
        "a 0.2 component imports emit: {report}"
    );
    assert_eq!(report["sha256"].as_str().unwrap().len(), 64);
    assert!(report["compile_ms"].as_f64().unwrap() > 0.0);
    assert!(report["size"].as_u64().unwrap() > 1000);
    // The dry run against the flights schema: its columns plus `processed`.
    let dry = &report["dry_run"];
    assert_eq!(dry["input"], "flights");
    let columns: Vec<&str> = dry["output_schema"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert_eq!(columns.len(), mallard_flights::schema().fields().len() + 1);
    assert_eq!(columns.last(), Some(&"processed"));
    assert_eq!(
        dry["parallel"], true,
        "add_processed is stateless: {report}"
    );

    // A client schema and parameters the exchanger refuses: the report says so.
    let schema = arrow::datatypes::Schema::new(vec![arrow::datatypes::Field::new(
        "amount",
        arrow::datatypes::DataType::Int64,
        false,
    )]);
    let header =
        mallard_exchanger::ipc::MessageEncoder::new(std::sync::Arc::new(schema)).schema_header();
    let body = mallard_protocol::UploadRequest::encode(
        &component("running_totals"),
        &mallard_protocol::UploadOptions {
            shared: false,
            to_peers: false,
            dry_run_schema: Some(header.into()),
            params: vec![("value".into(), "passengers".into())],
        },
    );
    let report = action(&mut alice, "upload_exchanger", body).await.unwrap();
    let dry = &report["dry_run"];
    assert_eq!(dry["input"], "client");
    assert_eq!(dry["refused"]["code"], "INVALID_ARGUMENT", "{report}");
    assert!(
        dry.get("parallel").is_none(),
        "a refused open says nothing of it"
    );
    assert!(
        dry["refused"]["message"]
            .as_str()
            .unwrap()
            .contains("no column `passengers`"),
        "{report}"
    );

    // A component importing what Mallard does not provide is refused, named.
    let err = action(
        &mut alice,
        "upload_exchanger",
        component("hostile_foreign_import"),
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err}");
    assert!(err.message().contains("evil:net/dial"), "{err}");
    server.stop().await.unwrap();
}

/// `GET /metrics` over a plain TCP connection, with `authorization` if given:
/// the status code and the whole response.
async fn get_metrics(addr: std::net::SocketAddr, authorization: Option<&str>) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let header = authorization.map_or(String::new(), |a| format!("Authorization: {a}\r\n"));
    let request =
        format!("GET /metrics HTTP/1.1\r\nHost: mallard\r\n{header}Connection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let code = response[9..12].parse().unwrap();
    (code, response)
}

/// A scrape with the admin's credentials.
async fn scrape(addr: std::net::SocketAddr) -> String {
    let admin = mallard_protocol::credentials::basic_header("admin", "password123");
    let (code, response) = get_metrics(addr, Some(&admin)).await;
    assert_eq!(code, 200, "{response}");
    response
}

/// The value of the series whose line starts with `prefix` (name and labels).
fn series(text: &str, prefix: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no series {prefix} in:\n{text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_scraped_over_http_and_match_the_listing() {
    let mut config = config_with_accounts();
    config.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
    config.metrics_private_labels = true;
    let server = start_with(config).await;
    let addr = server.metrics_addr.expect("metrics served");
    let mut alice = login(&server, ALICE).await;
    upload(&mut alice, "add_processed").await;
    upload(&mut alice, "hostile_endless_loop").await;
    let before = scrape(addr).await;
    for _ in 0..3 {
        assert_eq!(run(&mut alice, "add_processed").await.unwrap(), 1000);
    }
    let err = run(&mut alice, "hostile_endless_loop").await.unwrap_err();
    assert_eq!(err.code(), Code::DeadlineExceeded);
    let _ = mallard::client::connect(&server.url(), ALICE.0, "wrong").await;
    let after = scrape(addr).await;

    let exchanger = "owner=\"alice\",exchanger=\"add_processed\"";
    let calls = format!("mallard_exchanger_calls_total{{{exchanger}");
    assert_eq!(series(&after, &calls), 3.0);
    assert_eq!(
        series(
            &after,
            &format!("mallard_exchanger_rows_in_total{{{exchanger}")
        ),
        3000.0
    );
    assert_eq!(
        series(
            &after,
            &format!("mallard_exchanger_rows_out_total{{{exchanger}")
        ),
        3000.0
    );
    assert!(
        series(
            &after,
            &format!("mallard_exchanger_cpu_seconds_total{{{exchanger}")
        ) > 0.0
    );
    assert_eq!(
        series(
            &after,
            &format!("mallard_exchanger_batch_seconds_count{{{exchanger}")
        ),
        6.0
    );
    assert!(
        series(
            &after,
            &format!("mallard_exchanger_peak_memory_bytes{{{exchanger}")
        ) > 0.0
    );
    assert_eq!(
        series(
            &after,
            "mallard_exchanger_errors_total{owner=\"alice\",exchanger=\"hostile_endless_loop\""
        ),
        1.0
    );
    assert!(after.contains("code=\"DEADLINE_EXCEEDED\""));
    // Per server: RPCs by method and status, latency, live gauges, auth failures.
    let exchanges_ok = "mallard_rpcs_total{method=\"DoExchange\",code=\"OK\"}";
    assert_eq!(series(&after, exchanges_ok), 3.0);
    assert_eq!(
        series(&after, "mallard_rpc_seconds_count{method=\"DoExchange\"}"),
        4.0
    );
    assert!(series(&after, "mallard_auth_failures_total") >= 1.0);
    assert_eq!(series(&after, "mallard_live{what=\"exchanges\"}"), 0.0);
    assert!(series(&after, "mallard_threads") > 0.0);
    assert!(!before.contains(exchanges_ok) || series(&before, exchanges_ok) == 0.0);

    // list_exchangers shows the same numbers.
    let listing = action(&mut alice, "list_exchangers", "").await.unwrap();
    let entry = listed(&listing, "alice/add_processed").unwrap();
    let m = &entry["versions"][0]["metrics"];
    assert_eq!(m["calls"], 3);
    assert_eq!(m["rows_in"], 3000);
    assert_eq!(m["batches"], 6);
    assert!(m["batch_ms_p50"].as_f64().unwrap() > 0.0);
    assert!(m["batch_ms_p99"].as_f64().unwrap() >= m["batch_ms_p50"].as_f64().unwrap());
    let looping = listed(&listing, "alice/hostile_endless_loop").unwrap();
    assert_eq!(looping["errors"], 1);
    assert_eq!(
        looping["versions"][0]["metrics"]["errors_by_code"]["DEADLINE_EXCEEDED"],
        1
    );
    // Bob's listing holds none of alice's series.
    let mut bob = login(&server, BOB).await;
    let listing = action(&mut bob, "list_exchangers", "").await.unwrap();
    assert!(listed(&listing, "alice/add_processed").is_none());
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_need_the_token_or_an_admin_and_do_not_name_private_exchangers() {
    let token = "metrics-token-0123456789abcdef";
    let mut config = config_with_accounts();
    config.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
    config.metrics_token = Some(token.into());
    let server = start_with(config).await;
    let addr = server.metrics_addr.expect("metrics served");
    let mut alice = login(&server, ALICE).await;
    let report = action(&mut alice, "upload_exchanger", component("add_processed"))
        .await
        .unwrap();
    assert_eq!(run(&mut alice, "add_processed").await.unwrap(), 1000);

    // Anyone else who reaches the port: refused, whatever they present.
    let basic = mallard_protocol::credentials::basic_header;
    for authorization in [
        None,
        Some(basic(ALICE.0, ALICE.1)),
        Some(basic("admin", "wrong")),
        Some(format!("Bearer {token}x")),
        Some("Bearer ".to_owned()),
        Some("Digest whatever".to_owned()),
    ] {
        let (code, response) = get_metrics(addr, authorization.as_deref()).await;
        assert_eq!(code, 401, "{authorization:?}: {response}");
        assert!(!response.contains("mallard_"), "{response}");
    }
    // The token and an admin's credentials read.
    let (code, by_token) = get_metrics(addr, Some(&format!("Bearer {token}"))).await;
    assert_eq!(code, 200, "{by_token}");
    let by_admin = scrape(addr).await;
    for text in [&by_token, &by_admin] {
        // Alice's exchanger is counted, under "private", never by owner, name or digest.
        assert_eq!(
            series(
                text,
                "mallard_exchanger_calls_total{owner=\"private\",exchanger=\"private\""
            ),
            1.0
        );
        assert!(!text.contains("alice"), "{text}");
        let sha = report["sha256"]
            .as_str()
            .expect("the upload report names its sha256");
        assert!(!text.contains(&sha[..12]), "{text}");
        // Shared built-ins keep their names.
        assert!(text.contains("exchanger=\"running_totals\""), "{text}");
    }
    server.stop().await.unwrap();
}
