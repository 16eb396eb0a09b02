//! The 802.1ad / 802.1Q tag codec, in place on a frame buffer.
//!
//! An Ethernet frame starts with the destination and source MAC addresses (12 bytes); a tag is
//! 4 bytes inserted right after them: a 16-bit TPID (`0x88a8` for an 802.1ad S-tag, `0x8100`
//! for an 802.1Q C-tag) and a 16-bit TCI (3-bit PCP, 1-bit DEI, 12-bit VID). Frames here are
//! without FCS.
//!
//! One type, [`Tag`], describes both kinds; its `tpid` says which.
//!
//! # The stamp cannot be forged
//!
//! [`push_s_tag`] always inserts the switch's S-tag as the **outermost** tag, directly after
//! the MAC addresses, and [`pop_s_tag`] removes only the outermost tag. Whatever the guest
//! wrote after its MAC addresses — an 802.1Q C-tag, an 802.1ad S-tag naming another channel,
//! two tags — ends up *behind* the stamp and is carried as opaque payload. So for any frame `f`:
//!
//! ```
//! # use vswitch_channels::{tag, ChannelId};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // A guest frame carrying a forged S-tag claiming channel 200.
//! let guest = [[0xffu8; 6].as_slice(), &[2, 0, 0, 0, 0, 1], &[0x88, 0xa8, 0x00, 0xc8],
//!              &[0x08, 0x00, 0x45]].concat();
//! let mut buf = guest.clone();
//! buf.resize(guest.len() + tag::TAG_LEN, 0);
//! let ch100 = ChannelId::new(100)?;
//! let len = tag::push_s_tag(&mut buf, guest.len(), ch100, 0)?;
//! let (channel, len) = tag::pop_s_tag(&mut buf, len)?;
//! assert_eq!(channel, ch100);            // the switch's stamp, never the guest's 200
//! assert_eq!(&buf[..len], &guest[..]);   // the guest's frame, byte for byte
//! # Ok(()) }
//! ```
//!
//! The converse matters as much: a frame's channel must come from the switch (the registry for
//! a VM port, the outer tag for an uplink), so never call [`pop_s_tag`] on a frame a guest sent
//! without stamping it first: its outermost tag is the guest's.
//!
//! All functions validate before they write: on error the buffer is unchanged. Bytes of the
//! buffer beyond the frame's (new) length are not part of the frame: [`push_s_tag`] leaves
//! those past `len + 4` untouched; after a pop the four bytes past the new length are stale.

use crate::error::TagError;
use crate::id::ChannelId;

/// TPID of an 802.1ad service tag (S-tag), the channel stamp.
pub const TPID_8021AD: u16 = 0x88a8;
/// TPID of an 802.1Q customer tag (C-tag).
pub const TPID_8021Q: u16 = 0x8100;
/// Length of the destination and source MAC addresses, after which tags are inserted.
pub const ADDRS_LEN: usize = 12;
/// Length of one tag (TPID and TCI).
pub const TAG_LEN: usize = 4;

/// Largest valid 802.1Q VID (4095 is reserved).
const MAX_VID: u16 = 4094;
/// Largest priority code point.
const MAX_PCP: u8 = 7;

/// One 802.1ad S-tag or 802.1Q C-tag, decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Tag {
    /// [`TPID_8021AD`] or [`TPID_8021Q`].
    pub tpid: u16,
    /// Priority code point, 0..=7 (3 bits).
    pub pcp: u8,
    /// Drop eligible indicator.
    pub dei: bool,
    /// VLAN id, 12 bits. As read from a frame it may be 0 or 4095; it is not validated here.
    pub vid: u16,
}

impl Tag {
    /// Decodes a tag from its four bytes (TPID then TCI, big-endian). Does not check the TPID.
    pub const fn from_bytes(b: [u8; TAG_LEN]) -> Tag {
        let tci = u16::from_be_bytes([b[2], b[3]]);
        Tag {
            tpid: u16::from_be_bytes([b[0], b[1]]),
            pcp: (tci >> 13) as u8,
            dei: tci & 0x1000 != 0,
            vid: tci & 0x0fff,
        }
    }

