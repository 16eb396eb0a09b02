//! A relay between a frontend's socket and the vhost-user daemon that works around one ordering
//! difference between QEMU and the `vhost` crate.
//!
//! QEMU's virtio-net sends `VHOST_USER_SET_VRING_ENABLE` whenever it attaches a queue pair: at
//! machine reset and when the guest driver writes its features, i.e. *before*
//! `VHOST_USER_SET_FEATURES` (QEMU checks the backend's *offered* features for
//! `VHOST_USER_F_PROTOCOL_FEATURES`, not the acked ones). The `vhost` crate's request handler
//! rejects a SET_VRING_ENABLE before PROTOCOL_FEATURES is acked ("inactive feature") and ends the
//! connection, so a QEMU guest never gets a working NIC.
//!
//! The relay passes every message through unchanged, with its file descriptors, in both
//! directions, except a SET_VRING_ENABLE that arrives before SET_FEATURES acked
//! PROTOCOL_FEATURES: that one is answered here (an ack, when the frontend asked for one) and
//! its state remembered; right after a SET_FEATURES that acks PROTOCOL_FEATURES the relay sends
//! the daemon the last remembered state of each ring, as QEMU expects the backend to have kept
//! it (QEMU does not send it again). Without PROTOCOL_FEATURES, SET_FEATURES enables every ring
//! anyway. Only the control channel goes through the relay; kicks, calls and guest memory are
//! file descriptors passed straight to the daemon.
//!
//! The relay is also where a frontend's behaviour on the control channel is contained: both of
//! its sockets are non-blocking and every wait is bounded. A frontend may stay silent between
//! messages for as long as it likes (QEMU and DPDK are idle for hours), but a message, once
//! started, must be complete within [`MESSAGE_TIMEOUT`], and a reply (or a message for the
//! daemon) that cannot be written for [`WRITE_TIMEOUT`] ends the connection: a frontend that
//! sends half a header and stops, or never reads its replies, costs only its own connection
//! and never holds up the port's stop. The daemon's end is ours, but it is bounded the same way
//! so that no wait in the relay is open-ended.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixListener, UnixStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use log::{debug, trace, warn};
use vhost::vhost_user::message::{
    FrontendReq, VhostUserHeaderFlag, VhostUserProtocolFeatures, VhostUserVirtioFeatures,
};
use vhost::vhost_user::Listener;
use vmm_sys_util::sock_ctrl_msg::ScmSocket;

use crate::mem_table::MemTableGuard;
use crate::migrate_msgs::{Handled, MigrationMsgs};
use crate::stats::PortStats;

/// A message whose first byte has arrived must be complete within this time (a frontend
/// writes a message in one go; only a stalled or hostile one takes longer).
pub const MESSAGE_TIMEOUT: Duration = Duration::from_secs(5);
/// A message (a reply to the frontend, a request to the daemon) that cannot be written for
/// this long ends the connection: the peer does not read.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

const HDR_LEN: usize = 12;
/// Largest payload a vhost-user message may carry (the crate's own limit is lower).
const MAX_PAYLOAD: usize = 0x1000 * 8;
/// File descriptors one message may carry (SET_MEM_TABLE: up to 8 regions).
const MAX_FDS: usize = 32;

/// The protocol version the relay's own messages carry (the flags' low bits).
const FLAG_VERSION: u32 = 0x1;
const FLAG_REPLY: u32 = VhostUserHeaderFlag::REPLY.bits();
const FLAG_NEED_REPLY: u32 = VhostUserHeaderFlag::NEED_REPLY.bits();
const F_PROTOCOL_FEATURES: u64 = VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits();
const PF_REPLY_ACK: u64 = VhostUserProtocolFeatures::REPLY_ACK.bits();

/// A private listening socket (abstract namespace) the daemon accepts the relay's connection
/// from, plus the relay's end of that connection.
pub(crate) struct ShimEndpoint {
    /// For `VhostUserDaemon::start`: its only pending connection is the relay.
    pub listener: Listener,
    inner: UnixStream,
}

impl ShimEndpoint {
    /// Creates the private socket and connects the relay's end to it.
    pub fn new(name: &str) -> io::Result<Self> {
        static N: AtomicU64 = AtomicU64::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let addr = SocketAddr::from_abstract_name(format!(
            "vswitch-shim-{}-{n}-{}",
            std::process::id(),
            name.chars().take(40).collect::<String>()
        ))?;
        let l = UnixListener::bind_addr(&addr)?;
        let inner = UnixStream::connect_addr(&addr)?;
        Ok(Self {
            listener: Listener::from(l),
            inner,
        })
    }

