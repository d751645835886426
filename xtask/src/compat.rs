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
//! `depmod_section` fills the depmod rows. `runtime_section` then compares the runtime
//! tools on the indexed copies (by default on the two primary trees, `6.1-cloud` and
//! `6.12-xz`; `--runtime-all` adds the derived ones):
//!
//! * `modprobe -D` for every module of the tree, one process per module;
//! * `modprobe -R` and `modprobe -D` for a fixed selection of a few hundred queries: concrete
//!   aliases from modules.alias, strings built to match wildcard aliases, `symbol:` names
//!   from modules.symbols, `fs-`/`net-pf-`/`char-major-`/... aliases, module and builtin
//!   names, builtin aliases and names that resolve to nothing (see [`Selection`]);
//! * `modinfo` (by name, by path, on the alias queries, on builtin names) and
//!   `modinfo -F firmware|depends|alias|vermagic|parm` and `modinfo -0`, 50 operands per
//!   process; a batch whose output differs is re-run one operand at a time to name the
//!   modules that differ.
//!
//! Every call compares stdout bytes and the exit status. stderr must contain kmod's lines in
//! kmod's order; lines only ours prints are deliberate additions (explanations) and are
//! listed as notes, not failures. Every row runs kmod's and our tool on the copy indexed by
//! kmod's depmod (so a difference can only come from the runtime tool). Rows whose operands
//! are looked up in the indexes (modprobe, and modinfo by name, on the queries and on
//! builtin names) run our tool a second time, on the copy indexed by our depmod (suffix
//! `[our index]`), compared with kmod's outputs of the first pass (root path substituted).
//! For `6.12-gz` (`--runtime-all`), kmod 30 cannot read the modules and its copy does not
//! hold the files its index names, so both modprobes run on our copy and modinfo is not
//! compared. The runtime rows of both trees take about 1.5 minutes on 2 cores (about 7,200
//! and 17,700 processes). Both tools run with the same environment (only `PATH` and
//! `LC_ALL=C`), in an empty working directory, and modprobe gets `-C <empty dir>` so no host
//! modprobe.d is read. modinfo has no such option; both read the same host configuration.
//!
//! "Ours" is built with `cargo build --release -p depmod|modprobe|modinfo` (the runtime
//! tools are copied into the scratch directory, so a concurrent rebuild cannot change them
//! mid-run), unless `--ours PATH` or `KMODRS_COMPAT_OURS=PATH` names another depmod binary
//! (the runtime tools are then taken from the same directory) or a directory holding the
//! tools (e.g. `<cache>/bin` to test this harness with kmod against itself).

use crate::refs::{self, KernelTree, Refs};
use std::collections::BTreeMap;
use std::fs;
use std::os::unix::ffi::OsStrExt;
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
/// Our incremental cache (modcore::depmod::cache): written only when the module files are
/// old enough, so it may or may not be there; it is not an output to compare. Nor is the
/// record of the outputs beside it (modcore::depmod::uptodate).
const OURS_CACHE: [&str; 2] = ["modules.depmod.cache", "modules.depmod.outputs"];
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
pub(crate) enum Source {
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
    /// The runtime tools are compared on this tree by default (else with `--runtime-all`).
    runtime_default: bool,
}

const VARIANTS: [Variant; 5] = [
    Variant {
        label: "6.1-cloud",
        tree: 0,
        source: Source::Pristine,
        reference_from_xz: false,
        runtime_default: true,
    },
    Variant {
        label: "6.12-xz",
        tree: 1,
        source: Source::Pristine,
        reference_from_xz: false,
        runtime_default: true,
    },
    Variant {
        label: "6.12-zst",
        tree: 1,
        source: Source::Zstd,
        reference_from_xz: false,
        runtime_default: false,
    },
    Variant {
        label: "6.12-ko",
        tree: 1,
        source: Source::Plain,
        reference_from_xz: false,
        runtime_default: false,
    },
    Variant {
        label: "6.12-gz",
        tree: 1,
        source: Source::Gzip,
        reference_from_xz: true,
        runtime_default: false,
    },
];

const USAGE: &str = "usage: cargo xtask compat [--tree LABEL[,LABEL...]]... [--keep] [--ours PATH]
                           [--depmod-only | --runtime-only] [--runtime-all]
  PATH (or KMODRS_COMPAT_OURS): our depmod binary (modprobe and modinfo are taken from
      its directory), or a directory holding the tools
  --depmod-only   compare depmod only (no modprobe/modinfo rows)
  --runtime-only  compare modprobe/modinfo only (both depmods still index the copies)
  --runtime-all   compare modprobe/modinfo on every selected tree, not only on 6.1-cloud
                  and 6.12-xz
  labels: ";

struct Options {
    trees: Vec<String>,
    keep: bool,
    ours: Option<PathBuf>,
    /// Compare depmod's outputs (off with `--runtime-only`).
    depmod: bool,
    /// Compare the runtime tools (off with `--depmod-only`).
    runtime: bool,
    /// Compare the runtime tools on every selected tree.
    runtime_all: bool,
}

