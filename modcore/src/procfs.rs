//! Live module state: `/proc/modules` and `/sys/module/NAME/` (spec §1.8, §8.4, §8.5).
//!
//! The parsers at the top are pure (bytes in, values out). [`LiveModules`] is the reader
//! that does the I/O, always through a [`Root`], and answers the questions the tools ask:
//! which modules are loaded, a module's initstate, refcount, holders and size — with
//! kmod's fallbacks and kmod's errors.

use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::root::{IoError, Root};

/// kmod reads sysfs attributes into a 32-byte buffer (31 bytes of text).
pub const SYSFS_ATTR_MAX: usize = 31;

// ===================================================================================
// /proc/modules
// ===================================================================================

/// The STATE column of `/proc/modules`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProcState {
    Live,
    Loading,
    Unloading,
}

impl ProcState {
    /// The word the kernel prints.
    pub fn as_str(self) -> &'static str {
        match self {
            ProcState::Live => "Live",
            ProcState::Loading => "Loading",
            ProcState::Unloading => "Unloading",
        }
    }

    fn parse(w: &[u8]) -> Option<ProcState> {
        match w {
            b"Live" => Some(ProcState::Live),
            b"Loading" => Some(ProcState::Loading),
            b"Unloading" => Some(ProcState::Unloading),
            _ => None,
        }
    }
}

/// One line of `/proc/modules`:
/// `NAME SIZE REFCNT USERS STATE ADDRESS [(TAINTS)]` (spec §8.4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcModule {
    pub name: Vec<u8>,
    pub size: u64,
    /// `None` when the kernel prints `-` (no module unloading support).
    pub refcnt: Option<i64>,
    /// Names of the modules using this one, in the kernel's order (newest user first).
    pub users: Vec<Vec<u8>>,
    /// `[permanent],` was listed (init routine but no exit routine).
    pub permanent: bool,
    pub state: ProcState,
    /// Core text base address (0 when hidden from the reader).
    pub address: u64,
    /// Taint letters without the parentheses; a trailing `+`/`-` (loading/unloading)
    /// is kept.
    pub taints: Vec<u8>,
}

impl ProcModule {
    /// The line as the kernel prints it (without the newline).
    pub fn to_line(&self) -> Vec<u8> {
        let mut s = Vec::new();
        s.extend_from_slice(&self.name);
        s.extend_from_slice(format!(" {} ", self.size).as_bytes());
        match self.refcnt {
            Some(r) => s.extend_from_slice(r.to_string().as_bytes()),
            None => s.push(b'-'),
        }
        s.push(b' ');
        if self.users.is_empty() && !self.permanent {
            s.push(b'-');
        } else {
            for u in &self.users {
                s.extend_from_slice(u);
                s.push(b',');
            }
            if self.permanent {
                s.extend_from_slice(b"[permanent],");
            }
        }
        s.push(b' ');
        s.extend_from_slice(self.state.as_str().as_bytes());
        s.extend_from_slice(format!(" 0x{:016x}", self.address).as_bytes());
        if !self.taints.is_empty() {
            s.extend_from_slice(b" (");
            s.extend_from_slice(&self.taints);
            s.push(b')');
        }
        s
    }
}

/// Why a `/proc/modules` line could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProcModulesError {
    #[error("invalid line format at /proc/modules:{line}: missing {field}")]
    Missing { line: usize, field: &'static str },
    #[error(
        "invalid line format at /proc/modules:{line}: bad {field} '{}'",
        crate::procfs::show(value)
    )]
    Bad {
        line: usize,
        field: &'static str,
        value: Vec<u8>,
    },
}

