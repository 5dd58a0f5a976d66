//! Shared fixture for the integration tests: real servers on 127.0.0.1:0, real
//! authenticated Flight clients, guest components built from `guest-exchangers/`.
#![allow(dead_code)] // each test binary uses a different part of the fixture

use arrow::array::RecordBatch;
use arrow_flight::decode::FlightRecordBatchStream;
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::{Action, FlightClient, FlightDescriptor, Ticket};
use futures::{StreamExt, TryStreamExt};
use mallard::{RunningServer, ServerConfig};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

/// Every guest crate the tests upload.
pub const GUESTS: &[&str] = &[
    "add-processed",
    "running-totals",
    "delay-classifier",
    "pseudonymize",
    "hostile-endless-loop",
    "hostile-memory-bomb",
    "hostile-deep-recursion",
    "hostile-panic",
    "hostile-bad-ipc",
    "hostile-schema-drift",
    "hostile-wasi-probe",
    "hostile-delta-flood",
    "hostile-foreign-import",
    "hostile-liar",
    "hostile-long-description",
];

/// Installs logging once (RUST_LOG controls it).
pub fn init_logging() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
    });
}

/// Builds every guest for wasm32-wasip2 (once per test binary) and returns the
/// directory holding the `.wasm` files.
pub fn guest_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        mallard_guest_builder::components::build(
            GUESTS,
            mallard_guest_builder::components::Profile::Release,
        )
        .expect("guests build")
    })
}

