//! The security rules of ARCHITECTURE.md § Security that can be tested on a fixture root:
//! names never become paths, and world-writable configuration is reported.
//!
//! (Covered elsewhere: install commands never run shell text from the command line —
//! `modprobe.rs`; index paths leaving the module directory — `bad_input.rs`; memory
//! and time bounded on hostile input — `bounds.rs`.)

#![allow(clippy::unwrap_used, clippy::panic)]

use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use modcore::depmod::{self, DepmodOptions, NoProgress};
use modcore::diag::{Collect, Level};
use modcore::modprobe_conf::{self, ConfigError, Dialect};
use tests::fixtures::System;
use tests::simkernel::SimKernel;

const KVER: &str = "6.1.0-test";

use tests::synth::named as m;

/// A tree with `fat`, and a module `evil` outside the module directory (in /tmp and in
/// the root itself), both of which a name-turned-path could reach.
fn tree() -> System {
    let sys = System::new(KVER);
    sys.module("kernel/fs/fat/fat.ko", m("fat").modinfo("alias", "fs-fat"));
    sys.write("/tmp/evil.ko", m("evil").build());
    sys.write("/evil.ko", m("evil").build());
    sys.write("/lib/modules/evil.ko", m("evil").build());
    sys.depmod();
    sys
}

fn modprobe(sys: &System, k: &SimKernel, args: &[&str]) -> (u8, String) {
    let r = tests::tools::modprobe(sys, k, args);
    (r.code, r.err)
}

/// Names given to modprobe (by a user, or by the kernel's request_module) are looked up
/// in the indexes only: a name that looks like a path or carries shell syntax loads
/// nothing.
#[test]
fn names_never_become_paths() {
    let sys = tree();
    for name in [
        "../../../tmp/evil",
        "../../../tmp/evil.ko",
        "../evil",
        "/tmp/evil.ko",
        "/tmp/evil",
        "/evil",
        "kernel/fs/fat/fat.ko",
        "fat/../../../../tmp/evil",
        "fs-../../../tmp/evil",
        "fat;evil",
        "$(evil)",
        "`evil`",
        "evil",
        "",
    ] {
        for args in [vec![name], vec!["-q", "--", name], vec!["-a", name]] {
            let k = sys.kernel();
            let (code, err) = modprobe(&sys, &k, &args);
            assert!(
                k.loaded().is_empty() && k.calls().is_empty(),
                "modprobe {args:?} reached the kernel: {:?}\n{err}",
                k.calls()
            );
            assert_ne!(code, 0, "modprobe {args:?} succeeded: {err}");
        }
    }
    // The real name still works.
    let k = sys.kernel();
    assert_eq!(modprobe(&sys, &k, &["fs-fat"]).0, 0);
    assert_eq!(k.loaded(), vec!["fat".to_string()]);
}

fn chmod(p: &Path, mode: u32) {
    fs::set_permissions(p, fs::Permissions::from_mode(mode)).unwrap();
}

#[test]
fn world_writable_modprobe_d_is_reported() {
    let sys = tree();
    sys.write("/etc/modprobe.d/ok.conf", "options fat a=1\n");
    sys.write("/etc/modprobe.d/open.conf", "options fat b=2\n");
    chmod(&sys.path("/etc/modprobe.d/open.conf"), 0o666);
    sys.write("/run/modprobe.d/shadowed.conf", "options fat c=3\n");
    sys.write("/lib/modprobe.d/open.conf", "options fat shadowed=1\n");
    chmod(&sys.path("/lib/modprobe.d/open.conf"), 0o666);
    chmod(&sys.path("/run/modprobe.d"), 0o1777);

    let root = sys.root();
    let (files, errors) = modprobe_conf::list_config_files(
        root,
        Some(&root.module_dir(KVER)),
        &root.modprobe_d_dirs(),
        Dialect::KMOD30,
    );
    let msgs: Vec<String> = errors
        .iter()
        .filter(|e| matches!(e, ConfigError::WorldWritable { .. }))
        .map(|e| format!("{}: {e}", e.libkmod_function()))
        .collect();
    assert_eq!(
        msgs,
        vec![
            "conf_files_list: /etc/modprobe.d/open.conf is world-writable: any user can \
             change what modprobe loads and runs",
            "conf_files_list: /run/modprobe.d is world-writable: any user can change what \
             modprobe loads and runs",
        ],
        "the shadowed /lib/modprobe.d/open.conf is not read, so not reported"
    );
    // Still read: the warning changes nothing else.
    assert!(files.iter().any(|f| f.name == "open.conf"));

    // What modprobe prints.
    let k = sys.kernel();
    let (code, err) = modprobe(&sys, &k, &["fat"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("libkmod: conf_files_list: /etc/modprobe.d/open.conf is world-writable"),
        "{err}"
    );
    // Without world-writable files nothing is said.
    chmod(&sys.path("/etc/modprobe.d/open.conf"), 0o644);
    chmod(&sys.path("/run/modprobe.d"), 0o755);
    let k = sys.kernel();
    let (_, err) = modprobe(&sys, &k, &["fat"]);
    assert!(!err.contains("world-writable"), "{err}");
}

#[test]
fn world_writable_depmod_d_is_reported() {
    let sys = tree();
    let conf = sys.path("/etc/depmod.d");
    fs::create_dir_all(&conf).unwrap();
    fs::write(conf.join("open.conf"), "search updates\n").unwrap();
    chmod(&conf.join("open.conf"), 0o646);
    let run = |sys: &System| {
        let mut o = DepmodOptions::new(KVER);
        o.basedir = sys.base().as_os_str().as_bytes().to_vec();
        o.config_paths = Some(vec![conf.clone()]);
        let mut sink = Collect::default();
        depmod::run(&o, &mut sink, &mut Vec::new(), &NoProgress).unwrap();
        sink.at(Level::Warning)
            .filter(|m| m.contains("world-writable"))
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        run(&sys),
        vec![format!(
            "{} is world-writable: any user can change what depmod indexes",
            conf.join("open.conf").display()
        )]
    );
    chmod(&conf, 0o777);
    chmod(&conf.join("open.conf"), 0o644);
    assert_eq!(
        run(&sys),
        vec![format!(
            "{} is world-writable: any user can change what depmod indexes",
            conf.display()
        )]
    );
    chmod(&conf, 0o755);
    assert!(run(&sys).is_empty());
}
