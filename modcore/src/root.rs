//! The one door to host paths.
//!
//! Every path of the running system that a tool reads (`/proc/modules`, `/proc/cmdline`,
//! `/sys/module/...`, the `modprobe.d` directories, `/lib/modules/<release>`, `/run`) is
//! produced by a [`Root`]. [`Root::host`] names the real system; [`Root::new`] puts the
//! same layout under a fixture directory so that tests (and a simulated kernel) can stand
//! in for the machine.
//!
//! A `Root` also carries the small I/O helpers the readers use. Their errors
//! ([`IoError`]) name the file as the running system would name it: under a fixture root
//! the fixture prefix is removed, so messages read like they would on a real machine.

use std::borrow::Cow;
use std::ffi::{OsStr, OsString};
use std::fs::{self, File, Metadata};
use std::io::{self, Read};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Component, Path, PathBuf};

/// Where kernel modules live (kmod 30's `MODULE_DIRECTORY`).
pub const MODULE_DIRECTORY: &str = "/lib/modules";

/// The `modprobe.d` directories kmod 30 reads, highest precedence first (spec §2.1).
/// kmod 32+ adds `<prefix>/lib/modprobe.d` before `/lib/modprobe.d`; kmod 30 does not,
/// and no kmod version reads `/etc/modprobe.conf`.
pub const MODPROBE_D_DIRS: [&str; 4] = [
    "/etc/modprobe.d",
    "/run/modprobe.d",
    "/usr/local/lib/modprobe.d",
    "/lib/modprobe.d",
];

/// An I/O failure on one file. `path` is the host view of the file (see the module docs).
#[derive(Debug, thiserror::Error)]
#[error("{}: {}", path.display(), crate::kernel::strerror_io(source))]
pub struct IoError {
    pub path: PathBuf,
    #[source]
    pub source: io::Error,
}

impl IoError {
    /// The errno of the failure (`EIO` when the error carries none).
    pub fn errno(&self) -> i32 {
        self.source.raw_os_error().unwrap_or(nix::libc::EIO)
    }

    /// `true` when the file (or a directory on its path) does not exist.
    pub fn is_not_found(&self) -> bool {
        self.source.kind() == io::ErrorKind::NotFound
    }

    /// The `strerror()` text of the failure, as kmod prints it.
    pub fn strerror(&self) -> String {
        crate::kernel::strerror_io(&self.source)
    }
}

/// The root of the file system the tools look at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Root {
    base: PathBuf,
}

impl Default for Root {
    fn default() -> Self {
        Root::host()
    }
}

impl Root {
    /// The running system: every path is used as is.
    pub fn host() -> Root {
        Root {
            base: PathBuf::from("/"),
        }
    }

    /// A fixture tree: `/proc/modules` becomes `<dir>/proc/modules`, and so on.
    pub fn new(dir: impl Into<PathBuf>) -> Root {
        Root { base: dir.into() }
    }

    /// The directory standing for `/`.
    pub fn base(&self) -> &Path {
        &self.base
    }

    /// `true` for [`Root::host`] (or any root whose base is `/`).
    pub fn is_host(&self) -> bool {
        self.base == Path::new("/")
    }

    /// The real path of a host-absolute path: `"/proc/modules"` → `<base>/proc/modules`.
    /// A relative `abs` is taken relative to `/` as well.
    pub fn join(&self, abs: impl AsRef<Path>) -> PathBuf {
        let abs = abs.as_ref();
        if self.is_host() {
            return if abs.is_absolute() {
                abs.to_path_buf()
            } else {
                Path::new("/").join(abs)
            };
        }
        let rel: PathBuf = abs
            .components()
            .filter(|c| !matches!(c, Component::RootDir | Component::Prefix(_)))
            .collect();
        self.base.join(rel)
    }

