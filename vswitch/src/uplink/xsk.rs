//! An AF_XDP socket on queue 0 of one Linux interface (kernel bypass): the XDP program
//! (`super::xdp_prog`) redirects the queue's frames into this socket's receive ring, in a
//! UMEM (one memory area shared with the kernel) that the switch reads in place; frames to
//! send are written straight into UMEM frames and handed to the kernel by descriptor.
//!
//! The UMEM is allocated once, when the socket opens: [`RX_FRAMES`] frames that the kernel
//! fills (they go back to the fill ring after each batch) and [`TX_FRAMES`] frames to send
//! from (back on a free list when the completion ring returns them). Each frame is
//! [`FRAME_SIZE`] bytes; a received frame starts [`XDP_HEADROOM`] bytes into its frame, so
//! the longest frame this path carries is [`MAX_FRAME_LEN`] bytes.
//!
//! Rings and descriptors: `xdpilone` (pure Rust, no libbpf). Zero-copy is asked for first;
//! drivers without it (veth) get copy mode, where the kernel copies frames between its own
//! buffers and the UMEM.

use std::ffi::CString;
use std::fmt;
use std::io;
use std::num::NonZeroU32;
use std::os::fd::RawFd;
use std::ptr::NonNull;

use xdpilone::xdp::XdpDesc;
use xdpilone::{
    CompletionQueue, FillQueue, IfInfo, RingRx, RingTx, Socket, SocketConfig, Umem, UmemConfig,
    User,
};

use super::afpacket::{Flushed, RxFrame};
use super::netdev;
use super::xdp_prog::XdpProg;

/// Bytes per UMEM frame (a page: the kernel's limit for one frame without multi-buffer).
pub const FRAME_SIZE: u32 = 4096;
/// Where the kernel puts a received frame in its UMEM frame (`XDP_PACKET_HEADROOM`).
pub const XDP_HEADROOM: u32 = 256;
/// The longest frame this path carries either way.
pub const MAX_FRAME_LEN: usize = (FRAME_SIZE - XDP_HEADROOM) as usize;
/// UMEM frames for receiving (= fill and receive ring sizes).
pub const RX_FRAMES: u32 = 4096;
/// UMEM frames for sending (= transmit and completion ring sizes).
pub const TX_FRAMES: u32 = 2048;
/// The queue served (the program redirects the others' frames nowhere: see
/// [`Xsk::open`]'s check).
const QUEUE: u32 = 0;
/// Copy mode sends at most 32 frames per wake-up (`sendto`); a batch needs a few, more when
/// the device pushes back (a veth peer that has not drained its queue yet).
const MAX_KICKS: usize = 16;

/// Why AF_XDP does not run on an interface: what was being done and what failed.
#[derive(Debug, thiserror::Error)]
#[error("{step}: {detail}")]
pub struct XskError {
    step: &'static str,
    detail: String,
}

fn fail(step: &'static str) -> impl FnOnce(xdpilone::Errno) -> XskError {
    move |e| XskError {
        step,
        detail: io::Error::from_raw_os_error(e.get_raw().abs()).to_string(),
    }
}

/// How the socket runs, for the uplink's log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XskMode {
    /// The XDP program runs in the driver (native XDP), not in the generic path.
    pub native: bool,
    /// The driver moves frames in and out of the UMEM itself (no kernel copy).
    pub zero_copy: bool,
    /// The interface.
    pub interface: String,
    /// The queue bound.
    pub queue: u32,
}

impl fmt::Display for XskMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "AF_XDP ({}, zero-copy {}) on {} queue {}",
            if self.native { "native" } else { "generic" },
            if self.zero_copy { "on" } else { "off" },
            self.interface,
            self.queue
        )
    }
}

/// The UMEM's memory: anonymous pages, unmapped when dropped.
struct Area {
    base: NonNull<u8>,
    len: usize,
}