fn show(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn is_blank(c: u8) -> bool {
    c == b' ' || c == b'\t'
}

fn tokens(line: &[u8]) -> impl Iterator<Item = &[u8]> {
    line.split(|&c| is_blank(c)).filter(|t| !t.is_empty())
}

/// Parse one `/proc/modules` line (1-based `lineno` for errors). Strict: every column
/// must be present and well formed.
pub fn parse_proc_modules_line(line: &[u8], lineno: usize) -> Result<ProcModule, ProcModulesError> {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let mut it = tokens(line);
    let missing = |field| ProcModulesError::Missing {
        line: lineno,
        field,
    };
    let bad = |field, value: &[u8]| ProcModulesError::Bad {
        line: lineno,
        field,
        value: value.to_vec(),
    };
    let name = it.next().ok_or_else(|| missing("name"))?;
    let size_t = it.next().ok_or_else(|| missing("size"))?;
    let size = parse_u64(size_t).ok_or_else(|| bad("size", size_t))?;
    let ref_t = it.next().ok_or_else(|| missing("refcnt"))?;
    let refcnt = if ref_t == b"-" {
        None
    } else {
        Some(parse_i64(ref_t).ok_or_else(|| bad("refcnt", ref_t))?)
    };
    let users_t = it.next().ok_or_else(|| missing("users"))?;
    let mut users = Vec::new();
    let mut permanent = false;
    if users_t != b"-" {
        let Some(list) = users_t.strip_suffix(b",") else {
            return Err(bad("users", users_t));
        };
        for u in list.split(|&c| c == b',') {
            if u.is_empty() {
                return Err(bad("users", users_t));
            }
            if u == b"[permanent]" {
                permanent = true;
            } else {
                users.push(u.to_vec());
            }
        }
    }
    let state_t = it.next().ok_or_else(|| missing("state"))?;
    let state = ProcState::parse(state_t).ok_or_else(|| bad("state", state_t))?;
    let addr_t = it.next().ok_or_else(|| missing("address"))?;
    let address = addr_t
        .strip_prefix(b"0x")
        .and_then(|h| std::str::from_utf8(h).ok())
        .and_then(|h| u64::from_str_radix(h, 16).ok())
        .ok_or_else(|| bad("address", addr_t))?;
    let taints = match it.next() {
        None => Vec::new(),
        Some(t) => t
            .strip_prefix(b"(")
            .and_then(|t| t.strip_suffix(b")"))
            .ok_or_else(|| bad("taints", t))?
            .to_vec(),
    };
    if let Some(extra) = it.next() {
        return Err(bad("trailing text", extra));
    }
    Ok(ProcModule {
        name: name.to_vec(),
        size,
        refcnt,
        users,
        permanent,
        state,
        address,
        taints,
    })
}

/// Parse all of `/proc/modules` strictly (empty lines are skipped).
pub fn parse_proc_modules(text: &[u8]) -> Result<Vec<ProcModule>, ProcModulesError> {
    text.split(|&c| c == b'\n')
        .enumerate()
        .filter(|(_, l)| !l.is_empty())
        .map(|(i, l)| parse_proc_modules_line(l, i + 1))
        .collect()
}

/// One entry of kmod's loaded-module list: the first blank-separated word of a
/// `/proc/modules` line, normalised with the modname rule. `None` for a line without
/// any word (kmod reports "could not get module from name '(null)'" and skips it).
pub fn loaded_names(text: &[u8]) -> Vec<Option<Vec<u8>>> {
    let mut out = Vec::new();
    let mut lines: Vec<&[u8]> = text.split(|&c| c == b'\n').collect();
    if text.ends_with(b"\n") || text.is_empty() {
        lines.pop();
    }
    for l in lines {
        out.push(tokens(l).next().map(crate::name::modname_from_path));
    }
    out
}

/// Outcome of looking a module's size up in `/proc/modules` (kmod's fallback when
/// `/sys/module/NAME/coresize` is absent).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProcSize {
    Found(i64),
    /// The module has no line.
    NotListed,
    /// The module's line is malformed (kmod: "invalid line format at /proc/modules:N").
    BadLine(usize),
}

/// Find `name`'s SIZE column the way kmod does: first line whose first word equals
/// `name` exactly; the second word must be a complete decimal number.
pub fn proc_modules_size(text: &[u8], name: &[u8]) -> ProcSize {
    for (i, l) in text.split(|&c| c == b'\n').enumerate() {
        let mut it = tokens(l);
        if it.next() != Some(name) {
            continue;
        }
        return match it.next().and_then(|t| parse_c_long(t, false)) {
            Some(v) => ProcSize::Found(v),
            None => ProcSize::BadLine(i + 1),
        };
    }
    ProcSize::NotListed
}

