//! modprobe: command-line front end (kmod 30 behaviour, spec runtime-tools §3).
//!
//! Arguments (with `MODPROBE_OPTIONS` prepended) are parsed with clap into
//! [`ModprobeOptions`]; [`modcore::modprobe::run`] does the work against a [`Root`] and a
//! [`Kernel`]; this file only renders what it reports and picks the exit status (in
//! [`run_args`]).
//!
//! Output: results on stdout; messages on stderr as `modprobe: LEVEL: text`,
//! explanations as `modprobe: NOTE: text`, early library messages as
//! `libkmod: function: text` (shown at ERROR and above unless `KMOD_LOG` says otherwise).
//! With `-s`, or when stderr is closed, messages go to syslog instead.

use std::ffi::{OsStr, OsString};
use std::io::Write;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::{ArgAction, CommandFactory, FromArgMatches, Parser};
use modcore::diag::{Level, Sink};
use modcore::kernel::{Kernel, LinuxKernel};
use modcore::modprobe::{self, Io, ModprobeOptions, DEFAULT_VERBOSITY, LOG_EMERG, LOG_ERR};
use modcore::root::Root;

/// The command line (kmod 30's options; the deprecated long spellings are aliases).
#[derive(Parser, Debug)]
#[command(
    name = "modprobe",
    disable_help_flag = true,
    disable_version_flag = true,
    infer_long_args = true
)]
struct Args {
    #[arg(short = 'a', long = "all", action = ArgAction::Count)]
    all: u8,
    #[arg(short = 'r', long = "remove", action = ArgAction::Count)]
    remove: u8,
    #[arg(long = "remove-holders", alias = "remove-dependencies", action = ArgAction::Count)]
    remove_holders: u8,
    #[arg(short = 'w', long = "wait", value_name = "MSEC", action = ArgAction::Append, allow_hyphen_values = true)]
    wait: Vec<OsString>,
    #[arg(short = 'R', long = "resolve-alias", alias = "show-alias", action = ArgAction::Count)]
    resolve_alias: u8,
    #[arg(long = "first-time", action = ArgAction::Count)]
    first_time: u8,
    #[arg(short = 'k', long = "autoclean", action = ArgAction::Count)]
    autoclean: u8,
    #[arg(short = 'i', long = "ignore-install", alias = "ignore-remove", action = ArgAction::Count)]
    ignore_commands: u8,
    #[arg(short = 'b', long = "use-blacklist", action = ArgAction::Count)]
    use_blacklist: u8,
    #[arg(short = 'f', long = "force", action = ArgAction::Count)]
    force: u8,
    #[arg(long = "force-modversion", action = ArgAction::Count)]
    force_modversion: u8,
    #[arg(long = "force-vermagic", action = ArgAction::Count)]
    force_vermagic: u8,
    #[arg(short = 'D', long = "show-depends", action = ArgAction::Count)]
    show_depends: u8,
    #[arg(short = 'c', long = "show-config", alias = "showconfig", action = ArgAction::Count)]
    show_config: u8,
    #[arg(long = "show-modversions", alias = "dump-modversions", action = ArgAction::Count)]
    show_modversions: u8,
    #[arg(long = "show-exports", action = ArgAction::Count)]
    show_exports: u8,
    #[arg(short = 'n', long = "dry-run", alias = "show", action = ArgAction::Count)]
    dry_run: u8,
    #[arg(short = 'C', long = "config", value_name = "FILE", action = ArgAction::Append, allow_hyphen_values = true)]
    config: Vec<OsString>,
    #[arg(short = 'd', long = "dirname", value_name = "DIR", action = ArgAction::Append, allow_hyphen_values = true)]
    dirname: Vec<OsString>,
    #[arg(short = 'S', long = "set-version", value_name = "VERSION", action = ArgAction::Append, allow_hyphen_values = true)]
    set_version: Vec<OsString>,
    #[arg(short = 's', long = "syslog", action = ArgAction::Append, num_args = 0, default_missing_value = "")]
    syslog: Vec<String>,
    #[arg(short = 'q', long = "quiet", action = ArgAction::Append, num_args = 0, default_missing_value = "")]
    quiet: Vec<String>,
    #[arg(short = 'v', long = "verbose", action = ArgAction::Append, num_args = 0, default_missing_value = "")]
    verbose: Vec<String>,
    #[arg(short = 'V', long = "version", action = ArgAction::Count)]
    version: u8,
    #[arg(short = 'h', long = "help", action = ArgAction::Count)]
    help: u8,
    #[arg(value_name = "MODULE")]
    operands: Vec<OsString>,
}

