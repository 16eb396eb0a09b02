//! Test guest configuration.

use std::time::Duration;

use crate::features::{DEFAULT_FEATURES, DEFAULT_PROTOCOL_FEATURES};

/// How a [`crate::TestGuest`] is built. `GuestConfig::default()` is a sensible virtio-net guest.
#[derive(Clone, Debug)]
pub struct GuestConfig {
    /// Guest memory size in bytes (a multiple of 4096; default 16 MiB). It must hold both rings,
    /// `queue_size` RX buffers, `queue_size` TX slots and leaves the rest as scratch space.
    pub mem_size: usize,
    /// Entries per virtqueue (a power of two, 1..=32768; default 256).
    pub queue_size: u16,
    /// Size of each posted RX buffer (default 2048; small values such as 256 exercise mergeable
    /// RX buffers).
    pub rx_buffer_size: u32,
    /// Size of the TX data slot behind each TX descriptor (default 4096). A frame larger than a
    /// slot is spread over several descriptors.
    pub tx_buffer_size: u32,
    /// Virtio features the guest wants; negotiated = offered & want.
    pub want_features: u64,
    /// vhost-user protocol features the guest wants (default MQ | REPLY_ACK | CONFIG).
    pub want_protocol_features: u64,
    /// Initial avail/used index of the RX queue (sent with SET_VRING_BASE; rings start there).
    pub rx_base: u16,
    /// Initial avail/used index of the TX queue.
    pub tx_base: u16,
    /// Send SET_VRING_CALL (default true). False behaves like Cloud Hypervisor for a queue
    /// without an MSI-X vector: the backend never gets a call fd, the guest polls.
    pub call_fd: bool,
    /// How long `connect` retries / `listen` waits for the peer.
    pub connect_timeout: Duration,
    /// MAC used by [`crate::TestGuest::mac`] when the backend provides none in config space.
    pub mac: [u8; 6],
    /// The queue pair the guest drives (default 0): its RX and TX queues are virtqueues
    /// 2k and 2k+1, and the pairs below it are never set up or enabled (a multiqueue device
    /// whose driver uses one of its later pairs).
    pub queue_pair: u16,
}

impl Default for GuestConfig {
    fn default() -> Self {
        GuestConfig {
            mem_size: 16 << 20,
            queue_size: 256,
            rx_buffer_size: 2048,
            tx_buffer_size: 4096,
            want_features: DEFAULT_FEATURES,
            want_protocol_features: DEFAULT_PROTOCOL_FEATURES,
            rx_base: 0,
            tx_base: 0,
            call_fd: true,
            connect_timeout: Duration::from_secs(10),
            mac: [0x52, 0x54, 0x00, 0x12, 0x34, 0x56],
            queue_pair: 0,
        }
    }
}

impl GuestConfig {
    /// The virtqueue index of the driven pair's RX queue (its TX queue is the next one).
    pub fn first_virtqueue(&self) -> usize {
        usize::from(self.queue_pair) * 2
    }

    /// Virtqueues up to and including the driven pair's.
    pub fn virtqueues(&self) -> u64 {
        (u64::from(self.queue_pair) + 1) * 2
    }
}
