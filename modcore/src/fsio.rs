//! Small, explicit file-system helpers: atomic replacement of files.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Errors writing an output file; every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("could not create temporary file {path}: {source}")]
    Create { path: PathBuf, source: io::Error },
    #[error("could not write {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
    #[error("could not rename {from} to {to}: {source}")]
    Rename {
        from: PathBuf,
        to: PathBuf,
        source: io::Error,
    },
}

/// A temporary-name suffix unique within the machine: `.<pid>.<n>.<usec>.<sec>`, where `n`
/// counts calls in this process (kmod's shape plus the counter, so two runs in one process
/// — threads, tests — never collide on `O_EXCL`).
pub fn temp_suffix() -> String {
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    format!(
        ".{}.{}.{}.{}",
        std::process::id(),
        n,
        now.subsec_micros(),
        now.as_secs()
    )
}

/// Replace `dir/name` with `data` atomically: write `dir/name<suffix>` (O_EXCL, mode 0644
/// before umask), fsync it, rename it over the final name. A reader never sees a partial
/// file; after a crash either the old or the new file is there (plus perhaps a stray temp).
pub fn write_atomic(dir: &Path, name: &str, suffix: &str, data: &[u8]) -> Result<(), WriteError> {
    write_atomic_with(dir, name, suffix, |w| w.write_all(data))
}

/// [`write_atomic`] for data produced piece by piece: `fill` writes the contents into the
/// (buffered) temporary file, so they never need to be in memory at once.
pub fn write_atomic_with(
    dir: &Path,
    name: &str,
    suffix: &str,
    fill: impl FnOnce(&mut dyn Write) -> io::Result<()>,
) -> Result<(), WriteError> {
    prepare_atomic_with(dir, name, suffix, fill)?.commit()
}

/// The owner and permissions a file created now in a given directory gets: the file
/// system uid and gid of the process (the directory's group if it is set-group-ID), and
/// mode 0644 less the umask.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Creation {
    pub uid: u32,
    pub gid: u32,
    pub mode: u32,
}

impl Creation {
    /// For files created in `dir`; `None` when that cannot be told (no /proc).
    pub fn in_dir(dir: &Path) -> Option<Creation> {
        use std::os::unix::fs::MetadataExt;
        let status = fs::read_to_string("/proc/self/status").ok()?;
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .map(|rest| rest.split_whitespace().collect::<Vec<_>>())
        };
        // "Uid:" and "Gid:" list the real, effective, saved and file system ids.
        let fsid = |name: &str| field(name)?.get(3)?.parse::<u32>().ok();
        let umask = u32::from_str_radix(field("Umask:")?.first()?, 8).ok()?;
        let d = fs::metadata(dir).ok()?;
        let gid = if d.mode() & 0o2000 != 0 {
            d.gid()
        } else {
            fsid("Gid:")?
        };
        Some(Creation {
            uid: fsid("Uid:")?,
            gid,
            mode: 0o644 & !umask,
        })
    }
}

/// Would [`write_atomic`] of `data` over `path` leave exactly what is there now: a
/// regular file (not a link, no other name) with these contents, and the owner and
/// permissions a new file gets (`new`)? If so, the file's metadata (as found when it was
/// opened).
pub fn holds_exactly(path: &Path, data: &[u8], new: &Creation) -> Option<fs::Metadata> {
    holds_exactly_open(path, data, new).map(|(_, meta)| meta)
}

/// [`holds_exactly`], and if so, the file's access and modification times set to now
/// (through the descriptor it was checked through): what a rewrite would leave, but for
/// the inode, and nothing written. Its metadata after that.
pub fn holds_exactly_touched(path: &Path, data: &[u8], new: &Creation) -> Option<fs::Metadata> {
    use std::os::fd::AsRawFd;
    let (f, _) = holds_exactly_open(path, data, new)?;
    let now = nix::sys::time::TimeSpec::UTIME_NOW;
    nix::sys::stat::futimens(f.as_raw_fd(), &now, &now).ok()?;
    f.metadata().ok()
}

