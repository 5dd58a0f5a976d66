//! Replays the fuzz corpora (and any crash reproducers) of `fuzz/` through their
//! targets: every input must parse or fail cleanly, never panic.

use std::path::PathBuf;

/// Feeds every file of `dirs` (under `fuzz/`) to `target`; how many there were.
fn replay(dirs: &[&str], target: fn(&[u8])) -> usize {
    // At run time first: a shared target directory can hold a test binary built
    // in another checkout.
    let crate_dir = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    let root = crate_dir.join("fuzz");
    let mut replayed = 0;
    for dir in dirs {
        let Ok(entries) = std::fs::read_dir(root.join(dir)) else {
            continue;
        };
        for entry in entries.flatten().filter(|e| e.path().is_file()) {
            target(&std::fs::read(entry.path()).unwrap());
            replayed += 1;
        }
    }
    replayed
}

#[test]
fn fuzz_corpus_never_panics() {
    let replayed = replay(
        &["corpus/requests", "regressions"],
        mallard_protocol::fuzzing::exercise_parsers,
    );
    assert!(replayed > 0, "the committed corpus is missing");
}

#[test]
fn flight_sql_corpus_never_panics() {
    let replayed = replay(
        &["corpus/flight_sql", "regressions_flight_sql"],
        mallard_protocol::fuzzing::exercise_flight_sql,
    );
    assert!(replayed > 0, "the committed corpus is missing");
}

#[test]
fn flight_data_corpus_never_panics() {
    let replayed = replay(
        &["corpus/flight_data", "regressions_flight_data"],
        mallard_protocol::fuzzing::exercise_flight_data,
    );
    assert!(replayed > 0, "the committed corpus is missing");
}
