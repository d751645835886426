//! Building and writing an index (spec depmod-and-index §8.2–§8.5).

use std::collections::HashMap;

use super::{
    HEADER_LEN, INDEX_MAGIC, INDEX_VERSION, MAX_NODE_OFFSET, NODE_CHILDREN, NODE_PREFIX,
    NODE_VALUES,
};

/// Where node bodies go in the file. The bodies and the file size are the same in both.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Layout {
    /// Children before their parent, the root last (kmod 30 and every kmod before 34).
    #[default]
    PostOrder,
    /// The root first, each node followed by its children's subtrees (kmod 34 and later).
    PreOrder,
}

/// Why an index could not be written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WriteError {
    /// A node would start at or beyond 2^28, which a node reference cannot express.
    #[error("index too large: a node would start at offset {offset}, beyond the 28-bit limit")]
    TooLarge {
        /// The first offending node offset.
        offset: u64,
    },
    /// A key or value contains a byte the format cannot hold: NUL (it terminates strings) or a
    /// byte ≥ 0x80 (only 7-bit ASCII is supported, as kmod 34+ enforces).
    #[error("bad character 0x{byte:02x} - only 7-bit ASCII is supported")]
    BadCharacter {
        /// The offending byte.
        byte: u8,
        /// The key or value that contains it.
        string: Vec<u8>,
    },
}

/// A key with its values (priority, bytes), as returned by [`IndexBuilder::entries`].
pub type BuilderEntry = (Vec<u8>, Vec<(u32, Vec<u8>)>);

/// One inserted value: where its key and value bytes are in the builder's arena.
#[derive(Debug, Clone, Copy)]
struct Record {
    key: usize,
    key_len: u32,
    value: usize,
    value_len: u32,
    priority: u32,
}

/// No record (end of a duplicate-check chain).
const NONE: u32 = u32::MAX;

/// A trie node of [`Sorted`]: no allocation of its own, everything is a range.
#[derive(Debug, Clone, Copy)]
struct Node {
    /// The distinct key (index into `Sorted::keys`) whose bytes hold the prefix.
    key: u32,
    prefix_start: u32,
    prefix_len: u32,
    /// The distinct key whose values sit on this node, if any.
    values: Option<u32>,
    /// This node's children in `Sorted::children`.
    children: (u32, u32),
}

/// An index being built.
///
/// Inserting only records the key and value (bytes in one arena, no allocation per
/// value); [`write`](Self::write) sorts the records by key once and lays the
/// compressed radix tree (a "Patricia trie") out from the sorted keys: the tree's shape
/// depends only on the set of keys, each node holding the longest prefix its subtree
/// shares, and the root's prefix always empty (as every kmod builds it). The order of a
/// key's values depends on priorities and insertion order (§8.4).
#[derive(Debug, Clone)]
pub struct IndexBuilder {
    bytes: Vec<u8>,
    records: Vec<Record>,
    /// Duplicate check: the latest record per hash of (key, value), and for each record
    /// the previous one with the same hash.
    /// Seeded per process, so crafted keys cannot aim for one long chain.
    latest: HashMap<u64, u32, foldhash::fast::RandomState>,
    previous: Vec<u32>,
    /// The first key or value seen with a byte the format cannot hold.
    bad: Option<(u8, Vec<u8>)>,
    /// A key or value of 4 GiB or more was inserted (and dropped).
    oversized: bool,
    /// Look for duplicate values at all (see [`IndexBuilder::unchecked`]).
    check_duplicates: bool,
}

impl Default for IndexBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl IndexBuilder {
    /// An empty index (writing it gives a 12-byte file whose root is an empty node).
    pub fn new() -> Self {
        IndexBuilder {
            bytes: Vec::new(),
            records: Vec::new(),
            latest: HashMap::default(),
            previous: Vec::new(),
            bad: None,
            oversized: false,
            check_duplicates: true,
        }
    }

    /// An empty index whose [`insert`](Self::insert) never reports duplicates, and so
    /// does not pay for finding them (depmod without `-w`). The file is the same.
    pub fn unchecked() -> Self {
        IndexBuilder {
            check_duplicates: false,
            ..Self::new()
        }
    }

    /// Make room for `values` more inserts holding `bytes` bytes of keys and values in
    /// all (the builder then grows in one step instead of doubling its way there).
    pub fn reserve(&mut self, values: usize, bytes: usize) {
        self.records.reserve(values);
        self.bytes.reserve(bytes);
        if self.check_duplicates {
            self.previous.reserve(values);
        }
    }

    /// Has nothing been inserted?
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// The number of distinct keys.
    pub fn key_count(&self) -> usize {
        self.sorted().keys.len()
    }

    /// The number of values over all keys (duplicates included).
    pub fn value_count(&self) -> usize {
        self.records.len()
    }

    /// The number of trie nodes, the root included.
    pub fn node_count(&self) -> usize {
        self.sorted().nodes.len()
    }

    fn key_of(&self, r: &Record) -> &[u8] {
        &self.bytes[r.key..r.key + r.key_len as usize]
    }

    fn value_of(&self, r: &Record) -> &[u8] {
        &self.bytes[r.value..r.value + r.value_len as usize]
    }

    /// Add `value` with `priority` under `key`.
    ///
    /// The value goes before the first existing value of the key whose priority is greater
    /// than or equal to `priority`. Returns `true` when the key already had an identical value
    /// (depmod -w warns about it); the new value is stored anyway.
    ///
    /// Keys and values holding NUL or bytes ≥ 0x80 are accepted here but make
    /// [`write`](Self::write) fail; so do keys or values of 4 GiB or more.
    pub fn insert(&mut self, key: &[u8], value: &[u8], priority: u32) -> bool {
        let put = |arena: &mut Vec<u8>| {
            arena.extend_from_slice(key);
            Ok::<(), std::convert::Infallible>(())
        };
        match self.insert_with(put, value, priority) {
            Ok(duplicate) => duplicate,
            Err(never) => match never {},
        }
    }

