//! What a port and the switch are asked to be: the validated form of configuration, whatever
//! its source (TOML file, `--port` flags, control API).

use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use vswitch_channels::{ChannelId, ChannelMode, MacAddr};
use vswitch_vhost::SocketRole;

use crate::police::RateLimit;

/// Default FDB aging time.
pub const DEFAULT_AGING: Duration = Duration::from_secs(300);
/// Default number of MACs one port may have learned at once.
pub const DEFAULT_MAC_LIMIT: u32 = 4096;
pub use vswitch_vhost::socket::DEFAULT_SOCKET_MODE;

/// A VM port, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortSpec {
    /// Unique port name.
    pub name: String,
    /// vhost-user socket path (unique).
    pub socket: PathBuf,
    /// Socket role: `listen` (the switch creates the socket) or `connect`.
    pub role: SocketRole,
    /// The VM's channel (S-VID).
    pub channel: ChannelId,
    /// Channel mode. Only VEB is accepted until uplinks exist.
    pub channel_mode: ChannelMode,
    /// The VM's MAC: when set, frames with another source MAC are dropped (source_spoof) and
    /// the MAC is offered to the guest in the virtio config space.
    pub mac: Option<MacAddr>,
    /// Most MACs this port may have in the FDB at once (`None`: the switch default).
    pub mac_limit: Option<u32>,
    /// MTU offered to the guest.
    pub mtu: u16,
    /// Queue pairs offered to the guest (`queues=`, 1..=16; docs/multiqueue.md).
    pub queues: u16,
    /// Permissions of the socket (listen role; `None`: the switch default).
    pub socket_mode: Option<u32>,
    /// Transmit-side rate limit (`rate=`, `burst=`, `pps=`); default: none.
    pub rate: RateLimit,
}

impl PortSpec {
    /// A listen-role VEB port with defaults.
    pub fn new(name: impl Into<String>, socket: impl Into<PathBuf>, channel: ChannelId) -> Self {
        PortSpec {
            name: name.into(),
            socket: socket.into(),
            role: SocketRole::Listen,
            channel,
            channel_mode: ChannelMode::Veb,
            mac: None,
            mac_limit: None,
            mtu: 1500,
            queues: 1,
            socket_mode: None,
            rate: RateLimit::default(),
        }
    }
}

/// Switch-wide settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SwitchSettings {
    /// FDB entries unused for this long are forgotten.
    pub aging: Duration,
    /// Default per-port MAC limit.
    pub mac_limit: u32,
    /// FDB capacity in entries (rounded up to a power of two of 8-entry buckets).
    pub fdb_capacity: usize,
    /// Busy-poll mode: one polling thread pinned to each listed CPU drains the ports' TX
    /// rings (ports spread round-robin). Empty: event-driven (EVENT_IDX kicks), the default.
    pub poll_cores: Vec<usize>,
    /// Event mode: how many datapath threads serve the ports (round-robin). Each polls while
    /// its ports have work and sleeps on their kick eventfds otherwise.
    pub event_threads: usize,
    /// Limits on the guest memory one frontend may map (`[switch] max_mem_regions`,
    /// `max_mem_mib`).
    pub mem_limits: vswitch_vhost::MemLimits,
    /// Default permissions of the ports' sockets (listen role).
    pub socket_mode: u32,
}

impl Default for SwitchSettings {
    fn default() -> Self {
        SwitchSettings {
            aging: DEFAULT_AGING,
            mac_limit: DEFAULT_MAC_LIMIT,
            fdb_capacity: 1 << 17,
            poll_cores: Vec::new(),
            event_threads: 1,
            mem_limits: vswitch_vhost::MemLimits::default(),
            socket_mode: DEFAULT_SOCKET_MODE,
        }
    }
}

/// A key under which two paths naming the same socket compare equal: absolute, `.` and `..`
/// resolved, and the directory's symlinks resolved where it exists.
pub fn socket_key(path: &Path) -> PathBuf {
    let abs = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()
            .map(|d| d.join(path))
            .unwrap_or_else(|_| path.to_path_buf())
    };
    if let (Some(dir), Some(file)) = (abs.parent(), abs.file_name()) {
        if let Ok(dir) = dir.canonicalize() {
            return dir.join(file);
        }
    }
    let mut norm = PathBuf::new();
    for c in abs.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                norm.pop();
            }
            other => norm.push(other),
        }
    }
    norm
}