/// The environment modprobe reads.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Env {
    /// `MODPROBE_OPTIONS`: prepended to the arguments, and extended for child commands.
    pub modprobe_options: Option<OsString>,
    /// `KMOD_LOG`: threshold of early library messages.
    pub kmod_log: Option<OsString>,
}

impl Env {
    /// Read the process environment.
    pub fn from_process() -> Env {
        Env {
            modprobe_options: std::env::var_os("MODPROBE_OPTIONS"),
            kmod_log: std::env::var_os("KMOD_LOG"),
        }
    }
}

/// `modprobe` entry point: `args` includes `argv[0]`.
pub fn main_with_args<I: IntoIterator<Item = OsString>>(args: I) -> ExitCode {
    let args: Vec<OsString> = args.into_iter().collect();
    let stdout = std::io::stdout();
    let stderr = std::io::stderr();
    let mut err: Box<dyn Write> = Box::new(stderr.lock());
    let code = run_args_with(
        &args,
        &Env::from_process(),
        &Root::host(),
        &LinuxKernel,
        &mut stdout.lock(),
        &mut *err,
        !stderr_usable(),
    );
    ExitCode::from(code)
}

/// fd 2 is open (kmod 31+ logs to syslog when it is not, e.g. when the kernel runs us).
fn stderr_usable() -> bool {
    nix::fcntl::fcntl(2, nix::fcntl::FcntlArg::F_GETFD).is_ok()
}

