//! Building and writing an index (spec depmod-and-index §8.2–§8.5).

use std::collections::HashSet;

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

type NodeId = u32;
type KeyValue = (Box<[u8]>, Box<[u8]>);
const ROOT: NodeId = 0;

/// One value of a node: its priority and where its bytes are in the builder's byte arena.
#[derive(Debug, Clone, Copy)]
struct ValueSlot {
    priority: u32,
    start: usize,
    len: usize,
}

#[derive(Debug, Default, Clone)]
struct Node {
    prefix: Vec<u8>,
    /// Sorted by byte.
    children: Vec<(u8, NodeId)>,
    /// In insertion order; [`ordered`] gives the file order.
    values: Vec<ValueSlot>,
}

/// The file order of a node's values: ascending priority, newest first among equal
/// priorities (each value goes before the first one of equal or higher priority).
/// Sorting once keeps many values under one key n log n instead of quadratic.
fn ordered(values: &[ValueSlot]) -> Vec<ValueSlot> {
    let mut v: Vec<ValueSlot> = values.iter().rev().copied().collect();
    v.sort_by_key(|s| s.priority);
    v
}

/// An index being built: a compressed radix tree (a "Patricia trie") over the key bytes.
///
/// The tree's shape depends only on the set of keys inserted; the order of a key's values
/// depends on priorities and insertion order (§8.4).
#[derive(Debug, Clone)]
pub struct IndexBuilder {
    nodes: Vec<Node>,
    value_bytes: Vec<u8>,
    keys: usize,
    values: usize,
    /// The (key, value) pairs of keys with many values, to report duplicates without
    /// scanning (see `add_value`).
    pairs: HashSet<KeyValue>,
    /// The first key or value seen with a byte the format cannot hold.
    bad: Option<(u8, Vec<u8>)>,
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
            nodes: vec![Node::default()],
            value_bytes: Vec::new(),
            keys: 0,
            values: 0,
            pairs: HashSet::new(),
            bad: None,
        }
    }

    /// Has nothing been inserted?
    pub fn is_empty(&self) -> bool {
        self.values == 0
    }

    /// The number of distinct keys.
    pub fn key_count(&self) -> usize {
        self.keys
    }

    /// The number of values over all keys (duplicates included).
    pub fn value_count(&self) -> usize {
        self.values
    }

    /// The number of trie nodes, the root included.
    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    /// Add `value` with `priority` under `key`.
    ///
    /// The value goes before the first existing value of the key whose priority is greater
    /// than or equal to `priority`. Returns `true` when the key already had an identical value
    /// (depmod -w warns about it); the new value is stored anyway.
    ///
    /// Keys and values holding NUL or bytes ≥ 0x80 are accepted here but make
    /// [`write`](Self::write) fail.
    pub fn insert(&mut self, key: &[u8], value: &[u8], priority: u32) -> bool {
        if self.bad.is_none() {
            for s in [key, value] {
                if let Some(&b) = s.iter().find(|&&b| b == 0 || b >= 0x80) {
                    self.bad = Some((b, s.to_vec()));
                    break;
                }
            }
        }
        let slot = ValueSlot {
            priority,
            start: self.value_bytes.len(),
            len: value.len(),
        };
        self.value_bytes.extend_from_slice(value);
        self.values += 1;

        let mut node = ROOT;
        let mut i = 0usize;
        loop {
            let rest = &key[i..];
            let n = &self.nodes[node as usize];
            let common = n
                .prefix
                .iter()
                .zip(rest)
                .take_while(|(a, b)| a == b)
                .count();
            if common < n.prefix.len() {
                self.split(node, common);
            }
            i += common;
            if i == key.len() {
                return self.add_value(node, slot, key);
            }
            let c = key[i];
            let n = &self.nodes[node as usize];
            match n.children.binary_search_by_key(&c, |&(b, _)| b) {
                Ok(pos) => {
                    node = n.children[pos].1;
                    i += 1;
                }
                Err(pos) => {
                    let leaf = self.new_node(Node {
                        prefix: key[i + 1..].to_vec(),
                        children: Vec::new(),
                        values: vec![slot],
                    });
                    self.nodes[node as usize].children.insert(pos, (c, leaf));
                    self.keys += 1;
                    return false;
                }
            }
        }
    }

    fn new_node(&mut self, node: Node) -> NodeId {
        let id = self.nodes.len() as NodeId;
        self.nodes.push(node);
        id
    }

    /// Cut `node`'s prefix at `at`: the part after the branch byte moves, together with the
    /// node's values and children, into a new single child.
    fn split(&mut self, node: NodeId, at: usize) {
        let n = &mut self.nodes[node as usize];
        let tail = n.prefix.split_off(at + 1);
        let branch = n.prefix.pop().unwrap_or_default();
        let child = Node {
            prefix: tail,
            children: std::mem::take(&mut n.children),
            values: std::mem::take(&mut n.values),
        };
        let id = self.new_node(child);
        self.nodes[node as usize].children = vec![(branch, id)];
    }

    /// Add `slot` (whose bytes are already in the arena) to the values of `node`, whose key
    /// is `key`; true when the key already had an identical value. A key's first few values
    /// are compared directly; once it has [`LINEAR_VALUES`], all its pairs go into `pairs`
    /// and later ones are looked up there, so many values under one key stay linear.
    fn add_value(&mut self, node: NodeId, slot: ValueSlot, key: &[u8]) -> bool {
        const LINEAR_VALUES: usize = 8;
        let bytes = &self.value_bytes;
        let new = &bytes[slot.start..slot.start + slot.len];
        let values = &mut self.nodes[node as usize].values;
        let duplicate = match values.len() {
            0 => {
                self.keys += 1;
                false
            }
            n if n < LINEAR_VALUES => values
                .iter()
                .any(|v| &bytes[v.start..v.start + v.len] == new),
            n => {
                if n == LINEAR_VALUES {
                    for v in values.iter() {
                        self.pairs
                            .insert((key.into(), bytes[v.start..v.start + v.len].into()));
                    }
                }
                !self.pairs.insert((key.into(), new.into()))
            }
        };
        values.push(slot);
        duplicate
    }

    /// Every key with its values (priority, bytes) in key order. Meant for tests and tools;
    /// the file is the real output.
    pub fn entries(&self) -> Vec<BuilderEntry> {
        let mut out = Vec::new();
        let mut key = Vec::new();
        // (node, key length before the node's prefix)
        let mut stack: Vec<(NodeId, Option<u8>, usize)> = vec![(ROOT, None, 0)];
        while let Some((id, branch, base)) = stack.pop() {
            let n = &self.nodes[id as usize];
            key.truncate(base);
            key.extend(branch);
            key.extend_from_slice(&n.prefix);
            if !n.values.is_empty() {
                let vals = ordered(&n.values)
                    .iter()
                    .map(|v| {
                        let bytes = &self.value_bytes[v.start..v.start + v.len];
                        (v.priority, bytes.to_vec())
                    })
                    .collect();
                out.push((key.clone(), vals));
            }
            let len = key.len();
            for &(b, c) in n.children.iter().rev() {
                stack.push((c, Some(b), len));
            }
        }
        out
    }

    /// Nodes in pre-order (parent, then children subtrees in ascending byte order).
    fn preorder(&self) -> Vec<NodeId> {
        let mut order = Vec::with_capacity(self.nodes.len());
        let mut stack = vec![ROOT];
        while let Some(id) = stack.pop() {
            order.push(id);
            stack.extend(
                self.nodes[id as usize]
                    .children
                    .iter()
                    .rev()
                    .map(|&(_, c)| c),
            );
        }
        order
    }

    fn body_len(&self, n: &Node) -> u64 {
        let mut len = 0u64;
        if !n.prefix.is_empty() {
            len += n.prefix.len() as u64 + 1;
        }
        if let (Some(first), Some(last)) = (n.children.first(), n.children.last()) {
            len += 2 + 4 * (u64::from(last.0 - first.0) + 1);
        }
        if !n.values.is_empty() {
            len += 4 + n.values.iter().map(|v| 4 + v.len as u64 + 1).sum::<u64>();
        }
        len
    }

    /// The complete index file.
    pub fn write(&self, layout: Layout) -> Result<Vec<u8>, WriteError> {
        if let Some((byte, string)) = &self.bad {
            return Err(WriteError::BadCharacter {
                byte: *byte,
                string: string.clone(),
            });
        }
        let count = self.nodes.len();
        let order = self.preorder();
        let body: Vec<u64> = self.nodes.iter().map(|n| self.body_len(n)).collect();
        // Subtree sizes: children come after their parent in pre-order.
        let mut subtree = body.clone();
        for &id in order.iter().rev() {
            let sum: u64 = self.nodes[id as usize]
                .children
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
            let n = &self.nodes[id as usize];
            let s = start[id as usize];
            let mut cur = match layout {
                Layout::PreOrder => s + body[id as usize],
                Layout::PostOrder => s,
            };
            for &(_, c) in &n.children {
                start[c as usize] = cur;
                cur += subtree[c as usize];
            }
            offset[id as usize] = match layout {
                Layout::PreOrder => s,
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
            let n = &self.nodes[id as usize];
            // Checked above: every offset is below 2^28.
            let mut r = offset[id as usize] as u32;
            if !n.prefix.is_empty() {
                r |= NODE_PREFIX;
            }
            if !n.values.is_empty() {
                r |= NODE_VALUES;
            }
            if !n.children.is_empty() {
                r |= NODE_CHILDREN;
            }
            r
        };

        let mut out = vec![0u8; total];
        out[0..4].copy_from_slice(&INDEX_MAGIC.to_be_bytes());
        out[4..8].copy_from_slice(&INDEX_VERSION.to_be_bytes());
        out[8..12].copy_from_slice(&reference(ROOT).to_be_bytes());
        let mut body_buf = Vec::new();
        for &id in &order {
            let n = &self.nodes[id as usize];
            body_buf.clear();
            if !n.prefix.is_empty() {
                body_buf.extend_from_slice(&n.prefix);
                body_buf.push(0);
            }
            if let (Some(&(first, _)), Some(&(last, _))) = (n.children.first(), n.children.last()) {
                body_buf.push(first);
                body_buf.push(last);
                let mut kids = n.children.iter().peekable();
                for b in first..=last {
                    let word = match kids.peek() {
                        Some(&&(cb, c)) if cb == b => {
                            kids.next();
                            reference(c)
                        }
                        _ => 0,
                    };
                    body_buf.extend_from_slice(&word.to_be_bytes());
                }
            }
            if !n.values.is_empty() {
                body_buf.extend_from_slice(&(n.values.len() as u32).to_be_bytes());
                for v in &ordered(&n.values) {
                    body_buf.extend_from_slice(&v.priority.to_be_bytes());
                    body_buf.extend_from_slice(&self.value_bytes[v.start..v.start + v.len]);
                    body_buf.push(0);
                }
            }
            let at = offset[id as usize] as usize;
            out[at..at + body_buf.len()].copy_from_slice(&body_buf);
        }
        Ok(out)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;

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
    fn empty_key_goes_on_root() {
        let mut b = IndexBuilder::new();
        b.insert(b"", b"x", 0);
        b.insert(b"ab", b"y", 1);
        let e = b.entries();
        assert_eq!(e[0].0, b"");
        assert_eq!(e[1].0, b"ab");
        assert_eq!(b.key_count(), 2);
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
