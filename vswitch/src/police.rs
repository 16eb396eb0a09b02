//! Per-VM ingress policing (`rate=MBIT[,burst=KB]`, `pps=N` on a port): a token bucket applied
//! once per batch on the VM's transmit side, like OVS's `ingress_policing_rate`. Frames beyond
//! the rate are dropped and counted (`policed`); the guest's TX ring is still drained, so a
//! limited VM never stalls and never holds the datapath thread.
//!
//! Credit is kept in picoseconds of line time: a frame of `len` bytes costs `len × ps/byte`
//! (and, with `pps=`, one frame costs `ps/frame`), time adds credit up to the burst. A frame
//! passes while the credit is positive and may leave it negative (a debt paid back by time), so
//! a frame larger than the whole burst (a 64 KiB offloaded segment) is delayed, never refused
//! for ever, and the long-run rate still holds.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Instant;

/// Largest `rate=` accepted, Mbit/s (1 Tbit/s).
pub const MAX_RATE_MBIT: u64 = 1_000_000;
/// Largest `pps=` accepted.
pub const MAX_PPS: u64 = 1_000_000_000;
/// Largest `burst=` accepted, KB (1 GB).
pub const MAX_BURST_KB: u64 = 1_000_000;
/// The default burst: this much time at the rate (and at least [`MIN_DEFAULT_BURST`] bytes).
const DEFAULT_BURST_PS: u64 = 10_000_000_000; // 10 ms
/// Smallest default burst, bytes: one jumbo frame with room.
const MIN_DEFAULT_BURST: u64 = 16 * 1024;
const PS_PER_S: u64 = 1_000_000_000_000;

/// A port's limits as configured (user units). All `None`: not limited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RateLimit {
    /// Bits per second, in Mbit/s (10^6).
    pub rate_mbit: Option<u32>,
    /// Bucket depth for `rate_mbit`, KB (10^3 bytes); `None`: 10 ms at the rate, at least 16 KiB.
    pub burst_kb: Option<u32>,
    /// Frames per second.
    pub pps: Option<u32>,
}

impl RateLimit {
    /// True when nothing is limited.
    pub fn is_unlimited(&self) -> bool {
        self.rate_mbit.is_none() && self.pps.is_none()
    }
}

/// One bucket: what a unit costs, how deep it is, what is left.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    /// Cost of one unit (a byte, or a frame), picoseconds.
    cost_ps: u64,
    /// Most credit kept, picoseconds.
    depth_ps: i64,
    /// Credit now (negative: a debt), picoseconds.
    credit_ps: i64,
}

impl Bucket {
    fn new(cost_ps: u64, depth_units: u64) -> Bucket {
        let depth = cost_ps.saturating_mul(depth_units).min(i64::MAX as u64 / 2) as i64;
        Bucket {
            cost_ps,
            depth_ps: depth,
            credit_ps: depth,
        }
    }

    fn refill(&mut self, elapsed_ps: i64) {
        self.credit_ps = self.credit_ps.saturating_add(elapsed_ps).min(self.depth_ps);
    }

    fn take(&mut self, units: u64) {
        let cost = self.cost_ps.saturating_mul(units).min(i64::MAX as u64 / 2) as i64;
        self.credit_ps = self.credit_ps.saturating_sub(cost);
    }
}

#[derive(Debug)]
struct State {
    bytes: Option<Bucket>,
    frames: Option<Bucket>,
    last: Instant,
}

/// A port's policer: disabled (one relaxed load per batch) unless a limit is set.
#[derive(Debug)]
pub struct Policer {
    on: AtomicBool,
    state: Mutex<State>,
}

impl Default for Policer {
    fn default() -> Self {
        Policer::new(&RateLimit::default())
    }
}

impl Policer {
    /// A policer enforcing `limit` (full buckets).
    pub fn new(limit: &RateLimit) -> Policer {
        let p = Policer {
            on: AtomicBool::new(false),
            state: Mutex::new(State {
                bytes: None,
                frames: None,
                last: Instant::now(),
            }),
        };
        p.set(limit);
        p
    }

