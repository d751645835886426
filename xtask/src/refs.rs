//! `cargo xtask refs`: download (`apt-get download`) and unpack (`dpkg -x`) the reference
//! kmod package, two Debian kernel packages and busybox-static into a cache outside the
//! repository.
//!
//! Cache layout (root = `$KMODRS_CACHE`, else `$HOME/.cache/kmod-rs`):
//!
//! * `pkgs/<package>_<version>/`: one unpacked package. `dpkg -x` unpacks into a
//!   `.partial-<pid>` sibling; when it has finished, a `.complete` marker file is written
//!   inside and the directory is renamed into place. A directory without the marker is
//!   treated as partial and redone.
//! * `debs/`: download scratch space; a `.deb` is deleted once it is unpacked.
//! * `bin/`: `depmod`, `modprobe`, `modinfo`, `insmod`, `rmmod`, `lsmod` symlinks to the
//!   kmod 30 binary (it dispatches on argv[0]).
//! * `derived/`, `compat/`: owned by `compat` (recompressed trees and scratch copies).
#![allow(dead_code)]

use std::cmp::Ordering;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The kmod package and version the project targets (spec §0).
pub const KMOD_PACKAGE: &str = "kmod";
pub const KMOD_VERSION: &str = "30+20221128-1";
pub const BUSYBOX_PACKAGE: &str = "busybox-static";

/// Names under which `bin/` exposes the kmod multi-call binary.
pub const KMOD_TOOLS: [&str; 6] = ["depmod", "modprobe", "modinfo", "insmod", "rmmod", "lsmod"];

/// Marker written inside an unpacked package directory once it is complete.
const COMPLETE_MARKER: &str = ".complete";

/// One unpacked Debian kernel package.
pub struct KernelTree {
    /// Short label used in tables: "6.1-cloud" or "6.12".
    pub label: &'static str,
    /// Kernel release, e.g. "6.1.0-28-cloud-amd64".
    pub kver: String,
    /// Unpacked package root: `root/lib/modules/<kver>/` and `root/boot/vmlinuz-<kver>`.
    pub root: PathBuf,
    /// Debian package name, e.g. "linux-image-6.1.0-28-cloud-amd64-unsigned".
    pub package: String,
    /// Debian package version, e.g. "6.1.119-1".
    pub version: String,
    /// Number of module files (`*.ko`, `*.ko.xz`, ...) under `moddir()`.
    pub module_count: usize,
}

impl KernelTree {
    pub fn moddir(&self) -> PathBuf {
        self.root.join("lib/modules").join(&self.kver)
    }
    pub fn vmlinuz(&self) -> PathBuf {
        self.root
            .join("boot")
            .join(format!("vmlinuz-{}", self.kver))
    }
}

/// Everything `ensure` provides.
pub struct Refs {
    /// The kmod 30 binary from Debian's kmod package (dispatches on argv[0]).
    pub kmod: PathBuf,
    /// busybox from busybox-static.
    pub busybox: PathBuf,
    /// Both kernel trees: [0] = 6.1 cloud (plain .ko), [1] = 6.12 (.ko.xz).
    pub trees: Vec<KernelTree>,
    /// The cache root.
    pub cache: PathBuf,
    /// Directory holding the kmod tool symlinks (`depmod`, `modprobe`, ...).
    pub bin_dir: PathBuf,
}

impl Refs {
    pub fn print_summary(&self) {
        println!("cache: {}", self.cache.display());
        println!(
            "kmod: {} ({KMOD_PACKAGE} {KMOD_VERSION})",
            self.kmod.display()
        );
        println!(
            "kmod tools: {}/{{{}}}",
            self.bin_dir.display(),
            KMOD_TOOLS.join(",")
        );
        println!("busybox: {}", self.busybox.display());
        for t in &self.trees {
            println!(
                "{}: {} at {} ({} {}, {} modules)",
                t.label,
                t.kver,
                t.root.display(),
                t.package,
                t.version,
                t.module_count
            );
        }
    }

    /// Path of a kmod 30 tool by name (`depmod`, `modprobe`, ...), as an argv[0] symlink.
    pub fn tool(&self, name: &str) -> PathBuf {
        self.bin_dir.join(name)
    }
}

fn log(msg: &str) {
    eprintln!("refs: {msg}");
}

