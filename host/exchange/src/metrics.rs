//! What each exchanger version has done: calls, errors by status code, rows and
//! bytes in and out, guest CPU time, wall time per batch, peak guest memory and
//! live instances. Plain atomics, written by the exchange worker and read by
//! `list_exchangers` and the Prometheus exporter, so both show the same numbers.

use serde::Serialize;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

/// Upper bounds of the per-batch wall-time buckets, in seconds: 100 µs to 10 s,
/// roughly ×2.5 apart (a healthy batch of 128K rows takes 1–50 ms).
pub const BATCH_SECONDS_BUCKETS: [f64; 16] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// gRPC status codes 0..=16, each with its error counter.
const STATUS_CODES: usize = 17;

/// A histogram of durations with fixed buckets ([`BATCH_SECONDS_BUCKETS`] and +Inf).
#[derive(Debug, Default)]
pub struct DurationHistogram {
    counts: [AtomicU64; BATCH_SECONDS_BUCKETS.len() + 1],
    sum_nanos: AtomicU64,
}

impl DurationHistogram {
    /// Records one observation.
    pub fn observe(&self, d: Duration) {
        let seconds = d.as_secs_f64();
        let bucket = BATCH_SECONDS_BUCKETS
            .iter()
            .position(|upper| seconds <= *upper)
            .unwrap_or(BATCH_SECONDS_BUCKETS.len());
        self.counts[bucket].fetch_add(1, Ordering::Relaxed);
        self.sum_nanos
            .fetch_add(d.as_nanos().min(u64::MAX as u128) as u64, Ordering::Relaxed);
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.counts.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }

    /// Sum of all observations, seconds.
    pub fn sum_seconds(&self) -> f64 {
        self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9
    }

    /// Cumulative counts per upper bound, +Inf last (the Prometheus layout).
    pub fn cumulative(&self) -> Vec<(f64, u64)> {
        let mut total = 0;
        BATCH_SECONDS_BUCKETS
            .iter()
            .copied()
            .chain([f64::INFINITY])
            .zip(&self.counts)
            .map(|(upper, count)| {
                total += count.load(Ordering::Relaxed);
                (upper, total)
            })
            .collect()
    }

    /// The `q` quantile (0..=1) in seconds, interpolated within its bucket as
    /// Prometheus's `histogram_quantile` does; `None` before any observation.
    /// Beyond the last finite bucket it answers that bucket's bound.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let buckets = self.cumulative();
        let total = buckets.last().map_or(0, |b| b.1);
        if total == 0 {
            return None;
        }
        let rank = q.clamp(0.0, 1.0) * total as f64;
        let mut lower = (0.0, 0u64);
        for &(upper, count) in &buckets {
            if count as f64 >= rank && count > lower.1 {
                if upper.is_infinite() {
                    return Some(lower.0);
                }
                let within = (rank - lower.1 as f64) / (count - lower.1) as f64;
                return Some(lower.0 + (upper - lower.0) * within);
            }
            lower = (upper, count);
        }
        Some(lower.0)
    }
}

/// The counters of one exchanger version.
#[derive(Debug, Default)]
pub struct ExchangerMetrics {
    /// Exchanges started.
    pub calls: AtomicU64,
    errors: [AtomicU64; STATUS_CODES],
    /// Rows received from clients (record batches' lengths).
    pub rows_in: AtomicU64,
    /// Rows sent back.
    pub rows_out: AtomicU64,
    /// IPC bytes received (headers and bodies).
    pub bytes_in: AtomicU64,
    /// IPC bytes sent back.
    pub bytes_out: AtomicU64,
    /// CPU time of the exchange workers, nanoseconds.
    pub cpu_nanos: AtomicU64,
    /// Wall time of each batch's call into the exchanger.
    pub batch_wall: DurationHistogram,
    /// Largest guest memory (all memories and tables) one instance reached.
    pub peak_memory_bytes: AtomicUsize,
    /// Instances running now: one per exchange stage, and each further
    /// instance a parallel stage runs on ([`ExtraInstance`]).
    pub live: AtomicUsize,
}

