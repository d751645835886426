//! Finding module files (spec depmod-and-index §3): the tree walk, external directories,
//! explicit files, and the duplicate-name priority rules.

use super::cache::{self, Cache, FileKey, Kind};
use super::config::{DepmodConfig, SearchEntry};
use crate::diag::{Level, Sink};
use crate::name::modname_from_path;
use nix::dir::Type;
use nix::fcntl::{openat, AtFlags, OFlag};
use nix::sys::stat::{fstat, fstatat, FileStat, Mode, SFlag};
use rayon::prelude::*;
use std::ffi::OsStr;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::ffi::OsStrExt;
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

/// What the walk found in one directory (not a root of the walk): kept in the
/// incremental cache so that a later walk need not read the directory again while its
/// key is unchanged (see [`cache`](super::cache)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirListing {
    /// The directory's full path, as the walk builds it.
    pub path: Vec<u8>,
    /// The directory's stat key (links followed).
    pub key: FileKey,
    /// Its entries, encoded with [`cache::push_listing`].
    pub listing: Vec<u8>,
    /// Taken from the cache rather than read.
    pub reused: bool,
}

/// What the walk met, in walk order.
enum Found {
    /// A module file (made a candidate, its name worked out, by the task that found it).
    Module(Candidate),
    /// Something to report at error level.
    Problem(String),
    /// A directory's listing (only when the walk records them).
    Listing(DirListing),
}

/// How the walk behaves: what it skips, whether it stats module files and records
/// listings, and the listings of an earlier walk it may reuse.
#[derive(Clone, Copy)]
struct Ctx<'a> {
    cfg: &'a DepmodConfig,
    /// Take each module file's stat key and record every directory's listing.
    stat: bool,
    prior: Option<&'a Cache>,
}

/// Directories this deep (counting from the walk's root) and deeper are looked into by
/// full path instead of through an open descriptor: a hostile tree thousands of levels
/// deep must not use up the process's descriptors.
const FD_DEPTH: usize = 40;

/// An open descriptor, closed when dropped.
struct Fd(RawFd);

impl Drop for Fd {
    fn drop(&mut self) {
        let _ = nix::unistd::close(self.0);
    }
}

/// What keeps a directory open while its entries are looked at (nothing deep down).
enum Handle {
    None,
    Path(Fd),
    Read(nix::dir::Dir),
    /// Not opened at all: reached through an ancestor's descriptor (held open by the
    /// ancestor's walk, which outlasts this one) by the relative path `.1`.
    Within(RawFd, Vec<u8>),
}

impl Handle {
    fn raw(&self) -> Option<RawFd> {
        match self {
            Handle::None => None,
            Handle::Path(fd) => Some(fd.0),
            Handle::Read(d) => Some(d.as_raw_fd()),
            Handle::Within(fd, _) => Some(*fd),
        }
    }

    /// The directory's path relative to [`raw`](Self::raw) (empty: the descriptor is the
    /// directory's own).
    fn rel(&self) -> &[u8] {
        match self {
            Handle::Within(_, rel) => rel,
            _ => &[],
        }
    }

    /// `dir` and its handle, for naming its entries.
    fn at<'p>(&'p self, dir: &'p [u8]) -> At<'p> {
        At {
            fd: self.raw(),
            rel: self.rel(),
            dir,
        }
    }
}

/// At most this many path components lead from an open descriptor to a directory that
/// was not opened (see [`Handle::Within`]); one further down is opened.
const WITHIN_DEPTH: usize = 4;

/// How the walk names a directory's entries to the kernel: relative to the directory's
/// own descriptor or an ancestor's (a few path components to resolve, not the whole
/// path), or by full path.
#[derive(Clone, Copy)]
struct At<'p> {
    fd: Option<RawFd>,
    /// The directory relative to `fd` (empty: `fd` is the directory's own descriptor).
    rel: &'p [u8],
    dir: &'p [u8],
}

