//! Hot-path micro-benchmarks (`cargo bench -p mallard`), so regressions show:
//! DuckDB → Arrow batches, Arrow → DuckDB ingest (in memory and into a file), a wasm
//! session's instantiation,
//! and one 122,880-row (and one 16,384-row) batch through `add_processed` in wasm
//! and natively (IPC into the guest, transform, IPC out, host validation), and the
//! bounded decoder every client and guest message passes (and its footprint walk).

#![allow(missing_docs)] // criterion_group! generates undocumented items

use arrow::array::RecordBatch;
use arrow_flight::FlightData;
use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use futures::StreamExt;
use mallard_db::ingest::Ingest;
use mallard_db::statements::ServerSql;
use mallard_db::{Database, DbOptions, query};
use mallard_exchange::ExchangeSession;
use mallard_exchange::catalog::{Catalog, Code, builtins};
use mallard_exchange::native::NativeSession;
use mallard_exchange::wasm::WasmSession;
use mallard_exchanger::ipc::MessageEncoder;
use mallard_protocol::TableName;
use mallard_sandbox::Limits;
use mallard_sandbox::engine::SandboxEngine;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

const BATCH_ROWS: usize = 122_880;
const SMALL_BATCH_ROWS: usize = 16_384;

/// `add_processed` as a component: `add-processed` speaks contract 0.2,
/// `add-processed-0-1` the same code for 0.1 (built alone: its SDK feature
/// must not reach the other).
fn add_processed_wasm(crate_name: &str) -> Vec<u8> {
    let path = mallard_guest_builder::components::build_one(
        crate_name,
        mallard_guest_builder::components::Profile::Optimized,
    )
    .unwrap();
    std::fs::read(path).unwrap()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn duckdb_paths(c: &mut Criterion) {
    let rt = runtime();
    let db = Arc::new(Database::open(DbOptions::default()).unwrap());
    let rows = 1_000_000u64;
    let batches: Vec<RecordBatch> = (0..rows)
        .step_by(BATCH_ROWS)
        .map(|s| mallard_flights::batch(s, BATCH_ROWS.min((rows - s) as usize)))
        .collect();
    let scratch = tempfile::tempdir().unwrap();
    let file_db = Arc::new(
        Database::open(DbOptions {
            path: Some(scratch.path().join("bench.duckdb")),
            ..DbOptions::default()
        })
        .unwrap(),
    );
    let ingest_into = |db: &Arc<Database>, n: usize| {
        let table = TableName::parse(&format!("t{n}")).unwrap();
        rt.block_on(async {
            let mut ingest = Ingest::start(db.clone(), table, batches[0].schema());
            for batch in &batches {
                ingest.append(batch.clone()).await.unwrap();
            }
            assert_eq!(ingest.commit().await.unwrap(), rows);
        });
    };
    let mut group = c.benchmark_group("duckdb");
    group.sample_size(10).throughput(Throughput::Elements(rows));
    let mut n = 0;
    group.bench_function("ingest_1m_flights_rows", |b| {
        b.iter(|| {
            n += 1;
            ingest_into(&db, n);
        })
    });
    let mut n = 0;
    group.bench_function("ingest_1m_flights_rows_into_a_file", |b| {
        b.iter(|| {
            n += 1;
            ingest_into(&file_db, n);
        })
    });
    group.bench_function("query_1m_flights_rows", |b| {
        b.iter(|| {
            rt.block_on(async {
                let result = query::run(db.clone(), "SELECT * FROM t1".into(), Arc::new(ServerSql))
                    .await
                    .unwrap();
                let mut batches = std::pin::pin!(result.into_stream());
                let mut seen = 0;
                while let Some(batch) = batches.next().await {
                    seen += batch.unwrap().num_rows() as u64;
                }
                assert_eq!(seen, rows);
            });
        })
    });
    group.finish();
}

fn exchange_paths(c: &mut Criterion) {
    let engine = Arc::new(SandboxEngine::new(Limits::default()).unwrap());
    let catalog = Catalog::open(engine.clone(), Default::default(), None).unwrap();
    let admin = mallard::auth::Principal {
        user: "admin".into(),
        role: mallard::auth::Role::Admin,
    };
    let upload = |crate_name: &str| {
        let request = mallard_protocol::UploadRequest {
            component: add_processed_wasm(crate_name).into(),
            options: mallard_protocol::UploadOptions {
                shared: true,
                to_peers: false,
                ..Default::default()
            },
        };
        catalog.upload(&admin, &request).unwrap()
    };
    let version = upload("add-processed");
    let Code::Wasm(pre) = &version.code else {
        panic!("uploaded")
    };
    let uploaded = ("add_processed", pre);
    let version_0_1 = upload("add-processed-0-1");
    let Code::Wasm(pre_0_1) = &version_0_1.code else {
        panic!("uploaded")
    };
    let schema = mallard_flights::batch(0, 1).schema();
    let schema_header = MessageEncoder::new(schema.clone()).schema_header();
    let input = (&schema_header[..], schema.clone());
    let cancelled = Arc::new(AtomicBool::new(false));

    let open_wasm = || {
        WasmSession::open(
            &engine,
            uploaded,
            input.clone(),
            &[],
            cancelled.clone(),
            None,
        )
        .unwrap()
    };

    let mut group = c.benchmark_group("exchange");
    group.bench_function("wasm_instantiate_and_open", |b| b.iter(&open_wasm));
    let builtin = builtins()
        .into_iter()
        .find(|b| b.info.name == "add_processed")
        .unwrap();
    // The flights batch the bench and the peer send, and one that fits in cache.
    for (rows, suffix) in [(BATCH_ROWS, ""), (SMALL_BATCH_ROWS, "_16k")] {
        let data = encoded_flights(rows);
        group.throughput(Throughput::Elements(rows as u64));
        let mut wasm = open_wasm();
        group.bench_function(format!("add_processed_wasm_batch{suffix}"), |b| {
            b.iter(|| wasm.push(&data.data_header, &data.data_body).unwrap())
        });
        let mut wasm_0_1 = WasmSession::open(
            &engine,
            ("add_processed", pre_0_1),
            input.clone(),
            &[],
            cancelled.clone(),
            None,
        )
        .unwrap();
        group.bench_function(format!("add_processed_wasm_0_1_batch{suffix}"), |b| {
            b.iter(|| wasm_0_1.push(&data.data_header, &data.data_body).unwrap())
        });
        let mut native = NativeSession::open(&builtin, schema.clone(), Vec::new()).unwrap();
        group.bench_function(format!("add_processed_native_batch{suffix}"), |b| {
            b.iter(|| native.push(&data.data_header, &data.data_body).unwrap())
        });
    }
    group.finish();
}

/// One record-batch message of `rows` flights rows, as a client sends it.
fn encoded_flights(rows: usize) -> FlightData {
    let batch = mallard_flights::batch(0, rows);
    let mut messages = Vec::new();
    MessageEncoder::new(batch.schema())
        .encode(&batch, &mut messages)
        .unwrap();
    let message = messages.pop().unwrap();
    FlightData {
        data_header: Bytes::from(message.header),
        data_body: Bytes::from(message.body),
        ..Default::default()
    }
}

/// What validating a client's message costs, and the footprint walk's share of it:
/// one 122,880-row flights batch (its dictionaries included) through the bounded
/// decoder every Arrow input passes, and the walk over its record batch alone.
fn decode_paths(c: &mut Criterion) {
    let batch = mallard_flights::batch(0, BATCH_ROWS);
    let schema = batch.schema();
    let mut messages = Vec::new();
    MessageEncoder::new(schema.clone())
        .encode(&batch, &mut messages)
        .unwrap();
    let buffers: Vec<(Vec<u8>, arrow::buffer::Buffer)> = messages
        .into_iter()
        .map(|m| (m.header, arrow::buffer::Buffer::from(m.body)))
        .collect();
    let mut group = c.benchmark_group("decode");
    group.throughput(Throughput::Elements(BATCH_ROWS as u64));
    group.bench_function("validated_flights_batch", |b| {
        b.iter(|| {
            let mut decoder = mallard_exchanger::ipc::MessageDecoder::new(schema.clone());
            for (header, body) in &buffers {
                decoder.decode(header, body.clone()).unwrap();
            }
        })
    });
    let (header, body) = buffers.last().unwrap();
    let message = arrow::ipc::root_as_message(header).unwrap();
    let record = message.header_as_record_batch().unwrap();
    let dictionaries = std::collections::HashMap::new();
    group.bench_function("footprint_walk_flights_batch", |b| {
        b.iter(|| {
            mallard_exchanger::footprint::Walk::new(&record, body.as_slice(), &dictionaries)
                .columns(schema.fields())
                .unwrap()
        })
    });
    group.finish();
}

criterion_group!(benches, duckdb_paths, exchange_paths, decode_paths);
criterion_main!(benches);
