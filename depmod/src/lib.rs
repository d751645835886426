//! depmod: command-line front end. Arguments become [`DepmodOptions`]; modcore does the work.

use clap::{ArgAction, Parser};
use modcore::depmod::{self, DepmodOptions, Progress};
use modcore::diag::{Level, Sink};
use std::ffi::OsString;
use std::io::{IsTerminal, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser, Debug)]
#[command(
    name = "depmod",
    disable_version_flag = true,
    about = "Generate modules.dep and map files",
    override_usage = "depmod [options] [VERSION] [FILES...]"
)]
struct Args {
    /// Probe all modules (default when no files are given)
    #[arg(short = 'a', long = "all")]
    all: bool,
    /// Only do the work if a module is newer than modules.dep
    #[arg(short = 'A', long = "quick")]
    quick: bool,
    /// Use an image of a module tree rooted at DIR
    #[arg(short = 'b', long = "basedir", value_name = "DIR")]
    basedir: Option<OsString>,
    /// Module directory below the base directory (default /lib/modules)
    #[arg(short = 'm', long = "moduledir", value_name = "DIR")]
    moduledir: Option<OsString>,
    /// Write output below DIR instead of the base directory
    #[arg(short = 'o', long = "outdir", value_name = "DIR")]
    outdir: Option<OsString>,
    /// Use PATH (file or directory) as configuration; repeatable
    #[arg(short = 'C', long = "config", value_name = "PATH", action = ArgAction::Append)]
    config: Vec<PathBuf>,
    /// Use Module.symvers FILE for kernel symbols and CRCs
    #[arg(short = 'E', long = "symvers", value_name = "FILE")]
    symvers: Option<PathBuf>,
    /// Use System.map FILE for kernel symbols
    #[arg(short = 'F', long = "filesyms", value_name = "FILE")]
    filesyms: Option<PathBuf>,
    /// Report unresolved symbols (needs -E or -F)
    #[arg(short = 'e', long = "errsyms")]
    errsyms: bool,
    /// Write the text files to standard output instead of creating files
    #[arg(short = 'n', long = "show", visible_alias = "dry-run")]
    dry_run: bool,
    /// Architecture symbol prefix to ignore
    #[arg(short = 'P', long = "symbol-prefix", value_name = "CHAR")]
    prefix: Option<OsString>,
    /// More messages; repeat for more
    #[arg(short = 'v', long = "verbose", action = ArgAction::Count)]
    verbose: u8,
    /// Warn about duplicate index values
    #[arg(short = 'w', long = "warn")]
    warn: bool,
    /// Show the version and exit
    #[arg(short = 'V', long = "version")]
    version: bool,
    /// Do not use the incremental cache (modules.depmod.cache and the record of the
    /// outputs, modules.depmod.outputs): read every module and make every file
    #[arg(long = "no-cache")]
    no_cache: bool,
    #[arg(short = 'u', hide = true)]
    dep_u: bool,
    #[arg(long = "unresolved-error", hide = true)]
    dep_unresolved: bool,
    #[arg(short = 'q', hide = true)]
    dep_q: bool,
    #[arg(long = "quiet", hide = true)]
    dep_quiet: bool,
    #[arg(short = 'r', hide = true)]
    dep_r: bool,
    #[arg(long = "root", hide = true)]
    dep_root: bool,
    #[arg(long = "map", hide = true)]
    dep_map: bool,
    /// Kernel version, then module files
    #[arg(value_name = "VERSION")]
    operands: Vec<OsString>,
}

/// Prints diagnostics as `<prog>: <LEVEL>: <message>` at or above a threshold.
struct Printer {
    prog: String,
    threshold: Level,
}

impl Sink for Printer {
    fn emit(&mut self, level: Level, message: String) {
        if level <= self.threshold {
            let mut e = std::io::stderr().lock();
            let _ = writeln!(e, "{}: {}: {}", self.prog, level, message);
        }
    }
}

struct Bar(Option<indicatif::ProgressBar>);

