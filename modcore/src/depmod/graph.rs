//! Module order, the symbol table, dependency edges, topological numbering and cycle
//! reports (spec depmod-and-index §5). Pure: no I/O.

use super::view::ModView;
pub use crate::hash::{MODULE_BUCKETS, SYMBOL_BUCKETS};
use petgraph::graph::{DiGraph, NodeIndex};
use rayon::prelude::*;
use std::collections::HashMap;

/// Sort `keys` (by index) into kmod's hash-iteration order over `buckets` buckets.
pub fn hash_order(keys: &[&[u8]], buckets: u32) -> Vec<usize> {
    let mut idx: Vec<(&[u8], usize)> = keys.iter().copied().zip(0..).collect();
    crate::hash::sort_hash_order(&mut idx, buckets, |(k, _)| k);
    idx.into_iter().map(|(_, i)| i).collect()
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
    /// Symbol table.
    pub symbols: SymbolTable<'a>,
}

fn strip_prefix(name: &[u8], prefix: Option<u8>) -> &[u8] {
    match (prefix, name.first()) {
        (Some(p), Some(&c)) if c == p => &name[1..],
        _ => name,
    }
}

impl<'a> DepGraph<'a> {
    /// Build the symbol table and the edges (spec §5.3, §5.4). `mods` is in module order.
    pub fn build(
        mods: &[ModView<'a>],
        opts: &'a ResolveOptions,
        events: &mut Vec<Event>,
    ) -> DepGraph<'a> {
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
        let mut graph = DiGraph::with_capacity(mods.len(), mods.len() * 2);
        for _ in mods {
            graph.add_node(());
        }
        let mut deps: Vec<Vec<u32>> = Vec::with_capacity(mods.len());
        for (i, (d, ev)) in resolved.into_iter().enumerate() {
            for &owner in &d {
                graph.add_edge(NodeIndex::new(i), NodeIndex::new(owner as usize), ());
            }
            deps.push(d);
            events.extend(ev);
        }
        DepGraph {
            graph,
            deps,
            symbols,
        }
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
