//! Every refusal: the right variant, and a message naming the problem and where it was.

use std::path::{Path, PathBuf};

use vswitch_channels::ChannelError;

use super::*;

#[test]
fn no_ports() {
    let (e, msg) = err_flags(&[]);
    assert!(matches!(e, ConfigError::NoPorts));
    assert!(msg.contains("at least one port"));
    let (e, _) = err_file("[fdb]\naging_s = 10\n");
    assert!(matches!(e, ConfigError::NoPorts));
}

#[test]
fn unknown_key_in_file_names_key_line_and_valid_keys() {
    let d = TempDir::new("unk");
    let text = format!(
        "[[port]]\nname = \"vm1\"\nsocket = \"{}\"\nchannel = 1\nvlan = 5\n",
        d.path("a.sock")
    );
    let (e, msg) = err_file(&text);
    assert!(
        matches!(&e, ConfigError::UnknownKey { key, .. } if key == "vlan"),
        "{e:?}"
    );
    assert!(msg.contains("test.toml line 5"), "{msg}");
    assert!(msg.contains("mac-limit"), "{msg}");
    for text in [
        "[fdb]\nagin_s = 1\n",
        "[policy]\ndeny = []\n",
        "[bogus]\n",
        "[switch]\nctrl = \"x\"\n",
    ] {
        let (e, _) = err_file(text);
        assert!(matches!(e, ConfigError::UnknownKey { .. }), "{text}: {e:?}");
    }
}

#[test]
fn unknown_key_in_flag() {
    let (e, msg) = err_flags(&["vm1,socket=/tmp/a.sock,channel=1,vlan=3".into()]);
    assert!(matches!(&e, ConfigError::UnknownKey { key, .. } if key == "vlan"));
    assert!(
        msg.contains("--port \"vm1,socket=/tmp/a.sock,channel=1,vlan=3\""),
        "{msg}"
    );
}

#[test]
fn toml_syntax_and_type_errors() {
    let (e, msg) = err_file("[[port]\nname = 1\n");
    assert!(matches!(e, ConfigError::Toml { .. }));
    assert!(msg.contains("test.toml line 1"), "{msg}");
    let (e, msg) = err_file("[[port]]\nname = 1\nsocket = \"/tmp/a\"\nchannel = 1\n");
    assert!(matches!(e, ConfigError::Toml { .. }), "{e:?}");
    assert!(msg.contains("line 2"), "{msg}");
}

#[test]
fn bad_channels() {
    for (svid, expect) in [
        ("0", ChannelError::Zero),
        ("4095", ChannelError::Reserved),
        ("4096", ChannelError::OutOfRange(4096)),
        (
            "ten",
            ChannelError::NotANumber {
                input: "ten".into(),
            },
        ),
    ] {
        let (e, msg) = err_flags(&[format!("vm1,socket=/tmp/a.sock,channel={svid}")]);
        assert!(
            matches!(&e, ConfigError::Channel { source, .. } if *source == expect),
            "{svid}: {e:?}"
        );
        assert!(msg.contains("1..=4094") && msg.contains("--port"), "{msg}");
    }
    for svid in ["0", "4095", "5000", "-1", "1.5", "\"x\"", "true"] {
        let text =
            format!("[[port]]\nname = \"vm1\"\nsocket = \"/tmp/a.sock\"\nchannel = {svid}\n");
        let e = from_file(&text).expect_err(svid);
        assert!(
            matches!(
                e,
                ConfigError::Channel { .. }
                    | ConfigError::Toml { .. }
                    | ConfigError::BadNumber { key: "channel", .. }
            ),
            "{svid}: {e:?}"
        );
        assert!(e.to_string().contains("test.toml"), "{e}");
    }
}

#[test]
fn missing_keys() {
    for (spec, key) in [
        ("vm1,channel=1", "socket"),
        ("vm1,socket=/tmp/a.sock", "channel"),
        ("socket=/tmp/a.sock,channel=1", "name"),
    ] {
        let (e, msg) = err_flags(&[spec.into()]);
        assert!(
            matches!(e, ConfigError::MissingKey { key: k, .. } if k == key),
            "{spec}"
        );
        assert!(msg.contains(key), "{msg}");
    }
}

