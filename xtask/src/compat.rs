//! `cargo xtask compat`: run kmod 30 and our tools on real Debian kernel trees and compare
//! their outputs byte for byte.
//!
//! Tree variants (labels accepted by `--tree`):
//!
//! | label       | modules                                   | reference                     |
//! |-------------|-------------------------------------------|-------------------------------|
//! | `6.1-cloud` | the 6.1 cloud package as shipped (`.ko`)  | kmod 30 on the same tree      |
//! | `6.12-xz`   | the 6.12 package as shipped (`.ko.xz`)    | kmod 30 on the same tree      |
//! | `6.12-zst`  | 6.12 recompressed with zstd (`.ko.zst`)   | kmod 30 on the same tree      |
//! | `6.12-ko`   | 6.12 decompressed (`.ko`)                 | kmod 30 on the same tree      |
//! | `6.12-gz`   | 6.12 recompressed with gzip (`.ko.gz`)    | kmod 30 on `6.12-xz`, with `.ko.xz` rewritten to `.ko.gz` (kmod 30 cannot read `.ko.gz`) |
//!
//! Derived trees are built once under `<cache>/derived/<kver>/` and reused. Every run works
//! on fresh copies under `<cache>/compat/run-<pid>/<label>/{kmod,ours}` (module files
//! hard-linked, everything else copied, no generated index files), removed afterwards; with
//! `--keep` they stay until the next `compat` run starts.
//!
//! Results are a flat list of [`Check`]s (tree × item → outcome) printed as one table.
//! `depmod_section` fills the depmod rows; runtime-tool comparisons (modprobe
//! `--show-depends`, modinfo, ...) belong in further `*_section` functions called from
//! `run_variant`, using [`TreeCtx::kmod_root`] / [`TreeCtx::ours_root`], which hold the
//! trees as indexed by kmod and by us.
//!
//! "Ours" is `target/release/depmod` (built with `cargo build --release -p depmod`), unless
//! `--ours PATH` or `KMODRS_COMPAT_OURS=PATH` names another binary or a directory holding
//! the tools (e.g. `<cache>/bin` to test this harness with kmod against itself).

use crate::refs::{self, KernelTree, Refs};
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering as AtomicOrdering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Files both kmod 30 and we must write, in the order depmod writes them (spec §9.1).
pub const DEPMOD_OUTPUTS: [&str; 10] = [
    "modules.dep",
    "modules.dep.bin",
    "modules.alias",
    "modules.alias.bin",
    "modules.softdep",
    "modules.symbols",
    "modules.symbols.bin",
    "modules.builtin.bin",
    "modules.builtin.alias.bin",
    "modules.devname",
];
/// Written by us (kmod 33+ behaviour) but never by kmod 30.
pub const DEPMOD_OURS_ONLY: [&str; 1] = ["modules.weakdep"];
/// depmod inputs kept when copying a tree; every other top-level `modules.*` is dropped.
const DEPMOD_INPUTS: [&str; 3] = [
    "modules.order",
    "modules.builtin",
    "modules.builtin.modinfo",
];

/// One cell of the result table.
pub struct Check {
    pub tree: String,
    pub item: String,
    pub outcome: Outcome,
}

/// The result of one comparison: pass/fail, a short table cell and optional details.
pub struct Outcome {
    pub pass: bool,
    pub cell: String,
    pub detail: Option<String>,
}

impl Outcome {
    pub fn identical() -> Self {
        Self::pass("identical", None)
    }
    pub fn pass(cell: &str, detail: Option<String>) -> Self {
        Outcome {
            pass: true,
            cell: cell.into(),
            detail,
        }
    }
    pub fn fail(cell: &str, detail: impl Into<String>) -> Self {
        Outcome {
            pass: false,
            cell: cell.into(),
            detail: Some(detail.into()),
        }
    }
}

/// How a variant's module tree is made.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Source {
    /// The kernel package as unpacked by `refs`.
    Pristine,
    /// All modules decompressed to plain `.ko`.
    Plain,
    /// All modules recompressed with the given tool.
    Zstd,
    Gzip,
}

struct Variant {
    label: &'static str,
    /// Index into `Refs::trees`.
    tree: usize,
    source: Source,
    /// The reference is kmod run on this other source, with `.ko.xz` → `.ko.gz` rewritten.
    reference_from_xz: bool,
}

