//! Adding and removing ports.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use log::{info, warn};
use vswitch_channels::{ChannelId, ChannelInfo, MacAddr, PortId, VmId};
use vswitch_vhost::{NetPort, PortConfig, PortHandle};

use super::Switch;
use crate::counters::Counters;
use crate::error::SwitchError;
use crate::fdb::MAX_PORTS;
use crate::police::{Policer, RateLimit};
use crate::port::{PortEntry, PortKind, Uplink, UplinkPort, UplinkSpec, VmPort};
use crate::spec::{socket_key, PortSpec};

impl Switch {
    /// Adds a VM port: associates it with its channel, then starts serving its socket.
    pub fn add_port(&self, spec: PortSpec) -> Result<PortId, SwitchError> {
        self.add_port_as(spec, None)
    }

    /// [`Switch::add_port`], as the migration target of `target_of` if set (`migration.rs`).
    pub(super) fn add_port_as(
        &self,
        spec: PortSpec,
        target_of: Option<&str>,
    ) -> Result<PortId, SwitchError> {
        self.add_port_on(spec, true, target_of)
    }

    /// Adds a VM port that is on no channel (its spec's channel is not used) until
    /// [`Switch::associate`]: restoring a disassociated port must not put it on a channel even
    /// for an instant.
    pub fn add_port_unassociated(&self, spec: PortSpec) -> Result<PortId, SwitchError> {
        self.add_port_on(spec, false, None)
    }

    fn add_port_on(
        &self,
        spec: PortSpec,
        associate: bool,
        target_of: Option<&str>,
    ) -> Result<PortId, SwitchError> {
        let mut running = self.lock_ports();
        let table = self.core.ports.load_full();
        if table.find(&spec.name).is_some() {
            return Err(SwitchError::DuplicateName(spec.name));
        }
        // Compared canonically (`d/x.sock` is `d/./sub/../x.sock`) and under the lock, against
        // the running ports and those still stopping.
        let key = socket_key(&spec.socket);
        if let Some(owner) = running.sockets.get(&key) {
            return Err(SwitchError::DuplicateSocket(spec.socket, owner.clone()));
        }
        if associate {
            let reg = self.core.registry.snapshot();
            super::migration::check_mac(&table, &reg, &spec, target_of)?;
        }
        let id = free_id(&table)?;
        // A stale FDB entry for a reused id must not point at the new VM.
        self.core.fdb.flush_port(id);
        // A port restored on no channel is described by every snapshot from now on: the
        // removal of any earlier port with this id is already published.
        let registered_at = if associate {
            self.core
                .registry
                .associate(
                    VmId::new(id, spec.mac),
                    ChannelInfo::new(spec.channel, spec.channel_mode),
                )
                .map_err(SwitchError::Registry)?
        } else {
            self.core.registry.generation()
        };
        let mut cfg = PortConfig::new(spec.name.clone(), spec.socket.clone(), spec.role);
        cfg.mac = spec.mac.map(|m| *m.as_bytes());
        cfg.mtu = spec.mtu;
        cfg.queue_pairs = spec.queues;
        cfg.mem_limits = self.core.settings.mem_limits;
        cfg.socket_mode = spec.socket_mode.unwrap_or(self.core.settings.socket_mode);
        // A guest's kick wakes the datapath thread that serves this port (event mode).
        cfg.tx_doorbell = self.core.doorbells.of(id);
        let serial = self.next_serial();
        // SEND_RARP after a live migration announces the guest (see `announce.rs`).
        cfg.announce = Some(super::announce::hook(
            Arc::downgrade(&self.core),
            id,
            serial,
        ));
        let port = match NetPort::start(cfg) {
            Ok(p) => p,
            Err(e) => {
                let _ = self.core.registry.disassociate(id);
                return Err(SwitchError::Port(spec.name, e));
            }
        };
        let entry = Arc::new(PortEntry {
            name: spec.name.clone(),
            kind: PortKind::Vm(VmPort {
                handle: port.handle(),
                policer: Arc::new(Policer::new(&spec.rate)),
                spec: spec.clone(),
            }),
            mac: spec.mac,
            mac_limit: spec.mac_limit.unwrap_or(self.core.settings.mac_limit),
            counters: Arc::new(Counters::default()),
            tap: Arc::default(),
            registered_at,
            serial,
        });
        self.core.ports.store(Arc::new(table.with(id, Some(entry))));
        // A migration target's MAC stays the source's until the target announces the guest.
        if associate && target_of.is_none() {
            self.pin_mac(id, spec.channel, spec.mac);
        }
        running.ports.insert(id, port);
        running.sockets.insert(key, spec.name.clone());
        let on = match associate {
            true => format!("channel {}", spec.channel),
            false => "no channel".to_owned(),
        };
        info!(
            "port {} ({}) on {on} at {}",
            spec.name,
            id.get(),
            spec.socket.display()
        );
        Ok(id)
    }

    /// Removes a port: stops delivering to it, then stops its socket. The port stops outside
    /// the switch-wide lock: other control operations go on meanwhile, and its socket path
    /// stays taken until its socket is gone.
    pub fn remove_port(&self, name: &str) -> Result<(), SwitchError> {
        let mut running = self.lock_ports();
        let table = self.core.ports.load_full();
        let id = table
            .find(name)
            .ok_or_else(|| SwitchError::NoSuchPort(name.to_string()))?;
        let key = table
            .get(id)
            .and_then(|e| e.vm())
            .map(|vm| socket_key(&vm.spec.socket));
        let _ = self.core.registry.disassociate(id);
        self.core.ports.store(Arc::new(table.with(id, None)));
        self.core.fdb.flush_port(id);
        let port = running.ports.remove(&id);
        drop(running);
        // Its capture (if any) ends with the port, its file complete.
        if let Some(c) = self.lock_captures().remove(name) {
            if let Err(e) = c.stop(name) {
                warn!("capture of {name}: {e}");
            }
        }
        if let Some(p) = port {
            p.stop();
        }
        if let Some(key) = key {
            self.lock_ports().sockets.remove(&key);
        }
        info!("port {name} removed");
        Ok(())
    }

