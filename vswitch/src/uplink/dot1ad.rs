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
//! The path: an AF_PACKET socket (`super::afpacket`) with `recvmmsg`/`sendmmsg` batches,
//! buffers allocated once; one lock per batch each way. AF_XDP (kernel bypass) is not
//! implemented: the uplink says so once when it opens.

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::{Mutex, MutexGuard};

use log::{info, warn};
use vswitch_channels::tag::{self, Tag, ADDRS_LEN, TAG_LEN, TPID_8021AD};
use vswitch_channels::ChannelId;
use vswitch_vhost::{FrameBatch, FrameRef, HostFrames, NetHdr};

use super::afpacket::{Flushed, PacketSocket, RxBatch, TxBatch};
use super::UplinkError;
use crate::counters::{DropReason, Drops};
use crate::port::{Outgoing, Received, SendResult, Uplink};

/// Frames per `recvmmsg` / `sendmmsg`.
const BATCH: usize = 64;
/// Ethernet header without tags: MAC addresses and EtherType.
const ETH_HLEN: usize = ADDRS_LEN + 2;

/// An 802.1ad trunk on one interface.
pub struct Dot1adUplink {
    name: String,
    sock: PacketSocket,
    /// Longest frame put on the wire, S-tag included: the interface's MTU + 14.
    max_wire_len: usize,
    rx: Mutex<RxSide>,
    tx: Mutex<TxBatch>,
}

/// What `receive` reuses from call to call.
struct RxSide {
    batch: RxBatch,
    /// The batch builder's storage (empty between calls).
    frames: Option<HostFrames<'static>>,
    stamps: Vec<ChannelId>,
}

impl Dot1adUplink {
    /// Opens the trunk of uplink `name` on `interface` (in the caller's network namespace).
    pub fn open(name: &str, interface: &str) -> Result<Dot1adUplink, UplinkError> {
        let io_err = |what: &str, source: io::Error| UplinkError::Io {
            name: name.to_owned(),
            what: format!("{what} ({interface})"),
            source,
        };
        let sock = PacketSocket::open(interface).map_err(|(what, e)| io_err(what, e))?;
        let mtu = sock
            .mtu(interface)
            .map_err(|e| io_err("reading the MTU", e))?;
        let max_wire_len = mtu as usize + ETH_HLEN;
        // Received frames: the kernel takes the outer tag off, but room for both tags in
        // case it did not; longer frames are dropped as oversize.
        let rx_len = max_wire_len + 2 * TAG_LEN;
        info!(
            "uplink {name}: 802.1ad trunk on {interface} (MTU {mtu}: guest frames up to {} \
             bytes, guest MTU {} or less): AF_PACKET with recvmmsg/sendmmsg batches of \
             {BATCH}; AF_XDP not implemented yet",
            max_wire_len - TAG_LEN,
            mtu.saturating_sub(TAG_LEN as u32),
        );
        Ok(Dot1adUplink {
            name: name.to_owned(),
            sock,
            max_wire_len,
            rx: Mutex::new(RxSide {
                batch: RxBatch::new(BATCH, rx_len),
                frames: Some(HostFrames::with_capacity(BATCH)),
                stamps: Vec::with_capacity(BATCH),
            }),
            tx: Mutex::new(TxBatch::new(BATCH, max_wire_len)),
        })
    }

