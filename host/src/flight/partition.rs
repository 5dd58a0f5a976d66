//! Splitting a push's batches among several targets: by a hash of one column
//! (equal keys on the same target, push after push, Mallard version after
//! version: xxHash64 with a fixed seed over Arrow's row encoding of the value),
//! or whole batches in turn.

use arrow::array::{RecordBatch, UInt32Array};
use arrow::compute::take_record_batch;
use arrow::datatypes::SchemaRef;
use arrow::row::{RowConverter, SortField};
use mallard_core::{Error, Result};
use mallard_protocol::Partition;
use twox_hash::XxHash64;

/// The hash's seed: changing it moves every key to another target.
const SEED: u64 = 0x6d61_6c6c_6172_6421;

/// Splits batches of one schema among `targets` targets.
pub struct Partitioner {
    rule: Rule,
    targets: usize,
}

enum Rule {
    Hash { column: usize, rows: RowConverter },
    RoundRobin { next: usize },
}

impl Partitioner {
    /// A partitioner for batches of `schema`; InvalidArgument if the hash column
    /// is not in it or its type cannot be hashed.
    pub fn new(partition: &Partition, schema: &SchemaRef, targets: usize) -> Result<Self> {
        let rule = match partition {
            Partition::RoundRobin => Rule::RoundRobin { next: 0 },
            Partition::Hash(name) => {
                let (column, field) = schema.column_with_name(name).ok_or_else(|| {
                    Error::invalid_argument(format!(
                        "the partition's hash column {name:?} is not in the pushed rows \
                         (columns: {})",
                        schema
                            .fields()
                            .iter()
                            .map(|f| f.name().as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ))
                })?;
                let rows = RowConverter::new(vec![SortField::new(field.data_type().clone())])
                    .map_err(|e| {
                        Error::invalid_argument(format!(
                            "cannot partition by {name:?} of type {}: {e}",
                            field.data_type()
                        ))
                    })?;
                Rule::Hash { column, rows }
            }
        };
        Ok(Self { rule, targets })
    }

    /// `batch`'s rows for each target (`None` where a target gets none of them).
    pub fn split(&mut self, batch: &RecordBatch) -> Result<Vec<Option<RecordBatch>>> {
        let mut parts = vec![None; self.targets];
        match &mut self.rule {
            Rule::RoundRobin { next } => {
                parts[*next] = Some(batch.clone());
                *next = (*next + 1) % self.targets;
            }
            Rule::Hash { column, rows } => {
                let encoded = rows.convert_columns(&[batch.column(*column).clone()])?;
                let mut indices = vec![Vec::new(); self.targets];
                for (row, key) in encoded.iter().enumerate() {
                    let target = XxHash64::oneshot(SEED, key.as_ref()) % self.targets as u64;
                    indices[target as usize].push(row as u32);
                }
                for (part, rows) in parts.iter_mut().zip(indices) {
                    if rows.is_empty() {
                        continue;
                    }
                    *part = Some(take_record_batch(batch, &UInt32Array::from(rows))?);
                }
            }
        }
        Ok(parts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::Int64Type;

    fn ids(batch: &RecordBatch) -> Vec<i64> {
        batch
            .column(0)
            .as_primitive::<Int64Type>()
            .values()
            .to_vec()
    }

    #[test]
    fn a_hash_split_keeps_every_row_once_and_equal_keys_together() {
        let batch = mallard_flights::batch(0, 10_000);
        let schema = batch.schema();
        let mut by_carrier =
            Partitioner::new(&Partition::Hash("carrier".into()), &schema, 3).unwrap();
        let parts = by_carrier.split(&batch).unwrap();
        let mut seen: Vec<i64> = parts.iter().flatten().flat_map(ids).collect();
        seen.sort_unstable();
        assert_eq!(seen, (0..10_000).collect::<Vec<_>>());
        let mut carriers_per_part = Vec::new();
        for part in parts.iter().flatten() {
            let carriers = part.column_by_name("carrier").unwrap().as_string::<i32>();
            let set: std::collections::BTreeSet<&str> = carriers.iter().flatten().collect();
            carriers_per_part.push(set);
        }
        for (i, a) in carriers_per_part.iter().enumerate() {
            for b in &carriers_per_part[i + 1..] {
                assert!(a.is_disjoint(b), "a carrier on two targets: {a:?} {b:?}");
            }
        }
        // The same key goes to the same target in the next batch and the next push.
        let mut again = Partitioner::new(&Partition::Hash("carrier".into()), &schema, 3).unwrap();
        let parts_again = again.split(&batch).unwrap();
        assert_eq!(
            parts
                .iter()
                .map(|p| p.as_ref().map(ids))
                .collect::<Vec<_>>(),
            parts_again
                .iter()
                .map(|p| p.as_ref().map(ids))
                .collect::<Vec<_>>()
        );
    }

    #[test]
    fn null_keys_go_to_one_target() {
        let batch = mallard_flights::batch(0, 5_000);
        let schema = batch.schema();
        let mut by_delay =
            Partitioner::new(&Partition::Hash("departure_delay_min".into()), &schema, 4).unwrap();
        let parts = by_delay.split(&batch).unwrap();
        let with_nulls = parts
            .iter()
            .flatten()
            .filter(|p| {
                p.column_by_name("departure_delay_min")
                    .unwrap()
                    .null_count()
                    > 0
            })
            .count();
        let nulls = batch
            .column_by_name("departure_delay_min")
            .unwrap()
            .null_count();
        assert!(nulls > 0, "the sample has cancelled flights");
        assert_eq!(with_nulls, 1);
    }

    #[test]
    fn round_robin_hands_whole_batches_in_turn() {
        let batches: Vec<_> = (0..5).map(|i| mallard_flights::batch(i * 10, 10)).collect();
        let mut turns = Partitioner::new(&Partition::RoundRobin, &batches[0].schema(), 2).unwrap();
        let targets: Vec<usize> = batches
            .iter()
            .map(|b| {
                let parts = turns.split(b).unwrap();
                assert_eq!(parts.iter().flatten().count(), 1);
                parts.iter().position(Option::is_some).unwrap()
            })
            .collect();
        assert_eq!(targets, vec![0, 1, 0, 1, 0]);
    }

    #[test]
    fn a_missing_column_is_refused_naming_the_columns() {
        let batch = mallard_flights::batch(0, 1);
        let err = Partitioner::new(&Partition::Hash("nope".into()), &batch.schema(), 2)
            .err()
            .unwrap();
        assert!(err.to_string().contains("flight_id"), "{err}");
    }
}
