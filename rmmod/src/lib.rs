//! rmmod: remove modules from the kernel (spec runtime-tools §5), plus autoclean
//! (`-a/--all`, §5.1).
//!
//! Thin front end: clap turns the arguments into [`Options`]; modcore reads the live
//! module state, `modcore::explain` adds the lines after a failure and
//! `modcore::autoclean` does the `--all` sweep; [`run`] prints kmod's messages and
//! chooses the exit status.

use std::ffi::{CString, OsString};
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::process::ExitCode;

use clap::{ArgAction, Parser};
use modcore::autoclean::{self, Outcome};
use modcore::cliutil::{self, Syslog};
use modcore::diag::{show, Level, Sink};
use modcore::explain::{self, Context, RemoveFailure, Tool};
use modcore::index::IndexFile;
use modcore::kernel::{DeleteFlags, Errno, Kernel, LinuxKernel};
use modcore::procfs::{InitState, LiveError, LiveModules};
use modcore::root::Root;

const AFTER_HELP: &str = "\
Autoclean (-a/--all):
  Modules loaded with 'insmod -k' or 'modprobe -k' (--autoclean) are recorded in
  /run/kmod-rs/autoclean. 'rmmod --all' removes every recorded module that is unused
  (reference count 0, no holders) and was already found unused by an earlier
  'rmmod --all' at least --idle=SECONDS ago (default 60); --idle=0 removes unused
  ones at once. It repeats until nothing more can go. Modules loaded without -k are
  never touched; a recorded module that is in use is kept and its idle time starts
  again; records of modules that are no longer loaded are dropped. Silent unless
  something fails (add -v to see what it does), so it is safe to run from cron,
  e.g. every minute.";

#[derive(Parser, Debug)]
#[command(
    name = "rmmod",
    disable_version_flag = true,
    infer_long_args = true,
    about = "Remove modules from the Linux kernel",
    override_usage = "rmmod [options] modulename ...\n       rmmod -a [--idle=SECONDS]",
    after_help = AFTER_HELP
)]
struct Cli {
    /// Force the removal: skip the checks and pass O_TRUNC (dangerous; taints the kernel)
    #[arg(short = 'f', long = "force", action = ArgAction::Count)]
    force: u8,
    /// Remove every autoclean module that has been unused long enough (see below)
    #[arg(short = 'a', long = "all", action = ArgAction::Count)]
    all: u8,
    /// With --all: seconds a module must have been unused (default 60)
    #[arg(long = "idle", value_name = "SECONDS", action = ArgAction::Append)]
    idle: Vec<OsString>,
    /// Print messages to syslog instead of standard error
    #[arg(short = 's', long = "syslog", action = ArgAction::Count)]
    syslog: u8,
    /// More messages; repeat for more
    #[arg(short = 'v', long = "verbose", action = ArgAction::Count)]
    verbose: u8,
    /// Show the version
    #[arg(short = 'V', long = "version", action = ArgAction::Count)]
    version: u8,
    /// kmod 30 lists `w` among its options and then refuses it
    #[arg(short = 'w', hide = true, action = ArgAction::Count)]
    wait: u8,
    /// Module names or module files
    #[arg(value_name = "MODULE")]
    operands: Vec<OsString>,
}

/// Long options in option-table order (getopt's ambiguity message).
const LONG_OPTIONS: &[&str] = &[
    "all", "force", "idle", "syslog", "verbose", "version", "help",
];

/// What the command line asks for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Options {
    pub force: bool,
    pub all: bool,
    /// `--idle` as typed (last one wins).
    pub idle: Option<OsString>,
    pub syslog: bool,
    pub verbose: u8,
    pub version: bool,
    pub operands: Vec<OsString>,
}

/// How argument parsing ended.
#[derive(Debug)]
pub enum Parsed {
    Run(Options),
    Help(String),
    Error(String),
}

