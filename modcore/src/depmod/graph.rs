//! Module order, the symbol table, dependency edges, topological numbering and cycle
//! reports (spec depmod-and-index §5). Pure: no I/O.

use super::cache::NameTable;
use super::view::ModView;
pub use crate::hash::{MODULE_BUCKETS, SYMBOL_BUCKETS};
use petgraph::graph::{DiGraph, NodeIndex};
use rayon::prelude::*;
use std::collections::HashMap;

/// Sort `keys` (by index) into kmod's hash-iteration order over `buckets` buckets: by
/// bucket, then by key, equal keys in index order. For the real (small, power-of-two)
/// tables the keys are distributed by bucket first, so only the few keys of one bucket
/// are ever compared.
pub fn hash_order(keys: &[&[u8]], buckets: u32) -> Vec<usize> {
    if !buckets.is_power_of_two() || buckets > 1 << 16 {
        let mut idx: Vec<(&[u8], usize)> = keys.iter().copied().zip(0..).collect();
        crate::hash::sort_hash_order(&mut idx, buckets, |(k, _)| k);
        return idx.into_iter().map(|(_, i)| i).collect();
    }
    let tags: Vec<u32> = keys
        .iter()
        .map(|k| crate::hash::bucket_of(k, buckets))
        .collect();
    // starts[b]: where bucket b's keys begin in the result.
    let mut starts = vec![0usize; buckets as usize + 1];
    for &b in &tags {
        starts[b as usize + 1] += 1;
    }
    for b in 1..starts.len() {
        starts[b] += starts[b - 1];
    }
    let mut order = vec![0usize; keys.len()];
    let mut next = starts.clone();
    for (i, &b) in tags.iter().enumerate() {
        order[next[b as usize]] = i;
        next[b as usize] += 1;
    }
    for w in starts.windows(2) {
        // Stable: equal keys stay in index order.
        order[w[0]..w[1]].sort_by(|&a, &b| keys[a].cmp(keys[b]));
    }
    order
}

/// Outcome of reading modules.order (spec §5.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OrderFile<'a> {
    Missing,
    /// Line `lineno` (1-based) lacks its newline: no reordering at all.
    Corrupt {
        lineno: usize,
    },
    /// The lines, borrowed from the file's bytes.
    Lines(Vec<&'a [u8]>),
}

/// Parse modules.order the way kmod 30 reads it (4095-byte line buffer).
pub fn parse_order(data: &[u8]) -> OrderFile<'_> {
    const BUF: usize = 4095;
    let mut lines = Vec::new();
    let mut rest = data;
    let mut lineno = 0;
    while !rest.is_empty() {
        lineno += 1;
        let take = rest.len().min(BUF);
        match rest[..take].iter().position(|&b| b == b'\n') {
            Some(nl) => {
                lines.push(&rest[..nl]);
                rest = &rest[nl + 1..];
            }
            None => return OrderFile::Corrupt { lineno },
        }
    }
    OrderFile::Lines(lines)
}

/// The final module order: hash order, then a stable sort by modules.order position
/// (kmod 30: the last listing of a module wins). `stems[i]` is module i's stem path.
pub fn module_order(names: &[&[u8]], stems: &[Option<&[u8]>], order: &OrderFile<'_>) -> Vec<usize> {
    let mut list = hash_order(names, MODULE_BUCKETS);
    if let OrderFile::Lines(lines) = order {
        let total = lines.len() as i64;
        let mut by_stem: HashMap<&[u8], usize, foldhash::fast::RandomState> =
            HashMap::with_capacity_and_hasher(stems.len(), Default::default());
        for (i, s) in stems.iter().enumerate() {
            if let Some(s) = s {
                by_stem.insert(s, i);
            }
        }
        let mut key = vec![1i64; names.len()];
        for (k, line) in lines.iter().enumerate() {
            if let Some(&m) = by_stem.get(line) {
                key[m] = (k as i64 + 1) - (total + 1);
            }
        }
        list.sort_by_key(|&m| key[m]);
    }
    list
}

/// Symbol owner record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SymRecord {
    /// Owning module (index in module order), or None for a kernel symbol.
    pub owner: Option<u32>,
    pub crc: u64,
}