    /// [`insert`](Self::insert) with the key written straight into the builder by `key`
    /// (which appends it to the vector it is given): a key made from another string (a
    /// normalised alias) is not built elsewhere first and then copied. When `key` fails
    /// nothing is inserted and its error is returned.
    pub fn insert_with<E>(
        &mut self,
        key: impl FnOnce(&mut Vec<u8>) -> Result<(), E>,
        value: &[u8],
        priority: u32,
    ) -> Result<bool, E> {
        let start = self.bytes.len();
        if let Err(e) = key(&mut self.bytes) {
            self.bytes.truncate(start);
            return Err(e);
        }
        let key_len = self.bytes.len() - start;
        note_bad(&mut self.bad, &self.bytes[start..], value);
        let (Ok(key_len), Ok(value_len)) = (u32::try_from(key_len), u32::try_from(value.len()))
        else {
            // Far beyond what an index can hold (2^28 bytes); refused by `write`.
            self.bytes.truncate(start);
            self.oversized = true;
            return Ok(false);
        };
        let record = Record {
            key: start,
            key_len,
            value: start + key_len as usize,
            value_len,
            priority,
        };
        if !self.check_duplicates {
            self.bytes.extend_from_slice(value);
            self.records.push(record);
            return Ok(false);
        }
        let id = self.records.len() as u32;
        let key = &self.bytes[start..];
        let hash = {
            use std::hash::{BuildHasher, Hasher};
            let mut h = self.latest.hasher().build_hasher();
            h.write(key);
            h.write_u8(0);
            h.write(value);
            h.finish()
        };
        let mut duplicate = false;
        let head = self.latest.get(&hash).copied().unwrap_or(NONE);
        let mut at = head;
        while at != NONE {
            let r = &self.records[at as usize];
            if self.key_of(r) == key && self.value_of(r) == value {
                duplicate = true;
                break;
            }
            at = self.previous[at as usize];
        }
        self.latest.insert(hash, id);
        self.previous.push(head);
        self.bytes.extend_from_slice(value);
        self.records.push(record);
        Ok(duplicate)
    }

