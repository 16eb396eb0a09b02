//! Fixtures for the port tests: two real ports wired back to back, and test guests attached
//! to them over real sockets.

#![allow(dead_code)]

use std::path::PathBuf;

pub use vswitch_testguest::wait_for;
use vswitch_testguest::{EthFrame, GuestConfig, TestGuest};
use vswitch_vhost::crossover::Crossover;
use vswitch_vhost::{NetPort, PortConfig, SocketRole};

/// Ports `a` and `b`, each forwarding to the other (no switching).
pub struct Pair {
    /// Declared first: stops draining before the ports stop.
    pub crossover: Crossover,
    pub dir: tempfile::TempDir,
    pub a: NetPort,
    pub b: NetPort,
}

impl Pair {
    pub fn new(role: SocketRole) -> Pair {
        Self::with(role, |_| {})
    }

    pub fn with(role: SocketRole, tweak: impl Fn(&mut PortConfig)) -> Pair {
        let _ = env_logger::builder().is_test(true).try_init();
        let dir = tempfile::tempdir().expect("tempdir");
        let doorbell = Crossover::doorbell().expect("doorbell");
        let mk = |name: &str| {
            let mut cfg = PortConfig::new(name, dir.path().join(format!("{name}.sock")), role);
            cfg.tx_doorbell = Some(doorbell.clone());
            tweak(&mut cfg);
            cfg
        };
        let a = NetPort::start(mk("a")).expect("port a");
        let b = NetPort::start(mk("b")).expect("port b");
        let crossover = Crossover::start(
            vec![(a.handle(), b.handle()), (b.handle(), a.handle())],
            doorbell,
        )
        .expect("crossover thread");
        Pair {
            crossover,
            dir,
            a,
            b,
        }
    }

    pub fn sock(&self, name: &str) -> PathBuf {
        self.dir.path().join(format!("{name}.sock"))
    }

    /// A guest attached to port `name` in the role matching the port's.
    pub fn guest(&self, name: &str, cfg: GuestConfig) -> TestGuest {
        let port = if name == "a" { &self.a } else { &self.b };
        let g = match port.handle().config().role {
            SocketRole::Listen => TestGuest::connect(&self.sock(name), cfg),
            SocketRole::Connect => TestGuest::listen(&self.sock(name), cfg),
        }
        .expect("guest attaches");
        wait_for(|| port.handle().rx().is_attached(), "rx ring published");
        g
    }
}

pub const MAC_A: [u8; 6] = [0x52, 0x54, 0, 0, 0, 0xa];
pub const MAC_B: [u8; 6] = [0x52, 0x54, 0, 0, 0, 0xb];

/// A frame of `len` bytes from A to B whose payload encodes `seq`.
pub fn frame(len: usize, seq: u32) -> Vec<u8> {
    let mut payload = vec![0u8; len.saturating_sub(14)];
    for (i, b) in payload.iter_mut().enumerate() {
        *b = (seq as usize + i) as u8;
    }
    payload[..4].copy_from_slice(&seq.to_be_bytes());
    EthFrame::new(MAC_B, MAC_A, 0x88b5, &payload)
        .unpadded()
        .build()
}
