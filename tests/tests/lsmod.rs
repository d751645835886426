//! lsmod against fixture `/proc/modules` + `/sys/module` trees (spec §6) and against
//! what the simulated kernel writes.
#![allow(clippy::unwrap_used, clippy::panic)]

use std::ffi::{CString, OsString};
use std::fs;
use std::path::Path;

use modcore::kernel::Kernel;
use modcore::root::Root;
use tests::simkernel::{ModuleSpec, SimKernel};

fn write(root: &Path, rel: &str, text: &str) {
    let p = root.join(rel.trim_start_matches('/'));
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, text).unwrap();
}

/// A loaded module as the kernel shows it in sysfs.
fn sys_module(root: &Path, name: &str, size: u64, refcnt: i64, holders: &[&str]) {
    write(root, &format!("/sys/module/{name}/initstate"), "live\n");
    write(
        root,
        &format!("/sys/module/{name}/coresize"),
        &format!("{size}\n"),
    );
    write(
        root,
        &format!("/sys/module/{name}/refcnt"),
        &format!("{refcnt}\n"),
    );
    let h = root.join(format!("sys/module/{name}/holders"));
    fs::create_dir_all(&h).unwrap();
    for x in holders {
        std::os::unix::fs::symlink(format!("../../{x}"), h.join(x)).unwrap();
    }
}

fn run(root: &Root) -> (u8, String, String) {
    run_prio(root, lsmod::LOG_ERR)
}

fn run_prio(root: &Root, prio: i32) -> (u8, String, String) {
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let args = vec![OsString::from("lsmod")];
    let code = lsmod::run_args(&args, root, prio, &mut out, &mut err);
    (
        code,
        String::from_utf8(out).unwrap(),
        String::from_utf8(err).unwrap(),
    )
}

/// The spec §6 example, with every module given single-holder lists so that the
/// (file-system dependent) directory order does not matter.
#[test]
fn spec_example_exact() {
    let t = tempfile::tempdir().unwrap();
    let r = t.path();
    write(
        r,
        "/proc/modules",
        "vfat 24576 0 - Live 0xffffffffc0b40000\n\
         msdos 20480 1 - Live 0xffffffffc0b30000\n\
         btrfs 1753088 0 - Live 0xffffffffc0c00000\n\
         xor 24576 1 btrfs, Live 0xffffffffc0b20000\n\
         crc32c_intel 24576 1 - Live 0xffffffffc0b00000\n",
    );
    sys_module(r, "vfat", 24576, 0, &[]);
    sys_module(r, "msdos", 20480, 1, &[]);
    sys_module(r, "btrfs", 1753088, 0, &[]);
    sys_module(r, "xor", 24576, 1, &["btrfs"]);
    sys_module(r, "crc32c_intel", 24576, 1, &[]);
    let (code, out, err) = run(&Root::new(r));
    assert_eq!(code, 0);
    assert_eq!(err, "");
    assert_eq!(
        out,
        "Module                  Size  Used by\n\
         vfat                   24576  0\n\
         msdos                  20480  1\n\
         btrfs                1753088  0\n\
         xor                    24576  1 btrfs\n\
         crc32c_intel           24576  1\n"
    );
}

#[test]
fn holders_come_from_sysfs_not_proc() {
    let t = tempfile::tempdir().unwrap();
    let r = t.path();
    // /proc/modules column 4 says something else (and [permanent]): ignored.
    write(
        r,
        "/proc/modules",
        "fat 86016 2 a,b,[permanent], Live 0xffffffffc0b10000\n",
    );
    sys_module(r, "fat", 86016, 2, &["vfat", "msdos"]);
    let (code, out, err) = run(&Root::new(r));
    assert_eq!((code, err.as_str()), (0, ""));
    let row = out.lines().nth(1).unwrap();
    assert!(
        row == "fat                    86016  2 vfat,msdos"
            || row == "fat                    86016  2 msdos,vfat",
        "{row}"
    );
}

