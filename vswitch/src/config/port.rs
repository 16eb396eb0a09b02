//! One port: [`RawPort`] → [`PortSpec`], and the checks on a socket path that can be made
//! before anything is created.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileTypeExt;
use std::path::{Component, Path, PathBuf};

use vswitch_channels::{ChannelId, ChannelMode, MacAddr};
use vswitch_vhost::SocketRole;

use super::error::{truncate, ConfigError, Origin};
use super::raw::{RawNumber, RawPort};
use crate::police::{RateLimit, MAX_BURST_KB, MAX_PPS, MAX_RATE_MBIT};
use crate::spec::PortSpec;

/// Smallest MTU accepted (the IPv4 minimum).
pub const MIN_MTU: u16 = 68;
/// Largest MTU accepted (jumbo frames).
pub const MAX_MTU: u16 = 9000;
/// Largest per-port (or default) MAC limit accepted.
pub const MAX_MAC_LIMIT: u64 = 1 << 20;
/// The longest socket path a `sockaddr_un` holds (108 bytes with the terminating NUL).
pub const MAX_SOCKET_PATH: usize = 107;

/// Validates one port's fields (not its socket path: see [`check_socket`]).
pub fn port_spec(raw: RawPort, at: &Origin) -> Result<PortSpec, ConfigError> {
    let missing = |key| ConfigError::MissingKey {
        at: at.clone(),
        key,
    };
    let name = raw.name.ok_or_else(|| missing("name"))?;
    check_name(&name, at)?;
    let socket = raw.socket.ok_or_else(|| missing("socket"))?;
    let channel = raw.channel.ok_or_else(|| missing("channel"))?;
    let channel = channel_id(&channel, at)?;
    let mut spec = PortSpec::new(name, PathBuf::from(socket), channel);
    let explicit_mode = match raw.channel_mode {
        Some(mode) => Some(channel_mode(&mode, at)?),
        None => None,
    };
    spec.channel_mode = explicit_mode.unwrap_or_default();
    if let Some(mode) = raw.mode {
        match socket_role(&mode, at)? {
            Some(role) => spec.role = role,
            // `mode=vepa`: the channel mode, as `channel-mode=vepa`.
            None if explicit_mode == Some(ChannelMode::Veb) => {
                return Err(ConfigError::ModeConflict { at: at.clone() })
            }
            None => spec.channel_mode = ChannelMode::Vepa,
        }
    }
    if let Some(mac) = raw.mac {
        spec.mac = Some(unicast_mac(&mac, at)?);
    }
    if let Some(limit) = raw.mac_limit {
        spec.mac_limit = Some(mac_limit(&limit, "mac-limit", at)?);
    }
    if let Some(mtu) = raw.mtu {
        spec.mtu = mtu_value(&mtu, at)?;
    }
    if let Some(queues) = raw.queues {
        spec.queues = queue_pairs(&queues, at)?;
    }
    if let Some(mode) = raw.socket_mode {
        spec.socket_mode = Some(socket_mode(&mode, "socket-mode", at)?);
    }
    spec.rate = rate_limit(raw.rate, raw.burst, raw.pps, at)?;
    Ok(spec)
}

/// `rate=` (Mbit/s), `burst=` (KB, only with `rate=`) and `pps=`.
pub fn rate_limit(
    rate: Option<RawNumber>,
    burst: Option<RawNumber>,
    pps: Option<RawNumber>,
    at: &Origin,
) -> Result<RateLimit, ConfigError> {
    let number = |raw: &RawNumber, key, max: u64, expected| {
        raw.in_range(1..=max)
            .and_then(|v| u32::try_from(v).ok())
            .ok_or_else(|| ConfigError::BadNumber {
                at: at.clone(),
                key,
                value: truncate(&raw.to_string()),
                expected,
            })
    };
    let limit = RateLimit {
        rate_mbit: rate
            .map(|r| {
                number(
                    &r,
                    "rate",
                    MAX_RATE_MBIT,
                    "use a whole number of Mbit/s in 1..=1000000, e.g. rate=100",
                )
            })
            .transpose()?,
        burst_kb: burst
            .map(|b| {
                number(
                    &b,
                    "burst",
                    MAX_BURST_KB,
                    "use a whole number of KB in 1..=1000000, e.g. burst=64",
                )
            })
            .transpose()?,
        pps: pps
            .map(|p| {
                number(
                    &p,
                    "pps",
                    MAX_PPS,
                    "use a whole number of frames per second in 1..=1000000000",
                )
            })
            .transpose()?,
    };
    if limit.burst_kb.is_some() && limit.rate_mbit.is_none() {
        return Err(ConfigError::BadNumber {
            at: at.clone(),
            key: "burst",
            value: limit.burst_kb.map_or_else(String::new, |b| b.to_string()),
            expected: "burst= sizes the rate= bucket: give rate= too, or leave burst= out",
        });
    }
    Ok(limit)
}

