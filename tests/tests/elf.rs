//! ELF reading, module data extraction and signature parsing on synthetic modules
//! (spec depmod-and-index §4.2–§4.6, runtime-tools §7.2).

use modcore::elf::{Class, Elf, ElfError};
use modcore::module::{self, Export, ModuleData, Need};
use modcore::signature;
use object::Endianness;
use tests::synth::{
    self, HeaderField, Pkcs7Signature, SectionField, SignatureSpec, SymbolField, SynthModule,
    Target,
};

fn kv(pairs: &[(&str, &str)]) -> Vec<(Vec<u8>, Vec<u8>)> {
    pairs
        .iter()
        .map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec()))
        .collect()
}

fn export(name: &str, crc: u64) -> Export {
    Export {
        name: name.as_bytes().to_vec(),
        crc,
    }
}

fn need(name: &str, crc: u64, weak: bool) -> Need {
    Need {
        name: name.as_bytes().to_vec(),
        crc,
        weak,
    }
}

fn names(exports: &[Export]) -> Vec<String> {
    exports
        .iter()
        .map(|e| String::from_utf8_lossy(&e.name).into_owned())
        .collect()
}

/// A module exercising every extracted field, with values that fit every class.
fn full_module(target: Target) -> SynthModule {
    SynthModule::new("fat")
        .target(target)
        .modinfo("alias", "fs-fat")
        .modinfo("license", "GPL")
        .modinfo_raw(b"alias")
        .modinfo("description", "a=b")
        .export_crc("fat_get", 0x1234_5678)
        .export_crc_section("fat_put", 0x9abc_def0)
        .export_crc("fat_abs", 0xffff_fffe)
        .ksymtab_string("FAT_NS")
        .needs("printk")
        .weak_needs("maybe")
        .needs("kmalloc")
        .version("kmalloc", 0x1111)
        .version("module_layout", 0x2222)
        .version("printk", 0x3333)
        .version("printk", 0x4444)
}

fn full_expected() -> ModuleData {
    ModuleData {
        modinfo: kv(&[
            ("alias", "fs-fat"),
            ("license", "GPL"),
            ("alias", ""),
            ("description", "a=b"),
        ]),
        // Symbol table order: the section-relative __crc_ symbol is local, and ELF puts
        // local symbols before global ones.
        exports: vec![
            export("fat_put", 0x9abc_def0),
            export("fat_get", 0x1234_5678),
            export("fat_abs", 0xffff_fffe),
        ],
        needs: vec![
            need("printk", 0x3333, false),
            need("maybe", 0, true),
            need("kmalloc", 0x1111, false),
            need("module_layout", 0x2222, false),
            need("printk", 0x4444, false),
        ],
    }
}

#[test]
fn all_layouts_give_identical_module_data() {
    for target in Target::LAYOUTS {
        let image = full_module(target).build();
        let elf = Elf::parse(&image).expect("valid");
        assert_eq!(
            elf.class(),
            if target.is_64() {
                Class::Elf64
            } else {
                Class::Elf32
            }
        );
        assert_eq!(elf.endianness(), target.endian());
        assert_eq!(
            module::extract(&image).expect("extract"),
            full_expected(),
            "{target:?}"
        );
    }
}

#[test]
fn layouts_cover_both_byte_orders_and_machines() {
    let machines: Vec<(Class, Endianness, u16)> = Target::LAYOUTS
        .iter()
        .map(|t| {
            let img = SynthModule::new("m").target(*t).build();
            let elf = Elf::parse(&img).expect("valid");
            (elf.class(), elf.endianness(), elf.e_machine())
        })
        .collect();
    assert_eq!(
        machines,
        vec![
            (Class::Elf64, Endianness::Little, object::elf::EM_X86_64),
            (Class::Elf32, Endianness::Little, object::elf::EM_386),
            (Class::Elf64, Endianness::Big, object::elf::EM_PPC64),
            (Class::Elf32, Endianness::Big, object::elf::EM_PPC),
        ]
    );
}

#[test]
fn sixty_four_bit_crcs_need_elf64() {
    let m = SynthModule::new("m")
        .export_crc("e", 0x1_0000_0002)
        .needs("x")
        .version("x", 0xaaaa_bbbb_cccc_dddd);
    let d64 = module::extract(&m.clone().target(Target::PowerPc64).build()).expect("ok");
    assert_eq!(d64.exports, vec![export("e", 0x1_0000_0002)]);
    assert_eq!(d64.needs, vec![need("x", 0xaaaa_bbbb_cccc_dddd, false)]);
    // ELF32 stores 32-bit symbol values and 4-byte __versions CRCs.
    let d32 = module::extract(&m.target(Target::PowerPc).build()).expect("ok");
    assert_eq!(d32.exports, vec![export("e", 2)]);
    assert_eq!(d32.needs, vec![need("x", 0xcccc_dddd, false)]);
}

#[test]
fn exports_fall_back_to_ksymtab_strings_without_crc_symbols() {
    for target in Target::LAYOUTS {
        let img = SynthModule::new("m")
            .target(target)
            .export("a")
            .export("b")
            .ksymtab_string("NS")
            .build();
        let d = module::extract(&img).expect("ok");
        // Namespace strings leak in through the fallback, as in kmod.
        assert_eq!(
            d.exports,
            vec![export("a", 0), export("b", 0), export("NS", 0)]
        );
    }
}

