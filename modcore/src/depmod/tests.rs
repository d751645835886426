//! Unit tests for the pure depmod steps, on hand-made ModuleData (no files).

use super::graph::*;
use super::output::*;
use super::view::ModView;
use crate::diag::{Collect, Level};
use crate::index::Layout;
use crate::module::{Export, ModuleData, Need};

fn m(exports: &[&str], needs: &[(&str, bool)], info: &[(&str, &str)]) -> ModuleData {
    ModuleData {
        modinfo: info
            .iter()
            .map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec()))
            .collect(),
        exports: exports
            .iter()
            .map(|e| Export {
                name: e.as_bytes().to_vec(),
                crc: 0,
            })
            .collect(),
        needs: needs
            .iter()
            .map(|(n, weak)| Need {
                name: n.as_bytes().to_vec(),
                crc: 0,
                weak: *weak,
            })
            .collect(),
    }
}

#[test]
fn order_file_parsing() {
    assert_eq!(
        parse_order(b"a.ko\nb.ko\n"),
        OrderFile::Lines(vec![&b"a.ko"[..], b"b.ko"])
    );
    assert_eq!(parse_order(b"a.ko\nb.ko"), OrderFile::Corrupt { lineno: 2 });
    let long = vec![b'x'; 4095];
    let mut data = long.clone();
    data.push(b'\n');
    assert_eq!(parse_order(&data), OrderFile::Corrupt { lineno: 1 });
    let mut ok = vec![b'x'; 4094];
    ok.push(b'\n');
    assert!(matches!(parse_order(&ok), OrderFile::Lines(_)));
    assert_eq!(parse_order(b""), OrderFile::Lines(vec![]));
}

#[test]
fn module_order_last_listing_wins_and_unlisted_keep_hash_order() {
    let names: Vec<&[u8]> = vec![b"a", b"b", b"c", b"d"];
    let stems: Vec<Option<&[u8]>> = vec![Some(b"k/a.ko"), Some(b"k/b.ko"), Some(b"k/c.ko"), None];
    let hash = hash_order(&names, MODULE_BUCKETS);
    // No order file: pure hash order.
    assert_eq!(module_order(&names, &stems, &OrderFile::Missing), hash);
    // c listed twice: its last listing (after a) decides.
    let order = OrderFile::Lines(vec![&b"k/c.ko"[..], b"k/a.ko", b"bogus", b"k/c.ko"]);
    let got = module_order(&names, &stems, &order);
    assert_eq!(&got[..2], &[0, 2]);
    let rest: Vec<usize> = hash.iter().copied().filter(|&i| i == 1 || i == 3).collect();
    assert_eq!(&got[2..], &rest[..]);
}

#[test]
fn hash_order_is_bucket_then_bytes() {
    let keys: Vec<&[u8]> = vec![b"zeta", b"alpha", b"fat", b"msdos", b"vfat"];
    let order = hash_order(&keys, 512);
    let buckets: Vec<(u32, &[u8])> = order
        .iter()
        .map(|&i| (crate::hash::superfast_hash(keys[i]) & 511, keys[i]))
        .collect();
    let mut sorted = buckets.clone();
    sorted.sort();
    assert_eq!(buckets, sorted);
}

/// Resolution without any option (a static: the graph borrows from its options).
static NO_OPTIONS: ResolveOptions = ResolveOptions {
    prefix: None,
    kernel_symbols: None,
    errsyms: false,
    check_crcs: false,
    edges: false,
};

fn build<'a>(mods: &'a [ModuleData], opts: &'a ResolveOptions) -> (DepGraph<'a>, Vec<Event>) {
    let refs: Vec<ModView<'a>> = mods.iter().map(ModView::Data).collect();
    let mut ev = Vec::new();
    let g = DepGraph::build(&refs, opts, &mut ev);
    (g, ev)
}

