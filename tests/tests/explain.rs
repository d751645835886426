//! The explanation lines after a failed load (modcore::explain), seen through insmod and
//! through the API modprobe uses. Every expected output below is a complete sample of
//! what the user sees on stderr.
#![allow(clippy::unwrap_used, clippy::panic)]

use std::ffi::CString;
use std::fs::{self, File};
use std::path::Path;

use modcore::explain::{self, Context, FailedInsert, KmsgCursor, KmsgRecord, RemoveFailure, Tool};
use modcore::index::{IndexBuilder, Layout};
use modcore::kernel::{Errno, Kernel, LoadFlags};
use modcore::load::{self, LoadOptions};
use tests::fixtures::System;
use tests::simkernel::SimKernel;
use tests::synth::{SynthModule, Target};

const KVER: &str = "6.1.0-test";
const VM: &str = "6.1.0-test SMP mod_unload ";

use tests::synth::named as m;

/// fat exports fat_get/fat_put; msdos needs both; ext2 and ext2_alt both export
/// `ext_shared`; nfsuse needs it; lonely needs a symbol nobody exports; ext4 is built in.
fn tree() -> System {
    let sys = System::new(KVER);
    sys.module(
        "kernel/fs/fat/fat.ko",
        m("fat")
            .export_crc("fat_get", 0x1111)
            .export_crc("fat_put", 0x2222)
            .modinfo("vermagic", VM),
    )
    .module(
        "kernel/fs/fat/msdos.ko",
        m("msdos")
            .needs("fat_get")
            .needs("fat_put")
            .needs("printk")
            .weak_needs("maybe_there")
            .modinfo("vermagic", VM),
    )
    .module(
        "kernel/fs/ext2.ko",
        m("ext2").export("ext_shared").modinfo("vermagic", VM),
    )
    .module(
        "kernel/fs/ext2_alt.ko",
        m("ext2_alt").export("ext_shared").modinfo("vermagic", VM),
    )
    .module(
        "kernel/fs/nfsuse.ko",
        m("nfsuse").needs("ext_shared").modinfo("vermagic", VM),
    )
    .module(
        "kernel/lib/lonely.ko",
        m("lonely")
            .needs("nowhere_to_be_found")
            .modinfo("vermagic", VM),
    )
    .module(
        "kernel/fs/fat/oldmsdos.ko",
        m("oldmsdos")
            .needs("fat_get")
            .version("fat_get", 0x9999)
            .modinfo("vermagic", VM),
    )
    .module(
        "kernel/fs/other.ko",
        m("other").modinfo("vermagic", "6.0.9-old SMP mod_unload "),
    )
    .module(
        "kernel/fs/otherconf.ko",
        m("otherconf").modinfo("vermagic", "6.1.0-test SMP preempt "),
    )
    .module("kernel/fs/novermagic.ko", m("novermagic"))
    .module(
        "kernel/fs/ppc.ko",
        m("ppc").target(Target::PowerPc64).modinfo("vermagic", VM),
    )
    .module(
        "kernel/drivers/nodev.ko",
        m("nodev").modinfo("vermagic", VM),
    )
    .builtin(&["kernel/fs/ext4/ext4.ko"], &["ext4.license=GPL"]);
    sys.depmod();
    sys
}

fn kernel(sys: &System) -> SimKernel {
    let k = sys.kernel();
    k.add_vmlinux_symbols([("printk", 0)]);
    k.set_vermagic(Some(VM));
    k
}

fn insmod(sys: &System, k: &SimKernel, args: &[&str]) -> (u8, String) {
    let r = tests::tools::insmod(sys, k, 1, args);
    (r.code, r.err)
}

fn p(sys: &System, rel: &str) -> String {
    sys.moddir().join(rel).to_string_lossy().into_owned()
}

fn load(sys: &System, k: &SimKernel, rel: &str) {
    let f = File::open(sys.moddir().join(rel)).unwrap();
    k.finit_module(&f, &CString::default(), LoadFlags::default())
        .unwrap();
}

