//! Runtime foundations on fixture roots: modprobe.d collection and precedence, the
//! kernel command line, live module state, and the simulated kernel.
#![allow(clippy::unwrap_used, clippy::panic)]

use std::ffi::CString;
use std::fs;
use std::path::{Path, PathBuf};

use modcore::kernel::{DeleteFlags, Errno, Kernel, LoadFlags};
use modcore::modprobe_conf::{self, ConfigError, Dialect, ModprobeConfig};
use modcore::procfs::{self, InitState, LiveModules};
use modcore::root::Root;
use tests::simkernel::{Call, ModuleSpec, SimKernel};

fn write(root: &Path, rel: &str, text: &str) {
    let p = root.join(rel.trim_start_matches('/'));
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, text).unwrap();
}

fn cs(s: &str) -> CString {
    CString::new(s).unwrap()
}

fn messages(errors: &[ConfigError]) -> Vec<String> {
    errors.iter().map(ToString::to_string).collect()
}

// ===================================================================================
// modprobe.d collection
// ===================================================================================

/// The layout of spec §10's option-merging example, spread over the default dirs.
fn spec_example_root() -> tempfile::TempDir {
    let t = tempfile::tempdir().unwrap();
    let r = t.path();
    write(
        r,
        "/etc/modprobe.d/10-test.conf",
        "alias my-fs msdos\n\
         options my-fs opt_from_alias=1\n\
         options msdos opt_a=1   opt_b=\"x y\"\ttabbed=1\n\
         options msdos opt_c=3 # not a comment\n\
         softdep msdos pre: nls_cp437 post: nls-iso8859-1\n\
         \x20  options   fat   leading=ws\n\
         options fat cont=1 \\\n cont2=2\n",
    );
    write(
        r,
        "/etc/modprobe.d/20-more.conf",
        "options msdos from_20=1\n",
    );
    write(
        r,
        "/etc/modprobe.d/x.alias",
        "options msdos from_dot_alias=1\n",
    );
    // Same name in a lower-precedence directory: shadowed.
    write(
        r,
        "/lib/modprobe.d/10-test.conf",
        "options msdos shadowed=1\n",
    );
    // Sorts first although it lives in a lower-precedence directory.
    write(
        r,
        "/run/modprobe.d/05-first.conf",
        "options msdos from_d2_05=1\n",
    );
    // Ignored entries.
    write(
        r,
        "/etc/modprobe.d/.hidden.conf",
        "options msdos hidden=1\n",
    );
    write(r, "/etc/modprobe.d/README", "options msdos readme=1\n");
    write(r, "/etc/modprobe.d/.conf", "options msdos dotconf=1\n");
    fs::create_dir_all(r.join("etc/modprobe.d/sub.conf")).unwrap();
    write(
        r,
        "/proc/cmdline",
        "BOOT_IMAGE=/vmlinuz ro quiet fat.debug=1\n",
    );
    t
}

#[test]
fn collection_order_and_precedence() {
    let t = spec_example_root();
    let root = Root::new(t.path());
    let moddir = root.module_dir("6.1.0");
    let (files, errors) = modprobe_conf::list_config_files(
        &root,
        Some(&moddir),
        &root.modprobe_d_dirs(),
        Dialect::KMOD30,
    );
    let names: Vec<_> = files
        .iter()
        .map(|f| f.name.to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        vec![
            "05-first.conf",
            "10-test.conf",
            "20-more.conf",
            "modules.softdep",
            "x.alias"
        ]
    );
    assert_eq!(files[1].path, t.path().join("etc/modprobe.d/10-test.conf"));
    assert_eq!(
        messages(&errors),
        vec!["Directories inside directories are not supported: /etc/modprobe.d/sub.conf"]
    );

    // kmod 34 no longer reads *.alias.
    let (files, _) = modprobe_conf::list_config_files(
        &root,
        Some(&moddir),
        &root.modprobe_d_dirs(),
        Dialect::KMOD34,
    );
    let names: Vec<_> = files
        .iter()
        .map(|f| f.name.to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        vec![
            "05-first.conf",
            "10-test.conf",
            "20-more.conf",
            "modules.softdep",
            "modules.weakdep"
        ]
    );
}

