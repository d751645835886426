//! Autoclean: modules loaded with `-k`/`--autoclean` are removed again once they have
//! been unused for a while (the modutils feature kmod lost, spec runtime-tools §5.1).
//!
//! `insmod -k` and `modprobe -k` record every module they load in a registry under
//! `/run` ([`registry_dir`]). `rmmod -a`/`--all` runs a [`sweep`]: every recorded module
//! that is unused (reference count 0, no holders) **and** was already found unused by an
//! earlier sweep at least `--idle=SECONDS` ago (default [`DEFAULT_IDLE`]) is removed;
//! `--idle=0` removes unused modules at once. The sweep repeats until nothing more can go
//! (with `--idle=0`, a chain of recorded modules goes in one run; otherwise the modules a
//! removed module used count as "in use" until now, so their idle time starts now — the
//! two-pass behaviour of the 2.4 kernel's autoclean). A module in use is kept and its
//! idle time restarts. Modules loaded without `-k` are never touched. Entries of modules
//! that are no longer loaded (or were unloaded and loaded again without `-k`, seen by a
//! changed address in `/proc/modules`) are dropped. Safe to run from cron.
//!
//! Registry: `<run>/kmod-rs/autoclean`, a text file, one module per line:
//!
//! ```text
//! # kmod-rs autoclean registry: name recorded-at idle-since address
//! fat 1700000000 - 0xffffffffc0b10000
//! vfat 1700000000 1700000300 -
//! ```
//!
//! Times are seconds since the epoch; `-` means "not known". The file is replaced
//! atomically (temporary file, fsync, rename) and every reader-modifier holds an
//! exclusive `flock` on `<run>/kmod-rs/autoclean.lock` from reading to writing, so
//! concurrent loads and sweeps never lose entries. Time is passed in (`now`), never read
//! here, so tests control it.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};

use crate::fsio;
use crate::kernel::{DeleteFlags, Errno, Kernel, KernelError};
use crate::procfs::{InitState, LiveModules};
use crate::root::Root;

/// Default `--idle` in seconds.
pub const DEFAULT_IDLE: u64 = 60;

/// Name of the registry file inside [`registry_dir`].
pub const REGISTRY_FILE: &str = "autoclean";
/// Name of the lock file inside [`registry_dir`].
pub const LOCK_FILE: &str = "autoclean.lock";

const HEADER: &str = "# kmod-rs autoclean registry: name recorded-at idle-since address\n";

/// `<run>/kmod-rs`.
pub fn registry_dir(root: &Root) -> PathBuf {
    root.run_dir().join("kmod-rs")
}

/// Registry failures. Paths are host views.
#[derive(Debug, thiserror::Error)]
pub enum AutocleanError {
    #[error("could not create {}: {}", path.display(), crate::kernel::strerror_io(source))]
    CreateDir { path: PathBuf, source: io::Error },
    #[error("could not open {}: {}", path.display(), crate::kernel::strerror_io(source))]
    Open { path: PathBuf, source: io::Error },
    #[error("could not lock {}: {}", path.display(), crate::kernel::strerror(*errno as i32))]
    Lock { path: PathBuf, errno: Errno },
    #[error("could not read {}: {}", path.display(), crate::kernel::strerror_io(source))]
    Read { path: PathBuf, source: io::Error },
    #[error("could not write {}: {}", path.display(), crate::kernel::strerror_io(source))]
    Write { path: PathBuf, source: io::Error },
}

/// One recorded module.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub name: String,
    /// When it was recorded (loaded with `-k`).
    pub recorded: u64,
    /// When a sweep first found it unused (since then it stayed unused).
    pub idle_since: Option<u64>,
    /// Its core address in `/proc/modules` when recorded (0 / unknown → `None`); a
    /// different address later means the module was reloaded since.
    pub address: Option<u64>,
}

