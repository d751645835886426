//! The body of every fuzz target, as plain functions of the input bytes.
//!
//! `fuzz_targets/<name>.rs` calls `<name>(data)` under libFuzzer; the integration test
//! `tests/tests/fuzz_regressions.rs` includes this file too and replays the seed
//! corpora and every saved crash input through the same functions, so a crash found by
//! the fuzzer becomes a regression test by saving its input. Each function depends on
//! modcore only. A panic (including a failed assertion) is a finding.

use modcore::diag::{Level, Sink};
use std::path::Path;

/// A diagnostics sink that renders and drops every message (rendering is part of the
/// code under test: a message must never panic either).
#[derive(Default)]
pub struct Discard {
    pub count: usize,
}

impl Sink for Discard {
    fn emit(&mut self, level: Level, message: String) {
        let _ = (level.as_str(), message.len());
        self.count += 1;
    }
}

/// Splits a fuzz input into a short selector part and the rest: the first byte gives the
/// length of the head (capped at the input length).
pub fn split_head(data: &[u8]) -> (&[u8], &[u8]) {
    let Some((&n, rest)) = data.split_first() else {
        return (&[], &[]);
    };
    let n = usize::from(n).min(rest.len());
    rest.split_at(n)
}

/// A target: its name and its body.
pub type Target = (&'static str, fn(&[u8]));

/// Every target by name, for replaying corpora.
pub const TARGETS: &[Target] = &[
    ("cache", cache),
    ("cmdline", cmdline),
    ("decompress", decompress),
    ("depmod_config", depmod_config),
    ("depmod_inputs", depmod_inputs),
    ("index", index),
    ("index_writer", index_writer),
    ("kernelsyms", kernelsyms),
    ("modprobe_conf", modprobe_conf),
    ("module", module),
    ("proc_modules", proc_modules),
    ("signature", signature),
];

/// depmod's incremental cache (`modules.depmod.cache`): the file as given (header,
/// length and checksum checks), then the input's payload framed with a correct header and
/// checksum (first byte: the entry count), so that the entry decoder is reached. Every
/// entry that decodes must encode back to the same data.
pub fn cache(data: &[u8]) {
    use modcore::depmod::cache::{self, Cache, DirRecord, Entry};
    use modcore::depmod::view::ModView;
    if let Ok(c) = Cache::parse(data.to_vec()) {
        for (path, key) in c.entries() {
            if let Some(b) = c.get(path, &key) {
                let _ = b.to_module_data();
            }
        }
        for (path, key) in c.dirs() {
            if let Some(l) = c.listing(path, &key) {
                let _ = cache::listing_entries(l).count();
            }
        }
    }
    let Some((&counts, payload)) = data.split_first() else {
        return;
    };
    // The first byte claims the counts: entries in the low nibble, directories above.
    let (count, dirs) = (u32::from(counts & 15), u32::from(counts >> 4));
    let Ok(c) = Cache::parse(cache::frame(count, dirs, payload)) else {
        return;
    };
    assert!(c.len() <= count as usize && c.dir_count() <= dirs as usize);
    for (path, key) in c.entries() {
        let Some(body) = c.get(path, &key) else {
            continue;
        };
        // Read in place and decoded, copied as it is and encoded afresh: the same data.
        let d = body.to_module_data();
        assert_eq!(body.export_count(), d.exports.len());
        for view in [ModView::Cached(&body), ModView::Data(&d)] {
            let again = cache::encode(
                &[Entry {
                    path,
                    key,
                    data: view,
                }],
                &[],
            );
            let back = Cache::parse(again).expect("a cache we wrote does not parse");
            let got = back.get(path, &key).map(|b| b.to_module_data());
            assert_eq!(got.as_ref(), Some(&d), "round trip");
        }
    }
    for (path, key) in c.dirs() {
        let Some(listing) = c.listing(path, &key) else {
            continue;
        };
        // A listing that loaded is well-formed: re-encoded entry by entry, it is the same.
        let mut again = Vec::new();
        for (kind, name) in cache::listing_entries(listing) {
            cache::push_listing(&mut again, kind, name);
        }
        assert_eq!(again, listing, "listing round trip");
        let back = Cache::parse(cache::encode(&[], &[DirRecord { path, key, listing }]))
            .expect("a cache we wrote does not parse");
        assert_eq!(back.listing(path, &key), Some(listing));
    }
}

/// /proc/cmdline parsing and its merge into the modprobe configuration.
pub fn cmdline(data: &[u8]) {
    use modcore::modprobe_conf::ModprobeConfig;
    let c = modcore::cmdline::parse(data);
    for e in &c.errors {
        let _ = (e.to_string(), e.libkmod_function());
    }
    let _ = c.options().count();
    let _ = c.blacklist().count();
    let mut cfg = ModprobeConfig::new();
    cfg.add_cmdline(&c);
    let _ = cfg.show_config();
}

/// Module file decompression (xz, zstd, gzip, plain), with every decoder set.
pub fn decompress(data: &[u8]) {
    use modcore::compress::{self, Decoders, MAX_DECOMPRESSED_LEN};
    for decoders in [Decoders::ALL, Decoders::KMOD30] {
        if let Ok(out) = compress::decompress_with(data, decoders) {
            assert!(out.len() <= MAX_DECOMPRESSED_LEN.max(data.len()));
            // What a module read does next.
            let _ = modcore::module::extract(&out);
        }
    }
}

/// depmod.d parsing (logical lines, directives, kernel-version regexes).
pub fn depmod_config(data: &[u8]) {
    use modcore::depmod::config::{self, DepmodConfig};
    let lines = config::logical_lines(data);
    assert!(lines.iter().map(|(_, l)| l.len()).sum::<usize>() <= data.len());
    let mut cfg = DepmodConfig::new();
    let mut sink = Discard::default();
    config::parse(
        &mut cfg,
        Path::new("/etc/depmod.d/fuzz.conf"),
        data,
        "6.1.0-fuzz",
        &mut sink,
    );
    let _ = cfg.effective_search();
}

/// depmod's other inputs: modules.builtin, modules.builtin.modinfo and modules.order.
/// Whatever index depmod writes from them must read back cleanly.
pub fn depmod_inputs(data: &[u8]) {
    use modcore::depmod::{graph, output};
    use modcore::index::{Index, Layout};
    fn check_index(bytes: &[u8]) {
        let ix = Index::new(bytes).expect("depmod wrote an index it cannot read");
        for e in ix.iter() {
            e.expect("depmod wrote an index whose iteration fails");
        }
    }
    let mut sink = Discard::default();
    for layout in [Layout::PostOrder, Layout::PreOrder] {
        if let Ok(b) = output::builtin_bin(data, layout, &mut sink) {
            check_index(&b);
        }
        if let Ok(b) = output::builtin_alias_bin(data, layout, &mut sink) {
            check_index(&b);
        }
    }
    let _ = graph::parse_order(data);
}

/// The .bin index reader: header check, exact lookup, wildcard search, iteration.
/// Input: one length byte, that many bytes of lookup key, then the index file.
pub fn index(data: &[u8]) {
    use modcore::index::Index;
    let (key, file) = split_head(data);
    let Ok(ix) = Index::new(file) else {
        return;
    };
    let _ = ix.get(key);
    let _ = ix.get_first(key);
    let _ = ix.search_wildcard(key);
    let mut n = 0usize;
    for e in ix.iter() {
        match e {
            Ok(e) => {
                n += 1;
                assert!(n <= file.len(), "more keys than bytes");
                let _ = ix.get(&e.key);
            }
            Err(_) => break,
        }
    }
    let _ = ix.for_each(|_, _| {});
}

/// The index writer: every line of the input is `key<TAB>value` (no tab: an empty value),
/// inserted with a priority taken from the line number. Both layouts must either be refused
/// (bad bytes) or read back with every key holding exactly its values, in the order the
/// builder reports.
pub fn index_writer(data: &[u8]) {
    use modcore::index::{Index, IndexBuilder, Layout};
    let mut b = IndexBuilder::new();
    let mut inserted = 0usize;
    for (i, line) in data.split(|&c| c == b'\n').enumerate().take(4096) {
        let (key, value) = match line.iter().position(|&c| c == b'\t') {
            Some(t) => (&line[..t], &line[t + 1..]),
            None => (line, &b""[..]),
        };
        let _ = b.insert(key, value, (i % 7) as u32);
        inserted += 1;
    }
    assert_eq!(b.value_count(), inserted);
    let entries = b.entries();
    for layout in [Layout::PostOrder, Layout::PreOrder] {
        let Ok(bytes) = b.write(layout) else {
            continue;
        };
        let ix = Index::new(&bytes).expect("the writer wrote an index the reader refuses");
        for (key, values) in &entries {
            let got = ix
                .get(key)
                .expect("lookup of a written key failed")
                .expect("a written key is missing");
            let got: Vec<(u32, &[u8])> = got.iter().map(|v| (v.priority, v.value)).collect();
            let want: Vec<(u32, &[u8])> = values.iter().map(|(p, v)| (*p, &v[..])).collect();
            assert_eq!(got, want, "values of a key");
        }
        assert_eq!(ix.iter().count(), entries.len(), "keys in the index");
    }
}

/// depmod -F System.map and -E Module.symvers parsing, with and without a prefix.
pub fn kernelsyms(data: &[u8]) {
    use modcore::depmod::kernelsyms;
    let mut sink = Discard::default();
    for prefix in [None, Some(b'_')] {
        let _ = kernelsyms::parse_system_map(Path::new("System.map"), data, prefix, &mut sink);
        let _ = kernelsyms::parse_symvers(Path::new("Module.symvers"), data, prefix, &mut sink);
    }
}

/// modprobe.d parsing in both dialects, then the lookups and the `-c` dump.
/// Input: one length byte, that many bytes of module name, then the file.
pub fn modprobe_conf(data: &[u8]) {
    use modcore::modprobe_conf::{logical_lines, Dialect, ModprobeConfig};
    let (name, text) = split_head(data);
    let _ = logical_lines(text);
    for dialect in [Dialect::KMOD30, Dialect::KMOD34] {
        let mut c = ModprobeConfig::new();
        let errors = c.parse_file(Path::new("/etc/modprobe.d/fuzz.conf"), text, dialect);
        for e in &errors {
            let _ = (e.to_string(), e.libkmod_function());
        }
        let _ = c.aliases_matching(name).count();
        let _ = c.options_matching(name, None).count();
        let _ = c.module_options(name, Some(name));
        let _ = c.install_command(name);
        let _ = c.remove_command(name);
        let _ = c.command_named(name);
        let _ = c.is_blacklisted(name);
        let _ = c.softdep(name);
        let _ = c.weakdep(name);
        let _ = c.show_config();
    }
}

/// ELF and module parsing: extract (modinfo, exports, needs), modinfo_only, modversions,
/// the forced-load patches and the signature trailer, on a (maybe compressed) image.
pub fn module(data: &[u8]) {
    use modcore::{compress, elf, module, signature};
    // Compressed seeds go through the decompressor first, like a real module read.
    let image = match compress::decompress(data) {
        Ok(i) => i.into_owned(),
        Err(_) => data.to_vec(),
    };
    let image = &image[..];
    if let Ok(d) = module::extract(image) {
        let total: usize = d.needs.iter().map(|n| n.name.len()).sum::<usize>()
            + d.exports.iter().map(|e| e.name.len()).sum::<usize>()
            + d.modinfo
                .iter()
                .map(|(k, v)| k.len() + v.len())
                .sum::<usize>();
        // Work (and memory) stays linear in the image size.
        assert!(
            total <= 4 * image.len() + 256 * 1024,
            "{total} name bytes from {} bytes",
            image.len()
        );
    }
    let _ = module::modinfo_only(image);
    let _ = module::modversions(image);
    if let Ok(e) = elf::Elf::parse(image) {
        for i in 0..e.section_count().min(64) {
            if let Some(info) = e.section_info(i) {
                let _ = e.section_data(&info);
                let _ = e.section_name(&info);
            }
        }
        if let Some(syms) = e.symbols() {
            for s in syms.iter().take(4096) {
                let _ = (s.binding(), s.kind());
            }
        }
    }
    let mut copy = image.to_vec();
    let _ = module::strip_vermagic(&mut copy);
    let mut copy = image.to_vec();
    let _ = elf::clear_alloc_flag(&mut copy, b"__versions");
    if let Some(info) = signature::parse(image) {
        let _ = (info.id_type_name(), info.algo_name(), info.modinfo_fields());
    }
}

/// /proc/modules and the /sys/module attribute parsers.
/// Input: one length byte, that many bytes of module name, then the file.
pub fn proc_modules(data: &[u8]) {
    use modcore::procfs;
    let (name, text) = split_head(data);
    if let Ok(mods) = procfs::parse_proc_modules(text) {
        for m in &mods {
            let _ = m.to_line();
        }
    }
    let _ = procfs::loaded_names(text);
    let _ = procfs::proc_modules_size(text, name);
    let _ = procfs::parse_initstate(text);
    let _ = procfs::parse_sysfs_long(text);
    let _ = procfs::parse_kernel_compression(text);
}

/// The appended module signature trailer and the PKCS#7 (DER/BER) reader.
pub fn signature(data: &[u8]) {
    use modcore::signature;
    let _ = signature::trailer(data);
    assert!(signature::unsigned_len(data) <= data.len());
    if let Some(info) = signature::parse(data) {
        let _ = (info.id_type_name(), info.algo_name());
        for (_, v) in info.modinfo_fields() {
            assert!(v.len() <= 4 * data.len() + 64);
        }
        let _ = signature::hex_wrapped(&info.signature);
    }
}