impl At<'_> {
    fn with<T>(
        &self,
        name: &[u8],
        f: impl FnOnce(Option<RawFd>, &[u8]) -> nix::Result<T>,
    ) -> nix::Result<T> {
        let (fd, prefix) = match self.fd {
            Some(fd) if self.rel.is_empty() => return f(Some(fd), name),
            Some(fd) => (Some(fd), self.rel),
            None => (None, self.dir),
        };
        // `prefix/name`, on the stack when it is short (it nearly always is: this runs
        // for every entry of the tree).
        let len = prefix.len() + 1 + name.len();
        let mut short = [0u8; 256];
        let mut long = Vec::new();
        let buf: &mut [u8] = if len <= short.len() {
            &mut short[..len]
        } else {
            long.resize(len, 0);
            &mut long
        };
        buf[..prefix.len()].copy_from_slice(prefix);
        buf[prefix.len()] = b'/';
        buf[prefix.len() + 1..].copy_from_slice(name);
        f(fd, buf)
    }

    /// stat(2) of an entry, following links or not.
    fn stat(&self, name: &[u8], follow: bool) -> nix::Result<FileStat> {
        let flags = if follow {
            AtFlags::empty()
        } else {
            AtFlags::AT_SYMLINK_NOFOLLOW
        };
        self.with(name, |fd, p| fstatat(fd, p, flags))
    }

    /// The path of entry `name` relative to `fd`.
    fn within(&self, name: &[u8]) -> Vec<u8> {
        let mut p = Vec::with_capacity(self.rel.len() + 1 + name.len());
        p.extend_from_slice(self.rel);
        p.push(b'/');
        p.extend_from_slice(name);
        p
    }

    /// A handle for the subdirectory `name` that opens nothing, when the descriptor it
    /// would go through is open and few enough components away.
    fn handle_within(&self, name: &[u8]) -> Option<Handle> {
        let fd = self.fd?;
        if self.rel.is_empty() {
            return Some(Handle::Within(fd, name.to_vec()));
        }
        let parts = 1 + self.rel.iter().filter(|&&b| b == b'/').count();
        (parts < WITHIN_DEPTH).then(|| Handle::Within(fd, self.within(name)))
    }

    /// Open a subdirectory (following links) only as a place to look things up from, and
    /// stat it.
    fn open_dir(&self, name: &[u8]) -> nix::Result<(Fd, FileStat)> {
        let flags = OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
        let fd = Fd(self.with(name, |fd, p| openat(fd, p, flags, Mode::empty()))?);
        let st = fstat(fd.0)?;
        Ok((fd, st))
    }
}

fn io_text(e: nix::errno::Errno) -> String {
    crate::errno_text(&std::io::Error::from(e))
}

/// One entry of a directory to look at: its name and, from readdir, its type.
enum Ent<'c> {
    Read(Vec<u8>, Option<Type>),
    /// From a listing of an earlier walk: looked at as a link would be (stat, following).
    Stored(&'c [u8], Kind),
}

impl Ent<'_> {
    fn name(&self) -> &[u8] {
        match self {
            Ent::Read(name, _) => name,
            Ent::Stored(name, _) => name,
        }
    }

    /// Might this entry be (or lead to) a directory?
    fn maybe_dir(&self) -> bool {
        match self {
            Ent::Read(_, t) => *t != Some(Type::File),
            Ent::Stored(_, kind) => *kind != Kind::Module,
        }
    }
}

/// Where a directory's entries come from.
enum Source<'c> {
    /// readdir, on a descriptor opened for it.
    Read,
    /// readdir, already open (a root of the walk).
    Open(nix::dir::Dir),
    /// A listing of an earlier walk.
    Stored(&'c [u8]),
}

/// A directory to walk: its path, what holds it open, where its entries come from and
/// its stat key (none for a root of the walk).
struct Dir<'c> {
    path: Vec<u8>,
    handle: Handle,
    source: Source<'c>,
    key: Option<FileKey>,
}

