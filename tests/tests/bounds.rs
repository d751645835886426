//! The parsers bound their work by the size of their input: no allocation sized by an
//! untrusted header, no quadratic blow-up from overlapping or repeated data, no unbounded
//! recursion.
//!
//! Each test re-runs itself in a child process under `ulimit -v` (address space) and
//! `ulimit -t` (CPU seconds), so a violation shows up as a failed allocation (abort) or
//! SIGXCPU instead of exhausting the machine. The child runs the same test function with
//! `KMODRS_BOUNDED_CHILD` set.

#![allow(clippy::unwrap_used, clippy::panic)]

use modcore::compress;
use modcore::index::{
    Index, IndexBuilder, Layout, INDEX_MAGIC, INDEX_VERSION, NODE_CHILDREN, NODE_VALUES,
};
use modcore::module;
use std::process::Command;
use tests::synth::{self, HeaderField, SectionField, SynthModule};

const CHILD_ENV: &str = "KMODRS_BOUNDED_CHILD";

/// Runs the calling test (`name`) in a child limited to `mem_mb` MiB of address space
/// and `cpu_s` CPU seconds; returns `true` in the child, where the caller then does the
/// real work.
fn limited(name: &str, mem_mb: u64, cpu_s: u64) -> bool {
    if std::env::var_os(CHILD_ENV).is_some() {
        return true;
    }
    let exe = std::env::current_exe().unwrap();
    let script = format!(
        "ulimit -v {} && ulimit -t {cpu_s} && exec \"$0\" \"$@\"",
        mem_mb * 1024
    );
    let out = Command::new("sh")
        .arg("-c")
        .arg(script)
        .arg(exe)
        .args([name, "--exact", "--test-threads=1", "--nocapture"])
        .env(CHILD_ENV, "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "{name} failed under ulimit -v {mem_mb}M -t {cpu_s}s: {}\n{stdout}\n{stderr}",
        out.status
    );
    false
}

/// Little-endian x86-64 module with the given `.modinfo`, needs and versions.
fn small_module() -> Vec<u8> {
    SynthModule::new("m")
        .modinfo("license", "GPL")
        .modinfo("vermagic", "6.1.0 SMP mod_unload ")
        .export_crc("m_fn", 1)
        .needs("printk")
        .version("printk", 2)
        .build()
}

/// Every reader of a module image, applied to `image`.
fn read_everything(image: &[u8]) {
    let _ = module::extract(image);
    let _ = module::modinfo_only(image);
    let _ = module::modversions(image);
    let _ = modcore::signature::parse(image);
    let mut copy = image.to_vec();
    let _ = module::strip_vermagic(&mut copy);
    let mut copy = image.to_vec();
    let _ = modcore::elf::clear_alloc_flag(&mut copy, b"__versions");
}

#[test]
fn elf_claiming_4gb_sections() {
    if !limited("elf_claiming_4gb_sections", 256, 20) {
        return;
    }
    let base = small_module();
    assert!(base.len() < 4096, "the fixture stays small: {}", base.len());
    for section in [
        ".modinfo",
        ".symtab",
        ".strtab",
        "__versions",
        "__ksymtab_strings",
    ] {
        for field in [SectionField::Size, SectionField::Offset] {
            for value in [0xFFFF_FFFFu64, 0xFFFF_FFFF_FFFF_FFF0, 1 << 32] {
                let mut m = base.clone();
                synth::set_section_field(&mut m, section, field, value);
                read_everything(&m);
            }
        }
    }
    // A header claiming 65535 sections of 64 bytes (4 MiB of headers) in a small file.
    let mut m = base.clone();
    synth::set_header_field(&mut m, HeaderField::ShNum, 0xFFFF);
    read_everything(&m);
    assert!(module::extract(&m).is_err());
    // And a 4 GiB section header offset.
    let mut m = base;
    synth::set_header_field(&mut m, HeaderField::ShOff, 0xFFFF_FFFF_0000);
    read_everything(&m);
    assert!(module::extract(&m).is_err());
}

