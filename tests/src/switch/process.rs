//! The `vswitch run` process: found, started with its ports, killed by PID, restarted.

use super::port::{PortMode, VswitchPort};
use crate::util::{check_socket_path, find_bytes, terminate_child, OutputBuf};
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long [`Vswitch::start`] waits for the control socket and the listen-role sockets.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// Finds the `vswitch` binary: `$VSWITCH_BIN`, else `vswitch` in the cargo target directory
/// this test binary was built into (`target/<profile>/deps/<test>` or
/// `target/<profile>/examples/<example>` → `target/<profile>/vswitch`).
pub fn vswitch_binary() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("VSWITCH_BIN") {
        let p = PathBuf::from(p);
        if !p.is_file() {
            bail!("$VSWITCH_BIN is {}, which is not a file", p.display());
        }
        return Ok(p);
    }
    let exe = std::env::current_exe().context("finding the current executable")?;
    let candidates: Vec<PathBuf> = exe
        .ancestors()
        .skip(1)
        .take(2)
        .map(|d| d.join("vswitch"))
        .collect();
    for c in &candidates {
        if c.is_file() {
            return Ok(c.clone());
        }
    }
    bail!(
        "the vswitch binary was not found (looked at {}): build it with `cargo build -p vswitch` \
         (`cargo nextest run --workspace` builds it), or set $VSWITCH_BIN",
        candidates
            .iter()
            .map(|c| c.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    )
}

/// A running `vswitch run`. SIGKILLed by PID on drop.
pub struct Vswitch {
    pub(super) bin: PathBuf,
    args: Vec<String>,
    ports: Vec<VswitchPort>,
    pub(super) ctl: PathBuf,
    dir: PathBuf,
    log: PathBuf,
    child: Option<Child>,
    pub(super) out: Arc<OutputBuf>,
    readers: Vec<JoinHandle<()>>,
    starts: u32,
    /// The network namespace it runs in (`ip netns exec NS vswitch run ...`), if not this one.
    netns: Option<String>,
}

impl std::fmt::Debug for Vswitch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vswitch")
            .field("pid", &self.child.as_ref().map(Child::id))
            .field("ctl", &self.ctl)
            .field("log", &self.log)
            .finish()
    }
}

impl Vswitch {
    /// Starts `vswitch run --port ... --ctl DIR/ctl.sock` with its log in `DIR/vswitch.log`;
    /// returns once the control API answers and every listen-role socket exists.
    pub fn start(dir: &Path, ports: &[VswitchPort]) -> Result<Self> {
        Self::start_with(dir, ports, &[])
    }

    /// Like [`start`](Self::start) with extra `vswitch run` arguments (e.g. `--config FILE`,
    /// whose listen-role sockets are then not waited for unless also in `ports`).
    pub fn start_with(dir: &Path, ports: &[VswitchPort], extra: &[&str]) -> Result<Self> {
        Self::start_in(None, dir, ports, extra)
    }

