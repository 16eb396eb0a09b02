//! Planning: where the frames of a batch *should* go. Ingress checks of the source address,
//! learning, and the destination choice (FDB, flooding). Whether a frame *may* go there is
//! decided apart, at delivery (`admit.rs`).

use std::ops::Range;

use vswitch_channels::{ChannelId, ChannelMode, MacAddr, PortId};

use crate::core::View;
use crate::counters::{DropReason, Drops};
use crate::fdb::{Fdb, Learn, Probe};

/// Per-thread reusable forwarding state (allocated once; never grows after warm-up).
#[derive(Debug, Default)]
pub struct Scratch {
    /// (destination port, frame index) pairs of the current batch; once planned and
    /// [`Scratch::finish`]ed, sorted (grouped per destination, frame order kept within a
    /// destination).
    pub dests: Vec<(u32, u16)>,
    /// Whether `dests` is still in (port, index) order: indices only grow, so it is exactly
    /// when ports never decrease from one entry to the next.
    sorted: bool,
    last_dest: u32,
    /// Buffers for offloads finished in software at delivery (allocated on first use).
    pub(crate) soft: super::soft::SoftOffload,
    /// The RX queue picked for each frame of a group delivered into a guest with several
    /// queue pairs (`deliver.rs`).
    pub(crate) queues: Vec<u8>,
}

impl Scratch {
    /// Starts a batch.
    #[inline]
    pub fn clear(&mut self) {
        self.dests.clear();
        self.sorted = true;
        self.last_dest = 0;
    }

    /// Records a destination of frame `idx`.
    #[inline(always)]
    fn push(&mut self, dest: u32, idx: u16) {
        self.sorted &= dest >= self.last_dest;
        self.last_dest = dest;
        self.dests.push((dest, idx));
    }

    /// Records one destination for a run of frames.
    #[inline(always)]
    fn push_run(&mut self, dest: u32, idx: Range<usize>) {
        self.sorted &= dest >= self.last_dest;
        self.last_dest = dest;
        self.dests.extend(idx.map(|i| (dest, i as u16)));
    }

    /// Ends a batch's planning: `dests` grouped per destination, frame order kept.
    #[inline]
    pub fn finish(&mut self) {
        if !self.sorted {
            self.dests.sort_unstable();
            self.sorted = true;
        }
    }
}

/// What the planner reads of one frame.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FrameAddrs {
    /// Source MAC.
    pub src: [u8; 6],
    /// Destination MAC.
    pub dst: [u8; 6],
    /// Frame length in bytes.
    pub len: u32,
}

/// The ingress totals of one batch (for the sender's and its channel's counters).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BatchIngress {
    /// Frames accepted.
    pub frames: u64,
    /// Bytes accepted.
    pub bytes: u64,
    /// Copies planned by flooding.
    pub flooded: u64,
    /// Frames dropped at ingress, per reason.
    pub drops: Drops,
}

/// What the ingress side decided for one frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ingress {
    /// Accepted; `copies` destinations were planned, `flooded` of them by flooding.
    Accepted {
        /// Destinations planned.
        copies: u32,
        /// Of which by flooding.
        flooded: u32,
    },
    /// Dropped at ingress.
    Dropped(DropReason),
}

/// The sending port, as the planner needs it.
#[derive(Debug, Clone, Copy)]
pub struct Sender {
    /// Port id.
    pub port: PortId,
    /// The frames' channel (the stamp): a VM's registry entry at batch start, or the channel
    /// an uplink read from the wire for this run of frames.
    pub channel: ChannelId,
    /// Configured MAC, if the port is MAC-locked.
    pub mac: Option<MacAddr>,
    /// MAC learning limit.
    pub mac_limit: u32,
    /// How its frames are forwarded.
    pub role: Role,
}

