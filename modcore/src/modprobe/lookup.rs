//! Name → modules: the module directory's indexes and modprobe's lookup chain
//! (spec runtime-tools §1.7, §3.4).
//!
//! [`ModDb`] opens the indexes of one module directory. Each `.bin` index is memory-mapped
//! on first use; when a `.bin` file is missing (or unreadable) the matching text file is
//! read instead (`modules.dep`, `modules.alias`, `modules.symbols`, `modules.builtin`,
//! `modules.builtin.modinfo`), so a tree where depmod wrote only text files still works.
//! A tree with only the `.bin` files (a mkinitcpio image) needs nothing else.
//!
//! [`lookup`] is the chain itself. A name is only ever used as an index key: it never
//! becomes a path. Paths come from `modules.dep` and are checked by
//! [`ModDb::module_path`] to stay inside the module directory.

use std::cell::{OnceCell, RefCell};
use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::fnmatch::fnmatch;
use crate::index::IndexFile;
use crate::modprobe_conf::{CommandKind, ModprobeConfig};
use crate::name::{modname_from_path, normalize_alias};
use crate::root::Root;

// ===================================================================================
// Indexes
// ===================================================================================

/// The indexes modprobe reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IndexKind {
    /// `modules.dep.bin`: module name → `path: dep dep ...`.
    Dep,
    /// `modules.alias.bin`: alias pattern → module name.
    Alias,
    /// `modules.symbols.bin`: `symbol:NAME` → module name.
    Symbols,
    /// `modules.builtin.bin`: built-in module names.
    Builtin,
    /// `modules.builtin.alias.bin`: alias pattern → built-in module name.
    BuiltinAlias,
}

impl IndexKind {
    fn slot(self) -> usize {
        match self {
            IndexKind::Dep => 0,
            IndexKind::Alias => 1,
            IndexKind::Symbols => 2,
            IndexKind::Builtin => 3,
            IndexKind::BuiltinAlias => 4,
        }
    }

    /// The binary index file name.
    pub fn bin_name(self) -> &'static str {
        match self {
            IndexKind::Dep => "modules.dep.bin",
            IndexKind::Alias => "modules.alias.bin",
            IndexKind::Symbols => "modules.symbols.bin",
            IndexKind::Builtin => "modules.builtin.bin",
            IndexKind::BuiltinAlias => "modules.builtin.alias.bin",
        }
    }

    /// The text file read when the binary index is missing.
    pub fn text_name(self) -> &'static str {
        match self {
            IndexKind::Dep => "modules.dep",
            IndexKind::Alias => "modules.alias",
            IndexKind::Symbols => "modules.symbols",
            IndexKind::Builtin => "modules.builtin",
            IndexKind::BuiltinAlias => "modules.builtin.modinfo",
        }
    }
}

/// A text file turned into key/value pairs (file order = priority order).
#[derive(Debug, Default)]
struct TextIndex {
    entries: Vec<(Vec<u8>, Vec<u8>)>,
    first: HashMap<Vec<u8>, usize>,
}

impl TextIndex {
    fn push(&mut self, key: Vec<u8>, value: Vec<u8>) {
        let i = self.entries.len();
        self.first.entry(key.clone()).or_insert(i);
        self.entries.push((key, value));
    }

    fn get_first(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.first.get(key).map(|&i| self.entries[i].1.clone())
    }

    fn wildcard(&self, name: &[u8]) -> Vec<Vec<u8>> {
        self.entries
            .iter()
            .filter(|(k, _)| fnmatch(k, name))
            .map(|(_, v)| v.clone())
            .collect()
    }

