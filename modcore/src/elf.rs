//! A small, defensive ELF reader with exactly the validity rules of kmod 30
//! (spec depmod-and-index §4.2).
//!
//! The reader works on a complete in-memory image (already decompressed). It accepts
//! 32- and 64-bit files in either byte order; every multi-byte field is read in the
//! file's byte order through the `object` crate's ELF structures. Nothing here
//! allocates memory sized from a header field, and no input makes it panic.
//!
//! Validity rules, in the order they are checked:
//!
//! * more than 16 bytes and the `\x7fELF` magic, else [`ElfError::NotElf`] (ENOEXEC);
//! * EI_CLASS 1 or 2 and a file longer than the ELF header (52 / 64 bytes), EI_DATA 1
//!   or 2, else [`ElfError::Invalid`] (EINVAL);
//! * `e_shentsize` exactly 40 / 64 and the whole section header table inside the file;
//! * section `e_shstrndx` is a valid section (index 1..shnum-1) whose data lies inside
//!   the file, is non-empty and ends with a NUL.
//!
//! Section lookup by name ([`Elf::section`]) scans indices 1..shnum-1 and returns the
//! **first** section whose name matches, skipping sections whose data range
//! (offset + size) is outside the file (section type is not looked at, so a NOBITS
//! section whose size runs past the end of the file is skipped too) and sections whose
//! name offset is outside the section-name table.

use object::elf::{
    FileHeader32, FileHeader64, SectionHeader32, SectionHeader64, Sym32, Sym64, ELFCLASS32,
    ELFCLASS64, ELFDATA2LSB, ELFDATA2MSB, ELFMAG,
};
use object::read::elf::{FileHeader, SectionHeader, Sym};
use object::{Endianness, ReadRef};

/// Why an image is not a usable ELF file.
///
/// The two variants correspond to the errno values kmod reports, see [`ElfError::errno`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ElfError {
    /// Not an ELF file at all (kmod: ENOEXEC, "Exec format error").
    #[error("not an ELF file: {0}")]
    NotElf(&'static str),
    /// An ELF file whose header or section table is unusable (kmod: EINVAL,
    /// "Invalid argument").
    #[error("invalid ELF file: {0}")]
    Invalid(&'static str),
}

impl ElfError {
    /// The errno value kmod reports for this error (ENOEXEC or EINVAL).
    pub fn errno(&self) -> i32 {
        match self {
            ElfError::NotElf(_) => nix::errno::Errno::ENOEXEC as i32,
            ElfError::Invalid(_) => nix::errno::Errno::EINVAL as i32,
        }
    }

    /// The human-readable cause (for debug logs; kmod itself prints only strerror).
    pub fn cause(&self) -> &'static str {
        match self {
            ElfError::NotElf(c) | ElfError::Invalid(c) => c,
        }
    }
}

/// ELF file class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Class {
    /// ELFCLASS32.
    Elf32,
    /// ELFCLASS64.
    Elf64,
}

impl Class {
    /// Size of one section header (40 or 64 bytes).
    pub fn section_header_size(self) -> usize {
        match self {
            Class::Elf32 => 40,
            Class::Elf64 => 64,
        }
    }

    /// Size of one symbol table entry (16 or 24 bytes).
    pub fn symbol_size(self) -> usize {
        match self {
            Class::Elf32 => 16,
            Class::Elf64 => 24,
        }
    }

    /// Size of the ELF file header (52 or 64 bytes).
    pub fn header_size(self) -> usize {
        match self {
            Class::Elf32 => 52,
            Class::Elf64 => 64,
        }
    }

    /// Size of an address-sized word (4 or 8 bytes), e.g. the CRC in `__versions`.
    pub fn word_size(self) -> usize {
        match self {
            Class::Elf32 => 4,
            Class::Elf64 => 8,
        }
    }
}

