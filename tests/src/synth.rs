//! Synthetic kernel modules for tests.
//!
//! [`SynthModule`] builds a relocatable ELF file (with `object::write`) that carries
//! what the module tools look at:
//!
//! * a `.modinfo` section of `key=value` strings;
//! * exports: `__crc_<sym>` symbols (absolute, or pointing into a `__kcrctab` section),
//!   a global function symbol `<sym>` in `.text`, and the `__ksymtab_strings` section;
//! * undefined symbols (strong or weak, or with a raw `st_info`);
//! * a `__versions` section (64-byte records, CRC width by ELF class);
//! * arbitrary extra sections;
//! * optionally an appended module signature (PKCS#7 or the old raw layout).
//!
//! ```
//! use tests::synth::{SynthModule, Target};
//! let image: Vec<u8> = SynthModule::new("fat")
//!     .target(Target::PowerPc64)
//!     .modinfo("alias", "fs-fat")
//!     .export_crc("fat_get", 0x1234)
//!     .needs("printk")
//!     .weak_needs("maybe_there")
//!     .version("module_layout", 0xabcd)
//!     .build();
//! assert_eq!(&image[..4], b"\x7fELF");
//! ```
//!
//! The free functions [`xz`], [`zstd`], [`gzip`] and [`compress`] produce compressed
//! fixtures; [`append_signature`] and [`Pkcs7Signature`] build signature trailers.

use modcore::compress::Compression;
use object::write::{Object, StandardSection, Symbol, SymbolSection};
use object::SymbolScope;
use object::{Architecture, BinaryFormat, Endianness, SectionKind, SymbolFlags, SymbolKind};

/// The ELF flavour to produce: class, byte order and `e_machine`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Target {
    /// ELF64, little-endian, EM_X86_64.
    X86_64,
    /// ELF32, little-endian, EM_386.
    I386,
    /// ELF64, big-endian, EM_PPC64.
    PowerPc64,
    /// ELF32, big-endian, EM_PPC.
    PowerPc,
    /// ELF64, big-endian, EM_SPARCV9 (43): STT_REGISTER symbols are special.
    Sparc64,
    /// ELF32, big-endian, EM_SPARC (2).
    Sparc,
}

impl Target {
    /// The four class/byte-order combinations.
    pub const LAYOUTS: [Target; 4] = [
        Target::X86_64,
        Target::I386,
        Target::PowerPc64,
        Target::PowerPc,
    ];

    /// True for ELFCLASS64.
    pub fn is_64(self) -> bool {
        matches!(self, Target::X86_64 | Target::PowerPc64 | Target::Sparc64)
    }

    /// The byte order.
    pub fn endian(self) -> Endianness {
        match self {
            Target::X86_64 | Target::I386 => Endianness::Little,
            _ => Endianness::Big,
        }
    }

    fn architecture(self) -> Architecture {
        match self {
            Target::X86_64 => Architecture::X86_64,
            Target::I386 => Architecture::I386,
            Target::PowerPc64 => Architecture::PowerPc64,
            Target::PowerPc => Architecture::PowerPc,
            Target::Sparc64 => Architecture::Sparc64,
            Target::Sparc => Architecture::Sparc,
        }
    }

    /// Encodes an unsigned value of `width` bytes in this target's byte order.
    pub fn uint(self, value: u64, width: usize) -> Vec<u8> {
        let be = value.to_be_bytes();
        let mut v = be[8 - width..].to_vec();
        if self.endian() == Endianness::Little {
            v.reverse();
        }
        v
    }
}

/// How an export's CRC is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrcStyle {
    /// `__crc_<sym>` is an absolute (SHN_ABS) global symbol whose value is the CRC
    /// (kernels before 5.x style).
    Absolute,
    /// `__crc_<sym>` is a local symbol pointing at a 4-byte CRC inside `__kcrctab`
    /// (current kernels).
    Section,
}

#[derive(Debug, Clone)]
struct ExportSpec {
    name: Vec<u8>,
    crc: Option<(u64, CrcStyle)>,
}

#[derive(Debug, Clone)]
struct NeedSpec {
    name: Vec<u8>,
    weak: bool,
    st_info: Option<u8>,
}

