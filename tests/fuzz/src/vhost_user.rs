//! Target `vhost_user`: arbitrary vhost-user message sequences sent to a real port
//! (`NetPort`, listen role) over a real Unix socket, in process, with real memfds and eventfds
//! attached where the input says, and the guest side's own moves in between (kicking a queue
//! through an eventfd it sent, writing or shrinking a memfd it shared).
//!
//! Property: nothing panics or faults, and after the hostile connection closes the port
//! accepts a fresh, well-behaved frontend (a test guest: full handshake, one frame sent and
//! received back through the port's loopback sink), checked after every input in the corpus
//! replay and after every [`CHECK_EVERY`]th input while fuzzing, each wait bounded.
//!
//! Input: up to [`MAX_OPS`] operations, each `op:u8` then its arguments:
//! - `op % 8 < 4`: a message: `request:u8` (`% 48`), `flags:u8` (bits 0-1 version, bit 2
//!   reply, bit 3 need-reply, bit 4 raw 32-bit request code follows instead), `len:u16`
//!   (`% 512`, payload bytes that follow), `size:u16` with `op` bit 5 (the header's size
//!   field; otherwise `len`), and with `op` bit 6 `nfds:u8` (`% 9`) file descriptors, each
//!   `kind:u8`: even a new memfd of `kind / 2 % 64 + 1` pages, odd a new eventfd;
//! - `4`: kick: `which:u8`, written to one of the eventfds sent so far;
//! - `5`: `which:u8 pages:u8`: truncate one of the memfds sent so far to `pages % 4` pages;
//! - `6`: `which:u8 offset:u32 len:u8` then `len` bytes, written into one of the memfds;
//! - `7`: pause for a millisecond (the port handles kicks asynchronously), then read whatever
//!   replies have arrived.

use std::fs::File;
use std::io::Write as _;
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::os::unix::fs::FileExt;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use vmm_sys_util::eventfd::EventFd;
use vmm_sys_util::sock_ctrl_msg::ScmSocket;
use vswitch_testguest::{EthFrame, GuestConfig, TestGuest};
use vswitch_vhost::crossover::Crossover;
use vswitch_vhost::{NetPort, PortConfig, SocketRole};

use crate::input::Input;

/// Most operations taken from one input.
pub const MAX_OPS: usize = 64;
/// While fuzzing, the well-behaved frontend is checked after every this many inputs (and in
/// the corpus replay after every input): a full handshake costs far more than an input.
pub const CHECK_EVERY: u64 = 16;
/// Bound on the health check (connect, handshake, one frame there and back).
const CHECK_TIMEOUT: Duration = Duration::from_secs(20);
const PAGE: u64 = 4096;
/// Longest wait for the port to take or drop the hostile connection.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long operation 7 lets the port work before reading its replies.
const PAUSE: Duration = Duration::from_millis(1);
const HEADER_LEN: usize = 12;

struct Fixture {
    /// Delivers every frame the guest sends back into its own RX ring. Declared first: stops
    /// draining before the port stops.
    _loopback: Crossover,
    _dir: tempfile::TempDir,
    sock: PathBuf,
    port: NetPort,
    /// One input at a time (the replay tests run in threads).
    lock: Mutex<()>,
    inputs: AtomicU64,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let dir = tempfile::tempdir().expect("temporary directory");
        let sock = dir.path().join("port.sock");
        let doorbell = Crossover::doorbell().expect("doorbell");
        let mut cfg = PortConfig::new("fuzz", &sock, SocketRole::Listen);
        cfg.mac = Some([0x52, 0x54, 0, 0, 0, 1]);
        cfg.tx_doorbell = Some(doorbell.clone());
        // Two queue pairs: hostile inputs reach the rings of the second pair (and past it).
        cfg.queue_pairs = 2;
        let port = NetPort::start(cfg).expect("port starts");
        let loopback = Crossover::start(vec![(port.handle(), port.handle())], doorbell)
            .expect("loopback thread");
        Fixture {
            _loopback: loopback,
            _dir: dir,
            sock,
            port,
            lock: Mutex::new(()),
            inputs: AtomicU64::new(0),
        }
    })
}

