//! depmod: find modules, read them in parallel, resolve symbols, write every index.
//!
//! Spec: depmod-and-index.md. This module does the I/O of a depmod run (walk, reading
//! module files, writing outputs); the pieces it calls (`config::parse`, `graph`,
//! `output`) are pure.

pub mod cache;
pub mod config;
pub mod graph;
pub mod kernelsyms;
pub mod output;
pub mod read;
pub mod uptodate;
pub mod view;
pub mod walk;

use crate::diag::{show, Collect, Level, Sink};
use crate::fsio;
use crate::index::Layout;
use crate::module::ModuleData;
use cache::{Body, Cache, FileKey};
use graph::{DepGraph, Event, OrderFile, ResolveOptions};
use output::{ModuleOutputs, OutModule, Outputs};
use rayon::prelude::*;
use std::ffi::OsStr;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use view::ModView;
use walk::{Candidate, Walker};

/// Everything a depmod run needs, from the command line.
#[derive(Debug, Clone)]
pub struct DepmodOptions {
    /// `-b`: root prefix ("" for none). Already absolute.
    pub basedir: Vec<u8>,
    /// `-m`: module directory, default `/lib/modules`.
    pub moduledir: Vec<u8>,
    /// `-o`: output root (defaults to basedir).
    pub outdir: Option<Vec<u8>>,
    /// Kernel release.
    pub kver: String,
    /// Explicit module files (empty: scan the whole tree).
    pub files: Vec<Vec<u8>>,
    /// `-a` given: scan everything even when files are listed.
    pub all: bool,
    /// `-A`
    pub quick: bool,
    /// `-C` paths; None means the default directories.
    pub config_paths: Option<Vec<PathBuf>>,
    /// `-E`
    pub symvers: Option<PathBuf>,
    /// `-F`
    pub filesyms: Option<PathBuf>,
    /// `-e`
    pub errsyms: bool,
    /// `-n`
    pub dry_run: bool,
    /// `-P`
    pub prefix: Option<u8>,
    /// `-v` count
    pub verbose: u8,
    /// `-w`
    pub warn_dups: bool,
    /// Index node layout (kmod 30: post-order).
    pub layout: Layout,
    /// Use the incremental cache `modules.depmod.cache` (see [`cache`]); `--no-cache`
    /// turns it off.
    pub use_cache: bool,
}

impl DepmodOptions {
    pub fn new(kver: impl Into<String>) -> Self {
        DepmodOptions {
            basedir: Vec::new(),
            moduledir: b"/lib/modules".to_vec(),
            outdir: None,
            kver: kver.into(),
            files: Vec::new(),
            all: false,
            quick: false,
            config_paths: None,
            symvers: None,
            filesyms: None,
            errsyms: false,
            dry_run: false,
            prefix: None,
            verbose: 0,
            warn_dups: false,
            layout: Layout::PostOrder,
            use_cache: true,
        }
    }

    /// MODDIR: basedir + moduledir + "/" + kver, concatenated as kmod does.
    pub fn moddir(&self) -> Vec<u8> {
        let mut d = self.basedir.clone();
        d.extend_from_slice(&self.moduledir);
        d.push(b'/');
        d.extend_from_slice(self.kver.as_bytes());
        d
    }

    /// Where outputs go.
    pub fn outputdir(&self) -> Vec<u8> {
        match &self.outdir {
            None => self.moddir(),
            Some(o) => {
                let mut d = o.clone();
                d.extend_from_slice(&self.moduledir);
                d.push(b'/');
                d.extend_from_slice(self.kver.as_bytes());
                d
            }
        }
    }
}

