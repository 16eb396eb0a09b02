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

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixListener, UnixStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::{self, JoinHandle};

use log::{debug, trace};
use vhost::vhost_user::Listener;
use vmm_sys_util::sock_ctrl_msg::ScmSocket;

use crate::mem_table::MemTableGuard;

const HDR_LEN: usize = 12;
/// Largest payload a vhost-user message may carry (the crate's own limit is lower).
const MAX_PAYLOAD: usize = 0x1000 * 8;
/// File descriptors one message may carry (SET_MEM_TABLE: up to 8 regions).
const MAX_FDS: usize = 32;

const REQ_SET_FEATURES: u32 = 2;
const REQ_SET_PROTOCOL_FEATURES: u32 = 16;
const REQ_SET_VRING_ENABLE: u32 = 18;
const FLAG_VERSION: u32 = 0x1;
const FLAG_REPLY: u32 = 0x4;
const FLAG_NEED_REPLY: u32 = 0x8;
const F_PROTOCOL_FEATURES: u64 = 1 << 30;
const PF_REPLY_ACK: u64 = 1 << 3;

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
    /// The thread ends when either side closes; it then shuts both down.
    /// Memory-table messages are checked by `guard` first (see [`crate::mem_table`]).
    pub fn relay(
        self,
        frontend: UnixStream,
        name: String,
        mut guard: MemTableGuard,
    ) -> io::Result<JoinHandle<()>> {
        let ShimEndpoint { listener, inner } = self;
        drop(listener);
        thread::Builder::new()
            .name(format!("{name}-relay"))
            .spawn(move || {
                if let Err(e) = relay(&frontend, &inner, &mut guard) {
                    debug!("{name}: relay ended: {e}");
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

fn relay(frontend: &UnixStream, daemon: &UnixStream, guard: &mut MemTableGuard) -> io::Result<()> {
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
            let Some(m) = recv_msg(frontend)? else {
                return Ok(()); // frontend closed
            };
            match m.request() {
                REQ_SET_FEATURES => acked_features = m.u64_payload(),
                REQ_SET_PROTOCOL_FEATURES => {
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
            if let Err(e) = guard.check(m.request(), &m.bytes[HDR_LEN..], &m.fds) {
                // Refused before the daemon maps anything: a NACK if the frontend asked for a
                // reply, then the connection ends (the guard counted and logged it).
                if reply_ack && m.flags() & FLAG_NEED_REPLY != 0 {
                    send_msg(frontend, &reply_u64(m.request(), 1), &[])?;
                }
                return Err(io::Error::new(io::ErrorKind::InvalidData, e));
            }
            let early_enable = m.request() == REQ_SET_VRING_ENABLE
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
                    ack.extend_from_slice(&REQ_SET_VRING_ENABLE.to_le_bytes());
                    ack.extend_from_slice(&(FLAG_VERSION | FLAG_REPLY).to_le_bytes());
                    ack.extend_from_slice(&8u32.to_le_bytes());
                    ack.extend_from_slice(&0u64.to_le_bytes());
                    send_msg(frontend, &ack, &[])?;
                }
            } else {
                forward(daemon, &m)?;
                if m.request() == REQ_SET_FEATURES {
                    let protocol =
                        matches!(acked_features, Some(f) if f & F_PROTOCOL_FEATURES != 0);
                    for (index, state) in std::mem::take(&mut early) {
                        if !protocol {
                            continue; // SET_FEATURES enabled every ring
                        }
                        debug!("relay: ring {index}: replaying SET_VRING_ENABLE {state:?}");
                        let mut msg = Vec::with_capacity(HDR_LEN + 8);
                        msg.extend_from_slice(&REQ_SET_VRING_ENABLE.to_le_bytes());
                        msg.extend_from_slice(&FLAG_VERSION.to_le_bytes());
                        msg.extend_from_slice(&8u32.to_le_bytes());
                        msg.extend_from_slice(&state);
                        send_msg(daemon, &msg, &[])?;
                    }
                }
            }
        }
        if pfds[1].revents != 0 {
            let Some(mut m) = recv_msg(daemon)? else {
                return Ok(()); // daemon ended the connection
            };
            trace!(
                "relay: daemon reply {} flags {:#x} size {}",
                m.request(),
                m.flags(),
                m.bytes.len() - HDR_LEN
            );
            guard.adjust_reply(m.request(), &mut m.bytes[HDR_LEN..]);
            forward(frontend, &m)?;
        }
    }
}

/// A reply carrying one u64 (an ack: 0 success, non-zero failure).
fn reply_u64(request: u32, value: u64) -> Vec<u8> {
    let mut msg = Vec::with_capacity(HDR_LEN + 8);
    msg.extend_from_slice(&request.to_le_bytes());
    msg.extend_from_slice(&(FLAG_VERSION | FLAG_REPLY).to_le_bytes());
    msg.extend_from_slice(&8u32.to_le_bytes());
    msg.extend_from_slice(&value.to_le_bytes());
    msg
}

fn forward(sock: &UnixStream, m: &Msg) -> io::Result<()> {
    let raw: Vec<RawFd> = m.fds.iter().map(AsRawFd::as_raw_fd).collect();
    send_msg(sock, &m.bytes, &raw)
}

/// Reads one message (header, then `size` bytes of payload); `None` at EOF before a header.
fn recv_msg(sock: &UnixStream) -> io::Result<Option<Msg>> {
    let mut bytes = vec![0u8; HDR_LEN];
    let mut fds = Vec::new();
    let n = recv_with_fds(sock, &mut bytes, &mut fds)?;
    if n == 0 {
        return Ok(None);
    }
    read_exact(sock, &mut bytes[n..], &mut fds)?;
    let size = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize;
    if size > MAX_PAYLOAD {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("vhost-user message with a {size}-byte payload"),
        ));
    }
    bytes.resize(HDR_LEN + size, 0);
    read_exact(sock, &mut bytes[HDR_LEN..], &mut fds)?;
    Ok(Some(Msg { bytes, fds }))
}

fn read_exact(sock: &UnixStream, mut buf: &mut [u8], fds: &mut Vec<OwnedFd>) -> io::Result<()> {
    while !buf.is_empty() {
        let n = recv_with_fds(sock, buf, fds)?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        buf = &mut buf[n..];
    }
    Ok(())
}

/// Reads into `buf`, collecting the SCM_RIGHTS descriptors that came with it into `fds`.
fn recv_with_fds(sock: &UnixStream, buf: &mut [u8], fds: &mut Vec<OwnedFd>) -> io::Result<usize> {
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
                return Ok(n);
            }
            Err(e) if e.errno() == libc::EINTR => continue,
            Err(e) => return Err(io::Error::from_raw_os_error(e.errno())),
        }
    }
}

/// Writes all of `data`, with `fds` attached to the first chunk.
fn send_msg(sock: &UnixStream, data: &[u8], fds: &[RawFd]) -> io::Result<()> {
    let mut off = 0;
    let mut fds = fds;
    while off < data.len() {
        match sock.send_with_fds(&[&data[off..]], fds) {
            Ok(n) => {
                off += n;
                fds = &[];
            }
            Err(e) if e.errno() == libc::EINTR => continue,
            Err(e) => return Err(io::Error::from_raw_os_error(e.errno())),
        }
    }
    Ok(())
}
