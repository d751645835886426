//! Explanations for failed loads and unloads: the lines kmod never prints (spec
//! runtime-tools §9.2).
//!
//! kmod reports a failed `init_module` with one errno text ("Unknown symbol in module",
//! "Invalid module format", ...) and sends the user to `dmesg`. The functions here look
//! at what is around the failure — the kernel log records written by the failed call,
//! the module file, the indexes of the module directory, the live module state — and
//! return extra lines that say what went wrong and what to do. A tool prints them
//! **after** its kmod-compatible error line, on stderr, each as
//! `<prog>: NOTE: <line>` (see [`NOTE_LEVEL`]); exit codes and stdout are unchanged.
//!
//! Use:
//!
//! ```text
//! let cursor = KmsgCursor::open(root);           // before the system call
//! let r = load::insert_module(kernel, path, params, &opts, sink);
//! if let Err(e) = &r {
//!     let kmsg = cursor.map(|mut c| c.read_new());
//!     let failed = FailedInsert::from_load_error(name, Some(path), e, opts.forced(), kmsg.as_deref());
//!     for line in explain_insert(&ctx, &failed) { eprintln!("{prog}: NOTE: {line}") }
//! }
//! ```
//!
//! What is explained:
//!
//! * **unresolved symbols** (ENOENT from the kernel): the symbols, from the kernel log
//!   (`NAME: Unknown symbol SYM (err -2)`) or, when the log is not readable, computed from
//!   the module's needed symbols and `/proc/kallsyms` or `modules.symbols.bin` plus the
//!   loaded modules; for each symbol the module that exports it (`modules.symbols.bin`),
//!   whether it is loaded, and the command that loads it (`modprobe fat`);
//! * **not a module** (ENOEXEC, a too-short file): not ELF, not a relocatable object, built
//!   for another architecture, no `.modinfo`; and whether a module of that name is built
//!   into the kernel;
//! * **wrong kernel**: the module's vermagic against the running release;
//! * **symbol version mismatches**, **signature refusals**, **EPERM causes**
//!   (`module_blacklist=`, `modules_disabled`, not root), **already loaded**;
//! * **module in use** (removal): the holders, the order in which they would have to go,
//!   and references that do not come from modules (open files, mounts);
//! * the kernel's own reason, quoted from the log records of the failed call.
//!
//! Everything here reads through the [`Root`] and never fails: what cannot be found out
//! is left out.

use std::collections::{BTreeMap, HashSet};
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::compress::{self, CompressError, Compression, Decoders};
use crate::elf::{Elf, ElfError};
use crate::index::IndexFile;
use crate::kernel::{strerror, Errno};
use crate::load::LoadError;
use crate::module::ModuleData;
use crate::procfs::{InitState, LiveModules};
use crate::root::Root;

/// The word tools print between their name and an explanation line:
/// `insmod: NOTE: <line>`. Explanations accompany an error and are printed whenever that
/// error line is printed.
pub const NOTE_LEVEL: &str = "NOTE";

/// At most this many kernel log lines are quoted for one failure.
const MAX_QUOTES: usize = 8;
/// At most this many symbols are named in one line.
const MAX_SYMBOLS: usize = 12;

// ===================================================================================
// The kernel log
// ===================================================================================

/// One record of `/dev/kmsg` (`PRIO,SEQ,USEC,FLAGS;MESSAGE`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KmsgRecord {
    /// Syslog level (0..=7), facility removed.
    pub level: u8,
    pub seq: u64,
    pub usec: u64,
    /// The message as the kernel escaped it (non-printable bytes as `\xNN`).
    pub message: String,
}

/// Parse `/dev/kmsg` text: one record per line; continuation lines (starting with a
/// blank, the record's dictionary) and malformed lines are skipped.
pub fn parse_kmsg(text: &[u8]) -> Vec<KmsgRecord> {
    text.split(|&b| b == b'\n')
        .filter_map(parse_kmsg_record)
        .collect()
}

/// Parse one `/dev/kmsg` record line.
pub fn parse_kmsg_record(line: &[u8]) -> Option<KmsgRecord> {
    if matches!(line.first(), None | Some(b' ')) {
        return None;
    }
    let semi = line.iter().position(|&b| b == b';')?;
    let head = std::str::from_utf8(&line[..semi]).ok()?;
    let mut fields = head.split(',');
    let prio: u32 = fields.next()?.parse().ok()?;
    let seq = fields.next()?.parse().ok()?;
    let usec = fields.next()?.parse().ok()?;
    Some(KmsgRecord {
        level: (prio & 7) as u8,
        seq,
        usec,
        message: String::from_utf8_lossy(&line[semi + 1..]).into_owned(),
    })
}

/// A read position in the kernel log (`<root>/dev/kmsg`), taken before a system call so
/// that the records that call wrote can be read afterwards.
///
/// On a real system `/dev/kmsg` is a character device: each `read` returns one record,
/// and seeking to the end skips everything already logged. Under a fixture root it is a
/// plain file the simulated kernel appends to; the same calls work on it.
#[derive(Debug)]
pub struct KmsgCursor {
    file: File,
    device: bool,
}

