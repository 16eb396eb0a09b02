//! One uplink: `--uplink NAME,kind=...,key=value,...` text and `[[uplink]]` tables
//! ([`RawUplink`]) → [`UplinkConfig`], with the checks that can be made before anything
//! starts: the interface exists here, the addresses can be a VTEP's.
//!
//! ```text
//! NAME,kind=dot1ad,interface=IF[,channels=LIST][,reflective-relay=on|off][,mac-limit=N][,mtu=N]
//!      [,xdp=auto|on|off]
//! NAME,kind=vxlan,local=IP[:PORT],remote=IP[,remote=IP...][,channels=LIST][,mac-limit=N][,mtu=N]
//! ```
//!
//! `LIST` joins channels and ranges with `+` (`100+200-299`): `,` separates the keys. No
//! `channels`: every channel, 1..=4094.

use std::ffi::CString;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::str::FromStr;

use serde::Deserialize;

use super::channel_list::{self, RawChannels, SEPARATOR};
use super::error::{truncate, ConfigError, Origin};
use super::port;
use super::raw::{set, RawNumber};
use crate::port::UplinkSpec;
use crate::uplink::{AfXdp, Transport, UplinkConfig, VXLAN_PORT};

/// The keys of an uplink, for messages.
pub const UPLINK_KEYS: &str =
    "name, kind, interface, local, remote, channels, reflective-relay, mac-limit, mtu, xdp";

/// Default MTU of a dot1ad uplink: the S-tag's 4 bytes fit beside a 1500-byte payload on
/// Ethernet interfaces (the interface's MTU must allow them).
pub const DOT1AD_MTU: u16 = 1500;
/// Default MTU of a vxlan uplink: a 1500-byte underlay less VXLAN's 50 bytes (outer Ethernet
/// not counted: IPv4 20 + UDP 8 + VXLAN 8 + inner Ethernet 14), as Linux's VXLAN devices.
pub const VXLAN_MTU: u16 = 1450;
/// Linux's limit on interface names, the terminating NUL included.
const IFNAMSIZ: usize = 16;

/// One uplink as written: an `[[uplink]]` table, or parsed `--uplink` text.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawUplink {
    /// Uplink name (unique among ports and uplinks).
    pub name: Option<String>,
    /// `dot1ad` or `vxlan`.
    pub kind: Option<String>,
    /// dot1ad: the network interface.
    pub interface: Option<String>,
    /// vxlan: local address, optionally with the UDP port.
    pub local: Option<String>,
    /// vxlan: remote VTEPs.
    #[serde(alias = "remotes")]
    pub remote: Option<RawAddrs>,
    /// Channels carried (none: every channel).
    pub channels: Option<RawChannels>,
    /// dot1ad: 802.1Qbg reflective relay.
    #[serde(alias = "reflective_relay")]
    pub reflective_relay: Option<RawOnOff>,
    /// Most MACs learned behind the uplink at once.
    #[serde(alias = "mac_limit")]
    pub mac_limit: Option<RawNumber>,
    /// Largest IP packet carried for a guest (the MTU to give guests).
    pub mtu: Option<RawNumber>,
    /// dot1ad: AF_XDP (`auto`, `on`) or AF_PACKET (`off`); in TOML also `true` / `false`.
    pub xdp: Option<RawOnOff>,
}

/// Addresses as written: one text (`remote = "192.0.2.2"`) or a list; repeated `remote=` in a
/// flag.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RawAddrs(pub Vec<String>);

impl<'de> Deserialize<'de> for RawAddrs {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<RawAddrs, D::Error> {
        d.deserialize_any(AddrsVisitor)
    }
}

struct AddrsVisitor;

