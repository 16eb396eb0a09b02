//! The VXLAN transport (RFC 7348): an uplink whose frames travel in UDP datagrams between
//! VTEPs, each with an 8-byte VXLAN header whose VNI is the frame's channel (VNI `n` is
//! channel `n`, `1..=4094`).
//!
//! **In.** One UDP socket bound at `local` (port 4789 by default), non-blocking, read with
//! `recvmmsg` into buffers allocated once; the datapath thread serving the uplink sleeps on it
//! ([`Uplink::wake_fd`]). A datagram is dropped before switching, counted on the uplink, when
//! - it does not come from a configured remote VTEP (`source_spoof`): with a static list of
//!   remotes, anything else is a misconfiguration or someone injecting frames, and VXLAN has
//!   no authentication: the VNI is all that separates channels, so a host that may send UDP to
//!   port 4789 could otherwise put frames on any channel. (The Linux VXLAN device accepts any
//!   source, because it learns remotes; this uplink's remotes are configured, so it keeps to
//!   them.)
//! - its header is truncated, the I flag is clear, or the inner frame is shorter than an
//!   Ethernet header (`malformed`); reserved bits are ignored, as the RFC asks;
//! - its VNI is not a channel, 0 or above 4094 (`unknown_channel`);
//! - it did not fit a receive buffer ([`MAX_FRAME`] bytes of frame; `oversize`).
//!
//! The rest go to the switch as one batch, each frame where it lies in the receive buffer (no
//! copy) with its channel; the switch drops channels the uplink does not carry. Each frame's
//! inner source MAC is learned, per channel, with the VTEP it came from.
//!
//! **Out.** A unicast frame whose destination MAC was learned on its channel goes to that
//! VTEP; broadcast, multicast and unknown unicast go to every remote (head-end replication).
//! Each frame is copied once, into a transmit slot behind room for its headers; the copies to
//! several remotes point at the same slot; one `sendmmsg` sends a batch. The outer UDP source
//! port is a hash of the inner flow (module `flow`), as RFC 7348 recommends, which needs a raw
//! socket (the uplink writes the UDP header; `CAP_NET_RAW`); without one the uplink sends from
//! its bound socket, source port `local`'s, and says so in one log line.
//!
//! **MTU.** A frame is sent only if it fits the underlay with its encapsulation: its length
//! plus the outer IP, UDP and VXLAN headers ([`vxlan_wire::OUTER_IPV4`], 36 bytes; 56 over
//! IPv6) at most the MTU of the interface that holds `local`'s address, read when the uplink
//! opens. When `local` is the wildcard address or no interface holds it, the configured `mtu`
//! is taken as the guests' MTU instead: frames up to `mtu` + 14 bytes. Longer frames are not
//! sent (`oversize`), never truncated or fragmented (the sockets set "don't fragment", so a
//! smaller MTU on the route also ends as `oversize`). Guests on an underlay of MTU 1500 should
//! be given MTU 1450 (RFC 7348's 50 bytes: the 36 plus the inner Ethernet header).

mod flow;
mod mmsg;
mod sock;
mod vteps;

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use log::{info, warn};
use vswitch_channels::ChannelId;
use vswitch_vhost::{FrameBatch, HostFrames, NetHdr};

use self::mmsg::{Outcome, RxRing, TxRing, FRAME_AT, RX_BATCH, TX_BATCH};
use self::sock::SockAddr;
use self::vteps::VtepTable;
use super::vxlan_wire::{self, udp, Packet};
use super::UplinkError;
use crate::counters::{DropReason, Drops};
use crate::port::{Outgoing, Received, SendResult, Uplink};

/// Most remote VTEPs an uplink takes: head-end replication sends a flooded frame once per
/// remote; many more remotes than this is what multicast underlays are for.
pub const MAX_REMOTES: usize = 256;

/// Largest inner frame the uplink carries (a jumbo frame): the size of its buffers. A longer
/// datagram arrives truncated and is dropped (`oversize`).
pub const MAX_FRAME: usize = 9216;

/// Shortest inner frame: an Ethernet header.
const MIN_FRAME: usize = 14;

/// A remote VTEP.
struct Remote {
    ip: IpAddr,
    /// Its address for the sending socket.
    to: SockAddr,
}

