//! The six-step walkthrough of the seeds' demo, with wasm in place of pickled Python.

use crate::bench::{self, BenchOptions, SandboxMode};
use crate::data;
use crate::ops;
use crate::servers::{self, Server};
use anyhow::{Context, Result, ensure};
use arrow::util::pretty::pretty_format_batches;
use arrow_flight::FlightClient;
use indicatif::{ProgressBar, ProgressStyle};
use std::path::PathBuf;

/// Options of the walkthrough.
pub struct WalkthroughOptions {
    /// Server 1 address.
    pub server1: String,
    /// Server 2 address.
    pub server2: String,
    /// User name.
    pub user: String,
    /// Password.
    pub password: String,
    /// Rows of `data/flights.parquet` when it has to be created.
    pub rows: u64,
    /// Rows for the closing benchmark.
    pub bench_rows: u64,
    /// Upload this component instead of the built-in `add_processed`.
    pub exchanger: Option<PathBuf>,
    /// Do not start servers; fail if none answer.
    pub no_start: bool,
}

fn step(n: u32, title: &str) {
    println!("\n== {n}) {title}");
}

fn rows_bar(len: u64, msg: &str) -> ProgressBar {
    let bar = ProgressBar::new(len).with_message(msg.to_owned());
    bar.set_style(
        ProgressStyle::with_template(
            "{msg:>24} [{bar:30}] {human_pos}/{human_len} rows ({per_sec}, {eta})",
        )
        .expect("static template")
        .progress_chars("=> "),
    );
    bar
}

async fn count(client: &mut FlightClient, table: &str) -> Result<i64> {
    let batches = ops::query(client, &format!("SELECT count(*)::BIGINT FROM \"{table}\"")).await?;
    let column = batches[0]
        .column(0)
        .as_any()
        .downcast_ref::<arrow::array::Int64Array>()
        .context("count")?;
    Ok(column.value(0))
}

/// Reads `batches` (a Parquet reader) on a blocking thread into a bounded stream.
fn stream_batches(
    batches: impl Iterator<Item = Result<arrow::array::RecordBatch>> + Send + 'static,
) -> (
    tokio_stream::wrappers::ReceiverStream<Result<arrow::array::RecordBatch>>,
    tokio::task::JoinHandle<()>,
) {
    let (tx, rx) = tokio::sync::mpsc::channel(2);
    let reader = tokio::task::spawn_blocking(move || {
        for batch in batches {
            if tx.blocking_send(batch).is_err() {
                break;
            }
        }
    });
    (tokio_stream::wrappers::ReceiverStream::new(rx), reader)
}

/// A stateless exchanger on one instance, then on one per core: `pseudonymize`
/// (keyed HMAC-SHA256 of `carrier`) where the data lives, only a count returned;
/// then the same exchanger as a scalar function.
async fn every_core(client: &mut FlightClient, rows: u64) -> Result<()> {
    println!(
        "building guest-exchangers/pseudonymize for wasm32-wasip2 (cached after the first time)"
    );
    let component = std::fs::read(crate::guest::build("pseudonymize")?)?;
    ops::action(client, "upload_exchanger", component).await?;
    let cores = mallard::config::default_exchange_instances();
    for instances in [1, cores] {
        let sql = format!(
            r#"SELECT count(DISTINCT carrier) AS pseudonyms FROM exchange('{{"exchanger": "pseudonymize", "instances": {instances}, "params": {{"column": "carrier", "key": "walkthrough-key-0001"}}}}', 'SELECT * FROM flights')"#
        );
        let started = std::time::Instant::now();
        let out = ops::query(client, &sql).await?;
        let seconds = started.elapsed().as_secs_f64();
        println!(
            "pseudonymize on {instances} instance(s): {rows} rows in {seconds:.2} s ({:.0} rows/s)",
            rows as f64 / seconds.max(1e-9)
        );
        if instances == 1 {
            println!("{}", pretty_format_batches(&out)?);
        }
    }
    // The same exchanger as a scalar function: one value per row, any SQL shape.
    let sql = r#"SELECT DISTINCT carrier, exchanger_varchar('{"exchanger": "pseudonymize", "arguments": ["carrier"], "params": {"column": "carrier", "key": "walkthrough-key-0001"}}', carrier) AS pseudonym FROM flights ORDER BY 1 LIMIT 3"#;
    println!("{sql}");
    println!(
        "{}",
        pretty_format_batches(&ops::query(client, sql).await?)?
    );
    Ok(())
}

