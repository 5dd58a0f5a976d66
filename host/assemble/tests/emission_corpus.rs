//! Replays the fuzz corpus of `fuzz/` (and any crash reproducers), and the
//! seeds it started from, through the assembler: never a panic, and whatever
//! is accepted decodes as the output schema.

use std::path::PathBuf;

#[test]
fn the_emission_corpus_never_panics() {
    // At run time first: a shared target directory can hold a test binary built
    // in another checkout.
    let crate_dir = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    let mut replayed = 0;
    for dir in ["corpus/emissions", "regressions"] {
        let Ok(entries) = std::fs::read_dir(crate_dir.join("fuzz").join(dir)) else {
            continue;
        };
        for entry in entries.flatten().filter(|e| e.path().is_file()) {
            mallard_assemble::fuzzing::exercise_emissions(&std::fs::read(entry.path()).unwrap());
            replayed += 1;
        }
    }
    assert!(replayed > 0, "the committed corpus is missing");
    for seed in mallard_assemble::fuzzing::seed_inputs() {
        mallard_assemble::fuzzing::exercise_emissions(&seed);
    }
}

/// Writes the seeds into `fuzz/corpus/emissions` (run once before fuzzing a
/// fresh checkout: `cargo test -p mallard-assemble -- --ignored`).
#[test]
#[ignore]
fn write_the_seed_corpus() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/emissions");
    std::fs::create_dir_all(&dir).unwrap();
    for (i, seed) in mallard_assemble::fuzzing::seed_inputs().iter().enumerate() {
        std::fs::write(dir.join(format!("seed-{i}")), seed).unwrap();
    }
}