/// What the receiving side keeps between calls.
struct RxState {
    ring: RxRing,
    /// The batch builder, empty between calls (kept for its storage).
    frames: Option<HostFrames<'static>>,
    stamps: Vec<ChannelId>,
    /// (channel, inner source MAC, remote) of each frame of the batch.
    learned: Vec<(ChannelId, [u8; 6], u16)>,
}

/// A frame staged in a transmit slot.
#[derive(Clone, Copy)]
struct Staged {
    channel: ChannelId,
    dst: [u8; 6],
    len: usize,
    sent: bool,
    too_big: bool,
}

/// What the sending side keeps between calls.
struct TxState {
    ring: TxRing,
    staged: Vec<Staged>,
}

/// A VXLAN uplink.
pub struct Vxlan {
    name: String,
    /// Receives; also sends when there is no raw socket.
    sock: UdpSocket,
    /// Sends datagrams whose UDP header the uplink writes.
    raw: Option<OwnedFd>,
    remotes: Box<[Remote]>,
    /// UDP port of the remotes (`local`'s).
    port: u16,
    /// Longest frame sent.
    max_frame: usize,
    /// Time origin of the learning table's clock.
    epoch: Instant,
    rx: Mutex<RxState>,
    tx: Mutex<TxState>,
    vteps: Mutex<VtepTable>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn invalid(name: &str, what: String) -> UplinkError {
    UplinkError::Io {
        name: name.to_owned(),
        what,
        source: std::io::Error::from(std::io::ErrorKind::InvalidInput),
    }
}

/// The channel VNI `vni` stands for.
fn channel_of(vni: u32) -> Option<ChannelId> {
    u16::try_from(vni).ok().and_then(|v| ChannelId::new(v).ok())
}

/// The channel and inner frame of a datagram, or why it is dropped.
fn decode(datagram: &[u8]) -> Result<(ChannelId, &[u8]), DropReason> {
    let p = Packet::new_checked(datagram).map_err(|_| DropReason::Malformed)?;
    if !p.has_vni() {
        return Err(DropReason::Malformed);
    }
    let channel = channel_of(p.vni()).ok_or(DropReason::UnknownChannel)?;
    let frame = &datagram[vxlan_wire::HEADER_LEN..];
    if frame.len() < MIN_FRAME {
        return Err(DropReason::Malformed);
    }
    Ok((channel, frame))
}

impl Vxlan {
    /// Opens uplink `name`: binds `local`, sends to `remotes` (at `local`'s port). `mtu` is
    /// used only when no interface holds `local`'s address (see the module doc).
    pub fn open(
        name: &str,
        local: SocketAddr,
        remotes: &[IpAddr],
        mtu: u16,
    ) -> Result<Arc<Vxlan>, UplinkError> {
        if local.port() == 0 {
            return Err(invalid(
                name,
                format!("local {local}: give the UDP port the remotes listen on too"),
            ));
        }
        let mut ips: Vec<IpAddr> = Vec::with_capacity(remotes.len());
        for &ip in remotes {
            if ip.is_ipv4() != local.is_ipv4() {
                return Err(invalid(
                    name,
                    format!("remote {ip} is not of the address family of local {local}"),
                ));
            }
            if ip == local.ip() || ip.is_unspecified() || ip.is_multicast() {
                return Err(invalid(name, format!("remote {ip} is not a remote VTEP")));
            }
            if !ips.contains(&ip) {
                ips.push(ip);
            }
        }
        if ips.is_empty() || ips.len() > MAX_REMOTES {
            return Err(invalid(
                name,
                format!("{} remote VTEPs: give 1 to {MAX_REMOTES}", ips.len()),
            ));
        }
        let io = |what: &str| {
            let what = format!("{what} {local}");
            move |source| UplinkError::Io {
                name: name.to_owned(),
                what,
                source,
            }
        };
        let sock = sock::open_udp(local).map_err(io("bind UDP socket at"))?;
        let raw = match sock::open_raw_udp(local) {
            Ok(fd) => Some(fd),
            Err(e) => {
                warn!(
                    "uplink {name}: VXLAN sends from its UDP socket, every datagram with source \
                     port {} (a raw socket to hash the source port per flow was refused: {e})",
                    local.port()
                );
                None
            }
        };
        // The raw socket takes no port in its destination address; the UDP socket does.
        let dst_port = if raw.is_some() { 0 } else { local.port() };
        let remotes: Box<[Remote]> = ips
            .iter()
            .map(|&ip| Remote {
                ip,
                to: SockAddr::new(SocketAddr::new(ip, dst_port)),
            })
            .collect();
        let outer = if local.is_ipv4() {
            vxlan_wire::OUTER_IPV4
        } else {
            vxlan_wire::OUTER_IPV6
        };
        let (max_frame, whence) = match sock::interface_mtu(local.ip(), sock.as_raw_fd()) {
            Ok(Some((ifname, m))) => (
                (m as usize).saturating_sub(outer),
                format!("underlay {ifname} MTU {m}"),
            ),
            Ok(None) => (
                usize::from(mtu) + MIN_FRAME,
                format!("configured guest MTU {mtu}"),
            ),
            Err(e) => return Err(io("read the MTU of the interface holding")(e)),
        };
        let max_frame = max_frame.min(MAX_FRAME);
        info!(
            "uplink {name}: VXLAN at {local} to {} remote VTEP(s) {ips:?}, {}, frames up to \
             {max_frame} bytes ({whence})",
            ips.len(),
            if raw.is_some() {
                "source port per flow (raw socket)"
            } else {
                "fixed source port (UDP socket)"
            },
        );
        Ok(Arc::new(Vxlan {
            name: name.to_owned(),
            sock,
            raw,
            tx: Mutex::new(TxState {
                ring: TxRing::new(remotes.len()),
                staged: Vec::with_capacity(TX_BATCH),
            }),
            remotes,
            port: local.port(),
            max_frame,
            epoch: Instant::now(),
            rx: Mutex::new(RxState {
                ring: RxRing::new(),
                frames: Some(HostFrames::with_capacity(RX_BATCH)),
                stamps: Vec::with_capacity(RX_BATCH),
                learned: Vec::with_capacity(RX_BATCH),
            }),
            vteps: Mutex::new(VtepTable::new()),
        }))
    }

