//! The binary index: writer, reader, wildcard search, robustness against damaged files.

#![allow(clippy::unwrap_used, clippy::panic)]

use std::collections::BTreeMap;

use modcore::fnmatch::fnmatch;
use modcore::index::{Index, IndexBuilder, IndexError, IndexFile, Layout, Value};
use tests::rng::Rng;

/// The expected content: key -> values in index order, following the value-order rule
/// (a new value goes before the first value with priority >= its own).
type Model = BTreeMap<Vec<u8>, Vec<(u32, Vec<u8>)>>;

fn model_insert(m: &mut Model, key: &[u8], value: &[u8], prio: u32) -> bool {
    let vals = m.entry(key.to_vec()).or_default();
    let dup = vals.iter().any(|(_, v)| v == value);
    let pos = vals
        .iter()
        .position(|(p, _)| *p >= prio)
        .unwrap_or(vals.len());
    vals.insert(pos, (prio, value.to_vec()));
    dup
}

fn random_key(rng: &mut Rng, alphabet: &[u8], max_len: usize) -> Vec<u8> {
    let len = rng.below(max_len + 1);
    (0..len).map(|_| rng.pick(alphabet)).collect()
}

fn owned(values: &[Value<'_>]) -> Vec<(u32, Vec<u8>)> {
    values
        .iter()
        .map(|v| (v.priority, v.value.to_vec()))
        .collect()
}

// ---------------------------------------------------------------------------------------
// The worked example of spec §8.5, assembled by hand from the format description.

fn worked_example() -> IndexBuilder {
    let mut b = IndexBuilder::new();
    for (k, v, p) in [
        ("ask", "A", 0),
        ("ate", "B", 1),
        ("on", "C", 2),
        ("once", "D", 3),
        ("one", "E", 4),
        ("on", "C2", 1),
        ("on", "C0", 2),
    ] {
        assert!(!b.insert(k.as_bytes(), v.as_bytes(), p));
    }
    b
}

struct Asm(Vec<u8>);

impl Asm {
    fn new(root: u32) -> Self {
        let mut a = Asm(vec![0xB0, 0x07, 0xF4, 0x57, 0x00, 0x02, 0x00, 0x01]);
        a.word(root);
        a
    }
    fn word(&mut self, w: u32) -> &mut Self {
        self.0.extend_from_slice(&w.to_be_bytes());
        self
    }
    fn bytes(&mut self, b: &[u8]) -> &mut Self {
        self.0.extend_from_slice(b);
        self
    }
    fn value(&mut self, prio: u32, v: &str) -> &mut Self {
        self.word(prio).bytes(v.as_bytes()).bytes(&[0])
    }
    fn at(&self) -> usize {
        self.0.len()
    }
}

#[test]
fn worked_example_post_order_exact_bytes() {
    let mut a = Asm::new(0x2000_006C);
    assert_eq!(a.at(), 12);
    a.bytes(b"k\0").word(1).value(0, "A"); // "sk" leaf
    assert_eq!(a.at(), 24);
    a.bytes(b"e\0").word(1).value(1, "B"); // "te" leaf
    assert_eq!(a.at(), 36);
    a.bytes(b"st").word(0xC000_000C).word(0xC000_0018); // 'a' node
    assert_eq!(a.at(), 46);
    a.bytes(b"e\0").word(1).value(3, "D"); // "once" leaf
    assert_eq!(a.at(), 58);
    a.word(1).value(4, "E"); // "one" leaf, no prefix
    assert_eq!(a.at(), 68);
    a.bytes(b"n\0ce")
        .word(0xC000_002E)
        .word(0)
        .word(0x4000_003A);
    a.word(3).value(1, "C2").value(2, "C0").value(2, "C"); // "on"
    assert_eq!(a.at(), 108);
    a.bytes(b"ao").word(0x2000_0024);
    for _ in 0..13 {
        a.word(0);
    }
    a.word(0xE000_0044);
    assert_eq!(a.at(), 170);

    let got = worked_example().write(Layout::PostOrder).unwrap();
    assert_eq!(got.len(), 170);
    assert_eq!(&got[8..12], &[0x20, 0x00, 0x00, 0x6C]);
    assert_eq!(got, a.0);
}

#[test]
fn worked_example_pre_order_exact_bytes() {
    let mut a = Asm::new(0x2000_000C);
    a.bytes(b"ao").word(0x2000_004A);
    for _ in 0..13 {
        a.word(0);
    }
    a.word(0xE000_006C);
    assert_eq!(a.at(), 74);
    a.bytes(b"st").word(0xC000_0054).word(0xC000_0060);
    assert_eq!(a.at(), 84);
    a.bytes(b"k\0").word(1).value(0, "A");
    assert_eq!(a.at(), 96);
    a.bytes(b"e\0").word(1).value(1, "B");
    assert_eq!(a.at(), 108);
    a.bytes(b"n\0ce")
        .word(0xC000_0094)
        .word(0)
        .word(0x4000_00A0);
    a.word(3).value(1, "C2").value(2, "C0").value(2, "C");
    assert_eq!(a.at(), 148);
    a.bytes(b"e\0").word(1).value(3, "D");
    assert_eq!(a.at(), 160);
    a.word(1).value(4, "E");
    assert_eq!(a.at(), 170);

    let got = worked_example().write(Layout::PreOrder).unwrap();
    assert_eq!(&got[8..12], &[0x20, 0x00, 0x00, 0x0C]);
    // The root body as spelled out in the spec.
    assert_eq!(&got[12..14], &[0x61, 0x6F]);
    assert_eq!(&got[14..18], &[0x20, 0x00, 0x00, 0x4A]);
    assert_eq!(&got[70..74], &[0xE0, 0x00, 0x00, 0x6C]);
    assert_eq!(got, a.0);
}

#[test]
fn worked_example_reads_back() {
    for layout in [Layout::PostOrder, Layout::PreOrder] {
        let data = worked_example().write(layout).unwrap();
        let idx = Index::new(&data).unwrap();
        let on = idx.get(b"on").unwrap().unwrap();
        let on: Vec<(u32, &[u8])> = on.iter().map(|v| (v.priority, v.value)).collect();
        assert_eq!(on, vec![(1, &b"C2"[..]), (2, b"C0"), (2, b"C")]);
        assert_eq!(idx.get_first(b"once").unwrap().unwrap().value, b"D");
        assert_eq!(idx.get(b"o").unwrap(), None);
        assert_eq!(idx.get(b"a").unwrap(), None);
        assert_eq!(idx.get(b"onc").unwrap(), None);
        assert_eq!(idx.get(b"ones").unwrap(), None);
        let keys: Vec<Vec<u8>> = idx.iter().map(|e| e.unwrap().key).collect();
        let want: Vec<&[u8]> = vec![b"ask", b"ate", b"on", b"once", b"one"];
        assert_eq!(keys, want);
    }
}

// ---------------------------------------------------------------------------------------
// Round trips.

const KEY_ALPHABET: &[u8] = b"abc_:*?[]019-";

fn random_index(rng: &mut Rng, keys: usize, max_len: usize) -> (IndexBuilder, Model) {
    let mut b = IndexBuilder::new();
    let mut m = Model::new();
    let pool: Vec<Vec<u8>> = (0..keys)
        .map(|_| random_key(rng, KEY_ALPHABET, max_len))
        .collect();
    for _ in 0..keys * 2 {
        let key = &pool[rng.below(pool.len())];
        let value = random_key(rng, b"xyz_0123456789", 6);
        let prio = rng.below(8) as u32;
        let dup_b = b.insert(key, &value, prio);
        let dup_m = model_insert(&mut m, key, &value, prio);
        assert_eq!(dup_b, dup_m);
    }
    (b, m)
}

fn check_against_model(data: &[u8], m: &Model) {
    let idx = Index::new(data).unwrap();
    // Every key, exact lookup.
    for (k, vals) in m {
        let got = idx
            .get(k)
            .unwrap()
            .unwrap_or_else(|| panic!("missing key {k:?}"));
        assert_eq!(&owned(&got), vals, "key {k:?}");
        assert_eq!(
            idx.get_first(k).unwrap().map(|v| v.priority),
            Some(vals[0].0)
        );
    }
    // Dump in key order.
    let dumped: Model = idx
        .iter()
        .map(|e| {
            let e = e.unwrap();
            (e.key, owned(&e.values))
        })
        .collect();
    assert_eq!(&dumped, m);
    let mut prev: Option<Vec<u8>> = None;
    idx.for_each(|k, _| {
        if let Some(p) = &prev {
            assert!(p.as_slice() < k);
        }
        prev = Some(k.to_vec());
    })
    .unwrap();
}

#[test]
fn random_round_trips_both_layouts() {
    let mut rng = Rng::new(1);
    for round in 0..60 {
        let keys = 1 + round * 5;
        let (b, m) = random_index(&mut rng, keys, 1 + round % 12);
        assert_eq!(b.key_count(), m.len());
        assert_eq!(b.value_count(), m.values().map(Vec::len).sum::<usize>());
        assert_eq!(
            b.entries(),
            m.iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect::<Vec<_>>()
        );
        let post = b.write(Layout::PostOrder).unwrap();
        let pre = b.write(Layout::PreOrder).unwrap();
        assert_eq!(post.len(), pre.len());
        check_against_model(&post, &m);
        check_against_model(&pre, &m);
        // Keys that are not there.
        let idx = Index::new(&post).unwrap();
        for _ in 0..50 {
            let k = random_key(&mut rng, KEY_ALPHABET, 14);
            assert_eq!(idx.get(&k).unwrap().is_some(), m.contains_key(&k));
        }
    }
}

#[test]
fn rewrite_of_read_index_is_identical() {
    let mut rng = Rng::new(7);
    let (b, _) = random_index(&mut rng, 300, 20);
    for layout in [Layout::PostOrder, Layout::PreOrder] {
        let data = b.write(layout).unwrap();
        assert_eq!(rebuild(&data).write(layout).unwrap(), data);
    }
}

/// Rebuild a builder from an index file: values of a key are inserted in reverse file order,
/// so that among equal priorities the original order is kept.
fn rebuild(data: &[u8]) -> IndexBuilder {
    let idx = Index::new(data).unwrap();
    let mut b = IndexBuilder::new();
    for e in idx.iter() {
        let e = e.unwrap();
        for v in e.values.iter().rev() {
            b.insert(&e.key, v.value, v.priority);
        }
    }
    b
}

#[test]
fn shape_does_not_depend_on_insertion_order() {
    let mut rng = Rng::new(3);
    for round in 0..20 {
        let mut triples: Vec<(Vec<u8>, Vec<u8>, u32)> = (0..(20 + round * 10))
            .map(|i| {
                let k = random_key(&mut rng, KEY_ALPHABET, 10);
                let v = format!("m{i}").into_bytes();
                (k, v, i as u32) // distinct priorities
            })
            .collect();
        let build = |t: &[(Vec<u8>, Vec<u8>, u32)]| {
            let mut b = IndexBuilder::new();
            for (k, v, p) in t {
                b.insert(k, v, *p);
            }
            b
        };
        let reference = build(&triples);
        for _ in 0..3 {
            rng.shuffle(&mut triples);
            let other = build(&triples);
            for layout in [Layout::PostOrder, Layout::PreOrder] {
                assert_eq!(
                    other.write(layout).unwrap(),
                    reference.write(layout).unwrap()
                );
            }
            assert_eq!(other.node_count(), reference.node_count());
        }
    }
}

#[test]
fn canonical_shape_has_no_useless_nodes() {
    // Interior nodes exist only at branch points or key ends.
    let mut b = IndexBuilder::new();
    b.insert(b"abcdef", b"1", 0);
    assert_eq!(b.node_count(), 2); // root + leaf "bcdef" under 'a'
    b.insert(b"abcxyz", b"2", 0);
    assert_eq!(b.node_count(), 4); // root, "bc" branch, "ef" and "yz" leaves
    b.insert(b"abc", b"3", 0);
    assert_eq!(b.node_count(), 4); // value lands on the branch node
    b.insert(b"ab", b"4", 0);
    assert_eq!(b.node_count(), 5); // split "bc" into "b" + "c"-child ""
    let data = b.write(Layout::PostOrder).unwrap();
    let idx = Index::new(&data).unwrap();
    for (k, v) in [("abcdef", "1"), ("abcxyz", "2"), ("abc", "3"), ("ab", "4")] {
        assert_eq!(
            idx.get_first(k.as_bytes()).unwrap().unwrap().value,
            v.as_bytes()
        );
    }
}

#[test]
fn empty_index() {
    let b = IndexBuilder::new();
    assert!(b.is_empty());
    let data = b.write(Layout::PostOrder).unwrap();
    assert_eq!(data.len(), 12);
    let idx = Index::new(&data).unwrap();
    assert_eq!(idx.get(b"").unwrap(), None);
    assert_eq!(idx.get(b"x").unwrap(), None);
    assert!(idx.search_wildcard(b"x").unwrap().is_empty());
    assert_eq!(idx.iter().count(), 0);
}

#[test]
fn empty_key() {
    let mut b = IndexBuilder::new();
    b.insert(b"", b"root", 3);
    b.insert(b"a", b"x", 1);
    let data = b.write(Layout::PostOrder).unwrap();
    let idx = Index::new(&data).unwrap();
    assert_eq!(idx.get_first(b"").unwrap().unwrap().value, b"root");
    assert_eq!(idx.search_wildcard(b"").unwrap().len(), 1);
    let keys: Vec<Vec<u8>> = idx.iter().map(|e| e.unwrap().key).collect();
    assert_eq!(keys, vec![b"".to_vec(), b"a".to_vec()]);
}

// ---------------------------------------------------------------------------------------
// Wildcard search.

/// All values of keys matching `name` by plain fnmatch, as a sorted multiset.
fn brute_force(m: &Model, name: &[u8]) -> Vec<(u32, Vec<u8>)> {
    let mut out: Vec<(u32, Vec<u8>)> = m
        .iter()
        .filter(|(k, _)| fnmatch(k, name))
        .flat_map(|(_, v)| v.iter().cloned())
        .collect();
    out.sort();
    out
}

#[test]
fn wildcard_search_matches_brute_force() {
    let mut rng = Rng::new(11);
    // Keys are patterns; no backslashes (kmod compares the part before the first wildcard
    // literally, which differs from fnmatch only for escapes).
    let key_alphabet: &[u8] = b"ab:*?[]!-0";
    let name_alphabet: &[u8] = b"ab:]!-0";
    for round in 0..40 {
        let mut b = IndexBuilder::new();
        let mut m = Model::new();
        for i in 0..(10 + round * 8) {
            let k = random_key(&mut rng, key_alphabet, 8);
            let v = format!("m{i}").into_bytes();
            let p = rng.below(5) as u32;
            b.insert(&k, &v, p);
            model_insert(&mut m, &k, &v, p);
        }
        for layout in [Layout::PostOrder, Layout::PreOrder] {
            let data = b.write(layout).unwrap();
            let idx = Index::new(&data).unwrap();
            for _ in 0..40 {
                let name = random_key(&mut rng, name_alphabet, 8);
                let got = idx.search_wildcard(&name).unwrap();
                assert!(got.windows(2).all(|w| w[0].priority <= w[1].priority));
                let mut got = owned(&got);
                got.sort();
                assert_eq!(got, brute_force(&m, &name), "name {name:?}");
            }
        }
    }
}

#[test]
fn wildcard_search_order_follows_kmod() {
    let mut b = IndexBuilder::new();
    b.insert(b"pci:v*d*", b"generic", 5);
    b.insert(b"pci:v00001234d*", b"specific", 2);
    b.insert(b"pci:v00001234d00005678", b"exact", 9);
    b.insert(b"pci:v0000123?d*", b"question", 5);
    b.insert(b"pci:v0000123[0-9]d*", b"bracket", 5);
    b.insert(b"pci:v0000123[!0-9]d*", b"nomatch", 0);
    b.insert(b"usb:*", b"usb", 1);
    for layout in [Layout::PostOrder, Layout::PreOrder] {
        let data = b.write(layout).unwrap();
        let idx = Index::new(&data).unwrap();
        let got: Vec<&[u8]> = idx
            .search_wildcard(b"pci:v00001234d00005678")
            .unwrap()
            .iter()
            .map(|v| v.value)
            .collect();
        // Priority 5 ties: the walk meets `*` (generic), then `?`, then `[`; a later find goes
        // first.
        let want: Vec<&[u8]> = vec![b"specific", b"bracket", b"question", b"generic", b"exact"];
        assert_eq!(got, want);
    }
}

// ---------------------------------------------------------------------------------------
// Damaged and hostile files.

fn exercise(data: &[u8]) {
    let Ok(idx) = Index::new(data) else {
        return;
    };
    for k in [&b""[..], b"a", b"ab", b"abc_", b"ba:*", b"a:b:c", b"0123"] {
        let _ = idx.get(k);
        let _ = idx.get_first(k);
        let _ = idx.search_wildcard(k);
    }
    let mut n = 0;
    for e in idx.iter() {
        n += 1;
        if e.is_err() {
            break;
        }
        assert!(n <= data.len() + 1, "iteration does not end");
    }
    let _ = idx.for_each(|_, _| {});
}

fn small_index(layout: Layout) -> Vec<u8> {
    let mut rng = Rng::new(5);
    let mut b = IndexBuilder::new();
    for i in 0..24 {
        let k = random_key(&mut rng, b"ab:*_", 5);
        b.insert(&k, format!("v{i}").as_bytes(), rng.below(4) as u32);
    }
    b.write(layout).unwrap()
}

#[test]
fn truncations_never_panic() {
    for layout in [Layout::PostOrder, Layout::PreOrder] {
        let data = small_index(layout);
        for len in 0..data.len() {
            exercise(&data[..len]);
        }
    }
}

#[test]
fn bit_flips_never_panic() {
    for layout in [Layout::PostOrder, Layout::PreOrder] {
        let data = small_index(layout);
        let mut copy = data.clone();
        for i in 0..data.len() {
            for bit in 0..8 {
                copy[i] ^= 1 << bit;
                exercise(&copy);
                copy[i] = data[i];
            }
        }
    }
}

#[test]
fn random_garbage_never_panics() {
    let mut rng = Rng::new(99);
    for _ in 0..2000 {
        let len = 12 + rng.below(200);
        let mut d: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
        d[..8].copy_from_slice(&[0xB0, 0x07, 0xF4, 0x57, 0, 2, 0, 1]);
        // Point references into the file often enough to get somewhere.
        let root = (12 + rng.below(len - 11)) as u32 | ((rng.next_u64() as u32) & 0xF000_0000);
        d[8..12].copy_from_slice(&root.to_be_bytes());
        exercise(&d);
    }
}

#[test]
fn header_errors() {
    let good = small_index(Layout::PostOrder);
    assert!(matches!(
        Index::new(&[]),
        Err(IndexError::TooShort { len: 0 })
    ));
    assert!(matches!(
        Index::new(&good[..11]),
        Err(IndexError::TooShort { .. })
    ));
    let mut bad = good.clone();
    bad[0] = 0xB1;
    assert!(matches!(Index::new(&bad), Err(IndexError::BadMagic { .. })));
    let mut bad = good.clone();
    bad[5] = 3;
    assert!(matches!(
        Index::new(&bad),
        Err(IndexError::BadVersion { .. })
    ));
    // Only the major version is checked.
    let mut minor = good.clone();
    minor[7] = 9;
    assert!(Index::new(&minor).is_ok());
    // A root outside the file.
    let mut bad = good.clone();
    bad[8..12].copy_from_slice(&0x2FFF_FFFFu32.to_be_bytes());
    assert!(matches!(Index::new(&bad), Err(IndexError::Corrupt { .. })));
    // A root pointing into the header.
    let mut bad = good;
    bad[8..12].copy_from_slice(&0x2000_0004u32.to_be_bytes());
    assert!(matches!(Index::new(&bad), Err(IndexError::Corrupt { .. })));
}

#[test]
fn shared_subtrees_do_not_explode() {
    // 40 nodes, each with children '*' and 'a' both pointing at the next node: 2^40 paths.
    let mut d = vec![0xB0, 0x07, 0xF4, 0x57, 0, 2, 0, 1, 0x20, 0, 0, 12];
    let node_len = 2 + 4 * (usize::from(b'a' - b'*') + 1);
    let count = 40;
    for i in 0..count {
        let next = 12 + (i + 1) * node_len;
        let flags = if i + 1 == count {
            0x4000_0000
        } else {
            0x2000_0000
        };
        d.push(b'*');
        d.push(b'a');
        for c in b'*'..=b'a' {
            let w = if c == b'*' || c == b'a' {
                next as u32 | flags
            } else {
                0
            };
            d.extend_from_slice(&w.to_be_bytes());
        }
    }
    // The last node: one value.
    d.extend_from_slice(&1u32.to_be_bytes());
    d.extend_from_slice(&0u32.to_be_bytes());
    d.extend_from_slice(b"v\0");
    let idx = Index::new(&d).unwrap();
    assert!(idx.iter().any(|e| e.is_err()));
    assert!(idx.search_wildcard(b"aaaa").is_err());
    // An exact walk only follows one path.
    let key = vec![b'a'; count];
    assert_eq!(idx.get_first(&key).unwrap().unwrap().value, b"v");
}

#[test]
fn huge_value_count_is_an_error() {
    let mut d = vec![0xB0, 0x07, 0xF4, 0x57, 0, 2, 0, 1, 0x40, 0, 0, 12];
    d.extend_from_slice(&u32::MAX.to_be_bytes());
    d.extend_from_slice(&[0, 0, 0, 0, b'x', 0]);
    assert!(Index::new(&d).is_err());
}

// ---------------------------------------------------------------------------------------
// Files.

#[test]
fn index_file_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("modules.dep.bin");
    std::fs::write(&path, worked_example().write(Layout::PostOrder).unwrap()).unwrap();
    let f = IndexFile::open(&path).unwrap();
    assert_eq!(f.index().get_first(b"ate").unwrap().unwrap().value, b"B");

    let empty = dir.path().join("empty.bin");
    std::fs::write(&empty, b"").unwrap();
    assert!(matches!(
        IndexFile::open(&empty),
        Err(IndexError::TooShort { len: 0 })
    ));
    let missing = dir.path().join("missing.bin");
    match IndexFile::open(&missing) {
        Err(IndexError::Io { path, source }) => {
            assert_eq!(path, missing);
            assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn large_index_is_fast_enough() {
    // About the size of a full alias index.
    let mut rng = Rng::new(42);
    let mut b = IndexBuilder::new();
    for i in 0..30_000u32 {
        let mut k = b"pci:v0000".to_vec();
        k.extend((0..4).map(|_| rng.pick(b"0123456789ABCDEF")));
        k.extend_from_slice(b"d0000");
        k.extend((0..4).map(|_| rng.pick(b"0123456789ABCDEF")));
        k.extend_from_slice(b"sv*sd*bc*sc*i*");
        b.insert(&k, format!("mod{}", i % 3000).as_bytes(), i % 3000);
    }
    let data = b.write(Layout::PostOrder).unwrap();
    let idx = Index::new(&data).unwrap();
    assert_eq!(idx.iter().count(), b.key_count());
    let r = idx
        .search_wildcard(b"pci:v00001234d00005678sv00000000sd00000000bc02sc00i00")
        .unwrap();
    assert!(r.len() <= 30_000);
}

/// Opportunistic check against real kmod output: set `KMOD_INDEX_DIR` to a directory of
/// `.bin` files written by kmod 30 (post-order). Each is read and re-written; the bytes must
/// be identical.
#[test]
fn real_indexes_rewrite_identically() {
    let Some(dir) = std::env::var_os("KMOD_INDEX_DIR") else {
        return;
    };
    let mut checked = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("bin") {
            continue;
        }
        let data = std::fs::read(&path).unwrap();
        if data.is_empty() {
            continue;
        }
        let rebuilt = rebuild(&data);
        assert_eq!(
            rebuilt.write(Layout::PostOrder).unwrap(),
            data,
            "{}",
            path.display()
        );
        let pre = rebuilt.write(Layout::PreOrder).unwrap();
        assert_eq!(pre.len(), data.len());
        checked += 1;
    }
    assert!(checked > 0);
}
