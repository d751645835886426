//! insmod end to end on fixture roots with the simulated kernel: which system call is
//! made (finit_module / init_module, flags, parameters), kmod 30's messages and exit
//! codes, and the explanation lines after a failure.
#![allow(clippy::unwrap_used, clippy::panic)]

use std::ffi::CStr;
use std::fs::File;

use modcore::compress::Compression;
use modcore::kernel::{DeleteFlags, Errno, Kernel, KernelError, LoadFlags};
use tests::fixtures::System;
use tests::simkernel::{Call, SimKernel};
use tests::synth;
use tests::tools::{self, Outcome};

const KVER: &str = "6.1.0-test";

use tests::synth::named as m;

fn tree() -> System {
    let sys = System::new(KVER);
    sys.module(
        "kernel/fs/fat/fat.ko",
        m("fat")
            .export("fat_get")
            .modinfo("parmtype", "debug:int")
            .modinfo("vermagic", "6.1.0-test SMP mod_unload "),
    )
    .module(
        "kernel/fs/fat/msdos.ko",
        m("msdos")
            .needs("fat_get")
            .modinfo("vermagic", "6.1.0-test SMP mod_unload "),
    )
    .module_bytes(
        "kernel/fs/fat/fat_xz.ko.xz",
        &synth::xz(
            &m("fat_xz")
                .modinfo("vermagic", "6.1.0-test SMP mod_unload ")
                .build(),
        ),
    )
    .module_bytes(
        "kernel/fs/fat/fat_zst.ko.zst",
        &synth::zstd(&m("fat_zst").build()),
    );
    sys.depmod();
    sys
}

fn insmod(sys: &System, k: &dyn Kernel, args: &[&str]) -> Outcome {
    tools::insmod(sys, k, 1_000, args)
}

fn path(sys: &System, rel: &str) -> String {
    sys.moddir().join(rel).to_string_lossy().into_owned()
}

#[test]
fn plain_module_goes_through_finit_module() {
    let sys = tree();
    let k = sys.kernel();
    let fat = path(&sys, "kernel/fs/fat/fat.ko");
    let r = insmod(&sys, &k, &[&fat, "debug=1", "name=a b", "q='x y'"]);
    assert_eq!((r.code, r.out.as_str(), r.err.as_str()), (0, "", ""));
    assert_eq!(
        k.calls(),
        vec![Call::FinitModule {
            module: Some("fat".into()),
            params: "debug=1 name=\"a b\" q='x y'".into(),
            flags: 0,
        }]
    );
    assert_eq!(k.loaded(), vec!["fat".to_string()]);
}

#[test]
fn force_flags() {
    for (args, flags) in [
        (&["-f"][..], 3),
        (&["--force"][..], 3),
        (&["--force-vermagic"][..], 2),
        (&["--force-modversion"][..], 1),
        (&["--force-vermagic", "--force-modversion"][..], 3),
    ] {
        let sys = tree();
        let k = sys.kernel();
        let fat = path(&sys, "kernel/fs/fat/fat.ko");
        let mut a: Vec<&str> = args.to_vec();
        a.push(&fat);
        let r = insmod(&sys, &k, &a);
        assert_eq!(r.code, 0, "{args:?}: {}", r.err);
        assert_eq!(
            k.calls(),
            vec![Call::FinitModule {
                module: Some("fat".into()),
                params: String::new(),
                flags,
            }],
            "{args:?}"
        );
    }
}

