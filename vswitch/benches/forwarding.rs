//! Micro benchmarks of the per-packet decisions: FDB lookup and learning at 1, 1k and 10k MACs
//! (with a `HashMap` baseline measured in the same run), the forwarding plan, and the delivery
//! check; `plan_batch`: planning a 256-frame batch from one source MAC to 1, 1k or 10k
//! destination MACs cycling frame by frame (the macs-N scenarios), batched (`plan_batch`, what
//! the datapath runs) and frame by frame (`plan_frame` with the previous frame's decision
//! reused, as the datapath did before). Criterion reports time per batch; divide by 256 for
//! ns/frame. Instruction counts: `examples/plan_cost.rs`. End-to-end throughput is
//! `vswitch-bench` (tests/bench, docs/performance.md).

use std::collections::HashMap;
use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use vswitch::core::{Core, PolicyTable, View};
use vswitch::fdb::Fdb;
use vswitch::forward::{
    may_enter, plan_batch, plan_frame, DestKind, FrameAddrs, Ingress, Role, Scratch, Sender,
};
use vswitch::SwitchSettings;
use vswitch_channels::{ChannelId, ChannelInfo, Policy, PortId, VmId};

fn ch(n: u16) -> ChannelId {
    ChannelId::new(n).expect("valid channel")
}

fn mac(i: u32) -> [u8; 6] {
    let b = i.to_be_bytes();
    [0x52, 0x54, b[0], b[1], b[2], b[3]]
}

const BATCH: u32 = 64;

fn fdb_lookup(c: &mut Criterion) {
    let mut g = c.benchmark_group("fdb_lookup");
    g.throughput(Throughput::Elements(u64::from(BATCH)));
    for n in [1u32, 1_000, 10_000] {
        let fdb = Fdb::new(1 << 17, 300);
        let now = fdb.now();
        let mut baseline: HashMap<(u16, [u8; 6]), u32> = HashMap::new();
        for i in 0..n {
            fdb.learn(ch(100), &mac(i), PortId::new(i % 64), u32::MAX, now);
            baseline.insert((100, mac(i)), i % 64);
        }
        let keys: Vec<[u8; 6]> = (0..BATCH).map(|i| mac((i * 7919) % n)).collect();
        g.bench_with_input(BenchmarkId::new("fdb", n), &n, |b, _| {
            b.iter(|| {
                let mut hits = 0u32;
                for k in &keys {
                    hits += u32::from(fdb.lookup(ch(100), black_box(k), now).is_some());
                }
                hits
            })
        });
        g.bench_with_input(BenchmarkId::new("std_hashmap_baseline", n), &n, |b, _| {
            b.iter(|| {
                let mut hits = 0u32;
                for k in &keys {
                    hits += u32::from(baseline.contains_key(&(100, *black_box(k))));
                }
                hits
            })
        });
    }
    g.finish();
}

fn plan_and_check(c: &mut Criterion) {
    let mut g = c.benchmark_group("plan_and_check");
    g.throughput(Throughput::Elements(u64::from(BATCH)));
    for (ports, macs) in [(2u32, 1u32), (64, 1), (2, 10_000)] {
        let core = Core::new(SwitchSettings::default(), Policy::default());
        for p in 0..ports {
            core.registry
                .associate(VmId::port(PortId::new(p)), ChannelInfo::veb(ch(100)))
                .expect("associate");
        }
        let now = core.fdb.now();
        for i in 0..macs.max(ports) {
            core.fdb
                .learn(ch(100), &mac(i), PortId::new(i % ports), u32::MAX, now);
        }
        let reg = core.registry.load_full();
        let policy = PolicyTable::new(Policy::default());
        let from = Sender {
            port: PortId::new(0),
            channel: ch(100),
            mac: None,
            mac_limit: u32::MAX,
            role: Role::Veb,
        };
        let src = mac(0);
        let dsts: Vec<[u8; 6]> = (0..BATCH)
            .map(|i| mac(1 + (i * 7919) % (macs.max(ports) - 1).max(1)))
            .collect();
        let mut dests = Vec::with_capacity(4096);
        g.bench_function(format!("{ports}_ports_{macs}_macs"), |b| {
            b.iter(|| {
                dests.clear();
                for (i, d) in dsts.iter().enumerate() {
                    plan_frame(
                        &View {
                            reg: &reg,
                            policy: &policy,
                            ports: &Default::default(),
                        },
                        &core.fdb,
                        now,
                        &from,
                        src,
                        *d,
                        i as u16,
                        &mut dests,
                    );
                }
                let mut ok = 0u32;
                for &(q, _) in &dests {
                    ok += u32::from(
                        may_enter(&reg, &policy, ch(100), PortId::new(q), DestKind::Vm).is_ok(),
                    );
                }
                ok
            })
        });
    }
    g.finish();
}

