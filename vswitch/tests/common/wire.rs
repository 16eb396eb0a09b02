//! An in-memory uplink transport for the seam between the switch and its uplinks: frames a
//! switch sends on the uplink are recorded with their channel (what a real transport would
//! put on the wire: an 802.1ad S-VID, a VNI) and handed to the other end, if any; frames
//! injected into an end are received by its switch with the channel given.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, OnceLock, Weak};

use vmm_sys_util::eventfd::EventFd;
use vswitch::port::{Outgoing, Received, SendResult, Uplink};
use vswitch_channels::ChannelId;
use vswitch_vhost::{FrameBatch, HostFrames, NetHdr};

/// Most frames one `receive` hands over (a batch).
const BATCH: usize = 256;

/// One end of the wire.
#[derive(Default)]
pub struct WireEnd {
    inbox: Mutex<VecDeque<(ChannelId, Vec<u8>)>>,
    sent: Mutex<Vec<(ChannelId, Vec<u8>)>>,
    doorbell: Mutex<Option<Arc<EventFd>>>,
    peer: OnceLock<Weak<WireEnd>>,
}

impl WireEnd {
    /// Two ends joined: what one sends, the other receives.
    pub fn pair() -> (Arc<WireEnd>, Arc<WireEnd>) {
        let (a, b) = (Arc::new(WireEnd::default()), Arc::new(WireEnd::default()));
        let _ = a.peer.set(Arc::downgrade(&b));
        let _ = b.peer.set(Arc::downgrade(&a));
        (a, b)
    }

    /// An end with nothing at the other side.
    pub fn open() -> Arc<WireEnd> {
        Arc::new(WireEnd::default())
    }

    /// A frame arriving from the wire with `channel`.
    pub fn inject(&self, channel: ChannelId, frame: Vec<u8>) {
        lock(&self.inbox).push_back((channel, frame));
        if let Some(d) = lock(&self.doorbell).as_ref() {
            let _ = d.write(1);
        }
    }

    /// Everything the switch sent on this end so far, with the channel of each frame.
    pub fn sent(&self) -> Vec<(ChannelId, Vec<u8>)> {
        lock(&self.sent).clone()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Uplink for WireEnd {
    fn receive(&self, each: &mut dyn FnMut(&FrameBatch<'_>, &[ChannelId])) -> Received {
        let frames: Vec<(ChannelId, Vec<u8>)> = {
            let mut inbox = lock(&self.inbox);
            let n = inbox.len().min(BATCH);
            inbox.drain(..n).collect()
        };
        if frames.is_empty() {
            return Received::default();
        }
        let mut batch = HostFrames::with_capacity(frames.len());
        let mut stamps = Vec::with_capacity(frames.len());
        for (c, f) in &frames {
            if batch.push(f, NetHdr::default()).is_ok() {
                stamps.push(*c);
            }
        }
        each(&batch.batch(), &stamps);
        Received {
            active: true,
            ..Received::default()
        }
    }

    fn send(&self, frames: &Outgoing<'_, '_>) -> SendResult {
        let mut r = SendResult::default();
        for (f, c) in frames.iter() {
            let mut buf = vec![0u8; f.len()];
            f.copy_to(&mut buf);
            r.sent += 1;
            r.bytes += buf.len() as u64;
            lock(&self.sent).push((c, buf.clone()));
            if let Some(peer) = self.peer.get().and_then(Weak::upgrade) {
                peer.inject(c, buf);
            }
        }
        r
    }

    fn set_doorbell(&self, doorbell: Option<Arc<EventFd>>) {
        *lock(&self.doorbell) = doorbell;
    }
}