fn parse_args(args: &[String]) -> Result<Options, String> {
    let mut o = Options {
        trees: Vec::new(),
        keep: false,
        ours: std::env::var_os("KMODRS_COMPAT_OURS")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from),
        depmod: true,
        runtime: true,
        runtime_all: false,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--keep" => o.keep = true,
            "--depmod-only" => o.runtime = false,
            "--runtime-only" => o.depmod = false,
            "--runtime-all" => o.runtime_all = true,
            "--tree" => {
                let v = it.next().ok_or("--tree needs a label")?;
                o.trees.extend(v.split(',').map(String::from));
            }
            "--ours" => o.ours = Some(PathBuf::from(it.next().ok_or("--ours needs a path")?)),
            "-h" | "--help" => return Err(format!("{USAGE}{}", labels())),
            other => return Err(format!("unknown argument {other:?} (try --help)")),
        }
    }
    if !o.depmod && !o.runtime {
        return Err("--depmod-only and --runtime-only exclude each other".into());
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

/// Our tools: the depmod binary to test and the runtime tools next to it.
struct Ours {
    depmod: PathBuf,
    /// Our modprobe and modinfo, or why they are not available (a failed build fails only
    /// their rows). [`Ours::snapshot`] replaces them by copies in the scratch directory.
    modprobe: Result<PathBuf, String>,
    modinfo: Result<PathBuf, String>,
}

impl Ours {
    fn locate(opt: Option<PathBuf>, runtime: bool) -> Result<Self, String> {
        let skipped = || Err("not requested".to_string());
        if let Some(p) = opt {
            let (dir, depmod) = if p.is_dir() {
                (p.clone(), p.join("depmod"))
            } else {
                (p.parent().unwrap_or(Path::new(".")).to_path_buf(), p)
            };
            if !depmod.is_file() {
                return Err(format!("{}: no such file", depmod.display()));
            }
            let tool = |name: &str| {
                let t = dir.join(name);
                if t.is_file() {
                    Ok(t)
                } else {
                    Err(format!("{}: no such file", t.display()))
                }
            };
            return Ok(Ours {
                depmod,
                modprobe: if runtime { tool("modprobe") } else { skipped() },
                modinfo: if runtime { tool("modinfo") } else { skipped() },
            });
        }
        let depmod = build_ours("depmod")?;
        // Built one by one: a tool that does not build right now fails only its own rows.
        let (modprobe, modinfo) = if runtime {
            (build_ours("modprobe"), build_ours("modinfo"))
        } else {
            (skipped(), skipped())
        };
        Ok(Ours {
            depmod,
            modprobe,
            modinfo,
        })
    }

    /// Copy the runtime tools (under their own names: they may dispatch on argv[0]) into
    /// `dir`, so that a rebuild by someone else during the run cannot change them.
    fn snapshot(&mut self, dir: &Path) -> Result<(), String> {
        fs::create_dir_all(dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
        for (name, tool) in [
            ("modprobe", &mut self.modprobe),
            ("modinfo", &mut self.modinfo),
        ] {
            if let Ok(src) = tool {
                let dst = dir.join(name);
                fs::copy(&*src, &dst)
                    .map_err(|e| format!("copy {} to {}: {e}", src.display(), dst.display()))?;
                *tool = Ok(dst);
            }
        }
        Ok(())
    }
}

/// Our `package`, built in release mode (see [`refs::cargo_build_release`]).
fn build_ours(package: &str) -> Result<PathBuf, String> {
    log(&format!(
        "building ours: cargo build --release -p {package}"
    ));
    refs::cargo_build_release(package)
}

pub fn run(args: &[String]) -> Result<(), String> {
    let opts = parse_args(args)?;
    let refs = refs::ensure()?;
    let selected: Vec<&Variant> = VARIANTS
        .iter()
        .filter(|v| opts.trees.is_empty() || opts.trees.iter().any(|t| t == v.label))
        .collect();
    let runtime_on = |v: &Variant| opts.runtime && (opts.runtime_all || v.runtime_default);
    if !opts.depmod && !selected.iter().any(|v| runtime_on(v)) {
        return Err(
            "--runtime-only: none of the selected trees has runtime rows (add --runtime-all)"
                .into(),
        );
    }
    let mut ours = Ours::locate(opts.ours.clone(), selected.iter().any(|v| runtime_on(v)))?;

    prune_derived(&refs)?;
    let work = prepare_work_dir(&refs.cache.join("compat"))?;
    let empty_conf = work.join("empty-depmod.d");
    fs::create_dir_all(&empty_conf).map_err(|e| format!("create {}: {e}", empty_conf.display()))?;
    let ours_sources = format!(
        "modprobe {}, modinfo {}",
        ours.modprobe
            .as_ref()
            .map_or_else(Clone::clone, |p| p.display().to_string()),
        ours.modinfo
            .as_ref()
            .map_or_else(Clone::clone, |p| p.display().to_string()),
    );
    ours.snapshot(&work.join("ours-bin"))?;
    let runtime_env = RuntimeEnv::new(&refs, &ours, &work)?;

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
            &VariantSections {
                reference_from_xz: v.reference_from_xz,
                depmod: opts.depmod,
                runtime: runtime_on(v).then_some(&runtime_env),
            },
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
    if selected.iter().any(|v| runtime_on(v)) {
        println!("compat: runtime tools: ours {ours_sources}");
    }
    let failed = print_table(&checks);
    if checks
        .iter()
        .any(|c| c.outcome.cell.ends_with(EXTRA_STDERR_MARK))
    {
        println!(
            "{EXTRA_STDERR_MARK} stdout and exit status identical; ours prints extra stderr lines (listed above)"
        );
    }
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
        if let Some(r) = &t.runtime {
            println!(
                "  {:<10} runtime: {:>6.1}s wall, {} processes on {} workers (summed process time: kmod {:.1}s, ours {:.1}s)",
                "",
                r.wall.as_secs_f64(),
                r.procs,
                std::thread::available_parallelism().map_or(2, |n| n.get()),
                r.kmod.as_secs_f64(),
                r.ours.as_secs_f64()
            );
        }
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
    runtime: Option<RuntimeTiming>,
}

/// How `run_variant` compares, after indexing both copies.
struct VariantSections<'a> {
    /// kmod's outputs are for the `.ko.xz` tree and get rewritten to `.ko.gz`.
    reference_from_xz: bool,
    /// Record depmod's rows (the depmods always run: the runtime rows need the indexes).
    depmod: bool,
    /// Compare the runtime tools.
    runtime: Option<&'a RuntimeEnv>,
}

fn run_variant(
    refs: &Refs,
    ours: &Ours,
    ctx: &TreeCtx<'_>,
    ref_source: &Path,
    ours_source: &Path,
    sections: &VariantSections<'_>,
    checks: &mut Vec<Check>,
) -> Result<Timing, String> {
    let reference_from_xz = sections.reference_from_xz;
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
    let mut depmod_checks = Vec::new();
    let mut timing = depmod_section(refs, ours, ctx, reference_from_xz, &mut depmod_checks)?;
    if sections.depmod {
        checks.extend(depmod_checks);
    }
    // The runtime sections use the indexes both depmods have just written.
    if let Some(env) = sections.runtime {
        timing.runtime = Some(if reference_from_xz {
            // kmod's copy holds .ko.xz files under an index naming .ko.gz ones, which
            // kmod's modprobe refuses (it checks that dependencies exist), and kmod 30
            // cannot read .ko.gz. So both modprobes run on our copy, whose index the depmod
            // rows above compare with kmod's; modinfo is compared on 6.12-xz.
            let ours_only = TreeCtx {
                label: ctx.label,
                kver: ctx.kver,
                kmod_root: ctx.ours_root.clone(),
                ours_root: ctx.ours_root.clone(),
                empty_conf: ctx.empty_conf,
            };
            runtime_section(env, &ours_only, false, checks)?
        } else {
            runtime_section(env, ctx, true, checks)?
        });
    }
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
                || (who == "ours" && OURS_CACHE.contains(&n.as_str()))
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
        runtime: None,
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
    let mut header = format!("{:<w0$}", "item");
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
// Runtime tools: modprobe and modinfo

/// Operands per modinfo process.
const MODINFO_BATCH: usize = 50;
/// Per row, at most this many differing batches are re-run one operand at a time.
const PINPOINT_BATCHES: usize = 8;
/// Per row, at most this many differing calls are described in the details.
const SHOW_FAILURES: usize = 5;
/// Per row, at most this many kinds of extra stderr lines are listed.
const SHOW_SHAPES: usize = 5;
/// `PATH` of every tool run (nothing is executed through it; it only has to be the same).
const TOOL_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// Marks a cell whose calls all matched but where ours printed extra stderr lines.
const EXTRA_STDERR_MARK: char = '*';

/// What the runtime rows need besides the tree.
struct RuntimeEnv {
    kmod_modprobe: PathBuf,
    kmod_modinfo: PathBuf,
    ours_modprobe: Result<PathBuf, String>,
    ours_modinfo: Result<PathBuf, String>,
    /// Empty directory given to modprobe as `-C`, so no host modprobe.d is read.
    empty_modprobe_d: PathBuf,
    /// Empty working directory of every tool run (operands are never files by accident).
    cwd: PathBuf,
}

impl RuntimeEnv {
    fn new(refs: &Refs, ours: &Ours, work: &Path) -> Result<Self, String> {
        let env = RuntimeEnv {
            kmod_modprobe: refs.tool("modprobe"),
            kmod_modinfo: refs.tool("modinfo"),
            ours_modprobe: ours.modprobe.clone(),
            ours_modinfo: ours.modinfo.clone(),
            empty_modprobe_d: work.join("empty-modprobe.d"),
            cwd: work.join("cwd"),
        };
        for d in [&env.empty_modprobe_d, &env.cwd] {
            fs::create_dir_all(d).map_err(|e| format!("create {}: {e}", d.display()))?;
        }
        Ok(env)
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Tool {
    Modprobe,
    Modinfo,
}

impl Tool {
    fn name(self) -> &'static str {
        match self {
            Tool::Modprobe => "modprobe",
            Tool::Modinfo => "modinfo",
        }
    }
}

/// One operand: a name (module, alias, `symbol:`...) or a module file given by its path
/// relative to the module directory.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Query {
    Name(String),
    Path(String),
}

impl Query {
    fn arg(&self, moddir: &Path) -> PathBuf {
        match self {
            Query::Name(n) => PathBuf::from(n),
            Query::Path(p) => moddir.join(p),
        }
    }
    fn text(&self) -> &str {
        match self {
            Query::Name(s) | Query::Path(s) => s,
        }
    }
}

/// One table row: a tool, its options and the operands, `batch` per process.
struct RowSpec {
    item: String,
    tool: Tool,
    args: Vec<&'static str>,
    queries: Vec<Query>,
    batch: usize,
    /// Also run ours on the copy indexed by our depmod. Only rows whose operands are looked
    /// up in the indexes need it: `-F`/`-0` rows resolve names exactly as `modinfo (names)`
    /// does, and paths are not looked up at all.
    our_index: bool,
}

/// A tool and the root (`-d`/`-b` directory) it runs on.
#[derive(Clone, Copy)]
struct Side<'a> {
    bin: &'a Path,
    root: &'a Path,
}

/// What one process printed.
#[derive(Clone)]
struct Out {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    code: Option<i32>,
}

/// Process counts and summed process times of a runtime section.
#[derive(Default)]
struct RtStats {
    procs: AtomicUsize,
    kmod_micros: AtomicUsize,
    ours_micros: AtomicUsize,
}

/// Timing of one tree's runtime section.
struct RuntimeTiming {
    wall: Duration,
    procs: usize,
    kmod: Duration,
    ours: Duration,
}

fn tool_command(
    env: &RuntimeEnv,
    tool: Tool,
    side: Side<'_>,
    kver: &str,
    args: &[&str],
    ops: &[Query],
) -> Command {
    let mut c = Command::new(side.bin);
    c.current_dir(&env.cwd)
        .env_clear()
        .env("PATH", TOOL_PATH)
        .env("LC_ALL", "C")
        .stdin(Stdio::null());
    match tool {
        Tool::Modprobe => c
            .arg("-C")
            .arg(&env.empty_modprobe_d)
            .arg("-d")
            .arg(side.root)
            .arg("-S")
            .arg(kver),
        Tool::Modinfo => c.arg("-b").arg(side.root).arg("-k").arg(kver),
    };
    c.args(args);
    let moddir = side.root.join("lib/modules").join(kver);
    for q in ops {
        c.arg(q.arg(&moddir));
    }
    c
}

/// How a call is shown in the details: the command line with the root as `<ROOT>`.
fn repro(tool: Tool, kver: &str, args: &[&str], ops: &[Query]) -> String {
    let mut s = match tool {
        Tool::Modprobe => format!("modprobe -C <EMPTY> -d <ROOT> -S {kver}"),
        Tool::Modinfo => format!("modinfo -b <ROOT> -k {kver}"),
    };
    for a in args {
        s.push(' ');
        s.push_str(a);
    }
    for q in ops {
        s.push(' ');
        let t = match q {
            Query::Name(n) => n.clone(),
            Query::Path(p) => format!("<ROOT>/lib/modules/{kver}/{p}"),
        };
        if t.is_empty() || t.contains(|c: char| !c.is_ascii_graphic() || "'\"\\$`*?[]".contains(c))
        {
            s.push_str(&format!("'{}'", t.replace('\'', "'\\''")));
        } else {
            s.push_str(&t);
        }
    }
    s
}

fn exec(mut cmd: Command, stats: &RtStats, kmod: bool) -> Result<Out, String> {
    let started = Instant::now();
    let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
    let micros = usize::try_from(started.elapsed().as_micros()).unwrap_or(usize::MAX);
    stats.procs.fetch_add(1, AtomicOrdering::Relaxed);
    if kmod {
        stats.kmod_micros.fetch_add(micros, AtomicOrdering::Relaxed);
    } else {
        stats.ours_micros.fetch_add(micros, AtomicOrdering::Relaxed);
    }
    Ok(Out {
        stdout: out.stdout,
        stderr: out.stderr,
        code: out.status.code(),
    })
}

/// `f` over all items on every core; results in item order.
fn par_map<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let workers = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .clamp(1, items.len().max(1));
    let next = AtomicUsize::new(0);
    let done: Mutex<Vec<(usize, R)>> = Mutex::new(Vec::with_capacity(items.len()));
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| {
                let mut local = Vec::new();
                loop {
                    let i = next.fetch_add(1, AtomicOrdering::Relaxed);
                    let Some(item) = items.get(i) else { break };
                    local.push((i, f(item)));
                }
                match done.lock() {
                    Ok(mut d) => d.extend(local),
                    Err(poisoned) => poisoned.into_inner().extend(local),
                }
            });
        }
    });
    let mut v = done.into_inner().unwrap_or_else(|p| p.into_inner());
    v.sort_by_key(|(i, _)| *i);
    v.into_iter().map(|(_, r)| r).collect()
}

