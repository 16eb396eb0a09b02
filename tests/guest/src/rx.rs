//! The RX virtqueue (queue 0): one device-writable descriptor per buffer, buffer `i` at a fixed
//! address behind descriptor `i`; receive with mergeable-buffer reassembly, and an
//! allocation-free drain for benchmarks that reposts the same descriptors by writing avail
//! entries only.

use crate::error::GuestError;
use crate::features::NET_HDR_V1_LEN;
use crate::memory::GuestMem;
use crate::vring::{DriverQueue, RingView, DESC_F_WRITE};

/// Outcome of one receive attempt.
pub(crate) enum RxPoll {
    /// A complete frame (without the virtio-net header).
    Frame(Vec<u8>),
    /// Nothing (complete) is available.
    Empty,
    /// Something malformed was consumed; try again.
    Skipped,
}

pub(crate) struct RxQueue {
    pub(crate) q: DriverQueue,
    buf_base: u64,
    buf_size: u32,
    hdr_len: usize,
    mrg: bool,
    /// Buffers still to consume of a merged frame whose first buffer was already counted.
    merge_left: u16,
    pub(crate) last_hdr: Option<[u8; 12]>,
    pub(crate) device_errors: u64,
    /// Descriptors the drain took back, to re-arm (one entry per descriptor at most).
    repost: Box<[u16]>,
    /// Whether descriptor `i` can be trusted to still describe buffer `i` when reposted (false
    /// once the table was written directly: then every repost rewrites it).
    fixed_desc: bool,
}

impl RxQueue {
    pub(crate) fn new(
        q: DriverQueue,
        buf_base: u64,
        buf_size: u32,
        hdr_len: usize,
        mrg: bool,
    ) -> Self {
        RxQueue {
            buf_base,
            buf_size,
            hdr_len,
            mrg,
            merge_left: 0,
            last_hdr: None,
            device_errors: 0,
            repost: vec![0; usize::from(q.ring.size)].into_boxed_slice(),
            fixed_desc: true,
            q,
        }
    }

    /// The descriptor table was written directly: rewrite descriptors on every repost.
    pub(crate) fn forbid_fixed(&mut self) {
        self.fixed_desc = false;
    }

    /// Guest physical address of buffer `i`.
    pub(crate) fn buf_addr(&self, i: u16) -> u64 {
        self.buf(i)
    }

    #[inline]
    fn buf(&self, i: u16) -> u64 {
        self.buf_base + u64::from(i) * u64::from(self.buf_size)
    }

    /// Posted buffers not yet returned.
    pub(crate) fn posted(&self) -> usize {
        usize::from(self.q.ring.size) - self.q.free_count()
    }

    /// Posts up to `n` buffers without publishing.
    #[inline]
    fn push_in(&mut self, v: &RingView<'_>, n: usize) -> Result<usize, GuestError> {
        let mut done = 0;
        while done < n {
            let Some(d) = self.q.alloc() else { break };
            v.write_desc(d, self.buf(d), self.buf_size, DESC_F_WRITE, 0)?;
            self.q.mark_head(d, 1);
            self.q.push_avail_in(v, d);
            done += 1;
        }
        Ok(done)
    }

    /// Posts up to `n` buffers, publishes them and kicks if the device asks for it.
    pub(crate) fn post(&mut self, mem: &GuestMem, n: usize) -> Result<usize, GuestError> {
        let v = self.q.view(mem)?;
        self.post_in(&v, n)
    }

    /// [`Self::post`] with the ring already resolved.
    #[inline]
    fn post_in(&mut self, v: &RingView<'_>, n: usize) -> Result<usize, GuestError> {
        let done = self.push_in(v, n)?;
        if done > 0 {
            self.q.publish_in(v);
            self.q.notify_in(v)?;
        }
        Ok(done)
    }

    /// Checks a used element; returns the usable length, or `None` if the id is bogus.
    #[inline]
    fn check(&mut self, id: u32, len: u32) -> Option<u32> {
        let ok = u16::try_from(id).is_ok_and(|i| i < self.q.ring.size && !self.q.is_free(i));
        if !ok {
            self.bad_id(id);
            return None;
        }
        if len > self.buf_size {
            return Some(self.bad_len(len));
        }
        Some(len)
    }

    #[cold]
    fn bad_id(&mut self, id: u32) {
        self.device_errors += 1;
        log::error!("RX used id {id} is not a posted buffer");
    }

    #[cold]
    fn bad_len(&mut self, len: u32) -> u32 {
        self.device_errors += 1;
        log::error!("RX used len {len} exceeds buffer size {}", self.buf_size);
        self.buf_size
    }

