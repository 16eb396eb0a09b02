//! Uplinks from flags and files, every refusal of one, and VEPA ports (which need one).

use std::net::{IpAddr, SocketAddr};

use vswitch_channels::{ChannelMode, ChannelSet};

use super::*;
use crate::uplink::{AfXdp, Transport};

fn uplink_flags(ports: &[String], uplinks: &[&str]) -> Result<Config, ConfigError> {
    let src = Sources {
        ports: ports.to_vec(),
        uplinks: uplinks.iter().map(|s| s.to_string()).collect(),
        ..Sources::default()
    };
    Config::from_text(None, &src)
}

fn err_uplink(spec: &str) -> (ConfigError, String) {
    let e = uplink_flags(&[], &[spec]).expect_err(spec);
    let msg = e.to_string();
    (e, msg)
}

fn set(channels: &[u16]) -> ChannelSet {
    channels.iter().map(|&c| ch(c)).collect()
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("ip")
}

#[test]
fn pinned_forms_carry_every_channel() {
    let c = uplink_flags(
        &[],
        &[
            "trunk,kind=dot1ad,interface=lo",
            "vx,kind=vxlan,local=192.0.2.1,remote=192.0.2.2",
        ],
    )
    .expect("valid: uplinks alone are a configuration (a bridge for other hosts)");
    assert!(c.ports.is_empty());
    let [d, v] = c.uplinks.as_slice() else {
        panic!("two uplinks: {:?}", c.uplinks)
    };
    assert_eq!(d.spec.name, "trunk");
    assert_eq!(
        d.transport,
        Transport::Dot1ad {
            interface: "lo".into(),
            xdp: AfXdp::Auto,
        }
    );
    assert_eq!(d.spec.channels.len(), 4094);
    assert_eq!((d.spec.reflective_relay, d.spec.mac_limit), (false, None));
    assert_eq!(d.mtu, DOT1AD_MTU);
    assert_eq!(
        v.transport,
        Transport::Vxlan {
            local: SocketAddr::new(ip("192.0.2.1"), 4789),
            remotes: vec![ip("192.0.2.2")],
        }
    );
    assert_eq!(v.spec.channels.len(), 4094);
    assert_eq!(v.mtu, VXLAN_MTU);
}

#[test]
fn every_key_from_a_flag() {
    let c = uplink_flags(
        &[],
        &[
            "name=t,kind=DOT1AD,interface=lo,channels=100+200-202,reflective-relay=on,mac-limit=9,mtu=9000",
            "v,kind=vxlan,local=[2001:db8::1]:8472,remote=2001:db8::2,remotes=2001:db8::3,channels=7,reflective_relay=off,mac_limit=3,mtu=1400",
        ],
    )
    .expect("valid");
    let (d, v) = (&c.uplinks[0], &c.uplinks[1]);
    assert_eq!(d.spec.channels, set(&[100, 200, 201, 202]));
    assert_eq!(
        (d.spec.reflective_relay, d.spec.mac_limit, d.mtu),
        (true, Some(9), 9000)
    );
    assert_eq!(
        v.transport,
        Transport::Vxlan {
            local: "[2001:db8::1]:8472".parse().expect("addr"),
            remotes: vec![ip("2001:db8::2"), ip("2001:db8::3")],
        }
    );
    assert_eq!(v.spec.channels, set(&[7]));
    assert_eq!(
        (v.spec.reflective_relay, v.spec.mac_limit, v.mtu),
        (false, Some(3), 1400)
    );
}

