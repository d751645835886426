//! Finding module files (spec depmod-and-index §3): the tree walk, external directories,
//! explicit files, and the duplicate-name priority rules.

use super::cache::FileKey;
use super::config::{DepmodConfig, SearchEntry};
use crate::diag::{Level, Sink};
use crate::name::modname_from_path;
use rayon::prelude::*;
use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

/// A module file that survived the walk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// Full path as built by the walk (MODDIR + "/" + rel, or external dir + "/" + rel).
    pub path: Vec<u8>,
    /// Normalised module name.
    pub modname: Vec<u8>,
    /// Byte offset of the basename inside `path`.
    pub base_off: usize,
    /// The file's stat key, when the walk took it (see [`Walker::stat_files`]).
    pub key: Option<FileKey>,
}

impl Candidate {
    pub fn new(path: Vec<u8>) -> Candidate {
        let base_off = path.iter().rposition(|&b| b == b'/').map_or(0, |i| i + 1);
        let modname = modname_from_path(&path);
        Candidate {
            path,
            modname,
            base_off,
            key: None,
        }
    }

    pub fn path(&self) -> &Path {
        Path::new(OsStr::from_bytes(&self.path))
    }

    /// The path relative to `moddir` when it lies inside it (spec §3.4).
    pub fn relpath<'a>(&'a self, moddir: &[u8]) -> Option<&'a [u8]> {
        let rest = self.path.strip_prefix(moddir)?;
        rest.strip_prefix(b"/")
    }

    /// The "rel stem" used for priorities: relpath up to basename + len(modname) bytes.
    /// Only the MODDIR characters are checked (no following `/`), as kmod does.
    fn rel_stem<'a>(&'a self, moddir: &[u8]) -> Option<&'a [u8]> {
        if !self.path.starts_with(moddir) {
            return None;
        }
        let start = moddir.len() + 1;
        let end = (self.base_off + self.modname.len()).min(self.path.len());
        if start > end {
            return Some(&[]);
        }
        Some(&self.path[start..end])
    }

    /// The stem path compared with modules.order lines (spec §3.4).
    pub fn stem_path<'a>(&'a self, moddir: &[u8]) -> Option<&'a [u8]> {
        let rel = self.relpath(moddir)?;
        let rel_base_off = self.base_off - (self.path.len() - rel.len());
        let end = (rel_base_off + self.modname.len() + 3).min(rel.len());
        Some(&rel[..end])
    }
}

/// Module-file extensions recognised by the walk. kmod 30 (Debian) has no `.ko.gz`; we
/// read gzip too.
pub const EXTENSIONS: &[&[u8]] = &[b".ko", b".ko.xz", b".ko.zst", b".ko.gz"];

pub fn is_module_name(name: &[u8]) -> bool {
    EXTENSIONS
        .iter()
        .any(|e| name.len() > e.len() && name.ends_with(e))
}

/// Directories this deep (counting from the walk's root) and deeper are walked by the
/// task that met them.
const PARALLEL_DEPTH: usize = 6;

/// What the walk met, in walk order.
enum Found {
    /// A module file (its full path and, if taken, its stat key).
    Module(Vec<u8>, Option<FileKey>),
    /// Something to report at error level.
    Problem(String),
}

/// The entries of a directory the walk looks at (not `.`, `..`, `build`, `source` or an
/// excluded name), in readdir order.
fn listing(cfg: &DepmodConfig, rd: std::fs::ReadDir) -> Vec<std::fs::DirEntry> {
    rd.filter_map(Result::ok)
        .filter(|ent| {
            let name = ent.file_name();
            let nb = name.as_bytes();
            let skipped = nb == b"." || nb == b".." || nb == b"build" || nb == b"source";
            !skipped && !cfg.excludes.iter().any(|x| x.as_slice() == nb)
        })
        .collect()
}

/// What one directory entry means for the walk.
enum Step {
    Found(Found),
    /// A directory to walk: its path, its listing handle and its (device, inode).
    Descend(Vec<u8>, std::fs::ReadDir, (u64, u64)),
    Nothing,
}

