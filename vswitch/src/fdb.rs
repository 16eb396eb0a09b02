//! The forwarding database: (channel, MAC) → port, learned from traffic, aged, limited per port;
//! plus one static entry per port configured with `mac=` (never aged, never evicted, never moved
//! by a frame from another port: such a frame is a spoof).
//!
//! Every datapath thread looks up and learns concurrently, so the table is lock-free: a
//! fixed array of 8-slot buckets whose slots are pairs of atomic words (key, value). Lookups are
//! plain atomic loads; learning a known MAC on the same port writes nothing until its timestamp
//! is a second old. A bucket that fills up evicts its oldest entry. Races between writers can
//! at worst lose or misplace a learned entry for a moment; that can misroute a frame, never
//! leak it, because every delivery is checked against the destination's registry entry
//! independently of this table (docs/architecture.md, invariant 3).

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Instant;

use vswitch_channels::{ChannelId, MacAddr, PortId};

const SLOTS: usize = 8;
const EMPTY: u64 = 0;
/// Set in every stored key so that no valid key equals EMPTY.
const KEY_VALID: u64 = 1 << 63;
/// Ports the per-port MAC counts are kept for (port ids are dense and small).
pub const MAX_PORTS: usize = 1 << 16;

/// An FDB key: channel and MAC packed in one word.
#[inline]
fn key(channel: ChannelId, mac: &[u8; 6]) -> u64 {
    KEY_VALID | (u64::from(channel.get()) << 48) | mac48(mac)
}

/// A MAC as the low 48 bits of a word, first octet highest (two loads and a shift).
#[inline]
pub fn mac48(mac: &[u8; 6]) -> u64 {
    let hi = u32::from_be_bytes([mac[0], mac[1], mac[2], mac[3]]);
    let lo = u16::from_be_bytes([mac[4], mac[5]]);
    (u64::from(hi) << 16) | u64::from(lo)
}

#[inline]
fn value(port: PortId, now: u32) -> u64 {
    (u64::from(now) << 32) | u64::from(port.get() & 0x00ff_ffff)
}

/// Set in the value of a static entry (above the 24 port bits, below the timestamp).
const STATIC: u64 = 1 << 31;

#[inline]
fn is_static(v: u64) -> bool {
    v & STATIC != 0
}

#[inline]
fn val_port(v: u64) -> PortId {
    PortId::new((v & 0x00ff_ffff) as u32)
}

#[inline]
fn val_time(v: u64) -> u32 {
    (v >> 32) as u32
}

/// One bucket: two cache lines (keys, then values), aligned so that they form one 128-byte
/// block (the unit the adjacent-line prefetcher of x86 cores fetches together).
#[repr(align(128))]
#[derive(Default)]
struct Bucket {
    keys: [AtomicU64; SLOTS],
    vals: [AtomicU64; SLOTS],
}

/// A lookup prepared ahead of its probe: the key and bucket of one (channel, MAC). The
/// forwarder computes these for a group of frames, prefetches every bucket, then probes
/// ([`Fdb::probe`], [`Fdb::prefetch`], [`Fdb::lookup_probe`]), so that the cache misses of a
/// large table overlap instead of being paid one after the other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Probe {
    key: u64,
    bucket: usize,
}

impl Probe {
    /// Whether its MAC is a group (multicast or broadcast) address.
    #[inline]
    pub fn is_multicast(&self) -> bool {
        self.key & (1 << 40) != 0
    }

    /// The MAC it looks up.
    #[inline]
    pub fn mac(&self) -> [u8; 6] {
        let b = self.key.to_be_bytes();
        [b[2], b[3], b[4], b[5], b[6], b[7]]
    }
}

/// Hints the CPU to bring the cache line at `p` into all cache levels. Never faults.
#[inline(always)]
fn prefetch_line<T>(p: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: PREFETCHT0 is a hint: it never faults and has no architectural effect, whatever
    // the address; SSE (which provides it) is part of the x86_64 baseline.
    unsafe {
        core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>(p.cast::<i8>());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// The result of learning a source address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Learn {
    /// Already known on this port (maybe refreshed).
    Known,
    /// New entry (or moved from another port).
    Learned,
    /// The port already has its limit of MACs: not learned, the frame should be dropped.
    LimitReached,
    /// The MAC is another port's configured address: the frame is a spoof and is dropped.
    Claimed,
}

/// One entry, for listing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FdbEntry {
    /// Channel the MAC was learned in.
    pub channel: ChannelId,
    /// The MAC.
    pub mac: MacAddr,
    /// Port it was learned on.
    pub port: PortId,
    /// Seconds since it was last seen (0 for a static entry).
    pub age_s: u32,
    /// A port's configured MAC: never aged, never moved by traffic.
    pub is_static: bool,
}

/// The forwarding database.
pub struct Fdb {
    buckets: Box<[Bucket]>,
    mask: usize,
    aging_s: u32,
    epoch: Instant,
    per_port: Box<[AtomicU32]>,
}

