//! modprobe end to end: synthetic module trees indexed by our depmod, `modprobe.d` files,
//! `/proc/cmdline`, and the simulated kernel. The tool is driven through its command
//! line (`modprobe::run_args`) with a fixture root, exactly as `main` drives it.

use std::ffi::OsString;
use std::fs;

use modcore::index::{IndexBuilder, Layout};
use modcore::kernel::Errno;
use modprobe::Env;
use tests::fixtures::System;
use tests::simkernel::{Call, SimKernel};
use tests::tools::{self, Outcome as Run};

const KVER: &str = "6.1.0-test";
const MD: &str = "/lib/modules/6.1.0-test";

use tests::synth::named as m;

/// The standard tree:
///
/// * `fat` exports `fat_get`; `msdos` and `vfat` need it;
/// * `msdos` has `softdep=pre: nls_cp437 post: nls-iso8859-1` and alias `fs-msdos`;
/// * `crc32-pclmul` and `crc32_generic` both have alias `crc32` (in that order);
/// * `gf128mul` ← `lrw` (dependency), `ecb` as a config softdep;
/// * `xa` ← `xb` ← `xc` (a chain: xc needs xb needs xa);
/// * `unres` needs a symbol nobody exports;
/// * `ext4` is built in, with alias `fs-ext4`.
fn standard() -> System {
    let sys = System::new(KVER);
    sys.module(
        "kernel/fs/fat/fat.ko",
        m("fat").export("fat_get").modinfo("alias", "fs-fat"),
    )
    .module(
        "kernel/fs/fat/msdos.ko",
        m("msdos")
            .needs("fat_get")
            .modinfo("alias", "fs-msdos")
            .modinfo("softdep", "pre: nls_cp437 post: nls-iso8859-1"),
    )
    .module(
        "kernel/fs/fat/vfat.ko",
        m("vfat").needs("fat_get").modinfo("alias", "fs-vfat"),
    )
    .module(
        "kernel/fs/nls/nls_cp437.ko",
        m("nls_cp437").export("cp437_x"),
    )
    .module(
        "kernel/fs/nls/nls_iso8859-1.ko",
        m("nls_iso8859_1").export("iso_x"),
    )
    .module(
        "kernel/arch/x86/crypto/crc32-pclmul.ko",
        m("crc32_pclmul").modinfo("alias", "crc32"),
    )
    .module(
        "kernel/crypto/crc32_generic.ko",
        m("crc32_generic").modinfo("alias", "crc32"),
    )
    .module(
        "kernel/crypto/gf128mul.ko",
        m("gf128mul").export("gf128mul_x"),
    )
    .module("kernel/crypto/ecb.ko", m("ecb"))
    .module("kernel/crypto/lrw.ko", m("lrw").needs("gf128mul_x"))
    .module("kernel/lib/xa.ko", m("xa").export("xa_f"))
    .module("kernel/lib/xb.ko", m("xb").needs("xa_f").export("xb_f"))
    .module("kernel/lib/xc.ko", m("xc").needs("xb_f"))
    .module(
        "kernel/lib/unres.ko",
        m("unres").needs("nowhere_to_be_found"),
    )
    .builtin(
        &["kernel/fs/ext4/ext4.ko"],
        &["ext4.alias=fs-ext4", "ext4.license=GPL"],
    );
    sys.write(
        &format!("{MD}/modules.order"),
        "kernel/fs/fat/fat.ko\nkernel/fs/fat/msdos.ko\nkernel/fs/fat/vfat.ko\n\
         kernel/fs/nls/nls_cp437.ko\nkernel/fs/nls/nls_iso8859-1.ko\n\
         kernel/arch/x86/crypto/crc32-pclmul.ko\nkernel/crypto/crc32_generic.ko\n\
         kernel/crypto/gf128mul.ko\nkernel/crypto/ecb.ko\nkernel/crypto/lrw.ko\n\
         kernel/lib/xa.ko\nkernel/lib/xb.ko\nkernel/lib/xc.ko\nkernel/lib/unres.ko\n",
    );
    sys.depmod();
    sys
}

fn run_with(sys: &System, k: &SimKernel, env: &Env, args: &[&str]) -> Run {
    tools::modprobe_with(sys, k, env, args)
}

fn run(sys: &System, k: &SimKernel, args: &[&str]) -> Run {
    run_with(sys, k, &Env::default(), args)
}

/// Module names of the load calls, in order.
fn loads(k: &SimKernel) -> Vec<String> {
    k.calls()
        .into_iter()
        .filter_map(|c| match c {
            Call::FinitModule { module, .. } | Call::InitModule { module, .. } => module,
            Call::DeleteModule { .. } => None,
        })
        .collect()
}

fn params_of(k: &SimKernel, name: &str) -> Option<String> {
    k.calls().into_iter().find_map(|c| match c {
        Call::FinitModule {
            module: Some(m),
            params,
            ..
        } if m == name => Some(params),
        Call::InitModule {
            module: Some(m),
            params,
            ..
        } if m == name => Some(params),
        _ => None,
    })
}

fn deletes(k: &SimKernel) -> Vec<String> {
    k.calls()
        .into_iter()
        .filter_map(|c| match c {
            Call::DeleteModule { name, .. } => Some(name),
            _ => None,
        })
        .collect()
}

fn lines(v: &[&str]) -> String {
    v.iter().map(|l| format!("{l}\n")).collect()
}

// ----- loading and ordering ------------------------------------------------------------

#[test]
fn dependencies_and_softdeps_load_in_kmod_order() {
    let sys = standard();
    let k = sys.kernel();
    let r = run(&sys, &k, &["msdos"]);
    assert_eq!((r.code, r.out.as_str(), r.err.as_str()), (0, "", ""));
    assert_eq!(loads(&k), ["fat", "nls_cp437", "msdos", "nls_iso8859_1"]);
    assert_eq!(k.loaded(), ["nls_iso8859_1", "msdos", "nls_cp437", "fat"]);

    // A chain of dependencies loads right to left of the modules.dep line.
    let k = sys.kernel();
    assert_eq!(run(&sys, &k, &["xc"]).code, 0);
    assert_eq!(loads(&k), ["xa", "xb", "xc"]);
}