/// Builder for a synthetic module. All methods consume and return the builder.
#[derive(Debug, Clone)]
pub struct SynthModule {
    name: String,
    target: Target,
    modinfo: Vec<Vec<u8>>,
    modinfo_section: Option<Vec<u8>>,
    exports: Vec<ExportSpec>,
    ksymtab_strings: bool,
    ksymtab_extra: Vec<Vec<u8>>,
    needs: Vec<NeedSpec>,
    versions: Vec<(Vec<u8>, u64)>,
    sections: Vec<(Vec<u8>, Vec<u8>)>,
    signature: Option<SignatureSpec>,
}

/// A new module whose `.modinfo` says `name=<name>`, as modpost always writes it (the
/// runtime tests' usual starting point; `use tests::synth::named as m;`).
pub fn named(name: &str) -> SynthModule {
    SynthModule::new(name).modinfo("name", name)
}

impl SynthModule {
    /// A new x86-64 module. `name` is only used by [`SynthModule::standard_modinfo`]
    /// and [`SynthModule::file_name`]; nothing is added to `.modinfo` implicitly.
    pub fn new(name: &str) -> SynthModule {
        SynthModule {
            name: name.to_string(),
            target: Target::X86_64,
            modinfo: Vec::new(),
            modinfo_section: None,
            exports: Vec::new(),
            ksymtab_strings: true,
            ksymtab_extra: Vec::new(),
            needs: Vec::new(),
            versions: Vec::new(),
            sections: Vec::new(),
            signature: None,
        }
    }

    /// The module name given to [`SynthModule::new`].
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `<name>.ko`.
    pub fn file_name(&self) -> String {
        format!("{}.ko", self.name)
    }

    /// Chooses class, byte order and machine (default [`Target::X86_64`]).
    pub fn target(mut self, target: Target) -> SynthModule {
        self.target = target;
        self
    }

    /// Appends a `key=value` string to `.modinfo`.
    pub fn modinfo(mut self, key: &str, value: &str) -> SynthModule {
        self.modinfo.push(format!("{key}={value}").into_bytes());
        self
    }

    /// Appends a raw string (no `=` added) to `.modinfo`; it must not contain NUL.
    pub fn modinfo_raw(mut self, entry: &[u8]) -> SynthModule {
        self.modinfo.push(entry.to_vec());
        self
    }

    /// Replaces the whole `.modinfo` section content with `bytes` (used verbatim).
    pub fn modinfo_section(mut self, bytes: &[u8]) -> SynthModule {
        self.modinfo_section = Some(bytes.to_vec());
        self
    }

    /// Appends the entries a real in-tree module carries after its own ones:
    /// `depends=<depends>`, `retpoline=Y`, `intree=Y`, `name=<name>` and
    /// `vermagic=<kver> SMP preempt mod_unload modversions ` (note the trailing space).
    pub fn standard_modinfo(self, depends: &str, kver: &str) -> SynthModule {
        let name = self.name.clone();
        self.modinfo("depends", depends)
            .modinfo("retpoline", "Y")
            .modinfo("intree", "Y")
            .modinfo("name", &name)
            .modinfo(
                "vermagic",
                &format!("{kver} SMP preempt mod_unload modversions "),
            )
    }

    /// Exports `sym` without a CRC: it is only listed in `__ksymtab_strings` (so depmod
    /// sees it with CRC 0, unless some other export has a `__crc_` symbol).
    pub fn export(mut self, sym: &str) -> SynthModule {
        self.exports.push(ExportSpec {
            name: sym.as_bytes().to_vec(),
            crc: None,
        });
        self
    }

    /// Exports `sym` with an absolute `__crc_<sym>` symbol of value `crc`.
    pub fn export_crc(self, sym: &str, crc: u64) -> SynthModule {
        self.export_with(sym, crc, CrcStyle::Absolute)
    }

    /// Exports `sym` with a `__crc_<sym>` symbol pointing into `__kcrctab` (4 bytes, so
    /// only the low 32 bits of `crc` are stored).
    pub fn export_crc_section(self, sym: &str, crc: u32) -> SynthModule {
        self.export_with(sym, u64::from(crc), CrcStyle::Section)
    }