    /// Starts relaying between `frontend` and the daemon's end (call after the daemon accepted).
    /// The thread ends when either side closes or a bounded wait runs out (counted in
    /// `stats.control_timeouts`, logged once); it then shuts both down. Shutting `frontend`
    /// down from another thread (a clone of it) ends the relay at once.
    /// Memory-table messages are checked by `guard` first (see [`crate::mem_table`]); the
    /// migration messages are answered by `migration` (see [`crate::migrate_msgs`]).
    pub fn relay(
        self,
        frontend: UnixStream,
        name: String,
        mut guard: MemTableGuard,
        stats: Arc<PortStats>,
        migration: MigrationMsgs,
    ) -> io::Result<JoinHandle<()>> {
        let ShimEndpoint { listener, inner } = self;
        drop(listener);
        frontend.set_nonblocking(true)?;
        inner.set_nonblocking(true)?;
        thread::Builder::new()
            .name(format!("{name}-relay"))
            .spawn(move || {
                match relay(&frontend, &inner, &mut guard, &migration) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                        PortStats::add(&stats.control_timeouts, 1);
                        warn!("{name}: frontend disconnected: {e}");
                    }
                    Err(e) => debug!("{name}: relay ended: {e}"),
                }
                let _ = frontend.shutdown(std::net::Shutdown::Both);
                let _ = inner.shutdown(std::net::Shutdown::Both);
            })
    }
}

/// One message: header, payload and the file descriptors that came with it (owned).
struct Msg {
    bytes: Vec<u8>,
    fds: Vec<OwnedFd>,
}

impl Msg {
    fn field(&self, i: usize) -> u32 {
        u32::from_le_bytes([
            self.bytes[i * 4],
            self.bytes[i * 4 + 1],
            self.bytes[i * 4 + 2],
            self.bytes[i * 4 + 3],
        ])
    }
    fn request(&self) -> u32 {
        self.field(0)
    }
    /// The request, if it is one the `vhost` crate knows.
    fn req(&self) -> Option<FrontendReq> {
        FrontendReq::try_from(self.request()).ok()
    }
    fn flags(&self) -> u32 {
        self.field(1)
    }
    fn u64_payload(&self) -> Option<u64> {
        let p = self.bytes.get(HDR_LEN..HDR_LEN + 8)?;
        let mut b = [0u8; 8];
        b.copy_from_slice(p);
        Some(u64::from_le_bytes(b))
    }
}