#[test]
fn show_depends_exact_text() {
    let sys = standard();
    let k = sys.kernel();
    let r = run(&sys, &k, &["--show-depends", "fs-msdos"]);
    assert_eq!(r.code, 0);
    assert_eq!(
        r.out,
        lines(&[
            &format!("insmod {MD}/kernel/fs/fat/fat.ko "),
            &format!("insmod {MD}/kernel/fs/nls/nls_cp437.ko "),
            &format!("insmod {MD}/kernel/fs/fat/msdos.ko "),
            &format!("insmod {MD}/kernel/fs/nls/nls_iso8859-1.ko "),
        ])
    );
    assert!(k.calls().is_empty(), "-D makes no system calls");

    // Loaded modules are listed anyway; built-ins print `builtin NAME`.
    assert_eq!(run(&sys, &k, &["fat"]).code, 0);
    let r = run(&sys, &k, &["-D", "fat"]);
    assert_eq!(r.out, format!("insmod {MD}/kernel/fs/fat/fat.ko \n"));
    let r = run(&sys, &k, &["-D", "fs-ext4"]);
    assert_eq!((r.code, r.out.as_str()), (0, "builtin ext4\n"));

    // Extra operands are the top module's options; -i drops its softdeps.
    let r = run(&sys, &k, &["-iD", "msdos", "a=1", "b=x y"]);
    assert_eq!(
        r.out,
        lines(&[
            &format!("insmod {MD}/kernel/fs/fat/fat.ko "),
            &format!("insmod {MD}/kernel/fs/fat/msdos.ko a=1 b=\"x y\""),
        ])
    );
    // Options after the operands (argument permutation).
    let r = run(&sys, &k, &["vfat", "-D"]);
    assert_eq!(
        r.out,
        lines(&[
            &format!("insmod {MD}/kernel/fs/fat/fat.ko "),
            &format!("insmod {MD}/kernel/fs/fat/vfat.ko "),
        ])
    );
}

#[test]
fn verbose_and_dry_run() {
    let sys = standard();
    let k = sys.kernel();
    // kmod 30: -n alone prints nothing.
    let r = run(&sys, &k, &["-n", "vfat"]);
    assert_eq!((r.code, r.out.as_str()), (0, ""));
    assert!(k.calls().is_empty());
    let r = run(&sys, &k, &["-n", "-v", "vfat"]);
    assert_eq!(
        r.out,
        lines(&[
            &format!("insmod {MD}/kernel/fs/fat/fat.ko "),
            &format!("insmod {MD}/kernel/fs/fat/vfat.ko "),
        ])
    );
    assert!(k.calls().is_empty());
    let r = run(&sys, &k, &["-v", "vfat"]);
    assert_eq!(r.code, 0);
    assert_eq!(r.out.lines().count(), 2);
    assert_eq!(loads(&k), ["fat", "vfat"]);
    // Now loaded: -n -v prints nothing for loaded modules.
    let r = run(&sys, &k, &["-n", "-v", "vfat"]);
    assert_eq!(r.out, "");
}

#[test]
fn options_from_config_cmdline_and_arguments() {
    let sys = standard();
    sys.write(
        "/etc/modprobe.d/10-test.conf",
        "alias my-fs msdos\n\
         options my-fs opt_from_alias=1\n\
         options msdos opt_a=1   opt_b=\"x y\"\ttabbed=1\n\
         options fat cont=1\n",
    );
    sys.cmdline("quiet fat.debug=1 msdos.from_cmdline=2 root=/dev/sda1\n");
    let k = sys.kernel();
    let r = run(&sys, &k, &["-D", "my-fs", "extra=1", "sp=a b"]);
    assert_eq!(r.code, 0, "{}", r.err);
    assert_eq!(
        r.out,
        lines(&[
            &format!("insmod {MD}/kernel/fs/fat/fat.ko cont=1 debug=1 "),
            &format!("insmod {MD}/kernel/fs/nls/nls_cp437.ko "),
            &format!(
                "insmod {MD}/kernel/fs/fat/msdos.ko opt_from_alias=1 opt_a=1   opt_b=\"x y\" tabbed=1 from_cmdline=2 extra=1 sp=\"a b\""
            ),
            &format!("insmod {MD}/kernel/fs/nls/nls_iso8859-1.ko "),
        ])
    );
    let r = run(&sys, &k, &["my-fs", "extra=1", "sp=a b"]);
    assert_eq!(r.code, 0, "{}", r.err);
    assert_eq!(params_of(&k, "fat").as_deref(), Some("cont=1 debug=1 "));
    assert_eq!(
        params_of(&k, "msdos").as_deref(),
        Some("opt_from_alias=1 opt_a=1   opt_b=\"x y\" tabbed=1 from_cmdline=2 extra=1 sp=\"a b\"")
    );
    assert_eq!(params_of(&k, "nls_cp437").as_deref(), Some(""));
    // Through the index alias, `options fs-msdos` would apply, `options my-fs` not.
}

#[test]
fn bad_config_lines_use_the_library_printer() {
    let sys = standard();
    sys.write("/etc/modprobe.d/bad.conf", "bogus line\n");
    let k = sys.kernel();
    let r = run(&sys, &k, &["-q", "vfat"]);
    assert_eq!(r.code, 0);
    assert_eq!(
        r.err,
        "libkmod: kmod_config_parse: /etc/modprobe.d/bad.conf line 1: ignoring bad line starting with 'bogus'\n"
    );
}

// ----- blacklist ---------------------------------------------------------------------

#[test]
fn blacklist_applies_to_aliases_not_names_unless_b() {
    let sys = standard();
    sys.write(
        "/etc/modprobe.d/bl.conf",
        "blacklist msdos\nblacklist fat\n",
    );
    let k = sys.kernel();
    // Through an alias: skipped, success.
    let r = run(&sys, &k, &["fs-msdos"]);
    assert_eq!((r.code, r.out.as_str(), r.err.as_str()), (0, "", ""));
    assert!(k.calls().is_empty());
    let r = run(&sys, &k, &["-D", "fs-msdos"]);
    assert_eq!((r.code, r.out.as_str()), (0, ""));
    // -b: also by name.
    let r = run(&sys, &k, &["-b", "msdos"]);
    assert_eq!(r.code, 0);
    assert!(k.calls().is_empty());
    // -v says why (our extra NOTICE line).
    let r = run(&sys, &k, &["-v", "fs-msdos"]);
    assert!(
        r.err.contains("not loading msdos: it is blacklisted"),
        "{}",
        r.err
    );
    // By name: loaded, and the blacklisted dependency fat too.
    let r = run(&sys, &k, &["msdos"]);
    assert_eq!(r.code, 0);
    assert_eq!(loads(&k), ["fat", "nls_cp437", "msdos", "nls_iso8859_1"]);
}