/// Options that change symbol resolution.
#[derive(Debug, Clone, Default)]
pub struct ResolveOptions {
    /// `-P c`: a prefix character to strip.
    pub prefix: Option<u8>,
    /// Kernel symbols from `-E`/`-F` (name, crc), in file order.
    pub kernel_symbols: Option<Vec<(Vec<u8>, u64)>>,
    /// `-e`: report unresolved symbols.
    pub errsyms: bool,
    /// CRC checking is on (`-E`).
    pub check_crcs: bool,
    /// `-v`: report every edge as an [`Event::Edge`] (off, no edge costs an allocation).
    pub edges: bool,
}

/// What the graph step reports, in the order it happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// `-v`: module `user` needs `symbol` from `owner`.
    Edge {
        user: u32,
        symbol: Vec<u8>,
        owner: u32,
    },
    /// `-e`: module needs a symbol nobody exports.
    Unknown { module: u32, symbol: Vec<u8> },
    /// `-e -E`: CRC mismatch.
    BadCrc { module: u32, symbol: Vec<u8> },
}

/// Symbol name to its record; the names are borrowed from the modules (and the kernel
/// symbol list), not copied. foldhash: several times faster than SipHash on the 200,000
/// symbol lookups of a big tree, and still seeded per process, so crafted names cannot
/// aim for collisions.
pub type SymbolTable<'a> = HashMap<&'a [u8], SymRecord, foldhash::fast::RandomState>;

/// The resolved dependency graph over modules in module order.
pub struct DepGraph<'a> {
    /// Direct dependencies in discovery order (petgraph storage; see `deps`).
    pub graph: DiGraph<(), ()>,
    deps: Vec<Vec<u32>>,
    symbols: Symbols<'a>,
}