fn relay(
    frontend: &UnixStream,
    daemon: &UnixStream,
    guard: &mut MemTableGuard,
    migration: &MigrationMsgs,
) -> io::Result<()> {
    let mut acked_features: Option<u64> = None;
    let mut reply_ack = false;
    // Early SET_VRING_ENABLE states, by ring index (the payload: index, state).
    let mut early: std::collections::BTreeMap<u32, [u8; 8]> = Default::default();
    loop {
        let mut pfds = [
            libc::pollfd {
                fd: frontend.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: daemon.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // Silence between messages is fine: no timeout here (a stop shuts a socket down).
        // SAFETY: `pfds` is a valid array of 2 pollfds for the duration of the call.
        let r = unsafe { libc::poll(pfds.as_mut_ptr(), 2, -1) };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if pfds[0].revents != 0 {
            let mut m = match recv_msg(frontend, Side::Frontend)? {
                Received::Msg(m) => m,
                Received::Nothing => continue, // woken, yet no data after all
                Received::Eof => return Ok(()), // frontend closed
            };
            match m.req() {
                Some(FrontendReq::SET_FEATURES) => acked_features = m.u64_payload(),
                Some(FrontendReq::SET_PROTOCOL_FEATURES) => {
                    reply_ack = m.u64_payload().is_some_and(|p| p & PF_REPLY_ACK != 0)
                }
                _ => {}
            }
            trace!(
                "relay: frontend request {} flags {:#x} size {} fds {}",
                m.request(),
                m.flags(),
                m.bytes.len() - HDR_LEN,
                m.fds.len()
            );
            let ack = reply_ack && m.flags() & FLAG_NEED_REPLY != 0;
            match migration.handle(m.request(), &m.bytes[HDR_LEN..], &mut m.fds, ack) {
                Handled::NotMine => {}
                Handled::Reply(body) => {
                    if let Some(body) = body {
                        send_msg(frontend, Side::Frontend, &reply(m.request(), &body), &[])?;
                    }
                    continue;
                }
                Handled::Refused(e) => {
                    if ack {
                        send_msg(frontend, Side::Frontend, &reply_u64(m.request(), 1), &[])?;
                    }
                    return Err(io::Error::new(io::ErrorKind::InvalidData, e));
                }
            }
            if guard.repeat(m.request(), &m.bytes[HDR_LEN..]) {
                debug!("relay: memory region message repeated for another queue pair: acked here");
                if ack {
                    send_msg(frontend, Side::Frontend, &reply_u64(m.request(), 0), &[])?;
                }
                continue;
            }
            if let Err(e) = guard.check(m.request(), &m.bytes[HDR_LEN..], &m.fds) {
                // Refused before the daemon maps anything: a NACK if the frontend asked for a
                // reply, then the connection ends (the guard counted and logged it).
                if reply_ack && m.flags() & FLAG_NEED_REPLY != 0 {
                    send_msg(frontend, Side::Frontend, &reply_u64(m.request(), 1), &[])?;
                }
                return Err(io::Error::new(io::ErrorKind::InvalidData, e));
            }
            let early_enable = m.req() == Some(FrontendReq::SET_VRING_ENABLE)
                && !matches!(acked_features, Some(f) if f & F_PROTOCOL_FEATURES != 0);
            if early_enable {
                if let Some(p) = m.bytes.get(HDR_LEN..HDR_LEN + 8) {
                    let mut state = [0u8; 8];
                    state.copy_from_slice(p);
                    let index = u32::from_le_bytes([p[0], p[1], p[2], p[3]]);
                    early.insert(index, state);
                }
                debug!("relay: SET_VRING_ENABLE before SET_FEATURES kept for later");
                if reply_ack && m.flags() & FLAG_NEED_REPLY != 0 {
                    let mut ack = Vec::with_capacity(HDR_LEN + 8);
                    ack.extend_from_slice(&u32::from(FrontendReq::SET_VRING_ENABLE).to_le_bytes());
                    ack.extend_from_slice(&(FLAG_VERSION | FLAG_REPLY).to_le_bytes());
                    ack.extend_from_slice(&8u32.to_le_bytes());
                    ack.extend_from_slice(&0u64.to_le_bytes());
                    send_msg(frontend, Side::Frontend, &ack, &[])?;
                }
            } else {
                forward(daemon, Side::Daemon, &m)?;
                if m.req() == Some(FrontendReq::SET_FEATURES) {
                    let protocol =
                        matches!(acked_features, Some(f) if f & F_PROTOCOL_FEATURES != 0);
                    for (index, state) in std::mem::take(&mut early) {
                        if !protocol {
                            continue; // SET_FEATURES enabled every ring
                        }
                        debug!("relay: ring {index}: replaying SET_VRING_ENABLE {state:?}");
                        let mut msg = Vec::with_capacity(HDR_LEN + 8);
                        msg.extend_from_slice(
                            &u32::from(FrontendReq::SET_VRING_ENABLE).to_le_bytes(),
                        );
                        msg.extend_from_slice(&FLAG_VERSION.to_le_bytes());
                        msg.extend_from_slice(&8u32.to_le_bytes());
                        msg.extend_from_slice(&state);
                        send_msg(daemon, Side::Daemon, &msg, &[])?;
                    }
                }
            }
        }
        if pfds[1].revents != 0 {
            let mut m = match recv_msg(daemon, Side::Daemon)? {
                Received::Msg(m) => m,
                Received::Nothing => continue,
                Received::Eof => return Ok(()), // daemon ended the connection
            };
            trace!(
                "relay: daemon reply {} flags {:#x} size {}",
                m.request(),
                m.flags(),
                m.bytes.len() - HDR_LEN
            );
            guard.adjust_reply(m.request(), &mut m.bytes[HDR_LEN..]);
            forward(frontend, Side::Frontend, &m)?;
        }
    }
}

/// A reply carrying one u64 (an ack: 0 success, non-zero failure).
fn reply_u64(request: u32, value: u64) -> Vec<u8> {
    reply(request, &value.to_le_bytes())
}

/// A reply to `request` with `body`.
fn reply(request: u32, body: &[u8]) -> Vec<u8> {
    let mut msg = Vec::with_capacity(HDR_LEN + body.len());
    msg.extend_from_slice(&request.to_le_bytes());
    msg.extend_from_slice(&(FLAG_VERSION | FLAG_REPLY).to_le_bytes());
    msg.extend_from_slice(&(body.len() as u32).to_le_bytes());
    msg.extend_from_slice(body);
    msg
}

/// Which end of the relay a socket is (for messages).
#[derive(Clone, Copy)]
enum Side {
    Frontend,
    Daemon,
}

impl Side {
    fn name(self) -> &'static str {
        match self {
            Side::Frontend => "frontend",
            Side::Daemon => "daemon",
        }
    }
}

/// What one read of a message gave.
enum Received {
    Msg(Msg),
    /// The socket was readable, yet nothing was there (a spurious wake-up).
    Nothing,
    /// The peer closed before a message started.
    Eof,
}

fn forward(sock: &UnixStream, side: Side, m: &Msg) -> io::Result<()> {
    let raw: Vec<RawFd> = m.fds.iter().map(AsRawFd::as_raw_fd).collect();
    send_msg(sock, side, &m.bytes, &raw)
}

/// Reads one message (header, then `size` bytes of payload) from a non-blocking socket; once
/// its first byte is in, the rest must arrive within [`MESSAGE_TIMEOUT`].
fn recv_msg(sock: &UnixStream, side: Side) -> io::Result<Received> {
    let mut bytes = vec![0u8; HDR_LEN];
    let mut fds = Vec::new();
    let n = match recv_with_fds(sock, &mut bytes, &mut fds)? {
        None => return Ok(Received::Nothing),
        Some(0) => return Ok(Received::Eof),
        Some(n) => n,
    };
    let deadline = Instant::now() + MESSAGE_TIMEOUT;
    read_exact(sock, side, &mut bytes[n..], &mut fds, deadline)?;
    let size = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize;
    if size > MAX_PAYLOAD {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("vhost-user message with a {size}-byte payload"),
        ));
    }
    bytes.resize(HDR_LEN + size, 0);
    read_exact(sock, side, &mut bytes[HDR_LEN..], &mut fds, deadline)?;
    Ok(Received::Msg(Msg { bytes, fds }))
}

