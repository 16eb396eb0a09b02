//! The configuration as written, before validation: the TOML file's tables, a control-API
//! port object, and the `--port NAME,key=value,...` text, all parsed into [`RawPort`] and
//! friends without judging any value.

use std::fmt;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::error::{truncate, ConfigError, Origin};
use super::uplink::RawUplink;

/// A number as written: TOML and JSON integers, but also strings (from `--port` text, or a
/// quoted value in a file) and floats, so that a wrong value gets our message, not serde's.
#[derive(Debug, Clone, PartialEq)]
pub enum RawNumber {
    /// An integer.
    Int(i64),
    /// A float (always refused, but with a clear message).
    Float(f64),
    /// Text, e.g. from `--port`.
    Text(String),
}

impl fmt::Display for RawNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RawNumber::Int(v) => write!(f, "{v}"),
            // 1e308 as written, not as its 309 digits.
            RawNumber::Float(v) if v.abs() >= 1e15 => write!(f, "{v:e}"),
            RawNumber::Float(v) => write!(f, "{v}"),
            RawNumber::Text(s) if looks_numeric(s) => f.write_str(&super::error::truncate(s)),
            RawNumber::Text(s) => write!(f, "{s:?}"),
        }
    }
}

/// `-12`, `12`, `1.5`: shown without quotes in messages.
fn looks_numeric(s: &str) -> bool {
    let digits = s.strip_prefix('-').unwrap_or(s);
    !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit() || b == b'.')
}

impl<'de> Deserialize<'de> for RawNumber {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<RawNumber, D::Error> {
        d.deserialize_any(NumberVisitor)
    }
}

/// Written back as it was read: a number stays a number, text stays text (the control client
/// sends what the user typed, and the server reads it as the configuration does).
impl Serialize for RawNumber {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            RawNumber::Int(v) => s.serialize_i64(*v),
            RawNumber::Float(v) => s.serialize_f64(*v),
            RawNumber::Text(t) => s.serialize_str(t),
        }
    }
}

struct NumberVisitor;

impl serde::de::Visitor<'_> for NumberVisitor {
    type Value = RawNumber;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a whole number")
    }

    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<RawNumber, E> {
        Ok(RawNumber::Int(v))
    }

    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<RawNumber, E> {
        Ok(i64::try_from(v).map_or_else(|_| RawNumber::Text(v.to_string()), RawNumber::Int))
    }

    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<RawNumber, E> {
        Ok(RawNumber::Float(v))
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<RawNumber, E> {
        Ok(RawNumber::Text(v.to_owned()))
    }
}

impl RawNumber {
    /// The value as an integer in `range`, if it is one.
    pub fn in_range(&self, range: std::ops::RangeInclusive<u64>) -> Option<u64> {
        let v = match self {
            RawNumber::Int(v) => u64::try_from(*v).ok()?,
            RawNumber::Float(_) => return None,
            RawNumber::Text(s) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => {
                s.parse().ok()?
            }
            RawNumber::Text(_) => return None,
        };
        range.contains(&v).then_some(v)
    }

    /// The digits as text, for [`vswitch_channels::ChannelId`]'s parser.
    pub fn as_text(&self) -> String {
        match self {
            RawNumber::Int(v) => v.to_string(),
            RawNumber::Float(v) => v.to_string(),
            RawNumber::Text(s) => s.clone(),
        }
    }
}

/// The keys of a port, for messages.
pub const PORT_KEYS: &str =
    "name, socket, channel, mac, mode, mac-limit, mtu, queues, channel-mode, socket-mode, rate, burst, pps";

/// One port as written: a `[[port]]` table, a control-API object, or parsed `--port` text.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawPort {
    /// Port name.
    pub name: Option<String>,
    /// Socket path.
    pub socket: Option<String>,
    /// S-VID.
    pub channel: Option<RawNumber>,
    /// The VM's MAC.
    pub mac: Option<String>,
    /// `listen` or `connect` (the socket role), or `vepa` (the channel mode, socket role
    /// listen).
    pub mode: Option<String>,
    /// Per-port MAC limit.
    #[serde(alias = "mac_limit")]
    pub mac_limit: Option<RawNumber>,
    /// MTU.
    pub mtu: Option<RawNumber>,
    /// Queue pairs.
    pub queues: Option<RawNumber>,
    /// `veb` (default) or `vepa` (needs an uplink carrying the port's channel).
    #[serde(alias = "channel_mode")]
    pub channel_mode: Option<String>,
    /// Permissions of the socket, octal (`"0660"`).
    #[serde(alias = "socket_mode")]
    pub socket_mode: Option<RawNumber>,
    /// Transmit rate limit, Mbit/s.
    pub rate: Option<RawNumber>,
    /// Its bucket depth, KB.
    pub burst: Option<RawNumber>,
    /// Transmit limit, frames per second.
    pub pps: Option<RawNumber>,
}

/// `[policy]`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPolicy {
    /// Directed pairs `[from, to]`.
    #[serde(default)]
    pub allow: Vec<Vec<RawNumber>>,
}

/// `[fdb]`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFdb {
    /// Aging time, seconds.
    #[serde(alias = "aging-s")]
    pub aging_s: Option<RawNumber>,
    /// Default per-port MAC limit.
    #[serde(alias = "mac-limit")]
    pub mac_limit: Option<RawNumber>,
    /// FDB capacity, entries.
    pub capacity: Option<RawNumber>,
}

