//! The virtio feature bits a guest negotiated: read from sysfs, parsed, named.

use super::guest::QemuGuest;
use anyhow::{bail, Context, Result};
use std::time::Duration;

/// What a guest's driver negotiates with any backend that offers it (the switch, testpmd):
/// `(bit, name)` for VERSION_1, MRG_RXBUF and RING_EVENT_IDX, to pass to
/// [`QemuGuest::require_features`].
pub const BASE_FEATURES: &[(u64, &str)] = &[
    (1 << 32, "VERSION_1"),
    (1 << 15, "MRG_RXBUF"),
    (1 << 29, "RING_EVENT_IDX"),
];

impl QemuGuest {
    /// [`QemuGuest::features`], printed with their names on stderr.
    pub fn logged_features(&mut self) -> Result<u64> {
        let f = self.features()?;
        eprintln!(
            "{} negotiated {f:#x}: {}",
            self.name,
            virtio_net_feature_names(f).join(" ")
        );
        Ok(f)
    }

    /// [`QemuGuest::logged_features`], or an error naming the first of `wanted` (`(bit, name)`)
    /// that was not negotiated.
    pub fn require_features(&mut self, wanted: &[(u64, &str)]) -> Result<u64> {
        let f = self.logged_features()?;
        if let Some((_, name)) = wanted.iter().find(|(bit, _)| f & bit == 0) {
            bail!("{}: {name} not negotiated (features {f:#x})", self.name);
        }
        Ok(f)
    }

    /// The virtio feature bits negotiated for eth0 (bit N = feature N).
    pub fn features(&mut self) -> Result<u64> {
        self.features_of("eth0")
    }

    /// The negotiated virtio feature bits of a virtio-net interface, read from
    /// `/sys/class/net/IFACE/device/features` (a string of '0'/'1', bit 0 first).
    pub fn features_of(&mut self, iface: &str) -> Result<u64> {
        let out = self.run_ok(
            &format!("cat /sys/class/net/{iface}/device/features"),
            Duration::from_secs(30),
        )?;
        parse_features(out.trim())
            .with_context(|| format!("{}: parsing features {:?}", self.name, out.trim()))
    }
}

/// Parses sysfs's virtio `features` string: '0'/'1' characters, bit 0 first.
pub fn parse_features(s: &str) -> Result<u64> {
    let mut v = 0u64;
    for (i, c) in s.chars().enumerate() {
        match c {
            '0' => {}
            '1' if i < 64 => v |= 1 << i,
            '1' => bail!("feature bit {i} set, beyond 64"),
            _ => bail!("unexpected character {c:?} in features"),
        }
    }
    if s.is_empty() {
        bail!("empty features string");
    }
    Ok(v)
}

/// Names of the virtio-net (and transport) feature bits set in `f`.
pub fn virtio_net_feature_names(f: u64) -> Vec<String> {
    const NAMES: &[(u32, &str)] = &[
        (0, "CSUM"),
        (1, "GUEST_CSUM"),
        (2, "CTRL_GUEST_OFFLOADS"),
        (3, "MTU"),
        (5, "MAC"),
        (6, "GSO"),
        (7, "GUEST_TSO4"),
        (8, "GUEST_TSO6"),
        (9, "GUEST_ECN"),
        (10, "GUEST_UFO"),
        (11, "HOST_TSO4"),
        (12, "HOST_TSO6"),
        (13, "HOST_ECN"),
        (14, "HOST_UFO"),
        (15, "MRG_RXBUF"),
        (16, "STATUS"),
        (17, "CTRL_VQ"),
        (18, "CTRL_RX"),
        (19, "CTRL_VLAN"),
        (20, "CTRL_RX_EXTRA"),
        (21, "GUEST_ANNOUNCE"),
        (22, "MQ"),
        (23, "CTRL_MAC_ADDR"),
        (24, "NOTIFY_ON_EMPTY"),
        (27, "ANY_LAYOUT"),
        (28, "RING_INDIRECT_DESC"),
        (29, "RING_EVENT_IDX"),
        (30, "PROTOCOL_FEATURES"),
        (32, "VERSION_1"),
        (33, "ACCESS_PLATFORM"),
        (34, "RING_PACKED"),
        (35, "IN_ORDER"),
        (36, "ORDER_PLATFORM"),
        (37, "SR_IOV"),
        (38, "NOTIFICATION_DATA"),
        (61, "RSC_EXT"),
        (62, "STANDBY"),
        (63, "SPEED_DUPLEX"),
    ];
    (0..64)
        .filter(|b| f & (1u64 << b) != 0)
        .map(|b| {
            NAMES
                .iter()
                .find(|(n, _)| *n == b)
                .map(|(_, s)| s.to_string())
                .unwrap_or_else(|| format!("bit{b}"))
        })
        .collect()
}
