//! `cargo xtask vm-test` and `cargo xtask demo`: boot the real Debian kernels from `refs`
//! under qemu (TCG, no KVM needed) and exercise our tools against a real module loader.
//!
//! The host side builds our six tools statically, writes an initramfs (newc cpio, written
//! here directly so no staging directory or host `cpio` is needed) holding busybox, our
//! tools in /sbin, the kernel's pristine module tree and the guest scripts of `xtask/vm/`,
//! boots it with the serial console on qemu's stdout, copies that console to a log under
//! `target/vm/`, and reads `PASS <name>` / `FAIL <name>: <why>` / `INFO <name>: <text>`
//! lines until the `VMTEST-END` marker. Nothing is ever loaded into the host kernel.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use crate::refs::{self, KernelTree, Refs};

const INIT_SH: &str = include_str!("../vm/init.sh");
const SCENARIOS_SH: &str = include_str!("../vm/scenarios.sh");
const DEMO_SH: &str = include_str!("../vm/demo.sh");

/// Our binaries, installed as /sbin/<name> in the guest.
const TOOLS: [&str; 6] = ["depmod", "modprobe", "insmod", "rmmod", "lsmod", "modinfo"];
/// Busybox applets that must not shadow our tools (busybox has all of these).
const MODULE_APPLETS: [&str; 6] = TOOLS;
/// Last line the guest prints before powering off.
const END_MARKER: &str = "VMTEST-END";
/// First line the guest prints once /init runs (followed by kver and guest uptime).
const BOOT_MARKER: &str = "VMTEST-BOOT";
/// Start of the demo's user-visible output.
const DEMO_MARKER: &str = "VMTEST-DEMO";
const DEFAULT_TIMEOUT: u64 = 900;
const DEMO_TIMEOUT: u64 = 300;
const STATIC_TARGET: &str = "x86_64-unknown-linux-gnu";

#[derive(Clone, Copy, PartialEq, Eq)]
enum Tools {
    /// Our statically linked binaries.
    Ours,
    /// Busybox's own module applets (validates the harness while our tools are unfinished).
    Busybox,
}

