//! State that survives a restart (`--state`, docs/state.md), with the real binary: changes
//! made through the control socket come back after `kill -9` and a restart with the same
//! configuration, traffic between test guests follows the restored channels, a configuration
//! edited since wins, a corrupt state file stops the start, and SIGKILL at random points of a
//! stream of changes always leaves the last acknowledged state or the one in flight.

mod bin_util;
mod common;

use std::collections::BTreeMap;
use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use bin_util::{run_to_end, Running, DEADLINE};
use common::{eth, mac, BCAST};
use serde_json::{json, Value};
use tempfile::TempDir;
use vswitch_testguest::{GuestConfig, TestGuest};

/// A switch's files in one directory: its ports' sockets, control socket and state file.
struct Setup {
    _dir: TempDir,
    dir: PathBuf,
    ctl: PathBuf,
    state: PathBuf,
    /// `vswitch run` arguments: the configuration, the same at every start.
    args: Vec<String>,
}

impl Setup {
    /// Ports `(name, channel)` as `--port` flags, control API and state file on.
    fn new(ports: &[(&str, u16)]) -> Setup {
        let d = TempDir::new().expect("tempdir");
        let dir = d.path().to_path_buf();
        let ctl = dir.join("ctl.sock");
        let state = dir.join("state.json");
        let mut args: Vec<String> = ports
            .iter()
            .map(|(n, c)| format!("--port={n},socket={},channel={c}", dir.join(n).display()))
            .collect();
        args.push(format!("--ctl={}", ctl.display()));
        args.push(format!("--state={}", state.display()));
        args.push("--log-level=warn".into());
        Setup {
            _dir: d,
            dir,
            ctl,
            state,
            args,
        }
    }