/// The cache root: `$KMODRS_CACHE`, else `$HOME/.cache/kmod-rs`. Never inside the repository.
pub fn cache_dir() -> Result<PathBuf, String> {
    let dir = match std::env::var_os("KMODRS_CACHE").filter(|v| !v.is_empty()) {
        Some(v) => PathBuf::from(v),
        None => {
            let home = std::env::var_os("HOME")
                .filter(|v| !v.is_empty())
                .ok_or("neither KMODRS_CACHE nor HOME is set")?;
            PathBuf::from(home).join(".cache/kmod-rs")
        }
    };
    let dir = if dir.is_absolute() {
        dir
    } else {
        std::env::current_dir()
            .map_err(|e| format!("current dir: {e}"))?
            .join(dir)
    };
    fs::create_dir_all(&dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
    let dir = fs::canonicalize(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    if let Ok(repo) = fs::canonicalize(workspace_root()) {
        if dir.starts_with(&repo) {
            return Err(format!(
                "cache dir {} is inside the repository; point KMODRS_CACHE elsewhere",
                dir.display()
            ));
        }
    }
    Ok(dir)
}

/// The cargo workspace root (parent of the xtask crate).
pub fn workspace_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

/// Which kernel packages to use: a label and a name filter.
struct KernelSpec {
    label: &'static str,
    matches: fn(&str) -> bool,
}

/// apt-cache search regex covering every `KERNELS` entry (the filters decide exactly).
const KERNEL_SEARCH: &str =
    "^linux-image-6\\.(1\\.0-[0-9]+-cloud|12\\.[0-9]+.deb12)-amd64-unsigned$";

/// `linux-image-6.1.0-<abi>-cloud-amd64-unsigned`
fn is_61_cloud(name: &str) -> bool {
    name.strip_prefix("linux-image-6.1.0-")
        .and_then(|r| r.strip_suffix("-cloud-amd64-unsigned"))
        .is_some_and(|abi| !abi.is_empty() && abi.bytes().all(|b| b.is_ascii_digit()))
}

/// `linux-image-6.12.<n>+deb12-amd64-unsigned`
fn is_612(name: &str) -> bool {
    name.strip_prefix("linux-image-6.12.")
        .and_then(|r| r.strip_suffix("+deb12-amd64-unsigned"))
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

const KERNELS: [KernelSpec; 2] = [
    KernelSpec {
        label: "6.1-cloud",
        matches: is_61_cloud,
    },
    KernelSpec {
        label: "6.12",
        matches: is_612,
    },
];

/// A package chosen for download: name and exact version.
#[derive(Clone, Debug)]
struct Pkg {
    name: String,
    version: String,
}

impl Pkg {
    /// Directory name in `pkgs/` (an epoch colon is spelled `%3a`, as apt does).
    fn key(&self) -> String {
        format!("{}_{}", self.name, self.version.replace(':', "%3a"))
    }
}

pub fn ensure() -> Result<Refs, String> {
    let cache = cache_dir()?;
    log(&format!("cache: {}", cache.display()));
    let root = is_root();

    // Resolve and fetch; if the package lists are missing or stale (no candidate, or a
    // download fails), run `apt-get update` once and try again.
    let mut updated = false;
    let (kmod_pkg, busybox_pkg, kernels) = loop {
        match resolve_and_fetch(&cache, root) {
            Ok(v) => break v,
            Err(e) if !updated => {
                log(&format!("{e}; refreshing the package lists"));
                apt_update(root)?;
                updated = true;
            }
            Err(e) => return Err(e),
        }
    };

    let kmod_root = cache.join("pkgs").join(kmod_pkg.key());
    let kmod = kmod_root.join("bin/kmod");
    if !kmod.is_file() {
        return Err(format!("{} missing from the kmod package", kmod.display()));
    }
    ensure_libs(&kmod, root)?;
    let bin_dir = cache.join("bin");
    make_tool_links(&bin_dir, &kmod)?;
    check_kmod_version(&bin_dir.join("depmod"))?;

    let bb_root = cache.join("pkgs").join(busybox_pkg.key());
    let busybox = bb_root.join("bin/busybox");
    if !busybox.is_file() {
        return Err(format!(
            "{} missing from the busybox-static package",
            busybox.display()
        ));
    }

    let mut trees = Vec::new();
    for (spec, pkg) in KERNELS.iter().zip(kernels) {
        let root = cache.join("pkgs").join(pkg.key());
        let kver = find_kver(&root)?;
        let tree = KernelTree {
            label: spec.label,
            module_count: 0,
            kver,
            root,
            package: pkg.name,
            version: pkg.version,
        };
        let moddir = tree.moddir();
        for f in [
            "modules.order",
            "modules.builtin",
            "modules.builtin.modinfo",
        ] {
            if !moddir.join(f).is_file() {
                log(&format!("warning: {} does not ship {f}", tree.package));
            }
        }
        let module_count = count_modules(&moddir)?;
        trees.push(KernelTree {
            module_count,
            ..tree
        });
    }
    Ok(Refs {
        kmod,
        busybox,
        trees,
        cache,
        bin_dir,
    })
}

/// Pick the packages (kmod, busybox-static, one per `KERNELS` entry) and make sure each is
/// unpacked in the cache.
fn resolve_and_fetch(cache: &Path, root: bool) -> Result<(Pkg, Pkg, Vec<Pkg>), String> {
    // kmod must be exactly the targeted version; apt-get download fails otherwise.
    let kmod = Pkg {
        name: KMOD_PACKAGE.into(),
        version: KMOD_VERSION.into(),
    };
    // One search and one policy query (each apt-cache run loads the lists: ~1 s).
    let out =
        run_capture(Command::new("apt-cache").args(["search", "--names-only", KERNEL_SEARCH]))?;
    let mut names: Vec<String> = out
        .lines()
        .filter_map(|l| l.split(" - ").next())
        .map(str::trim)
        .filter(|n| KERNELS.iter().any(|k| (k.matches)(n)))
        .map(String::from)
        .collect();
    names.push(BUSYBOX_PACKAGE.into());
    let cands = candidates(&names)?;
    let busybox = cands
        .iter()
        .find(|p| p.name == BUSYBOX_PACKAGE)
        .cloned()
        .ok_or("apt has no candidate for busybox-static")?;
    let mut kernels = Vec::new();
    for spec in &KERNELS {
        kernels.push(newest_kernel(spec, &cands)?);
    }
    for pkg in std::iter::once(&kmod)
        .chain(std::iter::once(&busybox))
        .chain(kernels.iter())
    {
        fetch(cache, pkg, root)?;
    }
    Ok((kmod, busybox, kernels))
}

/// The newest candidate matching `spec`, by Debian version (ties broken by comparing the
/// package names the same way, which orders the embedded ABI numbers).
fn newest_kernel(spec: &KernelSpec, cands: &[Pkg]) -> Result<Pkg, String> {
    let matching: Vec<&Pkg> = cands.iter().filter(|p| (spec.matches)(&p.name)).collect();
    let best = matching
        .iter()
        .max_by(|a, b| {
            deb_version_cmp(&a.version, &b.version).then_with(|| deb_version_cmp(&a.name, &b.name))
        })
        .map(|p| (*p).clone())
        .ok_or_else(|| format!("apt offers no package for the {} kernel", spec.label))?;
    log(&format!(
        "{}: newest is {} {} (of {} packages)",
        spec.label,
        best.name,
        best.version,
        matching.len()
    ));
    Ok(best)
}

/// Candidate versions from `apt-cache policy`; packages without a candidate are left out.
fn candidates(names: &[String]) -> Result<Vec<Pkg>, String> {
    let out = run_capture(Command::new("apt-cache").arg("policy").args(names))?;
    Ok(parse_policy(&out))
}

fn parse_policy(out: &str) -> Vec<Pkg> {
    let mut result = Vec::new();
    let mut current: Option<String> = None;
    for line in out.lines() {
        if !line.starts_with(' ') && line.ends_with(':') {
            current = Some(line.trim_end_matches(':').to_string());
        } else if let Some(v) = line.trim().strip_prefix("Candidate:") {
            let v = v.trim();
            if let Some(name) = current.take() {
                if v != "(none)" && !v.is_empty() {
                    result.push(Pkg {
                        name,
                        version: v.to_string(),
                    });
                }
            }
        }
    }
    result
}

/// Make sure `pkgs/<key>/` holds the complete unpacked package.
fn fetch(cache: &Path, pkg: &Pkg, root: bool) -> Result<(), String> {
    let pkgs = cache.join("pkgs");
    let dest = pkgs.join(pkg.key());
    if dest.join(COMPLETE_MARKER).is_file() {
        return Ok(());
    }
    let pid = std::process::id();
    let dl = cache.join("debs").join(format!("{}.dl-{pid}", pkg.key()));
    let _ = fs::remove_dir_all(&dl);
    fs::create_dir_all(&dl).map_err(|e| format!("create {}: {e}", dl.display()))?;
    log(&format!("downloading {} {}", pkg.name, pkg.version));
    let mut cmd = Command::new("apt-get");
    cmd.current_dir(&dl).arg("-q");
    if root {
        // Downloading into a root-owned directory: no point dropping to the _apt user.
        cmd.args(["-o", "APT::Sandbox::User=root"]);
    }
    cmd.args(["download", &format!("{}={}", pkg.name, pkg.version)]);
    run_capture(&mut cmd)?;
    let deb = fs::read_dir(&dl)
        .map_err(|e| format!("{}: {e}", dl.display()))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
        .ok_or_else(|| format!("apt-get download left no .deb in {}", dl.display()))?;

    let partial = pkgs.join(format!("{}.partial-{pid}", pkg.key()));
    let _ = fs::remove_dir_all(&partial);
    fs::create_dir_all(&partial).map_err(|e| format!("create {}: {e}", partial.display()))?;
    log(&format!("unpacking {}", deb.display()));
    run_capture(Command::new("dpkg").arg("-x").arg(&deb).arg(&partial))?;
    fs::write(
        partial.join(COMPLETE_MARKER),
        format!("{} {}\n", pkg.name, pkg.version),
    )
    .map_err(|e| format!("write marker: {e}"))?;
    // A stale, incomplete `dest` (from an older layout or an interrupted rename) goes away.
    if dest.exists() && !dest.join(COMPLETE_MARKER).is_file() {
        fs::remove_dir_all(&dest).map_err(|e| format!("remove {}: {e}", dest.display()))?;
    }
    if let Err(e) = fs::rename(&partial, &dest) {
        // Another xtask process may have finished the same package meanwhile.
        if !dest.join(COMPLETE_MARKER).is_file() {
            return Err(format!("rename to {}: {e}", dest.display()));
        }
        let _ = fs::remove_dir_all(&partial);
    }
    let _ = fs::remove_dir_all(&dl);
    Ok(())
}

/// Run `apt-get update`, with its output on our stderr.
fn apt_update(root: bool) -> Result<(), String> {
    let mut cmd = privileged("apt-get", root);
    cmd.args(["-q", "update"]);
    log("apt-get update");
    let status = cmd
        .stdout(stderr_stdio())
        .status()
        .map_err(|e| format!("apt-get update: {e}"))?;
    if !status.success() {
        // Unreachable third-party sources make apt-get update fail even though the
        // Debian lists were refreshed; the retry will show whether that was enough.
        log(&format!("apt-get update exited with {status}; continuing"));
    }
    Ok(())
}

/// `cmd`, run through `sudo -n` when we are not root.
fn privileged(program: &str, root: bool) -> Command {
    if root {
        Command::new(program)
    } else {
        let mut c = Command::new("sudo");
        c.arg("-n").arg(program);
        c
    }
}

fn stderr_stdio() -> Stdio {
    use std::os::fd::AsFd;
    match std::io::stderr().as_fd().try_clone_to_owned() {
        Ok(fd) => Stdio::from(fd),
        Err(_) => Stdio::inherit(),
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// If the kmod binary misses shared libraries on this host, install their packages.
fn ensure_libs(kmod: &Path, root: bool) -> Result<(), String> {
    let Ok(out) = Command::new("ldd").arg(kmod).output() else {
        log("ldd not available; not checking kmod's libraries");
        return Ok(());
    };
    let text = String::from_utf8_lossy(&out.stdout);
    let missing: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("not found"))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let mut pkgs = Vec::new();
    for lib in &missing {
        let pkg = match *lib {
            "libzstd.so.1" => "libzstd1",
            "liblzma.so.5" => "liblzma5",
            "libcrypto.so.3" => "libssl3",
            "libc.so.6" => "libc6",
            other => return Err(format!("kmod needs {other}, which this script cannot map")),
        };
        pkgs.push(pkg);
    }
    log(&format!(
        "kmod misses {}; installing {}",
        missing.join(", "),
        pkgs.join(" ")
    ));
    let status = privileged("apt-get", root)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .args(["-q", "-y", "install", "--no-install-recommends"])
        .args(&pkgs)
        .stdout(stderr_stdio())
        .stdin(Stdio::null())
        .status()
        .map_err(|e| format!("apt-get install: {e}"))?;
    if !status.success() {
        return Err(format!(
            "apt-get install {} failed: {status}",
            pkgs.join(" ")
        ));
    }
    Ok(())
}

/// `bin/<tool>` -> kmod binary, for every kmod tool name.
fn make_tool_links(bin_dir: &Path, kmod: &Path) -> Result<(), String> {
    fs::create_dir_all(bin_dir).map_err(|e| format!("create {}: {e}", bin_dir.display()))?;
    for tool in KMOD_TOOLS {
        let link = bin_dir.join(tool);
        if fs::read_link(&link).is_ok_and(|t| t == kmod) {
            continue;
        }
        let tmp = bin_dir.join(format!(".{tool}.{}", std::process::id()));
        let _ = fs::remove_file(&tmp);
        std::os::unix::fs::symlink(kmod, &tmp)
            .and_then(|()| fs::rename(&tmp, &link))
            .map_err(|e| format!("symlink {}: {e}", link.display()))?;
    }
    Ok(())
}

fn check_kmod_version(depmod: &Path) -> Result<(), String> {
    let out = run_capture(Command::new(depmod).arg("-V"))?;
    if !out.starts_with("kmod version 30") {
        return Err(format!(
            "{} -V printed {:?}, expected kmod version 30",
            depmod.display(),
            out.lines().next().unwrap_or("")
        ));
    }
    Ok(())
}

/// The kernel release: the single directory under `root/lib/modules`.
fn find_kver(root: &Path) -> Result<String, String> {
    let dir = root.join("lib/modules");
    let mut kvers: Vec<String> = fs::read_dir(&dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .filter_map(Result::ok)
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    match kvers.len() {
        1 => Ok(kvers.remove(0)),
        n => Err(format!(
            "expected one kernel release in {}, found {n}",
            dir.display()
        )),
    }
}

/// Whether a file name is a module file (any compression suffix).
pub fn is_module_name(name: &str) -> bool {
    [".ko", ".ko.xz", ".ko.zst", ".ko.gz"]
        .iter()
        .any(|s| name.len() > s.len() && name.ends_with(s))
}

/// Count module files below `dir`.
pub fn count_modules(dir: &Path) -> Result<usize, String> {
    let mut n = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).map_err(|e| format!("{}: {e}", d.display()))? {
            let e = e.map_err(|e| format!("{}: {e}", d.display()))?;
            let ft = e.file_type().map_err(|e| format!("{}: {e}", d.display()))?;
            if ft.is_dir() {
                stack.push(e.path());
            } else if ft.is_file() && is_module_name(&e.file_name().to_string_lossy()) {
                n += 1;
            }
        }
    }
    Ok(n)
}

/// Run a command, returning its stdout; a failure reports the command and its stderr.
pub fn run_capture(cmd: &mut Command) -> Result<String, String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{cmd:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Debian version ordering (Debian Policy §5.6.12): `[epoch:]upstream[-revision]`.
pub fn deb_version_cmp(a: &str, b: &str) -> Ordering {
    fn split(v: &str) -> (u64, &str, &str) {
        let (epoch, rest) = match v.split_once(':') {
            Some((e, r)) if !e.is_empty() && e.bytes().all(|b| b.is_ascii_digit()) => {
                (e.parse().unwrap_or(u64::MAX), r)
            }
            _ => (0, v),
        };
        match rest.rsplit_once('-') {
            Some((up, rev)) => (epoch, up, rev),
            None => (epoch, rest, ""),
        }
    }
    let (ea, ua, ra) = split(a);
    let (eb, ub, rb) = split(b);
    ea.cmp(&eb)
        .then_with(|| version_part_cmp(ua, ub))
        .then_with(|| version_part_cmp(ra, rb))
}

/// Compare one upstream or revision part: alternating non-digit and digit runs.
fn version_part_cmp(a: &str, b: &str) -> Ordering {
    // Sort weight of a byte inside a non-digit run; the end of the run weighs 0.
    fn weight(c: Option<u8>) -> i32 {
        match c {
            None => 0,
            Some(b'~') => -1,
            Some(c) if c.is_ascii_alphabetic() => i32::from(c),
            Some(c) => i32::from(c) + 256,
        }
    }
    let (mut a, mut b) = (a.as_bytes(), b.as_bytes());
    while !a.is_empty() || !b.is_empty() {
        // Non-digit runs, compared by weight; the shorter run is padded with "end".
        let na = a.iter().take_while(|c| !c.is_ascii_digit()).count();
        let nb = b.iter().take_while(|c| !c.is_ascii_digit()).count();
        for i in 0..na.max(nb) {
            let ca = if i < na { Some(a[i]) } else { None };
            let cb = if i < nb { Some(b[i]) } else { None };
            match weight(ca).cmp(&weight(cb)) {
                Ordering::Equal => {}
                o => return o,
            }
        }
        a = &a[na..];
        b = &b[nb..];
        // Digit runs, compared numerically (leading zeros ignored, no overflow).
        let da = a.iter().take_while(|c| c.is_ascii_digit()).count();
        let db = b.iter().take_while(|c| c.is_ascii_digit()).count();
        let (xa, xb) = (&a[..da], &b[..db]);
        let xa = &xa[xa.iter().take_while(|&&c| c == b'0').count()..];
        let xb = &xb[xb.iter().take_while(|&&c| c == b'0').count()..];
        match xa.len().cmp(&xb.len()).then_with(|| xa.cmp(xb)) {
            Ordering::Equal => {}
            o => return o,
        }
        a = &a[da..];
        b = &b[db..];
    }
    Ordering::Equal
}

/// `cargo build --release -p <package>` in the workspace; returns the binary,
/// `<target dir>/release/<package>`.
pub fn cargo_build_release(package: &str) -> Result<PathBuf, String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .current_dir(workspace_root())
        .args(["build", "--release", "-p", package])
        .stdin(Stdio::null())
        .status()
        .map_err(|e| format!("cargo build: {e}"))?;
    if !status.success() {
        return Err(format!(
            "cargo build --release -p {package} failed: {status}"
        ));
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"));
    let bin = target.join("release").join(package);
    if !bin.is_file() {
        return Err(format!("{} was not built", bin.display()));
    }
    Ok(bin)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debian_version_order() {
        use Ordering::*;
        let cases = [
            ("1.0", "1.0", Equal),
            ("1.0", "1.1", Less),
            ("6.1.0-9", "6.1.0-56", Less),
            ("6.12.9-1", "6.12.117-1~deb12u1", Less),
            ("1.0~rc1", "1.0", Less),
            ("1.0", "1.0+b1", Less),
            ("1:0.1", "2.0", Greater),
            ("1.0-1", "1.0-1~bpo1", Greater),
            ("1.0a", "1.0+", Less),
            ("1.001", "1.1", Equal),
            ("30+20221128-1", "30+20221128-1", Equal),
            ("6.1.192-2", "6.1.158-1", Greater),
        ];
        for (a, b, want) in cases {
            assert_eq!(deb_version_cmp(a, b), want, "{a} vs {b}");
            assert_eq!(deb_version_cmp(b, a), want.reverse(), "{b} vs {a}");
        }
    }

    #[test]
    fn kernel_name_filters() {
        assert!(is_61_cloud("linux-image-6.1.0-56-cloud-amd64-unsigned"));
        assert!(!is_61_cloud("linux-image-6.1.0-56-cloud-amd64"));
        assert!(!is_61_cloud("linux-image-6.1.0-56-amd64-unsigned"));
        assert!(is_612("linux-image-6.12.117+deb12-amd64-unsigned"));
        assert!(!is_612("linux-image-6.12.117+deb12-cloud-amd64-unsigned"));
        assert!(!is_612("linux-image-6.12.117+deb12-rt-amd64-unsigned"));
    }

    #[test]
    fn policy_parsing() {
        let out = "a:\n  Installed: (none)\n  Candidate: 1.2-3\n  Version table:\n     1.2-3 500\n\
                   b:\n  Installed: (none)\n  Candidate: (none)\n";
        let p = parse_policy(out);
        assert_eq!(p.len(), 1);
        assert_eq!((p[0].name.as_str(), p[0].version.as_str()), ("a", "1.2-3"));
    }

    #[test]
    fn module_names() {
        assert!(is_module_name("a.ko"));
        assert!(is_module_name("a.ko.zst"));
        assert!(!is_module_name(".ko"));
        assert!(!is_module_name("a.ko.bz2"));
    }
}
