//! The `upload_exchanger` body: the component's bytes, optionally preceded by one
//! line of JSON options.
//!
//! ```text
//! {"shared": true, "to_peers": true, "dry_run_schema": "<base64 Arrow IPC schema message>", "params": {"k": "v"}}\n
//! <component bytes, starting with \0asm>
//! ```
//!
//! A body that starts with `\0asm` is the component alone, with default options.

use crate::{Result, invalid};
use base64::Engine as _;
use bytes::Bytes;
use serde::Deserialize;
use std::collections::BTreeMap;

/// Longest options line accepted, in bytes (a wide schema in base64 fits easily).
pub const MAX_OPTIONS_BYTES: usize = 1 << 20;

/// A parsed upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadRequest {
    /// The component.
    pub component: Bytes,
    /// What the uploader asked for.
    pub options: UploadOptions,
}

/// Options of an upload.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UploadOptions {
    /// Upload into the shared namespace (admin only).
    pub shared: bool,
    /// Upload the same bytes to every peer of the cluster too, as the uploader,
    /// so the same `name@sha256:…` runs next to each partition.
    pub to_peers: bool,
    /// The schema the dry run opens the exchanger with, as an Arrow IPC schema
    /// message; `None` means the flights schema.
    pub dry_run_schema: Option<Bytes>,
    /// Parameters for the dry run's `open`.
    pub params: Vec<(String, String)>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonOptions {
    #[serde(default)]
    shared: bool,
    #[serde(default)]
    to_peers: bool,
    #[serde(default)]
    dry_run_schema: Option<String>,
    #[serde(default)]
    params: BTreeMap<String, serde_json::Value>,
}

impl UploadRequest {
    /// Parses an `upload_exchanger` body.
    pub fn parse(body: Bytes) -> Result<Self> {
        if body.starts_with(b"\0asm") || !body.starts_with(b"{") {
            // The component alone (format errors are reported by the compiler's checks).
            return Ok(Self {
                component: body,
                options: UploadOptions::default(),
            });
        }
        let newline = body
            .iter()
            .take(MAX_OPTIONS_BYTES + 1)
            .position(|b| *b == b'\n')
            .ok_or_else(|| {
                invalid(format!(
                    "upload options: a JSON line of at most {MAX_OPTIONS_BYTES} bytes ending in \
                     a newline must precede the component"
                ))
            })?;
        let json: JsonOptions = serde_json::from_slice(&body[..newline])
            .map_err(|e| invalid(format!("upload options JSON: {e}")))?;
        let dry_run_schema = json
            .dry_run_schema
            .map(|b64| {
                base64::engine::general_purpose::STANDARD
                    .decode(b64.trim())
                    .map(Bytes::from)
                    .map_err(|e| {
                        invalid(format!("upload options: dry_run_schema is not base64: {e}"))
                    })
            })
            .transpose()?;
        Ok(Self {
            component: body.slice(newline + 1..),
            options: UploadOptions {
                shared: json.shared,
                to_peers: json.to_peers,
                dry_run_schema,
                params: crate::exchange::params_to_strings(json.params),
            },
        })
    }

    /// The body [`UploadRequest::parse`] reads back (for clients).
    pub fn encode(component: &[u8], options: &UploadOptions) -> Vec<u8> {
        let mut json = serde_json::Map::new();
        if options.shared {
            json.insert("shared".into(), true.into());
        }
        if options.to_peers {
            json.insert("to_peers".into(), true.into());
        }
        if let Some(schema) = &options.dry_run_schema {
            json.insert(
                "dry_run_schema".into(),
                base64::engine::general_purpose::STANDARD
                    .encode(schema)
                    .into(),
            );
        }
        if !options.params.is_empty() {
            let params: serde_json::Map<_, _> = options
                .params
                .iter()
                .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
                .collect();
            json.insert("params".into(), params.into());
        }
        let mut body = serde_json::Value::Object(json).to_string().into_bytes();
        body.push(b'\n');
        body.extend_from_slice(component);
        body
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bare_component_has_default_options() {
        let r = UploadRequest::parse(Bytes::from_static(b"\0asm\x0d\0\x01\0rest")).unwrap();
        assert_eq!(r.options, UploadOptions::default());
        assert_eq!(&r.component[..4], b"\0asm");
    }

    #[test]
    fn options_round_trip() {
        let options = UploadOptions {
            shared: true,
            to_peers: true,
            dry_run_schema: Some(Bytes::from_static(b"\xff\xff\xff\xffschema\n{")),
            params: vec![("mode".into(), "route".into())],
        };
        let body = UploadRequest::encode(b"\0asm\x0d\0\x01\0", &options);
        let parsed = UploadRequest::parse(Bytes::from(body)).unwrap();
        assert_eq!(parsed.options, options);
        assert_eq!(&parsed.component[..], b"\0asm\x0d\0\x01\0");
    }

    #[test]
    fn bad_options_are_refused() {
        for bad in [
            &b"{\"shared\": true}"[..],
            b"{\"unknown\": 1}\n\0asm",
            b"{\"dry_run_schema\": \"***\"}\n\0asm",
            b"{not json}\n\0asm",
        ] {
            assert!(UploadRequest::parse(Bytes::copy_from_slice(bad)).is_err());
        }
        let mut long = vec![b'{'];
        long.extend(std::iter::repeat_n(b' ', MAX_OPTIONS_BYTES + 1));
        long.extend(b"}\n\0asm");
        assert!(UploadRequest::parse(Bytes::from(long)).is_err());
    }
}
