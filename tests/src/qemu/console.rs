//! The guest's serial console protocol: `VSW-READY`, then `N COMMAND` in and `VSW-BEGIN-N`,
//! output, `VSW-DONE-N RC` out.

use super::config::GuestConfig;
use super::guest::QemuGuest;
use crate::util::find_bytes;
use anyhow::{bail, Context, Result};
use std::io::Write;
use std::time::{Duration, Instant};

impl QemuGuest {
    /// Waits for the guest's `VSW-READY` line; returns the time since QEMU was started.
    pub fn wait_ready(&mut self, timeout: Duration) -> Result<Duration> {
        if let Some(t) = self.ready_at {
            return Ok(t);
        }
        let deadline = Instant::now() + timeout;
        let found = self
            .console
            .wait_for(0, deadline, |d| find_bytes(d, b"VSW-READY\n"))
            .map_err(|e| self.failure(&format!("waiting for VSW-READY: {e}")))?;
        if found.is_none() {
            return Err(self.failure(&format!("no VSW-READY within {timeout:?}")));
        }
        let t = self.started.elapsed();
        self.ready_at = Some(t);
        Ok(t)
    }

    /// Starts one guest for each config (they boot in parallel), then waits up to `timeout` for
    /// each in turn to be ready, printing how long each took.
    pub fn spawn_ready(
        cfgs: impl IntoIterator<Item = GuestConfig>,
        timeout: Duration,
    ) -> Result<Vec<QemuGuest>> {
        let mut guests = cfgs
            .into_iter()
            .map(QemuGuest::spawn)
            .collect::<Result<Vec<_>>>()?;
        for g in guests.iter_mut() {
            let t = g.wait_ready(timeout)?;
            eprintln!("{} ready after {t:.1?}", g.name());
        }
        Ok(guests)
    }

    /// Treats the guest as ready without waiting for `VSW-READY`: for the destination QEMU of
    /// a live migration, whose guest printed it on the source long ago.
    pub fn assume_ready(&mut self) {
        self.ready_at.get_or_insert(self.started.elapsed());
    }

    /// Runs one line of shell in the guest; returns its exit status and combined
    /// stdout+stderr. The command runs in `sh -c` with stdin from /dev/null; it must not contain
    /// a newline. After a timeout the guest's console is out of step: kill the guest.
    pub fn run(&mut self, cmd: &str, timeout: Duration) -> Result<(i32, String)> {
        if cmd.contains('\n') || cmd.contains('\r') {
            bail!("guest command must be a single line: {cmd:?}");
        }
        if cmd.len() > 3500 {
            bail!(
                "guest command longer than the tty's line buffer allows ({} bytes)",
                cmd.len()
            );
        }
        self.wait_ready(timeout)?;
        let n = self.next_cmd;
        self.next_cmd += 1;
        let begin = format!("VSW-BEGIN-{n}\n");
        let done = format!("VSW-DONE-{n} ");
        let from = self.console.len();
        let stdin = self
            .stdin
            .as_mut()
            .with_context(|| format!("{}: guest was killed", self.name))?;
        stdin
            .write_all(format!("{n} {cmd}\n").as_bytes())
            .and_then(|_| stdin.flush())
            .with_context(|| format!("{}: writing to the serial console", self.name))?;
        let deadline = Instant::now() + timeout;
        let res = self.console.wait_for(from, deadline, |d| {
            let b = find_bytes(d, begin.as_bytes())?;
            let body = &d[b + begin.len()..];
            let e = find_bytes(body, done.as_bytes())?;
            let rest = &body[e + done.len()..];
            let nl = rest.iter().position(|&c| c == b'\n')?;
            let rc = std::str::from_utf8(&rest[..nl])
                .ok()?
                .trim()
                .parse::<i32>()
                .ok()?;
            Some((rc, String::from_utf8_lossy(&body[..e]).into_owned()))
        });
        match res {
            Ok(Some(r)) => Ok(r),
            Ok(None) => Err(self.failure(&format!(
                "command {cmd:?} did not finish within {timeout:?}"
            ))),
            Err(e) => Err(self.failure(&format!("command {cmd:?}: {e}"))),
        }
    }

    /// Runs a command and fails unless it exits 0; returns its output.
    pub fn run_ok(&mut self, cmd: &str, timeout: Duration) -> Result<String> {
        let (rc, out) = self.run(cmd, timeout)?;
        if rc != 0 {
            bail!("{}: {cmd:?} exited {rc}:\n{out}", self.name);
        }
        Ok(out)
    }
}
