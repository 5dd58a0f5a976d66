//! The benchmark at small N against real servers the demo starts itself: every key
//! of INTERFACE.md is in the JSON line and the row counts match.

use std::process::Command;

#[test]
fn bench_json_has_every_key_and_the_row_count() {
    // Ports of our own so a developer's running servers are not disturbed.
    let output = Command::new(env!("CARGO_BIN_EXE_mallard-demo"))
        .args([
            "bench",
            "--rows",
            "50000",
            "--repeat",
            "1",
            "--sandbox",
            "both",
            "--json",
        ])
        .args([
            "--server1",
            "127.0.0.1:18815",
            "--server2",
            "127.0.0.1:18816",
        ])
        .output()
        .expect("run mallard-demo bench");
    assert!(
        output.status.success(),
        "bench failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8(output.stdout).unwrap();
    let last = stdout.lines().last().expect("a JSON line");
    let json: serde_json::Value = serde_json::from_str(last).expect("last line is JSON");
    assert_eq!(json["rows"], 50000);
    for key in [
        "put_rows_per_s",
        "get_rows_per_s",
        "transfer_rows_per_s",
        "push_rows_per_s",
        "exchange_wasm_rows_per_s",
        "exchange_native_rows_per_s",
        "put_mb_per_s",
        "wasm_over_native",
        "server1_peak_rss_mib",
        "upload_ms",
        "component_bytes",
        "adbc_get_rows_per_s",
        "adbc_ingest_rows_per_s",
        "adbc_get_over_get",
        "exchange_python_rows_per_s",
        "exchange_js_rows_per_s",
        "exchange_python_over_rust",
        "python_stream_start_ms",
        "js_stream_start_ms",
        "rust_stream_start_ms",
        "parallel_1_rows_per_s",
        "parallel_n_rows_per_s",
        "parallel_sql_1_rows_per_s",
        "parallel_sql_n_rows_per_s",
        "parallel_n_over_1",
        "parallel_sql_n_over_1",
        "scalar_wasm_rows_per_s",
        "scalar_native_rows_per_s",
        "scalar_sql_rows_per_s",
        "scalar_wasm_over_sql",
    ] {
        assert!(
            json[key].as_f64().is_some_and(|v| v > 0.0),
            "{key} missing or zero in {json}"
        );
    }
    // The ceiling needs the Python peer's packages beside the project; where it
    // ran, DuckDB's own CPU is reported beside the servers'.
    if json.get("ceiling_scan_rows_per_s").is_some() {
        for key in [
            "duckdb_scan_cpu_s_per_m_rows",
            "duckdb_ingest_cpu_s_per_m_rows",
            "get_server_cpu_over_duckdb",
            "put_server_cpu_over_duckdb",
        ] {
            assert!(json.get(key).is_some(), "{key} missing in {json}");
        }
    }
    // CPU time is counted in 10 ms ticks: at this size a path may take none.
    for key in [
        "get_server_cpu_s_per_m_rows",
        "exchange_wasm_server_cpu_s_per_m_rows",
    ] {
        assert!(
            json[key].as_f64().is_some_and(|v| v >= 0.0),
            "{key} missing in {json}"
        );
    }
    // The ceilings need the Python peer's data generator beside the workspace.
    let workspace = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    if workspace
        .join("../shared/peers/seed_python/bench.py")
        .exists()
    {
        for key in ["put_over_ceiling", "get_over_ceiling", "push_over_ceiling"] {
            assert!(
                json[key].as_f64().is_some_and(|v| v > 0.0),
                "{key} missing or zero in {json}"
            );
        }
    }
}

#[test]
fn cluster_bench_json_has_every_key_and_the_row_count() {
    let output = Command::new(env!("CARGO_BIN_EXE_mallard-demo"))
        .args([
            "cluster-bench",
            "--rows",
            "30000",
            "--repeat",
            "1",
            "--json",
        ])
        .output()
        .expect("run mallard-demo cluster-bench");
    assert!(
        output.status.success(),
        "cluster-bench failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8(output.stdout).unwrap();
    let last = stdout.lines().last().expect("a JSON line");
    let json: serde_json::Value = serde_json::from_str(last).expect("last line is JSON");
    assert_eq!(json["rows"], 30000);
    assert_eq!(json["nodes"], 3);
    for key in [
        "partitioned_push_rows_per_s",
        "get_one_node_rows_per_s",
        "get_all_nodes_rows_per_s",
        "pyarrow_all_nodes_rows_per_s",
        "adbc_one_node_rows_per_s",
        "adbc_all_nodes_rows_per_s",
        "get_all_over_one_node",
        "adbc_all_over_one_node",
    ] {
        assert!(
            json[key].as_f64().is_some_and(|v| v > 0.0),
            "{key} missing or zero in {json}"
        );
    }
}
