//! `mallard-demo cluster-bench`: three nodes on loopback sharing a cluster key.
//! Times a partitioned `push_table` of N rows from node 1 to all three (hash of
//! `flight_id`, two-phase commit), then reads the spread table back through one
//! FlightInfo with `x-mallard-nodes: all` (a Rust client reading the endpoints
//! at once, pyarrow with a thread per endpoint, the ADBC Flight SQL driver),
//! beside one node's GET of the same N rows and the driver on one node.

use crate::bench::median;
use crate::{ops, python, servers};
use anyhow::{Context, Result, ensure};
use arrow_flight::{FlightClient, FlightDescriptor};
use futures::StreamExt;
use indicatif::ProgressBar;
use std::collections::BTreeMap;
use std::time::Instant;

/// What to run.
pub struct Options {
    /// Rows of the spread table.
    pub rows: u64,
    /// Timed runs per operation after one warm-up.
    pub repeat: usize,
    /// Also time pyarrow and the ADBC driver.
    pub python: bool,
    /// Who the bench is on every node.
    pub credentials: (String, String),
}

const NODES: usize = 3;
const WHOLE: &str = "cluster_whole";
const SPREAD: &str = "cluster_spread";
/// The key the bench's nodes share (a throwaway, on loopback only).
const KEY: &str = "mallard-demo cluster-bench key, loopback only";

/// The median of timed runs after the first (the warm-up).
fn after_warm_up(mut runs: Vec<f64>) -> f64 {
    runs.remove(0);
    median(runs)
}

/// A client of `url` sending `token` (a cluster token the node's peers accept).
async fn with_token(url: &str, token: &str) -> Result<FlightClient> {
    let target = mallard_protocol::PushTarget::parse(url)?;
    Ok(mallard::client::connect_with_token(&target, token, None).await?)
}

/// Reads every endpoint of one FlightInfo at once, each from its node
/// (`here` for an endpoint without a location).
async fn read_everywhere(here: &str, token: &str) -> Result<u64> {
    let mut client = with_token(here, token).await?;
    client
        .add_header(mallard::cluster::NODES_HEADER, "all")
        .context("header")?;
    let info = client
        .get_flight_info(FlightDescriptor::new_path(vec![SPREAD.into()]))
        .await?;
    let reads = info.endpoint.into_iter().map(|endpoint| async move {
        let ticket = endpoint.ticket.context("an endpoint without a ticket")?;
        let url = endpoint.location.first().map_or(here, |l| l.uri.as_str());
        let mut node = with_token(url, token).await?;
        let mut stream = node.do_get(ticket).await?;
        let mut rows = 0u64;
        while let Some(batch) = stream.next().await {
            rows += batch?.num_rows() as u64;
        }
        anyhow::Ok(rows)
    });
    futures::future::join_all(reads).await.into_iter().sum()
}

