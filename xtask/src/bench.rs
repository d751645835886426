//! `cargo xtask bench`: our tools against kmod 30 on the real trees, in paired runs.
//!
//! Rows:
//!
//! * depmod, full run, on fresh copies (module files hard-linked, no index files, no cache)
//!   of `6.12-xz` (the 6.12 package as shipped), `6.12-zst` and `6.12-ko` (the same tree
//!   recompressed / decompressed, built by `compat`) and `6.1-cloud`;
//! * depmod, incremental, on the same trees: our cache is primed by one unmeasured run,
//!   then four rows, each changing both copies before every pair: one module touched;
//!   one added (a copy of another module under a new name); one removed; and all three
//!   at once (`--quick`: only the last). Ours runs with its cache, kmod's does its only
//!   kind of run;
//! * `modprobe --show-depends` and `modinfo -F firmware`, one process per query, over a
//!   fixed set of module names and aliases of the 6.12 tree (both tools on the indexes
//!   kmod's depmod wrote). The row reports the cost per call. It is skipped with a note when
//!   our tool does not build or does not run.
//!
//! Every pair runs ours, then kmod's, back to back; a row shows the median of each side
//! over the pairs and the median of the per-pair ratios ours/kmod. An incremental row's
//! note also gives its *floor*: after each pair, a process that only does what any
//! incremental depmod must (`--floor`: stat every directory and module file of the tree,
//! replace the files our run replaced, durably, with their own bytes; it computes
//! nothing), timed like the others, as a ratio to kmod's run of the same pair.
//!
//! Both depmods get `-C <empty dir>` (no host depmod.d) and `-b <copy>`. Times come from
//! a helper process (this binary with `--child`) that runs the commands and reads
//! `getrusage(RUSAGE_CHILDREN)`: wall clock, user+system CPU and the peak RSS
//! (`ru_maxrss`) of exactly those commands. After each depmod pair the ten files both
//! write are compared byte for byte.
//!
//! Options: `--pairs N` (default 5), `--quick` (1 pair, 40 queries: a CI smoke test),
//! `--tree LABEL[,LABEL]`, `--ours DIR` (a directory holding our `depmod`, `modprobe` and
//! `modinfo`; default: build them with `cargo build --release`).

use crate::compat::{self, CopyMode, Source};
use crate::refs::{self, Refs};
use std::ffi::OsString;
use std::fmt::Write as _;
use std::fs;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const USAGE: &str =
    "usage: cargo xtask bench [--pairs N] [--quick] [--tree LABEL[,LABEL...]] [--ours DIR]
  labels: 6.12-xz, 6.12-zst, 6.12-ko, 6.1-cloud";

/// Trees: label, index into `Refs::trees`, how the modules are stored.
const TREES: [(&str, usize, Source); 4] = [
    ("6.12-xz", 1, Source::Pristine),
    ("6.12-zst", 1, Source::Zstd),
    ("6.12-ko", 1, Source::Plain),
    ("6.1-cloud", 0, Source::Pristine),
];
/// The tree the runtime tools are measured on.
const RUNTIME_TREE: &str = "6.12-xz";
/// Queries for the runtime rows (half module names, half aliases).
const QUERIES: usize = 200;
const QUICK_QUERIES: usize = 40;
/// Our depmod stores a module in its cache only when the file is at least this old (its
/// `cache::SETTLE` is 2 s); copies are given this long before the first run.
const SETTLE: Duration = Duration::from_millis(2100);
/// Output files both depmods write.
const COMPARED: [&str; 10] = compat::DEPMOD_OUTPUTS;

struct Options {
    pairs: usize,
    quick: bool,
    trees: Vec<String>,
    ours: Option<PathBuf>,
}

