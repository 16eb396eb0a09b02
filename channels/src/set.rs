//! [`ChannelSet`]: the channels a trunk (an uplink) carries.

use std::fmt;

use crate::id::ChannelId;

/// A set of channels, one bit per S-VID: a membership test is one load and a mask.
#[derive(Clone, PartialEq, Eq)]
pub struct ChannelSet {
    bits: Box<[u64; 64]>,
}

impl Default for ChannelSet {
    fn default() -> Self {
        ChannelSet {
            bits: Box::new([0; 64]),
        }
    }
}

impl ChannelSet {
    /// The empty set.
    pub fn new() -> ChannelSet {
        ChannelSet::default()
    }

    /// Adds a channel; true if it was not in the set.
    pub fn insert(&mut self, c: ChannelId) -> bool {
        let (w, m) = Self::slot(c);
        let was = self.bits[w] & m != 0;
        self.bits[w] |= m;
        !was
    }

    /// True when `c` is in the set.
    #[inline]
    pub fn contains(&self, c: ChannelId) -> bool {
        let (w, m) = Self::slot(c);
        self.bits[w] & m != 0
    }

    /// The channels, in increasing order.
    pub fn iter(&self) -> impl Iterator<Item = ChannelId> + '_ {
        (1..=ChannelId::MAX.get()).filter_map(move |v| {
            let c = ChannelId::new(v).ok()?;
            self.contains(c).then_some(c)
        })
    }

    /// Number of channels in the set.
    pub fn len(&self) -> usize {
        self.bits.iter().map(|w| w.count_ones() as usize).sum()
    }

    /// True when the set is empty.
    pub fn is_empty(&self) -> bool {
        self.bits.iter().all(|w| *w == 0)
    }

    #[inline]
    fn slot(c: ChannelId) -> (usize, u64) {
        let v = usize::from(c.get());
        (v / 64, 1u64 << (v % 64))
    }
}

impl FromIterator<ChannelId> for ChannelSet {
    fn from_iter<I: IntoIterator<Item = ChannelId>>(it: I) -> Self {
        let mut s = ChannelSet::new();
        for c in it {
            s.insert(c);
        }
        s
    }
}

impl fmt::Debug for ChannelSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn membership_is_exact_at_the_edges() {
        let ids = [1u16, 63, 64, 65, 4094];
        let s: ChannelSet = ids
            .iter()
            .map(|&v| ChannelId::new(v).expect("id"))
            .collect();
        for v in 1..=4094u16 {
            let c = ChannelId::new(v).expect("id");
            assert_eq!(s.contains(c), ids.contains(&v), "channel {v}");
        }
        assert_eq!(s.len(), ids.len());
        assert_eq!(s.iter().map(ChannelId::get).collect::<Vec<_>>(), ids);
    }
}
