//! modinfo: show information about kernel modules (kmod 30 behaviour, spec
//! runtime-tools §7).
//!
//! Thin front end: clap turns the arguments into [`Options`]; `modcore::modinfo_tool`
//! finds the modules and renders them; the exit status is chosen in [`run`].

use std::ffi::OsString;
use std::io::{BufWriter, Write};
use std::process::ExitCode;

use clap::{ArgAction, CommandFactory, FromArgMatches, Parser};
use modcore::cliutil;
use modcore::diag::{Level, Sink};
use modcore::kernel::{Kernel, LinuxKernel};
use modcore::modinfo_tool::{self, Moddir, RenderError, RenderOptions};
use modcore::root::Root;

#[derive(Parser, Debug)]
#[command(
    name = "modinfo",
    disable_version_flag = true,
    infer_long_args = true,
    about = "Show information about kernel modules",
    override_usage = "modinfo [options] <modulename|filename> [args]"
)]
struct Cli {
    /// Print only 'author'
    #[arg(short = 'a', long = "author", action = ArgAction::Count)]
    author: u8,
    /// Print only 'description'
    #[arg(short = 'd', long = "description", action = ArgAction::Count)]
    description: u8,
    /// Print only 'license'
    #[arg(short = 'l', long = "license", action = ArgAction::Count)]
    license: u8,
    /// Print only 'parm'
    #[arg(short = 'p', long = "parameters", action = ArgAction::Count)]
    parameters: u8,
    /// Print only 'filename'
    #[arg(short = 'n', long = "filename", action = ArgAction::Count)]
    filename: u8,
    /// Print only the values of FIELD
    #[arg(short = 'F', long = "field", value_name = "FIELD", action = ArgAction::Append)]
    field: Vec<OsString>,
    /// Use \0 instead of \n to end records
    #[arg(short = '0', long = "null", action = ArgAction::Count)]
    null: u8,
    /// Handle operands as module names, not aliases or files
    #[arg(short = 'm', long = "modname", action = ArgAction::Count)]
    modname: u8,
    /// Use VERSION instead of `uname -r`
    #[arg(short = 'k', long = "set-version", value_name = "VERSION", action = ArgAction::Append)]
    kversion: Vec<OsString>,
    /// Use DIR as filesystem root for /lib/modules
    #[arg(short = 'b', long = "basedir", value_name = "DIR", action = ArgAction::Append)]
    basedir: Vec<OsString>,
    /// Show version
    #[arg(short = 'V', long = "version", action = ArgAction::Count)]
    version: u8,
    /// Modules: names, aliases or files
    #[arg(value_name = "MODULE")]
    operands: Vec<OsString>,
}

/// What the command line asks for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Options {
    /// The selected field (last of `-a -d -l -p -n -F`).
    pub field: Option<Vec<u8>>,
    pub null: bool,
    pub modname: bool,
    pub kversion: Option<OsString>,
    pub basedir: Option<OsString>,
    pub version: bool,
    pub operands: Vec<OsString>,
}

/// How argument parsing ended.
#[derive(Debug)]
pub enum Parsed {
    Run(Options),
    /// `-h`: print this to stdout, exit 0.
    Help(String),
    /// An error message for stderr, exit 1.
    Error(String),
}

/// Parse `argv` (with `argv[0]`).
pub fn parse_args(argv: &[OsString]) -> Parsed {
    let argv0 = argv
        .first()
        .map(|a| a.to_string_lossy().into_owned())
        .unwrap_or_else(|| "modinfo".into());
    let matches = match Cli::command().try_get_matches_from(argv) {
        Ok(m) => m,
        Err(e) => return clap_failure(&argv0, argv, e),
    };
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(c) => c,
        Err(e) => return clap_failure(&argv0, argv, e),
    };
    // The last of -a -d -l -p -n -F wins (getopt order).
    let mut best: Option<(usize, Vec<u8>)> = None;
    let mut consider = |idx: Option<usize>, value: Vec<u8>| {
        if let Some(i) = idx {
            let later = match &best {
                Some((b, _)) => i > *b,
                None => true,
            };
            if later {
                best = Some((i, value));
            }
        }
    };
    for (id, field) in [
        ("author", "author"),
        ("description", "description"),
        ("license", "license"),
        ("parameters", "parm"),
        ("filename", "filename"),
    ] {
        if matches.value_source(id) == Some(clap::parser::ValueSource::CommandLine) {
            consider(
                matches.indices_of(id).and_then(|i| i.max()),
                field.as_bytes().to_vec(),
            );
        }
    }
    if let Some(idx) = matches.indices_of("field") {
        for (i, v) in idx.zip(cli.field.iter()) {
            use std::os::unix::ffi::OsStrExt;
            consider(Some(i), v.as_bytes().to_vec());
        }
    }
    Parsed::Run(Options {
        field: best.map(|(_, f)| f),
        null: cli.null > 0,
        modname: cli.modname > 0,
        kversion: cli.kversion.last().cloned(),
        basedir: cli.basedir.last().cloned(),
        version: cli.version > 0,
        operands: cli.operands,
    })
}

