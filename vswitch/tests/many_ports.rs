//! Many busy ports at once through the shared datapath threads: every frame reaches exactly
//! its own destination, in order, in both event mode and busy-poll mode.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use vswitch::{PortSpec, Switch, SwitchSettings};
use vswitch_channels::{MacAddr, Policy};
use vswitch_testguest::{GuestConfig, TestGuest};

const PAIRS: u8 = 8;
const ROUNDS: u32 = 20;
const BURST: u32 = 128;

fn run(settings: SwitchSettings) {
    let _ = env_logger::builder().is_test(true).try_init();
    let dir = tempfile::tempdir().expect("tempdir");
    let sw: Arc<Switch> = Switch::new(settings, Policy::default());
    let n = 2 * PAIRS;
    for i in 1..=n {
        let mut spec = PortSpec::new(
            format!("vm{i}"),
            dir.path().join(format!("vm{i}.sock")),
            ch(100),
        );
        spec.mac = Some(MacAddr::new(mac(i)));
        sw.add_port(spec).expect("add port");
    }
    let mut guests: Vec<TestGuest> = (1..=n)
        .map(|i| {
            let cfg = GuestConfig {
                mac: mac(i),
                queue_size: 1024,
                ..GuestConfig::default()
            };
            let mut g = TestGuest::connect(&dir.path().join(format!("vm{i}.sock")), cfg)
                .expect("guest connects");
            let h = sw.port_handle(&format!("vm{i}")).expect("port");
            wait_for(|| h.rx().is_attached(), "rx ring published");
            g.post_rx(1024).expect("post rx");
            g
        })
        .collect();
    // Every sink announces itself, so that the generators' frames are known unicast.
    for p in 0..PAIRS {
        let s = usize::from(2 * p + 1);
        guests[s]
            .send(&eth(BCAST, mac(2 * p + 2), 0))
            .expect("announce");
    }
    for g in guests.iter_mut() {
        let _ = g.recv_all(Duration::from_millis(100));
    }

    let mut slowest = Duration::ZERO;
    for round in 0..ROUNDS {
        for p in 0..PAIRS {
            let (src, dst) = (mac(2 * p + 1), mac(2 * p + 2));
            let frames: Vec<Vec<u8>> = (0..BURST)
                .map(|k| eth(dst, src, round * BURST + k))
                .collect();
            let refs: Vec<&[u8]> = frames.iter().map(Vec::as_slice).collect();
            let g = &mut guests[usize::from(2 * p)];
            let mut sent = 0;
            while sent < refs.len() {
                g.reclaim_tx();
                sent += g.send_batch(&refs[sent..]).expect("send");
            }
        }
        let start = Instant::now();
        for p in 0..PAIRS {
            let sink = &mut guests[usize::from(2 * p + 1)];
            for k in 0..BURST {
                let f = sink
                    .recv(Duration::from_secs(5))
                    .unwrap_or_else(|| panic!("pair {p} round {round}: frame {k} missing"));
                assert_eq!(
                    &f[6..12],
                    &mac(2 * p + 1),
                    "pair {p}: a frame from elsewhere"
                );
                let marker = u32::from_be_bytes([f[14], f[15], f[16], f[17]]);
                assert_eq!(marker, round * BURST + k, "pair {p}: out of order");
            }
            slowest = slowest.max(start.elapsed());
        }
        for g in guests.iter_mut() {
            g.reclaim_tx();
        }
    }
    // Nothing else arrived anywhere (generators receive nothing; sinks nothing extra).
    for (i, g) in guests.iter_mut().enumerate() {
        assert!(
            g.recv_all(Duration::from_millis(100)).is_empty(),
            "vm{} got stray frames",
            i + 1
        );
    }
    let st = sw.stats();
    for p in 0..PAIRS {
        let s = st.port(&format!("vm{}", 2 * p + 2)).expect("sink");
        // Its generator's frames plus the other sinks' announcements.
        let want = u64::from(ROUNDS * BURST) + u64::from(PAIRS - 1);
        assert_eq!(s.switch.out_frames, want);
    }
    // Not a threshold (timings are not tested): printed to show delivery latency per round.
    eprintln!("slowest round delivered within {slowest:?}");
    sw.shutdown();
}

#[test]
fn sixteen_busy_ports_event_mode() {
    run(SwitchSettings::default());
}

#[test]
fn sixteen_busy_ports_two_event_threads() {
    run(SwitchSettings {
        event_threads: 2,
        ..SwitchSettings::default()
    });
}

#[test]
fn sixteen_busy_ports_poll_mode() {
    run(SwitchSettings {
        poll_cores: vec![0],
        ..SwitchSettings::default()
    });
}