impl KmsgCursor {
    /// Open the log and position after its last record. `None` when it cannot be read
    /// (no permission: `dmesg_restrict`, no such file).
    pub fn open(root: &Root) -> Option<KmsgCursor> {
        let path = root.join("/dev/kmsg");
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(nix::libc::O_NONBLOCK)
            .open(path)
            .ok()?;
        let device = file.metadata().ok()?.file_type().is_char_device();
        file.seek(SeekFrom::End(0)).ok()?;
        Some(KmsgCursor { file, device })
    }

    /// The records written since [`KmsgCursor::open`] (or the previous call).
    pub fn read_new(&mut self) -> Vec<KmsgRecord> {
        let mut out = Vec::new();
        if self.device {
            let mut buf = vec![0u8; 16 * 1024];
            loop {
                match self.file.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        let line = buf[..n].split(|&b| b == b'\n').next().unwrap_or(&[]);
                        out.extend(parse_kmsg_record(line));
                    }
                    // A record was overwritten before we read it: go on with the next.
                    Err(e) if e.raw_os_error() == Some(Errno::EPIPE as i32) => {}
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => break,
                }
            }
        } else {
            let mut text = Vec::new();
            if self.file.read_to_end(&mut text).is_ok() {
                out = parse_kmsg(&text);
            }
        }
        out
    }
}

/// Messages the kernel logs about a failed load without naming the module.
const UNNAMED_LOAD_MESSAGES: &[&str] = &[
    "Invalid ELF header magic",
    "Loading of unsigned module is rejected",
    "Loading of module with unavailable key is rejected",
    "Loading of module with unsupported crypto is rejected",
    "No module found in object",
    "Lockdown:",
    "module verification failed",
    "is blacklisted",
];

/// The records among `records` that are about module `name` (`name: ...`) or are load
/// failures that do not name a module.
pub fn records_about<'r>(records: &'r [KmsgRecord], name: &str) -> Vec<&'r KmsgRecord> {
    let prefix = format!("{name}: ");
    records
        .iter()
        .filter(|r| {
            r.message.starts_with(&prefix)
                || UNNAMED_LOAD_MESSAGES.iter().any(|m| r.message.contains(m))
        })
        .collect()
}

// ===================================================================================
// Context
// ===================================================================================

/// Which tool asks: it changes the suggested commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tool {
    Insmod,
    Modprobe,
    Rmmod,
}

/// Facts about the system the explanations may use. Everything is optional.
#[derive(Debug, Clone)]
pub struct Context<'a> {
    pub root: &'a Root,
    /// The running kernel's release (`Kernel::release`).
    pub release: Option<String>,
    /// The running kernel's machine (`uname -m`), to spot modules for another
    /// architecture.
    pub machine: Option<String>,
    /// The module directory whose indexes are consulted (`modules.symbols.bin`,
    /// `modules.dep.bin`, `modules.builtin.bin`); normally `/lib/modules/<release>`.
    pub moddir: Option<PathBuf>,
    /// The effective user id of the tool (EPERM explanations).
    pub euid: Option<u32>,
    pub tool: Tool,
}

impl<'a> Context<'a> {
    /// A context with the moddir `/lib/modules/<release>` of `root`.
    pub fn new(root: &'a Root, tool: Tool, release: Option<String>) -> Context<'a> {
        let moddir = release.as_deref().map(|r| root.module_dir(r));
        Context {
            root,
            release,
            machine: None,
            moddir,
            euid: None,
            tool,
        }
    }

    fn index(&self, file: &str) -> Option<IndexFile> {
        IndexFile::open(&self.moddir.as_ref()?.join(file)).ok()
    }

    fn moddir_shown(&self) -> String {
        match &self.moddir {
            Some(d) => self.root.unrooted(d).display().to_string(),
            None => "the module directory".to_string(),
        }
    }

    /// Modules exporting `sym`, from `modules.symbols.bin`.
    fn exporters(&self, symbols: Option<&IndexFile>, sym: &str) -> Vec<String> {
        let Some(idx) = symbols else {
            return Vec::new();
        };
        let key = format!("symbol:{sym}");
        let mut out: Vec<String> = Vec::new();
        if let Ok(vals) = idx.index().search_wildcard(key.as_bytes()) {
            for v in vals {
                let m = String::from_utf8_lossy(v.value).into_owned();
                if !out.contains(&m) {
                    out.push(m);
                }
            }
        }
        out
    }

    fn is_builtin(&self, name: &str) -> bool {
        self.index("modules.builtin.bin")
            .is_some_and(|i| matches!(i.index().get(name.as_bytes()), Ok(Some(_))))
    }

    fn in_moddep(&self, name: &str) -> bool {
        self.index("modules.dep.bin")
            .is_some_and(|i| matches!(i.index().get(name.as_bytes()), Ok(Some(_))))
    }

    fn loaded(&self) -> Option<HashSet<String>> {
        let live = LiveModules::new(self.root);
        let names = live.loaded().ok()?;
        Some(
            names
                .into_iter()
                .flatten()
                .map(|n| String::from_utf8_lossy(&n).into_owned())
                .collect(),
        )
    }

    fn kallsyms(&self) -> Option<HashSet<String>> {
        let text = self.root.read(&self.root.join("/proc/kallsyms")).ok()?;
        let mut set = HashSet::new();
        for line in text.split(|&b| b == b'\n') {
            let mut it = line
                .split(|&b| b == b' ' || b == b'\t')
                .filter(|w| !w.is_empty());
            if let Some(name) = it.nth(2) {
                set.insert(String::from_utf8_lossy(name).into_owned());
            }
        }
        (!set.is_empty()).then_some(set)
    }

    fn modules_disabled(&self) -> bool {
        self.root
            .read_limited(&self.root.join("/proc/sys/kernel/modules_disabled"), 16)
            .is_ok_and(|t| t.trim_ascii() == b"1")
    }
}

// ===================================================================================
// Failed insertions
// ===================================================================================

/// One failed insertion, as the explanations need it.
#[derive(Debug, Clone, Copy)]
pub struct FailedInsert<'a> {
    /// The module name (modname rule) the tool uses in its messages.
    pub name: &'a str,
    /// The module file, if there is one.
    pub path: Option<&'a Path>,
    /// The errno the tool reports.
    pub errno: i32,
    /// `true` when the kernel returned the errno, `false` for a problem with the file.
    pub from_kernel: bool,
    /// A force flag was used.
    pub forced: bool,
    /// The path came from `modules.dep` (modprobe), not from the user.
    pub path_from_index: bool,
    /// The kernel log records written during the call; `None` when the log was not
    /// readable.
    pub kmsg: Option<&'a [KmsgRecord]>,
}

