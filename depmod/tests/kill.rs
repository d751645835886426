//! Crash safety of the real depmod binary: killed with SIGKILL at random points of a run
//! that replaces the indexes of a few hundred modules, every index file is afterwards
//! either the complete old file or the complete new one — never a mix, never cut short.
//! The incremental cache (`modules.depmod.cache`) is held to the same rule: the complete
//! old cache or the complete new one. A run after the kill produces exactly the new files
//! and the new cache (so anything a killed run left behind, such as temporary files, is
//! harmless).
//!
//! Parallel runs: 8 depmod processes at once on the same tree, and 8 threads calling
//! `modcore::depmod::run`, leave indexes identical to a single run.

#![allow(clippy::unwrap_used, clippy::panic, clippy::manual_is_multiple_of)] // rust-version 1.80

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use modcore::depmod::{DepmodOptions, NoProgress, OUTPUT_FILES};
use modcore::diag::Collect;
use tests::rng::Rng;
use tests::synth::SynthModule;

const KVER: &str = "6.1.0-kill";

/// The incremental cache, if depmod writes one.
const CACHE_FILE: &str = "modules.depmod.cache";

fn moddir(base: &Path) -> PathBuf {
    base.join("lib/modules").join(KVER)
}

fn module(i: usize, generation: u32) -> SynthModule {
    let name = format!("m{i:03}");
    let mut m = SynthModule::new(&name)
        .modinfo("alias", &format!("test-alias-{i}"))
        .modinfo("alias", &format!("pci:v{:08X}d*sv*sd*bc*sc*i*", i))
        .modinfo("license", "GPL")
        .export_crc(&format!("sym_{i}"), i as u64);
    if generation > 0 && i % 7 == 0 {
        m = m.modinfo("alias", &format!("new-alias-{i}-{generation}"));
    }
    if i > 0 {
        m = m.needs(&format!("sym_{}", i / 2));
    }
    if i > 3 && i % 5 == 0 {
        m = m.needs(&format!("sym_{}", i / 3));
    }
    if i % 11 == 0 {
        m = m.modinfo("softdep", &format!("pre: m{:03}", (i + 1) % 300));
    }
    m.standard_modinfo("", KVER)
}

/// A tree of `count` modules (generation 0), or the changed tree (generation 1): 30
/// modules removed, 60 added, every 7th module with one more alias.
fn write_tree(base: &Path, generation: u32) {
    let md = moddir(base);
    let (range, skip): (std::ops::Range<usize>, fn(usize) -> bool) = if generation == 0 {
        (0..300, |_| false)
    } else {
        (0..360, |i| (100..130).contains(&i))
    };
    let mut order = String::new();
    for i in range {
        if skip(i) {
            continue;
        }
        let rel = format!("kernel/dir{}/m{i:03}.ko", i % 10);
        let p = md.join(&rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, module(i, generation).build()).unwrap();
        order.push_str(&rel);
        order.push('\n');
    }
    fs::write(md.join("modules.order"), order).unwrap();
    fs::write(md.join("modules.builtin"), "kernel/fs/ext4/ext4.ko\n").unwrap();
    fs::write(
        md.join("modules.builtin.modinfo"),
        b"ext4.alias=fs-ext4\0ext4.license=GPL\0",
    )
    .unwrap();
}

fn depmod_bin() -> &'static str {
    env!("CARGO_BIN_EXE_depmod")
}

fn depmod_command(base: &Path, empty_conf: &Path) -> Command {
    let mut c = Command::new(depmod_bin());
    c.arg("-b")
        .arg(base)
        .arg("-C")
        .arg(empty_conf)
        .arg(KVER)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    c
}