#[test]
fn kernel_cmdline_blacklist_is_not_normalised() {
    let sys = standard();
    sys.cmdline("modprobe.blacklist=nls-cp437,vfat\n");
    let k = sys.kernel();
    assert_eq!(run(&sys, &k, &["fs-vfat"]).code, 0);
    assert!(k.calls().is_empty());
    let r = run(&sys, &k, &["-b", "nls_cp437"]);
    assert_eq!(r.code, 0);
    assert_eq!(loads(&k), ["nls_cp437"], "a dashed entry never matches");
}

// ----- install and remove commands ---------------------------------------------------

#[test]
fn install_command_gets_options_and_module_name() {
    let sys = standard();
    let marker = sys.path("/tmp/marker");
    fs::create_dir_all(marker.parent().expect("parent")).expect("mkdir");
    let conf = sys.path("/etc/modprobe.d");
    sys.write(
        "/etc/modprobe.d/inst.conf",
        format!(
            "install nls_cp437 echo \"MODPROBE_MODULE=$MODPROBE_MODULE MODPROBE_OPTIONS=[$MODPROBE_OPTIONS] opts=[$CMDLINE_OPTS]\" > {}; exit 3\n\
             options nls_cp437 cfgopt=1\n",
            marker.display()
        ),
    );
    let k = sys.kernel();
    let conf_s = conf.display().to_string();
    let r = run(&sys, &k, &["-C", &conf_s, "nls_cp437", "a=1", "b=c d"]);
    assert_eq!(r.code, 1);
    assert_eq!(
        fs::read_to_string(&marker).expect("marker written"),
        format!(
            "MODPROBE_MODULE=nls_cp437 MODPROBE_OPTIONS=[-C {conf_s}] opts=[cfgopt=1 a=1 b=c d]\n"
        )
    );
    assert_eq!(
        r.err,
        format!(
            "modprobe: ERROR: Error running install command 'echo \"MODPROBE_MODULE=$MODPROBE_MODULE MODPROBE_OPTIONS=[$MODPROBE_OPTIONS] opts=[cfgopt=1 a=1 b=\"c d\"]\" > {}; exit 3' for module nls_cp437: retcode 3\n\
             modprobe: ERROR: could not insert 'nls_cp437': Invalid argument\n",
            marker.display()
        )
    );
    assert!(k.calls().is_empty());

    // -D shows the command as configured; -i loads the module itself.
    let r = run(&sys, &k, &["-D", "nls_cp437"]);
    assert!(r
        .out
        .starts_with("install echo \"MODPROBE_MODULE=$MODPROBE_MODULE"));
    assert!(r.out.ends_with("exit 3 cfgopt=1 \n"), "{:?}", r.out);
    let r = run(&sys, &k, &["-i", "nls_cp437"]);
    assert_eq!(r.code, 0, "{}", r.err);
    assert_eq!(loads(&k), ["nls_cp437"]);
}

#[test]
fn install_command_never_runs_shell_text_from_arguments() {
    let sys = standard();
    let pwned = sys.path("/tmp/pwned");
    let ok = sys.path("/tmp/ok");
    fs::create_dir_all(ok.parent().expect("parent")).expect("mkdir");
    sys.write(
        "/etc/modprobe.d/inst.conf",
        format!("install nls_cp437 echo $CMDLINE_OPTS > {}\n", ok.display()),
    );
    let k = sys.kernel();
    let evil = format!("x=$(touch {})", pwned.display());
    let r = run(&sys, &k, &["nls_cp437", &evil]);
    assert_eq!(r.code, 1);
    assert!(
        !pwned.exists(),
        "shell text from the command line was executed"
    );
    assert!(!ok.exists());
    assert!(
        r.err
            .contains("not running the install command for module nls_cp437"),
        "{}",
        r.err
    );
    // Plain parameters are passed.
    let r = run(&sys, &k, &["nls_cp437", "y=1"]);
    assert_eq!(r.code, 0, "{}", r.err);
    assert_eq!(fs::read_to_string(&ok).expect("ran"), "y=1\n");
}

#[test]
fn install_command_named_like_the_request_and_softdep_override() {
    let sys = standard();
    let marker = sys.path("/tmp/pseudo");
    fs::create_dir_all(marker.parent().expect("parent")).expect("mkdir");
    sys.write(
        "/etc/modprobe.d/inst.conf",
        format!(
            "install not-a-module echo $MODPROBE_MODULE > {}\ninstall msdos /bin/false\n",
            marker.display()
        ),
    );
    let k = sys.kernel();
    let r = run(&sys, &k, &["not-a-module"]);
    assert_eq!(r.code, 0, "{}", r.err);
    assert_eq!(fs::read_to_string(&marker).expect("ran"), "not_a_module\n");
    // msdos carries a softdep, which disables its install command (kmod behaviour).
    let r = run(&sys, &k, &["msdos"]);
    assert_eq!(r.code, 0, "{}", r.err);
    assert!(k.loaded().contains(&"msdos".to_string()));
}

#[test]
fn remove_command_runs_instead_of_delete() {
    let sys = standard();
    let marker = sys.path("/tmp/removed");
    fs::create_dir_all(marker.parent().expect("parent")).expect("mkdir");
    sys.write(
        "/etc/modprobe.d/rm.conf",
        format!(
            "remove vfat echo gone $CMDLINE_OPTS> {}\n",
            marker.display()
        ),
    );
    let k = sys.kernel();
    assert_eq!(run(&sys, &k, &["vfat"]).code, 0);
    let r = run(&sys, &k, &["-r", "-v", "vfat"]);
    assert_eq!(r.code, 0, "{}", r.err);
    assert_eq!(r.out, format!("remove echo gone > {}\n", marker.display()));
    assert_eq!(fs::read_to_string(&marker).expect("ran"), "gone\n");
    assert!(deletes(&k).is_empty());

    sys.write("/etc/modprobe.d/rm.conf", "remove vfat exit 4\n");
    let r = run(&sys, &k, &["-r", "vfat"]);
    assert_eq!(r.code, 1);
    assert_eq!(
        r.err,
        "modprobe: FATAL: Error running remove command for vfat\n"
    );
}