const VARIANTS: [Variant; 5] = [
    Variant {
        label: "6.1-cloud",
        tree: 0,
        source: Source::Pristine,
        reference_from_xz: false,
    },
    Variant {
        label: "6.12-xz",
        tree: 1,
        source: Source::Pristine,
        reference_from_xz: false,
    },
    Variant {
        label: "6.12-zst",
        tree: 1,
        source: Source::Zstd,
        reference_from_xz: false,
    },
    Variant {
        label: "6.12-ko",
        tree: 1,
        source: Source::Plain,
        reference_from_xz: false,
    },
    Variant {
        label: "6.12-gz",
        tree: 1,
        source: Source::Gzip,
        reference_from_xz: true,
    },
];

const USAGE: &str = "usage: cargo xtask compat [--tree LABEL[,LABEL...]]... [--keep] [--ours PATH]
  PATH (or KMODRS_COMPAT_OURS): our depmod binary, or a directory holding it
  labels: ";

struct Options {
    trees: Vec<String>,
    keep: bool,
    ours: Option<PathBuf>,
}

fn parse_args(args: &[String]) -> Result<Options, String> {
    let mut o = Options {
        trees: Vec::new(),
        keep: false,
        ours: std::env::var_os("KMODRS_COMPAT_OURS")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from),
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--keep" => o.keep = true,
            "--tree" => {
                let v = it.next().ok_or("--tree needs a label")?;
                o.trees.extend(v.split(',').map(String::from));
            }
            "--ours" => o.ours = Some(PathBuf::from(it.next().ok_or("--ours needs a path")?)),
            "-h" | "--help" => return Err(format!("{USAGE}{}", labels())),
            other => return Err(format!("unknown argument {other:?} (try --help)")),
        }
    }
    for t in &o.trees {
        if !VARIANTS.iter().any(|v| v.label == t) {
            return Err(format!("unknown tree {t:?}; known: {}", labels()));
        }
    }
    Ok(o)
}

fn labels() -> String {
    VARIANTS
        .iter()
        .map(|v| v.label)
        .collect::<Vec<_>>()
        .join(", ")
}

fn log(msg: &str) {
    eprintln!("compat: {msg}");
}

/// Our tools: the depmod binary to test and the directory other tools would come from.
struct Ours {
    depmod: PathBuf,
}

impl Ours {
    fn locate(opt: Option<PathBuf>) -> Result<Self, String> {
        if let Some(p) = opt {
            let depmod = if p.is_dir() { p.join("depmod") } else { p };
            if !depmod.is_file() {
                return Err(format!("{}: no such file", depmod.display()));
            }
            return Ok(Ours { depmod });
        }
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        log("building ours: cargo build --release -p depmod");
        let status = Command::new(cargo)
            .current_dir(refs::workspace_root())
            .args(["build", "--release", "-p", "depmod"])
            .stdin(Stdio::null())
            .status()
            .map_err(|e| format!("cargo build: {e}"))?;
        if !status.success() {
            return Err(format!("cargo build --release -p depmod failed: {status}"));
        }
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| refs::workspace_root().join("target"));
        let depmod = target.join("release/depmod");
        if !depmod.is_file() {
            return Err(format!("{} was not built", depmod.display()));
        }
        Ok(Ours { depmod })
    }
}

