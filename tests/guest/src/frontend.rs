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

use vhost::vhost_user::message::{VhostUserConfigFlags, VhostUserHeaderFlag};
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
fn acked<T>(
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

/// GET_QUEUE_NUM written by hand: the vhost crate's `get_queue_num` stores the answer as its
/// limit on queue indices, and backends that answer in queue *pairs* (DPDK answers 1) would then
/// make it refuse queue 1.
fn get_queue_num_raw(sock: &mut UnixStream) -> Result<u64, GuestError> {
    const GET_QUEUE_NUM: u32 = 17;
    let perr = |e: io::Error| GuestError::Protocol {
        request: "GET_QUEUE_NUM",
        source: vhost::Error::VhostUserProtocol(vhost::vhost_user::Error::SocketError(e)),
    };
    let mut req = [0u8; 12];
    req[0..4].copy_from_slice(&GET_QUEUE_NUM.to_le_bytes());
    req[4..8].copy_from_slice(&1u32.to_le_bytes());
    sock.write_all(&req).map_err(perr)?;
    let mut rep = [0u8; 20];
    sock.read_exact(&mut rep).map_err(perr)?;
    let code = u32::from_le_bytes([rep[0], rep[1], rep[2], rep[3]]);
    let size = u32::from_le_bytes([rep[8], rep[9], rep[10], rep[11]]);
    if code != GET_QUEUE_NUM || size != 8 {
        return Err(GuestError::Protocol {
            request: "GET_QUEUE_NUM",
            source: vhost::Error::VhostUserProtocol(vhost::vhost_user::Error::InvalidMessage),
        });
    }
    let mut v = [0u8; 8];
    v.copy_from_slice(&rep[12..20]);
    Ok(u64::from_le_bytes(v))
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
            match read_config(fe, NET_CONFIG_LEN) {
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

/// GET_CONFIG for `len` bytes at offset 0.
pub(crate) fn read_config(fe: &mut Frontend, len: u32) -> Result<Vec<u8>, GuestError> {
    let buf = vec![0u8; len as usize];
    let (_, payload) = fe
        .get_config(0, len, VhostUserConfigFlags::empty(), &buf)
        .map_err(GuestError::protocol("GET_CONFIG"))?;
    Ok(payload)
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
