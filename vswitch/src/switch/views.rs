//! What the control API shows: ports, uplinks, the FDB, counters.

use vswitch_channels::ChannelId;

use super::Switch;
use crate::config::channel_ranges;
use crate::port::PortKind;
use crate::stats::{
    ChannelStats, FdbEntryInfo, PortInfo, PortStatsOut, StateGauges, SwitchStats, UplinkInfo,
    UplinkStatsOut,
};

impl Switch {
    /// VM ports and their channels (uplinks: [`Switch::uplinks`]).
    pub fn ports(&self) -> Vec<PortInfo> {
        let reg = self.core.registry.load();
        let table = self.core.ports.load();
        table
            .iter()
            .filter_map(|(id, e)| {
                let vm = e.vm()?;
                Some(PortInfo {
                    id: id.get(),
                    name: e.name.clone(),
                    kind: "vm",
                    socket: vm.spec.socket.display().to_string(),
                    role: format!("{:?}", vm.spec.role).to_lowercase(),
                    channel: reg.channel_of(id).map(|c| c.id.get()),
                    channel_mode: vm.spec.channel_mode.as_str(),
                    mac: e.mac.map(|m| m.to_string()),
                    mac_limit: e.mac_limit,
                    queues: vm.spec.queues,
                    connected: vm.handle.is_connected(),
                    tx_broken: vm.handle.is_tx_broken(),
                    rate_mbit: vm.spec.rate.rate_mbit,
                    burst_kb: vm.spec.rate.burst_kb,
                    pps: vm.spec.rate.pps,
                })
            })
            .collect()
    }

    /// Uplinks and the channels they carry (their transports are configuration: see
    /// [`UplinkInfo::with_config`]).
    pub fn uplinks(&self) -> Vec<UplinkInfo> {
        let table = self.core.ports.load();
        table
            .iter()
            .filter_map(|(id, e)| {
                let up = e.uplink()?;
                Some(UplinkInfo {
                    id: id.get(),
                    name: e.name.clone(),
                    kind: "uplink",
                    transport: None,
                    interface: None,
                    local: None,
                    remotes: None,
                    channels: channel_ranges(&up.channels),
                    reflective_relay: up.reflective_relay,
                    mac_limit: e.mac_limit,
                    mtu: None,
                })
            })
            .collect()
    }

    /// The uplinks that carry `channel`.
    pub fn uplinks_on(&self, channel: ChannelId) -> Vec<String> {
        let table = self.core.ports.load();
        table
            .iter()
            .filter(|(_, e)| e.uplink().is_some_and(|u| u.carries(channel)))
            .map(|(_, e)| e.name.clone())
            .collect()
    }

    /// The learned addresses.
    pub fn fdb(&self) -> Vec<FdbEntryInfo> {
        let table = self.core.ports.load();
        self.core
            .fdb
            .entries()
            .into_iter()
            .map(|e| FdbEntryInfo {
                channel: e.channel.get(),
                mac: e.mac.to_string(),
                port: table
                    .get(e.port)
                    .map_or_else(|| format!("#{}", e.port.get()), |p| p.name.clone()),
                age_s: e.age_s,
                is_static: e.is_static,
            })
            .collect()
    }

    /// Counters per port, per uplink and per channel.
    pub fn stats(&self) -> SwitchStats {
        let reg = self.core.registry.load();
        let table = self.core.ports.load();
        let ports = table
            .iter()
            .filter_map(|(id, e)| {
                let PortKind::Vm(vm) = &e.kind else {
                    return None;
                };
                Some(PortStatsOut {
                    name: e.name.clone(),
                    channel: reg.channel_of(id).map(|c| c.id.get()),
                    switch: e.counters.snapshot(),
                    port: vm.handle.stats(),
                    queues: vm.handle.queue_stats(),
                })
            })
            .collect();
        let uplinks = table
            .iter()
            .filter_map(|(_, e)| {
                Some(UplinkStatsOut {
                    name: e.name.clone(),
                    channels: channel_ranges(&e.uplink()?.channels),
                    switch: e.counters.snapshot(),
                })
            })
            .collect();
        let mut channels = Vec::new();
        for (i, c) in self.core.all_channel_counters().iter().enumerate() {
            let s = c.snapshot();
            let members = ChannelId::new(i as u16)
                .map(|ch| reg.ports_in(ch).len())
                .unwrap_or(0);
            if members > 0 || s != Default::default() {
                channels.push(ChannelStats {
                    channel: i as u16,
                    ports: members,
                    counters: s,
                });
            }
        }
        SwitchStats {
            ports,
            uplinks,
            channels,
        }
    }

    /// Counters in the Prometheus text format, with the gauges (FDB entries per channel,
    /// each port's connection state).
    pub fn prometheus(&self) -> String {
        let mut state = StateGauges::default();
        for e in self.core.fdb.entries() {
            *state.fdb_entries.entry(e.channel.get()).or_default() += 1;
        }
        state.ports = self
            .ports()
            .into_iter()
            .map(|p| (p.name, p.connected, p.tx_broken))
            .collect();
        self.stats().prometheus_with(Some(&state))
    }
}
