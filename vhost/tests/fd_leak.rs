//! A port serves any number of connections without leaking file descriptors or threads.
//! (Its own test binary: it counts the process's descriptors, so nothing else may run beside.)

mod common;

use std::time::Duration;

use common::{frame, wait_for, Pair};
use vswitch_testguest::GuestConfig;
use vswitch_vhost::SocketRole;

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count())
}

fn threads() -> usize {
    std::fs::read_dir("/proc/self/task").map_or(0, |d| d.count())
}

fn cycles(role: SocketRole) {
    let p = Pair::new(role);
    let mut b = p.guest("b", GuestConfig::default());
    b.post_rx(64).expect("post rx");
    let mut one_cycle = |i: u32| {
        let mut a = p.guest("a", GuestConfig::default());
        let f = frame(64, i);
        a.send(&f).expect("send");
        assert_eq!(b.recv(Duration::from_secs(5)).as_deref(), Some(&f[..]));
        drop(a);
        wait_for(|| !p.a.handle().is_connected(), "disconnect seen");
    };
    // Warm up (lazily created process-wide resources), then measure.
    for i in 0..3 {
        one_cycle(i);
    }
    std::thread::sleep(Duration::from_millis(100));
    let (fds, thr) = (open_fds(), threads());
    for i in 0..30 {
        one_cycle(i);
    }
    // Worker threads of the last connection may still be winding down.
    wait_for(|| threads() <= thr, "threads back to the baseline");
    wait_for(|| open_fds() <= fds, "descriptors back to the baseline");
}

#[test]
fn thirty_connections_leak_nothing() {
    cycles(SocketRole::Listen);
    cycles(SocketRole::Connect);
}
