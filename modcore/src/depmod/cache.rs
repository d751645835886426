//! Incremental depmod: a cache of what each module file contributed.
//!
//! Reading every module is most of a depmod run (an `.ko.xz` tree spends seconds
//! decompressing). The cache keeps each module's [`ModuleData`] as depmod uses it (the
//! `.modinfo` entries of `output::MODINFO_KEYS`, exports with CRCs and needed symbols;
//! nothing of the dependency graph or the outputs)
//! keyed by the module's path and [`FileKey`]: device, inode, size, mtime and ctime with
//! nanoseconds. A later run stats every module and takes the cached data only when the
//! key matches exactly; any other module is read again, and every output is made from
//! the full module list (or left as it is when nothing it is made from changed, see
//! `depmod::uptodate`), so the outputs are byte for byte those of a run without the
//! cache.
//!
//! Why the key is enough: replacing a file (package managers rename a new file over the
//! old one) gives a new inode; writing to it changes mtime and ctime; `touch -m`/`utimensat`
//! can put mtime back but always moves ctime, which cannot be set from user space. The one
//! gap is a change within the timestamp granularity of the previous change (whole seconds
//! on some file systems, a scheduler tick on others) while depmod is reading the file, so
//! entries for files changed less than [`SETTLE`] before the run are not stored: they are
//! read again next time (the "racy clean" rule of git's index).
//!
//! It also keeps, for each directory of the tree except the walk's roots, what the walk
//! found in it (the entries it looks at, in readdir order), keyed the same way by the
//! directory's [`FileKey`]. Adding, removing or renaming an entry changes a directory's
//! mtime and ctime, so a later walk that finds the same key takes the listing instead of
//! reading the directory; it still stats every entry, following links (as the walk does
//! for a link), so a module changed in place or a link pointing elsewhere is seen.
//!
//! The file is `modules.depmod.cache` in the output directory, replaced atomically
//! (written under a temporary name and renamed, `fsio::prepare_checked_with`; not
//! fsynced, unlike the indexes: a cache left incomplete by a crash fails its checksum).
//! It is ignored, and rebuilt by the next writing run, when it is
//! missing, unreadable, truncated, corrupt (checksum), or written by another format or
//! crate version.
//!
//! When it is used: a normal run (tree scan) reads and writes it. `-n` only reads it (a
//! dry run must not write anything). Explicit-file mode (`depmod VERSION FILE...` without
//! `-a`) neither reads nor writes it: those runs index only the listed files and are not
//! the slow case. `--no-cache` (`DepmodOptions::use_cache = false`) disables it.
//!
//! # Format (all integers little-endian)
//!
//! ```text
//! header   magic "KMODRS-DEPMOD-CACHE\n" (20 bytes), format u32, version length u32,
//!          crate version bytes, entry count u32, directory count u32, payload length u64
//! payload  directory*: path length u32, path bytes, key (7 x u64), listing length u32,
//!                   listing: (kind u8, name length u32, name)*
//!                   kind: 0 module file, 1 directory, 2 anything else (a link, ...)
//!          names:   name count u32, (name length u32, name)*   strictly ascending bytes
//!          entry*:  path length u32, path bytes, key (7 x u64), body length u32, body
//!          body:    modinfo count u32, (key length u32, key, value length u32, value)*
//!                   export count u32, (name id u32, crc u64)*
//!                   need count u32, (name id u32, crc u64, weak u8)*
//!          aliases: complete u8, count u32, (entry u32, alias u32)*   (zeros unless complete)
//!          hashes:  u64 per entry, in entry order (see [`data_hash`])
//! trailer  checksum u64 over header and payload
//! ```
//!
//! The directory listings come first: a walk can start with them before the rest of
//! the file is read and checked ([`Cache::load_listings_first`]).
//!
//! Symbol names are stored once, in the sorted name table, and referred to by their
//! index there (a name id): a big tree's modules need some 200,000 symbols with only
//! about 23,000 distinct names. A run resolves the cached modules' symbols by id (an
//! array lookup, see `graph`) and lists the exported ones in name order without sorting
//! them.
//!
//! The last section lists the stored modules' aliases (entry: the module's place among
//! the entries; alias: the place of the alias among the module's `alias` values) in the
//! order modules.alias.bin lists them, their modules taken in entry order (`complete` is
//! 0, and the pairs all zero, when some alias is malformed and left out of the index).
//! A run inserts the aliases of the unchanged modules into the index in that order,
//! those of the others merged in, and the index writer then finds them sorted already.
//!
//! Each entry's data also has a hash ([`data_hash`], computed when the module was read):
//! a run sums the hashes of all its modules, cached or read afresh, into the fingerprint
//! of its outputs' inputs (see `depmod::uptodate`).

use super::view::ModView;
use crate::module::{Export, ModuleData, Need};
use std::fs::Metadata;
use std::io::Write;
use std::ops::Deref;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The cache file's name in the output directory.
pub const CACHE_FILE: &str = "modules.depmod.cache";

const MAGIC: &[u8; 20] = b"KMODRS-DEPMOD-CACHE\n";
/// Bump when the layout or the meaning of the stored data changes (2: only the `.modinfo`
/// entries depmod uses; 3: directory listings, four-lane checksum; 4: symbol names in a
/// sorted table, referred to by id; the order of the aliases in the alias index; 5: a
/// hash of each entry's data).
pub const FORMAT_VERSION: u32 = 5;
/// Our crate version: a cache written by another build is not trusted.
const CRATE_VERSION: &str = env!("CARGO_PKG_VERSION");
/// Files whose mtime or ctime is this close to the start of the run (or later) are not
/// stored (see the module documentation). FAT stores mtime with 2 s granularity.
pub const SETTLE: Duration = Duration::from_secs(2);
/// Refuse absurd caches before reading them (a real one is a few MiB).
const MAX_CACHE_LEN: u64 = 1 << 30;

/// The identity of a module file as `stat(2)` reports it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct FileKey {
    pub dev: u64,
    pub ino: u64,
    pub size: u64,
    pub mtime: i64,
    pub mtime_nsec: i64,
    pub ctime: i64,
    pub ctime_nsec: i64,
}

impl FileKey {
    pub fn of(m: &Metadata) -> FileKey {
        FileKey {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime: m.mtime(),
            mtime_nsec: m.mtime_nsec(),
            ctime: m.ctime(),
            ctime_nsec: m.ctime_nsec(),
        }
    }

    /// True when the file last changed at least [`SETTLE`] before `start` (the start of
    /// the run): only such entries are stored.
    pub fn settled(&self, start: SystemTime) -> bool {
        let Ok(limit) = start
            .checked_sub(SETTLE)
            .unwrap_or(UNIX_EPOCH)
            .duration_since(UNIX_EPOCH)
        else {
            return false;
        };
        let limit = (limit.as_secs() as i64, i64::from(limit.subsec_nanos()));
        (self.mtime, self.mtime_nsec) < limit && (self.ctime, self.ctime_nsec) < limit
    }

    /// The key as seven words (as stored).
    pub fn words(&self) -> [u64; 7] {
        [
            self.dev,
            self.ino,
            self.size,
            self.mtime as u64,
            self.mtime_nsec as u64,
            self.ctime as u64,
            self.ctime_nsec as u64,
        ]
    }

    /// The key from the words [`words`](Self::words) gave.
    pub fn from_words(w: [u64; 7]) -> FileKey {
        FileKey {
            dev: w[0],
            ino: w[1],
            size: w[2],
            mtime: w[3] as i64,
            mtime_nsec: w[4] as i64,
            ctime: w[5] as i64,
            ctime_nsec: w[6] as i64,
        }
    }
}

/// Why a cache file was not used (for `-v` diagnostics and tests).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejected {
    Missing,
    Unreadable(String),
    TooShort,
    BadMagic,
    OtherFormat(u32),
    OtherVersion(String),
    BadLength,
    BadChecksum,
    Malformed,
}

/// A cache file's bytes: read into memory (tests, the fuzzer) or mapped.
pub enum Bytes {
    Owned(Vec<u8>),
    Mapped(memmap2::Mmap),
}

impl Default for Bytes {
    fn default() -> Self {
        Bytes::Owned(Vec::new())
    }
}

impl Deref for Bytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Bytes::Owned(v) => v,
            Bytes::Mapped(m) => m,
        }
    }
}

/// Where a record of the file is: the byte ranges of its path and of its body or
/// listing, its key, and the hash of its path.
#[derive(Debug, Clone, Copy)]
struct Slot {
    hash: u64,
    /// The record's place among the records of its kind, in file order.
    ordinal: u32,
    path: (usize, usize),
    key: FileKey,
    body: (usize, usize),
}