    /// Longest frame this uplink sends.
    pub fn max_frame(&self) -> usize {
        self.max_frame
    }

    /// True when the outer UDP source port is hashed per flow (a raw socket sends).
    pub fn hashes_source_port(&self) -> bool {
        self.raw.is_some()
    }

    /// Seconds since the uplink opened: the learning table's clock.
    fn now(&self) -> u32 {
        u32::try_from(self.epoch.elapsed().as_secs()).unwrap_or(u32::MAX)
    }

    /// Index of remote `ip`.
    fn remote_index(&self, ip: IpAddr) -> Option<u16> {
        self.remotes
            .iter()
            .position(|r| r.ip == ip)
            .and_then(|i| u16::try_from(i).ok())
    }

    /// Stages frames `range` of `frames` into transmit slots with their headers; counts the
    /// ones too long in `r`.
    fn stage(
        &self,
        tx: &mut TxState,
        frames: &Outgoing<'_, '_>,
        range: std::ops::Range<usize>,
        r: &mut SendResult,
    ) {
        let TxState { ring, staged } = tx;
        staged.clear();
        let (head, raw) = match self.raw {
            Some(_) => (0, true),
            None => (udp::HEADER_LEN, false),
        };
        for i in range {
            let (f, channel) = frames.get(i);
            let len = f.len();
            if len > self.max_frame {
                r.oversize += 1;
                continue;
            }
            let s = staged.len();
            let slot = ring.slot_mut(s);
            let (headers, body) = slot.split_at_mut(FRAME_AT);
            let len = f.copy_to(&mut body[..len]);
            let frame = &body[..len];
            let (udp_header, vxlan_header) = headers.split_at_mut(udp::HEADER_LEN);
            Packet::new_unchecked(vxlan_header).emit(u32::from(channel.get()));
            if raw {
                let sport = flow::source_port(frame);
                udp::emit(udp_header, sport, self.port, vxlan_wire::HEADER_LEN + len);
            }
            let mut dst = [0u8; 6];
            dst.copy_from_slice(&frame[..6]);
            ring.set_datagram(s, head, FRAME_AT - head + len);
            staged.push(Staged {
                channel,
                dst,
                len,
                sent: false,
                too_big: false,
            });
        }
    }