    fn parse(kind: IndexKind, text: &[u8]) -> TextIndex {
        let mut t = TextIndex::default();
        match kind {
            IndexKind::Dep => {
                for line in text.split(|&c| c == b'\n') {
                    let Some(colon) = line.iter().position(|&c| c == b':') else {
                        continue;
                    };
                    let path = &line[..colon];
                    if path.is_empty() || line.first() == Some(&b'#') {
                        continue;
                    }
                    t.push(modname_from_path(path), line.to_vec());
                }
            }
            IndexKind::Alias | IndexKind::Symbols => {
                for line in text.split(|&c| c == b'\n') {
                    let mut words = line
                        .split(|&c| c == b' ' || c == b'\t')
                        .filter(|w| !w.is_empty());
                    if words.next() != Some(b"alias".as_slice()) {
                        continue;
                    }
                    let (Some(key), Some(module)) = (words.next(), words.next()) else {
                        continue;
                    };
                    let Ok(key) = normalize_alias(key) else {
                        continue;
                    };
                    t.push(key, module.to_vec());
                }
            }
            IndexKind::Builtin => {
                for line in text.split(|&c| c == b'\n') {
                    let line = line.trim_ascii();
                    if line.is_empty() {
                        continue;
                    }
                    t.push(modname_from_path(line), Vec::new());
                }
            }
            IndexKind::BuiltinAlias => {
                // modules.builtin.modinfo: NUL-separated `module.key=value` strings.
                for rec in text.split(|&c| c == 0) {
                    let Some(dot) = rec.iter().position(|&c| c == b'.') else {
                        continue;
                    };
                    let (module, rest) = (&rec[..dot], &rec[dot + 1..]);
                    let Some(value) = rest.strip_prefix(b"alias=") else {
                        continue;
                    };
                    let Ok(key) = normalize_alias(value) else {
                        continue;
                    };
                    t.push(key, module.to_vec());
                }
            }
        }
        t
    }
}

enum Store {
    Bin(IndexFile),
    Text(TextIndex),
    Missing,
}

/// Why a `modules.dep` entry is not followed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefuseReason {
    /// A `..` component, an empty entry or a NUL byte.
    Escapes,
    /// The file name gives another module name than the one looked up.
    OtherName,
}

/// Where a module file is, as taken from `modules.dep`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModPath {
    /// A usable path: `real` is opened, `shown` is printed (`insmod <shown> ...`).
    Ok { real: PathBuf, shown: Vec<u8> },
    /// The `modules.dep` entry leaves the module directory (a `..` component), or its
    /// file name is another module's (depmod derives the key from the file name, so such
    /// an entry comes only from a damaged or forged index); it is never opened.
    Refused { entry: Vec<u8>, why: RefuseReason },
}

/// One `modules.dep` line: the module's own path and its dependencies' paths, as
/// written (dependencies in file order, i.e. the reverse of load order).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DepLine {
    pub path: Vec<u8>,
    pub deps: Vec<Vec<u8>>,
}

impl DepLine {
    /// Parse `path: dep1 dep2 ...` (kmod's `kmod_module_parse_depline`).
    pub fn parse(line: &[u8]) -> Option<DepLine> {
        let colon = line.iter().position(|&c| c == b':')?;
        let path = line[..colon].to_vec();
        let deps = line[colon + 1..]
            .split(|&c| c == b' ' || c == b'\t' || c == b'\n')
            .filter(|w| !w.is_empty())
            .map(<[u8]>::to_vec)
            .collect();
        Some(DepLine { path, deps })
    }

    /// Dependency module names in load order (the reverse of the written order).
    pub fn dep_names_load_order(&self) -> Vec<Vec<u8>> {
        self.deps
            .iter()
            .rev()
            .map(|d| modname_from_path(d))
            .collect()
    }
}

/// The indexes of one module directory.
pub struct ModDb {
    moddir: PathBuf,
    shown: Vec<u8>,
    /// How absolute `modules.dep` paths are mapped to real paths (`None`: as they are).
    abs_root: Option<Root>,
    stores: [OnceCell<Store>; 5],
    /// Paths of modules that have no `modules.dep` line of their own, learnt from the
    /// dependency lists of other modules.
    dep_paths: RefCell<HashMap<Vec<u8>, Vec<u8>>>,
    problems: RefCell<Vec<String>>,
}

