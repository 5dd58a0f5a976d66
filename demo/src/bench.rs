//! `mallard-demo bench`: times PUT, GET, TRANSFER, PUSH and EXCHANGE (wasm and
//! native; `add_processed` in Rust, Python and JavaScript), a CPU-heavy
//! stateless exchanger (`pseudonymize`) on one instance and on one per core, and
//! Flight SQL GET and ingest through the ADBC driver, each the median of K runs
//! after a warm-up, with rows/s, MB/s and the servers' peak RSS. Data is
//! generated as it is sent: memory stays flat at any N.

use crate::data::{BATCH_ROWS, peer_batch, peer_row_bytes, peer_schema};
use crate::figures::figure;
use crate::ops;
use crate::servers::{self, Server};
use anyhow::{Result, ensure};
use arrow::array::AsArray;
use arrow_flight::FlightClient;
use indicatif::{ProgressBar, ProgressStyle};
use mallard_guest_builder::polyglot::Language;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

/// Which exchange modes to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SandboxMode {
    /// WebAssembly only.
    On,
    /// Native only.
    Off,
    /// Both, side by side.
    Both,
}

/// What to run.
pub struct BenchOptions {
    /// Rows per operation.
    pub rows: u64,
    /// Exchange modes.
    pub sandbox: SandboxMode,
    /// Timed runs per operation (median reported).
    pub repeat: usize,
    /// Print a JSON line last.
    pub json: bool,
    /// Operations to run (empty: all).
    pub ops: Vec<String>,
    /// Also run Flight SQL GET and ingest through the ADBC driver (Python,
    /// installed on first use): the credentials it logs in with.
    pub adbc: Option<(String, String)>,
    /// Also run EXCHANGE through the Python and JavaScript `add_processed`
    /// (toolchains installed on first use).
    pub polyglot: bool,
    /// Also measure DuckDB's own in-process ceilings on the same rows and report
    /// each path's ratio to them (Python, the peer's pinned packages).
    pub ceiling: bool,
    /// Who the bench logs in as on the file-backed server it starts for PUT_FILE.
    pub credentials: (String, String),
    /// MAC rounds per value of the parallel_* ops' `pseudonymize`.
    pub parallel_rounds: u32,
}

/// The `add_processed` ports timed beside the Rust one: op name and language.
const PORTS: [(&str, Language); 2] = [
    ("exchange_python", Language::Python),
    ("exchange_js", Language::JavaScript),
];

/// What an operation needs to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Needs {
    Nothing,
    /// The sandbox on (`--sandbox on` or `both`).
    Sandbox,
    /// The sandbox off (`--sandbox off` or `both`).
    Native,
    /// The sandbox on and the Python and JavaScript ports.
    Ports,
    /// The ADBC driver.
    Adbc,
}

/// Every operation, in the order the bench runs and prints them: what it
/// needs, and whether it reads the table `put` creates.
const OPERATIONS: [(&str, Needs, bool); 20] = [
    ("put", Needs::Nothing, false),
    ("put_file", Needs::Nothing, false),
    ("get", Needs::Nothing, true),
    ("transfer", Needs::Nothing, true),
    ("push", Needs::Nothing, true),
    ("exchange_wasm", Needs::Sandbox, false),
    ("exchange_native", Needs::Native, false),
    ("exchange_python", Needs::Ports, false),
    ("exchange_js", Needs::Ports, false),
    ("sql_exchange", Needs::Sandbox, true),
    ("push_exchange", Needs::Sandbox, true),
    ("parallel_1", Needs::Sandbox, false),
    ("parallel_n", Needs::Sandbox, false),
    ("parallel_sql_1", Needs::Sandbox, true),
    ("parallel_sql_n", Needs::Sandbox, true),
    ("scalar_wasm", Needs::Sandbox, true),
    ("scalar_native", Needs::Native, true),
    ("scalar_sql", Needs::Nothing, true),
    ("adbc_get", Needs::Adbc, true),
    ("adbc_ingest", Needs::Adbc, false),
];

/// The key `parallel_*` pseudonymises with.
const PSEUDONYM_KEY: &str = "mallard-bench-key-0001";

/// Instances `parallel_n` asks for: the server's default cap (one per core, at
/// most 8), which the bench's servers run with.
fn parallel_instances() -> usize {
    mallard::config::default_exchange_instances()
}

