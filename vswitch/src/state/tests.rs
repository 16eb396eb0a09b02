//! Unit tests of the state file: round trip, atomic replacement under SIGKILL, refusals of
//! corrupt and hostile files, and how the configuration and the state file combine.

use std::ffi::CString;
use std::fs;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;
use vswitch_channels::{ChannelId, ChannelMode, MacAddr, Policy};

use super::*;
use crate::config::Sources;
use crate::spec::{PortSpec, SwitchSettings};

fn ch(v: u16) -> ChannelId {
    ChannelId::new(v).expect("valid channel")
}

fn sock(d: &TempDir, name: &str) -> PathBuf {
    d.path().join(format!("{name}.sock"))
}

/// A configuration with vm1, vm2 on 100 and vm3 on 200, keeping `state.json` in `d`.
fn config(d: &TempDir, extra: &[String]) -> Config {
    let mut ports: Vec<String> = [("vm1", 100), ("vm2", 100), ("vm3", 200)]
        .iter()
        .map(|(n, c)| format!("{n},socket={},channel={c}", sock(d, n).display()))
        .collect();
    ports.extend_from_slice(extra);
    let src = Sources {
        ports,
        state: Some(d.path().join("state.json")),
        ..Sources::default()
    };
    Config::from_text(None, &src).expect("valid config")
}

fn state_path(d: &TempDir) -> PathBuf {
    d.path().join("state.json")
}

/// Writes `text` as the state file, mode 0600.
fn put(path: &Path, text: &[u8]) {
    fs::write(path, text).expect("write");
    fs::set_permissions(path, fs::Permissions::from_mode(0o600)).expect("chmod");
}

/// A valid state file over `cfg`'s ports and policy with `ports` as its ports.
fn state_text(cfg: &Config, ports: &str, allow: &str) -> String {
    let base = String::from_utf8(format::render(
        &Contents::of_config(&cfg.ports, &cfg.policy),
        &Contents::of_config(&cfg.ports, &cfg.policy),
    ))
    .expect("utf-8");
    let v: serde_json::Value = serde_json::from_str(&base).expect("json");
    format!(
        r#"{{"format": "vswitch-state", "version": 1, "ports": {ports}, "policy": {{"allow": {allow}}}, "config": {}}}"#,
        v["config"]
    )
}

#[test]
fn a_running_switch_round_trips_through_the_file() {
    let d = TempDir::new().expect("tempdir");
    let cfg = config(&d, &[]);
    let sw = Switch::new(SwitchSettings::default(), Policy::default());
    let mut vm4 = PortSpec::new("vm4", sock(&d, "vm4"), ch(300));
    vm4.mac = Some(MacAddr::new([0x52, 0x54, 0, 0, 0, 4]));
    vm4.mac_limit = Some(7);
    vm4.mtu = 9000;
    vm4.queues = 4;
    for spec in cfg.ports.iter().cloned().chain([vm4.clone()]) {
        sw.add_port(spec).expect("add");
    }
    sw.associate("vm2", ch(200)).expect("associate");
    sw.disassociate("vm1").expect("disassociate");
    sw.remove_port("vm3").expect("remove");
    sw.set_policy(Policy::with_allowed([(ch(200), ch(300))]));

    let base = Contents::of_config(&cfg.ports, &cfg.policy);
    let bytes = format::render(&Contents::of_switch(&sw), &base);
    sw.shutdown();
    let parsed = format::parse(Path::new("s.json"), &bytes).expect("parses");
    assert_eq!(parsed.config, format::to_value(&base));
    let saved = parsed.check(Path::new("s.json"), None, &[]).expect("valid");

    let got: Vec<(String, Option<u16>)> = saved
        .ports
        .iter()
        .map(|r| (r.spec.name.clone(), r.channel.map(ChannelId::get)))
        .collect();
    assert_eq!(
        got,
        [
            ("vm1".to_owned(), None),
            ("vm2".to_owned(), Some(200)),
            ("vm4".to_owned(), Some(300))
        ]
    );
    let r4 = saved
        .ports
        .iter()
        .find(|r| r.spec.name == "vm4")
        .expect("vm4");
    assert_eq!(r4.spec, vm4);
    assert_eq!(saved.policy, Policy::with_allowed([(ch(200), ch(300))]));
}

