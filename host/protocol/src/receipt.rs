//! An exchange's receipt: what each stage took in and gave out, and what it cost.
//!
//! The server sends it at the end of every successful exchange: in the gRPC
//! trailer [`TRAILER`] of `do_exchange` and of a `do_get` whose SQL called
//! `exchange(…)`, and in the result of `push_table`. The trailer's value is the
//! receipt as JSON (gRPC base64-encodes `-bin` metadata on the wire; clients
//! decode it for you).

use serde::{Deserialize, Serialize};

/// The trailer (gRPC metadata at the end of the stream) that carries receipts.
pub const TRAILER: &str = "mallard-receipt-bin";

/// One exchange's receipt.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Receipt {
    /// The stages, first to last.
    pub stages: Vec<StageReceipt>,
    /// Wall time from opening the first stage to the end of the output, milliseconds.
    pub wall_ms: f64,
}

/// What one stage did.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StageReceipt {
    /// The version that ran (`alice/classify@1.0.0 (sha256:…)`).
    pub exchanger: String,
    /// Rows of the record batches it received.
    pub rows_in: u64,
    /// Rows of the record batches it produced.
    pub rows_out: u64,
    /// IPC bytes (headers and bodies) it received.
    pub bytes_in: u64,
    /// IPC bytes it produced.
    pub bytes_out: u64,
    /// Messages (record and dictionary batches) it received.
    pub batches_in: u64,
    /// Messages it produced.
    pub batches_out: u64,
    /// CPU time of its instance: instantiation, calls, validation, teardown; milliseconds.
    pub cpu_ms: f64,
    /// Wall time spent in its calls, milliseconds.
    pub wall_ms: f64,
    /// Peak guest memory of its instance, bytes (0 for native built-ins).
    pub peak_memory_bytes: u64,
    /// Instances it used (one per stream; a trapped instance is never reused).
    pub instances: u32,
}

impl Receipt {
    /// The receipt as the trailer's value.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a receipt always serialises")
    }

    /// A receipt from a trailer's value; `None` if it is not one.
    pub fn from_json(bytes: &[u8]) -> Option<Self> {
        serde_json::from_slice(bytes).ok()
    }

    /// Rows the last stage produced: what the caller received.
    pub fn rows_out(&self) -> u64 {
        self.stages.last().map_or(0, |s| s.rows_out)
    }
}

/// Receipts of several exchanges (a query may call `exchange(…)` more than once),
/// as the trailer of a `do_get` carries them.
pub fn list_to_json(receipts: &[Receipt]) -> Vec<u8> {
    serde_json::to_vec(receipts).expect("receipts always serialise")
}

/// The receipts of a `do_get` trailer (a JSON list) or a `do_exchange` one (one object).
pub fn list_from_json(bytes: &[u8]) -> Option<Vec<Receipt>> {
    serde_json::from_slice::<Vec<Receipt>>(bytes)
        .ok()
        .or_else(|| Receipt::from_json(bytes).map(|r| vec![r]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn receipt() -> Receipt {
        Receipt {
            stages: vec![StageReceipt {
                exchanger: "alice/x@1.0.0 (sha256:0123456789ab)".into(),
                rows_in: 10,
                rows_out: 7,
                instances: 1,
                ..Default::default()
            }],
            wall_ms: 1.5,
        }
    }

    #[test]
    fn a_receipt_round_trips_alone_and_in_a_list() {
        let one = receipt();
        assert_eq!(Receipt::from_json(&one.to_json()), Some(one.clone()));
        assert_eq!(list_from_json(&one.to_json()), Some(vec![one.clone()]));
        let two = vec![one.clone(), Receipt::default()];
        assert_eq!(list_from_json(&list_to_json(&two)), Some(two));
        assert_eq!(one.rows_out(), 7);
        assert_eq!(Receipt::from_json(b"not json"), None);
    }
}
