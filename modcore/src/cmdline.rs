//! The kernel command line as module configuration (spec §2.5).
//!
//! `modname.param[=value]` words become `options` entries and `modprobe.blacklist=a,b`
//! becomes blacklist entries. [`parse`] is pure: it takes the bytes of `/proc/cmdline`
//! and returns the entries in command-line order plus the errors kmod reports.

/// kmod reads at most this many bytes of `/proc/cmdline`.
pub const CMDLINE_MAX: usize = 4095;

/// One configuration entry produced by the kernel command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CmdlineEntry {
    /// `options MODULE TEXT`: `module` is normalised (dashes → underscores), `options`
    /// is `param` or `param=value` exactly as written (GRUB-style `"m.p=a b"` words are
    /// re-quoted as `p="a b"`).
    Options { module: Vec<u8>, options: Vec<u8> },
    /// One piece of a `modprobe.blacklist=` value, *not* normalised (a dashed name there
    /// never matches a module), possibly empty.
    Blacklist(Vec<u8>),
}

/// A word kmod rejects with a message (all other malformed words are skipped silently).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CmdlineError {
    /// The module part of a `mod.param` word has unbalanced brackets.
    #[error(
        "Ignoring bad option on kernel command line while parsing module name: '{}'",
        String::from_utf8_lossy(module)
    )]
    BadModuleName { module: Vec<u8> },
}

impl CmdlineError {
    /// The libkmod function whose message this is.
    pub fn libkmod_function(&self) -> &'static str {
        "kmod_config_parse_kcmdline"
    }
}

/// Result of [`parse`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cmdline {
    pub entries: Vec<CmdlineEntry>,
    pub errors: Vec<CmdlineError>,
}

impl Cmdline {
    /// The options entries as `(module, options)` pairs.
    pub fn options(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.entries.iter().filter_map(|e| match e {
            CmdlineEntry::Options { module, options } => Some((&module[..], &options[..])),
            CmdlineEntry::Blacklist(_) => None,
        })
    }