/// A directory's entries to look at (not `.`, `..`, `build`, `source` or an excluded
/// name), in readdir order; when listings are recorded, the directory's listing; and what
/// holds the directory open while the entries are looked at.
type Listed<'c> = (Vec<Ent<'c>>, Option<DirListing>, Handle);

/// List `dir` (see [`Listed`]); `Err` is the problem to report.
fn list<'c>(ctx: Ctx<'c>, dir: Dir<'c>, depth: usize) -> Result<Listed<'c>, Found> {
    let excluded = |nb: &[u8]| ctx.cfg.excludes.iter().any(|x| x.as_slice() == nb);
    let record = ctx.stat && dir.key.is_some();
    let mut d = match dir.source {
        Source::Stored(listing) => {
            let entries = cache::listing_entries(listing)
                .filter(|(_, name)| !excluded(name))
                .map(|(kind, name)| Ent::Stored(name, kind))
                .collect();
            let rec = dir.key.filter(|_| record).map(|key| DirListing {
                path: dir.path,
                key,
                listing: listing.to_vec(),
                reused: true,
            });
            return Ok((entries, rec, dir.handle));
        }
        Source::Open(d) => d,
        Source::Read => {
            let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
            let rel = match dir.handle.rel() {
                [] => &b"."[..],
                rel => rel,
            };
            let opened = match dir.handle.raw() {
                Some(fd) => nix::dir::Dir::openat(Some(fd), rel, flags, Mode::empty()),
                None => nix::dir::Dir::open(dir.path.as_slice(), flags, Mode::empty()),
            };
            opened.map_err(|e| {
                Found::Problem(format!(
                    "could not open directory {}: {}",
                    show(&dir.path),
                    io_text(e)
                ))
            })?
        }
    };
    let mut listing = Vec::new();
    let mut entries = Vec::new();
    for ent in d.iter().filter_map(Result::ok) {
        let nb = ent.file_name().to_bytes();
        if nb == b"." || nb == b".." || nb == b"build" || nb == b"source" {
            continue;
        }
        let t = ent.file_type();
        if record {
            // What a later walk must look at again: everything but regular files that
            // are not modules (excluded names too: the configuration may change).
            let kind = match t {
                Some(Type::File) => is_module_name(nb).then_some(Kind::Module),
                Some(Type::Directory) => Some(Kind::Dir),
                _ => Some(Kind::Other),
            };
            if let Some(kind) = kind {
                cache::push_listing(&mut listing, kind, nb);
            }
        }
        if !excluded(nb) {
            entries.push(Ent::Read(nb.to_vec(), t));
        }
    }
    let rec = dir.key.filter(|_| record).map(|key| DirListing {
        path: dir.path,
        key,
        listing,
        reused: false,
    });
    // Deep down, nothing stays open.
    let handle = if depth >= FD_DEPTH {
        Handle::None
    } else {
        Handle::Read(d)
    };
    Ok((entries, rec, handle))
}

/// What one directory entry means for the walk.
enum Step<'c> {
    Found(Found),
    /// A directory to walk, and its (device, inode).
    Descend(Dir<'c>, (u64, u64)),
    Nothing,
}

fn key_of(st: &FileStat) -> FileKey {
    FileKey {
        dev: st.st_dev,
        ino: st.st_ino,
        size: st.st_size as u64,
        mtime: st.st_mtime,
        mtime_nsec: st.st_mtime_nsec,
        ctime: st.st_ctime,
        ctime_nsec: st.st_ctime_nsec,
    }
}

fn show(b: &[u8]) -> std::borrow::Cow<'_, str> {
    String::from_utf8_lossy(b)
}

