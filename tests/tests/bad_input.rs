//! Bad input everywhere, through the tools: damaged module files of every kind, things
//! that are not files named `*.ko`, malformed depmod.d and modprobe.d lines, and index
//! files cut short or with a bad magic.
//!
//! For each case: no panic; when a tool fails, its message names the file and the cause;
//! and depmod still indexes every good module exactly as it would without the bad ones.
//! Every case prints one `| input | tool | exit | message |` row (run with
//! `--nocapture --test-threads=1` to see the table).
//!
//! Tests run as root here, so "unreadable" files are made with things root cannot read
//! either: a directory, a dangling symlink, a symlink loop, a FIFO.

#![allow(clippy::unwrap_used, clippy::panic)]

use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use modcore::depmod::{self, DepmodOptions, NoProgress};
use modcore::diag::{Collect, Level};
use modcore::index::IndexFile;
use tests::fixtures::System;
use tests::synth::{self, HeaderField, SectionField, SynthModule, Target};
use tests::tools::{self, Outcome};

const KVER: &str = "6.1.0-test";
const MD: &str = "/lib/modules/6.1.0-test";

// ------------------------------------------------------------------------------------
// Reporting
// ------------------------------------------------------------------------------------

fn row(input: &str, tool: &str, code: impl std::fmt::Display, message: &str) {
    let first = message.lines().next().unwrap_or("").replace('|', "\\|");
    println!("| {input} | {tool} | {code} | {first} |");
}

// ------------------------------------------------------------------------------------
// The tree
// ------------------------------------------------------------------------------------

fn m(name: &str) -> SynthModule {
    SynthModule::new(name)
        .modinfo("name", name)
        .modinfo("license", "GPL")
        .modinfo("vermagic", "6.1.0-test SMP mod_unload ")
}

fn good_modules(sys: &System) {
    sys.module(
        "kernel/good/fat.ko",
        m("fat").export("fat_get").modinfo("alias", "fs-fat"),
    )
    .module(
        "kernel/good/vfat.ko",
        m("vfat").needs("fat_get").modinfo("alias", "fs-vfat"),
    )
    .module_bytes(
        "kernel/good/nls.ko.xz",
        &synth::xz(
            &m("nls")
                .export("nls_x")
                .modinfo("alias", "nls-default")
                .build(),
        ),
    )
    .module(
        "kernel/good/codepage.ko",
        m("codepage").needs("nls_x").needs("fat_get"),
    )
    .builtin(&["kernel/fs/ext4/ext4.ko"], &["ext4.alias=fs-ext4"]);
}

/// What is put at a bad path.
enum Bad {
    Bytes(Vec<u8>),
    /// A directory named `*.ko` holding one good module (`inner`), like kmod: it is
    /// walked into, not read.
    Dir,
    SymlinkLoop,
    Dangling,
    /// A symlink to an ancestor directory.
    AncestorLink,
    Fifo,
}

fn base() -> Vec<u8> {
    m("victim")
        .export("victim_fn")
        .needs("fat_get")
        .version("fat_get", 7)
        .build()
}

fn flip(mut v: Vec<u8>, at: usize, mask: u8) -> Vec<u8> {
    v[at] ^= mask;
    v
}

fn with_header(field: HeaderField, value: u64) -> Vec<u8> {
    let mut v = base();
    synth::set_header_field(&mut v, field, value);
    v
}

fn with_section(name: &str, field: SectionField, value: u64) -> Vec<u8> {
    let mut v = base();
    synth::set_section_field(&mut v, name, field, value);
    v
}

