//! DPDK testpmd with the virtio-user PMD (a third-party vhost-user frontend) driving the
//! `vswitch` binary: process wrappers, counters through `vswitch ctl`, testpmd's statistics,
//! and pcap files written and read by hand.
//!
//! Everything runs without hugepages (`--no-huge`: DPDK's memory is a memfd, shared with the
//! switch as one region). Each testpmd gets its own `--file-prefix` and `RUNTIME_DIRECTORY` in
//! the test's temporary directory, is pinned to one CPU (`--lcores 0@C,1@C`), and is killed by
//! PID when dropped.
//!
//! - [`testpmd`]: the dpdk-testpmd process wrapper ([`Testpmd`]); [`vdev`]: its `--vdev`s;
//!   [`output`]: collecting a child's output.
//! - [`stats`]: parsing testpmd's forward statistics.
//! - [`switch`]: the `vswitch` process and its `vswitch ctl` client ([`Vswitch`]);
//!   [`switch_stats`]: its counters.
//! - [`pcap`]: classic pcap files.
//! - [`scenario`], [`frames`]: what the tests of `dpdk_virtio_user.rs` share.
#![allow(dead_code)]

pub mod frames;
pub mod output;
pub mod pcap;
pub mod scenario;
pub mod stats;
pub mod switch;
pub mod switch_stats;
pub mod testpmd;
pub mod vdev;

use std::sync::{Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

pub use output::tail;
// Not every test binary replays pcaps.
#[allow(unused_imports)]
pub use pcap::{read_pcap, write_pcap};
pub use switch::{Port, Vswitch};
pub use testpmd::{testpmd_bin, Testpmd};
pub use vdev::Vdev;

// Paths this module had before it was split; no test uses them from here at the moment.
#[allow(unused_imports)]
pub use stats::{parse_forward_stats, PortStats};
#[allow(unused_imports)]
pub use switch_stats::Stats;

/// virtio-user ring size and testpmd descriptor counts: on two shared cores busy-pollers get
/// time slices of milliseconds, and small rings make throughput collapse.
pub const QUEUE_SIZE: u32 = 4096;

/// How long testpmd may take to start forwarding (a hang guard).
pub const START_DEADLINE: Duration = Duration::from_secs(30);

/// How long any awaited counter may take (a hang guard, not a measurement).
pub const WAIT: Duration = Duration::from_secs(20);

/// Serializes the tests of this binary (each pins busy-polling testpmds to the two CPUs), after
/// checking that dpdk-testpmd exists, so a test without it fails before starting anything.
pub fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    testpmd_bin();
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// Polls `cond` every 20 ms until it holds; after `timeout` panics with `what` and `diag()`.
pub fn wait_until(
    what: &str,
    timeout: Duration,
    mut cond: impl FnMut() -> bool,
    diag: impl FnOnce() -> String,
) {
    let start = Instant::now();
    while !cond() {
        if start.elapsed() > timeout {
            panic!("timed out after {timeout:?} waiting for {what}\n{}", diag());
        }
        thread::sleep(Duration::from_millis(20));
    }
}
