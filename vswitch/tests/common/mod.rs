//! A switch with VM ports in a temp dir, and in-process test guests attached over real
//! vhost-user sockets.

#![allow(dead_code)]

pub mod vxlan_net;
pub mod wire;

use std::sync::Arc;
use std::time::Duration;

use vswitch::{PortSpec, Switch, SwitchSettings};
use vswitch_channels::{ChannelId, MacAddr, Policy};
pub use vswitch_testguest::wait_for;
use vswitch_testguest::{EthFrame, GuestConfig, TestGuest};

pub fn ch(n: u16) -> ChannelId {
    ChannelId::new(n).expect("test channel")
}

pub fn mac(last: u8) -> [u8; 6] {
    [0x52, 0x54, 0x00, 0x00, 0x00, last]
}

/// One VM port: name, channel, locked MAC (if any), MAC limit (if any).
pub struct Vm {
    pub name: &'static str,
    pub channel: u16,
    pub mac: Option<[u8; 6]>,
    pub mac_limit: Option<u32>,
}

pub fn vm(name: &'static str, channel: u16, mac: Option<[u8; 6]>) -> Vm {
    Vm {
        name,
        channel,
        mac,
        mac_limit: None,
    }
}

pub struct Net {
    pub dir: tempfile::TempDir,
    pub sw: Arc<Switch>,
}

impl Net {
    pub fn new(vms: &[Vm]) -> Net {
        Self::with_policy(vms, Policy::default())
    }

    pub fn with_policy(vms: &[Vm], policy: Policy) -> Net {
        let _ = env_logger::builder().is_test(true).try_init();
        let dir = tempfile::tempdir().expect("tempdir");
        let sw = Switch::new(SwitchSettings::default(), policy);
        for v in vms {
            let mut spec = PortSpec::new(
                v.name,
                dir.path().join(format!("{}.sock", v.name)),
                ch(v.channel),
            );
            spec.mac = v.mac.map(MacAddr::new);
            spec.mac_limit = v.mac_limit;
            sw.add_port(spec).expect("add port");
        }
        Net { dir, sw }
    }

    /// Attaches a guest to port `name` with RX buffers posted.
    pub fn guest(&self, name: &str, mac: [u8; 6]) -> TestGuest {
        let cfg = GuestConfig {
            mac,
            ..GuestConfig::default()
        };
        let mut g = TestGuest::connect(&self.dir.path().join(format!("{name}.sock")), cfg)
            .expect("guest connects");
        let h = self.sw.port_handle(name).expect("port exists");
        wait_for(|| h.rx().is_attached(), "rx ring published");
        g.post_rx(256).expect("post rx");
        g
    }
}

/// A plain frame from `src` to `dst` with a marker payload.
pub fn eth(dst: [u8; 6], src: [u8; 6], marker: u32) -> Vec<u8> {
    let mut payload = vec![0u8; 46];
    payload[..4].copy_from_slice(&marker.to_be_bytes());
    EthFrame::new(dst, src, 0x88b5, &payload).build()
}

/// Everything a guest received until the line has been quiet for a while.
pub fn drain(g: &mut TestGuest) -> Vec<Vec<u8>> {
    g.recv_all(Duration::from_millis(150))
}

pub const BCAST: [u8; 6] = [0xff; 6];
pub const MCAST: [u8; 6] = [0x01, 0x00, 0x5e, 0x00, 0x00, 0x01];