// ===================================================================================
// /sys/module/NAME attributes
// ===================================================================================

/// A module's state (spec §1.8).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum InitState {
    /// Listed in `modules.builtin.bin` of the selected module directory.
    Builtin,
    Live,
    Coming,
    Going,
}

impl InitState {
    /// kmod's name for the state.
    pub fn as_str(self) -> &'static str {
        match self {
            InitState::Builtin => "builtin",
            InitState::Live => "live",
            InitState::Coming => "coming",
            InitState::Going => "going",
        }
    }

    /// "In kernel" for modprobe: live or built in.
    pub fn in_kernel(self) -> bool {
        matches!(self, InitState::Live | InitState::Builtin)
    }
}

/// Parse `/sys/module/NAME/initstate` (exact `live\n`, `coming\n`, `going\n`).
pub fn parse_initstate(text: &[u8]) -> Option<InitState> {
    match text {
        b"live\n" => Some(InitState::Live),
        b"coming\n" => Some(InitState::Coming),
        b"going\n" => Some(InitState::Going),
        _ => None,
    }
}

/// Parse an integer attribute (`refcnt`, `coresize`) like kmod's `read_str_long`:
/// optional leading blanks and sign, at least one digit, and the number must be
/// followed by a white-space character (the kernel's newline). Out-of-range values
/// saturate like `strtol`.
pub fn parse_sysfs_long(text: &[u8]) -> Option<i64> {
    let text = &text[..text.len().min(SYSFS_ATTR_MAX)];
    parse_c_long(text, true)
}

/// `strtol(s, &end, 10)`; with `need_space` the character at `end` must be white
/// space, otherwise `end` must be the end of `s`.
fn parse_c_long(s: &[u8], need_space: bool) -> Option<i64> {
    let mut i = 0;
    while i < s.len() && is_c_space(s[i]) {
        i += 1;
    }
    let mut neg = false;
    if i < s.len() && (s[i] == b'+' || s[i] == b'-') {
        neg = s[i] == b'-';
        i += 1;
    }
    let start = i;
    let mut v: i64 = 0;
    while i < s.len() && s[i].is_ascii_digit() {
        let d = i64::from(s[i] - b'0');
        v = if neg {
            v.saturating_mul(10).saturating_sub(d)
        } else {
            v.saturating_mul(10).saturating_add(d)
        };
        i += 1;
    }
    if i == start {
        return None;
    }
    let ok = if need_space {
        i < s.len() && is_c_space(s[i])
    } else {
        i == s.len()
    };
    ok.then_some(v)
}

fn is_c_space(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}

fn parse_u64(s: &[u8]) -> Option<u64> {
    std::str::from_utf8(s).ok()?.parse().ok()
}

fn parse_i64(s: &[u8]) -> Option<i64> {
    std::str::from_utf8(s).ok()?.parse().ok()
}

/// The kernel's built-in decompressor, from `/sys/module/compression` (kmod 31+ uses it
/// to pass compressed files to `finit_module`; kmod 30 never reads it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KernelCompression {
    None,
    Gzip,
    Xz,
    Zstd,
    /// Any other text: kmod logs `unknown kernel compression <text>` and uses none.
    Unknown(Vec<u8>),
}

/// Parse the contents of `/sys/module/compression`.
pub fn parse_kernel_compression(text: &[u8]) -> KernelCompression {
    match text {
        b"zstd\n" => KernelCompression::Zstd,
        b"xz\n" => KernelCompression::Xz,
        b"gzip\n" => KernelCompression::Gzip,
        other => KernelCompression::Unknown(other.to_vec()),
    }
}

// ===================================================================================
// The reader
// ===================================================================================