/// [`holds_exactly`], with the file it checked (open for reading).
fn holds_exactly_open(path: &Path, data: &[u8], new: &Creation) -> Option<(File, fs::Metadata)> {
    use std::io::Read;
    use std::os::unix::fs::MetadataExt;
    // (O_NONBLOCK: a FIFO by that name must not make the open wait for a writer.)
    let Ok(mut f) = OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK)
        .open(path)
    else {
        return None;
    };
    let meta = match f.metadata() {
        Ok(m)
            if m.is_file()
                && m.nlink() == 1
                && m.len() == data.len() as u64
                && m.mode() & 0o7777 == new.mode
                && (m.uid(), m.gid()) == (new.uid, new.gid) =>
        {
            m
        }
        _ => return None,
    };
    // In pieces, stopping at the first that differs (a file of the same size that
    // changed is told apart after a read or two), and to the end: the file must not
    // have grown since the fstat. The last piece first: a file listing modules in
    // module order differs at its end when a module was added.
    let mut old = vec![0u8; COMPARE_CHUNK.min(data.len()).max(1)];
    if data.len() > COMPARE_CHUNK {
        use std::os::unix::fs::FileExt;
        let at = data.len() - COMPARE_CHUNK;
        match f.read_exact_at(&mut old, at as u64) {
            Ok(()) if old[..] == data[at..] => {}
            _ => return None,
        }
    }
    let mut rest = data;
    loop {
        let want = rest.len().min(COMPARE_CHUNK);
        let got = match f.read(&mut old[..want.max(1)]) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => return None,
        };
        if got == 0 {
            return rest.is_empty().then_some((f, meta));
        }
        if got > rest.len() || old[..got] != rest[..got] {
            return None;
        }
        rest = &rest[got..];
    }
}

/// [`holds_exactly`] reads and compares this much at a time.
const COMPARE_CHUNK: usize = 64 << 10;

/// The first half of [`write_atomic`], without waiting for the disk: `dir/name<suffix>`
/// is written and its writeback started (`sync_file_range`), and the fsync is left to
/// [`Prepared::sync`] or to [`Prepared::commit`] (or [`Prepared::commit_holding`]), which
/// waits for it before the rename; dropping it uncommitted removes it. A caller that
/// prepares several files one after the other and commits them later, in order, finds
/// most of their data already on disk by then; nothing waits on the preparing thread.
pub fn prepare_started(
    dir: &Path,
    name: &str,
    suffix: &str,
    data: &[u8],
) -> Result<Prepared, WriteError> {
    let final_path = dir.join(name);
    let tmp_path = dir.join(format!("{name}{suffix}"));
    let mut f = create_temp(&tmp_path)?;
    if let Err(source) = f.write_all(data) {
        drop(f);
        let _ = fs::remove_file(&tmp_path);
        return Err(WriteError::Write {
            path: final_path,
            source,
        });
    }
    start_writeback(&f);
    Ok(Prepared {
        tmp_path,
        final_path,
        file: Some(f),
        sync_pending: true,
        committed: false,
    })
}

/// Ask the kernel to start writing `f`'s dirty pages to disk, without waiting. Only a
/// hint: where it is not supported, or fails, the fsync later does all the work.
#[allow(unsafe_code)]
fn start_writeback(f: &File) {
    use std::os::fd::AsRawFd;
    // SAFETY: sync_file_range(2) takes a descriptor and three integers and touches no
    // memory of ours; `f` is open for the whole call.
    let _ = unsafe {
        nix::libc::sync_file_range(f.as_raw_fd(), 0, 0, nix::libc::SYNC_FILE_RANGE_WRITE)
    };
}

/// Create the temporary file `path` (it must not exist), mode 0644 before umask.
fn create_temp(path: &Path) -> Result<File, WriteError> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(path)
        .map_err(|source| WriteError::Create {
            path: path.to_path_buf(),
            source,
        })
}

/// [`write_atomic_with`]'s first half: the contents written by `fill`, and synced.
pub fn prepare_atomic_with(
    dir: &Path,
    name: &str,
    suffix: &str,
    fill: impl FnOnce(&mut dyn Write) -> io::Result<()>,
) -> Result<Prepared, WriteError> {
    prepare(dir, name, suffix, true, fill)
}