#[test]
fn uplinks_from_a_file_then_flags() {
    let text = r#"
[[uplink]]
name = "t"
kind = "dot1ad"
interface = "lo"
channels = [100, "200-201"]
reflective-relay = true
xdp = false

[[uplink]]
name = "v"
kind = "vxlan"
local = "10.0.0.1:4790"
remote = ["10.0.0.2", "10.0.0.3"]
channels = "5+6"
mac_limit = 10

[[uplink]]
name = "w"
kind = "vxlan"
local = "10.0.0.1"
remote = "10.0.0.9"
"#;
    let src = Sources {
        uplinks: vec!["f,kind=dot1ad,interface=lo,channels=1".into()],
        ..Sources::default()
    };
    let err = Config::from_text(Some((Path::new("u.toml"), text)), &src)
        .expect_err("lo twice")
        .to_string();
    assert!(
        err.contains("interface lo is used by two uplinks")
            && err.contains("u.toml, [[uplink]] #1 (\"t\")")
            && err.contains("--uplink \"f,kind=dot1ad"),
        "{err}"
    );
    let c =
        Config::from_text(Some((Path::new("u.toml"), text)), &Sources::default()).expect("valid");
    let names: Vec<_> = c.uplinks.iter().map(|u| u.spec.name.as_str()).collect();
    assert_eq!(names, ["t", "v", "w"]);
    assert_eq!(c.uplinks[0].spec.channels, set(&[100, 200, 201]));
    assert!(c.uplinks[0].spec.reflective_relay);
    assert_eq!(
        c.uplinks[0].transport,
        Transport::Dot1ad {
            interface: "lo".into(),
            xdp: AfXdp::Off,
        }
    );
    assert_eq!(c.uplinks[1].spec.channels, set(&[5, 6]));
    assert_eq!(c.uplinks[1].spec.mac_limit, Some(10));
    assert_eq!(
        c.uplinks[2].transport,
        Transport::Vxlan {
            local: "10.0.0.1:4789".parse().expect("addr"),
            remotes: vec![ip("10.0.0.9")],
        }
    );
}

#[test]
fn malformed_specs_and_keys() {
    for (spec, want) in [
        ("", "the uplink spec is empty"),
        (
            "up,kind=dot1ad,interface=lo,channels=100,200",
            "join a channel list with '+'",
        ),
        (
            "up,kind=vxlan,local=10.0.0.1,remote=10.0.0.2,10.0.0.3",
            "give each remote VTEP its own remote=",
        ),
        ("up,kind=dot1ad,interface=lo,eth1", "only the first element"),
        ("up,kind=dot1ad,interface=", "key `interface` has no value"),
        ("up,kind=dot1ad,=lo", "has an empty key"),
    ] {
        let (e, msg) = err_uplink(spec);
        assert!(
            matches!(e, ConfigError::MalformedUplink { .. }),
            "{spec}: {e:?}"
        );
        assert!(msg.contains(want), "{spec}: {msg}");
        assert!(msg.contains("kind=vxlan,local=IP"), "no forms in: {msg}");
        assert!(msg.starts_with("--uplink "), "{msg}");
    }
    let (e, msg) = err_uplink("up,kind=dot1ad,interface=lo,vlan=5");
    assert!(matches!(e, ConfigError::UnknownKey { .. }), "{e:?}");
    assert!(
        msg.contains("unknown key `vlan`") && msg.contains("reflective-relay"),
        "{msg}"
    );
    let (e, msg) = err_uplink("up,kind=dot1ad,interface=lo,interface=lo");
    assert!(matches!(e, ConfigError::DuplicateKey { .. }), "{e:?}");
    assert!(msg.contains("`interface` is given twice"), "{msg}");
    let (e, msg) =
        err_file("[[uplink]]\nname = \"up\"\nkind = \"dot1ad\"\ninterface = \"lo\"\nvlan = 1\n");
    assert!(matches!(e, ConfigError::UnknownKey { .. }), "{e:?}");
    assert!(msg.contains("test.toml line 5"), "{msg}");
    let (e, _) = err_file("[uplink]\nname = \"up\"\n");
    assert!(
        matches!(e, ConfigError::Toml { .. }),
        "a table, not an array of tables: {e:?}"
    );
}

