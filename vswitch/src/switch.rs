//! The switch: ports, the channel registry, the policy, the FDB and the counters, and the
//! control-plane operations on them. The per-batch datapath is in [`crate::forward`].
//!
//! Everything the datapath reads is published read-copy-update style (arc-swap): the port
//! table, the registry snapshot and the policy table are loaded once per batch without
//! blocking, and control-plane changes never stop a port.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use arc_swap::ArcSwap;
use log::{info, warn};
use vswitch_channels::{
    ChannelId, ChannelInfo, ChannelMode, MacAddr, Policy, PortId, Registry, RegistrySnapshot, VmId,
};
use vswitch_vhost::{NetPort, PortConfig, PortHandle, TxBatch, TxSink};

use crate::counters::{Counters, DropReason};
use crate::error::SwitchError;
use crate::event::Doorbells;
use crate::fdb::{Fdb, MAX_PORTS};
use crate::forward::{forward_batch, Scratch};
use crate::spec::{socket_key, PortSpec, SwitchSettings};
use crate::stats::{ChannelStats, FdbEntryInfo, PortInfo, PortStatsOut, SwitchStats};

/// Channel ids index tables of this size (S-VIDs are 12 bits).
const CHANNEL_SLOTS: usize = 4096;

/// A port as the datapath sees it.
pub struct PortEntry {
    /// Port name.
    pub name: String,
    /// The vhost-user port.
    pub handle: PortHandle,
    /// Configured MAC (source-locked port) if any.
    pub mac: Option<MacAddr>,
    /// MAC learning limit.
    pub mac_limit: u32,
    /// Switch-level counters of this port.
    pub counters: Arc<Counters>,
    /// The spec it was created from.
    pub spec: PortSpec,
    /// The registry generation at which this port was associated when it was added: which
    /// port, of all that ever had its id, this entry is. See [`PortEntry::described_by`].
    pub registered_at: u64,
}

impl PortEntry {
    /// True when `reg` describes this port (not an earlier port that had its id), provided
    /// `reg` was loaded *before* the port table this entry was read from.
    ///
    /// Why that holds: a port id is given to a new port only once the old port's entry has
    /// left the published port table (add_port picks an id free in the current table), and
    /// the new port is associated after that. So a registry snapshot that already knows the
    /// new port was loaded after the old entry left the table, and a port table loaded after
    /// that snapshot cannot hold the old entry. A snapshot older than this port's registration
    /// may name the previous holder of the id (its channel): that is what the generation test
    /// excludes. The datapath loads the registry first, then the port table, and uses an entry
    /// only when this is true; a frame is then never checked against one port's channel and
    /// written into another's ring.
    #[inline]
    pub fn described_by(&self, reg: &RegistrySnapshot) -> bool {
        reg.generation() >= self.registered_at
    }
}

/// Ports indexed by [`PortId`].
#[derive(Default, Clone)]
pub struct PortTable {
    slots: Vec<Option<Arc<PortEntry>>>,
}

impl PortTable {
    /// The port with this id.
    #[inline]
    pub fn get(&self, id: PortId) -> Option<&PortEntry> {
        self.slots.get(id.index()).and_then(|s| s.as_deref())
    }

    /// Ports with their ids.
    pub fn iter(&self) -> impl Iterator<Item = (PortId, &Arc<PortEntry>)> {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.as_ref().map(|e| (PortId::new(i as u32), e)))
    }

    fn find(&self, name: &str) -> Option<PortId> {
        self.iter().find(|(_, e)| e.name == name).map(|(id, _)| id)
    }
}

/// The policy plus, per channel, the other channels it may reach (precomputed so that the
/// datapath never walks the pair list).
pub struct PolicyTable {
    policy: Policy,
    reach: Vec<Vec<ChannelId>>,
}

impl PolicyTable {
    /// Builds the table for a policy.
    pub fn new(policy: Policy) -> Self {
        let mut reach = vec![Vec::new(); CHANNEL_SLOTS];
        for (from, to) in policy.allowed_pairs() {
            if from != to {
                reach[usize::from(from.get())].push(to);
            }
        }
        PolicyTable { policy, reach }
    }

    /// The policy.
    #[inline]
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// Channels other than `c` that frames of `c` may be delivered to.
    #[inline]
    pub fn reach(&self, c: ChannelId) -> &[ChannelId] {
        self.reach
            .get(usize::from(c.get()))
            .map_or(&[][..], |v| v.as_slice())
    }
}