/// Failures reading live module state. Paths are host views (`/sys/module/x/refcnt`).
/// [`LiveError::reported`] tells whether kmod prints the failure (at ERROR level) or
/// only returns the error code; [`LiveError::kmod_value`] is what kmod's function
/// returns in that case (lsmod prints it).
#[derive(Debug, thiserror::Error)]
pub enum LiveError {
    /// `/proc/modules` could not be opened.
    #[error("could not open /proc/modules: {}", .0.strerror())]
    ProcModules(IoError),
    /// `/sys/module/NAME` does not exist (or cannot be opened).
    #[error("could not open '{}': {}", .0.path.display(), .0.strerror())]
    NoSysDir(IoError),
    /// An attribute file could not be opened (kmod: debug message only).
    #[error("could not open '{}': {}", .0.path.display(), .0.strerror())]
    OpenAttr(IoError),
    /// An attribute file could be opened but not read.
    #[error("could not read from '{}': {}", .0.path.display(), .0.strerror())]
    ReadAttr(IoError),
    /// `initstate` holds something else than `live`, `coming`, `going`.
    #[error("unknown {}: '{}'", path.display(), show(content))]
    UnknownInitstate {
        module: Vec<u8>,
        path: PathBuf,
        content: Vec<u8>,
    },
    /// `refcnt` is not an integer.
    #[error("could not read integer from '{}': 'Invalid argument'", path.display())]
    BadRefcnt { module: Vec<u8>, path: PathBuf },
    /// `coresize` is not an integer (kmod then reports size 0).
    #[error("failed to read coresize from {}", path.display())]
    BadCoresize { module: Vec<u8>, path: PathBuf },
    /// The module's `/proc/modules` line is malformed.
    #[error("invalid line format at /proc/modules:{line}")]
    ProcModulesLine { module: Vec<u8>, line: usize },
    /// The module has no `/proc/modules` line.
    #[error("module '{}' not listed in /proc/modules", show(module))]
    NotListed { module: Vec<u8> },
    /// The holders directory could not be opened.
    #[error("could not open '{}': {}", .0.path.display(), .0.strerror())]
    Holders(IoError),
}

impl LiveError {
    /// The errno of the failure (positive).
    pub fn errno(&self) -> i32 {
        use nix::libc::{EINVAL, ENOENT};
        match self {
            LiveError::ProcModules(e)
            | LiveError::NoSysDir(e)
            | LiveError::OpenAttr(e)
            | LiveError::ReadAttr(e)
            | LiveError::Holders(e) => e.errno(),
            LiveError::UnknownInitstate { .. }
            | LiveError::BadRefcnt { .. }
            | LiveError::BadCoresize { .. } => EINVAL,
            LiveError::ProcModulesLine { .. } | LiveError::NotListed { .. } => ENOENT,
        }
    }

    /// Does kmod print this failure as a library error?
    pub fn reported(&self) -> bool {
        !matches!(
            self,
            LiveError::NoSysDir(_) | LiveError::OpenAttr(_) | LiveError::NotListed { .. }
        )
    }

    /// The libkmod function whose message this is (for the `libkmod: <func>: ...` form).
    pub fn libkmod_function(&self) -> &'static str {
        match self {
            LiveError::ProcModules(_) => "kmod_module_new_from_loaded",
            LiveError::NoSysDir(_)
            | LiveError::BadCoresize { .. }
            | LiveError::ProcModulesLine { .. }
            | LiveError::NotListed { .. } => "kmod_module_get_size",
            LiveError::OpenAttr(_)
            | LiveError::ReadAttr(_)
            | LiveError::UnknownInitstate { .. } => "kmod_module_get_initstate",
            LiveError::BadRefcnt { .. } => "kmod_module_get_refcnt",
            LiveError::Holders(_) => "kmod_module_get_holders",
        }
    }

    /// What kmod's getter returns on this failure: the negative errno, except for a
    /// malformed `coresize`, where kmod returns 0.
    pub fn kmod_value(&self) -> i64 {
        match self {
            LiveError::BadCoresize { .. } => 0,
            e => -i64::from(e.errno()),
        }
    }
}

/// Decides whether a module name is built in (the `modules.builtin.bin` lookup of the
/// selected module directory). The default knows no built-in modules.
pub type BuiltinCheck<'a> = Box<dyn Fn(&[u8]) -> bool + 'a>;