/// Parse the registry text. Malformed lines are skipped.
pub fn parse(text: &str) -> Vec<Entry> {
    let mut out: Vec<Entry> = Vec::new();
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        let w: Vec<&str> = line.split_whitespace().collect();
        if w.len() < 2 || w[0].contains('/') {
            continue;
        }
        let Ok(recorded) = w[1].parse() else {
            continue;
        };
        let idle_since = w.get(2).and_then(|s| s.parse().ok());
        let address = w
            .get(3)
            .and_then(|s| s.strip_prefix("0x"))
            .and_then(|h| u64::from_str_radix(h, 16).ok())
            .filter(|&a| a != 0);
        out.retain(|e| e.name != w[0]);
        out.push(Entry {
            name: w[0].to_string(),
            recorded,
            idle_since,
            address,
        });
    }
    out
}

/// The registry text for `entries`.
pub fn render(entries: &[Entry]) -> String {
    let mut s = String::from(HEADER);
    for e in entries {
        let idle = e.idle_since.map_or("-".to_string(), |t| t.to_string());
        let addr = e.address.map_or("-".to_string(), |a| format!("0x{a:016x}"));
        s.push_str(&format!("{} {} {idle} {addr}\n", e.name, e.recorded));
    }
    s
}

/// The registry, locked for as long as this value lives.
#[derive(Debug)]
pub struct Registry {
    dir: PathBuf,
    host_dir: PathBuf,
    entries: Vec<Entry>,
    dirty: bool,
    _lock: Flock<File>,
}

impl Registry {
    /// Lock and read the registry of `root`, creating its directory if needed (for
    /// recording). Blocks while another process holds the lock.
    pub fn open(root: &Root) -> Result<Registry, AutocleanError> {
        let dir = registry_dir(root);
        let host_dir = root.unrooted(&dir).into_owned();
        if !dir.is_dir() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o755)
                .create(&dir)
                .map_err(|source| AutocleanError::CreateDir {
                    path: host_dir.clone(),
                    source,
                })?;
        }
        Registry::lock_and_read(dir, host_dir)
    }

    /// Like [`Registry::open`], but `None` when no registry directory exists (nothing
    /// was ever recorded): a sweep then has nothing to do and creates nothing.
    pub fn open_existing(root: &Root) -> Result<Option<Registry>, AutocleanError> {
        let dir = registry_dir(root);
        if !dir.is_dir() {
            return Ok(None);
        }
        let host_dir = root.unrooted(&dir).into_owned();
        Registry::lock_and_read(dir, host_dir).map(Some)
    }

    fn lock_and_read(dir: PathBuf, host_dir: PathBuf) -> Result<Registry, AutocleanError> {
        let lock_path = dir.join(LOCK_FILE);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o644)
            .open(&lock_path)
            .map_err(|source| AutocleanError::Open {
                path: host_dir.join(LOCK_FILE),
                source,
            })?;
        let lock = Flock::lock(file, FlockArg::LockExclusive).map_err(|(_, errno)| {
            AutocleanError::Lock {
                path: host_dir.join(LOCK_FILE),
                errno,
            }
        })?;
        let entries = match fs::read(dir.join(REGISTRY_FILE)) {
            Ok(bytes) => parse(&String::from_utf8_lossy(&bytes)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(source) => {
                return Err(AutocleanError::Read {
                    path: host_dir.join(REGISTRY_FILE),
                    source,
                })
            }
        };
        Ok(Registry {
            dir,
            host_dir,
            entries,
            dirty: false,
            _lock: lock,
        })
    }

    /// The recorded modules, oldest record first.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// Is `name` recorded?
    pub fn contains(&self, name: &str) -> bool {
        self.entries.iter().any(|e| e.name == name)
    }

    /// Record `name` (loaded with `-k` at `now`; `address` from `/proc/modules`). An
    /// existing entry is refreshed: its idle time starts again.
    pub fn record(&mut self, name: &str, now: u64, address: Option<u64>) {
        self.entries.retain(|e| e.name != name);
        self.entries.push(Entry {
            name: name.to_string(),
            recorded: now,
            idle_since: None,
            address: address.filter(|&a| a != 0),
        });
        self.dirty = true;
    }

    /// Forget `name`. Returns whether it was recorded.
    pub fn forget(&mut self, name: &str) -> bool {
        let before = self.entries.len();
        self.entries.retain(|e| e.name != name);
        let changed = self.entries.len() != before;
        self.dirty |= changed;
        changed
    }

    /// Write the registry back if it changed (atomically; the lock is kept).
    pub fn save(&mut self) -> Result<(), AutocleanError> {
        if !self.dirty {
            return Ok(());
        }
        let text = render(&self.entries);
        let werr = |source| AutocleanError::Write {
            path: self.host_dir.join(REGISTRY_FILE),
            source,
        };
        fsio::write_atomic(
            &self.dir,
            REGISTRY_FILE,
            &fsio::temp_suffix(),
            text.as_bytes(),
        )
        .map_err(|e| {
            werr(match e {
                fsio::WriteError::Create { source, .. }
                | fsio::WriteError::Write { source, .. }
                | fsio::WriteError::Rename { source, .. } => source,
            })
        })?;
        fsio::sync_dir(&self.dir).map_err(werr)?;
        self.dirty = false;
        Ok(())
    }

    /// The registry directory (real path).
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// Lock, record `name`, write, unlock: what `insmod -k` does after a successful load.
/// `address` is looked up in `/proc/modules` of `root`.
pub fn record(root: &Root, name: &str, now: u64) -> Result<(), AutocleanError> {
    let mut reg = Registry::open(root)?;
    reg.record(name, now, module_address(root, name));
    reg.save()
}

