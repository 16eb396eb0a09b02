//! Batched datagram I/O for a VXLAN uplink: buffers and message headers allocated once, one
//! `recvmmsg` or `sendmmsg` system call per batch, no allocation per packet.

use std::io;
use std::mem;
use std::net::IpAddr;
use std::os::fd::RawFd;

use log::debug;

use super::sock::{ip_of, SockAddr};
use super::MAX_FRAME;
use crate::uplink::vxlan_wire::{udp, HEADER_LEN};

/// Datagrams one receive takes.
pub(super) const RX_BATCH: usize = 64;
/// Frames one send system call carries (each to one or more remotes).
pub(super) const TX_BATCH: usize = 64;
/// Room for a datagram: the VXLAN header and a frame.
const RX_SLOT: usize = HEADER_LEN + MAX_FRAME;
/// Where a frame starts in a transmit slot: after the UDP header (written when sending
/// through a raw socket) and the VXLAN header.
pub(super) const FRAME_AT: usize = udp::HEADER_LEN + HEADER_LEN;
/// Room for a frame with both headers.
const TX_SLOT: usize = FRAME_AT + MAX_FRAME;
/// Most messages one `sendmmsg` takes (the kernel's `UIO_MAXIOV`).
const MAX_MMSG: usize = 1024;

/// Zeroed plain C structs.
fn zeroed<T: Copy>(n: usize) -> Box<[T]> {
    // SAFETY: used only for iovec, sockaddr_storage and mmsghdr, plain C structs for which all
    // zeroes (null pointers, zero lengths) is a valid value.
    (0..n).map(|_| unsafe { mem::zeroed() }).collect()
}

/// Receive buffers and the `recvmmsg` headers that point into them.
pub(super) struct RxRing {
    bufs: Box<[u8]>,
    /// One per slot, pointing at it (never changed).
    _iovs: Box<[libc::iovec]>,
    names: Box<[libc::sockaddr_storage]>,
    msgs: Box<[libc::mmsghdr]>,
}

// SAFETY: the raw pointers inside `_iovs` and `msgs` point into the ring's own heap
// allocations (which do not move when the ring does) and are only used by `recv`, through
// `&mut self`.
unsafe impl Send for RxRing {}

/// One datagram of the last receive.
pub(super) struct Datagram<'a> {
    /// The UDP payload (the VXLAN header and the frame).
    pub payload: &'a [u8],
    /// Longer than a slot: cut by the kernel.
    pub truncated: bool,
    /// Where it came from.
    pub source: Option<IpAddr>,
}

impl RxRing {
    pub(super) fn new() -> Self {
        let mut bufs = vec![0u8; RX_BATCH * RX_SLOT].into_boxed_slice();
        let mut iovs: Box<[libc::iovec]> = zeroed(RX_BATCH);
        let mut names: Box<[libc::sockaddr_storage]> = zeroed(RX_BATCH);
        let mut msgs: Box<[libc::mmsghdr]> = zeroed(RX_BATCH);
        for (i, (iov, (name, m))) in iovs
            .iter_mut()
            .zip(names.iter_mut().zip(msgs.iter_mut()))
            .enumerate()
        {
            iov.iov_base = bufs[i * RX_SLOT..].as_mut_ptr().cast();
            iov.iov_len = RX_SLOT;
            m.msg_hdr.msg_name = (name as *mut libc::sockaddr_storage).cast();
            m.msg_hdr.msg_iov = iov;
            m.msg_hdr.msg_iovlen = 1;
        }
        RxRing {
            bufs,
            _iovs: iovs,
            names,
            msgs,
        }
    }

    /// Receives what is waiting on `fd` (at most [`RX_BATCH`] datagrams, without blocking).
    /// Returns how many: 0 when nothing was waiting.
    pub(super) fn recv(&mut self, fd: RawFd) -> usize {
        for m in self.msgs.iter_mut() {
            m.msg_hdr.msg_namelen = mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            m.msg_hdr.msg_flags = 0;
        }
        loop {
            // SAFETY: `msgs` holds RX_BATCH headers, each pointing at its own iovec (one slot of
            // `bufs`, RX_SLOT bytes) and its own sockaddr_storage, all writable and alive for
            // the call.
            let n = unsafe {
                libc::recvmmsg(
                    fd,
                    self.msgs.as_mut_ptr(),
                    RX_BATCH as libc::c_uint,
                    libc::MSG_DONTWAIT,
                    std::ptr::null_mut(),
                )
            };
            if n >= 0 {
                return n as usize;
            }
            let e = io::Error::last_os_error();
            match e.kind() {
                io::ErrorKind::Interrupted => continue,
                io::ErrorKind::WouldBlock => return 0,
                _ => {
                    debug!("vxlan: recvmmsg: {e}");
                    return 0;
                }
            }
        }
    }

