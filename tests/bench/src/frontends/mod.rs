//! Third-party frontends as generator and sink, instead of the in-process test guest: DPDK's
//! virtio PMD (`net_virtio_user` in dpdk-testpmd, txonly → rxonly) and Linux's virtio-net
//! driver in two QEMU (TCG) guests running iperf3. Each run produces the same
//! [`Measurement`](crate::generator::Measurement) as the test guest's traffic engine, with
//! what the frontends themselves reported in [`FrontendReport`].

pub mod dpdk;
pub mod guest_work;
pub mod qemu;
pub mod table;

use serde::Serialize;

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
