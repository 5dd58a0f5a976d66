//! `mallard-demo load`: N concurrent clients doing a mix of get, put, exchange
//! (wasm) and push for a fixed time, optionally alongside hostile exchangers, and a
//! report of operations, errors, stuck calls, latency percentiles and server RSS.

use crate::data::{peer_batch, peer_schema};
use crate::figures::figure;
use crate::ops;
use crate::servers::{self, Server};
use anyhow::{Result, ensure};
use indicatif::ProgressBar;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::Mutex;

/// What to run.
pub struct LoadOptions {
    /// Concurrent clients.
    pub clients: usize,
    /// How long.
    pub duration: Duration,
    /// Also hammer the server with hostile exchangers (endless loop, memory bomb).
    pub hostile: bool,
    /// With `hostile`: do_get streams one other user opens and never reads.
    pub unread_streams: usize,
    /// Credentials.
    pub user: String,
    /// Credentials.
    pub password: String,
}

/// The user (role `user`) that opens unread streams: `name:password:role`.
pub const UNREAD_USER_SPEC: &str = "mallory:mallory-pw:user";
/// Unread streams opened per connection (below the server's HTTP/2 cap of 64).
const STREAMS_PER_CONNECTION: usize = 60;
/// A result far larger than any buffer: 200,000 rows × 100.
const UNREAD_QUERY: &str = "SELECT * FROM load_src, range(100)";

/// A call taking longer than this counts as stuck.
const STUCK_AFTER: Duration = Duration::from_secs(30);
const OP_ROWS: usize = 20_000;
/// How long tokio keeps an idle blocking thread.
const THREAD_KEEP_ALIVE: Duration = Duration::from_secs(10);
const OPS: [&str; 4] = ["get", "put", "exchange", "push"];

#[derive(Default)]
struct Tally {
    latencies: BTreeMap<&'static str, Vec<f64>>,
    errors: BTreeMap<&'static str, u64>,
    first_errors: Vec<String>,
    stuck: u64,
    hostile_calls: u64,
    hostile_expected_errors: u64,
    unread_accepted: u64,
    unread_refused: u64,
    hostile_cpu: Duration,
}