    /// Replaces the limits (control plane), with full buckets.
    pub fn set(&self, limit: &RateLimit) {
        let bytes = limit.rate_mbit.filter(|r| *r > 0).map(|mbit| {
            let bytes_per_s = u64::from(mbit) * 125_000;
            let cost = (PS_PER_S / bytes_per_s).max(1);
            let depth = match limit.burst_kb {
                Some(kb) => u64::from(kb).max(1) * 1000,
                None => (DEFAULT_BURST_PS / cost).max(MIN_DEFAULT_BURST),
            };
            Bucket::new(cost, depth)
        });
        let frames = limit.pps.filter(|p| *p > 0).map(|pps| {
            let cost = (PS_PER_S / u64::from(pps)).max(1);
            Bucket::new(cost, (DEFAULT_BURST_PS / cost).max(1))
        });
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        st.bytes = bytes;
        st.frames = frames;
        st.last = Instant::now();
        self.on
            .store(st.bytes.is_some() || st.frames.is_some(), Ordering::Release);
    }

    /// How many of a batch's `n` frames pass (a prefix: the rest are dropped, order kept);
    /// `len(i)` is frame `i`'s length in bytes. Takes the policer's lock once, only when a
    /// limit is set.
    #[inline]
    pub fn admit(&self, n: usize, len: impl Fn(usize) -> usize) -> usize {
        if !self.on.load(Ordering::Relaxed) {
            return n;
        }
        self.admit_limited(n, len)
    }

    #[cold]
    fn admit_limited(&self, n: usize, len: impl Fn(usize) -> usize) -> usize {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let elapsed = now.saturating_duration_since(st.last);
        st.last = now;
        let elapsed_ps = i64::try_from(elapsed.as_nanos().saturating_mul(1000)).unwrap_or(i64::MAX);
        let State { bytes, frames, .. } = &mut *st;
        for b in [bytes.as_mut(), frames.as_mut()].into_iter().flatten() {
            b.refill(elapsed_ps);
        }
        let mut passed = 0;
        while passed < n {
            let has_credit = |b: &Option<Bucket>| b.is_none_or(|b| b.credit_ps > 0);
            if !(has_credit(bytes) && has_credit(frames)) {
                break;
            }
            if let Some(b) = bytes.as_mut() {
                b.take(len(passed) as u64);
            }
            if let Some(b) = frames.as_mut() {
                b.take(1);
            }
            passed += 1;
        }
        passed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn unlimited_passes_everything() {
        let p = Policer::default();
        assert_eq!(p.admit(256, |_| 1500), 256);
    }

    #[test]
    fn a_burst_passes_then_the_rate_holds() {
        // 8 Mbit/s = 1 MB/s, burst 10 KB: 10 frames of 1000 B at once, then ~1 per ms.
        let p = Policer::new(&RateLimit {
            rate_mbit: Some(8),
            burst_kb: Some(10),
            pps: None,
        });
        assert_eq!(p.admit(100, |_| 1000), 10);
        // The bucket is empty (at most the microseconds since the last call refilled it).
        assert!(p.admit(100, |_| 1000) <= 1);
        std::thread::sleep(Duration::from_millis(50));
        let n = p.admit(100, |_| 1000);
        assert!((10..=11).contains(&n), "50 ms refill the 10 KB bucket: {n}");
    }

    #[test]
    fn a_frame_larger_than_the_burst_is_delayed_not_refused() {
        let p = Policer::new(&RateLimit {
            rate_mbit: Some(800),
            burst_kb: Some(1),
            pps: None,
        });
        assert_eq!(p.admit(1, |_| 65_000), 1, "passes on a positive credit");
        assert_eq!(p.admit(1, |_| 65_000), 0, "then the debt is paid back");
        std::thread::sleep(Duration::from_millis(2));
        assert_eq!(p.admit(1, |_| 65_000), 1);
    }

    #[test]
    fn pps_limits_frames_whatever_their_size() {
        let p = Policer::new(&RateLimit {
            rate_mbit: None,
            burst_kb: None,
            pps: Some(1000),
        });
        // 10 ms of credit at 1000 pps: 10 frames.
        assert_eq!(p.admit(100, |_| 64), 10);
        p.set(&RateLimit::default());
        assert_eq!(p.admit(100, |_| 64), 100, "limits removed at run time");
    }
}