/// Parse, run, render. Returns the exit status (the one place it is chosen).
pub fn run_args(
    args: &[OsString],
    env: &Env,
    root: &Root,
    kernel: &dyn Kernel,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> u8 {
    run_args_with(args, env, root, kernel, out, err, false)
}

fn run_args_with(
    args: &[OsString],
    env: &Env,
    root: &Root,
    kernel: &dyn Kernel,
    out: &mut dyn Write,
    err: &mut dyn Write,
    stderr_closed: bool,
) -> u8 {
    let argv0 = args
        .first()
        .cloned()
        .unwrap_or_else(|| OsString::from("modprobe"));
    let prog = prog_name(&argv0);

    // MODPROBE_OPTIONS words go right after argv[0].
    let mut full: Vec<OsString> = vec![argv0.clone()];
    if let Some(v) = &env.modprobe_options {
        full.extend(split_env_options(v.as_bytes()));
    }
    full.extend(args.iter().skip(1).cloned());

    let matches = match Args::command().try_get_matches_from(&full) {
        Ok(m) => m,
        Err(e) => {
            let _ = err.write_all(&getopt_message(
                &argv0,
                full.last().map(OsString::as_os_str),
                &e,
            ));
            return 1;
        }
    };
    let a = match Args::from_arg_matches(&matches) {
        Ok(a) => a,
        Err(e) => {
            let _ = writeln!(err, "{}: {}", argv0.to_string_lossy(), e.kind());
            return 1;
        }
    };

    if a.help > 0 {
        let _ = out.write_all(help_text(&prog).as_bytes());
        return 0;
    }
    if a.version > 0 {
        let _ = out.write_all(b"kmod version 30\n+ZSTD +XZ +ZLIB +LIBCRYPTO -EXPERIMENTAL\n");
        return 0;
    }

    // -q and -v act in command-line order; the options exported to child commands
    // (-C, -s, -q, -v) are appended in that order too.
    let mut events: Vec<(usize, Event)> = Vec::new();
    let idx = |id: &str| -> Vec<usize> {
        if matches.value_source(id) != Some(clap::parser::ValueSource::CommandLine) {
            return Vec::new();
        }
        matches
            .indices_of(id)
            .map(|i| i.collect())
            .unwrap_or_default()
    };
    events.extend(idx("quiet").into_iter().map(|i| (i, Event::Quiet)));
    events.extend(idx("verbose").into_iter().map(|i| (i, Event::Verbose)));
    events.extend(idx("syslog").into_iter().map(|i| (i, Event::Syslog)));
    for (n, i) in idx("config").into_iter().enumerate() {
        events.push((i, Event::Config(n)));
    }
    events.sort_by_key(|e| e.0);
    let mut verbosity = DEFAULT_VERBOSITY;
    let mut child = env.modprobe_options.clone().map(OsString::into_vec);
    let mut append = |v: &[u8]| {
        let c = child.get_or_insert_with(Vec::new);
        if !c.is_empty() {
            c.push(b' ');
        }
        c.extend_from_slice(v);
    };
    for (_, ev) in &events {
        match ev {
            Event::Quiet => {
                verbosity = LOG_EMERG;
                append(b"-q");
            }
            Event::Verbose => {
                verbosity += 1;
                append(b"-v");
            }
            Event::Syslog => append(b"-s"),
            Event::Config(n) => {
                let mut v = b"-C ".to_vec();
                v.extend_from_slice(a.config.get(*n).map_or(&[][..], |c| c.as_bytes()));
                append(&v);
            }
        }
    }

    // Options given twice: the last one counts, as with getopt.
    let wait_msec = match a.wait.last() {
        None => 0,
        Some(w) => match parse_c_ulong(w.as_bytes()) {
            Some(v) => v,
            None => {
                let _ = writeln!(
                    err,
                    "{prog}: ERROR: unexpected wait value '{}'.",
                    w.to_string_lossy()
                );
                return 1;
            }
        },
    };

    let opts = ModprobeOptions {
        autoclean: a.autoclean > 0,
        now: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        all: a.all > 0,
        remove: a.remove > 0,
        remove_holders: a.remove_holders > 0,
        wait_msec,
        resolve_alias: a.resolve_alias > 0,
        first_time: a.first_time > 0,
        ignore_commands: a.ignore_commands > 0,
        use_blacklist: a.use_blacklist > 0,
        force: a.force > 0,
        force_modversion: a.force_modversion > 0,
        force_vermagic: a.force_vermagic > 0,
        show_depends: a.show_depends > 0,
        show_config: a.show_config > 0,
        show_modversions: a.show_modversions > 0,
        show_exports: a.show_exports > 0,
        dry_run: a.dry_run > 0,
        config_paths: (!a.config.is_empty()).then(|| a.config.iter().map(PathBuf::from).collect()),
        dirname: a.dirname.last().cloned(),
        kernel_version: a
            .set_version
            .last()
            .map(|v| v.to_string_lossy().into_owned()),
        verbosity,
        operands: a.operands.iter().map(|o| o.as_bytes().to_vec()).collect(),
        child_modprobe_options: child.map(OsString::from_vec),
    };

    let syslog = !a.syslog.is_empty() || stderr_closed;
    let library_threshold = env
        .kmod_log
        .as_ref()
        .map(|v| kmod_log_priority(v.as_bytes()))
        .unwrap_or(LOG_ERR);
    // Library and note messages are interleaved with the tool's own lines in the order
    // they are produced: all three sinks write through the same printer.
    let shared = std::cell::RefCell::new(Printer {
        prog: prog.clone(),
        err,
        syslog,
        stderr_closed,
    });
    let outcome = {
        let mut d = Forward {
            to: &shared,
            kind: Kind::Tool,
            library_threshold,
        };
        let mut l = Forward {
            to: &shared,
            kind: Kind::Library,
            library_threshold,
        };
        let mut n = Forward {
            to: &shared,
            kind: Kind::Note,
            library_threshold,
        };
        let mut io = Io {
            out,
            diag: &mut d,
            library: &mut l,
            notes: &mut n,
        };
        modprobe::run(&opts, root, kernel, &mut io)
    };
    outcome.exit_code()
}

#[derive(Debug, Clone, Copy)]
enum Event {
    Quiet,
    Verbose,
    Syslog,
    Config(usize),
}

/// basename of argv[0].
fn prog_name(argv0: &OsStr) -> String {
    let b = argv0.as_bytes();
    let base = b.rsplit(|&c| c == b'/').next().unwrap_or(b);
    if base.is_empty() {
        "modprobe".to_string()
    } else {
        String::from_utf8_lossy(base).into_owned()
    }
}

/// Split `MODPROBE_OPTIONS` like kmod: words separated by single spaces; a word may be
/// quoted with `'` or `"` (quotes removed, inner spaces kept), and a quoted part inside a
/// word is unquoted in place. Empty words (from repeated spaces) are dropped.
pub fn split_env_options(v: &[u8]) -> Vec<OsString> {
    let mut out = Vec::new();
    let mut cur: Vec<u8> = Vec::new();
    let mut quote: Option<u8> = None;
    for &c in v {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => cur.push(c),
            None if c == b'"' || c == b'\'' => quote = Some(c),
            None if c == b' ' => {
                if !cur.is_empty() {
                    out.push(OsString::from_vec(std::mem::take(&mut cur)));
                }
            }
            None => cur.push(c),
        }
    }
    if !cur.is_empty() {
        out.push(OsString::from_vec(cur));
    }
    out
}

