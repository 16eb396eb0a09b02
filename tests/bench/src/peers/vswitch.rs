//! The switch under test, in this process: created from a thread pinned to the forwarder CPU
//! so that every port thread (and worker) it spawns inherits that CPU.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use anyhow::{anyhow, Context, Result};
use vswitch::{PortSpec, Switch, SwitchSettings};
use vswitch_channels::{ChannelId, MacAddr, Policy, PortId};

use super::{Cost, Ctx, Forwarder, Window};
use crate::scenario::Topology;
use crate::sys;

/// Switch shutdown joins every port thread in turn; with 100+ ports that takes seconds, so it
/// happens in the background and `reap` waits for all of it before the program exits.
static REAPER: Mutex<Vec<JoinHandle<()>>> = Mutex::new(Vec::new());

/// Waits for every switch still shutting down.
pub fn reap() {
    let hs: Vec<_> = match REAPER.lock() {
        Ok(mut g) => g.drain(..).collect(),
        Err(p) => p.into_inner().drain(..).collect(),
    };
    for h in hs {
        let _ = h.join();
    }
}

#[derive(Default, Clone, Copy)]
struct Totals {
    out: u64,
    flooded: u64,
    drops: u64,
    no_rx_buffer: u64,
    notifications: u64,
}

/// The in-process switch.
pub struct Vswitch {
    switch: Option<Arc<Switch>>,
    sockets: Vec<PathBuf>,
    ids: Vec<PortId>,
    poll: bool,
    tsc_mhz: Option<f64>,
    before: Totals,
}

fn channel(svid: u16) -> Result<ChannelId> {
    ChannelId::new(svid).map_err(|e| anyhow!("channel {svid}: {e}"))
}

impl Vswitch {
    /// Creates the switch and one listening port per topology port.
    pub fn start(topo: &Topology, ctx: &Ctx, dir: &Path, poll: bool) -> Result<Self> {
        let sockets = super::socket_paths(dir, topo.ports.len());
        let specs: Vec<PortSpec> = topo
            .ports
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let mut s = PortSpec::new(format!("p{i}"), sockets[i].clone(), channel(p.channel)?);
                s.mac = Some(MacAddr::new(p.mac));
                Ok(s)
            })
            .collect::<Result<_>>()?;
        let settings = SwitchSettings {
            // The FDB scenarios put up to 10k MACs behind one port.
            mac_limit: 1 << 20,
            poll_cores: if poll { vec![ctx.fwd_cpu] } else { Vec::new() },
            ..SwitchSettings::default()
        };
        let cpu = ctx.fwd_cpu;
        let made = std::thread::Builder::new()
            .name("bench-switch-setup".into())
            .spawn(move || -> Result<(Arc<Switch>, Vec<PortId>)> {
                sys::pin_current_thread(cpu)?;
                let sw = Switch::new(settings, Policy::new());
                let mut ids = Vec::new();
                for s in specs {
                    let name = s.name.clone();
                    ids.push(
                        sw.add_port(s)
                            .with_context(|| format!("adding port {name}"))?,
                    );
                }
                Ok((sw, ids))
            })
            .context("spawning the switch setup thread")?
            .join()
            .map_err(|_| anyhow!("the switch setup thread panicked"))??;
        Ok(Vswitch {
            switch: Some(made.0),
            sockets,
            ids: made.1,
            poll,
            tsc_mhz: ctx.tsc_mhz,
            before: Totals::default(),
        })
    }

    fn sw(&self) -> Result<&Arc<Switch>> {
        self.switch
            .as_ref()
            .ok_or_else(|| anyhow!("switch stopped"))
    }

    fn totals(&self) -> Result<Totals> {
        let st = self.sw()?.stats();
        let mut t = Totals::default();
        for p in &st.ports {
            t.out += p.switch.out_frames;
            t.flooded += p.switch.flooded;
            t.drops += p.switch.drops.total();
            t.no_rx_buffer += p.switch.drops.no_rx_buffer;
            t.notifications += p.port.notifications;
        }
        Ok(t)
    }
}

impl Forwarder for Vswitch {
    fn sockets(&self) -> &[PathBuf] {
        &self.sockets
    }

    /// Teaches the FDB every guest MAC and the scenario's extra MACs (the sinks never send, so
    /// the switch could not learn them from traffic).
    fn after_connect(&mut self, topo: &Topology) -> Result<()> {
        let sw = self.sw()?.clone();
        let fdb = &sw.core().fdb;
        let now = fdb.now();
        for (p, id) in topo.ports.iter().zip(&self.ids) {
            let ch = channel(p.channel)?;
            fdb.learn(ch, &p.mac, *id, u32::MAX, now);
            for m in &p.extra_macs {
                fdb.learn(ch, m, *id, u32::MAX, now);
            }
        }
        Ok(())
    }

    fn begin_window(&mut self) -> Result<()> {
        self.before = self.totals()?;
        Ok(())
    }

    fn end_window(&mut self, w: &Window) -> Result<Cost> {
        let after = self.totals()?;
        let b = self.before;
        let switch_ns = w.process_cpu_ns.saturating_sub(w.traffic_cpu_ns) as f64;
        let pkts = w.rx_frames.max(1) as f64;
        let ns = switch_ns / pkts;
        let out = (after.out - b.out).max(1) as f64;
        let mut notes = vec![format!(
            "{:.3} notifications/frame",
            (after.notifications - b.notifications) as f64 / out
        )];
        if after.drops > b.drops {
            notes.push(format!(
                "switch drops in window: {} ({} no_rx_buffer)",
                after.drops - b.drops,
                after.no_rx_buffer - b.no_rx_buffer
            ));
        }
        if after.flooded > b.flooded {
            notes.push(format!("flooded copies: {}", after.flooded - b.flooded));
        }
        Ok(Cost {
            ns_per_pkt: Some(ns),
            cycles_per_pkt: self.tsc_mhz.map(|m| ns * m / 1000.0),
            busy_share: Some(switch_ns / (w.secs * 1e9)),
            source: if self.poll {
                "process CPU time - traffic threads (poll threads spin: idle spinning included)"
                    .into()
            } else {
                "process CPU time - traffic threads (switch threads: busy time only)".into()
            },
            notes,
            counted: Some((after.out - b.out, "frames out of the switch's ports")),
        })
    }
}

impl Drop for Vswitch {
    fn drop(&mut self) {
        if let Some(sw) = self.switch.take() {
            let h = std::thread::Builder::new()
                .name("bench-switch-stop".into())
                .spawn(move || {
                    sw.shutdown();
                    drop(sw);
                });
            match (h, REAPER.lock()) {
                (Ok(h), Ok(mut g)) => g.push(h),
                (Ok(h), Err(p)) => p.into_inner().push(h),
                (Err(e), _) => eprintln!("cannot stop the switch in the background: {e}"),
            }
        }
    }
}
