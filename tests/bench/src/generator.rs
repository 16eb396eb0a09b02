//! The traffic engine: in-process vhost-user guests (real frontends over real sockets, memfd
//! memory) driven by threads pinned to the generator CPU. A generator loops "reclaim TX, fill
//! every free slot, one kick"; a sink loops "drain and repost RX". One warm-up, one
//! measurement window, then a drain so that drops = sent - received exactly.

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use serde::Serialize;
use vswitch_testguest::TestGuest;

use crate::frames::{guest_config, Load};
use crate::frontends::FrontendReport;
use crate::peers::{Cost, Forwarder, Window};
use crate::scenario::Topology;
use crate::sys;

const RUN: u8 = 0;
const DRAIN: u8 = 1;
const STOP: u8 = 2;
/// A generator whose sinks receive nothing for this long while none of its frames is left in
/// its TX ring writes the missing frames off as dropped.
const LOSS_TIMEOUT: Duration = Duration::from_millis(50);

/// How traffic runs.
#[derive(Debug, Clone)]
pub struct TrafficOpts {
    /// Ring entries per virtqueue of every guest.
    pub queue_size: u16,
    /// Traffic before the window (not counted).
    pub warmup: Duration,
    /// The measurement window.
    pub duration: Duration,
    /// CPU of the traffic threads.
    pub gen_cpu: usize,
    /// Most frames one generator queues per step (0: as many as fit).
    pub max_batch: usize,
    /// One traffic thread per role group (generators / sinks, or one per guest when both
    /// send) instead of a single thread driving every guest.
    pub split_threads: bool,
}

/// One run of one scenario through one forwarder (`Default`: all zero, for what a kind of
/// run does not measure).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Measurement {
    /// Window length (s).
    pub secs: f64,
    /// Frames received by the sinks in the window.
    pub rx_frames: u64,
    /// Frames queued by the generators in the window.
    pub tx_frames: u64,
    /// Delivered rate (Mpps).
    pub mpps: f64,
    /// Offered rate (Mpps): what the generators queued.
    pub offered_mpps: f64,
    /// Delivered frame bytes (no virtio header, no FCS) in Gbit/s.
    pub gbps: f64,
    /// 1e9 / delivered pps.
    pub ns_per_pkt: f64,
    /// Frames sent and never received, over the whole run (warm-up and drain included), in
    /// received frames (a frame the forwarder segments counts as its segments).
    pub drops: u64,
    /// Frames sent over the whole run.
    pub sent_total: u64,
    /// Frames the generators wrote off as lost to keep the closed loop going (0 unless the
    /// forwarder dropped).
    pub written_off: u64,
    /// Share of the generator CPU the traffic threads used in the window.
    pub traffic_cpu_share: f64,
    /// Frames per `send_batch` in the window (small batches: more kicks and notifications per
    /// frame on both sides).
    pub frames_per_batch: f64,
    /// Share of traffic-thread loop iterations that found nothing to do.
    pub idle_loop_share: f64,
    /// Malformed used entries the guests saw (a correct forwarder keeps this at 0).
    pub device_errors: u64,
    /// CPU time other processes of the machine used during the window, in CPUs (noise).
    pub other_load: f64,
    /// Every repetition (`--repeat`): Mpps, drops, other load, or the error; this measurement
    /// is the best of them.
    pub runs: Vec<serde_json::Value>,
    /// The forwarder's own cost.
    pub cost: Cost,
    /// Third-party frontends only: what they reported themselves.
    pub frontend: Option<FrontendReport>,
}

impl Measurement {
    /// What "best of N" maximises: Mpps, or Gbit/s for iperf3 (TCP has no frame count).
    pub fn rate(&self) -> f64 {
        match self.frontend {
            Some(FrontendReport::Iperf3 { .. }) => self.gbps,
            _ => self.mpps,
        }
    }
}

/// Counters one traffic thread publishes (it alone writes them).
#[repr(align(64))]
#[derive(Default)]
struct Counters {
    tx: AtomicU64,
    rx_frames: AtomicU64,
    rx_bytes: AtomicU64,
    inflight: AtomicU64,
    loops: AtomicU64,
    idle: AtomicU64,
    lost: AtomicU64,
    batches: AtomicU64,
}

