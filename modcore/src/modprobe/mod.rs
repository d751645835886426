//! modprobe (spec runtime-tools §3): resolve names, build load lists, insert and remove
//! modules, and the query modes.
//!
//! The command-line tool turns its arguments into [`ModprobeOptions`] and calls [`run`]
//! with the [`Root`] to read from, the [`Kernel`] to talk to and an [`Io`] to report
//! through. Nothing here prints: results go to `Io::out` (what kmod writes to stdout),
//! messages to `Io::diag` (`modprobe: LEVEL: text`), early library messages to
//! `Io::library` (`libkmod: func: text`) and explanations to `Io::notes`
//! (`modprobe: NOTE: text`). Only messages at or above the verbosity are handed to the
//! sinks, so a sink may print everything it gets.
//!
//! * [`lookup`]: the indexes and the name → modules chain;
//! * [`plan`]: the load list (dependencies, softdeps), options, actions;
//! * [`insert`]: insertion, install commands;
//! * [`remove`]: `-r`, remove commands, `--remove-holders`;
//! * [`show`]: `-D`/`-v` action lines, `-c`, `--show-modversions`, `--show-exports`.

pub mod insert;
pub mod lookup;
pub mod plan;
pub mod remove;
pub mod show;

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use crate::diag::{show as lossy, Level, Sink};
use crate::explain;
use crate::kernel::Kernel;
use crate::load::LoadOptions;
use crate::modprobe_conf::{self, CommandKind, Dialect, ModprobeConfig};
use crate::procfs::{InitState, LiveModules};
use crate::root::Root;
use lookup::{Found, LookupError, ModDb, ModKey};
use plan::{ModuleFacts, PlanSource};

/// syslog priorities, the scale of kmod's verbosity.
pub const LOG_EMERG: i32 = 0;
pub const LOG_CRIT: i32 = 2;
pub const LOG_ERR: i32 = 3;
pub const LOG_WARNING: i32 = 4;
pub const LOG_NOTICE: i32 = 5;
pub const LOG_INFO: i32 = 6;
pub const LOG_DEBUG: i32 = 7;
/// modprobe's default verbosity: WARNING and more severe messages are printed.
pub const DEFAULT_VERBOSITY: i32 = LOG_WARNING;

/// The syslog priority of a message level (FATAL is kmod's LOG_CRIT).
pub fn priority(level: Level) -> i32 {
    match level {
        Level::Fatal => LOG_CRIT,
        Level::Error => LOG_ERR,
        Level::Warning => LOG_WARNING,
        Level::Notice => LOG_NOTICE,
        Level::Info => LOG_INFO,
        Level::Debug => LOG_DEBUG,
    }
}

/// Is a message of `level` printed at `verbosity`?
pub fn printed(level: Level, verbosity: i32) -> bool {
    priority(level) <= verbosity
}

/// The configuration rules modprobe uses: kmod 30's (`*.alias` files are read) plus
/// `weakdep` (kmod 33+), which kmod 30 reports as a bad line.
pub const DIALECT: Dialect = Dialect {
    weakdep: true,
    alias_files: true,
};

/// Everything a modprobe run needs from the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModprobeOptions {
    /// `-a`: every operand is a module; failures are warnings.
    pub all: bool,
    /// `-r`.
    pub remove: bool,
    /// `--remove-holders` (`--remove-dependencies`): implies `-r` (kmod 34+ HEAD rule).
    pub remove_holders: bool,
    /// `-w MSEC` (0: no waiting).
    pub wait_msec: u64,
    /// `-R`: print what the names resolve to.
    pub resolve_alias: bool,
    /// `--first-time`.
    pub first_time: bool,
    /// `-i`: ignore install/remove commands and softdeps of the named modules.
    pub ignore_commands: bool,
    /// `-b`: blacklist applies to names too.
    pub use_blacklist: bool,
    /// `-f`: force (both force flags; `O_TRUNC` on removal).
    pub force: bool,
    /// `--force-modversion`.
    pub force_modversion: bool,
    /// `--force-vermagic`.
    pub force_vermagic: bool,
    /// `-D`: show what would be loaded, ignoring the loaded state; implies dry run.
    pub show_depends: bool,
    /// `-c`.
    pub show_config: bool,
    /// `--show-modversions` / `--dump-modversions`.
    pub show_modversions: bool,
    /// `--show-exports`.
    pub show_exports: bool,
    /// `-n`.
    pub dry_run: bool,
    /// `-C` paths in order; `None`: the default `modprobe.d` directories.
    pub config_paths: Option<Vec<PathBuf>>,
    /// `-d` (may be empty).
    pub dirname: Option<OsString>,
    /// `-S`; `None`: the running kernel's release.
    pub kernel_version: Option<String>,
    /// kmod's verbosity on the syslog scale: [`DEFAULT_VERBOSITY`], `-q` → 0, each `-v`
    /// one more.
    pub verbosity: i32,
    /// Operands: names, or a name and its parameters.
    pub operands: Vec<Vec<u8>>,
    /// `-k`/`--autoclean`: record every module this call loads in the autoclean registry
    /// (see [`crate::autoclean`]), so `rmmod --all` may remove it once unused.
    pub autoclean: bool,
    /// Seconds since the epoch, for autoclean records (passed in so tests need no clock).
    pub now: u64,
    /// `MODPROBE_OPTIONS` for install/remove commands (kmod exports its `-C`, `-s`, `-q`,
    /// `-v` options there). `None`: inherited unchanged.
    pub child_modprobe_options: Option<OsString>,
}