    /// Exports `sym` with the given CRC style.
    pub fn export_with(mut self, sym: &str, crc: u64, style: CrcStyle) -> SynthModule {
        self.exports.push(ExportSpec {
            name: sym.as_bytes().to_vec(),
            crc: Some((crc, style)),
        });
        self
    }

    /// Appends an extra string to `__ksymtab_strings` (e.g. a symbol namespace).
    pub fn ksymtab_string(mut self, s: &str) -> SynthModule {
        self.ksymtab_extra.push(s.as_bytes().to_vec());
        self
    }

    /// Leaves out the `__ksymtab_strings` section.
    pub fn no_ksymtab_strings(mut self) -> SynthModule {
        self.ksymtab_strings = false;
        self
    }

    /// Adds an undefined (needed) symbol with global binding.
    pub fn needs(mut self, sym: &str) -> SynthModule {
        self.needs.push(NeedSpec {
            name: sym.as_bytes().to_vec(),
            weak: false,
            st_info: None,
        });
        self
    }

    /// Adds an undefined symbol with weak binding.
    pub fn weak_needs(mut self, sym: &str) -> SynthModule {
        self.needs.push(NeedSpec {
            name: sym.as_bytes().to_vec(),
            weak: true,
            st_info: None,
        });
        self
    }

    /// Adds an undefined symbol with a raw `st_info` (binding << 4 | type), e.g.
    /// `0x1d` for a global SPARC STT_REGISTER symbol.
    pub fn needs_with_info(mut self, sym: &str, st_info: u8) -> SynthModule {
        self.needs.push(NeedSpec {
            name: sym.as_bytes().to_vec(),
            weak: st_info >> 4 == object::elf::STB_WEAK,
            st_info: Some(st_info),
        });
        self
    }

    /// Adds a `__versions` record (CRC 4 bytes in ELF32, 8 bytes in ELF64). Names longer
    /// than the record allows are cut so that a NUL always ends them.
    pub fn version(mut self, sym: &str, crc: u64) -> SynthModule {
        self.versions.push((sym.as_bytes().to_vec(), crc));
        self
    }

    /// Adds an arbitrary section (type PROGBITS, no flags) after the generated ones.
    /// Sections may share a name; lookups find the first valid one.
    pub fn section(mut self, name: &str, data: &[u8]) -> SynthModule {
        self.sections
            .push((name.as_bytes().to_vec(), data.to_vec()));
        self
    }

    /// Appends a signature trailer to the built image.
    pub fn signature(mut self, spec: SignatureSpec) -> SynthModule {
        self.signature = Some(spec);
        self
    }

    /// The `__versions` section content for this target.
    pub fn versions_bytes(&self) -> Vec<u8> {
        let width = if self.target.is_64() { 8 } else { 4 };
        let mut out = Vec::with_capacity(self.versions.len() * 64);
        for (name, crc) in &self.versions {
            let mut rec = self.target.uint(*crc, width);
            let room = 64 - width - 1;
            rec.extend_from_slice(&name[..name.len().min(room)]);
            rec.resize(64, 0);
            out.extend_from_slice(&rec);
        }
        out
    }