/// (label, file name under kernel/bad/, content, is it still indexed as a module?)
fn bad_modules() -> Vec<(&'static str, &'static str, Bad, bool)> {
    let b = base();
    let half = b.len() / 2;
    let mut every97 = b.clone();
    for i in (0..every97.len()).step_by(97) {
        every97[i] ^= 0x5A;
    }
    let mut xz_corrupt = synth::xz(&b);
    let mid = xz_corrupt.len() / 2;
    for byte in &mut xz_corrupt[mid..mid + 8] {
        *byte ^= 0xFF;
    }
    let xz_full = synth::xz(&b);
    let zst_full = synth::zstd(&b);
    let mut gz_corrupt = synth::gzip(&b);
    let gmid = gz_corrupt.len() / 2;
    for byte in &mut gz_corrupt[gmid..gmid + 8] {
        *byte ^= 0xFF;
    }
    let mut xz_magic_garbage = vec![0xFD, b'7', b'z', b'X', b'Z', 0x00];
    xz_magic_garbage.extend_from_slice(&[0x41; 200]);
    vec![
        ("zero-length file", "empty.ko", Bad::Bytes(Vec::new()), true),
        (
            "5 bytes",
            "short.ko",
            Bad::Bytes(b"\x7fELF\x02".to_vec()),
            true,
        ),
        (
            "ELF header only (64 bytes)",
            "hdr.ko",
            Bad::Bytes(b[..64].to_vec()),
            true,
        ),
        (
            "truncated at half",
            "half.ko",
            Bad::Bytes(b[..half].to_vec()),
            true,
        ),
        (
            "bit flip in e_shoff",
            "flip-shoff.ko",
            Bad::Bytes(flip(b.clone(), 0x28 + 2, 0x10)),
            true,
        ),
        (
            "bit flips every 97 bytes",
            "flips.ko",
            Bad::Bytes(every97),
            true,
        ),
        (
            "ELF class 3",
            "class.ko",
            Bad::Bytes(flip(b.clone(), 4, 0x01)),
            true,
        ),
        (
            "ELF data encoding 0",
            "data.ko",
            Bad::Bytes(flip(b.clone(), 5, 0x01)),
            true,
        ),
        (
            "wrong machine (EM_AARCH64)",
            "machine.ko",
            Bad::Bytes(with_header(HeaderField::Machine, 183)),
            true,
        ),
        (
            "big-endian ppc64 module",
            "ppc64.ko",
            Bad::Bytes(m("ppc64").target(Target::PowerPc64).build()),
            true,
        ),
        (
            "e_shnum 65535",
            "shnum.ko",
            Bad::Bytes(with_header(HeaderField::ShNum, 0xFFFF)),
            true,
        ),
        (
            "e_shentsize 0",
            "shentsize.ko",
            Bad::Bytes(with_header(HeaderField::ShEntSize, 0)),
            true,
        ),
        (
            "e_shstrndx out of range",
            "shstrndx.ko",
            Bad::Bytes(with_header(HeaderField::ShStrNdx, 999)),
            true,
        ),
        (
            ".symtab offset past the end",
            "symoff.ko",
            Bad::Bytes(with_section(".symtab", SectionField::Offset, 1 << 40)),
            true,
        ),
        (
            ".modinfo size 4 GiB",
            "modinfo4g.ko",
            Bad::Bytes(with_section(".modinfo", SectionField::Size, 0xFFFF_FFFF)),
            true,
        ),
        (
            "__versions size not a multiple of 64",
            "versions.ko",
            Bad::Bytes(with_section("__versions", SectionField::Size, 63)),
            true,
        ),
        (
            "text file",
            "text.ko",
            Bad::Bytes(b"this is not a kernel module\n".to_vec()),
            true,
        ),
        (
            "corrupt xz stream",
            "corrupt-xz.ko.xz",
            Bad::Bytes(xz_corrupt),
            true,
        ),
        (
            "truncated xz stream",
            "trunc-xz.ko.xz",
            Bad::Bytes(xz_full[..xz_full.len() - 20].to_vec()),
            true,
        ),
        (
            "xz magic then garbage",
            "magic-xz.ko.xz",
            Bad::Bytes(xz_magic_garbage),
            true,
        ),
        (
            "truncated zstd frame",
            "trunc-zst.ko.zst",
            Bad::Bytes(zst_full[..zst_full.len() / 2].to_vec()),
            true,
        ),
        (
            "corrupt gzip stream",
            "corrupt-gz.ko.gz",
            Bad::Bytes(gz_corrupt),
            true,
        ),
        (
            "xz data named .ko.zst",
            "mismatch.ko.zst",
            Bad::Bytes(xz_full.clone()),
            true,
        ),
        (
            "plain ELF named .ko.xz",
            "plain.ko.xz",
            Bad::Bytes(b.clone()),
            true,
        ),
        ("directory named dir.ko", "dir.ko", Bad::Dir, false),
        (
            "symlink loop named loop.ko",
            "loop.ko",
            Bad::SymlinkLoop,
            false,
        ),
        (
            "dangling symlink named dangling.ko",
            "dangling.ko",
            Bad::Dangling,
            false,
        ),
        (
            "symlink to an ancestor named up.ko",
            "up.ko",
            Bad::AncestorLink,
            false,
        ),
        ("FIFO named fifo.ko", "fifo.ko", Bad::Fifo, false),
    ]
}

