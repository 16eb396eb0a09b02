//! The `vswitch` binary in event mode (its default) with DPDK's virtio PMD as generator and
//! sink: dpdk-testpmd `net_virtio_user` frontends, `--forward-mode=txonly` into
//! `--forward-mode=rxonly`, both busy-polling on one CPU (the last one), the switch unpinned.
//! DPDK's driver does not negotiate EVENT_IDX, so kicks are governed by the used rings' flags.
//!
//! - [`dpdk_pmd_negotiates_in_order_and_uses_its_in_order_paths`]: the PMD's own debug log says
//!   VIRTIO_F_IN_ORDER was negotiated and which TX/RX functions it chose; frames pass.
//! - [`event_mode_forwards_every_second_of_many_short_runs`]: eight runs of two seconds, each
//!   with a fresh switch and fresh frontends: in every second of every run the switch drains
//!   the generator and delivers to the sink (a lost wake-up stalls a run: the generator's ring
//!   fills, it never kicks again), and the sink does not kick its RX queue for every refill
//!   (the switch never waits for RX buffers, so it asks for no RX kicks: a kick per burst cost
//!   the sink, on the CPU it shares with the generator, 10,000-20,000 syscalls a second).
//!
//! Without dpdk-testpmd both skip with one line. No hugepages needed: testpmd runs with
//! `--no-huge` (its memory is a memfd, shared with the switch).

use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use vswitch_tests::util::{find_bytes, kill_child, OutputBuf};
use vswitch_tests::{find_binary, ScratchDir, Stats, Vswitch, VswitchPort};

const GEN_MAC: &str = "02:00:00:00:16:01";
const SINK_MAC: &str = "02:00:00:00:16:02";
/// Ring size of both frontends (the collapse: the generator's 4096-entry ring full).
const QUEUE_SIZE: u32 = 4096;
const RUNS: u32 = 8;
const RUN_SECS: u32 = 2;
/// Most write syscalls the sink may make in a run (stdout lines included): a kick per RX
/// refill is thousands a second.
const SINK_WRITES_PER_RUN: u64 = 1000;
/// Hang guards, not measurements.
const START: Duration = Duration::from_secs(30);
const FLOW: Duration = Duration::from_secs(20);

/// dpdk-testpmd, or `None` after printing why the test skips.
fn testpmd_or_skip(test: &str) -> Option<PathBuf> {
    match find_binary("dpdk-testpmd") {
        Ok(p) => Some(p),
        Err(e) => {
            eprintln!(
                "SKIP {test}: dpdk-testpmd not available ({e}); ci/install-deps.sh installs it"
            );
            None
        }
    }
}

/// The CPU both frontends busy-poll on: the last one.
fn frontend_cpu() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get()) - 1
}

/// One dpdk-testpmd with one `net_virtio_user` port. Killed by PID on drop.
struct Frontend {
    name: String,
    child: Child,
    _stdin: Option<ChildStdin>,
    out: Arc<OutputBuf>,
    /// The PMD's log goes to stderr.
    err: Arc<OutputBuf>,
    readers: Vec<JoinHandle<()>>,
}

