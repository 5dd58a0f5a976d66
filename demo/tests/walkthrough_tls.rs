//! The walkthrough end to end over TLS: the demo mints a CA and a server
//! certificate, starts both servers with it, and every step (push_table between
//! the servers included) runs over grpc+tls://.

use std::process::Command;

#[test]
fn the_walkthrough_runs_over_tls() {
    let output = Command::new(env!("CARGO_BIN_EXE_mallard-demo"))
        .args(["--tls", "--rows", "20000", "--bench-rows", "20000"])
        .args([
            "--server1",
            "127.0.0.1:18835",
            "--server2",
            "127.0.0.1:18836",
        ])
        .output()
        .expect("run mallard-demo");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "walkthrough failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("grpc+tls://127.0.0.1:18835"), "{stdout}");
    assert!(
        !stdout.contains("grpc://"),
        "a plain connection slipped in:\n{stdout}"
    );
}