impl Default for ModprobeOptions {
    fn default() -> Self {
        ModprobeOptions {
            autoclean: false,
            now: 0,
            all: false,
            remove: false,
            remove_holders: false,
            wait_msec: 0,
            resolve_alias: false,
            first_time: false,
            ignore_commands: false,
            use_blacklist: false,
            force: false,
            force_modversion: false,
            force_vermagic: false,
            show_depends: false,
            show_config: false,
            show_modversions: false,
            show_exports: false,
            dry_run: false,
            config_paths: None,
            dirname: None,
            kernel_version: None,
            verbosity: DEFAULT_VERBOSITY,
            operands: Vec::new(),
            child_modprobe_options: None,
        }
    }
}

/// What a run does (spec §3.1 mode selection, first match wins).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    ShowConfig,
    ShowModversions,
    ShowExports,
    Remove,
    InsertAll,
    Insert,
}

impl ModprobeOptions {
    /// The mode these options select.
    pub fn mode(&self) -> Mode {
        if self.show_config {
            Mode::ShowConfig
        } else if self.show_modversions {
            Mode::ShowModversions
        } else if self.show_exports {
            Mode::ShowExports
        } else if self.remove || self.remove_holders {
            Mode::Remove
        } else if self.all {
            Mode::InsertAll
        } else {
            Mode::Insert
        }
    }

    /// Action lines are printed (`-D`, or verbosity above the default).
    pub fn show_actions(&self) -> bool {
        self.show_depends || self.verbosity > DEFAULT_VERBOSITY
    }

    /// No system calls, no commands.
    pub fn effective_dry_run(&self) -> bool {
        self.dry_run || self.show_depends
    }

    /// The loaded state is ignored (`-D`).
    pub fn ignore_loaded(&self) -> bool {
        self.show_depends
    }

    /// The level of kmod's `LOG()` messages: FATAL, or WARNING with `-a`.
    pub fn log_level(&self) -> Level {
        if self.all {
            Level::Warning
        } else {
            Level::Fatal
        }
    }
}

/// Where a run reports.
pub struct Io<'a> {
    /// Results (kmod's stdout).
    pub out: &'a mut dyn Write,
    /// Tool messages: `modprobe: <LEVEL>: <text>`.
    pub diag: &'a mut dyn Sink,
    /// Library messages raised before the tool's printer exists (configuration and
    /// kernel command line): printed as `libkmod: <text>`, where the text starts with the
    /// libkmod function name. Every such message is handed over; the tool applies
    /// `KMOD_LOG`.
    pub library: &'a mut dyn Sink,
    /// Explanation lines (`modprobe: NOTE: <text>`), given after the error they explain,
    /// only when that error was printed. The level is the one of that error.
    pub notes: &'a mut dyn Sink,
}

/// How a run ended. The tool maps it to the exit status (0 / 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Success,
    Failure,
}

impl Outcome {
    /// The exit status kmod uses.
    pub fn exit_code(self) -> u8 {
        match self {
            Outcome::Success => 0,
            Outcome::Failure => 1,
        }
    }
}

/// A FATAL message was printed: kmod exits at once with status 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Abort;

/// What the pool remembers about a module object besides its identity.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct PoolEntry {
    builtin: bool,
    install_override: Option<Vec<u8>>,
    remove_override: Option<Vec<u8>>,
}

