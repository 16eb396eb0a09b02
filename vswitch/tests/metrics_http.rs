//! Prometheus over HTTP (`vswitch run --metrics ADDR`): the real binary, real test guests
//! sending frames through it, the exposition checked by `promtool check metrics`, and a real
//! Prometheus server started by the test scraping it every second and answering one counter
//! back through its query API.

mod bin_util;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bin_util::{Running, DEADLINE};
use serde_json::Value;
use tempfile::TempDir;
use vswitch_testguest::{EthFrame, GuestConfig, TestGuest};

const T: Duration = Duration::from_secs(5);
/// Frames vm1 sends to vm2: what the counters must say.
const FRAMES: u32 = 7;

/// A port on 127.0.0.1 that was free a moment ago.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// The switch with vm1 and vm2 on channel 100 and metrics on a free port; vm1 has sent
/// [`FRAMES`] frames to vm2, which received them.
struct Fixture {
    _dir: TempDir,
    metrics: String,
    _sw: Running,
    _guests: (TestGuest, TestGuest),
}

impl Fixture {
    fn start() -> Fixture {
        let d = TempDir::new().expect("tempdir");
        let sock = |n: &str| d.path().join(format!("{n}.sock"));
        let metrics = format!("127.0.0.1:{}", free_port());
        let ctl = sock("ctl");
        let sw = Running::start(
            &[
                format!("--port=vm1,socket={},channel=100", sock("vm1").display()),
                format!("--port=vm2,socket={},channel=100", sock("vm2").display()),
                format!("--ctl={}", ctl.display()),
                format!("--metrics={metrics}"),
                "--log-level=warn".into(),
            ],
            &[sock("vm1"), sock("vm2"), ctl],
        );
        let guest = |i: u8| {
            let cfg = GuestConfig {
                mac: [0x52, 0x54, 0, 0, 0, i],
                ..GuestConfig::default()
            };
            let mut g = TestGuest::connect(&sock(&format!("vm{i}")), cfg).expect("connect");
            g.post_rx(128).expect("post rx");
            g
        };
        let (mut vm1, mut vm2) = (guest(1), guest(2));
        for seq in 0..FRAMES {
            let f = EthFrame::new(vm2.mac(), vm1.mac(), 0x88b5, &seq.to_be_bytes()).build();
            vm1.send(&f).expect("send");
            vm1.reclaim_tx();
            assert_eq!(vm2.recv(T), Some(f), "frame {seq} forwarded");
        }
        Fixture {
            _dir: d,
            metrics,
            _sw: sw,
            _guests: (vm1, vm2),
        }
    }
}

/// Sends `request` to `addr` and reads the answer until the server closes (bounded).
fn http(addr: &str, request: &[u8]) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.set_read_timeout(Some(T)).expect("timeout");
    s.set_write_timeout(Some(T)).expect("timeout");
    s.write_all(request).expect("send request");
    // Until the server closes; a reset after the answer (a refused client) keeps what came.
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n @ 1..) = s.read(&mut buf) {
        answer.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {text:?}"));
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_owned();
    (status, body)
}

fn get(addr: &str, path: &str) -> (u16, String) {
    http(
        addr,
        format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes(),
    )
}

/// A program on PATH, or `None` (the caller prints its skip line).
fn program(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    })
}

