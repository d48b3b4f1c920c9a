//! Hostile input for the tests of every decoder that takes bytes from outside (control
//! messages, link frames, experiment files, topology imports, API bodies).
//!
//! A target's inputs are its corpus (the files in `fuzz/corpus/<target>/`, plus seeds a test
//! builds in code) cut, spliced and bit-flipped by proptest. The seed is fixed and the number
//! of cases small, so a test run is short and the same every time; a longer search is the same
//! test with `HOSTILE_CASES=100000`. An input that makes a decoder panic is shrunk by proptest
//! and printed; put it in the corpus once fixed.

use std::path::{Path, PathBuf};

/// For strategies beside the inputs (a flag, an id) without a dependency of its own.
pub use proptest;

use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, RngSeed};

/// `fuzz/corpus/<target>` in the repository.
pub fn corpus_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target)
}

/// Every file of a target's corpus, sorted by name (so the cases are the same each run).
pub fn corpus(target: &str) -> Vec<Vec<u8>> {
    let dir = corpus_dir(target);
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("corpus {}: {e}", dir.display()))
        .map(|e| e.expect("a directory entry").path())
        .collect();
    paths.sort();
    paths
        .iter()
        .map(|p| std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display())))
        .collect()
}

/// A fixed seed, `cases` cases (or `HOSTILE_CASES`), nothing written beside the sources.
pub fn config(cases: u32) -> Config {
    let cases = std::env::var("HOSTILE_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(cases);
    Config {
        cases,
        failure_persistence: None,
        rng_algorithm: RngAlgorithm::ChaCha,
        rng_seed: RngSeed::Fixed(0x6e65_7874_6d69_6e69),
        max_shrink_iters: 2_000,
        ..Config::default()
    }
}

/// One change to an input.
#[derive(Debug, Clone)]
enum Edit {
    Flip {
        at: usize,
        bit: u8,
    },
    Set {
        at: usize,
        byte: u8,
    },
    Insert {
        at: usize,
        bytes: Vec<u8>,
    },
    Delete {
        at: usize,
        len: usize,
    },
    Duplicate {
        at: usize,
        len: usize,
    },
    Splice {
        at: usize,
        from: usize,
        start: usize,
    },
    Truncate {
        at: usize,
    },
}

/// Bytes that mean something to the formats at hand: delimiters, quotes, digits, extremes.
const INTERESTING: &[&[u8]] = &[
    b"\"",
    b"[",
    b"]",
    b"{",
    b"}",
    b"=",
    b"<",
    b">",
    b"&amp;",
    b"-1",
    b"0",
    b"4294967295",
    b"18446744073709551615",
    b"1e308",
    b"NaN",
    b"\n[[link]]\n",
    &[0xff],
    &[0xcf, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
    &[0xdd, 0xff, 0xff, 0xff, 0xff],
    &[0xc1],
    &[0x00],
];

fn edit() -> impl Strategy<Value = Edit> {
    let at = any::<usize>();
    prop_oneof![
        (at, 0u8..8).prop_map(|(at, bit)| Edit::Flip { at, bit }),
        (at, any::<u8>()).prop_map(|(at, byte)| Edit::Set { at, byte }),
        (
            at,
            prop_oneof![
                proptest::collection::vec(any::<u8>(), 1..8),
                proptest::sample::select(INTERESTING).prop_map(|b| b.to_vec()),
            ]
        )
            .prop_map(|(at, bytes)| Edit::Insert { at, bytes }),
        (at, 1usize..32).prop_map(|(at, len)| Edit::Delete { at, len }),
        (at, 1usize..64).prop_map(|(at, len)| Edit::Duplicate { at, len }),
        (at, any::<usize>(), any::<usize>()).prop_map(|(at, from, start)| Edit::Splice {
            at,
            from,
            start
        }),
        at.prop_map(|at| Edit::Truncate { at }),
    ]
}

fn apply(mut input: Vec<u8>, edit: &Edit, corpus: &[Vec<u8>]) -> Vec<u8> {
    let pos = |at: usize, len: usize| if len == 0 { 0 } else { at % (len + 1) };
    match edit {
        Edit::Flip { at, bit } if !input.is_empty() => {
            let i = at % input.len();
            input[i] ^= 1 << bit;
        }
        Edit::Set { at, byte } if !input.is_empty() => {
            let i = at % input.len();
            input[i] = *byte;
        }
        Edit::Insert { at, bytes } => {
            let i = pos(*at, input.len());
            input.splice(i..i, bytes.iter().copied());
        }
        Edit::Delete { at, len } if !input.is_empty() => {
            let i = at % input.len();
            let end = (i + len).min(input.len());
            input.drain(i..end);
        }
        Edit::Duplicate { at, len } if !input.is_empty() => {
            let i = at % input.len();
            let end = (i + len).min(input.len());
            let chunk = input[i..end].to_vec();
            input.splice(end..end, chunk);
        }
        Edit::Splice { at, from, start } if !corpus.is_empty() => {
            // This input up to `at`, then another corpus entry from `start` on.
            let other = &corpus[from % corpus.len()];
            let i = pos(*at, input.len());
            input.truncate(i);
            input.extend_from_slice(&other[pos(*start, other.len())..]);
        }
        Edit::Truncate { at } => {
            let i = pos(*at, input.len());
            input.truncate(i);
        }
        _ => {}
    }
    input
}

/// A corpus entry with up to `max_edits` edits: mostly near-valid input, which reaches deep
/// into a decoder, and now and then bytes that have little left of it.
pub fn mutated(corpus: Vec<Vec<u8>>, max_edits: usize) -> impl Strategy<Value = Vec<u8>> {
    assert!(!corpus.is_empty(), "an empty corpus");
    let n = corpus.len();
    (0..n, proptest::collection::vec(edit(), 0..=max_edits)).prop_map(move |(i, edits)| {
        edits
            .iter()
            .fold(corpus[i].clone(), |input, e| apply(input, e, &corpus))
    })
}

/// Text for text decoders: a mutated entry, read as UTF-8 with replacement characters.
pub fn mutated_text(corpus: Vec<Vec<u8>>, max_edits: usize) -> impl Strategy<Value = String> {
    mutated(corpus, max_edits).prop_map(|b| String::from_utf8_lossy(&b).into_owned())
}

/// Runs `case` on `cases` inputs from `strategy` (proptest catches a panic, shrinks the input
/// and this fails with it). `case` says whether the input got past the decoder into the code
/// behind it; fewer than one in twenty doing so means the corpus or the mutations are off and
/// the test would prove little, so that fails too.
pub fn check<T: std::fmt::Debug>(
    name: &str,
    strategy: impl Strategy<Value = T>,
    cases: u32,
    case: impl Fn(&T) -> bool,
) {
    use std::cell::Cell;
    let (total, accepted) = (Cell::new(0u64), Cell::new(0u64));
    let mut runner = proptest::test_runner::TestRunner::new(config(cases));
    let result = runner.run(&strategy, |input| {
        total.set(total.get() + 1);
        if case(&input) {
            accepted.set(accepted.get() + 1);
        }
        Ok(())
    });
    if let Err(e) = result {
        panic!("{name}: {e}");
    }
    eprintln!(
        "{name}: {} of {} inputs got past the decoder",
        accepted.get(),
        total.get()
    );
    assert!(
        accepted.get() * 20 >= total.get(),
        "{name}: only {} of {} inputs got past the decoder",
        accepted.get(),
        total.get()
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edits_stay_in_bounds_on_any_input() {
        let corpus = vec![b"abc".to_vec(), Vec::new()];
        for e in [
            Edit::Flip { at: 99, bit: 7 },
            Edit::Set { at: 5, byte: 0 },
            Edit::Insert {
                at: usize::MAX,
                bytes: vec![1],
            },
            Edit::Delete { at: 2, len: 50 },
            Edit::Duplicate { at: 1, len: 50 },
            Edit::Splice {
                at: 7,
                from: 3,
                start: usize::MAX,
            },
            Edit::Truncate { at: 2 },
        ] {
            let _ = apply(b"abc".to_vec(), &e, &corpus);
            let _ = apply(Vec::new(), &e, &corpus);
        }
        assert_eq!(
            apply(b"abc".to_vec(), &Edit::Truncate { at: 2 }, &corpus),
            b"ab"
        );
        assert_eq!(
            apply(b"abc".to_vec(), &Edit::Duplicate { at: 1, len: 1 }, &corpus),
            b"abbc"
        );
    }

    #[test]
    fn the_repository_corpora_are_there() {
        for target in ["api", "experiment", "graphml", "node_link"] {
            assert!(!corpus(target).is_empty(), "{target}");
        }
    }
}