/// One raw section header, with every field widened to 64 bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SectionInfo {
    /// Section index.
    pub index: u16,
    /// File offset of this section's header.
    pub header_offset: u64,
    /// `sh_name`: offset of the name in the section-name table.
    pub name_offset: u32,
    /// `sh_type`.
    pub kind: u32,
    /// `sh_flags`.
    pub flags: u64,
    /// `sh_offset`.
    pub offset: u64,
    /// `sh_size`.
    pub size: u64,
}

/// A validated ELF image.
#[derive(Debug, Clone, Copy)]
pub struct Elf<'a> {
    data: &'a [u8],
    class: Class,
    endian: Endianness,
    e_type: u16,
    machine: u16,
    shoff: u64,
    shnum: u16,
    shstrndx: u16,
    shstrtab: &'a [u8],
}

struct RawHeader {
    e_type: u16,
    machine: u16,
    shoff: u64,
    shnum: u16,
    shentsize: u16,
    shstrndx: u16,
}

fn raw_header<H: FileHeader<Endian = Endianness>>(
    data: &[u8],
    endian: Endianness,
) -> Option<RawHeader> {
    let h: &H = data.read_at::<H>(0).ok()?;
    Some(RawHeader {
        e_type: h.e_type(endian),
        machine: h.e_machine(endian),
        shoff: h.e_shoff(endian).into(),
        shnum: h.e_shnum(endian),
        shentsize: h.e_shentsize(endian),
        shstrndx: h.e_shstrndx(endian),
    })
}

fn raw_section<S: SectionHeader<Endian = Endianness>>(
    data: &[u8],
    endian: Endianness,
    offset: u64,
    index: u16,
) -> Option<SectionInfo> {
    let s: &S = data.read_at::<S>(offset).ok()?;
    Some(SectionInfo {
        index,
        header_offset: offset,
        name_offset: s.sh_name(endian),
        kind: s.sh_type(endian),
        flags: s.sh_flags(endian).into(),
        offset: s.sh_offset(endian).into(),
        size: s.sh_size(endian).into(),
    })
}

fn raw_symbol<S: Sym<Endian = Endianness>>(
    data: &[u8],
    endian: Endianness,
    offset: u64,
) -> Option<(u32, u64, u64, u8, u8, u16)> {
    let s: &S = data.read_at::<S>(offset).ok()?;
    Some((
        s.st_name(endian),
        s.st_value(endian).into(),
        s.st_size(endian).into(),
        s.st_info(),
        s.st_other(),
        s.st_shndx(endian),
    ))
}

/// The bytes of the NUL-terminated string starting at `offset` in `data`, without the
/// NUL. The string ends at the first NUL or at the end of `data`; an offset past the end
/// gives an empty string.
pub fn cstr_at(data: &[u8], offset: usize) -> &[u8] {
    let rest = data.get(offset..).unwrap_or(&[]);
    // `CStr` finds the NUL with core's word-at-a-time memchr.
    match std::ffi::CStr::from_bytes_until_nul(rest) {
        Ok(s) => s.to_bytes(),
        Err(_) => rest,
    }
}

