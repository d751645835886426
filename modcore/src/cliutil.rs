//! Small pieces the tool front ends share: program name, getopt-style error texts,
//! the version lines, verbosity thresholds, the kmod message line, and syslog output.
//!
//! These are helpers for the thin binaries; the logic of the tools lives elsewhere.

use std::os::unix::net::UnixDatagram;

use crate::diag::Level;

/// What `-V`/`--version` prints (two lines; scripts parse the first).
pub const VERSION_TEXT: &str = "kmod version 30\n+ZSTD +XZ +ZLIB +LIBCRYPTO -EXPERIMENTAL\n";

/// The basename of `argv[0]` (kmod's own messages use it), `default` if empty.
pub fn prog_name(argv0: Option<&std::ffi::OsStr>, default: &str) -> String {
    use std::os::unix::ffi::OsStrExt;
    argv0
        .map(|a| {
            let b = a.as_bytes();
            let base = b.rsplit(|&c| c == b'/').next().unwrap_or(b);
            String::from_utf8_lossy(base).into_owned()
        })
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| default.to_string())
}

/// A command-line error, to be printed the way glibc's `getopt_long` prints it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GetoptError {
    /// An unknown option as typed (`-Z`, `--bogus`, `--bogus=1`).
    Unknown(String),
    /// An option that needs an argument and got none (`-F`, `--field`).
    MissingArgument(String),
    /// A long option given an argument it does not take (`--force=1`).
    UnexpectedArgument(String),
    /// An abbreviated long option matching several (`--f`), with the candidates.
    Ambiguous(String, Vec<String>),
}

impl GetoptError {
    /// Classify an unknown long option: ambiguous when it is a prefix of several of
    /// `longs` (the tool's long options in its option-table order, without `--`).
    pub fn unknown_long(typed: &str, longs: &[&str]) -> GetoptError {
        let name = typed.trim_start_matches("--");
        let name = name.split('=').next().unwrap_or(name);
        let hits: Vec<String> = longs
            .iter()
            .filter(|l| l.starts_with(name) && !name.is_empty())
            .map(|l| format!("--{l}"))
            .collect();
        if hits.len() > 1 {
            GetoptError::Ambiguous(typed.to_string(), hits)
        } else {
            GetoptError::Unknown(typed.to_string())
        }
    }
}

/// glibc's message for a command-line error; `argv0` exactly as invoked.
/// How a command line that clap refused is answered (see [`clap_failure`]).
#[cfg(feature = "clap")]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CliFailure {
    /// `-h`/`--help`: the help text, for stdout, exit 0.
    Help(String),
    /// getopt's message (or clap's own for anything getopt has no words for), for
    /// stderr, exit 1.
    Error(String),
}

/// Turn clap's error into kmod's: getopt's wording for unknown options (long ones
/// abbreviated as getopt allows, `longs` being the tool's long option names), missing and
/// unexpected option arguments.
#[cfg(feature = "clap")]
pub fn clap_failure(
    argv0: &str,
    argv: &[std::ffi::OsString],
    e: clap::Error,
    longs: &[&str],
) -> CliFailure {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    if matches!(
        e.kind(),
        ErrorKind::DisplayHelp | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        return CliFailure::Help(e.render().to_string());
    }
    let arg = match e.get(ContextKind::InvalidArg) {
        Some(ContextValue::String(s)) => s.split_whitespace().next().unwrap_or("").to_string(),
        _ => String::new(),
    };
    let g = match e.kind() {
        ErrorKind::UnknownArgument if arg.starts_with("--") => {
            // getopt names an unknown long option as typed, `=value` included.
            let typed = argv
                .iter()
                .map(|a| a.to_string_lossy())
                .find(|a| {
                    *a == arg
                        || a.strip_prefix(arg.as_str())
                            .is_some_and(|r| r.starts_with('='))
                })
                .map_or_else(|| arg.clone(), |a| a.into_owned());
            match GetoptError::unknown_long(&arg, longs) {
                GetoptError::Unknown(_) => GetoptError::Unknown(typed),
                other => other,
            }
        }
        ErrorKind::UnknownArgument => GetoptError::Unknown(arg),
        ErrorKind::InvalidValue | ErrorKind::WrongNumberOfValues => {
            // The option as typed: the last argument (a value-less option at the end).
            let typed = argv
                .last()
                .map(|a| a.to_string_lossy().into_owned())
                .filter(|a| a.starts_with('-'))
                .unwrap_or(arg);
            GetoptError::MissingArgument(typed)
        }
        ErrorKind::TooManyValues | ErrorKind::NoEquals => {
            // clap shows the option with a value placeholder ("--force..."); getopt
            // names the option alone.
            let name = arg.trim_end_matches("...").to_string();
            GetoptError::UnexpectedArgument(name)
        }
        _ => return CliFailure::Error(e.render().to_string().trim_end().to_string()),
    };
    CliFailure::Error(getopt_message(argv0, &g))
}

pub fn getopt_message(argv0: &str, e: &GetoptError) -> String {
    match e {
        GetoptError::Unknown(a) if a.starts_with("--") => {
            format!("{argv0}: unrecognized option '{a}'")
        }
        GetoptError::Unknown(a) => format!(
            "{argv0}: invalid option -- '{}'",
            a.trim_start_matches('-').chars().next().unwrap_or('?')
        ),
        GetoptError::MissingArgument(a) if a.starts_with("--") => {
            format!("{argv0}: option '{a}' requires an argument")
        }
        GetoptError::MissingArgument(a) => format!(
            "{argv0}: option requires an argument -- '{}'",
            a.trim_start_matches('-').chars().next().unwrap_or('?')
        ),
        GetoptError::Ambiguous(a, hits) => {
            let list: Vec<String> = hits.iter().map(|h| format!("'{h}'")).collect();
            format!(
                "{argv0}: option '{a}' is ambiguous; possibilities: {}",
                list.join(" ")
            )
        }
        GetoptError::UnexpectedArgument(a) => {
            let name = a.split('=').next().unwrap_or(a);
            format!("{argv0}: option '{name}' doesn't allow an argument")
        }
    }
}

