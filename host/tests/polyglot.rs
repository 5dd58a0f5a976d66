//! Exchangers written in Python (componentize-py) and JavaScript
//! (componentize-js), built from `guest-exchangers/python` and
//! `guest-exchangers/js` by the test itself: the SDKs' unit tests, ports that
//! must match the Rust built-ins row for row, and hostile guests that must end
//! with their precise status while other clients are served.
//!
//! The toolchains are installed into caches on first use; when a registry
//! cannot be reached the tests say so and skip.

mod common;

use arrow::array::RecordBatch;
use arrow::compute::concat_batches;
use common::*;
use mallard_guest_builder::BuildError;
use mallard_guest_builder::polyglot::Language;
use std::process::Command;
use std::time::{Duration, Instant};
use tonic::Code;

/// Builds a component, or explains why the test skips (no registry).
async fn built(language: Language, app: &'static str) -> Option<Vec<u8>> {
    let path =
        tokio::task::spawn_blocking(move || mallard_guest_builder::polyglot::build(language, app))
            .await
            .unwrap();
    match path {
        Ok(path) => Some(std::fs::read(path).unwrap()),
        Err(BuildError::ToolchainUnavailable(why)) => {
            eprintln!("SKIPPED: the {language:?} toolchain cannot be installed: {why}");
            None
        }
        Err(e) => panic!("{language:?} {app}: {e}"),
    }
}

/// Uploads `bytes` as the caller; returns the exchanger's name.
async fn upload_bytes(client: &mut arrow_flight::FlightClient, bytes: Vec<u8>) -> String {
    let report = action(client, "upload_exchanger", bytes)
        .await
        .expect("upload succeeds");
    report["name"].as_str().unwrap().to_owned()
}

fn one(batches: &[RecordBatch]) -> RecordBatch {
    concat_batches(&batches[0].schema(), batches).unwrap()
}