#[test]
fn a_write_replaces_the_file_and_leaves_no_temporary_file() {
    let d = TempDir::new().expect("tempdir");
    let p = state_path(&d);
    file::write_atomic(&p, b"one").expect("write");
    file::write_atomic(&p, b"two").expect("write");
    assert_eq!(fs::read(&p).expect("read"), b"two");
    let mode = fs::metadata(&p).expect("stat").permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "mode {mode:o}");
    assert!(!file::temp_path(&p).exists());

    // Something planted at the temporary name is replaced, never followed or truncated.
    let victim = d.path().join("victim");
    fs::write(&victim, b"keep").expect("victim");
    std::os::unix::fs::symlink(&victim, file::temp_path(&p)).expect("symlink");
    file::write_atomic(&p, b"three").expect("write");
    assert_eq!(fs::read(&p).expect("read"), b"three");
    assert_eq!(fs::read(&victim).expect("victim"), b"keep");
}

#[test]
fn a_failed_write_leaves_the_old_file() {
    let d = TempDir::new().expect("tempdir");
    let p = state_path(&d);
    file::write_atomic(&p, b"old").expect("write");
    // A directory at the temporary name cannot be removed: the write fails early.
    fs::create_dir(file::temp_path(&p)).expect("mkdir");
    fs::write(file::temp_path(&p).join("x"), b"x").expect("fill");
    assert!(file::write_atomic(&p, b"new").is_err());
    assert_eq!(fs::read(&p).expect("read"), b"old");
}

#[test]
fn an_unfinished_temporary_file_is_ignored_and_removed() {
    let d = TempDir::new().expect("tempdir");
    let cfg = config(&d, &[]);
    let p = state_path(&d);
    let good = state_text(
        &cfg,
        &format!(
            r#"[{{"name": "vm1", "socket": "{}", "channel": 300}}]"#,
            sock(&d, "vm1").display()
        ),
        "[]",
    );
    put(&p, good.as_bytes());
    // What a crash in the middle of the next write leaves.
    put(&file::temp_path(&p), &good.as_bytes()[..good.len() / 2]);
    let plan = Plan::new(&cfg).expect("plan");
    assert_eq!(plan.source, Source::StateFile);
    assert_eq!(plan.ports.len(), 1);
    assert_eq!(plan.ports[0].channel, Some(ch(300)));
    assert!(!file::temp_path(&p).exists(), "leftover not removed");
}

/// Environment variable that turns [`crash_writer_child`] into the writer.
const WRITER_ENV: &str = "VSWITCH_STATE_TEST_WRITER";
/// Bytes per version: large enough that a write takes a while, so kills land inside it.
const VERSION_BYTES: usize = 1 << 20;

/// Version `n`: its number in the first line, then the same byte (`n % 251`) throughout.
fn version(n: u64) -> Vec<u8> {
    let mut v = format!("{n:020}\n").into_bytes();
    v.resize(VERSION_BYTES, (n % 251) as u8);
    v
}

/// The version number in a writer's "durable N" line.
fn durable(line: &str) -> Option<u64> {
    line.split_once("durable ")?.1.trim().parse().ok()
}

/// The version a file holds, if it is one complete version.
fn which_version(bytes: &[u8]) -> Option<u64> {
    let n: u64 = std::str::from_utf8(bytes.get(..20)?).ok()?.parse().ok()?;
    (bytes == version(n).as_slice()).then_some(n)
}