impl<'a> FailedInsert<'a> {
    /// Describe a [`LoadError`] of [`crate::load::insert_module`].
    pub fn from_load_error(
        name: &'a str,
        path: Option<&'a Path>,
        err: &LoadError,
        forced: bool,
        kmsg: Option<&'a [KmsgRecord]>,
    ) -> FailedInsert<'a> {
        FailedInsert {
            name,
            path,
            errno: err.errno(),
            from_kernel: err.from_kernel(),
            forced,
            path_from_index: false,
            kmsg,
        }
    }
}

/// What the module file turned out to be.
#[derive(Debug)]
enum FileFacts {
    /// Unreadable or undecodable; the text says why.
    Unreadable(String),
    /// Not ELF at all.
    NotElf { len: usize, head: Vec<u8> },
    /// ELF, but unusable or not a relocatable object.
    BadElf(String),
    /// A relocatable ELF object.
    Elf {
        machine: u16,
        e_type: u16,
        data: Box<ModuleData>,
        has_modinfo: bool,
        signed: bool,
    },
}

fn file_facts(path: &Path) -> FileFacts {
    let image = match compress::read_module_file_with(path, Decoders::ALL) {
        Ok(i) => i,
        Err(compress::ReadError::Decompress {
            source: CompressError::TooShort { len },
            ..
        }) => {
            return FileFacts::Unreadable(format!(
                "it is only {len} byte{} long: an empty or truncated file",
                if len == 1 { "" } else { "s" }
            ))
        }
        Err(compress::ReadError::Decompress { source, .. }) => {
            return FileFacts::Unreadable(format!(
                "its compressed content cannot be decoded ({source}): a damaged file"
            ))
        }
        Err(compress::ReadError::Io { source, .. }) => {
            return FileFacts::Unreadable(format!(
                "it cannot be read: {}",
                crate::kernel::strerror_io(&source)
            ))
        }
    };
    let bytes: &[u8] = &image;
    match Elf::parse(bytes) {
        Err(ElfError::NotElf(_)) => FileFacts::NotElf {
            len: bytes.len(),
            head: bytes[..bytes.len().min(16)].to_vec(),
        },
        Err(ElfError::Invalid(why)) => FileFacts::BadElf(format!("a damaged ELF file ({why})")),
        Ok(elf) => {
            let has_modinfo = elf.section(b".modinfo").is_some();
            let data = crate::module::extract(bytes).unwrap_or_default();
            FileFacts::Elf {
                machine: elf.e_machine(),
                e_type: elf.e_type(),
                data: Box::new(data),
                has_modinfo,
                signed: crate::signature::trailer(bytes).is_some(),
            }
        }
    }
}

fn info<'d>(data: &'d ModuleData, key: &str) -> Option<&'d [u8]> {
    data.modinfo
        .iter()
        .find(|(k, _)| k == key.as_bytes())
        .map(|(_, v)| v.as_slice())
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `a`, `a and b`, `a, b and c`; long lists end with `and N more`.
fn join_words<S: AsRef<str>>(items: &[S]) -> String {
    let shown: Vec<&str> = items.iter().take(MAX_SYMBOLS).map(AsRef::as_ref).collect();
    let rest = items.len().saturating_sub(MAX_SYMBOLS);
    let mut parts: Vec<String> = shown.iter().map(|s| s.to_string()).collect();
    if rest > 0 {
        parts.push(format!("{rest} more"));
    }
    match parts.len() {
        0 => String::new(),
        1 => parts.remove(0),
        n => format!("{} and {}", parts[..n - 1].join(", "), parts[n - 1]),
    }
}

fn plural(n: usize, one: &str, many: &str) -> String {
    if n == 1 {
        format!("{n} {one}")
    } else {
        format!("{n} {many}")
    }
}

