//! depmod end to end on synthetic module trees: outputs, priority rules, explicit files,
//! dry run, cycles, bad modules, atomic replacement and thread-count independence.

use modcore::depmod::{self, DepmodError, DepmodOptions, NoProgress, OUTPUT_FILES};
use modcore::diag::{Collect, Level};
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use tests::synth::{self, SynthModule};

const KVER: &str = "6.1.0-test";

struct Tree {
    _dir: tempfile::TempDir,
    base: PathBuf,
}

impl Tree {
    fn new() -> Tree {
        let dir = tempfile::tempdir().expect("tempdir");
        let base = dir.path().to_path_buf();
        fs::create_dir_all(base.join("lib/modules").join(KVER)).expect("mkdir");
        Tree { _dir: dir, base }
    }

    fn moddir(&self) -> PathBuf {
        self.base.join("lib/modules").join(KVER)
    }

    fn put(&self, rel: &str, data: &[u8]) {
        let p = self.moddir().join(rel);
        fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        fs::write(p, data).expect("write");
    }

    fn opts(&self) -> DepmodOptions {
        let mut o = DepmodOptions::new(KVER);
        o.basedir = self.base.as_os_str().as_bytes().to_vec();
        o.config_paths = Some(vec![]);
        o
    }

    fn run(&self, o: &DepmodOptions) -> (Result<depmod::Summary, DepmodError>, Collect, Vec<u8>) {
        let mut sink = Collect::default();
        let mut out = Vec::new();
        let r = depmod::run(o, &mut sink, &mut out, &NoProgress);
        (r, sink, out)
    }

    fn read(&self, name: &str) -> String {
        String::from_utf8(fs::read(self.moddir().join(name)).expect("output exists")).expect("utf8")
    }

    fn snapshot(&self) -> Vec<(String, Vec<u8>)> {
        let mut v: Vec<(String, Vec<u8>)> = fs::read_dir(self.moddir())
            .expect("readdir")
            .filter_map(Result::ok)
            .filter(|e| e.file_type().map(|t| t.is_file()).unwrap_or(false))
            .map(|e| {
                (
                    e.file_name().to_string_lossy().into_owned(),
                    fs::read(e.path()).expect("read"),
                )
            })
            .collect();
        v.sort();
        v
    }
}

fn fat_family(t: &Tree) {
    t.put(
        "kernel/fs/fat/fat.ko",
        &SynthModule::new("fat")
            .export("fat_get")
            .export("fat_put")
            .needs("printk")
            .build(),
    );
    t.put(
        "kernel/fs/fat/msdos.ko",
        &SynthModule::new("msdos")
            .modinfo("alias", "fs-msdos")
            .needs("fat_get")
            .needs("nls_x")
            .build(),
    );
    t.put(
        "kernel/fs/fat/vfat.ko",
        &SynthModule::new("vfat")
            .modinfo("alias", "fs-vfat")
            .modinfo("softdep", "pre: nls_cp437")
            .needs("fat_put")
            .build(),
    );
    t.put(
        "kernel/fs/nls/nls-x.ko",
        &SynthModule::new("nls-x")
            .export("nls_x")
            .modinfo("alias", "devname:nlsdev")
            .modinfo("alias", "char-major-10-250")
            .build(),
    );
    t.put(
        "modules.order",
        b"kernel/fs/nls/nls-x.ko\nkernel/fs/fat/fat.ko\nkernel/fs/fat/vfat.ko\nkernel/fs/fat/msdos.ko\n",
    );
    t.put("modules.builtin", b"kernel/fs/ext4/ext4.ko\n");
    t.put(
        "modules.builtin.modinfo",
        b"ext4.alias=fs-ext4\0ext4.license=GPL\0",
    );
}