/// The core address of a loaded module in `/proc/modules` (`None` when not listed or
/// hidden as 0).
pub fn module_address(root: &Root, name: &str) -> Option<u64> {
    let mods = LiveModules::new(root).proc_modules().ok()?;
    mods.into_iter()
        .find(|m| m.name == name.as_bytes())
        .map(|m| m.address)
        .filter(|&a| a != 0)
}

/// What happened to one recorded module in a sweep.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Unloaded.
    Removed,
    /// In use (references or holders); its idle time restarts.
    InUse,
    /// Unused, but not yet for `--idle` seconds; `remaining` seconds to go.
    Waiting { remaining: u64 },
    /// Not loaded any more (or reloaded without `-k`): entry dropped.
    Dropped,
    /// Not live (still loading or being unloaded): left alone this time.
    NotLive,
    /// `delete_module` failed with another error; the entry is kept.
    Failed(KernelError),
}

/// The result of a sweep: every recorded module with its outcome, in registry order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SweepReport {
    pub outcomes: Vec<(String, Outcome)>,
}

impl SweepReport {
    /// Names with a given kind of outcome.
    pub fn names(&self, pred: impl Fn(&Outcome) -> bool) -> Vec<&str> {
        self.outcomes
            .iter()
            .filter(|(_, o)| pred(o))
            .map(|(n, _)| n.as_str())
            .collect()
    }

    /// Modules removed.
    pub fn removed(&self) -> Vec<&str> {
        self.names(|o| *o == Outcome::Removed)
    }

    /// Any removal that failed for another reason than "in use"?
    pub fn failed(&self) -> bool {
        self.outcomes
            .iter()
            .any(|(_, o)| matches!(o, Outcome::Failed(_)))
    }
}

