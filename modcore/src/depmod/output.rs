//! Producing every output file's bytes (spec depmod-and-index §6, §7). Pure: no I/O.

use super::graph::{ClosureScratch, DepGraph, SYMBOL_BUCKETS};
use super::view::ModView;
use crate::diag::{show, Level, Sink};
use crate::index::{first_bad, IndexBuilder, Layout, SortedIndex, WriteError};
use crate::name::{modname_from_path, normalize_alias, normalize_alias_into};
use rayon::prelude::*;

/// The `.modinfo` keys the outputs read (`alias` also feeds modules.devname); depmod keeps
/// no other entries of a module.
pub const MODINFO_KEYS: [&[u8]; 3] = [b"alias", b"softdep", b"weakdep"];

/// One module as the outputs see it, in module order.
pub struct OutModule<'a> {
    pub modname: &'a [u8],
    /// relpath if inside MODDIR, else the absolute path.
    pub path: &'a [u8],
    pub data: ModView<'a>,
}

/// A module-owned symbol: its name and its owner (place in module order).
type OwnedSymbol<'a> = (&'a [u8], u32);

/// What the files made from the modules alone (names, paths, `.modinfo` values) need:
/// the alias files, modules.softdep, modules.weakdep, modules.devname, and
/// modules.dep.bin from given lines. No dependency graph: they can be made while it is
/// worked out.
pub struct ModuleOutputs<'a> {
    pub mods: &'a [OutModule<'a>],
    pub layout: Layout,
    /// `-w`: warn about duplicate index values.
    pub warn_dups: bool,
    /// The `.modinfo` values five files list, gathered once (see
    /// [`ModuleOutputs::listed`]).
    listed: std::sync::OnceLock<Listed<'a>>,
    /// Where the alias index's order is known already (see [`AliasHint`]).
    alias_hint: Option<AliasHint>,
    /// The order of the alias index made (see [`ModuleOutputs::alias_file_order`]).
    alias_order: std::sync::OnceLock<Option<Vec<(u32, u32)>>>,
}

/// Everything needed to produce the files: [`ModuleOutputs`] (which it dereferences to)
/// and the dependency graph.
pub struct Outputs<'a, 'm> {
    base: Base<'a, 'm>,
    pub graph: &'a DepGraph<'a>,
    pub topo: &'a [u32],
    /// The module-owned symbols, worked out once for the two files that list them (see
    /// [`Outputs::owned_symbols`]).
    owned: std::sync::OnceLock<std::borrow::Cow<'a, [OwnedSymbol<'a>]>>,
    /// The same in kmod's symbol hash order (modules.symbols), worked out only when that
    /// file is made.
    owned_hash_order: std::sync::OnceLock<Vec<OwnedSymbol<'a>>>,
}

/// The [`ModuleOutputs`] of an [`Outputs`]: its own, or one made (and maybe used) before.
enum Base<'a, 'm> {
    Own(ModuleOutputs<'m>),
    Shared(&'a ModuleOutputs<'m>),
}

impl<'m> std::ops::Deref for Outputs<'_, 'm> {
    type Target = ModuleOutputs<'m>;

    fn deref(&self) -> &ModuleOutputs<'m> {
        match &self.base {
            Base::Own(b) => b,
            Base::Shared(b) => b,
        }
    }
}

/// The order in which the alias index lists the aliases of some modules, known from an
/// earlier run (the depmod cache's aliases section): the index is then made with those
/// aliases inserted in that order and the others merged in, which the index writer finds
/// sorted already. Only a shortcut: the writer checks the order, and sorts if it is not.
#[derive(Debug, Clone, Default)]
pub struct AliasHint {
    /// (module, alias) pairs: the module's place in module order, the alias's place among
    /// the module's `alias` values; in index order.
    pub sorted: Vec<(u32, u32)>,
    /// For each module (in module order): are all its aliases in `sorted`?
    pub covered: Vec<bool>,
}