fn run_depmod(base: &Path, empty_conf: &Path) {
    let out = depmod_command(base, empty_conf).output().unwrap();
    assert!(
        out.status.success(),
        "depmod failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Every output file (and the cache, if any) by name.
fn outputs(base: &Path) -> BTreeMap<String, Vec<u8>> {
    let md = moddir(base);
    OUTPUT_FILES
        .iter()
        .chain(std::iter::once(&CACHE_FILE))
        .filter_map(|n| fs::read(md.join(n)).ok().map(|b| (n.to_string(), b)))
        .collect()
}

/// The output files only (the cache may hold times and is checked by its effect).
fn indexes(base: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut o = outputs(base);
    o.remove(CACHE_FILE);
    o
}

/// Put the old outputs back in place (and nothing else: no temporary files, no cache
/// beyond the old one).
fn reset(md: &Path, old: &BTreeMap<String, Vec<u8>>) {
    for e in fs::read_dir(md).unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with("modules.")
            && !matches!(
                name.as_str(),
                "modules.order" | "modules.builtin" | "modules.builtin.modinfo"
            )
        {
            fs::remove_file(e.path()).unwrap();
        }
    }
    for (n, b) in old {
        fs::write(md.join(n), b).unwrap();
    }
}

fn temp_files(md: &Path) -> Vec<String> {
    fs::read_dir(md)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| {
            !OUTPUT_FILES.contains(&n.as_str())
                && n != CACHE_FILE
                && n != modcore::depmod::uptodate::RECORD_FILE
                && !matches!(
                    n.as_str(),
                    "modules.order" | "modules.builtin" | "modules.builtin.modinfo" | "kernel"
                )
        })
        .collect()
}

#[derive(Default, Debug)]
struct Tally {
    kills: usize,
    /// The process had already exited when the kill came.
    finished_first: usize,
    all_old: usize,
    all_new: usize,
    /// Some files old, some new (each one whole): the run was killed between renames.
    mixed: usize,
    temp_left: usize,
    /// The cache after the kill: the old one or the new one (nothing else passes).
    cache_old: usize,
    cache_new: usize,
    reruns: usize,
}

#[test]
fn sigkill_leaves_every_index_old_or_new() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("empty-depmod.d");
    fs::create_dir_all(&conf).unwrap();

    // The two known-good outputs.
    let a = dir.path().join("a");
    let b = dir.path().join("b");
    write_tree(&a, 0);
    write_tree(&b, 1);
    // Tree b's modules must be older than the cache's settle time to be stored in it.
    std::thread::sleep(modcore::depmod::cache::SETTLE + Duration::from_millis(100));
    run_depmod(&a, &conf);
    let mut old = indexes(&a);
    // The old cache: valid, with no entries (so every run on b reads every module and
    // writes a new cache).
    let old_cache = modcore::depmod::cache::encode(&[], &[]);
    old.insert(CACHE_FILE.to_string(), old_cache.clone());
    let md = moddir(&b);
    // The shortest of three runs (the machine may be busy), each from the old state.
    let full_run = (0..3)
        .map(|_| {
            reset(&md, &old);
            let started = Instant::now();
            run_depmod(&b, &conf);
            started.elapsed()
        })
        .min()
        .unwrap();
    let mut new = outputs(&b);
    let new_cache = new.remove(CACHE_FILE).expect("depmod wrote its cache");
    let cached = modcore::depmod::cache::Cache::parse(new_cache.clone()).unwrap();
    assert_eq!(
        cached.len(),
        330,
        "every module of tree b is in the new cache"
    );
    for n in OUTPUT_FILES {
        assert!(old.contains_key(*n) && new.contains_key(*n), "{n} written");
    }
    assert_ne!(old["modules.dep"], new["modules.dep"]);
    assert_ne!(old["modules.alias.bin"], new["modules.alias.bin"]);

    // Kill runs on tree b whose indexes are a's, at random points.
    let kills: usize = std::env::var("KMODRS_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(120);
    let span = full_run.as_micros() as u64 + 1;
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ span);
    let mut t = Tally::default();
    for k in 0..kills {
        reset(&md, &old);
        // A third of the kills anywhere in (or just after) a run's time, two thirds in
        // its last part, where the files are written.
        let delay = if k % 3 == 0 {
            rng.below_u64(span * 13 / 10)
        } else {
            span / 2 + rng.below_u64(span * 6 / 10 + 1)
        };
        let mut child = depmod_command(&b, &conf)
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_micros(delay));
        if let Some(status) = child.try_wait().unwrap() {
            assert!(
                status.success(),
                "kill {k}: depmod exited with {status} before the kill"
            );
            t.finished_first += 1;
        }
        let _ = child.kill();
        let _ = child.wait();
        t.kills += 1;

        let now = outputs(&b);
        let (mut n_old, mut n_new) = (0, 0);
        for name in OUTPUT_FILES {
            let got = now.get(*name);
            if old.get(*name) == new.get(*name) && got == old.get(*name) {
                // Unchanged between the trees (modules.builtin.bin, ...): either.
            } else if got == old.get(*name) {
                n_old += 1;
            } else if got == new.get(*name) {
                n_new += 1;
            } else {
                panic!(
                    "kill {k} after {delay} us: {name} is neither the old nor the new file \
                     ({} bytes; old {}, new {})",
                    got.map_or(0, Vec::len),
                    old[*name].len(),
                    new[*name].len()
                );
            }
        }
        match (n_old, n_new) {
            (_, 0) => t.all_old += 1,
            (0, _) => t.all_new += 1,
            _ => t.mixed += 1,
        }
        match now.get(CACHE_FILE) {
            Some(c) if *c == old_cache => t.cache_old += 1,
            Some(c) if *c == new_cache => t.cache_new += 1,
            got => panic!(
                "kill {k} after {delay} us: the cache is neither the old nor the new one \
                 ({} bytes; old {}, new {})",
                got.map_or(0, Vec::len),
                old_cache.len(),
                new_cache.len()
            ),
        }
        if !temp_files(&md).is_empty() {
            t.temp_left += 1;
        }
        // Every tenth kill: a complete run afterwards gives exactly the new files,
        // whatever the killed run left behind.
        if k % 10 == 9 {
            run_depmod(&b, &conf);
            let after = outputs(&b);
            for name in OUTPUT_FILES {
                assert!(
                    after.get(*name) == new.get(*name),
                    "kill {k}: rerun gave a different {name}"
                );
            }
            assert!(
                after.get(CACHE_FILE) == Some(&new_cache),
                "kill {k}: rerun left a different cache"
            );
            t.reruns += 1;
        }
    }
    println!("depmod kill test: full run {full_run:?}; {t:?}");
    assert!(t.kills >= 100 || kills < 100);
    assert!(
        t.all_old > 0,
        "no kill landed before the first write: {t:?}"
    );
    assert!(
        t.cache_old > 0,
        "no kill landed before the cache was replaced: {t:?}"
    );
}

