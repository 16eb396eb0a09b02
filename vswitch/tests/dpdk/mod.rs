//! DPDK testpmd with the virtio-user PMD (a third-party vhost-user frontend) driving the
//! `vswitch` binary: process wrappers, counters through `vswitch ctl`, testpmd's statistics,
//! and pcap files written and read by hand.
//!
//! Everything runs without hugepages (`--no-huge`: DPDK's memory is a memfd, shared with the
//! switch as one region). Each testpmd gets its own `--file-prefix` and `RUNTIME_DIRECTORY` in
//! the test's temporary directory, is pinned to one CPU (`--lcores 0@C,1@C`), and is killed by
//! PID when dropped.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::bin_util::{run_to_end, Running};

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

/// Finds an executable on PATH.
fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// dpdk-testpmd (`$DPDK_TESTPMD`, else PATH). Missing: the test fails, it does not skip.
pub fn testpmd_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("DPDK_TESTPMD") {
        let p = PathBuf::from(p);
        assert!(
            p.is_file(),
            "DPDK_TESTPMD={} does not exist; unset it or point it at dpdk-testpmd",
            p.display()
        );
        return p;
    }
    on_path("dpdk-testpmd").unwrap_or_else(|| {
        panic!(
            "dpdk-testpmd is not on PATH. These tests need DPDK 22.11's testpmd and its \
             virtio-user and pcap PMDs (Debian: apt-get install dpdk dpdk-dev; ci/install-deps.sh \
             does it). They fail rather than skip without it."
        )
    })
}

/// One `--vdev` of testpmd. Port ids follow the order of the vdevs.
#[derive(Debug, Clone)]
pub enum Vdev {
    /// A virtio-user port: `server == false` connects to a listening switch port;
    /// `server == true` (`server=1`) creates the socket and the switch connects to it.
    VirtioUser {
        socket: PathBuf,
        mac: String,
        server: bool,
    },
    /// Frames read from a pcap file, once or (`infinite`) over and over.
    PcapRx { file: PathBuf, infinite: bool },
    /// Frames written to a pcap file (nothing received).
    PcapTx { file: PathBuf },
}

impl Vdev {
    pub fn virtio_user(socket: &Path, mac: &str, server: bool) -> Vdev {
        Vdev::VirtioUser {
            socket: socket.to_path_buf(),
            mac: mac.to_owned(),
            server,
        }
    }

    fn devargs(&self, index: usize) -> String {
        fn s(p: &Path) -> &str {
            let s = p.to_str().expect("UTF-8 path");
            assert!(!s.contains(','), "path {s} contains ','");
            s
        }
        match self {
            Vdev::VirtioUser {
                socket,
                mac,
                server,
            } => format!(
                "net_virtio_user{index},path={},queues=1,mac={mac},queue_size={QUEUE_SIZE}{}",
                s(socket),
                if *server { ",server=1" } else { "" }
            ),
            Vdev::PcapRx { file, infinite } => format!(
                "net_pcap{index},rx_pcap={}{}",
                s(file),
                if *infinite { ",infinite_rx=1" } else { "" }
            ),
            Vdev::PcapTx { file } => format!("net_pcap{index},tx_pcap={}", s(file)),
        }
    }
}

/// testpmd's "Forward statistics" of one port (printed when forwarding stops).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PortStats {
    pub rx: u64,
    pub rx_dropped: u64,
    pub tx: u64,
    pub tx_dropped: u64,
}

/// Parses every "Forward statistics for port N" block of testpmd's output (the last one per
/// port wins).
pub fn parse_forward_stats(out: &str) -> BTreeMap<u16, PortStats> {
    fn field(line: &str, key: &str) -> Option<u64> {
        let mut it = line.split_whitespace();
        while let Some(t) = it.next() {
            if t == key {
                return it.next()?.parse().ok();
            }
        }
        None
    }
    let mut map = BTreeMap::new();
    let mut current: Option<u16> = None;
    for line in out.lines() {
        if let Some(rest) = line.split("Forward statistics for port ").nth(1) {
            current = rest.split_whitespace().next().and_then(|n| n.parse().ok());
            if let Some(p) = current {
                map.insert(p, PortStats::default());
            }
            continue;
        }
        let Some(p) = current else { continue };
        let st = map.get_mut(&p).expect("inserted");
        if let Some(v) = field(line, "RX-packets:") {
            st.rx = v;
            st.rx_dropped = field(line, "RX-dropped:").unwrap_or(0);
        } else if let Some(v) = field(line, "TX-packets:") {
            st.tx = v;
            st.tx_dropped = field(line, "TX-dropped:").unwrap_or(0);
            current = None;
        }
    }
    map
}