#[test]
fn unresolved_symbols_from_the_kernel_log() {
    let sys = tree();
    let k = kernel(&sys);
    let msdos = p(&sys, "kernel/fs/fat/msdos.ko");
    let (code, err) = insmod(&sys, &k, &[&msdos]);
    assert_eq!(code, 1);
    assert_eq!(
        err,
        format!(
            "insmod: ERROR: could not insert module {msdos}: Unknown symbol in module\n\
             insmod: NOTE: msdos needs 2 symbols the kernel could not resolve (from the kernel log): fat_get and fat_put\n\
             insmod: NOTE: fat_get and fat_put are exported by fat, which is not loaded: load it first with 'modprobe fat'\n\
             insmod: NOTE: insmod does not load dependencies; 'modprobe msdos' loads msdos together with the modules it needs\n"
        )
    );
}

#[test]
fn unresolved_symbols_with_several_or_no_exporters() {
    let sys = tree();
    let k = kernel(&sys);
    // depmod records one exporter per symbol; a hand-made index with two shows how
    // several candidates are named.
    let mut b = IndexBuilder::new();
    b.insert(b"symbol:ext_shared", b"ext2", 0);
    b.insert(b"symbol:ext_shared", b"ext2_alt", 1);
    sys.write(
        &format!("/lib/modules/{KVER}/modules.symbols.bin"),
        b.write(Layout::PostOrder).unwrap(),
    );
    let (_, err) = insmod(&sys, &k, &[&p(&sys, "kernel/fs/nfsuse.ko")]);
    let notes: Vec<&str> = err.lines().skip(1).collect();
    assert_eq!(
        notes,
        [
            "insmod: NOTE: nfsuse needs 1 symbol the kernel could not resolve (from the kernel log): ext_shared",
            "insmod: NOTE: ext_shared is exported by ext2 and ext2_alt, none of them loaded: load one first, e.g. 'modprobe ext2'",
            "insmod: NOTE: insmod does not load dependencies; 'modprobe nfsuse' loads nfsuse together with the modules it needs",
        ]
    );

    let (_, err) = insmod(&sys, &k, &[&p(&sys, "kernel/lib/lonely.ko")]);
    let notes: Vec<&str> = err.lines().skip(1).collect();
    assert_eq!(
        notes,
        [
            "insmod: NOTE: lonely needs 1 symbol the kernel could not resolve (from the kernel log): nowhere_to_be_found",
            "insmod: NOTE: nowhere_to_be_found is exported by no module in /lib/modules/6.1.0-test: lonely may be built for another kernel, or need a module that is not installed",
        ]
    );
}

#[test]
fn unresolved_symbols_computed_without_the_kernel_log() {
    let sys = tree();
    let k = kernel(&sys);
    // No /dev/kmsg when the call starts: nothing can be read back.
    fs::remove_file(sys.path("/dev/kmsg")).unwrap();
    let msdos = p(&sys, "kernel/fs/fat/msdos.ko");
    let (_, err) = insmod(&sys, &k, &[&msdos]);
    let notes: Vec<&str> = err.lines().skip(1).collect();
    assert_eq!(
        notes,
        [
            "insmod: NOTE: msdos needs 2 symbols the kernel could not resolve (computed: exported only by modules that are not loaded): fat_get and fat_put",
            "insmod: NOTE: fat_get and fat_put are exported by fat, which is not loaded: load it first with 'modprobe fat'",
            "insmod: NOTE: insmod does not load dependencies; 'modprobe msdos' loads msdos together with the modules it needs",
        ]
    );

    // With /proc/kallsyms every missing symbol is known, vmlinux ones included.
    fs::remove_file(sys.path("/dev/kmsg")).unwrap();
    sys.write(
        "/proc/kallsyms",
        "0000000000000000 T printk\n0000000000000000 T fat_put\t[fat]\n",
    );
    let (_, err) = insmod(&sys, &k, &[&msdos]);
    assert_eq!(
        err.lines().nth(1).unwrap(),
        "insmod: NOTE: msdos needs 1 symbol the kernel could not resolve (computed: needed by the module and absent from /proc/kallsyms): fat_get"
    );
}

