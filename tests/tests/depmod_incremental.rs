//! Incremental depmod (`modules.depmod.cache`): after any edit of the module tree a run
//! that uses the cache writes exactly the files of a full run without it; a damaged cache
//! is ignored; the cache is replaced atomically and never written by `-n` or explicit-file
//! runs.
//!
//! The cache stores only modules whose files are at least `cache::SETTLE` (2 s) old, so
//! each test builds its tree and then waits that long once before the edits start.

use modcore::depmod::cache::{self, CACHE_FILE};
use modcore::depmod::uptodate;
use modcore::depmod::{self, DepmodOptions, NoProgress, Summary, OUTPUT_FILES};
use modcore::diag::{Collect, Level};
use std::fs::{self, File, FileTimes};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};
use tests::rng::Rng;
use tests::synth::{self, SynthModule};

const KVER: &str = "6.1.0-incr";

/// How a module file is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Plain,
    Xz,
    Zstd,
}

impl Kind {
    fn ext(self) -> &'static str {
        match self {
            Kind::Plain => ".ko",
            Kind::Xz => ".ko.xz",
            Kind::Zstd => ".ko.zst",
        }
    }
}

/// One module of the synthetic tree: `m<id>` exports `s<id>_<variant letter>` and needs
/// exports of lower-numbered modules (so the graph stays acyclic).
#[derive(Clone, Debug)]
struct Spec {
    id: usize,
    dir: usize,
    kind: Kind,
    /// Changing it changes the export names but not the file size.
    variant: u8,
    needs: Vec<usize>,
}

impl Spec {
    fn rel(&self) -> String {
        format!("kernel/d{}/m{:03}{}", self.dir, self.id, self.kind.ext())
    }

    fn export(&self, id: usize, variant: u8) -> String {
        format!("s{id:03}_{}", variant as char)
    }

    fn image(&self, variants: &[u8]) -> Vec<u8> {
        let v = self.variant;
        let mut m = SynthModule::new(&format!("m{:03}", self.id))
            .modinfo("alias", &format!("synth:m{:03}{}", self.id, v as char))
            .modinfo("license", "GPL")
            .export_crc(&self.export(self.id, v), 0x1000 + self.id as u64)
            .export(&format!("t{:03}_{}", self.id, v as char))
            .needs("printk");
        if self.id % 7 == 3 {
            m = m
                .modinfo(
                    "alias",
                    &format!("char-major-{}-{}", 200 + self.id, self.id),
                )
                .modinfo("alias", &format!("devname:synth{}", self.id));
        }
        if self.id % 5 == 1 {
            m = m.modinfo("softdep", "pre: m000");
        }
        for &n in &self.needs {
            m = m
                .needs(&self.export(n, variants[n]))
                .version(&self.export(n, variants[n]), 0x1000 + n as u64);
        }
        let plain = m.build();
        match self.kind {
            Kind::Plain => plain,
            Kind::Xz => synth::xz(&plain),
            Kind::Zstd => synth::zstd(&plain),
        }
    }
}

struct Tree {
    _dir: tempfile::TempDir,
    base: PathBuf,
    /// Where the reference (full, cache-less) runs write.
    full: PathBuf,
    specs: Vec<Option<Spec>>,
}

impl Tree {
    fn new(n: usize, rng: &mut Rng) -> Tree {
        let dir = tempfile::tempdir().expect("tempdir");
        let base = dir.path().join("root");
        let full = dir.path().join("full");
        fs::create_dir_all(base.join("lib/modules").join(KVER)).expect("mkdir");
        let mut t = Tree {
            _dir: dir,
            base,
            full,
            specs: Vec::new(),
        };
        for id in 0..n {
            let spec = t.new_spec(id, rng);
            t.specs.push(Some(spec));
        }
        for id in 0..n {
            t.write(id);
        }
        fs::write(t.moddir().join("modules.builtin"), "kernel/fs/ext4.ko\n").expect("builtin");
        fs::write(
            t.moddir().join("modules.builtin.modinfo"),
            b"ext4.alias=fs-ext4\0ext4.alias=ext3\0",
        )
        .expect("builtin.modinfo");
        t
    }

    fn new_spec(&self, id: usize, rng: &mut Rng) -> Spec {
        let kind = match rng.below(4) {
            0 => Kind::Xz,
            1 => Kind::Zstd,
            _ => Kind::Plain,
        };
        let needs = (0..rng.below(4))
            .filter(|_| id > 0)
            .map(|_| rng.below(id))
            .collect();
        Spec {
            id,
            dir: rng.below(3),
            kind,
            variant: b'a',
            needs,
        }
    }

    fn moddir(&self) -> PathBuf {
        self.base.join("lib/modules").join(KVER)
    }

    fn path(&self, id: usize) -> PathBuf {
        let spec = self.specs[id].as_ref().expect("present");
        self.moddir().join(spec.rel())
    }

    fn variants(&self) -> Vec<u8> {
        self.specs
            .iter()
            .map(|s| s.as_ref().map_or(b'a', |s| s.variant))
            .collect()
    }

    fn image(&self, id: usize) -> Vec<u8> {
        self.specs[id]
            .as_ref()
            .expect("present")
            .image(&self.variants())
    }

    fn write(&self, id: usize) {
        let p = self.path(id);
        fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        fs::write(&p, self.image(id)).expect("write module");
    }