/// How a sender's frames are forwarded (802.1Qbg's modes for VMs, split horizon for uplinks).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A VM in VEB mode (the default): frames switched here, to local VMs and uplinks.
    Veb,
    /// A VM in VEPA mode: every frame goes to the adjacent bridge through the first uplink
    /// carrying its channel, even one for a VM on this host; the bridge reflects it back and it
    /// comes in through the uplink, and the same check.
    Vepa,
    /// An uplink. Its floods stay on this host (split horizon: the other hosts' switches flood
    /// their own VMs); with reflective relay (the bridge side of VEPA) a frame may also go
    /// back out of it, on its own channel.
    Uplink {
        /// 802.1Qbg reflective relay is on.
        reflective_relay: bool,
    },
}

/// Decides the destinations of one frame and appends `(port, idx)` pairs to `dests`.
///
/// The reference for one frame: [`plan_batch`] makes the same decisions for a whole batch
/// (sharing the source check and learning across a run of frames from one MAC, and looking
/// destinations up in groups).
#[allow(clippy::too_many_arguments)]
pub fn plan_frame(
    view: &View<'_>,
    fdb: &Fdb,
    now: u32,
    from: &Sender,
    src: [u8; 6],
    dst: [u8; 6],
    idx: u16,
    dests: &mut Vec<(u32, u16)>,
) -> Ingress {
    let except = match check_source(view, fdb, now, from, src) {
        Ok(except) => except,
        Err(reason) => return Ingress::Dropped(reason),
    };
    let copies = match decide_dest(view, fdb, now, from, &fdb.probe(from.channel, &dst), except) {
        Dest::Local => 0,
        Dest::Drop(reason) => return Ingress::Dropped(reason),
        Dest::Port(to) => {
            dests.push((to.get(), idx));
            1
        }
        Dest::Flood => {
            let mut copies = 0u32;
            flood(view, from, except, |to| {
                dests.push((to, idx));
                copies += 1;
            });
            return Ingress::Accepted {
                copies,
                flooded: copies,
            };
        }
    };
    Ingress::Accepted { copies, flooded: 0 }
}

/// The ingress checks of a source address, and its learning: `Err(reason)` drops the frame.
/// `Ok(Some(port))`: a frame a VEPA VM of this host sent, reflected back by the adjacent
/// bridge: not learned again (the VM stays where it is), and never delivered to `port` (a
/// VEPA VM does not receive its own frames).
#[inline]
fn check_source(
    view: &View<'_>,
    fdb: &Fdb,
    now: u32,
    from: &Sender,
    src: [u8; 6],
) -> Result<Option<PortId>, DropReason> {
    let smac = MacAddr::new(src);
    if smac.is_multicast() || from.mac.is_some_and(|m| m != smac) {
        return Err(DropReason::SourceSpoof);
    }
    if let Role::Uplink { .. } = from.role {
        if let Some(origin) = reflected_origin(view, fdb, now, from, &src) {
            return Ok(Some(origin));
        }
    }
    match fdb.learn(from.channel, &src, from.port, from.mac_limit, now) {
        Learn::LimitReached => Err(DropReason::MacLimit),
        // Another port's configured MAC: only that port may send from it.
        Learn::Claimed => Err(DropReason::SourceSpoof),
        Learn::Known | Learn::Learned => Ok(None),
    }
}

/// The local VEPA VM a frame from an uplink came from, if its source MAC is learned behind
/// one (on the frame's channel).
#[cold]
fn reflected_origin(
    view: &View<'_>,
    fdb: &Fdb,
    now: u32,
    from: &Sender,
    src: &[u8; 6],
) -> Option<PortId> {
    let port = fdb.lookup(from.channel, src, now)?;
    let info = view.reg.channel_of(port)?;
    (port != from.port && info.id == from.channel && info.mode == ChannelMode::Vepa).then_some(port)
}

/// Where an accepted frame goes.
#[derive(Clone, Copy)]
enum Dest {
    /// Its destination is behind the sender itself: nowhere (not a drop).
    Local,
    /// One known port.
    Port(PortId),
    /// Broadcast, multicast, unknown unicast: [`flood`].
    Flood,
    /// Nowhere, counted (a VEPA VM whose channel no uplink carries).
    Drop(DropReason),
}