/// Why a depmod run failed. The tool prints these as FATAL/ERROR and exits 1.
#[derive(Debug, thiserror::Error)]
pub enum DepmodError {
    #[error("could not search modules: {0}")]
    Search(String),
    #[error("{0}: not absolute path.")]
    NotAbsolute(String),
    #[error("could not create module {path}: File exists")]
    DuplicateFile { path: String },
    #[error("could not load {path}: {err}")]
    KernelSymbols { path: String, err: String },
    #[error("Found {0} modules in dependency cycles!")]
    Cycles(usize),
    #[error("could not create directory {path}: {err}")]
    OutDir { path: String, err: String },
    #[error("{0}")]
    Write(#[from] fsio::WriteError),
    #[error("could not build index {name}: {err}")]
    Index { name: String, err: String },
    #[error("could not write to standard output: {0}")]
    Stdout(std::io::Error),
}

impl DepmodError {
    /// The level kmod prints this error at.
    pub fn level(&self) -> Level {
        match self {
            DepmodError::Cycles(_) | DepmodError::Write(_) | DepmodError::Index { .. } => {
                Level::Error
            }
            _ => Level::Fatal,
        }
    }
}

/// Progress reporting for the scan (the tool may draw a bar; modcore never prints).
pub trait Progress: Sync {
    fn start(&self, _total: u64) {}
    fn tick(&self) {}
    fn finish(&self) {}
}

/// No progress reporting.
pub struct NoProgress;
impl Progress for NoProgress {}

/// Names of the files depmod writes, in write order (spec §9.1 plus modules.weakdep).
pub const OUTPUT_FILES: &[&str] = &[
    "modules.dep",
    "modules.dep.bin",
    "modules.alias",
    "modules.alias.bin",
    "modules.softdep",
    "modules.weakdep",
    "modules.symbols",
    "modules.symbols.bin",
    "modules.builtin.bin",
    "modules.builtin.alias.bin",
    "modules.devname",
];

/// The output whose making the cache writer waits for (it keeps the alias index's order).
const HEAVY_OUTPUT: &str = "modules.alias.bin";

/// The two outputs that take longest to make, each the first job of one of the two tasks
/// that make the files (see `run`).
const HEAVY_OUTPUTS: [&str; 2] = [HEAVY_OUTPUT, "modules.symbols.bin"];

/// The outputs made while the dependency graph is worked out (they need none).
const EARLY_OUTPUTS: [&str; 2] = [HEAVY_OUTPUT, "modules.alias"];

/// What a successful run did.
#[derive(Debug, Default)]
pub struct Summary {
    /// True when `-A` found nothing newer and nothing was done.
    pub up_to_date: bool,
    pub modules: usize,
    /// Modules that could not be read (reported as errors, still listed in modules.dep).
    pub unreadable: usize,
    /// Modules taken from the incremental cache instead of being read.
    pub from_cache: usize,
    /// Directories whose listing was taken from the incremental cache instead of read.
    pub dirs_from_cache: usize,
    /// Every output but modules.dep was found up to date (see [`uptodate`]) and left as
    /// it was, not made again.
    pub outputs_up_to_date: bool,
    /// When each step of the run ended, counted from its start (for `DEPMOD_TIMINGS`).
    pub phases: Vec<(&'static str, std::time::Duration)>,
}

/// Marks the end of each step of a run.
struct Phases {
    start: std::time::Instant,
    marks: Vec<(&'static str, std::time::Duration)>,
}

impl Phases {
    fn new() -> Phases {
        Phases {
            start: std::time::Instant::now(),
            marks: Vec::new(),
        }
    }
    fn mark(&mut self, name: &'static str) {
        self.marks.push((name, self.start.elapsed()));
    }
}

fn bytes_path(b: &[u8]) -> &Path {
    Path::new(OsStr::from_bytes(b))
}

/// Run depmod.
pub fn run(
    opts: &DepmodOptions,
    sink: &mut dyn Sink,
    stdout: &mut dyn Write,
    progress: &dyn Progress,
) -> Result<Summary, DepmodError> {
    let run_start = std::time::SystemTime::now();
    let mut phases = Phases::new();
    let moddir = opts.moddir();
    let explicit = !opts.files.is_empty() && !opts.all;

    if opts.quick {
        if opts.dry_run {
            return Ok(Summary {
                up_to_date: true,
                ..Summary::default()
            });
        }
        if quick_up_to_date(&moddir, sink) {
            return Ok(Summary {
                up_to_date: true,
                ..Summary::default()
            });
        }
    }

    // Kernel symbols (-E wins over -F).
    let kernel_symbols = if let Some(p) = &opts.symvers {
        Some(kernelsyms::load_symvers(p, opts.prefix, sink)?)
    } else if let Some(p) = &opts.filesyms {
        Some(kernelsyms::load_system_map(p, opts.prefix, sink)?)
    } else {
        None
    };

    // The incremental cache (see `cache`): tree scans only; `-n` reads it but never
    // writes it. Its directory listings are taken at once, for the walk; the rest of the
    // file is read and checked on another thread meanwhile, and waited for after the
    // walk (which is done again without the listings if the file does not check out).
    let use_cache = opts.use_cache && !explicit;
    let loading = use_cache
        .then(|| Cache::load_listings_first(bytes_path(&opts.outputdir())).ok())
        .flatten();

    let mut cache: Option<Cache> = None;
    let mut listings: Vec<walk::DirListing> = Vec::new();
    let mut dirs_from_cache = 0;
    // Find modules.
    let cands: Arc<Vec<Candidate>> = Arc::new(if explicit {
        let mut out: Vec<Candidate> = Vec::new();
        for f in &opts.files {
            if f.first() != Some(&b'/') {
                return Err(DepmodError::NotAbsolute(show(f).into_owned()));
            }
            let c = Candidate::new(f.clone());
            if let Some(old) = out.iter().find(|o| o.modname == c.modname) {
                sink.emit(
                    Level::Error,
                    format!(
                        "kmod_module '{}' already exists with different path: new-path='{}' old-path='{}'",
                        show(&c.modname),
                        show(&c.path),
                        show(&old.path)
                    ),
                );
                return Err(DepmodError::DuplicateFile {
                    path: show(&c.path).into_owned(),
                });
            }
            out.push(c);
        }
        out
    } else {
        let paths: Vec<PathBuf> = match &opts.config_paths {
            Some(p) => p.clone(),
            None => config::DEFAULT_DIRS.iter().map(PathBuf::from).collect(),
        };
        let cfg = config::load(&paths, &opts.kver, sink);
        phases.mark("configuration and cache loaded");
        let walk = |prior: Option<&Cache>, sink: &mut dyn Sink| {
            let mut w = Walker::new(&moddir, &cfg);
            w.stat_files(use_cache);
            if let Some(c) = prior {
                w.reuse_listings(c);
            }
            w.walk_all(sink)
                .map_err(|e| DepmodError::Search(crate::errno_text(&e)))?;
            let listings = w.take_listings();
            Ok::<_, DepmodError>((w.into_modules(), listings))
        };
        // What the walk reports is kept until the listings it used are known to be good.
        let mut said = Collect::default();
        let mut walked = walk(loading.as_ref().map(|l| l.listings()), &mut said);
        match loading.map(cache::Loading::finish) {
            Some(Ok(c)) => cache = Some(c),
            Some(Err(_)) => {
                cache = Some(Cache::empty());
                let used =
                    |w: &(Vec<Candidate>, Vec<walk::DirListing>)| w.1.iter().any(|l| l.reused);
                if walked.as_ref().is_ok_and(used) {
                    said = Collect::default();
                    walked = walk(None, &mut said);
                }
            }
            None => {}
        }
        said.replay(sink);
        let (found, walked) = walked?;
        listings = walked;
        dirs_from_cache = listings.iter().filter(|l| l.reused).count();
        found
    });

    phases.mark("walk");
    // Module order.
    let names: Vec<&[u8]> = cands.iter().map(|c| c.modname.as_slice()).collect();
    let stems: Vec<Option<&[u8]>> = cands.iter().map(|c| c.stem_path(&moddir)).collect();
    let order_path = {
        let mut p = moddir.clone();
        p.extend_from_slice(b"/modules.order");
        p
    };
    let order_data = std::fs::read(bytes_path(&order_path));
    let order = match &order_data {
        Ok(data) => graph::parse_order(data),
        Err(e) => {
            sink.emit(
                Level::Warning,
                format!(
                    "could not open modules.order at {}: {}",
                    show(&moddir),
                    crate::errno_text(e)
                ),
            );
            OrderFile::Missing
        }
    };
    if let OrderFile::Corrupt { lineno } = order {
        sink.emit(
            Level::Error,
            format!(
                "{}:{} corrupted line misses '\\n'",
                show(&order_path),
                lineno
            ),
        );
    }
    let ordered: Vec<usize> = graph::module_order(&names, &stems, &order);

    // Read every module, in parallel; results come back in module order. With the cache,
    // a module whose file is unchanged (same stat key) is taken from it instead.
    let cache = cache.unwrap_or_else(Cache::empty);
    let cached_entries = cache.len() + cache.dir_count();
    let cache_bytes = cache.file_len();
    phases.mark("module order");
    progress.start(ordered.len() as u64);
    let results = Arc::new(read_all(
        &ordered,
        &cands,
        use_cache.then_some(&cache),
        progress,
    ));
    rayon::broadcast(|_| read::release_buffers());
    let from_cache = results.iter().filter(|g| g.hit).count();
    progress.finish();
    let alias_hint = alias_hint(&cache, &results);
    drop(cache);
    phases.mark("modules read");
    let mut unreadable = 0;
    let empty = ModuleData::default();
    let datas: Vec<ModView<'_>> = results
        .iter()
        .zip(&ordered)
        .map(|(r, &i)| match &r.res {
            Ok(d) => d.view(),
            Err(e) => {
                unreadable += 1;
                sink.emit(
                    Level::Error,
                    format!("failed to load symbols from {}: {e}", show(&cands[i].path)),
                );
                ModView::Data(&empty)
            }
        })
        .collect();

    // The two input files of the builtin indexes, read once (for the fingerprint too).
    let read_builtin = |name: &str| std::fs::read(bytes_path(&moddir).join(name));
    let builtin = read_builtin("modules.builtin");
    let builtin_modinfo = read_builtin("modules.builtin.modinfo");
    let outdir = opts.outputdir();
    let outdir_path = bytes_path(&outdir).to_path_buf();
    // Outputs known to be up to date (see `uptodate`): every input of the files the same
    // as when the files in place were made, and those very files still there. Only a
    // writing run with the cache, no kernel symbol list and every module read counts.
    // Then modules.dep is made as it is (its recorded hash checked; left in place, its
    // time set to now), and unless `-v` wants the edges printed, not even the dependency
    // graph is worked out.
    let out_paths: Vec<&[u8]> = ordered
        .iter()
        .map(|&i| cands[i].relpath(&moddir).unwrap_or(&cands[i].path))
        .collect();
    let base = (use_cache
        && !opts.dry_run
        && opts.symvers.is_none()
        && opts.filesyms.is_none()
        && unreadable == 0)
        .then(|| options_fingerprint(opts))
        .flatten();
    let fingerprint = base.as_ref().and_then(|base| {
        let names = ordered.iter().map(|&i| cands[i].modname.as_slice());
        let mods = names.zip(out_paths.iter().copied());
        fingerprint_of(base, mods, &results, &builtin, &builtin_modinfo)
    });
    let recorded: Vec<&str> = OUTPUT_FILES
        .iter()
        .copied()
        .filter(|n| *n != "modules.dep")
        .collect();
    let record = fingerprint.and_then(|_| uptodate::load(&outdir_path));
    let dep_as_it_is: Option<Vec<u8>> = fingerprint.and_then(|f| {
        let record = record.as_ref()?;
        if !record.holds(f, &outdir_path, &recorded) {
            return None;
        }
        let dep = std::fs::read(outdir_path.join("modules.dep")).ok()?;
        (cache::checksum(&dep) == record.dep_hash).then_some(dep)
    });
    let up_to_date = dep_as_it_is.is_some();

    // Symbols and edges.
    let ropts = ResolveOptions {
        prefix: opts.prefix,
        check_crcs: opts.symvers.is_some() && kernel_symbols.is_some(),
        edges: opts.verbose > 0,
        errsyms: opts.errsyms && kernel_symbols.is_some(),
        kernel_symbols,
    };
    let mods: Vec<OutModule<'_>> = ordered
        .iter()
        .zip(&datas)
        .zip(&out_paths)
        .map(|((&i, d), path)| OutModule {
            modname: &cands[i].modname,
            path,
            data: *d,
        })
        .collect();
    // What the files made from the modules alone need (no dependency graph).
    let listing =
        ModuleOutputs::new(&mods, opts.layout, opts.warn_dups).with_alias_hint(alias_hint);

    // What each output is made from (see `uptodate`): the whole fingerprint, or for the
    // files made from part of the inputs, that part (its sums worked out by the first
    // task that asks, not on this thread; the symbol files' part needs `graph`). Nothing
    // without a fingerprint.
    let alias_digests = std::sync::OnceLock::new();
    let symbols_digests = std::sync::OnceLock::new();
    let inputs_with = |name: &str, graph: Option<&DepGraph<'_>>| -> Option<u64> {
        let (f, base) = (fingerprint?, base.as_ref()?);
        let alias = |k: usize| -> [u8; 8] {
            let sums =
                alias_digests.get_or_init(|| listing.alias_digests(|m| results[m as usize].hash));
            sums[k].to_le_bytes()
        };
        let symbols = |k: usize| -> Option<[u8; 8]> {
            let g = graph?;
            let sums = symbols_digests.get_or_init(|| {
                g.owned_symbols_digests(|o| cands[ordered[o as usize]].modname.as_slice())
            });
            Some(sums[k].to_le_bytes())
        };
        let part: &[u8] = match Part::of(name) {
            Some(Part::AliasText) => &alias(0),
            Some(Part::AliasIndex) => &alias(1),
            Some(Part::Builtin) => builtin.as_deref().ok()?,
            Some(Part::BuiltinModinfo) => builtin_modinfo.as_deref().ok()?,
            Some(Part::SymbolsText) => &symbols(0)?,
            Some(Part::SymbolsIndex) => &symbols(1)?,
            None => return Some(f),
        };
        let mut p = base.clone();
        p.bytes(name.as_bytes());
        p.bytes(part);
        Some(p.finish())
    };