#[test]
fn malformed_specs() {
    for spec in [
        "",
        "vm1,socket",
        "vm1,,channel=1",
        "vm1,socket=,channel=1",
        "vm1,=3",
    ] {
        let (e, _) = err_flags(&[spec.into()]);
        assert!(
            matches!(e, ConfigError::MalformedSpec { .. }),
            "{spec:?}: {e:?}"
        );
    }
    let (e, _) = err_flags(&["vm1,socket=/tmp/a,socket=/tmp/b,channel=1".into()]);
    assert!(matches!(&e, ConfigError::DuplicateKey { key, .. } if key == "socket"));
}

#[test]
fn bad_names() {
    let long = "x".repeat(65);
    for name in ["vm 1", "vm/1", long.as_str(), "é"] {
        let (e, _) = err_flags(&[format!("{name},socket=/tmp/a.sock,channel=1")]);
        assert!(matches!(e, ConfigError::BadName { .. }), "{name}: {e:?}");
    }
}

#[test]
fn duplicate_names_and_sockets() {
    let d = TempDir::new("dup");
    let (e, msg) = err_flags(&[
        format!("vm1,socket={},channel=1", d.path("a.sock")),
        format!("vm1,socket={},channel=1", d.path("b.sock")),
    ]);
    assert!(matches!(&e, ConfigError::DuplicateName { name, .. } if name == "vm1"));
    assert!(msg.contains("used twice") && msg.contains("a.sock") && msg.contains("b.sock"));
    // The same socket, spelled differently.
    let (e, msg) = err_flags(&[
        format!("vm1,socket={},channel=1", d.path("a.sock")),
        format!("vm2,socket={}/./x/../a.sock,channel=2", d.0.display()),
    ]);
    assert!(matches!(e, ConfigError::DuplicateSocket { .. }), "{e:?}");
    assert!(msg.contains("vm1") && msg.contains("vm2"), "{msg}");
    // Across file and flags.
    let text = format!(
        "[[port]]\nname = \"vm1\"\nsocket = \"{}\"\nchannel = 1\n",
        d.path("a.sock")
    );
    let e = Config::from_text(
        Some((Path::new("f.toml"), &text)),
        &flags(&[format!("vm1,socket={},channel=1", d.path("c.sock"))]),
    )
    .expect_err("dup");
    assert!(
        e.to_string().contains("f.toml, [[port]] #1 (\"vm1\")"),
        "{e}"
    );
}

#[test]
fn ctl_socket_must_differ_from_ports() {
    let d = TempDir::new("ctl");
    let src = Sources {
        ports: vec![format!("vm1,socket={},channel=1", d.path("a.sock"))],
        ctl: Some(PathBuf::from(d.path("a.sock"))),
        ..Sources::default()
    };
    let e = Config::from_text(None, &src).expect_err("dup");
    assert!(matches!(e, ConfigError::DuplicateSocket { .. }));
    assert!(e.to_string().contains("--ctl"));
}

#[test]
fn socket_directory_missing() {
    let d = TempDir::new("nodir");
    let sock = format!("{}/nope/a.sock", d.0.display());
    let (e, msg) = err_flags(&[format!("vm1,socket={sock},channel=1")]);
    assert!(matches!(e, ConfigError::SocketDirMissing { .. }), "{e:?}");
    assert!(
        msg.contains("does not exist") && msg.contains("mkdir -p"),
        "{msg}"
    );
    // A connect port's directory must exist too.
    let (e, _) = err_flags(&[format!("vm1,socket={sock},channel=1,mode=connect")]);
    assert!(matches!(e, ConfigError::SocketDirMissing { .. }));
}

/// A directory this process may not create files in: a 0500 directory for an ordinary user;
/// for root (which ignores modes) a procfs directory.
fn unwritable_dir(d: &TempDir) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let dir = d.0.join("ro");
    std::fs::create_dir(&dir).expect("mkdir");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o500)).expect("chmod");
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        PathBuf::from("/proc/self")
    } else {
        dir
    }
}

#[test]
fn socket_directory_not_writable() {
    let d = TempDir::new("rodir");
    let sock = unwritable_dir(&d).join("a.sock");
    let (e, msg) = err_flags(&[format!("vm1,socket={},channel=1", sock.display())]);
    assert!(
        matches!(e, ConfigError::SocketDirNotWritable { .. }),
        "{e:?}"
    );
    assert!(msg.contains("not writable"), "{msg}");
    // Connect ports only need the directory to exist.
    let spec = format!("vm1,socket={},channel=1,mode=connect", sock.display());
    assert!(from_flags(&[spec]).is_ok());
}

