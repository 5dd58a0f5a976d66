//! Replays the fuzz corpus (and any crash reproducers) of `fuzz/` through the
//! parsers: every input must parse or fail cleanly, never panic.

use std::path::Path;

#[test]
fn fuzz_corpus_never_panics() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
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