#[test]
fn last_exporter_wins_and_edges_in_discovery_order() {
    let mods = vec![
        m(
            &[],
            &[
                ("b_sym", false),
                ("c_sym", false),
                ("b_sym2", false),
                ("kernel", false),
            ],
            &[],
        ),
        m(&["b_sym", "b_sym2", "dup"], &[("c_sym", true)], &[]),
        m(&["c_sym", "dup"], &[], &[]),
    ];
    let (_, quiet) = build(&mods, &NO_OPTIONS);
    assert!(quiet.is_empty(), "edges are events only with -v: {quiet:?}");
    let verbose = ResolveOptions {
        edges: true,
        ..ResolveOptions::default()
    };
    let (g, ev) = build(&mods, &verbose);
    assert_eq!(g.deps(0), &[1, 2]);
    assert_eq!(g.deps(1), &[2], "weak symbols create edges");
    assert_eq!(g.symbol_owner(b"dup"), Some(Some(2)));
    assert_eq!(
        ev.iter()
            .filter(|e| matches!(e, Event::Edge { .. }))
            .count(),
        3
    );
    let topo = g.topo().expect("acyclic");
    assert!(topo[0] < topo[1] && topo[1] < topo[2]);
    let mut scratch = Vec::new();
    assert_eq!(g.closure(0, &topo, &mut scratch), vec![1, 2]);
}

#[test]
fn lifo_topological_numbering() {
    // Modules 0,1 unused; 0 needs 2 and 3. Stack: push 0, 1; pop 1 -> 0; pop 0 -> 1,
    // then 2 and 3 pushed in discovery order; 3 popped first.
    let mods = vec![
        m(&[], &[("s2", false), ("s3", false)], &[]),
        m(&[], &[], &[]),
        m(&["s2"], &[], &[]),
        m(&["s3"], &[], &[]),
    ];
    let (g, _) = build(&mods, &NO_OPTIONS);
    assert_eq!(g.topo().expect("acyclic"), vec![1, 0, 3, 2]);
}

#[test]
fn cycles_are_reported_once_each() {
    let mods = vec![
        m(&["x1"], &[("x2", false)], &[]),
        m(&["x2"], &[("x1", false)], &[]),
        m(&["la"], &[("lb", false)], &[]),
        m(&["lb"], &[("lc", false)], &[]),
        m(&["lc"], &[("la", false), ("free", false)], &[]),
        m(&["free"], &[], &[]),
        m(&[], &[("x1", false)], &[]),
    ];
    let (g, _) = build(&mods, &NO_OPTIONS);
    let stalled = g.topo().expect_err("cyclic");
    let (cycles, count) = g.cycles(&stalled);
    assert_eq!(cycles, vec![vec![0, 1, 0], vec![2, 3, 4, 2]]);
    assert_eq!(count, 5);
}

#[test]
fn self_edge_is_a_cycle() {
    let mods = vec![m(&["s"], &[("s", false)], &[])];
    let (g, _) = build(&mods, &NO_OPTIONS);
    let stalled = g.topo().expect_err("cyclic");
    assert_eq!(g.cycles(&stalled), (vec![vec![0, 0]], 1));
}

