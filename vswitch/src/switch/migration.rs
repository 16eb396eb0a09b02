//! The port side of a live migration on one host: the incoming QEMU needs a second port with
//! the guest's MAC and channel while the source port still exists.
//!
//! `add-port` with `migration-of=SRC` ([`Switch::add_migration_target`]) accepts such a port
//! only when SRC is a VM port with the same configured MAC on the same channel. The MAC's static
//! FDB entry stays on the source (the source guest runs until the very end) and moves to the
//! target when the target announces the guest (SEND_RARP, see `announce.rs`): from then on
//! frames to the MAC go to the target, and the target's frames from it are no spoof. Any other
//! port whose configured MAC another VM port on the same channel already has is refused.

use vswitch_channels::{MacAddr, PortId, RegistrySnapshot};

use super::Switch;
use crate::error::SwitchError;
use crate::port::PortTable;
use crate::spec::PortSpec;

impl Switch {
    /// Adds `spec` as the port of the incoming side of a live migration of the guest on VM port
    /// `of` (same MAC, same channel; see the module doc).
    pub fn add_migration_target(&self, spec: PortSpec, of: &str) -> Result<PortId, SwitchError> {
        self.add_port_as(spec, Some(of))
    }
}

/// Checks `spec`'s MAC against the other VM ports in `table`: with `target_of`, the port it
/// names must be a VM port with the same MAC on the same channel; without, no VM port on the
/// channel may have the MAC already.
pub(super) fn check_mac(
    table: &PortTable,
    reg: &RegistrySnapshot,
    spec: &PortSpec,
    target_of: Option<&str>,
) -> Result<(), SwitchError> {
    let refuse = |why: String| SwitchError::MigrationTarget {
        port: spec.name.clone(),
        source_port: target_of.unwrap_or_default().to_owned(),
        why,
    };
    if let Some(src) = target_of {
        let id = table
            .find(src)
            .ok_or_else(|| SwitchError::NoSuchPort(src.to_owned()))?;
        let vm = table
            .get(id)
            .and_then(|e| e.vm())
            .ok_or_else(|| SwitchError::NotAVm(src.to_owned(), "migration-of"))?;
        if spec.mac.is_none() || vm.spec.mac != spec.mac {
            return Err(refuse(format!(
                "the target must have the source's configured MAC ({})",
                show(vm.spec.mac)
            )));
        }
        match reg.channel_of(id) {
            Some(c) if c.id == spec.channel => {}
            Some(c) => {
                return Err(refuse(format!(
                    "the target must be on the source's channel ({})",
                    c.id
                )))
            }
            None => return Err(refuse("the source is on no channel".to_owned())),
        }
        return Ok(());
    }
    let Some(mac) = spec.mac else { return Ok(()) };
    for (id, e) in table.iter() {
        if let Some(vm) = e.vm() {
            let same_channel = reg.channel_of(id).is_some_and(|c| c.id == spec.channel);
            if vm.spec.mac == Some(mac) && same_channel {
                return Err(SwitchError::DuplicateMac(mac, spec.channel, e.name.clone()));
            }
        }
    }
    Ok(())
}

fn show(mac: Option<MacAddr>) -> String {
    mac.map_or_else(|| "none".to_owned(), |m| m.to_string())
}
