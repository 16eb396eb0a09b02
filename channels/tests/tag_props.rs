//! Property tests of the tag codec through the public API: stamping and unstamping is the
//! identity on any frame, whatever tags the guest put in it.

use proptest::prelude::*;
use vswitch_channels::tag::{self, Tag, TAG_LEN};
use vswitch_channels::{ChannelId, TagError, TPID_8021AD, TPID_8021Q};

fn channel() -> impl Strategy<Value = ChannelId> {
    (1u16..=4094).prop_filter_map("valid S-VID", |v| ChannelId::new(v).ok())
}

/// Any bytes, 12..=1600 long.
fn any_frame() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 12..=1600)
}

/// A guest tag: S-tag, C-tag or the old 0x9100, any TCI (including VID 0 and 4095).
fn guest_tag() -> impl Strategy<Value = [u8; 4]> {
    (
        prop_oneof![Just(TPID_8021AD), Just(TPID_8021Q), Just(0x9100u16)],
        any::<u16>(),
    )
        .prop_map(|(tpid, tci)| {
            let [a, b] = tpid.to_be_bytes();
            let [c, d] = tci.to_be_bytes();
            [a, b, c, d]
        })
}

/// A frame whose first bytes after the MAC addresses are 0..=3 guest tags.
fn guest_tagged_frame() -> impl Strategy<Value = Vec<u8>> {
    (
        any::<[u8; 12]>(),
        prop::collection::vec(guest_tag(), 0..=3),
        prop::collection::vec(any::<u8>(), 0..=1500),
    )
        .prop_map(|(addrs, tags, rest)| {
            let mut f = addrs.to_vec();
            for t in tags {
                f.extend(t);
            }
            f.extend(rest);
            f
        })
}

fn stamp_unstamp(frame: &[u8], ch: ChannelId, pcp: u8, slack: usize) -> Result<(), TestCaseError> {
    let mut buf = frame.to_vec();
    buf.resize(frame.len() + TAG_LEN + slack, 0x5a);
    let n = tag::push_s_tag(&mut buf, frame.len(), ch, pcp)
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert_eq!(n, frame.len() + TAG_LEN);
    prop_assert_eq!(&buf[..12], &frame[..12]);
    prop_assert_eq!(&buf[16..n], &frame[12..]);
    prop_assert!(buf[n..].iter().all(|&b| b == 0x5a));
    prop_assert_eq!(
        tag::outer_tag(&buf[..n]),
        Some(Tag {
            tpid: TPID_8021AD,
            pcp,
            dei: false,
            vid: ch.get()
        })
    );
    let (got, m) = tag::pop_s_tag(&mut buf, n).map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert_eq!(got, ch);
    prop_assert_eq!(m, frame.len());
    prop_assert_eq!(&buf[..m], frame);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn push_then_pop_is_identity(f in any_frame(), ch in channel(), pcp in 0u8..=7, slack in 0usize..8) {
        stamp_unstamp(&f, ch, pcp, slack)?;
    }

    #[test]
    fn guest_tags_are_payload(f in guest_tagged_frame(), ch in channel(), pcp in 0u8..=7) {
        stamp_unstamp(&f, ch, pcp, 0)?;
    }

    #[test]
    fn c_tag_write_then_pop_is_identity(f in any_frame(), vid in 0u16..=4094, pcp in 0u8..=7) {
        let mut buf = f.clone();
        buf.resize(f.len() + TAG_LEN, 0);
        let n = tag::write_c_tag(&mut buf, f.len(), vid, pcp)
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(tag::read_c_tag(&buf[..n]).map(|t| (t.vid, t.pcp)), Some((vid, pcp)));
        let (t, m) = tag::pop_c_tag(&mut buf, n).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(t.vid, vid);
        prop_assert_eq!(&buf[..m], &f[..]);
    }

    /// Errors leave the buffer as it was; nothing panics on any length.
    #[test]
    fn errors_leave_buffer_unchanged(
        buf in prop::collection::vec(any::<u8>(), 0..64),
        len in 0usize..80,
        ch in channel(),
        pcp in any::<u8>(),
    ) {
        let mut b = buf.clone();
        if let Err(e) = tag::push_s_tag(&mut b, len, ch, pcp) {
            prop_assert_eq!(&b, &buf, "{}", e);
        }
        let mut b = buf.clone();
        match tag::pop_s_tag(&mut b, len) {
            Err(e) => prop_assert_eq!(&b, &buf, "{}", e),
            Ok((c, n)) => {
                prop_assert_eq!(n + TAG_LEN, len);
                prop_assert_eq!(Some(c.get()), tag::outer_tag(&buf[..len]).map(|t| t.vid));
            }
        }
        let mut b = buf.clone();
        if let Err(e) = tag::pop_c_tag(&mut b, len) {
            prop_assert_eq!(&b, &buf, "{}", e);
        }
    }

    /// pop_s_tag accepts exactly the frames whose outermost tag is an S-tag with a valid S-VID.
    #[test]
    fn pop_accepts_only_valid_outer_s_tags(f in guest_tagged_frame()) {
        let mut b = f.clone();
        let expect = match tag::outer_tag(&f) {
            Some(t) if t.is_s_tag() => match ChannelId::new(t.vid) {
                Ok(c) => Ok(c),
                Err(source) => Err(TagError::InvalidChannel { vid: t.vid, source }),
            },
            _ if f.len() < 16 => Err(TagError::Runt { len: f.len(), min: 16 }),
            _ => Err(TagError::NotSTagged {
                tpid: tag::outer_ethertype(&f).unwrap_or_default(),
            }),
        };
        prop_assert_eq!(tag::pop_s_tag(&mut b, f.len()).map(|(c, _)| c), expect);
    }
}
