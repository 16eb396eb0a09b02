//! An AF_PACKET socket on one Linux interface, moving whole Ethernet frames in batches: one
//! `recvmmsg` fills up to a batch of receive buffers, one `sendmmsg` sends a batch. The
//! buffers and message headers are allocated once, when a batch is made.
//!
//! What the kernel does to a received frame before a packet socket sees it: it takes the
//! outermost VLAN tag (802.1Q or 802.1ad) off the frame and passes it beside the frame
//! (`PACKET_AUXDATA`), so [`RxFrame::kernel_tag`] carries that tag and the frame's bytes
//! start with the MAC addresses followed by what was behind the tag. Frames the socket sends
//! go out as written, tags included.

use std::io;
use std::mem::{size_of, zeroed};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use vswitch_channels::tag::Tag;

use super::netdev;

/// `ETH_P_ALL` in network byte order, as `sockaddr_ll` takes it.
const ETH_P_ALL_BE: u16 = (libc::ETH_P_ALL as u16).to_be();

/// The receive buffer the socket asks for (the kernel caps it at `rmem_max` unless the
/// process may force it): room for bursts while the datapath thread is busy elsewhere.
const RCVBUF_BYTES: libc::c_int = 4 << 20;

/// A control message buffer: room for one `tpacket_auxdata`, aligned as `cmsghdr` wants.
#[repr(C, align(8))]
#[derive(Clone, Copy)]
struct Ctrl([u8; 64]);

/// A packet socket bound to one interface, non-blocking, receiving every protocol
/// (`ETH_P_ALL`) but not the frames it sends itself (`PACKET_IGNORE_OUTGOING`), in
/// promiscuous mode (a trunk carries frames for MACs that are not the interface's).
#[derive(Debug)]
pub struct PacketSocket {
    fd: OwnedFd,
}

impl PacketSocket {
    /// Opens a socket on `interface`. Errors name the step that failed.
    pub fn open(interface: &str) -> Result<PacketSocket, (&'static str, io::Error)> {
        let (sock, ifindex) = PacketSocket::promiscuous(interface)?;
        let one: libc::c_int = 1;
        sock.set_opt(libc::SOL_PACKET, libc::PACKET_IGNORE_OUTGOING, &one)
            .map_err(|e| ("PACKET_IGNORE_OUTGOING", e))?;
        sock.set_opt(libc::SOL_PACKET, libc::PACKET_AUXDATA, &one)
            .map_err(|e| ("PACKET_AUXDATA", e))?;
        // PACKET_QDISC_BYPASS is not set: it would also hide the frames sent from capture
        // tools (tcpdump) on this host, which is how a trunk is checked.
        if sock
            .set_opt(libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, &RCVBUF_BYTES)
            .is_err()
        {
            let _ = sock.set_opt(libc::SOL_SOCKET, libc::SO_RCVBUF, &RCVBUF_BYTES);
        }
        // SAFETY: an all-zero sockaddr_ll is a valid value; the fields that matter are set.
        let mut addr: libc::sockaddr_ll = unsafe { zeroed() };
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_protocol = ETH_P_ALL_BE;
        addr.sll_ifindex = ifindex;
        // SAFETY: `addr` is a valid sockaddr_ll and its size is passed with it.
        let r = unsafe {
            libc::bind(
                sock.fd.as_raw_fd(),
                (&addr as *const libc::sockaddr_ll).cast(),
                size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if r < 0 {
            return Err(("binding to the interface", io::Error::last_os_error()));
        }
        Ok(sock)
    }

    /// A socket that only keeps `interface` in promiscuous mode while it is open (a trunk
    /// carries frames for MACs that are not the interface's): unbound, protocol 0, it
    /// receives nothing. Also returns the interface's index.
    pub fn promiscuous(
        interface: &str,
    ) -> Result<(PacketSocket, libc::c_int), (&'static str, io::Error)> {
        let ifindex = netdev::ifindex(interface).map_err(|e| ("looking up the interface", e))?;
        // Protocol 0 until bound: no frame of another interface is queued in between.
        // SAFETY: plain socket(2) call; the result is checked before use.
        let raw = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                0,
            )
        };
        if raw < 0 {
            return Err(("opening an AF_PACKET socket", io::Error::last_os_error()));
        }
        // SAFETY: `raw` is a descriptor socket(2) just returned, owned by nothing else.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let sock = PacketSocket { fd };
        // SAFETY: an all-zero packet_mreq is a valid value; the fields that matter are set.
        let mut mreq: libc::packet_mreq = unsafe { zeroed() };
        mreq.mr_ifindex = ifindex;
        mreq.mr_type = libc::PACKET_MR_PROMISC as u16;
        sock.set_opt(libc::SOL_PACKET, libc::PACKET_ADD_MEMBERSHIP, &mreq)
            .map_err(|e| ("promiscuous mode", e))?;
        Ok((sock, ifindex))
    }

