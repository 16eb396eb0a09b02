//! What an uplink asks the kernel about a network interface, by ioctl on a throwaway socket
//! (answered for the caller's network namespace, where sysfs may show another one).

use std::ffi::CString;
use std::io;
use std::mem::zeroed;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// `ETHTOOL_GCHANNELS` (linux/ethtool.h).
const ETHTOOL_GCHANNELS: u32 = 0x3c;

/// `struct ethtool_channels` (linux/ethtool.h).
#[repr(C)]
#[derive(Default)]
struct EthtoolChannels {
    cmd: u32,
    max_rx: u32,
    max_tx: u32,
    max_other: u32,
    max_combined: u32,
    rx_count: u32,
    tx_count: u32,
    other_count: u32,
    combined_count: u32,
}

/// The index of `interface`.
pub fn ifindex(interface: &str) -> io::Result<libc::c_int> {
    let name = CString::new(interface).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: `name` is a NUL-terminated string that outlives the call.
    let i = unsafe { libc::if_nametoindex(name.as_ptr()) };
    if i == 0 {
        return Err(io::Error::last_os_error());
    }
    libc::c_int::try_from(i).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

/// The MTU of `interface` (`SIOCGIFMTU`), read now: the largest payload after the 14-byte
/// Ethernet header.
pub fn mtu(interface: &str) -> io::Result<u32> {
    let mut req = ifreq(interface)?;
    // SAFETY: SIOCGIFMTU reads the NUL-terminated name from `req` and writes the MTU into
    // it; `req` is a valid, writable ifreq for the duration of the call.
    let r = unsafe { libc::ioctl(socket()?.as_raw_fd(), libc::SIOCGIFMTU, &mut req) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: after a successful SIOCGIFMTU the union holds the MTU.
    let mtu = unsafe { req.ifr_ifru.ifru_mtu };
    u32::try_from(mtu).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

/// The number of receive queues of `interface`: its receive and combined channels
/// (`ETHTOOL_GCHANNELS`); 1 when the driver does not say.
pub fn rx_queues(interface: &str) -> u32 {
    let mut ch = EthtoolChannels {
        cmd: ETHTOOL_GCHANNELS,
        ..EthtoolChannels::default()
    };
    let (Ok(mut req), Ok(sock)) = (ifreq(interface), socket()) else {
        return 1;
    };
    req.ifr_ifru.ifru_data = (&mut ch as *mut EthtoolChannels).cast();
    // SAFETY: SIOCETHTOOL reads the name and the command from `req` and `ch` and writes the
    // channel counts into `ch`; both are valid and writable for the duration of the call.
    let r = unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCETHTOOL, &mut req) };
    if r < 0 {
        return 1;
    }
    (ch.rx_count + ch.combined_count).max(1)
}

/// An ifreq naming `interface`, the rest zero.
fn ifreq(interface: &str) -> io::Result<libc::ifreq> {
    // SAFETY: an all-zero ifreq is a valid value (a union of plain data).
    let mut req: libc::ifreq = unsafe { zeroed() };
    let name = interface.as_bytes();
    if name.len() >= req.ifr_name.len() {
        return Err(io::Error::from_raw_os_error(libc::ENAMETOOLONG));
    }
    for (d, s) in req.ifr_name.iter_mut().zip(name) {
        *d = *s as libc::c_char;
    }
    Ok(req)
}

/// A socket to ask through: a datagram socket needs no privilege.
fn socket() -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2) call; the result is checked before use.
    let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `raw` is a descriptor socket(2) just returned, owned by nothing else.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}
