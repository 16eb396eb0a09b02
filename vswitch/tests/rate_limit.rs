//! Per-VM rate limits (`rate=`, `pps=`, `set-rate`) with in-process guests over real
//! vhost-user sockets: a limited VM sending flat out is held to its rate, measured over
//! seconds at the receiver, while a neighbour served by the same switch is not slowed.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use vswitch::police::RateLimit;
use vswitch::{PortSpec, Switch, SwitchSettings};
use vswitch_channels::{MacAddr, Policy};
use vswitch_testguest::TestGuest;

const FRAME: usize = 1000;
const LIMIT_MBIT: u32 = 20;

/// vm1 (limited) → vm2 on channel 100; vm3 → vm4 on channel 200, unlimited.
fn net() -> Net {
    let _ = env_logger::builder().is_test(true).try_init();
    let dir = tempfile::tempdir().expect("tempdir");
    let sw = Switch::new(SwitchSettings::default(), Policy::default());
    for (name, channel, last) in [
        ("vm1", 100, 1),
        ("vm2", 100, 2),
        ("vm3", 200, 3),
        ("vm4", 200, 4),
    ] {
        let mut spec = PortSpec::new(name, dir.path().join(format!("{name}.sock")), ch(channel));
        spec.mac = Some(MacAddr::new(mac(last)));
        if name == "vm1" {
            spec.rate = RateLimit {
                rate_mbit: Some(LIMIT_MBIT),
                ..RateLimit::default()
            };
        }
        sw.add_port(spec).expect("add port");
    }
    Net { dir, sw }
}

/// A guest sending `FRAME`-byte frames to `dst` as fast as its ring allows until `stop`.
fn flood(mut g: TestGuest, dst: [u8; 6], stop: Arc<AtomicBool>) -> thread::JoinHandle<u64> {
    thread::spawn(move || {
        let f = vswitch_testguest::EthFrame::new(dst, g.mac(), 0x88b5, &[7u8; FRAME - 14]).build();
        let batch: Vec<&[u8]> = (0..64).map(|_| &f[..]).collect();
        let idle = g.tx_free();
        let mut sent = 0u64;
        while !stop.load(Ordering::Relaxed) {
            g.reclaim_tx();
            match g.send_batch(&batch) {
                Ok(0) | Err(_) => thread::sleep(Duration::from_micros(200)),
                Ok(n) => sent += n as u64,
            }
        }
        // Stay connected until the switch has taken every frame sent (switched or policed):
        // dropping the guest earlier would leave frames in its ring that nobody counts.
        wait_for(
            || {
                g.reclaim_tx();
                g.tx_free() == idle
            },
            "the switch took every frame left in the sender's ring",
        );
        sent
    })
}

/// A guest counting received bytes into `bytes` until `stop`.
fn sink(mut g: TestGuest, bytes: Arc<AtomicU64>, stop: Arc<AtomicBool>) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            let (_, b) = g.rx_drain_count();
            if b == 0 {
                thread::sleep(Duration::from_micros(200));
            }
            bytes.fetch_add(b, Ordering::Relaxed);
        }
    })
}

/// Frames the switch admitted from `port` (switched, not policed) so far.
fn admitted(sw: &Switch, port: &str) -> u64 {
    sw.stats().port(port).expect("port").switch.in_frames
}

/// Mbit/s of `FRAME`-byte frames the switch admitted from `port` over `window`, after a
/// settling time. Measured at the policer, not at a receiving guest: a sink thread starved by
/// a loaded machine lets its ring fill and loses frames that the policer did let through.
fn admitted_mbit(sw: &Switch, port: &str, window: Duration) -> f64 {
    thread::sleep(Duration::from_millis(300));
    let (f0, t0) = (admitted(sw, port), Instant::now());
    thread::sleep(window);
    let f1 = admitted(sw, port);
    (f1 - f0) as f64 * (FRAME * 8) as f64 / t0.elapsed().as_secs_f64() / 1e6
}

/// Mbit/s arriving in `bytes` over `window`, after a settling time.
fn rate_mbit(bytes: &AtomicU64, window: Duration) -> f64 {
    thread::sleep(Duration::from_millis(300));
    let (b0, t0) = (bytes.load(Ordering::Relaxed), Instant::now());
    thread::sleep(window);
    let b1 = bytes.load(Ordering::Relaxed);
    (b1 - b0) as f64 * 8.0 / t0.elapsed().as_secs_f64() / 1e6
}