fn make_bad(sys: &System, name: &str, bad: &Bad) -> PathBuf {
    let dir = sys.moddir().join("kernel/bad");
    fs::create_dir_all(&dir).unwrap();
    let p = dir.join(name);
    match bad {
        Bad::Bytes(b) => fs::write(&p, b).unwrap(),
        Bad::Dir => {
            fs::create_dir_all(&p).unwrap();
            fs::write(p.join("inner.ko"), m("inner").build()).unwrap();
        }
        Bad::SymlinkLoop => std::os::unix::fs::symlink(name, &p).unwrap(),
        Bad::Dangling => std::os::unix::fs::symlink("no-such-file.ko", &p).unwrap(),
        Bad::AncestorLink => std::os::unix::fs::symlink("../..", &p).unwrap(),
        Bad::Fifo => {
            let st = std::process::Command::new("mkfifo")
                .arg(&p)
                .status()
                .unwrap();
            assert!(st.success(), "mkfifo");
        }
    }
    p
}

fn depmod_run(
    sys: &System,
    config: Option<Vec<PathBuf>>,
) -> (Result<depmod::Summary, depmod::DepmodError>, Collect) {
    let mut o = DepmodOptions::new(KVER);
    o.basedir = sys.base().as_os_str().as_bytes().to_vec();
    o.config_paths = Some(config.unwrap_or_default());
    let mut sink = Collect::default();
    let mut out = Vec::new();
    let r = depmod::run(&o, &mut sink, &mut out, &NoProgress);
    (r, sink)
}

/// `modules.dep` lines, `modules.alias` and `modules.symbols` lines of the good modules,
/// and their `modules.dep.bin` entries.
fn good_view(sys: &System) -> Vec<String> {
    let md = sys.moddir();
    let mut v = Vec::new();
    for f in ["modules.dep", "modules.alias", "modules.symbols"] {
        let text = fs::read_to_string(md.join(f)).unwrap();
        v.extend(
            text.lines()
                .filter(|l| {
                    l.starts_with("kernel/good/")
                        || [" fat", " vfat", " nls", " codepage"]
                            .iter()
                            .any(|n| l.ends_with(n))
                })
                .map(|l| format!("{f}: {l}")),
        );
    }
    let dep = IndexFile::open(&md.join("modules.dep.bin")).unwrap();
    for name in ["fat", "vfat", "nls", "codepage"] {
        let val = dep.index().get_first(name.as_bytes()).unwrap().unwrap();
        v.push(format!(
            "dep.bin {name}: {}",
            String::from_utf8_lossy(val.value)
        ));
    }
    v.sort();
    v
}

// ------------------------------------------------------------------------------------
// Bad module files
// ------------------------------------------------------------------------------------

