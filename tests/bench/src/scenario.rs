//! Scenarios and the topology each one builds: ports (channel, MAC), which ports get an
//! in-process guest, which guests generate to whom, which ones sink, and what the FDB holds
//! before traffic starts.

use serde::Serialize;

use crate::frames::{Load, MSS};

/// Length of the TSO scenarios' frames: 45 segments' worth of TCP payload and the headers.
pub const TSO_FRAME: usize = 45 * MSS + 54;

/// The S-VID of the first channel.
pub const BASE_CHANNEL: u16 = 100;

/// What a scenario varies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// Two ports in one channel; unidirectional or both ways.
    Pair { bidir: bool },
    /// `ports` ports as `ports / 2` generator → sink pairs, all active. `channels`: every pair
    /// in its own channel instead of all in one.
    Pairs { ports: usize, own_channels: bool },
    /// One generator rotating its destination MAC frame by frame over `ports - 1` sinks.
    Fanout { ports: usize },
    /// One pair; the FDB holds `macs` addresses behind the sink and the generator's
    /// destination MACs cycle through all of them.
    Macs { macs: usize },
    /// `channels` channels configured (one port in each besides the measured pair, every one
    /// learned in the FDB); traffic flows in the last one.
    Channels { channels: usize },
    /// Two hosts: guest 0 on host A generates to guest 1 on host B, one channel, across an
    /// uplink on a veth pair (or the kernel's VXLAN path between the same two hosts).
    TwoHost,
    /// Two ports; DPDK virtio-user frontends (dpdk-testpmd txonly on port 0, rxonly on port 1)
    /// instead of the test guests.
    DpdkFrontends,
    /// Two ports; two QEMU (TCG) guests, iperf3 from the one on port 0 to the one on port 1,
    /// TCP or UDP. `offloads`: the guests' virtio-net devices offer checksum and segmentation
    /// offloads (QEMU's default; used where the forwarder offers them too); without it every
    /// offload is off on the QEMU side ([`NO_OFFLOADS`]).
    Iperf3 { udp: bool, offloads: bool },
    /// One pair, unidirectional: 64 KiB TSO frames (IPv4/TCP, [`crate::frames::Load::Tso`]);
    /// the sink takes them whole, or with `segment` negotiates no offload, so the switch
    /// segments them in software.
    Tso { segment: bool },
}

/// The `-device virtio-net-pci` properties that turn every offload of QEMU 7.2's virtio-net
/// off (the same as tests/tests/qemu_offloads.rs).
pub const NO_OFFLOADS: &str = "csum=off,guest_csum=off,host_tso4=off,host_tso6=off,host_ecn=off,\
                               host_ufo=off,guest_tso4=off,guest_tso6=off,guest_ecn=off,guest_ufo=off";

/// One benchmark scenario.
#[derive(Debug, Clone, Serialize)]
pub struct Scenario {
    /// Short name used on the command line, in the table and in the plot.
    pub name: String,
    /// Ethernet frame length without FCS (the bytes a guest hands to virtio).
    pub frame_len: usize,
    /// What it varies.
    pub kind: Kind,
    /// The scenario whose baselines (memcpy, testpmd, OVS) this one is compared with.
    pub baseline_of: String,
    /// The scenario whose vswitch cost this one's cost is compared with (flat-cost bars).
    pub flat_ref: Option<String>,
}

impl Scenario {
    fn new(name: &str, frame_len: usize, kind: Kind) -> Self {
        let own_baseline = matches!(
            kind,
            Kind::Pair { .. }
                | Kind::TwoHost
                | Kind::DpdkFrontends
                | Kind::Iperf3 { .. }
                | Kind::Tso { .. }
        );
        let flat_ref = (!own_baseline).then(|| "64B-uni".to_string());
        Scenario {
            name: name.into(),
            frame_len,
            kind,
            baseline_of: if own_baseline {
                name.into()
            } else {
                "64B-uni".into()
            },
            flat_ref,
        }
    }

    /// True for the two-port scenarios every peer can run.
    pub fn is_pair(&self) -> bool {
        matches!(self.kind, Kind::Pair { .. })
    }

    /// True for the scenarios whose generator and sink are third-party frontends.
    pub fn is_third_party(&self) -> bool {
        matches!(self.kind, Kind::DpdkFrontends | Kind::Iperf3 { .. })
    }