/// The `pseudonymize` stage a `parallel*` op runs, `rounds` MACs per value: one
/// instance for the `_1` ops, [`parallel_instances`] for the `_n` ones.
fn pseudonymize_stage(op: &str, rounds: u32) -> String {
    let instances = if op.ends_with("_1") {
        1
    } else {
        parallel_instances()
    };
    format!(
        r#"{{"exchanger": "pseudonymize", "instances": {instances}, "params": {{"column": "flight_number", "key": "{PSEUDONYM_KEY}", "rounds": "{rounds}"}}}}"#
    )
}

/// Exchanges of one row timed to measure what a stream costs to start.
const START_RUNS: usize = 15;

const TABLE: &str = "bench_flights";

/// Most distinct batches generated up front (about 220 MB); larger runs cycle
/// through them, so client memory stays flat at any N and, as in the peer, making
/// the data is not part of the timed work.
const POOL_BATCHES: u64 = 32;

type Pool = Arc<Vec<arrow::array::RecordBatch>>;

fn pool(rows: u64) -> Pool {
    let batches = rows.div_ceil(BATCH_ROWS as u64).clamp(1, POOL_BATCHES);
    Arc::new(
        (0..batches)
            .map(|i| peer_batch(i * BATCH_ROWS as u64, BATCH_ROWS))
            .collect(),
    )
}

fn generated(
    pool: &Pool,
    rows: u64,
) -> impl futures::Stream<Item = Result<arrow::array::RecordBatch>> + Send + 'static {
    let pool = pool.clone();
    futures::stream::iter(
        (0..rows)
            .step_by(BATCH_ROWS)
            .enumerate()
            .map(move |(i, start)| {
                let batch = &pool[i % pool.len()];
                Ok(batch.slice(0, (rows - start).min(BATCH_ROWS as u64) as usize))
            }),
    )
}

fn bar(rows: u64, label: &str, quiet: bool) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(rows).with_message(label.to_owned());
    bar.set_style(
        ProgressStyle::with_template(
            "{msg:>22} [{bar:30}] {human_pos}/{human_len} rows ({per_sec})",
        )
        .expect("static template")
        .progress_chars("=> "),
    );
    bar
}

/// The one value of a one-row, one-column result, as u64 (0 if there is none).
fn scalar_u64(batches: &[arrow::array::RecordBatch]) -> u64 {
    batches
        .first()
        .and_then(|b| arrow::compute::cast(b.column(0), &arrow::datatypes::DataType::UInt64).ok())
        .and_then(|c| {
            c.as_primitive_opt::<arrow::datatypes::UInt64Type>()
                .map(|a| a.value(0))
        })
        .unwrap_or(0)
}

