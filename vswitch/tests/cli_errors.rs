//! `vswitch run` with bad input: a non-zero exit, a message naming the problem, and nothing
//! started (no socket file). And with good input: it starts, serves its sockets, and SIGTERM /
//! SIGINT stop it cleanly, removing them.

mod bin_util;

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Stdio;
use std::thread;
use std::time::{Duration, Instant};

use bin_util::{bin, files_in, run_to_end, wait_output, Running, DEADLINE};
use tempfile::TempDir;

/// Runs `vswitch run ARGS` expecting exit code 2, a message with every one of `needles`, and no
/// new file in `dir`. Returns stderr.
fn refused(dir: &Path, args: &[String], needles: &[&str]) -> String {
    let before = files_in(dir);
    let mut full = vec!["run".to_owned()];
    full.extend(args.iter().cloned());
    let refs: Vec<&str> = full.iter().map(String::as_str).collect();
    let out = run_to_end(&refs);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(
        out.status.code(),
        Some(2),
        "args {args:?}; stderr:\n{stderr}"
    );
    for n in needles {
        assert!(stderr.contains(n), "stderr lacks {n:?}:\n{stderr}");
    }
    assert_eq!(files_in(dir), before, "a file was created for {args:?}");
    stderr
}

/// A valid first port, so that "nothing started" means something.
fn good_port(dir: &TempDir) -> String {
    format!(
        "--port=vm0,socket={}/ok.sock,channel=100",
        dir.path().display()
    )
}

fn port(spec: String) -> String {
    format!("--port={spec}")
}

#[test]
fn unknown_key_in_toml() {
    let d = TempDir::new().expect("tempdir");
    let file = d.path().join("vswitch.toml");
    let text = format!(
        "[[port]]\nname = \"vm1\"\nsocket = \"{}/a.sock\"\nchannel = 100\nvlan = 7\n",
        d.path().display()
    );
    std::fs::write(&file, text).expect("write");
    let args = vec![format!("--config={}", file.display()), good_port(&d)];
    refused(
        d.path(),
        &args,
        &["unknown key `vlan`", "vswitch.toml line 5", "mac-limit"],
    );
}

#[test]
fn unknown_key_in_flag() {
    let d = TempDir::new().expect("tempdir");
    let dir = d.path().display();
    let args = vec![
        good_port(&d),
        port(format!("vm1,socket={dir}/a.sock,channel=1,vlan=2")),
    ];
    refused(d.path(), &args, &["unknown key `vlan`", "--port"]);
}

#[test]
fn svid_zero_reserved_and_out_of_range() {
    let d = TempDir::new().expect("tempdir");
    let dir = d.path().display();
    for (svid, needle) in [
        ("0", "channel id 0 is not valid"),
        ("4095", "4095 is reserved"),
        ("4096", "out of range"),
        ("blue", "not a decimal number"),
    ] {
        let args = vec![
            good_port(&d),
            port(format!("vm1,socket={dir}/a.sock,channel={svid}")),
        ];
        refused(d.path(), &args, &[needle, "1..=4094", "vm1,socket="]);
    }
}

#[test]
fn svid_zero_in_toml() {
    let d = TempDir::new().expect("tempdir");
    let file = d.path().join("v.toml");
    let text = format!(
        "[[port]]\nname = \"vm1\"\nsocket = \"{}/a.sock\"\nchannel = 0\n",
        d.path().display()
    );
    std::fs::write(&file, text).expect("write");
    let args = vec![format!("--config={}", file.display())];
    refused(d.path(), &args, &["channel id 0", "[[port]] #1 (\"vm1\")"]);
}

#[test]
fn duplicate_port_name() {
    let d = TempDir::new().expect("tempdir");
    let dir = d.path().display();
    let args = vec![
        port(format!("vm1,socket={dir}/a.sock,channel=1")),
        port(format!("vm1,socket={dir}/b.sock,channel=1")),
    ];
    refused(
        d.path(),
        &args,
        &["port name \"vm1\" is used twice", "own name"],
    );
}

#[test]
fn duplicate_socket_path() {
    let d = TempDir::new().expect("tempdir");
    let dir = d.path().display();
    let args = vec![
        port(format!("vm1,socket={dir}/a.sock,channel=1")),
        port(format!("vm2,socket={dir}/./a.sock,channel=2")),
    ];
    refused(
        d.path(),
        &args,
        &["a.sock", "is used twice", "own socket path"],
    );
}

