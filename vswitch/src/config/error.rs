//! [`ConfigError`] and [`Origin`]: what was wrong with the configuration, where, and how to fix
//! it. Every message is meant to be shown to an operator as it is.

use std::fmt;
use std::io;
use std::path::PathBuf;

use thiserror::Error;
use vswitch_channels::{ChannelError, ChannelId, MacAddr, MacError};

/// Longest value (in characters) quoted whole in a message; longer ones are cut.
pub const MAX_SHOWN: usize = 80;

/// `text`, cut to [`MAX_SHOWN`] characters with its full length noted, for messages.
pub fn truncate(text: &str) -> String {
    if text.chars().count() <= MAX_SHOWN {
        return text.to_owned();
    }
    let head: String = text.chars().take(MAX_SHOWN).collect();
    format!("{head}... ({} bytes)", text.len())
}

/// Where a piece of configuration came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// The configuration file as a whole, optionally at a line (1-based).
    File {
        /// The file given to `--config`.
        path: PathBuf,
        /// The line, where known.
        line: Option<usize>,
    },
    /// One `[[port]]` table of the configuration file.
    FilePort {
        /// The file given to `--config`.
        path: PathBuf,
        /// The table's position among the `[[port]]` tables, 1-based.
        index: usize,
        /// The port's name, where it has one.
        name: Option<String>,
    },
    /// One `[[uplink]]` table of the configuration file.
    FileUplink {
        /// The file given to `--config`.
        path: PathBuf,
        /// The table's position among the `[[uplink]]` tables, 1-based.
        index: usize,
        /// The uplink's name, where it has one.
        name: Option<String>,
    },
    /// One `--port SPEC` flag, with its text.
    Flag(String),
    /// One `--uplink SPEC` flag, with its text.
    UplinkFlag(String),
    /// Another command-line option, e.g. `--ctl`.
    Option(&'static str),
    /// A request on the control API, by command name.
    Api(&'static str),
    /// An item of the state file (`--state`), e.g. `port #2 ("vm2")`.
    State {
        /// The state file.
        path: PathBuf,
        /// Which item.
        item: String,
    },
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::File {
                path,
                line: Some(line),
            } => write!(f, "{} line {line}", path.display()),
            Origin::File { path, line: None } => write!(f, "{}", path.display()),
            Origin::FilePort {
                path,
                index,
                name: Some(name),
            } => write!(f, "{}, [[port]] #{index} ({name:?})", path.display()),
            Origin::FilePort {
                path,
                index,
                name: None,
            } => write!(f, "{}, [[port]] #{index}", path.display()),
            Origin::FileUplink {
                path,
                index,
                name: Some(name),
            } => write!(f, "{}, [[uplink]] #{index} ({name:?})", path.display()),
            Origin::FileUplink {
                path,
                index,
                name: None,
            } => write!(f, "{}, [[uplink]] #{index}", path.display()),
            Origin::Flag(text) => write!(f, "--port {:?}", truncate(text)),
            Origin::UplinkFlag(text) => write!(f, "--uplink {:?}", truncate(text)),
            Origin::Option(flag) => f.write_str(flag),
            Origin::Api(cmd) => write!(f, "{cmd} request"),
            Origin::State { path, item } => write!(f, "state file {}, {item}", path.display()),
        }
    }
}

