//! Replays the fuzzer's seed corpus (`fuzz/corpus/filter_compile/`) and every
//! crash reproducer it found (`fuzz/regressions/filter_compile/`) through
//! `compile`, with the checks of the fuzz target (`fuzz/fuzz_targets/`): no
//! panic, and an accepted filter's canonical form compiles to itself (with
//! the length limit lifted: escaping may make it longer than the input).

use std::path::{Path, PathBuf};

use super::validate::tests::test_schema;
use super::{Limits, RegexCache, compile};

fn inputs(dir: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .filter(|p| p.is_file() && !p.file_name().unwrap().to_string_lossy().starts_with('.'))
        .collect();
    files.sort();
    files
}

fn replay(file: &Path) {
    let bytes = std::fs::read(file).expect("read input");
    // The fuzz target only sees valid UTF-8; a lossy decoding of anything
    // else is still a fine input.
    let text = String::from_utf8_lossy(&bytes);
    let (schema, limits, regexes) = (test_schema(), Limits::default(), RegexCache::default());
    if let Ok(filter) = compile(&text, &schema, &limits, &regexes) {
        let unbounded = Limits {
            max_length: usize::MAX,
            ..limits
        };
        let again = compile(filter.canonical(), &schema, &unbounded, &regexes)
            .unwrap_or_else(|e| panic!("{}: canonical form does not compile: {e}", file.display()));
        assert_eq!(again.canonical(), filter.canonical(), "{}", file.display());
    }
}

#[test]
fn the_seed_corpus_compiles_without_panicking() {
    let files = inputs("fuzz/corpus/filter_compile");
    assert!(files.len() >= 5, "the seed corpus is missing: {files:?}");
    files.iter().for_each(|f| replay(f));
}

#[test]
fn every_fuzz_regression_compiles_without_panicking() {
    // Empty until the fuzzer finds something; each reproducer it writes to
    // fuzz/artifacts/ is copied here and stays.
    inputs("fuzz/regressions/filter_compile")
        .iter()
        .for_each(|f| replay(f));
}