/// Records found by path without a copy of any path: a hash table (open addressing,
/// linear probing) over the records in file order, by the hash of their path (seeded per
/// process), the path bytes read in place from the file. Built in one pass, no sort.
#[derive(Default)]
struct PathIndex {
    slots: Vec<Slot>,
    /// Places of the table: a slot's number plus one, or 0 (empty). At least twice as
    /// many places as slots, and a power of two.
    table: Vec<u32>,
    /// The number of distinct paths (the slots the table refers to).
    distinct: usize,
    seed: foldhash::fast::RandomState,
}

/// The path of `slot` in the file's bytes.
fn path_of<'d>(data: &'d [u8], slot: &Slot) -> &'d [u8] {
    data.get(slot.path.0..slot.path.0 + slot.path.1)
        .unwrap_or_default()
}

impl PathIndex {
    fn hash(&self, path: &[u8]) -> u64 {
        use std::hash::BuildHasher;
        self.seed.hash_one(path)
    }

    /// Fill the table; of two records with the same path, the later one in the file is
    /// kept (as a map filled in file order would keep it).
    fn finish(&mut self, data: &[u8]) {
        let size = (2 * self.slots.len()).max(2).next_power_of_two();
        let mask = size - 1;
        let mut table = vec![0u32; size];
        let mut distinct = 0;
        for (i, s) in self.slots.iter().enumerate() {
            let Ok(number) = u32::try_from(i + 1) else {
                break;
            };
            let mut at = s.hash as usize & mask;
            loop {
                match table[at] {
                    0 => {
                        table[at] = number;
                        distinct += 1;
                        break;
                    }
                    e => {
                        let o = &self.slots[e as usize - 1];
                        if o.hash == s.hash && path_of(data, o) == path_of(data, s) {
                            table[at] = number;
                            break;
                        }
                        at = (at + 1) & mask;
                    }
                }
            }
        }
        self.table = table;
        self.distinct = distinct;
    }

    fn get(&self, data: &[u8], path: &[u8]) -> Option<&Slot> {
        let mask = self.table.len().checked_sub(1)?;
        let h = self.hash(path);
        let mut at = h as usize & mask;
        // The table is never full: an empty place ends every search.
        loop {
            let s = self.slots.get(self.table[at].checked_sub(1)? as usize)?;
            if s.hash == h && path_of(data, s) == path {
                return Some(s);
            }
            at = (at + 1) & mask;
        }
    }

    fn len(&self) -> usize {
        self.distinct
    }

    /// Every record's path and key (in no particular order).
    fn iter<'s>(&'s self, data: &'s [u8]) -> impl Iterator<Item = (&'s [u8], FileKey)> + 's {
        self.table
            .iter()
            .filter_map(|&e| self.slots.get(e.checked_sub(1)? as usize))
            .map(move |s| (path_of(data, s), s.key))
    }
}

/// A loaded cache: the file's bytes and indexes from path to (key, body) for modules and
/// to (key, listing) for directories.
#[derive(Default)]
pub struct Cache {
    data: Arc<Bytes>,
    names: Spans,
    index: PathIndex,
    dirs: PathIndex,
    /// The aliases section, when complete.
    alias_order: Vec<(u32, u32)>,
    /// Where the hashes section starts (one u64 per entry, checked to fit).
    hashes: usize,
}

/// Where each name of the name table is in the file: (start, length), in id order.
type Spans = Arc<[(u32, u32)]>;

/// A cache file's symbol name table (see the module documentation): names sorted by
/// their bytes, no two equal, each known by its index (its id).
#[derive(Clone, Copy)]
pub struct NameTable<'a> {
    data: &'a [u8],
    spans: &'a [(u32, u32)],
}

impl<'a> NameTable<'a> {
    pub fn len(&self) -> usize {
        self.spans.len()
    }

    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// The name with id `id` (empty for an id the table does not have; the ids of a
    /// loaded body were all checked).
    pub fn get(&self, id: u32) -> &'a [u8] {
        self.spans
            .get(id as usize)
            .and_then(|&(start, len)| {
                let start = start as usize;
                self.data.get(start..start + len as usize)
            })
            .unwrap_or_default()
    }

    /// The id of `name`, if the table has it.
    pub fn find(&self, name: &[u8]) -> Option<u32> {
        let mut lo = 0;
        let mut hi = self.spans.len();
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            match self.get(mid as u32).cmp(name) {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
                std::cmp::Ordering::Equal => return Some(mid as u32),
            }
        }
        None
    }

    /// Is this the table of the same loaded file as `other`?
    pub fn same_as(&self, other: &NameTable<'_>) -> bool {
        std::ptr::eq(self.spans, other.spans) && std::ptr::eq(self.data, other.data)
    }

    /// Every name, in id (that is, byte) order.
    pub fn iter(&self) -> impl Iterator<Item = &'a [u8]> + 'a {
        let t = *self;
        (0..t.spans.len() as u32).map(move |id| t.get(id))
    }
}

/// What kind of entry a directory listing records (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A regular file with a module's name.
    Module,
    /// A directory.
    Dir,
    /// Anything else the walk looks at: a link, or an entry whose type readdir does not
    /// give, or an excluded name.
    Other,
}

impl Kind {
    fn code(self) -> u8 {
        match self {
            Kind::Module => 0,
            Kind::Dir => 1,
            Kind::Other => 2,
        }
    }

    fn from_code(c: u8) -> Option<Kind> {
        match c {
            0 => Some(Kind::Module),
            1 => Some(Kind::Dir),
            2 => Some(Kind::Other),
            _ => None,
        }
    }
}

/// Append one entry to a directory listing (the `listing` of a [`DirRecord`]).
pub fn push_listing(listing: &mut Vec<u8>, kind: Kind, name: &[u8]) {
    listing.push(kind.code());
    put_bytes(listing, name);
}

/// The entries of a listing made by [`push_listing`] (and checked when its cache was
/// loaded), in order; stops at the first malformed entry.
pub fn listing_entries(listing: &[u8]) -> impl Iterator<Item = (Kind, &[u8])> + '_ {
    let mut r = Reader::new(listing);
    std::iter::from_fn(move || {
        if r.pos == listing.len() {
            return None;
        }
        let kind = Kind::from_code(r.bytes(1)?[0])?;
        Some((kind, r.sized()?))
    })
}

/// Is `listing` a well-formed sequence of entries?
fn listing_ok(listing: &[u8]) -> bool {
    let mut r = Reader::new(listing);
    while r.pos < listing.len() {
        let Some(&[code]) = r.bytes(1) else {
            return false;
        };
        if Kind::from_code(code).is_none() || r.sized().is_none() {
            return false;
        }
    }
    true
}

/// One directory listing to store.
pub struct DirRecord<'a> {
    pub path: &'a [u8],
    pub key: FileKey,
    pub listing: &'a [u8],
}

/// One cached module's data, read in place from the cache file (which it keeps alive).
/// Its layout was checked when it was handed out, so reading it cannot fail.
#[derive(Clone)]
pub struct Body {
    data: Arc<Bytes>,
    names: Spans,
    ordinal: u32,
    /// The body is `data[start..end]`; its export and need sections start (after their
    /// counts) at `exports` and `needs`.
    start: usize,
    end: usize,
    exports: usize,
    needs: usize,
    counts: [u32; 3],
    /// The entry's [`data_hash`].
    hash: u64,
}

impl Body {
    /// Check the body at `data[start..end]` (every name id within `names`) and find its
    /// sections.
    fn new(
        data: &Arc<Bytes>,
        names: &Spans,
        ordinal: u32,
        start: usize,
        end: usize,
    ) -> Option<Body> {
        let mut r = Reader {
            data: data.get(..end)?,
            pos: start,
        };
        let mut counts = [0u32; 3];
        let mut at = [0usize; 3];
        counts[0] = r.count(8)? as u32;
        at[0] = r.pos;
        for _ in 0..counts[0] {
            r.sized()?;
            r.sized()?;
        }
        // Exports (name id, CRC) and needs (name id, CRC, weak): records of a fixed
        // size, checked all of a section at once (every id in the table, every weak
        // flag 0 or 1).
        let ids_known = |records: &[u8], size: usize| {
            let limit = names.len() as u64;
            records.chunks_exact(size).fold(true, |ok, rec| {
                ok & (u64::from(le_u32(rec)) < limit) & (size == 12 || rec[12] <= 1)
            })
        };
        for (i, size) in [(1usize, 12usize), (2, 13)] {
            counts[i] = r.count(size)? as u32;
            at[i] = r.pos;
            let records = r.bytes(counts[i] as usize * size)?;
            if !ids_known(records, size) {
                return None;
            }
        }
        (r.pos == end).then(|| Body {
            data: Arc::clone(data),
            names: Arc::clone(names),
            ordinal,
            start,
            end,
            exports: at[1],
            needs: at[2],
            counts,
            hash: 0,
        })
    }

