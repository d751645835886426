//! Reading an index (spec depmod-and-index §8.7, runtime-tools §1.7).
//!
//! Every reference is checked against the file length and every read is bounds-checked, so a
//! damaged or hostile file gives an [`IndexError`], never a panic. Traversals are iterative
//! and budgeted: in a well-formed file node bodies never overlap, so walking a subtree can
//! never touch more node bytes than the file holds. A walk that exceeds that budget has met
//! shared or cyclic references and stops with an error.

use std::fs::File;
use std::path::{Path, PathBuf};

use super::{
    HEADER_LEN, INDEX_MAGIC, INDEX_VERSION_MAJOR, NODE_CHILDREN, NODE_OFFSET_MASK, NODE_PREFIX,
    NODE_VALUES,
};
use crate::fnmatch::{fnmatch, is_wildcard};

/// Why an index could not be read.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    /// The file could not be opened, inspected or mapped.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// Shorter than the 12-byte header.
    #[error("index too short: {len} bytes")]
    TooShort {
        /// The length seen.
        len: usize,
    },
    /// The magic number is wrong.
    #[error("magic check fail: {found:x} instead of {:x}", INDEX_MAGIC)]
    BadMagic {
        /// The magic found.
        found: u32,
    },
    /// The major version is not 2.
    #[error("major version check fail: {} instead of {}", version >> 16, INDEX_VERSION_MAJOR)]
    BadVersion {
        /// The whole version word found.
        version: u32,
    },
    /// A node reference or node body is inconsistent with the file.
    #[error("corrupt index at offset {offset}: {what}")]
    Corrupt {
        /// Where the problem was found.
        offset: usize,
        /// What is wrong.
        what: &'static str,
    },
}

fn corrupt(offset: usize, what: &'static str) -> IndexError {
    IndexError::Corrupt { offset, what }
}

/// One value stored under a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Value<'a> {
    /// The priority (depmod stores the module's position in the module order).
    pub priority: u32,
    /// The value bytes, without the terminating NUL.
    pub value: &'a [u8],
}

/// One key of the index with all its values, as produced by [`Index::iter`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry<'a> {
    /// The full key.
    pub key: Vec<u8>,
    /// Its values in file order (ascending priority).
    pub values: Vec<Value<'a>>,
}

/// A parsed node header. Values are parsed on demand.
#[derive(Debug, Clone, Copy)]
struct Node<'a> {
    offset: usize,
    prefix: &'a [u8],
    first: u8,
    /// `4 * n` bytes of child references for bytes `first ..= first + n - 1`.
    children: &'a [u8],
    /// Where the value records start (after the count), meaningful if `value_count > 0`.
    values_at: usize,
    value_count: u32,
    /// A lower bound of the body size, used to budget traversals.
    cost: usize,
}

impl<'a> Node<'a> {
    fn child_count(&self) -> usize {
        self.children.len() / 4
    }

    /// The reference word of the `idx`-th child slot.
    fn child_ref(&self, idx: usize) -> u32 {
        match self.children.get(idx * 4..idx * 4 + 4) {
            Some(w) => u32::from_be_bytes([w[0], w[1], w[2], w[3]]),
            None => 0,
        }
    }

    /// The child slot index of byte `b`, if inside this node's range.
    fn slot_of(&self, b: u8) -> Option<usize> {
        let idx = usize::from(b.checked_sub(self.first)?);
        (idx < self.child_count()).then_some(idx)
    }

    fn byte_of(&self, idx: usize) -> u8 {
        // idx < child_count <= 256 - first, so this fits.
        (usize::from(self.first) + idx) as u8
    }
}

/// Limits the work of one traversal to what a well-formed file of this size can need.
struct Budget {
    left: usize,
    offset: usize,
}

impl Budget {
    fn new(index: &Index<'_>) -> Self {
        Budget {
            left: index.data.len() + 1,
            offset: 8,
        }
    }

    fn spend(&mut self, node: &Node<'_>) -> Result<(), IndexError> {
        self.offset = node.offset;
        match self.left.checked_sub(node.cost.max(1)) {
            Some(l) => {
                self.left = l;
                Ok(())
            }
            None => Err(corrupt(self.offset, "node references are shared or cyclic")),
        }
    }
}