    /// The blacklist entries.
    pub fn blacklist(&self) -> impl Iterator<Item = &[u8]> {
        self.entries.iter().filter_map(|e| match e {
            CmdlineEntry::Blacklist(b) => Some(&b[..]),
            CmdlineEntry::Options { .. } => None,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Ignore,
    Modname,
    Param,
    Value,
    Complete,
}

fn is_blank(c: u8) -> bool {
    matches!(c, b' ' | b'\n' | b'\t' | 0x0b | 0x0c | b'\r')
}

/// The NUL-terminated string starting at `i` in `buf`.
fn c_str(buf: &[u8], i: usize) -> &[u8] {
    let tail = buf.get(i..).unwrap_or(&[]);
    let end = tail.iter().position(|&c| c == 0).unwrap_or(tail.len());
    &tail[..end]
}

/// Parse the kernel command line.
///
/// The scan follows kmod 30 byte for byte: words are separated by blanks (space, tab,
/// newline, CR, VT, FF); a word is `MODNAME.PARAM[=VALUE]` with exactly one dot before the
/// first `=`; a double quote may open the word (GRUB style) or appear inside the value,
/// where it protects blanks; a quote anywhere else, a second dot in the parameter, or an
/// `=` in the module name makes the whole word ignored. Only the first [`CMDLINE_MAX`]
/// bytes are considered, and a NUL byte ends the line.
pub fn parse(raw: &[u8]) -> Cmdline {
    let raw = &raw[..raw.len().min(CMDLINE_MAX)];
    let end = raw.iter().position(|&c| c == 0).unwrap_or(raw.len());
    // Work on a NUL-terminated copy; terminators are written into it as words complete.
    let mut buf: Vec<u8> = Vec::with_capacity(end + 1);
    buf.extend_from_slice(&raw[..end]);
    buf.push(0);

    let mut out = Cmdline::default();
    let mut state = State::Modname;
    let mut quoted = false;
    let mut modname = 0usize;
    let mut param: Option<usize> = None;
    let mut value: Option<usize> = None;
    let mut quote_start: Option<usize> = None;

    let mut p = 0usize;
    loop {
        let c = buf[p];
        let last = c == 0;
        match c {
            b'"' => {
                quoted = !quoted;
                // Only a quote opening the word is allowed outside the value.
                if quoted && state == State::Modname && p == modname {
                    quote_start = Some(p);
                    modname = p + 1;
                } else if state != State::Value {
                    state = State::Ignore;
                }
            }
            c if c == 0 || is_blank(c) => {
                if quoted && state == State::Value {
                    // a quoted blank belongs to the value
                } else if quoted {
                    state = State::Ignore;
                } else if state == State::Value || state == State::Param {
                    buf[p] = 0;
                    state = State::Complete;
                } else {
                    modname = p + 1;
                    state = State::Modname;
                    quote_start = None;
                }
            }
            b'.' => {
                if state == State::Modname {
                    buf[p] = 0;
                    param = Some(p + 1);
                    state = State::Param;
                } else if state == State::Param {
                    state = State::Ignore;
                }
            }
            b'=' => {
                if state == State::Param {
                    value = Some(p + 1);
                    state = State::Value;
                } else if state == State::Modname {
                    state = State::Ignore;
                }
            }
            _ => {}
        }

        if state == State::Complete {
            // GRUB passes `"mod.p=a b"`; turn it into `mod.p="a b"` by shifting
            // `mod\0p=` one byte left over the opening quote and putting the quote
            // in front of the value.
            if let (Some(q), Some(v)) = (quote_start, value) {
                if q < modname && v >= modname {
                    buf.copy_within(modname..v, q);
                    modname -= 1;
                    param = param.map(|x| x - 1);
                    value = Some(v - 1);
                    buf[v - 1] = b'"';
                }
            }
            if let Some(pi) = param {
                emit(
                    &mut out,
                    c_str(&buf, modname),
                    c_str(&buf, pi),
                    value.map(|v| c_str(&buf, v)),
                );
            }
            modname = p + 1;
            state = State::Modname;
            quote_start = None;
        }

        if last {
            break;
        }
        p += 1;
    }
    out
}

fn emit(out: &mut Cmdline, modname: &[u8], param: &[u8], value: Option<&[u8]>) {
    if modname == b"modprobe" && param.starts_with(b"blacklist=") {
        let value = value.unwrap_or(&param[b"blacklist=".len()..]);
        for piece in value.split(|&c| c == b',') {
            out.entries.push(CmdlineEntry::Blacklist(piece.to_vec()));
        }
        return;
    }
    match crate::name::normalize_alias(modname) {
        Ok(module) => out.entries.push(CmdlineEntry::Options {
            module,
            options: param.to_vec(),
        }),
        Err(_) => out.errors.push(CmdlineError::BadModuleName {
            module: modname.to_vec(),
        }),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;

    fn opts(m: &str, o: &str) -> CmdlineEntry {
        CmdlineEntry::Options {
            module: m.as_bytes().to_vec(),
            options: o.as_bytes().to_vec(),
        }
    }

    fn bl(m: &str) -> CmdlineEntry {
        CmdlineEntry::Blacklist(m.as_bytes().to_vec())
    }

    fn entries(s: &str) -> Vec<CmdlineEntry> {
        let c = parse(s.as_bytes());
        assert!(c.errors.is_empty(), "{s}: {:?}", c.errors);
        c.entries
    }

    #[test]
    fn spec_table() {
        assert_eq!(entries("fat.debug=1"), vec![opts("fat", "debug=1")]);
        assert_eq!(entries("mod_simple.foo"), vec![opts("mod_simple", "foo")]);
        assert_eq!(
            entries("snd-hda-intel.model=auto"),
            vec![opts("snd_hda_intel", "model=auto")]
        );
        assert_eq!(entries("msdos.x=\"a b\""), vec![opts("msdos", "x=\"a b\"")]);
        assert_eq!(
            entries("\"vfat.codepage=850 y\""),
            vec![opts("vfat", "codepage=\"850 y\"")]
        );
        assert_eq!(
            entries("modprobe.blacklist=floppy,pcspkr"),
            vec![bl("floppy"), bl("pcspkr")]
        );
        assert_eq!(
            entries("testmodule.testparam=1.5G"),
            vec![opts("testmodule", "testparam=1.5G")]
        );
        for ignored in ["a.b.c=1", "=x", "mitigations=auto", "0.0.0.0:2024", "quiet"] {
            assert_eq!(entries(ignored), vec![], "{ignored}");
        }
        assert_eq!(entries(".y=2"), vec![opts("", "y=2")]);
        assert_eq!(entries("mod.=3"), vec![opts("mod", "=3")]);
        assert_eq!(
            entries("modprobe.blacklistx=y"),
            vec![opts("modprobe", "blacklistx=y")]
        );
        assert_eq!(
            entries("MODPROBE.blacklist=x"),
            vec![opts("MODPROBE", "blacklist=x")]
        );
    }

    #[test]
    fn bad_module_names_are_reported() {
        let c = parse(b"bad-[x.y=1 fat.a=1");
        assert_eq!(c.entries, vec![opts("fat", "a=1")]);
        assert_eq!(
            c.errors,
            vec![CmdlineError::BadModuleName {
                module: b"bad-[x".to_vec()
            }]
        );
        assert_eq!(
            c.errors[0].to_string(),
            "Ignoring bad option on kernel command line while parsing module name: 'bad-[x'"
        );
        // `ivrs_acpihid[14:00.5]=...`: the module part `ivrs_acpihid[14:00` has an
        // unterminated bracket, so kmod reports it too.
        let c = parse(b"ivrs_acpihid[14:00.5]=AMD0020:00");
        assert!(c.entries.is_empty());
        assert_eq!(c.errors.len(), 1);
    }

    #[test]
    fn a_whole_line() {
        let line = b"BOOT_IMAGE=/vmlinuz-6.1.0 root=UUID=abc ro quiet fat.debug=1 \
                     modprobe.blacklist=snd-hda-intel,pcspkr modprobe.blacklist=floppy \
                     msdos.x=\"a b\" -- init.arg=1\n";
        assert_eq!(
            parse(line).entries,
            vec![
                opts("fat", "debug=1"),
                bl("snd-hda-intel"),
                bl("pcspkr"),
                bl("floppy"),
                opts("msdos", "x=\"a b\""),
                opts("init", "arg=1"),
            ]
        );
    }

    #[test]
    fn quoting_rules() {
        // A quote that does not open the word ignores it, up to the closing quote.
        assert_eq!(entries("x\"y z\" fat.d=1"), vec![opts("fat", "d=1")]);
        // A quote in the parameter name ignores the word.
        assert_eq!(entries("m.\"p=1\" fat.d=1"), vec![opts("fat", "d=1")]);
        // Opening quote without a value: ignored.
        assert_eq!(entries("\"m.p\" fat.d=1"), vec![opts("fat", "d=1")]);
        // Unterminated quoted value swallows the rest of the line.
        assert_eq!(entries("m.p=\"a b fat.d=1"), vec![]);
        // Tabs and newlines separate words like spaces.
        assert_eq!(
            entries("a.b=1\tc.d=2\ne.f=3"),
            vec![opts("a", "b=1"), opts("c", "d=2"), opts("e", "f=3")]
        );
        // A quoted tab stays in the value (the config layer turns it into a space).
        assert_eq!(entries("m.p=\"a\tb\""), vec![opts("m", "p=\"a\tb\"")]);
        // GRUB-quoted blacklist: the value keeps the inserted quote.
        assert_eq!(entries("\"modprobe.blacklist=a b\""), vec![bl("\"a b\"")]);
        // Empty pieces are kept like kmod does.
        assert_eq!(entries("modprobe.blacklist="), vec![bl("")]);
        assert_eq!(
            entries("modprobe.blacklist=a,,b"),
            vec![bl("a"), bl(""), bl("b")]
        );
        // `mod.` alone: empty parameter.
        assert_eq!(entries("m."), vec![opts("m", "")]);
    }

    #[test]
    fn limits() {
        assert_eq!(entries(""), vec![]);
        assert_eq!(entries("   \n"), vec![]);
        // A NUL byte ends the command line.
        assert_eq!(entries("a.b=1\0c.d=2"), vec![opts("a", "b=1")]);
        // Only the first 4095 bytes are read.
        let mut long = vec![b' '; CMDLINE_MAX - 3];
        long.extend_from_slice(b"a.b=1 c.d=2");
        assert_eq!(parse(&long).entries, vec![opts("a", "b")]);
        // Arbitrary bytes never panic.
        for b in 0..=255u8 {
            let _ = parse(&[b, b'.', b, b'=', b'"', b, b'"', b]);
        }
    }
}