/// State shared by the control plane and every port's datapath.
pub struct Core {
    /// VM → channel.
    pub registry: Registry,
    /// Delivery policy.
    pub policy: ArcSwap<PolicyTable>,
    /// Forwarding database.
    pub fdb: Fdb,
    /// Ports.
    pub ports: ArcSwap<PortTable>,
    channels: Box<[Counters]>,
    settings: SwitchSettings,
    /// Event mode: the datapath threads' wake-ups (empty in busy-poll mode).
    pub(crate) doorbells: Doorbells,
}

impl Core {
    /// Counters of one channel.
    #[inline]
    pub fn channel_counters(&self, c: ChannelId) -> &Counters {
        &self.channels[usize::from(c.get())]
    }

    /// A core with no ports (benchmarks and tests drive it directly).
    pub fn new(settings: SwitchSettings, policy: Policy) -> Self {
        let channels: Vec<Counters> = (0..CHANNEL_SLOTS).map(|_| Counters::default()).collect();
        let doorbells = if settings.poll_cores.is_empty() {
            Doorbells::new(settings.event_threads.max(1)).unwrap_or_else(|e| {
                warn!("no datapath threads ({e}): each port's own thread drains its ring");
                Doorbells::default()
            })
        } else {
            Doorbells::default()
        };
        Core {
            doorbells,
            registry: Registry::new(),
            policy: ArcSwap::from_pointee(PolicyTable::new(policy)),
            fdb: Fdb::new(
                settings.fdb_capacity,
                settings.aging.as_secs().clamp(1, u64::from(u32::MAX)) as u32,
            ),
            ports: ArcSwap::from_pointee(PortTable::default()),
            channels: channels.into_boxed_slice(),
            settings,
        }
    }
}

/// The TX sink of one port: switches its guest's batches.
pub struct PortSink {
    core: Arc<Core>,
    port: PortId,
    /// [`PortEntry::registered_at`] of this sink's port: after the port is removed, its id
    /// may name another port while this sink still drains a last batch.
    registered_at: u64,
    // Only the datapath thread serving this port takes it, once per batch: never contended.
    scratch: Mutex<Scratch>,
}

impl PortSink {
    /// A sink for port `port`, registered at registry generation `registered_at`.
    pub fn new(core: Arc<Core>, port: PortId, registered_at: u64) -> Self {
        PortSink {
            core,
            port,
            registered_at,
            scratch: Mutex::new(Scratch::default()),
        }
    }
}

impl TxSink for PortSink {
    fn on_tx_kick(&self) {
        self.core.doorbells.ring(self.port);
    }

    fn on_tx(&self, batch: &TxBatch<'_>) {
        let refused = batch.refused();
        if refused.bad_descriptor + refused.runt + refused.oversize > 0 {
            self.count_refused(refused);
        }
        if batch.is_empty() {
            return;
        }
        let mut scratch = match self.scratch.lock() {
            Ok(s) => s,
            Err(p) => p.into_inner(),
        };
        forward_batch(
            &self.core,
            self.port,
            self.registered_at,
            batch,
            &mut scratch,
        );
    }
}

impl PortSink {
    fn count_refused(&self, r: vswitch_vhost::TxBatchCounts) {
        // Registry first, then the port table (see PortEntry::described_by).
        let reg = self.core.registry.load();
        let ports = self.core.ports.load();
        let Some(e) = ports
            .get(self.port)
            .filter(|e| e.registered_at == self.registered_at)
        else {
            // The port was removed (its id may be another port's by now).
            return;
        };
        let bad = r.bad_descriptor + r.runt;
        e.counters.add_drop(DropReason::BadDescriptor, bad);
        e.counters.add_drop(DropReason::Oversize, r.oversize);
        if let Some(info) = reg.channel_of(self.port).filter(|_| e.described_by(&reg)) {
            let c = self.core.channel_counters(info.id);
            c.add_drop(DropReason::BadDescriptor, bad);
            c.add_drop(DropReason::Oversize, r.oversize);
        }
    }
}

/// The vhost-user ports the control plane runs, under the switch-wide lock.
#[derive(Default)]
struct Running {
    ports: HashMap<PortId, NetPort>,
    /// Canonical socket path (see [`socket_key`]) → port name, for every port from the moment
    /// it is added until its socket is gone (a removed port keeps its path while it stops).
    sockets: HashMap<PathBuf, String>,
}

