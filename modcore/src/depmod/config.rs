//! depmod.d configuration (spec depmod-and-index §2): file collection and parsing.
//!
//! [`parse`] is pure: it takes a file's name and bytes. [`collect`] reads directories.

use crate::diag::{Level, Sink};
use std::path::{Path, PathBuf};

/// kmod 30's default config locations, in precedence order. Never rebased under `-b`.
pub const DEFAULT_DIRS: &[&str] = &[
    "/etc/depmod.d",
    "/run/depmod.d",
    "/usr/local/lib/depmod.d",
    "/lib/depmod.d",
];

/// One `search` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SearchEntry {
    BuiltIn,
    External,
    /// A path relative to the module directory (no trailing slash).
    Path(Vec<u8>),
}

/// The parsed configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DepmodConfig {
    /// `search` entries in config order. Empty means "no search line at all".
    pub search: Vec<SearchEntry>,
    /// `override` keys `SUBDIR/MOD`, in config order.
    pub overrides: Vec<Vec<u8>>,
    /// `external` directories, in config order.
    pub externals: Vec<Vec<u8>>,
    /// `exclude`d directory-entry names.
    pub excludes: Vec<Vec<u8>>,
}

impl Default for DepmodConfig {
    fn default() -> Self {
        Self::new()
    }
}

impl DepmodConfig {
    pub fn new() -> Self {
        DepmodConfig {
            search: Vec::new(),
            overrides: Vec::new(),
            externals: Vec::new(),
            excludes: Vec::new(),
        }
    }

    /// The search list in effect: `[updates]` when no `search` line was seen.
    pub fn effective_search(&self) -> Vec<SearchEntry> {
        if self.search.is_empty() {
            vec![SearchEntry::Path(b"updates".to_vec())]
        } else {
            self.search.clone()
        }
    }
}

/// Does a config KVER field match the kernel version? `*` matches all; anything else is
/// an unanchored POSIX ERE search. A regex that does not compile never matches.
pub fn kver_matches(pattern: &[u8], kver: &str) -> bool {
    if pattern == b"*" {
        return true;
    }
    let Ok(p) = std::str::from_utf8(pattern) else {
        return false;
    };
    match regex::RegexBuilder::new(p).size_limit(1 << 20).build() {
        Ok(re) => re.is_match(kver),
        Err(_) => false,
    }
}

/// Split a config file into logical lines: `(physical line number of the last line, text)`.
/// Backslash-newline joins lines; backslash + other char keeps that char.
pub fn logical_lines(text: &[u8]) -> Vec<(usize, Vec<u8>)> {
    let mut out = Vec::new();
    let mut cur = Vec::new();
    let mut lineno = 0usize;
    let mut i = 0;
    let mut any = false;
    while i < text.len() {
        let b = text[i];
        any = true;
        match b {
            b'\\' if i + 1 < text.len() => {
                if text[i + 1] == b'\n' {
                    lineno += 1;
                } else {
                    cur.push(text[i + 1]);
                }
                i += 2;
                continue;
            }
            b'\\' => {}
            b'\n' => {
                lineno += 1;
                out.push((lineno, std::mem::take(&mut cur)));
                any = false;
            }
            _ => cur.push(b),
        }
        i += 1;
    }
    if any {
        out.push((lineno + 1, cur));
    }
    out
}

fn tokens(line: &[u8]) -> Vec<&[u8]> {
    line.split(|&b| b == b' ' || b == b'\t')
        .filter(|t| !t.is_empty())
        .collect()
}