#[test]
fn crc_symbols_hide_exports_without_crc() {
    let img = SynthModule::new("m")
        .export("plain")
        .export_crc("versioned", 7)
        .ksymtab_string("NS")
        .build();
    let d = module::extract(&img).expect("ok");
    assert_eq!(d.exports, vec![export("versioned", 7)]);
}

#[test]
fn no_export_information_means_no_exports() {
    let img = SynthModule::new("m")
        .export("a")
        .no_ksymtab_strings()
        .build();
    assert!(module::extract(&img).expect("ok").exports.is_empty());
    let img = SynthModule::new("m").needs("x").build();
    assert!(module::extract(&img).expect("ok").exports.is_empty());
}

#[test]
fn ksymtab_strings_split_like_modinfo() {
    for (raw, want) in [
        (&b"\0\0a\0\0b\0"[..], vec!["a", "b"]),
        (&b"a\0b"[..], vec!["a", "b"]), // unterminated last string accepted (kmod 30)
        (&b"\0\0x"[..], vec![]),        // one byte left after the NUL strip: nothing
        (&b""[..], vec![]),
    ] {
        let img = SynthModule::new("m")
            .section("__ksymtab_strings", raw)
            .build();
        let d = module::extract(&img).expect("ok");
        assert_eq!(names(&d.exports), want, "{raw:?}");
    }
}

#[test]
fn section_relative_crc_out_of_range_is_all_ones() {
    for target in Target::LAYOUTS {
        let base = SynthModule::new("m")
            .target(target)
            .export_crc_section("a", 0x11)
            .export_crc_section("b", 0x22)
            .build();
        // Offset 4 in an 8-byte section is the last readable CRC.
        let mut img = base.clone();
        synth::set_symbol_field(&mut img, "__crc_a", SymbolField::Value, 4);
        let d = module::extract(&img).expect("ok");
        assert_eq!(d.exports, vec![export("a", 0x22), export("b", 0x22)]);
        // Offset 5 exceeds size - 4.
        let mut img = base.clone();
        synth::set_symbol_field(&mut img, "__crc_a", SymbolField::Value, 5);
        let d = module::extract(&img).expect("ok");
        assert_eq!(d.exports, vec![export("a", u64::MAX), export("b", 0x22)]);
        // A section index past e_shnum.
        let mut img = base.clone();
        synth::set_symbol_field(&mut img, "__crc_a", SymbolField::Shndx, 0xff00);
        let d = module::extract(&img).expect("ok");
        assert_eq!(d.exports[0], export("a", u64::MAX));
        // A section whose data lies outside the file.
        let mut img = base.clone();
        synth::set_section_field(&mut img, "__kcrctab", SectionField::Offset, 0xffff_fff0);
        let d = module::extract(&img).expect("ok");
        assert_eq!(
            d.exports,
            vec![export("a", u64::MAX), export("b", u64::MAX)]
        );
        // SHN_UNDEF: the value itself is the CRC.
        let mut img = base;
        synth::set_symbol_field(&mut img, "__crc_a", SymbolField::Shndx, 0);
        synth::set_symbol_field(&mut img, "__crc_a", SymbolField::Value, 99);
        let d = module::extract(&img).expect("ok");
        assert_eq!(d.exports[0], export("a", 99));
    }
}

#[test]
fn tiny_crc_section_wraps_like_kmod() {
    // A 2-byte section: size - 4 wraps around, so the 4 bytes at the offset are read if
    // they still lie inside the file.
    let mut img = SynthModule::new("m")
        .export_crc_section("a", 0x0102_0304)
        .build();
    synth::set_section_field(&mut img, "__kcrctab", SectionField::Size, 2);
    let d = module::extract(&img).expect("ok");
    assert_eq!(d.exports, vec![export("a", 0x0102_0304)]);
}

#[test]
fn bad_name_offset_falls_back_for_exports_and_drops_needs() {
    let base = SynthModule::new("m")
        .export_crc("a", 1)
        .needs("x")
        .needs("y")
        .version("x", 5)
        .build();
    // Any symbol name outside .strtab abandons the __crc_ scan.
    let mut img = base.clone();
    synth::set_symbol_field(&mut img, "__crc_a", SymbolField::Name, 0x7fff_ffff);
    let d = module::extract(&img).expect("ok");
    assert_eq!(d.exports, vec![export("a", 0)]);
    assert_eq!(d.needs.len(), 2);
    // An undefined symbol's name outside .strtab: no needs at all (and, as for any
    // symbol, the __crc_ scan is abandoned too).
    let mut img = base;
    synth::set_symbol_field(&mut img, "y", SymbolField::Name, 0x7fff_ffff);
    let d = module::extract(&img).expect("ok");
    assert!(d.needs.is_empty());
    assert_eq!(d.exports, vec![export("a", 0)]);
}