/// ELF machine numbers of `uname -m` values.
fn machine_to_em(machine: &str) -> Option<u16> {
    Some(match machine {
        "x86_64" => 62,
        "i386" | "i486" | "i586" | "i686" => 3,
        "aarch64" | "arm64" => 183,
        "ppc64" | "ppc64le" => 21,
        "ppc" => 20,
        "s390x" | "s390" => 22,
        "riscv64" | "riscv32" => 243,
        "loongarch64" => 258,
        "sparc64" => 43,
        "sparc" => 2,
        m if m.starts_with("arm") => 40,
        m if m.starts_with("mips") => 8,
        _ => return None,
    })
}

fn em_name(em: u16) -> String {
    match em {
        2 => "SPARC".into(),
        3 => "i386".into(),
        8 => "MIPS".into(),
        20 => "PowerPC".into(),
        21 => "PowerPC64".into(),
        22 => "s390".into(),
        40 => "ARM".into(),
        43 => "SPARC64".into(),
        62 => "x86-64".into(),
        183 => "AArch64".into(),
        243 => "RISC-V".into(),
        258 => "LoongArch".into(),
        other => format!("ELF machine {other}"),
    }
}

/// How the first bytes of a non-ELF file look, for the message.
fn describe_head(head: &[u8]) -> String {
    if head.starts_with(b"#!") {
        return "a script".to_string();
    }
    match compress::detect(head) {
        Compression::None => {}
        c => return format!("{c} data that is not a decodable module"),
    }
    let printable = head
        .iter()
        .all(|&b| b.is_ascii_graphic() || b == b' ' || b == b'\n' || b == b'\t');
    if printable && !head.is_empty() {
        let text: String = String::from_utf8_lossy(head)
            .chars()
            .take_while(|&c| c != '\n')
            .collect();
        return format!("text starting with \"{text}\"");
    }
    let hex: Vec<String> = head.iter().take(4).map(|b| format!("{b:02x}")).collect();
    format!("data starting with bytes {}", hex.join(" "))
}

/// Explanation lines for a failed insertion (without the `<prog>: NOTE: ` prefix).
pub fn explain_insert(ctx: &Context<'_>, f: &FailedInsert<'_>) -> Vec<String> {
    let mut out = Vec::new();
    let path_shown = f.path.map(|p| ctx.root.unrooted(p).display().to_string());

    // Problems with the file itself, before the kernel saw anything.
    if !f.from_kernel {
        if let Some(p) = &path_shown {
            if f.errno == Errno::ENOENT as i32 {
                if f.path_from_index {
                    out.push(format!(
                        "{p} is listed in modules.dep but does not exist: the index is out of date (run depmod)"
                    ));
                } else {
                    out.push(format!("{p} does not exist"));
                }
                return out;
            }
            if f.errno == Errno::EINVAL as i32 {
                if let FileFacts::Unreadable(why) = file_facts(f.path.unwrap_or(Path::new(""))) {
                    out.push(format!("{p} is not a kernel module: {why}"));
                }
                return out;
            }
            out.push(format!("{p} could not be read: {}", strerror(f.errno)));
        }
        return out;
    }

    let facts = f.path.map(file_facts);
    // The name the kernel uses in its log: `name=` of .modinfo.
    let kname = match &facts {
        Some(FileFacts::Elf { data, .. }) => info(data, "name").map(lossy),
        _ => None,
    }
    .unwrap_or_else(|| f.name.to_string());
    let records: Vec<&KmsgRecord> = f.kmsg.map(|k| records_about(k, &kname)).unwrap_or_default();

    let errno = Errno::from_raw(f.errno);
    let mut quoted_unknown_symbols = false;
    match errno {
        Errno::ENOENT => {
            quoted_unknown_symbols = true;
            unresolved_symbols(ctx, f, &kname, facts.as_ref(), &records, &mut out);
        }
        Errno::ENOEXEC => not_a_module(ctx, f, &kname, facts.as_ref(), &records, &mut out),
        Errno::EINVAL => {
            quoted_unknown_symbols = true;
            version_mismatch(ctx, &kname, &records, &mut out);
        }
        Errno::EEXIST => {
            out.push(format!(
                "a module named {kname} is already loaded (see lsmod); to load this file instead, remove it first with 'rmmod {kname}'"
            ));
            if kname != f.name {
                out.push(format!(
                    "the file {} declares the module name '{kname}'",
                    path_shown.as_deref().unwrap_or("")
                ));
            }
        }
        Errno::EPERM => not_permitted(ctx, &kname, &records, &mut out),
        Errno::EKEYREJECTED | Errno::EBADMSG | Errno::EMSGSIZE | Errno::ENOKEY => {
            signature_refused(&kname, facts.as_ref(), &records, &mut out)
        }
        Errno::EBUSY => out.push(format!(
            "another load or removal of {kname} is in progress, or a previous attempt is still being cleaned up; try again"
        )),
        Errno::ENOSYS => out.push(
            "the running kernel has no support for loadable modules (CONFIG_MODULES is not set)"
                .to_string(),
        ),
        Errno::ETXTBSY => out.push(format!(
            "{} is open for writing by another program; the kernel does not load files that are being written",
            path_shown.as_deref().unwrap_or("the file")
        )),
        Errno::ENODEV | Errno::ENXIO | Errno::EIO | Errno::ETIMEDOUT if records.is_empty() => {
            out.push(format!(
                "{kname} was loaded, but its initialisation failed with \"{}\": this comes from the module itself (usually: the hardware or feature it drives is not present)",
                strerror(f.errno)
            ));
        }
        _ => {}
    }

    // The kernel's own words.
    let quotes: Vec<&&KmsgRecord> = records
        .iter()
        .filter(|r| !(quoted_unknown_symbols && r.message.contains(": Unknown symbol ")))
        .collect();
    for r in quotes.iter().take(MAX_QUOTES) {
        out.push(format!("kernel: {}", escape_controls(&r.message)));
    }
    if out.is_empty() && f.kmsg.is_none() {
        out.push(
            "the kernel log (/dev/kmsg) is not readable, so the kernel's reason is not known; see dmesg as root"
                .to_string(),
        );
    }
    out
}

