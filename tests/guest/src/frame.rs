//! Ethernet frames for tests: build with optional 802.1ad S-tag and 802.1Q C-tag, and parse.

/// EtherType of an 802.1Q C-tag.
pub const ETH_P_8021Q: u16 = 0x8100;
/// EtherType of an 802.1ad S-tag.
pub const ETH_P_8021AD: u16 = 0x88a8;
/// EtherType IPv4.
pub const ETH_P_IPV4: u16 = 0x0800;
/// EtherType ARP.
pub const ETH_P_ARP: u16 = 0x0806;
/// EtherType IPv6.
pub const ETH_P_IPV6: u16 = 0x86dd;
/// An EtherType reserved for local experiments (handy for test payloads).
pub const ETH_P_EXPERIMENTAL: u16 = 0x88b5;
/// The broadcast MAC.
pub const BROADCAST: [u8; 6] = [0xff; 6];
/// Minimum Ethernet frame length without FCS.
pub const ETH_MIN_LEN: usize = 60;

/// One VLAN tag (TPID + TCI).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VlanTag {
    /// Tag protocol identifier: [`ETH_P_8021AD`] or [`ETH_P_8021Q`] (or anything, for tests).
    pub tpid: u16,
    /// Priority code point (0..=7).
    pub pcp: u8,
    /// Drop eligible indicator.
    pub dei: bool,
    /// VLAN id (0..=4095).
    pub vid: u16,
}

impl VlanTag {
    /// The 16-bit TCI.
    pub fn tci(&self) -> u16 {
        (u16::from(self.pcp & 7) << 13) | (u16::from(self.dei) << 12) | (self.vid & 0x0fff)
    }
    fn from_tci(tpid: u16, tci: u16) -> Self {
        VlanTag {
            tpid,
            pcp: (tci >> 13) as u8,
            dei: tci & 0x1000 != 0,
            vid: tci & 0x0fff,
        }
    }
}

/// An Ethernet frame description; [`EthFrame::build`] serialises it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EthFrame {
    /// Destination MAC.
    pub dst: [u8; 6],
    /// Source MAC.
    pub src: [u8; 6],
    /// Tags in wire order (outermost first).
    pub tags: Vec<VlanTag>,
    /// EtherType after the tags.
    pub ethertype: u16,
    /// Payload.
    pub payload: Vec<u8>,
    /// Pad with zeros to [`ETH_MIN_LEN`] when shorter.
    pub pad: bool,
}

impl EthFrame {
    /// An untagged frame (padded to the minimum length by default).
    pub fn new(dst: [u8; 6], src: [u8; 6], ethertype: u16, payload: &[u8]) -> Self {
        EthFrame {
            dst,
            src,
            tags: Vec::new(),
            ethertype,
            payload: payload.to_vec(),
            pad: true,
        }
    }

    /// Adds an 802.1ad S-tag (outermost).
    pub fn with_stag(mut self, vid: u16) -> Self {
        self.tags.insert(
            0,
            VlanTag {
                tpid: ETH_P_8021AD,
                pcp: 0,
                dei: false,
                vid,
            },
        );
        self
    }

    /// Adds an 802.1Q C-tag (innermost so far).
    pub fn with_ctag(mut self, vid: u16) -> Self {
        self.tags.push(VlanTag {
            tpid: ETH_P_8021Q,
            pcp: 0,
            dei: false,
            vid,
        });
        self
    }

    /// Adds an arbitrary tag (innermost so far).
    pub fn with_tag(mut self, tag: VlanTag) -> Self {
        self.tags.push(tag);
        self
    }

    /// Disables padding to the minimum length.
    pub fn unpadded(mut self) -> Self {
        self.pad = false;
        self
    }

    /// Serialises the frame (no FCS).
    pub fn build(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(14 + 4 * self.tags.len() + self.payload.len());
        self.build_into(&mut out);
        out
    }