    /// The host view of a real path: the inverse of [`Root::join`] for paths under the
    /// base; any other path is returned unchanged.
    pub fn unrooted<'a>(&self, real: &'a Path) -> Cow<'a, Path> {
        if self.is_host() {
            return Cow::Borrowed(real);
        }
        match real.strip_prefix(&self.base) {
            Ok(rest) => Cow::Owned(Path::new("/").join(rest)),
            Err(_) => Cow::Borrowed(real),
        }
    }

    // ----- module directory -------------------------------------------------------------

    /// `<root>/lib/modules`.
    pub fn modules_base(&self) -> PathBuf {
        self.join(MODULE_DIRECTORY)
    }

    /// The default module directory `<root>/lib/modules/<release>`.
    pub fn module_dir(&self, release: &str) -> PathBuf {
        self.modules_base().join(release)
    }

    /// The module directory as modprobe (`-d ROOT`) and modinfo (`-b ROOT`) compute it
    /// (spec §1.4): without `dirname` it is [`Root::module_dir`]; with it, the plain string
    /// `DIRNAME + "/lib/modules/" + release`, made absolute against the current directory
    /// by prefixing it (no `.`/`..` clean-up). `dirname` is a path the user typed, so it
    /// is *not* placed under this root. An empty `dirname` gives `/lib/modules/<release>`
    /// of the host, like kmod.
    pub fn moddir(&self, dirname: Option<&OsStr>, release: &str) -> PathBuf {
        let Some(dirname) = dirname else {
            return self.module_dir(release);
        };
        let mut s: Vec<u8> = dirname.as_bytes().to_vec();
        s.extend_from_slice(MODULE_DIRECTORY.as_bytes());
        s.push(b'/');
        s.extend_from_slice(release.as_bytes());
        make_absolute_cwd(PathBuf::from(OsString::from_vec(s)))
    }

    // ----- /proc ------------------------------------------------------------------------

    /// `/proc/modules`.
    pub fn proc_modules(&self) -> PathBuf {
        self.join("/proc/modules")
    }

    /// `/proc/cmdline`.
    pub fn proc_cmdline(&self) -> PathBuf {
        self.join("/proc/cmdline")
    }

    // ----- /sys -------------------------------------------------------------------------

    /// `/sys/module`.
    pub fn sys_module(&self) -> PathBuf {
        self.join("/sys/module")
    }

    /// `/sys/module/<name>`. `name` is used as one path component (bytes kept verbatim).
    pub fn sys_module_dir(&self, name: &[u8]) -> PathBuf {
        self.sys_module().join(OsStr::from_bytes(name))
    }

    /// `/sys/module/<name>/<attr>` (`attr` may contain `/`, e.g. `parameters/x`).
    pub fn sys_module_attr(&self, name: &[u8], attr: &str) -> PathBuf {
        self.sys_module_dir(name).join(attr)
    }

    /// `/sys/module/<name>/holders`.
    pub fn sys_module_holders(&self, name: &[u8]) -> PathBuf {
        self.sys_module_attr(name, "holders")
    }

    /// `/sys/module/compression`: a plain file naming the in-kernel decompressor.
    pub fn sys_module_compression(&self) -> PathBuf {
        self.join("/sys/module/compression")
    }

    // ----- configuration, /run ------------------------------------------------------------

    /// The default `modprobe.d` directories in kmod 30's precedence order (spec §2.1).
    pub fn modprobe_d_dirs(&self) -> Vec<PathBuf> {
        MODPROBE_D_DIRS.iter().map(|d| self.join(d)).collect()
    }

    /// `/run` (home of runtime state such as an autoclean registry).
    pub fn run_dir(&self) -> PathBuf {
        self.join("/run")
    }

    // ----- I/O helpers --------------------------------------------------------------------

    fn err(&self, path: &Path, source: io::Error) -> IoError {
        IoError {
            path: self.unrooted(path).into_owned(),
            source,
        }
    }

    /// Read a whole file.
    pub fn read(&self, path: &Path) -> Result<Vec<u8>, IoError> {
        fs::read(path).map_err(|e| self.err(path, e))
    }

    /// Read at most `max` bytes from the start of a file (kmod reads small attribute
    /// files and `/proc/cmdline` into fixed buffers).
    pub fn read_limited(&self, path: &Path, max: usize) -> Result<Vec<u8>, IoError> {
        let f = File::open(path).map_err(|e| self.err(path, e))?;
        let mut buf = Vec::new();
        f.take(max as u64)
            .read_to_end(&mut buf)
            .map_err(|e| self.err(path, e))?;
        Ok(buf)
    }

    /// Read a whole file as UTF-8 text.
    pub fn read_to_string(&self, path: &Path) -> Result<String, IoError> {
        fs::read_to_string(path).map_err(|e| self.err(path, e))
    }

    /// Open a file for reading.
    pub fn open(&self, path: &Path) -> Result<File, IoError> {
        File::open(path).map_err(|e| self.err(path, e))
    }

    /// `stat()` (follows symlinks).
    pub fn metadata(&self, path: &Path) -> Result<Metadata, IoError> {
        fs::metadata(path).map_err(|e| self.err(path, e))
    }

    /// `true` if `path` is a directory (following symlinks).
    pub fn is_dir(&self, path: &Path) -> bool {
        fs::metadata(path).map(|m| m.is_dir()).unwrap_or(false)
    }

    /// The entry names of a directory in directory-read order (`.` and `..` skipped).
    pub fn read_dir_names(&self, path: &Path) -> Result<Vec<OsString>, IoError> {
        let rd = fs::read_dir(path).map_err(|e| self.err(path, e))?;
        let mut names = Vec::new();
        for ent in rd {
            let ent = ent.map_err(|e| self.err(path, e))?;
            names.push(ent.file_name());
        }
        Ok(names)
    }
}

