//! The running switch: the control plane's side. The tables it edits are in [`crate::core`];
//! the datapath threads that read them start with it.
//!
//! - `mod.rs`: starting and stopping the switch;
//! - `ports.rs`: adding and removing ports (VMs and uplinks);
//! - `channels.rs`: moving VMs between channels, the policy;
//! - `views.rs`: what the control API shows (ports, FDB, counters);
//! - `capture.rs`: captures of ports into pcap files.

mod announce;
mod capture;
mod channels;
mod migration;
mod ports;
mod views;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use log::warn;
use vswitch_channels::{Policy, PortId};
use vswitch_vhost::NetPort;

use crate::core::Core;
use crate::port::PortTable;
use crate::spec::SwitchSettings;

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
    /// Running captures by port name (their own lock: a capture's stop waits for its writer).
    captures: Mutex<HashMap<String, crate::capture::Capture>>,
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
            captures: Mutex::new(HashMap::new()),
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

    /// Stops every port (sockets of listen ports are removed) and the background threads.
    pub fn shutdown(&self) {
        self.stop.store(true, Ordering::Release);
        // Captures end with their files complete.
        let captures: Vec<_> = self.lock_captures().drain().collect();
        for (name, c) in captures {
            if let Err(e) = c.stop(&name) {
                warn!("capture of {name}: {e}");
            }
        }
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