#[test]
fn fat_family_outputs() {
    let t = Tree::new();
    fat_family(&t);
    let (r, sink, _) = t.run(&t.opts());
    let s = r.expect("depmod succeeds");
    assert_eq!(s.modules, 4);
    assert!(sink.0.is_empty(), "no diagnostics: {:?}", sink.0);
    // Dependencies are sorted by the LIFO topological number (spec §5.5): msdos is
    // numbered first, then nls-x (its last-found provider that became free), vfat, fat.
    assert_eq!(
        t.read("modules.dep"),
        "kernel/fs/nls/nls-x.ko:\nkernel/fs/fat/fat.ko:\nkernel/fs/fat/vfat.ko: kernel/fs/fat/fat.ko\n\
         kernel/fs/fat/msdos.ko: kernel/fs/nls/nls-x.ko kernel/fs/fat/fat.ko\n"
    );
    assert_eq!(
        t.read("modules.alias"),
        "# Aliases extracted from modules themselves.\nalias devname:nlsdev nls_x\n\
         alias char-major-10-250 nls_x\nalias fs-vfat vfat\nalias fs-msdos msdos\n"
    );
    assert_eq!(
        t.read("modules.softdep"),
        "# Soft dependencies extracted from modules themselves.\nsoftdep vfat pre: nls_cp437\n"
    );
    assert_eq!(
        t.read("modules.devname"),
        "# Device nodes to trigger on-demand module loading.\nnls_x nlsdev c10:250\n"
    );
    let symbols = t.read("modules.symbols");
    for l in [
        "alias symbol:fat_get fat\n",
        "alias symbol:fat_put fat\n",
        "alias symbol:nls_x nls_x\n",
    ] {
        assert!(symbols.contains(l), "{symbols}");
    }
    // The binary indexes answer the same questions.
    let dep = modcore::index::IndexFile::open(&t.moddir().join("modules.dep.bin")).expect("open");
    let v = dep
        .index()
        .get_first(b"msdos")
        .expect("valid")
        .expect("present");
    assert_eq!(
        v.value,
        b"kernel/fs/fat/msdos.ko: kernel/fs/nls/nls-x.ko kernel/fs/fat/fat.ko"
    );
    assert_eq!(v.priority, 3);
    let alias =
        modcore::index::IndexFile::open(&t.moddir().join("modules.alias.bin")).expect("open");
    let v = alias
        .index()
        .get_first(b"fs_msdos")
        .expect("valid")
        .expect("normalised key");
    assert_eq!(v.value, b"msdos");
    let bi = modcore::index::IndexFile::open(&t.moddir().join("modules.builtin.alias.bin"))
        .expect("open");
    assert_eq!(
        bi.index()
            .get_first(b"fs_ext4")
            .expect("valid")
            .expect("present")
            .value,
        b"ext4"
    );
    // Every file is there; no temporary file is left behind.
    let names: Vec<String> = t.snapshot().into_iter().map(|(n, _)| n).collect();
    for f in OUTPUT_FILES {
        assert!(names.iter().any(|n| n == f), "{f} missing");
    }
    let inputs = [
        "modules.order",
        "modules.builtin",
        "modules.builtin.modinfo",
    ];
    // (and the record of the outputs for the next run: the cache beside it is written
    // only once the module files are a few seconds old)
    let stray: Vec<&String> = names
        .iter()
        .filter(|n| !OUTPUT_FILES.contains(&n.as_str()) && !inputs.contains(&n.as_str()))
        .filter(|n| *n != modcore::depmod::uptodate::RECORD_FILE)
        .collect();
    assert!(stray.is_empty(), "stray files: {stray:?}");
}