    /// The records in file order (by key; within a key ascending priority, the newest
    /// first among equal priorities: each value goes before the first one of equal or
    /// higher priority) and the distinct keys, with their common prefixes.
    fn keyed(&self) -> Keyed {
        // Each record is tagged with its key's first 24 bytes (big-endian, zero-padded):
        // comparing those orders most pairs without touching the arena (real alias keys
        // often share their first 16 bytes, "pci:v00008086d00"); equal tags fall back to
        // the rest of the key, or to the whole key when one is shorter than the tag (a
        // zero pad never decides, as keys may be prefixes of one another).
        let mut tagged: Vec<Tagged> = self
            .records
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let tag = tag(self.key_of(r));
                Tagged { tag, id: i as u32 }
            })
            .collect();
        let rest_cmp = |a: &[u8], b: &[u8]| {
            if a.len() >= TAG_LEN && b.len() >= TAG_LEN {
                a[TAG_LEN..].cmp(&b[TAG_LEN..])
            } else {
                a.cmp(b)
            }
        };
        let key_then_priority = |x: &Tagged, y: &Tagged| {
            let (ra, rb) = (&self.records[x.id as usize], &self.records[y.id as usize]);
            x.tag.cmp(&y.tag).then_with(|| {
                rest_cmp(self.key_of(ra), self.key_of(rb)).then(ra.priority.cmp(&rb.priority))
            })
        };
        // Records inserted in file order already (a caller that knows the order, see
        // `depmod::output`) need no sort: one pass checks, and turns each run of equal
        // key and priority round (newest first).
        if !in_file_order(&mut tagged, key_then_priority) {
            tagged.sort_unstable_by(|x, y| key_then_priority(x, y).then(y.id.cmp(&x.id)));
        }
        // The distinct keys, copied one after the other in key order (the trie walk
        // reads them range by range; in insertion order they would be scattered over
        // the arena), with the common prefix of each key and the one before it.
        let n = self.records.len();
        let mut keys: Vec<(u32, u32)> = Vec::with_capacity(n);
        let mut set =
            KeySet::with_capacity(n, self.records.iter().map(|r| r.key_len as usize).sum());
        let mut lo = 0usize;
        while lo < tagged.len() {
            let first = &tagged[lo];
            let k = self.key_of(&self.records[first.id as usize]);
            let mut hi = lo + 1;
            while hi < tagged.len()
                && tagged[hi].tag == first.tag
                && self.key_of(&self.records[tagged[hi].id as usize]) == k
            {
                hi += 1;
            }
            set.push(k);
            keys.push((lo as u32, hi as u32));
            lo = hi;
        }
        Keyed {
            order: tagged.into_iter().map(|t| t.id).collect(),
            keys,
            set,
        }
    }

    /// The records in file order (see [`IndexBuilder::keyed`]) and the trie over the
    /// distinct keys.
    fn sorted(&self) -> Sorted {
        let keyed = self.keyed();
        let key = |i: u32| keyed.set.key(i);
        let keys = &keyed.keys;

        let mut nodes = vec![Node {
            key: 0,
            prefix_start: 0,
            prefix_len: 0,
            values: None,
            children: (0, 0),
        }];
        let mut children: Vec<(u8, u32)> = Vec::new();
        // (node, distinct keys lo..hi under it, bytes of the key consumed above it, the
        // length of the prefix all its keys share). Sorted keys: the keys of a range all
        // share min(lcp[lo+1..hi]) bytes, and a range splits where lcp equals that.
        let mut work: Vec<(u32, u32, u32, usize, usize)> = Vec::new();
        if !keys.is_empty() {
            work.push((ROOT, 0, keys.len() as u32, 0, 0));
        }
        while let Some((id, lo, hi, depth, end)) = work.pop() {
            let mut next = lo;
            let values = (key(lo).len() == end).then(|| {
                next += 1;
                lo
            });
            let child_start = children.len() as u32;
            while next < hi {
                let (stop, shared) = keyed.set.child(next, hi, end);
                let child = nodes.len() as u32;
                nodes.push(Node {
                    key: next,
                    prefix_start: 0,
                    prefix_len: 0,
                    values: None,
                    children: (0, 0),
                });
                children.push((key(next)[end], child));
                work.push((child, next, stop, end + 1, shared));
                next = stop;
            }
            let n = &mut nodes[id as usize];
            n.key = lo;
            n.prefix_start = depth as u32;
            n.prefix_len = (end - depth) as u32;
            n.values = values;
            n.children = (child_start, children.len() as u32);
        }
        Sorted {
            order: keyed.order,
            keys: keyed.keys,
            nodes,
            children,
        }
    }

    /// The records' insertion numbers (0 for the first inserted) in the order the file
    /// lists them: by key, then priority, the newest first among equal priorities.
    pub fn file_order(&self) -> Vec<u32> {
        self.keyed().order
    }

    /// Every key with its values (priority, bytes) in key order. Meant for tests and tools;
    /// the file is the real output.
    pub fn entries(&self) -> Vec<BuilderEntry> {
        let s = self.sorted();
        s.keys
            .iter()
            .map(|&(lo, hi)| {
                let recs = &s.order[lo as usize..hi as usize];
                let key = self.key_of(&self.records[recs[0] as usize]).to_vec();
                let vals = recs
                    .iter()
                    .map(|&r| {
                        let r = &self.records[r as usize];
                        (r.priority, self.value_of(r).to_vec())
                    })
                    .collect();
                (key, vals)
            })
            .collect()
    }

    /// The complete index file.
    pub fn write(&self, layout: Layout) -> Result<Vec<u8>, WriteError> {
        refusal(&self.bad, self.oversized)?;
        match layout {
            Layout::PostOrder => self.write_post_order(),
            Layout::PreOrder => self.write_laid_out(layout),
        }
    }

    /// [`write`](Self::write) by building the trie, then placing every node (either
    /// layout).
    fn write_laid_out(&self, layout: Layout) -> Result<Vec<u8>, WriteError> {
        let s = self.sorted();
        let nodes = &s.nodes;
        let count = nodes.len();
        let kids = |n: &Node| &s.children[n.children.0 as usize..n.children.1 as usize];
        let prefix = |n: &Node| {
            let k = self.key_of(&self.records[s.order[s.keys[n.key as usize].0 as usize] as usize]);
            &k[n.prefix_start as usize..(n.prefix_start + n.prefix_len) as usize]
        };
        let values = |n: &Node| match n.values {
            Some(k) => {
                let (lo, hi) = s.keys[k as usize];
                &s.order[lo as usize..hi as usize]
            }
            None => &[][..],
        };
        let body_len = |n: &Node| -> u64 {
            let mut len = 0u64;
            if n.prefix_len > 0 {
                len += u64::from(n.prefix_len) + 1;
            }
            if let (Some(first), Some(last)) = (kids(n).first(), kids(n).last()) {
                len += 2 + 4 * (u64::from(last.0 - first.0) + 1);
            }
            let vals = values(n);
            if !vals.is_empty() {
                len += 4 + vals
                    .iter()
                    .map(|&r| 4 + u64::from(self.records[r as usize].value_len) + 1)
                    .sum::<u64>();
            }
            len
        };
        // Nodes in pre-order (parent, then children subtrees in ascending byte order).
        let mut order = Vec::with_capacity(count);
        let mut stack = vec![ROOT];
        while let Some(id) = stack.pop() {
            order.push(id);
            stack.extend(kids(&nodes[id as usize]).iter().rev().map(|&(_, c)| c));
        }
        let body: Vec<u64> = nodes.iter().map(body_len).collect();
        // Subtree sizes: children come after their parent in pre-order.
        let mut subtree = body.clone();
        for &id in order.iter().rev() {
            let sum: u64 = kids(&nodes[id as usize])
                .iter()
                .map(|&(_, c)| subtree[c as usize])
                .sum();
            subtree[id as usize] += sum;
        }
        // Start of each node's subtree, then the node's own offset.
        let mut start = vec![0u64; count];
        let mut offset = vec![0u64; count];
        start[ROOT as usize] = HEADER_LEN as u64;
        for &id in &order {
            let s0 = start[id as usize];
            let mut cur = match layout {
                Layout::PreOrder => s0 + body[id as usize],
                Layout::PostOrder => s0,
            };
            for &(_, c) in kids(&nodes[id as usize]) {
                start[c as usize] = cur;
                cur += subtree[c as usize];
            }
            offset[id as usize] = match layout {
                Layout::PreOrder => s0,
                Layout::PostOrder => cur,
            };
            if offset[id as usize] >= MAX_NODE_OFFSET {
                return Err(WriteError::TooLarge {
                    offset: offset[id as usize],
                });
            }
        }
        let total = HEADER_LEN as u64 + subtree[ROOT as usize];
        let total = usize::try_from(total).map_err(|_| WriteError::TooLarge { offset: total })?;

        let reference = |id: NodeId| -> u32 {
            let n = &nodes[id as usize];
            // Checked above: every offset is below 2^28.
            let mut r = offset[id as usize] as u32;
            if n.prefix_len > 0 {
                r |= NODE_PREFIX;
            }
            if n.values.is_some() {
                r |= NODE_VALUES;
            }
            if n.children.1 > n.children.0 {
                r |= NODE_CHILDREN;
            }
            r
        };

        let mut out = vec![0u8; total];
        out[0..4].copy_from_slice(&INDEX_MAGIC.to_be_bytes());
        out[4..8].copy_from_slice(&INDEX_VERSION.to_be_bytes());
        out[8..12].copy_from_slice(&reference(ROOT).to_be_bytes());
        for &id in &order {
            let n = &nodes[id as usize];
            let mut at = offset[id as usize] as usize;
            let mut put = |b: &[u8]| {
                out[at..at + b.len()].copy_from_slice(b);
                at += b.len();
            };
            if n.prefix_len > 0 {
                put(prefix(n));
                put(&[0]);
            }
            let ks = kids(n);
            if let (Some(&(first, _)), Some(&(last, _))) = (ks.first(), ks.last()) {
                put(&[first, last]);
                let mut it = ks.iter().peekable();
                for b in first..=last {
                    let word = match it.peek() {
                        Some(&&(cb, c)) if cb == b => {
                            it.next();
                            reference(c)
                        }
                        _ => 0,
                    };
                    put(&word.to_be_bytes());
                }
            }
            let vals = values(n);
            if !vals.is_empty() {
                put(&(vals.len() as u32).to_be_bytes());
                for &r in vals {
                    let r = &self.records[r as usize];
                    put(&r.priority.to_be_bytes());
                    put(self.value_of(r));
                    put(&[0]);
                }
            }
        }
        Ok(out)
    }
}

impl IndexBuilder {
    /// [`write`](Self::write), and [`file_order`](Self::file_order) with it (worked out
    /// once for both).
    pub fn write_with_order(&self, layout: Layout) -> Result<(Vec<u8>, Vec<u32>), WriteError> {
        refusal(&self.bad, self.oversized)?;
        match layout {
            Layout::PostOrder => {
                let k = self.keyed();
                let file = self.write_keyed(&k)?;
                Ok((file, k.order))
            }
            Layout::PreOrder => Ok((self.write_laid_out(layout)?, self.file_order())),
        }
    }

    /// [`write`](Self::write) for [`Layout::PostOrder`] (see [`write_post_order`]).
    fn write_post_order(&self) -> Result<Vec<u8>, WriteError> {
        self.write_keyed(&self.keyed())
    }

    fn write_keyed(&self, k: &Keyed) -> Result<Vec<u8>, WriteError> {
        let hint = self.bytes.len() + 9 * self.records.len();
        write_post_order(&k.set, hint, |i, out| {
            let (lo, hi) = k.keys[i as usize];
            let vals = &k.order[lo as usize..hi as usize];
            out.extend_from_slice(&(vals.len() as u32).to_be_bytes());
            for &r in vals {
                let r = &self.records[r as usize];
                out.extend_from_slice(&r.priority.to_be_bytes());
                out.extend_from_slice(self.value_of(r));
                out.push(0);
            }
        })
    }
}

