//! The state file's contents: what is written (from the running switch), and what is read
//! back (parsed strictly, then every port and the policy checked as the configuration is).
//!
//! ```json
//! {
//!   "format": "vswitch-state",
//!   "version": 1,
//!   "ports": [
//!     {"name": "vm2", "socket": "/run/vswitch/vm2.sock", "mode": "listen", "channel": 200,
//!      "mac": "52:54:00:00:01:02", "mtu": 1500},
//!     {"name": "vm5", "socket": "/run/vswitch/vm5.sock", "mode": "listen", "channel": null,
//!      "mtu": 1500}
//!   ],
//!   "policy": {"allow": [[200, 300]]},
//!   "config": {"ports": [...], "policy": {"allow": []}}
//! }
//! ```
//!
//! `channel: null` is a port on no channel (disassociated). `config` is the configuration's
//! ports and policy when the file was written (see [`super`] for how it is used).

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;
use vswitch_channels::{ChannelId, ChannelMode, Policy};
use vswitch_vhost::SocketRole;

use super::error::StateError;
use crate::config::{self, Origin, RawNumber, RawPort};
use crate::spec::PortSpec;
use crate::uplink::UplinkConfig;
use crate::Switch;

/// The `format` of every state file.
pub const FORMAT: &str = "vswitch-state";
/// The version written and the only one read.
pub const VERSION: u64 = 1;
/// Most ports a state file may hold (the switch's port table size).
const MAX_PORTS: usize = crate::fdb::MAX_PORTS;

/// One port as saved: the keys of a `[[port]]` table (and of an `add-port` object), with the
/// channel the port is on now, `None` for no channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct PortRecord {
    /// Port name.
    pub name: String,
    /// Socket path.
    pub socket: String,
    /// `listen` or `connect`.
    pub mode: &'static str,
    /// The channel now (`null`: disassociated).
    pub channel: Option<u16>,
    /// Locked MAC.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    /// Per-port MAC limit, if the port has its own.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mac_limit: Option<u32>,
    /// MTU.
    pub mtu: u16,
    /// Queue pairs; left out for 1, the default (files written before multiqueue stay the
    /// same).
    #[serde(skip_serializing_if = "is_one")]
    pub queues: u16,
    /// Socket permissions, octal text, if the port has its own.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub socket_mode: Option<String>,
    /// `vepa`; left out for VEB, the default (files written before VEPA stay the same).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub channel_mode: Option<&'static str>,
    /// Rate limit, Mbit/s, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate: Option<u32>,
    /// Its burst, KB, if set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub burst: Option<u32>,
    /// Frame-rate limit, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pps: Option<u32>,
}

impl PortRecord {
    fn new(spec: &PortSpec, channel: Option<ChannelId>) -> PortRecord {
        PortRecord {
            name: spec.name.clone(),
            // Every socket path came from UTF-8 text (TOML, flags, JSON).
            socket: spec.socket.to_string_lossy().into_owned(),
            mode: match spec.role {
                SocketRole::Listen => "listen",
                SocketRole::Connect => "connect",
            },
            channel: channel.map(ChannelId::get),
            mac: spec.mac.map(|m| m.to_string()),
            mac_limit: spec.mac_limit,
            mtu: spec.mtu,
            queues: spec.queues,
            socket_mode: spec.socket_mode.map(|m| format!("{m:04o}")),
            channel_mode: match spec.channel_mode {
                ChannelMode::Veb => None,
                ChannelMode::Vepa => Some(ChannelMode::Vepa.as_str()),
            },
            rate: spec.rate.rate_mbit,
            burst: spec.rate.burst_kb,
            pps: spec.rate.pps,
        }
    }
}

fn is_one(v: &u16) -> bool {
    *v == 1
}

/// The delivery policy's extra pairs, sorted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PolicyRecord {
    /// Directed pairs `[from, to]`.
    pub allow: Vec<[u16; 2]>,
}

impl PolicyRecord {
    fn new(p: &Policy) -> PolicyRecord {
        let mut allow: Vec<[u16; 2]> = p.allowed_pairs().map(|(a, b)| [a.get(), b.get()]).collect();
        allow.sort_unstable();
        allow.dedup();
        PolicyRecord { allow }
    }
}