pub fn run(args: &[String]) -> Result<(), String> {
    let opts = parse_args(args)?;
    let refs = refs::ensure()?;
    let ours = Ours::locate(opts.ours.clone())?;
    let selected: Vec<&Variant> = VARIANTS
        .iter()
        .filter(|v| opts.trees.is_empty() || opts.trees.iter().any(|t| t == v.label))
        .collect();

    prune_derived(&refs)?;
    let work = prepare_work_dir(&refs.cache.join("compat"))?;
    let empty_conf = work.join("empty-depmod.d");
    fs::create_dir_all(&empty_conf).map_err(|e| format!("create {}: {e}", empty_conf.display()))?;

    let mut checks = Vec::new();
    let mut timings = Vec::new();
    for v in &selected {
        let tree = &refs.trees[v.tree];
        let started = Instant::now();
        let source_root = match prepare_source(&refs, tree, v.source) {
            Ok(r) => r,
            Err(e) => {
                checks.push(Check {
                    tree: v.label.into(),
                    item: "tree".into(),
                    outcome: Outcome::fail("ERROR", e),
                });
                continue;
            }
        };
        let ctx = TreeCtx {
            label: v.label,
            kver: &tree.kver,
            kmod_root: work.join(v.label).join("kmod"),
            ours_root: work.join(v.label).join("ours"),
            empty_conf: &empty_conf,
        };
        let ref_source = if v.reference_from_xz {
            tree.root.clone()
        } else {
            source_root.clone()
        };
        log(&format!(
            "{}: {} modules in {}",
            v.label,
            refs::count_modules(&source_root.join("lib/modules").join(&tree.kver))?,
            source_root.display()
        ));
        let result = run_variant(
            &refs,
            &ours,
            &ctx,
            &ref_source,
            &source_root,
            v.reference_from_xz,
            &mut checks,
        );
        match result {
            Ok(t) => timings.push((v, t)),
            Err(e) => checks.push(Check {
                tree: v.label.into(),
                item: "harness".into(),
                outcome: Outcome::fail("ERROR", e),
            }),
        }
        if opts.keep {
            log(&format!(
                "{}: kept {}",
                v.label,
                work.join(v.label).display()
            ));
        } else {
            let _ = fs::remove_dir_all(work.join(v.label));
        }
        log(&format!(
            "{}: done in {:.1}s",
            v.label,
            started.elapsed().as_secs_f64()
        ));
    }

    if !opts.keep {
        let _ = fs::remove_dir_all(&work);
    }
    println!(
        "compat: kmod 30 ({}) vs ours ({})",
        refs.tool("depmod").display(),
        ours.depmod.display()
    );
    let failed = print_table(&checks);
    println!("timing (wall clock):");
    for (v, t) in &timings {
        println!(
            "  {:<10} depmod: kmod {:>6.2}s   ours {:>6.2}s{}",
            v.label,
            t.kmod.as_secs_f64(),
            t.ours.as_secs_f64(),
            if v.reference_from_xz {
                "   (kmod ran on the .ko.xz tree)"
            } else {
                ""
            }
        );
    }
    if failed > 0 {
        Err(format!("{failed} of {} checks failed", checks.len()))
    } else {
        println!("all {} checks passed", checks.len());
        Ok(())
    }
}

/// Everything a comparison section needs for one tree variant.
pub struct TreeCtx<'a> {
    pub label: &'static str,
    pub kver: &'a str,
    /// Base dir (`-b`) of the copy indexed by kmod 30 (for the gz variant: the xz tree with
    /// the outputs rewritten to `.ko.gz`).
    pub kmod_root: PathBuf,
    /// Base dir (`-b`) of the copy indexed by our depmod.
    pub ours_root: PathBuf,
    /// An empty depmod.d passed as `-C` so the host's /etc/depmod.d is not read (§1.3).
    pub empty_conf: &'a Path,
}

impl TreeCtx<'_> {
    pub fn kmod_moddir(&self) -> PathBuf {
        self.kmod_root.join("lib/modules").join(self.kver)
    }
    pub fn ours_moddir(&self) -> PathBuf {
        self.ours_root.join("lib/modules").join(self.kver)
    }
    fn check(&self, item: &str, outcome: Outcome) -> Check {
        Check {
            tree: self.label.into(),
            item: item.into(),
            outcome,
        }
    }
}

struct Timing {
    kmod: Duration,
    ours: Duration,
}

fn run_variant(
    refs: &Refs,
    ours: &Ours,
    ctx: &TreeCtx<'_>,
    ref_source: &Path,
    ours_source: &Path,
    reference_from_xz: bool,
    checks: &mut Vec<Check>,
) -> Result<Timing, String> {
    let _ = fs::remove_dir_all(ctx.kmod_root.parent().unwrap_or(&ctx.kmod_root));
    let moddir = |root: &Path| root.join("lib/modules").join(ctx.kver);
    copy_tree(
        &moddir(ref_source),
        &ctx.kmod_moddir(),
        CopyMode::LinkModules,
    )?;
    copy_tree(
        &moddir(ours_source),
        &ctx.ours_moddir(),
        CopyMode::LinkModules,
    )?;
    // Both runs should start with the module files in the page cache, so that neither pays
    // for the first read (the copies share the files' inodes with their sources).
    warm_page_cache(&ctx.kmod_moddir())?;
    warm_page_cache(&ctx.ours_moddir())?;
    let timing = depmod_section(refs, ours, ctx, reference_from_xz, checks)?;
    // Further sections (modprobe --show-depends, modinfo, ...) go here; they can use the
    // indexes both depmods have just written into ctx.kmod_root and ctx.ours_root.
    Ok(timing)
}

