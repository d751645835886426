//! lsmod: list the loaded modules (kmod 30 behaviour, spec §6).
//!
//! The tool is thin: the argument count is checked, modcore reads `/proc/modules` and
//! `/sys/module` through a [`Root`], [`render`] formats the table, and the exit status is
//! decided in one place ([`run`]).
//!
//! kmod 30's lsmod accepts no arguments at all (not even `-h`, `-V` or `--`): any argument
//! prints `Usage: <argv0>` and exits 1. Library messages use libkmod's default printer
//! (`libkmod: <function>: <text>`), shown at ERROR level unless `KMOD_LOG` lowers the
//! threshold.

use std::ffi::OsString;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::process::ExitCode;

use modcore::procfs::{LiveError, LiveModules};
use modcore::root::Root;

/// syslog priority of library errors (`LOG_ERR`).
pub const LOG_ERR: i32 = 3;

/// `lsmod` entry point: `args` includes `argv[0]`.
pub fn main_with_args<I: IntoIterator<Item = OsString>>(args: I) -> ExitCode {
    let args: Vec<OsString> = args.into_iter().collect();
    let priority = std::env::var_os("KMOD_LOG")
        .map(|v| log_priority(v.as_bytes()))
        .unwrap_or(LOG_ERR);
    let stdout = std::io::stdout();
    let stderr = std::io::stderr();
    let code = run_args(
        &args,
        &Root::host(),
        priority,
        &mut stdout.lock(),
        &mut stderr.lock(),
    );
    ExitCode::from(code)
}

/// Check the arguments, then [`run_with_priority`]. Returns the exit status.
pub fn run_args(
    args: &[OsString],
    root: &Root,
    log_priority: i32,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> u8 {
    let argv0 = args
        .first()
        .cloned()
        .unwrap_or_else(|| OsString::from("lsmod"));
    // kmod 30's lsmod refuses every argument, `--`, `-h` and `-V` included; a getopt-style
    // parser (clap) would accept some of these, so the check is on the argument count.
    if args.len() > 1 {
        let mut line = b"Usage: ".to_vec();
        line.extend_from_slice(argv0.as_bytes());
        line.push(b'\n');
        let _ = err.write_all(&line);
        return 1;
    }
    run_with_priority(root, log_priority, out, err)
}

/// List the loaded modules of `root` (library messages at the default ERROR level).
pub fn run(root: &Root, out: &mut dyn Write, err: &mut dyn Write) -> u8 {
    run_with_priority(root, LOG_ERR, out, err)
}

/// One row of the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub name: Vec<u8>,
    /// Size, or kmod's negative errno when it could not be read.
    pub size: i64,
    /// Reference count, or a negative errno.
    pub refcnt: i64,
    /// Holder names in directory-read order.
    pub holders: Vec<Vec<u8>>,
}

/// The table header.
pub const HEADER: &str = "Module                  Size  Used by\n";

/// Format one row: `%-19s %8ld  %d`, then ` holder1,holder2` if there are holders.
pub fn render_row(row: &Row) -> Vec<u8> {
    let mut s = row.name.clone();
    if s.len() < 19 {
        s.resize(19, b' ');
    }
    s.extend_from_slice(format!(" {:>8}  {}", row.size, row.refcnt).as_bytes());
    for (i, h) in row.holders.iter().enumerate() {
        s.push(if i == 0 { b' ' } else { b',' });
        s.extend_from_slice(h);
    }
    s.push(b'\n');
    s
}

/// The whole table (header included).
pub fn render(rows: &[Row]) -> Vec<u8> {
    let mut s = HEADER.as_bytes().to_vec();
    for r in rows {
        s.extend_from_slice(&render_row(r));
    }
    s
}

/// Library messages, printed in libkmod's default form when the priority allows.
struct Log<'a> {
    err: &'a mut dyn Write,
    priority: i32,
}

impl Log<'_> {
    fn error(&mut self, func: &str, msg: &str) {
        if self.priority >= LOG_ERR {
            let _ = writeln!(self.err, "libkmod: {func}: {msg}");
        }
    }

    fn live(&mut self, e: &LiveError) {
        if e.reported() {
            self.error(e.libkmod_function(), &e.to_string());
        }
    }
}