/// Runs the cluster bench; the results by key (`*_s`, `*_rows_per_s`, ratios).
pub async fn run(options: &Options) -> Result<BTreeMap<String, serde_json::Value>> {
    let dir = tempfile::tempdir()?;
    let key_file = dir.path().join("cluster.key");
    std::fs::write(&key_file, KEY)?;
    let nodes = servers::start_cluster(NODES, &key_file).await?;
    let (user, password) = &options.credentials;
    let mut first = servers::connect(&nodes[0].url, user, password).await?;
    let token = first
        .metadata()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .context("a bearer token")?
        .to_owned();
    let rows = options.rows;
    let batches = (0..rows).step_by(122_880).map(move |start| {
        Ok(mallard_flights::batch(
            start,
            (rows - start).min(122_880) as usize,
        ))
    });
    let put = ops::put(
        &mut first,
        WHOLE,
        mallard_flights::schema(),
        futures::stream::iter(batches),
        &ProgressBar::hidden(),
    )
    .await?;
    ensure!(put == rows, "put {put} rows for {rows}");
    let urls: Vec<String> = nodes.iter().map(|n| n.url.clone()).collect();
    let push_body = serde_json::json!({
        "table": WHOLE, "target_table": SPREAD,
        "to": urls, "partition": {"hash": "flight_id"},
    })
    .to_string();
    let mut out: BTreeMap<String, serde_json::Value> = BTreeMap::new();
    let mut record = |op: &str, runs: Vec<f64>| {
        let seconds = after_warm_up(runs);
        out.insert(format!("{op}_s"), seconds.into());
        out.insert(format!("{op}_rows_per_s"), (rows as f64 / seconds).into());
    };
    let check = |op: &str, got: u64| {
        ensure!(got == rows, "{op}: {got} rows for {rows}");
        Ok(())
    };

    let mut runs = Vec::new();
    for _ in 0..=options.repeat {
        for url in &urls {
            let mut node = with_token(url, &token).await?;
            let drop = format!("DROP TABLE IF EXISTS {SPREAD}");
            ops::action(&mut node, "sql", drop.into_bytes()).await?;
        }
        let started = Instant::now();
        let pushed = ops::action(&mut first, "push_table", push_body.clone().into_bytes()).await?;
        runs.push(started.elapsed().as_secs_f64());
        check("partitioned push", pushed["rows"].as_u64().unwrap_or(0))?;
    }
    record("partitioned_push", runs);

    let mut runs = Vec::new();
    for _ in 0..=options.repeat {
        let started = Instant::now();
        let sql = format!("SELECT * FROM {WHOLE}");
        let got = ops::get_count(&mut first, &sql, &ProgressBar::hidden()).await?;
        runs.push(started.elapsed().as_secs_f64());
        check("one node's GET", got)?;
    }
    record("get_one_node", runs);

    let mut runs = Vec::new();
    for _ in 0..=options.repeat {
        let started = Instant::now();
        let got = read_everywhere(&nodes[0].url, &token).await?;
        runs.push(started.elapsed().as_secs_f64());
        check("every node's GET", got)?;
    }
    record("get_all_nodes", runs);

    if options.python {
        for (op, mode, table) in [
            ("pyarrow_all_nodes", "pyarrow_all", SPREAD),
            ("adbc_one_node", "adbc_one", WHOLE),
            ("adbc_all_nodes", "adbc_all", SPREAD),
        ] {
            let mut runs = Vec::new();
            for _ in 0..=options.repeat {
                let args = [
                    nodes[0].url.clone(),
                    user.clone(),
                    password.clone(),
                    mode.to_owned(),
                    table.to_owned(),
                ];
                // The script's own clock: interpreter start-up is not the read.
                let answer = tokio::task::spawn_blocking(move || {
                    let args: Vec<&str> = args.iter().map(String::as_str).collect();
                    python::run_adbc_script("cluster_read.py", &args)
                })
                .await??;
                check(op, answer["rows"].as_u64().unwrap_or(0))?;
                runs.push(answer["seconds"].as_f64().context("no seconds")?);
            }
            record(op, runs);
        }
    }
    for (ratio, a, b) in [
        ("get_all_over_one_node", "get_all_nodes", "get_one_node"),
        ("adbc_all_over_one_node", "adbc_all_nodes", "adbc_one_node"),
    ] {
        if let (Some(x), Some(y)) = (
            out.get(&format!("{a}_rows_per_s"))
                .and_then(serde_json::Value::as_f64),
            out.get(&format!("{b}_rows_per_s"))
                .and_then(serde_json::Value::as_f64),
        ) {
            out.insert(ratio.into(), (x / y).into());
        }
    }
    out.insert("rows".into(), rows.into());
    out.insert("nodes".into(), NODES.into());
    out.insert("repeat".into(), options.repeat.into());
    out.insert(
        "cores".into(),
        std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .into(),
    );
    Ok(out)
}

/// Prints the results as a table on stderr.
pub fn print_table(results: &BTreeMap<String, serde_json::Value>) {
    eprintln!(
        "\nMallard cluster benchmark: {} rows on {} nodes, median of {} runs",
        results["rows"], results["nodes"], results["repeat"]
    );
    eprintln!("{:<20} {:>10} {:>16}", "operation", "seconds", "rows/s");
    for op in [
        "partitioned_push",
        "get_one_node",
        "get_all_nodes",
        "pyarrow_all_nodes",
        "adbc_one_node",
        "adbc_all_nodes",
    ] {
        if let (Some(s), Some(r)) = (
            results.get(&format!("{op}_s")),
            results.get(&format!("{op}_rows_per_s")),
        ) {
            eprintln!(
                "{:<20} {:>10.3} {:>16.0}",
                op.to_uppercase(),
                s.as_f64().unwrap_or_default(),
                r.as_f64().unwrap_or_default()
            );
        }
    }
}
