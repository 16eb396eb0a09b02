//! The control API of a running `vswitch`: through `vswitch ctl` and through the raw socket.

mod bin_util;

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use bin_util::{run_to_end, Running, DEADLINE};
use serde_json::{json, Value};
use tempfile::TempDir;

struct Fixture {
    _dir: TempDir,
    dir: PathBuf,
    ctl: PathBuf,
    sw: Option<Running>,
}

impl Fixture {
    /// vm1 and vm2 on channel 100, vm3 on 200, control API on.
    fn start() -> Fixture {
        let d = TempDir::new().expect("tempdir");
        let dir = d.path().to_path_buf();
        let ctl = dir.join("ctl.sock");
        let socks: Vec<PathBuf> = ["a", "b", "c"]
            .iter()
            .map(|n| dir.join(format!("{n}.sock")))
            .collect();
        let args = vec![
            format!("--port=vm1,socket={},channel=100", socks[0].display()),
            format!(
                "--port=vm2,socket={},channel=100,mac=52:54:00:00:00:02",
                socks[1].display()
            ),
            format!("--port=vm3,socket={},channel=200", socks[2].display()),
            format!("--ctl={}", ctl.display()),
            "--log-level=warn".into(),
        ];
        let mut ready = socks.clone();
        ready.push(ctl.clone());
        let sw = Running::start(&args, &ready);
        Fixture {
            _dir: d,
            dir,
            ctl,
            sw: Some(sw),
        }
    }

    /// [`Fixture::ctl`] run in directory `cwd`.
    fn ctl_in(&self, cwd: &Path, args: &[&str]) -> (i32, String, String) {
        let out = bin_util::bin()
            .current_dir(cwd)
            .arg("ctl")
            .arg(format!("--ctl={}", self.ctl.display()))
            .args(args)
            .stdin(std::process::Stdio::null())
            .output()
            .expect("run vswitch ctl");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// `vswitch ctl --ctl PATH ARGS`: (exit code, stdout, stderr).
    fn ctl(&self, args: &[&str]) -> (i32, String, String) {
        let mut full = vec!["ctl", "--ctl"];
        let ctl = self.ctl.display().to_string();
        full.push(&ctl);
        full.extend_from_slice(args);
        let out = run_to_end(&full);
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// `vswitch ctl --json ARGS`, expecting success and JSON on stdout.
    fn ctl_json(&self, args: &[&str]) -> Value {
        let mut json = vec!["--json"];
        json.extend_from_slice(args);
        let (code, out, err) = self.ctl(&json);
        assert_eq!(code, 0, "ctl {args:?} failed: {err}");
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("ctl {args:?}: {e}: {out}"))
    }

    fn connect(&self) -> (BufReader<UnixStream>, UnixStream) {
        let s = UnixStream::connect(&self.ctl).expect("connect ctl");
        s.set_read_timeout(Some(DEADLINE)).expect("timeout");
        (BufReader::new(s.try_clone().expect("clone")), s)
    }

    fn stop(mut self) {
        let sw = self.sw.take().expect("running");
        let (status, stderr) = sw.stop_with(libc::SIGTERM);
        assert_eq!(status.code(), Some(0), "stderr:\n{stderr}");
        assert!(!self.ctl.exists(), "control socket left behind");
    }
}

/// One raw request line, one response.
fn raw(r: &mut BufReader<UnixStream>, w: &mut UnixStream, line: &[u8]) -> Value {
    let mut buf = line.to_vec();
    buf.push(b'\n');
    w.write_all(&buf).expect("write");
    let mut resp = String::new();
    r.read_line(&mut resp).expect("read");
    serde_json::from_str(&resp).unwrap_or_else(|e| panic!("{e}: {resp:?}"))
}

fn names_on(channels: &Value, svid: u64) -> Vec<String> {
    channels["channels"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| c["channel"] == svid)
        .flat_map(|c| c["ports"].as_array().cloned().unwrap_or_default())
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect()
}

#[test]
fn lists_ports_and_moves_vms_between_channels() {
    let f = Fixture::start();
    let mode = std::fs::metadata(&f.ctl)
        .expect("stat")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "control socket mode {mode:o}");

    let ports = f.ctl_json(&["ports"]);
    let list = ports.as_array().expect("array");
    let mut names: Vec<&str> = list.iter().filter_map(|p| p["name"].as_str()).collect();
    names.sort_unstable();
    assert_eq!(names, ["vm1", "vm2", "vm3"]);
    let vm2 = list.iter().find(|p| p["name"] == "vm2").expect("vm2");
    assert_eq!(vm2["channel"], 100);
    assert_eq!(vm2["mac"], "52:54:00:00:00:02");