/// Reads live module state through a [`Root`].
pub struct LiveModules<'a> {
    root: &'a Root,
    builtin: Option<BuiltinCheck<'a>>,
}

impl std::fmt::Debug for LiveModules<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveModules")
            .field("root", self.root)
            .field("builtin", &self.builtin.is_some())
            .finish()
    }
}

impl<'a> LiveModules<'a> {
    pub fn new(root: &'a Root) -> Self {
        LiveModules {
            root,
            builtin: None,
        }
    }

    /// Install the built-in check used by [`LiveModules::initstate`] step 1.
    // TODO: modprobe/rmmod plug the modules.builtin.bin index lookup in here.
    pub fn with_builtin(mut self, check: impl Fn(&[u8]) -> bool + 'a) -> Self {
        self.builtin = Some(Box::new(check));
        self
    }

    /// The root this reader uses.
    pub fn root(&self) -> &Root {
        self.root
    }

    fn host(&self, p: &Path) -> PathBuf {
        self.root.unrooted(p).into_owned()
    }

    /// The raw text of `/proc/modules`.
    pub fn proc_modules_text(&self) -> Result<Vec<u8>, LiveError> {
        self.root
            .read(&self.root.proc_modules())
            .map_err(LiveError::ProcModules)
    }

    /// kmod's list of loaded modules: `/proc/modules` order (newest first), names
    /// normalised; `None` marks a line without a name (see [`loaded_names`]).
    pub fn loaded(&self) -> Result<Vec<Option<Vec<u8>>>, LiveError> {
        Ok(loaded_names(&self.proc_modules_text()?))
    }

    /// All of `/proc/modules`, parsed strictly.
    pub fn proc_modules(&self) -> Result<Vec<ProcModule>, ProcReadError> {
        let text = self.proc_modules_text()?;
        Ok(parse_proc_modules(&text)?)
    }

    /// Is the module built in (per the installed check)?
    pub fn is_builtin(&self, name: &[u8]) -> bool {
        self.builtin.as_ref().is_some_and(|f| f(name))
    }

    /// Does `/sys/module/NAME` exist as a directory?
    pub fn has_sys_dir(&self, name: &[u8]) -> bool {
        self.root.is_dir(&self.root.sys_module_dir(name))
    }

    /// The module's state (spec §1.8): built in (per the check), else
    /// `/sys/module/NAME/initstate`, else `Coming` if only the directory exists.
    /// `Err` with errno ENOENT (not [`LiveError::reported`]) means "not loaded".
    pub fn initstate(&self, name: &[u8]) -> Result<InitState, LiveError> {
        if self.is_builtin(name) {
            return Ok(InitState::Builtin);
        }
        let path = self.root.sys_module_attr(name, "initstate");
        let file = match self.root.open(&path) {
            Ok(f) => f,
            Err(e) => {
                if self.has_sys_dir(name) {
                    return Ok(InitState::Coming);
                }
                return Err(LiveError::OpenAttr(e));
            }
        };
        let mut text = Vec::new();
        {
            use std::io::Read;
            file.take(SYSFS_ATTR_MAX as u64)
                .read_to_end(&mut text)
                .map_err(|source| {
                    LiveError::ReadAttr(IoError {
                        path: self.host(&path),
                        source,
                    })
                })?;
        }
        parse_initstate(&text).ok_or_else(|| LiveError::UnknownInitstate {
            module: name.to_vec(),
            path: self.host(&path),
            content: text,
        })
    }

    /// Live or built in.
    pub fn in_kernel(&self, name: &[u8]) -> bool {
        self.initstate(name).is_ok_and(InitState::in_kernel)
    }