/// Parse `argv` (with `argv[0]`).
pub fn parse_args(argv: &[OsString]) -> Parsed {
    let argv0 = argv
        .first()
        .map(|a| a.to_string_lossy().into_owned())
        .unwrap_or_else(|| "rmmod".into());
    match Cli::try_parse_from(argv) {
        Ok(c) if c.wait > 0 => {
            let prog = cliutil::prog_name(argv.first().map(OsString::as_os_str), "rmmod");
            Parsed::Error(format!(
                "{prog}: ERROR: unexpected getopt_long() value 'w'."
            ))
        }
        Ok(c) => Parsed::Run(Options {
            force: c.force > 0,
            all: c.all > 0,
            idle: c.idle.last().cloned(),
            syslog: c.syslog > 0,
            verbose: c.verbose,
            version: c.version > 0,
            operands: c.operands,
        }),
        Err(e) => clap_failure(&argv0, argv, e),
    }
}

fn clap_failure(argv0: &str, argv: &[OsString], e: clap::Error) -> Parsed {
    match cliutil::clap_failure(argv0, argv, e, LONG_OPTIONS) {
        cliutil::CliFailure::Help(h) => Parsed::Help(h),
        cliutil::CliFailure::Error(m) => Parsed::Error(m),
    }
}

/// Everything rmmod touches, so tests can substitute fixtures.
pub struct Env<'a> {
    pub root: &'a Root,
    pub kernel: &'a dyn Kernel,
    /// Seconds since the epoch (autoclean idle times).
    pub now: u64,
    /// Effective user id (explanations).
    pub euid: Option<u32>,
}

/// `rmmod` entry point: `args` includes `argv[0]`.
pub fn main_with_args<I: IntoIterator<Item = OsString>>(args: I) -> ExitCode {
    let argv: Vec<OsString> = args.into_iter().collect();
    let root = Root::host();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let env = Env {
        root: &root,
        kernel: &LinuxKernel,
        now,
        euid: Some(nix::unistd::geteuid().as_raw()),
    };
    let code = run(
        &argv,
        &env,
        &mut std::io::stdout().lock(),
        &mut std::io::stderr().lock(),
    );
    ExitCode::from(code)
}

/// Prints `<prog>: <LEVEL>: <text>` at or above the threshold, to stderr or syslog.
struct Printer<'a> {
    prog: String,
    threshold: Level,
    syslog: Option<Syslog>,
    err: &'a mut dyn Write,
}

impl Printer<'_> {
    fn notes(&mut self, lines: &[String]) {
        for l in lines {
            match &self.syslog {
                Some(s) => s.send(Level::Error, &format!("{}: {l}", explain::NOTE_LEVEL)),
                None => {
                    let _ = writeln!(self.err, "{}: {}: {l}", self.prog, explain::NOTE_LEVEL);
                }
            }
        }
    }

    /// A library error from reading live state, when kmod prints it.
    fn live(&mut self, e: &LiveError) {
        if e.reported() {
            self.emit(Level::Error, e.to_string());
        }
    }
}

impl Sink for Printer<'_> {
    fn emit(&mut self, level: Level, message: String) {
        if level > self.threshold {
            return;
        }
        match &self.syslog {
            Some(s) => s.send(level, &message),
            None => {
                let _ = writeln!(self.err, "{}: {}: {}", self.prog, level, message);
            }
        }
    }
}

/// The modname rule without taking the basename: up to the first `.`, `-` → `_`.
fn modname_normalize(s: &[u8]) -> Vec<u8> {
    modcore::modinfo_tool::modname_normalize(s)
}