/// Long options in kmod's option-table order (for getopt's ambiguity message).
const LONG_OPTIONS: &[&str] = &[
    "author",
    "description",
    "license",
    "parameters",
    "filename",
    "null",
    "field",
    "modname",
    "set-version",
    "basedir",
    "version",
    "help",
];

fn clap_failure(argv0: &str, argv: &[OsString], e: clap::Error) -> Parsed {
    match cliutil::clap_failure(argv0, argv, e, LONG_OPTIONS) {
        cliutil::CliFailure::Help(h) => Parsed::Help(h),
        cliutil::CliFailure::Error(m) => Parsed::Error(m),
    }
}

/// Everything the tool touches, so tests can substitute fixtures.
pub struct Env<'a> {
    pub root: &'a Root,
    pub kernel: &'a dyn Kernel,
}

/// `modinfo` entry point: `args` includes `argv[0]`.
pub fn main_with_args<I: IntoIterator<Item = OsString>>(args: I) -> ExitCode {
    let argv: Vec<OsString> = args.into_iter().collect();
    let root = Root::host();
    let env = Env {
        root: &root,
        kernel: &LinuxKernel,
    };
    let stdout = std::io::stdout();
    let stderr = std::io::stderr();
    let mut out = BufWriter::new(stdout.lock());
    let code = run(&argv, &env, &mut out, &mut stderr.lock());
    let _ = out.flush();
    ExitCode::from(code)
}

/// Messages as `modinfo: LEVEL: text` on stderr.
struct Errors<'a> {
    prog: String,
    err: &'a mut dyn Write,
}

impl Errors<'_> {
    /// An explanation after kmod's message, as `modinfo: NOTE: text`.
    fn note(&mut self, message: &str) {
        let _ = writeln!(self.err, "{}: NOTE: {}", self.prog, message);
    }
}

impl Sink for Errors<'_> {
    fn emit(&mut self, level: Level, message: String) {
        if level <= Level::Error {
            let _ = writeln!(self.err, "{}: {}: {}", self.prog, level, message);
        }
    }
}

/// Run modinfo; returns the exit status.
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
    let prog = cliutil::prog_name(argv.first().map(OsString::as_os_str), "modinfo");
    if opts.version {
        let _ = out.write_all(cliutil::VERSION_TEXT.as_bytes());
        return 0;
    }
    let mut errors = Errors { prog, err };
    if opts.operands.is_empty() {
        errors.emit(Level::Error, "missing module or filename.".to_string());
        return 1;
    }

    // Creating kmod's context parses the kernel command line (libkmod's own printer).
    match modcore::modprobe_conf::read_cmdline(env.root) {
        Ok(Some(c)) => {
            for e in &c.errors {
                let _ = writeln!(errors.err, "libkmod: {}: {}", e.libkmod_function(), e);
            }
        }
        Ok(None) => {}
        Err(e) => {
            let _ = writeln!(errors.err, "libkmod: {}: {}", e.libkmod_function(), e);
        }
    }

    let release = match &opts.kversion {
        Some(v) => v.to_string_lossy().into_owned(),
        None => env.kernel.release().unwrap_or_default(),
    };
    // `-b DIR` is a path the user typed (not under the root); without it the module
    // directory is /lib/modules/<release> of the root.
    let dir = env.root.moddir(opts.basedir.as_deref(), &release);
    let moddir = Moddir::new(dir);
    let render_opts = RenderOptions {
        field: opts.field.clone(),
        null: opts.null,
    };

    let mut failed = false;
    // Damaged indexes already explained (each is named once per run).
    let mut explained = 0;
    for operand in &opts.operands {
        let mods = match modinfo_tool::resolve(&moddir, operand, opts.modname) {
            Ok(m) => m,
            Err(e) => {
                errors.emit(Level::Error, e.to_string());
                let damaged = moddir.damaged();
                for (path, why) in damaged.iter().skip(explained) {
                    errors.note(&format!(
                        "{} could not be used ({why}), so the answer may be wrong: \
                         run 'depmod' to rebuild the indexes",
                        path.display()
                    ));
                }
                explained = damaged.len();
                failed = true;
                continue;
            }
        };
        for m in &mods {
            match modinfo_tool::render(&moddir, m, &render_opts, out, &mut errors) {
                Ok(()) => {}
                Err(RenderError::Info(e)) => {
                    let _ = out.flush();
                    errors.emit(Level::Error, e.to_string());
                    failed = true;
                }
                Err(RenderError::Output(_)) => return 1,
            }
        }
    }
    u8::from(failed)
}