/// Replace every occurrence of `from` by `to` (our root by kmod's in the second pass).
fn rebase(out: Out, from: &Path, to: &Path) -> Out {
    if from == to {
        return out;
    }
    let (f, t) = (from.as_os_str().as_bytes(), to.as_os_str().as_bytes());
    Out {
        stdout: replace_all(&out.stdout, f, t).0,
        stderr: replace_all(&out.stderr, f, t).0,
        code: out.code,
    }
}

/// Lines (records) of a tool's output, each with its terminator (`\n`, or `\0` for `-0`).
fn records(data: &[u8]) -> Vec<&[u8]> {
    let mut v = Vec::new();
    let mut start = 0;
    for (i, &b) in data.iter().enumerate() {
        if b == b'\n' || b == 0 {
            v.push(&data[start..=i]);
            start = i + 1;
        }
    }
    if start < data.len() {
        v.push(&data[start..]);
    }
    v
}

fn show_record(r: &[u8]) -> String {
    let mut s = format!("{:?}", String::from_utf8_lossy(r));
    if s.len() > 160 {
        let mut cut = 157;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push_str("...");
    }
    s
}

/// A short diff: the first differing region after the common prefix, with one line of
/// context, `-` for kmod's lines and `+` for ours (at most 6 of each).
fn diff_snippet(kmod: &[u8], ours: &[u8]) -> String {
    const MAX: usize = 6;
    let (a, b) = (records(kmod), records(ours));
    let pre = a.iter().zip(&b).take_while(|(x, y)| x == y).count();
    let suf = a[pre..]
        .iter()
        .rev()
        .zip(b[pre..].iter().rev())
        .take_while(|(x, y)| x == y)
        .count();
    let (da, db) = (&a[pre..a.len() - suf], &b[pre..b.len() - suf]);
    let mut s = format!("@@ record {} @@", pre + 1);
    if pre > 0 {
        s.push_str(&format!("\n          {}", show_record(a[pre - 1])));
    }
    for (sign, part) in [('-', da), ('+', db)] {
        for r in part.iter().take(MAX) {
            s.push_str(&format!("\n        {sign} {}", show_record(r)));
        }
        if part.len() > MAX {
            s.push_str(&format!("\n        {sign} ... {} more", part.len() - MAX));
        }
    }
    s
}

