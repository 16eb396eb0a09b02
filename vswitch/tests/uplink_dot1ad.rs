//! The 802.1ad trunk on a real link: each test runs in a private network namespace with a
//! veth pair `va`/`vb`; switch A's uplink is on `va`, switch B's on `vb` (or a raw socket on
//! `va` plays a forger). Guests are in-process, over real vhost-user sockets. Needs root;
//! skipped with one line otherwise.
//!
//! The I/O path: the scenarios that matter most run once over each (`..._over_af_xdp`, which
//! also checks that AF_XDP ran, and `..._over_af_packet`); the others take the path from
//! `VSW_UPLINK_XDP` (`auto` by default, `on`, `off`), so that all of them can run over either.

mod common;

use std::io::{self, BufRead, BufReader};
use std::mem::{size_of, zeroed};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use common::{ch, drain, eth, mac, vm, Net, BCAST};
use vswitch::counters::Drops;
use vswitch::port::UplinkSpec;
use vswitch::uplink::dot1ad::Dot1adUplink;
use vswitch::uplink::{self, AfXdp, Transport, UplinkConfig, UplinkError};
use vswitch_channels::ChannelSet;
use vswitch_testguest::EthFrame;

const T: Duration = Duration::from_secs(5);

/// Moves this test's thread into a new network namespace holding the veth pair `va`/`vb`,
/// both up, without IPv6 (the kernel's own neighbour discovery would put untagged frames on
/// the trunk). `None` (one line printed) when this cannot be done here.
fn veth_pair(test: &str) -> Option<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIP {test}: needs root (it creates a network namespace)");
        return None;
    }
    // SAFETY: unshare affects only this thread's namespaces; no memory is involved.
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
        let e = io::Error::last_os_error();
        eprintln!("SKIP {test}: unshare(CLONE_NEWNET) failed: {e}");
        return None;
    }
    // /proc/sys/net is this thread's namespace's.
    for f in ["default", "all"] {
        let _ = std::fs::write(format!("/proc/sys/net/ipv6/conf/{f}/disable_ipv6"), "1");
    }
    ip(&["link", "add", "va", "type", "veth", "peer", "name", "vb"]);
    ip(&["link", "set", "va", "up"]);
    ip(&["link", "set", "vb", "up"]);
    Some(())
}

fn ip(args: &[&str]) {
    let st = Command::new("ip").args(args).status().expect("run ip");
    assert!(st.success(), "ip {args:?}: {st}");
}

fn carrying(channels: &[u16]) -> UplinkSpec {
    UplinkSpec {
        name: "up".into(),
        channels: channels.iter().map(|&c| ch(c)).collect::<ChannelSet>(),
        mac_limit: None,
        reflective_relay: false,
    }
}

/// The I/O path for the tests that do not pick one: `VSW_UPLINK_XDP`, `auto` by default.
fn path_from_env() -> AfXdp {
    let v = std::env::var("VSW_UPLINK_XDP").unwrap_or_default();
    if v.is_empty() {
        return AfXdp::Auto;
    }
    AfXdp::parse(&v).unwrap_or_else(|| panic!("VSW_UPLINK_XDP={v:?}: use auto, on or off"))
}

/// Adds an 802.1ad uplink carrying `channels` on `interface` to `net`'s switch, over the path
/// of `VSW_UPLINK_XDP`, opened through the switch's own entry point.
fn trunk(net: &Net, interface: &str, channels: &[u16]) {
    let spec = carrying(channels);
    let io = uplink::open(&UplinkConfig {
        spec: spec.clone(),
        transport: Transport::Dot1ad {
            interface: interface.into(),
            xdp: path_from_env(),
        },
        mtu: 1500,
    })
    .expect("dot1ad uplink opens");
    net.sw.add_uplink(spec, io).expect("uplink added");
}