    fn opts(&self) -> DepmodOptions {
        let mut o = DepmodOptions::new(KVER);
        o.basedir = self.base.as_os_str().as_bytes().to_vec();
        o.config_paths = Some(vec![]);
        o
    }

    fn run(&self, o: &DepmodOptions) -> (Summary, Collect, Vec<u8>) {
        let mut sink = Collect::default();
        let mut out = Vec::new();
        let s = depmod::run(o, &mut sink, &mut out, &NoProgress).expect("depmod runs");
        (s, sink, out)
    }

    /// Run with the cache (in place) and without it (into `full`), and compare every output
    /// file and every diagnostic. Returns the cached run's summary.
    fn check(&self, what: &str) -> Summary {
        let (s, sink, _) = self.run(&self.opts());
        let mut o = self.opts();
        o.use_cache = false;
        o.outdir = Some(self.full.as_os_str().as_bytes().to_vec());
        let (full, full_sink, _) = self.run(&o);
        let full_dir = self.full.join("lib/modules").join(KVER);
        for name in OUTPUT_FILES {
            let a = fs::read(self.moddir().join(name)).expect("cached run output");
            let b = fs::read(full_dir.join(name)).expect("full run output");
            assert!(a == b, "{what}: {name} differs from a full run");
        }
        assert_eq!(s.modules, full.modules, "{what}");
        assert_eq!(full.from_cache, 0, "{what}: --no-cache used the cache");
        assert!(
            !full_dir.join(CACHE_FILE).exists(),
            "{what}: --no-cache wrote a cache"
        );
        assert!(
            !full_dir.join(uptodate::RECORD_FILE).exists(),
            "{what}: --no-cache recorded its outputs"
        );
        assert!(
            !full.outputs_up_to_date,
            "{what}: --no-cache trusted a record"
        );
        // Debug-level notes (a cache that could not be written) are not part of the output.
        let msgs = |c: &Collect| -> Vec<String> {
            c.0.iter()
                .filter(|d| d.level != Level::Debug)
                .map(|d| d.message.clone())
                .collect()
        };
        assert_eq!(msgs(&sink), msgs(&full_sink), "{what}: diagnostics");
        s
    }

    fn cache_path(&self) -> PathBuf {
        self.moddir().join(CACHE_FILE)
    }

    fn live(&self) -> Vec<usize> {
        (0..self.specs.len())
            .filter(|&i| self.specs[i].is_some())
            .collect()
    }
}

fn mtime(p: &Path) -> SystemTime {
    fs::metadata(p).and_then(|m| m.modified()).expect("mtime")
}

fn set_mtime(p: &Path, t: SystemTime) {
    File::options()
        .write(true)
        .open(p)
        .and_then(|f| f.set_times(FileTimes::new().set_modified(t)))
        .expect("set mtime");
}

/// Change one byte near the end of `p` in place, its size kept and its mtime put back
/// (its ctime moves: that cannot be set); the bytes it held.
fn rewrite_in_place(p: &Path) -> Vec<u8> {
    let old = fs::read(p).expect("read");
    let when = mtime(p);
    let mut changed = old.clone();
    let last = changed.len() - 2;
    changed[last] ^= 0x01;
    std::thread::sleep(Duration::from_millis(20));
    fs::write(p, &changed).expect("rewrite");
    set_mtime(p, when);
    old
}

/// Wait until every file created so far is old enough to be stored in the cache.
fn settle() {
    std::thread::sleep(cache::SETTLE + Duration::from_millis(150));
}