/// One failed insertion, kept for the explanation after kmod's error line.
#[derive(Debug, Clone)]
struct FailureRecord {
    name: Vec<u8>,
    path: Option<PathBuf>,
    shown_path: Option<Vec<u8>>,
    errno: i32,
    from_kernel: bool,
    kmsg: Option<Vec<explain::KmsgRecord>>,
}

/// A sink that passes on messages at or above the verbosity.
struct Threshold<'s> {
    inner: &'s mut dyn Sink,
    verbosity: i32,
}

impl Sink for Threshold<'_> {
    fn emit(&mut self, level: Level, message: String) {
        if printed(level, self.verbosity) {
            self.inner.emit(level, message);
        }
    }
}

/// The state of one run.
pub(crate) struct Ctx<'a, 'io> {
    opts: &'a ModprobeOptions,
    root: &'a Root,
    kernel: &'a dyn Kernel,
    release: String,
    config: ModprobeConfig,
    db: ModDb,
    pool: HashMap<ModKey, PoolEntry>,
    io: &'a mut Io<'io>,
    load_opts: LoadOptions,
    failure: Option<FailureRecord>,
}

/// Run modprobe.
pub fn run(opts: &ModprobeOptions, root: &Root, kernel: &dyn Kernel, io: &mut Io<'_>) -> Outcome {
    match run_inner(opts, root, kernel, io) {
        Ok(true) => Outcome::Success,
        Ok(false) | Err(Abort) => Outcome::Failure,
    }
}

fn run_inner(
    opts: &ModprobeOptions,
    root: &Root,
    kernel: &dyn Kernel,
    io: &mut Io<'_>,
) -> Result<bool, Abort> {
    let mode = opts.mode();
    if opts.operands.is_empty() && mode != Mode::ShowConfig {
        if printed(Level::Error, opts.verbosity) {
            io.diag
                .emit(Level::Error, "missing parameters. See -h.".to_string());
        }
        return Ok(false);
    }

    let release = match &opts.kernel_version {
        Some(v) => v.clone(),
        None => match kernel.release() {
            Ok(r) => r,
            Err(e) => {
                if printed(Level::Fatal, opts.verbosity) {
                    io.diag
                        .emit(Level::Fatal, format!("uname() failed: {}", e.strerror()));
                }
                return Ok(false);
            }
        },
    };
    let moddir = root.moddir(opts.dirname.as_deref(), &release);
    let shown: Vec<u8> = match opts.dirname {
        Some(_) => moddir.as_os_str().as_bytes().to_vec(),
        None => root.unrooted(&moddir).as_os_str().as_bytes().to_vec(),
    };
    let abs_root = (opts.dirname.is_none() && !root.is_host()).then(|| root.clone());

    // The library context: configuration and kernel command line, reported through the
    // library's own printer.
    let paths = opts
        .config_paths
        .clone()
        .unwrap_or_else(|| root.modprobe_d_dirs());
    let loaded = modprobe_conf::load(root, Some(&moddir), &paths, DIALECT);
    for e in &loaded.errors {
        io.library
            .emit(Level::Error, format!("{}: {}", e.libkmod_function(), e));
    }

    let mut load_opts = {
        let mut t = Threshold {
            inner: &mut *io.diag,
            verbosity: opts.verbosity,
        };
        LoadOptions::for_root(root, &mut t)
    };
    load_opts.force_modversion = opts.force || opts.force_modversion;
    load_opts.force_vermagic = opts.force || opts.force_vermagic;

    let mut ctx = Ctx {
        opts,
        root,
        kernel,
        release,
        config: loaded.config,
        db: ModDb::new(moddir, shown, abs_root),
        pool: HashMap::new(),
        io,
        load_opts,
        failure: None,
    };

    let ok = match mode {
        Mode::ShowConfig => show::show_config(&mut ctx),
        Mode::ShowModversions => show::show_modversions(&mut ctx, &opts.operands[0])?,
        Mode::ShowExports => show::show_exports(&mut ctx, &opts.operands[0])?,
        Mode::Remove => {
            let mut ok = true;
            for name in &opts.operands {
                if remove::rmmod(&mut ctx, name)? < 0 {
                    ok = false;
                }
            }
            ok
        }
        Mode::InsertAll => {
            let mut ok = true;
            for name in &opts.operands {
                if insert::insmod(&mut ctx, name, None)? < 0 {
                    ok = false;
                }
            }
            ok
        }
        Mode::Insert => {
            let extra = crate::load::params_from_args(&opts.operands[1..]);
            insert::insmod(&mut ctx, &opts.operands[0], Some(&extra))? >= 0
        }
    };
    let _ = ctx.io.out.flush();
    Ok(ok)
}

