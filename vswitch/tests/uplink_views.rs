//! What operators see of uplinks, with the in-memory transport (`common/wire.rs`): `ctl ports`
//! lists them after the VM ports (transport from the configuration, channels as ranges,
//! reflective relay), `ctl stats` and `ctl metrics` count their frames apart from the VM
//! ports', and the control API refuses to change them as if they were VM ports.

mod common;

use std::time::Duration;

use common::wire::WireEnd;
use common::{ch, drain, eth, mac, vm, Net, BCAST};
use serde_json::{json, Value};
use vswitch::config::{Config, Sources};
use vswitch::ctl::handler::{handle, Context};
use vswitch::ctl::proto::{Request, Response};
use vswitch::uplink::UplinkConfig;

const T: Duration = Duration::from_secs(5);

/// The uplinks of a configuration: `trunk` (dot1ad on lo, channels 100 and 300-302, reflective
/// relay) and `vx` (vxlan, channel 200).
fn uplinks() -> Vec<UplinkConfig> {
    let src = Sources {
        uplinks: vec![
            "trunk,kind=dot1ad,interface=lo,channels=100+300-302,reflective-relay=on".into(),
            "vx,kind=vxlan,local=127.0.0.1,remote=127.0.0.2,remote=127.0.0.3,channels=200".into(),
        ],
        ..Sources::default()
    };
    Config::from_text(None, &src).expect("valid").uplinks
}

fn ask(net: &Net, ctx: &Context, req: Request) -> Response {
    handle(&net.sw, ctx, req)
}

fn ok(resp: Response) -> Value {
    assert!(resp.ok, "{resp:?}");
    resp.result.expect("a result")
}

#[test]
fn ports_lists_uplinks_after_the_vm_ports() {
    let net = Net::new(&[vm("vm1", 100, None), vm("vm2", 200, None)]);
    let cfgs = uplinks();
    for u in &cfgs {
        net.sw
            .add_uplink(u.spec.clone(), WireEnd::open())
            .expect("uplink");
    }
    let ctx = Context {
        ctl_path: net.dir.path().join("ctl.sock"),
        uplinks: cfgs,
    };
    let rows = ok(ask(&net, &ctx, Request::Ports {}));
    let rows = rows.as_array().expect("a list, as before");
    assert_eq!(rows.len(), 4, "{rows:?}");
    for (row, name) in rows[..2].iter().zip(["vm1", "vm2"]) {
        assert_eq!(row["name"], name);
        assert_eq!(row["kind"], "vm");
        assert_eq!(row["channel_mode"], "veb");
        for key in [
            "id",
            "socket",
            "role",
            "channel",
            "mac",
            "mac_limit",
            "connected",
            "tx_broken",
        ] {
            assert!(row.get(key).is_some(), "VM row without {key}: {row}");
        }
    }
    let mut trunk = rows[2].clone();
    assert!(trunk["id"].is_u64(), "{trunk}");
    trunk.as_object_mut().expect("object").remove("id");
    assert_eq!(
        trunk,
        json!({
            "name": "trunk", "kind": "uplink", "transport": "dot1ad", "interface": "lo",
            "channels": "100+300-302", "reflective_relay": true, "mac_limit": 4096, "mtu": 1500
        })
    );
    let vx = &rows[3];
    assert_eq!(
        (&vx["name"], &vx["transport"], &vx["local"], &vx["channels"]),
        (
            &json!("vx"),
            &json!("vxlan"),
            &json!("127.0.0.1:4789"),
            &json!("200")
        )
    );
    assert_eq!(vx["remotes"], json!(["127.0.0.2", "127.0.0.3"]));
    assert_eq!(vx["mtu"], 1450);
    assert!(vx.get("interface").is_none(), "{vx}");

    // `channels`: the uplinks are not on a channel; each channel's row names the uplinks that
    // carry it, and the uplinks are listed once with their ranges.
    let table = ok(ask(&net, &ctx, Request::Channels {}));
    assert_eq!(table["unassociated"], json!([]), "{table}");
    assert_eq!(
        table["channels"],
        json!([
            {"channel": 100, "ports": ["vm1"], "uplinks": ["trunk"]},
            {"channel": 200, "ports": ["vm2"], "uplinks": ["vx"]},
        ]),
        "{table}"
    );
    assert_eq!(
        table["uplinks"],
        json!([
            {"name": "trunk", "channels": "100+300-302"},
            {"name": "vx", "channels": "200"},
        ]),
        "{table}"
    );
    // An uplink the configuration does not know (added by a library user): no transport.
    net.sw
        .add_uplink(
            vswitch::port::UplinkSpec {
                name: "lib".into(),
                channels: [ch(7)].into_iter().collect(),
                mac_limit: Some(3),
                reflective_relay: false,
            },
            WireEnd::open(),
        )
        .expect("uplink");
    let rows = ok(ask(&net, &ctx, Request::Ports {}));
    let lib = rows
        .as_array()
        .and_then(|r| r.iter().find(|r| r["name"] == "lib"))
        .expect("listed");
    assert_eq!(
        (&lib["kind"], &lib["channels"]),
        (&json!("uplink"), &json!("7"))
    );
    assert!(lib.get("transport").is_none(), "{lib}");
}