impl<'de> serde::de::Visitor<'de> for AddrsVisitor {
    type Value = RawAddrs;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an IP address as text, or a list of them, e.g. [\"192.0.2.2\", \"192.0.2.3\"]")
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<RawAddrs, E> {
        Ok(RawAddrs(vec![v.to_owned()]))
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<RawAddrs, A::Error> {
        let mut out = Vec::new();
        while let Some(a) = seq.next_element::<String>()? {
            out.push(a);
        }
        Ok(RawAddrs(out))
    }
}

/// On or off as written: a TOML boolean, or text (`on`, `off`, `true`, `false`).
#[derive(Debug, Clone, PartialEq)]
pub enum RawOnOff {
    /// A boolean.
    Bool(bool),
    /// Text, e.g. from `--uplink`.
    Text(String),
}

impl<'de> Deserialize<'de> for RawOnOff {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<RawOnOff, D::Error> {
        d.deserialize_any(OnOffVisitor)
    }
}

struct OnOffVisitor;

impl serde::de::Visitor<'_> for OnOffVisitor {
    type Value = RawOnOff;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("true, false, \"on\" or \"off\"")
    }

    fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<RawOnOff, E> {
        Ok(RawOnOff::Bool(v))
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<RawOnOff, E> {
        Ok(RawOnOff::Text(v.to_owned()))
    }
}

impl RawUplink {
    /// Parses `NAME,key=value,...` (the first element may also be written `name=NAME`).
    /// `remote` may be repeated; every other key is given once.
    pub fn parse_spec(text: &str, at: &Origin) -> Result<RawUplink, ConfigError> {
        let malformed = |detail: String| ConfigError::MalformedUplink {
            at: at.clone(),
            detail,
        };
        if text.trim().is_empty() {
            return Err(malformed("the uplink spec is empty".into()));
        }
        let mut raw = RawUplink::default();
        let mut last_key = "";
        for (i, item) in text.split(',').enumerate() {
            let (key, value) = match item.split_once('=') {
                Some((k, v)) => (k, v),
                None if i == 0 => ("name", item),
                None => return Err(malformed(not_a_pair(item, last_key))),
            };
            if value.is_empty() {
                return Err(malformed(format!("key `{}` has no value", truncate(key))));
            }
            let value = value.to_owned();
            let (slot_taken, key) = match key {
                "name" => (set(&mut raw.name, value), "name"),
                "kind" => (set(&mut raw.kind, value), "kind"),
                "interface" => (set(&mut raw.interface, value), "interface"),
                "local" => (set(&mut raw.local, value), "local"),
                "remote" | "remotes" => {
                    raw.remote
                        .get_or_insert_with(RawAddrs::default)
                        .0
                        .push(value);
                    (false, "remote")
                }
                "channels" => (set(&mut raw.channels, RawChannels::Text(value)), "channels"),
                "reflective-relay" | "reflective_relay" => (
                    set(&mut raw.reflective_relay, RawOnOff::Text(value)),
                    "reflective-relay",
                ),
                "mac-limit" | "mac_limit" => {
                    (set(&mut raw.mac_limit, RawNumber::Text(value)), "mac-limit")
                }
                "mtu" => (set(&mut raw.mtu, RawNumber::Text(value)), "mtu"),
                "xdp" => (set(&mut raw.xdp, RawOnOff::Text(value)), "xdp"),
                "" => return Err(malformed(format!("{:?} has an empty key", truncate(item)))),
                other => {
                    return Err(ConfigError::UnknownKey {
                        at: at.clone(),
                        key: truncate(other),
                        expected: format!("remove it or use a valid key: {UPLINK_KEYS}"),
                    })
                }
            };
            if slot_taken {
                return Err(ConfigError::DuplicateKey {
                    at: at.clone(),
                    key: key.to_owned(),
                });
            }
            last_key = key;
        }
        Ok(raw)
    }
}