const PLAN_BATCH: u32 = 256;

fn plan_batch_macs(c: &mut Criterion) {
    let mut g = c.benchmark_group("plan_batch");
    g.throughput(Throughput::Elements(u64::from(PLAN_BATCH)));
    for macs in [1u32, 1_000, 10_000] {
        let core = Core::new(SwitchSettings::default(), Policy::default());
        for p in 0..2 {
            core.registry
                .associate(VmId::port(PortId::new(p)), ChannelInfo::veb(ch(100)))
                .expect("associate");
        }
        let now = core.fdb.now();
        let src = mac(0);
        core.fdb.learn(ch(100), &src, PortId::new(0), u32::MAX, now);
        for i in 1..=macs {
            core.fdb
                .learn(ch(100), &mac(i), PortId::new(1), u32::MAX, now);
        }
        let reg = core.registry.load_full();
        let policy = core.policy.load_full();
        let from = Sender {
            port: PortId::new(0),
            channel: ch(100),
            mac: None,
            mac_limit: u32::MAX,
            role: Role::Veb,
        };
        // Consecutive batches continue the cycle over all MACs.
        let all: Vec<FrameAddrs> = (0..macs + PLAN_BATCH)
            .map(|i| FrameAddrs {
                src,
                dst: mac(1 + i % macs),
                len: 64,
            })
            .collect();
        let batch = PLAN_BATCH as usize;
        let mut off = 0usize;
        let mut scratch = Scratch::default();
        g.bench_with_input(BenchmarkId::new("batched", macs), &macs, |b, _| {
            b.iter(|| {
                let frames = black_box(&all[off..off + batch]);
                off = (off + batch) % macs as usize;
                scratch.clear();
                let r = plan_batch(
                    &View {
                        reg: &reg,
                        policy: &policy,
                        ports: &Default::default(),
                    },
                    &core.fdb,
                    now,
                    &from,
                    0..frames.len(),
                    |i| frames[i],
                    &mut scratch,
                );
                r.frames + scratch.dests.len() as u64
            })
        });
        let mut off = 0usize;
        let mut dests: Vec<(u32, u16)> = Vec::with_capacity(4096);
        g.bench_with_input(BenchmarkId::new("per_frame", macs), &macs, |b, _| {
            b.iter(|| {
                let frames = black_box(&all[off..off + batch]);
                off = (off + batch) % macs as usize;
                dests.clear();
                let mut prev: Option<(FrameAddrs, Ingress, usize, usize)> = None;
                let mut accepted = 0u64;
                for (i, f) in frames.iter().enumerate() {
                    let idx = i as u16;
                    let r = match prev {
                        Some((p, r, start, end)) if p.src == f.src && p.dst == f.dst => {
                            for k in start..end {
                                let q = dests[k].0;
                                dests.push((q, idx));
                            }
                            r
                        }
                        _ => {
                            let start = dests.len();
                            let r = plan_frame(
                                &View {
                                    reg: &reg,
                                    policy: &policy,
                                    ports: &Default::default(),
                                },
                                &core.fdb,
                                now,
                                &from,
                                f.src,
                                f.dst,
                                idx,
                                &mut dests,
                            );
                            prev = Some((*f, r, start, dests.len()));
                            r
                        }
                    };
                    accepted += u64::from(matches!(r, Ingress::Accepted { .. }));
                }
                dests.sort_unstable();
                accepted + dests.len() as u64
            })
        });
    }
    g.finish();
}

criterion_group!(benches, fdb_lookup, plan_and_check, plan_batch_macs);
criterion_main!(benches);
