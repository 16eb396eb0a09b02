//! The physical limit: the same frames copied buffer to buffer by one thread on the forwarder
//! CPU, from a ring of TX-sized slots into a ring of RX buffers as large as a sink's RX ring
//! (a 12-byte virtio-net header written in front of each), with no rings, no checks, no
//! notifications.

use std::hint::black_box;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};

use crate::frames::{build_frame, BUF_SIZE};
use crate::generator::Measurement;
use crate::peers::Cost;
use crate::scenario::mac;
use crate::sys;

/// Copies `frame_len`-byte frames for `warmup + duration` on `cpu` and measures the window.
pub fn run(
    frame_len: usize,
    queue_size: u16,
    cpu: usize,
    warmup: Duration,
    duration: Duration,
) -> Result<Measurement> {
    std::thread::Builder::new()
        .name("bench-memcpy".into())
        .spawn(move || {
            sys::pin_current_thread(cpu)?;
            let (mut m, load) =
                sys::foreign_load(&[], || copy_loop(frame_len, queue_size, warmup, duration));
            m.other_load = load;
            Ok(m)
        })?
        .join()
        .map_err(|_| anyhow!("the memcpy thread panicked"))?
}

fn copy_loop(
    frame_len: usize,
    queue_size: u16,
    warmup: Duration,
    duration: Duration,
) -> Measurement {
    let n = usize::from(queue_size);
    let slot = BUF_SIZE as usize;
    let frame = build_frame(mac(0, 1), mac(0, 0), frame_len);
    // The generator reuses a few hot TX slots (its free list is LIFO); the sink's RX buffers
    // are consumed in ring order, so the destination walks the whole ring.
    let tx_slots = 64usize;
    let mut src = vec![0u8; tx_slots * slot];
    for i in 0..tx_slots {
        src[i * slot..i * slot + frame_len].copy_from_slice(&frame);
    }
    let mut dst = vec![0u8; n * slot];
    let hdr = [0u8; 12];
    let mut i = 0usize;
    let mut copied = 0u64;
    let start = Instant::now();
    let mut t0 = None;
    let mut c0 = 0u64;
    let mut cpu0 = 0u64;
    let end = loop {
        for _ in 0..1024 {
            let s = (i % tx_slots) * slot;
            let d = (i % n) * slot;
            dst[d..d + 12].copy_from_slice(&hdr);
            dst[d + 12..d + 12 + frame_len].copy_from_slice(&src[s..s + frame_len]);
            black_box(&mut dst[d]);
            i += 1;
        }
        copied += 1024;
        let el = start.elapsed();
        if t0.is_none() && el >= warmup {
            t0 = Some(Instant::now());
            c0 = copied;
            cpu0 = sys::self_thread_cpu_ns();
        }
        if el >= warmup + duration {
            break Instant::now();
        }
    };
    let t0 = t0.unwrap_or(start);
    let secs = (end - t0).as_secs_f64().max(1e-9);
    let cpu = sys::self_thread_cpu_ns().saturating_sub(cpu0) as f64;
    let pkts = copied - c0;
    let pps = pkts as f64 / secs;
    Measurement {
        secs,
        rx_frames: pkts,
        tx_frames: pkts,
        mpps: pps / 1e6,
        offered_mpps: pps / 1e6,
        gbps: pps * frame_len as f64 * 8.0 / 1e9,
        ns_per_pkt: 1e9 / pps.max(1e-9),
        drops: 0,
        sent_total: copied,
        written_off: 0,
        traffic_cpu_share: 0.0,
        idle_loop_share: 0.0,
        frames_per_batch: 0.0,
        device_errors: 0,
        other_load: 0.0,
        runs: Vec::new(),
        cost: Cost {
            ns_per_pkt: Some(cpu / pkts.max(1) as f64),
            cycles_per_pkt: None,
            busy_share: Some(cpu / (secs * 1e9)),
            source: "thread CPU time of the copy loop".into(),
            notes: Vec::new(),
            counted: None,
        },
        frontend: None,
    }
}