#[test]
fn missing_and_unknown_kinds() {
    for (spec, key) in [
        ("kind=dot1ad,interface=lo", "name"),
        ("up", "kind"),
        ("up,interface=lo", "kind"),
        ("up,kind=dot1ad", "interface"),
        ("up,kind=vxlan,remote=10.0.0.2", "local"),
        ("up,kind=vxlan,local=10.0.0.1", "remote"),
    ] {
        let (e, msg) = err_uplink(spec);
        assert!(
            matches!(&e, ConfigError::UplinkMissingKey { key: k, .. } if *k == key),
            "{spec}: {e:?}"
        );
        assert!(
            msg.contains(&format!("missing `{key}`")) && msg.contains("e.g."),
            "{msg}"
        );
    }
    let (e, _) = err_file(
        "[[uplink]]\nname = \"up\"\nkind = \"vxlan\"\nlocal = \"10.0.0.1\"\nremote = []\n",
    );
    assert!(
        matches!(e, ConfigError::UplinkMissingKey { key: "remote", .. }),
        "{e:?}"
    );
    let (e, msg) = err_uplink("up,kind=geneve,interface=lo");
    assert!(matches!(e, ConfigError::UplinkKind { .. }), "{e:?}");
    assert!(
        msg.contains("\"geneve\"") && msg.contains("kind=dot1ad") && msg.contains("kind=vxlan"),
        "{msg}"
    );
    let (e, _) = err_uplink("up!,kind=dot1ad,interface=lo");
    assert!(matches!(e, ConfigError::BadName { .. }), "{e:?}");
}

#[test]
fn keys_of_the_other_kind() {
    for (spec, key) in [
        ("up,kind=dot1ad,interface=lo,local=10.0.0.1", "local"),
        ("up,kind=dot1ad,interface=lo,remote=10.0.0.2", "remote"),
        (
            "up,kind=vxlan,interface=lo,local=10.0.0.1,remote=10.0.0.2",
            "interface",
        ),
        (
            "up,kind=vxlan,local=10.0.0.1,remote=10.0.0.2,reflective-relay=on",
            "reflective-relay",
        ),
        ("up,kind=vxlan,local=10.0.0.1,remote=10.0.0.2,xdp=on", "xdp"),
    ] {
        let (e, msg) = err_uplink(spec);
        assert!(
            matches!(&e, ConfigError::UplinkKeyForKind { key: k, .. } if *k == key),
            "{spec}: {e:?}"
        );
        assert!(msg.contains("does not apply to a"), "{msg}");
    }
    // Off is what a vxlan uplink is anyway.
    uplink_flags(
        &[],
        &["up,kind=vxlan,local=10.0.0.1,remote=10.0.0.2,reflective-relay=off"],
    )
    .expect("reflective-relay=off on vxlan is harmless");
    let (e, msg) = err_uplink("up,kind=dot1ad,interface=lo,reflective-relay=maybe");
    assert!(matches!(e, ConfigError::UplinkSwitch { .. }), "{e:?}");
    assert!(msg.contains("use on or off"), "{msg}");
}

/// `xdp=` picks a dot1ad uplink's I/O path: auto (the default), on, off, in any case, given
/// once; anything else is refused before anything starts.
#[test]
fn the_io_path_of_a_dot1ad_uplink() {
    for (spec, want) in [
        ("up,kind=dot1ad,interface=lo", AfXdp::Auto),
        ("up,kind=dot1ad,interface=lo,xdp=auto", AfXdp::Auto),
        ("up,kind=dot1ad,interface=lo,xdp=ON", AfXdp::On),
        ("up,kind=dot1ad,interface=lo,xdp=off", AfXdp::Off),
    ] {
        let c = uplink_flags(&[], &[spec]).expect(spec);
        let want = Transport::Dot1ad {
            interface: "lo".into(),
            xdp: want,
        };
        assert_eq!(c.uplinks[0].transport, want, "{spec}");
    }
    let (e, msg) = err_uplink("up,kind=dot1ad,interface=lo,xdp=yes");
    assert!(matches!(e, ConfigError::UplinkXdp { .. }), "{e:?}");
    assert!(msg.contains("use auto"), "{msg}");
    let (e, _) = err_uplink("up,kind=dot1ad,interface=lo,xdp=on,xdp=off");
    assert!(matches!(e, ConfigError::DuplicateKey { .. }), "{e:?}");
}

#[test]
fn bad_interfaces() {
    for (name, want) in [
        ("no-such-if0", "does not exist in this network namespace"),
        ("a/b", "not a valid interface name"),
        ("eth 1", "not a valid interface name"),
        ("averyveryverylongname", "not a valid interface name"),
        ("..", "not a valid interface name"),
    ] {
        let (e, msg) = err_uplink(&format!("up,kind=dot1ad,interface={name}"));
        assert!(matches!(e, ConfigError::Interface { .. }), "{name}: {e:?}");
        assert!(msg.contains(want), "{name}: {msg}");
    }
}