impl<'a, 'io> Ctx<'a, 'io> {
    // ----- messages ---------------------------------------------------------------------

    /// Emit a tool message if the verbosity allows; returns whether it was printed.
    fn log(&mut self, level: Level, msg: String) -> bool {
        let p = printed(level, self.opts.verbosity);
        if p {
            self.io.diag.emit(level, msg);
        }
        p
    }

    /// kmod's `LOG()`: FATAL (WARNING with `-a`). A printed FATAL ends the run.
    /// `notes` are computed and given only when the message was printed.
    fn fatal(
        &mut self,
        msg: String,
        notes: impl FnOnce(&Self) -> Vec<String>,
    ) -> Result<(), Abort> {
        let level = self.opts.log_level();
        if self.log(level, msg) {
            let lines = notes(self);
            self.notes(level, lines);
            if level == Level::Fatal {
                let _ = self.io.out.flush();
                return Err(Abort);
            }
        }
        Ok(())
    }

    fn notes(&mut self, level: Level, lines: Vec<String>) {
        for l in lines {
            self.io.notes.emit(level, l);
        }
    }

    /// Report problems the indexes met (damaged files).
    fn db_problems(&mut self) {
        for p in self.db.take_problems() {
            self.log(Level::Error, p);
        }
    }

    /// Write a result line to stdout and flush it (so that it comes before the output of
    /// a command run next).
    fn print(&mut self, line: &[u8]) {
        let _ = self.io.out.write_all(line);
        let _ = self.io.out.flush();
    }

    // ----- modules ----------------------------------------------------------------------

    /// The lookup chain; found modules are remembered in the pool.
    fn lookup(&mut self, name: &[u8]) -> Result<Vec<Found>, LookupError> {
        let r = lookup::lookup(Some(&self.config), &self.db, name);
        self.db_problems();
        if let Ok(found) = &r {
            for f in found {
                let e = self.pool.entry(f.key.clone()).or_default();
                if f.builtin {
                    e.builtin = true;
                }
                match &f.command {
                    Some((CommandKind::Install, c)) => e.install_override = Some(c.clone()),
                    Some((CommandKind::Remove, c)) => e.remove_override = Some(c.clone()),
                    None => {}
                }
            }
        }
        r
    }

    fn is_builtin(&self, key: &ModKey) -> bool {
        self.pool.get(key).is_some_and(|e| e.builtin) || self.db.is_builtin(&key.name)
    }

    /// The module's state (spec §1.8); `None`: not loaded (or unreadable).
    fn initstate(&mut self, key: &ModKey) -> Option<InitState> {
        if self.is_builtin(key) {
            return Some(InitState::Builtin);
        }
        match LiveModules::new(self.root).initstate(&key.name) {
            Ok(s) => Some(s),
            Err(e) => {
                if e.reported() {
                    self.log(Level::Error, e.to_string());
                }
                None
            }
        }
    }

    /// Live or built in.
    fn in_kernel(&mut self, key: &ModKey) -> bool {
        self.initstate(key).is_some_and(InitState::in_kernel)
    }

    fn refcnt(&mut self, name: &[u8]) -> Option<i64> {
        match LiveModules::new(self.root).refcnt(name) {
            Ok(r) => Some(r),
            Err(e) => {
                if e.reported() {
                    self.log(Level::Error, e.to_string());
                }
                None
            }
        }
    }

    fn holders(&mut self, name: &[u8]) -> Vec<Vec<u8>> {
        match LiveModules::new(self.root).holders(name) {
            Ok(h) => h,
            Err(e) => {
                if e.reported() {
                    self.log(Level::Error, e.to_string());
                }
                Vec::new()
            }
        }
    }

    fn facts(&self, key: &ModKey) -> ModuleFacts {
        let pe = self.pool.get(key);
        let install_command = pe.and_then(|e| e.install_override.clone()).or_else(|| {
            self.config
                .install_command(&key.name)
                .map(|c| c.command.clone())
        });
        ModuleFacts {
            install_command,
            path: self.db.module_path(&key.name),
            builtin: self.is_builtin(key),
        }
    }