/// Look at one entry of `dir`. `ancestors`: see [`walk_dir`].
fn step(dir: &[u8], ent: &std::fs::DirEntry, ancestors: &[(u64, u64)], stat: bool) -> Step {
    let name = ent.file_name();
    let nb = name.as_bytes();
    let mut full = dir.to_vec();
    full.push(b'/');
    full.extend_from_slice(nb);
    let fpath = Path::new(OsStr::from_bytes(&full));
    // The type from readdir, or (symbolic links, file systems that do not say) from
    // stat(2), which follows links.
    let (ft, followed) = match ent.file_type() {
        Ok(ft) if ft.is_file() || ft.is_dir() => (ft, None),
        _ => match std::fs::metadata(fpath) {
            Ok(m) => (m.file_type(), Some(m)),
            Err(e) => {
                return Step::Found(Found::Problem(format!(
                    "fstatat({}, {}): {}",
                    fpath.display(),
                    name.to_string_lossy(),
                    crate::errno_text(&e)
                )));
            }
        },
    };
    if ft.is_dir() {
        let Ok(m) = std::fs::metadata(fpath) else {
            return Step::Nothing;
        };
        let id = (m.dev(), m.ino());
        if ancestors.contains(&id) {
            return Step::Found(Found::Problem(format!(
                "{}: directory loop, not descending again",
                fpath.display()
            )));
        }
        match std::fs::read_dir(fpath) {
            Ok(rd) => Step::Descend(full, rd, id),
            Err(e) => Step::Found(Found::Problem(format!(
                "could not open directory {}: {}",
                fpath.display(),
                crate::errno_text(&e)
            ))),
        }
    } else if ft.is_file() {
        if !is_module_name(nb) {
            return Step::Nothing;
        }
        let key = if !stat {
            None
        } else if let Some(m) = followed {
            Some(FileKey::of(&m))
        } else {
            // A regular file (not a link): its own metadata is stat(2)'s.
            ent.metadata().ok().map(|m| FileKey::of(&m))
        };
        Step::Found(Found::Module(full, key))
    } else {
        let kind = if ft.is_fifo() {
            0o010000
        } else if ft.is_char_device() {
            0o020000
        } else if ft.is_block_device() {
            0o060000
        } else if ft.is_socket() {
            0o140000
        } else {
            0
        };
        Step::Found(Found::Problem(format!(
            "unsupported file type {}: {:o}",
            fpath.display(),
            kind
        )))
    }
}

/// Everything under `dir` (whose entries `rd` lists), in readdir order, depth first.
/// `ancestors` are the (device, inode) pairs of the directories above and of `dir`
/// itself: meeting one of them again is a loop. Near the top, subdirectories are walked
/// in parallel; deeper down [`walk_serial`] goes on without recursion (a hostile tree can
/// be thousands of directories deep).
fn walk_dir(
    cfg: &DepmodConfig,
    dir: &[u8],
    rd: std::fs::ReadDir,
    ancestors: &[(u64, u64)],
    stat: bool,
) -> Vec<Found> {
    if ancestors.len() > PARALLEL_DEPTH {
        return walk_serial(cfg, dir, rd, ancestors, stat);
    }
    let entries = listing(cfg, rd);
    // Each entry gives nothing, one finding, or a subtree's findings.
    let visit = |ent: &std::fs::DirEntry| -> (Option<Found>, Vec<Found>) {
        match step(dir, ent, ancestors, stat) {
            Step::Found(f) => (Some(f), Vec::new()),
            Step::Nothing => (None, Vec::new()),
            Step::Descend(full, rd, id) => {
                let mut below = ancestors.to_vec();
                below.push(id);
                (None, walk_dir(cfg, &full, rd, &below, stat))
            }
        }
    };
    // Files need no task of their own; a directory with subdirectories fans out.
    let fan_out = entries
        .iter()
        .any(|e| e.file_type().map_or(true, |ft| !ft.is_file()));
    let visited: Vec<(Option<Found>, Vec<Found>)> = if fan_out {
        entries.par_iter().map(visit).collect()
    } else {
        entries.iter().map(visit).collect()
    };
    let mut out = Vec::with_capacity(visited.len());
    for (one, many) in visited {
        out.extend(one);
        out.extend(many);
    }
    out
}

/// [`walk_dir`] with an explicit stack: the same results in the same order, in constant
/// stack space.
fn walk_serial(
    cfg: &DepmodConfig,
    dir: &[u8],
    rd: std::fs::ReadDir,
    ancestors: &[(u64, u64)],
    stat: bool,
) -> Vec<Found> {
    let mut out = Vec::new();
    let mut path = ancestors.to_vec();
    let mut stack = vec![(dir.to_vec(), listing(cfg, rd).into_iter())];
    while let Some((d, entries)) = stack.last_mut() {
        let Some(ent) = entries.next() else {
            stack.pop();
            path.pop();
            continue;
        };
        match step(d, &ent, &path, stat) {
            Step::Found(f) => out.push(f),
            Step::Nothing => {}
            Step::Descend(full, rd, id) => {
                path.push(id);
                stack.push((full, listing(cfg, rd).into_iter()));
            }
        }
    }
    out
}

