//! The control API's answers as aligned tables for people (`vswitch ctl` without `--json`),
//! like `ovs-vsctl show` or `vppctl show interface`. Rendered from the JSON answers, so the
//! tables and `--json` never disagree.
//!
//! RX counts what the switch received from a port (the guest's transmissions), TX what it
//! delivered to it.

use serde_json::Value;

use super::table::{Align, Table};

use Align::{Left, Right};

/// A cell: text as is, numbers and booleans as written, null or missing as `-`.
fn cell(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn count(v: &Value) -> String {
    v.as_u64().map_or_else(|| cell(v), |n| n.to_string())
}

/// The sum of a `drops` object's counts.
fn drops_total(drops: &Value) -> u64 {
    drops
        .as_object()
        .map_or(0, |m| m.values().filter_map(Value::as_u64).sum())
}

fn rows(v: &Value) -> &[Value] {
    v.as_array().map_or(&[], Vec::as_slice)
}

fn by_name<'a>(list: &'a Value, name: &Value) -> Option<&'a Value> {
    rows(list).iter().find(|r| &r["name"] == name)
}

/// `yes` when `v` is `true`, else `no`.
fn flag(v: &Value, yes: &str, no: &str) -> String {
    if *v == true { yes } else { no }.into()
}

/// The RX, TX and DROPS cells of the entry named `name` in `stats[list]` ("-" without one).
fn traffic(stats: Option<&Value>, list: &str, name: &Value) -> [String; 3] {
    match stats
        .and_then(|s| by_name(&s[list], name))
        .map(|s| &s["switch"])
    {
        Some(c) if !c.is_null() => [
            count(&c["in_frames"]),
            count(&c["out_frames"]),
            drops_total(&c["drops"]).to_string(),
        ],
        _ => ["-".into(), "-".into(), "-".into()],
    }
}