    /// Builds the ELF image (plus signature, if any).
    pub fn build(&self) -> Vec<u8> {
        let t = self.target;
        let mut obj = Object::new(BinaryFormat::Elf, t.architecture(), t.endian());

        // .text with one 16-byte slot per export.
        let text = obj.section_id(StandardSection::Text);
        obj.append_section_data(text, &vec![0xC3; 16 * self.exports.len().max(1)], 16);

        let modinfo = obj.add_section(Vec::new(), b".modinfo".to_vec(), SectionKind::ReadOnlyData);
        let modinfo_bytes = match &self.modinfo_section {
            Some(raw) => raw.clone(),
            None => self
                .modinfo
                .iter()
                .flat_map(|e| e.iter().copied().chain(std::iter::once(0)))
                .collect(),
        };
        obj.append_section_data(modinfo, &modinfo_bytes, 1);

        if !self.versions.is_empty() {
            let v = obj.add_section(
                Vec::new(),
                b"__versions".to_vec(),
                SectionKind::ReadOnlyData,
            );
            obj.append_section_data(v, &self.versions_bytes(), 32);
        }

        let has_section_crc = self
            .exports
            .iter()
            .any(|e| matches!(e.crc, Some((_, CrcStyle::Section))));
        let kcrctab = has_section_crc
            .then(|| obj.add_section(Vec::new(), b"__kcrctab".to_vec(), SectionKind::ReadOnlyData));

        if self.ksymtab_strings && (!self.exports.is_empty() || !self.ksymtab_extra.is_empty()) {
            let mut strings = Vec::new();
            for name in self
                .exports
                .iter()
                .map(|e| &e.name)
                .chain(self.ksymtab_extra.iter())
            {
                strings.extend_from_slice(name);
                strings.push(0);
            }
            let s = obj.add_section(
                Vec::new(),
                b"__ksymtab_strings".to_vec(),
                SectionKind::ReadOnlyString,
            );
            obj.append_section_data(s, &strings, 1);
        }

        for (name, data) in &self.sections {
            let s = obj.add_section(
                Vec::new(),
                name.clone(),
                SectionKind::Elf(object::elf::SHT_PROGBITS),
            );
            obj.append_section_data(s, data, 1);
        }

        for (i, e) in self.exports.iter().enumerate() {
            obj.add_symbol(Symbol {
                name: e.name.clone(),
                value: 16 * i as u64,
                size: 16,
                kind: SymbolKind::Text,
                scope: SymbolScope::Dynamic,
                weak: false,
                section: SymbolSection::Section(text),
                flags: SymbolFlags::None,
            });
            let Some((crc, style)) = e.crc else { continue };
            let mut crc_name = b"__crc_".to_vec();
            crc_name.extend_from_slice(&e.name);
            let (value, section, scope) = match (style, kcrctab) {
                (CrcStyle::Section, Some(tab)) => {
                    let off = obj.append_section_data(tab, &t.uint(crc, 4), 4);
                    (off, SymbolSection::Section(tab), SymbolScope::Compilation)
                }
                _ => (crc, SymbolSection::Absolute, SymbolScope::Dynamic),
            };
            obj.add_symbol(Symbol {
                name: crc_name,
                value,
                size: 0,
                kind: SymbolKind::Label,
                scope,
                weak: false,
                section,
                flags: SymbolFlags::None,
            });
        }

        for n in &self.needs {
            obj.add_symbol(Symbol {
                name: n.name.clone(),
                value: 0,
                size: 0,
                kind: SymbolKind::Unknown,
                scope: SymbolScope::Dynamic,
                weak: n.weak,
                section: SymbolSection::Undefined,
                flags: match n.st_info {
                    Some(st_info) => SymbolFlags::Elf {
                        st_info,
                        st_other: 0,
                    },
                    None => SymbolFlags::None,
                },
            });
        }

        let mut image = obj
            .write()
            .expect("object::write failed to build a synthetic module");
        if let Some(sig) = &self.signature {
            append_signature(&mut image, sig);
        }
        image
    }
}

/// Digest algorithm OIDs (content bytes) by kmod's name for them.
pub fn digest_oid(name: &str) -> Option<&'static [u8]> {
    Some(match name {
        "md4" => &[0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x02, 0x04],
        "md5" => &[0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x02, 0x05],
        "sha1" => &[0x2B, 0x0E, 0x03, 0x02, 0x1A],
        "rmd160" => &[0x2B, 0x24, 0x03, 0x02, 0x01],
        "sha256" => &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01],
        "sha384" => &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x02],
        "sha512" => &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x03],
        "sha224" => &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x04],
        "sm3" => &[0x2A, 0x81, 0x1C, 0xCF, 0x55, 0x01, 0x83, 0x11],
        _ => return None,
    })
}

/// OID 2.5.4.3 (commonName), content bytes.
pub const OID_COMMON_NAME: &[u8] = &[0x55, 0x04, 0x03];
/// OID 2.5.4.10 (organizationName), content bytes.
pub const OID_ORGANIZATION: &[u8] = &[0x55, 0x04, 0x0A];
/// Universal tag of UTF8String.
pub const TAG_UTF8STRING: u8 = 0x0C;