#[test]
fn spec_option_merging_example() {
    let t = spec_example_root();
    let root = Root::new(t.path());
    let moddir = root.module_dir("6.1.0");
    let loaded = modprobe_conf::load(
        &root,
        Some(&moddir),
        &root.modprobe_d_dirs(),
        Dialect::KMOD30,
    );
    let c = &loaded.config;
    // `modprobe -D my-fs extra=1 "sp=a b"` — the config part of each line (spec §10).
    assert_eq!(
        String::from_utf8_lossy(&c.module_options(b"fat", None)),
        "  leading=ws cont=1  cont2=2 debug=1"
    );
    assert_eq!(
        String::from_utf8_lossy(&c.module_options(b"msdos", Some(b"my_fs"))),
        "from_d2_05=1 opt_from_alias=1 opt_a=1   opt_b=\"x y\" tabbed=1 opt_c=3 # not a comment \
         from_20=1 from_dot_alias=1"
    );
    let sd = c.softdep(b"msdos").unwrap();
    assert_eq!(sd.pre, vec![b"nls_cp437".to_vec()]);
    assert_eq!(sd.post, vec![b"nls-iso8859-1".to_vec()]);
    assert_eq!(c.aliases_matching(b"my_fs").count(), 1);
    assert_eq!(
        messages(&loaded.errors).len(),
        1,
        "only the nested directory"
    );
}

#[test]
fn modules_softdep_takes_part_in_the_sort() {
    let t = tempfile::tempdir().unwrap();
    let r = t.path();
    write(
        r,
        "/lib/modules/v/modules.softdep",
        "softdep btrfs pre: from_index\nsoftdep lrw pre: from_index\n",
    );
    write(r, "/etc/modprobe.d/aa.conf", "softdep lrw pre: from_aa\n");
    write(r, "/etc/modprobe.d/zz.conf", "softdep btrfs pre: from_zz\n");
    let root = Root::new(r);
    let l = modprobe_conf::load(
        &root,
        Some(&root.module_dir("v")),
        &root.modprobe_d_dirs(),
        Dialect::KMOD30,
    );
    assert_eq!(
        l.config.softdep(b"lrw").unwrap().pre,
        vec![b"from_aa".to_vec()]
    );
    assert_eq!(
        l.config.softdep(b"btrfs").unwrap().pre,
        vec![b"from_index".to_vec()]
    );
    // modules.softdep is read even when no modprobe.d path is given (insmod, lsmod...).
    let l = modprobe_conf::load(&root, Some(&root.module_dir("v")), &[], Dialect::KMOD30);
    assert_eq!(l.config.softdeps.len(), 2);
}

#[test]
fn masking_and_single_files() {
    let t = tempfile::tempdir().unwrap();
    let r = t.path();
    write(r, "/lib/modprobe.d/mask.conf", "blacklist masked\n");
    write(r, "/etc/modprobe.d/mask.conf", "");
    write(
        r,
        "/usr/local/lib/modprobe.d/link-target",
        "blacklist vialink\n",
    );
    std::os::unix::fs::symlink(
        r.join("usr/local/lib/modprobe.d/link-target"),
        r.join("etc/modprobe.d/link.conf"),
    )
    .unwrap();
    let root = Root::new(r);
    let l = modprobe_conf::load(&root, None, &root.modprobe_d_dirs(), Dialect::KMOD30);
    assert!(!l.config.is_blacklisted(b"masked"), "empty file masks");
    assert!(l.config.is_blacklisted(b"vialink"), "symlinks are followed");

    // `-C FILE` replaces the default list; a file is keyed by its basename.
    write(r, "/custom/one.conf", "blacklist one\nbogus line\n");
    let l = modprobe_conf::load(
        &root,
        None,
        &[r.join("custom/one.conf"), r.join("does/not/exist")],
        Dialect::KMOD30,
    );
    assert!(l.config.is_blacklisted(b"one"));
    assert!(!l.config.is_blacklisted(b"vialink"));
    assert_eq!(
        messages(&l.errors),
        vec!["/custom/one.conf line 2: ignoring bad line starting with 'bogus'"]
    );
}

