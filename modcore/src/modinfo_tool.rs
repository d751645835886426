//! The modinfo tool's logic (spec runtime-tools §7): finding modules by path, name or
//! alias, reading their information, and rendering it byte for byte like kmod 30.
//!
//! (The `.modinfo` section parser itself is [`crate::modinfo`].)
//!
//! * [`Moddir`] opens the indexes of one module directory lazily.
//! * [`resolve`] turns an operand into modules (§7.1): with `-m` a name lookup only;
//!   otherwise an existing regular file with a module extension is that file, and
//!   anything else goes through the index lookup chain without configuration (dep,
//!   symbols, alias, builtin, builtin alias).
//! * [`info`] reads the key/value list of one module: `.modinfo` plus the signature
//!   fields for a file, the module's strings of `modules.builtin.modinfo` for a built-in.
//! * [`render`] writes one module's output in kmod's format (padding, merged `parm`
//!   lines in reverse order of first appearance, `-0` mixed delimiters, `-F` values).
//!
//! Formatting facts checked against kmod 30 (Debian 12):
//!
//! * `KEY:` is padded with spaces to 16 columns; a longer key gets `keylen - 15` spaces
//!   (C's `%-*s` with a negative width); a 15-character key gets none;
//! * `name:` (built-ins only), `filename:` and `parm:` lines use `%-16s`, also with `-0`;
//!   with `-0` every other entry is `KEY=VALUE`; every record ends with the separator;
//! * `-F parm` / `-p` prints `NAME:DESC (TYPE)`, `NAME:DESC`, or `NAME: (TYPE)`; the
//!   default listing prints `NAME:TYPE` for a type without description;
//! * `-F filename` prints the path (or `(builtin)`) without reading the file;
//! * a module without a path (built-in, or an alias of a module missing from
//!   `modules.dep`) prints `name:` and `filename: (builtin)`; its data is the
//!   `modules.builtin.modinfo` strings, and a missing file there is not an error;
//! * read errors print `could not get modinfo from 'NAME': <strerror>` (after the
//!   `filename:` line): a non-ELF file is ENOEXEC, a file shorter than 6 bytes or a
//!   damaged one EINVAL, an ELF file without `.modinfo` ENOENT.

use std::cell::{OnceCell, RefCell};
use std::ffi::OsStr;
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::compress::{self, Decoders};
use crate::diag::{Level, Sink};
use crate::elf::Elf;
use crate::index::IndexFile;
use crate::name;
use crate::root::make_absolute_cwd;

/// Module file name endings modinfo treats as files (kmod 30 without gzip, plus `.ko.gz`
/// since we can read it).
pub const MODULE_EXTENSIONS: &[&str] = compress::ALL_EXTENSIONS;

/// One key/value pair of a module's information, in output order.
pub type InfoEntry = (Vec<u8>, Vec<u8>);

// ===================================================================================
// The module directory and its indexes
// ===================================================================================

/// A module directory with lazily opened indexes.
#[derive(Debug)]
pub struct Moddir {
    dir: PathBuf,
    dep: OnceCell<Option<IndexFile>>,
    alias: OnceCell<Option<IndexFile>>,
    symbols: OnceCell<Option<IndexFile>>,
    builtin: OnceCell<Option<IndexFile>>,
    builtin_alias: OnceCell<Option<IndexFile>>,
    builtin_modinfo: OnceCell<Result<Vec<u8>, i32>>,
    /// Indexes that exist but could not be used (bad magic, cut short, unreadable, or
    /// a lookup that hit a corrupt node), with the reason, in the order found.
    damaged: RefCell<Vec<(PathBuf, String)>>,
}

impl Moddir {
    /// `dir` is used as is, in index lookups and in the printed paths.
    pub fn new(dir: PathBuf) -> Moddir {
        Moddir {
            dir,
            dep: OnceCell::new(),
            alias: OnceCell::new(),
            symbols: OnceCell::new(),
            builtin: OnceCell::new(),
            builtin_alias: OnceCell::new(),
            builtin_modinfo: OnceCell::new(),
            damaged: RefCell::new(Vec::new()),
        }
    }

