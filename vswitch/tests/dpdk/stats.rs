//! testpmd's statistics, parsed from its output.

use std::collections::BTreeMap;

/// testpmd's "Forward statistics" of one port (printed when forwarding stops).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PortStats {
    pub rx: u64,
    pub rx_dropped: u64,
    pub tx: u64,
    pub tx_dropped: u64,
}

/// Parses every "Forward statistics for port N" block of testpmd's output (the last one per
/// port wins).
pub fn parse_forward_stats(out: &str) -> BTreeMap<u16, PortStats> {
    fn field(line: &str, key: &str) -> Option<u64> {
        let mut it = line.split_whitespace();
        while let Some(t) = it.next() {
            if t == key {
                return it.next()?.parse().ok();
            }
        }
        None
    }
    let mut map = BTreeMap::new();
    let mut current: Option<u16> = None;
    for line in out.lines() {
        if let Some(rest) = line.split("Forward statistics for port ").nth(1) {
            current = rest.split_whitespace().next().and_then(|n| n.parse().ok());
            if let Some(p) = current {
                map.insert(p, PortStats::default());
            }
            continue;
        }
        let Some(p) = current else { continue };
        let st = map.get_mut(&p).expect("inserted");
        if let Some(v) = field(line, "RX-packets:") {
            st.rx = v;
            st.rx_dropped = field(line, "RX-dropped:").unwrap_or(0);
        } else if let Some(v) = field(line, "TX-packets:") {
            st.tx = v;
            st.tx_dropped = field(line, "TX-dropped:").unwrap_or(0);
            current = None;
        }
    }
    map
}