/// Why `item` (not the first) is not a `key=value` pair, with the likely intent after
/// `channels=` or `remote=`.
fn not_a_pair(item: &str, last_key: &str) -> String {
    let looks_like_channels = !item.is_empty()
        && item
            .bytes()
            .all(|b| b.is_ascii_digit() || b == b'-' || b == SEPARATOR as u8);
    let shown = truncate(item);
    if last_key == "channels" && looks_like_channels {
        format!(
            "{shown:?} is not a key=value pair: ',' separates the keys, so join a channel list \
             with '{SEPARATOR}' (channels=100{SEPARATOR}200)"
        )
    } else if last_key == "remote" && IpAddr::from_str(item).is_ok() {
        format!(
            "{shown:?} is not a key=value pair: give each remote VTEP its own remote= \
             (remote=192.0.2.2,remote=192.0.2.3)"
        )
    } else {
        format!(
            "{shown:?} is not a key=value pair (only the first element, the uplink name, stands \
             alone)"
        )
    }
}

/// The transport kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Dot1ad,
    Vxlan,
}

impl Kind {
    fn parse(text: &str, at: &Origin) -> Result<Kind, ConfigError> {
        if text.eq_ignore_ascii_case("dot1ad") {
            Ok(Kind::Dot1ad)
        } else if text.eq_ignore_ascii_case("vxlan") {
            Ok(Kind::Vxlan)
        } else {
            Err(ConfigError::UplinkKind {
                at: at.clone(),
                value: truncate(text),
            })
        }
    }

    fn name(self) -> &'static str {
        match self {
            Kind::Dot1ad => "dot1ad",
            Kind::Vxlan => "vxlan",
        }
    }
}

/// Validates one uplink's fields, and that its interface exists (dot1ad).
pub fn uplink_config(raw: RawUplink, at: &Origin) -> Result<UplinkConfig, ConfigError> {
    let missing = |key, advice| ConfigError::UplinkMissingKey {
        at: at.clone(),
        key,
        advice,
    };
    let name = raw.name.ok_or_else(|| {
        missing(
            "name",
            "every uplink needs a name and a kind, e.g. up0,kind=dot1ad,interface=eth1",
        )
    })?;
    port::check_name(&name, at)?;
    let kind = raw.kind.ok_or_else(|| {
        missing(
            "kind",
            "every uplink needs a kind, e.g. kind=dot1ad (802.1ad S-tags on an Ethernet interface) \
             or kind=vxlan (VXLAN over UDP)",
        )
    })?;
    let kind = Kind::parse(&kind, at)?;
    let channels = match &raw.channels {
        Some(list) => channel_list::parse(list, at)?,
        None => channel_list::all(),
    };
    let mac_limit = match &raw.mac_limit {
        Some(v) => Some(port::mac_limit(v, "mac-limit", at)?),
        None => None,
    };
    let mtu = match &raw.mtu {
        Some(v) => port::mtu_value(v, at)?,
        None if kind == Kind::Dot1ad => DOT1AD_MTU,
        None => VXLAN_MTU,
    };
    let reflective_relay = match &raw.reflective_relay {
        Some(v) => on_off(v, at)?,
        None => false,
    };
    let not_for = |given: bool, key, advice| match given {
        true => Err(ConfigError::UplinkKeyForKind {
            at: at.clone(),
            key,
            kind: kind.name(),
            advice,
        }),
        false => Ok(()),
    };
    let transport = match kind {
        Kind::Dot1ad => {
            let advice = "local and remote are a vxlan uplink's; remove them, or use kind=vxlan";
            not_for(raw.local.is_some(), "local", advice)?;
            not_for(raw.remote.is_some(), "remote", advice)?;
            let interface = raw.interface.ok_or_else(|| {
                missing(
                    "interface",
                    "a dot1ad uplink trunks on a network interface, e.g. interface=eth1",
                )
            })?;
            check_interface(&interface, at)?;
            let xdp = match &raw.xdp {
                Some(RawOnOff::Bool(true)) => AfXdp::On,
                Some(RawOnOff::Bool(false)) => AfXdp::Off,
                Some(RawOnOff::Text(text)) => {
                    AfXdp::parse(text).ok_or_else(|| ConfigError::UplinkXdp {
                        at: at.clone(),
                        value: truncate(text),
                    })?
                }
                None => AfXdp::Auto,
            };
            Transport::Dot1ad { interface, xdp }
        }
        Kind::Vxlan => {
            not_for(
                raw.xdp.is_some(),
                "xdp",
                "xdp= picks a dot1ad uplink's I/O path (AF_XDP or AF_PACKET); a vxlan uplink \
                 uses UDP sockets: remove it, or use kind=dot1ad",
            )?;
            not_for(
                raw.interface.is_some(),
                "interface",
                "a vxlan uplink sends from its local address, routed by the kernel; remove \
                 interface, or use kind=dot1ad",
            )?;
            not_for(
                reflective_relay,
                "reflective-relay",
                "reflective relay (the bridge side of VEPA) is for a dot1ad uplink facing VEPA \
                 stations on one Ethernet; remove it, or use kind=dot1ad",
            )?;
            let local = raw.local.ok_or_else(|| {
                missing(
                    "local",
                    "a vxlan uplink needs this host's underlay address, e.g. local=192.0.2.1 \
                     (UDP port 4789) or local=192.0.2.1:4789",
                )
            })?;
            let local = local_addr(&local, at)?;
            let remotes = raw.remote.map(|r| r.0).unwrap_or_default();
            if remotes.is_empty() {
                return Err(missing(
                    "remote",
                    "a vxlan uplink needs at least one remote VTEP, e.g. remote=192.0.2.2 \
                     (repeat remote= for more)",
                ));
            }
            let remotes = remote_addrs(&remotes, local, at)?;
            Transport::Vxlan { local, remotes }
        }
    };
    Ok(UplinkConfig {
        spec: UplinkSpec {
            name,
            channels,
            mac_limit,
            reflective_relay,
        },
        transport,
        mtu,
    })
}

