//! Parsing the `do_exchange` descriptor: a bare exchanger reference, one stage as
//! JSON `{"exchanger": NAME, "params": {...}, "sandbox": "on"|"off", "instances": N,
//! "order": "input"|"any"}`, or a pipeline: a JSON list of such stages, run one
//! after the other in the server.

use crate::exchanger_ref::ExchangerRef;
use crate::{Result, invalid};
use serde::Deserialize;
use std::collections::BTreeMap;

/// Stages one pipeline may have: each is an instance with its own budget, all
/// charged to the caller's guest memory.
pub const MAX_STAGES: usize = 8;

/// Whether an exchange runs in the wasm sandbox or natively.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Sandbox {
    /// WebAssembly, isolated (the default).
    #[default]
    On,
    /// The native build of a built-in exchanger.
    Off,
}

/// The order a stage's output leaves in, when it runs on several instances.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Order {
    /// The input's order (the default).
    #[default]
    Input,
    /// As each batch is ready.
    Any,
}

/// Most instances a stage may ask for; the server's own cap is usually lower.
pub const MAX_INSTANCES: u32 = 64;

/// One stage of an exchange: which exchanger, with which parameters, where.
#[derive(Debug, Clone, PartialEq)]
pub struct Stage {
    /// Which exchanger (`[OWNER/]NAME[@PIN]`).
    pub exchanger: ExchangerRef,
    /// Parameters, as string pairs.
    pub params: Vec<(String, String)>,
    /// Sandbox on or off.
    pub sandbox: Sandbox,
    /// Most instances a stateless stage may run on (`None`: the server's cap);
    /// a stateful one always runs on one.
    pub instances: Option<u32>,
    /// The order its output may leave in.
    pub order: Order,
}

impl Stage {
    /// A sandboxed stage without parameters.
    pub fn named(exchanger: ExchangerRef) -> Self {
        Self {
            exchanger,
            params: Vec::new(),
            sandbox: Sandbox::On,
            instances: None,
            order: Order::Input,
        }
    }
}

/// A parsed `do_exchange` request: one stage or a pipeline of up to [`MAX_STAGES`].
#[derive(Debug, Clone, PartialEq)]
pub struct ExchangeRequest {
    /// The stages, first to last (never empty).
    pub stages: Vec<Stage>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonStage {
    exchanger: String,
    #[serde(default)]
    params: BTreeMap<String, serde_json::Value>,
    #[serde(default)]
    sandbox: Sandbox,
    #[serde(default)]
    instances: Option<u32>,
    #[serde(default)]
    order: Order,
}

impl JsonStage {
    fn into_stage(self) -> Result<Stage> {
        if let Some(n) = self.instances
            && !(1..=MAX_INSTANCES).contains(&n)
        {
            return Err(invalid(format!(
                "\"instances\" is {n}; give 1 to {MAX_INSTANCES}"
            )));
        }
        Ok(Stage {
            exchanger: ExchangerRef::parse(&self.exchanger)?,
            params: params_to_strings(self.params),
            sandbox: self.sandbox,
            instances: self.instances,
            order: self.order,
        })
    }
}

impl ExchangeRequest {
    /// Parses the descriptor command.
    pub fn parse(command: &[u8]) -> Result<Self> {
        let text = std::str::from_utf8(command)
            .map_err(|_| invalid("exchange descriptor is not valid UTF-8"))?
            .trim();
        if text.is_empty() {
            return Err(invalid(
                "exchange descriptor is empty; give an exchanger name, JSON {\"exchanger\": ...} \
                 or a pipeline [{\"exchanger\": ...}, ...]",
            ));
        }
        let stages = if text.starts_with('[') {
            let list: Vec<JsonStage> = serde_json::from_str(text)
                .map_err(|e| invalid(format!("exchange pipeline JSON: {e}")))?;
            list.into_iter()
                .map(JsonStage::into_stage)
                .collect::<Result<Vec<_>>>()?
        } else if text.starts_with('{') {
            let json: JsonStage = serde_json::from_str(text)
                .map_err(|e| invalid(format!("exchange descriptor JSON: {e}")))?;
            vec![json.into_stage()?]
        } else {
            vec![Stage::named(ExchangerRef::parse(text)?)]
        };
        Self::new(stages)
    }

    /// A request of `stages`, checked: at least one, at most [`MAX_STAGES`].
    pub fn new(stages: Vec<Stage>) -> Result<Self> {
        if stages.is_empty() {
            return Err(invalid("an exchange pipeline needs at least one stage"));
        }
        if stages.len() > MAX_STAGES {
            return Err(invalid(format!(
                "an exchange pipeline has at most {MAX_STAGES} stages, not {}",
                stages.len()
            )));
        }
        Ok(Self { stages })
    }
}

/// JSON parameters as the string pairs exchangers receive: strings as they are,
/// anything else as its JSON text.
pub fn params_to_strings(params: BTreeMap<String, serde_json::Value>) -> Vec<(String, String)> {
    params
        .into_iter()
        .map(|(k, v)| {
            let v = match v {
                serde_json::Value::String(s) => s,
                other => other.to_string(),
            };
            (k, v)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instances_and_order_are_read_and_bounded() {
        let one = ExchangeRequest::parse(br#"{"exchanger": "a", "instances": 2, "order": "any"}"#)
            .unwrap();
        assert_eq!(one.stages[0].instances, Some(2));
        assert_eq!(one.stages[0].order, Order::Any);
        let plain = ExchangeRequest::parse(b"a").unwrap();
        assert_eq!(
            (plain.stages[0].instances, plain.stages[0].order),
            (None, Order::Input)
        );
        let top = format!(r#"{{"exchanger": "a", "instances": {MAX_INSTANCES}}}"#);
        assert!(ExchangeRequest::parse(top.as_bytes()).is_ok());
        for bad in [
            r#"{"exchanger": "a", "instances": 0}"#,
            r#"{"exchanger": "a", "instances": 65}"#,
            r#"{"exchanger": "a", "instances": -1}"#,
            r#"{"exchanger": "a", "order": "random"}"#,
        ] {
            let err = ExchangeRequest::parse(bad.as_bytes()).unwrap_err();
            assert!(!err.to_string().is_empty(), "{bad}");
        }
    }
}
