//! Module file compression: detection by magic bytes, decompression, and reading a
//! module file into memory (spec depmod-and-index §4.1, runtime-tools §1.6).
//!
//! The format is decided by the first bytes of the content, never by the file name:
//!
//! | format | magic |
//! |---|---|
//! | zstd | `28 B5 2F FD` |
//! | xz   | `FD 37 7A 58 5A 00` |
//! | gzip | `1F 8B` |
//! | plain | anything else |
//!
//! Inputs shorter than 6 bytes are rejected (EINVAL), as are corrupt, truncated or
//! otherwise undecodable streams. Debian's kmod 30 has no gzip support: use
//! [`Decoders::KMOD30`] to treat gzip data as a plain (and therefore non-ELF) file.
//!
//! [`decompress`] does no I/O; [`read_module_file`] is the one place that reads a file.

use std::borrow::Cow;
use std::fmt;
use std::fs::File;
use std::io::{self, Read};
use std::ops::Deref;
use std::path::{Path, PathBuf};

/// Module file name endings recognised by Debian's kmod 30 (built without zlib).
pub const KMOD30_EXTENSIONS: &[&str] = &[".ko", ".ko.xz", ".ko.zst"];

/// Module file name endings recognised by a kmod built with every decompressor.
pub const ALL_EXTENSIONS: &[&str] = &[".ko", ".ko.gz", ".ko.xz", ".ko.zst"];

/// Files shorter than this are rejected with EINVAL before anything else is looked at.
pub const MIN_FILE_LEN: usize = 6;

/// Upper bound on a decompressed image (1 GiB). Larger outputs are treated as corrupt
/// input instead of exhausting memory; real modules are a few MiB at most.
pub const MAX_DECOMPRESSED_LEN: usize = 1 << 30;

/// Memory the xz decoder may use (256 MiB), mostly its dictionary. The dictionary size
/// is a header field: without a limit a 100-byte file claiming a 4 GiB dictionary makes
/// liblzma allocate 4 GiB. `xz -9e` needs 65 MiB; the kernel compresses modules with a
/// 1 MiB dictionary.
pub const XZ_MEMLIMIT: u64 = 256 << 20;

const MAGIC_ZSTD: &[u8] = &[0x28, 0xB5, 0x2F, 0xFD];
const MAGIC_XZ: &[u8] = &[0xFD, b'7', b'z', b'X', b'Z', 0x00];
const MAGIC_GZIP: &[u8] = &[0x1F, 0x8B];

/// Compression format of a module file, as detected from its content.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Compression {
    /// Not compressed (plain ELF, or anything unrecognised).
    None,
    /// xz (LZMA2) stream.
    Xz,
    /// zstd frame(s).
    Zstd,
    /// gzip member(s).
    Gzip,
}

impl Compression {
    /// Lower-case name: `none`, `xz`, `zstd` or `gzip` (the `xz`/`zstd`/`gzip` spelling
    /// matches `/sys/module/compression`).
    pub fn name(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Xz => "xz",
            Compression::Zstd => "zstd",
            Compression::Gzip => "gzip",
        }
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Which decompressors are "built in". Data in a format that is not enabled is treated
/// as plain, like a kmod built without that library.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decoders {
    /// Decode xz.
    pub xz: bool,
    /// Decode zstd.
    pub zstd: bool,
    /// Decode gzip.
    pub gzip: bool,
}

impl Decoders {
    /// Every decompressor.
    pub const ALL: Decoders = Decoders {
        xz: true,
        zstd: true,
        gzip: true,
    };
    /// Debian 12's kmod 30: xz and zstd, no gzip.
    pub const KMOD30: Decoders = Decoders {
        xz: true,
        zstd: true,
        gzip: false,
    };

    fn enabled(self, c: Compression) -> bool {
        match c {
            Compression::None => true,
            Compression::Xz => self.xz,
            Compression::Zstd => self.zstd,
            Compression::Gzip => self.gzip,
        }
    }
}

