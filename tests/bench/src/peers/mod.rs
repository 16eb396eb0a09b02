//! The forwarders under test. Each creates the vhost-user sockets of a topology, lets the
//! in-process guests connect, and reports its own cost per packet over a measurement window.

pub mod ovs;
pub mod proc;
pub mod testpmd;
pub mod uplinked;
pub mod vswitch;

use std::path::{Path, PathBuf};

use ::vswitch::uplink::AfXdp;
use anyhow::Result;
use serde::Serialize;

use crate::scenario::{Kind, Scenario, Topology};

/// Peer names, in table order.
pub const VSWITCH: &str = "vswitch";
pub const VSWITCH_POLL: &str = "vswitch-poll";
pub const MEMCPY: &str = "memcpy";
pub const TESTPMD: &str = "testpmd";
pub const OVS: &str = "ovs-dpdk";
/// testpmd whose `net_vhost` ports offer TSO (`tso=1`): iperf3 scenarios with offloads only.
pub const TESTPMD_TSO: &str = "testpmd-tso";
/// OVS-DPDK with `other_config:userspace-tso-enable=true`: the same scenarios only.
pub const OVS_TSO: &str = "ovs-dpdk-tso";
/// Two switches joined by VXLAN uplinks across a veth pair (two-host scenarios).
pub const VSWITCH_VXLAN: &str = "vswitch-vxlan";
/// Two switches joined by 802.1ad uplinks on a veth pair (two-host scenarios), over AF_PACKET.
pub const VSWITCH_DOT1AD: &str = "vswitch-dot1ad";
/// The same over AF_XDP (`xdp=on`).
pub const VSWITCH_DOT1AD_XDP: &str = "vswitch-dot1ad-xdp";
/// The Linux kernel's VXLAN devices across the same kind of veth pair (two-host scenarios).
pub const KERNEL_VXLAN: &str = "kernel-vxlan";

/// The peers of the two-host scenarios.
pub const TWO_HOST: [&str; 4] = [
    VSWITCH_VXLAN,
    VSWITCH_DOT1AD,
    VSWITCH_DOT1AD_XDP,
    KERNEL_VXLAN,
];

/// What the traffic engine measured over the window, for the forwarder's cost.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    /// Window length in seconds.
    pub secs: f64,
    /// Frames the sinks received in it.
    pub rx_frames: u64,
    /// CPU time of this whole process in it.
    pub process_cpu_ns: u64,
    /// CPU time of the traffic threads and the main thread in it.
    pub traffic_cpu_ns: u64,
}

/// The forwarder's own cost, from its own accounting.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Cost {
    /// Forwarder time per packet (busy time only where the forwarder separates it).
    pub ns_per_pkt: Option<f64>,
    /// The same in TSC cycles.
    pub cycles_per_pkt: Option<f64>,
    /// Share of the forwarder CPU spent on packets (1.0 = saturated).
    pub busy_share: Option<f64>,
    /// Where the figure comes from.
    pub source: String,
    /// Anything worth reading next to the figure (drops by reason, warnings).
    pub notes: Vec<String>,
    /// Frames the forwarder itself counted in the window, and what that count is.
    pub counted: Option<(u64, &'static str)>,
}

/// Settings shared by every peer.
#[derive(Debug, Clone)]
pub struct Ctx {
    /// Where sockets, logs and private instances live.
    pub dir: PathBuf,
    /// CPU of the forwarder.
    pub fwd_cpu: usize,
    /// CPU of the generator and sink threads (and of the peers' control threads).
    pub gen_cpu: usize,
    /// TSC rate used to turn cycles into ns and back.
    pub tsc_mhz: Option<f64>,
}

/// A running forwarder for one scenario. Dropping it stops it (by PID for processes).
pub trait Forwarder {
    /// Socket of each topology port, in port order (guests connect to them).
    fn sockets(&self) -> &[PathBuf];
    /// True when the frontends create the sockets and the forwarder connects (vhost-user
    /// client ports); the in-process guests always connect, QEMU then listens.
    fn frontend_listens(&self) -> bool {
        false
    }
    /// Called once every guest is connected and has posted its RX buffers.
    fn after_connect(&mut self, _topo: &Topology) -> Result<()> {
        Ok(())
    }
    /// Called right before the measurement window.
    fn begin_window(&mut self) -> Result<()> {
        Ok(())
    }
    /// Called right after the measurement window.
    fn end_window(&mut self, w: &Window) -> Result<Cost>;
    /// PIDs of the forwarder's processes (not counted as foreign load).
    fn pids(&mut self) -> Vec<u32> {
        Vec::new()
    }
}

/// Whether `peer` measures `scenario` (the external peers only do the two-port ones: they
/// are baselines for the switching scenarios, not switches under scaling tests; the two-host
/// peers only do the two-host scenarios, and only they do).
pub fn supports(peer: &str, scenario: &Scenario) -> bool {
    if TWO_HOST.contains(&peer) || scenario.is_two_host() {
        return TWO_HOST.contains(&peer) && scenario.is_two_host();
    }
    match peer {
        VSWITCH | VSWITCH_POLL => true,
        TESTPMD_TSO | OVS_TSO => scenario.offers_offloads(),
        TESTPMD | OVS if matches!(scenario.kind, Kind::Tso { .. }) => false,
        TESTPMD | OVS => scenario.is_pair() || scenario.is_third_party(),
        _ => scenario.is_pair(),
    }
}

/// Starts `peer` for `topo` in a fresh directory under `ctx.dir`.
pub fn start(peer: &str, topo: &Topology, ctx: &Ctx, tag: &str) -> Result<Box<dyn Forwarder>> {
    let dir = ctx.dir.join(tag);
    std::fs::create_dir_all(&dir)?;
    Ok(match peer {
        VSWITCH => Box::new(vswitch::Vswitch::start(topo, ctx, &dir, false)?),
        VSWITCH_POLL => Box::new(vswitch::Vswitch::start(topo, ctx, &dir, true)?),
        TESTPMD => Box::new(testpmd::Testpmd::start(topo, ctx, &dir, false)?),
        TESTPMD_TSO => Box::new(testpmd::Testpmd::start(topo, ctx, &dir, true)?),
        OVS => Box::new(ovs::Ovs::start(topo, ctx, &dir, false)?),
        OVS_TSO => Box::new(ovs::Ovs::start(topo, ctx, &dir, true)?),
        VSWITCH_VXLAN => Box::new(uplinked::Uplinked::start(
            topo,
            ctx,
            &dir,
            uplinked::Wire::Vxlan,
        )?),
        VSWITCH_DOT1AD => Box::new(uplinked::Uplinked::start(
            topo,
            ctx,
            &dir,
            uplinked::Wire::Dot1ad(AfXdp::Off),
        )?),
        VSWITCH_DOT1AD_XDP => Box::new(uplinked::Uplinked::start(
            topo,
            ctx,
            &dir,
            uplinked::Wire::Dot1ad(AfXdp::On),
        )?),
        other => anyhow::bail!("unknown peer {other}"),
    })
}

/// `n` socket paths `<dir>/p<i>.sock`.
pub fn socket_paths(dir: &Path, n: usize) -> Vec<PathBuf> {
    (0..n).map(|i| dir.join(format!("p{i}.sock"))).collect()
}
