//! Announcing a guest that has just moved here (live migration): when the destination QEMU
//! sends SEND_RARP, the port's hook switches a RARP from the guest's MAC as if the guest had
//! sent it, so this switch's FDB (and, through the uplinks, the remote switches') point at
//! the guest's new port at once, on its channel. When the MAC is the port's configured one,
//! the MAC's static FDB entry is pointed at the port first: that is how a migration target
//! (`migration.rs`) takes the MAC over from its source.

use std::sync::{Arc, Weak};

use log::{debug, warn};
use vswitch_channels::{MacAddr, PortId};
use vswitch_vhost::{Announce, HostFrames, NetHdr};

use crate::core::Core;
use crate::forward::{forward_vm_batch, Scratch};

/// Ethertype of RARP.
const ETHERTYPE_RARP: u16 = 0x8035;

/// The RARP QEMU itself broadcasts when it announces a guest (`qemu_announce_self`): a reverse
/// request (opcode 3) from `mac` for `mac`, broadcast, padded to the minimum frame size.
pub(crate) fn rarp(mac: [u8; 6]) -> [u8; 60] {
    let mut f = [0u8; 60];
    f[0..6].copy_from_slice(&[0xff; 6]);
    f[6..12].copy_from_slice(&mac);
    f[12..14].copy_from_slice(&ETHERTYPE_RARP.to_be_bytes());
    f[14..16].copy_from_slice(&1u16.to_be_bytes()); // hardware: Ethernet
    f[16..18].copy_from_slice(&0x0800u16.to_be_bytes()); // protocol: IPv4
    f[18] = 6;
    f[19] = 4;
    f[20..22].copy_from_slice(&3u16.to_be_bytes()); // reverse request
    f[22..28].copy_from_slice(&mac); // sender hardware address
    f[32..38].copy_from_slice(&mac); // target hardware address
    f
}

/// The hook for VM port `id` (the port whose entry has `serial`): switches a RARP from the
/// MAC the frontend names on the port's channel, through the same checks as the guest's own
/// frames (a MAC that is not the port's own is a spoof there, counted, when the port has one).
/// Runs on the port's relay thread; a port removed meanwhile announces nothing.
pub(crate) fn hook(core: Weak<Core>, id: PortId, serial: u64) -> Announce {
    Announce(Arc::new(move |mac| {
        let Some(core) = core.upgrade() else { return };
        let (registered_at, own) = {
            let table = core.ports.load();
            match table.get(id) {
                Some(e) if e.serial == serial => {
                    (e.registered_at, e.mac == Some(MacAddr::new(mac)))
                }
                _ => {
                    debug!("port {}: announcement after removal ignored", id.get());
                    return;
                }
            }
        };
        // The port's own MAC: its static entry is (now) this port's. For a migration target
        // this is the move (see `migration.rs`); for any other port it is already so.
        if own {
            if let Some(c) = core.registry.load().channel_of(id) {
                if core.fdb.add_static(c.id, &mac, id) {
                    debug!("port {}: its MAC now points at it", id.get());
                }
            }
        }
        let frame = rarp(mac);
        let mut host = HostFrames::with_capacity(1);
        if let Err(e) = host.push(&frame, NetHdr::default()) {
            warn!("port {}: announcement not sent: {e}", id.get());
            return;
        }
        // A control-path event (once per migration): its own scratch.
        let mut scratch = Scratch::default();
        forward_vm_batch(&core, id, registered_at, &host.batch(), &mut scratch);
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rarp_is_a_broadcast_reverse_request_from_the_mac() {
        let mac = [0x52, 0x54, 0, 1, 2, 3];
        let f = rarp(mac);
        assert_eq!(&f[..6], &[0xff; 6]);
        assert_eq!(&f[6..12], &mac);
        assert_eq!(&f[12..14], &[0x80, 0x35]);
        assert_eq!(&f[20..22], &[0, 3]);
        assert_eq!((&f[22..28], &f[32..38]), (&mac[..], &mac[..]));
    }
}