/// The values of each of [`MODINFO_KEYS`] over all modules: (module index, value), in
/// module order, a module's values in file order.
struct Listed<'a> {
    alias: Vec<(u32, &'a [u8])>,
    softdep: Vec<(u32, &'a [u8])>,
    weakdep: Vec<(u32, &'a [u8])>,
}

impl<'a> Outputs<'a, 'a> {
    pub fn new(
        mods: &'a [OutModule<'a>],
        graph: &'a DepGraph<'a>,
        topo: &'a [u32],
        layout: Layout,
        warn_dups: bool,
    ) -> Outputs<'a, 'a> {
        Outputs::with_base(
            Base::Own(ModuleOutputs::new(mods, layout, warn_dups)),
            graph,
            topo,
        )
    }

    /// Make the alias index in the order `hint` gives (see [`AliasHint`]); only for
    /// outputs made with [`Outputs::new`] (a shared base has its own hint).
    pub fn with_alias_hint(mut self, hint: Option<AliasHint>) -> Outputs<'a, 'a> {
        if let Base::Own(b) = &mut self.base {
            b.alias_hint = hint;
        }
        self
    }
}

impl<'a, 'm> Outputs<'a, 'm> {
    /// The outputs over `base` (made before the graph).
    pub fn on(
        base: &'a ModuleOutputs<'m>,
        graph: &'a DepGraph<'a>,
        topo: &'a [u32],
    ) -> Outputs<'a, 'm> {
        Outputs::with_base(Base::Shared(base), graph, topo)
    }

    fn with_base(base: Base<'a, 'm>, graph: &'a DepGraph<'a>, topo: &'a [u32]) -> Outputs<'a, 'm> {
        Outputs {
            base,
            graph,
            topo,
            owned: std::sync::OnceLock::new(),
            owned_hash_order: std::sync::OnceLock::new(),
        }
    }

    /// modules.dep lines (without trailing newline), one per module in module order.
    pub fn dep_lines(&self) -> Vec<Vec<u8>> {
        let n = self.mods.len();
        self.mods
            .par_iter()
            .enumerate()
            .map_init(
                || (ClosureScratch::new(n), Vec::new()),
                |(sc, deps), (i, m)| {
                    self.graph.closure_into(i, self.topo, sc, deps);
                    let len = m.path.len()
                        + 1
                        + deps
                            .iter()
                            .map(|&d| self.mods[d as usize].path.len() + 1)
                            .sum::<usize>();
                    let mut line = Vec::with_capacity(len);
                    line.extend_from_slice(m.path);
                    line.push(b':');
                    for &d in deps.iter() {
                        line.push(b' ');
                        line.extend_from_slice(self.mods[d as usize].path);
                    }
                    line
                },
            )
            .collect()
    }

    /// Module-owned symbols (name, owner index), by name: the graph's list, borrowed when
    /// it has one, else made by the first caller and shared by the next (modules.symbols
    /// and modules.symbols.bin are made concurrently).
    fn owned_symbols(&self) -> &[(&'a [u8], u32)] {
        self.owned.get_or_init(|| self.graph.owned_symbols())
    }

    /// [`Outputs::owned_symbols`] in kmod's symbol hash order (a distribution of the
    /// sorted list by bucket).
    fn owned_symbols_hash_order(&self) -> &[(&'a [u8], u32)] {
        self.owned_hash_order.get_or_init(|| {
            crate::hash::hash_order_of_sorted(self.owned_symbols(), SYMBOL_BUCKETS, |(k, _)| k)
        })
    }

    pub fn modules_symbols(&self) -> Vec<u8> {
        const HEAD: &[u8] = b"# Aliases for symbols, used by symbol_request().\n";
        let owned = self.owned_symbols_hash_order();
        let mut out = Vec::with_capacity(
            HEAD.len()
                + owned
                    .iter()
                    .map(|&(name, owner)| {
                        b"alias symbol: \n".len() + name.len() + self.modname(owner).len()
                    })
                    .sum::<usize>(),
        );
        out.extend_from_slice(HEAD);
        for &(name, owner) in owned {
            out.extend_from_slice(b"alias symbol:");
            out.extend_from_slice(name);
            out.push(b' ');
            out.extend_from_slice(self.modname(owner));
            out.push(b'\n');
        }
        out
    }

    /// modules.symbols.bin: `symbol:NAME` to the owner's name. The names are those of a
    /// map, so every key has one value (and `-w` has no duplicate to report), and
    /// [`Outputs::owned_symbols`] has them sorted already: the file is written from them
    /// directly.
    pub fn modules_symbols_bin(&self) -> Result<Vec<u8>, WriteError> {
        let owned = self.owned_symbols();
        let mut idx = SortedIndex::with_capacity(
            owned.len(),
            owned
                .iter()
                .map(|&(name, _)| b"symbol:".len() + name.len())
                .sum(),
            owned
                .iter()
                .map(|&(_, owner)| self.modname(owner).len())
                .sum(),
        );
        let mut key = b"symbol:".to_vec();
        for &(name, owner) in owned {
            key.truncate(b"symbol:".len());
            key.extend_from_slice(name);
            idx.push(&key, self.modname(owner), owner);
        }
        idx.write(self.layout)
    }
}

impl<'a> ModuleOutputs<'a> {
    pub fn new(mods: &'a [OutModule<'a>], layout: Layout, warn_dups: bool) -> ModuleOutputs<'a> {
        ModuleOutputs {
            mods,
            layout,
            warn_dups,
            listed: std::sync::OnceLock::new(),
            alias_hint: None,
            alias_order: std::sync::OnceLock::new(),
        }
    }