fn on_off(raw: &RawOnOff, at: &Origin) -> Result<bool, ConfigError> {
    match raw {
        RawOnOff::Bool(b) => Ok(*b),
        RawOnOff::Text(t) if ["on", "true"].iter().any(|w| t.eq_ignore_ascii_case(w)) => Ok(true),
        RawOnOff::Text(t) if ["off", "false"].iter().any(|w| t.eq_ignore_ascii_case(w)) => {
            Ok(false)
        }
        RawOnOff::Text(t) => Err(ConfigError::UplinkSwitch {
            at: at.clone(),
            value: truncate(t),
        }),
    }
}

/// A Linux interface name that exists in this network namespace.
fn check_interface(name: &str, at: &Origin) -> Result<(), ConfigError> {
    let bad = |reason: &str| ConfigError::Interface {
        at: at.clone(),
        name: truncate(name),
        reason: reason.to_owned(),
    };
    let valid = (1..IFNAMSIZ).contains(&name.len())
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'/' && b != b':');
    let invalid = "is not a valid interface name: 1 to 15 characters, without '/', ':' or spaces";
    if !valid {
        return Err(bad(invalid));
    }
    let c = CString::new(name).map_err(|_| bad(invalid))?;
    // SAFETY: `c` is a valid NUL-terminated string for the duration of the call.
    let index = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if index == 0 {
        return Err(bad(
            "does not exist in this network namespace; list the interfaces with `ip link` (the \
             switch uses the namespace it runs in: ip netns exec NS vswitch run ...)",
        ));
    }
    Ok(())
}

fn is_unicast(ip: IpAddr) -> bool {
    !ip.is_unspecified() && !ip.is_multicast() && ip != IpAddr::V4(Ipv4Addr::BROADCAST)
}

