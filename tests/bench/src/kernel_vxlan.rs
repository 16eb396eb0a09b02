//! The reference for the two-host scenarios: the Linux kernel's own VXLAN path between the same
//! two hosts (network namespaces, one veth pair, see `netns`). A kernel VXLAN device in each
//! namespace (VNI 100, UDP 4789, the veth pair's addresses as local and remote, learning on, as
//! `ip link add ... type vxlan` makes it); one thread inside host A, pinned to the generator
//! CPU, sends the scenario's pre-built frames into device A through a raw AF_PACKET socket,
//! in `sendmmsg` batches of the generator's batch size (blocking: the kernel's own back
//! pressure paces it). The kernel encapsulates each frame, sends it over the veth pair,
//! receives and decapsulates it in host B; the frames device B hands to B's stack (its
//! `rx_packets` in host B's /proc/net/dev) are the delivered rate. Nothing in B consumes them:
//! their destination MAC is not B's, so B's IP layer discards them right after the count.

use std::mem;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

use crate::frames::build_frame;
use crate::generator::Measurement;
use crate::netns::{self, IfCounters, Netns, TwoHosts, ADDR_A, ADDR_B, IF_A, IF_B};
use crate::peers::Cost;
use crate::scenario::{mac, BASE_CHANNEL};
use crate::sys;

/// The kernel VXLAN devices.
const VX_A: &str = "vxa";
const VX_B: &str = "vxb";

/// Counters of the generator thread.
#[derive(Default)]
struct GenCounters {
    sent: AtomicU64,
    batches: AtomicU64,
    /// Frames `sendmmsg` refused (an error instead of a count).
    refused: AtomicU64,
}

/// Adds a kernel VXLAN device `dev` on `lower` in `ns`, up, without IPv6.
fn vxlan_device(ns: &Netns, dev: &str, local: &str, remote: &str, lower: &str) -> Result<()> {
    let vni = BASE_CHANNEL.to_string();
    let port = vswitch::uplink::VXLAN_PORT.to_string();
    ns.ip(&[
        "link", "add", dev, "type", "vxlan", "id", &vni, "local", local, "remote", remote,
        "dstport", &port, "dev", lower,
    ])?;
    ns.sysctl(&format!("net.ipv6.conf.{dev}.disable_ipv6"), "1")?;
    ns.ip(&["link", "set", dev, "up"])
}

/// A raw AF_PACKET socket bound to `ifname` for sending only (protocol 0: it receives nothing).
fn packet_socket(ifname: &str) -> Result<OwnedFd> {
    let c = std::ffi::CString::new(ifname)?;
    // SAFETY: `c` is a NUL-terminated string alive for the call.
    let ifindex = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if ifindex == 0 {
        bail!("no interface {ifname}: {}", std::io::Error::last_os_error());
    }
    // SAFETY: plain socket(2) call; the result is checked before use.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        bail!("socket(AF_PACKET): {}", std::io::Error::last_os_error());
    }
    // SAFETY: `fd` is a descriptor socket(2) just returned, owned by nothing else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: sockaddr_ll is plain data; all zeroes is a valid value.
    let mut sll: libc::sockaddr_ll = unsafe { mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_ifindex = ifindex as i32;
    // SAFETY: `sll` is a valid sockaddr_ll and its size is passed; the kernel only reads it.
    let rc = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            std::ptr::addr_of!(sll).cast(),
            mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        bail!(
            "bind AF_PACKET to {ifname}: {}",
            std::io::Error::last_os_error()
        );
    }
    Ok(fd)
}