#[test]
fn prefix_and_kernel_symbols() {
    let mods = vec![
        m(
            &["_exp"],
            &[
                ("_exp2", false),
                ("_missing", false),
                ("_weakmiss", true),
                (".printk", false),
            ],
            &[],
        ),
        m(&["_exp2"], &[], &[]),
    ];
    let opts = ResolveOptions {
        prefix: Some(b'_'),
        kernel_symbols: Some(vec![(b"printk".to_vec(), 7)]),
        errsyms: true,
        check_crcs: true,
        edges: true,
    };
    let (g, ev) = build(&mods, &opts);
    assert_eq!(g.deps(0), &[1]);
    assert!(g.symbol_owner(b"exp").is_some());
    let unknown: Vec<_> = ev
        .iter()
        .filter_map(|e| match e {
            Event::Unknown { symbol, .. } => Some(symbol.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(unknown, vec![b"_missing".to_vec()]);
    let badcrc: Vec<_> = ev
        .iter()
        .filter_map(|e| match e {
            Event::BadCrc { symbol, .. } => Some(symbol.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(badcrc, vec![b".printk".to_vec()]);
}

#[test]
fn text_outputs() {
    let mods = vec![
        m(
            &["fat_sym"],
            &[],
            &[
                ("alias", "fs-fat"),
                ("alias", "devname:fatdev"),
                ("alias", "char-major-10-99-x"),
                ("softdep", "pre: nls"),
                ("weakdep", "w"),
            ],
        ),
        m(
            &[],
            &[("fat_sym", false)],
            &[
                ("alias", "pci:v*d[0-9]-x*"),
                ("alias", "bad]"),
                ("alias", "devname:only"),
            ],
        ),
    ];
    let (g, _) = build(&mods, &NO_OPTIONS);
    let topo = g.topo().expect("acyclic");
    let outs = [
        OutModule {
            modname: b"fat",
            path: b"kernel/fs/fat.ko",
            data: ModView::Data(&mods[0]),
        },
        OutModule {
            modname: b"msdos",
            path: b"kernel/fs/msdos.ko",
            data: ModView::Data(&mods[1]),
        },
    ];
    let o = Outputs::new(&outs, &g, &topo, Layout::PostOrder, false);
    let lines = o.dep_lines();
    assert_eq!(
        ModuleOutputs::modules_dep(&lines),
        b"kernel/fs/fat.ko:\nkernel/fs/msdos.ko: kernel/fs/fat.ko\n"
    );
    assert_eq!(
        String::from_utf8(o.modules_alias()).expect("ascii"),
        "# Aliases extracted from modules themselves.\nalias fs-fat fat\nalias devname:fatdev fat\n\
         alias char-major-10-99-x fat\nalias pci:v*d[0-9]-x* msdos\nalias bad] msdos\nalias devname:only msdos\n"
    );
    assert_eq!(
        o.modules_softdep(),
        b"# Soft dependencies extracted from modules themselves.\nsoftdep fat pre: nls\n"
    );
    assert_eq!(
        o.modules_weakdep(),
        b"# Weak dependencies extracted from modules themselves.\nweakdep fat w\n"
    );
    assert_eq!(
        o.modules_symbols(),
        b"# Aliases for symbols, used by symbol_request().\nalias symbol:fat_sym fat\n"
    );
    let mut sink = Collect::default();
    assert_eq!(
        o.modules_devname(&mut sink),
        b"# Device nodes to trigger on-demand module loading.\nfat fatdev c10:99\n"
    );
    assert_eq!(
        sink.at(Level::Error).collect::<Vec<_>>(),
        vec!["Module 'msdos' has devname (only) but lacks major and minor information. Ignoring."]
    );
    let mut sink = Collect::default();
    let _ = o.modules_alias_bin(&mut sink);
    assert_eq!(
        sink.at(Level::Warning).collect::<Vec<_>>(),
        vec!["Unmatched bracket in bad]"]
    );
}

#[test]
fn builtin_modinfo_quirks() {
    // m1.alias=foo, a record without '=' swallows the next record, m3.alias=foo, and a
    // last record without NUL is dropped.
    let data = b"m1.alias=foo\0m2.noequals\0m2.alias=swallowed\0m3.alias=foo\0m4.alias=last";
    let mut sink = Collect::default();
    let bin = builtin_alias_bin(data, Layout::PostOrder, &mut sink).expect("ascii");
    let idx = crate::index::Index::new(&bin).expect("valid index");
    let vals: Vec<Vec<u8>> = idx
        .get(b"foo")
        .expect("readable")
        .expect("present")
        .iter()
        .map(|v| v.value.to_vec())
        .collect();
    assert_eq!(vals, vec![b"m3".to_vec(), b"m1".to_vec()]);
    assert!(idx.get(b"swallowed").expect("readable").is_none());
    assert!(idx.get(b"last").expect("readable").is_none());
}

#[test]
fn builtin_lines() {
    let mut sink = Collect::default();
    let bin = builtin_bin(
        b"kernel/fs/ext4.ko\n_bad\nnodot\n",
        Layout::PostOrder,
        &mut sink,
    )
    .expect("ascii");
    let idx = crate::index::Index::new(&bin).expect("valid index");
    assert!(idx.get(b"ext4").expect("readable").is_some());
    assert!(idx.get(b"nodot\n").expect("readable").is_some());
    assert_eq!(
        sink.at(Level::Error).collect::<Vec<_>>(),
        vec!["Invalid modules.builtin line: _bad\n"]
    );
}

/// Every module read from one cache file, except those at `fresh` (taken as read from
/// their files): what a run with a cache resolves by name id.
fn cached_views(mods: &[ModuleData], fresh: &[usize]) -> Vec<super::cache::Body> {
    use super::cache::{encode, Cache, Entry, FileKey};
    let key = FileKey {
        dev: 1,
        ino: 1,
        size: 1,
        mtime: 1,
        mtime_nsec: 1,
        ctime: 1,
        ctime_nsec: 1,
    };
    let paths: Vec<Vec<u8>> = (0..mods.len())
        .map(|i| format!("/m{i}.ko").into_bytes())
        .collect();
    let entries: Vec<Entry<'_>> = mods
        .iter()
        .zip(&paths)
        .enumerate()
        .filter(|(i, _)| !fresh.contains(i))
        .map(|(_, (d, p))| Entry {
            path: p,
            key,
            data: ModView::Data(d),
        })
        .collect();
    let cache = Cache::parse(encode(&entries, &[])).expect("a cache we wrote parses");
    paths.iter().filter_map(|p| cache.get(p, &key)).collect()
}

#[test]
fn resolution_by_id_is_resolution_by_name() {
    // Names shared, exported twice (the last exporter wins), needed with a leading dot,
    // weak, unknown; module 4 is read fresh and exports a name no cached module has.
    let mods = vec![
        m(&["a", "dup", "b"], &[("printk", false)], &[]),
        m(
            &["dup", "c"],
            &[("a", false), (".b", false), ("nobody", false)],
            &[],
        ),
        m(
            &["d"],
            &[("dup", true), ("c", false), ("a", false), ("fresh", false)],
            &[],
        ),
        m(&[".x"], &[(".x", false), ("x", false), ("d", false)], &[]),
        m(
            &["fresh", "c"],
            &[("d", false), ("b", false), ("only_fresh", false)],
            &[],
        ),
        m(&["x"], &[("c", false), ("fresh", false)], &[]),
    ];
    let by_name_opts = ResolveOptions {
        edges: true,
        errsyms: true,
        ..ResolveOptions::default()
    };
    let (want, want_ev) = build(&mods, &by_name_opts);
    for fresh in [&[][..], &[4], &[0, 4], &[1, 2, 3, 5]] {
        let bodies = cached_views(&mods, fresh);
        let mut cached = bodies.iter();
        let views: Vec<ModView<'_>> = mods
            .iter()
            .enumerate()
            .map(|(i, d)| {
                if fresh.contains(&i) {
                    ModView::Data(d)
                } else {
                    ModView::Cached(cached.next().expect("one body per cached module"))
                }
            })
            .collect();
        let mut ev = Vec::new();
        let g = DepGraph::build(&views, &by_name_opts, &mut ev);
        for i in 0..mods.len() {
            assert_eq!(g.deps(i), want.deps(i), "module {i}, fresh {fresh:?}");
        }
        assert_eq!(ev, want_ev, "fresh {fresh:?}");
        assert_eq!(g.owned_symbols(), want.owned_symbols(), "fresh {fresh:?}");
        assert_eq!(g.symbol_owner(b"dup"), Some(Some(1)));
        assert_eq!(g.symbol_owner(b"nobody"), None);
    }
}

/// Modules with aliases that share keys and prefixes (and one that does not normalise).
fn alias_modules(n: usize, seed: u64) -> Vec<ModuleData> {
    let mut x = seed;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    (0..n)
        .map(|i| {
            let aliases: Vec<String> = (0..next() % 6)
                .map(|_| match next() % 4 {
                    0 => format!("pci:v00008086d0000{:04X}sv*sd*bc*sc*i*", next() % 40),
                    1 => format!("usb:v1D6Bp{:04X}d*", next() % 30),
                    2 => format!("fs-{}", ["fat", "vfat", "msdos"][(next() % 3) as usize]),
                    _ => format!("of:N*T*Cvendor,dev{}-x", i % 7),
                })
                .collect();
            let info: Vec<(&str, &str)> = aliases.iter().map(|a| ("alias", a.as_str())).collect();
            m(&[], &[], &info)
        })
        .collect()
}

#[test]
fn alias_index_made_from_a_hint_is_the_index_made_without() {
    for seed in 1..30u64 {
        let mods = alias_modules(40, seed * 0x9e37_79b9);
        let names: Vec<Vec<u8>> = (0..mods.len())
            .map(|i| format!("m{i}").into_bytes())
            .collect();
        let outs: Vec<OutModule<'_>> = mods
            .iter()
            .zip(&names)
            .map(|(d, n)| OutModule {
                modname: n,
                path: b"kernel/m.ko",
                data: ModView::Data(d),
            })
            .collect();
        let (g, _) = build(&mods, &NO_OPTIONS);
        let topo = g.topo().expect("acyclic");
        let plain = Outputs::new(&outs, &g, &topo, Layout::PostOrder, false);
        let mut diags = Collect::default();
        let want = plain.modules_alias_bin(&mut diags).expect("index");
        let order = plain.alias_file_order().expect("every alias normalises");
        // The modules of the hint: every third one is "fresh" (not covered).
        let covered: Vec<bool> = (0..outs.len())
            .map(|i| i % 3 != (seed % 3) as usize)
            .collect();
        let sorted: Vec<(u32, u32)> = order
            .iter()
            .copied()
            .filter(|&(m, _)| covered[m as usize])
            .collect();
        let hint = AliasHint {
            sorted: sorted.clone(),
            covered: covered.clone(),
        };
        let hinted = Outputs::new(&outs, &g, &topo, Layout::PostOrder, false)
            .with_alias_hint(Some(hint.clone()));
        // The merged order is the file order: keys (then modules) never go down.
        let merged = hinted
            .hinted_alias_order(&hint, &mut Collect::default())
            .expect("the hint fits");
        assert_eq!(merged.len(), order.len(), "seed {seed}");
        let keys: Vec<(Vec<u8>, u32)> = merged
            .iter()
            .map(|&k| {
                let (i, a) = flat_aliases(&outs)[k as usize];
                (crate::name::normalize_alias(a).expect("normalises"), i)
            })
            .collect();
        assert!(keys.windows(2).all(|w| w[0] <= w[1]), "seed {seed}");
        assert_eq!(
            hinted.modules_alias_bin(&mut diags).expect("index"),
            want,
            "seed {seed}"
        );
        // The same pairs in the same order, but within a module's repeated alias (the
        // same record twice, which order between them the file cannot show).
        let same_record = |o: &[(u32, u32)]| -> Vec<(Vec<u8>, u32)> {
            let flat = flat_aliases(&outs);
            let at = |m: u32, a: u32| {
                let k = flat.iter().position(|&(i, _)| i == m).expect("module") + a as usize;
                crate::name::normalize_alias(flat[k].1).expect("normalises")
            };
            o.iter().map(|&(m, a)| (at(m, a), m)).collect()
        };
        let again = hinted.alias_file_order().expect("made");
        assert_eq!(same_record(&again), same_record(&order), "seed {seed}");
        let (mut x, mut y) = (again.clone(), order.clone());
        x.sort_unstable();
        y.sort_unstable();
        assert_eq!(x, y, "seed {seed}");
        // A hint that does not fit is not used; one in the wrong order still gives the
        // same file (the index writer sorts).
        let mut shuffled = sorted.clone();
        shuffled.reverse();
        for (bad, used) in [
            (sorted[1..].to_vec(), false),
            ([sorted.clone(), vec![sorted[0]]].concat(), false),
            // One alias twice and another not at all.
            ([&sorted[..sorted.len() - 1], &sorted[..1]].concat(), false),
            (shuffled, true),
        ] {
            let hint = AliasHint {
                sorted: bad,
                covered: covered.clone(),
            };
            let o = Outputs::new(&outs, &g, &topo, Layout::PostOrder, false)
                .with_alias_hint(Some(hint.clone()));
            assert_eq!(
                o.hinted_alias_order(&hint, &mut Collect::default())
                    .is_some(),
                used
            );
            assert_eq!(
                o.modules_alias_bin(&mut diags).expect("index"),
                want,
                "seed {seed}"
            );
        }
    }
}

/// Every module's aliases, (module, alias), in module order.
fn flat_aliases<'a>(outs: &[OutModule<'a>]) -> Vec<(u32, &'a [u8])> {
    outs.iter()
        .enumerate()
        .flat_map(|(i, o)| {
            o.data
                .modinfo()
                .filter(|(k, _)| *k == b"alias")
                .map(move |(_, v)| (i as u32, v))
        })
        .collect()
}

#[test]
fn hash_order_distributes_like_the_sort() {
    // Many keys per bucket (a small table), repeated keys, and a table size the fast way
    // does not take.
    let keys: Vec<Vec<u8>> = (0..3000u32)
        .map(|i| format!("mod_{}", (i * 7919) % 1700).into_bytes())
        .collect();
    let keys: Vec<&[u8]> = keys.iter().map(Vec::as_slice).collect();
    for buckets in [4, 512, 2048, 1000] {
        let mut want: Vec<(&[u8], usize)> = keys.iter().copied().zip(0..).collect();
        crate::hash::sort_hash_order(&mut want, buckets, |(k, _)| k);
        let want: Vec<usize> = want.into_iter().map(|(_, i)| i).collect();
        assert_eq!(hash_order(&keys, buckets), want, "{buckets} buckets");
    }
}
