//! Reading module files for depmod, fast.
//!
//! depmod reads thousands of modules and needs only a small part of each (spec §4): the
//! section headers, `.modinfo`, `.symtab`, `.strtab`, `__versions`, `__ksymtab_strings` and
//! the sections the `__crc_` symbols point into. [`read_module`] gives exactly the
//! [`ModuleData`] that [`crate::module::extract`] gives on the whole decompressed image, but:
//!
//! * every thread keeps its buffers (the decompressed image, the compressed input) from one
//!   module to the next, so decoding does not page-fault fresh memory for every file;
//! * a plain (uncompressed) file is not mapped or read as a whole: the header, the section
//!   header table and then only the sections above are read with `pread` into a buffer the
//!   size of the file, at their file offsets, so the ELF reader works unchanged. Bytes that
//!   are not read are never looked at: the reader only follows strings that end inside
//!   their section (checked: `.strtab` and `__versions` must end with a NUL byte) and reads
//!   CRCs only inside whole sections (checked: at least 4 bytes long). Any file that does
//!   not meet these conditions, or is not a well-formed ELF file, is read whole instead, so
//!   the result, errors included, is always the same as reading the whole file.

use crate::compress::{self, CompressError, Compression, Decoders, MIN_FILE_LEN};
use crate::elf::{Elf, ElfError};
use crate::kernel::strerror;
use crate::module::{self, ModuleData};
use std::cell::RefCell;
use std::fs::{File, Metadata};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;

/// Buffers that grew beyond this are released after the module, so that the few huge
/// modules do not pin memory on every thread.
const KEEP_BUFFER: usize = 4 << 20;
/// Files larger than this take the plain mapping/decoding path of `compress`.
const MAX_BUFFERED: u64 = 256 << 20;
/// An ELF64 header is 64 bytes.
const HEAD: usize = 64;
/// Files up to this size are read whole, with one read (most modules are smaller); of
/// larger ones the first read takes only the ELF header.
const FIRST_CHUNK: usize = 64 << 10;
/// Read this much before the section header table with it (the section names are there).
const TAIL_SLACK: u64 = 4 << 10;
/// Ranges closer than this are read with one `pread`.
const MERGE_GAP: u64 = 16 << 10;

#[derive(Default)]
struct Scratch {
    /// The decompressed image (or a whole plain file).
    image: Vec<u8>,
    /// The image of a sparsely read plain file (see [`Pages`]).
    sparse: Pages,
    /// The compressed file.
    input: Vec<u8>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

/// Free this thread's read buffers (after the last module: they can be megabytes).
pub fn release_buffers() {
    let _ = SCRATCH.try_with(|cell| {
        if let Ok(mut s) = cell.try_borrow_mut() {
            *s = Scratch::default();
        }
    });
}

/// Why a module could not be read; `text()` is what depmod prints after the path.
enum Failure {
    Io(io::Error),
    Decompress(CompressError),
    Elf(ElfError),
}

impl Failure {
    fn text(&self) -> String {
        match self {
            Failure::Io(e) => strerror(e.raw_os_error().unwrap_or(nix::errno::Errno::EIO as i32)),
            Failure::Decompress(e) => format!("{} ({e})", strerror(e.errno())),
            Failure::Elf(e) => format!("{} ({})", strerror(e.errno()), e.cause()),
        }
    }
}

/// Read and parse one module file; the error text is kmod's strerror plus our cause.
pub fn read_module(path: &Path) -> Result<ModuleData, String> {
    read_module_stat(path).0
}

/// [`read_module`], plus the `fstat` of the file that was read (when it could be opened):
/// the identity of exactly the bytes the data came from.
pub fn read_module_stat(path: &Path) -> (Result<ModuleData, String>, Option<Metadata>) {
    let mut meta = None;
    let res = SCRATCH
        .try_with(|cell| match cell.try_borrow_mut() {
            Ok(mut s) => {
                let r = read_with(path, &mut s, &mut meta);
                let s = &mut *s;
                for b in [&mut s.image, &mut s.input] {
                    if b.capacity() > KEEP_BUFFER {
                        *b = Vec::new();
                    }
                }
                if s.sparse.len() > KEEP_BUFFER {
                    s.sparse = Pages::default();
                }
                r
            }
            Err(_) => read_with(path, &mut Scratch::default(), &mut meta),
        })
        .unwrap_or_else(|_| read_with(path, &mut Scratch::default(), &mut meta));
    (res.map_err(|f| f.text()), meta)
}

/// Makes `buf` at least `size` bytes long. Growing allocates a new zeroed buffer (calloc:
/// large ones are fresh pages, nothing is copied or cleared by hand); the old contents are
/// not kept.
fn ensure_len(buf: &mut Vec<u8>, size: usize) {
    if buf.len() < size {
        let want = if size <= KEEP_BUFFER {
            size.next_power_of_two().min(KEEP_BUFFER)
        } else {
            size
        };
        *buf = vec![0u8; want];
    }
}

/// A zeroed buffer of anonymous pages, for an image of which only some ranges are read:
/// a page is only faulted in (and zeroed, by the kernel) when a range read touches it.
/// (`vec![0; n]` from a thread's heap clears every byte, touching every page, first.)
#[derive(Default)]
struct Pages(Option<memmap2::MmapMut>);

impl Pages {
    fn len(&self) -> usize {
        self.0.as_ref().map_or(0, |m| m.len())
    }