/// Run rmmod; returns the exit status.
pub fn run(argv: &[OsString], env: &Env<'_>, out: &mut dyn Write, err: &mut dyn Write) -> u8 {
    let opts = match parse_args(argv) {
        Parsed::Run(o) => o,
        Parsed::Help(h) => {
            let _ = out.write_all(h.as_bytes());
            return 0;
        }
        Parsed::Error(m) => {
            let _ = writeln!(err, "{m}");
            return 1;
        }
    };
    if opts.version {
        let _ = out.write_all(cliutil::VERSION_TEXT.as_bytes());
        return 0;
    }
    let prog = cliutil::prog_name(argv.first().map(OsString::as_os_str), "rmmod");

    // Kernel command line problems are reported while kmod's context is created, before
    // rmmod installs its printer: libkmod's default form.
    match modcore::modprobe_conf::read_cmdline(env.root) {
        Ok(Some(c)) => {
            for e in &c.errors {
                let _ = writeln!(err, "libkmod: {}: {}", e.libkmod_function(), e);
            }
        }
        Ok(None) => {}
        Err(e) => {
            let _ = writeln!(err, "libkmod: {}: {}", e.libkmod_function(), e);
        }
    }

    let mut p = Printer {
        syslog: opts.syslog.then(|| Syslog::open(&prog)),
        prog,
        threshold: cliutil::threshold(Level::Error, opts.verbose),
        err,
    };

    if opts.all {
        if !opts.operands.is_empty() {
            p.emit(
                Level::Error,
                "--all removes autoclean modules only and takes no module names.".to_string(),
            );
            return 1;
        }
        return sweep(env, &opts, &mut p);
    }
    if let Some(idle) = &opts.idle {
        p.emit(
            Level::Error,
            format!("--idle={} needs --all.", idle.to_string_lossy()),
        );
        return 1;
    }
    if opts.operands.is_empty() {
        p.emit(Level::Error, "missing module name.".to_string());
        return 1;
    }

    let release = env.kernel.release().unwrap_or_default();
    let builtin = IndexFile::open(&env.root.module_dir(&release).join("modules.builtin.bin")).ok();
    let live = LiveModules::new(env.root).with_builtin(|n: &[u8]| {
        builtin
            .as_ref()
            .is_some_and(|i| matches!(i.index().get(n), Ok(Some(_))))
    });
    let mut ctx = Context::new(env.root, Tool::Rmmod, Some(release.clone()));
    ctx.euid = env.euid;

    let mut failed = false;
    for operand in &opts.operands {
        let is_file = std::fs::metadata(operand).is_ok();
        let name = if is_file {
            modcore::name::modname_from_path(operand.as_bytes())
        } else {
            modname_normalize(operand.as_bytes())
        };
        let shown = show(&name).into_owned();
        let file = is_file.then(|| Path::new(operand.as_os_str()));
        if !opts.force {
            if let Err(why) = check_removable(&live, &name, &mut p) {
                failed = true;
                if let Some(f) = why {
                    p.notes(&explain::explain_remove(&ctx, &shown, file, f));
                }
                continue;
            }
        }
        let Ok(cname) = CString::new(name.clone()) else {
            p.emit(
                Level::Error,
                format!(
                    "could not use module {}: {}",
                    operand.to_string_lossy(),
                    modcore::kernel::strerror(nix::libc::EINVAL)
                ),
            );
            failed = true;
            continue;
        };
        if let Err(e) = env
            .kernel
            .delete_module(&cname, DeleteFlags { force: opts.force })
        {
            p.emit(
                Level::Error,
                format!("could not remove '{shown}': {}", e.strerror()),
            );
            p.emit(
                Level::Error,
                format!(
                    "could not remove module {}: {}",
                    operand.to_string_lossy(),
                    e.strerror()
                ),
            );
            p.notes(&explain::explain_remove(
                &ctx,
                &shown,
                file,
                RemoveFailure::Kernel(e.raw()),
            ));
            failed = true;
        }
    }
    u8::from(failed)
}