    /// Indexes found damaged so far (path and reason): a missing index is not damaged,
    /// but one that exists and cannot be used is. A lookup that found nothing may have
    /// missed the answer in one of these; the tool says so after kmod's message.
    pub fn damaged(&self) -> Vec<(PathBuf, String)> {
        self.damaged.borrow().clone()
    }

    fn note_damaged(&self, file: &str, why: String) {
        let path = self.dir.join(file);
        let mut d = self.damaged.borrow_mut();
        if !d.iter().any(|(p, _)| *p == path) {
            d.push((path, why));
        }
    }

    /// `r`, with an error recorded against `file` and turned into "nothing found".
    fn checked<T>(&self, file: &str, r: Result<T, crate::index::IndexError>) -> Option<T> {
        match r {
            Ok(v) => Some(v),
            Err(e) => {
                self.note_damaged(file, e.to_string());
                None
            }
        }
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn open<'s>(&self, cell: &'s OnceCell<Option<IndexFile>>, file: &str) -> Option<&'s IndexFile> {
        cell.get_or_init(|| match IndexFile::open(&self.dir.join(file)) {
            Ok(i) => Some(i),
            Err(crate::index::IndexError::Io { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                None
            }
            Err(e) => {
                // Io errors already carry the path; the others get it from the note.
                let why = match e {
                    crate::index::IndexError::Io { source, .. } => crate::errno_text(&source),
                    e => e.to_string(),
                };
                self.note_damaged(file, why);
                None
            }
        })
        .as_ref()
    }

    /// The module's path from `modules.dep.bin` (relative entries are put under the
    /// module directory), if it is listed.
    pub fn dep_path(&self, name: &[u8]) -> Option<PathBuf> {
        let idx = self.open(&self.dep, "modules.dep.bin")?;
        let v = self
            .checked("modules.dep.bin", idx.index().get_first(name))
            .flatten()?;
        let line = v.value;
        let rel = match line.iter().position(|&b| b == b':') {
            Some(i) => &line[..i],
            None => line,
        };
        if rel.first() == Some(&b'/') {
            return Some(PathBuf::from(OsStr::from_bytes(rel)));
        }
        let mut p = self.dir.as_os_str().as_bytes().to_vec();
        p.push(b'/');
        p.extend_from_slice(rel);
        Some(PathBuf::from(OsStr::from_bytes(&p)))
    }

    /// Is the name listed in `modules.builtin.bin`?
    pub fn is_builtin(&self, name: &[u8]) -> bool {
        self.open(&self.builtin, "modules.builtin.bin")
            .and_then(|i| self.checked("modules.builtin.bin", i.index().get(name)))
            .is_some_and(|v| v.is_some())
    }

    fn wild(&self, cell: &OnceCell<Option<IndexFile>>, file: &str, key: &[u8]) -> Vec<Vec<u8>> {
        match self.open(cell, file) {
            Some(i) => self
                .checked(file, i.index().search_wildcard(key))
                .map(|vs| vs.into_iter().map(|v| v.value.to_vec()).collect())
                .unwrap_or_default(),
            None => Vec::new(),
        }
    }

    /// The strings of module `name` in `modules.builtin.modinfo` (without the `name.`
    /// prefix). `Err(errno)` when the file cannot be read.
    pub fn builtin_modinfo(&self, name: &[u8]) -> Result<Vec<Vec<u8>>, i32> {
        let data = self.builtin_modinfo.get_or_init(|| {
            std::fs::read(self.dir.join("modules.builtin.modinfo"))
                .map_err(|e| e.raw_os_error().unwrap_or(nix::libc::EIO))
        });
        let data = data.as_ref().map_err(|e| *e)?;
        Ok(builtin_strings(data, name))
    }
}

/// The strings of module `name` in a `modules.builtin.modinfo` image: the first run of
/// consecutive `name.key=value` strings, each without its `name.` prefix.
pub fn builtin_strings(data: &[u8], name: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut matched = false;
    for s in data.split(|&b| b == 0).filter(|s| !s.is_empty()) {
        let modname = s.iter().position(|&b| b == b'.').map(|i| &s[..i]);
        if modname == Some(name) {
            matched = true;
            out.push(s[name.len() + 1..].to_vec());
        } else if matched {
            break;
        }
    }
    out
}

