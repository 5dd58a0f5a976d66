//! Three nodes on loopback sharing a cluster key: one FlightInfo with an endpoint
//! per node, read with a Rust Flight client, pyarrow and the ADBC Flight SQL
//! driver; each node applies its own roles to a peer's token; a part that is
//! missing, of another schema, or on a node that dies (a killed `mallard serve`
//! process) fails the read naming the node, never drops out of it.

mod common;

use arrow::array::{Array, Int32Array, Int64Array, RecordBatch};
use arrow_flight::{FlightClient, FlightDescriptor, FlightInfo};
use common::{ALICE, BOB, python_packages, run_python};
use futures::{StreamExt, TryStreamExt};
use mallard::auth::{Role, User};
use mallard::cluster::{ClusterKey, NODES_HEADER};
use mallard::{RunningServer, ServerConfig};
use mallard_protocol::PushTarget;
use std::time::Duration;
use tonic::Code;

const KEY: &[u8] = b"the test cluster's key, forty-odd bytes long";
/// Rows of `flights` on each node.
const PART_ROWS: u64 = 1_000_000;

/// Configs of three nodes that list each other as peers; `adjust(i, config)`
/// changes node `i`'s.
fn cluster_configs(adjust: impl Fn(usize, &mut ServerConfig)) -> Vec<ServerConfig> {
    let ports: Vec<u16> = (0..3).map(|_| common::free_port()).collect();
    let target = |port: u16| PushTarget::parse(&format!("grpc://127.0.0.1:{port}")).unwrap();
    (0..3)
        .map(|i| {
            let mut config = common::config_with_accounts();
            config.listen = format!("127.0.0.1:{}", ports[i]).parse().unwrap();
            config.cluster_key = Some(ClusterKey::new(KEY).unwrap());
            config.peers = (0..3)
                .filter(|&j| j != i)
                .map(|j| target(ports[j]))
                .collect();
            config.shutdown_grace = Duration::from_secs(1);
            adjust(i, &mut config);
            config
        })
        .collect()
}

async fn start_cluster(configs: Vec<ServerConfig>) -> Vec<RunningServer> {
    let mut nodes = Vec::new();
    for config in configs {
        nodes.push(common::start_with(config).await);
    }
    nodes
}

/// Puts part `i` of the flights (ids from `i * PART_ROWS`) into `table` on `url`.
async fn load_part(url: &str, i: usize, table: &str) {
    let mut admin = mallard::client::connect(url, "admin", "password123")
        .await
        .unwrap();
    let batches = (0..PART_ROWS)
        .step_by(125_000)
        .map(|offset| mallard_flights::batch(i as u64 * PART_ROWS + offset, 125_000))
        .collect();
    let rows = common::put(&mut admin, table, batches).await.unwrap();
    assert_eq!(rows, PART_ROWS);
}

/// Each node's part of `table`.
async fn load_parts(nodes: &[RunningServer], table: &str) {
    for (i, node) in nodes.iter().enumerate() {
        load_part(&node.url(), i, table).await;
    }
}

/// (rows, sum(flight_id), sum(passengers)) of `table`, added up over the nodes by SQL.
async fn expected_checksum(nodes: &[RunningServer], table: &str) -> (i64, i64, i64) {
    let mut sum = (0, 0, 0);
    for node in nodes {
        let mut client = common::client(node).await;
        sum.0 += common::scalar_i64(&mut client, &format!("SELECT count(*) FROM {table}")).await;
        sum.1 +=
            common::scalar_i64(&mut client, &format!("SELECT sum(flight_id) FROM {table}")).await;
        sum.2 +=
            common::scalar_i64(&mut client, &format!("SELECT sum(passengers) FROM {table}")).await;
    }
    sum
}

