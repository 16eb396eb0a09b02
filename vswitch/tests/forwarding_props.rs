//! Property: for any sequence of frames, (dis)associations, policy changes and FDB poisoning,
//! no frame is ever delivered to a port whose channel the policy does not admit.
//!
//! The forwarding plan ([`plan_frame`]) and the delivery check ([`admit`]) are the exact
//! functions the datapath runs; the property drives them against a model of the registry.

use std::collections::HashMap;

use proptest::prelude::*;
use vswitch::forward::{admit, plan_frame, Ingress, Sender};
use vswitch::switch::{Core, PolicyTable};
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
                    let from = Sender { port: PortId::new(p), channel: info.id, mac: None, mac_limit: u32::MAX };
                    dests.clear();
                    let now = core.fdb.now();
                    let ing = plan_frame(&reg, &policy, &core.fdb, now, &from, mac(s), mac(d), 0, &mut dests);
                    if let Ingress::Accepted { copies, .. } = ing {
                        prop_assert_eq!(copies as usize, dests.len());
                    }
                    for &(q, _) in &dests {
                        let q = PortId::new(q);
                        prop_assert_ne!(q, from.port, "never back to the sender");
                        if let Ok(dest_channel) = admit(&reg, &policy, from.channel, q) {
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
