//! Project automation: `cargo xtask <command>`.
//!
//! Everything downloaded lives in a cache outside the repository (see `refs`).

mod bench;
mod compat;
mod fuzz;
mod refs;
mod vm;

use std::process::{Command, ExitCode, Stdio};
use std::time::Instant;

fn usage() -> ExitCode {
    eprintln!(
        "usage: cargo xtask <command>\n\
         commands:\n  \
         refs       download and unpack the reference kmod and kernel trees (cached)\n  \
         bench      time our tools against kmod 30 (paired runs, medians)\n  \
         \x20          [--pairs N] [--quick] [--tree LABEL[,LABEL]] [--ours DIR]\n  \
         compat     compare our tools' output with kmod 30 on the real trees\n  \
         \x20          [--tree LABEL[,LABEL]] [--keep] [--ours PATH]\n  \
         vm-test    run the guest scenarios on real kernels under qemu\n  \
         demo       show the tools on a real kernel under qemu\n  \
         fuzz       run the cargo-fuzz targets [--seconds N] [--target T] [-s address|none]\n  \
         test       run every test: fmt, clippy, cargo test, compat, ..."
    );
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(cmd) = args.first() else {
        return usage();
    };
    let rest = &args[1..];
    let result = match cmd.as_str() {
        "refs" => refs::ensure().map(|r| r.print_summary()),
        "bench" => bench::run(rest),
        "compat" => compat::run(rest),
        "vm-test" => vm::run_tests(rest),
        "demo" => vm::run_demo(rest),
        "fuzz" => fuzz::run(rest),
        "test" => run_test(rest),
        _ => return usage(),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask {cmd}: {e}");
            ExitCode::FAILURE
        }
    }
}

/// One step of `cargo xtask test`.
enum Step {
    /// `cargo <args>` in the workspace root.
    Cargo(&'static [&'static str]),
    /// An xtask command run in this process.
    Xtask(fn(&[String]) -> Result<(), String>),
}

/// The steps of `cargo xtask test`, in order. Append new suites here.
const TEST_STEPS: &[(&str, Step)] = &[
    (
        "cargo fmt --all -- --check",
        Step::Cargo(&["fmt", "--all", "--", "--check"]),
    ),
    (
        "cargo clippy --workspace --all-targets -- -D warnings",
        Step::Cargo(&[
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ]),
    ),
    (
        "cargo test --workspace",
        Step::Cargo(&["test", "--workspace"]),
    ),
    (
        "cargo xtask fuzz --seconds 20 --seed 1",
        Step::Xtask(fuzz::run_ci),
    ),
    ("cargo xtask compat", Step::Xtask(compat::run)),
    ("cargo xtask vm-test", Step::Xtask(vm::run_tests)),
];

/// `cargo xtask test`: every step in order; the first failure stops with an error.
fn run_test(args: &[String]) -> Result<(), String> {
    if let Some(a) = args.first() {
        return Err(format!("unexpected argument {a:?}"));
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let root = refs::workspace_root();
    let total = Instant::now();
    let mut times = Vec::new();
    for (i, (name, step)) in TEST_STEPS.iter().enumerate() {
        eprintln!("\n==== [{}/{}] {name} ====", i + 1, TEST_STEPS.len());
        let started = Instant::now();
        let result = match step {
            Step::Cargo(cargo_args) => Command::new(&cargo)
                .current_dir(&root)
                .args(*cargo_args)
                .stdin(Stdio::null())
                .status()
                .map_err(|e| format!("{cargo}: {e}"))
                .and_then(|s| {
                    if s.success() {
                        Ok(())
                    } else {
                        Err(s.to_string())
                    }
                }),
            Step::Xtask(f) => f(&[]),
        };
        let secs = started.elapsed().as_secs_f64();
        if let Err(e) = result {
            return Err(format!("step {name:?} failed after {secs:.0}s: {e}"));
        }
        times.push((*name, secs));
    }
    eprintln!("\n==== all {} steps passed ====", TEST_STEPS.len());
    for (name, secs) in times {
        eprintln!("  {secs:>7.1}s  {name}");
    }
    eprintln!("  {:>7.1}s  total", total.elapsed().as_secs_f64());
    Ok(())
}
