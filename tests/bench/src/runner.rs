//! Runs every selected scenario through every selected peer, `--repeat` times each, and keeps
//! each row's best run. The repeats are interleaved (peer A, B, C, then A, B, C again...), so
//! that on a shared machine every peer's runs are spread over the same stretch of time and a
//! burst of foreign load does not fall on one peer's runs only.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Result;

use crate::generator::{self, Measurement, TrafficOpts};
use crate::peers::{self, Ctx, KERNEL_VXLAN, MEMCPY};
use crate::report::Row;
use crate::scenario::{Kind, Scenario};
use crate::{frontends, kernel_vxlan, memcpy, sys, ALL_PEERS};

/// What the command line selected.
pub struct RunOpts<'a> {
    /// Peers to run (empty: all).
    pub peers: &'a [String],
    /// Measurements per row (best kept).
    pub repeat: u32,
    /// Seconds to wait for a quiet machine before each measurement.
    pub wait_quiet: f64,
    /// Extra devargs of the DPDK virtio-user frontends.
    pub virtio_user_args: &'a str,
}

/// memcpy is a per-frame-size baseline: measured with the unidirectional pair scenarios.
fn runs_peer(peer: &str, s: &Scenario) -> bool {
    match peer {
        MEMCPY => s.kind == Kind::Pair { bidir: false },
        _ => peers::supports(peer, s),
    }
}

/// One row being measured: its best result so far and every run's summary.
struct Pending {
    row: Row,
    best: Option<Result<Measurement>>,
    runs: Vec<serde_json::Value>,
    /// The peer cannot run here (the row already says why).
    unavailable: bool,
}

impl Pending {
    fn record(&mut self, r: Result<Measurement>) {
        match r {
            Ok(m) => {
                self.runs.push(serde_json::json!({
                    "mpps": m.mpps,
                    "gbps": m.gbps,
                    "offered_mpps": m.offered_mpps,
                    "frames_per_batch": m.frames_per_batch,
                    "fwd_busy": m.cost.busy_share,
                    "drops": m.drops,
                    "written_off": m.written_off,
                    "fwd_ns_per_pkt": m.cost.ns_per_pkt,
                    "other_load": m.other_load,
                }));
                if let (Some(frontends::FrontendReport::Iperf3 { guests, .. }), Some(run)) =
                    (&m.frontend, self.runs.last_mut())
                {
                    run["guest_irqs_per_frame"] =
                        serde_json::json!(guests.map(|g| g.irqs_per_frame()));
                }
                let better = match &self.best {
                    Some(Ok(b)) => m.rate() > b.rate(),
                    _ => true,
                };
                if better {
                    self.best = Some(Ok(m));
                }
            }
            Err(e) => {
                self.runs
                    .push(serde_json::json!({ "error": format!("{e:#}") }));
                if self.best.is_none() {
                    self.best = Some(Err(e));
                }
            }
        }
    }

    fn finish(mut self) -> Row {
        if self.unavailable {
            return self.row;
        }
        let s = &self.row.scenario;
        let peer = &self.row.peer;
        match self.best.take() {
            Some(Ok(mut m)) => {
                println!(
                    "{s:<14} {peer:<13} {:>7.3} Mpps {:>7.3} Gbit/s  fwd {:>7} ns/pkt  drops {}  other load {:.0}%",
                    m.mpps,
                    m.gbps,
                    m.cost.ns_per_pkt.map_or("?".into(), |v| format!("{v:.0}")),
                    m.drops,
                    m.other_load * 100.0,
                );
                m.runs = std::mem::take(&mut self.runs);
                self.row.result = Some(m);
            }
            Some(Err(e)) => {
                println!("{s:<14} {peer:<13} FAILED: {e:#}");
                self.row.error = Some(format!("{e:#}"));
            }
            None => self.row.error = Some("interrupted before it ran".into()),
        }
        self.row
    }
}

/// Measures every scenario through every peer that runs it.
pub fn run_all(
    o: &RunOpts,
    scenarios: &[Scenario],
    unavail: &[(String, String)],
    ctx: &Ctx,
    topts: &TrafficOpts,
    stop: &AtomicBool,
) -> Vec<Row> {
    let mut rows = Vec::new();
    for (si, s) in scenarios.iter().enumerate() {
        let mut pending = Vec::new();
        for peer in ALL_PEERS {
            if !o.peers.is_empty() && !o.peers.iter().any(|p| p == peer) {
                continue;
            }
            if !runs_peer(peer, s) {
                continue;
            }
            let why = unavail.iter().find(|(p, _)| p == peer).map(|(_, w)| w);
            pending.push(Pending {
                row: Row {
                    scenario: s.name.clone(),
                    peer: peer.to_string(),
                    frame_len: s.frame_len,
                    result: None,
                    error: why.cloned(),
                    ratios: Default::default(),
                },
                best: None,
                runs: Vec::new(),
                unavailable: why.is_some(),
            });
        }
        'reps: for rep in 0..o.repeat {
            for p in pending.iter_mut().filter(|p| !p.unavailable) {
                if stop.load(Ordering::Relaxed) {
                    break 'reps;
                }
                wait_quiet(o.wait_quiet);
                let tag = format!("s{si}-{}-{rep}", p.row.peer);
                p.record(measure_once(
                    &p.row.peer,
                    s,
                    ctx,
                    topts,
                    &tag,
                    o.virtio_user_args,
                ));
            }
        }
        rows.extend(pending.into_iter().map(Pending::finish));
        if stop.load(Ordering::Relaxed) {
            break;
        }
    }
    rows
}

/// Waits (at most `max_s` seconds) until other processes use less than 20 % of a CPU.
fn wait_quiet(max_s: f64) {
    if max_s <= 0.0 {
        return;
    }
    let t0 = std::time::Instant::now();
    loop {
        let ((), load) = sys::foreign_load(&[], || std::thread::sleep(Duration::from_millis(500)));
        if load < 0.2 {
            return;
        }
        if t0.elapsed().as_secs_f64() > max_s {
            println!(
                "machine still busy ({:.0}% of a CPU used by others): measuring anyway",
                load * 100.0
            );
            return;
        }
    }
}

fn measure_once(
    peer: &str,
    s: &Scenario,
    ctx: &Ctx,
    topts: &TrafficOpts,
    tag: &str,
    virtio_user_args: &str,
) -> Result<Measurement> {
    if peer == MEMCPY {
        return memcpy::run(
            s.frame_len,
            topts.queue_size,
            ctx.fwd_cpu,
            topts.warmup,
            topts.duration,
        );
    }
    if peer == KERNEL_VXLAN {
        return kernel_vxlan::run(
            s.frame_len,
            ctx.gen_cpu,
            topts.max_batch,
            topts.warmup,
            topts.duration,
        );
    }
    let topo = s.topology();
    let mut fwd = peers::start(peer, &topo, ctx, tag)?;
    let dir = ctx.dir.join(tag);
    match s.kind {
        Kind::DpdkFrontends => frontends::dpdk::run(
            &topo,
            fwd.as_mut(),
            s.frame_len,
            topts,
            virtio_user_args,
            &dir,
        ),
        Kind::Iperf3 { udp, offloads } => {
            frontends::qemu::run(&topo, fwd.as_mut(), udp, offloads, topts, &dir)
        }
        _ => generator::run(&topo, fwd.as_mut(), &s.load(), topts),
    }
}