impl Frontend {
    fn start(
        bin: &Path,
        dir: &Path,
        name: &str,
        socket: &Path,
        mac: &str,
        app: &[&str],
    ) -> Frontend {
        let rt = dir.join(format!("rt-{name}"));
        std::fs::create_dir_all(&rt).expect("runtime dir");
        let cpu = frontend_cpu();
        let sock = socket.to_str().expect("UTF-8 socket path");
        let mut args: Vec<String> = vec![
            format!("--lcores=0@{cpu},1@{cpu}"),
            "--no-pci".into(),
            "--no-huge".into(),
            "-m".into(),
            "256".into(),
            format!("--file-prefix=vswev{}-{name}", std::process::id()),
            "--log-level=pmd.net.virtio.*:debug".into(),
            "--vdev".into(),
            format!("net_virtio_user0,path={sock},queues=1,mac={mac},queue_size={QUEUE_SIZE}"),
            "--".into(),
            "--total-num-mbufs=32768".into(),
            format!("--rxd={QUEUE_SIZE}"),
            format!("--txd={QUEUE_SIZE}"),
            "--nb-cores=1".into(),
            "--rxq=1".into(),
            "--txq=1".into(),
            "--auto-start".into(),
        ];
        args.extend(app.iter().map(|s| s.to_string()));
        // Line-buffered output (stdbuf execs testpmd: the PID stays testpmd's); without -i it
        // forwards until a line arrives on stdin, which stays open for its lifetime.
        let stdbuf = find_binary("stdbuf").expect("stdbuf (coreutils)");
        let mut child = Command::new(stdbuf)
            .arg("-oL")
            .arg(bin)
            .args(&args)
            .env("RUNTIME_DIRECTORY", &rt)
            .env("XDG_RUNTIME_DIR", &rt)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting dpdk-testpmd");
        let stdin = child.stdin.take();
        let log = std::fs::File::create(dir.join(format!("{name}.log"))).ok();
        let (out, h1) = OutputBuf::collect(child.stdout.take().expect("stdout"), log, None);
        let (err, h2) = OutputBuf::collect(child.stderr.take().expect("stderr"), None, None);
        let me = Frontend {
            name: name.to_owned(),
            child,
            _stdin: stdin,
            out,
            err,
            readers: vec![h1, h2],
        };
        let ready = me.out.wait_for(0, Instant::now() + START, |d| {
            find_bytes(d, b"Press enter to exit")
        });
        assert!(
            matches!(ready, Ok(Some(_))),
            "testpmd {name} did not start forwarding:\n{}\n--- stderr ---\n{}",
            me.out.tail(30),
            me.err.tail(20)
        );
        me
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// write(2) calls the process made so far (/proc/PID/io `syscw`).
    fn writes(&self) -> u64 {
        let io = std::fs::read_to_string(format!("/proc/{}/io", self.pid())).unwrap_or_default();
        io.lines()
            .find_map(|l| l.strip_prefix("syscw:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    }

    /// Everything it printed so far, stdout then stderr.
    fn output(&self) -> String {
        self.out.text() + &self.err.text()
    }
}

impl Drop for Frontend {
    fn drop(&mut self) {
        // SIGKILL by PID: a frontend that vanishes is what the switch must survive anyway.
        kill_child(&mut self.child);
        for h in self.readers.drain(..) {
            let _ = h.join();
        }
        log::debug!("testpmd {} stopped", self.name);
    }
}

/// A switch with ports `gen` and `sink` on channel 100, in event mode.
fn switch(dir: &ScratchDir) -> (Vswitch, PathBuf, PathBuf) {
    let (g, s) = (
        dir.socket_path("gen.sock").expect("socket path"),
        dir.socket_path("sink.sock").expect("socket path"),
    );
    let sw = Vswitch::start(
        dir.path(),
        &[
            VswitchPort::listen("gen", &g, 100),
            VswitchPort::listen("sink", &s, 100),
        ],
    )
    .expect("starting vswitch");
    (sw, g, s)
}

fn sink_args() -> Vec<&'static str> {
    vec!["--forward-mode=rxonly", "--no-flush-rx"]
}

fn gen_args() -> Vec<String> {
    vec![
        "--forward-mode=txonly".into(),
        "--txpkts=64".into(),
        format!("--eth-peer=0,{SINK_MAC}"),
    ]
}

/// (frames the switch drained from gen, frames it wrote into sink).
fn counts(st: &Stats) -> (u64, u64) {
    let c = |port: &str, k: &str| {
        st.port(port)
            .ok()
            .and_then(|p| p.port.get(k).copied())
            .unwrap_or(0)
    };
    (c("gen", "from_guest_frames"), c("sink", "to_guest_frames"))
}

fn wait_flow(sw: &Vswitch, what: &str) {
    let start = Instant::now();
    loop {
        let st = sw.stats().expect("stats");
        if counts(&st).1 > 0 {
            return;
        }
        assert!(
            start.elapsed() < FLOW,
            "{what}: no frame reached the sink in {FLOW:?}\n{}",
            st.summary()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn dpdk_pmd_negotiates_in_order_and_uses_its_in_order_paths() {
    let Some(bin) = testpmd_or_skip("dpdk_pmd_negotiates_in_order_and_uses_its_in_order_paths")
    else {
        return;
    };
    let dir = ScratchDir::new("inorder").expect("scratch dir");
    let (sw, g, s) = switch(&dir);
    let sink = Frontend::start(&bin, dir.path(), "sink", &s, SINK_MAC, &sink_args());
    let gen_args = gen_args();
    let gen_args: Vec<&str> = gen_args.iter().map(String::as_str).collect();
    let gen = Frontend::start(&bin, dir.path(), "gen", &g, GEN_MAC, &gen_args);
    wait_flow(&sw, "in-order frontends");
    for fe in [&gen, &sink] {
        let log = fe.output();
        // "features after negotiate = 910018020": the acked set, in hex.
        let acked = log
            .lines()
            .find_map(|l| l.split("features after negotiate = ").nth(1))
            .and_then(|v| u64::from_str_radix(v.trim().trim_start_matches("0x"), 16).ok())
            .unwrap_or_else(|| panic!("{}: no negotiated features in its log:\n{log}", fe.name));
        assert_ne!(
            acked & (1 << 35),
            0,
            "{}: IN_ORDER not negotiated ({acked:#x})",
            fe.name
        );
        for path in ["using inorder Tx path", "using inorder Rx path"] {
            assert!(
                log.contains(path),
                "{}: the PMD did not choose its in-order path ({path}):\n{}",
                fe.name,
                log.lines()
                    .filter(|l| l.contains("set_rxtx_funcs"))
                    .collect::<Vec<_>>()
                    .join("\n")
            );
        }
    }
    let st = sw.stats().expect("stats");
    for p in ["gen", "sink"] {
        let ps = st.port(p).expect("port");
        for k in ["tx_bad_descriptor", "rx_bad_descriptor"] {
            assert_eq!(ps.port.get(k).copied().unwrap_or(0), 0, "{p}.{k}");
        }
    }
    eprintln!("in order: {}", st.summary());
}

#[test]
fn event_mode_forwards_every_second_of_many_short_runs() {
    let Some(bin) = testpmd_or_skip("event_mode_forwards_every_second_of_many_short_runs") else {
        return;
    };
    let gen_args = gen_args();
    let gen_args: Vec<&str> = gen_args.iter().map(String::as_str).collect();
    let mut failures = Vec::new();
    for run in 1..=RUNS {
        let dir = ScratchDir::new(&format!("event{run}")).expect("scratch dir");
        let (sw, g, s) = switch(&dir);
        // Both start at once (EAL start-up takes a second or two each).
        let (sink, gen) = std::thread::scope(|sc| {
            let sink =
                sc.spawn(|| Frontend::start(&bin, dir.path(), "sink", &s, SINK_MAC, &sink_args()));
            let gen = Frontend::start(&bin, dir.path(), "gen", &g, GEN_MAC, &gen_args);
            (sink.join().expect("sink start"), gen)
        });
        wait_flow(&sw, &format!("run {run}"));
        let mut last = counts(&sw.stats().expect("stats"));
        let writes0 = sink.writes();
        let mut seconds = Vec::new();
        for _ in 0..RUN_SECS {
            std::thread::sleep(Duration::from_secs(1));
            let now = counts(&sw.stats().expect("stats"));
            seconds.push((now.0 - last.0, now.1 - last.1));
            last = now;
        }
        let sink_writes = sink.writes() - writes0;
        let st = sw.stats().expect("stats");
        let line = format!(
            "run {run}: per second (drained from gen, delivered to sink) {seconds:?}; sink \
             write syscalls {sink_writes}; no_rx_buffer {}",
            st.port("sink")
                .map_or(0, |p| p.switch.dropped("no_rx_buffer"))
        );
        eprintln!("{line}");
        if seconds.iter().any(|&(d, w)| d == 0 || w == 0) {
            failures.push(format!("{line}: stalled\n{}", st.summary()));
        }
        if sink_writes > SINK_WRITES_PER_RUN {
            failures.push(format!(
                "{line}: the sink kicked its RX queue (over {SINK_WRITES_PER_RUN} writes)"
            ));
        }
        drop(gen);
        drop(sink);
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