    /// The frontends that generate and sink the traffic (every figure names them).
    pub fn frontend(&self) -> &'static str {
        match self.kind {
            Kind::DpdkFrontends => "DPDK virtio-user (testpmd txonly → testpmd rxonly)",
            Kind::Iperf3 { offloads: true, .. } => {
                "Linux virtio-net, QEMU TCG guests (iperf3), offloads as negotiated"
            }
            Kind::Iperf3 {
                offloads: false, ..
            } => "Linux virtio-net, QEMU TCG guests (iperf3), offloads off in QEMU",
            _ => "in-process test guest (vswitch-testguest)",
        }
    }

    /// True for the iperf3 TCP scenarios whose guests offer checksum and segmentation offloads
    /// (the ones the TSO-enabled peers are measured with).
    pub fn offers_offloads(&self) -> bool {
        matches!(
            self.kind,
            Kind::Iperf3 {
                udp: false,
                offloads: true
            }
        )
    }

    /// What the in-process generators send.
    pub fn load(&self) -> Load {
        match self.kind {
            Kind::Tso { segment } => Load::Tso {
                len: self.frame_len,
                segment,
            },
            _ => Load::Plain {
                len: self.frame_len,
            },
        }
    }

    /// True for the scenarios across two hosts (only the two-host peers run them).
    pub fn is_two_host(&self) -> bool {
        self.kind == Kind::TwoHost
    }

    /// The topology of this scenario.
    pub fn topology(&self) -> Topology {
        Topology::build(self)
    }
}

/// Every scenario, in table order.
pub fn all() -> Vec<Scenario> {
    use Kind::*;
    vec![
        Scenario::new("64B-uni", 64, Pair { bidir: false }),
        Scenario::new("1518B-uni", 1518, Pair { bidir: false }),
        Scenario::new("64B-bi", 64, Pair { bidir: true }),
        Scenario::new("1518B-bi", 1518, Pair { bidir: true }),
        Scenario::new(
            "ports-8",
            64,
            Pairs {
                ports: 8,
                own_channels: false,
            },
        ),
        Scenario::new(
            "ports-32",
            64,
            Pairs {
                ports: 32,
                own_channels: false,
            },
        ),
        Scenario::new(
            "ports-64",
            64,
            Pairs {
                ports: 64,
                own_channels: false,
            },
        ),
        Scenario::new("fanout-8", 64, Fanout { ports: 8 }),
        Scenario::new("fanout-64", 64, Fanout { ports: 64 }),
        Scenario::new("macs-1k", 64, Macs { macs: 1000 }),
        Scenario::new("macs-10k", 64, Macs { macs: 10_000 }),
        Scenario::new("chan-100", 64, Channels { channels: 100 }),
        Scenario::new(
            "chan-32-pairs",
            64,
            Pairs {
                ports: 64,
                own_channels: true,
            },
        ),
        Scenario::new("2host-64B", 64, TwoHost),
        Scenario::new("2host-1518B", 1518, TwoHost),
        Scenario::new("dpdk-64B", 64, DpdkFrontends),
        Scenario::new("dpdk-1518B", 1518, DpdkFrontends),
        // 45 full segments of 1448 bytes plus the headers: the IP length stays below 64 KiB.
        Scenario::new("64KiB-tso", TSO_FRAME, Tso { segment: false }),
        Scenario::new("64KiB-tso-swseg", TSO_FRAME, Tso { segment: true }),
        // Nominal: the guests' MTU is 1500, so their largest frames are 1514 bytes.
        Scenario::new(
            "iperf3-tcp",
            1514,
            Iperf3 {
                udp: false,
                offloads: true,
            },
        ),
        Scenario::new(
            "iperf3-tcp-nooffload",
            1514,
            Iperf3 {
                udp: false,
                offloads: false,
            },
        ),
        Scenario::new(
            "iperf3-udp",
            1514,
            Iperf3 {
                udp: true,
                offloads: true,
            },
        ),
    ]
}

/// A switch port of the topology.
#[derive(Debug, Clone)]
pub struct PortDef {
    /// The S-VID of its channel.
    pub channel: u16,
    /// The VM's MAC (the port is locked to it on the vswitch).
    pub mac: [u8; 6],
    /// Whether an in-process guest attaches (idle ports only exist in the configuration).
    pub guest: bool,
    /// Extra MACs the FDB holds behind this port before traffic starts.
    pub extra_macs: Vec<[u8; 6]>,
    /// The host whose switch it is on (0 but in the two-host scenarios: 0 is A, 1 is B).
    pub host: usize,
}

/// What one guest does.
#[derive(Debug, Clone)]
pub struct GuestRole {
    /// Index of its port.
    pub port: usize,
    /// Destination MACs it sends to, cycled frame by frame (empty: it does not send).
    pub dst_macs: Vec<[u8; 6]>,
    /// The ports whose guests receive what it sends (for flow control).
    pub dst_ports: Vec<usize>,
    /// Whether it counts and recycles what it receives.
    pub sink: bool,
}

impl GuestRole {
    /// A guest on `port` sending to `dst_macs` (received by the guests of `dst_ports`) that
    /// does not sink what it receives.
    fn sender(port: usize, dst_macs: Vec<[u8; 6]>, dst_ports: Vec<usize>) -> Self {
        Self {
            port,
            dst_macs,
            dst_ports,
            sink: false,
        }
    }