    /// Like [`start_with`](Self::start_with), inside network namespace `netns` (as users run
    /// it: `ip netns exec NS vswitch run ...`; `ip` execs the switch, so the PID is the
    /// switch's).
    pub fn start_in(
        netns: Option<&str>,
        dir: &Path,
        ports: &[VswitchPort],
        extra: &[&str],
    ) -> Result<Self> {
        let bin = vswitch_binary()?;
        let ctl = dir.join("ctl.sock");
        check_socket_path(&ctl)?;
        let ctl_s = ctl
            .to_str()
            .with_context(|| format!("{} is not UTF-8", ctl.display()))?;
        let mut args: Vec<String> = vec!["run".into(), "--ctl".into(), ctl_s.into()];
        for p in ports {
            check_socket_path(&p.socket)?;
            args.push("--port".into());
            args.push(p.spec()?);
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        let mut me = Self {
            bin,
            args,
            ports: ports.to_vec(),
            ctl,
            dir: dir.to_path_buf(),
            log: dir.join("vswitch.log"),
            child: None,
            out: Arc::new(OutputBuf::default()),
            readers: Vec::new(),
            starts: 0,
            netns: netns.map(str::to_owned),
        };
        me.spawn()?;
        Ok(me)
    }

    fn spawn(&mut self) -> Result<()> {
        // A log per start, so that a restart's log is not mixed with the first one's.
        let log = if self.starts == 0 {
            self.dir.join("vswitch.log")
        } else {
            self.dir.join(format!("vswitch.{}.log", self.starts))
        };
        self.starts += 1;
        let logf =
            std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let mut cmd = match &self.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(&self.bin);
                c
            }
            None => Command::new(&self.bin),
        };
        let mut child = cmd
            .args(&self.args)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or("info".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {}", self.bin.display()))?;
        log::info!(
            "vswitch pid {}: {} {}",
            child.id(),
            self.bin.display(),
            self.args.join(" ")
        );
        let Some(stderr) = child.stderr.take() else {
            crate::util::kill_child(&mut child);
            bail!("vswitch's stderr pipe was not created");
        };
        let echo = std::env::var("VSW_GUEST_CONSOLE").is_ok_and(|v| v == "1");
        let (out, h) = OutputBuf::collect(stderr, Some(logf), echo.then(|| "vswitch".into()));
        self.out = out;
        self.readers.push(h);
        self.child = Some(child);
        self.log = log;

        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                bail!(
                    "vswitch exited during startup ({status}):\n{}",
                    self.out.tail(30)
                );
            }
            let listening = self
                .ports
                .iter()
                .filter(|p| p.mode == PortMode::Listen)
                .all(|p| p.socket.exists());
            if listening && self.ctl.exists() && self.ctl_raw(&["ports"]).is_ok() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                let tail = self.out.tail(30);
                self.kill();
                bail!(
                    "vswitch did not start within {START_TIMEOUT:?} (control socket {} and \
                     listen sockets):\n{tail}",
                    self.ctl.display()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The process id of the current `vswitch run`, if running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The control socket.
    pub fn ctl_path(&self) -> &Path {
        &self.ctl
    }

    /// The current run's log file.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// Everything the current run logged so far.
    pub fn output(&self) -> String {
        self.out.text()
    }

    /// The last `n` log lines of the current run.
    pub fn log_tail(&self, n: usize) -> String {
        self.out.tail(n)
    }

    /// Waits until the current run's log contains `needle`.
    pub fn wait_log(&self, needle: &str, timeout: Duration) -> Result<bool> {
        let found = self.out.wait_for(0, Instant::now() + timeout, |d| {
            find_bytes(d, needle.as_bytes())
        });
        Ok(found?.is_some())
    }

    /// How many file descriptors the switch process has open (from /proc), if it runs.
    pub fn open_fds(&self) -> Option<usize> {
        let pid = self.pid()?;
        std::fs::read_dir(format!("/proc/{pid}/fd"))
            .ok()
            .map(|d| d.count())
    }

    /// The switch process's descriptors, threads and memory (from /proc).
    pub fn usage(&self) -> Result<crate::usage::ProcUsage> {
        crate::usage::ProcUsage::of(self.pid().context("vswitch is not running")?)
    }

    /// True while the switch process runs.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// SIGKILLs the switch (by PID) and reaps it: a crash, nothing cleaned up. Idempotent.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            crate::util::kill_child(&mut c);
        }
        for h in self.readers.drain(..) {
            let _ = h.join();
        }
    }

    /// SIGTERMs the switch and waits for it to exit (SIGKILL after `grace`); returns its exit
    /// status.
    pub fn terminate(&mut self, grace: Duration) -> Result<ExitStatus> {
        let mut c = self.child.take().context("vswitch is not running")?;
        terminate_child(&mut c, grace);
        let status = c.wait().context("reaping vswitch")?;
        for h in self.readers.drain(..) {
            let _ = h.join();
        }
        Ok(status)
    }

    /// Kills the switch (SIGKILL) and starts it again with the same arguments; returns once the
    /// control API answers. Frontends reconnect by themselves (listen role) or are reconnected
    /// (connect role).
    pub fn restart(&mut self) -> Result<()> {
        self.kill();
        self.spawn()
    }
}

impl Drop for Vswitch {
    fn drop(&mut self) {
        self.kill();
    }
}
