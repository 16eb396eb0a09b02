//! Hosts as network namespaces, each running the `vswitch` binary as users do (`ip netns exec
//! NS vswitch run ... --uplink ...`), joined by veth pairs; in-process guests attached over
//! vhost-user sockets. The channel travels on the wire (802.1ad, VXLAN) and the far switch
//! checks it against its own registry. Skips with one line when not root.
//!
//! 802.1ad uplinks run over the I/O path of `VSW_UPLINK_XDP` (`xdp=` on their spec: `auto`
//! when unset, `on`, `off`), except where a test names one.

use std::time::Duration;

use anyhow::Result;
use vswitch_testguest::{EthFrame, GuestConfig, TestGuest};
use vswitch_tests::netns::{unavailable, veth, Netns};
use vswitch_tests::{ScratchDir, Vswitch, VswitchPort};

const T: Duration = Duration::from_secs(10);
const QUIET: Duration = Duration::from_millis(300);
const BCAST: [u8; 6] = [0xff; 6];

fn skip() -> bool {
    match unavailable() {
        Some(why) => {
            eprintln!("multi_host: SKIPPED: {why}");
            true
        }
        None => false,
    }
}

fn mac(n: u8) -> [u8; 6] {
    [0x52, 0x54, 0, 0, 0x77, n]
}

fn mac_text(n: u8) -> String {
    let m = mac(n);
    format!(
        "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        m[0], m[1], m[2], m[3], m[4], m[5]
    )
}

/// One host: its namespace, a scratch directory for sockets and logs, its switch.
struct Host {
    sw: Vswitch,
    dir: ScratchDir,
}

impl Host {
    /// Starts `vswitch` in `ns` with VMs `(name, channel, mac)` and the uplink `uplink`.
    fn start(ns: &Netns, vms: &[(&str, u16, u8)], uplinks: &[String]) -> Result<Host> {
        let dir = ScratchDir::new(ns.name())?;
        let ports: Vec<VswitchPort> = vms
            .iter()
            .map(|(name, ch, m)| {
                VswitchPort::listen(name, dir.path().join(format!("{name}.sock")), *ch)
                    .mac(&mac_text(*m))
            })
            .collect();
        let mut extra: Vec<&str> = Vec::new();
        for u in uplinks {
            extra.push("--uplink");
            extra.push(u);
        }
        let sw = Vswitch::start_in(Some(ns.name()), dir.path(), &ports, &extra)?;
        Ok(Host { sw, dir })
    }

    fn guest(&self, name: &str, m: u8) -> TestGuest {
        let cfg = GuestConfig {
            mac: mac(m),
            ..GuestConfig::default()
        };
        let mut g = TestGuest::connect(&self.dir.path().join(format!("{name}.sock")), cfg)
            .expect("guest connects");
        self.sw
            .wait_connected(&[name], T)
            .expect("the switch sees the guest");
        g.post_rx(256).expect("post rx");
        g
    }
}

fn eth(dst: [u8; 6], src: [u8; 6], marker: u32) -> Vec<u8> {
    let mut payload = vec![0u8; 46];
    payload[..4].copy_from_slice(&marker.to_be_bytes());
    EthFrame::new(dst, src, 0x88b5, &payload).build()
}

/// A frame carrying the guest's own 802.1Q C-tag `vid`.
fn c_tagged(dst: [u8; 6], src: [u8; 6], vid: u16) -> Vec<u8> {
    let mut f = Vec::with_capacity(64);
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&[0x81, 0x00]);
    f.extend_from_slice(&vid.to_be_bytes());
    f.extend_from_slice(&[0x88, 0xb5]);
    f.resize(64, 0xab);
    f
}

/// A dot1ad uplink spec on interface `trunk` with `rest` (`,key=value...`), and `xdp=` from
/// `VSW_UPLINK_XDP` when that is set.
fn dot1ad(rest: &str) -> String {
    match std::env::var("VSW_UPLINK_XDP") {
        Ok(x) if !x.is_empty() => format!("up,kind=dot1ad,interface=trunk{rest},xdp={x}"),
        _ => format!("up,kind=dot1ad,interface=trunk{rest}"),
    }
}

