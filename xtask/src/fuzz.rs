//! `cargo xtask fuzz`: build the libFuzzer targets of `fuzz/` with `cargo fuzz` and run
//! each for a fixed time, then print one table row per target.
//!
//! * Needs `cargo-fuzz` (`cargo install cargo-fuzz --locked`). The toolchain may be
//!   stable: `RUSTC_BOOTSTRAP=1` is set for the `cargo fuzz` child processes only (the
//!   sanitizer and coverage flags it passes are unstable options).
//! * Each target runs on `fuzz/corpus/<target>/` (grown, not committed) plus the
//!   committed seeds in `fuzz/seeds/<target>/`. Crashes land in
//!   `fuzz/artifacts/<target>/`; "new crashes" counts the files that appeared there
//!   during this run. libFuzzer stops a target at its first crash.
//! * The inputs are capped at 256 KiB, every input must finish within 20 s and the
//!   process may not use more than 2.5 GiB (a decompressed image may legitimately reach
//!   `MAX_DECOMPRESSED_LEN`, 1 GiB); any single allocation above 1.1 GiB is a finding.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use crate::refs::workspace_root;

const USAGE: &str = "usage: cargo xtask fuzz [--seconds N] [--target T[,T...]] \
                     [--sanitizer address|none] [--seed N] [--build-only]";

struct Options {
    seconds: u64,
    targets: Option<Vec<String>>,
    sanitizer: String,
    /// libFuzzer's `-seed` (None: libFuzzer picks one from the clock).
    seed: Option<u64>,
    build_only: bool,
}

fn parse_args(args: &[String]) -> Result<Options, String> {
    let mut o = Options {
        seconds: 60,
        targets: None,
        sanitizer: "address".into(),
        seed: None,
        build_only: false,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = |name: &str| {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{name} needs a value\n{USAGE}"))
        };
        match a.as_str() {
            "--seconds" => {
                let v = value("--seconds")?;
                o.seconds = v
                    .parse()
                    .map_err(|_| format!("--seconds: not a number: {v:?}"))?;
            }
            "--target" => {
                let v = value("--target")?;
                o.targets = Some(v.split(',').map(str::to_string).collect());
            }
            "--sanitizer" | "-s" => {
                let v = value("--sanitizer")?;
                if v != "address" && v != "none" {
                    return Err(format!("--sanitizer: address or none, not {v:?}"));
                }
                o.sanitizer = v;
            }
            "--seed" => {
                let v = value("--seed")?;
                o.seed = Some(
                    v.parse()
                        .map_err(|_| format!("--seed: not a number: {v:?}"))?,
                );
            }
            "--build-only" => o.build_only = true,
            _ => return Err(format!("unexpected argument {a:?}\n{USAGE}")),
        }
    }
    Ok(o)
}

fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".into())
}

/// `cargo fuzz ...` in the workspace root, with the stable-toolchain escape hatch.
fn cargo_fuzz(root: &Path) -> Command {
    let mut c = Command::new(cargo());
    c.current_dir(root)
        .env("RUSTC_BOOTSTRAP", "1")
        .arg("fuzz")
        .stdin(Stdio::null());
    c
}

fn check_cargo_fuzz(root: &Path) -> Result<(), String> {
    let out = cargo_fuzz(root)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    match out {
        Ok(s) if s.success() => Ok(()),
        _ => Err("cargo-fuzz is not installed: run `cargo install cargo-fuzz --locked`".into()),
    }
}

