//! Fuzzes the IPC path every untrusted message takes: schema headers
//! (`schema_from_header`) and record-batch/dictionary messages (`MessageDecoder`,
//! which the host uses to validate guest output and to decode native-exchange input).
//! Any input must give a value or an error, never a panic. The corpus is replayed by
//! `tests/fuzz_corpus.rs` in every test run.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| mallard_exchanger::ipc::exercise_decoders(data));