/// A port name: 1 to 64 of `[A-Za-z0-9_.-]`.
pub fn check_name(name: &str, at: &Origin) -> Result<(), ConfigError> {
    let ok = (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(ConfigError::BadName {
            at: at.clone(),
            name: truncate(name),
        })
    }
}

/// An S-VID.
pub fn channel_id(raw: &RawNumber, at: &Origin) -> Result<ChannelId, ConfigError> {
    let bad = |value: String| ConfigError::BadNumber {
        at: at.clone(),
        key: "channel",
        value,
        expected: "use a whole S-VID in 1..=4094, e.g. 100",
    };
    match raw {
        // 1e308 is not a channel, and its digits are not worth printing.
        RawNumber::Float(_) => return Err(bad(raw.to_string())),
        // Text is quoted (and escaped): it may hold anything.
        RawNumber::Text(t) if t.len() > 8 => return Err(bad(format!("{:?}", truncate(t)))),
        _ => {}
    }
    raw.as_text()
        .parse::<ChannelId>()
        .map_err(|source| ConfigError::Channel {
            at: at.clone(),
            source,
        })
}

fn channel_mode(text: &str, at: &Origin) -> Result<ChannelMode, ConfigError> {
    text.parse::<ChannelMode>()
        .map_err(|source| ConfigError::ChannelMode {
            at: at.clone(),
            source,
        })
}

/// `mode`: the socket role, `listen` or `connect`; or `vepa` (`None`), short for
/// `channel-mode=vepa` (802.1Qbg calls VEPA a mode, and so do operators).
fn socket_role(text: &str, at: &Origin) -> Result<Option<SocketRole>, ConfigError> {
    if text.eq_ignore_ascii_case("listen") {
        Ok(Some(SocketRole::Listen))
    } else if text.eq_ignore_ascii_case("connect") {
        Ok(Some(SocketRole::Connect))
    } else if text.eq_ignore_ascii_case("vepa") {
        Ok(None)
    } else {
        Err(ConfigError::Mode {
            at: at.clone(),
            value: truncate(text),
        })
    }
}

fn unicast_mac(text: &str, at: &Origin) -> Result<MacAddr, ConfigError> {
    if text.len() > 17 {
        return Err(ConfigError::Mac {
            at: at.clone(),
            source: vswitch_channels::MacError::Malformed {
                input: truncate(text),
            },
        });
    }
    let mac = text.parse::<MacAddr>().map_err(|source| ConfigError::Mac {
        at: at.clone(),
        source,
    })?;
    if mac.is_multicast() {
        return Err(ConfigError::MulticastMac {
            at: at.clone(),
            mac,
        });
    }
    Ok(mac)
}

/// A MAC limit in `1..=MAX_MAC_LIMIT`.
pub fn mac_limit(raw: &RawNumber, key: &'static str, at: &Origin) -> Result<u32, ConfigError> {
    raw.in_range(1..=MAX_MAC_LIMIT)
        .and_then(|v| u32::try_from(v).ok())
        .ok_or_else(|| ConfigError::BadNumber {
            at: at.clone(),
            key,
            value: truncate(&raw.to_string()),
            expected: "use a whole number of MACs in 1..=1048576 (0 would drop every frame)",
        })
}

/// An MTU in `MIN_MTU..=MAX_MTU`.
pub fn mtu_value(raw: &RawNumber, at: &Origin) -> Result<u16, ConfigError> {
    raw.in_range(u64::from(MIN_MTU)..=u64::from(MAX_MTU))
        .and_then(|v| u16::try_from(v).ok())
        .ok_or_else(|| ConfigError::BadNumber {
            at: at.clone(),
            key: "mtu",
            value: truncate(&raw.to_string()),
            expected: "use a whole number of bytes in 68..=9000, e.g. 1500",
        })
}

