//! `modprobe.d` configuration (spec §2): parsing, collection, lookups, `modprobe -c`.
//!
//! * Parsing is pure: [`ModprobeConfig::parse_file`] takes a file name (for messages) and
//!   its bytes; [`ModprobeConfig::add_cmdline`] takes a parsed kernel command line.
//! * Collection does the I/O, through a [`Root`]: [`list_config_files`] finds the files
//!   in kmod's global name order and [`load`] reads and parses them plus `/proc/cmdline`.
//! * Lookups answer modprobe's questions with kmod's first-match / all-match rules.
//! * [`ModprobeConfig::show_config`] renders the configuration part of `modprobe -c`.
//!
//! Nothing here prints: problems come back as [`ConfigError`] values (all of them are
//! ERROR-level library messages in kmod) and the parse always carries on.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use crate::cmdline::{self, Cmdline, CmdlineEntry, CmdlineError};
use crate::fnmatch::fnmatch;
use crate::root::{IoError, Root};

// ===================================================================================
// Values
// ===================================================================================

/// Which kmod release's configuration rules to follow (spec §0.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Dialect {
    /// `weakdep` lines and `modules.weakdep` are understood (kmod 33+); otherwise a
    /// `weakdep` line is a bad line.
    pub weakdep: bool,
    /// Files ending in `.alias` are read like `.conf` files (kmod ≤ 32).
    pub alias_files: bool,
}

impl Dialect {
    /// Debian 12's kmod 30 (the project's target).
    pub const KMOD30: Dialect = Dialect {
        weakdep: false,
        alias_files: true,
    };
    /// kmod 34.
    pub const KMOD34: Dialect = Dialect {
        weakdep: true,
        alias_files: false,
    };
}

impl Default for Dialect {
    fn default() -> Self {
        Dialect::KMOD30
    }
}

/// Where an entry came from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Origin {
    /// A configuration file (as named in messages) and the physical line number of the
    /// last line of the logical line.
    File { path: PathBuf, line: u32 },
    /// The kernel command line.
    Cmdline,
}

/// `alias PATTERN MODNAME`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alias {
    /// Normalised; may be an fnmatch pattern.
    pub pattern: Vec<u8>,
    /// Normalised.
    pub modname: Vec<u8>,
    pub origin: Origin,
}

/// `options NAME TEXT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModOptions {
    /// Normalised module name or alias (compared literally).
    pub modname: Vec<u8>,
    /// Verbatim, except that every TAB became a space; leading blanks kept.
    pub options: Vec<u8>,
    pub origin: Origin,
}

/// `install NAME COMMAND` / `remove NAME COMMAND`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    /// Normalised; may be an fnmatch pattern.
    pub modname: Vec<u8>,
    /// The raw rest of the line.
    pub command: Vec<u8>,
    pub origin: Origin,
}

/// `blacklist MODNAME` (or a `modprobe.blacklist=` piece).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blacklist {
    pub modname: Vec<u8>,
    pub origin: Origin,
}

/// `softdep NAME pre: A B post: C D`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SoftDep {
    /// Normalised; may be an fnmatch pattern.
    pub modname: Vec<u8>,
    /// Names as written (not normalised; they are looked up later).
    pub pre: Vec<Vec<u8>>,
    pub post: Vec<Vec<u8>>,
    pub origin: Origin,
}

/// `weakdep NAME A B ...` (kmod 33+).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WeakDep {
    pub modname: Vec<u8>,
    pub deps: Vec<Vec<u8>>,
    pub origin: Origin,
}

/// Which list a command found by name came from (lookup step 4, spec §3.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CommandKind {
    Install,
    Remove,
}

/// Everything `modprobe.d` (and the kernel command line) configures, in stored order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ModprobeConfig {
    pub aliases: Vec<Alias>,
    pub options: Vec<ModOptions>,
    pub install_commands: Vec<Command>,
    pub remove_commands: Vec<Command>,
    pub blacklist: Vec<Blacklist>,
    pub softdeps: Vec<SoftDep>,
    pub weakdeps: Vec<WeakDep>,
}

/// A problem kmod reports while reading the configuration. All are ERROR-level library
/// messages; none stops the parse.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Unknown directive, missing argument or bad bracket use in a name.
    #[error("{} line {line}: ignoring bad line starting with '{}'", path.display(), show(word))]
    BadLine {
        path: PathBuf,
        line: u32,
        word: Vec<u8>,
    },
    /// `include` / `config` (the message carries no line number).
    #[error("{}: command {} is deprecated and not parsed anymore", path.display(), show(command))]
    Deprecated {
        path: PathBuf,
        line: u32,
        command: Vec<u8>,
    },
    /// A directory inside a configuration directory.
    #[error("Directories inside directories are not supported: {}", path.display())]
    NestedDirectory { path: PathBuf },
    /// A configuration file, or a directory of them, that every user may write: whoever
    /// writes there decides what modprobe loads and which commands it runs as root.
    /// Reported (kmod 30 says nothing), the file is still read.
    #[error("{} is world-writable: any user can change what modprobe loads and runs", path.display())]
    WorldWritable { path: PathBuf },
    /// A bad `mod.param` word on the kernel command line.
    #[error(transparent)]
    Cmdline(#[from] CmdlineError),
    /// `/proc/cmdline` exists but could not be read.
    #[error("could not read from '/proc/cmdline': {}", .0.strerror())]
    CmdlineRead(IoError),
}

