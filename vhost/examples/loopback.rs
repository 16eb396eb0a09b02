//! A two-port vhost-user forwarder: whatever the guest on port A sends arrives at port B and
//! the other way round. No switching, no channels: it exercises the port crate with any
//! frontend (QEMU, Cloud Hypervisor, DPDK virtio-user).
//!
//! ```text
//! cargo run --release -p vswitch-vhost --example loopback -- A.sock[:listen|:connect] B.sock[:listen|:connect]
//! ```
//! With a single socket the port echoes frames back to its own guest.

use vswitch_vhost::crossover::Crossover;
use vswitch_vhost::{NetPort, PortConfig, SocketRole};

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
    // One thread drains both guests' TX rings, woken by their kicks through the doorbell.
    let doorbell = Crossover::doorbell()?;
    let mut ports = Vec::new();
    for (i, a) in args.iter().enumerate() {
        let (path, role) = parse(a);
        let mut cfg = PortConfig::new(format!("p{i}"), path, role);
        cfg.tx_doorbell = Some(doorbell.clone());
        ports.push(NetPort::start(cfg)?);
    }
    let n = ports.len();
    let links = (0..n)
        .map(|i| (ports[i].handle(), ports[(i + 1) % n].handle()))
        .collect();
    let _crossover = Crossover::start(links, doorbell)?;
    // Serve until killed; a listening socket left behind is replaced at the next start.
    loop {
        std::thread::sleep(std::time::Duration::from_secs(10));
        for p in &ports {
            let h = p.handle();
            log::debug!("{}: {:?}", h.name(), h.stats());
        }
    }
}
