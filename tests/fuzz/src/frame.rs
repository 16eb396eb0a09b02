//! Target `frame`: what the switch parses of a frame: the 802.1ad / 802.1Q tag codec
//! (`vswitch_channels::tag`) on arbitrary frame buffers, and the MAC addresses the planner
//! reads from a frame's first bytes. (The virtio-net header is parsed by the TX walker and
//! fuzzed in `desc_chain`.)
//!
//! Properties: nothing panics; every operation either succeeds as documented or fails with
//! the buffer unchanged; push/pop round trips give back the channel or tag and the exact frame;
//! the tag readers agree with the bytes; a MAC's text form parses back to itself.
//!
//! Input: `op:u8 len:u16 vid:u16 pcp:u8 extra:u8`, then the frame buffer (`len` is taken
//! modulo buffer length + 8, so it may exceed the buffer).

use vswitch_channels::tag::{self, ADDRS_LEN, TAG_LEN};
use vswitch_channels::{ChannelId, MacAddr, Tag, TPID_8021AD, TPID_8021Q};

use crate::input::Input;

/// Runs one input; panics when a property does not hold.
pub fn run(data: &[u8]) {
    let mut inp = Input::new(data);
    let op = inp.u8();
    let len_raw = inp.u16();
    let vid = inp.u16();
    let pcp = inp.u8();
    let extra = usize::from(inp.u8() % 8);
    let frame = inp.rest();
    let mut buf = frame.to_vec();
    buf.resize(frame.len() + extra, 0xa5);
    let len = usize::from(len_raw) % (buf.len() + 8 + 1);

    readers_agree(&buf[..len.min(buf.len())]);
    macs(frame);

    let before = buf.clone();
    match op % 4 {
        0 => push_pop_s(&mut buf, len, vid, pcp, &before),
        1 => push_pop_c(&mut buf, len, vid, pcp, &before),
        2 => match tag::pop_s_tag(&mut buf, len) {
            Ok((ch, new_len)) => {
                assert_eq!(new_len + TAG_LEN, len);
                let t = tag::outer_tag(&before[..len]).expect("popped a tag");
                assert!(t.is_s_tag() && t.vid == ch.get());
                assert_eq!(buf[..ADDRS_LEN], before[..ADDRS_LEN]);
                assert_eq!(buf[ADDRS_LEN..new_len], before[ADDRS_LEN + TAG_LEN..len]);
            }
            Err(_) => assert_eq!(buf, before, "a failed pop leaves the buffer as it was"),
        },
        _ => match tag::pop_c_tag(&mut buf, len) {
            Ok((t, new_len)) => {
                assert!(t.is_c_tag());
                assert_eq!(new_len + TAG_LEN, len);
                assert_eq!(buf[ADDRS_LEN..new_len], before[ADDRS_LEN + TAG_LEN..len]);
            }
            Err(_) => assert_eq!(buf, before, "a failed pop leaves the buffer as it was"),
        },
    }
}

fn push_pop_s(buf: &mut [u8], len: usize, vid: u16, pcp: u8, before: &[u8]) {
    let Ok(ch) = ChannelId::new(vid) else {
        return;
    };
    match tag::push_s_tag(buf, len, ch, pcp) {
        Ok(new_len) => {
            assert_eq!(new_len, len + TAG_LEN);
            let t = tag::outer_tag(&buf[..new_len]).expect("stamp is readable");
            assert_eq!(
                (t.tpid, t.vid, t.pcp, t.dei),
                (TPID_8021AD, vid, pcp, false)
            );
            assert_eq!(
                buf[new_len..],
                before[new_len..],
                "bytes past the frame untouched"
            );
            let (back, back_len) = tag::pop_s_tag(buf, new_len).expect("own stamp pops");
            assert_eq!(back, ch, "the stamp, not a guest's tag");
            assert_eq!(back_len, len);
            assert_eq!(buf[..len], before[..len], "the frame byte for byte");
        }
        Err(_) => {
            assert_eq!(buf, before, "a failed push leaves the buffer as it was");
            assert!(len > buf.len() || len < ADDRS_LEN || pcp > 7 || len + TAG_LEN > buf.len());
        }
    }
}

fn push_pop_c(buf: &mut [u8], len: usize, vid: u16, pcp: u8, before: &[u8]) {
    match tag::write_c_tag(buf, len, vid, pcp) {
        Ok(new_len) => {
            assert!(vid <= 4094 && pcp <= 7);
            assert_eq!(tag::read_c_tag(&buf[..new_len]).map(|t| t.vid), Some(vid));
            let (t, back_len) = tag::pop_c_tag(buf, new_len).expect("own tag pops");
            assert_eq!((t.tpid, t.vid, t.pcp), (TPID_8021Q, vid, pcp));
            assert_eq!(back_len, len);
            assert_eq!(buf[..len], before[..len]);
        }
        Err(_) => assert_eq!(buf, before, "a failed push leaves the buffer as it was"),
    }
}

/// The readers against the raw bytes.
fn readers_agree(frame: &[u8]) {
    let et = tag::outer_ethertype(frame);
    assert_eq!(et.is_some(), frame.len() >= ADDRS_LEN + 2);
    if let Some(t) = tag::outer_tag(frame) {
        assert!(frame.len() >= ADDRS_LEN + TAG_LEN);
        assert_eq!(Some(t.tpid), et);
        let mut b = [0u8; TAG_LEN];
        b.copy_from_slice(&frame[ADDRS_LEN..ADDRS_LEN + TAG_LEN]);
        assert_eq!(t.to_bytes(), b, "a decoded tag encodes back to its bytes");
        assert_eq!(Tag::from_bytes(b), t);
        assert_eq!(
            t.channel().map(|c| c.get()),
            (1..=4094).contains(&t.vid).then_some(t.vid)
        );
    }
    assert_eq!(
        tag::read_c_tag(frame).is_some(),
        et == Some(TPID_8021Q) && frame.len() >= ADDRS_LEN + TAG_LEN
    );
}

/// The planner's view of a frame's addresses, and the text form of a MAC.
fn macs(frame: &[u8]) {
    for at in [0usize, 6] {
        let Some(m) = frame.get(at..at + 6).and_then(MacAddr::from_slice) else {
            return;
        };
        assert_eq!(m.is_multicast(), frame[at] & 1 != 0);
        assert_eq!(m.is_unicast(), !m.is_multicast());
        assert_eq!(m.is_broadcast(), frame[at..at + 6] == [0xff; 6]);
        let text = m.to_string();
        assert_eq!(text.parse::<MacAddr>().ok(), Some(m), "{text}");
    }
}