/// The running switch.
pub struct Switch {
    core: Arc<Core>,
    // Control-plane writers serialize here; the datapath never takes it. Never held while a
    // port stops (a stop may wait on its frontend's connection).
    ports: Mutex<Running>,
    stop: Arc<AtomicBool>,
    aging_thread: Mutex<Option<JoinHandle<()>>>,
    pollers: Mutex<Vec<JoinHandle<()>>>,
}

impl Switch {
    /// A switch with no ports yet.
    pub fn new(settings: SwitchSettings, policy: Policy) -> Arc<Switch> {
        let core = Arc::new(Core::new(settings, policy));
        let stop = Arc::new(AtomicBool::new(false));
        let (c, s) = (core.clone(), stop.clone());
        let aging = thread::Builder::new()
            .name("fdb-aging".into())
            .spawn(move || {
                while !s.load(Ordering::Acquire) {
                    thread::sleep(Duration::from_millis(500));
                    c.fdb.expire();
                }
            })
            .map_err(|e| warn!("no FDB aging thread: {e}"))
            .ok();
        let pollers = if core.settings.poll_cores.is_empty() {
            crate::event::start_event_threads(&core, &stop)
        } else {
            crate::poll::start_pollers(&core, &core.settings.poll_cores, &stop)
        };
        Arc::new(Switch {
            core,
            ports: Mutex::new(Running::default()),
            stop,
            aging_thread: Mutex::new(aging),
            pollers: Mutex::new(pollers),
        })
    }

    /// The shared core (benchmarks, tests).
    pub fn core(&self) -> &Arc<Core> {
        &self.core
    }

    fn lock_ports(&self) -> std::sync::MutexGuard<'_, Running> {
        match self.ports.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// Adds a VM port: associates it with its channel, then starts serving its socket.
    pub fn add_port(&self, spec: PortSpec) -> Result<PortId, SwitchError> {
        self.add_port_on(spec, true)
    }

    /// Adds a VM port that is on no channel (its spec's channel is not used) until
    /// [`Switch::associate`]: restoring a disassociated port must not put it on a channel even
    /// for an instant.
    pub fn add_port_unassociated(&self, spec: PortSpec) -> Result<PortId, SwitchError> {
        self.add_port_on(spec, false)
    }

    fn add_port_on(&self, spec: PortSpec, associate: bool) -> Result<PortId, SwitchError> {
        if spec.channel_mode == ChannelMode::Vepa {
            return Err(SwitchError::VepaUnsupported(spec.name));
        }
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
        // Only an id free in the published table (PortEntry::described_by relies on it).
        let id = (0..MAX_PORTS as u32)
            .map(PortId::new)
            .find(|id| table.get(*id).is_none())
            .ok_or(SwitchError::TooManyPorts(MAX_PORTS))?;
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
        cfg.mem_limits = self.core.settings.mem_limits;
        cfg.socket_mode = spec.socket_mode.unwrap_or(self.core.settings.socket_mode);
        // Datapath threads (busy-poll or event mode) drain TX; without any (no eventfd
        // could be made), each port's own thread does.
        cfg.external_tx =
            !self.core.settings.poll_cores.is_empty() || self.core.doorbells.is_some();
        let sink = Arc::new(PortSink::new(self.core.clone(), id, registered_at));
        let port = match NetPort::start(cfg, sink) {
            Ok(p) => p,
            Err(e) => {
                let _ = self.core.registry.disassociate(id);
                return Err(SwitchError::Port(spec.name, e));
            }
        };
        let entry = Arc::new(PortEntry {
            name: spec.name.clone(),
            handle: port.handle(),
            mac: spec.mac,
            mac_limit: spec.mac_limit.unwrap_or(self.core.settings.mac_limit),
            counters: Arc::new(Counters::default()),
            spec: spec.clone(),
            registered_at,
        });
        let mut next = (*table).clone();
        if next.slots.len() <= id.index() {
            next.slots.resize(id.index() + 1, None);
        }
        next.slots[id.index()] = Some(entry);
        self.core.ports.store(Arc::new(next));
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
        let key = table.get(id).map(|e| socket_key(&e.spec.socket));
        let _ = self.core.registry.disassociate(id);
        let mut next = (*table).clone();
        next.slots[id.index()] = None;
        self.core.ports.store(Arc::new(next));
        self.core.fdb.flush_port(id);
        let port = running.ports.remove(&id);
        drop(running);
        if let Some(p) = port {
            p.stop();
        }
        if let Some(key) = key {
            self.lock_ports().sockets.remove(&key);
        }
        info!("port {name} removed");
        Ok(())
    }