#[test]
fn the_python_sdk_reads_and_writes_what_pyarrow_does() {
    let pyarrow = match mallard_guest_builder::polyglot::pyarrow_for_tests() {
        Ok(dir) => dir,
        Err(e) => return eprintln!("SKIPPED: pyarrow cannot be installed: {e}"),
    };
    let flatbuffers = mallard_guest_builder::polyglot::flatbuffers_package().unwrap();
    let sdk = mallard_guest_builder::components::workspace().join("guest-exchangers/python");
    let paths = std::env::join_paths([pyarrow, flatbuffers]).unwrap();
    let output = Command::new("python3")
        .arg(sdk.join("tests/test_sdk.py"))
        .env("PYTHONPATH", paths)
        .output()
        .expect("python3 runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    eprintln!("{stderr}");
    assert!(output.status.success(), "Python SDK tests failed");
    assert!(stderr.contains("OK"), "{stderr}");
}

#[test]
fn the_javascript_sdk_reads_and_writes_what_apache_arrow_does() {
    let modules = match mallard_guest_builder::polyglot::node_modules() {
        Ok(dir) => dir,
        Err(e) => return eprintln!("SKIPPED: the JavaScript toolchain cannot be installed: {e}"),
    };
    let sdk = mallard_guest_builder::components::workspace().join("guest-exchangers/js");
    let bundle =
        std::env::temp_dir().join(format!("mallard-js-sdk-{}.test.mjs", std::process::id()));
    let status = Command::new(modules.join(".bin/esbuild"))
        .arg(sdk.join("tests/sdk.test.js"))
        .args([
            "--bundle",
            "--format=esm",
            "--platform=node",
            "--log-level=warning",
        ])
        .arg(format!("--outfile={}", bundle.display()))
        .env("NODE_PATH", &modules)
        .status()
        .expect("esbuild runs");
    assert!(status.success());
    let output = Command::new("node")
        .arg("--test")
        .arg(&bundle)
        .output()
        .expect("node runs");
    let _ = std::fs::remove_file(&bundle);
    let stdout = String::from_utf8_lossy(&output.stdout);
    eprintln!("{stdout}");
    assert!(output.status.success(), "JavaScript SDK tests failed");
    assert!(stdout.contains("# fail 0"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn python_and_javascript_ports_match_the_rust_builtins_on_a_million_rows() {
    let mut ports = Vec::new();
    for language in [Language::Python, Language::JavaScript] {
        let Some(add) = built(language, "add_processed").await else {
            return;
        };
        let Some(totals) = built(language, "running_totals").await else {
            return;
        };
        ports.push((language, add, totals));
    }
    let mut config = config_with_accounts();
    // Correctness, not speed: a keyed JavaScript running total takes ~0.8 s per
    // 122,880-row batch here, too close to the 2 s default on a loaded CI machine.
    config.limits.call_timeout = Duration::from_secs(10);
    let server = start_with(config).await;
    let mut admin = login(&server, ("admin", "password123")).await;
    upload(&mut admin, "add_processed").await;
    upload(&mut admin, "running_totals").await;
    // Each port lives in its own user's namespace under the built-ins' names.
    let mut clients = Vec::new();
    for ((language, add, totals), who) in ports.into_iter().zip([ALICE, BOB]) {
        let mut client = login(&server, who).await;
        assert_eq!(upload_bytes(&mut client, add).await, "add_processed");
        assert_eq!(upload_bytes(&mut client, totals).await, "running_totals");
        clients.push((language, client));
    }
    let input = flights(1_000_000, 122_880);
    put(&mut admin, "flights", input.clone()).await.unwrap();
    for command in [
        "add_processed",
        "running_totals",
        r#"{"exchanger": "running_totals", "params": {"key": "origin"}}"#,
        r#"{"exchanger": "running_totals", "params": {"value": "distance_miles", "key": "carrier"}}"#,
    ] {
        let expected = one(&exchange(&mut admin, command, input.clone()).await.unwrap());
        assert_eq!(expected.num_rows(), 1_000_000);
        for (language, client) in &mut clients {
            let started = Instant::now();
            let out = exchange(client, command, input.clone())
                .await
                .unwrap_or_else(|e| panic!("{language:?} {command}: {e}"));
            eprintln!("{language:?} {command}: {:?}", started.elapsed());
            assert_eq!(one(&out), expected, "{language:?} {command}");
        }
    }
    // And through SQL: the table function calls each user's own port.
    let sql = "SELECT * FROM exchange('running_totals', 'SELECT * FROM flights ORDER BY flight_id', \
               params := map{'key': 'destination'}) ORDER BY flight_id";
    let expected = one(&query(&mut admin, sql).await.unwrap());
    assert_eq!(expected.num_rows(), 1_000_000);
    for (language, client) in &mut clients {
        let out = one(&query(client, sql).await.unwrap());
        assert_eq!(out, expected, "{language:?} through exchange()");
    }
    // Nested input (a struct of a number and a string, a list, a map): what
    // add_processed passes through and running_totals never reads (JavaScript
    // reads it on demand, the nested columns' trees included) comes out as it
    // went in.
    let nested = query(
        &mut admin,
        "SELECT i AS id, {'a': i, 'b': 'é' || i} AS s, [i, i + 1] AS l, \
         map{'k': i} AS m, (i * 1.5)::DOUBLE AS v FROM range(300000) t(i)",
    )
    .await
    .unwrap();
    for command in [
        "add_processed",
        r#"{"exchanger": "running_totals", "params": {"value": "v"}}"#,
    ] {
        let expected = one(&exchange(&mut admin, command, nested.clone()).await.unwrap());
        assert_eq!(expected.num_rows(), 300_000);
        for (language, client) in &mut clients {
            let out = exchange(client, command, nested.clone())
                .await
                .unwrap_or_else(|e| panic!("{language:?} {command} on nested input: {e}"));
            assert_eq!(
                one(&out),
                expected,
                "{language:?} {command} on nested input"
            );
        }
    }
    server.stop().await.unwrap();
}

const DEADLINE: Duration = Duration::from_secs(2);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hostile_python_and_javascript_guests_end_with_precise_statuses() {
    let mut guests = Vec::new();
    for (language, app, code, needle) in [
        (
            Language::Python,
            "hostile/endless_loop",
            Code::DeadlineExceeded,
            "deadline",
        ),
        (
            Language::Python,
            "hostile/memory_bomb",
            Code::ResourceExhausted,
            "memory limit",
        ),
        (
            Language::Python,
            "hostile/raises",
            Code::Aborted,
            "RuntimeError: the guest gave up on batch 2",
        ),
        (
            Language::JavaScript,
            "hostile/endless_loop",
            Code::DeadlineExceeded,
            "deadline",
        ),
        (
            Language::JavaScript,
            "hostile/memory_bomb",
            Code::ResourceExhausted,
            "memory limit",
        ),
        (
            Language::JavaScript,
            "hostile/throws",
            Code::Aborted,
            "TypeError: the guest gave up on batch 2",
        ),
        (
            Language::JavaScript,
            "hostile/lookalike",
            Code::Aborted,
            "exchanger \"js_lookalike\": push/finish returned",
        ),
        (
            Language::Python,
            "hostile/lookalike",
            Code::Aborted,
            "'py_lookalike': push/finish returned a batch whose schema is not",
        ),
    ] {
        let Some(bytes) = built(language, app).await else {
            return;
        };
        guests.push((language, app, bytes, code, needle));
    }
    let mut config = test_config();
    config.limits.call_timeout = DEADLINE;
    config.limits.max_memory_bytes = 256 << 20;
    let server = start_with(config).await;
    let mut client = client(&server).await;
    for (language, app, bytes, code, needle) in guests {
        let name = upload_bytes(&mut client, bytes).await;
        let what = format!("{language:?} {app}");
        let limit = DEADLINE * 2 + Duration::from_secs(3);
        let input = flights(2_000, 1_000);
        expect_hostile_contained(&server, &what, &name, input, (code, needle), limit).await;
    }
    // Contract 0.2's lies (to emit and to input), from Python written against the
    // bindings directly.
    if let Some(liar) = built(Language::Python, "hostile/pass_through_liar").await {
        let name = upload_bytes(&mut client, liar).await;
        for (lie, code, needle) in [
            (
                "index",
                Code::InvalidArgument,
                "input column 99 does not exist",
            ),
            ("flood", Code::ResourceExhausted, "more than 4096 emits"),
            ("in-open", Code::InvalidArgument, "outside push and finish"),
            (
                "read-index",
                Code::InvalidArgument,
                "named column 99 of an input of",
            ),
            ("read-twice", Code::InvalidArgument, "named column 0 twice"),
        ] {
            let command = format!(r#"{{"exchanger": "{name}", "params": {{"lie": "{lie}"}}}}"#);
            let what = format!("Python pass_through_liar {lie}");
            let limit = DEADLINE * 2 + Duration::from_secs(3);
            let input = flights(2_000, 1_000);
            expect_hostile_contained(&server, &what, &command, input, (code, needle), limit).await;
        }
    }
    assert_idle(&mut client).await;
    server.stop().await.unwrap();
}

/// Contract 0.2 in Python: output leaves through `emit` during each call, so a
/// stream may carry far more than the instance's memory. Built for 0.1, the same
/// Python add_processed ended this stream ResourceExhausted at batch 55 (its
/// returned buffers are kept until the stream ends).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_python_stream_outgrows_its_instance_memory() {
    let Some(add) = built(Language::Python, "add_processed").await else {
        return;
    };
    let Some(totals) = built(Language::Python, "running_totals").await else {
        return;
    };
    let mut config = test_config();
    config.limits.max_memory_bytes = 128 << 20;
    config.limits.call_timeout = Duration::from_secs(10);
    let server = start_with(config).await;
    let mut client = client(&server).await;
    upload_bytes(&mut client, add).await;
    upload_bytes(&mut client, totals).await;
    let rows = 4_000_000;
    let input = flights(rows, 122_880);
    let bytes: usize = input.iter().map(|b| b.get_array_memory_size()).sum();
    assert!(
        bytes > 2 * (128 << 20),
        "the stream must outgrow the instance: {bytes}"
    );
    // One instance: the whole stream through one instance's memory.
    let one_instance = r#"{"exchanger": "admin/add_processed", "instances": 1}"#;
    let out = exchange(&mut client, one_instance, input.clone())
        .await
        .unwrap_or_else(|e| panic!("add_processed: {e}"));
    assert_eq!(out.iter().map(|b| b.num_rows()).sum::<usize>(), rows);
    let native = exchange(
        &mut client,
        r#"{"exchanger": "shared/running_totals", "sandbox": "off"}"#,
        input.clone(),
    )
    .await
    .unwrap();
    let python = exchange(&mut client, "admin/running_totals", input)
        .await
        .unwrap_or_else(|e| panic!("running_totals: {e}"));
    assert_eq!(one(&python), one(&native));
    assert_idle(&mut client).await;
    server.stop().await.unwrap();
}
