//! Metrics in the Prometheus (OpenMetrics) text format, served over HTTP at
//! `/metrics` when the operator passes `--metrics-listen`.
//!
//! Counted as things happen: RPCs by method and status and their latency
//! ([`crate::flight::rpc_metrics`]), authentication failures. Read at scrape
//! time, so they cannot drift from what `list_exchangers` and the healthcheck
//! show: every exchanger version's counters ([`crate::exchange::metrics`]) and
//! the live gauges (queries, ingests, exchanges, instances, threads, …).

use crate::error::{Error, Result};
use crate::exchange::metrics::code_name;
use crate::state::ServerState;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::net::SocketAddr;
use std::sync::{Arc, Weak};

/// Labels of an RPC count.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RpcLabels {
    /// Flight method (`DoGet`, `DoAction`, …; `other` for unknown paths).
    pub method: &'static str,
    /// gRPC status name (`OK`, `PERMISSION_DENIED`, …).
    pub code: &'static str,
}

/// Labels of an RPC latency.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MethodLabels {
    /// Flight method.
    pub method: &'static str,
}

fn latency_histogram() -> Histogram {
    // 1 ms to ~65 s, ×4 apart: unary calls at the low end, streams at the top.
    Histogram::new(exponential_buckets(0.001, 4.0, 9))
}

/// What the server counts as it goes.
#[derive(Debug, Clone)]
pub struct ServerMetrics {
    /// RPCs finished, by method and status.
    pub rpcs: Family<RpcLabels, Counter>,
    /// RPC duration from request to the end of the response stream, seconds.
    pub rpc_seconds: Family<MethodLabels, Histogram, fn() -> Histogram>,
    /// Calls refused for bad or missing credentials (ended Unauthenticated).
    pub auth_failures: Counter,
}

impl Default for ServerMetrics {
    fn default() -> Self {
        Self {
            rpcs: Family::default(),
            rpc_seconds: Family::new_with_constructor(latency_histogram),
            auth_failures: Counter::default(),
        }
    }
}

/// The Flight methods, as RPC labels (anything else is `other`, so a client
/// cannot make up label values).
pub fn method_label(path: &str) -> &'static str {
    const METHODS: [&str; 10] = [
        "Handshake",
        "ListFlights",
        "GetFlightInfo",
        "PollFlightInfo",
        "GetSchema",
        "DoGet",
        "DoPut",
        "DoExchange",
        "DoAction",
        "ListActions",
    ];
    let method = path.rsplit('/').next().unwrap_or_default();
    METHODS
        .iter()
        .find(|m| **m == method)
        .copied()
        .unwrap_or("other")
}

/// The registry a scrape encodes: the server's counters and a collector over
/// its state. Holds the state weakly, so a stopped server is not kept alive.
pub fn registry(state: &Arc<ServerState>) -> Registry {
    let mut registry = Registry::with_prefix("mallard");
    let metrics = &state.metrics;
    registry.register(
        "rpcs",
        "Flight RPCs finished, by method and gRPC status",
        metrics.rpcs.clone(),
    );
    registry.register(
        "rpc_seconds",
        "Flight RPC duration to the end of the response stream",
        metrics.rpc_seconds.clone(),
    );
    registry.register(
        "auth_failures",
        "Calls refused for bad or missing credentials",
        metrics.auth_failures.clone(),
    );
    registry.register_collector(Box::new(StateCollector(Arc::downgrade(state))));
    registry
}

/// Encodes `state`'s metrics in the OpenMetrics text format.
pub fn encode(state: &Arc<ServerState>) -> String {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry(state))
        .expect("writing to a String cannot fail");
    text
}

#[derive(Debug)]
struct StateCollector(Weak<ServerState>);

