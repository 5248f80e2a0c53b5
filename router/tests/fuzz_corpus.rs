//! Replays the committed fuzz corpus (`fuzz/corpus/TARGET/*`, and crash regressions in
//! `fuzz/regressions/TARGET/*`) through the fuzz targets' own checks, on stable, with the rest
//! of the test suite. The checks live in `fuzz/checks.rs`, shared with the cargo-fuzz binaries.

#[path = "../../fuzz/checks.rs"]
mod checks;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

/// The files of `dir`, sorted; none when it does not exist.
fn files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .map(|e| e.expect("readable corpus directory").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

/// Every subdirectory name of `dir`.
fn subdirs(dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .map(|e| e.expect("readable fuzz directory").path())
        .filter(|p| p.is_dir())
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect()
}

#[test]
fn every_corpus_file_passes_its_target_check() {
    let fuzz = fuzz_dir();
    let mut failures = Vec::new();
    let mut replayed = 0;
    for (target, check) in checks::TARGETS {
        let corpus = files(&fuzz.join("corpus").join(target));
        assert!(
            !corpus.is_empty(),
            "no corpus for fuzz target {target} in {}",
            fuzz.join("corpus").display()
        );
        let regressions = files(&fuzz.join("regressions").join(target));
        for file in corpus.iter().chain(&regressions) {
            let data = std::fs::read(file).expect("readable corpus file");
            if catch_unwind(AssertUnwindSafe(|| check(&data))).is_err() {
                failures.push(format!(
                    "{target}: {} ({} bytes)",
                    file.display(),
                    data.len()
                ));
            }
            replayed += 1;
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {replayed} corpus inputs fail their check (rerun one with \
         `cargo +nightly fuzz run TARGET FILE` in fuzz/):\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// A target added to `fuzz/` must be registered in `checks::TARGETS`, or its corpus would
/// silently go unreplayed.
#[test]
fn every_fuzz_target_is_replayed() {
    let fuzz = fuzz_dir();
    let known: Vec<&str> = checks::TARGETS.iter().map(|(name, _)| *name).collect();
    let mut bins: Vec<String> = files(&fuzz.join("fuzz_targets"))
        .iter()
        .filter_map(|p| Some(p.file_stem()?.to_string_lossy().into_owned()))
        .collect();
    assert!(!bins.is_empty(), "no fuzz targets in {}", fuzz.display());
    bins.extend(subdirs(&fuzz.join("corpus")));
    bins.extend(subdirs(&fuzz.join("regressions")));
    for bin in bins {
        assert!(
            known.contains(&bin.as_str()),
            "fuzz target {bin} is not in fuzz/checks.rs TARGETS"
        );
    }
}