#[test]
fn socket_directory_missing() {
    let d = TempDir::new().expect("tempdir");
    let dir = d.path().display();
    let args = vec![
        good_port(&d),
        port(format!("vm1,socket={dir}/nope/a.sock,channel=1")),
    ];
    refused(d.path(), &args, &["does not exist", "mkdir -p", "nope"]);
}

#[test]
fn socket_path_is_a_regular_file() {
    let d = TempDir::new().expect("tempdir");
    std::fs::write(d.path().join("taken"), b"x").expect("write");
    let dir = d.path().display();
    let args = vec![
        good_port(&d),
        port(format!("vm1,socket={dir}/taken,channel=1")),
    ];
    refused(d.path(), &args, &["not a socket", "will not delete"]);
    assert_eq!(
        std::fs::read(d.path().join("taken")).ok(),
        Some(b"x".to_vec())
    );
}

#[test]
fn malformed_and_multicast_mac() {
    let d = TempDir::new().expect("tempdir");
    let dir = d.path().display();
    let args = vec![
        good_port(&d),
        port(format!(
            "vm1,socket={dir}/a.sock,channel=1,mac=52:54:00:12:34"
        )),
    ];
    refused(
        d.path(),
        &args,
        &["MAC address \"52:54:00:12:34\" is malformed", "e.g."],
    );
    let args = vec![
        good_port(&d),
        port(format!(
            "vm1,socket={dir}/a.sock,channel=1,mac=01:00:5e:00:00:01"
        )),
    ];
    refused(d.path(), &args, &["multicast", "unicast"]);
}

#[test]
fn bad_mode_mtu_mac_limit_and_vepa() {
    let d = TempDir::new().expect("tempdir");
    let dir = d.path().display();
    for (extra, needle) in [
        ("mode=server", "mode \"server\" is unknown"),
        ("mtu=9001", "68..=9000"),
        ("mac-limit=0", "mac-limit 0 is not valid"),
        ("channel-mode=vepa", "no uplink is configured"),
        ("mode=vepa", "no uplink is configured"),
    ] {
        let args = vec![
            good_port(&d),
            port(format!("vm1,socket={dir}/a.sock,channel=1,{extra}")),
        ];
        refused(d.path(), &args, &[needle]);
    }
}

#[test]
fn no_ports_and_bad_flags() {
    let d = TempDir::new().expect("tempdir");
    refused(d.path(), &[], &["at least one port"]);
    refused(
        d.path(),
        &[good_port(&d), "--log-level=loud".into()],
        &["log level \"loud\""],
    );
    refused(
        d.path(),
        &[good_port(&d), "--stats-interval=0".into()],
        &["stats interval"],
    );
    refused(
        d.path(),
        &[good_port(&d), "--poll-cores=4000".into()],
        &["CPU 4000 is not available"],
    );
    // clap's own refusals are usage errors too.
    refused(d.path(), &[good_port(&d), "--bogus".into()], &["--bogus"]);
    let file = d.path().join("missing.toml");
    refused(
        d.path(),
        &[format!("--config={}", file.display())],
        &["cannot read config file"],
    );
}

#[test]
fn starts_serves_and_stops_cleanly_on_sigterm() {
    let d = TempDir::new().expect("tempdir");
    let (a, b) = (d.path().join("a.sock"), d.path().join("b.sock"));
    let args = vec![
        port(format!("vm1,socket={},channel=100", a.display())),
        port(format!("vm2,socket={},channel=100", b.display())),
        "--stats-interval=1".into(),
        format!("--ctl={}", d.path().join("ctl.sock").display()),
    ];
    let mut sw = Running::start(&args, &[a.clone(), b.clone()]);
    assert!(sw.is_running());
    // A frontend can connect to the listen sockets.
    let _c = std::os::unix::net::UnixStream::connect(&a).expect("connect a");
    let (status, stderr) = sw.stop_with(libc::SIGTERM);
    assert_eq!(status.code(), Some(0), "stderr:\n{stderr}");
    assert!(!a.exists() && !b.exists(), "sockets left behind");
    assert!(
        stderr.contains("SIGTERM") && stderr.contains("final counters"),
        "{stderr}"
    );
    assert!(
        stderr.contains("port vm1") && stderr.contains("channel 100"),
        "{stderr}"
    );
}