/// Comparison of one call (or batch): whether it passes and ours' extra stderr lines.
struct CallCmp {
    failure: Option<String>,
    extra: Vec<String>,
}

fn compare_call(kmod: &Out, ours: &Out) -> CallCmp {
    let mut problems = Vec::new();
    if kmod.code != ours.code {
        problems.push(format!(
            "exit status: kmod {}, ours {}",
            fmt_code(kmod.code),
            fmt_code(ours.code)
        ));
    }
    if kmod.stdout != ours.stdout {
        problems.push(format!(
            "stdout: kmod {} bytes, ours {} bytes\n        {}",
            kmod.stdout.len(),
            ours.stdout.len(),
            diff_snippet(&kmod.stdout, &ours.stdout)
        ));
    }
    let (k, o) = (
        String::from_utf8_lossy(&kmod.stderr),
        String::from_utf8_lossy(&ours.stderr),
    );
    let klines: Vec<&str> = k.lines().collect();
    let olines: Vec<&str> = o.lines().collect();
    // kmod's lines must appear in ours, in order; whatever else ours prints is extra.
    let (missing, extra) = line_diff(&klines, &olines);
    if let Some(first) = missing.first() {
        let mut p = format!(
            "stderr: {} of kmod's {} lines missing from ours, first {first:?}",
            missing.len(),
            klines.len()
        );
        match olines.first() {
            Some(l) => p.push_str(&format!("; ours starts {l:?}")),
            None => p.push_str("; ours printed nothing"),
        }
        problems.push(p);
    }
    CallCmp {
        failure: (!problems.is_empty()).then(|| problems.join("\n        ")),
        extra,
    }
}

/// Lines of `kmod` missing from `ours` and lines of `ours` not in `kmod`, by a longest
/// common subsequence (greedy in order when the inputs are too large for the table).
fn line_diff(kmod: &[&str], ours: &[&str]) -> (Vec<String>, Vec<String>) {
    let (n, m) = (kmod.len(), ours.len());
    let mut missing = Vec::new();
    let mut extra = Vec::new();
    if n.saturating_mul(m) > 4_000_000 {
        let mut j = 0;
        for l in ours {
            if kmod.get(j) == Some(l) {
                j += 1;
            } else {
                extra.push(l.to_string());
            }
        }
        missing.extend(kmod[j..].iter().map(|l| l.to_string()));
        return (missing, extra);
    }
    // len[i][j]: LCS length of kmod[i..] and ours[j..].
    let w = m + 1;
    let mut len = vec![0u32; (n + 1) * w];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            len[i * w + j] = if kmod[i] == ours[j] {
                len[(i + 1) * w + j + 1] + 1
            } else {
                len[(i + 1) * w + j].max(len[i * w + j + 1])
            };
        }
    }
    let (mut i, mut j) = (0, 0);
    while i < n && j < m {
        if kmod[i] == ours[j] {
            i += 1;
            j += 1;
        } else if len[(i + 1) * w + j] >= len[i * w + j + 1] {
            missing.push(kmod[i].to_string());
            i += 1;
        } else {
            extra.push(ours[j].to_string());
            j += 1;
        }
    }
    missing.extend(kmod[i..].iter().map(|l| l.to_string()));
    extra.extend(ours[j..].iter().map(|l| l.to_string()));
    (missing, extra)
}

/// The outcome of one row.
#[derive(Default)]
struct RowResult {
    queries: usize,
    /// Failing calls: the command line and what differs.
    failures: Vec<(String, String)>,
    /// Differing queries (pinpointed), and differing batches that were not pinpointed.
    failing: usize,
    unpinpointed: usize,
    /// Calls in which ours printed stderr lines kmod does not; their shapes with a count
    /// and an example.
    extra_calls: usize,
    shapes: BTreeMap<String, (usize, String)>,
}

impl RowResult {
    fn note_extra(&mut self, extra: &[String], ops: &[Query], roots: &[&Path]) {
        if extra.is_empty() {
            return;
        }
        self.extra_calls += 1;
        let mut names: Vec<&str> = ops
            .iter()
            .map(Query::text)
            .filter(|t| t.len() >= 3)
            .collect();
        names.sort_by_key(|t| std::cmp::Reverse(t.len()));
        for line in extra {
            let mut shape = line.clone();
            for r in roots {
                shape = shape.replace(&*r.to_string_lossy(), "<ROOT>");
            }
            for n in &names {
                shape = shape.replace(n, "<Q>");
            }
            let e = self.shapes.entry(shape).or_insert((0, line.clone()));
            e.0 += 1;
        }
    }

