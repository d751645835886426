//! What the tools read out of one module file: `.modinfo`, exports, needed symbols.
//!
//! `extract` takes the (already decompressed) ELF image and returns a [`ModuleData`].
//! It does no I/O.

use std::collections::HashMap;

use crate::elf::{Elf, ElfError, SectionInfo, StripError, Symbols};
use crate::modinfo::{self, ModinfoEntries};

/// One exported symbol, as depmod sees it (spec depmod-and-index §4.4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Export {
    pub name: Vec<u8>,
    pub crc: u64,
}

/// One symbol the module needs (spec §4.5), in list order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Need {
    pub name: Vec<u8>,
    pub crc: u64,
    pub weak: bool,
}

/// Everything depmod (and modinfo) takes from a module image.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ModuleData {
    /// `.modinfo` entries in file order, duplicates kept (spec §4.3).
    pub modinfo: Vec<(Vec<u8>, Vec<u8>)>,
    /// Exports (spec §4.4).
    pub exports: Vec<Export>,
    /// Needed symbols (spec §4.5).
    pub needs: Vec<Need>,
}

/// `st_shndx` of an undefined symbol.
const SHN_UNDEF: u16 = object::elf::SHN_UNDEF;
/// `st_shndx` of an absolute symbol.
const SHN_ABS: u16 = object::elf::SHN_ABS;
/// SPARC's STT_REGISTER symbol type.
const STT_SPARC_REGISTER: u8 = object::elf::STT_SPARC_REGISTER;
/// Size of one `__versions` record.
const MODVERSION_SIZE: usize = 64;
/// Prefix of the symbols that carry an export's CRC.
const CRC_PREFIX: &[u8] = b"__crc_";

/// The most symbol-name bytes one image may make us copy or hash, per list: the image
/// length plus 64 KiB.
///
/// Names are C strings read anywhere in the image (like kmod, they may run past their
/// string table), so entries can overlap: thousands of symbols or `__versions` records
/// can all name the same long string, which would make the work quadratic in the file
/// size. Real modules use well under a tenth of their size for names (Debian 6.1 and
/// 6.12: at most 7%). An image over the budget is treated like a malformed table.
fn name_budget(elf: &Elf<'_>) -> usize {
    elf.data().len().saturating_add(64 * 1024)
}

/// Counts name bytes against [`name_budget`]; `false` once the budget is exceeded.
struct NameBudget(usize);

impl NameBudget {
    fn new(elf: &Elf<'_>) -> Self {
        NameBudget(name_budget(elf))
    }

    fn spend(&mut self, name: &[u8]) -> bool {
        match self.0.checked_sub(name.len()) {
            Some(left) => {
                self.0 = left;
                true
            }
            None => false,
        }
    }
}

/// Reads everything depmod needs from an (already decompressed) module image:
/// `.modinfo` entries (§4.3), exports (§4.4) and needed symbols (§4.5).
///
/// Only an unusable ELF image is an error. Missing or malformed sections give empty
/// lists silently, exactly like kmod 30: a missing `.modinfo` gives no entries, missing
/// export information gives no exports, and a missing or malformed `.symtab`/`.strtab`
/// gives no needed symbols.
pub fn extract(image: &[u8]) -> Result<ModuleData, ElfError> {
    let elf = Elf::parse(image)?;
    let [modinfo, strtab, symtab, versions, ksymtab_strings] = elf.find_sections([
        &b".modinfo"[..],
        b".strtab",
        b".symtab",
        b"__versions",
        b"__ksymtab_strings",
    ]);
    fn data(s: Option<(SectionInfo, &[u8])>) -> Option<&[u8]> {
        s.map(|(_, d)| d)
    }
    let syms = elf.symbols_from(data(strtab), data(symtab));
    Ok(ModuleData {
        modinfo: data(modinfo).map(modinfo::parse).unwrap_or_default(),
        exports: exports_in(&elf, syms.as_ref(), data(ksymtab_strings)),
        needs: needs_in(&elf, syms.as_ref(), data(versions)).unwrap_or_default(),
    })
}

/// Only the `.modinfo` entries (for modinfo). `Ok(None)` means the image has no
/// `.modinfo` section, which kmod reports as ENOENT ("could not get modinfo from ...:
/// No such file or directory").
pub fn modinfo_only(image: &[u8]) -> Result<Option<ModinfoEntries>, ElfError> {
    let elf = Elf::parse(image)?;
    Ok(modinfo_of(&elf))
}

/// `.modinfo` entries of a parsed image, `None` without a `.modinfo` section.
pub fn modinfo_of(elf: &Elf<'_>) -> Option<ModinfoEntries> {
    elf.section(b".modinfo")
        .map(|(data, _)| modinfo::parse(data))
}