#[test]
fn socket_paths_that_cannot_be_sockets() {
    let d = TempDir::new("path");
    std::fs::write(d.0.join("file"), b"x").expect("write");
    let long = format!("/tmp/{}.sock", "x".repeat(110));
    for sock in [
        d.path("file"),
        format!("{}/", d.0.display()),
        d.0.display().to_string(),
        long,
        format!("{}/file/a.sock", d.0.display()),
    ] {
        let (e, _) = err_flags(&[format!("vm1,socket={sock},channel=1")]);
        assert!(matches!(e, ConfigError::SocketPath { .. }), "{sock}: {e:?}");
    }
    // An existing socket (a stale one) is fine.
    let stale = d.0.join("stale.sock");
    let _l = std::os::unix::net::UnixListener::bind(&stale).expect("bind");
    assert!(from_flags(&[format!("vm1,socket={},channel=1", stale.display())]).is_ok());
}

#[test]
fn bad_macs() {
    let (e, msg) = err_flags(&["vm1,socket=/tmp/a.sock,channel=1,mac=52:54:00:zz:00:01".into()]);
    assert!(matches!(e, ConfigError::Mac { .. }));
    assert!(
        msg.contains("52:54:00:zz:00:01") && msg.contains("hex"),
        "{msg}"
    );
    let (e, _) = err_flags(&["vm1,socket=/tmp/a.sock,channel=1,mac=52:54:00".into()]);
    assert!(matches!(e, ConfigError::Mac { .. }));
    for mac in ["01:00:5e:00:00:01", "ff:ff:ff:ff:ff:ff"] {
        let (e, msg) = err_flags(&[format!("vm1,socket=/tmp/a.sock,channel=1,mac={mac}")]);
        assert!(matches!(e, ConfigError::MulticastMac { .. }), "{mac}");
        assert!(
            msg.contains("multicast") && msg.contains("unicast"),
            "{msg}"
        );
    }
}

#[test]
fn bad_mac_limits_and_mtus() {
    for v in ["0", "-1", "x", "2000000"] {
        let (e, msg) = err_flags(&[format!("vm1,socket=/tmp/a.sock,channel=1,mac-limit={v}")]);
        assert!(
            matches!(
                e,
                ConfigError::BadNumber {
                    key: "mac-limit",
                    ..
                }
            ),
            "{v}"
        );
        assert!(msg.contains("1..=1048576"), "{msg}");
    }
    for v in ["67", "9001", "0", "big"] {
        let (e, msg) = err_flags(&[format!("vm1,socket=/tmp/a.sock,channel=1,mtu={v}")]);
        assert!(
            matches!(e, ConfigError::BadNumber { key: "mtu", .. }),
            "{v}"
        );
        assert!(msg.contains("68..=9000"), "{msg}");
    }
    for v in ["0", "17", "-1", "two", "1.5"] {
        let (e, msg) = err_flags(&[format!("vm1,socket=/tmp/a.sock,channel=1,queues={v}")]);
        assert!(
            matches!(e, ConfigError::BadNumber { key: "queues", .. }),
            "{v}"
        );
        assert!(msg.contains("1..=16"), "{msg}");
    }
    let (e, _) =
        err_file("[[port]]\nname = \"a\"\nsocket = \"/tmp/a\"\nchannel = 1\nqueues = 32\n");
    assert!(matches!(e, ConfigError::BadNumber { key: "queues", .. }));
    let (e, _) =
        err_file("[[port]]\nname = \"a\"\nsocket = \"/tmp/a\"\nchannel = 1\nmac-limit = 0\n");
    assert!(matches!(e, ConfigError::BadNumber { .. }));
    let (e, _) =
        err_file("[[port]]\nname = \"a\"\nsocket = \"/tmp/a\"\nchannel = 1\nmtu = 1500.5\n");
    assert!(matches!(e, ConfigError::BadNumber { .. }));
}

