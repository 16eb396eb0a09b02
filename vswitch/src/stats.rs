//! Read-only views for the control API and logs: ports, FDB, counters, Prometheus text.

use std::fmt::Write;

use serde::Serialize;
use vswitch_vhost::PortStatsSnapshot;

use crate::counters::{CountersSnapshot, DropReason};

/// A port, for listing.
#[derive(Debug, Clone, Serialize)]
pub struct PortInfo {
    /// Port id.
    pub id: u32,
    /// Name.
    pub name: String,
    /// Socket path.
    pub socket: String,
    /// `listen` or `connect`.
    pub role: String,
    /// Channel, if associated.
    pub channel: Option<u16>,
    /// Configured MAC.
    pub mac: Option<String>,
    /// MAC limit.
    pub mac_limit: u32,
    /// A frontend is connected.
    pub connected: bool,
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
    /// Seconds since last seen.
    pub age_s: u32,
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
}

fn ser_port<S: serde::Serializer>(p: &PortStatsSnapshot, s: S) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeMap;
    let mut m = s.serialize_map(Some(12))?;
    m.serialize_entry("from_guest_frames", &p.from_guest_frames)?;
    m.serialize_entry("from_guest_bytes", &p.from_guest_bytes)?;
    m.serialize_entry("to_guest_frames", &p.to_guest_frames)?;
    m.serialize_entry("to_guest_bytes", &p.to_guest_bytes)?;
    m.serialize_entry("tx_bad_descriptor", &p.tx_bad_descriptor)?;
    m.serialize_entry("tx_oversize", &p.tx_oversize)?;
    m.serialize_entry("tx_runt", &p.tx_runt)?;
    m.serialize_entry("rx_no_buffer", &p.rx_no_buffer)?;
    m.serialize_entry("rx_bad_descriptor", &p.rx_bad_descriptor)?;
    m.serialize_entry("rx_oversize", &p.rx_oversize)?;
    m.serialize_entry("notifications", &p.notifications)?;
    m.serialize_entry("connections", &p.connections)?;
    m.end()
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
    /// Per port.
    pub ports: Vec<PortStatsOut>,
    /// Per channel (channels with members or traffic).
    pub channels: Vec<ChannelStats>,
}

impl SwitchStats {
    /// The counters of the port named `name`.
    pub fn port(&self, name: &str) -> Option<&PortStatsOut> {
        self.ports.iter().find(|p| p.name == name)
    }

    /// The counters of channel `svid`.
    pub fn channel(&self, svid: u16) -> Option<&ChannelStats> {
        self.channels.iter().find(|c| c.channel == svid)
    }

    /// One log line per port and per channel.
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

    /// Prometheus text exposition format.
    pub fn prometheus(&self) -> String {
        let mut s = String::new();
        let metric = |s: &mut String, name: &str, help: &str| {
            let _ = writeln!(
                s,
                "# HELP vswitch_{name} {help}\n# TYPE vswitch_{name} counter"
            );
        };
        metric(
            &mut s,
            "port_in_frames_total",
            "Frames received from the port's guest.",
        );
        for p in &self.ports {
            let _ = writeln!(
                s,
                "vswitch_port_in_frames_total{{port=\"{}\"}} {}",
                p.name, p.switch.in_frames
            );
        }
        metric(
            &mut s,
            "port_in_bytes_total",
            "Bytes received from the port's guest.",
        );
        for p in &self.ports {
            let _ = writeln!(
                s,
                "vswitch_port_in_bytes_total{{port=\"{}\"}} {}",
                p.name, p.switch.in_bytes
            );
        }
        metric(
            &mut s,
            "port_out_frames_total",
            "Frames delivered to the port's guest.",
        );
        for p in &self.ports {
            let _ = writeln!(
                s,
                "vswitch_port_out_frames_total{{port=\"{}\"}} {}",
                p.name, p.switch.out_frames
            );
        }
        metric(
            &mut s,
            "port_out_bytes_total",
            "Bytes delivered to the port's guest.",
        );
        for p in &self.ports {
            let _ = writeln!(
                s,
                "vswitch_port_out_bytes_total{{port=\"{}\"}} {}",
                p.name, p.switch.out_bytes
            );
        }
        metric(
            &mut s,
            "port_drops_total",
            "Frames dropped, by port and reason.",
        );
        for p in &self.ports {
            for r in DropReason::ALL {
                let _ = writeln!(
                    s,
                    "vswitch_port_drops_total{{port=\"{}\",reason=\"{}\"}} {}",
                    p.name,
                    r.as_str(),
                    p.switch.drops.get(r)
                );
            }
        }
        metric(
            &mut s,
            "channel_in_frames_total",
            "Frames that entered the switch, by channel.",
        );
        for c in &self.channels {
            let _ = writeln!(
                s,
                "vswitch_channel_in_frames_total{{channel=\"{}\"}} {}",
                c.channel, c.counters.in_frames
            );
        }
        metric(
            &mut s,
            "channel_out_frames_total",
            "Frames delivered, by destination channel.",
        );
        for c in &self.channels {
            let _ = writeln!(
                s,
                "vswitch_channel_out_frames_total{{channel=\"{}\"}} {}",
                c.channel, c.counters.out_frames
            );
        }
        metric(
            &mut s,
            "channel_drops_total",
            "Frames dropped, by frame channel and reason.",
        );
        for c in &self.channels {
            for r in DropReason::ALL {
                let _ = writeln!(
                    s,
                    "vswitch_channel_drops_total{{channel=\"{}\",reason=\"{}\"}} {}",
                    c.channel,
                    r.as_str(),
                    c.counters.drops.get(r)
                );
            }
        }
        s
    }
}

fn drops_text(c: &CountersSnapshot) -> String {
    DropReason::ALL
        .iter()
        .filter(|r| c.drops.get(**r) > 0)
        .map(|r| format!("{}={}", r.as_str(), c.drops.get(*r)))
        .collect::<Vec<_>>()
        .join(" ")
}
