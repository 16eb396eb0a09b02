//! A quick throughput probe for datapath work: two in-process guests through the switch,
//! 64-byte frames, prints Mpps and the switch's CPU time per packet. The full benchmark with
//! baselines is `vswitch-bench` (tests/bench: `cargo run --release -p vswitch-bench`).
//!
//! `cargo run --release -p vswitch --example probe -- [SECONDS] [FRAME_LEN] [poll] [log]`
//!
//! `log`: both guests share a dirty-page log and turn VHOST_F_LOG_ALL on, as QEMU does during
//! a live migration (the cost of logging).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use vswitch::{PortSpec, Switch, SwitchSettings};
use vswitch_channels::{ChannelId, MacAddr, Policy};
use vswitch_testguest::{EthFrame, GuestConfig, TestGuest};

fn pin(cpu: usize) {
    // SAFETY: cpu_set_t is plain data, initialised by CPU_ZERO/CPU_SET before use.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_ZERO(&mut set);
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid timespec for the call.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

fn process_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid timespec for the call.
    unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let secs: f64 = args.first().map_or(Ok(3.0), |s| s.parse())?;
    let len: usize = args.get(1).map_or(Ok(64), |s| s.parse())?;
    let poll = args.iter().any(|a| a == "poll");
    let log = args.iter().any(|a| a == "log");
    let dir = std::env::temp_dir().join(format!("vsw-probe-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    pin(0);
    let mut settings = SwitchSettings::default();
    if poll {
        settings.poll_cores = vec![0];
    }
    let sw = Switch::new(settings, Policy::default());
    let ch = ChannelId::new(100)?;
    let (ma, mb) = ([0x52, 0x54, 0, 0, 0, 1], [0x52, 0x54, 0, 0, 0, 2]);
    for (n, m) in [("a", ma), ("b", mb)] {
        let mut s = PortSpec::new(n, dir.join(format!("{n}.sock")), ch);
        s.mac = Some(MacAddr::new(m));
        sw.add_port(s)?;
    }
    let cfg = |mac| GuestConfig {
        mac,
        queue_size: 4096,
        mem_size: 64 << 20,
        want_protocol_features: vswitch_testguest::features::DEFAULT_PROTOCOL_FEATURES
            | vswitch_testguest::migration::PROTO_LOG_SHMFD,
        ..GuestConfig::default()
    };
    // Logging as during a migration: a log (one bit per 4 KiB page) and LOG_ALL on.
    let start_log = move |g: &mut TestGuest| -> Result<Option<std::fs::File>, String> {
        if !log {
            return Ok(None);
        }
        let len = (64u64 << 20) / 4096 / 8;
        // SAFETY: memfd_create with a valid C string; the descriptor is new and ours.
        let fd = unsafe { libc::memfd_create(c"probe-log".as_ptr(), 0) };
        if fd < 0 {
            return Err("memfd_create failed".into());
        }
        // SAFETY: `fd` is a new descriptor nobody else owns.
        let f = std::fs::File::from(unsafe {
            <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd)
        });
        f.set_len(len).map_err(|e| e.to_string())?;
        g.set_log_base(std::os::fd::AsFd::as_fd(&f), len)
            .map_err(|e| e.to_string())?;
        g.set_log_all(true).map_err(|e| e.to_string())?;
        Ok(Some(f))
    };
    let stop = Arc::new(AtomicBool::new(false));
    let received = Arc::new(AtomicU64::new(0));
    let gen_cpu = Arc::new(AtomicU64::new(0));
    let (dir_b, st, rc, gc) = (dir.clone(), stop.clone(), received.clone(), gen_cpu.clone());
    let sink = std::thread::spawn(move || -> Result<(), String> {
        pin(1);
        let mut g =
            TestGuest::connect(&dir_b.join("b.sock"), cfg(mb)).map_err(|e| e.to_string())?;
        let _log = start_log(&mut g)?;
        g.post_rx(4096).map_err(|e| e.to_string())?;
        let mut k = 0u32;
        let sink_cpu = AtomicU64::new(0);
        let _ = &sink_cpu;
        while !st.load(Ordering::Relaxed) {
            k = k.wrapping_add(1);
            if k.is_multiple_of(64) {
                gc.store(thread_cpu().as_nanos() as u64, Ordering::Relaxed);
            }
            let (n, _) = g.rx_drain_count();
            if n > 0 {
                rc.fetch_add(n, Ordering::Relaxed);
            } else {
                std::thread::yield_now();
            }
        }
        Ok(())
    });
    std::thread::sleep(Duration::from_millis(300));
    let gen_cpu2 = Arc::new(AtomicU64::new(0));
    let (dir_a, st, gc) = (dir.clone(), stop.clone(), gen_cpu2.clone());
    let sent = Arc::new(AtomicU64::new(0));
    let sc = sent.clone();
    let gen = std::thread::spawn(move || -> Result<(), String> {
        pin(1);
        let mut g =
            TestGuest::connect(&dir_a.join("a.sock"), cfg(ma)).map_err(|e| e.to_string())?;
        let _log = start_log(&mut g)?;
        let f = EthFrame::new(mb, ma, 0x88b5, &vec![0u8; len - 14]).build();
        let frames: Vec<&[u8]> = (0..256).map(|_| &f[..]).collect();
        let mut k = 0u32;
        while !st.load(Ordering::Relaxed) {
            k = k.wrapping_add(1);
            if k.is_multiple_of(16) {
                gc.store(thread_cpu().as_nanos() as u64, Ordering::Relaxed);
            }
            g.reclaim_tx();
            let n = g.send_batch(&frames).map_err(|e| e.to_string())?;
            sc.fetch_add(n as u64, Ordering::Relaxed);
            if n == 0 {
                std::thread::yield_now();
            }
        }
        Ok(())
    });
    std::thread::sleep(Duration::from_millis(500));
    let peers = || gen_cpu.load(Ordering::Relaxed) + gen_cpu2.load(Ordering::Relaxed);
    let (r0, c0, t0, p0) = (
        received.load(Ordering::Relaxed),
        process_cpu(),
        Instant::now(),
        peers(),
    );
    std::thread::sleep(Duration::from_secs_f64(secs));
    let (r1, c1, el, p1) = (
        received.load(Ordering::Relaxed),
        process_cpu(),
        t0.elapsed(),
        peers(),
    );
    stop.store(true, Ordering::Relaxed);
    gen.join().map_err(|_| "gen panicked")??;
    sink.join().map_err(|_| "sink panicked")??;
    let pkts = r1 - r0;
    let pps = pkts as f64 / el.as_secs_f64();
    let total_cpu = (c1 - c0).as_nanos() as f64;
    let switch_cpu = total_cpu - (p1 - p0) as f64;
    let st = sw.stats();
    println!(
        "{len}B {}{}: {:.3} Mpps, {:.1} ns/packet wall, switch cpu {:.1} ns/packet, all cpu {:.1} ns/packet, sent {} drops {:?}",
        if poll { "poll" } else { "event" },
        if log { " log" } else { "" },
        pps / 1e6,
        1e9 / pps,
        switch_cpu / pkts as f64,
        total_cpu / pkts as f64,
        sent.load(Ordering::Relaxed),
        st.port("b").map(|p| p.switch.drops)
    );
    sw.shutdown();
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