    fn remove_command(&self, key: &ModKey) -> Option<Vec<u8>> {
        self.pool
            .get(key)
            .and_then(|e| e.remove_override.clone())
            .or_else(|| {
                self.config
                    .remove_command(&key.name)
                    .map(|c| c.command.clone())
            })
    }

    /// Resolve a softdep/weakdep name list with the lookup chain.
    fn resolve_names(&mut self, names: &[Vec<u8>]) -> Vec<ModKey> {
        let mut out = Vec::new();
        for n in names {
            match self.lookup(n) {
                Ok(found) => out.extend(found.into_iter().map(|f| f.key)),
                Err(_) => {
                    self.log(
                        Level::Error,
                        format!(
                            "failed to lookup soft dependency '{}', continuing anyway.",
                            lossy(n)
                        ),
                    );
                }
            }
        }
        out
    }

    // ----- commands ---------------------------------------------------------------------

    /// Run an install/remove command with `/bin/sh -c`, `MODPROBE_MODULE` set to the
    /// module name (never pasted into the command). Returns the exit status, or the
    /// signal as `Err`.
    fn run_command(&mut self, cmd: &[u8], module: &[u8]) -> Result<CommandStatus, std::io::Error> {
        let _ = self.io.out.flush();
        let mut c = std::process::Command::new("/bin/sh");
        c.arg("-c")
            .arg(OsStr::from_bytes(cmd))
            .env("MODPROBE_MODULE", OsStr::from_bytes(module));
        if let Some(v) = &self.opts.child_modprobe_options {
            c.env("MODPROBE_OPTIONS", v);
        }
        let status = c.status()?;
        use std::os::unix::process::ExitStatusExt;
        Ok(match (status.code(), status.signal()) {
            (Some(code), _) => CommandStatus::Exited(code),
            (None, Some(sig)) => CommandStatus::Signaled(sig),
            (None, None) => CommandStatus::Exited(-1),
        })
    }

    // ----- explanations -----------------------------------------------------------------

    fn explain_context(&self) -> explain::Context<'a> {
        let mut c = explain::Context::new(
            self.root,
            explain::Tool::Modprobe,
            Some(self.release.clone()),
        );
        c.moddir = Some(self.db.moddir().to_path_buf());
        c.machine = nix::sys::utsname::uname()
            .ok()
            .map(|u| u.machine().to_string_lossy().into_owned());
        c.euid = effective_uid();
        c
    }
}

/// The effective user id, from `/proc/self/status` (`Uid:` real, effective, ...).
fn effective_uid() -> Option<u32> {
    let text = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = text.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(2)?.parse().ok()
}

/// How an install/remove command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CommandStatus {
    Exited(i32),
    Signaled(i32),
}

impl PlanSource for Ctx<'_, '_> {
    fn deps(&mut self, key: &ModKey) -> Vec<ModKey> {
        let deps = self
            .db
            .dep_line(&key.name)
            .map(|l| {
                l.dep_names_load_order()
                    .into_iter()
                    .map(|n| ModKey::name(&n))
                    .collect()
            })
            .unwrap_or_default();
        self.db_problems();
        deps
    }

    fn softdeps(&mut self, key: &ModKey) -> (Vec<ModKey>, Vec<ModKey>) {
        let Some(sd) = self.config.softdep(&key.name) else {
            return (Vec::new(), Vec::new());
        };
        let (pre, post) = (sd.pre.clone(), sd.post.clone());
        let pre = self.resolve_names(&pre);
        let post = self.resolve_names(&post);
        (pre, post)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn modes_and_levels() {
        let mut o = ModprobeOptions {
            operands: vec![b"x".to_vec()],
            ..ModprobeOptions::default()
        };
        assert_eq!(o.mode(), Mode::Insert);
        o.all = true;
        assert_eq!(o.mode(), Mode::InsertAll);
        assert_eq!(o.log_level(), Level::Warning);
        o.remove_holders = true;
        assert_eq!(o.mode(), Mode::Remove);
        o.show_exports = true;
        assert_eq!(o.mode(), Mode::ShowExports);
        o.show_config = true;
        assert_eq!(o.mode(), Mode::ShowConfig);
        assert!(printed(Level::Warning, DEFAULT_VERBOSITY));
        assert!(!printed(Level::Notice, DEFAULT_VERBOSITY));
        assert!(!printed(Level::Fatal, 1));
        assert!(printed(Level::Fatal, 2));
        assert!(!o.show_actions());
        o.verbosity = 5;
        assert!(o.show_actions());
    }
}