#[test]
fn same_bytes_at_any_thread_count() {
    let t = Tree::new();
    fat_family(&t);
    for i in 0..40 {
        t.put(
            &format!("kernel/drivers/d{i}.ko"),
            &SynthModule::new(&format!("d{i}"))
                .export(&format!("sym{i}"))
                .needs(&format!("sym{}", (i * 7 + 3) % 40))
                .needs("fat_get")
                .modinfo("alias", &format!("pci:v0000{i:04}d*"))
                .build(),
        );
    }
    // Without the cache: every run makes every file (none is left as up to date).
    let mut o = t.opts();
    o.use_cache = false;
    let mut shots = Vec::new();
    for threads in [1, 2, 7] {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .expect("pool");
        let (r, _, _) = pool.install(|| t.run(&o));
        // d_i needs sym_{(7i+3)%40}; that mapping has cycles, so depmod must refuse.
        if let Err(DepmodError::Cycles(n)) = r {
            assert!(n > 0);
        } else {
            panic!("expected cycles");
        }
        shots.push(t.snapshot());
    }
    assert!(shots.windows(2).all(|w| w[0] == w[1]));

    // Now an acyclic variant: d_i needs sym_{i+1}.
    let t = Tree::new();
    fat_family(&t);
    for i in 0..40 {
        let mut m = SynthModule::new(&format!("d{i}")).export(&format!("sym{i}"));
        if i + 1 < 40 {
            m = m.needs(&format!("sym{}", i + 1));
        }
        t.put(
            &format!("kernel/drivers/d{i}.ko"),
            &m.needs("nls_x").build(),
        );
    }
    let mut o = t.opts();
    o.use_cache = false;
    let mut shots = Vec::new();
    for threads in [1, 3, 8] {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .expect("pool");
        let (r, _, _) = pool.install(|| t.run(&o));
        r.expect("acyclic");
        shots.push(t.snapshot());
    }
    assert!(shots.windows(2).all(|w| w[0] == w[1]));
    let dep = t.read("modules.dep");
    let d0 = dep
        .lines()
        .find(|l| l.starts_with("kernel/drivers/d0.ko:"))
        .expect("d0 line");
    assert_eq!(
        d0.split(' ').count(),
        1 + 39 + 1,
        "full transitive closure: {d0}"
    );
}

/// Two modules that need each other's symbols, x1 with an alias: the alias files, which
/// need no graph, are made while the cycle is found, and must not be left behind, under
/// their names or temporary ones.
fn put_cycle(t: &Tree) {
    t.put(
        "kernel/x1.ko",
        &SynthModule::new("x1")
            .export("a")
            .needs("b")
            .modinfo("alias", "pci:v0000ABCDd*")
            .build(),
    );
    t.put(
        "kernel/x2.ko",
        &SynthModule::new("x2").export("b").needs("a").build(),
    );
}

#[test]
fn cycles_fail_and_leave_previous_files_whole() {
    let t = Tree::new();
    fat_family(&t);
    t.run(&t.opts()).0.expect("first run");
    let before = t.snapshot();
    put_cycle(&t);
    let (r, sink, _) = t.run(&t.opts());
    assert!(matches!(r, Err(DepmodError::Cycles(2))));
    let errs: Vec<&str> = sink.at(Level::Error).collect();
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(
        errs[0] == "Cycle detected: x1 -> x2 -> x1" || errs[0] == "Cycle detected: x2 -> x1 -> x2",
        "{errs:?}"
    );
    let after: Vec<_> = t
        .snapshot()
        .into_iter()
        .filter(|(n, _)| !n.ends_with(".ko"))
        .collect();
    assert_eq!(before, after, "a failed run changes nothing");
}

#[test]
fn bad_modules_are_reported_and_the_rest_indexed() {
    let t = Tree::new();
    fat_family(&t);
    let good = SynthModule::new("ok").export("ok_sym").build();
    t.put("kernel/bad/text.ko", b"this is not an ELF file at all\n");
    t.put("kernel/bad/empty.ko", b"");
    t.put("kernel/bad/trunc.ko", &good[..good.len() / 3]);
    let mut xz = synth::xz(&good);
    let n = xz.len();
    xz.truncate(n / 2);
    t.put("kernel/bad/brokenxz.ko.xz", &xz);
    let mut zst = synth::zstd(&good);
    for b in zst.iter_mut().skip(8) {
        *b ^= 0x5a;
    }
    t.put("kernel/bad/brokenzst.ko.zst", &zst);
    t.put("kernel/bad/mismatch.ko.xz", &synth::gzip(&good));
    fs::create_dir_all(t.moddir().join("kernel/bad/adir.ko")).expect("mkdir");
    std::os::unix::fs::symlink("loop.ko", t.moddir().join("kernel/bad/loop.ko")).expect("symlink");
    std::os::unix::fs::symlink("..", t.moddir().join("kernel/bad/up")).expect("dir loop");
    t.put("kernel/good/ok.ko", &good);
    t.put(
        "kernel/good/user.ko",
        &SynthModule::new("user").needs("ok_sym").build(),
    );

    let (r, sink, _) = t.run(&t.opts());
    let s = r.expect("bad modules do not fail the run");
    let errors: Vec<&str> = sink.at(Level::Error).collect();
    for name in [
        "text.ko",
        "empty.ko",
        "trunc.ko",
        "brokenxz.ko.xz",
        "brokenzst.ko.zst",
    ] {
        let hits: Vec<_> = errors.iter().filter(|e| e.contains(name)).collect();
        assert_eq!(hits.len(), 1, "{name} reported once: {errors:?}");
        assert!(
            hits[0].starts_with("failed to load symbols from /"),
            "{hits:?}"
        );
    }
    assert!(errors
        .iter()
        .any(|e| e.contains("text.ko") && e.contains("Exec format error")));
    assert!(errors
        .iter()
        .any(|e| e.contains("loop.ko") && e.contains("Too many levels of symbolic links")));
    assert!(errors.iter().any(|e| e.contains("directory loop")));
    assert_eq!(s.unreadable, 5);
    let dep = t.read("modules.dep");
    assert!(
        dep.contains("kernel/good/user.ko: kernel/good/ok.ko\n"),
        "{dep}"
    );
    assert!(
        dep.contains("kernel/bad/text.ko:\n"),
        "unreadable modules stay listed"
    );
    assert!(
        dep.contains("kernel/bad/mismatch.ko.xz:\n"),
        "content decides the format"
    );
    assert!(!dep.contains("adir"), "a directory is not a module");
    assert!(dep.contains("kernel/fs/fat/msdos.ko: kernel/fs/nls/nls-x.ko kernel/fs/fat/fat.ko\n"));
    assert!(t
        .read("modules.symbols")
        .contains("alias symbol:ok_sym ok\n"));
}