impl Fdb {
    /// A table of at least `capacity` entries (rounded up to a power of two of buckets) whose
    /// entries expire after `aging_s` seconds without traffic.
    pub fn new(capacity: usize, aging_s: u32) -> Fdb {
        let nb = (capacity.max(SLOTS) / SLOTS).next_power_of_two();
        let buckets: Vec<Bucket> = (0..nb).map(|_| Bucket::default()).collect();
        let per_port: Vec<AtomicU32> = (0..MAX_PORTS).map(|_| AtomicU32::new(0)).collect();
        Fdb {
            buckets: buckets.into_boxed_slice(),
            mask: nb - 1,
            aging_s: aging_s.max(1),
            epoch: Instant::now(),
            per_port: per_port.into_boxed_slice(),
        }
    }

    /// The current time in the table's clock (seconds since creation, starting at 1 so that a
    /// zero timestamp means "not yet written").
    pub fn now(&self) -> u32 {
        self.epoch.elapsed().as_secs() as u32 + 1
    }

    #[inline]
    fn bucket_index(&self, k: u64) -> usize {
        let h = k.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        (h >> 32) as usize & self.mask
    }

    #[inline]
    fn bucket(&self, k: u64) -> &Bucket {
        &self.buckets[self.bucket_index(k)]
    }

    #[inline]
    fn fresh(&self, v: u64, now: u32) -> bool {
        let t = val_time(v);
        is_static(v) || (t != 0 && now.saturating_sub(t) <= self.aging_s)
    }

    /// Where `mac` was last seen in `channel`, if it has not aged out.
    #[inline]
    pub fn lookup(&self, channel: ChannelId, mac: &[u8; 6], now: u32) -> Option<PortId> {
        self.lookup_probe(&self.probe(channel, mac), now)
    }

    /// Prepares a lookup of `mac` in `channel` (hash and bucket; touches no table memory).
    #[inline]
    pub fn probe(&self, channel: ChannelId, mac: &[u8; 6]) -> Probe {
        self.probe48(channel, mac48(mac))
    }

    /// [`Fdb::probe`] of a MAC given as [`mac48`].
    #[inline]
    pub fn probe48(&self, channel: ChannelId, mac: u64) -> Probe {
        let key = KEY_VALID | (u64::from(channel.get()) << 48) | (mac & 0xffff_ffff_ffff);
        Probe {
            key,
            bucket: self.bucket_index(key),
        }
    }

    /// Starts loading the bucket of `p` into the cache (both of its lines); no other effect.
    #[inline]
    pub fn prefetch(&self, p: &Probe) {
        if let Some(b) = self.buckets.get(p.bucket) {
            prefetch_line(&b.keys);
            prefetch_line(&b.vals);
        }
    }

    /// [`Fdb::lookup`] of a prepared probe (made by this table).
    #[inline]
    pub fn lookup_probe(&self, p: &Probe, now: u32) -> Option<PortId> {
        let b = self.buckets.get(p.bucket)?;
        for i in 0..SLOTS {
            if b.keys[i].load(Ordering::Acquire) == p.key {
                let v = b.vals[i].load(Ordering::Acquire);
                return self.fresh(v, now).then(|| val_port(v));
            }
        }
        None
    }

    /// Learns that `mac` in `channel` is behind `port`, unless that port is at `limit`.
    /// A port's count includes its aged entries until [`Fdb::expire`] sweeps them.
    #[inline]
    pub fn learn(
        &self,
        channel: ChannelId,
        mac: &[u8; 6],
        port: PortId,
        limit: u32,
        now: u32,
    ) -> Learn {
        let k = key(channel, mac);
        let b = self.bucket(k);
        for i in 0..SLOTS {
            if b.keys[i].load(Ordering::Acquire) != k {
                continue;
            }
            let v = b.vals[i].load(Ordering::Acquire);
            if is_static(v) {
                return match val_port(v) == port {
                    true => Learn::Known,
                    false => Learn::Claimed,
                };
            }
            if val_port(v) == port {
                let fresh = self.fresh(v, now);
                if val_time(v) != now {
                    b.vals[i].store(value(port, now), Ordering::Release);
                }
                return if fresh { Learn::Known } else { Learn::Learned };
            }
            // Moved from another port: counts as new for this one.
            if self.count(port) >= limit {
                return Learn::LimitReached;
            }
            self.dec(val_port(v));
            self.inc(port);
            b.vals[i].store(value(port, now), Ordering::Release);
            return Learn::Learned;
        }
        if self.count(port) >= limit {
            return Learn::LimitReached;
        }
        match self.take_slot(b, k, value(port, now)) {
            true => Learn::Learned,
            // Lost a race for the slot (or every slot is static): the frame still goes; the
            // MAC is learned next time.
            false => Learn::Known,
        }
    }