/// `.strtab` moved to the end of the file, with no NUL in it, and every symbol's name
/// offset set to 0: each name is the whole rest of the file. kmod would copy that long
/// string once per symbol (quadratic); we refuse beyond a budget linear in the file size.
#[test]
fn overlapping_symbol_names_stay_linear() {
    if !limited("overlapping_symbol_names_stay_linear", 512, 60) {
        return;
    }
    const SYMS: usize = 8000;
    const NAME: usize = 256 * 1024;
    let mut b = SynthModule::new("m").modinfo("license", "GPL");
    for i in 0..SYMS {
        b = b.needs(&format!("s{i}"));
    }
    let mut m = b.build();
    let strtab_at = m.len() as u64;
    m.extend(vec![b'A'; NAME]);
    synth::set_section_field(&mut m, ".strtab", SectionField::Offset, strtab_at);
    synth::set_section_field(&mut m, ".strtab", SectionField::Size, NAME as u64);
    let elf = modcore::elf::Elf::parse(&m).unwrap();
    let (symtab, _) = elf.section(b".symtab").unwrap();
    let symtab_at = elf.offset_of(symtab).unwrap() as usize;
    let count = symtab.len() / 24;
    for i in 1..count {
        m[symtab_at + 24 * i..symtab_at + 24 * i + 4].fill(0);
    }
    // Unbounded, this would copy SYMS * NAME = 2 GB of names.
    let d = module::extract(&m).unwrap();
    let copied: usize = d.needs.iter().map(|n| n.name.len()).sum();
    assert!(
        copied <= 2 * m.len(),
        "{copied} bytes of names from {}",
        m.len()
    );
    // The same with `__crc_` names (exports).
    let mut m2 = m.clone();
    m2[strtab_at as usize..strtab_at as usize + 6].copy_from_slice(b"__crc_");
    let d = module::extract(&m2).unwrap();
    let copied: usize = d.exports.iter().map(|n| n.name.len()).sum::<usize>()
        + d.needs.iter().map(|n| n.name.len()).sum::<usize>();
    assert!(
        copied <= 2 * m2.len(),
        "{copied} bytes of names from {}",
        m2.len()
    );
}

/// A `__versions` section at the end of the file with no NUL at all: every record's name
/// runs to the end of the file (names overlap, quadratic in total length).
#[test]
fn overlapping_version_names_stay_linear() {
    if !limited("overlapping_version_names_stay_linear", 512, 60) {
        return;
    }
    const RECORDS: usize = 32 * 1024; // 2 MiB of records, names of 1 MiB on average
    let mut m = small_module();
    let at = m.len() as u64;
    m.extend(vec![b'A'; 64 * RECORDS]);
    synth::set_section_field(&mut m, "__versions", SectionField::Offset, at);
    synth::set_section_field(
        &mut m,
        "__versions",
        SectionField::Size,
        64 * RECORDS as u64,
    );
    let d = module::extract(&m).unwrap();
    let copied: usize = d.needs.iter().map(|n| n.name.len()).sum();
    assert!(
        copied <= 2 * m.len(),
        "{copied} bytes of names from {}",
        m.len()
    );
    // modprobe --dump-modversions refuses the section instead of listing 32 GiB of names.
    assert!(matches!(
        module::modversions(&m),
        Err(modcore::elf::ElfError::Invalid(_))
    ));
}

/// A zstd frame whose header declares a 2^60-byte content: the declared size is only a
/// hint, capped by the input size.
#[test]
fn zstd_declared_size_is_not_trusted() {
    if !limited("zstd_declared_size_is_not_trusted", 256, 20) {
        return;
    }
    // Magic, frame header descriptor (FCS flag 3: 8-byte size, single segment), the size,
    // then one raw last block of 3 bytes "abc".
    let mut f = vec![0x28, 0xB5, 0x2F, 0xFD, 0xE0];
    f.extend_from_slice(&(1u64 << 60).to_le_bytes());
    f.extend_from_slice(&[0x19, 0x00, 0x00]);
    f.extend_from_slice(b"abc");
    let r = compress::decompress(&f);
    assert!(r.is_err() || r.unwrap().len() <= 3);
}

/// A gzip member whose ISIZE trailer claims 4 GiB.
#[test]
fn gzip_declared_size_is_not_trusted() {
    if !limited("gzip_declared_size_is_not_trusted", 256, 20) {
        return;
    }
    let mut g = synth::gzip(b"hello world, hello world");
    let n = g.len();
    g[n - 4..].copy_from_slice(&0xFFFF_FFFFu32.to_le_bytes());
    let r = compress::decompress(&g);
    assert!(r.is_err());
}

