//! The test guest against a third-party vhost-user backend: DPDK testpmd, one net_vhost port
//! in io-forward mode (port 0 -> port 0), so every frame the guest sends comes back to it.

mod common;

use std::time::Duration;

use common::{frame, Testpmd};
use vswitch_testguest::features::{EVENT_IDX, MRG_RXBUF, VERSION_1};
use vswitch_testguest::{GuestConfig, TestGuest, TxLayout};

const T: Duration = Duration::from_secs(3);

fn connect(pmd: &mut Testpmd, cfg: GuestConfig) -> TestGuest {
    match TestGuest::connect(&pmd.sock, cfg) {
        Ok(g) => g,
        Err(e) => panic!(
            "connect to testpmd failed: {e}\n--- testpmd log ---\n{}",
            pmd.log()
        ),
    }
}

/// Sends `f` and expects it back byte-exact.
fn echo(g: &mut TestGuest, pmd: &Testpmd, f: &[u8], layout: TxLayout) {
    g.send_with_layout(f, layout).unwrap();
    let back = g.recv(T).unwrap_or_else(|| {
        panic!(
            "no echo for a {}-byte frame ({layout:?})\n--- testpmd log ---\n{}",
            f.len(),
            pmd.log()
        )
    });
    assert_eq!(back.len(), f.len(), "length of echoed frame ({layout:?})");
    assert!(
        back == f,
        "echoed frame differs ({layout:?}, {} bytes)",
        f.len()
    );
}

#[test]
fn roundtrip_guest_connects() {
    let mut pmd = Testpmd::start(false);
    let mut g = connect(&mut pmd, GuestConfig::default());
    let want = VERSION_1 | MRG_RXBUF | EVENT_IDX;
    assert_eq!(g.features() & want, want, "features {:#x}", g.features());
    assert_eq!(g.net_hdr_len(), 12);
    assert_eq!(g.post_rx(256).unwrap(), 256);
    let mac = g.mac();
    for (i, len) in [60usize, 64, 128, 1000, 1514].into_iter().enumerate() {
        echo(
            &mut g,
            &pmd,
            &frame(len, i as u32, mac),
            TxLayout::HeaderSeparate,
        );
    }
    assert!(g.wait_tx_used(5, T), "TX chains not returned");
    assert_eq!(g.device_errors(), 0);
}

/// The handshake reaches testpmd in QEMU's order (DPDK logs every message it reads).
#[test]
fn handshake_follows_qemu_order() {
    let mut pmd = Testpmd::start(false);
    let g = connect(&mut pmd, GuestConfig::default());
    assert_ne!(
        g.protocol_features() & vswitch_testguest::features::PROTO_REPLY_ACK,
        0
    );
    assert!(g.queue_num().is_some_and(|n| n >= 1));
    let log = pmd.log();
    let seen: Vec<&str> = log
        .lines()
        .filter_map(|l| l.split("read message VHOST_USER_").nth(1))
        .map(str::trim)
        .collect();
    let mut want = vec![
        "SET_OWNER",
        "GET_FEATURES",
        "GET_PROTOCOL_FEATURES",
        "SET_PROTOCOL_FEATURES",
        "GET_QUEUE_NUM",
        "SET_FEATURES",
        "SET_MEM_TABLE",
    ];
    for _ in 0..2 {
        want.extend([
            "SET_VRING_NUM",
            "SET_VRING_BASE",
            "SET_VRING_ADDR",
            "SET_VRING_KICK",
            "SET_VRING_CALL",
        ]);
    }
    want.extend(["SET_VRING_ENABLE", "SET_VRING_ENABLE"]);
    assert_eq!(seen, want, "\n--- testpmd log ---\n{log}");
}

/// testpmd connects (client=1) to a socket the guest listens on (QEMU server=on).
#[test]
fn roundtrip_guest_listens() {
    let dir = common::TempDir::new("listen");
    let sock = dir.path("guest.sock");
    let path = sock.clone();
    // The guest must be listening before testpmd starts; testpmd retries anyway.
    let guest = std::thread::spawn(move || TestGuest::listen(&path, GuestConfig::default()));
    let pmd = Testpmd::start_at(true, Some(sock));
    let mut g = guest
        .join()
        .unwrap()
        .unwrap_or_else(|e| panic!("listen failed: {e}\n--- testpmd log ---\n{}", pmd.log()));
    g.post_rx(128).unwrap();
    let mac = g.mac();
    for (i, len) in [60usize, 333, 1514].into_iter().enumerate() {
        echo(
            &mut g,
            &pmd,
            &frame(len, i as u32, mac),
            TxLayout::HeaderSeparate,
        );
    }
    assert_eq!(g.device_errors(), 0);
}

