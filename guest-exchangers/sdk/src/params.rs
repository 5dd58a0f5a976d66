//! String parameters a client passes to an exchanger in `do_exchange`.

use crate::ExchangeError;
use std::str::FromStr;

/// The client's `params` object, flattened to string pairs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Params(Vec<(String, String)>);

impl Params {
    /// Wraps the pairs as received.
    pub fn new(pairs: Vec<(String, String)>) -> Self {
        Self(pairs)
    }

    /// The raw value of `key`, if given.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// `key` parsed as `T`, or `default` when absent; a value that does not parse is
    /// an [`ExchangeError::InvalidParams`].
    pub fn parse_or<T: FromStr>(&self, key: &str, default: T) -> Result<T, ExchangeError> {
        match self.get(key) {
            None => Ok(default),
            Some(raw) => raw.parse().map_err(|_| {
                ExchangeError::InvalidParams(format!("parameter `{key}`: cannot parse {raw:?}"))
            }),
        }
    }

    /// All pairs, in the order given.
    pub fn pairs(&self) -> &[(String, String)] {
        &self.0
    }
}