    /// `/sys/module/NAME/refcnt`. A missing file (kernel without unloading support, or
    /// built-in code with a sysfs directory) is [`LiveError::OpenAttr`].
    pub fn refcnt(&self, name: &[u8]) -> Result<i64, LiveError> {
        let path = self.root.sys_module_attr(name, "refcnt");
        let text = self
            .root
            .read_limited(&path, SYSFS_ATTR_MAX)
            .map_err(LiveError::OpenAttr)?;
        let v = parse_sysfs_long(&text).ok_or_else(|| LiveError::BadRefcnt {
            module: name.to_vec(),
            path: self.host(&path),
        })?;
        Ok(v.clamp(i64::from(i32::MIN), i64::from(i32::MAX)))
    }

    /// The names in `/sys/module/NAME/holders/`, in directory-read order, each
    /// normalised with the modname rule.
    pub fn holders(&self, name: &[u8]) -> Result<Vec<Vec<u8>>, LiveError> {
        let path = self.root.sys_module_holders(name);
        let names = self
            .root
            .read_dir_names(&path)
            .map_err(LiveError::Holders)?;
        Ok(names
            .iter()
            .map(|n| crate::name::modname_from_path(n.as_bytes()))
            .collect())
    }

    /// The module's size: `/sys/module/NAME/coresize`, or, without that file, the SIZE
    /// column of `/proc/modules`. Fails when `/sys/module/NAME` does not exist.
    pub fn size(&self, name: &[u8]) -> Result<i64, LiveError> {
        let dir = self.root.sys_module_dir(name);
        self.root.metadata(&dir).map_err(LiveError::NoSysDir)?;
        let core = self.root.sys_module_attr(name, "coresize");
        if let Ok(text) = self.root.read_limited(&core, SYSFS_ATTR_MAX) {
            return parse_sysfs_long(&text).ok_or_else(|| LiveError::BadCoresize {
                module: name.to_vec(),
                path: self.host(&dir),
            });
        }
        let text = self.proc_modules_text()?;
        match proc_modules_size(&text, name) {
            ProcSize::Found(v) => Ok(v),
            ProcSize::NotListed => Err(LiveError::NotListed {
                module: name.to_vec(),
            }),
            ProcSize::BadLine(line) => Err(LiveError::ProcModulesLine {
                module: name.to_vec(),
                line,
            }),
        }
    }

    /// The in-kernel decompressor named by `/sys/module/compression` (absent → none).
    pub fn kernel_compression(&self) -> KernelCompression {
        match self
            .root
            .read_limited(&self.root.sys_module_compression(), SYSFS_ATTR_MAX)
        {
            Ok(t) => parse_kernel_compression(&t),
            Err(_) => KernelCompression::None,
        }
    }
}