/// Frames each guest has received so far, indexed by guest ordinal (written by its owner).
#[repr(align(64))]
#[derive(Default)]
struct RxCount(AtomicU64);

struct Driven {
    guest: TestGuest,
    frames: Vec<Vec<u8>>,
    /// The virtio-net header of every frame it sends (empty: zeroed).
    hdr: Vec<u8>,
    sink: bool,
    /// This guest's ordinal (its slot in the received-frames array).
    me: usize,
    /// Ordinals of the guests receiving what this one sends.
    dests: Vec<usize>,
}

/// How a traffic thread runs its guests.
#[derive(Debug, Clone, Copy)]
struct LoopOpts {
    queue_size: u16,
    /// Other traffic threads share the CPU: yield when idle.
    share_cpu: bool,
    max_batch: usize,
    /// Frames a sink receives per frame sent (segmentation by the forwarder).
    segments: u64,
    /// Most frames a generator has in flight.
    credit: u64,
}

/// The closed loop: a generator never has more frames in flight (sent and not yet drained by
/// its sinks) than a sink has RX buffers for, so no forwarder ever drops for want of buffers
/// and every peer is measured at its lossless rate.
fn traffic_thread(
    mut guests: Vec<Driven>,
    phase: &AtomicU8,
    c: &Counters,
    received: &[RxCount],
    lo: LoopOpts,
) -> Result<u64> {
    let LoopOpts {
        queue_size,
        share_cpu,
        max_batch,
        segments,
        credit: limit,
    } = lo;
    let burst = usize::from(queue_size) / 2;
    let max_batch = if max_batch == 0 {
        burst
    } else {
        max_batch.min(burst)
    };
    let mut sent = vec![0u64; guests.len()];
    // Frames written off as lost (see below), and when each generator last saw progress.
    let mut lost = vec![0u64; guests.len()];
    let mut progress: Vec<(u64, Instant)> = vec![(0, Instant::now()); guests.len()];
    // Per generator: a window of frame references, as long as a full ring past any start.
    let frames: Vec<Vec<Vec<u8>>> = guests
        .iter_mut()
        .map(|d| std::mem::take(&mut d.frames))
        .collect();
    let refs: Vec<Vec<&[u8]>> = frames
        .iter()
        .map(|fs| {
            let k = fs.len();
            if k == 0 {
                Vec::new()
            } else {
                (0..k + burst).map(|i| fs[i % k].as_slice()).collect()
            }
        })
        .collect();
    let mut pos = vec![0usize; guests.len()];
    let (mut tx, mut rxf, mut rxb, mut loops, mut idle) = (0u64, 0u64, 0u64, 0u64, 0u64);
    let mut batches = 0u64;
    loop {
        let ph = phase.load(Ordering::Relaxed);
        if ph == STOP {
            break;
        }
        let mut did = false;
        let mut inflight = 0u64;
        for (i, d) in guests.iter_mut().enumerate() {
            let r = &refs[i];
            if !r.is_empty() {
                did |= d.guest.reclaim_tx() > 0;
                if ph == RUN {
                    let drained: u64 = d
                        .dests
                        .iter()
                        .map(|&o| received[o].0.load(Ordering::Relaxed))
                        .sum::<u64>()
                        / segments;
                    let now = Instant::now();
                    let mut inflight_i = sent[i].saturating_sub(lost[i] + drained);
                    if drained != progress[i].0 {
                        progress[i] = (drained, now);
                    } else if inflight_i > 0
                        && d.guest.tx_free() == usize::from(queue_size)
                        && now - progress[i].1 > LOSS_TIMEOUT
                    {
                        // The forwarder took every frame and nothing arrives any more: what is
                        // missing was dropped. Without this a forwarder that drops would starve
                        // the closed loop for good.
                        lost[i] += inflight_i;
                        inflight_i = 0;
                        progress[i].1 = now;
                    }
                    let credit = limit.saturating_sub(inflight_i);
                    // HeaderSeparate: two descriptors per frame.
                    let n = (d.guest.tx_free() / 2).min(max_batch).min(credit as usize);
                    if n > 0 {
                        let batch = &r[pos[i]..pos[i] + n];
                        let n_sent = match d.hdr.is_empty() {
                            true => d.guest.send_batch(batch),
                            false => d.guest.send_batch_with_header(&d.hdr, batch),
                        }
                        .map_err(|e| anyhow!("send_batch: {e}"))?;
                        pos[i] = (pos[i] + n_sent) % (r.len() - burst);
                        sent[i] += n_sent as u64;
                        tx += n_sent as u64;
                        batches += 1;
                        did |= n_sent > 0;
                    }
                }
                inflight += (usize::from(queue_size) - d.guest.tx_free()) as u64;
            }
            if d.sink {
                let (f, b) = d.guest.rx_drain_count();
                if f > 0 {
                    rxf += f;
                    rxb += b;
                    received[d.me].0.fetch_add(f, Ordering::Relaxed);
                    did = true;
                }
            }
        }
        loops += 1;
        if !did {
            idle += 1;
        }
        c.tx.store(tx, Ordering::Relaxed);
        c.rx_frames.store(rxf, Ordering::Relaxed);
        c.rx_bytes.store(rxb, Ordering::Relaxed);
        c.inflight.store(inflight, Ordering::Relaxed);
        c.loops.store(loops, Ordering::Relaxed);
        c.idle.store(idle, Ordering::Relaxed);
        c.lost.store(lost.iter().sum(), Ordering::Relaxed);
        c.batches.store(batches, Ordering::Relaxed);
        if !did && share_cpu {
            // Let the other traffic thread on this CPU run.
            thread::yield_now();
        }
    }
    Ok(guests.iter().map(|d| d.guest.device_errors()).sum())
}