fn parse_args(args: &[String]) -> Result<Options, String> {
    let mut o = Options {
        pairs: 5,
        quick: false,
        trees: Vec::new(),
        ours: None,
    };
    let mut pairs = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--quick" => o.quick = true,
            "--pairs" => {
                let v = it.next().ok_or("--pairs needs a number")?;
                let n: usize = v.parse().map_err(|_| format!("bad --pairs {v:?}"))?;
                pairs = Some(n.max(1));
            }
            "--tree" => {
                let v = it.next().ok_or("--tree needs a label")?;
                o.trees.extend(v.split(',').map(String::from));
            }
            "--ours" => o.ours = Some(PathBuf::from(it.next().ok_or("--ours needs a dir")?)),
            "-h" | "--help" => return Err(USAGE.into()),
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    o.pairs = pairs.unwrap_or(if o.quick { 1 } else { 5 });
    for t in &o.trees {
        if !TREES.iter().any(|(l, _, _)| l == t) {
            return Err(format!("unknown tree {t:?}\n{USAGE}"));
        }
    }
    Ok(o)
}

fn log(msg: &str) {
    eprintln!("bench: {msg}");
}

/// One measurement: a command, or a batch of commands run one after the other.
#[derive(Debug, Clone, Copy, Default)]
struct Sample {
    /// Seconds.
    wall: f64,
    /// User + system seconds.
    cpu: f64,
    /// Largest peak RSS of the commands, KiB.
    rss_kb: u64,
    /// Commands that exited non-zero.
    failed: usize,
    /// Commands killed by a signal or that could not be started.
    crashed: usize,
}

/// `--child RESULT SCRIPT`: run every command of SCRIPT (one per line, tab-separated
/// argv) and write "wall_ns user_us sys_us maxrss_kb failed crashed" to RESULT. Only this
/// process's children count in its `RUSAGE_CHILDREN`, so the figures are exactly theirs.
fn child(args: &[String]) -> Result<(), String> {
    use nix::sys::resource::{getrusage, UsageWho};
    use nix::sys::time::TimeValLike;
    let [result, script] = args else {
        return Err("--child needs RESULT SCRIPT".into());
    };
    let text = fs::read_to_string(script).map_err(|e| format!("{script}: {e}"))?;
    let errlog = fs::File::create(format!("{result}.stderr")).map_err(|e| e.to_string())?;
    let started = Instant::now();
    let (mut failed, mut crashed) = (0usize, 0usize);
    for line in text.lines().filter(|l| !l.is_empty()) {
        let mut argv = line.split('\t');
        let Some(program) = argv.next() else { continue };
        let status = Command::new(program)
            .args(argv)
            .env("LC_ALL", "C")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(errlog.try_clone().map_err(|e| e.to_string())?)
            .status();
        match status {
            Ok(s) if s.success() => {}
            Ok(s) if s.signal().is_some() || matches!(s.code(), Some(126 | 127)) => crashed += 1,
            Ok(_) => failed += 1,
            Err(_) => crashed += 1,
        }
    }
    let wall = started.elapsed();
    let u = getrusage(UsageWho::RUSAGE_CHILDREN).map_err(|e| format!("getrusage: {e}"))?;
    let line = format!(
        "{} {} {} {} {failed} {crashed}\n",
        wall.as_nanos(),
        u.user_time().num_microseconds(),
        u.system_time().num_microseconds(),
        u.max_rss(),
    );
    fs::write(result, line).map_err(|e| format!("{result}: {e}"))
}

/// `--floor LIST DIR FILE...`: the least work an incremental depmod run does. Stat every
/// path LIST names, one per line (each directory and module file of the tree: a change
/// of any of them must be seen, and a walk that keeps directory listings still stats
/// each directory to know its listing holds); then replace each FILE of DIR by its own
/// bytes as the indexes are replaced (temporary file, fsync, rename; all written first,
/// their fsyncs issued at once, the cheapest order), then fsync DIR. Nothing is
/// computed: the bytes are read from the files in place.
fn floor(args: &[String]) -> Result<(), String> {
    use std::io::Write as _;
    let [list, dir, files @ ..] = args else {
        return Err("--floor needs LIST DIR FILE...".into());
    };
    let text = fs::read_to_string(list).map_err(|e| format!("{list}: {e}"))?;
    let missing = text.lines().filter(|p| fs::metadata(p).is_err()).count();
    if missing > 0 {
        return Err(format!(
            "--floor: {missing} paths of {list} could not be stat'ed"
        ));
    }
    let dir = Path::new(dir);
    let mut written = Vec::new();
    for name in files {
        let path = dir.join(name);
        let tmp = dir.join(format!("{name}.floor-tmp"));
        let data = fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let mut f = fs::File::create(&tmp).map_err(|e| format!("{}: {e}", tmp.display()))?;
        f.write_all(&data)
            .map_err(|e| format!("{}: {e}", tmp.display()))?;
        written.push((f, tmp, path));
    }
    std::thread::scope(|s| {
        let syncs: Vec<_> = written
            .iter()
            .map(|(f, tmp, _)| {
                s.spawn(move || f.sync_all().map_err(|e| format!("{}: {e}", tmp.display())))
            })
            .collect();
        syncs
            .into_iter()
            .try_for_each(|h| h.join().map_err(|_| "fsync thread failed".to_string())?)
    })?;
    for (_, tmp, path) in &written {
        fs::rename(tmp, path).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| format!("{}: {e}", dir.display()))
}

