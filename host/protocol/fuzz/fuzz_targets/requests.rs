//! Every parser of client requests (actions, push bodies, exchange descriptors,
//! Flight descriptors and tickets, table names, authorization headers, users
//! files) on arbitrary bytes.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    mallard_protocol::fuzzing::exercise_parsers(data);
});
