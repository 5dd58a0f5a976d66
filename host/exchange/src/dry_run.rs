//! The dry run of an upload: open the new version against a sample schema (the
//! client's, or the flights schema) with the uploader's parameters, and report
//! the output schema it declares or its refusal. Runs under the same limits and
//! memory pool as a real exchange; nothing is streamed.

use crate::catalog::{Code, Version};
use crate::metrics::code_name;
use crate::validated_schema_message;
use crate::wasm::WasmSession;
use bytes::Bytes;
use mallard_core::{Error, Result};
use mallard_exchanger::ipc::MessageEncoder;
use mallard_sandbox::engine::SandboxEngine;
use mallard_sandbox::store::MemoryPool;
use serde::Serialize;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

/// What the dry run found.
#[derive(Debug, Clone, Serialize)]
pub struct DryRun {
    /// `flights` or `client` (the schema the upload carried).
    pub input: &'static str,
    /// The declared output schema, when `open` accepted the input.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output_schema: Option<Vec<FieldReport>>,
    /// The exchanger's refusal, when it refused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refused: Option<Refusal>,
    /// Whether a stream like this one may run on several instances: the session
    /// said it is stateless and its output has no dictionary-encoded field.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parallel: Option<bool>,
}

/// One column of a schema.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct FieldReport {
    /// Column name.
    pub name: String,
    /// Arrow type, as Arrow prints it.
    #[serde(rename = "type")]
    pub data_type: String,
    /// Whether it may hold nulls.
    pub nullable: bool,
}

/// Why `open` refused.
#[derive(Debug, Clone, Serialize)]
pub struct Refusal {
    /// The gRPC code an exchange would have ended with.
    pub code: &'static str,
    /// The message.
    pub message: String,
}

/// The Flight `data_header` of a client's sample schema: a flatbuffer `Message`,
/// with or without the IPC stream's continuation marker and length (pyarrow's
/// `Schema.serialize()`).
fn schema_header(bytes: &Bytes) -> Bytes {
    if bytes.len() >= 8 && bytes[..4] == [0xff; 4] {
        let len = i32::from_le_bytes(bytes[4..8].try_into().expect("4 bytes")).max(0) as usize;
        bytes.slice(8..(8 + len).min(bytes.len()))
    } else {
        bytes.clone()
    }
}

/// Opens `version` against `sample` (or the flights schema) with `params`.
/// A malformed sample schema is the client's error; the exchanger's own
/// refusal is part of the report.
pub fn dry_run(
    engine: &SandboxEngine,
    version: &Version,
    sample: Option<&Bytes>,
    params: &[(String, String)],
    pool: Arc<MemoryPool>,
) -> Result<DryRun> {
    let (input, header) = match sample {
        Some(bytes) => ("client", schema_header(bytes)),
        None => (
            "flights",
            Bytes::from(MessageEncoder::new(mallard_flights::schema()).schema_header()),
        ),
    };
    let (schema, _) = validated_schema_message(header.clone())
        .map_err(|e| e.context("the dry run's sample schema"))?;
    let Code::Wasm(pre) = &version.code else {
        return Err(Error::invalid_argument("built-ins have no dry run"));
    };
    let opened = WasmSession::open(
        engine,
        (&version.name, pre),
        (&header, schema),
        params,
        Arc::new(AtomicBool::new(false)),
        Some(pool),
    )
    .and_then(|session| {
        let schema = session.output_schema()?;
        let parallel = crate::lanes::may_run_on_lanes(&session, &schema);
        Ok((schema, parallel))
    });
    Ok(match opened {
        Ok((schema, parallel)) => DryRun {
            input,
            output_schema: Some(
                schema
                    .fields()
                    .iter()
                    .map(|f| FieldReport {
                        name: f.name().clone(),
                        data_type: f.data_type().to_string(),
                        nullable: f.is_nullable(),
                    })
                    .collect(),
            ),
            refused: None,
            parallel: Some(parallel),
        },
        Err(e) => DryRun {
            input,
            output_schema: None,
            refused: Some(Refusal {
                code: code_name(e.code()),
                message: e.to_string(),
            }),
            parallel: None,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stream_prefix_of_a_serialised_schema_is_stripped() {
        let header = MessageEncoder::new(mallard_flights::schema()).schema_header();
        let mut prefixed = vec![0xff; 4];
        prefixed.extend((header.len() as i32).to_le_bytes());
        prefixed.extend(&header);
        prefixed.extend([0; 8]); // padding after the message
        assert_eq!(
            schema_header(&Bytes::from(prefixed)),
            Bytes::from(header.clone())
        );
        assert_eq!(
            schema_header(&Bytes::from(header.clone())),
            Bytes::from(header)
        );
    }
}