// ----- weak dependencies -------------------------------------------------------------

#[test]
fn weakdeps_are_shown_but_never_loaded() {
    let sys = standard();
    sys.write("/etc/modprobe.d/weak.conf", "weakdep msdos vfat ecb\n");
    let k = sys.kernel();
    let r = run(&sys, &k, &["-c"]);
    assert!(r.out.contains("weakdep msdos vfat ecb\n"), "{}", r.out);
    let r = run(&sys, &k, &["msdos"]);
    assert_eq!((r.code, r.err.as_str()), (0, ""));
    assert!(!k.loaded().contains(&"vfat".to_string()));
    assert!(!k.loaded().contains(&"ecb".to_string()));
}

#[test]
fn config_softdep_resolves_through_aliases() {
    let sys = standard();
    sys.write(
        "/etc/modprobe.d/lrw.conf",
        "softdep lrw pre: ecb crc32 post: no-such-thing\n",
    );
    let k = sys.kernel();
    let r = run(&sys, &k, &["-D", "lrw"]);
    assert_eq!(r.code, 0, "{}", r.err);
    assert_eq!(
        r.out,
        lines(&[
            &format!("insmod {MD}/kernel/crypto/gf128mul.ko "),
            &format!("insmod {MD}/kernel/crypto/ecb.ko "),
            &format!("insmod {MD}/kernel/arch/x86/crypto/crc32-pclmul.ko "),
            &format!("insmod {MD}/kernel/crypto/crc32_generic.ko "),
            &format!("insmod {MD}/kernel/crypto/lrw.ko "),
        ])
    );
    // A config softdep sorting before modules.softdep overrides the module's own.
    sys.write("/etc/modprobe.d/aa.conf", "softdep msdos pre: ecb\n");
    let r = run(&sys, &k, &["-D", "msdos"]);
    assert_eq!(
        r.out,
        lines(&[
            &format!("insmod {MD}/kernel/fs/fat/fat.ko "),
            &format!("insmod {MD}/kernel/crypto/ecb.ko "),
            &format!("insmod {MD}/kernel/fs/fat/msdos.ko "),
        ])
    );
}

// ----- lookups -----------------------------------------------------------------------

#[test]
fn resolve_alias() {
    let sys = standard();
    let k = sys.kernel();
    let r = run(&sys, &k, &["-R", "crc32"]);
    assert_eq!(
        (r.code, r.out.as_str()),
        (0, "crc32_pclmul\ncrc32_generic\n")
    );
    let r = run(&sys, &k, &["-R", "fs-ext4"]);
    assert_eq!(r.out, "ext4\n");
    let r = run(&sys, &k, &["-R", "symbol:fat_get"]);
    assert_eq!(r.out, "fat\n");
    let r = run(&sys, &k, &["-qaR", "fs-msdos", "nls-cp437", "nothing"]);
    assert_eq!(
        (r.code, r.out.as_str(), r.err.as_str()),
        (1, "msdos\nnls_cp437\n", "")
    );
    sys.write("/etc/modprobe.d/a.conf", "alias crc32 ecb\n");
    let r = run(&sys, &k, &["-R", "crc32"]);
    assert_eq!(r.out, "ecb\n", "a config alias beats the index");
    assert!(k.calls().is_empty());
}

#[test]
fn show_config_dumps_config_then_indexes() {
    let sys = standard();
    sys.write(
        "/etc/modprobe.d/x.conf",
        "blacklist pcspkr\nalias my-fs msdos\noptions fat a=1\ninstall foo /bin/true\n",
    );
    sys.cmdline("fat.debug=1\n");
    let k = sys.kernel();
    let r = run(&sys, &k, &["-c", "ignored-operand"]);
    assert_eq!(r.code, 0);
    let head = "blacklist pcspkr\n\
                install foo /bin/true\n\
                alias my_fs msdos\n\
                options fat a=1\n\
                options fat debug=1\n\
                softdep msdos pre: nls_cp437post: nls-iso8859-1\n\
                \n# End of configuration files. Dumping indexes now:\n\n";
    assert!(r.out.starts_with(head), "{}", r.out);
    let rest = &r.out[head.len()..];
    assert!(
        rest.contains("alias crc32 crc32_pclmul\nalias crc32 crc32_generic\n"),
        "{rest}"
    );
    assert!(rest.contains("alias fs_msdos msdos\n"), "{rest}");
    assert!(rest.contains("alias symbol:fat_get fat\n"), "{rest}");
    let aliases_end = rest.find("alias symbol:").expect("symbols dumped");
    let keys: Vec<&str> = rest[..aliases_end]
        .lines()
        .map(|l| l.split(' ').nth(1).unwrap_or(""))
        .collect();
    let mut sorted = keys.clone();
    sorted.sort();
    assert_eq!(keys, sorted, "alias dump is in key order");
}

#[test]
fn builtin_and_loaded_modules_are_success() {
    let sys = standard();
    let k = sys.kernel();
    k.add_builtin("ext4", false);
    for args in [&["ext4"][..], &["fs-ext4"], &["-a", "ext4", "fs-ext4"]] {
        let r = run(&sys, &k, args);
        assert_eq!(
            (r.code, r.out.as_str(), r.err.as_str()),
            (0, "", ""),
            "{args:?}"
        );
    }
    assert!(k.calls().is_empty());
    let r = run(&sys, &k, &["--first-time", "ext4"]);
    assert_eq!(
        (r.code, r.err.as_str()),
        (
            1,
            "modprobe: ERROR: could not insert 'ext4': Module already in kernel\n"
        )
    );

    assert_eq!(run(&sys, &k, &["vfat"]).code, 0);
    let before = k.calls().len();
    let r = run(&sys, &k, &["vfat"]);
    assert_eq!((r.code, r.err.as_str()), (0, ""));
    assert_eq!(k.calls().len(), before, "nothing loaded twice");
    let r = run(&sys, &k, &["--first-time", "vfat"]);
    assert_eq!(
        (r.code, r.err.as_str()),
        (
            1,
            "modprobe: ERROR: could not insert 'vfat': Module already in kernel\n"
        )
    );
    // A dependency already loaded is skipped, the rest loads.
    let r = run(&sys, &k, &["--first-time", "msdos"]);
    assert_eq!(r.code, 0, "{}", r.err);
}