#[test]
fn config_file_and_flags_start_together_and_sigint_stops() {
    let d = TempDir::new().expect("tempdir");
    let (a, b, ctl) = (
        d.path().join("a.sock"),
        d.path().join("b.sock"),
        d.path().join("ctl.sock"),
    );
    let file = d.path().join("v.toml");
    let text = format!(
        "[switch]\nctl = \"{}\"\n[fdb]\naging_s = 30\n[policy]\nallow = [[100, 200]]\n\
         [[port]]\nname = \"vm1\"\nsocket = \"{}\"\nchannel = 100\nmac = \"52:54:00:00:00:01\"\n",
        ctl.display(),
        a.display()
    );
    std::fs::write(&file, text).expect("write");
    let args = vec![
        format!("--config={}", file.display()),
        port(format!(
            "vm2,socket={},channel=200,mode=listen",
            b.display()
        )),
    ];
    let sw = Running::start(&args, &[a.clone(), b.clone(), ctl.clone()]);
    let (status, stderr) = sw.stop_with(libc::SIGINT);
    assert_eq!(status.code(), Some(0), "stderr:\n{stderr}");
    assert!(
        !a.exists() && !b.exists() && !ctl.exists(),
        "sockets left behind"
    );
}

/// Issue 11 finding 10: `channel = 1e308` is reported as what was written, not as u64::MAX.
#[test]
fn float_channel_is_reported_as_written() {
    let d = TempDir::new().expect("tempdir");
    let file = d.path().join("sw.toml");
    std::fs::write(
        &file,
        format!(
            "[[port]]\nname = \"vm1\"\nsocket = \"{}/a.sock\"\nchannel = 1e308\n",
            d.path().display()
        ),
    )
    .expect("write");
    let err = refused(
        d.path(),
        &[format!("--config={}", file.display())],
        &["channel", "1e308", "1..=4094"],
    );
    assert!(!err.contains("18446744073709551615"), "{err}");
}

/// Issue 11 finding 10: empty items in `--poll-cores` are refused, not skipped.
#[test]
fn poll_cores_with_empty_items_is_refused() {
    let d = TempDir::new().expect("tempdir");
    for list in ["1,,2,-,a", "0,,", ",0"] {
        refused(
            d.path(),
            &[good_port(&d), format!("--poll-cores={list}")],
            &["--poll-cores", "is empty"],
        );
    }
}

/// Issue 11 finding 10: a huge `--port` value is not echoed whole.
#[test]
fn huge_port_spec_is_truncated_in_the_message() {
    let d = TempDir::new().expect("tempdir");
    let junk = "x".repeat(60_000);
    for spec in [
        format!(
            "vm1,socket={}/a.sock,channel=100,{junk}",
            d.path().display()
        ),
        format!("vm1,socket={}/a.sock,channel={junk}", d.path().display()),
        format!("{junk},socket={}/a.sock,channel=100", d.path().display()),
    ] {
        let err = refused(d.path(), &[port(spec)], &["--port", "bytes"]);
        assert!(err.len() < 2000, "{} bytes of message", err.len());
    }
}

fn uplink(spec: &str) -> String {
    format!("--uplink={spec}")
}

/// Every bad uplink value is refused before anything starts, naming the flag and what to do.
#[test]
fn bad_uplinks_are_refused() {
    let d = TempDir::new().expect("tempdir");
    for (spec, needles) in [
        (
            "up,kind=geneve,interface=lo",
            &[
                "uplink kind \"geneve\" is unknown",
                "kind=dot1ad",
                "kind=vxlan",
            ][..],
        ),
        ("up,kind=dot1ad", &["missing `interface`", "interface=eth1"]),
        ("up,kind=vxlan,remote=10.0.0.2", &["missing `local`"]),
        ("up,kind=vxlan,local=10.0.0.1", &["missing `remote`"]),
        (
            "up,kind=vxlan,local=10.0.0.300,remote=10.0.0.2",
            &["local \"10.0.0.300\" is not an IP address"],
        ),
        (
            "up,kind=vxlan,local=10.0.0.1,remote=10.0.0.1",
            &["remote \"10.0.0.1\" is the local address"],
        ),
        (
            "up,kind=vxlan,local=10.0.0.1,remote=10.0.0.2,reflective-relay=on",
            &["`reflective-relay` does not apply to a vxlan uplink"],
        ),
        (
            "up,kind=dot1ad,interface=lo,channels=4095",
            &["channels:", "reserved"],
        ),
        (
            "up,kind=dot1ad,interface=lo,channels=100,200",
            &["join a channel list with '+'"],
        ),
        (
            "up,kind=dot1ad,interface=no-such-if0",
            &["interface \"no-such-if0\" does not exist", "ip link"],
        ),
        (
            "vm0,kind=dot1ad,interface=lo",
            &["port name \"vm0\" is used twice", "--port", "own name"],
        ),
        (
            "up,kind=dot1ad,interface=lo,vlan=2",
            &["unknown key `vlan`"],
        ),
    ] {
        let mut want = vec!["--uplink"];
        want.extend_from_slice(needles);
        refused(d.path(), &[good_port(&d), uplink(spec)], &want);
    }
    // Two uplinks on one interface.
    refused(
        d.path(),
        &[
            uplink("a,kind=dot1ad,interface=lo"),
            uplink("b,kind=dot1ad,interface=lo"),
        ],
        &["interface lo is used by two uplinks"],
    );
}

