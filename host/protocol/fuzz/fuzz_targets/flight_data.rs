//! A client's gRPC-framed FlightData stream, in arbitrary pieces, on arbitrary bytes.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    mallard_protocol::fuzzing::exercise_flight_data(data);
});
