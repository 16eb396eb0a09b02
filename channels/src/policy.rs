//! [`Policy`]: may a frame of one channel be delivered to a VM on another?

use crate::id::ChannelId;

/// The delivery policy: may a frame of one channel be delivered to a VM on another?
///
/// The default is isolation: a frame is delivered only to VMs of its own channel. Anything else
/// is an explicit, **directed** exception: allowing `(a, b)` lets frames of channel `a` reach
/// VMs on channel `b`, and says nothing about frames of `b` reaching `a` (allow `(b, a)` as
/// well, or use [`Policy::allow_both`], for two-way traffic).
///
/// [`admits`](Policy::admits) is a pure function of the policy and its two arguments: no
/// allocation, no lock; an equality test, then (only if there are exceptions) a binary search
/// in a sorted vector of packed pairs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Policy {
    /// Directed pairs `(from, to)` with `from != to`, packed as `from << 16 | to`, sorted,
    /// without duplicates.
    pairs: Vec<u32>,
}

fn pack(from: ChannelId, to: ChannelId) -> u32 {
    u32::from(from.get()) << 16 | u32::from(to.get())
}

fn unpack(key: u32) -> Option<(ChannelId, ChannelId)> {
    let from = ChannelId::new((key >> 16) as u16).ok()?;
    let to = ChannelId::new((key & 0xffff) as u16).ok()?;
    Some((from, to))
}

impl Policy {
    /// The default policy: a frame is admitted only to VMs of its own channel.
    pub fn new() -> Policy {
        Policy::default()
    }

    /// The default policy plus the given directed pairs `(from, to)`: frames of `from` may be
    /// delivered to VMs on `to`. Pairs with `from == to` are redundant and ignored.
    pub fn with_allowed(pairs: impl IntoIterator<Item = (ChannelId, ChannelId)>) -> Policy {
        let mut packed: Vec<u32> = pairs
            .into_iter()
            .filter(|(a, b)| a != b)
            .map(|(a, b)| pack(a, b))
            .collect();
        packed.sort_unstable();
        packed.dedup();
        Policy { pairs: packed }
    }

    /// Lets frames of channel `from` be delivered to VMs on channel `to` (one direction only).
    /// Returns false if that was already admitted (including `from == to`).
    pub fn allow(&mut self, from: ChannelId, to: ChannelId) -> bool {
        if from == to {
            return false;
        }
        let key = pack(from, to);
        match self.pairs.binary_search(&key) {
            Ok(_) => false,
            Err(at) => {
                self.pairs.insert(at, key);
                true
            }
        }
    }

    /// Allows both directions between `a` and `b`. Returns true if anything changed.
    pub fn allow_both(&mut self, a: ChannelId, b: ChannelId) -> bool {
        let ab = self.allow(a, b);
        let ba = self.allow(b, a);
        ab || ba
    }

    /// Removes the directed exception `(from, to)`. Returns true if it was present. Equal
    /// channels are always admitted and cannot be revoked.
    pub fn revoke(&mut self, from: ChannelId, to: ChannelId) -> bool {
        match self.pairs.binary_search(&pack(from, to)) {
            Ok(at) => {
                self.pairs.remove(at);
                true
            }
            Err(_) => false,
        }
    }

    /// May a frame of channel `frame` be delivered to a VM on channel `dest`?
    ///
    /// True if `frame == dest`, or if the directed pair `(frame, dest)` was allowed.
    #[inline]
    pub fn admits(&self, frame: ChannelId, dest: ChannelId) -> bool {
        frame == dest
            || (!self.pairs.is_empty() && self.pairs.binary_search(&pack(frame, dest)).is_ok())
    }

    /// The configured directed pairs `(from, to)`, sorted, without the implicit equal pairs.
    pub fn allowed_pairs(&self) -> impl Iterator<Item = (ChannelId, ChannelId)> + '_ {
        self.pairs.iter().filter_map(|&k| unpack(k))
    }

    /// True if only equal channels are admitted.
    pub fn is_isolating(&self) -> bool {
        self.pairs.is_empty()
    }
}

