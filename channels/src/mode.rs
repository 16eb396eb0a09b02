//! [`ChannelMode`] and [`ChannelInfo`]: what the registry records for a VM.

use std::fmt;
use std::str::FromStr;

use crate::error::ChannelError;
use crate::id::ChannelId;

/// How an 802.1Qbg S-channel forwards between VMs on the same host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum ChannelMode {
    /// Virtual Edge Bridge: the switch forwards locally between VMs of the channel (the default).
    #[default]
    Veb,
    /// Virtual Edge Port Aggregator: every frame goes to the adjacent bridge on the uplink, which
    /// may reflect it back (hairpin); the switch does not forward locally.
    Vepa,
}

impl ChannelMode {
    /// The lowercase name, `"veb"` or `"vepa"`.
    pub const fn as_str(self) -> &'static str {
        match self {
            ChannelMode::Veb => "veb",
            ChannelMode::Vepa => "vepa",
        }
    }
}

impl fmt::Display for ChannelMode {
    /// `veb` or `vepa`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ChannelMode {
    type Err = ChannelError;

    /// Parses `"veb"` or `"vepa"`, in any letter case.
    fn from_str(s: &str) -> Result<ChannelMode, ChannelError> {
        if s.eq_ignore_ascii_case("veb") {
            Ok(ChannelMode::Veb)
        } else if s.eq_ignore_ascii_case("vepa") {
            Ok(ChannelMode::Vepa)
        } else {
            Err(ChannelError::UnknownMode {
                input: s.to_owned(),
            })
        }
    }
}

/// A VM's channel and its mode: the value the registry maps a VM to.
///
/// Four bytes; `Option<ChannelInfo>` is four bytes too.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ChannelInfo {
    /// The channel (S-VID).
    pub id: ChannelId,
    /// The channel's forwarding mode.
    pub mode: ChannelMode,
}

impl ChannelInfo {
    /// A channel with the given mode.
    pub const fn new(id: ChannelId, mode: ChannelMode) -> ChannelInfo {
        ChannelInfo { id, mode }
    }

    /// A channel in the default mode, VEB.
    pub const fn veb(id: ChannelId) -> ChannelInfo {
        ChannelInfo::new(id, ChannelMode::Veb)
    }
}

impl From<ChannelId> for ChannelInfo {
    /// The channel in the default mode, VEB.
    fn from(id: ChannelId) -> ChannelInfo {
        ChannelInfo::veb(id)
    }
}

impl fmt::Display for ChannelInfo {
    /// `100/veb`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.id, self.mode)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_veb() {
        assert_eq!(ChannelMode::default(), ChannelMode::Veb);
    }

    #[test]
    fn parses_any_case() {
        for (s, m) in [
            ("veb", ChannelMode::Veb),
            ("VEB", ChannelMode::Veb),
            ("Vepa", ChannelMode::Vepa),
            ("vEpA", ChannelMode::Vepa),
        ] {
            assert_eq!(s.parse::<ChannelMode>(), Ok(m), "{s}");
        }
        for m in [ChannelMode::Veb, ChannelMode::Vepa] {
            assert_eq!(m.to_string().parse::<ChannelMode>(), Ok(m));
        }
    }

    #[test]
    fn rejects_unknown_mode() {
        for bad in ["", "vebx", " veb", "bridge", "vep"] {
            let err = bad.parse::<ChannelMode>();
            assert_eq!(
                err,
                Err(ChannelError::UnknownMode { input: bad.into() }),
                "{bad:?}"
            );
        }
        let msg = "x".parse::<ChannelMode>().map_err(|e| e.to_string());
        assert!(matches!(msg, Err(m) if m.contains("\"veb\" or \"vepa\"")));
    }

    #[test]
    fn info_is_small_and_displays() {
        assert_eq!(std::mem::size_of::<Option<ChannelInfo>>(), 4);
        let id = ChannelId::new(100).ok();
        let info = id.map(ChannelInfo::from);
        assert_eq!(info.map(|i| i.to_string()), Some("100/veb".to_owned()));
        let vepa = id.map(|id| ChannelInfo::new(id, ChannelMode::Vepa));
        assert_eq!(vepa.map(|i| i.to_string()), Some("100/vepa".to_owned()));
    }
}