/// Collects candidates and applies the duplicate priority rules.
pub struct Walker<'a> {
    moddir: &'a [u8],
    cfg: &'a DepmodConfig,
    search: Vec<SearchEntry>,
    kept: Vec<Candidate>,
    by_name: HashMap<Vec<u8>, usize, foldhash::fast::RandomState>,
    stat: bool,
}

impl<'a> Walker<'a> {
    pub fn new(moddir: &'a [u8], cfg: &'a DepmodConfig) -> Walker<'a> {
        Walker {
            moddir,
            cfg,
            search: cfg.effective_search(),
            kept: Vec::new(),
            by_name: HashMap::default(),
            stat: false,
        }
    }

    /// Take every module file's stat key during the walk (for the incremental cache): a
    /// `statx` relative to the open directory, in the walk's parallel tasks, is much
    /// cheaper than one by full path later.
    pub fn stat_files(&mut self, on: bool) {
        self.stat = on;
    }

    /// Walk MODDIR, then the external directories in reverse config order.
    pub fn walk_all(&mut self, sink: &mut dyn Sink) -> std::io::Result<()> {
        let moddir = self.moddir.to_vec();
        self.walk_root(&moddir, true, sink)?;
        for ext in self.cfg.externals.iter().rev() {
            let _ = self.walk_root(ext, false, sink);
        }
        Ok(())
    }

    fn walk_root(
        &mut self,
        dir: &[u8],
        is_moddir: bool,
        sink: &mut dyn Sink,
    ) -> std::io::Result<()> {
        let path = Path::new(OsStr::from_bytes(dir));
        let rd = match std::fs::read_dir(path) {
            Ok(rd) => rd,
            Err(e) => {
                sink.emit(
                    Level::Error,
                    format!(
                        "could not open directory {}: {}",
                        path.display(),
                        crate::errno_text(&e)
                    ),
                );
                if is_moddir {
                    return Err(e);
                }
                return Ok(());
            }
        };
        let mut seen_dirs = Vec::new();
        if let Ok(m) = std::fs::metadata(path) {
            seen_dirs.push((m.dev(), m.ino()));
        }
        // The tree is read in parallel (a subdirectory per task); the findings come back
        // in the order a one-thread walk meets them, and are applied in that order.
        for found in walk_dir(self.cfg, dir, rd, &seen_dirs, self.stat) {
            match found {
                Found::Module(path, key) => self.offer(Candidate {
                    key,
                    ..Candidate::new(path)
                }),
                Found::Problem(message) => sink.emit(Level::Error, message),
            }
        }
        Ok(())
    }

    /// Offer one candidate (in walk order); keeps it, drops it, or replaces a kept one.
    pub fn offer(&mut self, n: Candidate) {
        match self.by_name.get(&n.modname) {
            None => {
                self.by_name.insert(n.modname.clone(), self.kept.len());
                self.kept.push(n);
            }
            Some(&i) => {
                if self.new_wins(&n, &self.kept[i]) {
                    self.kept[i] = n;
                }
            }
        }
    }

    /// Spec §3.5: does candidate `n` replace the kept module `o`?
    fn new_wins(&self, n: &Candidate, o: &Candidate) -> bool {
        let nstem = n.rel_stem(self.moddir);
        let ostem = o.rel_stem(self.moddir);
        for key in self.cfg.overrides.iter().rev() {
            if nstem == Some(key.as_slice()) {
                return true;
            }
            if ostem == Some(key.as_slice()) {
                return false;
            }
        }
        let (mut nprio, mut oprio): (Option<i64>, Option<i64>) = (None, None);
        let mut bprio: i64 = -1;
        let mut i: i64 = 0;
        for e in self.search.iter().rev() {
            match e {
                SearchEntry::BuiltIn => bprio = i,
                SearchEntry::External => {
                    for dir in self.cfg.externals.iter().rev() {
                        let mut d = dir.clone();
                        d.push(b'/');
                        if n.path.starts_with(&d) {
                            nprio = Some(i);
                        }
                        if o.path.starts_with(&d) {
                            oprio = Some(i);
                        }
                        i += 1;
                    }
                }
                SearchEntry::Path(p) => {
                    let mut d = p.clone();
                    d.push(b'/');
                    if nstem.is_some_and(|s| s.starts_with(&d)) {
                        nprio = Some(i);
                    } else if ostem.is_some_and(|s| s.starts_with(&d)) {
                        oprio = Some(i);
                    }
                }
            }
            i += 1;
        }
        nprio.unwrap_or(bprio) > oprio.unwrap_or(bprio)
    }

    /// The surviving modules, in the order they were first kept.
    pub fn into_modules(self) -> Vec<Candidate> {
        self.kept
    }
}