/// Why a compressed image could not be decoded. kmod reports all of these as EINVAL.
#[derive(Debug, thiserror::Error)]
pub enum CompressError {
    /// The input is shorter than [`MIN_FILE_LEN`] bytes.
    #[error("file too short ({len} bytes, need at least 6)")]
    TooShort {
        /// Input length.
        len: usize,
    },
    /// The stream is corrupt, truncated or uses unsupported options.
    #[error("{format}: {cause}")]
    Corrupt {
        /// Detected format.
        format: Compression,
        /// Decoder message.
        cause: String,
    },
    /// The decompressed data would exceed [`MAX_DECOMPRESSED_LEN`].
    #[error("{format}: decompressed data larger than {MAX_DECOMPRESSED_LEN} bytes")]
    TooLarge {
        /// Detected format.
        format: Compression,
    },
}

impl CompressError {
    /// The errno kmod reports: always EINVAL.
    pub fn errno(&self) -> i32 {
        nix::errno::Errno::EINVAL as i32
    }
}

/// Detects the compression format from the first bytes (all decoders enabled).
pub fn detect(bytes: &[u8]) -> Compression {
    detect_with(bytes, Decoders::ALL)
}

/// Detects the compression format, reporting disabled formats as [`Compression::None`].
pub fn detect_with(bytes: &[u8], decoders: Decoders) -> Compression {
    let found = if bytes.starts_with(MAGIC_ZSTD) {
        Compression::Zstd
    } else if bytes.starts_with(MAGIC_XZ) {
        Compression::Xz
    } else if bytes.starts_with(MAGIC_GZIP) {
        Compression::Gzip
    } else {
        Compression::None
    };
    if decoders.enabled(found) {
        found
    } else {
        Compression::None
    }
}

/// Decompresses a module image (all decoders enabled). Plain data is returned borrowed.
pub fn decompress(bytes: &[u8]) -> Result<Cow<'_, [u8]>, CompressError> {
    decompress_with(bytes, Decoders::ALL)
}

/// Decompresses a module image with the given set of decoders.
pub fn decompress_with(bytes: &[u8], decoders: Decoders) -> Result<Cow<'_, [u8]>, CompressError> {
    if bytes.len() < MIN_FILE_LEN {
        return Err(CompressError::TooShort { len: bytes.len() });
    }
    match detect_with(bytes, decoders) {
        Compression::None => Ok(Cow::Borrowed(bytes)),
        format => {
            let mut out = Vec::new();
            decode_into(bytes, format, &mut out)?;
            Ok(Cow::Owned(out))
        }
    }
}

/// Decompresses a module image into `out` (cleared first; its capacity is reused, so a
/// caller decoding many files can keep one buffer). Returns the detected format; plain data
/// is copied as is. The bytes in `out` are exactly what [`decompress_with`] returns.
pub fn decompress_into(
    bytes: &[u8],
    decoders: Decoders,
    out: &mut Vec<u8>,
) -> Result<Compression, CompressError> {
    out.clear();
    if bytes.len() < MIN_FILE_LEN {
        return Err(CompressError::TooShort { len: bytes.len() });
    }
    let format = detect_with(bytes, decoders);
    match format {
        Compression::None => out.extend_from_slice(bytes),
        _ => decode_into(bytes, format, out)?,
    }
    Ok(format)
}

fn decode_into(bytes: &[u8], format: Compression, out: &mut Vec<u8>) -> Result<(), CompressError> {
    out.clear();
    let res = match format {
        Compression::None => {
            out.extend_from_slice(bytes);
            Ok(())
        }
        Compression::Xz => decode_xz(bytes, out),
        Compression::Zstd => decode_zstd(bytes, out),
        Compression::Gzip => decode_gzip(bytes, out),
    };
    if res.is_err() {
        out.clear();
    }
    res
}

/// Initial capacity for an output buffer: the size the stream declares, if any, but
/// never more than 16 times the input (the declaration is untrusted) nor the hard limit.
fn capacity_hint(declared: Option<u64>, input_len: usize) -> usize {
    let fallback = input_len.saturating_mul(4);
    let cap = input_len.saturating_mul(16).min(MAX_DECOMPRESSED_LEN);
    declared
        .and_then(|d| usize::try_from(d).ok())
        .unwrap_or(fallback)
        .min(cap)
}

/// Makes room for more output, failing once the hard limit is reached.
fn grow(out: &mut Vec<u8>, format: Compression) -> Result<(), CompressError> {
    if out.len() < out.capacity() {
        return Ok(());
    }
    if out.len() >= MAX_DECOMPRESSED_LEN {
        return Err(CompressError::TooLarge { format });
    }
    let extra = out
        .len()
        .max(64 * 1024)
        .min(MAX_DECOMPRESSED_LEN - out.len());
    out.reserve_exact(extra);
    Ok(())
}

