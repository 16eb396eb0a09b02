//! Hostile drivers of packed virtqueues, over a real vhost-user socket: a minimal frontend
//! written here from the virtio 1.1 spec (rust-vmm's vhost-user frontend for the protocol,
//! a memfd for guest memory) negotiates VIRTIO_F_RING_PACKED with a port and posts malformed
//! chains. Each costs that one chain and a counter (the ring stays in step with the driver:
//! the chain comes back as a used descriptor); a chain that never ends parks the TX ring, counted
//! once. The peer is the split-ring test guest.

mod common;

use std::fs::File;
use std::os::fd::FromRawFd;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::{frame, wait_for, Pair};
use vhost::vhost_user::message::VhostUserVirtioFeatures;
use vhost::vhost_user::Frontend;
use vhost::{VhostBackend, VhostUserMemoryRegionInfo, VringConfigData};
use vm_memory::{Bytes, FileOffset, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};
use vmm_sys_util::eventfd::EventFd;
use vswitch_testguest::GuestConfig;
use vswitch_vhost::SocketRole;

const T: Duration = Duration::from_secs(5);
const MEM: usize = 1 << 20;
const SIZE: u16 = 512;
const HDR: usize = 12;
const F_NEXT: u16 = 1;
const F_WRITE: u16 = 2;
const F_AVAIL: u16 = 1 << 7;
const F_USED: u16 = 1 << 15;
const VERSION_1: u64 = 1 << 32;
const RING_PACKED: u64 = 1 << 34;
/// Guest-physical layout: per queue a descriptor table and the two event areas; buffers above.
const RX_DESC: u64 = 0x0;
const TX_DESC: u64 = 0x2000;
const EVENTS: u64 = 0x4000;
const BUF: u64 = 0x1_0000;

/// The driver side of one packed ring.
struct Ring {
    desc: u64,
    next: u16,
    wrap: bool,
    used: u16,
    used_wrap: bool,
}

impl Ring {
    fn new(desc: u64) -> Self {
        Ring {
            desc,
            next: 0,
            wrap: true,
            used: 0,
            used_wrap: true,
        }
    }

    fn slot(&self, i: u16) -> GuestAddress {
        GuestAddress(self.desc + 16 * u64::from(i))
    }

    /// Posts `(addr, len, flags)` descriptors as buffer `id`, the head's flags last.
    fn post(&mut self, mem: &GuestMemoryMmap, id: u16, descs: &[(u64, u32, u16)]) {
        let head = self.next;
        let mut head_flags = 0;
        for (i, &(addr, len, flags)) in descs.iter().enumerate() {
            let next = if i + 1 < descs.len() { F_NEXT } else { 0 };
            let avail = if self.wrap { F_AVAIL } else { F_USED };
            let f = flags | next | avail;
            let at = self.slot(self.next);
            mem.write_obj(addr.to_le(), at).expect("addr");
            mem.write_obj(len.to_le(), GuestAddress(at.0 + 8))
                .expect("len");
            mem.write_obj(id.to_le(), GuestAddress(at.0 + 12))
                .expect("id");
            if i == 0 {
                head_flags = f;
            } else {
                mem.write_obj(f.to_le(), GuestAddress(at.0 + 14))
                    .expect("flags");
            }
            self.next += 1;
            if self.next == SIZE {
                self.next = 0;
                self.wrap = !self.wrap;
            }
        }
        mem.store(
            head_flags.to_le(),
            GuestAddress(self.slot(head).0 + 14),
            Ordering::Release,
        )
        .expect("head flags");
    }

    /// The next used descriptor (id, len), if the device wrote it; moves past `slots`.
    fn used(&mut self, mem: &GuestMemoryMmap, slots: u16) -> Option<(u16, u32)> {
        let at = self.slot(self.used);
        let flags = u16::from_le(
            mem.load(GuestAddress(at.0 + 14), Ordering::Acquire)
                .expect("flags"),
        );
        let w = self.used_wrap;
        if (flags & F_AVAIL != 0) != w || (flags & F_USED != 0) != w {
            return None;
        }
        let len: u32 = mem.read_obj(GuestAddress(at.0 + 8)).expect("len");
        let id: u16 = mem.read_obj(GuestAddress(at.0 + 12)).expect("id");
        self.used += slots;
        if self.used >= SIZE {
            self.used -= SIZE;
            self.used_wrap = !self.used_wrap;
        }
        Some((u16::from_le(id), u32::from_le(len)))
    }
}

/// A frontend with packed rings on one port.
struct PackedGuest {
    _fe: Frontend,
    mem: GuestMemoryMmap,
    kicks: [EventFd; 2],
    _calls: [EventFd; 2],
    rx: Ring,
    tx: Ring,
}

