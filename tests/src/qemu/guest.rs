//! The QEMU process: spawned from a [`GuestConfig`], its console and stderr collected, killed
//! by PID; or a guest another program started (libvirt), driven through its serial console's
//! Unix socket ([`QemuGuest::attach`]).

use super::config::{example_script_command, GuestConfig, SocketRole};
use crate::assets::guest_assets;
use crate::util::{find_binary, kill_child, OutputBuf};
use anyhow::{bail, Context, Result};
use std::io::Write;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Where commands to the guest's serial console go.
pub(super) enum ConsoleIn {
    /// QEMU's stdin (`-serial stdio`).
    Pipe(ChildStdin),
    /// A serial console on a Unix socket (libvirt's `<serial type='unix'>`).
    Socket(UnixStream),
}

impl Write for ConsoleIn {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            ConsoleIn::Pipe(p) => p.write(buf),
            ConsoleIn::Socket(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            ConsoleIn::Pipe(p) => p.flush(),
            ConsoleIn::Socket(s) => s.flush(),
        }
    }
}

/// A running QEMU guest. Killed (SIGKILL by PID) on drop when this harness started it; an
/// attached guest ([`QemuGuest::attach`]) is only disconnected (its owner stops it).
pub struct QemuGuest {
    pub(super) name: String,
    child: Option<Child>,
    pub(super) stdin: Option<ConsoleIn>,
    pub(super) console: Arc<OutputBuf>,
    stderr: Arc<OutputBuf>,
    readers: Vec<JoinHandle<()>>,
    pub(super) started: Instant,
    pub(super) ready_at: Option<Duration>,
    pub(super) next_cmd: u64,
    console_log: PathBuf,
}

impl std::fmt::Debug for QemuGuest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QemuGuest")
            .field("name", &self.name)
            .field("pid", &self.child.as_ref().map(Child::id))
            .field("console_log", &self.console_log)
            .finish()
    }
}

impl QemuGuest {
    /// One guest with one NIC: the common case.
    pub fn boot(
        name: &str,
        socket: impl Into<PathBuf>,
        role: SocketRole,
        mac: &str,
        ip: &str,
    ) -> Result<Self> {
        Self::spawn(GuestConfig::new(name).nic(socket, role, mac, ip))
    }

