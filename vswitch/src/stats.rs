//! Read-only views for the control API and logs: ports, uplinks, FDB, counters, Prometheus
//! text.

use serde::Serialize;
use vswitch_vhost::{PortStatsSnapshot, QueuePairSnapshot};

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::counters::{CountersSnapshot, DropReason, Drops};
use crate::uplink::{Transport, UplinkConfig};

/// A port, for listing.
#[derive(Debug, Clone, Serialize)]
pub struct PortInfo {
    /// Port id.
    pub id: u32,
    /// Name.
    pub name: String,
    /// `vm` (uplinks are listed as [`UplinkInfo`], `uplink`).
    pub kind: &'static str,
    /// Socket path.
    pub socket: String,
    /// `listen` or `connect`.
    pub role: String,
    /// Channel, if associated.
    pub channel: Option<u16>,
    /// `veb` or `vepa` (802.1Qbg channel mode).
    pub channel_mode: &'static str,
    /// Configured MAC.
    pub mac: Option<String>,
    /// MAC limit.
    pub mac_limit: u32,
    /// Queue pairs offered (`queues=`).
    pub queues: u16,
    /// A frontend is connected.
    pub connected: bool,
    /// The guest broke its TX ring (avail index jump): the port's TX is parked until the
    /// frontend resets the ring or reconnects.
    pub tx_broken: bool,
    /// Transmit rate limit, Mbit/s (`rate=`, `set-rate`), if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate_mbit: Option<u32>,
    /// Its burst, KB, if set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub burst_kb: Option<u32>,
    /// Frame-rate limit, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pps: Option<u32>,
}

/// An uplink, for listing beside the ports. The transport's fields are there when the
/// uplink's configuration is known ([`UplinkInfo::with_config`]).
#[derive(Debug, Clone, Serialize)]
pub struct UplinkInfo {
    /// Port id.
    pub id: u32,
    /// Name.
    pub name: String,
    /// `uplink`.
    pub kind: &'static str,
    /// `dot1ad` or `vxlan`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transport: Option<&'static str>,
    /// dot1ad: the interface.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interface: Option<String>,
    /// vxlan: the local address and UDP port.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub local: Option<String>,
    /// vxlan: the remote VTEPs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remotes: Option<Vec<String>>,
    /// The channels carried, as ranges: `1-4094`, `100+200-299`.
    pub channels: String,
    /// 802.1Qbg reflective relay (a frame may go back out of the uplink it came in on).
    pub reflective_relay: bool,
    /// MAC limit.
    pub mac_limit: u32,
    /// The MTU it carries for guests.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u16>,
}

impl UplinkInfo {
    /// With the transport's fields of `cfg`.
    pub fn with_config(mut self, cfg: &UplinkConfig) -> UplinkInfo {
        match &cfg.transport {
            Transport::Dot1ad { interface, .. } => {
                self.transport = Some("dot1ad");
                self.interface = Some(interface.clone());
            }
            Transport::Vxlan { local, remotes } => {
                self.transport = Some("vxlan");
                self.local = Some(local.to_string());
                self.remotes = Some(remotes.iter().map(ToString::to_string).collect());
            }
        }
        self.mtu = Some(cfg.mtu);
        self
    }
}

/// One line saying what an uplink runs over, for logs: `dot1ad on eth1`,
/// `vxlan from 192.0.2.1:4789 to 192.0.2.2, 192.0.2.3`.
pub fn transport_text(t: &Transport) -> String {
    match t {
        Transport::Dot1ad { interface, .. } => format!("dot1ad on {interface}"),
        Transport::Vxlan { local, remotes } => {
            let to: Vec<String> = remotes.iter().map(ToString::to_string).collect();
            format!("vxlan from {local} to {}", to.join(", "))
        }
    }
}

/// An FDB entry, for listing.
#[derive(Debug, Clone, Serialize)]
pub struct FdbEntryInfo {
    /// Channel.
    pub channel: u16,
    /// MAC.
    pub mac: String,
    /// Port name.
    pub port: String,
    /// Seconds since last seen (0 for a static entry).
    pub age_s: u32,
    /// The port's configured MAC (`mac=`): never aged, never moved by traffic.
    #[serde(rename = "static")]
    pub is_static: bool,
}