impl ConfigError {
    /// The libkmod function whose message this is (for `libkmod: <func>: <message>`).
    pub fn libkmod_function(&self) -> &'static str {
        match self {
            ConfigError::BadLine { .. } | ConfigError::Deprecated { .. } => "kmod_config_parse",
            ConfigError::NestedDirectory { .. } => "conf_files_filter_out",
            ConfigError::WorldWritable { .. } => "conf_files_list",
            ConfigError::Cmdline(e) => e.libkmod_function(),
            ConfigError::CmdlineRead(_) => "kmod_config_parse_kcmdline",
        }
    }
}

fn show(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

// ===================================================================================
// Parsing
// ===================================================================================

/// Split a file into logical lines, kmod style (spec §2.2): backslash-newline joins
/// lines, a backslash before any other byte is dropped and that byte kept literally, a
/// backslash as the very last byte is dropped. Returns `(line number of the last
/// physical line, text)`; the text stops at a NUL byte like kmod's C strings.
pub fn logical_lines(text: &[u8]) -> Vec<(u32, Vec<u8>)> {
    let mut out = Vec::new();
    let mut linenum: u32 = 0;
    let mut cur: Vec<u8> = Vec::new();
    let mut lines_in_cur: u32 = 0;
    let mut i = 0;
    loop {
        let Some(&c) = text.get(i) else {
            if !cur.is_empty() {
                linenum = linenum.saturating_add(lines_in_cur + 1);
                out.push((linenum, std::mem::take(&mut cur)));
            }
            break;
        };
        i += 1;
        match c {
            b'\n' => {
                linenum = linenum.saturating_add(lines_in_cur + 1);
                lines_in_cur = 0;
                out.push((linenum, std::mem::take(&mut cur)));
            }
            b'\\' => match text.get(i) {
                Some(b'\n') => {
                    i += 1;
                    lines_in_cur += 1;
                }
                Some(&n) => {
                    i += 1;
                    cur.push(n);
                }
                // kmod 30 stores a stray 0xFF here; 34+ (and we) drop the backslash.
                None => {}
            },
            _ => cur.push(c),
        }
    }
    for (_, l) in &mut out {
        if let Some(nul) = l.iter().position(|&c| c == 0) {
            l.truncate(nul);
        }
    }
    out
}

/// `strtok_r` over a byte string with the delimiters space and tab.
struct Tokens<'a> {
    s: &'a [u8],
    pos: usize,
}

impl<'a> Tokens<'a> {
    fn new(s: &'a [u8]) -> Self {
        Tokens { s, pos: 0 }
    }

    /// The next space/tab-separated token; the single delimiter ending it is consumed.
    fn next_token(&mut self) -> Option<&'a [u8]> {
        let s = self.s;
        let mut i = self.pos;
        while i < s.len() && (s[i] == b' ' || s[i] == b'\t') {
            i += 1;
        }
        if i >= s.len() {
            self.pos = s.len();
            return None;
        }
        let start = i;
        while i < s.len() && s[i] != b' ' && s[i] != b'\t' {
            i += 1;
        }
        let tok = &s[start..i];
        self.pos = if i < s.len() { i + 1 } else { i };
        Some(tok)
    }

    /// Everything after the last token's delimiter, if non-empty (kmod's
    /// `strtok_r(NULL, "\0", ...)`).
    fn rest(&mut self) -> Option<&'a [u8]> {
        let r = &self.s[self.pos.min(self.s.len())..];
        self.pos = self.s.len();
        (!r.is_empty()).then_some(r)
    }
}

fn is_c_space(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}

/// Split a softdep/weakdep tail into words the way kmod does: white-space separated,
/// with kmod's quirk that a tail starting with exactly one blank keeps that blank on its
/// first word (so `softdep m  pre: a` — two blanks after the name — loses its `pre:`).
fn dep_words(line: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut p = 0usize;
    let mut was_space = false;
    let mut s = 0usize;
    loop {
        let at_end = s >= line.len();
        if !at_end {
            let c = line[s];
            if !is_c_space(c) {
                was_space = false;
                s += 1;
                continue;
            }
            if was_space {
                p = s + 1;
                s += 1;
                continue;
            }
            was_space = true;
            if p >= s {
                s += 1;
                continue;
            }
        }
        if !at_end || !was_space {
            out.push(line.get(p..s).unwrap_or(&[]));
        }
        if at_end {
            break;
        }
        p = s + 1;
        s += 1;
    }
    out
}