/// Ports, their channels and the policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Contents {
    /// Ports.
    pub ports: Vec<PortRecord>,
    /// Policy.
    pub policy: PolicyRecord,
}

impl Contents {
    /// What a configuration asks for (ports sorted by name, so that reordering the file's
    /// tables is not a change).
    pub fn of_config(ports: &[PortSpec], policy: &Policy) -> Contents {
        let mut ports: Vec<PortRecord> = ports
            .iter()
            .map(|s| PortRecord::new(s, Some(s.channel)))
            .collect();
        ports.sort_by(|a, b| a.name.cmp(&b.name));
        Contents {
            ports,
            policy: PolicyRecord::new(policy),
        }
    }

    /// What the switch runs now. The caller holds the journal lock, so no control change runs
    /// between the two loads.
    pub fn of_switch(sw: &Switch) -> Contents {
        let table = sw.core().ports.load();
        let reg = sw.core().registry.load();
        let ports = table
            .iter()
            .filter_map(|(id, e)| {
                Some(PortRecord::new(
                    &e.vm()?.spec,
                    reg.channel_of(id).map(|c| c.id),
                ))
            })
            .collect();
        Contents {
            ports,
            policy: PolicyRecord::new(&sw.policy()),
        }
    }
}

#[derive(Serialize)]
struct Document<'a> {
    format: &'static str,
    version: u64,
    ports: &'a [PortRecord],
    policy: &'a PolicyRecord,
    config: &'a Contents,
}

/// The file's bytes for `now`, written over a configuration asking for `config`.
pub fn render(now: &Contents, config: &Contents) -> Vec<u8> {
    let doc = Document {
        format: FORMAT,
        version: VERSION,
        ports: &now.ports,
        policy: &now.policy,
        config,
    };
    // Serializing plain strings and numbers cannot fail.
    let mut bytes = serde_json::to_vec_pretty(&doc).unwrap_or_default();
    bytes.push(b'\n');
    bytes
}

/// The JSON value of `c`, as [`Saved::config`] is compared with it.
pub fn to_value(c: &Contents) -> Value {
    serde_json::to_value(c).unwrap_or(Value::Null)
}

/// Read first, loosely, so that another program's JSON or a newer version gets its own message.
#[derive(Deserialize)]
struct Header {
    format: Option<Value>,
    version: Option<Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDocument {
    #[allow(dead_code)]
    format: Value,
    #[allow(dead_code)]
    version: Value,
    ports: Vec<SavedPortRaw>,
    policy: SavedPolicyRaw,
    config: Value,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SavedPolicyRaw {
    allow: Vec<Vec<RawNumber>>,
}

/// A port as read: a `[[port]]` table's keys; `channel` must be there (`null`: no channel).
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct SavedPortRaw {
    name: Option<String>,
    socket: Option<String>,
    mode: Option<String>,
    #[serde(default, deserialize_with = "present")]
    channel: Option<Option<RawNumber>>,
    mac: Option<String>,
    mac_limit: Option<RawNumber>,
    mtu: Option<RawNumber>,
    queues: Option<RawNumber>,
    socket_mode: Option<RawNumber>,
    channel_mode: Option<String>,
    rate: Option<RawNumber>,
    burst: Option<RawNumber>,
    pps: Option<RawNumber>,
}

/// A key that is there: `Some(value)`, where the value may be `null` (`Some(None)`).
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

/// A state file, parsed but not yet checked.
pub struct Parsed {
    ports: Vec<SavedPortRaw>,
    policy: SavedPolicyRaw,
    /// The configuration's ports and policy when the file was written.
    pub config: Value,
}

/// One port to restore: its spec and the channel it is on (`None`: no channel).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restore {
    /// The port (its `channel` is the one below where there is one).
    pub spec: PortSpec,
    /// Its channel.
    pub channel: Option<ChannelId>,
}

/// A state file's ports and policy, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Saved {
    /// Ports in the order saved.
    pub ports: Vec<Restore>,
    /// The policy.
    pub policy: Policy,
}