/// The median of `v` (the upper one of an even count).
pub(crate) fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Runs the benchmark against two servers and returns `(name, seconds)` medians.
pub async fn run(
    s1: &Server,
    c1: &mut FlightClient,
    s2: &Server,
    c2: &mut FlightClient,
    options: &BenchOptions,
) -> Result<BTreeMap<String, serde_json::Value>> {
    let n = options.rows;
    let quiet = options.json;
    let available = |needs: Needs| match needs {
        Needs::Nothing => true,
        Needs::Sandbox => options.sandbox != SandboxMode::Off,
        Needs::Native => options.sandbox != SandboxMode::On,
        Needs::Ports => options.sandbox != SandboxMode::Off && options.polyglot,
        Needs::Adbc => options.adbc.is_some(),
    };
    let asked = |op: &str| {
        options.ops.is_empty()
            || options
                .ops
                .iter()
                .any(|wanted| op.starts_with(wanted.as_str()))
    };
    ensure!(
        options.adbc.is_some()
            || options.ops.is_empty()
            || !OPERATIONS
                .iter()
                .any(|(op, needs, _)| *needs == Needs::Adbc && asked(op)),
        "the adbc operations need the ADBC driver; drop --no-adbc"
    );
    let selected: Vec<(&str, bool)> = OPERATIONS
        .iter()
        .filter(|(op, needs, _)| available(*needs) && asked(op))
        .map(|(op, _, reads_put)| (*op, *reads_put))
        .collect();
    ensure!(
        !selected.is_empty(),
        "--ops selected nothing; use put,get,transfer,push,exchange,sql_exchange,push_exchange,parallel,scalar,adbc"
    );
    ensure!(
        !selected.iter().any(|(_, reads_put)| *reads_put)
            || selected.iter().any(|(op, _)| *op == "put"),
        "get, transfer, push and the SQL paths read the table put creates; include put in --ops"
    );
    let ops: Vec<&str> = selected.into_iter().map(|(op, _)| op).collect();
    let mut upload = None;
    let mut ports = BTreeMap::new();
    if options.sandbox != SandboxMode::Off {
        // Identical bytes would be the same version, ready at once: start clean
        // so the figures are real uploads (an error only means there was none).
        let _ = ops::action(c1, "remove_exchanger", "add_processed").await;
        // The ports first, pinned by hash: the Rust upload comes last and is
        // what `add_processed` means for every other operation.
        for (op, language) in PORTS {
            if !ops.contains(&op) {
                continue;
            }
            let path = tokio::task::spawn_blocking(move || {
                mallard_guest_builder::polyglot::build(language, "add_processed")
            })
            .await??;
            let component = std::fs::read(path)?;
            let started = Instant::now();
            let report = ops::action(c1, "upload_exchanger", component.clone()).await?;
            let upload_s = started.elapsed().as_secs_f64();
            let sha = report["sha256"].as_str().unwrap_or_default().to_owned();
            ports.insert(
                op,
                (
                    format!("add_processed@sha256:{sha}"),
                    component.len(),
                    upload_s,
                ),
            );
        }
        let component = std::fs::read(crate::guest::build("add-processed")?)?;
        let started = Instant::now();
        ops::action(c1, "upload_exchanger", component.clone()).await?;
        upload = Some((component.len(), started.elapsed().as_secs_f64()));
        if ops
            .iter()
            .any(|op| op.starts_with("parallel") || *op == "scalar_wasm")
        {
            let component = std::fs::read(crate::guest::build("pseudonymize")?)?;
            ops::action(c1, "upload_exchanger", component).await?;
        }
    }
    // PUT_FILE puts into a file-backed server of its own (dropped before its
    // directory: fields drop in order).
    let mut durable = match ops.contains(&"put_file") {
        true => {
            let dir = tempfile::tempdir()?;
            let server = servers::start_durable(dir.path()).await?;
            let (user, password) = &options.credentials;
            let client = servers::connect(&server.url, user, password).await?;
            Some((server, client, dir))
        }
        false => None,
    };
    let durable_pid = durable.as_ref().and_then(|(server, ..)| server.pid());
    let pool = pool(n);
    let mut seconds: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    // Both servers' CPU seconds per timed run (the work of a path, whichever server does it).
    let mut cpu: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    let servers_cpu = || -> Option<f64> {
        let durable = durable_pid.and_then(servers::cpu_seconds).unwrap_or(0.0);
        Some(servers::cpu_seconds(s1.pid()?)? + servers::cpu_seconds(s2.pid()?)? + durable)
    };
    // This process's CPU seconds per timed run: the client's share of the same cores
    // (not for the ADBC paths, whose client is a Python child process).
    let mut client_cpu: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    // (Servers + client) CPU seconds over wall seconds: how many of the machine's
    // cores the path kept busy.
    let mut cores_busy: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    let own_cpu = || servers::cpu_seconds(std::process::id());
    // Run 0 is the warm-up and is not counted.
    for run in 0..=options.repeat {
        for &op in &ops {
            let label = if run == 0 {
                format!("{op} (warm-up)")
            } else {
                format!("{op} {run}/{}", options.repeat)
            };
            let progress = bar(n, &label, quiet);
            if op == "put" {
                ops::action(c1, "sql", format!("DROP TABLE IF EXISTS {TABLE}")).await?;
            }
            if op == "put_file" {
                let (_, c3, _) = durable.as_mut().expect("started above");
                ops::action(c3, "sql", format!("DROP TABLE IF EXISTS {TABLE}")).await?;
            }
            if op == "transfer" {
                ops::action(c2, "sql", format!("DROP TABLE IF EXISTS {TABLE}")).await?;
            }
            if op == "push" || op == "push_exchange" {
                ops::action(c2, "sql", format!("DROP TABLE IF EXISTS {TABLE}_pushed")).await?;
            }
            let cpu_before = servers_cpu();
            let own_before = own_cpu();
            let started = Instant::now();
            let mut timed_by_client = None;
            let moved = match op {
                "put" => ops::put(c1, TABLE, peer_schema(), generated(&pool, n), &progress).await?,
                "put_file" => {
                    let (_, c3, _) = durable.as_mut().expect("started above");
                    ops::put(c3, TABLE, peer_schema(), generated(&pool, n), &progress).await?
                }
                "get" => ops::get_count(c1, &format!("SELECT * FROM {TABLE}"), &progress).await?,
                "transfer" => {
                    ops::transfer(c1, &format!("SELECT * FROM {TABLE}"), c2, TABLE, &progress)
                        .await?
                }
                "push" => ops::push(c1, TABLE, &s2.url, &format!("{TABLE}_pushed")).await?,
                "sql_exchange" => {
                    let sql =
                        format!("SELECT * FROM exchange('add_processed', 'SELECT * FROM {TABLE}')");
                    ops::get_count(c1, &sql, &progress).await?
                }
                "push_exchange" => {
                    let target = format!("{TABLE}_pushed");
                    ops::push_through(c1, TABLE, Some("add_processed"), &s2.url, &target).await?
                }
                "exchange_wasm" | "exchange_native" => {
                    let command = if op == "exchange_wasm" {
                        r#"{"exchanger": "add_processed", "sandbox": "on"}"#
                    } else {
                        r#"{"exchanger": "add_processed", "sandbox": "off"}"#
                    };
                    let out =
                        ops::exchange(c1, command, peer_schema(), generated(&pool, n), &progress)
                            .await?;
                    ensure!(out.processed_true == n, "{op}: processed is not all true");
                    out.rows
                }
                "parallel_1" | "parallel_n" => {
                    let command = pseudonymize_stage(op, options.parallel_rounds);
                    let out =
                        ops::exchange(c1, &command, peer_schema(), generated(&pool, n), &progress)
                            .await?;
                    out.rows
                }
                "parallel_sql_1" | "parallel_sql_n" => {
                    // Where the data lives: the server scans, pseudonymises and
                    // counts; only the count crosses the network.
                    let stage = pseudonymize_stage(op, options.parallel_rounds);
                    let sql = format!(
                        "SELECT count(*) FROM exchange('{stage}', 'SELECT * FROM {TABLE}')"
                    );
                    let count = scalar_u64(&ops::query(c1, &sql).await?);
                    progress.inc(count);
                    count
                }
                "scalar_wasm" | "scalar_native" | "scalar_sql" => {
                    // One value per row in SQL: the same keyed pseudonym of one
                    // column through the exchanger, or DuckDB's own keyed hash.
                    let value = match op {
                        "scalar_sql" => {
                            format!("sha256(flight_number::VARCHAR || '{PSEUDONYM_KEY}')")
                        }
                        _ => {
                            let sandbox = if op == "scalar_wasm" { "on" } else { "off" };
                            format!(
                                r#"exchanger_varchar('{{"exchanger": "pseudonymize", "sandbox": "{sandbox}", "params": {{"column": "arg1", "key": "{PSEUDONYM_KEY}"}}}}', flight_number)"#
                            )
                        }
                    };
                    let sql = format!("SELECT count(p) FROM (SELECT {value} AS p FROM {TABLE})");
                    let count = scalar_u64(&ops::query(c1, &sql).await?);
                    progress.inc(count);
                    count
                }
                "exchange_python" | "exchange_js" => {
                    let command = &ports[op].0;
                    let out =
                        ops::exchange(c1, command, peer_schema(), generated(&pool, n), &progress)
                            .await?;
                    ensure!(out.processed_true == n, "{op}: processed is not all true");
                    out.rows
                }
                "adbc_get" | "adbc_ingest" => {
                    let (user, password) = options.adbc.clone().expect("checked above");
                    let url = s1.url.clone();
                    let kind = op.trim_start_matches("adbc_").to_owned();
                    let report = tokio::task::spawn_blocking(move || {
                        crate::python::run_adbc_script(
                            "adbc_bench.py",
                            &[&url, &user, &password, &kind, TABLE],
                        )
                    })
                    .await??;
                    // The script times the operation itself (not Python's start).
                    timed_by_client = report["seconds"].as_f64();
                    report["rows"].as_u64().unwrap_or(0)
                }
                _ => unreachable!(),
            };
            let elapsed = timed_by_client.unwrap_or_else(|| started.elapsed().as_secs_f64());
            progress.finish_and_clear();
            ensure!(moved == n, "{op}: moved {moved} rows, expected {n}");
            if run > 0 {
                seconds.entry(op).or_default().push(elapsed);
                let server_seconds = cpu_before.zip(servers_cpu()).map(|(b, a)| a - b);
                // The ADBC ingest script first reads the table from the server
                // (untimed), which the servers' CPU would count.
                if let Some(spent) = server_seconds.filter(|_| op != "adbc_ingest") {
                    cpu.entry(op).or_default().push(spent);
                }
                let client_seconds = own_before
                    .zip(own_cpu())
                    .map(|(b, a)| a - b)
                    .filter(|_| !op.starts_with("adbc_"));
                if let Some(spent) = client_seconds {
                    client_cpu.entry(op).or_default().push(spent);
                }
                if let (Some(server), Some(client)) = (server_seconds, client_seconds) {
                    cores_busy
                        .entry(op)
                        .or_default()
                        .push((server + client) / elapsed);
                }
            }
        }
    }
    let row_bytes = peer_row_bytes();
    let mut out = BTreeMap::new();
    out.insert("rows".to_owned(), serde_json::json!(n));
    out.insert("repeat".to_owned(), serde_json::json!(options.repeat));
    out.insert("batch_rows".to_owned(), serde_json::json!(BATCH_ROWS));
    out.insert(
        "parallel_rounds".to_owned(),
        serde_json::json!(options.parallel_rounds),
    );
    for (op, runs) in seconds {
        let s = median(runs);
        out.insert(format!("{op}_s"), figure(s, 6));
        out.insert(format!("{op}_rows_per_s"), figure(n as f64 / s, 0));
        out.insert(
            format!("{op}_mb_per_s"),
            figure(n as f64 * row_bytes / s / 1e6, 1),
        );
    }
    for (side, spent) in [("server", cpu), ("client", client_cpu)] {
        for (op, runs) in spent {
            out.insert(
                format!("{op}_{side}_cpu_s_per_m_rows"),
                figure(median(runs) / (n as f64 / 1e6), 4),
            );
        }
    }
    for (op, runs) in cores_busy {
        out.insert(format!("{op}_cores_busy"), figure(median(runs), 2));
    }
    if options.ceiling {
        let ceiling = tokio::task::spawn_blocking(move || crate::python::duckdb_ceiling(n)).await?;
        match ceiling {
            Ok(c) => ceiling_ratios(&mut out, &c),
            Err(e) => eprintln!("no DuckDB ceiling this run: {e:#}"),
        }
    }
    if let Some((bytes, seconds)) = upload {
        out.insert("component_bytes".to_owned(), serde_json::json!(bytes));
        // Upload to ready: sent, compiled by the server, stored, acknowledged.
        out.insert("upload_ms".to_owned(), figure(seconds * 1e3, 1));
    }
    if options.sandbox != SandboxMode::Off {
        let mut starts = vec![("rust", "add_processed".to_owned())];
        for (op, (pin, bytes, upload_s)) in &ports {
            let language = op.trim_start_matches("exchange_");
            out.insert(
                format!("{language}_component_bytes"),
                serde_json::json!(bytes),
            );
            out.insert(format!("{language}_upload_ms"), figure(upload_s * 1e3, 1));
            starts.push((language, pin.clone()));
        }
        for (language, command) in starts {
            let ms = stream_start_ms(c1, &command).await?;
            out.insert(format!("{language}_stream_start_ms"), figure(ms, 2));
        }
    }
    for (op, _) in PORTS {
        if let (Some(port), Some(rust)) = (
            out.get(&format!("{op}_rows_per_s")),
            out.get("exchange_wasm_rows_per_s"),
        ) {
            let ratio = port.as_f64().unwrap_or(0.0) / rust.as_f64().unwrap_or(1.0);
            out.insert(format!("{op}_over_rust"), figure(ratio, 3));
        }
    }
    for (key, op) in [
        ("scalar_wasm_over_sql", "scalar_wasm"),
        ("scalar_native_over_sql", "scalar_native"),
    ] {
        if let (Some(x), Some(sql)) = (
            out.get(&format!("{op}_rows_per_s")),
            out.get("scalar_sql_rows_per_s"),
        ) {
            let ratio = x.as_f64().unwrap_or(0.0) / sql.as_f64().unwrap_or(1.0);
            out.insert(key.to_owned(), figure(ratio, 3));
        }
    }
    for prefix in ["parallel", "parallel_sql"] {
        if let (Some(par), Some(one)) = (
            out.get(&format!("{prefix}_n_rows_per_s")),
            out.get(&format!("{prefix}_1_rows_per_s")),
        ) {
            let ratio = par.as_f64().unwrap_or(0.0) / one.as_f64().unwrap_or(1.0);
            out.insert(format!("{prefix}_n_over_1"), figure(ratio, 3));
            out.insert(
                "parallel_instances".to_owned(),
                serde_json::json!(parallel_instances()),
            );
        }
    }
    if let (Some(w), Some(nat)) = (
        out.get("exchange_wasm_rows_per_s"),
        out.get("exchange_native_rows_per_s"),
    ) {
        let ratio = w.as_f64().unwrap_or(0.0) / nat.as_f64().unwrap_or(1.0);
        out.insert("wasm_over_native".to_owned(), figure(ratio, 3));
    }
    // What running an exchanger where the data lives costs over moving it plainly.
    for (key, through, plain) in [
        ("sql_exchange_over_get", "sql_exchange", "get"),
        ("push_exchange_over_push", "push_exchange", "push"),
        ("adbc_get_over_get", "adbc_get", "get"),
        ("adbc_ingest_over_put", "adbc_ingest", "put"),
        ("put_file_over_put", "put_file", "put"),
    ] {
        if let (Some(t), Some(p)) = (
            out.get(&format!("{through}_rows_per_s")),
            out.get(&format!("{plain}_rows_per_s")),
        ) {
            let ratio = t.as_f64().unwrap_or(0.0) / p.as_f64().unwrap_or(1.0);
            out.insert(key.to_owned(), figure(ratio, 3));
        }
    }
    for (key, server) in [("server1_peak_rss_mib", s1), ("server2_peak_rss_mib", s2)] {
        if let Some(rss) = server.pid().and_then(servers::peak_rss_mib) {
            out.insert(key.to_owned(), figure(rss, 0));
        }
    }
    if let Some(rss) = servers::peak_rss_mib(std::process::id()) {
        out.insert("client_peak_rss_mib".to_owned(), figure(rss, 0));
    }
    Ok(out)
}

