//! An in-process vhost-user **frontend** (the driver side a VMM such as QEMU plays): a test
//! guest with memfd-backed guest memory shared through SET_MEM_TABLE, and real split
//! virtqueues (queue 0 = RX, queue 1 = TX) laid out in that memory, kick eventfds it writes and
//! call eventfds it reads. It talks the real protocol over a real Unix socket.
//!
//! ```no_run
//! use vswitch_testguest::{EthFrame, GuestConfig, TestGuest};
//! use std::time::Duration;
//! let mut g = TestGuest::connect("/tmp/port0.sock".as_ref(), GuestConfig::default()).unwrap();
//! g.post_rx(256).unwrap();
//! let f = EthFrame::new([0xff; 6], g.mac(), 0x88b5, b"hello").build();
//! g.send(&f).unwrap();
//! let back = g.recv(Duration::from_secs(1));
//! ```

#![warn(missing_docs)]

mod config;
mod error;
pub mod features;
pub mod frame;
mod frontend;
mod guest;
pub mod hostile_mem;
mod memory;
pub mod migration;
mod notify;
pub mod offload;
mod raw;
mod rx;
mod tx;
mod vring;
mod wait;

pub use config::GuestConfig;
pub use error::GuestError;
pub use frame::{EthFrame, VlanTag};
pub use frontend::NET_CONFIG_LEN;
pub use guest::{TestGuest, RX_QUEUE, TX_QUEUE};
pub use memory::MemPoker;
pub use tx::{TxLayout, MAX_INDIRECT};
pub use vm_memory::GuestAddress;
pub use vring::{RawDesc, RingAddrs, DESC_F_INDIRECT, DESC_F_NEXT, DESC_F_WRITE, DESC_SIZE};
pub use wait::wait_for;