#[test]
fn not_found_messages() {
    let sys = standard();
    let k = sys.kernel();
    let r = run(&sys, &k, &["nosuch"]);
    assert_eq!(
        (r.code, r.out.as_str(), r.err.as_str()),
        (
            1,
            "",
            "modprobe: FATAL: Module nosuch not found in directory /lib/modules/6.1.0-test\n"
        )
    );
    let r = run(&sys, &k, &["-q", "nosuch"]);
    assert_eq!((r.code, r.err.as_str()), (1, ""));
    let r = run(&sys, &k, &["-r", "nosuch"]);
    assert_eq!(
        (r.code, r.err.as_str()),
        (1, "modprobe: FATAL: Module nosuch not found.\n")
    );
    // -a: warnings, and the other operands are still processed.
    let r = run(&sys, &k, &["-a", "nosuch", "vfat"]);
    assert_eq!(r.code, 1);
    assert_eq!(
        r.err,
        "modprobe: WARNING: Module nosuch not found in directory /lib/modules/6.1.0-test\n"
    );
    assert!(k.loaded().contains(&"vfat".to_string()));
    // Wrong -S: the directory does not exist; our NOTE says so.
    let r = run(&sys, &k, &["-S", "9.9.9", "vfat"]);
    assert_eq!(
        r.err,
        "modprobe: FATAL: Module vfat not found in directory /lib/modules/9.9.9\n\
         modprobe: NOTE: /lib/modules/9.9.9 does not exist: no modules are installed for kernel 9.9.9 (-S selects another version)\n"
    );
}

#[test]
fn missing_indexes_are_explained() {
    let sys = System::new(KVER);
    sys.module("kernel/fs/fat/fat.ko", m("fat"));
    let k = sys.kernel();
    let r = run(&sys, &k, &["fat"]);
    assert_eq!(r.code, 1);
    assert_eq!(
        r.err,
        "modprobe: FATAL: Module fat not found in directory /lib/modules/6.1.0-test\n\
         modprobe: NOTE: /lib/modules/6.1.0-test has no modules.dep.bin: its indexes were never built (run 'depmod 6.1.0-test')\n"
    );
}

#[test]
fn unresolved_symbol_is_reported_and_explained() {
    let sys = standard();
    let k = sys.kernel();
    let r = run(&sys, &k, &["unres"]);
    assert_eq!(r.code, 1);
    let mut it = r.err.lines();
    assert_eq!(
        it.next(),
        Some("modprobe: ERROR: could not insert 'unres': Unknown symbol in module, or unknown parameter (see dmesg)")
    );
    let notes: Vec<&str> = it.collect();
    assert!(!notes.is_empty());
    assert!(
        notes.iter().all(|l| l.starts_with("modprobe: NOTE: ")),
        "{notes:?}"
    );
    assert!(r.err.contains("nowhere_to_be_found"), "{}", r.err);
    // -q: nothing at all.
    let r = run(&sys, &k, &["-q", "unres"]);
    assert_eq!((r.code, r.err.as_str()), (1, ""));
}

#[test]
fn failing_dependency_is_named() {
    let sys = standard();
    let k = sys.kernel();
    k.fail_init("gf128mul", Errno::ENODEV);
    let r = run(&sys, &k, &["lrw"]);
    assert_eq!(r.code, 1);
    let mut it = r.err.lines();
    assert_eq!(
        it.next(),
        Some("modprobe: ERROR: could not insert 'lrw': No such device")
    );
    assert_eq!(
        it.next(),
        Some(
            "modprobe: NOTE: the module that failed is gf128mul (/lib/modules/6.1.0-test/kernel/crypto/gf128mul.ko), which lrw needs; lrw itself was not loaded"
        )
    );
    assert_eq!(loads(&k), ["gf128mul"]);
    // A failing softdep is not fatal.
    sys.write("/etc/modprobe.d/s.conf", "softdep vfat pre: ecb\n");
    k.fail_init("ecb", Errno::EIO);
    let r = run(&sys, &k, &["vfat"]);
    assert_eq!((r.code, r.err.as_str()), (0, ""));
    assert!(k.loaded().contains(&"vfat".to_string()));
}

// ----- removal -----------------------------------------------------------------------

#[test]
fn remove_with_softdeps_and_unused_dependencies() {
    let sys = standard();
    let k = sys.kernel();
    assert_eq!(run(&sys, &k, &["msdos"]).code, 0);
    let r = run(&sys, &k, &["-r", "-v", "msdos"]);
    assert_eq!(r.code, 0, "{}", r.err);
    assert_eq!(
        r.out,
        lines(&[
            "rmmod nls_iso8859_1",
            "rmmod msdos",
            "rmmod fat",
            "rmmod nls_cp437"
        ])
    );
    assert_eq!(deletes(&k), ["nls_iso8859_1", "msdos", "fat", "nls_cp437"]);
    assert!(k.loaded().is_empty());

    // A dependency still used by another module stays.
    assert_eq!(run(&sys, &k, &["-a", "msdos", "vfat"]).code, 0);
    assert_eq!(run(&sys, &k, &["-r", "-i", "msdos"]).code, 0);
    let mut l = k.loaded();
    l.sort();
    assert_eq!(l, ["fat", "nls_cp437", "nls_iso8859_1", "vfat"]);

    // Chains: xc, then xb (unused now), then xa — one pass in load order.
    assert_eq!(run(&sys, &k, &["xc"]).code, 0);
    let r = run(&sys, &k, &["-r", "-v", "xc"]);
    // (xa still had xb as a user when it was looked at: kmod's single pass leaves it.)
    assert_eq!(r.out, lines(&["rmmod xc", "rmmod xb"]));
    assert_eq!(k.loaded().iter().filter(|m| m.starts_with('x')).count(), 1);
}