/// `strtoul(s, &end, 0)` that must consume everything: `0x` hex, leading `0` octal,
/// decimal; empty, junk or overflow → `None`.
pub fn parse_c_ulong(s: &[u8]) -> Option<u64> {
    let t = std::str::from_utf8(s).ok()?;
    let t = t.trim_start_matches([' ', '\t', '\n']);
    let t = t.strip_prefix('+').unwrap_or(t);
    if t.is_empty() {
        return None;
    }
    if let Some(h) = t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        return u64::from_str_radix(h, 16).ok();
    }
    if t.len() > 1 && t.starts_with('0') {
        return u64::from_str_radix(&t[1..], 8).ok();
    }
    t.parse().ok()
}

/// libkmod's reading of `KMOD_LOG`: a number, or a word starting with `err`, `info`,
/// `debug`; anything else is 0.
fn kmod_log_priority(v: &[u8]) -> i32 {
    let s = String::from_utf8_lossy(v);
    if let Ok(n) = s.trim().parse::<i32>() {
        return n;
    }
    if s.starts_with("err") {
        LOG_ERR
    } else if s.starts_with("info") {
        6
    } else if s.starts_with("debug") {
        7
    } else {
        0
    }
}

/// getopt's wording for parse errors (they name argv[0] as invoked).
fn getopt_message(argv0: &OsStr, last: Option<&OsStr>, e: &clap::Error) -> Vec<u8> {
    let a0 = argv0.to_string_lossy();
    let arg = match e.get(ContextKind::InvalidArg) {
        Some(ContextValue::String(s)) => s.clone(),
        _ => String::new(),
    };
    let line = match e.kind() {
        ErrorKind::UnknownArgument => {
            if let Some(long) = arg.strip_prefix("--") {
                let word = long.split('=').next().unwrap_or(long);
                let matching: Vec<&str> = LONG_NAMES
                    .iter()
                    .copied()
                    .filter(|n| n.starts_with(word))
                    .collect();
                if matching.len() > 1 && !word.is_empty() {
                    let list: Vec<String> = matching.iter().map(|n| format!("'--{n}'")).collect();
                    format!(
                        "{a0}: option '--{word}' is ambiguous; possibilities: {}",
                        list.join(" ")
                    )
                } else {
                    format!("{a0}: unrecognized option '--{long}'")
                }
            } else {
                let c = arg.trim_start_matches('-').chars().next().unwrap_or('?');
                format!("{a0}: invalid option -- '{c}'")
            }
        }
        ErrorKind::InvalidValue | ErrorKind::NoEquals | ErrorKind::MissingRequiredArgument => {
            // A missing value can only be at the end of the arguments: the spelling the
            // user typed is the last argument.
            let typed = last
                .map(|l| l.to_string_lossy().into_owned())
                .unwrap_or_default();
            if let Some(long) = typed.strip_prefix("--") {
                format!("{a0}: option '--{long}' requires an argument")
            } else {
                let c = typed.chars().last().unwrap_or('?');
                format!("{a0}: option requires an argument -- '{c}'")
            }
        }
        _ => {
            let text = e.render().to_string();
            let first = text
                .lines()
                .next()
                .unwrap_or("")
                .trim_start_matches("error: ");
            format!("{a0}: {first}")
        }
    };
    let mut v = line.into_bytes();
    v.push(b'\n');
    v
}

