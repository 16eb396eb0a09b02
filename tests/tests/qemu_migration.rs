//! Live migration of a real QEMU guest (TCG) attached to the `vswitch` binary, on one host.
//!
//! vm1 pings vm2 through the switch every 10 ms; a second QEMU started with `-incoming`
//! (migration over a Unix socket) attaches to a migration-target port (`ctl add-port
//! --migration-of vm1`); vm1 is migrated to it while the ping runs. The ping goes on from the
//! destination; the test reports the replies lost and the downtime QEMU measured, and checks
//! the guest stays on its channel (vm3, on another channel, still cannot reach it).
//!
//! Fails (never skips) when QEMU or the guest image is missing.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use vswitch_tests::{
    find_binary, guest_assets, GuestConfig, OrPanic, QemuGuest, ScratchDir, SocketRole, Vswitch,
    VswitchPort,
};

const BOOT: Duration = Duration::from_secs(240);
const PATH_UP: Duration = Duration::from_secs(90);
const CMD: Duration = Duration::from_secs(60);

const MAC1: &str = "52:54:00:00:64:01";
const MAC2: &str = "52:54:00:00:64:02";
const MAC3: &str = "52:54:00:00:c8:03";
const IP2: &str = "10.0.0.2";
const PINGS: u32 = 1500;

/// QEMU's human monitor on a Unix socket: one command, its output up to the next prompt.
struct Monitor(BufReader<UnixStream>);

impl Monitor {
    fn connect(path: &Path) -> Monitor {
        let end = Instant::now() + CMD;
        let s = loop {
            match UnixStream::connect(path) {
                Ok(s) => break s,
                Err(e) if Instant::now() > end => panic!("monitor {}: {e}", path.display()),
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        };
        s.set_read_timeout(Some(CMD)).expect("timeout");
        let mut m = Monitor(BufReader::new(s));
        m.until_prompt();
        m
    }

    fn until_prompt(&mut self) -> String {
        let mut out = Vec::new();
        while !out.ends_with(b"(qemu) ") {
            let buf = self.0.fill_buf().expect("monitor read");
            assert!(!buf.is_empty(), "monitor closed");
            let n = buf.len();
            out.extend_from_slice(buf);
            self.0.consume(n);
        }
        String::from_utf8_lossy(&out).into_owned()
    }

    fn cmd(&mut self, c: &str) -> String {
        let s = self.0.get_mut();
        s.write_all(format!("{c}\n").as_bytes())
            .expect("monitor write");
        self.until_prompt()
    }
}

/// `(transmitted, received)` from busybox ping's summary line.
fn ping_summary(out: &str) -> Option<(u32, u32)> {
    let l = out.lines().find(|l| l.contains("packets transmitted"))?;
    let n: Vec<u32> = l
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|w| w.parse().ok())
        .collect();
    Some((*n.first()?, *n.get(1)?))
}

/// vm1 (with a monitor) and vm2 on channel 100, vm3 on 200, booted, vm1 reaching vm2; the
/// migration target port `vm1in` added and a QEMU waiting on `migrate.sock` attached to it.
struct Setup {
    dir: ScratchDir,
    sw: Vswitch,
    vm1: QemuGuest,
    dst: QemuGuest,
    vm3: QemuGuest,
    _vm2: QemuGuest,
    mon: Monitor,
    mig: std::path::PathBuf,
}

fn setup(tag: &str) -> Setup {
    find_binary("qemu-system-x86_64").or_panic();
    guest_assets().or_panic();
    let dir = ScratchDir::new(tag).or_panic();
    let s1 = dir.socket_path("vm1.sock").or_panic();
    let s1in = dir.socket_path("vm1in.sock").or_panic();
    let s2 = dir.socket_path("vm2.sock").or_panic();
    let s3 = dir.socket_path("vm3.sock").or_panic();
    let mon = dir.path().join("vm1.mon");
    let mon_in = dir.path().join("vm1in.mon");
    let mig = dir.path().join("migrate.sock");
    let sw = Vswitch::start(
        dir.path(),
        &[
            VswitchPort::listen("vm1", &s1, 100).mac(MAC1),
            VswitchPort::listen("vm2", &s2, 100).mac(MAC2),
            VswitchPort::listen("vm3", &s3, 200).mac(MAC3),
        ],
    )
    .or_panic();
    let monitor = |p: &Path| {
        vec![
            "-monitor".to_string(),
            format!("unix:{},server=on,wait=off", p.display()),
        ]
    };
    let mut c1 = GuestConfig::new("vm1").nic(&s1, SocketRole::Client, MAC1, "10.0.0.1/24");
    c1.extra_args = monitor(&mon);
    c1.console_log = Some(dir.path().join("vm1.console.log"));
    let mut vm1 = QemuGuest::spawn(c1).or_panic();
    let mut vm2 = QemuGuest::boot("vm2", &s2, SocketRole::Client, MAC2, "10.0.0.2/24").or_panic();
    let mut vm3 = QemuGuest::boot("vm3", &s3, SocketRole::Client, MAC3, "10.0.0.3/24").or_panic();
    for g in [&mut vm1, &mut vm2, &mut vm3] {
        g.wait_ready(BOOT).or_panic();
    }
    sw.wait_connected(&["vm1", "vm2", "vm3"], CMD).or_panic();
    vm1.wait_ping(IP2, PATH_UP).or_panic();

    // The incoming side: its own port with vm1's MAC and channel, and a QEMU waiting for the
    // migration stream.
    let spec = format!("vm1in,socket={},channel=100,mac={MAC1}", s1in.display());
    sw.ctl(&["add-port", &spec, "--migration-of", "vm1"])
        .or_panic();
    let mut cin = GuestConfig::new("vm1").nic(&s1in, SocketRole::Client, MAC1, "10.0.0.1/24");
    cin.extra_args = monitor(&mon_in);
    cin.extra_args
        .extend(["-incoming".to_string(), format!("unix:{}", mig.display())]);
    cin.console_log = Some(dir.path().join("vm1in.console.log"));
    let dst = QemuGuest::spawn(cin).or_panic();
    sw.wait_connected(&["vm1in"], CMD).or_panic();
    // QEMU attaches its vhost-user netdev before it listens for the migration stream: wait for
    // the socket (a loaded machine showed the gap as a migration that failed to connect).
    let deadline = std::time::Instant::now() + CMD;
    while !mig.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "the incoming QEMU never listened on {}",
            mig.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let mon = Monitor::connect(&mon);
    Setup {
        dir,
        sw,
        vm1,
        dst,
        vm3,
        _vm2: vm2,
        mon,
        mig,
    }
}

