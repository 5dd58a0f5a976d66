//! `classify_delays`: real work on the flights data set. Appends `delay_class`
//! (utf8) from `arrival_delay_min` and `cancelled`:
//! `cancelled`, `early` (< 0), `on_time` (< `late_after`, default 15 minutes),
//! `late` (< `severe_after`, default 60), `severe`; null when the delay is unknown.
//!
//! With `summary=true` it instead emits, at end of stream, one row per route
//! (origin, destination) with flights, cancelled count and mean arrival delay.

use arrow_array::builder::{Float64Builder, Int64Builder, StringBuilder, StringDictionaryBuilder};
use arrow_array::cast::AsArray;
use arrow_array::types::{Int32Type, UInt8Type};
use mallard_exchanger::prelude::*;
use std::collections::BTreeMap;

/// Per-stream state: thresholds, column positions and (in summary mode) route totals.
pub struct ClassifyDelays {
    output: SchemaRef,
    delay: usize,
    cancelled: usize,
    late_after: i32,
    severe_after: i32,
    summary: Option<Summary>,
}

/// Route aggregates kept across batches in summary mode.
struct Summary {
    origin: usize,
    destination: usize,
    routes: BTreeMap<(String, String), (i64, i64, i64, i64)>,
}

fn column(input: &Schema, name: &str, want: &DataType) -> Result<usize, ExchangeError> {
    let (idx, field) = input
        .column_with_name(name)
        .ok_or_else(|| ExchangeError::InvalidInput(format!("input has no `{name}` column")))?;
    if field.data_type() != want {
        return Err(ExchangeError::InvalidInput(format!(
            "`{name}` is {}, expected {want}",
            field.data_type()
        )));
    }
    Ok(idx)
}

impl ClassifyDelays {
    fn classify(&self, batch: &RecordBatch) -> Result<RecordBatch, ExchangeError> {
        let delays = batch.column(self.delay).as_primitive::<Int32Type>();
        let cancelled = batch.column(self.cancelled).as_boolean();
        let mut classes = StringDictionaryBuilder::<UInt8Type>::new();
        for row in 0..batch.num_rows() {
            if cancelled.is_valid(row) && cancelled.value(row) {
                classes.append_value("cancelled");
            } else if delays.is_null(row) {
                classes.append_null();
            } else {
                let d = delays.value(row);
                classes.append_value(match d {
                    d if d < 0 => "early",
                    d if d < self.late_after => "on_time",
                    d if d < self.severe_after => "late",
                    _ => "severe",
                });
            }
        }
        let mut columns = batch.columns().to_vec();
        columns.push(Arc::new(classes.finish()));
        Ok(RecordBatch::try_new(self.output.clone(), columns)?)
    }

    fn accumulate(summary: &mut Summary, delay: usize, cancelled: usize, batch: &RecordBatch) {
        let origins = batch.column(summary.origin).as_string::<i32>();
        let dests = batch.column(summary.destination).as_string::<i32>();
        let delays = batch.column(delay).as_primitive::<Int32Type>();
        let cancelled = batch.column(cancelled).as_boolean();
        for row in 0..batch.num_rows() {
            let key = (origins.value(row).to_owned(), dests.value(row).to_owned());
            let slot = summary.routes.entry(key).or_default();
            slot.0 += 1;
            if cancelled.is_valid(row) && cancelled.value(row) {
                slot.1 += 1;
            }
            if delays.is_valid(row) {
                slot.2 += delays.value(row) as i64;
                slot.3 += 1;
            }
        }
    }
}

impl Exchanger for ClassifyDelays {
    const INFO: Info = Info {
        name: "classify_delays",
        version: "1.0.0",
        description: "flights: appends `delay_class`, or with summary=true emits per-route aggregates",
    };

    fn open(input: SchemaRef, params: &Params) -> Result<Self, ExchangeError> {
        let delay = column(&input, "arrival_delay_min", &DataType::Int32)?;
        let cancelled = column(&input, "cancelled", &DataType::Boolean)?;
        let late_after = params.parse_or("late_after", 15)?;
        let severe_after = params.parse_or("severe_after", 60)?;
        let (output, summary) = if params.parse_or("summary", false)? {
            let origin = column(&input, "origin", &DataType::Utf8)?;
            let destination = column(&input, "destination", &DataType::Utf8)?;
            let schema = Schema::new(vec![
                Field::new("origin", DataType::Utf8, false),
                Field::new("destination", DataType::Utf8, false),
                Field::new("flights", DataType::Int64, false),
                Field::new("cancelled", DataType::Int64, false),
                Field::new("mean_arrival_delay_min", DataType::Float64, true),
            ]);
            let summary = Summary {
                origin,
                destination,
                routes: BTreeMap::new(),
            };
            (schema, Some(summary))
        } else {
            let mut fields: Vec<_> = input.fields().iter().cloned().collect();
            let dict = DataType::Dictionary(Box::new(DataType::UInt8), Box::new(DataType::Utf8));
            fields.push(Arc::new(Field::new("delay_class", dict, true)));
            (Schema::new(fields), None)
        };
        Ok(Self {
            output: Arc::new(output),
            delay,
            cancelled,
            late_after,
            severe_after,
            summary,
        })
    }

    fn output_schema(&self) -> SchemaRef {
        self.output.clone()
    }

    fn push(&mut self, batch: RecordBatch) -> Result<Vec<RecordBatch>, ExchangeError> {
        match &mut self.summary {
            Some(summary) => {
                Self::accumulate(summary, self.delay, self.cancelled, &batch);
                Ok(Vec::new())
            }
            None => Ok(vec![self.classify(&batch)?]),
        }
    }

    fn finish(&mut self) -> Result<Vec<RecordBatch>, ExchangeError> {
        let Some(summary) = self.summary.take() else {
            return Ok(Vec::new());
        };
        let mut origin = StringBuilder::new();
        let mut destination = StringBuilder::new();
        let mut flights = Int64Builder::new();
        let mut cancelled = Int64Builder::new();
        let mut mean = Float64Builder::new();
        for ((o, d), (n, c, sum, with_delay)) in summary.routes {
            origin.append_value(o);
            destination.append_value(d);
            flights.append_value(n);
            cancelled.append_value(c);
            mean.append_option((with_delay > 0).then(|| sum as f64 / with_delay as f64));
        }
        let columns: Vec<ArrayRef> = vec![
            Arc::new(origin.finish()),
            Arc::new(destination.finish()),
            Arc::new(flights.finish()),
            Arc::new(cancelled.finish()),
            Arc::new(mean.finish()),
        ];
        Ok(vec![RecordBatch::try_new(self.output.clone(), columns)?])
    }

    /// Classifying is per batch; the route summary is not.
    fn stateless(&self) -> bool {
        self.summary.is_none()
    }
}

export_exchanger!(ClassifyDelays);
