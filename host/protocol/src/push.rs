//! The body of the `push_table` action: what to send (a table, or the result of
//! a query), optionally through an exchange, and where: one target, or several
//! with a partition rule saying which rows go to which.

use crate::exchange::ExchangeRequest;
use crate::table_name::TableName;
use crate::{Result, invalid};
use serde::Deserialize;

/// What a push reads on this server.
#[derive(Debug, Clone, PartialEq)]
pub enum PushSource {
    /// A whole table.
    Table(TableName),
    /// The result of one query, run with the caller's rights.
    Query(String),
}

/// A validated `push_table` request.
#[derive(Debug, Clone, PartialEq)]
pub struct PushRequest {
    /// What is sent.
    pub source: PushSource,
    /// The exchange the rows pass through on this server first, if any.
    pub exchange: Option<ExchangeRequest>,
    /// Target servers (one, or several with a `partition`), each parsed once:
    /// the allow list and the connection both read this value, so they cannot
    /// disagree on its scheme, host or port.
    pub to: Vec<PushTarget>,
    /// How rows are split among several targets; `None` for one target.
    pub partition: Option<Partition>,
    /// Table on the target (defaults to the source table).
    pub target_table: TableName,
    /// User and password on the target; `None` uses the server's push credentials.
    pub credentials: Option<(String, String)>,
}

/// Most targets one push may split its rows among.
pub const MAX_PUSH_TARGETS: usize = 64;

/// Which target each row of a push to several targets goes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Partition {
    /// By a hash of this column's value (xxHash64 of its row encoding): equal
    /// keys land on the same target, push after push.
    Hash(String),
    /// Whole batches to each target in turn.
    RoundRobin,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum JsonTargets {
    One(String),
    Several(Vec<String>),
}

#[derive(Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
enum JsonPartition {
    Hash(String),
    RoundRobin,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonPush {
    table: Option<String>,
    query: Option<String>,
    exchangers: Option<serde_json::Value>,
    to: JsonTargets,
    partition: Option<JsonPartition>,
    target_table: Option<String>,
    user: Option<String>,
    password: Option<String>,
}

impl PushRequest {
    /// Parses the JSON body `{"table" | "query", "exchangers"?, "to",
    /// "partition"?, "target_table"?, "user"?, "password"?}`: `exchangers` is
    /// what a `do_exchange` descriptor holds (a name, or a list of stages); a
    /// query needs a `target_table`; `to` is one URL, or a list of up to
    /// [`MAX_PUSH_TARGETS`] distinct ones with `"partition": {"hash": "column"}`
    /// or `"round_robin"`.
    pub fn parse(body: &[u8]) -> Result<Self> {
        let json: JsonPush = serde_json::from_slice(body)
            .map_err(|e| invalid(format!("push_table body must be JSON: {e}")))?;
        let (source, default_target) = match (&json.table, json.query) {
            (Some(table), None) => {
                let table = TableName::parse(table)?;
                (PushSource::Table(table.clone()), Some(table))
            }
            (None, Some(query)) if !query.trim().is_empty() => (PushSource::Query(query), None),
            (None, Some(_)) => return Err(invalid("the push's query is empty")),
            _ => return Err(invalid("give either `table` or `query` to push")),
        };
        let target_table = match (&json.target_table, default_target) {
            (Some(t), _) => TableName::parse(t)?,
            (None, Some(table)) => table,
            (None, None) => return Err(invalid("a pushed query needs a `target_table`")),
        };
        let exchange = match json.exchangers {
            None => None,
            Some(serde_json::Value::String(text)) => Some(ExchangeRequest::parse(text.as_bytes())?),
            Some(stages) => Some(ExchangeRequest::parse(stages.to_string().as_bytes())?),
        };
        let to = match json.to {
            JsonTargets::One(url) => vec![PushTarget::parse(&url)?],
            JsonTargets::Several(urls) => urls
                .iter()
                .map(|url| PushTarget::parse(url))
                .collect::<Result<Vec<_>>>()?,
        };
        if to.is_empty() || to.len() > MAX_PUSH_TARGETS {
            return Err(invalid(format!(
                "a push goes to 1 to {MAX_PUSH_TARGETS} targets, not {}",
                to.len()
            )));
        }
        if let Some(twice) = to.iter().enumerate().find(|(i, t)| to[..*i].contains(t)) {
            return Err(invalid(format!("push target {} is listed twice", twice.1)));
        }
        let partition = match (json.partition, to.len()) {
            (None, 1) => None,
            (None, _) => {
                return Err(invalid(
                    "a push to several targets needs a `partition`: \
                     {\"hash\": \"column\"} or \"round_robin\"",
                ));
            }
            (Some(_), 1) => return Err(invalid("a `partition` needs several targets")),
            (Some(JsonPartition::Hash(column)), _) if column.is_empty() => {
                return Err(invalid("the partition's hash column is empty"));
            }
            (Some(JsonPartition::Hash(column)), _) => Some(Partition::Hash(column)),
            (Some(JsonPartition::RoundRobin), _) => Some(Partition::RoundRobin),
        };
        let credentials = match (json.user, json.password) {
            (Some(u), Some(p)) => Some((u, p)),
            (None, None) => None,
            _ => return Err(invalid("give both `user` and `password`, or neither")),
        };
        Ok(Self {
            source,
            exchange,
            to,
            partition,
            target_table,
            credentials,
        })
    }
}

/// Where a push goes: transport, host and port, as the allow list compares them.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PushTarget {
    /// Whether the connection uses TLS (`grpc+tls://`, `https://`).
    pub tls: bool,
    /// Host name or address, lower-case, without brackets; `localhost` reads as `127.0.0.1`.
    pub host: String,
    /// Port.
    pub port: u16,
}

