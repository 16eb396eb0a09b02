//! vhost-user protocol setup, in QEMU's order: SET_OWNER, GET_FEATURES, GET_PROTOCOL_FEATURES,
//! SET_PROTOCOL_FEATURES, GET_QUEUE_NUM, GET_CONFIG, SET_FEATURES, SET_MEM_TABLE, then per queue
//! SET_VRING_NUM/BASE/ADDR/KICK/CALL, and SET_VRING_ENABLE.
//!
//! When REPLY_ACK is negotiated every SET_* request after SET_PROTOCOL_FEATURES carries
//! NEED_REPLY, so when setup returns the backend has processed all of it.

use std::io::{self, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::time::{Duration, Instant};

use vhost::vhost_user::message::VhostUserHeaderFlag;
use vhost::vhost_user::{Frontend, VhostUserFrontend, VhostUserProtocolFeatures};
use vhost::{VhostBackend, VringConfigData};
use vmm_sys_util::eventfd::EventFd;

use crate::error::GuestError;
use crate::features::PROTOCOL_FEATURES;
use crate::memory::GuestMem;
use crate::vring::RingAddrs;

/// Length of the virtio-net config space the guest reads (mac, status, max_virtqueue_pairs, mtu).
pub const NET_CONFIG_LEN: u32 = 12;

/// What the handshake settled on.
#[derive(Clone, Debug, Default)]
pub(crate) struct Negotiated {
    pub offered: u64,
    pub features: u64,
    pub protocol: u64,
    pub queue_num: Option<u64>,
    pub config: Option<Vec<u8>>,
}

/// Connects to a listening backend, retrying until `timeout`.
pub(crate) fn connect_socket(path: &Path, timeout: Duration) -> Result<UnixStream, GuestError> {
    let deadline = Instant::now() + timeout;
    loop {
        match UnixStream::connect(path) {
            Ok(s) => return Ok(s),
            Err(e) if Instant::now() >= deadline => {
                return Err(GuestError::Connect {
                    path: path.to_path_buf(),
                    source: e,
                })
            }
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// Creates the socket at `path` (replacing a stale file), like QEMU `server=on`.
pub(crate) fn bind_listener(path: &Path) -> Result<UnixListener, GuestError> {
    let err = |source| GuestError::Listen {
        path: path.to_path_buf(),
        source,
    };
    if path.exists() {
        std::fs::remove_file(path).map_err(err)?;
    }
    let listener = UnixListener::bind(path).map_err(err)?;
    listener.set_nonblocking(true).map_err(err)?;
    Ok(listener)
}

/// Accepts one backend connection on `listener` before `timeout`.
pub(crate) fn accept_one(
    listener: &UnixListener,
    path: &Path,
    timeout: Duration,
) -> Result<UnixStream, GuestError> {
    let err = |source| GuestError::Listen {
        path: path.to_path_buf(),
        source,
    };
    let deadline = Instant::now() + timeout;
    let stream = loop {
        match listener.accept() {
            Ok((s, _)) => break s,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if Instant::now() >= deadline {
                    return Err(err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "no backend connected before the connect timeout",
                    )));
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => return Err(err(e)),
        }
    };
    stream.set_nonblocking(false).map_err(err)?;
    Ok(stream)
}

/// Runs `f` with NEED_REPLY set when REPLY_ACK was negotiated.
pub(crate) fn acked<T>(
    fe: &mut Frontend,
    reply_ack: bool,
    request: &'static str,
    f: impl FnOnce(&mut Frontend) -> vhost::Result<T>,
) -> Result<T, GuestError> {
    if reply_ack {
        fe.set_hdr_flags(VhostUserHeaderFlag::NEED_REPLY);
    }
    let r = f(fe);
    fe.set_hdr_flags(VhostUserHeaderFlag::empty());
    r.map_err(GuestError::protocol(request))
}

fn raw_err(request: &'static str, e: vhost::vhost_user::Error) -> GuestError {
    GuestError::Protocol {
        request,
        source: vhost::Error::VhostUserProtocol(e),
    }
}

/// Sends a request with `body` on the raw socket and reads exactly the reply it announces.
/// Used for requests whose vhost-crate implementation misbehaves (see callers).
fn raw_request(
    sock: &mut UnixStream,
    request: &'static str,
    code: u32,
    body: &[u8],
) -> Result<Vec<u8>, GuestError> {
    use vhost::vhost_user::Error as E;
    let io = |e: io::Error| raw_err(request, E::SocketError(e));
    let mut msg = Vec::with_capacity(12 + body.len());
    msg.extend_from_slice(&code.to_le_bytes());
    msg.extend_from_slice(&1u32.to_le_bytes());
    msg.extend_from_slice(&(body.len() as u32).to_le_bytes());
    msg.extend_from_slice(body);
    sock.write_all(&msg).map_err(io)?;
    let mut hdr = [0u8; 12];
    sock.read_exact(&mut hdr).map_err(io)?;
    let word = |i: usize| u32::from_le_bytes([hdr[i], hdr[i + 1], hdr[i + 2], hdr[i + 3]]);
    let (rcode, flags, size) = (word(0), word(4), word(8));
    if rcode != code || flags & 0x4 == 0 || size > 4096 {
        return Err(raw_err(request, E::InvalidMessage));
    }
    let mut reply = vec![0u8; size as usize];
    sock.read_exact(&mut reply).map_err(io)?;
    Ok(reply)
}

/// Sends a request that has no reply of its own on the raw socket; with `need_reply` (REPLY_ACK
/// negotiated) waits for the ack and fails on a non-zero one.
pub(crate) fn raw_send(
    sock: &mut UnixStream,
    request: &'static str,
    code: u32,
    body: &[u8],
    need_reply: bool,
) -> Result<(), GuestError> {
    use vhost::vhost_user::Error as E;
    let io = |e: io::Error| raw_err(request, E::SocketError(e));
    let flags: u32 = if need_reply { 0x1 | 0x8 } else { 0x1 };
    let mut msg = Vec::with_capacity(12 + body.len());
    msg.extend_from_slice(&code.to_le_bytes());
    msg.extend_from_slice(&flags.to_le_bytes());
    msg.extend_from_slice(&(body.len() as u32).to_le_bytes());
    msg.extend_from_slice(body);
    sock.write_all(&msg).map_err(io)?;
    if !need_reply {
        return Ok(());
    }
    let mut reply = [0u8; 20];
    sock.read_exact(&mut reply).map_err(io)?;
    let code_back = u32::from_le_bytes([reply[0], reply[1], reply[2], reply[3]]);
    if code_back != code || reply[12..].iter().any(|&b| b != 0) {
        return Err(raw_err(request, E::InvalidMessage));
    }
    Ok(())
}

/// GET_QUEUE_NUM written by hand: the vhost crate's `get_queue_num` stores the answer as its
/// limit on queue indices, and a backend answering in queue *pairs* (1) would then make it
/// refuse queue 1.
fn get_queue_num_raw(sock: &mut UnixStream) -> Result<u64, GuestError> {
    let r = raw_request(sock, "GET_QUEUE_NUM", 17, &[])?;
    let v: [u8; 8] = r
        .as_slice()
        .try_into()
        .map_err(|_| raw_err("GET_QUEUE_NUM", vhost::vhost_user::Error::InvalidMessage))?;
    Ok(u64::from_le_bytes(v))
}

/// GET_CONFIG for `len` bytes at offset 0, written by hand: the vhost crate's `get_config`
/// waits for the full requested payload, so a backend that signals failure the way the spec
/// says (a reply with size 0 and no payload) would hang it forever.
pub(crate) fn read_config(sock: &mut UnixStream, len: u32) -> Result<Vec<u8>, GuestError> {
    let mut body = vec![0u8; 12 + len as usize];
    body[4..8].copy_from_slice(&len.to_le_bytes());
    let r = raw_request(sock, "GET_CONFIG", 24, &body)?;
    if r.len() < 12 {
        return Err(raw_err(
            "GET_CONFIG",
            vhost::vhost_user::Error::InvalidMessage,
        ));
    }
    let size = u32::from_le_bytes([r[4], r[5], r[6], r[7]]);
    if size == 0 {
        return Err(raw_err(
            "GET_CONFIG",
            vhost::vhost_user::Error::BackendInternalError,
        ));
    }
    if size != len || r.len() != 12 + len as usize {
        return Err(raw_err(
            "GET_CONFIG",
            vhost::vhost_user::Error::InvalidMessage,
        ));
    }
    Ok(r[12..].to_vec())
}

/// Feature and protocol-feature negotiation, up to and including SET_FEATURES.
pub(crate) fn negotiate(
    fe: &mut Frontend,
    sock: &mut UnixStream,
    want: u64,
    want_protocol: u64,
) -> Result<Negotiated, GuestError> {
    let mut n = Negotiated::default();
    fe.set_owner().map_err(GuestError::protocol("SET_OWNER"))?;
    n.offered = fe
        .get_features()
        .map_err(GuestError::protocol("GET_FEATURES"))?;
    n.features = n.offered & want;
    if n.features & PROTOCOL_FEATURES != 0 {
        let offered = fe
            .get_protocol_features()
            .map_err(GuestError::protocol("GET_PROTOCOL_FEATURES"))?;
        let acked = VhostUserProtocolFeatures::from_bits_truncate(offered.bits() & want_protocol);
        fe.set_protocol_features(acked)
            .map_err(GuestError::protocol("SET_PROTOCOL_FEATURES"))?;
        n.protocol = acked.bits();
        if acked.contains(VhostUserProtocolFeatures::MQ) {
            n.queue_num = Some(get_queue_num_raw(sock)?);
        }
        if acked.contains(VhostUserProtocolFeatures::CONFIG) {
            match read_config(sock, NET_CONFIG_LEN) {
                Ok(c) => n.config = Some(c),
                Err(e) => log::warn!("GET_CONFIG during setup failed: {e}"),
            }
        }
    }
    let reply_ack = n.protocol & VhostUserProtocolFeatures::REPLY_ACK.bits() != 0;
    acked(fe, reply_ack, "SET_FEATURES", |fe| {
        fe.set_features(n.features)
    })?;
    Ok(n)
}

/// SET_MEM_TABLE with the single guest memory region.
pub(crate) fn set_mem_table(
    fe: &mut Frontend,
    mem: &GuestMem,
    protocol: u64,
) -> Result<(), GuestError> {
    let region = mem.region_info()?;
    let reply_ack = protocol & VhostUserProtocolFeatures::REPLY_ACK.bits() != 0;
    acked(fe, reply_ack, "SET_MEM_TABLE", |fe| {
        fe.set_mem_table(std::slice::from_ref(&region)).map(|_| ())
    })
}

/// Everything needed to start one virtqueue.
pub(crate) struct QueueStart<'a> {
    pub index: usize,
    pub ring: RingAddrs,
    pub base: u16,
    pub kick: &'a EventFd,
    pub call: Option<&'a EventFd>,
}

/// SET_VRING_NUM, SET_VRING_BASE, SET_VRING_ADDR, SET_VRING_KICK, SET_VRING_CALL (if any).
pub(crate) fn start_queue(
    fe: &mut Frontend,
    mem: &GuestMem,
    protocol: u64,
    q: &QueueStart<'_>,
) -> Result<(), GuestError> {
    let ra = protocol & VhostUserProtocolFeatures::REPLY_ACK.bits() != 0;
    let i = q.index;
    acked(fe, ra, "SET_VRING_NUM", |fe| {
        fe.set_vring_num(i, q.ring.size)
    })?;
    acked(fe, ra, "SET_VRING_BASE", |fe| fe.set_vring_base(i, q.base))?;
    let cfg = VringConfigData {
        queue_max_size: q.ring.size,
        queue_size: q.ring.size,
        flags: 0,
        desc_table_addr: mem.user_addr(q.ring.desc),
        used_ring_addr: mem.user_addr(q.ring.used),
        avail_ring_addr: mem.user_addr(q.ring.avail),
        log_addr: None,
    };
    acked(fe, ra, "SET_VRING_ADDR", |fe| fe.set_vring_addr(i, &cfg))?;
    acked(fe, ra, "SET_VRING_KICK", |fe| fe.set_vring_kick(i, q.kick))?;
    if let Some(call) = q.call {
        acked(fe, ra, "SET_VRING_CALL", |fe| fe.set_vring_call(i, call))?;
    }
    Ok(())
}

/// SET_VRING_ENABLE (only meaningful, and only sent, when PROTOCOL_FEATURES was negotiated).
pub(crate) fn enable_queue(
    fe: &mut Frontend,
    features: u64,
    protocol: u64,
    index: usize,
    on: bool,
) -> Result<(), GuestError> {
    if features & PROTOCOL_FEATURES == 0 {
        return Ok(());
    }
    let ra = protocol & VhostUserProtocolFeatures::REPLY_ACK.bits() != 0;
    acked(fe, ra, "SET_VRING_ENABLE", |fe| {
        fe.set_vring_enable(index, on)
    })
}