impl Tools {
    fn name(self) -> &'static str {
        match self {
            Tools::Ours => "ours",
            Tools::Busybox => "busybox",
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Test,
    Demo,
    Shell,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Test => "test",
            Mode::Demo => "demo",
            Mode::Shell => "shell",
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Compress {
    None,
    Gzip,
}

struct Opts {
    kernels: Vec<String>,
    keep: bool,
    shell: bool,
    tools: Tools,
    timeout: Duration,
    compress: Compress,
    no_build: bool,
}

const USAGE_TEST: &str = "usage: cargo xtask vm-test [--kernel LABEL]... [--tools ours|busybox] \
[--timeout SECS] [--gzip] [--keep] [--no-build] [--shell]\n  \
--kernel LABEL   run only this kernel (6.1-cloud or 6.12; repeatable; default: both)\n  \
--tools busybox  use busybox's module applets instead of ours (harness self-check)\n  \
--timeout SECS   per-kernel limit for the whole boot (default 900)\n  \
--gzip           gzip the initramfs (smaller file, slower guest unpacking)\n  \
--keep           keep the initramfs (target/vm/<label>/initramfs-<pid>.cpio)\n  \
--no-build       use the static binaries already in target/static\n  \
--shell          boot the first selected kernel with an interactive shell (Ctrl-A x quits)\n\
environment: VMTEST_TOOLS=busybox is the same as --tools busybox";

const USAGE_DEMO: &str = "usage: cargo xtask demo [--kernel LABEL] [--tools ours|busybox] \
[--timeout SECS] [--gzip] [--keep] [--no-build]\n  \
--kernel LABEL   6.1-cloud (default) or 6.12";

fn parse_opts(args: &[String], usage: &str, default_timeout: u64) -> Result<Opts, String> {
    let mut o = Opts {
        kernels: Vec::new(),
        keep: false,
        shell: false,
        tools: match std::env::var("VMTEST_TOOLS").as_deref() {
            Ok("busybox") => Tools::Busybox,
            _ => Tools::Ours,
        },
        timeout: Duration::from_secs(default_timeout),
        compress: Compress::None,
        no_build: false,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let (key, inline) = match a.split_once('=') {
            Some((k, v)) if k.starts_with("--") => (k, Some(v.to_string())),
            _ => (a.as_str(), None),
        };
        let mut value = |what: &str| -> Result<String, String> {
            match &inline {
                Some(v) => Ok(v.clone()),
                None => it
                    .next()
                    .cloned()
                    .ok_or_else(|| format!("{key} needs {what}\n{usage}")),
            }
        };
        match key {
            "--kernel" | "-k" => o.kernels.push(value("a label")?),
            "--tools" => {
                o.tools = match value("ours or busybox")?.as_str() {
                    "ours" => Tools::Ours,
                    "busybox" => Tools::Busybox,
                    other => return Err(format!("--tools: unknown value '{other}'\n{usage}")),
                }
            }
            "--timeout" => {
                let v = value("seconds")?;
                let secs: u64 = v
                    .parse()
                    .map_err(|_| format!("--timeout: not a number: '{v}'"))?;
                o.timeout = Duration::from_secs(secs);
            }
            "--keep" => o.keep = true,
            "--shell" => o.shell = true,
            "--gzip" => o.compress = Compress::Gzip,
            "--no-build" => o.no_build = true,
            "-h" | "--help" => {
                println!("{usage}");
                std::process::exit(0);
            }
            _ => return Err(format!("unknown argument '{a}'\n{usage}")),
        }
    }
    Ok(o)
}

/// `cargo xtask vm-test`.
pub fn run_tests(args: &[String]) -> Result<(), String> {
    let opts = parse_opts(args, USAGE_TEST, DEFAULT_TIMEOUT)?;
    let started = Instant::now();
    ensure_host_tools()?;
    let refs = refs::ensure()?;
    let trees = select_trees(&refs, &opts.kernels, None)?;
    let bins = prepare_tools(&opts)?;
    if opts.shell {
        let tree = trees[0];
        let img = build_initramfs(&refs, tree, &bins, &opts)?;
        let r = boot_interactive(tree, &img.path, opts.tools);
        cleanup_image(&img, &opts);
        return r;
    }

    let mut runs = Vec::new();
    for tree in &trees {
        let img = build_initramfs(&refs, tree, &bins, &opts)?;
        println!(
            "[{}] booting {} (initramfs {}, {} modules, written in {:.1}s)",
            tree.label,
            tree.kver,
            human_size(img.size),
            img.modules,
            img.build_time.as_secs_f64()
        );
        let label = tree.label;
        let outcome = boot(
            tree,
            &img.path,
            Mode::Test,
            opts.tools,
            opts.timeout,
            |elapsed, line| {
                if let Some(ev) = parse_event(line) {
                    match ev {
                        Event::Pass(n) => println!("  [{label} {:6.1}s] PASS {n}", elapsed),
                        Event::Fail(n, why) => {
                            println!("  [{label} {:6.1}s] FAIL {n}: {why}", elapsed)
                        }
                        Event::Info(n, t) => println!("  [{label} {:6.1}s] info {n}: {t}", elapsed),
                    }
                } else if line.starts_with(BOOT_MARKER) {
                    println!("  [{label} {:6.1}s] guest /init running", elapsed);
                }
            },
        );
        cleanup_image(&img, &opts);
        let outcome = outcome?;
        runs.push(KernelRun {
            label: tree.label,
            image_size: img.size,
            outcome,
        });
    }
    report(&runs, opts.tools, started.elapsed())
}

/// `cargo xtask demo`.
pub fn run_demo(args: &[String]) -> Result<(), String> {
    let opts = parse_opts(args, USAGE_DEMO, DEMO_TIMEOUT)?;
    ensure_host_tools()?;
    let refs = refs::ensure()?;
    let trees = select_trees(&refs, &opts.kernels, Some("6.1-cloud"))?;
    let tree = trees[0];
    let bins = prepare_tools(&opts)?;
    let img = build_initramfs(&refs, tree, &bins, &opts)?;
    println!(
        "booting {} under qemu (TCG, no KVM), {} module tools as /sbin/*, initramfs {} ...",
        tree.kver,
        opts.tools.name(),
        human_size(img.size)
    );
    let mut showing = false;
    let outcome = boot(
        tree,
        &img.path,
        Mode::Demo,
        opts.tools,
        opts.timeout,
        |_, line| {
            if line.starts_with(DEMO_MARKER) {
                showing = true;
            } else if line.starts_with(END_MARKER) {
                showing = false;
            } else if showing && !is_kernel_line(line) {
                println!("{line}");
            }
        },
    );
    cleanup_image(&img, &opts);
    let o = outcome?;
    println!(
        "\n(guest booted in {}, whole demo {:.1}s; serial log: {})",
        o.boot_time
            .map(|d| format!("{:.1}s", d.as_secs_f64()))
            .unwrap_or_else(|| "?".into()),
        o.wall.as_secs_f64(),
        o.log.display()
    );
    if o.timed_out {
        return Err(format!("timed out after {}s", opts.timeout.as_secs()));
    }
    if !o.end_seen {
        return Err(format!(
            "guest stopped without {END_MARKER}; see {}",
            o.log.display()
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Host preparation

fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(d) => PathBuf::from(d),
        None => refs::workspace_root().join("target"),
    }
}

fn on_path(prog: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(prog).is_file()))
        .unwrap_or(false)
}

/// qemu is the only host program needed (the cpio archive is written here; busybox from
/// refs decompresses the foreign module). Install it on a fresh Debian machine.
fn ensure_host_tools() -> Result<(), String> {
    if on_path("qemu-system-x86_64") {
        return Ok(());
    }
    eprintln!("qemu-system-x86_64 not found: installing qemu-system-x86 with apt-get");
    let install = || {
        Command::new("apt-get")
            .args([
                "install",
                "-y",
                "--no-install-recommends",
                "qemu-system-x86",
            ])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
    };
    let ok = matches!(install(), Ok(s) if s.success()) || {
        let _ = Command::new("apt-get").arg("update").status();
        matches!(install(), Ok(s) if s.success())
    };
    if !ok || !on_path("qemu-system-x86_64") {
        return Err("qemu-system-x86_64 is missing and `apt-get install -y --no-install-recommends qemu-system-x86` failed (needs root)".into());
    }
    Ok(())
}

fn select_trees<'a>(
    refs: &'a Refs,
    wanted: &[String],
    default: Option<&str>,
) -> Result<Vec<&'a KernelTree>, String> {
    let labels = || {
        refs.trees
            .iter()
            .map(|t| t.label)
            .collect::<Vec<_>>()
            .join(", ")
    };
    let find = |w: &str| {
        refs.trees
            .iter()
            .find(|t| t.label == w || t.kver == w)
            .or_else(|| {
                // "6.1" picks "6.1-cloud"; "cloud" too.
                let m: Vec<_> = refs
                    .trees
                    .iter()
                    .filter(|t| t.label.split('-').any(|p| p == w))
                    .collect();
                (m.len() == 1).then(|| m[0])
            })
            .ok_or_else(|| format!("unknown kernel '{w}' (known: {})", labels()))
    };
    let mut out = Vec::new();
    if wanted.is_empty() {
        match default {
            Some(d) => out.push(find(d)?),
            None => out.extend(refs.trees.iter()),
        }
    } else {
        for w in wanted {
            out.push(find(w)?);
        }
    }
    if out.is_empty() {
        return Err("refs provided no kernel trees".into());
    }
    Ok(out)
}