/// Parse one depmod.d file into `cfg`. `file` is only used in messages.
pub fn parse(cfg: &mut DepmodConfig, file: &Path, text: &[u8], kver: &str, sink: &mut dyn Sink) {
    let fname = file.display();
    for (lineno, line) in logical_lines(text) {
        if line.is_empty() || line[0] == b'#' {
            continue;
        }
        let toks = tokens(&line);
        let Some(&cmd) = toks.first() else {
            continue;
        };
        let bad = |sink: &mut dyn Sink| {
            sink.emit(
                Level::Error,
                format!(
                    "{fname}:{lineno}: ignoring bad line starting with '{}'",
                    String::from_utf8_lossy(cmd)
                ),
            )
        };
        match cmd {
            b"search" => {
                for t in &toks[1..] {
                    let e = match *t {
                        b"built-in" => SearchEntry::BuiltIn,
                        b"external" => SearchEntry::External,
                        p => {
                            let mut p = p.to_vec();
                            while p.len() > 1 && p.last() == Some(&b'/') {
                                p.pop();
                            }
                            SearchEntry::Path(p)
                        }
                    };
                    cfg.search.push(e);
                }
            }
            b"override" => {
                if toks.len() < 4 {
                    bad(sink);
                    continue;
                }
                let (module, ver, subdir) = (toks[1], toks[2], toks[3]);
                if kver_matches(ver, kver) {
                    let mut key = subdir.to_vec();
                    key.push(b'/');
                    key.extend_from_slice(module);
                    cfg.overrides.push(key);
                } else {
                    sink.emit(
                        Level::Info,
                        format!(
                            "{fname}:{lineno}: override kernel did not match {}",
                            String::from_utf8_lossy(ver)
                        ),
                    );
                }
            }
            b"external" => {
                if toks.len() < 3 {
                    bad(sink);
                    continue;
                }
                let (ver, dir) = (toks[1], toks[2]);
                if kver_matches(ver, kver) {
                    cfg.externals.push(dir.to_vec());
                } else {
                    sink.emit(
                        Level::Info,
                        format!(
                            "{fname}:{lineno}: external directory did not match {}",
                            String::from_utf8_lossy(ver)
                        ),
                    );
                }
            }
            b"exclude" => {
                for t in &toks[1..] {
                    cfg.excludes.push(t.to_vec());
                }
            }
            b"include" | b"make_map_files" => sink.emit(
                Level::Info,
                format!(
                    "{fname}:{lineno}: command {} not implemented yet",
                    String::from_utf8_lossy(cmd)
                ),
            ),
            _ => bad(sink),
        }
    }
}

/// Warns about a configuration file or directory every user may write (kmod says
/// nothing): whoever writes there decides which directories depmod indexes.
fn warn_world_writable(path: &Path, meta: &std::fs::Metadata, sink: &mut dyn Sink) {
    use std::os::unix::fs::PermissionsExt;
    if meta.permissions().mode() & 0o002 != 0 {
        sink.emit(
            Level::Warning,
            format!(
                "{} is world-writable: any user can change what depmod indexes",
                path.display()
            ),
        );
    }
}

/// Collect config files from `paths` (files or directories) by kmod's rules: missing
/// entries skipped, `.conf` only, first basename wins, all sorted by basename.
/// World-writable directories and used files are warned about (and still read).
pub fn collect(paths: &[PathBuf], sink: &mut dyn Sink) -> Vec<PathBuf> {
    use std::os::unix::ffi::OsStrExt;
    let mut found: Vec<(Vec<u8>, PathBuf)> = Vec::new();
    let add = |found: &mut Vec<(Vec<u8>, PathBuf)>, base: Vec<u8>, p: PathBuf| {
        if found.iter().any(|(b, _)| *b == base) {
            return false;
        }
        found.push((base, p));
        true
    };
    for p in paths {
        let Ok(meta) = std::fs::metadata(p) else {
            continue;
        };
        if !meta.is_dir() {
            let base = p
                .file_name()
                .map(|n| n.as_bytes().to_vec())
                .unwrap_or_default();
            if add(&mut found, base, p.clone()) {
                warn_world_writable(p, &meta, sink);
            }
            continue;
        }
        warn_world_writable(p, &meta, sink);
        let Ok(rd) = std::fs::read_dir(p) else {
            continue;
        };
        let mut entries: Vec<_> = rd.filter_map(Result::ok).collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let name = e.file_name();
            let nb = name.as_bytes();
            if nb.first() == Some(&b'.') {
                continue;
            }
            let full = p.join(&name);
            if nb.len() < 6 || !nb.ends_with(b".conf") {
                sink.emit(
                    Level::Info,
                    format!("All cfg files need .conf: {}", full.display()),
                );
                continue;
            }
            let meta = std::fs::metadata(&full);
            if meta.as_ref().map(|m| m.is_dir()).unwrap_or(false) {
                sink.emit(
                    Level::Error,
                    format!(
                        "Directories inside directories are not supported: {}",
                        full.display()
                    ),
                );
                continue;
            }
            if add(&mut found, nb.to_vec(), full.clone()) {
                if let Ok(m) = &meta {
                    warn_world_writable(&full, m, sink);
                }
            }
        }
    }
    found.sort_by(|a, b| a.0.cmp(&b.0));
    found.into_iter().map(|(_, p)| p).collect()
}

