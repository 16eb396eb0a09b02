//! Configuration: a TOML file and `--port` flags, parsed and validated into a [`Config`]
//! before anything starts.
//!
//! ```toml
//! [switch]                 # all optional; flags override
//! ctl = "/run/vswitch/ctl.sock"  # the default; VSWITCH_CTL and --ctl override it
//! metrics = "127.0.0.1:9471"      # Prometheus /metrics over HTTP (off when absent)
//! stats_interval_s = 10
//! log_level = "info"
//! max_mem_regions = 64      # guest memory one frontend may map: regions,
//! max_mem_mib = 1048576     # and MiB (docs/robustness-memory.md)
//!
//! [fdb]                    # all optional
//! aging_s = 300
//! mac_limit = 4096         # default per-port limit
//! capacity = 131072
//!
//! [policy]                 # directed: frames of 100 may reach VMs on 200
//! allow = [[100, 200]]
//!
//! [[port]]
//! name = "vm1"
//! socket = "/run/vswitch/vm1.sock"
//! channel = 100
//! mac = "52:54:00:00:00:01"  # optional: locks the source MAC
//! mode = "listen"            # or "connect"
//! mac-limit = 64             # optional (mac_limit also accepted)
//! mtu = 1500                 # optional, 68..=9000
//! channel-mode = "veb"       # or "vepa" (mode = "vepa" is short for it): needs an uplink
//!
//! [[uplink]]                 # see `uplink` for every key
//! name = "up0"
//! kind = "dot1ad"            # or "vxlan", with local = "IP[:PORT]" and remote = ["IP", ...]
//! interface = "eth1"
//! channels = [100, "200-299"] # optional: every channel when left out
//! ```
//!
//! The same port as a flag: `--port vm1,socket=/run/vswitch/vm1.sock,channel=100,mac=...`,
//! and the uplink: `--uplink up0,kind=dot1ad,interface=eth1,channels=100+200-299`. File ports
//! (uplinks) come first, then flag ports (uplinks).

mod channel_list;
mod cpus;
mod error;
mod port;
mod raw;
mod service;
mod uplink;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use log::LevelFilter;
use vswitch_channels::{ChannelId, ChannelMode, Policy};
use vswitch_vhost::SocketRole;

pub use channel_list::ranges as channel_ranges;
pub use error::{ConfigError, Origin};
pub use port::{rate_limit, socket_key};
pub use raw::{RawNumber, RawPort};
pub use service::{ctl_from_file, CTL_ENV, DEFAULT_CTL};
pub use uplink::{RawUplink, DOT1AD_MTU, VXLAN_MTU};

use crate::spec::{PortSpec, SwitchSettings};
use crate::uplink::UplinkConfig;
use raw::{RawFdb, RawFile, RawSwitch};

/// What the command line gave: the file to read, the flags, and the overrides.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    /// `--config FILE`.
    pub file: Option<PathBuf>,
    /// `--port SPEC`, in order.
    pub ports: Vec<String>,
    /// `--uplink SPEC`, in order.
    pub uplinks: Vec<String>,
    /// `--ctl PATH` (overrides the environment and `[switch] ctl`).
    pub ctl: Option<PathBuf>,
    /// The environment's `VSWITCH_CTL` (overrides `[switch] ctl`).
    pub ctl_env: Option<PathBuf>,
    /// `--metrics ADDR` (overrides `[switch] metrics`).
    pub metrics: Option<String>,
    /// `--log-level LEVEL` (overrides `[switch] log_level`).
    pub log_level: Option<String>,
    /// `--stats-interval SECS` (overrides `[switch] stats_interval_s`).
    pub stats_interval_s: Option<u64>,
    /// `--poll-cores LIST` (overrides `[switch] poll_cores`).
    pub poll_cores: Option<String>,
    /// `--event-threads N` (overrides `[switch] event_threads`).
    pub event_threads: Option<u64>,
    /// `--state PATH` (overrides `[switch] state`): see `crate::state`.
    pub state: Option<PathBuf>,
}

