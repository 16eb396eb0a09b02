//! [`MacAddr`]: a 48-bit Ethernet address.

use std::fmt;
use std::str::FromStr;

use crate::error::MacError;

/// A 48-bit Ethernet MAC address, in transmission order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    /// The broadcast address, `ff:ff:ff:ff:ff:ff`.
    pub const BROADCAST: MacAddr = MacAddr([0xff; 6]);
    /// The all-zero address, `00:00:00:00:00:00`.
    pub const ZERO: MacAddr = MacAddr([0; 6]);

    /// Wraps six octets.
    pub const fn new(octets: [u8; 6]) -> MacAddr {
        MacAddr(octets)
    }

    /// The address from exactly six bytes (e.g. `&frame[0..6]`); `None` for any other length.
    pub fn from_slice(bytes: &[u8]) -> Option<MacAddr> {
        <[u8; 6]>::try_from(bytes).ok().map(MacAddr)
    }

    /// The six octets.
    pub const fn as_bytes(&self) -> &[u8; 6] {
        &self.0
    }

    /// True for `ff:ff:ff:ff:ff:ff`.
    pub fn is_broadcast(&self) -> bool {
        *self == MacAddr::BROADCAST
    }

    /// True for a group address (the I/G bit, the low bit of the first octet, is set);
    /// this includes broadcast.
    pub const fn is_multicast(&self) -> bool {
        self.0[0] & 0x01 != 0
    }

    /// True for an individual (unicast) address: not [`is_multicast`](Self::is_multicast).
    pub const fn is_unicast(&self) -> bool {
        !self.is_multicast()
    }

    /// The address as the low 48 bits of a `u64` (first octet most significant): a compact,
    /// order-preserving key for hashing and comparisons.
    pub const fn to_u64(&self) -> u64 {
        let b = self.0;
        u64::from_be_bytes([0, 0, b[0], b[1], b[2], b[3], b[4], b[5]])
    }
}

impl From<[u8; 6]> for MacAddr {
    fn from(octets: [u8; 6]) -> MacAddr {
        MacAddr(octets)
    }
}

impl From<MacAddr> for [u8; 6] {
    fn from(mac: MacAddr) -> [u8; 6] {
        mac.0
    }
}

impl fmt::Display for MacAddr {
    /// Lowercase, colon-separated: `52:54:00:12:34:56`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

impl FromStr for MacAddr {
    type Err = MacError;