#[test]
fn remove_in_use_not_loaded_builtin() {
    let sys = standard();
    let k = sys.kernel();
    k.add_builtin("ext4", false);
    assert_eq!(run(&sys, &k, &["vfat"]).code, 0);
    let r = run(&sys, &k, &["-r", "fat"]);
    assert_eq!(r.code, 1);
    let mut it = r.err.lines();
    assert_eq!(it.next(), Some("modprobe: FATAL: Module fat is in use."));
    assert!(it.all(|l| l.starts_with("modprobe: NOTE: ")));
    assert!(r.err.contains("vfat"), "the holder is named: {}", r.err);
    assert!(deletes(&k).is_empty());

    let r = run(&sys, &k, &["-r", "nls_cp437"]);
    assert_eq!((r.code, r.err.as_str()), (0, ""));
    let r = run(&sys, &k, &["-r", "--first-time", "nls_cp437"]);
    assert_eq!(
        (r.code, r.err.as_str()),
        (1, "modprobe: FATAL: Module nls_cp437 is not in kernel.\n")
    );
    let r = run(&sys, &k, &["-r", "ext4"]);
    assert_eq!(
        (r.code, r.err.as_str()),
        (1, "modprobe: FATAL: Module ext4 is builtin.\n")
    );

    // -q: the FATAL is silent and does not stop the run (kmod's control flow).
    let r = run(&sys, &k, &["-q", "-r", "fat", "vfat"]);
    assert_eq!((r.code, r.err.as_str()), (1, ""));
    assert!(!k.loaded().contains(&"vfat".to_string()));
    // Without -q the first FATAL ends the run.
    assert_eq!(run(&sys, &k, &["-a", "vfat", "msdos"]).code, 0);
    let r = run(&sys, &k, &["-r", "fat", "vfat"]);
    assert_eq!(r.code, 1);
    assert!(k.loaded().contains(&"vfat".to_string()));
}

#[test]
fn remove_holders() {
    let sys = standard();
    let k = sys.kernel();
    assert_eq!(run(&sys, &k, &["-a", "msdos", "vfat"]).code, 0);
    let r = run(&sys, &k, &["-r", "--remove-holders", "fat"]);
    assert_eq!((r.code, r.err.as_str()), (0, ""));
    assert!(k.loaded().is_empty(), "{:?}", k.loaded());
    // fat was removed once (as the unused dependency of its last holder).
    assert_eq!(deletes(&k).iter().filter(|d| *d == "fat").count(), 1);
    // --remove-holders alone implies -r.
    assert_eq!(run(&sys, &k, &["vfat"]).code, 0);
    let r = run(&sys, &k, &["--remove-holders", "fat"]);
    assert_eq!((r.code, r.err.as_str()), (0, ""));
    assert!(k.loaded().is_empty());
}

#[test]
fn remove_wait_retries_until_timeout() {
    let sys = standard();
    let k = sys.kernel();
    assert_eq!(run(&sys, &k, &["vfat"]).code, 0);
    k.get("vfat");
    let r = run(&sys, &k, &["-r", "-w", "30", "vfat"]);
    assert_eq!(r.code, 1);
    assert!(
        r.err.starts_with(
            "modprobe: ERROR: could not remove 'vfat': Resource temporarily unavailable\n"
        ),
        "{}",
        r.err
    );
    assert!(deletes(&k).len() > 1, "retried: {:?}", deletes(&k));
    k.put("vfat");
    let r = run(&sys, &k, &["-r", "-w", "0x10", "vfat"]);
    assert_eq!((r.code, r.err.as_str()), (0, ""));
}

// ----- index variants ----------------------------------------------------------------

fn show(sys: &System, args: &[&str]) -> Run {
    let k = sys.kernel();
    run(sys, &k, args)
}

#[test]
fn works_with_only_binary_indexes() {
    let sys = standard();
    let full = show(&sys, &["-D", "fs-msdos"]).out;
    let crc = show(&sys, &["-R", "crc32"]).out;
    // What mkinitcpio keeps: *.bin, modules.devname, modules.softdep.
    sys.remove_index_files(|n| {
        n.starts_with("modules.")
            && !(n.ends_with(".bin") || n == "modules.devname" || n == "modules.softdep")
    });
    assert!(!sys.moddir().join("modules.dep").exists());
    assert!(!sys.moddir().join("modules.alias").exists());
    assert_eq!(show(&sys, &["-D", "fs-msdos"]).out, full);
    assert_eq!(show(&sys, &["-R", "crc32"]).out, crc);
    assert_eq!(show(&sys, &["-R", "fs-ext4"]).out, "ext4\n");
    let k = sys.kernel();
    assert_eq!(run(&sys, &k, &["fs-msdos"]).code, 0);
    assert_eq!(loads(&k), ["fat", "nls_cp437", "msdos", "nls_iso8859_1"]);
}

#[test]
fn falls_back_to_text_files_without_binary_indexes() {
    let sys = standard();
    let full = show(&sys, &["-D", "fs-msdos"]).out;
    sys.remove_index_files(|n| n.ends_with(".bin"));
    assert_eq!(show(&sys, &["-D", "fs-msdos"]).out, full);
    assert_eq!(show(&sys, &["-R", "symbol:fat_get"]).out, "fat\n");
    assert_eq!(show(&sys, &["-R", "fs-ext4"]).out, "ext4\n");
    assert_eq!(
        show(&sys, &["-R", "crc32"]).out,
        "crc32_pclmul\ncrc32_generic\n"
    );
}

// ----- hostile names and paths -------------------------------------------------------

#[test]
fn names_never_become_paths() {
    let sys = standard();
    let k = sys.kernel();
    for name in [
        "../../../etc/passwd",
        "../kernel/fs/fat/fat",
        "kernel/fs/fat/fat.ko",
        "/lib/modules/6.1.0-test/kernel/fs/fat/fat.ko",
        "./fat.ko",
    ] {
        let r = run(&sys, &k, &[name]);
        assert_eq!(r.code, 1, "{name}");
        assert!(
            r.err.starts_with(&format!(
                "modprobe: FATAL: Module {name} not found in directory"
            )),
            "{}",
            r.err
        );
    }
    assert!(k.calls().is_empty());
}

