//! Project automation: `cargo xtask <command>`.
//!
//! Everything downloaded lives in a cache outside the repository (see `refs`).

mod compat;
mod refs;
mod vm;

use std::process::ExitCode;

fn usage() -> ExitCode {
    eprintln!(
        "usage: cargo xtask <command>\n\
         commands:\n  \
         refs       download and unpack the reference kmod and kernel trees (cached)\n  \
         compat     compare our tools' output with kmod 30 on the real trees\n  \
         vm-test    run the guest scenarios on real kernels under qemu\n  \
         demo       show the tools on a real kernel under qemu"
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
        "compat" => compat::run(rest),
        "vm-test" => vm::run_tests(rest),
        "demo" => vm::run_demo(rest),
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
