//! depmod: find modules, read them in parallel, resolve symbols, write every index.
//!
//! Spec: depmod-and-index.md. This module does the I/O of a depmod run (walk, reading
//! module files, writing outputs); the pieces it calls (`config::parse`, `graph`,
//! `output`) are pure.

pub mod config;
pub mod graph;
pub mod kernelsyms;
pub mod output;
pub mod walk;

use crate::diag::{show, Level, Sink};
use crate::fsio;
use crate::index::Layout;
use crate::module::ModuleData;
use graph::{DepGraph, Event, OrderFile, ResolveOptions};
use output::{OutModule, Outputs};
use rayon::prelude::*;
use std::ffi::OsStr;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
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

/// What a successful run did.
#[derive(Debug, Default)]
pub struct Summary {
    /// True when `-A` found nothing newer and nothing was done.
    pub up_to_date: bool,
    pub modules: usize,
    /// Modules that could not be read (reported as errors, still listed in modules.dep).
    pub unreadable: usize,
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

    // Find modules.
    let cands: Vec<Candidate> = if explicit {
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
        let mut w = Walker::new(&moddir, &cfg);
        w.walk_all(sink)
            .map_err(|e| DepmodError::Search(crate::errno_text(&e)))?;
        w.into_modules()
    };

    // Module order.
    let names: Vec<&[u8]> = cands.iter().map(|c| c.modname.as_slice()).collect();
    let stems: Vec<Option<&[u8]>> = cands.iter().map(|c| c.stem_path(&moddir)).collect();
    let order_path = {
        let mut p = moddir.clone();
        p.extend_from_slice(b"/modules.order");
        p
    };
    let order = match std::fs::read(bytes_path(&order_path)) {
        Ok(data) => graph::parse_order(&data),
        Err(e) => {
            sink.emit(
                Level::Warning,
                format!(
                    "could not open modules.order at {}: {}",
                    show(&moddir),
                    crate::errno_text(&e)
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

    // Read every module, in parallel; results come back in module order.
    progress.start(ordered.len() as u64);
    let results: Vec<Result<ModuleData, String>> = ordered
        .par_iter()
        .map(|&i| {
            let r = read_module(cands[i].path());
            progress.tick();
            r
        })
        .collect();
    progress.finish();
    let mut unreadable = 0;
    let empty = ModuleData::default();
    let datas: Vec<&ModuleData> = results
        .iter()
        .zip(&ordered)
        .map(|(r, &i)| match r {
            Ok(d) => d,
            Err(e) => {
                unreadable += 1;
                sink.emit(
                    Level::Error,
                    format!("failed to load symbols from {}: {e}", show(&cands[i].path)),
                );
                &empty
            }
        })
        .collect();

    // Symbols and edges.
    let ropts = ResolveOptions {
        prefix: opts.prefix,
        check_crcs: opts.symvers.is_some() && kernel_symbols.is_some(),
        errsyms: opts.errsyms && kernel_symbols.is_some(),
        kernel_symbols,
    };
    let mut events = Vec::new();
    let g = DepGraph::build(&datas, &ropts, &mut events);
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

    let mods: Vec<OutModule<'_>> = ordered
        .iter()
        .zip(&datas)
        .map(|(&i, d)| OutModule {
            modname: &cands[i].modname,
            path: cands[i].relpath(&moddir).unwrap_or(&cands[i].path),
            data: d,
        })
        .collect();
    let out = Outputs {
        mods: &mods,
        graph: &g,
        topo: &topo,
        layout: opts.layout,
        warn_dups: opts.warn_dups,
    };
    let dep_lines = out.dep_lines();

    if opts.dry_run {
        let mut all = Outputs::modules_dep(&dep_lines);
        all.extend(out.modules_alias());
        all.extend(out.modules_softdep());
        all.extend(out.modules_symbols());
        all.extend(out.modules_devname(sink));
        stdout.write_all(&all).map_err(DepmodError::Stdout)?;
        stdout.flush().map_err(DepmodError::Stdout)?;
        return Ok(Summary {
            up_to_date: false,
            modules: mods.len(),
            unreadable,
        });
    }

    let outdir = opts.outputdir();
    let outdir_path = bytes_path(&outdir).to_path_buf();
    if opts.outdir.is_some() {
        std::fs::create_dir_all(&outdir_path).map_err(|e| DepmodError::OutDir {
            path: outdir_path.display().to_string(),
            err: crate::errno_text(&e),
        })?;
    }
    let read_input = |name: &str, sink: &mut dyn Sink| -> Option<Vec<u8>> {
        let mut p = moddir.clone();
        p.push(b'/');
        p.extend_from_slice(name.as_bytes());
        match std::fs::read(bytes_path(&p)) {
            Ok(d) => Some(d),
            Err(e) => {
                sink.emit(
                    Level::Warning,
                    format!(
                        "could not open {name} at {}: {}",
                        show(&moddir),
                        crate::errno_text(&e)
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
    let suffix = fsio::temp_suffix();
    for name in OUTPUT_FILES {
        let data = match *name {
            "modules.dep" => Outputs::modules_dep(&dep_lines),
            "modules.dep.bin" => out
                .modules_dep_bin(&dep_lines, sink)
                .map_err(|e| ixerr(name, e))?,
            "modules.alias" => out.modules_alias(),
            "modules.alias.bin" => out.modules_alias_bin(sink).map_err(|e| ixerr(name, e))?,
            "modules.softdep" => out.modules_softdep(),
            "modules.weakdep" => out.modules_weakdep(),
            "modules.symbols" => out.modules_symbols(),
            "modules.symbols.bin" => out.modules_symbols_bin(sink).map_err(|e| ixerr(name, e))?,
            "modules.builtin.bin" => read_input("modules.builtin", sink)
                .map(|d| output::builtin_bin(&d, opts.layout, sink))
                .transpose()
                .map_err(|e| ixerr(name, e))?
                .unwrap_or_default(),
            "modules.builtin.alias.bin" => read_input("modules.builtin.modinfo", sink)
                .map(|d| output::builtin_alias_bin(&d, opts.layout, sink))
                .transpose()
                .map_err(|e| ixerr(name, e))?
                .unwrap_or_default(),
            "modules.devname" => out.modules_devname(sink),
            _ => continue,
        };
        fsio::write_atomic(&outdir_path, name, &suffix, &data)?;
    }
    let _ = fsio::sync_dir(&outdir_path);
    Ok(Summary {
        up_to_date: false,
        modules: mods.len(),
        unreadable,
    })
}

/// Read and parse one module file; the error text is kmod's strerror plus our cause.
pub fn read_module(path: &Path) -> Result<ModuleData, String> {
    use crate::compress::ReadError;
    use crate::kernel::strerror;
    let image = crate::compress::read_module_file(path).map_err(|e| match &e {
        ReadError::Io { .. } => strerror(e.errno()),
        ReadError::Decompress { source, .. } => format!("{} ({source})", strerror(e.errno())),
    })?;
    crate::module::extract(&image).map_err(|e| format!("{} ({})", strerror(e.errno()), e.cause()))
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