#[test]
fn cmdline_errors_come_last_and_go_through_root() {
    let t = tempfile::tempdir().unwrap();
    let r = t.path();
    write(r, "/etc/modprobe.d/a.conf", "what\noptions fat a=1\n");
    write(
        r,
        "/proc/cmdline",
        "fat.b=2 bad-[x.y=1 modprobe.blacklist=snd-pcsp,floppy \"vfat.codepage=850 y\"\n",
    );
    let root = Root::new(r);
    let l = modprobe_conf::load(&root, None, &root.modprobe_d_dirs(), Dialect::KMOD30);
    assert_eq!(
        messages(&l.errors),
        vec![
            "/etc/modprobe.d/a.conf line 1: ignoring bad line starting with 'what'".to_string(),
            "Ignoring bad option on kernel command line while parsing module name: 'bad-[x'"
                .to_string(),
        ]
    );
    assert_eq!(l.errors[1].libkmod_function(), "kmod_config_parse_kcmdline");
    assert_eq!(l.config.module_options(b"fat", None), b"a=1 b=2");
    assert_eq!(
        l.config.module_options(b"vfat", None),
        b"codepage=\"850 y\""
    );
    assert!(l.config.is_blacklisted(b"floppy"));
    assert!(!l.config.is_blacklisted(b"snd_pcsp"));
    let dump = String::from_utf8(l.config.show_config()).unwrap();
    assert!(dump
        .starts_with("blacklist snd-pcsp\nblacklist floppy\noptions fat a=1\noptions fat b=2\n"));

    // No /proc/cmdline: silently nothing.
    fs::remove_file(r.join("proc/cmdline")).unwrap();
    let l = modprobe_conf::load(&root, None, &[], Dialect::KMOD30);
    assert!(l.errors.is_empty());
    assert_eq!(l.config, ModprobeConfig::default());
}

// ===================================================================================
// Live module state, read back from what the simulated kernel writes
// ===================================================================================

struct Sim {
    _dir: tempfile::TempDir,
    root: Root,
    kernel: SimKernel,
}

fn sim() -> Sim {
    let dir = tempfile::tempdir().unwrap();
    let root = Root::new(dir.path());
    let kernel = SimKernel::new(root.clone());
    kernel.add_vmlinux_symbols([("printk", 0), ("kmalloc", 0)]);
    Sim {
        _dir: dir,
        root,
        kernel,
    }
}

fn fat() -> Vec<u8> {
    ModuleSpec::new("fat")
        .export("fat_get")
        .export("fat_put")
        .need("printk")
        .info("parm", "debug:Debug level")
        .info("parmtype", "debug:int")
        .build()
}

fn user_of_fat(name: &str) -> Vec<u8> {
    ModuleSpec::new(name)
        .need("fat_get")
        .need("kmalloc")
        .build()
}

fn load(k: &SimKernel, image: &[u8]) -> Result<(), Errno> {
    k.init_module(image, &cs("")).map_err(|e| e.errno())
}

fn delete(k: &SimKernel, name: &str, force: bool) -> Result<(), Errno> {
    k.delete_module(&cs(name), DeleteFlags { force })
        .map_err(|e| e.errno())
}

