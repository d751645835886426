//! Putting one module file into the kernel (spec runtime-tools §8.1). Shared by insmod
//! and modprobe.
//!
//! [`insert_module`] is the single entry point:
//!
//! ```text
//! open FILE read-only, read its first 6 bytes (shorter → EINVAL)
//! compression = detect(first bytes)                      (by content, never by name)
//! if FILE is plain, or the kernel decompresses that format itself
//!     (/sys/module/compression, see LoadOptions::kernel_compression):
//!         finit_module(fd, params, force bits | COMPRESSED_FILE if compressed)
//!         any result except ENOSYS is final
//! read the file and decompress it in user space
//! with force flags: patch a copy (clear SHF_ALLOC of "__versions" for
//!     --force-modversion, blank the "vermagic=" string of ".modinfo" for
//!     --force-vermagic); a patch that cannot be applied is reported at INFO level and
//!     the load goes on with the unpatched image (kmod 30)
//! init_module(image, params)
//! ```
//!
//! The errno of a failed system call is preserved in [`LoadError::Kernel`]; failures to
//! open, read or decompress the file are separate variants, so a caller can tell a file
//! problem from a kernel refusal (modprobe prints both with the same text, insmod and the
//! explanations in [`crate::explain`] do not).
//!
//! [`params_from_args`] builds the parameter string from command-line operands with the
//! quoting rule of spec §3.5.4 (used by modprobe for its extra parameters and by insmod).
//!
//! Nothing here prints: library-level notes go to the caller's [`Sink`].

use std::ffi::CString;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use crate::compress::{self, CompressError, Compression, Decoders, MIN_FILE_LEN};
use crate::diag::{Level, Sink};
use crate::kernel::{strerror, Errno, Kernel, KernelError, LoadFlags};
use crate::procfs::{KernelCompression, LiveModules};
use crate::root::Root;

/// How to load: force flags, the kernel's own decompressor, the user-space decoders.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadOptions {
    /// `--force-vermagic` (`-f` sets both force flags).
    pub force_vermagic: bool,
    /// `--force-modversion`.
    pub force_modversion: bool,
    /// The format the kernel can decompress itself (`/sys/module/compression`), read once
    /// per run with [`kernel_compression`]. `None`: the kernel decompresses nothing and
    /// compressed files always go through user space and `init_module`.
    pub kernel_compression: Option<Compression>,
    /// Which formats are decompressed in user space. Data in a disabled format is passed
    /// on as it is (and then refused by the kernel as not ELF).
    pub decoders: Decoders,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            force_vermagic: false,
            force_modversion: false,
            kernel_compression: None,
            decoders: Decoders::ALL,
        }
    }
}

impl LoadOptions {
    /// No forcing; the kernel's decompressor read from `root` (messages to `sink`).
    pub fn for_root(root: &Root, sink: &mut dyn Sink) -> LoadOptions {
        LoadOptions {
            kernel_compression: kernel_compression(root, sink),
            ..LoadOptions::default()
        }
    }

    /// `-f`/`--force`: both force flags.
    pub fn force(mut self) -> LoadOptions {
        self.force_vermagic = true;
        self.force_modversion = true;
        self
    }

    /// Any force flag set?
    pub fn forced(&self) -> bool {
        self.force_vermagic || self.force_modversion
    }

    /// The `finit_module` flags for a file that is (`compressed`) or is not compressed.
    pub fn finit_flags(&self, compressed: bool) -> LoadFlags {
        LoadFlags {
            ignore_modversions: self.force_modversion,
            ignore_vermagic: self.force_vermagic,
            compressed_file: compressed,
        }
    }
}

/// The in-kernel decompressor named by `/sys/module/compression` (kmod 31+). Absent file
/// → `None`; unknown text → library error `unknown kernel compression <text>` and `None`.
pub fn kernel_compression(root: &Root, sink: &mut dyn Sink) -> Option<Compression> {
    match LiveModules::new(root).kernel_compression() {
        KernelCompression::None => None,
        KernelCompression::Gzip => Some(Compression::Gzip),
        KernelCompression::Xz => Some(Compression::Xz),
        KernelCompression::Zstd => Some(Compression::Zstd),
        KernelCompression::Unknown(text) => {
            let t = String::from_utf8_lossy(&text);
            sink.emit(
                Level::Error,
                format!("unknown kernel compression {}", t.trim_end_matches('\n')),
            );
            None
        }
    }
}