    fn reader(&self, at: usize) -> Reader<'_> {
        Reader {
            data: &self.data[..self.end],
            pos: at,
        }
    }

    /// The body's bytes as stored (a new cache file copies them as they are).
    pub fn bytes(&self) -> &[u8] {
        &self.data[self.start..self.end]
    }

    pub fn modinfo(&self) -> impl Iterator<Item = (&[u8], &[u8])> + '_ {
        let mut r = self.reader(self.start + 4);
        (0..self.counts[0]).map_while(move |_| Some((r.sized()?, r.sized()?)))
    }

    /// The module's place among the entries of its cache file (see the aliases section
    /// in the module documentation).
    pub fn ordinal(&self) -> u32 {
        self.ordinal
    }

    /// The [`data_hash`] stored with the entry (worked out when the module was read).
    pub fn data_hash(&self) -> u64 {
        self.hash
    }

    /// The name table the body's name ids refer to.
    pub fn names(&self) -> NameTable<'_> {
        NameTable {
            data: &self.data,
            spans: &self.names,
        }
    }

    /// Exported symbols: (name id, CRC).
    pub fn export_ids(&self) -> impl Iterator<Item = (u32, u64)> + '_ {
        self.records(self.exports, self.counts[1], 12)
            .map(|r| (le_u32(r), le_u64(&r[4..])))
    }

    /// Needed symbols: (name id, CRC, weak).
    pub fn need_ids(&self) -> impl Iterator<Item = (u32, u64, bool)> + '_ {
        self.records(self.needs, self.counts[2], 13)
            .map(|r| (le_u32(r), le_u64(&r[4..]), r[12] == 1))
    }

    /// `count` records of `size` bytes from `at` (checked by [`Body::new`]; none should
    /// they not fit after all).
    fn records(&self, at: usize, count: u32, size: usize) -> std::slice::ChunksExact<'_, u8> {
        let end = (count as usize)
            .checked_mul(size)
            .and_then(|n| at.checked_add(n))
            .filter(|&end| end <= self.end);
        let bytes = end
            .and_then(|end| self.data.get(at..end))
            .unwrap_or_default();
        bytes.chunks_exact(size)
    }

    pub fn exports(&self) -> impl Iterator<Item = (&[u8], u64)> + '_ {
        let names = self.names();
        self.export_ids().map(move |(id, crc)| (names.get(id), crc))
    }

    pub fn export_count(&self) -> usize {
        self.counts[1] as usize
    }

    pub fn needs(&self) -> impl Iterator<Item = (&[u8], u64, bool)> + '_ {
        let names = self.names();
        self.need_ids()
            .map(move |(id, crc, weak)| (names.get(id), crc, weak))
    }

    /// The same data as an owned [`ModuleData`] (for tests and tools).
    pub fn to_module_data(&self) -> ModuleData {
        ModuleData {
            modinfo: self
                .modinfo()
                .map(|(k, v)| (k.to_vec(), v.to_vec()))
                .collect(),
            exports: self
                .exports()
                .map(|(name, crc)| Export {
                    name: name.to_vec(),
                    crc,
                })
                .collect(),
            needs: self
                .needs()
                .map(|(name, crc, weak)| Need {
                    name: name.to_vec(),
                    crc,
                    weak,
                })
                .collect(),
        }
    }
}

impl Cache {
    /// An empty cache (no entries).
    pub fn empty() -> Cache {
        Cache::default()
    }

    /// Load `dir/modules.depmod.cache` in two steps (`Err` says why it is not usable;
    /// the file is mapped, not copied: entries are read in place): the directory
    /// listings at once, not checked yet
    /// (for the tree walk to start with), and the whole file, checked, from
    /// [`Loading::finish`] (worked out on a thread of its own meanwhile). A caller that
    /// used the early listings and then finds the file rejected must do without them
    /// (walk again).
    pub fn load_listings_first(dir: &Path) -> Result<Loading, Rejected> {
        // Not populated: the listings are a small part of the file, and the thread that
        // reads the rest faults its pages in off the caller's path.
        let data = Arc::new(Cache::map(dir)?);
        let head = Header::parse(&data)?;
        let mut r = Reader {
            data: &data[..head.payload_end],
            pos: head.payload_start,
        };
        let dirs = index_records(&mut r, head.dir_count, &listing_ok)?;
        let early = Cache {
            data: Arc::clone(&data),
            dirs,
            ..Cache::default()
        };
        let rest = std::thread::Builder::new()
            .name("depmod-cache".into())
            .spawn(move || Cache::parse_shared(data))
            .map_err(|e| Rejected::Unreadable(crate::errno_text(&e)))?;
        Ok(Loading { early, rest })
    }

    /// The cache file of `dir`, mapped.
    fn map(dir: &Path) -> Result<Bytes, Rejected> {
        let path = dir.join(CACHE_FILE);
        let unreadable = |e: std::io::Error| {
            if e.kind() == std::io::ErrorKind::NotFound {
                Rejected::Missing
            } else {
                Rejected::Unreadable(crate::errno_text(&e))
            }
        };
        let file = std::fs::File::open(&path).map_err(unreadable)?;
        let meta = file.metadata().map_err(unreadable)?;
        if !meta.is_file() {
            return Err(Rejected::Unreadable("not a regular file".into()));
        }
        if meta.len() > MAX_CACHE_LEN {
            return Err(Rejected::BadLength);
        }
        if meta.len() < HEADER_MIN as u64 {
            return Err(Rejected::TooShort);
        }
        let map = crate::fsio::map_readonly(&file, false).map_err(unreadable)?;
        Ok(Bytes::Mapped(map))
    }

    /// Validate and index a cache file's bytes.
    pub fn parse(data: Vec<u8>) -> Result<Cache, Rejected> {
        Cache::parse_shared(Arc::new(Bytes::Owned(data)))
    }

    fn parse_shared(data: Arc<Bytes>) -> Result<Cache, Rejected> {
        let head = Header::parse(&data)?;
        let (payload_start, payload_end) = (head.payload_start, head.payload_end);
        let mut trailer = [0u8; 8];
        trailer.copy_from_slice(&data[payload_end..]);
        // The records are indexed while the checksum is computed (on another thread);
        // nothing of them is used unless the checksum matches.
        let index_all = || {
            let mut r = Reader {
                data: &data[..payload_end],
                pos: payload_start,
            };
            let dirs = index_records(&mut r, head.dir_count, &listing_ok)?;
            let names = name_spans(&mut r).ok_or(Rejected::Malformed)?;
            let index = index_records(&mut r, head.count, &|_| true)?;
            let alias_order = alias_order(&mut r, head.count).ok_or(Rejected::Malformed)?;
            let hashes = r.pos;
            let hashes_len = head.count.checked_mul(8).ok_or(Rejected::Malformed)?;
            r.bytes(hashes_len).ok_or(Rejected::Malformed)?;
            if r.pos != payload_end {
                return Err(Rejected::Malformed);
            }
            Ok((names, index, dirs, alias_order, hashes))
        };
        // (A thread of its own, not the pool: idle pool workers spin for a while, which
        // the tree walk that follows would pay for.)
        let (sum, indexed) = std::thread::scope(|s| {
            let summing = std::thread::Builder::new()
                .spawn_scoped(s, || checksum(&data[..payload_end]))
                .ok();
            let indexed = index_all();
            let sum = match summing.map(|h| h.join()) {
                Some(Ok(sum)) => sum,
                _ => checksum(&data[..payload_end]),
            };
            (sum, indexed)
        });
        if sum != u64::from_le_bytes(trailer) {
            return Err(Rejected::BadChecksum);
        }
        let (names, index, dirs, alias_order, hashes) = indexed?;
        Ok(Cache {
            data,
            names: names.into(),
            index,
            dirs,
            alias_order,
            hashes,
        })
    }

    /// The listing stored for directory `path`, only if it was stored with exactly `key`.
    pub fn listing(&self, path: &[u8], key: &FileKey) -> Option<&[u8]> {
        let slot = self.dirs.get(&self.data, path)?;
        if slot.key != *key {
            return None;
        }
        let (start, len) = slot.body;
        self.data.get(start..start.checked_add(len)?)
    }

    /// Every directory's path and key (in no particular order).
    pub fn dirs(&self) -> impl Iterator<Item = (&[u8], FileKey)> + '_ {
        self.dirs.iter(&self.data)
    }

    /// The stored modules' aliases in the order the alias index lists them (see the
    /// module documentation): (entry, alias) pairs, the entry as [`Body::ordinal`]
    /// gives it. Empty when the file has none or some alias was left out.
    pub fn alias_order(&self) -> &[(u32, u32)] {
        &self.alias_order
    }

    /// Number of directory listings.
    pub fn dir_count(&self) -> usize {
        self.dirs.len()
    }

    /// The size of the file the cache was loaded from (0 for an empty cache).
    pub fn file_len(&self) -> u64 {
        self.data.len() as u64
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.index.len() == 0
    }

    /// Every entry's path and key (in no particular order).
    pub fn entries(&self) -> impl Iterator<Item = (&[u8], FileKey)> + '_ {
        self.index.iter(&self.data)
    }

    /// The cached data of `path`, only if it was stored with exactly `key` (and its body
    /// is well-formed).
    pub fn get(&self, path: &[u8], key: &FileKey) -> Option<Body> {
        let slot = self.index.get(&self.data, path)?;
        if slot.key != *key {
            return None;
        }
        let (start, len) = slot.body;
        let at = self.hashes.checked_add(8 * slot.ordinal as usize)?;
        let hash = le_u64(self.data.get(at..at.checked_add(8)?)?);
        let mut body = Body::new(
            &self.data,
            &self.names,
            slot.ordinal,
            start,
            start.checked_add(len)?,
        )?;
        body.hash = hash;
        Some(body)
    }
}