    /// The tag's four bytes. Out-of-range `pcp`/`vid` bits are masked off.
    pub const fn to_bytes(&self) -> [u8; TAG_LEN] {
        let [t0, t1] = self.tpid.to_be_bytes();
        let [c0, c1] = self.tci().to_be_bytes();
        [t0, t1, c0, c1]
    }

    /// The 16-bit tag control information: PCP, DEI, VID.
    pub const fn tci(&self) -> u16 {
        ((self.pcp as u16 & 0x7) << 13) | ((self.dei as u16) << 12) | (self.vid & 0x0fff)
    }

    /// True for an 802.1ad S-tag.
    pub const fn is_s_tag(&self) -> bool {
        self.tpid == TPID_8021AD
    }

    /// True for an 802.1Q C-tag.
    pub const fn is_c_tag(&self) -> bool {
        self.tpid == TPID_8021Q
    }

    /// The VID as a channel, if it is a valid S-VID (1..=4094).
    pub fn channel(&self) -> Option<ChannelId> {
        ChannelId::new(self.vid).ok()
    }
}

/// The tag right after the MAC addresses, whatever its TPID.
fn tag_at_outer(frame: &[u8]) -> Option<Tag> {
    let bytes = frame.get(ADDRS_LEN..ADDRS_LEN + TAG_LEN)?;
    <[u8; TAG_LEN]>::try_from(bytes).ok().map(Tag::from_bytes)
}

/// The EtherType of the outermost header after the MAC addresses (a TPID if the frame is
/// tagged), or `None` if the frame is shorter than 14 bytes.
pub fn outer_ethertype(frame: &[u8]) -> Option<u16> {
    match frame.get(ADDRS_LEN..ADDRS_LEN + 2)? {
        [a, b] => Some(u16::from_be_bytes([*a, *b])),
        _ => None,
    }
}

/// Reads the outermost tag, if it is an 802.1ad S-tag or an 802.1Q C-tag; `None` for an
/// untagged frame (or another TPID such as the pre-standard `0x9100`) or one too short to hold
/// a tag.
pub fn outer_tag(frame: &[u8]) -> Option<Tag> {
    tag_at_outer(frame).filter(|t| t.is_s_tag() || t.is_c_tag())
}

/// Reads the outermost tag if it is an 802.1Q C-tag.
pub fn read_c_tag(frame: &[u8]) -> Option<Tag> {
    tag_at_outer(frame).filter(Tag::is_c_tag)
}

fn check_frame(buf: &[u8], len: usize, min: usize) -> Result<(), TagError> {
    if len > buf.len() {
        return Err(TagError::LengthExceedsBuffer {
            len,
            capacity: buf.len(),
        });
    }
    if len < min {
        return Err(TagError::Runt { len, min });
    }
    Ok(())
}

fn check_pcp(pcp: u8) -> Result<(), TagError> {
    if pcp > MAX_PCP {
        return Err(TagError::InvalidPcp { pcp });
    }
    Ok(())
}

/// Inserts `tag` after the MAC addresses, shifting the rest right. Validates first.
fn insert(buf: &mut [u8], len: usize, tag: Tag) -> Result<usize, TagError> {
    check_frame(buf, len, ADDRS_LEN)?;
    let needed = len + TAG_LEN;
    if needed > buf.len() {
        return Err(TagError::NoRoom {
            len,
            capacity: buf.len(),
            needed,
        });
    }
    buf.copy_within(ADDRS_LEN..len, ADDRS_LEN + TAG_LEN);
    buf[ADDRS_LEN..ADDRS_LEN + TAG_LEN].copy_from_slice(&tag.to_bytes());
    Ok(needed)
}

/// Removes the outermost tag, shifting the rest left. The caller has validated it.
fn remove(buf: &mut [u8], len: usize) -> usize {
    buf.copy_within(ADDRS_LEN + TAG_LEN..len, ADDRS_LEN);
    len - TAG_LEN
}