impl PushTarget {
    /// Parses `grpc[+tls]://host:port` (also `grpc+tcp://`, `http://`, `https://`);
    /// no path, no user info, an explicit port.
    pub fn parse(url: &str) -> Result<Self> {
        let bad = |why: &str| invalid(format!("push target {url:?}: {why}"));
        let (scheme, rest) = url.split_once("://").ok_or_else(|| bad("no scheme"))?;
        let tls = match scheme.to_ascii_lowercase().as_str() {
            "grpc" | "grpc+tcp" | "http" => false,
            "grpc+tls" | "https" => true,
            _ => return Err(bad("the scheme must be grpc:// or grpc+tls://")),
        };
        let authority = rest.strip_suffix('/').unwrap_or(rest);
        if authority.contains(['/', '@', '?', '#']) {
            return Err(bad("give only host:port"));
        }
        let (host, port) = authority
            .rsplit_once(':')
            .ok_or_else(|| bad("the port is missing"))?;
        let port: u16 = port.parse().map_err(|_| bad("the port is not a number"))?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err(bad("the host is missing"));
        }
        let host = match host.to_ascii_lowercase() {
            h if h == "localhost" => "127.0.0.1".to_owned(),
            h => h,
        };
        Ok(Self { tls, host, port })
    }
}

impl PushTarget {
    /// The URI a connection to this target dials (`https://` exactly when `tls`).
    pub fn endpoint_uri(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        if self.host.contains(':') {
            format!("{scheme}://[{}]:{}", self.host, self.port)
        } else {
            format!("{scheme}://{}:{}", self.host, self.port)
        }
    }

    /// Whether the target is this machine's loopback (credentials sent to it in
    /// plaintext never leave the machine).
    pub fn is_loopback(&self) -> bool {
        self.host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
    }
}