#[test]
fn random_edits_match_full_runs() {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut t = Tree::new(24, &mut rng);
    let first = t.check("first run");
    assert_eq!(first.from_cache, 0);
    assert!(
        !t.cache_path().exists(),
        "files younger than SETTLE must not be cached"
    );
    settle();
    let s = t.check("after settling");
    assert_eq!(s.from_cache, 0, "there was no cache yet");
    assert!(t.cache_path().exists(), "settled modules are cached");
    let s = t.check("unchanged tree");
    assert_eq!(s.from_cache, t.live().len(), "every module from the cache");
    assert!(
        s.outputs_up_to_date,
        "nothing changed: the outputs are up to date"
    );

    let mut hits = 0;
    let mut up_to_date = 0;
    for round in 0..60 {
        let live = t.live();
        // Only a touch, or a replacement by the same bytes under the same name, leaves
        // every input of the outputs as it was (the others change a module's data, path
        // or presence).
        let mut same_inputs = false;
        let what = match rng.below(7) {
            // Add a module (new id, may be needed by later edits).
            0 => {
                let id = t.specs.len();
                let spec = t.new_spec(id, &mut rng);
                t.specs.push(Some(spec));
                t.write(id);
                format!("round {round}: add m{id:03}")
            }
            // Remove one that nobody needs any more (the others keep resolving).
            1 if live.len() > 4 => {
                let id = live[rng.below(live.len())];
                fs::remove_file(t.path(id)).expect("remove");
                t.specs[id] = None;
                for s in t.specs.iter_mut().flatten() {
                    s.needs.retain(|&n| n != id);
                }
                format!("round {round}: remove m{id:03}")
            }
            // Touch: new mtime, same content.
            2 => {
                let id = live[rng.below(live.len())];
                set_mtime(&t.path(id), SystemTime::now());
                same_inputs = true;
                format!("round {round}: touch m{id:03}")
            }
            // Same size, new content, old mtime restored: only ctime tells.
            3 | 4 => {
                let plain: Vec<usize> = live
                    .iter()
                    .copied()
                    .filter(|&i| t.specs[i].as_ref().is_some_and(|s| s.kind == Kind::Plain))
                    .collect();
                if plain.is_empty() {
                    continue;
                }
                let id = plain[rng.below(plain.len())];
                let p = t.path(id);
                let (old_len, old_mtime, old_ino) = {
                    let m = fs::metadata(&p).expect("stat");
                    (m.len(), mtime(&p), m.ino())
                };
                let spec = t.specs[id].as_mut().expect("present");
                spec.variant = if spec.variant == b'z' {
                    b'a'
                } else {
                    spec.variant + 1
                };
                let image = t.image(id);
                assert_eq!(image.len() as u64, old_len, "variants keep the size");
                // Rewrite in place (same inode), then put the old mtime back.
                fs::write(&p, &image).expect("rewrite");
                set_mtime(&p, old_mtime);
                let m = fs::metadata(&p).expect("stat");
                assert_eq!((m.len(), mtime(&p), m.ino()), (old_len, old_mtime, old_ino));
                // Modules that need it now need the new names.
                let users: Vec<usize> = t
                    .live()
                    .into_iter()
                    .filter(|&u| t.specs[u].as_ref().is_some_and(|s| s.needs.contains(&id)))
                    .collect();
                for u in users {
                    t.write(u);
                }
                format!("round {round}: same-size rewrite of m{id:03}, mtime restored")
            }
            // Rename into another directory (same inode, new path).
            5 => {
                let id = live[rng.below(live.len())];
                let from = t.path(id);
                let spec = t.specs[id].as_mut().expect("present");
                spec.dir = (spec.dir + 1) % 3;
                let to = t.path(id);
                fs::create_dir_all(to.parent().expect("parent")).expect("mkdir");
                fs::rename(&from, &to).expect("rename");
                format!("round {round}: rename m{id:03}")
            }
            // Replace by rename from a new file (new inode), possibly recompressed.
            _ => {
                let id = live[rng.below(live.len())];
                let p = t.path(id);
                let spec = t.specs[id].as_mut().expect("present");
                let old = spec.rel();
                spec.kind = match rng.below(3) {
                    0 => Kind::Xz,
                    1 => Kind::Zstd,
                    _ => Kind::Plain,
                };
                let image = t.image(id);
                let new = t.path(id);
                let tmp = p.with_extension("tmp");
                fs::write(&tmp, image).expect("write");
                if new != p {
                    fs::remove_file(&p).expect("remove old name");
                }
                fs::rename(&tmp, &new).expect("rename into place");
                same_inputs = new == p;
                format!(
                    "round {round}: replace m{id:03} ({old} -> {})",
                    new.display()
                )
            }
        };
        let s = t.check(&what);
        hits += s.from_cache;
        assert_eq!(
            s.outputs_up_to_date, same_inputs,
            "{what}: outputs up to date?"
        );
        up_to_date += usize::from(s.outputs_up_to_date);
    }
    assert!(hits > 0, "the cache was used");
    assert!(up_to_date > 0, "some runs found the outputs up to date");
}