/// An xz stream whose LZMA2 dictionary size property says 4 GiB (the data itself only
/// needs a few bytes of dictionary): the decoder must refuse it by a memory limit rather
/// than try to allocate the dictionary.
#[test]
fn xz_huge_dictionary_is_refused() {
    if !limited("xz_huge_dictionary_is_refused", 1024, 20) {
        return;
    }
    let x = xz_with_dict_prop(&small_module(), 40);
    match compress::decompress(&x) {
        Ok(_) => panic!("a 4 GiB dictionary was accepted"),
        Err(e) => {
            let text = e.to_string();
            assert!(text.contains("memory limit"), "{text}");
        }
    }
    // An ordinary dictionary (8 MiB, preset 6) still decodes.
    assert!(compress::decompress(&synth::xz(&small_module())).is_ok());
}

/// `data` xz-compressed, with the LZMA2 dictionary property byte of the first block set
/// to `prop` (40 = 4 GiB - 1) and the block header CRC fixed up.
pub fn xz_with_dict_prop(data: &[u8], prop: u8) -> Vec<u8> {
    let mut x = synth::xz(data);
    // Stream header (12 bytes), then the block header: size, flags, filter id 0x21,
    // property size 1, the property, padding, CRC32.
    let hdr = 12;
    let len = (usize::from(x[hdr]) + 1) * 4;
    assert_eq!(x[hdr + 1] & 0x03, 0, "one filter");
    let flags = x[hdr + 1];
    let mut p = hdr + 2;
    for present in [flags & 0x40 != 0, flags & 0x80 != 0] {
        if present {
            while x[p] & 0x80 != 0 {
                p += 1;
            }
            p += 1;
        }
    }
    assert_eq!(
        &x[p..p + 2],
        &[0x21, 0x01],
        "LZMA2 filter with one property byte"
    );
    x[p + 2] = prop;
    let mut crc = flate2::Crc::new();
    crc.update(&x[hdr..hdr + len - 4]);
    x[hdr + len - 4..hdr + len].copy_from_slice(&crc.sum().to_le_bytes());
    x
}

/// One index node holding 500 000 values of the same priority: a wildcard search returns
/// them in n log n, not by inserting each at the front of a vector.
#[test]
fn index_many_equal_priority_values_are_not_quadratic() {
    if !limited(
        "index_many_equal_priority_values_are_not_quadratic",
        512,
        30,
    ) {
        return;
    }
    const N: u32 = 500_000;
    let mut f = Vec::new();
    f.extend_from_slice(&INDEX_MAGIC.to_be_bytes());
    f.extend_from_slice(&INDEX_VERSION.to_be_bytes());
    f.extend_from_slice(&(NODE_VALUES | 12).to_be_bytes());
    f.extend_from_slice(&N.to_be_bytes());
    for i in 0..N {
        f.extend_from_slice(&7u32.to_be_bytes());
        f.extend_from_slice(format!("m{i}\0").as_bytes());
    }
    let ix = Index::new(&f).unwrap();
    let found = ix.search_wildcard(b"").unwrap();
    assert_eq!(found.len(), N as usize);
    // Among equal priorities, the value found later comes first.
    assert_eq!(found[0].value, format!("m{}", N - 1).as_bytes());
    assert_eq!(found[N as usize - 1].value, b"m0");
    assert_eq!(ix.get(b"").unwrap().unwrap().len(), N as usize);
}

/// The writer: 300 000 distinct values of equal priority under one key (what a hostile
/// modules.builtin.modinfo repeating one alias gives), plus repeated values: no
/// insertion at the front of a vector, no duplicate scan over all values.
#[test]
fn index_writer_many_values_one_key_is_not_quadratic() {
    if !limited(
        "index_writer_many_values_one_key_is_not_quadratic",
        1024,
        30,
    ) {
        return;
    }
    const N: usize = 300_000;
    let mut b = IndexBuilder::new();
    for i in 0..N {
        assert!(!b.insert(b"x", format!("m{i}").as_bytes(), 5));
    }
    // The same values again: each is reported as a duplicate.
    for i in 0..N {
        assert!(b.insert(b"x", format!("m{i}").as_bytes(), 5));
    }
    b.insert(b"x", b"first", 0);
    let bytes = b.write(Layout::PostOrder).unwrap();
    let ix = Index::new(&bytes).unwrap();
    let v = ix.get(b"x").unwrap().unwrap();
    assert_eq!(v.len(), 2 * N + 1);
    assert_eq!(v[0].value, b"first");
    // Newest first among equal priorities.
    assert_eq!(v[1].value, format!("m{}", N - 1).as_bytes());
    assert_eq!(v[2 * N].value, b"m0");
}