/// Exported symbols of a parsed image (spec §4.4).
///
/// The `__crc_<name>` symbols of the symbol table when there is at least one (and every
/// symbol name offset is inside `.strtab`); otherwise the strings of
/// `__ksymtab_strings` with CRC 0 (kmod 30 rules: an unterminated last string is
/// accepted); otherwise nothing.
pub fn exports(elf: &Elf<'_>) -> Vec<Export> {
    let syms = elf.symbols();
    let strings = elf.section(b"__ksymtab_strings").map(|(d, _)| d);
    exports_in(elf, syms.as_ref(), strings)
}

/// [`exports`] given the symbol table and the `__ksymtab_strings` data.
fn exports_in(
    elf: &Elf<'_>,
    syms: Option<&Symbols<'_>>,
    ksymtab_strings: Option<&[u8]>,
) -> Vec<Export> {
    if let Some(found) = syms.and_then(|syms| crc_exports(elf, syms)) {
        return found;
    }
    match ksymtab_strings {
        Some(data) => modinfo::split_strings(data)
            .into_iter()
            .map(|name| Export {
                name: name.to_vec(),
                crc: 0,
            })
            .collect(),
        None => Vec::new(),
    }
}

/// Step 1 of §4.4. `None` means "use the fallback": a name offset outside `.strtab`,
/// no `__crc_` symbol at all, or export names beyond the [`name_budget`].
fn crc_exports(elf: &Elf<'_>, syms: &Symbols<'_>) -> Option<Vec<Export>> {
    let mut out = Vec::new();
    let mut budget = NameBudget::new(elf);
    let strtab_len = syms.strtab().len();
    for sym in syms.iter_raw() {
        if sym.name_offset as usize >= strtab_len {
            return None;
        }
        if !syms.name_starts_with(sym.name_offset, CRC_PREFIX) {
            continue;
        }
        let name = syms.name_of(sym.name_offset)?;
        let export = &name[CRC_PREFIX.len()..];
        if !budget.spend(export) {
            return None;
        }
        out.push(Export {
            name: export.to_vec(),
            crc: resolve_crc(elf, sym.value, sym.shndx),
        });
    }
    (!out.is_empty()).then_some(out)
}

/// The CRC of a `__crc_` symbol: its value for SHN_ABS / SHN_UNDEF, else the 4 bytes at
/// offset `value` inside section `shndx`, all-ones when that cannot be read.
fn resolve_crc(elf: &Elf<'_>, value: u64, shndx: u16) -> u64 {
    if shndx == SHN_ABS || shndx == SHN_UNDEF {
        return value;
    }
    let Some(info) = elf.section_info(shndx) else {
        return u64::MAX;
    };
    if elf.section_data(&info).is_none() {
        return u64::MAX;
    }
    // kmod compares against `size - 4` in unsigned 64-bit arithmetic, so sections
    // smaller than 4 bytes wrap around and pass this test; the read below then only
    // succeeds if the 4 bytes still lie inside the file.
    if value > info.size.wrapping_sub(4) {
        return u64::MAX;
    }
    info.offset
        .checked_add(value)
        .and_then(|off| elf.read_uint(off, 4))
        .unwrap_or(u64::MAX)
}

/// One record of `__versions`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VersionRecord<'a> {
    /// The CRC (4 bytes in ELF32, 8 bytes in ELF64, file byte order).
    pub crc: u64,
    /// The name, read as a C string (kmod 30 does not stop at the end of the 64-byte
    /// record when it has no NUL; this never reads past the end of the file).
    pub name: &'a [u8],
}

/// The `__versions` records of a parsed image, `None` if the section is missing, its
/// size is not a multiple of 64, or its names (which may overlap when a record has no
/// NUL) add up to more than the [`name_budget`].
pub fn version_records<'a>(elf: &Elf<'a>) -> Option<Vec<VersionRecord<'a>>> {
    version_records_in(elf, elf.section(b"__versions").map(|(d, _)| d))
}

/// [`version_records`] given the `__versions` data.
fn version_records_in<'a>(elf: &Elf<'a>, data: Option<&'a [u8]>) -> Option<Vec<VersionRecord<'a>>> {
    let data = data?;
    if data.len() % MODVERSION_SIZE != 0 {
        return None;
    }
    let base = elf.offset_of(data)?;
    let crclen = elf.class().word_size();
    let mut budget = NameBudget::new(elf);
    (0..data.len() / MODVERSION_SIZE)
        .map(|i| {
            let off = base + (i * MODVERSION_SIZE) as u64;
            let name = elf.cstr(off + crclen as u64);
            budget.spend(name).then(|| VersionRecord {
                crc: elf.read_uint(off, crclen).unwrap_or(0),
                name,
            })
        })
        .collect()
}

/// Needed symbols of a parsed image (spec §4.5). `None` when kmod would fail with
/// EINVAL (no `.symtab`/`.strtab`, bad `.symtab` size, or the name offset of an
/// undefined symbol outside `.strtab`) or when the names exceed the [`name_budget`];
/// depmod treats that as "no needed symbols".
pub fn needs(elf: &Elf<'_>) -> Option<Vec<Need>> {
    let syms = elf.symbols();
    needs_in(
        elf,
        syms.as_ref(),
        elf.section(b"__versions").map(|(d, _)| d),
    )
}