/// Every directory and module file under `moddir` (absolute paths), for `--floor`.
fn floor_list(moddir: &Path) -> Result<String, String> {
    let (dirs, modules) = tree_entries(moddir)?;
    let mut out = String::new();
    for p in dirs.iter().chain(&modules) {
        out.push_str(&p.to_string_lossy());
        out.push('\n');
    }
    Ok(out)
}

/// (device, inode) of each compared output in `moddir` (None: missing).
fn output_inodes(moddir: &Path) -> Vec<Option<(u64, u64)>> {
    use std::os::unix::fs::MetadataExt;
    COMPARED
        .iter()
        .map(|n| {
            fs::metadata(moddir.join(n))
                .ok()
                .map(|m| (m.dev(), m.ino()))
        })
        .collect()
}

/// Run `cmds` through the helper and return what it measured.
fn measure(work: &Path, cmds: &[Vec<OsString>]) -> Result<Sample, String> {
    let script = work.join("cmds.tsv");
    let result = work.join("result");
    let mut text = String::new();
    for c in cmds {
        let fields: Vec<&str> = c
            .iter()
            .map(|a| {
                a.to_str()
                    .ok_or_else(|| format!("non-UTF-8 argument {a:?}"))
            })
            .collect::<Result<_, _>>()?;
        if fields.iter().any(|f| f.contains(['\t', '\n'])) {
            return Err(format!("argument with a tab or newline: {fields:?}"));
        }
        text.push_str(&fields.join("\t"));
        text.push('\n');
    }
    fs::write(&script, text).map_err(|e| format!("{}: {e}", script.display()))?;
    let _ = fs::remove_file(&result);
    let me = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    let status = Command::new(me)
        .arg("bench")
        .arg("--child")
        .arg(&result)
        .arg(&script)
        .stdin(Stdio::null())
        .status()
        .map_err(|e| format!("bench helper: {e}"))?;
    if !status.success() {
        return Err(format!("bench helper failed: {status}"));
    }
    let line = fs::read_to_string(&result).map_err(|e| format!("{}: {e}", result.display()))?;
    let v: Vec<u128> = line
        .split_whitespace()
        .map(|x| {
            x.parse::<u128>()
                .map_err(|_| format!("bad helper output {line:?}"))
        })
        .collect::<Result<_, _>>()?;
    let [wall_ns, user_us, sys_us, rss, failed, crashed] = v[..] else {
        return Err(format!("bad helper output {line:?}"));
    };
    Ok(Sample {
        wall: wall_ns as f64 / 1e9,
        cpu: (user_us + sys_us) as f64 / 1e6,
        rss_kb: rss as u64,
        failed: failed as usize,
        crashed: crashed as usize,
    })
}