/// Result of one tool run.
struct Run {
    code: Option<i32>,
    stderr: String,
    time: Duration,
}

fn run_timed(cmd: &mut Command) -> Result<Run, String> {
    let started = Instant::now();
    let out = cmd
        .env("LC_ALL", "C")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{cmd:?}: {e}"))?;
    Ok(Run {
        code: out.status.code(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        time: started.elapsed(),
    })
}

fn depmod_cmd(bin: &Path, root: &Path, ctx: &TreeCtx<'_>) -> Command {
    let mut c = Command::new(bin);
    c.arg("-C")
        .arg(ctx.empty_conf)
        .arg("-b")
        .arg(root)
        .arg(ctx.kver);
    c
}

/// Run both depmods and compare every output file, stderr and the exit code.
fn depmod_section(
    refs: &Refs,
    ours: &Ours,
    ctx: &TreeCtx<'_>,
    reference_from_xz: bool,
    checks: &mut Vec<Check>,
) -> Result<Timing, String> {
    log(&format!("{}: kmod depmod", ctx.label));
    let kmod_run = run_timed(&mut depmod_cmd(&refs.tool("depmod"), &ctx.kmod_root, ctx))?;
    log(&format!("{}: our depmod", ctx.label));
    let ours_run = run_timed(&mut depmod_cmd(&ours.depmod, &ctx.ours_root, ctx))?;

    let kmod_dir = ctx.kmod_moddir();
    let ours_dir = ctx.ours_moddir();
    let mut kmod_stderr = kmod_run
        .stderr
        .replace(&*ctx.kmod_root.to_string_lossy(), "<ROOT>");
    if reference_from_xz {
        kmod_stderr = kmod_stderr.replace(".ko.xz", ".ko.gz");
        if let Err(e) = rewrite_xz_as_gz(&kmod_dir) {
            checks.push(ctx.check("reference", Outcome::fail("ERROR", e)));
        }
    }
    let ours_stderr = ours_run
        .stderr
        .replace(&*ctx.ours_root.to_string_lossy(), "<ROOT>");

    for name in DEPMOD_OUTPUTS {
        let k = fs::read(kmod_dir.join(name)).ok();
        let o = fs::read(ours_dir.join(name)).ok();
        let outcome = match (k, o) {
            (Some(k), Some(o)) => compare_bytes(&k, &o, !name.ends_with(".bin")),
            (Some(_), None) => Outcome::fail("MISSING", "not written by ours"),
            (None, Some(_)) => Outcome::fail("DIFFERS", "written by ours but not by kmod 30"),
            (None, None) => Outcome::fail("MISSING", "written by neither"),
        };
        checks.push(ctx.check(name, outcome));
    }
    for name in DEPMOD_OURS_ONLY {
        let k = kmod_dir.join(name).exists();
        let outcome = match fs::read(ours_dir.join(name)) {
            Ok(_) if k => Outcome::fail("DIFFERS", "kmod 30 wrote it too (unexpected)"),
            Ok(data) => Outcome::pass(
                "ours only",
                Some(format!(
                    "not written by kmod 30; ours has {} lines",
                    data.iter().filter(|&&b| b == b'\n').count()
                )),
            ),
            Err(_) => Outcome::fail("MISSING", "not written by ours"),
        };
        checks.push(ctx.check(name, outcome));
    }
    // Nothing else may appear next to the outputs (e.g. leftover temporary files).
    let mut unexpected = Vec::new();
    for (who, dir) in [("kmod", &kmod_dir), ("ours", &ours_dir)] {
        let entries = fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        for e in entries.filter_map(Result::ok) {
            let n = e.file_name().to_string_lossy().into_owned();
            let known = DEPMOD_OUTPUTS.contains(&n.as_str())
                || DEPMOD_OURS_ONLY.contains(&n.as_str())
                || DEPMOD_INPUTS.contains(&n.as_str())
                || !n.starts_with("modules.");
            if !known {
                unexpected.push(format!("{who}: {n}"));
            }
        }
    }
    checks.push(ctx.check(
        "other files",
        if unexpected.is_empty() {
            Outcome::pass("none", None)
        } else {
            Outcome::fail("DIFFERS", format!("unexpected: {}", unexpected.join(", ")))
        },
    ));
    checks.push(ctx.check("stderr", compare_stderr(&kmod_stderr, &ours_stderr)));
    checks.push(ctx.check(
        "exit code",
        if kmod_run.code == ours_run.code {
            Outcome::pass(&fmt_code(kmod_run.code), None)
        } else {
            Outcome::fail(
                "DIFFERS",
                format!(
                    "kmod {}, ours {}",
                    fmt_code(kmod_run.code),
                    fmt_code(ours_run.code)
                ),
            )
        },
    ));
    Ok(Timing {
        kmod: kmod_run.time,
        ours: ours_run.time,
    })
}

fn fmt_code(c: Option<i32>) -> String {
    c.map_or_else(|| "signal".into(), |c| c.to_string())
}

/// Byte comparison with a description of the first difference.
fn compare_bytes(kmod: &[u8], ours: &[u8], text: bool) -> Outcome {
    if kmod == ours {
        return Outcome::identical();
    }
    let at = kmod
        .iter()
        .zip(ours)
        .position(|(a, b)| a != b)
        .unwrap_or(kmod.len().min(ours.len()));
    let mut d = format!(
        "first difference at byte {at} (kmod {} bytes, ours {} bytes)",
        kmod.len(),
        ours.len()
    );
    if text {
        let line_no = kmod[..at].iter().filter(|&&b| b == b'\n').count() + 1;
        let line = |data: &[u8]| {
            let start = data[..at.min(data.len())]
                .iter()
                .rposition(|&b| b == b'\n')
                .map_or(0, |p| p + 1);
            let rest = &data[start.min(data.len())..];
            let end = rest.iter().position(|&b| b == b'\n').unwrap_or(rest.len());
            let mut s = String::from_utf8_lossy(&rest[..end]).into_owned();
            if s.len() > 120 {
                let mut cut = 120;
                while !s.is_char_boundary(cut) {
                    cut -= 1;
                }
                s.truncate(cut);
                s.push_str("...");
            }
            s
        };
        d.push_str(&format!(
            ", line {line_no}:\n      kmod: {:?}\n      ours: {:?}",
            line(kmod),
            line(ours)
        ));
    }
    Outcome::fail("DIFFERS", d)
}

/// Diagnostics counted per level (`prog: LEVEL: message`, spec §1.5).
fn level_counts(stderr: &str) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for line in stderr.lines() {
        let level = line
            .split(": ")
            .nth(1)
            .filter(|l| ["FATAL", "ERROR", "WARNING", "NOTICE", "INFO", "DEBUG"].contains(l))
            .unwrap_or("other");
        *m.entry(level.to_string()).or_insert(0) += 1;
    }
    m
}

