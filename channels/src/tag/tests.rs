//! Unit tests of the tag codec: every error path, and the guest-tag cases.

use super::*;
use crate::error::ChannelError;

const DST: [u8; 6] = [0x52, 0x54, 0, 0, 0, 2];
const SRC: [u8; 6] = [0x52, 0x54, 0, 0, 0, 1];

fn ch(v: u16) -> ChannelId {
    ChannelId::new(v).unwrap_or(ChannelId::MIN)
}

/// An untagged IPv4-ish frame of `payload` bytes after the EtherType.
fn frame(payload: usize) -> Vec<u8> {
    let mut f = [DST.as_slice(), &SRC, &[0x08, 0x00]].concat();
    f.extend((0..payload).map(|i| i as u8));
    f
}

/// `f` with `TAG_LEN` spare bytes (filled with a marker) after it.
fn with_room(f: &[u8]) -> Vec<u8> {
    let mut b = f.to_vec();
    b.extend([0xEE; TAG_LEN]);
    b
}

fn tag_bytes(tpid: u16, vid: u16) -> [u8; 4] {
    Tag {
        tpid,
        pcp: 0,
        dei: false,
        vid,
    }
    .to_bytes()
}

/// `f` with `tag` inserted after the MAC addresses (built by hand, not by the codec).
fn tagged(f: &[u8], tag: [u8; 4]) -> Vec<u8> {
    [&f[..ADDRS_LEN], tag.as_slice(), &f[ADDRS_LEN..]].concat()
}

#[test]
fn push_inserts_s_tag_after_addresses() {
    let f = frame(4);
    let mut buf = with_room(&f);
    let n = push_s_tag(&mut buf, f.len(), ch(100), 5);
    assert_eq!(n, Ok(f.len() + 4));
    assert_eq!(&buf[..12], &f[..12]);
    assert_eq!(&buf[12..16], &[0x88, 0xa8, 0xa0, 0x64]);
    assert_eq!(&buf[16..], &f[12..]);
    let t = outer_tag(&buf);
    assert_eq!(
        t,
        Some(Tag {
            tpid: TPID_8021AD,
            pcp: 5,
            dei: false,
            vid: 100
        })
    );
    assert_eq!(t.and_then(|t| t.channel()), Some(ch(100)));
    assert_eq!(outer_ethertype(&buf), Some(TPID_8021AD));
}

#[test]
fn push_leaves_bytes_past_the_new_length_untouched() {
    let f = frame(10);
    let mut buf = with_room(&f);
    buf.extend([0xAB; 8]);
    let n = push_s_tag(&mut buf, f.len(), ch(1), 0).unwrap_or(0);
    assert_eq!(&buf[n..], &[0xAB; 8]);
}

#[test]
fn pop_restores_the_frame() {
    let f = frame(50);
    let mut buf = with_room(&f);
    let n = push_s_tag(&mut buf, f.len(), ch(4094), 7).unwrap_or(0);
    assert_eq!(pop_s_tag(&mut buf, n), Ok((ch(4094), f.len())));
    assert_eq!(&buf[..f.len()], &f[..]);
}

#[test]
fn minimal_frames() {
    // A 12-byte frame (addresses only) can be stamped and unstamped.
    let f = frame(0)[..12].to_vec();
    let mut buf = with_room(&f);
    assert_eq!(push_s_tag(&mut buf, 12, ch(9), 0), Ok(16));
    assert_eq!(pop_s_tag(&mut buf, 16), Ok((ch(9), 12)));
    assert_eq!(&buf[..12], &f[..]);
}