#[test]
fn index_paths_must_stay_inside_the_module_directory() {
    let sys = standard();
    // An outside file that would load fine.
    sys.write("/evil.ko", m("evil").build());
    let mut b = IndexBuilder::new();
    b.insert(b"evil", b"../../../evil.ko:", 0);
    b.insert(b"fat", b"kernel/fs/fat/fat.ko:", 1);
    b.insert(
        b"twisty",
        b"kernel/../../../../evil.ko: kernel/fs/fat/fat.ko",
        2,
    );
    let bytes = b.write(Layout::PostOrder).expect("index");
    fs::write(sys.moddir().join("modules.dep.bin"), bytes).expect("write");
    let k = sys.kernel();
    for name in ["evil", "twisty"] {
        let r = run(&sys, &k, &[name]);
        assert_eq!(r.code, 1);
        assert!(
            r.err.starts_with(&format!(
                "modprobe: ERROR: refusing to load {name}: its modules.dep entry"
            )),
            "{}",
            r.err
        );
        assert!(r
            .err
            .contains(&format!("could not insert '{name}': Permission denied")));
    }
    assert_eq!(loads(&k), ["fat"], "only the in-tree dependency was loaded");
    assert!(!k.loaded().contains(&"evil".to_string()));
}

// ----- the kernel's request and the environment --------------------------------------

#[test]
fn kernel_request_module_call() {
    let sys = standard();
    let k = sys.kernel();
    // argv = { "/sbin/modprobe", "-q", "--", name }, nothing else in the environment.
    let call = |name: &str| {
        let argv: Vec<OsString> = ["/sbin/modprobe", "-q", "--", name]
            .iter()
            .map(OsString::from)
            .collect();
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let code = modprobe::run_args(&argv, &Env::default(), sys.root(), &k, &mut out, &mut err);
        (code, out, err)
    };
    assert_eq!(call("fs-vfat"), (0, vec![], vec![]));
    assert!(k.loaded().contains(&"vfat".to_string()));
    assert_eq!(call("fs-vfat"), (0, vec![], vec![]), "already loaded");
    assert_eq!(call("symbol:gf128mul_x"), (0, vec![], vec![]));
    assert!(k.loaded().contains(&"gf128mul".to_string()));
    assert_eq!(call("fs-nosuch"), (1, vec![], vec![]));
    assert_eq!(call("-r"), (1, vec![], vec![]), "after -- a dash is a name");
    assert_eq!(call("fs-ext4"), (0, vec![], vec![]), "built-in");
}

#[test]
fn modprobe_options_environment() {
    let sys = standard();
    sys.write("/etc/modprobe.d/bl.conf", "blacklist vfat\n");
    let k = sys.kernel();
    let env = Env {
        modprobe_options: Some(OsString::from("-qb")),
        kmod_log: None,
    };
    // initramfs-tools exports MODPROBE_OPTIONS=-qb.
    let r = run_with(&sys, &k, &env, &["vfat"]);
    assert_eq!((r.code, r.err.as_str()), (0, ""));
    assert!(k.calls().is_empty(), "-b from the environment applied");
    let r = run_with(&sys, &k, &env, &["nosuch"]);
    assert_eq!(
        (r.code, r.err.as_str()),
        (1, ""),
        "-q from the environment applied"
    );
    let env = Env {
        modprobe_options: Some(OsString::from("-v -q  -v")),
        kmod_log: None,
    };
    let r = run_with(&sys, &k, &env, &["-D", "nosuch"]);
    assert_eq!(r.err, "", "-v -q -v is silent");
}

#[test]
fn quiet_and_verbose_follow_command_line_order() {
    let sys = standard();
    let k = sys.kernel();
    assert_eq!(run(&sys, &k, &["-v", "-q", "nosuch"]).err, "");
    assert_eq!(run(&sys, &k, &["-q", "-v", "nosuch"]).err, "");
    assert_eq!(
        run(&sys, &k, &["-q", "-v", "-v", "nosuch"]).err,
        "modprobe: FATAL: Module nosuch not found in directory /lib/modules/6.1.0-test\n"
    );
}

#[test]
fn dirname_and_set_version() {
    let sys = standard();
    let k = sys.kernel();
    let base = sys.base().display().to_string();
    let r = run(&sys, &k, &["-d", &base, "-S", KVER, "-D", "vfat"]);
    assert_eq!(r.code, 0, "{}", r.err);
    assert_eq!(
        r.out,
        lines(&[
            &format!("insmod {base}{MD}/kernel/fs/fat/fat.ko "),
            &format!("insmod {base}{MD}/kernel/fs/fat/vfat.ko "),
        ])
    );
    // -d '' (mkinitcpio) means the host's /lib/modules, which has no such release.
    let r = run(&sys, &k, &["-d", "", "-S", "0.0.0-none", "vfat"]);
    assert_eq!(r.code, 1);
    assert!(r.err.starts_with(
        "modprobe: FATAL: Module vfat not found in directory /lib/modules/0.0.0-none\n"
    ));
}

// ----- concurrency -------------------------------------------------------------------

#[test]
fn concurrent_modprobes_of_the_same_module_all_succeed() {
    let sys = standard();
    let k = sys.kernel();
    let codes: Vec<u8> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|i| {
                let sys = &sys;
                let k = &k;
                s.spawn(move || {
                    let name = if i % 2 == 0 { "msdos" } else { "fs-msdos" };
                    run(sys, k, &["-q", name]).code
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or(99))
            .collect()
    });
    assert_eq!(codes, vec![0; 8]);
    let mut l = k.loaded();
    l.sort();
    assert_eq!(l, ["fat", "msdos", "nls_cp437", "nls_iso8859_1"]);
}

#[test]
fn kernel_eexist_while_another_load_is_in_flight_is_success() {
    // The module looks absent to our check but the kernel already has it (another
    // modprobe won the race): the kernel's EEXIST is success, like kmod.
    let sys = standard();
    let k = sys.kernel();
    assert_eq!(run(&sys, &k, &["vfat"]).code, 0);
    // Hide vfat from sysfs as a concurrent, not yet visible load would be.
    fs::remove_dir_all(sys.path("/sys/module/vfat")).expect("rm");
    let r = run(&sys, &k, &["vfat"]);
    assert_eq!((r.code, r.err.as_str()), (0, ""));
    assert_eq!(loads(&k).iter().filter(|m| *m == "vfat").count(), 2);
    // An initstate of "coming" is not "in kernel": the load is attempted.
    fs::create_dir_all(sys.path("/sys/module/vfat")).expect("mkdir");
    fs::write(sys.path("/sys/module/vfat/initstate"), "coming\n").expect("write");
    let r = run(&sys, &k, &["vfat"]);
    assert_eq!((r.code, r.err.as_str()), (0, ""));
}

// ----- symbol listings ---------------------------------------------------------------