    /// Longest frame this trunk sends, S-tag included (the interface's MTU + 14).
    pub fn max_wire_len(&self) -> usize {
        self.max_wire_len
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Uplink for Dot1adUplink {
    fn receive(&self, each: &mut dyn FnMut(&FrameBatch<'_>, &[ChannelId])) -> Received {
        let mut rx = lock(&self.rx);
        let RxSide {
            batch,
            frames,
            stamps,
        } = &mut *rx;
        let n = match batch.recv(&self.sock) {
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
        let mut drops = Drops::default();
        let mut host = frames.take().unwrap_or_default().recycle();
        stamps.clear();
        for f in batch.frames(n) {
            if f.truncated {
                drops.add(DropReason::Oversize, 1);
                continue;
            }
            match untag(f.data, f.kernel_tag) {
                Ok((channel, frame)) => {
                    if host.push(frame, NetHdr::default()).is_ok() {
                        stamps.push(channel);
                    } else {
                        drops.add(DropReason::Malformed, 1);
                    }
                }
                Err(reason) => drops.add(reason, 1),
            }
        }
        if !host.is_empty() {
            each(&host.batch(), stamps);
        }
        *frames = Some(host.recycle());
        Received {
            active: true,
            drops,
        }
    }

    fn send(&self, frames: &Outgoing<'_, '_>) -> SendResult {
        let mut r = SendResult::default();
        let mut done = Flushed::default();
        let mut tx = lock(&self.tx);
        for (f, channel) in frames.iter() {
            let len = f.len();
            if len + TAG_LEN > self.max_wire_len {
                r.oversize += 1;
                continue;
            }
            if len < ADDRS_LEN {
                // The switch never forwards a runt; nothing to put a tag in.
                r.dropped += 1;
                continue;
            }
            let wire_len = put_tagged(&f, channel, tx.spare());
            tx.commit(wire_len);
            if tx.is_full() {
                done.add(tx.flush(&self.sock));
            }
        }
        done.add(tx.flush(&self.sock));
        r.sent = done.sent;
        // The frames' own bytes, as for any port (the S-tag is the wire's).
        r.bytes = done.bytes - done.sent * TAG_LEN as u64;
        r.dropped += done.dropped;
        r
    }

    fn wake_fd(&self) -> Option<RawFd> {
        Some(self.sock.as_raw_fd())
    }
}

/// The S-tag of `channel` (priority 0).
fn s_tag(channel: ChannelId) -> Tag {
    Tag {
        tpid: TPID_8021AD,
        pcp: 0,
        dei: false,
        vid: channel.get(),
    }
}

/// Writes `frame` with the S-tag of `channel` after its MAC addresses into `buf`, which has
/// room for it (`frame.len() + 4` bytes, `frame.len() >= 12`); returns the length written.
/// The frame is copied once, 4 bytes in; then its MAC addresses move back to the front and
/// the S-tag fills the gap.
fn put_tagged(frame: &FrameRef<'_>, channel: ChannelId, buf: &mut [u8]) -> usize {
    let len = frame.len();
    frame.copy_to(&mut buf[TAG_LEN..TAG_LEN + len]);
    buf.copy_within(TAG_LEN..TAG_LEN + ADDRS_LEN, 0);
    buf[ADDRS_LEN..ADDRS_LEN + TAG_LEN].copy_from_slice(&s_tag(channel).to_bytes());
    len + TAG_LEN
}

/// The channel an outermost tag names, if it is an S-tag with a channel's VID.
fn channel_of(outer: Option<Tag>) -> Result<ChannelId, DropReason> {
    outer
        .filter(Tag::is_s_tag)
        .and_then(|t| t.channel())
        .ok_or(DropReason::UnknownChannel)
}

/// A received frame's channel and the frame without its S-tag. `kernel_tag` is the outer tag
/// the kernel already took off (`frame` is then what was behind it); without one, the frame
/// is as on the wire and its S-tag is taken off here, in place: its MAC addresses move 4
/// bytes forward over the tag (the rest does not move).
fn untag(frame: &mut [u8], kernel_tag: Option<Tag>) -> Result<(ChannelId, &[u8]), DropReason> {
    if let Some(t) = kernel_tag {
        let channel = channel_of(Some(t))?;
        if frame.len() < ETH_HLEN {
            return Err(DropReason::Malformed);
        }
        return Ok((channel, frame));
    }
    if frame.len() < ETH_HLEN {
        return Err(DropReason::Malformed);
    }
    if tag::outer_ethertype(frame) == Some(TPID_8021AD) && frame.len() < ETH_HLEN + TAG_LEN {
        // An S-tag cut short, or nothing behind it.
        return Err(DropReason::Malformed);
    }
    let channel = channel_of(tag::outer_tag(frame))?;
    frame.copy_within(..ADDRS_LEN, TAG_LEN);
    Ok((channel, &frame[TAG_LEN..]))
}

#[cfg(test)]
mod tests;