    /// The aliases in the order the alias index made by [`ModuleOutputs::modules_alias_bin`]
    /// lists them, as (module place, place of the alias among the module's `alias`
    /// values) pairs, for the depmod cache to keep (see [`AliasHint`]); `None` before the
    /// index is made, or when some alias was left out of it (it does not normalise).
    pub fn alias_file_order(&self) -> Option<Vec<(u32, u32)>> {
        self.alias_order.get().cloned().flatten()
    }

    /// [`ModuleOutputs::alias_file_order`] for an alias index left in place (see
    /// `depmod::uptodate`) instead of made: its aliases are those of this run, so its
    /// order is the one the hint gives (see [`AliasHint`]; `None` without one). The
    /// order only guides a later run, which checks it.
    pub fn kept_alias_order(&self) -> Option<Vec<(u32, u32)>> {
        let hint = self.alias_hint.as_ref()?;
        // What it would report was reported when the index was made.
        let order = self.hinted_alias_order(hint, &mut crate::diag::Collect::default())?;
        let aliases = &self.listed().alias;
        if order.len() != aliases.len() {
            return None;
        }
        let starts = self.alias_starts();
        let pairs = order.iter().map(|&k| {
            let m = aliases[k as usize].0;
            (m, k - starts[m as usize])
        });
        Some(pairs.collect())
    }

