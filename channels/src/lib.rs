//! Logical channels for the vswitch: IEEE 802.1Qbg S-channels identified by 802.1ad S-VIDs.
//!
//! Every VM attached to the switch belongs to one channel. This crate holds the pieces that
//! define and enforce that, with no I/O and no threads:
//!
//! * [`ChannelId`], [`ChannelMode`], [`ChannelInfo`]: what a channel is.
//! * [`MacAddr`], [`PortId`], [`VmId`]: how a VM is named.
//! * [`Registry`] / [`RegistrySnapshot`]: VM → channel, updated by the control plane and read
//!   without locks by the datapath (read-copy-update over `arc-swap`).
//! * [`ChannelSet`]: the channels a trunk (an uplink) carries.
//! * [`Policy`]: which frame channel may be delivered to which destination channel (equal
//!   channels by default, directed exceptions by configuration).
//! * [`tag`]: the in-place 802.1ad / 802.1Q tag codec that carries the stamp on the wire.
//! * [`ChannelError`], [`MacError`], [`RegistryError`], [`TagError`]: what can go wrong.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod error;
mod id;
mod mac;
mod mode;
mod policy;
mod port;
mod registry;
mod set;
mod snapshot;
pub mod tag;

pub use error::{ChannelError, MacError, RegistryError, TagError};
pub use id::ChannelId;
pub use mac::MacAddr;
pub use mode::{ChannelInfo, ChannelMode};
pub use policy::Policy;
pub use port::{PortId, VmId};
pub use registry::Registry;
pub use set::ChannelSet;
pub use snapshot::{Association, RegistrySnapshot};
pub use tag::{Tag, TPID_8021AD, TPID_8021Q};