impl<'a> Elf<'a> {
    /// Validates `data` as an ELF image (see the module documentation for the rules).
    pub fn parse(data: &'a [u8]) -> Result<Elf<'a>, ElfError> {
        if data.len() <= 16 || data[..4] != ELFMAG {
            return Err(ElfError::NotElf("no ELF magic"));
        }
        let class = match data[4] {
            ELFCLASS32 => Class::Elf32,
            ELFCLASS64 => Class::Elf64,
            _ => return Err(ElfError::Invalid("unknown ELF class")),
        };
        if data.len() <= class.header_size() {
            return Err(ElfError::Invalid("file shorter than the ELF header"));
        }
        let endian = match data[5] {
            ELFDATA2LSB => Endianness::Little,
            ELFDATA2MSB => Endianness::Big,
            _ => return Err(ElfError::Invalid("unknown ELF data encoding")),
        };
        let hdr = match class {
            Class::Elf32 => raw_header::<FileHeader32<Endianness>>(data, endian),
            Class::Elf64 => raw_header::<FileHeader64<Endianness>>(data, endian),
        }
        .ok_or(ElfError::Invalid("file shorter than the ELF header"))?;

        if usize::from(hdr.shentsize) != class.section_header_size() {
            return Err(ElfError::Invalid("unexpected section header entry size"));
        }
        let table_size = class.section_header_size() as u64 * u64::from(hdr.shnum);
        match hdr.shoff.checked_add(table_size) {
            Some(end) if end <= data.len() as u64 => {}
            _ => return Err(ElfError::Invalid("section header table outside the file")),
        }

        let mut elf = Elf {
            data,
            class,
            endian,
            e_type: hdr.e_type,
            machine: hdr.machine,
            shoff: hdr.shoff,
            shnum: hdr.shnum,
            shstrndx: hdr.shstrndx,
            shstrtab: &[],
        };
        let strings = elf
            .section_info(hdr.shstrndx)
            .ok_or(ElfError::Invalid("bad section name table index"))?;
        let names = elf
            .section_data(&strings)
            .ok_or(ElfError::Invalid("section name table outside the file"))?;
        if names.last() != Some(&0) {
            return Err(ElfError::Invalid(
                "section name table is empty or not NUL-terminated",
            ));
        }
        elf.shstrtab = names;
        Ok(elf)
    }

    /// The whole image.
    pub fn data(&self) -> &'a [u8] {
        self.data
    }

    /// The file class.
    pub fn class(&self) -> Class {
        self.class
    }

    /// The file byte order.
    pub fn endianness(&self) -> Endianness {
        self.endian
    }

    /// `e_type`.
    pub fn e_type(&self) -> u16 {
        self.e_type
    }

    /// `e_machine`.
    pub fn e_machine(&self) -> u16 {
        self.machine
    }

    /// `e_shnum`.
    pub fn section_count(&self) -> u16 {
        self.shnum
    }

    /// `e_shstrndx`.
    pub fn section_names_index(&self) -> u16 {
        self.shstrndx
    }