/// What the switch holds now (not counted over time), for the Prometheus gauges.
#[derive(Debug, Clone, Default)]
pub struct StateGauges {
    /// FDB entries (learned and static) per channel.
    pub fdb_entries: std::collections::BTreeMap<u16, u64>,
    /// Per VM port: name, a frontend is connected, its TX ring is parked.
    pub ports: Vec<(String, bool, bool)>,
}

/// Counters of one port.
#[derive(Debug, Clone, Serialize)]
pub struct PortStatsOut {
    /// Port name.
    pub name: String,
    /// Channel, if associated.
    pub channel: Option<u16>,
    /// Switch-level counters (ingress, delivery, drops by reason).
    pub switch: CountersSnapshot,
    /// vhost-level counters (rings, descriptors, notifications).
    #[serde(serialize_with = "ser_port")]
    pub port: PortStatsSnapshot,
    /// The traffic of each queue pair (pair 0 first; docs/multiqueue.md).
    #[serde(serialize_with = "ser_queues")]
    pub queues: Vec<QueuePairSnapshot>,
}

/// Each queue pair's counters as an object: `queue` (the pair's number), then the counters
/// keyed by name, in field order.
fn ser_queues<S: serde::Serializer>(q: &[QueuePairSnapshot], s: S) -> Result<S::Ok, S::Error> {
    use serde::ser::{SerializeMap, SerializeSeq};
    struct Pair<'a>(usize, &'a QueuePairSnapshot);
    impl Serialize for Pair<'_> {
        fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            let mut m = s.serialize_map(Some(QueuePairSnapshot::FIELDS.len() + 1))?;
            m.serialize_entry("queue", &self.0)?;
            for (name, value) in QueuePairSnapshot::FIELDS.iter().zip(self.1.values()) {
                m.serialize_entry(name, &value)?;
            }
            m.end()
        }
    }
    let mut seq = s.serialize_seq(Some(q.len()))?;
    for (k, pair) in q.iter().enumerate() {
        seq.serialize_element(&Pair(k, pair))?;
    }
    seq.end()
}

/// The vhost-level counters as an object keyed by counter name, in field order.
fn ser_port<S: serde::Serializer>(p: &PortStatsSnapshot, s: S) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeMap;
    let mut m = s.serialize_map(Some(PortStatsSnapshot::FIELDS.len()))?;
    for (field, value) in p.fields() {
        m.serialize_entry(field.name, &value)?;
    }
    m.end()
}

/// Counters of one uplink.
#[derive(Debug, Clone, Serialize)]
pub struct UplinkStatsOut {
    /// Uplink name.
    pub name: String,
    /// The channels carried, as ranges.
    pub channels: String,
    /// Switch-level counters (frames in from the wire, out to it, drops by reason).
    pub switch: CountersSnapshot,
}

/// Counters of one channel.
#[derive(Debug, Clone, Serialize)]
pub struct ChannelStats {
    /// S-VID.
    pub channel: u16,
    /// Ports associated with it now.
    pub ports: usize,
    /// Counters.
    pub counters: CountersSnapshot,
}

/// Everything countable.
#[derive(Debug, Clone, Serialize)]
pub struct SwitchStats {
    /// Per VM port.
    pub ports: Vec<PortStatsOut>,
    /// Per uplink.
    pub uplinks: Vec<UplinkStatsOut>,
    /// Per channel (channels with members or traffic).
    pub channels: Vec<ChannelStats>,
}

impl SwitchStats {
    /// The counters of the port named `name`.
    pub fn port(&self, name: &str) -> Option<&PortStatsOut> {
        self.ports.iter().find(|p| p.name == name)
    }

    /// The counters of the uplink named `name`.
    pub fn uplink(&self, name: &str) -> Option<&UplinkStatsOut> {
        self.uplinks.iter().find(|u| u.name == name)
    }

    /// The counters of channel `svid`.
    pub fn channel(&self, svid: u16) -> Option<&ChannelStats> {
        self.channels.iter().find(|c| c.channel == svid)
    }