/// Parses the file's text strictly: JSON, this format and version, known keys only.
pub fn parse(path: &Path, bytes: &[u8]) -> Result<Parsed, StateError> {
    let refused = |reason: String| StateError::Refused {
        path: path.to_path_buf(),
        reason,
    };
    let header: Header =
        serde_json::from_slice(bytes).map_err(|e| refused(format!("is not a state file: {e}")))?;
    if header.format.as_ref().and_then(Value::as_str) != Some(FORMAT) {
        return Err(refused(format!(
            "is not a state file (it has no \"format\": \"{FORMAT}\")"
        )));
    }
    match header.version.as_ref().and_then(Value::as_u64) {
        Some(VERSION) => {}
        Some(v) => {
            return Err(refused(format!(
                "has version {v}, and this switch reads version {VERSION} only (written by a \
                 newer vswitch?)"
            )))
        }
        None => return Err(refused("has no valid \"version\"".into())),
    }
    let doc: RawDocument =
        serde_json::from_slice(bytes).map_err(|e| refused(format!("is malformed: {e}")))?;
    if doc.ports.len() > MAX_PORTS {
        return Err(refused(format!(
            "has {} ports, more than a switch can have ({MAX_PORTS})",
            doc.ports.len()
        )));
    }
    Ok(Parsed {
        ports: doc.ports,
        policy: doc.policy,
        config: doc.config,
    })
}

impl Parsed {
    /// Checks every port and the policy as the configuration's are checked (names, sockets,
    /// channels, MACs, limits; unique names and sockets; not the control socket; not an
    /// uplink's name; a VEPA port's channel carried by an uplink).
    pub fn check(
        self,
        path: &Path,
        ctl: Option<&Path>,
        uplinks: &[UplinkConfig],
    ) -> Result<Saved, StateError> {
        let invalid = |source| StateError::Invalid {
            path: path.to_path_buf(),
            source: Box::new(source),
        };
        let mut names = HashSet::new();
        let mut sockets: HashSet<PathBuf> = ctl.map(config::socket_key).into_iter().collect();
        let mut ports = Vec::with_capacity(self.ports.len());
        for (i, p) in self.ports.into_iter().enumerate() {
            let item = match &p.name {
                Some(n) if n.len() <= 64 => format!("port #{} ({n:?})", i + 1),
                _ => format!("port #{}", i + 1),
            };
            let at = Origin::State {
                path: path.to_path_buf(),
                item,
            };
            let channel = match p.channel {
                None => {
                    return Err(invalid(config::ConfigError::MissingKey {
                        at,
                        key: "channel",
                    }))
                }
                Some(c) => c,
            };
            // A port on no channel is checked with a placeholder channel it never joins.
            let raw = RawPort {
                name: p.name,
                socket: p.socket,
                channel: Some(channel.clone().unwrap_or(RawNumber::Int(1))),
                mac: p.mac,
                mode: p.mode,
                mac_limit: p.mac_limit,
                mtu: p.mtu,
                queues: p.queues,
                channel_mode: p.channel_mode,
                socket_mode: p.socket_mode,
                rate: p.rate,
                burst: p.burst,
                pps: p.pps,
            };
            let spec = config::port_from_raw(raw, &at).map_err(invalid)?;
            if channel.is_some() {
                config::check_vepa(&spec, uplinks, &at).map_err(invalid)?;
            }
            let refuse = |what: &str| StateError::Refused {
                path: path.to_path_buf(),
                reason: format!("has {what} twice (at port #{})", i + 1),
            };
            if !names.insert(spec.name.clone()) {
                return Err(refuse(&format!("port name {:?}", spec.name)));
            }
            if uplinks.iter().any(|u| u.spec.name == spec.name) {
                return Err(StateError::Refused {
                    path: path.to_path_buf(),
                    reason: format!(
                        "has port #{} named {:?}, and the configuration has an uplink of that \
                         name (added since the file was written?)",
                        i + 1,
                        spec.name
                    ),
                });
            }
            if !sockets.insert(config::socket_key(&spec.socket)) {
                return Err(refuse(&format!(
                    "socket {} (or the control socket)",
                    spec.socket.display()
                )));
            }
            let channel = channel.map(|_| spec.channel);
            ports.push(Restore { spec, channel });
        }
        let at = Origin::State {
            path: path.to_path_buf(),
            item: "policy".into(),
        };
        let policy = config::policy_from_pairs(self.policy.allow, &at).map_err(invalid)?;
        Ok(Saved { ports, policy })
    }
}
