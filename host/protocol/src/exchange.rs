//! Parsing the `do_exchange` descriptor: a bare exchanger reference, or JSON
//! `{"exchanger": NAME, "params": {...}, "sandbox": "on"|"off"}`.

use crate::exchanger_ref::ExchangerRef;
use crate::{Result, invalid};
use serde::Deserialize;
use std::collections::BTreeMap;

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

/// A parsed `do_exchange` request.
#[derive(Debug, Clone, PartialEq)]
pub struct ExchangeRequest {
    /// Which exchanger (`[OWNER/]NAME[@PIN]`).
    pub exchanger: ExchangerRef,
    /// Parameters, as string pairs.
    pub params: Vec<(String, String)>,
    /// Sandbox on or off.
    pub sandbox: Sandbox,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonRequest {
    exchanger: String,
    #[serde(default)]
    params: BTreeMap<String, serde_json::Value>,
    #[serde(default)]
    sandbox: Sandbox,
}

impl ExchangeRequest {
    /// Parses the descriptor command.
    pub fn parse(command: &[u8]) -> Result<Self> {
        let text = std::str::from_utf8(command)
            .map_err(|_| invalid("exchange descriptor is not valid UTF-8"))?
            .trim();
        if text.is_empty() {
            return Err(invalid(
                "exchange descriptor is empty; give an exchanger name or JSON {\"exchanger\": ...}",
            ));
        }
        if !text.starts_with('{') {
            return Ok(Self {
                exchanger: ExchangerRef::parse(text)?,
                params: Vec::new(),
                sandbox: Sandbox::On,
            });
        }
        let json: JsonRequest = serde_json::from_str(text)
            .map_err(|e| invalid(format!("exchange descriptor JSON: {e}")))?;
        let params = params_to_strings(json.params);
        Ok(Self {
            exchanger: ExchangerRef::parse(&json.exchanger)?,
            params,
            sandbox: json.sandbox,
        })
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