    // Produce the files concurrently; diagnostics are replayed in file order, just before
    // each file is written, so stderr reads exactly as if they were made one by one.
    let read_input = |name: &str, sink: &mut dyn Sink| -> Option<&[u8]> {
        let read = match name {
            "modules.builtin" => &builtin,
            _ => &builtin_modinfo,
        };
        match read {
            Ok(d) => Some(d.as_slice()),
            Err(e) => {
                sink.emit(
                    Level::Warning,
                    format!(
                        "could not open {name} at {}: {}",
                        show(&moddir),
                        crate::errno_text(e)
                    ),
                );
                None
            }
        }
    };
    let ixerr = |name: &str, e: crate::index::WriteError| DepmodError::Index {
        name: name.to_string(),
        err: e.to_string(),
    };
    // The alias index's order, from its maker to the cache writer.
    let (alias_tx, alias_rx) = std::sync::mpsc::channel::<Option<Vec<(u32, u32)>>>();
    let alias_tx = std::sync::Mutex::new(Some(alias_tx));
    // The alias index was left in place (its order is sent after the files are made).
    let alias_kept = std::sync::atomic::AtomicBool::new(false);
    // The bytes of a file made from the modules alone (`None`: not such a file).
    let produce_listed =
        |name: &str, sink: &mut dyn Sink| -> Option<Result<Vec<u8>, DepmodError>> {
            Some(match name {
                "modules.alias" => Ok(listing.modules_alias()),
                "modules.alias.bin" => {
                    let made = listing.modules_alias_bin(sink).map_err(|e| ixerr(name, e));
                    // The cache writer keeps the index's order (it waits for it).
                    if let Some(tx) = alias_tx.lock().ok().and_then(|mut t| t.take()) {
                        let _ = tx.send(listing.alias_file_order());
                    }
                    made
                }
                "modules.softdep" => Ok(listing.modules_softdep()),
                "modules.weakdep" => Ok(listing.modules_weakdep()),
                "modules.devname" => Ok(listing.modules_devname(sink)),
                _ => return None,
            })
        };

