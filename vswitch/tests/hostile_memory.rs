//! Hostile guest memory against the real `vswitch` binary, run as a separate process so that
//! a crash fails the test instead of killing the harness (issue 11, findings 1 and 7).

mod bin_util;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use bin_util::{run_to_end, Running, DEADLINE};
use serde_json::Value;
use tempfile::TempDir;
use vswitch_testguest::features::{DEFAULT_PROTOCOL_FEATURES, PROTO_CONFIGURE_MEM_SLOTS};
use vswitch_testguest::hostile_mem::{new_memfd, region};
use vswitch_testguest::{EthFrame, GuestConfig, TestGuest};

const T: Duration = Duration::from_secs(5);
const BROADCAST: [u8; 6] = [0xff; 6];

/// vm1 and vm2 on channel 100, vm3 and vm4 on channel 200, control API on.
struct Switch {
    _dir: TempDir,
    dir: PathBuf,
    ctl: PathBuf,
    sw: Running,
}

impl Switch {
    fn start(switch_table: &str) -> Switch {
        let d = TempDir::new().expect("tempdir");
        let dir = d.path().to_path_buf();
        let ctl = dir.join("ctl.sock");
        let mut text = format!(
            "[switch]\nctl = \"{}\"\nlog_level = \"warn\"\n{switch_table}\n",
            ctl.display()
        );
        for (i, ch) in [(1, 100), (2, 100), (3, 200), (4, 200)] {
            text.push_str(&format!(
                "[[port]]\nname = \"vm{i}\"\nsocket = \"{}\"\nchannel = {ch}\n",
                dir.join(format!("vm{i}.sock")).display()
            ));
        }
        let conf = dir.join("vswitch.toml");
        std::fs::write(&conf, text).expect("write config");
        let mut ready: Vec<PathBuf> = (1..=4).map(|i| dir.join(format!("vm{i}.sock"))).collect();
        ready.push(ctl.clone());
        let sw = Running::start(&[format!("--config={}", conf.display())], &ready);
        Switch {
            _dir: d,
            dir,
            ctl,
            sw,
        }
    }

    fn guest(&self, i: u8, cfg: GuestConfig) -> TestGuest {
        let cfg = GuestConfig {
            mac: [0x52, 0x54, 0, 0, 0, i],
            ..cfg
        };
        let mut g =
            TestGuest::connect(&self.dir.join(format!("vm{i}.sock")), cfg).expect("guest connects");
        g.post_rx(128).expect("post rx");
        g
    }