/// Rough stderr comparison: identical text passes; equal line counts per level pass with a
/// note; different counts fail.
fn compare_stderr(kmod: &str, ours: &str) -> Outcome {
    let describe = |m: &BTreeMap<String, usize>| {
        if m.is_empty() {
            "nothing".to_string()
        } else {
            m.iter()
                .map(|(k, v)| format!("{v} {k}"))
                .collect::<Vec<_>>()
                .join(", ")
        }
    };
    let (ck, co) = (level_counts(kmod), level_counts(ours));
    let n = kmod.lines().count();
    if kmod == ours {
        let detail = (n > 0).then(|| format!("both: {}", describe(&ck)));
        return Outcome::pass(&format!("identical ({n})"), detail);
    }
    let first = kmod
        .lines()
        .zip(ours.lines())
        .find(|(a, b)| a != b)
        .map(|(a, b)| format!("\n      kmod: {a:?}\n      ours: {b:?}"))
        .unwrap_or_default();
    let detail = format!("kmod: {}; ours: {}{first}", describe(&ck), describe(&co));
    if ck == co {
        Outcome::pass("same counts", Some(detail))
    } else {
        Outcome::fail("DIFFERS", detail)
    }
}

/// Turn kmod's outputs for the `.ko.xz` tree into the expected outputs for the same tree
/// recompressed as `.ko.gz`. The suffixes have the same length, module order does not depend
/// on them (§3.4, §5.2) and index node placement depends only on key shape and value
/// lengths (§8.5), so a byte substitution is exact. Only modules.dep and modules.dep.bin
/// carry paths; the substitution count in the .bin must match the text.
fn rewrite_xz_as_gz(moddir: &Path) -> Result<(), String> {
    let mut text_count = None;
    for name in ["modules.dep", "modules.dep.bin"] {
        let path = moddir.join(name);
        let data = fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let (out, n) = replace_all(&data, b".ko.xz", b".ko.gz");
        match text_count {
            None => text_count = Some(n),
            Some(t) if t != n => {
                return Err(format!(
                    "suffix rewrite: {n} occurrences in {name} but {t} in modules.dep"
                ))
            }
            Some(_) => {}
        }
        fs::write(&path, out).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    // The other outputs must not mention module paths at all.
    for name in DEPMOD_OUTPUTS {
        if let Ok(data) = fs::read(moddir.join(name)) {
            if replace_all(&data, b".ko.xz", b".ko.gz").1 > 0 {
                return Err(format!("suffix rewrite: unexpected .ko.xz in {name}"));
            }
        }
    }
    Ok(())
}

fn replace_all(data: &[u8], from: &[u8], to: &[u8]) -> (Vec<u8>, usize) {
    let mut out = Vec::with_capacity(data.len());
    let mut n = 0;
    let mut i = 0;
    while i < data.len() {
        if data[i..].starts_with(from) {
            out.extend_from_slice(to);
            i += from.len();
            n += 1;
        } else {
            out.push(data[i]);
            i += 1;
        }
    }
    (out, n)
}

/// Print the tree × item table and the details of every cell that has any. Returns the
/// number of failed checks.
fn print_table(checks: &[Check]) -> usize {
    let mut trees: Vec<&str> = Vec::new();
    let mut items: Vec<&str> = Vec::new();
    for c in checks {
        if !trees.contains(&c.tree.as_str()) {
            trees.push(&c.tree);
        }
        if !items.contains(&c.item.as_str()) {
            items.push(&c.item);
        }
    }
    let cell = |t: &str, i: &str| {
        checks
            .iter()
            .find(|c| c.tree == t && c.item == i)
            .map_or("-", |c| c.outcome.cell.as_str())
    };
    let w0 = items.iter().map(|i| i.len()).max().unwrap_or(4).max(4);
    let widths: Vec<usize> = trees
        .iter()
        .map(|t| {
            items
                .iter()
                .map(|i| cell(t, i).len())
                .chain([t.len()])
                .max()
                .unwrap_or(1)
        })
        .collect();
    let mut header = format!("{:<w0$}", "file");
    for (t, w) in trees.iter().zip(&widths) {
        header.push_str(&format!("  {t:<w$}"));
    }
    println!("{}", header.trim_end());
    println!("{}", "-".repeat(header.trim_end().len()));
    for i in &items {
        let mut row = format!("{i:<w0$}");
        for (t, w) in trees.iter().zip(&widths) {
            row.push_str(&format!("  {:<w$}", cell(t, i)));
        }
        println!("{}", row.trim_end());
    }
    let mut failed = 0;
    let details: Vec<&Check> = checks
        .iter()
        .filter(|c| c.outcome.detail.is_some())
        .collect();
    if !details.is_empty() {
        println!("details:");
    }
    for c in details {
        let mark = if c.outcome.pass { "note" } else { "FAIL" };
        println!(
            "  [{mark}] {} {}: {}",
            c.tree,
            c.item,
            c.outcome.detail.as_deref().unwrap_or("")
        );
    }
    for c in checks {
        if !c.outcome.pass {
            failed += 1;
        }
    }
    failed
}

// ---------------------------------------------------------------------------------------
// Trees: copies and derived (recompressed) variants

#[derive(Clone, Copy, PartialEq, Eq)]
enum CopyMode {
    /// Copy every file.
    Copy,
    /// Hard-link module files (depmod only reads them), copy everything else.
    LinkModules,
}

/// Copy MODDIR `src` to `dst` (which must not exist), leaving out generated index files
/// at the top level. Symlinks are recreated as symlinks.
fn copy_tree(src: &Path, dst: &Path, mode: CopyMode) -> Result<(), String> {
    fn walk(src: &Path, dst: &Path, mode: CopyMode, top: bool) -> Result<(), String> {
        fs::create_dir_all(dst).map_err(|e| format!("create {}: {e}", dst.display()))?;
        for e in fs::read_dir(src).map_err(|e| format!("{}: {e}", src.display()))? {
            let e = e.map_err(|e| format!("{}: {e}", src.display()))?;
            let name = e.file_name();
            let n = name.to_string_lossy();
            if top && n.starts_with("modules.") && !DEPMOD_INPUTS.contains(&&*n) {
                continue;
            }
            if n == ".complete" {
                continue;
            }
            let (s, d) = (e.path(), dst.join(&name));
            let ft = e.file_type().map_err(|e| format!("{}: {e}", s.display()))?;
            let res = if ft.is_dir() {
                walk(&s, &d, mode, false).map(|()| 0)
            } else if ft.is_symlink() {
                fs::read_link(&s)
                    .and_then(|t| std::os::unix::fs::symlink(t, &d))
                    .map(|()| 0)
                    .map_err(|e| format!("symlink {}: {e}", d.display()))
            } else if mode == CopyMode::LinkModules && refs::is_module_name(&n) {
                fs::hard_link(&s, &d)
                    .or_else(|_| fs::copy(&s, &d).map(|_| ()))
                    .map(|()| 0)
                    .map_err(|e| format!("link {}: {e}", d.display()))
            } else {
                fs::copy(&s, &d).map_err(|e| format!("copy {}: {e}", d.display()))
            };
            res?;
        }
        Ok(())
    }
    if dst.exists() {
        return Err(format!("{} already exists", dst.display()));
    }
    walk(src, dst, mode, true)
}

/// Read every file below `dir` once.
fn warm_page_cache(dir: &Path) -> Result<(), String> {
    use std::io::Read;
    let mut buf = vec![0u8; 1 << 20];
    for path in find_files(dir, "")? {
        let mut f = fs::File::open(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        while f
            .read(&mut buf)
            .map_err(|e| format!("{}: {e}", path.display()))?
            > 0
        {}
    }
    Ok(())
}

/// Files below `dir` whose names end in `suffix`.
fn find_files(dir: &Path, suffix: &str) -> Result<Vec<PathBuf>, String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).map_err(|e| format!("{}: {e}", d.display()))? {
            let e = e.map_err(|e| format!("{}: {e}", d.display()))?;
            let ft = e.file_type().map_err(|e| format!("{}: {e}", d.display()))?;
            if ft.is_dir() {
                stack.push(e.path());
            } else if ft.is_file() && e.file_name().to_string_lossy().ends_with(suffix) {
                out.push(e.path());
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Run `program args <files...>` over all files, in batches, on every core.
fn batch_run(program: &str, args: &[&str], files: &[PathBuf]) -> Result<(), String> {
    const BATCH: usize = 64;
    let batches: Vec<&[PathBuf]> = files.chunks(BATCH).collect();
    let next = AtomicUsize::new(0);
    let error: Mutex<Option<String>> = Mutex::new(None);
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| loop {
                let i = next.fetch_add(1, AtomicOrdering::Relaxed);
                let Some(batch) = batches.get(i) else { break };
                if error.lock().map(|e| e.is_some()).unwrap_or(true) {
                    break;
                }
                let res = Command::new(program)
                    .args(args)
                    .args(*batch)
                    .stdin(Stdio::null())
                    .output();
                let msg = match res {
                    Ok(o) if o.status.success() => None,
                    Ok(o) => Some(format!(
                        "{program} failed ({}): {}",
                        o.status,
                        String::from_utf8_lossy(&o.stderr).trim()
                    )),
                    Err(e) => Some(format!("{program}: {e} (is it installed?)")),
                };
                if let Some(m) = msg {
                    if let Ok(mut e) = error.lock() {
                        e.get_or_insert(m);
                    }
                    break;
                }
            });
        }
    });
    match error.into_inner() {
        Ok(None) => Ok(()),
        Ok(Some(e)) => Err(e),
        Err(_) => Err(format!("{program}: worker panicked")),
    }
}