#[derive(Clone, Copy, Default)]
struct Snap {
    at: Option<Instant>,
    tx: u64,
    rx_frames: u64,
    rx_bytes: u64,
    loops: u64,
    idle: u64,
    lost: u64,
    batches: u64,
    proc_cpu: u64,
    traffic_cpu: u64,
}

struct Running {
    phase: Arc<AtomicU8>,
    counters: Vec<Arc<Counters>>,
    threads: Vec<JoinHandle<Result<u64>>>,
}

impl Running {
    fn snap(&self) -> Snap {
        let mut s = Snap {
            at: Some(Instant::now()),
            ..Snap::default()
        };
        for c in &self.counters {
            s.tx += c.tx.load(Ordering::Relaxed);
            s.rx_frames += c.rx_frames.load(Ordering::Relaxed);
            s.rx_bytes += c.rx_bytes.load(Ordering::Relaxed);
            s.loops += c.loops.load(Ordering::Relaxed);
            s.idle += c.idle.load(Ordering::Relaxed);
            s.lost += c.lost.load(Ordering::Relaxed);
            s.batches += c.batches.load(Ordering::Relaxed);
        }
        s.traffic_cpu =
            self.threads.iter().map(sys::thread_cpu_ns).sum::<u64>() + sys::self_thread_cpu_ns();
        s.proc_cpu = sys::process_cpu_ns();
        s
    }

    fn check_alive(&self) -> Result<()> {
        if self.threads.iter().any(|t| t.is_finished()) {
            bail!("a traffic thread stopped early (see its error below)");
        }
        Ok(())
    }

