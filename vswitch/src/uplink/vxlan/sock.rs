//! The sockets of a VXLAN uplink and what it asks the kernel about them: socket addresses in
//! the kernel's form, socket options, the raw socket that sends with the uplink's own UDP
//! header, and the MTU of the interface holding an address.

use std::ffi::CStr;
use std::io;
use std::mem;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// Socket buffer size asked for (the kernel may give less without privileges): room for a
/// few batches of jumbo frames while the datapath thread is busy elsewhere.
const SOCKET_BUFFER: libc::c_int = 4 << 20;

/// A socket address as the kernel takes it.
pub(super) struct SockAddr {
    storage: libc::sockaddr_storage,
    len: libc::socklen_t,
}

impl SockAddr {
    pub(super) fn new(addr: SocketAddr) -> Self {
        // SAFETY: sockaddr_storage is a plain C struct for which all zeroes is a valid value.
        let mut storage: libc::sockaddr_storage = unsafe { mem::zeroed() };
        let len = match addr {
            SocketAddr::V4(a) => {
                let sin = libc::sockaddr_in {
                    sin_family: libc::AF_INET as libc::sa_family_t,
                    sin_port: a.port().to_be(),
                    sin_addr: libc::in_addr {
                        s_addr: u32::from_ne_bytes(a.ip().octets()),
                    },
                    sin_zero: [0; 8],
                };
                // SAFETY: sockaddr_storage is larger than sockaddr_in and aligned for any
                // socket address.
                unsafe { std::ptr::write(std::ptr::addr_of_mut!(storage).cast(), sin) };
                mem::size_of::<libc::sockaddr_in>()
            }
            SocketAddr::V6(a) => {
                let sin6 = libc::sockaddr_in6 {
                    sin6_family: libc::AF_INET6 as libc::sa_family_t,
                    sin6_port: a.port().to_be(),
                    sin6_flowinfo: 0,
                    sin6_addr: libc::in6_addr {
                        s6_addr: a.ip().octets(),
                    },
                    sin6_scope_id: a.scope_id(),
                };
                // SAFETY: as above, for sockaddr_in6.
                unsafe { std::ptr::write(std::ptr::addr_of_mut!(storage).cast(), sin6) };
                mem::size_of::<libc::sockaddr_in6>()
            }
        };
        SockAddr {
            storage,
            len: len as libc::socklen_t,
        }
    }

    /// The address, for a system call that reads it.
    pub(super) fn as_ptr(&self) -> *const libc::sockaddr {
        std::ptr::addr_of!(self.storage).cast()
    }

    /// Its length.
    pub(super) fn len(&self) -> libc::socklen_t {
        self.len
    }
}

/// The IP address of a socket address the kernel wrote into `s` (`None`: not IPv4 or IPv6).
pub(super) fn ip_of(s: &libc::sockaddr_storage) -> Option<IpAddr> {
    // SAFETY: a sockaddr_storage is large enough for any address family's socket address.
    unsafe { ip_at((s as *const libc::sockaddr_storage).cast()) }
}