/// [`needs`] given the symbol table and the `__versions` data.
fn needs_in(
    elf: &Elf<'_>,
    syms: Option<&Symbols<'_>>,
    versions: Option<&[u8]>,
) -> Option<Vec<Need>> {
    let versions = version_records_in(elf, versions).unwrap_or_default();
    let syms = syms?;
    let sparc = matches!(
        elf.e_machine(),
        object::elf::EM_SPARC | object::elf::EM_SPARCV9
    );

    // First record for each name, so that lookups stay linear in the input size.
    let mut first: HashMap<&[u8], usize, foldhash::fast::RandomState> =
        HashMap::with_capacity_and_hasher(versions.len(), Default::default());
    for (i, v) in versions.iter().enumerate() {
        first.entry(v.name).or_insert(i);
    }
    let mut used = vec![false; versions.len()];

    // Nearly every needed symbol has a version record: size the list for that.
    let mut out = Vec::with_capacity(versions.len());
    let mut budget = NameBudget::new(elf);
    for sym in syms.iter_raw() {
        if sym.shndx != SHN_UNDEF {
            continue;
        }
        if sparc && sym.kind() == STT_SPARC_REGISTER {
            continue;
        }
        let name = syms.name_of(sym.name_offset)?;
        if name.is_empty() {
            continue;
        }
        if !budget.spend(name) {
            return None;
        }
        let crc = match first.get(name) {
            Some(&i) => {
                used[i] = true;
                versions[i].crc
            }
            None => 0,
        };
        out.push(Need {
            name: name.to_vec(),
            crc,
            weak: sym.binding() == object::elf::STB_WEAK,
        });
    }
    // The unused records' names were counted by `version_records`.
    out.extend(
        versions
            .iter()
            .zip(&used)
            .filter(|(_, &u)| !u)
            .map(|(v, _)| Need {
                name: v.name.to_vec(),
                crc: v.crc,
                weak: false,
            }),
    );
    Some(out)
}

/// Overwrites the `vermagic=...` string of `.modinfo` with NUL bytes, in place, as kmod
/// 30 does for `--force-vermagic` when the image goes through `init_module`.
///
/// The scan follows kmod 30: after the usual leading-NUL strip (an empty or one-byte
/// section is left alone and counts as success), only strings that start with
/// `vermagic=` and have at least one more byte in the section after the `=` match; the
/// first match is cleared up to its terminating NUL. No match gives
/// [`StripError::NoVermagic`], no `.modinfo` gives [`StripError::NoSection`].
pub fn strip_vermagic(image: &mut [u8]) -> Result<(), StripError> {
    const KEY: &[u8] = b"vermagic=";
    let range = {
        let elf = Elf::parse(image)?;
        let (data, _) = elf.section(b".modinfo").ok_or(StripError::NoSection)?;
        let base = elf.offset_of(data).unwrap_or(0) as usize;
        let mut start = 0;
        while data.len() - start > 1 && data[start] == 0 {
            start += 1;
        }
        let strings = &data[start..];
        if strings.len() <= 1 {
            return Ok(());
        }
        let mut found = None;
        let mut i = 0;
        while i < strings.len() {
            if strings[i] == 0 || i + KEY.len() >= strings.len() {
                i += 1;
                continue;
            }
            let at = base + start + i;
            let s = elf.cstr(at as u64);
            if s.starts_with(KEY) {
                found = Some(at..at + s.len());
                break;
            }
            i += s.len() + 1;
        }
        found.ok_or(StripError::NoVermagic)?
    };
    if let Some(bytes) = image.get_mut(range) {
        bytes.fill(0);
    }
    Ok(())
}

/// The `__versions` records as `modprobe --show-modversions` (`--dump-modversions`)
/// lists them in kmod 30: in section order, with one leading `.` removed from each name.
///
/// `Ok(None)`: the image has no `__versions` section (kmod: ENOENT). A section size
/// that is not a multiple of 64 is `ElfError::Invalid` (kmod: EINVAL), and so are
/// overlapping names beyond the [`name_budget`].
pub fn modversions(image: &[u8]) -> Result<Option<Vec<VersionRecord<'_>>>, ElfError> {
    let elf = Elf::parse(image)?;
    let Some((data, _)) = elf.section(b"__versions") else {
        return Ok(None);
    };
    if data.len() % MODVERSION_SIZE != 0 {
        return Err(ElfError::Invalid("__versions size is not a multiple of 64"));
    }
    let records = version_records(&elf).ok_or(ElfError::Invalid(
        "__versions names overlap beyond the size of the file",
    ))?;
    Ok(Some(
        records
            .into_iter()
            .map(|r| VersionRecord {
                crc: r.crc,
                name: r.name.strip_prefix(b".").unwrap_or(r.name),
            })
            .collect(),
    ))
}
