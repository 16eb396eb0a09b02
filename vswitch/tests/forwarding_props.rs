//! Property: for any sequence of frames, (dis)associations, policy changes and FDB poisoning,
//! no frame is ever delivered to a port whose channel the policy does not admit.
//!
//! The forwarding plan ([`plan_frame`]) and the delivery check ([`admit`]) are the exact
//! functions the datapath runs; the property drives them against a model of the registry.

use std::collections::HashMap;

use proptest::prelude::*;
use vswitch::core::{Core, PolicyTable, View};
use vswitch::counters::{DropReason, Drops};
use vswitch::forward::{
    may_enter, plan_batch, plan_frame, DestKind, FrameAddrs, Ingress, Role, Scratch, Sender,
};
use vswitch::SwitchSettings;
use vswitch_channels::{ChannelId, ChannelInfo, Policy, PortId, VmId};

const PORTS: u32 = 6;
const CHANNELS: [u16; 3] = [100, 200, 4094];

#[derive(Debug, Clone)]
enum Op {
    Associate(u32, usize),
    Disassociate(u32),
    /// Learn (channel, mac) -> port regardless of the truth: a poisoned FDB entry.
    Poison(usize, u8, u32),
    /// Port sends a frame from src-mac index to dst-mac index (0xff = broadcast).
    Frame(u32, u8, u8),
    /// Allow one directed pair.
    Allow(usize, usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0..PORTS, 0..CHANNELS.len()).prop_map(|(p, c)| Op::Associate(p, c)),
        (0..PORTS).prop_map(Op::Disassociate),
        (0..CHANNELS.len(), 0u8..8, 0..PORTS).prop_map(|(c, m, p)| Op::Poison(c, m, p)),
        (0..PORTS, 0u8..8, prop_oneof![0u8..8, Just(0xff)])
            .prop_map(|(p, s, d)| Op::Frame(p, s, d)),
        (0..CHANNELS.len(), 0..CHANNELS.len()).prop_map(|(a, b)| Op::Allow(a, b)),
    ]
}

fn ch(i: usize) -> ChannelId {
    ChannelId::new(CHANNELS[i]).expect("valid")
}

fn mac(i: u8) -> [u8; 6] {
    if i == 0xff {
        [0xff; 6]
    } else {
        [0x52, 0x54, 0, 0, 0, i]
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]
    #[test]
    fn nothing_is_ever_delivered_across_a_refusing_policy(ops in prop::collection::vec(op(), 1..80)) {
        let core = Core::new(SwitchSettings::default(), Policy::default());
        let mut model: HashMap<u32, ChannelId> = HashMap::new();
        let mut pairs: Vec<(ChannelId, ChannelId)> = Vec::new();
        let mut dests = Vec::new();
        for op in ops {
            match op {
                Op::Associate(p, c) => {
                    core.registry.associate(VmId::port(PortId::new(p)), ChannelInfo::veb(ch(c)))
                        .expect("associate");
                    model.insert(p, ch(c));
                }
                Op::Disassociate(p) => {
                    let r = core.registry.disassociate(PortId::new(p));
                    prop_assert_eq!(r.is_ok(), model.remove(&p).is_some());
                }
                Op::Poison(c, m, p) => {
                    let now = core.fdb.now();
                    core.fdb.learn(ch(c), &mac(m), PortId::new(p), u32::MAX, now);
                }
                Op::Allow(a, b) => {
                    pairs.push((ch(a), ch(b)));
                    core.policy.store(std::sync::Arc::new(PolicyTable::new(
                        Policy::with_allowed(pairs.iter().copied()),
                    )));
                }
                Op::Frame(p, s, d) => {
                    // The stamp comes from the registry at batch start, as in forward_batch.
                    let reg = core.registry.load();
                    let Some(info) = reg.channel_of(PortId::new(p)) else { continue };
                    let policy = core.policy.load();
                    let from = Sender { port: PortId::new(p), channel: info.id, mac: None, mac_limit: u32::MAX, role: Role::Veb };
                    dests.clear();
                    let now = core.fdb.now();
                    let ing = plan_frame(&View { reg: &reg, policy: &policy, ports: &Default::default() }, &core.fdb, now, &from, mac(s), mac(d), 0, &mut dests);
                    if let Ingress::Accepted { copies, .. } = ing {
                        prop_assert_eq!(copies as usize, dests.len());
                    }
                    for &(q, _) in &dests {
                        let q = PortId::new(q);
                        prop_assert_ne!(q, from.port, "never back to the sender");
                        if let Ok(dest_channel) = may_enter(&reg, &policy, from.channel, q, DestKind::Vm) {
                            let truth = model.get(&q.get()).copied();
                            prop_assert_eq!(Some(dest_channel), truth);
                            let allowed = dest_channel == from.channel
                                || pairs.contains(&(from.channel, dest_channel));
                            prop_assert!(allowed, "delivered {} -> {}", from.channel, dest_channel);
                        }
                    }
                }
            }
        }
    }
}