/// A read-only view of an index file held in memory.
#[derive(Debug, Clone, Copy)]
pub struct Index<'a> {
    data: &'a [u8],
    root: u32,
}

fn be32(data: &[u8], at: usize) -> Option<u32> {
    let w = data.get(at..at.checked_add(4)?)?;
    Some(u32::from_be_bytes([w[0], w[1], w[2], w[3]]))
}

impl<'a> Index<'a> {
    /// Check the header (length, magic, major version) and the root node.
    pub fn new(data: &'a [u8]) -> Result<Self, IndexError> {
        let (Some(magic), Some(version), Some(root)) =
            (be32(data, 0), be32(data, 4), be32(data, 8))
        else {
            return Err(IndexError::TooShort { len: data.len() });
        };
        if magic != INDEX_MAGIC {
            return Err(IndexError::BadMagic { found: magic });
        }
        if version >> 16 != INDEX_VERSION_MAJOR {
            return Err(IndexError::BadVersion { version });
        }
        let index = Index { data, root };
        index.node(root, 8)?;
        Ok(index)
    }

    /// The raw file bytes.
    pub fn bytes(&self) -> &'a [u8] {
        self.data
    }

    /// The root node reference (header word 8).
    pub fn root_ref(&self) -> u32 {
        self.root
    }

    /// Parse the node that `reference` points to; `None` for a null reference.
    /// `from` is where the reference was read (for error messages).
    fn node(&self, reference: u32, from: usize) -> Result<Option<Node<'a>>, IndexError> {
        let offset = (reference & NODE_OFFSET_MASK) as usize;
        if offset == 0 {
            return Ok(None);
        }
        let data = self.data;
        if offset < HEADER_LEN || offset > data.len() {
            return Err(corrupt(from, "node reference outside the file"));
        }
        let mut p = offset;
        let mut cost = 0usize;
        let mut prefix: &'a [u8] = &[];
        if reference & NODE_PREFIX != 0 {
            let rest = &data[p..];
            let len = rest
                .iter()
                .position(|&b| b == 0)
                .ok_or_else(|| corrupt(p, "unterminated prefix"))?;
            prefix = &rest[..len];
            p += len + 1;
            cost += len + 1;
        }
        let mut first = 0u8;
        let mut children: &'a [u8] = &[];
        if reference & NODE_CHILDREN != 0 {
            let (Some(&f), Some(&l)) = (data.get(p), data.get(p + 1)) else {
                return Err(corrupt(p, "truncated child range"));
            };
            if f > l {
                return Err(corrupt(p, "child range first > last"));
            }
            p += 2;
            let n = (usize::from(l - f) + 1) * 4;
            children = data
                .get(p..p + n)
                .ok_or_else(|| corrupt(p, "truncated child references"))?;
            first = f;
            p += n;
            cost += 2 + n;
        }
        let mut value_count = 0u32;
        if reference & NODE_VALUES != 0 {
            value_count = be32(data, p).ok_or_else(|| corrupt(p, "truncated value count"))?;
            p += 4;
            cost += 4;
            // Each value record takes at least 5 bytes.
            if value_count as usize > (data.len() - p) / 5 {
                return Err(corrupt(p, "value count exceeds the file"));
            }
        }
        Ok(Some(Node {
            offset,
            prefix,
            first,
            children,
            values_at: p,
            value_count,
            cost,
        }))
    }

    fn root(&self) -> Result<Option<Node<'a>>, IndexError> {
        self.node(self.root, 8)
    }

    /// The child of `node` for byte `b`.
    fn child(&self, node: &Node<'a>, b: u8) -> Result<Option<Node<'a>>, IndexError> {
        match node.slot_of(b) {
            Some(idx) => self.child_at(node, idx),
            None => Ok(None),
        }
    }

    fn child_at(&self, node: &Node<'a>, idx: usize) -> Result<Option<Node<'a>>, IndexError> {
        let from = node.offset + node.prefix.len() + 3 + 4 * idx;
        self.node(node.child_ref(idx), from)
    }

    /// Call `f` for each value of `node`, in file order.
    fn each_value(&self, node: &Node<'a>, mut f: impl FnMut(Value<'a>)) -> Result<(), IndexError> {
        let data = self.data;
        let mut p = node.values_at;
        for _ in 0..node.value_count {
            let priority = be32(data, p).ok_or_else(|| corrupt(p, "truncated value"))?;
            p += 4;
            let rest = data.get(p..).unwrap_or(&[]);
            let len = rest
                .iter()
                .position(|&b| b == 0)
                .ok_or_else(|| corrupt(p, "unterminated value"))?;
            f(Value {
                priority,
                value: &rest[..len],
            });
            p += len + 1;
        }
        Ok(())
    }

    fn values(&self, node: &Node<'a>) -> Result<Vec<Value<'a>>, IndexError> {
        let mut out = Vec::with_capacity(node.value_count as usize);
        self.each_value(node, |v| out.push(v))?;
        Ok(out)
    }

    /// The node whose full key is exactly `key`.
    fn find(&self, key: &[u8]) -> Result<Option<Node<'a>>, IndexError> {
        let Some(mut node) = self.root()? else {
            return Ok(None);
        };
        let mut i = 0usize;
        // Every step consumes at least one key byte, so this ends.
        loop {
            if !key[i..].starts_with(node.prefix) {
                return Ok(None);
            }
            i += node.prefix.len();
            let Some(&b) = key.get(i) else {
                return Ok(Some(node));
            };
            match self.child(&node, b)? {
                Some(c) => node = c,
                None => return Ok(None),
            }
            i += 1;
        }
    }

    /// Exact lookup: all values stored under `key`, in file order (ascending priority), or
    /// `None` when the key is absent or has no values.
    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<Value<'a>>>, IndexError> {
        match self.find(key)? {
            Some(node) if node.value_count > 0 => Ok(Some(self.values(&node)?)),
            _ => Ok(None),
        }
    }

    /// Exact lookup of the first value only (what modprobe uses for modules.dep.bin).
    pub fn get_first(&self, key: &[u8]) -> Result<Option<Value<'a>>, IndexError> {
        match self.find(key)? {
            Some(node) if node.value_count > 0 => {
                let mut first = None;
                let one = Node {
                    value_count: 1,
                    ..node
                };
                self.each_value(&one, |v| first = Some(v))?;
                Ok(first)
            }
            _ => Ok(None),
        }
    }

    /// Wildcard search, as modprobe does on `modules.alias.bin`: the stored keys are shell
    /// patterns, and the result is every value of every key that matches `name`.
    ///
    /// The walk follows kmod: keys are compared literally with `name` until the first `*`, `?`
    /// or `[` of a key; from there the rest of the key is matched with
    /// [`fnmatch`](crate::fnmatch::fnmatch) against the rest of the name. (A key whose
    /// literal part contains a backslash is therefore compared literally there.) At each node
    /// the children `*`, `?`, `[` are explored before following the name's next byte.
    ///
    /// The result is ordered by ascending priority; among equal priorities a value found later
    /// in the walk comes first (kmod's order).
    pub fn search_wildcard(&self, name: &[u8]) -> Result<Vec<Value<'a>>, IndexError> {
        let mut out = Vec::new();
        self.collect_wildcard(name, &mut out)?;
        // Ascending priority, later finds first among equals: what inserting each value
        // before the first one of equal or higher priority gives, in n log n.
        out.reverse();
        out.sort_by_key(|v| v.priority);
        Ok(out)
    }

    /// The values of [`Index::search_wildcard`] in walk order.
    fn collect_wildcard(&self, name: &[u8], out: &mut Vec<Value<'a>>) -> Result<(), IndexError> {
        let Some(mut node) = self.root()? else {
            return Ok(());
        };
        let mut pattern = Vec::new();
        let mut i = 0usize;
        loop {
            for (j, &ch) in node.prefix.iter().enumerate() {
                if is_wildcard(ch) {
                    let subject = name.get(i + j..).unwrap_or(&[]);
                    pattern.clear();
                    self.match_subtree(node, j, &mut pattern, subject, out)?;
                    return Ok(());
                }
                if name.get(i + j) != Some(&ch) {
                    return Ok(());
                }
            }
            i += node.prefix.len();
            let subject = name.get(i..).unwrap_or(&[]);
            for w in [b'*', b'?', b'['] {
                if let Some(child) = self.child(&node, w)? {
                    pattern.clear();
                    pattern.push(w);
                    self.match_subtree(child, 0, &mut pattern, subject, out)?;
                }
            }
            let Some(&b) = name.get(i) else {
                self.each_value(&node, |v| out.push(v))?;
                return Ok(());
            };
            match self.child(&node, b)? {
                Some(c) => node = c,
                None => return Ok(()),
            }
            i += 1;
        }
    }

    /// Visit the subtree of `start` (whose prefix is taken from byte `skip` on), children
    /// before the node itself, collecting the values of every key matching `subject`.
    /// `pattern` holds the pattern text accumulated above `start`.
    fn match_subtree(
        &self,
        start: Node<'a>,
        skip: usize,
        pattern: &mut Vec<u8>,
        subject: &[u8],
        out: &mut Vec<Value<'a>>,
    ) -> Result<(), IndexError> {
        struct Frame<'a> {
            node: Node<'a>,
            next: usize,
            base: usize,
        }
        let mut budget = Budget::new(self);
        budget.spend(&start)?;
        let base = pattern.len();
        pattern.extend_from_slice(start.prefix.get(skip..).unwrap_or(&[]));
        let mut stack = vec![Frame {
            node: start,
            next: 0,
            base,
        }];
        while let Some(top) = stack.last_mut() {
            if top.next < top.node.child_count() {
                let idx = top.next;
                top.next += 1;
                let node = top.node;
                if let Some(child) = self.child_at(&node, idx)? {
                    budget.spend(&child)?;
                    let base = pattern.len();
                    pattern.push(node.byte_of(idx));
                    pattern.extend_from_slice(child.prefix);
                    stack.push(Frame {
                        node: child,
                        next: 0,
                        base,
                    });
                }
                continue;
            }
            let node = top.node;
            let base = top.base;
            stack.pop();
            if node.value_count > 0 && fnmatch(pattern, subject) {
                self.each_value(&node, |v| out.push(v))?;
            }
            pattern.truncate(base);
        }
        Ok(())
    }

    /// All keys with their values, in key (byte) order.
    pub fn iter(&self) -> Iter<'a> {
        Iter {
            index: *self,
            stack: Vec::new(),
            key: Vec::new(),
            started: false,
            done: false,
            budget: Budget::new(self),
        }
    }

    /// Call `f(key, values)` for every key in key order (the `modprobe -c` dump order).
    pub fn for_each<F>(&self, mut f: F) -> Result<(), IndexError>
    where
        F: FnMut(&[u8], &[Value<'a>]),
    {
        for entry in self.iter() {
            let entry = entry?;
            f(&entry.key, &entry.values);
        }
        Ok(())
    }
}

/// Iterator over all keys of an index in key order; see [`Index::iter`].
///
/// After an error it yields that error once and then stops.
pub struct Iter<'a> {
    index: Index<'a>,
    /// (node, next child slot, key length after the node's prefix)
    stack: Vec<(Node<'a>, usize, usize)>,
    key: Vec<u8>,
    started: bool,
    done: bool,
    budget: Budget,
}

impl<'a> Iter<'a> {
    /// Make `node` current: extend the key, remember it, and return its entry if it has values.
    fn enter(&mut self, node: Node<'a>) -> Result<Option<Entry<'a>>, IndexError> {
        self.budget.spend(&node)?;
        self.key.extend_from_slice(node.prefix);
        self.stack.push((node, 0, self.key.len()));
        if node.value_count == 0 {
            return Ok(None);
        }
        Ok(Some(Entry {
            key: self.key.clone(),
            values: self.index.values(&node)?,
        }))
    }

    fn advance(&mut self) -> Result<Option<Entry<'a>>, IndexError> {
        if !self.started {
            self.started = true;
            if let Some(root) = self.index.root()? {
                if let Some(e) = self.enter(root)? {
                    return Ok(Some(e));
                }
            }
        }
        while let Some(top) = self.stack.last_mut() {
            let (node, idx, len) = (top.0, top.1, top.2);
            if idx >= node.child_count() {
                self.stack.pop();
                continue;
            }
            top.1 += 1;
            if let Some(child) = self.index.child_at(&node, idx)? {
                self.key.truncate(len);
                self.key.push(node.byte_of(idx));
                if let Some(e) = self.enter(child)? {
                    return Ok(Some(e));
                }
            }
        }
        Ok(None)
    }
}

impl<'a> Iterator for Iter<'a> {
    type Item = Result<Entry<'a>, IndexError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        match self.advance() {
            Ok(Some(e)) => Some(Ok(e)),
            Ok(None) => {
                self.done = true;
                None
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}

/// An index file mapped into memory.
#[derive(Debug)]
pub struct IndexFile {
    map: memmap2::Mmap,
    root: u32,
}

impl IndexFile {
    /// Open and map `path`, and check its header like [`Index::new`].
    pub fn open(path: &Path) -> Result<Self, IndexError> {
        let io = |source| IndexError::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = File::open(path).map_err(io)?;
        let len = file.metadata().map_err(io)?.len();
        if len < HEADER_LEN as u64 {
            return Err(IndexError::TooShort { len: len as usize });
        }
        let map = map_file(&file).map_err(io)?;
        let root = Index::new(&map)?.root;
        Ok(IndexFile { map, root })
    }

    /// The index in the mapped file.
    pub fn index(&self) -> Index<'_> {
        Index {
            data: &self.map,
            root: self.root,
        }
    }
}

fn map_file(file: &File) -> std::io::Result<memmap2::Mmap> {
    crate::fsio::map_readonly(file, false)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;
    use crate::index::{IndexBuilder, Layout};

    fn sample() -> Vec<u8> {
        let mut b = IndexBuilder::new();
        b.insert(b"pci:v*d*", b"generic", 5);
        b.insert(b"pci:v00001234d*", b"specific", 2);
        b.insert(b"pci:v00001234d00005678", b"exact", 9);
        b.insert(b"pci:v0000123?d*", b"q", 5);
        b.insert(b"usb:*", b"usb", 1);
        b.write(Layout::PostOrder).unwrap()
    }

    #[test]
    fn wildcard_order() {
        let data = sample();
        let idx = Index::new(&data).unwrap();
        let r = idx.search_wildcard(b"pci:v00001234d00005678").unwrap();
        let names: Vec<&[u8]> = r.iter().map(|v| v.value).collect();
        assert_eq!(names, vec![&b"specific"[..], b"q", b"generic", b"exact"]);
        assert!(idx.search_wildcard(b"nothing").unwrap().is_empty());
    }

    #[test]
    fn exact_lookup() {
        let data = sample();
        let idx = Index::new(&data).unwrap();
        let v = idx.get(b"usb:*").unwrap().unwrap();
        assert_eq!(
            v,
            vec![Value {
                priority: 1,
                value: b"usb"
            }]
        );
        assert_eq!(idx.get(b"usb:").unwrap(), None);
        assert_eq!(idx.get(b"pci:v").unwrap(), None);
        assert_eq!(
            idx.get_first(b"pci:v*d*").unwrap().unwrap().value,
            b"generic"
        );
    }

    #[test]
    fn cyclic_reference_is_an_error() {
        // Root at 12 with prefix "a" and one child 'b' pointing back to the root.
        let mut d = vec![0xB0, 0x07, 0xF4, 0x57, 0, 2, 0, 1];
        d.extend_from_slice(&(0xA000_000Cu32).to_be_bytes());
        d.extend_from_slice(b"a\0bb");
        d.extend_from_slice(&(0xA000_000Cu32).to_be_bytes());
        let idx = Index::new(&d).unwrap();
        assert!(idx.iter().any(|e| e.is_err()));
        assert!(idx.search_wildcard(b"ab*").is_ok());
        // A key made of the cycle: found by walking it, never loops.
        assert_eq!(idx.get(b"abababab").unwrap(), None);
        // A wildcard prefix forces a full subtree walk.
        let mut w = d.clone();
        w[12] = b'*';
        let idx = Index::new(&w).unwrap();
        assert!(idx.search_wildcard(b"x").is_err());
    }
}
