//! DPDK virtio-user generator and sink: two dpdk-testpmd processes, each one `net_virtio_user`
//! port connected to one of the forwarder's sockets, both pinned to the generator CPU (main and
//! forwarding lcore, `--lcores 0@C,1@C`). The sink (`--forward-mode=rxonly`) starts first, then
//! the forwarder is prepared, then the generator (`--forward-mode=txonly`, `--txpkts=LEN`,
//! `--eth-peer` = the sink's MAC, source = its own port MAC), open loop. Both print their port
//! statistics every second (`--stats-period 1`); the rate is the median of the sink's
//! per-second `Rx-pps` over the window.

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use vswitch_tests::Testpmd;

use super::{mac_str, median, two_ports, CpuWindow, FrontendReport};
use crate::generator::{Measurement, TrafficOpts};
use crate::peers::Forwarder;
use crate::scenario::Topology;
use crate::sys;

/// One `--stats-period` block of testpmd's output (port 0).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct StatBlock {
    rx_packets: u64,
    tx_packets: u64,
    rx_pps: f64,
    tx_pps: f64,
}

/// The first number after `key` in `text`.
fn first_number(text: &str, key: &str) -> Option<f64> {
    let i = text.find(key)? + key.len();
    let rest = text[i..].trim_start();
    let end = rest
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

/// Every complete periodic stats block printed so far, in order.
fn stat_blocks(out: &str) -> Vec<StatBlock> {
    out.split("NIC statistics for port")
        .skip(1)
        .filter_map(|b| {
            // A block ends with its Tx-pps line; one still being printed has none yet.
            let end = b.find("Tx-bps:")?;
            let b = &b[..end];
            Some(StatBlock {
                rx_packets: first_number(b, "RX-packets:")? as u64,
                tx_packets: first_number(b, "TX-packets:")? as u64,
                rx_pps: first_number(b, "Rx-pps:")?,
                tx_pps: first_number(b, "Tx-pps:")?,
            })
        })
        .collect()
}

/// `key` in testpmd's accumulated forward statistics (printed when it stops).
fn accumulated(out: &str, key: &str) -> Option<u64> {
    let i = out.rfind("Accumulated forward statistics")?;
    first_number(&out[i..], key).map(|v| v as u64)
}

/// The testpmd application arguments shared by generator and sink.
fn app_args(mode: &str, queue_size: u16) -> Vec<String> {
    let q = usize::from(queue_size);
    vec![
        format!("--forward-mode={mode}"),
        "--stats-period=1".into(),
        "--nb-cores=1".into(),
        "--rxq=1".into(),
        "--txq=1".into(),
        format!("--rxd={q}"),
        format!("--txd={q}"),
        // Both rings full plus the per-lcore mempool cache and a burst.
        format!("--total-num-mbufs={}", 2 * q + 4096),
    ]
}

fn spawn(
    dir: &Path,
    name: &str,
    socket: &Path,
    mac: [u8; 6],
    o: &TrafficOpts,
    devargs: &str,
    app: &[String],
) -> Result<Testpmd> {
    let d = dir.join(name);
    std::fs::create_dir_all(&d).with_context(|| format!("creating {}", d.display()))?;
    let mut dev = format!("mac={},queue_size={}", mac_str(mac), o.queue_size);
    if !devargs.is_empty() {
        dev.push(',');
        dev.push_str(devargs);
    }
    let app: Vec<&str> = app.iter().map(String::as_str).collect();
    Testpmd::spawn_virtio_user(
        &d,
        socket,
        &dev,
        &format!("0@{c},1@{c}", c = o.gen_cpu),
        &app,
    )
    .with_context(|| {
        format!(
            "starting the DPDK virtio-user {name} on {}",
            socket.display()
        )
    })
}

/// Runs the two-port `topo` through `fwd` with DPDK virtio-user frontends sending
/// `frame_len`-byte frames from port 0 to port 1. `devargs` are appended to both
/// `net_virtio_user` devices (e.g. `in_order=0`, `packed_vq=1`).
pub fn run(
    topo: &Topology,
    fwd: &mut dyn Forwarder,
    frame_len: usize,
    o: &TrafficOpts,
    devargs: &str,
    dir: &Path,
) -> Result<Measurement> {
    let ([s0, s1], [p0, p1]) = two_ports(fwd, topo, "the DPDK frontends")?;
    let (gen_mac, sink_mac) = (p0.mac, p1.mac);
    let mut sink = spawn(
        dir,
        "sink",
        &s1,
        sink_mac,
        o,
        devargs,
        &app_args("rxonly", o.queue_size),
    )?;
    fwd.after_connect(topo).context("preparing the forwarder")?;
    let mut gen_args = app_args("txonly", o.queue_size);
    gen_args.push(format!("--txpkts={frame_len}"));
    gen_args.push(format!("--eth-peer=0,{}", mac_str(sink_mac)));
    let mut gen = spawn(dir, "gen", &s0, gen_mac, o, devargs, &gen_args)?;
    std::thread::sleep(o.warmup);
    fwd.begin_window()?;
    let (n0, g0) = (
        stat_blocks(&sink.output()).len(),
        stat_blocks(&gen.output()).len(),
    );
    let cpu = CpuWindow::start(fwd, [gen.pid(), sink.pid()]);
    let ((), other_load) = sys::foreign_load(&cpu.pids, || std::thread::sleep(o.duration));
    // The block covering the window's last second is printed up to a second later.
    std::thread::sleep(Duration::from_millis(200));
    let spent = cpu.stop();
    let secs = spent.secs;
    let sblocks = stat_blocks(&sink.output());
    let gblocks = stat_blocks(&gen.output());
    let sink_w = sblocks.get(n0..).unwrap_or_default();
    let gen_w = gblocks.get(g0..).unwrap_or_default();
    if sink_w.is_empty() {
        bail!(
            "the sink printed no statistics in the {secs:.1} s window:\n{}",
            sink.output()
                .lines()
                .rev()
                .take(20)
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
    let sink_mpps: Vec<f64> = sink_w.iter().map(|b| b.rx_pps / 1e6).collect();
    let gen_mpps: Vec<f64> = gen_w.iter().map(|b| b.tx_pps / 1e6).collect();
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
    let rx_frames = (mean(&sink_mpps) * 1e6 * secs) as u64;
    let tx_frames = (mean(&gen_mpps) * 1e6 * secs) as u64;
    let cost = fwd.end_window(&spent.window(rx_frames))?;
    // Stop the generator (SIGTERM: testpmd prints its accumulated statistics), let the sink
    // receive what is still on its way, then stop the sink: drops = sent - received.
    gen.kill();
    std::thread::sleep(Duration::from_millis(1500));
    sink.kill();
    let (gout, sout) = (gen.output(), sink.output());
    let sent = accumulated(&gout, "TX-packets:")
        .or_else(|| stat_blocks(&gout).last().map(|b| b.tx_packets));
    let received = accumulated(&sout, "RX-packets:")
        .or_else(|| stat_blocks(&sout).last().map(|b| b.rx_packets));
    let mpps = median(&sink_mpps).unwrap_or(0.0);
    let pps = mpps * 1e6;
    Ok(Measurement {
        secs,
        rx_frames,
        tx_frames,
        mpps,
        offered_mpps: median(&gen_mpps).unwrap_or(0.0),
        gbps: pps * frame_len as f64 * 8.0 / 1e9,
        ns_per_pkt: if pps > 0.0 { 1e9 / pps } else { f64::INFINITY },
        drops: sent.zip(received).map_or(0, |(s, r)| s.saturating_sub(r)),
        sent_total: sent.unwrap_or(0),
        traffic_cpu_share: spent.frontend_share,
        other_load,
        cost,
        frontend: Some(FrontendReport::Dpdk {
            sink_mpps,
            gen_mpps,
            gen_tx_refused: accumulated(&gout, "TX-dropped:"),
        }),
        ..Measurement::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const BLOCK: &str = "\x1b[2J\x1b[1;1H
Port statistics ====================================
  ######################## NIC statistics for port 0  ########################
  RX-packets: 12         RX-missed: 0          RX-bytes:  768
  RX-errors: 0
  RX-nombuf:  0
  TX-packets: 3456789    TX-errors: 0          TX-bytes:  221234496

  Throughput (since last show)
  Rx-pps:            0          Rx-bps:            0
  Tx-pps:      2612345          Tx-bps:   1337520640
  ############################################################################
";

    #[test]
    fn parses_periodic_blocks_and_ignores_a_partial_one() {
        let text = format!("{BLOCK}{BLOCK}  #### NIC statistics for port 0 ####\n  RX-packets: 5");
        let b = stat_blocks(&text);
        assert_eq!(b.len(), 2);
        assert_eq!(b[0].rx_packets, 12);
        assert_eq!(b[0].tx_packets, 3_456_789);
        assert_eq!(b[1].tx_pps, 2_612_345.0);
        assert_eq!(b[1].rx_pps, 0.0);
    }

    #[test]
    fn accumulated_stats_are_read_after_their_header() {
        let text = format!(
            "{BLOCK}
  +++++++++++++++ Accumulated forward statistics for all ports+++++++++++++++
  RX-packets: 0              RX-dropped: 0             RX-total: 0
  TX-packets: 9000           TX-dropped: 77            TX-total: 9077
"
        );
        assert_eq!(accumulated(&text, "TX-packets:"), Some(9000));
        assert_eq!(accumulated(&text, "TX-dropped:"), Some(77));
        assert_eq!(accumulated(BLOCK, "TX-packets:"), None);
    }
}