    // Each file is written under a temporary name as soon as it is made, by the task
    // that made it, and its writeback started (the writes go on while the rest is made),
    // then synced at once on a thread of its own. Meanwhile this thread renames the files
    // into place one by one in the fixed order, each as soon as it and every file before
    // it are synced, each file's diagnostics replayed just before: a failure stops the
    // sequence where a one-by-one run would have stopped (files prepared beyond it are
    // removed). The files replaced
    // are freed by a thread of their own (see `fsio::Prepared::commit_holding`), so a
    // rename is short and the freeing overlaps with the making of the files after it.
    let suffix = fsio::temp_suffix();
    let creation = fsio::Creation::in_dir(&outdir_path);
    // The hash of the modules.dep made, for the record (only when one may be written).
    let recording = fingerprint.is_some() && !up_to_date;
    let dep_hash = std::sync::OnceLock::new();
    // An output left as it is, if it can be (the symbol files need `graph` to tell).
    let kept_as_is = |name: &'static str, graph: Option<&DepGraph<'_>>| -> Option<Made> {
        if up_to_date && name != "modules.dep" {
            // Left as it is (and so is the record that says so).
            return Some(Made {
                job: Ok(Ok(Output::Kept(None))),
                diags: Collect::default(),
            });
        }
        // Made from part of the inputs, that part unchanged, the file as it was made.
        if Part::of(name).is_some() {
            let kept = record.as_ref().zip(inputs_with(name, graph));
            if let Some(key) = kept.and_then(|(r, i)| r.kept(&outdir_path, name, i)) {
                if name == HEAVY_OUTPUT {
                    // The cache writer keeps the order of the index left in place: worked
                    // out once the files are written, and only if the writer wants it.
                    alias_kept.store(true, std::sync::atomic::Ordering::Relaxed);
                }
                return Some(Made {
                    job: Ok(Ok(Output::Kept(Some(key)))),
                    diags: Collect::default(),
                });
            }
        }
        None
    };
    // A file made: written under its temporary name, or found in place already.
    let finish = |name: &'static str, p: Produced| -> Made {
        if let (true, true, Ok(data)) = (recording, name == "modules.dep", &p.data) {
            let _ = dep_hash.set(cache::checksum(data));
        }
        let job = p.data.map(|data| {
            let dir = &outdir_path;
            // (modules.dep's time must move all the same, `depmod -A` compares the
            // modules' times with it: left in place, it gets its times set to now.)
            let unchanged = |new: &fsio::Creation| {
                let path = dir.join(name);
                match (data.len() <= UNCHANGED_CHECK_MAX, name == "modules.dep") {
                    (false, _) => None,
                    (true, false) => fsio::holds_exactly(&path, &data, new),
                    (true, true) => fsio::holds_exactly_touched(&path, &data, new),
                }
            };
            if let Some(meta) = creation.as_ref().and_then(unchanged) {
                return Ok(Output::Kept(Some(FileKey::of(&meta))));
            }
            fsio::prepare_started(dir, name, &suffix, &data).map(Output::New)
        });
        Made {
            job,
            diags: p.diags,
        }
    };
    // The alias files need no graph, and the alias index is the biggest job of all (on
    // the 6.12 tree 4 to 5 ms of a run that adds a module): both are made on the pool
    // while this thread works the graph out (which leaves a core idle much of the time)
    // and the other files are made. Not for a dry run, nor before an output directory
    // of `-o` exists (it is made where the files are written, once the graph is known to
    // be good), nor on a thread of a pool: this thread waits for the files without taking
    // part in the pool's work, and the job might wait in its own queue.
    let make_early = !up_to_date
        && !opts.dry_run
        && rayon::current_thread_index().is_none()
        && (opts.outdir.is_none() || outdir_path.is_dir());
    let early = || -> Vec<(usize, Made)> {
        EARLY_OUTPUTS
            .iter()
            .filter_map(|&name| {
                let at = OUTPUT_FILES.iter().position(|n| *n == name)?;
                let made = kept_as_is(name, None).unwrap_or_else(|| {
                    let mut diags = Collect::default();
                    let data = produce_listed(name, &mut diags).unwrap_or(Ok(Vec::new()));
                    finish(name, Produced { data, diags })
                });
                Some((at, made))
            })
            .collect()
    };