impl Area {
    fn new(len: usize) -> Result<Area, XskError> {
        // SAFETY: an anonymous private mapping at an address the kernel picks; the result is
        // checked before use.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(XskError {
                step: "allocating the UMEM",
                detail: io::Error::last_os_error().to_string(),
            });
        }
        let base = NonNull::new(p.cast()).ok_or(XskError {
            step: "allocating the UMEM",
            detail: "mmap returned a null address".into(),
        })?;
        Ok(Area { base, len })
    }
}

impl Drop for Area {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`, unmapped once; the socket that shared it with
        // the kernel is closed before (see `Keep`'s field order).
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.len) };
    }
}

/// What lives as long as the socket and is only dropped, after [`XskRx`] and [`XskTx`]: the
/// attachment first (frames go back to the kernel's stack), then the socket, then the memory
/// it used.
pub struct Keep {
    _prog: XdpProg,
    _user: User,
    _sock: Socket,
    _umem: Umem,
    _area: Area,
}

// SAFETY: `Keep` is never used after `Xsk::open`, only dropped (from any thread); `Umem` and
// `Area` hold pointers to the UMEM mapping, which is process-wide memory.
unsafe impl Send for Keep {}
// SAFETY: as above: no method of `Keep` is ever called through a shared reference.
unsafe impl Sync for Keep {}

/// An open AF_XDP socket: its receive and transmit sides (each used under its owner's lock)
/// and what keeps them valid.
pub struct Xsk {
    /// Receiving.
    pub rx: XskRx,
    /// Sending.
    pub tx: XskTx,
    /// The socket's descriptor: readable when frames are in the receive ring.
    pub fd: RawFd,
    /// How it runs.
    pub mode: XskMode,
    /// To keep, and drop after `rx` and `tx`.
    pub keep: Keep,
}

impl Xsk {
    /// Opens an AF_XDP socket on queue 0 of `interface` with the XDP program attached,
    /// moving up to `batch` frames at a time each way. `slot_len`: the longest frame received
    /// whole (longer ones are marked truncated, as in the AF_PACKET path); `slot_len` and the
    /// frames sent are at most [`MAX_FRAME_LEN`].
    pub fn open(interface: &str, slot_len: usize, batch: usize) -> Result<Xsk, XskError> {
        if slot_len > MAX_FRAME_LEN {
            return Err(XskError {
                step: "checking the MTU",
                detail: format!(
                    "frames of up to {slot_len} bytes do not fit AF_XDP frames ({MAX_FRAME_LEN} \
                     bytes): lower the interface's MTU"
                ),
            });
        }
        let queues = netdev::rx_queues(interface);
        if queues > 1 {
            return Err(XskError {
                step: "counting receive queues",
                detail: format!(
                    "{interface} has {queues} receive queues and this path serves queue 0 only \
                     (one queue: ethtool -L {interface} combined 1)"
                ),
            });
        }
        let name = CString::new(interface).map_err(|_| XskError {
            step: "naming the interface",
            detail: "the name has a NUL byte".into(),
        })?;
        let mut info = IfInfo::invalid();
        info.from_name(&name)
            .map_err(fail("looking up the interface"))?;
        info.set_queue(QUEUE);

        let area = Area::new(((RX_FRAMES + TX_FRAMES) * FRAME_SIZE) as usize)?;
        // Zero-copy when the driver has it, else copy mode.
        let mut bound = None;
        let mut last_err = None;
        for zero_copy in [true, false] {
            match bind(&info, &area, zero_copy) {
                Ok(b) => {
                    bound = Some((b, zero_copy));
                    break;
                }
                Err(e) => last_err = Some(e),
            }
        }
        let Some((b, zero_copy)) = bound else {
            return Err(last_err.unwrap_or(XskError {
                step: "binding the AF_XDP socket",
                detail: "no mode was tried".into(),
            }));
        };
        let fd = b.rx.as_raw_fd();
        let mut prog = XdpProg::attach(info.ifindex()).map_err(|e| XskError {
            step: "the XDP program",
            detail: e.to_string(),
        })?;
        prog.redirect(QUEUE, fd).map_err(|e| XskError {
            step: "the XDP program",
            detail: e.to_string(),
        })?;
        let mode = XskMode {
            native: prog.native,
            zero_copy,
            interface: interface.to_owned(),
            queue: QUEUE,
        };
        let mut rx = XskRx {
            ring: b.rx,
            fill: b.fill,
            base: area.base,
            slot_len,
            held: vec![XdpDesc::default(); batch].into_boxed_slice(),
            n_held: 0,
        };
        rx.fill_all();
        let tx = XskTx {
            ring: b.tx,
            comp: b.comp,
            base: area.base,
            free: (RX_FRAMES..RX_FRAMES + TX_FRAMES)
                .map(|i| u64::from(i) * u64::from(FRAME_SIZE))
                .collect(),
            pending: vec![XdpDesc::default(); batch].into_boxed_slice(),
            filled: 0,
        };
        Ok(Xsk {
            rx,
            tx,
            fd,
            mode,
            keep: Keep {
                _prog: prog,
                _user: b.user,
                _sock: b.sock,
                _umem: b.umem,
                _area: area,
            },
        })
    }
}

/// A socket bound to the queue, with its rings mapped.
struct Bound {
    umem: Umem,
    sock: Socket,
    user: User,
    rx: RingRx,
    tx: RingTx,
    fill: FillQueue,
    comp: CompletionQueue,
}

fn bind(info: &IfInfo, area: &Area, zero_copy: bool) -> Result<Bound, XskError> {
    let config = UmemConfig {
        fill_size: RX_FRAMES,
        complete_size: TX_FRAMES,
        frame_size: FRAME_SIZE,
        headroom: 0,
        flags: 0,
    };
    let mem = NonNull::slice_from_raw_parts(area.base, area.len);
    // SAFETY: `mem` is the page-aligned mapping of `area`, which outlives the UMEM (`Keep`
    // drops the UMEM before the area, and a failed attempt drops it here).
    let umem = unsafe { Umem::new(config, mem) }.map_err(fail("registering the UMEM"))?;
    let sock = Socket::with_shared(info, &umem).map_err(fail("opening an AF_XDP socket"))?;
    let device = umem
        .fq_cq(&sock)
        .map_err(fail("the fill and completion rings"))?;
    let mode = if zero_copy {
        SocketConfig::XDP_BIND_ZEROCOPY
    } else {
        SocketConfig::XDP_BIND_COPY
    };
    let user = umem
        .rx_tx(
            &sock,
            &SocketConfig {
                rx_size: NonZeroU32::new(RX_FRAMES),
                tx_size: NonZeroU32::new(TX_FRAMES),
                bind_flags: mode | SocketConfig::XDP_BIND_NEED_WAKEUP,
            },
        )
        .map_err(fail("the receive and transmit rings"))?;
    let rx = user.map_rx().map_err(fail("mapping the receive ring"))?;
    let tx = user.map_tx().map_err(fail("mapping the transmit ring"))?;
    umem.bind(&user).map_err(fail(if zero_copy {
        "binding the AF_XDP socket (zero-copy)"
    } else {
        "binding the AF_XDP socket"
    }))?;
    let (fill, comp) = device.into_parts();
    Ok(Bound {
        umem,
        sock,
        user,
        rx,
        tx,
        fill,
        comp,
    })
}

/// The receive side: the receive ring, the fill ring, and the descriptors of the last batch
/// (their frames are the switch's until [`XskRx::release`]).
pub struct XskRx {
    ring: RingRx,
    fill: FillQueue,
    base: NonNull<u8>,
    slot_len: usize,
    held: Box<[XdpDesc]>,
    n_held: usize,
}

// SAFETY: `base` points into the UMEM mapping, owned by the same `Xsk` and alive as long as
// it; the side is used by one thread at a time (`&mut self`).
unsafe impl Send for XskRx {}

impl XskRx {
    /// Gives every receive frame to the kernel (at open).
    fn fill_all(&mut self) {
        let mut next = 0;
        while next < RX_FRAMES {
            let mut w = self.fill.fill(RX_FRAMES - next);
            let n = w.insert((next..RX_FRAMES).map(|i| u64::from(i) * u64::from(FRAME_SIZE)));
            w.commit();
            if n == 0 {
                break;
            }
            next += n;
        }
    }

    /// Takes what is in the receive ring, up to a batch, without waiting: the number of
    /// frames (0 when none is there). Their frames stay the switch's until
    /// [`XskRx::release`].
    pub fn recv(&mut self) -> usize {
        self.release();
        let mut r = self.ring.receive(self.held.len() as u32);
        let mut n = 0;
        while n < self.held.len() {
            let Some(d) = r.read() else { break };
            self.held[n] = d;
            n += 1;
        }
        r.release();
        self.n_held = n;
        n
    }

    /// The frames of the last [`XskRx::recv`]: whole frames as on the wire (tags included).
    /// A descriptor outside the receive frames (never seen from a sound kernel) gives an
    /// empty frame, dropped as malformed.
    pub fn frames(&mut self) -> impl Iterator<Item = RxFrame<'_>> {
        let base = self.base;
        let slot_len = self.slot_len;
        self.held[..self.n_held].iter().map(move |d| {
            let at = d.addr % u64::from(FRAME_SIZE);
            let chunk = d.addr / u64::from(FRAME_SIZE);
            let len = d.len as usize;
            if chunk >= u64::from(RX_FRAMES) || at as usize + len > FRAME_SIZE as usize {
                return RxFrame {
                    data: &mut [],
                    truncated: false,
                    kernel_tag: None,
                };
            }
            let kept = len.min(slot_len);
            let start = d.addr as usize;
            // Each frame is handed out by the kernel once per fill, so the frames of one batch
            // are distinct, and none is written by the kernel until `release` gives it back.
            // SAFETY: in bounds of one UMEM receive frame (checked above); distinct and not
            // written meanwhile; the borrow ends before `release` (`&mut self`).
            let data = unsafe { std::slice::from_raw_parts_mut(base.as_ptr().add(start), kept) };
            RxFrame {
                data,
                truncated: len > slot_len,
                kernel_tag: None,
            }
        })
    }

    /// Gives the last batch's frames back to the kernel (the fill ring).
    pub fn release(&mut self) {
        if self.n_held == 0 {
            return;
        }
        let frame = u64::from(FRAME_SIZE);
        // The fill ring has room for every receive frame, so this ends with all of them in;
        // a reservation may get less than the ring has free: ask again for the rest.
        let mut done = 0;
        while done < self.n_held {
            let mut w = self.fill.fill((self.n_held - done) as u32);
            let n = w.insert(
                self.held[done..self.n_held]
                    .iter()
                    .map(|d| d.addr - d.addr % frame),
            ) as usize;
            w.commit();
            if n == 0 {
                break;
            }
            done += n;
        }
        self.n_held = 0;
        if self.fill.needs_wakeup() {
            self.fill.wake();
        }
    }
}

/// The send side: frames are written into free UMEM frames ([`XskTx::spare`]), counted in
/// ([`XskTx::commit`]) and handed to the kernel a batch at a time ([`XskTx::flush`]).
pub struct XskTx {
    ring: RingTx,
    comp: CompletionQueue,
    base: NonNull<u8>,
    /// UMEM offsets of the send frames not in the kernel's hands.
    free: Vec<u64>,
    /// The batch being built.
    pending: Box<[XdpDesc]>,
    filled: usize,
}

// SAFETY: as for `XskRx`.
unsafe impl Send for XskTx {}

impl XskTx {
    /// True when no frame fits any more: flush first.
    pub fn is_full(&self) -> bool {
        self.filled == self.pending.len()
    }

    /// The next frame's buffer ([`MAX_FRAME_LEN`] bytes), or `None` when every send frame
    /// is still with the kernel.
    pub fn spare(&mut self) -> Option<&mut [u8]> {
        if self.free.is_empty() {
            self.reclaim();
        }
        let at = *self.free.last()?;
        // SAFETY: `at` is the offset of a send frame (FRAME_SIZE bytes inside the UMEM) that
        // the kernel does not hold (it is on the free list); the borrow is tied to `&mut self`.
        Some(unsafe {
            std::slice::from_raw_parts_mut(self.base.as_ptr().add(at as usize), MAX_FRAME_LEN)
        })
    }

    /// Counts in the frame written into the last [`XskTx::spare`], `len` bytes.
    pub fn commit(&mut self, len: usize) {
        if self.is_full() {
            return;
        }
        let Some(addr) = self.free.pop() else { return };
        self.pending[self.filled] = XdpDesc {
            addr,
            len: len.min(MAX_FRAME_LEN) as u32,
            options: 0,
        };
        self.filled += 1;
    }

    /// Hands the batch to the kernel and wakes it to send; takes back the frames it sent.
    pub fn flush(&mut self) -> Flushed {
        let mut r = Flushed::default();
        if self.filled > 0 {
            let batch = &self.pending[..self.filled];
            // A reservation may get less than the ring has free (its view of the kernel's
            // consumer is refreshed only when it has nothing): ask again until it gives none.
            let mut k = 0;
            while k < batch.len() {
                let mut w = self.ring.transmit((batch.len() - k) as u32);
                let n = w.insert(batch[k..].iter().copied()) as usize;
                w.commit();
                if n == 0 {
                    break;
                }
                k += n;
            }
            r.sent = k as u64;
            r.bytes = batch[..k].iter().map(|d| u64::from(d.len)).sum();
            // The ring is full: the rest is dropped, its frames free again.
            r.dropped = (self.filled - k) as u64;
            self.free.extend(batch[k..].iter().map(|d| d.addr));
            self.filled = 0;
        }
        self.kick(MAX_KICKS);
        self.reclaim();
        r
    }

    /// Wakes the kernel to send what the TX ring holds, up to `kicks` times while frames are
    /// left; when a wake-up sends nothing (the device pushes back), gives the CPU to the
    /// receiving side (softirq, the peer) before the next one. Frames still left go with the
    /// next flush, or the next [`XskTx::push_pending`].
    fn kick(&mut self, kicks: usize) {
        for _ in 0..kicks {
            let before = self.ring.pending();
            if before == 0 || !self.ring.needs_wakeup() {
                break;
            }
            self.ring.wake();
            if self.ring.pending() == before {
                std::thread::yield_now();
            }
        }
    }

    /// Sends what an earlier flush left in the TX ring, if any, and takes back the frames the
    /// kernel is done with: called by the receiving side, so that frames the device pushed
    /// back go out without waiting for more frames to send.
    pub fn push_pending(&mut self) {
        if self.ring.pending() > 0 {
            self.kick(1);
        }
        if self.free.len() < TX_FRAMES as usize {
            self.reclaim();
        }
    }

    /// Puts the frames the kernel is done with back on the free list.
    fn reclaim(&mut self) {
        let mut c = self.comp.complete(TX_FRAMES);
        while let Some(addr) = c.read() {
            let frame = u64::from(FRAME_SIZE);
            let chunk = addr / frame;
            if (u64::from(RX_FRAMES)..u64::from(RX_FRAMES + TX_FRAMES)).contains(&chunk)
                && self.free.len() < TX_FRAMES as usize
            {
                self.free.push(chunk * frame);
            }
        }
        c.release();
    }
}
