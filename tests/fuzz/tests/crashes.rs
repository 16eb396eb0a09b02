//! Inputs that crashed (or still crash) a fuzz target, kept in tests/fuzz/crashes/<target>/:
//! each is replayed in a child process (a fault such as SIGBUS kills only the child) and must
//! leave it exiting normally.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Set in the child: `target=path` of the input to replay.
const REPLAY_ENV: &str = "VSWITCH_FUZZ_REPLAY";

fn run(target: &str, data: &[u8]) {
    match target {
        "desc_chain" => vswitch_fuzz::desc::run(data),
        "frame" => vswitch_fuzz::frame::run(data),
        "vhost_user" => vswitch_fuzz::vhost_user::run_checked(data, true),
        "ctl_request" => vswitch_fuzz::ctl_request::run(data),
        "config" => vswitch_fuzz::config_file::run(data),
        other => panic!("unknown fuzz target {other}"),
    }
}

/// In the child: replays the one input named in the environment (does nothing otherwise).
#[test]
fn replay_one() {
    let Ok(spec) = std::env::var(REPLAY_ENV) else {
        return;
    };
    let (target, path) = spec.split_once('=').expect("target=path");
    let data = std::fs::read(path).expect("crash input");
    run(target, &data);
}

fn inputs() -> Vec<(String, PathBuf)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("crashes");
    let mut out = Vec::new();
    for t in std::fs::read_dir(&root).expect("crashes dir") {
        let t = t.expect("entry").path();
        let target = t
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        for f in std::fs::read_dir(&t).expect("target dir") {
            out.push((target.clone(), f.expect("entry").path()));
        }
    }
    out.sort();
    out
}

#[test]
fn crash_inputs_no_longer_crash() {
    let exe = std::env::current_exe().expect("test binary");
    let mut failed = Vec::new();
    for (target, path) in inputs() {
        let out = Command::new(&exe)
            .args([
                "--exact",
                "replay_one",
                "--nocapture",
                "--test-threads",
                "1",
            ])
            .env(REPLAY_ENV, format!("{target}={}", path.display()))
            .output()
            .expect("child test process");
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            let tail: Vec<&str> = err.lines().rev().take(5).collect();
            failed.push(format!(
                "{target}/{}: {} ({})",
                path.file_name().unwrap_or_default().to_string_lossy(),
                out.status,
                tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
            ));
        }
    }
    assert!(
        failed.is_empty(),
        "crash inputs still crash:\n{}",
        failed.join("\n")
    );
}
