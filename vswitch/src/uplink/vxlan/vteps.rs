//! Which remote VTEP a MAC lives behind, per channel: learned from the inner source MAC of each
//! frame received, looked up for each unicast frame sent (RFC 7348 section 4, "learning"). A
//! fixed table allocated once, so nothing is allocated per packet: open addressing with a short
//! probe window; when the window is full its stalest entry is replaced, and an entry not
//! refreshed for [`AGEING_S`] seconds is not used. A miss only costs flooding (head-end
//! replication to every remote), never a wrong delivery: the far switch checks every frame.

use vswitch_channels::ChannelId;

/// Entries (a power of two). 16 bytes each.
pub(super) const SLOTS: usize = 4096;
/// Slots looked at per operation.
const PROBE: usize = 8;
/// Seconds an entry stays usable without being refreshed (the Linux bridge's and VXLAN
/// device's default).
pub(super) const AGEING_S: u32 = 300;

#[derive(Debug, Clone, Copy, Default)]
struct Slot {
    /// Channel and MAC (see [`key`]); 0: empty.
    key: u64,
    /// Index of the remote VTEP.
    remote: u16,
    /// When it was last learned, in the caller's seconds.
    seen: u32,
}

/// The learning table of one VXLAN uplink.
pub(super) struct VtepTable {
    slots: Box<[Slot]>,
}

/// Channel in the top 16 bits, MAC in the low 48: never 0 (a channel is at least 1).
fn key(channel: ChannelId, mac: [u8; 6]) -> u64 {
    let mut b = [0u8; 8];
    b[..2].copy_from_slice(&channel.get().to_be_bytes());
    b[2..].copy_from_slice(&mac);
    u64::from_be_bytes(b)
}

/// The first slot of `key`'s probe window (Fibonacci hashing).
fn home(key: u64) -> usize {
    (key.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> (64 - SLOTS.trailing_zeros())) as usize
}

impl VtepTable {
    /// An empty table.
    pub(super) fn new() -> Self {
        VtepTable {
            slots: vec![Slot::default(); SLOTS].into_boxed_slice(),
        }
    }

    /// Records that `mac` on `channel` was last seen behind remote `remote` at `now`.
    pub(super) fn learn(&mut self, channel: ChannelId, mac: [u8; 6], remote: u16, now: u32) {
        let k = key(channel, mac);
        let h = home(k);
        let mut victim = h % SLOTS;
        let mut victim_age = 0;
        for i in 0..PROBE {
            let at = (h + i) % SLOTS;
            let s = &mut self.slots[at];
            // Entries are never removed, so a key lies before the first empty slot of its window.
            if s.key == k || s.key == 0 {
                *s = Slot {
                    key: k,
                    remote,
                    seen: now,
                };
                return;
            }
            let age = now.saturating_sub(s.seen);
            if age > victim_age {
                (victim, victim_age) = (at, age);
            }
        }
        self.slots[victim] = Slot {
            key: k,
            remote,
            seen: now,
        };
    }

    /// The remote `mac` on `channel` lives behind, if learned less than [`AGEING_S`] ago.
    pub(super) fn lookup(&self, channel: ChannelId, mac: [u8; 6], now: u32) -> Option<u16> {
        let k = key(channel, mac);
        let h = home(k);
        for i in 0..PROBE {
            let s = &self.slots[(h + i) % SLOTS];
            if s.key == k {
                return (now.saturating_sub(s.seen) < AGEING_S).then_some(s.remote);
            }
            if s.key == 0 {
                return None;
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ch(n: u16) -> ChannelId {
        ChannelId::new(n).expect("channel")
    }

    fn mac(n: u32) -> [u8; 6] {
        let b = n.to_be_bytes();
        [0x52, 0x54, b[0], b[1], b[2], b[3]]
    }

    #[test]
    fn learns_per_channel() {
        let mut t = VtepTable::new();
        t.learn(ch(100), mac(1), 3, 10);
        assert_eq!(t.lookup(ch(100), mac(1), 10), Some(3));
        assert_eq!(t.lookup(ch(200), mac(1), 10), None, "another channel");
        assert_eq!(t.lookup(ch(100), mac(2), 10), None, "another MAC");
        t.learn(ch(200), mac(1), 5, 10);
        assert_eq!(t.lookup(ch(100), mac(1), 10), Some(3));
        assert_eq!(t.lookup(ch(200), mac(1), 10), Some(5));
    }

    #[test]
    fn a_moved_mac_follows_its_new_vtep() {
        let mut t = VtepTable::new();
        t.learn(ch(100), mac(1), 0, 10);
        t.learn(ch(100), mac(1), 1, 11);
        assert_eq!(t.lookup(ch(100), mac(1), 11), Some(1));
    }

    #[test]
    fn entries_age_out() {
        let mut t = VtepTable::new();
        t.learn(ch(100), mac(1), 2, 10);
        assert_eq!(t.lookup(ch(100), mac(1), 10 + AGEING_S - 1), Some(2));
        assert_eq!(t.lookup(ch(100), mac(1), 10 + AGEING_S), None);
        t.learn(ch(100), mac(1), 2, 10 + AGEING_S);
        assert_eq!(
            t.lookup(ch(100), mac(1), 10 + AGEING_S),
            Some(2),
            "refreshed"
        );
    }

    #[test]
    fn bounded_and_the_freshest_stay() {
        let mut t = VtepTable::new();
        let n = (SLOTS * 4) as u32;
        for i in 0..n {
            t.learn(ch(100), mac(i), (i % 7) as u16, i / 64);
        }
        assert_eq!(t.slots.len(), SLOTS, "never grows");
        // The last ones learned are all there (only older entries are replaced).
        let now = n / 64;
        for i in n - 64..n {
            assert_eq!(
                t.lookup(ch(100), mac(i), now),
                Some((i % 7) as u16),
                "mac {i}"
            );
        }
        // Whatever is found is right.
        for i in 0..n {
            if let Some(r) = t.lookup(ch(100), mac(i), now) {
                assert_eq!(r, (i % 7) as u16);
            }
        }
    }
}
