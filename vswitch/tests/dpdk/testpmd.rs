//! The dpdk-testpmd process: found on PATH, started with its vdevs, stopped or killed by PID.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use super::output::{tail, Output};
use super::stats::{parse_forward_stats, PortStats};
use super::vdev::Vdev;
use super::{QUEUE_SIZE, START_DEADLINE, WAIT};

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