#[test]
fn symbol_version_mismatch() {
    let sys = tree();
    let k = kernel(&sys);
    load(&sys, &k, "kernel/fs/fat/fat.ko");
    let old = p(&sys, "kernel/fs/fat/oldmsdos.ko");
    let (code, err) = insmod(&sys, &k, &[&old]);
    assert_eq!(code, 1);
    assert_eq!(
        err,
        format!(
            "insmod: ERROR: could not insert module {old}: Invalid parameters\n\
             insmod: NOTE: oldmsdos was built against other versions of fat_get than fat provides (symbol CRC mismatch): rebuild oldmsdos for the running kernel, or load it with --force-modversion (taints the kernel)\n\
             insmod: NOTE: kernel: oldmsdos: disagrees about version of symbol fat_get\n"
        )
    );
}

#[test]
fn wrong_kernel_release_and_configuration() {
    let sys = tree();
    let k = kernel(&sys);
    let other = p(&sys, "kernel/fs/other.ko");
    let (code, err) = insmod(&sys, &k, &[&other]);
    assert_eq!(code, 1);
    assert_eq!(
        err,
        format!(
            "insmod: ERROR: could not insert module {other}: Invalid module format\n\
             insmod: NOTE: other was built for kernel 6.0.9-old (vermagic \"6.0.9-old SMP mod_unload\"), but the running kernel is 6.1.0-test: install other for 6.1.0-test (in /lib/modules/6.1.0-test) or rebuild it\n\
             insmod: NOTE: kernel: other: version magic '6.0.9-old SMP mod_unload ' should be '6.1.0-test SMP mod_unload '\n"
        )
    );

    let conf = p(&sys, "kernel/fs/otherconf.ko");
    let (_, err) = insmod(&sys, &k, &[&conf]);
    let notes: Vec<&str> = err.lines().skip(1).collect();
    assert_eq!(
        notes,
        [
            "insmod: NOTE: otherconf was built for this kernel release (6.1.0-test) but with a different configuration (see the vermagic strings below): rebuild it with the running kernel's configuration",
            "insmod: NOTE: kernel: otherconf: version magic '6.1.0-test SMP preempt ' should be '6.1.0-test SMP mod_unload '",
        ]
    );

    // Forcing works where the kernel allows forced loads ...
    let (code, _) = insmod(&sys, &k, &["--force-vermagic", &conf]);
    assert_eq!(code, 0);
    // ... and is explained where it does not.
    k.set_force_load_allowed(false);
    let (code, err) = insmod(&sys, &k, &["-f", &other]);
    assert_eq!(code, 1);
    assert_eq!(
        err.lines().skip(1).collect::<Vec<_>>(),
        [
            "insmod: NOTE: other was built for kernel 6.0.9-old (vermagic \"6.0.9-old SMP mod_unload\"), but the running kernel is 6.1.0-test: install other for 6.1.0-test (in /lib/modules/6.1.0-test) or rebuild it",
            "insmod: NOTE: the load was forced (-f, --force-vermagic or --force-modversion), and this kernel refuses forced loads (it is built without CONFIG_MODULE_FORCE_LOAD)",
        ]
    );
}