/// Step into the subdirectory `path` (whose stat is `st`), unless it is one of its own
/// ancestors (a loop); deep down, nothing is kept open for it.
fn descend<'c>(
    path: Vec<u8>,
    st: &FileStat,
    handle: Handle,
    source: Source<'c>,
    ancestors: &[(u64, u64)],
) -> Step<'c> {
    let id = (st.st_dev, st.st_ino);
    if ancestors.contains(&id) {
        return Step::Found(Found::Problem(format!(
            "{}: directory loop, not descending again",
            show(&path)
        )));
    }
    let handle = if ancestors.len() >= FD_DEPTH {
        Handle::None
    } else {
        handle
    };
    let dir = Dir {
        path,
        handle,
        source,
        key: Some(key_of(st)),
    };
    Step::Descend(dir, id)
}

/// Look at one entry of the directory `at` names. `ancestors`: see [`walk_dir`].
fn step<'c>(ctx: Ctx<'c>, at: At<'_>, ent: &Ent<'_>, ancestors: &[(u64, u64)]) -> Step<'c> {
    let nb = ent.name();
    let full = || {
        let mut full = at.dir.to_vec();
        full.push(b'/');
        full.extend_from_slice(nb);
        full
    };
    // The type from readdir, or (symbolic links, file systems that do not say, entries
    // of a stored listing) from stat(2), which follows links.
    let known = match ent {
        Ent::Read(_, t @ Some(Type::File | Type::Directory)) => *t,
        _ => None,
    };
    let (is_dir, followed) = match known {
        Some(t) => (t == Type::Directory, None),
        None => match at.stat(nb, true) {
            Ok(st) => {
                let fmt = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT;
                if fmt != SFlag::S_IFDIR && fmt != SFlag::S_IFREG {
                    let kind = st.st_mode & SFlag::S_IFMT.bits();
                    return Step::Found(Found::Problem(format!(
                        "unsupported file type {}: {:o}",
                        show(&full()),
                        kind
                    )));
                }
                (fmt == SFlag::S_IFDIR, Some(st))
            }
            Err(e) => {
                return Step::Found(Found::Problem(format!(
                    "fstatat({}, {}): {}",
                    show(&full()),
                    show(nb),
                    io_text(e)
                )));
            }
        },
    };
    if is_dir {
        // A directory whose listing the cache holds under its current key is not opened:
        // its entries are looked at through the descriptor `at` goes through.
        if let Some(prior) = ctx.prior.filter(|c| c.dir_count() > 0) {
            let st = match followed {
                Some(st) => Ok(st),
                None => at.stat(nb, true),
            };
            if let Ok(st) = st {
                let full = full();
                if let (Some(listing), Some(handle)) =
                    (prior.listing(&full, &key_of(&st)), at.handle_within(nb))
                {
                    return descend(full, &st, handle, Source::Stored(listing), ancestors);
                }
            }
        }
        let Ok((fd, st)) = at.open_dir(nb) else {
            return Step::Nothing;
        };
        let full = full();
        let source = match ctx.prior.and_then(|c| c.listing(&full, &key_of(&st))) {
            Some(listing) => Source::Stored(listing),
            None => Source::Read,
        };
        descend(full, &st, Handle::Path(fd), source, ancestors)
    } else {
        if !is_module_name(nb) {
            return Step::Nothing;
        }
        let key = match (ctx.stat, followed) {
            (false, _) => None,
            (true, Some(st)) => Some(key_of(&st)),
            // A regular file (not a link): its own metadata is stat(2)'s.
            (true, None) => at.stat(nb, false).ok().map(|st| key_of(&st)),
        };
        Step::Found(Found::Module(Candidate {
            key,
            ..Candidate::new(full())
        }))
    }
}