// ===================================================================================
// Finding modules
// ===================================================================================

/// A module to show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleRef {
    /// Module name (as in the index, or the modname of a file).
    pub name: Vec<u8>,
    /// Its file; `None` for built-ins (and aliases of modules missing in modules.dep).
    pub path: Option<PathBuf>,
    /// Found as a built-in module.
    pub builtin: bool,
}

/// Why an operand found nothing. Display gives kmod's message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LookupError {
    /// `Module NAME not found.`
    #[error("Module {0} not found.")]
    NotFound(String),
    /// The operand is not a valid alias (bracket misuse).
    #[error("Module alias {0} not found.")]
    BadAlias(String),
    /// `-m`: `Module name NAME not found.`
    #[error("Module name {0} not found.")]
    NameNotFound(String),
    /// A module file that could not be used.
    #[error("Module file {0} not found.")]
    FileNotFound(String),
}

impl LookupError {
    /// The errno kmod's lookup returns.
    pub fn errno(&self) -> i32 {
        match self {
            LookupError::BadAlias(_) => nix::libc::EINVAL,
            _ => nix::libc::ENOENT,
        }
    }
}

/// Does `operand` name an existing regular file with a module extension?
pub fn is_module_file(operand: &OsStr) -> bool {
    let b = operand.as_bytes();
    MODULE_EXTENSIONS.iter().any(|e| b.ends_with(e.as_bytes()))
        && std::fs::metadata(operand).is_ok_and(|m| m.is_file())
}

/// The module for a file operand: absolute path (cwd prefixed, no clean-up), modname.
pub fn from_path(operand: &OsStr) -> ModuleRef {
    ModuleRef {
        name: name::modname_from_path(operand.as_bytes()),
        path: Some(make_absolute_cwd(PathBuf::from(operand))),
        builtin: false,
    }
}

impl Moddir {
    fn with_path(&self, name: Vec<u8>, builtin: bool) -> ModuleRef {
        let path = if builtin { None } else { self.dep_path(&name) };
        ModuleRef {
            name,
            path,
            builtin,
        }
    }

    /// The lookup chain without configuration (spec §3.4 steps 2, 3, 5, 6, 7): the
    /// first source that yields anything wins.
    pub fn lookup_alias(&self, operand: &[u8]) -> Result<Vec<ModuleRef>, LookupError> {
        let shown = || String::from_utf8_lossy(operand).into_owned();
        let alias = name::normalize_alias(operand).map_err(|_| LookupError::BadAlias(shown()))?;
        // modules.dep: module names never contain ':'.
        if !alias.contains(&b':') {
            if let Some(path) = self.dep_path(&alias) {
                return Ok(vec![ModuleRef {
                    name: alias,
                    path: Some(path),
                    builtin: false,
                }]);
            }
        }
        if alias.starts_with(b"symbol:") {
            let found = self.wild(&self.symbols, "modules.symbols.bin", &alias);
            if !found.is_empty() {
                return Ok(found
                    .into_iter()
                    .map(|n| self.with_path(n, false))
                    .collect());
            }
        }
        let found = self.wild(&self.alias, "modules.alias.bin", &alias);
        if !found.is_empty() {
            return Ok(found
                .into_iter()
                .map(|n| self.with_path(n, false))
                .collect());
        }
        if self.is_builtin(&alias) {
            return Ok(vec![self.with_path(alias, true)]);
        }
        let found = self.wild(&self.builtin_alias, "modules.builtin.alias.bin", &alias);
        if !found.is_empty() {
            return Ok(found.into_iter().map(|n| self.with_path(n, true)).collect());
        }
        Err(LookupError::NotFound(shown()))
    }

    /// `-m`: the modname-normalised operand in `modules.dep.bin`, then
    /// `modules.builtin.bin`, then `modules.builtin.alias.bin`; the first hit.
    pub fn lookup_name(&self, operand: &[u8]) -> Result<ModuleRef, LookupError> {
        let n = modname_normalize(operand);
        if let Some(path) = self.dep_path(&n) {
            return Ok(ModuleRef {
                name: n,
                path: Some(path),
                builtin: false,
            });
        }
        if self.is_builtin(&n) {
            return Ok(self.with_path(n, true));
        }
        if let Some(first) = self
            .wild(&self.builtin_alias, "modules.builtin.alias.bin", &n)
            .into_iter()
            .next()
        {
            return Ok(self.with_path(first, true));
        }
        Err(LookupError::NameNotFound(
            String::from_utf8_lossy(operand).into_owned(),
        ))
    }
}