/// `IP` (UDP port 4789) or `IP:PORT` (`[IPv6]:PORT`), a unicast address or the unspecified
/// one (every local address).
fn local_addr(text: &str, at: &Origin) -> Result<SocketAddr, ConfigError> {
    let bad = |reason: &str| ConfigError::UplinkAddress {
        at: at.clone(),
        key: "local",
        detail: format!("{:?} {reason}", truncate(text)),
    };
    let addr = match (SocketAddr::from_str(text), IpAddr::from_str(text)) {
        (Ok(a), _) => a,
        (_, Ok(ip)) => SocketAddr::new(ip, VXLAN_PORT),
        _ => {
            return Err(bad(
                "is not an IP address or IP:PORT; write e.g. local=192.0.2.1 (UDP port 4789), \
                 local=192.0.2.1:4789 or local=[2001:db8::1]:4789",
            ))
        }
    };
    if addr.port() == 0 {
        return Err(bad(
            "has UDP port 0: the remotes send to a fixed port; leave the port out (4789) or give \
             one",
        ));
    }
    if !addr.ip().is_unspecified() && !is_unicast(addr.ip()) {
        return Err(bad(
            "is not a unicast address; give this host's address on the underlay network",
        ));
    }
    Ok(addr)
}

/// Remote VTEPs: unicast addresses of `local`'s family, not `local`'s, each once.
fn remote_addrs(
    texts: &[String],
    local: SocketAddr,
    at: &Origin,
) -> Result<Vec<IpAddr>, ConfigError> {
    let mut out: Vec<IpAddr> = Vec::with_capacity(texts.len());
    for text in texts {
        let bad = |reason: String| ConfigError::UplinkAddress {
            at: at.clone(),
            key: "remote",
            detail: format!("{:?} {reason}", truncate(text)),
        };
        let ip =
            match IpAddr::from_str(text) {
                Ok(ip) => ip,
                Err(_) if SocketAddr::from_str(text).is_ok() => {
                    return Err(bad(format!(
                        "has a port; a remote is an address only, and it receives on local's UDP \
                     port ({}); write remote=IP",
                        local.port()
                    )))
                }
                Err(_) => return Err(bad(
                    "is not an IP address; write e.g. remote=192.0.2.2 (repeat remote= for more \
                     VTEPs)"
                        .into(),
                )),
            };
        if !is_unicast(ip) {
            return Err(bad(
                "is not a unicast address; list each remote VTEP's own address (flooding \
                 reaches them one copy each)"
                    .into(),
            ));
        }
        if ip.is_ipv4() != local.is_ipv4() {
            let family = |v4: bool| if v4 { "IPv4" } else { "IPv6" };
            return Err(bad(format!(
                "is {} and local {} is {}; a vxlan uplink's addresses are of one family",
                family(ip.is_ipv4()),
                local.ip(),
                family(local.is_ipv4())
            )));
        }
        if ip == local.ip() {
            return Err(bad(
                "is the local address; list the other VTEPs, not this one".into(),
            ));
        }
        if out.contains(&ip) {
            return Err(bad("is listed twice".into()));
        }
        out.push(ip);
    }
    Ok(out)
}

/// What an uplink occupies on this host, which no other uplink may: its interface, or its
/// local UDP address.
pub fn resource(cfg: &UplinkConfig) -> String {
    match &cfg.transport {
        Transport::Dot1ad { interface, .. } => format!("interface {interface}"),
        Transport::Vxlan { local, .. } => format!("local address {local}"),
    }
}

/// True when two uplinks cannot run side by side: one interface, or local UDP addresses that
/// overlap (same port, and the same address or a wildcard one).
pub fn conflict(a: &UplinkConfig, b: &UplinkConfig) -> bool {
    match (&a.transport, &b.transport) {
        (Transport::Dot1ad { interface: x, .. }, Transport::Dot1ad { interface: y, .. }) => x == y,
        (Transport::Vxlan { local: x, .. }, Transport::Vxlan { local: y, .. }) => {
            x.port() == y.port()
                && (x.ip() == y.ip() || x.ip().is_unspecified() || y.ip().is_unspecified())
        }
        _ => false,
    }
}