impl PackedGuest {
    fn connect(path: &std::path::Path) -> PackedGuest {
        let name = c"vswitch-packed-test";
        // SAFETY: `name` is a valid NUL-terminated string; memfd_create has no other inputs.
        let fd = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) };
        assert!(fd >= 0, "memfd_create: {}", std::io::Error::last_os_error());
        // SAFETY: `fd` was just returned by memfd_create and is owned by nobody else.
        let file = unsafe { File::from_raw_fd(fd) };
        file.set_len(MEM as u64).expect("ftruncate");
        let mem = GuestMemoryMmap::<()>::from_ranges_with_files([(
            GuestAddress(0),
            MEM,
            Some(FileOffset::new(file, 0)),
        )])
        .expect("mmap");
        let region = mem.iter().next().expect("region");
        let host = region.as_ptr() as u64;
        let info = VhostUserMemoryRegionInfo::from_guest_region(region).expect("region info");

        let fe = Frontend::connect(path, 2).expect("connect");
        fe.set_owner().expect("SET_OWNER");
        let offered = fe.get_features().expect("GET_FEATURES");
        assert!(
            offered & RING_PACKED != 0,
            "the port does not offer packed rings"
        );
        // No PROTOCOL_FEATURES: the rings are enabled as soon as they start.
        let want = VERSION_1 | RING_PACKED;
        assert_eq!(want & VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits(), 0);
        fe.set_features(want).expect("SET_FEATURES");
        fe.set_mem_table(&[info]).expect("SET_MEM_TABLE");
        let kicks = [
            EventFd::new(0).expect("kick"),
            EventFd::new(0).expect("kick"),
        ];
        let calls = [
            EventFd::new(0).expect("call"),
            EventFd::new(0).expect("call"),
        ];
        for (q, desc) in [(0usize, RX_DESC), (1, TX_DESC)] {
            let events = EVENTS + 0x100 * q as u64;
            fe.set_vring_num(q, SIZE).expect("SET_VRING_NUM");
            // Index 0, wrap counter 1 in bit 15: a fresh packed ring.
            fe.set_vring_base(q, 0x8000).expect("SET_VRING_BASE");
            let cfg = VringConfigData {
                queue_max_size: SIZE,
                queue_size: SIZE,
                flags: 0,
                desc_table_addr: host + desc,
                avail_ring_addr: host + events,
                used_ring_addr: host + events + 0x10,
                log_addr: None,
            };
            fe.set_vring_addr(q, &cfg).expect("SET_VRING_ADDR");
            fe.set_vring_call(q, &calls[q]).expect("SET_VRING_CALL");
            fe.set_vring_kick(q, &kicks[q]).expect("SET_VRING_KICK");
        }
        // Without REPLY_ACK nothing above was answered: one request that is makes sure the
        // port has handled them all (messages are handled in order).
        fe.get_features().expect("GET_FEATURES");
        PackedGuest {
            _fe: fe,
            mem,
            kicks,
            _calls: calls,
            rx: Ring::new(RX_DESC),
            tx: Ring::new(TX_DESC),
        }
    }

    /// A header and `f` at `at`; returns the bytes written.
    fn payload(&self, at: u64, f: &[u8]) -> u32 {
        let mut b = vec![0u8; HDR];
        b.extend_from_slice(f);
        self.mem.write_slice(&b, GuestAddress(at)).expect("payload");
        b.len() as u32
    }

    fn send_chain(&mut self, id: u16, descs: &[(u64, u32, u16)]) {
        self.tx.post(&self.mem, id, descs);
        self.kicks[1].write(1).expect("kick");
    }

    fn post_rx(&mut self, id: u16, descs: &[(u64, u32, u16)]) {
        self.rx.post(&self.mem, id, descs);
        self.kicks[0].write(1).expect("kick");
    }

    /// Waits for the TX used descriptor of a chain of `slots` slots.
    fn tx_used(&mut self, slots: u16) -> (u16, u32) {
        let end = std::time::Instant::now() + T;
        loop {
            if let Some(u) = self.tx.used(&self.mem, slots) {
                return u;
            }
            assert!(std::time::Instant::now() < end, "no TX used descriptor");
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    fn rx_used(&mut self) -> (u16, u32) {
        let end = std::time::Instant::now() + T;
        loop {
            if let Some(u) = self.rx.used(&self.mem, 1) {
                return u;
            }
            assert!(std::time::Instant::now() < end, "no RX used descriptor");
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

/// One malformed TX chain from a packed guest on port a: counted once as a bad descriptor,
/// returned to the driver as buffer `id`, nothing delivered; then a good frame still goes
/// through, and its used descriptor is where the driver expects it.
fn tx_case(name: &str, id: u16, bad: impl FnOnce(&mut PackedGuest) -> Vec<(u64, u32, u16)>) {
    let p = Pair::new(SocketRole::Listen);
    let mut a = PackedGuest::connect(&p.sock("a"));
    wait_for(|| p.a.handle().rx().is_attached(), "a's rings published");
    let mut b = p.guest("b", GuestConfig::default());
    b.post_rx(64).expect("post rx");
    let descs = bad(&mut a);
    a.send_chain(id, &descs);
    wait_for(
        || p.a.handle().stats().tx_bad_descriptor == 1,
        &format!("{name}: counted"),
    );
    assert_eq!(a.tx_used(descs.len() as u16), (id, 0), "{name}: returned");
    assert!(
        b.recv_all(Duration::from_millis(50)).is_empty(),
        "{name}: nothing delivered"
    );
    let f = frame(128, 42);
    let len = a.payload(BUF, &f);
    a.send_chain(7, &[(BUF, len, 0)]);
    assert_eq!(
        b.recv(T).as_deref(),
        Some(&f[..]),
        "{name}: port still works"
    );
    assert_eq!(a.tx_used(1), (7, 0), "{name}: the ring stays in step");
    let s = p.a.handle().stats();
    assert_eq!((s.tx_bad_descriptor, s.from_guest_frames), (1, 1), "{name}");
    assert_eq!(s.tx_ring_broken, 0, "{name}");
}

#[test]
fn packed_id_beyond_the_ring() {
    tx_case("id beyond the ring", SIZE, |a| {
        let len = a.payload(BUF, &frame(64, 1));
        vec![(BUF, len, 0)]
    });
}

#[test]
fn packed_zero_length_descriptor() {
    tx_case("zero length", 3, |a| {
        let len = a.payload(BUF, &frame(64, 1));
        vec![
            (BUF, HDR as u32, 0),
            (BUF + 0x800, 0, 0),
            (BUF + HDR as u64, len, 0),
        ]
    });
}

#[test]
fn packed_address_outside_guest_memory() {
    tx_case("outside memory", 3, |_| vec![(MEM as u64 + 0x1000, 100, 0)]);
}

#[test]
fn packed_length_running_off_memory() {
    tx_case("off the end", 3, |_| vec![(MEM as u64 - 40, 100, 0)]);
}

#[test]
fn packed_device_writable_tx_buffer() {
    tx_case("writable", 3, |a| {
        let len = a.payload(BUF, &frame(64, 1));
        vec![(BUF, len, F_WRITE)]
    });
}

#[test]
fn packed_chain_longer_than_max_chain_descs() {
    tx_case("long chain", 3, |a| {
        a.payload(BUF, &frame(64, 1));
        vec![(BUF, 1, 0); usize::from(vswitch_vhost::MAX_CHAIN_DESCS) + 20]
    });
}

#[test]
fn packed_chain_that_never_ends_parks_the_ring_once() {
    let p = Pair::new(SocketRole::Listen);
    let mut a = PackedGuest::connect(&p.sock("a"));
    wait_for(|| p.a.handle().rx().is_attached(), "a's rings published");
    let mut b = p.guest("b", GuestConfig::default());
    b.post_rx(16).expect("post rx");
    a.payload(BUF, &frame(64, 1));
    // Every slot of the ring says NEXT (the last one's NEXT leads back to the head).
    let mut descs = vec![(BUF, 1, 0); usize::from(SIZE)];
    descs[usize::from(SIZE) - 1].2 = F_NEXT;
    a.send_chain(1, &descs);
    wait_for(|| p.a.handle().is_tx_broken(), "ring parked");
    std::thread::sleep(Duration::from_millis(100));
    a.kicks[1].write(1).expect("kick");
    std::thread::sleep(Duration::from_millis(100));
    let s = p.a.handle().stats();
    assert_eq!((s.tx_ring_broken, s.tx_bad_descriptor), (1, 1));
    assert_eq!(s.from_guest_frames, 0);
    assert!(b.recv_all(Duration::from_millis(50)).is_empty());
}

#[test]
fn packed_rx_malformed_buffer_costs_the_frame_and_goes_back_empty() {
    let p = Pair::new(SocketRole::Listen);
    let mut a = p.guest("a", GuestConfig::default());
    let mut b = PackedGuest::connect(&p.sock("b"));
    wait_for(|| p.b.handle().rx().is_attached(), "b's rings published");
    // A device-readable "RX buffer", then one beyond memory, then a good one.
    b.post_rx(1, &[(BUF, 2048, 0)]);
    b.post_rx(2, &[(MEM as u64 + 0x1000, 2048, F_WRITE)]);
    b.post_rx(3, &[(BUF + 0x1000, 2048, F_WRITE)]);
    a.send(&frame(64, 1)).expect("send");
    a.send(&frame(64, 2)).expect("send");
    let f = frame(100, 3);
    a.send(&f).expect("send");
    wait_for(
        || p.b.handle().stats().to_guest_frames == 1,
        "good frame delivered",
    );
    assert_eq!(b.rx_used(), (1, 0));
    assert_eq!(b.rx_used(), (2, 0));
    assert_eq!(b.rx_used(), (3, (HDR + f.len()) as u32));
    let mut got = vec![0u8; f.len()];
    b.mem
        .read_slice(&mut got, GuestAddress(BUF + 0x1000 + HDR as u64))
        .expect("read");
    assert_eq!(got, f);
    let s = p.b.handle().stats();
    assert_eq!(s.rx_bad_descriptor, 2);
}
