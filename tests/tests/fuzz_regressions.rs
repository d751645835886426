//! Replays the fuzz corpora through the fuzz target bodies under `cargo test`.
//!
//! `fuzz/src/targets.rs` holds the body of every libFuzzer target as a plain function;
//! this test includes that file and runs each function on
//!
//! * the committed seeds, `fuzz/seeds/<target>/*`, and
//! * the saved findings, `tests/data/fuzz/<target>/*`: **every crash the fuzzer finds is
//!   saved there** (the input file from `fuzz/artifacts/<target>/`, renamed to say what
//!   it is), which makes it a regression test.
//!
//! Findings so far: libFuzzer found no crash, neither in the 60-second runs nor in the
//! 10-minute run of every target (117 million executions over the 12 targets; see the
//! issue notes). The bounded-work problems were found by the targeted tests in
//! `bounds.rs`, and a stack overflow on a 2100-deep directory tree by
//! `depmod.rs: a_very_deep_tree_is_walked_in_constant_stack`. Saved inputs:
//!
//! * `decompress/xz-dictionary-4gib.ko.xz`: an xz stream whose LZMA2 dictionary property
//!   claims 4 GiB made liblzma allocate 4 GiB (fixed: a 256 MiB decoder memory limit).

#![allow(clippy::unwrap_used, clippy::panic)]

#[path = "../../fuzz/src/targets.rs"]
mod targets;

use std::path::{Path, PathBuf};

fn inputs(target: &str) -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut out = Vec::new();
    for dir in [
        root.join("../fuzz/seeds").join(target),
        root.join("data/fuzz").join(target),
    ] {
        if let Ok(rd) = std::fs::read_dir(&dir) {
            out.extend(rd.flatten().map(|e| e.path()).filter(|p| p.is_file()));
        }
    }
    out.sort();
    out
}

#[test]
fn every_saved_input_replays_cleanly() {
    let mut failures = Vec::new();
    let mut count = 0;
    for (name, body) in targets::TARGETS {
        let files = inputs(name);
        assert!(!files.is_empty(), "no seeds for fuzz target {name}");
        for f in files {
            let data = std::fs::read(&f).unwrap();
            count += 1;
            if std::panic::catch_unwind(|| body(&data)).is_err() {
                failures.push(format!("{name}: {}", f.display()));
            }
        }
    }
    assert!(failures.is_empty(), "inputs that panic: {failures:#?}");
    assert!(count > 30, "{count} inputs");
}

#[test]
fn the_4gib_dictionary_is_refused() {
    let x = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("data/fuzz/decompress/xz-dictionary-4gib.ko.xz"),
    )
    .unwrap();
    let e = modcore::compress::decompress(&x).unwrap_err();
    assert!(e.to_string().contains("memory limit"), "{e}");
}

#[test]
fn split_head_never_panics() {
    assert_eq!(targets::split_head(b""), (&b""[..], &b""[..]));
    assert_eq!(targets::split_head(b"\x05ab"), (&b"ab"[..], &b""[..]));
    assert_eq!(targets::split_head(b"\x01abc"), (&b"a"[..], &b"bc"[..]));
}
