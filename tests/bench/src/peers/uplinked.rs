//! Two switches on two hosts (network namespaces joined by a veth pair, see `netns`), each in
//! this process and joined by an uplink of one transport: topology port `i` is a VM port on
//! host `PortDef::host`'s switch. Both switches are created from a thread pinned to the
//! forwarder CPU, so every thread they spawn (datapath, port workers) runs there; each uplink is
//! opened on a thread inside its host's namespace (its sockets live there).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};
use vswitch::port::UplinkSpec;
use vswitch::uplink::{AfXdp, Transport, UplinkConfig, VXLAN_PORT};
use vswitch::{PortSpec, Switch, SwitchSettings};
use vswitch_channels::{ChannelId, ChannelSet, MacAddr, Policy, PortId};

use super::{Cost, Ctx, Forwarder, Window};
use crate::netns::{TwoHosts, ADDR_A, ADDR_B, IF_A, IF_B};
use crate::scenario::Topology;
use crate::sys;

/// The uplink between the two switches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wire {
    /// VXLAN (UDP 4789, VNI = channel) between the veth pair's addresses.
    Vxlan,
    /// 802.1ad S-tags (S-VID = channel) straight on the veth pair, over AF_XDP or AF_PACKET.
    Dot1ad(AfXdp),
}

impl Wire {
    /// The transport of host `host` (0: A, 1: B).
    fn transport(self, host: usize) -> Result<Transport> {
        let (me, ifname, peer) = match host {
            0 => (ADDR_A, IF_A, ADDR_B),
            1 => (ADDR_B, IF_B, ADDR_A),
            _ => bail!("two-host scenarios have hosts 0 and 1, not {host}"),
        };
        Ok(match self {
            Wire::Vxlan => Transport::Vxlan {
                local: format!("{me}:{VXLAN_PORT}").parse()?,
                remotes: vec![peer.parse()?],
            },
            Wire::Dot1ad(xdp) => Transport::Dot1ad {
                interface: ifname.to_string(),
                xdp,
            },
        })
    }
}

/// One host's switch.
struct Host {
    switch: Arc<Switch>,
    uplink: PortId,
}

/// Counters summed over both switches.
#[derive(Default, Clone, Copy)]
struct Totals {
    drops: u64,
    no_rx_buffer: u64,
    oversize: u64,
    flooded: u64,
    uplink_out: u64,
}

/// The two switches and their hosts.
pub struct Uplinked {
    // Declared before `hosts`: the switches (and their uplinks' sockets) go before the
    // namespaces are deleted.
    switches: Vec<Host>,
    hosts: Option<TwoHosts>,
    sockets: Vec<PathBuf>,
    /// Port id of each topology port on its host's switch.
    ids: Vec<PortId>,
    tsc_mhz: Option<f64>,
    before: Totals,
    softirqd_before: u64,
}

/// A switch and the ids of its VM ports, by topology port.
type Made = (Arc<Switch>, Vec<(usize, PortId)>);

/// Creates a switch from a thread pinned to `cpu` (its threads inherit the CPU) and adds the
/// VM ports `specs` (topology port, spec).
fn switch_with_ports(cpu: usize, specs: Vec<(usize, PortSpec)>) -> Result<Made> {
    std::thread::Builder::new()
        .name("bench-switch-setup".into())
        .spawn(move || -> Result<Made> {
            sys::pin_current_thread(cpu)?;
            let sw = Switch::new(SwitchSettings::default(), Policy::new());
            let mut made = Vec::new();
            for (i, s) in specs {
                let name = s.name.clone();
                let id = sw
                    .add_port(s)
                    .with_context(|| format!("adding port {name}"))?;
                made.push((i, id));
            }
            Ok((sw, made))
        })
        .context("spawning the switch setup thread")?
        .join()
        .map_err(|_| anyhow!("the switch setup thread panicked"))?
}

fn channel(svid: u16) -> Result<ChannelId> {
    ChannelId::new(svid).map_err(|e| anyhow!("channel {svid}: {e}"))
}

