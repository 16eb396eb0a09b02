//! Moving VMs between channels, and the policy.

use std::sync::Arc;

use log::info;
use vswitch_channels::{ChannelId, ChannelInfo, Policy, VmId};

use super::Switch;
use crate::core::PolicyTable;
use crate::error::SwitchError;

impl Switch {
    /// Moves a VM to a channel at run time. Effective for every batch that starts after this
    /// returns; what the VM learned in its old channel is forgotten.
    pub fn associate(&self, name: &str, channel: ChannelId) -> Result<(), SwitchError> {
        let _guard = self.lock_ports();
        let id = self.port_id(name)?;
        let (mac, mode) = {
            let ports = self.core.ports.load();
            let e = ports.get(id);
            let mode = e.and_then(|e| Some(e.vm()?.spec.channel_mode));
            (e.and_then(|e| e.mac), mode.unwrap_or_default())
        };
        // The port keeps its mode (VEB or VEPA) on its new channel.
        self.core
            .registry
            .associate(VmId::new(id, mac), ChannelInfo::new(channel, mode))
            .map_err(SwitchError::Registry)?;
        self.core.fdb.flush_port(id);
        self.pin_mac(id, channel, mac);
        info!("port {name} associated with channel {channel}");
        Ok(())
    }

    /// Takes a VM off its channel: it neither sends nor receives until associated again.
    pub fn disassociate(&self, name: &str) -> Result<(), SwitchError> {
        let _guard = self.lock_ports();
        let id = self.port_id(name)?;
        self.core
            .registry
            .disassociate(id)
            .map_err(SwitchError::Registry)?;
        self.core.fdb.flush_port(id);
        info!("port {name} disassociated");
        Ok(())
    }

    /// Replaces the delivery policy.
    pub fn set_policy(&self, policy: Policy) {
        self.core.policy.store(Arc::new(PolicyTable::new(policy)));
    }

    /// The current policy.
    pub fn policy(&self) -> Policy {
        self.core.policy.load().policy().clone()
    }
}