/// Outputs are left as they are only while every one of them is the very file the run
/// that recorded them left, and every input is as it was; anything else, and they are
/// made again (and equal a full run's, diagnostics included).
#[test]
fn outputs_are_left_only_while_they_and_their_inputs_are_unchanged() {
    let mut rng = Rng(5);
    let t = Tree::new(12, &mut rng);
    settle();
    t.check("populate");
    let record = t.moddir().join(uptodate::RECORD_FILE);
    assert!(record.exists(), "the outputs are recorded");
    let s = t.check("unchanged");
    assert!(s.outputs_up_to_date);
    // modules.dep, left in place too, gets its time set to now (`depmod -A` goes by its
    // mtime); nothing is renamed.
    let dep = t.moddir().join("modules.dep");
    let dep_ino = fs::metadata(&dep).expect("stat").ino();
    let long_ago = SystemTime::UNIX_EPOCH + Duration::from_secs(1 << 30);
    set_mtime(&dep, long_ago);
    assert!(t.check("unchanged again").outputs_up_to_date);
    assert_eq!(
        fs::metadata(&dep).expect("stat").ino(),
        dep_ino,
        "modules.dep kept"
    );
    assert!(
        mtime(&dep) > long_ago + Duration::from_secs(1 << 29),
        "its time set to now"
    );
    // ... from what it holds, which must be what the record says it made.
    let dep_bytes = fs::read(&dep).expect("read");
    let mut edited = dep_bytes.clone();
    edited.insert(0, b'#');
    fs::write(&dep, &edited).expect("edit modules.dep");
    assert!(!t.check("modules.dep edited").outputs_up_to_date);
    assert_eq!(fs::read(&dep).expect("read"), dep_bytes, "made again");
    // `-v` prints the edges all the same.
    let mut verbose = t.opts();
    verbose.verbose = 1;
    let (s, _, printed) = t.run(&verbose);
    assert!(s.outputs_up_to_date);
    verbose.use_cache = false;
    verbose.outdir = Some(t.full.as_os_str().as_bytes().to_vec());
    let (s, _, printed_full) = t.run(&verbose);
    assert!(!s.outputs_up_to_date);
    assert!(!printed.is_empty());
    assert_eq!(printed, printed_full, "-v output");

    // An output rewritten in place, same size, its mtime put back.
    let alias = t.moddir().join("modules.alias");
    let old = rewrite_in_place(&alias);
    assert!(!t.check("an output edited").outputs_up_to_date);
    assert_eq!(fs::read(&alias).expect("read"), old, "made again");
    assert!(t.check("recorded again").outputs_up_to_date);

    // An output removed, or replaced by a link to an equal file.
    fs::remove_file(t.moddir().join("modules.symbols.bin")).expect("rm");
    assert!(!t.check("an output removed").outputs_up_to_date);
    let softdep = t.moddir().join("modules.softdep");
    let copy = t.moddir().join("softdep.copy");
    fs::copy(&softdep, &copy).expect("copy");
    fs::remove_file(&softdep).expect("rm");
    std::os::unix::fs::symlink(&copy, &softdep).expect("symlink");
    assert!(!t.check("an output replaced by a link").outputs_up_to_date);
    assert!(t.check("recorded again").outputs_up_to_date);

    // An input of the builtin indexes changed.
    let builtin = t.moddir().join("modules.builtin.modinfo");
    fs::write(&builtin, b"ext4.alias=fs-ext4\0").expect("write");
    assert!(!t.check("builtin.modinfo changed").outputs_up_to_date);
    fs::remove_file(&builtin).expect("rm");
    // Made, with the warning a full run gives, and not recorded: the next run warns again.
    assert!(!t.check("builtin.modinfo missing").outputs_up_to_date);
    assert!(!t.check("builtin.modinfo still missing").outputs_up_to_date);
    fs::write(&builtin, b"ext4.alias=fs-ext4\0").expect("write");
    t.check("builtin.modinfo back");
    assert!(t.check("recorded again").outputs_up_to_date);

    // Another option that shapes the files: the layout, or duplicate warnings.
    let mut o = t.opts();
    o.layout = modcore::index::Layout::PreOrder;
    assert!(!t.run(&o).0.outputs_up_to_date, "another layout");
    assert!(!t.check("the layout back").outputs_up_to_date);
    let mut o = t.opts();
    o.warn_dups = true;
    assert!(!t.run(&o).0.outputs_up_to_date, "duplicate warnings");
    t.check("warnings off again");
    assert!(t.check("recorded again").outputs_up_to_date);

    // A damaged or foreign record is ignored.
    let good = fs::read(&record).expect("record");
    let mut flipped = good.clone();
    flipped[good.len() / 2] ^= 0x10;
    for (what, bytes) in [
        ("a damaged record", flipped),
        ("a truncated record", good[..good.len() - 9].to_vec()),
        ("an empty record", Vec::new()),
    ] {
        fs::write(&record, &bytes).expect("damage");
        assert!(!t.check(what).outputs_up_to_date, "{what}");
        assert_eq!(
            fs::read(&record).expect("record"),
            good,
            "{what}: recorded again"
        );
    }
    assert!(t.check("intact record").outputs_up_to_date);
}

