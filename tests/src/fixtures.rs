//! A fixture system for the runtime tools: a temporary directory standing for `/`, with a
//! module tree under `/lib/modules/<release>`, configuration files, `/proc/cmdline`, and
//! our own depmod run on it to build the indexes. Pair it with
//! [`SimKernel`](crate::simkernel::SimKernel) on the same [`Root`].
//!
//! ```no_run
//! use tests::fixtures::System;
//! use tests::synth::SynthModule;
//! let sys = System::new("6.1.0-test");
//! sys.module("kernel/fs/fat/fat.ko", SynthModule::new("fat").modinfo("name", "fat").export("fat_get"));
//! sys.write("/etc/modprobe.d/fat.conf", "options fat debug=1\n");
//! sys.depmod();
//! let kernel = sys.kernel();
//! ```

use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use modcore::depmod::{self, DepmodOptions, NoProgress};
use modcore::diag::Collect;
use modcore::root::Root;

use crate::simkernel::SimKernel;
use crate::synth::SynthModule;

/// A temporary system root with one module tree.
#[derive(Debug)]
pub struct System {
    dir: tempfile::TempDir,
    root: Root,
    release: String,
}

impl System {
    /// An empty system whose running kernel is `release` (with `/lib/modules/<release>`).
    pub fn new(release: &str) -> System {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = Root::new(dir.path());
        let sys = System {
            dir,
            root,
            release: release.to_string(),
        };
        fs::create_dir_all(sys.moddir()).expect("mkdir moddir");
        fs::create_dir_all(sys.path("/etc/modprobe.d")).expect("mkdir modprobe.d");
        fs::create_dir_all(sys.path("/proc")).expect("mkdir proc");
        // The kernel log the simulated kernel appends to (read for explanations).
        sys.write("/dev/kmsg", "");
        sys
    }

    /// The root (pass it to the tools).
    pub fn root(&self) -> &Root {
        &self.root
    }

    /// The directory standing for `/`.
    pub fn base(&self) -> &Path {
        self.dir.path()
    }

    /// The release of the running (simulated) kernel.
    pub fn release(&self) -> &str {
        &self.release
    }

    /// The real path of a host path.
    pub fn path(&self, host: &str) -> PathBuf {
        self.root.join(host)
    }

    /// The real module directory.
    pub fn moddir(&self) -> PathBuf {
        self.root.module_dir(&self.release)
    }

    /// Write a module file at `rel` (relative to the module directory).
    pub fn module(&self, rel: &str, m: SynthModule) -> &Self {
        self.module_bytes(rel, &m.build())
    }

    /// Write raw bytes as a module file at `rel`.
    pub fn module_bytes(&self, rel: &str, bytes: &[u8]) -> &Self {
        let p = self.moddir().join(rel);
        fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        fs::write(p, bytes).expect("write module");
        self
    }

    /// Write a file at a host path (creating directories).
    pub fn write(&self, host: &str, text: impl AsRef<[u8]>) -> &Self {
        let p = self.path(host);
        fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        fs::write(p, text).expect("write");
        self
    }

    /// Write `/proc/cmdline`.
    pub fn cmdline(&self, text: &str) -> &Self {
        self.write("/proc/cmdline", text)
    }

    /// Declare built-in modules: `modules.builtin` lines (`kernel/fs/ext4/ext4.ko`) and
    /// `modules.builtin.modinfo` records (`ext4.alias=fs-ext4`).
    pub fn builtin(&self, paths: &[&str], modinfo: &[&str]) -> &Self {
        let mut text = String::new();
        for p in paths {
            text.push_str(p);
            text.push('\n');
        }
        fs::write(self.moddir().join("modules.builtin"), text).expect("write");
        let mut mi = Vec::new();
        for r in modinfo {
            mi.extend_from_slice(r.as_bytes());
            mi.push(0);
        }
        fs::write(self.moddir().join("modules.builtin.modinfo"), mi).expect("write");
        self
    }

    /// Run our depmod on the tree (no depmod.d configuration). Panics on failure.
    pub fn depmod(&self) -> Collect {
        let mut o = DepmodOptions::new(self.release.clone());
        o.basedir = self.base().as_os_str().as_bytes().to_vec();
        o.config_paths = Some(vec![]);
        let mut sink = Collect::default();
        let mut out = Vec::new();
        depmod::run(&o, &mut sink, &mut out, &NoProgress).expect("depmod");
        sink
    }

    /// Remove files of the module directory whose names satisfy `pred`.
    pub fn remove_index_files(&self, pred: impl Fn(&str) -> bool) {
        for e in fs::read_dir(self.moddir()).expect("readdir").flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            if e.file_type().map(|t| t.is_file()).unwrap_or(false) && pred(&n) {
                fs::remove_file(e.path()).expect("rm");
            }
        }
    }

    /// A simulated kernel writing into this root, running this release.
    pub fn kernel(&self) -> SimKernel {
        let k = SimKernel::new(self.root.clone());
        k.set_release(&self.release);
        k
    }
}