#[test]
fn missing_values_print_negative_errno() {
    let t = tempfile::tempdir().unwrap();
    let r = t.path();
    write(
        r,
        "/proc/modules",
        "ghost 1234 0 - Live 0x0000000000000000\n\
         nocore 5000 0 - Live 0x0000000000000000\n\
         norefcnt 4096 - - Live 0x0000000000000000\n\
         crc32c-intel 24576 1 - Live 0x0000000000000000\n",
    );
    // ghost: no /sys/module/ghost at all.
    // nocore: sysfs without coresize → size from /proc/modules.
    write(r, "/sys/module/nocore/initstate", "live\n");
    write(r, "/sys/module/nocore/refcnt", "0\n");
    fs::create_dir_all(r.join("sys/module/nocore/holders")).unwrap();
    // norefcnt: kernel without module unloading.
    write(r, "/sys/module/norefcnt/coresize", "4096\n");
    fs::create_dir_all(r.join("sys/module/norefcnt/holders")).unwrap();
    // crc32c-intel: the name is normalised before sysfs is consulted.
    sys_module(r, "crc32c_intel", 24576, 1, &[]);

    let (code, out, err) = run(&Root::new(r));
    assert_eq!(code, 0);
    assert_eq!(
        out,
        "Module                  Size  Used by\n\
         ghost                     -2  -2\n\
         nocore                  5000  0\n\
         norefcnt                4096  -2\n\
         crc32c_intel           24576  1\n"
    );
    assert_eq!(
        err,
        "libkmod: kmod_module_get_holders: could not open '/sys/module/ghost/holders': \
         No such file or directory\n"
    );
    // KMOD_LOG=0 silences library messages; the output is unchanged.
    let (code, out2, err) = run_prio(&Root::new(r), 0);
    assert_eq!((code, err.as_str()), (0, ""));
    assert_eq!(out2, out);
}

#[test]
fn unreadable_proc_modules() {
    let t = tempfile::tempdir().unwrap();
    let (code, out, err) = run(&Root::new(t.path()));
    assert_eq!(code, 1);
    assert_eq!(out, "");
    assert_eq!(
        err,
        "libkmod: kmod_module_new_from_loaded: could not open /proc/modules: No such file or directory\n\
         Error: could not get list of modules: No such file or directory\n"
    );
}

#[test]
fn empty_list_and_blank_lines() {
    let t = tempfile::tempdir().unwrap();
    write(t.path(), "/proc/modules", "");
    let (code, out, err) = run(&Root::new(t.path()));
    assert_eq!(
        (code, out.as_str(), err.as_str()),
        (0, "Module                  Size  Used by\n", "")
    );

    write(t.path(), "/proc/modules", "\n");
    let (code, out, err) = run(&Root::new(t.path()));
    assert_eq!(
        (code, out.as_str()),
        (0, "Module                  Size  Used by\n")
    );
    assert_eq!(
        err,
        "libkmod: kmod_module_new_from_loaded: could not get module from name '(null)': \
         No such file or directory\n"
    );
}

#[test]
fn bad_kernel_command_line_is_reported_even_by_lsmod() {
    let t = tempfile::tempdir().unwrap();
    write(t.path(), "/proc/modules", "");
    write(t.path(), "/proc/cmdline", "ro bad-[x.y=1 fat.debug=1\n");
    let (code, _, err) = run(&Root::new(t.path()));
    assert_eq!(code, 0);
    assert_eq!(
        err,
        "libkmod: kmod_config_parse_kcmdline: Ignoring bad option on kernel command line \
         while parsing module name: 'bad-[x'\n"
    );
}

#[test]
fn arguments_are_refused() {
    let t = tempfile::tempdir().unwrap();
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let args = vec![OsString::from("./lsmod"), OsString::from("--")];
    let code = lsmod::run_args(
        &args,
        &Root::new(t.path()),
        lsmod::LOG_ERR,
        &mut out,
        &mut err,
    );
    assert_eq!(code, 1);
    assert!(out.is_empty());
    assert_eq!(err, b"Usage: ./lsmod\n");
}

#[test]
fn lists_what_the_simulated_kernel_loaded() {
    let t = tempfile::tempdir().unwrap();
    let root = Root::new(t.path());
    let k = SimKernel::new(root.clone());
    let none = CString::new("").unwrap();
    k.init_module(&ModuleSpec::new("fat").export("fat_get").build(), &none)
        .unwrap();
    k.init_module(&ModuleSpec::new("msdos").need("fat_get").build(), &none)
        .unwrap();
    k.init_module(&ModuleSpec::new("nls_cp437").build(), &none)
        .unwrap();
    let (code, out, err) = run(&root);
    assert_eq!((code, err.as_str()), (0, ""));
    assert_eq!(
        out,
        "Module                  Size  Used by\n\
         nls_cp437               4096  0\n\
         msdos                   4096  0\n\
         fat                     4096  1 msdos\n"
    );
    // The usual `lsmod | cut -d' ' -f1` idiom.
    let names: Vec<_> = out
        .lines()
        .skip(1)
        .map(|l| l.split(' ').next().unwrap())
        .collect();
    assert_eq!(names, vec!["nls_cp437", "msdos", "fat"]);
}
