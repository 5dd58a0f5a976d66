//! Finding the two servers, or starting them as child processes (this binary re-run
//! with the hidden `serve` subcommand) when nothing answers.

use anyhow::{Context, Result, bail};
use arrow_flight::FlightClient;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A server the demo talks to, and the child process if the demo started it.
pub struct Server {
    /// `grpc://host:port`.
    pub url: String,
    /// The child process running it, if the demo started it.
    pub child: Option<Child>,
}

impl Server {
    /// The server's process id, when known (for peak RSS).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(child.id().to_string())
                .status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
        }
    }
}

/// Connects with the given credentials, with an actionable error.
pub async fn connect(url: &str, user: &str, password: &str) -> Result<FlightClient> {
    match mallard::client::connect(url, user, password).await {
        Ok(c) => Ok(c),
        Err(mallard::Error::Unauthenticated(m)) => {
            bail!("{url} refused the credentials ({m}); pass --user and --password")
        }
        Err(e) => Err(e).with_context(|| format!("cannot reach {url}")),
    }
}

async fn answers(url: &str) -> bool {
    mallard::transport::connect(url).await.is_ok()
}

/// Uses the server at `addr` if one answers, else starts one as a child process.
pub async fn ensure(addr: &str, start_if_missing: bool) -> Result<Server> {
    let url = format!("grpc://{addr}");
    if answers(&url).await {
        return Ok(Server { url, child: None });
    }
    if !start_if_missing {
        bail!(
            "no server answers at {url}; start one with `cargo run --release -p mallard -- serve`"
        );
    }
    let exe = std::env::current_exe().context("locating mallard-demo")?;
    let child = Command::new(exe)
        .args(["serve", "--listen", addr, "--max-exchanges-per-user", "64"])
        .stdin(Stdio::null())
        .spawn()
        .with_context(|| format!("starting a server on {addr}"))?;
    let server = Server {
        url: url.clone(),
        child: Some(child),
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if answers(&url).await {
            return Ok(server);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("the server started on {addr} did not answer within 30 s")
}

/// Peak resident memory of a process in MiB (Linux `VmHWM`), if readable.
pub fn peak_rss_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}
