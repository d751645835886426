//! The one door to the kernel: the module system calls and `uname`.
//!
//! Tools talk to the kernel only through the [`Kernel`] trait. [`LinuxKernel`] is the real
//! thing and the only user of `nix::kmod` in the project; tests use a simulated kernel
//! (`tests::simkernel`). errno values are preserved exactly (spec §8.3): the tools turn
//! them into their messages.

use std::ffi::CStr;
use std::fs::File;
use std::io;
use std::os::fd::AsFd;

pub use nix::errno::Errno;

/// `finit_module` flag: ignore symbol version CRCs (spec §8.1).
pub const MODULE_INIT_IGNORE_MODVERSIONS: u32 = 1;
/// `finit_module` flag: ignore the vermagic string.
pub const MODULE_INIT_IGNORE_VERMAGIC: u32 = 2;
/// `finit_module` flag: the file is compressed; the kernel decompresses it (Linux 6.4+).
pub const MODULE_INIT_COMPRESSED_FILE: u32 = 4;

/// `delete_module` flag `O_NONBLOCK` (always passed, like kmod).
pub const DELETE_O_NONBLOCK: u32 = 0o4000;
/// `delete_module` flag `O_TRUNC` (forced removal).
pub const DELETE_O_TRUNC: u32 = 0o1000;

/// Flags for [`Kernel::finit_module`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct LoadFlags {
    /// `--force-modversion`: `MODULE_INIT_IGNORE_MODVERSIONS`.
    pub ignore_modversions: bool,
    /// `--force-vermagic`: `MODULE_INIT_IGNORE_VERMAGIC`.
    pub ignore_vermagic: bool,
    /// `MODULE_INIT_COMPRESSED_FILE`: the kernel decompresses the file itself.
    pub compressed_file: bool,
}

impl LoadFlags {
    /// `-f`/`--force`: both ignore flags.
    pub const FORCE: LoadFlags = LoadFlags {
        ignore_modversions: true,
        ignore_vermagic: true,
        compressed_file: false,
    };

    /// The flag word passed to the system call.
    pub fn bits(self) -> u32 {
        let mut b = 0;
        if self.ignore_modversions {
            b |= MODULE_INIT_IGNORE_MODVERSIONS;
        }
        if self.ignore_vermagic {
            b |= MODULE_INIT_IGNORE_VERMAGIC;
        }
        if self.compressed_file {
            b |= MODULE_INIT_COMPRESSED_FILE;
        }
        b
    }

    /// The inverse of [`LoadFlags::bits`]; `None` if any unknown bit is set (the kernel
    /// answers such a call with `EINVAL`).
    pub fn from_bits(bits: u32) -> Option<LoadFlags> {
        let known = MODULE_INIT_IGNORE_MODVERSIONS
            | MODULE_INIT_IGNORE_VERMAGIC
            | MODULE_INIT_COMPRESSED_FILE;
        if bits & !known != 0 {
            return None;
        }
        Some(LoadFlags {
            ignore_modversions: bits & MODULE_INIT_IGNORE_MODVERSIONS != 0,
            ignore_vermagic: bits & MODULE_INIT_IGNORE_VERMAGIC != 0,
            compressed_file: bits & MODULE_INIT_COMPRESSED_FILE != 0,
        })
    }

    /// Any of the force flags set?
    pub fn forced(self) -> bool {
        self.ignore_modversions || self.ignore_vermagic
    }
}

/// Flags for [`Kernel::delete_module`]. `O_NONBLOCK` is always passed (spec §8.2).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct DeleteFlags {
    /// `-f`: add `O_TRUNC`.
    pub force: bool,
}

impl DeleteFlags {
    /// The flag word passed to the system call: `O_NONBLOCK`, plus `O_TRUNC` if forced.
    pub fn bits(self) -> u32 {
        if self.force {
            DELETE_O_NONBLOCK | DELETE_O_TRUNC
        } else {
            DELETE_O_NONBLOCK
        }
    }
}

/// A failed kernel call. The errno is kept exactly as the kernel returned it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KernelError {
    #[error("finit_module: {}", errno_text(.0))]
    FinitModule(Errno),
    #[error("init_module: {}", errno_text(.0))]
    InitModule(Errno),
    #[error("delete_module: {}", errno_text(.0))]
    DeleteModule(Errno),
    #[error("uname: {}", errno_text(.0))]
    Uname(Errno),
}

fn errno_text(e: &Errno) -> String {
    strerror(*e as i32)
}

impl KernelError {
    /// The errno the kernel returned.
    pub fn errno(&self) -> Errno {
        match *self {
            KernelError::FinitModule(e)
            | KernelError::InitModule(e)
            | KernelError::DeleteModule(e)
            | KernelError::Uname(e) => e,
        }
    }

    /// The errno as a positive integer.
    pub fn raw(&self) -> i32 {
        self.errno() as i32
    }

    /// `strerror()` of the errno, e.g. `Resource temporarily unavailable`.
    pub fn strerror(&self) -> String {
        strerror(self.raw())
    }
}