/// Not a test of its own: the process [`a_kill_at_any_point_leaves_the_old_or_the_new_file`]
/// starts and kills. Writes version 1, 2, 3, ... of the file at `$WRITER_ENV` until killed,
/// printing each number once it is durable.
#[test]
fn crash_writer_child() {
    let Some(path) = std::env::var_os(WRITER_ENV) else {
        return;
    };
    let path = PathBuf::from(path);
    let mut n = which_version(&fs::read(&path).unwrap_or_default()).unwrap_or(0);
    loop {
        n += 1;
        file::write_atomic(&path, &version(n)).expect("write");
        println!("\ndurable {n}");
    }
}

#[test]
fn a_kill_at_any_point_leaves_the_old_or_the_new_file() {
    let d = TempDir::new().expect("tempdir");
    let p = state_path(&d);
    file::write_atomic(&p, &version(0)).expect("first version");
    let exe = std::env::current_exe().expect("test binary");
    let mut rng = 0x2545_f491_4f6c_dd1du64; // fixed seed: the same kill points every run
    let mut before = 0;
    let mut mid_write = 0;
    let start = Instant::now();
    for i in 0..25 {
        let mut child = Command::new(&exe)
            .args(["--exact", "state::tests::crash_writer_child", "--nocapture"])
            .env(WRITER_ENV, &p)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn writer");
        // Wait until it is writing (its first version is durable), then kill it a random
        // time later: with 1 MiB versions, most kills land inside a write.
        let mut out = BufReader::new(child.stdout.take().expect("stdout"));
        let mut acked: Vec<u64> = Vec::new();
        let mut line = String::new();
        while acked.is_empty() {
            line.clear();
            if out.read_line(&mut line).expect("read") == 0 {
                break;
            }
            acked.extend(durable(&line));
        }
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        std::thread::sleep(Duration::from_micros((rng >> 32) % 20_000));
        child.kill().expect("SIGKILL");
        child.wait().expect("wait");
        let mut rest = String::new();
        out.read_to_string(&mut rest).expect("read");
        acked.extend(rest.lines().filter_map(durable));
        let bytes = fs::read(&p).expect("the state file is there after every kill");
        let got = which_version(&bytes)
            .unwrap_or_else(|| panic!("iteration {i}: the file is not one complete version"));
        let last_acked = acked.last().copied().unwrap_or(before);
        assert!(
            got == last_acked || got == last_acked + 1,
            "iteration {i}: file holds version {got}, last acknowledged {last_acked}"
        );
        if file::temp_path(&p).exists() {
            mid_write += 1;
        }
        file::remove_leftover(&p);
        assert!(!file::temp_path(&p).exists());
        before = got;
        assert!(start.elapsed() < Duration::from_secs(60), "hang guard");
    }
    assert!(before > 0, "no write ever completed");
    eprintln!("25 kills: {mid_write} inside a write, {before} versions written");
}

/// The refusal for a state file holding `text` (over `cfg`), as text.
fn refusal(d: &TempDir, cfg: &Config, text: &[u8]) -> String {
    put(&state_path(d), text);
    let e = Plan::new(cfg).err().expect("must be refused");
    let msg = e.to_string();
    assert!(
        msg.contains(&format!("rm {}", state_path(d).display())),
        "no advice in: {msg}"
    );
    msg
}