#[test]
fn bad_addresses() {
    let vx = |local: &str, remotes: &str| format!("up,kind=vxlan,local={local},{remotes}");
    for (spec, key, want) in [
        (
            vx("10.0.0.1.5", "remote=10.0.0.2"),
            "local",
            "not an IP address or IP:PORT",
        ),
        (
            vx("host.example", "remote=10.0.0.2"),
            "local",
            "not an IP address",
        ),
        (vx("10.0.0.1:0", "remote=10.0.0.2"), "local", "UDP port 0"),
        (
            vx("10.0.0.1:99999", "remote=10.0.0.2"),
            "local",
            "not an IP address",
        ),
        (
            vx("239.1.1.1", "remote=10.0.0.2"),
            "local",
            "not a unicast address",
        ),
        (
            vx("10.0.0.1", "remote=10.0.0.2:4789"),
            "remote",
            "has a port",
        ),
        (vx("10.0.0.1", "remote=nope"), "remote", "not an IP address"),
        (
            vx("10.0.0.1", "remote=0.0.0.0"),
            "remote",
            "not a unicast address",
        ),
        (
            vx("10.0.0.1", "remote=255.255.255.255"),
            "remote",
            "not a unicast address",
        ),
        (
            vx("10.0.0.1", "remote=239.1.1.1"),
            "remote",
            "not a unicast address",
        ),
        (
            vx("10.0.0.1", "remote=2001:db8::2"),
            "remote",
            "is IPv6 and local 10.0.0.1 is IPv4",
        ),
        (
            vx("10.0.0.1:4790", "remote=10.0.0.1"),
            "remote",
            "is the local address",
        ),
        (
            vx("10.0.0.1", "remote=10.0.0.2,remote=10.0.0.2"),
            "remote",
            "is listed twice",
        ),
    ] {
        let (e, msg) = err_uplink(&spec);
        assert!(
            matches!(&e, ConfigError::UplinkAddress { key: k, .. } if *k == key),
            "{spec}: {e:?}"
        );
        assert!(msg.contains(want), "{spec}: {msg}");
    }
    uplink_flags(&[], &[&vx("0.0.0.0", "remote=10.0.0.2")]).expect("any local address");
    uplink_flags(&[], &[&vx("127.0.0.1", "remote=127.0.0.2")]).expect("loopback pairs");
}

#[test]
fn bad_channels_mac_limits_and_mtus() {
    for (list, want) in [
        ("0", "channel id 0"),
        ("4095", "reserved"),
        ("4096", "out of range"),
        ("100-4095", "reserved"),
        ("300-200", "runs backwards"),
        ("100+100", "listed twice"),
        ("100++200", "is empty"),
        ("abc", "not a decimal number"),
    ] {
        let (e, msg) = err_uplink(&format!("up,kind=dot1ad,interface=lo,channels={list}"));
        assert!(
            matches!(e, ConfigError::UplinkChannels { .. }),
            "{list}: {e:?}"
        );
        assert!(
            msg.contains(want) && msg.contains("channels=100+200-299"),
            "{list}: {msg}"
        );
    }
    let base = "[[uplink]]\nname = \"up\"\nkind = \"dot1ad\"\ninterface = \"lo\"\n";
    for channels in ["[]", "[0]", "[1.5]", "\"\"", "[\"5-\"]", "[[1]]"] {
        let text = format!("{base}channels = {channels}\n");
        let e = from_file(&text).expect_err(channels);
        assert!(
            matches!(
                e,
                ConfigError::UplinkChannels { .. } | ConfigError::Toml { .. }
            ),
            "{channels}: {e:?}"
        );
    }
    let (e, _) = err_file(&format!("{base}channels = 5\n"));
    assert!(matches!(e, ConfigError::Toml { .. }), "{e:?}");
    for (extra, want) in [
        ("mac-limit=0", "mac-limit 0 is not valid"),
        ("mtu=67", "68..=9000"),
        ("mtu=9001", "68..=9000"),
    ] {
        let (e, msg) = err_uplink(&format!("up,kind=dot1ad,interface=lo,{extra}"));
        assert!(matches!(e, ConfigError::BadNumber { .. }), "{extra}: {e:?}");
        assert!(msg.contains(want), "{msg}");
    }
}

