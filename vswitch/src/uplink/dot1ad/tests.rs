//! The trunk's framing without a socket: what a received frame's tags mean, and the S-tag a
//! sent frame gets.

use super::frame::{put_tagged, untag};
use crate::counters::DropReason;
use vswitch_channels::tag::{Tag, TAG_LEN, TPID_8021AD, TPID_8021Q};
use vswitch_channels::ChannelId;
use vswitch_vhost::{HostFrames, NetHdr};

const DST: [u8; 6] = [0xff; 6];
const SRC: [u8; 6] = [0x52, 0x54, 0, 0, 0, 1];

fn ch(n: u16) -> ChannelId {
    ChannelId::new(n).expect("test channel")
}

fn tag_bytes(tpid: u16, vid: u16) -> [u8; 4] {
    let [a, b] = tpid.to_be_bytes();
    let [c, d] = vid.to_be_bytes();
    [a, b, c, d]
}

/// MAC addresses, then `tags` (TPID, VID) outermost first, then an IPv4 EtherType and a
/// marker payload.
fn frame(tags: &[(u16, u16)]) -> Vec<u8> {
    let mut f = [DST, SRC].concat();
    for &(tpid, vid) in tags {
        f.extend_from_slice(&tag_bytes(tpid, vid));
    }
    f.extend_from_slice(&[0x08, 0x00]);
    f.extend_from_slice(&[0xab; 46]);
    f
}

fn kernel(tpid: u16, vid: u16) -> Option<Tag> {
    Some(Tag::from_bytes(tag_bytes(tpid, vid)))
}

#[test]
fn an_s_tagged_frame_is_on_its_s_vid_and_loses_the_tag_only() {
    // As on the wire: S-tag 100, then the guest's own C-tag 7.
    let mut f = frame(&[(TPID_8021AD, 100), (TPID_8021Q, 7)]);
    let (c, inner) = untag(&mut f, None).expect("accepted");
    assert_eq!(c, ch(100));
    assert_eq!(
        inner,
        &frame(&[(TPID_8021Q, 7)])[..],
        "the C-tag stays, byte for byte"
    );
}

#[test]
fn a_tag_the_kernel_took_off_counts_as_the_outer_tag() {
    let mut f = frame(&[(TPID_8021Q, 7)]);
    let (c, inner) = untag(&mut f, kernel(TPID_8021AD, 100)).expect("accepted");
    assert_eq!(c, ch(100));
    assert_eq!(inner, &frame(&[(TPID_8021Q, 7)])[..]);
}

#[test]
fn a_double_s_tag_is_on_the_outer_channel_with_the_inner_tag_as_payload() {
    let mut f = frame(&[(TPID_8021AD, 200), (TPID_8021AD, 100)]);
    let (c, inner) = untag(&mut f, None).expect("accepted");
    assert_eq!(c, ch(200));
    assert_eq!(inner, &frame(&[(TPID_8021AD, 100)])[..]);

    let mut f = frame(&[(TPID_8021AD, 100)]);
    let (c, _) = untag(&mut f, kernel(TPID_8021AD, 200)).expect("accepted");
    assert_eq!(c, ch(200));
}

#[test]
fn frames_without_a_channel_are_unknown_channel() {
    let unknown = Err(DropReason::UnknownChannel);
    for tags in [
        vec![],                                      // untagged
        vec![(TPID_8021Q, 100)],                     // a C-tag only
        vec![(TPID_8021Q, 100), (TPID_8021AD, 100)], // a C-tag outermost
        vec![(TPID_8021AD, 0)],                      // S-VID 0
        vec![(TPID_8021AD, 4095)],                   // S-VID 4095
        vec![(0x9100, 100)],                         // a pre-standard TPID
    ] {
        let mut f = frame(&tags);
        assert_eq!(untag(&mut f, None).map(|(c, _)| c), unknown, "{tags:x?}");
    }
    for (tpid, vid) in [(TPID_8021Q, 100), (TPID_8021AD, 0), (TPID_8021AD, 4095)] {
        let mut f = frame(&[]);
        let r = untag(&mut f, kernel(tpid, vid)).map(|(c, _)| c);
        assert_eq!(r, unknown, "kernel tag {tpid:x}/{vid}");
    }
}

#[test]
fn frames_too_short_for_their_headers_are_malformed() {
    let full = frame(&[(TPID_8021AD, 100)]);
    // Shorter than an Ethernet header; an S-tag cut short; an S-tag with nothing behind.
    for len in [0, 6, 13, 15, 16, 17] {
        let mut f = full[..len].to_vec();
        assert_eq!(
            untag(&mut f, None).map(|(c, _)| c),
            Err(DropReason::Malformed),
            "{len} bytes"
        );
    }
    // S-tag and an EtherType only: a 14-byte frame, accepted.
    let mut f = full[..18].to_vec();
    let (c, inner) = untag(&mut f, None).expect("accepted");
    assert_eq!((c, inner.len()), (ch(100), 14));
    // What was behind a tag the kernel took off is shorter than an Ethernet header.
    let mut f = full[..13].to_vec();
    let r = untag(&mut f, kernel(TPID_8021AD, 100)).map(|(c, _)| c);
    assert_eq!(r, Err(DropReason::Malformed));
}

#[test]
fn a_sent_frame_gets_the_s_tag_of_its_channel_after_its_addresses() {
    let guest = frame(&[(TPID_8021Q, 7)]);
    let mut host = HostFrames::with_capacity(1);
    host.push(&guest, NetHdr::default()).expect("frame");
    let batch = host.batch();
    let mut buf = vec![0u8; guest.len() + TAG_LEN];
    let n = put_tagged(&batch.frame(0), ch(300), &mut buf);
    assert_eq!(n, guest.len() + TAG_LEN);
    assert_eq!(buf, frame(&[(TPID_8021AD, 300), (TPID_8021Q, 7)]));
    // What the far end takes off gives the guest's frame back.
    let (c, inner) = untag(&mut buf, None).expect("accepted");
    assert_eq!((c, inner), (ch(300), &guest[..]));
}