#[test]
fn compressed_modules() {
    // No in-kernel decompression: user-space decompression and init_module.
    let sys = tree();
    let k = sys.kernel();
    let xz = path(&sys, "kernel/fs/fat/fat_xz.ko.xz");
    let r = insmod(&sys, &k, &[&xz, "a=1"]);
    assert_eq!(r.code, 0, "{}", r.err);
    match &k.calls()[..] {
        [Call::InitModule {
            module: Some(name),
            params,
            len,
        }] => {
            assert_eq!(name, "fat_xz");
            assert_eq!(params, "a=1");
            assert!(*len > 100);
        }
        other => panic!("{other:?}"),
    }

    // The kernel decompresses xz itself: finit_module with MODULE_INIT_COMPRESSED_FILE.
    let sys = tree();
    let k = sys.kernel();
    k.set_decompression(Some(Compression::Xz));
    let xz = path(&sys, "kernel/fs/fat/fat_xz.ko.xz");
    assert_eq!(insmod(&sys, &k, &[&xz]).code, 0);
    assert_eq!(
        k.calls(),
        vec![Call::FinitModule {
            module: Some("fat_xz".into()),
            params: String::new(),
            flags: 4,
        }]
    );
    assert_eq!(insmod(&sys, &k, &["-f", &xz]).code, 1); // already loaded
    assert!(matches!(
        k.calls().last(),
        Some(Call::FinitModule { flags: 7, .. })
    ));

    // ... but not zstd: that one still goes through init_module.
    let zst = path(&sys, "kernel/fs/fat/fat_zst.ko.zst");
    assert_eq!(insmod(&sys, &k, &[&zst]).code, 0);
    assert!(matches!(
        k.calls().last(),
        Some(Call::InitModule { module: Some(n), .. }) if n == "fat_zst"
    ));
}

/// A kernel without `finit_module` (ENOSYS): kmod falls back to `init_module`.
struct NoFinit(SimKernel);

impl Kernel for NoFinit {
    fn finit_module(&self, _: &File, _: &CStr, _: LoadFlags) -> Result<(), KernelError> {
        Err(KernelError::FinitModule(Errno::ENOSYS))
    }
    fn init_module(&self, image: &[u8], params: &CStr) -> Result<(), KernelError> {
        self.0.init_module(image, params)
    }
    fn delete_module(&self, name: &CStr, flags: DeleteFlags) -> Result<(), KernelError> {
        self.0.delete_module(name, flags)
    }
    fn release(&self) -> Result<String, KernelError> {
        self.0.release()
    }
}

#[test]
fn enosys_falls_back_to_init_module_and_patches_forced_images() {
    let sys = tree();
    let k = NoFinit(sys.kernel());
    // The kernel insists on another vermagic; --force-vermagic blanks the string in the
    // image handed to init_module, which the kernel then accepts as a forced load.
    k.0.set_vermagic(Some("6.1.0-test SMP preempt "));
    let fat = path(&sys, "kernel/fs/fat/fat.ko");
    let r = insmod(&sys, &k, &[&fat]);
    assert_eq!(r.code, 1);
    assert!(r.err.starts_with(&format!(
        "insmod: ERROR: could not insert module {fat}: Invalid module format\n"
    )));
    let r = insmod(&sys, &k, &["--force-vermagic", &fat]);
    assert_eq!(r.code, 0, "{}", r.err);
    assert_eq!(k.0.module("fat").unwrap().taints, "F");
    assert!(k
        .0
        .calls()
        .iter()
        .all(|c| matches!(c, Call::InitModule { .. })));
}

#[test]
fn kmod_messages_and_exit_codes() {
    let sys = tree();
    let k = sys.kernel();

    let r = insmod(&sys, &k, &[]);
    assert_eq!(
        (r.code, r.err.as_str()),
        (1, "insmod: ERROR: missing filename.\n")
    );

    let r = insmod(&sys, &k, &["-"]);
    assert_eq!(
        (r.code, r.err.as_str()),
        (
            1,
            "insmod: ERROR: this tool does not support loading from stdin!\n"
        )
    );

    let r = insmod(&sys, &k, &["/nonexistent/x.ko"]);
    assert_eq!(
        (r.code, r.err.as_str()),
        (
            1,
            "insmod: ERROR: could not load module /nonexistent/x.ko: No such file or directory\n"
        )
    );

    let r = insmod(&sys, &k, &["-Z"]);
    assert_eq!(
        (r.code, r.err.as_str()),
        (1, "insmod: invalid option -- 'Z'\n")
    );
    let r = insmod(&sys, &k, &["--bogus"]);
    assert_eq!(
        (r.code, r.err.as_str()),
        (1, "insmod: unrecognized option '--bogus'\n")
    );

    let r = insmod(&sys, &k, &["-V"]);
    assert_eq!(r.code, 0);
    assert!(r.out.starts_with("kmod version 30\n"));

    let r = insmod(&sys, &k, &["--help"]);
    assert_eq!(r.code, 0);
    assert!(r.out.contains("--autoclean"));
    assert!(k.calls().is_empty());
}

