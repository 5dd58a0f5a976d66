//! The demo's data: `data/flights.parquet` (realistic flights, see data/README.md)
//! and the benchmark's rows, shaped like the Python peer's table so the two
//! systems move the same bytes.

use anyhow::{Context, Result};
use arrow::array::{
    ArrayRef, BooleanArray, Float64Array, Int32Array, Int64Array, RecordBatch, RecordBatchReader,
    StringArray, TimestampMicrosecondArray,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use indicatif::ProgressBar;
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::file::properties::WriterProperties;
use std::path::Path;
use std::sync::{Arc, LazyLock};

/// Rows per generated batch (the peer's default `--batch-rows`).
pub const BATCH_ROWS: usize = 122_880;

/// Writes `rows` flights rows to `path`, streaming (flat memory).
pub fn write_parquet(path: &Path, rows: u64, progress: &ProgressBar) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("parquet.tmp");
    let file =
        std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    let props = WriterProperties::builder()
        .set_compression(parquet::basic::Compression::SNAPPY)
        .build();
    let mut writer = ArrowWriter::try_new(file, mallard_flights::schema(), Some(props))?;
    let mut start = 0u64;
    while start < rows {
        let n = (rows - start).min(BATCH_ROWS as u64) as usize;
        writer.write(&mallard_flights::batch(start, n))?;
        start += n as u64;
        progress.set_position(start);
    }
    writer.close()?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

/// Streams the batches of a Parquet file.
pub fn read_parquet(
    path: &Path,
) -> Result<(
    SchemaRef,
    u64,
    impl Iterator<Item = Result<RecordBatch>> + Send + use<>,
)> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(file)?.with_batch_size(BATCH_ROWS);
    let rows = builder.metadata().file_metadata().num_rows() as u64;
    let reader = builder.build()?;
    let schema = reader.schema();
    Ok((schema, rows, reader.map(|b| b.map_err(Into::into))))
}

const PEER_AIRPORTS: [&str; 5] = ["JFK", "LAX", "ORD", "ATL", "DFW"];

static PEER_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new("flight_id", DataType::Int64, true),
        Field::new("flight_number", DataType::Utf8, true),
        Field::new("origin", DataType::Utf8, true),
        Field::new("destination", DataType::Utf8, true),
        Field::new(
            "departure_time",
            DataType::Timestamp(TimeUnit::Microsecond, None),
            true,
        ),
        Field::new("passengers", DataType::Int32, true),
        Field::new("distance", DataType::Float64, true),
        Field::new("delayed", DataType::Boolean, true),
    ]))
});

/// The benchmark table's schema: the Python peer's `flights` columns.
pub fn peer_schema() -> SchemaRef {
    PEER_SCHEMA.clone()
}

fn mix(i: u64) -> u64 {
    let mut z = i.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Rows `start..start + rows` of the benchmark table (deterministic per row).
pub fn peer_batch(start: u64, rows: usize) -> RecordBatch {
    let ids: Vec<i64> = (start..start + rows as u64).map(|i| i as i64).collect();
    let origin_idx: Vec<usize> = ids.iter().map(|&i| (mix(i as u64) % 5) as usize).collect();
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from(ids.clone())),
        Arc::new(StringArray::from_iter_values(
            ids.iter().map(|i| format!("FL-{i}")),
        )),
        Arc::new(StringArray::from_iter_values(
            origin_idx.iter().map(|&o| PEER_AIRPORTS[o]),
        )),
        Arc::new(StringArray::from_iter_values(
            ids.iter()
                .zip(&origin_idx)
                .map(|(&i, &o)| PEER_AIRPORTS[(o + 1 + (mix(i as u64 ^ 1) % 4) as usize) % 5]),
        )),
        Arc::new(TimestampMicrosecondArray::from_iter_values(
            ids.iter().map(|&i| 1_704_067_200_000_000 + i * 60_000_000),
        )),
        Arc::new(Int32Array::from_iter_values(
            ids.iter().map(|&i| 50 + (mix(i as u64 ^ 2) % 250) as i32),
        )),
        Arc::new(Float64Array::from_iter_values(
            ids.iter()
                .map(|&i| 100.0 + (mix(i as u64 ^ 3) % 490_000) as f64 / 100.0),
        )),
        Arc::new(BooleanArray::from_iter(
            ids.iter()
                .map(|&i| Some(mix(i as u64 ^ 4).is_multiple_of(5))),
        )),
    ];
    RecordBatch::try_new(peer_schema(), columns).expect("peer batch matches its schema")
}

/// Approximate bytes of Arrow data per benchmark row (for MB/s).
pub fn peer_row_bytes() -> f64 {
    let b = peer_batch(0, 10_000);
    b.get_array_memory_size() as f64 / 10_000.0
}