#[test]
fn compressed_and_foreign_elf_variants_index_alike() {
    use tests::synth::Target;
    let t = Tree::new();
    let targets = [
        Target::X86_64,
        Target::I386,
        Target::PowerPc64,
        Target::PowerPc,
    ];
    for (i, target) in targets.into_iter().enumerate() {
        let prov = SynthModule::new("p")
            .target(target)
            .export_crc(&format!("p{i}"), 0x1234)
            .modinfo("alias", &format!("p-{i}"))
            .build();
        let user = SynthModule::new("u")
            .target(target)
            .needs(&format!("p{i}"))
            .build();
        t.put(&format!("kernel/p{i}.ko.xz"), &synth::xz(&prov));
        t.put(&format!("kernel/u{i}.ko.zst"), &synth::zstd(&user));
    }
    t.put(
        "kernel/g.ko.gz",
        &synth::gzip(&SynthModule::new("g").needs("p0").build()),
    );
    let (r, sink, _) = t.run(&t.opts());
    r.expect("ok");
    assert!(sink.at(Level::Error).next().is_none(), "{:?}", sink.0);
    let dep = t.read("modules.dep");
    for i in 0..4 {
        assert!(
            dep.contains(&format!("kernel/u{i}.ko.zst: kernel/p{i}.ko.xz\n")),
            "{dep}"
        );
    }
    assert!(dep.contains("kernel/g.ko.gz: kernel/p0.ko.xz\n"), "{dep}");
}

fn conf(t: &Tree, text: &str) -> PathBuf {
    let p = t.base.join("depmod.conf");
    fs::write(&p, text).expect("write conf");
    p
}

fn kept_path(t: &Tree, opts: &DepmodOptions, name: &str) -> String {
    t.run(opts).0.expect("ok");
    t.read("modules.dep")
        .lines()
        .find(|l| {
            l.split(':')
                .next()
                .is_some_and(|p| p.ends_with(&format!("/{name}.ko")))
        })
        .map(|l| l.split(':').next().unwrap_or_default().to_string())
        .unwrap_or_default()
}

