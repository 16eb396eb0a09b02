//! The switch: ports (VMs over vhost-user, uplinks), each VM on a logical channel.
//!
//! A frame leaving a VM is stamped with that VM's channel (from the registry, never from the
//! frame), learned and forwarded within the channel, and checked once more at the destination
//! against the destination's own registry entry (an uplink: its channel set) before it is
//! written into the destination. docs/architecture.md follows one frame through these
//! modules and states the invariant.
//!
//! Module map:
//! - the datapath: [`datapath`] (a thread's pass over its ports: the one driver), [`event`]
//!   and [`poll`] (what a thread does when idle), [`forward`] (plan, delivery check,
//!   delivery), [`fdb`], [`police`] (per-VM rate limits);
//! - the tables: [`core`] (what every datapath thread reads), [`port`] (VM ports, uplinks,
//!   the port table), [`counters`], [`uplink`] (uplink transports);
//! - the control plane: [`switch`] (adding ports, moving VMs, views), [`spec`] (what a port
//!   is asked to be), [`config`] (the TOML file and flags), [`ctl`] (the control API),
//!   [`state`] (what the API changed, kept across restarts), [`stats`], [`metrics_http`]
//!   (Prometheus over HTTP).

#![deny(missing_docs)]

pub mod capture;
pub mod config;
pub mod core;
pub mod counters;
pub mod ctl;
pub mod datapath;
mod error;
pub mod event;
pub mod fdb;
pub mod forward;
pub mod metrics_http;
pub mod police;
pub mod poll;
pub mod port;
pub mod spec;
pub mod state;
pub mod stats;
pub mod switch;
pub mod uplink;

pub use error::SwitchError;
pub use spec::{PortSpec, SwitchSettings};
pub use stats::SwitchStats;
pub use switch::Switch;