/// An index whose keys arrive in ascending order (the symbol index, keyed by the sorted
/// symbol names; the dependency index, by module name; the alias index in the order an
/// earlier run found): written without [`IndexBuilder`]'s arena and sort. A key may come
/// again right after itself with a further value, of a priority no lower than the one
/// before. Its file is the one an [`IndexBuilder`] given the same triples in the same
/// order writes, errors included (triples out of order are handed to one).
#[derive(Debug, Default)]
pub struct SortedIndex {
    set: KeySet,
    /// The values in push order (so by key, and within a key by priority while the
    /// index is sorted; file order lists each run of equal priorities backwards, the
    /// latest first, see [`SortedIndex::in_file_order`]). A value's place here is its
    /// place in push order.
    vals: Vec<SortedValue>,
    /// Where each key's values start in `vals`.
    firsts: Vec<u32>,
    values: Vec<u8>,
    /// A key below the one before it, or a value of lower priority than the one before
    /// it under the same key: the file is then made by an [`IndexBuilder`].
    unsorted: bool,
    /// The first key or value of 4 GiB or more (not kept) with a byte the format cannot
    /// hold, and how many values were kept before it. (Those kept are checked for such
    /// bytes all at once, when the file is written.)
    oversized_bad: Option<(u32, (u8, Vec<u8>))>,
    /// A key or value of 4 GiB or more was pushed.
    oversized: bool,
}

/// One value of a [`SortedIndex`].
#[derive(Debug, Clone, Copy)]
struct SortedValue {
    priority: u32,
    /// Its key (index into the key set).
    key: u32,
    len: u32,
    /// Where its bytes start in `SortedIndex::values`.
    at: usize,
}

impl SortedIndex {
    /// An empty index with room for `keys` keys holding `key_bytes` and `value_bytes` bytes.
    pub fn with_capacity(keys: usize, key_bytes: usize, value_bytes: usize) -> SortedIndex {
        SortedIndex {
            set: KeySet::with_capacity(keys, key_bytes),
            vals: Vec::with_capacity(keys),
            firsts: Vec::with_capacity(keys),
            values: Vec::with_capacity(value_bytes),
            ..SortedIndex::default()
        }
    }

    /// Add `key`, which should sort after every key pushed before (or be the last one
    /// again), with its `value`.
    pub fn push(&mut self, key: &[u8], value: &[u8], priority: u32) {
        let (Ok(len), Ok(_), Ok(_)) = (
            u32::try_from(value.len()),
            u32::try_from(key.len()),
            u32::try_from(self.vals.len()),
        ) else {
            if self.oversized_bad.is_none() {
                let kept = u32::try_from(self.vals.len()).unwrap_or(u32::MAX);
                self.oversized_bad = first_bad([key, value]).map(|b| (kept, b));
            }
            self.oversized = true;
            return;
        };
        let mut v = SortedValue {
            priority,
            key: 0,
            len,
            at: self.values.len(),
        };
        let again = self
            .set
            .len()
            .checked_sub(1)
            .filter(|&last| key == self.set.key(last as u32));
        if let Some(last) = again {
            // Another value of the last key, of no lower priority than the one before.
            if self.vals.last().is_some_and(|l| l.priority > priority) {
                self.unsorted = true;
            }
            v.key = last as u32;
            self.vals.push(v);
        } else {
            if let Some(last) = self.set.len().checked_sub(1) {
                if key < self.set.key(last as u32) {
                    self.unsorted = true;
                }
            }
            v.key = self.set.len() as u32;
            self.firsts.push(self.vals.len() as u32);
            self.set.push(key);
            self.vals.push(v);
        }
        self.values.extend_from_slice(value);
    }

    fn value(&self, v: &SortedValue) -> &[u8] {
        &self.values[v.at..v.at + v.len as usize]
    }

    /// The complete index file (see [`IndexBuilder::write`]).
    pub fn write(&self, layout: Layout) -> Result<Vec<u8>, WriteError> {
        self.refusal()?;
        if self.unsorted || layout != Layout::PostOrder {
            return self.builder().write(layout);
        }
        self.write_in_order()
    }

    /// [`write`](Self::write), and the values' places in push order, in the order the
    /// file lists them (see [`IndexBuilder::write_with_order`]).
    pub fn write_with_order(&self, layout: Layout) -> Result<(Vec<u8>, Vec<u32>), WriteError> {
        self.refusal()?;
        if self.unsorted || layout != Layout::PostOrder {
            // Pushed in push order, the builder's records are numbered as pushed.
            return self.builder().write_with_order(layout);
        }
        let mut order = Vec::with_capacity(self.vals.len());
        for i in 0..self.firsts.len() {
            self.in_file_order(i, |at, _| order.push(at as u32));
        }
        Ok((self.write_in_order()?, order))
    }

    /// Where key `i`'s values are in `vals`.
    fn values_of(&self, i: usize) -> std::ops::Range<usize> {
        let lo = self.firsts[i] as usize;
        let hi = self
            .firsts
            .get(i + 1)
            .map_or(self.vals.len(), |&e| e as usize);
        lo..hi
    }

    /// Key `i`'s values (their places in `vals` and the values), in file order: by
    /// priority, and each run of equal priorities the latest first (one pass, however
    /// many values a key has).
    fn in_file_order(&self, i: usize, mut f: impl FnMut(usize, &SortedValue)) {
        let range = self.values_of(i);
        let mut start = range.start;
        while start < range.end {
            let p = self.vals[start].priority;
            let run = self.vals[start..range.end]
                .iter()
                .take_while(|v| v.priority == p)
                .count();
            (start..start + run)
                .rev()
                .for_each(|at| f(at, &self.vals[at]));
            start += run;
        }
    }

    /// Why the file cannot be written, if it cannot: the first key or value pushed with
    /// a byte the format cannot hold (as [`IndexBuilder`] reports it), or one of 4 GiB or
    /// more. The keys and values kept are looked at all at once, in the two pieces of
    /// memory that hold them (one look at every byte, which the compiler vectorises),
    /// and only when one of them holds such a byte one by one, in push order.
    fn refusal(&self) -> Result<(), WriteError> {
        let kept = if any_bad_byte(&self.set.bytes) || any_bad_byte(&self.values) {
            self.vals.iter().enumerate().find_map(|(at, v)| {
                first_bad([self.set.key(v.key), self.value(v)]).map(|b| (at as u32, b))
            })
        } else {
            None
        };
        let bad = match (kept, &self.oversized_bad) {
            (Some((p, _)), Some((q, b))) if *q <= p => Some(b.clone()),
            (Some((_, b)), _) => Some(b),
            (None, b) => b.as_ref().map(|(_, b)| b.clone()),
        };
        refusal(&bad, self.oversized)
    }

