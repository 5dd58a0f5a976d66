//! Finding the two servers, or starting them as child processes (this binary re-run
//! with the hidden `serve` subcommand) when nothing answers.

use crate::tls::DemoTls;
use anyhow::{Context, Result, bail};
use arrow_flight::FlightClient;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
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

static TLS: OnceLock<DemoTls> = OnceLock::new();
static EXTRA_USERS: OnceLock<Vec<String>> = OnceLock::new();

/// Servers the demo starts also know these users (`name:password:role`),
/// besides the development admin.
pub fn add_users(users: Vec<String>) {
    let _ = EXTRA_USERS.set(users);
}

/// Makes every connection (and every server the demo starts) use TLS.
pub fn use_tls(tls: DemoTls) {
    let _ = TLS.set(tls);
}

fn client_tls() -> Option<&'static mallard::transport::ClientTls> {
    TLS.get().map(|t| &t.client)
}

/// Connects with the given credentials, with an actionable error.
pub async fn connect(url: &str, user: &str, password: &str) -> Result<FlightClient> {
    match mallard::client::connect_with(url, user, password, client_tls()).await {
        Ok(c) => Ok(c),
        Err(e) if e.kind() == mallard::ErrorKind::Unauthenticated => {
            bail!("{url} refused the credentials ({e}); pass --user and --password")
        }
        Err(e) => Err(e).with_context(|| format!("cannot reach {url}")),
    }
}

async fn answers(url: &str) -> bool {
    mallard::transport::connect_with(url, client_tls())
        .await
        .is_ok()
}

/// The demo's two servers: each used if it answers, else started as a child
/// process allowed to push to the other.
pub async fn ensure_pair(
    addr1: &str,
    addr2: &str,
    start_if_missing: bool,
) -> Result<(Server, Server)> {
    let s1 = ensure(addr1, addr2, start_if_missing).await?;
    let s2 = ensure(addr2, addr1, start_if_missing).await?;
    Ok((s1, s2))
}

/// `grpc+tls` when the demo speaks TLS, else `grpc`.
fn scheme() -> &'static str {
    if TLS.get().is_some() {
        "grpc+tls"
    } else {
        "grpc"
    }
}

/// Uses the server at `addr` if one answers, else starts one as a child process
/// that may push to `peer`.
async fn ensure(addr: &str, peer: &str, start_if_missing: bool) -> Result<Server> {
    let url = format!("{}://{addr}", scheme());
    if answers(&url).await {
        return Ok(Server { url, child: None });
    }
    if !start_if_missing {
        bail!(
            "no server answers at {url}; start one with `cargo run --release -p mallard -- serve`"
        );
    }
    spawn(addr, &[format!("{}://{peer}", scheme())], &[]).await
}

/// A file-backed server of its own (`--db` in `dir`) on a free loopback port, for
/// timing durable ingest beside the in-memory pair.
pub async fn start_durable(dir: &std::path::Path) -> Result<Server> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let addr = format!("127.0.0.1:{port}");
    let db = dir.join("bench.duckdb");
    let data = dir.join("data");
    let extra = [
        "--db".as_ref(),
        db.as_os_str(),
        "--data-dir".as_ref(),
        data.as_os_str(),
    ];
    spawn(&addr, &[format!("{}://{addr}", scheme())], &extra).await
}

/// `nodes` servers on free loopback ports that share `key_file` and list each
/// other as peers (and may push to each other and themselves).
pub async fn start_cluster(nodes: usize, key_file: &std::path::Path) -> Result<Vec<Server>> {
    let mut addrs = Vec::new();
    for _ in 0..nodes {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        addrs.push(format!("127.0.0.1:{port}"));
    }
    let urls: Vec<String> = addrs
        .iter()
        .map(|a| format!("{}://{a}", scheme()))
        .collect();
    let mut servers = Vec::new();
    for (i, addr) in addrs.iter().enumerate() {
        let mut extra: Vec<std::ffi::OsString> = vec!["--cluster-key-file".into(), key_file.into()];
        for (j, url) in urls.iter().enumerate() {
            if j != i {
                extra.push("--peer".into());
                extra.push(url.into());
            }
        }
        let extra: Vec<&std::ffi::OsStr> = extra.iter().map(|s| s.as_os_str()).collect();
        servers.push(spawn(addr, &urls, &extra).await?);
    }
    Ok(servers)
}

/// Starts this binary's `serve` on `addr`, allowed to push to `allowed` (URLs),
/// with `extra` arguments, and waits until it answers.
async fn spawn(addr: &str, allowed: &[String], extra: &[&std::ffi::OsStr]) -> Result<Server> {
    let url = format!("{}://{addr}", scheme());
    let exe = std::env::current_exe().context("locating mallard-demo")?;
    let mut command = Command::new(exe);
    command.args(["serve", "--listen", addr, "--max-exchanges-per-user", "64"]);
    command.args(extra);
    for url in allowed {
        command.arg("--push-allow").arg(url);
    }
    for user in EXTRA_USERS.get().into_iter().flatten() {
        command.arg("--add-user").arg(user);
    }
    match TLS.get() {
        Some(DemoTls {
            server_files: Some(files),
            ..
        }) => {
            command.arg("--tls-cert").arg(&files.cert);
            command.arg("--tls-key").arg(&files.key);
            command.arg("--push-ca").arg(&files.ca);
        }
        Some(_) => bail!(
            "no TLS server answers at {url}; the demo starts TLS servers only with --tls (no --tls-ca)"
        ),
        None => {}
    }
    let child = command
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

/// CPU time (user + system) process `pid` has used so far, in seconds (Linux).
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces: fields are counted after its ')'.
    let fields: Vec<&str> = stat[stat.rfind(')')? + 1..].split_whitespace().collect();
    // utime and stime are fields 14 and 15 of stat(5); `fields` starts at field 3.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    // SAFETY: sysconf reads a constant.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    (ticks > 0).then(|| (utime + stime) / ticks as f64)
}