impl std::fmt::Display for PushTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scheme = if self.tls { "grpc+tls" } else { "grpc" };
        if self.host.contains(':') {
            write!(f, "{scheme}://[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{scheme}://{}:{}", self.host, self.port)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_normalise_scheme_and_host() {
        let a = PushTarget::parse("grpc://LOCALHOST:8816").unwrap();
        let b = PushTarget::parse("grpc+tcp://127.0.0.1:8816/").unwrap();
        assert_eq!(a, b);
        assert_eq!(a.to_string(), "grpc://127.0.0.1:8816");
        let tls = PushTarget::parse("grpc+tls://[::1]:443").unwrap();
        assert!(tls.tls);
        assert_eq!(tls.host, "::1");
        assert_ne!(PushTarget::parse("grpc+tls://127.0.0.1:8816").unwrap(), a);
    }

    #[test]
    fn the_connection_dials_what_the_check_compared() {
        for url in [
            "GRPC+TLS://Example.COM:8815",
            "HTTPS://example.com:8815",
            "grpc+tls://example.com:8815/",
        ] {
            let target = PushTarget::parse(url).unwrap();
            assert!(target.tls, "{url}");
            assert_eq!(target.endpoint_uri(), "https://example.com:8815", "{url}");
        }
        let plain = PushTarget::parse("Grpc://LocalHost:1").unwrap();
        assert_eq!(plain.endpoint_uri(), "http://127.0.0.1:1");
        assert!(plain.is_loopback());
        assert_eq!(
            PushTarget::parse("grpc://[::1]:2").unwrap().endpoint_uri(),
            "http://[::1]:2"
        );
        assert!(
            !PushTarget::parse("grpc://10.0.0.1:2")
                .unwrap()
                .is_loopback()
        );
    }

    fn parse(json: serde_json::Value) -> Result<PushRequest> {
        PushRequest::parse(json.to_string().as_bytes())
    }

    #[test]
    fn several_targets_need_a_partition_and_distinct_urls() {
        let one = parse(serde_json::json!({"table": "t", "to": "grpc://a:1"})).unwrap();
        assert_eq!((one.to.len(), one.partition), (1, None));
        let hashed = parse(serde_json::json!({
            "table": "t", "to": ["grpc://a:1", "grpc://b:2"], "partition": {"hash": "k"}
        }))
        .unwrap();
        assert_eq!(hashed.partition, Some(Partition::Hash("k".into())));
        let turns = parse(serde_json::json!({
            "table": "t", "to": ["grpc://a:1", "grpc://b:2"], "partition": "round_robin"
        }))
        .unwrap();
        assert_eq!(turns.partition, Some(Partition::RoundRobin));
        let most: Vec<String> = (0..MAX_PUSH_TARGETS)
            .map(|i| format!("grpc://h:{}", i + 1))
            .collect();
        let at_limit = serde_json::json!({"table": "t", "to": most, "partition": "round_robin"});
        assert_eq!(parse(at_limit).unwrap().to.len(), MAX_PUSH_TARGETS);
        let too_many: Vec<String> = (0..=MAX_PUSH_TARGETS)
            .map(|i| format!("grpc://h:{}", i + 1))
            .collect();
        for bad in [
            serde_json::json!({"table": "t", "to": ["grpc://a:1", "grpc://b:2"]}),
            serde_json::json!({"table": "t", "to": "grpc://a:1", "partition": "round_robin"}),
            serde_json::json!({"table": "t", "to": [], "partition": "round_robin"}),
            serde_json::json!({"table": "t", "to": too_many, "partition": "round_robin"}),
            serde_json::json!({"table": "t", "to": ["grpc://a:1", "grpc://LOCALHOST:1", "grpc://127.0.0.1:1"], "partition": "round_robin"}),
            serde_json::json!({"table": "t", "to": ["grpc://a:1", "grpc://b:2"], "partition": {"hash": ""}}),
            serde_json::json!({"table": "t", "to": ["grpc://a:1", "grpc://b:2"], "partition": "random"}),
            serde_json::json!({"table": "t", "to": ["grpc://a:1", "grpc://b:2"], "partition": {"range": "k"}}),
        ] {
            assert!(parse(bad.clone()).is_err(), "{bad}");
        }
    }

    #[test]
    fn targets_with_more_than_host_and_port_are_refused() {
        for url in [
            "grpc://127.0.0.1",
            "grpc://user@127.0.0.1:1",
            "grpc://127.0.0.1:1/path",
            "ftp://127.0.0.1:1",
            "grpc://:1",
            "grpc://127.0.0.1:99999",
        ] {
            assert!(PushTarget::parse(url).is_err(), "{url}");
        }
    }
}
