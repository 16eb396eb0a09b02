//! Waiting, in a test, for something another thread or process does.

use std::time::{Duration, Instant};

/// Polls `cond` every 5 ms for up to 10 s; panics naming `what` when it never held.
pub fn wait_for(mut cond: impl FnMut() -> bool, what: &str) {
    let end = Instant::now() + Duration::from_secs(10);
    while Instant::now() < end {
        if cond() {
            return;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    panic!("timed out waiting for: {what}");
}
