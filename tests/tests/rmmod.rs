//! rmmod end to end on fixture roots with the simulated kernel: kmod 30's pre-checks and
//! messages, the `delete_module` flags, exit codes, and the explanation lines.
#![allow(clippy::unwrap_used, clippy::panic)]

use std::ffi::{CString, OsString};
use std::fs::File;

use modcore::kernel::{Errno, Kernel, LoadFlags};
use tests::fixtures::System;
use tests::simkernel::{Call, SimKernel};

const KVER: &str = "6.1.0-test";

use tests::synth::named as m;

fn tree() -> System {
    let sys = System::new(KVER);
    sys.module("kernel/fs/fat/fat.ko", m("fat").export("fat_get"))
        .module("kernel/fs/fat/vfat.ko", m("vfat").needs("fat_get"))
        .module("kernel/fs/fat/msdos.ko", m("msdos").needs("fat_get"))
        .module("kernel/fs/nls/nls_cp437.ko", m("nls_cp437"))
        .module("extra/foo-v2.ko", m("foo"))
        .builtin(&["kernel/fs/ext4/ext4.ko"], &["ext4.license=GPL"]);
    sys.depmod();
    sys
}

fn load(sys: &System, k: &SimKernel, rel: &str) {
    let f = File::open(sys.moddir().join(rel)).unwrap();
    k.finit_module(&f, &CString::default(), LoadFlags::default())
        .unwrap();
}

struct Run {
    code: u8,
    err: String,
}

fn rmmod(sys: &System, k: &SimKernel, args: &[&str]) -> Run {
    let env = rmmod::Env {
        root: sys.root(),
        kernel: k,
        now: 1_000,
        euid: Some(0),
    };
    let mut argv = vec![OsString::from("rmmod")];
    argv.extend(args.iter().map(OsString::from));
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code = rmmod::run(&argv, &env, &mut out, &mut err);
    assert!(
        out.is_empty()
            || args
                .iter()
                .any(|a| a.starts_with("-V") || a.starts_with("--h"))
    );
    Run {
        code,
        err: String::from_utf8_lossy(&err).into_owned(),
    }
}

fn deletes(k: &SimKernel) -> Vec<(String, u32)> {
    k.calls()
        .into_iter()
        .filter_map(|c| match c {
            Call::DeleteModule { name, flags } => Some((name, flags)),
            _ => None,
        })
        .collect()
}

#[test]
fn removes_by_name_and_by_path() {
    let sys = tree();
    let k = sys.kernel();
    load(&sys, &k, "kernel/fs/fat/fat.ko");
    load(&sys, &k, "kernel/fs/nls/nls_cp437.ko");
    let r = rmmod(&sys, &k, &["nls-cp437"]);
    assert_eq!((r.code, r.err.as_str()), (0, ""));
    let path = sys.moddir().join("kernel/fs/fat/fat.ko");
    let r = rmmod(&sys, &k, &[path.to_str().unwrap()]);
    assert_eq!((r.code, r.err.as_str()), (0, ""));
    assert_eq!(
        deletes(&k),
        vec![("nls_cp437".into(), 0o4000), ("fat".into(), 0o4000)]
    );
    assert!(k.loaded().is_empty());
}

#[test]
fn in_use_by_holders() {
    let sys = tree();
    let k = sys.kernel();
    load(&sys, &k, "kernel/fs/fat/fat.ko");
    load(&sys, &k, "kernel/fs/fat/vfat.ko");
    let r = rmmod(&sys, &k, &["fat"]);
    assert_eq!(r.code, 1);
    assert_eq!(
        r.err,
        "rmmod: ERROR: Module fat is in use by: vfat\n\
         rmmod: NOTE: fat is needed by 1 module that uses its symbols; remove it first: 'rmmod vfat fat' (or 'modprobe -r --remove-holders fat')\n"
    );
    // Two holders, one of them mounted (a reference no module accounts for).
    load(&sys, &k, "kernel/fs/fat/msdos.ko");
    assert!(k.get("vfat"));
    let r = rmmod(&sys, &k, &["fat"]);
    assert_eq!(r.code, 1);
    let lines: Vec<&str> = r.err.lines().collect();
    assert_eq!(lines.len(), 3, "{}", r.err);
    assert!(
        lines[0] == "rmmod: ERROR: Module fat is in use by: msdos vfat"
            || lines[0] == "rmmod: ERROR: Module fat is in use by: vfat msdos",
        "{}",
        lines[0]
    );
    assert!(lines[1].starts_with(
        "rmmod: NOTE: fat is needed by 2 modules that use its symbols; remove them first: 'rmmod "
    ));
    assert!(lines[1].ends_with(" fat' (or 'modprobe -r --remove-holders fat')"));
    assert_eq!(
        lines[2],
        "rmmod: NOTE: in use by something other than a module: vfat (1 reference) — e.g. a mounted file system, an open device or file, a network interface or a running program; stop that use first (umount, close, ip link set down, ...)"
    );
    assert!(deletes(&k).is_empty());
}

