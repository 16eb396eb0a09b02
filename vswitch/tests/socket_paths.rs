//! Issue 11 finding 6: a live socket is never taken over (another vswitch's, another
//! program's), a stale one is replaced, two spellings of one path are one path, and port
//! sockets get explicit permissions whatever the umask.

mod bin_util;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use bin_util::{run_to_end, Running, DEADLINE};
use serde_json::Value;
use tempfile::TempDir;
use vswitch::{PortSpec, Switch, SwitchSettings};
use vswitch_channels::{ChannelId, Policy};

fn ch(n: u16) -> ChannelId {
    ChannelId::new(n).expect("channel")
}

fn connections(ctl: &std::path::Path, port: &str) -> u64 {
    let ctl = ctl.display().to_string();
    let out = run_to_end(&["ctl", "--ctl", &ctl, "--json", "stats"]);
    assert!(out.status.success(), "stats failed");
    let v: Value = serde_json::from_slice(&out.stdout).expect("json");
    v["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["name"] == port)
        .and_then(|p| p["port"]["connections"].as_u64())
        .expect("connections")
}

#[test]
fn second_instance_does_not_take_over_a_live_port_socket() {
    let d = TempDir::new().expect("tempdir");
    let sock = d.path().join("vm.sock");
    let ctl = d.path().join("ctl.sock");
    let first = Running::start(
        &[
            format!("--port=vm,socket={},channel=100", sock.display()),
            format!("--ctl={}", ctl.display()),
        ],
        &[sock.clone(), ctl.clone()],
    );
    let ino = std::fs::metadata(&sock).expect("stat").ino();
    let mut second = bin_util::bin()
        .args([
            "run".to_string(),
            format!("--port=vm,socket={},channel=200", sock.display()),
        ])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let start = Instant::now();
    let status = loop {
        if let Some(s) = second.try_wait().expect("try_wait") {
            break s;
        }
        if start.elapsed() > DEADLINE {
            let _ = second.kill();
            let _ = second.wait();
            panic!("the second instance took the live socket and kept running");
        }
        thread::sleep(Duration::from_millis(20));
    };
    let out = second.wait_with_output().expect("output");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("is in use"), "{stderr}");
    // The first instance still owns the socket: a VM connecting lands on it.
    assert_eq!(std::fs::metadata(&sock).expect("stat").ino(), ino);
    let before = connections(&ctl, "vm");
    let _vm = UnixStream::connect(&sock).expect("connect");
    let start = Instant::now();
    while connections(&ctl, "vm") == before {
        assert!(
            start.elapsed() < DEADLINE,
            "the first instance did not serve the VM"
        );
        thread::sleep(Duration::from_millis(50));
    }
    let (status, stderr) = first.stop_with(libc::SIGTERM);
    assert_eq!(status.code(), Some(0), "{stderr}");
}

#[test]
fn live_foreign_socket_is_not_unlinked_and_stale_one_is_replaced() {
    let d = TempDir::new().expect("tempdir");
    let path = d.path().join("foreign.sock");
    let foreign = UnixListener::bind(&path).expect("bind");
    let sw = Switch::new(SwitchSettings::default(), Policy::default());
    let e = sw
        .add_port(PortSpec::new("vm", &path, ch(100)))
        .expect_err("a live socket must not be taken over");
    assert!(e.to_string().contains("in use"), "{e}");
    // Still the other program's socket, still answering.
    let _c = UnixStream::connect(&path).expect("foreign socket still there");
    foreign.set_nonblocking(true).expect("nonblocking");
    assert!(
        foreign.accept().is_ok(),
        "the foreign listener lost its socket"
    );
    // Once that program is gone, its stale socket is replaced.
    drop(foreign);
    assert!(path.exists());
    sw.add_port(PortSpec::new("vm", &path, ch(100)))
        .expect("a stale socket is replaced");
    sw.shutdown();
}

#[test]
fn concurrent_add_port_of_one_path_spelled_two_ways_accepts_exactly_one() {
    let d = TempDir::new().expect("tempdir");
    std::fs::create_dir(d.path().join("sub")).expect("mkdir");
    let sw = Switch::new(SwitchSettings::default(), Policy::default());
    for i in 0..200 {
        let plain = d.path().join(format!("x{i}.sock"));
        let twisted = d.path().join(format!("./sub/../x{i}.sock"));
        let barrier = Arc::new(Barrier::new(2));
        let run = |name: String, path: std::path::PathBuf, channel: u16| {
            let (sw, barrier) = (sw.clone(), barrier.clone());
            thread::spawn(move || {
                barrier.wait();
                sw.add_port(PortSpec::new(name, path, ch(channel))).is_ok()
            })
        };
        let a = run(format!("a{i}"), plain, 100);
        let b = run(format!("b{i}"), twisted, 200);
        let ok = [a.join().expect("join"), b.join().expect("join")];
        assert_eq!(
            ok.iter().filter(|&&x| x).count(),
            1,
            "run {i}: both spellings of one socket were accepted ({ok:?})"
        );
    }
    sw.shutdown();
}

#[test]
fn port_socket_is_0660_under_umask_000_or_as_configured() {
    // SAFETY: umask has no memory-safety preconditions; nextest runs this test in its own
    // process, so the change affects no other test.
    unsafe { libc::umask(0) };
    let d = TempDir::new().expect("tempdir");
    let sw = Switch::new(SwitchSettings::default(), Policy::default());
    let a = d.path().join("a.sock");
    sw.add_port(PortSpec::new("a", &a, ch(100))).expect("add");
    let mode = std::fs::metadata(&a).expect("stat").permissions().mode() & 0o777;
    assert_eq!(mode, 0o660, "port socket mode {mode:o} under umask 000");
    let b = d.path().join("b.sock");
    let mut spec = PortSpec::new("b", &b, ch(100));
    spec.socket_mode = Some(0o600);
    sw.add_port(spec).expect("add");
    let mode = std::fs::metadata(&b).expect("stat").permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "configured mode");
    sw.shutdown();
}