/// The files made from part of the inputs (the alias files from the modules that have
/// aliases, the symbol files from the symbols modules own, each builtin index from its
/// list) are left as they are while that part is unchanged, whatever else changed; every
/// run still equals a full run.
#[test]
fn outputs_made_from_part_of_the_inputs_are_left_while_that_part_is_unchanged() {
    const SYMBOLS: [&str; 2] = ["modules.symbols", "modules.symbols.bin"];
    const BUILTIN: &str = "modules.builtin.bin";
    const BUILTIN_ALIAS: &str = "modules.builtin.alias.bin";
    let mut rng = Rng(11);
    let t = Tree::new(10, &mut rng);
    // As in a real tree, modules.order lists the tree's modules (as `.ko`, compressed or
    // not): those added later come after them in module order, and no owner of a symbol
    // changes its place.
    let order: String = t
        .live()
        .iter()
        .map(|&i| {
            format!(
                "kernel/d{}/m{i:03}.ko\n",
                t.specs[i].as_ref().expect("live").dir
            )
        })
        .collect();
    fs::write(t.moddir().join("modules.order"), order).expect("modules.order");
    settle();
    t.check("populate");
    // (inode, ctime, mtime): a file renamed over it or written in place changes it.
    let key = |name: &str| {
        let m = fs::symlink_metadata(t.moddir().join(name)).expect("stat");
        (
            m.ino(),
            m.ctime(),
            m.ctime_nsec(),
            m.mtime(),
            m.mtime_nsec(),
        )
    };
    let keys = |names: &[&str]| names.iter().map(|n| key(n)).collect::<Vec<_>>();
    let extra_with = |name: &str, exports: &[&str], alias: bool| {
        let mut m = SynthModule::new(name)
            .modinfo("license", "GPL")
            .needs("printk");
        if alias {
            m = m.modinfo("alias", &format!("synth:{name}"));
        }
        for e in exports {
            m = m.export(e);
        }
        let p = t.moddir().join(format!("kernel/{name}.ko"));
        fs::write(&p, m.build()).expect("write module");
        p
    };
    let extra = |name: &str, exports: &[&str]| extra_with(name, exports, true);
    const ALIAS: [&str; 2] = ["modules.alias", "modules.alias.bin"];
    let all = [SYMBOLS[0], SYMBOLS[1], BUILTIN, BUILTIN_ALIAS];
    let before = keys(&all);
    let aliases = keys(&ALIAS);

    // A module without aliases or exports (a library needing others' symbols): only the
    // dependency files are made.
    let lib = extra_with("x_lib", &[], false);
    assert!(!t.check("a module without aliases added").outputs_up_to_date);
    assert_eq!(keys(&all), before, "symbol and builtin files left");
    assert_eq!(keys(&ALIAS), aliases, "alias files left");
    fs::remove_file(&lib).expect("rm");
    t.check("and removed");
    assert_eq!(keys(&ALIAS), aliases, "alias files left again");
    // First in module order, it moves every module with aliases one place down: the
    // alias index (whose values carry those places) is made, modules.alias is left.
    let lib = extra_with("x_lib", &[], false);
    let listed = fs::read_to_string(t.moddir().join("modules.order")).expect("order");
    fs::write(
        t.moddir().join("modules.order"),
        format!("kernel/x_lib.ko\n{listed}"),
    )
    .expect("modules.order");
    t.check("a module without aliases first in module order");
    assert_eq!(key(ALIAS[0]), aliases[0], "modules.alias left");
    assert_ne!(key(ALIAS[1]), aliases[1], "the alias index made");
    fs::write(t.moddir().join("modules.order"), listed).expect("modules.order");
    fs::remove_file(&lib).expect("rm");
    t.check("and gone again");
    let aliases = keys(&ALIAS);
    // (The symbol index carries the places too: it was made both times.)
    let before = keys(&all);

    // A module that owns no symbol: only the files it shows in are made.
    let plain = extra("x_plain", &[]);
    assert!(!t.check("a module without exports added").outputs_up_to_date);
    assert_eq!(
        keys(&all),
        before,
        "symbol and builtin files left as they were"
    );
    assert!(
        keys(&ALIAS).iter().zip(&aliases).all(|(a, b)| a != b),
        "both alias files made"
    );
    fs::remove_file(&plain).expect("rm");
    t.check("and removed");
    assert_eq!(keys(&all), before, "left again");

    // One that exports a symbol nobody owned: the symbol files are made.
    let owner = extra("x_owner", &["x_new_symbol"]);
    t.check("a module with a new export added");
    let symbols = keys(&SYMBOLS);
    assert!(
        symbols.iter().zip(&before).all(|(a, b)| a != b),
        "both symbol files made"
    );
    assert_eq!(keys(&[BUILTIN, BUILTIN_ALIAS]), before[2..], "builtin left");
    t.check("nothing changed");
    assert_eq!(keys(&SYMBOLS), symbols);

    // A builtin list changed: its index is made, the other one and the symbols are left.
    fs::write(
        t.moddir().join("modules.builtin"),
        "kernel/fs/ext4.ko\nkernel/fs/fat.ko\n",
    )
    .expect("builtin");
    t.check("modules.builtin changed");
    assert_ne!(key(BUILTIN), before[2], "builtin index made");
    assert_eq!(key(BUILTIN_ALIAS), before[3], "builtin alias index left");
    assert_eq!(keys(&SYMBOLS), symbols, "symbol files left");

    // A left file rewritten in place (same size, mtime put back) is made again.
    let path = t.moddir().join(SYMBOLS[0]);
    let good = rewrite_in_place(&path);
    let plain = extra("x_plain2", &[]);
    t.check("a left file edited, a module added");
    assert_eq!(fs::read(&path).expect("read"), good, "made again");
    fs::remove_file(&plain).expect("rm");

    // The owner of a symbol removed: the symbol files are made again.
    let symbols = keys(&SYMBOLS);
    fs::remove_file(&owner).expect("rm");
    t.check("the owner of a symbol removed");
    assert!(
        keys(&SYMBOLS).iter().zip(&symbols).all(|(a, b)| a != b),
        "both symbol files made"
    );
    assert!(t.check("recorded again").outputs_up_to_date);
}

