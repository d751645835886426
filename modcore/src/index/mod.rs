//! kmod's binary trie index (`modules.*.bin`), spec depmod-and-index §8 and runtime-tools §1.7.
//!
//! * [`IndexBuilder`] collects `(key, value, priority)` triples and writes the file, in either
//!   node placement ([`Layout::PostOrder`] like kmod ≤ 33, [`Layout::PreOrder`] like 34+).
//! * [`Index`] reads an index held in memory (exact lookup, wildcard search, dump in key
//!   order); [`IndexFile`] memory-maps a file and hands out an [`Index`].
//!
//! File layout: a 12-byte header (magic, version, root node reference) followed by node
//! bodies. A node reference is a big-endian u32 whose top bits say which parts the node has
//! and whose low 28 bits are the node's absolute offset.

mod reader;
mod writer;

pub use reader::{Entry, Index, IndexError, IndexFile, Iter, Value};
pub use writer::{first_bad, BuilderEntry, IndexBuilder, Layout, SortedIndex, WriteError};

/// Magic number at offset 0 (big-endian).
pub const INDEX_MAGIC: u32 = 0xB007_F457;
/// Version written at offset 4: major 2, minor 1. Readers only check the major.
pub const INDEX_VERSION: u32 = 0x0002_0001;
/// The only supported major version.
pub const INDEX_VERSION_MAJOR: u32 = 2;
/// Size of the header; the first node starts here.
pub const HEADER_LEN: usize = 12;

/// Node reference flag: the node has a prefix.
pub const NODE_PREFIX: u32 = 0x8000_0000;
/// Node reference flag: the node has values.
pub const NODE_VALUES: u32 = 0x4000_0000;
/// Node reference flag: the node has children.
pub const NODE_CHILDREN: u32 = 0x2000_0000;
/// Mask of the node offset in a node reference.
pub const NODE_OFFSET_MASK: u32 = 0x0FFF_FFFF;
/// Node offsets must be below this.
pub const MAX_NODE_OFFSET: u64 = 1 << 28;
