//! Forwarding one batch: stamp, ingress checks, learning, destination choice, then the delivery
//! check and the copy, grouped per destination.
//!
//! The two halves are kept apart on purpose. [`plan_frame`] decides where a frame *should* go
//! (FDB, flooding); [`admit`] decides whether it *may* go there, from the destination's own
//! registry entry and the policy only. A wrong plan (stale or poisoned FDB, a racing
//! re-association) can therefore misroute a frame but never deliver it across channels.

use vswitch_channels::{ChannelId, MacAddr, PortId, RegistrySnapshot};
use vswitch_vhost::{RxDrop, TxBatch};

use crate::counters::{DropReason, Drops};
use crate::fdb::{Fdb, Learn, Probe};
use crate::switch::{Core, PolicyTable, PortEntry, PortTable};

/// Per-port reusable forwarding state (allocated once; never grows after warm-up).
#[derive(Debug, Default)]
pub struct Scratch {
    /// (destination port, frame index) pairs of the current batch; after [`plan_batch`],
    /// sorted (grouped per destination, frame order kept within a destination).
    pub dests: Vec<(u32, u16)>,
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
    /// The frame's channel: the sender's registry entry at batch start (the stamp).
    pub channel: ChannelId,
    /// Configured MAC, if the port is MAC-locked.
    pub mac: Option<MacAddr>,
    /// MAC learning limit.
    pub mac_limit: u32,
}