/// Reading and strictly parsing `/proc/modules`.
#[derive(Debug, thiserror::Error)]
pub enum ProcReadError {
    #[error(transparent)]
    Read(#[from] LiveError),
    #[error(transparent)]
    Parse(#[from] ProcModulesError),
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn proc_line_roundtrip() {
        let l = b"fat 86016 2 vfat,msdos, Live 0xffffffffc0b10000";
        let m = parse_proc_modules_line(l, 1).unwrap();
        assert_eq!(m.name, b"fat");
        assert_eq!(m.size, 86016);
        assert_eq!(m.refcnt, Some(2));
        assert_eq!(m.users, vec![b"vfat".to_vec(), b"msdos".to_vec()]);
        assert!(!m.permanent);
        assert_eq!(m.state, ProcState::Live);
        assert_eq!(m.address, 0xffffffffc0b10000);
        assert!(m.taints.is_empty());
        assert_eq!(m.to_line(), l.to_vec());

        let l = b"mymod 16384 0 - Live 0xffffffffc0740000 (OE)";
        let m = parse_proc_modules_line(l, 1).unwrap();
        assert_eq!(m.taints, b"OE");
        assert!(m.users.is_empty());
        assert_eq!(m.to_line(), l.to_vec());

        let l = b"perm 4096 1 x,[permanent], Loading 0x0000000000000000 (O+)";
        let m = parse_proc_modules_line(l, 1).unwrap();
        assert!(m.permanent);
        assert_eq!(m.users, vec![b"x".to_vec()]);
        assert_eq!(m.state, ProcState::Loading);
        assert_eq!(m.taints, b"O+");
        assert_eq!(m.to_line(), l.to_vec());

        let l = b"nounload 4096 - - Live 0x0000000000000000";
        let m = parse_proc_modules_line(l, 1).unwrap();
        assert_eq!(m.refcnt, None);
        assert_eq!(m.to_line(), l.to_vec());
    }

    #[test]
    fn proc_line_errors() {
        assert_eq!(
            parse_proc_modules_line(b"fat", 3),
            Err(ProcModulesError::Missing {
                line: 3,
                field: "size"
            })
        );
        assert!(parse_proc_modules_line(b"fat x 0 - Live 0x0", 1).is_err());
        assert!(parse_proc_modules_line(b"fat 1 0 a,b Live 0x0", 1).is_err());
        assert!(parse_proc_modules_line(b"fat 1 0 - Dead 0x0", 1).is_err());
        assert!(parse_proc_modules_line(b"fat 1 0 - Live 12", 1).is_err());
        assert!(parse_proc_modules_line(b"fat 1 0 - Live 0x0 OE", 1).is_err());
        assert!(parse_proc_modules_line(b"fat 1 0 - Live 0x0 (OE) x", 1).is_err());
        let all = parse_proc_modules(b"a 1 0 - Live 0x0\n\nb 2 1 a, Live 0x0\n").unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!(
            parse_proc_modules(b"a 1 0 - Live 0x0\nb\n").unwrap_err(),
            ProcModulesError::Missing {
                line: 2,
                field: "size"
            }
        );
    }

    #[test]
    fn loaded_list() {
        let t = b"vfat 24576 0 - Live 0x0\ncrc32c-intel 1 0 - Live 0x0\n\n";
        assert_eq!(
            loaded_names(t),
            vec![Some(b"vfat".to_vec()), Some(b"crc32c_intel".to_vec()), None]
        );
        assert!(loaded_names(b"").is_empty());
        assert_eq!(loaded_names(b"a"), vec![Some(b"a".to_vec())]);
    }

    #[test]
    fn size_from_proc() {
        let t = b"a 100 0 - Live 0x0\nb x 0 - Live 0x0\nc\n";
        assert_eq!(proc_modules_size(t, b"a"), ProcSize::Found(100));
        assert_eq!(proc_modules_size(t, b"b"), ProcSize::BadLine(2));
        assert_eq!(proc_modules_size(t, b"c"), ProcSize::BadLine(3));
        assert_eq!(proc_modules_size(t, b"d"), ProcSize::NotListed);
    }

    #[test]
    fn sysfs_values() {
        assert_eq!(parse_initstate(b"live\n"), Some(InitState::Live));
        assert_eq!(parse_initstate(b"coming\n"), Some(InitState::Coming));
        assert_eq!(parse_initstate(b"going\n"), Some(InitState::Going));
        assert_eq!(parse_initstate(b"live"), None);
        assert_eq!(parse_initstate(b"unformed\n"), None);
        assert_eq!(parse_sysfs_long(b"3\n"), Some(3));
        assert_eq!(parse_sysfs_long(b"  -1\n"), Some(-1));
        assert_eq!(parse_sysfs_long(b"3"), None, "kmod needs white space after");
        assert_eq!(parse_sysfs_long(b"x\n"), None);
        assert_eq!(parse_sysfs_long(b"\n"), None);
        assert_eq!(
            parse_sysfs_long(&[b'1'; 40]),
            None,
            "cut at 31 bytes, no blank"
        );
        assert_eq!(parse_sysfs_long(b"99999999999999999999 \n"), Some(i64::MAX));
        assert!(InitState::Builtin.in_kernel());
        assert!(!InitState::Coming.in_kernel());
        assert_eq!(parse_kernel_compression(b"xz\n"), KernelCompression::Xz);
        assert_eq!(parse_kernel_compression(b"zstd\n"), KernelCompression::Zstd);
        assert_eq!(parse_kernel_compression(b"gzip\n"), KernelCompression::Gzip);
        assert_eq!(
            parse_kernel_compression(b"lz4\n"),
            KernelCompression::Unknown(b"lz4\n".to_vec())
        );
    }
}