    // Each file made is sent here with its place in `OUTPUT_FILES`, and taken from here
    // in that order to be renamed into place (see below). A file is made once, by the
    // first task that takes it.
    let (made_tx, made_rx) = std::sync::mpsc::channel::<(usize, Made)>();
    let taken: Vec<std::sync::atomic::AtomicBool> = OUTPUT_FILES
        .iter()
        .map(|_| std::sync::atomic::AtomicBool::new(false))
        .collect();
    // The rest of the run is in a scope, where the alias files are made while the graph
    // is worked out; the scope waits for them even when the run ends early (their
    // temporary files are then removed).
    let (summary, dep_lines) = rayon::in_place_scope(|scope| {
        if make_early {
            for name in EARLY_OUTPUTS {
                if let Some(at) = OUTPUT_FILES.iter().position(|n| *n == name) {
                    taken[at].store(true, std::sync::atomic::Ordering::Relaxed);
                }
            }
            let tx = made_tx.clone();
            scope.spawn(move |_| {
                for made in early() {
                    let _ = tx.send(made);
                }
            });
        }
        // (Not worked out when the outputs are up to date and no edge is to be printed.)
        let built = (!up_to_date || opts.verbose > 0).then(|| {
            let mut events = Vec::new();
            let g = DepGraph::build(&datas, &ropts, &mut events);
            (g, events)
        });
        let graph = match built {
            None => None,
            Some((g, events)) => {
                let paths: Vec<&[u8]> = ordered.iter().map(|&i| cands[i].path.as_slice()).collect();
                for ev in &events {
                    match ev {
                        Event::Edge {
                            user,
                            symbol,
                            owner,
                        } => {
                            if opts.verbose > 0 {
                                writeln!(
                                    stdout,
                                    "{} needs \"{}\": {}",
                                    show(paths[*user as usize]),
                                    show(symbol),
                                    show(paths[*owner as usize])
                                )
                                .map_err(DepmodError::Stdout)?;
                            }
                        }
                        Event::Unknown { module, symbol } => sink.emit(
                            Level::Warning,
                            format!(
                                "{} needs unknown symbol {}",
                                show(paths[*module as usize]),
                                show(symbol)
                            ),
                        ),
                        Event::BadCrc { module, symbol } => sink.emit(
                            Level::Warning,
                            format!(
                                "{} disagrees about version of symbol {}",
                                show(paths[*module as usize]),
                                show(symbol)
                            ),
                        ),
                    }
                }
                phases.mark("symbols resolved");
                let topo = match g.topo() {
                    Ok(t) => t,
                    Err(stalled) => {
                        let (cycles, count) = g.cycles(&stalled);
                        for c in cycles {
                            let names: Vec<String> = c
                                .iter()
                                .map(|&m| show(&cands[ordered[m as usize]].modname).into_owned())
                                .collect();
                            sink.emit(
                                Level::Error,
                                format!("Cycle detected: {}", names.join(" -> ")),
                            );
                        }
                        return Err(DepmodError::Cycles(count));
                    }
                };
                Some((g, topo))
            }
        };

        let out = graph
            .as_ref()
            .map(|(g, topo)| Outputs::on(&listing, g, topo));
        let dep_lines = out.as_ref().map(Outputs::dep_lines);
        phases.mark("dependencies sorted");
        let inputs_of = |name: &str| inputs_with(name, graph.as_ref().map(|(g, _)| g));

        let produce = |name: &str| -> Produced {
            let mut diags = Collect::default();
            let (Some(out), Some(dep_lines)) = (out.as_ref(), dep_lines.as_ref()) else {
                // Up to date, no graph: only modules.dep is made, as it was.
                return Produced {
                    data: Ok(dep_as_it_is.clone().unwrap_or_default()),
                    diags,
                };
            };
            let data = match produce_listed(name, &mut diags) {
                Some(data) => data,
                None => match name {
                    "modules.dep" => Ok(ModuleOutputs::modules_dep(dep_lines)),
                    "modules.dep.bin" => out.modules_dep_bin(dep_lines).map_err(|e| ixerr(name, e)),
                    "modules.symbols" => Ok(out.modules_symbols()),
                    "modules.symbols.bin" => out.modules_symbols_bin().map_err(|e| ixerr(name, e)),
                    "modules.builtin.bin" => read_input("modules.builtin", &mut diags)
                        .map(|d| output::builtin_bin(d, opts.layout, &mut diags))
                        .transpose()
                        .map_err(|e| ixerr(name, e))
                        .map(Option::unwrap_or_default),
                    "modules.builtin.alias.bin" => {
                        read_input("modules.builtin.modinfo", &mut diags)
                            .map(|d| output::builtin_alias_bin(d, opts.layout, &mut diags))
                            .transpose()
                            .map_err(|e| ixerr(name, e))
                            .map(Option::unwrap_or_default)
                    }
                    _ => Ok(Vec::new()),
                },
            };
            Produced { data, diags }
        };

        if opts.dry_run {
            const SHOWN: [&str; 5] = [
                "modules.dep",
                "modules.alias",
                "modules.softdep",
                "modules.symbols",
                "modules.devname",
            ];
            let parts: Vec<Produced> = SHOWN.par_iter().map(|n| produce(n)).collect();
            let mut all = Vec::new();
            for p in parts {
                p.diags.replay(sink);
                all.extend(p.data?);
            }
            stdout.write_all(&all).map_err(DepmodError::Stdout)?;
            stdout.flush().map_err(DepmodError::Stdout)?;
            return Ok((
                Summary {
                    up_to_date: false,
                    outputs_up_to_date: false,
                    modules: mods.len(),
                    unreadable,
                    from_cache,
                    dirs_from_cache,
                    phases: phases.marks,
                },
                None,
            ));
        }

        if opts.outdir.is_some() {
            std::fs::create_dir_all(&outdir_path).map_err(|e| DepmodError::OutDir {
                path: outdir_path.display().to_string(),
                err: crate::errno_text(&e),
            })?;
        }
        // The new cache is written (not yet renamed into place) while the outputs are made.
        let cache_job = use_cache.then(|| {
            let (dir, ordered) = (outdir_path.clone(), ordered.clone());
            let (cands, results) = (Arc::clone(&cands), Arc::clone(&results));
            let listings = std::mem::take(&mut listings);
            std::thread::spawn(move || {
                let prior = Prior {
                    cached_entries,
                    cache_bytes,
                    run_start,
                    aliases: alias_rx,
                    no_alias_index: up_to_date,
                };
                prepare_cache(&dir, &ordered, &cands, &results, &listings, prior)
            })
        });
        let make = |name: &'static str| -> Made {
            let graph = graph.as_ref().map(|(g, _)| g);
            kept_as_is(name, graph).unwrap_or_else(|| finish(name, produce(name)))
        };
        let mut freeing = Freeing::default();
        // No output had anything to say (else the record is not kept: the next run must say
        // it again). The stat key of each file this run made or found holding its bytes.
        let mut quiet = true;
        let mut keys: Vec<Option<FileKey>> = vec![None; OUTPUT_FILES.len()];
        // Something was renamed into the output directory (which is then synced).
        let mut renamed = false;
        // The alias index and the symbol index are the biggest jobs (about 40% and 15% of the
        // work on a real tree): each is the first job of one of two tasks, which then take
        // the other files one after the other, in the order they are renamed (and this
        // thread renames them). Each file is made once, by the task that takes it first.
        // (Either index may be left as it is, or made already with the graph: the other is
        // then still made from the start.) A broadcast, not a `rayon::join`: the second half
        // of a join waits for a worker to steal it, and a sleeping worker was seen to wake
        // milliseconds late.
        let task = |first: &str, tx: std::sync::mpsc::Sender<(usize, Made)>| {
            let take = |i: usize| {
                if !taken[i].swap(true, std::sync::atomic::Ordering::Relaxed) {
                    let _ = tx.send((i, make(OUTPUT_FILES[i])));
                }
            };
            OUTPUT_FILES
                .iter()
                .position(|n| *n == first)
                .into_iter()
                .chain(0..OUTPUT_FILES.len())
                .for_each(take)
        };
        let written = std::thread::scope(|s| {
            let (tx, rx) = (made_tx, made_rx);
            // Every worker of the pool runs a task, worker i the one that starts with heavy
            // file i mod 2 (a broadcast wakes each worker for its own job; with one worker,
            // its task makes every file). On the pool, not threads of their own: the
            // workers' heaps hold what the read left free (a new thread's heap would add
            // some 8 MiB to a full run's peak). If the thread cannot be started, this one
            // makes the files first.
            let broadcast = move || {
                rayon::broadcast(|ctx| {
                    task(HEAVY_OUTPUTS[ctx.index() % HEAVY_OUTPUTS.len()], tx.clone())
                });
            };
            let making = match std::thread::Builder::new().spawn_scoped(s, broadcast.clone()) {
                Ok(h) => Some(h),
                Err(_) => {
                    broadcast();
                    None
                }
            };
            drop(broadcast);
            // A file written is synced at once, on a thread of its own (fsyncs issued
            // together overlap their waits for the disk), and comes back here synced, to
            // be renamed in its turn.
            let (synced_tx, synced_rx) = std::sync::mpsc::channel::<(usize, Made)>();
            let mut slots: Vec<Slot> = OUTPUT_FILES.iter().map(|_| Slot::Empty).collect();
            let arrived = |k: usize, mut m: Made, slots: &mut Vec<Slot>| {
                let Ok(Ok(Output::New(_))) = &m.job else {
                    slots[k] = Slot::Ready(m);
                    return;
                };
                let tx = synced_tx.clone();
                let sync = move |mut m: Made| {
                    if let Ok(Ok(Output::New(p))) = &mut m.job {
                        if let Err(e) = p.sync() {
                            m.job = Ok(Err(e));
                        }
                    }
                    m
                };
                let (tx_m, rx_m) = std::sync::mpsc::sync_channel::<Made>(1);
                let spawned = std::thread::Builder::new().spawn_scoped(s, move || {
                    if let Ok(m) = rx_m.recv() {
                        let _ = tx.send((k, sync(m)));
                    }
                });
                match spawned {
                    Ok(_) => {
                        // (The thread only receives once it has started.)
                        let _ = tx_m.send(m);
                        slots[k] = Slot::Syncing;
                    }
                    Err(_) => {
                        m = sync(m);
                        slots[k] = Slot::Ready(m);
                    }
                }
            };
            let mut written = Ok(());
            for (i, name) in OUTPUT_FILES.iter().enumerate() {
                loop {
                    match slots[i] {
                        Slot::Ready(_) => break,
                        Slot::Empty => match rx.recv() {
                            Ok((k, m)) => arrived(k, m, &mut slots),
                            Err(_) => break,
                        },
                        Slot::Syncing => {
                            // Files made meanwhile start their syncs first.
                            while let Ok((k, m)) = rx.try_recv() {
                                arrived(k, m, &mut slots);
                            }
                            if let Ok((k, m)) = synced_rx.recv() {
                                slots[k] = Slot::Ready(m);
                            }
                        }
                    }
                }
                let Slot::Ready(m) = std::mem::replace(&mut slots[i], Slot::Empty) else {
                    written = written.and(Err(DepmodError::Write(fsio::WriteError::Write {
                        path: outdir_path.join(name),
                        source: std::io::Error::other("output was not made"),
                    })));
                    continue;
                };
                if written.is_err() {
                    // Its temporary file is removed.
                    drop(m.job);
                    continue;
                }
                quiet &= m.diags.0.is_empty();
                m.diags.replay(sink);
                written = m.job.and_then(|job| {
                    keys[i] = match job? {
                        Output::New(prepared) => {
                            let (replaced, meta) = prepared.commit_holding_stat()?;
                            renamed = true;
                            freeing.drop_later(replaced);
                            meta.map(|m| FileKey::of(&m))
                        }
                        Output::Kept(key) => key,
                    };
                    Ok(())
                });
            }
            if let Some(m) = making {
                let _ = m.join();
            }
            written
        });
        phases.mark("outputs written");
        // The order of an alias index left in place, for a cache writer still at work: one
        // that has finished either writes no file or did not wait for the order (working it
        // out takes about 0.5 ms on the 6.12 tree, and a run that only adds a module seldom
        // rewrites the cache). Made or not, the index then has nothing more to tell it.
        if let Some(tx) = alias_tx.lock().ok().and_then(|mut t| t.take()) {
            let listening = cache_job.as_ref().is_some_and(|j| !j.is_finished());
            if listening && alias_kept.load(std::sync::atomic::Ordering::Relaxed) {
                let _ = tx.send(listing.kept_alias_order());
            }
        }
        // Only once every output is in place does the new cache replace the old one (the
        // writer is always waited for, so no temporary file outlives the run). A failure only
        // costs speed next time: reported at debug level, the run succeeds.
        let cache_done = cache_job.map(|job| {
            job.join().unwrap_or_else(|_| {
                Some(Err(fsio::WriteError::Write {
                    path: outdir_path.join(cache::CACHE_FILE),
                    source: std::io::Error::other("cache writer failed"),
                }))
            })
        });
        written?;
        // The outputs just made, and what they were made from, for the next run.
        // (The keys are those of the files this run put or found in place, not of whatever
        // has their names now: a concurrent run may have renamed its own files over them.)
        if let (Some(fingerprint), true, true) = (fingerprint, recording, quiet) {
            let files: Option<Vec<(String, u64, FileKey)>> = OUTPUT_FILES
                .iter()
                .zip(&keys)
                .filter(|(n, _)| recorded.contains(n))
                .map(|(&n, k)| Some((n.to_string(), inputs_of(n)?, (*k)?)))
                .collect();
            let stored = match files {
                Some(files) => {
                    let record = uptodate::Record {
                        fingerprint,
                        dep_hash: dep_hash.get().copied().unwrap_or_default(),
                        files,
                    };
                    renamed = true;
                    uptodate::store(&outdir_path, &record).map_err(|e| e.to_string())
                }
                None => Err("an output file could not be stat'ed".into()),
            };
            if let Err(e) = stored {
                sink.emit(Level::Debug, format!("could not record the outputs: {e}"));
            }
        }
        if let Some(Some(res)) = cache_done {
            renamed = true;
            match res.and_then(fsio::Prepared::commit_holding) {
                Ok(replaced) => freeing.drop_later(replaced),
                Err(e) => sink.emit(
                    Level::Debug,
                    format!("could not write the depmod cache: {e}"),
                ),
            }
        }
        // The renames made durable (a run that renamed nothing, every output left in place,
        // has nothing to sync: modules.dep's new times need not outlive a crash, which at
        // worst makes a later `depmod -A` run again).
        if renamed {
            let _ = fsio::sync_dir(&outdir_path);
        }
        freeing.wait();
        phases.mark("cache written");
        let summary = Summary {
            outputs_up_to_date: up_to_date,
            up_to_date: false,
            modules: mods.len(),
            unreadable,
            from_cache,
            dirs_from_cache,
            phases: phases.marks,
        };
        Ok((summary, dep_lines))
    })?;
    // Freeing a million small allocations takes a while; nothing waits for it.
    defer_drop((results, dep_lines, cands));
    Ok(summary)
}