/// A validated configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Ports, file ports first, then flag ports. At least one port or uplink, unless a state
    /// file is kept.
    pub ports: Vec<PortSpec>,
    /// Uplinks, file uplinks first, then flag uplinks. Configuration only: the control API
    /// neither adds nor removes them, and the state file does not hold them.
    pub uplinks: Vec<UplinkConfig>,
    /// Delivery policy.
    pub policy: Policy,
    /// Switch-wide settings.
    pub settings: SwitchSettings,
    /// Control socket path given by `--ctl`, `VSWITCH_CTL` or `[switch] ctl`, checked; `None`:
    /// [`DEFAULT_CTL`].
    pub ctl: Option<PathBuf>,
    /// Where to serve Prometheus `/metrics` over HTTP, if anywhere.
    pub metrics: Option<SocketAddr>,
    /// How often counters are logged.
    pub stats_interval: Option<Duration>,
    /// Log level, where the flag or the file set one (`None`: `RUST_LOG`, else info).
    pub log_level: Option<LevelFilter>,
    /// The state file (ports, channels and policy set through the control API), if kept.
    pub state: Option<PathBuf>,
}

impl Config {
    /// Reads the file (if any) and validates everything.
    pub fn load(src: &Sources) -> Result<Config, ConfigError> {
        let file = match &src.file {
            Some(path) => {
                let text =
                    std::fs::read_to_string(path).map_err(|source| ConfigError::ReadFile {
                        path: path.clone(),
                        source,
                    })?;
                Some((path.as_path(), text))
            }
            None => None,
        };
        Config::from_text(file.as_ref().map(|(p, t)| (*p, t.as_str())), src)
    }

    /// Validates a file's text (with the path it came from, for messages) and the flags.
    pub fn from_text(file: Option<(&Path, &str)>, src: &Sources) -> Result<Config, ConfigError> {
        let (path, raw) = match file {
            Some((path, text)) => (Some(path), RawFile::parse(path, text)?),
            None => (None, RawFile::default()),
        };
        let file_at = |line| Origin::File {
            path: path.map(Path::to_path_buf).unwrap_or_default(),
            line,
        };
        let mut ports: Vec<(PortSpec, Origin)> = Vec::new();
        for (i, rp) in raw.port.into_iter().enumerate() {
            let at = Origin::FilePort {
                path: path.map(Path::to_path_buf).unwrap_or_default(),
                index: i + 1,
                name: rp.name.clone(),
            };
            ports.push((port::port_spec(rp, &at)?, at));
        }
        for text in &src.ports {
            let at = Origin::Flag(text.clone());
            let rp = RawPort::parse_spec(text, &at)?;
            ports.push((port::port_spec(rp, &at)?, at));
        }
        let mut uplinks: Vec<(UplinkConfig, Origin)> = Vec::new();
        for (i, ru) in raw.uplink.into_iter().enumerate() {
            let at = Origin::FileUplink {
                path: path.map(Path::to_path_buf).unwrap_or_default(),
                index: i + 1,
                name: ru.name.clone(),
            };
            uplinks.push((uplink::uplink_config(ru, &at)?, at));
        }
        for text in &src.uplinks {
            let at = Origin::UplinkFlag(text.clone());
            let ru = RawUplink::parse_spec(text, &at)?;
            uplinks.push((uplink::uplink_config(ru, &at)?, at));
        }
        let state = src
            .state
            .clone()
            .or_else(|| raw.switch.as_ref()?.state.as_ref().map(PathBuf::from));
        // With a state file, a switch may start empty: its ports come through the API. With
        // an uplink only, it is a bridge for other hosts (reflective relay).
        if ports.is_empty() && uplinks.is_empty() && state.is_none() {
            return Err(ConfigError::NoPorts);
        }
        check_unique(&ports, &uplinks)?;
        for (spec, at) in &ports {
            port::check_socket(&spec.socket, spec.role, at)?;
        }
        let (uplinks, _): (Vec<UplinkConfig>, Vec<Origin>) = uplinks.into_iter().unzip();
        for (spec, at) in &ports {
            check_vepa(spec, &uplinks, at)?;
        }

        let policy = policy(
            raw.policy.map(|p| p.allow).unwrap_or_default(),
            &file_at(None),
        )?;
        let mut settings = settings(raw.fdb.unwrap_or_default(), &file_at(None))?;
        let mut sw = raw.switch.unwrap_or_default();
        settings.poll_cores = match (&src.poll_cores, sw.poll_cores.take()) {
            (Some(text), _) => {
                let at = Origin::Option("--poll-cores");
                cpus::poll_cores(&cpus::parse_list(text, &at)?, &at)?
            }
            (None, Some(list)) => cpus::poll_cores(&list, &file_at(None))?,
            (None, None) => Vec::new(),
        };
        settings.event_threads =
            event_threads(src.event_threads, sw.event_threads.take(), &file_at(None))?;
        settings.mem_limits = mem_limits(
            sw.max_mem_regions.take(),
            sw.max_mem_mib.take(),
            &file_at(None),
        )?;
        if let Some(mode) = sw.socket_mode.take() {
            settings.socket_mode =
                port::socket_mode(&mode, "[switch] socket_mode", &file_at(None))?;
        }
        let metrics = service::metrics(src.metrics.as_deref(), sw.metrics.take(), &file_at(None))?;
        let (ctl, stats_interval, log_level) = switch_options(sw, src, &file_at(None))?;
        if let Some(ctl) = &ctl {
            let at = match (&src.ctl, &src.ctl_env) {
                (Some(_), _) => Origin::Option("--ctl"),
                (None, Some(_)) => Origin::Option(CTL_ENV),
                (None, None) => file_at(None),
            };
            port::check_socket(ctl, SocketRole::Listen, &at)?;
            let key = port::socket_key(ctl);
            if let Some((_, first)) = ports
                .iter()
                .find(|(s, _)| port::socket_key(&s.socket) == key)
            {
                return Err(ConfigError::DuplicateSocket {
                    path: ctl.clone(),
                    first: Box::new(first.clone()),
                    second: Box::new(at),
                });
            }
        }
        Ok(Config {
            ports: ports.into_iter().map(|(s, _)| s).collect(),
            uplinks,
            policy,
            settings,
            ctl,
            metrics,
            stats_interval,
            log_level,
            state,
        })
    }
}

