//! modcore: all logic shared by the kernel module tools.
//!
//! Parsers in this crate take bytes or text and return values; they do no I/O and never
//! print. I/O lives in clearly named places (`fsio`, `depmod::walk`, `depmod::write`).

pub mod compress;
pub mod elf;
pub mod explain;
pub mod fnmatch;
pub mod hash;
pub mod index;
pub mod load;
pub mod modinfo;
pub mod module;
pub mod name;
pub mod cmdline;
pub mod kernel;
pub mod modprobe_conf;
pub mod procfs;
pub mod root;
pub mod signature;