fn read_exact(
    sock: &UnixStream,
    side: Side,
    mut buf: &mut [u8],
    fds: &mut Vec<OwnedFd>,
    deadline: Instant,
) -> io::Result<()> {
    while !buf.is_empty() {
        match recv_with_fds(sock, buf, fds)? {
            Some(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Some(n) => buf = &mut buf[n..],
            None => {
                if !wait_ready(sock, libc::POLLIN, deadline)? {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!(
                            "the {} started a message and did not complete it within {} s",
                            side.name(),
                            MESSAGE_TIMEOUT.as_secs()
                        ),
                    ));
                }
            }
        }
    }
    Ok(())
}

/// Waits until `sock` has `events` (POLLIN or POLLOUT) or `deadline` passes (false).
/// Hang-ups and errors count as ready: the next read or write reports them.
fn wait_ready(sock: &UnixStream, events: libc::c_short, deadline: Instant) -> io::Result<bool> {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(false);
        }
        let mut pfd = libc::pollfd {
            fd: sock.as_raw_fd(),
            events,
            revents: 0,
        };
        let ms = libc::c_int::try_from(left.as_millis().max(1)).unwrap_or(libc::c_int::MAX);
        // SAFETY: `pfd` is a valid pollfd for the duration of the call and nfds is 1.
        let r = unsafe { libc::poll(&mut pfd, 1, ms) };
        if r > 0 {
            return Ok(true);
        }
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }
}

/// Reads into `buf`, collecting the SCM_RIGHTS descriptors that came with it into `fds`.
/// `None`: nothing to read now (the socket is non-blocking).
fn recv_with_fds(
    sock: &UnixStream,
    buf: &mut [u8],
    fds: &mut Vec<OwnedFd>,
) -> io::Result<Option<usize>> {
    let mut raw: [RawFd; MAX_FDS] = [-1; MAX_FDS];
    let mut iov = [libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    }];
    loop {
        // SAFETY: the iovec points at `buf`, which we borrow mutably for the call and which may
        // hold any bytes.
        match unsafe { sock.recv_with_fds(&mut iov, &mut raw) } {
            Ok((n, nfds)) => {
                for &fd in &raw[..nfds] {
                    // SAFETY: descriptors received over the socket are new and ours alone.
                    fds.push(unsafe { OwnedFd::from_raw_fd(fd) });
                }
                return Ok(Some(n));
            }
            Err(e) if e.errno() == libc::EINTR => continue,
            Err(e) if e.errno() == libc::EAGAIN => return Ok(None),
            Err(e) => return Err(io::Error::from_raw_os_error(e.errno())),
        }
    }
}

/// Writes all of `data`, with `fds` attached to the first chunk, within [`WRITE_TIMEOUT`].
fn send_msg(sock: &UnixStream, side: Side, data: &[u8], fds: &[RawFd]) -> io::Result<()> {
    let deadline = Instant::now() + WRITE_TIMEOUT;
    let mut off = 0;
    let mut fds = fds;
    while off < data.len() {
        match sock.send_with_fds(&[&data[off..]], fds) {
            Ok(n) => {
                off += n;
                fds = &[];
            }
            Err(e) if e.errno() == libc::EINTR => continue,
            Err(e) if e.errno() == libc::EAGAIN => {
                if !wait_ready(sock, libc::POLLOUT, deadline)? {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!(
                            "the {} did not read its messages for {} s",
                            side.name(),
                            WRITE_TIMEOUT.as_secs()
                        ),
                    ));
                }
            }
            Err(e) => return Err(io::Error::from_raw_os_error(e.errno())),
        }
    }
    Ok(())
}