    fn outcome(&self) -> Outcome {
        let n = self.queries;
        let mut notes = Vec::new();
        if self.extra_calls > 0 {
            let mut s = format!(
                "stderr differs ({}): ours adds lines kmod 30 does not print (deliberate), {} kind(s):",
                self.extra_calls,
                self.shapes.len()
            );
            let mut shapes: Vec<(&String, &(usize, String))> = self.shapes.iter().collect();
            shapes.sort_by(|a, b| b.1 .0.cmp(&a.1 .0).then_with(|| a.0.cmp(b.0)));
            for (shape, (count, example)) in shapes.iter().take(SHOW_SHAPES) {
                s.push_str(&format!("\n      {count:>5}x {shape}"));
                if *shape != example {
                    s.push_str(&format!("\n             e.g. {example}"));
                }
            }
            if shapes.len() > SHOW_SHAPES {
                s.push_str(&format!(
                    "\n      ... {} more kinds",
                    shapes.len() - SHOW_SHAPES
                ));
            }
            notes.push(s);
        }
        if self.failing == 0 && self.unpinpointed == 0 {
            let mark = if self.extra_calls > 0 {
                EXTRA_STDERR_MARK.to_string()
            } else {
                String::new()
            };
            return Outcome::pass(
                &format!("identical ({n}){mark}"),
                (!notes.is_empty()).then(|| notes.join("\n    ")),
            );
        }
        let (cell, head) = if self.unpinpointed > 0 {
            (
                format!("DIFFERS >={}/{n}", self.failing + self.unpinpointed),
                format!(
                    "{} of {n} differ, plus {} more differing batches of {MODINFO_BATCH} not re-run one by one",
                    self.failing, self.unpinpointed
                ),
            )
        } else {
            (
                format!("DIFFERS {}/{n}", self.failing),
                format!("{} of {n} differ", self.failing),
            )
        };
        let mut d = head;
        for (cmd, what) in self.failures.iter().take(SHOW_FAILURES) {
            d.push_str(&format!("\n      $ {cmd}\n        {what}"));
        }
        if self.failures.len() > SHOW_FAILURES {
            let rest: Vec<&str> = self.failures[SHOW_FAILURES..]
                .iter()
                .take(20)
                .map(|(c, _)| c.rsplit(' ').next().unwrap_or(""))
                .collect();
            d.push_str(&format!(
                "\n      ... {} more, e.g. {}",
                self.failures.len() - SHOW_FAILURES,
                rest.join(" ")
            ));
        }
        for n in notes {
            d.push_str(&format!("\n    {n}"));
        }
        Outcome::fail(&cell, d)
    }
}

/// Run one row: every batch through kmod (unless `kmod_known` already holds kmod's
/// outputs) and ours, compare, and re-run differing batches one operand at a time.
/// Returns the result and kmod's outputs per batch.
#[allow(clippy::too_many_arguments)]
fn run_row(
    env: &RuntimeEnv,
    kver: &str,
    spec: &RowSpec,
    kmod: Side<'_>,
    ours: Side<'_>,
    kmod_known: Option<&[Out]>,
    stats: &RtStats,
) -> Result<(RowResult, Vec<Out>), String> {
    let batches: Vec<&[Query]> = spec.queries.chunks(spec.batch.max(1)).collect();
    let run_one = |kmod_side: bool, ops: &[Query]| -> Result<Out, String> {
        let side = if kmod_side { kmod } else { ours };
        let out = exec(
            tool_command(env, spec.tool, side, kver, &spec.args, ops),
            stats,
            kmod_side,
        )?;
        Ok(if kmod_side {
            out
        } else {
            rebase(out, ours.root, kmod.root)
        })
    };
    // Jobs: (is kmod, batch index), interleaved so both tools share the workers evenly.
    let jobs: Vec<(bool, usize)> = (0..batches.len())
        .flat_map(|i| {
            let k = kmod_known.is_none().then_some((true, i));
            k.into_iter().chain([(false, i)])
        })
        .collect();
    let results = par_map(&jobs, |&(k, i)| run_one(k, batches[i]));
    let mut kmod_outs: Vec<Option<Out>> = vec![None; batches.len()];
    let mut ours_outs: Vec<Option<Out>> = vec![None; batches.len()];
    for (&(k, i), r) in jobs.iter().zip(results) {
        let r = r?;
        if k {
            kmod_outs[i] = Some(r);
        } else {
            ours_outs[i] = Some(r);
        }
    }
    let kmod_outs: Vec<Out> = match kmod_known {
        Some(known) if known.len() == batches.len() => known.to_vec(),
        Some(_) => return Err("kmod's outputs do not match the batches".into()),
        None => kmod_outs
            .into_iter()
            .map(|o| o.ok_or("kmod run missing"))
            .collect::<Result<_, _>>()?,
    };
    let roots = [kmod.root, ours.root];
    // Details name the scratch directories by placeholder, as `repro` does.
    let hide = |text: String| {
        let mut t = text.replace(&*env.empty_modprobe_d.to_string_lossy(), "<EMPTY>");
        for r in roots {
            t = t.replace(&*r.to_string_lossy(), "<ROOT>");
        }
        t
    };
    let mut res = RowResult {
        queries: spec.queries.len(),
        ..RowResult::default()
    };
    let mut pinpointed = 0;
    for (i, ops) in batches.iter().enumerate() {
        let Some(o) = &ours_outs[i] else {
            return Err("our run missing".into());
        };
        let cmp = compare_call(&kmod_outs[i], o);
        let Some(failure) = cmp.failure else {
            res.note_extra(&cmp.extra, ops, &roots);
            continue;
        };
        if ops.len() == 1 {
            res.note_extra(&cmp.extra, ops, &roots);
            res.failing += 1;
            res.failures
                .push((repro(spec.tool, kver, &spec.args, ops), hide(failure)));
            continue;
        }
        res.note_extra(&cmp.extra, ops, &roots);
        if pinpointed >= PINPOINT_BATCHES {
            res.unpinpointed += 1;
            continue;
        }
        pinpointed += 1;
        let singles: Vec<(bool, usize)> = (0..ops.len())
            .flat_map(|j| [(true, j), (false, j)])
            .collect();
        let outs = par_map(&singles, |&(k, j)| run_one(k, &ops[j..=j]));
        let mut found = false;
        for (j, pair) in outs.chunks(2).enumerate() {
            let [k, o] = pair else { continue };
            let (k, o) = (
                k.as_ref().map_err(Clone::clone)?,
                o.as_ref().map_err(Clone::clone)?,
            );
            let c = compare_call(k, o);
            if let Some(f) = c.failure {
                found = true;
                res.failing += 1;
                res.failures
                    .push((repro(spec.tool, kver, &spec.args, &ops[j..=j]), hide(f)));
            }
        }
        if !found {
            // Each operand alone matches, the batch does not.
            res.failing += 1;
            res.failures
                .push((repro(spec.tool, kver, &spec.args, ops), hide(failure)));
        }
    }
    Ok((res, kmod_outs))
}

/// The operands of the runtime rows, chosen from kmod's index files of the tree. The choice
/// is fixed: lists are sorted and picked at even spacing, never at random.
struct Selection {
    /// Every module: file name without its suffix, and path relative to the module
    /// directory, in modules.dep order.
    modules: Vec<(String, String)>,
    /// Names for `-R`, `-D` and modinfo (see [`Selection::load`]).
    queries: Vec<String>,
    /// Every builtin module name, and names that are not modules at all.
    builtin: Vec<String>,
    /// What `queries` is made of, for the log.
    summary: String,
}

/// Names that resolve to nothing (or are malformed), in every tree.
const UNKNOWN_NAMES: [&str; 14] = [
    "kmodrs-no-such-module",
    "kmodrs_no_such_module",
    "EXT4",
    "symbol:kmodrs_no_such_symbol",
    "fs-kmodrsfs",
    "net-pf-250",
    "char-major-511-7",
    "block-major-511-7",
    "platform:kmodrs-none",
    "devname:kmodrs",
    "pci:v0000FFFEd0000FFFEsv0000FFFEsd0000FFFEbcFEscFEiFE",
    "foo]bar",
    "pci:v[0",
    "",
];