impl std::fmt::Debug for ModDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModDb")
            .field("moddir", &self.moddir)
            .field("shown", &String::from_utf8_lossy(&self.shown))
            .finish()
    }
}

impl ModDb {
    /// A module directory. `moddir` is the real directory; `shown` is how it is printed
    /// (the host view). `abs_root`: absolute paths found in `modules.dep` are host paths,
    /// placed under this root (`None`: used as they are).
    pub fn new(moddir: PathBuf, shown: Vec<u8>, abs_root: Option<Root>) -> ModDb {
        ModDb {
            moddir,
            shown,
            abs_root,
            stores: Default::default(),
            dep_paths: RefCell::new(HashMap::new()),
            problems: RefCell::new(Vec::new()),
        }
    }

    /// The real module directory.
    pub fn moddir(&self) -> &Path {
        &self.moddir
    }

    /// The module directory as messages show it.
    pub fn moddir_shown(&self) -> &[u8] {
        &self.shown
    }

    /// Problems met while opening indexes (corrupt files); drained by the caller.
    pub fn take_problems(&self) -> Vec<String> {
        std::mem::take(&mut *self.problems.borrow_mut())
    }

    fn store(&self, kind: IndexKind) -> &Store {
        self.stores[kind.slot()].get_or_init(|| self.open_store(kind))
    }

