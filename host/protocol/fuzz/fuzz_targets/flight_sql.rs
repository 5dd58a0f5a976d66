//! Flight SQL commands (descriptors, tickets, action bodies) and prepared-statement
//! parameter streams on arbitrary bytes.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    mallard_protocol::fuzzing::exercise_flight_sql(data);
});