/// Small RX buffers: a 1500-byte frame comes back spread over several buffers
/// (num_buffers > 1) and is reassembled byte-exact.
#[test]
fn mergeable_rx_small_buffers() {
    let mut pmd = Testpmd::start(false);
    let cfg = GuestConfig {
        rx_buffer_size: 256,
        ..GuestConfig::default()
    };
    let mut g = connect(&mut pmd, cfg);
    g.post_rx(256).unwrap();
    let mac = g.mac();
    for (i, len) in [1500usize, 244, 245, 1514, 60].into_iter().enumerate() {
        let f = frame(len, i as u32, mac);
        echo(&mut g, &pmd, &f, TxLayout::HeaderSeparate);
        let hdr = g.last_rx_header().unwrap();
        let nb = u16::from_le_bytes([hdr[10], hdr[11]]);
        let expect = (len + 12).div_ceil(256) as u16;
        assert_eq!(
            nb, expect,
            "num_buffers for a {len}-byte frame in 256-byte buffers"
        );
    }
    assert_eq!(g.rx_posted(), 256, "consumed buffers are reposted");
    assert_eq!(g.device_errors(), 0);
}

/// Every TX layout (and header straddling descriptors) is understood by a third-party device.
#[test]
fn all_tx_layouts_roundtrip() {
    let mut pmd = Testpmd::start(false);
    let cfg = GuestConfig {
        tx_buffer_size: 1024,
        ..GuestConfig::default()
    };
    let mut g = connect(&mut pmd, cfg);
    g.post_rx(256).unwrap();
    let mac = g.mac();
    let layouts = [
        TxLayout::HeaderSeparate,
        TxLayout::HeaderInline,
        TxLayout::Split(2),
        TxLayout::Split(7),
        TxLayout::Indirect,
    ];
    let mut seq = 0;
    for layout in layouts {
        for len in [60usize, 1000, 1514] {
            if layout == TxLayout::Indirect && len + 12 > 1024 {
                assert!(g.send_with_layout(&frame(len, 0, mac), layout).is_err());
                continue;
            }
            seq += 1;
            echo(&mut g, &pmd, &frame(len, seq, mac), layout);
        }
    }
    assert!(g.wait_tx_used(seq as usize, T));
    assert_eq!(g.tx_free(), 256, "all TX descriptors returned");
    assert_eq!(g.device_errors(), 0);
}

/// Batches larger than the RX ring wrap ring slots many times, and non-zero initial indices
/// close to 65535 wrap the 16-bit avail/used indices.
#[test]
fn batches_wrap_rings_and_indices() {
    let mut pmd = Testpmd::start(false);
    let cfg = GuestConfig {
        rx_base: 65_000,
        tx_base: 65_400,
        ..GuestConfig::default()
    };
    let mut g = connect(&mut pmd, cfg);
    g.post_rx(256).unwrap();
    let mac = g.mac();
    let mut seq = 0u32;
    for round in 0..12 {
        let frames: Vec<Vec<u8>> = (0..100)
            .map(|i| frame(60 + (i * 13 + round) % 1400, seq + i as u32, mac))
            .collect();
        let refs: Vec<&[u8]> = frames.iter().map(|f| f.as_slice()).collect();
        let mut sent = 0;
        while sent < refs.len() {
            sent += g.send_batch(&refs[sent..]).unwrap();
            if sent < refs.len() {
                g.wait_tx_used(1, T);
            }
        }
        for (i, f) in frames.iter().enumerate() {
            let back = g
                .recv(T)
                .unwrap_or_else(|| panic!("round {round}: frame {i} missing\n{}", pmd.log()));
            assert!(&back == f, "round {round}: frame {i} differs");
        }
        seq += 100;
    }
    // 1200 frames through 256-entry rings starting near 65535: both indices wrapped.
    assert!(g.last_used_idx(vswitch_testguest::RX_QUEUE) < 1000);
    assert!(g.wait_tx_used(0, T));
    assert_eq!(g.device_errors(), 0);
}

/// The allocation-free benchmark sink counts frames and bytes, merged frames as one.
#[test]
fn drain_count_counts_frames_and_bytes() {
    let mut pmd = Testpmd::start(false);
    let cfg = GuestConfig {
        rx_buffer_size: 512,
        ..GuestConfig::default()
    };
    let mut g = connect(&mut pmd, cfg);
    g.post_rx(256).unwrap();
    let mac = g.mac();
    let frames: Vec<Vec<u8>> = (0..64)
        .map(|i| frame(if i % 2 == 0 { 64 } else { 1514 }, i, mac))
        .collect();
    let refs: Vec<&[u8]> = frames.iter().map(|f| f.as_slice()).collect();
    assert_eq!(g.send_batch(&refs).unwrap(), 64);
    let want_bytes: u64 = frames.iter().map(|f| f.len() as u64).sum();
    let (mut n, mut b) = (0, 0);
    let deadline = std::time::Instant::now() + T;
    while n < 64 && std::time::Instant::now() < deadline {
        let (fr, by) = g.rx_drain_count();
        n += fr;
        b += by;
    }
    assert_eq!((n, b), (64, want_bytes));
    assert_eq!(g.rx_posted(), 256);
}