/// Parse a softdep tail into `(pre, post)`.
fn parse_softdep(tail: &[u8]) -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
    #[derive(PartialEq)]
    enum Mode {
        None,
        Pre,
        Post,
    }
    let mut mode = Mode::None;
    let (mut pre, mut post) = (Vec::new(), Vec::new());
    for w in dep_words(tail) {
        match w {
            b"pre:" => mode = Mode::Pre,
            b"post:" => mode = Mode::Post,
            _ => match mode {
                Mode::Pre => pre.push(w.to_vec()),
                Mode::Post => post.push(w.to_vec()),
                Mode::None => {}
            },
        }
    }
    (pre, post)
}

/// Normalise a configuration name (dashes → underscores outside `[...]`); `None` for
/// a missing name or bad bracket use (kmod's `underscores()`).
fn underscores(name: Option<&[u8]>) -> Option<Vec<u8>> {
    crate::name::normalize_alias(name?).ok()
}

impl ModprobeConfig {
    /// An empty configuration.
    pub fn new() -> Self {
        Self::default()
    }

    /// Parse one configuration file. `path` names the file in messages (kmod uses
    /// `DIR/NAME`, or the path itself for a file given directly). Entries are appended;
    /// problems are returned (the parse never stops early).
    pub fn parse_file(&mut self, path: &Path, text: &[u8], dialect: Dialect) -> Vec<ConfigError> {
        let mut errors = Vec::new();
        for (line, l) in logical_lines(text) {
            if matches!(l.first(), None | Some(b'#')) {
                continue;
            }
            let mut t = Tokens::new(&l);
            let Some(cmd) = t.next_token() else {
                continue;
            };
            let origin = Origin::File {
                path: path.to_path_buf(),
                line,
            };
            let ok = match cmd {
                b"alias" => {
                    let pattern = underscores(t.next_token());
                    let modname = underscores(t.next_token());
                    match (pattern, modname) {
                        (Some(pattern), Some(modname)) => {
                            self.aliases.push(Alias {
                                pattern,
                                modname,
                                origin,
                            });
                            true
                        }
                        _ => false,
                    }
                }
                b"blacklist" => match underscores(t.next_token()) {
                    Some(modname) => {
                        self.blacklist.push(Blacklist { modname, origin });
                        true
                    }
                    None => false,
                },
                b"options" => {
                    let modname = underscores(t.next_token());
                    match (modname, t.rest()) {
                        (Some(modname), Some(opts)) => {
                            self.push_options(modname, opts, origin);
                            true
                        }
                        _ => false,
                    }
                }
                b"install" | b"remove" => {
                    let modname = underscores(t.next_token());
                    match (modname, t.rest()) {
                        (Some(modname), Some(command)) => {
                            let c = Command {
                                modname,
                                command: command.to_vec(),
                                origin,
                            };
                            if cmd == b"install" {
                                self.install_commands.push(c);
                            } else {
                                self.remove_commands.push(c);
                            }
                            true
                        }
                        _ => false,
                    }
                }
                b"softdep" => {
                    let modname = underscores(t.next_token());
                    match (modname, t.rest()) {
                        (Some(modname), Some(tail)) => {
                            let (pre, post) = parse_softdep(tail);
                            self.softdeps.push(SoftDep {
                                modname,
                                pre,
                                post,
                                origin,
                            });
                            true
                        }
                        _ => false,
                    }
                }
                b"weakdep" if dialect.weakdep => {
                    let modname = underscores(t.next_token());
                    match (modname, t.rest()) {
                        (Some(modname), Some(tail)) => {
                            let deps = dep_words(tail).into_iter().map(<[u8]>::to_vec).collect();
                            self.weakdeps.push(WeakDep {
                                modname,
                                deps,
                                origin,
                            });
                            true
                        }
                        _ => false,
                    }
                }
                b"include" | b"config" => {
                    errors.push(ConfigError::Deprecated {
                        path: path.to_path_buf(),
                        line,
                        command: cmd.to_vec(),
                    });
                    true
                }
                _ => false,
            };
            if !ok {
                errors.push(ConfigError::BadLine {
                    path: path.to_path_buf(),
                    line,
                    word: cmd.to_vec(),
                });
            }
        }
        errors
    }

    fn push_options(&mut self, modname: Vec<u8>, opts: &[u8], origin: Origin) {
        let options = opts
            .iter()
            .map(|&c| if c == b'\t' { b' ' } else { c })
            .collect();
        self.options.push(ModOptions {
            modname,
            options,
            origin,
        });
    }