/// Stamps a frame with its channel: inserts an 802.1ad S-tag (VID `svid`, priority `pcp`,
/// DEI 0) as the outermost tag, after the MAC addresses, shifting the rest of the frame right
/// by 4 bytes. Returns the new length, `len + 4`.
///
/// Any tag the frame already carries becomes payload behind the stamp (see the
/// [module documentation](self)).
///
/// # Errors
/// [`TagError::LengthExceedsBuffer`] if `len > buf.len()`; [`TagError::Runt`] if `len < 12`;
/// [`TagError::InvalidPcp`] if `pcp > 7`; [`TagError::NoRoom`] if `buf` has fewer than 4 bytes
/// beyond `len`. The buffer is unchanged on error.
pub fn push_s_tag(buf: &mut [u8], len: usize, svid: ChannelId, pcp: u8) -> Result<usize, TagError> {
    check_pcp(pcp)?;
    let tag = Tag {
        tpid: TPID_8021AD,
        pcp,
        dei: false,
        vid: svid.get(),
    };
    insert(buf, len, tag)
}

/// Removes the switch's stamp: the outermost tag, which must be an 802.1ad S-tag with a valid
/// S-VID. Shifts the rest of the frame left by 4 bytes. Returns the channel and the new length,
/// `len - 4`. Inner tags are left as they are.
///
/// # Errors
/// [`TagError::LengthExceedsBuffer`] if `len > buf.len()`; [`TagError::Runt`] if `len < 16`;
/// [`TagError::NotSTagged`] if the outermost TPID is not `0x88a8` (an untagged frame or an
/// 802.1Q C-tag outermost); [`TagError::InvalidChannel`] for S-VID 0 or 4095. The buffer is
/// unchanged on error.
pub fn pop_s_tag(buf: &mut [u8], len: usize) -> Result<(ChannelId, usize), TagError> {
    check_frame(buf, len, ADDRS_LEN + TAG_LEN)?;
    let tag = tag_at_outer(&buf[..len]).ok_or(TagError::Runt {
        len,
        min: ADDRS_LEN + TAG_LEN,
    })?;
    if !tag.is_s_tag() {
        return Err(TagError::NotSTagged { tpid: tag.tpid });
    }
    let channel = ChannelId::new(tag.vid).map_err(|source| TagError::InvalidChannel {
        vid: tag.vid,
        source,
    })?;
    Ok((channel, remove(buf, len)))
}

/// Inserts an 802.1Q C-tag (VID `vid`, priority `pcp`, DEI 0) as the outermost tag, after the
/// MAC addresses, shifting the rest right by 4 bytes. Returns the new length, `len + 4`.
/// VID 0 (a priority-only tag) is allowed.
///
/// # Errors
/// As [`push_s_tag`], plus [`TagError::InvalidVid`] if `vid > 4094`. The buffer is unchanged on
/// error.
pub fn write_c_tag(buf: &mut [u8], len: usize, vid: u16, pcp: u8) -> Result<usize, TagError> {
    if vid > MAX_VID {
        return Err(TagError::InvalidVid { vid });
    }
    check_pcp(pcp)?;
    let tag = Tag {
        tpid: TPID_8021Q,
        pcp,
        dei: false,
        vid,
    };
    insert(buf, len, tag)
}

/// Removes the outermost tag if it is an 802.1Q C-tag, shifting the rest left by 4 bytes.
/// Returns the tag and the new length, `len - 4`.
///
/// # Errors
/// [`TagError::LengthExceedsBuffer`] if `len > buf.len()`; [`TagError::Runt`] if `len < 16`;
/// [`TagError::NotCTagged`] if the outermost TPID is not `0x8100`. The buffer is unchanged on
/// error.
pub fn pop_c_tag(buf: &mut [u8], len: usize) -> Result<(Tag, usize), TagError> {
    check_frame(buf, len, ADDRS_LEN + TAG_LEN)?;
    let tag = tag_at_outer(&buf[..len]).ok_or(TagError::Runt {
        len,
        min: ADDRS_LEN + TAG_LEN,
    })?;
    if !tag.is_c_tag() {
        return Err(TagError::NotCTagged { tpid: tag.tpid });
    }
    Ok((tag, remove(buf, len)))
}

#[cfg(test)]
mod tests;