/// The root (`-b` dir) of a variant's module tree, building derived trees on first use.
fn prepare_source(refs: &Refs, tree: &KernelTree, source: Source) -> Result<PathBuf, String> {
    let name = match source {
        Source::Pristine => return Ok(tree.root.clone()),
        Source::Plain => "ko",
        Source::Zstd => "zst",
        Source::Gzip => "gz",
    };
    let base = refs.cache.join("derived").join(&tree.kver);
    let dest = base.join(name);
    if dest.join(".complete").is_file() {
        return Ok(dest);
    }
    // Compressed variants start from the plain one.
    let (from, from_suffix, program, args): (PathBuf, &str, &str, &[&str]) = match source {
        Source::Plain => (tree.root.clone(), ".ko.xz", "xz", &["-d", "-q"]),
        Source::Zstd => (
            prepare_source(refs, tree, Source::Plain)?,
            ".ko",
            "zstd",
            &["-q", "--rm", "--no-progress"],
        ),
        Source::Gzip => (
            prepare_source(refs, tree, Source::Plain)?,
            ".ko",
            "gzip",
            &["-n"],
        ),
        Source::Pristine => unreachable!(),
    };
    let started = Instant::now();
    log(&format!(
        "building derived tree {} ({program} {})",
        dest.display(),
        args.join(" ")
    ));
    let partial = base.join(format!("{name}.partial-{}", std::process::id()));
    let _ = fs::remove_dir_all(&partial);
    let moddir = |r: &Path| r.join("lib/modules").join(&tree.kver);
    copy_tree(&moddir(&from), &moddir(&partial), CopyMode::Copy)?;
    let files = find_files(&moddir(&partial), from_suffix)?;
    batch_run(program, args, &files)?;
    let n = refs::count_modules(&moddir(&partial))?;
    if n != files.len() {
        return Err(format!(
            "{}: expected {} modules after {program}, found {n}",
            partial.display(),
            files.len()
        ));
    }
    fs::write(partial.join(".complete"), "")
        .map_err(|e| format!("write marker in {}: {e}", partial.display()))?;
    if dest.exists() {
        fs::remove_dir_all(&dest).map_err(|e| format!("remove {}: {e}", dest.display()))?;
    }
    fs::rename(&partial, &dest).map_err(|e| format!("rename to {}: {e}", dest.display()))?;
    log(&format!(
        "built {} ({n} modules) in {:.1}s",
        dest.display(),
        started.elapsed().as_secs_f64()
    ));
    Ok(dest)
}

