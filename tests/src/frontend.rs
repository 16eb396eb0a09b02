//! A vhost-user frontend in a child process, so that a test can SIGKILL it: the switch then sees
//! a real abrupt close (no goodbye, the socket closed by the kernel) with rings in flight.
//!
//! The child is the `vsw-frontend` binary of this crate (`tests/src/bin/vsw-frontend.rs`),
//! an in-process test guest ([`vswitch_testguest::TestGuest`]: memfd memory, real split
//! virtqueues) that, once set up, prints `READY` and then, until killed:
//! - streams [`STREAM`] frames to the peer MAC (a burst every few milliseconds), their payload
//!   starting with the incarnation number given on its command line;
//! - answers every [`PING`] frame addressed to it with a [`PONG`] frame carrying the same
//!   payload back to the sender.
//!
//! [`FrontendProcess`] is the test's side: started, waited for, killed by PID.

use crate::qemu::SocketRole;
use crate::util::{find_bytes, kill_child, OutputBuf};
use anyhow::{bail, Context, Result};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use vswitch_testguest::frame::mac_to_string;

/// Ethertype of a request the child answers.
pub const PING: u16 = 0x88b5;
/// Ethertype of the child's answer.
pub const PONG: u16 = 0x88b6;
/// Ethertype of the child's background stream.
pub const STREAM: u16 = 0x88b7;

/// A running `vsw-frontend` child. SIGKILLed by PID on drop.
pub struct FrontendProcess {
    name: String,
    child: Child,
    out: Arc<OutputBuf>,
    err: Arc<OutputBuf>,
    readers: Vec<JoinHandle<()>>,
}

impl FrontendProcess {
    /// Starts `bin` (the `vsw-frontend` binary: `env!("CARGO_BIN_EXE_vsw-frontend")` in this
    /// crate's integration tests) as a frontend of `socket`: with [`SocketRole::Client`] it
    /// connects to a switch port in `mode=listen`, with [`SocketRole::Server`] it creates the
    /// socket and waits for a `mode=connect` port. `incarnation` marks its stream frames.
    pub fn spawn(
        bin: &Path,
        role: SocketRole,
        socket: &Path,
        mac: [u8; 6],
        peer: [u8; 6],
        incarnation: u32,
    ) -> Result<Self> {
        let role_s = match role {
            SocketRole::Client => "client",
            SocketRole::Server => "server",
        };
        let mut child = Command::new(bin)
            .arg(role_s)
            .arg(socket)
            .arg(mac_to_string(&mac))
            .arg(mac_to_string(&peer))
            .arg(incarnation.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
            kill_child(&mut child);
            bail!("vsw-frontend's pipes were not created");
        };
        let (out, h1) = OutputBuf::collect(stdout, None, None);
        let (err, h2) = OutputBuf::collect(stderr, None, None);
        Ok(Self {
            name: format!("vsw-frontend {role_s} {} #{incarnation}", socket.display()),
            child,
            out,
            err,
            readers: vec![h1, h2],
        })
    }

    /// Waits until the child has set the device up and posted its RX buffers (`READY`).
    pub fn wait_ready(&mut self, timeout: Duration) -> Result<()> {
        let found = self
            .out
            .wait_for(0, Instant::now() + timeout, |d| find_bytes(d, b"READY\n"));
        match found {
            Ok(Some(_)) => Ok(()),
            Ok(None) => bail!(
                "{}: not ready within {timeout:?}; stderr:\n{}",
                self.name,
                self.err.tail(20)
            ),
            Err(e) => bail!("{}: {e}; stderr:\n{}", self.name, self.err.tail(20)),
        }
    }

    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// True while the child runs.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// What the child wrote on stderr (its errors).
    pub fn stderr_tail(&self, n: usize) -> String {
        self.err.tail(n)
    }

    /// SIGKILLs the child (by PID) and reaps it. Idempotent.
    pub fn kill(&mut self) {
        kill_child(&mut self.child);
        for h in self.readers.drain(..) {
            let _ = h.join();
        }
    }
}

impl Drop for FrontendProcess {
    fn drop(&mut self) {
        self.kill();
    }
}