/// Runs the walkthrough.
pub async fn run(options: WalkthroughOptions) -> Result<()> {
    let (s1, s2): (Server, Server) =
        servers::ensure_pair(&options.server1, &options.server2, !options.no_start).await?;
    for s in [&s1, &s2] {
        let how = if s.child.is_some() {
            "started by the demo"
        } else {
            "already running"
        };
        println!("server {} ({how})", s.url);
    }
    let mut c1 = servers::connect(&s1.url, &options.user, &options.password).await?;
    let mut c2 = servers::connect(&s2.url, &options.user, &options.password).await?;

    step(1, "Both servers answer SELECT 42");
    for (url, client) in [(&s1.url, &mut c1), (&s2.url, &mut c2)] {
        let batches = ops::query(client, "SELECT 42 AS answer").await?;
        println!("{url}:\n{}", pretty_format_batches(&batches)?);
    }

    step(2, "Create table foo on server 1 and move it to server 2");
    ops::query(&mut c1, "CREATE OR REPLACE TABLE foo (id INTEGER, name VARCHAR); INSERT INTO foo VALUES (1, 'duck'), (2, 'goose'), (3, 'swan')").await?;
    ops::action(&mut c2, "sql", "DROP TABLE IF EXISTS foo").await?;
    let moved = ops::transfer(
        &mut c1,
        "SELECT * FROM foo",
        &mut c2,
        "foo",
        &ProgressBar::hidden(),
    )
    .await?;
    println!("moved {moved} rows");
    println!(
        "server 1:\n{}",
        pretty_format_batches(&ops::query(&mut c1, "SELECT * FROM foo ORDER BY id").await?)?
    );
    println!(
        "server 2:\n{}",
        pretty_format_batches(&ops::query(&mut c2, "SELECT * FROM foo ORDER BY id").await?)?
    );

    step(3, "Load data/flights.parquet");
    let path = crate::guest::workspace().join("data/flights.parquet");
    if !path.exists() {
        println!(
            "{} is missing; generating {} rows",
            path.display(),
            options.rows
        );
        let bar = rows_bar(options.rows, "generating");
        data::write_parquet(&path, options.rows, &bar)?;
        bar.finish_and_clear();
    }
    let (schema, rows, _) = data::read_parquet(&path)?;
    println!(
        "{}: {rows} rows, {} columns",
        path.display(),
        schema.fields().len()
    );

    step(
        4,
        "Upload flights to server 1, then move it to server 2 (client transfer and push_table)",
    );
    ops::action(&mut c1, "sql", "DROP TABLE IF EXISTS flights").await?;
    ops::action(
        &mut c2,
        "sql",
        "DROP TABLE IF EXISTS flights; DROP TABLE IF EXISTS flights_pushed",
    )
    .await?;
    let (schema, _, batches) = data::read_parquet(&path)?;
    let bar = rows_bar(rows, "PUT server 1");
    let (stream, reader) = stream_batches(batches);
    let put = ops::put(&mut c1, "flights", schema, stream, &bar).await?;
    reader.await?;
    bar.finish_and_clear();
    ensure!(
        put == rows,
        "server 1 acknowledged {put} rows, expected {rows}"
    );
    let bar = rows_bar(rows, "TRANSFER via client");
    let moved = ops::transfer(&mut c1, "SELECT * FROM flights", &mut c2, "flights", &bar).await?;
    bar.finish_and_clear();
    ops::action(&mut c2, "sql", "DROP TABLE IF EXISTS flights_processed").await?;
    let pushed = ops::push(&mut c1, "flights", &s2.url, "flights_pushed").await?;
    let counts = (
        count(&mut c1, "flights").await?,
        count(&mut c2, "flights").await?,
        count(&mut c2, "flights_pushed").await?,
    );
    println!(
        "server 1 flights: {}, server 2 flights (client transfer {moved}): {}, server 2 flights_pushed (push_table {pushed}): {}",
        counts.0, counts.1, counts.2
    );
    ensure!(
        counts.0 == rows as i64 && counts.1 == rows as i64 && counts.2 == rows as i64,
        "row counts differ"
    );

    step(
        5,
        "Upload a WebAssembly exchanger and exchange flights through it",
    );
    let component = match &options.exchanger {
        Some(p) => p.clone(),
        None => {
            println!(
                "building guest-exchangers/add-processed for wasm32-wasip2 (cached after the first time)"
            );
            crate::guest::build("add-processed")?
        }
    };
    let bytes =
        std::fs::read(&component).with_context(|| format!("reading {}", component.display()))?;
    let report = ops::action(&mut c1, "upload_exchanger", bytes).await?;
    println!("uploaded {}: {report}", component.display());
    let name = report["name"]
        .as_str()
        .context("upload result has a name")?
        .to_owned();
    let (schema, _, batches) = data::read_parquet(&path)?;
    let bar = rows_bar(rows, "EXCHANGE (wasm)");
    let (stream, reader) = stream_batches(batches);
    let out = ops::exchange(&mut c1, &name, schema, stream, &bar).await?;
    reader.await?;
    bar.finish_and_clear();
    ensure!(
        out.rows == rows,
        "exchange returned {} rows, expected {rows}",
        out.rows
    );
    if name == "add_processed" {
        ensure!(
            out.processed_true == rows,
            "processed is not true on every row"
        );
        println!(
            "{} rows came back with processed = true on every row",
            out.rows
        );
    }
    if let Some(sample) = out.sample {
        println!("{}", pretty_format_batches(&[sample])?);
    }

    step(
        6,
        "Run exchangers where the data lives: in SQL, on a push, on every core",
    );
    let sql = format!(
        "SELECT origin, count(*) AS flights, count(*) FILTER (WHERE processed) AS processed \
         FROM exchange('{name}', 'SELECT * FROM flights') GROUP BY 1 ORDER BY 2 DESC LIMIT 5"
    );
    println!("{sql}");
    let top = ops::query(&mut c1, &sql).await?;
    println!("{}", pretty_format_batches(&top)?);
    let pushed = ops::push_through(
        &mut c1,
        "flights",
        Some(&name),
        &s2.url,
        "flights_processed",
    )
    .await?;
    let processed = count(&mut c2, "flights_processed").await?;
    println!(
        "push_table through {name}: server 2 flights_processed has {processed} rows ({pushed} acknowledged)"
    );
    ensure!(
        processed == rows as i64,
        "the pushed table has {processed} rows, expected {rows}"
    );
    every_core(&mut c1, rows).await?;

    step(7, "Benchmark, sandbox on and off");
    let options = BenchOptions {
        rows: options.bench_rows,
        sandbox: SandboxMode::Both,
        repeat: 3,
        json: false,
        ops: Vec::new(),
        adbc: None,
        polyglot: false,
        ceiling: false,
        credentials: (options.user.clone(), options.password.clone()),
        parallel_rounds: 1,
    };
    let results = bench::run(&s1, &mut c1, &s2, &mut c2, &options).await?;
    bench::print_table(&results);
    println!("\ndone");
    Ok(())
}