/// Alias families that get a share of their own (besides the round robin over families).
const SPECIAL_PREFIXES: [&str; 12] = [
    "fs-",
    "net-pf-",
    "char-major-",
    "block-major-",
    "crypto-",
    "devname:",
    "tty-ldisc-",
    "netdev-",
    "rtnl-",
    "nf",
    "md-",
    "xt_",
];

/// Concrete aliases, strings matching wildcard aliases, and symbols taken.
const CONCRETE_ALIASES: usize = 150;
const WILDCARD_ALIASES: usize = 150;
const SYMBOLS: usize = 120;
const SPECIAL_PER_PREFIX: usize = 6;
const MODULE_NAMES: usize = 40;
const BUILTIN_NAMES: usize = 15;
const BUILTIN_ALIASES: usize = 15;

impl Selection {
    fn load(moddir: &Path) -> Result<Selection, String> {
        let read = |name: &str| {
            fs::read(moddir.join(name)).map_err(|e| format!("{}: {e}", moddir.join(name).display()))
        };
        let text = |name: &str| read(name).map(|d| String::from_utf8_lossy(&d).into_owned());
        let strip = |file: &str| {
            let base = file.rsplit('/').next().unwrap_or(file);
            [".ko.xz", ".ko.zst", ".ko.gz", ".ko"]
                .iter()
                .find_map(|s| base.strip_suffix(s))
                .unwrap_or(base)
                .to_string()
        };
        let modules: Vec<(String, String)> = text("modules.dep")?
            .lines()
            .filter_map(|l| l.split_once(':'))
            .map(|(p, _)| (strip(p), p.to_string()))
            .collect();
        let is_wild = |a: &str| a.contains(['*', '?', '[']);
        let mut concrete = Vec::new();
        let mut wild = Vec::new();
        for l in text("modules.alias")?.lines() {
            let mut w = l.split_whitespace();
            if let (Some("alias"), Some(a)) = (w.next(), w.next()) {
                if is_wild(a) {
                    wild.push(a.to_string());
                } else {
                    concrete.push(a.to_string());
                }
            }
        }
        let mut symbols: Vec<String> = text("modules.symbols")?
            .lines()
            .filter_map(|l| l.split_whitespace().nth(1))
            .map(String::from)
            .collect();
        let builtin_names: Vec<String> = text("modules.builtin")?.lines().map(strip).collect();
        let mut builtin_aliases: Vec<String> = read("modules.builtin.modinfo")
            .unwrap_or_default()
            .split(|&b| b == 0)
            .filter_map(|rec| {
                let rec = String::from_utf8_lossy(rec);
                let (_, kv) = rec.split_once('.')?;
                kv.strip_prefix("alias=").map(String::from)
            })
            .collect();
        for v in [&mut concrete, &mut wild, &mut symbols, &mut builtin_aliases] {
            v.sort();
            v.dedup();
        }

        let mut q: Vec<String> = Vec::new();
        let mut summary = Vec::new();
        let mut add = |what: &str, items: Vec<String>| {
            summary.push(format!("{} {what}", items.len()));
            q.extend(items);
        };
        add(
            "concrete aliases",
            round_robin(&concrete, CONCRETE_ALIASES, alias_family),
        );
        let mut special = Vec::new();
        for p in SPECIAL_PREFIXES {
            let fam: Vec<String> = concrete
                .iter()
                .filter(|a| a.starts_with(p))
                .cloned()
                .collect();
            special.extend(spread(&fam, SPECIAL_PER_PREFIX));
        }
        add("fs-/net-pf-/char-major-/... aliases", special);
        add(
            "strings matching wildcard aliases",
            round_robin(&wild, WILDCARD_ALIASES, alias_family)
                .iter()
                .enumerate()
                .map(|(i, p)| instantiate(p, i))
                .collect(),
        );
        add("symbols", spread(&symbols, SYMBOLS));
        let names: Vec<String> = modules.iter().map(|(n, _)| n.clone()).collect();
        let mut mods = spread(&names, MODULE_NAMES);
        // The other spelling of names with '-' or '_' (both must resolve the same).
        let swapped: Vec<String> = names
            .iter()
            .filter(|n| n.contains(['-', '_']))
            .map(|n| {
                n.chars()
                    .map(|c| match c {
                        '-' => '_',
                        '_' => '-',
                        c => c,
                    })
                    .collect()
            })
            .collect();
        mods.extend(spread(&swapped, MODULE_NAMES / 2));
        add("module names", mods);
        add("builtin names", spread(&builtin_names, BUILTIN_NAMES));
        add(
            "builtin aliases",
            spread(&builtin_aliases, BUILTIN_ALIASES)
                .iter()
                .enumerate()
                .map(|(i, a)| instantiate(a, i))
                .collect(),
        );
        add(
            "unknown names",
            UNKNOWN_NAMES.iter().map(|s| s.to_string()).collect(),
        );
        // Operands starting with '-' would be options.
        q.retain(|s| !s.starts_with('-'));
        let mut seen = std::collections::BTreeSet::new();
        q.retain(|s| seen.insert(s.clone()));

        let mut builtin = builtin_names;
        builtin.extend(["kmodrs-no-such-module".to_string(), "EXT4".to_string()]);
        Ok(Selection {
            summary: format!("{} queries: {}", q.len(), summary.join(", ")),
            modules,
            queries: q,
            builtin,
        })
    }
}

/// `n` items at even spacing (all of them if there are no more than `n`).
fn spread<T: Clone>(items: &[T], n: usize) -> Vec<T> {
    if items.len() <= n {
        return items.to_vec();
    }
    (0..n).map(|i| items[i * items.len() / n].clone()).collect()
}

/// An alias's family: the part before the first ':' (`pci`, `usb`, `of`, ...), else before
/// the first '-' or '_' (`fs`, `net`, `char`, `ip6t`, ...).
fn alias_family(a: &str) -> &str {
    match a.split_once(':') {
        Some((f, _)) => f,
        None => a.split(['-', '_']).next().unwrap_or(a),
    }
}

/// `n` items spread over the families: half of them in proportion to the families' sizes,
/// the other half round robin (so that small families are represented too), picked at even
/// spacing within each family. Result sorted.
fn round_robin(items: &[String], n: usize, family: fn(&str) -> &str) -> Vec<String> {
    let mut fams: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for a in items {
        fams.entry(family(a)).or_default().push(a.clone());
    }
    let total = items.len().max(1);
    let mut quota: BTreeMap<&str, usize> = fams
        .iter()
        .map(|(k, v)| (*k, n / 2 * v.len() / total))
        .collect();
    let mut left = n.min(items.len()) - quota.values().sum::<usize>().min(n.min(items.len()));
    while left > 0 {
        for (k, v) in &fams {
            let q = quota.entry(k).or_insert(0);
            if left > 0 && *q < v.len() {
                *q += 1;
                left -= 1;
            }
        }
    }
    let mut out: Vec<String> = fams
        .iter()
        .flat_map(|(k, v)| spread(v, quota.get(k).copied().unwrap_or(0)))
        .collect();
    out.sort();
    out
}

