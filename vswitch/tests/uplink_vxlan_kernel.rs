//! The Linux kernel's own VXLAN device as the far end of the VXLAN uplink: a VM on channel 100
//! resolves and pings the kernel's address; a VM on channel 200 gets no answer.
//!
//! Needs root (network namespaces); skips with one line otherwise.

mod common;

use common::vxlan_net::*;
use std::time::{Duration, Instant};

use common::{drain, mac, vm, Net, BCAST};
use vswitch_testguest::{EthFrame, TestGuest};

const VM1_IP: [u8; 4] = [192, 168, 100, 1];
const VM3_IP: [u8; 4] = [192, 168, 100, 3];
const KERNEL_IP: [u8; 4] = [192, 168, 100, 2];

fn arp_request(src_mac: [u8; 6], src_ip: [u8; 4], target: [u8; 4]) -> Vec<u8> {
    let mut p = vec![0, 1, 8, 0, 6, 4, 0, 1];
    p.extend_from_slice(&src_mac);
    p.extend_from_slice(&src_ip);
    p.extend_from_slice(&[0; 6]);
    p.extend_from_slice(&target);
    EthFrame::new(BCAST, src_mac, 0x0806, &p).build()
}

/// The sender MAC of an ARP reply from `ip` to `to_ip`, if `f` is one.
fn arp_reply_from(f: &[u8], ip: [u8; 4], to_ip: [u8; 4]) -> Option<[u8; 6]> {
    let p = f.get(14..42)?;
    (f[12..14] == [0x08, 0x06] && p[6..8] == [0, 2] && p[14..18] == ip && p[24..28] == to_ip)
        .then(|| p[8..14].try_into().expect("6 bytes"))
}

fn checksum(b: &[u8]) -> u16 {
    let mut sum: u32 = b
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

const PING_ID: u16 = 0x5678;

fn echo_request(
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    src: [u8; 4],
    dst: [u8; 4],
    seq: u16,
) -> Vec<u8> {
    let mut icmp = vec![8, 0, 0, 0];
    icmp.extend_from_slice(&PING_ID.to_be_bytes());
    icmp.extend_from_slice(&seq.to_be_bytes());
    icmp.extend((0..56).map(|i| i as u8));
    let c = checksum(&icmp);
    icmp[2..4].copy_from_slice(&c.to_be_bytes());
    let total = (20 + icmp.len()) as u16;
    let mut ip4 = vec![0x45, 0];
    ip4.extend_from_slice(&total.to_be_bytes());
    ip4.extend_from_slice(&[0, 1, 0x40, 0, 64, 1, 0, 0]);
    ip4.extend_from_slice(&src);
    ip4.extend_from_slice(&dst);
    let c = checksum(&ip4);
    ip4[10..12].copy_from_slice(&c.to_be_bytes());
    ip4.extend_from_slice(&icmp);
    EthFrame::new(dst_mac, src_mac, 0x0800, &ip4).build()
}

/// True when `f` is the echo reply from `from` to `to` for `echo_request(.., seq)`.
fn is_echo_reply(f: &[u8], from: [u8; 4], to: [u8; 4], seq: u16) -> bool {
    let Some(ip4) = f.get(14..) else {
        return false;
    };
    f[12..14] == [0x08, 0x00]
        && ip4.len() >= 28 + 56
        && ip4[9] == 1
        && ip4[12..16] == from
        && ip4[16..20] == to
        && ip4[20] == 0
        && ip4[24..26] == PING_ID.to_be_bytes()
        && ip4[26..28] == seq.to_be_bytes()
        && ip4[28..28 + 56]
            .iter()
            .enumerate()
            .all(|(i, &b)| b == i as u8)
}

/// Receives frames on `g` until `want` matches one (returning what it returned) or `within`;
/// other frames (the kernel's own IPv6 chatter) are skipped.
fn await_frame<R>(
    g: &mut TestGuest,
    within: Duration,
    mut want: impl FnMut(&[u8]) -> Option<R>,
) -> Option<R> {
    let end = Instant::now() + within;
    while Instant::now() < end {
        if let Some(f) = g.recv(Duration::from_millis(100)) {
            if let Some(r) = want(&f) {
                return Some(r);
            }
        }
    }
    None
}

/// A kernel VXLAN device (VNI 100) in a second namespace is the far end: a VM on channel 100
/// resolves its address and pings it; a VM on channel 200 gets no answer.
#[test]
fn the_kernel_vxlan_device_answers_channel_100_only() {
    if !private_netns("the_kernel_vxlan_device_answers_channel_100_only") {
        return;
    }
    veth(A, B);
    let kernel = NamedNetns::new();
    kernel.take("vb", B);
    kernel.ip(&[
        "link", "add", "vx100", "type", "vxlan", "id", "100", "local", B, "remote", A, "dstport",
        "4789", "dev", "vb",
    ]);
    kernel.ip(&["addr", "add", "192.168.100.2/24", "dev", "vx100"]);
    kernel.ip(&["link", "set", "vx100", "up"]);

    let net = Net::new(&[vm("vm1", 100, None), vm("vm3", 200, None)]);
    net.sw
        .add_uplink(carrying(&[100, 200]), vxlan_uplink(A, &[B]))
        .expect("uplink");
    let mut g1 = net.guest("vm1", mac(1));
    let mut g3 = net.guest("vm3", mac(3));

    // Channel 100: ARP, then ping.
    g1.send(&arp_request(mac(1), VM1_IP, KERNEL_IP))
        .expect("send");
    let kernel_mac = await_frame(&mut g1, T, |f| arp_reply_from(f, KERNEL_IP, VM1_IP))
        .expect("the kernel answered vm1's ARP request over VXLAN");
    for seq in 1..=3 {
        g1.send(&echo_request(mac(1), kernel_mac, VM1_IP, KERNEL_IP, seq))
            .expect("send");
        assert!(
            await_frame(&mut g1, T, |f| is_echo_reply(f, KERNEL_IP, VM1_IP, seq)
                .then_some(()))
            .is_some(),
            "echo reply {seq} from the kernel"
        );
    }

    // Channel 200: VNI 200 reaches the kernel, which has no device for it.
    g3.send(&arp_request(mac(3), VM3_IP, KERNEL_IP))
        .expect("send");
    g3.send(&echo_request(mac(3), kernel_mac, VM3_IP, KERNEL_IP, 9))
        .expect("send");
    let answered = await_frame(&mut g3, Duration::from_secs(2), |f| {
        (arp_reply_from(f, KERNEL_IP, VM3_IP).is_some() || is_echo_reply(f, KERNEL_IP, VM3_IP, 9))
            .then_some(())
    });
    assert!(answered.is_none(), "the kernel never answers channel 200");
    assert!(
        drain(&mut g1)
            .iter()
            .all(|f| arp_reply_from(f, KERNEL_IP, VM3_IP).is_none()
                && !is_echo_reply(f, KERNEL_IP, VM3_IP, 9)),
        "nor does anything of it reach channel 100"
    );
}
