//! The 802.1ad trunk: an uplink over a Linux interface whose frames carry their channel as
//! the S-VID of an outer S-tag (TPID `0x88a8`), standard QinQ that other switches read.
//!
//! - **In**: a frame must arrive with an outer S-tag whose VID is a channel (1..=4094); the
//!   switch gets the frame without it, stamped with that channel (and then drops it if the
//!   uplink does not carry that channel). Whatever is behind the S-tag (a guest's own 802.1Q
//!   C-tag, a second S-tag) stays in the frame as payload: a double-tagged frame is on its
//!   outer tag's channel. No tag, an 802.1Q C-tag outermost, VID 0 or 4095: dropped
//!   (`unknown_channel`); a frame too short for what it claims: dropped (`malformed`; Linux
//!   itself already discards a frame whose outer tag is cut short); longer than a receive
//!   buffer: dropped (`oversize`).
//! - **Out**: each frame gets the S-tag of its channel (priority 0) after its MAC addresses.
//!   A frame that would then be longer than the interface's MTU plus the 14-byte Ethernet
//!   header is not sent (`oversize`): guests whose MTU is the trunk's MTU minus 4 always fit.
//!   The MTU is read once, when the uplink opens.
//!
//! The I/O path, chosen when the uplink opens and said in one log line (`xdp=` on the uplink
//! spec: `auto` by default, `on` to require AF_XDP, `off` for AF_PACKET):
//! - **AF_XDP** (`super::xsk`): an XDP program redirects the interface's frames into an
//!   AF_XDP socket; frames are read in place in its UMEM and written straight into it;
//! - **AF_PACKET** (`super::afpacket`): `recvmmsg`/`sendmmsg` batches, buffers allocated once;
//!   the fallback when AF_XDP cannot run (no XDP program in this build, the driver or kernel
//!   refuses, an interface with several receive queues, an MTU too large for AF_XDP frames).
//!
//! Both share the framing and the batch loops (`frame`); one lock per batch each way.

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::{Mutex, MutexGuard};

use log::{info, warn};
use vswitch_channels::tag::{ADDRS_LEN, TAG_LEN};
use vswitch_channels::ChannelId;
use vswitch_vhost::{FrameBatch, HostFrames};

use super::afpacket::{PacketSocket, RxBatch, TxBatch};
use super::netdev;
use super::xsk::{self, Xsk, XskRx, XskTx};
use super::{AfXdp, UplinkError};
use crate::port::{Outgoing, Received, SendResult, Uplink};

mod frame;

/// Frames per batch (`recvmmsg` / `sendmmsg`, or ring descriptors).
const BATCH: usize = 64;
/// Ethernet header without tags: MAC addresses and EtherType.
const ETH_HLEN: usize = ADDRS_LEN + 2;

/// An 802.1ad trunk on one interface.
pub struct Dot1adUplink {
    name: String,
    /// Longest frame put on the wire, S-tag included: the interface's MTU + 14.
    max_wire_len: usize,
    /// The I/O path, e.g. `AF_XDP (native, zero-copy off) on va queue 0`.
    path: String,
    io: Io,
}

/// The I/O path's sockets and batches.
enum Io {
    Packet(Box<PacketIo>),
    Xdp(Box<XdpIo>),
}

/// The AF_PACKET path's socket and batches.
struct PacketIo {
    sock: PacketSocket,
    rx: Mutex<RxSide<RxBatch>>,
    tx: Mutex<TxBatch>,
}

/// The AF_XDP path's socket and sides.
struct XdpIo {
    fd: RawFd,
    rx: Mutex<RxSide<XskRx>>,
    tx: Mutex<XskTx>,
    /// Keeps the interface promiscuous (a trunk carries frames for MACs that are not the
    /// interface's); receives nothing.
    _promisc: PacketSocket,
    /// Dropped after `rx` and `tx` (fields drop in order).
    _keep: xsk::Keep,
}

/// What `receive` reuses from call to call.
struct RxSide<B> {
    batch: B,
    /// The batch builder's storage (empty between calls).
    frames: Option<HostFrames<'static>>,
    stamps: Vec<ChannelId>,
}

impl<B> RxSide<B> {
    fn new(batch: B) -> Mutex<RxSide<B>> {
        Mutex::new(RxSide {
            batch,
            frames: Some(HostFrames::with_capacity(BATCH)),
            stamps: Vec::with_capacity(BATCH),
        })
    }
}