    /// Make the alias index in the order `hint` gives (see [`AliasHint`]).
    pub fn with_alias_hint(mut self, hint: Option<AliasHint>) -> ModuleOutputs<'a> {
        self.alias_hint = hint;
        self
    }

    /// A builder that finds duplicate values only when they are reported (`-w`).
    fn index_builder(&self) -> IndexBuilder {
        if self.warn_dups {
            IndexBuilder::new()
        } else {
            IndexBuilder::unchecked()
        }
    }

    pub fn modules_dep(lines: &[Vec<u8>]) -> Vec<u8> {
        let mut out = Vec::with_capacity(lines.iter().map(|l| l.len() + 1).sum());
        for l in lines {
            out.extend_from_slice(l);
            out.push(b'\n');
        }
        out
    }

    /// modules.dep.bin: each module's line under its name. Module names are unique, so
    /// every key has one value (and `-w` has no duplicate to report): the names are
    /// sorted and the file written from them directly.
    pub fn modules_dep_bin(&self, lines: &[Vec<u8>]) -> Result<Vec<u8>, WriteError> {
        let mut by_name: Vec<u32> = (0..self.mods.len() as u32).collect();
        crate::bytesort::sort_unstable_by_bytes(&mut by_name, |&i| self.modname(i));
        let mut idx = SortedIndex::with_capacity(
            self.mods.len(),
            self.mods.iter().map(|m| m.modname.len()).sum(),
            lines.iter().map(Vec::len).sum(),
        );
        for i in by_name {
            idx.push(self.modname(i), &lines[i as usize], i);
        }
        idx.write(self.layout).map_err(|e| match e {
            // Reported, as kmod would, for the first such string in module order (the
            // order the entries would be inserted in).
            WriteError::BadCharacter { .. } => {
                let strings = self
                    .mods
                    .iter()
                    .zip(lines)
                    .flat_map(|(m, l)| [m.modname, l.as_slice()]);
                match first_bad(strings) {
                    Some((byte, string)) => WriteError::BadCharacter { byte, string },
                    None => e,
                }
            }
            e => e,
        })
    }

    /// The values of [`MODINFO_KEYS`], gathered in one pass over every module's entries
    /// by the first caller (five files list them; on the 6.12 tree one pass over the
    /// entries takes about 0.5 ms, as long as making modules.softdep).
    fn listed(&self) -> &Listed<'a> {
        self.listed.get_or_init(|| {
            let mut l = Listed {
                alias: Vec::with_capacity(self.mods.len() * 8),
                softdep: Vec::new(),
                weakdep: Vec::new(),
            };
            for (i, m) in self.mods.iter().enumerate() {
                for (k, v) in m.data.modinfo() {
                    let list = match k {
                        b"alias" => &mut l.alias,
                        b"softdep" => &mut l.softdep,
                        b"weakdep" => &mut l.weakdep,
                        _ => continue,
                    };
                    list.push((i as u32, v));
                }
            }
            l
        })
    }

    fn modname(&self, i: u32) -> &'a [u8] {
        self.mods[i as usize].modname
    }

    /// (count, bytes) of every module's aliases, each with its module's name.
    fn alias_sizes(&self) -> (usize, usize) {
        let aliases = &self.listed().alias;
        let bytes = aliases
            .iter()
            .map(|&(i, a)| a.len() + self.modname(i).len())
            .sum();
        (aliases.len(), bytes)
    }

    /// Sums of what the alias files are made from (see `depmod::uptodate`): the modules
    /// that have aliases, in module order, each by name and `data_hash` (of all its
    /// data, aliases included); the index's sum also by each one's place in module order
    /// (its values' priority). A module without aliases adds nothing: adding or removing
    /// one at the end of module order leaves both sums as they were.
    pub fn alias_digests(&self, data_hash: impl Fn(u32) -> u64) -> [u64; 2] {
        use std::hash::BuildHasher;
        let hasher = foldhash::quality::FixedState::with_seed(0x6b6d_6f64_2d72_7332);
        let mut sums = [0u64; 2];
        for group in self.listed().alias.chunk_by(|a, b| a.0 == b.0) {
            let m = group[0].0;
            let named = hasher.hash_one((self.modname(m), data_hash(m)));
            sums[0] = hasher.hash_one((sums[0], named));
            sums[1] = hasher.hash_one((sums[1], named, m));
        }
        sums
    }

    pub fn modules_alias(&self) -> Vec<u8> {
        const HEAD: &[u8] = b"# Aliases extracted from modules themselves.\n";
        let (count, bytes) = self.alias_sizes();
        let mut out = Vec::with_capacity(HEAD.len() + bytes + count * b"alias  \n".len());
        out.extend_from_slice(HEAD);
        for &(i, a) in &self.listed().alias {
            out.extend_from_slice(b"alias ");
            out.extend_from_slice(a);
            out.push(b' ');
            out.extend_from_slice(self.modname(i));
            out.push(b'\n');
        }
        out
    }

    pub fn modules_alias_bin(&self, sink: &mut dyn Sink) -> Result<Vec<u8>, WriteError> {
        let (count, bytes) = self.alias_sizes();
        let aliases = &self.listed().alias;
        // (With -w the duplicates are reported in insertion order: module order.)
        let hinted = match &self.alias_hint {
            Some(hint) if !self.warn_dups => self.hinted_alias_order(hint, sink),
            _ => None,
        };
        // The aliases inserted, in insertion order (as places in `aliases`), and the
        // file with the places of those (in `inserted`) in the order it lists them.
        let (inserted, (file, order)) = match hinted {
            // In the order of an earlier run the keys arrive sorted (or nearly: the index
            // then sorts them after all).
            Some(order) => {
                let mut idx = SortedIndex::with_capacity(count, bytes, bytes);
                let mut key = Vec::new();
                let mut inserted = Vec::with_capacity(order.len());
                for k in order {
                    let (i, a) = aliases[k as usize];
                    key.clear();
                    match normalize_alias_into(a, &mut key) {
                        Ok(()) => {
                            idx.push(&key, self.modname(i), i);
                            inserted.push(k);
                        }
                        Err(_) => {
                            sink.emit(Level::Warning, format!("Unmatched bracket in {}", show(a)))
                        }
                    }
                }
                (inserted, idx.write_with_order(self.layout)?)
            }
            None => {
                let mut idx = self.index_builder();
                idx.reserve(count, bytes);
                let order = 0..aliases.len() as u32;
                let inserted = self.insert_aliases(&mut idx, order, sink);
                (inserted, idx.write_with_order(self.layout)?)
            }
        };
        let complete = inserted.len() == aliases.len();
        let _ = self.alias_order.set(complete.then(|| {
            let starts = self.alias_starts();
            order
                .iter()
                .filter_map(|&r| inserted.get(r as usize))
                .map(|&k| {
                    let m = aliases[k as usize].0;
                    (m, k - starts[m as usize])
                })
                .collect()
        }));
        Ok(file)
    }

    /// Insert the aliases at places `order` of `listed().alias` into `idx`, reporting
    /// those that do not normalise (left out) and, with -w, repeated ones; the places of
    /// those inserted, in insertion order.
    fn insert_aliases(
        &self,
        idx: &mut IndexBuilder,
        order: impl IntoIterator<Item = u32>,
        sink: &mut dyn Sink,
    ) -> Vec<u32> {
        let aliases = &self.listed().alias;
        let mut inserted = Vec::with_capacity(aliases.len());
        for k in order {
            let (i, a) = aliases[k as usize];
            let modname = self.modname(i);
            match idx.insert_with(|key| normalize_alias_into(a, key), modname, i) {
                Ok(duplicate) => {
                    inserted.push(k);
                    if duplicate && self.warn_dups {
                        let key = normalize_alias(a).unwrap_or_default();
                        let line = format!("{} {}", show(&key), show(modname));
                        sink.emit(Level::Warning, format!("duplicate module alias:\n{line}"));
                    }
                }
                Err(_) => sink.emit(Level::Warning, format!("Unmatched bracket in {}", show(a))),
            }
        }
        inserted
    }

    /// Where each module's aliases start in `listed().alias` (grouped by module, in
    /// module order), and (last) their number.
    fn alias_starts(&self) -> Vec<u32> {
        let n = self.mods.len();
        let mut starts = vec![0u32; n + 1];
        for &(i, _) in &self.listed().alias {
            starts[i as usize + 1] += 1;
        }
        for m in 0..n {
            starts[m + 1] += starts[m];
        }
        starts
    }

    /// The aliases (as places in `listed().alias`) in the order `hint` gives, the aliases
    /// of the modules it does not cover merged in by (key, module place); `None` when the
    /// hint does not fit the modules (then the index is made in module order). Aliases
    /// that do not normalise are reported here, in module order, and left out (as the
    /// index leaves them out); the hint covers none.
    pub(super) fn hinted_alias_order(
        &self,
        hint: &AliasHint,
        sink: &mut dyn Sink,
    ) -> Option<Vec<u32>> {
        let aliases = &self.listed().alias;
        let n = self.mods.len();
        if hint.covered.len() != n || !hint.covered.contains(&true) {
            return None;
        }
        let starts = self.alias_starts();
        let mut seen = vec![false; aliases.len()];
        let mut known = Vec::with_capacity(aliases.len());
        for &(m, a) in &hint.sorted {
            let m = m as usize;
            if !hint.covered.get(m).copied().unwrap_or(false) {
                return None;
            }
            let k = starts[m].checked_add(a).filter(|&k| k < starts[m + 1])?;
            if std::mem::replace(&mut seen[k as usize], true) {
                return None;
            }
            known.push(k);
        }
        let covered: u32 = (0..n)
            .filter(|&m| hint.covered[m])
            .map(|m| starts[m + 1] - starts[m])
            .sum();
        if known.len() != covered as usize {
            return None;
        }
        let mut fresh: Vec<(Vec<u8>, u32, u32)> = Vec::new();
        for m in (0..n).filter(|&m| !hint.covered[m]) {
            for k in starts[m]..starts[m + 1] {
                let a = aliases[k as usize].1;
                match normalize_alias(a) {
                    Ok(key) => fresh.push((key, m as u32, k)),
                    Err(_) => {
                        sink.emit(Level::Warning, format!("Unmatched bracket in {}", show(a)))
                    }
                }
            }
        }
        fresh.sort_unstable();
        let mut order = Vec::with_capacity(known.len() + fresh.len());
        let mut scratch = Vec::new();
        let mut rest = known.as_slice();
        for (key, m, k) in fresh {
            let before = rest.partition_point(|&c| {
                let (cm, ca) = aliases[c as usize];
                scratch.clear();
                // A covered alias always normalises; were it not to, it sorts first.
                let _ = normalize_alias_into(ca, &mut scratch);
                (scratch.as_slice(), cm) <= (key.as_slice(), m)
            });
            order.extend_from_slice(&rest[..before]);
            order.push(k);
            rest = &rest[before..];
        }
        order.extend_from_slice(rest);
        Some(order)
    }

    fn keyed_lines(&self, header: &[u8], word: &[u8], values: &[(u32, &[u8])]) -> Vec<u8> {
        let mut out = header.to_vec();
        for &(i, v) in values {
            out.extend_from_slice(word);
            out.push(b' ');
            out.extend_from_slice(self.modname(i));
            out.push(b' ');
            out.extend_from_slice(v);
            out.push(b'\n');
        }
        out
    }

    pub fn modules_softdep(&self) -> Vec<u8> {
        self.keyed_lines(
            b"# Soft dependencies extracted from modules themselves.\n",
            b"softdep",
            &self.listed().softdep,
        )
    }

    pub fn modules_weakdep(&self) -> Vec<u8> {
        self.keyed_lines(
            b"# Weak dependencies extracted from modules themselves.\n",
            b"weakdep",
            &self.listed().weakdep,
        )
    }

    pub fn modules_devname(&self, sink: &mut dyn Sink) -> Vec<u8> {
        let mut out = Vec::new();
        for aliases in self.listed().alias.chunk_by(|a, b| a.0 == b.0) {
            let modname = self.modname(aliases[0].0);
            let mut devname: Option<&[u8]> = None;
            let mut dev: Option<(u8, u32, u32)> = None;
            for &(_, a) in aliases {
                if let Some(d) = a.strip_prefix(b"devname:") {
                    devname = Some(d);
                } else if dev.is_none() {
                    if let Some((ma, mi)) = scan_major_minor(a, b"char-major-") {
                        dev = Some((b'c', ma, mi));
                    } else if let Some((ma, mi)) = scan_major_minor(a, b"block-major-") {
                        dev = Some((b'b', ma, mi));
                    }
                }
                if devname.is_some() && dev.is_some() {
                    break;
                }
            }
            match (devname, dev) {
                (Some(d), Some((t, ma, mi))) => {
                    if out.is_empty() {
                        out.extend_from_slice(
                            b"# Device nodes to trigger on-demand module loading.\n",
                        );
                    }
                    out.extend_from_slice(modname);
                    out.push(b' ');
                    out.extend_from_slice(d);
                    out.extend_from_slice(format!(" {}{}:{}\n", t as char, ma, mi).as_bytes());
                }
                (Some(d), None) => sink.emit(
                    Level::Error,
                    format!(
                        "Module '{}' has devname ({}) but lacks major and minor information. Ignoring.",
                        show(modname),
                        show(d)
                    ),
                ),
                _ => {}
            }
        }
        out
    }
}

