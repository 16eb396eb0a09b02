//! A vhost-user virtio-net port.
//!
//! One [`NetPort`] is one virtio-net device as seen by one guest, served over a vhost-user
//! socket in either role, across any number of frontend connections. Frames the guest
//! transmits are handed to a [`TxSink`] in batches without being copied out of guest memory;
//! anyone holding a [`PortHandle`] can write frames into the guest's RX ring
//! ([`rx::RxRing::with_writer`]), copying each frame once, straight from the source guest's memory.
//!
//! This crate knows nothing about channels or switching.

#![deny(missing_docs)]

mod backend;
pub mod config_space;
mod error;
pub mod features;
#[doc(hidden)]
pub mod fuzz_api;
mod mem_table;
mod mem_view;
pub mod memory;
mod park;
mod port;
mod ring;
pub mod rx;
mod shim;
mod sigbus;
pub mod socket;
pub mod stats;
pub mod tx;

pub use error::PortError;
pub use mem_table::{MemLimits, MAX_MEM_BYTES, MAX_MEM_REGIONS, MIN_MEM_BYTES};
pub use port::{NetPort, PortConfig, PortHandle, SocketRole, TxSink};
pub use ring::MAX_CHAIN_DESCS;
pub use rx::{RxDrop, RxQueue, RxRing, RxWriter};
pub use stats::{PortCounter, PortStats, PortStatsSnapshot};
pub use tx::{FrameRef, NetHdr, TxBatch, TxBatchCounts, TX_PASS_BUDGET};