/// [`prepare_atomic_with`] without the fsync, for a file its readers check (the depmod
/// cache, checksummed and rebuilt when it does not check out): still replaced whole by
/// the rename, so a running reader never sees it half written, but after a crash it may
/// be left incomplete, which its readers then see.
pub fn prepare_checked_with(
    dir: &Path,
    name: &str,
    suffix: &str,
    fill: impl FnOnce(&mut dyn Write) -> io::Result<()>,
) -> Result<Prepared, WriteError> {
    prepare(dir, name, suffix, false, fill)
}

fn prepare(
    dir: &Path,
    name: &str,
    suffix: &str,
    sync: bool,
    fill: impl FnOnce(&mut dyn Write) -> io::Result<()>,
) -> Result<Prepared, WriteError> {
    let final_path = dir.join(name);
    let tmp_path = dir.join(format!("{name}{suffix}"));
    let f = create_temp(&tmp_path)?;
    let mut w = io::BufWriter::with_capacity(256 << 10, f);
    let res = fill(&mut w)
        .and_then(|()| w.into_inner().map_err(io::IntoInnerError::into_error))
        .and_then(|f| {
            if sync {
                f.sync_all().map(|()| f)
            } else {
                Ok(f)
            }
        });
    match res {
        Ok(f) => Ok(Prepared {
            tmp_path,
            final_path,
            file: Some(f),
            sync_pending: false,
            committed: false,
        }),
        Err(source) => {
            let _ = fs::remove_file(&tmp_path);
            Err(WriteError::Write {
                path: final_path,
                source,
            })
        }
    }
}

/// A complete temporary file waiting to be renamed over its final name: synced, or (from
/// [`prepare_started`]) to be synced just before the rename.
#[derive(Debug)]
pub struct Prepared {
    tmp_path: PathBuf,
    final_path: PathBuf,
    /// The file, open until it is renamed.
    file: Option<File>,
    /// Its fsync is still to come (just before the rename).
    sync_pending: bool,
    committed: bool,
}

impl Prepared {
    /// Rename the temporary file over the final name.
    pub fn commit(mut self) -> Result<(), WriteError> {
        self.rename()
    }

    /// [`commit`](Self::commit), holding on to the file it replaces: the returned handle
    /// (an `O_PATH` descriptor, `None` when there was no file) keeps the old file's
    /// blocks allocated until it is dropped. Freeing a file's blocks is most of the cost of
    /// a rename over a large file (on a file system mounted with `discard` each freed
    /// range is also trimmed), so a caller renaming several files in a fixed order can
    /// do the frees on other threads and keep the renames short.
    pub fn commit_holding(self) -> Result<Option<File>, WriteError> {
        self.commit_holding_stat().map(|(old, _)| old)
    }

    /// [`commit_holding`](Self::commit_holding), also giving the new file's metadata as
    /// it is just after the rename (of this very file, whatever has since taken its name;
    /// `None` if it cannot be had).
    pub fn commit_holding_stat(
        mut self,
    ) -> Result<(Option<File>, Option<fs::Metadata>), WriteError> {
        let old = OpenOptions::new()
            .read(true)
            .custom_flags(nix::libc::O_PATH | nix::libc::O_NOFOLLOW)
            .open(&self.final_path)
            .ok();
        self.rename()?;
        let meta = self.file.take().and_then(|f| f.metadata().ok());
        Ok((old, meta))
    }

    /// The fsync still to come, now (for a caller that syncs files on other threads
    /// before committing them in order); committing then only renames. On failure the
    /// file stays uncommitted (dropping it removes the temporary file).
    pub fn sync(&mut self) -> Result<(), WriteError> {
        if self.sync_pending {
            if let Some(f) = &self.file {
                f.sync_all().map_err(|source| WriteError::Write {
                    path: self.final_path.clone(),
                    source,
                })?;
            }
            self.sync_pending = false;
        }
        Ok(())
    }

    fn rename(&mut self) -> Result<(), WriteError> {
        self.sync()?;
        self.committed = true;
        fs::rename(&self.tmp_path, &self.final_path).map_err(|source| {
            let _ = fs::remove_file(&self.tmp_path);
            WriteError::Rename {
                from: self.tmp_path.clone(),
                to: self.final_path.clone(),
                source,
            }
        })
    }
}

impl Drop for Prepared {
    fn drop(&mut self) {
        if !self.committed {
            let _ = fs::remove_file(&self.tmp_path);
        }
    }
}