/// `[switch]`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSwitch {
    /// Control socket path.
    pub ctl: Option<String>,
    /// Prometheus endpoint, `IP:PORT` (off when absent).
    pub metrics: Option<String>,
    /// Counter logging interval, seconds.
    #[serde(alias = "stats-interval-s")]
    pub stats_interval_s: Option<RawNumber>,
    /// Log level.
    #[serde(alias = "log-level")]
    pub log_level: Option<String>,
    /// Busy-poll CPUs.
    #[serde(alias = "poll-cores")]
    pub poll_cores: Option<Vec<RawNumber>>,
    /// Event-mode datapath threads.
    #[serde(alias = "event-threads")]
    pub event_threads: Option<RawNumber>,
    /// Most guest memory regions one frontend may map.
    #[serde(alias = "max-mem-regions")]
    pub max_mem_regions: Option<RawNumber>,
    /// Most guest memory one frontend may map, MiB.
    #[serde(alias = "max-mem-mib")]
    pub max_mem_mib: Option<RawNumber>,
    /// State file path.
    pub state: Option<String>,
    /// Default permissions of the ports' sockets, octal (`"0660"`).
    #[serde(alias = "socket-mode")]
    pub socket_mode: Option<RawNumber>,
}

/// The whole file.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFile {
    /// `[[port]]` tables.
    #[serde(default)]
    pub port: Vec<RawPort>,
    /// `[policy]`.
    pub policy: Option<RawPolicy>,
    /// `[fdb]`.
    pub fdb: Option<RawFdb>,
    /// `[switch]`.
    pub switch: Option<RawSwitch>,
    /// `[[uplink]]` tables.
    #[serde(default)]
    pub uplink: Vec<RawUplink>,
}

impl RawFile {
    /// Parses the text of the file at `path`.
    pub fn parse(path: &Path, text: &str) -> Result<RawFile, ConfigError> {
        toml::from_str(text).map_err(|e| {
            let line = e.span().map(|s| line_of(text, s.start));
            let at = Origin::File {
                path: path.to_path_buf(),
                line,
            };
            match unknown_field(e.message()) {
                Some((key, expected)) => ConfigError::UnknownKey { at, key, expected },
                None => ConfigError::Toml {
                    at,
                    detail: e.message().trim().to_owned(),
                },
            }
        })
    }
}

/// The 1-based line of byte `offset` in `text`.
fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// Splits serde's "unknown field `x`, expected one of `a`, `b`" into the key and the advice.
pub fn unknown_field(message: &str) -> Option<(String, String)> {
    let rest = message.strip_prefix("unknown field `")?;
    let (key, rest) = rest.split_once('`')?;
    let expected = rest.trim_start_matches(',').trim();
    let expected = expected.strip_prefix("expected ").unwrap_or(expected);
    let expected = expected.strip_prefix("one of ").unwrap_or(expected);
    let expected = if expected.is_empty() {
        "remove it".to_owned()
    } else {
        format!("remove it or use a valid key: {expected}")
    };
    Some((key.to_owned(), expected))
}

impl RawPort {
    /// Parses `NAME,key=value,...` (the first element may also be written `name=NAME`).
    pub fn parse_spec(text: &str, at: &Origin) -> Result<RawPort, ConfigError> {
        let malformed = |detail: String| ConfigError::MalformedSpec {
            at: at.clone(),
            detail,
        };
        if text.trim().is_empty() {
            return Err(malformed("the port spec is empty".into()));
        }
        let mut raw = RawPort::default();
        for (i, item) in text.split(',').enumerate() {
            let (key, value) = match item.split_once('=') {
                Some((k, v)) => (k, v),
                None if i == 0 => ("name", item),
                None => {
                    return Err(malformed(format!(
                        "{:?} is not a key=value pair (only the first element, the port \
                         name, stands alone)",
                        truncate(item)
                    )))
                }
            };
            if value.is_empty() {
                return Err(malformed(format!("key `{}` has no value", truncate(key))));
            }
            let value = value.to_owned();
            let slot_taken = match key {
                "name" => set(&mut raw.name, value),
                "socket" => set(&mut raw.socket, value),
                "channel" => set(&mut raw.channel, RawNumber::Text(value)),
                "mac" => set(&mut raw.mac, value),
                "mode" => set(&mut raw.mode, value),
                "mac-limit" | "mac_limit" => set(&mut raw.mac_limit, RawNumber::Text(value)),
                "mtu" => set(&mut raw.mtu, RawNumber::Text(value)),
                "queues" => set(&mut raw.queues, RawNumber::Text(value)),
                "channel-mode" | "channel_mode" => set(&mut raw.channel_mode, value),
                "socket-mode" | "socket_mode" => set(&mut raw.socket_mode, RawNumber::Text(value)),
                "rate" => set(&mut raw.rate, RawNumber::Text(value)),
                "burst" => set(&mut raw.burst, RawNumber::Text(value)),
                "pps" => set(&mut raw.pps, RawNumber::Text(value)),
                "" => return Err(malformed(format!("{:?} has an empty key", truncate(item)))),
                other => {
                    return Err(ConfigError::UnknownKey {
                        at: at.clone(),
                        key: truncate(other),
                        expected: format!("remove it or use a valid key: {PORT_KEYS}"),
                    })
                }
            };
            if slot_taken {
                return Err(ConfigError::DuplicateKey {
                    at: at.clone(),
                    key: truncate(key),
                });
            }
        }
        Ok(raw)
    }
}

/// Stores `value` in an empty slot; true if the slot was already set.
pub(super) fn set<T>(slot: &mut Option<T>, value: T) -> bool {
    if slot.is_some() {
        return true;
    }
    *slot = Some(value);
    false
}