    /// Puts `(k, v)` into an empty slot of `b`, else the oldest learned one (an expired entry
    /// is older than every live one); never a static entry. False when every slot is static
    /// or another writer took the slot first.
    fn take_slot(&self, b: &Bucket, k: u64, v: u64) -> bool {
        let mut victim = None;
        let mut oldest = u32::MAX;
        for i in 0..SLOTS {
            let cur = b.keys[i].load(Ordering::Acquire);
            if cur == EMPTY {
                if b.keys[i]
                    .compare_exchange(EMPTY, k, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
                {
                    b.vals[i].store(v, Ordering::Release);
                    self.inc(val_port(v));
                    return true;
                }
                continue;
            }
            let old = b.vals[i].load(Ordering::Acquire);
            if !is_static(old) && val_time(old) <= oldest {
                oldest = val_time(old);
                victim = Some(i);
            }
        }
        let Some(victim) = victim else {
            return false;
        };
        let cur = b.keys[victim].load(Ordering::Acquire);
        let old = b.vals[victim].load(Ordering::Acquire);
        if is_static(old)
            || b.keys[victim]
                .compare_exchange(cur, k, Ordering::AcqRel, Ordering::Acquire)
                .is_err()
        {
            return false;
        }
        if cur != EMPTY {
            self.dec(val_port(old));
        }
        b.vals[victim].store(v, Ordering::Release);
        self.inc(val_port(v));
        true
    }

    /// Makes `mac` in `channel` a static entry of `port` (the port's configured address):
    /// replaces whatever was learned for it. Control plane only (called under the switch's
    /// port lock, so two static writers never race). False when its bucket holds only other
    /// static entries (the MAC is then learned from traffic like any other).
    pub fn add_static(&self, channel: ChannelId, mac: &[u8; 6], port: PortId) -> bool {
        let k = key(channel, mac);
        let v = STATIC | u64::from(port.get() & 0x00ff_ffff);
        let b = self.bucket(k);
        for i in 0..SLOTS {
            if b.keys[i].load(Ordering::Acquire) == k {
                let old = b.vals[i].swap(v, Ordering::AcqRel);
                self.dec(val_port(old));
                self.inc(port);
                return true;
            }
        }
        self.take_slot(b, k, v)
    }

    /// MACs currently counted against `port`.
    pub fn count(&self, port: PortId) -> u32 {
        self.per_port
            .get(port.index())
            .map_or(0, |c| c.load(Ordering::Relaxed))
    }

    fn inc(&self, port: PortId) {
        if let Some(c) = self.per_port.get(port.index()) {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn dec(&self, port: PortId) {
        if let Some(c) = self.per_port.get(port.index()) {
            let _ = c.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
                Some(v.saturating_sub(1))
            });
        }
    }

    fn remove_where(&self, mut pred: impl FnMut(u64, u64) -> bool) -> usize {
        let mut removed = 0;
        for b in self.buckets.iter() {
            for i in 0..SLOTS {
                let k = b.keys[i].load(Ordering::Acquire);
                if k == EMPTY {
                    continue;
                }
                let v = b.vals[i].load(Ordering::Acquire);
                if !pred(k, v) {
                    continue;
                }
                if b.keys[i]
                    .compare_exchange(k, EMPTY, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
                {
                    b.vals[i].store(0, Ordering::Release);
                    self.dec(val_port(v));
                    removed += 1;
                }
            }
        }
        removed
    }

    /// Forgets every entry that has aged out; returns how many.
    pub fn expire(&self) -> usize {
        let now = self.now();
        let aging = self.aging_s;
        self.remove_where(|_, v| !is_static(v) && now.saturating_sub(val_time(v)) > aging)
    }

    /// Forgets every entry learned on `port` (port removed, or moved to another channel).
    pub fn flush_port(&self, port: PortId) -> usize {
        self.remove_where(|_, v| val_port(v) == port)
    }

    /// Forgets everything.
    pub fn flush(&self) -> usize {
        self.remove_where(|_, _| true)
    }

    /// Lists live entries (control plane; allocates).
    pub fn entries(&self) -> Vec<FdbEntry> {
        let now = self.now();
        let mut out = Vec::new();
        for b in self.buckets.iter() {
            for i in 0..SLOTS {
                let k = b.keys[i].load(Ordering::Acquire);
                let v = b.vals[i].load(Ordering::Acquire);
                if k == EMPTY || !self.fresh(v, now) {
                    continue;
                }
                let Ok(channel) = ChannelId::new(((k >> 48) & 0x0fff) as u16) else {
                    continue;
                };
                let m = k & 0xffff_ffff_ffff;
                let mut mac = [0u8; 6];
                for (j, byte) in mac.iter_mut().enumerate() {
                    *byte = (m >> (8 * (5 - j))) as u8;
                }
                out.push(FdbEntry {
                    channel,
                    mac: MacAddr::new(mac),
                    port: val_port(v),
                    age_s: match is_static(v) {
                        true => 0,
                        false => now.saturating_sub(val_time(v)),
                    },
                    is_static: is_static(v),
                });
            }
        }
        out.sort_by_key(|e| (e.channel, e.mac.to_u64()));
        out
    }
}

#[cfg(test)]
mod tests;
