//! Every door holds: a hostile but authenticated client (role `user` or
//! `reader`) tries what issue "every door holds" found, against real servers,
//! and is refused with the right code while the server keeps serving.

mod common;

use arrow::array::{NullArray, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema};
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::{FlightClient, FlightDescriptor, Ticket};
use common::*;
use futures::StreamExt;
use mallard::auth::Role;
use std::sync::Arc;
use std::time::Duration;
use tonic::Code;

fn code_of<T: std::fmt::Debug>(r: Result<T, tonic::Status>) -> Code {
    r.expect_err("expected an error").code()
}

async fn tables(client: &mut FlightClient) -> Vec<String> {
    action(client, "list_tables", "")
        .await
        .unwrap()
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ddl_and_dml_through_do_get_need_admin() {
    let server = start_with(config_with_accounts()).await;
    let mut admin = client(&server).await;
    action(&mut admin, "sql", "CREATE TABLE t AS SELECT 1 AS v")
        .await
        .unwrap();
    for who in [ALICE, RITA] {
        let mut c = login(&server, who).await;
        for sql in [
            "CREATE TABLE evil AS SELECT 1",
            "DELETE FROM t",
            "DROP TABLE t",
            "INSERT INTO t VALUES (2)",
            "UPDATE t SET v = 9",
            "SELECT 1; DROP TABLE t",
            "SET threads = 1",
            "PRAGMA threads = 1",
            "CALL checkpoint()",
            "BEGIN TRANSACTION",
            "EXPLAIN ANALYZE DELETE FROM t",
        ] {
            let err = query(&mut c, sql).await.unwrap_err();
            assert_eq!(err.code(), Code::PermissionDenied, "{who:?} {sql}: {err}");
        }
        // Reads, DESCRIBE/SHOW/SUMMARIZE, VALUES and EXPLAIN are fine.
        for sql in [
            "SELECT * FROM t",
            "WITH x AS (SELECT 1) SELECT * FROM x",
            "VALUES (1), (2)",
            "DESCRIBE t",
            "SHOW TABLES",
            "SUMMARIZE t",
            "EXPLAIN SELECT * FROM t",
        ] {
            query(&mut c, sql)
                .await
                .unwrap_or_else(|e| panic!("{who:?} {sql}: {e}"));
        }
        let err = action(&mut c, "sql", "DROP TABLE t").await.unwrap_err();
        assert_eq!(err.code(), Code::PermissionDenied);
    }
    assert_eq!(scalar_i64(&mut admin, "SELECT count(*) FROM t").await, 1);
    assert_eq!(scalar_i64(&mut admin, "SELECT max(v) FROM t").await, 1);
    assert_eq!(tables(&mut admin).await, vec!["t"]);
    // Admins keep DDL/DML through do_get.
    query(&mut admin, "INSERT INTO t VALUES (2)").await.unwrap();
    assert_eq!(scalar_i64(&mut admin, "SELECT count(*) FROM t").await, 2);
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schema_lookups_never_execute_client_sql() {
    let server = start_with(config_with_accounts()).await;
    let mut admin = client(&server).await;
    action(&mut admin, "sql", "CREATE SEQUENCE s")
        .await
        .unwrap();
    let mut alice = login(&server, ALICE).await;
    let injection = "SELECT 1) LIMIT 0; CREATE TABLE injected AS SELECT 1; SELECT * FROM (SELECT 1";
    for client in [&mut alice, &mut admin] {
        let err = client
            .get_schema(FlightDescriptor::new_cmd(injection))
            .await
            .map_err(to_status);
        assert_eq!(code_of(err), Code::InvalidArgument);
        let err = client
            .get_flight_info(FlightDescriptor::new_cmd(injection))
            .await
            .map_err(to_status);
        assert_eq!(code_of(err), Code::InvalidArgument);
        let err = client
            .get_flight_info(FlightDescriptor::new_cmd("CREATE TABLE x (a INT)"))
            .await
            .map_err(to_status);
        if err.is_err() {
            assert_eq!(code_of(err), Code::PermissionDenied);
        }
    }
    assert!(tables(&mut admin).await.is_empty(), "nothing was created");
    // The admin's schema lookups of a side-effecting query do not run it either.
    for _ in 0..3 {
        let info = admin
            .get_flight_info(FlightDescriptor::new_cmd("SELECT nextval('s') AS n"))
            .await
            .unwrap();
        let schema = info.try_decode_schema().unwrap();
        assert_eq!(schema.field(0).name(), "n");
        assert_eq!(schema.field(0).data_type(), &DataType::Int64);
    }
    assert_eq!(scalar_i64(&mut admin, "SELECT nextval('s')").await, 1);
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_cannot_touch_the_servers_own_files() {
    let dir = tempfile::tempdir().unwrap();
    let db_path = dir.path().join("mallard.duckdb");
    let mut config = config_with_accounts();
    config.db.path = Some(db_path.clone());
    let server = start_with(config).await;
    let mut admin = client(&server).await;
    put(&mut admin, "kept", flights(1000, 1000)).await.unwrap();
    let db = db_path.display().to_string();
    let wal = format!("{db}.wal");
    let wal_before = std::fs::read(&wal).unwrap_or_default();
    let mut alice = login(&server, ALICE).await;
    for client in [&mut admin, &mut alice] {
        for sql in [
            format!("COPY (SELECT 'x'::BLOB) TO '{wal}' (FORMAT blob, USE_TMP_FILE false)"),
            format!("COPY kept TO '{db}.csv'"),
            format!("EXPORT DATABASE '{}'", dir.path().join("export").display()),
            format!(
                "ATTACH '{}' AS other",
                dir.path().join("other.duckdb").display()
            ),
            format!("SELECT * FROM read_blob('{db}')"),
            format!("SELECT * FROM read_text('{wal}')"),
            format!("SELECT * FROM read_csv('{db}')"),
            format!("SELECT * FROM glob('{}/*')", dir.path().display()),
            format!("SELECT count(*) FROM '{db}'"),
            format!("SELECT * FROM query('SELECT * FROM read_blob(''{db}'')')"),
        ] {
            // Schema lookups refuse them too, before DuckDB binds (and sniffs) anything.
            let err = client
                .get_schema(FlightDescriptor::new_cmd(sql.clone()))
                .await
                .map_err(to_status);
            assert_eq!(code_of(err), Code::PermissionDenied, "schema of {sql}");
            let err = query(client, &sql).await.unwrap_err();
            assert_eq!(err.code(), Code::PermissionDenied, "{sql}: {err}");
        }
    }
    assert_eq!(
        std::fs::read(&wal).unwrap_or_default(),
        wal_before,
        "WAL untouched"
    );
    assert!(!dir.path().join("export").exists());
    assert_eq!(
        scalar_i64(&mut admin, "SELECT count(*) FROM kept").await,
        1000
    );
    server.stop().await.unwrap();
    // The database reopens with its data.
    let mut config = test_config();
    config.db.path = Some(db_path);
    let server = start_with(config).await;
    let mut admin = client(&server).await;
    assert_eq!(
        scalar_i64(&mut admin, "SELECT count(*) FROM kept").await,
        1000
    );
    server.stop().await.unwrap();
}

/// `--allow-dir` opens one directory to an admin's SQL and nothing else: reads
/// and writes inside it work, paths that leave it (`..`, a symlink, a sibling
/// whose name starts alike) are refused by DuckDB, and users never get files.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_allowed_directory_is_the_only_one_sql_reaches() {
    let root = tempfile::tempdir().unwrap();
    let allowed = root.path().join("shared");
    let outside = root.path().join("shared-not");
    std::fs::create_dir_all(&allowed).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("secret.csv"), "secret\n42\n").unwrap();
    std::os::unix::fs::symlink(outside.join("secret.csv"), allowed.join("link.csv")).unwrap();
    let mut config = config_with_accounts();
    config.db.allowed_dirs = vec![allowed.clone()];
    let server = start_with(config).await;
    let mut admin = client(&server).await;
    put(&mut admin, "kept", flights(1000, 1000)).await.unwrap();
    let export = allowed.join("kept.csv").display().to_string();
    action(&mut admin, "sql", format!("COPY kept TO '{export}'"))
        .await
        .unwrap();
    assert_eq!(
        scalar_i64(
            &mut admin,
            &format!("SELECT count(*) FROM read_csv('{export}')")
        )
        .await,
        1000
    );
    let escapes = [
        outside.join("secret.csv").display().to_string(),
        allowed
            .join("../shared-not/secret.csv")
            .display()
            .to_string(),
        allowed.join("link.csv").display().to_string(),
    ];
    for path in &escapes {
        let err = query(&mut admin, &format!("SELECT * FROM read_csv('{path}')"))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::PermissionDenied, "{path}: {err}");
    }
    let err = action(
        &mut admin,
        "sql",
        format!("COPY kept TO '{}'", outside.join("out.csv").display()),
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err}");
    assert!(!outside.join("out.csv").exists());
    let mut alice = login(&server, ALICE).await;
    let err = query(
        &mut alice,
        &format!("SELECT count(*) FROM read_csv('{export}')"),
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err}");
    // Nobody turns the limit off again.
    let err = action(&mut admin, "sql", "SET allowed_directories = ['/']")
        .await
        .unwrap_err();
    assert_ne!(err.code(), Code::Ok);
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_goes_only_to_allowed_targets_and_connects_nowhere_else() {
    let server = start_with(config_with_accounts()).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let trap = listener.local_addr().unwrap();
    let mut admin = client(&server).await;
    put(&mut admin, "t", flights(10, 10)).await.unwrap();
    let mut alice = login(&server, ALICE).await;
    for to in [
        format!("grpc://{trap}"),
        format!("grpc://localhost:{}", trap.port()),
        "grpc://10.255.255.1:8815".to_owned(),
    ] {
        let body = serde_json::json!({"table": "t", "to": to}).to_string();
        let err = action(&mut alice, "push_table", body).await.unwrap_err();
        assert_eq!(err.code(), Code::PermissionDenied, "{to}: {err}");
    }
    let accepted = tokio::time::timeout(Duration::from_millis(300), listener.accept()).await;
    assert!(
        accepted.is_err(),
        "the server connected to a refused target"
    );
    // Readers may not push at all; users may push to this process's own servers.
    let mut rita = login(&server, RITA).await;
    let body = serde_json::json!({"table": "t", "to": server.url(), "target_table": "t2"});
    let err = action(&mut rita, "push_table", body.to_string())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    let pushed = action(&mut alice, "push_table", body.to_string())
        .await
        .unwrap();
    assert_eq!(pushed["rows"], 10);
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_read_and_exchange_but_do_not_write() {
    let server = start_with(config_with_accounts()).await;
    let mut rita = login(&server, RITA).await;
    let err = put(&mut rita, "r", flights(10, 10)).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err}");
    let native = r#"{"exchanger": "add_processed", "sandbox": "off"}"#;
    let out = exchange(&mut rita, native, flights(100, 100))
        .await
        .unwrap();
    assert_eq!(rows(&out), 100);
    let mut alice = login(&server, ALICE).await;
    assert_eq!(put(&mut alice, "a", flights(10, 10)).await.unwrap(), 10);
    assert_eq!(scalar_i64(&mut rita, "SELECT count(*) FROM a").await, 10);
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unread_streams_are_capped_per_user_and_freed_at_the_stall_timeout() {
    let mut config = config_with_accounts();
    config.stall_timeout = Duration::from_secs(1);
    config.max_queries_per_user = 4;
    config.query_output_per_user_bytes = 8 << 20;
    let server = start_with(config).await;
    let mut alice = login(&server, ALICE).await;
    let big = "SELECT range AS v, range * 2 AS w FROM range(50000000)";
    let mut open = Vec::new();
    for _ in 0..4 {
        open.push(alice.do_get(Ticket::new(big)).await.unwrap());
    }
    let err = alice.do_get(Ticket::new(big)).await.map_err(to_status);
    assert_eq!(code_of(err), Code::ResourceExhausted);
    // A bystander is served meanwhile, and alice's unread streams hold no more
    // queued output than her budget.
    let mut admin = client(&server).await;
    assert_eq!(scalar_i64(&mut admin, "SELECT 42").await, 42);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let health = action(&mut admin, "healthcheck", "").await.unwrap();
    let queued = health["live"]["queued_output_bytes"].as_u64().unwrap();
    assert!(queued > 0 && queued <= 8 << 20, "{health}");
    // After the stall timeout the server has let go of every unread stream.
    within(Duration::from_secs(10), async {
        loop {
            let health = action(&mut admin, "healthcheck", "").await.unwrap();
            if health["live"]["queries"] == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    // The cut-off streams gave their slots and budget back at the stall, unread.
    let health = action(&mut admin, "healthcheck", "").await.unwrap();
    assert_eq!(health["live"]["get_streams"], 0, "{health}");
    assert_eq!(health["live"]["queued_output_bytes"], 0, "{health}");
    // Reading one now ends with DeadlineExceeded, never a clean truncated end.
    // (The others go first: their unread data holds this connection's HTTP/2 window.)
    let mut stream = open.pop().unwrap();
    drop(open);
    let outcome = within(Duration::from_secs(10), async {
        let mut rows = 0;
        while let Some(item) = stream.next().await {
            rows += item.map_err(to_status)?.num_rows();
        }
        Ok::<_, tonic::Status>(rows)
    })
    .await;
    assert_eq!(code_of(outcome), Code::DeadlineExceeded);
    drop(stream);
    assert_eq!(scalar_i64(&mut alice, "SELECT 1").await, 1);
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unfed_put_is_cancelled_at_the_stall_timeout() {
    let mut config = config_with_accounts();
    config.stall_timeout = Duration::from_secs(1);
    let server = start_with(config).await;
    let mut alice = login(&server, ALICE).await;
    let (tx, rx) = futures::channel::mpsc::unbounded();
    let batch = flights(10, 10).remove(0);
    let mut messages = FlightDataEncoderBuilder::new()
        .with_flight_descriptor(Some(FlightDescriptor::new_cmd("unfed")))
        .build(futures::stream::iter(vec![Ok(batch)]));
    // Send the schema and one batch, then nothing, and never close.
    for _ in 0..2 {
        tx.unbounded_send(messages.next().await.unwrap()).unwrap();
    }
    let started = std::time::Instant::now();
    let outcome = within(Duration::from_secs(10), async {
        let results = alice.do_put(rx).await;
        match results {
            Ok(mut s) => match s.next().await {
                Some(Err(e)) => Err(to_status(e)),
                other => panic!("unexpected {other:?}"),
            },
            Err(e) => Err::<(), _>(to_status(e)),
        }
    })
    .await;
    assert_eq!(code_of(outcome), Code::DeadlineExceeded);
    assert!(started.elapsed() >= Duration::from_millis(900));
    drop(tx);
    let mut admin = client(&server).await;
    assert_idle(&mut admin).await;
    assert!(tables(&mut admin).await.is_empty(), "nothing was written");
    server.stop().await.unwrap();
}

/// One batch with a Null-typed column that claims `rows` rows in no bytes.
fn null_claim(rows: usize) -> RecordBatch {
    let schema = Arc::new(Schema::new(vec![Field::new("n", DataType::Null, true)]));
    RecordBatch::try_new(schema, vec![Arc::new(NullArray::new(rows))]).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_claiming_billions_of_rows_is_refused_everywhere() {
    let server = start_with(config_with_accounts()).await;
    let mut alice = login(&server, ALICE).await;
    let claim = null_claim(2_000_000_000);
    let err = put(&mut alice, "nulls", vec![claim.clone()])
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err}");
    assert!(err.message().contains("declares 2000000000 rows"), "{err}");
    let mut admin = client(&server).await;
    upload_shared(&mut admin, "add_processed").await;
    for exchanger in [
        "add_processed",
        r#"{"exchanger": "add_processed", "sandbox": "off"}"#,
    ] {
        let err = exchange(&mut alice, exchanger, vec![claim.clone()])
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{exchanger}: {err}");
    }
    // A plausible Null column goes through.
    let native = r#"{"exchanger": "add_processed", "sandbox": "off"}"#;
    let out = exchange(&mut alice, native, vec![null_claim(1000)])
        .await
        .unwrap();
    assert_eq!(rows(&out), 1000);
    assert_idle(&mut admin).await;
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_handshakes_do_not_mint_and_logout_reads_the_header_like_auth() {
    let server = start_with(config_with_accounts()).await;
    let mut alice = login(&server, ALICE).await;
    let header = alice
        .metadata()
        .get("authorization")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    let token = header.trim_start_matches("Bearer ").to_owned();
    let before = server.state().auth.live_sessions();
    for _ in 0..50 {
        let answer = alice.handshake(Vec::<u8>::new()).await.unwrap();
        assert_eq!(answer, token.as_bytes(), "the same token comes back");
    }
    assert_eq!(
        server.state().auth.live_sessions(),
        before,
        "nothing minted"
    );
    // A raw handshake with the token in the BasicAuth-less payload and no header fails.
    let mut anonymous =
        FlightClient::new(mallard::transport::connect(&server.url()).await.unwrap());
    assert!(anonymous.handshake(Vec::<u8>::new()).await.is_err());

    for spelling in [format!("bearer {token}"), format!("Bearer  {token}")] {
        let mut c = login(&server, ALICE).await;
        let own = c
            .metadata()
            .get("authorization")
            .unwrap()
            .to_str()
            .unwrap()
            .trim_start_matches("Bearer ")
            .to_owned();
        let odd = spelling.replace(&token, &own);
        c.metadata_mut()
            .insert("authorization", odd.parse().unwrap());
        let answer = action(&mut c, "logout", "").await.unwrap();
        assert_eq!(answer["revoked"], true, "{odd}");
        let err = query(&mut c, "SELECT 1").await.unwrap_err();
        assert_eq!(err.code(), Code::Unauthenticated, "{odd}");
    }
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unpadded_basic_credentials_are_accepted() {
    use base64::Engine;
    let server = start().await;
    let unpadded = base64::engine::general_purpose::STANDARD_NO_PAD.encode("admin:password123");
    let mut c = FlightClient::new(mallard::transport::connect(&server.url()).await.unwrap());
    c.add_header("authorization", &format!("Basic {unpadded}"))
        .unwrap();
    assert_eq!(scalar_i64(&mut c, "SELECT 3").await, 3);
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_named_with_a_control_character_is_listed() {
    let server = start_with(config_with_accounts()).await;
    let mut admin = client(&server).await;
    action(
        &mut admin,
        "sql",
        "CREATE TABLE \"bell\u{7}tab\" AS SELECT 1 AS v",
    )
    .await
    .unwrap();
    let mut rita = login(&server, RITA).await;
    assert_eq!(tables(&mut rita).await, vec!["bell\u{7}tab"]);
    let infos: Vec<_> = rita
        .list_flights("")
        .await
        .unwrap()
        .collect::<Vec<_>>()
        .await;
    assert_eq!(infos.len(), 1);
    let info = infos.into_iter().next().unwrap().unwrap();
    assert_eq!(info.total_records, 1);
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_failed_logins_are_refused_unverified() {
    let server = start_with(config_with_accounts()).await;
    for _ in 0..mallard::auth::MAX_FAILURES_PER_WINDOW {
        assert!(
            mallard::client::connect(&server.url(), "alice", "wrong")
                .await
                .is_err()
        );
    }
    let started = std::time::Instant::now();
    let err = mallard::client::connect(&server.url(), ALICE.0, ALICE.1)
        .await
        .err()
        .unwrap();
    assert!(err.to_string().contains("too many failed logins"), "{err}");
    assert!(started.elapsed() < Duration::from_millis(500));
    // Bearer-token calls are unaffected.
    let token = server.state().auth.issue_token(mallard::auth::Principal {
        user: "alice".into(),
        role: Role::User,
    });
    let mut c = FlightClient::new(mallard::transport::connect(&server.url()).await.unwrap());
    c.add_header("authorization", &format!("Bearer {token}"))
        .unwrap();
    assert_eq!(scalar_i64(&mut c, "SELECT 4").await, 4);
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_re_emitting_dictionary_deltas_is_held_to_a_bound() {
    let server = start_with(config_with_accounts()).await;
    let mut admin = client(&server).await;
    let name = upload_shared(&mut admin, "hostile_delta_flood").await;
    let mut alice = login(&server, ALICE).await;
    // Each input batch makes the guest send 1 MiB more dictionary as a delta.
    let err = exchange(&mut alice, &name, flights(80, 1))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err}");
    assert!(err.message().contains("deltas would copy"), "{err}");
    assert_idle(&mut admin).await;
    assert_eq!(scalar_i64(&mut alice, "SELECT 1").await, 1);
    server.stop().await.unwrap();
}

/// A `Utf8View` column of `rows` views of one `len`-byte string: about 16 bytes a
/// row sent, `len` bytes a row referenced.
fn shared_views(rows: usize, len: usize) -> RecordBatch {
    let mut builder = arrow::array::StringViewBuilder::new();
    let block = builder.append_block(arrow::buffer::Buffer::from(vec![b'x'; len]));
    for _ in 0..rows {
        builder.try_append_view(block, 0, len as u32).unwrap();
    }
    RecordBatch::try_from_iter([("s", Arc::new(builder.finish()) as arrow::array::ArrayRef)])
        .unwrap()
}

/// Bob asks a question and gets the answer within five seconds (the attacks this
/// follows stalled other users for 14 s; tests run side by side on 2 cores).
async fn bystander_served(server: &mallard::RunningServer) {
    let mut bob = login(server, BOB).await;
    let answer = within(
        Duration::from_secs(5),
        scalar_i64(&mut bob, "SELECT 40 + 2"),
    )
    .await;
    assert_eq!(answer, 42);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_bytes_cannot_amplify_a_put_or_an_exchange() {
    let server = start_with(config_with_accounts()).await;
    let mut alice = login(&server, ALICE).await;
    let mut admin = client(&server).await;
    upload_shared(&mut admin, "add_processed").await;
    // 1 MiB of views of one 64 KiB string reference 4 GiB.
    let bomb = shared_views(65_536, 64 << 10);
    let started = std::time::Instant::now();
    let err = put(&mut alice, "views", vec![bomb.clone()])
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err}");
    assert!(err.message().contains("references"), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert!(!tables(&mut admin).await.contains(&"views".to_owned()));
    bystander_served(&server).await;
    for exchanger in [
        "add_processed",
        r#"{"exchanger": "add_processed", "sandbox": "off"}"#,
    ] {
        let err = exchange(&mut alice, exchanger, vec![bomb.clone()])
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{exchanger}: {err}");
        assert!(err.message().contains("references"), "{exchanger}: {err}");
        bystander_served(&server).await;
    }
    // Views of distinct short strings (what writers produce) go through.
    let ordinary = shared_views(65_536, 12);
    assert_eq!(
        put(&mut alice, "views", vec![ordinary]).await.unwrap(),
        65_536
    );
    assert_eq!(
        scalar_i64(&mut alice, "SELECT count(*) FROM views").await,
        65_536
    );
    assert_idle(&mut admin).await;
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guests_that_lie_in_their_output_are_refused_precisely() {
    let mut config = config_with_accounts();
    config.limits.call_timeout = Duration::from_secs(2);
    let server = start_with(config).await;
    let mut admin = client(&server).await;
    upload_shared(&mut admin, "hostile_liar").await;
    let limit = Duration::from_secs(8);
    for (lie, code, needle) in [
        ("shared-views", Code::InvalidArgument, "references"),
        ("offset-past-body", Code::InvalidArgument, "outside"),
        ("negative-length", Code::InvalidArgument, "length -5"),
        ("huge-error", Code::Aborted, "more bytes cut"),
        // Contract 0.2: lies about the input columns it passes through, and emit.
        (
            "input-index",
            Code::InvalidArgument,
            "input column 99 does not exist",
        ),
        ("input-type", Code::InvalidArgument, "but output field"),
        (
            "input-rows",
            Code::InvalidArgument,
            "1 rows but the input columns",
        ),
        ("input-in-finish", Code::InvalidArgument, "outside push"),
        (
            "emit-flood",
            Code::ResourceExhausted,
            "more than 4096 emits",
        ),
        (
            "emit-in-open",
            Code::InvalidArgument,
            "outside push and finish",
        ),
        // Contract 0.2: lies about the input it reads on demand, each refusal
        // ignored by the guest and reported by the host all the same.
        (
            "read-index",
            Code::InvalidArgument,
            "named column 99 of an input of",
        ),
        ("read-twice", Code::InvalidArgument, "named column 0 twice"),
        (
            "read-in-finish",
            Code::InvalidArgument,
            "outside the push of a record batch",
        ),
        ("read-flood", Code::DeadlineExceeded, "deadline"),
    ] {
        let command = format!(r#"{{"exchanger": "hostile_liar", "params": {{"lie": "{lie}"}}}}"#);
        let input = flights(2_000, 1_000);
        expect_hostile_contained(&server, lie, &command, input, (code, needle), limit).await;
    }
    // The 100 MiB error reaches the client cut to a few KiB.
    let command = r#"{"exchanger": "hostile_liar", "params": {"lie": "huge-error"}}"#;
    let err = exchange(&mut admin, command, flights(10, 10))
        .await
        .unwrap_err();
    assert!(
        err.message().len() < 16 << 10,
        "{} bytes",
        err.message().len()
    );
    assert_idle(&mut admin).await;
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_describe_says_is_bounded_before_it_is_stored() {
    let server = start_with(config_with_accounts()).await;
    let mut alice = login(&server, ALICE).await;
    let err = action(
        &mut alice,
        "upload_exchanger",
        component("hostile_long_description"),
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err}");
    assert!(err.message().contains("at most 1024"), "{err}");
    // Nothing stored; listings still answer, for alice and for the admin.
    let listing = action(&mut alice, "list_exchangers", "").await.unwrap();
    assert!(!listing.to_string().contains("hostile_long_description"));
    let mut admin = client(&server).await;
    action(&mut admin, "list_exchangers", "").await.unwrap();
    server.stop().await.unwrap();
}

/// Repeats `call` while it is refused with ResourceExhausted (a slot is released
/// when its stream's end reaches the server), for at most five seconds; any other
/// error fails the test.
async fn once_slots_free<T>(
    client: &mut FlightClient,
    call: impl for<'c> Fn(
        &'c mut FlightClient,
    ) -> futures::future::BoxFuture<'c, Result<T, tonic::Status>>,
) -> T {
    let started = std::time::Instant::now();
    loop {
        match call(client).await {
            Ok(answer) => return answer,
            Err(e) if e.code() == Code::ResourceExhausted => {
                assert!(
                    started.elapsed() < Duration::from_secs(5),
                    "slots never freed: {e}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("{e}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_door_that_runs_a_statement_takes_a_query_slot() {
    let mut config = config_with_accounts();
    config.max_queries_per_user = 2;
    let server = start_with(config).await;
    let mut admin = client(&server).await;
    // The unread streams on a connection of their own: they fill its HTTP/2 window.
    let mut holder = client(&server).await;
    let big = "SELECT range AS v FROM range(50000000)";
    let mut open = Vec::new();
    for _ in 0..2 {
        open.push(holder.do_get(Ticket::new(big)).await.unwrap());
    }
    // The `sql` action and Flight SQL updates count against the same cap.
    let err = action(&mut admin, "sql", "CREATE TABLE made AS SELECT 1 AS x")
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err}");
    let channel = mallard::transport::connect(&server.url()).await.unwrap();
    let mut sql = arrow_flight::sql::client::FlightSqlServiceClient::new(channel);
    sql.handshake("admin", "password123").await.unwrap();
    let err = sql
        .execute_update("CREATE TABLE made AS SELECT 1 AS x".into(), None)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("already runs 2"), "{err}");
    let health = action(&mut admin, "healthcheck", "").await.unwrap();
    assert_eq!(health["live"]["get_streams"], 2, "{health}");
    assert!(!tables(&mut admin).await.contains(&"made".to_owned()));
    // Slots free, the same statements run.
    drop(open);
    once_slots_free(&mut admin, |c| {
        Box::pin(action(c, "sql", "CREATE TABLE made AS SELECT 1 AS x"))
    })
    .await;
    assert_eq!(
        sql.execute_update("INSERT INTO made VALUES (2)".into(), None)
            .await
            .unwrap(),
        1
    );
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binding_sql_that_calls_exchange_takes_an_exchange_slot() {
    let mut config = config_with_accounts();
    config.max_exchanges_per_user = 1;
    let server = start_with(config).await;
    let mut alice = login(&server, ALICE).await;
    // One exchange held open: its input never ends.
    let batches = flights(100, 100);
    let (tx, rx) = futures::channel::mpsc::unbounded();
    let data = FlightDataEncoderBuilder::new()
        .with_schema(batches[0].schema())
        .with_flight_descriptor(Some(FlightDescriptor::new_cmd(
            r#"{"exchanger": "add_processed", "sandbox": "off"}"#.to_owned(),
        )))
        .build(rx);
    tx.unbounded_send(Ok(batches[0].clone())).unwrap();
    let mut held = alice.do_exchange(data).await.unwrap();
    assert!(held.next().await.is_some(), "the held exchange answers");
    // Schema lookups, prepared statements and queries that bind exchange() are refused.
    let sql = "SELECT * FROM exchange('{\"exchanger\": \"add_processed\", \"sandbox\": \"off\"}', 'SELECT 1 AS x')";
    let descriptor = FlightDescriptor::new_cmd(sql.to_owned());
    let err = alice
        .get_flight_info(descriptor.clone())
        .await
        .map_err(to_status)
        .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err}");
    let err = query(&mut alice, sql).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err}");
    let mut admin = client(&server).await;
    let health = action(&mut admin, "healthcheck", "").await.unwrap();
    assert_eq!(health["live"]["exchanges"], 1, "{health}");
    // Once the held exchange ends, the same lookup answers.
    drop(tx);
    while held.next().await.is_some() {}
    drop(held);
    once_slots_free(&mut alice, |c| {
        let descriptor = descriptor.clone();
        Box::pin(async move { c.get_flight_info(descriptor).await.map_err(to_status) })
    })
    .await;
    assert_idle(&mut admin).await;
    server.stop().await.unwrap();
}

/// A put's messages: the schema of one Int64 column `v`, then a record batch
/// header whose values buffer lies at `offset` with `length` rows, an 80-byte body.
fn put_with_buffer_at(table: &str, offset: i64, length: i64) -> Vec<arrow_flight::FlightData> {
    let schema = Schema::new(vec![Field::new("v", DataType::Int64, false)]);
    let schema_header = mallard_exchanger::ipc::schema_to_header(&schema);
    let header =
        mallard_exchanger::ipc::forged_int64_batch_header(1, length, &[(0, 0), (offset, 80)], 80);
    vec![
        arrow_flight::FlightData {
            flight_descriptor: Some(FlightDescriptor::new_cmd(table.to_owned())),
            data_header: schema_header.into(),
            ..Default::default()
        },
        arrow_flight::FlightData {
            data_header: header.into(),
            data_body: vec![0u8; 80].into(),
            ..Default::default()
        },
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_messages_lying_about_their_buffers_are_invalid_argument() {
    let server = start_with(config_with_accounts()).await;
    let mut alice = login(&server, ALICE).await;
    for (offset, length, needle) in [
        (1 << 40, 10, "outside"),
        (-8, 10, "outside"),
        (0, -5, "length -5"),
    ] {
        let messages = put_with_buffer_at("lies", offset, length);
        let input = futures::stream::iter(
            messages
                .into_iter()
                .map(Ok::<_, arrow_flight::error::FlightError>),
        );
        let outcome: Result<Vec<_>, _> = match alice.do_put(input).await {
            Ok(results) => results.collect::<Vec<_>>().await.into_iter().collect(),
            Err(e) => Err(e),
        };
        let err = to_status(outcome.unwrap_err());
        assert_eq!(
            err.code(),
            Code::InvalidArgument,
            "{offset} {length}: {err}"
        );
        assert!(err.message().contains(needle), "{offset} {length}: {err}");
    }
    let mut admin = client(&server).await;
    assert!(!tables(&mut admin).await.contains(&"lies".to_owned()));
    bystander_served(&server).await;
    assert_idle(&mut admin).await;
    server.stop().await.unwrap();
}