/// As [`trunk`], over the path `xdp` asks for; checks that a forced path runs and returns
/// what the uplink says it runs over.
fn trunk_over(net: &Net, interface: &str, channels: &[u16], xdp: AfXdp) -> String {
    let spec = carrying(channels);
    let up = Dot1adUplink::open("up", interface, xdp).expect("dot1ad uplink opens");
    let path = up.path().to_owned();
    let want = match xdp {
        AfXdp::On => "AF_XDP",
        AfXdp::Off => "AF_PACKET",
        AfXdp::Auto => "",
    };
    assert!(path.starts_with(want), "{want} runs on {interface}: {path}");
    net.sw.add_uplink(spec, Arc::new(up)).expect("uplink added");
    path
}

/// The drops counted on switch `net`'s uplink.
fn uplink_drops(net: &Net) -> Drops {
    let ports = net.sw.core().ports.load();
    let id = ports.find("up").expect("the uplink");
    ports.get(id).expect("its entry").counters.snapshot().drops
}

/// The `reason` drops counted on channel `c`.
fn channel_drops(net: &Net, c: u16, reason: &str) -> u64 {
    let stats = serde_json::to_value(net.sw.stats()).expect("stats as JSON");
    stats["channels"]
        .as_array()
        .and_then(|a| a.iter().find(|x| x["channel"] == c))
        .and_then(|x| x["counters"]["drops"][reason].as_u64())
        .unwrap_or(0)
}

/// A raw packet socket sending frames as given on one interface of this namespace.
struct Injector {
    fd: OwnedFd,
    ifindex: i32,
}

impl Injector {
    fn on(interface: &str) -> Injector {
        let name = std::ffi::CString::new(interface).expect("name");
        // SAFETY: `name` is NUL-terminated and outlives the call.
        let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) } as i32;
        assert!(ifindex > 0, "{interface} exists");
        // SAFETY: plain socket(2); checked below.
        let raw = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0) };
        assert!(raw >= 0, "raw socket: {}", io::Error::last_os_error());
        // SAFETY: `raw` was just returned by socket(2) and is owned by nothing else.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        Injector { fd, ifindex }
    }

    fn send(&self, frame: &[u8]) {
        // SAFETY: an all-zero sockaddr_ll is valid; the fields that matter are set.
        let mut to: libc::sockaddr_ll = unsafe { zeroed() };
        to.sll_family = libc::AF_PACKET as u16;
        to.sll_protocol = (libc::ETH_P_ALL as u16).to_be();
        to.sll_ifindex = self.ifindex;
        to.sll_halen = 6;
        // SAFETY: `frame` and `to` are valid for the call and their sizes are passed.
        let n = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                frame.as_ptr().cast(),
                frame.len(),
                0,
                (&to as *const libc::sockaddr_ll).cast(),
                size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        assert_eq!(n, frame.len() as isize, "{}", io::Error::last_os_error());
    }
}

#[test]
fn same_channel_crosses_the_trunk_both_ways_over_af_xdp() {
    same_channel_crosses_the_trunk_both_ways("over_af_xdp", AfXdp::On);
}

#[test]
fn same_channel_crosses_the_trunk_both_ways_over_af_packet() {
    same_channel_crosses_the_trunk_both_ways("over_af_packet", AfXdp::Off);
}

