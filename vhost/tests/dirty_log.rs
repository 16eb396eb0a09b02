//! Dirty-page logging over a real vhost-user connection: the test guest shares a log as QEMU
//! does (SET_LOG_BASE with a memfd) and turns VHOST_F_LOG_ALL on and off while frames flow;
//! the log must hold exactly the pages the port wrote while logging was on (RX buffers,
//! used rings), and nothing while it was off.

mod common;

use std::collections::BTreeSet;
use std::fs::File;
use std::os::fd::{AsFd, FromRawFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::time::Duration;

use common::{frame, Pair};
use vswitch_testguest::features::{DEFAULT_PROTOCOL_FEATURES, NET_HDR_V1_LEN};
use vswitch_testguest::migration::{PROTO_LOG_SHMFD, PROTO_RARP};
use vswitch_testguest::{GuestConfig, TestGuest, RX_QUEUE, TX_QUEUE};
use vswitch_vhost::dirty_log::{LogMap, LOG_PAGE};
use vswitch_vhost::SocketRole;

const T: Duration = Duration::from_secs(5);

fn memfd(len: u64) -> File {
    // SAFETY: memfd_create with a valid C string; the descriptor is new and ours.
    let fd = unsafe { libc::memfd_create(c"dirty-log".as_ptr(), 0) };
    assert!(fd >= 0, "memfd_create");
    // SAFETY: `fd` is a new descriptor nobody else owns.
    let f = File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    f.set_len(len).expect("size the log");
    f
}

fn cfg() -> GuestConfig {
    GuestConfig {
        want_protocol_features: DEFAULT_PROTOCOL_FEATURES | PROTO_LOG_SHMFD | PROTO_RARP,
        ..GuestConfig::default()
    }
}

/// Pages of guest physical `[gpa, gpa + len)`.
fn pages(gpa: u64, len: u64) -> impl Iterator<Item = u64> {
    gpa / LOG_PAGE..=(gpa + len - 1) / LOG_PAGE
}

fn marked(log: &LogMap) -> BTreeSet<u64> {
    (0..log.len() as u64 * 8)
        .filter(|&p| log.is_marked(p))
        .collect()
}

fn used_ring_pages(g: &TestGuest, q: usize) -> BTreeSet<u64> {
    let r = g.ring_addrs(q);
    pages(r.used, 6 + 8 * u64::from(r.size)).collect()
}

/// Sends `lens.len()` frames from `a` to `b` (numbered from `first`) and checks every one
/// arrives, byte-exact.
fn flow(a: &mut TestGuest, b: &mut TestGuest, first: u32, lens: &[usize]) {
    let sent: Vec<Vec<u8>> = lens
        .iter()
        .enumerate()
        .map(|(i, &len)| frame(len, first + i as u32))
        .collect();
    for f in &sent {
        a.send(f).expect("send");
    }
    assert!(a.wait_tx_used(sent.len(), T), "tx chains returned");
    for f in &sent {
        assert_eq!(b.recv(T).as_ref(), Some(f), "frame arrives intact");
    }
}

/// Waits (at most 5 s) for `cond`.
fn settle(mut cond: impl FnMut() -> bool) {
    let end = std::time::Instant::now() + T;
    while !cond() && std::time::Instant::now() < end {
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn log_holds_exactly_the_pages_written_while_logging_is_on() {
    let p = Pair::new(SocketRole::Listen);
    let mut a = p.guest("a", cfg());
    let mut b = p.guest("b", cfg());
    // One bit per 4 KiB page of guest memory, as QEMU sizes it.
    let log_len = (a.mem_size() / LOG_PAGE).div_ceil(8);
    let (fa, fb) = (memfd(log_len), memfd(log_len));
    a.set_log_base(fa.as_fd(), log_len).expect("SET_LOG_BASE a");
    b.set_log_base(fb.as_fd(), log_len).expect("SET_LOG_BASE b");
    let la = LogMap::map(fa.as_fd(), 0, log_len).expect("map log a");
    let lb = LogMap::map(fb.as_fd(), 0, log_len).expect("map log b");
    // Fresh guest: the first posts are buffers 0, 1, 2... and the device takes them in order.
    b.post_rx(256).expect("post rx");
    let lens: Vec<usize> = (0..50).map(|i| 60 + (i * 97) % 1455).collect();

    // Off: frames flow, nothing is logged.
    flow(&mut a, &mut b, 0, &lens);
    assert!(
        marked(&la).is_empty() && marked(&lb).is_empty(),
        "nothing logged while off"
    );

    // On: exactly the buffers written and the used rings.
    a.set_log_all(true).expect("LOG_ALL on a");
    b.set_log_all(true).expect("LOG_ALL on b");
    flow(&mut a, &mut b, 50, &lens);
    let mut want_b: BTreeSet<u64> = used_ring_pages(&b, RX_QUEUE);
    for (i, &len) in lens.iter().enumerate() {
        let at = b.rx_buffer_addr(50 + i as u16);
        want_b.extend(pages(at, (NET_HDR_V1_LEN + len) as u64));
    }
    let want_a = used_ring_pages(&a, TX_QUEUE);
    // The used ring is marked right after the guest can see the entries: wait for it.
    // b's TX used ring is written too when the datapath re-arms b's kicks (its avail event)
    // while logging is on: whether that happens in this window depends on timing.
    let maybe_b = used_ring_pages(&b, TX_QUEUE);
    settle(|| marked(&lb).is_superset(&want_b));
    let got_b = marked(&lb);
    let extra: BTreeSet<u64> = got_b.difference(&want_b).copied().collect();
    assert!(
        got_b.is_superset(&want_b) && extra.is_subset(&maybe_b),
        "b's log: its RX buffers and RX used ring {want_b:?} (and maybe its TX used ring \
         {maybe_b:?}), got {got_b:?}"
    );
    settle(|| marked(&la) == want_a);
    assert_eq!(marked(&la), want_a, "a's log: its TX used ring");
    assert!(want_b.len() > 20, "the frames span many pages: {want_b:?}");

    // Off again: the log (cleared, as QEMU does after each sync) stays clear.
    a.set_log_all(false).expect("LOG_ALL off a");
    b.set_log_all(false).expect("LOG_ALL off b");
    fa.write_all_at(&vec![0; log_len as usize], 0)
        .expect("clear a");
    fb.write_all_at(&vec![0; log_len as usize], 0)
        .expect("clear b");
    flow(&mut a, &mut b, 100, &lens);
    std::thread::sleep(Duration::from_millis(50));
    assert!(
        marked(&la).is_empty() && marked(&lb).is_empty(),
        "nothing logged once off"
    );
    let s = p.b.handle().stats();
    assert_eq!(s.to_guest_frames, 150);
    assert_eq!(s.rx_no_buffer + s.rx_bad_descriptor, 0);
}

#[test]
fn a_log_smaller_than_guest_memory_logs_only_what_fits() {
    let p = Pair::new(SocketRole::Listen);
    let mut a = p.guest("a", cfg());
    let mut b = p.guest("b", cfg());
    // A 4-byte log inside an 8 KiB file: bits for the first 32 pages only; the rest of the
    // file must stay untouched.
    let file = memfd(8192);
    b.set_log_base(file.as_fd(), 4).expect("SET_LOG_BASE");
    b.set_log_all(true).expect("LOG_ALL on");
    b.post_rx(64).expect("post rx");
    flow(&mut a, &mut b, 0, &[1000; 20]);
    let whole = LogMap::map(file.as_fd(), 0, 8192).expect("map the file");
    let beyond: Vec<u64> = marked(&whole).into_iter().filter(|&p| p >= 32).collect();
    assert!(beyond.is_empty(), "bits beyond the log: {beyond:?}");
    // The port still works.
    flow(&mut a, &mut b, 20, &[60; 5]);
}

#[test]
fn send_rarp_calls_the_announce_hook() {
    let (tx, rx) = std::sync::mpsc::channel();
    let tx = std::sync::Mutex::new(tx);
    let hook = vswitch_vhost::Announce(std::sync::Arc::new(move |mac| {
        let _ = tx.lock().map(|t| t.send(mac));
    }));
    let p = Pair::with(SocketRole::Listen, |c| c.announce = Some(hook.clone()));
    let mut a = p.guest("a", cfg());
    let mac = [0x52, 0x54, 0, 0x12, 0x34, 0x56];
    a.send_rarp(mac).expect("SEND_RARP acked");
    assert_eq!(rx.recv_timeout(T), Ok(mac));
    // The connection goes on.
    let mut b = p.guest("b", cfg());
    b.post_rx(8).expect("post rx");
    flow(&mut a, &mut b, 0, &[60]);
}