#[test]
fn stats_and_metrics_count_uplinks_apart() {
    let net = Net::new(&[vm("vm1", 100, None)]);
    let wire = WireEnd::open();
    let cfg = &uplinks()[0];
    net.sw
        .add_uplink(cfg.spec.clone(), wire.clone())
        .expect("uplink");
    let mut g1 = net.guest("vm1", mac(1));
    // Out: vm1's broadcast goes on the wire; in: a far broadcast reaches vm1.
    g1.send(&eth(BCAST, mac(1), 1)).expect("send");
    common::wait_for(|| wire.sent().len() == 1, "vm1's broadcast on the wire");
    let far = eth(BCAST, mac(9), 2);
    wire.inject(ch(100), far.clone());
    assert_eq!(g1.recv(T), Some(far));
    // Dropped on arrival, counted on the uplink: a channel it does not carry.
    wire.inject(ch(999), eth(BCAST, mac(9), 3));
    assert!(drain(&mut g1).is_empty());

    let counted = || {
        let s = net.sw.stats();
        let u = s.uplink("trunk").expect("trunk counted").clone();
        (
            u.switch.in_frames,
            u.switch.out_frames,
            u.switch.drops.total(),
        )
    };
    // Out twice: vm1's broadcast, and the far broadcast sent back (trunk has reflective relay).
    common::wait_for(|| counted() == (1, 2, 1), "the uplink's counters");
    assert_eq!(wire.sent().len(), 2);
    let stats = serde_json::to_value(net.sw.stats()).expect("json");
    assert_eq!(stats["ports"].as_array().map(Vec::len), Some(1), "{stats}");
    assert_eq!(stats["ports"][0]["name"], "vm1");
    assert_eq!(stats["uplinks"][0]["name"], "trunk");
    assert_eq!(stats["uplinks"][0]["channels"], "100+300-302");
    assert_eq!(stats["uplinks"][0]["switch"]["out_frames"], 2, "{stats}");
    assert!(stats["channels"].is_array());

    let text = net.sw.prometheus();
    for line in [
        "vswitch_uplink_in_frames_total{uplink=\"trunk\"} 1",
        "vswitch_uplink_drops_total{uplink=\"trunk\",reason=\"channel_mismatch\"} 1",
        "vswitch_uplink_out_frames_total{uplink=\"trunk\"} 2",
        "vswitch_port_in_frames_total{port=\"vm1\"} 1",
    ] {
        assert!(text.contains(line), "{line} not in:\n{text}");
    }
    assert!(
        !text.contains("port=\"trunk\""),
        "an uplink among the VM ports' metrics:\n{text}"
    );
    let lines = net.sw.stats().log_lines();
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("uplink trunk channels=100+300-302 in=1/")),
        "{lines:?}"
    );
}

#[test]
fn the_api_does_not_change_uplinks_and_checks_vepa_ports() {
    let net = Net::new(&[vm("vm1", 100, None)]);
    let cfgs = uplinks();
    net.sw
        .add_uplink(cfgs[0].spec.clone(), WireEnd::open())
        .expect("uplink");
    let ctx = Context {
        ctl_path: net.dir.path().join("ctl.sock"),
        uplinks: vec![cfgs[0].clone()],
    };
    for req in [
        Request::RemovePort {
            name: "trunk".into(),
        },
        Request::Associate {
            name: "trunk".into(),
            channel: json!(100),
        },
        Request::Disassociate {
            name: "trunk".into(),
        },
    ] {
        let resp = ask(&net, &ctx, req);
        let err = resp.error.unwrap_or_default();
        assert!(
            !resp.ok && err.contains("\"trunk\" is an uplink") && err.contains("configuration"),
            "{err}"
        );
    }
    assert_eq!(net.sw.uplinks().len(), 1, "still there");
    let socket = |n: &str| net.dir.path().join(n).display().to_string();

    // A VEPA port on a channel the uplink does not carry: refused; on one it carries: added.
    let resp = ask(
        &net,
        &ctx,
        Request::AddPort {
            spec: json!(format!(
                "vm5,socket={},channel=200,mode=vepa",
                socket("vm5.sock")
            )),
            migration_of: None,
        },
    );
    assert!(
        !resp.ok
            && resp
                .error
                .as_deref()
                .is_some_and(|e| e.contains("no uplink carries channel 200")),
        "{resp:?}"
    );
    ok(ask(
        &net,
        &ctx,
        Request::AddPort {
            spec: json!(format!(
                "vm5,socket={},channel=100,mode=vepa",
                socket("vm5.sock")
            )),
            migration_of: None,
        },
    ));
    let rows = ok(ask(&net, &ctx, Request::Ports {}));
    let vm5 = rows
        .as_array()
        .and_then(|r| r.iter().find(|r| r["name"] == "vm5"))
        .expect("listed");
    assert_eq!(vm5["channel_mode"], "vepa");
    // Moving it to a channel no uplink carries: refused, it stays where it is.
    let resp = ask(
        &net,
        &ctx,
        Request::Associate {
            name: "vm5".into(),
            channel: json!(200),
        },
    );
    assert!(!resp.ok, "{resp:?}");
    ok(ask(
        &net,
        &ctx,
        Request::Associate {
            name: "vm5".into(),
            channel: json!(300),
        },
    ));
    // A VEB port moves anywhere.
    ok(ask(
        &net,
        &ctx,
        Request::Associate {
            name: "vm1".into(),
            channel: json!(200),
        },
    ));
}