    fn open_store(&self, kind: IndexKind) -> Store {
        let bin = self.moddir.join(kind.bin_name());
        match IndexFile::open(&bin) {
            Ok(f) => return Store::Bin(f),
            Err(crate::index::IndexError::Io { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => self.problems.borrow_mut().push(format!(
                "could not use index {}/{}: {}; trying {}",
                String::from_utf8_lossy(&self.shown),
                kind.bin_name(),
                e,
                kind.text_name()
            )),
        }
        match std::fs::read(self.moddir.join(kind.text_name())) {
            Ok(text) => Store::Text(TextIndex::parse(kind, &text)),
            Err(_) => Store::Missing,
        }
    }

    fn get_first(&self, kind: IndexKind, key: &[u8]) -> Option<Vec<u8>> {
        match self.store(kind) {
            Store::Bin(f) => match f.index().get_first(key) {
                Ok(v) => v.map(|v| v.value.to_vec()),
                Err(e) => {
                    self.index_error(kind, &e);
                    None
                }
            },
            Store::Text(t) => t.get_first(key),
            Store::Missing => None,
        }
    }

    fn wildcard(&self, kind: IndexKind, name: &[u8]) -> Vec<Vec<u8>> {
        match self.store(kind) {
            Store::Bin(f) => match f.index().search_wildcard(name) {
                Ok(v) => v.iter().map(|v| v.value.to_vec()).collect(),
                Err(e) => {
                    self.index_error(kind, &e);
                    Vec::new()
                }
            },
            Store::Text(t) => t.wildcard(name),
            Store::Missing => Vec::new(),
        }
    }

    fn index_error(&self, kind: IndexKind, e: &crate::index::IndexError) {
        self.problems.borrow_mut().push(format!(
            "index {}/{} is damaged: {}",
            String::from_utf8_lossy(&self.shown),
            kind.bin_name(),
            e
        ));
    }

    /// The module's `modules.dep` line.
    pub fn dep_line(&self, name: &[u8]) -> Option<DepLine> {
        let line = DepLine::parse(&self.get_first(IndexKind::Dep, name)?)?;
        let mut known = self.dep_paths.borrow_mut();
        for d in &line.deps {
            known
                .entry(modname_from_path(d))
                .or_insert_with(|| d.clone());
        }
        Some(line)
    }

    /// Is `name` listed in `modules.builtin.bin`?
    pub fn is_builtin(&self, name: &[u8]) -> bool {
        self.get_first(IndexKind::Builtin, name).is_some()
    }

    /// Modules whose `modules.alias` patterns match `name`, in priority order.
    pub fn aliases(&self, name: &[u8]) -> Vec<Vec<u8>> {
        self.wildcard(IndexKind::Alias, name)
    }

    /// Modules exporting the symbol (`name` is `symbol:SYM`).
    pub fn symbols(&self, name: &[u8]) -> Vec<Vec<u8>> {
        self.wildcard(IndexKind::Symbols, name)
    }

    /// Built-in modules whose aliases match `name`.
    pub fn builtin_aliases(&self, name: &[u8]) -> Vec<Vec<u8>> {
        self.wildcard(IndexKind::BuiltinAlias, name)
    }

    /// Every key and value of an index, in key order (the `modprobe -c` dump).
    pub fn dump(&self, kind: IndexKind) -> Vec<(Vec<u8>, Vec<u8>)> {
        match self.store(kind) {
            Store::Bin(f) => {
                let mut out = Vec::new();
                let r = f.index().for_each(|k, vals| {
                    for v in vals {
                        out.push((k.to_vec(), v.value.to_vec()));
                    }
                });
                if let Err(e) = r {
                    self.index_error(kind, &e);
                }
                out
            }
            Store::Text(t) => {
                let mut v = t.entries.clone();
                v.sort_by(|a, b| a.0.cmp(&b.0));
                v
            }
            Store::Missing => Vec::new(),
        }
    }

    /// The file of module `name`: its own `modules.dep` entry, else the path another
    /// module's dependency list gave for it. `None` when the module has no file.
    pub fn module_path(&self, name: &[u8]) -> Option<ModPath> {
        let entry = match self.dep_line(name) {
            Some(l) => l.path,
            None => self.dep_paths.borrow().get(name)?.clone(),
        };
        if crate::name::modname_from_path(&entry) != crate::name::normalize_name(name) {
            return Some(ModPath::Refused {
                entry,
                why: RefuseReason::OtherName,
            });
        }
        Some(self.resolve_entry(&entry))
    }

    /// Turn a `modules.dep` path into a real and a shown path, refusing any path with a
    /// `..` component (relative paths must stay inside the module directory).
    pub fn resolve_entry(&self, entry: &[u8]) -> ModPath {
        let escapes = entry.is_empty()
            || entry.split(|&c| c == b'/').any(|c| c == b"..")
            || entry.contains(&0);
        if escapes {
            return ModPath::Refused {
                entry: entry.to_vec(),
                why: RefuseReason::Escapes,
            };
        }
        if entry.first() == Some(&b'/') {
            let real = match &self.abs_root {
                Some(r) => r.join(OsStr::from_bytes(entry)),
                None => PathBuf::from(OsStr::from_bytes(entry)),
            };
            return ModPath::Ok {
                real,
                shown: entry.to_vec(),
            };
        }
        let mut shown = self.shown.clone();
        shown.push(b'/');
        shown.extend_from_slice(entry);
        ModPath::Ok {
            real: self.moddir.join(OsStr::from_bytes(entry)),
            shown,
        }
    }
}

// ===================================================================================
// The lookup chain
// ===================================================================================

/// A module object's identity, like kmod's module pool: the name, plus the alias it
/// was reached through (a module found by alias is a different object than the same
/// module found by name).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ModKey {
    pub name: Vec<u8>,
    /// The config alias *pattern*, or the normalised requested name for index aliases.
    pub alias: Option<Vec<u8>>,
}

impl ModKey {
    /// A module by plain name.
    pub fn name(name: &[u8]) -> ModKey {
        ModKey {
            name: name.to_vec(),
            alias: None,
        }
    }
}

/// Which step of the chain found a module (spec §3.4 table).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Source {
    /// 1: a `modprobe.d` `alias`.
    ConfigAlias,
    /// 2: `modules.dep.bin` by name.
    ModulesDep,
    /// 3: `modules.symbols.bin`.
    Symbol,
    /// 4: an `install`/`remove` command named exactly like the request.
    Command,
    /// 5: `modules.alias.bin`.
    IndexAlias,
    /// 6: `modules.builtin.bin` by name.
    Builtin,
    /// 7: `modules.builtin.alias.bin`.
    BuiltinAlias,
}