/// The first lines the last helper run's commands wrote to stderr.
fn helper_stderr(work: &Path) -> String {
    let text = fs::read_to_string(work.join("result.stderr")).unwrap_or_default();
    text.lines().take(5).collect::<Vec<_>>().join("\n    ")
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// One table row: the samples of every pair.
struct Row {
    case: String,
    /// Divide times by this (per-call rows).
    per: f64,
    ours: Vec<Sample>,
    kmod: Vec<Sample>,
    /// Incremental rows: the floor's sample of every pair (see `floor`).
    floor: Vec<Sample>,
    /// Extra remarks (output comparison, failures).
    note: String,
}

impl Row {
    fn new(case: String, per: f64) -> Row {
        Row {
            case,
            per,
            ours: Vec::new(),
            kmod: Vec::new(),
            floor: Vec::new(),
            note: String::new(),
        }
    }

    fn med(&self, side: &[Sample], f: fn(&Sample) -> f64) -> f64 {
        median(side.iter().map(f).collect())
    }

    /// The floor's note: its wall-time ratio to kmod's run of the same pair, and its time.
    fn floor_note(&self) -> Option<String> {
        if self.floor.is_empty() {
            return None;
        }
        let ratio = median(
            self.floor
                .iter()
                .zip(&self.kmod)
                .map(|(f, k)| f.wall / k.wall)
                .collect(),
        );
        let wall = self.med(&self.floor, |s| s.wall);
        Some(format!("floor {ratio:.3} ({})", fmt_time(wall)))
    }

    fn ratio(&self, f: fn(&Sample) -> f64) -> f64 {
        median(
            self.ours
                .iter()
                .zip(&self.kmod)
                .map(|(o, k)| f(o) / f(k))
                .collect(),
        )
    }
}

fn fmt_time(secs: f64) -> String {
    if secs >= 1.0 {
        format!("{secs:.2} s")
    } else if secs >= 0.001 {
        format!("{:.1} ms", secs * 1e3)
    } else {
        format!("{:.0} µs", secs * 1e6)
    }
}

fn table(rows: &[Row]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "| case | wall ours | wall kmod | ratio | CPU ours | CPU kmod | ratio | peak RSS ours | peak RSS kmod | ratio | notes |"
    );
    let _ = writeln!(
        out,
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"
    );
    for r in rows {
        if r.ours.is_empty() || r.kmod.is_empty() {
            let _ = writeln!(
                out,
                "| {} | – | – | – | – | – | – | – | – | – | {} |",
                r.case, r.note
            );
            continue;
        }
        let wall = |s: &Sample| s.wall;
        let cpu = |s: &Sample| s.cpu;
        let rss = |s: &Sample| s.rss_kb as f64;
        let _ = writeln!(
            out,
            "| {} | {} | {} | {:.2} | {} | {} | {:.2} | {:.1} MiB | {:.1} MiB | {:.2} | {} |",
            r.case,
            fmt_time(r.med(&r.ours, wall) / r.per),
            fmt_time(r.med(&r.kmod, wall) / r.per),
            r.ratio(wall),
            fmt_time(r.med(&r.ours, cpu) / r.per),
            fmt_time(r.med(&r.kmod, cpu) / r.per),
            r.ratio(cpu),
            r.med(&r.ours, rss) / 1024.0,
            r.med(&r.kmod, rss) / 1024.0,
            r.ratio(rss),
            r.note
        );
    }
    out
}

fn loadavg() -> String {
    fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

fn cpu_model() -> String {
    fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "?".into())
}

/// Our tools: built here (or taken from `--ours`), then copied into the scratch directory
/// so that a concurrent rebuild cannot change them during the run.
struct Ours {
    depmod: PathBuf,
    modprobe: Result<PathBuf, String>,
    modinfo: Result<PathBuf, String>,
}

fn build(package: &str) -> Result<PathBuf, String> {
    log(&format!("cargo build --release -p {package}"));
    refs::cargo_build_release(package)
}

impl Ours {
    fn get(opt: Option<&Path>, dir: &Path) -> Result<Ours, String> {
        let find = |name: &str| -> Result<PathBuf, String> {
            let src = match opt {
                Some(d) => d.join(name),
                None => build(name)?,
            };
            if !src.is_file() {
                return Err(format!("{}: no such file", src.display()));
            }
            let dst = dir.join(name);
            fs::copy(&src, &dst).map_err(|e| format!("copy {}: {e}", src.display()))?;
            Ok(dst)
        };
        Ok(Ours {
            depmod: find("depmod")?,
            modprobe: find("modprobe"),
            modinfo: find("modinfo"),
        })
    }
}

/// A runtime-tool row: our binary (or why there is none), kmod's, the arguments before
/// the query.
struct RuntimeCase<'a> {
    name: &'static str,
    ours: &'a Result<PathBuf, String>,
    kmod: PathBuf,
    args: Vec<OsString>,
}

