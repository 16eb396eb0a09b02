//! Uplinks: ports that carry many channels, each frame with its own (an 802.1ad outer tag or a
//! VXLAN VNI on the wire). The switch stamps every frame an uplink receives with the channel
//! its transport read from the wire, and delivers into an uplink only the channels it is
//! configured to carry; the transport puts each frame's channel back on the wire.

use std::os::fd::RawFd;
use std::sync::Arc;

use vmm_sys_util::eventfd::EventFd;
use vswitch_channels::{ChannelId, ChannelSet};
use vswitch_vhost::{FrameBatch, FrameRef};

use crate::counters::Drops;

/// The channel of each frame of a batch (its stamp): one for a whole batch from a VM (its
/// registry entry at batch start), one per frame from an uplink (read from the wire).
#[derive(Debug, Clone, Copy)]
pub enum Stamps<'a> {
    /// Every frame of the batch.
    One(ChannelId),
    /// Frame `i`'s channel is element `i`.
    PerFrame(&'a [ChannelId]),
}

impl Stamps<'_> {
    /// The channel of frame `i`. Panics if `i` is out of range (an index the switch
    /// controls, not a peer).
    #[inline(always)]
    pub fn of(&self, i: usize) -> ChannelId {
        match self {
            Stamps::One(c) => *c,
            Stamps::PerFrame(v) => v[i],
        }
    }
}

/// Frames on their way out of an uplink: some frames of a batch (from any port), each with its
/// channel.
pub struct Outgoing<'b, 'a> {
    pub(crate) batch: &'b FrameBatch<'a>,
    /// (destination, frame index) pairs: the frames to send, in order.
    pub(crate) picks: &'b [(u32, u16)],
    pub(crate) stamps: Stamps<'b>,
}

impl<'a> Outgoing<'_, 'a> {
    /// Number of frames.
    pub fn len(&self) -> usize {
        self.picks.len()
    }

    /// True when there is no frame.
    pub fn is_empty(&self) -> bool {
        self.picks.is_empty()
    }

    /// The `i`-th frame and the channel to put on the wire with it. Panics if `i >= len()`.
    pub fn get(&self, i: usize) -> (FrameRef<'a>, ChannelId) {
        let idx = usize::from(self.picks[i].1);
        (self.batch.frame(idx), self.stamps.of(idx))
    }

    /// The frames with their channels.
    pub fn iter(&self) -> impl Iterator<Item = (FrameRef<'a>, ChannelId)> + '_ {
        (0..self.len()).map(move |i| self.get(i))
    }
}

/// What a transport did with a group of frames.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SendResult {
    /// Frames sent.
    pub sent: u64,
    /// Bytes sent.
    pub bytes: u64,
    /// Frames dropped (no room in the transport's queue): counted as `no_rx_buffer`.
    pub dropped: u64,
    /// Frames that would not fit the underlay with their encapsulation (never sent
    /// truncated): counted as `oversize`.
    pub oversize: u64,
}

/// What one [`Uplink::receive`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Received {
    /// Frames were handed over, or are left (poll again before sleeping).
    pub active: bool,
    /// Frames the transport dropped before the switch saw them, by reason: no tag or an
    /// unknown VNI (`unknown_channel`), an encapsulation that does not parse (`malformed`),
    /// too long (`oversize`). Counted on the uplink.
    pub drops: Drops,
}

/// The transport of an uplink. Called by the one datapath thread that serves the uplink
/// (`receive`) and by any datapath thread forwarding to it (`send`).
pub trait Uplink: Send + Sync {
    /// Hands the frames received since the last call (at most one batch) to `each`, with the
    /// channel each one carried on the wire (`each` is not called for an empty batch).
    fn receive(&self, each: &mut dyn FnMut(&FrameBatch<'_>, &[ChannelId])) -> Received;

    /// Sends frames, each tagged with its channel.
    fn send(&self, frames: &Outgoing<'_, '_>) -> SendResult;

    /// A descriptor that becomes readable when frames arrive (a socket): the datapath thread
    /// serving the uplink waits on it too when it sleeps. `None`: see
    /// [`Uplink::set_doorbell`].
    fn wake_fd(&self) -> Option<RawFd> {
        None
    }

    /// The doorbell of the datapath thread that serves this uplink (`None`: it busy-polls),
    /// for a transport without a [`Uplink::wake_fd`]: written when frames arrive while it may
    /// sleep. Called once, when the uplink is added.
    fn set_doorbell(&self, _doorbell: Option<Arc<EventFd>>) {}
}

/// What an uplink is configured as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UplinkSpec {
    /// Unique port name.
    pub name: String,
    /// The channels it carries.
    pub channels: ChannelSet,
    /// Most MACs it may have in the FDB at once (`None`: the switch default).
    pub mac_limit: Option<u32>,
    /// Reflective relay (802.1Qbg, the bridge side of VEPA): a frame received on this uplink
    /// may go back out of it, on the same channel (a VEPA station's frame for a VM behind the
    /// same station).
    pub reflective_relay: bool,
}

/// An uplink in the port table.
pub struct UplinkPort {
    /// The channels it carries: the delivery check for an uplink destination.
    pub channels: Arc<ChannelSet>,
    /// See [`UplinkSpec::reflective_relay`].
    pub reflective_relay: bool,
    /// Its transport.
    pub io: Arc<dyn Uplink>,
}

impl UplinkPort {
    /// True when the uplink carries channel `c`.
    #[inline]
    pub fn carries(&self, c: ChannelId) -> bool {
        self.channels.contains(c)
    }
}