/// The IP address of the socket address at `sa`.
///
/// # Safety
/// `sa` points to a socket address at least as long as its family's (`sockaddr_in` for
/// `AF_INET`, `sockaddr_in6` for `AF_INET6`).
unsafe fn ip_at(sa: *const libc::sockaddr) -> Option<IpAddr> {
    // SAFETY: every socket address starts with its family (caller's contract).
    let family = libc::c_int::from(unsafe { (*sa).sa_family });
    match family {
        libc::AF_INET => {
            // SAFETY: the family says it is a sockaddr_in (caller's contract for its length);
            // read unaligned, as the caller's buffer may be a byte buffer.
            let sin = unsafe { std::ptr::read_unaligned(sa.cast::<libc::sockaddr_in>()) };
            Some(IpAddr::V4(Ipv4Addr::from(
                sin.sin_addr.s_addr.to_ne_bytes(),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: as above, for sockaddr_in6.
            let sin6 = unsafe { std::ptr::read_unaligned(sa.cast::<libc::sockaddr_in6>()) };
            Some(IpAddr::V6(Ipv6Addr::from(sin6.sin6_addr.s6_addr)))
        }
        _ => None,
    }
}

/// Sets an integer socket option.
fn set_int(fd: RawFd, level: libc::c_int, name: libc::c_int, value: libc::c_int) -> io::Result<()> {
    // SAFETY: `value` lives across the call and its size is passed; the kernel only reads it.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            std::ptr::addr_of!(value).cast(),
            mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Asks for big socket buffers: the privileged option first (not capped by the sysctl
/// limits), the ordinary one if that is refused. Best effort: the defaults work, only less
/// well under bursts.
fn big_buffers(fd: RawFd) {
    for (force, plain) in [
        (libc::SO_RCVBUFFORCE, libc::SO_RCVBUF),
        (libc::SO_SNDBUFFORCE, libc::SO_SNDBUF),
    ] {
        if set_int(fd, libc::SOL_SOCKET, force, SOCKET_BUFFER).is_err() {
            let _ = set_int(fd, libc::SOL_SOCKET, plain, SOCKET_BUFFER);
        }
    }
}

/// Never fragment what is sent, locally or on the path: a datagram longer than the route's MTU
/// fails with `EMSGSIZE` instead (counted `oversize`).
fn never_fragment(fd: RawFd, ipv6: bool) -> io::Result<()> {
    if ipv6 {
        set_int(
            fd,
            libc::IPPROTO_IPV6,
            libc::IPV6_MTU_DISCOVER,
            libc::IPV6_PMTUDISC_DO,
        )
    } else {
        set_int(
            fd,
            libc::IPPROTO_IP,
            libc::IP_MTU_DISCOVER,
            libc::IP_PMTUDISC_DO,
        )
    }
}

/// The UDP socket bound at `local`: non-blocking, big buffers, never fragmenting.
pub(super) fn open_udp(local: SocketAddr) -> io::Result<UdpSocket> {
    let sock = UdpSocket::bind(local)?;
    sock.set_nonblocking(true)?;
    big_buffers(sock.as_raw_fd());
    never_fragment(sock.as_raw_fd(), local.is_ipv6())?;
    Ok(sock)
}

/// A raw socket for UDP datagrams whose UDP header the caller writes (so it chooses the source
/// port), sending from `local`'s address: the kernel adds the IP header (over IPv6 it also
/// computes the UDP checksum; over IPv4 it is left 0, as RFC 7348 allows). It would also
/// receive a copy of every UDP datagram arriving in the namespace: a socket filter drops them
/// all before they are queued. Needs `CAP_NET_RAW`.
pub(super) fn open_raw_udp(local: SocketAddr) -> io::Result<OwnedFd> {
    let ipv6 = local.is_ipv6();
    let family = if ipv6 { libc::AF_INET6 } else { libc::AF_INET };
    // SAFETY: a plain system call; the descriptor it returns is owned below.
    let fd = unsafe {
        libc::socket(
            family,
            libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            libc::IPPROTO_UDP,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a new descriptor nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let raw = fd.as_raw_fd();
    receive_nothing(raw)?;
    if ipv6 {
        // The UDP checksum field is at offset 6 of what we write.
        set_int(raw, libc::IPPROTO_IPV6, libc::IPV6_CHECKSUM, 6)?;
    }
    never_fragment(raw, ipv6)?;
    big_buffers(raw);
    let from = SockAddr::new(SocketAddr::new(local.ip(), 0));
    // SAFETY: `from` is a valid socket address of `from.len()` bytes, read during the call.
    if unsafe { libc::bind(raw, from.as_ptr(), from.len()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // Datagrams that arrived before the filter was attached.
    let mut scratch = [0u8; 64];
    loop {
        // SAFETY: `scratch` is writable for its length during the call.
        let n = unsafe {
            libc::recv(
                raw,
                scratch.as_mut_ptr().cast(),
                scratch.len(),
                libc::MSG_DONTWAIT,
            )
        };
        if n < 0 {
            break;
        }
    }
    Ok(fd)
}

/// Attaches a classic BPF filter that accepts nothing: the socket only sends.
fn receive_nothing(fd: RawFd) -> io::Result<()> {
    // "ret #0": keep 0 bytes of every packet, i.e. drop it.
    let mut drop_all = [libc::sock_filter {
        code: (libc::BPF_RET | libc::BPF_K) as u16,
        jt: 0,
        jf: 0,
        k: 0,
    }];
    let prog = libc::sock_fprog {
        len: 1,
        filter: drop_all.as_mut_ptr(),
    };
    // SAFETY: `prog` and the instruction it points to live across the call; the kernel copies
    // the program.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_ATTACH_FILTER,
            std::ptr::addr_of!(prog).cast(),
            mem::size_of::<libc::sock_fprog>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The name and MTU of the interface that holds address `ip` (`None`: no interface does),
/// asked through socket `fd` (whose network namespace is the one looked at).
pub(super) fn interface_mtu(ip: IpAddr, fd: RawFd) -> io::Result<Option<(String, u32)>> {
    let Some(name) = interface_holding(ip)? else {
        return Ok(None);
    };
    // SAFETY: ifreq is a plain C struct (a name and a union of plain fields); all zeroes is
    // valid.
    let mut req: libc::ifreq = unsafe { mem::zeroed() };
    let bytes = name.as_bytes();
    if bytes.len() >= req.ifr_name.len() {
        return Ok(None);
    }
    for (d, s) in req.ifr_name.iter_mut().zip(bytes) {
        *d = *s as libc::c_char;
    }
    // SAFETY: `req` is a valid ifreq with a NUL-terminated name, writable during the call;
    // SIOCGIFMTU writes only its MTU field.
    if unsafe { libc::ioctl(fd, libc::SIOCGIFMTU, std::ptr::addr_of_mut!(req)) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: SIOCGIFMTU succeeded, so the union holds the MTU.
    let mtu = unsafe { req.ifr_ifru.ifru_mtu };
    Ok(u32::try_from(mtu).ok().map(|m| (name, m)))
}

/// The name of the interface that holds address `ip`, in the calling thread's network
/// namespace.
fn interface_holding(ip: IpAddr) -> io::Result<Option<String>> {
    let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs writes a list head into `list`, freed below.
    if unsafe { libc::getifaddrs(std::ptr::addr_of_mut!(list)) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let mut found = None;
    let mut cur = list;
    while !cur.is_null() {
        // SAFETY: `cur` is a node of the list getifaddrs returned, not freed yet.
        let ifa = unsafe { &*cur };
        // SAFETY: a non-null ifa_addr points to a socket address of its family's length.
        if !ifa.ifa_addr.is_null() && unsafe { ip_at(ifa.ifa_addr) } == Some(ip) {
            // SAFETY: ifa_name is a NUL-terminated string owned by the list.
            let name = unsafe { CStr::from_ptr(ifa.ifa_name) };
            found = Some(name.to_string_lossy().into_owned());
            break;
        }
        cur = ifa.ifa_next;
    }
    // SAFETY: the list getifaddrs returned, freed once; nothing borrowed from it is kept.
    unsafe { libc::freeifaddrs(list) };
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_addresses_round_trip() {
        for a in ["10.1.2.3:4789", "[fd00::7]:4789"] {
            let a: SocketAddr = a.parse().expect("address");
            let s = SockAddr::new(a);
            assert_eq!(ip_of(&s.storage), Some(a.ip()));
        }
        assert_eq!(
            SockAddr::new("1.2.3.4:4789".parse().expect("address")).len() as usize,
            mem::size_of::<libc::sockaddr_in>()
        );
    }

    #[test]
    fn the_loopback_interface_holds_127_0_0_1() {
        let sock = UdpSocket::bind("127.0.0.1:0").expect("socket");
        if let Some((name, mtu)) =
            interface_mtu(IpAddr::V4(Ipv4Addr::LOCALHOST), sock.as_raw_fd()).expect("lookup")
        {
            assert_eq!(name, "lo");
            assert!(mtu >= 1280);
        }
        let none = interface_mtu("192.0.2.77".parse().expect("ip"), sock.as_raw_fd());
        assert!(
            matches!(none, Ok(None)),
            "no interface holds a TEST-NET address"
        );
    }
}