/// `queues=`: queue pairs, 1..=[`vswitch_vhost::MAX_QUEUE_PAIRS`].
pub fn queue_pairs(raw: &RawNumber, at: &Origin) -> Result<u16, ConfigError> {
    raw.in_range(1..=u64::from(vswitch_vhost::MAX_QUEUE_PAIRS))
        .and_then(|v| u16::try_from(v).ok())
        .ok_or_else(|| ConfigError::BadNumber {
            at: at.clone(),
            key: "queues",
            value: truncate(&raw.to_string()),
            expected: "use a whole number of queue pairs in 1..=16, e.g. queues=4",
        })
}

/// Socket permissions: octal digits as text (`"0660"`, `"660"`, `"0o660"`), or a TOML octal
/// integer (`0o660`). A plain decimal integer (`660`) is refused: it is not what it looks like.
pub fn socket_mode(raw: &RawNumber, key: &'static str, at: &Origin) -> Result<u32, ConfigError> {
    let value = match raw {
        RawNumber::Int(v) => u32::try_from(*v).ok().filter(|v| *v <= 0o777),
        RawNumber::Float(_) => None,
        RawNumber::Text(t) => {
            let digits = t.strip_prefix("0o").unwrap_or(t);
            (!digits.is_empty() && digits.len() <= 4)
                .then(|| u32::from_str_radix(digits, 8).ok())
                .flatten()
                .filter(|v| *v <= 0o777)
        }
    };
    value.ok_or_else(|| ConfigError::BadNumber {
        at: at.clone(),
        key,
        value: truncate(&raw.to_string()),
        expected: "write the permissions in octal as text, e.g. \"0660\" (owner and group may \
                   connect), at most \"0777\"",
    })
}

/// Checks that a socket can be created (`Listen`) or connected to later (`Connect`) at `path`,
/// without creating anything.
pub fn check_socket(path: &Path, role: SocketRole, at: &Origin) -> Result<(), ConfigError> {
    let shown = PathBuf::from(truncate(&path.to_string_lossy()));
    let refuse = |reason: String| ConfigError::SocketPath {
        at: at.clone(),
        path: shown.clone(),
        reason,
    };
    let bytes = path.as_os_str().as_bytes();
    if bytes.is_empty() {
        return Err(refuse(
            "the path is empty; give a file path such as /run/vswitch/vm1.sock".into(),
        ));
    }
    if bytes.contains(&0) {
        return Err(refuse("the path contains a NUL byte".into()));
    }
    if bytes.len() > MAX_SOCKET_PATH {
        return Err(refuse(format!(
            "the path is {} bytes long and a Unix socket path holds at most {MAX_SOCKET_PATH}; \
             use a shorter path",
            bytes.len()
        )));
    }
    let names_a_file = bytes.last() != Some(&b'/')
        && matches!(path.components().next_back(), Some(Component::Normal(_)));
    if !names_a_file {
        return Err(refuse(
            "the path names a directory, not a socket file; add a file name, e.g. vm1.sock".into(),
        ));
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            return Err(refuse(format!(
                "{} is not a directory; choose a path in an existing directory",
                dir.display()
            )))
        }
        Err(_) => {
            return Err(ConfigError::SocketDirMissing {
                at: at.clone(),
                path: path.to_path_buf(),
                dir: dir.to_path_buf(),
            })
        }
    }
    if role == SocketRole::Listen && !writable(dir) {
        return Err(ConfigError::SocketDirNotWritable {
            at: at.clone(),
            path: path.to_path_buf(),
            dir: dir.to_path_buf(),
        });
    }
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => Ok(()),
        Ok(m) if m.is_dir() => Err(refuse(
            "a directory exists at that path; add a file name, e.g. vm1.sock".into(),
        )),
        Ok(_) => Err(refuse(
            "a file that is not a socket exists at that path and the switch will not delete \
             it; remove it or choose another path"
                .into(),
        )),
        Err(_) => Ok(()),
    }
}

/// True if this process may create entries in `dir`.
fn writable(dir: &Path) -> bool {
    let Ok(c) = CString::new(dir.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: `c` is a valid NUL-terminated string for the duration of the call.
    unsafe { libc::access(c.as_ptr(), libc::W_OK | libc::X_OK) == 0 }
}

pub use crate::spec::socket_key;