/// A core with `PORTS` ports spread over the channels, some FDB entries (some of them on the
/// sender's port) and channel 100 allowed to reach 200.
fn batch_core(assoc: &[usize], fdb: &[(usize, u8, u32)]) -> Core {
    let core = Core::new(SwitchSettings::default(), Policy::default());
    for (p, &c) in assoc.iter().enumerate() {
        core.registry
            .associate(VmId::port(PortId::new(p as u32)), ChannelInfo::veb(ch(c)))
            .expect("associate");
    }
    core.policy
        .store(std::sync::Arc::new(PolicyTable::new(Policy::with_allowed(
            [(ch(0), ch(1))],
        ))));
    let now = core.fdb.now();
    for &(c, m, p) in fdb {
        core.fdb
            .learn(ch(c), &mac(m), PortId::new(p), u32::MAX, now);
    }
    core
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]
    /// plan_batch (runs, one learning per source run, grouped prefetched lookups) decides
    /// exactly what plan_frame does frame by frame: same destinations in the same per-port
    /// order, same ingress counts (every frame counted, drops included), same learning.
    #[test]
    fn plan_batch_equals_plan_frame_frame_by_frame(
        assoc in prop::collection::vec(0..CHANNELS.len(), PORTS as usize),
        fdb in prop::collection::vec((0..CHANNELS.len(), 0u8..8, 0..PORTS), 0..12),
        // Runs of (src index, dst index, length): 0xfe = a multicast source, 0xff = broadcast.
        runs in prop::collection::vec(
            (prop_oneof![0u8..8, Just(0xfe)], prop_oneof![0u8..8, Just(0xff)], 1usize..20),
            1..40,
        ),
        sender in 0..PORTS,
        locked in prop::option::of(0u8..8),
        limit in 0u32..6,
    ) {
        let frames: Vec<FrameAddrs> = runs
            .iter()
            .flat_map(|&(s, d, k)| {
                let src = if s == 0xfe { [0x01, 0, 0x5e, 0, 0, 1] } else { mac(s) };
                std::iter::repeat_n(FrameAddrs { src, dst: mac(d), len: 60 + u32::from(d) }, k)
            })
            .take(300)
            .collect();
        let (a, b) = (batch_core(&assoc, &fdb), batch_core(&assoc, &fdb));
        let from = Sender {
            port: PortId::new(sender),
            channel: ch(assoc[sender as usize]),
            mac: locked.map(|m| vswitch_channels::MacAddr::new(mac(m))),
            mac_limit: limit,
            role: Role::Veb,
        };
        let now = a.fdb.now();

        // Frame by frame.
        let (reg, policy) = (a.registry.load(), a.policy.load());
        let mut want = Vec::new();
        let mut want_in = (0u64, 0u64, 0u64);
        let mut want_drops = Drops::default();
        for (i, f) in frames.iter().enumerate() {
            match plan_frame(&View { reg: &reg, policy: &policy, ports: &Default::default() }, &a.fdb, now, &from, f.src, f.dst, i as u16, &mut want) {
                Ingress::Accepted { flooded, .. } => {
                    want_in.0 += 1;
                    want_in.1 += u64::from(f.len);
                    want_in.2 += u64::from(flooded);
                }
                Ingress::Dropped(r) => want_drops.add(r, 1),
            }
        }
        want.sort_unstable();

        // Batched.
        let (reg, policy) = (b.registry.load(), b.policy.load());
        let mut scratch = Scratch::default();
        scratch.clear();
        let got = plan_batch(&View { reg: &reg, policy: &policy, ports: &Default::default() }, &b.fdb, now, &from, 0..frames.len(), |i| frames[i], &mut scratch);
        scratch.finish();
        prop_assert_eq!(&scratch.dests, &want);
        prop_assert_eq!((got.frames, got.bytes, got.flooded), want_in);
        prop_assert_eq!(got.drops, want_drops);
        prop_assert_eq!(got.frames + DropReason::ALL.iter().map(|&r| got.drops.get(r)).sum::<u64>(), frames.len() as u64);
        prop_assert_eq!(a.fdb.entries().len(), b.fdb.entries().len());
        for (x, y) in a.fdb.entries().iter().zip(b.fdb.entries().iter()) {
            prop_assert_eq!((x.channel, x.mac, x.port), (y.channel, y.mac, y.port));
        }
    }
}
