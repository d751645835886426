//! Running the tools in-process on a fixture root, as a shell would run them: argv, stdout,
//! stderr and the exit status.

use crate::fixtures::System;
use modcore::kernel::Kernel;
use std::ffi::OsString;

/// What one tool run printed and returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub code: u8,
    pub out: String,
    pub err: String,
}

impl Outcome {
    /// Exit status 0, `out` on stdout, nothing on stderr.
    pub fn ok(out: &str) -> Outcome {
        Outcome {
            code: 0,
            out: out.into(),
            err: String::new(),
        }
    }

    fn of(code: u8, out: &[u8], err: &[u8]) -> Outcome {
        Outcome {
            code,
            out: String::from_utf8_lossy(out).into_owned(),
            err: String::from_utf8_lossy(err).into_owned(),
        }
    }
}

fn argv(prog: &str, args: &[&str]) -> Vec<OsString> {
    std::iter::once(prog)
        .chain(args.iter().copied())
        .map(OsString::from)
        .collect()
}

/// `modinfo ARGS` (with the fixture's simulated kernel for the release).
pub fn modinfo(sys: &System, args: &[&str]) -> Outcome {
    let k = sys.kernel();
    let env = modinfo::Env {
        root: sys.root(),
        kernel: &k,
    };
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code = modinfo::run(&argv("modinfo", args), &env, &mut out, &mut err);
    Outcome::of(code, &out, &err)
}

/// `insmod ARGS` as root on x86_64 against kernel `k`, at `now` (seconds, for autoclean).
pub fn insmod(sys: &System, k: &dyn Kernel, now: u64, args: &[&str]) -> Outcome {
    let env = insmod::Env {
        root: sys.root(),
        kernel: k,
        now,
        euid: Some(0),
        machine: Some("x86_64".into()),
    };
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code = insmod::run(&argv("insmod", args), &env, &mut out, &mut err);
    Outcome::of(code, &out, &err)
}

/// `modprobe ARGS` against kernel `k`, with the default environment.
pub fn modprobe(sys: &System, k: &dyn Kernel, args: &[&str]) -> Outcome {
    modprobe_with(sys, k, &modprobe::Env::default(), args)
}

/// `modprobe ARGS` against kernel `k` in environment `env`.
pub fn modprobe_with(sys: &System, k: &dyn Kernel, env: &modprobe::Env, args: &[&str]) -> Outcome {
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code = modprobe::run_args(
        &argv("modprobe", args),
        env,
        sys.root(),
        k,
        &mut out,
        &mut err,
    );
    Outcome::of(code, &out, &err)
}