impl Tally {
    fn bystander_ops(&self) -> usize {
        self.latencies.values().map(Vec::len).sum()
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// One operation. Put and push replace their per-client table first, so the
/// servers' data stays the same size and memory growth means a leak.
async fn one_op(
    op: &str,
    client: &mut arrow_flight::FlightClient,
    target: &mut arrow_flight::FlightClient,
    id: usize,
    s2: &str,
) -> Result<()> {
    match op {
        "get" => {
            let rows = ops::get_count(
                client,
                "SELECT * FROM load_src LIMIT 50000",
                &ProgressBar::hidden(),
            )
            .await?;
            ensure!(rows == 50_000, "get returned {rows} rows");
        }
        "put" => {
            ops::action(client, "sql", format!("DROP TABLE IF EXISTS load_put_{id}")).await?;
            let batch = peer_batch(id as u64 * 1_000_000, OP_ROWS);
            let stream = futures::stream::iter(vec![Ok(batch)]);
            let rows = ops::put(
                client,
                &format!("load_put_{id}"),
                peer_schema(),
                stream,
                &ProgressBar::hidden(),
            )
            .await?;
            ensure!(rows == OP_ROWS as u64, "put acknowledged {rows} rows");
        }
        "exchange" => {
            let stream = futures::stream::iter(vec![Ok(peer_batch(0, OP_ROWS))]);
            let out = ops::exchange(
                client,
                "add_processed",
                peer_schema(),
                stream,
                &ProgressBar::hidden(),
            )
            .await?;
            ensure!(
                out.processed_true == OP_ROWS as u64,
                "exchange returned {} processed rows",
                out.processed_true
            );
        }
        "push" => {
            ops::action(
                target,
                "sql",
                format!("DROP TABLE IF EXISTS load_push_{id}"),
            )
            .await?;
            let rows = ops::push(client, "load_small", s2, &format!("load_push_{id}")).await?;
            ensure!(rows == 10_000, "push moved {rows} rows");
        }
        _ => unreachable!(),
    }
    Ok(())
}

/// One timed phase: the clients' mix, plus the hostile exchangers if `hostile`;
/// returns the tally and server 1's RSS samples (MiB, one a second).
async fn phase(
    s1: &Server,
    s2: &Server,
    options: &LoadOptions,
    hostile: bool,
    observer: &mut arrow_flight::FlightClient,
) -> Result<(Tally, Vec<f64>)> {
    let hostile_cpu_before = hostile_cpu(observer).await?;
    let tally = Arc::new(Mutex::new(Tally::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let deadline = Instant::now() + options.duration;
    let mut tasks = Vec::new();
    for id in 0..options.clients {
        let (tally, url, s2, user, password) = (
            tally.clone(),
            s1.url.clone(),
            s2.url.clone(),
            options.user.clone(),
            options.password.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut client = servers::connect(&url, &user, &password).await?;
            let mut target = servers::connect(&s2, &user, &password).await?;
            let mut i = id;
            while Instant::now() < deadline {
                let op = OPS[i % OPS.len()];
                i += 1;
                let started = Instant::now();
                let outcome = tokio::time::timeout(
                    STUCK_AFTER,
                    one_op(op, &mut client, &mut target, id, &s2),
                )
                .await;
                let elapsed = started.elapsed().as_secs_f64() * 1e3;
                let mut t = tally.lock().await;
                match outcome {
                    Ok(Ok(())) => t.latencies.entry(op).or_default().push(elapsed),
                    Ok(Err(e)) => {
                        *t.errors.entry(op).or_default() += 1;
                        if t.first_errors.len() < 5 {
                            t.first_errors.push(format!("{op}: {e:#}"));
                        }
                    }
                    Err(_) => t.stuck += 1,
                }
            }
            anyhow::Ok(())
        }));
    }
    if hostile {
        for name in ["hostile_endless_loop", "hostile_memory_bomb"] {
            let (tally, url, user, password) = (
                tally.clone(),
                s1.url.clone(),
                options.user.clone(),
                options.password.clone(),
            );
            tasks.push(tokio::spawn(async move {
                let mut client = servers::connect(&url, &user, &password).await?;
                while Instant::now() < deadline {
                    let stream = futures::stream::iter(vec![Ok(peer_batch(0, 1000))]);
                    let outcome = ops::exchange(
                        &mut client,
                        name,
                        peer_schema(),
                        stream,
                        &ProgressBar::hidden(),
                    )
                    .await;
                    let mut t = tally.lock().await;
                    t.hostile_calls += 1;
                    if outcome.is_err() {
                        t.hostile_expected_errors += 1;
                    }
                }
                anyhow::Ok(())
            }));
        }
    }
    if hostile && options.unread_streams > 0 {
        let (tally, url, n) = (tally.clone(), s1.url.clone(), options.unread_streams);
        tasks.push(tokio::spawn(async move {
            let mut parts = UNREAD_USER_SPEC.split(':');
            let (user, password) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
            // HTTP/2 caps concurrent calls per connection, so spread the streams.
            let mut clients = Vec::new();
            for _ in 0..n.div_ceil(STREAMS_PER_CONNECTION) {
                clients.push(servers::connect(&url, user, password).await?);
            }
            let mut open = Vec::new();
            let (mut accepted, mut refused) = (0, 0);
            for i in 0..n {
                let client = &mut clients[i / STREAMS_PER_CONNECTION];
                match client.do_get(arrow_flight::Ticket::new(UNREAD_QUERY)).await {
                    Ok(stream) => {
                        accepted += 1;
                        open.push(stream);
                    }
                    Err(_) => refused += 1,
                }
            }
            while Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            drop(open);
            let mut t = tally.lock().await;
            t.unread_accepted = accepted;
            t.unread_refused = refused;
            anyhow::Ok(())
        }));
    }
    // Sample the servers' RSS once a second while the load runs.
    let pid = s1.pid();
    let sampler_stop = stop.clone();
    let sampler = tokio::spawn(async move {
        let mut samples = Vec::new();
        while !sampler_stop.load(Ordering::Relaxed) {
            if let Some(kib) = pid.and_then(current_rss_mib) {
                samples.push(kib);
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        samples
    });
    let bar = ProgressBar::new(options.duration.as_secs()).with_message("load");
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_secs(1)).await;
        bar.inc(1);
    }
    bar.finish_and_clear();
    for task in tasks {
        task.await??;
    }
    stop.store(true, Ordering::Relaxed);
    let rss = sampler.await?;

    let mut tally = Arc::try_unwrap(tally)
        .map_err(|_| anyhow::anyhow!("load tasks still hold the tally"))?
        .into_inner();
    tally.hostile_cpu = hostile_cpu(observer)
        .await?
        .saturating_sub(hostile_cpu_before);
    Ok((tally, rss))
}

/// CPU time the hostile guests have used on server 1 so far (`list_exchangers`).
async fn hostile_cpu(client: &mut arrow_flight::FlightClient) -> Result<Duration> {
    let listing = ops::action(client, "list_exchangers", "").await?;
    let ms: f64 = listing
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| {
            e["name"]
                .as_str()
                .is_some_and(|n| n.starts_with("hostile_"))
        })
        .filter_map(|e| e["cpu_ms"].as_f64())
        .sum();
    Ok(Duration::from_secs_f64(ms / 1e3))
}

/// The server's healthcheck answer.
async fn health(client: &mut arrow_flight::FlightClient) -> Result<serde_json::Value> {
    ops::action(client, "healthcheck", "").await
}

/// Waits up to 10 s for server 1 to hold no query, ingest, exchange or wasm
/// instance; returns what is still live (empty when nothing leaked).
async fn leaks(
    client: &mut arrow_flight::FlightClient,
) -> Result<(serde_json::Value, Vec<String>)> {
    let started = Instant::now();
    loop {
        let live = health(client).await?["live"].clone();
        let busy: Vec<String> = mallard_core::gauges::IDLE_AT_ZERO
            .into_iter()
            .filter(|k| live[*k].as_u64() != Some(0))
            .map(|k| format!("{k}={}", live[k]))
            .collect();
        if busy.is_empty() || started.elapsed() > Duration::from_secs(10) {
            return Ok((live, busy));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Runs the load and prints (and returns) the report.
pub async fn run(s1: &Server, s2: &Server, options: &LoadOptions) -> Result<serde_json::Value> {
    // The tool's own connection: sets the tables up, then watches server 1.
    let mut control = servers::connect(&s1.url, &options.user, &options.password).await?;
    ops::action(
        &mut control,
        "sql",
        "DROP TABLE IF EXISTS load_src; DROP TABLE IF EXISTS load_small",
    )
    .await?;
    let batches = (0..4u64).map(|i| Ok(peer_batch(i * 50_000, 50_000)));
    ops::put(
        &mut control,
        "load_src",
        peer_schema(),
        futures::stream::iter(batches.collect::<Vec<_>>()),
        &ProgressBar::hidden(),
    )
    .await?;
    ops::put(
        &mut control,
        "load_small",
        peer_schema(),
        futures::stream::iter(vec![Ok(peer_batch(0, 10_000))]),
        &ProgressBar::hidden(),
    )
    .await?;
    ops::action(
        &mut control,
        "upload_exchanger",
        std::fs::read(crate::guest::build("add-processed")?)?,
    )
    .await?;
    if options.hostile {
        for guest in ["hostile-endless-loop", "hostile-memory-bomb"] {
            ops::action(
                &mut control,
                "upload_exchanger",
                std::fs::read(crate::guest::build(guest)?)?,
            )
            .await?;
        }
    }

    let threads_before = health(&mut control).await?["live"]["threads"].as_u64();
    // With hostile guests, a clean phase first gives the bystanders' baseline.
    let baseline = if options.hostile {
        eprintln!(
            "baseline phase: {:?} without hostile exchangers",
            options.duration
        );
        Some(phase(s1, s2, options, false, &mut control).await?.0)
    } else {
        None
    };
    let (t, rss) = phase(s1, s2, options, options.hostile, &mut control).await?;
    let mut report = serde_json::Map::new();
    report.insert("clients".into(), options.clients.into());
    report.insert("seconds".into(), options.duration.as_secs().into());
    let mut total_ops = 0;
    eprintln!(
        "\nMallard load: {} clients for {:?}",
        options.clients, options.duration
    );
    eprintln!(
        "{:<10} {:>8} {:>7} {:>9} {:>9} {:>9} {:>9}",
        "op", "ok", "errors", "p50 ms", "p95 ms", "p99 ms", "max ms"
    );
    for op in OPS {
        let mut lat = t.latencies.get(op).cloned().unwrap_or_default();
        lat.sort_by(|a, b| a.total_cmp(b));
        let errors = t.errors.get(op).copied().unwrap_or(0);
        total_ops += lat.len();
        let (p50, p95, p99, max) = (
            percentile(&lat, 0.5),
            percentile(&lat, 0.95),
            percentile(&lat, 0.99),
            lat.last().copied().unwrap_or(0.0),
        );
        eprintln!(
            "{op:<10} {:>8} {errors:>7} {p50:>9.1} {p95:>9.1} {p99:>9.1} {max:>9.1}",
            lat.len()
        );
        report.insert(format!("{op}_ok"), lat.len().into());
        report.insert(format!("{op}_errors"), errors.into());
        report.insert(format!("{op}_p50_ms"), figure(p50, 1));
        report.insert(format!("{op}_p99_ms"), figure(p99, 1));
    }
    let errors: u64 = t.errors.values().sum();
    eprintln!(
        "operations: {total_ops} ({:.0}/s), errors: {errors}, stuck (> {STUCK_AFTER:?}): {}",
        total_ops as f64 / options.duration.as_secs_f64(),
        t.stuck
    );
    for e in &t.first_errors {
        eprintln!("  error: {e}");
    }
    if options.hostile {
        eprintln!(
            "hostile exchanges: {} calls, {} ended with their expected error",
            t.hostile_calls, t.hostile_expected_errors
        );
        report.insert("hostile_calls".into(), t.hostile_calls.into());
        report.insert("hostile_errors".into(), t.hostile_expected_errors.into());
        if options.unread_streams > 0 {
            eprintln!(
                "unread streams: {} asked, {} opened, {} refused by the per-user cap",
                options.unread_streams, t.unread_accepted, t.unread_refused
            );
            report.insert("unread_asked".into(), options.unread_streams.into());
            report.insert("unread_accepted".into(), t.unread_accepted.into());
            report.insert("unread_refused".into(), t.unread_refused.into());
        }
    }
    if let (Some(first), Some(max), Some(last)) = (
        rss.first(),
        rss.iter().copied().reduce(f64::max),
        rss.last(),
    ) {
        eprintln!("server 1 RSS: first {first:.0} MiB, max {max:.0} MiB, last {last:.0} MiB");
        report.insert("server_rss_first_mib".into(), figure(*first, 0));
        report.insert("server_rss_max_mib".into(), figure(max, 0));
        report.insert("server_rss_last_mib".into(), figure(*last, 0));
    }
    if let Some(baseline) = baseline {
        let seconds = options.duration.as_secs_f64();
        let clean = baseline.bystander_ops() as f64 / seconds;
        let under_attack = t.bystander_ops() as f64 / seconds;
        let drop = (1.0 - under_attack / clean).max(0.0);
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        // The CPU the hostile exchangers took (the server meters each exchange's
        // worker), over the machine's CPU time: the most the bystanders should lose.
        let share = t.hostile_cpu.as_secs_f64() / (seconds * cores);
        eprintln!(
            "bystanders: {clean:.1} ops/s without hostile guests, {under_attack:.1} with: \
             drop {:.1}% vs hostile CPU share {:.1}% ({cores} cores)",
            drop * 100.0,
            share * 100.0
        );
        report.insert("bystander_ops_per_s_clean".into(), figure(clean, 1));
        report.insert(
            "bystander_ops_per_s_hostile".into(),
            figure(under_attack, 1),
        );
        report.insert("bystander_drop".into(), figure(drop, 3));
        report.insert("hostile_cpu_share".into(), figure(share, 3));
        report.insert(
            "baseline_errors".into(),
            baseline.errors.values().sum::<u64>().into(),
        );
    }
    let (live, leaked) = leaks(&mut control).await?;
    let threads_after = live["threads"].as_u64();
    // Idle blocking-pool threads exit after tokio's 10 s keep-alive; what is still
    // there after that is what the server keeps (or leaks).
    let idle = THREAD_KEEP_ALIVE + Duration::from_secs(2);
    tokio::time::sleep(idle).await;
    let threads_settled = health(&mut control).await?["live"]["threads"].as_u64();
    let show = |n: Option<u64>| n.map_or("?".into(), |n| n.to_string());
    eprintln!(
        "after the load: live {live}; server threads {} before, {} right after, {} after {:?} idle",
        show(threads_before),
        show(threads_after),
        show(threads_settled),
        idle
    );
    report.insert(
        "server_threads_settled".into(),
        serde_json::json!(threads_settled),
    );
    report.insert("leaked".into(), serde_json::json!(leaked));
    report.insert(
        "server_threads_before".into(),
        serde_json::json!(threads_before),
    );
    report.insert(
        "server_threads_after".into(),
        serde_json::json!(threads_after),
    );
    report.insert("operations".into(), total_ops.into());
    report.insert("errors".into(), errors.into());
    report.insert("stuck".into(), t.stuck.into());
    Ok(serde_json::Value::Object(report))
}

/// Current resident memory of a process in MiB (Linux `VmRSS`).
fn current_rss_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}