    /// Append the entries of a parsed kernel command line (after all files, like kmod).
    /// The command line's own errors stay in `cmdline.errors`.
    pub fn add_cmdline(&mut self, cmdline: &Cmdline) {
        for e in &cmdline.entries {
            match e {
                CmdlineEntry::Options { module, options } => {
                    self.push_options(module.clone(), options, Origin::Cmdline)
                }
                CmdlineEntry::Blacklist(m) => self.blacklist.push(Blacklist {
                    modname: m.clone(),
                    origin: Origin::Cmdline,
                }),
            }
        }
    }

    /// Build a configuration from files already in kmod's order plus the raw kernel
    /// command line (pure; see [`load`] for the I/O version).
    pub fn from_sources(
        files: &[(PathBuf, Vec<u8>)],
        cmdline: Option<&[u8]>,
        dialect: Dialect,
    ) -> (ModprobeConfig, Vec<ConfigError>) {
        let mut cfg = ModprobeConfig::new();
        let mut errors = Vec::new();
        for (path, text) in files {
            errors.extend(cfg.parse_file(path, text, dialect));
        }
        if let Some(raw) = cmdline {
            let c = cmdline::parse(raw);
            cfg.add_cmdline(&c);
            errors.extend(c.errors.into_iter().map(ConfigError::Cmdline));
        }
        (cfg, errors)
    }

    // ----- lookups ----------------------------------------------------------------------

    /// Every `alias` whose pattern fnmatches `name`, in stored order (lookup step 1).
    pub fn aliases_matching<'a>(&'a self, name: &'a [u8]) -> impl Iterator<Item = &'a Alias> + 'a {
        self.aliases
            .iter()
            .filter(move |a| fnmatch(&a.pattern, name))
    }

    /// Every `options` entry whose name equals `modname` or the alias the module was
    /// reached through (`alias`: the config alias *pattern* text, or the normalised
    /// requested name for index aliases), in stored order (files, then command line).
    pub fn options_matching<'a>(
        &'a self,
        modname: &'a [u8],
        alias: Option<&'a [u8]>,
    ) -> impl Iterator<Item = &'a ModOptions> + 'a {
        self.options
            .iter()
            .filter(move |o| o.modname == modname || alias.is_some_and(|a| o.modname == a))
    }

    /// The module's configured options string: the matching entries' texts joined with
    /// one space, empty texts skipped (kmod's `kmod_module_get_options`). Empty when
    /// nothing matches.
    pub fn module_options(&self, modname: &[u8], alias: Option<&[u8]>) -> Vec<u8> {
        let mut out = Vec::new();
        for o in self.options_matching(modname, alias) {
            if o.options.is_empty() {
                continue;
            }
            if !out.is_empty() {
                out.push(b' ');
            }
            out.extend_from_slice(&o.options);
        }
        out
    }

    /// The first `install` command whose name fnmatches `modname`.
    pub fn install_command(&self, modname: &[u8]) -> Option<&Command> {
        self.install_commands
            .iter()
            .find(|c| fnmatch(&c.modname, modname))
    }

    /// The first `remove` command whose name fnmatches `modname`.
    pub fn remove_command(&self, modname: &[u8]) -> Option<&Command> {
        self.remove_commands
            .iter()
            .find(|c| fnmatch(&c.modname, modname))
    }

    /// Lookup step 4 (spec §3.4): the first `install` entry whose name is textually
    /// equal to `name`, else the first such `remove` entry.
    pub fn command_named(&self, name: &[u8]) -> Option<(CommandKind, &Command)> {
        if let Some(c) = self.install_commands.iter().find(|c| c.modname == name) {
            return Some((CommandKind::Install, c));
        }
        self.remove_commands
            .iter()
            .find(|c| c.modname == name)
            .map(|c| (CommandKind::Remove, c))
    }

    /// Is `modname` blacklisted (exact match)?
    pub fn is_blacklisted(&self, modname: &[u8]) -> bool {
        self.blacklist.iter().any(|b| b.modname == modname)
    }

    /// The first `softdep` whose name fnmatches `modname`; later ones are ignored
    /// (kmod behaviour, spec §2.3).
    pub fn softdep(&self, modname: &[u8]) -> Option<&SoftDep> {
        self.softdeps.iter().find(|s| fnmatch(&s.modname, modname))
    }

    /// The first `weakdep` whose name fnmatches `modname`.
    pub fn weakdep(&self, modname: &[u8]) -> Option<&WeakDep> {
        self.weakdeps.iter().find(|s| fnmatch(&s.modname, modname))
    }

    // ----- modprobe -c ------------------------------------------------------------------

    /// The configuration part of `modprobe -c` (spec §2.6), including the closing
    /// `# End of configuration files. Dumping indexes now:` block; the index dump
    /// (`modules.alias.bin`, `modules.symbols.bin`) follows it.
    pub fn show_config(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let mut line = |kind: &str, key: &[u8], value: Option<&[u8]>| {
            out.extend_from_slice(kind.as_bytes());
            out.push(b' ');
            out.extend_from_slice(key);
            if let Some(v) = value {
                out.push(b' ');
                out.extend_from_slice(v);
            }
            out.push(b'\n');
        };
        for b in &self.blacklist {
            line("blacklist", &b.modname, None);
        }
        for c in &self.install_commands {
            line("install", &c.modname, Some(&c.command));
        }
        for c in &self.remove_commands {
            line("remove", &c.modname, Some(&c.command));
        }
        for a in &self.aliases {
            line("alias", &a.pattern, Some(&a.modname));
        }
        for o in &self.options {
            line("options", &o.modname, Some(&o.options));
        }
        for s in &self.softdeps {
            let mut v = Vec::new();
            if !s.pre.is_empty() {
                v.extend_from_slice(b"pre: ");
                v.extend_from_slice(&s.pre.join(&b' '));
            }
            if !s.post.is_empty() {
                // No separating space before `post:` (kmod quirk).
                v.extend_from_slice(b"post: ");
                v.extend_from_slice(&s.post.join(&b' '));
            }
            line("softdep", &s.modname, Some(&v));
        }
        for w in &self.weakdeps {
            line("weakdep", &w.modname, Some(&w.deps.join(&b' ')));
        }
        out.extend_from_slice(SHOW_CONFIG_TRAILER);
        out
    }
}