/// `add_processed` built for contract 0.1, alone (its SDK feature must not
/// reach the other guests, which speak 0.2).
pub fn component_0_1() -> Vec<u8> {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    let dir = DIR.get_or_init(|| {
        guest_dir();
        mallard_guest_builder::components::build(
            &["add-processed-0-1"],
            mallard_guest_builder::components::Profile::Release,
        )
        .expect("the 0.1 guest builds")
    });
    let path = dir.join("add_processed_0_1.wasm");
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The bytes of a built guest, e.g. `component("add_processed")`.
pub fn component(file_stem: &str) -> Vec<u8> {
    let path = guest_dir().join(format!("{file_stem}.wasm"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A config for a test server on an ephemeral port.
pub fn test_config() -> ServerConfig {
    let mut config = ServerConfig::new("127.0.0.1:0".parse().unwrap());
    config.shutdown_grace = Duration::from_secs(5);
    // Stateless stages run on two instances on every machine (the default
    // follows the cores), so every test exercises the same paths.
    config.exchange_instances = 2;
    config
}

/// Starts a server with `config`.
pub async fn start_with(config: ServerConfig) -> RunningServer {
    init_logging();
    mallard::start(config).await.expect("server starts")
}

/// Starts a default test server.
pub async fn start() -> RunningServer {
    start_with(test_config()).await
}

/// An authenticated client (admin/password123).
pub async fn client(server: &RunningServer) -> FlightClient {
    mallard::client::connect(&server.url(), "admin", "password123")
        .await
        .expect("client connects")
}

/// Runs `sql` through do_get and collects the batches.
pub async fn query(
    client: &mut FlightClient,
    sql: &str,
) -> Result<Vec<RecordBatch>, tonic::Status> {
    let stream = client
        .do_get(Ticket::new(sql.to_owned()))
        .await
        .map_err(to_status)?;
    stream.try_collect().await.map_err(to_status)
}

/// A single i64 from `sql`.
pub async fn scalar_i64(client: &mut FlightClient, sql: &str) -> i64 {
    let batches = query(client, sql).await.expect("query");
    let column = batches[0].column(0);
    arrow::compute::cast(column, &arrow::datatypes::DataType::Int64)
        .unwrap()
        .as_any()
        .downcast_ref::<arrow::array::Int64Array>()
        .unwrap()
        .value(0)
}

/// Puts `batches` into `table`; returns the acknowledged row count.
pub async fn put(
    client: &mut FlightClient,
    table: &str,
    batches: Vec<RecordBatch>,
) -> Result<u64, tonic::Status> {
    let schema = batches[0].schema();
    let input = futures::stream::iter(batches.into_iter().map(Ok));
    let data = FlightDataEncoderBuilder::new()
        .with_schema(schema)
        .with_flight_descriptor(Some(FlightDescriptor::new_cmd(table.to_owned())))
        .build(input);
    let results: Vec<_> = client
        .do_put(data)
        .await
        .map_err(to_status)?
        .try_collect()
        .await
        .map_err(to_status)?;
    let meta: serde_json::Value =
        serde_json::from_slice(&results.last().expect("a put result").app_metadata).unwrap();
    Ok(meta["rows"].as_u64().unwrap())
}

/// Runs an action and parses its JSON result.
pub async fn action(
    client: &mut FlightClient,
    kind: &str,
    body: impl Into<bytes::Bytes>,
) -> Result<serde_json::Value, tonic::Status> {
    let results: Vec<_> = client
        .do_action(Action::new(kind, body.into()))
        .await
        .map_err(to_status)?
        .try_collect()
        .await
        .map_err(to_status)?;
    Ok(serde_json::from_slice(&results[0]).expect("action result is JSON"))
}

/// Uploads a built guest into the caller's own namespace; returns its name.
pub async fn upload(client: &mut FlightClient, file_stem: &str) -> String {
    let report = action(client, "upload_exchanger", component(file_stem))
        .await
        .expect("upload succeeds");
    report["name"].as_str().unwrap().to_owned()
}

/// Uploads a built guest into the shared namespace (the caller must be an
/// admin); returns its name.
pub async fn upload_shared(client: &mut FlightClient, file_stem: &str) -> String {
    let options = mallard_protocol::UploadOptions {
        shared: true,
        to_peers: false,
        ..Default::default()
    };
    let body = mallard_protocol::UploadRequest::encode(&component(file_stem), &options);
    let report = action(client, "upload_exchanger", body)
        .await
        .expect("shared upload succeeds");
    report["name"].as_str().unwrap().to_owned()
}

/// Exchanges `batches` through the exchanger named by `command`; collects the output.
pub async fn exchange(
    client: &mut FlightClient,
    command: &str,
    batches: Vec<RecordBatch>,
) -> Result<Vec<RecordBatch>, tonic::Status> {
    let schema = batches[0].schema();
    let input = futures::stream::iter(batches.into_iter().map(Ok));
    let data = FlightDataEncoderBuilder::new()
        .with_schema(schema)
        .with_flight_descriptor(Some(FlightDescriptor::new_cmd(command.to_owned())))
        .build(input);
    let output = client.do_exchange(data).await.map_err(to_status)?;
    let output: FlightRecordBatchStream = output;
    output.try_collect().await.map_err(to_status)
}

/// Runs a `do_exchange`; returns the output and the receipt of its trailer.
/// (arrow-flight's `FlightClient::do_exchange` drops trailers, so this goes
/// through the generated gRPC client, as the demo does.)
pub async fn exchange_with_receipt(
    client: &mut FlightClient,
    command: &str,
    batches: Vec<RecordBatch>,
) -> (Vec<RecordBatch>, mallard_protocol::Receipt) {
    let schema = batches[0].schema();
    let data: Vec<_> = FlightDataEncoderBuilder::new()
        .with_schema(schema)
        .with_flight_descriptor(Some(FlightDescriptor::new_cmd(command.to_owned())))
        .build(futures::stream::iter(batches.into_iter().map(Ok)))
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .map(|d| d.unwrap())
        .collect();
    let mut stream = exchange_raw(client, futures::stream::iter(data)).await;
    let mut messages = Vec::new();
    while let Some(message) = stream.message().await.unwrap() {
        messages.push(message);
    }
    let trailers = stream.trailers().await.unwrap().expect("trailers");
    let bytes = trailers
        .get_bin(mallard_protocol::receipt::TRAILER)
        .and_then(|v| v.to_bytes().ok())
        .expect("do_exchange ends with a receipt");
    // The decoding stream, unlike `flight_data_to_batches`, reads dictionary batches.
    let out: Vec<RecordBatch> = FlightRecordBatchStream::new_from_flight_data(
        futures::stream::iter(messages.into_iter().map(Ok)),
    )
    .try_collect()
    .await
    .unwrap();
    (
        out,
        mallard_protocol::Receipt::from_json(&bytes).expect("a receipt"),
    )
}

/// Opens a `do_exchange` of `input` through the generated gRPC client (which,
/// unlike `FlightClient::do_exchange`, keeps the trailers) with the client's
/// credentials.
pub async fn exchange_raw(
    client: &mut FlightClient,
    input: impl futures::Stream<Item = arrow_flight::FlightData> + Send + 'static,
) -> tonic::Streaming<arrow_flight::FlightData> {
    let mut request = tonic::Request::new(input);
    *request.metadata_mut() = client.metadata().clone();
    client
        .inner_mut()
        .do_exchange(request)
        .await
        .unwrap()
        .into_inner()
}

/// A message whose header is not a flatbuffer: what a broken or hostile client
/// sends in the middle of a stream.
pub fn malformed_message() -> arrow_flight::FlightData {
    arrow_flight::FlightData {
        data_header: vec![1u8, 2, 3, 4, 5].into(),
        data_body: vec![9u8; 64].into(),
        ..Default::default()
    }
}

/// Exchanges `input` through the hostile guest `command` while another client asks
/// the server a question: the exchange must end within `limit` with `code` and a
/// message containing `needle`, and the question must be answered meanwhile.
/// `what` names the guest in failures.
pub async fn expect_hostile_contained(
    server: &RunningServer,
    what: &str,
    command: &str,
    input: Vec<RecordBatch>,
    (code, needle): (tonic::Code, &str),
    limit: Duration,
) {
    let mut caller = client(server).await;
    let mut other = client(server).await;
    let started = std::time::Instant::now();
    let hostile = exchange(&mut caller, command, input);
    let bystander = async {
        tokio::time::sleep(Duration::from_millis(50)).await;
        scalar_i64(&mut other, "SELECT 40 + 2").await
    };
    let (result, answer) = tokio::join!(hostile, bystander);
    let err = result.expect_err("a hostile guest must fail");
    assert_eq!(err.code(), code, "{what}: {err}");
    assert!(err.message().contains(needle), "{what}: {err}");
    assert!(
        started.elapsed() < limit,
        "{what} took {:?}",
        started.elapsed()
    );
    assert_eq!(answer, 42, "the server kept serving during {what}");
}

/// Puts `batches` into `table` and then a [`malformed_message`]; returns the status
/// the put ended with (`None` if it wrongly succeeded).
pub async fn put_ending_in_garbage(
    client: &mut FlightClient,
    table: &str,
    batches: Vec<RecordBatch>,
) -> Option<tonic::Status> {
    let good = FlightDataEncoderBuilder::new()
        .with_flight_descriptor(Some(FlightDescriptor::new_cmd(table.to_owned())))
        .build(futures::stream::iter(batches.into_iter().map(Ok)));
    let garbage = futures::stream::once(async { Ok(malformed_message()) });
    put_error(client, good.chain(garbage)).await
}

/// Puts the raw messages `data`; returns the status the put ended with, or
/// `None` when it succeeded.
pub async fn put_error(
    client: &mut FlightClient,
    data: impl futures::Stream<Item = arrow_flight::error::Result<arrow_flight::FlightData>>
    + Send
    + 'static,
) -> Option<tonic::Status> {
    match client.do_put(data).await {
        Ok(results) => results
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .find_map(|r| r.err())
            .map(to_status),
        Err(e) => Some(to_status(e)),
    }
}

/// The gRPC status inside a Flight error.
pub fn to_status(e: arrow_flight::error::FlightError) -> tonic::Status {
    match e {
        arrow_flight::error::FlightError::Tonic(s) => *s,
        other => tonic::Status::internal(other.to_string()),
    }
}

/// Fails the test if `f` takes longer than `limit`.
pub async fn within<T>(limit: Duration, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(limit, f).await.expect("timed out")
}

/// Total rows of some batches.
pub fn rows(batches: &[RecordBatch]) -> usize {
    batches.iter().map(|b| b.num_rows()).sum()
}

/// Flights rows `0..n` in batches of `batch_rows`.
pub fn flights(n: usize, batch_rows: usize) -> Vec<RecordBatch> {
    (0..n)
        .step_by(batch_rows)
        .map(|s| mallard_flights::batch(s as u64, batch_rows.min(n - s)))
        .collect()
}

/// Consumes a stream, for tests that only care about errors.
pub async fn drain(stream: FlightRecordBatchStream) -> Result<usize, tonic::Status> {
    let mut n = 0;
    let mut stream = stream;
    while let Some(b) = stream.next().await {
        n += b.map_err(to_status)?.num_rows();
    }
    Ok(n)
}

/// The `list_exchangers` entry of `exchanger` (`admin/add_processed`, or
/// `add_processed` for the shared one).
pub async fn listed_exchanger(client: &mut FlightClient, exchanger: &str) -> serde_json::Value {
    let listing = action(client, "list_exchangers", "").await.unwrap();
    listing
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["exchanger"] == exchanger)
        .unwrap_or_else(|| panic!("{exchanger} is not listed in {listing}"))
        .clone()
}

/// Waits (up to 5 s) until the server holds no query, ingest, exchange or wasm
/// instance, as its healthcheck reports; fails the test with what is still live.
pub async fn assert_idle(client: &mut FlightClient) {
    let started = std::time::Instant::now();
    loop {
        let health = action(client, "healthcheck", "").await.unwrap();
        let live = &health["live"];
        let busy: Vec<_> = mallard_core::gauges::IDLE_AT_ZERO
            .into_iter()
            .filter(|k| live[*k].as_u64() != Some(0))
            .collect();
        if busy.is_empty() {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "still live after 5 s: {busy:?} in {live}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `alice`, a user.
pub const ALICE: (&str, &str) = ("alice", "alice-pw");
/// `bob`, a user.
pub const BOB: (&str, &str) = ("bob", "bob-pw");
/// `rita`, a reader.
pub const RITA: (&str, &str) = ("rita", "rita-pw");

/// A test config with admin/password123, [`ALICE`] and [`BOB`] (users) and [`RITA`] (reader).
pub fn config_with_accounts() -> ServerConfig {
    use mallard::auth::{Role, User};
    let mut config = test_config();
    for (name, password, role) in [
        ("admin", "password123", Role::Admin),
        (ALICE.0, ALICE.1, Role::User),
        (BOB.0, BOB.1, Role::User),
        (RITA.0, RITA.1, Role::Reader),
    ] {
        config.users.insert(name.into(), User::new(password, role));
    }
    config
}

/// A client logged in as `who`.
pub async fn login(server: &RunningServer, who: (&str, &str)) -> FlightClient {
    mallard::client::connect(&server.url(), who.0, who.1)
        .await
        .expect("login")
}

/// A directory holding `packages` for `python3` (installed once, then reused).
pub fn python_packages(packages: &[&str]) -> PathBuf {
    mallard_guest_builder::polyglot::pip_packages(packages).expect("pip installs the packages")
}

/// Runs `tests/python/<script>` with `args` and `packages`; returns its stdout
/// once it exited successfully.
pub async fn run_python(script: &str, args: Vec<String>, packages: PathBuf) -> String {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/python")
        .join(script);
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new("python3")
            .arg(&script)
            .args(args)
            .env("PYTHONPATH", &packages)
            .output()
            .expect("python3 runs")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    stdout
}

/// A loopback port free right now (for servers that must know each other's
/// addresses, or a process started on it, before they start).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