/// What goes to /sbin/<tool>.
enum GuestTools {
    Ours(Vec<(String, PathBuf)>),
    Busybox,
}

fn prepare_tools(opts: &Opts) -> Result<GuestTools, String> {
    if opts.tools == Tools::Busybox {
        return Ok(GuestTools::Busybox);
    }
    let tdir = target_dir().join("static");
    if !opts.no_build {
        let t = Instant::now();
        println!("building static binaries (release, {STATIC_TARGET}, crt-static) ...");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.current_dir(refs::workspace_root())
            .args([
                "build",
                "--release",
                "--target",
                STATIC_TARGET,
                "--target-dir",
            ])
            .arg(&tdir);
        for t in TOOLS {
            cmd.args(["-p", t]);
        }
        cmd.env_remove("CARGO_ENCODED_RUSTFLAGS")
            .env("RUSTFLAGS", "-C target-feature=+crt-static");
        let st = cmd.status().map_err(|e| format!("cannot run cargo: {e}"))?;
        if !st.success() {
            return Err("static build of the tools failed".into());
        }
        println!("  built in {:.1}s", t.elapsed().as_secs_f64());
    }
    let mut bins = Vec::new();
    for t in TOOLS {
        let p = tdir.join(STATIC_TARGET).join("release").join(t);
        if !p.is_file() {
            return Err(format!(
                "{} is missing (build it or drop --no-build)",
                p.display()
            ));
        }
        if has_interpreter(&p)? {
            return Err(format!(
                "{} is dynamically linked; the initramfs has no libc",
                p.display()
            ));
        }
        bins.push((t.to_string(), p));
    }
    Ok(GuestTools::Ours(bins))
}