#[test]
fn duplicate_names_follow_priority_rules() {
    let t = Tree::new();
    let m = SynthModule::new("a").build();
    t.put("kernel/a.ko", &m);
    t.put("updates/a.ko", &m);
    t.put("extra/a.ko", &m);
    // Default search list is [updates].
    assert_eq!(kept_path(&t, &t.opts(), "a"), "updates/a.ko");
    // search extra first.
    let mut o = t.opts();
    o.config_paths = Some(vec![conf(&t, "search extra updates built-in\n")]);
    assert_eq!(kept_path(&t, &o, "a"), "extra/a.ko");
    // built-in before anything else: kernel/ wins only if it matched nothing else; here
    // both updates/ and extra/ are listed after built-in, so kernel/ (bprio) wins.
    o.config_paths = Some(vec![conf(&t, "search built-in updates extra\n")]);
    assert_eq!(kept_path(&t, &o, "a"), "kernel/a.ko");
    // An override beats the search list.
    o.config_paths = Some(vec![conf(
        &t,
        "search updates extra\noverride a * kernel\n",
    )]);
    assert_eq!(kept_path(&t, &o, "a"), "kernel/a.ko");
    // External directories.
    let ext = t.base.join("ext");
    fs::create_dir_all(&ext).expect("mkdir");
    fs::write(ext.join("a.ko"), &m).expect("write");
    o.config_paths = Some(vec![conf(
        &t,
        &format!("search external updates\nexternal * {}\n", ext.display()),
    )]);
    t.run(&o).0.expect("ok");
    let dep = t.read("modules.dep");
    assert!(
        dep.starts_with(&format!("{}/a.ko:", ext.display())),
        "externals listed by absolute path: {dep}"
    );
}

#[test]
fn excluded_and_skipped_directories() {
    let t = Tree::new();
    let m = SynthModule::new("a").build();
    t.put("kernel/a.ko", &m);
    t.put("build/b.ko", &m);
    t.put("kernel/source/c.ko", &m);
    t.put("skipme/d.ko", &m);
    let mut o = t.opts();
    o.config_paths = Some(vec![conf(&t, "exclude skipme\n")]);
    t.run(&o).0.expect("ok");
    assert_eq!(t.read("modules.dep"), "kernel/a.ko:\n");
}

#[test]
fn explicit_files_dry_run_and_errors() {
    let t = Tree::new();
    fat_family(&t);
    let moddir = t.moddir();
    let mut o = t.opts();
    o.files = vec![
        moddir
            .join("kernel/fs/fat/fat.ko")
            .as_os_str()
            .as_bytes()
            .to_vec(),
        moddir
            .join("kernel/fs/fat/msdos.ko")
            .as_os_str()
            .as_bytes()
            .to_vec(),
    ];
    o.dry_run = true;
    let (r, _, out) = t.run(&o);
    r.expect("ok");
    let out = String::from_utf8(out).expect("utf8");
    assert!(
        out.starts_with(
            "kernel/fs/fat/fat.ko:\nkernel/fs/fat/msdos.ko: kernel/fs/fat/fat.ko\n# Aliases"
        ),
        "{out}"
    );
    assert!(!moddir.join("modules.dep").exists(), "-n writes nothing");

    o.files = vec![b"relative/x.ko".to_vec()];
    assert!(matches!(t.run(&o).0, Err(DepmodError::NotAbsolute(_))));

    o.files = vec![
        moddir
            .join("kernel/fs/fat/fat.ko")
            .as_os_str()
            .as_bytes()
            .to_vec(),
        b"/elsewhere/fat.ko".to_vec(),
    ];
    assert!(matches!(
        t.run(&o).0,
        Err(DepmodError::DuplicateFile { .. })
    ));
}

#[test]
fn empty_tree_gets_empty_modules_dep() {
    let t = Tree::new();
    let (r, sink, _) = t.run(&t.opts());
    r.expect("ok");
    assert_eq!(t.read("modules.dep"), "");
    assert_eq!(
        fs::read(t.moddir().join("modules.devname")).expect("exists"),
        b""
    );
    assert_eq!(
        fs::read(t.moddir().join("modules.builtin.bin")).expect("exists"),
        b""
    );
    let warns: Vec<_> = sink.at(Level::Warning).collect();
    assert_eq!(
        warns.len(),
        3,
        "modules.order, modules.builtin, .modinfo missing: {warns:?}"
    );
}

#[test]
fn missing_moddir_is_fatal_and_writes_nothing() {
    let t = Tree::new();
    let mut o = t.opts();
    o.kver = "9.9.9".into();
    let (r, sink, _) = t.run(&o);
    assert!(matches!(r, Err(DepmodError::Search(_))));
    assert!(sink
        .at(Level::Error)
        .any(|e| e.starts_with("could not open directory")));
}