    /// At least `size` bytes (the old contents are not kept when it grows).
    fn ensure(&mut self, size: usize) -> io::Result<&mut [u8]> {
        if self.len() < size {
            let want = if size <= KEEP_BUFFER {
                size.next_power_of_two().min(KEEP_BUFFER)
            } else {
                size
            };
            self.0 = None;
            self.0 = Some(memmap2::MmapMut::map_anon(want)?);
        }
        Ok(self.0.as_mut().map_or(&mut [][..], |m| &mut m[..]))
    }
}

/// `pread` until `buf` is full or the file ends; the number of bytes read.
fn read_at_most(file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match file.read_at(&mut buf[got..], offset + got as u64) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

fn read_with(
    path: &Path,
    s: &mut Scratch,
    meta_out: &mut Option<Metadata>,
) -> Result<ModuleData, Failure> {
    // O_NONBLOCK: a FIFO named like a module must not hang us in open(2); anything that is
    // not a regular file goes to the general path, which refuses it as kmod does.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::fcntl::OFlag::O_NONBLOCK.bits())
        .open(path)
        .map_err(Failure::Io)?;
    let meta = file.metadata().map_err(Failure::Io)?;
    let size = meta.len();
    let regular = meta.is_file();
    *meta_out = Some(meta);
    if !regular || size > MAX_BUFFERED {
        // Odd files take the general path, which reads the first bytes before looking at
        // the size, exactly as kmod does.
        return read_unbuffered(path);
    }
    // The first chunk (often the whole file) in one read; the same checks as kmod's first
    // 6-byte read and fstat.
    let size = size as usize;
    let first = if size <= FIRST_CHUNK { size } else { HEAD };
    ensure_len(&mut s.input, first.max(HEAD));
    let got = read_at_most(&file, &mut s.input[..first], 0).map_err(Failure::Io)?;
    if got < MIN_FILE_LEN {
        return Err(Failure::Decompress(CompressError::TooShort { len: got }));
    }
    let size = if got < first { got } else { size };
    match compress::detect_with(&s.input[..got], Decoders::ALL) {
        Compression::None if got == size => module::extract(&s.input[..got]).map_err(Failure::Elf),
        Compression::None => {
            let r =
                sparse_extract(&file, size, &s.input[..got], &mut s.sparse).map_err(Failure::Io)?;
            if let Some(r) = r {
                return r.map_err(Failure::Elf);
            }
            // Read the whole file.
            ensure_len(&mut s.image, size);
            let n = read_at_most(&file, &mut s.image[..size], 0).map_err(Failure::Io)?;
            module::extract(&s.image[..n]).map_err(Failure::Elf)
        }
        _ => {
            let mut n = got;
            if got < size {
                if s.input.len() < size {
                    let mut bigger = Vec::new();
                    ensure_len(&mut bigger, size);
                    bigger[..got].copy_from_slice(&s.input[..got]);
                    s.input = bigger;
                }
                n += read_at_most(&file, &mut s.input[got..size], got as u64)
                    .map_err(Failure::Io)?;
            }
            compress::decompress_into(&s.input[..n], Decoders::ALL, &mut s.image)
                .map_err(Failure::Decompress)?;
            module::extract(&s.image).map_err(Failure::Elf)
        }
    }
}

/// The general path for files too large to buffer: `compress::read_module_file`.
fn read_unbuffered(path: &Path) -> Result<ModuleData, Failure> {
    use crate::compress::ReadError;
    let image = compress::read_module_file(path).map_err(|e| match e {
        ReadError::Io { source, .. } => Failure::Io(source),
        ReadError::Decompress { source, .. } => Failure::Decompress(source),
    })?;
    module::extract(&image).map_err(Failure::Elf)
}

/// A file image of which only some byte ranges have been read.
struct Sparse<'a> {
    file: &'a File,
    buf: &'a mut [u8],
    size: usize,
    /// Ranges read so far (sorted, disjoint is not required).
    loaded: Vec<(u64, u64)>,
}

impl Sparse<'_> {
    fn image(&self) -> &[u8] {
        &self.buf[..self.size]
    }