#[test]
fn in_use_without_holders() {
    let sys = tree();
    let k = sys.kernel();
    load(&sys, &k, "kernel/fs/nls/nls_cp437.ko");
    assert!(k.get("nls_cp437"));
    assert!(k.get("nls_cp437"));
    let r = rmmod(&sys, &k, &["nls_cp437"]);
    assert_eq!(r.code, 1);
    assert_eq!(
        r.err,
        "rmmod: ERROR: Module nls_cp437 is in use\n\
         rmmod: NOTE: in use by something other than a module: nls_cp437 (2 references) — e.g. a mounted file system, an open device or file, a network interface or a running program; stop that use first (umount, close, ip link set down, ...)\n"
    );
}

#[test]
fn not_loaded_builtin_and_continuing() {
    let sys = tree();
    let k = sys.kernel();
    load(&sys, &k, "kernel/fs/nls/nls_cp437.ko");
    let r = rmmod(&sys, &k, &["vfat", "ext4", "nls_cp437"]);
    assert_eq!(r.code, 1);
    assert_eq!(
        r.err,
        "rmmod: ERROR: Module vfat is not currently loaded\n\
         rmmod: ERROR: Module ext4 is builtin.\n"
    );
    // The last operand was still removed.
    assert_eq!(deletes(&k), vec![("nls_cp437".into(), 0o4000)]);
}

#[test]
fn file_declaring_another_name() {
    let sys = tree();
    let k = sys.kernel();
    load(&sys, &k, "extra/foo-v2.ko");
    let p = sys.moddir().join("extra/foo-v2.ko");
    let r = rmmod(&sys, &k, &[p.to_str().unwrap()]);
    assert_eq!(r.code, 1);
    assert_eq!(
        r.err,
        format!(
            "rmmod: ERROR: Module foo_v2 is not currently loaded\n\
             rmmod: NOTE: the file /lib/modules/{KVER}/extra/foo-v2.ko contains the module 'foo', which is loaded: use 'rmmod foo'\n"
        )
    );
}

#[test]
fn unloading_not_supported() {
    let sys = tree();
    let k = sys.kernel();
    load(&sys, &k, "kernel/fs/nls/nls_cp437.ko");
    k.set_unload_supported(false);
    let r = rmmod(&sys, &k, &["nls_cp437"]);
    assert_eq!(r.code, 1);
    assert_eq!(
        r.err,
        "rmmod: ERROR: Module unloading is not supported\n\
         rmmod: NOTE: the running kernel is built without module unloading (CONFIG_MODULE_UNLOAD is not set): modules stay until reboot\n"
    );
}

#[test]
fn stale_builtin_list() {
    // Built-in code with parameters has /sys/module/NAME without initstate; when
    // modules.builtin does not list it, it looks like a module that is coming.
    let sys = tree();
    let k = sys.kernel();
    k.add_builtin("printk", true);
    let r = rmmod(&sys, &k, &["printk"]);
    assert_eq!(r.code, 1);
    assert_eq!(
        r.err,
        format!(
            "rmmod: ERROR: could not open '/sys/module/printk/holders': No such file or directory\n\
             rmmod: ERROR: Module unloading is not supported\n\
             rmmod: NOTE: /sys/module/printk exists without initstate: printk is code built into the kernel (only its parameters appear there), and built-in code cannot be removed; the modules.builtin of /lib/modules/{KVER} does not list it (out of date?)\n"
        )
    );
}

