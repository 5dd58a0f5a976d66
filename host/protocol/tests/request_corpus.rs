//! Replays the fuzz corpus (and any crash reproducers) of `fuzz/` through the
//! parsers: every input must parse or fail cleanly, never panic.

use std::path::PathBuf;

#[test]
fn fuzz_corpus_never_panics() {
    // At run time first: a shared target directory can hold a test binary built
    // in another checkout.
    let crate_dir = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    let root = crate_dir.join("fuzz");
    let mut replayed = 0;
    for dir in ["corpus/requests", "regressions"] {
        let Ok(entries) = std::fs::read_dir(root.join(dir)) else {
            continue;
        };
        for entry in entries.flatten() {
            let data = std::fs::read(entry.path()).unwrap();
            mallard_protocol::fuzzing::exercise_parsers(&data);
            replayed += 1;
        }
    }
    assert!(replayed > 0, "the committed corpus is missing");
}

#[test]
fn flight_sql_corpus_never_panics() {
    let crate_dir = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    let root = crate_dir.join("fuzz");
    let mut replayed = 0;
    for dir in ["corpus/flight_sql", "regressions_flight_sql"] {
        let Ok(entries) = std::fs::read_dir(root.join(dir)) else {
            continue;
        };
        for entry in entries.flatten().filter(|e| e.path().is_file()) {
            let data = std::fs::read(entry.path()).unwrap();
            mallard_protocol::fuzzing::exercise_flight_sql(&data);
            replayed += 1;
        }
    }
    assert!(replayed > 0, "the committed corpus is missing");
}