/// One module to store.
pub struct Entry<'a> {
    pub path: &'a [u8],
    pub key: FileKey,
    pub data: ModView<'a>,
}

/// The bytes of a cache file holding `entries` and `dirs` (see [`write_to`]).
pub fn encode(entries: &[Entry<'_>], dirs: &[DirRecord<'_>]) -> Vec<u8> {
    let mut out = Vec::new();
    // Writing into a Vec cannot fail.
    let _ = write_to(&mut out, entries, dirs, Aliases::Unknown, None);
    out
}

/// The order of the aliases section of a cache file about to be written (see the module
/// documentation).
pub enum Aliases<'f> {
    /// Work it out from the entries.
    Unknown,
    /// Known: (entry, alias) pairs in index order.
    Order(Vec<(u32, u32)>),
    /// Known once everything else is written (by the alias index being made meanwhile);
    /// `None`: no order is kept.
    Later(Box<dyn FnOnce() -> Option<AliasPairs> + Send + 'f>),
}

/// (entry, alias) pairs of the aliases section.
pub type AliasPairs = Vec<(u32, u32)>;

/// The shortest possible header (an empty crate version).
const HEADER_MIN: usize = MAGIC.len() + 4 + 4 + 4 + 4 + 8;

/// The length of a body (a re-encoded cached body is as long as it was: name ids have
/// one size).
fn body_len(d: ModView<'_>) -> usize {
    if let ModView::Cached(b) = d {
        return b.bytes().len();
    }
    12 + d
        .modinfo()
        .map(|(k, v)| 8 + k.len() + v.len())
        .sum::<usize>()
        + 12 * d.export_count()
        + 13 * d.needs().count()
}

/// The name table of a cache file about to be written, and how its bodies get their ids.
struct NamePlan<'e> {
    /// The table, in id order.
    names: Vec<&'e [u8]>,
    /// The old file's table, when it is kept as it is: bodies read from it are copied
    /// as they are.
    keep: Option<NameTable<'e>>,
    /// The ids of every name of the bodies that are encoded afresh (all but the copied
    /// ones), in the order they are written: by entry, each entry's exports then needs.
    ids: Vec<u32>,
}

type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