#[test]
fn kernel_refusal_prints_two_lines() {
    let sys = tree();
    let k = sys.kernel();
    k.set_permanent("nls_cp437");
    load(&sys, &k, "kernel/fs/nls/nls_cp437.ko");
    let r = rmmod(&sys, &k, &["nls_cp437"]);
    assert_eq!(r.code, 1);
    assert_eq!(
        r.err,
        "rmmod: ERROR: could not remove 'nls_cp437': Device or resource busy\n\
         rmmod: ERROR: could not remove module nls_cp437: Device or resource busy\n\
         rmmod: NOTE: nls_cp437 has no exit function ([permanent] in /proc/modules): it can only be removed by rebooting (or forced with -f on kernels with CONFIG_MODULE_FORCE_UNLOAD)\n"
    );

    let k = sys.kernel();
    load(&sys, &k, "kernel/fs/fat/fat.ko");
    k.fail_delete("fat", Errno::EPERM);
    let r = rmmod(&sys, &k, &["fat"]);
    assert_eq!(
        r.err,
        "rmmod: ERROR: could not remove 'fat': Operation not permitted\n\
         rmmod: ERROR: could not remove module fat: Operation not permitted\n"
    );
}

#[test]
fn force_skips_checks_and_passes_o_trunc() {
    let sys = tree();
    let k = sys.kernel();
    load(&sys, &k, "kernel/fs/nls/nls_cp437.ko");
    assert!(k.get("nls_cp437"));
    let r = rmmod(&sys, &k, &["-f", "nls_cp437"]);
    assert_eq!((r.code, r.err.as_str()), (0, ""));
    assert_eq!(deletes(&k), vec![("nls_cp437".into(), 0o5000)]);

    // -f on something not loaded: the kernel's ENOENT, both lines.
    let r = rmmod(&sys, &k, &["--force", "vfat"]);
    assert_eq!(r.code, 1);
    assert!(r.err.starts_with(
        "rmmod: ERROR: could not remove 'vfat': No such file or directory\n\
         rmmod: ERROR: could not remove module vfat: No such file or directory\n"
    ));
}

#[test]
fn usage_errors() {
    let sys = tree();
    let k = sys.kernel();
    let r = rmmod(&sys, &k, &[]);
    assert_eq!(
        (r.code, r.err.as_str()),
        (1, "rmmod: ERROR: missing module name.\n")
    );
    let r = rmmod(&sys, &k, &["-w", "x"]);
    assert_eq!(
        (r.code, r.err.as_str()),
        (1, "rmmod: ERROR: unexpected getopt_long() value 'w'.\n")
    );
    let r = rmmod(&sys, &k, &["-Z"]);
    assert_eq!(
        (r.code, r.err.as_str()),
        (1, "rmmod: invalid option -- 'Z'\n")
    );
    // getopt's words (kmod 30's, checked against it): the option's name without the
    // value; an unknown long option as typed.
    let r = rmmod(&sys, &k, &["--version=1"]);
    assert_eq!(
        (r.code, r.err.as_str()),
        (1, "rmmod: option '--version' doesn't allow an argument\n")
    );
    let r = rmmod(&sys, &k, &["--forc=1"]);
    assert_eq!(
        (r.code, r.err.as_str()),
        (1, "rmmod: option '--force' doesn't allow an argument\n")
    );
    let r = rmmod(&sys, &k, &["--bogus=3", "x"]);
    assert_eq!(
        (r.code, r.err.as_str()),
        (1, "rmmod: unrecognized option '--bogus=3'\n")
    );
    let r = rmmod(&sys, &k, &["--idle=5", "x"]);
    assert_eq!(
        (r.code, r.err.as_str()),
        (1, "rmmod: ERROR: --idle=5 needs --all.\n")
    );
    let r = rmmod(&sys, &k, &["-a", "x"]);
    assert_eq!(
        (r.code, r.err.as_str()),
        (
            1,
            "rmmod: ERROR: --all removes autoclean modules only and takes no module names.\n"
        )
    );
    let r = rmmod(&sys, &k, &["-a", "--idle=soon"]);
    assert_eq!(
        (r.code, r.err.as_str()),
        (
            1,
            "rmmod: ERROR: invalid --idle value 'soon': expected a number of seconds.\n"
        )
    );
    assert!(deletes(&k).is_empty());
}

#[test]
fn help_documents_autoclean() {
    let argv = vec![OsString::from("rmmod"), OsString::from("--help")];
    match rmmod::parse_args(&argv) {
        rmmod::Parsed::Help(h) => {
            assert!(h.contains("--all"));
            assert!(h.contains("--idle"));
            assert!(h.contains("/run/kmod-rs/autoclean"));
            assert!(h.contains("cron"));
        }
        other => panic!("{other:?}"),
    }
}