impl Uplinked {
    /// Creates both hosts, both switches with their VM ports, and the uplinks.
    pub fn start(topo: &Topology, ctx: &Ctx, dir: &Path, wire: Wire) -> Result<Self> {
        let hosts = TwoHosts::new().context("creating the two hosts")?;
        let sockets = super::socket_paths(dir, topo.ports.len());
        let channels: ChannelSet = topo
            .ports
            .iter()
            .map(|p| channel(p.channel))
            .collect::<Result<_>>()?;
        let mut switches = Vec::new();
        let mut ids = vec![None; topo.ports.len()];
        for host in 0..2 {
            let ns = if host == 0 { &hosts.a } else { &hosts.b };
            let cfg = UplinkConfig {
                spec: UplinkSpec {
                    name: "uplink".into(),
                    channels: channels.clone(),
                    mac_limit: None,
                    reflective_relay: false,
                },
                transport: wire.transport(host)?,
                // Only used when no interface holds the VXLAN local address (not here).
                mtu: 1500,
            };
            let io = ns
                .run(|| vswitch::uplink::open(&cfg).map_err(anyhow::Error::from))
                .with_context(|| format!("opening the uplink of host {host}"))?;
            let specs: Vec<(usize, PortSpec)> = topo
                .ports
                .iter()
                .enumerate()
                .filter(|(_, p)| p.host == host)
                .map(|(i, p)| {
                    let mut s =
                        PortSpec::new(format!("p{i}"), sockets[i].clone(), channel(p.channel)?);
                    s.mac = Some(MacAddr::new(p.mac));
                    Ok((i, s))
                })
                .collect::<Result<_>>()?;
            let (switch, made) = switch_with_ports(ctx.fwd_cpu, specs)?;
            for (i, id) in made {
                ids[i] = Some(id);
            }
            let uplink = switch
                .add_uplink(cfg.spec, io)
                .with_context(|| format!("adding the uplink of host {host}"))?;
            switches.push(Host { switch, uplink });
        }
        let ids = ids
            .into_iter()
            .enumerate()
            .map(|(i, id)| id.ok_or_else(|| anyhow!("port {i} is on neither host")))
            .collect::<Result<_>>()?;
        Ok(Uplinked {
            switches,
            hosts: Some(hosts),
            sockets,
            ids,
            tsc_mhz: ctx.tsc_mhz,
            before: Totals::default(),
            softirqd_before: 0,
        })
    }

    fn totals(&self) -> Totals {
        let mut t = Totals::default();
        for h in &self.switches {
            let st = h.switch.stats();
            let counters = st
                .ports
                .iter()
                .map(|p| &p.switch)
                .chain(st.uplinks.iter().map(|u| &u.switch));
            for c in counters {
                t.drops += c.drops.total();
                t.no_rx_buffer += c.drops.no_rx_buffer;
                t.oversize += c.drops.oversize;
                t.flooded += c.flooded;
            }
            t.uplink_out += st.uplinks.iter().map(|u| u.switch.out_frames).sum::<u64>();
        }
        t
    }
}

impl Forwarder for Uplinked {
    fn sockets(&self) -> &[PathBuf] {
        &self.sockets
    }

    /// Teaches each switch's FDB every guest MAC: behind its VM port on its own host, behind
    /// the uplink on the other (the sinks never send, so neither switch could learn them).
    fn after_connect(&mut self, topo: &Topology) -> Result<()> {
        for (h, host) in self.switches.iter().enumerate() {
            let fdb = &host.switch.core().fdb;
            let now = fdb.now();
            for (p, id) in topo.ports.iter().zip(&self.ids) {
                let behind = if p.host == h { *id } else { host.uplink };
                fdb.learn(channel(p.channel)?, &p.mac, behind, u32::MAX, now);
            }
        }
        Ok(())
    }

    fn begin_window(&mut self) -> Result<()> {
        self.before = self.totals();
        self.softirqd_before = sys::softirqd_ns();
        Ok(())
    }

    fn end_window(&mut self, w: &Window) -> Result<Cost> {
        let after = self.totals();
        let softirqd = sys::softirqd_ns().saturating_sub(self.softirqd_before);
        let b = self.before;
        let switch_ns = w.process_cpu_ns.saturating_sub(w.traffic_cpu_ns) as f64;
        let pkts = w.rx_frames.max(1) as f64;
        let ns = switch_ns / pkts;
        let mut notes = vec![format!(
            "ksoftirqd CPU in window: {:.0} ns/pkt (not in fwd ns/pkt)",
            softirqd as f64 / pkts
        )];
        if after.drops > b.drops {
            notes.push(format!(
                "switch drops in window: {} ({} no_rx_buffer / transport full, {} oversize)",
                after.drops - b.drops,
                after.no_rx_buffer - b.no_rx_buffer,
                after.oversize - b.oversize
            ));
        }
        if after.flooded > b.flooded {
            notes.push(format!("flooded copies: {}", after.flooded - b.flooded));
        }
        notes.push(format!(
            "uplink frames out (both switches): {}",
            after.uplink_out - b.uplink_out
        ));
        Ok(Cost {
            ns_per_pkt: Some(ns),
            cycles_per_pkt: self.tsc_mhz.map(|m| ns * m / 1000.0),
            busy_share: Some(switch_ns / (w.secs * 1e9)),
            source: "process CPU time - traffic threads: both switches' threads, with the \
                     kernel's UDP/IP/veth work done in their system calls and softirqs"
                .into(),
            notes,
            counted: None,
        })
    }
}

impl Drop for Uplinked {
    fn drop(&mut self) {
        for h in self.switches.drain(..) {
            h.switch.shutdown();
        }
        // Then the namespaces (and the veth pair with them).
        self.hosts.take();
    }
}