#[test]
fn metrics_are_served_over_http_and_pass_promtool() {
    let f = Fixture::start();
    let (status, body) = get(&f.metrics, "/metrics");
    assert_eq!(status, 200, "{body}");
    for want in [
        format!("vswitch_port_in_frames_total{{port=\"vm1\"}} {FRAMES}"),
        format!("vswitch_port_out_frames_total{{port=\"vm2\"}} {FRAMES}"),
        format!("vswitch_channel_in_frames_total{{channel=\"100\"}} {FRAMES}"),
        "vswitch_port_connected{port=\"vm1\"} 1".into(),
        // vm1 was learned; vm2 never sent.
        "vswitch_fdb_entries{channel=\"100\"} 1".into(),
        "vswitch_port_drops_total{port=\"vm1\",reason=\"source_spoof\"} 0".into(),
        "# TYPE vswitch_port_in_frames_total counter".into(),
    ] {
        assert!(body.contains(&want), "no {want:?} in:\n{body}");
    }

    match program("promtool") {
        None => eprintln!(
            "promtool check: skipped: promtool not found (Debian package prometheus; \
             ci/install-deps.sh installs it)"
        ),
        Some(promtool) => {
            let mut child = Command::new(promtool)
                .args(["check", "metrics"])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn promtool");
            child
                .stdin
                .take()
                .expect("stdin")
                .write_all(body.as_bytes())
                .expect("feed promtool");
            let out = bin_util::wait_output(child);
            assert!(
                out.status.success(),
                "promtool check metrics: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }

    // Other paths, other methods, junk and oversized requests get their status, not metrics.
    assert_eq!(get(&f.metrics, "/").0, 404);
    assert_eq!(get(&f.metrics, "/metricsx").0, 404);
    assert_eq!(http(&f.metrics, b"POST /metrics HTTP/1.0\r\n\r\n").0, 405);
    assert_eq!(http(&f.metrics, b"\x00\x01\x02 junk\r\n\r\n").0, 400);
    let huge = format!("GET /metrics HTTP/1.0\r\nX: {}\r\n\r\n", "a".repeat(9000));
    assert_eq!(http(&f.metrics, huge.as_bytes()).0, 431);
}

#[test]
fn metrics_connections_are_bounded_and_slow_clients_dropped() {
    let f = Fixture::start();
    // Eight clients that say nothing hold every slot: the ninth is told so at once.
    let idle: Vec<TcpStream> = (0..8)
        .map(|_| TcpStream::connect(&f.metrics).expect("connect"))
        .collect();
    let start = Instant::now();
    let mut status = 0;
    while start.elapsed() < DEADLINE {
        status = get(&f.metrics, "/metrics").0;
        if status == 503 {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(status, 503, "a ninth connection was served");
    // A silent client is dropped after the request deadline (5 s), not held forever.
    let mut first = idle.into_iter().next().expect("a client");
    first
        .set_read_timeout(Some(Duration::from_secs(15)))
        .expect("timeout");
    let mut buf = [0u8; 16];
    let t0 = Instant::now();
    let n = first.read(&mut buf).unwrap_or(0);
    assert_eq!(n, 0, "the server answered a request never sent");
    assert!(
        t0.elapsed() < Duration::from_secs(12),
        "a silent client was held {:?}",
        t0.elapsed()
    );
    // Once the silent ones are gone, scrapes are served again.
    let start = Instant::now();
    loop {
        if get(&f.metrics, "/metrics").0 == 200 {
            break;
        }
        assert!(start.elapsed() < DEADLINE, "never served again");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A Prometheus server of the test's own, killed (by its PID) on drop.
struct Prometheus {
    child: Child,
    web: String,
}

impl Prometheus {
    fn start(bin: &Path, dir: &Path, target: &str) -> Prometheus {
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  \
                 - job_name: vswitch\n    static_configs:\n      - targets: ['{target}']\n"
            ),
        )
        .expect("write prometheus.yml");
        let web = format!("127.0.0.1:{}", free_port());
        let log = std::fs::File::create(dir.join("prometheus.log")).expect("log file");
        let child = Command::new(bin)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={web}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn prometheus");
        Prometheus { child, web }
    }

    /// The value of the instant query `q`, once it has one.
    fn query(&self, q: &str) -> Option<String> {
        let enc: String = q
            .bytes()
            .map(|b| match b {
                b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' => (b as char).to_string(),
                _ => format!("%{b:02X}"),
            })
            .collect();
        let mut s = TcpStream::connect(&self.web).ok()?;
        s.set_read_timeout(Some(T)).ok()?;
        let req = format!("GET /api/v1/query?query={enc} HTTP/1.0\r\nHost: x\r\n\r\n");
        s.write_all(req.as_bytes()).ok()?;
        let mut answer = String::new();
        s.read_to_string(&mut answer).ok()?;
        let body: Value = serde_json::from_str(answer.split_once("\r\n\r\n")?.1).ok()?;
        body["data"]["result"][0]["value"][1]
            .as_str()
            .map(str::to_owned)
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_prometheus_server_scrapes_the_switch_counters() {
    let Some(bin) = program("prometheus") else {
        eprintln!(
            "skipped: prometheus not found (Debian package prometheus; ci/install-deps.sh \
             installs it)"
        );
        return;
    };
    let f = Fixture::start();
    let dir = TempDir::new().expect("tempdir");
    let mut prom = Prometheus::start(&bin, dir.path(), &f.metrics);
    let query = "vswitch_port_in_frames_total{port=\"vm1\"}";
    let start = Instant::now();
    let value = loop {
        if let Some(v) = prom.query(query) {
            break v;
        }
        if let Ok(Some(status)) = prom.child.try_wait() {
            let log = std::fs::read_to_string(dir.path().join("prometheus.log"));
            panic!("prometheus exited ({status}): {}", log.unwrap_or_default());
        }
        assert!(
            start.elapsed() < DEADLINE,
            "prometheus never had {query}; its log:\n{}",
            std::fs::read_to_string(dir.path().join("prometheus.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(250));
    };
    eprintln!("prometheus: {query} = {value}");
    assert_eq!(value, FRAMES.to_string());
}

#[test]
fn a_bad_or_busy_metrics_address_stops_the_start_with_a_message() {
    let d = TempDir::new().expect("tempdir");
    let port = format!(
        "--port=vm1,socket={},channel=100",
        d.path().join("a.sock").display()
    );
    let ctl = format!("--ctl={}", d.path().join("ctl.sock").display());
    let out = bin_util::run_to_end(&["run", &port, &ctl, "--metrics", "localhost:9471"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--metrics") && err.contains("IP:PORT"),
        "{err}"
    );

    let busy = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = busy.local_addr().expect("addr").to_string();
    let out = bin_util::run_to_end(&["run", &port, &ctl, "--metrics", &addr]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("cannot serve metrics on {addr}")),
        "{err}"
    );
    assert!(
        !d.path().join("a.sock").exists() && !d.path().join("ctl.sock").exists(),
        "sockets left behind"
    );
}