    /// Starts QEMU. Returns at once; call [`wait_ready`](Self::wait_ready) before commands.
    pub fn spawn(cfg: GuestConfig) -> Result<Self> {
        let qemu = find_binary("qemu-system-x86_64")?;
        let assets = match &cfg.assets {
            Some(a) => a.clone(),
            None => guest_assets()?,
        };
        let (mut cmd, args) = if cfg.via_example_script {
            example_script_command(&cfg, &assets, &qemu)?
        } else {
            let args = cfg.qemu_args(&assets)?;
            let mut cmd = Command::new(&qemu);
            cmd.args(&args);
            (cmd, args)
        };
        let console_log = match &cfg.console_log {
            Some(p) => p.clone(),
            None => cfg
                .nics
                .first()
                .and_then(|n| n.socket.parent().map(Path::to_path_buf))
                .map(|d| d.join(format!("{}.console.log", cfg.name)))
                .unwrap_or_else(|| {
                    std::env::temp_dir().join(format!(
                        "{}-{}.console.log",
                        cfg.name,
                        std::process::id()
                    ))
                }),
        };
        let log = std::fs::File::create(&console_log)
            .with_context(|| format!("creating {}", console_log.display()))?;
        let mut err_path = console_log.clone().into_os_string();
        err_path.push(".stderr");
        let err_log = std::fs::File::create(&err_path)
            .with_context(|| format!("creating {}", PathBuf::from(&err_path).display()))?;

        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {}", qemu.display()))?;
        let (Some(stdin), Some(stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            kill_child(&mut child);
            bail!("QEMU's stdio pipes were not created");
        };
        let echo = std::env::var("VSW_GUEST_CONSOLE").is_ok_and(|v| v == "1");
        let (console, h1) = OutputBuf::collect(stdout, Some(log), echo.then(|| cfg.name.clone()));
        let (stderr_buf, h2) = OutputBuf::collect(
            stderr,
            Some(err_log),
            echo.then(|| format!("{} qemu", cfg.name)),
        );
        log::info!(
            "{}: started QEMU pid {} ({} {})",
            cfg.name,
            child.id(),
            qemu.display(),
            args.join(" ")
        );
        Ok(Self {
            name: cfg.name,
            child: Some(child),
            stdin: Some(ConsoleIn::Pipe(stdin)),
            console,
            stderr: stderr_buf,
            readers: vec![h1, h2],
            started: Instant::now(),
            ready_at: None,
            next_cmd: 1,
            console_log,
        })
    }

    /// A guest started by another program (e.g. libvirt), whose serial console is the Unix
    /// socket `console` (the guest's `/init` protocol on ttyS0); its output is copied to
    /// `console_log`. Commands work as for a spawned guest; dropping it only disconnects.
    pub fn attach(name: &str, console: &Path, console_log: &Path) -> Result<Self> {
        let conn = UnixStream::connect(console)
            .with_context(|| format!("{name}: connecting to console {}", console.display()))?;
        let reader = conn.try_clone().context("cloning the console socket")?;
        let log = std::fs::File::create(console_log)
            .with_context(|| format!("creating {}", console_log.display()))?;
        let echo = std::env::var("VSW_GUEST_CONSOLE").is_ok_and(|v| v == "1");
        let (console_buf, h) =
            OutputBuf::collect(reader, Some(log), echo.then(|| name.to_string()));
        Ok(Self {
            name: name.to_string(),
            child: None,
            stdin: Some(ConsoleIn::Socket(conn)),
            console: console_buf,
            stderr: Arc::new(OutputBuf::default()),
            readers: vec![h],
            started: Instant::now(),
            ready_at: None,
            next_cmd: 1,
            console_log: console_log.to_path_buf(),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// QEMU's process id (0 for an attached guest: its owner knows it).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// The file the serial console is copied to.
    pub fn console_log(&self) -> &Path {
        &self.console_log
    }

    /// Everything the guest printed on its console so far.
    pub fn console_text(&self) -> String {
        self.console.text()
    }

    /// Kills QEMU (SIGKILL to its PID) and reaps it; an attached guest's console is
    /// disconnected instead. Idempotent.
    pub fn kill(&mut self) {
        if let Some(ConsoleIn::Socket(s)) = &self.stdin {
            // Ends the console reader, which would otherwise wait for the guest to stop.
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
        self.stdin = None;
        if let Some(c) = self.child.as_mut() {
            kill_child(c);
        }
        for h in self.readers.drain(..) {
            let _ = h.join();
        }
    }

    /// True while QEMU runs (an attached guest: while its console is connected).
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => self.stdin.is_some(),
        }
    }

    /// An error with the context a failing test needs: QEMU's status and stderr, the console's
    /// last lines, and where the full log is.
    pub(super) fn failure(&mut self, what: &str) -> anyhow::Error {
        let status = match self.child.as_mut().map(Child::try_wait) {
            Some(Ok(Some(s))) => format!("QEMU exited: {s}"),
            Some(Ok(None)) => "QEMU still running".to_string(),
            Some(Err(e)) => format!("QEMU status unknown: {e}"),
            None => "a guest attached through its console socket".to_string(),
        };
        let stderr = self.stderr.tail(20);
        anyhow::anyhow!(
            "{}: {what} ({status})\n--- QEMU stderr ---\n{stderr}\n--- console (last 30 lines; \
             full log {}) ---\n{}",
            self.name,
            self.console_log.display(),
            self.console.tail(30)
        )
    }
}

impl Drop for QemuGuest {
    fn drop(&mut self) {
        self.kill();
    }
}