/// Everything under `dir`, in readdir order, depth first, in pieces (one after the
/// other they are the findings: a subtree's pieces are handed up as they are, not copied
/// into one vector at every level). `ancestors` are the (device, inode) pairs of the
/// directories above and of `dir` itself: meeting one of them again is a loop. Near the
/// top, subdirectories are walked in parallel; deeper down [`walk_serial`] goes on
/// without recursion (a hostile tree can be thousands of directories deep).
fn walk_dir(ctx: Ctx<'_>, dir: Dir<'_>, ancestors: &[(u64, u64)]) -> Vec<Vec<Found>> {
    if ancestors.len() > PARALLEL_DEPTH {
        return vec![walk_serial(ctx, dir, ancestors)];
    }
    let path = dir.path.clone();
    let (entries, listing, handle) = match list(ctx, dir, ancestors.len()) {
        Ok(l) => l,
        Err(problem) => return vec![vec![problem]],
    };
    let at = handle.at(&path);
    // Each entry gives nothing, one finding, or a subtree's findings.
    let visit = |ent: &Ent<'_>| -> (Option<Found>, Vec<Vec<Found>>) {
        match step(ctx, at, ent, ancestors) {
            Step::Found(f) => (Some(f), Vec::new()),
            Step::Nothing => (None, Vec::new()),
            Step::Descend(sub, id) => {
                let mut below = ancestors.to_vec();
                below.push(id);
                (None, walk_dir(ctx, sub, &below))
            }
        }
    };
    let mut own = Vec::with_capacity(entries.len() + 1);
    own.extend(listing.map(Found::Listing));
    // Files need no task of their own; a directory with subdirectories fans out.
    if !entries.iter().any(Ent::maybe_dir) {
        for ent in &entries {
            match step(ctx, at, ent, ancestors) {
                Step::Found(f) => own.push(f),
                Step::Nothing => {}
                // Not met here (no entry may be a directory), but walked all the same.
                Step::Descend(sub, id) => {
                    let mut below = ancestors.to_vec();
                    below.push(id);
                    own.extend(walk_dir(ctx, sub, &below).into_iter().flatten());
                }
            }
        }
        drop(handle);
        return vec![own];
    }
    let visited: Vec<(Option<Found>, Vec<Vec<Found>>)> = entries.par_iter().map(visit).collect();
    drop(handle);
    let mut pieces = Vec::new();
    for (one, below) in visited {
        own.extend(one);
        if !below.is_empty() {
            if !own.is_empty() {
                pieces.push(std::mem::take(&mut own));
            }
            pieces.extend(below);
        }
    }
    if !own.is_empty() {
        pieces.push(own);
    }
    pieces
}

