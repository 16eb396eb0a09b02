//! Finding 5 of issue 11: a guest on a MAC-locked port flips the source MAC in its TX buffer
//! between the switch's check and its copy. What is delivered must be what was checked: the
//! channel-mate never receives a frame whose source is not the locked MAC.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::{eth, mac, vm, Net, BCAST};
use vswitch_testguest::{RawDesc, DESC_F_NEXT};

/// Frames the attacker sends (each one a race against the flipper).
const FRAMES: u64 = 20_000;

/// Every this many rounds the flipper holds the locked MAC while one round is sent and taken,
/// so some frames certainly carry the locked source: the check must let those through (the
/// test is not satisfied by a switch that drops everything). Racing alone does not guarantee
/// it: on two loaded cores the flipper can be descheduled holding the forged MAC for the
/// whole run.
const CALM_EVERY: u64 = 8;

#[test]
fn a_source_mac_flipped_during_forwarding_never_reaches_the_channel_mate() {
    let locked = mac(1);
    let forged = [0x52, 0x54, 0x00, 0x66, 0x66, 0x66];
    let net = Net::new(&[vm("locked", 100, Some(locked)), vm("mate", 100, None)]);
    let mut attacker = net.guest("locked", locked);
    let mut mate = net.guest("mate", mac(2));

    // One header and one frame buffer, named by every chain the attacker sends: flipping the
    // frame's source MAC affects whatever the switch has taken and not yet delivered.
    let hdr = attacker.alloc(12).expect("header buffer");
    let frame = attacker.alloc(64).expect("frame buffer");
    attacker
        .write_mem(frame, &eth(BCAST, locked, 7))
        .expect("frame");
    let src_at = vswitch_testguest::GuestAddress(frame.0 + 6);

    let stop = Arc::new(AtomicBool::new(false));
    // `calm` asks the flipper to hold the locked MAC; `held` is its answer that it does.
    let calm = Arc::new(AtomicBool::new(false));
    let held = Arc::new(AtomicBool::new(false));
    let poker = attacker.mem_poker();
    let flipper = {
        let (stop, calm, held) = (stop.clone(), calm.clone(), held.clone());
        thread::spawn(move || {
            let mut flips = 0u64;
            while !stop.load(Ordering::Relaxed) {
                if calm.load(Ordering::Acquire) {
                    assert!(
                        poker.write(src_at, &locked),
                        "source MAC inside guest memory"
                    );
                    held.store(true, Ordering::Release);
                    while calm.load(Ordering::Acquire) && !stop.load(Ordering::Relaxed) {
                        thread::yield_now();
                    }
                    held.store(false, Ordering::Release);
                    continue;
                }
                let m = if flips.is_multiple_of(2) {
                    forged
                } else {
                    locked
                };
                assert!(poker.write(src_at, &m), "source MAC inside guest memory");
                flips += 1;
            }
            flips
        })
    };

    let chain = [
        RawDesc::new(hdr.0, 12, DESC_F_NEXT),
        RawDesc::new(frame.0, 64, 0),
    ];
    let (mut sent, mut received, mut forged_seen) = (0u64, 0u64, 0u64);
    let deadline = Instant::now() + Duration::from_secs(120);
    let check = |f: Vec<u8>, received: &mut u64, forged_seen: &mut u64| {
        *received += 1;
        if f.get(6..12) != Some(&locked[..]) {
            *forged_seen += 1;
        }
    };
    let ring_free = attacker.tx_free();
    // Reclaims until every chain sent so far is taken back (bounded by the deadline).
    let drain = |attacker: &mut vswitch_testguest::TestGuest| {
        while attacker.tx_free() < ring_free && Instant::now() < deadline {
            attacker.wait_tx_used(1, Duration::from_millis(50));
        }
    };
    let mut rounds = 0u64;
    while sent < FRAMES && Instant::now() < deadline {
        rounds += 1;
        let calm_round = rounds.is_multiple_of(CALM_EVERY);
        if calm_round {
            drain(&mut attacker);
            calm.store(true, Ordering::Release);
            while !held.load(Ordering::Acquire) && Instant::now() < deadline {
                thread::yield_now();
            }
        }
        attacker.reclaim_tx();
        let room = attacker.tx_free() / 2;
        for _ in 0..room.min(64) {
            attacker.send_raw_chain(&chain).expect("send");
            sent += 1;
        }
        if calm_round {
            drain(&mut attacker);
            calm.store(false, Ordering::Release);
        }
        while let Some(f) = mate.recv(Duration::from_millis(0)) {
            check(f, &mut received, &mut forged_seen);
        }
        if room == 0 {
            attacker.wait_tx_used(1, Duration::from_millis(50));
        }
    }
    stop.store(true, Ordering::Relaxed);
    let flips = flipper.join().expect("flipper");
    for f in mate.recv_all(Duration::from_millis(300)) {
        check(f, &mut received, &mut forged_seen);
    }

    let st = net.sw.stats();
    let spoofed = st.port("locked").expect("locked").switch.drops.source_spoof;
    eprintln!(
        "sent {sent}, flips {flips}, delivered {received}, forged delivered {forged_seen}, \
         dropped as spoofed {spoofed}"
    );
    assert!(
        sent >= FRAMES,
        "the attacker sent everything in time ({sent})"
    );
    assert!(flips > 1000, "the flipper ran ({flips} flips)");
    assert!(
        received > 0,
        "some frames with the locked source went through"
    );
    assert_eq!(
        forged_seen, 0,
        "{forged_seen} frames with a forged source reached the channel-mate"
    );
}