/// Control characters as `\xNN`, as the kernel escapes them in `/dev/kmsg`.
fn escape_controls(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_control() {
            out.push_str(&format!("\\x{:02x}", u32::from(c)));
        } else {
            out.push(c);
        }
    }
    out
}

/// Symbols the kernel logged as unknown, in log order, with the error of each.
fn logged_unknown_symbols(records: &[&KmsgRecord], kname: &str) -> Vec<(String, String)> {
    let prefix = format!("{kname}: Unknown symbol ");
    let mut out: Vec<(String, String)> = Vec::new();
    for r in records {
        if let Some(rest) = r.message.strip_prefix(&prefix) {
            let (sym, err) = match rest.split_once(" (err ") {
                Some((s, e)) => (s, e.trim_end_matches(')')),
                None => (rest, ""),
            };
            if !out.iter().any(|(s, _)| s == sym) {
                out.push((sym.to_string(), err.to_string()));
            }
        }
    }
    out
}

fn unresolved_symbols(
    ctx: &Context<'_>,
    f: &FailedInsert<'_>,
    kname: &str,
    facts: Option<&FileFacts>,
    records: &[&KmsgRecord],
    out: &mut Vec<String>,
) {
    let symbols_idx = ctx.index("modules.symbols.bin");
    let loaded = ctx.loaded().unwrap_or_default();

    let logged: Vec<String> = logged_unknown_symbols(records, kname)
        .into_iter()
        .filter(|(_, err)| err == "-2" || err == "0" || err.is_empty())
        .map(|(s, _)| s)
        .collect();
    let (symbols, source) = if !logged.is_empty() {
        (logged, "from the kernel log")
    } else {
        let Some(FileFacts::Elf { data, .. }) = facts else {
            if f.kmsg.is_none() {
                out.push(
                    "the kernel log is not readable and the module file is not available, so the missing symbols are not known".to_string(),
                );
            }
            return;
        };
        let needs: Vec<String> = data
            .needs
            .iter()
            .filter(|n| !n.weak)
            .map(|n| lossy(&n.name))
            .collect();
        match ctx.kallsyms() {
            Some(known) => (
                needs.into_iter().filter(|s| !known.contains(s)).collect(),
                "computed: needed by the module and absent from /proc/kallsyms",
            ),
            None => (
                needs
                    .into_iter()
                    .filter(|s| {
                        let ex = ctx.exporters(symbols_idx.as_ref(), s);
                        !ex.is_empty() && !ex.iter().any(|m| loaded.contains(m))
                    })
                    .collect(),
                "computed: exported only by modules that are not loaded",
            ),
        }
    };
    if symbols.is_empty() {
        if f.kmsg.is_some() && records.is_empty() {
            out.push(format!(
                "the kernel logged nothing about {kname}; a parameter it does not know is only warned about, so the cause is usually a missing symbol"
            ));
        }
        return;
    }
    out.push(format!(
        "{kname} needs {} the kernel could not resolve ({source}): {}",
        plural(symbols.len(), "symbol", "symbols"),
        join_words(&symbols)
    ));

    // Group the symbols by the module(s) exporting them.
    let mut by_exporter: BTreeMap<Vec<String>, Vec<String>> = BTreeMap::new();
    for s in &symbols {
        by_exporter
            .entry(ctx.exporters(symbols_idx.as_ref(), s))
            .or_default()
            .push(s.clone());
    }
    let mut missing_loads: Vec<String> = Vec::new();
    for (exporters, syms) in &by_exporter {
        let what = join_words(syms);
        let verb = if syms.len() == 1 { "is" } else { "are" };
        if exporters.is_empty() {
            if symbols_idx.is_some() {
                out.push(format!(
                    "{what} {verb} exported by no module in {}: {kname} may be built for another kernel, or need a module that is not installed",
                    ctx.moddir_shown()
                ));
            } else {
                out.push(format!(
                    "{} has no modules.symbols.bin, so the modules exporting {what} are not known (run depmod)",
                    ctx.moddir_shown()
                ));
            }
            continue;
        }
        let unloaded: Vec<&String> = exporters.iter().filter(|m| !loaded.contains(*m)).collect();
        if exporters.len() == 1 {
            let m = &exporters[0];
            if unloaded.is_empty() {
                out.push(format!(
                    "{what} {verb} exported by {m}, which is loaded: {kname} was probably built against a different version of {m}"
                ));
            } else {
                out.push(format!(
                    "{what} {verb} exported by {m}, which is not loaded: load it first with 'modprobe {m}'"
                ));
                missing_loads.push(m.clone());
            }
        } else if unloaded.len() == exporters.len() {
            out.push(format!(
                "{what} {verb} exported by {}, none of them loaded: load one first, e.g. 'modprobe {}'",
                join_words(exporters),
                exporters[0]
            ));
            missing_loads.push(exporters[0].clone());
        } else {
            out.push(format!(
                "{what} {verb} exported by {} (some loaded): {kname} was probably built against different versions of them",
                join_words(exporters)
            ));
        }
    }
    if ctx.tool == Tool::Insmod && !missing_loads.is_empty() && ctx.in_moddep(f.name) {
        out.push(format!(
            "insmod does not load dependencies; 'modprobe {}' loads {} together with the modules it needs",
            f.name, f.name
        ));
    }
}