/// Encodes one DER value with a definite length.
pub fn der(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = (len as u64).to_be_bytes();
        let skip = bytes.iter().take_while(|&&b| b == 0).count();
        out.push(0x80 | (8 - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend_from_slice(content);
    out
}

/// Encodes a constructed value with a BER indefinite length (`tag 80 ... 00 00`).
pub fn ber_indefinite(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag, 0x80];
    out.extend_from_slice(content);
    out.extend_from_slice(&[0, 0]);
    out
}

/// The DER INTEGER content for an unsigned big-endian magnitude (minimal, with a
/// leading zero when the top bit is set; zero is `00`).
pub fn unsigned_integer_content(magnitude: &[u8]) -> Vec<u8> {
    let skip = magnitude.iter().take_while(|&&b| b == 0).count();
    let m = &magnitude[skip..];
    match m.first() {
        None => vec![0],
        Some(&b) if b & 0x80 != 0 => [&[0u8][..], m].concat(),
        Some(_) => m.to_vec(),
    }
}

/// A PKCS#7 signedData like the kernel's `sign-file` produces (no certificates, no
/// signed attributes, issuer-and-serial signer identifier).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pkcs7Signature {
    /// Issuer attributes in order: (OID content bytes, string tag, value).
    pub issuer: Vec<(Vec<u8>, u8, Vec<u8>)>,
    /// Serial number INTEGER content bytes, used verbatim.
    pub serial_content: Vec<u8>,
    /// Digest algorithm OID content bytes.
    pub digest_oid: Vec<u8>,
    /// The encryptedDigest bytes.
    pub signature: Vec<u8>,
    /// Encode the outer constructed values with BER indefinite lengths.
    pub indefinite: bool,
}

impl Pkcs7Signature {
    /// Issuer `CN=<signer>`, serial `key_id` (an unsigned magnitude), digest by kmod
    /// name (`sha256`, `sha512`, ...; unknown names panic).
    pub fn new(signer: &str, key_id: &[u8], digest: &str, signature: &[u8]) -> Pkcs7Signature {
        Pkcs7Signature {
            issuer: vec![(
                OID_COMMON_NAME.to_vec(),
                TAG_UTF8STRING,
                signer.as_bytes().to_vec(),
            )],
            serial_content: unsigned_integer_content(key_id),
            digest_oid: digest_oid(digest).expect("unknown digest name").to_vec(),
            signature: signature.to_vec(),
            indefinite: false,
        }
    }

    /// The DER (or BER, see `indefinite`) encoding of the ContentInfo.
    pub fn to_der(&self) -> Vec<u8> {
        const SIGNED_DATA: &[u8] = &[0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x07, 0x02];
        const DATA: &[u8] = &[0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x07, 0x01];
        const RSA: &[u8] = &[0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x01, 0x01];
        let cons = |tag: u8, content: &[u8]| {
            if self.indefinite {
                ber_indefinite(tag, content)
            } else {
                der(tag, content)
            }
        };
        let digest_alg = der(0x30, &der(0x06, &self.digest_oid));
        let rsa_alg = der(0x30, &[der(0x06, RSA), der(0x05, &[])].concat());
        let name: Vec<u8> = self
            .issuer
            .iter()
            .flat_map(|(oid, tag, value)| {
                der(
                    0x31,
                    &der(0x30, &[der(0x06, oid), der(*tag, value)].concat()),
                )
            })
            .collect();
        let signer_info = der(
            0x30,
            &[
                der(0x02, &[1]),
                der(
                    0x30,
                    &[der(0x30, &name), der(0x02, &self.serial_content)].concat(),
                ),
                digest_alg.clone(),
                rsa_alg,
                der(0x04, &self.signature),
            ]
            .concat(),
        );
        let signed_data = cons(
            0x30,
            &[
                der(0x02, &[1]),
                der(0x31, &digest_alg),
                der(0x30, &der(0x06, DATA)),
                cons(0x31, &signer_info),
            ]
            .concat(),
        );
        cons(
            0x30,
            &[der(0x06, SIGNED_DATA), cons(0xA0, &signed_data)].concat(),
        )
    }
}