#[test]
fn loading_resolves_symbols_and_tracks_holders() {
    let s = sim();
    let k = &s.kernel;
    // Without fat, msdos cannot resolve fat_get.
    assert_eq!(load(k, &user_of_fat("msdos")), Err(Errno::ENOENT));
    assert_eq!(k.kmsg(), vec!["msdos: Unknown symbol fat_get (err -2)"]);
    let kmsg = fs::read_to_string(k.kmsg_path()).unwrap();
    assert_eq!(kmsg, "4,1,1000,-;msdos: Unknown symbol fat_get (err -2)\n");

    load(k, &fat()).unwrap();
    load(k, &user_of_fat("msdos")).unwrap();
    load(k, &user_of_fat("vfat")).unwrap();
    assert_eq!(load(k, &fat()), Err(Errno::EEXIST));
    assert_eq!(k.loaded(), vec!["vfat", "msdos", "fat"]);
    assert_eq!(k.holders("fat"), vec!["vfat", "msdos"]);
    assert_eq!(k.refcnt("fat"), Some(2));

    // /proc/modules as the kernel writes it, newest first, users newest first.
    let text = fs::read(s.root.proc_modules()).unwrap();
    let mods = procfs::parse_proc_modules(&text).unwrap();
    let lines: Vec<_> = mods
        .iter()
        .map(|m| {
            let users: Vec<_> = m
                .users
                .iter()
                .map(|u| String::from_utf8_lossy(u).into_owned())
                .collect();
            (
                String::from_utf8_lossy(&m.name).into_owned(),
                m.refcnt,
                users,
            )
        })
        .collect();
    assert_eq!(
        lines,
        vec![
            ("vfat".to_string(), Some(0), vec![]),
            ("msdos".to_string(), Some(0), vec![]),
            (
                "fat".to_string(),
                Some(2),
                vec!["vfat".to_string(), "msdos".to_string()]
            ),
        ]
    );
    assert!(String::from_utf8_lossy(&text).contains("fat 4096 2 vfat,msdos, Live 0x"));

    // Our readers see the same through sysfs.
    let live = LiveModules::new(&s.root);
    assert_eq!(live.initstate(b"fat").unwrap(), InitState::Live);
    assert!(live.in_kernel(b"fat"));
    assert_eq!(live.refcnt(b"fat").unwrap(), 2);
    let mut holders = live.holders(b"fat").unwrap();
    holders.sort();
    assert_eq!(holders, vec![b"msdos".to_vec(), b"vfat".to_vec()]);
    assert_eq!(live.size(b"fat").unwrap(), 4096);
    assert_eq!(
        live.loaded().unwrap(),
        vec![
            Some(b"vfat".to_vec()),
            Some(b"msdos".to_vec()),
            Some(b"fat".to_vec())
        ]
    );
    let e = live.initstate(b"nls_cp437").unwrap_err();
    assert_eq!(e.errno(), nix_enoent());
    assert!(!e.reported());
}

fn nix_enoent() -> i32 {
    Errno::ENOENT as i32
}

#[test]
fn removal_follows_the_kernel_check_order() {
    let s = sim();
    let k = &s.kernel;
    load(k, &fat()).unwrap();
    load(k, &user_of_fat("msdos")).unwrap();
    // Used by another module: EWOULDBLOCK, even when forced.
    assert_eq!(delete(k, "fat", false), Err(Errno::EWOULDBLOCK));
    assert_eq!(delete(k, "fat", true), Err(Errno::EWOULDBLOCK));
    assert_eq!(delete(k, "nls_cp437", false), Err(Errno::ENOENT));
    // A mounted file system holds msdos.
    assert!(k.get("msdos"));
    assert_eq!(delete(k, "msdos", false), Err(Errno::EAGAIN));
    assert_eq!(LiveModules::new(&s.root).refcnt(b"msdos").unwrap(), 1);
    assert!(k.put("msdos"));
    delete(k, "msdos", false).unwrap();
    assert!(!s.root.sys_module_dir(b"msdos").exists());
    assert_eq!(k.refcnt("fat"), Some(0));
    assert!(LiveModules::new(&s.root)
        .holders(b"fat")
        .unwrap()
        .is_empty());
    delete(k, "fat", false).unwrap();
    assert!(k.loaded().is_empty());
    assert_eq!(fs::read(s.root.proc_modules()).unwrap(), b"");
    assert_eq!(
        k.calls().last(),
        Some(&Call::DeleteModule {
            name: "fat".to_string(),
            flags: 0o4000
        })
    );
}

