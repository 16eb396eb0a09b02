//! Errors of the port crate.

use std::path::PathBuf;

/// Why a port could not be started.
#[derive(Debug, thiserror::Error)]
pub enum PortError {
    /// The socket's directory does not exist.
    #[error(
        "cannot create socket {0}: its directory does not exist; create it or choose another path"
    )]
    SocketDir(PathBuf),
    /// Binding the listening socket failed.
    #[error("cannot listen on socket {0}: {1}; check the path is writable and not in use")]
    Bind(PathBuf, #[source] std::io::Error),
    /// A process listens on the socket: it is never taken over.
    #[error(
        "socket {0} is in use: a process (another vswitch?) listens on it, and a live socket is \
         never replaced; stop that process or choose another path"
    )]
    InUse(PathBuf),
    /// Something other than a socket is at the path.
    #[error(
        "cannot create socket {0}: something that is not a socket (a file, directory or \
         symlink) exists there and will not be deleted; remove it or choose another path"
    )]
    NotASocket(PathBuf),
    /// Queue size not a power of two in range.
    #[error("max queue size {0} invalid: use a power of two in 256..=32768")]
    QueueSize(u16),
    /// Queue pairs out of range.
    #[error("{0} queue pairs invalid: use 1..=16")]
    QueuePairs(u16),
    /// Guest memory limits out of range.
    #[error(
        "guest memory limits {0:?} invalid: use max_regions in 1..=509 and max_bytes from 1 MiB \
         to 128 TiB"
    )]
    MemLimits(crate::mem_table::MemLimits),
    /// A thread or eventfd could not be created.
    #[error("cannot start port thread or eventfd: {0}")]
    Thread(#[source] std::io::Error),
    /// The vhost-user daemon could not be created.
    #[error("cannot create vhost-user daemon: {0}")]
    Daemon(String),
}