#[test]
fn show_exports_and_modversions() {
    let sys = standard();
    let path = sys.path("/tmp/v.ko");
    fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    fs::write(
        &path,
        m("v")
            .export_crc("v_one", 0x1234)
            .needs("fat_get")
            .version("module_layout", 0xabcdef)
            .version("fat_get", 0x42)
            .build(),
    )
    .expect("write");
    let k = sys.kernel();
    let p = path.display().to_string();
    let r = run(&sys, &k, &["--show-exports", &p]);
    assert_eq!((r.code, r.out.as_str()), (0, "0x00001234\tv_one\n"));
    let r = run(&sys, &k, &["--dump-modversions", &p]);
    assert_eq!(
        (r.code, r.out.as_str()),
        (0, "0x00abcdef\tmodule_layout\n0x00000042\tfat_get\n")
    );
    let r = run(&sys, &k, &["--show-modversions", "/nonexistent/x.ko"]);
    assert_eq!(
        (r.code, r.err.as_str()),
        (1, "modprobe: FATAL: Module /nonexistent/x.ko not found.\n")
    );
}

#[test]
fn getopt_style_errors() {
    let sys = standard();
    let k = sys.kernel();
    let r = run(&sys, &k, &["--show-dep", "vfat"]);
    assert_eq!(r.code, 0, "unique prefix accepted: {}", r.err);
    assert_eq!(r.out.lines().count(), 2);
    let r = run(&sys, &k, &["-DS", KVER, "vfat"]);
    assert_eq!(r.out.lines().count(), 2, "{}", r.err);
    let r = run(&sys, &k, &["--set-version=9.9", "-D", "vfat"]);
    assert_eq!(r.code, 1);
    let r = run(&sys, &k, &["-x"]);
    assert_eq!(
        (r.code, r.err.as_str()),
        (1, "modprobe: invalid option -- 'x'\n")
    );
}

// ----- compressed modules, force flags, aliases to nothing ---------------------------

#[test]
fn compressed_modules_and_force_flags() {
    use modcore::compress::Compression;
    use tests::synth;
    let sys = System::new(KVER);
    sys.module_bytes(
        "kernel/fs/fat/fat.ko.xz",
        &synth::xz(&m("fat").export("fat_get").build()),
    )
    .module_bytes(
        "kernel/fs/fat/vfat.ko.zst",
        &synth::zstd(&m("vfat").needs("fat_get").build()),
    )
    .module("kernel/fs/nls/nls_utf8.ko", m("nls_utf8"));
    sys.depmod();
    let k = sys.kernel();
    let r = run(&sys, &k, &["-D", "vfat"]);
    assert_eq!(
        r.out,
        lines(&[
            &format!("insmod {MD}/kernel/fs/fat/fat.ko.xz "),
            &format!("insmod {MD}/kernel/fs/fat/vfat.ko.zst "),
        ])
    );
    // No in-kernel decompression: user space decompresses, init_module.
    assert_eq!(run(&sys, &k, &["vfat"]).code, 0);
    assert!(k
        .calls()
        .iter()
        .all(|c| matches!(c, Call::InitModule { .. })));
    // The kernel decompresses xz itself: finit_module with MODULE_INIT_COMPRESSED_FILE.
    let k = sys.kernel();
    k.set_decompression(Some(Compression::Xz));
    assert_eq!(run(&sys, &k, &["-f", "vfat"]).code, 0);
    let calls = k.calls();
    assert!(
        matches!(&calls[0], Call::FinitModule { module: Some(n), flags: 7, .. } if n == "fat"),
        "{calls:?}"
    );
    assert!(matches!(&calls[1], Call::InitModule { module: Some(n), .. } if n == "vfat"));
    // Plain files: finit_module with the force bits.
    for (args, bits) in [
        (&["-f", "nls_utf8"][..], 3u32),
        (&["--force-vermagic", "nls_utf8"], 2),
        (&["--force-modversion", "nls_utf8"], 1),
        (&["nls_utf8"], 0),
    ] {
        let k = sys.kernel();
        assert_eq!(run(&sys, &k, args).code, 0);
        assert!(
            matches!(k.calls().as_slice(), [Call::FinitModule { flags, .. }] if *flags == bits),
            "{args:?}: {:?}",
            k.calls()
        );
    }
}

#[test]
fn alias_to_an_alias_is_not_followed() {
    let sys = standard();
    sys.write("/etc/modprobe.d/a.conf", "alias foo fs-msdos\n");
    let k = sys.kernel();
    let r = run(&sys, &k, &["-D", "foo"]);
    assert_eq!((r.code, r.out.as_str()), (0, ""));
    assert_eq!(run(&sys, &k, &["-R", "foo"]).out, "fs_msdos\n");
    let r = run(&sys, &k, &["foo"]);
    assert_eq!(r.code, 1);
    assert_eq!(
        r.err,
        "modprobe: ERROR: could not find module by name='fs_msdos'\n\
         modprobe: ERROR: could not insert 'fs_msdos': Unknown symbol in module, or unknown parameter (see dmesg)\n\
         modprobe: NOTE: fs_msdos is not a module in /lib/modules/6.1.0-test: the configuration alias 'foo' points to it, and aliases are not followed to other aliases\n"
    );
}

#[test]
fn long_option_spellings() {
    let sys = standard();
    let k = sys.kernel();
    // Exact old spellings win over longer options sharing the prefix.
    let r = run(&sys, &k, &["--show", "-v", "vfat"]);
    assert_eq!((r.code, r.out.lines().count()), (0, 2), "{}", r.err);
    assert!(k.calls().is_empty(), "--show is --dry-run");
    let r = run(&sys, &k, &["--showconfig"]);
    assert!(r.out.contains("# End of configuration files."));
    let r = run(&sys, &k, &["--resolve-alias", "fs-vfat"]);
    assert_eq!(r.out, "vfat\n");
    assert_eq!(
        run(
            &sys,
            &k,
            &["--set-version", KVER, "--dirname", "", "-q", "vfat"]
        )
        .code,
        1
    );
    assert_eq!(run(&sys, &k, &["vfat"]).code, 0);
    let r = run(&sys, &k, &["--remove-dependencies", "-r", "fat"]);
    assert_eq!((r.code, r.err.as_str()), (0, ""));
    assert!(k.loaded().is_empty());
}