/// The destination of an accepted frame to the MAC of `probe` (its lookup in the sender's
/// channel, prepared by the caller); never `except` (see [`check_source`]).
#[inline]
fn decide_dest(
    view: &View<'_>,
    fdb: &Fdb,
    now: u32,
    from: &Sender,
    probe: &Probe,
    except: Option<PortId>,
) -> Dest {
    if from.role == Role::Vepa {
        return vepa_dest(view, fdb, now, from, probe);
    }
    if probe.is_multicast() {
        return Dest::Flood;
    }
    let found = match fdb.lookup_probe(probe, now) {
        Some(to) => Some(to),
        None => {
            let dst = probe.mac();
            view.policy
                .reach(from.channel)
                .iter()
                .find_map(|&other| fdb.lookup(other, &dst, now))
        }
    };
    match found {
        Some(to) if to == from.port => match from.role {
            // Reflective relay: back out of the uplink it came in on.
            Role::Uplink {
                reflective_relay: true,
            } => Dest::Port(to),
            _ => Dest::Local,
        },
        Some(to) if Some(to) == except => Dest::Local,
        Some(to) => Dest::Port(to),
        None => Dest::Flood,
    }
}

/// A VEPA VM's frame: to the uplink its destination is known behind, else to the first
/// uplink carrying its channel (the adjacent bridge, which reflects and floods), whatever the
/// destination.
#[cold]
fn vepa_dest(view: &View<'_>, fdb: &Fdb, now: u32, from: &Sender, probe: &Probe) -> Dest {
    let uplinks = view.ports.uplinks();
    if !probe.is_multicast() {
        if let Some(to) = fdb.lookup_probe(probe, now) {
            if uplinks
                .iter()
                .any(|(u, c)| *u == to && c.contains(from.channel))
            {
                return Dest::Port(to);
            }
        }
    }
    match uplinks.iter().find(|(_, c)| c.contains(from.channel)) {
        Some((u, _)) => Dest::Port(*u),
        None => Dest::Drop(DropReason::UnknownChannel),
    }
}

/// Calls `to` with every port a flooded frame goes to: every other VM of the sender's
/// channel and of the channels the policy lets that one reach (never `except`), and the
/// uplinks carrying the sender's channel: all of them from a VM; from an uplink none (split
/// horizon) but itself with reflective relay. The frame keeps its channel on an uplink: the
/// far switch applies its own policy.
#[inline]
fn flood(view: &View<'_>, from: &Sender, except: Option<PortId>, mut to: impl FnMut(u32)) {
    for ch in std::iter::once(&from.channel).chain(view.policy.reach(from.channel)) {
        for &vm in view.reg.ports_in(*ch) {
            if vm != from.port && Some(vm) != except {
                to(vm.get());
            }
        }
    }
    let uplinks = view.ports.uplinks();
    if uplinks.is_empty() {
        return;
    }
    let reflect = match from.role {
        Role::Veb | Role::Vepa => None,
        Role::Uplink { reflective_relay } => Some(reflective_relay),
    };
    for (uplink, carried) in uplinks {
        let mine = *uplink == from.port;
        let go = match reflect {
            None => true,
            Some(relay) => relay && mine,
        };
        if go && carried.contains(from.channel) {
            to(uplink.get());
        }
    }
}

/// Runs of frames whose FDB buckets are prefetched together before the first is probed.
const GROUP: usize = 32;

/// A run of consecutive frames of a batch with the same source and destination MACs.
#[derive(Clone, Copy)]
struct Run {
    /// One past its last frame (it starts where the previous run ended).
    end: usize,
    /// Its source MAC as a [`raw48`] word.
    src: u64,
    bytes: u64,
    /// The lookup of its destination in the sender's channel, prepared (and its bucket
    /// prefetched) ahead.
    probe: Probe,
}

/// A MAC as a word, for equality only (no byte swap: two loads).
#[inline(always)]
fn raw48(m: &[u8; 6]) -> u64 {
    u64::from(u32::from_le_bytes([m[0], m[1], m[2], m[3]]))
        | (u64::from(u16::from_le_bytes([m[4], m[5]])) << 32)
}

/// The inverse of [`raw48`].
#[inline]
fn mac_of_raw48(w: u64) -> [u8; 6] {
    let b = w.to_le_bytes();
    [b[0], b[1], b[2], b[3], b[4], b[5]]
}