    fn ctl_json(&self, cmd: &str) -> Value {
        let ctl = self.ctl.display().to_string();
        let out = run_to_end(&["ctl", "--ctl", &ctl, "--json", cmd]);
        assert!(
            out.status.success(),
            "ctl {cmd} failed (is the switch alive?): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("JSON")
    }

    /// A vhost-level counter of port `name`.
    fn counter(&self, name: &str, key: &str) -> u64 {
        let stats = self.ctl_json("stats");
        stats["ports"]
            .as_array()
            .and_then(|ps| ps.iter().find(|p| p["name"] == name))
            .and_then(|p| p["port"][key].as_u64())
            .unwrap_or_else(|| panic!("no counter {key} for {name}: {stats}"))
    }

    fn connected(&self, name: &str) -> bool {
        let ports = self.ctl_json("ports");
        let list = ports
            .as_array()
            .or_else(|| ports["ports"].as_array())
            .cloned()
            .unwrap_or_default();
        list.iter()
            .find(|p| p["name"] == name)
            .and_then(|p| p["connected"].as_bool())
            .unwrap_or_else(|| panic!("no port {name}: {ports}"))
    }

    fn wait(&mut self, what: &str, mut cond: impl FnMut(&Switch) -> bool) {
        let end = Instant::now() + DEADLINE;
        loop {
            assert!(self.sw.is_running(), "the switch died waiting for: {what}");
            if cond(self) {
                return;
            }
            assert!(Instant::now() < end, "timed out waiting for: {what}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn frame(dst: [u8; 6], src: &TestGuest, seq: u32) -> Vec<u8> {
    EthFrame::new(dst, src.mac(), 0x88b5, &seq.to_be_bytes()).build()
}

/// `from` sends to `to` (unicast) and `to` gets exactly that frame.
fn forwards(from: &mut TestGuest, to: &mut TestGuest, seq: u32) {
    let f = frame(to.mac(), from, seq);
    from.send(&f).expect("send");
    from.reclaim_tx();
    assert_eq!(to.recv(T), Some(f), "frame {seq} forwarded");
}

/// The frame a guest broadcasts on its channel reaches `to`.
fn broadcast_reaches(from: &mut TestGuest, to: &mut TestGuest, seq: u32) {
    let f = frame(BROADCAST, from, seq);
    from.send(&f).expect("send");
    from.reclaim_tx();
    assert_eq!(to.recv(T), Some(f), "broadcast {seq} delivered");
}

fn slots_guest() -> GuestConfig {
    GuestConfig {
        want_protocol_features: DEFAULT_PROTOCOL_FEATURES | PROTO_CONFIGURE_MEM_SLOTS,
        ..GuestConfig::default()
    }
}

/// (b) A frontend with a valid setup and traffic flowing truncates its memfd while a
/// channel-mate broadcasts into it and its TX ring is being polled: the switch survives, that
/// port is disconnected and counted, the other channel keeps forwarding throughout, and the
/// frontend reconnects with fresh memory.
#[test]
fn truncated_guest_memory_costs_only_that_port() {
    let mut s = Switch::start("");
    let mut g1 = s.guest(1, GuestConfig::default());
    let mut g2 = s.guest(2, GuestConfig::default());
    let mut g3 = s.guest(3, GuestConfig::default());
    let mut g4 = s.guest(4, GuestConfig::default());
    broadcast_reaches(&mut g2, &mut g1, 1);
    forwards(&mut g1, &mut g2, 2);
    forwards(&mut g3, &mut g4, 3);

    g1.truncate_memory(0).expect("ftruncate");
    let mut seq = 100;
    s.wait("vm1's memory fault counted", |s| {
        // vm2 broadcasts into vm1's vanished RX buffers; vm1 kicks so its TX ring is read;
        // vm3 and vm4 keep talking on the other channel.
        seq += 1;
        let _ = g2.send(&frame(BROADCAST, &g2, seq));
        g2.reclaim_tx();
        let _ = g1.kick_tx();
        forwards(&mut g3, &mut g4, seq);
        forwards(&mut g4, &mut g3, seq);
        s.counter("vm1", "memory_fault") == 1
    });
    s.wait("vm1 disconnected", |s| !s.connected("vm1"));
    drop(g1);
    for k in 0..20 {
        forwards(&mut g3, &mut g4, 1000 + k);
    }
    assert_eq!(s.counter("vm3", "memory_fault"), 0);

    let mut g1 = s.guest(1, GuestConfig::default());
    g2.recv_all(Duration::from_millis(50));
    broadcast_reaches(&mut g2, &mut g1, 2000);
    forwards(&mut g1, &mut g2, 2001);
    assert_eq!(s.counter("vm1", "memory_fault"), 1);
    assert!(s.sw.is_running(), "switch alive");
    let ctl = s.ctl.display().to_string();
    let out = run_to_end(&["ctl", "--ctl", &ctl, "metrics"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("vswitch_port_memory_fault_total{port=\"vm1\"} 1"),
        "{text}"
    );
}

/// (a) and (c), default limits: a region larger than its file and the 32 TiB-region attack
/// (a 4 KiB memfd claimed as 32 TiB, a sparse 32 TiB memfd) are refused at the first message,
/// before anything is mapped; the switch stays up, a VM on another channel connects and
/// forwards, and the frontend can come back with valid memory.
#[test]
fn regions_beyond_their_file_and_huge_regions_are_refused() {
    let mut s = Switch::start("");
    let mut g1 = s.guest(1, GuestConfig::default());
    let small = new_memfd(64 << 10).expect("memfd");
    let r = region(0, 4 << 20, g1.memory_user_addr(), 0, &small);
    assert!(
        g1.set_mem_table_raw(&[r]).is_err(),
        "4 MiB region of a 64 KiB file"
    );
    drop(g1);
    s.wait("refusal 1 counted", |s| {
        s.counter("vm1", "mem_refused") == 1
    });

    for (n, file_size) in [(2u64, 4096u64), (3, 32 << 40)] {
        let mut g1 = s.guest(1, slots_guest());
        let file = new_memfd(file_size).expect("memfd");
        let r = region(1 << 45, 32 << 40, 0x7f00_0000_0000, 0, &file);
        assert!(g1.add_mem_region_raw(&r).is_err(), "32 TiB region refused");
        let mut g3 = s.guest(3, GuestConfig::default());
        let mut g4 = s.guest(4, GuestConfig::default());
        forwards(&mut g3, &mut g4, n as u32);
        drop(g1);
        s.wait("refusal counted", |s| s.counter("vm1", "mem_refused") == n);
    }
    let mut g1 = s.guest(1, GuestConfig::default());
    let mut g2 = s.guest(2, GuestConfig::default());
    forwards(&mut g1, &mut g2, 10);
    assert!(s.sw.is_running(), "switch alive");
}

/// (c) The limits set in `[switch]`: the region count is advertised and enforced, and so is
/// the total size; the frontend is refused, the others are not affected.
#[test]
fn memory_limits_from_the_config_are_enforced() {
    let mut s = Switch::start("max_mem_regions = 4\nmax_mem_mib = 64");
    let mut g1 = s.guest(1, slots_guest());
    assert_eq!(g1.max_mem_slots().expect("GET_MAX_MEM_SLOTS"), 4);
    let file = new_memfd(1 << 20).expect("memfd");
    for i in 1..=3u64 {
        let r = region(i << 32, 1 << 20, 0x7f00_0000_0000 + (i << 24), 0, &file);
        g1.add_mem_region_raw(&r).expect("within the limits");
    }
    let r = region(4 << 32, 1 << 20, 0x7f00_0400_0000, 0, &file);
    assert!(g1.add_mem_region_raw(&r).is_err(), "fifth region refused");
    drop(g1);
    s.wait("count refusal counted", |s| {
        s.counter("vm1", "mem_refused") == 1
    });
    // 16 MiB of guest memory plus 64 MiB more is over 64 MiB.
    let mut g1 = s.guest(1, slots_guest());
    let big = new_memfd(64 << 20).expect("memfd");
    let r = region(1 << 32, 64 << 20, 0x7f00_0000_0000, 0, &big);
    assert!(g1.add_mem_region_raw(&r).is_err(), "over the size limit");
    drop(g1);
    s.wait("size refusal counted", |s| {
        s.counter("vm1", "mem_refused") == 2
    });

    let mut g3 = s.guest(3, GuestConfig::default());
    let mut g4 = s.guest(4, GuestConfig::default());
    forwards(&mut g3, &mut g4, 1);
    let mut g1 = s.guest(1, GuestConfig::default());
    let mut g2 = s.guest(2, GuestConfig::default());
    forwards(&mut g1, &mut g2, 2);
    assert!(s.sw.is_running(), "switch alive");
}

/// Out-of-range limits in `[switch]` are refused at startup with exit code 2.
#[test]
fn invalid_memory_limits_exit_2() {
    let d = TempDir::new().expect("tempdir");
    for table in [
        "max_mem_regions = 0",
        "max_mem_regions = 510",
        "max_mem_mib = 0",
    ] {
        let conf = d.path().join("bad.toml");
        std::fs::write(
            &conf,
            format!(
                "[switch]\n{table}\n[[port]]\nname = \"a\"\nsocket = \"{}\"\nchannel = 1\n",
                d.path().join("a.sock").display()
            ),
        )
        .expect("write");
        let out = run_to_end(&["run", &format!("--config={}", conf.display())]);
        assert_eq!(out.status.code(), Some(2), "{table}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("max_mem_"), "{table}: {err}");
        assert!(
            err.contains("1..="),
            "{table}: the message gives the range: {err}"
        );
    }
}