fn checksum(batches: &[RecordBatch]) -> (i64, i64, i64) {
    let mut sum = (0, 0, 0);
    for batch in batches {
        let ids = batch.column_by_name("flight_id").unwrap();
        let ids = ids.as_any().downcast_ref::<Int64Array>().unwrap();
        let passengers = batch.column_by_name("passengers").unwrap();
        let passengers = passengers.as_any().downcast_ref::<Int32Array>().unwrap();
        sum.0 += batch.num_rows() as i64;
        sum.1 += ids.iter().flatten().sum::<i64>();
        sum.2 += passengers.iter().flatten().map(i64::from).sum::<i64>();
        assert_eq!(ids.null_count(), 0);
    }
    sum
}

/// A client of `node` as `who`, asking every node.
async fn every_node_client(node: &RunningServer, who: (&str, &str)) -> FlightClient {
    let mut client = common::login(node, who).await;
    client.add_header(NODES_HEADER, "all").unwrap();
    client
}

async fn flight_info(client: &mut FlightClient, table: &str) -> Result<FlightInfo, tonic::Status> {
    client
        .get_flight_info(FlightDescriptor::new_path(vec![table.to_owned()]))
        .await
        .map_err(common::to_status)
}

/// A client of `url` sending `token` as its bearer token, as a node calling
/// its peers does.
async fn token_client(url: &str, token: &str) -> FlightClient {
    let target = PushTarget::parse(url).unwrap();
    mallard::client::connect_with_token(&target, token, None)
        .await
        .unwrap()
}

/// A client of the endpoint's node carrying `caller`'s bearer token.
async fn endpoint_client(caller: &FlightClient, location: Option<&str>) -> FlightClient {
    let url = location.expect("a located endpoint");
    let header = caller.metadata().get("authorization").unwrap();
    let token = header.to_str().unwrap().strip_prefix("Bearer ").unwrap();
    token_client(url, token).await
}