fn opts(base: &Path) -> DepmodOptions {
    let mut o = DepmodOptions::new(KVER);
    o.basedir = base.as_os_str().as_bytes().to_vec();
    o.config_paths = Some(vec![]);
    o
}

/// 8 threads running depmod on the same tree at once: the indexes are those of one run.
#[test]
fn parallel_runs_in_threads_give_the_single_run_output() {
    let dir = tempfile::tempdir().unwrap();
    let single = dir.path().join("single");
    let shared = dir.path().join("shared");
    write_tree(&single, 1);
    write_tree(&shared, 1);
    let mut sink = Collect::default();
    modcore::depmod::run(&opts(&single), &mut sink, &mut Vec::new(), &NoProgress).unwrap();
    let want = indexes(&single);
    for round in 0..3 {
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| {
                    let mut sink = Collect::default();
                    modcore::depmod::run(&opts(&shared), &mut sink, &mut Vec::new(), &NoProgress)
                        .unwrap();
                });
            }
        });
        assert_eq!(indexes(&shared), want, "round {round}");
        assert_eq!(temp_files(&moddir(&shared)), Vec::<String>::new());
    }
}

/// 8 depmod processes on the same tree at once: the indexes are those of one run.
#[test]
fn parallel_runs_in_processes_give_the_single_run_output() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("empty-depmod.d");
    fs::create_dir_all(&conf).unwrap();
    let single = dir.path().join("single");
    let shared = dir.path().join("shared");
    write_tree(&single, 1);
    write_tree(&shared, 1);
    run_depmod(&single, &conf);
    let want = indexes(&single);
    for round in 0..3 {
        let children: Vec<_> = (0..8)
            .map(|_| depmod_command(&shared, &conf).spawn().unwrap())
            .collect();
        for c in children {
            let out = c.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        assert_eq!(indexes(&shared), want, "round {round}");
        assert_eq!(temp_files(&moddir(&shared)), Vec::<String>::new());
    }
}

/// Two depmod runs in one process (threads, or a library user) pick their temporary
/// names with `fsio::temp_suffix`; a per-process counter keeps two calls in the same
/// microsecond apart, so neither run fails with EEXIST on its O_EXCL create.
#[test]
fn temp_suffix_is_unique_within_a_process() {
    let mut seen = std::collections::HashSet::new();
    for _ in 0..10_000 {
        assert!(seen.insert(modcore::fsio::temp_suffix()), "repeated suffix");
    }
}
