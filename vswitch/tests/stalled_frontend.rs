//! Issue 11 finding 4: a frontend that stalls on the control channel (half a message header,
//! or never reading replies) costs only its own connection: it is disconnected after the
//! relay's timeout (counted), and control operations on any port and SIGTERM complete while it
//! is attached. The switch runs as a separate process; every wait in the test is bounded.

mod bin_util;

use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use bin_util::{run_to_end, Running};
use serde_json::Value;
use tempfile::TempDir;

/// Longest the test waits for the switch to drop a stalled frontend (its timeout is 5 s).
const DROP_WITHIN: Duration = Duration::from_secs(30);

struct Switch {
    _dir: TempDir,
    dir: PathBuf,
    ctl: PathBuf,
    run: Running,
}

impl Switch {
    /// Ports a, b, c on channel 100 and the control API.
    fn start() -> Switch {
        let d = TempDir::new().expect("tempdir");
        let dir = d.path().to_path_buf();
        let ctl = dir.join("ctl.sock");
        let mut args = vec![
            format!("--ctl={}", ctl.display()),
            "--log-level=warn".into(),
        ];
        let mut ready = vec![ctl.clone()];
        for n in ["a", "b", "c"] {
            let sock = dir.join(format!("{n}.sock"));
            args.push(format!("--port={n},socket={},channel=100", sock.display()));
            ready.push(sock);
        }
        let run = Running::start(&args, &ready);
        Switch {
            _dir: d,
            dir,
            ctl,
            run,
        }
    }

    fn sock(&self, port: &str) -> PathBuf {
        self.dir.join(format!("{port}.sock"))
    }

    /// `vswitch ctl` with a bounded wait: (exit code, stdout, stderr).
    fn ctl(&self, args: &[&str]) -> (i32, String, String) {
        let ctl = self.ctl.display().to_string();
        let mut full = vec!["ctl", "--ctl", &ctl, "--timeout", "20"];
        full.extend_from_slice(args);
        let out = run_to_end(&full);
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    fn ctl_ok(&self, args: &[&str]) {
        let (code, _, err) = self.ctl(args);
        assert_eq!(code, 0, "ctl {args:?} did not complete: {err}");
    }

    /// The port's `control_timeouts` counter (0 where the switch has none).
    fn control_timeouts(&self, port: &str) -> u64 {
        let (code, out, err) = self.ctl(&["--json", "stats"]);
        assert_eq!(code, 0, "stats: {err}");
        let v: Value = serde_json::from_str(&out).expect("stats json");
        v["ports"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|p| p["name"] == port)
            .map(|p| p["port"]["control_timeouts"].as_u64().unwrap_or(0))
            .unwrap_or_else(|| panic!("no port {port}: {out}"))
    }
}

/// Connects and sends the first 5 bytes of a GET_FEATURES header, then nothing.
fn half_header(path: &Path) -> UnixStream {
    let mut s = UnixStream::connect(path).expect("connect");
    s.write_all(&[1, 0, 0, 0, 1]).expect("write");
    s
}

/// Connects and sends SET_OWNER, then GET_FEATURES requests until the switch stops taking
/// them (its replies are never read).
fn never_reads(path: &Path) -> UnixStream {
    let mut s = UnixStream::connect(path).expect("connect");
    let msg = |req: u32| {
        let mut m = req.to_le_bytes().to_vec();
        m.extend_from_slice(&1u32.to_le_bytes()); // version 1
        m.extend_from_slice(&0u32.to_le_bytes()); // no payload
        m
    };
    s.write_all(&msg(3)).expect("SET_OWNER");
    s.set_nonblocking(true).expect("nonblocking");
    let get = msg(1);
    let start = Instant::now();
    let mut blocked_since: Option<Instant> = None;
    // Until writes have been refused for a while: the relay stopped reading.
    while start.elapsed() < DROP_WITHIN {
        match s.write(&get) {
            Ok(_) => blocked_since = None,
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                let since = *blocked_since.get_or_insert_with(Instant::now);
                if since.elapsed() > Duration::from_millis(500) {
                    break;
                }
                thread::sleep(Duration::from_millis(10));
            }
            Err(_) => break, // already dropped
        }
    }
    s.set_nonblocking(false).expect("blocking");
    s
}

/// True if the switch closes `s` within `within` (reading and discarding what it sent).
fn closed_within(s: &mut UnixStream, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        s.set_read_timeout(Some(left)).expect("timeout");
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return false
            }
            Err(_) => return true,
        }
    }
}

#[test]
fn half_header_frontend_is_disconnected_after_the_timeout() {
    let sw = Switch::start();
    let mut s = half_header(&sw.sock("a"));
    assert!(
        closed_within(&mut s, DROP_WITHIN),
        "a frontend stalled mid-header was not disconnected"
    );
    assert_eq!(sw.control_timeouts("a"), 1);
    assert_eq!(sw.control_timeouts("b"), 0);
    let (status, stderr) = sw.run.stop_with(libc::SIGTERM);
    assert_eq!(status.code(), Some(0), "{stderr}");
    let lines = stderr
        .lines()
        .filter(|l| l.contains("a: frontend disconnected"))
        .count();
    assert_eq!(lines, 1, "one log line for the stalled frontend:\n{stderr}");
}

#[test]
fn frontend_that_never_reads_replies_is_disconnected_after_the_timeout() {
    let sw = Switch::start();
    let mut s = never_reads(&sw.sock("b"));
    // Reading would unblock the switch: wait for the counter first, reading nothing.
    let start = Instant::now();
    while sw.control_timeouts("b") == 0 {
        assert!(
            start.elapsed() < DROP_WITHIN,
            "a frontend that never reads its replies was not disconnected"
        );
        thread::sleep(Duration::from_millis(200));
    }
    assert!(closed_within(&mut s, DROP_WITHIN), "connection still open");
    assert_eq!(sw.control_timeouts("b"), 1);
    let (status, stderr) = sw.run.stop_with(libc::SIGTERM);
    assert_eq!(status.code(), Some(0), "{stderr}");
}

#[test]
fn stalled_frontends_block_no_control_operation_and_no_shutdown() {
    let sw = Switch::start();
    let _a = half_header(&sw.sock("a"));
    let _b = never_reads(&sw.sock("b"));
    // Removing the stalled port itself, while its frontend is stalled.
    sw.ctl_ok(&["remove-port", "a"]);
    // Other ports and new ports, while b's frontend is stalled.
    sw.ctl_ok(&["associate", "c", "200"]);
    let d = sw.sock("d");
    let spec = format!("d,socket={},channel=100", d.display());
    sw.ctl_ok(&["add-port", &spec]);
    let _d = half_header(&d);
    sw.ctl_ok(&["remove-port", "d"]);
    // And SIGTERM, with b still stalled (run_to_end's own deadline bounds the wait).
    let _c = half_header(&sw.sock("c"));
    let (status, stderr) = sw.run.stop_with(libc::SIGTERM);
    assert_eq!(status.code(), Some(0), "{stderr}");
}
