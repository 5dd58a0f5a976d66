//! Contract 0.2 emissions (column sources and IPC messages) on arbitrary bytes.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    mallard_assemble::fuzzing::exercise_emissions(data);
});