/// Sweep the registry (see the module documentation): remove every recorded module that
/// is unused and was found unused by an earlier sweep at least `idle` seconds before
/// `now`, repeating until nothing more can go. Updates `reg` (the caller saves it).
pub fn sweep(
    reg: &mut Registry,
    root: &Root,
    kernel: &dyn Kernel,
    idle: u64,
    now: u64,
) -> SweepReport {
    let live = LiveModules::new(root);
    let addresses: Vec<(Vec<u8>, u64)> = live
        .proc_modules()
        .map(|ms| ms.into_iter().map(|m| (m.name, m.address)).collect())
        .unwrap_or_default();
    let mut outcomes: Vec<(String, Outcome)> = Vec::new();
    let set = |outcomes: &mut Vec<(String, Outcome)>, name: &str, o: Outcome| match outcomes
        .iter_mut()
        .find(|(n, _)| n == name)
    {
        Some(slot) => slot.1 = o,
        None => outcomes.push((name.to_string(), o)),
    };

    // Drop entries of modules that are gone or were loaded again since.
    let mut keep = Vec::new();
    for e in std::mem::take(&mut reg.entries) {
        let loaded = live.initstate(e.name.as_bytes()).is_ok();
        let current = addresses
            .iter()
            .find(|(n, _)| n == e.name.as_bytes())
            .map(|(_, a)| *a)
            .filter(|&a| a != 0);
        let reloaded = matches!((e.address, current), (Some(a), Some(b)) if a != b);
        if loaded && !reloaded {
            keep.push(e);
        } else {
            set(&mut outcomes, &e.name, Outcome::Dropped);
            reg.dirty = true;
        }
    }
    reg.entries = keep;

    loop {
        let mut progress = false;
        // Newest first: holders are usually recorded after the modules they use.
        let mut i = reg.entries.len();
        while i > 0 {
            i -= 1;
            let name = reg.entries[i].name.clone();
            let n = name.as_bytes();
            match live.initstate(n) {
                Ok(InitState::Live) => {}
                Ok(_) => {
                    set(&mut outcomes, &name, Outcome::NotLive);
                    continue;
                }
                Err(_) => {
                    reg.entries.remove(i);
                    reg.dirty = true;
                    set(&mut outcomes, &name, Outcome::Dropped);
                    continue;
                }
            }
            let unused =
                live.refcnt(n).is_ok_and(|r| r == 0) && live.holders(n).is_ok_and(|h| h.is_empty());
            let entry = &mut reg.entries[i];
            if !unused {
                if entry.idle_since.take().is_some() {
                    reg.dirty = true;
                }
                set(&mut outcomes, &name, Outcome::InUse);
                continue;
            }
            let since = match entry.idle_since {
                Some(t) => t,
                None => {
                    entry.idle_since = Some(now);
                    reg.dirty = true;
                    now
                }
            };
            let idle_for = now.saturating_sub(since);
            if idle_for < idle {
                set(
                    &mut outcomes,
                    &name,
                    Outcome::Waiting {
                        remaining: idle - idle_for,
                    },
                );
                continue;
            }
            let Ok(cname) = std::ffi::CString::new(name.clone()) else {
                continue;
            };
            match kernel.delete_module(&cname, DeleteFlags::default()) {
                Ok(()) => {
                    reg.entries.remove(i);
                    reg.dirty = true;
                    progress = true;
                    set(&mut outcomes, &name, Outcome::Removed);
                }
                Err(e) => match e.errno() {
                    Errno::EAGAIN | Errno::EBUSY => {
                        entry.idle_since = None;
                        reg.dirty = true;
                        set(&mut outcomes, &name, Outcome::InUse);
                    }
                    Errno::ENOENT => {
                        reg.entries.remove(i);
                        reg.dirty = true;
                        set(&mut outcomes, &name, Outcome::Dropped);
                    }
                    _ => set(&mut outcomes, &name, Outcome::Failed(e)),
                },
            }
        }
        if !progress {
            break;
        }
    }
    SweepReport { outcomes }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn text_roundtrip() {
        let entries = vec![
            Entry {
                name: "fat".into(),
                recorded: 100,
                idle_since: None,
                address: Some(0xffff_ffff_c0b1_0000),
            },
            Entry {
                name: "vfat".into(),
                recorded: 100,
                idle_since: Some(160),
                address: None,
            },
        ];
        let text = render(&entries);
        assert_eq!(
            text,
            "# kmod-rs autoclean registry: name recorded-at idle-since address\n\
             fat 100 - 0xffffffffc0b10000\n\
             vfat 100 160 -\n"
        );
        assert_eq!(parse(&text), entries);
    }

    #[test]
    fn tolerant_parsing() {
        let e = parse("junk\nx notanumber\n a/b 1\nfat 5\nfat 7 - -\n\nvfat 1 2 0x0\n");
        assert_eq!(e.len(), 2);
        assert_eq!(e[0].name, "fat");
        assert_eq!(e[0].recorded, 7);
        assert_eq!(e[1].idle_since, Some(2));
        assert_eq!(e[1].address, None);
    }
}