impl Dot1adUplink {
    /// Opens the trunk of uplink `name` on `interface` (in the caller's network namespace),
    /// over AF_XDP or AF_PACKET as `xdp` says.
    pub fn open(name: &str, interface: &str, xdp: AfXdp) -> Result<Dot1adUplink, UplinkError> {
        let io_err = |what: &str, source: io::Error| UplinkError::Io {
            name: name.to_owned(),
            what: format!("{what} ({interface})"),
            source,
        };
        let mtu = netdev::mtu(interface).map_err(|e| io_err("reading the MTU", e))?;
        let max_wire_len = mtu as usize + ETH_HLEN;
        // Received frames: room for both tags in case the kernel left the outer one in (it
        // always does for AF_XDP); longer frames are dropped as oversize.
        let rx_len = max_wire_len + 2 * TAG_LEN;
        let trunk = format!(
            "802.1ad trunk, MTU {mtu}: guest frames up to {} bytes, guest MTU {} or less",
            max_wire_len - TAG_LEN,
            mtu.saturating_sub(TAG_LEN as u32),
        );
        let why_not_xdp = match xdp {
            AfXdp::Off => "xdp=off".to_owned(),
            AfXdp::Auto | AfXdp::On => match Xsk::open(interface, rx_len, BATCH) {
                Ok(x) => {
                    let (promisc, _) = PacketSocket::promiscuous(interface)
                        .map_err(|(what, e)| io_err(what, e))?;
                    let path = x.mode.to_string();
                    info!("uplink {name}: {path} (xdp={xdp}); {trunk}");
                    return Ok(Dot1adUplink {
                        name: name.to_owned(),
                        max_wire_len,
                        path,
                        io: Io::Xdp(Box::new(XdpIo {
                            fd: x.fd,
                            rx: RxSide::new(x.rx),
                            tx: Mutex::new(x.tx),
                            _promisc: promisc,
                            _keep: x.keep,
                        })),
                    });
                }
                Err(e) if xdp == AfXdp::On => {
                    return Err(UplinkError::AfXdp {
                        name: name.to_owned(),
                        interface: interface.to_owned(),
                        reason: e.to_string(),
                    })
                }
                Err(e) => format!("fallback: AF_XDP unavailable: {e}"),
            },
        };
        let sock = PacketSocket::open(interface).map_err(|(what, e)| io_err(what, e))?;
        let path = format!("AF_PACKET on {interface} (recvmmsg/sendmmsg, batches of {BATCH})");
        info!("uplink {name}: {path}, {why_not_xdp}; {trunk}");
        Ok(Dot1adUplink {
            name: name.to_owned(),
            max_wire_len,
            path,
            io: Io::Packet(Box::new(PacketIo {
                sock,
                rx: RxSide::new(RxBatch::new(BATCH, rx_len)),
                tx: Mutex::new(TxBatch::new(BATCH, max_wire_len)),
            })),
        })
    }

    /// Longest frame this trunk sends, S-tag included (the interface's MTU + 14).
    pub fn max_wire_len(&self) -> usize {
        self.max_wire_len
    }

    /// The I/O path that runs: `AF_XDP (...) on IF queue N` or `AF_PACKET on IF (...)`.
    pub fn path(&self) -> &str {
        &self.path
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Uplink for Dot1adUplink {
    fn receive(&self, each: &mut dyn FnMut(&FrameBatch<'_>, &[ChannelId])) -> Received {
        match &self.io {
            Io::Packet(p) => {
                let mut rx = lock(&p.rx);
                let RxSide {
                    batch,
                    frames,
                    stamps,
                } = &mut *rx;
                let n = match batch.recv(&p.sock) {
                    Ok(n) => n,
                    Err(e) => {
                        // The kernel reports an interface going down once, on the next read.
                        warn!("uplink {}: receive: {e}", self.name);
                        0
                    }
                };
                if n == 0 {
                    return Received::default();
                }
                frame::deliver(batch.frames(n), frames, stamps, each)
            }
            Io::Xdp(x) => {
                // Frames the device pushed back on the last send go now (without waiting on
                // a sender, which may be this thread).
                if let Ok(mut tx) = x.tx.try_lock() {
                    tx.push_pending();
                }
                let mut rx = lock(&x.rx);
                let RxSide {
                    batch,
                    frames,
                    stamps,
                } = &mut *rx;
                if batch.recv() == 0 {
                    return Received::default();
                }
                let r = frame::deliver(batch.frames(), frames, stamps, each);
                batch.release();
                r
            }
        }
    }

    fn send(&self, frames: &Outgoing<'_, '_>) -> SendResult {
        match &self.io {
            Io::Packet(p) => {
                let mut tx = lock(&p.tx);
                let mut ring = frame::PacketTx {
                    sock: &p.sock,
                    batch: &mut tx,
                };
                frame::send_tagged(frames, self.max_wire_len, &mut ring)
            }
            Io::Xdp(x) => frame::send_tagged(frames, self.max_wire_len, &mut *lock(&x.tx)),
        }
    }

    fn wake_fd(&self) -> Option<RawFd> {
        match &self.io {
            Io::Packet(p) => Some(p.sock.as_raw_fd()),
            // Readable when frames are in the receive ring.
            Io::Xdp(x) => Some(x.fd),
        }
    }
}

#[cfg(test)]
mod tests;