/// The symbol table: a map by name, or, when symbols were resolved by name id (see
/// [`DepGraph::build`]), only the symbols modules export, sorted by name.
enum Symbols<'a> {
    Map(SymbolTable<'a>),
    Owned(Vec<(&'a [u8], u32)>),
}

/// No module exports the symbol (in the owner array of [`DepGraph::build_by_id`]).
const NO_OWNER: u32 = u32::MAX;

/// Where the name of a needed symbol is, for the events that print it.
#[derive(Clone, Copy)]
enum NeedName<'a> {
    Table(u32),
    Fresh(&'a [u8]),
}

/// The graph of each module's direct dependencies, from the modules' resolved needs
/// (in module order), their events added to `events` in that order.
fn edges(
    resolved: Vec<(Vec<u32>, Vec<Event>)>,
    events: &mut Vec<Event>,
) -> (DiGraph<(), ()>, Vec<Vec<u32>>) {
    let n = resolved.len();
    let mut graph = DiGraph::with_capacity(n, n * 2);
    for _ in 0..n {
        graph.add_node(());
    }
    let mut deps: Vec<Vec<u32>> = Vec::with_capacity(n);
    for (i, (d, ev)) in resolved.into_iter().enumerate() {
        for &owner in &d {
            graph.add_edge(NodeIndex::new(i), NodeIndex::new(owner as usize), ());
        }
        deps.push(d);
        events.extend(ev);
    }
    (graph, deps)
}

fn strip_prefix(name: &[u8], prefix: Option<u8>) -> &[u8] {
    match (prefix, name.first()) {
        (Some(p), Some(&c)) if c == p => &name[1..],
        _ => name,
    }
}

impl<'a> DepGraph<'a> {
    /// Build the symbol table and the edges (spec §5.3, §5.4). `mods` is in module order.
    ///
    /// When modules come from the cache (whose bodies name symbols by id) and neither
    /// kernel symbols nor a prefix are involved, symbols are resolved by id
    /// ([`DepGraph::build_by_id`]): the same graph and events, without hashing a name
    /// per needed symbol.
    pub fn build(
        mods: &[ModView<'a>],
        opts: &'a ResolveOptions,
        events: &mut Vec<Event>,
    ) -> DepGraph<'a> {
        if opts.kernel_symbols.is_none() && opts.prefix.is_none() && !opts.check_crcs {
            if let Some(g) = Self::build_by_id(mods, opts, events) {
                return g;
            }
        }
        let exports: usize = mods.iter().map(|m| m.export_count()).sum();
        let mut symbols = SymbolTable::with_capacity_and_hasher(exports + 64, Default::default());
        if let Some(ks) = &opts.kernel_symbols {
            for (name, crc) in ks {
                symbols.insert(
                    name.as_slice(),
                    SymRecord {
                        owner: None,
                        crc: *crc,
                    },
                );
            }
            for fake in [&b"__this_module"[..], b"_GLOBAL_OFFSET_TABLE_"] {
                symbols.insert(
                    fake,
                    SymRecord {
                        owner: None,
                        crc: 0,
                    },
                );
            }
            symbols.entry(&b"TOC."[..]).or_insert(SymRecord {
                owner: None,
                crc: 0,
            });
        }
        for (i, m) in mods.iter().enumerate() {
            for (name, crc) in m.exports() {
                let name = strip_prefix(name, opts.prefix);
                symbols.insert(
                    name,
                    SymRecord {
                        owner: Some(i as u32),
                        crc,
                    },
                );
            }
        }
        // Each module's needs are resolved independently (in parallel); the edges and
        // events are then added in module order, exactly as a sequential pass would.
        let resolved: Vec<(Vec<u32>, Vec<Event>)> = mods
            .par_iter()
            .enumerate()
            .map(|(i, m)| {
                let mut deps: Vec<u32> = Vec::new();
                let mut events = Vec::new();
                for (full, crc, weak) in m.needs() {
                    let mut name: &[u8] = full;
                    if name.first() == Some(&b'.') {
                        name = &name[1..];
                    }
                    let name = strip_prefix(name, opts.prefix);
                    match symbols.get(name) {
                        None => {
                            if opts.errsyms && !weak {
                                events.push(Event::Unknown {
                                    module: i as u32,
                                    symbol: full.to_vec(),
                                });
                            }
                        }
                        Some(rec) => {
                            if opts.errsyms && opts.check_crcs && rec.crc != crc && !weak {
                                events.push(Event::BadCrc {
                                    module: i as u32,
                                    symbol: full.to_vec(),
                                });
                            }
                            if let Some(owner) = rec.owner {
                                if !deps.contains(&owner) {
                                    deps.push(owner);
                                    if opts.edges {
                                        events.push(Event::Edge {
                                            user: i as u32,
                                            symbol: name.to_vec(),
                                            owner,
                                        });
                                    }
                                }
                            }
                        }
                    }
                }
                (deps, events)
            })
            .collect();
        let (graph, deps) = edges(resolved, events);
        DepGraph {
            graph,
            deps,
            symbols: Symbols::Map(symbols),
        }
    }

    /// [`DepGraph::build`] by name id, for modules all from one cache file or freshly
    /// read (`None` otherwise, or when none is from the cache). Every name gets an id:
    /// the cache's for the names its table has (a fresh module's are found by
    /// bisection), new ones after those. Exports fill an array from id to the last
    /// exporting module in module order (as later inserts replace earlier ones in the
    /// map), and each need is one look into it.
    fn build_by_id(
        mods: &[ModView<'a>],
        opts: &ResolveOptions,
        events: &mut Vec<Event>,
    ) -> Option<DepGraph<'a>> {
        let mut table: Option<NameTable<'a>> = None;
        for m in mods {
            if let ModView::Cached(b) = *m {
                let t = b.names();
                match table {
                    None => table = Some(t),
                    Some(o) if o.same_as(&t) => {}
                    Some(_) => return None,
                }
            }
        }
        let table = table?;
        let base = table.len() as u32;
        let mut extra: HashMap<&'a [u8], u32, foldhash::fast::RandomState> = HashMap::default();
        let mut extra_names: Vec<&'a [u8]> = Vec::new();
        let mut intern = |name: &'a [u8]| -> u32 {
            if let Some(id) = table.find(name) {
                return id;
            }
            *extra.entry(name).or_insert_with(|| {
                extra_names.push(name);
                base + extra_names.len() as u32 - 1
            })
        };
        // A needed `.name` (old powerpc function descriptors) is looked up as `name`.
        let undot = |name: &'a [u8]| match name.first() {
            Some(b'.') => &name[1..],
            _ => name,
        };
        // Freshly read modules: their exports' ids and their needs' (resolved) ids.
        type Fresh<'n> = (Vec<u32>, Vec<(u32, bool, &'n [u8])>);
        let fresh: Vec<Option<Fresh<'a>>> = mods
            .iter()
            .map(|m| match *m {
                ModView::Data(d) => Some((
                    d.exports.iter().map(|x| intern(&x.name)).collect(),
                    d.needs
                        .iter()
                        .map(|n| (intern(undot(&n.name)), n.weak, n.name.as_slice()))
                        .collect(),
                )),
                ModView::Cached(_) => None,
            })
            .collect();
        // The table's own `.name`s, redirected (empty: no name needs it).
        let mut redirect: Vec<u32> = Vec::new();
        if table.iter().any(|n| n.first() == Some(&b'.')) {
            redirect = (0..base).collect();
            for (id, r) in redirect.iter_mut().enumerate() {
                let n = table.get(id as u32);
                if n.first() == Some(&b'.') {
                    *r = intern(undot(n));
                }
            }
        }
        let total = base as usize + extra_names.len();
        let mut owner = vec![NO_OWNER; total];
        for (i, (m, f)) in mods.iter().zip(&fresh).enumerate() {
            let mut own = |id: u32| {
                if let Some(o) = owner.get_mut(id as usize) {
                    *o = i as u32;
                }
            };
            match (*m, f) {
                (ModView::Cached(b), _) => b.export_ids().for_each(|(id, _)| own(id)),
                (_, Some((exports, _))) => exports.iter().for_each(|&id| own(id)),
                _ => {}
            }
        }
        let name_of = |id: u32| match id.checked_sub(base) {
            None => table.get(id),
            Some(k) => extra_names.get(k as usize).copied().unwrap_or_default(),
        };
        let resolved: Vec<(Vec<u32>, Vec<Event>)> = mods
            .par_iter()
            .zip(&fresh)
            .enumerate()
            .map(|(i, (m, f))| {
                let mut deps: Vec<u32> = Vec::new();
                let mut events = Vec::new();
                let mut visit = |rid: u32, weak: bool, full: NeedName<'_>| match owner
                    .get(rid as usize)
                    .copied()
                    .filter(|&o| o != NO_OWNER)
                {
                    None => {
                        if opts.errsyms && !weak {
                            let symbol = match full {
                                NeedName::Table(id) => table.get(id),
                                NeedName::Fresh(n) => n,
                            };
                            events.push(Event::Unknown {
                                module: i as u32,
                                symbol: symbol.to_vec(),
                            });
                        }
                    }
                    Some(o) => {
                        if !deps.contains(&o) {
                            deps.push(o);
                            if opts.edges {
                                events.push(Event::Edge {
                                    user: i as u32,
                                    symbol: name_of(rid).to_vec(),
                                    owner: o,
                                });
                            }
                        }
                    }
                };
                match (*m, f) {
                    (ModView::Cached(b), _) => {
                        for (id, _, weak) in b.need_ids() {
                            let rid = redirect.get(id as usize).copied().unwrap_or(id);
                            visit(rid, weak, NeedName::Table(id));
                        }
                    }
                    (_, Some((_, needs))) => {
                        for &(rid, weak, full) in needs {
                            visit(rid, weak, NeedName::Fresh(full));
                        }
                    }
                    _ => {}
                }
                (deps, events)
            })
            .collect();
        let (graph, deps) = edges(resolved, events);
        // The exported names in name order: the table's ids are, the new names are sorted
        // and merged in.
        let in_table = (0..base)
            .filter(|&id| owner[id as usize] != NO_OWNER)
            .map(|id| (table.get(id), owner[id as usize]));
        let mut more: Vec<(&'a [u8], u32)> = extra_names
            .iter()
            .enumerate()
            .map(|(k, &n)| (n, owner[base as usize + k]))
            .filter(|&(_, o)| o != NO_OWNER)
            .collect();
        crate::bytesort::sort_unstable_by_bytes(&mut more, |&(n, _)| n);
        let mut owned = Vec::with_capacity(total);
        let mut more = more.into_iter().peekable();
        for t in in_table {
            while let Some(m) = more.next_if(|m| m.0 < t.0) {
                owned.push(m);
            }
            owned.push(t);
        }
        owned.extend(more);
        Some(DepGraph {
            graph,
            deps,
            symbols: Symbols::Owned(owned),
        })
    }

    /// The owner of symbol `name`: `None` when nothing provides it, `Some(None)` for a
    /// kernel symbol, `Some(Some(i))` for one module `i` exports.
    pub fn symbol_owner(&self, name: &[u8]) -> Option<Option<u32>> {
        match &self.symbols {
            Symbols::Map(m) => m.get(name).map(|r| r.owner),
            Symbols::Owned(v) => v
                .binary_search_by(|(n, _)| (*n).cmp(name))
                .ok()
                .map(|k| Some(v[k].1)),
        }
    }

    /// The symbols modules export, each with its owner (the last exporter in module
    /// order), sorted by name (borrowed when the graph holds them so).
    pub fn owned_symbols(&self) -> std::borrow::Cow<'_, [(&'a [u8], u32)]> {
        match &self.symbols {
            Symbols::Owned(v) => std::borrow::Cow::Borrowed(v),
            Symbols::Map(m) => {
                let mut v: Vec<(&'a [u8], u32)> = m
                    .iter()
                    .filter_map(|(k, r)| r.owner.map(|o| (*k, o)))
                    .collect();
                // The names are the keys of a map: no two are equal.
                crate::bytesort::sort_unstable_by_bytes(&mut v, |&(k, _)| k);
                std::borrow::Cow::Owned(v)
            }
        }
    }

    /// Two sums of [`owned_symbols`](Self::owned_symbols) that do not depend on their
    /// order (none need be sorted): each name with its owner's name (as `modname` gives
    /// it) hashed, the hashes added, and their number; the second also with the owner's
    /// place in module order (the index lists it as the value's priority). Equal sets
    /// give equal sums; modules.symbols is a function of the first set, its index of the
    /// second.
    pub fn owned_symbols_digests<'n>(&self, modname: impl Fn(u32) -> &'n [u8]) -> [u64; 2] {
        use std::hash::BuildHasher;
        let hasher = foldhash::quality::FixedState::with_seed(0x6b6d_6f64_2d72_7331);
        let mut sums = [0u64; 2];
        let mut count = 0u64;
        let mut add = |name: &[u8], owner: u32| {
            let named = hasher.hash_one((name, modname(owner)));
            sums[0] = sums[0].wrapping_add(named);
            sums[1] = sums[1].wrapping_add(hasher.hash_one((named, owner)));
            count += 1;
        };
        match &self.symbols {
            Symbols::Owned(v) => v.iter().for_each(|&(name, o)| add(name, o)),
            Symbols::Map(m) => m
                .iter()
                .for_each(|(name, r)| r.owner.into_iter().for_each(|o| add(name, o))),
        }
        sums.map(|s| hasher.hash_one((s, count)))
    }

    /// Direct dependencies of module `i`, in discovery order.
    pub fn deps(&self, i: usize) -> &[u32] {
        &self.deps[i]
    }

    /// Topological numbering with a LIFO stack (spec §5.5). Err holds the modules that
    /// could not be numbered (they are in or behind a cycle).
    pub fn topo(&self) -> Result<Vec<u32>, Vec<u32>> {
        let n = self.deps.len();
        let mut remaining = vec![0u32; n];
        for d in &self.deps {
            for &o in d {
                remaining[o as usize] += 1;
            }
        }
        let mut stack: Vec<u32> = (0..n as u32)
            .filter(|&i| remaining[i as usize] == 0)
            .collect();
        let mut topo = vec![u32::MAX; n];
        let mut k = 0u32;
        while let Some(i) = stack.pop() {
            topo[i as usize] = k;
            k += 1;
            for &d in &self.deps[i as usize] {
                remaining[d as usize] -= 1;
                if remaining[d as usize] == 0 {
                    stack.push(d);
                }
            }
        }
        if (k as usize) < n {
            Err((0..n as u32)
                .filter(|&i| remaining[i as usize] > 0)
                .collect())
        } else {
            Ok(topo)
        }
    }

    /// Cycle report (spec §5.6): each cycle as a list of modules r -> ... -> r, plus the
    /// number of distinct modules on reported cycles. The search follows kmod's DFS but
    /// stays inside the root's strongly connected component (petgraph) and is bounded, so
    /// modules that only lead into a cycle are not reported and no input can make it spin.
    pub fn cycles(&self, stalled: &[u32]) -> (Vec<Vec<u32>>, usize) {
        let n = self.deps.len();
        let mut scc_id = vec![usize::MAX; n];
        for (k, scc) in petgraph::algo::tarjan_scc(&self.graph).iter().enumerate() {
            let cyclic =
                scc.len() > 1 || self.deps[scc[0].index()].contains(&(scc[0].index() as u32));
            if cyclic {
                for x in scc {
                    scc_id[x.index()] = k;
                }
            }
        }
        let mut r: Vec<u32> = stalled.to_vec();
        let mut visited = vec![false; n];
        let mut in_set = vec![false; n];
        let mut count = 0usize;
        let mut out = Vec::new();
        while !r.is_empty() {
            let root = r.remove(0);
            let comp = scc_id[root as usize];
            if comp == usize::MAX {
                continue;
            }
            let path = self
                .dfs_cycle(root, comp, &scc_id, &mut visited)
                .unwrap_or_else(|| self.bfs_cycle(root, comp, &scc_id));
            for &x in &path {
                if !in_set[x as usize] {
                    in_set[x as usize] = true;
                    count += 1;
                }
            }
            r.retain(|x| !path.contains(x));
            out.push(path);
        }
        (out, count)
    }

    /// kmod's iterative DFS from `root` (last dependency explored first), restricted to the
    /// component `comp`; None if it does not close a cycle within its step budget.
    fn dfs_cycle(
        &self,
        root: u32,
        comp: usize,
        scc_id: &[usize],
        visited: &mut [bool],
    ) -> Option<Vec<u32>> {
        let mut entries: Vec<(u32, Option<usize>)> = vec![(root, None)];
        let mut stack: Vec<usize> = vec![0];
        let limit = 64 * (self.deps.len() + 16);
        while let Some(ei) = stack.pop() {
            if entries.len() > limit {
                return None;
            }
            let (m, parent) = entries[ei];
            if visited[m as usize] && m == root && parent.is_some() {
                let mut path = vec![root];
                let mut p = parent;
                while let Some(pi) = p {
                    path.push(entries[pi].0);
                    p = entries[pi].1;
                }
                path.reverse();
                return Some(path);
            }
            visited[m as usize] = true;
            for &dep in &self.deps[m as usize] {
                if scc_id[dep as usize] == comp {
                    entries.push((dep, Some(ei)));
                    stack.push(entries.len() - 1);
                }
            }
        }
        None
    }

    /// A shortest cycle through `root` inside its component (fallback for odd graphs).
    fn bfs_cycle(&self, root: u32, comp: usize, scc_id: &[usize]) -> Vec<u32> {
        let mut prev: HashMap<u32, u32> = HashMap::new();
        let mut queue = std::collections::VecDeque::from([root]);
        while let Some(m) = queue.pop_front() {
            for &d in &self.deps[m as usize] {
                if scc_id[d as usize] != comp {
                    continue;
                }
                if d == root {
                    let mut path = vec![root, m];
                    let mut cur = m;
                    while cur != root {
                        cur = match prev.get(&cur) {
                            Some(&p) => p,
                            None => break,
                        };
                        path.push(cur);
                    }
                    path.reverse();
                    return path;
                }
                if let std::collections::hash_map::Entry::Vacant(e) = prev.entry(d) {
                    e.insert(m);
                    queue.push_back(d);
                }
            }
        }
        vec![root, root]
    }

    /// All modules reachable from `i`, sorted by topological index (spec §5.7).
    pub fn closure(&self, i: usize, topo: &[u32], scratch: &mut Vec<u32>) -> Vec<u32> {
        let mut sc = ClosureScratch::new(self.deps.len());
        std::mem::swap(&mut sc.stack, scratch);
        let mut out = Vec::new();
        self.closure_into(i, topo, &mut sc, &mut out);
        std::mem::swap(&mut sc.stack, scratch);
        out
    }

    /// [`DepGraph::closure`] into `out` (cleared first), with reusable scratch space: no
    /// allocation once the buffers have grown.
    pub fn closure_into(
        &self,
        i: usize,
        topo: &[u32],
        sc: &mut ClosureScratch,
        out: &mut Vec<u32>,
    ) {
        out.clear();
        sc.next_generation(self.deps.len());
        let gen = sc.generation;
        sc.stack.clear();
        sc.stack.extend_from_slice(&self.deps[i]);
        while let Some(d) = sc.stack.pop() {
            let m = &mut sc.mark[d as usize];
            if *m != gen {
                *m = gen;
                out.push(d);
                sc.stack.extend_from_slice(&self.deps[d as usize]);
            }
        }
        // Topological indexes are distinct, so an unstable sort gives the same order.
        out.sort_unstable_by_key(|&d| topo[d as usize]);
    }
}

/// Scratch space for [`DepGraph::closure_into`]: a DFS stack and visit marks stamped with a
/// generation number, so that nothing is cleared between modules.
#[derive(Debug, Default, Clone)]
pub struct ClosureScratch {
    stack: Vec<u32>,
    mark: Vec<u32>,
    generation: u32,
}

impl ClosureScratch {
    pub fn new(modules: usize) -> Self {
        ClosureScratch {
            stack: Vec::new(),
            mark: vec![0; modules],
            generation: 0,
        }
    }

    fn next_generation(&mut self, modules: usize) {
        if self.mark.len() < modules {
            self.mark.resize(modules, 0);
        }
        self.generation = self.generation.wrapping_add(1);
        if self.generation == 0 {
            self.mark.fill(0);
            self.generation = 1;
        }
    }
}
