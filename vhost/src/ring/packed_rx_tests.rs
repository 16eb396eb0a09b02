//! The packed ring's RX delivery: one buffer, mergeable buffers, no room, malformed buffers.

use super::*;

/// RX: `frames` (lengths) delivered into chains the driver posted; (results, used entries).
fn rx_deliver(
    mem: &GuestMemory,
    q: &mut Queue,
    d: &mut Driver,
    mrg: bool,
    frames: &[usize],
    used_slots: &[u16],
    log: Option<&crate::dirty_log::LogMap>,
) -> RxOutcome {
    let bufs: Vec<Vec<u8>> = frames
        .iter()
        .map(|&n| (0..n).map(|i| i as u8).collect())
        .collect();
    let mut host = crate::HostFrames::default();
    for b in &bufs {
        host.push(b, crate::NetHdr::default()).expect("frame");
    }
    let batch = host.batch();
    let neg = crate::features::Negotiated {
        hdr_len: HDR,
        mrg_rxbuf: mrg,
        event_idx: false,
        packed: true,
        tx_offloads: Default::default(),
        rx_offloads: Default::default(),
        in_order: false,
    };
    let mut ring = PackedRing::new(mem, q).expect("ring");
    let results = (0..frames.len())
        .map(|i| crate::rx::packed::deliver(&mut ring, &neg, batch.frame(i), log))
        .collect();
    ring.publish_used();
    if let Some(log) = log {
        for (gpa, len) in ring.device_written_areas() {
            log.mark(gpa, len);
        }
    }
    assert_eq!(ring.in_flight(), 0, "every chain taken is returned");
    ring.store_back(q);
    let used = used_slots.iter().map(|&s| d.used(mem, s)).collect();
    (results, used)
}

/// One buffer big enough for any frame (id 7), then three small ones (ids 8-10, the second a
/// two-descriptor chain), on pages BUF .. BUF + 0x4000.
fn post_one_big_then_three_small(mem: &GuestMemory, d: &mut Driver) {
    d.post(mem, 7, &[(BUF, 2048, F_WRITE)]);
    d.post(mem, 8, &[(BUF + 0x1000, 100, F_WRITE)]);
    d.post(
        mem,
        9,
        &[(BUF + 0x2000, 50, F_WRITE), (BUF + 0x3000, 50, F_WRITE)],
    );
    d.post(mem, 10, &[(BUF + 0x4000, 100, F_WRITE)]);
}

#[test]
fn rx_frames_fill_one_buffer_or_merge_across_several() {
    let mem = memory();
    let mut q = queue(16);
    let mut d = Driver::new(16);
    post_one_big_then_three_small(&mem, &mut d);
    let (r, used) = rx_deliver(&mem, &mut q, &mut d, true, &[64, 250], &[1, 1, 2, 1], None);
    assert_eq!(r, [Ok(()), Ok(())]);
    assert_eq!(
        used,
        [
            Some((7, HDR as u32 + 64)),
            Some((8, 100)),
            Some((9, 100)),
            Some((10, HDR as u32 + 250 - 200)),
        ]
    );
    let num_buffers: u16 = mem.read_obj(GuestAddress(BUF + 0x1000 + 10)).expect("hdr");
    assert_eq!(num_buffers, 3);
    let tail: u8 = mem.read_obj(GuestAddress(BUF + 0x3000 + 49)).expect("byte");
    assert_eq!(tail, (100 - HDR + 100 - 1) as u8);
}

#[test]
fn rx_without_room_leaves_the_chains_untouched() {
    let mem = memory();
    let mut q = queue(16);
    let mut d = Driver::new(16);
    d.post(&mem, 3, &[(BUF, 100, F_WRITE)]);
    let before: [u8; 16] = mem.read_obj(GuestAddress(DESC)).expect("desc");
    // Too big for the one buffer: merged, it runs out of buffers; not merged, it is oversize.
    let (r, used) = rx_deliver(&mem, &mut q, &mut d, true, &[200], &[1], None);
    assert_eq!(r, [Err(crate::RxDrop::NoBuffer)]);
    assert_eq!(used, [None]);
    let (r, _) = rx_deliver(&mem, &mut q, &mut d, false, &[200], &[], None);
    assert_eq!(r, [Err(crate::RxDrop::Oversize)]);
    let after: [u8; 16] = mem.read_obj(GuestAddress(DESC)).expect("desc");
    assert_eq!(before, after, "the chain is still the driver's, unchanged");
    // It still takes a frame that fits.
    let (r, used) = rx_deliver(&mem, &mut q, &mut d, true, &[60], &[1], None);
    assert_eq!(r, [Ok(())]);
    assert_eq!(used, [Some((3, HDR as u32 + 60))]);
}

#[test]
fn rx_malformed_buffers_go_back_empty() {
    let mem = memory();
    let mut q = queue(16);
    let mut d = Driver::new(16);
    d.post(&mem, 1, &[(BUF, 100, 0)]); // device-readable
    d.post(&mem, 2, &[(MEM - 10, 100, F_WRITE)]); // off the end of memory
    d.post(&mem, 3, &[(BUF, 0, F_WRITE)]); // empty
    d.post(&mem, 16, &[(BUF, 100, F_WRITE)]); // id beyond the ring
    d.post(&mem, 5, &[(BUF, 100, F_WRITE)]);
    let (r, used) = rx_deliver(&mem, &mut q, &mut d, false, &[64; 5], &[1; 5], None);
    let bad = Err(crate::RxDrop::BadDescriptor);
    assert_eq!(r, [bad, bad, bad, bad, Ok(())]);
    assert_eq!(
        used,
        [
            Some((1, 0)),
            Some((2, 0)),
            Some((3, 0)),
            Some((16, 0)),
            Some((5, HDR as u32 + 64))
        ]
    );
}

/// While the guest migrates, every page the packed RX path writes is in the dirty log: the
/// buffers of a one-buffer frame and of a frame merged over three chains (one of two
/// descriptors), the descriptor ring and the device event area; nothing else.
#[test]
fn rx_marks_every_page_it_writes_in_the_dirty_log() {
    use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
    // SAFETY: memfd_create with a valid C string; the fd is new and ours.
    let fd = unsafe { libc::memfd_create(c"log".as_ptr(), 0) };
    assert!(fd >= 0);
    // SAFETY: `fd` is a new descriptor nobody else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: ftruncate on our own descriptor.
    assert_eq!(unsafe { libc::ftruncate(fd.as_raw_fd(), 4096) }, 0);
    let log = crate::dirty_log::LogMap::map(fd.as_fd(), 0, MEM / 4096 / 8).expect("log");
    let mem = memory();
    let mut q = queue(16);
    let mut d = Driver::new(16);
    post_one_big_then_three_small(&mem, &mut d);
    // A posted buffer no frame reaches: its page must stay clean.
    d.post(&mem, 11, &[(BUF + 0x6000, 100, F_WRITE)]);
    let (r, _) = rx_deliver(&mem, &mut q, &mut d, true, &[64, 250], &[], Some(&log));
    assert_eq!(r, [Ok(()), Ok(())]);
    let marked: Vec<u64> = (0..MEM / 4096).filter(|&p| log.is_marked(p)).collect();
    let page = |a: u64| a / 4096;
    let mut want = vec![page(DESC), page(DEVICE_EVT)];
    want.extend((0..5).map(|i| page(BUF) + i));
    want.dedup();
    assert_eq!(marked, want);
}
