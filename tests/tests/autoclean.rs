//! Autoclean: `insmod -k` records, `rmmod -a/--all [--idle=SECONDS]` sweeps. Time is
//! passed in (`Env::now`), so idle periods are simulated without sleeping.
#![allow(clippy::unwrap_used, clippy::panic)]

use std::ffi::{CString, OsString};
use std::fs::File;

use modcore::autoclean::{self, Registry};
use modcore::kernel::{Errno, Kernel, LoadFlags};
use tests::fixtures::System;
use tests::simkernel::SimKernel;
use tests::tools;

const KVER: &str = "6.1.0-test";

use tests::synth::named as m;

fn tree() -> System {
    let sys = System::new(KVER);
    sys.module("kernel/fs/fat/fat.ko", m("fat").export("fat_get"))
        .module("kernel/fs/fat/vfat.ko", m("vfat").needs("fat_get"))
        .module("kernel/fs/nls/nls_cp437.ko", m("nls_cp437"))
        .module("kernel/fs/nls/nls_utf8.ko", m("nls_utf8"));
    sys.depmod();
    sys
}

fn insmod_k(sys: &System, k: &SimKernel, rel: &str, now: u64) {
    let path = sys.moddir().join(rel);
    let r = tools::insmod(sys, k, now, &["-k", &path.to_string_lossy()]);
    assert_eq!(r.code, 0, "{}", r.err);
}

fn load_plain(sys: &System, k: &SimKernel, rel: &str) {
    let f = File::open(sys.moddir().join(rel)).unwrap();
    k.finit_module(&f, &CString::default(), LoadFlags::default())
        .unwrap();
}

/// `rmmod ARGS` at time `now`: (exit code, stderr).
fn rmmod(sys: &System, k: &SimKernel, args: &[&str], now: u64) -> (u8, String) {
    let env = rmmod::Env {
        root: sys.root(),
        kernel: k,
        now,
        euid: Some(0),
    };
    let mut argv = vec![OsString::from("rmmod")];
    argv.extend(args.iter().map(OsString::from));
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code = rmmod::run(&argv, &env, &mut out, &mut err);
    assert!(out.is_empty());
    (code, String::from_utf8_lossy(&err).into_owned())
}