/// kmod 30's long options in the order of its option table (getopt lists ambiguous
/// candidates in this order).
const LONG_NAMES: [&str; 30] = [
    "all",
    "remove",
    "remove-dependencies",
    "remove-holders",
    "wait",
    "resolve-alias",
    "first-time",
    "ignore-install",
    "ignore-remove",
    "use-blacklist",
    "force",
    "force-modversion",
    "force-vermagic",
    "show-depends",
    "showconfig",
    "show-config",
    "show-modversions",
    "dump-modversions",
    "show-exports",
    "dry-run",
    "show",
    "config",
    "dirname",
    "set-version",
    "syslog",
    "quiet",
    "verbose",
    "version",
    "help",
    "autoclean",
];

fn help_text(prog: &str) -> String {
    format!(
        "Usage:\n\
         \t{prog} [options] [-i] [-b] modulename\n\
         \t{prog} [options] -a [-i] [-b] modulename [modulename...]\n\
         \t{prog} [options] -r [-i] modulename\n\
         \t{prog} [options] -r -a [-i] modulename [modulename...]\n\
         \t{prog} [options] -c\n\
         \t{prog} [options] --dump-modversions filename\n\
         Management Options:\n\
         \t-a, --all                   Every operand is a module to insert (or remove with -r)\n\
         \t-r, --remove                Remove modules instead of inserting them\n\
         \t    --remove-holders        Also remove the modules that use the named ones\n\
         \t-w, --wait <MSEC>           With -r: retry for MSEC milliseconds while in use\n\
         \t-R, --resolve-alias         Print what the names resolve to and exit\n\
         \t    --first-time            Fail if the module is already inserted or removed\n\
         \t-k, --autoclean             Record loaded modules for 'rmmod --all' (autoclean)\n\
         \t-i, --ignore-install        Ignore install commands and softdeps\n\
         \t-i, --ignore-remove         Ignore remove commands and softdeps\n\
         \t-b, --use-blacklist         Apply the blacklist to module names too\n\
         \t-f, --force                 Force insertion (both flags below) or removal\n\
         \t    --force-modversion      Ignore symbol versions\n\
         \t    --force-vermagic        Ignore the version magic string\n\
         \n\
         Query Options:\n\
         \t-D, --show-depends          Print what would be loaded and exit\n\
         \t-c, --show-config           Print the configuration and alias indexes and exit\n\
         \t    --show-modversions      Print the symbol versions a module file needs\n\
         \t    --show-exports          Print the symbols a module file exports\n\
         \n\
         General Options:\n\
         \t-n, --dry-run               Do not insert or remove anything\n\
         \t-C, --config=FILE           Use FILE (or directory) instead of the default search paths\n\
         \t-d, --dirname=DIR           Use DIR as the file system root for /lib/modules\n\
         \t-S, --set-version=VERSION   Use VERSION instead of `uname -r`\n\
         \t-s, --syslog                Print messages to syslog, not stderr\n\
         \t-q, --quiet                 No messages\n\
         \t-v, --verbose               More messages\n\
         \t-V, --version               Show the version\n\
         \t-h, --help                  Show this help\n"
    )
}

// ----- rendering --------------------------------------------------------------------

/// Writes message lines to stderr or syslog.
struct Printer<'w> {
    prog: String,
    err: &'w mut dyn Write,
    /// Tool messages go to syslog (`-s`, or stderr closed).
    syslog: bool,
    /// Early library messages use libkmod's default printer (stderr) even with `-s`;
    /// only a closed stderr sends them to syslog.
    stderr_closed: bool,
}

impl Printer<'_> {
    fn line(&mut self, level_word: &str, priority: i32, text: &str) {
        if self.syslog {
            send_syslog(&self.prog, priority, &format!("{level_word}: {text}"));
        } else {
            let _ = writeln!(self.err, "{}: {}: {}", self.prog, level_word, text);
            let _ = self.err.flush();
        }
    }

    fn library(&mut self, priority: i32, text: &str) {
        if self.stderr_closed {
            send_syslog("libkmod", priority, text);
        } else {
            let _ = writeln!(self.err, "libkmod: {text}");
            let _ = self.err.flush();
        }
    }
}