    /// Datagram `i` of the last [`RxRing::recv`] (`i` below what it returned).
    pub(super) fn datagram(&self, i: usize) -> Datagram<'_> {
        let m = &self.msgs[i];
        let len = (m.msg_len as usize).min(RX_SLOT);
        Datagram {
            payload: &self.bufs[i * RX_SLOT..i * RX_SLOT + len],
            truncated: m.msg_hdr.msg_flags & libc::MSG_TRUNC != 0,
            source: ip_of(&self.names[i]),
        }
    }
}

/// What became of one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Outcome {
    /// Handed to the kernel.
    Sent,
    /// Longer than the route's MTU (`EMSGSIZE`).
    TooBig,
    /// Not sent: no room in the socket's buffer, or another error.
    Failed,
}

/// Transmit slots (each holds one frame with room for its headers) and the `sendmmsg`
/// headers of a batch: one per copy (a flooded frame has one per remote).
pub(super) struct TxRing {
    bufs: Box<[u8]>,
    /// One per slot: the bytes to send of it.
    iovs: Box<[libc::iovec]>,
    msgs: Vec<libc::mmsghdr>,
    /// The slot of each message.
    owner: Vec<u16>,
}

// SAFETY: the raw pointers inside `iovs` point into `bufs`, the ring's own heap allocation;
// `msgs` is empty except during `TxRing::send`, which holds `&mut self` and the borrowed
// addresses its messages point at.
unsafe impl Send for TxRing {}

impl TxRing {
    /// Room for [`TX_BATCH`] frames sent to up to `remotes` remotes each.
    pub(super) fn new(remotes: usize) -> Self {
        TxRing {
            bufs: vec![0u8; TX_BATCH * TX_SLOT].into_boxed_slice(),
            iovs: zeroed(TX_BATCH),
            msgs: Vec::with_capacity(TX_BATCH * remotes),
            owner: Vec::with_capacity(TX_BATCH * remotes),
        }
    }

    /// Slot `s` (below [`TX_BATCH`]), to write a frame at [`FRAME_AT`] and its headers before.
    pub(super) fn slot_mut(&mut self, s: usize) -> &mut [u8] {
        &mut self.bufs[s * TX_SLOT..(s + 1) * TX_SLOT]
    }

    /// Sets what slot `s` sends: `len` bytes from `start`.
    pub(super) fn set_datagram(&mut self, s: usize, start: usize, len: usize) {
        let iov = &mut self.iovs[s];
        iov.iov_base = self.bufs[s * TX_SLOT + start..].as_mut_ptr().cast();
        iov.iov_len = len;
    }

    /// Sends the datagrams of the slots given to [`TxRing::send`]'s messages: `to` yields
    /// (slot, destination) pairs, a slot once per copy. Reports each message's outcome to
    /// `done` (slot, outcome), in order.
    pub(super) fn send<'a>(
        &mut self,
        fd: RawFd,
        to: impl Iterator<Item = (usize, &'a SockAddr)>,
        mut done: impl FnMut(usize, Outcome),
    ) {
        self.msgs.clear();
        self.owner.clear();
        for (s, addr) in to {
            // SAFETY: mmsghdr is a plain C struct; all zeroes is a valid value.
            let mut m: libc::mmsghdr = unsafe { mem::zeroed() };
            m.msg_hdr.msg_name = addr.as_ptr().cast_mut().cast();
            m.msg_hdr.msg_namelen = addr.len();
            m.msg_hdr.msg_iov = &mut self.iovs[s];
            m.msg_hdr.msg_iovlen = 1;
            self.msgs.push(m);
            self.owner.push(s as u16);
        }
        let total = self.msgs.len();
        let mut k = 0;
        while k < total {
            let n = (total - k).min(MAX_MMSG);
            // SAFETY: `msgs[k..k + n]` are valid headers; each points at an iovec of `iovs`
            // (a range of `bufs`) and at a socket address borrowed for this call (`'a`), all
            // alive and unchanged during it. The kernel only reads them (and writes msg_len).
            let rc = unsafe {
                libc::sendmmsg(
                    fd,
                    self.msgs[k..].as_mut_ptr(),
                    n as libc::c_uint,
                    libc::MSG_DONTWAIT,
                )
            };
            if rc > 0 {
                let rc = rc as usize;
                for &s in &self.owner[k..k + rc] {
                    done(usize::from(s), Outcome::Sent);
                }
                k += rc;
                continue;
            }
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EINTR) => {}
                Some(libc::EAGAIN) | Some(libc::ENOBUFS) => {
                    // The socket's buffer is full: what is left of the batch is dropped, as a
                    // full NIC ring would.
                    for &s in &self.owner[k..] {
                        done(usize::from(s), Outcome::Failed);
                    }
                    break;
                }
                Some(libc::EMSGSIZE) => {
                    done(usize::from(self.owner[k]), Outcome::TooBig);
                    k += 1;
                }
                _ => {
                    debug!("vxlan: sendmmsg: {e}");
                    done(usize::from(self.owner[k]), Outcome::Failed);
                    k += 1;
                }
            }
        }
        // No pointer to the borrowed addresses outlives the call.
        self.msgs.clear();
    }
}