fn recorded(sys: &System) -> Vec<String> {
    let text = std::fs::read_to_string(sys.path("/run/kmod-rs/autoclean")).unwrap_or_default();
    autoclean::parse(&text)
        .into_iter()
        .map(|e| e.name)
        .collect()
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

#[test]
fn idle_time_must_pass_between_two_sweeps() {
    let sys = tree();
    let k = sys.kernel();
    insmod_k(&sys, &k, "kernel/fs/nls/nls_cp437.ko", 1_000);

    // First sweep: unused for the first time; the idle clock starts.
    assert_eq!(rmmod(&sys, &k, &["-a"], 1_010), (0, String::new()));
    assert_eq!(k.loaded(), ["nls_cp437"]);
    // 40 s later: not yet (default --idle=60).
    assert_eq!(rmmod(&sys, &k, &["--all"], 1_050), (0, String::new()));
    assert_eq!(k.loaded(), ["nls_cp437"]);
    // 60 s after the first sweep: gone, and forgotten.
    assert_eq!(rmmod(&sys, &k, &["--all"], 1_070), (0, String::new()));
    assert!(k.loaded().is_empty());
    assert!(recorded(&sys).is_empty());
}

#[test]
fn custom_idle_and_verbose_output() {
    let sys = tree();
    let k = sys.kernel();
    insmod_k(&sys, &k, "kernel/fs/nls/nls_cp437.ko", 0);
    let (code, err) = rmmod(&sys, &k, &["-a", "--idle=10", "-vvv"], 100);
    assert_eq!(code, 0);
    assert_eq!(
        err,
        "rmmod: INFO: autoclean: nls_cp437 is unused; it goes in 10 s if it stays unused\n"
    );
    let (code, err) = rmmod(&sys, &k, &["-a", "--idle", "10", "-vv"], 110);
    assert_eq!(code, 0);
    assert_eq!(err, "rmmod: NOTICE: autoclean: removed nls_cp437\n");
}

#[test]
fn idle_zero_removes_a_chain_at_once() {
    let sys = tree();
    let k = sys.kernel();
    insmod_k(&sys, &k, "kernel/fs/fat/fat.ko", 0);
    insmod_k(&sys, &k, "kernel/fs/fat/vfat.ko", 0);
    assert_eq!(rmmod(&sys, &k, &["-a", "--idle=0"], 5), (0, String::new()));
    assert!(k.loaded().is_empty());
    assert!(recorded(&sys).is_empty());
}

#[test]
fn a_chain_goes_in_two_idle_periods() {
    let sys = tree();
    let k = sys.kernel();
    insmod_k(&sys, &k, "kernel/fs/fat/fat.ko", 0);
    insmod_k(&sys, &k, "kernel/fs/fat/vfat.ko", 0);
    rmmod(&sys, &k, &["-a"], 100); // vfat idle from 100; fat in use
    rmmod(&sys, &k, &["-a"], 160); // vfat goes; fat was in use until now
    assert_eq!(k.loaded(), ["fat"]);
    rmmod(&sys, &k, &["-a"], 200);
    assert_eq!(k.loaded(), ["fat"]);
    rmmod(&sys, &k, &["-a"], 220);
    assert!(k.loaded().is_empty());
}

#[test]
fn use_restarts_the_idle_time() {
    let sys = tree();
    let k = sys.kernel();
    insmod_k(&sys, &k, "kernel/fs/nls/nls_cp437.ko", 0);
    rmmod(&sys, &k, &["-a"], 0); // idle since 0
    assert!(k.get("nls_cp437")); // mounted
    let (_, err) = rmmod(&sys, &k, &["-a", "-vvv"], 30);
    assert_eq!(err, "rmmod: INFO: autoclean: nls_cp437 is in use; kept\n");
    assert!(k.put("nls_cp437"));
    rmmod(&sys, &k, &["-a"], 70); // idle again, since 70
    assert_eq!(k.loaded(), ["nls_cp437"]);
    rmmod(&sys, &k, &["-a"], 129);
    assert_eq!(k.loaded(), ["nls_cp437"]);
    rmmod(&sys, &k, &["-a"], 130);
    assert!(k.loaded().is_empty());
}

#[test]
fn modules_loaded_without_k_are_never_touched() {
    let sys = tree();
    let k = sys.kernel();
    load_plain(&sys, &k, "kernel/fs/nls/nls_utf8.ko");
    insmod_k(&sys, &k, "kernel/fs/nls/nls_cp437.ko", 0);
    rmmod(&sys, &k, &["-a", "--idle=0"], 1);
    assert_eq!(k.loaded(), ["nls_utf8"]);
    rmmod(&sys, &k, &["-a", "--idle=0"], 1_000_000);
    assert_eq!(k.loaded(), ["nls_utf8"]);
}

#[test]
fn stale_entries_are_dropped() {
    let sys = tree();
    let k = sys.kernel();
    insmod_k(&sys, &k, "kernel/fs/nls/nls_cp437.ko", 0);
    insmod_k(&sys, &k, "kernel/fs/nls/nls_utf8.ko", 0);
    // Removed by hand, and reloaded without -k (it gets another address).
    assert_eq!(rmmod(&sys, &k, &["nls_cp437", "nls_utf8"], 1).0, 0);
    load_plain(&sys, &k, "kernel/fs/nls/nls_utf8.ko");
    let (code, err) = rmmod(&sys, &k, &["-a", "--idle=0", "-vvv"], 2);
    assert_eq!(code, 0);
    assert_eq!(
        err,
        "rmmod: INFO: autoclean: nls_cp437 is no longer loaded; forgotten\n\
         rmmod: INFO: autoclean: nls_utf8 is no longer loaded; forgotten\n"
    );
    assert_eq!(k.loaded(), ["nls_utf8"]);
    assert!(recorded(&sys).is_empty());
}

#[test]
fn nothing_recorded_means_nothing_to_do() {
    let sys = tree();
    let k = sys.kernel();
    load_plain(&sys, &k, "kernel/fs/nls/nls_utf8.ko");
    assert_eq!(rmmod(&sys, &k, &["-a", "--idle=0"], 1), (0, String::new()));
    assert!(!sys.path("/run/kmod-rs").exists());
    assert_eq!(k.loaded(), ["nls_utf8"]);
}

#[test]
fn a_failed_removal_is_reported_and_kept() {
    let sys = tree();
    let k = sys.kernel();
    insmod_k(&sys, &k, "kernel/fs/nls/nls_cp437.ko", 0);
    k.fail_delete("nls_cp437", Errno::EPERM);
    let (code, err) = rmmod(&sys, &k, &["-a", "--idle=0"], 1);
    assert_eq!(code, 1);
    assert_eq!(
        err,
        "rmmod: ERROR: could not remove 'nls_cp437': Operation not permitted\n"
    );
    assert_eq!(recorded(&sys), ["nls_cp437"]);
}

#[test]
fn concurrent_records_and_sweeps_lose_nothing() {
    let sys = tree();
    let k = sys.kernel();
    // Many processes (threads here, each with its own open file and flock) record at
    // once while sweeps run; every name must end up recorded.
    let names: Vec<String> = (0..24).map(|i| format!("m{i}")).collect();
    std::thread::scope(|s| {
        for n in &names {
            let root = sys.root().clone();
            s.spawn(move || autoclean::record(&root, n, 5).unwrap());
        }
        for _ in 0..4 {
            let root = sys.root().clone();
            let k = &k;
            s.spawn(move || {
                // Nothing named m* is loaded, so a sweep would drop them: hold the lock
                // and only read, as a reader that must see whole files.
                let reg = Registry::open(&root).unwrap();
                let _ = reg.entries().len();
                let _ = k.loaded();
            });
        }
    });
    assert_eq!(sorted(recorded(&sys)), sorted(names));
    // The registry file is always complete: no temporary files are left behind.
    let leftovers: Vec<String> = std::fs::read_dir(sys.path("/run/kmod-rs"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(sorted(leftovers), ["autoclean", "autoclean.lock"]);
}

#[test]
fn concurrent_sweeps_remove_each_module_once() {
    let sys = tree();
    let k = sys.kernel();
    insmod_k(&sys, &k, "kernel/fs/fat/fat.ko", 0);
    insmod_k(&sys, &k, "kernel/fs/fat/vfat.ko", 0);
    insmod_k(&sys, &k, "kernel/fs/nls/nls_cp437.ko", 0);
    std::thread::scope(|s| {
        for _ in 0..6 {
            let (sys, k) = (&sys, &k);
            s.spawn(move || {
                let (code, err) = rmmod(sys, k, &["-a", "--idle=0"], 10);
                assert_eq!((code, err.as_str()), (0, ""));
            });
        }
    });
    assert!(k.loaded().is_empty());
    let deletes = k
        .calls()
        .into_iter()
        .filter(|c| matches!(c, tests::simkernel::Call::DeleteModule { .. }))
        .count();
    assert_eq!(deletes, 3);
}

/// `modprobe -k vfat` records vfat and the fat it pulled in; a module loaded without -k is
/// never swept; `rmmod --all --idle=0` removes the recorded ones, holder first.
#[test]
fn modprobe_k_records_every_module_it_loads() {
    let sys = tree();
    let k = sys.kernel();
    load_plain(&sys, &k, "kernel/fs/nls/nls_utf8.ko");
    let r = tools::modprobe(&sys, &k, &["-k", "vfat"]);
    assert_eq!(r.code, 0, "{}", r.err);
    assert_eq!(sorted(recorded(&sys)), vec!["fat", "vfat"]);
    let (code, err) = rmmod(&sys, &k, &["--all", "--idle=0"], 1000);
    assert_eq!(code, 0, "{err}");
    let mut live = k.loaded();
    live.sort();
    assert_eq!(
        live,
        vec!["nls_utf8".to_string()],
        "only the -k modules went"
    );
    assert!(recorded(&sys).is_empty());
}