/// Does this ELF64 file have a PT_INTERP program header (i.e. need a dynamic loader)?
fn has_interpreter(path: &Path) -> Result<bool, String> {
    let data = fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let rd = |off: usize, n: usize| -> Option<u64> {
        let b = data.get(off..off + n)?;
        Some(
            b.iter()
                .rev()
                .fold(0u64, |acc, &x| (acc << 8) | u64::from(x)),
        )
    };
    if data.get(..4) != Some(b"\x7fELF") || data.get(4) != Some(&2) || data.get(5) != Some(&1) {
        return Err(format!(
            "{}: not a little-endian ELF64 file",
            path.display()
        ));
    }
    let (Some(phoff), Some(phentsize), Some(phnum)) = (rd(0x20, 8), rd(0x36, 2), rd(0x38, 2))
    else {
        return Err(format!("{}: truncated ELF header", path.display()));
    };
    for i in 0..phnum {
        let off = (phoff + i * phentsize) as usize;
        if rd(off, 4) == Some(3) {
            return Ok(true);
        }
    }
    Ok(false)
}

// ---------------------------------------------------------------------------------------
// initramfs

/// A newc ("070701") cpio writer; entries are owned by root.
struct Cpio<W: Write> {
    w: W,
    ino: u32,
    written: u64,
}

impl<W: Write> Cpio<W> {
    fn new(w: W) -> Self {
        Cpio {
            w,
            ino: 1,
            written: 0,
        }
    }

    fn raw(&mut self, b: &[u8]) -> io::Result<()> {
        self.w.write_all(b)?;
        self.written += b.len() as u64;
        Ok(())
    }

    fn pad(&mut self) -> io::Result<()> {
        let n = (4 - (self.written % 4) as usize) % 4;
        self.raw(&[0u8; 3][..n])
    }

    fn header(
        &mut self,
        name: &str,
        mode: u32,
        size: u64,
        rdev: (u32, u32),
        mtime: u64,
    ) -> io::Result<()> {
        let size = u32::try_from(size)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "file too big for newc"))?;
        let nlink = if mode & 0o170000 == 0o040000 { 2 } else { 1 };
        let h = format!(
            "070701{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}",
            self.ino,
            mode,
            0,
            0,
            nlink,
            mtime as u32,
            size,
            0,
            0,
            rdev.0,
            rdev.1,
            name.len() + 1,
            0
        );
        self.ino += 1;
        self.raw(h.as_bytes())?;
        self.raw(name.as_bytes())?;
        self.raw(&[0])?;
        self.pad()
    }

    fn dir(&mut self, name: &str) -> io::Result<()> {
        self.header(name, 0o040755, 0, (0, 0), 0)
    }

    fn bytes(&mut self, name: &str, perm: u32, data: &[u8]) -> io::Result<()> {
        self.header(name, 0o100000 | perm, data.len() as u64, (0, 0), 0)?;
        self.raw(data)?;
        self.pad()
    }

    fn file(&mut self, name: &str, perm: u32, src: &Path) -> io::Result<u64> {
        let f = File::open(src)?;
        let md = f.metadata()?;
        let mtime = md
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_secs());
        self.header(name, 0o100000 | perm, md.len(), (0, 0), mtime)?;
        let n = io::copy(&mut f.take(md.len()), &mut self.w)?;
        if n != md.len() {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("{} changed while copying", src.display()),
            ));
        }
        self.written += n;
        self.pad()?;
        Ok(n)
    }

    fn symlink(&mut self, name: &str, target: &str) -> io::Result<()> {
        self.header(name, 0o120777, target.len() as u64, (0, 0), 0)?;
        self.raw(target.as_bytes())?;
        self.pad()
    }

    fn chardev(&mut self, name: &str, perm: u32, major: u32, minor: u32) -> io::Result<()> {
        self.header(name, 0o020000 | perm, 0, (major, minor), 0)
    }

    fn finish(mut self) -> io::Result<W> {
        self.header("TRAILER!!!", 0, 0, (0, 0), 0)?;
        let n = ((512 - self.written % 512) % 512) as usize;
        self.raw(&vec![0u8; n])?;
        self.w.flush()?;
        Ok(self.w)
    }
}

struct Image {
    path: PathBuf,
    size: u64,
    modules: usize,
    build_time: Duration,
}

fn io_err(what: impl std::fmt::Display) -> impl FnOnce(io::Error) -> String {
    move |e| format!("{what}: {e}")
}