/// Collect and parse all config files. Unreadable files are reported and skipped.
pub fn load(paths: &[PathBuf], kver: &str, sink: &mut dyn Sink) -> DepmodConfig {
    let mut cfg = DepmodConfig::new();
    for f in collect(paths, sink) {
        match std::fs::read(&f) {
            Ok(text) => parse(&mut cfg, &f, &text, kver, sink),
            Err(e) => sink.emit(Level::Error, format!("could not read {}: {e}", f.display())),
        }
    }
    cfg
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diag::Collect;

    fn p(text: &str) -> (DepmodConfig, Collect) {
        let mut c = DepmodConfig::new();
        let mut s = Collect::default();
        parse(
            &mut c,
            Path::new("t.conf"),
            text.as_bytes(),
            "1.0.0-test",
            &mut s,
        );
        (c, s)
    }

    #[test]
    fn directives() {
        let (c, s) = p("search updates built-in  extra/\n\
             override dup-5 * extra\n\
             override x 2.0 extra\n\
             external 0-te /opt/ext\n\
             exclude foo bar\n\
             # comment\n\
             \n\
             include x\n\
             \x20# not a comment\n\
             override a b\n");
        assert_eq!(
            c.search,
            vec![
                SearchEntry::Path(b"updates".to_vec()),
                SearchEntry::BuiltIn,
                SearchEntry::Path(b"extra".to_vec())
            ]
        );
        assert_eq!(c.overrides, vec![b"extra/dup-5".to_vec()]);
        assert_eq!(c.externals, vec![b"/opt/ext".to_vec()]);
        assert_eq!(c.excludes, vec![b"foo".to_vec(), b"bar".to_vec()]);
        let errs: Vec<_> = s.at(Level::Error).collect();
        assert_eq!(
            errs,
            vec![
                "t.conf:9: ignoring bad line starting with '#'",
                "t.conf:10: ignoring bad line starting with 'override'"
            ]
        );
        let infos: Vec<_> = s.at(Level::Info).collect();
        assert_eq!(
            infos,
            vec![
                "t.conf:3: override kernel did not match 2.0",
                "t.conf:8: command include not implemented yet"
            ]
        );
    }

    #[test]
    fn continuation_and_escapes() {
        let l = logical_lines(b"a \\\nb\nc\\d\nlast");
        assert_eq!(
            l,
            vec![
                (2, b"a b".to_vec()),
                (3, b"cd".to_vec()),
                (4, b"last".to_vec())
            ]
        );
    }

    #[test]
    fn default_search() {
        assert_eq!(
            DepmodConfig::new().effective_search(),
            vec![SearchEntry::Path(b"updates".to_vec())]
        );
        assert!(kver_matches(b"0-te", "1.0.0-test"));
        assert!(!kver_matches(b"^0-te", "1.0.0-test"));
        assert!(!kver_matches(b"(", "1.0.0-test"));
    }
}
