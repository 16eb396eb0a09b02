//! What the tests of `dpdk_virtio_user.rs` share: the VMs' MACs, CPUs, the switch's port
//! layouts, waiting for frames to flow (printing the rates) and for the switch to settle.

use std::path::Path;
use std::time::{Duration, Instant};

use super::{tail, Port, Testpmd, Vswitch, WAIT};

pub const GEN_MAC: &str = "02:00:00:00:01:01";
pub const SAME_MAC: &str = "02:00:00:00:01:02";
pub const OTHER_MAC: &str = "02:00:00:00:02:01";
pub const ROGUE_MAC: &str = "02:66:66:66:66:66";
pub const BROADCAST: &str = "ff:ff:ff:ff:ff:ff";

/// CPUs: the generator testpmd on one, the sink testpmd on the other.
pub const GEN_CPU: u32 = 0;
pub const SINK_CPU: u32 = 1;

/// Frames that must pass in each phase before it counts as "flowing".
pub const FLOW: u64 = 50_000;

/// Diagnostics for a failed wait: the switch's counters and the testpmds' last lines.
pub fn diag(sw: &Vswitch, pmds: &[&Testpmd]) -> String {
    let mut s = format!("switch counters:\n{}", sw.stats().summary());
    for p in pmds {
        s.push_str(&format!(
            "--- testpmd {} (last lines) ---\n{}\n",
            p.name(),
            tail(&p.output(), 25)
        ));
    }
    s
}

/// How long the printed rates are measured over (after the frames counted as "flowing"; the
/// rates are reported, never asserted).
pub const RATE_WINDOW: Duration = Duration::from_millis(500);

/// Waits until port `port`'s counter `path` has grown by `n` past `base` (frames flow), then
/// prints the rates over [`RATE_WINDOW`]: frames/s the switch took from the sender (`gen` in
/// every test), frames/s it delivered to `port`, and its CPU time per frame taken in.
pub fn flow(
    sw: &Vswitch,
    what: &str,
    port: &str,
    path: &str,
    base: u64,
    n: u64,
    diag: impl Fn() -> String,
) {
    const SENDER: &str = "gen";
    let start = Instant::now();
    loop {
        let v = sw.stats().port(port, path);
        if v >= base + n {
            break;
        }
        if start.elapsed() > WAIT {
            panic!(
                "{what}: {port}.{path} went from {base} to {v} in {WAIT:?}, wanted +{n}\n{}",
                diag()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let (s0, cpu0, t0) = (sw.stats(), sw.cpu_time(), Instant::now());
    std::thread::sleep(RATE_WINDOW);
    let (s1, cpu1, t1) = (sw.stats(), sw.cpu_time(), Instant::now());
    let secs = (t1 - t0).as_secs_f64();
    let taken =
        s1.port(SENDER, "port.from_guest_frames") - s0.port(SENDER, "port.from_guest_frames");
    let delivered = s1.port(port, path) - s0.port(port, path);
    eprintln!(
        "[rate] {what}: switch took {:.0} frames/s from {SENDER}, delivered {:.0} frames/s to \
         {port}; switch CPU {:.0} ns per frame taken in",
        taken as f64 / secs,
        delivered as f64 / secs,
        cpu1.saturating_sub(cpu0).as_nanos() as f64 / taken.max(1) as f64
    );
}

/// Frames the switch has accepted from `from` and not yet settled at `to` (delivered or dropped
/// at delivery), when `from` is the only sender and `to` its only destination.
pub fn in_flight(sw: &Vswitch, from: &str, to: &str) -> i64 {
    let st = sw.stats();
    let settled = st.port(to, "switch.out_frames")
        + st.port(to, "switch.drops.no_rx_buffer")
        + st.port(to, "switch.drops.bad_descriptor")
        + st.port(to, "switch.drops.oversize");
    st.port(from, "switch.in_frames") as i64 - settled as i64
}

pub fn txonly_args(peer: &str, len: u32) -> Vec<String> {
    vec![
        "--forward-mode=txonly".into(),
        format!("--txpkts={len}"),
        format!("--eth-peer=0,{peer}"),
    ]
}

pub fn refs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// `gen` (MAC-locked) and `same` on channel 100, `other` on channel 200.
pub fn three_ports(dir: &Path, sinks_connect: bool) -> Vswitch {
    Vswitch::start(
        dir,
        &[
            Port {
                name: "gen",
                socket: dir.join("gen.sock"),
                channel: 100,
                mac: Some(GEN_MAC),
                connect: false,
            },
            Port {
                name: "same",
                socket: dir.join("same.sock"),
                channel: 100,
                mac: None,
                connect: sinks_connect,
            },
            Port {
                name: "other",
                socket: dir.join("other.sock"),
                channel: 200,
                mac: None,
                connect: sinks_connect,
            },
        ],
    )
}

/// The other channel's VM received nothing, by every count the switch keeps.
pub fn assert_other_untouched(sw: &Vswitch) {
    let st = sw.stats();
    assert_eq!(st.port("other", "switch.out_frames"), 0, "{}", st.summary());
    assert_eq!(
        st.port("other", "port.to_guest_frames"),
        0,
        "{}",
        st.summary()
    );
    assert_eq!(st.channel(200, "out_frames"), 0, "{}", st.summary());
}