/// The part of the inputs an output made from only part of them (see [`uptodate`]) is
/// made from; such a file is left as it is when that part is what it was.
#[derive(Clone, Copy)]
enum Part {
    /// The modules with aliases (name, data hash), in module order.
    AliasText,
    /// The same, with their places in module order.
    AliasIndex,
    /// modules.builtin.
    Builtin,
    /// modules.builtin.modinfo.
    BuiltinModinfo,
    /// The symbols modules own (name, owner's name).
    SymbolsText,
    /// The same, with the owners' places in module order.
    SymbolsIndex,
}

impl Part {
    /// The part output `name` is made from; `None`: all of the inputs.
    fn of(name: &str) -> Option<Part> {
        Some(match name {
            "modules.alias" => Part::AliasText,
            "modules.alias.bin" => Part::AliasIndex,
            "modules.builtin.bin" => Part::Builtin,
            "modules.builtin.alias.bin" => Part::BuiltinModinfo,
            "modules.symbols" => Part::SymbolsText,
            "modules.symbols.bin" => Part::SymbolsIndex,
            _ => return None,
        })
    }
}

/// The start of every sum of the outputs' inputs (see [`uptodate`]): the program and the
/// options that shape the files. `None` when there is no executable to stat.
fn options_fingerprint(opts: &DepmodOptions) -> Option<uptodate::Fingerprint> {
    let exe = std::fs::metadata("/proc/self/exe").ok()?;
    let mut f = uptodate::Fingerprint::default();
    f.key(&FileKey::of(&exe));
    f.bytes(format!("{:?}", opts.layout).as_bytes());
    f.u64(u64::from(opts.warn_dups));
    f.u64(opts.prefix.map_or(u64::MAX, u64::from));
    Some(f)
}

/// The fingerprint of the outputs' inputs (see [`uptodate`]): `base` (from
/// [`options_fingerprint`]), the builtin lists, and every module (name, path as written,
/// data hash) in module order. `None` when a builtin list could not be read.
fn fingerprint_of<'m>(
    base: &uptodate::Fingerprint,
    mods: impl ExactSizeIterator<Item = (&'m [u8], &'m [u8])>,
    results: &[Got],
    builtin: &std::io::Result<Vec<u8>>,
    builtin_modinfo: &std::io::Result<Vec<u8>>,
) -> Option<u64> {
    let mut f = base.clone();
    f.bytes(builtin.as_ref().ok()?);
    f.bytes(builtin_modinfo.as_ref().ok()?);
    f.u64(mods.len() as u64);
    for ((name, path), g) in mods.zip(results) {
        f.bytes(name);
        f.bytes(path);
        f.u64(g.hash);
    }
    Some(f.finish())
}

/// One output file: written under its temporary name, its writeback started (or why it
/// could not be made or written), and what its producer reported.
struct Made {
    job: Result<Written, DepmodError>,
    diags: Collect,
}

/// Where a file to be committed is: not made yet, being synced, or ready for its rename.
enum Slot {
    Empty,
    Syncing,
    Ready(Made),
}

/// A file written under its temporary name (synced before its commit, see
/// [`fsio::prepare_started`]), or left as it is (see [`Output`]).
type Written = Result<Output, fsio::WriteError>;

/// What becomes of one output file.
enum Output {
    /// Written under its temporary name, to be renamed into place.
    New(fsio::Prepared),
    /// Left in place: it holds exactly the new bytes (its stat key as found, see
    /// [`UNCHANGED_CHECK_MAX`]), or the outputs are up to date (no key: not looked at).
    Kept(Option<FileKey>),
}