#[test]
fn not_a_module() {
    let sys = tree();
    let k = kernel(&sys);
    // A text file.
    sys.write("/tmp/notes.ko", "hello world\nsecond line\n");
    let notes = sys.path("/tmp/notes.ko").to_string_lossy().into_owned();
    let (code, err) = insmod(&sys, &k, &[&notes]);
    assert_eq!(code, 1);
    assert_eq!(
        err,
        format!(
            "insmod: ERROR: could not insert module {notes}: Invalid module format\n\
             insmod: NOTE: /tmp/notes.ko is not a kernel module: it is not an ELF object file but text starting with \"hello world\" (24 bytes)\n\
             insmod: NOTE: is /tmp/notes.ko the file you meant? Kernel modules are .ko files under /lib/modules/6.1.0-test\n\
             insmod: NOTE: kernel: Invalid ELF header magic: != \\x7fELF\n"
        )
    );

    // A non-module named like a built-in module.
    sys.write("/tmp/ext4.ko", "#!/bin/sh\necho hi\n");
    let ext4 = sys.path("/tmp/ext4.ko").to_string_lossy().into_owned();
    let (_, err) = insmod(&sys, &k, &[&ext4]);
    assert_eq!(
        err.lines().skip(1).take(2).collect::<Vec<_>>(),
        [
            "insmod: NOTE: /tmp/ext4.ko is not a kernel module: it is not an ELF object file but a script (18 bytes)",
            "insmod: NOTE: a module named ext4 is built into the running kernel (modules.builtin): it is always present and needs no loading",
        ]
    );

    // An ELF object without a module name.
    let bare = SynthModule::new("bare").modinfo("license", "GPL").build();
    sys.write("/tmp/bare.ko", &bare);
    let bare = sys.path("/tmp/bare.ko").to_string_lossy().into_owned();
    let (_, err) = insmod(&sys, &k, &[&bare]);
    assert_eq!(
        err.lines().skip(1).collect::<Vec<_>>(),
        [
            "insmod: NOTE: /tmp/bare.ko is an ELF object but not a kernel module: it has no module name in its .modinfo section",
            "insmod: NOTE: is /tmp/bare.ko the file you meant? Kernel modules are .ko files under /lib/modules/6.1.0-test",
            "insmod: NOTE: kernel: (missing .modinfo section or name field): No module found in object",
        ]
    );
}

#[test]
fn wrong_architecture() {
    let sys = tree();
    let k = kernel(&sys);
    k.fail_init("ppc", Errno::ENOEXEC);
    let ppc = p(&sys, "kernel/fs/ppc.ko");
    let (_, err) = insmod(&sys, &k, &[&ppc]);
    assert_eq!(
        err.lines().nth(1).unwrap(),
        "insmod: NOTE: /lib/modules/6.1.0-test/kernel/fs/ppc.ko is built for PowerPC64, but this system runs x86-64"
    );
}

#[test]
fn already_loaded() {
    let sys = tree();
    let k = kernel(&sys);
    let fat = p(&sys, "kernel/fs/fat/fat.ko");
    assert_eq!(insmod(&sys, &k, &[&fat]).0, 0);
    let (_, err) = insmod(&sys, &k, &[&fat]);
    assert_eq!(
        err,
        format!(
            "insmod: ERROR: could not insert module {fat}: File exists\n\
             insmod: NOTE: a module named fat is already loaded (see lsmod); to load this file instead, remove it first with 'rmmod fat'\n"
        )
    );
}

#[test]
fn permission_causes() {
    let sys = tree();
    let k = kernel(&sys);
    let fat = p(&sys, "kernel/fs/fat/fat.ko");
    k.set_module_blacklist(["fat"]);
    let (_, err) = insmod(&sys, &k, &[&fat]);
    assert_eq!(
        err,
        format!(
            "insmod: ERROR: could not insert module {fat}: Operation not permitted\n\
             insmod: NOTE: the kernel command line forbids loading fat (module_blacklist=)\n\
             insmod: NOTE: kernel: Module fat is blacklisted\n"
        )
    );

    let k = kernel(&sys);
    k.set_modules_disabled(true);
    sys.write("/proc/sys/kernel/modules_disabled", "1\n");
    let (_, err) = insmod(&sys, &k, &[&fat]);
    assert_eq!(
        err.lines().nth(1).unwrap(),
        "insmod: NOTE: module loading is disabled until the next boot (/proc/sys/kernel/modules_disabled is 1)"
    );

    // Not root: explained through the API (insmod's Env carries the euid).
    sys.write("/proc/sys/kernel/modules_disabled", "0\n");
    let mut ctx = Context::new(sys.root(), Tool::Insmod, Some(KVER.into()));
    ctx.euid = Some(1000);
    let f = FailedInsert {
        name: "fat",
        path: None,
        errno: Errno::EPERM as i32,
        from_kernel: true,
        forced: false,
        path_from_index: false,
        kmsg: Some(&[]),
    };
    assert_eq!(
        explain::explain_insert(&ctx, &f),
        ["loading modules needs root privileges (CAP_SYS_MODULE)"]
    );
}