fn not_a_module(
    ctx: &Context<'_>,
    f: &FailedInsert<'_>,
    kname: &str,
    facts: Option<&FileFacts>,
    records: &[&KmsgRecord],
    out: &mut Vec<String>,
) {
    let p = f
        .path
        .map(|p| ctx.root.unrooted(p).display().to_string())
        .unwrap_or_else(|| kname.to_string());
    let builtin_hint = |out: &mut Vec<String>| {
        if ctx.is_builtin(f.name) {
            out.push(format!(
                "a module named {} is built into the running kernel (modules.builtin): it is always present and needs no loading",
                f.name
            ));
        } else {
            out.push(format!(
                "is {p} the file you meant? Kernel modules are .ko files under {}",
                ctx.moddir_shown()
            ));
        }
    };
    match facts {
        Some(FileFacts::Unreadable(why)) => out.push(format!("{p} is not a kernel module: {why}")),
        Some(FileFacts::NotElf { len, head }) => {
            out.push(format!(
                "{p} is not a kernel module: it is not an ELF object file but {} ({})",
                describe_head(head),
                plural(*len, "byte", "bytes")
            ));
            builtin_hint(out);
        }
        Some(FileFacts::BadElf(why)) => {
            out.push(format!("{p} is not a usable kernel module: {why}"))
        }
        Some(FileFacts::Elf {
            machine,
            e_type,
            data,
            has_modinfo,
            ..
        }) => {
            const ET_REL: u16 = 1;
            if *e_type != ET_REL {
                let kind = match *e_type {
                    2 => "an executable",
                    3 => "a shared library or position-independent executable",
                    4 => "a core dump",
                    _ => "an ELF file of another kind",
                };
                out.push(format!(
                    "{p} is not a kernel module: it is {kind}, while modules are relocatable objects (.ko)"
                ));
                builtin_hint(out);
                return;
            }
            if let Some(em) = ctx.machine.as_deref().and_then(machine_to_em) {
                if em != *machine {
                    out.push(format!(
                        "{p} is built for {}, but this system runs {}",
                        em_name(*machine),
                        em_name(em)
                    ));
                    return;
                }
            }
            if !*has_modinfo || info(data, "name").is_none() {
                out.push(format!(
                    "{p} is an ELF object but not a kernel module: it has {}",
                    if *has_modinfo {
                        "no module name in its .modinfo section"
                    } else {
                        "no .modinfo section"
                    }
                ));
                builtin_hint(out);
                return;
            }
            let vermagic = info(data, "vermagic").map(lossy);
            let logged_magic = records.iter().any(|r| r.message.contains("version magic"));
            match (&vermagic, &ctx.release) {
                (Some(vm), Some(rel)) => {
                    let built_for = vm.split_whitespace().next().unwrap_or("");
                    if built_for != rel {
                        out.push(format!(
                            "{kname} was built for kernel {built_for} (vermagic \"{}\"), but the running kernel is {rel}: install {kname} for {rel} (in /lib/modules/{rel}) or rebuild it",
                            vm.trim_end()
                        ));
                    } else if logged_magic {
                        out.push(format!(
                            "{kname} was built for this kernel release ({rel}) but with a different configuration (see the vermagic strings below): rebuild it with the running kernel's configuration"
                        ));
                    }
                }
                (None, _) if !f.forced => out.push(format!(
                    "{kname} has no vermagic string: it was not built by the kernel build system, and kernels refuse such modules unless forced"
                )),
                _ => {}
            }
            if f.forced && records.is_empty() {
                out.push(
                    "the load was forced (-f, --force-vermagic or --force-modversion), and this kernel refuses forced loads (it is built without CONFIG_MODULE_FORCE_LOAD)".to_string(),
                );
            }
        }
        None => {}
    }
}

fn version_mismatch(
    ctx: &Context<'_>,
    kname: &str,
    records: &[&KmsgRecord],
    out: &mut Vec<String>,
) {
    let prefix = format!("{kname}: disagrees about version of symbol ");
    let syms: Vec<String> = records
        .iter()
        .filter_map(|r| r.message.strip_prefix(&prefix))
        .map(String::from)
        .collect();
    if syms.is_empty() {
        return;
    }
    let idx = ctx.index("modules.symbols.bin");
    let mut owners: Vec<String> = Vec::new();
    for s in &syms {
        for m in ctx.exporters(idx.as_ref(), s) {
            if !owners.contains(&m) {
                owners.push(m);
            }
        }
    }
    let from = if owners.is_empty() {
        "the kernel".to_string()
    } else {
        join_words(&owners)
    };
    out.push(format!(
        "{kname} was built against other versions of {} than {from} provides (symbol CRC mismatch): rebuild {kname} for the running kernel, or load it with --force-modversion (taints the kernel)",
        join_words(&syms)
    ));
}