/// Long lines and many lines in the text parsers: linear time.
#[test]
fn config_parsers_are_linear_on_long_lines() {
    if !limited("config_parsers_are_linear_on_long_lines", 1024, 60) {
        return;
    }
    use modcore::diag::Collect;
    use std::path::Path;
    let long_word = "a".repeat(8 << 20);
    let continued = "x \\\n".repeat(1 << 20);
    for text in [
        format!("search {long_word}\n"),
        format!("override {long_word} * extra\n"),
        format!("exclude {}\n", "d ".repeat(4 << 20)),
        continued.clone(),
        "\\\\".repeat(4 << 20),
        format!("external ({long_word})* /x\n"),
    ] {
        let mut cfg = modcore::depmod::config::DepmodConfig::new();
        let mut sink = Collect::default();
        modcore::depmod::config::parse(
            &mut cfg,
            Path::new("t.conf"),
            text.as_bytes(),
            "6.1.0",
            &mut sink,
        );
        let mut c = modcore::modprobe_conf::ModprobeConfig::new();
        let _ = c.parse_file(
            Path::new("t.conf"),
            text.as_bytes(),
            modcore::modprobe_conf::Dialect::KMOD34,
        );
    }
    for text in [
        format!("alias {long_word} m\n"),
        format!("options m {long_word}\n"),
        format!("softdep m pre: {}\n", "a ".repeat(4 << 20)),
        format!("weakdep m {}\n", "a ".repeat(4 << 20)),
        format!("alias [{long_word} m\n"),
        "alias a b\n".repeat(1 << 20),
    ] {
        let mut c = modcore::modprobe_conf::ModprobeConfig::new();
        let _ = c.parse_file(
            Path::new("t.conf"),
            text.as_bytes(),
            modcore::modprobe_conf::Dialect::KMOD34,
        );
        let _ = c.aliases_matching(b"a").count();
        let _ = c.show_config();
    }
    let _ = modcore::cmdline::parse(format!("m.p=\"{long_word}").as_bytes());
    let _ = modcore::procfs::parse_proc_modules(format!("{long_word} 1 0 - Live 0x0\n").as_bytes());
    let order = format!("{long_word}\n").repeat(2);
    let _ = modcore::depmod::graph::parse_order(order.as_bytes());
}

/// Deeply nested BER (indefinite lengths) in a signature and a long chain of index nodes:
/// no recursion depth proportional to the input.
#[test]
fn deep_nesting_does_not_recurse() {
    if !limited("deep_nesting_does_not_recurse", 512, 30) {
        return;
    }
    // 100 000 nested indefinite-length SEQUENCEs as a PKCS#7 signature.
    let depth = 100_000;
    let mut der = Vec::new();
    for _ in 0..depth {
        der.extend_from_slice(&[0x30, 0x80]);
    }
    for _ in 0..depth {
        der.extend_from_slice(&[0, 0]);
    }
    let mut m = small_module();
    synth::append_signature(
        &mut m,
        &synth::SignatureSpec::Raw {
            algo: 0,
            hash: 0,
            id_type: 2,
            signer: Vec::new(),
            key_id: Vec::new(),
            signature: der,
        },
    );
    assert!(modcore::signature::parse(&m).is_none());
    // An index whose root starts a chain of 100 000 nodes, one child each.
    const N: u32 = 100_000;
    let mut f = Vec::new();
    f.extend_from_slice(&INDEX_MAGIC.to_be_bytes());
    f.extend_from_slice(&INDEX_VERSION.to_be_bytes());
    f.extend_from_slice(&(NODE_CHILDREN | 12).to_be_bytes());
    for i in 0..N - 1 {
        let next = 12 + 6 * (i + 1);
        let flag = if i + 1 == N - 1 {
            NODE_VALUES
        } else {
            NODE_CHILDREN
        };
        f.extend_from_slice(b"aa");
        f.extend_from_slice(&(flag | next).to_be_bytes());
    }
    f.extend_from_slice(&1u32.to_be_bytes());
    f.extend_from_slice(&0u32.to_be_bytes());
    f.extend_from_slice(b"v\0");
    let ix = Index::new(&f).unwrap();
    let key = vec![b'a'; N as usize - 1];
    assert_eq!(ix.get(&key).unwrap().unwrap()[0].value, b"v");
    let all: Vec<_> = ix.iter().collect();
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].as_ref().unwrap().key, key);
    assert_eq!(ix.search_wildcard(&key).unwrap().len(), 1);
}
