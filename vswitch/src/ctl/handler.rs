//! Carries out one control request against the switch.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};
use vswitch_channels::{ChannelId, ChannelMode, Policy};

use super::proto::{Request, Response};
use crate::capture::{CaptureOptions, Direction, DEFAULT_SNAPLEN};
use crate::config::{self, Origin};
use crate::spec::PortSpec;
use crate::state;
use crate::uplink::UplinkConfig;
use crate::Switch;

/// What the handler knows besides the switch.
#[derive(Debug, Clone, Default)]
pub struct Context {
    /// The control socket's path (no port may take it).
    pub ctl_path: PathBuf,
    /// The configured uplinks: their transports (in `ports`), and the channels a VEPA port
    /// needs one of them to carry.
    pub uplinks: Vec<UplinkConfig>,
}

impl Context {
    /// A context for the control socket at `ctl_path`, without uplinks.
    pub fn new(ctl_path: impl Into<PathBuf>) -> Context {
        Context {
            ctl_path: ctl_path.into(),
            uplinks: Vec::new(),
        }
    }
}

/// Carries out `req`; every failure becomes an error response.
pub fn handle(sw: &Switch, ctx: &Context, req: Request) -> Response {
    match run(sw, ctx, req) {
        Ok(v) => Response::ok(v),
        Err(e) => Response::err(e),
    }
}

fn run(sw: &Switch, ctx: &Context, req: Request) -> Result<Value, String> {
    let to_value = |v: Result<Value, serde_json::Error>| v.map_err(|e| e.to_string());
    match req {
        Request::Ports {} => ports(sw, ctx),
        Request::Fdb {} => to_value(serde_json::to_value(sw.fdb())),
        Request::Stats {} => to_value(serde_json::to_value(sw.stats())),
        Request::Metrics {} => Ok(Value::String(sw.prometheus())),
        Request::Channels {} => Ok(channels(sw)),
        Request::Policy {} => Ok(policy_json(&sw.policy())),
        Request::SetPolicy { allow } => {
            let policy = config::policy_from_pairs(allow, &Origin::Api("set-policy"))
                .map_err(|e| e.to_string())?;
            state::record(sw, || {
                sw.set_policy(policy);
                Ok(())
            })?;
            log::info!("policy set to {}", policy_json(&sw.policy()));
            Ok(policy_json(&sw.policy()))
        }
        Request::AddPort { spec, migration_of } => {
            let spec = match spec {
                Value::String(text) => config::port_from_spec(&text),
                other => config::port_from_json(other),
            }
            .map_err(|e| e.to_string())?;
            check_socket_free(sw, &ctx.ctl_path, &spec)?;
            config::check_vepa(&spec, &ctx.uplinks, &Origin::Api("add-port"))
                .map_err(|e| e.to_string())?;
            let name = spec.name.clone();
            let id = state::record(sw, || {
                match &migration_of {
                    Some(src) => sw.add_migration_target(spec, src),
                    None => sw.add_port(spec),
                }
                .map_err(|e| e.to_string())
            })?;
            Ok(json!({ "name": name, "id": id.get() }))
        }
        Request::RemovePort { name } => {
            not_an_uplink(sw, &name, "remove-port")?;
            state::record(sw, || sw.remove_port(&name).map_err(|e| e.to_string()))?;
            Ok(json!({ "removed": name }))
        }
        Request::Associate { name, channel } => {
            let channel = config::parse_channel(&channel, &Origin::Api("associate"))
                .map_err(|e| e.to_string())?;
            not_an_uplink(sw, &name, "associate")?;
            check_vepa_channel(sw, ctx, &name, channel)?;
            state::record(sw, || {
                sw.associate(&name, channel).map_err(|e| e.to_string())
            })?;
            Ok(json!({ "name": name, "channel": channel.get() }))
        }
        Request::Disassociate { name } => {
            not_an_uplink(sw, &name, "disassociate")?;
            state::record(sw, || sw.disassociate(&name).map_err(|e| e.to_string()))?;
            Ok(json!({ "name": name, "channel": null }))
        }
        Request::CaptureStart {
            name,
            file,
            direction,
            count,
            snaplen,
        } => {
            let opts = capture_options(file, direction, count, snaplen)?;
            sw.capture_start(&name, &opts).map_err(|e| e.to_string())?;
            Ok(json!({ "name": name, "file": opts.file, "direction": opts.direction }))
        }
        Request::CaptureStop { name } => {
            let status = sw.capture_stop(&name).map_err(|e| e.to_string())?;
            serde_json::to_value(status).map_err(|e| e.to_string())
        }
        Request::Captures {} => serde_json::to_value(sw.captures()).map_err(|e| e.to_string()),
        Request::SetRate {
            name,
            rate,
            burst,
            pps,
        } => {
            let limit = config::rate_limit(rate, burst, pps, &Origin::Api("set-rate"))
                .map_err(|e| e.to_string())?;
            not_an_uplink(sw, &name, "set-rate")?;
            state::record(sw, || sw.set_rate(&name, limit).map_err(|e| e.to_string()))?;
            Ok(json!({
                "name": name,
                "rate": limit.rate_mbit,
                "burst": limit.burst_kb,
                "pps": limit.pps,
            }))
        }
    }
}