/// Output of a child process, collected line by line from stdout and stderr.
#[derive(Default)]
struct Output {
    text: Mutex<String>,
}

impl Output {
    fn collect(self: &Arc<Self>, r: impl Read + Send + 'static) -> JoinHandle<()> {
        let me = Arc::clone(self);
        thread::spawn(move || {
            let mut r = BufReader::new(r);
            let mut line = Vec::new();
            while matches!(r.read_until(b'\n', &mut line), Ok(n) if n > 0) {
                me.text
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push_str(&String::from_utf8_lossy(&line));
                line.clear();
            }
        })
    }

    fn text(&self) -> String {
        self.text.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn contains(&self, needle: &str) -> bool {
        self.text
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(needle)
    }
}

/// The last `n` lines of `s`.
pub fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// A running dpdk-testpmd (non-interactive, `--auto-start`). Killed by PID on drop.
pub struct Testpmd {
    name: String,
    child: Option<Child>,
    stdin: Option<ChildStdin>,
    out: Arc<Output>,
    readers: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for Testpmd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Testpmd")
            .field("name", &self.name)
            .field("pid", &self.pid())
            .finish()
    }
}

impl Testpmd {
    /// Starts testpmd named `name` (unique within the test), pinned to CPU `cpu`, with `vdevs`
    /// and the application arguments `app` (forwarding mode and the like; ring sizes, mbufs and
    /// `--auto-start` are added here). Returns once it forwards ("Press enter to exit"). A
    /// `server=1` virtio-user waits for the switch to connect first, so start the switch first.
    /// A socket left behind by a killed predecessor at a `server=1` path is removed.
    pub fn start(dir: &Path, name: &str, cpu: u32, vdevs: &[Vdev], app: &[&str]) -> Testpmd {
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let bin = testpmd_bin();
        let stdbuf = on_path("stdbuf").unwrap_or_else(|| {
            panic!("stdbuf (coreutils) is not on PATH: testpmd's output must be line-buffered")
        });
        let runtime = dir.join(format!("rt-{name}"));
        std::fs::create_dir_all(&runtime).expect("runtime dir");
        for v in vdevs {
            if let Vdev::VirtioUser {
                socket,
                server: true,
                ..
            } = v
            {
                if std::fs::symlink_metadata(socket).is_ok_and(|m| m.file_type().is_socket()) {
                    std::fs::remove_file(socket).expect("remove stale socket");
                }
            }
        }
        let prefix = format!(
            "vswdpdk{}-{}-{name}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let mut args: Vec<String> = vec![
            "--lcores".into(),
            format!("0@{cpu},1@{cpu}"),
            "--no-pci".into(),
            "--no-huge".into(),
            "-m".into(),
            "256".into(),
            format!("--file-prefix={prefix}"),
        ];
        for (i, v) in vdevs.iter().enumerate() {
            args.push("--vdev".into());
            args.push(v.devargs(i));
        }
        args.push("--".into());
        args.extend([
            "--total-num-mbufs=32768".to_owned(),
            format!("--rxd={QUEUE_SIZE}"),
            format!("--txd={QUEUE_SIZE}"),
            "--nb-cores=1".into(),
            "--rxq=1".into(),
            "--txq=1".into(),
            "--auto-start".into(),
        ]);
        args.extend(app.iter().map(|s| (*s).to_owned()));

        // testpmd printf()s into a pipe: block-buffered unless run through stdbuf -oL (which
        // execs it: the PID stays testpmd's).
        let mut child = Command::new(&stdbuf)
            .arg("-oL")
            .arg(&bin)
            .args(&args)
            .env("RUNTIME_DIRECTORY", &runtime)
            .env("XDG_RUNTIME_DIR", &runtime)
            // Without -i and --stats-period testpmd forwards until a line (or EOF) on stdin.
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", bin.display()));
        let out = Arc::new(Output::default());
        let readers = vec![
            out.collect(child.stdout.take().expect("stdout")),
            out.collect(child.stderr.take().expect("stderr")),
        ];
        let mut me = Testpmd {
            name: name.to_owned(),
            stdin: child.stdin.take(),
            child: Some(child),
            out,
            readers,
        };
        let start = Instant::now();
        while !me.out.contains("Press enter to exit") {
            let exited = me
                .child
                .as_mut()
                .expect("child")
                .try_wait()
                .expect("try_wait");
            if exited.is_some() || start.elapsed() > START_DEADLINE {
                me.kill();
                panic!(
                    "testpmd {name} did not start forwarding ({}):\n{} {}\n{}",
                    match exited {
                        Some(s) => format!("exited: {s}"),
                        None => format!("not ready within {START_DEADLINE:?}"),
                    },
                    bin.display(),
                    args.join(" "),
                    tail(&me.out.text(), 40)
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
        eprintln!(
            "[{name}] testpmd pid {} ready after {:.2} s",
            me.pid(),
            start.elapsed().as_secs_f64()
        );
        me
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// PID (0 once reaped).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Everything it printed so far.
    pub fn output(&self) -> String {
        self.out.text()
    }

    /// Stops forwarding the polite way (a line on stdin): testpmd prints its statistics,
    /// closes its ports and exits. Returns the per-port statistics.
    pub fn stop(mut self) -> BTreeMap<u16, PortStats> {
        if let Some(mut stdin) = self.stdin.take() {
            let _ = stdin.write_all(b"\n").and_then(|_| stdin.flush());
        }
        let start = Instant::now();
        loop {
            let done = self
                .child
                .as_mut()
                .expect("child")
                .try_wait()
                .expect("try_wait");
            if done.is_some() {
                break;
            }
            assert!(
                start.elapsed() < WAIT,
                "testpmd {} did not exit within {WAIT:?} after stop:\n{}",
                self.name,
                tail(&self.out.text(), 30)
            );
            thread::sleep(Duration::from_millis(20));
        }
        self.reap();
        let text = self.out.text();
        let stats = parse_forward_stats(&text);
        assert!(
            !stats.is_empty() && text.contains("Bye..."),
            "testpmd {} printed no statistics at stop:\n{}",
            self.name,
            tail(&text, 30)
        );
        stats
    }

    /// Kills it with SIGKILL (a crash: no clean vhost-user shutdown) by PID and reaps it.
    pub fn kill(&mut self) {
        if let Some(c) = self.child.as_mut() {
            // Child::kill sends SIGKILL to this child's PID only.
            let _ = c.kill();
        }
        self.reap();
    }

    fn reap(&mut self) {
        self.stdin = None;
        if let Some(mut c) = self.child.take() {
            let _ = c.wait();
        }
        for h in self.readers.drain(..) {
            let _ = h.join();
        }
    }
}

impl Drop for Testpmd {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A switch port for [`Vswitch::start`].
#[derive(Debug, Clone)]
pub struct Port {
    pub name: &'static str,
    pub socket: PathBuf,
    pub channel: u16,
    pub mac: Option<&'static str>,
    /// `mode=connect` (the frontend listens, `server=1`), else `mode=listen`.
    pub connect: bool,
}

/// Switch counters from `vswitch ctl stats` (JSON).
#[derive(Debug, Clone)]
pub struct Stats(pub Value);

fn walk<'a>(mut v: &'a Value, path: &str) -> Option<&'a Value> {
    for k in path.split('.') {
        v = v.get(k)?;
    }
    Some(v)
}

impl Stats {
    /// A port's counter by dotted path, e.g. `switch.out_frames`, `switch.drops.source_spoof`,
    /// `port.to_guest_frames`.
    pub fn port(&self, name: &str, path: &str) -> u64 {
        let p = self.0["ports"]
            .as_array()
            .and_then(|a| a.iter().find(|p| p["name"] == name))
            .unwrap_or_else(|| panic!("no port {name} in stats:\n{}", self.0));
        walk(p, path)
            .and_then(Value::as_u64)
            .unwrap_or_else(|| panic!("no counter {path} for port {name}:\n{p}"))
    }

    /// A channel's counter by dotted path under `counters`, e.g. `out_frames`.
    pub fn channel(&self, svid: u16, path: &str) -> u64 {
        let c = self.0["channels"]
            .as_array()
            .and_then(|a| a.iter().find(|c| c["channel"] == svid))
            .unwrap_or_else(|| panic!("no channel {svid} in stats:\n{}", self.0));
        walk(&c["counters"], path)
            .and_then(Value::as_u64)
            .unwrap_or_else(|| panic!("no counter {path} for channel {svid}:\n{c}"))
    }

    /// One line per port: the counters that matter here.
    pub fn summary(&self) -> String {
        let mut s = String::new();
        for p in self.0["ports"].as_array().into_iter().flatten() {
            let n = |path: &str| walk(p, path).and_then(Value::as_u64).unwrap_or(0);
            let drops: Vec<String> = p["switch"]["drops"]
                .as_object()
                .into_iter()
                .flatten()
                .filter(|(_, v)| v.as_u64().unwrap_or(0) > 0)
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            s.push_str(&format!(
                "  port {} ch={} in={} out={} flooded={} drops[{}] from_guest={} to_guest={} \
                 connections={}\n",
                p["name"].as_str().unwrap_or("?"),
                p["channel"],
                n("switch.in_frames"),
                n("switch.out_frames"),
                n("switch.flooded"),
                drops.join(" "),
                n("port.from_guest_frames"),
                n("port.to_guest_frames"),
                n("port.connections"),
            ));
        }
        s
    }
}

/// The `vswitch` binary, running `run` with ports and a control socket; killed on drop.
pub struct Vswitch {
    run: Option<Running>,
    ctl: PathBuf,
}

impl Vswitch {
    /// Starts `vswitch run` with `ports` and `--ctl DIR/ctl.sock`; returns once the control
    /// socket and every listening port's socket exist.
    pub fn start(dir: &Path, ports: &[Port]) -> Vswitch {
        let ctl = dir.join("ctl.sock");
        let mut args = Vec::new();
        let mut ready = vec![ctl.clone()];
        for p in ports {
            let mut spec = format!(
                "--port={},socket={},channel={},mode={}",
                p.name,
                p.socket.display(),
                p.channel,
                if p.connect { "connect" } else { "listen" }
            );
            if let Some(mac) = p.mac {
                spec.push_str(&format!(",mac={mac}"));
            }
            args.push(spec);
            if !p.connect {
                ready.push(p.socket.clone());
            }
        }
        args.push(format!("--ctl={}", ctl.display()));
        args.push("--log-level=info".into());
        let run = Running::start(&args, &ready);
        Vswitch {
            run: Some(run),
            ctl,
        }
    }

    pub fn pid(&self) -> i32 {
        self.run.as_ref().map_or(0, Running::pid)
    }

    fn ctl_json(&self, cmd: &str) -> Value {
        let ctl = self.ctl.display().to_string();
        let out = run_to_end(&["ctl", "--ctl", &ctl, cmd]);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "vswitch ctl {cmd} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("ctl {cmd}: {e}: {text}"))
    }

    /// `vswitch ctl stats`.
    pub fn stats(&self) -> Stats {
        Stats(self.ctl_json("stats"))
    }

    /// Whether a frontend is attached to port `name` (`vswitch ctl ports`).
    pub fn connected(&self, name: &str) -> bool {
        let ports = self.ctl_json("ports");
        let p = ports
            .as_array()
            .and_then(|a| a.iter().find(|p| p["name"] == name))
            .unwrap_or_else(|| panic!("no port {name}: {ports}"));
        p["connected"]
            .as_bool()
            .unwrap_or_else(|| panic!("no 'connected' for {name}: {p}"))
    }

    /// The FDB's port for `mac` in channel `svid` (`vswitch ctl fdb`).
    pub fn fdb_port(&self, svid: u16, mac: &str) -> Option<String> {
        let fdb = self.ctl_json("fdb");
        fdb.as_array()?
            .iter()
            .find(|e| e["channel"] == svid && e["mac"].as_str().is_some_and(|m| m == mac))
            .and_then(|e| e["port"].as_str().map(str::to_owned))
    }

    /// CPU time (user + system) the switch process has used so far.
    pub fn cpu_time(&self) -> Duration {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid()))
            .unwrap_or_else(|e| panic!("/proc/{}/stat: {e}", self.pid()));
        // Fields after the parenthesised command name: state is field 3; utime, stime 14, 15.
        let rest = &stat[stat.rfind(')').expect("stat format") + 2..];
        let f: Vec<&str> = rest.split_whitespace().collect();
        let ticks: u64 =
            f[11].parse::<u64>().expect("utime") + f[12].parse::<u64>().expect("stime");
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
        Duration::from_nanos(ticks * 1_000_000_000 / hz)
    }

    /// SIGTERM; asserts a clean exit and returns its log (with the final counters).
    pub fn stop(mut self) -> String {
        let run = self.run.take().expect("running");
        let (status, log) = run.stop_with(libc::SIGTERM);
        assert!(status.success(), "vswitch exited with {status}:\n{log}");
        log
    }
}

impl Drop for Vswitch {
    fn drop(&mut self) {
        // Running kills its child by PID on drop.
        self.run.take();
    }
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

/// Writes `frames` as a classic pcap file (microsecond timestamps, Ethernet link type).
pub fn write_pcap(path: &Path, frames: &[Vec<u8>]) {
    let mut b = Vec::new();
    b.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    b.extend_from_slice(&2u16.to_le_bytes());
    b.extend_from_slice(&4u16.to_le_bytes());
    b.extend_from_slice(&0i32.to_le_bytes()); // thiszone
    b.extend_from_slice(&0u32.to_le_bytes()); // sigfigs
    b.extend_from_slice(&65535u32.to_le_bytes()); // snaplen
    b.extend_from_slice(&1u32.to_le_bytes()); // LINKTYPE_ETHERNET
    for (i, f) in frames.iter().enumerate() {
        let len = u32::try_from(f.len()).expect("frame length");
        b.extend_from_slice(&(i as u32 / 1000).to_le_bytes());
        b.extend_from_slice(&((i as u32 % 1000) * 1000).to_le_bytes());
        b.extend_from_slice(&len.to_le_bytes());
        b.extend_from_slice(&len.to_le_bytes());
        b.extend_from_slice(f);
    }
    std::fs::write(path, b).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}

/// Reads the frames of a classic pcap file (either byte order, µs or ns timestamps).
pub fn read_pcap(path: &Path) -> Vec<Vec<u8>> {
    let b = std::fs::read(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    assert!(b.len() >= 24, "{}: no pcap header", path.display());
    let magic = [b[0], b[1], b[2], b[3]];
    let le = match magic {
        [0xd4, 0xc3, 0xb2, 0xa1] | [0x4d, 0x3c, 0xb2, 0xa1] => true,
        [0xa1, 0xb2, 0xc3, 0xd4] | [0xa1, 0xb2, 0x3c, 0x4d] => false,
        _ => panic!("{}: not a pcap file (magic {magic:02x?})", path.display()),
    };
    let u32_at = |o: usize| {
        let w = [b[o], b[o + 1], b[o + 2], b[o + 3]];
        if le {
            u32::from_le_bytes(w)
        } else {
            u32::from_be_bytes(w)
        }
    };
    let mut frames = Vec::new();
    let mut o = 24;
    while o + 16 <= b.len() {
        let caplen = u32_at(o + 8) as usize;
        let origlen = u32_at(o + 12) as usize;
        assert!(
            o + 16 + caplen <= b.len(),
            "{}: truncated record",
            path.display()
        );
        assert_eq!(caplen, origlen, "{}: a frame was cut", path.display());
        frames.push(b[o + 16..o + 16 + caplen].to_vec());
        o += 16 + caplen;
    }
    frames
}