fn family<'a, M: EncodeMetric>(
    encoder: &mut DescriptorEncoder<'a>,
    name: &str,
    help: &str,
    metric_type: MetricType,
    series: impl IntoIterator<Item = (Vec<(&'static str, String)>, M)>,
) -> std::fmt::Result {
    let mut metric = encoder.encode_descriptor(name, help, None, metric_type)?;
    for (labels, value) in series {
        value.encode(metric.encode_family(&labels)?)?;
    }
    Ok(())
}

/// A histogram read from an exchanger's bucket counts.
#[derive(Debug)]
struct ConstHistogram {
    sum: f64,
    count: u64,
    buckets: Vec<(f64, u64)>,
}

impl EncodeMetric for ConstHistogram {
    fn encode(&self, mut encoder: prometheus_client::encoding::MetricEncoder) -> std::fmt::Result {
        // `encode_histogram` expects per-bucket counts and accumulates them itself.
        let mut previous = 0;
        let per_bucket: Vec<(f64, u64)> = self
            .buckets
            .iter()
            .map(|&(upper, cumulative)| {
                let n = cumulative - previous;
                previous = cumulative;
                (upper, n)
            })
            .collect();
        encoder.encode_histogram::<prometheus_client::encoding::NoLabelSet>(
            self.sum,
            self.count,
            &per_bucket,
            None,
        )
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

impl Collector for StateCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        let Some(state) = self.0.upgrade() else {
            return Ok(());
        };
        let live = [
            ("queries", state.db.live_queries.get()),
            ("ingests", state.db.live_ingests.get()),
            ("exchanges", state.exchange_slots.total()),
            ("get_streams", state.query_slots.total()),
            ("put_streams", state.put_slots.total()),
            ("sessions", state.auth.live_sessions()),
            (
                "wasm_instances",
                state.catalog.engine().live_instances.get(),
            ),
        ];
        family(
            &mut encoder,
            "live",
            "What the server holds right now",
            MetricType::Gauge,
            live.map(|(what, n)| (vec![("what", what.to_owned())], ConstGauge::new(n as i64))),
        )?;
        family(
            &mut encoder,
            "threads",
            "Threads of the server process",
            MetricType::Gauge,
            [(
                vec![],
                ConstGauge::new(crate::gauges::process_threads().unwrap_or(0) as i64),
            )],
        )?;
        family(
            &mut encoder,
            "guest_memory_bytes",
            "Guest memory held by live exchanger instances, all users",
            MetricType::Gauge,
            [(vec![], ConstGauge::new(state.guest_memory.in_use() as i64))],
        )?;

        let versions: Vec<_> = state
            .catalog
            .versions()
            .into_iter()
            .flat_map(|(_, vs)| vs)
            .collect();
        let labels = |v: &crate::exchange::catalog::Version| {
            vec![
                ("owner", v.owner.label().to_owned()),
                ("exchanger", v.name.clone()),
                ("version", v.report.version.clone()),
                (
                    "sha256",
                    v.report
                        .sha256
                        .as_deref()
                        .map_or("native".to_owned(), |s| s[..12].to_owned()),
                ),
            ]
        };
        let snapshots: Vec<_> = versions.iter().map(|v| (labels(v), v)).collect();
        let counter =
            |name: &str, help: &str, read: &dyn Fn(&crate::exchange::catalog::Version) -> u64| {
                (
                    name.to_owned(),
                    help.to_owned(),
                    snapshots
                        .iter()
                        .map(|(l, v)| (l.clone(), ConstCounter::new(read(v))))
                        .collect::<Vec<_>>(),
                )
            };
        use std::sync::atomic::Ordering::Relaxed;
        for (name, help, series) in [
            counter("exchanger_calls", "Exchanges started", &|v| {
                v.metrics.calls.load(Relaxed)
            }),
            counter("exchanger_rows_in", "Rows received", &|v| {
                v.metrics.rows_in.load(Relaxed)
            }),
            counter("exchanger_rows_out", "Rows sent back", &|v| {
                v.metrics.rows_out.load(Relaxed)
            }),
            counter("exchanger_bytes_in", "IPC bytes received", &|v| {
                v.metrics.bytes_in.load(Relaxed)
            }),
            counter("exchanger_bytes_out", "IPC bytes sent back", &|v| {
                v.metrics.bytes_out.load(Relaxed)
            }),
        ] {
            family(&mut encoder, &name, &help, MetricType::Counter, series)?;
        }
        family(
            &mut encoder,
            "exchanger_cpu_seconds",
            "CPU time of the exchange workers",
            MetricType::Counter,
            snapshots.iter().map(|(l, v)| {
                (
                    l.clone(),
                    ConstCounter::new(v.metrics.cpu_nanos.load(Relaxed) as f64 / 1e9),
                )
            }),
        )?;
        family(
            &mut encoder,
            "exchanger_errors",
            "Exchanges that ended with an error, by gRPC status",
            MetricType::Counter,
            snapshots.iter().flat_map(|(l, v)| {
                v.metrics
                    .errors_by_code()
                    .into_iter()
                    .map(move |(code, n)| {
                        let mut labels = l.clone();
                        labels.push(("code", code_name(code).to_owned()));
                        (labels, ConstCounter::new(n))
                    })
            }),
        )?;
        family(
            &mut encoder,
            "exchanger_batch_seconds",
            "Wall time of one batch through the exchanger",
            MetricType::Histogram,
            snapshots.iter().map(|(l, v)| {
                let h = &v.metrics.batch_wall;
                (
                    l.clone(),
                    ConstHistogram {
                        sum: h.sum_seconds(),
                        count: h.count(),
                        buckets: h.cumulative(),
                    },
                )
            }),
        )?;
        type Read<'r> = &'r dyn Fn(&crate::exchange::catalog::Version) -> usize;
        let gauges: [(&str, &str, Read); 2] = [
            (
                "exchanger_peak_memory_bytes",
                "Largest guest memory one instance reached",
                &|v| v.metrics.peak_memory_bytes.load(Relaxed),
            ),
            ("exchanger_instances", "Exchanges running now", &|v| {
                v.metrics.live.load(Relaxed)
            }),
        ];
        for (name, help, read) in gauges {
            family(
                &mut encoder,
                name,
                help,
                MetricType::Gauge,
                snapshots
                    .iter()
                    .map(|(l, v)| (l.clone(), ConstGauge::new(read(v) as i64))),
            )?;
        }
        Ok(())
    }
}

/// Serves `/metrics` on `addr` until the returned task is aborted.
pub async fn serve(
    addr: SocketAddr,
    state: &Arc<ServerState>,
) -> Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| Error::Unavailable(format!("cannot listen on {addr} for metrics: {e}")))?;
    let bound = listener
        .local_addr()
        .map_err(|e| Error::Internal(e.to_string()))?;
    let weak = Arc::downgrade(state);
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let weak = weak.clone();
            async move {
                let body = weak.upgrade().map(|s| encode(&s)).unwrap_or_default();
                (
                    [(
                        http::header::CONTENT_TYPE,
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )],
                    body,
                )
            }
        }),
    );
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::warn!(error = %e, "metrics listener stopped");
        }
    });
    tracing::info!(addr = %bound, "serving metrics at /metrics");
    Ok((bound, task))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn method_labels_are_the_flight_methods_only() {
        assert_eq!(
            method_label("/arrow.flight.protocol.FlightService/DoGet"),
            "DoGet"
        );
        assert_eq!(method_label("/x.Y/MadeUp"), "other");
        assert_eq!(method_label(""), "other");
    }
}