/// A capture request's options: the file must be an absolute path (the client makes it so).
fn capture_options(
    file: String,
    direction: Option<String>,
    count: Option<u64>,
    snaplen: Option<u32>,
) -> Result<CaptureOptions, String> {
    let file = PathBuf::from(file);
    if !file.is_absolute() {
        return Err(format!(
            "capture-start request: file {:?} is not an absolute path",
            file.display()
        ));
    }
    let direction = match direction {
        Some(d) => d.parse::<Direction>().map_err(|e| e.to_string())?,
        None => Direction::Both,
    };
    if count == Some(0) {
        return Err(
            "capture-start request: count 0 would capture nothing: leave it out \
                    for no limit"
                .to_owned(),
        );
    }
    Ok(CaptureOptions {
        file,
        direction,
        count,
        snaplen: snaplen.unwrap_or(DEFAULT_SNAPLEN),
    })
}

/// VM ports, then uplinks (with their transports, from the configuration).
fn ports(sw: &Switch, ctx: &Context) -> Result<Value, String> {
    let mut rows = match serde_json::to_value(sw.ports()) {
        Ok(Value::Array(rows)) => rows,
        Ok(_) => Vec::new(),
        Err(e) => return Err(e.to_string()),
    };
    for up in sw.uplinks() {
        let up = match ctx.uplinks.iter().find(|c| c.spec.name == up.name) {
            Some(cfg) => up.with_config(cfg),
            None => up,
        };
        rows.push(serde_json::to_value(up).map_err(|e| e.to_string())?);
    }
    Ok(Value::Array(rows))
}

/// Refuses to change an uplink as if it were a VM port: uplinks are configuration.
fn not_an_uplink(sw: &Switch, name: &str, cmd: &str) -> Result<(), String> {
    if sw.uplinks().iter().any(|u| u.name == name) {
        return Err(format!(
            "{cmd} request: {name:?} is an uplink; uplinks come from the configuration \
             (--uplink, [[uplink]]) and carry their configured channels: change the \
             configuration and restart the switch"
        ));
    }
    Ok(())
}

/// Refuses to move a VEPA port to a channel that no uplink carries (its frames would go
/// nowhere).
fn check_vepa_channel(
    sw: &Switch,
    ctx: &Context,
    name: &str,
    channel: ChannelId,
) -> Result<(), String> {
    let Some(port) = sw.ports().into_iter().find(|p| p.name == name) else {
        // The switch says there is no such port.
        return Ok(());
    };
    if port.channel_mode != ChannelMode::Vepa.as_str() {
        return Ok(());
    }
    let mut spec = PortSpec::new(name, port.socket, channel);
    spec.channel_mode = ChannelMode::Vepa;
    config::check_vepa(&spec, &ctx.uplinks, &Origin::Api("associate")).map_err(|e| e.to_string())
}

/// Refuses a new port whose socket is the control socket or, spelled differently, another
/// port's socket (the switch itself compares paths as given).
fn check_socket_free(sw: &Switch, ctl_path: &Path, spec: &PortSpec) -> Result<(), String> {
    let key = config::socket_key(&spec.socket);
    if key == config::socket_key(ctl_path) {
        return Err(format!(
            "add-port request: socket {} is the control socket; choose another path",
            spec.socket.display()
        ));
    }
    if let Some(p) = sw
        .ports()
        .into_iter()
        .find(|p| config::socket_key(Path::new(&p.socket)) == key)
    {
        return Err(format!(
            "add-port request: socket {} is already used by port {:?}; give every port its own \
             socket path",
            spec.socket.display(),
            p.name
        ));
    }
    Ok(())
}

/// The channel table: `{"channels": [{"channel": 100, "ports": [...]}], "unassociated": [...]}`.
fn channels(sw: &Switch) -> Value {
    let mut by_channel: BTreeMap<u16, Vec<String>> = BTreeMap::new();
    let mut unassociated = Vec::new();
    for p in sw.ports() {
        match p.channel {
            Some(c) => by_channel.entry(c).or_default().push(p.name),
            None => unassociated.push(p.name),
        }
    }
    let channels: Vec<Value> = by_channel
        .into_iter()
        .map(|(channel, ports)| {
            let uplinks = ChannelId::new(channel)
                .map(|c| sw.uplinks_on(c))
                .unwrap_or_default();
            json!({ "channel": channel, "ports": ports, "uplinks": uplinks })
        })
        .collect();
    // Uplinks may carry thousands of channels: listed once, with their ranges.
    let uplinks: Vec<Value> = sw
        .uplinks()
        .into_iter()
        .map(|u| json!({ "name": u.name, "channels": u.channels }))
        .collect();
    json!({ "channels": channels, "unassociated": unassociated, "uplinks": uplinks })
}

/// `{"allow": [[from, to], ...]}`: the directed pairs beyond equal channels.
pub fn policy_json(p: &Policy) -> Value {
    let allow: Vec<[u16; 2]> = p.allowed_pairs().map(|(a, b)| [a.get(), b.get()]).collect();
    json!({ "allow": allow })
}