#[test]
fn depmod_indexes_every_good_module_despite_bad_files() {
    let clean = System::new(KVER);
    good_modules(&clean);
    let (r, _) = depmod_run(&clean, None);
    r.unwrap();
    let want = good_view(&clean);
    assert_eq!(
        want.iter()
            .filter(|l| l.starts_with("modules.dep: "))
            .count(),
        4
    );

    let sys = System::new(KVER);
    good_modules(&sys);
    let cases = bad_modules();
    let mut paths = Vec::new();
    for (_, name, bad, _) in &cases {
        paths.push(make_bad(&sys, name, bad));
    }
    let (r, sink) = depmod_run(&sys, None);
    let summary = r.unwrap_or_else(|e| panic!("depmod failed: {e}"));
    assert_eq!(good_view(&sys), want, "good modules indexed differently");
    let dep = fs::read_to_string(sys.moddir().join("modules.dep")).unwrap();
    assert!(
        dep.contains("kernel/bad/dir.ko/inner.ko:"),
        "a directory named .ko is walked into"
    );

    for ((label, name, _, _), path) in cases.iter().zip(&paths) {
        let shown = path.display().to_string();
        let msg = sink
            .0
            .iter()
            .find(|d| d.level <= Level::Warning && d.message.contains(&shown))
            .map(|d| format!("{}: {}", d.level, d.message));
        let listed = dep
            .lines()
            .any(|l| l.starts_with(&format!("kernel/bad/{name}:")));
        let text = match (&msg, listed) {
            (Some(m), true) => format!("{m} (listed in modules.dep)"),
            (Some(m), false) => m.clone(),
            (None, true) => "indexed as a module".to_string(),
            (None, false) => "not a module file: walked or skipped silently".to_string(),
        };
        row(label, "depmod", 0, &text);
        if let Some(m) = &msg {
            // The cause: an errno text, optionally with our detail in parentheses.
            assert!(
                m.contains(": ") && m.len() > shown.len() + 10,
                "{label}: message without a cause: {m}"
            );
        }
    }
    // Everything that cannot be parsed is reported, with its path.
    for name in [
        "empty.ko",
        "short.ko",
        "hdr.ko",
        "half.ko",
        "flip-shoff.ko",
        "class.ko",
        "data.ko",
        "shnum.ko",
        "shentsize.ko",
        "shstrndx.ko",
        "text.ko",
        "corrupt-xz.ko.xz",
        "trunc-xz.ko.xz",
        "magic-xz.ko.xz",
        "trunc-zst.ko.zst",
        "corrupt-gz.ko.gz",
        "loop.ko",
        "dangling.ko",
        "up.ko",
        "fifo.ko",
    ] {
        let p = sys
            .moddir()
            .join("kernel/bad")
            .join(name)
            .display()
            .to_string();
        assert!(
            sink.0
                .iter()
                .any(|d| d.level <= Level::Error && d.message.contains(&p)),
            "no error names {p}: {:#?}",
            sink.0
        );
    }
    assert!(summary.unreadable >= 16, "{summary:?}");
}

fn insmod_run(sys: &System, args: &[&str]) -> Outcome {
    tools::insmod(sys, &sys.kernel(), 1_000, args)
}

fn modprobe_run(sys: &System, args: &[&str]) -> Outcome {
    tools::modprobe(sys, &sys.kernel(), args)
}

/// Runs `f` on another thread; `None` if it has not finished after `secs` (the thread
/// is left behind, blocked).
fn with_timeout<T: Send + 'static>(secs: u64, f: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(Duration::from_secs(secs)).ok()
}

/// modinfo and insmod given each bad file by path, and modprobe given its module name
/// (for the ones depmod listed): never a panic, and a failure names the file and the
/// cause.
#[test]
fn tools_report_bad_module_files() {
    let sys = std::sync::Arc::new(System::new(KVER));
    good_modules(&sys);
    let cases = bad_modules();
    let mut paths = Vec::new();
    for (_, name, bad, _) in &cases {
        paths.push(make_bad(&sys, name, bad));
    }
    sys.depmod();
    let dep = fs::read_to_string(sys.moddir().join("modules.dep")).unwrap();
    let mut blocked = Vec::new();
    for ((label, name, bad, _), path) in cases.iter().zip(&paths) {
        let shown = path.display().to_string();
        let base_name = name.to_string();
        for tool in ["modinfo", "insmod"] {
            let s = sys.clone();
            let p = shown.clone();
            let r = with_timeout(10, move || match tool {
                "modinfo" => tools::modinfo(&s, &[&p]),
                _ => insmod_run(&s, &[&p]),
            });
            let Some(r) = r else {
                row(
                    label,
                    tool,
                    "-",
                    "BLOCKS (open(2) of a FIFO waits for a writer)",
                );
                blocked.push(format!("{tool} {label}"));
                release_fifo(path);
                continue;
            };
            row(label, tool, r.code, if r.code == 0 { "ok" } else { &r.err });
            if r.code != 0 {
                // The path, or (as kmod 30 prints it for modinfo) the module name taken
                // from it.
                let stem = base_name.split('.').next().unwrap().replace('-', "_");
                assert!(
                    r.err.contains(&shown) || r.err.contains(&format!("'{stem}'")),
                    "{tool} {label}: message does not name the file: {}",
                    r.err
                );
            }
            if matches!(bad, Bad::Bytes(_)) && r.code != 0 {
                assert!(
                    r.err.contains(": "),
                    "{tool} {label}: message without a cause: {}",
                    r.err
                );
            }
            let _ = r.out;
        }
        // By name, through the index, for the files depmod listed.
        if dep
            .lines()
            .any(|l| l.starts_with(&format!("kernel/bad/{name}:")))
        {
            let modname = name.split('.').next().unwrap().replace('-', "_");
            let s = sys.clone();
            let Some(r) = with_timeout(10, move || modprobe_run(&s, &[&modname])) else {
                row(label, "modprobe NAME", "-", "BLOCKS");
                blocked.push(format!("modprobe {label}"));
                continue;
            };
            row(
                label,
                "modprobe NAME",
                r.code,
                if r.code == 0 { "ok" } else { &r.err },
            );
            if r.code != 0 {
                assert!(
                    r.err.contains(&base_name) || r.err.contains("could not"),
                    "modprobe {label}: {}",
                    r.err
                );
            }
        }
    }
    // Only a FIFO may block (kmod 30 blocks there too): reported, not hidden.
    assert!(
        blocked.iter().all(|b| b.contains("FIFO")),
        "blocked: {blocked:?}"
    );
}