/// fsync a directory so that renames inside it are durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Map `file` read-only (private), all of it; `populate` asks the kernel to set up every
/// page at once (cheaper than a fault per page for a file read from end to end).
///
/// The one place this crate maps files: index files and the depmod cache, both of which
/// are only ever replaced by rename, never rewritten in place. Module files are never
/// mapped (see ARCHITECTURE.md, Security).
#[allow(unsafe_code)]
pub fn map_readonly(file: &std::fs::File, populate: bool) -> std::io::Result<memmap2::Mmap> {
    let mut opts = memmap2::MmapOptions::new();
    if populate {
        opts.populate();
    }
    // SAFETY: the map is read-only and private, and only read as plain bytes with every
    // access bounds-checked. As with any file mapping (and as kmod itself does), another
    // process truncating the file while it is mapped could fault the reader; the files
    // mapped here are replaced by rename, never rewritten in place, so that does not
    // happen in practice.
    unsafe { opts.map(file) }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;

    fn tmpdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "modcore-fsio-{tag}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    fn names(d: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    /// A started file replaces the old one only when committed, with exactly its bytes;
    /// the old one stays readable through the handle the commit returns.
    #[test]
    fn started_file_is_committed_in_place() {
        let d = tmpdir("commit");
        fs::write(d.join("out"), b"old").unwrap();
        let p = prepare_started(&d, "out", ".tmp1", b"new bytes").unwrap();
        assert_eq!(fs::read(d.join("out")).unwrap(), b"old");
        assert_eq!(names(&d), ["out", "out.tmp1"]);
        let old = p.commit_holding().unwrap();
        assert!(old.is_some());
        assert_eq!(fs::read(d.join("out")).unwrap(), b"new bytes");
        assert_eq!(names(&d), ["out"]);
        let _ = fs::remove_dir_all(&d);
    }

    /// A file bigger than one comparison piece holds exactly the new bytes only when
    /// every piece matches: a difference at the start, in the middle or in the last
    /// byte, or another length, is found.
    #[test]
    fn holds_exactly_compares_every_piece() {
        use std::os::unix::fs::MetadataExt;
        let d = tmpdir("holds");
        let p = d.join("out");
        let data: Vec<u8> = (0..3 * COMPARE_CHUNK + 123)
            .map(|i| (i % 251) as u8)
            .collect();
        fs::write(&p, &data).unwrap();
        let m = fs::metadata(&p).unwrap();
        let new = Creation {
            uid: m.uid(),
            gid: m.gid(),
            mode: m.mode() & 0o7777,
        };
        assert!(holds_exactly(&p, &data, &new).is_some());
        for at in [0, COMPARE_CHUNK + 7, 2 * COMPARE_CHUNK, data.len() - 1] {
            let mut other = data.clone();
            other[at] ^= 1;
            assert!(
                holds_exactly(&p, &other, &new).is_none(),
                "difference at {at}"
            );
        }
        assert!(holds_exactly(&p, &data[..data.len() - 1], &new).is_none());
        let mut longer = data.clone();
        longer.push(0);
        assert!(holds_exactly(&p, &longer, &new).is_none());
        fs::write(&p, b"").unwrap();
        assert!(holds_exactly(&p, b"", &new).is_some());
        assert!(holds_exactly(&p, b"x", &new).is_none());
        let _ = fs::remove_dir_all(&d);
    }

    /// Dropped uncommitted, a started file leaves nothing behind; a temporary name that
    /// is taken is an error naming it.
    #[test]
    fn started_file_dropped_or_refused() {
        let d = tmpdir("drop");
        drop(prepare_started(&d, "out", ".tmp1", b"x").unwrap());
        assert!(names(&d).is_empty());
        fs::write(d.join("out.tmp2"), b"someone else's").unwrap();
        match prepare_started(&d, "out", ".tmp2", b"x") {
            Err(WriteError::Create { path, .. }) => assert!(path.ends_with("out.tmp2")),
            other => panic!("{other:?}"),
        }
        assert_eq!(fs::read(d.join("out.tmp2")).unwrap(), b"someone else's");
        let _ = fs::remove_dir_all(&d);
    }
}
