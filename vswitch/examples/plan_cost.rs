//! Repeatable per-frame cost of forwarding planning, for instruction counters (callgrind):
//! plans one 256-frame batch from one source MAC to `MACS` destination MACs cycling frame by
//! frame (all learned behind one other port), `ITERS` times.
//!
//! `valgrind --tool=callgrind target/release/examples/plan_cost MACS ITERS [reference]`; run it
//! with ITERS = 0 as well and divide the difference by ITERS × 256 for instructions per frame.
//! `reference` runs the frame-by-frame planning forward_batch did before `plan_batch`.

use std::hint::black_box;

use vswitch::core::{Core, View};
use vswitch::forward::{plan_batch, plan_frame, FrameAddrs, Ingress, Role, Scratch, Sender};
use vswitch::SwitchSettings;
use vswitch_channels::{ChannelId, ChannelInfo, Policy, PortId, VmId};

const BATCH: u32 = 256;

/// The previous frame's (src, dst, decision, its destinations' range).
type Prev = ([u8; 6], [u8; 6], Ingress, usize, usize);

fn mac(i: u32) -> [u8; 6] {
    let b = i.to_be_bytes();
    [0x52, 0x54, b[0], b[1], b[2], b[3]]
}

fn main() {
    let mut args = std::env::args().skip(1);
    let macs: u32 = args.next().and_then(|a| a.parse().ok()).unwrap_or(1);
    let iters: u32 = args.next().and_then(|a| a.parse().ok()).unwrap_or(1000);
    let reference = args.next().as_deref() == Some("reference");
    let ch = ChannelId::new(100).expect("valid channel");
    let core = Core::new(SwitchSettings::default(), Policy::default());
    for p in 0..2 {
        core.registry
            .associate(VmId::port(PortId::new(p)), ChannelInfo::veb(ch))
            .expect("associate");
    }
    let now = core.fdb.now();
    let src = mac(0);
    core.fdb.learn(ch, &src, PortId::new(0), u32::MAX, now);
    for i in 1..=macs {
        core.fdb.learn(ch, &mac(i), PortId::new(1), u32::MAX, now);
    }
    let reg = core.registry.load_full();
    let policy = core.policy.load_full();
    let from = Sender {
        port: PortId::new(0),
        channel: ch,
        mac: None,
        mac_limit: u32::MAX,
        role: Role::Veb,
    };
    // Destinations cycle over all MACs across batches, as in the macs-N scenarios of vswitch-bench
    // (tests/bench).
    let all: Vec<([u8; 6], [u8; 6])> = (0..macs + BATCH)
        .map(|i| (src, mac(1 + i % macs)))
        .collect();
    let mut dests: Vec<(u32, u16)> = Vec::with_capacity(4096);
    let mut scratch = Scratch::default();
    let mut total = 0u64;
    for it in 0..iters {
        let off = (it * BATCH % macs) as usize;
        let frames = &all[off..off + BATCH as usize];
        if !reference {
            let frames = black_box(frames);
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
                |i| FrameAddrs {
                    src: frames[i].0,
                    dst: frames[i].1,
                    len: 64,
                },
                &mut scratch,
            );
            total += r.frames + scratch.dests.len() as u64;
            continue;
        }
        dests.clear();
        // The planning loop of forward_batch before batching (reuse for a repeated flow).
        let mut prev: Option<Prev> = None;
        for (i, &(s, d)) in black_box(frames).iter().enumerate() {
            let idx = i as u16;
            let r = match prev {
                Some(p) if p.0 == s && p.1 == d => {
                    for k in p.3..p.4 {
                        let q = dests[k].0;
                        dests.push((q, idx));
                    }
                    p.2
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
                        s,
                        d,
                        idx,
                        &mut dests,
                    );
                    prev = Some((s, d, r, start, dests.len()));
                    r
                }
            };
            if let Ingress::Accepted { copies, .. } = r {
                total += u64::from(copies);
            }
        }
        dests.sort_unstable();
        total += dests.len() as u64;
    }
    println!("{total}");
}