    fn sock(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Starts the switch and waits until its control API answers (a control socket left by a
    /// killed switch may still be there, so its existence proves nothing).
    fn start(&self) -> Running {
        self.start_with(&[])
    }

    /// [`Setup::start`] with more arguments (an edited configuration).
    fn start_with(&self, extra: &[String]) -> Running {
        let args: Vec<String> = self.args.iter().chain(extra).cloned().collect();
        let mut sw = Running::start(&args, &[]);
        let start = Instant::now();
        loop {
            if let Ok(v) = request(&self.ctl, &json!({"cmd": "ports"})) {
                if v["ok"] == true {
                    return sw;
                }
            }
            assert!(sw.is_running(), "vswitch run exited early");
            assert!(start.elapsed() < DEADLINE, "control API never answered");
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// One request, which must succeed; its result.
    fn ok(&self, req: Value) -> Value {
        let v = request(&self.ctl, &req).unwrap_or_else(|e| panic!("{req}: {e}"));
        assert_eq!(v["ok"], true, "{req} refused: {v}");
        v["result"].clone()
    }

    /// What the running switch reports: ports by name and the policy.
    fn running_state(&self) -> State {
        let ports = self.ok(json!({"cmd": "ports"}));
        let policy = self.ok(json!({"cmd": "policy"}));
        State::from_json(&ports, &policy["allow"])
    }

    /// What the state file holds.
    fn file_state(&self) -> State {
        let text = std::fs::read(&self.state).expect("the state file exists");
        let v: Value = serde_json::from_slice(&text)
            .unwrap_or_else(|e| panic!("state file is not JSON ({e}): {text:?}"));
        assert_eq!(v["format"], "vswitch-state");
        State::from_json(&v["ports"], &v["policy"]["allow"])
    }
}

/// One request on a fresh connection.
fn request(ctl: &Path, req: &Value) -> io::Result<Value> {
    let s = UnixStream::connect(ctl)?;
    s.set_read_timeout(Some(DEADLINE))?;
    let mut r = BufReader::new(s.try_clone()?);
    let mut w = s;
    exchange(&mut r, &mut w, req)
}

/// One request line, one response line.
fn exchange(r: &mut BufReader<UnixStream>, w: &mut UnixStream, req: &Value) -> io::Result<Value> {
    w.write_all(format!("{req}\n").as_bytes())?;
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    serde_json::from_str(&line).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// Ports (name → socket, channel) and the policy's pairs: what a restart must bring back.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct State {
    ports: BTreeMap<String, (String, Option<u16>)>,
    allow: Vec<(u16, u16)>,
}

impl State {
    fn from_json(ports: &Value, allow: &Value) -> State {
        let ports = ports
            .as_array()
            .expect("ports array")
            .iter()
            .map(|p| {
                let name = p["name"].as_str().expect("name").to_owned();
                let socket = p["socket"].as_str().expect("socket").to_owned();
                let channel = p["channel"].as_u64().map(|c| c as u16);
                (name, (socket, channel))
            })
            .collect();
        let mut allow: Vec<(u16, u16)> = allow
            .as_array()
            .expect("allow array")
            .iter()
            .map(|p| {
                (
                    p[0].as_u64().expect("from") as u16,
                    p[1].as_u64().expect("to") as u16,
                )
            })
            .collect();
        allow.sort_unstable();
        State { ports, allow }
    }
}

fn guest(path: &Path, m: [u8; 6]) -> TestGuest {
    let cfg = GuestConfig {
        mac: m,
        ..GuestConfig::default()
    };
    let mut g = TestGuest::connect(path, cfg).expect("guest connects");
    g.post_rx(256).expect("post rx");
    g
}

/// Frames `g` received from source MAC `from`, until the line is quiet.
fn got_from(g: &mut TestGuest, from: [u8; 6]) -> usize {
    g.recv_all(Duration::from_millis(150))
        .iter()
        .filter(|f| f.get(6..12) == Some(&from[..]))
        .count()
}

/// Waits (bounded) for a frame from source MAC `from`; true if one arrived.
fn arrives(g: &mut TestGuest, from: [u8; 6]) -> bool {
    let start = Instant::now();
    while start.elapsed() < DEADLINE {
        match g.recv(Duration::from_millis(100)) {
            Some(f) if f.get(6..12) == Some(&from[..]) => return true,
            _ => {}
        }
    }
    false
}

/// Broadcasts from `tx` until `rx` receives one (both guests just attached: the switch may
/// not have their rings yet). Panics if none arrives within the deadline.
fn until_received(tx: &mut TestGuest, from: [u8; 6], rx: &mut TestGuest, what: &str) {
    let start = Instant::now();
    for marker in 0u32.. {
        tx.send(&eth(BCAST, from, marker)).expect("send");
        tx.reclaim_tx();
        if rx
            .recv_all(Duration::from_millis(50))
            .iter()
            .any(|f| f.get(6..12) == Some(&from[..]))
        {
            return;
        }
        assert!(start.elapsed() < DEADLINE, "never received: {what}");
    }
}

#[test]
fn a_restart_after_kill_9_restores_ports_channels_and_policy_and_traffic_follows_them() {
    let s = Setup::new(&[("vm1", 100), ("vm2", 100), ("vm3", 200)]);
    let sw = s.start();
    s.ok(json!({"cmd": "associate", "name": "vm2", "channel": 200}));
    s.ok(json!({"cmd": "add-port", "spec":
        format!("vm4,socket={},channel=300", s.sock("vm4").display())}));
    s.ok(json!({"cmd": "add-port", "spec":
        {"name": "vm5", "socket": s.sock("vm5").display().to_string(), "channel": 100}}));
    s.ok(json!({"cmd": "disassociate", "name": "vm5"}));
    s.ok(json!({"cmd": "set-policy", "allow": [[200, 300]]}));
    s.ok(json!({"cmd": "remove-port", "name": "vm1"}));
    s.ok(json!({"cmd": "set-rate", "name": "vm3", "rate": 50, "pps": 1000}));
    let want = s.running_state();
    let (status, _) = sw.stop_with(libc::SIGKILL);
    assert_eq!(status.code(), None, "killed by the signal");

    let sw = s.start();
    let got = s.running_state();
    assert_eq!(got, want, "restored state");
    let ports = s.ok(json!({"cmd": "ports"}));
    let vm3 = ports
        .as_array()
        .and_then(|a| a.iter().find(|p| p["name"] == "vm3"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        (&vm3["rate_mbit"], &vm3["pps"]),
        (&json!(50), &json!(1000)),
        "rate limit restored: {vm3}"
    );
    let channels: BTreeMap<&str, Option<u16>> = got
        .ports
        .iter()
        .map(|(n, (_, c))| (n.as_str(), *c))
        .collect();
    assert_eq!(
        channels,
        BTreeMap::from([
            ("vm2", Some(200)),
            ("vm3", Some(200)),
            ("vm4", Some(300)),
            ("vm5", None)
        ])
    );
    assert_eq!(got.allow, [(200, 300)]);
    assert!(!s.sock("vm1").exists(), "the removed port came back");

    // Traffic follows the restored channels: vm2 and vm3 share 200 (in the configuration
    // vm2 is on 100, alone), 200 reaches 300 but not back, vm5 is on no channel.
    let (m2, m3, m4, m5) = (mac(2), mac(3), mac(4), mac(5));
    let mut g2 = guest(&s.sock("vm2"), m2);
    let mut g3 = guest(&s.sock("vm3"), m3);
    let mut g4 = guest(&s.sock("vm4"), m4);
    let mut g5 = guest(&s.sock("vm5"), m5);
    until_received(&mut g2, m2, &mut g3, "vm2 -> vm3 on channel 200");
    until_received(&mut g3, m3, &mut g2, "vm3 -> vm2 on channel 200");
    until_received(&mut g2, m2, &mut g4, "vm2 (200) -> vm4 (300) by the policy");
    for g in [&mut g2, &mut g3, &mut g4, &mut g5] {
        g.recv_all(Duration::from_millis(150));
    }

    g2.send(&eth(BCAST, m2, 1)).expect("send");
    assert!(arrives(&mut g3, m2), "vm3 gets vm2's broadcast");
    assert!(arrives(&mut g4, m2), "vm4 gets vm2's broadcast");
    // The flood to vm3 and vm4 was one batch: vm5's copy, had there been one, is there too.
    assert_eq!(got_from(&mut g5, m2), 0, "vm5 is on no channel");
    let in_before = in_frames(&s, "vm4");
    g4.send(&eth(BCAST, m4, 2)).expect("send");
    let start = Instant::now();
    while in_frames(&s, "vm4") == in_before {
        assert!(
            start.elapsed() < DEADLINE,
            "vm4's frame never reached the switch"
        );
        thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(got_from(&mut g2, m4), 0, "300 does not reach 200");
    assert_eq!(got_from(&mut g3, m4), 0, "300 does not reach 200");
    g5.send(&eth(BCAST, m5, 3)).expect("send");
    for g in [&mut g2, &mut g3, &mut g4] {
        assert_eq!(got_from(g, m5), 0, "a port on no channel sends to nobody");
    }

    // Control: vm5 was attached all along; associated, it receives.
    s.ok(json!({"cmd": "associate", "name": "vm5", "channel": 200}));
    until_received(&mut g2, m2, &mut g5, "vm2 -> vm5 once associated");
    drop((g2, g3, g4, g5));
    let (status, stderr) = sw.stop_with(libc::SIGTERM);
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert_eq!(
        s.file_state().ports["vm5"].1,
        Some(200),
        "the last change saved"
    );
}

fn in_frames(s: &Setup, port: &str) -> u64 {
    let stats = s.ok(json!({"cmd": "stats"}));
    stats["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["name"] == port)
        .and_then(|p| p["switch"]["in_frames"].as_u64())
        .unwrap_or(0)
}

#[test]
fn an_edited_configuration_wins_and_a_corrupt_state_file_stops_the_start() {
    let s = Setup::new(&[("vm1", 100), ("vm2", 100)]);
    let sw = s.start();
    s.ok(json!({"cmd": "associate", "name": "vm2", "channel": 200}));
    let saved = std::fs::read(&s.state).expect("state");
    let _ = sw.stop_with(libc::SIGKILL);

    // The operator adds a port to the configuration: the configuration is the newer intent.
    let vm3 = vec![format!(
        "--port=vm3,socket={},channel=300",
        s.sock("vm3").display()
    )];
    let sw = s.start_with(&vm3);
    let got = s.running_state();
    let channels: Vec<(&str, Option<u16>)> = got
        .ports
        .iter()
        .map(|(n, (_, c))| (n.as_str(), *c))
        .collect();
    assert_eq!(
        channels,
        [("vm1", Some(100)), ("vm2", Some(100)), ("vm3", Some(300))]
    );
    let replaced = s.dir.join("state.json.replaced");
    assert_eq!(std::fs::read(&replaced).expect("old state kept"), saved);
    let (_, stderr) = sw.stop_with(libc::SIGTERM);
    assert!(stderr.contains("changed since state file"), "{stderr}");

    // A corrupt state file: exit 2, a message naming it, nothing started.
    std::fs::write(
        &s.state,
        b"{\"format\": \"vswitch-state\", \"version\": 1, \"ports\": [",
    )
    .expect("corrupt");
    let _ = std::fs::remove_file(&s.ctl);
    let mut args = vec!["run".to_owned()];
    args.extend(s.args.iter().chain(&vm3).cloned());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = run_to_end(&args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!("state file {}", s.state.display()))
            && stderr.contains(&format!("rm {}", s.state.display())),
        "{stderr}"
    );
    assert!(!s.ctl.exists(), "started despite the corrupt state file");
}

/// A tiny seeded generator (xorshift64): the same changes and kill points every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        (self.next() >> 32) % n
    }
}

/// A valid change for `model` (so that every one is accepted): the request and the state
/// after it.
fn next_change(rng: &mut Rng, model: &State, dir: &Path, serial: &mut u32) -> (Value, State) {
    const CHANNELS: [u16; 4] = [10, 20, 30, 40];
    let mut next = model.clone();
    let names: Vec<String> = model.ports.keys().cloned().collect();
    let pick = |rng: &mut Rng| names[rng.below(names.len() as u64) as usize].clone();
    let channel = |rng: &mut Rng| CHANNELS[rng.below(CHANNELS.len() as u64) as usize];
    let kind = match (names.len(), rng.below(5)) {
        (0, _) => 3,
        (n, 3) if n >= 8 => 4,
        (_, k) => k,
    };
    let req = match kind {
        1 if model.ports.values().any(|(_, c)| c.is_some()) => {
            let on: Vec<&String> = model
                .ports
                .iter()
                .filter(|(_, (_, c))| c.is_some())
                .map(|(n, _)| n)
                .collect();
            let name = on[rng.below(on.len() as u64) as usize].clone();
            next.ports.get_mut(&name).expect("port").1 = None;
            json!({"cmd": "disassociate", "name": name})
        }
        0 | 1 => {
            let (name, c) = (pick(rng), channel(rng));
            next.ports.get_mut(&name).expect("port").1 = Some(c);
            json!({"cmd": "associate", "name": name, "channel": c})
        }
        2 => {
            let mut allow: Vec<(u16, u16)> = (0..rng.below(4))
                .map(|_| (channel(rng), channel(rng)))
                .filter(|(a, b)| a != b)
                .collect();
            allow.sort_unstable();
            allow.dedup();
            next.allow = allow.clone();
            let pairs: Vec<[u16; 2]> = allow.iter().map(|&(a, b)| [a, b]).collect();
            json!({"cmd": "set-policy", "allow": pairs})
        }
        3 => {
            *serial += 1;
            let name = format!("n{serial}");
            let socket = dir.join(&name).display().to_string();
            let c = channel(rng);
            next.ports.insert(name.clone(), (socket.clone(), Some(c)));
            json!({"cmd": "add-port", "spec": format!("{name},socket={socket},channel={c}")})
        }
        _ => {
            let name = pick(rng);
            next.ports.remove(&name);
            json!({"cmd": "remove-port", "name": name})
        }
    };
    (req, next)
}

/// What a client making changes saw: the state after its last acknowledged change, and the
/// state after the change it was waiting for when the switch died.
struct Seen {
    acked: State,
    in_flight: Option<State>,
    changes: usize,
}

/// Makes changes one after the other until the switch goes away.
fn make_changes(ctl: &Path, start: State, mut rng: Rng, dir: &Path, mut serial: u32) -> Seen {
    let mut seen = Seen {
        acked: start,
        in_flight: None,
        changes: 0,
    };
    let Ok(s) = UnixStream::connect(ctl) else {
        return seen;
    };
    let _ = s.set_read_timeout(Some(DEADLINE));
    let (Ok(r), mut w) = (s.try_clone(), s) else {
        return seen;
    };
    let mut r = BufReader::new(r);
    loop {
        let (req, next) = next_change(&mut rng, &seen.acked, dir, &mut serial);
        seen.in_flight = Some(next.clone());
        match exchange(&mut r, &mut w, &req) {
            Ok(v) if v["ok"] == true => {
                seen.acked = next;
                seen.in_flight = None;
                seen.changes += 1;
            }
            Ok(v) => panic!("a valid change was refused: {req} -> {v}"),
            Err(_) => return seen,
        }
    }
}

#[test]
fn kill_9_at_random_points_while_changes_are_made_keeps_the_acknowledged_state() {
    const ITERATIONS: u64 = 25;
    let s = Setup::new(&[("p0", 10), ("p1", 10), ("p2", 20)]);
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut expected: Option<State> = None; // None: the configuration
    let mut serial = 0u32;
    let (mut total_changes, mut in_flight_kept, mut startup_kills) = (0, 0, 0);
    let start = Instant::now();
    for i in 0..ITERATIONS {
        if expected.is_some() && rng.below(4) == 0 {
            // Killed while starting (reading the state, adding ports, writing the state back):
            // the state file is unchanged.
            let sw = Running::start(&s.args, &[]);
            thread::sleep(Duration::from_micros(rng.below(40_000)));
            let _ = sw.stop_with(libc::SIGKILL);
            startup_kills += 1;
            assert_eq!(
                Some(s.file_state()),
                expected,
                "iteration {i}: a kill while starting changed the state"
            );
        }
        let sw = s.start();
        assert!(
            !s.dir.join("state.json.tmp").exists(),
            "iteration {i}: the unfinished write was not cleaned up"
        );
        let now = s.running_state();
        if let Some(want) = &expected {
            assert_eq!(
                &now, want,
                "iteration {i}: the switch restarted with another state"
            );
        }
        let (ctl, dir, from) = (s.ctl.clone(), s.dir.clone(), now.clone());
        let client_rng = Rng(rng.next() | 1);
        let client = thread::spawn(move || make_changes(&ctl, from, client_rng, &dir, serial));
        thread::sleep(Duration::from_micros(rng.below(250_000)));
        let (status, _) = sw.stop_with(libc::SIGKILL);
        assert_eq!(status.code(), None, "iteration {i}: killed by the signal");
        let seen = client.join().expect("client");
        serial += seen.changes as u32 + 1;
        total_changes += seen.changes;

        let on_disk = s.file_state();
        if Some(&on_disk) == seen.in_flight.as_ref() {
            in_flight_kept += 1;
        } else {
            assert_eq!(
                on_disk, seen.acked,
                "iteration {i}: the state file holds neither the last acknowledged state nor \
                 the one in flight ({:?})",
                seen.in_flight
            );
        }
        expected = Some(on_disk);
        assert!(start.elapsed() < Duration::from_secs(240), "hang guard");
    }
    // The last state comes back once more.
    let sw = s.start();
    assert_eq!(Some(s.running_state()), expected);
    let (status, stderr) = sw.stop_with(libc::SIGTERM);
    assert_eq!(status.code(), Some(0), "{stderr}");
    eprintln!(
        "{ITERATIONS} kills while changes were made, {startup_kills} while starting, \
         {total_changes} acknowledged changes, in-flight change on disk {in_flight_kept} \
         time(s), {:?}",
        start.elapsed()
    );
    assert!(total_changes > 0, "no change was ever made");
}

#[test]
fn a_change_that_cannot_be_saved_is_answered_with_an_error_and_saved_by_the_next() {
    let s = Setup::new(&[("vm1", 100), ("vm2", 100)]);
    let sw = s.start();
    // A non-empty directory where the temporary file goes: no write can succeed.
    let tmp = s.dir.join("state.json.tmp");
    std::fs::create_dir(&tmp).expect("mkdir");
    std::fs::write(tmp.join("x"), b"x").expect("fill");
    let v = request(
        &s.ctl,
        &json!({"cmd": "associate", "name": "vm2", "channel": 200}),
    )
    .expect("answer");
    assert_eq!(v["ok"], false, "{v}");
    let msg = v["error"].as_str().unwrap_or_default();
    assert!(
        msg.contains("could not be saved") && msg.contains("state.json"),
        "{msg}"
    );
    assert_eq!(
        s.file_state().ports["vm2"].1,
        Some(100),
        "nothing half-saved"
    );

    std::fs::remove_dir_all(&tmp).expect("rm");
    s.ok(json!({"cmd": "disassociate", "name": "vm1"}));
    let on_disk = s.file_state();
    assert_eq!(
        on_disk.ports["vm2"].1,
        Some(200),
        "saved by the next change"
    );
    assert_eq!(on_disk.ports["vm1"].1, None);
    let _ = sw.stop_with(libc::SIGKILL);
    let _sw = s.start();
    assert_eq!(s.running_state(), on_disk);
}