fn corrupt(format: Compression, cause: impl fmt::Display) -> CompressError {
    CompressError::Corrupt {
        format,
        cause: cause.to_string(),
    }
}

/// Reads an xz multi-byte integer (at most 9 bytes) from `data` at `*pos`.
fn xz_varint(data: &[u8], pos: &mut usize) -> Option<u64> {
    let mut value = 0u64;
    for i in 0..9 {
        let b = *data.get(*pos)?;
        *pos += 1;
        value |= u64::from(b & 0x7F) << (7 * i);
        if b & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

/// Uncompressed size of the last xz stream in `data`, read from its index. Only used as
/// a capacity hint, so any oddity simply gives `None`.
fn xz_size_hint(data: &[u8]) -> Option<u64> {
    // Stream padding: NUL bytes after the footer, a multiple of 4.
    let mut end = data.len();
    while end >= 4 && data[end - 4..end] == [0, 0, 0, 0] {
        end -= 4;
    }
    let footer = data.get(end.checked_sub(12)?..end)?;
    if footer[10..12] != *b"YZ" {
        return None;
    }
    let backward = u32::from_le_bytes([footer[4], footer[5], footer[6], footer[7]]);
    let index_len = (u64::from(backward) + 1) * 4;
    let index_start = (end - 12).checked_sub(usize::try_from(index_len).ok()?)?;
    let index = &data[index_start..end - 12];
    if index.first() != Some(&0) {
        return None;
    }
    let mut pos = 1;
    let records = xz_varint(index, &mut pos)?;
    let mut total = 0u64;
    for _ in 0..records {
        xz_varint(index, &mut pos)?; // unpadded size
        total = total.checked_add(xz_varint(index, &mut pos)?)?;
    }
    Some(total)
}

/// Ensures `out` (empty) can take `want` bytes without reallocating.
fn reserve_for(out: &mut Vec<u8>, want: usize) {
    if out.capacity() < want {
        // A new allocation: growing the old one would copy its stale bytes.
        *out = Vec::with_capacity(want);
    }
}

fn decode_xz(data: &[u8], out: &mut Vec<u8>) -> Result<(), CompressError> {
    use liblzma::stream::{Action, Status, Stream, CONCATENATED};
    const F: Compression = Compression::Xz;

    let mut stream =
        Stream::new_stream_decoder(XZ_MEMLIMIT, CONCATENATED).map_err(|e| corrupt(F, e))?;
    reserve_for(out, capacity_hint(xz_size_hint(data), data.len()));
    let mut pos = 0usize;
    loop {
        grow(out, F)?;
        let in_before = stream.total_in();
        let out_before = out.len();
        let status = stream
            .process_vec(&data[pos..], out, Action::Finish)
            .map_err(|e| corrupt(F, xz_error_text(e)))?;
        let consumed = usize::try_from(stream.total_in() - in_before).unwrap_or(usize::MAX);
        pos = pos.saturating_add(consumed).min(data.len());
        match status {
            Status::StreamEnd => return Ok(()),
            _ if consumed == 0 && out.len() == out_before && out.len() < out.capacity() => {
                return Err(corrupt(F, "unexpected end of input"));
            }
            _ => {}
        }
    }
}

fn xz_error_text(e: liblzma::stream::Error) -> &'static str {
    use liblzma::stream::Error;
    match e {
        Error::Data => "file is corrupt",
        Error::Format => "file format not recognized",
        Error::Options => "unsupported compression options",
        Error::Mem => "out of memory",
        Error::MemLimit => "the stream needs more than the 256 MiB memory limit",
        _ => "decoder error",
    }
}

thread_local! {
    /// One zstd decompression context per thread, reused for every file.
    static ZSTD_DCTX: std::cell::RefCell<Option<zstd::zstd_safe::DCtx<'static>>> =
        const { std::cell::RefCell::new(None) };
}

/// One-shot zstd decoding straight into `out` when the first frame declares its size:
/// no window buffer and no copy. `false` (with `out` cleared) when that does not work for
/// any reason (size unknown or too small, several frames, corrupt data, ...); the caller
/// then runs the streaming decoder, which gives the same bytes or the error to report.
fn decode_zstd_oneshot(data: &[u8], declared: Option<u64>, out: &mut Vec<u8>) -> bool {
    let Some(size) = declared.and_then(|d| usize::try_from(d).ok()) else {
        return false;
    };
    if size > capacity_hint(declared, data.len()) {
        return false;
    }
    reserve_for(out, size);
    let ok = ZSTD_DCTX
        .try_with(|cell| {
            let Ok(mut slot) = cell.try_borrow_mut() else {
                return false;
            };
            if slot.is_none() {
                *slot = zstd::zstd_safe::DCtx::try_create();
            }
            let Some(dctx) = slot.as_mut() else {
                return false;
            };
            match dctx.decompress(out, data) {
                Ok(n) => n == out.len(),
                Err(_) => {
                    // Leave the context clean for the next file.
                    let _ = dctx.reset(zstd::zstd_safe::ResetDirective::SessionAndParameters);
                    false
                }
            }
        })
        .unwrap_or(false);
    if !ok {
        out.clear();
    }
    ok
}

fn decode_zstd(data: &[u8], out: &mut Vec<u8>) -> Result<(), CompressError> {
    use zstd::stream::raw::{Decoder, InBuffer, Operation, OutBuffer};
    const F: Compression = Compression::Zstd;

    let declared = zstd::zstd_safe::get_frame_content_size(data).ok().flatten();
    if decode_zstd_oneshot(data, declared, out) {
        return Ok(());
    }
    reserve_for(out, capacity_hint(declared, data.len()));
    let mut decoder = Decoder::new().map_err(|e| corrupt(F, e))?;
    let mut input = InBuffer::around(data);
    loop {
        grow(out, F)?;
        let in_before = input.pos();
        let out_before = out.len();
        let hint = {
            let len = out.len();
            let mut output = OutBuffer::around_pos(out, len);
            decoder
                .run(&mut input, &mut output)
                .map_err(|e| corrupt(F, e))?
        };
        if input.pos() == data.len() && hint == 0 {
            return Ok(());
        }
        if input.pos() == in_before && out.len() == out_before && out.len() < out.capacity() {
            return Err(corrupt(F, "unexpected end of input"));
        }
    }
}

fn decode_gzip(data: &[u8], out: &mut Vec<u8>) -> Result<(), CompressError> {
    const F: Compression = Compression::Gzip;
    // ISIZE of the last member: the uncompressed length modulo 2^32.
    let declared = data
        .get(data.len().saturating_sub(4)..)
        .filter(|t| t.len() == 4)
        .map(|t| u64::from(u32::from_le_bytes([t[0], t[1], t[2], t[3]])));
    reserve_for(out, capacity_hint(declared, data.len()));
    let decoder = flate2::read::MultiGzDecoder::new(data);
    let limit = MAX_DECOMPRESSED_LEN as u64 + 1;
    decoder
        .take(limit)
        .read_to_end(out)
        .map_err(|e| corrupt(F, e))?;
    if out.len() > MAX_DECOMPRESSED_LEN {
        return Err(CompressError::TooLarge { format: F });
    }
    Ok(())
}

/// Why a module file could not be read. Always carries the path.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// Opening, reading or mapping the file failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// The file is too short or its compressed content cannot be decoded.
    #[error("{}: {source}", path.display())]
    Decompress {
        /// The file.
        path: PathBuf,
        /// The decoder error.
        source: CompressError,
    },
}

