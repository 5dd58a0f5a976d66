//! Metrics in the Prometheus (OpenMetrics) text format, served over HTTP at
//! `/metrics` when the operator passes `--metrics-listen`.
//!
//! Counted as things happen: RPCs by method and status and their latency
//! ([`crate::flight::rpc_metrics`]), authentication failures. Read at scrape
//! time, so they cannot drift from what `list_exchangers` and the healthcheck
//! show: every exchanger version's counters ([`mallard_exchange::metrics`]) and
//! the live gauges (queries, ingests, exchanges, instances, threads, …).

use crate::state::ServerState;
use mallard_core::{Error, Result};
use mallard_exchange::metrics::code_name;
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
    /// Queries answered straight from their exchange (a bare
    /// `SELECT * FROM exchange(…)`, see `mallard_exchange::bare_select`).
    pub bare_selects: Counter,
}

impl Default for ServerMetrics {
    fn default() -> Self {
        Self {
            rpcs: Family::default(),
            rpc_seconds: Family::new_with_constructor(latency_histogram),
            auth_failures: Counter::default(),
            bare_selects: Counter::default(),
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
    registry.register(
        "bare_selects",
        "Queries answered straight from their exchange, without DuckDB re-reading its output",
        metrics.bare_selects.clone(),
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
            ("exchanges", state.exchanges.slots.total()),
            ("get_streams", state.query_slots.total()),
            ("put_streams", state.put_slots.total()),
            ("sessions", state.auth.live_sessions()),
            (
                "wasm_instances",
                state.exchanges.catalog.engine().live_instances.get(),
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
                ConstGauge::new(mallard_core::gauges::process_threads().unwrap_or(0) as i64),
            )],
        )?;
        family(
            &mut encoder,
            "guest_memory_bytes",
            "Guest memory held by live exchanger instances, all users",
            MetricType::Gauge,
            [(
                vec![],
                ConstGauge::new(state.exchanges.guest_memory.in_use() as i64),
            )],
        )?;

        let versions: Vec<_> = state
            .exchanges
            .catalog
            .versions()
            .into_iter()
            .flat_map(|(_, vs)| vs)
            .collect();
        let groups = exchanger_series(&versions, state.config.metrics_private_labels);
        type Version = mallard_exchange::catalog::Version;
        let sum = |group: &[&Version], read: &dyn Fn(&Version) -> u64| -> u64 {
            group.iter().map(|v| read(v)).sum()
        };
        let counter = |name: &str, help: &str, read: &dyn Fn(&Version) -> u64| {
            (
                name.to_owned(),
                help.to_owned(),
                groups
                    .iter()
                    .map(|(l, g)| (l.clone(), ConstCounter::new(sum(g, read))))
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
            groups.iter().map(|(l, g)| {
                let nanos = sum(g, &|v| v.metrics.cpu_nanos.load(Relaxed));
                (l.clone(), ConstCounter::new(nanos as f64 / 1e9))
            }),
        )?;
        family(
            &mut encoder,
            "exchanger_errors",
            "Exchanges that ended with an error, by gRPC status",
            MetricType::Counter,
            groups.iter().flat_map(|(l, g)| {
                let mut by_code: std::collections::BTreeMap<&'static str, u64> =
                    std::collections::BTreeMap::new();
                for v in g {
                    for (code, n) in v.metrics.errors_by_code() {
                        *by_code.entry(code_name(code)).or_default() += n;
                    }
                }
                by_code.into_iter().map(move |(code, n)| {
                    let mut labels = l.clone();
                    labels.push(("code", code.to_owned()));
                    (labels, ConstCounter::new(n))
                })
            }),
        )?;
        family(
            &mut encoder,
            "exchanger_batch_seconds",
            "Wall time of one batch through the exchanger",
            MetricType::Histogram,
            groups.iter().map(|(l, g)| {
                let mut merged = ConstHistogram {
                    sum: 0.0,
                    count: 0,
                    buckets: Vec::new(),
                };
                for v in g {
                    let h = &v.metrics.batch_wall;
                    merged.sum += h.sum_seconds();
                    merged.count += h.count();
                    let buckets = h.cumulative();
                    if merged.buckets.is_empty() {
                        merged.buckets = buckets;
                    } else {
                        for (into, (_, n)) in merged.buckets.iter_mut().zip(buckets) {
                            into.1 += n;
                        }
                    }
                }
                (l.clone(), merged)
            }),
        )?;
        type Read<'r> = &'r dyn Fn(&Version) -> usize;
        let peak: Read = &|v| v.metrics.peak_memory_bytes.load(Relaxed);
        let live: Read = &|v| v.metrics.live.load(Relaxed);
        family(
            &mut encoder,
            "exchanger_peak_memory_bytes",
            "Largest guest memory one instance reached",
            MetricType::Gauge,
            groups.iter().map(|(l, g)| {
                let most = g.iter().map(|v| peak(v)).max().unwrap_or(0);
                (l.clone(), ConstGauge::new(most as i64))
            }),
        )?;
        family(
            &mut encoder,
            "exchanger_instances",
            "Exchanges running now",
            MetricType::Gauge,
            groups.iter().map(|(l, g)| {
                let running: usize = g.iter().map(|v| live(v)).sum();
                (l.clone(), ConstGauge::new(running as i64))
            }),
        )?;
        Ok(())
    }
}

/// Labels of one exchanger series.
type Labels = Vec<(&'static str, String)>;

/// The series exchanger metrics are reported under, each with the versions it
/// adds up. Shared exchangers (built-ins, admins' uploads) are named; a user's
/// private ones are named only when the operator asked (`--metrics-private-labels`),
/// else they are added up under `owner="private"`, so a scrape does not tell which
/// user keeps which exchanger.
fn exchanger_series(
    versions: &[Arc<mallard_exchange::catalog::Version>],
    private_labels: bool,
) -> Vec<(Labels, Vec<&mallard_exchange::catalog::Version>)> {
    let mut groups: Vec<(Labels, Vec<&mallard_exchange::catalog::Version>)> = Vec::new();
    for v in versions {
        let named = private_labels || v.owner == mallard_exchange::catalog::Owner::Shared;
        let labels: Labels = if named {
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
        } else {
            vec![
                ("owner", PRIVATE_OWNER.to_owned()),
                ("exchanger", PRIVATE_OWNER.to_owned()),
                ("version", String::new()),
                ("sha256", String::new()),
            ]
        };
        match groups.iter_mut().find(|(l, _)| *l == labels) {
            Some((_, group)) => group.push(v),
            None => groups.push((labels, vec![v])),
        }
    }
    groups
}

/// The owner (and exchanger) label that users' private exchangers are added up under.
pub const PRIVATE_OWNER: &str = "private";

/// Whether a `/metrics` request may read: the operator's metrics token as a
/// bearer token, or an admin's credentials (Basic, or a Flight bearer token),
/// checked by the same parser and password checks as Flight calls.
async fn scrape_allowed(
    state: &ServerState,
    headers: &http::HeaderMap,
    peer: std::net::IpAddr,
) -> std::result::Result<(), &'static str> {
    use mallard_protocol::credentials::{Credentials, parse_authorization};
    let Some(header) = headers.get(http::header::AUTHORIZATION) else {
        return Err("no authorization header; use the metrics token or an admin's credentials");
    };
    let header = header
        .to_str()
        .map_err(|_| "authorization header is not ASCII")?;
    let principal = match parse_authorization(header).map_err(|_| "malformed authorization")? {
        Credentials::Bearer(token) => {
            if let Some(expected) = &state.config.metrics_token
                && same_secret(token, expected)
            {
                return Ok(());
            }
            state.auth.check_token(token).map_err(|_| "invalid token")?
        }
        Credentials::Basic { user, password } => state
            .auth
            .check_password(&user, &password, Some(peer))
            .await
            .map_err(|_| "invalid credentials")?,
    };
    if principal.role == crate::auth::Role::Admin {
        Ok(())
    } else {
        Err("metrics are for admins and the metrics token only")
    }
}

/// Compares two secrets in time independent of where they differ.
fn same_secret(given: &str, expected: &str) -> bool {
    use sha2::{Digest, Sha256};
    let (a, b) = (Sha256::digest(given), Sha256::digest(expected));
    a.iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

/// Serves `/metrics` on `addr` until the returned task is aborted.
pub async fn serve(
    addr: SocketAddr,
    state: &Arc<ServerState>,
) -> Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| Error::unavailable(format!("cannot listen on {addr} for metrics: {e}")))?;
    let bound = listener
        .local_addr()
        .map_err(|e| Error::internal(e.to_string()))?;
    let weak = Arc::downgrade(state);
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(
            move |axum::extract::ConnectInfo(peer): axum::extract::ConnectInfo<SocketAddr>,
                  headers: http::HeaderMap| {
                let weak = weak.clone();
                async move {
                    use axum::response::IntoResponse;
                    let Some(state) = weak.upgrade() else {
                        return http::StatusCode::SERVICE_UNAVAILABLE.into_response();
                    };
                    if let Err(why) = scrape_allowed(&state, &headers, peer.ip()).await {
                        state.metrics.auth_failures.inc();
                        return (
                            http::StatusCode::UNAUTHORIZED,
                            [(
                                http::header::WWW_AUTHENTICATE,
                                "Bearer, Basic realm=\"mallard\"",
                            )],
                            why,
                        )
                            .into_response();
                    }
                    (
                        [(
                            http::header::CONTENT_TYPE,
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        )],
                        encode(&state),
                    )
                        .into_response()
                }
            },
        ),
    );
    let app = app.into_make_service_with_connect_info::<SocketAddr>();
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