impl FromIterator<(ChannelId, ChannelId)> for Policy {
    /// Same as [`Policy::with_allowed`].
    fn from_iter<I: IntoIterator<Item = (ChannelId, ChannelId)>>(pairs: I) -> Policy {
        Policy::with_allowed(pairs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashSet;

    fn ch(v: u16) -> ChannelId {
        ChannelId::new(v).unwrap_or(ChannelId::MIN)
    }

    #[test]
    fn default_admits_only_equal() {
        let p = Policy::default();
        assert!(p.is_isolating());
        assert!(p.admits(ch(100), ch(100)));
        assert!(!p.admits(ch(100), ch(200)));
        assert!(!p.admits(ch(1), ch(4094)));
        assert_eq!(p.allowed_pairs().count(), 0);
    }

    #[test]
    fn pairs_are_directed() {
        let p = Policy::with_allowed([(ch(100), ch(200))]);
        assert!(p.admits(ch(100), ch(200)));
        assert!(!p.admits(ch(200), ch(100)));
        assert!(!p.admits(ch(100), ch(300)));
        assert!(p.admits(ch(200), ch(200)));
    }

    #[test]
    fn allow_revoke_and_listing() {
        let mut p = Policy::new();
        assert!(p.allow(ch(3), ch(1)));
        assert!(!p.allow(ch(3), ch(1)));
        assert!(!p.allow(ch(5), ch(5)));
        assert!(p.allow_both(ch(1), ch(2)));
        assert!(!p.allow_both(ch(2), ch(1)));
        let listed: Vec<_> = p.allowed_pairs().map(|(a, b)| (a.get(), b.get())).collect();
        assert_eq!(listed, [(1, 2), (2, 1), (3, 1)]);
        assert!(p.revoke(ch(3), ch(1)));
        assert!(!p.revoke(ch(3), ch(1)));
        assert!(!p.revoke(ch(5), ch(5)));
        assert!(!p.admits(ch(3), ch(1)));
        assert!(p.admits(ch(5), ch(5)));
    }

    #[test]
    fn with_allowed_dedups_and_drops_equal_pairs() {
        let p: Policy = [(ch(2), ch(1)), (ch(2), ch(1)), (ch(7), ch(7))]
            .into_iter()
            .collect();
        assert_eq!(p.allowed_pairs().count(), 1);
        assert_eq!(p, Policy::with_allowed([(ch(2), ch(1))]));
    }

    #[test]
    fn extreme_ids_pack_without_collision() {
        let p = Policy::with_allowed([(ch(4094), ch(1))]);
        assert!(p.admits(ch(4094), ch(1)));
        assert!(!p.admits(ch(1), ch(4094)));
        assert_eq!(p.allowed_pairs().next(), Some((ch(4094), ch(1))));
    }

    fn arb_channel() -> impl Strategy<Value = ChannelId> {
        // Bias towards a small set so that queries hit configured pairs often.
        prop_oneof![1u16..=8, 1u16..=4094]
            .prop_filter_map("valid S-VID", |v| ChannelId::new(v).ok())
    }

    proptest! {
        #[test]
        fn admits_exactly_configured_pairs_plus_equality(
            pairs in prop::collection::vec((arb_channel(), arb_channel()), 0..40),
            extra in prop::collection::vec((arb_channel(), arb_channel()), 0..10),
            queries in prop::collection::vec((arb_channel(), arb_channel()), 0..200),
        ) {
            let mut p = Policy::with_allowed(pairs.iter().copied());
            for &(a, b) in &extra {
                p.allow(a, b);
            }
            let model: HashSet<(ChannelId, ChannelId)> =
                pairs.iter().chain(&extra).copied().filter(|(a, b)| a != b).collect();
            for (a, b) in queries.iter().copied().chain(model.iter().copied()) {
                prop_assert_eq!(p.admits(a, b), a == b || model.contains(&(a, b)));
            }
            let listed: HashSet<_> = p.allowed_pairs().collect();
            prop_assert_eq!(&listed, &model);
            prop_assert_eq!(p.allowed_pairs().count(), model.len());
        }
    }
}