impl ReadError {
    /// The file the error is about.
    pub fn path(&self) -> &Path {
        match self {
            ReadError::Io { path, .. } | ReadError::Decompress { path, .. } => path,
        }
    }

    /// The errno kmod would report (the OS error, or EINVAL for content errors).
    pub fn errno(&self) -> i32 {
        match self {
            ReadError::Io { source, .. } => source
                .raw_os_error()
                .unwrap_or(nix::errno::Errno::EIO as i32),
            ReadError::Decompress { source, .. } => source.errno(),
        }
    }
}

/// The uncompressed content of a module file: the bytes of a plain file, or the
/// decompressed bytes. Dereferences to `[u8]`.
///
/// Module files are read, never memory-mapped: a module file can be rewritten in place
/// while a tool runs (`cp` and `make modules_install` truncate the old file and write the
/// new one), and reading a mapping past the new end of a truncated file kills the process
/// with SIGBUS. A read copy stays whole whatever happens to the file.
pub struct ModuleImage {
    data: Vec<u8>,
    compression: Compression,
}

impl ModuleImage {
    /// Wraps bytes that are already in memory (e.g. for tests).
    pub fn from_vec(bytes: Vec<u8>, compression: Compression) -> ModuleImage {
        ModuleImage {
            data: bytes,
            compression,
        }
    }