#[test]
fn corrupt_and_hostile_files_are_refused_with_a_clear_message() {
    let d = TempDir::new().expect("tempdir");
    let cfg = config(&d, &[]);
    let vm = |fields: &str| {
        state_text(
            &cfg,
            &format!(
                r#"[{{"name": "vm1", "socket": "{}", {fields}}}]"#,
                sock(&d, "vm1").display()
            ),
            "[]",
        )
    };
    let deep = "[".repeat(100_000);
    let s1 = sock(&d, "vm1").display().to_string();
    let s1_other = format!("{}/./x/../vm1.sock", d.path().display());
    fs::create_dir_all(d.path().join("x")).expect("mkdir");
    let cases: Vec<(String, &str)> = vec![
        (String::new(), "is not a state file"),
        ("{".into(), "is not a state file"),
        ("\u{0}\u{1}\u{2}".into(), "is not a state file"),
        (deep, "is not a state file"),
        (r#"{"ports": []}"#.into(), "no \"format\""),
        (
            r#"{"format": "vswitch-state"}"#.into(),
            "no valid \"version\"",
        ),
        (
            r#"{"format": "vswitch-state", "version": 2}"#.into(),
            "version 2",
        ),
        (
            r#"{"format": "vswitch-state", "version": 1, "ports": []}"#.into(),
            "missing field",
        ),
        (
            state_text(&cfg, "[]", "[]").replace("\"version\": 1,", "\"version\": 1, \"x\": 1,"),
            "unknown field `x`",
        ),
        (vm(r#""channel": 100, "channel": 200"#), "duplicate field"),
        (vm(r#""channel": 100, "vlan": 5"#), "unknown field `vlan`"),
        (vm(r#""mode": "listen""#), "missing `channel`"),
        (vm(r#""channel": 0"#), "port #1 (\"vm1\")"),
        (vm(r#""channel": 4095"#), "4095"),
        (
            vm(r#""channel": 1e308"#),
            "port #1 (\"vm1\"): channel 1e308 is not valid",
        ),
        (vm(r#""channel": -1"#), "\"-1\" is not"),
        (
            vm(r#""channel": "100; rm -rf /""#),
            "\"100; rm -rf /\" is not",
        ),
        (
            vm(r#""channel": 100, "mac": "01:00:5e:00:00:01""#),
            "multicast",
        ),
        (vm(r#""channel": 100, "mtu": 10"#), "mtu"),
        (vm(r#""channel": 100, "mode": "vepa""#), "vepa"),
        (vm(r#""channel": 100, "mac-limit": 0"#), "mac-limit"),
        (
            state_text(
                &cfg,
                r#"[{"name": "../../etc", "socket": "/tmp/x.sock", "channel": 1}]"#,
                "[]",
            ),
            "port name",
        ),
        (
            state_text(
                &cfg,
                r#"[{"name": "a", "socket": "/nonexistent-dir/a.sock", "channel": 1}]"#,
                "[]",
            ),
            "does not exist",
        ),
        (
            state_text(
                &cfg,
                &format!(
                    r#"[{{"name": "a", "socket": "{s1}", "channel": 1}}, {{"name": "a", "socket": "{s1}x", "channel": 2}}]"#
                ),
                "[]",
            ),
            "port name \"a\" twice",
        ),
        (
            state_text(
                &cfg,
                &format!(
                    r#"[{{"name": "a", "socket": "{s1}", "channel": 1}}, {{"name": "b", "socket": "{s1_other}", "channel": 2}}]"#
                ),
                "[]",
            ),
            "twice (at port #2)",
        ),
        (state_text(&cfg, "[]", "[[1]]"), "policy"),
        (state_text(&cfg, "[]", "[[100, 5000]]"), "policy"),
        (
            state_text(&cfg, "[]", "[[1.5, 2]]"),
            "policy: [policy] allow entry #1",
        ),
    ];
    for (text, want) in &cases {
        let msg = refusal(&d, &cfg, text.as_bytes());
        assert!(msg.contains(want), "{want:?} not in: {msg}");
        assert!(msg.len() < 2000, "message too long: {msg}");
    }
}

#[test]
fn files_that_are_not_the_switchs_own_are_refused() {
    let d = TempDir::new().expect("tempdir");
    let cfg = config(&d, &[]);
    let p = state_path(&d);
    let good = state_text(&cfg, "[]", "[]");

    put(&p, good.as_bytes());
    fs::set_permissions(&p, fs::Permissions::from_mode(0o666)).expect("chmod");
    let e = Plan::new(&cfg)
        .err()
        .expect("writable by others")
        .to_string();
    assert!(e.contains("chmod 600"), "{e}");
    fs::remove_file(&p).expect("rm");

    let target = d.path().join("elsewhere.json");
    put(&target, good.as_bytes());
    std::os::unix::fs::symlink(&target, &p).expect("symlink");
    let e = Plan::new(&cfg).err().expect("symlink").to_string();
    assert!(e.contains("symbolic link"), "{e}");
    fs::remove_file(&p).expect("rm");

    fs::create_dir(&p).expect("mkdir");
    let e = Plan::new(&cfg).err().expect("directory").to_string();
    assert!(e.contains("not a regular file"), "{e}");
    fs::remove_dir(&p).expect("rmdir");

    let c = CString::new(p.as_os_str().as_bytes()).expect("path");
    // SAFETY: `c` is a valid NUL-terminated path for the duration of the call.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "mkfifo");
    let e = Plan::new(&cfg).err().expect("fifo").to_string();
    assert!(e.contains("not a regular file"), "{e}");
    fs::remove_file(&p).expect("rm");

    let f = fs::File::create(&p).expect("create");
    f.set_len(file::MAX_BYTES + 1).expect("sparse");
    fs::set_permissions(&p, fs::Permissions::from_mode(0o600)).expect("chmod");
    let e = Plan::new(&cfg).err().expect("too large").to_string();
    assert!(e.contains("bytes long"), "{e}");
    fs::remove_file(&p).expect("rm");

    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        put(&p, good.as_bytes());
        std::os::unix::fs::chown(&p, Some(54321), None).expect("chown");
        let e = Plan::new(&cfg).err().expect("foreign owner").to_string();
        assert!(e.contains("owned by uid 54321"), "{e}");
        fs::remove_file(&p).expect("rm");
    }

    let e = Plan::new(&Config {
        state: Some(d.path().join("missing-dir/state.json")),
        ..cfg.clone()
    })
    .err()
    .expect("no directory")
    .to_string();
    assert!(e.contains("mkdir -p"), "{e}");
}

#[test]
fn the_configuration_and_the_state_file_combine_by_one_rule() {
    let d = TempDir::new().expect("tempdir");
    let cfg = config(&d, &[]);

    // No state file: the configuration.
    let plan = Plan::new(&cfg).expect("plan");
    assert_eq!(plan.source, Source::NoStateFile);
    assert_eq!(plan.ports.len(), 3);

    // A state file over the same configuration: the state file, whatever the config's
    // order of ports, and with a port on no channel.
    let ports = format!(
        r#"[{{"name": "vm2", "socket": "{}", "channel": 200}}, {{"name": "vm9", "socket": "{}", "channel": null, "mode": "connect"}}]"#,
        sock(&d, "vm2").display(),
        sock(&d, "vm9").display()
    );
    put(
        &state_path(&d),
        state_text(&cfg, &ports, "[[200, 300]]").as_bytes(),
    );
    let mut reordered = cfg.clone();
    reordered.ports.reverse();
    let plan = Plan::new(&reordered).expect("plan");
    assert_eq!(plan.source, Source::StateFile);
    let got: Vec<(&str, Option<ChannelId>)> = plan
        .ports
        .iter()
        .map(|r| (r.spec.name.as_str(), r.channel))
        .collect();
    assert_eq!(got, [("vm2", Some(ch(200))), ("vm9", None)]);
    assert_eq!(plan.policy, Policy::with_allowed([(ch(200), ch(300))]));

    // The configuration's ports edited since: the configuration, even if the state file's
    // own contents would be refused (they are not used).
    let edited = config(
        &d,
        &[format!(
            "vm4,socket={},channel=400",
            sock(&d, "vm4").display()
        )],
    );
    let plan = Plan::new(&edited).expect("plan");
    assert_eq!(plan.source, Source::ConfigChanged);
    assert_eq!(plan.ports.len(), 4);
    let mut policy_edited = cfg.clone();
    policy_edited.policy = Policy::with_allowed([(ch(100), ch(200))]);
    assert_eq!(
        Plan::new(&policy_edited).expect("plan").source,
        Source::ConfigChanged
    );
    // Settings other than ports and policy are not part of the rule.
    let mut other = cfg.clone();
    other.settings.mac_limit = 9;
    assert_eq!(Plan::new(&other).expect("plan").source, Source::StateFile);

    // No state file kept: the configuration, and no file is touched.
    let plain = Config {
        state: None,
        ..cfg.clone()
    };
    assert_eq!(Plan::new(&plain).expect("plan").source, Source::Config);
}

/// A transport that carries nothing: uplinks in the switch without a wire.
struct NoWire;

impl crate::port::Uplink for NoWire {
    fn receive(
        &self,
        _each: &mut dyn FnMut(&vswitch_vhost::FrameBatch<'_>, &[ChannelId]),
    ) -> crate::port::Received {
        crate::port::Received::default()
    }

    fn send(&self, _frames: &crate::port::Outgoing<'_, '_>) -> crate::port::SendResult {
        crate::port::SendResult::default()
    }
}

/// VEPA ports are saved with their mode; uplinks are configuration and stay out of the file;
/// a restored port may not take an uplink's name, nor be VEPA on a channel no uplink carries.
#[test]
fn vepa_ports_keep_their_mode_and_uplinks_stay_out_of_the_file() {
    let d = TempDir::new().expect("tempdir");
    let src = Sources {
        ports: vec![
            format!(
                "vm1,socket={},channel=100,mode=vepa",
                sock(&d, "vm1").display()
            ),
            format!("vm2,socket={},channel=100", sock(&d, "vm2").display()),
        ],
        uplinks: vec!["trunk0,kind=dot1ad,interface=lo,channels=100".into()],
        state: Some(state_path(&d)),
        ..Sources::default()
    };
    let cfg = Config::from_text(None, &src).expect("valid config");
    let sw = Switch::new(SwitchSettings::default(), Policy::default());
    sw.add_uplink(cfg.uplinks[0].spec.clone(), std::sync::Arc::new(NoWire))
        .expect("uplink");
    for spec in cfg.ports.iter().cloned() {
        sw.add_port(spec).expect("add");
    }
    let base = Contents::of_config(&cfg.ports, &cfg.policy);
    let bytes = format::render(&Contents::of_switch(&sw), &base);
    sw.shutdown();
    let text = String::from_utf8_lossy(&bytes);
    assert!(
        !text.contains("trunk0"),
        "an uplink in the state file:\n{text}"
    );
    assert_eq!(
        text.matches("\"channel-mode\": \"vepa\"").count(),
        2,
        "vm1's mode, in the state and in the configuration's record:\n{text}"
    );

    let parse = || format::parse(Path::new("s.json"), &bytes).expect("parses");
    let saved = parse()
        .check(Path::new("s.json"), None, &cfg.uplinks)
        .expect("valid");
    let modes: Vec<_> = saved.ports.iter().map(|r| r.spec.channel_mode).collect();
    assert_eq!(modes, [ChannelMode::Vepa, ChannelMode::Veb]);

    let e = parse()
        .check(Path::new("s.json"), None, &[])
        .expect_err("VEPA without an uplink")
        .to_string();
    assert!(e.contains("port #1 (\"vm1\")") && e.contains("vepa"), "{e}");
    let mut named_vm2 = cfg.uplinks[0].clone();
    named_vm2.spec.name = "vm2".into();
    let e = parse()
        .check(
            Path::new("s.json"),
            None,
            &[cfg.uplinks[0].clone(), named_vm2],
        )
        .expect_err("a port named like an uplink")
        .to_string();
    assert!(e.contains("uplink of that name"), "{e}");

    // The mode is part of the configuration's record: switching a port to VEPA is an edit.
    put(&state_path(&d), &bytes);
    assert_eq!(Plan::new(&cfg).expect("plan").source, Source::StateFile);
    let mut veb = cfg.clone();
    veb.ports[0].channel_mode = ChannelMode::Veb;
    assert_eq!(Plan::new(&veb).expect("plan").source, Source::ConfigChanged);
}