#[test]
fn missing_or_malformed_symtab() {
    let base = SynthModule::new("m")
        .export_crc("a", 1)
        .needs("x")
        .version("x", 5)
        .build();
    for victim in [".symtab", ".strtab"] {
        let mut img = base.clone();
        synth::rename_section(
            &mut img,
            victim,
            &format!("{}X", &victim[..victim.len() - 1]),
        );
        let d = module::extract(&img).expect("ok");
        assert!(d.needs.is_empty(), "{victim}");
        assert_eq!(d.exports, vec![export("a", 0)], "{victim}");
    }
    let mut img = base;
    let elf = Elf::parse(&img).expect("ok");
    let size = elf.section(b".symtab").expect("symtab").0.len() as u64;
    synth::set_section_field(&mut img, ".symtab", SectionField::Size, size - 1);
    let d = module::extract(&img).expect("ok");
    assert!(d.needs.is_empty());
    assert_eq!(d.exports, vec![export("a", 0)]);
}

#[test]
fn needs_skip_empty_names_and_keep_order() {
    let img = SynthModule::new("m")
        .needs("b")
        .needs("")
        .weak_needs("a")
        .needs("c")
        .build();
    let d = module::extract(&img).expect("ok");
    assert_eq!(
        d.needs,
        vec![need("b", 0, false), need("a", 0, true), need("c", 0, false)]
    );
}

#[test]
fn sparc_register_symbols_are_skipped_only_on_sparc() {
    for (target, skipped) in [
        (Target::Sparc64, true),
        (Target::Sparc, true),
        (Target::X86_64, false),
        (Target::PowerPc, false),
    ] {
        let mut img = SynthModule::new("m")
            .target(target)
            .needs("a")
            .needs_with_info("%g7", 0x1d) // global, STT_REGISTER
            .needs_with_info("t", 0x2d) // weak, STT_REGISTER
            .build();
        let d = module::extract(&img).expect("ok");
        let mut want = vec![need("a", 0, false)];
        if !skipped {
            want.push(need("%g7", 0, false));
            want.push(need("t", 0, true));
        }
        assert_eq!(d.needs, want, "{target:?}");
        // The rule follows e_machine (2 or 43), nothing else.
        let machine = if skipped { 62 } else { 43 };
        synth::set_header_field(&mut img, HeaderField::Machine, machine);
        let n = module::extract(&img).expect("ok").needs.len();
        assert_eq!(n, if skipped { 3 } else { 1 }, "{target:?}");
    }
}

#[test]
fn versions_with_bad_size_are_ignored() {
    let img = SynthModule::new("m")
        .needs("x")
        .section("__versions", &[0u8; 65])
        .build();
    assert_eq!(
        module::extract(&img).expect("ok").needs,
        vec![need("x", 0, false)]
    );
}

#[test]
fn versions_first_match_wins_and_unused_are_appended() {
    for target in Target::LAYOUTS {
        let img = SynthModule::new("m")
            .target(target)
            .needs("a")
            .version("z", 1)
            .version("a", 2)
            .version("a", 3)
            .version("y", 4)
            .build();
        assert_eq!(
            module::extract(&img).expect("ok").needs,
            vec![
                need("a", 2, false),
                need("z", 1, false),
                need("a", 3, false),
                need("y", 4, false)
            ]
        );
    }
}

#[test]
fn version_names_without_nul_run_into_the_next_record() {
    // A 56-byte name in an ELF64 record has no NUL: kmod 30 reads on into the next
    // record (its CRC bytes, then its name).
    let long = "n".repeat(56);
    let mut versions = Vec::new();
    versions.extend_from_slice(&7u64.to_le_bytes());
    versions.extend_from_slice(long.as_bytes());
    versions.extend_from_slice(&0x41u64.to_le_bytes()); // "A" then NULs
    versions.extend_from_slice(b"next");
    versions.resize(128, 0);
    let img = SynthModule::new("m")
        .section("__versions", &versions)
        .build();
    let d = module::extract(&img).expect("ok");
    assert_eq!(
        d.needs,
        vec![
            need(&format!("{long}A"), 7, false),
            need("next", 0x41, false)
        ]
    );
}

#[test]
fn modinfo_rules() {
    let img = SynthModule::new("m")
        .modinfo_section(b"\0\0\0alias=x\0\0\0alias\0k=v=w\0tail")
        .build();
    assert_eq!(
        module::extract(&img).expect("ok").modinfo,
        kv(&[("alias", "x"), ("alias", ""), ("k", "v=w"), ("tail", "")])
    );
    assert_eq!(
        module::modinfo_only(&img).expect("ok"),
        Some(kv(&[
            ("alias", "x"),
            ("alias", ""),
            ("k", "v=w"),
            ("tail", "")
        ]))
    );
    // A missing .modinfo: empty for depmod, None (ENOENT) for modinfo.
    let mut img = SynthModule::new("m").modinfo("a", "b").build();
    synth::rename_section(&mut img, ".modinfo", ".modinfX");
    assert!(module::extract(&img).expect("ok").modinfo.is_empty());
    assert_eq!(module::modinfo_only(&img).expect("ok"), None);
}

#[test]
fn standard_modinfo_looks_like_a_real_module() {
    let img = SynthModule::new("dummy")
        .modinfo("license", "GPL")
        .standard_modinfo("", "6.1.0-56-cloud-amd64")
        .build();
    let d = module::extract(&img).expect("ok");
    assert_eq!(
        d.modinfo,
        kv(&[
            ("license", "GPL"),
            ("depends", ""),
            ("retpoline", "Y"),
            ("intree", "Y"),
            ("name", "dummy"),
            (
                "vermagic",
                "6.1.0-56-cloud-amd64 SMP preempt mod_unload modversions "
            ),
        ])
    );
}