    /// The triples in push order, in a builder.
    fn builder(&self) -> IndexBuilder {
        let mut b = IndexBuilder::unchecked();
        b.reserve(self.vals.len(), self.set.bytes.len() + self.values.len());
        for v in &self.vals {
            b.insert(self.set.key(v.key), self.value(v), v.priority);
        }
        b
    }

    fn write_in_order(&self) -> Result<Vec<u8>, WriteError> {
        let hint = self.values.len() + 9 * self.vals.len();
        write_post_order(&self.set, hint, |i, out| {
            let i = i as usize;
            out.extend_from_slice(&(self.values_of(i).len() as u32).to_be_bytes());
            self.in_file_order(i, |_, v| {
                out.extend_from_slice(&v.priority.to_be_bytes());
                out.extend_from_slice(self.value(v));
                out.push(0);
            });
        })
    }
}

/// Why a file cannot be written: the first bad key or value inserted (see
/// [`first_bad`]), or one of 4 GiB or more.
fn refusal(bad: &Option<(u8, Vec<u8>)>, oversized: bool) -> Result<(), WriteError> {
    if let Some((byte, string)) = bad {
        return Err(WriteError::BadCharacter {
            byte: *byte,
            string: string.clone(),
        });
    }
    if oversized {
        return Err(WriteError::TooLarge {
            offset: MAX_NODE_OFFSET,
        });
    }
    Ok(())
}

/// Remember in `bad` the first key or value that no index can hold (see [`first_bad`]),
/// if none was found before. The check for a bad byte comes first: it is what nearly
/// every call does, and [`first_bad`] only runs when it finds one.
fn note_bad(bad: &mut Option<(u8, Vec<u8>)>, key: &[u8], value: &[u8]) {
    if bad.is_none() && (has_bad_byte(key) || has_bad_byte(value)) {
        *bad = first_bad([key, value]);
    }
}

/// The first of `strings` holding a byte an index cannot hold (NUL, or one of 0x80 and
/// above), with that byte: what [`IndexBuilder::write`] and [`SortedIndex::write`] report
/// when such a string was given to them first.
pub fn first_bad<'s>(strings: impl IntoIterator<Item = &'s [u8]>) -> Option<(u8, Vec<u8>)> {
    strings.into_iter().find_map(|s| {
        if !has_bad_byte(s) {
            return None;
        }
        let &b = s.iter().find(|&&b| b == 0 || b >= 0x80)?;
        Some((b, s.to_vec()))
    })
}

/// [`has_bad_byte`] for long pieces of memory: every byte looked at, a block at a time
/// (no early exit inside a block, so the look is vectorised).
fn any_bad_byte(s: &[u8]) -> bool {
    s.chunks(4096)
        .any(|c| c.iter().fold(false, |bad, &b| bad | (b == 0) | (b >= 0x80)))
}

/// Does `s` hold a NUL or a byte of 0x80 or above? Eight bytes at a time: a word has a
/// byte with its top bit set when `w & 0x80..80` is not zero, and (when none has) a zero
/// byte exactly when `(w - 0x01..01) & !w & 0x80..80` is not zero.
pub(crate) fn has_bad_byte(s: &[u8]) -> bool {
    const LOW: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let bad_word = |w: u64| w & HIGH != 0 || w.wrapping_sub(LOW) & !w & HIGH != 0;
    let mut words = s.chunks_exact(8);
    for c in &mut words {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        if bad_word(u64::from_le_bytes(w)) {
            return true;
        }
    }
    words.remainder().iter().any(|&b| b == 0 || b >= 0x80)
}

/// Room reserved in a file being written for each key's share of the nodes' own bytes
/// (a prefix's terminating NUL, child tables) beyond the key and value bytes: about 26
/// bytes a key in the 6.12 tree's modules.dep.bin, 8 in its symbol index, 14 to 20 in
/// the builtin indexes. Room reserved and never written costs nothing (its pages are
/// never touched); too little means growing the buffer, a copy of all of it (the 6.12
/// tree's dependency and symbol indexes grew from 0.7 to 1.4 MB that way).
const NODE_ROOM: usize = 32;

/// kmod 30's post-order file over the distinct keys `set` (each with at least one
/// value), in one pass: each node's subtrees come before the node, so the file is
/// written front to back, a node as soon as its children are (their offsets are then
/// known); no trie is built. Same bytes as laying the trie out. `values(i, out)` appends
/// key `i`'s value count and records; `hint` is about the bytes they take in all.
pub(super) fn write_post_order(
    set: &KeySet,
    hint: usize,
    mut values: impl FnMut(u32, &mut Vec<u8>),
) -> Result<Vec<u8>, WriteError> {
    let key = |i: u32| set.key(i);
    let n = set.len() as u32;
    // (The room is at most as much again as the keys and values take: a huge input does
    // not make it ask for many times its own size up front.)
    let data = set.bytes.len().saturating_add(hint);
    let room = NODE_ROOM.saturating_mul(set.len()).min(data);
    let mut out: Vec<u8> = Vec::with_capacity(HEADER_LEN.saturating_add(data).saturating_add(room));
    out.extend_from_slice(&INDEX_MAGIC.to_be_bytes());
    out.extend_from_slice(&INDEX_VERSION.to_be_bytes());
    out.extend_from_slice(&[0; 4]);
    // A node still to be written: its distinct keys lo..hi, the key bytes consumed
    // above it (`depth`) and shared by all its keys (`end`), the next child's first
    // key, where its children's references start in `kids`, and the byte its parent
    // reaches it by.
    struct Frame {
        lo: u32,
        hi: u32,
        depth: usize,
        end: usize,
        next: u32,
        kids: usize,
        byte: u8,
    }
    let has_values = |lo: u32, hi: u32, end: usize| lo < hi && key(lo).len() == end;
    let mut kids: Vec<(u8, u32)> = Vec::new();
    let mut stack = vec![Frame {
        lo: 0,
        hi: n,
        depth: 0,
        end: 0,
        next: u32::from(has_values(0, n, 0)),
        kids: 0,
        byte: 0,
    }];
    let mut root = 0u32;
    while let Some(f) = stack.last_mut() {
        if f.next < f.hi {
            let start = f.next;
            let (stop, shared) = set.child(start, f.hi, f.end);
            f.next = stop;
            let child = Frame {
                lo: start,
                hi: stop,
                depth: f.end + 1,
                end: shared,
                next: start + u32::from(has_values(start, stop, shared)),
                kids: kids.len(),
                byte: key(start)[f.end],
            };
            stack.push(child);
            continue;
        }
        // Every child is written: now the node itself.
        let offset = out.len() as u64;
        if offset >= MAX_NODE_OFFSET {
            return Err(WriteError::TooLarge { offset });
        }
        let mut reference = offset as u32;
        let prefix = if f.lo < f.hi {
            &key(f.lo)[f.depth..f.end]
        } else {
            &[][..]
        };
        if !prefix.is_empty() {
            reference |= NODE_PREFIX;
            out.extend_from_slice(prefix);
            out.push(0);
        }
        let ks = &kids[f.kids..];
        if let (Some(&(first, _)), Some(&(last, _))) = (ks.first(), ks.last()) {
            reference |= NODE_CHILDREN;
            out.extend_from_slice(&[first, last]);
            // A reference for every byte from first to last: zero but the children's.
            let table = out.len();
            out.resize(table + 4 * (usize::from(last - first) + 1), 0);
            for &(b, c) in ks {
                let at = table + 4 * usize::from(b - first);
                out[at..at + 4].copy_from_slice(&c.to_be_bytes());
            }
        }
        if has_values(f.lo, f.hi, f.end) {
            reference |= NODE_VALUES;
            values(f.lo, &mut out);
        }
        let (at, byte) = (f.kids, f.byte);
        kids.truncate(at);
        stack.pop();
        if stack.is_empty() {
            root = reference;
        } else {
            kids.push((byte, reference));
        }
    }
    out[8..12].copy_from_slice(&root.to_be_bytes());
    Ok(out)
}