/// Outputs up to this size that already hold exactly their new bytes are left as they
/// are (not rewritten, synced and renamed): the check costs an `fstat` when the size
/// differs and a read up to the first difference when it does not, far less than writing,
/// syncing and renaming the file (and freeing the one it replaces). An incremental run
/// often leaves whole files as they were (modules.symbols and its index when no export
/// changed hands, the alias files when no alias did). modules.dep left in place has its
/// times set to now: `depmod -A` compares its modification time with the modules'.
const UNCHANGED_CHECK_MAX: usize = 64 << 20;

/// Files replaced by this run, held open by the rename (see
/// `fsio::Prepared::commit_holding`) and closed one after the other on one thread, which
/// frees the files' blocks there (started with the first file).
#[derive(Default)]
struct Freeing(
    Option<(
        std::sync::mpsc::Sender<std::fs::File>,
        std::thread::JoinHandle<()>,
    )>,
);

impl Freeing {
    fn drop_later(&mut self, old: Option<std::fs::File>) {
        let Some(old) = old else { return };
        if self.0.is_none() {
            let (tx, rx) = std::sync::mpsc::channel::<std::fs::File>();
            // If no thread can be started, the file is closed here (and the next ones
            // try again).
            let Ok(h) = std::thread::Builder::new()
                .name("depmod-free".into())
                .spawn(move || rx.into_iter().for_each(drop))
            else {
                return;
            };
            self.0 = Some((tx, h));
        }
        if let Some((tx, _)) = &self.0 {
            // Were the thread gone, the file comes back in the error and is closed here.
            let _ = tx.send(old);
        }
    }

    /// Wait until every replaced file is freed (a run leaves nothing behind).
    fn wait(self) {
        if let Some((tx, h)) = self.0 {
            drop(tx);
            let _ = h.join();
        }
    }
}

/// Drop `v` on a background thread (inline if no thread can be started). A process that
/// exits right away (the depmod tool) does not pay for the frees at all.
fn defer_drop<T: Send + 'static>(v: T) {
    // If the thread cannot be started, the closure (and `v` with it) is dropped here.
    let _ = std::thread::Builder::new()
        .name("depmod-free".into())
        .spawn(move || drop(v));
}

/// A module's data: read from its file, or found in the cache.
enum Data {
    Read(ModuleData),
    Cached(Body),
}

impl Data {
    fn view(&self) -> ModView<'_> {
        match self {
            Data::Read(d) => ModView::Data(d),
            Data::Cached(b) => ModView::Cached(b),
        }
    }
}

/// One module's data (or read error), the stat key of the file it came from, and whether
/// it came from the cache.
struct Got {
    res: Result<Data, String>,
    key: Option<FileKey>,
    hit: bool,
    /// The data's `cache::data_hash` (0 on a run without the cache).
    hash: u64,
}

/// Read every module (`ordered` indexes `cands`); the results are in that order.
///
/// First every module is stat'ed, in parallel: with a cache, unchanged modules (same stat
/// key) are taken from it. The others are then read in parallel, largest file first, so
/// that the few huge modules neither finish last on one thread nor sit in memory
/// together with everything read before them.
fn read_all(
    ordered: &[usize],
    cands: &[Candidate],
    cache: Option<&Cache>,
    progress: &dyn Progress,
) -> Vec<Got> {
    let lookup = cache.filter(|c| !c.is_empty());
    // One slot per module, filled in place: a module not taken from the cache holds, until
    // it is read, the size it was found with (its place in the reading order).
    let pending = |size: u64| Got {
        res: Err(String::new()),
        key: Some(FileKey {
            size,
            ..FileKey::default()
        }),
        hit: false,
        hash: 0,
    };
    let mut slots: Vec<Got> = ordered
        .par_iter()
        .map(|&i| {
            let path = &cands[i].path;
            // The walk may have taken the stat key already.
            let key = match cands[i].key {
                Some(k) => k,
                // Without a cache the size only orders the reads: plain files (cheap to
                // read) need no stat for that and simply go last.
                None if lookup.is_none() && path.ends_with(b".ko") => return pending(0),
                None => match std::fs::metadata(bytes_path(path)) {
                    Ok(meta) => FileKey::of(&meta),
                    Err(_) => return pending(0),
                },
            };
            if let Some(d) = lookup.and_then(|cache| cache.get(path, &key)) {
                progress.tick();
                return Got {
                    hash: d.data_hash(),
                    res: Ok(Data::Cached(d)),
                    key: Some(key),
                    hit: true,
                };
            }
            pending(key.size)
        })
        .collect();
    let mut todo: Vec<(usize, u64)> = slots
        .iter()
        .enumerate()
        .filter(|(_, g)| !g.hit)
        .map(|(k, g)| (k, g.key.map_or(0, |key| key.size)))
        .collect();
    todo.sort_by_key(|&(_, size)| std::cmp::Reverse(size));
    let read: Vec<(usize, Got)> = todo
        .into_iter()
        .par_bridge()
        .map(|(k, _)| {
            let (mut res, meta) = read::read_module_stat(cands[ordered[k]].path());
            if let Ok(d) = &mut res {
                // Only these entries reach an output; the rest would only be carried
                // around (and stored in the cache: a third of its size otherwise).
                d.modinfo
                    .retain(|(k, _)| output::MODINFO_KEYS.contains(&k.as_slice()));
            }
            progress.tick();
            let (key, hash) = match (cache.is_some(), &res) {
                (true, Ok(d)) => (meta.map(|m| FileKey::of(&m)), cache::data_hash(d)),
                (true, Err(_)) => (meta.map(|m| FileKey::of(&m)), 0),
                (false, _) => (None, 0),
            };
            (
                k,
                Got {
                    res: res.map(Data::Read),
                    key,
                    hit: false,
                    hash,
                },
            )
        })
        .collect();
    for (k, g) in read {
        slots[k] = g;
    }
    slots
}

/// The order of the alias index for the modules taken from `cache` (see
/// [`output::AliasHint`]), from the cache's aliases section; `results` are in module
/// order. `None` when no module came from the cache.
fn alias_hint(cache: &Cache, results: &[Got]) -> Option<output::AliasHint> {
    let order = cache.alias_order();
    let entries = order
        .iter()
        .map(|&(e, _)| e as usize + 1)
        .max()
        .unwrap_or(0);
    // The place in module order of each cache entry taken.
    let mut place = vec![u32::MAX; entries];
    let mut covered = vec![false; results.len()];
    for (k, got) in results.iter().enumerate() {
        if let (true, Ok(Data::Cached(body))) = (got.hit, &got.res) {
            covered[k] = true;
            if let Some(p) = place.get_mut(body.ordinal() as usize) {
                *p = k as u32;
            }
        }
    }
    if !covered.contains(&true) {
        return None;
    }
    let sorted = order
        .iter()
        .filter_map(|&(e, a)| {
            let p = place.get(e as usize).copied().filter(|&p| p != u32::MAX)?;
            Some((p, a))
        })
        .collect();
    Some(output::AliasHint { sorted, covered })
}

/// What the cache writer needs to know about the run: how many records (modules and
/// directories) the old cache held, and when the run started (the settle rule).
struct Prior {
    cached_entries: usize,
    /// The size of the old cache file (0: none).
    cache_bytes: u64,
    run_start: std::time::SystemTime,
    /// The order of this run's alias index (see `Outputs::alias_file_order`), once it is
    /// made; nothing if it is not.
    aliases: std::sync::mpsc::Receiver<Option<Vec<(u32, u32)>>>,
    /// The alias index is not made (the outputs are up to date): the writer works the
    /// order out itself.
    no_alias_index: bool,
}