    /// A guest on `port` that only counts and recycles what it receives.
    fn sink(port: usize) -> Self {
        Self {
            port,
            dst_macs: vec![],
            dst_ports: vec![],
            sink: true,
        }
    }
}

/// Ports and the guests' roles, grouped by the traffic thread that drives them.
#[derive(Debug, Clone)]
pub struct Topology {
    /// Ports, guest-less ones included.
    pub ports: Vec<PortDef>,
    /// Traffic threads (all pinned to the generator CPU), each with the guests it owns.
    pub threads: Vec<Vec<GuestRole>>,
}

/// A locally administered unicast MAC numbered `n` in family `fam`.
pub fn mac(fam: u8, n: u32) -> [u8; 6] {
    let b = n.to_be_bytes();
    [0x02, fam, b[0], b[1], b[2], b[3]]
}

impl Topology {
    fn port(channel: u16, n: usize) -> PortDef {
        PortDef {
            channel,
            mac: mac(0, n as u32),
            guest: true,
            extra_macs: Vec::new(),
            host: 0,
        }
    }

    /// Port 0's guest sends to `dst_macs` on port 1, whose guest sinks: one thread each.
    fn one_way(ports: Vec<PortDef>, dst_macs: Vec<[u8; 6]>) -> Topology {
        Topology {
            ports,
            threads: vec![
                vec![GuestRole::sender(0, dst_macs, vec![1])],
                vec![GuestRole::sink(1)],
            ],
        }
    }

    fn build(s: &Scenario) -> Topology {
        let c = BASE_CHANNEL;
        match s.kind {
            Kind::DpdkFrontends | Kind::Iperf3 { .. } | Kind::Tso { .. } => Self::build(
                &Scenario::new(&s.name, s.frame_len, Kind::Pair { bidir: false }),
            ),
            Kind::TwoHost => {
                let mut t = Self::build(&Scenario::new(
                    &s.name,
                    s.frame_len,
                    Kind::Pair { bidir: false },
                ));
                t.ports[1].host = 1;
                t
            }
            Kind::Pair { bidir } => {
                let ports = vec![Self::port(c, 0), Self::port(c, 1)];
                let (m0, m1) = (ports[0].mac, ports[1].mac);
                if !bidir {
                    return Self::one_way(ports, vec![m1]);
                }
                let both = |port, dst: [u8; 6], dst_port| GuestRole {
                    sink: true,
                    ..GuestRole::sender(port, vec![dst], vec![dst_port])
                };
                Topology {
                    ports,
                    threads: vec![vec![both(0, m1, 1)], vec![both(1, m0, 0)]],
                }
            }
            Kind::Pairs {
                ports: n,
                own_channels,
            } => {
                let pairs = n / 2;
                let mut ports = Vec::new();
                for p in 0..pairs {
                    let ch = if own_channels { c + p as u16 } else { c };
                    ports.push(Self::port(ch, 2 * p));
                    ports.push(Self::port(ch, 2 * p + 1));
                }
                let gens = (0..pairs)
                    .map(|p| GuestRole::sender(2 * p, vec![ports[2 * p + 1].mac], vec![2 * p + 1]))
                    .collect();
                let sinks = (0..pairs).map(|p| GuestRole::sink(2 * p + 1)).collect();
                Topology {
                    ports,
                    threads: vec![gens, sinks],
                }
            }
            Kind::Fanout { ports: n } => {
                let ports: Vec<PortDef> = (0..n).map(|i| Self::port(c, i)).collect();
                let gen = GuestRole::sender(
                    0,
                    ports[1..].iter().map(|p| p.mac).collect(),
                    (1..n).collect(),
                );
                let sinks = (1..n).map(GuestRole::sink).collect();
                Topology {
                    ports,
                    threads: vec![vec![gen], sinks],
                }
            }
            Kind::Macs { macs } => {
                let mut ports = vec![Self::port(c, 0), Self::port(c, 1)];
                // The sink's own MAC counts as one of them.
                ports[1].extra_macs = (1..macs).map(|i| mac(1, i as u32)).collect();
                let mut dst = vec![ports[1].mac];
                dst.extend(ports[1].extra_macs.iter().copied());
                Self::one_way(ports, dst)
            }
            Kind::Channels { channels } => {
                // Idle channels first, the measured pair in the last channel.
                let last = c + channels as u16 - 1;
                let mut ports = vec![Self::port(last, 0), Self::port(last, 1)];
                for k in 0..channels - 1 {
                    let mut p = Self::port(c + k as u16, 2 + k);
                    p.guest = false;
                    ports.push(p);
                }
                let m1 = ports[1].mac;
                Self::one_way(ports, vec![m1])
            }
        }
    }
}