/// The two copies of one tree.
struct Copies {
    label: &'static str,
    kver: String,
    ours: PathBuf,
    kmod: PathBuf,
    /// Module files, relative to MODDIR, sorted.
    modules: Vec<String>,
}

impl Copies {
    fn moddir(&self, root: &Path) -> PathBuf {
        root.join("lib/modules").join(&self.kver)
    }
}

fn os(s: impl Into<OsString>) -> OsString {
    s.into()
}

fn depmod_cmd(bin: &Path, root: &Path, kver: &str, empty: &Path) -> Vec<OsString> {
    vec![os(bin), os("-C"), os(empty), os("-b"), os(root), os(kver)]
}

/// Remove everything a depmod run writes (both tools' outputs and our cache).
fn clean(moddir: &Path) -> Result<(), String> {
    for e in fs::read_dir(moddir).map_err(|e| format!("{}: {e}", moddir.display()))? {
        let e = e.map_err(|e| e.to_string())?;
        let n = e.file_name().to_string_lossy().into_owned();
        let input = [
            "modules.order",
            "modules.builtin",
            "modules.builtin.modinfo",
        ];
        if n.starts_with("modules.") && !input.contains(&n.as_str()) {
            fs::remove_file(e.path()).map_err(|err| format!("{n}: {err}"))?;
        }
    }
    Ok(())
}

/// Compare the files both depmods wrote.
fn same_outputs(c: &Copies) -> Result<bool, String> {
    for name in COMPARED {
        let a = fs::read(c.moddir(&c.ours).join(name)).map_err(|e| format!("{name}: {e}"))?;
        let b = fs::read(c.moddir(&c.kmod).join(name)).map_err(|e| format!("{name}: {e}"))?;
        if a != b {
            return Ok(false);
        }
    }
    Ok(true)
}

/// The directories under `moddir` and the module files in them (absolute paths).
fn tree_entries(moddir: &Path) -> Result<(Vec<PathBuf>, Vec<PathBuf>), String> {
    let (mut dirs, mut modules) = (Vec::new(), Vec::new());
    let mut stack = vec![moddir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).map_err(|e| format!("{}: {e}", d.display()))? {
            let e = e.map_err(|e| e.to_string())?;
            let ft = e.file_type().map_err(|e| e.to_string())?;
            let p = e.path();
            if ft.is_dir() {
                dirs.push(p.clone());
                stack.push(p);
            } else if ft.is_file() && refs::is_module_name(&e.file_name().to_string_lossy()) {
                modules.push(p);
            }
        }
    }
    Ok((dirs, modules))
}

/// The module files under `moddir`, relative to it, sorted.
fn module_files(moddir: &Path) -> Result<Vec<String>, String> {
    let mut out: Vec<String> = tree_entries(moddir)?
        .1
        .iter()
        .filter_map(|p| p.strip_prefix(moddir).ok())
        .map(|rel| rel.to_string_lossy().into_owned())
        .collect();
    out.sort();
    Ok(out)
}

/// The module-file extension of `name` (".ko", ".ko.xz", ...).
fn extension(name: &str) -> &str {
    name.find(".ko").map_or("", |i| &name[i..])
}

/// What an incremental row changes in both copies before each of its pairs.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Edit {
    /// Module A's modification time is set to now (same bytes).
    Touch,
    /// A copy of module B is added under a new name (the tree grows by one each pair).
    Add,
    /// One module is removed (a different one each pair, all past the middle of the tree).
    Remove,
    /// All three at once: A touched, a copy of B added, and module C (first pair) or the
    /// copy the previous pair added removed.
    All,
}

impl Edit {
    /// The rows, in the order they run (the modules `Remove` takes are none of A, B, C).
    const ROWS: [Edit; 4] = [Edit::Touch, Edit::Add, Edit::Remove, Edit::All];

    fn describe(self) -> &'static str {
        match self {
            Edit::Touch => "1 touched",
            Edit::Add => "1 added",
            Edit::Remove => "1 removed",
            Edit::All => "1 touched + 1 added + 1 removed",
        }
    }
}