/// Send one record to the local syslog daemon (facility daemon, ident = program).
fn send_syslog(ident: &str, priority: i32, text: &str) {
    const LOG_DAEMON: i32 = 3 << 3;
    let msg = format!("<{}>{}: {}", LOG_DAEMON | priority.clamp(0, 7), ident, text);
    if let Ok(sock) = std::os::unix::net::UnixDatagram::unbound() {
        let _ = sock.send_to(msg.as_bytes(), "/dev/log");
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Tool,
    Library,
    Note,
}

/// One of the three sinks of [`Io`], all printing through the same [`Printer`].
struct Forward<'r, 'w> {
    to: &'r std::cell::RefCell<Printer<'w>>,
    kind: Kind,
    library_threshold: i32,
}

impl Sink for Forward<'_, '_> {
    fn emit(&mut self, level: Level, message: String) {
        let mut d = self.to.borrow_mut();
        let prio = modprobe::priority(level);
        match self.kind {
            Kind::Tool => d.line(level.as_str(), prio, &message),
            Kind::Note => d.line(modcore::explain::NOTE_LEVEL, prio, &message),
            Kind::Library => {
                if prio <= self.library_threshold {
                    d.library(prio, &message);
                }
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;

    fn os(v: &[&str]) -> Vec<OsString> {
        v.iter().map(OsString::from).collect()
    }

    #[test]
    fn env_splitting() {
        assert_eq!(split_env_options(b"-qb"), os(&["-qb"]));
        assert_eq!(
            split_env_options(b"-q  -C '/a b' x=\"1 2\""),
            os(&["-q", "-C", "/a b", "x=1 2"])
        );
        assert!(split_env_options(b"").is_empty());
    }

    #[test]
    fn wait_values() {
        assert_eq!(parse_c_ulong(b"100"), Some(100));
        assert_eq!(parse_c_ulong(b"0x10"), Some(16));
        assert_eq!(parse_c_ulong(b"010"), Some(8));
        assert_eq!(parse_c_ulong(b"0"), Some(0));
        assert_eq!(parse_c_ulong(b""), None);
        assert_eq!(parse_c_ulong(b"12ms"), None);
        assert_eq!(parse_c_ulong(b"99999999999999999999999"), None);
    }

    fn parse(args: &[&str]) -> (u8, String, String) {
        let root = Root::new("/nonexistent-modprobe-cli-root");
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let code = run_args(
            &os(args),
            &Env::default(),
            &root,
            &LinuxKernel,
            &mut out,
            &mut err,
        );
        (
            code,
            String::from_utf8_lossy(&out).into_owned(),
            String::from_utf8_lossy(&err).into_owned(),
        )
    }

    #[test]
    fn getopt_errors_and_basics() {
        let (c, _, e) = parse(&["/sbin/modprobe", "-Z"]);
        assert_eq!(c, 1);
        assert_eq!(e, "/sbin/modprobe: invalid option -- 'Z'\n");
        let (c, _, e) = parse(&["modprobe", "--bogus"]);
        assert_eq!(c, 1);
        assert_eq!(e, "modprobe: unrecognized option '--bogus'\n");
        let (c, o, _) = parse(&["modprobe", "-V"]);
        assert_eq!(c, 0);
        assert!(o.starts_with("kmod version 30\n"));
        let (c, o, _) = parse(&["modprobe", "-h"]);
        assert_eq!(c, 0);
        assert!(o.starts_with("Usage:"));
        let (c, _, e) = parse(&["modprobe"]);
        assert_eq!(c, 1);
        assert_eq!(e, "modprobe: ERROR: missing parameters. See -h.\n");
        let (c, _, e) = parse(&["modprobe", "--sh", "x"]);
        assert_eq!(c, 1);
        assert!(
            e.starts_with("modprobe: option '--sh' is ambiguous; possibilities: '--show-depends' '--showconfig'"),
            "{e}"
        );
        let (c, _, e) = parse(&["modprobe", "-C"]);
        assert_eq!(
            (c, e.as_str()),
            (1, "modprobe: option requires an argument -- 'C'\n")
        );
        let (c, _, e) = parse(&["modprobe", "--config"]);
        assert_eq!(
            (c, e.as_str()),
            (1, "modprobe: option '--config' requires an argument\n")
        );
        let (c, _, e) = parse(&["modprobe", "-r", "-w", "5x", "fat"]);
        assert_eq!(c, 1);
        assert_eq!(e, "modprobe: ERROR: unexpected wait value '5x'.\n");
    }
}