    /// Stops generating, waits until every TX ring is reclaimed and the sinks stop receiving
    /// (at most 3 s), then stops and joins the threads.
    fn finish(self) -> Result<(Snap, u64)> {
        self.phase.store(DRAIN, Ordering::Relaxed);
        let deadline = Instant::now() + Duration::from_secs(3);
        let mut last = (u64::MAX, Instant::now());
        while Instant::now() < deadline {
            thread::sleep(Duration::from_millis(20));
            let inflight: u64 = self
                .counters
                .iter()
                .map(|c| c.inflight.load(Ordering::Relaxed))
                .sum();
            let rx: u64 = self
                .counters
                .iter()
                .map(|c| c.rx_frames.load(Ordering::Relaxed))
                .sum();
            if rx != last.0 {
                last = (rx, Instant::now());
            } else if inflight == 0 && last.1.elapsed() > Duration::from_millis(100) {
                break;
            }
        }
        let end = self.snap();
        self.phase.store(STOP, Ordering::Relaxed);
        let mut errors = 0;
        let mut failure = None;
        for t in self.threads {
            match t.join() {
                Ok(Ok(e)) => errors += e,
                Ok(Err(e)) => failure = Some(e),
                Err(_) => failure = Some(anyhow!("a traffic thread panicked")),
            }
        }
        match failure {
            Some(e) => Err(e),
            None => Ok((end, errors)),
        }
    }
}

fn connect_all(
    topo: &Topology,
    fwd: &dyn Forwarder,
    q: u16,
    load: &Load,
) -> Result<Vec<Vec<Driven>>> {
    let socks = fwd.sockets();
    // Guest ordinal of each port (ports without a guest have none).
    let mut ordinal = vec![usize::MAX; topo.ports.len()];
    for (k, r) in topo.threads.iter().flatten().enumerate() {
        ordinal[r.port] = k;
    }
    let mut out = Vec::new();
    for roles in &topo.threads {
        let mut ds = Vec::new();
        for r in roles {
            let p = &topo.ports[r.port];
            let path = socks
                .get(r.port)
                .ok_or_else(|| anyhow!("no socket for port {}", r.port))?;
            let mut guest = TestGuest::connect(path, guest_config(q, p.mac, load, r.sink))
                .map_err(|e| anyhow!("guest {} connecting to {}: {e}", r.port, path.display()))?;
            if r.sink {
                guest
                    .post_rx(usize::from(q))
                    .map_err(|e| anyhow!("post_rx: {e}"))?;
            }
            let dests = r
                .dst_ports
                .iter()
                .map(|&p| match ordinal.get(p) {
                    Some(&o) if o != usize::MAX => Ok(o),
                    _ => Err(anyhow!("port {p} receives traffic but has no guest")),
                })
                .collect::<Result<_>>()?;
            let hdr = match load.header() {
                Some(h) => {
                    let want = load.features(r.sink);
                    if guest.features() & want != want {
                        bail!(
                            "guest {} negotiated {:#x}, not every offload of {want:#x}",
                            r.port,
                            guest.features()
                        );
                    }
                    h[..guest.net_hdr_len()].to_vec()
                }
                None => Vec::new(),
            };
            ds.push(Driven {
                guest,
                frames: Vec::new(),
                hdr,
                sink: r.sink,
                me: ordinal[r.port],
                dests,
            });
        }
        out.push(ds);
    }
    Ok(out)
}