/// Each path's throughput over DuckDB's own in-process ceiling: PUT over Arrow
/// ingest, GET over scan to Arrow, PUSH and TRANSFER over a scan then an ingest
/// of the same rows (`1 / (1/scan + 1/ingest)`).
fn ceiling_ratios(out: &mut BTreeMap<String, serde_json::Value>, ceiling: &serde_json::Value) {
    let (Some(ingest), Some(scan)) = (
        ceiling["ingest_rows_per_s"].as_f64(),
        ceiling["scan_rows_per_s"].as_f64(),
    ) else {
        return;
    };
    let both = 1.0 / (1.0 / scan + 1.0 / ingest);
    out.insert("ceiling_ingest_rows_per_s".to_owned(), figure(ingest, 0));
    out.insert("ceiling_scan_rows_per_s".to_owned(), figure(scan, 0));
    out.insert("ceiling_scan_ingest_rows_per_s".to_owned(), figure(both, 0));
    if let Some(file) = ceiling["file_ingest_rows_per_s"].as_f64() {
        out.insert("ceiling_file_ingest_rows_per_s".to_owned(), figure(file, 0));
        if let Some(rate) = out.get("put_file_rows_per_s").and_then(|v| v.as_f64()) {
            out.insert("put_file_over_ceiling".to_owned(), figure(rate / file, 3));
        }
    }
    if let Some(version) = ceiling["duckdb"].as_str() {
        out.insert("ceiling_duckdb".to_owned(), serde_json::json!(version));
    }
    // DuckDB's own CPU for the same scan and ingest, beside the servers' CPU for
    // GET and PUT (what Mallard adds on top of DuckDB, per million rows).
    for (key, op, reference) in [
        (
            "duckdb_scan_cpu_s_per_m_rows",
            "get",
            "scan_cpu_s_per_m_rows",
        ),
        (
            "duckdb_ingest_cpu_s_per_m_rows",
            "put",
            "ingest_cpu_s_per_m_rows",
        ),
    ] {
        let Some(duckdb) = ceiling[reference].as_f64() else {
            continue;
        };
        out.insert(key.to_owned(), figure(duckdb, 4));
        if let Some(server) = out
            .get(&format!("{op}_server_cpu_s_per_m_rows"))
            .and_then(serde_json::Value::as_f64)
        {
            out.insert(
                format!("{op}_server_cpu_over_duckdb"),
                figure(server / duckdb, 3),
            );
        }
    }
    for (op, reference) in [
        ("put", ingest),
        ("get", scan),
        ("push", both),
        ("transfer", both),
    ] {
        if let Some(rate) = out
            .get(&format!("{op}_rows_per_s"))
            .and_then(serde_json::Value::as_f64)
        {
            out.insert(format!("{op}_over_ceiling"), figure(rate / reference, 3));
        }
    }
}

