//! The capture's writer thread: empties the full slots into the pcap file every few
//! milliseconds, off the datapath, and closes the file when the capture stops or has its count.

use std::collections::VecDeque;
use std::fs::File;
use std::io::BufWriter;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use pcap_file::pcap::{PcapPacket, PcapWriter};

use super::pool::Slot;
use super::{CaptureError, Tap};

/// How often the writer empties the slots: at 1 Mpps this many milliseconds of frames must fit
/// the pool (about 16 MiB).
const PERIOD: Duration = Duration::from_millis(5);

/// Frames written and bytes written, when the capture ends.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Written {
    pub(super) frames: u64,
}

/// Runs until the tap is stopped (or finished) and every captured frame is in the file.
pub(super) fn run(
    tap: Arc<Tap>,
    mut out: PcapWriter<BufWriter<File>>,
) -> Result<Written, CaptureError> {
    let mut written = Written::default();
    // Swapped with the pool's queue of full slots: both can hold every slot, so neither grows.
    let mut batch: VecDeque<Slot> = VecDeque::with_capacity(tap.pool.capacity());
    loop {
        // Read the flag before taking the slots: frames the datapath queued before the stop
        // are in this round.
        let ending = tap.stop.load(Ordering::Acquire) || tap.finished();
        {
            let mut slots = tap.pool.lock();
            std::mem::swap(&mut slots.full, &mut batch);
        }
        let mut result = Ok(());
        for slot in &batch {
            if result.is_ok() {
                let p = PcapPacket::new(slot.ts, slot.orig_len, &slot.data[..slot.len]);
                result = out.write_packet(&p).map(|_| ());
                written.frames += 1;
            }
        }
        {
            let mut slots = tap.pool.lock();
            slots.free.extend(batch.drain(..));
        }
        if let Err(e) = result {
            tap.halt();
            return Err(CaptureError::Write(e.to_string()));
        }
        if ending {
            break;
        }
        thread::sleep(PERIOD);
    }
    let mut file = out.into_writer();
    std::io::Write::flush(&mut file).map_err(|e| CaptureError::Write(e.to_string()))?;
    Ok(written)
}