/// Plans the frames `range` of a batch (`frame(i)` reads frame `i`), all from `from` on
/// `from.channel`: the same decisions, frame by frame and in order, as [`plan_frame`] on each
/// frame, with the per-frame work shared:
///
/// - a run of consecutive frames with the same source and destination MACs is decided once;
/// - the source check and learning run once per run of frames from one source MAC (the
///   verdict, drop or not, is counted for every frame);
/// - destination lookups go by groups of `GROUP` (32) runs: every bucket of the group is
///   prefetched before the first probe, so that a large table's cache misses overlap.
///
/// Appends to `scratch.dests` (see [`Scratch::clear`] and [`Scratch::finish`] around a batch).
/// Nothing here allocates once `dests` has reached its size, locks, or does an atomic
/// read-modify-write except when learning a new source MAC (once per run).
#[inline]
pub fn plan_batch(
    view: &View<'_>,
    fdb: &Fdb,
    now: u32,
    from: &Sender,
    range: Range<usize>,
    frame: impl Fn(usize) -> FrameAddrs,
    scratch: &mut Scratch,
) -> BatchIngress {
    let n = range.end;
    let mut out = BatchIngress::default();
    // The current run of one source MAC (`u64::MAX`: none yet; a raw48 word is below 2^48)
    // and its verdict.
    let mut run_src = u64::MAX;
    let mut verdict: Result<Option<PortId>, DropReason> = Ok(None);
    let mut runs = [Run {
        end: 0,
        src: 0,
        bytes: 0,
        probe: fdb.probe48(from.channel, 0),
    }; GROUP];
    let mut i = range.start;
    while i < n {
        // Pass 1: cut the next runs, prepare each one's destination lookup and start loading
        // its bucket (none for multicast: never looked up).
        let first = i;
        let mut nruns = 0usize;
        let (mut cur_src, mut cur_dst) = (u64::MAX, u64::MAX);
        while i < n {
            let a = frame(i);
            let (src, dst) = (raw48(&a.src), raw48(&a.dst));
            if src == cur_src && dst == cur_dst {
                let r = &mut runs[nruns - 1];
                r.end = i + 1;
                r.bytes += u64::from(a.len);
            } else if nruns == GROUP {
                break;
            } else {
                let probe = fdb.probe(from.channel, &a.dst);
                if a.dst[0] & 1 == 0 {
                    fdb.prefetch(&probe);
                }
                runs[nruns] = Run {
                    end: i + 1,
                    src,
                    bytes: u64::from(a.len),
                    probe,
                };
                nruns += 1;
                (cur_src, cur_dst) = (src, dst);
            }
            i += 1;
        }
        // Pass 2: decide, run by run in frame order.
        let mut start = first;
        for r in &runs[..nruns] {
            let frames = r.start_to(start);
            let idx = start..r.end;
            start = r.end;
            if r.src != run_src {
                run_src = r.src;
                verdict = check_source(view, fdb, now, from, mac_of_raw48(r.src));
            }
            let except = match verdict {
                Ok(except) => except,
                Err(reason) => {
                    out.drops.add(reason, frames);
                    continue;
                }
            };
            let dest = decide_dest(view, fdb, now, from, &r.probe, except);
            if let Dest::Drop(reason) = dest {
                out.drops.add(reason, frames);
                continue;
            }
            out.frames += frames;
            out.bytes += r.bytes;
            match dest {
                Dest::Local | Dest::Drop(_) => {}
                Dest::Port(to) => {
                    let to = to.get();
                    if frames == 1 {
                        // One frame per run: every frame to another MAC (macs-N, fan-out).
                        scratch.push(to, idx.start as u16);
                    } else {
                        scratch.push_run(to, idx);
                    }
                }
                Dest::Flood => {
                    for i in idx {
                        flood(view, from, except, |to| {
                            scratch.push(to, i as u16);
                            out.flooded += 1;
                        });
                    }
                }
            }
        }
    }
    out
}

impl Run {
    /// Its frame count, given where it starts.
    #[inline]
    fn start_to(&self, start: usize) -> u64 {
        (self.end - start) as u64
    }
}
