//! insmod: insert one module file into the kernel (spec runtime-tools §4).
//!
//! Thin front end: clap turns the arguments into [`Options`]; `modcore::load` does the
//! loading, `modcore::explain` the extra lines after a failure, `modcore::autoclean` the
//! `-k` registry; [`run`] prints kmod's messages and chooses the exit status.
//!
//! Messages (exit 1): `missing filename.`, `this tool does not support loading from
//! stdin!`, `could not load module FILE: <strerror>` (the file cannot be stat()ed),
//! `could not insert module FILE: <text>` with kmod's errno texts (ENOEXEC `Invalid
//! module format`, ENOENT `Unknown symbol in module`, ESRCH `Module has wrong symbol
//! version`, EINVAL `Invalid parameters`, else strerror), followed by explanation lines
//! `insmod: NOTE: ...`.

use std::ffi::OsString;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::process::ExitCode;

use clap::{ArgAction, Parser};
use modcore::autoclean;
use modcore::cliutil::{self, Syslog};
use modcore::diag::{Level, Sink};
use modcore::explain::{self, Context, FailedInsert, KmsgCursor, Tool};
use modcore::kernel::{Errno, Kernel, LinuxKernel};
use modcore::load::{self, LoadError, LoadOptions};
use modcore::root::Root;

#[derive(Parser, Debug)]
#[command(
    name = "insmod",
    disable_version_flag = true,
    infer_long_args = true,
    about = "Insert a module file into the Linux kernel",
    override_usage = "insmod [options] filename [args]",
    after_help = "With -k/--autoclean the module is recorded for 'rmmod --all', which removes \
                  recorded modules once they have been unused for a while."
)]
struct Cli {
    /// Force the load: ignore symbol versions and the version magic (taints the kernel)
    #[arg(short = 'f', long = "force", action = ArgAction::Count)]
    force: u8,
    /// Ignore symbol version CRCs
    #[arg(long = "force-modversion", action = ArgAction::Count)]
    force_modversion: u8,
    /// Ignore the version magic string
    #[arg(long = "force-vermagic", action = ArgAction::Count)]
    force_vermagic: u8,
    /// Print messages to syslog instead of standard error
    #[arg(short = 's', long = "syslog", action = ArgAction::Count)]
    syslog: u8,
    /// More messages; repeat for more
    #[arg(short = 'v', long = "verbose", action = ArgAction::Count)]
    verbose: u8,
    /// Record the module for automatic removal when unused (rmmod --all)
    #[arg(short = 'k', long = "autoclean", action = ArgAction::Count)]
    autoclean: u8,
    /// Ignored (kmod 30 compatibility)
    #[arg(short = 'p', hide = true, action = ArgAction::Count)]
    probe: u8,
    /// Show the version
    #[arg(short = 'V', long = "version", action = ArgAction::Count)]
    version: u8,
    /// The module file, then its parameters
    #[arg(value_name = "ARGS")]
    operands: Vec<OsString>,
}

/// Long options in option-table order (getopt's ambiguity message).
const LONG_OPTIONS: &[&str] = &[
    "force",
    "force-modversion",
    "force-vermagic",
    "syslog",
    "verbose",
    "autoclean",
    "version",
    "help",
];