// ---------------------------------------------------------------------------------
// ELF validation

#[test]
fn not_elf() {
    for bytes in [
        &b""[..],
        &b"\x7fELF"[..],
        &[0x7f, b'E', b'L', b'F', 2, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0][..], // 16 bytes
        &[0u8; 200][..],
        &b"\x7fELG\x02\x01\x01\0\0\0\0\0\0\0\0\0\0\0"[..],
    ] {
        let err = Elf::parse(bytes).expect_err("not ELF");
        assert!(matches!(err, ElfError::NotElf(_)), "{bytes:?}");
        assert_eq!(err.errno(), 8); // ENOEXEC
        assert_eq!(module::extract(bytes).expect_err("not ELF"), err);
    }
}

fn invalid(img: &[u8]) -> ElfError {
    let err = Elf::parse(img).expect_err("must be invalid");
    assert!(matches!(err, ElfError::Invalid(_)), "{err:?}");
    assert_eq!(err.errno(), 22); // EINVAL
    err
}

#[test]
fn invalid_headers() {
    for target in Target::LAYOUTS {
        let good = SynthModule::new("m")
            .target(target)
            .modinfo("a", "b")
            .build();
        let hdr = if target.is_64() { 64 } else { 52 };

        let mut img = good.clone();
        img[4] = 3; // EI_CLASS
        invalid(&img);
        let mut img = good.clone();
        img[5] = 0; // EI_DATA
        invalid(&img);
        // Exactly the ELF header size, and one byte less: too short.
        invalid(&good[..hdr]);
        invalid(&good[..17]);

        let mut img = good.clone();
        synth::set_header_field(
            &mut img,
            HeaderField::ShEntSize,
            if target.is_64() { 40 } else { 64 },
        );
        invalid(&img);

        let mut img = good.clone();
        synth::set_header_field(&mut img, HeaderField::ShOff, good.len() as u64);
        invalid(&img);
        let mut img = good.clone();
        synth::set_header_field(&mut img, HeaderField::ShNum, 0xffff);
        invalid(&img);
        let elf = Elf::parse(&good).expect("ok");
        for shstrndx in [0u64, u64::from(elf.section_count()), 0xffff] {
            let mut img = good.clone();
            synth::set_header_field(&mut img, HeaderField::ShStrNdx, shstrndx);
            invalid(&img);
        }
        let names = elf.section_names_index();

        let mut img = good.clone();
        synth::set_section_field_at(&mut img, names, SectionField::Size, 0);
        invalid(&img);
        let mut img = good.clone();
        synth::set_section_field_at(&mut img, names, SectionField::Offset, good.len() as u64);
        invalid(&img);
        let mut img = good.clone();
        let size = elf.section_names().len() as u64;
        // Dropping the final NUL of the name table.
        synth::set_section_field_at(&mut img, names, SectionField::Size, size - 1);
        invalid(&img);
        // But the name table may be any section type (only bounds and NUL matter).
        let mut img = good.clone();
        synth::set_section_field_at(&mut img, names, SectionField::Type, 1);
        Elf::parse(&img).expect("still valid");
    }
}

#[test]
fn section_table_at_end_of_file_is_accepted() {
    // object::write puts the section headers last, so the table ends exactly at EOF.
    for target in Target::LAYOUTS {
        let img = SynthModule::new("m").target(target).build();
        let elf = Elf::parse(&img).expect("ok");
        let entsize = elf.class().section_header_size() as u64;
        let last = elf.section_info(elf.section_count() - 1).expect("last");
        assert_eq!(last.header_offset + entsize, img.len() as u64);
    }
}

#[test]
fn section_lookup_takes_first_valid_match() {
    for target in Target::LAYOUTS {
        let img = SynthModule::new("m")
            .target(target)
            .section("dup", b"first")
            .section("dup", b"second")
            .section("dup", b"third")
            .build();
        let elf = Elf::parse(&img).expect("ok");
        let (data, first) = elf.section(b"dup").expect("found");
        assert_eq!(data, b"first");

        // Data past EOF: skipped.
        let mut img2 = img.clone();
        synth::set_section_field_at(&mut img2, first, SectionField::Size, img.len() as u64);
        let elf2 = Elf::parse(&img2).expect("ok");
        assert_eq!(elf2.section(b"dup").expect("found").0, b"second");

        // offset + size overflowing: skipped.
        let mut img2 = img.clone();
        synth::set_section_field_at(&mut img2, first, SectionField::Offset, u64::MAX);
        let elf2 = Elf::parse(&img2).expect("ok");
        assert_eq!(elf2.section(b"dup").expect("found").0, b"second");

        // Name offset past the name table: skipped.
        let mut img2 = img.clone();
        synth::set_section_field_at(&mut img2, first, SectionField::Name, 0xffff_ff00);
        let elf2 = Elf::parse(&img2).expect("ok");
        assert_eq!(elf2.section(b"dup").expect("found").0, b"second");

        // A NOBITS section with an in-file range is still used (type is ignored).
        let mut img2 = img.clone();
        synth::set_section_field_at(&mut img2, first, SectionField::Type, 8);
        let elf2 = Elf::parse(&img2).expect("ok");
        assert_eq!(elf2.section(b"dup").expect("found").0, b"first");

        // Names must match exactly.
        assert!(elf.section(b"du").is_none());
        assert!(elf.section(b"dupe").is_none());
    }
}