fn not_permitted(ctx: &Context<'_>, kname: &str, records: &[&KmsgRecord], out: &mut Vec<String>) {
    if records.iter().any(|r| r.message.contains("is blacklisted")) {
        out.push(format!(
            "the kernel command line forbids loading {kname} (module_blacklist=)"
        ));
    } else if ctx.modules_disabled() {
        out.push(
            "module loading is disabled until the next boot (/proc/sys/kernel/modules_disabled is 1)"
                .to_string(),
        );
    } else if ctx.euid.is_some_and(|u| u != 0) {
        out.push("loading modules needs root privileges (CAP_SYS_MODULE)".to_string());
    } else if records.iter().any(|r| r.message.contains("Lockdown:")) {
        out.push(
            "the kernel is locked down (e.g. Secure Boot) and refuses this module".to_string(),
        );
    }
}

fn signature_refused(
    kname: &str,
    facts: Option<&FileFacts>,
    records: &[&KmsgRecord],
    out: &mut Vec<String>,
) {
    match facts {
        Some(FileFacts::Elf { signed: false, .. }) => out.push(format!(
            "{kname} is not signed, and the kernel only accepts signed modules (module.sig_enforce=1, CONFIG_MODULE_SIG_FORCE or lockdown)"
        )),
        Some(FileFacts::Elf { signed: true, .. }) => {
            let unknown_key = records.iter().any(|r| r.message.contains("unavailable key"));
            out.push(format!(
                "{kname} is signed, but {}",
                if unknown_key {
                    "with a key the kernel does not know (not in its keyrings)"
                } else {
                    "its signature was not accepted (unknown key, unsupported algorithm or a damaged signature)"
                }
            ));
        }
        _ => {}
    }
}

// ===================================================================================
// Failed removals
// ===================================================================================

/// Why a removal failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RemoveFailure {
    /// The pre-check found holders or a non-zero reference count.
    InUse,
    /// The module is not loaded.
    NotLoaded,
    /// No `refcnt` file: no unloading support, or built-in code with a sysfs directory.
    UnloadUnsupported,
    /// `delete_module` failed with this errno.
    Kernel(i32),
}

/// The modules that would have to be removed before `name` (everything holding it,
/// directly or not), in an order in which they can be removed; `name` itself is last.
pub fn removal_order(live: &LiveModules<'_>, name: &[u8]) -> Vec<Vec<u8>> {
    fn visit(live: &LiveModules<'_>, m: &[u8], seen: &mut Vec<Vec<u8>>, order: &mut Vec<Vec<u8>>) {
        if seen.iter().any(|s| s == m) {
            return;
        }
        seen.push(m.to_vec());
        for h in live.holders(m).unwrap_or_default() {
            visit(live, &h, seen, order);
        }
        order.push(m.to_vec());
    }
    let mut seen = Vec::new();
    let mut order = Vec::new();
    visit(live, name, &mut seen, &mut order);
    order
}

/// References to `name` that do not come from modules: refcount minus holders.
fn foreign_refs(live: &LiveModules<'_>, name: &[u8]) -> i64 {
    let refs = live.refcnt(name).unwrap_or(0);
    let holders = live.holders(name).map(|h| h.len()).unwrap_or(0) as i64;
    (refs - holders).max(0)
}

