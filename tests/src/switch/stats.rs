//! `vswitch ctl stats`, parsed: per-port, per-uplink and per-channel counters.

use anyhow::{Context, Result};
use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt::{Display, Write};

/// Switch counters of a port or a channel (the `switch` / `counters` objects of `ctl stats`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counters {
    pub in_frames: u64,
    pub in_bytes: u64,
    pub out_frames: u64,
    pub out_bytes: u64,
    pub flooded: u64,
    /// Drops by reason: channel_mismatch, no_rx_buffer, bad_descriptor, oversize,
    /// unknown_channel, mac_limit, source_spoof.
    pub drops: BTreeMap<String, u64>,
}

impl Counters {
    fn from_json(v: &Value) -> Result<Self> {
        let n = |k: &str| {
            v.get(k)
                .and_then(Value::as_u64)
                .with_context(|| format!("counter {k} missing in {v}"))
        };
        let drops = v
            .get("drops")
            .and_then(Value::as_object)
            .with_context(|| format!("drops missing in {v}"))?
            .iter()
            .map(|(k, x)| (k.clone(), x.as_u64().unwrap_or(0)))
            .collect();
        Ok(Self {
            in_frames: n("in_frames")?,
            in_bytes: n("in_bytes")?,
            out_frames: n("out_frames")?,
            out_bytes: n("out_bytes")?,
            flooded: n("flooded")?,
            drops,
        })
    }

    /// Drops for one reason (0 when the reason is unknown).
    pub fn dropped(&self, reason: &str) -> u64 {
        self.drops.get(reason).copied().unwrap_or(0)
    }

    /// All drops.
    pub fn total_drops(&self) -> u64 {
        self.drops.values().sum()
    }

    /// "reason=n reason=n" for the non-zero drop reasons, or "-".
    pub fn drops_text(&self) -> String {
        let v: Vec<String> = self
            .drops
            .iter()
            .filter(|(_, n)| **n != 0)
            .map(|(k, n)| format!("{k}={n}"))
            .collect();
        if v.is_empty() {
            "-".into()
        } else {
            v.join(" ")
        }
    }
}

/// One port in `ctl stats`.
#[derive(Debug, Clone)]
pub struct PortStats {
    pub name: String,
    pub channel: Option<u16>,
    /// Switch-level counters: in = frames from the guest, out = frames delivered to it.
    pub switch: Counters,
    /// The vhost-user port's own counters (connections, to_guest_frames, rx_no_buffer, ...).
    pub port: BTreeMap<String, u64>,
}

/// One uplink in `ctl stats`.
#[derive(Debug, Clone)]
pub struct UplinkStats {
    pub name: String,
    /// The channels it carries, as ranges (`1-4094`, `100+200-299`).
    pub channels: String,
    /// in = frames from the wire, out = frames sent on it.
    pub switch: Counters,
}

/// One channel in `ctl stats`.
#[derive(Debug, Clone)]
pub struct ChannelStats {
    pub channel: u16,
    pub ports: u64,
    pub counters: Counters,
}

/// `vswitch ctl stats`, parsed.
#[derive(Debug, Clone)]
pub struct Stats {
    pub ports: Vec<PortStats>,
    pub uplinks: Vec<UplinkStats>,
    pub channels: Vec<ChannelStats>,
    /// The answer as it came.
    pub raw: Value,
}

impl Stats {
    /// Parses the JSON `vswitch ctl stats` prints.
    pub fn from_json(raw: Value) -> Result<Self> {
        let mut ports = Vec::new();
        for p in raw
            .get("ports")
            .and_then(Value::as_array)
            .context("stats: no ports list")?
        {
            let name = p
                .get("name")
                .and_then(Value::as_str)
                .context("stats: port without a name")?
                .to_string();
            let channel = p
                .get("channel")
                .and_then(Value::as_u64)
                .and_then(|c| u16::try_from(c).ok());
            let switch = Counters::from_json(p.get("switch").context("stats: no switch")?)
                .with_context(|| format!("stats of port {name}"))?;
            let port = p
                .get("port")
                .and_then(Value::as_object)
                .map(|o| {
                    o.iter()
                        .filter_map(|(k, v)| v.as_u64().map(|n| (k.clone(), n)))
                        .collect()
                })
                .unwrap_or_default();
            ports.push(PortStats {
                name,
                channel,
                switch,
                port,
            });
        }
        let mut uplinks = Vec::new();
        for u in raw
            .get("uplinks")
            .and_then(Value::as_array)
            .context("stats: no uplinks list")?
        {
            let s = |k: &str| {
                u.get(k)
                    .and_then(Value::as_str)
                    .map(str::to_string)
                    .with_context(|| format!("stats: uplink without {k}: {u}"))
            };
            let name = s("name")?;
            let switch = Counters::from_json(u.get("switch").context("stats: no switch")?)
                .with_context(|| format!("stats of uplink {name}"))?;
            uplinks.push(UplinkStats {
                channels: s("channels")?,
                name,
                switch,
            });
        }
        let mut channels = Vec::new();
        for c in raw
            .get("channels")
            .and_then(Value::as_array)
            .context("stats: no channels list")?
        {
            let channel = c
                .get("channel")
                .and_then(Value::as_u64)
                .and_then(|c| u16::try_from(c).ok())
                .context("stats: channel without an id")?;
            let counters = Counters::from_json(c.get("counters").context("stats: no counters")?)
                .with_context(|| format!("stats of channel {channel}"))?;
            channels.push(ChannelStats {
                channel,
                ports: c.get("ports").and_then(Value::as_u64).unwrap_or(0),
                counters,
            });
        }
        Ok(Self {
            ports,
            uplinks,
            channels,
            raw,
        })
    }

