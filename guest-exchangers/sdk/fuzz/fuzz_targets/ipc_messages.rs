//! Fuzzes the IPC path every untrusted message takes: schema headers
//! (`schema_from_header`) and record-batch/dictionary messages (`MessageDecoder`,
//! which the host uses to validate guest output and to decode native-exchange input).
//! Any input must give a value or an error, never a panic.
#![no_main]

use arrow_buffer::Buffer;
use arrow_schema::{DataType, Field, Schema};
use libfuzzer_sys::fuzz_target;
use mallard_exchanger::ipc::{MessageDecoder, schema_from_header};
use std::sync::Arc;

fuzz_target!(|data: &[u8]| {
    let _ = schema_from_header(data);
    if data.len() < 2 {
        return;
    }
    // First byte picks where the header ends; the rest is the body.
    let split = 1 + (data[0] as usize * data.len() / 256).min(data.len() - 1);
    let (header, body) = data[1..].split_at(split - 1);
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, true),
        Field::new("name", DataType::Utf8, true),
        Field::new("ok", DataType::Boolean, false),
        Field::new("tag", DataType::Dictionary(Box::new(DataType::Int8), Box::new(DataType::Utf8)), true),
    ]));
    let mut decoder = MessageDecoder::new(schema);
    let _ = decoder.decode(header, Buffer::from(body.to_vec()));
});