// ------------------------------------------------------------------------------------
// Configuration
// ------------------------------------------------------------------------------------

const DEPMOD_D_BAD: &[(&str, &str)] = &[
    ("override with 2 arguments", "override fat *\n"),
    ("override with 1 argument", "override\n"),
    ("external with 1 argument", "external 6.1\n"),
    ("unknown command", "frobnicate all the things\n"),
    ("indented comment", "  # not a comment for depmod\n"),
    (
        "kver regex that does not compile",
        "override fat ([ extra\n",
    ),
    (
        "include (not implemented)",
        "include /etc/depmod.d/other.conf\n",
    ),
    ("make_map_files (not implemented)", "make_map_files yes\n"),
    ("non-UTF-8 bytes", "s\u{e9}arch \u{ff}\n"),
    ("NUL byte in a line", "search a\0b\n"),
    ("continuation at end of file", "search updates \\"),
    ("1 MiB line", "LONG"),
];

#[test]
fn depmod_d_malformed_lines() {
    for (label, text) in DEPMOD_D_BAD {
        let sys = System::new(KVER);
        good_modules(&sys);
        let conf = sys.path("/etc/depmod.d");
        fs::create_dir_all(&conf).unwrap();
        let body: Vec<u8> = if *text == "LONG" {
            let mut v = b"override ".to_vec();
            v.extend(vec![b'x'; 1 << 20]);
            v.extend_from_slice(b"\n");
            v
        } else {
            text.as_bytes().to_vec()
        };
        fs::write(conf.join("bad.conf"), body).unwrap();
        let (r, sink) = depmod_run(&sys, Some(vec![conf.clone()]));
        let s = r.unwrap_or_else(|e| panic!("{label}: depmod failed: {e}"));
        assert_eq!(s.modules, 4, "{label}");
        let msg = sink
            .0
            .iter()
            .find(|d| d.message.contains("bad.conf"))
            .map(|d| format!("{}: {}", d.level, d.message))
            .unwrap_or_else(|| "(accepted silently)".into());
        row(label, "depmod (depmod.d)", 0, &msg);
        if msg.contains("bad.conf") {
            assert!(msg.contains("bad.conf:1"), "{label}: line number: {msg}");
        }
    }
}

const MODPROBE_D_BAD: &[(&str, &str)] = &[
    ("alias with one argument", "alias fs-fat\n"),
    ("alias with an unbalanced bracket", "alias fs-[fat fat\n"),
    ("options without options", "options fat\n"),
    ("install without a command", "install fat\n"),
    ("remove without a command", "remove fat\n"),
    ("softdep without dependencies", "softdep fat\n"),
    ("blacklist without a name", "blacklist\n"),
    ("weakdep (kmod 30 does not know it)", "weakdep fat vfat\n"),
    ("unknown command", "frobnicate fat\n"),
    ("include (deprecated)", "include /etc/other.conf\n"),
    ("config (deprecated)", "config x\n"),
    ("non-UTF-8 module name", "options f\u{ff}t x=1\n"),
    ("NUL byte", "options fat a=1\0 b=2\n"),
    ("continuation at end of file", "options fat a=1 \\"),
];