fn build_initramfs(
    refs: &Refs,
    tree: &KernelTree,
    bins: &GuestTools,
    opts: &Opts,
) -> Result<Image, String> {
    let t0 = Instant::now();
    let dir = target_dir().join("vm").join(tree.label);
    fs::create_dir_all(&dir).map_err(io_err(dir.display()))?;
    // The checkout may be shared: one image per process.
    let path = dir.join(format!("initramfs-{}.cpio", std::process::id()));
    let f = File::create(&path).map_err(io_err(path.display()))?;
    let mut c = Cpio::new(BufWriter::with_capacity(1 << 20, f));
    let modules = write_initramfs(&mut c, refs, tree, bins).map_err(io_err(path.display()))?;
    c.finish().map_err(io_err(path.display()))?;
    let path = match opts.compress {
        Compress::None => path,
        Compress::Gzip => {
            let st = Command::new("gzip")
                .args(["-f", "-6"])
                .arg(&path)
                .status()
                .map_err(|e| format!("gzip: {e}"))?;
            if !st.success() {
                return Err("gzip failed".into());
            }
            path.with_extension("cpio.gz")
        }
    };
    let size = fs::metadata(&path).map_err(io_err(path.display()))?.len();
    Ok(Image {
        path,
        size,
        modules,
        build_time: t0.elapsed(),
    })
}

fn cleanup_image(img: &Image, opts: &Opts) {
    if opts.keep {
        println!("kept {}", img.path.display());
    } else {
        let _ = fs::remove_file(&img.path);
    }
}

fn write_initramfs<W: Write>(
    c: &mut Cpio<W>,
    refs: &Refs,
    tree: &KernelTree,
    bins: &GuestTools,
) -> io::Result<usize> {
    for d in [
        "bin", "sbin", "dev", "proc", "sys", "tmp", "run", "etc", "mnt", "root", "vm", "other",
    ] {
        c.dir(d)?;
    }
    c.dir("etc/modprobe.d")?;
    c.chardev("dev/console", 0o600, 5, 1)?;

    // busybox and its applets, except the module tools.
    c.file("bin/busybox", 0o755, &refs.busybox)?;
    for applet in busybox_applets(&refs.busybox)? {
        if applet == "busybox" || MODULE_APPLETS.contains(&applet.as_str()) {
            continue;
        }
        c.symlink(&format!("bin/{applet}"), "busybox")?;
    }
    match bins {
        GuestTools::Ours(list) => {
            for (name, p) in list {
                c.file(&format!("sbin/{name}"), 0o755, p)?;
            }
        }
        GuestTools::Busybox => {
            for t in TOOLS {
                c.symlink(&format!("sbin/{t}"), "/bin/busybox")?;
            }
        }
    }

    c.bytes("init", 0o755, INIT_SH.as_bytes())?;
    c.bytes("vm/scenarios.sh", 0o755, SCENARIOS_SH.as_bytes())?;
    c.bytes("vm/demo.sh", 0o755, DEMO_SH.as_bytes())?;

    // Pristine module tree: the module files plus the three files the kernel build
    // installs; never any index (depmod runs in the guest).
    c.dir("lib")?;
    c.dir("lib/modules")?;
    let root = format!("lib/modules/{}", tree.kver);
    c.dir(&root)?;
    let moddir = tree.moddir();
    let mut count = 0;
    for e in sorted_dir(&moddir)? {
        let name = e.file_name().to_string_lossy().into_owned();
        let ft = e.file_type()?;
        if ft.is_dir() {
            count += copy_tree(c, &e.path(), &format!("{root}/{name}"))?;
        } else if ft.is_file()
            && matches!(
                name.as_str(),
                "modules.order" | "modules.builtin" | "modules.builtin.modinfo"
            )
        {
            c.file(&format!("{root}/{name}"), 0o644, &e.path())?;
        }
    }

    // One module of the other kernel (vermagic mismatch) and a file that is no module.
    if let Some(other) = refs.trees.iter().find(|t| t.kver != tree.kver) {
        let data = foreign_module(refs, other, "dummy")?;
        c.bytes("other/dummy.ko", 0o644, &data)?;
        c.bytes("other/kver", 0o644, format!("{}\n", other.kver).as_bytes())?;
    }
    c.bytes(
        "other/notamodule.ko",
        0o644,
        b"This is a text file, not a kernel module.\n",
    )?;
    Ok(count)
}

fn sorted_dir(dir: &Path) -> io::Result<Vec<fs::DirEntry>> {
    let mut v = fs::read_dir(dir)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", dir.display())))?
        .collect::<io::Result<Vec<_>>>()?;
    v.sort_by_key(|e| e.file_name());
    Ok(v)
}

