//! Test harness: a private DPDK testpmd (net_vhost, io-forward port 0 -> port 0), temp dirs, and
//! frame helpers. Every spawned process is killed by PID when its guard drops.

#![allow(dead_code)]

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

pub const TESTPMD: &str = "/usr/bin/dpdk-testpmd";

/// testpmd pins its forwarding lcore: run one at a time so tests stay fast on 2 cores.
static SERIAL: Mutex<()> = Mutex::new(());
static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A temporary directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let p = std::env::temp_dir().join(format!("tg-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A running testpmd; killed (SIGTERM, then SIGKILL) by PID on drop.
pub struct Testpmd {
    child: Child,
    _stdin: Option<ChildStdin>,
    pub dir: TempDir,
    pub sock: PathBuf,
    _serial: MutexGuard<'static, ()>,
}

impl Testpmd {
    /// Starts testpmd with one net_vhost port. `client = false`: testpmd creates the socket
    /// (the guest connects); `client = true`: testpmd connects to a socket the guest listens on.
    pub fn start(client: bool) -> Self {
        Self::start_at(client, None)
    }

    /// Like [`Testpmd::start`], on a chosen socket path (to restart a backend on the same socket).
    pub fn start_at(client: bool, sock: Option<PathBuf>) -> Self {
        assert!(
            Path::new(TESTPMD).exists(),
            "{TESTPMD} is missing: run `sudo ci/install-deps.sh` (Debian package dpdk-dev) \
             to install DPDK testpmd, the third-party vhost-user backend these tests need"
        );
        let serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let dir = TempDir::new("testpmd");
        let sock = sock.unwrap_or_else(|| dir.path("vhost.sock"));
        let prefix = format!(
            "tg{}x{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        );
        let vdev = format!(
            "net_vhost0,iface={},queues=1,client={}",
            sock.display(),
            u8::from(client)
        );
        let log = std::fs::File::create(dir.path("testpmd.log")).unwrap();
        let mut child = Command::new(TESTPMD)
            .args(["-l", "0-1", "--no-pci", "--no-huge", "-m", "256"])
            .arg(format!("--file-prefix={prefix}"))
            .args(["--vdev", &vdev, "--"])
            .args([
                "--total-num-mbufs=16384",
                "--forward-mode=io",
                "--auto-start",
                // Frames the guest sends before forwarding starts must not be flushed.
                "--no-flush-rx",
                "--nb-cores=1",
                "--rxq=1",
                "--txq=1",
            ])
            .env("RUNTIME_DIRECTORY", &dir.0)
            .stdin(Stdio::piped())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn dpdk-testpmd");
        let stdin = child.stdin.take();
        Testpmd {
            child,
            _stdin: stdin,
            dir,
            sock,
            _serial: serial,
        }
    }

    /// testpmd's output so far (for failure messages).
    pub fn log(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = std::fs::File::open(self.dir.path("testpmd.log")) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }

    /// Whether testpmd is still running.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Testpmd {
    fn drop(&mut self) {
        let pid = self.child.id() as libc::pid_t;
        // SAFETY: `pid` is our own child, not yet reaped (we wait for it below).
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A test frame of exactly `len` bytes with a recognisable payload.
pub fn frame(len: usize, seq: u32, src: [u8; 6]) -> Vec<u8> {
    let mut f = vswitch_testguest::EthFrame::new(
        [0x02, 0, 0, 0, 0, 0x02],
        src,
        vswitch_testguest::frame::ETH_P_EXPERIMENTAL,
        &[],
    )
    .unpadded()
    .build();
    f.extend_from_slice(&seq.to_be_bytes());
    let mut x = seq.wrapping_mul(2654435761);
    while f.len() < len {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        f.push(x as u8);
    }
    f.truncate(len);
    f
}
