//! Ethernet frames built by hand: the tagged and spoofed mix the isolation tests replay.

use super::scenario::{BROADCAST, GEN_MAC, OTHER_MAC, ROGUE_MAC, SAME_MAC};

pub fn parse_mac(s: &str) -> [u8; 6] {
    let mut m = [0u8; 6];
    for (i, b) in s.split(':').enumerate() {
        m[i] = u8::from_str_radix(b, 16).expect("hex MAC");
    }
    m
}

/// An Ethernet frame of `len` bytes: `dst`, `src`, the tags (TPID, VID) in order, ethertype
/// 0x88b5 (local experimental) and a payload carrying `marker`.
pub fn frame(dst: &str, src: &str, tags: &[(u16, u16)], len: usize, marker: u32) -> Vec<u8> {
    let mut f = Vec::with_capacity(len);
    f.extend_from_slice(&parse_mac(dst));
    f.extend_from_slice(&parse_mac(src));
    for &(tpid, vid) in tags {
        f.extend_from_slice(&tpid.to_be_bytes());
        f.extend_from_slice(&vid.to_be_bytes());
    }
    f.extend_from_slice(&0x88b5u16.to_be_bytes());
    f.extend_from_slice(&marker.to_be_bytes());
    let mut i = 0u8;
    while f.len() < len {
        f.push(i);
        i = i.wrapping_add(1);
    }
    f
}

pub const CTAG: u16 = 0x8100;
pub const STAG: u16 = 0x88a8;

/// The replayed mix, in order: every tag layout (none, 802.1Q VID 200, 802.1ad S-VID 200,
/// S200/C200, 802.1ad S-VID 100) to every kind of destination (broadcast, multicast, the `same`
/// VM, the `other` VM's MAC, unknown unicast), from the generator's own MAC and from three
/// spoofed ones (the other channel's VM, the same channel's VM, a rogue one).
/// Returns (all frames, the legitimate ones in order, the number of spoofed ones).
pub fn replay_mix() -> (Vec<Vec<u8>>, Vec<Vec<u8>>, u64) {
    let layouts: [&[(u16, u16)]; 5] = [
        &[],
        &[(CTAG, 200)],
        &[(STAG, 200)],
        &[(STAG, 200), (CTAG, 200)],
        &[(STAG, 100)],
    ];
    let dsts = [
        BROADCAST,
        "01:00:5e:00:00:01",
        SAME_MAC,
        OTHER_MAC,
        "02:00:00:00:09:09",
    ];
    let srcs = [GEN_MAC, OTHER_MAC, SAME_MAC, ROGUE_MAC];
    let lens = [64usize, 128, 1000, 1514];
    let (mut all, mut legit, mut spoofed) = (Vec::new(), Vec::new(), 0u64);
    let mut marker = 0u32;
    for tags in layouts {
        for dst in dsts {
            for src in srcs {
                // Lengths vary across destinations, so each sender sends every length.
                let len = lens[(marker as usize / srcs.len()) % lens.len()];
                let f = frame(dst, src, tags, len, marker);
                marker += 1;
                if src == GEN_MAC {
                    legit.push(f.clone());
                } else {
                    spoofed += 1;
                }
                all.push(f);
            }
        }
    }
    (all, legit, spoofed)
}
