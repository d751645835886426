//! `cargo xtask refs`: download (apt-get download) and unpack (dpkg -x) the reference
//! kmod package, kernel packages and busybox-static into a cache outside the repository.
//! API used by compat and vm; implementation pending.
#![allow(dead_code)]

use std::path::PathBuf;

/// One unpacked Debian kernel package.
pub struct KernelTree {
    /// Short label used in tables: "6.1-cloud" or "6.12".
    pub label: &'static str,
    /// Kernel release, e.g. "6.1.0-28-cloud-amd64".
    pub kver: String,
    /// Unpacked package root: `root/lib/modules/<kver>/` and `root/boot/vmlinuz-<kver>`.
    pub root: PathBuf,
}

impl KernelTree {
    pub fn moddir(&self) -> PathBuf {
        self.root.join("lib/modules").join(&self.kver)
    }
    pub fn vmlinuz(&self) -> PathBuf {
        self.root.join("boot").join(format!("vmlinuz-{}", self.kver))
    }
}

/// Everything `ensure` provides.
pub struct Refs {
    /// The kmod 30 binary from Debian's kmod package (dispatches on argv[0]).
    pub kmod: PathBuf,
    /// busybox from busybox-static.
    pub busybox: PathBuf,
    /// Both kernel trees: [0] = 6.1 cloud (plain .ko), [1] = 6.12 (.ko.xz).
    pub trees: Vec<KernelTree>,
    /// The cache root.
    pub cache: PathBuf,
}

impl Refs {
    pub fn print_summary(&self) {
        println!("kmod: {}", self.kmod.display());
        println!("busybox: {}", self.busybox.display());
        for t in &self.trees {
            println!("{}: {} at {}", t.label, t.kver, t.root.display());
        }
    }
}

pub fn ensure() -> Result<Refs, String> {
    Err("refs: not implemented yet".into())
}
