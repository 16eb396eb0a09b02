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