/// [`walk_dir`] with an explicit stack: the same results in the same order, in constant
/// stack space.
fn walk_serial<'c>(ctx: Ctx<'c>, dir: Dir<'c>, ancestors: &[(u64, u64)]) -> Vec<Found> {
    struct Frame<'c> {
        path: Vec<u8>,
        entries: std::vec::IntoIter<Ent<'c>>,
        handle: Handle,
    }
    let mut out = Vec::new();
    let mut path = ancestors.to_vec();
    let open = |dir: Dir<'c>, depth: usize, out: &mut Vec<Found>| {
        let p = dir.path.clone();
        match list(ctx, dir, depth) {
            Ok((entries, listing, handle)) => {
                out.extend(listing.map(Found::Listing));
                Some(Frame {
                    path: p,
                    entries: entries.into_iter(),
                    handle,
                })
            }
            Err(problem) => {
                out.push(problem);
                None
            }
        }
    };
    let mut stack: Vec<Frame<'c>> = Vec::new();
    match open(dir, path.len(), &mut out) {
        Some(f) => stack.push(f),
        None => return out,
    }
    while let Some(frame) = stack.last_mut() {
        let Some(ent) = frame.entries.next() else {
            stack.pop();
            path.pop();
            continue;
        };
        let at = frame.handle.at(&frame.path);
        match step(ctx, at, &ent, &path) {
            Step::Found(f) => out.push(f),
            Step::Nothing => {}
            Step::Descend(sub, id) => {
                path.push(id);
                match open(sub, path.len(), &mut out) {
                    Some(f) => stack.push(f),
                    None => {
                        path.pop();
                    }
                }
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
    /// Places in `kept`, looked up by module name (the names are not copied: the table
    /// holds places and hashes the names in `kept`).
    by_name: hashbrown::HashTable<usize>,
    hasher: foldhash::fast::RandomState,
    stat: bool,
    prior: Option<&'a Cache>,
    listings: Vec<DirListing>,
}

impl<'a> Walker<'a> {
    pub fn new(moddir: &'a [u8], cfg: &'a DepmodConfig) -> Walker<'a> {
        Walker {
            moddir,
            cfg,
            search: cfg.effective_search(),
            kept: Vec::new(),
            by_name: hashbrown::HashTable::new(),
            hasher: foldhash::fast::RandomState::default(),
            stat: false,
            prior: None,
            listings: Vec::new(),
        }
    }

    /// Take every module file's stat key during the walk (for the incremental cache): a
    /// `statx` relative to the open directory, in the walk's parallel tasks, is much
    /// cheaper than one by full path later.
    /// Record every directory's listing too (see [`Walker::take_listings`]).
    pub fn stat_files(&mut self, on: bool) {
        self.stat = on;
    }

    /// Take a directory's listing from `cache` instead of reading the directory when the
    /// directory's stat key is the one stored with it. Every entry of such a listing is
    /// still stat'ed (following links).
    pub fn reuse_listings(&mut self, cache: &'a Cache) {
        self.prior = Some(cache);
    }

    /// The listings of the directories walked so far (with [`Walker::stat_files`]), in no
    /// particular order; roots of the walk are not included.
    pub fn take_listings(&mut self) -> Vec<DirListing> {
        std::mem::take(&mut self.listings)
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
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
        let d = match nix::dir::Dir::open(dir, flags, Mode::empty()) {
            Ok(d) => d,
            Err(e) => {
                sink.emit(
                    Level::Error,
                    format!("could not open directory {}: {}", show(dir), io_text(e)),
                );
                if is_moddir {
                    return Err(std::io::Error::from(e));
                }
                return Ok(());
            }
        };
        let mut seen_dirs = Vec::new();
        if let Ok(st) = fstat(d.as_raw_fd()) {
            seen_dirs.push((st.st_dev, st.st_ino));
        }
        // The tree is read in parallel (a subdirectory per task); the findings come back
        // in the order a one-thread walk meets them, and are applied in that order.
        let ctx = Ctx {
            cfg: self.cfg,
            stat: self.stat,
            prior: self.prior,
        };
        let root = Dir {
            path: dir.to_vec(),
            handle: Handle::None,
            source: Source::Open(d),
            key: None,
        };
        let all = walk_dir(ctx, root, &seen_dirs);
        // Room for everything found (listings counted too) at once: this loop runs on
        // one thread after the walk, and a map grown step by step rehashes every name.
        let n: usize = all.iter().map(Vec::len).sum();
        self.kept.reserve(n);
        let (kept, hasher) = (&self.kept, &self.hasher);
        self.by_name.reserve(n, |&i| {
            use std::hash::BuildHasher;
            hasher.hash_one(kept[i].modname.as_slice())
        });
        for found in all.into_iter().flatten() {
            match found {
                Found::Module(c) => self.offer(c),
                Found::Problem(message) => sink.emit(Level::Error, message),
                Found::Listing(l) => self.listings.push(l),
            }
        }
        Ok(())
    }

    /// Offer one candidate (in walk order); keeps it, drops it, or replaces a kept one.
    pub fn offer(&mut self, n: Candidate) {
        use std::hash::BuildHasher;
        let hasher = &self.hasher;
        let kept = &self.kept;
        let hash = hasher.hash_one(n.modname.as_slice());
        match self
            .by_name
            .find(hash, |&i| kept[i].modname == n.modname)
            .copied()
        {
            None => {
                self.by_name.insert_unique(hash, kept.len(), |&i| {
                    hasher.hash_one(kept[i].modname.as_slice())
                });
                self.kept.push(n);
            }
            Some(i) => {
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