/// Decides the destinations of one frame and appends `(port, idx)` pairs to `dests`.
///
/// The reference for one frame: [`plan_batch`] makes the same decisions for a whole batch
/// (sharing the source check and learning across a run of frames from one MAC, and looking
/// destinations up in groups).
#[allow(clippy::too_many_arguments)]
pub fn plan_frame(
    reg: &RegistrySnapshot,
    policy: &PolicyTable,
    fdb: &Fdb,
    now: u32,
    from: &Sender,
    src: [u8; 6],
    dst: [u8; 6],
    idx: u16,
    dests: &mut Vec<(u32, u16)>,
) -> Ingress {
    if let Some(reason) = check_source(fdb, now, from, src) {
        return Ingress::Dropped(reason);
    }
    let copies = match decide_dest(policy, fdb, now, from, &fdb.probe(from.channel, &dst)) {
        Dest::Local => 0,
        Dest::Port(q) => {
            dests.push((q.get(), idx));
            1
        }
        Dest::Flood => {
            let mut copies = 0u32;
            flood(reg, policy, from, |q| {
                dests.push((q, idx));
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

/// The ingress checks of a source address, and its learning: `Some(reason)` drops the frame.
#[inline]
fn check_source(fdb: &Fdb, now: u32, from: &Sender, src: [u8; 6]) -> Option<DropReason> {
    let smac = MacAddr::new(src);
    if smac.is_multicast() || from.mac.is_some_and(|m| m != smac) {
        return Some(DropReason::SourceSpoof);
    }
    if fdb.learn(from.channel, &src, from.port, from.mac_limit, now) == Learn::LimitReached {
        return Some(DropReason::MacLimit);
    }
    None
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
}

/// The destination of an accepted frame to the MAC of `probe` (its lookup in the sender's
/// channel, prepared by the caller).
#[inline]
fn decide_dest(policy: &PolicyTable, fdb: &Fdb, now: u32, from: &Sender, probe: &Probe) -> Dest {
    if probe.is_multicast() {
        return Dest::Flood;
    }
    let found = match fdb.lookup_probe(probe, now) {
        Some(q) => Some(q),
        None => {
            let dst = probe.mac();
            policy
                .reach(from.channel)
                .iter()
                .find_map(|&other| fdb.lookup(other, &dst, now))
        }
    };
    match found {
        Some(q) if q == from.port => Dest::Local,
        Some(q) => Dest::Port(q),
        None => Dest::Flood,
    }
}

/// Calls `to` with every port a flooded frame goes to: every other port of the sender's
/// channel, and of the channels the policy lets that one reach.
#[inline]
fn flood(reg: &RegistrySnapshot, policy: &PolicyTable, from: &Sender, mut to: impl FnMut(u32)) {
    for ch in std::iter::once(&from.channel).chain(policy.reach(from.channel)) {
        for &q in reg.ports_in(*ch) {
            if q != from.port {
                to(q.get());
            }
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

/// Plans a whole batch of `n` frames (`frame(i)` reads frame `i`): the same decisions, frame by
/// frame and in order, as [`plan_frame`] on each frame, with the per-frame work shared:
///
/// - a run of consecutive frames with the same source and destination MACs is decided once;
/// - the source check and learning run once per run of frames from one source MAC (the
///   verdict, drop or not, is counted for every frame);
/// - destination lookups go by groups of `GROUP` (32) runs: every bucket of the group is
///   prefetched before the first probe, so that a large table's cache misses overlap.
///
/// Leaves `scratch.dests` sorted by (port, frame index): grouped per destination, frame order
/// kept within a destination. Nothing here allocates once `dests` has reached its size, locks,
/// or does an atomic read-modify-write except when learning a new source MAC (once per run).
#[allow(clippy::too_many_arguments)]
#[inline]
pub fn plan_batch(
    reg: &RegistrySnapshot,
    policy: &PolicyTable,
    fdb: &Fdb,
    now: u32,
    from: &Sender,
    n: usize,
    frame: impl Fn(usize) -> FrameAddrs,
    scratch: &mut Scratch,
) -> BatchIngress {
    let dests = &mut scratch.dests;
    dests.clear();
    let mut out = BatchIngress::default();
    // Whether `dests` is still in (port, index) order: indices only grow, so it is exactly
    // when ports never decrease from one entry to the next.
    let mut sorted = true;
    let mut last_q = 0u32;
    // The current run of one source MAC (`u64::MAX`: none yet; a raw48 word is below 2^48)
    // and its verdict.
    let mut run_src = u64::MAX;
    let mut verdict: Option<DropReason> = None;
    let mut runs = [Run {
        end: 0,
        src: 0,
        bytes: 0,
        probe: fdb.probe48(from.channel, 0),
    }; GROUP];
    let mut i = 0usize;
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
                verdict = check_source(fdb, now, from, mac_of_raw48(r.src));
            }
            if let Some(reason) = verdict {
                out.drops.add(reason, frames);
                continue;
            }
            out.frames += frames;
            out.bytes += r.bytes;
            match decide_dest(policy, fdb, now, from, &r.probe) {
                Dest::Local => {}
                Dest::Port(q) => {
                    let q = q.get();
                    sorted &= q >= last_q;
                    last_q = q;
                    if frames == 1 {
                        // One frame per run: every frame to another MAC (macs-N, fan-out).
                        dests.push((q, idx.start as u16));
                    } else {
                        dests.extend(idx.map(|i| (q, i as u16)));
                    }
                }
                Dest::Flood => {
                    for i in idx {
                        flood(reg, policy, from, |q| {
                            dests.push((q, i as u16));
                            sorted &= q >= last_q;
                            last_q = q;
                            out.flooded += 1;
                        });
                    }
                }
            }
        }
    }
    if !sorted {
        dests.sort_unstable();
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

/// The delivery check: may a frame stamped `frame` enter the RX ring of port `dest`? Looks the
/// destination up in the registry by its own identity; returns its channel when admitted.
#[inline]
pub fn admit(
    reg: &RegistrySnapshot,
    policy: &PolicyTable,
    frame: ChannelId,
    dest: PortId,
) -> Result<ChannelId, DropReason> {
    match reg.channel_of(dest) {
        None => Err(DropReason::UnknownChannel),
        Some(info) if policy.policy().admits(frame, info.id) => Ok(info.id),
        Some(_) => Err(DropReason::ChannelMismatch),
    }
}

/// The port table's entry for `id` when `reg` describes that port (not an earlier holder of
/// the id): the only entries the datapath sends from or delivers into. `reg` must have been
/// loaded before `ports` (see [`PortEntry::described_by`]).
#[inline]
pub fn described_entry<'p>(
    reg: &RegistrySnapshot,
    ports: &'p PortTable,
    id: PortId,
) -> Option<&'p PortEntry> {
    ports.get(id).filter(|e| e.described_by(reg))
}

/// How often [`forward_batch`] loads the registry and the port table again when the registry
/// it loaded predates the sending port (a port added just now): then the next pair is fresh.
const SNAPSHOT_TRIES: usize = 3;

/// Switches one batch from port `src`, the port registered at registry generation
/// `registered_at` (a removed port's last batch finds its id taken by another port, or by
/// nobody, and is dropped).
pub fn forward_batch(
    core: &Core,
    src: PortId,
    registered_at: u64,
    batch: &TxBatch<'_>,
    scratch: &mut Scratch,
) {
    // The registry is loaded before the port table, and every entry used (sender and
    // destinations) is one the registry snapshot describes: what is checked against a port's
    // channel is delivered into that port and no other, even while ports are removed and their
    // ids reused on other channels (PortEntry::described_by).
    let mut tries = 0;
    let (reg, ports) = loop {
        let reg = core.registry.load();
        let ports = core.ports.load();
        match ports.get(src) {
            Some(e) if e.registered_at == registered_at => {}
            // Removed (and perhaps its id reused): nothing to send from.
            _ => return,
        }
        if described_entry(&reg, &ports, src).is_some() {
            break (reg, ports);
        }
        tries += 1;
        if tries == SNAPSHOT_TRIES {
            if let Some(e) = ports.get(src) {
                e.counters
                    .add_drop(DropReason::UnknownChannel, batch.len() as u64);
            }
            return;
        }
    };
    let policy = core.policy.load();
    let Some(entry) = ports.get(src) else {
        return;
    };
    let Some(info) = reg.channel_of(src) else {
        entry
            .counters
            .add_drop(DropReason::UnknownChannel, batch.len() as u64);
        return;
    };
    let from = Sender {
        port: src,
        channel: info.id,
        mac: entry.mac,
        mac_limit: entry.mac_limit,
    };
    let now = core.fdb.now();
    let ingress = plan_batch(
        &reg,
        &policy,
        &core.fdb,
        now,
        &from,
        batch.len(),
        |i| {
            let (p, len) = batch.head(i);
            let mut a = FrameAddrs {
                src: [0; 6],
                dst: [0; 6],
                len,
            };
            a.dst.copy_from_slice(&p[0..6]);
            a.src.copy_from_slice(&p[6..12]);
            a
        },
        scratch,
    );
    entry.counters.add_in(ingress.frames, ingress.bytes);
    entry.counters.add_flooded(ingress.flooded);
    entry.counters.add_drops(&ingress.drops);
    let chan = core.channel_counters(from.channel);
    chan.add_in(ingress.frames, ingress.bytes);
    chan.add_flooded(ingress.flooded);
    chan.add_drops(&ingress.drops);

    // One ring lock per destination: `dests` is grouped per destination with the frame order
    // kept (plan_batch). With a single destination (the common case) there is one group.
    let dests = &scratch.dests[..];
    let mut chan_drops = Drops::default();
    let mut start = 0;
    while start < dests.len() {
        let q = dests[start].0;
        let end = if dests[dests.len() - 1].0 == q {
            dests.len()
        } else {
            start + dests[start..].partition_point(|d| d.0 == q)
        };
        deliver_group(
            core,
            &reg,
            &policy,
            &ports,
            from.channel,
            PortId::new(q),
            &dests[start..end],
            batch,
            &mut chan_drops,
        );
        start = end;
    }
    chan.add_drops(&chan_drops);
}

#[allow(clippy::too_many_arguments)]
fn deliver_group(
    core: &Core,
    reg: &RegistrySnapshot,
    policy: &PolicyTable,
    ports: &PortTable,
    frame_channel: ChannelId,
    q: PortId,
    group: &[(u32, u16)],
    batch: &TxBatch<'_>,
    chan_drops: &mut Drops,
) {
    let n = group.len() as u64;
    let Some(dest) = described_entry(reg, ports, q) else {
        chan_drops.add(DropReason::UnknownChannel, n);
        return;
    };
    let dest_channel = match admit(reg, policy, frame_channel, q) {
        Ok(c) => c,
        Err(reason) => {
            dest.counters.add_drop(reason, n);
            chan_drops.add(reason, n);
            return;
        }
    };
    let mut drops = Drops::default();
    let (mut out_frames, mut out_bytes) = (0u64, 0u64);
    match dest.handle.rx().ring() {
        None => drops.add(DropReason::NoRxBuffer, n),
        Some(ring) => {
            let done = ring.with_writer(|w| {
                for &(_, i) in group {
                    let f = batch.frame(usize::from(i));
                    match w.deliver(f) {
                        Ok(()) => {
                            out_frames += 1;
                            out_bytes += f.len() as u64;
                        }
                        Err(RxDrop::NoBuffer) => drops.add(DropReason::NoRxBuffer, 1),
                        Err(RxDrop::BadDescriptor) => drops.add(DropReason::BadDescriptor, 1),
                        Err(RxDrop::Oversize) => drops.add(DropReason::Oversize, 1),
                    }
                }
            });
            if done.is_none() {
                ring.count_not_running(n);
                drops.add(DropReason::NoRxBuffer, n);
            }
        }
    }
    dest.counters.add_out(out_frames, out_bytes);
    dest.counters.add_drops(&drops);
    core.channel_counters(dest_channel)
        .add_out(out_frames, out_bytes);
    for r in DropReason::ALL {
        chan_drops.add(r, drops.get(r));
    }
}