    /// The section-name table (non-empty, ends with NUL).
    pub fn section_names(&self) -> &'a [u8] {
        self.shstrtab
    }

    /// The raw header of section `index`, or `None` for index 0 or an index not below
    /// `e_shnum`. The header itself always lies inside the file (checked by
    /// [`Elf::parse`]); its data range is not checked here.
    pub fn section_info(&self, index: u16) -> Option<SectionInfo> {
        if index == 0 || index >= self.shnum {
            return None;
        }
        let off = self.shoff + self.class.section_header_size() as u64 * u64::from(index);
        match self.class {
            Class::Elf32 => {
                raw_section::<SectionHeader32<Endianness>>(self.data, self.endian, off, index)
            }
            Class::Elf64 => {
                raw_section::<SectionHeader64<Endianness>>(self.data, self.endian, off, index)
            }
        }
    }

    /// The data of a section, or `None` if `offset + size` overflows or lies past the
    /// end of the file. (The section type is ignored: NOBITS sections are treated like
    /// any other.)
    pub fn section_data(&self, info: &SectionInfo) -> Option<&'a [u8]> {
        let end = info.offset.checked_add(info.size)?;
        if end > self.data.len() as u64 {
            return None;
        }
        self.data.get(info.offset as usize..end as usize)
    }

    /// The name of a section from the section-name table, or `None` if its name offset
    /// is outside the table.
    pub fn section_name(&self, info: &SectionInfo) -> Option<&'a [u8]> {
        let off = info.name_offset as usize;
        if off >= self.shstrtab.len() {
            return None;
        }
        Some(cstr_at(self.shstrtab, off))
    }

    /// Finds a section by exact name: the first valid match scanning 1..shnum-1.
    pub fn find_section(&self, name: &[u8]) -> Option<(SectionInfo, &'a [u8])> {
        (1..self.shnum).find_map(|i| {
            let info = self.section_info(i)?;
            let data = self.section_data(&info)?;
            (self.section_name(&info)? == name).then_some((info, data))
        })
    }

    /// [`Elf::find_section`] for several names in one pass over the section table:
    /// element `k` of the result is what `find_section(names[k])` returns.
    pub fn find_sections<const N: usize>(
        &self,
        names: [&[u8]; N],
    ) -> [Option<(SectionInfo, &'a [u8])>; N] {
        let mut found: [Option<(SectionInfo, &'a [u8])>; N] = [None; N];
        let mut missing = N;
        for i in 1..self.shnum {
            if missing == 0 {
                break;
            }
            let Some(info) = self.section_info(i) else {
                continue;
            };
            let Some(data) = self.section_data(&info) else {
                continue;
            };
            let Some(name) = self.section_name(&info) else {
                continue;
            };
            for (k, want) in names.iter().enumerate() {
                if found[k].is_none() && name == *want {
                    found[k] = Some((info, data));
                    missing -= 1;
                }
            }
        }
        found
    }

    /// [`Elf::symbols`] given the results of `find_section(b".strtab")` and
    /// `find_section(b".symtab")`.
    pub fn symbols_from(
        &self,
        strtab: Option<&'a [u8]>,
        symtab: Option<&'a [u8]>,
    ) -> Option<Symbols<'a>> {
        let (strtab, symtab) = (strtab?, symtab?);
        let entsize = self.class.symbol_size();
        if symtab.len() % entsize != 0 {
            return None;
        }
        Some(Symbols {
            elf: *self,
            symtab_offset: self.offset_of(symtab)?,
            count: symtab.len() / entsize,
            strtab,
            strtab_offset: self.offset_of(strtab)?,
        })
    }

    /// Finds a section by exact name (see [`Elf::find_section`]) and returns its data
    /// and index.
    pub fn section(&self, name: &[u8]) -> Option<(&'a [u8], u16)> {
        self.find_section(name)
            .map(|(info, data)| (data, info.index))
    }

    /// Reads an unsigned integer of `width` bytes (1..=8) at file offset `offset`, in
    /// the file's byte order. `None` if it does not lie inside the file.
    pub fn read_uint(&self, offset: u64, width: usize) -> Option<u64> {
        if width == 0 || width > 8 {
            return None;
        }
        let end = offset.checked_add(width as u64)?;
        if end > self.data.len() as u64 {
            return None;
        }
        let bytes = self.data.get(offset as usize..end as usize)?;
        let fold = |acc: u64, b: &u8| (acc << 8) | u64::from(*b);
        Some(match self.endian {
            Endianness::Big => bytes.iter().fold(0, fold),
            Endianness::Little => bytes.iter().rev().fold(0, fold),
        })
    }

    /// The NUL-terminated string at file offset `offset` (see [`cstr_at`]). Like kmod,
    /// strings from `.strtab` and `__versions` are read as C strings in the whole image,
    /// so they may run past the end of their section; here they always stop at the end
    /// of the file.
    pub fn cstr(&self, offset: u64) -> &'a [u8] {
        match usize::try_from(offset) {
            Ok(off) => cstr_at(self.data, off),
            Err(_) => &[],
        }
    }

    /// File offset of a slice that was borrowed from this image.
    pub fn offset_of(&self, slice: &[u8]) -> Option<u64> {
        let base = self.data.as_ptr() as usize;
        let p = slice.as_ptr() as usize;
        if p < base || p - base > self.data.len() {
            return None;
        }
        Some((p - base) as u64)
    }

    /// The symbol table: the sections named `.symtab` and `.strtab` (by the name lookup
    /// rule, not by `sh_link`). `None` if either is missing or the `.symtab` size is not
    /// a multiple of the symbol entry size.
    pub fn symbols(&self) -> Option<Symbols<'a>> {
        self.symbols_from(
            self.section(b".strtab").map(|(data, _)| data),
            self.section(b".symtab").map(|(data, _)| data),
        )
    }
}

