//! The forwarding database: (channel, MAC) → port, learned from traffic, aged, limited per port.
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
    /// Seconds since it was last seen.
    pub age_s: u32,
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
        t != 0 && now.saturating_sub(t) <= self.aging_s
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
        // Take an empty slot, else an expired one, else the oldest.
        let mut victim = 0usize;
        let mut oldest = u32::MAX;
        for i in 0..SLOTS {
            let cur = b.keys[i].load(Ordering::Acquire);
            if cur == EMPTY {
                if b.keys[i]
                    .compare_exchange(EMPTY, k, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
                {
                    b.vals[i].store(value(port, now), Ordering::Release);
                    self.inc(port);
                    return Learn::Learned;
                }
                continue;
            }
            let t = val_time(b.vals[i].load(Ordering::Acquire));
            if t < oldest {
                oldest = t;
                victim = i;
            }
        }
        let cur = b.keys[victim].load(Ordering::Acquire);
        let old = b.vals[victim].load(Ordering::Acquire);
        if b.keys[victim]
            .compare_exchange(cur, k, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            if cur != EMPTY {
                self.dec(val_port(old));
            }
            b.vals[victim].store(value(port, now), Ordering::Release);
            self.inc(port);
            return Learn::Learned;
        }
        // Lost a race for the slot: the frame still goes; the MAC is learned next time.
        Learn::Known
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
        self.remove_where(|_, v| now.saturating_sub(val_time(v)) > aging)
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
                    age_s: now.saturating_sub(val_time(v)),
                });
            }
        }
        out.sort_by_key(|e| (e.channel, e.mac.to_u64()));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ch(n: u16) -> ChannelId {
        ChannelId::new(n).expect("valid test channel")
    }

    fn mac(i: u32) -> [u8; 6] {
        let b = i.to_be_bytes();
        [0x52, 0x54, b[0], b[1], b[2], b[3]]
    }

    #[test]
    fn learn_then_lookup_is_per_channel() {
        let f = Fdb::new(1024, 300);
        let now = f.now();
        assert_eq!(
            f.learn(ch(100), &mac(1), PortId(3), 10, now),
            Learn::Learned
        );
        assert_eq!(f.lookup(ch(100), &mac(1), now), Some(PortId(3)));
        assert_eq!(f.lookup(ch(200), &mac(1), now), None);
        assert_eq!(f.learn(ch(100), &mac(1), PortId(3), 10, now), Learn::Known);
        assert_eq!(f.count(PortId(3)), 1);
    }

    #[test]
    fn move_between_ports_updates_counts() {
        let f = Fdb::new(1024, 300);
        let now = f.now();
        f.learn(ch(1), &mac(1), PortId(1), 10, now);
        assert_eq!(f.learn(ch(1), &mac(1), PortId(2), 10, now), Learn::Learned);
        assert_eq!(f.lookup(ch(1), &mac(1), now), Some(PortId(2)));
        assert_eq!(f.count(PortId(1)), 0);
        assert_eq!(f.count(PortId(2)), 1);
    }

    #[test]
    fn limit_refuses_new_macs_but_keeps_known() {
        let f = Fdb::new(4096, 300);
        let now = f.now();
        for i in 0..5 {
            assert_eq!(f.learn(ch(1), &mac(i), PortId(1), 5, now), Learn::Learned);
        }
        assert_eq!(
            f.learn(ch(1), &mac(99), PortId(1), 5, now),
            Learn::LimitReached
        );
        assert_eq!(f.learn(ch(1), &mac(0), PortId(1), 5, now), Learn::Known);
        assert_eq!(f.lookup(ch(1), &mac(99), now), None);
    }

    #[test]
    fn aging_hides_and_expire_removes() {
        let f = Fdb::new(1024, 10);
        f.learn(ch(1), &mac(1), PortId(1), 10, 1);
        assert_eq!(f.lookup(ch(1), &mac(1), 5), Some(PortId(1)));
        assert_eq!(f.lookup(ch(1), &mac(1), 20), None);
        assert_eq!(f.expire(), 0, "clock has not advanced in real time");
    }

    #[test]
    fn flush_port_and_entries() {
        let f = Fdb::new(1024, 300);
        let now = f.now();
        f.learn(ch(1), &mac(1), PortId(1), 10, now);
        f.learn(ch(2), &mac(2), PortId(2), 10, now);
        assert_eq!(f.entries().len(), 2);
        assert_eq!(f.flush_port(PortId(1)), 1);
        let e = f.entries();
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].port, PortId(2));
        assert_eq!(e[0].mac, MacAddr::new(mac(2)));
        assert_eq!(f.count(PortId(1)), 0);
    }

    #[test]
    fn full_bucket_evicts_and_stays_consistent() {
        let f = Fdb::new(8, 300); // one bucket
        let now = f.now();
        for i in 0..100 {
            f.learn(ch(1), &mac(i), PortId(1), 1000, now);
        }
        assert!(f.entries().len() <= 8);
        assert_eq!(f.count(PortId(1)) as usize, f.entries().len());
        assert_eq!(f.lookup(ch(1), &mac(99), now), Some(PortId(1)));
    }

    #[test]
    fn prepared_probe_matches_lookup() {
        let f = Fdb::new(1024, 300);
        let now = f.now();
        f.learn(ch(5), &mac(1), PortId(4), 10, now);
        for m in [mac(1), mac(2), [0xff; 6], [0x01, 0x00, 0x5e, 0, 0, 1]] {
            let p = f.probe(ch(5), &m);
            assert_eq!(p.mac(), m);
            assert_eq!(p.is_multicast(), MacAddr::new(m).is_multicast());
            f.prefetch(&p);
            assert_eq!(f.lookup_probe(&p, now), f.lookup(ch(5), &m, now));
        }
        assert_eq!(
            f.lookup_probe(&f.probe(ch(5), &mac(1)), now),
            Some(PortId(4))
        );
    }

    #[test]
    fn ten_thousand_macs_fit() {
        let f = Fdb::new(1 << 17, 300);
        let now = f.now();
        for i in 0..10_000 {
            f.learn(ch(7), &mac(i), PortId(i % 50), 100_000, now);
        }
        let found = (0..10_000)
            .filter(|&i| f.lookup(ch(7), &mac(i), now) == Some(PortId(i % 50)))
            .count();
        assert_eq!(found, 10_000);
    }
}
