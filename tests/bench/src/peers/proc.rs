//! Child processes the benchmark starts: output collected into memory and a log file, stopped
//! by PID (SIGTERM, then SIGKILL) when the guard drops.

use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};

/// A running child process, killed (by its PID only) on drop.
pub struct Proc {
    name: String,
    child: Child,
    stdin: Option<ChildStdin>,
    out: Arc<Mutex<String>>,
    readers: Vec<JoinHandle<()>>,
    log: PathBuf,
}

fn collect(
    mut r: impl Read + Send + 'static,
    buf: Arc<Mutex<String>>,
    mut log: Option<std::fs::File>,
) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut chunk = [0u8; 8192];
        while let Ok(n) = r.read(&mut chunk) {
            if n == 0 {
                break;
            }
            if let Some(f) = log.as_mut() {
                let _ = f.write_all(&chunk[..n]);
            }
            let s = String::from_utf8_lossy(&chunk[..n]);
            match buf.lock() {
                Ok(mut b) => b.push_str(&s),
                Err(p) => p.into_inner().push_str(&s),
            }
        }
    })
}

impl Proc {
    /// Spawns `cmd` with stdout and stderr collected (and written to `log`), stdin piped.
    pub fn spawn(name: &str, mut cmd: Command, log: &Path) -> Result<Proc> {
        let logf =
            std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let errf = logf.try_clone().ok();
        // SAFETY: the closure runs in the child between fork and exec and only calls prctl(2),
        // which is async-signal-safe. The child gets SIGTERM if the benchmark dies (the main
        // thread, which spawns every child, lives for the whole run).
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                Ok(())
            });
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {name} ({:?})", cmd.get_program()))?;
        let out = Arc::new(Mutex::new(String::new()));
        let mut readers = Vec::new();
        if let Some(o) = child.stdout.take() {
            readers.push(collect(o, out.clone(), Some(logf)));
        }
        if let Some(e) = child.stderr.take() {
            readers.push(collect(e, out.clone(), errf));
        }
        Ok(Proc {
            name: name.into(),
            stdin: child.stdin.take(),
            child,
            out,
            readers,
            log: log.to_path_buf(),
        })
    }

    /// The child's PID.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything the child printed so far.
    pub fn output(&self) -> String {
        match self.out.lock() {
            Ok(b) => b.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// Length of the output so far (to wait for text printed after a point).
    pub fn output_len(&self) -> usize {
        match self.out.lock() {
            Ok(b) => b.len(),
            Err(p) => p.into_inner().len(),
        }
    }

    /// The last `n` lines of output.
    pub fn tail(&self, n: usize) -> String {
        let o = self.output();
        let lines: Vec<&str> = o.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Writes a line to the child's stdin.
    pub fn send_line(&mut self, line: &str) -> Result<()> {
        let s = self
            .stdin
            .as_mut()
            .ok_or_else(|| anyhow!("{}: stdin closed", self.name))?;
        s.write_all(line.as_bytes())
            .and_then(|_| s.write_all(b"\n"))
            .and_then(|_| s.flush())
            .with_context(|| format!("writing to {}", self.name))
    }

    /// Waits until `pat` appears in the output after byte `from`; returns the text from
    /// `from` on. Fails early if the child exits.
    pub fn wait_for(&mut self, from: usize, pat: &str, timeout: Duration) -> Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let o = self.output();
            if let Some(tail) = o.get(from..) {
                if tail.contains(pat) {
                    return Ok(tail.to_string());
                }
            }
            if let Ok(Some(st)) = self.child.try_wait() {
                return Err(anyhow!(
                    "{} exited ({st}) before printing {pat:?}; log {}:\n{}",
                    self.name,
                    self.log.display(),
                    self.tail(25)
                ));
            }
            if Instant::now() > deadline {
                return Err(anyhow!(
                    "{} did not print {pat:?} within {timeout:?}; log {}:\n{}",
                    self.name,
                    self.log.display(),
                    self.tail(25)
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// True while the child runs.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Waits up to `grace` for the child to exit by itself, then SIGTERM, then SIGKILL; reaps
    /// it. Only this child's PID is signalled.
    pub fn stop(&mut self, grace: Duration) {
        self.stdin = None;
        let deadline = Instant::now() + grace;
        while self.running() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        if self.running() {
            let pid = self.child.id() as libc::pid_t;
            // SAFETY: kill(2) with our own child's PID, which is not reaped yet (try_wait said
            // it runs), so the PID cannot have been reused.
            unsafe { libc::kill(pid, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(3);
            while self.running() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            if self.running() {
                let _ = self.child.kill();
            }
        }
        let _ = self.child.wait();
        for h in self.readers.drain(..) {
            let _ = h.join();
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop(Duration::ZERO);
    }
}

/// Runs a short command to completion; returns its stdout, or an error with its stderr.
pub fn run(cmd: &mut Command, what: &str) -> Result<String> {
    let o = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {what}"))?;
    if !o.status.success() {
        return Err(anyhow!(
            "{what} failed ({}): {}{}",
            o.status,
            String::from_utf8_lossy(&o.stderr).trim(),
            String::from_utf8_lossy(&o.stdout).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&o.stdout).into_owned())
}
