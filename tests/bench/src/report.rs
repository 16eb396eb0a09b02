//! Results: ratios against the baselines measured in the same run, the table, the JSON file.

use std::fmt::Write;

use serde::Serialize;

use crate::frontends::FrontendReport;
use crate::generator::Measurement;
use crate::peers::{
    KERNEL_VXLAN, MEMCPY, OVS, TESTPMD, VSWITCH_DOT1AD, VSWITCH_DOT1AD_XDP, VSWITCH_VXLAN,
};
use crate::scenario::Scenario;

/// Ratios of one row (None where the baseline did not run).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Ratios {
    /// Mpps / memcpy Mpps (same frame size).
    pub mpps_vs_memcpy: Option<f64>,
    /// Mpps / testpmd Mpps (baseline scenario).
    pub mpps_vs_testpmd: Option<f64>,
    /// Mpps / OVS-DPDK Mpps (baseline scenario).
    pub mpps_vs_ovs: Option<f64>,
    /// Forwarder ns/packet / testpmd's (below 1: cheaper than testpmd).
    pub cost_vs_testpmd: Option<f64>,
    /// Forwarder ns/packet / OVS-DPDK's.
    pub cost_vs_ovs: Option<f64>,
    /// Forwarder ns/packet / the same peer's in the flat-cost reference scenario.
    pub cost_vs_flat_ref: Option<f64>,
    /// Two-host scenarios: Mpps / the kernel VXLAN path's Mpps (same scenario).
    pub mpps_vs_kernel: Option<f64>,
    /// Two-host scenarios: CPU ns/packet / the kernel VXLAN path's.
    pub cost_vs_kernel: Option<f64>,
}

/// One scenario through one peer.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// Scenario name.
    pub scenario: String,
    /// Peer name.
    pub peer: String,
    /// Frame length.
    pub frame_len: usize,
    /// What was measured, if it ran.
    pub result: Option<Measurement>,
    /// Why it did not run or failed.
    pub error: Option<String>,
    /// Ratios against the baselines of this run.
    pub ratios: Ratios,
}

impl Row {
    /// The first line of why it did not run ("not run" when it has no error), with '|'
    /// replaced so that it fits a table cell.
    pub fn failure(&self) -> String {
        let why = self.error.as_deref().unwrap_or("not run");
        why.lines().next().unwrap_or("").replace('|', "/")
    }

    fn cost(&self) -> Option<f64> {
        self.result.as_ref().and_then(|m| m.cost.ns_per_pkt)
    }
    fn mpps(&self) -> Option<f64> {
        self.result.as_ref().map(|m| m.mpps).filter(|v| *v > 0.0)
    }
}

fn find<'a>(rows: &'a [Row], scenario: &str, peer: &str) -> Option<&'a Row> {
    rows.iter()
        .find(|r| r.scenario == scenario && r.peer == peer && r.result.is_some())
}

fn div(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    a.zip(b).and_then(|(a, b)| (b > 0.0).then_some(a / b))
}

/// Fills in every row's ratios.
pub fn compute_ratios(rows: &mut [Row], scenarios: &[Scenario]) {
    let snapshot = rows.to_vec();
    for r in rows.iter_mut() {
        let Some(s) = scenarios.iter().find(|s| s.name == r.scenario) else {
            continue;
        };
        let memcpy = snapshot
            .iter()
            .find(|b| b.peer == MEMCPY && b.frame_len == r.frame_len && b.result.is_some());
        let tp = find(&snapshot, &s.baseline_of, TESTPMD);
        let ovs = find(&snapshot, &s.baseline_of, OVS);
        let flat = s
            .flat_ref
            .as_deref()
            .and_then(|f| find(&snapshot, f, &r.peer));
        let kernel = s
            .is_two_host()
            .then(|| find(&snapshot, &s.name, KERNEL_VXLAN))
            .flatten();
        r.ratios = Ratios {
            mpps_vs_memcpy: div(r.mpps(), memcpy.and_then(Row::mpps)),
            mpps_vs_testpmd: div(r.mpps(), tp.and_then(Row::mpps)),
            mpps_vs_ovs: div(r.mpps(), ovs.and_then(Row::mpps)),
            cost_vs_testpmd: div(r.cost(), tp.and_then(Row::cost)),
            cost_vs_ovs: div(r.cost(), ovs.and_then(Row::cost)),
            cost_vs_flat_ref: div(r.cost(), flat.and_then(Row::cost)),
            mpps_vs_kernel: div(r.mpps(), kernel.and_then(Row::mpps)),
            cost_vs_kernel: div(r.cost(), kernel.and_then(Row::cost)),
        };
    }
}

/// `v` with `prec` decimals, "–" when missing or not finite.
pub fn f(v: Option<f64>, prec: usize) -> String {
    v.filter(|x| x.is_finite())
        .map_or("–".into(), |x| format!("{x:.prec$}"))
}

/// `v` as a whole percentage, "–" when missing or not finite.
pub fn pct(v: Option<f64>) -> String {
    v.filter(|x| x.is_finite())
        .map_or("–".into(), |x| format!("{:.0}%", x * 100.0))
}