/// What `modprobe -c` prints between the configuration and the index dump.
pub const SHOW_CONFIG_TRAILER: &[u8] = b"\n# End of configuration files. Dumping indexes now:\n\n";

// ===================================================================================
// Collection (I/O through Root)
// ===================================================================================

/// One configuration file to read, in kmod's order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigFile {
    /// The sort key: the file's name (basename).
    pub name: OsString,
    /// The real path to open.
    pub path: PathBuf,
}

fn concat_path(dir: &Path, name: &OsStr) -> PathBuf {
    let mut s = dir.as_os_str().as_bytes().to_vec();
    s.push(b'/');
    s.extend_from_slice(name.as_bytes());
    PathBuf::from(OsString::from_vec(s))
}

/// Adds a file unless one of the same name is already listed; true if it was added.
fn insert_sorted(list: &mut Vec<ConfigFile>, name: OsString, path: PathBuf) -> bool {
    match list.binary_search_by(|f| f.name.as_bytes().cmp(name.as_bytes())) {
        Ok(_) => false, // same name already listed from a higher-precedence place
        Err(i) => {
            list.insert(i, ConfigFile { name, path });
            true
        }
    }
}

/// Mode bit "others may write".
const WORLD_WRITABLE: u32 = 0o002;

fn world_writable(md: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::PermissionsExt;
    md.permissions().mode() & WORLD_WRITABLE != 0
}

fn wanted_name(name: &[u8], dialect: Dialect) -> bool {
    if name.first() == Some(&b'.') || name.len() < 6 {
        return false;
    }
    name.ends_with(b".conf") || (dialect.alias_files && name.ends_with(b".alias"))
}

/// The configuration files kmod would read, in order (spec §2.1): `modules.softdep`
/// (and, with weakdep support, `modules.weakdep`) of `moddir`, then the entries of
/// `paths` (highest precedence first: [`Root::modprobe_d_dirs`], or the `-C` list), all
/// merged into one list sorted byte-wise by file name, where the first file seen with a
/// given name wins. Paths that cannot be `stat()`ed are skipped silently; a path that is
/// not a directory is taken as a file; only top-level `*.conf` (and with kmod 30
/// `*.alias`) entries not starting with `.` are used; directories among them are
/// reported, and so are world-writable directories and used files (they are still
/// read).
pub fn list_config_files(
    root: &Root,
    moddir: Option<&Path>,
    paths: &[PathBuf],
    dialect: Dialect,
) -> (Vec<ConfigFile>, Vec<ConfigError>) {
    let mut list = Vec::new();
    let mut errors = Vec::new();
    if let Some(moddir) = moddir {
        for n in ["modules.softdep", "modules.weakdep"] {
            if n == "modules.weakdep" && !dialect.weakdep {
                continue;
            }
            let n = OsString::from(n);
            let p = concat_path(moddir, &n);
            insert_sorted(&mut list, n, p);
        }
    }
    for path in paths {
        let Ok(md) = root.metadata(path) else {
            continue;
        };
        let unsafe_mode = world_writable(&md);
        if !md.is_dir() {
            let name = path
                .file_name()
                .map(OsStr::to_os_string)
                .unwrap_or_else(|| path.as_os_str().to_os_string());
            if insert_sorted(&mut list, name, path.clone()) && unsafe_mode {
                errors.push(ConfigError::WorldWritable {
                    path: root.unrooted(path).into_owned(),
                });
            }
            continue;
        }
        let Ok(names) = root.read_dir_names(path) else {
            continue;
        };
        if unsafe_mode {
            errors.push(ConfigError::WorldWritable {
                path: root.unrooted(path).into_owned(),
            });
        }
        for name in names {
            if !wanted_name(name.as_bytes(), dialect) {
                continue;
            }
            let full = concat_path(path, &name);
            if root.is_dir(&full) {
                errors.push(ConfigError::NestedDirectory {
                    path: root.unrooted(&full).into_owned(),
                });
                continue;
            }
            let unsafe_mode = root.metadata(&full).is_ok_and(|m| world_writable(&m));
            if insert_sorted(&mut list, name, full.clone()) && unsafe_mode {
                errors.push(ConfigError::WorldWritable {
                    path: root.unrooted(&full).into_owned(),
                });
            }
        }
    }
    (list, errors)
}