    /// Takes the next complete frame, if any, and reposts the buffers it used.
    pub(crate) fn try_recv(&mut self, mem: &GuestMem) -> Result<RxPoll, GuestError> {
        let pending = self.q.used_pending(mem)?;
        if pending == 0 {
            return Ok(RxPoll::Empty);
        }
        let (id, len) = self.q.peek_used(mem, 0)?;
        let Some(len) = self.check(id, len) else {
            self.q.complete(id);
            self.q.consume_used(mem, 1)?;
            return Ok(RxPoll::Skipped);
        };
        if self.merge_left > 0 {
            // Tail of a frame whose head a drain already counted: discard.
            self.merge_left -= 1;
            self.finish(mem, &[id], 1)?;
            return Ok(RxPoll::Skipped);
        }
        if (len as usize) < self.hdr_len {
            self.device_errors += 1;
            log::error!("RX used len {len} shorter than the virtio-net header");
            self.finish(mem, &[id], 1)?;
            return Ok(RxPoll::Skipped);
        }
        let mut hdr = [0u8; NET_HDR_V1_LEN];
        mem.read(self.buf(id as u16), &mut hdr[..self.hdr_len])?;
        let mut nb = if self.mrg {
            u16::from_le_bytes([hdr[10], hdr[11]])
        } else {
            1
        };
        if nb == 0 {
            self.device_errors += 1;
            log::error!("RX header has num_buffers 0");
            nb = 1;
        }
        if pending < nb {
            return Ok(RxPoll::Empty);
        }
        self.last_hdr = Some(hdr);
        let mut frame =
            Vec::with_capacity(len as usize + usize::from(nb - 1) * self.buf_size as usize);
        for k in 0..nb {
            let (id, len) = self.q.peek_used(mem, k)?;
            let Some(len) = self.check(id, len) else {
                self.q.complete(id);
                continue;
            };
            let start = if k == 0 { self.hdr_len } else { 0 };
            mem.read_append(
                self.buf(id as u16) + start as u64,
                (len as usize).saturating_sub(start),
                &mut frame,
            )?;
            self.q.complete(id);
        }
        self.q.consume_used(mem, nb)?;
        self.post(mem, usize::from(nb))?;
        Ok(RxPoll::Frame(frame))
    }

    fn finish(&mut self, mem: &GuestMem, ids: &[u32], n: u16) -> Result<(), GuestError> {
        for &id in ids {
            self.q.complete(id);
        }
        self.q.consume_used(mem, n)?;
        self.post(mem, usize::from(n))?;
        Ok(())
    }

    /// Consumes every used element: counts frames and payload bytes (header excluded), reposts
    /// the same buffers with one publish and at most one kick. No allocation.
    pub(crate) fn drain_count(&mut self, mem: &GuestMem) -> Result<(u64, u64), GuestError> {
        // An empty poll resolves only the used index, not the whole ring.
        if self.q.used_pending(mem)? == 0 {
            return Ok((0, 0));
        }
        let v = self.q.view(mem)?;
        let pending = self.q.used_pending_in(&v);
        let (mut frames, mut bytes) = (0u64, 0u64);
        let (hdr_len, buf_size) = (self.hdr_len as u64, self.buf_size);
        let avail = self.q.avail_idx();
        let mut merge_left = self.merge_left;
        let mut n = 0usize;
        for k in 0..pending {
            let (id, len) = self.q.peek_used_in(&v, k);
            // Every posted RX buffer is a one-descriptor head, so "posted" (what `check` tests)
            // is exactly "an in-flight head": validate and take back with one lookup. It stays
            // taken (not free) until re-armed below, so a repeated id is rejected here (and
            // `n` stays below the queue size).
            if n >= self.repost.len() || !self.q.take_head(id, 1) {
                self.bad_id(id);
                self.q.bogus(id);
                continue;
            }
            // `take_head` succeeded, so `id` is below the queue size.
            let d = id as u16;
            let len = if len > buf_size {
                self.bad_len(len)
            } else {
                len
            };
            if merge_left == 0 {
                let nb = if self.mrg {
                    mem.load_u16(self.buf(d) + 10, std::sync::atomic::Ordering::Relaxed)?
                } else {
                    1
                };
                frames += 1;
                bytes += u64::from(len).saturating_sub(hdr_len);
                merge_left = nb.max(1) - 1;
            } else {
                bytes += u64::from(len);
                merge_left -= 1;
            }
            // Repost: descriptor `d` still describes buffer `d` (the device never writes
            // descriptors), so this is one avail entry, published below.
            if !self.fixed_desc {
                v.write_desc(d, self.buf(d), buf_size, DESC_F_WRITE, 0)?;
            }
            self.repost[n] = d;
            v.set_avail_slot(avail.wrapping_add(n as u16), d);
            n += 1;
        }
        self.merge_left = merge_left;
        self.q.consume_used_in(&v, pending);
        if n > 0 {
            for &d in &self.repost[..n] {
                self.q.mark_head(d, 1);
            }
            self.q.advance_avail(n as u16);
            self.q.publish_in(&v);
            self.q.notify_in(&v)?;
        }
        Ok((frames, bytes))
    }
}

#[cfg(test)]
#[path = "rx_tests.rs"]
mod tests;