/// The records sorted into file order and the distinct keys: key `i` is `set.key(i)`,
/// its records `order[keys[i].0..keys[i].1]`.
struct Keyed {
    order: Vec<u32>,
    keys: Vec<(u32, u32)>,
    set: KeySet,
}

/// Distinct keys in ascending order, their bytes one after the other (key `i` ends at
/// `ends[i]`), and `lcp[i]`, the length of the prefix key `i` shares with key `i - 1`
/// (0 for the first).
#[derive(Debug, Default)]
pub(super) struct KeySet {
    bytes: Vec<u8>,
    ends: Vec<usize>,
    lcp: Vec<u32>,
}

impl KeySet {
    pub(super) fn with_capacity(keys: usize, bytes: usize) -> KeySet {
        KeySet {
            bytes: Vec::with_capacity(bytes),
            ends: Vec::with_capacity(keys),
            lcp: Vec::with_capacity(keys),
        }
    }

    pub(super) fn len(&self) -> usize {
        self.ends.len()
    }

    /// Append `k`, which must sort after every key already in the set.
    pub(super) fn push(&mut self, k: &[u8]) {
        let prev = self.ends.len().checked_sub(1).map_or(0, |i| self.start(i));
        self.lcp.push(common_prefix(&self.bytes[prev..], k) as u32);
        self.bytes.extend_from_slice(k);
        self.ends.push(self.bytes.len());
    }

    fn start(&self, i: usize) -> usize {
        if i == 0 {
            0
        } else {
            self.ends[i - 1]
        }
    }

    pub(super) fn key(&self, i: u32) -> &[u8] {
        let i = i as usize;
        &self.bytes[self.start(i)..self.ends[i]]
    }

    /// The child of a node (whose keys are `..hi` and share `end` bytes) that starts at
    /// key `start`: its keys run up to the next key that differs at byte `end`, and they
    /// share the smallest lcp inside the group (a single key: all of it). Returns (the
    /// key after the group, the length the group's keys share).
    fn child(&self, start: u32, hi: u32, end: usize) -> (u32, usize) {
        let mut stop = start + 1;
        let mut shared = usize::MAX;
        while stop < hi && self.lcp[stop as usize] as usize > end {
            shared = shared.min(self.lcp[stop as usize] as usize);
            stop += 1;
        }
        if stop == start + 1 {
            shared = self.key(start).len();
        }
        (stop, shared)
    }
}

/// A record tagged with the first [`TAG_LEN`] bytes of its key, for sorting (three
/// words rather than a `u128` and a word: 32 bytes to move around instead of 48).
#[derive(Debug, Clone, Copy)]
struct Tagged {
    tag: [u64; 3],
    id: u32,
}

/// Are `tagged` (in insertion order) in file order by `key_then_priority`, but for runs of
/// records equal by it (which file order wants newest first)? If so, those runs are turned
/// round, leaving `tagged` in file order.
fn in_file_order(
    tagged: &mut [Tagged],
    key_then_priority: impl Fn(&Tagged, &Tagged) -> std::cmp::Ordering,
) -> bool {
    let mut runs = Vec::new();
    let mut start = 0;
    for i in 1..tagged.len() {
        match key_then_priority(&tagged[i - 1], &tagged[i]) {
            std::cmp::Ordering::Greater => return false,
            std::cmp::Ordering::Equal => {}
            std::cmp::Ordering::Less => {
                if i - start > 1 {
                    runs.push(start..i);
                }
                start = i;
            }
        }
    }
    if tagged.len() - start > 1 {
        runs.push(start..tagged.len());
    }
    for r in runs {
        tagged[r].reverse();
    }
    true
}

/// How many leading key bytes a sort tag holds.
const TAG_LEN: usize = 24;

/// The first [`TAG_LEN`] bytes of `k`, zero-padded, as big-endian words (compared as an
/// array, they order like the bytes).
fn tag(k: &[u8]) -> [u64; 3] {
    let mut head = [0u8; TAG_LEN];
    let n = k.len().min(TAG_LEN);
    head[..n].copy_from_slice(&k[..n]);
    let word = |i: usize| {
        let mut w = [0u8; 8];
        w.copy_from_slice(&head[8 * i..8 * i + 8]);
        u64::from_be_bytes(w)
    };
    [word(0), word(1), word(2)]
}

/// The length of the longest common prefix of `a` and `b`.
fn common_prefix(a: &[u8], b: &[u8]) -> usize {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut i = 0;
    while i + 8 <= n {
        let (x, y) = (&a[i..i + 8], &b[i..i + 8]);
        if x != y {
            break;
        }
        i += 8;
    }
    i + a[i..]
        .iter()
        .zip(&b[i..])
        .take_while(|(x, y)| x == y)
        .count()
}

type NodeId = u32;
const ROOT: NodeId = 0;