/// One symbol table entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Symbol<'a> {
    /// Index in the symbol table.
    pub index: usize,
    /// `st_name`.
    pub name_offset: u32,
    /// The name: `None` when `st_name` is outside `.strtab`. Otherwise the C string
    /// starting there (it may run past `.strtab`, like in kmod; never past the file).
    pub name: Option<&'a [u8]>,
    /// `st_value`.
    pub value: u64,
    /// `st_size`.
    pub size: u64,
    /// `st_info`.
    pub info: u8,
    /// `st_other`.
    pub other: u8,
    /// `st_shndx`.
    pub shndx: u16,
}

impl Symbol<'_> {
    /// Symbol binding (`st_info >> 4`): 0 local, 1 global, 2 weak.
    pub fn binding(&self) -> u8 {
        self.info >> 4
    }

    /// Symbol type (`st_info & 0xf`).
    pub fn kind(&self) -> u8 {
        self.info & 0xf
    }
}

/// The symbol table of an [`Elf`] image (see [`Elf::symbols`]).
#[derive(Debug, Clone, Copy)]
pub struct Symbols<'a> {
    elf: Elf<'a>,
    symtab_offset: u64,
    count: usize,
    strtab: &'a [u8],
    strtab_offset: u64,
}

impl<'a> Symbols<'a> {
    /// Number of entries, including the null entry 0.
    pub fn len(&self) -> usize {
        self.count
    }

    /// True if the table has no entries at all.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The `.strtab` data.
    pub fn strtab(&self) -> &'a [u8] {
        self.strtab
    }

    /// Entry `index`, or `None` past the end.
    pub fn get(&self, index: usize) -> Option<Symbol<'a>> {
        if index >= self.count {
            return None;
        }
        let off = self.symtab_offset + (index * self.elf.class.symbol_size()) as u64;
        let (name_offset, value, size, info, other, shndx) = match self.elf.class {
            Class::Elf32 => raw_symbol::<Sym32<Endianness>>(self.elf.data, self.elf.endian, off),
            Class::Elf64 => raw_symbol::<Sym64<Endianness>>(self.elf.data, self.elf.endian, off),
        }?;
        let name = ((name_offset as usize) < self.strtab.len())
            .then(|| self.elf.cstr(self.strtab_offset + u64::from(name_offset)));
        Some(Symbol {
            index,
            name_offset,
            name,
            value,
            size,
            info,
            other,
            shndx,
        })
    }

    /// Entries 1..len-1 in table order (entry 0 is skipped, as kmod does).
    pub fn iter(&self) -> impl Iterator<Item = Symbol<'a>> + '_ {
        (1..self.count).filter_map(move |i| self.get(i))
    }

    /// Like [`Symbols::iter`] but without looking up names (see [`Symbols::name_of`]).
    pub fn iter_raw(&self) -> impl Iterator<Item = RawSymbol> + '_ {
        let data = self.elf.data;
        let start = self.symtab_offset as usize;
        let size = self.elf.class.symbol_size();
        let (class, big) = (self.elf.class, self.elf.endian == Endianness::Big);
        (1..self.count).filter_map(move |i| {
            let off = start.checked_add(i.checked_mul(size)?)?;
            let e = data.get(off..off.checked_add(size)?)?;
            let u16_at = |o: usize| {
                let b = [e[o], e[o + 1]];
                if big {
                    u16::from_be_bytes(b)
                } else {
                    u16::from_le_bytes(b)
                }
            };
            let u32_at = |o: usize| {
                let b = [e[o], e[o + 1], e[o + 2], e[o + 3]];
                if big {
                    u32::from_be_bytes(b)
                } else {
                    u32::from_le_bytes(b)
                }
            };
            let u64_at = |o: usize| {
                let mut b = [0u8; 8];
                b.copy_from_slice(&e[o..o + 8]);
                if big {
                    u64::from_be_bytes(b)
                } else {
                    u64::from_le_bytes(b)
                }
            };
            Some(match class {
                // Elf32_Sym: name, value, size, info, other, shndx.
                Class::Elf32 => RawSymbol {
                    name_offset: u32_at(0),
                    value: u64::from(u32_at(4)),
                    info: e[12],
                    shndx: u16_at(14),
                },
                // Elf64_Sym: name, info, other, shndx, value, size.
                Class::Elf64 => RawSymbol {
                    name_offset: u32_at(0),
                    value: u64_at(8),
                    info: e[4],
                    shndx: u16_at(6),
                },
            })
        })
    }

    /// The name of a symbol as [`Symbol::name`] gives it: `None` when `name_offset` is
    /// outside `.strtab`, else the C string starting there.
    pub fn name_of(&self, name_offset: u32) -> Option<&'a [u8]> {
        ((name_offset as usize) < self.strtab.len())
            .then(|| self.elf.cstr(self.strtab_offset + u64::from(name_offset)))
    }

    /// True when `name_offset` is inside `.strtab` and the name there starts with
    /// `prefix` (which must not contain NUL), without measuring the whole name.
    pub fn name_starts_with(&self, name_offset: u32, prefix: &[u8]) -> bool {
        if (name_offset as usize) >= self.strtab.len() {
            return false;
        }
        let at = self.strtab_offset as usize + name_offset as usize;
        self.elf
            .data
            .get(at..)
            .is_some_and(|rest| rest.starts_with(prefix))
    }
}