/// A fresh scratch directory `<compat>/run-<pid>` for this run. Directories of earlier
/// runs whose process is gone (including `--keep` leftovers) are removed first.
fn prepare_work_dir(compat: &Path) -> Result<PathBuf, String> {
    if let Ok(entries) = fs::read_dir(compat) {
        for e in entries.filter_map(Result::ok) {
            let name = e.file_name().to_string_lossy().into_owned();
            let alive = name
                .strip_prefix("run-")
                .and_then(|pid| pid.parse::<u32>().ok())
                .is_some_and(|pid| Path::new("/proc").join(pid.to_string()).exists());
            if !alive {
                let _ = fs::remove_dir_all(e.path());
            }
        }
    }
    let work = compat.join(format!("run-{}", std::process::id()));
    let _ = fs::remove_dir_all(&work);
    fs::create_dir_all(&work).map_err(|e| format!("create {}: {e}", work.display()))?;
    Ok(work)
}

/// Remove derived trees of kernel releases that `refs` no longer provides.
fn prune_derived(refs: &Refs) -> Result<(), String> {
    let dir = refs.cache.join("derived");
    let Ok(entries) = fs::read_dir(&dir) else {
        return Ok(());
    };
    for e in entries.filter_map(Result::ok) {
        let n = e.file_name().to_string_lossy().into_owned();
        if !refs.trees.iter().any(|t| t.kver == n) {
            log(&format!(
                "removing stale derived trees {}",
                e.path().display()
            ));
            fs::remove_dir_all(e.path()).map_err(|err| format!("remove {n}: {err}"))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replace_counts() {
        let (out, n) = replace_all(b"a.ko.xz: b.ko.xz\nc.ko\n", b".ko.xz", b".ko.gz");
        assert_eq!(out, b"a.ko.gz: b.ko.gz\nc.ko\n");
        assert_eq!(n, 2);
    }

    #[test]
    fn byte_comparison() {
        assert!(compare_bytes(b"abc\n", b"abc\n", true).pass);
        let o = compare_bytes(b"a\nbc\n", b"a\nbd\n", true);
        assert!(!o.pass);
        let d = o.detail.unwrap_or_default();
        assert!(d.contains("byte 3") && d.contains("line 2"), "{d}");
        let o = compare_bytes(b"ab", b"abc", false);
        assert!(o.detail.unwrap_or_default().contains("byte 2"));
    }

    #[test]
    fn stderr_levels() {
        let k = "depmod: WARNING: x\ndepmod: ERROR: y\n";
        let o = "depmod: WARNING: z\ndepmod: ERROR: y\n";
        assert!(compare_stderr(k, k).pass);
        let same = compare_stderr(k, o);
        assert!(same.pass && same.cell == "same counts");
        assert!(!compare_stderr(k, "").pass);
    }

    #[test]
    fn tree_labels() {
        assert!(parse_args(&["--tree".into(), "6.12-gz,6.1-cloud".into()]).is_ok());
        assert!(parse_args(&["--tree".into(), "nope".into()]).is_err());
    }
}
