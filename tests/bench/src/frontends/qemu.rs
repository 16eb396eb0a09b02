//! iperf3 between two QEMU (TCG) guests, each with one vhost-user virtio-net NIC on one of the
//! forwarder's sockets (QEMU connects), both QEMU processes on the generator CPU: Linux's
//! virtio-net driver as the frontend. Guest A runs the client, guest B the server; the figure
//! is what B received. Under TCG the guests, not the forwarder, are the limit: the point is
//! parity between forwarders and any trouble with notifications (a Linux guest sleeps until
//! it is notified, unlike the busy-polling DPDK frontends).

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use vswitch_tests::{virtio_net_feature_names, GuestConfig, QemuGuest, SocketRole};

use super::{guest_work, mac_str, two_ports, CpuWindow, FrontendReport};
use crate::generator::{Measurement, TrafficOpts};
use crate::peers::Forwarder;
use crate::scenario::{Topology, NO_OFFLOADS};
use crate::sys;

const IP_A: &str = "10.77.0.1";
const IP_B: &str = "10.77.0.2";
/// Booting under TCG on a shared 2-CPU machine.
const BOOT: Duration = Duration::from_secs(180);

/// The checksum and segmentation offload bits (CSUM, GUEST_CSUM, GUEST_TSO4/6, HOST_TSO4/6).
const OFFLOAD_BITS: u64 = 0b1 | 0b10 | 1 << 7 | 1 << 8 | 1 << 11 | 1 << 12;

/// The offloads `g` negotiated on eth0, by name ("none" when none).
fn offloads_of(g: &mut QemuGuest) -> Result<String> {
    let names = virtio_net_feature_names(g.features()? & OFFLOAD_BITS);
    Ok(match names.is_empty() {
        true => "none".into(),
        false => names.join(" "),
    })
}

/// iperf3's figures from its JSON (`-J`) output.
#[derive(Debug, Clone, PartialEq)]
struct Iperf {
    /// Receiver's rate, bit/s.
    bps: f64,
    lost_percent: Option<f64>,
    packets: Option<u64>,
    retransmits: Option<u64>,
}

/// Parses the client's `iperf3 -J` output. TCP: `end.sum_received`; UDP (iperf 3.12 has no
/// `sum_received` there): `end.sum`, the sender's rate less the datagrams the server lost.
fn parse_iperf(json: &str, udp: bool) -> Result<Iperf> {
    let v: serde_json::Value =
        serde_json::from_str(json.trim()).context("iperf3 output is not JSON")?;
    let num = |p: &str| v.pointer(p).and_then(serde_json::Value::as_f64);
    if let Some(e) = v.get("error").and_then(serde_json::Value::as_str) {
        bail!("iperf3: {e}");
    }
    if udp {
        let sent = num("/end/sum/bits_per_second").context("no end.sum in iperf3 output")?;
        let lost = num("/end/sum/lost_percent").unwrap_or(0.0);
        Ok(Iperf {
            bps: num("/end/sum_received/bits_per_second").unwrap_or(sent * (1.0 - lost / 100.0)),
            lost_percent: Some(lost),
            packets: num("/end/sum/packets").map(|p| p as u64),
            retransmits: None,
        })
    } else {
        Ok(Iperf {
            bps: num("/end/sum_received/bits_per_second")
                .context("no end.sum_received in iperf3 output")?,
            lost_percent: None,
            packets: None,
            retransmits: num("/end/sum_sent/retransmits").map(|r| r as u64),
        })
    }
}

/// Boots a guest on `socket` (QEMU connects, or listens with `role` Server); without
/// `offloads` its virtio-net device offers none.
fn boot(
    dir: &Path,
    name: &str,
    (socket, mac, role): (&Path, [u8; 6], SocketRole),
    ip: &str,
    offloads: bool,
) -> Result<QemuGuest> {
    let mut cfg = GuestConfig::new(name).nic(socket, role, &mac_str(mac), ip);
    if !offloads {
        for nic in &mut cfg.nics {
            nic.device_opts = NO_OFFLOADS.into();
        }
    }
    cfg.console_log = Some(dir.join(format!("{name}.console.log")));
    QemuGuest::spawn(cfg).with_context(|| format!("starting QEMU guest {name}"))
}