/// The symbol names of a module in the order its body stores them: exports, then needs.
fn symbol_names(d: ModView<'_>) -> impl Iterator<Item = &[u8]> + '_ {
    d.exports()
        .map(|(n, _)| n)
        .chain(d.needs().map(|(n, _, _)| n))
}

impl<'e> NamePlan<'e> {
    /// Keep the old table when every name of a freshly read module is in it and at most
    /// a quarter of it has gone out of use (names no module stores any more); else make
    /// a new table of the names in use, sorted.
    fn new(entries: &[Entry<'e>]) -> NamePlan<'e> {
        let mut old: Option<NameTable<'e>> = None;
        let mut one_table = true;
        for e in entries {
            if let ModView::Cached(b) = e.data {
                match old {
                    None => old = Some(b.names()),
                    Some(t) => one_table &= t.same_as(&b.names()),
                }
            }
        }
        if let (Some(t), true) = (old, one_table) {
            let mut used = vec![false; t.len()];
            let mut ids = Vec::new();
            let mut all_known = true;
            for e in entries {
                match e.data {
                    ModView::Cached(b) => {
                        let exports = b.export_ids().map(|(id, _)| id);
                        for id in exports.chain(b.need_ids().map(|(id, _, _)| id)) {
                            if let Some(u) = used.get_mut(id as usize) {
                                *u = true;
                            }
                        }
                    }
                    ModView::Data(_) => {
                        for n in symbol_names(e.data) {
                            let id = t.find(n);
                            all_known &= id.is_some();
                            let id = id.unwrap_or(0);
                            if let Some(u) = used.get_mut(id as usize) {
                                *u = true;
                            }
                            ids.push(id);
                        }
                    }
                }
            }
            let unused = used.iter().filter(|u| !**u).count();
            if all_known && unused * 4 <= t.len() {
                return NamePlan {
                    names: t.iter().collect(),
                    keep: Some(t),
                    ids,
                };
            }
        }
        // Every name gets a provisional id (in the order first met) on the way, then its
        // place in the sorted table.
        let mut provisional: HashMap<&'e [u8], u32> = HashMap::default();
        let mut first: Vec<(&'e [u8], u32)> = Vec::new();
        let mut ids = Vec::new();
        for e in entries {
            for n in symbol_names(e.data) {
                let id = *provisional.entry(n).or_insert_with(|| {
                    first.push((n, first.len() as u32));
                    first.len() as u32 - 1
                });
                ids.push(id);
            }
        }
        crate::bytesort::sort_unstable_by_bytes(&mut first, |&(n, _)| n);
        let mut place = vec![0u32; first.len()];
        for (at, &(_, id)) in first.iter().enumerate() {
            place[id as usize] = at as u32;
        }
        for id in &mut ids {
            *id = place[*id as usize];
        }
        NamePlan {
            names: first.into_iter().map(|(n, _)| n).collect(),
            keep: None,
            ids,
        }
    }

    /// Can `b` be copied as it is?
    fn keeps(&self, b: &Body) -> bool {
        self.keep.is_some_and(|t| t.same_as(&b.names()))
    }

    /// The length of the name table section.
    fn len(&self) -> usize {
        4 + self.names.iter().map(|n| 4 + n.len()).sum::<usize>()
    }
}

/// Write a cache file holding `entries` to `w`, piece by piece (the checksum is computed
/// on the way), so that the file never has to be in memory as a whole.
pub fn write_to(
    w: &mut dyn Write,
    entries: &[Entry<'_>],
    dirs: &[DirRecord<'_>],
    aliases: Aliases<'_>,
    hashes: Option<&[u64]>,
) -> std::io::Result<()> {
    // The directories, the name table, the modules and the aliases; every record its
    // path, its key (7 x u64) and a sized listing or body.
    let plan = NamePlan::new(entries);
    // The section has a pair for every alias of the entries, complete or not.
    let alias_count: usize = entries
        .iter()
        .map(|e| e.data.modinfo().filter(|(k, _)| *k == b"alias").count())
        .sum();
    let aliases = match aliases {
        Aliases::Unknown => Aliases::Order(alias_section(entries).unwrap_or_default()),
        known => known,
    };
    let record_len = |path: &[u8], body: usize| 4 + path.len() + 56 + 4 + body;
    let payload: usize = plan.len()
        + 5
        + 8 * alias_count
        + 8 * entries.len()
        + entries
            .iter()
            .map(|e| record_len(e.path, body_len(e.data)))
            .sum::<usize>()
        + dirs
            .iter()
            .map(|d| record_len(d.path, d.listing.len()))
            .sum::<usize>();
    let header = HEADER_MIN + CRATE_VERSION.len();
    let mut out = Summing {
        w,
        sum: Checksum::new(header + payload),
    };
    out.put(MAGIC)?;
    out.u32(FORMAT_VERSION)?;
    out.bytes(CRATE_VERSION.as_bytes())?;
    out.u32(entries.len() as u32)?;
    out.u32(dirs.len() as u32)?;
    out.put(&(payload as u64).to_le_bytes())?;
    // Each record is encoded into one buffer and written (and summed) in one piece: the
    // directories first (a walk can start with them, see `Cache::load_listings_first`).
    let mut buf = Vec::new();
    for d in dirs {
        buf.clear();
        put_head(&mut buf, d.path, &d.key);
        put_bytes(&mut buf, d.listing);
        out.put(&buf)?;
    }
    buf.clear();
    put_u32(&mut buf, plan.names.len() as u32);
    for n in &plan.names {
        put_bytes(&mut buf, n);
    }
    out.put(&buf)?;
    // The plan's ids, taken in the order it made them.
    let mut ids = plan.ids.iter().copied();
    for e in entries {
        buf.clear();
        let d = e.data;
        put_head(&mut buf, e.path, &e.key);
        put_u32(&mut buf, body_len(d) as u32);
        match d {
            // A body read from the old cache is copied as it is when its table is kept.
            ModView::Cached(b) if plan.keeps(b) => buf.extend_from_slice(b.bytes()),
            _ => {
                put_u32(&mut buf, d.modinfo().count() as u32);
                for (k, v) in d.modinfo() {
                    put_bytes(&mut buf, k);
                    put_bytes(&mut buf, v);
                }
                put_u32(&mut buf, d.export_count() as u32);
                for (_, crc) in d.exports() {
                    put_u32(&mut buf, ids.next().unwrap_or(0));
                    buf.extend_from_slice(&crc.to_le_bytes());
                }
                put_u32(&mut buf, d.needs().count() as u32);
                for (_, crc, weak) in d.needs() {
                    put_u32(&mut buf, ids.next().unwrap_or(0));
                    buf.extend_from_slice(&crc.to_le_bytes());
                    buf.push(u8::from(weak));
                }
            }
        }
        out.put(&buf)?;
    }
    let order = match aliases {
        Aliases::Order(order) => Some(order),
        Aliases::Later(get) => get(),
        Aliases::Unknown => None,
    }
    .filter(|o| o.len() == alias_count);
    buf.clear();
    buf.push(u8::from(order.is_some()));
    put_u32(&mut buf, alias_count as u32);
    match order {
        Some(order) => {
            for (entry, alias) in order {
                put_u32(&mut buf, entry);
                put_u32(&mut buf, alias);
            }
        }
        None => buf.resize(buf.len() + 8 * alias_count, 0),
    }
    out.put(&buf)?;
    // The entries' data hashes: as the caller worked them out, or worked out here.
    buf.clear();
    for (n, e) in entries.iter().enumerate() {
        let h = match hashes.and_then(|h| h.get(n)) {
            Some(&h) => h,
            None => view_hash(e.data),
        };
        buf.extend_from_slice(&h.to_le_bytes());
    }
    out.put(&buf)?;
    let sum = out.sum.finish();
    out.w.write_all(&sum.to_le_bytes())
}

/// A hash of a module's data as depmod uses it (every `.modinfo` entry, export and need,
/// in order, each field length-prefixed): equal data, equal hash. Not keyed: it must be the
/// same in every process (it is stored), and it only has to tell apart the data of one
/// module file from one run to the next, never to stand up to a forger (whoever can write
/// module files is root).
pub fn data_hash(d: &ModuleData) -> u64 {
    // Laid out in one buffer (reused by the thread), then summed in one go.
    thread_local! {
        static BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    BUF.with(|b| {
        let mut b = b.borrow_mut();
        b.clear();
        put_u32(&mut b, d.modinfo.len() as u32);
        for (k, v) in &d.modinfo {
            put_bytes(&mut b, k);
            put_bytes(&mut b, v);
        }
        put_u32(&mut b, d.exports.len() as u32);
        for x in &d.exports {
            put_bytes(&mut b, &x.name);
            b.extend_from_slice(&x.crc.to_le_bytes());
        }
        put_u32(&mut b, d.needs.len() as u32);
        for n in &d.needs {
            put_bytes(&mut b, &n.name);
            b.extend_from_slice(&n.crc.to_le_bytes());
            b.push(u8::from(n.weak));
        }
        let h = checksum(&b);
        // A huge module's buffer is not kept.
        if b.capacity() > 1 << 20 {
            *b = Vec::new();
        }
        h
    })
}

/// The [`data_hash`] of a module to store: a cached body's own, or worked out.
pub fn view_hash(d: ModView<'_>) -> u64 {
    match d {
        ModView::Cached(b) => b.data_hash(),
        ModView::Data(d) => data_hash(d),
    }
}

/// A cache file around `payload` (entries and directories as [`write_to`] lays them
/// out), claiming `count` entries and `dirs` directories, with a correct header and
/// checksum: for tests and the fuzzer, which could never forge the checksum and so would
/// never reach the record decoders.
pub fn frame(count: u32, dirs: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 64);
    out.extend_from_slice(MAGIC);
    put_u32(&mut out, FORMAT_VERSION);
    put_bytes(&mut out, CRATE_VERSION.as_bytes());
    put_u32(&mut out, count);
    put_u32(&mut out, dirs);
    out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    out.extend_from_slice(payload);
    let sum = checksum(&out);
    out.extend_from_slice(&sum.to_le_bytes());
    out
}

/// A writer that feeds everything it writes to the checksum.
struct Summing<'a> {
    w: &'a mut dyn Write,
    sum: Checksum,
}

impl Summing<'_> {
    fn put(&mut self, b: &[u8]) -> std::io::Result<()> {
        self.sum.update(b);
        self.w.write_all(b)
    }

    fn u32(&mut self, v: u32) -> std::io::Result<()> {
        self.put(&v.to_le_bytes())
    }

    fn bytes(&mut self, b: &[u8]) -> std::io::Result<()> {
        self.u32(b.len() as u32)?;
        self.put(b)
    }
}

/// The start of a record (module or directory): its path and its key.
fn put_head(out: &mut Vec<u8>, path: &[u8], key: &FileKey) {
    put_bytes(out, path);
    for x in key.words() {
        out.extend_from_slice(&x.to_le_bytes());
    }
}

fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_u32(out, b.len() as u32);
    out.extend_from_slice(b);
}

/// The little-endian u32 at the start of `b` (which holds at least 4 bytes).
fn le_u32(b: &[u8]) -> u32 {
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

/// The little-endian u64 at the start of `b` (which holds at least 8 bytes).
fn le_u64(b: &[u8]) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[..8]);
    u64::from_le_bytes(w)
}

struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn new(data: &'a [u8]) -> Self {
        Reader { data, pos: 0 }
    }

    fn bytes(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n)?;
        let b = self.data.get(self.pos..end)?;
        self.pos = end;
        Some(b)
    }

    fn u32(&mut self) -> Option<u32> {
        self.bytes(4).map(le_u32)
    }

    fn u64(&mut self) -> Option<u64> {
        self.bytes(8).map(le_u64)
    }

    /// A length (u32) and that many bytes.
    fn sized(&mut self) -> Option<&'a [u8]> {
        let n = self.u32()? as usize;
        self.bytes(n)
    }

    /// A count of records of at least `min` bytes each, checked against what is left so
    /// that a corrupt count cannot make us allocate much.
    fn count(&mut self, min: usize) -> Option<usize> {
        let n = self.u32()? as usize;
        (n.checked_mul(min)? <= self.data.len() - self.pos).then_some(n)
    }
}