    /// Puts a port's configured MAC in the FDB as a static entry on its channel: frames to it
    /// go straight to the port (never flooded, even before the guest sends a frame), and a
    /// frame from another port claiming it is a spoof. Called under the port lock, after the
    /// port is in the published table and on `channel`.
    pub(super) fn pin_mac(&self, id: PortId, channel: ChannelId, mac: Option<MacAddr>) {
        let Some(mac) = mac else { return };
        if !self.core.fdb.add_static(channel, mac.as_bytes(), id) {
            warn!("port {}: MAC {mac} not pinned in the FDB (its bucket is full of static entries); it is learned from traffic instead", id.get());
        }
    }

    /// Sets a VM port's transmit rate limit at run time (`RateLimit::default()` removes it),
    /// with full buckets. The port's entry is republished with the new limit in its spec (what
    /// `ports` lists and the state file keeps); its counters, policer and identity stay.
    pub fn set_rate(&self, name: &str, limit: RateLimit) -> Result<(), SwitchError> {
        let _running = self.lock_ports();
        let table = self.core.ports.load_full();
        let id = table
            .find(name)
            .ok_or_else(|| SwitchError::NoSuchPort(name.to_string()))?;
        let Some(entry) = table.get(id) else {
            return Err(SwitchError::NoSuchPort(name.to_string()));
        };
        let Some(vm) = entry.vm() else {
            return Err(SwitchError::NotAVm(name.to_string(), "a rate limit"));
        };
        let mut spec = vm.spec.clone();
        spec.rate = limit;
        let updated = Arc::new(PortEntry {
            name: entry.name.clone(),
            kind: PortKind::Vm(VmPort {
                handle: vm.handle.clone(),
                spec,
                policer: Arc::clone(&vm.policer),
            }),
            mac: entry.mac,
            mac_limit: entry.mac_limit,
            counters: Arc::clone(&entry.counters),
            tap: Arc::clone(&entry.tap),
            registered_at: entry.registered_at,
            serial: entry.serial,
        });
        vm.policer.set(&limit);
        self.core
            .ports
            .store(Arc::new(table.with(id, Some(updated))));
        info!("port {name}: rate limit {}", describe_limit(&limit));
        Ok(())
    }

    pub(super) fn port_id(&self, name: &str) -> Result<PortId, SwitchError> {
        self.core
            .ports
            .load()
            .find(name)
            .ok_or_else(|| SwitchError::NoSuchPort(name.to_string()))
    }

    /// The vhost-user port behind a name (tests, benchmarks, diagnostics).
    pub fn port_handle(&self, name: &str) -> Option<PortHandle> {
        let table = self.core.ports.load();
        let id = table.find(name)?;
        table.get(id)?.vm().map(|vm| vm.handle.clone())
    }

    /// Adds an uplink: a trunk carrying `spec.channels`, over the transport `io`. Its frames
    /// are switched like a VM's, each on the channel its transport read from the wire; frames
    /// go out on it only on the channels it carries.
    pub fn add_uplink(&self, spec: UplinkSpec, io: Arc<dyn Uplink>) -> Result<PortId, SwitchError> {
        let running = self.lock_ports();
        let table = self.core.ports.load_full();
        if table.find(&spec.name).is_some() {
            return Err(SwitchError::DuplicateName(spec.name));
        }
        let id = free_id(&table)?;
        self.core.fdb.flush_port(id);
        io.set_doorbell(self.core.doorbells.of(id));
        let channels = spec.channels.len();
        let entry = Arc::new(PortEntry {
            name: spec.name.clone(),
            kind: PortKind::Uplink(UplinkPort {
                channels: Arc::new(spec.channels),
                reflective_relay: spec.reflective_relay,
                io,
            }),
            mac: None,
            mac_limit: spec.mac_limit.unwrap_or(self.core.settings.mac_limit),
            counters: Arc::new(Counters::default()),
            tap: Arc::default(),
            // Not in the registry: described by every snapshot from now on (the removal of
            // any earlier port with this id is already published).
            registered_at: self.core.registry.generation(),
            serial: self.next_serial(),
        });
        self.core.ports.store(Arc::new(table.with(id, Some(entry))));
        drop(running);
        info!(
            "uplink {} ({}) carrying {channels} channels",
            spec.name,
            id.get()
        );
        Ok(id)
    }

    fn next_serial(&self) -> u64 {
        self.core.serials.fetch_add(1, Ordering::Relaxed) + 1
    }
}

/// A rate limit for the log.
fn describe_limit(l: &RateLimit) -> String {
    if l.is_unlimited() {
        return "none".to_owned();
    }
    let mut parts = Vec::new();
    if let Some(r) = l.rate_mbit {
        parts.push(format!("{r} Mbit/s"));
    }
    if let Some(b) = l.burst_kb {
        parts.push(format!("burst {b} KB"));
    }
    if let Some(p) = l.pps {
        parts.push(format!("{p} frames/s"));
    }
    parts.join(", ")
}

/// An id free in the published table: only such an id is given to a new port
/// (`PortEntry::described_by` relies on it).
fn free_id(table: &crate::port::PortTable) -> Result<PortId, SwitchError> {
    (0..MAX_PORTS as u32)
        .map(PortId::new)
        .find(|id| table.get(*id).is_none())
        .ok_or(SwitchError::TooManyPorts(MAX_PORTS))
}
