//! DPDK testpmd as a reference vhost-user backend: N `net_vhost` ports, io forwarding
//! (port 0 ↔ port 1, 2 ↔ 3, ...). Used to validate the QEMU harness without the switch, and as
//! the baseline the switch is measured against. Runs without hugepages (`--no-huge`, memfd).

use crate::util::{check_socket_path, find_binary, find_bytes, terminate_child, OutputBuf};
use anyhow::{bail, Context, Result};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// One vhost-user port of testpmd.
#[derive(Debug, Clone)]
pub struct TestpmdPort {
    pub socket: PathBuf,
    /// false (`client=0`): testpmd creates and listens on the socket (QEMU connects, QEMU
    /// [`SocketRole::Client`](crate::SocketRole::Client)); true (`client=1`): testpmd connects
    /// to a socket QEMU listens on (QEMU `SocketRole::Server`), retrying until it exists.
    pub client: bool,
}

impl TestpmdPort {
    pub fn listen(socket: impl Into<PathBuf>) -> Self {
        Self {
            socket: socket.into(),
            client: false,
        }
    }
    pub fn connect(socket: impl Into<PathBuf>) -> Self {
        Self {
            socket: socket.into(),
            client: true,
        }
    }
}

/// A running dpdk-testpmd. Killed on drop.
pub struct Testpmd {
    child: Child,
    stdin: Option<ChildStdin>,
    out: Arc<OutputBuf>,
    readers: Vec<JoinHandle<()>>,
    log: PathBuf,
}

impl std::fmt::Debug for Testpmd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Testpmd")
            .field("pid", &self.child.id())
            .field("log", &self.log)
            .finish()
    }
}

impl Testpmd {
    /// Starts testpmd with `ports` (an even number) in io forwarding, using `lcores` (e.g.
    /// "0-1": the first is the main lcore, the second busy-polls). `dir` holds its runtime files
    /// and `testpmd.log`. Returns once forwarding has started and every listening socket exists.
    pub fn spawn(dir: &Path, ports: &[TestpmdPort], lcores: &str) -> Result<Self> {
        Self::spawn_with(dir, ports, lcores, &[])
    }

    /// Like [`spawn`](Self::spawn), with extra testpmd application arguments (after `--`).
    pub fn spawn_with(
        dir: &Path,
        ports: &[TestpmdPort],
        lcores: &str,
        extra_app_args: &[&str],
    ) -> Result<Self> {
        if ports.is_empty() || ports.len() & 1 != 0 {
            bail!("testpmd io forwarding needs an even, non-zero number of ports");
        }
        let mut args: Vec<String> = vec!["-l".into(), lcores.into()];
        for (i, p) in ports.iter().enumerate() {
            check_socket_path(&p.socket)?;
            let s = p
                .socket
                .to_str()
                .with_context(|| format!("socket path {} is not UTF-8", p.socket.display()))?;
            if s.contains(',') {
                bail!("socket path {s} contains ','");
            }
            args.push("--vdev".into());
            args.push(format!(
                "net_vhost{i},iface={s},queues=1,client={}",
                u8::from(p.client)
            ));
        }
        args.extend(
            [
                "--",
                "--total-num-mbufs=16384",
                "--forward-mode=io",
                "--auto-start",
                "--nb-cores=1",
                "--rxq=1",
                "--txq=1",
            ]
            .iter()
            .map(|s| s.to_string()),
        );
        args.extend(extra_app_args.iter().map(|s| s.to_string()));
        let listening: Vec<&Path> = ports
            .iter()
            .filter(|p| !p.client)
            .map(|p| p.socket.as_path())
            .collect();
        // Ready when forwarding started ("Press enter to exit"), or at least (no stdbuf) when
        // every listening socket exists and testpmd still runs.
        Self::launch(
            dir,
            args,
            &[b"Press enter to exit", b"Start automatic"],
            &listening,
        )
    }

    /// Starts testpmd as a DPDK virtio-user frontend: one port, `net_virtio_user0` connecting
    /// to the backend listening on `socket` (`queues=1`, plus `devargs`, e.g.
    /// `mac=..,queue_size=4096`), its lcores placed by EAL `--lcores` (e.g. "0@1,1@1": main
    /// and forwarding lcore both on CPU 1), with `app_args` after `--` (the forward mode,
    /// `--stats-period`, descriptor counts). Returns once packet forwarding has started.
    pub fn spawn_virtio_user(
        dir: &Path,
        socket: &Path,
        devargs: &str,
        lcores: &str,
        app_args: &[&str],
    ) -> Result<Self> {
        check_socket_path(socket)?;
        let s = socket
            .to_str()
            .with_context(|| format!("socket path {} is not UTF-8", socket.display()))?;
        if s.contains(',') {
            bail!("socket path {s} contains ','");
        }
        let mut args: Vec<String> = vec![
            format!("--lcores={lcores}"),
            "--vdev".into(),
            format!("net_virtio_user0,path={s},queues=1,{devargs}"),
            "--".into(),
        ];
        args.extend(app_args.iter().map(|s| s.to_string()));
        // Without `-i` testpmd prints this when it starts forwarding (with `--stats-period`
        // it never prints "Press enter to exit" before it is told to quit).
        Self::launch(
            dir,
            args,
            &[b"start packet forwarding", b"Press enter to exit"],
            &[],
        )
    }