    let ch = f.ctl_json(&["channels"]);
    assert_eq!(names_on(&ch, 100), ["vm1", "vm2"]);
    assert_eq!(names_on(&ch, 200), ["vm3"]);

    f.ctl_json(&["associate", "vm2", "200"]);
    let ch = f.ctl_json(&["channels"]);
    assert_eq!(names_on(&ch, 100), ["vm1"]);
    assert_eq!(names_on(&ch, 200), ["vm2", "vm3"]);

    f.ctl_json(&["disassociate", "vm2"]);
    let ch = f.ctl_json(&["channels"]);
    assert_eq!(names_on(&ch, 200), ["vm3"]);
    assert_eq!(ch["unassociated"], json!(["vm2"]));
    let ports = f.ctl_json(&["ports"]);
    let vm2 = ports
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["name"] == "vm2")
        .cloned();
    assert_eq!(vm2.map(|p| p["channel"].clone()), Some(Value::Null));

    // Refusals: a message, exit code 1, and the switch unchanged.
    let (code, _, err) = f.ctl(&["associate", "vm9", "100"]);
    assert_eq!(code, 1);
    assert!(err.contains("no port named \"vm9\""), "{err}");
    for (svid, needle) in [
        ("0", "channel id 0"),
        ("4095", "reserved"),
        ("x", "not a decimal"),
    ] {
        let (code, _, err) = f.ctl(&["associate", "vm1", svid]);
        assert_eq!(code, 1, "{svid}");
        assert!(err.contains(needle), "{svid}: {err}");
    }
    assert_eq!(names_on(&f.ctl_json(&["channels"]), 100), ["vm1"]);
    f.stop();
}