/// Apply edit `kind` for pair `k` to one copy (see [`Edit`]). Module A's link to the
/// shared file is broken before it is touched, so that only this copy changes.
fn edit(c: &Copies, root: &Path, kind: Edit, k: usize) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    let md = c.moddir(root);
    let n = c.modules.len();
    let (a, b, cc) = (&c.modules[n / 3], &c.modules[n / 2], &c.modules[2 * n / 3]);
    let tag = if kind == Edit::All { "x" } else { "a" };
    let added = |k: usize| {
        let dir = Path::new(b).parent().unwrap_or(Path::new(""));
        md.join(dir)
            .join(format!("kmodrs_bench_added_{tag}{k}{}", extension(b)))
    };
    if matches!(kind, Edit::Touch | Edit::All) {
        let pa = md.join(a);
        let shared = fs::metadata(&pa).map_err(|e| format!("{a}: {e}"))?.nlink() > 1;
        if shared {
            let tmp = md.join(format!("{a}.bench-tmp"));
            fs::copy(&pa, &tmp).map_err(|e| format!("copy {a}: {e}"))?;
            fs::rename(&tmp, &pa).map_err(|e| format!("rename {a}: {e}"))?;
        }
        fs::File::options()
            .write(true)
            .open(&pa)
            .and_then(|f| f.set_modified(std::time::SystemTime::now()))
            .map_err(|e| format!("touch {a}: {e}"))?;
    }
    if matches!(kind, Edit::Add | Edit::All) {
        fs::copy(md.join(b), added(k)).map_err(|e| format!("add copy of {b}: {e}"))?;
    }
    let gone = match kind {
        Edit::Touch | Edit::Add => None,
        Edit::Remove => Some(md.join(&c.modules[(2 * n / 3 + 1 + k) % n])),
        Edit::All if k == 0 => Some(md.join(cc)),
        Edit::All => Some(added(k - 1)),
    };
    if let Some(gone) = gone {
        fs::remove_file(&gone).map_err(|e| format!("remove {}: {e}", gone.display()))?;
    }
    Ok(())
}

/// The note of a depmod row: were both tools' files the same after every pair?
fn outputs_note(identical: bool) -> String {
    if identical {
        "outputs identical".into()
    } else {
        "OUTPUTS DIFFER".into()
    }
}

/// Pick `n` items spread evenly over `items`.
fn spread<T: Clone>(items: &[T], n: usize) -> Vec<T> {
    if items.len() <= n {
        return items.to_vec();
    }
    (0..n).map(|i| items[i * items.len() / n].clone()).collect()
}

/// Module names and concrete (wildcard-free) aliases of the kmod-indexed copy.
fn queries(moddir: &Path, n: usize) -> Result<Vec<String>, String> {
    let dep = fs::read_to_string(moddir.join("modules.dep")).map_err(|e| e.to_string())?;
    let names: Vec<String> = dep
        .lines()
        .filter_map(|l| l.split(':').next())
        .filter_map(|p| Path::new(p).file_name())
        .map(|f| {
            let f = f.to_string_lossy();
            f[..f.find(".ko").unwrap_or(f.len())].to_string()
        })
        .collect();
    let alias = fs::read_to_string(moddir.join("modules.alias")).map_err(|e| e.to_string())?;
    let aliases: Vec<String> = alias
        .lines()
        .filter_map(|l| l.strip_prefix("alias "))
        .filter_map(|l| l.split(' ').next())
        .filter(|a| !a.contains(['*', '?', '[']))
        .map(String::from)
        .collect();
    let mut q = spread(&names, n / 2);
    q.extend(spread(&aliases, n - q.len()));
    Ok(q)
}

pub fn run(args: &[String]) -> Result<(), String> {
    match args.first().map(String::as_str) {
        Some("--child") => return child(&args[1..]),
        Some("--floor") => return floor(&args[1..]),
        _ => {}
    }
    let opts = parse_args(args)?;
    let refs = refs::ensure()?;
    let work = compat::prepare_work_dir(&refs.cache.join("bench"))?;
    let result = bench(&opts, &refs, &work);
    let _ = fs::remove_dir_all(&work);
    result
}