#[test]
fn forced_removal_permanent_modules_and_injected_errors() {
    let s = sim();
    let k = &s.kernel;
    k.set_permanent("perm");
    load(k, &ModuleSpec::new("perm").build()).unwrap();
    assert!(fs::read_to_string(s.root.proc_modules())
        .unwrap()
        .starts_with("perm 4096 0 [permanent], Live "));
    assert_eq!(delete(k, "perm", false), Err(Errno::EBUSY));
    delete(k, "perm", true).unwrap();

    load(k, &ModuleSpec::new("busy").build()).unwrap();
    k.get("busy");
    k.set_force_unload_allowed(false);
    assert_eq!(delete(k, "busy", true), Err(Errno::EWOULDBLOCK));
    k.set_force_unload_allowed(true);
    delete(k, "busy", true).unwrap();
    assert_eq!(
        k.calls().last(),
        Some(&Call::DeleteModule {
            name: "busy".to_string(),
            flags: 0o5000
        })
    );

    load(k, &ModuleSpec::new("flaky").build()).unwrap();
    k.fail_delete("flaky", Errno::EBUSY);
    assert_eq!(delete(k, "flaky", false), Err(Errno::EBUSY));

    k.fail_init("nodev", Errno::ENODEV);
    assert_eq!(
        load(k, &ModuleSpec::new("nodev").build()),
        Err(Errno::ENODEV)
    );
    assert!(k.module("nodev").is_none());

    k.set_modules_disabled(true);
    assert_eq!(load(k, &ModuleSpec::new("x").build()), Err(Errno::EPERM));
    assert_eq!(delete(k, "flaky", false), Err(Errno::EPERM));
}

#[test]
fn load_failures_with_kernel_reasons() {
    let s = sim();
    let k = &s.kernel;
    // Not an ELF file.
    assert_eq!(load(k, b"hello world"), Err(Errno::ENOEXEC));
    // vermagic
    k.set_vermagic(Some("6.1.0-sim SMP mod_unload"));
    let wrong = ModuleSpec::new("vm").info("vermagic", "5.10.0 SMP").build();
    assert_eq!(load(k, &wrong), Err(Errno::ENOEXEC));
    assert_eq!(
        k.kmsg().last().unwrap(),
        "vm: version magic '5.10.0 SMP' should be '6.1.0-sim SMP mod_unload'"
    );
    let f = tempfile::NamedTempFile::new().unwrap();
    fs::write(f.path(), &wrong).unwrap();
    let file = fs::File::open(f.path()).unwrap();
    let force = LoadFlags {
        ignore_vermagic: true,
        ..LoadFlags::default()
    };
    k.set_force_load_allowed(false);
    assert_eq!(
        k.finit_module(&file, &cs(""), force).unwrap_err().errno(),
        Errno::ENOEXEC
    );
    k.set_force_load_allowed(true);
    k.finit_module(&file, &cs("x=1"), force).unwrap();
    assert_eq!(k.module("vm").unwrap().taints, "F");
    assert!(fs::read_to_string(s.root.proc_modules())
        .unwrap()
        .contains(" (F)"));
    assert_eq!(
        k.calls().last(),
        Some(&Call::FinitModule {
            module: Some("vm".to_string()),
            params: "x=1".to_string(),
            flags: 2
        })
    );
    assert!(k
        .kmsg()
        .contains(&"vm: unknown parameter 'x' ignored".to_string()));

    // Symbol CRC mismatch → EINVAL; forcing modversions skips the check.
    k.set_vermagic(None);
    k.add_vmlinux_symbols([("crcsym", 0x1111)]);
    let mut spec = ModuleSpec::new("crcmod");
    spec.needs.push(("crcsym".to_string(), 0x2222, false));
    let img = spec.build();
    assert_eq!(load(k, &img), Err(Errno::EINVAL));
    let n = k.kmsg().len();
    assert_eq!(
        k.kmsg()[n - 2..].to_vec(),
        vec![
            "crcmod: disagrees about version of symbol crcsym".to_string(),
            "crcmod: Unknown symbol crcsym (err -22)".to_string()
        ]
    );
    fs::write(f.path(), &img).unwrap();
    let file = fs::File::open(f.path()).unwrap();
    k.finit_module(
        &file,
        &cs(""),
        LoadFlags {
            ignore_modversions: true,
            ..LoadFlags::default()
        },
    )
    .unwrap();

    // Weak symbols may stay unresolved; known parameters are accepted silently.
    let before = k.kmsg().len();
    let weak = ModuleSpec::new("weakling")
        .weak("nowhere")
        .info("parm", "level:the level")
        .build();
    k.init_module(&weak, &cs("level=3 dyndbg=+p")).unwrap();
    assert_eq!(k.kmsg().len(), before);

    // module_blacklist= on the kernel command line.
    k.set_module_blacklist(["evil"]);
    assert_eq!(load(k, &ModuleSpec::new("evil").build()), Err(Errno::EPERM));
    assert_eq!(k.kmsg().last().unwrap(), "Module evil is blacklisted");

    // In-kernel decompression not configured.
    let compressed = LoadFlags {
        compressed_file: true,
        ..LoadFlags::default()
    };
    assert_eq!(
        k.finit_module(&file, &cs(""), compressed)
            .unwrap_err()
            .errno(),
        Errno::EOPNOTSUPP
    );
    assert_eq!(k.release().unwrap(), "6.1.0-sim");
}