/// The port's counters (what the inputs got through).
pub fn port_stats() -> vswitch_vhost::PortStatsSnapshot {
    fixture().port.handle().stats()
}

/// What the hostile frontend shared so far.
#[derive(Default)]
struct Shared {
    memfds: Vec<File>,
    eventfds: Vec<EventFd>,
}

/// Runs one input (while fuzzing: the health check every [`CHECK_EVERY`] inputs).
pub fn run(data: &[u8]) {
    let f = fixture();
    let n = f.inputs.fetch_add(1, Ordering::Relaxed);
    run_checked(data, n % CHECK_EVERY == CHECK_EVERY - 1);
}

/// Runs one input, then (with `check`) the well-behaved frontend; panics when the port does
/// not serve it.
pub fn run_checked(data: &[u8], check: bool) {
    let f = fixture();
    let _one = f.lock.lock().unwrap_or_else(|p| p.into_inner());
    let handle = f.port.handle();
    let served = handle.stats().connections;
    if let Ok(sock) = UnixStream::connect(&f.sock) {
        let _ = sock.set_write_timeout(Some(Duration::from_millis(200)));
        hostile(&sock, data);
        // Closing the socket ends the connection; the port must go back to accepting.
        drop(sock);
        // Let the port finish with this connection before the next input (bounded), so that
        // a late fault is charged to the input that caused it.
        wait_until(|| handle.stats().connections > served);
        wait_until(|| !handle.is_connected());
    }
    if check {
        check_port_serves(&f.sock);
    }
}

/// Polls `cond` for up to [`SETTLE_TIMEOUT`].
fn wait_until(mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    while !cond() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_micros(200));
    }
}

fn hostile(sock: &UnixStream, data: &[u8]) {
    let mut inp = Input::new(data);
    let mut shared = Shared::default();
    for _ in 0..MAX_OPS {
        if inp.is_empty() {
            break;
        }
        let op = inp.u8();
        let ok = match op % 8 {
            0..=3 => message(sock, op, &mut inp, &mut shared),
            4 => {
                let i = usize::from(inp.u8());
                if !shared.eventfds.is_empty() {
                    let _ = shared.eventfds[i % shared.eventfds.len()].write(1);
                }
                true
            }
            5 => {
                let (i, pages) = (usize::from(inp.u8()), u64::from(inp.u8() % 4));
                if !shared.memfds.is_empty() {
                    let _ = shared.memfds[i % shared.memfds.len()].set_len(pages * PAGE);
                }
                true
            }
            6 => {
                let (i, off, len) = (usize::from(inp.u8()), inp.u32(), usize::from(inp.u8()));
                let bytes = inp.bytes(len);
                if !shared.memfds.is_empty() {
                    let m = &shared.memfds[i % shared.memfds.len()];
                    // Only inside the file: writing past its end would grow it.
                    let size = m.metadata().map(|m| m.len()).unwrap_or(0);
                    if u64::from(off) + bytes.len() as u64 <= size {
                        let _ = m.write_all_at(bytes, u64::from(off));
                    }
                }
                true
            }
            _ => {
                // Gives the port's threads a moment (a kick is handled asynchronously).
                std::thread::sleep(PAUSE);
                drain_replies(sock);
                true
            }
        };
        if !ok {
            break;
        }
        drain_replies(sock);
    }
}