/// A configuration read from the system.
#[derive(Debug, Default)]
pub struct LoadedConfig {
    pub config: ModprobeConfig,
    /// In kmod's order: directory listing problems, file problems, command line.
    pub errors: Vec<ConfigError>,
    /// The files that were read, in order.
    pub files: Vec<ConfigFile>,
}

/// Read the configuration like kmod's context constructor: the files of
/// [`list_config_files`] (unreadable ones skipped silently), then `/proc/cmdline`
/// (missing: silently nothing). Pass `paths = &[]` for the tools that read no
/// `modprobe.d` (insmod, rmmod, lsmod, modinfo) and `moddir = None` to skip
/// `modules.softdep`.
pub fn load(
    root: &Root,
    moddir: Option<&Path>,
    paths: &[PathBuf],
    dialect: Dialect,
) -> LoadedConfig {
    let (files, mut errors) = list_config_files(root, moddir, paths, dialect);
    let mut config = ModprobeConfig::new();
    for f in &files {
        let Ok(text) = root.read(&f.path) else {
            continue;
        };
        let shown = root.unrooted(&f.path).into_owned();
        errors.extend(config.parse_file(&shown, &text, dialect));
    }
    match read_cmdline(root) {
        Ok(Some(c)) => {
            config.add_cmdline(&c);
            errors.extend(c.errors.into_iter().map(ConfigError::Cmdline));
        }
        Ok(None) => {}
        Err(e) => errors.push(e),
    }
    LoadedConfig {
        config,
        errors,
        files,
    }
}

