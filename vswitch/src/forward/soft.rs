//! Offloads finished in software at delivery: a frame whose virtio-net header asks for work
//! the destination cannot do (a guest that did not negotiate the offload, or an uplink: the
//! wire takes finished frames only) is copied once into this thread's scratch, checked again
//! there (the sender may have rewritten it since the TX drain checked it), and its checksum
//! completed or its segments written ([`vswitch_vhost::offload`]); the destination then takes
//! the finished frames from host memory like any other port's.
//!
//! The buffers are allocated on first use by each datapath thread and reused after: no
//! allocation per packet.

use vswitch_vhost::offload::{
    complete_csum, validate, Offload, OffloadError, MAX_GSO_FRAME, MAX_GSO_SEGMENTS, MAX_HEADERS,
};
use vswitch_vhost::{FrameBatch, FrameRef, HostFrames, NetHdr};

/// Room for every segment of the largest GSO frame: its payload once, its headers once per
/// segment.
const OUT_LEN: usize = MAX_GSO_FRAME + MAX_GSO_SEGMENTS * MAX_HEADERS;

/// One datapath thread's software-offload buffers.
#[derive(Default)]
pub struct SoftOffload {
    /// The frame, copied out of the sender's memory.
    frame: Vec<u8>,
    /// Its segments, end to end.
    out: Vec<u8>,
    /// The finished frames as a batch (storage kept between uses).
    host: Option<HostFrames<'static>>,
    /// `(0, i)` for every segment index: the picks of an uplink's `Outgoing`.
    picks: Vec<(u32, u16)>,
}

impl std::fmt::Debug for SoftOffload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SoftOffload")
            .field("allocated", &!self.frame.is_empty())
            .finish()
    }
}

impl SoftOffload {
    /// Finishes `frame` and hands the finished frames (one, or its segments; all-zero
    /// headers) to `each` as one batch, with `(0, i)` picks for each of them.
    pub fn finish(
        &mut self,
        frame: FrameRef<'_>,
        each: impl FnOnce(&FrameBatch<'_>, &[(u32, u16)]),
    ) -> Result<(), OffloadError> {
        if self.frame.is_empty() {
            self.frame = vec![0; MAX_GSO_FRAME];
            self.out = vec![0; OUT_LEN];
            self.picks = (0..MAX_GSO_SEGMENTS).map(|i| (0, i as u16)).collect();
        }
        let SoftOffload {
            frame: buf,
            out,
            host,
            picks,
        } = self;
        let len = frame.len();
        if len > buf.len() {
            return Err(OffloadError::GsoFrameTooLong(len));
        }
        let copied = frame.copy_to(&mut buf[..len]);
        let buf = &mut buf[..copied];
        let mut hf = host
            .take()
            .unwrap_or_else(|| HostFrames::with_capacity(MAX_GSO_SEGMENTS))
            .recycle();
        let r = match validate(buf, len, &frame.net_hdr()) {
            Err(e) => Err(e),
            Ok(Offload::None) => {
                push(&mut hf, buf);
                Ok(())
            }
            Ok(Offload::Csum { start, offset }) => {
                complete_csum(buf, start, offset).map(|()| push(&mut hf, buf))
            }
            Ok(Offload::Gso(layout)) => {
                // Every segment but the last is `stride` long: segment i starts at i * stride.
                let stride = layout.payload + layout.gso_size;
                let n = layout.segments();
                let mut r = Ok(());
                for i in 0..n {
                    if let Err(e) = layout.write_segment(buf, i, &mut out[i * stride..]) {
                        r = Err(e);
                        break;
                    }
                }
                if r.is_ok() {
                    for i in 0..n {
                        let at = i * stride;
                        push(&mut hf, &out[at..at + layout.segment_len(i)]);
                    }
                }
                r
            }
        };
        if r.is_ok() {
            each(&hf.batch(), &picks[..hf.len()]);
        }
        *host = Some(hf.recycle());
        r
    }
}

/// Adds a finished frame (at least an Ethernet header long: it is a copy of a frame the TX
/// drain accepted, or a segment with all its headers).
fn push<'a>(hf: &mut HostFrames<'a>, frame: &'a [u8]) {
    if let Err(e) = hf.push(frame, NetHdr::default()) {
        log::debug!("software offload produced no frame: {e}");
    }
}