#[test]
fn bad_uplink_in_toml_names_the_table() {
    let d = TempDir::new().expect("tempdir");
    let file = d.path().join("v.toml");
    std::fs::write(
        &file,
        "[[uplink]]\nname = \"up\"\nkind = \"vxlan\"\nlocal = \"10.0.0.1\"\nremote = [\"10.0.0.2\", \"10.0.0.2\"]\n",
    )
    .expect("write");
    let args = vec![format!("--config={}", file.display())];
    refused(
        d.path(),
        &args,
        &[
            "v.toml, [[uplink]] #1 (\"up\")",
            "remote \"10.0.0.2\" is listed twice",
        ],
    );
}

/// A VEPA port needs an uplink carrying its channel; with one, the configuration is valid.
#[test]
fn vepa_port_needs_an_uplink_carrying_its_channel() {
    let d = TempDir::new().expect("tempdir");
    let dir = d.path().display();
    let vepa = port(format!("vm1,socket={dir}/a.sock,channel=100,mode=vepa"));
    refused(
        d.path(),
        std::slice::from_ref(&vepa),
        &["no uplink is configured", "--uplink"],
    );
    refused(
        d.path(),
        &[vepa, uplink("up,kind=dot1ad,interface=lo,channels=200")],
        &["no uplink carries channel 100"],
    );
}

/// An uplink's transport opens when the switch starts: it runs (and `ctl ports` lists it), or
/// the start fails at run time (exit 1) with the uplink's name and the cause, before any VM
/// socket exists. Run in a network namespace of its own where the test may create one (as
/// root), so that a transport that opens never touches the host's interfaces.
#[test]
fn an_uplink_runs_or_fails_with_its_name() {
    let d = TempDir::new().expect("tempdir");
    let (a, ctl) = (d.path().join("a.sock"), d.path().join("ctl.sock"));
    let mut cmd = bin();
    cmd.arg("run")
        .arg(uplink("up,kind=dot1ad,interface=lo"))
        .arg(port(format!("vm1,socket={},channel=100", a.display())))
        .arg(format!("--ctl={}", ctl.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // SAFETY: unshare is a system call, async-signal-safe, and touches no memory of the
    // parent; its failure (not root) leaves the child in the test's namespace.
    unsafe {
        cmd.pre_exec(|| {
            let _ = libc::unshare(libc::CLONE_NEWNET);
            Ok(())
        });
    }
    let mut child = cmd.spawn().expect("spawn vswitch run");
    let start = Instant::now();
    while !ctl.exists() {
        if child.try_wait().expect("try_wait").is_some() {
            break;
        }
        assert!(start.elapsed() < DEADLINE, "neither started nor failed");
        thread::sleep(Duration::from_millis(20));
    }
    if ctl.exists() {
        // The transport runs: the uplink is listed with its transport.
        let ctl = ctl.display().to_string();
        let out = run_to_end(&["ctl", "--ctl", &ctl, "--json", "ports"]);
        let rows: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
        let up = rows
            .as_array()
            .and_then(|r| r.iter().find(|r| r["name"] == "up"))
            .cloned()
            .unwrap_or_default();
        assert_eq!(
            (
                &up["kind"],
                &up["transport"],
                &up["interface"],
                &up["channels"]
            ),
            (
                &serde_json::json!("uplink"),
                &serde_json::json!("dot1ad"),
                &serde_json::json!("lo"),
                &serde_json::json!("1-4094")
            ),
            "{rows}"
        );
        // SAFETY: kill has no memory-safety preconditions; the pid is our live child's.
        assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
        let out = wait_output(child);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    } else {
        let out = wait_output(child);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "a run-time failure:\n{stderr}");
        assert!(
            stderr.contains("vswitch: error: an uplink could not start: uplink up:"),
            "no name or cause:\n{stderr}"
        );
    }
    assert!(
        files_in(d.path()).is_empty(),
        "left behind: {:?}",
        files_in(d.path())
    );
}