/// Does the work with an explicit library log priority (`KMOD_LOG`).
pub fn run_with_priority(
    root: &Root,
    log_priority: i32,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> u8 {
    let mut log = Log {
        err,
        priority: log_priority,
    };

    // Creating kmod's context parses the kernel command line, even for lsmod.
    match modcore::modprobe_conf::read_cmdline(root) {
        Ok(Some(c)) => {
            for e in &c.errors {
                log.error(e.libkmod_function(), &e.to_string());
            }
        }
        Ok(None) => {}
        Err(e) => log.error(e.libkmod_function(), &e.to_string()),
    }

    let live = LiveModules::new(root);
    let names = match live.loaded() {
        Ok(n) => n,
        Err(e) => {
            log.live(&e);
            let why = match &e {
                LiveError::ProcModules(io) => io.strerror(),
                other => modcore::kernel::strerror(other.errno()),
            };
            let _ = writeln!(log.err, "Error: could not get list of modules: {why}");
            return 1;
        }
    };

    let _ = out.write_all(HEADER.as_bytes());
    for name in names {
        let Some(name) = name else {
            log.error(
                "kmod_module_new_from_loaded",
                "could not get module from name '(null)': No such file or directory",
            );
            continue;
        };
        let refcnt = live.refcnt(&name).unwrap_or_else(|e| {
            log.live(&e);
            e.kmod_value()
        });
        let size = live.size(&name).unwrap_or_else(|e| {
            log.live(&e);
            e.kmod_value()
        });
        let holders = live.holders(&name).unwrap_or_else(|e| {
            log.live(&e);
            Vec::new()
        });
        let row = Row {
            name,
            size,
            refcnt,
            holders,
        };
        let _ = out.write_all(&render_row(&row));
    }
    let _ = out.flush();
    0
}

/// libkmod's reading of `KMOD_LOG`: a number, or a word starting with `err`, `info`,
/// `debug`; anything else means 0 (silence).
pub fn log_priority(v: &[u8]) -> i32 {
    let s = String::from_utf8_lossy(v);
    let t = s.trim_start();
    let digits_end = t
        .char_indices()
        .find(|&(i, c)| !(c.is_ascii_digit() || (i == 0 && (c == '-' || c == '+'))))
        .map_or(t.len(), |(i, _)| i);
    let rest = &t[digits_end..];
    if digits_end > 0 && (rest.is_empty() || rest.starts_with(|c: char| c.is_ascii_whitespace())) {
        if let Ok(n) = t[..digits_end].parse::<i32>() {
            return n;
        }
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

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn spec_example() {
        let rows = [
            ("vfat", 24576, 0, vec![]),
            ("msdos", 20480, 1, vec![]),
            ("fat", 86016, 2, vec!["vfat", "msdos"]),
            ("btrfs", 1753088, 0, vec![]),
            ("xor", 24576, 1, vec!["btrfs"]),
            ("crc32c_intel", 24576, 1, vec![]),
        ]
        .map(|(n, s, r, h)| Row {
            name: n.as_bytes().to_vec(),
            size: s,
            refcnt: r,
            holders: h.into_iter().map(|x| x.as_bytes().to_vec()).collect(),
        });
        let expected = "Module                  Size  Used by\n\
                        vfat                   24576  0\n\
                        msdos                  20480  1\n\
                        fat                    86016  2 vfat,msdos\n\
                        btrfs                1753088  0\n\
                        xor                    24576  1 btrfs\n\
                        crc32c_intel           24576  1\n";
        assert_eq!(String::from_utf8_lossy(&render(&rows)), expected);
    }

    #[test]
    fn long_names_and_negative_values() {
        let r = Row {
            name: b"verylongmodulename_abcdef".to_vec(),
            size: 12345678,
            refcnt: 3,
            holders: vec![],
        };
        assert_eq!(render_row(&r), b"verylongmodulename_abcdef 12345678  3\n");
        let r = Row {
            name: b"x".to_vec(),
            size: -2,
            refcnt: -2,
            holders: vec![],
        };
        assert_eq!(render_row(&r), b"x                         -2  -2\n");
        let r = Row {
            name: b"big".to_vec(),
            size: 123456789012,
            refcnt: 0,
            holders: vec![],
        };
        assert_eq!(render_row(&r), b"big                 123456789012  0\n");
    }

    #[test]
    fn kmod_log_values() {
        assert_eq!(log_priority(b"3"), 3);
        assert_eq!(log_priority(b"7 "), 7);
        assert_eq!(log_priority(b"err"), 3);
        assert_eq!(log_priority(b"error"), 3);
        assert_eq!(log_priority(b"info"), 6);
        assert_eq!(log_priority(b"debug"), 7);
        assert_eq!(log_priority(b"x"), 0);
        assert_eq!(log_priority(b"3x"), 0);
    }

    #[test]
    fn any_argument_is_refused() {
        let root = Root::new("/nonexistent-lsmod-root");
        for extra in ["-h", "--help", "-V", "--", "x", "-s"] {
            let args = vec![OsString::from("/sbin/lsmod"), OsString::from(extra)];
            let (mut out, mut err) = (Vec::new(), Vec::new());
            assert_eq!(
                run_args(&args, &root, LOG_ERR, &mut out, &mut err),
                1,
                "{extra}"
            );
            assert!(out.is_empty());
            assert_eq!(err, b"Usage: /sbin/lsmod\n", "{extra}");
        }
    }
}