#[test]
fn signature_and_init_failures() {
    let sys = tree();
    let k = kernel(&sys);
    let fat = p(&sys, "kernel/fs/fat/fat.ko");
    k.fail_init("fat", Errno::EKEYREJECTED);
    let (_, err) = insmod(&sys, &k, &[&fat]);
    assert_eq!(
        err.lines().nth(1).unwrap(),
        "insmod: NOTE: fat is not signed, and the kernel only accepts signed modules (module.sig_enforce=1, CONFIG_MODULE_SIG_FORCE or lockdown)"
    );

    let nodev = p(&sys, "kernel/drivers/nodev.ko");
    k.fail_init("nodev", Errno::ENODEV);
    let (_, err) = insmod(&sys, &k, &[&nodev]);
    assert_eq!(
        err,
        format!(
            "insmod: ERROR: could not insert module {nodev}: No such device\n\
             insmod: NOTE: nodev was loaded, but its initialisation failed with \"No such device\": this comes from the module itself (usually: the hardware or feature it drives is not present)\n"
        )
    );
}

/// What modprobe does: the load API, a cursor on the kernel log, then the explanation.
#[test]
fn api_as_modprobe_uses_it() {
    let sys = tree();
    let k = kernel(&sys);
    let path = sys.moddir().join("kernel/fs/fat/msdos.ko");
    let mut sink = modcore::diag::Collect::default();
    let opts = LoadOptions::for_root(sys.root(), &mut sink);
    let mut cursor = KmsgCursor::open(sys.root()).unwrap();
    let err = load::insert_module(&k, &path, b"", &opts, &mut sink).unwrap_err();
    assert_eq!(err.errno(), Errno::ENOENT as i32);
    assert!(err.from_kernel());
    let records: Vec<KmsgRecord> = cursor.read_new();
    assert_eq!(
        records
            .iter()
            .map(|r| r.message.as_str())
            .collect::<Vec<_>>(),
        [
            "msdos: Unknown symbol fat_get (err -2)",
            "msdos: Unknown symbol fat_put (err -2)"
        ]
    );
    let ctx = Context::new(sys.root(), Tool::Modprobe, Some(KVER.into()));
    let failed = FailedInsert::from_load_error("msdos", Some(&path), &err, false, Some(&records));
    assert_eq!(
        explain::explain_insert(&ctx, &failed),
        [
            "msdos needs 2 symbols the kernel could not resolve (from the kernel log): fat_get and fat_put",
            "fat_get and fat_put are exported by fat, which is not loaded: load it first with 'modprobe fat'",
        ]
    );

    // A file listed in modules.dep that is gone.
    let gone = sys.moddir().join("kernel/fs/gone.ko");
    let err = load::insert_module(&k, &gone, b"", &opts, &mut sink).unwrap_err();
    assert!(!err.from_kernel());
    let mut failed = FailedInsert::from_load_error("gone", Some(&gone), &err, false, None);
    failed.path_from_index = true;
    assert_eq!(
        explain::explain_insert(&ctx, &failed),
        ["/lib/modules/6.1.0-test/kernel/fs/gone.ko is listed in modules.dep but does not exist: the index is out of date (run depmod)"]
    );
}

#[test]
fn removal_order_and_reasons() {
    let sys = tree();
    let k = kernel(&sys);
    load(&sys, &k, "kernel/fs/fat/fat.ko");
    load(&sys, &k, "kernel/fs/fat/msdos.ko");
    let live = modcore::procfs::LiveModules::new(sys.root());
    assert_eq!(
        explain::removal_order(&live, b"fat"),
        vec![b"msdos".to_vec(), b"fat".to_vec()]
    );
    let ctx = Context::new(sys.root(), Tool::Modprobe, Some(KVER.into()));
    assert_eq!(
        explain::explain_remove(&ctx, "fat", None, RemoveFailure::Kernel(Errno::EAGAIN as i32)),
        ["fat is needed by 1 module that uses its symbols; remove it first: 'rmmod msdos fat' (or 'modprobe -r --remove-holders fat')"]
    );
    assert_eq!(
        explain::explain_remove(&ctx, "fat", None, RemoveFailure::Kernel(Errno::ENOENT as i32)),
        ["fat is not loaded (any more): it may have been removed at the same time by someone else"]
    );
    assert!(Path::new(&sys.path("/dev/kmsg")).exists());
}