/// A string matching the fnmatch pattern `p`: each `*` becomes one of a few plausible
/// values (rotating, starting at `seed`), `?` becomes `0`, a bracket expression its first
/// character (for a negated one, the first of `0-9A-Za-z_` outside it), `\x` becomes `x`.
fn instantiate(p: &str, seed: usize) -> String {
    const STAR: [&str; 3] = ["00001234", "0", "A1"];
    let c: Vec<char> = p.chars().collect();
    let mut out = String::new();
    let mut k = seed;
    let mut i = 0;
    while i < c.len() {
        match c[i] {
            '*' => {
                out.push_str(STAR[k % STAR.len()]);
                k += 1;
                i += 1;
            }
            '?' => {
                out.push('0');
                i += 1;
            }
            '\\' if i + 1 < c.len() => {
                out.push(c[i + 1]);
                i += 2;
            }
            '[' => match parse_bracket(&c[i + 1..]) {
                Some(Bracket {
                    ranges,
                    negated,
                    len,
                }) => {
                    let inside = |ch: char| ranges.iter().any(|&(a, b)| a <= ch && ch <= b);
                    let pick = if negated {
                        ('0'..='9')
                            .chain('A'..='Z')
                            .chain('a'..='z')
                            .chain(['_'])
                            .find(|&ch| !inside(ch))
                    } else {
                        ranges.first().map(|r| r.0)
                    };
                    out.push(pick.unwrap_or('0'));
                    i += 1 + len;
                }
                None => {
                    out.push('[');
                    i += 1;
                }
            },
            ch => {
                out.push(ch);
                i += 1;
            }
        }
    }
    out
}

/// A bracket expression of an fnmatch pattern.
struct Bracket {
    /// Inclusive character ranges (a single character is a range of one).
    ranges: Vec<(char, char)>,
    /// `[!...]` or `[^...]`.
    negated: bool,
    /// Characters after the `[`, up to and including the closing `]`.
    len: usize,
}

/// The bracket expression after a `[`; None without a closing `]`.
fn parse_bracket(c: &[char]) -> Option<Bracket> {
    let mut i = 0;
    let negated = matches!(c.first(), Some('!' | '^'));
    if negated {
        i += 1;
    }
    let mut ranges = Vec::new();
    let mut first = true;
    while i < c.len() {
        let ch = c[i];
        if ch == ']' && !first {
            return Some(Bracket {
                ranges,
                negated,
                len: i + 1,
            });
        }
        first = false;
        if i + 2 < c.len() && c[i + 1] == '-' && c[i + 2] != ']' {
            ranges.push((ch, c[i + 2]));
            i += 3;
        } else {
            ranges.push((ch, ch));
            i += 1;
        }
    }
    None
}

/// The runtime rows of one tree: see the module documentation.
fn runtime_rows(sel: &Selection, modinfo: bool) -> Vec<RowSpec> {
    let names = |f: fn(&(String, String)) -> Query| sel.modules.iter().map(f).collect::<Vec<_>>();
    let by_name = names(|(n, _)| Query::Name(n.clone()));
    // modinfo gets the normalised spelling, modprobe the file's (both are accepted).
    let by_modname = names(|(n, _)| Query::Name(n.replace('-', "_")));
    let queries: Vec<Query> = sel.queries.iter().cloned().map(Query::Name).collect();
    let row =
        |item: &str, tool: Tool, args: &[&'static str], queries: &[Query], batch: usize| RowSpec {
            item: item.to_string(),
            tool,
            args: args.to_vec(),
            queries: queries.to_vec(),
            batch,
            our_index: args.is_empty() || tool == Tool::Modprobe,
        };
    let mut rows = vec![
        row(
            "modprobe -D (modules)",
            Tool::Modprobe,
            &["-D"],
            &by_name,
            1,
        ),
        row(
            "modprobe -D (queries)",
            Tool::Modprobe,
            &["-D"],
            &queries,
            1,
        ),
        row(
            "modprobe -R (queries)",
            Tool::Modprobe,
            &["-R"],
            &queries,
            1,
        ),
    ];
    if modinfo {
        let b = MODINFO_BATCH;
        rows.extend([
            row("modinfo (names)", Tool::Modinfo, &[], &by_modname, b),
            RowSpec {
                our_index: false,
                ..row(
                    "modinfo (paths)",
                    Tool::Modinfo,
                    &[],
                    &names(|(_, p)| Query::Path(p.clone())),
                    b,
                )
            },
            row("modinfo (queries)", Tool::Modinfo, &[], &queries, b),
            row(
                "modinfo (builtin)",
                Tool::Modinfo,
                &[],
                &sel.builtin
                    .iter()
                    .cloned()
                    .map(Query::Name)
                    .collect::<Vec<_>>(),
                b,
            ),
            row("modinfo -0", Tool::Modinfo, &["-0"], &by_modname, b),
        ]);
        for f in ["firmware", "depends", "alias", "vermagic", "parm"] {
            rows.push(RowSpec {
                item: format!("modinfo -F {f}"),
                tool: Tool::Modinfo,
                args: vec!["-F", f],
                queries: by_modname.clone(),
                batch: b,
                our_index: false,
            });
        }
    }
    rows
}

/// Compare modprobe and modinfo on the tree indexed by kmod (both tools on the same copy),
/// then ours on the copy indexed by ours against kmod's outputs of the first pass (skipped
/// when both are the same copy). `modinfo`: whether kmod can read the module files (not
/// `.ko.gz`).
fn runtime_section(
    env: &RuntimeEnv,
    ctx: &TreeCtx<'_>,
    modinfo: bool,
    checks: &mut Vec<Check>,
) -> Result<RuntimeTiming, String> {
    let started = Instant::now();
    let stats = RtStats::default();
    let sel = Selection::load(&ctx.kmod_moddir())?;
    log(&format!(
        "{}: runtime: {} modules, {} builtin names; {}",
        ctx.label,
        sel.modules.len(),
        sel.builtin.len(),
        sel.summary
    ));
    let rows = runtime_rows(&sel, modinfo);
    let mut second = Vec::new();
    for spec in &rows {
        let (kmod_bin, ours_bin) = match spec.tool {
            Tool::Modprobe => (&env.kmod_modprobe, &env.ours_modprobe),
            Tool::Modinfo => (&env.kmod_modinfo, &env.ours_modinfo),
        };
        let ours_bin = match ours_bin {
            Ok(b) => b,
            Err(e) => {
                checks.push(ctx.check(
                    &spec.item,
                    Outcome::fail("ERROR", format!("our {}: {e}", spec.tool.name())),
                ));
                continue;
            }
        };
        let t = Instant::now();
        let kmod = Side {
            bin: kmod_bin,
            root: &ctx.kmod_root,
        };
        let first = run_row(
            env,
            ctx.kver,
            spec,
            kmod,
            Side {
                bin: ours_bin,
                root: &ctx.kmod_root,
            },
            None,
            &stats,
        );
        let (outcome, kmod_outs) = match first {
            Ok((r, k)) => (r.outcome(), Some(k)),
            Err(e) => (Outcome::fail("ERROR", e), None),
        };
        log(&format!(
            "{}: {} -> {} ({:.1}s)",
            ctx.label,
            spec.item,
            outcome.cell,
            t.elapsed().as_secs_f64()
        ));
        checks.push(ctx.check(&spec.item, outcome));
        if !spec.our_index || ctx.kmod_root == ctx.ours_root {
            continue;
        }
        // Second pass: ours on our index, against kmod's outputs just collected.
        let item = format!("{} [our index]", spec.item);
        let outcome = match kmod_outs {
            None => Outcome::fail("ERROR", "no kmod outputs from the first pass"),
            Some(k) => run_row(
                env,
                ctx.kver,
                spec,
                kmod,
                Side {
                    bin: ours_bin,
                    root: &ctx.ours_root,
                },
                Some(&k),
                &stats,
            )
            .map_or_else(|e| Outcome::fail("ERROR", e), |(r, _)| r.outcome()),
        };
        second.push(ctx.check(&item, outcome));
    }
    checks.extend(second);
    if !modinfo {
        checks.push(
            ctx.check(
                "modinfo",
                Outcome::pass(
                    "n/a",
                    Some(
                        "kmod 30 cannot read .ko.gz: modinfo rows are compared on 6.12-xz; the \
                     modprobe rows ran both tools on the copy indexed by ours"
                            .into(),
                    ),
                ),
            ),
        );
    }
    let micros = |a: &AtomicUsize| {
        Duration::from_micros(u64::try_from(a.load(AtomicOrdering::Relaxed)).unwrap_or(u64::MAX))
    };
    Ok(RuntimeTiming {
        wall: started.elapsed(),
        procs: stats.procs.load(AtomicOrdering::Relaxed),
        kmod: micros(&stats.kmod_micros),
        ours: micros(&stats.ours_micros),
    })
}