/// kmod's pre-checks (without `-f`). `Err(Some(f))`: refused, explain `f`; `Err(None)`:
/// refused, nothing to explain.
fn check_removable(
    live: &LiveModules<'_>,
    name: &[u8],
    p: &mut Printer<'_>,
) -> Result<(), Option<RemoveFailure>> {
    let n = show(name).into_owned();
    match live.initstate(name) {
        Ok(InitState::Builtin) => {
            p.emit(Level::Error, format!("Module {n} is builtin."));
            return Err(None);
        }
        Ok(_) => {}
        Err(e) => {
            p.live(&e);
            p.emit(Level::Error, format!("Module {n} is not currently loaded"));
            return Err(Some(RemoveFailure::NotLoaded));
        }
    }
    match live.holders(name) {
        Ok(h) if !h.is_empty() => {
            let list: Vec<String> = h.iter().map(|x| show(x).into_owned()).collect();
            p.emit(
                Level::Error,
                format!("Module {n} is in use by: {}", list.join(" ")),
            );
            return Err(Some(RemoveFailure::InUse));
        }
        Ok(_) => {}
        Err(e) => p.live(&e),
    }
    match live.refcnt(name) {
        Ok(r) if r > 0 => {
            p.emit(Level::Error, format!("Module {n} is in use"));
            Err(Some(RemoveFailure::InUse))
        }
        Ok(_) => Ok(()),
        Err(e) if e.errno() == nix::libc::ENOENT => {
            p.emit(
                Level::Error,
                "Module unloading is not supported".to_string(),
            );
            Err(Some(RemoveFailure::UnloadUnsupported))
        }
        Err(e) => {
            p.live(&e);
            Err(None)
        }
    }
}

/// `--all`: the autoclean sweep.
fn sweep(env: &Env<'_>, opts: &Options, p: &mut Printer<'_>) -> u8 {
    let idle = match &opts.idle {
        None => autoclean::DEFAULT_IDLE,
        Some(v) => match v.to_str().and_then(|s| s.parse::<u64>().ok()) {
            Some(n) => n,
            None => {
                p.emit(
                    Level::Error,
                    format!(
                        "invalid --idle value '{}': expected a number of seconds.",
                        v.to_string_lossy()
                    ),
                );
                return 1;
            }
        },
    };
    let mut reg = match autoclean::Registry::open_existing(env.root) {
        Ok(Some(r)) => r,
        Ok(None) => {
            p.emit(Level::Info, "autoclean: nothing recorded".to_string());
            return 0;
        }
        Err(e) => {
            p.emit(Level::Error, format!("autoclean: {e}"));
            return 1;
        }
    };
    let report = autoclean::sweep(&mut reg, env.root, env.kernel, idle, env.now);
    let mut code = 0;
    if let Err(e) = reg.save() {
        p.emit(Level::Error, format!("autoclean: {e}"));
        code = 1;
    }
    for (name, outcome) in &report.outcomes {
        match outcome {
            Outcome::Removed => p.emit(Level::Notice, format!("autoclean: removed {name}")),
            Outcome::InUse => p.emit(Level::Info, format!("autoclean: {name} is in use; kept")),
            Outcome::Waiting { remaining } => p.emit(
                Level::Info,
                format!("autoclean: {name} is unused; it goes in {remaining} s if it stays unused"),
            ),
            Outcome::Dropped => p.emit(
                Level::Info,
                format!("autoclean: {name} is no longer loaded; forgotten"),
            ),
            Outcome::NotLive => p.emit(
                Level::Info,
                format!("autoclean: {name} is loading or unloading; left alone"),
            ),
            Outcome::Failed(e) => {
                p.emit(
                    Level::Error,
                    format!("could not remove '{name}': {}", e.strerror()),
                );
                if e.errno() == Errno::EPERM {
                    let mut ctx = Context::new(env.root, Tool::Rmmod, env.kernel.release().ok());
                    ctx.euid = env.euid;
                    p.notes(&explain::explain_remove(
                        &ctx,
                        name,
                        None,
                        RemoveFailure::Kernel(e.raw()),
                    ));
                }
                code = 1;
            }
        }
    }
    code
}