/// Median milliseconds of a one-row exchange through `command`: instantiating
/// the component, `open`, one `push`, `finish` and the round trip.
async fn stream_start_ms(client: &mut FlightClient, command: &str) -> Result<f64> {
    let one = peer_batch(0, 1);
    let mut runs = Vec::with_capacity(START_RUNS);
    for _ in 0..=START_RUNS {
        let batches = futures::stream::iter([Ok(one.clone())]);
        let started = Instant::now();
        let out = ops::exchange(
            client,
            command,
            peer_schema(),
            batches,
            &ProgressBar::hidden(),
        )
        .await?;
        ensure!(out.rows == 1, "{command}: {} rows for 1", out.rows);
        runs.push(started.elapsed().as_secs_f64() * 1e3);
    }
    runs.remove(0);
    Ok(median(runs))
}

/// Prints the results as a table on stderr.
pub fn print_table(results: &BTreeMap<String, serde_json::Value>) {
    let n = results["rows"].as_u64().unwrap_or(0);
    eprintln!(
        "\nMallard benchmark: {n} rows, median of {} runs",
        results["repeat"]
    );
    eprintln!(
        "{:<18} {:>10} {:>16} {:>10}",
        "operation", "seconds", "rows/s", "MB/s"
    );
    for (op, _, _) in OPERATIONS {
        if let Some(s) = results.get(&format!("{op}_s")) {
            eprintln!(
                "{:<18} {:>10.3} {:>16.0} {:>10.1}",
                op.to_uppercase(),
                s.as_f64().unwrap_or(0.0),
                results[&format!("{op}_rows_per_s")].as_f64().unwrap_or(0.0),
                results[&format!("{op}_mb_per_s")].as_f64().unwrap_or(0.0)
            );
        }
    }
    if let (Some(ms), Some(bytes)) = (results.get("upload_ms"), results.get("component_bytes")) {
        eprintln!("upload to ready: {ms} ms for a {bytes}-byte component");
    }
    if let Some(r) = results.get("wasm_over_native") {
        eprintln!("sandbox cost: wasm/native exchange throughput = {r}");
    }
    for key in [
        "put_over_ceiling",
        "put_file_over_put",
        "put_file_over_ceiling",
        "get_over_ceiling",
        "push_over_ceiling",
        "transfer_over_ceiling",
        "get_server_cpu_s_per_m_rows",
        "duckdb_scan_cpu_s_per_m_rows",
        "get_server_cpu_over_duckdb",
        "put_server_cpu_s_per_m_rows",
        "duckdb_ingest_cpu_s_per_m_rows",
        "put_server_cpu_over_duckdb",
        "get_client_cpu_s_per_m_rows",
        "get_cores_busy",
        "put_cores_busy",
        "exchange_wasm_server_cpu_s_per_m_rows",
        "exchange_python_over_rust",
        "exchange_js_over_rust",
        "rust_stream_start_ms",
        "python_stream_start_ms",
        "js_stream_start_ms",
        "sql_exchange_over_get",
        "push_exchange_over_push",
        "parallel_instances",
        "parallel_n_over_1",
        "parallel_sql_n_over_1",
        "scalar_wasm_over_sql",
        "scalar_native_over_sql",
        "adbc_get_over_get",
        "adbc_ingest_over_put",
    ] {
        if let Some(r) = results.get(key) {
            eprintln!("{key}: {r}");
        }
    }
    for key in [
        "server1_peak_rss_mib",
        "server2_peak_rss_mib",
        "client_peak_rss_mib",
    ] {
        if let Some(v) = results.get(key) {
            eprintln!("{key}: {v}");
        }
    }
}