/// Hosts A and B joined by a veth pair whose ends are both called `trunk`.
fn trunked_hosts() -> (Netns, Netns) {
    let (a, b) = (
        Netns::new("a").expect("netns"),
        Netns::new("b").expect("netns"),
    );
    veth(&a, "trunk", None, &b, "trunk", None).expect("veth");
    (a, b)
}

fn quiet(g: &mut TestGuest) -> Vec<Vec<u8>> {
    g.recv_all(QUIET)
}

/// The scenario of the issue on any transport: VM1 (A) and VM2 (B) on channel 100, VM3 (A) and
/// VM4 (B) on channel 200. Returns the two hosts, still running.
fn same_channel_only(
    a_uplink: String,
    b_uplink: String,
    a_ns: &Netns,
    b_ns: &Netns,
) -> (Host, Host) {
    let a = Host::start(a_ns, &[("vm1", 100, 1), ("vm3", 200, 3)], &[a_uplink]).expect("host A");
    let b = Host::start(b_ns, &[("vm2", 100, 2), ("vm4", 200, 4)], &[b_uplink]).expect("host B");
    let mut g1 = a.guest("vm1", 1);
    let mut g3 = a.guest("vm3", 3);
    let mut g2 = b.guest("vm2", 2);
    let mut g4 = b.guest("vm4", 4);

    // Broadcast, then unknown unicast, on channel 100: VM2 only.
    for f in [eth(BCAST, mac(1), 1), eth(mac(2), mac(1), 2)] {
        g1.send(&f).expect("send");
        assert_eq!(
            g2.recv(T),
            Some(f),
            "vm2 gets vm1's frame across the uplink"
        );
    }
    // Known unicast back, and a guest's own C-tag arrives intact.
    let r = eth(mac(1), mac(2), 3);
    g2.send(&r).expect("send");
    assert_eq!(g1.recv(T), Some(r), "vm1 gets vm2's answer");
    let tagged = c_tagged(mac(1), mac(2), 7);
    g2.send(&tagged).expect("send");
    assert_eq!(g1.recv(T), Some(tagged), "the guest's C-tag crosses intact");
    // Channel 200 apart.
    let f = eth(BCAST, mac(4), 4);
    g4.send(&f).expect("send");
    assert_eq!(g3.recv(T), Some(f), "vm3 gets vm4's broadcast on 200");
    for (g, who) in [
        (&mut g1, "vm1"),
        (&mut g2, "vm2"),
        (&mut g3, "vm3"),
        (&mut g4, "vm4"),
    ] {
        let extra = quiet(g);
        assert!(
            extra.is_empty(),
            "{who} got frames of another channel: {}",
            extra.len()
        );
    }
    // The far switch saw channel 100 arrive over its uplink and gave it to channel 100 only.
    let s = b.sw.stats().expect("stats of B");
    let ch100 = s.channel(100).expect("channel 100 on B");
    assert!(
        ch100.counters.in_frames >= 2,
        "B counted channel-100 frames in: {ch100:?}"
    );
    assert_eq!(
        s.port("vm4").expect("vm4").switch.out_frames,
        0,
        "vm4 (200) was given none of channel 100's frames"
    );
    (a, b)
}

#[test]
fn dot1ad_trunk_same_channel_across_hosts_only() {
    if skip() {
        return;
    }
    let (a, b) = trunked_hosts();
    same_channel_only(dot1ad(""), dot1ad(""), &a, &b);
}

/// The same over AF_XDP on both hosts (`xdp=on`), and each switch says so in its log.
#[test]
fn dot1ad_trunk_over_af_xdp_across_hosts() {
    if skip() {
        return;
    }
    let (a, b) = trunked_hosts();
    let spec = "up,kind=dot1ad,interface=trunk,xdp=on".to_string();
    let (host_a, host_b) = same_channel_only(spec.clone(), spec, &a, &b);
    for (h, who) in [(&host_a, "A"), (&host_b, "B")] {
        let ran =
            h.sw.wait_log("uplink up: AF_XDP (", T)
                .expect("the switch's log");
        assert!(ran, "{who} says AF_XDP runs:\n{}", h.sw.log_tail(20));
    }
}