    /// Sends the staged frames: a learned unicast destination to its VTEP, anything else to
    /// every remote.
    fn flush(&self, tx: &mut TxState, fd: RawFd, r: &mut SendResult) {
        let TxState { ring, staged } = tx;
        if staged.is_empty() {
            return;
        }
        let now = self.now();
        // Where each frame goes, decided under one lock of the table.
        let mut known: [Option<u16>; TX_BATCH] = [None; TX_BATCH];
        {
            let vteps = lock(&self.vteps);
            for (k, st) in known.iter_mut().zip(staged.iter()) {
                if st.dst[0] & 1 == 0 {
                    *k = vteps.lookup(st.channel, st.dst, now);
                }
            }
        }
        let remotes = &self.remotes;
        let to = known[..staged.len()].iter().enumerate().flat_map(|(s, k)| {
            let targets = match k {
                Some(one) => {
                    let one = usize::from(*one);
                    &remotes[one..one + 1]
                }
                None => &remotes[..],
            };
            targets.iter().map(move |t| (s, &t.to))
        });
        ring.send(fd, to, |s, outcome| match outcome {
            Outcome::Sent => staged[s].sent = true,
            Outcome::TooBig => staged[s].too_big = true,
            Outcome::Failed => {}
        });
        for st in staged.iter() {
            if st.sent {
                r.sent += 1;
                r.bytes += st.len as u64;
            } else if st.too_big {
                r.oversize += 1;
            } else {
                r.dropped += 1;
            }
        }
    }
}

impl Uplink for Vxlan {
    fn receive(&self, each: &mut dyn FnMut(&FrameBatch<'_>, &[ChannelId])) -> Received {
        let mut rx = lock(&self.rx);
        let RxState {
            ring,
            frames,
            stamps,
            learned,
        } = &mut *rx;
        let n = ring.recv(self.sock.as_raw_fd());
        if n == 0 {
            return Received::default();
        }
        let mut drops = Drops::default();
        let mut batch = frames.take().unwrap_or_default().recycle();
        stamps.clear();
        learned.clear();
        for i in 0..n {
            let d = ring.datagram(i);
            let Some(remote) = d.source.and_then(|ip| self.remote_index(ip)) else {
                drops.add(DropReason::SourceSpoof, 1);
                continue;
            };
            if d.truncated {
                drops.add(DropReason::Oversize, 1);
                continue;
            }
            match decode(d.payload) {
                Err(reason) => drops.add(reason, 1),
                Ok((channel, frame)) => {
                    if batch.push(frame, NetHdr::default()).is_err() {
                        drops.add(DropReason::Malformed, 1);
                        continue;
                    }
                    stamps.push(channel);
                    let mut src = [0u8; 6];
                    src.copy_from_slice(&frame[6..12]);
                    // A group address is never a station's own: not learned.
                    if src[0] & 1 == 0 {
                        learned.push((channel, src, remote));
                    }
                }
            }
        }
        if !learned.is_empty() {
            let now = self.now();
            let mut vteps = lock(&self.vteps);
            for &(channel, mac, remote) in learned.iter() {
                vteps.learn(channel, mac, remote, now);
            }
        }
        if !batch.is_empty() {
            each(&batch.batch(), stamps);
        }
        *frames = Some(batch.recycle());
        Received {
            active: true,
            drops,
        }
    }

    fn send(&self, frames: &Outgoing<'_, '_>) -> SendResult {
        let mut r = SendResult::default();
        let fd = match &self.raw {
            Some(raw) => raw.as_raw_fd(),
            None => self.sock.as_raw_fd(),
        };
        let mut tx = lock(&self.tx);
        let mut start = 0;
        while start < frames.len() {
            let end = (start + TX_BATCH).min(frames.len());
            self.stage(&mut tx, frames, start..end, &mut r);
            self.flush(&mut tx, fd, &mut r);
            start = end;
        }
        r
    }

    fn wake_fd(&self) -> Option<RawFd> {
        Some(self.sock.as_raw_fd())
    }
}

impl std::fmt::Debug for Vxlan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vxlan")
            .field("name", &self.name)
            .field("local", &self.sock.local_addr().ok())
            .field(
                "remotes",
                &self.remotes.iter().map(|r| r.ip).collect::<Vec<_>>(),
            )
            .field("max_frame", &self.max_frame)
            .field("hashes_source_port", &self.raw.is_some())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn datagram(flags: u8, vni: u32, frame_len: usize) -> Vec<u8> {
        let mut d = vec![0u8; vxlan_wire::HEADER_LEN + frame_len];
        Packet::new_unchecked(&mut d[..]).emit(vni);
        d[0] = flags;
        d
    }