/// VM1 (A) and VM2 (B) on channel 100, VM3 (A) and VM4 (B) on 200, the trunk carrying both:
/// broadcast, unknown unicast and unicast cross both ways byte for byte on their own channel
/// only, and a guest's own C-tag arrives as it left.
fn same_channel_crosses_the_trunk_both_ways(test: &str, xdp: AfXdp) {
    if veth_pair(test).is_none() {
        return;
    }
    let a = Net::new(&[vm("vm1", 100, None), vm("vm3", 200, None)]);
    let b = Net::new(&[vm("vm2", 100, None), vm("vm4", 200, None)]);
    trunk_over(&a, "va", &[100, 200], xdp);
    trunk_over(&b, "vb", &[100, 200], xdp);
    let mut g1 = a.guest("vm1", mac(1));
    let mut g3 = a.guest("vm3", mac(3));
    let mut g2 = b.guest("vm2", mac(2));
    let mut g4 = b.guest("vm4", mac(4));

    // Unknown unicast on 100: neither switch knows mac 2 yet; flooded on 100 on both.
    let f = eth(mac(2), mac(1), 1);
    g1.send(&f).expect("send");
    assert_eq!(g2.recv(T), Some(f), "unknown unicast crossed to vm2");
    // Broadcast on 100, A to B.
    let f = eth(BCAST, mac(1), 2);
    g1.send(&f).expect("send");
    assert_eq!(g2.recv(T), Some(f), "broadcast crossed to vm2");
    // Unicast back, B to A (B learned mac 1 behind its uplink).
    let f = eth(mac(1), mac(2), 3);
    g2.send(&f).expect("send");
    assert_eq!(g1.recv(T), Some(f), "unicast crossed back to vm1");
    // Broadcast on 200, B to A.
    let f = eth(BCAST, mac(4), 4);
    g4.send(&f).expect("send");
    assert_eq!(g3.recv(T), Some(f), "broadcast on 200 crossed to vm3");
    // A guest's own 802.1Q C-tag travels inside the S-tag, both ways.
    let f = EthFrame::new(BCAST, mac(1), 0x88b5, &[5; 46])
        .with_ctag(7)
        .build();
    g1.send(&f).expect("send");
    assert_eq!(g2.recv(T), Some(f), "C-tagged frame intact at vm2");
    let f = EthFrame::new(mac(1), mac(2), 0x88b5, &[6; 46])
        .with_ctag(4094)
        .build();
    g2.send(&f).expect("send");
    assert_eq!(g1.recv(T), Some(f), "C-tagged frame intact at vm1");

    // Nothing else anywhere: no channel leaked into the other, nothing came twice.
    assert!(drain(&mut g1).is_empty(), "vm1: nothing more");
    assert!(drain(&mut g2).is_empty(), "vm2: nothing more");
    assert!(drain(&mut g3).is_empty(), "vm3 (200) got nothing of 100");
    assert!(drain(&mut g4).is_empty(), "vm4 (200) got nothing of 100");
    assert!(uplink_drops(&a).is_zero(), "A dropped nothing");
    assert!(uplink_drops(&b).is_zero(), "B dropped nothing");
}

/// Frames of channel 100 reach switch B, whose uplink carries only 200: none is delivered
/// (not to VM4 on 200, whatever the destination), each is counted there.
#[test]
fn different_channels_never_cross() {
    if veth_pair("different_channels_never_cross").is_none() {
        return;
    }
    let a = Net::new(&[vm("vm1", 100, None), vm("vm3", 200, None)]);
    let b = Net::new(&[vm("vm4", 200, None)]);
    trunk(&a, "va", &[100, 200]);
    trunk(&b, "vb", &[200]);
    let mut g1 = a.guest("vm1", mac(1));
    let mut g3 = a.guest("vm3", mac(3));
    let mut g4 = b.guest("vm4", mac(4));
    // A learns mac 4 on channel 200 behind its uplink.
    let f = eth(BCAST, mac(4), 0);
    g4.send(&f).expect("send");
    assert_eq!(g3.recv(T), Some(f), "vm3 (200) got vm4's broadcast");
    assert!(drain(&mut g1).is_empty(), "vm1 (100) did not");

    // From channel 100: broadcast, unicast to vm4's MAC, unknown unicast.
    g1.send(&eth(BCAST, mac(1), 1)).expect("send");
    g1.send(&eth(mac(4), mac(1), 2)).expect("send");
    g1.send(&eth(mac(9), mac(1), 3)).expect("send");
    common::wait_for(
        || channel_drops(&b, 100, "channel_mismatch") == 3,
        "B counts the three frames on 100 as a channel mismatch",
    );
    assert!(drain(&mut g4).is_empty(), "vm4 (200) got none of them");
    let _ = drain(&mut g3);
}

#[test]
fn forged_frames_on_the_wire_stay_on_their_channel_over_af_xdp() {
    forged_frames_on_the_wire_stay_on_their_channel("forged_over_af_xdp", AfXdp::On);
}