impl Progress for Bar {
    fn start(&self, total: u64) {
        if let Some(b) = &self.0 {
            b.set_length(total);
        }
    }
    fn tick(&self) {
        if let Some(b) = &self.0 {
            b.inc(1);
        }
    }
    fn finish(&self) {
        if let Some(b) = &self.0 {
            b.finish_and_clear();
        }
    }
}

fn level_threshold(verbose: u8) -> Level {
    match verbose {
        0 => Level::Warning,
        1 => Level::Notice,
        2 => Level::Info,
        _ => Level::Debug,
    }
}

/// `%u.%u` at the start, as scanf would accept it.
fn looks_like_version(s: &[u8]) -> bool {
    let s = s.trim_ascii_start();
    let digits = s.iter().take_while(|b| b.is_ascii_digit()).count();
    digits > 0
        && s.get(digits) == Some(&b'.')
        && s.get(digits + 1).is_some_and(|b| b.is_ascii_digit())
}

fn prog_name(argv0: Option<&OsString>) -> String {
    argv0
        .map(|a| {
            let b = a.as_bytes();
            let base = b.rsplit(|&c| c == b'/').next().unwrap_or(b);
            String::from_utf8_lossy(base).into_owned()
        })
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "depmod".into())
}

pub fn main_with_args<I: IntoIterator<Item = OsString>>(args: I) -> ExitCode {
    modcore::cliutil::tune_allocator_for_batch();
    let argv: Vec<OsString> = args.into_iter().collect();
    let prog = prog_name(argv.first());
    let args = match Args::try_parse_from(&argv) {
        Ok(a) => a,
        Err(e) => {
            use clap::error::ErrorKind;
            return match e.kind() {
                ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
                    let _ = e.print();
                    ExitCode::SUCCESS
                }
                _ => {
                    let _ = e.print();
                    ExitCode::from(1)
                }
            };
        }
    };
    let mut printer = Printer {
        prog: prog.clone(),
        threshold: level_threshold(args.verbose),
    };
    match run(args, &mut printer) {
        Ok(()) => ExitCode::SUCCESS,
        Err((level, msg)) => {
            printer.emit(level, msg);
            ExitCode::from(1)
        }
    }
}