impl Source {
    /// Found through an alias (blacklists apply, spec §3.5.2)?
    pub fn via_alias(self) -> bool {
        matches!(
            self,
            Source::ConfigAlias | Source::Symbol | Source::IndexAlias | Source::BuiltinAlias
        )
    }
}

/// One module produced by the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub key: ModKey,
    pub source: Source,
    /// Found as a built-in (steps 6 and 7).
    pub builtin: bool,
    /// Step 4: the command that defines this pseudo-module.
    pub command: Option<(CommandKind, Vec<u8>)>,
}

impl Found {
    fn new(name: Vec<u8>, alias: Option<Vec<u8>>, source: Source) -> Found {
        Found {
            key: ModKey { name, alias },
            source,
            builtin: matches!(source, Source::Builtin | Source::BuiltinAlias),
            command: None,
        }
    }
}

/// Why a name could not be looked up at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LookupError {
    /// Bad bracket use (kmod: "invalid alias"); treated as "not found" by modprobe.
    #[error("Invalid argument")]
    InvalidName,
}

/// Resolve `given` with the chain of spec §3.4: the first source that yields at least
/// one module wins. An empty result means "not found". `config` may be `None` for
/// tools that read no `modprobe.d` (modinfo).
pub fn lookup(
    config: Option<&ModprobeConfig>,
    db: &ModDb,
    given: &[u8],
) -> Result<Vec<Found>, LookupError> {
    let name = normalize_alias(given).map_err(|_| LookupError::InvalidName)?;

    // 1. configuration aliases
    if let Some(cfg) = config {
        let v: Vec<Found> = cfg
            .aliases_matching(&name)
            .map(|a| {
                Found::new(
                    a.modname.clone(),
                    Some(a.pattern.clone()),
                    Source::ConfigAlias,
                )
            })
            .collect();
        if !v.is_empty() {
            return Ok(v);
        }
    }

    // 2. modules.dep by name
    if !name.contains(&b':') && db.dep_line(&name).is_some() {
        return Ok(vec![Found::new(name, None, Source::ModulesDep)]);
    }

    // 3. symbols
    if name.starts_with(b"symbol:") {
        let v: Vec<Found> = db
            .symbols(&name)
            .into_iter()
            .map(|m| Found::new(m, Some(name.clone()), Source::Symbol))
            .collect();
        if !v.is_empty() {
            return Ok(v);
        }
    }

    // 4. install/remove commands named like the request
    if let Some(cfg) = config {
        if let Some((kind, c)) = cfg.command_named(&name) {
            let mut f = Found::new(name.clone(), None, Source::Command);
            f.command = Some((kind, c.command.clone()));
            return Ok(vec![f]);
        }
    }

    // 5. modules.alias
    let v: Vec<Found> = db
        .aliases(&name)
        .into_iter()
        .map(|m| Found::new(m, Some(name.clone()), Source::IndexAlias))
        .collect();
    if !v.is_empty() {
        return Ok(v);
    }

    // 6. built-in by name
    if db.is_builtin(&name) {
        return Ok(vec![Found::new(name, None, Source::Builtin)]);
    }

    // 7. built-in aliases
    Ok(db
        .builtin_aliases(&name)
        .into_iter()
        .map(|m| Found::new(m, Some(name.clone()), Source::BuiltinAlias))
        .collect())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;

    fn tmpdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "modcore-lookup-{tag}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn text_db(tag: &str) -> (PathBuf, ModDb) {
        let d = tmpdir(tag);
        std::fs::write(
            d.join("modules.dep"),
            "kernel/fs/fat/fat.ko:\nkernel/fs/fat/msdos.ko: kernel/fs/fat/fat.ko\n\
             kernel/evil.ko: ../../../etc/evil.ko\n",
        )
        .unwrap();
        std::fs::write(
            d.join("modules.alias"),
            "# Aliases extracted from modules themselves.\n\
             alias fs-msdos msdos\nalias char-major-10-237 loop\nalias pci:v*d* fat\n",
        )
        .unwrap();
        std::fs::write(d.join("modules.symbols"), "alias symbol:fat_get fat\n").unwrap();
        std::fs::write(d.join("modules.builtin"), "kernel/fs/ext4/ext4.ko\n").unwrap();
        std::fs::write(
            d.join("modules.builtin.modinfo"),
            b"ext4.alias=fs-ext4\0ext4.license=GPL\0",
        )
        .unwrap();
        let db = ModDb::new(d.clone(), b"/lib/modules/v".to_vec(), None);
        (d, db)
    }

    #[test]
    fn text_fallback_chain() {
        let (_d, db) = text_db("chain");
        let names = |v: Vec<Found>| -> Vec<(String, Source)> {
            v.into_iter()
                .map(|f| (String::from_utf8_lossy(&f.key.name).into_owned(), f.source))
                .collect()
        };
        assert_eq!(
            names(lookup(None, &db, b"msdos").unwrap()),
            vec![("msdos".into(), Source::ModulesDep)]
        );
        assert_eq!(
            names(lookup(None, &db, b"fs-msdos").unwrap()),
            vec![("msdos".into(), Source::IndexAlias)]
        );
        assert_eq!(
            names(lookup(None, &db, b"char-major-10-237").unwrap()),
            vec![("loop".into(), Source::IndexAlias)]
        );
        assert_eq!(
            names(lookup(None, &db, b"symbol:fat_get").unwrap()),
            vec![("fat".into(), Source::Symbol)]
        );
        assert_eq!(
            names(lookup(None, &db, b"ext4").unwrap()),
            vec![("ext4".into(), Source::Builtin)]
        );
        assert_eq!(
            names(lookup(None, &db, b"fs-ext4").unwrap()),
            vec![("ext4".into(), Source::BuiltinAlias)]
        );
        assert!(lookup(None, &db, b"nothing").unwrap().is_empty());
        assert!(lookup(None, &db, b"../../etc/passwd").unwrap().is_empty());
        assert_eq!(lookup(None, &db, b"a]"), Err(LookupError::InvalidName));
    }

    #[test]
    fn paths_stay_inside() {
        let (d, db) = text_db("paths");
        assert_eq!(
            db.module_path(b"msdos"),
            Some(ModPath::Ok {
                real: d.join("kernel/fs/fat/msdos.ko"),
                shown: b"/lib/modules/v/kernel/fs/fat/msdos.ko".to_vec()
            })
        );
        let _ = db.dep_line(b"evil");
        assert_eq!(
            db.module_path(b"evil"),
            Some(ModPath::Ok {
                real: d.join("kernel/evil.ko"),
                shown: b"/lib/modules/v/kernel/evil.ko".to_vec()
            })
        );
        // The dependency path learnt from evil's line escapes: refused.
        assert!(matches!(
            db.resolve_entry(b"../../../etc/evil.ko"),
            ModPath::Refused { .. }
        ));
        assert!(matches!(
            db.resolve_entry(b"/lib/modules/v/../x.ko"),
            ModPath::Refused { .. }
        ));
        assert_eq!(db.module_path(b"nothing"), None);
    }

    #[test]
    fn dep_line_order() {
        let l = DepLine::parse(b"kernel/a.ko: kernel/b.ko kernel/c-d.ko").unwrap();
        assert_eq!(l.path, b"kernel/a.ko");
        assert_eq!(
            l.dep_names_load_order(),
            vec![b"c_d".to_vec(), b"b".to_vec()]
        );
        assert!(DepLine::parse(b"no colon").is_none());
    }
}