#[test]
fn symbol_iteration() {
    for target in Target::LAYOUTS {
        let img = SynthModule::new("m")
            .target(target)
            .export_crc("e", 0x77)
            .weak_needs("w")
            .build();
        let elf = Elf::parse(&img).expect("ok");
        let syms = elf.symbols().expect("symtab");
        let crc = syms
            .iter()
            .find(|s| s.name == Some(&b"__crc_e"[..]))
            .expect("crc symbol");
        assert_eq!(crc.value, 0x77);
        assert_eq!(crc.shndx, object::elf::SHN_ABS);
        assert_eq!(crc.binding(), object::elf::STB_GLOBAL);
        let w = syms
            .iter()
            .find(|s| s.name == Some(&b"w"[..]))
            .expect("weak symbol");
        assert_eq!(w.shndx, 0);
        assert_eq!(w.binding(), object::elf::STB_WEAK);
        assert_eq!(w.kind(), object::elf::STT_NOTYPE);
        let f = syms
            .iter()
            .find(|s| s.name == Some(&b"e"[..]))
            .expect("function");
        assert_eq!(f.kind(), object::elf::STT_FUNC);
        assert_eq!(syms.get(syms.len()), None);
    }
}

// ---------------------------------------------------------------------------------
// Robustness: no input may panic.

fn poke(image: &[u8]) {
    let _ = module::extract(image);
    let _ = module::modinfo_only(image);
    let _ = signature::parse(image);
    let _ = signature::unsigned_len(image);
    let _ = module::modversions(image);
    let mut copy = image.to_vec();
    let _ = module::strip_vermagic(&mut copy);
    let _ = modcore::elf::clear_alloc_flag(&mut copy, b"__versions");
    if let Ok(elf) = Elf::parse(image) {
        if let Some(syms) = elf.symbols() {
            for s in syms.iter() {
                let _ = (s.name, s.binding(), s.kind());
            }
        }
        for i in 0..elf.section_count() {
            if let Some(info) = elf.section_info(i) {
                let _ = elf.section_data(&info);
                let _ = elf.section_name(&info);
            }
        }
    }
}

fn signed(target: Target) -> Vec<u8> {
    full_module(target)
        .signature(SignatureSpec::Pkcs7(Pkcs7Signature::new(
            "Build time autogenerated kernel key",
            &[0x1b, 0xa0, 0xdb, 0x9d],
            "sha256",
            &[0x5a; 64],
        )))
        .build()
}

#[test]
fn every_truncation_is_handled() {
    for target in Target::LAYOUTS {
        let img = signed(target);
        for len in 0..=img.len() {
            poke(&img[..len]);
        }
        // Cutting into the section table (which ends the ELF part) makes it invalid.
        let elf_len = signature::unsigned_len(&img);
        assert!(module::extract(&img[..elf_len]).is_ok());
        assert!(module::extract(&img[..elf_len - 1]).is_err());
    }
}

#[test]
fn bit_flips_are_handled() {
    for target in Target::LAYOUTS {
        let img = signed(target);
        let mut copy = img.clone();
        for pos in 0..img.len() {
            for bit in [0u8, 3, 7] {
                copy[pos] ^= 1 << bit;
                poke(&copy);
                copy[pos] ^= 1 << bit;
            }
        }
        // Byte-wide corruption of header fields (0x00 / 0xff).
        for pos in 0..img.len().min(256) {
            for v in [0u8, 0xff] {
                let old = copy[pos];
                copy[pos] = v;
                poke(&copy);
                copy[pos] = old;
            }
        }
    }
}