/// Explanation lines for a failed removal of `name` (a module name). `file` is the
/// operand when it named a module file (rmmod accepts paths).
pub fn explain_remove(
    ctx: &Context<'_>,
    name: &str,
    file: Option<&Path>,
    failure: RemoveFailure,
) -> Vec<String> {
    let live = LiveModules::new(ctx.root);
    let n = name.as_bytes();
    let mut out = Vec::new();
    match failure {
        RemoveFailure::InUse => in_use(ctx, &live, name, &mut out),
        RemoveFailure::Kernel(e) if e == Errno::EAGAIN as i32 => {
            in_use(ctx, &live, name, &mut out)
        }
        RemoveFailure::NotLoaded => {
            if let Some(p) = file {
                if let Some(FileFacts::Elf { data, .. }) = Some(file_facts(p)) {
                    if let Some(real) = info(&data, "name").map(lossy) {
                        if real != name && live.initstate(real.as_bytes()).is_ok() {
                            out.push(format!(
                                "the file {} contains the module '{real}', which is loaded: use 'rmmod {real}'",
                                ctx.root.unrooted(p).display()
                            ));
                        }
                    }
                }
            }
        }
        RemoveFailure::UnloadUnsupported => {
            let has_state = ctx
                .root
                .join(format!("/sys/module/{name}/initstate"))
                .exists();
            if !has_state && live.has_sys_dir(n) {
                out.push(format!(
                    "/sys/module/{name} exists without initstate: {name} is code built into the kernel (only its parameters appear there), and built-in code cannot be removed; the modules.builtin of {} does not list it (out of date?)",
                    ctx.moddir_shown()
                ));
            } else {
                out.push(
                    "the running kernel is built without module unloading (CONFIG_MODULE_UNLOAD is not set): modules stay until reboot".to_string(),
                );
            }
        }
        RemoveFailure::Kernel(e) => match Errno::from_raw(e) {
            Errno::EBUSY => {
                let permanent = LiveModules::new(ctx.root)
                    .proc_modules()
                    .ok()
                    .and_then(|ms| ms.into_iter().find(|m| m.name == n))
                    .is_some_and(|m| m.permanent);
                match live.initstate(n) {
                    _ if permanent => out.push(format!(
                        "{name} has no exit function ([permanent] in /proc/modules): it can only be removed by rebooting (or forced with -f on kernels with CONFIG_MODULE_FORCE_UNLOAD)"
                    )),
                    Ok(InitState::Coming) => out.push(format!(
                        "{name} is still initialising; try again when it is live"
                    )),
                    Ok(InitState::Going) => {
                        out.push(format!("{name} is already being removed"))
                    }
                    _ => {}
                }
            }
            Errno::EPERM => {
                if ctx.modules_disabled() {
                    out.push("module removal is disabled until the next boot (/proc/sys/kernel/modules_disabled is 1)".to_string());
                } else if ctx.euid.is_some_and(|u| u != 0) {
                    out.push("removing modules needs root privileges (CAP_SYS_MODULE)".to_string());
                }
            }
            Errno::ENOENT => out.push(format!(
                "{name} is not loaded (any more): it may have been removed at the same time by someone else"
            )),
            Errno::ENOSYS => out.push(
                "the running kernel is built without module unloading (CONFIG_MODULE_UNLOAD is not set)".to_string(),
            ),
            _ => {}
        },
    }
    out
}

fn in_use(ctx: &Context<'_>, live: &LiveModules<'_>, name: &str, out: &mut Vec<String>) {
    let n = name.as_bytes();
    let holders = live.holders(n).unwrap_or_default();
    let order = removal_order(live, n);
    if !holders.is_empty() {
        let before: Vec<String> = order[..order.len() - 1].iter().map(|m| lossy(m)).collect();
        let cmd: Vec<String> = order.iter().map(|m| lossy(m)).collect();
        out.push(format!(
            "{name} is needed by {} that use{} its symbols; remove {} first: 'rmmod {}' (or 'modprobe -r --remove-holders {name}')",
            plural(holders.len(), "module", "modules"),
            if holders.len() == 1 { "s" } else { "" },
            if before.len() == 1 { "it" } else { "them" },
            cmd.join(" ")
        ));
    }
    // References that no module accounts for, along the whole chain.
    let mut busy: Vec<String> = Vec::new();
    for m in &order {
        let r = foreign_refs(live, m);
        if r > 0 {
            busy.push(format!(
                "{} ({})",
                lossy(m),
                plural(r as usize, "reference", "references")
            ));
        }
    }
    if !busy.is_empty() {
        out.push(format!(
            "in use by something other than a module: {} — e.g. a mounted file system, an open device or file, a network interface or a running program; stop that use first (umount, close, ip link set down, ...)",
            join_words(&busy)
        ));
    }
    if ctx.tool == Tool::Rmmod && holders.is_empty() && busy.is_empty() {
        out.push(format!(
            "{name} was in use when checked; it may be free now — try again"
        ));
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn kmsg_records() {
        let text = b"4,12,3456,-;msdos: Unknown symbol fat_get (err -2)\n SUBSYSTEM=x\n6,13,3457,c;hello\nbogus\n";
        let r = parse_kmsg(text);
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].level, 4);
        assert_eq!(r[0].seq, 12);
        assert_eq!(r[0].message, "msdos: Unknown symbol fat_get (err -2)");
        assert_eq!(r[1].message, "hello");
        let refs: Vec<&KmsgRecord> = r.iter().collect();
        assert_eq!(
            logged_unknown_symbols(&refs, "msdos"),
            vec![("fat_get".to_string(), "-2".to_string())]
        );
        assert_eq!(records_about(&r, "msdos").len(), 1);
        assert_eq!(records_about(&r, "fat").len(), 0);
    }

    #[test]
    fn word_lists() {
        assert_eq!(join_words::<&str>(&[]), "");
        assert_eq!(join_words(&["a"]), "a");
        assert_eq!(join_words(&["a", "b"]), "a and b");
        assert_eq!(join_words(&["a", "b", "c"]), "a, b and c");
        let many: Vec<String> = (0..15).map(|i| i.to_string()).collect();
        assert!(join_words(&many).ends_with("11 and 3 more"));
    }

    #[test]
    fn heads() {
        assert_eq!(describe_head(b"#!/bin/sh\n"), "a script");
        assert_eq!(
            describe_head(b"hello world\nx"),
            "text starting with \"hello world\""
        );
        assert_eq!(
            describe_head(&[0, 1, 2, 3, 4]),
            "data starting with bytes 00 01 02 03"
        );
        assert_eq!(machine_to_em("x86_64"), Some(62));
        assert_eq!(em_name(183), "AArch64");
    }
}