/// A symbol table entry without its name (see [`Symbols::iter_raw`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawSymbol {
    /// `st_name`.
    pub name_offset: u32,
    /// `st_value`.
    pub value: u64,
    /// `st_info`.
    pub info: u8,
    /// `st_shndx`.
    pub shndx: u16,
}

impl RawSymbol {
    /// Symbol binding (`st_info >> 4`).
    pub fn binding(&self) -> u8 {
        self.info >> 4
    }

    /// Symbol type (`st_info & 0xf`).
    pub fn kind(&self) -> u8 {
        self.info & 0xf
    }
}

/// Why a forced-load patch ([`clear_alloc_flag`], `module::strip_vermagic`) could not be
/// applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum StripError {
    /// The image is not a usable ELF file.
    #[error(transparent)]
    Elf(#[from] ElfError),
    /// The section does not exist (kmod: ENOENT).
    #[error("section not found")]
    NoSection,
    /// `.modinfo` has no `vermagic=` entry (kmod 30: ENOENT; kmod 34: ENODATA).
    #[error("no vermagic entry")]
    NoVermagic,
}

impl StripError {
    /// The errno kmod 30 reports for this error.
    pub fn errno(&self) -> i32 {
        match self {
            StripError::Elf(e) => e.errno(),
            StripError::NoSection | StripError::NoVermagic => nix::errno::Errno::ENOENT as i32,
        }
    }
}

/// Clears SHF_ALLOC in the header of the first section named `section` (found by the
/// lookup rule of [`Elf::section`]), in place. This is how `--force-modversion` hides
/// `__versions` from the kernel when the image is loaded with `init_module`.
pub fn clear_alloc_flag(image: &mut [u8], section: &[u8]) -> Result<(), StripError> {
    let (at, width, flags, big) = {
        let elf = Elf::parse(image)?;
        let (info, _) = elf.find_section(section).ok_or(StripError::NoSection)?;
        let (off, width) = match elf.class() {
            Class::Elf32 => (8u64, 4usize),
            Class::Elf64 => (8u64, 8usize),
        };
        (
            (info.header_offset + off) as usize,
            width,
            info.flags,
            elf.endianness() == Endianness::Big,
        )
    };
    let value = flags & !u64::from(object::elf::SHF_ALLOC);
    let field = image
        .get_mut(at..at + width)
        .ok_or(StripError::Elf(ElfError::Invalid(
            "section header outside the file",
        )))?;
    for (i, byte) in field.iter_mut().enumerate() {
        let shift = if big { 8 * (width - 1 - i) } else { 8 * i };
        *byte = (value >> shift) as u8;
    }
    Ok(())
}
