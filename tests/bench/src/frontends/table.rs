//! The third-party frontends' tables: every row names its frontend and its forwarder.

use std::fmt::Write;

use super::FrontendReport;
use crate::peers::{OVS, OVS_TSO, TESTPMD, TESTPMD_TSO, VSWITCH, VSWITCH_POLL};
use crate::report::{f, pct, Row};
use crate::scenario::Scenario;

/// What a forwarder is, for the tables.
pub fn forwarder(peer: &str) -> &'static str {
    match peer {
        VSWITCH => "vswitch, event mode (default)",
        VSWITCH_POLL => "vswitch `--poll-cores 0`",
        TESTPMD => "testpmd io-fwd (`net_vhost` x2)",
        TESTPMD_TSO => "testpmd io-fwd (`net_vhost` x2, `tso=1`)",
        OVS => "OVS-DPDK (`dpdkvhostuser` x2, NORMAL)",
        OVS_TSO => "OVS-DPDK (`dpdkvhostuserclient` x2, NORMAL, `userspace-tso-enable=true`)",
        _ => "?",
    }
}

/// `value / value of the testpmd row of the same scenario`.
fn vs_testpmd(rows: &[Row], r: &Row) -> Option<f64> {
    let base = rows
        .iter()
        .find(|b| b.scenario == r.scenario && b.peer == TESTPMD)?
        .result
        .as_ref()?
        .rate();
    let v = r.result.as_ref()?.rate();
    (base > 0.0).then(|| v / base)
}

/// Every run's rate ("best of N": the table shows the best).
fn runs(r: &Row, key: &str) -> String {
    r.result.as_ref().map_or(String::new(), |m| {
        m.runs
            .iter()
            .map(|x| match x.get(key).and_then(|v| v.as_f64()) {
                Some(v) => format!("{v:.2}"),
                None => "error".into(),
            })
            .collect::<Vec<_>>()
            .join(" ")
    })
}

/// Every run's guest IRQs per frame, "A/B".
fn run_irqs(r: &Row) -> String {
    r.result.as_ref().map_or(String::new(), |m| {
        m.runs
            .iter()
            .map(
                |x| match x.get("guest_irqs_per_frame").and_then(|v| v.as_array()) {
                    Some(v) => v
                        .iter()
                        .map(|g| f(g.as_f64(), 2))
                        .collect::<Vec<_>>()
                        .join("/"),
                    None => "–".into(),
                },
            )
            .collect::<Vec<_>>()
            .join(" ")
    })
}

/// A measured row: frontend, forwarder, scenario, the rate in bold, then `rest`.
fn row(t: &mut String, frontend: &str, r: &Row, rate: &str, rest: &[String]) {
    let _ = writeln!(
        t,
        "| {frontend} | {} | {} | **{rate}** | {} |",
        forwarder(&r.peer),
        r.scenario,
        rest.join(" | ")
    );
}

fn failed(t: &mut String, r: &Row, frontend: &str, cols: usize) {
    let _ = writeln!(
        t,
        "| {} | {} | {} | n/a: {} {}",
        frontend,
        forwarder(&r.peer),
        r.scenario,
        r.failure(),
        "|".repeat(cols - 3)
    );
}

/// The DPDK virtio-user rows.
pub fn dpdk_table(rows: &[Row]) -> String {
    let mut t = String::from(
        "| frontend | forwarder | scenario | Mpps at sink (median/s) | per-second Mpps | x testpmd | generator Mpps | fwd counted Mpps | fwd ns/pkt | fwd busy | drops | frontends CPU | other load | runs (Mpps) |\n\
         |---|---|---|--:|---|--:|--:|--:|--:|--:|--:|--:|--:|---|\n",
    );
    let fe = "DPDK virtio-user (txonly → rxonly)";
    for r in rows {
        let Some(m) = &r.result else {
            failed(&mut t, r, fe, 14);
            continue;
        };
        let per_s = match &m.frontend {
            Some(FrontendReport::Dpdk { sink_mpps, .. }) => sink_mpps
                .iter()
                .map(|v| format!("{v:.2}"))
                .collect::<Vec<_>>()
                .join(" "),
            _ => String::new(),
        };
        let counted = m.cost.counted.map(|(n, _)| n as f64 / m.secs / 1e6);
        let rest = [
            per_s,
            f(vs_testpmd(rows, r), 2),
            f(Some(m.offered_mpps), 2),
            f(counted, 2),
            f(m.cost.ns_per_pkt, 0),
            pct(m.cost.busy_share),
            m.drops.to_string(),
            pct(Some(m.traffic_cpu_share)),
            pct(Some(m.other_load)),
            runs(r, "mpps"),
        ];
        row(&mut t, fe, r, &f(Some(m.mpps), 2), &rest);
    }
    t
}

/// The iperf3 rows; `scenarios` name each row's frontend.
pub fn iperf_table(rows: &[Row], scenarios: &[Scenario]) -> String {
    let mut t = String::from(
        "| frontend | forwarder | scenario | Gbit/s received | median of runs | x testpmd | offloads negotiated | UDP loss | TCP retransmits | guest IRQs/frame A · B | B rx frame (B) | guests softirq+irq A · B | fwd counted kpps | fwd busy | guests CPU | other load | runs (Gbit/s) | runs: guest IRQs/frame A/B |\n\
         |---|---|---|--:|--:|--:|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|---|\n",
    );
    for r in rows {
        let fe = scenarios
            .iter()
            .find(|s| s.name == r.scenario)
            .map_or("?", Scenario::frontend);
        let Some(m) = &r.result else {
            failed(&mut t, r, fe, 18);
            continue;
        };
        let (loss, retr, offl, guests) = match &m.frontend {
            Some(FrontendReport::Iperf3 {
                lost_percent,
                retransmits,
                offloads,
                guests,
                ..
            }) => (
                lost_percent.map(|l| format!("{l:.1}%")),
                retransmits.map(|n| n.to_string()),
                offloads.as_str(),
                Some((&guests[0], &guests[1])),
            ),
            _ => (None, None, "?", None),
        };
        let (irqs, frame, softirq) = guests.map_or(Default::default(), |(a, b)| {
            (
                format!("{:.2} · {:.2}", a.irqs_per_frame(), b.irqs_per_frame()),
                format!("{:.0}", b.rx_bytes as f64 / b.rx_frames.max(1) as f64),
                format!(
                    "{} · {}",
                    pct(Some(a.irq_share())),
                    pct(Some(b.irq_share()))
                ),
            )
        });
        let gbps: Vec<f64> = m
            .runs
            .iter()
            .filter_map(|x| x.get("gbps").and_then(|v| v.as_f64()))
            .collect();
        let counted = m.cost.counted.map(|(n, _)| n as f64 / m.secs / 1e3);
        let rest = [
            f(super::median(&gbps), 3),
            f(vs_testpmd(rows, r), 2),
            offl.to_owned(),
            loss.unwrap_or_else(|| "–".into()),
            retr.unwrap_or_else(|| "–".into()),
            irqs,
            frame,
            softirq,
            f(counted, 0),
            pct(m.cost.busy_share),
            pct(Some(m.traffic_cpu_share)),
            pct(Some(m.other_load)),
            runs(r, "gbps"),
            run_irqs(r),
        ];
        row(&mut t, fe, r, &f(Some(m.gbps), 3), &rest);
    }
    t
}