/// Starts vm1 pinging vm2 every 10 ms in the background.
fn start_ping(vm1: &mut QemuGuest) {
    vm1.run_ok(
        &format!("ping -i 0.01 -c {PINGS} {IP2} > /tmp/ping.txt 2>&1 &"),
        CMD,
    )
    .or_panic();
}

/// Waits for the background ping to end; `(sent, replies)`.
fn ping_result(g: &mut QemuGuest) -> (u32, u32) {
    let out = g
        .run_ok(
            "while pidof ping >/dev/null; do sleep 0.2; done; cat /tmp/ping.txt",
            Duration::from_secs(240),
        )
        .or_panic();
    ping_summary(&out).unwrap_or_else(|| panic!("no ping summary: {out}"))
}

/// Polls `info migrate` until its status is `want` (panics on another final state).
fn wait_status(m: &mut Monitor, want: &str, sw: &Vswitch) -> String {
    let end = Instant::now() + Duration::from_secs(300);
    loop {
        let info = m.cmd("info migrate");
        if info.contains(&format!("Migration status: {want}")) {
            return info;
        }
        assert!(
            !info.contains("Migration status: failed") && Instant::now() < end,
            "migration not {want}: {info}\n{}",
            sw.log_tail(30)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn field<'a>(info: &'a str, name: &str) -> &'a str {
    info.lines()
        .map(str::trim)
        .find(|l| l.starts_with(name))
        .unwrap_or("?")
}

#[test]
fn a_pinging_guest_migrates_to_another_qemu_on_the_same_switch() {
    let Setup {
        dir: _dir,
        sw,
        mut vm1,
        mut dst,
        mut vm3,
        _vm2,
        mut mon,
        mig,
    } = setup("qemu-migrate");
    start_ping(&mut vm1);
    std::thread::sleep(Duration::from_secs(2));
    let r = mon.cmd(&format!("migrate -d unix:{}", mig.display()));
    assert!(!r.contains("rror"), "migrate refused: {r}");
    let info = wait_status(&mut mon, "completed", &sw);
    eprintln!(
        "migration completed: {}, {}",
        field(&info, "downtime:"),
        field(&info, "total time:")
    );
    assert!(
        sw.wait_log("dirty log of", CMD).or_panic(),
        "the source's port mapped QEMU's dirty log"
    );
    assert!(
        sw.wait_log("frontend asks to announce", CMD).or_panic(),
        "the destination announced the guest"
    );
    drop(vm1); // the source QEMU is done (killed by PID on drop)
    sw.ctl(&["remove-port", "vm1"]).or_panic();

    // The ping went on from the destination.
    dst.assume_ready();
    let (sent, got) = ping_result(&mut dst);
    let lost = sent - got;
    eprintln!("ping every 10 ms across the migration: {sent} sent, {got} replies, {lost} lost");
    assert_eq!(sent, PINGS);
    assert!(
        lost < PINGS / 4,
        "most replies come back across the migration"
    );
    // The guest is still on its channel: it reaches vm2 from its new port, vm3 does not.
    assert!(dst.ping(IP2, 3).or_panic(), "the moved guest reaches vm2");
    assert!(
        !vm3.ping("10.0.0.1", 3).or_panic(),
        "vm3 on channel 200 reaches the moved guest"
    );
}

#[test]
fn a_migration_cancelled_half_way_loses_nothing() {
    let Setup {
        dir: _dir,
        sw,
        mut vm1,
        dst,
        vm3: _vm3,
        _vm2,
        mut mon,
        mig,
    } = setup("qemu-migrate-cancel");
    start_ping(&mut vm1);
    // Slow enough to be cancelled half way (256 MiB at 4 MiB/s).
    mon.cmd("migrate_set_parameter max-bandwidth 4M");
    let r = mon.cmd(&format!("migrate -d unix:{}", mig.display()));
    assert!(!r.contains("rror"), "migrate refused: {r}");
    wait_status(&mut mon, "active", &sw);
    std::thread::sleep(Duration::from_secs(3));
    mon.cmd("migrate_cancel");
    wait_status(&mut mon, "cancelled", &sw);
    drop(dst);
    sw.ctl(&["remove-port", "vm1in"]).or_panic();
    let (sent, got) = ping_result(&mut vm1);
    eprintln!("ping every 10 ms across a cancelled migration: {sent} sent, {got} replies");
    assert_eq!((sent, got), (PINGS, PINGS), "nothing lost");
    assert!(vm1.ping(IP2, 3).or_panic(), "the source still reaches vm2");
}
