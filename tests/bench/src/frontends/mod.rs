//! Third-party frontends as generator and sink, instead of the in-process test guest: DPDK's
//! virtio PMD (`net_virtio_user` in dpdk-testpmd, txonly → rxonly) and Linux's virtio-net
//! driver in two QEMU (TCG) guests running iperf3. Each run produces the same
//! [`Measurement`](crate::generator::Measurement) as the test guest's traffic engine, with
//! what the frontends themselves reported in [`FrontendReport`].

pub mod dpdk;
pub mod guest_work;
pub mod qemu;
pub mod table;

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Result};
use serde::Serialize;

use crate::peers::{Forwarder, Window};
use crate::scenario::{PortDef, Topology};
use crate::sys;

/// What the third-party frontends reported for one run.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "frontend", rename_all = "snake_case")]
pub enum FrontendReport {
    /// dpdk-testpmd txonly generator and rxonly sink (`--stats-period 1`).
    Dpdk {
        /// The sink's `Rx-pps` of every one-second stats block printed in the window, in Mpps.
        sink_mpps: Vec<f64>,
        /// The generator's `Tx-pps` of the same blocks (what its TX ring accepted), in Mpps.
        gen_mpps: Vec<f64>,
        /// Frames the generator's TX ring refused over the whole run (testpmd `TX-dropped`:
        /// back pressure from a full ring, not losses in the forwarder), if it printed them.
        gen_tx_refused: Option<u64>,
    },
    /// iperf3 between two QEMU guests.
    Iperf3 {
        /// "tcp" or "udp".
        proto: String,
        /// Receiver's throughput, bit/s.
        bits_per_second: f64,
        /// UDP: datagrams lost between the two iperf3s, in % (receiver socket included).
        lost_percent: Option<f64>,
        /// UDP: datagrams sent.
        packets: Option<u64>,
        /// TCP: retransmitted segments.
        retransmits: Option<u64>,
        /// The checksum/segmentation offloads guest A negotiated (the same device and forwarder
        /// as guest B's), by virtio feature name, or "none".
        offloads: String,
        /// What guest A (client) and guest B (server), in that order, counted themselves over
        /// the run (interrupts, frames, segments, CPU time), read before and after it.
        guests: Box<[guest_work::Counters; 2]>,
    },
}

/// The forwarder's two sockets and `topo`'s two ports (generator, sink), or an error saying that
/// `who` are measured with two ports.
pub fn two_ports<'t>(
    fwd: &dyn Forwarder,
    topo: &'t Topology,
    who: &str,
) -> Result<([PathBuf; 2], [&'t PortDef; 2])> {
    match (fwd.sockets(), topo.ports.as_slice()) {
        ([s0, s1], [p0, p1]) => Ok(([s0.clone(), s1.clone()], [p0, p1])),
        _ => bail!("{who} are measured with two ports"),
    }
}

/// The CPU spent over a measured window by this process, this thread and the two frontend
/// processes, read when it starts ([`CpuWindow::start`]) and when it ends ([`CpuWindow::stop`]).
pub struct CpuWindow {
    /// The forwarder's processes and the frontends: the CPU that is not foreign load.
    pub pids: Vec<u32>,
    frontends: [u32; 2],
    t0: Instant,
    process0: u64,
    thread0: u64,
    frontend_ticks0: u64,
}

impl CpuWindow {
    /// Reads the counters at the start of the window.
    pub fn start(fwd: &mut dyn Forwarder, frontends: [u32; 2]) -> Self {
        let mut pids = fwd.pids();
        pids.extend(frontends);
        Self {
            pids,
            frontends,
            process0: sys::process_cpu_ns(),
            thread0: sys::self_thread_cpu_ns(),
            frontend_ticks0: frontend_ticks(&frontends),
            t0: Instant::now(),
        }
    }

    /// Reads them again at its end.
    pub fn stop(&self) -> CpuSpent {
        let secs = self.t0.elapsed().as_secs_f64();
        let ticks = frontend_ticks(&self.frontends).saturating_sub(self.frontend_ticks0);
        CpuSpent {
            secs,
            process_cpu_ns: sys::process_cpu_ns().saturating_sub(self.process0),
            traffic_cpu_ns: sys::self_thread_cpu_ns().saturating_sub(self.thread0),
            frontend_share: ticks as f64 / sys::clk_tck() / secs,
        }
    }
}

/// What [`CpuWindow::stop`] read.
pub struct CpuSpent {
    /// The window's length in seconds.
    pub secs: f64,
    /// CPU time of this whole process in the window.
    pub process_cpu_ns: u64,
    /// CPU time of this thread in it.
    pub traffic_cpu_ns: u64,
    /// The share of one CPU the two frontend processes used in it.
    pub frontend_share: f64,
}

impl CpuSpent {
    /// The forwarder's [`Window`]: these figures and the `rx_frames` the sink received.
    pub fn window(&self, rx_frames: u64) -> Window {
        Window {
            secs: self.secs,
            rx_frames,
            process_cpu_ns: self.process_cpu_ns,
            // Only this thread (and the frontends' output readers, a few KiB/s) besides the
            // forwarder runs in this process: the frontends are other processes.
            traffic_cpu_ns: self.traffic_cpu_ns,
        }
    }
}

fn frontend_ticks(pids: &[u32; 2]) -> u64 {
    pids.iter().map(|&p| sys::process_ticks(p)).sum()
}

/// The median of `v` (None when empty).
pub fn median(v: &[f64]) -> Option<f64> {
    let mut s: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    if s.is_empty() {
        return None;
    }
    s.sort_by(f64::total_cmp);
    let n = s.len();
    Some(if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    })
}

/// `aa:bb:cc:dd:ee:ff`.
pub fn mac_str(m: [u8; 6]) -> String {
    format!(
        "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        m[0], m[1], m[2], m[3], m[4], m[5]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_even_and_empty() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median(&[]), None);
        assert_eq!(mac_str([2, 0, 0, 0, 0, 1]), "02:00:00:00:00:01");
    }
}