/// The module-related kernel interface.
pub trait Kernel {
    /// `finit_module(fd, params, flags)`: the kernel reads the module from `file`.
    fn finit_module(&self, file: &File, params: &CStr, flags: LoadFlags)
        -> Result<(), KernelError>;

    /// `init_module(image, len, params)`: the caller supplies the uncompressed image.
    fn init_module(&self, image: &[u8], params: &CStr) -> Result<(), KernelError>;

    /// `delete_module(name, O_NONBLOCK | (O_TRUNC if forced))`.
    fn delete_module(&self, name: &CStr, flags: DeleteFlags) -> Result<(), KernelError>;

    /// The running kernel's release (`uname -r`).
    fn release(&self) -> Result<String, KernelError>;
}

/// The running Linux kernel. Never use it in tests: it really loads and unloads modules.
#[derive(Debug, Clone, Copy, Default)]
pub struct LinuxKernel;

impl Kernel for LinuxKernel {
    fn finit_module(
        &self,
        file: &File,
        params: &CStr,
        flags: LoadFlags,
    ) -> Result<(), KernelError> {
        let f = nix::kmod::ModuleInitFlags::from_bits_retain(flags.bits());
        nix::kmod::finit_module(file.as_fd(), params, f).map_err(KernelError::FinitModule)
    }

    fn init_module(&self, image: &[u8], params: &CStr) -> Result<(), KernelError> {
        nix::kmod::init_module(image, params).map_err(KernelError::InitModule)
    }

    fn delete_module(&self, name: &CStr, flags: DeleteFlags) -> Result<(), KernelError> {
        let mut f = nix::kmod::DeleteModuleFlags::O_NONBLOCK;
        if flags.force {
            f |= nix::kmod::DeleteModuleFlags::O_TRUNC;
        }
        nix::kmod::delete_module(name, f).map_err(KernelError::DeleteModule)
    }

    fn release(&self) -> Result<String, KernelError> {
        let u = nix::sys::utsname::uname().map_err(KernelError::Uname)?;
        Ok(u.release().to_string_lossy().into_owned())
    }
}

/// The C library's `strerror()` text for an errno (`No such file or directory`), without
/// Rust's ` (os error N)` suffix.
pub fn strerror(errno: i32) -> String {
    strip_os_error(io::Error::from_raw_os_error(errno).to_string())
}

/// `strerror()` text of an `io::Error` (its own message when it carries no errno).
pub fn strerror_io(e: &io::Error) -> String {
    match e.raw_os_error() {
        Some(n) => strerror(n),
        None => e.to_string(),
    }
}

fn strip_os_error(mut s: String) -> String {
    if let Some(i) = s.rfind(" (os error ") {
        if s.ends_with(')') {
            s.truncate(i);
        }
    }
    s
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn load_flag_bits() {
        assert_eq!(LoadFlags::default().bits(), 0);
        assert_eq!(LoadFlags::FORCE.bits(), 3);
        let v = LoadFlags {
            ignore_vermagic: true,
            ..LoadFlags::default()
        };
        assert_eq!(v.bits(), 2);
        let m = LoadFlags {
            ignore_modversions: true,
            ..LoadFlags::default()
        };
        assert_eq!(m.bits(), 1);
        let all = LoadFlags {
            compressed_file: true,
            ..LoadFlags::FORCE
        };
        assert_eq!(all.bits(), 7);
        assert_eq!(LoadFlags::from_bits(7), Some(all));
        assert_eq!(LoadFlags::from_bits(8), None);
        assert!(LoadFlags::FORCE.forced());
        assert!(!LoadFlags::default().forced());
        // The constants agree with the C headers.
        assert_eq!(
            MODULE_INIT_IGNORE_MODVERSIONS,
            nix::libc::MODULE_INIT_IGNORE_MODVERSIONS
        );
        assert_eq!(
            MODULE_INIT_IGNORE_VERMAGIC,
            nix::libc::MODULE_INIT_IGNORE_VERMAGIC
        );
    }

    #[test]
    fn delete_flag_bits() {
        assert_eq!(DeleteFlags::default().bits(), nix::libc::O_NONBLOCK as u32);
        assert_eq!(
            DeleteFlags { force: true }.bits(),
            (nix::libc::O_NONBLOCK | nix::libc::O_TRUNC) as u32
        );
    }

    #[test]
    fn strerror_texts() {
        assert_eq!(strerror(nix::libc::ENOENT), "No such file or directory");
        assert_eq!(
            strerror(nix::libc::EAGAIN),
            "Resource temporarily unavailable"
        );
        assert_eq!(
            strerror(nix::libc::EKEYREJECTED),
            "Key was rejected by service"
        );
        let e = KernelError::DeleteModule(Errno::EBUSY);
        assert_eq!(e.errno(), Errno::EBUSY);
        assert_eq!(e.strerror(), "Device or resource busy");
        assert_eq!(e.to_string(), "delete_module: Device or resource busy");
    }

    #[test]
    fn release_is_not_empty() {
        // uname is harmless; only the module calls must never run in tests.
        let r = LinuxKernel.release().unwrap_or_default();
        assert!(!r.is_empty());
    }
}