#[test]
fn push_errors() {
    let f = frame(2);
    let mut buf = with_room(&f);
    let orig = buf.clone();
    assert_eq!(
        push_s_tag(&mut buf, 11, ch(1), 0),
        Err(TagError::Runt { len: 11, min: 12 })
    );
    assert_eq!(
        push_s_tag(&mut buf, 0, ch(1), 0),
        Err(TagError::Runt { len: 0, min: 12 })
    );
    assert_eq!(
        push_s_tag(&mut buf, orig.len() + 1, ch(1), 0),
        Err(TagError::LengthExceedsBuffer {
            len: orig.len() + 1,
            capacity: orig.len()
        })
    );
    assert_eq!(
        push_s_tag(&mut buf, f.len(), ch(1), 8),
        Err(TagError::InvalidPcp { pcp: 8 })
    );
    for len in [f.len() + 1, f.len() + 4] {
        assert_eq!(
            push_s_tag(&mut buf, len, ch(1), 0),
            Err(TagError::NoRoom {
                len,
                capacity: orig.len(),
                needed: len + 4
            })
        );
    }
    assert_eq!(buf, orig, "buffer unchanged on error");
    let msg = TagError::NoRoom {
        len: 60,
        capacity: 62,
        needed: 64,
    }
    .to_string();
    assert!(msg.contains("at least 64 bytes"), "{msg}");
}

#[test]
fn pop_errors() {
    let f = frame(8);
    let orig = f.clone();
    let mut buf = f.clone();
    assert_eq!(
        pop_s_tag(&mut buf, 15),
        Err(TagError::Runt { len: 15, min: 16 })
    );
    assert_eq!(
        pop_s_tag(&mut buf, orig.len() + 4),
        Err(TagError::LengthExceedsBuffer {
            len: orig.len() + 4,
            capacity: orig.len()
        })
    );
    // Untagged: the EtherType is reported.
    assert_eq!(
        pop_s_tag(&mut buf, f.len()),
        Err(TagError::NotSTagged { tpid: 0x0800 })
    );
    // Outermost C-tag: not a stamp.
    let mut c = tagged(&f, tag_bytes(TPID_8021Q, 100));
    let c_orig = c.clone();
    assert_eq!(
        pop_s_tag(&mut c, c_orig.len()),
        Err(TagError::NotSTagged { tpid: TPID_8021Q })
    );
    // S-VID 0 and 4095 are not channels.
    for (vid, source) in [(0, ChannelError::Zero), (4095, ChannelError::Reserved)] {
        let mut s = tagged(&f, tag_bytes(TPID_8021AD, vid));
        let s_orig = s.clone();
        assert_eq!(
            pop_s_tag(&mut s, s_orig.len()),
            Err(TagError::InvalidChannel { vid, source })
        );
        assert_eq!(s, s_orig);
    }
    assert_eq!(buf, orig);
    assert_eq!(c, c_orig);
}

#[test]
fn double_tagged_guest_frame_is_payload() {
    // The guest sends S-tag 200 outside a C-tag 10: a full Q-in-Q frame of its own.
    let guest = tagged(
        &tagged(&frame(30), tag_bytes(TPID_8021Q, 10)),
        tag_bytes(TPID_8021AD, 200),
    );
    let mut buf = with_room(&guest);
    let n = push_s_tag(&mut buf, guest.len(), ch(100), 0).unwrap_or(0);
    // Three tags now; the outermost is the switch's.
    assert_eq!(outer_tag(&buf[..n]).map(|t| t.vid), Some(100));
    assert_eq!(&buf[16..20], &tag_bytes(TPID_8021AD, 200));
    assert_eq!(&buf[20..24], &tag_bytes(TPID_8021Q, 10));
    assert_eq!(pop_s_tag(&mut buf, n), Ok((ch(100), guest.len())));
    assert_eq!(&buf[..guest.len()], &guest[..]);
}

#[test]
fn forged_s_tag_is_never_taken_for_the_stamp() {
    // Same channel, other channel, invalid VIDs: none leaks through.
    for forged_vid in [100, 200, 0, 4095, 1] {
        let guest = tagged(&frame(20), tag_bytes(TPID_8021AD, forged_vid));
        let mut buf = with_room(&guest);
        let n = push_s_tag(&mut buf, guest.len(), ch(100), 3).unwrap_or(0);
        assert_eq!(pop_s_tag(&mut buf, n), Ok((ch(100), guest.len())));
        assert_eq!(&buf[..guest.len()], &guest[..]);
        // After unstamping, the guest's own tag is outermost again, untouched.
        assert_eq!(
            outer_tag(&buf[..guest.len()]).map(|t| (t.tpid, t.vid)),
            Some((TPID_8021AD, forged_vid))
        );
    }
}