    fn covered(&self, (start, end): (u64, u64)) -> bool {
        self.loaded.iter().any(|&(s, e)| s <= start && end <= e)
    }

    /// Read `ranges` (each inside the file). `false` if the file turned out shorter than
    /// its size (it changed while we read it).
    fn load(&mut self, ranges: &mut Vec<(u64, u64)>) -> io::Result<bool> {
        ranges.retain(|&r| r.0 < r.1 && !self.covered(r));
        ranges.sort_unstable();
        let mut merged: Vec<(u64, u64)> = Vec::with_capacity(ranges.len());
        for &(s, e) in ranges.iter() {
            match merged.last_mut() {
                Some(last) if s <= last.1.saturating_add(MERGE_GAP) => last.1 = last.1.max(e),
                _ => merged.push((s, e)),
            }
        }
        for (s, e) in merged {
            let buf = &mut self.buf[s as usize..e as usize];
            if read_at_most(self.file, buf, s)? < buf.len() {
                return Ok(false);
            }
            self.loaded.push((s, e));
        }
        Ok(true)
    }

    /// The byte range of section data described by `info`, if it lies inside the file.
    fn section_range(&self, offset: u64, size: u64) -> Option<(u64, u64)> {
        let end = offset.checked_add(size)?;
        (end <= self.size as u64).then_some((offset, end))
    }
}

/// Little helpers to decode header fields of either byte order.
fn field(bytes: &[u8], off: usize, width: usize, big: bool) -> Option<u64> {
    let b = bytes.get(off..off + width)?;
    let fold = |acc: u64, x: &u8| (acc << 8) | u64::from(*x);
    Some(if big {
        b.iter().fold(0, fold)
    } else {
        b.iter().rev().fold(0, fold)
    })
}

/// The names of the sections `module::extract` reads, and the usual homes of the CRCs
/// (read ahead; the sections the `__crc_` symbols really point to are checked below).
const WANTED: [&[u8]; 7] = [
    b".modinfo",
    b".strtab",
    b".symtab",
    b"__versions",
    b"__ksymtab_strings",
    b"__kcrctab",
    b"__kcrctab_gpl",
];

