//! Property tests of the registry against a model: after every acknowledged update, a freshly
//! loaded snapshot agrees with the model exactly (no stale channel), and `ports_in` is the
//! model's sorted membership.

use std::collections::{BTreeMap, HashMap};

use proptest::prelude::*;
use vswitch_channels::{
    ChannelId, ChannelInfo, ChannelMode, MacAddr, PortId, Registry, RegistryError, VmId,
};

#[derive(Debug, Clone)]
enum Op {
    Associate(VmId, ChannelInfo),
    Disassociate(PortId),
}

/// Few ports and channels, so that operations collide often; occasionally a sparse port, a port
/// beyond the limit and a group MAC, to exercise growing/trimming and the error paths. (The
/// largest valid port is covered by unit tests: each update copies 64 Ki slots, slow here.)
fn op() -> impl Strategy<Value = Op> {
    let port = prop_oneof![
        40 => (0u32..12).prop_map(PortId),
        1 => Just(PortId(1000)),
        1 => Just(PortId(Registry::MAX_PORT + 1)),
    ];
    let mac = prop::option::of(any::<[u8; 6]>().prop_map(MacAddr));
    let chan = prop_oneof![1u16..=5, 4090u16..=4094]
        .prop_filter_map("valid S-VID", |v| ChannelId::new(v).ok());
    let mode = prop_oneof![Just(ChannelMode::Veb), Just(ChannelMode::Vepa)];
    prop_oneof![
        3 => (port.clone(), mac, chan, mode)
            .prop_map(|(p, m, c, mode)| Op::Associate(VmId::new(p, m), ChannelInfo::new(c, mode))),
        2 => port.prop_map(Op::Disassociate),
    ]
}

fn check(
    r: &Registry,
    model: &HashMap<PortId, (VmId, ChannelInfo)>,
    generation: u64,
) -> Result<(), TestCaseError> {
    let s = r.load();
    prop_assert_eq!(s.generation(), generation);
    prop_assert_eq!(r.generation(), generation);
    prop_assert_eq!(s.len(), model.len());
    for p in (0u32..14).chain([1000, Registry::MAX_PORT, Registry::MAX_PORT + 1]) {
        let p = PortId(p);
        prop_assert_eq!(s.channel_of(p), model.get(&p).map(|e| e.1));
        prop_assert_eq!(s.vm_of(p), model.get(&p).map(|e| e.0));
    }
    let mut members: BTreeMap<ChannelId, Vec<PortId>> = BTreeMap::new();
    for (p, (_, info)) in model {
        members.entry(info.id).or_default().push(*p);
    }
    for ports in members.values_mut() {
        ports.sort();
    }
    for v in (1u16..=6).chain(4089..=4094) {
        let c = ChannelId::new(v).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(
            s.ports_in(c),
            members.get(&c).map_or(&[][..], |v| v.as_slice())
        );
    }
    let listed: Vec<_> = s.channels().map(|(c, p)| (c, p.to_vec())).collect();
    let expected: Vec<_> = members.into_iter().collect();
    prop_assert_eq!(listed, expected);
    let entries = r.entries();
    prop_assert_eq!(entries.len(), model.len());
    prop_assert!(entries.windows(2).all(|w| w[0].vm.port < w[1].vm.port));
    for e in entries {
        prop_assert_eq!(model.get(&e.vm.port), Some(&(e.vm, e.info)));
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn snapshots_never_stale(ops in prop::collection::vec(op(), 0..60)) {
        let r = Registry::new();
        let mut model: HashMap<PortId, (VmId, ChannelInfo)> = HashMap::new();
        let mut generation = 0u64;
        check(&r, &model, generation)?;
        for op in ops {
            match op {
                Op::Associate(vm, info) => {
                    let res = r.associate(vm, info);
                    if vm.port.get() > Registry::MAX_PORT {
                        prop_assert_eq!(res, Err(RegistryError::PortOutOfRange { port: vm.port, max: Registry::MAX_PORT }));
                    } else if let Some(mac) = vm.mac.filter(MacAddr::is_multicast) {
                        prop_assert_eq!(res, Err(RegistryError::GroupMac { port: vm.port, mac }));
                    } else {
                        generation += 1;
                        prop_assert_eq!(res, Ok(generation));
                        model.insert(vm.port, (vm, info));
                    }
                }
                Op::Disassociate(port) => {
                    let res = r.disassociate(port);
                    if model.remove(&port).is_some() {
                        generation += 1;
                        prop_assert_eq!(res, Ok(generation));
                    } else {
                        prop_assert_eq!(res, Err(RegistryError::NotAssociated { port }));
                    }
                }
            }
            check(&r, &model, generation)?;
        }
    }
}