/// Sends `frame` in batches of `batch` until `stop`.
fn generate(
    fd: &OwnedFd,
    frame: &[u8],
    batch: usize,
    stop: &AtomicBool,
    c: &GenCounters,
) -> Result<()> {
    // Every message points at the same frame: the kernel copies it into an skb per message.
    let mut iov = libc::iovec {
        iov_base: frame.as_ptr().cast_mut().cast(),
        iov_len: frame.len(),
    };
    let mut msgs: Vec<libc::mmsghdr> = (0..batch)
        .map(|_| {
            // SAFETY: mmsghdr is a plain C struct; all zeroes is a valid value.
            let mut m: libc::mmsghdr = unsafe { mem::zeroed() };
            m.msg_hdr.msg_iov = &mut iov;
            m.msg_hdr.msg_iovlen = 1;
            m
        })
        .collect();
    let (mut sent, mut batches, mut refused) = (0u64, 0u64, 0u64);
    while !stop.load(Ordering::Relaxed) {
        let (raw, hdrs, n) = (fd.as_raw_fd(), msgs.as_mut_ptr(), batch as libc::c_uint);
        // SAFETY: `msgs` holds `batch` valid headers, each pointing at `iov`, which points at
        // `frame`; all alive and unchanged during the call (the kernel only reads them and
        // writes msg_len).
        let rc = unsafe { libc::sendmmsg(raw, hdrs, n, 0) };
        if rc > 0 {
            sent += rc as u64;
        } else {
            let e = std::io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EINTR) => continue,
                Some(libc::ENOBUFS) | Some(libc::EAGAIN) => refused += 1,
                _ => return Err(anyhow!("sendmmsg into {VX_A}: {e}")),
            }
        }
        batches += 1;
        c.sent.store(sent, Ordering::Relaxed);
        c.batches.store(batches, Ordering::Relaxed);
        c.refused.store(refused, Ordering::Relaxed);
    }
    Ok(())
}

struct Snap {
    at: Instant,
    rx: IfCounters,
    sent: u64,
    batches: u64,
    gen_cpu: u64,
    proc_cpu: u64,
    softirqd: u64,
}