/// A signature trailer to append to a module image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignatureSpec {
    /// id_type 2: the PKCS#7 DER is the signature data; algo, hash, signer_len and
    /// key_id_len are 0 (as the kernel writes them).
    Pkcs7(Pkcs7Signature),
    /// Arbitrary trailer fields with raw signer / key id / signature bytes.
    Raw {
        /// `algo` byte.
        algo: u8,
        /// `hash` byte.
        hash: u8,
        /// `id_type` byte.
        id_type: u8,
        /// Signer bytes (length must fit in a byte).
        signer: Vec<u8>,
        /// Key id bytes (length must fit in a byte).
        key_id: Vec<u8>,
        /// Signature bytes.
        signature: Vec<u8>,
    },
}

/// Appends `[signer][key id][signature][module_signature][magic]` to `image`.
pub fn append_signature(image: &mut Vec<u8>, spec: &SignatureSpec) {
    let (algo, hash, id_type, signer, key_id, sig) = match spec {
        SignatureSpec::Pkcs7(p) => (0, 0, 2, Vec::new(), Vec::new(), p.to_der()),
        SignatureSpec::Raw {
            algo,
            hash,
            id_type,
            signer,
            key_id,
            signature,
        } => (
            *algo,
            *hash,
            *id_type,
            signer.clone(),
            key_id.clone(),
            signature.clone(),
        ),
    };
    image.extend_from_slice(&signer);
    image.extend_from_slice(&key_id);
    image.extend_from_slice(&sig);
    image.extend_from_slice(&[
        algo,
        hash,
        id_type,
        signer.len() as u8,
        key_id.len() as u8,
        0,
        0,
        0,
    ]);
    image.extend_from_slice(&(sig.len() as u32).to_be_bytes());
    image.extend_from_slice(modcore::signature::SIG_MAGIC);
}

/// xz-compresses `data` (preset 6, CRC64 check, like `xz` defaults).
pub fn xz(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut enc = liblzma::write::XzEncoder::new(Vec::new(), 6);
    enc.write_all(data).expect("xz encode");
    enc.finish().expect("xz finish")
}

/// zstd-compresses `data` (level 3) with the content size and a checksum in the frame,
/// like the `zstd` command the kernel build uses.
pub fn zstd(data: &[u8]) -> Vec<u8> {
    let mut c = zstd::bulk::Compressor::new(3).expect("zstd context");
    c.include_checksum(true).expect("zstd checksum flag");
    c.include_contentsize(true).expect("zstd size flag");
    c.compress(data).expect("zstd encode")
}

/// gzip-compresses `data`.
pub fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(data).expect("gzip encode");
    enc.finish().expect("gzip finish")
}

/// Compresses `data` in the given format (`None` returns a copy).
pub fn compress(data: &[u8], format: Compression) -> Vec<u8> {
    match format {
        Compression::None => data.to_vec(),
        Compression::Xz => xz(data),
        Compression::Zstd => zstd(data),
        Compression::Gzip => gzip(data),
    }
}

/// Fields of the ELF file header that [`set_header_field`] can overwrite.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderField {
    /// `e_machine`.
    Machine,
    /// `e_shoff`.
    ShOff,
    /// `e_shentsize`.
    ShEntSize,
    /// `e_shnum`.
    ShNum,
    /// `e_shstrndx`.
    ShStrNdx,
}

/// Fields of a section header that [`set_section_field`] can overwrite.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SectionField {
    /// `sh_name`.
    Name,
    /// `sh_type`.
    Type,
    /// `sh_flags`.
    Flags,
    /// `sh_offset`.
    Offset,
    /// `sh_size`.
    Size,
}

/// Fields of a symbol table entry that [`set_symbol_field`] can overwrite.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SymbolField {
    /// `st_name`.
    Name,
    /// `st_value`.
    Value,
    /// `st_info`.
    Info,
    /// `st_shndx`.
    Shndx,
}

fn is_64(image: &[u8]) -> bool {
    image[4] == object::elf::ELFCLASS64
}

