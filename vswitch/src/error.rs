//! Errors of the switch's control plane.

use std::path::PathBuf;

/// Why a control-plane operation failed.
#[derive(Debug, thiserror::Error)]
pub enum SwitchError {
    /// A port with this name exists.
    #[error("a port named {0:?} already exists: choose another name")]
    DuplicateName(String),
    /// A port uses this socket (possibly spelled differently), or is still stopping on it.
    #[error(
        "socket {0} is already used by port {1:?} (paths are compared after resolving `.`, `..` \
         and symlinks): give each port its own socket, or wait until a removed port has stopped"
    )]
    DuplicateSocket(PathBuf, String),
    /// No port with this name.
    #[error("no port named {0:?}: list ports to see their names")]
    NoSuchPort(String),
    /// The operation applies to VM ports only.
    #[error("{0:?} is an uplink: {1} applies to VM ports only")]
    NotAVm(String, &'static str),
    /// Port ids exhausted.
    #[error("too many ports (limit {0}): remove unused ports first")]
    TooManyPorts(usize),
    /// The registry refused the association.
    #[error("registry: {0}")]
    Registry(#[from] vswitch_channels::RegistryError),
    /// A capture could not start or failed.
    #[error(transparent)]
    Capture(#[from] crate::capture::CaptureError),
    /// Another VM port on the channel has this configured MAC.
    #[error(
        "MAC {0} is already port {2:?}'s on channel {1}: give each VM its own MAC (a live \
         migration's incoming port is added with migration-of={2})"
    )]
    DuplicateMac(
        vswitch_channels::MacAddr,
        vswitch_channels::ChannelId,
        String,
    ),
    /// A migration target that does not match its source.
    #[error("port {port:?} cannot be the migration target of {source_port:?}: {why}")]
    MigrationTarget {
        /// The target.
        port: String,
        /// The source it names.
        source_port: String,
        /// What does not match.
        why: String,
    },
    /// The vhost-user port could not start.
    #[error("port {0:?}: {1}")]
    Port(String, #[source] vswitch_vhost::PortError),
}