#[test]
fn errno_texts() {
    let sys = tree();
    let k = sys.kernel();
    let fat = path(&sys, "kernel/fs/fat/fat.ko");
    for (errno, text) in [
        (Errno::ESRCH, "Module has wrong symbol version"),
        (Errno::EINVAL, "Invalid parameters"),
        (Errno::ENOEXEC, "Invalid module format"),
        (Errno::ENOENT, "Unknown symbol in module"),
        (Errno::ENODEV, "No such device"),
        (Errno::EKEYREJECTED, "Key was rejected by service"),
        (Errno::EPERM, "Operation not permitted"),
    ] {
        k.fail_init("fat", errno);
        let r = insmod(&sys, &k, &[&fat]);
        assert_eq!(r.code, 1);
        let first = r.err.lines().next().unwrap();
        assert_eq!(
            first,
            format!("insmod: ERROR: could not insert module {fat}: {text}")
        );
    }
    // Already loaded: EEXIST from the kernel.
    let sys = tree();
    let k = sys.kernel();
    assert_eq!(insmod(&sys, &k, &[&fat_path(&sys)]).code, 0);
    let r = insmod(&sys, &k, &[&fat_path(&sys)]);
    assert_eq!(r.code, 1);
    assert_eq!(
        r.err.lines().next().unwrap(),
        format!(
            "insmod: ERROR: could not insert module {}: File exists",
            fat_path(&sys)
        )
    );
}

fn fat_path(sys: &System) -> String {
    path(sys, "kernel/fs/fat/fat.ko")
}

#[test]
fn too_short_and_directory() {
    let sys = tree();
    let k = sys.kernel();
    sys.write("/tmp/short.ko", "abc");
    let short = sys.path("/tmp/short.ko").to_string_lossy().into_owned();
    let r = insmod(&sys, &k, &[&short]);
    assert_eq!(r.code, 1);
    assert_eq!(
        r.err,
        format!(
            "insmod: ERROR: could not insert module {short}: Invalid parameters\n\
             insmod: NOTE: /tmp/short.ko is not a kernel module: it is only 3 bytes long: an empty or truncated file\n"
        )
    );
    let dir = sys.path("/tmp").to_string_lossy().into_owned();
    let r = insmod(&sys, &k, &[&dir]);
    assert_eq!(r.code, 1);
    assert_eq!(
        r.err.lines().next().unwrap(),
        format!("insmod: ERROR: could not insert module {dir}: Is a directory")
    );
    assert!(k.calls().is_empty());
}

#[test]
fn verbose_shows_the_system_call() {
    let sys = tree();
    let k = sys.kernel();
    let fat = fat_path(&sys);
    let r = insmod(&sys, &k, &["-vvvv", &fat, "x=1"]);
    assert_eq!(r.code, 0);
    assert_eq!(
        r.err,
        format!("insmod: DEBUG: finit_module({fat}, \"x=1\", 0x0)\n")
    );
}

#[test]
fn autoclean_records_the_module() {
    let sys = tree();
    let k = sys.kernel();
    let r = insmod(&sys, &k, &["-k", &fat_path(&sys)]);
    assert_eq!(r.code, 0, "{}", r.err);
    let text = std::fs::read_to_string(sys.path("/run/kmod-rs/autoclean")).unwrap();
    let entries = modcore::autoclean::parse(&text);
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].name, "fat");
    assert_eq!(entries[0].recorded, 1_000);
    assert_eq!(entries[0].idle_since, None);
    assert!(entries[0].address.is_some());

    // A failed load records nothing.
    let r = insmod(
        &sys,
        &k,
        &["--autoclean", &path(&sys, "kernel/fs/fat/msdos.ko")],
    );
    assert_eq!(r.code, 0, "{}", r.err); // fat is loaded, so msdos resolves
    let r = insmod(&sys, &k, &["-k", &fat_path(&sys)]);
    assert_eq!(r.code, 1);
    let text = std::fs::read_to_string(sys.path("/run/kmod-rs/autoclean")).unwrap();
    let names: Vec<String> = modcore::autoclean::parse(&text)
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert_eq!(names, ["fat", "msdos"]);
}