/// Copy a directory tree (directories and regular files; symlinks are skipped) and return
/// the number of module files in it.
fn copy_tree<W: Write>(c: &mut Cpio<W>, src: &Path, dst: &str) -> io::Result<usize> {
    c.dir(dst)?;
    let mut count = 0;
    for e in sorted_dir(src)? {
        let name = e.file_name().to_string_lossy().into_owned();
        let ft = e.file_type()?;
        let to = format!("{dst}/{name}");
        if ft.is_dir() {
            count += copy_tree(c, &e.path(), &to)?;
        } else if ft.is_file() {
            c.file(&to, 0o644, &e.path())?;
            if name.contains(".ko") {
                count += 1;
            }
        }
    }
    Ok(count)
}

fn busybox_applets(busybox: &Path) -> io::Result<Vec<String>> {
    let out = Command::new(busybox).arg("--list").output()?;
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "{} --list failed",
            busybox.display()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.contains('/'))
        .map(String::from)
        .collect())
}

/// The named module of another kernel tree, uncompressed (busybox xzcat/zcat/zstdcat? no:
/// only xz is used by Debian's trees, plain files are read as they are).
fn foreign_module(refs: &Refs, tree: &KernelTree, name: &str) -> io::Result<Vec<u8>> {
    let base = tree.moddir().join("kernel/drivers/net");
    let plain = base.join(format!("{name}.ko"));
    if plain.is_file() {
        return fs::read(plain);
    }
    let xz = base.join(format!("{name}.ko.xz"));
    let out = Command::new(&refs.busybox).arg("xzcat").arg(&xz).output()?;
    if !out.status.success() || out.stdout.is_empty() {
        return Err(io::Error::other(format!(
            "cannot decompress {}: {}",
            xz.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(out.stdout)
}

// ---------------------------------------------------------------------------------------
// Booting

struct Outcome {
    log: PathBuf,
    wall: Duration,
    boot_time: Option<Duration>,
    end_seen: bool,
    timed_out: bool,
    events: Vec<Event>,
    qemu_stderr: String,
    exit: Option<std::process::ExitStatus>,
}

#[derive(Clone)]
enum Event {
    Pass(String),
    Fail(String, String),
    Info(String, String),
}

fn parse_event(line: &str) -> Option<Event> {
    let line = line.trim_end();
    let split = |rest: &str| -> (String, String) {
        match rest.split_once(": ") {
            Some((n, w)) => (n.trim().to_string(), w.to_string()),
            None => (rest.trim_end_matches(':').trim().to_string(), String::new()),
        }
    };
    if let Some(rest) = line.strip_prefix("PASS ") {
        Some(Event::Pass(rest.trim().to_string()))
    } else if let Some(rest) = line.strip_prefix("FAIL ") {
        let (n, w) = split(rest);
        Some(Event::Fail(n, w))
    } else if let Some(rest) = line.strip_prefix("INFO ") {
        let (n, w) = split(rest);
        Some(Event::Info(n, w))
    } else {
        None
    }
}

/// Kernel console lines start with a `[    1.234567]` timestamp.
fn is_kernel_line(line: &str) -> bool {
    let Some(rest) = line.strip_prefix('[') else {
        return false;
    };
    let Some((ts, _)) = rest.split_once(']') else {
        return false;
    };
    let ts = ts.trim();
    !ts.is_empty() && ts.chars().all(|c| c.is_ascii_digit() || c == '.')
}

fn kernel_cmdline(mode: Mode, tools: Tools) -> String {
    // Words with '=' and no '.' are handed to /init as environment variables.
    format!(
        "console=ttyS0 panic=-1 quiet loglevel=3 VMTEST_MODE={} VMTEST_TOOLS={}",
        mode.name(),
        tools.name()
    )
}

fn qemu_base(tree: &KernelTree, initrd: &Path, mode: Mode, tools: Tools) -> Command {
    let mut cmd = Command::new("qemu-system-x86_64");
    cmd.args([
        "-accel",
        "tcg",
        "-m",
        "1024",
        "-smp",
        "2",
        "-no-reboot",
        "-nic",
        "none",
    ])
    .arg("-kernel")
    .arg(tree.vmlinuz())
    .arg("-initrd")
    .arg(initrd)
    .arg("-append")
    .arg(kernel_cmdline(mode, tools));
    cmd
}

fn boot_interactive(tree: &KernelTree, initrd: &Path, tools: Tools) -> Result<(), String> {
    println!("interactive boot of {} (quit: Ctrl-A x)", tree.kver);
    let st = qemu_base(tree, initrd, Mode::Shell, tools)
        .arg("-nographic")
        .status()
        .map_err(|e| format!("cannot run qemu-system-x86_64: {e}"))?;
    if st.success() {
        Ok(())
    } else {
        Err(format!("qemu exited with {st}"))
    }
}

fn boot(
    tree: &KernelTree,
    initrd: &Path,
    mode: Mode,
    tools: Tools,
    timeout: Duration,
    mut on_line: impl FnMut(f64, &str),
) -> Result<Outcome, String> {
    let logdir = target_dir().join("vm");
    fs::create_dir_all(&logdir).map_err(io_err(logdir.display()))?;
    let log_path = logdir.join(format!("{}-{}.log", tree.label, mode.name()));
    let mut log = BufWriter::new(File::create(&log_path).map_err(io_err(log_path.display()))?);

    let mut cmd = qemu_base(tree, initrd, mode, tools);
    cmd.args([
        "-nodefaults",
        "-no-user-config",
        "-display",
        "none",
        "-serial",
        "stdio",
    ])
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let started = Instant::now();
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot run qemu-system-x86_64: {e}"))?;
    let stdout = child.stdout.take().ok_or("no qemu stdout")?;
    let mut stderr = child.stderr.take().ok_or("no qemu stderr")?;

    let (tx, rx) = mpsc::channel::<String>();
    let reader = thread::spawn(move || {
        let mut r = BufReader::new(stdout);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match r.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let s = String::from_utf8_lossy(&buf);
                    let s = s.trim_end_matches(['\n', '\r']).replace('\r', "");
                    if tx.send(s).is_err() {
                        break;
                    }
                }
            }
        }
    });
    let err_reader = thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });

    let deadline = started + timeout;
    let mut out = Outcome {
        log: log_path.clone(),
        wall: Duration::ZERO,
        boot_time: None,
        end_seen: false,
        timed_out: false,
        events: Vec::new(),
        qemu_stderr: String::new(),
        exit: None,
    };
    loop {
        let now = Instant::now();
        // After the end marker the guest powers off; give it a few seconds.
        let limit = if out.end_seen {
            deadline.min(now + Duration::from_secs(15))
        } else {
            deadline
        };
        if now >= limit {
            out.timed_out = !out.end_seen;
            let _ = child.kill();
            break;
        }
        match rx.recv_timeout(limit - now) {
            Ok(line) => {
                let el = started.elapsed();
                let _ = writeln!(log, "{line}");
                if line.starts_with(BOOT_MARKER) && out.boot_time.is_none() {
                    out.boot_time = Some(el);
                }
                if line.trim_end() == END_MARKER {
                    out.end_seen = true;
                }
                if let Some(ev) = parse_event(&line) {
                    out.events.push(ev);
                }
                on_line(el.as_secs_f64(), &line);
            }
            Err(mpsc::RecvTimeoutError::Timeout) => continue,
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    out.exit = child.wait().ok();
    out.wall = started.elapsed();
    let _ = reader.join();
    out.qemu_stderr = err_reader.join().unwrap_or_default();
    if out.timed_out {
        let _ = writeln!(log, "*** xtask: killed qemu after {}s", timeout.as_secs());
    }
    let _ = log.flush();
    Ok(out)
}

// ---------------------------------------------------------------------------------------
// Report

struct KernelRun {
    label: &'static str,
    image_size: u64,
    outcome: Outcome,
}

fn report(runs: &[KernelRun], tools: Tools, total: Duration) -> Result<(), String> {
    // Scenario names in order of first appearance.
    let mut names: Vec<String> = Vec::new();
    let mut cells: BTreeMap<(usize, String), String> = BTreeMap::new();
    let mut infos: Vec<String> = Vec::new();
    let mut failures: Vec<String> = Vec::new();
    for (k, run) in runs.iter().enumerate() {
        for ev in &run.outcome.events {
            match ev {
                Event::Pass(n) | Event::Fail(n, _) => {
                    if !names.contains(n) {
                        names.push(n.clone());
                    }
                    let v = if matches!(ev, Event::Pass(_)) {
                        "PASS"
                    } else {
                        "FAIL"
                    };
                    // A scenario reported twice counts as failed if either report failed.
                    let e = cells.entry((k, n.clone())).or_insert_with(|| v.to_string());
                    if v == "FAIL" {
                        *e = v.to_string();
                    }
                    if let Event::Fail(_, why) = ev {
                        failures.push(format!("[{}] {n}: {why}", run.label));
                    }
                }
                Event::Info(n, t) => infos.push(format!("[{}] {n}: {t}", run.label)),
            }
        }
    }

    let w = names.iter().map(|n| n.len()).max().unwrap_or(8).max(8);
    println!("\nvm-test results (tools: {})", tools.name());
    print!("{:w$}", "scenario");
    for r in runs {
        print!("  {:>10}", r.label);
    }
    println!();
    for n in &names {
        print!("{n:w$}");
        for (k, _) in runs.iter().enumerate() {
            let c = cells.get(&(k, n.clone())).map_or("-", String::as_str);
            print!("  {c:>10}");
        }
        println!();
    }
    let mut problems = Vec::new();
    for r in runs {
        let o = &r.outcome;
        let pass = o
            .events
            .iter()
            .filter(|e| matches!(e, Event::Pass(_)))
            .count();
        let fail = o
            .events
            .iter()
            .filter(|e| matches!(e, Event::Fail(..)))
            .count();
        println!(
            "[{}] {pass} passed, {fail} failed; initramfs {}, /init after {}, total {:.1}s; log {}",
            r.label,
            human_size(r.image_size),
            o.boot_time
                .map(|d| format!("{:.1}s", d.as_secs_f64()))
                .unwrap_or_else(|| "never".into()),
            o.wall.as_secs_f64(),
            o.log.display()
        );
        if o.timed_out {
            problems.push(format!("[{}] timed out (qemu killed)", r.label));
        } else if !o.end_seen {
            let status = o
                .exit
                .map(|s| s.to_string())
                .unwrap_or_else(|| "unknown status".into());
            let mut p = format!("[{}] no {END_MARKER} line (qemu {status})", r.label);
            let err = o.qemu_stderr.trim();
            if !err.is_empty() {
                p.push_str(&format!("; qemu stderr: {err}"));
            }
            problems.push(p);
        }
        if pass + fail == 0 {
            problems.push(format!("[{}] no scenario reported", r.label));
        }
    }
    if !infos.is_empty() {
        println!("notes:");
        for i in &infos {
            println!("  {i}");
        }
    }
    if !failures.is_empty() {
        println!("failures:");
        for f in &failures {
            println!("  {f}");
        }
    }
    let total_pass: usize = cells.values().filter(|v| *v == "PASS").count();
    let total_fail: usize = cells.values().filter(|v| *v == "FAIL").count();
    println!(
        "vm-test: {total_pass} passed, {total_fail} failed (wall time {:.1}s)",
        total.as_secs_f64()
    );
    if !problems.is_empty() {
        for p in &problems {
            println!("  {p}");
        }
    }
    if total_fail > 0 || !problems.is_empty() {
        return Err(format!(
            "{total_fail} scenario(s) failed{}",
            if problems.is_empty() {
                String::new()
            } else {
                format!("; {}", problems.join("; "))
            }
        ));
    }
    Ok(())
}

fn human_size(n: u64) -> String {
    if n >= 1 << 20 {
        format!("{:.1} MiB", n as f64 / f64::from(1u32 << 20))
    } else {
        format!("{:.1} KiB", n as f64 / 1024.0)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn events_parse() {
        assert!(matches!(parse_event("PASS depmod-a\r"), Some(Event::Pass(n)) if n == "depmod-a"));
        match parse_event("FAIL x: rc=1: boom") {
            Some(Event::Fail(n, w)) => {
                assert_eq!(n, "x");
                assert_eq!(w, "rc=1: boom");
            }
            _ => panic!("not a failure"),
        }
        assert!(parse_event("[    1.2] PASS x").is_none());
        assert!(is_kernel_line("[    1.234567] loop: module loaded"));
        assert!(!is_kernel_line("[exit 1]"));
    }

    #[test]
    fn cpio_layout() {
        let mut c = Cpio::new(Vec::new());
        c.dir("bin").unwrap();
        c.bytes("init", 0o755, b"#!/bin/sh\n").unwrap();
        c.symlink("bin/sh", "busybox").unwrap();
        let out = c.finish().unwrap();
        assert_eq!(out.len() % 512, 0);
        assert!(out.starts_with(b"070701"));
        let s = String::from_utf8_lossy(&out);
        assert!(s.contains("init\0"));
        assert!(s.contains("TRAILER!!!"));
        // every header starts 4-aligned
        for (i, _) in s.match_indices("070701") {
            assert_eq!(i % 4, 0);
        }
    }
}
