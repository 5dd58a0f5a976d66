//! The load tool, short: concurrent clients with hostile exchangers and another
//! user's unread streams alongside finish with zero errors and zero stuck calls.

use std::process::Command;

#[test]
fn a_short_load_run_has_no_errors_and_no_stuck_calls() {
    let output = Command::new(env!("CARGO_BIN_EXE_mallard-demo"))
        .args([
            "load",
            "--clients",
            "6",
            "--seconds",
            "4",
            "--hostile",
            "--unread-streams",
            "40",
            "--json",
        ])
        .args([
            "--server1",
            "127.0.0.1:18825",
            "--server2",
            "127.0.0.1:18826",
        ])
        .output()
        .expect("run mallard-demo load");
    assert!(
        output.status.success(),
        "load failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8(output.stdout).unwrap();
    let report: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(report["errors"], 0, "{report}");
    assert_eq!(report["stuck"], 0, "{report}");
    assert!(report["operations"].as_u64().unwrap() > 10, "{report}");
    assert_eq!(
        report["hostile_calls"], report["hostile_errors"],
        "{report}"
    );
    // Another user's 40 unread streams were answered (opened up to the demo
    // servers' per-user cap of 64), while the bystanders above saw no error.
    let accepted = report["unread_accepted"].as_u64().unwrap();
    let refused = report["unread_refused"].as_u64().unwrap();
    assert_eq!(accepted + refused, 40, "{report}");
    assert!(accepted <= 64, "{report}");
    // The clean baseline phase ran too, and nothing outlived the load.
    assert_eq!(report["baseline_errors"], 0, "{report}");
    assert!(
        report["bystander_ops_per_s_clean"].as_f64().unwrap() > 0.0,
        "{report}"
    );
    assert_eq!(report["leaked"], serde_json::json!([]), "{report}");
    // Threads started for the load are gone once idle (a few may come and go).
    let before = report["server_threads_before"].as_u64().unwrap();
    let settled = report["server_threads_settled"].as_u64().unwrap();
    assert!(settled <= before + 4, "{report}");
}