/// Which system call put the module in (for `-v` output and tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// `finit_module` on the file; `flags.compressed_file` says whether the kernel
    /// decompressed it.
    Finit { flags: LoadFlags },
    /// `init_module` with a user-space image of `len` bytes (decompressed, and patched
    /// if forced). `after_enosys`: `finit_module` was tried first and is not implemented.
    Init { len: usize, after_enosys: bool },
}

/// A successful insertion.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Inserted {
    pub method: Method,
    /// The compression the file was stored with.
    pub compression: Compression,
}

/// Why a module could not be inserted. [`LoadError::errno`] is what kmod would report.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file could not be opened or read (ENOENT, EACCES, EISDIR, ...).
    #[error("{}: {}", path.display(), crate::kernel::strerror_io(source))]
    File {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The file is shorter than 6 bytes (kmod: EINVAL).
    #[error("{}: file too short ({len} bytes)", path.display())]
    TooShort { path: PathBuf, len: usize },
    /// The compressed content could not be decoded (kmod: EINVAL).
    #[error("{}: {source}", path.display())]
    Decompress {
        path: PathBuf,
        #[source]
        source: CompressError,
    },
    /// The kernel refused the module; the errno is the kernel's.
    #[error("{0}")]
    Kernel(#[from] KernelError),
}

impl LoadError {
    /// The errno kmod reports for this failure (positive).
    pub fn errno(&self) -> i32 {
        match self {
            LoadError::File { source, .. } => source.raw_os_error().unwrap_or(Errno::EIO as i32),
            LoadError::TooShort { .. } | LoadError::Decompress { .. } => Errno::EINVAL as i32,
            LoadError::Kernel(k) => k.raw(),
        }
    }

    /// `strerror()` of [`LoadError::errno`].
    pub fn strerror(&self) -> String {
        crate::kernel::strerror(self.errno())
    }

    /// Did the kernel itself answer (as opposed to a problem with the file)?
    pub fn from_kernel(&self) -> bool {
        matches!(self, LoadError::Kernel(_))
    }
}

/// Insert the module file at `path` with the parameter string `params`.
///
/// `path` is used as given (callers pass a host path, e.g. from `modules.dep` or the
/// command line). `params` is cut at its first NUL byte, as a C string would be; pass
/// `b""` for none. Library notes (INFO: strip failures, DEBUG: which call was made) go to
/// `sink`.
pub fn insert_module(
    kernel: &dyn Kernel,
    path: &Path,
    params: &[u8],
    opts: &LoadOptions,
    sink: &mut dyn Sink,
) -> Result<Inserted, LoadError> {
    let file_err = |source: io::Error| LoadError::File {
        path: path.to_path_buf(),
        source,
    };
    let cparams = c_params(params);
    let mut file = compress::open_module_file(path).map_err(file_err)?;
    let mut head = [0u8; MIN_FILE_LEN];
    let got = read_full(&mut file, &mut head).map_err(file_err)?;
    if got < MIN_FILE_LEN {
        return Err(LoadError::TooShort {
            path: path.to_path_buf(),
            len: got,
        });
    }
    let compression = compress::detect_with(&head, opts.decoders);
    // A format we cannot decode is passed to the kernel as it is, like a plain file.
    let compressed = compression != Compression::None;

    let mut after_enosys = false;
    if !compressed || opts.kernel_compression == Some(compression) {
        let flags = opts.finit_flags(compressed);
        sink.emit(
            Level::Debug,
            format!(
                "finit_module({}, \"{}\", {:#x})",
                path.display(),
                String::from_utf8_lossy(cparams.to_bytes()),
                flags.bits()
            ),
        );
        match kernel.finit_module(&file, &cparams, flags) {
            Ok(()) => {
                return Ok(Inserted {
                    method: Method::Finit { flags },
                    compression,
                })
            }
            Err(e) if e.errno() == Errno::ENOSYS => after_enosys = true,
            Err(e) => return Err(LoadError::Kernel(e)),
        }
    }

    let mut raw = Vec::new();
    file.seek(SeekFrom::Start(0)).map_err(file_err)?;
    file.read_to_end(&mut raw).map_err(file_err)?;
    drop(file);
    let image = compress::decompress_with(&raw, opts.decoders).map_err(|source| match source {
        CompressError::TooShort { len } => LoadError::TooShort {
            path: path.to_path_buf(),
            len,
        },
        source => LoadError::Decompress {
            path: path.to_path_buf(),
            source,
        },
    })?;
    let mut image = image.into_owned();
    if opts.forced() {
        // kmod 30 only logs a patch that cannot be applied and loads the image as it is.
        if opts.force_modversion {
            if let Err(why) = crate::elf::clear_alloc_flag(&mut image, b"__versions") {
                sink.emit(
                    Level::Info,
                    format!("Failed to strip modversion: {}", strerror(why.errno())),
                );
            }
        }
        if opts.force_vermagic {
            if let Err(why) = crate::module::strip_vermagic(&mut image) {
                sink.emit(
                    Level::Info,
                    format!("Failed to strip vermagic: {}", strerror(why.errno())),
                );
            }
        }
    }
    sink.emit(
        Level::Debug,
        format!(
            "init_module(<{} bytes from {}>, \"{}\")",
            image.len(),
            path.display(),
            String::from_utf8_lossy(cparams.to_bytes())
        ),
    );
    kernel.init_module(&image, &cparams)?;
    Ok(Inserted {
        method: Method::Init {
            len: image.len(),
            after_enosys,
        },
        compression,
    })
}

fn c_params(params: &[u8]) -> CString {
    let end = params.iter().position(|&b| b == 0).unwrap_or(params.len());
    // No NUL byte remains, so this cannot fail.
    CString::new(&params[..end]).unwrap_or_default()
}

fn read_full(file: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match file.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// The parameter string for command-line operands `param[=value] ...` (spec §3.5.4,
/// kmod 34+ for insmod): operands joined with single spaces; an operand with `=` whose
/// value contains a space and does not start with `"` or `'` gets its value wrapped in
/// double quotes (`b=x y` → `b="x y"`; `d=e"f g"` → `d="e"f g""`, kmod's quirk kept).
pub fn params_from_args<I, A>(args: I) -> Vec<u8>
where
    I: IntoIterator<Item = A>,
    A: AsRef<[u8]>,
{
    let mut out = Vec::new();
    for (i, a) in args.into_iter().enumerate() {
        let a = a.as_ref();
        if i > 0 {
            out.push(b' ');
        }
        match a.iter().position(|&b| b == b'=') {
            Some(eq)
                if a[eq + 1..].contains(&b' ')
                    && !matches!(a.get(eq + 1), Some(b'"') | Some(b'\'')) =>
            {
                out.extend_from_slice(&a[..=eq]);
                out.push(b'"');
                out.extend_from_slice(&a[eq + 1..]);
                out.push(b'"');
            }
            _ => out.extend_from_slice(a),
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn params_quoting() {
        assert_eq!(params_from_args::<[&[u8]; 0], &[u8]>([]), b"");
        assert_eq!(params_from_args(["a=1"]), b"a=1");
        assert_eq!(params_from_args(["a=1", "b=x y"]), b"a=1 b=\"x y\"");
        assert_eq!(params_from_args(["c='z w'"]), b"c='z w'");
        assert_eq!(params_from_args(["q=\"q r\""]), b"q=\"q r\"");
        assert_eq!(params_from_args(["d=e\"f g\""]), b"d=\"e\"f g\"\"");
        assert_eq!(params_from_args(["flag", "x y"]), b"flag x y");
    }

    #[test]
    fn c_params_cut_at_nul() {
        assert_eq!(c_params(b"a=1\0b").to_bytes(), b"a=1");
        assert_eq!(c_params(b"").to_bytes(), b"");
    }
}
