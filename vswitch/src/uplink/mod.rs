//! Uplink transports: how an uplink's frames get on and off the wire with their channel. Each
//! transport implements [`crate::port::Uplink`]; [`open`] starts the one a configuration names.
//!
//! - `dot1ad`: Ethernet frames with an 802.1ad S-tag (TPID 0x88a8, S-VID = channel) on a Linux
//!   interface, over AF_XDP or AF_PACKET;
//! - `vxlan`: VXLAN (RFC 7348) over UDP, VNI = channel, static remote VTEPs.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use crate::port::{Uplink, UplinkSpec};

mod afpacket;
pub mod dot1ad;
mod netdev;
pub mod vxlan;
pub mod vxlan_wire;
mod xdp_prog;
mod xsk;

/// Default VXLAN UDP port (IANA).
pub const VXLAN_PORT: u16 = 4789;

/// Which transport an uplink runs over, and its settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transport {
    /// 802.1ad trunk on a Linux network interface.
    Dot1ad {
        /// Interface name (in the switch's network namespace).
        interface: String,
        /// Whether to run over AF_XDP.
        xdp: AfXdp,
    },
    /// VXLAN over UDP.
    Vxlan {
        /// Local address (and UDP port) to bind.
        local: SocketAddr,
        /// Remote VTEPs (their UDP port is `local`'s).
        remotes: Vec<IpAddr>,
    },
}

/// Whether a dot1ad uplink runs over AF_XDP (kernel bypass) or AF_PACKET (`xdp=` on its spec).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum AfXdp {
    /// AF_XDP where it can run, else AF_PACKET (the log line says why).
    #[default]
    Auto,
    /// AF_XDP or nothing: the uplink does not open when AF_XDP cannot run.
    On,
    /// AF_PACKET.
    Off,
}

impl AfXdp {
    /// The values `xdp=` takes.
    pub const VALUES: &'static str = "auto, on or off";

    /// Parses `auto`, `on` or `off` (any case).
    pub fn parse(text: &str) -> Option<AfXdp> {
        [AfXdp::Auto, AfXdp::On, AfXdp::Off]
            .into_iter()
            .find(|v| text.eq_ignore_ascii_case(v.name()))
    }

    /// As written in a spec.
    pub fn name(self) -> &'static str {
        match self {
            AfXdp::Auto => "auto",
            AfXdp::On => "on",
            AfXdp::Off => "off",
        }
    }
}

impl fmt::Display for AfXdp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An uplink as configured: what the switch is told ([`UplinkSpec`]) and its transport.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UplinkConfig {
    /// Name, channels, MAC limit, reflective relay.
    pub spec: UplinkSpec,
    /// The transport.
    pub transport: Transport,
    /// Largest frame (without encapsulation) a guest may send through it: frames longer than
    /// the underlay takes with the encapsulation are dropped (`oversize`).
    pub mtu: u16,
}

/// Why an uplink could not start.
#[derive(Debug, thiserror::Error)]
pub enum UplinkError {
    /// The transport is not built yet.
    #[error("uplink {name}: transport {kind} is not available in this build")]
    Unavailable {
        /// Uplink name.
        name: String,
        /// Transport kind.
        kind: &'static str,
    },
    /// `xdp=on` and AF_XDP cannot run on the interface.
    #[error(
        "uplink {name}: AF_XDP cannot run on {interface}: {reason}; use xdp=auto to fall back \
         to AF_PACKET, or xdp=off"
    )]
    AfXdp {
        /// Uplink name.
        name: String,
        /// The interface.
        interface: String,
        /// What failed.
        reason: String,
    },
    /// A system call failed while opening the transport.
    #[error("uplink {name}: {what}: {source}")]
    Io {
        /// Uplink name.
        name: String,
        /// What was being done.
        what: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

/// Opens the transport of `cfg`.
pub fn open(cfg: &UplinkConfig) -> Result<Arc<dyn Uplink>, UplinkError> {
    match &cfg.transport {
        Transport::Dot1ad { interface, xdp } => Ok(Arc::new(dot1ad::Dot1adUplink::open(
            &cfg.spec.name,
            interface,
            *xdp,
        )?)),
        Transport::Vxlan { local, remotes } => Ok(vxlan::Vxlan::open(
            &cfg.spec.name,
            *local,
            remotes,
            cfg.mtu,
        )?),
    }
}