fn put(image: &mut [u8], offset: usize, width: usize, value: u64) {
    let big = image[5] == object::elf::ELFDATA2MSB;
    for i in 0..width {
        let byte = (value >> (8 * i)) as u8;
        let at = if big {
            offset + width - 1 - i
        } else {
            offset + i
        };
        image[at] = byte;
    }
}

/// Overwrites a field of the ELF header (in the file's byte order).
pub fn set_header_field(image: &mut [u8], field: HeaderField, value: u64) {
    let (off, width) = match (is_64(image), field) {
        (_, HeaderField::Machine) => (18, 2),
        (true, HeaderField::ShOff) => (40, 8),
        (false, HeaderField::ShOff) => (32, 4),
        (true, HeaderField::ShEntSize) => (58, 2),
        (false, HeaderField::ShEntSize) => (46, 2),
        (true, HeaderField::ShNum) => (60, 2),
        (false, HeaderField::ShNum) => (48, 2),
        (true, HeaderField::ShStrNdx) => (62, 2),
        (false, HeaderField::ShStrNdx) => (50, 2),
    };
    put(image, off, width, value);
}

/// Overwrites a field of section header `index`.
pub fn set_section_field_at(image: &mut [u8], index: u16, field: SectionField, value: u64) {
    let elf = modcore::elf::Elf::parse(image).expect("valid ELF");
    let base = elf
        .section_info(index)
        .expect("valid section index")
        .header_offset as usize;
    let (off, width) = match (is_64(image), field) {
        (_, SectionField::Name) => (0, 4),
        (_, SectionField::Type) => (4, 4),
        (true, SectionField::Flags) => (8, 8),
        (false, SectionField::Flags) => (8, 4),
        (true, SectionField::Offset) => (24, 8),
        (false, SectionField::Offset) => (16, 4),
        (true, SectionField::Size) => (32, 8),
        (false, SectionField::Size) => (20, 4),
    };
    put(image, base + off, width, value);
}

/// Index of the first section named `name` (by the lookup rule of `modcore::elf`).
pub fn section_index(image: &[u8], name: &str) -> u16 {
    let elf = modcore::elf::Elf::parse(image).expect("valid ELF");
    elf.section(name.as_bytes()).expect("section present").1
}

/// Overwrites a field of the first section named `name`.
pub fn set_section_field(image: &mut [u8], name: &str, field: SectionField, value: u64) {
    let index = section_index(image, name);
    set_section_field_at(image, index, field, value);
}

/// Renames a section in place by rewriting its name in the section-name table. The new
/// name must have the same length (e.g. `.symtab` -> `.symtaX`).
pub fn rename_section(image: &mut [u8], name: &str, new_name: &str) {
    assert_eq!(name.len(), new_name.len(), "same-length rename only");
    let elf = modcore::elf::Elf::parse(image).expect("valid ELF");
    let (info, _) = elf.find_section(name.as_bytes()).expect("section present");
    let names_at = elf.offset_of(elf.section_names()).expect("name table") as usize;
    let at = names_at + info.name_offset as usize;
    image[at..at + new_name.len()].copy_from_slice(new_name.as_bytes());
}

/// Overwrites a field of the first symbol table entry named `symbol`.
pub fn set_symbol_field(image: &mut [u8], symbol: &str, field: SymbolField, value: u64) {
    let elf = modcore::elf::Elf::parse(image).expect("valid ELF");
    let syms = elf.symbols().expect("symbol table");
    let sym = syms
        .iter()
        .find(|s| s.name == Some(symbol.as_bytes()))
        .expect("symbol present");
    let (symtab, _) = elf.section(b".symtab").expect(".symtab");
    let entsize = elf.class().symbol_size();
    let base = elf.offset_of(symtab).expect("symtab offset") as usize + sym.index * entsize;
    let (off, width) = match (is_64(image), field) {
        (_, SymbolField::Name) => (0, 4),
        (true, SymbolField::Info) => (4, 1),
        (false, SymbolField::Info) => (12, 1),
        (true, SymbolField::Shndx) => (6, 2),
        (false, SymbolField::Shndx) => (14, 2),
        (true, SymbolField::Value) => (8, 8),
        (false, SymbolField::Value) => (4, 4),
    };
    put(image, base + off, width, value);
}