/// Runs `sql` on `node` as admin.
async fn sql_on(node: &RunningServer, sql: &str) {
    common::query(&mut common::client(node).await, sql)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_flight_info_reads_every_nodes_part_with_rust_pyarrow_and_adbc() {
    let packages = tokio::task::spawn_blocking(|| {
        python_packages(&["adbc-driver-flightsql", "adbc-driver-manager", "pyarrow"])
    })
    .await
    .unwrap();
    let nodes = start_cluster(cluster_configs(|_, _| {})).await;
    load_parts(&nodes, "flights").await;
    let expected = expected_checksum(&nodes, "flights").await;
    assert_eq!(expected.0, 3 * PART_ROWS as i64);

    let mut alice = every_node_client(&nodes[0], ALICE).await;
    let info = flight_info(&mut alice, "flights").await.unwrap();
    assert_eq!(info.total_records, expected.0);
    let locations: Vec<Option<String>> = info
        .endpoint
        .iter()
        .map(|e| e.location.first().map(|l| l.uri.clone()))
        .collect();
    assert_eq!(
        locations,
        vec![None, Some(nodes[1].url()), Some(nodes[2].url())],
        "this node's part first, then each peer's, located there"
    );
    let mut batches = Vec::new();
    for endpoint in &info.endpoint {
        let ticket = endpoint.ticket.clone().unwrap();
        let location = endpoint.location.first().map(|l| l.uri.as_str());
        let stream = match location {
            None => alice.do_get(ticket).await,
            Some(_) => endpoint_client(&alice, location).await.do_get(ticket).await,
        };
        let part: Vec<RecordBatch> = futures::TryStreamExt::try_collect(stream.unwrap())
            .await
            .unwrap();
        batches.extend(part);
    }
    assert_eq!(checksum(&batches), expected);

    let args = vec![
        nodes[0].url(),
        expected.0.to_string(),
        expected.1.to_string(),
        expected.2.to_string(),
    ];
    let stdout = run_python("cluster_read.py", args, packages).await;
    println!("{stdout}");
    for line in [
        "pyarrow, one FlightInfo, 3 endpoints: 3000000 rows, checksum equal",
        "ADBC Flight SQL, one statement, 3 endpoints: 3000000 rows, checksum equal",
        "a prepared statement with parameters asked of every node: refused with INVALID_ARGUMENT",
        "a change asked of every node: refused with INVALID_ARGUMENT, nothing ran",
        "ADBC without the header reads this node only: 1000000 rows",
        "all cluster reads passed",
    ] {
        assert!(stdout.contains(line), "missing {line:?} in\n{stdout}");
    }
    for node in nodes {
        common::assert_idle(&mut common::client(&node).await).await;
        node.stop().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_node_applies_its_own_roles_to_a_peers_token() {
    // Alice is a reader on node 1; bob is unknown on node 2.
    let nodes = start_cluster(cluster_configs(|i, config| match i {
        1 => {
            config
                .users
                .insert(ALICE.0.into(), User::new(ALICE.1, Role::Reader));
        }
        2 => {
            config.users.remove(BOB.0);
        }
        _ => {}
    }))
    .await;
    let alice = common::login(&nodes[0], ALICE).await;
    let mut alice_on_1 = endpoint_client(&alice, Some(&nodes[1].url())).await;
    let answer = common::query(&mut alice_on_1, "SELECT 42").await.unwrap();
    assert_eq!(common::rows(&answer), 1, "node 1 accepts node 0's token");
    let err = common::put(&mut alice_on_1, "mine", common::flights(10, 10))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "a reader there: {err}");

    let bob = common::login(&nodes[0], BOB).await;
    let mut bob_on_2 = endpoint_client(&bob, Some(&nodes[2].url())).await;
    let err = common::query(&mut bob_on_2, "SELECT 1").await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    assert!(err.message().contains("not known on this node"), "{err}");

    // Asked for every node, bob's call fails naming the node that refused him.
    let mut bob_everywhere = every_node_client(&nodes[0], BOB).await;
    let err = bob_everywhere
        .get_flight_info(FlightDescriptor::new_cmd("SELECT 1"))
        .await
        .map_err(common::to_status)
        .unwrap_err();
    assert!(
        err.message().contains(&format!("node {}", nodes[2].url()))
            || err.message().contains(&format!("node {}", nodes[1].url())),
        "{err}"
    );

    // A token signed with another key, and one minted for peers shown back to
    // the node that minted it, are refused.
    let other_key = ClusterKey::new(&[b'k'; 32]).unwrap();
    let forged = other_key.issue(ALICE.0, "elsewhere", Duration::from_secs(60));
    let minted = nodes[0]
        .state()
        .auth
        .token_for_peers(&mallard::auth::Principal {
            user: ALICE.0.into(),
            role: Role::User,
        })
        .unwrap();
    for (node, token) in [(&nodes[1], forged), (&nodes[0], minted)] {
        let mut client = token_client(&node.url(), &token).await;
        let err = common::query(&mut client, "SELECT 1").await.unwrap_err();
        assert_eq!(err.code(), Code::Unauthenticated, "{err}");
    }
    for node in nodes {
        node.stop().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_missing_or_different_part_is_named() {
    let nodes = start_cluster(cluster_configs(|_, _| {})).await;
    load_parts(&nodes, "flights").await;
    sql_on(&nodes[0], "CREATE TABLE only_here AS SELECT 1 AS x").await;
    sql_on(&nodes[1], "CREATE TABLE only_here AS SELECT 'text' AS x").await;
    let mut alice = every_node_client(&nodes[0], ALICE).await;

    let err = flight_info(&mut alice, "only_here").await.unwrap_err();
    let missing_or_different = [
        (Code::NotFound, nodes[2].url()),
        (Code::FailedPrecondition, nodes[1].url()),
    ];
    assert!(
        missing_or_different.iter().any(
            |(code, url)| err.code() == *code && err.message().contains(&format!("node {url}"))
        ),
        "{err}"
    );
    sql_on(&nodes[2], "CREATE TABLE only_here AS SELECT 2 AS x").await;
    let err = flight_info(&mut alice, "only_here").await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err}");
    assert!(err.message().contains("different schema"), "{err}");

    let mut bad_header = common::login(&nodes[0], ALICE).await;
    bad_header.add_header(NODES_HEADER, "peers").unwrap();
    let err = flight_info(&mut bad_header, "flights").await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err}");

    for node in nodes {
        node.stop().await.unwrap();
    }
}

/// A `mallard serve` child process, killed when dropped (a failed test leaves none).
struct NodeProcess(std::process::Child);

impl NodeProcess {
    /// SIGKILL: the node dies as a crashed machine's would, mid-call.
    fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Starts node 2 of `configs` as a `mallard serve` process (so it can die as a
/// process does), with the same users, key and peers.
async fn node_process(config: &ServerConfig, key_file: &std::path::Path) -> NodeProcess {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_mallard"));
    command
        .arg("serve")
        .arg("--listen")
        .arg(config.listen.to_string())
        .arg("--users")
        .arg(format!(
            "admin:password123:admin,{}:{}:user",
            ALICE.0, ALICE.1
        ))
        .arg("--cluster-key-file")
        .arg(key_file);
    for peer in &config.peers {
        command.arg("--peer").arg(peer.to_string());
    }
    let process = NodeProcess(
        command
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("mallard serve starts"),
    );
    let url = format!("grpc://{}", config.listen);
    for _ in 0..300 {
        if mallard::client::connect(&url, "admin", "password123")
            .await
            .is_ok()
        {
            return process;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("mallard serve did not answer on {url}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_that_dies_mid_read_fails_its_part_and_is_named() {
    let mut configs = cluster_configs(|_, _| {});
    let key_file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(key_file.path(), KEY).unwrap();
    let mut process = node_process(&configs.pop().unwrap(), key_file.path()).await;
    let nodes = start_cluster(configs).await;
    let dying_url = nodes[0].state().config.peers[1].to_string();
    for (i, url) in [nodes[0].url(), nodes[1].url(), dying_url.clone()]
        .iter()
        .enumerate()
    {
        load_part(url, i, "flights").await;
    }
    let mut alice = every_node_client(&nodes[0], ALICE).await;
    let info = flight_info(&mut alice, "flights").await.unwrap();
    let last = info.endpoint.last().unwrap().clone();
    assert_eq!(last.location[0].uri, dying_url);
    let mut reader = endpoint_client(&alice, Some(&dying_url)).await;
    let mut stream = reader.do_get(last.ticket.unwrap()).await.unwrap();
    let mut read = stream.next().await.unwrap().unwrap().num_rows();
    process.kill();
    let mut failed = None;
    while let Some(batch) = stream.next().await {
        match batch {
            Ok(batch) => read += batch.num_rows(),
            Err(e) => {
                failed = Some(e);
                break;
            }
        }
    }
    assert!(
        failed.is_some(),
        "the part ended cleanly after {read} of {PART_ROWS} rows"
    );
    assert!((read as u64) < PART_ROWS);
    let err = flight_info(&mut alice, "flights").await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err}");
    assert!(
        err.message().contains(&format!("node {dying_url}")),
        "{err}"
    );
    for node in nodes {
        node.stop().await.unwrap();
    }
}

#[tokio::test]
async fn a_node_refuses_peers_outside_its_allow_list_or_without_a_key() {
    let mut configs = cluster_configs(|_, _| {});
    let mut outside = configs.remove(0);
    outside.push_allow = vec![PushTarget::parse("grpc://127.0.0.1:1").unwrap()];
    let err = mallard::start(outside).await.err().expect("refused");
    assert!(err.to_string().contains("not in --push-allow"), "{err}");
    let mut keyless = configs.remove(0);
    keyless.cluster_key = None;
    let err = mallard::start(keyless).await.err().expect("refused");
    assert!(err.to_string().contains("--cluster-key-file"), "{err}");
}

/// `push_table` as `who` on `node`, with `body` (JSON).
async fn push_table(
    node: &RunningServer,
    who: (&str, &str),
    body: serde_json::Value,
) -> Result<serde_json::Value, tonic::Status> {
    let mut client = common::login(node, who).await;
    common::action(&mut client, "push_table", body.to_string()).await
}

async fn table_exists(node: &RunningServer, table: &str) -> bool {
    let mut client = common::client(node).await;
    let sql = format!("SELECT count(*) FROM duckdb_tables() WHERE table_name = '{table}'");
    common::scalar_i64(&mut client, &sql).await == 1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_push_splits_rows_across_the_nodes_that_then_read_as_one() {
    let nodes = start_cluster(cluster_configs(|_, _| {})).await;
    let mut alice_0 = common::login(&nodes[0], ALICE).await;
    let source: Vec<RecordBatch> = (0..3 * PART_ROWS)
        .step_by(125_000)
        .map(|offset| mallard_flights::batch(offset, 125_000))
        .collect();
    let expected = checksum(&source);
    common::put(&mut alice_0, "all_flights", source)
        .await
        .unwrap();
    let urls: Vec<String> = nodes.iter().map(|n| n.url()).collect();
    let pushed = push_table(
        &nodes[0],
        ALICE,
        serde_json::json!({
            "table": "all_flights", "target_table": "flights",
            "to": urls, "partition": {"hash": "flight_id"},
        }),
    )
    .await
    .unwrap();
    assert_eq!(pushed["rows"], expected.0);
    let mut per_node = Vec::new();
    for node in &nodes {
        let mut client = common::client(node).await;
        per_node.push(common::scalar_i64(&mut client, "SELECT count(*) FROM flights").await);
    }
    let reported: Vec<i64> = pushed["rows_per_target"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_i64().unwrap())
        .collect();
    assert_eq!(reported, per_node);
    assert!(per_node.iter().all(|&n| n > 900_000), "{per_node:?}");
    assert_eq!(expected_checksum(&nodes, "flights").await, expected);

    // Read back as one table through one FlightInfo.
    let mut everywhere = every_node_client(&nodes[0], ALICE).await;
    let info = flight_info(&mut everywhere, "flights").await.unwrap();
    assert_eq!(info.total_records, expected.0);

    // Through an exchanger on the way, whole batches in turn to the two peers.
    let exchanger = common::upload(&mut alice_0, "add_processed").await;
    let pushed = push_table(
        &nodes[0],
        ALICE,
        serde_json::json!({
            "query": "SELECT * FROM all_flights WHERE flight_id < 1000000",
            "target_table": "processed", "exchangers": exchanger,
            "to": [urls[1], urls[2]], "partition": "round_robin",
        }),
    )
    .await
    .unwrap();
    assert_eq!(pushed["rows"], 1_000_000);
    assert!(pushed["receipt"].is_object(), "{pushed}");
    let mut total = 0;
    for node in &nodes[1..] {
        let mut client = common::client(node).await;
        let sql = "SELECT count(*) FROM processed WHERE processed";
        let rows = common::scalar_i64(&mut client, sql).await;
        assert!(rows > 0, "each peer got whole batches");
        total += rows;
    }
    assert_eq!(total, 1_000_000);
    for node in nodes {
        common::assert_idle(&mut common::client(&node).await).await;
        node.stop().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_target_that_refuses_or_dies_leaves_nothing_on_any_target() {
    let mut configs = cluster_configs(|_, _| {});
    let key_file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(key_file.path(), KEY).unwrap();
    let mut process = node_process(&configs.pop().unwrap(), key_file.path()).await;
    let nodes = start_cluster(configs).await;
    let dying_url = nodes[0].state().config.peers[1].to_string();
    let mut admin_0 = common::client(&nodes[0]).await;
    let source: Vec<RecordBatch> = (0..4 * PART_ROWS)
        .step_by(125_000)
        .map(|offset| mallard_flights::batch(offset, 125_000))
        .collect();
    common::put(&mut admin_0, "all_flights", source)
        .await
        .unwrap();

    // Node 1 already has a `flights` of another shape: it refuses its share,
    // and the dying node's share is rolled back with it.
    sql_on(&nodes[1], "CREATE TABLE flights AS SELECT 'other' AS shape").await;
    let body = serde_json::json!({
        "table": "all_flights", "target_table": "flights",
        "to": [nodes[1].url(), dying_url], "partition": {"hash": "carrier"},
    });
    let err = push_table(&nodes[0], ALICE, body.clone())
        .await
        .unwrap_err();
    assert!(
        err.message()
            .contains(&format!("push_table to {}", nodes[1].url())),
        "{err}"
    );
    let mut dying_admin = mallard::client::connect(&dying_url, "admin", "password123")
        .await
        .unwrap();
    let sql = "SELECT count(*) FROM duckdb_tables() WHERE table_name = 'flights'";
    assert_eq!(common::scalar_i64(&mut dying_admin, sql).await, 0);
    common::assert_idle(&mut dying_admin).await;

    // The dying node is killed while it ingests its share: the push fails
    // naming it, and node 1 keeps nothing.
    sql_on(&nodes[1], "DROP TABLE flights").await;
    let pushing = tokio::spawn({
        let node = common::login(&nodes[0], ALICE).await;
        let body = body.to_string();
        async move {
            let mut node = node;
            common::action(&mut node, "push_table", body).await
        }
    });
    loop {
        let health = common::action(&mut dying_admin, "healthcheck", "")
            .await
            .unwrap();
        if health["live"]["ingests"].as_u64() > Some(0) {
            break;
        }
        assert!(!pushing.is_finished(), "the push ended before the kill");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    process.kill();
    let err = pushing.await.unwrap().unwrap_err();
    assert!(
        err.message()
            .contains(&format!("push_table to {dying_url}")),
        "{err}"
    );
    assert!(!table_exists(&nodes[1], "flights").await);
    for node in nodes {
        common::assert_idle(&mut common::client(&node).await).await;
        node.stop().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_two_phase_put_commits_only_when_told_to() {
    use arrow_flight::encode::FlightDataEncoderBuilder;
    use mallard::flight::two_phase::Control;
    let server = common::start_with(common::config_with_accounts()).await;
    let put = |control_words: Vec<Control>, table: &'static str| {
        let mut first = Control::TwoPhase.message();
        first.flight_descriptor = Some(FlightDescriptor::new_cmd(table));
        let batches = futures::stream::iter(common::flights(1000, 100).into_iter().map(Ok));
        let encoded = FlightDataEncoderBuilder::new()
            .with_schema(mallard_flights::schema())
            .build(batches);
        let words = futures::stream::iter(control_words.into_iter().map(|c| Ok(c.message())));
        futures::stream::once(async { Ok(first) })
            .chain(encoded)
            .chain(words)
    };
    // Prepared, then the stream ends without `commit`: nothing is written.
    let mut alice = common::login(&server, ALICE).await;
    let mut answers: Vec<_> = alice
        .do_put(put(vec![Control::Prepare], "uncommitted"))
        .await
        .unwrap()
        .collect()
        .await;
    let prepared: serde_json::Value =
        serde_json::from_slice(&answers[0].as_ref().unwrap().app_metadata).unwrap();
    assert_eq!(prepared["prepared"], 1000);
    let err = common::to_status(answers.remove(1).unwrap_err());
    assert_eq!(err.code(), Code::Aborted, "{err}");
    assert!(!table_exists(&server, "uncommitted").await);
    // `commit` before `prepare` is refused.
    let mut answers: Vec<_> = alice
        .do_put(put(vec![Control::Commit], "early"))
        .await
        .unwrap()
        .collect()
        .await;
    let err = common::to_status(answers.remove(0).unwrap_err());
    assert_eq!(err.code(), Code::InvalidArgument, "{err}");
    assert!(!table_exists(&server, "early").await);
    // Prepare, then commit: written.
    let answers: Vec<_> = alice
        .do_put(put(vec![Control::Prepare, Control::Commit], "committed"))
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    let done: serde_json::Value = serde_json::from_slice(&answers[1].app_metadata).unwrap();
    assert_eq!(done["rows"], 1000);
    assert!(table_exists(&server, "committed").await);
    common::assert_idle(&mut common::client(&server).await).await;
    server.stop().await.unwrap();
}

/// Rows `exchanger` (`add_processed`) marks processed over every node's part of
/// `flights`, read through one FlightInfo as `caller` (a client asking every node).
async fn processed_everywhere(caller: &mut FlightClient, exchanger: &str) -> u64 {
    let sql = format!("SELECT * FROM exchange('{exchanger}', 'SELECT * FROM flights')");
    let info = caller
        .get_flight_info(FlightDescriptor::new_cmd(sql))
        .await
        .unwrap();
    assert_eq!(info.endpoint.len(), 3);
    let mut processed = 0;
    for endpoint in &info.endpoint {
        let ticket = endpoint.ticket.clone().unwrap();
        let location = endpoint.location.first().map(|l| l.uri.as_str());
        let stream = match location {
            None => caller.do_get(ticket).await.unwrap(),
            Some(_) => endpoint_client(caller, location)
                .await
                .do_get(ticket)
                .await
                .unwrap(),
        };
        let batches: Vec<RecordBatch> = stream.try_collect().await.unwrap();
        for batch in batches {
            let flag = batch.column_by_name("processed").unwrap();
            let flag = flag
                .as_any()
                .downcast_ref::<arrow::array::BooleanArray>()
                .unwrap();
            processed += flag.true_count() as u64;
        }
    }
    processed
}

/// The body of `component`'s upload to every peer.
fn upload_to_peers(component: &str) -> bytes::Bytes {
    let to_peers = mallard_protocol::UploadOptions {
        to_peers: true,
        ..Default::default()
    };
    mallard_protocol::UploadRequest::encode(&common::component(component), &to_peers).into()
}

/// Asserts that `report` (of node 0) lists every other node with the same pin.
fn assert_same_on_every_peer(report: &serde_json::Value, nodes: &[RunningServer]) {
    let peers = report["peers"].as_array().unwrap();
    assert_eq!(peers.len(), nodes.len() - 1, "{report}");
    for (peer, node) in peers.iter().zip(&nodes[1..]) {
        assert_eq!(peer["node"], node.url());
        assert_eq!(
            peer["pinned"], report["pinned"],
            "the same bytes everywhere"
        );
    }
}

/// Stops every node of a cluster, each idle first.
async fn stop_idle(nodes: Vec<RunningServer>) {
    for node in nodes {
        common::assert_idle(&mut common::client(&node).await).await;
        node.stop().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_exchanger_uploaded_to_peers_runs_next_to_every_part() {
    let nodes = start_cluster(cluster_configs(|_, _| {})).await;
    load_parts(&nodes, "flights").await;
    let mut alice = every_node_client(&nodes[0], ALICE).await;
    let body = upload_to_peers("add_processed");
    let report = common::action(&mut alice, "upload_exchanger", body.clone())
        .await
        .unwrap();
    assert_same_on_every_peer(&report, &nodes);
    let pinned = report["pinned"].as_str().unwrap();
    assert_eq!(
        processed_everywhere(&mut alice, pinned).await,
        3 * PART_ROWS
    );

    // A node without peers refuses before storing anything.
    let alone = common::start_with(common::config_with_accounts()).await;
    let mut alice_alone = common::login(&alone, ALICE).await;
    let err = common::action(&mut alice_alone, "upload_exchanger", body)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err}");
    let listed = common::action(&mut alice_alone, "list_exchangers", "")
        .await
        .unwrap();
    let owners: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["owner"].as_str())
        .collect();
    assert!(
        owners.iter().all(|o| *o == "shared"),
        "nothing stored: {owners:?}"
    );
    alone.stop().await.unwrap();
    stop_idle(nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_pusher_that_vanishes_mid_push_leaves_nothing_anywhere() {
    let nodes = start_cluster(cluster_configs(|_, _| {})).await;
    let source: Vec<RecordBatch> = (0..4 * PART_ROWS)
        .step_by(125_000)
        .map(|offset| mallard_flights::batch(offset, 125_000))
        .collect();
    common::put(&mut common::client(&nodes[0]).await, "all_flights", source)
        .await
        .unwrap();
    let body = serde_json::json!({
        "table": "all_flights", "target_table": "flights",
        "to": [nodes[1].url(), nodes[2].url()], "partition": "round_robin",
    })
    .to_string();
    let mut alice = common::login(&nodes[0], ALICE).await;
    let pushing = tokio::spawn(async move { common::action(&mut alice, "push_table", body).await });
    let mut watcher = common::client(&nodes[1]).await;
    loop {
        let health = common::action(&mut watcher, "healthcheck", "")
            .await
            .unwrap();
        if health["live"]["ingests"].as_u64() > Some(0) {
            break;
        }
        assert!(
            !pushing.is_finished(),
            "the push ended before the client left"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // The client goes away (its call is cancelled) while the targets ingest.
    pushing.abort();
    for node in &nodes {
        common::assert_idle(&mut common::client(node).await).await;
    }
    for node in &nodes[1..] {
        assert!(!table_exists(node, "flights").await, "{}", node.url());
    }
    for node in nodes {
        node.stop().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_exchanger_published_to_peers_is_shared_on_every_node() {
    let nodes = start_cluster(cluster_configs(|_, _| {})).await;
    load_parts(&nodes, "flights").await;
    let mut alice = every_node_client(&nodes[0], ALICE).await;
    let uploaded = common::action(
        &mut alice,
        "upload_exchanger",
        upload_to_peers("add_processed"),
    )
    .await
    .unwrap();
    let publish = r#"{"exchanger": "alice/add_processed", "to_peers": true}"#;
    // Publishing is an admin's, here as anywhere.
    let err = common::action(&mut alice, "publish_exchanger", publish)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err}");

    let mut admin = common::client(&nodes[0]).await;
    let published = common::action(&mut admin, "publish_exchanger", publish)
        .await
        .unwrap();
    assert_eq!(published["sha256"], uploaded["sha256"]);
    assert_same_on_every_peer(&published, &nodes);
    // Bob, who never uploaded it, runs the shared version next to every part.
    let mut bob = every_node_client(&nodes[0], BOB).await;
    let pinned = published["pinned"].as_str().unwrap();
    assert_eq!(processed_everywhere(&mut bob, pinned).await, 3 * PART_ROWS);
    // Publishing again finds the same bytes on every node.
    let again = common::action(&mut admin, "publish_exchanger", publish)
        .await
        .unwrap();
    assert_eq!(again["pinned"], published["pinned"]);

    // A version only this node holds: the first peer that lacks it is named.
    let local_only = common::action(
        &mut alice,
        "upload_exchanger",
        common::component("running_totals"),
    )
    .await
    .unwrap();
    assert!(local_only.get("peers").is_none());
    let err = common::action(
        &mut admin,
        "publish_exchanger",
        r#"{"exchanger": "alice/running_totals", "to_peers": true}"#,
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err}");
    assert!(err.message().contains(&nodes[1].url()), "{err}");
    // A node without peers refuses before publishing anything.
    let alone = common::start_with(common::config_with_accounts()).await;
    let mut alice_alone = common::login(&alone, ALICE).await;
    let uploaded_alone = common::action(
        &mut alice_alone,
        "upload_exchanger",
        common::component("running_totals"),
    )
    .await
    .unwrap();
    let mut admin_alone = common::client(&alone).await;
    let err = common::action(
        &mut admin_alone,
        "publish_exchanger",
        r#"{"exchanger": "alice/running_totals", "to_peers": true}"#,
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err}");
    let listed = common::action(&mut admin_alone, "list_exchangers", "")
        .await
        .unwrap();
    let published_alone = listed
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["owner"] == "shared")
        .flat_map(|e| e["versions"].as_array().unwrap())
        .any(|v| v["sha256"] == uploaded_alone["sha256"]);
    assert!(!published_alone, "nothing published: {listed}");
    alone.stop().await.unwrap();
    stop_idle(nodes).await;
}