/// kmod's `path_make_absolute_cwd`: an absolute path is kept; a relative one gets the
/// current directory and a `/` in front, without any clean-up.
pub fn make_absolute_cwd(p: PathBuf) -> PathBuf {
    if p.as_os_str().as_bytes().first() == Some(&b'/') {
        return p;
    }
    match std::env::current_dir() {
        Ok(cwd) => {
            let mut s = cwd.into_os_string().into_vec();
            s.push(b'/');
            s.extend_from_slice(p.as_os_str().as_bytes());
            PathBuf::from(OsString::from_vec(s))
        }
        Err(_) => p,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn host_paths() {
        let r = Root::host();
        assert!(r.is_host());
        assert_eq!(r.proc_modules(), Path::new("/proc/modules"));
        assert_eq!(r.proc_cmdline(), Path::new("/proc/cmdline"));
        assert_eq!(r.module_dir("6.1.0"), Path::new("/lib/modules/6.1.0"));
        assert_eq!(
            r.sys_module_attr(b"fat", "refcnt"),
            Path::new("/sys/module/fat/refcnt")
        );
        assert_eq!(
            r.sys_module_holders(b"fat"),
            Path::new("/sys/module/fat/holders")
        );
        assert_eq!(
            r.sys_module_compression(),
            Path::new("/sys/module/compression")
        );
        assert_eq!(r.run_dir(), Path::new("/run"));
        assert_eq!(
            r.modprobe_d_dirs(),
            vec![
                PathBuf::from("/etc/modprobe.d"),
                PathBuf::from("/run/modprobe.d"),
                PathBuf::from("/usr/local/lib/modprobe.d"),
                PathBuf::from("/lib/modprobe.d"),
            ]
        );
        assert_eq!(r.unrooted(Path::new("/x/y")), Path::new("/x/y"));
    }

    #[test]
    fn fixture_paths() {
        let r = Root::new("/tmp/fx");
        assert!(!r.is_host());
        assert_eq!(r.proc_modules(), Path::new("/tmp/fx/proc/modules"));
        assert_eq!(r.module_dir("v"), Path::new("/tmp/fx/lib/modules/v"));
        assert_eq!(r.join("etc/x"), Path::new("/tmp/fx/etc/x"));
        assert_eq!(
            r.unrooted(Path::new("/tmp/fx/sys/module/a")),
            Path::new("/sys/module/a")
        );
        assert_eq!(r.unrooted(Path::new("/elsewhere")), Path::new("/elsewhere"));
    }

    #[test]
    fn moddir_rules() {
        let r = Root::new("/tmp/fx");
        assert_eq!(r.moddir(None, "v"), Path::new("/tmp/fx/lib/modules/v"));
        assert_eq!(
            r.moddir(Some(OsStr::new("/a")), "v"),
            Path::new("/a/lib/modules/v")
        );
        // -d '' (mkinitcpio) and -d / keep kmod's plain concatenation.
        assert_eq!(
            r.moddir(Some(OsStr::new("")), "v"),
            Path::new("/lib/modules/v")
        );
        assert_eq!(
            r.moddir(Some(OsStr::new("/")), "v").as_os_str(),
            OsStr::new("//lib/modules/v")
        );
        let rel = r.moddir(Some(OsStr::new("./x")), "v");
        let cwd = std::env::current_dir().unwrap_or_default();
        assert_eq!(
            rel.as_os_str().as_bytes(),
            format!("{}/./x/lib/modules/v", cwd.display()).as_bytes()
        );
    }

    #[test]
    fn io_errors_name_host_path() {
        let dir = std::env::temp_dir().join(format!("modcore-root-{}", std::process::id()));
        let r = Root::new(&dir);
        let e = r.read(&r.proc_modules()).unwrap_err();
        assert_eq!(e.path, Path::new("/proc/modules"));
        assert!(e.is_not_found());
        assert_eq!(e.errno(), nix::libc::ENOENT);
        assert_eq!(e.to_string(), "/proc/modules: No such file or directory");
    }
}