/// Read and parse `/proc/cmdline` (at most [`cmdline::CMDLINE_MAX`] bytes). `Ok(None)`
/// when it cannot be opened (kmod only logs that at debug level).
pub fn read_cmdline(root: &Root) -> Result<Option<Cmdline>, ConfigError> {
    let path = root.proc_cmdline();
    let f = match root.open(&path) {
        Ok(f) => f,
        Err(_) => return Ok(None),
    };
    use std::io::Read;
    let mut buf = Vec::new();
    f.take(cmdline::CMDLINE_MAX as u64)
        .read_to_end(&mut buf)
        .map_err(|source| {
            ConfigError::CmdlineRead(IoError {
                path: root.unrooted(&path).into_owned(),
                source,
            })
        })?;
    Ok(Some(cmdline::parse(&buf)))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;

    fn parse(text: &str) -> (ModprobeConfig, Vec<String>) {
        let mut c = ModprobeConfig::new();
        let e = c.parse_file(
            Path::new("/etc/modprobe.d/t.conf"),
            text.as_bytes(),
            Dialect::KMOD30,
        );
        (c, e.iter().map(ToString::to_string).collect())
    }

    #[test]
    fn logical_line_rules() {
        let l = logical_lines(b"a\\\n b\nc\\\\d\ne\\nf\n\ng\\");
        assert_eq!(
            l,
            vec![
                (2, b"a b".to_vec()),
                (3, b"c\\d".to_vec()),
                (4, b"enf".to_vec()),
                (5, b"".to_vec()),
                (6, b"g".to_vec()),
            ]
        );
        assert_eq!(logical_lines(b"x"), vec![(1, b"x".to_vec())]);
        assert_eq!(logical_lines(b"a\0b\n"), vec![(1, b"a".to_vec())]);
        assert!(logical_lines(b"").is_empty());
    }

    #[test]
    fn directives() {
        let (c, e) = parse(
            "alias my-fs msdos\n\
             alias pci:v*d[0-9a-f]-x* some-mod extra tokens\n\
             options my-fs opt_from_alias=1\n\
             options msdos opt_a=1   opt_b=\"x y\"\ttabbed=1\n\
             options msdos opt_c=3 # not a comment\n\
             install nls-cp437 /bin/echo $CMDLINE_OPTS\t; true\n\
             remove nls-cp437 /bin/true\n\
             blacklist pc-spkr extra\n\
             softdep msdos pre: nls_cp437 post: nls-iso8859-1\n\
             softdep x pre: a post: b pre: c\n\
             softdep y a b\n\
             \x20  options   fat   leading=ws\n\
             options fat cont=1 \\\n cont2=2\n",
        );
        assert!(e.is_empty(), "{e:?}");
        let aliases: Vec<_> = c
            .aliases
            .iter()
            .map(|a| (show(&a.pattern), show(&a.modname)))
            .collect();
        assert_eq!(
            aliases,
            vec![
                ("my_fs".to_string(), "msdos".to_string()),
                ("pci:v*d[0-9a-f]_x*".to_string(), "some_mod".to_string()),
            ]
        );
        let opts: Vec<_> = c
            .options
            .iter()
            .map(|o| (show(&o.modname), show(&o.options)))
            .collect();
        assert_eq!(
            opts,
            vec![
                ("my_fs".to_string(), "opt_from_alias=1".to_string()),
                (
                    "msdos".to_string(),
                    "opt_a=1   opt_b=\"x y\" tabbed=1".to_string()
                ),
                ("msdos".to_string(), "opt_c=3 # not a comment".to_string()),
                ("fat".to_string(), "  leading=ws".to_string()),
                ("fat".to_string(), "cont=1  cont2=2".to_string()),
            ]
        );
        assert_eq!(c.install_commands[0].modname, b"nls_cp437");
        assert_eq!(
            c.install_commands[0].command,
            b"/bin/echo $CMDLINE_OPTS\t; true"
        );
        assert_eq!(c.remove_commands[0].command, b"/bin/true");
        assert_eq!(c.blacklist[0].modname, b"pc_spkr");
        assert_eq!(c.softdeps[0].pre, vec![b"nls_cp437".to_vec()]);
        assert_eq!(c.softdeps[0].post, vec![b"nls-iso8859-1".to_vec()]);
        assert_eq!(c.softdeps[1].pre, vec![b"a".to_vec(), b"c".to_vec()]);
        assert_eq!(c.softdeps[1].post, vec![b"b".to_vec()]);
        assert!(c.softdeps[2].pre.is_empty() && c.softdeps[2].post.is_empty());
        assert_eq!(
            c.options[4].origin,
            Origin::File {
                path: PathBuf::from("/etc/modprobe.d/t.conf"),
                line: 14
            }
        );
    }

    #[test]
    fn bad_lines() {
        let (c, e) = parse(
            "# comment\n\
             \n\
             \x20\t \n\
             \x20 # indented comment\n\
             alias onlyone\n\
             alias a-[x b\n\
             options fat\n\
             options fat \n\
             install x\n\
             remove\n\
             softdep m\n\
             blacklist\n\
             frobnicate x\n\
             weakdep a b\n\
             include /etc/foo.conf\n\
             config x\n\
             Alias a b\n",
        );
        assert_eq!(c, ModprobeConfig::default());
        let p = "/etc/modprobe.d/t.conf";
        assert_eq!(
            e,
            vec![
                format!("{p} line 4: ignoring bad line starting with '#'"),
                format!("{p} line 5: ignoring bad line starting with 'alias'"),
                format!("{p} line 6: ignoring bad line starting with 'alias'"),
                format!("{p} line 7: ignoring bad line starting with 'options'"),
                format!("{p} line 8: ignoring bad line starting with 'options'"),
                format!("{p} line 9: ignoring bad line starting with 'install'"),
                format!("{p} line 10: ignoring bad line starting with 'remove'"),
                format!("{p} line 11: ignoring bad line starting with 'softdep'"),
                format!("{p} line 12: ignoring bad line starting with 'blacklist'"),
                format!("{p} line 13: ignoring bad line starting with 'frobnicate'"),
                format!("{p} line 14: ignoring bad line starting with 'weakdep'"),
                format!("{p}: command include is deprecated and not parsed anymore"),
                format!("{p}: command config is deprecated and not parsed anymore"),
                format!("{p} line 17: ignoring bad line starting with 'Alias'"),
            ]
        );
    }

    #[test]
    fn weakdep_dialect() {
        let mut c = ModprobeConfig::new();
        let e = c.parse_file(Path::new("f"), b"weakdep m-x a b  c\n", Dialect::KMOD34);
        assert!(e.is_empty());
        assert_eq!(c.weakdeps[0].modname, b"m_x");
        assert_eq!(
            c.weakdeps[0].deps,
            vec![b"a".to_vec(), b"b".to_vec(), b"c".to_vec()]
        );
        assert_eq!(c.weakdep(b"m_x").map(|w| w.deps.len()), Some(3));
    }

    #[test]
    fn softdep_word_quirks() {
        // Exactly one extra blank after the name glues it to `pre:` (kmod quirk).
        let (c, _) = parse("softdep m  pre: a\nsoftdep n   pre: a\nsoftdep o pre:  a  post:\tb \n");
        assert!(c.softdeps[0].pre.is_empty());
        assert_eq!(c.softdeps[1].pre, vec![b"a".to_vec()]);
        assert_eq!(c.softdeps[2].pre, vec![b"a".to_vec()]);
        assert_eq!(c.softdeps[2].post, vec![b"b".to_vec()]);
        assert_eq!(dep_words(b"a b"), vec![&b"a"[..], b"b"]);
        assert_eq!(dep_words(b" a b"), vec![&b" a"[..], b"b"]);
        assert_eq!(dep_words(b"  a  b  "), vec![&b"a"[..], b"b"]);
        assert!(dep_words(b" ").is_empty());
    }

    #[test]
    fn lookups() {
        let (mut c, _) = parse(
            "alias myfs* msdos\n\
             alias myfs-abc vfat\n\
             alias other fat\n\
             options myfs* x=1\n\
             options myfs-abc y=1\n\
             options msdos a=1\n\
             options msdos b=2\n\
             install snd* /bin/a\n\
             install snd-x /bin/b\n\
             remove rem-only /bin/r\n\
             softdep m* pre: first\n\
             softdep msdos pre: second\n\
             blacklist pcspkr\n",
        );
        let c2 = cmdline::parse(b"msdos.c=3 modprobe.blacklist=floppy,snd-x");
        c.add_cmdline(&c2);
        let m: Vec<_> = c
            .aliases_matching(b"myfs_abc")
            .map(|a| show(&a.modname))
            .collect();
        assert_eq!(m, vec!["msdos", "vfat"]);
        assert_eq!(c.aliases_matching(b"nothing").count(), 0);
        assert_eq!(
            c.module_options(b"msdos", Some(b"myfs*")),
            b"x=1 a=1 b=2 c=3"
        );
        assert_eq!(c.module_options(b"msdos", None), b"a=1 b=2 c=3");
        assert_eq!(c.module_options(b"vfat", Some(b"my_fs")), b"");
        assert_eq!(
            c.install_command(b"snd_x").map(|x| &x.command[..]),
            Some(&b"/bin/a"[..])
        );
        assert_eq!(c.install_command(b"fat"), None);
        assert_eq!(
            c.remove_command(b"rem_only").map(|x| &x.command[..]),
            Some(&b"/bin/r"[..])
        );
        assert_eq!(
            c.command_named(b"snd_x")
                .map(|(k, x)| (k, x.command.clone())),
            Some((CommandKind::Install, b"/bin/b".to_vec()))
        );
        assert_eq!(c.command_named(b"snd_y"), None, "textual, not a pattern");
        assert_eq!(
            c.command_named(b"rem_only").map(|(k, _)| k),
            Some(CommandKind::Remove)
        );
        assert_eq!(
            c.softdep(b"msdos").map(|s| s.pre[0].clone()),
            Some(b"first".to_vec())
        );
        assert!(c.is_blacklisted(b"pcspkr"));
        assert!(c.is_blacklisted(b"floppy"));
        assert!(
            c.is_blacklisted(b"snd-x"),
            "cmdline entries are not normalised"
        );
        assert!(!c.is_blacklisted(b"snd_x"));
    }

    #[test]
    fn show_config_format() {
        let (mut c, _) = parse(
            "alias my-fs msdos\n\
             options msdos opt_a=1\topt_b=2\n\
             softdep msdos pre: nls_cp437 post: nls-iso8859-1\n\
             softdep e\n\
             softdep onlypost post: a b\n\
             install x /bin/true\n\
             remove x /bin/false\n\
             blacklist pcspkr\n",
        );
        // `softdep e` has no tail and is a bad line; add an empty one directly.
        c.softdeps.push(SoftDep {
            modname: b"empty".to_vec(),
            pre: vec![],
            post: vec![],
            origin: Origin::Cmdline,
        });
        c.add_cmdline(&cmdline::parse(b"fat.debug=1 modprobe.blacklist=floppy"));
        let out = String::from_utf8(c.show_config()).unwrap_or_default();
        assert_eq!(
            out,
            "blacklist pcspkr\n\
             blacklist floppy\n\
             install x /bin/true\n\
             remove x /bin/false\n\
             alias my_fs msdos\n\
             options msdos opt_a=1 opt_b=2\n\
             options fat debug=1\n\
             softdep msdos pre: nls_cp437post: nls-iso8859-1\n\
             softdep onlypost post: a b\n\
             softdep empty \n\
             \n\
             # End of configuration files. Dumping indexes now:\n\
             \n"
        );
        assert_eq!(
            ModprobeConfig::new().show_config(),
            b"\n# End of configuration files. Dumping indexes now:\n\n"
        );
    }

    #[test]
    fn never_panics() {
        let mut c = ModprobeConfig::new();
        for b in 0..=255u8 {
            let text = [
                b'a', b'l', b'i', b'a', b's', b' ', b, b' ', b'[', b, b'\\', b'\n', b,
            ];
            let _ = c.parse_file(Path::new("x"), &text, Dialect::KMOD34);
        }
    }
}