    /// Starts dpdk-testpmd with the common EAL arguments (no PCI, no hugepages, its own file
    /// prefix) followed by `args`; waits until one of `ready` appears in its output and every
    /// socket of `listening` exists.
    fn launch(dir: &Path, args: Vec<String>, ready: &[&[u8]], listening: &[&Path]) -> Result<Self> {
        let bin = find_binary("dpdk-testpmd")?;
        let prefix = format!(
            "vswtp{}-{}",
            std::process::id(),
            dir.file_name()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default()
        );
        let mut all: Vec<String> = vec![
            "--no-pci".into(),
            "--no-huge".into(),
            "-m".into(),
            "256".into(),
            format!("--file-prefix={prefix}"),
            "--log-level=user1,info".into(),
        ];
        all.extend(args);
        let args = all;

        let log = dir.join("testpmd.log");
        let logf =
            std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        // testpmd's printf output is block-buffered into a pipe: run it line-buffered through
        // coreutils' stdbuf when available, so its log and readiness line arrive in time.
        let mut cmd = match find_binary("stdbuf") {
            Ok(stdbuf) => {
                let mut c = Command::new(stdbuf);
                c.arg("-oL").arg(&bin);
                c
            }
            Err(_) => Command::new(&bin),
        };
        let mut child = cmd
            .args(&args)
            .env("RUNTIME_DIRECTORY", dir)
            .env("XDG_RUNTIME_DIR", dir)
            // testpmd without -i forwards until a line arrives on stdin (EOF ends it at once):
            // keep the pipe open for its lifetime.
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        log::info!(
            "testpmd pid {}: {} {}",
            child.id(),
            bin.display(),
            args.join(" ")
        );
        let stdin = child.stdin.take();
        let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
            crate::util::kill_child(&mut child);
            bail!("testpmd's stdio pipes were not created");
        };
        let echo = std::env::var("VSW_GUEST_CONSOLE").is_ok_and(|v| v == "1");
        let (out, h1) = OutputBuf::collect(stdout, Some(logf), echo.then(|| "testpmd".to_string()));
        let err_log = std::fs::File::create(dir.join("testpmd.stderr")).ok();
        let (errb, h2) = OutputBuf::collect(stderr, err_log, echo.then(|| "testpmd!".to_string()));
        let mut me = Self {
            child,
            stdin,
            out,
            readers: vec![h1, h2],
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        let started = me
            .out
            .wait_for(0, deadline, |d| ready.iter().find_map(|r| find_bytes(d, r)));
        let ok = matches!(started, Ok(Some(_)))
            && listening.iter().all(|p| {
                crate::util::wait_until(Duration::from_secs(5), Duration::from_millis(20), || {
                    p.exists()
                })
            });
        if !ok {
            let out = me.out.tail(30);
            let err = errb.tail(30);
            me.kill();
            bail!(
                "dpdk-testpmd did not start forwarding (log {}):\n{out}\n--- stderr ---\n{err}",
                me.log.display()
            );
        }
        Ok(me)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything testpmd printed so far.
    pub fn output(&self) -> String {
        self.out.text()
    }

    /// Stops forwarding the polite way (a line on stdin: testpmd prints its port statistics and
    /// exits) and returns its whole output; kills it if it takes more than 10 s.
    pub fn stop(mut self) -> Result<String> {
        let from = self.out.len();
        if let Some(stdin) = self.stdin.as_mut() {
            let _ = stdin.write_all(b"\n").and_then(|_| stdin.flush());
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        let _ = self
            .out
            .wait_for(from, deadline, |d| find_bytes(d, b"Bye..."));
        self.kill();
        Ok(self.out.text())
    }

    /// Kills testpmd (SIGTERM, then SIGKILL after 2 s) by PID and reaps it. Idempotent.
    pub fn kill(&mut self) {
        self.stdin = None;
        terminate_child(&mut self.child, Duration::from_secs(2));
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