#[test]
fn unknown_symbol_warnings_with_system_map() {
    let t = Tree::new();
    fat_family(&t);
    let map = t.base.join("System.map");
    fs::write(
        &map,
        "ffffffff81000000 T printk\nffffffff82000000 r __ksymtab_printk\n",
    )
    .expect("write");
    let mut o = t.opts();
    o.filesyms = Some(map);
    o.errsyms = true;
    let (r, sink, _) = t.run(&o);
    r.expect("ok");
    let warns: Vec<&str> = sink.at(Level::Warning).collect();
    assert!(warns.is_empty(), "all resolved: {warns:?}");

    t.put(
        "kernel/needy.ko",
        &SynthModule::new("needy")
            .needs("nowhere")
            .weak_needs("weakly")
            .build(),
    );
    let (r, sink, _) = t.run(&o);
    r.expect("ok");
    let warns: Vec<&str> = sink.at(Level::Warning).collect();
    let path = t.moddir().join("kernel/needy.ko");
    assert_eq!(
        warns,
        vec![format!("{} needs unknown symbol nowhere", path.display())]
    );
}

#[test]
fn quick_mode_skips_when_nothing_is_newer() {
    let t = Tree::new();
    fat_family(&t);
    let mut o = t.opts();
    o.quick = true;
    let (r, _, _) = t.run(&o);
    assert!(!r.expect("ok").up_to_date, "no modules.dep yet: full run");
    let (r, _, _) = t.run(&o);
    assert!(r.expect("ok").up_to_date);
    // A module one second newer than modules.dep triggers a rebuild.
    let dep = t.moddir().join("modules.dep");
    let old = fs::metadata(&dep).expect("stat").modified().expect("mtime");
    let f = fs::File::options()
        .write(true)
        .open(t.moddir().join("kernel/fs/fat/fat.ko"))
        .expect("open");
    f.set_modified(old + std::time::Duration::from_secs(2))
        .expect("set mtime");
    let (r, _, _) = t.run(&o);
    assert!(!r.expect("ok").up_to_date);
}

#[test]
fn outdir_receives_outputs() {
    let t = Tree::new();
    fat_family(&t);
    let out = t.base.join("out");
    let mut o = t.opts();
    o.outdir = Some(out.as_os_str().as_bytes().to_vec());
    t.run(&o).0.expect("ok");
    let p: &Path = &out.join("lib/modules").join(KVER).join("modules.dep");
    assert!(p.exists());
    assert!(!t.moddir().join("modules.dep").exists());
}

