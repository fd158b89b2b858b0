//! The deterministic side of the project's fuzz targets: each cargo-fuzz target's body is a
//! plain function of its crate (e.g. `pony_proto::wire::fuzz_parse`), and a stable test
//! runs it over [`inputs`]: the target's checked-in corpus (`<crate>/fuzz/seeds/<target>/`:
//! seeds that reach deep paths, and any input a fuzzer once failed on) plus inputs made from
//! a fixed seed, so CI covers every target without nightly and a failure reproduces.
//!
//! Generated inputs are half mutations of corpus entries (bytes changed, inserted, removed,
//! truncated, two entries spliced), which keep enough structure to get past the first
//! checks, and half random bytes of random length.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;

/// Runs `body` on every one of [`inputs`]; returns its results in order. A panic names the
/// input (its file, or its generated number and seed) and shows its first bytes, so a
/// generated failure can be added to the corpus as a regression input.
pub fn run<T>(seeds: impl AsRef<Path>, generated: usize, seed: u64, body: impl Fn(&[u8]) -> T) -> Vec<T> {
    inputs(seeds, generated, seed)
        .into_iter()
        .map(|(name, input)| {
            catch_unwind(AssertUnwindSafe(|| body(&input))).unwrap_or_else(|_| {
                let head = &input[..input.len().min(64)];
                panic!(
                    "fuzz body failed on {name} ({} bytes, starting {head:02x?})",
                    input.len()
                )
            })
        })
        .collect()
}

/// The checked-in corpus of `target` under `seeds` (sorted by file name), then `generated`
/// inputs made deterministically from `seed`. Panics if the corpus is missing or empty: a
/// target without seeds would test nothing deep.
pub fn inputs(seeds: impl AsRef<Path>, generated: usize, seed: u64) -> Vec<(String, Vec<u8>)> {
    let dir = seeds.as_ref();
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("corpus {}: {e}", dir.display()))
        .map(|entry| entry.expect("corpus entry").path())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "corpus {} is empty", dir.display());
    let mut all: Vec<(String, Vec<u8>)> = files
        .iter()
        .map(|p| {
            let bytes = std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            (p.display().to_string(), bytes)
        })
        .collect();
    let corpus: Vec<Vec<u8>> = all.iter().map(|(_, b)| b.clone()).collect();
    let mut rng = fastrand::Rng::with_seed(seed);
    for i in 0..generated {
        let input = if i % 2 == 0 {
            mutate(&mut rng, &corpus)
        } else {
            let len = rng.usize(..=512);
            std::iter::repeat_with(|| rng.u8(..)).take(len).collect()
        };
        all.push((format!("generated input {i} (seed {seed})"), input));
    }
    all
}

/// A corpus entry with one to four edits.
fn mutate(rng: &mut fastrand::Rng, corpus: &[Vec<u8>]) -> Vec<u8> {
    let mut m = corpus[rng.usize(..corpus.len())].clone();
    for _ in 0..rng.usize(1..=4) {
        let at = rng.usize(..=m.len());
        match rng.u8(..5) {
            0 if at < m.len() => m[at] = rng.u8(..),
            1 => m.insert(at, rng.u8(..)),
            2 if at < m.len() => {
                m.remove(at);
            }
            3 => m.truncate(at),
            _ => {
                let other = &corpus[rng.usize(..corpus.len())];
                let from = rng.usize(..=other.len());
                m.truncate(at);
                m.extend_from_slice(&other[from..]);
            }
        }
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_corpus_comes_first_and_generation_is_deterministic() {
        let dir = std::env::temp_dir().join(format!("snap-test-fuzz-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("b"), b"second").unwrap();
        std::fs::write(dir.join("a"), b"first").unwrap();
        let one = inputs(&dir, 100, 7);
        let two = inputs(&dir, 100, 7);
        let other = inputs(&dir, 100, 8);
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(one.len(), 102);
        assert_eq!(
            (one[0].1.as_slice(), one[1].1.as_slice()),
            (&b"first"[..], &b"second"[..])
        );
        assert_eq!(one, two);
        assert_ne!(one, other);
    }
}
