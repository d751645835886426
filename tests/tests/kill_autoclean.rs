//! Crash safety of the autoclean registry: a process recording modules one after the
//! other (what `insmod -k`/`modprobe -k` do after each load) is killed with SIGKILL at
//! random points; the registry is afterwards always a complete file holding exactly the
//! records made before the kill (or one more), and the lock never stays taken.
//!
//! The recording process is this test binary itself, re-run with `KMODRS_RECORDER` set.

#![allow(clippy::unwrap_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use modcore::autoclean::{self, REGISTRY_FILE};
use modcore::root::Root;
use tests::rng::Rng;

const CHILD_ENV: &str = "KMODRS_RECORDER";
const PER_CHILD: usize = 40;

/// In the child: record `PER_CHILD` more modules, each in its own locked
/// read-modify-write, continuing the numbering from what is already recorded.
#[test]
fn recorder_child() {
    let Some(dir) = std::env::var_os(CHILD_ENV) else {
        return; // only meaningful as the child of the kill test
    };
    let root = Root::new(PathBuf::from(dir));
    let start = recorded(&root).len();
    for i in start..start + PER_CHILD {
        autoclean::record(&root, &format!("m{i}"), i as u64).unwrap();
    }
}

fn registry(root: &Root) -> PathBuf {
    autoclean::registry_dir(root).join(REGISTRY_FILE)
}

fn recorded(root: &Root) -> Vec<String> {
    match std::fs::read_to_string(registry(root)) {
        Ok(t) => autoclean::parse(&t).into_iter().map(|e| e.name).collect(),
        Err(_) => Vec::new(),
    }
}

fn spawn_recorder(dir: &Path) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args(["recorder_child", "--exact", "--test-threads=1"])
        .env(CHILD_ENV, dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

#[test]
fn sigkill_leaves_the_registry_whole() {
    let dir = tempfile::tempdir().unwrap();
    let root = Root::new(dir.path());

    // How long one child takes for its PER_CHILD records.
    let started = Instant::now();
    let st = spawn_recorder(dir.path()).wait().unwrap();
    assert!(st.success());
    let span = started.elapsed().as_micros() as u64;
    assert_eq!(recorded(&root).len(), PER_CHILD);

    let mut rng = Rng(span | 1);
    let (mut kills, mut grew, mut same) = (0, 0, 0);
    for k in 0..100 {
        let before = recorded(&root).len();
        let mut child = spawn_recorder(dir.path());
        std::thread::sleep(Duration::from_micros(rng.below_u64(span)));
        let _ = child.kill();
        let _ = child.wait();
        kills += 1;

        let text = std::fs::read_to_string(registry(&root)).unwrap();
        let entries = autoclean::parse(&text);
        // A complete file: it is exactly what render writes for its entries.
        assert_eq!(
            autoclean::render(&entries),
            text,
            "kill {k}: the registry is not a complete file"
        );
        // Exactly the records made so far: m0, m1, ... without a gap or a loss.
        let names: Vec<String> = entries.iter().map(|e| e.name.clone()).collect();
        let want: Vec<String> = (0..names.len()).map(|i| format!("m{i}")).collect();
        assert_eq!(names, want, "kill {k}");
        assert!(names.len() >= before, "kill {k}: records were lost");
        if names.len() > before {
            grew += 1;
        } else {
            same += 1;
        }
    }
    // The lock is free: one more record completes.
    let (tx, rx) = mpsc::channel();
    let r = root.clone();
    std::thread::spawn(move || {
        let _ = tx.send(autoclean::record(&r, "last", 1).is_ok());
    });
    assert_eq!(
        rx.recv_timeout(Duration::from_secs(20)),
        Ok(true),
        "the registry lock stayed taken after the kills"
    );
    let leftovers = std::fs::read_dir(autoclean::registry_dir(&root))
        .unwrap()
        .flatten()
        .filter(|e| {
            let n = e.file_name();
            n != REGISTRY_FILE && n != autoclean::LOCK_FILE
        })
        .count();
    println!(
        "autoclean kill test: {kills} kills, {grew} after some records, {same} before any; \
         {} entries; {leftovers} temporary files left behind",
        recorded(&root).len()
    );
}