/// Sends one message; false when the socket no longer takes data.
fn message(sock: &UnixStream, op: u8, inp: &mut Input<'_>, shared: &mut Shared) -> bool {
    let req = inp.u8();
    let flags = inp.u8();
    let request = if flags & 0x10 != 0 {
        inp.u32()
    } else {
        u32::from(req % 48)
    };
    let len = usize::from(inp.u16() % 512);
    let size = if op & 0x20 != 0 {
        u32::from(inp.u16())
    } else {
        len as u32
    };
    let mut fds: Vec<RawFd> = Vec::new();
    if op & 0x40 != 0 {
        let n = inp.u8() % 9;
        for _ in 0..n {
            let kind = inp.u8();
            if kind & 1 == 0 {
                let Some(m) = memfd(u64::from(kind / 2 % 64) + 1) else {
                    continue;
                };
                fds.push(m.as_raw_fd());
                shared.memfds.push(m);
            } else if let Ok(e) = EventFd::new(libc::EFD_NONBLOCK) {
                fds.push(e.as_raw_fd());
                shared.eventfds.push(e);
            }
        }
    }
    let payload = inp.bytes(len);
    let mut msg = Vec::with_capacity(HEADER_LEN + payload.len());
    msg.extend_from_slice(&request.to_le_bytes());
    msg.extend_from_slice(&u32::from(flags & 0x0f).to_le_bytes());
    msg.extend_from_slice(&size.to_le_bytes());
    msg.extend_from_slice(payload);
    if fds.is_empty() {
        (&*sock).write_all(&msg).is_ok()
    } else {
        sock.send_with_fds(&[&msg[..]], &fds)
            .is_ok_and(|n| n == msg.len())
    }
}

fn memfd(pages: u64) -> Option<File> {
    // SAFETY: the name is a valid NUL-terminated string; memfd_create has no other inputs.
    let fd = unsafe { libc::memfd_create(c"fuzz-guest".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return None;
    }
    // SAFETY: `fd` is a new descriptor that nothing else owns.
    let f = unsafe { File::from_raw_fd(fd) };
    f.set_len(pages * PAGE).ok()?;
    Some(f)
}

/// Reads (and drops) whatever the port has replied so far, without waiting.
fn drain_replies(sock: &UnixStream) {
    let mut buf = [0u8; 4096];
    loop {
        // SAFETY: `buf` is writable for its length; MSG_DONTWAIT makes the call non-blocking.
        // File descriptors attached to a reply are closed by the kernel (no control buffer).
        let n = unsafe {
            libc::recv(
                sock.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                libc::MSG_DONTWAIT,
            )
        };
        if n <= 0 {
            return;
        }
    }
}

/// A well-behaved frontend attaches, sends a frame and gets it back, within
/// `CHECK_TIMEOUT`; panics otherwise.
pub fn check_port_serves(sock: &std::path::Path) {
    let (tx, rx) = mpsc::channel();
    let path = sock.to_path_buf();
    std::thread::spawn(move || {
        let _ = tx.send(well_behaved(&path));
    });
    match rx.recv_timeout(CHECK_TIMEOUT) {
        Ok(Ok(())) => {}
        Ok(Err(e)) => panic!("the port no longer serves a well-behaved frontend: {e}"),
        Err(_) => panic!(
            "the port did not serve a well-behaved frontend within {CHECK_TIMEOUT:?} \
             (hung after the hostile connection)"
        ),
    }
}

fn well_behaved(path: &std::path::Path) -> Result<(), String> {
    let cfg = GuestConfig {
        mem_size: 1 << 20,
        queue_size: 64,
        connect_timeout: Duration::from_secs(10),
        ..GuestConfig::default()
    };
    let mut g = TestGuest::connect(path, cfg).map_err(|e| format!("attach: {e}"))?;
    g.post_rx(8).map_err(|e| format!("post rx: {e}"))?;
    let frame = EthFrame::new([0xff; 6], g.mac(), 0x88b5, b"fuzz health check").build();
    // The port publishes the RX ring after the handshake; resend until it loops back.
    for _ in 0..50 {
        g.send(&frame).map_err(|e| format!("send: {e}"))?;
        if let Some(back) = g.recv(Duration::from_millis(200)) {
            if back == frame {
                return Ok(());
            }
            return Err(format!("got back {} bytes, not the frame sent", back.len()));
        }
        g.reclaim_tx();
    }
    Err("the frame never came back".into())
}