/// The threshold after `verbose` `-v` flags, starting from `base` (insmod and rmmod
/// start at ERROR, modprobe at WARNING). Each `-v` admits one more level.
pub fn threshold(base: Level, verbose: u8) -> Level {
    const ORDER: [Level; 6] = [
        Level::Fatal,
        Level::Error,
        Level::Warning,
        Level::Notice,
        Level::Info,
        Level::Debug,
    ];
    let i = ORDER.iter().position(|&l| l == base).unwrap_or(1);
    ORDER[(i + usize::from(verbose)).min(ORDER.len() - 1)]
}

/// syslog priority of a level.
pub fn syslog_priority(level: Level) -> u8 {
    match level {
        Level::Fatal => 2,
        Level::Error => 3,
        Level::Warning => 4,
        Level::Notice => 5,
        Level::Info => 6,
        Level::Debug => 7,
    }
}

/// A connection to the system log (`/dev/log`), facility daemon, like kmod's
/// `openlog(prog, LOG_CONS, LOG_DAEMON)`. Messages are sent as
/// `<PRI>ident: LEVEL: text`. When `/dev/log` is not available messages are dropped.
#[derive(Debug)]
pub struct Syslog {
    ident: String,
    sock: Option<UnixDatagram>,
}

impl Syslog {
    /// Connect to `/dev/log`.
    pub fn open(ident: &str) -> Syslog {
        let sock = UnixDatagram::unbound()
            .ok()
            .filter(|s| s.connect("/dev/log").is_ok());
        Syslog {
            ident: ident.to_string(),
            sock,
        }
    }

    /// Send one message at `level`.
    pub fn send(&self, level: Level, text: &str) {
        const LOG_DAEMON: u8 = 3 << 3;
        if let Some(s) = &self.sock {
            let msg = format!(
                "<{}>{}: {}: {}",
                LOG_DAEMON | syslog_priority(level),
                self.ident,
                level,
                text.trim_end_matches('\n')
            );
            let _ = s.send(msg.as_bytes());
        }
    }
}

/// Set the C allocator up for a short run that allocates a lot at once and exits (the
/// depmod tool): memory is taken from the heap in steps of a few megabytes and never
/// handed back while the process lives, and large blocks come from the heap too rather
/// than from mappings of their own. Each return of memory, each mapping made or removed
/// and each growth of a heap is a system call that, with several threads running, also
/// makes every processor drop its address translations; a block mapped on its own
/// comes back unmapped when freed and fresh (faulted in page by page) when allocated
/// again. On the 6.12 tree an incremental depmod run takes 550 fewer page faults and
/// about 3 ms less CPU time. Only glibc's allocator has these settings; elsewhere this
/// does nothing. Call it first thing, before the allocations it is meant for.
pub fn tune_allocator_for_batch() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[allow(unsafe_code)]
    // SAFETY: mallopt(3) only sets allocator parameters (integers), takes the
    // allocator's own lock (it is MT-safe), and refuses a value it does not accept.
    unsafe {
        use nix::libc::{mallopt, M_MMAP_THRESHOLD, M_TOP_PAD, M_TRIM_THRESHOLD};
        // 32 MiB is the largest threshold glibc takes on 64-bit systems.
        mallopt(M_MMAP_THRESHOLD, 32 << 20);
        mallopt(M_TRIM_THRESHOLD, 256 << 20);
        mallopt(M_TOP_PAD, 4 << 20);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn getopt_texts() {
        assert_eq!(
            getopt_message("rmmod", &GetoptError::Unknown("-Z".into())),
            "rmmod: invalid option -- 'Z'"
        );
        assert_eq!(
            getopt_message("/sbin/rmmod", &GetoptError::Unknown("--bogus".into())),
            "/sbin/rmmod: unrecognized option '--bogus'"
        );
        assert_eq!(
            getopt_message("modinfo", &GetoptError::MissingArgument("-F".into())),
            "modinfo: option requires an argument -- 'F'"
        );
        assert_eq!(
            getopt_message("modinfo", &GetoptError::MissingArgument("--field".into())),
            "modinfo: option '--field' requires an argument"
        );
        assert_eq!(
            getopt_message(
                "insmod",
                &GetoptError::UnexpectedArgument("--force=1".into())
            ),
            "insmod: option '--force' doesn't allow an argument"
        );
    }

    #[test]
    fn ambiguity() {
        let longs = ["author", "filename", "field", "null"];
        let g = GetoptError::unknown_long("--f", &longs);
        assert_eq!(
            getopt_message("modinfo", &g),
            "modinfo: option '--f' is ambiguous; possibilities: '--filename' '--field'"
        );
        assert_eq!(
            GetoptError::unknown_long("--zz", &longs),
            GetoptError::Unknown("--zz".into())
        );
    }

    #[test]
    fn thresholds() {
        assert_eq!(threshold(Level::Error, 0), Level::Error);
        assert_eq!(threshold(Level::Error, 1), Level::Warning);
        assert_eq!(threshold(Level::Error, 3), Level::Info);
        assert_eq!(threshold(Level::Error, 9), Level::Debug);
        assert_eq!(threshold(Level::Warning, 1), Level::Notice);
    }

    #[test]
    fn names() {
        use std::ffi::OsStr;
        assert_eq!(prog_name(Some(OsStr::new("/sbin/rmmod")), "x"), "rmmod");
        assert_eq!(prog_name(None, "x"), "x");
    }
}