/// A configuration that was refused. Nothing was started.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// The file given to `--config` cannot be read.
    #[error("cannot read config file {}: {source}; check the path given to --config", path.display())]
    ReadFile {
        /// The path given.
        path: PathBuf,
        /// Why it cannot be read.
        #[source]
        source: io::Error,
    },
    /// The file is not valid TOML, or a value has the wrong type.
    #[error("{at}: {detail}; fix the file (`vswitch run --help` shows the format)")]
    Toml {
        /// Where.
        at: Origin,
        /// The parser's message.
        detail: String,
    },
    /// A key that means nothing here (a typo, or a key of another table).
    #[error("{at}: unknown key `{key}`; {expected}")]
    UnknownKey {
        /// Where.
        at: Origin,
        /// The key given.
        key: String,
        /// Which keys are valid.
        expected: String,
    },
    /// The same key twice in one `--port` flag.
    #[error("{at}: key `{key}` is given twice; give each key once")]
    DuplicateKey {
        /// Where.
        at: Origin,
        /// The repeated key.
        key: String,
    },
    /// A `--port` flag whose text does not have the `NAME,key=value,...` shape.
    #[error(
        "{at}: {detail}; write NAME,socket=PATH,channel=SVID[,mac=MAC][,mode=listen|connect]\
         [,mac-limit=N][,mtu=N][,queues=N], e.g. vm1,socket=/run/vm1.sock,channel=100"
    )]
    MalformedSpec {
        /// Where.
        at: Origin,
        /// What is wrong with the text.
        detail: String,
    },
    /// A port without one of the keys every port needs.
    #[error(
        "{at}: missing `{key}`; every port needs a name, a socket and a channel, \
         e.g. vm1,socket=/run/vm1.sock,channel=100"
    )]
    MissingKey {
        /// Where.
        at: Origin,
        /// The missing key.
        key: &'static str,
    },
    /// A port name that is empty, too long or has characters other switches or labels choke on.
    #[error("{at}: port name {name:?} is not valid; use 1 to 64 letters, digits, '-', '_' or '.'")]
    BadName {
        /// Where.
        at: Origin,
        /// The name given.
        name: String,
    },
    /// An invalid S-VID.
    #[error("{at}: {source}")]
    Channel {
        /// Where.
        at: Origin,
        /// Why it is not a channel.
        #[source]
        source: ChannelError,
    },
    /// A channel mode that is not `veb` or `vepa`.
    #[error("{at}: {source}")]
    ChannelMode {
        /// Where.
        at: Origin,
        /// Why it is not a mode.
        #[source]
        source: ChannelError,
    },
    /// VEPA was asked for, and no uplink is configured.
    #[error(
        "{at}: channel mode vepa sends every frame of the port to the adjacent bridge over an \
         uplink, and no uplink is configured; add one (--uplink NAME,kind=dot1ad,interface=IF \
         or an [[uplink]] table) or leave the port in veb mode (the default: remove \
         mode=vepa / channel-mode=vepa)"
    )]
    Vepa {
        /// Where.
        at: Origin,
    },
    /// A VEPA port on a channel that no uplink carries: its frames could go nowhere.
    #[error(
        "{at}: channel mode vepa sends every frame of the port to the adjacent bridge over an \
         uplink, and no uplink carries channel {channel}; add {channel} to an uplink's \
         channels, or leave the port in veb mode (the default: remove mode=vepa / \
         channel-mode=vepa)"
    )]
    VepaNotCarried {
        /// Where.
        at: Origin,
        /// The port's channel.
        channel: ChannelId,
    },
    /// `mode=vepa` (the channel mode) and `channel-mode=veb` on one port.
    #[error(
        "{at}: mode=vepa and channel-mode=veb contradict each other; keep one of them \
         (mode=vepa is short for channel-mode=vepa with the default socket role, listen)"
    )]
    ModeConflict {
        /// Where.
        at: Origin,
    },
    /// A socket role other than listen or connect.
    #[error(
        "{at}: mode {value:?} is unknown; use mode=listen (the switch creates the socket: \
         QEMU's default), mode=connect (the frontend created it: QEMU server=on) or mode=vepa \
         (802.1Qbg VEPA through an uplink; socket role listen)"
    )]
    Mode {
        /// Where.
        at: Origin,
        /// The mode given.
        value: String,
    },
    /// A text that is not a MAC address.
    #[error("{at}: {source}")]
    Mac {
        /// Where.
        at: Origin,
        /// Why it is not a MAC.
        #[source]
        source: MacError,
    },
    /// A group address given as a VM's MAC.
    #[error(
        "{at}: MAC {mac} is a multicast (group) address and cannot be a VM's own address; \
         give a unicast MAC (first octet even, e.g. 52:54:00:12:34:56) or leave `mac` out"
    )]
    MulticastMac {
        /// Where.
        at: Origin,
        /// The MAC given.
        mac: MacAddr,
    },
    /// A numeric setting out of its range, or not a whole number.
    #[error("{at}: {key} {value} is not valid; {expected}")]
    BadNumber {
        /// Where.
        at: Origin,
        /// The key.
        key: &'static str,
        /// The value given, as written.
        value: String,
        /// What is accepted.
        expected: &'static str,
    },
    /// The metrics endpoint is not an `IP:PORT` address.
    #[error(
        "{at}: metrics address {value:?} is not IP:PORT; write e.g. 127.0.0.1:9471 (Prometheus \
         scrapes http://ADDR/metrics), or leave it out to serve no metrics"
    )]
    MetricsAddress {
        /// Where.
        at: Origin,
        /// The value given.
        value: String,
    },
    /// Two ports with one name.
    #[error(
        "port name {name:?} is used twice ({first} and {second}); give every port and uplink \
         its own name"
    )]
    DuplicateName {
        /// The name.
        name: String,
        /// Where it was first given.
        first: Box<Origin>,
        /// Where it was given again.
        second: Box<Origin>,
    },
    /// Two ports (or a port and the control socket) on one socket path.
    #[error(
        "socket {} is used twice ({first} and {second}); give every port its own socket path",
        path.display()
    )]
    DuplicateSocket {
        /// The path.
        path: PathBuf,
        /// Where it was first given.
        first: Box<Origin>,
        /// Where it was given again.
        second: Box<Origin>,
    },
    /// The socket's directory does not exist.
    #[error(
        "{at}: cannot use socket {}: its directory {} does not exist; create it \
         (mkdir -p {}) or choose another path",
        path.display(), dir.display(), dir.display()
    )]
    SocketDirMissing {
        /// Where.
        at: Origin,
        /// The socket path.
        path: PathBuf,
        /// The missing directory.
        dir: PathBuf,
    },
    /// The switch may not create files in the socket's directory.
    #[error(
        "{at}: cannot create socket {}: directory {} is not writable by this user; choose a \
         writable directory or fix its permissions",
        path.display(), dir.display()
    )]
    SocketDirNotWritable {
        /// Where.
        at: Origin,
        /// The socket path.
        path: PathBuf,
        /// The directory.
        dir: PathBuf,
    },
    /// A socket path that cannot be a socket, for the reason given.
    #[error("{at}: cannot use socket {}: {reason}", path.display())]
    SocketPath {
        /// Where.
        at: Origin,
        /// The socket path.
        path: PathBuf,
        /// Why, and what to do instead.
        reason: String,
    },
    /// A `[policy] allow` entry that is not a pair of S-VIDs.
    #[error("{at}: [policy] allow entry #{index} {detail}; write pairs of S-VIDs, e.g. allow = [[100, 200]]")]
    PolicyEntry {
        /// Where.
        at: Origin,
        /// The entry's position, 1-based.
        index: usize,
        /// What is wrong.
        detail: String,
    },
    /// An unknown log level.
    #[error("{at}: log level {value:?} is unknown; use off, error, warn, info, debug or trace")]
    LogLevel {
        /// Where.
        at: Origin,
        /// The level given.
        value: String,
    },
    /// A busy-poll CPU list that cannot be used.
    #[error(
        "{at}: poll cores: {detail}; list distinct CPUs this process may run on (see taskset -p \
         or nproc), or leave busy-poll off"
    )]
    PollCores {
        /// Where.
        at: Origin,
        /// Which CPU and why.
        detail: String,
    },
    /// An `--uplink` flag whose text does not have the `NAME,kind=...,key=value,...` shape.
    #[error(
        "{at}: {detail}; write NAME,kind=dot1ad,interface=IF[,channels=LIST]\
         [,reflective-relay=on|off][,mac-limit=N][,mtu=N] or NAME,kind=vxlan,local=IP[:PORT],\
         remote=IP[,remote=IP...][,channels=LIST][,mac-limit=N][,mtu=N], e.g. \
         up0,kind=dot1ad,interface=eth1"
    )]
    MalformedUplink {
        /// Where.
        at: Origin,
        /// What is wrong with the text.
        detail: String,
    },
    /// An uplink without one of the keys its kind needs.
    #[error("{at}: missing `{key}`; {advice}")]
    UplinkMissingKey {
        /// Where.
        at: Origin,
        /// The missing key.
        key: &'static str,
        /// What to write.
        advice: &'static str,
    },
    /// An uplink kind that is not dot1ad or vxlan.
    #[error(
        "{at}: uplink kind {value:?} is unknown; use kind=dot1ad (802.1ad S-tags on an Ethernet \
         interface) or kind=vxlan (VXLAN over UDP)"
    )]
    UplinkKind {
        /// Where.
        at: Origin,
        /// The kind given.
        value: String,
    },
    /// A key given to an uplink of a kind it does not apply to.
    #[error("{at}: `{key}` does not apply to a {kind} uplink; {advice}")]
    UplinkKeyForKind {
        /// Where.
        at: Origin,
        /// The key.
        key: &'static str,
        /// The uplink's kind.
        kind: &'static str,
        /// What to do instead.
        advice: &'static str,
    },
    /// A VXLAN address (`local`, `remote`) that cannot be used.
    #[error("{at}: {key} {detail}")]
    UplinkAddress {
        /// Where.
        at: Origin,
        /// `local` or `remote`.
        key: &'static str,
        /// The value given (quoted), what is wrong with it, and what to write.
        detail: String,
    },
    /// A channel list that is not one.
    #[error(
        "{at}: channels: {detail}; list S-VIDs (1..=4094) and ranges joined by '+', e.g. \
         channels=100+200-299 (in a file: channels = [100, \"200-299\"]), or leave it out to \
         carry every channel"
    )]
    UplinkChannels {
        /// Where.
        at: Origin,
        /// What is wrong.
        detail: String,
    },
    /// A `reflective-relay` value that is not on or off.
    #[error("{at}: reflective-relay {value:?} is not valid; use on or off (default off)")]
    UplinkSwitch {
        /// Where.
        at: Origin,
        /// The value given.
        value: String,
    },
    /// An `xdp` value that is not auto, on or off.
    #[error(
        "{at}: xdp {value:?} is not valid; use auto (AF_XDP where it runs, else AF_PACKET; the \
         default), on (AF_XDP or fail) or off (AF_PACKET)"
    )]
    UplinkXdp {
        /// Where.
        at: Origin,
        /// The value given.
        value: String,
    },
    /// A network interface that cannot be an uplink's.
    #[error("{at}: interface {name:?} {reason}")]
    Interface {
        /// Where.
        at: Origin,
        /// The name given.
        name: String,
        /// What is wrong, and what to do.
        reason: String,
    },
    /// Two uplinks on one interface, or on one local VXLAN address.
    #[error(
        "{what} is used by two uplinks ({first} and {second}); an interface or a local UDP \
         address serves one uplink: give each uplink its own"
    )]
    DuplicateUplink {
        /// The interface or address.
        what: String,
        /// Where it was first given.
        first: Box<Origin>,
        /// Where it was given again.
        second: Box<Origin>,
    },
    /// No port at all.
    #[error(
        "no ports configured: at least one port or uplink is needed; add --port \
         NAME,socket=PATH,channel=SVID or a [[port]] table in the file given to --config"
    )]
    NoPorts,
}
