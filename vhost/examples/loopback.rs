//! A two-port vhost-user forwarder: whatever the guest on port A sends arrives at port B and
//! the other way round. No switching, no channels: it exercises the port crate with any
//! frontend (QEMU, Cloud Hypervisor, DPDK virtio-user).
//!
//! ```text
//! cargo run --release -p vswitch-vhost --example loopback -- A.sock[:listen|:connect] B.sock[:listen|:connect]
//! ```
//! With a single socket the port echoes frames back to its own guest.

use std::sync::{Arc, OnceLock};

use vswitch_vhost::{NetPort, PortConfig, PortHandle, SocketRole, TxBatch, TxSink};

/// Delivers every frame into one peer port.
struct Forward {
    peer: OnceLock<PortHandle>,
}

impl TxSink for Forward {
    fn on_tx(&self, batch: &TxBatch<'_>) {
        let Some(peer) = self.peer.get() else { return };
        let Some(ring) = peer.rx().ring() else { return };
        let done = ring.with_writer(|w| {
            for f in batch.iter() {
                let _ = w.deliver(f);
            }
        });
        if done.is_none() {
            ring.count_not_running(batch.len() as u64);
        }
    }
}

fn parse(arg: &str) -> (String, SocketRole) {
    match arg.rsplit_once(':') {
        Some((p, "connect")) => (p.to_string(), SocketRole::Connect),
        Some((p, "listen")) => (p.to_string(), SocketRole::Listen),
        _ => (arg.to_string(), SocketRole::Listen),
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.is_empty() || args.len() > 2 {
        return Err("usage: loopback SOCK_A[:listen|:connect] [SOCK_B[:listen|:connect]]".into());
    }
    let mut ports = Vec::new();
    let mut sinks = Vec::new();
    for (i, a) in args.iter().enumerate() {
        let (path, role) = parse(a);
        let sink = Arc::new(Forward {
            peer: OnceLock::new(),
        });
        let cfg = PortConfig::new(format!("p{i}"), path, role);
        ports.push(NetPort::start(cfg, sink.clone())?);
        sinks.push(sink);
    }
    let n = ports.len();
    for (i, s) in sinks.iter().enumerate() {
        let _ = s.peer.set(ports[(i + 1) % n].handle());
    }
    // Serve until killed; a listening socket left behind is replaced at the next start.
    loop {
        std::thread::sleep(std::time::Duration::from_secs(10));
        for p in &ports {
            let h = p.handle();
            log::debug!("{}: {:?}", h.name(), h.stats());
        }
    }
}
