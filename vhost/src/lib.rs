//! A vhost-user virtio-net port.
//!
//! One [`NetPort`] is one virtio-net device as seen by one guest, served over a vhost-user
//! socket in either role, across any number of frontend connections. The thread that serves
//! the port pulls the frames the guest transmits, batch by batch, without copying them out of
//! guest memory ([`PortHandle::poll_tx`]); anyone holding a [`PortHandle`] can write frames
//! into the guest's RX ring ([`rx::RxRing::with_writer`]), copying each frame once, straight
//! from where it lies (another guest's memory, or a host buffer: [`HostFrames`]).
//!
//! This crate knows nothing about channels or switching.
//!
//! Module map:
//! - connection: `port` (the socket, one frontend connection after another), `socket`
//!   (creating it safely), `shim` (the relay that checks every vhost-user message first),
//!   `mem_table` (the memory-table checks), `migrate_msgs` (the live-migration messages the
//!   relay answers), `backend` (the virtio-net device of one
//!   connection), `features`, `config_space`;
//! - guest memory: `memory` (address translation, copies), `mem_view` (the snapshot the
//!   datapath reads), `sigbus` (a frontend that shrinks its memory costs only its port),
//!   [`dirty_log`] (marking the pages the port writes while the guest migrates);
//! - rings: `ring` (split virtqueue access; `ring::packed`, packed virtqueues), `park` (a
//!   broken TX ring set aside);
//! - datapath: `drain` (a TX pass for the thread serving the port), `tx` (chains to frames),
//!   [`frame`] (frames from any port), `rx` (frames into a guest), [`wire`] (header layouts),
//!   [`offload`] (checksum completion and segmentation in software, pure);
//! - [`stats`] (the port's counters), [`queues`] (queue pairs and their counters); [`crossover`] (serving ports without a switch: the
//!   example, tests and fuzzing).

#![deny(missing_docs)]

mod backend;
pub mod config_space;
pub mod crossover;
pub mod dirty_log;
mod drain;
mod error;
pub mod features;
pub mod frame;
#[doc(hidden)]
pub mod fuzz_api;
mod mem_table;
mod mem_view;
pub mod memory;
mod migrate_msgs;
pub mod offload;
mod park;
mod port;
pub mod queues;
mod ring;
pub mod rx;
mod shim;
mod sigbus;
pub mod socket;
pub mod stats;
pub mod tx;
pub mod wire;

pub use drain::{TxCursor, TxPass};
pub use error::PortError;
pub use frame::{FrameBatch, FrameRef, HostFrameError, HostFrames, NetHdr};
pub use mem_table::{MemLimits, MAX_MEM_BYTES, MAX_MEM_REGIONS, MIN_MEM_BYTES};
pub use port::{Announce, NetPort, PortConfig, PortHandle, SocketRole, MAX_QUEUE_PAIRS};
pub use queues::QueuePairSnapshot;
pub use ring::MAX_CHAIN_DESCS;
pub use rx::{RxDrop, RxQueue, RxRing, RxWriter};
pub use stats::{PortCounter, PortStats, PortStatsSnapshot};
pub use tx::{TxBatchCounts, TxScratch, TX_PASS_BUDGET};
