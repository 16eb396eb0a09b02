//! [`PortId`] and [`VmId`]: how the switch names a VM.

use std::fmt;

use crate::mac::MacAddr;

/// A switch port index: dense, small numbers, used directly as an index into per-port vectors.
///
/// The registry accepts ids up to [`Registry::MAX_PORT`](crate::Registry::MAX_PORT).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct PortId(pub u32);

impl PortId {
    /// Wraps a port index.
    pub const fn new(index: u32) -> PortId {
        PortId(index)
    }

    /// The raw index.
    pub const fn get(self) -> u32 {
        self.0
    }

    /// The index as a `usize`, for indexing vectors.
    pub const fn index(self) -> usize {
        self.0 as usize
    }
}

impl From<u32> for PortId {
    fn from(index: u32) -> PortId {
        PortId(index)
    }
}

impl fmt::Display for PortId {
    /// The index in decimal.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

/// A VM's identity: the port it is attached to and, where configured, its MAC address.
///
/// The port is the key (one VM per vhost-user port); the MAC is recorded for listing and for
/// the switch's source checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct VmId {
    /// The port the VM is attached to.
    pub port: PortId,
    /// The VM's MAC address, if configured.
    pub mac: Option<MacAddr>,
}

impl VmId {
    /// A VM on `port` with an optional MAC.
    pub const fn new(port: PortId, mac: Option<MacAddr>) -> VmId {
        VmId { port, mac }
    }

    /// A VM known by its port only.
    pub const fn port(port: PortId) -> VmId {
        VmId { port, mac: None }
    }
}

impl fmt::Display for VmId {
    /// `port 3` or `port 3 (52:54:00:12:34:56)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.mac {
            Some(mac) => write!(f, "port {} ({mac})", self.port),
            None => write!(f, "port {}", self.port),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_id_basics() {
        let p = PortId::new(7);
        assert_eq!(p.get(), 7);
        assert_eq!(p.index(), 7usize);
        assert_eq!(PortId::from(7), p);
        assert_eq!(p.to_string(), "7");
    }

    #[test]
    fn vm_id_display() {
        let mac = MacAddr([0x52, 0x54, 0, 0x12, 0x34, 0x56]);
        assert_eq!(VmId::port(PortId(3)).to_string(), "port 3");
        assert_eq!(
            VmId::new(PortId(3), Some(mac)).to_string(),
            "port 3 (52:54:00:12:34:56)"
        );
    }
}
