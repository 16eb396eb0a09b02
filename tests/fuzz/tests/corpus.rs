//! Replays every committed fuzz input (tests/fuzz/corpus/<target>/: the seeds, what fuzzing
//! found and kept, and every input that once crashed a target) through the harness the fuzz
//! targets run, so that each one is an ordinary regression test of the default test run.

use std::fs;
use std::path::PathBuf;
use std::time::{Duration, Instant};

fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(target);
    let mut files: Vec<_> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("corpus {}: {e}", dir.display()))
        .map(|e| e.expect("corpus entry").path())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "corpus {} is empty", dir.display());
    files
        .into_iter()
        .map(|p| {
            let name = p
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            (name, fs::read(&p).expect("corpus file"))
        })
        .collect()
}

fn replay(target: &str, run: impl Fn(&[u8])) {
    for (name, data) in corpus(target) {
        eprintln!("{target}/{name}");
        run(&data);
    }
}

#[test]
fn desc_chain_corpus() {
    replay("desc_chain", vswitch_fuzz::desc::run);
}

#[test]
fn desc_chain_seeds_reach_the_datapath() {
    // The seeds are what fuzzing starts from: they must get frames through both walkers.
    for (name, data) in corpus("desc_chain") {
        if !name.starts_with("seed-") {
            continue;
        }
        let o = vswitch_fuzz::desc::run_counted(&data);
        assert!(o.frames > 0 && o.delivered > 0, "{name}: {o:?}");
    }
}

#[test]
fn frame_corpus() {
    replay("frame", vswitch_fuzz::frame::run);
}

#[test]
fn vhost_user_corpus() {
    // The health check (a well-behaved frontend attaches and loops a frame back) after each.
    replay("vhost_user", |d| {
        vswitch_fuzz::vhost_user::run_checked(d, true)
    });
}

#[test]
fn vhost_user_traffic_seed_reaches_the_datapath() {
    let (_, data) = corpus("vhost_user")
        .into_iter()
        .find(|(n, _)| n == "seed-traffic")
        .expect("seed-traffic");
    let before = vswitch_fuzz::vhost_user::port_stats();
    vswitch_fuzz::vhost_user::run_checked(&data, false);
    // The port counts the frame on its own thread: wait for it (bounded).
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut after = vswitch_fuzz::vhost_user::port_stats();
    while after.from_guest_frames == before.from_guest_frames && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
        after = vswitch_fuzz::vhost_user::port_stats();
    }
    assert!(
        after.connections > before.connections,
        "{before:?} -> {after:?}"
    );
    assert!(
        after.from_guest_frames > before.from_guest_frames,
        "{before:?} -> {after:?}"
    );
}

#[test]
fn ctl_request_corpus() {
    replay("ctl_request", vswitch_fuzz::ctl_request::run);
}

#[test]
fn config_corpus() {
    replay("config", vswitch_fuzz::config_file::run);
}
