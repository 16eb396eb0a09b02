//! Target `ctl_request`: the control API's request parser and handler.
//!
//! The input is one request line. It is parsed as the control server parses it; a parsed
//! request is carried out by the real handler on a real switch with two ports (`vm1` on
//! channel 100, `vm2` on 200, sockets in a private temporary directory), and the switch is
//! put back as it was afterwards (ports re-added, channels and policy restored), so inputs do
//! not depend on each other. `add-port` is validated (text or object spec, as the handler
//! does) but not carried out: it would create a socket wherever the input says.
//!
//! Properties: nothing panics; every refusal says it is a malformed request; every response
//! is one line of JSON that reads back as the same response.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

use serde_json::Value;
use vswitch::config;
use vswitch::ctl::{handler, proto};
use vswitch::{PortSpec, Switch, SwitchSettings};
use vswitch_channels::{ChannelId, Policy};

struct Fixture {
    _dir: tempfile::TempDir,
    ctl: PathBuf,
    sw: Arc<Switch>,
    ports: Vec<PortSpec>,
    /// One input at a time (the replay tests run in threads).
    lock: Mutex<()>,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let dir = tempfile::tempdir().expect("temporary directory");
        let sw = Switch::new(SwitchSettings::default(), Policy::new());
        let ports: Vec<PortSpec> = [("vm1", 100), ("vm2", 200)]
            .into_iter()
            .map(|(name, ch)| {
                let ch = ChannelId::new(ch).expect("channel");
                PortSpec::new(name, dir.path().join(format!("{name}.sock")), ch)
            })
            .collect();
        for p in &ports {
            sw.add_port(p.clone()).expect("fixture port");
        }
        Fixture {
            ctl: dir.path().join("ctl.sock"),
            _dir: dir,
            sw,
            ports,
            lock: Mutex::new(()),
        }
    })
}

/// Runs one input; panics when a property does not hold.
pub fn run(data: &[u8]) {
    let req = match proto::parse_request(data) {
        Ok(r) => r,
        Err(e) => {
            assert!(e.starts_with("malformed request"), "{e}");
            check_line(&proto::Response::err(e));
            return;
        }
    };
    if let proto::Request::AddPort { spec, .. } = req {
        // What the handler does before it adds the port.
        let r = match spec {
            Value::String(text) => config::port_from_spec(&text),
            other => config::port_from_json(other),
        };
        if let Err(e) = r {
            check_line(&proto::Response::err(e.to_string()));
        }
        return;
    }
    let f = fixture();
    let _one = f.lock.lock().unwrap_or_else(|p| p.into_inner());
    let resp = handler::handle(&f.sw, &handler::Context::new(&f.ctl), req);
    check_line(&resp);
    restore(f);
}

fn check_line(resp: &proto::Response) {
    let line = resp.to_line();
    assert!(line.ends_with('\n'));
    assert_eq!(line.matches('\n').count(), 1, "one line: {line:?}");
    let back: proto::Response = serde_json::from_str(&line).expect("response reads back");
    assert_eq!(&back, resp);
}

/// Puts the fixture's ports, channels and policy back.
fn restore(f: &Fixture) {
    let now = f.sw.ports();
    for spec in &f.ports {
        match now.iter().find(|p| p.name == spec.name) {
            None => {
                f.sw.add_port(spec.clone()).expect("fixture port re-added");
            }
            Some(p) if p.channel != Some(spec.channel.get()) => {
                f.sw.associate(&spec.name, spec.channel)
                    .expect("fixture channel restored");
            }
            Some(_) => {}
        }
    }
    assert_eq!(f.sw.ports().len(), f.ports.len(), "no port added");
    f.sw.set_policy(Policy::new());
}