    fn port_id(&self, name: &str) -> Result<PortId, SwitchError> {
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
        table.get(id).map(|e| e.handle.clone())
    }

    /// Moves a VM to a channel at run time. Effective for every batch that starts after this
    /// returns; what the VM learned in its old channel is forgotten.
    pub fn associate(&self, name: &str, channel: ChannelId) -> Result<(), SwitchError> {
        let _guard = self.lock_ports();
        let id = self.port_id(name)?;
        let mac = self.core.ports.load().get(id).and_then(|e| e.mac);
        self.core
            .registry
            .associate(VmId::new(id, mac), ChannelInfo::veb(channel))
            .map_err(SwitchError::Registry)?;
        self.core.fdb.flush_port(id);
        info!("port {name} associated with channel {channel}");
        Ok(())
    }

    /// Takes a VM off its channel: it neither sends nor receives until associated again.
    pub fn disassociate(&self, name: &str) -> Result<(), SwitchError> {
        let _guard = self.lock_ports();
        let id = self.port_id(name)?;
        self.core
            .registry
            .disassociate(id)
            .map_err(SwitchError::Registry)?;
        self.core.fdb.flush_port(id);
        info!("port {name} disassociated");
        Ok(())
    }

    /// Replaces the delivery policy.
    pub fn set_policy(&self, policy: Policy) {
        self.core.policy.store(Arc::new(PolicyTable::new(policy)));
    }

    /// The current policy.
    pub fn policy(&self) -> Policy {
        self.core.policy.load().policy().clone()
    }

    /// Ports and their channels.
    pub fn ports(&self) -> Vec<PortInfo> {
        let reg = self.core.registry.load();
        let table = self.core.ports.load();
        table
            .iter()
            .map(|(id, e)| PortInfo {
                id: id.get(),
                name: e.name.clone(),
                socket: e.spec.socket.display().to_string(),
                role: format!("{:?}", e.spec.role).to_lowercase(),
                channel: reg.channel_of(id).map(|c| c.id.get()),
                mac: e.mac.map(|m| m.to_string()),
                mac_limit: e.mac_limit,
                connected: e.handle.is_connected(),
                tx_broken: e.handle.is_tx_broken(),
            })
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
            })
            .collect()
    }

    /// Counters per port and per channel.
    pub fn stats(&self) -> SwitchStats {
        let reg = self.core.registry.load();
        let table = self.core.ports.load();
        let ports = table
            .iter()
            .map(|(id, e)| PortStatsOut {
                name: e.name.clone(),
                channel: reg.channel_of(id).map(|c| c.id.get()),
                switch: e.counters.snapshot(),
                port: e.handle.stats(),
            })
            .collect();
        let mut channels = Vec::new();
        for (i, c) in self.core.channels.iter().enumerate() {
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
        SwitchStats { ports, channels }
    }

    /// Counters in the Prometheus text format.
    pub fn prometheus(&self) -> String {
        self.stats().prometheus()
    }

    /// Stops every port (sockets of listen ports are removed) and the background threads.
    pub fn shutdown(&self) {
        self.stop.store(true, Ordering::Release);
        let ports: Vec<NetPort> = self.lock_ports().ports.drain().map(|(_, p)| p).collect();
        // Ask every port first, then wait: the waits overlap.
        for p in &ports {
            p.request_stop();
        }
        for p in ports {
            p.stop();
        }
        self.core.ports.store(Arc::new(PortTable::default()));
        let t = match self.aging_thread.lock() {
            Ok(mut g) => g.take(),
            Err(p) => p.into_inner().take(),
        };
        if let Some(t) = t {
            let _ = t.join();
        }
        let pollers = match self.pollers.lock() {
            Ok(mut g) => std::mem::take(&mut *g),
            Err(p) => std::mem::take(&mut *p.into_inner()),
        };
        for t in pollers {
            let _ = t.join();
        }
    }
}

impl Drop for Switch {
    fn drop(&mut self) {
        self.shutdown();
    }
}