/// Validates one port given on the control API, as `NAME,key=value,...` text.
pub fn port_from_spec(text: &str) -> Result<PortSpec, ConfigError> {
    let at = Origin::Api("add-port");
    let spec = port::port_spec(RawPort::parse_spec(text, &at)?, &at)?;
    port::check_socket(&spec.socket, spec.role, &at)?;
    Ok(spec)
}

/// Validates one port given on the control API as an object (the keys of a `[[port]]` table).
pub fn port_from_json(value: serde_json::Value) -> Result<PortSpec, ConfigError> {
    let at = Origin::Api("add-port");
    let raw: RawPort = serde_json::from_value(value).map_err(|e| {
        let msg = e.to_string();
        match raw::unknown_field(&msg) {
            Some((key, expected)) => ConfigError::UnknownKey {
                at: at.clone(),
                key,
                expected,
            },
            None => ConfigError::MalformedSpec {
                at: at.clone(),
                detail: msg,
            },
        }
    })?;
    let spec = port::port_spec(raw, &at)?;
    port::check_socket(&spec.socket, spec.role, &at)?;
    Ok(spec)
}

/// Validates one port read from `at` (the state file): fields and socket path.
pub fn port_from_raw(raw: RawPort, at: &Origin) -> Result<PortSpec, ConfigError> {
    let spec = port::port_spec(raw, at)?;
    port::check_socket(&spec.socket, spec.role, at)?;
    Ok(spec)
}

/// Validates `[from, to]` pairs of S-VIDs into a policy.
pub fn policy_from_pairs(pairs: Vec<Vec<RawNumber>>, at: &Origin) -> Result<Policy, ConfigError> {
    policy(pairs, at)
}

/// Parses one S-VID given as a number or text.
pub fn parse_channel(raw: &serde_json::Value, at: &Origin) -> Result<ChannelId, ConfigError> {
    let n: RawNumber =
        serde_json::from_value(raw.clone()).map_err(|e| ConfigError::MalformedSpec {
            at: at.clone(),
            detail: format!("channel: {e}"),
        })?;
    port::channel_id(&n, at)
}