#[test]
fn counters_fdb_metrics_and_policy() {
    let f = Fixture::start();
    let stats = f.ctl_json(&["stats"]);
    assert_eq!(stats["ports"].as_array().map(Vec::len), Some(3), "{stats}");
    assert!(stats["channels"].is_array(), "{stats}");
    assert!(f.ctl_json(&["fdb"]).is_array());

    let (code, text, err) = f.ctl(&["metrics"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        text.contains("# TYPE vswitch_port_in_frames counter"),
        "{text}"
    );
    assert!(
        text.contains("vswitch_port_in_frames_total{port=\"vm1\"} 0"),
        "{text}"
    );

    assert_eq!(f.ctl_json(&["policy"]), json!({"allow": []}));
    let p = f.ctl_json(&["set-policy", "100:200", "200:100"]);
    assert_eq!(p, json!({"allow": [[100, 200], [200, 100]]}));
    assert_eq!(f.ctl_json(&["policy"]), p);
    let (code, _, err) = f.ctl(&["set-policy", "100:0"]);
    assert_eq!(code, 1);
    assert!(err.contains("allow entry #1"), "{err}");
    let (code, _, err) = f.ctl(&["set-policy", "100-200"]);
    assert_eq!(code, 2);
    assert!(err.contains("FROM:TO"), "{err}");
    assert_eq!(
        f.ctl_json(&["policy"]),
        p,
        "a refused policy changed the policy"
    );
    assert_eq!(f.ctl_json(&["set-policy"]), json!({"allow": []}));

    let r = f.ctl_json(&["set-rate", "vm1", "--rate", "100", "--burst", "64"]);
    assert_eq!(
        r,
        json!({"name": "vm1", "rate": 100, "burst": 64, "pps": null})
    );
    let (code, _, err) = f.ctl(&["set-rate", "vm1", "--rate", "0"]);
    assert_eq!(code, 1);
    assert!(err.contains("rate"), "{err}");
    let (code, _, err) = f.ctl(&["set-rate", "nope", "--pps", "10"]);
    assert_eq!(code, 1);
    assert!(err.contains("no port named"), "{err}");
    let r = f.ctl_json(&["set-rate", "vm1"]);
    assert_eq!(
        r,
        json!({"name": "vm1", "rate": null, "burst": null, "pps": null})
    );

    // A capture through the CLI: a relative file is the client's, not the switch's.
    let pcap = f.dir.join("vm1.pcap");
    let (code, _, err) = f.ctl_in(
        &f.dir,
        &[
            "capture",
            "start",
            "vm1",
            "--file",
            "vm1.pcap",
            "--direction",
            "rx",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let list = f.ctl_json(&["capture", "list"]);
    assert_eq!(list[0]["port"], "vm1", "{list}");
    assert_eq!(list[0]["file"], pcap.display().to_string(), "{list}");
    let (code, _, err) = f.ctl(&[
        "capture",
        "start",
        "vm1",
        "--file",
        "/nonexistent-dir/x.pcap",
    ]);
    assert_eq!(code, 1);
    assert!(err.contains("running"), "{err}");
    let done = f.ctl_json(&["capture", "stop", "vm1"]);
    assert_eq!(done["captured"], 0, "{done}");
    assert!(pcap.exists());
    let (code, _, err) = f.ctl(&["capture", "stop", "vm1"]);
    assert_eq!(code, 1);
    assert!(err.contains("no capture"), "{err}");
    f.stop();
}

#[test]
fn adds_and_removes_ports_at_run_time() {
    let f = Fixture::start();
    let sock = f.dir.join("d.sock");
    let spec = format!("vm4,socket={},channel=300", sock.display());
    let r = f.ctl_json(&["add-port", &spec]);
    assert_eq!(r["name"], "vm4");
    assert!(sock.exists(), "socket of the added port missing");
    assert_eq!(names_on(&f.ctl_json(&["channels"]), 300), ["vm4"]);

    // Refusals leave no trace.
    let (code, _, err) = f.ctl(&["add-port", &spec]);
    assert_eq!(code, 1);
    assert!(err.contains("vm4"), "{err}");
    let other = format!("vm5,socket={},channel=300", f.dir.join("a.sock").display());
    let (code, _, err) = f.ctl(&["add-port", &other]);
    assert_eq!(code, 1);
    assert!(err.contains("already used by port \"vm1\""), "{err}");
    let ctl_clash = format!("vm5,socket={},channel=300", f.ctl.display());
    let (code, _, err) = f.ctl(&["add-port", &ctl_clash]);
    assert_eq!(code, 1);
    assert!(err.contains("control socket"), "{err}");
    let bad = format!("vm5,socket={}/nope/e.sock,channel=300", f.dir.display());
    let (code, _, err) = f.ctl(&["add-port", &bad]);
    assert_eq!(code, 1);
    assert!(err.contains("does not exist"), "{err}");
    assert!(!f.dir.join("nope").exists());

    // An object spec on the raw socket.
    let (mut r, mut w) = f.connect();
    let e_sock = f.dir.join("e.sock");
    let req = json!({"cmd": "add-port", "spec": {"name": "vm5", "socket": e_sock, "channel": 300, "mac-limit": 4}});
    let resp = raw(&mut r, &mut w, req.to_string().as_bytes());
    assert_eq!(resp["ok"], true, "{resp}");
    assert!(e_sock.exists());

    f.ctl_json(&["remove-port", "vm4"]);
    assert!(!sock.exists(), "socket of the removed port left behind");
    let (code, _, err) = f.ctl(&["remove-port", "vm4"]);
    assert_eq!(code, 1);
    assert!(err.contains("no port named"), "{err}");
    f.stop();
    assert!(!e_sock.exists());
}

#[test]
fn hostile_requests_get_errors_and_the_server_keeps_serving() {
    let f = Fixture::start();
    let (mut r, mut w) = f.connect();
    for line in [
        &b"this is not json"[..],
        b"{",
        b"[1,2,3]",
        b"{\"cmd\":\"reboot\"}",
        b"{\"cmd\":\"ports\",\"sudo\":true}",
        b"{\"cmd\":\"associate\",\"name\":\"vm1\"}",
        b"\xff\xfe\x00garbage",
    ] {
        let resp = raw(&mut r, &mut w, line);
        assert_eq!(resp["ok"], false, "{resp}");
        let err = resp["error"].as_str().unwrap_or_default();
        assert!(err.contains("malformed request"), "{err}");
    }
    // The same connection still works.
    let resp = raw(&mut r, &mut w, br#"{"cmd":"ports"}"#);
    assert_eq!(resp["ok"], true, "{resp}");
    assert_eq!(resp["result"].as_array().map(Vec::len), Some(3));
    // Blank lines are skipped; CRLF is accepted.
    let resp = raw(&mut r, &mut w, b"\n\r\n{\"cmd\":\"policy\"}\r");
    assert_eq!(resp["ok"], true, "{resp}");

    // An oversized line: an error, then the server hangs up on that client only.
    let (mut r2, mut w2) = f.connect();
    let mut big = vec![b'x'; 70 * 1024];
    big.push(b'\n');
    // The server may hang up before reading all of it: a failed write is fine.
    let _ = w2.write_all(&big);
    let mut line = String::new();
    r2.read_line(&mut line).expect("read");
    let resp: Value = serde_json::from_str(&line).expect("json");
    assert_eq!(resp["ok"], false);
    assert!(
        resp["error"]
            .as_str()
            .unwrap_or_default()
            .contains("too long"),
        "{resp}"
    );
    let mut rest = Vec::new();
    r2.read_to_end(&mut rest)
        .expect("the server hangs up after an oversized request");
    assert!(rest.is_empty(), "more after the refusal: {rest:?}");

    // A client that connects and says nothing does not block others.
    let _idle = UnixStream::connect(&f.ctl).expect("idle client");
    let resp = raw(&mut r, &mut w, br#"{"cmd":"stats"}"#);
    assert_eq!(resp["ok"], true);
    let fresh = f.ctl_json(&["ports"]);
    assert_eq!(fresh.as_array().map(Vec::len), Some(3));
    f.stop();
}

#[test]
fn ctl_without_a_server_fails_with_a_clear_message() {
    let d = TempDir::new().expect("tempdir");
    let path = d.path().join("none.sock");
    let out = run_to_end(&["ctl", "--ctl", &path.display().to_string(), "ports"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot connect to control socket")
            && err.contains("none.sock: no such file")
            && err.contains("is `vswitch run` running? use --ctl PATH or VSWITCH_CTL")
            && !err.contains("os error"),
        "{err}"
    );
    assert!(!Path::new(&path).exists());
}

#[test]
fn a_second_switch_on_the_same_control_socket_exits_1_and_cleans_up() {
    let f = Fixture::start();
    let sock = f.dir.join("second.sock");
    let ctl = f.ctl.display().to_string();
    let port = format!("--port=vm1,socket={},channel=100", sock.display());
    let out = run_to_end(&["run", &port, "--ctl", &ctl]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("in use by another process"), "{err}");
    assert!(
        !sock.exists(),
        "the second switch left its port socket behind"
    );
    // The first one is unharmed.
    assert_eq!(f.ctl_json(&["ports"]).as_array().map(Vec::len), Some(3));
    f.stop();
}

/// Issue 11 finding 8: clients trickling one byte at a time cannot keep the control API's
/// slots: each request has a deadline from its first byte, not an idle timeout per byte.
#[test]
fn slow_byte_clients_cannot_hold_the_slots() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use std::time::{Duration, Instant};
    let f = Fixture::start();
    let stop = Arc::new(AtomicBool::new(false));
    let dropped = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let trickle: Vec<_> = (0..20)
        .map(|_| {
            let mut s = UnixStream::connect(&f.ctl).expect("connect");
            let (stop, dropped) = (stop.clone(), dropped.clone());
            std::thread::spawn(move || {
                let request = br#"{"cmd":"ports"}"#;
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    if s.write_all(&request[i % request.len()..][..1]).is_err() {
                        dropped.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                    i += 1;
                    std::thread::sleep(Duration::from_secs(2));
                }
            })
        })
        .collect();
    // Served again once the trickling clients' requests run out of time.
    let start = Instant::now();
    loop {
        let ctl = f.ctl.display().to_string();
        let out = run_to_end(&["ctl", "--ctl", &ctl, "--timeout", "5", "ports"]);
        if out.status.success() {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(45),
            "slow clients still hold every slot: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    stop.store(true, Ordering::Relaxed);
    for t in trickle {
        let _ = t.join();
    }
    assert!(
        dropped.load(Ordering::Relaxed) > 0,
        "no slow client was dropped"
    );
    f.stop();
}

/// Issue 11 finding 10: a switch that accepts but does not answer gets "no answer within N s",
/// not an OS error string.
#[test]
fn ctl_against_a_switch_that_does_not_answer_says_so() {
    let d = TempDir::new().expect("tempdir");
    let path = d.path().join("mute.sock");
    let _mute = std::os::unix::net::UnixListener::bind(&path).expect("bind");
    let out = run_to_end(&[
        "ctl",
        "--ctl",
        &path.display().to_string(),
        "--timeout",
        "1",
        "ports",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no answer within 1 s"), "{err}");
    assert!(!err.contains("os error"), "{err}");
}