/// scanf-like `<prefix>%u-%u`: needs only a prefix match.
fn scan_major_minor(s: &[u8], prefix: &[u8]) -> Option<(u32, u32)> {
    let rest = s.strip_prefix(prefix)?;
    let (ma, rest) = scan_u32(rest)?;
    let rest = rest.strip_prefix(b"-")?;
    let (mi, _) = scan_u32(rest)?;
    Some((ma, mi))
}

/// scanf `%u`: optional leading whitespace and sign, decimal digits, wrapping like strtoul
/// truncated to 32 bits.
fn scan_u32(s: &[u8]) -> Option<(u32, &[u8])> {
    let mut i = 0;
    while i < s.len() && s[i].is_ascii_whitespace() {
        i += 1;
    }
    let mut neg = false;
    if i < s.len() && (s[i] == b'+' || s[i] == b'-') {
        neg = s[i] == b'-';
        i += 1;
    }
    let start = i;
    let mut v: u64 = 0;
    while i < s.len() && s[i].is_ascii_digit() {
        v = v.saturating_mul(10).saturating_add(u64::from(s[i] - b'0'));
        i += 1;
    }
    if i == start {
        return None;
    }
    let v = if v > u64::from(u32::MAX) {
        u32::MAX
    } else {
        v as u32
    };
    Some((if neg { v.wrapping_neg() } else { v }, &s[i..]))
}