    /// Parses six two-digit hex octets separated by `:` or by `-` (the same one throughout),
    /// in any letter case: `52:54:00:12:34:56`, `52-54-00-12-34-56`.
    fn from_str(s: &str) -> Result<MacAddr, MacError> {
        let malformed = || MacError::Malformed {
            input: s.to_owned(),
        };
        let sep = match s.as_bytes().get(2) {
            Some(b':') => ':',
            Some(b'-') => '-',
            _ => return Err(malformed()),
        };
        let mut out = [0u8; 6];
        let mut parts = s.split(sep);
        for slot in &mut out {
            let part = parts.next().ok_or_else(malformed)?;
            *slot = parse_octet(part).ok_or_else(|| {
                if part.len() == 2 {
                    MacError::BadOctet {
                        input: s.to_owned(),
                        octet: part.to_owned(),
                    }
                } else {
                    malformed()
                }
            })?;
        }
        if parts.next().is_some() {
            return Err(malformed());
        }
        Ok(MacAddr(out))
    }
}

/// Two hex digits, nothing else.
fn parse_octet(part: &str) -> Option<u8> {
    let [hi, lo] = <[u8; 2]>::try_from(part.as_bytes()).ok()?;
    let digit = |c: u8| char::from(c).to_digit(16);
    let v = digit(hi)? * 16 + digit(lo)?;
    u8::try_from(v).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const M: MacAddr = MacAddr([0x52, 0x54, 0x00, 0x12, 0x34, 0x56]);

    #[test]
    fn parses_both_separators_and_cases() {
        for s in ["52:54:00:12:34:56", "52-54-00-12-34-56"] {
            assert_eq!(s.parse::<MacAddr>(), Ok(M), "{s}");
        }
        assert_eq!(
            "AA:bb:Cc:dD:ee:FF".parse::<MacAddr>(),
            Ok(MacAddr([0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff]))
        );
    }

    #[test]
    fn display_is_lowercase_colons() {
        let m = MacAddr([0xAA, 0xBB, 0x0C, 0x00, 0x01, 0xFF]);
        assert_eq!(m.to_string(), "aa:bb:0c:00:01:ff");
    }

    #[test]
    fn rejects_malformed() {
        for bad in [
            "",
            "52:54:00:12:34",
            "52:54:00:12:34:56:78",
            "52:54:00:12:34:56:",
            "52:54-00:12:34:56",
            "52.54.00.12.34.56",
            "525400123456",
            "5254.0012.3456",
            "5:54:00:12:34:56",
            "52:54:00:12:34:5",
            "52:54:00:12:34:567",
            " 52:54:00:12:34:56",
            "52:54:00:12:34:56 ",
            "52::00:12:34:56",
        ] {
            assert_eq!(
                bad.parse::<MacAddr>(),
                Err(MacError::Malformed { input: bad.into() }),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn rejects_bad_octets_naming_them() {
        let err = "52:54:0g:12:34:56".parse::<MacAddr>();
        assert_eq!(
            err,
            Err(MacError::BadOctet {
                input: "52:54:0g:12:34:56".into(),
                octet: "0g".into()
            })
        );
        let msg = err.map_err(|e| e.to_string());
        assert!(matches!(msg, Err(m) if m.contains("\"0g\"") && m.contains("52:54:0g")));
        // A non-ASCII octet of two bytes is a bad octet, not a panic.
        assert!(matches!(
            "52:54:é:12:34:56".parse::<MacAddr>(),
            Err(MacError::BadOctet { .. })
        ));
        assert!("+1:54:00:12:34:56".parse::<MacAddr>().is_err());
    }

    #[test]
    fn classification() {
        assert!(MacAddr::BROADCAST.is_broadcast());
        assert!(MacAddr::BROADCAST.is_multicast());
        assert!(!MacAddr::BROADCAST.is_unicast());
        let mcast = MacAddr([0x01, 0x00, 0x5e, 0, 0, 1]);
        assert!(mcast.is_multicast() && !mcast.is_broadcast() && !mcast.is_unicast());
        assert!(M.is_unicast() && !M.is_multicast() && !M.is_broadcast());
    }

    #[test]
    fn slices_and_bytes() {
        assert_eq!(MacAddr::from_slice(&M.0), Some(M));
        assert_eq!(MacAddr::from_slice(&[1, 2, 3, 4, 5]), None);
        assert_eq!(MacAddr::from_slice(&[1, 2, 3, 4, 5, 6, 7]), None);
        assert_eq!(M.as_bytes(), &[0x52, 0x54, 0x00, 0x12, 0x34, 0x56]);
        assert_eq!(M.to_u64(), 0x5254_0012_3456);
        assert_eq!(MacAddr::BROADCAST.to_u64(), 0xffff_ffff_ffff);
        assert_eq!(<[u8; 6]>::from(M), M.0);
    }

    proptest! {
        #[test]
        fn display_parse_roundtrip(b in any::<[u8; 6]>()) {
            let m = MacAddr(b);
            prop_assert_eq!(m.to_string().parse::<MacAddr>(), Ok(m));
            prop_assert_eq!(m.to_string().replace(':', "-").parse::<MacAddr>(), Ok(m));
        }

        #[test]
        fn to_u64_is_injective_and_ordered(a in any::<[u8; 6]>(), b in any::<[u8; 6]>()) {
            let (a, b) = (MacAddr(a), MacAddr(b));
            prop_assert_eq!(a.to_u64() == b.to_u64(), a == b);
            prop_assert_eq!(a.to_u64().cmp(&b.to_u64()), a.cmp(&b));
            prop_assert!(a.to_u64() < 1 << 48);
        }

        #[test]
        fn parse_never_panics(s in ".{0,24}") {
            let _ = s.parse::<MacAddr>();
        }
    }
}