/// Extract a plain module reading only what `module::extract` looks at. `Ok(None)`: this
/// file needs the whole-file path (not a well-formed ELF file, unterminated string tables,
/// odd CRC sections, or the file changed while being read).
fn sparse_extract(
    file: &File,
    size: usize,
    first: &[u8],
    pages: &mut Pages,
) -> io::Result<Option<Result<ModuleData, ElfError>>> {
    const MAGIC: &[u8] = b"\x7fELF";
    if first.len() < HEAD || !first.starts_with(MAGIC) {
        return Ok(None);
    }
    let head = &first[..HEAD];
    // Header fields: (class, shoff, shentsize, shnum, shstrndx, section header layout).
    let big = match head[5] {
        1 => false,
        2 => true,
        _ => return Ok(None),
    };
    let (is64, ehdr) = match head[4] {
        1 => (false, [0x20usize, 4, 0x2E, 0x30, 0x32]),
        2 => (true, [0x28usize, 8, 0x3A, 0x3C, 0x3E]),
        _ => return Ok(None),
    };
    let (Some(shoff), Some(shentsize), Some(shnum), Some(shstrndx)) = (
        field(head, ehdr[0], ehdr[1], big),
        field(head, ehdr[2], 2, big),
        field(head, ehdr[3], 2, big),
        field(head, ehdr[4], 2, big),
    ) else {
        return Ok(None);
    };
    let entsize: u64 = if is64 { 64 } else { 40 };
    if shentsize != entsize || shstrndx == 0 || shstrndx >= shnum {
        return Ok(None);
    }
    let Some(table_end) = shoff.checked_add(entsize * shnum) else {
        return Ok(None);
    };
    if table_end > size as u64 {
        return Ok(None);
    }

    // (No pages to be had: the whole-file path says what is wrong, if anything.)
    let Ok(buf) = pages.ensure(size) else {
        return Ok(None);
    };
    buf[..first.len()].copy_from_slice(first);
    let mut sp = Sparse {
        file,
        buf,
        size,
        loaded: vec![(0, first.len() as u64)],
    };
    // The section header table and, usually, the section name table just before it.
    let mut ranges = vec![(shoff.saturating_sub(TAIL_SLACK), table_end)];
    if !sp.load(&mut ranges)? {
        return Ok(None);
    }

    // The section name table.
    let sh = (shoff + entsize * shstrndx) as usize;
    let (off_at, width) = if is64 { (0x18, 8) } else { (0x10, 4) };
    let (Some(str_off), Some(str_size)) = (
        field(sp.image(), sh + off_at, width, big),
        field(sp.image(), sh + off_at + width, width, big),
    ) else {
        return Ok(None);
    };
    let Some(r) = sp.section_range(str_off, str_size) else {
        return Ok(None);
    };
    ranges.clear();
    ranges.push(r);
    if !sp.load(&mut ranges)? {
        return Ok(None);
    }

    // The sections extract() reads.
    ranges.clear();
    {
        let Ok(elf) = Elf::parse(sp.image()) else {
            return Ok(None);
        };
        for (info, _) in elf.find_sections(WANTED).into_iter().flatten() {
            ranges.extend(sp.section_range(info.offset, info.size));
        }
    }
    if !sp.load(&mut ranges)? {
        return Ok(None);
    }

    // Strings must end inside their sections; CRC sections are read whole.
    ranges.clear();
    {
        let Ok(elf) = Elf::parse(sp.image()) else {
            return Ok(None);
        };
        let [_, strtab, symtab, versions, _, _, _] = elf.find_sections(WANTED);
        if let Some((_, v)) = versions {
            if v.len() % 64 == 0 && v.last().is_some_and(|&b| b != 0) {
                return Ok(None);
            }
        }
        if let Some(syms) = elf.symbols_from(strtab.map(|s| s.1), symtab.map(|s| s.1)) {
            if syms.strtab().last().is_some_and(|&b| b != 0) {
                return Ok(None);
            }
            for sym in syms.iter_raw() {
                if !syms.name_starts_with(sym.name_offset, b"__crc_")
                    || sym.shndx == object::elf::SHN_ABS
                    || sym.shndx == object::elf::SHN_UNDEF
                {
                    continue;
                }
                let Some(info) = elf.section_info(sym.shndx) else {
                    continue;
                };
                if let Some(r) = sp.section_range(info.offset, info.size) {
                    if info.size < 4 {
                        return Ok(None);
                    }
                    if !ranges.contains(&r) {
                        ranges.push(r);
                    }
                }
            }
        }
    }
    if !sp.load(&mut ranges)? {
        return Ok(None);
    }
    Ok(Some(module::extract(sp.image())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_fields() {
        assert_eq!(field(&[1, 2, 3, 4], 0, 2, false), Some(0x0201));
        assert_eq!(field(&[1, 2, 3, 4], 1, 3, true), Some(0x020304));
        assert_eq!(field(&[1, 2], 1, 2, true), None);
    }
}