/// What the command line asks for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Options {
    pub force_vermagic: bool,
    pub force_modversion: bool,
    pub syslog: bool,
    pub verbose: u8,
    pub autoclean: bool,
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
        .unwrap_or_else(|| "insmod".into());
    match Cli::try_parse_from(argv) {
        Ok(c) => Parsed::Run(Options {
            force_vermagic: c.force > 0 || c.force_vermagic > 0,
            force_modversion: c.force > 0 || c.force_modversion > 0,
            syslog: c.syslog > 0,
            verbose: c.verbose,
            autoclean: c.autoclean > 0,
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

/// Everything insmod touches, so tests can substitute fixtures.
pub struct Env<'a> {
    pub root: &'a Root,
    pub kernel: &'a dyn Kernel,
    /// Seconds since the epoch (autoclean records).
    pub now: u64,
    /// Effective user id (explanations).
    pub euid: Option<u32>,
    /// `uname -m` (explanations).
    pub machine: Option<String>,
}

/// `insmod` entry point: `args` includes `argv[0]`.
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
        machine: nix::sys::utsname::uname()
            .ok()
            .map(|u| u.machine().to_string_lossy().into_owned()),
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
pub struct Printer<'a> {
    pub prog: String,
    pub threshold: Level,
    pub syslog: Option<Syslog>,
    pub err: &'a mut dyn Write,
}

impl Printer<'_> {
    /// Print explanation lines (always shown with the error they belong to).
    pub fn notes(&mut self, lines: &[String]) {
        for l in lines {
            match &self.syslog {
                Some(s) => s.send(Level::Error, &format!("{}: {l}", explain::NOTE_LEVEL)),
                None => {
                    let _ = writeln!(self.err, "{}: {}: {l}", self.prog, explain::NOTE_LEVEL);
                }
            }
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

/// insmod's text for a failed insertion.
pub fn insert_error_text(errno: i32) -> String {
    match Errno::from_raw(errno) {
        Errno::ENOEXEC => "Invalid module format".to_string(),
        Errno::ENOENT => "Unknown symbol in module".to_string(),
        Errno::ESRCH => "Module has wrong symbol version".to_string(),
        Errno::EINVAL => "Invalid parameters".to_string(),
        _ => modcore::kernel::strerror(errno),
    }
}

/// The name the kernel will give the module: `name=` of its `.modinfo`, else the
/// modname of the file name.
fn kernel_name(path: &Path) -> String {
    let from_file = modcore::compress::read_module_file(path)
        .ok()
        .and_then(|img| modcore::module::modinfo_only(&img).ok().flatten())
        .and_then(|info| {
            info.into_iter()
                .find(|(k, _)| k == b"name")
                .map(|(_, v)| String::from_utf8_lossy(&v).into_owned())
        });
    from_file.unwrap_or_else(|| {
        String::from_utf8_lossy(&modcore::name::modname_from_path(
            path.as_os_str().as_bytes(),
        ))
        .into_owned()
    })
}

/// Run insmod; returns the exit status.
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
    let prog = cliutil::prog_name(argv.first().map(OsString::as_os_str), "insmod");

    // Creating kmod's context parses the kernel command line; insmod has no printer of
    // its own at that point, so these go out in libkmod's default form.
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
    let Some(file) = opts.operands.first() else {
        p.emit(Level::Error, "missing filename.".to_string());
        return 1;
    };
    if file.as_bytes() == b"-" {
        p.emit(
            Level::Error,
            "this tool does not support loading from stdin!".to_string(),
        );
        return 1;
    }
    let shown = file.to_string_lossy().into_owned();
    let path = Path::new(file);
    if let Err(e) = std::fs::metadata(path) {
        p.emit(
            Level::Error,
            format!(
                "could not load module {shown}: {}",
                modcore::kernel::strerror_io(&e)
            ),
        );
        return 1;
    }
    let params = load::params_from_args(opts.operands[1..].iter().map(|a| a.as_bytes()));
    let mut load_opts = LoadOptions::for_root(env.root, &mut p);
    load_opts.force_vermagic = opts.force_vermagic;
    load_opts.force_modversion = opts.force_modversion;

    // With -k the registry stays locked from before the load until it is recorded.
    let mut registry = if opts.autoclean {
        match autoclean::Registry::open(env.root) {
            Ok(r) => Some(r),
            Err(e) => {
                p.emit(
                    Level::Error,
                    format!("could not use the autoclean registry: {e}"),
                );
                return 1;
            }
        }
    } else {
        None
    };

    let mut cursor = KmsgCursor::open(env.root);
    match load::insert_module(env.kernel, path, &params, &load_opts, &mut p) {
        Ok(_) => {
            if let Some(reg) = registry.as_mut() {
                let name = kernel_name(path);
                reg.record(&name, env.now, autoclean::module_address(env.root, &name));
                if let Err(e) = reg.save() {
                    p.emit(
                        Level::Error,
                        format!("could not record {name} for autoclean: {e}"),
                    );
                    return 1;
                }
            }
            0
        }
        Err(e) => {
            drop(registry);
            p.emit(
                Level::Error,
                format!(
                    "could not insert module {shown}: {}",
                    insert_error_text(e.errno())
                ),
            );
            let kmsg = cursor.as_mut().map(KmsgCursor::read_new);
            let lines = explain_failure(env, path, &e, load_opts.forced(), kmsg.as_deref());
            p.notes(&lines);
            1
        }
    }
}

fn explain_failure(
    env: &Env<'_>,
    path: &Path,
    e: &LoadError,
    forced: bool,
    kmsg: Option<&[explain::KmsgRecord]>,
) -> Vec<String> {
    let name = String::from_utf8_lossy(&modcore::name::modname_from_path(
        path.as_os_str().as_bytes(),
    ))
    .into_owned();
    let mut ctx = Context::new(env.root, Tool::Insmod, env.kernel.release().ok());
    ctx.euid = env.euid;
    ctx.machine = env.machine.clone();
    let failed = FailedInsert::from_load_error(&name, Some(path), e, forced, kmsg);
    explain::explain_insert(&ctx, &failed)
}