/// The aliases of `entries` in the order the alias index lists them (see the module
/// documentation; the entries taken as modules in module order), or `None` when some
/// alias cannot be normalised (and is left out of the index).
fn alias_section(entries: &[Entry<'_>]) -> Option<Vec<(u32, u32)>> {
    let mut index = crate::index::IndexBuilder::unchecked();
    let mut refs = Vec::new();
    for (e, entry) in entries.iter().enumerate() {
        let aliases = entry.data.modinfo().filter(|(k, _)| *k == b"alias");
        for (a, (_, alias)) in aliases.enumerate() {
            let key = |k: &mut Vec<u8>| crate::name::normalize_alias_into(alias, k);
            index.insert_with(key, b"", e as u32).ok()?;
            refs.push((e as u32, a as u32));
        }
    }
    Some(
        index
            .file_order()
            .into_iter()
            .filter_map(|id| refs.get(id as usize).copied())
            .collect(),
    )
}

/// What a cache file's header says (checked against the file's length).
struct Header {
    count: usize,
    dir_count: usize,
    payload_start: usize,
    /// Where the payload ends and the checksum begins.
    payload_end: usize,
}

impl Header {
    fn parse(data: &[u8]) -> Result<Header, Rejected> {
        let mut r = Reader::new(data);
        let magic = r.bytes(MAGIC.len()).ok_or(Rejected::TooShort)?;
        if magic != MAGIC {
            return Err(Rejected::BadMagic);
        }
        let format = r.u32().ok_or(Rejected::TooShort)?;
        if format != FORMAT_VERSION {
            return Err(Rejected::OtherFormat(format));
        }
        let vlen = r.u32().ok_or(Rejected::TooShort)? as usize;
        let version = r.bytes(vlen).ok_or(Rejected::TooShort)?;
        if version != CRATE_VERSION.as_bytes() {
            return Err(Rejected::OtherVersion(
                String::from_utf8_lossy(version).into_owned(),
            ));
        }
        let count = r.u32().ok_or(Rejected::TooShort)? as usize;
        let dir_count = r.u32().ok_or(Rejected::TooShort)? as usize;
        let payload_len = r.u64().ok_or(Rejected::TooShort)?;
        let payload_start = r.pos;
        let payload_end = usize::try_from(payload_len)
            .ok()
            .and_then(|l| payload_start.checked_add(l))
            .ok_or(Rejected::BadLength)?;
        if payload_end.checked_add(8) != Some(data.len()) {
            return Err(Rejected::BadLength);
        }
        Ok(Header {
            count,
            dir_count,
            payload_start,
            payload_end,
        })
    }
}

/// A cache file being loaded (see [`Cache::load_listings_first`]).
pub struct Loading {
    early: Cache,
    rest: std::thread::JoinHandle<Result<Cache, Rejected>>,
}

impl Loading {
    /// The directory listings alone, not checked yet (no module entries).
    pub fn listings(&self) -> &Cache {
        &self.early
    }

    /// The whole file, checked (its listings included), or why it is not used.
    pub fn finish(self) -> Result<Cache, Rejected> {
        drop(self.early);
        self.rest
            .join()
            .unwrap_or_else(|_| Err(Rejected::Unreadable("cache reader failed".into())))
    }
}

/// Index `n` records (module entries or directories) from `r`: path, key, and a body or
/// listing that `check` accepts.
fn index_records(
    r: &mut Reader<'_>,
    n: usize,
    check: &dyn Fn(&[u8]) -> bool,
) -> Result<PathIndex, Rejected> {
    let mut index = PathIndex::default();
    index.slots.reserve(n.min(r.data.len() / 64));
    for ordinal in 0..n as u32 {
        let plen = r.u32().ok_or(Rejected::Malformed)? as usize;
        let pstart = r.pos;
        let path = r.bytes(plen).ok_or(Rejected::Malformed)?;
        let hash = index.hash(path);
        let mut w = [0u64; 7];
        for x in &mut w {
            *x = r.u64().ok_or(Rejected::Malformed)?;
        }
        let blen = r.u32().ok_or(Rejected::Malformed)? as usize;
        let start = r.pos;
        let blob = r.bytes(blen).ok_or(Rejected::Malformed)?;
        if !check(blob) {
            return Err(Rejected::Malformed);
        }
        index.slots.push(Slot {
            hash,
            ordinal,
            path: (pstart, plen),
            key: FileKey::from_words(w),
            body: (start, blen),
        });
    }
    index.finish(r.data);
    Ok(index)
}

/// The aliases section at the end of the payload (its pairs, or none unless complete);
/// every entry number below `entries`.
fn alias_order(r: &mut Reader<'_>, entries: usize) -> Option<Vec<(u32, u32)>> {
    let complete = r.bytes(1)?[0];
    let n = r.count(8)?;
    match complete {
        0 => {
            r.bytes(8 * n)?;
            return Some(Vec::new());
        }
        1 => {}
        _ => return None,
    }
    let mut order = Vec::with_capacity(n);
    for _ in 0..n {
        let (entry, alias) = (r.u32()?, r.u32()?);
        if entry as usize >= entries {
            return None;
        }
        order.push((entry, alias));
    }
    Some(order)
}

/// The name table at the start of the payload: where each name is, checked to be in
/// strictly ascending byte order (so ids follow name order and lookups may bisect).
fn name_spans(r: &mut Reader<'_>) -> Option<Vec<(u32, u32)>> {
    let n = r.count(4)?;
    let mut spans: Vec<(u32, u32)> = Vec::with_capacity(n);
    let mut prev: Option<&[u8]> = None;
    for _ in 0..n {
        let name = r.sized()?;
        if prev.is_some_and(|p| p >= name) {
            return None;
        }
        prev = Some(name);
        // The file is at most MAX_CACHE_LEN (1 GiB) long: positions fit in 32 bits.
        let start = u32::try_from(r.pos - name.len()).ok()?;
        spans.push((start, name.len() as u32));
    }
    Some(spans)
}

/// A 64-bit checksum of `data` (see [`Checksum`]).
pub fn checksum(data: &[u8]) -> u64 {
    let mut c = Checksum::new(data.len());
    c.update(data);
    c.finish()
}

/// A streaming 64-bit checksum: 8-byte little-endian words folded with xor, rotate and
/// multiply into four lanes in turn (word i into lane i mod 4: four independent chains,
/// so the work is not one long chain of multiplies), seeded with the total length, the
/// lanes folded together at the end. Every step is a bijection of its lane, so any
/// single changed word changes the result. It detects corruption, not tampering: the
/// cache is never trusted over the module files anyway.
pub struct Checksum {
    h: [u64; 4],
    /// The lane of the next word.
    lane: usize,
    pending: [u8; 8],
    npending: usize,
}

impl Checksum {
    const K: u64 = 0x9E37_79B9_7F4A_7C15;

    pub fn new(total_len: usize) -> Self {
        let seed = 0x6B6D_6F64_2D72_7321 ^ total_len as u64;
        Checksum {
            h: [seed, seed ^ 1, seed ^ 2, seed ^ 3],
            lane: 0,
            pending: [0; 8],
            npending: 0,
        }
    }

    fn mix(h: u64, w: u64) -> u64 {
        (h ^ w).rotate_left(23).wrapping_mul(Self::K)
    }

    fn word(&mut self, w: [u8; 8]) {
        self.h[self.lane] = Self::mix(self.h[self.lane], u64::from_le_bytes(w));
        self.lane = (self.lane + 1) % 4;
    }

    pub fn update(&mut self, mut data: &[u8]) {
        if self.npending > 0 {
            let take = (8 - self.npending).min(data.len());
            self.pending[self.npending..self.npending + take].copy_from_slice(&data[..take]);
            self.npending += take;
            data = &data[take..];
            if self.npending < 8 {
                return;
            }
            self.word(self.pending);
            self.npending = 0;
        }
        let word_at = |d: &[u8], i: usize| {
            let mut w = [0u8; 8];
            w.copy_from_slice(&d[i..i + 8]);
            w
        };
        // Up to lane 0, then 32 bytes (one word per lane) at a time.
        while self.lane != 0 && data.len() >= 8 {
            self.word(word_at(data, 0));
            data = &data[8..];
        }
        let mut blocks = data.chunks_exact(32);
        for b in &mut blocks {
            for (i, h) in self.h.iter_mut().enumerate() {
                *h = Self::mix(*h, u64::from_le_bytes(word_at(b, 8 * i)));
            }
        }
        let mut rest = blocks.remainder();
        while rest.len() >= 8 {
            self.word(word_at(rest, 0));
            rest = &rest[8..];
        }
        self.pending[..rest.len()].copy_from_slice(rest);
        self.npending = rest.len();
    }

    pub fn finish(mut self) -> u64 {
        let mut w = [0u8; 8];
        w[..self.npending].copy_from_slice(&self.pending[..self.npending]);
        self.word(w);
        let mut h = self.h[0];
        for &lane in &self.h[1..] {
            h = Self::mix(h, lane);
        }
        h ^= h >> 29;
        h = h.wrapping_mul(Self::K);
        h ^ (h >> 32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> ModuleData {
        ModuleData {
            modinfo: vec![
                (b"alias".to_vec(), b"fs-fat".to_vec()),
                (b"k".to_vec(), vec![]),
            ],
            exports: vec![Export {
                name: b"fat_get".to_vec(),
                crc: 0x1234,
            }],
            needs: vec![Need {
                name: b"printk".to_vec(),
                crc: u64::MAX,
                weak: true,
            }],
        }
    }

    fn enc(entries: &[Entry<'_>]) -> Vec<u8> {
        encode(entries, &[])
    }

    fn key(n: u64) -> FileKey {
        FileKey {
            dev: 1,
            ino: n,
            size: 100,
            mtime: 10,
            mtime_nsec: 5,
            ctime: 11,
            ctime_nsec: 6,
        }
    }

    #[test]
    fn round_trip_and_exact_keys() {
        let d = sample();
        let e = ModuleData::default();
        let bytes = enc(&[
            Entry {
                path: b"/a/x.ko",
                key: key(1),
                data: ModView::Data(&d),
            },
            Entry {
                path: b"/a/y.ko",
                key: key(2),
                data: ModView::Data(&e),
            },
        ]);
        let c = Cache::parse(bytes.clone()).expect("valid");
        assert_eq!(c.len(), 2);
        let got = |p: &[u8], k: &FileKey| c.get(p, k).map(|b| b.to_module_data());
        assert_eq!(got(b"/a/x.ko", &key(1)), Some(d.clone()));
        assert_eq!(got(b"/a/y.ko", &key(2)), Some(e));
        assert_eq!(got(b"/a/x.ko", &key(2)), None);
        let mut k = key(1);
        k.ctime_nsec += 1;
        assert_eq!(got(b"/a/x.ko", &k), None);
        assert_eq!(got(b"/a/z.ko", &key(1)), None);
        // A body read in place is stored again byte for byte.
        let body = c.get(b"/a/x.ko", &key(1)).unwrap();
        let again = enc(&[Entry {
            path: b"/a/x.ko",
            key: key(1),
            data: ModView::Cached(&body),
        }]);
        let single = enc(&[Entry {
            path: b"/a/x.ko",
            key: key(1),
            data: ModView::Data(&d),
        }]);
        assert_eq!(again, single);
        assert_eq!(body.export_count(), 1);
        assert_eq!(
            body.needs().collect::<Vec<_>>(),
            vec![(&b"printk"[..], u64::MAX, true)]
        );
    }

    #[test]
    fn a_path_stored_twice_keeps_its_last_record() {
        // Our writer never repeats a path, but a file may: the later record counts,
        // once, and many repeats cost no more than many distinct paths.
        let d = sample();
        let e = ModuleData::default();
        let mut entries: Vec<Entry<'_>> = (0..2000u64)
            .map(|n| Entry {
                path: b"/a/x.ko",
                key: key(n),
                data: ModView::Data(&e),
            })
            .collect();
        entries.push(Entry {
            path: b"/a/y.ko",
            key: key(7),
            data: ModView::Data(&e),
        });
        entries.push(Entry {
            path: b"/a/x.ko",
            key: key(5000),
            data: ModView::Data(&d),
        });
        let c = Cache::parse(enc(&entries)).expect("valid");
        assert_eq!(c.len(), 2);
        let got = |p: &[u8], k: &FileKey| c.get(p, k).map(|b| b.to_module_data());
        assert_eq!(got(b"/a/x.ko", &key(5000)), Some(d));
        assert_eq!(got(b"/a/x.ko", &key(1999)), None);
        assert_eq!(got(b"/a/y.ko", &key(7)), Some(e));
        let mut listed: Vec<(Vec<u8>, FileKey)> =
            c.entries().map(|(p, k)| (p.to_vec(), k)).collect();
        listed.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(
            listed,
            vec![
                (b"/a/x.ko".to_vec(), key(5000)),
                (b"/a/y.ko".to_vec(), key(7))
            ]
        );
    }

    #[test]
    fn damaged_caches_are_rejected() {
        let d = sample();
        let bytes = enc(&[Entry {
            path: b"/a/x.ko",
            key: key(1),
            data: ModView::Data(&d),
        }]);
        for cut in 0..bytes.len() {
            assert!(Cache::parse(bytes[..cut].to_vec()).is_err(), "cut {cut}");
        }
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x40;
            assert!(Cache::parse(b).is_err(), "flip {i}");
        }
        let mut b = bytes.clone();
        b.extend_from_slice(b"x");
        assert!(Cache::parse(b).is_err());
    }

    #[test]
    fn frame_matches_encode() {
        let d = sample();
        let entries = [Entry {
            path: b"/lib/modules/x/a.ko",
            key: key(3),
            data: ModView::Data(&d),
        }];
        let bytes = enc(&entries);
        let header = HEADER_MIN + CRATE_VERSION.len();
        let payload = &bytes[header..bytes.len() - 8];
        assert_eq!(frame(1, 0, payload), bytes);
        let c = Cache::parse(frame(1, 0, payload)).unwrap();
        let listed: Vec<_> = c.entries().collect();
        assert_eq!(listed, vec![(&b"/lib/modules/x/a.ko"[..], key(3))]);
        // A wrong count is caught even though the checksum is right.
        assert_eq!(
            Cache::parse(frame(2, 0, payload)).err(),
            Some(Rejected::Malformed)
        );
    }

    fn module(exports: &[&str], needs: &[&str]) -> ModuleData {
        ModuleData {
            modinfo: vec![(b"alias".to_vec(), b"x".to_vec())],
            exports: exports
                .iter()
                .map(|n| Export {
                    name: n.as_bytes().to_vec(),
                    crc: 7,
                })
                .collect(),
            needs: needs
                .iter()
                .map(|n| Need {
                    name: n.as_bytes().to_vec(),
                    crc: 9,
                    weak: n.starts_with('w'),
                })
                .collect(),
        }
    }

    fn names_of(c: &Cache, path: &[u8], k: FileKey) -> Vec<Vec<u8>> {
        let b = c.get(path, &k).expect("entry");
        b.names().iter().map(<[u8]>::to_vec).collect()
    }

    #[test]
    fn names_are_stored_once_sorted_and_checked() {
        let x = module(&["zeta", "alpha"], &["printk", "alpha", "wk"]);
        let y = module(&["beta"], &["printk", "zeta"]);
        let bytes = enc(&[
            Entry {
                path: b"/x.ko",
                key: key(1),
                data: ModView::Data(&x),
            },
            Entry {
                path: b"/y.ko",
                key: key(2),
                data: ModView::Data(&y),
            },
        ]);
        let c = Cache::parse(bytes.clone()).unwrap();
        let table: Vec<&[u8]> = vec![b"alpha", b"beta", b"printk", b"wk", b"zeta"];
        assert_eq!(names_of(&c, b"/x.ko", key(1)), table);
        let bx = c.get(b"/x.ko", &key(1)).unwrap();
        assert_eq!(bx.to_module_data(), x);
        assert_eq!(bx.export_ids().collect::<Vec<_>>(), vec![(4, 7), (0, 7)]);
        assert_eq!(bx.names().find(b"printk"), Some(2));
        assert_eq!(bx.names().find(b"printj"), None);
        assert_eq!(c.get(b"/y.ko", &key(2)).unwrap().to_module_data(), y);

        // The table is the start of the payload: names out of order, or twice, are
        // malformed; so is a body naming an id the table does not have.
        let header = HEADER_MIN + CRATE_VERSION.len();
        let payload = &bytes[header..bytes.len() - 8];
        let swap = |a: &[u8], b: &[u8]| {
            let mut p = payload.to_vec();
            let (i, j) = (
                p.windows(4).position(|w| w == a).unwrap(),
                p.windows(4).position(|w| w == b).unwrap(),
            );
            p[i..i + 4].copy_from_slice(b);
            p[j..j + 4].copy_from_slice(a);
            p
        };
        assert!(Cache::parse(frame(2, 0, payload)).is_ok());
        assert_eq!(
            Cache::parse(frame(2, 0, &swap(b"beta", b"zeta"))).err(),
            Some(Rejected::Malformed)
        );
        let table_only = |names: &[&[u8]]| {
            let mut p = Vec::new();
            put_u32(&mut p, names.len() as u32);
            names.iter().for_each(|n| put_bytes(&mut p, n));
            // An empty aliases section.
            p.extend_from_slice(&[1, 0, 0, 0, 0]);
            Cache::parse(frame(0, 0, &p)).err()
        };
        assert_eq!(table_only(&[b"a", b"ab", b"b"]), None);
        assert_eq!(table_only(&[b"a", b"a"]), Some(Rejected::Malformed));
        assert_eq!(table_only(&[b"ab", b"a"]), Some(Rejected::Malformed));
        // x's first export is id 4 (zeta): make it 5.
        let mut bad_id = payload.to_vec();
        let body = bad_id.windows(5).position(|w| w == b"/x.ko").unwrap();
        let first_export = bad_id[body..]
            .windows(12)
            .position(|w| w[..4] == 4u32.to_le_bytes() && w[4..] == 7u64.to_le_bytes())
            .unwrap()
            + body;
        bad_id[first_export..first_export + 4].copy_from_slice(&5u32.to_le_bytes());
        let c = Cache::parse(frame(2, 0, &bad_id)).unwrap();
        assert!(c.get(b"/x.ko", &key(1)).is_none(), "id beyond the table");
        assert!(c.get(b"/y.ko", &key(2)).is_some());
        // y's need of zeta (id 4): an id beyond the table, or a weak flag other than 0
        // or 1, makes y's body malformed (and only y's).
        let need = |p: &[u8]| {
            let body = p.windows(5).position(|w| w == b"/y.ko").unwrap();
            p[body..]
                .windows(12)
                .position(|w| w[..4] == 4u32.to_le_bytes() && w[4..] == 9u64.to_le_bytes())
                .unwrap()
                + body
        };
        for (at, byte) in [(0, 5u8), (12, 2)] {
            let mut bad = payload.to_vec();
            let n = need(&bad);
            bad[n + at] = byte;
            let c = Cache::parse(frame(2, 0, &bad)).unwrap();
            assert!(
                c.get(b"/y.ko", &key(2)).is_none(),
                "need byte {at} = {byte}"
            );
            assert!(c.get(b"/x.ko", &key(1)).is_some());
        }
    }

    #[test]
    fn a_rewritten_cache_keeps_its_name_table_or_makes_a_new_one() {
        let mods = [
            module(&["a", "b"], &["c"]),
            module(&["c"], &["a", "d"]),
            module(&["d", "e", "f"], &["g"]),
        ];
        let entries: Vec<Entry<'_>> = mods
            .iter()
            .enumerate()
            .map(|(i, d)| Entry {
                path: [b"/m0.ko", b"/m1.ko", b"/m2.ko"][i],
                key: key(i as u64),
                data: ModView::Data(d),
            })
            .collect();
        let old = Cache::parse(enc(&entries)).unwrap();
        let bodies: Vec<Body> = entries
            .iter()
            .map(|e| old.get(e.path, &e.key).unwrap())
            .collect();
        let all: Vec<&[u8]> = vec![b"a", b"b", b"c", b"d", b"e", b"f", b"g"];
        // The cached modules, and a fresh one whose names the table has: the table is
        // kept and the bodies copied as they are.
        let known = module(&["g"], &["a", "c"]);
        let rewrite = |fresh: &ModuleData, keep: &[usize]| {
            let mut e: Vec<Entry<'_>> = keep
                .iter()
                .map(|&i| Entry {
                    path: entries[i].path,
                    key: entries[i].key,
                    data: ModView::Cached(&bodies[i]),
                })
                .collect();
            e.push(Entry {
                path: b"/new.ko",
                key: key(9),
                data: ModView::Data(fresh),
            });
            Cache::parse(enc(&e)).unwrap()
        };
        let c = rewrite(&known, &[0, 1, 2]);
        assert_eq!(names_of(&c, b"/new.ko", key(9)), all);
        for (i, e) in entries.iter().enumerate() {
            assert_eq!(c.get(e.path, &e.key).unwrap().bytes(), bodies[i].bytes());
        }
        assert_eq!(c.get(b"/new.ko", &key(9)).unwrap().to_module_data(), known);
        // A new name: a new table, every module's data the same.
        let new_name = module(&["bb"], &["a"]);
        let c = rewrite(&new_name, &[0, 1, 2]);
        let mut with_bb = all.clone();
        with_bb.insert(2, b"bb");
        assert_eq!(names_of(&c, b"/new.ko", key(9)), with_bb);
        for (i, e) in entries.iter().enumerate() {
            assert_eq!(c.get(e.path, &e.key).unwrap().to_module_data(), mods[i]);
        }
        // Module 2 gone: e and f (2 of 7 names) are no longer used, more than a
        // quarter: a new table of the names in use.
        let c = rewrite(&known, &[0, 1]);
        let used: Vec<&[u8]> = vec![b"a", b"b", b"c", b"d", b"g"];
        assert_eq!(names_of(&c, b"/new.ko", key(9)), used);
        assert_eq!(c.get(b"/m1.ko", &key(1)).unwrap().to_module_data(), mods[1]);
        // Module 0 gone: only b unused (1 of 7): the table is kept.
        let c = rewrite(&known, &[1, 2]);
        assert_eq!(names_of(&c, b"/new.ko", key(9)), all);
        assert_eq!(
            c.get(b"/m2.ko", &key(2)).unwrap().bytes(),
            bodies[2].bytes()
        );
    }

    #[test]
    fn the_aliases_section_holds_the_alias_index_order() {
        let with_aliases = |aliases: &[&str]| ModuleData {
            modinfo: aliases
                .iter()
                .map(|a| (b"alias".to_vec(), a.as_bytes().to_vec()))
                .collect(),
            ..ModuleData::default()
        };
        let mods = [
            with_aliases(&["usb:v1", "pci:v2", "fs-b"]),
            with_aliases(&[]),
            with_aliases(&["fs-a", "pci:v1"]),
            with_aliases(&["pci:v1", "acpi*:X:*"]),
        ];
        let paths: [&[u8]; 4] = [b"/a.ko", b"/b.ko", b"/c.ko", b"/d.ko"];
        let entries: Vec<Entry<'_>> = mods
            .iter()
            .zip(paths)
            .enumerate()
            .map(|(i, (d, path))| Entry {
                path,
                key: key(i as u64),
                data: ModView::Data(d),
            })
            .collect();
        // By key, then by entry (the modules' order).
        let want = vec![(3, 1), (2, 0), (0, 2), (2, 1), (3, 0), (0, 1), (0, 0)];
        let written = |aliases: Aliases<'_>| {
            let mut out = Vec::new();
            write_to(&mut out, &entries, &[], aliases, None).unwrap();
            Cache::parse(out).unwrap()
        };
        assert_eq!(
            Cache::parse(enc(&entries)).unwrap().alias_order(),
            &want[..]
        );
        assert_eq!(
            written(Aliases::Order(want.clone())).alias_order(),
            &want[..]
        );
        let later = want.clone();
        assert_eq!(
            written(Aliases::Later(Box::new(move || Some(later)))).alias_order(),
            &want[..]
        );
        // Not known, or not a pair per alias: the section says so and holds no order.
        assert!(written(Aliases::Later(Box::new(|| None)))
            .alias_order()
            .is_empty());
        assert!(written(Aliases::Order(want[1..].to_vec()))
            .alias_order()
            .is_empty());
        // An alias that does not normalise: no order.
        let bad = [with_aliases(&["pci:v1", "bad]"])];
        let e = [Entry {
            path: b"/x.ko",
            key: key(9),
            data: ModView::Data(&bad[0]),
        }];
        let c = Cache::parse(enc(&e)).unwrap();
        assert!(c.alias_order().is_empty());
        assert!(c.get(b"/x.ko", &key(9)).is_some());
        // A complete section naming an entry the file does not have is malformed.
        let header = HEADER_MIN + CRATE_VERSION.len();
        let bytes = enc(&entries);
        let mut payload = bytes[header..bytes.len() - 8].to_vec();
        let at = payload.len() - 8 * want.len();
        payload[at..at + 4].copy_from_slice(&4u32.to_le_bytes());
        assert_eq!(
            Cache::parse(frame(4, 0, &payload)).err(),
            Some(Rejected::Malformed)
        );
        payload[at..at + 4].copy_from_slice(&3u32.to_le_bytes());
        assert!(Cache::parse(frame(4, 0, &payload)).is_ok());
        payload[at - 5] = 2;
        assert_eq!(
            Cache::parse(frame(4, 0, &payload)).err(),
            Some(Rejected::Malformed)
        );
    }

    #[test]
    fn directory_listings_round_trip() {
        let mut listing = Vec::new();
        push_listing(&mut listing, Kind::Dir, b"net");
        push_listing(&mut listing, Kind::Module, b"a.ko.xz");
        push_listing(&mut listing, Kind::Other, b"link");
        let d = sample();
        let bytes = encode(
            &[Entry {
                path: b"/m/a.ko",
                key: key(1),
                data: ModView::Data(&d),
            }],
            &[
                DirRecord {
                    path: b"/m/kernel",
                    key: key(7),
                    listing: &listing,
                },
                DirRecord {
                    path: b"/m/empty",
                    key: key(8),
                    listing: &[],
                },
            ],
        );
        let c = Cache::parse(bytes.clone()).unwrap();
        assert_eq!((c.len(), c.dir_count()), (1, 2));
        let got = c.listing(b"/m/kernel", &key(7)).unwrap();
        assert_eq!(
            listing_entries(got).collect::<Vec<_>>(),
            vec![
                (Kind::Dir, &b"net"[..]),
                (Kind::Module, &b"a.ko.xz"[..]),
                (Kind::Other, &b"link"[..])
            ]
        );
        assert_eq!(c.listing(b"/m/empty", &key(8)), Some(&[][..]));
        // Only the exact key gives the listing.
        assert_eq!(c.listing(b"/m/kernel", &key(8)), None);
        assert_eq!(c.listing(b"/m/other", &key(7)), None);
        assert!(c.get(b"/m/a.ko", &key(1)).is_some());
        // A listing with an unknown kind, or cut inside an entry, is malformed even
        // under a right checksum (the writer stores a listing as it is given).
        let header = HEADER_MIN + CRATE_VERSION.len();
        let payload = &bytes[header..bytes.len() - 8];
        assert!(Cache::parse(frame(1, 2, payload)).is_ok());
        for bad in [&b"\x03\x01\0\0\0x"[..], b"\x00\x05\0\0\0ab"] {
            let rec = DirRecord {
                path: b"/m/d",
                key: key(1),
                listing: bad,
            };
            assert_eq!(
                Cache::parse(encode(&[], &[rec])).err(),
                Some(Rejected::Malformed)
            );
        }
    }

    #[test]
    fn checksum_lanes_see_every_word() {
        // A change in any word, or the swap of two words in different lanes, is seen.
        let data: Vec<u8> = (0..256u32).map(|i| (i * 13 + 1) as u8).collect();
        let base = checksum(&data);
        for i in 0..data.len() {
            let mut d = data.clone();
            d[i] ^= 1;
            assert_ne!(checksum(&d), base, "byte {i}");
        }
        let mut d = data.clone();
        d.swap(0, 8);
        assert_ne!(checksum(&d), base);
    }

    #[test]
    fn streaming_checksum() {
        let data: Vec<u8> = (0..1000u32).map(|i| (i * 7 + 3) as u8).collect();
        for split in [0, 1, 3, 8, 9, 500, 999, 1000] {
            let mut c = Checksum::new(data.len());
            c.update(&data[..split]);
            for b in data[split..].chunks(5) {
                c.update(b);
            }
            assert_eq!(c.finish(), checksum(&data), "split {split}");
        }
    }

    #[test]
    fn settle_rule() {
        let start = UNIX_EPOCH + Duration::from_secs(1000);
        let mut k = key(1);
        (k.mtime, k.ctime) = (990, 997);
        assert!(k.settled(start));
        k.ctime = 998;
        assert!(!k.settled(start));
        (k.mtime, k.ctime) = (999, 990);
        assert!(!k.settled(start));
    }
}
