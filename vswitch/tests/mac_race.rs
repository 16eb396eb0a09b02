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
    let poker = attacker.mem_poker();
    let flipper = {
        let stop = stop.clone();
        thread::spawn(move || {
            let mut flips = 0u64;
            while !stop.load(Ordering::Relaxed) {
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
    while sent < FRAMES && Instant::now() < deadline {
        attacker.reclaim_tx();
        let room = attacker.tx_free() / 2;
        for _ in 0..room.min(64) {
            attacker.send_raw_chain(&chain).expect("send");
            sent += 1;
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
