//! Outputs known to be up to date: a run whose outputs' inputs are exactly those of the
//! run that made the files in place, and which finds those very files still there, need
//! not make them again.
//!
//! Every output but modules.dep is a function of a few inputs: the modules in module
//! order (name, path as written, and their data: `.modinfo` entries, exports, needs),
//! modules.builtin and modules.builtin.modinfo, the options that shape the files (index
//! layout, `-P` prefix, duplicate warnings) and the program itself. A run sums all of
//! them into a [`Fingerprint`]; each module's data enters as its `cache::data_hash`
//! (stored in the cache for unchanged modules, worked out for those read afresh, so a
//! module touched or rebuilt without any change to what depmod takes from it counts as
//! unchanged). The program enters as the stat key of its executable: a new build never
//! trusts what an older one made.
//!
//! After a run that made the outputs (without a warning: their diagnostics must be seen
//! again by the next run) the fingerprint and each output's stat key (taken from the file
//! the run renamed into place, or found holding its bytes, through its own descriptor:
//! not from whatever a concurrent run may have renamed over it since) are kept in
//! [`RECORD_FILE`] beside the cache. A later run with the same
//! fingerprint that finds every output with its recorded key (same inode, size, mtime
//! and ctime: any write, rename over it, `chmod`, `chown` or link moves ctime, which
//! cannot be set from user space) leaves them as they are, and modules.dep as well, its
//! contents checked against the hash the record keeps of it (so that the dependency graph
//! need not be worked out either, unless `-v` prints its edges) and its time set to now
//! (`depmod -A` reads its mtime; rewritten instead if it is not exactly what a rewrite
//! would leave).
//!
//! The record is written like the cache (temporary file and rename, not synced,
//! checksummed) and ignored when missing, corrupt or written by another build; a run
//! without the cache neither reads nor writes it. After a crash it can only be older
//! than the files or missing: files it does not describe have other keys, and are made.
//!
//! A run whose fingerprint differs still leaves alone the outputs that depend on only
//! part of the inputs when that part is unchanged: the record keeps, for each file, the
//! sum of the inputs it was made from ([`Record::files`]). modules.builtin.bin and
//! modules.builtin.alias.bin are made from one builtin list each; modules.symbols from
//! the symbols modules own (each name and its owner's name, known once the dependency
//! graph is worked out); modules.alias from the modules that have aliases (each one's
//! name and data hash, in module order); and the two indexes from the same as their text
//! files plus each module's place in module order (their values' priority). Adding a
//! module that owns no symbol leaves the symbol files as they are, one without aliases
//! the alias files (at the end of module order, as a module modules.order does not list
//! goes); the builtin indexes change only with their lists. Every other file's inputs
//! are the whole fingerprint.
//!
//! What a key cannot tell: an output rewritten in place, with the same size, within the
//! file system's timestamp granularity of the recording run's rename (the same clock
//! tick, a few milliseconds on ext4). Depmod tools (ours, kmod's) only ever replace the
//! outputs by rename, which gives a new inode; the module files, which build tools do
//! rewrite in place, get the cache's `SETTLE` rule instead.
//!
//! Format (little-endian): magic "KMODRS-DEPMOD-OUTPUTS\n", format u32, crate version
//! (u32 length, bytes), fingerprint u64, modules.dep hash u64, file count u32, (name
//! length u32, name, inputs u64, key 7 x u64)*, checksum u64 (`cache::checksum` of
//! everything before it).

use super::cache::FileKey;
use std::io::Write;
use std::path::Path;

/// The record's name in the output directory.
pub const RECORD_FILE: &str = "modules.depmod.outputs";

const MAGIC: &[u8; 22] = b"KMODRS-DEPMOD-OUTPUTS\n";
const FORMAT: u32 = 3;
const CRATE_VERSION: &str = env!("CARGO_PKG_VERSION");
/// No real record comes near this (a dozen names and keys).
const MAX_RECORD_LEN: u64 = 1 << 16;

/// The sum of every input of the outputs (see the module documentation). Fed field by
/// field, each length-prefixed, so that no two different sequences of fields give the
/// same stream (laid out in one buffer and summed at the end: many small fields).
#[derive(Clone)]
pub struct Fingerprint(Vec<u8>);

impl Default for Fingerprint {
    fn default() -> Self {
        let mut f = Fingerprint(Vec::with_capacity(64 << 10));
        f.bytes(MAGIC);
        f
    }
}

impl Fingerprint {
    pub fn bytes(&mut self, b: &[u8]) {
        self.0.extend_from_slice(&(b.len() as u64).to_le_bytes());
        self.0.extend_from_slice(b);
    }