#[test]
fn a_limited_vm_is_held_to_its_rate_and_its_neighbour_is_not_slowed() {
    let net = net();
    let [g1, g2, g3, g4] = [1u8, 2, 3, 4].map(|i| {
        let mut g = net.guest(&format!("vm{i}"), mac(i));
        g.post_rx(512).expect("post rx");
        g
    });
    let stop = Arc::new(AtomicBool::new(false));
    let (to2, to4) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let sinks = [
        sink(g2, Arc::clone(&to2), Arc::clone(&stop)),
        sink(g4, Arc::clone(&to4), Arc::clone(&stop)),
    ];
    // The neighbour alone, then beside the limited VM sending flat out.
    let s3 = flood(g3, mac(4), Arc::clone(&stop));
    let alone = rate_mbit(&to4, Duration::from_secs(1));
    let s1 = flood(g1, mac(2), Arc::clone(&stop));
    thread::sleep(Duration::from_millis(200));
    let (t0, f1, b4) = (
        Instant::now(),
        admitted(&net.sw, "vm1"),
        to4.load(Ordering::Relaxed),
    );
    thread::sleep(Duration::from_secs(3));
    let secs = t0.elapsed().as_secs_f64();
    let limited = (admitted(&net.sw, "vm1") - f1) as f64 * (FRAME * 8) as f64 / secs / 1e6;
    let beside = (to4.load(Ordering::Relaxed) - b4) as f64 * 8.0 / secs / 1e6;
    eprintln!(
        "limit {LIMIT_MBIT} Mbit/s: vm1→vm2 {limited:.2} Mbit/s; neighbour vm3→vm4 alone \
         {alone:.0} Mbit/s, beside it {beside:.0} Mbit/s"
    );
    let want = f64::from(LIMIT_MBIT);
    assert!(
        (limited - want).abs() <= want * 0.1,
        "vm1 held to {LIMIT_MBIT} Mbit/s within 10 %: {limited:.2}"
    );
    assert!(
        beside >= 0.5 * alone && beside >= 5.0 * want,
        "the neighbour is not slowed: {beside:.0} beside, {alone:.0} alone"
    );

    // Raised at run time: the new rate holds; removed: vm1 goes well past it.
    net.sw
        .set_rate(
            "vm1",
            RateLimit {
                rate_mbit: Some(2 * LIMIT_MBIT),
                ..RateLimit::default()
            },
        )
        .expect("set rate");
    let raised = admitted_mbit(&net.sw, "vm1", Duration::from_secs(2));
    eprintln!("raised to {} Mbit/s: {raised:.2}", 2 * LIMIT_MBIT);
    assert!(
        (raised - 2.0 * want).abs() <= 2.0 * want * 0.1,
        "vm1 held to the new rate within 10 %: {raised:.2}"
    );
    net.sw
        .set_rate("vm1", RateLimit::default())
        .expect("remove rate");
    let free = admitted_mbit(&net.sw, "vm1", Duration::from_secs(1));
    eprintln!("limit removed: {free:.0} Mbit/s");
    assert!(free > 4.0 * want, "unlimited again: {free:.0}");

    stop.store(true, Ordering::Relaxed);
    let sent1 = s1.join().expect("vm1 sender");
    s3.join().expect("vm3 sender");
    for s in sinks {
        s.join().expect("sink");
    }
    let st = net.sw.stats();
    let p1 = st.port("vm1").expect("vm1");
    assert!(p1.switch.drops.policed > 0, "excess counted as policed");
    wait_for(
        || {
            let p = net.sw.stats();
            let p = p.port("vm1").expect("vm1");
            p.switch.in_frames + p.switch.drops.policed == sent1
        },
        "every frame vm1 sent is either switched or policed",
    );
    assert_eq!(st.port("vm3").expect("vm3").switch.drops.policed, 0);
    assert_eq!(
        st.channel(100).expect("100").counters.drops.policed,
        p1.switch.drops.policed
    );
}

#[test]
fn a_frame_rate_limit_holds_and_the_port_keys_parse() {
    let spec = vswitch::config::port_from_spec("vm1,socket=/tmp/x.sock,channel=100,pps=2000")
        .expect("pps= parses");
    assert_eq!(spec.rate.pps, Some(2000));
    for bad in ["rate=0", "rate=x", "pps=0", "burst=64", "rate=2000000"] {
        let text = format!("vm1,socket=/tmp/x.sock,channel=100,{bad}");
        assert!(
            vswitch::config::port_from_spec(&text).is_err(),
            "{bad} is refused"
        );
    }
    let net = net();
    net.sw
        .set_rate(
            "vm3",
            RateLimit {
                pps: Some(2000),
                ..RateLimit::default()
            },
        )
        .expect("set pps");
    let g3 = net.guest("vm3", mac(3));
    let mut g4 = net.guest("vm4", mac(4));
    g4.post_rx(512).expect("post rx");
    let stop = Arc::new(AtomicBool::new(false));
    let to4 = Arc::new(AtomicU64::new(0));
    let k = sink(g4, Arc::clone(&to4), Arc::clone(&stop));
    let s = flood(g3, mac(4), Arc::clone(&stop));
    let mbit = admitted_mbit(&net.sw, "vm3", Duration::from_secs(2));
    let delivered = rate_mbit(&to4, Duration::from_millis(200));
    stop.store(true, Ordering::Relaxed);
    assert!(delivered > 0.0, "frames admitted under pps= reach vm4");
    s.join().expect("sender");
    k.join().expect("sink");
    let pps = mbit * 1e6 / 8.0 / FRAME as f64;
    eprintln!("pps=2000: {pps:.0} frames/s");
    assert!(
        (pps - 2000.0).abs() <= 200.0,
        "held to 2000 frames/s within 10 %: {pps:.0}"
    );
    assert!(net.sw.set_rate("nope", RateLimit::default()).is_err());
}