/// The results as a Markdown table.
pub fn table(rows: &[Row]) -> String {
    let mut t = String::new();
    t.push_str(
        "| scenario | peer | Mpps | Gbit/s | ns/pkt | drops | fwd ns/pkt | fwd cycles/pkt | fwd busy | gen CPU | other load | x memcpy | x testpmd | x OVS | cost/testpmd | cost/OVS | cost/ref |\n",
    );
    t.push_str("|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n");
    for r in rows {
        let Some(m) = &r.result else {
            let _ = writeln!(
                t,
                "| {} | {} | n/a: {} ||||||||||||||",
                r.scenario,
                r.peer,
                r.failure()
            );
            continue;
        };
        let x = &r.ratios;
        let _ = writeln!(
            t,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            r.scenario,
            r.peer,
            f(Some(m.mpps), 3),
            f(Some(m.gbps), 2),
            f(Some(m.ns_per_pkt), 0),
            m.drops,
            f(m.cost.ns_per_pkt, 0),
            f(m.cost.cycles_per_pkt, 0),
            pct(m.cost.busy_share),
            pct(Some(m.traffic_cpu_share)),
            pct(Some(m.other_load)),
            f(x.mpps_vs_memcpy, 2),
            f(x.mpps_vs_testpmd, 2),
            f(x.mpps_vs_ovs, 2),
            f(x.cost_vs_testpmd, 2),
            f(x.cost_vs_ovs, 2),
            f(x.cost_vs_flat_ref, 2),
        );
    }
    t
}

/// What a two-host peer's frames go through.
fn two_host_path(peer: &str) -> &'static str {
    match peer {
        VSWITCH_VXLAN => "test guest → vswitch A → VXLAN uplink (raw-socket sendmmsg) → veth → VXLAN uplink (recvmmsg) → vswitch B → test guest",
        VSWITCH_DOT1AD => "test guest → vswitch A → 802.1ad uplink (AF_PACKET sendmmsg) → veth → 802.1ad uplink (AF_PACKET recvmmsg) → vswitch B → test guest",
        VSWITCH_DOT1AD_XDP => "test guest → vswitch A → 802.1ad uplink (AF_XDP tx ring, copy mode) → veth → XDP redirect → 802.1ad uplink (AF_XDP rx ring) → vswitch B → test guest",
        KERNEL_VXLAN => "AF_PACKET sendmmsg → kernel vxlan device A → veth → kernel vxlan device B (rx_packets)",
        _ => "?",
    }
}

/// The two-host rows as a Markdown table, with their ratios to the kernel's VXLAN path.
pub fn two_host_table(rows: &[Row]) -> String {
    let mut t = String::new();
    t.push_str(
        "| scenario | peer | path | Mpps | Gbit/s | drops | CPU ns/pkt | fwd busy | gen CPU | other load | x kernel | cost/kernel |\n",
    );
    t.push_str("|---|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n");
    for r in rows {
        let Some(m) = &r.result else {
            let _ = writeln!(
                t,
                "| {} | {} | {} | n/a: {} ||||||||",
                r.scenario,
                r.peer,
                two_host_path(&r.peer),
                r.failure()
            );
            continue;
        };
        let _ = writeln!(
            t,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            r.scenario,
            r.peer,
            two_host_path(&r.peer),
            f(Some(m.mpps), 3),
            f(Some(m.gbps), 2),
            m.drops,
            f(m.cost.ns_per_pkt, 0),
            pct(m.cost.busy_share),
            pct(Some(m.traffic_cpu_share)),
            pct(Some(m.other_load)),
            f(r.ratios.mpps_vs_kernel, 2),
            f(r.ratios.cost_vs_kernel, 2),
        );
    }
    t
}

/// Notes worth printing under the table (forwarder notes, errors in full).
pub fn notes(rows: &[Row]) -> String {
    let mut t = String::new();
    for r in rows {
        if let Some(m) = &r.result {
            if m.runs.len() > 1 {
                // iperf3's TCP has no frame count: its runs are compared in Gbit/s.
                let (key, unit) = match m.frontend {
                    Some(FrontendReport::Iperf3 { .. }) => ("gbps", "Gbit/s"),
                    _ => ("mpps", "Mpps"),
                };
                let v: Vec<String> = m
                    .runs
                    .iter()
                    .map(|x| match x.get(key).and_then(|v| v.as_f64()) {
                        Some(v) => format!("{v:.2}"),
                        None => "error".into(),
                    })
                    .collect();
                let _ = writeln!(
                    t,
                    "- {} / {}: runs ({unit}) {}",
                    r.scenario,
                    r.peer,
                    v.join(", ")
                );
            }
            if m.written_off > 0 {
                let _ = writeln!(
                    t,
                    "- {} / {}: {} frames written off as dropped by the forwarder (closed-loop recovery)",
                    r.scenario, r.peer, m.written_off
                );
            }
            for n in &m.cost.notes {
                let _ = writeln!(t, "- {} / {}: {n}", r.scenario, r.peer);
            }
            if m.device_errors > 0 {
                let _ = writeln!(
                    t,
                    "- {} / {}: {} malformed used entries seen by the guests",
                    r.scenario, r.peer, m.device_errors
                );
            }
        }
    }
    t
}

/// Everything, for `--json`.
#[derive(Debug, Serialize)]
pub struct Report<'a> {
    /// Machine, placement and settings.
    pub meta: serde_json::Value,
    /// Peers that could not run at all, with the reason.
    pub unavailable: Vec<(String, String)>,
    /// The scenarios.
    pub scenarios: &'a [Scenario],
    /// Every row.
    pub rows: &'a [Row],
}
