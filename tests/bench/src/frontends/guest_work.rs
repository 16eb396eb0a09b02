//! What a forwarder makes a Linux guest do, read from the guest's own counters before and after
//! the iperf3 run: virtio interrupts (`/proc/interrupts`), frames and bytes on eth0
//! (`/proc/net/dev`), TCP segments (`/proc/net/snmp`) and CPU time by kind (`/proc/stat`).
//! The same for every forwarder: the guests count, not the forwarder.

use std::time::Duration;

use anyhow::{Context, Result};
use serde::Serialize;
use vswitch_tests::QemuGuest;

use crate::netns::IfCounters;

/// One shell line printing every counter [`parse`] reads.
const READ_CMD: &str = "grep virtio /proc/interrupts; grep eth0: /proc/net/dev; \
                        head -1 /proc/stat; grep Tcp: /proc/net/snmp";

/// One reading of a guest's counters (all monotonic).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Counters {
    /// Interrupts of every virtio line (legacy INTx `virtioN`, or MSI-X `virtioN-*`).
    pub irqs: u64,
    /// Of these, MSI-X `-input.N` (RX) and `-output.N` (TX completion) vectors (0 with INTx).
    pub irqs_in: u64,
    pub irqs_out: u64,
    pub rx_frames: u64,
    pub rx_bytes: u64,
    pub tx_frames: u64,
    pub tx_bytes: u64,
    /// TCP segments received and sent (a TSO/GRO frame counts its segments).
    pub tcp_in_segs: u64,
    pub tcp_out_segs: u64,
    /// CPU time in USER_HZ ticks: all, softirq, hard irq, idle.
    pub cpu_ticks: u64,
    pub softirq_ticks: u64,
    pub irq_ticks: u64,
    pub idle_ticks: u64,
}

impl Counters {
    /// `self - before`, each counter (0 where it went back).
    pub fn since(&self, b: &Counters) -> Counters {
        let d = |a: u64, b: u64| a.saturating_sub(b);
        Counters {
            irqs: d(self.irqs, b.irqs),
            irqs_in: d(self.irqs_in, b.irqs_in),
            irqs_out: d(self.irqs_out, b.irqs_out),
            rx_frames: d(self.rx_frames, b.rx_frames),
            rx_bytes: d(self.rx_bytes, b.rx_bytes),
            tx_frames: d(self.tx_frames, b.tx_frames),
            tx_bytes: d(self.tx_bytes, b.tx_bytes),
            tcp_in_segs: d(self.tcp_in_segs, b.tcp_in_segs),
            tcp_out_segs: d(self.tcp_out_segs, b.tcp_out_segs),
            cpu_ticks: d(self.cpu_ticks, b.cpu_ticks),
            softirq_ticks: d(self.softirq_ticks, b.softirq_ticks),
            irq_ticks: d(self.irq_ticks, b.irq_ticks),
            idle_ticks: d(self.idle_ticks, b.idle_ticks),
        }
    }

    /// Frames through eth0 either way.
    pub fn frames(&self) -> u64 {
        self.rx_frames + self.tx_frames
    }

    /// Virtio interrupts per frame through eth0 (either way).
    pub fn irqs_per_frame(&self) -> f64 {
        self.irqs as f64 / self.frames().max(1) as f64
    }

    /// Share of the guest's CPU time in softirq and hard irq.
    pub fn irq_share(&self) -> f64 {
        (self.softirq_ticks + self.irq_ticks) as f64 / self.cpu_ticks.max(1) as f64
    }

    /// One line for the notes.
    pub fn describe(&self) -> String {
        let per = |n: u64, d: u64| n as f64 / d.max(1) as f64;
        format!(
            "{} virtio irqs ({:.3}/frame; msix in {} out {}), rx {} frames avg {:.0} B ({:.2} TCP segs/frame), \
             tx {} frames avg {:.0} B ({:.2} TCP segs/frame), softirq+irq {:.0}% idle {:.0}% of CPU",
            self.irqs,
            self.irqs_per_frame(),
            self.irqs_in,
            self.irqs_out,
            self.rx_frames,
            per(self.rx_bytes, self.rx_frames),
            per(self.tcp_in_segs, self.rx_frames),
            self.tx_frames,
            per(self.tx_bytes, self.tx_frames),
            per(self.tcp_out_segs, self.tx_frames),
            self.irq_share() * 100.0,
            per(self.idle_ticks * 100, self.cpu_ticks),
        )
    }
}

/// Reads `g`'s counters over its serial console.
pub fn read(g: &mut QemuGuest) -> Result<Counters> {
    let out = g
        .run_ok(READ_CMD, Duration::from_secs(30))
        .context("reading the guest's counters")?;
    parse(&out)
}

