//! The switch's counters, as `vswitch ctl stats` prints them (JSON).

use serde_json::Value;

/// Switch counters from `vswitch ctl stats` (JSON).
#[derive(Debug, Clone)]
pub struct Stats(pub Value);

fn walk<'a>(mut v: &'a Value, path: &str) -> Option<&'a Value> {
    for k in path.split('.') {
        v = v.get(k)?;
    }
    Some(v)
}

impl Stats {
    /// A port's counter by dotted path, e.g. `switch.out_frames`, `switch.drops.source_spoof`,
    /// `port.to_guest_frames`.
    pub fn port(&self, name: &str, path: &str) -> u64 {
        let p = self.0["ports"]
            .as_array()
            .and_then(|a| a.iter().find(|p| p["name"] == name))
            .unwrap_or_else(|| panic!("no port {name} in stats:\n{}", self.0));
        walk(p, path)
            .and_then(Value::as_u64)
            .unwrap_or_else(|| panic!("no counter {path} for port {name}:\n{p}"))
    }

    /// A channel's counter by dotted path under `counters`, e.g. `out_frames`.
    pub fn channel(&self, svid: u16, path: &str) -> u64 {
        let c = self.0["channels"]
            .as_array()
            .and_then(|a| a.iter().find(|c| c["channel"] == svid))
            .unwrap_or_else(|| panic!("no channel {svid} in stats:\n{}", self.0));
        walk(&c["counters"], path)
            .and_then(Value::as_u64)
            .unwrap_or_else(|| panic!("no counter {path} for channel {svid}:\n{c}"))
    }

    /// One line per port: the counters that matter here.
    pub fn summary(&self) -> String {
        let mut s = String::new();
        for p in self.0["ports"].as_array().into_iter().flatten() {
            let n = |path: &str| walk(p, path).and_then(Value::as_u64).unwrap_or(0);
            let drops: Vec<String> = p["switch"]["drops"]
                .as_object()
                .into_iter()
                .flatten()
                .filter(|(_, v)| v.as_u64().unwrap_or(0) > 0)
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            s.push_str(&format!(
                "  port {} ch={} in={} out={} flooded={} drops[{}] from_guest={} to_guest={} \
                 connections={}\n",
                p["name"].as_str().unwrap_or("?"),
                p["channel"],
                n("switch.in_frames"),
                n("switch.out_frames"),
                n("switch.flooded"),
                drops.join(" "),
                n("port.from_guest_frames"),
                n("port.to_guest_frames"),
                n("port.connections"),
            ));
        }
        s
    }
}