#[test]
fn builtins_and_kernels_without_unloading() {
    let s = sim();
    let k = &s.kernel;
    k.add_builtin("ext4", true);
    let live = LiveModules::new(&s.root);
    // Built-in code with parameters looks like a module that is coming (spec §1.8) ...
    assert_eq!(live.initstate(b"ext4").unwrap(), InitState::Coming);
    assert!(!live.in_kernel(b"ext4"));
    // ... unless the modules.builtin check knows it.
    let live = LiveModules::new(&s.root).with_builtin(|n| n == b"ext4");
    assert_eq!(live.initstate(b"ext4").unwrap(), InitState::Builtin);
    assert!(live.in_kernel(b"ext4"));
    assert_eq!(live.refcnt(b"ext4").unwrap_err().errno(), nix_enoent());
    assert_eq!(
        load(k, &ModuleSpec::new("ext4").build()),
        Err(Errno::EINVAL)
    );
    assert_eq!(k.kmsg().last().unwrap(), "ext4: module is already loaded");

    k.set_unload_supported(false);
    load(k, &ModuleSpec::new("m").build()).unwrap();
    assert!(fs::read_to_string(s.root.proc_modules())
        .unwrap()
        .starts_with("m 4096 - - Live 0x"));
    let live = LiveModules::new(&s.root);
    assert_eq!(live.refcnt(b"m").unwrap_err().errno(), nix_enoent());
    assert_eq!(delete(k, "m", false), Err(Errno::ENOSYS));
}

#[test]
fn size_falls_back_to_proc_modules() {
    let s = sim();
    load(&s.kernel, &fat()).unwrap();
    fs::remove_file(s.root.sys_module_attr(b"fat", "coresize")).unwrap();
    let live = LiveModules::new(&s.root);
    assert_eq!(live.size(b"fat").unwrap(), 4096);
    fs::write(s.root.sys_module_attr(b"fat", "coresize"), "junk").unwrap();
    let e = live.size(b"fat").unwrap_err();
    assert_eq!(e.kmod_value(), 0);
    assert_eq!(
        e.to_string(),
        "failed to read coresize from /sys/module/fat"
    );
    fs::write(s.root.sys_module_attr(b"fat", "initstate"), "weird\n").unwrap();
    let e = live.initstate(b"fat").unwrap_err();
    assert_eq!(
        e.to_string(),
        "unknown /sys/module/fat/initstate: 'weird\n'"
    );
    assert!(e.reported());
}

#[test]
fn kernel_compression_attribute() {
    let s = sim();
    let live = LiveModules::new(&s.root);
    assert_eq!(live.kernel_compression(), procfs::KernelCompression::None);
    s.kernel
        .set_decompression(Some(modcore::compress::Compression::Xz));
    assert_eq!(live.kernel_compression(), procfs::KernelCompression::Xz);
}

#[test]
fn moddir_and_paths() {
    let root = Root::new("/fx");
    assert_eq!(
        root.moddir(None, "6.1"),
        PathBuf::from("/fx/lib/modules/6.1")
    );
    assert_eq!(
        root.moddir(Some(std::ffi::OsStr::new("/other")), "6.1"),
        PathBuf::from("/other/lib/modules/6.1")
    );
}