/// One more live instance of a version (a parallel stage's second and later),
/// counted in [`ExchangerMetrics::live`] until dropped.
pub struct ExtraInstance(std::sync::Arc<ExchangerMetrics>);

impl ExtraInstance {
    /// Counts one more live instance of `metrics`' version.
    pub fn enter(metrics: &std::sync::Arc<ExchangerMetrics>) -> Self {
        metrics.live.fetch_add(1, Ordering::AcqRel);
        Self(metrics.clone())
    }
}

impl Drop for ExtraInstance {
    fn drop(&mut self) {
        self.0.live.fetch_sub(1, Ordering::AcqRel);
    }
}

impl ExchangerMetrics {
    /// Counts one failed exchange under its gRPC code.
    pub fn error(&self, code: tonic::Code) {
        let index = (code as usize).min(STATUS_CODES - 1);
        self.errors[index].fetch_add(1, Ordering::Relaxed);
    }

    /// Failed exchanges by gRPC code, codes with none left out.
    pub fn errors_by_code(&self) -> Vec<(tonic::Code, u64)> {
        self.errors
            .iter()
            .enumerate()
            .map(|(i, n)| (tonic::Code::from(i as i32), n.load(Ordering::Relaxed)))
            .filter(|(_, n)| *n > 0)
            .collect()
    }

    /// Counts one message received; returns its rows and bytes (for receipts).
    pub fn received(&self, data: &arrow_flight::FlightData) -> (u64, u64) {
        let (rows, bytes) = message_size(&data.data_header, data.data_body.len());
        self.rows_in.fetch_add(rows, Ordering::Relaxed);
        self.bytes_in.fetch_add(bytes, Ordering::Relaxed);
        (rows, bytes)
    }

    /// Counts one message sent on; returns its rows and bytes (for receipts).
    pub fn sent(&self, data: &crate::Outgoing) -> (u64, u64) {
        let (rows, bytes) = message_size(&data.fields.data_header, data.body_len());
        self.rows_out.fetch_add(rows, Ordering::Relaxed);
        self.bytes_out.fetch_add(bytes, Ordering::Relaxed);
        (rows, bytes)
    }

    /// Raises the peak memory to `bytes` if that is higher.
    pub fn memory_seen(&self, bytes: usize) {
        self.peak_memory_bytes.fetch_max(bytes, Ordering::Relaxed);
    }

    /// Adds the CPU time a worker used.
    pub fn add_cpu(&self, used: Duration) {
        self.cpu_nanos.fetch_add(
            used.as_nanos().min(u64::MAX as u128) as u64,
            Ordering::Relaxed,
        );
    }

    /// A snapshot for `list_exchangers`.
    pub fn snapshot(&self) -> MetricsSnapshot {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let errors = self.errors_by_code();
        MetricsSnapshot {
            calls: load(&self.calls),
            errors: errors.iter().map(|(_, n)| n).sum(),
            errors_by_code: errors
                .into_iter()
                .map(|(code, n)| (code_name(code).to_owned(), n))
                .collect(),
            rows_in: load(&self.rows_in),
            rows_out: load(&self.rows_out),
            bytes_in: load(&self.bytes_in),
            bytes_out: load(&self.bytes_out),
            cpu_ms: load(&self.cpu_nanos) as f64 / 1e6,
            batches: self.batch_wall.count(),
            batch_ms_p50: self.batch_wall.quantile(0.5).map(|s| s * 1e3),
            batch_ms_p99: self.batch_wall.quantile(0.99).map(|s| s * 1e3),
            peak_memory_bytes: self.peak_memory_bytes.load(Ordering::Relaxed),
            live: self.live.load(Ordering::Relaxed),
        }
    }
}

/// Rows of a message of `header` (0 unless a record batch) and its IPC bytes
/// (the header and a body of `body_bytes`).
fn message_size(header: &[u8], body_bytes: usize) -> (u64, u64) {
    let bytes = (header.len() + body_bytes) as u64;
    (super::message_rows(header), bytes)
}

