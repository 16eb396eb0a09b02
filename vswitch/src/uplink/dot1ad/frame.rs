//! The trunk's framing and batch loops, shared by both I/O paths (AF_PACKET and AF_XDP): a
//! received frame's channel from its outer S-tag, a sent frame's S-tag, and how a batch of
//! received frames becomes the switch's and a group of frames becomes a batch on the wire.

use vswitch_channels::tag::{self, Tag, ADDRS_LEN, TAG_LEN, TPID_8021AD};
use vswitch_channels::ChannelId;
use vswitch_vhost::{FrameBatch, FrameRef, HostFrames, NetHdr};

use super::super::afpacket::{Flushed, PacketSocket, RxFrame, TxBatch};
use super::super::xsk::XskTx;
use super::ETH_HLEN;
use crate::counters::{DropReason, Drops};
use crate::port::{Outgoing, Received, SendResult};

/// Where frames to send are written, a batch at a time.
pub(super) trait TxRing {
    /// The next frame's buffer, or `None` when there is no room now.
    fn spare(&mut self) -> Option<&mut [u8]>;
    /// Counts in the frame written into the last `spare`, `len` bytes.
    fn commit(&mut self, len: usize);
    /// True when the batch must be flushed before the next frame.
    fn is_full(&self) -> bool;
    /// Sends the batch.
    fn flush(&mut self) -> Flushed;
}

/// The AF_PACKET batch with its socket.
pub(super) struct PacketTx<'a> {
    pub sock: &'a PacketSocket,
    pub batch: &'a mut TxBatch,
}

impl TxRing for PacketTx<'_> {
    fn spare(&mut self) -> Option<&mut [u8]> {
        Some(self.batch.spare())
    }
    fn commit(&mut self, len: usize) {
        self.batch.commit(len);
    }
    fn is_full(&self) -> bool {
        self.batch.is_full()
    }
    fn flush(&mut self) -> Flushed {
        self.batch.flush(self.sock)
    }
}

impl TxRing for XskTx {
    fn spare(&mut self) -> Option<&mut [u8]> {
        XskTx::spare(self)
    }
    fn commit(&mut self, len: usize) {
        XskTx::commit(self, len);
    }
    fn is_full(&self) -> bool {
        XskTx::is_full(self)
    }
    fn flush(&mut self) -> Flushed {
        XskTx::flush(self)
    }
}

/// Sends `frames` with their S-tags through `ring`, each written into its wire buffer once.
/// Frames longer than `max_wire_len` with the tag are not sent (`oversize`).
pub(super) fn send_tagged(
    frames: &Outgoing<'_, '_>,
    max_wire_len: usize,
    ring: &mut impl TxRing,
) -> SendResult {
    let mut r = SendResult::default();
    let mut done = Flushed::default();
    for (f, channel) in frames.iter() {
        let len = f.len();
        if len + TAG_LEN > max_wire_len {
            r.oversize += 1;
            continue;
        }
        if len < ADDRS_LEN {
            // The switch never forwards a runt; nothing to put a tag in.
            r.dropped += 1;
            continue;
        }
        if ring.spare().is_none() {
            // Every buffer is in flight: send what is built, which frees some.
            done.add(ring.flush());
        }
        let Some(buf) = ring.spare() else {
            r.dropped += 1;
            continue;
        };
        let wire_len = put_tagged(&f, channel, buf);
        ring.commit(wire_len);
        if ring.is_full() {
            done.add(ring.flush());
        }
    }
    done.add(ring.flush());
    r.sent = done.sent;
    // The frames' own bytes, as for any port (the S-tag is the wire's).
    r.bytes = done.bytes - done.sent * TAG_LEN as u64;
    r.dropped += done.dropped;
    r
}

/// Hands the frames with a channel of one received batch to `each` (in place: no copy), and
/// counts the others: longer than a buffer (`oversize`), no channel, malformed.
/// `storage` is the batch builder kept between calls.
pub(super) fn deliver<'a>(
    received: impl Iterator<Item = RxFrame<'a>>,
    storage: &mut Option<HostFrames<'static>>,
    stamps: &mut Vec<ChannelId>,
    each: &mut dyn FnMut(&FrameBatch<'_>, &[ChannelId]),
) -> Received {
    let mut drops = Drops::default();
    let mut host: HostFrames<'a> = storage.take().unwrap_or_default().recycle();
    stamps.clear();
    for f in received {
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
    *storage = Some(host.recycle());
    Received {
        active: true,
        drops,
    }
}

/// The S-tag of `channel` (priority 0).
pub(super) fn s_tag(channel: ChannelId) -> Tag {
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
pub(super) fn put_tagged(frame: &FrameRef<'_>, channel: ChannelId, buf: &mut [u8]) -> usize {
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
/// the kernel already took off (`frame` is then what was behind it; AF_PACKET); without one,
/// the frame is as on the wire (AF_XDP always) and its S-tag is taken off here, in place: its
/// MAC addresses move 4 bytes forward over the tag (the rest does not move).
pub(super) fn untag(
    frame: &mut [u8],
    kernel_tag: Option<Tag>,
) -> Result<(ChannelId, &[u8]), DropReason> {
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
