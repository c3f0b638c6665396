//! Replays every input of the committed fuzz corpus (`fuzz/corpus/<target>/`) through the
//! check its target runs, on stable Rust: what the fuzzers learned stays a regression test.
//! An empty or missing corpus fails rather than passing vacuously.
//!
//! The inputs of the fuzzers' findings live apart, in `fuzz/regressions/<target>/`, where
//! minimizing the corpus (`cargo fuzz cmin`) cannot drop them; they are replayed too.

use std::fs;
use std::panic;
use std::path::{Path, PathBuf};

fn replay(target: &str) {
    let (_, check) = sync_fuzz::TARGETS
        .iter()
        .find(|(name, _)| *name == target)
        .expect("a known target");
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let corpus = fuzz.join("corpus").join(target);
    let mut files = files_in(&corpus);
    assert!(
        !files.is_empty(),
        "{} is empty: run scripts/fuzz.sh",
        corpus.display()
    );
    let regressions = fuzz.join("regressions").join(target);
    if regressions.exists() {
        files.extend(files_in(&regressions));
    }
    let failing: Vec<&PathBuf> = files
        .iter()
        .filter(|path| {
            let input = fs::read(path).expect("a readable corpus file");
            panic::catch_unwind(|| check(&input)).is_err()
        })
        .collect();
    assert!(
        failing.is_empty(),
        "{} of {} inputs fail; read one with \
         `TIDEMARK_FUZZ_TRACE=1 cargo run -p sync-fuzz --example run_input -- {target} <file>`: {failing:?}",
        failing.len(),
        files.len()
    );
}

fn files_in(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.expect("a readable directory").path())
        .collect();
    files.sort();
    files
}

#[test]
fn the_request_corpus_passes() {
    replay("request");
}

#[test]
fn the_commit_corpus_passes() {
    replay("commit");
}

#[test]
fn the_replica_corpus_passes() {
    replay("replica");
}