fn list_targets(root: &Path) -> Result<Vec<String>, String> {
    let out = cargo_fuzz(root)
        .args(["list", "--fuzz-dir", "fuzz"])
        .output()
        .map_err(|e| format!("cargo fuzz list: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "cargo fuzz list failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect())
}

/// Where `cargo fuzz build` puts the binaries: `fuzz/target/<host triple>/release/`.
fn binary_dir(root: &Path) -> Result<PathBuf, String> {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let out = Command::new(&rustc)
        .arg("-vV")
        .output()
        .map_err(|e| format!("{rustc} -vV: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let host = text
        .lines()
        .find_map(|l| l.strip_prefix("host: "))
        .ok_or_else(|| format!("{rustc} -vV printed no host triple"))?;
    Ok(root.join("fuzz/target").join(host.trim()).join("release"))
}

fn artifacts(dir: &Path) -> BTreeSet<PathBuf> {
    std::fs::read_dir(dir)
        .map(|rd| rd.filter_map(Result::ok).map(|e| e.path()).collect())
        .unwrap_or_default()
}

/// The execution count from libFuzzer's output: the final statistics line if present,
/// else the largest `#N` progress counter.
fn executions(log: &str) -> u64 {
    let mut best = 0u64;
    for line in log.lines() {
        if let Some(n) = line.strip_prefix("stat::number_of_executed_units:") {
            if let Ok(n) = n.trim().parse::<u64>() {
                return n;
            }
        }
        if let Some(rest) = line.strip_prefix('#') {
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            if let Ok(n) = digits.parse::<u64>() {
                best = best.max(n);
            }
        }
        if let Some(rest) = line.strip_prefix("Done ") {
            if let Some(n) = rest.split_whitespace().next().and_then(|n| n.parse().ok()) {
                best = best.max(n);
            }
        }
    }
    best
}

struct Row {
    target: String,
    executions: u64,
    new_crashes: Vec<PathBuf>,
    ok: bool,
    secs: f64,
}

fn run_one(root: &Path, o: &Options, target: &str) -> Result<Row, String> {
    let fuzz = root.join("fuzz");
    let corpus = fuzz.join("corpus").join(target);
    let seeds = fuzz.join("seeds").join(target);
    let art = fuzz.join("artifacts").join(target);
    for d in [&corpus, &art] {
        std::fs::create_dir_all(d).map_err(|e| format!("{}: {e}", d.display()))?;
    }
    let before = artifacts(&art);
    // The binary `cargo fuzz build` made, run directly: `cargo fuzz run` would rebuild
    // whenever a modcore source changed in the meantime.
    let mut cmd = Command::new(binary_dir(root)?.join(target));
    cmd.current_dir(root).stdin(Stdio::null()).arg(&corpus);
    if seeds.is_dir() {
        cmd.arg(&seeds);
    }
    cmd.args([
        format!("-max_total_time={}", o.seconds),
        "-max_len=262144".into(),
        "-timeout=20".into(),
        "-rss_limit_mb=2560".into(),
        "-malloc_limit_mb=1100".into(),
        "-print_final_stats=1".into(),
        format!("-artifact_prefix={}/", art.display()),
    ]);
    if let Some(seed) = o.seed {
        cmd.arg(format!("-seed={seed}"));
    }
    let started = Instant::now();
    let out = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| format!("fuzz target {target}: {e}"))?;
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let log_path = fuzz.join("artifacts").join(format!("{target}.log"));
    let _ = std::fs::write(&log_path, &log);
    let new_crashes: Vec<PathBuf> = artifacts(&art).difference(&before).cloned().collect();
    Ok(Row {
        target: target.to_string(),
        executions: executions(&log),
        ok: out.status.success(),
        new_crashes,
        secs: started.elapsed().as_secs_f64(),
    })
}

/// Seconds per target in `cargo xtask test`.
pub const CI_SECONDS: u64 = 20;
/// libFuzzer seed in `cargo xtask test`.
pub const CI_SEED: u64 = 1;

/// The `cargo xtask test` step: every target for [`CI_SECONDS`]. Without cargo-fuzz the
/// step fails under CI (`CI` set; `.ci/run` installs it) and is skipped with a notice on a
/// developer machine.
pub fn run_ci(_args: &[String]) -> Result<(), String> {
    let root = workspace_root();
    if let Err(e) = check_cargo_fuzz(&root) {
        if std::env::var_os("CI").is_some() {
            return Err(e);
        }
        eprintln!("skipped: {e}");
        return Ok(());
    }
    // A fixed seed: a finding in CI can be reproduced with the same command.
    run(&[
        "--seconds".to_string(),
        CI_SECONDS.to_string(),
        "--seed".to_string(),
        CI_SEED.to_string(),
    ])
}

/// `cargo xtask fuzz`.
pub fn run(args: &[String]) -> Result<(), String> {
    let o = parse_args(args)?;
    let root = workspace_root();
    check_cargo_fuzz(&root)?;
    let all = list_targets(&root)?;
    let targets = match &o.targets {
        None => all,
        Some(t) => {
            if let Some(bad) = t.iter().find(|t| !all.contains(t)) {
                return Err(format!(
                    "no fuzz target {bad:?}; targets: {}",
                    all.join(", ")
                ));
            }
            t.clone()
        }
    };
    let started = Instant::now();
    eprintln!("==== cargo fuzz build -s {} ====", o.sanitizer);
    let status = cargo_fuzz(&root)
        .args(["build", "--fuzz-dir", "fuzz", "-s", &o.sanitizer])
        .status()
        .map_err(|e| format!("cargo fuzz build: {e}"))?;
    if !status.success() {
        return Err(format!("cargo fuzz build failed: {status}"));
    }
    eprintln!("built in {:.0}s", started.elapsed().as_secs_f64());
    if o.build_only {
        return Ok(());
    }

    let mut rows = Vec::new();
    for t in &targets {
        eprintln!("==== fuzz {t} for {}s ====", o.seconds);
        let row = run_one(&root, &o, t)?;
        eprintln!(
            "     {} executions, {} new crash file(s){}",
            row.executions,
            row.new_crashes.len(),
            if row.ok { "" } else { ", exited with failure" }
        );
        rows.push(row);
    }

    println!(
        "{:<16} {:>12} {:>8} {:>12}  status",
        "target", "executions", "secs", "new crashes"
    );
    for r in &rows {
        println!(
            "{:<16} {:>12} {:>8.0} {:>12}  {}",
            r.target,
            r.executions,
            r.secs,
            r.new_crashes.len(),
            if r.ok && r.new_crashes.is_empty() {
                "ok"
            } else {
                "FAILED"
            }
        );
    }
    let failed: Vec<&Row> = rows
        .iter()
        .filter(|r| !r.ok || !r.new_crashes.is_empty())
        .collect();
    for r in &failed {
        for c in &r.new_crashes {
            println!("  {}: {}", r.target, c.display());
        }
        println!(
            "  {}: log in fuzz/artifacts/{}.log; reproduce with \
             RUSTC_BOOTSTRAP=1 cargo fuzz run --fuzz-dir fuzz -s {} {} <file>",
            r.target, r.target, o.sanitizer, r.target
        );
    }
    if failed.is_empty() {
        Ok(())
    } else {
        Err(format!("{} fuzz target(s) found problems", failed.len()))
    }
}

#[cfg(test)]
#[allow(clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn counts_executions() {
        assert_eq!(
            executions("#2\tINITED cov: 1\n#4096\tpulse cov: 9\nDone 5000 runs in 2 second(s)\n"),
            5000
        );
        assert_eq!(
            executions("#128\tNEW\nstat::number_of_executed_units: 777\n"),
            777
        );
        assert_eq!(executions("==1== ERROR: libFuzzer: deadly signal\n"), 0);
    }

    #[test]
    fn arguments() {
        let a: Vec<String> = ["--seconds", "5", "--target", "a,b", "-s", "none"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let o = parse_args(&a).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(o.seconds, 5);
        assert_eq!(o.targets, Some(vec!["a".into(), "b".into()]));
        assert_eq!(o.sanitizer, "none");
        assert!(parse_args(&["--seconds".into()]).is_err());
        assert!(parse_args(&["-s".into(), "memory".into()]).is_err());
    }
}