fn nums(s: &str) -> impl Iterator<Item = u64> + '_ {
    s.split_whitespace().map_while(|w| w.parse().ok())
}

/// Parses [`READ_CMD`]'s output.
pub fn parse(out: &str) -> Result<Counters> {
    let eth0 = IfCounters::parse(out, "eth0").context("no full eth0 line of /proc/net/dev")?;
    let mut c = Counters {
        rx_bytes: eth0.rx_bytes,
        rx_frames: eth0.rx_packets,
        tx_bytes: eth0.tx_bytes,
        tx_frames: eth0.tx_packets,
        ..Counters::default()
    };
    let mut stat = false;
    let mut tcp_names: Option<Vec<&str>> = None;
    for line in out.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("cpu ") {
            // user nice system idle iowait irq softirq steal ...
            let v: Vec<u64> = nums(rest).collect();
            c.cpu_ticks = v.iter().sum();
            c.idle_ticks = v.get(3).copied().unwrap_or(0);
            c.irq_ticks = v.get(5).copied().unwrap_or(0);
            c.softirq_ticks = v.get(6).copied().unwrap_or(0);
            stat = true;
        } else if let Some(rest) = line.strip_prefix("Tcp:") {
            match tcp_names.take() {
                None => tcp_names = Some(rest.split_whitespace().collect()),
                Some(names) => {
                    for (n, v) in names.iter().zip(rest.split_whitespace()) {
                        match *n {
                            "InSegs" => c.tcp_in_segs = v.parse().unwrap_or(0),
                            "OutSegs" => c.tcp_out_segs = v.parse().unwrap_or(0),
                            _ => {}
                        }
                    }
                }
            }
        } else if line.contains("virtio") {
            // "NN:  count... chip hwirq-type name[, name]"
            let Some((_, rest)) = line.split_once(':') else {
                continue;
            };
            let n: u64 = nums(rest).sum();
            c.irqs += n;
            let name = rest.split_whitespace().last().unwrap_or("");
            if name.contains("-input.") {
                c.irqs_in += n;
            } else if name.contains("-output.") {
                c.irqs_out += n;
            }
        }
    }
    anyhow::ensure!(stat, "guest counters incomplete:\n{out}");
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = " 11:      52340   IO-APIC  11-fasteoi   virtio0
 10:          3   IO-APIC  10-fasteoi   virtio1, uhci
  eth0: 1000000   700    0    0    0     0          0         0    50000     400    0    0    0     0       0          0
cpu  100 0 50 800 0 10 40 0 0 0
Tcp: RtoAlgorithm RtoMin RtoMax MaxConn ActiveOpens PassiveOpens AttemptFails EstabResets CurrEstab InSegs OutSegs RetransSegs InErrs OutRsts InCsumErrors
Tcp: 1 200 120000 -1 2 1 0 0 1 2100 400 0 0 0 0
";

    #[test]
    fn parses_interrupts_netdev_stat_and_tcp() {
        let c = parse(SAMPLE).expect("parses");
        assert_eq!(c.irqs, 52343);
        assert_eq!(
            (c.rx_bytes, c.rx_frames, c.tx_bytes, c.tx_frames),
            (1000000, 700, 50000, 400)
        );
        assert_eq!((c.tcp_in_segs, c.tcp_out_segs), (2100, 400));
        assert_eq!(
            (c.cpu_ticks, c.idle_ticks, c.irq_ticks, c.softirq_ticks),
            (1000, 800, 10, 40)
        );
        assert!((c.irq_share() - 0.05).abs() < 1e-9);
    }

    #[test]
    fn msix_vectors_are_split_and_deltas_do_not_underflow() {
        let s = " 24: 5 PCI-MSI 49152-edge virtio0-config
 25: 100 PCI-MSI 49153-edge virtio0-input.0
 26: 30 PCI-MSI 49154-edge virtio0-output.0
eth0: 1 2 0 0 0 0 0 0 3 4 0 0 0 0 0 0
cpu 1 2 3 4
";
        let c = parse(s).expect("parses");
        assert_eq!((c.irqs, c.irqs_in, c.irqs_out), (135, 100, 30));
        let d = Counters::default().since(&c);
        assert_eq!(d, Counters::default());
        assert!((c.since(&Counters::default()).irqs_per_frame() - 135.0 / 6.0).abs() < 1e-9);
    }

    #[test]
    fn missing_lines_are_an_error() {
        assert!(parse("cpu 1 2 3 4\n").is_err());
        assert!(parse("eth0: 1 2\ncpu 1 2 3 4\n").is_err());
    }
}