/// Refuses a VEPA port (given at `at`) unless one of `uplinks` carries its channel: its frames
/// would go nowhere.
pub fn check_vepa(
    spec: &PortSpec,
    uplinks: &[UplinkConfig],
    at: &Origin,
) -> Result<(), ConfigError> {
    if spec.channel_mode != ChannelMode::Vepa {
        return Ok(());
    }
    if uplinks.is_empty() {
        return Err(ConfigError::Vepa { at: at.clone() });
    }
    if !uplinks
        .iter()
        .any(|u| u.spec.channels.contains(spec.channel))
    {
        return Err(ConfigError::VepaNotCarried {
            at: at.clone(),
            channel: spec.channel,
        });
    }
    Ok(())
}

/// Every port and uplink has its own name, every port its own socket, every uplink its own
/// interface or local address.
fn check_unique(
    ports: &[(PortSpec, Origin)],
    uplinks: &[(UplinkConfig, Origin)],
) -> Result<(), ConfigError> {
    let mut names: HashMap<&str, &Origin> = HashMap::new();
    let mut sockets: HashMap<PathBuf, &Origin> = HashMap::new();
    let named = ports
        .iter()
        .map(|(s, at)| (s.name.as_str(), at))
        .chain(uplinks.iter().map(|(u, at)| (u.spec.name.as_str(), at)));
    for (name, at) in named {
        if let Some(first) = names.insert(name, at) {
            return Err(ConfigError::DuplicateName {
                name: name.to_owned(),
                first: Box::new(first.clone()),
                second: Box::new(at.clone()),
            });
        }
    }
    for (spec, at) in ports {
        if let Some(first) = sockets.insert(port::socket_key(&spec.socket), at) {
            return Err(ConfigError::DuplicateSocket {
                path: spec.socket.clone(),
                first: Box::new(first.clone()),
                second: Box::new(at.clone()),
            });
        }
    }
    for (i, (b, second)) in uplinks.iter().enumerate() {
        if let Some((_, first)) = uplinks[..i].iter().find(|(a, _)| uplink::conflict(a, b)) {
            return Err(ConfigError::DuplicateUplink {
                what: uplink::resource(b),
                first: Box::new(first.clone()),
                second: Box::new(second.clone()),
            });
        }
    }
    Ok(())
}

fn policy(pairs: Vec<Vec<RawNumber>>, at: &Origin) -> Result<Policy, ConfigError> {
    let mut allowed = Vec::with_capacity(pairs.len());
    for (i, pair) in pairs.iter().enumerate() {
        let entry = |detail: String| ConfigError::PolicyEntry {
            at: at.clone(),
            index: i + 1,
            detail,
        };
        let [from, to] = pair.as_slice() else {
            return Err(entry(format!(
                "has {} element(s), not 2 (a directed pair [from, to])",
                pair.len()
            )));
        };
        let id = |n: &RawNumber| {
            n.as_text()
                .parse::<ChannelId>()
                .map_err(|e| entry(format!("is not a pair of channels: {e}")))
        };
        allowed.push((id(from)?, id(to)?));
    }
    Ok(Policy::with_allowed(allowed))
}

fn settings(fdb: RawFdb, at: &Origin) -> Result<SwitchSettings, ConfigError> {
    let mut s = SwitchSettings::default();
    if let Some(v) = fdb.aging_s {
        let secs = v
            .in_range(1..=1_000_000)
            .ok_or_else(|| ConfigError::BadNumber {
                at: at.clone(),
                key: "[fdb] aging_s",
                value: v.to_string(),
                expected: "use a whole number of seconds in 1..=1000000 (default 300)",
            })?;
        s.aging = Duration::from_secs(secs);
    }
    if let Some(v) = fdb.mac_limit {
        s.mac_limit = port::mac_limit(&v, "[fdb] mac_limit", at)?;
    }
    if let Some(v) = fdb.capacity {
        let cap = v
            .in_range(1..=1 << 24)
            .and_then(|c| usize::try_from(c).ok())
            .ok_or_else(|| ConfigError::BadNumber {
                at: at.clone(),
                key: "[fdb] capacity",
                value: v.to_string(),
                expected: "use a whole number of entries in 1..=16777216 (default 131072)",
            })?;
        s.fdb_capacity = cap;
    }
    Ok(s)
}