/// The metrics of one version, as `list_exchangers` shows them.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct MetricsSnapshot {
    /// Exchanges started.
    pub calls: u64,
    /// Exchanges that ended with an error.
    pub errors: u64,
    /// The same, by gRPC code name (`DEADLINE_EXCEEDED`, …).
    pub errors_by_code: std::collections::BTreeMap<String, u64>,
    /// Rows received.
    pub rows_in: u64,
    /// Rows sent back.
    pub rows_out: u64,
    /// IPC bytes received.
    pub bytes_in: u64,
    /// IPC bytes sent back.
    pub bytes_out: u64,
    /// Worker CPU time, milliseconds.
    pub cpu_ms: f64,
    /// Batches pushed through the exchanger.
    pub batches: u64,
    /// Median wall time per batch, milliseconds (bucket-interpolated).
    pub batch_ms_p50: Option<f64>,
    /// 99th percentile wall time per batch, milliseconds (bucket-interpolated).
    pub batch_ms_p99: Option<f64>,
    /// Largest guest memory one instance reached, bytes.
    pub peak_memory_bytes: usize,
    /// Exchanges running now.
    pub live: usize,
}

/// The gRPC name of a code (`INVALID_ARGUMENT`), as Prometheus labels and
/// listings show it.
pub fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code as C;
    match code {
        C::Ok => "OK",
        C::Cancelled => "CANCELLED",
        C::Unknown => "UNKNOWN",
        C::InvalidArgument => "INVALID_ARGUMENT",
        C::DeadlineExceeded => "DEADLINE_EXCEEDED",
        C::NotFound => "NOT_FOUND",
        C::AlreadyExists => "ALREADY_EXISTS",
        C::PermissionDenied => "PERMISSION_DENIED",
        C::ResourceExhausted => "RESOURCE_EXHAUSTED",
        C::FailedPrecondition => "FAILED_PRECONDITION",
        C::Aborted => "ABORTED",
        C::OutOfRange => "OUT_OF_RANGE",
        C::Unimplemented => "UNIMPLEMENTED",
        C::Internal => "INTERNAL",
        C::Unavailable => "UNAVAILABLE",
        C::DataLoss => "DATA_LOSS",
        C::Unauthenticated => "UNAUTHENTICATED",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_interpolate_within_buckets() {
        let h = DurationHistogram::default();
        assert_eq!(h.quantile(0.5), None);
        // 100 observations in (1 ms, 2.5 ms]: the median is halfway through.
        for _ in 0..100 {
            h.observe(Duration::from_micros(2_000));
        }
        let p50 = h.quantile(0.5).unwrap();
        assert!((p50 - 0.00175).abs() < 1e-9, "{p50}");
        // One slow outlier does not move p50, and p99 stays in the fast bucket.
        h.observe(Duration::from_secs(3));
        assert!(h.quantile(0.99).unwrap() <= 0.0025);
        assert!(h.quantile(1.0).unwrap() > 2.5);
        assert_eq!(h.count(), 101);
        assert_eq!(h.cumulative().last(), Some(&(f64::INFINITY, 101)));
    }

    #[test]
    fn observations_past_the_last_bucket_land_in_inf() {
        let h = DurationHistogram::default();
        h.observe(Duration::from_secs(60));
        assert_eq!(h.cumulative()[BATCH_SECONDS_BUCKETS.len() - 1].1, 0);
        assert_eq!(h.quantile(0.5), Some(10.0));
    }

    #[test]
    fn errors_are_counted_by_code() {
        let m = ExchangerMetrics::default();
        m.error(tonic::Code::DeadlineExceeded);
        m.error(tonic::Code::DeadlineExceeded);
        m.error(tonic::Code::Aborted);
        let s = m.snapshot();
        assert_eq!(s.errors, 3);
        assert_eq!(s.errors_by_code["DEADLINE_EXCEEDED"], 2);
        assert_eq!(s.errors_by_code["ABORTED"], 1);
    }
}