/// With EVENT_IDX the device signals the RX call fd; pinning used_event far away suppresses it.
#[test]
fn event_idx_controls_calls() {
    let mut pmd = Testpmd::start(false);
    let mut g = connect(&mut pmd, GuestConfig::default());
    g.post_rx(256).unwrap();
    let mac = g.mac();
    echo(&mut g, &pmd, &frame(100, 1, mac), TxLayout::HeaderSeparate);
    let calls = g.calls_received(vswitch_testguest::RX_QUEUE);
    assert!(calls >= 1, "device signalled RX at least once");
    // Ask for a call only when the used index passes last_used + 1000.
    let far = g
        .last_used_idx(vswitch_testguest::RX_QUEUE)
        .wrapping_add(1000);
    g.set_rx_used_event(far).unwrap();
    let before = g.calls_received(vswitch_testguest::RX_QUEUE);
    for i in 0..5 {
        echo(
            &mut g,
            &pmd,
            &frame(100, 10 + i, mac),
            TxLayout::HeaderSeparate,
        );
    }
    assert_eq!(
        g.calls_received(vswitch_testguest::RX_QUEUE),
        before,
        "no calls while suppressed"
    );
    g.auto_used_event(vswitch_testguest::RX_QUEUE).unwrap();
    echo(&mut g, &pmd, &frame(100, 99, mac), TxLayout::HeaderSeparate);
    assert!(g.calls_received(vswitch_testguest::RX_QUEUE) > before);
}

/// A valid chain written through the raw API (header and frame in scratch memory) and an
/// indirect table built by hand are forwarded like any other.
#[test]
fn raw_chains_roundtrip() {
    use vswitch_testguest::{RawDesc, DESC_F_INDIRECT, DESC_F_NEXT};
    let mut pmd = Testpmd::start(false);
    let mut g = connect(&mut pmd, GuestConfig::default());
    g.post_rx(64).unwrap();
    let mac = g.mac();
    let f = frame(200, 7, mac);
    let hdr = g.alloc(12).unwrap();
    g.write_mem(hdr, &[0; 12]).unwrap();
    let body = g.alloc(f.len()).unwrap();
    g.write_mem(body, &f).unwrap();
    g.send_raw_chain(&[
        RawDesc::new(hdr.0, 12, DESC_F_NEXT),
        RawDesc::new(body.0, 100, DESC_F_NEXT),
        RawDesc::new(body.0 + 100, 100, 0),
    ])
    .unwrap();
    assert_eq!(g.recv(T).as_deref(), Some(f.as_slice()));
    // Chosen slots, linked out of order: 9 -> 3 -> 200.
    g.send_raw_chain_at(&[
        (9, RawDesc::new(hdr.0, 12, DESC_F_NEXT)),
        (3, RawDesc::new(body.0, 150, DESC_F_NEXT)),
        (200, RawDesc::new(body.0 + 150, 50, 0)),
    ])
    .unwrap();
    assert_eq!(g.recv(T).as_deref(), Some(f.as_slice()));
    let table = g
        .write_indirect_table(&[
            RawDesc::new(hdr.0, 12, DESC_F_NEXT),
            RawDesc::new(body.0, f.len() as u32, 0),
        ])
        .unwrap();
    g.send_raw_chain(&[RawDesc::new(table.0, 32, DESC_F_INDIRECT)])
        .unwrap();
    assert_eq!(g.recv(T).as_deref(), Some(f.as_slice()));
    assert!(g.wait_tx_used(3, T));
    assert_eq!(g.tx_free(), 256);
    assert_eq!(g.device_errors(), 0);
}

/// testpmd restarts on the same socket; the guest reconnects and traffic resumes, with the
/// rings continuing from the device's used index.
#[test]
fn reconnect_after_backend_restart() {
    let mut pmd = Testpmd::start(false);
    let sock = pmd.sock.clone();
    let mut g = connect(&mut pmd, GuestConfig::default());
    g.post_rx(256).unwrap();
    let mac = g.mac();
    for i in 0..3 {
        echo(&mut g, &pmd, &frame(300, i, mac), TxLayout::HeaderSeparate);
    }
    let keep_dir = std::mem::replace(&mut pmd.dir, common::TempDir::new("unused"));
    drop(pmd);
    let pmd = Testpmd::start_at(false, Some(sock));
    g.reconnect()
        .unwrap_or_else(|e| panic!("reconnect failed: {e}\n{}", pmd.log()));
    for i in 0..3 {
        echo(
            &mut g,
            &pmd,
            &frame(300, 100 + i, mac),
            TxLayout::HeaderSeparate,
        );
    }
    assert_eq!(g.device_errors(), 0);
    drop(g);
    drop(pmd);
    drop(keep_dir);
}

/// call_fd = false (Cloud Hypervisor without an MSI-X vector): no SET_VRING_CALL is sent and the
/// guest polls the used rings instead of waiting on a call fd.
#[test]
fn no_call_fd_still_polls() {
    let mut pmd = Testpmd::start(false);
    let cfg = GuestConfig {
        call_fd: false,
        ..GuestConfig::default()
    };
    let g = connect(&mut pmd, cfg);
    let log = pmd.log();
    assert!(
        !log.contains("SET_VRING_CALL"),
        "no SET_VRING_CALL expected\n{log}"
    );
    drop(g);
}