    fn set_opt<T>(&self, level: libc::c_int, name: libc::c_int, value: &T) -> io::Result<()> {
        // SAFETY: `value` points at a live `T` whose size is passed with it; the kernel only
        // reads it.
        let r = unsafe {
            libc::setsockopt(
                self.fd.as_raw_fd(),
                level,
                name,
                (value as *const T).cast(),
                size_of::<T>() as libc::socklen_t,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

impl AsRawFd for PacketSocket {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// Buffers and message headers for one `recvmmsg` of up to `slots` frames, each at most
/// `slot_len` bytes (longer ones arrive truncated and are marked so).
pub struct RxBatch {
    slot_len: usize,
    bufs: Box<[u8]>,
    iovs: Box<[libc::iovec]>,
    ctrl: Box<[Ctrl]>,
    hdrs: Box<[libc::mmsghdr]>,
}

// SAFETY: the raw pointers in `iovs` and `hdrs` point only into this batch's own heap
// buffers (`bufs`, `iovs`, `ctrl`), set afresh before each system call, which move with the
// batch and are never shared; the batch is used by one thread at a time (`&mut self`).
unsafe impl Send for RxBatch {}

/// One received frame.
pub struct RxFrame<'a> {
    /// The frame's bytes (as many as fitted its buffer), without the tag the kernel took off.
    pub data: &'a mut [u8],
    /// The frame was longer than its buffer: `data` is its beginning only.
    pub truncated: bool,
    /// The outermost VLAN tag, which the kernel took off the frame (see the module doc).
    pub kernel_tag: Option<Tag>,
}

impl RxBatch {
    /// Room for `slots` frames of up to `slot_len` bytes.
    pub fn new(slots: usize, slot_len: usize) -> RxBatch {
        RxBatch {
            slot_len,
            bufs: vec![0u8; slots * slot_len].into_boxed_slice(),
            // Pointed at the buffers before each call (`recv`).
            iovs: empty_iovecs(slots),
            ctrl: vec![Ctrl([0; 64]); slots].into_boxed_slice(),
            hdrs: empty_msgs(slots),
        }
    }

    /// Receives what is queued, up to a batch, without waiting: the number of frames
    /// (0 when none is queued).
    pub fn recv(&mut self, sock: &PacketSocket) -> io::Result<usize> {
        // Pointers taken afresh from the buffers (no pointer is kept across calls); the
        // lengths and flags the kernel wrote last time are reset.
        let base = self.bufs.as_mut_ptr();
        let slots = self.hdrs.iter_mut().zip(self.iovs.iter_mut());
        for (i, ((h, iov), ctrl)) in slots.zip(self.ctrl.iter_mut()).enumerate() {
            // `i * slot_len` is within `bufs` (one slot per header).
            iov.iov_base = base.wrapping_add(i * self.slot_len).cast();
            iov.iov_len = self.slot_len;
            h.msg_hdr.msg_iov = iov;
            h.msg_hdr.msg_iovlen = 1;
            h.msg_hdr.msg_control = ctrl.0.as_mut_ptr().cast();
            h.msg_hdr.msg_controllen = size_of::<Ctrl>();
            h.msg_hdr.msg_flags = 0;
            h.msg_len = 0;
        }
        loop {
            // SAFETY: every header points at its own iovec (one buffer of `slot_len` bytes
            // inside `bufs`) and control buffer, all owned by `self` and alive and unaliased
            // for the call; `hdrs.len()` headers are passed; no timeout pointer.
            let n = unsafe {
                libc::recvmmsg(
                    sock.as_raw_fd(),
                    self.hdrs.as_mut_ptr(),
                    self.hdrs.len() as libc::c_uint,
                    libc::MSG_DONTWAIT,
                    std::ptr::null_mut(),
                )
            };
            if n >= 0 {
                return Ok(n as usize);
            }
            let e = io::Error::last_os_error();
            match e.kind() {
                io::ErrorKind::Interrupted => continue,
                io::ErrorKind::WouldBlock => return Ok(0),
                _ => return Err(e),
            }
        }
    }

    /// The first `n` frames of the last [`RxBatch::recv`].
    pub fn frames(&mut self, n: usize) -> impl Iterator<Item = RxFrame<'_>> {
        let slot_len = self.slot_len;
        self.bufs
            .chunks_exact_mut(slot_len)
            .zip(self.hdrs.iter())
            .take(n)
            .map(move |(buf, h)| {
                let len = (h.msg_len as usize).min(slot_len);
                RxFrame {
                    data: &mut buf[..len],
                    truncated: h.msg_hdr.msg_flags & libc::MSG_TRUNC != 0,
                    kernel_tag: kernel_tag(&h.msg_hdr),
                }
            })
    }
}

/// `n` iovecs pointing nowhere.
fn empty_iovecs(n: usize) -> Box<[libc::iovec]> {
    // SAFETY: an all-zero iovec (null pointer, zero length) is a valid value.
    let v = unsafe { zeroed::<libc::iovec>() };
    vec![v; n].into_boxed_slice()
}

/// `n` message headers without buffers, address or control data.
fn empty_msgs(n: usize) -> Box<[libc::mmsghdr]> {
    // SAFETY: an all-zero mmsghdr (null pointers, zero lengths) is a valid value.
    let v = unsafe { zeroed::<libc::mmsghdr>() };
    vec![v; n].into_boxed_slice()
}

/// The VLAN tag in a received message's `PACKET_AUXDATA`, if the kernel took one off.
fn kernel_tag(msg: &libc::msghdr) -> Option<Tag> {
    // SAFETY: `msg` is a header recvmmsg filled: its control pointer and (updated) length
    // describe this batch's control buffer, which CMSG_FIRSTHDR/NXTHDR stay within.
    let mut c = unsafe { libc::CMSG_FIRSTHDR(msg) };
    while !c.is_null() {
        // SAFETY: a non-null header from CMSG_FIRSTHDR/NXTHDR lies within the buffer.
        let h = unsafe { &*c };
        if h.cmsg_level == libc::SOL_PACKET
            && h.cmsg_type == libc::PACKET_AUXDATA
            && h.cmsg_len as usize >= cmsg_len::<libc::tpacket_auxdata>()
        {
            // SAFETY: the message is long enough for a tpacket_auxdata (checked above);
            // read unaligned, as the data need not be aligned for it.
            let aux: libc::tpacket_auxdata =
                unsafe { std::ptr::read_unaligned(libc::CMSG_DATA(c).cast()) };
            if aux.tp_status & libc::TP_STATUS_VLAN_VALID == 0 {
                return None;
            }
            // Kernels before the TPID was passed only took 802.1Q tags off.
            let tpid = if aux.tp_status & libc::TP_STATUS_VLAN_TPID_VALID != 0 {
                aux.tp_vlan_tpid
            } else {
                vswitch_channels::tag::TPID_8021Q
            };
            let [t0, t1] = tpid.to_be_bytes();
            let [c0, c1] = aux.tp_vlan_tci.to_be_bytes();
            return Some(Tag::from_bytes([t0, t1, c0, c1]));
        }
        // SAFETY: as for CMSG_FIRSTHDR; `c` is a header within the buffer.
        c = unsafe { libc::CMSG_NXTHDR(msg, c) };
    }
    None
}

/// `CMSG_LEN(size_of::<T>())`.
fn cmsg_len<T>() -> usize {
    // SAFETY: CMSG_LEN is arithmetic only.
    unsafe { libc::CMSG_LEN(size_of::<T>() as libc::c_uint) as usize }
}

/// Buffers and message headers for one `sendmmsg` of up to `slots` frames of up to
/// `slot_len` bytes: frames are written into [`TxBatch::spare`], counted in with
/// [`TxBatch::commit`] and sent by [`TxBatch::flush`].
pub struct TxBatch {
    slot_len: usize,
    filled: usize,
    bufs: Box<[u8]>,
    iovs: Box<[libc::iovec]>,
    hdrs: Box<[libc::mmsghdr]>,
}

// SAFETY: as for `RxBatch`: the pointers point into the batch's own heap buffers, and the
// batch is used by one thread at a time (`&mut self`).
unsafe impl Send for TxBatch {}

/// What one [`TxBatch::flush`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Flushed {
    /// Frames the kernel took.
    pub sent: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Frames it refused (queue full, interface down, too long...).
    pub dropped: u64,
}

impl Flushed {
    /// Adds `o`'s counts.
    pub fn add(&mut self, o: Flushed) {
        self.sent += o.sent;
        self.bytes += o.bytes;
        self.dropped += o.dropped;
    }
}

impl TxBatch {
    /// Room for `slots` frames of up to `slot_len` bytes.
    pub fn new(slots: usize, slot_len: usize) -> TxBatch {
        TxBatch {
            slot_len,
            filled: 0,
            bufs: vec![0u8; slots * slot_len].into_boxed_slice(),
            // Pointed at the buffers before each call (`flush`); no address: the socket is
            // bound.
            iovs: empty_iovecs(slots),
            hdrs: empty_msgs(slots),
        }
    }

    /// True when no frame fits any more: flush first.
    pub fn is_full(&self) -> bool {
        self.filled == self.hdrs.len()
    }

    /// The buffer of the next frame (`slot_len` bytes). Panics if the batch is full.
    pub fn spare(&mut self) -> &mut [u8] {
        let at = self.filled * self.slot_len;
        &mut self.bufs[at..at + self.slot_len]
    }

    /// Counts in the next frame, the first `len` bytes of [`TxBatch::spare`].
    pub fn commit(&mut self, len: usize) {
        self.iovs[self.filled].iov_len = len.min(self.slot_len);
        self.filled += 1;
    }

    /// Sends the frames counted in, without waiting, and empties the batch.
    pub fn flush(&mut self, sock: &PacketSocket) -> Flushed {
        let mut r = Flushed::default();
        let base = self.bufs.as_mut_ptr();
        let slots = self.hdrs.iter_mut().zip(self.iovs.iter_mut());
        for (i, (h, iov)) in slots.take(self.filled).enumerate() {
            // `i * slot_len` is within `bufs` (one slot per header); `iov_len` was set by
            // `commit`.
            iov.iov_base = base.wrapping_add(i * self.slot_len).cast();
            h.msg_hdr.msg_iov = iov;
            h.msg_hdr.msg_iovlen = 1;
        }
        let mut done = 0;
        while done < self.filled {
            let rest = &mut self.hdrs[done..self.filled];
            // SAFETY: every header points at its own iovec, which points at `iov_len` bytes
            // of its buffer inside `bufs`, all owned by `self` and alive for the call;
            // `rest.len()` headers are passed.
            let n = unsafe {
                libc::sendmmsg(
                    sock.as_raw_fd(),
                    rest.as_mut_ptr(),
                    rest.len() as libc::c_uint,
                    libc::MSG_DONTWAIT,
                )
            };
            if n > 0 {
                let n = n as usize;
                r.sent += n as u64;
                r.bytes += self.iovs[done..done + n]
                    .iter()
                    .map(|v| v.iov_len as u64)
                    .sum::<u64>();
                done += n;
                continue;
            }
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EINTR) => continue,
                // The socket's or the device's queue is full, or the device is gone or down:
                // the rest would fail the same way now.
                Some(libc::EAGAIN | libc::ENOBUFS | libc::ENETDOWN | libc::ENXIO) => {
                    log::debug!("AF_PACKET send: {e}; {} frames dropped", self.filled - done);
                    r.dropped += (self.filled - done) as u64;
                    break;
                }
                // This frame was refused (EMSGSIZE...): drop it, go on with the next.
                _ => {
                    log::debug!("AF_PACKET send: {e}; one frame dropped");
                    r.dropped += 1;
                    done += 1;
                }
            }
        }
        self.filled = 0;
        r
    }
}