    pub fn u64(&mut self, v: u64) {
        self.bytes(&v.to_le_bytes());
    }

    pub fn key(&mut self, k: &FileKey) {
        for w in k.words() {
            self.u64(w);
        }
    }

    pub fn finish(self) -> u64 {
        super::cache::checksum(&self.0)
    }
}

/// What a run that made the outputs recorded about them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub fingerprint: u64,
    /// The `cache::checksum` of the modules.dep made (every run moves that file's time,
    /// so it has no lasting key: an up-to-date run checks its contents against this and
    /// leaves it in place with its time set to now, or writes it again as it finds it).
    pub dep_hash: u64,
    /// Each output (by name), the sum of the inputs it was made from (see the module
    /// documentation), and its stat key.
    pub files: Vec<(String, u64, FileKey)>,
}

impl Record {
    /// The record's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(128 + 80 * self.files.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&FORMAT.to_le_bytes());
        put_sized(&mut out, CRATE_VERSION.as_bytes());
        out.extend_from_slice(&self.fingerprint.to_le_bytes());
        out.extend_from_slice(&self.dep_hash.to_le_bytes());
        out.extend_from_slice(&(self.files.len() as u32).to_le_bytes());
        for (name, inputs, key) in &self.files {
            put_sized(&mut out, name.as_bytes());
            out.extend_from_slice(&inputs.to_le_bytes());
            for w in key.words() {
                out.extend_from_slice(&w.to_le_bytes());
            }
        }
        let sum = super::cache::checksum(&out);
        out.extend_from_slice(&sum.to_le_bytes());
        out
    }

    /// A record from its bytes; `None` unless well-formed, of this format and build, and
    /// checked out by its checksum.
    pub fn parse(data: &[u8]) -> Option<Record> {
        let body_len = data.len().checked_sub(8)?;
        let (body, sum) = data.split_at(body_len);
        if super::cache::checksum(body) != u64::from_le_bytes(sum.try_into().ok()?) {
            return None;
        }
        let mut r = body;
        if take(&mut r, MAGIC.len())? != MAGIC || u32_of(&mut r)? != FORMAT {
            return None;
        }
        if sized(&mut r)? != CRATE_VERSION.as_bytes() {
            return None;
        }
        let fingerprint = u64_of(&mut r)?;
        let dep_hash = u64_of(&mut r)?;
        let n = u32_of(&mut r)? as usize;
        // Each file takes at least 68 bytes: a corrupt count allocates nothing much.
        if n > r.len() / 68 {
            return None;
        }
        let mut files = Vec::with_capacity(n);
        for _ in 0..n {
            let name = String::from_utf8(sized(&mut r)?.to_vec()).ok()?;
            let inputs = u64_of(&mut r)?;
            let mut w = [0u64; 7];
            for x in &mut w {
                *x = u64_of(&mut r)?;
            }
            files.push((name, inputs, FileKey::from_words(w)));
        }
        r.is_empty().then_some(Record {
            fingerprint,
            dep_hash,
            files,
        })
    }

    /// Does this record describe exactly `names` in `dir`, under `fingerprint`, each file
    /// still there with its recorded key (not followed if it is a link)?
    pub fn holds(&self, fingerprint: u64, dir: &Path, names: &[&str]) -> bool {
        self.fingerprint == fingerprint
            && self.files.len() == names.len()
            && self.files.iter().zip(names).all(|((name, _, key), want)| {
                name == want && stat_key(&dir.join(name)).is_some_and(|k| k == *key)
            })
    }

    /// The key of output `name` in `dir` when this record says it was made from
    /// `inputs` and the file still has the key it recorded (not followed if it is a
    /// link): the file can be left as it is.
    pub fn kept(&self, dir: &Path, name: &str, inputs: u64) -> Option<FileKey> {
        let (_, _, key) = self
            .files
            .iter()
            .find(|(n, i, _)| n == name && *i == inputs)?;
        stat_key(&dir.join(name)).filter(|k| k == key)
    }
}

/// The stat key of `path`, not following a link.
pub fn stat_key(path: &Path) -> Option<FileKey> {
    std::fs::symlink_metadata(path)
        .ok()
        .map(|m| FileKey::of(&m))
}

/// The record in `dir`, if there is a usable one.
pub fn load(dir: &Path) -> Option<Record> {
    let path = dir.join(RECORD_FILE);
    let meta = std::fs::symlink_metadata(&path).ok()?;
    if !meta.is_file() || meta.len() > MAX_RECORD_LEN {
        return None;
    }
    Record::parse(&std::fs::read(&path).ok()?)
}

