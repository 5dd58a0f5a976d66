//! The exchanger lifecycle through the real `mallard-demo` binary against a real
//! server: upload, list, exchange a Parquet file into another (rows equal to the
//! built-in's output), sql, remove, and errors printed as code and message.

use arrow::array::{AsArray, RecordBatch};
use arrow::datatypes::Int64Type;
use arrow_flight::FlightDescriptor;
use arrow_flight::encode::FlightDataEncoderBuilder;
use futures::TryStreamExt;
use mallard::auth::{Role, User};
use std::path::Path;
use std::process::{Command, Output};

fn demo(server: &mallard::RunningServer, user: (&str, &str), args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mallard-demo"))
        .args(["--server", &server.addr.to_string()])
        .args(args)
        .env("MALLARD_USER", user.0)
        .env("MALLARD_PASSWORD", user.1)
        .env_remove("RUST_BACKTRACE")
        .output()
        .expect("run mallard-demo")
}

fn ok(output: Output) -> String {
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

fn read_parquet(path: &Path) -> Vec<RecordBatch> {
    let file = std::fs::File::open(path).unwrap();
    parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
        .unwrap()
        .build()
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

const ALICE: (&str, &str) = ("alice", "alice-pw");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_list_exchange_sql_remove_from_the_command_line() {
    let mut config = mallard::ServerConfig::new("127.0.0.1:0".parse().unwrap());
    config
        .users
        .insert("admin".into(), User::new("password123", Role::Admin));
    config
        .users
        .insert(ALICE.0.into(), User::new(ALICE.1, Role::User));
    let server = mallard::start(config).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.parquet");
    let output = dir.path().join("out.parquet");
    let component = mallard_guest_builder::components::build_one(
        "add-processed",
        mallard_guest_builder::components::Profile::Release,
    )
    .unwrap();

    ok(demo(
        &server,
        ALICE,
        &[
            "gen-data",
            "--rows",
            "20000",
            "--out",
            input.to_str().unwrap(),
        ],
    ));
    let uploaded = ok(demo(
        &server,
        ALICE,
        &[
            "upload",
            component.to_str().unwrap(),
            "--dry-run-schema",
            input.to_str().unwrap(),
        ],
    ));
    assert!(
        uploaded.contains("uploaded alice/add_processed"),
        "{uploaded}"
    );
    assert!(uploaded.contains("processed Boolean"), "{uploaded}");
    let listed = ok(demo(&server, ALICE, &["exchangers"]));
    assert!(listed.contains("alice/add_processed"), "{listed}");

    // `mallard-demo exchange add_processed --input in.parquet --output OUT EXTRA…`
    let exchange_to = |out: &Path, extra: &[&str]| {
        let mut args = vec![
            "exchange",
            "add_processed",
            "--input",
            input.to_str().unwrap(),
            "--output",
            out.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        demo(&server, ALICE, &args)
    };
    let exchanged = ok(exchange_to(&output, &[]));
    assert!(
        exchanged.contains("exchanged 20000 rows into 20000"),
        "{exchanged}"
    );
    let listed = ok(demo(&server, ALICE, &["exchangers"]));
    assert!(
        listed
            .lines()
            .any(|l| l.contains("alice/add_processed") && l.contains(" 1 ")),
        "one call listed:\n{listed}"
    );
    // On two instances, output in any order: the same rows.
    let any_order = dir.path().join("any.parquet");
    let exchanged = ok(exchange_to(
        &any_order,
        &["--instances", "2", "--any-order"],
    ));
    assert!(
        exchanged.contains("exchanged 20000 rows into 20000"),
        "{exchanged}"
    );
    let flight_ids = |batches: Vec<RecordBatch>| {
        let mut ids: Vec<i64> = batches
            .iter()
            .flat_map(|b| {
                let ids = b.column_by_name("flight_id").expect("flight_id");
                ids.as_primitive::<Int64Type>().values().to_vec()
            })
            .collect();
        ids.sort_unstable();
        ids
    };
    assert_eq!(
        flight_ids(read_parquet(&any_order)),
        flight_ids(read_parquet(&output)),
        "every row once, whatever the order"
    );
    let refused = demo(
        &server,
        ALICE,
        &[
            "exchange",
            "add_processed",
            "--input",
            "x",
            "--output",
            "y",
            "--instances",
            "0",
        ],
    );
    assert_eq!(refused.status.code(), Some(2), "clap refuses 0 instances");

    // The file equals what the native built-in makes of the same input.
    let got = read_parquet(&output);
    let inputs = read_parquet(&input);
    let mut client = mallard::client::connect(&server.url(), ALICE.0, ALICE.1)
        .await
        .unwrap();
    let data = FlightDataEncoderBuilder::new()
        .with_schema(inputs[0].schema())
        .with_flight_descriptor(Some(FlightDescriptor::new_cmd(
            r#"{"exchanger": "add_processed", "sandbox": "off"}"#,
        )))
        .build(futures::stream::iter(inputs.into_iter().map(Ok)));
    let expected: Vec<RecordBatch> = client
        .do_exchange(data)
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    let concat = |b: &[RecordBatch]| arrow::compute::concat_batches(&b[0].schema(), b).unwrap();
    assert_eq!(concat(&got), concat(&expected));

    let answered = ok(demo(&server, ALICE, &["sql", "SELECT 6 * 7 AS answer"]));
    assert!(
        answered.contains("42") && answered.contains("(1 rows)"),
        "{answered}"
    );

    let removed = ok(demo(&server, ALICE, &["remove", "add_processed"]));
    assert!(
        removed.contains("removed alice/add_processed@"),
        "{removed}"
    );
    // Errors: the server's code and message, no backtrace, exit status 1.
    let failed = exchange_to(&dir.path().join("none.parquet"), &[]);
    let stderr = String::from_utf8_lossy(&failed.stderr);
    assert_eq!(failed.status.code(), Some(1), "{stderr}");
    assert!(stderr.starts_with("error: NotFound: "), "{stderr}");
    assert!(!stderr.contains("backtrace"), "{stderr}");
    assert!(!dir.path().join("none.parquet").exists());
    let refused = demo(&server, ALICE, &["sql", "DROP TABLE IF EXISTS x"]);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.starts_with("error: PermissionDenied: "), "{stderr}");
    server.stop().await.unwrap();
}