    /// The compression the file was stored with.
    pub fn compression(&self) -> Compression {
        self.compression
    }
}

impl Deref for ModuleImage {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.data
    }
}

impl AsRef<[u8]> for ModuleImage {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

impl fmt::Debug for ModuleImage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ModuleImage")
            .field("len", &self.len())
            .field("compression", &self.compression)
            .finish()
    }
}

/// Reads a module file with every decoder enabled. See [`read_module_file_with`].
pub fn read_module_file(path: &Path) -> Result<ModuleImage, ReadError> {
    read_module_file_with(path, Decoders::ALL)
}

/// Reads a module file: plain files are read whole, compressed files are decompressed
/// (see [`ModuleImage`] for why nothing is memory-mapped).
///
/// Like kmod, the first 6 bytes are read first: a shorter file fails with EINVAL, and an
/// error reading them (e.g. EISDIR for a directory) is reported as is.
pub fn read_module_file_with(path: &Path, decoders: Decoders) -> Result<ModuleImage, ReadError> {
    let io_err = |source: io::Error| ReadError::Io {
        path: path.to_path_buf(),
        source,
    };
    let dec_err = |source: CompressError| ReadError::Decompress {
        path: path.to_path_buf(),
        source,
    };
    let mut file = open_module_file(path).map_err(io_err)?;

    let mut head = [0u8; MIN_FILE_LEN];
    let mut got = 0;
    while got < head.len() {
        match file.read(&mut head[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(io_err(e)),
        }
    }
    if got < MIN_FILE_LEN {
        return Err(dec_err(CompressError::TooShort { len: got }));
    }
    let size = file.metadata().map_err(io_err)?.len();
    if size < MIN_FILE_LEN as u64 {
        // Not a regular file (its size is not meaningful): nothing to map.
        return Err(dec_err(CompressError::TooShort { len: 0 }));
    }
    // No module comes near the limit (a few tens of MiB at most); a (sparse) file
    // claiming more is refused before anything is allocated, and one that grows while it
    // is read is cut off there.
    let too_big = || {
        io_err(io::Error::from_raw_os_error(
            nix::errno::Errno::EFBIG as i32,
        ))
    };
    let limit = MAX_DECOMPRESSED_LEN as u64;
    if size > limit {
        return Err(too_big());
    }
    let mut data = Vec::with_capacity(size as usize + 1);
    data.extend_from_slice(&head);
    Read::by_ref(&mut file)
        .take(limit + 1 - MIN_FILE_LEN as u64)
        .read_to_end(&mut data)
        .map_err(io_err)?;
    if data.len() as u64 > limit {
        return Err(too_big());
    }
    let compression = detect_with(&data, decoders);
    if compression == Compression::None {
        return Ok(ModuleImage { data, compression });
    }
    let bytes = decompress_with(&data, decoders)
        .map_err(dec_err)?
        .into_owned();
    Ok(ModuleImage {
        data: bytes,
        compression,
    })
}

/// Open a module file for reading without ever blocking: `O_NONBLOCK` (so a FIFO named
/// `*.ko` cannot hang us in open(2)), then refuse anything that is not a regular file:
/// EISDIR for a directory, EINVAL for a FIFO, socket or device.
pub fn open_module_file(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::fcntl::OFlag::O_NONBLOCK.bits())
        .open(path)?;
    let ft = file.metadata()?.file_type();
    if ft.is_dir() {
        return Err(io::Error::from_raw_os_error(
            nix::errno::Errno::EISDIR as i32,
        ));
    }
    if !ft.is_file() {
        return Err(io::Error::from_raw_os_error(
            nix::errno::Errno::EINVAL as i32,
        ));
    }
    Ok(file)
}