    /// The named port's counters.
    pub fn port(&self, name: &str) -> Result<&PortStats> {
        self.ports
            .iter()
            .find(|p| p.name == name)
            .with_context(|| format!("no port {name} in the stats"))
    }

    /// The named uplink's counters.
    pub fn uplink(&self, name: &str) -> Result<&UplinkStats> {
        self.uplinks
            .iter()
            .find(|u| u.name == name)
            .with_context(|| format!("no uplink {name} in the stats"))
    }

    /// A channel's counters.
    pub fn channel(&self, id: u16) -> Result<&ChannelStats> {
        self.channels
            .iter()
            .find(|c| c.channel == id)
            .with_context(|| format!("no channel {id} in the stats"))
    }

    /// A table: one line per port, per uplink and per channel (in/out frames, flooded, drops by
    /// reason).
    pub fn summary(&self) -> String {
        let mut s = String::new();
        summary_line(&mut s, &"port", &"channel", None);
        for p in &self.ports {
            let channel = p.channel.map(|c| c.to_string()).unwrap_or("-".into());
            summary_line(&mut s, &p.name, &channel, Some(&p.switch));
        }
        if !self.uplinks.is_empty() {
            summary_line(&mut s, &"uplink", &"carries", None);
        }
        for u in &self.uplinks {
            summary_line(&mut s, &u.name, &u.channels, Some(&u.switch));
        }
        summary_line(&mut s, &"channel", &"ports", None);
        for c in &self.channels {
            summary_line(&mut s, &c.channel, &c.ports, Some(&c.counters));
        }
        s
    }
}

/// One line of [`Stats::summary`]: a name, a second column, then `c`'s in/out frames, flooded
/// copies and drops, or with `c` None the header of those columns.
fn summary_line(s: &mut String, name: &dyn Display, second: &dyn Display, c: Option<&Counters>) {
    let _ = match c {
        None => writeln!(
            s,
            "{name:<10} {second:>7} {:>10} {:>10} {:>8}  drops",
            "in", "out", "flooded"
        ),
        Some(c) => writeln!(
            s,
            "{name:<10} {second:>7} {:>10} {:>10} {:>8}  {}",
            c.in_frames,
            c.out_frames,
            c.flooded,
            c.drops_text()
        ),
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn summary_has_a_line_per_port_uplink_and_channel() {
        let c = json!({"in_frames": 7, "in_bytes": 1, "out_frames": 12345, "out_bytes": 2,
                       "flooded": 3, "drops": {"source_spoof": 2, "no_channel": 0}});
        let s = Stats::from_json(json!({
            "ports": [{"name": "vm1", "channel": 100, "switch": c},
                      {"name": "vm2", "channel": null, "switch": c}],
            "uplinks": [{"name": "up0", "channels": "1-4094", "switch": c}],
            "channels": [{"channel": 100, "ports": 2, "counters": c}]
        }))
        .expect("parses");
        assert_eq!(s.summary(), SUMMARY);
    }

    /// What the summary printed before it was written with `summary_line`.
    const SUMMARY: &str = "\
port       channel         in        out  flooded  drops
vm1            100          7      12345        3  source_spoof=2
vm2              -          7      12345        3  source_spoof=2
uplink     carries         in        out  flooded  drops
up0         1-4094          7      12345        3  source_spoof=2
channel      ports         in        out  flooded  drops
100              2          7      12345        3  source_spoof=2
";
}