/// The records sorted into file order, the distinct keys (ranges of `order`) and the trie.
struct Sorted {
    order: Vec<u32>,
    keys: Vec<(u32, u32)>,
    nodes: Vec<Node>,
    children: Vec<(u8, u32)>,
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn bad_bytes_are_nul_and_non_ascii() {
        for b in 0..=255u8 {
            assert_eq!(has_bad_byte(&[b]), b == 0 || b >= 0x80, "byte {b:#x}");
            let mut long = vec![b'a'; 100];
            long[63] = b;
            assert_eq!(
                has_bad_byte(&long),
                b == 0 || b >= 0x80,
                "byte {b:#x} in a run"
            );
        }
        assert!(!has_bad_byte(b""));
        assert_eq!(
            first_bad([&b"ok"[..], b"n\xc3\xa9", b"\0"]),
            Some((0xc3, b"n\xc3\xa9".to_vec()))
        );
        assert_eq!(first_bad([&b"ok"[..], b"fine"]), None);
    }

    #[test]
    fn empty_index_is_header_only() {
        let b = IndexBuilder::new();
        assert!(b.is_empty());
        let want = [0xB0, 0x07, 0xF4, 0x57, 0, 2, 0, 1, 0, 0, 0, 12];
        assert_eq!(b.write(Layout::PostOrder).unwrap(), want);
        assert_eq!(b.write(Layout::PreOrder).unwrap(), want);
    }

    #[test]
    fn value_order_and_duplicates() {
        let mut b = IndexBuilder::new();
        assert!(!b.insert(b"k", b"a", 2));
        assert!(!b.insert(b"k", b"b", 1));
        assert!(!b.insert(b"k", b"c", 2));
        assert!(b.insert(b"k", b"a", 5));
        let e = b.entries();
        let vals: Vec<(u32, &[u8])> = e[0].1.iter().map(|(p, v)| (*p, &v[..])).collect();
        assert_eq!(vals, vec![(1, &b"b"[..]), (2, b"c"), (2, b"a"), (5, b"a")]);
        assert_eq!(b.key_count(), 1);
        assert_eq!(b.value_count(), 4);
    }