    #[test]
    fn vni_is_the_channel() {
        let d = datagram(0x08, 100, 60);
        let (c, f) = decode(&d).expect("decodes");
        assert_eq!(c.get(), 100);
        assert_eq!(f.len(), 60);
        assert_eq!(
            decode(&datagram(0x08, 4094, 14)).map(|x| x.0.get()),
            Ok(4094)
        );
    }

    #[test]
    fn what_is_not_a_channel_is_an_unknown_channel() {
        for vni in [0, 4095, 4096, 0x00ff_ffff] {
            assert_eq!(
                decode(&datagram(0x08, vni, 60)).map(|_| ()),
                Err(DropReason::UnknownChannel),
                "vni {vni}"
            );
        }
    }

    #[test]
    fn what_does_not_parse_is_malformed() {
        for len in 0..vxlan_wire::HEADER_LEN {
            assert_eq!(
                decode(&datagram(0x08, 100, 60)[..len]).map(|_| ()),
                Err(DropReason::Malformed)
            );
        }
        assert_eq!(
            decode(&datagram(0x00, 100, 60)).map(|_| ()),
            Err(DropReason::Malformed),
            "no I flag"
        );
        assert_eq!(
            decode(&datagram(0xf7, 100, 60)).map(|_| ()),
            Err(DropReason::Malformed),
            "all but I"
        );
        assert_eq!(
            decode(&datagram(0x08, 100, 13)).map(|_| ()),
            Err(DropReason::Malformed),
            "runt"
        );
    }

    #[test]
    fn reserved_bits_do_not_matter() {
        let mut d = datagram(0xff, 200, 60);
        d[1..4].fill(0xee);
        d[7] = 0xee;
        assert_eq!(decode(&d).map(|x| x.0.get()), Ok(200));
    }

    /// A local address with a UDP port free a moment ago.
    fn free_local() -> SocketAddr {
        UdpSocket::bind("127.0.0.1:0")
            .and_then(|s| s.local_addr())
            .expect("a free port")
    }

    #[test]
    fn refuses_bad_remote_lists() {
        let local = free_local();
        let v6: IpAddr = "::1".parse().expect("ip");
        for remotes in [
            vec![],
            vec![v6],
            vec![local.ip()],
            vec!["0.0.0.0".parse().expect("ip")],
        ] {
            assert!(
                matches!(
                    Vxlan::open("up", local, &remotes, 1500),
                    Err(UplinkError::Io { .. })
                ),
                "{remotes:?}"
            );
        }
    }

    #[test]
    fn opens_on_loopback_and_sleeps_on_its_socket() {
        let local = free_local();
        let remote: IpAddr = "127.0.0.2".parse().expect("ip");
        let port0: SocketAddr = "127.0.0.1:0".parse().expect("addr");
        assert!(
            Vxlan::open("up", port0, &[remote], 1500).is_err(),
            "port 0 refused"
        );
        let up = Vxlan::open("up", local, &[remote, remote], 1500).expect("opens");
        assert_eq!(up.remotes.len(), 1, "duplicates merged");
        assert_eq!(up.wake_fd(), Some(up.sock.as_raw_fd()));
        // Loopback's MTU (65536) is above the largest frame the buffers take.
        assert_eq!(up.max_frame(), MAX_FRAME);
        let r = up.receive(&mut |_, _| panic!("nothing arrived"));
        assert_eq!(r, Received::default());
    }
}