fn bench(opts: &Options, refs: &Refs, work: &Path) -> Result<(), String> {
    let bin = work.join("bin");
    fs::create_dir_all(&bin).map_err(|e| e.to_string())?;
    let ours = Ours::get(opts.ours.as_deref(), &bin)?;
    let kmod_depmod = refs.tool("depmod");
    let empty = work.join("empty.d");
    fs::create_dir_all(&empty).map_err(|e| e.to_string())?;
    let load_before = loadavg();

    // Fresh copies of every selected tree.
    let mut copies = Vec::new();
    for &(label, tree, source) in &TREES {
        if !opts.trees.is_empty() && !opts.trees.iter().any(|t| t == label) {
            continue;
        }
        let t = &refs.trees[tree];
        let src = compat::prepare_source(refs, t, source)?;
        let src_moddir = src.join("lib/modules").join(&t.kver);
        let c = Copies {
            label,
            kver: t.kver.clone(),
            ours: work.join(label).join("ours"),
            kmod: work.join(label).join("kmod"),
            modules: module_files(&src_moddir)?,
        };
        log(&format!("{label}: copying {} modules", c.modules.len()));
        for root in [&c.ours, &c.kmod] {
            compat::copy_tree(&src_moddir, &c.moddir(root), CopyMode::LinkModules)?;
            compat::warm_page_cache(&c.moddir(root))?;
        }
        copies.push(c);
    }
    let copied = Instant::now();

    let mut rows = Vec::new();
    let pairs = opts.pairs;
    // Full runs.
    for c in &copies {
        if let Some(wait) = SETTLE.checked_sub(copied.elapsed()) {
            std::thread::sleep(wait);
        }
        let mut row = Row::new(format!("depmod {}, full", c.label), 1.0);
        let mut identical = true;
        for p in 0..pairs {
            log(&format!("{}: full run, pair {}/{pairs}", c.label, p + 1));
            for (root, bin, side) in [
                (&c.ours, &ours.depmod, true),
                (&c.kmod, &kmod_depmod, false),
            ] {
                clean(&c.moddir(root))?;
                let s = measure(work, &[depmod_cmd(bin, root, &c.kver, &empty)])?;
                if s.failed + s.crashed > 0 {
                    return Err(format!(
                        "{} depmod failed on {}:\n    {}",
                        if side { "our" } else { "kmod's" },
                        c.label,
                        helper_stderr(work)
                    ));
                }
                if side {
                    row.ours.push(s)
                } else {
                    row.kmod.push(s)
                }
            }
            identical &= same_outputs(c)?;
        }
        row.note = outputs_note(identical);
        rows.push(row);
    }
    // Incremental runs: one row per kind of edit (only all three at once with --quick).
    let edits: &[Edit] = if opts.quick {
        &[Edit::All]
    } else {
        &Edit::ROWS
    };
    for c in &copies {
        // Prime our cache (the last full run did, unless its files were too new); each
        // row's runs then leave it primed for the next row.
        clean(&c.moddir(&c.ours))?;
        measure(work, &[depmod_cmd(&ours.depmod, &c.ours, &c.kver, &empty)])?;
        for &kind in edits {
            let mut row = Row::new(format!("depmod {}, {}", c.label, kind.describe()), 1.0);
            let mut identical = true;
            for p in 0..pairs {
                log(&format!(
                    "{}: incremental run ({}), pair {}/{pairs}",
                    c.label,
                    kind.describe(),
                    p + 1
                ));
                edit(c, &c.ours, kind, p)?;
                edit(c, &c.kmod, kind, p)?;
                let before = output_inodes(&c.moddir(&c.ours));
                let s = measure(work, &[depmod_cmd(&ours.depmod, &c.ours, &c.kver, &empty)])?;
                row.ours.push(s);
                // The outputs our run replaced (new inodes), for the floor.
                let replaced: Vec<OsString> = COMPARED
                    .iter()
                    .zip(before.iter().zip(output_inodes(&c.moddir(&c.ours))))
                    .filter(|(_, (b, a))| **b != *a)
                    .map(|(n, _)| os(*n))
                    .collect();
                let s = measure(work, &[depmod_cmd(&kmod_depmod, &c.kmod, &c.kver, &empty)])?;
                row.kmod.push(s);
                identical &= same_outputs(c)?;
                // The floor works on kmod's copy (the same tree and files; kmod keeps no
                // state between runs, while ours would see the replaced files as changed).
                let list = work.join("floor.list");
                fs::write(&list, floor_list(&c.moddir(&c.kmod))?)
                    .map_err(|e| format!("{}: {e}", list.display()))?;
                let me = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
                let mut cmd = vec![os(me), os("bench"), os("--floor"), os(&list)];
                cmd.push(os(c.moddir(&c.kmod)));
                cmd.extend(replaced);
                let s = measure(work, &[cmd])?;
                if s.failed + s.crashed > 0 {
                    return Err(format!(
                        "the floor run failed:\n    {}",
                        helper_stderr(work)
                    ));
                }
                row.floor.push(s);
            }
            row.note = outputs_note(identical);
            if let Some(f) = row.floor_note() {
                row.note = format!("{}; {f}", row.note);
            }
            rows.push(row);
        }
    }
    // Runtime tools, per call.
    if let Some(c) = copies.iter().find(|c| c.label == RUNTIME_TREE) {
        let n = if opts.quick { QUICK_QUERIES } else { QUERIES };
        // Both tools on kmod's indexes: restore a clean kmod-indexed copy.
        clean(&c.moddir(&c.kmod))?;
        measure(work, &[depmod_cmd(&kmod_depmod, &c.kmod, &c.kver, &empty)])?;
        let q = queries(&c.moddir(&c.kmod), n)?;
        let root = os(&c.kmod);
        let kver = os(&c.kver);
        let cases = [
            RuntimeCase {
                name: "modprobe --show-depends",
                ours: &ours.modprobe,
                kmod: refs.tool("modprobe"),
                args: vec![
                    os("-C"),
                    os(&empty),
                    os("-d"),
                    root.clone(),
                    os("-S"),
                    kver.clone(),
                    os("--show-depends"),
                ],
            },
            RuntimeCase {
                name: "modinfo -F firmware",
                ours: &ours.modinfo,
                kmod: refs.tool("modinfo"),
                args: vec![
                    os("-b"),
                    root.clone(),
                    os("-k"),
                    kver.clone(),
                    os("-F"),
                    os("firmware"),
                ],
            },
        ];
        for RuntimeCase {
            name,
            ours: ours_bin,
            kmod: kmod_bin,
            args: base,
        } in cases
        {
            let mut row = Row::new(
                format!("{name}, per call ({} queries, {})", q.len(), c.label),
                q.len() as f64,
            );
            let cmds = |bin: &Path| -> Vec<Vec<OsString>> {
                q.iter()
                    .map(|x| {
                        let mut v = vec![os(bin)];
                        v.extend(base.iter().cloned());
                        v.push(os(x));
                        v
                    })
                    .collect()
            };
            let ours_bin = match ours_bin {
                Ok(b) => b,
                Err(e) => {
                    row.note = format!("skipped: our tool is not available ({e})");
                    rows.push(row);
                    continue;
                }
            };
            let (ours_cmds, kmod_cmds) = (cmds(ours_bin), cmds(&kmod_bin));
            // Probe: ours must run at all.
            let probe = measure(work, &ours_cmds[..ours_cmds.len().min(5)])?;
            if probe.crashed > 0 {
                row.note = format!("skipped: our tool fails to run: {}", helper_stderr(work));
                rows.push(row);
                continue;
            }
            for p in 0..pairs {
                log(&format!("{name}: pair {}/{pairs}", p + 1));
                row.ours.push(measure(work, &ours_cmds)?);
                row.kmod.push(measure(work, &kmod_cmds)?);
            }
            let fo = row.ours.last().map_or(0, |s| s.failed + s.crashed);
            let fk = row.kmod.last().map_or(0, |s| s.failed + s.crashed);
            row.note = format!("non-zero exits: ours {fo}, kmod {fk}");
            rows.push(row);
        }
    }

    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "bench: {cores} cores ({}), {pairs} pair(s) per row, medians; load average before {load_before}, after {}",
        cpu_model(),
        loadavg()
    );
    println!(
        "ours: {} (kmod-rs {}); kmod: {} ({} {})",
        ours.depmod.display(),
        env!("CARGO_PKG_VERSION"),
        kmod_depmod.display(),
        refs::KMOD_PACKAGE,
        refs::KMOD_VERSION
    );
    print!("{}", table(&rows));
    Ok(())
}