/// A run that fails (a cycle) makes no output directory for `-o`, as kmod makes none;
/// with the directory there, the files it would replace stay as they are.
#[test]
fn a_failed_run_makes_no_output_directory() {
    let t = Tree::new();
    fat_family(&t);
    put_cycle(&t);
    let out = t.base.join("out");
    let mut o = t.opts();
    o.outdir = Some(out.as_os_str().as_bytes().to_vec());
    assert!(matches!(t.run(&o).0, Err(DepmodError::Cycles(2))));
    assert!(!out.exists(), "no output directory made");
    let dir = out.join("lib/modules").join(KVER);
    fs::create_dir_all(&dir).expect("mkdir");
    fs::write(dir.join("modules.alias"), b"old\n").expect("write");
    assert!(matches!(t.run(&o).0, Err(DepmodError::Cycles(2))));
    let left: Vec<String> = fs::read_dir(&dir)
        .expect("read dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left, ["modules.alias"], "nothing made, nothing left behind");
    assert_eq!(fs::read(dir.join("modules.alias")).expect("read"), b"old\n");
}

/// A tree thousands of directories deep (deeper than a path can name) is walked without
/// recursion: no stack overflow, and modules within reach are indexed.
#[test]
fn a_very_deep_tree_is_walked_in_constant_stack() {
    let t = Tree::new();
    t.put("kernel/top.ko", &synth::named("top").build());
    let chain = |n: usize| "d/".repeat(n);
    // 1000 levels below the module directory, then a second 1100-level chain moved to
    // the bottom of the first (each rename names paths short enough; the result is not).
    let deep = format!("kernel/{}", chain(1000));
    t.put(&format!("{deep}deep.ko"), &synth::named("deep").build());
    let other = t.base.join(format!("other/{}", chain(1100)));
    fs::create_dir_all(&other).expect("mkdir");
    fs::rename(t.base.join("other"), t.moddir().join(&deep).join("more"))
        .expect("move the chain down");
    // On the test thread (2 MiB of stack), as the tool runs it.
    let mut sink = Collect::default();
    depmod::run(&t.opts(), &mut sink, &mut Vec::new(), &NoProgress).expect("depmod");
    let dep = fs::read_to_string(t.moddir().join("modules.dep")).expect("modules.dep");
    assert!(dep.contains("kernel/top.ko:\n"), "{dep:.200}");
    assert!(
        dep.contains("/deep.ko:\n"),
        "the module 1000 levels down is indexed"
    );
}

/// Outputs that already hold exactly their new bytes (and the owner and mode a new file
/// gets) are left in place; any difference makes them rewritten. modules.dep left in
/// place gets its time set to now all the same (`depmod -A` compares its time with the
/// modules').
#[test]
fn unchanged_outputs_are_left_in_place() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let t = Tree::new();
    fat_family(&t);
    // Without the cache: the files are made and compared every time (with it, a run
    // whose inputs are all unchanged would not even make them, see `uptodate`).
    let mut o = t.opts();
    o.use_cache = false;
    t.run(&o).0.expect("first run");
    let ino = |name: &str| fs::metadata(t.moddir().join(name)).expect("stat").ino();
    let before: Vec<u64> = OUTPUT_FILES.iter().map(|n| ino(n)).collect();
    let snapshot = t.snapshot();

    let dep = t.moddir().join("modules.dep");
    let long_ago = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1 << 30);
    fs::File::options()
        .write(true)
        .open(&dep)
        .and_then(|f| f.set_modified(long_ago))
        .expect("set modules.dep's mtime");
    let started = std::time::SystemTime::now() - std::time::Duration::from_secs(1);
    t.run(&o).0.expect("second run");
    assert_eq!(t.snapshot(), snapshot, "same bytes");
    for (name, old) in OUTPUT_FILES.iter().zip(&before) {
        assert_eq!(ino(name), *old, "{name} kept");
    }
    let dep_time = fs::metadata(&dep)
        .and_then(|m| m.modified())
        .expect("mtime");
    assert!(
        dep_time >= started,
        "modules.dep's time set to now: {dep_time:?}"
    );

    // Other contents (of the same length), another mode, or a second name: written
    // anew, as kmod would.
    t.put(
        "kernel/fs/fat/vfat.ko",
        &SynthModule::new("vfat")
            .modinfo("alias", "fs-vfat")
            .modinfo("softdep", "pre: nls_cp850")
            .needs("fat_put")
            .build(),
    );
    let weakdep = t.moddir().join("modules.weakdep");
    fs::set_permissions(&weakdep, fs::Permissions::from_mode(0o600)).expect("chmod");
    fs::hard_link(
        t.moddir().join("modules.devname"),
        t.base.join("devname-link"),
    )
    .expect("link");
    // (modules.dep is not touched through a second name either.)
    fs::hard_link(&dep, t.base.join("dep-link")).expect("link");
    let old: Vec<u64> = OUTPUT_FILES.iter().map(|n| ino(n)).collect();
    t.run(&o).0.expect("third run");
    let now: Vec<u64> = OUTPUT_FILES.iter().map(|n| ino(n)).collect();
    for (name, (a, b)) in OUTPUT_FILES.iter().zip(old.iter().zip(&now)) {
        let rewritten = [
            "modules.dep",
            "modules.softdep",
            "modules.weakdep",
            "modules.devname",
        ];
        assert_eq!(
            a != b,
            rewritten.contains(name),
            "{name} rewritten: {}",
            a != b
        );
    }
    assert!(t.read("modules.softdep").contains("pre: nls_cp850"));
    let mode = fs::metadata(&weakdep).expect("stat").mode() & 0o777;
    assert_ne!(mode, 0o600, "rewritten with a new file's mode");

    // A FIFO by an output's name is not waited on (nothing writes to it): it is replaced.
    fs::remove_file(&weakdep).expect("rm");
    let made = std::process::Command::new("mkfifo")
        .arg(&weakdep)
        .status()
        .expect("mkfifo runs");
    assert!(made.success());
    t.run(&o).0.expect("fourth run");
    assert!(fs::symlink_metadata(&weakdep).expect("stat").is_file());
}
