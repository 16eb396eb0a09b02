//! [`ChannelId`]: an 802.1Qbg S-channel, identified by its 802.1ad S-VID.

use std::fmt;
use std::num::NonZeroU16;
use std::str::FromStr;

use crate::error::ChannelError;

/// A logical channel: an 802.1ad S-VID in `1..=4094`.
///
/// 0 ("no VLAN") and 4095 (reserved) are not channels, and nothing above 4095 fits in the 12-bit
/// VID field; [`ChannelId::new`] rejects them, so every `ChannelId` in existence is valid.
///
/// Stored as a [`NonZeroU16`], so `Option<ChannelId>` is two bytes (handy in per-port tables).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ChannelId(NonZeroU16);

impl ChannelId {
    /// The smallest channel id, 1.
    pub const MIN: ChannelId = ChannelId(NonZeroU16::MIN);
    /// The largest channel id, 4094.
    pub const MAX: ChannelId = match NonZeroU16::new(4094) {
        Some(v) => ChannelId(v),
        None => panic!("4094 is not zero"),
    };

    /// Makes a channel id from an S-VID.
    ///
    /// # Errors
    /// [`ChannelError::Zero`] for 0, [`ChannelError::Reserved`] for 4095,
    /// [`ChannelError::OutOfRange`] above 4095.
    pub const fn new(svid: u16) -> Result<ChannelId, ChannelError> {
        match svid {
            4095 => Err(ChannelError::Reserved),
            4096.. => Err(ChannelError::OutOfRange(svid as u64)),
            _ => match NonZeroU16::new(svid) {
                Some(v) => Ok(ChannelId(v)),
                None => Err(ChannelError::Zero),
            },
        }
    }

    /// The S-VID, in `1..=4094`.
    pub const fn get(self) -> u16 {
        self.0.get()
    }
}

impl fmt::Display for ChannelId {
    /// The S-VID in decimal, e.g. `100`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.get(), f)
    }
}

impl FromStr for ChannelId {
    type Err = ChannelError;

    /// Parses a plain decimal S-VID (`"100"`); no sign, no whitespace, no hex.
    fn from_str(s: &str) -> Result<ChannelId, ChannelError> {
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(ChannelError::NotANumber {
                input: s.to_owned(),
            });
        }
        match s.parse::<u64>() {
            Ok(v) => match u16::try_from(v) {
                Ok(v) => ChannelId::new(v),
                Err(_) => Err(ChannelError::OutOfRange(v)),
            },
            // All digits yet not a u64: far too large.
            Err(_) => Err(ChannelError::OutOfRange(u64::MAX)),
        }
    }
}

impl TryFrom<u16> for ChannelId {
    type Error = ChannelError;

    /// Same as [`ChannelId::new`].
    fn try_from(svid: u16) -> Result<ChannelId, ChannelError> {
        ChannelId::new(svid)
    }
}

impl From<ChannelId> for u16 {
    fn from(id: ChannelId) -> u16 {
        id.get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn accepts_the_whole_range() {
        assert_eq!(ChannelId::new(1).map(ChannelId::get), Ok(1));
        assert_eq!(ChannelId::new(4094).map(ChannelId::get), Ok(4094));
        assert_eq!(ChannelId::MIN.get(), 1);
        assert_eq!(ChannelId::MAX.get(), 4094);
    }

    #[test]
    fn rejects_zero_reserved_and_too_large() {
        assert_eq!(ChannelId::new(0), Err(ChannelError::Zero));
        assert_eq!(ChannelId::new(4095), Err(ChannelError::Reserved));
        assert_eq!(ChannelId::new(4096), Err(ChannelError::OutOfRange(4096)));
        assert_eq!(
            ChannelId::new(u16::MAX),
            Err(ChannelError::OutOfRange(65535))
        );
        assert_eq!(ChannelId::try_from(0u16), Err(ChannelError::Zero));
        for e in [
            ChannelError::Zero,
            ChannelError::Reserved,
            ChannelError::OutOfRange(4096),
        ] {
            assert!(e.to_string().contains("1..=4094"), "{e}");
        }
    }

    #[test]
    fn parses_decimal() {
        assert_eq!("100".parse::<ChannelId>().map(ChannelId::get), Ok(100));
        assert_eq!("0100".parse::<ChannelId>().map(ChannelId::get), Ok(100));
        assert_eq!("0".parse::<ChannelId>(), Err(ChannelError::Zero));
        assert_eq!("4095".parse::<ChannelId>(), Err(ChannelError::Reserved));
        assert_eq!(
            "70000".parse::<ChannelId>(),
            Err(ChannelError::OutOfRange(70000))
        );
        assert_eq!(
            "99999999999999999999999".parse::<ChannelId>(),
            Err(ChannelError::OutOfRange(u64::MAX))
        );
        for bad in ["", " 1", "1 ", "+1", "-1", "0x10", "ten", "1.0"] {
            assert_eq!(
                bad.parse::<ChannelId>(),
                Err(ChannelError::NotANumber { input: bad.into() }),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn option_is_two_bytes() {
        assert_eq!(std::mem::size_of::<Option<ChannelId>>(), 2);
    }

    proptest! {
        #[test]
        fn valid_iff_in_range(v in any::<u16>()) {
            prop_assert_eq!(ChannelId::new(v).is_ok(), (1..=4094).contains(&v));
        }

        #[test]
        fn display_parse_roundtrip(v in 1u16..=4094) {
            let id = ChannelId::new(v).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(id.to_string().parse::<ChannelId>(), Ok(id));
            prop_assert_eq!(u16::from(id), v);
        }
    }
}