#[test]
fn vxlan_same_channel_across_hosts_only() {
    if skip() {
        return;
    }
    let (a, b) = (
        Netns::new("a").expect("netns"),
        Netns::new("b").expect("netns"),
    );
    veth(
        &a,
        "ul",
        Some("10.88.0.1/24"),
        &b,
        "ul",
        Some("10.88.0.2/24"),
    )
    .expect("veth");
    same_channel_only(
        "up,kind=vxlan,local=10.88.0.1,remote=10.88.0.2".into(),
        "up,kind=vxlan,local=10.88.0.2,remote=10.88.0.1".into(),
        &a,
        &b,
    );
}

/// Three hosts in a VXLAN full mesh: a broadcast reaches each other host's VM exactly once (no
/// switch forwards from one uplink to another: split horizon), and nothing loops.
#[test]
fn vxlan_three_hosts_split_horizon() {
    if skip() {
        return;
    }
    // One fabric namespace holds the three underlay addresses (on its loopback); each
    // switch binds its own, as three hosts on one L3 network would.
    let fabric = Netns::new("fabric").expect("netns");
    for n in 1..=3 {
        fabric
            .ip(&["addr", "add", &format!("10.89.0.{n}/32"), "dev", "lo"])
            .expect("address");
    }
    let uplink = |me: u8| {
        let remotes: Vec<String> = (1..=3u8)
            .filter(|n| *n != me)
            .map(|n| format!("remote=10.89.0.{n}"))
            .collect();
        format!("up,kind=vxlan,local=10.89.0.{me},{}", remotes.join(","))
    };
    let hosts: Vec<Host> = (1..=3u8)
        .map(|n| Host::start(&fabric, &[(&format!("vm{n}"), 100, n)], &[uplink(n)]).expect("host"))
        .collect();
    let mut guests: Vec<TestGuest> = hosts
        .iter()
        .enumerate()
        .map(|(i, h)| h.guest(&format!("vm{}", i + 1), i as u8 + 1))
        .collect();
    let f = eth(BCAST, mac(1), 9);
    guests[0].send(&f).expect("send");
    for g in &mut guests[1..] {
        let got = quiet(g);
        assert_eq!(got, vec![f.clone()], "exactly one copy on each other host");
    }
    assert!(
        quiet(&mut guests[0]).is_empty(),
        "the sender never gets it back"
    );
}

/// VEPA through a second switch with reflective relay, over an 802.1ad trunk: two VEPA VMs of
/// host A reach each other only through the bridge host B, which sends their frames back out
/// of the trunk they came in on; a VEPA VM never receives its own frames.
#[test]
fn vepa_through_a_reflective_relay_bridge() {
    if skip() {
        return;
    }
    let (a, b) = trunked_hosts();
    let dir = ScratchDir::new("vepa").expect("scratch");
    let mut extra: Vec<String> = Vec::new();
    for (name, m) in [("vm1", 1u8), ("vm2", 2)] {
        extra.push("--port".into());
        extra.push(format!(
            "{name},socket={},channel=100,mac={},mode=vepa",
            dir.path().join(format!("{name}.sock")).display(),
            mac_text(m)
        ));
    }
    extra.push("--uplink".into());
    extra.push(dot1ad(""));
    let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
    let station = Host {
        sw: Vswitch::start_in(Some(a.name()), dir.path(), &[], &extra).expect("station"),
        dir,
    };
    let bridge_dir = ScratchDir::new("bridge").expect("scratch");
    let _bridge = Vswitch::start_in(
        Some(b.name()),
        bridge_dir.path(),
        &[],
        &["--uplink", &dot1ad(",reflective-relay=on")],
    )
    .expect("bridge");
    let mut g1 = station.guest("vm1", 1);
    let mut g2 = station.guest("vm2", 2);
    for f in [eth(mac(2), mac(1), 1), eth(BCAST, mac(1), 2)] {
        g1.send(&f).expect("send");
        assert_eq!(
            g2.recv(T),
            Some(f),
            "vm2 gets vm1's frame back from the bridge"
        );
    }
    let r = eth(mac(1), mac(2), 3);
    g2.send(&r).expect("send");
    assert_eq!(g1.recv(T), Some(r), "vm1 gets the answer");
    assert!(quiet(&mut g1).is_empty(), "vm1 never gets its own frames");
    assert!(quiet(&mut g2).is_empty(), "vm2 never gets its own frames");
}