/// A table of these columns with a row made by `row` for each entry of the list `v`, or
/// `none` when it is empty.
fn listing(
    v: &Value,
    columns: &[(&'static str, Align)],
    row: impl Fn(&Value) -> Vec<String>,
    none: &str,
) -> String {
    let mut t = Table::new(columns);
    for e in rows(v) {
        t.row(row(e));
    }
    t.render_or(none)
}

/// `ctl ports`: the VM ports (with their counters from `stats`, when given), then the uplinks.
pub fn ports(ports: &Value, stats: Option<&Value>) -> String {
    let mut t = Table::new(&[
        ("PORT", Left),
        ("CHANNEL", Right),
        ("MODE", Left),
        ("ROLE", Left),
        ("MAC", Left),
        ("STATE", Left),
        ("QUEUES", Right),
        ("RX", Right),
        ("TX", Right),
        ("DROPS", Right),
        ("SOCKET", Left),
    ]);
    for p in rows(ports).iter().filter(|p| p["kind"] != "uplink") {
        let [rx, tx, drops] = traffic(stats, "ports", &p["name"]);
        let state = match (p["connected"].as_bool(), p["tx_broken"].as_bool()) {
            (_, Some(true)) => "tx-broken",
            (Some(true), _) => "up",
            _ => "down",
        };
        t.row(vec![
            cell(&p["name"]),
            cell(&p["channel"]),
            cell(&p["channel_mode"]),
            cell(&p["role"]),
            cell(&p["mac"]),
            state.into(),
            cell(&p["queues"]),
            rx,
            tx,
            drops,
            cell(&p["socket"]),
        ]);
    }
    let mut out = t.render_or("no VM ports\n");
    let up = uplinks(ports, stats);
    if !up.starts_with("no uplinks") {
        out.push('\n');
        out.push_str(&up);
    }
    out
}

/// `ctl uplinks` (and the second table of `ctl ports`).
pub fn uplinks(ports: &Value, stats: Option<&Value>) -> String {
    let mut t = Table::new(&[
        ("UPLINK", Left),
        ("TRANSPORT", Left),
        ("ENDPOINT", Left),
        ("CHANNELS", Left),
        ("RELAY", Left),
        ("MTU", Right),
        ("RX", Right),
        ("TX", Right),
        ("DROPS", Right),
    ]);
    for u in rows(ports).iter().filter(|p| p["kind"] == "uplink") {
        let [rx, tx, drops] = traffic(stats, "uplinks", &u["name"]);
        let endpoint = match (&u["interface"], &u["local"]) {
            (Value::String(i), _) => i.clone(),
            (_, Value::String(l)) => {
                let remotes: Vec<String> = rows(&u["remotes"]).iter().map(cell).collect();
                format!("{l} -> {}", remotes.join(","))
            }
            _ => "-".into(),
        };
        t.row(vec![
            cell(&u["name"]),
            cell(&u["transport"]),
            endpoint,
            cell(&u["channels"]),
            flag(&u["reflective_relay"], "on", "off"),
            cell(&u["mtu"]),
            rx,
            tx,
            drops,
        ]);
    }
    t.render_or("no uplinks\n")
}

/// `ctl stats`: counters per port, per uplink and per channel, then drops by reason.
pub fn stats(v: &Value) -> String {
    let counters = [
        ("RX", "in_frames"),
        ("RX-BYTES", "in_bytes"),
        ("TX", "out_frames"),
        ("TX-BYTES", "out_bytes"),
        ("FLOODED", "flooded"),
    ];
    // (header, alignment, key) of the two naming columns, the rows, the counters' object.
    type Col = (&'static str, Align, &'static str);
    let section = |first: Col, second: Col, list: &Value, inner: &str| {
        let mut cols = vec![(first.0, first.1), (second.0, second.1)];
        cols.extend(counters.iter().map(|(h, _)| (*h, Right)));
        cols.push(("DROPS", Right));
        let mut t = Table::new(&cols);
        for r in rows(list) {
            let c = &r[inner];
            let mut cells = vec![cell(&r[first.2]), cell(&r[second.2])];
            cells.extend(counters.iter().map(|(_, k)| count(&c[*k])));
            cells.push(drops_total(&c["drops"]).to_string());
            t.row(cells);
        }
        t
    };
    let mut out = String::new();
    let mut add = |t: Table, none: &str| {
        if !out.is_empty() {
            out.push('\n');
        }
        out.push_str(&t.render_or(none));
    };
    add(
        section(
            ("PORT", Left, "name"),
            ("CHANNEL", Right, "channel"),
            &v["ports"],
            "switch",
        ),
        "no VM ports\n",
    );
    if !rows(&v["uplinks"]).is_empty() {
        add(
            section(
                ("UPLINK", Left, "name"),
                ("CHANNELS", Left, "channels"),
                &v["uplinks"],
                "switch",
            ),
            "",
        );
    }
    add(
        section(
            ("CHANNEL", Right, "channel"),
            ("PORTS", Right, "ports"),
            &v["channels"],
            "counters",
        ),
        "no channel has members or traffic\n",
    );
    let queues = queue_pairs(&v["ports"]);
    if !queues.is_empty() {
        add(queues, "");
    }
    let mut drops = Table::new(&[("WHERE", Left), ("REASON", Left), ("FRAMES", Right)]);
    let mut drop_rows = |what: &str, list: &Value, key: &str, inner: &str| {
        for r in rows(list) {
            if let Some(m) = r[inner]["drops"].as_object() {
                for (reason, n) in m.iter().filter(|(_, n)| n.as_u64().unwrap_or(0) > 0) {
                    drops.row(vec![
                        format!("{what} {}", cell(&r[key])),
                        reason.clone(),
                        count(n),
                    ]);
                }
            }
        }
    };
    drop_rows("port", &v["ports"], "name", "switch");
    drop_rows("uplink", &v["uplinks"], "name", "switch");
    drop_rows("channel", &v["channels"], "channel", "counters");
    add(drops, "no drops\n");
    out
}

/// The per-queue-pair counters of the ports that have more than one pair (RX: from the
/// guest's TX queue, TX: into its RX queue, as in the other tables).
fn queue_pairs(ports: &Value) -> Table {
    let mut t = Table::new(&[
        ("PORT", Left),
        ("QUEUE", Right),
        ("RX", Right),
        ("RX-BYTES", Right),
        ("TX", Right),
        ("TX-BYTES", Right),
    ]);
    for p in rows(ports).iter().filter(|p| rows(&p["queues"]).len() > 1) {
        for q in rows(&p["queues"]) {
            t.row(vec![
                cell(&p["name"]),
                cell(&q["queue"]),
                count(&q["from_guest_frames"]),
                count(&q["from_guest_bytes"]),
                count(&q["to_guest_frames"]),
                count(&q["to_guest_bytes"]),
            ]);
        }
    }
    t
}

/// `ctl fdb`: the learned (and static) addresses.
pub fn fdb(v: &Value) -> String {
    let columns = [
        ("CHANNEL", Right),
        ("MAC", Left),
        ("PORT", Left),
        ("AGE(S)", Right),
        ("STATIC", Left),
    ];
    let row = |e: &Value| {
        let cells = [&e["channel"], &e["mac"], &e["port"], &e["age_s"]];
        let mut row: Vec<String> = cells.into_iter().map(cell).collect();
        row.push(flag(&e["static"], "yes", "no"));
        row
    };
    listing(v, &columns, row, "the FDB is empty\n")
}

/// `ctl channels`: which ports are on which channel.
pub fn channels(v: &Value) -> String {
    // The uplinks column only on a switch that has uplinks.
    let with_uplinks = !rows(&v["uplinks"]).is_empty();
    let mut t = match with_uplinks {
        true => Table::new(&[("CHANNEL", Right), ("PORTS", Left), ("UPLINKS", Left)]),
        false => Table::new(&[("CHANNEL", Right), ("PORTS", Left)]),
    };
    for c in rows(&v["channels"]) {
        let ports: Vec<String> = rows(&c["ports"]).iter().map(cell).collect();
        let mut row = vec![cell(&c["channel"]), ports.join(", ")];
        if with_uplinks {
            let uplinks: Vec<String> = rows(&c["uplinks"]).iter().map(cell).collect();
            row.push(uplinks.join(", "));
        }
        t.row(row);
    }
    let mut out = t.render_or("no channel has members\n");
    let loose: Vec<String> = rows(&v["unassociated"]).iter().map(cell).collect();
    if !loose.is_empty() {
        out.push_str(&format!("\nnot on a channel: {}\n", loose.join(", ")));
    }
    for u in rows(&v["uplinks"]) {
        out.push_str(&format!(
            "uplink {} carries channels {}\n",
            cell(&u["name"]),
            cell(&u["channels"])
        ));
    }
    out
}

/// `ctl capture list`: the running captures.
pub fn captures(v: &Value) -> String {
    let columns = [
        ("PORT", Left),
        ("DIRECTION", Left),
        ("CAPTURED", Right),
        ("NOT CAPTURED", Right),
        ("STATE", Left),
        ("FILE", Left),
    ];
    let row = |c: &Value| {
        vec![
            cell(&c["port"]),
            cell(&c["direction"]),
            count(&c["captured"]),
            count(&c["not_captured"]),
            flag(&c["running"], "capturing", "count reached"),
            cell(&c["file"]),
        ]
    };
    listing(v, &columns, row, "no capture is running\n")
}

/// `ctl policy` / `ctl set-policy`: the directed pairs beyond equal channels.
pub fn policy(v: &Value) -> String {
    let mut t = Table::new(&[("FROM", Right), ("TO", Right)]);
    for pair in rows(&v["allow"]) {
        t.row(vec![cell(&pair[0]), cell(&pair[1])]);
    }
    if t.is_empty() {
        "isolation only: frames reach only VMs on their own channel\n".into()
    } else {
        format!(
            "isolation, and frames of channel FROM may also reach VMs on channel TO:\n{}",
            t.render()
        )
    }
}

/// The answer to a change (`add-port`, `associate`, ...): `key: value` lines.
pub fn done(v: &Value) -> String {
    match v.as_object() {
        Some(m) => {
            let width = m.keys().map(String::len).max().unwrap_or(0);
            m.iter()
                .map(|(k, val)| format!("{k:width$}  {}\n", cell(val)))
                .collect()
        }
        None => format!("{}\n", cell(v)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn ports_table_joins_counters_and_lists_uplinks_apart() {
        let ports = json!([
            {"name": "vm1", "kind": "vm", "socket": "/run/vm1.sock", "role": "listen",
             "channel": 100, "channel_mode": "veb", "mac": "52:54:00:00:00:01",
             "queues": 2, "connected": true, "tx_broken": false},
            {"name": "vm2", "kind": "vm", "socket": "/run/vm2.sock", "role": "connect",
             "channel": null, "channel_mode": "veb", "mac": null,
             "queues": 1, "connected": false, "tx_broken": false},
            {"name": "up0", "kind": "uplink", "transport": "vxlan", "local": "192.0.2.1:4789",
             "remotes": ["192.0.2.2"], "channels": "1-4094", "reflective_relay": false,
             "mtu": 1450}
        ]);
        let stats = json!({"ports": [
            {"name": "vm1", "switch": {"in_frames": 7, "out_frames": 12345,
                                       "drops": {"source_spoof": 2, "no_channel": 1}}}
        ], "uplinks": [], "channels": []});
        assert_eq!(
            super::ports(&ports, Some(&stats)),
            "\
PORT  CHANNEL  MODE  ROLE     MAC                STATE  QUEUES  RX     TX  DROPS  SOCKET
vm1       100  veb   listen   52:54:00:00:00:01  up          2   7  12345      3  /run/vm1.sock
vm2         -  veb   connect  -                  down        1   -      -      -  /run/vm2.sock

UPLINK  TRANSPORT  ENDPOINT                     CHANNELS  RELAY   MTU  RX  TX  DROPS
up0     vxlan      192.0.2.1:4789 -> 192.0.2.2  1-4094    off    1450   -   -      -
"
        );
    }

    #[test]
    fn stats_lists_nonzero_drops_by_reason() {
        let v = json!({"ports": [
            {"name": "vm1", "channel": 100, "switch": {"in_frames": 1, "in_bytes": 60,
             "out_frames": 0, "out_bytes": 0, "flooded": 1, "drops": {"source_spoof": 2,
             "no_channel": 0}}}
        ], "uplinks": [], "channels": [
            {"channel": 100, "ports": 1, "counters": {"in_frames": 1, "in_bytes": 60,
             "out_frames": 0, "out_bytes": 0, "flooded": 1, "drops": {}}}
        ]});
        assert_eq!(
            stats(&v),
            "\
PORT  CHANNEL  RX  RX-BYTES  TX  TX-BYTES  FLOODED  DROPS
vm1       100   1        60   0         0        1      2

CHANNEL  PORTS  RX  RX-BYTES  TX  TX-BYTES  FLOODED  DROPS
    100      1   1        60   0         0        1      0

WHERE     REASON        FRAMES
port vm1  source_spoof       2
"
        );
    }

    #[test]
    fn stats_lists_queue_pairs_of_multiqueue_ports() {
        let v = json!({"ports": [
            {"name": "vm1", "channel": 100, "switch": {"drops": {}},
             "queues": [{"queue": 0, "from_guest_frames": 0, "from_guest_bytes": 0,
                         "to_guest_frames": 0, "to_guest_bytes": 0}]},
            {"name": "vm2", "channel": 100, "switch": {"drops": {}},
             "queues": [{"queue": 0, "from_guest_frames": 3, "from_guest_bytes": 180,
                         "to_guest_frames": 4, "to_guest_bytes": 240},
                        {"queue": 1, "from_guest_frames": 5, "from_guest_bytes": 300,
                         "to_guest_frames": 6, "to_guest_bytes": 360}]}
        ], "uplinks": [], "channels": []});
        let out = stats(&v);
        assert!(
            out.contains(
                "\
PORT  QUEUE  RX  RX-BYTES  TX  TX-BYTES
vm2       0   3       180   4       240
vm2       1   5       300   6       360
"
            ),
            "{out}"
        );
    }

    #[test]
    fn empty_answers_say_so() {
        assert_eq!(fdb(&json!([])), "the FDB is empty\n");
        assert!(policy(&json!({"allow": []})).starts_with("isolation only"));
        assert!(channels(&json!({"channels": [], "unassociated": ["vm9"]}))
            .contains("not on a channel: vm9"));
        assert_eq!(
            done(&json!({"name": "vm3", "id": 4})),
            "id    4\nname  vm3\n"
        );
    }
}