/// A module the cache lacks is read afresh by every run until storing it is worth
/// rewriting the whole file: a small plain module waits (the cache file is left as it
/// is), an xz one (decompressed at every read) is stored at once, and so are
/// plain ones once enough of them have gathered. Every run equals a full run.
#[test]
fn the_cache_is_rewritten_when_what_it_lacks_costs_enough() {
    // Big enough that a small module and its directory's listing cost far less to
    // read again than the file costs to write.
    const N: usize = 600;
    let mut rng = Rng(21);
    let t = Tree::new(N, &mut rng);
    settle();
    t.check("populate");
    let cache_key = || {
        let m = fs::metadata(t.cache_path()).expect("cache");
        (m.ino(), m.len())
    };
    let first = cache_key();
    let add = |name: &str, kind: Kind| {
        // Compressed, a kilobyte or two (hex digits of a counter's hash).
        let text: String = (0..512u64)
            .map(|i| format!("{:08x}", i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32))
            .collect();
        let mut m = SynthModule::new(name).modinfo("license", "GPL");
        if kind != Kind::Plain {
            m = m.modinfo("description", &text);
        }
        let plain = m.needs("printk").build();
        let (bytes, ext) = match kind {
            Kind::Plain => (plain, ".ko"),
            Kind::Xz => (synth::xz(&plain), ".ko.xz"),
            Kind::Zstd => (synth::zstd(&plain), ".ko.zst"),
        };
        let p = t.moddir().join(format!("kernel/d0/{name}{ext}"));
        fs::write(&p, &bytes).expect("write module");
        bytes.len() as u64
    };
    // One small plain module: far cheaper to read again than the file is to write
    // (reading one again counts 16 KiB and an eighth of its size, see `depmod`).
    let size = add("y_plain0", Kind::Plain);
    let plain_cost = |n: u64| n * (16 * 1024 + size / 8);
    assert!(
        plain_cost(1) * 4 * 2 < first.1,
        "the test needs a cache much bigger than a module: {} bytes",
        first.1
    );
    settle();
    let s = t.check("one small plain module, settled");
    assert_eq!(cache_key(), first, "the cache file is left as it is");
    assert_eq!(s.from_cache, N, "the new module is read afresh");
    let s = t.check("and again");
    assert_eq!(cache_key(), first);
    assert_eq!(s.from_cache, N);
    // An xz one is stored at once (with the plain one).
    add("y_xz", Kind::Xz);
    settle();
    t.check("a compressed module, settled");
    let second = cache_key();
    assert_ne!(second, first, "the cache is rewritten");
    assert_eq!(t.check("both stored").from_cache, N + 2);
    // Plain modules gather until they are worth it.
    let mut added = 0;
    while cache_key() == second {
        // (Four at a time, in one directory: the test waits for each batch to settle.)
        for _ in 0..4 {
            add(&format!("y_plain{}", added + 1), Kind::Plain);
            added += 1;
        }
        assert!(
            plain_cost(added as u64) <= second.1 / 4 + plain_cost(4),
            "stored late"
        );
        settle();
        let s = t.check("plain modules gathering");
        assert!(s.from_cache >= N + 2);
    }
    assert!(added > 1, "one small module alone is not worth a rewrite");
    assert_eq!(t.check("all stored").from_cache, N + 2 + added as usize);
}

#[test]
fn damaged_or_foreign_caches_are_ignored() {
    let mut rng = Rng(42);
    let t = Tree::new(12, &mut rng);
    settle();
    t.check("populate");
    let good = fs::read(t.cache_path()).expect("cache written");
    assert!(t.check("hits").from_cache == 12);

    let mut version = good.clone();
    // The format version follows the 20-byte magic.
    version[20] ^= 0xFF;
    let mut crate_version = good.clone();
    // The crate version string follows the format (u32) and its length (u32).
    crate_version[28] = b'9';
    let mut flipped = good.clone();
    let mid = flipped.len() / 2;
    flipped[mid] ^= 0x01;
    let bad: Vec<(&str, Vec<u8>)> = vec![
        ("empty", Vec::new()),
        ("truncated", good[..good.len() / 3].to_vec()),
        ("one byte short", good[..good.len() - 1].to_vec()),
        ("one byte more", [good.clone(), vec![0]].concat()),
        ("bit flip", flipped),
        ("other format version", version),
        ("other crate version", crate_version),
        ("garbage", vec![0x5A; 4096]),
    ];
    for (what, bytes) in bad {
        fs::write(t.cache_path(), &bytes).expect("damage the cache");
        let s = t.check(what);
        assert_eq!(s.from_cache, 0, "{what}: a damaged cache must not be used");
        assert_eq!(
            fs::read(t.cache_path()).expect("cache"),
            good,
            "{what}: the next run rewrites a valid cache"
        );
    }
    // A directory where the cache should be: ignored, and the run still succeeds.
    fs::remove_file(t.cache_path()).expect("rm");
    fs::create_dir(t.cache_path()).expect("mkdir");
    let s = t.check("cache path is a directory");
    assert_eq!(s.from_cache, 0);
    fs::remove_dir(t.cache_path()).expect("rmdir");
}

/// The walk starts with the cache's directory listings before the file is checked (see
/// `Cache::load_listings_first`); when the file then fails its checksum, what that walk
/// found and reported is dropped and the tree walked again.
#[test]
fn listings_of_a_cache_that_does_not_check_out_are_not_kept() {
    let mut rng = Rng(11);
    let t = Tree::new(12, &mut rng);
    settle();
    t.check("populate");
    assert!(t.check("listings reused").dirs_from_cache > 0);
    let good = fs::read(t.cache_path()).expect("cache written");
    // In a listing, a module's entry is its kind (0), its name's length and its name:
    // change the name's last byte, so that a walk trusting the listing looks for a file
    // that is not there and misses the module.
    let path = t.path(3);
    let name = path.file_name().expect("file name").as_bytes();
    let mut entry = vec![0u8];
    entry.extend_from_slice(&(name.len() as u32).to_le_bytes());
    entry.extend_from_slice(name);
    let at = good
        .windows(entry.len())
        .position(|w| w == entry.as_slice())
        .expect("the module is in a listing");
    let mut bad = good.clone();
    bad[at + entry.len() - 1] ^= 0x01;
    fs::write(t.cache_path(), &bad).expect("damage a listing");
    let s = t.check("a listing damaged");
    assert_eq!(
        (s.from_cache, s.dirs_from_cache),
        (0, 0),
        "nothing of it kept"
    );
    assert_eq!(
        fs::read(t.cache_path()).expect("cache"),
        good,
        "the next run rewrites a valid cache"
    );
}