    /// Serialises into `out` (cleared first), reusing its allocation.
    pub fn build_into(&self, out: &mut Vec<u8>) {
        out.clear();
        out.extend_from_slice(&self.dst);
        out.extend_from_slice(&self.src);
        for t in &self.tags {
            out.extend_from_slice(&t.tpid.to_be_bytes());
            out.extend_from_slice(&t.tci().to_be_bytes());
        }
        out.extend_from_slice(&self.ethertype.to_be_bytes());
        out.extend_from_slice(&self.payload);
        if self.pad && out.len() < ETH_MIN_LEN {
            out.resize(ETH_MIN_LEN, 0);
        }
    }

    /// Parses a frame; tags with TPID 0x88a8, 0x8100 or 0x9100 are collected (up to 4). The
    /// payload includes any padding. `None` if shorter than an Ethernet header.
    pub fn parse(frame: &[u8]) -> Option<EthFrame> {
        let dst = dst(frame)?;
        let src = src(frame)?;
        let mut off = 12;
        let mut tags = Vec::new();
        loop {
            let et = u16::from_be_bytes([*frame.get(off)?, *frame.get(off + 1)?]);
            if matches!(et, ETH_P_8021AD | ETH_P_8021Q | 0x9100) && tags.len() < 4 {
                let tci = u16::from_be_bytes([*frame.get(off + 2)?, *frame.get(off + 3)?]);
                tags.push(VlanTag::from_tci(et, tci));
                off += 4;
            } else {
                return Some(EthFrame {
                    dst,
                    src,
                    tags,
                    ethertype: et,
                    payload: frame[off + 2..].to_vec(),
                    pad: false,
                });
            }
        }
    }
}

/// Destination MAC of a frame.
pub fn dst(frame: &[u8]) -> Option<[u8; 6]> {
    frame.get(0..6)?.try_into().ok()
}

/// Source MAC of a frame.
pub fn src(frame: &[u8]) -> Option<[u8; 6]> {
    frame.get(6..12)?.try_into().ok()
}

/// Formats a MAC as `aa:bb:cc:dd:ee:ff`.
pub fn mac_to_string(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_and_parse_double_tagged() {
        let f = EthFrame::new([1; 6], [2; 6], ETH_P_IPV4, b"abc")
            .with_ctag(100)
            .with_stag(200);
        let b = f.build();
        assert_eq!(b.len(), ETH_MIN_LEN);
        assert_eq!(&b[12..14], &ETH_P_8021AD.to_be_bytes());
        assert_eq!(&b[14..16], &200u16.to_be_bytes());
        assert_eq!(&b[16..18], &ETH_P_8021Q.to_be_bytes());
        assert_eq!(&b[18..20], &100u16.to_be_bytes());
        assert_eq!(&b[20..22], &ETH_P_IPV4.to_be_bytes());
        let p = EthFrame::parse(&b).unwrap();
        assert_eq!((p.dst, p.src, p.ethertype), ([1; 6], [2; 6], ETH_P_IPV4));
        assert_eq!(p.tags.iter().map(|t| t.vid).collect::<Vec<_>>(), [200, 100]);
        assert_eq!(&p.payload[..3], b"abc");
        assert_eq!(dst(&b), Some([1; 6]));
        assert_eq!(src(&b), Some([2; 6]));
        assert_eq!(dst(&b[..5]), None);
        assert!(EthFrame::parse(&b[..13]).is_none());
    }

    #[test]
    fn tci_fields() {
        let t = VlanTag {
            tpid: ETH_P_8021Q,
            pcp: 5,
            dei: true,
            vid: 4094,
        };
        assert_eq!(t.tci(), 0xbffe);
        assert_eq!(VlanTag::from_tci(ETH_P_8021Q, 0xbffe), t);
        assert_eq!(
            mac_to_string(&[0x52, 0x54, 0, 0xab, 1, 2]),
            "52:54:00:ab:01:02"
        );
    }
}