#[test]
fn forged_frames_on_the_wire_stay_on_their_channel_over_af_packet() {
    forged_frames_on_the_wire_stay_on_their_channel("forged_over_af_packet", AfXdp::Off);
}

/// Frames forged on the wire (a raw socket on `va`, switch B on `vb`): a frame tagged for
/// another channel stays on that channel; a double S-tag is on its outer channel; no tag, a
/// C-tag only, VID 0 or 4095 are dropped and counted; a truncated tag never reaches a VM.
fn forged_frames_on_the_wire_stay_on_their_channel(test: &str, xdp: AfXdp) {
    if veth_pair(test).is_none() {
        return;
    }
    let b = Net::new(&[vm("vm2", 100, None), vm("vm4", 200, None)]);
    trunk_over(&b, "vb", &[100, 200], xdp);
    let mut g2 = b.guest("vm2", mac(2));
    let mut g4 = b.guest("vm4", mac(4));
    let wire = Injector::on("va");
    // B learns vm2's MAC on channel 100.
    g2.send(&eth(BCAST, mac(2), 0)).expect("send");

    // S-tag 200, addressed to vm2 (on 100): stays on 200, flooded there as unknown unicast.
    let inner = eth(mac(2), mac(9), 1);
    let forged = EthFrame::new(mac(2), mac(9), 0x88b5, &inner[14..])
        .with_stag(200)
        .build();
    wire.send(&forged);
    assert_eq!(g4.recv(T), Some(inner), "on channel 200: vm4");
    // Outer S-tag 200, inner S-tag 100: channel 200, the inner tag is payload.
    let f = EthFrame::new(BCAST, mac(9), 0x88b5, &[7; 46]);
    let double = f.clone().with_stag(100).with_stag(200).build();
    let mut expect = double.clone();
    expect.drain(12..16);
    wire.send(&double);
    assert_eq!(
        g4.recv(T),
        Some(expect),
        "outer channel 200: vm4, inner tag kept"
    );

    // Without a channel: untagged, a C-tag only, S-VID 0, S-VID 4095.
    let unknown = [
        f.build(),
        f.clone().with_ctag(100).build(),
        f.clone().with_stag(0).build(),
        f.clone().with_stag(4095).build(),
    ];
    for u in &unknown {
        wire.send(u);
    }
    common::wait_for(
        || uplink_drops(&b).unknown_channel == unknown.len() as u64,
        "B's uplink counts the frames without a channel",
    );

    // A truncated S-tag: 14 to 17 bytes, the tag or the EtherType behind it cut short. The
    // kernel drops these itself before an AF_PACKET socket sees them (it cannot take the tag
    // off); AF_XDP gets them as sent, and the uplink drops them as malformed.
    let tagged = EthFrame::new(BCAST, mac(9), 0x88b5, &[])
        .unpadded()
        .with_stag(100)
        .build();
    for len in 14..=17 {
        wire.send(&tagged[..len]);
    }
    // A channel this uplink does not carry: counted as a channel mismatch.
    wire.send(&f.clone().with_stag(300).build());
    common::wait_for(
        || channel_drops(&b, 300, "channel_mismatch") == 1,
        "the frame on channel 300 counted",
    );

    assert!(
        drain(&mut g2).is_empty(),
        "vm2 (100) got none of the forged frames"
    );
    assert!(drain(&mut g4).is_empty(), "vm4: nothing more");
    let d = uplink_drops(&b);
    assert_eq!(d.unknown_channel, unknown.len() as u64, "{d:?}");
    eprintln!("DROPS {d:?}");
    if xdp == AfXdp::Off {
        assert!(d.malformed <= 4, "{d:?}");
    } else {
        // Sent before the frame on channel 300, so counted by now.
        assert_eq!(
            d.malformed, 4,
            "the four truncated S-tags reached AF_XDP: {d:?}"
        );
    }
}