#[test]
fn cache_is_replaced_atomically_and_only_by_writing_runs() {
    let mut rng = Rng(7);
    let mut t = Tree::new(10, &mut rng);
    settle();
    // -n reads nothing it must not and writes nothing.
    let mut dry = t.opts();
    dry.dry_run = true;
    let (_, _, shown) = t.run(&dry);
    assert!(!shown.is_empty());
    assert!(!t.cache_path().exists(), "-n must not write the cache");
    // Explicit files: no cache either.
    let mut explicit = t.opts();
    explicit.files = vec![t.path(0).as_os_str().as_bytes().to_vec()];
    t.run(&explicit);
    assert!(
        !t.cache_path().exists(),
        "explicit-file runs must not write the cache"
    );

    t.check("populate");
    let before = fs::read(t.cache_path()).expect("cache");
    let ino = fs::metadata(t.cache_path()).expect("stat").ino();
    // A reader holding the old file keeps seeing it whole.
    let old = File::open(t.cache_path()).expect("open old cache");

    // -n with a cache: same output as without one, cache untouched.
    let (s, _, with_cache) = t.run(&dry);
    assert_eq!(s.from_cache, 10, "-n may read the cache");
    let mut nocache = dry.clone();
    nocache.use_cache = false;
    let (_, _, without) = t.run(&nocache);
    assert_eq!(
        with_cache, without,
        "-n output does not depend on the cache"
    );
    assert_eq!(fs::metadata(t.cache_path()).expect("stat").ino(), ino);

    // A settled new module makes the next run rewrite the cache: by rename.
    let id = t.specs.len();
    let spec = t.new_spec(id, &mut rng);
    t.specs.push(Some(spec));
    t.write(id);
    t.check("new module (not settled yet)");
    assert_eq!(
        fs::metadata(t.cache_path()).expect("stat").ino(),
        ino,
        "nothing new to store: the cache is left alone"
    );
    settle();
    t.check("new module settled");
    let now = fs::metadata(t.cache_path()).expect("stat");
    assert_ne!(now.ino(), ino, "the cache is replaced by a new file");
    assert_ne!(fs::read(t.cache_path()).expect("cache"), before);
    let mut held = Vec::new();
    std::io::Read::read_to_end(&mut &old, &mut held).expect("read old");
    assert_eq!(held, before, "the old file was never modified in place");
    // No temporary files are left behind.
    let leftovers: Vec<String> = fs::read_dir(t.moddir())
        .expect("readdir")
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(CACHE_FILE) && n != CACHE_FILE)
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
    assert_eq!(t.check("all cached").from_cache, t.live().len());
}

/// A module file that is a symbolic link is keyed by the file it points to: when only the
/// target changes (the link itself stays as it was), the module is read again.
#[test]
fn a_changed_symlink_target_is_read_again() {
    let dir = tempfile::tempdir().expect("tempdir");
    let md = dir.path().join("lib/modules").join(KVER);
    fs::create_dir_all(md.join("kernel")).expect("mkdir");
    let store = dir.path().join("store");
    fs::create_dir_all(&store).expect("mkdir");
    let target = store.join("real.ko");
    let module = |sym: &str| {
        synth::named("linked")
            .export(sym)
            .modinfo("alias", sym)
            .build()
    };
    fs::write(&target, module("first_symbol")).expect("write");
    std::os::unix::fs::symlink(&target, md.join("kernel/linked.ko")).expect("symlink");
    fs::write(
        md.join("kernel/user.ko"),
        synth::named("user").needs("second_symbol").build(),
    )
    .expect("write");
    settle();
    let mut o = DepmodOptions::new(KVER);
    o.basedir = dir.path().as_os_str().as_bytes().to_vec();
    o.config_paths = Some(vec![dir.path().join("no-conf")]);
    let run = |o: &DepmodOptions| {
        let mut sink = Collect::default();
        let s = depmod::run(o, &mut sink, &mut Vec::new(), &NoProgress).expect("depmod");
        (s, fs::read(md.join("modules.dep")).expect("dep"))
    };
    let (s, dep) = run(&o);
    assert_eq!(s.from_cache, 0);
    assert_eq!(dep, b"kernel/linked.ko:\nkernel/user.ko:\n");
    let (s, _) = run(&o);
    assert_eq!(s.from_cache, 2, "both modules are cached");

    // Only the target changes: rewritten in place, with its old mtime put back.
    let link_before = fs::symlink_metadata(md.join("kernel/linked.ko")).expect("lstat");
    let old = mtime(&target);
    fs::write(&target, module("second_symbol")).expect("rewrite");
    set_mtime(&target, old);
    let link_after = fs::symlink_metadata(md.join("kernel/linked.ko")).expect("lstat");
    assert_eq!(link_before.ino(), link_after.ino());
    assert_eq!(link_before.mtime(), link_after.mtime());
    let (s, dep) = run(&o);
    assert_eq!(s.from_cache, 1, "the linked module is read again");
    assert_eq!(
        dep, b"kernel/linked.ko:\nkernel/user.ko: kernel/linked.ko\n",
        "user now depends on the new export"
    );
    let mut full = o.clone();
    full.use_cache = false;
    let (_, fresh) = run(&full);
    assert_eq!(dep, fresh);
}