    #[test]
    fn keys_written_in_place_make_the_same_file() {
        let put = |k: &'static [u8]| {
            move |arena: &mut Vec<u8>| {
                arena.extend_from_slice(k);
                Ok::<(), ()>(())
            }
        };
        for checked in [true, false] {
            let (mut a, mut b) = if checked {
                (IndexBuilder::new(), IndexBuilder::new())
            } else {
                (IndexBuilder::unchecked(), IndexBuilder::unchecked())
            };
            for (k, v, p) in [
                (&b"pci:x"[..], &b"m1"[..], 1),
                (b"usb:y", b"m2", 0),
                (b"pci:x", b"m1", 3),
            ] {
                let dup = a.insert(k, v, p);
                // A key that fails half-way leaves nothing behind.
                let failed = b.insert_with(
                    |arena: &mut Vec<u8>| {
                        arena.extend_from_slice(b"half");
                        Err(())
                    },
                    v,
                    p,
                );
                assert_eq!(failed, Err(()));
                assert_eq!(b.insert_with(put(k), v, p), Ok(dup));
            }
            assert_eq!(a.write(Layout::PostOrder), b.write(Layout::PostOrder));
            assert_eq!(a.entries(), b.entries());
            assert_eq!(b.value_count(), 3);
            // The duplicate is found (and only reported) when checking.
            assert_eq!(b.insert_with(put(b"usb:y"), b"m2", 7), Ok(checked));
        }
    }

    #[test]
    fn unchecked_writes_the_same_file_and_reports_nothing() {
        let mut a = IndexBuilder::new();
        let mut b = IndexBuilder::unchecked();
        let mut reported = (0, 0);
        for (k, v, p) in [
            ("k", "a", 2),
            ("k", "a", 1),
            ("kx", "b", 0),
            ("", "c", 3),
            ("k", "a", 2),
        ] {
            reported.0 += usize::from(a.insert(k.as_bytes(), v.as_bytes(), p));
            reported.1 += usize::from(b.insert(k.as_bytes(), v.as_bytes(), p));
        }
        assert_eq!(reported, (2, 0));
        for layout in [Layout::PostOrder, Layout::PreOrder] {
            assert_eq!(a.write(layout).unwrap(), b.write(layout).unwrap());
        }
    }

    #[test]
    fn empty_key_goes_on_root() {
        let mut b = IndexBuilder::new();
        b.insert(b"", b"x", 0);
        b.insert(b"ab", b"y", 1);
        let e = b.entries();
        assert_eq!(e[0].0, b"");
        assert_eq!(e[1].0, b"ab");
        assert_eq!(b.key_count(), 2);
    }

    /// A xorshift generator of test data: the same sequence for the same seed.
    fn xorshift(mut seed: u64) -> impl FnMut() -> u64 {
        move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        }
    }

    /// The one-pass post-order writer and the trie layout agree, byte for byte, on keys
    /// that share prefixes, are prefixes of one another, and are longer than a sort tag.
    #[test]
    fn one_pass_post_order_matches_the_layout() {
        let mut next = xorshift(0x9e37_79b9_7f4a_7c15);
        for round in 0..300 {
            let mut b = IndexBuilder::unchecked();
            let count = (next() % 60) as usize;
            for _ in 0..count {
                // A long shared stem half of the time, so that 24-byte tags tie.
                let stem: &[u8] = if next() & 1 == 0 {
                    b"pci:v00008086d00001234sv*sd*"
                } else {
                    b""
                };
                let len = (next() % 6) as usize;
                let mut key = stem[..(next() as usize % (stem.len() + 1))].to_vec();
                key.extend((0..len).map(|_| b"ab*"[(next() % 3) as usize]));
                let value = [b'm', b'0' + (next() % 4) as u8];
                b.insert(&key, &value, (next() % 5) as u32);
            }
            let one_pass = b.write_post_order().unwrap();
            let laid_out = b.write_laid_out(Layout::PostOrder).unwrap();
            assert_eq!(one_pass, laid_out, "round {round}");
        }
    }

    /// The file order of large record sets is the one the ordering rule gives (key, then
    /// priority, then the newest first), also when keys tie on their 24-byte tags, are
    /// prefixes of one another or hold low bytes.
    #[test]
    fn records_are_in_file_order() {
        let mut next = xorshift(0x2545_f491_4f6c_dd1d);
        for round in 0..40 {
            let mut b = IndexBuilder::unchecked();
            let count = 500 + (next() % 3000) as usize;
            for _ in 0..count {
                let stem: &[u8] = match next() % 3 {
                    0 => b"pci:v00008086d00001234sv*sd*bc*",
                    1 => b"usb:v1D6Bp",
                    _ => b"",
                };
                let mut key = stem[..(next() as usize % (stem.len() + 1))].to_vec();
                key.extend((0..next() % 5).map(|_| b"\x01ab*"[(next() % 4) as usize]));
                let value = [b'm', b'0' + (next() % 4) as u8];
                b.insert(&key, &value, (next() % 7) as u32);
            }
            let mut want: Vec<u32> = (0..b.records.len() as u32).collect();
            want.sort_by(|&x, &y| {
                let (rx, ry) = (&b.records[x as usize], &b.records[y as usize]);
                b.key_of(rx)
                    .cmp(b.key_of(ry))
                    .then(rx.priority.cmp(&ry.priority))
                    .then(y.cmp(&x))
            });
            assert_eq!(b.keyed().order, want, "round {round}");
            let one_pass = b.write_post_order().unwrap();
            let laid_out = b.write_laid_out(Layout::PostOrder).unwrap();
            assert_eq!(one_pass, laid_out, "round {round}");
        }
    }

    /// Records inserted in file order already (each run of equal key and priority
    /// oldest first, as file order wants it newest first) take the no-sort path and give
    /// the same file as the same records inserted in any other order.
    #[test]
    fn records_inserted_in_file_order_need_no_sort() {
        let mut next = xorshift(0x6a09_e667_f3bc_c908);
        for round in 0..40 {
            let mut records: Vec<(Vec<u8>, [u8; 2], u32)> = Vec::new();
            for _ in 0..(200 + next() % 800) {
                let stem: &[u8] = if next() & 1 == 0 {
                    b"pci:v00008086d00001234sv*sd*"
                } else {
                    b""
                };
                let mut key = stem[..(next() as usize % (stem.len() + 1))].to_vec();
                key.extend((0..next() % 4).map(|_| b"ab*"[(next() % 3) as usize]));
                // Few priorities and values: many runs of equal key and priority whose
                // values differ.
                records.push((key, [b'm', b'0' + (next() % 4) as u8], (next() % 3) as u32));
            }
            let mut shuffled = IndexBuilder::unchecked();
            for (k, v, p) in &records {
                shuffled.insert(k, v, *p);
            }
            let order = shuffled.file_order();
            // The file order, each run of equal key and priority turned round.
            let same = |a: u32, b: u32| {
                let (x, y) = (&records[a as usize], &records[b as usize]);
                x.0 == y.0 && x.2 == y.2
            };
            let mut again: Vec<u32> = Vec::new();
            for run in order.chunk_by(|&a, &b| same(a, b)) {
                again.extend(run.iter().rev());
            }
            let mut sorted = IndexBuilder::unchecked();
            for &r in &again {
                let (k, v, p) = &records[r as usize];
                sorted.insert(k, v, *p);
            }
            let mut tagged: Vec<Tagged> = sorted
                .records
                .iter()
                .enumerate()
                .map(|(i, r)| Tagged {
                    tag: tag(sorted.key_of(r)),
                    id: i as u32,
                })
                .collect();
            let by = |x: &Tagged, y: &Tagged| {
                let (a, b) = (
                    &sorted.records[x.id as usize],
                    &sorted.records[y.id as usize],
                );
                sorted
                    .key_of(a)
                    .cmp(sorted.key_of(b))
                    .then(a.priority.cmp(&b.priority))
            };
            assert!(
                in_file_order(&mut tagged, by),
                "round {round}: no sort needed"
            );
            assert_eq!(
                sorted.write(Layout::PostOrder).unwrap(),
                shuffled.write(Layout::PostOrder).unwrap(),
                "round {round}"
            );
            assert_eq!(sorted.entries(), shuffled.entries(), "round {round}");
        }
    }

    /// A sorted index and a builder given the same triples in the same order write the
    /// same file and list the values in the same order: keys in order, a key repeated
    /// with values of rising or equal priority (the latest first among equals), and
    /// triples out of order (a key below the last, a priority below the last).
    #[test]
    fn sorted_index_matches_the_builder() {
        let mut next = xorshift(0x5eed_0f50_77ed);
        let mut refused = 0;
        for round in 0..400 {
            let mut sorted = SortedIndex::default();
            let mut builder = IndexBuilder::unchecked();
            let mut keys: Vec<Vec<u8>> = (0..1 + next() % 40)
                .map(|_| {
                    let len = next() % 7;
                    (0..len).map(|_| b"abc"[(next() % 3) as usize]).collect()
                })
                .collect();
            keys.sort();
            // Most rounds in order; some with a key or a priority out of place.
            let disorder = round % 4 == 3;
            let mut priority = 0u32;
            for (n, key) in keys.iter().enumerate() {
                let key: &[u8] = if disorder && n % 5 == 4 {
                    &keys[0]
                } else {
                    key
                };
                for _ in 0..1 + next() % 3 {
                    priority = match next() % 4 {
                        0 => priority,
                        1 if disorder => priority.saturating_sub(1),
                        _ => priority + (next() % 3) as u32,
                    };
                    let mut value = format!("v{}", next() % 4).into_bytes();
                    let mut key = key.to_vec();
                    // Some rounds with a byte no index can hold, in a key or a value.
                    if round % 5 == 4 && next().is_multiple_of(9) {
                        let bad = [0u8, 0x80, 0xff][(next() % 3) as usize];
                        if next().is_multiple_of(2) {
                            value.push(bad);
                        } else {
                            key.push(bad);
                        }
                    }
                    sorted.push(&key, &value, priority);
                    builder.insert(&key, &value, priority);
                }
            }
            for layout in [Layout::PostOrder, Layout::PreOrder] {
                assert_eq!(
                    sorted.write_with_order(layout),
                    builder.write_with_order(layout),
                    "round {round}, {layout:?}"
                );
                assert_eq!(
                    sorted.write(layout),
                    builder.write(layout),
                    "round {round}, {layout:?}"
                );
            }
            refused += usize::from(builder.write(Layout::PostOrder).is_err());
        }
        assert!(refused > 10, "only {refused} rounds with a bad byte");
    }

    #[test]
    fn sorted_index_rejects_what_the_builder_rejects() {
        let mut s = SortedIndex::default();
        s.push(b"a", b"v", 0);
        s.push(b"a", b"v\x80", 1);
        assert!(matches!(
            s.write_with_order(Layout::PostOrder),
            Err(WriteError::BadCharacter { byte: 0x80, .. })
        ));
    }

    #[test]
    fn rejects_non_ascii_and_nul() {
        let mut b = IndexBuilder::new();
        b.insert(b"ok", b"v\xe9", 0);
        assert!(matches!(
            b.write(Layout::PostOrder),
            Err(WriteError::BadCharacter { byte: 0xe9, .. })
        ));
        let mut b = IndexBuilder::new();
        b.insert(b"o\0k", b"v", 0);
        assert!(matches!(
            b.write(Layout::PreOrder),
            Err(WriteError::BadCharacter { byte: 0, .. })
        ));
    }
}