/// A frame that with its S-tag would exceed `va`'s MTU + 14 is not sent (counted as
/// oversize on the uplink); the longest that fits crosses intact.
#[test]
fn frames_too_long_for_the_trunk_are_not_sent() {
    if veth_pair("frames_too_long_for_the_trunk_are_not_sent").is_none() {
        return;
    }
    ip(&["link", "set", "va", "mtu", "1400"]);
    let a = Net::new(&[vm("vm1", 100, None)]);
    let b = Net::new(&[vm("vm2", 100, None)]);
    trunk(&a, "va", &[100]);
    trunk(&b, "vb", &[100]);
    let mut g1 = a.guest("vm1", mac(1));
    let mut g2 = b.guest("vm2", mac(2));
    let frame = |len: usize| EthFrame::new(BCAST, mac(1), 0x88b5, &vec![9; len - 14]).build();
    // 1410 + 4 = MTU + 14: fits.
    g1.send(&frame(1410)).expect("send");
    assert_eq!(g2.recv(T), Some(frame(1410)), "the longest frame crossed");
    g1.send(&frame(1411)).expect("send");
    common::wait_for(
        || uplink_drops(&a).oversize == 1,
        "A's uplink counts the long frame as oversize",
    );
    assert!(drain(&mut g2).is_empty(), "nothing truncated arrived");
}

/// The trunk as a capture shows it (`tcpdump -e`): ethertype 0x88a8 with the channel as the
/// VLAN id and the guest's frame inside, its own C-tag included, in both directions. The
/// capture is on B's side (`vb`), whose uplink runs over AF_PACKET: a capture sees neither the
/// frames an AF_XDP socket sends nor those the XDP program takes, so A's uplink (on the
/// path of `VSW_UPLINK_XDP`) is what it checks.
#[test]
fn the_trunk_is_802_1ad_on_the_wire() {
    if Command::new("tcpdump").arg("--version").output().is_err() {
        eprintln!("SKIP the_trunk_is_802_1ad_on_the_wire: tcpdump is not installed");
        return;
    }
    if veth_pair("the_trunk_is_802_1ad_on_the_wire").is_none() {
        return;
    }
    let a = Net::new(&[vm("vm1", 100, None)]);
    let b = Net::new(&[vm("vm2", 100, None)]);
    trunk(&a, "va", &[100]);
    trunk_over(&b, "vb", &[100], AfXdp::Off);
    let mut g1 = a.guest("vm1", mac(1));
    let mut g2 = b.guest("vm2", mac(2));

    let pcap = a.dir.path().join("trunk.pcap");
    let mut dump = Command::new("tcpdump")
        .args(["-e", "-nn", "-U", "--immediate-mode", "-i", "vb", "-w"])
        .arg(&pcap)
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("tcpdump starts");
    // It says so on stderr once it captures.
    let mut line = String::new();
    let mut err = BufReader::new(dump.stderr.take().expect("stderr"));
    while !line.contains("listening on") {
        line.clear();
        let n = err.read_line(&mut line).expect("tcpdump's stderr");
        assert!(n > 0, "tcpdump ended before capturing");
    }

    let out = EthFrame::new(BCAST, mac(1), 0x88b5, &[1; 46])
        .with_ctag(7)
        .build();
    g1.send(&out).expect("send");
    assert_eq!(g2.recv(T), Some(out), "A to B");
    let back = eth(mac(1), mac(2), 2);
    g2.send(&back).expect("send");
    assert_eq!(g1.recv(T), Some(back), "B to A");
    std::thread::sleep(Duration::from_millis(200));
    // SAFETY: signals our own child, by its pid.
    unsafe { libc::kill(dump.id() as libc::pid_t, libc::SIGINT) };
    let _ = dump.wait();

    let read = Command::new("tcpdump")
        .args(["-e", "-nn", "-r"])
        .arg(&pcap)
        .output()
        .expect("tcpdump -r");
    let text = String::from_utf8_lossy(&read.stdout);
    eprintln!("{text}{}", String::from_utf8_lossy(&read.stderr));
    let a_to_b = text
        .lines()
        .find(|l| l.starts_with_time_and("52:54:00:00:00:01 > ff:ff:ff:ff:ff:ff"))
        .unwrap_or_else(|| panic!("A's frame in the capture:\n{text}"));
    assert!(
        a_to_b.contains("ethertype 802.1Q-QinQ (0x88a8)")
            && a_to_b.contains("vlan 100")
            && a_to_b.contains("ethertype 802.1Q (0x8100)")
            && a_to_b.contains("vlan 7"),
        "S-tag 100 outside the guest's C-tag 7: {a_to_b}"
    );
    let b_to_a = text
        .lines()
        .find(|l| l.starts_with_time_and("52:54:00:00:00:02 > 52:54:00:00:00:01"))
        .unwrap_or_else(|| panic!("B's frame in the capture:\n{text}"));
    assert!(
        b_to_a.contains("ethertype 802.1Q-QinQ (0x88a8)") && b_to_a.contains("vlan 100"),
        "S-tag 100: {b_to_a}"
    );
}

