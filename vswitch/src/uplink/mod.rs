//! Uplink transports: how an uplink's frames get on and off the wire with their channel. Each
//! transport implements [`crate::port::Uplink`]; [`open`] starts the one a configuration names.
//!
//! - `dot1ad`: Ethernet frames with an 802.1ad S-tag (TPID 0x88a8, S-VID = channel) on a Linux
//!   interface;
//! - `vxlan`: VXLAN (RFC 7348) over UDP, VNI = channel, static remote VTEPs.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use crate::port::{Uplink, UplinkSpec};

mod afpacket;
pub mod dot1ad;
pub mod vxlan;
pub mod vxlan_wire;

/// Default VXLAN UDP port (IANA).
pub const VXLAN_PORT: u16 = 4789;

/// Which transport an uplink runs over, and its settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transport {
    /// 802.1ad trunk on a Linux network interface.
    Dot1ad {
        /// Interface name (in the switch's network namespace).
        interface: String,
    },
    /// VXLAN over UDP.
    Vxlan {
        /// Local address (and UDP port) to bind.
        local: SocketAddr,
        /// Remote VTEPs (their UDP port is `local`'s).
        remotes: Vec<IpAddr>,
    },
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
        Transport::Dot1ad { interface } => Ok(Arc::new(dot1ad::Dot1adUplink::open(
            &cfg.spec.name,
            interface,
        )?)),
        Transport::Vxlan { local, remotes } => Ok(vxlan::Vxlan::open(
            &cfg.spec.name,
            *local,
            remotes,
            cfg.mtu,
        )?),
    }
}