/// Directory edits (new, removed and renamed subtrees; a linked directory whose target
/// gains a module or is swapped for another; a directory touched without a change), each
/// followed by a run straight away and, every third one, by a run once everything has
/// settled (so that the changed directories' listings are stored and reused): every run
/// writes exactly what a full run writes.
#[test]
fn directory_edits_match_full_runs() {
    let mut rng = Rng(0xD1AE_C7ED);
    let t = Tree::new(10, &mut rng);
    let md = t.moddir();
    let put = |rel: &str, name: &str| {
        let p = md.join(rel).join(format!("{name}.ko"));
        fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        let image = synth::named(name)
            .export(&format!("{name}_fn"))
            .modinfo("alias", &format!("synth:{name}"))
            .build();
        fs::write(&p, image).expect("write");
    };
    for k in 0..4 {
        put(&format!("kernel/n{k}/a/b"), &format!("x{k}"));
    }
    let store = t._dir.path().join("store");
    let store2 = t._dir.path().join("store2");
    for (dir, name) in [(&store, "y0"), (&store2, "y1")] {
        fs::create_dir_all(dir).expect("mkdir");
        fs::write(
            dir.join(format!("{name}.ko")),
            synth::named(name).export(&format!("{name}_fn")).build(),
        )
        .expect("write");
    }
    std::os::unix::fs::symlink(&store, md.join("kernel/link")).expect("symlink");
    settle();
    t.check("primed");
    let s = t.check("unchanged");
    assert_eq!(s.from_cache, s.modules, "every module from the cache");
    assert!(
        s.dirs_from_cache >= 8,
        "listings reused: {}",
        s.dirs_from_cache
    );

    for round in 0..12 {
        let what = match round % 6 {
            0 => {
                put(
                    &format!("kernel/n{}/c{round}", round % 4),
                    &format!("z{round}"),
                );
                format!("round {round}: new subdirectory")
            }
            1 => {
                let gone = md.join(format!("kernel/n{}/a", round % 4));
                if gone.exists() {
                    fs::remove_dir_all(&gone).expect("rm -r");
                }
                format!("round {round}: subtree removed")
            }
            2 => {
                let from = md.join(format!("kernel/n{}", round % 4));
                if from.exists() {
                    fs::rename(&from, md.join(format!("kernel/r{round}"))).expect("rename");
                }
                format!("round {round}: directory renamed")
            }
            3 => {
                fs::write(
                    store.join(format!("w{round}.ko")),
                    synth::named(&format!("w{round}")).build(),
                )
                .expect("write");
                format!("round {round}: the linked directory gains a module")
            }
            4 => {
                let link = md.join("kernel/link");
                fs::remove_file(&link).expect("unlink");
                let to = if round % 12 == 4 { &store2 } else { &store };
                std::os::unix::fs::symlink(to, &link).expect("symlink");
                format!("round {round}: the link points elsewhere")
            }
            _ => {
                let d = md.join("kernel/d0");
                fs::create_dir_all(&d).expect("mkdir");
                File::open(&d)
                    .and_then(|f| f.set_times(FileTimes::new().set_modified(SystemTime::now())))
                    .expect("touch dir");
                format!("round {round}: directory touched")
            }
        };
        t.check(&what);
        if round % 3 == 2 {
            settle();
            t.check(&format!("{what}, settled"));
            let s = t.check(&format!("{what}, settled, again"));
            assert_eq!(
                s.from_cache, s.modules,
                "{what}: every module from the cache"
            );
            assert!(s.dirs_from_cache > 0, "{what}: listings reused");
        }
    }
}

/// A stored listing keeps excluded entries: when the configuration stops excluding a
/// directory, the next run (which reuses the parent's listing) walks it.
#[test]
fn a_listing_survives_a_change_of_excludes() {
    let mut rng = Rng(5);
    let t = Tree::new(4, &mut rng);
    let md = t.moddir();
    let hidden = md.join("kernel/hidden");
    fs::create_dir_all(&hidden).expect("mkdir");
    fs::write(
        hidden.join("h.ko"),
        synth::named("h").export("h_fn").build(),
    )
    .expect("write");
    let conf = t._dir.path().join("depmod.d");
    fs::create_dir_all(&conf).expect("mkdir");
    fs::write(conf.join("x.conf"), "exclude hidden\n").expect("conf");
    let run = |use_cache: bool| {
        let mut o = t.opts();
        o.config_paths = Some(vec![conf.clone()]);
        o.use_cache = use_cache;
        let (s, _, _) = t.run(&o);
        (s, fs::read(md.join("modules.dep")).expect("dep"))
    };
    settle();
    let (_, dep) = run(true);
    assert!(!String::from_utf8_lossy(&dep).contains("hidden"));
    let (s, _) = run(true);
    assert!(s.dirs_from_cache > 0, "the listing of kernel/ is reused");
    fs::write(conf.join("x.conf"), "# nothing excluded\n").expect("conf");
    let (s, dep) = run(true);
    assert!(s.dirs_from_cache > 0, "still reused");
    assert!(
        String::from_utf8_lossy(&dep).contains("kernel/hidden/h.ko:"),
        "no longer excluded"
    );
    let (_, full) = run(false);
    assert_eq!(dep, full);
}