/// The new cache with this run's modules (settled, readable ones only) and directory
/// listings (settled ones), written under a temporary name for the caller to rename into
/// place; `None` when a new file is not worth writing: at most a quarter of the old
/// cache's records are for modules or directories that are gone or changed, and what
/// the old cache lacks costs less to read again than a quarter of the old file to write
/// (see [`read_again_cost`]). Stale records are never used (their key cannot match
/// again), so the old file stays valid and only carries some dead weight until the next
/// rewrite; a module it lacks is read afresh by every run until then. Rewriting the
/// whole file for one new module costs a big tree (a 5.8 MB cache on the 6.12 tree) more
/// than reading that module again in many runs: plain modules are stored once many of
/// them have gathered, an xz one (whose reading is mostly decompression) at once.
fn prepare_cache(
    dir: &Path,
    ordered: &[usize],
    cands: &[Candidate],
    results: &[Got],
    listings: &[walk::DirListing],
    prior: Prior,
) -> Option<Result<fsio::Prepared, fsio::WriteError>> {
    // Each stored module with its place in module order.
    let entries: Vec<(cache::Entry<'_>, bool, usize)> = ordered
        .iter()
        .zip(results)
        .enumerate()
        .filter_map(|(at, (&i, g))| match (&g.res, g.key) {
            (Ok(data), Some(key)) if key.settled(prior.run_start) => Some((
                cache::Entry {
                    path: &cands[i].path,
                    key,
                    data: data.view(),
                },
                g.hit,
                at,
            )),
            _ => None,
        })
        .collect();
    let dirs: Vec<(cache::DirRecord<'_>, bool)> = listings
        .iter()
        .filter(|l| l.key.settled(prior.run_start))
        .map(|l| {
            let rec = cache::DirRecord {
                path: &l.path,
                key: l.key,
                listing: &l.listing,
            };
            (rec, l.reused)
        })
        .collect();
    let hits = entries.iter().filter(|(_, hit, _)| *hit).count()
        + dirs.iter().filter(|(_, reused)| *reused).count();
    let stale = prior.cached_entries.saturating_sub(hits);
    let missing: u64 = entries
        .iter()
        .filter(|(_, hit, _)| !hit)
        .map(|(e, _, _)| read_again_cost(e.path, e.key.size))
        .chain(
            dirs.iter()
                .filter(|(_, reused)| !reused)
                .map(|_| DIR_READ_COST),
        )
        .sum();
    let worth = stale * 4 > prior.cached_entries
        || (missing > 0 && missing.saturating_mul(4) >= prior.cache_bytes);
    if !worth {
        return None;
    }
    // The alias index's order, its modules numbered as the stored entries: waited for
    // only once everything else of the file is written.
    let no_alias_index = prior.no_alias_index;
    let mut entry_of = vec![u32::MAX; results.len()];
    for (n, (_, _, at)) in entries.iter().enumerate() {
        entry_of[*at] = n as u32;
    }
    let later = cache::Aliases::Later(Box::new(move || {
        let order = prior.aliases.recv().ok().flatten()?;
        let stored = order.into_iter().filter_map(|(m, a)| {
            let e = entry_of
                .get(m as usize)
                .copied()
                .filter(|&e| e != u32::MAX)?;
            Some((e, a))
        });
        Some(stored.collect())
    }));
    let aliases = if no_alias_index {
        cache::Aliases::Unknown
    } else {
        later
    };
    let hashes: Vec<u64> = entries.iter().map(|&(_, _, at)| results[at].hash).collect();
    let entries: Vec<cache::Entry<'_>> = entries.into_iter().map(|(e, _, _)| e).collect();
    let dirs: Vec<cache::DirRecord<'_>> = dirs.into_iter().map(|(d, _)| d).collect();
    // Not synced: a cache left incomplete by a crash fails its checksum and is rebuilt.
    Some(fsio::prepare_checked_with(
        dir,
        cache::CACHE_FILE,
        &fsio::temp_suffix(),
        |w| cache::write_to(w, &entries, &dirs, aliases, Some(&hashes)),
    ))
}

/// What reading a module again costs, in bytes of cache file written (see
/// `prepare_cache`; writing the 5.8 MB cache of the 6.12 tree takes about 6 ms of one
/// core, and freeing the file it replaces some 3 ms more). A plain module is mapped and
/// only its symbol and `.modinfo` sections are read: an eighth of its size, plus what
/// opening and parsing any file costs (16 KiB; on the 6.12 tree a 1 MB module costs
/// about 0.1 ms to read again, as much as writing some 100 KB of cache). A compressed one
/// costs more by how slowly its bytes decompress (about four times as many come out):
/// xz 64 times its size, gzip 16, zstd 8.
fn read_again_cost(path: &[u8], size: u64) -> u64 {
    if path.ends_with(b".ko") {
        return PLAIN_READ_COST.saturating_add(size / 8);
    }
    let factor = if path.ends_with(b".xz") {
        64
    } else if path.ends_with(b".gz") {
        16
    } else {
        8
    };
    size.saturating_mul(factor)
}

/// What listing a directory again costs, in the same unit.
const DIR_READ_COST: u64 = 4096;

/// What opening and parsing a plain module costs, beyond its bytes, in the same unit.
const PLAIN_READ_COST: u64 = 16 << 10;

/// One output file's bytes (or why it could not be made) and what its producer reported.
struct Produced {
    data: Result<Vec<u8>, DepmodError>,
    diags: Collect,
}

/// Read and parse one module file; the error text is kmod's strerror plus our cause.
pub fn read_module(path: &Path) -> Result<ModuleData, String> {
    read::read_module(path)
}

/// `-A`: true when no module file is newer (in whole seconds) than modules.dep.
fn quick_up_to_date(moddir: &[u8], sink: &mut dyn Sink) -> bool {
    use std::os::unix::fs::MetadataExt;
    let mut dep = moddir.to_vec();
    dep.extend_from_slice(b"/modules.dep");
    let dep_mtime = match std::fs::metadata(bytes_path(&dep)) {
        Ok(m) => m.mtime(),
        Err(e) => {
            sink.emit(
                Level::Error,
                format!(
                    "could not fstatat({}, modules.dep): {}",
                    show(moddir),
                    crate::errno_text(&e)
                ),
            );
            return false;
        }
    };
    let mut stack = vec![bytes_path(moddir).to_path_buf()];
    let mut seen = 0usize;
    while let Some(dir) = stack.pop() {
        seen += 1;
        if seen > 1_000_000 {
            return false;
        }
        let Ok(rd) = std::fs::read_dir(&dir) else {
            continue;
        };
        for ent in rd.flatten() {
            let name = ent.file_name();
            let nb = name.as_bytes();
            if nb == b"build" || nb == b"source" {
                continue;
            }
            let p = dir.join(&name);
            let Ok(m) = std::fs::metadata(&p) else {
                continue;
            };
            if m.is_dir() {
                stack.push(p);
            } else if m.is_file() && walk::is_module_name(nb) && m.mtime() > dep_mtime {
                return false;
            }
        }
    }
    true
}

#[cfg(test)]
mod tests;