/// Runs iperf3 (TCP, or UDP at full speed with `udp`) for `secs` seconds from guest A on
/// port 0 to guest B on port 1 of `topo` through `fwd`; `offloads` false turns every offload
/// of both guests' devices off.
pub fn run(
    topo: &Topology,
    fwd: &mut dyn Forwarder,
    udp: bool,
    offloads: bool,
    o: &TrafficOpts,
    dir: &Path,
) -> Result<Measurement> {
    let ([s0, s1], [p0, p1]) = two_ports(fwd, topo, "the QEMU guests")?;
    // Spawned from this thread (pinned to the generator CPU): QEMU inherits its affinity.
    let role = match fwd.frontend_listens() {
        true => SocketRole::Server,
        false => SocketRole::Client,
    };
    let mut a = boot(
        dir,
        "vswb-a",
        (&s0, p0.mac, role),
        &format!("{IP_A}/24"),
        offloads,
    )?;
    let mut b = boot(
        dir,
        "vswb-b",
        (&s1, p1.mac, role),
        &format!("{IP_B}/24"),
        offloads,
    )?;
    a.wait_ready(BOOT)?;
    b.wait_ready(BOOT)?;
    fwd.after_connect(topo).context("preparing the forwarder")?;
    a.wait_ping(IP_B, Duration::from_secs(60))
        .context("guest A cannot reach guest B through the forwarder")?;
    let negotiated = offloads_of(&mut a)?;
    b.iperf3_server()?;
    let secs = o.duration.as_secs_f64().round().max(5.0) as u32;
    let cmd = format!(
        "iperf3 -J -c {IP_B} -t {secs} -O 1{}",
        if udp { " -u -b 0" } else { "" }
    );
    let work0 = [guest_work::read(&mut a)?, guest_work::read(&mut b)?];
    fwd.begin_window()?;
    let cpu = CpuWindow::start(fwd, [a.pid(), b.pid()]);
    let (out, other_load) = sys::foreign_load(&cpu.pids, || {
        a.run_ok(&cmd, Duration::from_secs(u64::from(secs) + 90))
    });
    let spent = cpu.stop();
    let r = parse_iperf(&out?, udp)?;
    // Frames of the measured direction (UDP: datagrams received; TCP: full-size segments).
    let frames = match r.packets {
        Some(p) => p as f64 * (1.0 - r.lost_percent.unwrap_or(0.0) / 100.0),
        None => r.bps * f64::from(secs) / 8.0 / 1448.0,
    };
    let mut cost = fwd.end_window(&spent.window(frames as u64))?;
    let work1 = [guest_work::read(&mut a)?, guest_work::read(&mut b)?];
    let [guest_a, guest_b] = [work1[0].since(&work0[0]), work1[1].since(&work0[1])];
    cost.notes
        .push(format!("guest A (iperf3 client): {}", guest_a.describe()));
    cost.notes
        .push(format!("guest B (iperf3 server): {}", guest_b.describe()));
    let pps = frames / f64::from(secs);
    Ok(Measurement {
        secs: f64::from(secs),
        rx_frames: frames as u64,
        tx_frames: r.packets.unwrap_or(frames as u64),
        mpps: if udp { pps / 1e6 } else { 0.0 },
        gbps: r.bps / 1e9,
        ns_per_pkt: if pps > 0.0 { 1e9 / pps } else { f64::INFINITY },
        traffic_cpu_share: spent.frontend_share,
        other_load,
        cost,
        frontend: Some(FrontendReport::Iperf3 {
            proto: if udp { "udp" } else { "tcp" }.into(),
            bits_per_second: r.bps,
            lost_percent: r.lost_percent,
            packets: r.packets,
            retransmits: r.retransmits,
            offloads: negotiated,
            guests: Box::new([guest_a, guest_b]),
        }),
        ..Measurement::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn udp_rate_is_the_senders_less_the_lost_share() {
        let j = r#"{"end":{"sum":{"bits_per_second":1e8,"lost_percent":25,"packets":1000}}}"#;
        let r = parse_iperf(j, true).expect("parses");
        assert_eq!(r.bps, 7.5e7);
        assert_eq!(r.packets, Some(1000));
    }

    #[test]
    fn tcp_rate_is_the_receivers_and_errors_are_reported() {
        let j = r#"{"end":{"sum_received":{"bits_per_second":2e8},"sum_sent":{"retransmits":3}}}"#;
        let r = parse_iperf(j, false).expect("parses");
        assert_eq!((r.bps, r.retransmits), (2e8, Some(3)));
        assert!(parse_iperf(r#"{"error":"unable to connect"}"#, false).is_err());
        assert!(parse_iperf("garbage", false).is_err());
    }
}