/// A capture line: a timestamp, then `rest`.
trait CaptureLine {
    fn starts_with_time_and(&self, rest: &str) -> bool;
}

impl CaptureLine for &str {
    fn starts_with_time_and(&self, rest: &str) -> bool {
        self.split_once(' ')
            .is_some_and(|(_, l)| l.starts_with(rest))
    }
}

/// Where AF_XDP cannot run (here: an interface with two receive queues, of which it would
/// serve one), `xdp=on` refuses to open, saying why, and `xdp=auto` falls back to AF_PACKET,
/// which carries the trunk.
#[test]
fn without_af_xdp_on_is_an_error_and_auto_falls_back() {
    if veth_pair("without_af_xdp_on_is_an_error_and_auto_falls_back").is_none() {
        return;
    }
    let queues = ["numrxqueues", "2", "numtxqueues", "2"];
    let mut args = vec!["link", "add", "qa"];
    args.extend(queues);
    args.extend(["type", "veth", "peer", "name", "qb"]);
    args.extend(queues);
    ip(&args);
    ip(&["link", "set", "qa", "up"]);
    ip(&["link", "set", "qb", "up"]);
    match Dot1adUplink::open("up", "qa", AfXdp::On) {
        Err(e @ UplinkError::AfXdp { .. }) => {
            let msg = e.to_string();
            assert!(
                msg.contains("qa has 2 receive queues") && msg.contains("xdp=auto"),
                "{msg}"
            );
        }
        Err(e) => panic!("unexpected error: {e}"),
        Ok(up) => panic!("AF_XDP opened on two queues: {}", up.path()),
    }
    let a = Net::new(&[vm("vm1", 100, None)]);
    let b = Net::new(&[vm("vm2", 100, None)]);
    for (net, interface) in [(&a, "qa"), (&b, "qb")] {
        let path = trunk_over(net, interface, &[100], AfXdp::Auto);
        assert!(path.starts_with("AF_PACKET on"), "fell back: {path}");
    }
    let mut g1 = a.guest("vm1", mac(1));
    let mut g2 = b.guest("vm2", mac(2));
    let f = eth(BCAST, mac(1), 1);
    g1.send(&f).expect("send");
    assert_eq!(g2.recv(T), Some(f), "the frame crossed over AF_PACKET");
}

/// A trunk on an interface that does not exist is refused with the step and the interface.
#[test]
fn a_missing_interface_is_a_clear_error() {
    let spec = carrying(&[100]);
    let r = uplink::open(&UplinkConfig {
        spec,
        transport: Transport::Dot1ad {
            interface: "nosuchif0".into(),
            xdp: AfXdp::Auto,
        },
        mtu: 1500,
    });
    match r {
        Err(e @ UplinkError::Io { .. }) => {
            let msg = e.to_string();
            assert!(msg.contains("nosuchif0") && msg.contains("up"), "{msg}");
        }
        Err(e) => panic!("unexpected error: {e}"),
        Ok(_) => panic!("opened a trunk on a missing interface"),
    }
}
