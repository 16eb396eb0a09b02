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
use std::os::fd::{AsRawFd, RawFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixListener, UnixStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::{self, JoinHandle};

use log::{debug, trace};
use vhost::vhost_user::Listener;

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
    pub fn relay(self, frontend: UnixStream, name: String) -> io::Result<JoinHandle<()>> {
        let ShimEndpoint { listener, inner } = self;
        drop(listener);
        thread::Builder::new()
            .name(format!("{name}-relay"))
            .spawn(move || {
                if let Err(e) = relay(&frontend, &inner) {
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
    fds: Vec<std::os::fd::OwnedFd>,
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

fn relay(frontend: &UnixStream, daemon: &UnixStream) -> io::Result<()> {
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
            let Some(m) = recv_msg(frontend.as_raw_fd())? else {
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
                    send_msg(frontend.as_raw_fd(), &ack, &[])?;
                }
            } else {
                forward(daemon.as_raw_fd(), &m)?;
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
                        send_msg(daemon.as_raw_fd(), &msg, &[])?;
                    }
                }
            }
        }
        if pfds[1].revents != 0 {
            let Some(m) = recv_msg(daemon.as_raw_fd())? else {
                return Ok(()); // daemon ended the connection
            };
            trace!(
                "relay: daemon reply {} flags {:#x} size {}",
                m.request(),
                m.flags(),
                m.bytes.len() - HDR_LEN
            );
            forward(frontend.as_raw_fd(), &m)?;
        }
    }
}

fn forward(fd: RawFd, m: &Msg) -> io::Result<()> {
    let raw: Vec<RawFd> = m.fds.iter().map(AsRawFd::as_raw_fd).collect();
    send_msg(fd, &m.bytes, &raw)
}

/// Reads one message (header, then `size` bytes of payload); `None` at EOF before a header.
fn recv_msg(fd: RawFd) -> io::Result<Option<Msg>> {
    let mut bytes = vec![0u8; HDR_LEN];
    let mut fds = Vec::new();
    let n = recv_with_fds(fd, &mut bytes, &mut fds)?;
    if n == 0 {
        return Ok(None);
    }
    read_exact(fd, &mut bytes[n..], &mut fds)?;
    let size = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize;
    if size > MAX_PAYLOAD {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("vhost-user message with a {size}-byte payload"),
        ));
    }
    bytes.resize(HDR_LEN + size, 0);
    read_exact(fd, &mut bytes[HDR_LEN..], &mut fds)?;
    Ok(Some(Msg { bytes, fds }))
}

fn read_exact(
    fd: RawFd,
    mut buf: &mut [u8],
    fds: &mut Vec<std::os::fd::OwnedFd>,
) -> io::Result<()> {
    while !buf.is_empty() {
        let n = recv_with_fds(fd, buf, fds)?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        buf = &mut buf[n..];
    }
    Ok(())
}

/// recvmsg(2) into `buf`, collecting SCM_RIGHTS descriptors into `fds`.
fn recv_with_fds(
    fd: RawFd,
    buf: &mut [u8],
    fds: &mut Vec<std::os::fd::OwnedFd>,
) -> io::Result<usize> {
    use std::os::fd::FromRawFd;
    // u64 elements keep the control buffer aligned for cmsghdr.
    let mut cbuf = [0u64; (MAX_FDS * 4 + 64) / 8];
    loop {
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        // SAFETY: zeroed msghdr is a valid "empty" value; fields are set below.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = cbuf.as_mut_ptr().cast();
        msg.msg_controllen = std::mem::size_of_val(&cbuf) as _;
        // SAFETY: msg points at valid buffers (buf, cbuf) that outlive the call.
        let n = unsafe { libc::recvmsg(fd, &mut msg, libc::MSG_CMSG_CLOEXEC) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        // SAFETY: walking the control messages the kernel wrote into `cbuf`, per cmsg(3).
        unsafe {
            let mut c = libc::CMSG_FIRSTHDR(&msg);
            while !c.is_null() {
                if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
                    let data = libc::CMSG_DATA(c).cast::<RawFd>();
                    let len = (*c).cmsg_len as usize - libc::CMSG_LEN(0) as usize;
                    for i in 0..len / std::mem::size_of::<RawFd>() {
                        let raw = std::ptr::read_unaligned(data.add(i));
                        fds.push(std::os::fd::OwnedFd::from_raw_fd(raw));
                    }
                }
                c = libc::CMSG_NXTHDR(&msg, c);
            }
        }
        if msg.msg_flags & libc::MSG_CTRUNC != 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "vhost-user message carried too many file descriptors",
            ));
        }
        return Ok(n as usize);
    }
}

/// sendmsg(2) of all of `data`, with `fds` attached to the first chunk.
fn send_msg(fd: RawFd, data: &[u8], fds: &[RawFd]) -> io::Result<()> {
    let mut off = 0;
    let mut fds = fds;
    while off < data.len() {
        let mut cbuf = [0u64; (MAX_FDS * 4 + 64) / 8];
        let mut iov = libc::iovec {
            iov_base: data[off..].as_ptr() as *mut libc::c_void,
            iov_len: data.len() - off,
        };
        // SAFETY: zeroed msghdr is a valid "empty" value; fields are set below.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        if !fds.is_empty() {
            let bytes = std::mem::size_of_val(fds);
            // SAFETY: CMSG_SPACE/CMSG_LEN are pure arithmetic.
            let space = unsafe { libc::CMSG_SPACE(bytes as u32) } as usize;
            if space > std::mem::size_of_val(&cbuf) {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "too many file descriptors",
                ));
            }
            msg.msg_control = cbuf.as_mut_ptr().cast();
            msg.msg_controllen = space as _;
            // SAFETY: the control buffer is large enough (checked) and aligned; the header
            // and data are written within it.
            unsafe {
                let c = libc::CMSG_FIRSTHDR(&msg);
                (*c).cmsg_level = libc::SOL_SOCKET;
                (*c).cmsg_type = libc::SCM_RIGHTS;
                (*c).cmsg_len = libc::CMSG_LEN(bytes as u32) as _;
                std::ptr::copy_nonoverlapping(fds.as_ptr().cast::<u8>(), libc::CMSG_DATA(c), bytes);
            }
        }
        // SAFETY: msg points at valid buffers that outlive the call.
        let n = unsafe { libc::sendmsg(fd, &msg, libc::MSG_NOSIGNAL) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        off += n as usize;
        fds = &[];
    }
    Ok(())
}