#[test]
fn modprobe_d_malformed_lines() {
    for (label, text) in MODPROBE_D_BAD {
        let sys = System::new(KVER);
        good_modules(&sys);
        sys.depmod();
        sys.write("/etc/modprobe.d/bad.conf", text);
        let r = modprobe_run(&sys, &["-c"]);
        row(
            label,
            "modprobe -c (modprobe.d)",
            r.code,
            if r.err.is_empty() {
                "(accepted silently)"
            } else {
                &r.err
            },
        );
        assert_eq!(r.code, 0, "{label}: {}", r.err);
        if !r.err.is_empty() {
            assert!(
                r.err.contains("/etc/modprobe.d/bad.conf"),
                "{label}: message does not name the file: {}",
                r.err
            );
        }
        // The good configuration still works: the module loads.
        let r = modprobe_run(&sys, &["vfat"]);
        assert_eq!(r.code, 0, "{label}: modprobe vfat: {}", r.err);
    }
}

// ------------------------------------------------------------------------------------
// Index files
// ------------------------------------------------------------------------------------

fn damaged_index(kind: &str, good: &[u8]) -> Vec<u8> {
    match kind {
        "zero-length" => Vec::new(),
        "11 bytes" => good[..11].to_vec(),
        "bad magic" => {
            let mut v = good.to_vec();
            v[0] ^= 0xFF;
            v
        }
        "major version 3" => {
            let mut v = good.to_vec();
            v[5] = 3;
            v
        }
        "cut at half" => good[..good.len() / 2].to_vec(),
        "root reference past the end" => {
            let mut v = good.to_vec();
            v[8..12].copy_from_slice(&0x2FFF_FFFFu32.to_be_bytes());
            v
        }
        _ => unreachable!(),
    }
}

#[test]
fn index_files_cut_short_or_with_bad_magic() {
    let kinds = [
        "zero-length",
        "11 bytes",
        "bad magic",
        "major version 3",
        "cut at half",
        "root reference past the end",
    ];
    let files = [
        ("modules.dep.bin", &["vfat"][..]),
        ("modules.alias.bin", &["fs-vfat"][..]),
        ("modules.symbols.bin", &["symbol:fat_get"][..]),
        ("modules.builtin.bin", &["ext4"][..]),
        ("modules.builtin.alias.bin", &["fs-ext4"][..]),
    ];
    for (file, queries) in files {
        for kind in kinds {
            let sys = System::new(KVER);
            good_modules(&sys);
            sys.builtin(&["kernel/fs/ext4/ext4.ko"], &["ext4.alias=fs-ext4"]);
            sys.depmod();
            let p = sys.path(&format!("{MD}/{file}"));
            let good = fs::read(&p).unwrap();
            fs::write(&p, damaged_index(kind, &good)).unwrap();
            let input = format!("{file}: {kind}");
            for q in queries {
                let r = modprobe_run(&sys, &[q]);
                row(
                    &input,
                    &format!("modprobe {q}"),
                    r.code,
                    if r.code == 0 && r.err.is_empty() {
                        "ok"
                    } else {
                        &r.err
                    },
                );
                if !r.err.is_empty() {
                    assert!(
                        r.err.contains(file)
                            || r.err.contains("not found")
                            || r.err.contains("could not"),
                        "{input}: modprobe {q}: {}",
                        r.err
                    );
                }
                let r = tools::modinfo(&sys, &[q]);
                row(
                    &input,
                    &format!("modinfo {q}"),
                    r.code,
                    if r.code == 0 && r.err.is_empty() {
                        "ok"
                    } else {
                        &r.err
                    },
                );
            }
            let r = modprobe_run(&sys, &["-c"]);
            row(
                &input,
                "modprobe -c",
                r.code,
                if r.err.is_empty() { "ok" } else { &r.err },
            );
        }
    }
}

/// `modules.dep.bin` of the standard tree with `vfat`'s entry replaced by `path`, and
/// a module named `evil` outside the module directory.
fn tree_with_dep_entry(path: &str) -> System {
    let sys = System::new(KVER);
    good_modules(&sys);
    sys.depmod();
    sys.write("/tmp/evil.ko", m("evil").build());
    let mut b = modcore::index::IndexBuilder::new();
    b.insert(b"vfat", format!("{path}:").as_bytes(), 0);
    fs::write(
        sys.path(&format!("{MD}/modules.dep.bin")),
        b.write(modcore::index::Layout::PostOrder).unwrap(),
    )
    .unwrap();
    sys
}