// ---------------------------------------------------------------------------------------
// Trees: copies and derived (recompressed) variants

#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum CopyMode {
    /// Copy every file.
    Copy,
    /// Hard-link module files (depmod only reads them), copy everything else.
    LinkModules,
}

/// Copy MODDIR `src` to `dst` (which must not exist), leaving out generated index files
/// at the top level. Symlinks are recreated as symlinks.
pub(crate) fn copy_tree(src: &Path, dst: &Path, mode: CopyMode) -> Result<(), String> {
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
pub(crate) fn warm_page_cache(dir: &Path) -> Result<(), String> {
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
pub(crate) fn prepare_source(
    refs: &Refs,
    tree: &KernelTree,
    source: Source,
) -> Result<PathBuf, String> {
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
pub(crate) fn prepare_work_dir(compat: &Path) -> Result<PathBuf, String> {
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
    fn wildcard_instances() {
        assert_eq!(
            instantiate("pci:v00008086d*sv*sd*bc*sc*i*", 0),
            "pci:v00008086d00001234sv0sdA1bc00001234sc0iA1"
        );
        assert_eq!(instantiate("a?b[xyz]c[!0-9]d\\*e", 1), "a0bxcAd*e");
        assert_eq!(instantiate("x[]a]y[^A-Z0-9]", 0), "x]ya");
        // No closing bracket: a literal '['.
        assert_eq!(instantiate("x[ab", 0), "x[ab");
    }

    #[test]
    fn even_picks() {
        let v: Vec<u32> = (0..10).collect();
        assert_eq!(spread(&v, 3), vec![0, 3, 6]);
        assert_eq!(spread(&v, 20), v);
        let items: Vec<String> = ["pci:1", "pci:2", "pci:3", "pci:4", "usb:1", "fs-a", "fs-b"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let picked = round_robin(&items, 4, alias_family);
        assert_eq!(picked.len(), 4);
        for fam in ["pci:", "usb:", "fs-"] {
            assert!(picked.iter().any(|p| p.starts_with(fam)), "{picked:?}");
        }
        assert_eq!(round_robin(&items, 100, alias_family).len(), items.len());
        assert_eq!(alias_family("ip6t_REJECT"), "ip6t");
        assert_eq!(alias_family("char-major-10-1"), "char");
    }

    #[test]
    fn stderr_lines() {
        let (missing, extra) = line_diff(&["a", "b", "c"], &["a", "x", "b", "c", "y"]);
        assert!(missing.is_empty());
        assert_eq!(extra, vec!["x", "y"]);
        let (missing, extra) = line_diff(&["a", "b", "c"], &["a", "c", "d"]);
        assert_eq!(missing, vec!["b"]);
        assert_eq!(extra, vec!["d"]);
    }

    #[test]
    fn call_comparison() {
        let out = |o: &str, e: &str, c: i32| Out {
            stdout: o.as_bytes().to_vec(),
            stderr: e.as_bytes().to_vec(),
            code: Some(c),
        };
        let k = out("x\n", "m: FATAL: y\n", 1);
        let c = compare_call(&k, &out("x\n", "m: FATAL: y\nm: NOTE: z\n", 1));
        assert!(c.failure.is_none());
        assert_eq!(c.extra, vec!["m: NOTE: z"]);
        let c = compare_call(&k, &out("x\n", "m: NOTE: z\n", 1));
        assert!(c.failure.unwrap_or_default().contains("missing"));
        let c = compare_call(&k, &out("x\n", "m: FATAL: y\n", 0));
        assert!(c.failure.unwrap_or_default().contains("exit status"));
        let f = compare_call(&k, &out("x\ny\n", "m: FATAL: y\n", 1)).failure;
        let f = f.unwrap_or_default();
        assert!(
            f.contains("@@ record 2 @@") && f.contains("+ \"y\\n\""),
            "{f}"
        );
        assert_eq!(records(b"a\0b\nc"), vec![&b"a\0"[..], b"b\n", b"c"]);
    }

    #[test]
    fn row_cells() {
        let mut r = RowResult {
            queries: 10,
            ..RowResult::default()
        };
        assert_eq!(r.outcome().cell, "identical (10)");
        r.note_extra(
            &["modprobe: NOTE: 'foo]' is odd".to_string()],
            &[Query::Name("foo]".into())],
            &[],
        );
        let o = r.outcome();
        assert!(o.pass && o.cell == "identical (10)*");
        assert!(o.detail.unwrap_or_default().contains("NOTE: '<Q>' is odd"));
        r.failing = 2;
        r.failures
            .push(("modprobe -R x".into(), "exit status".into()));
        let o = r.outcome();
        assert!(!o.pass && o.cell == "DIFFERS 2/10");
    }

    #[test]
    fn section_flags() {
        let o = parse_args(&["--runtime-only".into(), "--runtime-all".into()]);
        assert!(o.is_ok_and(|o| !o.depmod && o.runtime && o.runtime_all));
        assert!(parse_args(&["--depmod-only".into()]).is_ok_and(|o| o.depmod && !o.runtime));
        assert!(parse_args(&["--depmod-only".into(), "--runtime-only".into()]).is_err());
    }

    #[test]
    fn tree_labels() {
        assert!(parse_args(&["--tree".into(), "6.12-gz,6.1-cloud".into()]).is_ok());
        assert!(parse_args(&["--tree".into(), "nope".into()]).is_err());
    }
}