    /// One log line per port, per uplink and per channel.
    pub fn log_lines(&self) -> Vec<String> {
        let mut out = Vec::new();
        for p in &self.ports {
            out.push(format!(
                "port {} ch={} in={}/{}B out={}/{}B flooded={} drops[{}]",
                p.name,
                p.channel.map_or("-".into(), |c| c.to_string()),
                p.switch.in_frames,
                p.switch.in_bytes,
                p.switch.out_frames,
                p.switch.out_bytes,
                p.switch.flooded,
                drops_text(&p.switch)
            ));
        }
        for u in &self.uplinks {
            out.push(format!(
                "uplink {} channels={} in={}/{}B out={}/{}B flooded={} drops[{}]",
                u.name,
                u.channels,
                u.switch.in_frames,
                u.switch.in_bytes,
                u.switch.out_frames,
                u.switch.out_bytes,
                u.switch.flooded,
                drops_text(&u.switch)
            ));
        }
        for c in &self.channels {
            out.push(format!(
                "channel {} ports={} in={} out={} flooded={} drops[{}]",
                c.channel,
                c.ports,
                c.counters.in_frames,
                c.counters.out_frames,
                c.counters.flooded,
                drops_text(&c.counters)
            ));
        }
        out
    }

    /// Prometheus text exposition format (OpenMetrics), encoded by prometheus-client from
    /// this snapshot.
    pub fn prometheus(&self) -> String {
        self.prometheus_with(None)
    }

