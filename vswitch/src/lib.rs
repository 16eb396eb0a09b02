//! The switch core: ports attached over vhost-user, each VM on a logical channel.
//!
//! A frame leaving a VM is stamped with that VM's channel (from the registry, never from the
//! frame), learned and forwarded within the channel, and checked once more at the destination
//! against the destination's own registry entry before it is written into the destination's
//! RX ring. See DESIGN.md §2 for the invariant.

#![deny(missing_docs)]

pub mod config;
pub mod core;
pub mod counters;
pub mod ctl;
pub mod datapath;
mod error;
pub mod event;
pub mod fdb;
pub mod forward;
pub mod poll;
pub mod port;
pub mod spec;
pub mod state;
pub mod stats;
pub mod switch;

pub use error::SwitchError;
pub use spec::{PortSpec, SwitchSettings};
pub use stats::SwitchStats;
pub use switch::Switch;
