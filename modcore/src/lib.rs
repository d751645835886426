//! modcore: all logic shared by the kernel module tools.
//!
//! Parsers in this crate take bytes or text and return values; they do no I/O and never
//! print. I/O lives in clearly named places (`fsio`, `depmod::walk`, `depmod::write`).

pub mod autoclean;
pub mod bytesort;
pub mod cliutil;
pub mod cmdline;
pub mod compress;
pub mod depmod;
pub mod diag;
pub mod elf;
pub mod explain;
pub mod fnmatch;
pub mod fsio;
pub mod hash;
pub mod index;
pub mod kernel;
pub mod load;
pub mod modinfo;
pub mod modinfo_tool;
pub mod modprobe;
pub mod modprobe_conf;
pub mod module;
pub mod name;
pub mod procfs;
pub mod root;
pub mod signature;

/// The C `strerror` text of an I/O error (kmod prints these), without Rust's suffix.
pub fn errno_text(e: &std::io::Error) -> String {
    kernel::strerror_io(e)
}