/// A relative module path in modules.dep that climbs out of the module directory is
/// never opened.
#[test]
fn index_path_leaving_the_module_directory_is_refused() {
    let sys = tree_with_dep_entry("../../../tmp/evil.ko");
    let k = sys.kernel();
    let Outcome { code, err, .. } = tools::modprobe(&sys, &k, &["vfat"]);
    row(
        "modules.dep.bin entry ../../../tmp/evil.ko for vfat",
        "modprobe vfat",
        code,
        &err,
    );
    assert_ne!(code, 0);
    assert!(k.calls().is_empty(), "{:?}", k.calls());
    assert!(err.contains("../../../tmp/evil.ko"), "{err}");
}

/// An absolute path is how depmod records modules of `external` directories, so it is
/// followed (as kmod does); but a path whose file name is another module's (`vfat` →
/// `/tmp/evil.ko`) can only come from a damaged or forged index and should be refused:
/// depmod always derives the key from the file name.
#[test]
fn index_path_naming_another_module_is_refused() {
    let sys = tree_with_dep_entry("/tmp/evil.ko");
    let k = sys.kernel();
    let Outcome { code, err, .. } = tools::modprobe(&sys, &k, &["vfat"]);
    assert_ne!(code, 0, "{err}");
    assert!(k.loaded().is_empty(), "loaded {:?}", k.loaded());
}

/// insmod on a FIFO named `*.ko` waits forever in open(2) (kmod 30 too). Opening module
/// files with O_NONBLOCK (or refusing non-regular files after fstat) would make it fail
/// with EINVAL instead, as depmod already reports FIFOs.
#[test]
fn insmod_does_not_block_on_a_fifo() {
    let sys = std::sync::Arc::new(System::new(KVER));
    let p = make_bad(&sys, "fifo.ko", &Bad::Fifo);
    let shown = p.display().to_string();
    let s = sys.clone();
    let r = with_timeout(10, move || insmod_run(&s, &[&shown]));
    release_fifo(&p);
    let r = r.expect("insmod blocked on a FIFO");
    assert_eq!(r.code, 1);
}

/// modinfo given a name while modules.dep.bin is damaged says "Module vfat not found."
/// (kmod 30 says only that), then a note naming the index file and the cause.
#[test]
fn modinfo_names_a_damaged_index() {
    let sys = System::new(KVER);
    good_modules(&sys);
    sys.depmod();
    fs::write(
        sys.path(&format!("{MD}/modules.dep.bin")),
        b"garbage!garbage!",
    )
    .unwrap();
    let r = tools::modinfo(&sys, &["vfat", "fat"]);
    assert_eq!(r.code, 1);
    let lines: Vec<&str> = r.err.lines().collect();
    assert_eq!(
        lines[0], "modinfo: ERROR: Module vfat not found.",
        "{}",
        r.err
    );
    assert!(
        lines[1].starts_with("modinfo: NOTE: ")
            && lines[1].contains("modules.dep.bin could not be used (magic check fail"),
        "{}",
        r.err
    );
    // Named once, not after every operand.
    assert_eq!(
        lines[2], "modinfo: ERROR: Module fat not found.",
        "{}",
        r.err
    );
    assert_eq!(lines.len(), 3, "{}", r.err);

    // A missing index is not damaged: kmod's message only.
    fs::remove_file(sys.path(&format!("{MD}/modules.dep.bin"))).unwrap();
    let r = tools::modinfo(&sys, &["vfat"]);
    assert_eq!(r.err, "modinfo: ERROR: Module vfat not found.\n");
}

/// Lets a thread blocked opening the FIFO `p` for reading go on: open it for writing
/// (which does not block once there is a reader) and close it at once.
fn release_fifo(p: &Path) {
    for _ in 0..50 {
        if fs::OpenOptions::new()
            .write(true)
            .custom_flags(0o4000) // O_NONBLOCK: fails with ENXIO while no reader waits
            .open(p)
            .is_ok()
        {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
