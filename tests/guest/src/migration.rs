//! What a VMM does to a device around a live migration: share a dirty-page log
//! (SET_LOG_BASE, protocol feature LOG_SHMFD), turn logging on and off (SET_FEATURES with and
//! without VHOST_F_LOG_ALL), ask the device to announce the guest (SEND_RARP); and where the
//! guest's rings and RX buffers lie, to check the log against what the device wrote.

use std::os::fd::{AsRawFd, BorrowedFd};

use vhost::vhost_user::message::FrontendReq;
use vhost::{VhostBackend, VhostUserDirtyLogRegion};

use crate::error::GuestError;
use crate::frontend::acked;
use crate::guest::TestGuest;
use crate::vring::RingAddrs;

/// VHOST_F_LOG_ALL (bit 26).
pub const LOG_ALL: u64 = 1 << 26;
/// vhost-user protocol feature `LOG_SHMFD`.
pub const PROTO_LOG_SHMFD: u64 = 0x2;
/// vhost-user protocol feature `RARP`.
pub const PROTO_RARP: u64 = 0x4;

impl TestGuest {
    /// SET_LOG_BASE: the device logs into `size` bytes of `fd` from offset 0 (LOG_SHMFD must
    /// have been negotiated). Returns once the device answered.
    pub fn set_log_base(&mut self, fd: BorrowedFd<'_>, size: u64) -> Result<(), GuestError> {
        let region = VhostUserDirtyLogRegion {
            mmap_size: size,
            mmap_offset: 0,
            mmap_handle: fd.as_raw_fd(),
        };
        self.fe
            .set_log_base(0, Some(region))
            .map_err(GuestError::protocol("SET_LOG_BASE"))
    }

    /// SET_FEATURES with the negotiated features, plus VHOST_F_LOG_ALL when `on` (what QEMU
    /// sends when a migration starts and ends). Acknowledged when REPLY_ACK was negotiated.
    pub fn set_log_all(&mut self, on: bool) -> Result<(), GuestError> {
        let f = if on {
            self.neg.features | LOG_ALL
        } else {
            self.neg.features & !LOG_ALL
        };
        let ra = self.reply_ack();
        acked(&mut self.fe, ra, "SET_FEATURES", |fe| fe.set_features(f))
    }

    /// SEND_RARP with `mac` (what QEMU on the destination sends once the guest runs there).
    pub fn send_rarp(&mut self, mac: [u8; 6]) -> Result<(), GuestError> {
        let mut body = [0u8; 8];
        body[..6].copy_from_slice(&mac);
        let ra = self.reply_ack();
        crate::frontend::raw_send(
            &mut self.sock,
            "SEND_RARP",
            FrontendReq::SEND_RARP.into(),
            &body,
            ra,
        )
    }

    /// The rings of queue `index` (0 RX, 1 TX), as guest physical addresses.
    pub fn ring_addrs(&self, index: usize) -> RingAddrs {
        if index == crate::guest::RX_QUEUE {
            self.rx.q.ring
        } else {
            self.tx.q.ring
        }
    }

    /// RX buffer `i`'s guest physical address (buffer `i` sits behind descriptor `i`; a fresh
    /// guest's first posts use descriptors 0, 1, 2...).
    pub fn rx_buffer_addr(&self, i: u16) -> u64 {
        self.rx.buf_addr(i)
    }
}