fn run(args: Args, printer: &mut Printer) -> Result<(), (Level, String)> {
    if args.version {
        println!("kmod version 30");
        println!("+ZSTD +XZ +ZLIB +LIBCRYPTO -EXPERIMENTAL");
        println!(
            "(kmod-rs {}, a Rust reimplementation)",
            env!("CARGO_PKG_VERSION")
        );
        return Ok(());
    }
    for (used, name) in [
        (args.dep_u, "-u"),
        (args.dep_unresolved, "--unresolved-error"),
        (args.dep_q, "-q"),
        (args.dep_quiet, "--quiet"),
        (args.dep_r, "-r"),
        (args.dep_root, "--root"),
        (args.dep_map, "--map"),
    ] {
        if used {
            printer.emit(Level::Warning, format!("Ignored deprecated option {name}"));
        }
    }
    let mut operands = args.operands.into_iter();
    let kver = match operands.next() {
        Some(v) => {
            if !looks_like_version(v.as_bytes()) {
                return Err((
                    Level::Error,
                    format!("Bad version passed {}", v.to_string_lossy()),
                ));
            }
            v.to_string_lossy().into_owned()
        }
        None => nix::sys::utsname::uname()
            .map(|u| u.release().to_string_lossy().into_owned())
            .map_err(|e| (Level::Fatal, format!("uname() failed: {}", e.desc())))?,
    };
    let mut opts = DepmodOptions::new(kver);
    if let Some(b) = args.basedir {
        let mut b = b.into_vec();
        if b.first() != Some(&b'/') {
            let cwd = std::env::current_dir().map_err(|e| {
                (
                    Level::Fatal,
                    format!("could not get current directory: {e}"),
                )
            })?;
            let mut abs = cwd.into_os_string().into_vec();
            abs.push(b'/');
            abs.extend_from_slice(&b);
            b = abs;
        }
        opts.basedir = b;
    }
    if let Some(m) = args.moduledir {
        let m = m.into_vec();
        let trimmed: Vec<u8> = m.iter().skip_while(|&&c| c == b'/').copied().collect();
        let mut md = b"/".to_vec();
        md.extend_from_slice(&trimmed);
        opts.moduledir = md;
    }
    opts.outdir = args.outdir.map(|o| o.into_vec());
    opts.files = operands.map(|o| o.into_vec()).collect();
    opts.all = args.all;
    opts.quick = args.quick;
    if !args.config.is_empty() {
        opts.config_paths = Some(args.config);
    }
    opts.symvers = args.symvers;
    opts.filesyms = args.filesyms;
    opts.errsyms = args.errsyms;
    if opts.errsyms && opts.symvers.is_none() && opts.filesyms.is_none() {
        printer.emit(Level::Warning, "-e needs -E or -F".into());
        opts.errsyms = false;
    }
    opts.dry_run = args.dry_run;
    if let Some(p) = args.prefix {
        let p = p.into_vec();
        if p.len() != 1 {
            return Err((Level::Fatal, "-P only takes a single char".into()));
        }
        opts.prefix = Some(p[0]);
    }
    opts.verbose = args.verbose;
    opts.warn_dups = args.warn;
    opts.use_cache = !args.no_cache;

    let bar = if std::io::stderr().is_terminal() && !opts.dry_run {
        let b = indicatif::ProgressBar::new(0);
        b.set_style(
            indicatif::ProgressStyle::with_template("depmod: {bar:40} {pos}/{len} modules")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        Bar(Some(b))
    } else {
        Bar(None)
    };
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let res = depmod::run(&opts, printer, &mut out, &bar);
    let _ = out.flush();
    match res {
        Ok(summary) => {
            // Where the time went, for whoever tunes depmod: not a kmod feature, so it is
            // asked for through the environment rather than an option.
            if std::env::var_os("DEPMOD_TIMINGS").is_some() {
                let mut e = std::io::stderr().lock();
                for (name, at) in &summary.phases {
                    let _ = writeln!(
                        e,
                        "{prog}: timing: {:8.2} ms  {name}",
                        at.as_secs_f64() * 1e3,
                        prog = printer.prog
                    );
                }
            }
            Ok(())
        }
        Err(e) => Err((e.level(), e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(v: &[&str]) -> Result<Args, clap::Error> {
        Args::try_parse_from(v.iter().map(OsString::from))
    }

    #[test]
    fn callers_command_lines() {
        // weak-modules: -naeE FILE; Alpine: options after the version; DKMS: -a KVER -F map.
        let a = parse(&["depmod", "-C", "/c", "-b", "/b", "-naeE", "/sym", "6.1.0"]).unwrap();
        assert!(a.dry_run && a.all && a.errsyms);
        assert_eq!(a.symvers, Some(PathBuf::from("/sym")));
        let a = parse(&["depmod", "6.1.0", "-b", "/tmp/x"]).unwrap();
        assert_eq!(a.basedir, Some(OsString::from("/tmp/x")));
        assert_eq!(a.operands, vec![OsString::from("6.1.0")]);
        let a = parse(&["depmod", "-a", "6.1.0", "-F", "/boot/System.map"]).unwrap();
        assert_eq!(a.filesyms, Some(PathBuf::from("/boot/System.map")));
        let a = parse(&["depmod", "-ae", "-F", "/m", "-b", "/i", "6.1"]).unwrap();
        assert!(a.all && a.errsyms);
        let a = parse(&["depmod", "--dry-run", "-vv", "-u", "--quiet", "6.1"]).unwrap();
        assert!(a.dry_run && a.verbose == 2 && a.dep_u && a.dep_quiet);
        assert!(parse(&["depmod", "--bogus"]).is_err());
    }

    #[test]
    fn versions() {
        assert!(looks_like_version(b"6.1.0-28-cloud-amd64"));
        assert!(looks_like_version(b"1.0"));
        assert!(!looks_like_version(b"5"));
        assert!(!looks_like_version(b"a.1"));
        assert!(!looks_like_version(b"5."));
    }
}