/// modules.builtin → modules.builtin.bin.
pub fn builtin_bin(
    data: &[u8],
    layout: Layout,
    sink: &mut dyn Sink,
) -> Result<Vec<u8>, WriteError> {
    let mut idx = IndexBuilder::unchecked();
    for line in split_lines_keep_nl(data, 4095) {
        if !line.first().is_some_and(|b| b.is_ascii_alphabetic()) {
            sink.emit(
                Level::Error,
                format!("Invalid modules.builtin line: {}", show(line)),
            );
            continue;
        }
        let key = modname_from_path(line);
        idx.insert(&key, b"", 0);
    }
    idx.write(layout)
}

/// Lines as fgets with a buffer of `max` bytes returns them: newline kept.
fn split_lines_keep_nl(data: &[u8], max: usize) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        let take = rest.len().min(max);
        let end = rest[..take]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(take, |p| p + 1);
        out.push(&rest[..end]);
        rest = &rest[end..];
    }
    out
}

/// modules.builtin.modinfo → modules.builtin.alias.bin, with kmod's parser quirks.
pub fn builtin_alias_bin(
    data: &[u8],
    layout: Layout,
    sink: &mut dyn Sink,
) -> Result<Vec<u8>, WriteError> {
    let mut idx = IndexBuilder::unchecked();
    let mut pos = 0usize;
    let n = data.len();
    'records: while pos < n {
        // 1. module name up to '.'
        let start = pos;
        while pos < n && data[pos] != b'.' && data[pos] != 0 {
            pos += 1;
        }
        if pos >= n || data[pos] == 0 || pos == start {
            pos += 1;
            continue 'records;
        }
        let module = &data[start..pos];
        pos += 1;
        // 2. key up to '='
        let kstart = pos;
        while pos < n && data[pos] != b'=' && data[pos] != 0 {
            pos += 1;
        }
        let key: &[u8] = if pos < n && data[pos] == b'=' {
            &data[kstart..pos]
        } else {
            b""
        };
        pos += 1;
        if key != b"alias" {
            while pos < n && data[pos] != 0 {
                pos += 1;
            }
            pos += 1;
            continue 'records;
        }
        // 3. value up to NUL
        let vstart = pos;
        while pos < n && data[pos] != 0 {
            pos += 1;
        }
        if pos >= n {
            break;
        }
        let value = &data[vstart..pos];
        pos += 1;
        if value.is_empty() {
            continue;
        }
        match normalize_alias(value) {
            Ok(a) => {
                idx.insert(&a, module, 0);
            }
            Err(_) => sink.emit(
                Level::Warning,
                format!("Unmatched bracket in {}", show(value)),
            ),
        }
    }
    idx.write(layout)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn major_minor() {
        assert_eq!(
            scan_major_minor(b"char-major-1-2-extra", b"char-major-"),
            Some((1, 2))
        );
        assert_eq!(scan_major_minor(b"char-major-1", b"char-major-"), None);
        assert_eq!(scan_major_minor(b"block-major-8-*", b"block-major-"), None);
        assert_eq!(
            scan_major_minor(b"block-major-8- 3", b"block-major-"),
            Some((8, 3))
        );
    }

    #[test]
    fn lines() {
        assert_eq!(
            split_lines_keep_nl(b"a\nbb\nc", 4095),
            vec![&b"a\n"[..], b"bb\n", b"c"]
        );
    }
}