type SwitchOptions = (Option<PathBuf>, Option<Duration>, Option<LevelFilter>);

fn switch_options(sw: RawSwitch, src: &Sources, at: &Origin) -> Result<SwitchOptions, ConfigError> {
    // Precedence: flag, environment, file (then the default, DEFAULT_CTL, at start).
    let ctl = src
        .ctl
        .clone()
        .or_else(|| src.ctl_env.clone())
        .or(sw.ctl.map(PathBuf::from));
    let bad_interval = |at: Origin, value: String| ConfigError::BadNumber {
        at,
        key: "stats interval",
        value,
        expected: "use a whole number of seconds, at least 1, or leave it out",
    };
    let stats_interval = match (src.stats_interval_s, sw.stats_interval_s) {
        (Some(0), _) => return Err(bad_interval(Origin::Option("--stats-interval"), "0".into())),
        (Some(s), _) => Some(Duration::from_secs(s)),
        (None, Some(v)) => {
            let secs = v
                .in_range(1..=u64::from(u32::MAX))
                .ok_or_else(|| bad_interval(at.clone(), v.to_string()))?;
            Some(Duration::from_secs(secs))
        }
        (None, None) => None,
    };
    let log_level = match (&src.log_level, sw.log_level) {
        (Some(l), _) => Some(level(l, Origin::Option("--log-level"))?),
        (None, Some(l)) => Some(level(&l, at.clone())?),
        (None, None) => None,
    };
    Ok((ctl, stats_interval, log_level))
}

/// Most event-mode datapath threads (more than the ports a host runs makes no sense).
const MAX_EVENT_THREADS: u64 = 256;

fn event_threads(
    flag: Option<u64>,
    file: Option<RawNumber>,
    at: &Origin,
) -> Result<usize, ConfigError> {
    let bad = |at: Origin, value: String| ConfigError::BadNumber {
        at,
        key: "event threads",
        value,
        expected: "use a whole number from 1 to 256, or leave it out (1)",
    };
    match (flag, file) {
        (Some(n), _) if (1..=MAX_EVENT_THREADS).contains(&n) => Ok(n as usize),
        (Some(n), _) => Err(bad(Origin::Option("--event-threads"), n.to_string())),
        (None, Some(v)) => v
            .in_range(1..=MAX_EVENT_THREADS)
            .map(|n| n as usize)
            .ok_or_else(|| bad(at.clone(), v.to_string())),
        (None, None) => Ok(1),
    }
}

/// `[switch] max_mem_regions` and `max_mem_mib`: the guest memory one frontend may map.
fn mem_limits(
    regions: Option<RawNumber>,
    mib: Option<RawNumber>,
    at: &Origin,
) -> Result<vswitch_vhost::MemLimits, ConfigError> {
    let mut limits = vswitch_vhost::MemLimits::default();
    if let Some(v) = regions {
        let max = u64::from(vswitch_vhost::MAX_MEM_REGIONS);
        limits.max_regions =
            v.in_range(1..=max)
                .map(|n| n as u32)
                .ok_or_else(|| ConfigError::BadNumber {
                    at: at.clone(),
                    key: "[switch] max_mem_regions",
                    value: v.to_string(),
                    expected: "use a whole number of regions in 1..=509 (default 64)",
                })?;
    }
    if let Some(v) = mib {
        let (lo, hi) = (
            vswitch_vhost::MIN_MEM_BYTES >> 20,
            vswitch_vhost::MAX_MEM_BYTES >> 20,
        );
        limits.max_bytes =
            v.in_range(lo..=hi)
                .map(|n| n << 20)
                .ok_or_else(|| ConfigError::BadNumber {
                    at: at.clone(),
                    key: "[switch] max_mem_mib",
                    value: v.to_string(),
                    expected: "use a whole number of MiB in 1..=134217728 (default 1048576, 1 TiB)",
                })?;
    }
    Ok(limits)
}

fn level(text: &str, at: Origin) -> Result<LevelFilter, ConfigError> {
    text.parse::<LevelFilter>()
        .map_err(|_| ConfigError::LogLevel {
            at,
            value: text.to_owned(),
        })
}