#[test]
fn hostile_header_values() {
    for target in Target::LAYOUTS {
        let good = full_module(target).build();
        let sections = Elf::parse(&good).expect("ok").section_count();
        for index in 1..sections {
            for field in [SectionField::Name, SectionField::Offset, SectionField::Size] {
                for value in [
                    0u64,
                    1,
                    0x7fff_ffff,
                    0xffff_ffff,
                    u64::MAX,
                    good.len() as u64,
                ] {
                    let mut img = good.clone();
                    synth::set_section_field_at(&mut img, index, field, value);
                    poke(&img);
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------
// Signatures

fn sig_image(spec: SignatureSpec) -> Vec<u8> {
    SynthModule::new("m")
        .modinfo("license", "GPL")
        .signature(spec)
        .build()
}

#[test]
fn pkcs7_signature_fields() {
    let key = [
        0x1b, 0xa0, 0xdb, 0x9d, 0xb0, 0x17, 0x06, 0x9f, 0x06, 0x2a, 0x9e, 0x8a, 0xeb, 0x3e, 0x70,
        0x8e, 0x9b, 0xe8, 0x94, 0xc4,
    ];
    let sig: Vec<u8> = (0..=255u8).collect();
    let spec = Pkcs7Signature::new("Build time autogenerated kernel key", &key, "sha256", &sig);
    let unsigned = SynthModule::new("m").modinfo("license", "GPL").build();
    let img = sig_image(SignatureSpec::Pkcs7(spec));

    let info = signature::parse(&img).expect("signed");
    assert_eq!(info.id_type_name(), "PKCS#7");
    assert_eq!(info.signer, b"Build time autogenerated kernel key");
    assert_eq!(info.key_id, key);
    assert_eq!(info.hash_algo, "sha256");
    assert_eq!(info.signature, sig);

    let fields = info.modinfo_fields();
    let keys: Vec<&str> = fields.iter().map(|(k, _)| *k).collect();
    assert_eq!(
        keys,
        ["sig_id", "signer", "sig_key", "sig_hashalgo", "signature"]
    );
    assert_eq!(
        String::from_utf8(fields[2].1.clone()).expect("utf8"),
        "1B:A0:DB:9D:B0:17:06:9F:06:2A:9E:8A:EB:3E:70:8E:9B:E8:94:C4"
    );
    let hex = String::from_utf8(fields[4].1.clone()).expect("utf8");
    assert!(
        hex.starts_with("00:01:02:03:04:05:06:07:08:09:0A:0B:0C:0D:0E:0F:10:11:12:13:\n\t\t14:15")
    );
    assert!(hex.ends_with(":FE:FF"));
    assert_eq!(hex.matches("\n\t\t").count(), 12);

    // The signature does not change what is read from the ELF part.
    assert_eq!(
        module::extract(&img).expect("ok"),
        module::extract(&unsigned).expect("ok")
    );
    assert_eq!(signature::unsigned_len(&img), unsigned.len());
    assert_eq!(signature::unsigned_len(&unsigned), unsigned.len());
    assert_eq!(signature::parse(&unsigned), None);
}

#[test]
fn hex_wrapping() {
    assert_eq!(signature::hex_wrapped(&[]), "");
    assert_eq!(signature::hex_wrapped(&[0xab]), "AB");
    let twenty = [0u8; 20];
    assert!(!signature::hex_wrapped(&twenty).contains('\n'));
    let twenty_one = [0u8; 21];
    assert_eq!(
        signature::hex_wrapped(&twenty_one),
        format!("{}:\n\t\t00", ["00"; 20].join(":"))
    );
}

#[test]
fn pkcs7_digest_names() {
    for name in [
        "md4", "md5", "sha1", "rmd160", "sha256", "sha384", "sha512", "sha224", "sm3",
    ] {
        let img = sig_image(SignatureSpec::Pkcs7(Pkcs7Signature::new(
            "k",
            &[1],
            name,
            &[9],
        )));
        assert_eq!(signature::parse(&img).expect("signed").hash_algo, name);
    }
    let mut p = Pkcs7Signature::new("k", &[1], "sha256", &[9]);
    p.digest_oid = vec![0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x08]; // sha3-256
    let img = sig_image(SignatureSpec::Pkcs7(p));
    // kmod 30 shows no signature at all for a digest it cannot name.
    assert_eq!(signature::parse(&img), None);
}

#[test]
fn pkcs7_signer_choice() {
    let o = (synth::OID_ORGANIZATION.to_vec(), synth::TAG_UTF8STRING);
    let cn = (synth::OID_COMMON_NAME.to_vec(), synth::TAG_UTF8STRING);
    let email = (
        vec![0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x09, 0x01],
        0x16u8,
    );
    let attr = |(oid, tag): &(Vec<u8>, u8), v: &str| (oid.clone(), *tag, v.as_bytes().to_vec());
    for (issuer, want) in [
        (
            vec![attr(&o, "Org"), attr(&cn, "Key"), attr(&email, "a@b")],
            "Key",
        ),
        (vec![attr(&cn, "First"), attr(&cn, "Second")], "First"),
        (vec![attr(&o, "Org"), attr(&email, "a@b")], "a@b"), // no CN: last attribute
        (vec![], ""),
        (vec![attr(&cn, "Nul\0Cut")], "Nul"),
    ] {
        let mut p = Pkcs7Signature::new("x", &[1], "sha512", &[1, 2]);
        p.issuer = issuer;
        let info = signature::parse(&sig_image(SignatureSpec::Pkcs7(p))).expect("signed");
        assert_eq!(info.signer, want.as_bytes());
        assert_eq!(info.hash_algo, "sha512");
    }
}

#[test]
fn pkcs7_serial_numbers() {
    for (content, want) in [
        (vec![0x00, 0x80], vec![0x80]),
        (vec![0x00], vec![]),
        (vec![0x7f, 0x00], vec![0x7f, 0x00]),
        (vec![0xff], vec![0x01]),             // -1
        (vec![0xff, 0x00], vec![0x01, 0x00]), // -256
        (vec![0x80], vec![0x80]),             // -128
    ] {
        let mut p = Pkcs7Signature::new("k", &[1], "sha256", &[1]);
        p.serial_content = content.clone();
        let info = signature::parse(&sig_image(SignatureSpec::Pkcs7(p))).expect("signed");
        assert_eq!(info.key_id, want, "{content:?}");
    }
    // Empty and redundantly padded INTEGERs are rejected (like OpenSSL): no signature.
    for content in [vec![], vec![0x00, 0x01], vec![0xff, 0x80]] {
        let mut p = Pkcs7Signature::new("k", &[1], "sha256", &[1]);
        p.serial_content = content.clone();
        assert_eq!(
            signature::parse(&sig_image(SignatureSpec::Pkcs7(p))),
            None,
            "{content:?}"
        );
    }
}

#[test]
fn pkcs7_ber_indefinite_lengths() {
    let mut p = Pkcs7Signature::new("Indef", &[0x42], "sha384", &[7; 300]);
    p.indefinite = true;
    let der = p.to_der();
    assert_eq!(&der[..2], &[0x30, 0x80]);
    let info = signature::parse(&sig_image(SignatureSpec::Pkcs7(p))).expect("signed");
    assert_eq!(info.signer, b"Indef");
    assert_eq!(info.key_id, [0x42]);
    assert_eq!(info.hash_algo, "sha384");
    assert_eq!(info.signature, vec![7; 300]);
}

#[test]
fn pkcs7_garbage_means_no_signature() {
    let good = Pkcs7Signature::new("k", &[1], "sha256", &[1, 2, 3]).to_der();
    // Every truncation of the DER (the trailer stays well-formed).
    for len in 0..good.len() {
        let spec = SignatureSpec::Raw {
            algo: 0,
            hash: 0,
            id_type: 2,
            signer: vec![],
            key_id: vec![],
            signature: good[..len].to_vec(),
        };
        assert_eq!(signature::parse(&sig_image(spec)), None, "len {len}");
    }
    // Bytes after the ContentInfo inside sig_len are ignored.
    let mut padded = good.clone();
    padded.extend_from_slice(b"junk");
    let spec = SignatureSpec::Raw {
        algo: 0,
        hash: 0,
        id_type: 2,
        signer: vec![],
        key_id: vec![],
        signature: padded,
    };
    assert!(signature::parse(&sig_image(spec)).is_some());
    // Wrong content type (pkcs7-data instead of signedData).
    let mut wrong = good.clone();
    let at = wrong
        .windows(9)
        .position(|w| w == [0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x07, 0x02])
        .expect("oid");
    wrong[at + 8] = 0x01;
    let spec = SignatureSpec::Raw {
        algo: 0,
        hash: 0,
        id_type: 2,
        signer: vec![],
        key_id: vec![],
        signature: wrong,
    };
    assert_eq!(signature::parse(&sig_image(spec)), None);
    // Every single-bit flip must not panic.
    let img = sig_image(SignatureSpec::Pkcs7(Pkcs7Signature::new(
        "k",
        &[1],
        "sha256",
        &[1, 2, 3],
    )));
    let mut copy = img.clone();
    for pos in img.len() - 28 - 12 - good.len()..img.len() {
        for bit in 0..8 {
            copy[pos] ^= 1 << bit;
            let _ = signature::parse(&copy);
            copy[pos] ^= 1 << bit;
        }
    }
}

#[test]
fn raw_signature_layout() {
    let spec = SignatureSpec::Raw {
        algo: 1,
        hash: 2,
        id_type: 1,
        signer: b"Signer Name".to_vec(),
        key_id: vec![0xde, 0xad],
        signature: vec![1, 2, 3],
    };
    let img = sig_image(spec);
    let info = signature::parse(&img).expect("signed");
    assert_eq!(info.id_type_name(), "X509");
    assert_eq!(info.algo_name(), "RSA");
    assert_eq!(info.signer, b"Signer Name");
    assert_eq!(info.key_id, [0xde, 0xad]);
    assert_eq!(info.hash_algo, "sha1");
    assert_eq!(info.signature, [1, 2, 3]);
    let t = signature::trailer(&img).expect("trailer");
    assert_eq!((t.signer_len, t.key_id_len, t.sig_len), (11, 2, 3));
    let unsigned = SynthModule::new("m").modinfo("license", "GPL").build();
    assert_eq!(t.module_len, unsigned.len());
    assert_eq!(&img[..t.module_len], &unsigned[..]);
}

#[test]
fn invalid_trailers() {
    let raw = |algo, hash, id_type, sig: Vec<u8>| SignatureSpec::Raw {
        algo,
        hash,
        id_type,
        signer: vec![b's'],
        key_id: vec![b'k'],
        signature: sig,
    };
    assert!(signature::parse(&sig_image(raw(1, 8, 0, vec![1]))).is_some());
    assert_eq!(signature::parse(&sig_image(raw(2, 0, 0, vec![1]))), None);
    assert_eq!(signature::parse(&sig_image(raw(0, 9, 0, vec![1]))), None);
    assert_eq!(signature::parse(&sig_image(raw(0, 0, 3, vec![1]))), None);
    assert_eq!(signature::parse(&sig_image(raw(0, 0, 0, vec![]))), None); // sig_len 0

    // Lengths larger than what precedes the block.
    let mut tiny = Vec::new();
    synth::append_signature(&mut tiny, &raw(0, 0, 0, vec![1]));
    assert_eq!(tiny.len(), 1 + 1 + 1 + 12 + 28);
    assert!(signature::parse(&tiny).is_some());
    assert_eq!(signature::parse(&tiny[1..]), None);
    assert_eq!(signature::trailer(&tiny[1..]), None);
    assert_eq!(signature::unsigned_len(&tiny[1..]), tiny.len() - 1);

    // Magic alone, or magic with a short block.
    assert_eq!(signature::parse(signature::SIG_MAGIC), None);
    let mut short = vec![0u8; 11];
    short.extend_from_slice(signature::SIG_MAGIC);
    assert_eq!(signature::parse(&short), None);
    // A damaged magic.
    let mut img = sig_image(raw(0, 0, 0, vec![1]));
    let last = img.len() - 1;
    img[last] = b'!';
    assert_eq!(signature::parse(&img), None);
}

#[test]
fn signature_survives_compression_round_trip() {
    let img = signed(Target::X86_64);
    for c in [
        modcore::compress::Compression::Xz,
        modcore::compress::Compression::Zstd,
        modcore::compress::Compression::Gzip,
    ] {
        let packed = synth::compress(&img, c);
        let plain = modcore::compress::decompress(&packed).expect("decompress");
        assert_eq!(signature::parse(&plain), signature::parse(&img));
    }
}

// ---------------------------------------------------------------------------------
// Forced-load patches

#[test]
fn clear_alloc_flag_on_versions() {
    for target in Target::LAYOUTS {
        let img = full_module(target).build();
        let before = Elf::parse(&img)
            .expect("ok")
            .find_section(b"__versions")
            .expect("versions")
            .0;
        assert_ne!(before.flags & 2, 0);
        let mut patched = img.clone();
        modcore::elf::clear_alloc_flag(&mut patched, b"__versions").expect("patched");
        let after = Elf::parse(&patched)
            .expect("ok")
            .find_section(b"__versions")
            .expect("versions")
            .0;
        assert_eq!(after.flags, before.flags & !2);
        let changed = img.iter().zip(&patched).filter(|(a, b)| a != b).count();
        assert_eq!(changed, 1, "{target:?}");
        assert_eq!(
            module::extract(&patched).expect("ok"),
            module::extract(&img).expect("ok")
        );
        let err = modcore::elf::clear_alloc_flag(&mut patched, b"__nope").expect_err("none");
        assert_eq!(err, modcore::elf::StripError::NoSection);
        assert_eq!(err.errno(), 2);
    }
    let mut junk = vec![0u8; 10];
    assert!(matches!(
        modcore::elf::clear_alloc_flag(&mut junk, b"x"),
        Err(modcore::elf::StripError::Elf(ElfError::NotElf(_)))
    ));
}

#[test]
fn strip_vermagic_clears_the_string() {
    use modcore::elf::StripError;
    for target in Target::LAYOUTS {
        let img = SynthModule::new("m")
            .target(target)
            .modinfo("license", "GPL")
            .standard_modinfo("", "6.1.0")
            .modinfo("alias", "after")
            .build();
        let mut patched = img.clone();
        module::strip_vermagic(&mut patched).expect("stripped");
        assert_eq!(patched.len(), img.len());
        let info = module::extract(&patched).expect("ok").modinfo;
        assert!(info.iter().all(|(k, _)| k != b"vermagic"));
        assert_eq!(info.last(), Some(&(b"alias".to_vec(), b"after".to_vec())));
        // Only the vermagic bytes changed.
        let changed = img.iter().zip(&patched).filter(|(a, b)| a != b).count();
        assert_eq!(
            changed,
            "vermagic=6.1.0 SMP preempt mod_unload modversions ".len()
        );
        assert_eq!(
            module::strip_vermagic(&mut patched),
            Err(StripError::NoVermagic)
        );
    }
    for (section, want) in [
        (&b"vermagic=\0"[..], Ok(())),
        (&b"\0\0vermagic=x"[..], Ok(())),
        (&b"xvermagic=1\0"[..], Err(StripError::NoVermagic)),
        (&b"a\0vermagic="[..], Err(StripError::NoVermagic)), // nothing after '='
        (&b"\0"[..], Ok(())),                                // too small: left alone
        (&b""[..], Ok(())),
    ] {
        let mut img = SynthModule::new("m").modinfo_section(section).build();
        assert_eq!(module::strip_vermagic(&mut img), want, "{section:?}");
    }
    let mut img = SynthModule::new("m").build();
    synth::rename_section(&mut img, ".modinfo", ".modinfX");
    let err = module::strip_vermagic(&mut img).expect_err("no modinfo");
    assert_eq!(err, StripError::NoSection);
    assert_eq!(err.errno(), 2);
}

#[test]
fn modversions_listing() {
    for target in Target::LAYOUTS {
        let img = SynthModule::new("m")
            .target(target)
            .needs("a")
            .version("module_layout", 0x10)
            .version(".dotted", 0x20)
            .version("a", 0x30)
            .build();
        let list: Vec<(String, u64)> = module::modversions(&img)
            .expect("ok")
            .expect("present")
            .iter()
            .map(|r| (String::from_utf8_lossy(r.name).into_owned(), r.crc))
            .collect();
        assert_eq!(
            list,
            vec![
                ("module_layout".to_string(), 0x10),
                ("dotted".to_string(), 0x20),
                ("a".to_string(), 0x30)
            ]
        );
    }
    let img = SynthModule::new("m").build();
    assert_eq!(module::modversions(&img).expect("ok"), None);
    let img = SynthModule::new("m")
        .section("__versions", &[0u8; 63])
        .build();
    assert_eq!(module::modversions(&img).expect_err("bad size").errno(), 22);
}