#[test]
fn bad_modes_and_vepa() {
    let (e, msg) = err_flags(&["vm1,socket=/tmp/a.sock,channel=1,mode=server".into()]);
    assert!(matches!(e, ConfigError::Mode { .. }));
    assert!(msg.contains("listen") && msg.contains("connect"));
    // VEPA without an uplink: see `uplinks::vepa_needs_an_uplink_carrying_its_channel`.
    for spec in [
        "vm1,socket=/tmp/a.sock,channel=1,channel-mode=vepa",
        "vm1,socket=/tmp/a.sock,channel=1,channel_mode=VEPA",
        "vm1,socket=/tmp/a.sock,channel=1,mode=vepa",
    ] {
        let (e, msg) = err_flags(&[spec.into()]);
        assert!(matches!(e, ConfigError::Vepa { .. }), "{spec}");
        assert!(
            msg.contains("no uplink is configured") && msg.contains("--uplink"),
            "{msg}"
        );
    }
    let (e, _) = err_flags(&["vm1,socket=/tmp/a.sock,channel=1,channel-mode=vxlan".into()]);
    assert!(matches!(e, ConfigError::ChannelMode { .. }));
    let (e, _) = err_file(
        "[[port]]\nname = \"a\"\nsocket = \"/tmp/a\"\nchannel = 1\nchannel-mode = \"vepa\"\n",
    );
    assert!(matches!(e, ConfigError::Vepa { .. }));
}

#[test]
fn bad_policy_entries() {
    let port = "[[port]]\nname = \"a\"\nsocket = \"/tmp/a.sock\"\nchannel = 1\n";
    for allow in [
        "[[100]]",
        "[[100, 200, 300]]",
        "[[0, 200]]",
        "[[100, 4095]]",
    ] {
        let (e, msg) = err_file(&format!("[policy]\nallow = {allow}\n{port}"));
        assert!(
            matches!(e, ConfigError::PolicyEntry { index: 1, .. }),
            "{allow}: {e:?}"
        );
        assert!(msg.contains("allow entry #1"), "{msg}");
    }
}

#[test]
fn bad_fdb_and_switch_settings() {
    let port = "[[port]]\nname = \"a\"\nsocket = \"/tmp/a.sock\"\nchannel = 1\n";
    for table in [
        "[fdb]\naging_s = 0\n",
        "[fdb]\nmac_limit = 0\n",
        "[fdb]\ncapacity = 0\n",
        "[switch]\nstats_interval_s = 0\n",
        "[switch]\nevent_threads = 0\n",
        "[switch]\nevent_threads = 257\n",
        "[switch]\nevent_threads = \"two\"\n",
        "[switch]\nmax_mem_regions = 0\n",
        "[switch]\nmax_mem_regions = 510\n",
        "[switch]\nmax_mem_mib = 0\n",
        "[switch]\nmax_mem_mib = 134217729\n",
        "[switch]\nmax_mem_mib = 1.5\n",
    ] {
        let (e, _) = err_file(&format!("{table}{port}"));
        assert!(matches!(e, ConfigError::BadNumber { .. }), "{table}: {e:?}");
    }
    let (e, msg) = err_file(&format!("[switch]\npoll_cores = [4000]\n{port}"));
    assert!(matches!(e, ConfigError::PollCores { .. }), "{e:?}");
    assert!(msg.contains("CPU 4000 is not available"), "{msg}");
    let (e, _) = err_file(&format!("[switch]\nlog_level = \"loud\"\n{port}"));
    assert!(matches!(e, ConfigError::LogLevel { .. }));
    let (e, _) = err_file(&format!("[[uplink]]\nname = \"eth0\"\n{port}"));
    assert!(matches!(
        e,
        ConfigError::UplinkMissingKey { key: "kind", .. }
    ));
    let src = Sources {
        ports: vec!["vm1,socket=/tmp/a.sock,channel=1".into()],
        stats_interval_s: Some(0),
        ..Sources::default()
    };
    assert!(matches!(
        Config::from_text(None, &src),
        Err(ConfigError::BadNumber { .. })
    ));
    let src = Sources {
        ports: vec!["vm1,socket=/tmp/a.sock,channel=1".into()],
        log_level: Some("chatty".into()),
        ..Sources::default()
    };
    let e = Config::from_text(None, &src).expect_err("level");
    assert!(e.to_string().contains("--log-level"));
}