/// Write `record` into `dir` (see the module documentation), replacing the one there.
pub fn store(dir: &Path, record: &Record) -> Result<(), crate::fsio::WriteError> {
    let bytes = record.encode();
    let prepared = crate::fsio::prepare_checked_with(
        dir,
        RECORD_FILE,
        &crate::fsio::temp_suffix(),
        |w: &mut dyn Write| w.write_all(&bytes),
    )?;
    prepared.commit_holding().map(drop)
}

fn put_sized(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u32).to_le_bytes());
    out.extend_from_slice(b);
}

fn take<'a>(r: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
    if r.len() < n {
        return None;
    }
    let (a, b) = r.split_at(n);
    *r = b;
    Some(a)
}

fn u32_of(r: &mut &[u8]) -> Option<u32> {
    Some(u32::from_le_bytes(take(r, 4)?.try_into().ok()?))
}

fn u64_of(r: &mut &[u8]) -> Option<u64> {
    Some(u64::from_le_bytes(take(r, 8)?.try_into().ok()?))
}

fn sized<'a>(r: &mut &'a [u8]) -> Option<&'a [u8]> {
    let n = u32_of(r)? as usize;
    take(r, n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> Record {
        let key = |n: u64| FileKey {
            dev: 1,
            ino: n,
            size: 10 * n,
            mtime: 5,
            mtime_nsec: 6,
            ctime: 7,
            ctime_nsec: 8,
        };
        Record {
            fingerprint: 0x1234_5678_9abc_def0,
            dep_hash: 42,
            files: vec![
                ("modules.alias".into(), 3, key(1)),
                ("modules.softdep".into(), 4, key(2)),
            ],
        }
    }

    #[test]
    fn records_round_trip() {
        let r = record();
        assert_eq!(Record::parse(&r.encode()), Some(r));
    }

    #[test]
    fn damaged_records_are_refused() {
        let bytes = record().encode();
        for i in 0..bytes.len() {
            let mut d = bytes.clone();
            d[i] ^= 0x40;
            assert_eq!(Record::parse(&d), None, "byte {i} flipped");
        }
        for n in 0..bytes.len() {
            assert_eq!(Record::parse(&bytes[..n]), None, "cut at {n}");
        }
    }

    #[test]
    fn fingerprints_tell_field_boundaries_apart() {
        let f = |parts: &[&[u8]]| {
            let mut f = Fingerprint::default();
            parts.iter().for_each(|p| f.bytes(p));
            f.finish()
        };
        assert_eq!(f(&[b"ab", b"c"]), f(&[b"ab", b"c"]));
        assert_ne!(f(&[b"ab", b"c"]), f(&[b"a", b"bc"]));
        assert_ne!(f(&[b"ab"]), f(&[b"ab", b""]));
    }

    #[test]
    fn a_record_holds_only_for_its_fingerprint_and_files() {
        let dir = std::env::temp_dir().join(format!("kmodrs-uptodate-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("a"), b"one").unwrap();
        std::fs::write(dir.join("b"), b"two").unwrap();
        let r = Record {
            fingerprint: 9,
            dep_hash: 0,
            files: vec![
                ("a".into(), 1, stat_key(&dir.join("a")).unwrap()),
                ("b".into(), 2, stat_key(&dir.join("b")).unwrap()),
            ],
        };
        assert!(r.holds(9, &dir, &["a", "b"]));
        assert!(r.kept(&dir, "a", 1).is_some() && r.kept(&dir, "b", 2).is_some());
        assert!(r.kept(&dir, "a", 2).is_none(), "other inputs");
        assert!(r.kept(&dir, "c", 1).is_none(), "a file not recorded");
        assert!(!r.holds(8, &dir, &["a", "b"]), "other fingerprint");
        assert!(!r.holds(9, &dir, &["a"]), "other set of files");
        assert!(!r.holds(9, &dir, &["b", "a"]), "other order");
        // Rewritten in place, same size: ctime moves even if mtime is put back.
        let mtime = std::fs::metadata(dir.join("b"))
            .unwrap()
            .modified()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(dir.join("b"), b"TWO").unwrap();
        std::fs::File::options()
            .write(true)
            .open(dir.join("b"))
            .unwrap()
            .set_modified(mtime)
            .unwrap();
        assert!(!r.holds(9, &dir, &["a", "b"]), "a rewritten file");
        assert!(
            r.kept(&dir, "b", 2).is_none(),
            "a rewritten file is not kept"
        );
        assert!(r.kept(&dir, "a", 1).is_some());
        std::fs::remove_file(dir.join("a")).unwrap();
        assert!(!r.holds(9, &dir, &["a", "b"]), "a missing file");
        assert!(r.kept(&dir, "a", 1).is_none(), "a missing file is not kept");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