/// The modname rule without taking the basename: up to the first `.`, `-` → `_`.
pub fn modname_normalize(s: &[u8]) -> Vec<u8> {
    s.iter()
        .take_while(|&&b| b != b'.')
        .map(|&b| if b == b'-' { b'_' } else { b })
        .collect()
}

/// The modules an operand stands for (spec §7.1).
pub fn resolve(
    md: &Moddir,
    operand: &OsStr,
    modname_only: bool,
) -> Result<Vec<ModuleRef>, LookupError> {
    if modname_only {
        return md.lookup_name(operand.as_bytes()).map(|m| vec![m]);
    }
    if is_module_file(operand) {
        return Ok(vec![from_path(operand)]);
    }
    md.lookup_alias(operand.as_bytes())
}

// ===================================================================================
// Reading the information
// ===================================================================================

/// Why a module's information could not be read (kmod: `could not get modinfo from
/// 'NAME': <strerror(errno)>`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("could not get modinfo from '{}': {}", String::from_utf8_lossy(name), crate::kernel::strerror(*errno))]
pub struct InfoError {
    pub name: Vec<u8>,
    pub errno: i32,
}

/// A module file's entries: `.modinfo` strings in order, then the signature fields
/// (`sig_id`, `signer`, `sig_key` if there is a key id, `sig_hashalgo`, `signature` if
/// there is signature data).
pub fn file_info(path: &Path) -> Result<Vec<InfoEntry>, i32> {
    let image = compress::read_module_file_with(path, Decoders::ALL).map_err(|e| e.errno())?;
    let elf = Elf::parse(&image).map_err(|e| e.errno())?;
    let mut entries = crate::module::modinfo_of(&elf).ok_or(nix::libc::ENOENT)?;
    if let Some(sig) = crate::signature::parse(&image) {
        for (key, value) in sig.modinfo_fields() {
            let omit = match key {
                "sig_key" => sig.key_id.is_empty(),
                "signature" => sig.signature.is_empty(),
                _ => false,
            };
            if !omit {
                entries.push((key.as_bytes().to_vec(), value));
            }
        }
    }
    Ok(entries)
}

/// The information of one module: `Ok(None)` when there is none but that is not an
/// error (a module without a path whose built-in data is not available).
pub fn info(md: &Moddir, m: &ModuleRef) -> Result<Option<Vec<InfoEntry>>, InfoError> {
    let err = |errno| InfoError {
        name: m.name.clone(),
        errno,
    };
    match &m.path {
        Some(p) => file_info(p).map(Some).map_err(err),
        None => {
            if !(m.builtin || md.is_builtin(&m.name)) {
                return Ok(None);
            }
            match md.builtin_modinfo(&m.name) {
                Ok(strings) => Ok(Some(
                    strings
                        .iter()
                        .map(|s| {
                            let (k, v) = crate::modinfo::split_entry(s);
                            (k.to_vec(), v.to_vec())
                        })
                        .collect(),
                )),
                Err(e) if e == nix::libc::ENOENT => Ok(None),
                Err(e) => Err(err(e)),
            }
        }
    }
}

// ===================================================================================
// Rendering
// ===================================================================================

/// What to print.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RenderOptions {
    /// `-F FIELD` (or `-a -d -l -p -n`); `None`: everything.
    pub field: Option<Vec<u8>>,
    /// `-0`: records end with NUL instead of newline.
    pub null: bool,
}

impl RenderOptions {
    fn sep(&self) -> u8 {
        if self.null {
            0
        } else {
            b'\n'
        }
    }
}

/// One merged parameter.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Param {
    pub name: Vec<u8>,
    pub desc: Option<Vec<u8>>,
    pub ty: Option<Vec<u8>>,
}