/// Runs `topo` through `fwd` with the frames of `load`.
pub fn run(
    topo: &Topology,
    fwd: &mut dyn Forwarder,
    load: &Load,
    o: &TrafficOpts,
) -> Result<Measurement> {
    let mut groups = connect_all(topo, fwd, o.queue_size, load)?;
    for (roles, ds) in topo.threads.iter().zip(groups.iter_mut()) {
        for (r, d) in roles.iter().zip(ds.iter_mut()) {
            let src = topo.ports[r.port].mac;
            d.frames = r.dst_macs.iter().map(|&dst| load.frame(dst, src)).collect();
        }
    }
    fwd.after_connect(topo).context("preparing the forwarder")?;
    let nguests = topo.threads.iter().map(Vec::len).sum::<usize>();
    let received: Arc<Vec<RxCount>> = Arc::new((0..nguests).map(|_| RxCount::default()).collect());
    let phase = Arc::new(AtomicU8::new(RUN));
    let mut run = Running {
        phase: phase.clone(),
        counters: Vec::new(),
        threads: Vec::new(),
    };
    if !o.split_threads {
        groups = vec![groups.into_iter().flatten().collect()];
    }
    let share_cpu = groups.len() > 1;
    for (i, ds) in groups.into_iter().enumerate() {
        let c = Arc::new(Counters::default());
        run.counters.push(c.clone());
        let (ph, cpu, rx) = (phase.clone(), o.gen_cpu, received.clone());
        let lo = LoopOpts {
            queue_size: o.queue_size,
            share_cpu,
            max_batch: o.max_batch,
            segments: load.segments(),
            credit: (u64::from(o.queue_size) / (load.segments() * load.rx_buffers_per_frame()))
                .max(1),
        };
        let t = thread::Builder::new()
            .name(format!("traffic-{i}"))
            .spawn(move || {
                sys::pin_current_thread(cpu)?;
                traffic_thread(ds, &ph, &c, &rx, lo)
            })
            .context("spawning a traffic thread")?;
        run.threads.push(t);
    }
    let result = measure(&run, fwd, o);
    // Always stop the threads; a failure of the window comes first, then one of the threads.
    let finished = run.finish();
    let (s0, s1, cost, other_load) = result?;
    let (end, device_errors) = finished?;
    let secs = (s1.at.zip(s0.at))
        .map(|(b, a)| (b - a).as_secs_f64())
        .unwrap_or(0.0)
        .max(1e-9);
    let rx = s1.rx_frames - s0.rx_frames;
    let rx_bytes = s1.rx_bytes - s0.rx_bytes;
    // Whole 64 KiB frames, or full segments: anything else is not the offload under test. (The
    // snapshots read frames and bytes one after the other: 1 % slack.)
    let avg = rx_bytes as f64 / rx.max(1) as f64;
    if matches!(load, Load::Tso { .. }) && (avg - load.rx_len() as f64).abs() > avg / 100.0 {
        bail!(
            "the sinks received frames of {avg:.0} bytes on average, expected {} ({load:?})",
            load.rx_len()
        );
    }
    let pps = rx as f64 / secs;
    let loops = (s1.loops - s0.loops).max(1);
    Ok(Measurement {
        secs,
        rx_frames: rx,
        tx_frames: s1.tx - s0.tx,
        mpps: pps / 1e6,
        offered_mpps: (s1.tx - s0.tx) as f64 / secs / 1e6,
        gbps: rx_bytes as f64 * 8.0 / secs / 1e9,
        ns_per_pkt: if pps > 0.0 { 1e9 / pps } else { f64::INFINITY },
        // In received frames: a segmented frame arrives as `segments` frames.
        drops: (end.tx * load.segments()).saturating_sub(end.rx_frames),
        sent_total: end.tx,
        written_off: end.lost,
        traffic_cpu_share: (s1.traffic_cpu - s0.traffic_cpu) as f64 / secs / 1e9,
        idle_loop_share: (s1.idle - s0.idle) as f64 / loops as f64,
        frames_per_batch: (s1.tx - s0.tx) as f64 / (s1.batches - s0.batches).max(1) as f64,
        device_errors,
        other_load,
        runs: Vec::new(),
        cost,
        frontend: None,
    })
}

fn measure(
    run: &Running,
    fwd: &mut dyn Forwarder,
    o: &TrafficOpts,
) -> Result<(Snap, Snap, Cost, f64)> {
    thread::sleep(o.warmup);
    run.check_alive()?;
    fwd.begin_window()?;
    let pids = fwd.pids();
    let ((s0, s1), load) = sys::foreign_load(&pids, || {
        let s0 = run.snap();
        thread::sleep(o.duration);
        (s0, run.snap())
    });
    run.check_alive()?;
    let w = Window {
        secs: (s1.at.zip(s0.at))
            .map(|(b, a)| (b - a).as_secs_f64())
            .unwrap_or(0.0),
        rx_frames: s1.rx_frames - s0.rx_frames,
        process_cpu_ns: s1.proc_cpu - s0.proc_cpu,
        traffic_cpu_ns: s1.traffic_cpu - s0.traffic_cpu,
    };
    let cost = fwd.end_window(&w)?;
    Ok((s0, s1, cost, load))
}