#[test]
fn names_are_unique_among_ports_and_uplinks() {
    let d = TempDir::new("uplink-names");
    let port = format!("vm1,socket={},channel=100", d.path("a.sock"));
    let e = uplink_flags(
        std::slice::from_ref(&port),
        &["vm1,kind=dot1ad,interface=lo"],
    )
    .expect_err("a port's name")
    .to_string();
    assert!(
        e.contains("port name \"vm1\" is used twice")
            && e.contains("--port \"vm1,socket=")
            && e.contains("--uplink \"vm1,kind=dot1ad")
            && e.contains("every port and uplink its own name"),
        "{e}"
    );
    let e = uplink_flags(
        &[],
        &[
            "up,kind=dot1ad,interface=lo",
            "up,kind=vxlan,local=10.0.0.1,remote=10.0.0.2",
        ],
    )
    .expect_err("two uplinks")
    .to_string();
    assert!(e.contains("port name \"up\" is used twice"), "{e}");
    for (a, b) in [
        (
            "a,kind=vxlan,local=10.0.0.1,remote=10.0.0.2",
            "b,kind=vxlan,local=10.0.0.1:4789,remote=10.0.0.3",
        ),
        (
            "a,kind=vxlan,local=0.0.0.0,remote=10.0.0.2",
            "b,kind=vxlan,local=10.0.0.1,remote=10.0.0.3",
        ),
    ] {
        let e = uplink_flags(&[], &[a, b]).expect_err(b).to_string();
        assert!(
            e.contains("local address") && e.contains("used by two uplinks"),
            "{e}"
        );
    }
    uplink_flags(
        &[],
        &[
            "a,kind=vxlan,local=10.0.0.1,remote=10.0.0.2",
            "b,kind=vxlan,local=10.0.0.1:4790,remote=10.0.0.3",
        ],
    )
    .expect("two UDP ports");
}

#[test]
fn vepa_needs_an_uplink_carrying_its_channel() {
    let d = TempDir::new("vepa");
    let vepa = format!("vm1,socket={},channel=100,mode=vepa", d.path("a.sock"));
    let c = uplink_flags(
        std::slice::from_ref(&vepa),
        &["up,kind=dot1ad,interface=lo"],
    )
    .expect("valid");
    assert_eq!(c.ports[0].channel_mode, ChannelMode::Vepa);
    assert_eq!(c.ports[0].role, SocketRole::Listen);
    let connect = format!(
        "vm2,socket={},channel=100,mode=connect,channel-mode=vepa",
        d.path("b.sock")
    );
    let c = uplink_flags(&[connect], &["up,kind=dot1ad,interface=lo,channels=100"]).expect("valid");
    assert_eq!(
        (c.ports[0].channel_mode, c.ports[0].role),
        (ChannelMode::Vepa, SocketRole::Connect)
    );
    let (e, msg) = err_flags(std::slice::from_ref(&vepa));
    assert!(matches!(e, ConfigError::Vepa { .. }), "{e:?}");
    assert!(msg.contains("no uplink is configured"), "{msg}");
    let e = uplink_flags(&[vepa], &["up,kind=dot1ad,interface=lo,channels=200-299"])
        .expect_err("100 not carried");
    assert!(matches!(e, ConfigError::VepaNotCarried { .. }), "{e:?}");
    assert!(
        e.to_string().contains("no uplink carries channel 100"),
        "{e}"
    );
    let both = format!(
        "vm1,socket={},channel=100,mode=vepa,channel-mode=veb",
        d.path("a.sock")
    );
    let (e, msg) = err_flags(&[both]);
    assert!(matches!(e, ConfigError::ModeConflict { .. }), "{e:?}");
    assert!(msg.contains("contradict"), "{msg}");
    let text = format!(
        "[[port]]\nname = \"vm1\"\nsocket = \"{}\"\nchannel = 100\nmode = \"vepa\"\n\
         [[uplink]]\nname = \"up\"\nkind = \"dot1ad\"\ninterface = \"lo\"\n",
        d.path("a.sock")
    );
    assert_eq!(
        from_file(&text).expect("valid").ports[0].channel_mode,
        ChannelMode::Vepa
    );
}