/// Merge `parm=NAME:DESC` and `parmtype=NAME:TYPE` entries per NAME; the result is in
/// reverse order of first appearance. Entries without `:` are reported to `sink`
/// (`Found invalid "KEY=VALUE": missing ':'`) and skipped.
pub fn merge_params(entries: &[InfoEntry], sink: &mut dyn Sink) -> Vec<Param> {
    let mut params: Vec<Param> = Vec::new();
    for (k, v) in entries {
        let is_desc = k == b"parm";
        if !is_desc && k != b"parmtype" {
            continue;
        }
        let Some(colon) = v.iter().position(|&b| b == b':') else {
            sink.emit(
                Level::Error,
                format!(
                    "Found invalid \"{}={}\": missing ':'",
                    String::from_utf8_lossy(k),
                    String::from_utf8_lossy(v)
                ),
            );
            continue;
        };
        let (name, rest) = (&v[..colon], &v[colon + 1..]);
        let p = match params.iter_mut().position(|p| p.name == name) {
            Some(i) => &mut params[i],
            None => {
                params.push(Param {
                    name: name.to_vec(),
                    ..Param::default()
                });
                let last = params.len() - 1;
                &mut params[last]
            }
        };
        if is_desc {
            p.desc = Some(rest.to_vec());
        } else {
            p.ty = Some(rest.to_vec());
        }
    }
    params.reverse();
    params
}

/// `%-16s` of a label such as `filename:`.
fn padded_label(out: &mut Vec<u8>, label: &str) {
    out.extend_from_slice(label.as_bytes());
    for _ in label.len()..16 {
        out.push(b' ');
    }
}

/// `KEY:` plus kmod 30's padding (see the module documentation).
fn key_label(out: &mut Vec<u8>, key: &[u8]) {
    out.extend_from_slice(key);
    out.push(b':');
    let pad = 15usize.abs_diff(key.len());
    out.extend(std::iter::repeat_n(b' ', pad));
}

/// A parameter in the default listing (`with_label`) or the `-p` view.
fn param_line(out: &mut Vec<u8>, p: &Param, listing: bool) {
    if listing {
        padded_label(out, "parm:");
    }
    out.extend_from_slice(&p.name);
    out.push(b':');
    match (&p.desc, &p.ty) {
        (None, Some(t)) => {
            if !listing {
                out.extend_from_slice(b" (");
                out.extend_from_slice(t);
                out.push(b')');
            } else {
                out.extend_from_slice(t);
            }
        }
        (Some(d), Some(t)) => {
            out.extend_from_slice(d);
            out.extend_from_slice(b" (");
            out.extend_from_slice(t);
            out.push(b')');
        }
        (Some(d), None) => out.extend_from_slice(d),
        (None, None) => {}
    }
}

/// Write one module's output to `out` (kmod's `modinfo_do`). Diagnostics (invalid
/// `parm` entries) go to `sink`; a read error is returned after what was already
/// printed (the `name:`/`filename:` lines).
pub fn render(
    md: &Moddir,
    m: &ModuleRef,
    opts: &RenderOptions,
    out: &mut dyn Write,
    sink: &mut dyn Sink,
) -> Result<(), RenderError> {
    let sep = opts.sep();
    let field = opts.field.as_deref();
    let mut buf: Vec<u8> = Vec::new();
    let filename: Vec<u8> = match &m.path {
        Some(p) => p.as_os_str().as_bytes().to_vec(),
        None => {
            if field == Some(b"name") {
                buf.extend_from_slice(&m.name);
                buf.push(sep);
                return out.write_all(&buf).map_err(RenderError::Output);
            }
            if field.is_none() {
                padded_label(&mut buf, "name:");
                buf.extend_from_slice(&m.name);
                buf.push(sep);
            }
            b"(builtin)".to_vec()
        }
    };
    match field {
        Some(b"filename") => {
            buf.extend_from_slice(&filename);
            buf.push(sep);
            return out.write_all(&buf).map_err(RenderError::Output);
        }
        None => {
            padded_label(&mut buf, "filename:");
            buf.extend_from_slice(&filename);
            buf.push(sep);
        }
        Some(_) => {}
    }
    // What is known so far is printed before the data is read, as kmod does.
    out.write_all(&buf).map_err(RenderError::Output)?;
    buf.clear();

    let entries = match info(md, m) {
        Ok(Some(e)) => e,
        Ok(None) => return Ok(()),
        Err(e) => return Err(RenderError::Info(e)),
    };

    if field == Some(b"parm") {
        for p in merge_params(&entries, sink) {
            param_line(&mut buf, &p, false);
            buf.push(sep);
        }
        return out.write_all(&buf).map_err(RenderError::Output);
    }

    let mut parm_entries: Vec<InfoEntry> = Vec::new();
    for (k, v) in &entries {
        if let Some(f) = field {
            if k == f {
                buf.extend_from_slice(v);
                buf.push(sep);
            }
            continue;
        }
        if k == b"parm" || k == b"parmtype" {
            parm_entries.push((k.clone(), v.clone()));
            continue;
        }
        if opts.null {
            buf.extend_from_slice(k);
            buf.push(b'=');
        } else {
            key_label(&mut buf, k);
        }
        buf.extend_from_slice(v);
        buf.push(sep);
    }
    if field.is_none() {
        for p in merge_params(&parm_entries, sink) {
            param_line(&mut buf, &p, true);
            buf.push(sep);
        }
    }
    out.write_all(&buf).map_err(RenderError::Output)
}