    /// [`SwitchStats::prometheus`], with the gauges of `state` (FDB size, connection state)
    /// where given.
    pub fn prometheus_with(&self, state: Option<&StateGauges>) -> String {
        type Labels = Vec<(&'static str, String)>;
        let mut reg = Registry::with_prefix("vswitch");
        if let Some(state) = state {
            register_gauges(&mut reg, state);
        }
        let mut family = |name: &str, help: &str, values: Vec<(Labels, u64)>| {
            let f = Family::<Labels, Counter>::default();
            for (labels, v) in values {
                f.get_or_create(&labels).inc_by(v);
            }
            reg.register(name, help, f);
        };
        let port = |p: &PortStatsOut| vec![("port", p.name.clone())];
        let chan = |c: &ChannelStats| vec![("channel", c.channel.to_string())];
        // Each port's and each uplink's labels and counters.
        let ports: Vec<(Labels, &CountersSnapshot)> =
            self.ports.iter().map(|p| (port(p), &p.switch)).collect();
        let uplinks: Vec<(Labels, &CountersSnapshot)> = self
            .uplinks
            .iter()
            .map(|u| (vec![("uplink", u.name.clone())], &u.switch))
            .collect();
        let each = |of: &[(Labels, &CountersSnapshot)], get: fn(&CountersSnapshot) -> u64| {
            of.iter().map(|(l, c)| (l.clone(), get(c))).collect()
        };
        for (name, get, help, _) in SIDE_COUNTERS {
            family(&format!("port_{name}"), help, each(&ports, get));
        }
        for (i, field) in PortStatsSnapshot::FIELDS.iter().enumerate() {
            if let Some(help) = field.metric_help {
                family(
                    &format!("port_{}", field.name),
                    help,
                    self.ports
                        .iter()
                        .map(|p| (port(p), p.port.values()[i]))
                        .collect(),
                );
            }
        }
        for (i, name) in QueuePairSnapshot::FIELDS.iter().enumerate() {
            family(
                &format!("port_queue_{name}"),
                "Per queue pair: frames and bytes from the guest's TX queue, into its RX queue",
                self.ports
                    .iter()
                    .flat_map(|p| {
                        p.queues.iter().enumerate().map(move |(k, q)| {
                            let labels = vec![("port", p.name.clone()), ("queue", k.to_string())];
                            (labels, q.values()[i])
                        })
                    })
                    .collect(),
            );
        }
        let drops = |labels: Labels, d: &Drops| -> Vec<(Labels, u64)> {
            DropReason::ALL
                .iter()
                .map(|r| {
                    let mut l = labels.clone();
                    l.push(("reason", r.as_str().to_string()));
                    (l, d.get(*r))
                })
                .collect()
        };
        family(
            "port_drops",
            "Frames dropped, by port and reason",
            ports
                .iter()
                .flat_map(|(l, c)| drops(l.clone(), &c.drops))
                .collect(),
        );
        for (name, get, _, help) in SIDE_COUNTERS {
            family(&format!("uplink_{name}"), help, each(&uplinks, get));
        }
        family(
            "uplink_drops",
            "Frames dropped, by uplink and reason",
            uplinks
                .iter()
                .flat_map(|(l, c)| drops(l.clone(), &c.drops))
                .collect(),
        );
        let per_chan = |get: fn(&CountersSnapshot) -> u64| {
            self.channels
                .iter()
                .map(|c| (chan(c), get(&c.counters)))
                .collect()
        };
        family(
            "channel_in_frames",
            "Frames that entered the switch, by channel",
            per_chan(|c| c.in_frames),
        );
        family(
            "channel_out_frames",
            "Frames delivered, by destination channel",
            per_chan(|c| c.out_frames),
        );
        family(
            "channel_drops",
            "Frames dropped, by frame channel and reason",
            self.channels
                .iter()
                .flat_map(|c| drops(chan(c), &c.counters.drops))
                .collect(),
        );
        let mut out = String::new();
        if let Err(e) = encode(&mut out, &reg) {
            log::warn!("metrics encoding failed: {e}");
        }
        out
    }
}

/// The counters ports and uplinks both have, as metric families `port_NAME` and `uplink_NAME`:
/// NAME, what reads it, its help for ports, its help for uplinks.
type SideCounter = (
    &'static str,
    fn(&CountersSnapshot) -> u64,
    &'static str,
    &'static str,
);
const SIDE_COUNTERS: [SideCounter; 5] = [
    (
        "in_frames",
        |c| c.in_frames,
        "Frames received from the port's guest",
        "Frames received from the uplink's wire",
    ),
    (
        "in_bytes",
        |c| c.in_bytes,
        "Bytes received from the port's guest",
        "Bytes received from the uplink's wire",
    ),
    (
        "out_frames",
        |c| c.out_frames,
        "Frames delivered to the port's guest",
        "Frames sent out of the uplink",
    ),
    (
        "out_bytes",
        |c| c.out_bytes,
        "Bytes delivered to the port's guest",
        "Bytes sent out of the uplink",
    ),
    (
        "flooded",
        |c| c.flooded,
        "Copies planned by flooding, by sending port",
        "Copies planned by flooding, by sending uplink",
    ),
];

/// The gauges: `vswitch_fdb_entries{channel}`, `vswitch_port_connected{port}`,
/// `vswitch_port_tx_broken{port}`.
fn register_gauges(reg: &mut Registry, state: &StateGauges) {
    type Labels = Vec<(&'static str, String)>;
    let mut gauge = |name: &str, help: &str, values: Vec<(Labels, u64)>| {
        let f = Family::<Labels, Gauge>::default();
        for (labels, v) in values {
            f.get_or_create(&labels)
                .set(i64::try_from(v).unwrap_or(i64::MAX));
        }
        reg.register(name, help, f);
    };
    gauge(
        "fdb_entries",
        "FDB entries (learned and static), by channel",
        state
            .fdb_entries
            .iter()
            .map(|(c, n)| (vec![("channel", c.to_string())], *n))
            .collect(),
    );
    gauge(
        "port_connected",
        "1 while a vhost-user frontend is connected to the port",
        state
            .ports
            .iter()
            .map(|(name, up, _)| (vec![("port", name.clone())], u64::from(*up)))
            .collect(),
    );
    gauge(
        "port_tx_broken",
        "1 while the port's TX ring is parked (the guest broke it)",
        state
            .ports
            .iter()
            .map(|(name, _, broken)| (vec![("port", name.clone())], u64::from(*broken)))
            .collect(),
    );
}

fn drops_text(c: &CountersSnapshot) -> String {
    DropReason::ALL
        .iter()
        .filter(|r| c.drops.get(**r) > 0)
        .map(|r| format!("{}={}", r.as_str(), c.drops.get(*r)))
        .collect::<Vec<_>>()
        .join(" ")
}