#[test]
fn c_tag_write_read_pop() {
    let f = frame(6);
    let mut buf = with_room(&f);
    let n = write_c_tag(&mut buf, f.len(), 10, 2);
    assert_eq!(n, Ok(f.len() + 4));
    let t = read_c_tag(&buf);
    assert_eq!(
        t,
        Some(Tag {
            tpid: TPID_8021Q,
            pcp: 2,
            dei: false,
            vid: 10
        })
    );
    assert_eq!(outer_tag(&buf), t);
    assert_eq!(
        pop_c_tag(&mut buf, f.len() + 4).map(|(t, n)| (t.vid, n)),
        Ok((10, f.len()))
    );
    assert_eq!(&buf[..f.len()], &f[..]);
    // VID 0 (priority tag) is allowed for a C-tag.
    let mut buf = with_room(&f);
    assert!(write_c_tag(&mut buf, f.len(), 0, 0).is_ok());
}

#[test]
fn c_tag_errors() {
    let f = frame(6);
    let mut buf = with_room(&f);
    let orig = buf.clone();
    for vid in [4095, 4096, u16::MAX] {
        assert_eq!(
            write_c_tag(&mut buf, f.len(), vid, 0),
            Err(TagError::InvalidVid { vid })
        );
    }
    assert_eq!(
        write_c_tag(&mut buf, f.len(), 1, 9),
        Err(TagError::InvalidPcp { pcp: 9 })
    );
    assert_eq!(
        write_c_tag(&mut buf, 5, 1, 0),
        Err(TagError::Runt { len: 5, min: 12 })
    );
    assert!(matches!(
        write_c_tag(&mut buf, orig.len(), 1, 0),
        Err(TagError::NoRoom { .. })
    ));
    assert_eq!(
        pop_c_tag(&mut buf, f.len()),
        Err(TagError::NotCTagged { tpid: 0x0800 })
    );
    assert_eq!(
        pop_c_tag(&mut buf, 3),
        Err(TagError::Runt { len: 3, min: 16 })
    );
    assert!(matches!(
        pop_c_tag(&mut buf, orig.len() + 1),
        Err(TagError::LengthExceedsBuffer { .. })
    ));
    assert_eq!(buf, orig);
    let mut s = tagged(&f, tag_bytes(TPID_8021AD, 7));
    assert_eq!(read_c_tag(&s), None);
    let n = s.len();
    assert_eq!(
        pop_c_tag(&mut s, n),
        Err(TagError::NotCTagged { tpid: TPID_8021AD })
    );
}

#[test]
fn readers_on_short_or_other_frames() {
    assert_eq!(outer_tag(&[]), None);
    assert_eq!(outer_tag(&frame(0)[..14]), None);
    assert_eq!(outer_ethertype(&frame(0)[..13]), None);
    assert_eq!(outer_ethertype(&frame(0)), Some(0x0800));
    // A full S-tag TPID but a truncated TCI is not a tag.
    assert_eq!(
        outer_tag(&tagged(&frame(0), tag_bytes(TPID_8021AD, 5))[..15]),
        None
    );
    // Pre-standard 0x9100 is not recognised.
    assert_eq!(outer_tag(&tagged(&frame(4), tag_bytes(0x9100, 5))), None);
    assert_eq!(read_c_tag(&frame(8)), None);
}

#[test]
fn tag_bytes_roundtrip_and_masking() {
    let t = Tag {
        tpid: TPID_8021AD,
        pcp: 6,
        dei: true,
        vid: 0xabc,
    };
    assert_eq!(t.tci(), 0xdabc);
    assert_eq!(Tag::from_bytes(t.to_bytes()), t);
    assert!(t.is_s_tag() && !t.is_c_tag());
    let wild = Tag {
        tpid: TPID_8021Q,
        pcp: 0xff,
        dei: false,
        vid: 0xffff,
    };
    assert_eq!(wild.tci(), 0xefff);
    assert_eq!(wild.channel(), None);
}