/// A failure while rendering one module.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    /// The module's information could not be read.
    #[error("{0}")]
    Info(InfoError),
    /// Writing the output failed.
    #[error("could not write output: {0}")]
    Output(io::Error),
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;
    use crate::diag::Collect;

    fn e(k: &str, v: &str) -> InfoEntry {
        (k.as_bytes().to_vec(), v.as_bytes().to_vec())
    }

    #[test]
    fn labels() {
        let mut b = Vec::new();
        key_label(&mut b, b"alias");
        assert_eq!(b, b"alias:          ");
        let mut b = Vec::new();
        key_label(&mut b, b"k15_abcdefghijk");
        assert_eq!(b, b"k15_abcdefghijk:");
        let mut b = Vec::new();
        key_label(&mut b, b"verylongkeyname16");
        assert_eq!(b, b"verylongkeyname16:  ");
        let mut b = Vec::new();
        padded_label(&mut b, "filename:");
        assert_eq!(b, b"filename:       ");
    }

    #[test]
    fn params_merge_like_kmod() {
        let entries = vec![
            e("parm", "p1:desc one"),
            e("parmtype", "p2:int"),
            e("parm", "p3:d3"),
            e("parmtype", "p3:charp"),
            e("parm", "bad"),
            e("parmtype", "p1:bool"),
            e("parm", "p4:"),
        ];
        let mut sink = Collect::default();
        let ps = merge_params(&entries, &mut sink);
        let listing: Vec<String> = ps
            .iter()
            .map(|p| {
                let mut b = Vec::new();
                param_line(&mut b, p, true);
                String::from_utf8(b).unwrap()
            })
            .collect();
        assert_eq!(
            listing,
            [
                "parm:           p4:",
                "parm:           p3:d3 (charp)",
                "parm:           p2:int",
                "parm:           p1:desc one (bool)",
            ]
        );
        let short: Vec<String> = ps
            .iter()
            .map(|p| {
                let mut b = Vec::new();
                param_line(&mut b, p, false);
                String::from_utf8(b).unwrap()
            })
            .collect();
        assert_eq!(
            short,
            ["p4:", "p3:d3 (charp)", "p2: (int)", "p1:desc one (bool)"]
        );
        assert_eq!(
            sink.at(Level::Error).collect::<Vec<_>>(),
            ["Found invalid \"parm=bad\": missing ':'"]
        );
    }

    #[test]
    fn builtin_runs() {
        let data = b"a.x=1\0ext4.softdep=pre: c\0ext4.license=GPL\0b.y=2\0ext4.late=no\0";
        assert_eq!(
            builtin_strings(data, b"ext4"),
            vec![b"softdep=pre: c".to_vec(), b"license=GPL".to_vec()]
        );
        assert!(builtin_strings(data, b"zz").is_empty());
    }

    #[test]
    fn modname_rule() {
        assert_eq!(modname_normalize(b"snd-hda.ko"), b"snd_hda");
        assert_eq!(modname_normalize(b"./x.ko"), b"");
    }
}