/// Measures the kernel's VXLAN path with `frame_len`-byte frames: `warmup`, then a window of
/// `duration`; the generator thread runs on `gen_cpu` and sends batches of `batch` frames.
pub fn run(
    frame_len: usize,
    gen_cpu: usize,
    batch: usize,
    warmup: Duration,
    duration: Duration,
) -> Result<Measurement> {
    let hosts = TwoHosts::new().context("creating the two hosts")?;
    vxlan_device(&hosts.a, VX_A, ADDR_A, ADDR_B, IF_A)?;
    vxlan_device(&hosts.b, VX_B, ADDR_B, ADDR_A, IF_B)?;
    let batch = if batch == 0 { 64 } else { batch };
    // The same frames as the in-process generator's: guest 0 to guest 1.
    let frame = build_frame(mac(0, 1), mac(0, 0), frame_len);
    let start_rx = netns::if_counters(&hosts.b, VX_B)?;
    let stop = Arc::new(AtomicBool::new(false));
    let c = Arc::new(GenCounters::default());
    let ns_path = hosts.a.path();
    let (s, cc) = (stop.clone(), c.clone());
    let gen: JoinHandle<Result<()>> = thread::Builder::new()
        .name("kernel-vxlan-gen".into())
        .spawn(move || {
            sys::pin_current_thread(gen_cpu)?;
            netns::enter(&ns_path)?;
            let fd = packet_socket(VX_A)?;
            generate(&fd, &frame, batch, &s, &cc)
        })
        .context("spawning the generator thread")?;
    let result = measure(&hosts.b, &gen, &c, warmup, duration);
    stop.store(true, Ordering::Relaxed);
    let joined = gen
        .join()
        .map_err(|_| anyhow!("the kernel generator thread panicked"))?;
    // The generator's own error first: it explains a window that failed.
    joined?;
    let (s0, s1, other_load) = result?;
    // Let what is still on its way arrive, then count the whole run.
    thread::sleep(Duration::from_millis(100));
    let end_rx = netns::if_counters(&hosts.b, VX_B)?;
    let sent_total = c.sent.load(Ordering::Relaxed);
    let received_total = end_rx.rx_packets - start_rx.rx_packets;
    let secs = (s1.at - s0.at).as_secs_f64().max(1e-9);
    let rx = s1.rx.rx_packets - s0.rx.rx_packets;
    let pps = rx as f64 / secs;
    let gen_ns = (s1.gen_cpu - s0.gen_cpu) as f64;
    let softirqd = (s1.softirqd - s0.softirqd) as f64;
    let kernel_ns = gen_ns + softirqd;
    let per_pkt = kernel_ns / rx.max(1) as f64;
    let mut notes = vec![format!(
        "generator thread {:.0} ns/pkt + ksoftirqd {:.0} ns/pkt; process CPU {:.0} ns/pkt",
        gen_ns / rx.max(1) as f64,
        softirqd / rx.max(1) as f64,
        (s1.proc_cpu - s0.proc_cpu) as f64 / rx.max(1) as f64
    )];
    let dropped_b = end_rx.rx_dropped - start_rx.rx_dropped;
    if dropped_b > 0 {
        notes.push(format!("{VX_B} rx_dropped: {dropped_b}"));
    }
    let refused = c.refused.load(Ordering::Relaxed);
    if refused > 0 {
        notes.push(format!(
            "sendmmsg calls refused (ENOBUFS/EAGAIN): {refused}"
        ));
    }
    let tsc = sys::cpu_mhz();
    Ok(Measurement {
        secs,
        rx_frames: rx,
        tx_frames: s1.sent - s0.sent,
        mpps: pps / 1e6,
        offered_mpps: (s1.sent - s0.sent) as f64 / secs / 1e6,
        gbps: rx as f64 * frame_len as f64 * 8.0 / secs / 1e9,
        ns_per_pkt: if pps > 0.0 { 1e9 / pps } else { f64::INFINITY },
        drops: sent_total.saturating_sub(received_total),
        sent_total,
        written_off: 0,
        traffic_cpu_share: gen_ns / secs / 1e9,
        frames_per_batch: (s1.sent - s0.sent) as f64 / (s1.batches - s0.batches).max(1) as f64,
        idle_loop_share: 0.0,
        device_errors: 0,
        other_load,
        runs: Vec::new(),
        cost: Cost {
            ns_per_pkt: Some(per_pkt),
            cycles_per_pkt: tsc.map(|m| per_pkt * m / 1000.0),
            busy_share: Some(kernel_ns / secs / 1e9),
            source: "the generator thread's CPU time (its sendmmsg calls run the whole path: \
                     AF_PACKET, VXLAN encapsulation, veth, and the softirqs that receive, \
                     decapsulate and count in host B) + ksoftirqd threads' CPU time"
                .into(),
            notes,
            counted: None,
        },
        frontend: None,
    })
}

/// Warm-up, then the window: snapshots at its start and end, and the foreign load in it.
fn measure(
    b: &Netns,
    gen: &JoinHandle<Result<()>>,
    c: &GenCounters,
    warmup: Duration,
    duration: Duration,
) -> Result<(Snap, Snap, f64)> {
    thread::sleep(warmup);
    let snap = || -> Result<Snap> {
        if gen.is_finished() {
            bail!("the kernel generator thread stopped early (see its error below)");
        }
        Ok(Snap {
            at: Instant::now(),
            rx: netns::if_counters(b, VX_B)?,
            sent: c.sent.load(Ordering::Relaxed),
            batches: c.batches.load(Ordering::Relaxed),
            gen_cpu: sys::thread_cpu_ns(gen),
            proc_cpu: sys::process_cpu_ns(),
            softirqd: sys::softirqd_ns(),
        })
    };
    let (snaps, load) = sys::foreign_load(&[], || -> Result<(Snap, Snap)> {
        let s0 = snap()?;
        thread::sleep(duration);
        Ok((s0, snap()?))
    });
    let (s0, s1) = snaps?;
    Ok((s0, s1, load))
}
