//! The control API: a Unix socket speaking one JSON request / response per line
//! ([`proto`]), served by [`CtlServer`] and used by `vswitch ctl` through [`request`].

mod client;
pub mod handler;
pub mod proto;
mod server;
pub mod show;
mod table;

use std::io;
use std::path::PathBuf;

use thiserror::Error;

pub use client::request;
pub use server::CtlServer;

/// What went wrong starting the control server or talking to it.
#[derive(Debug, Error)]
pub enum CtlError {
    /// Another process serves the control socket.
    #[error(
        "control socket {} is in use by another process (another vswitch?); stop it or choose \
         another --ctl path",
        path.display()
    )]
    InUse {
        /// The socket path.
        path: PathBuf,
    },
    /// A file that is not a socket is in the way.
    #[error(
        "control socket {}: a file that is not a socket exists there and will not be deleted; \
         remove it or choose another --ctl path",
        path.display()
    )]
    NotASocket {
        /// The socket path.
        path: PathBuf,
    },
    /// The socket cannot be created.
    #[error(
        "cannot listen on control socket {}: {source}; check the directory exists and is writable",
        path.display()
    )]
    Bind {
        /// The socket path.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// No thread could be started.
    #[error("cannot start the control API thread: {0}")]
    Thread(#[source] io::Error),
    /// The request cannot be written as JSON.
    #[error("cannot encode the control request: {0}")]
    Encode(#[source] serde_json::Error),
    /// The client cannot reach the server.
    #[error(
        "cannot connect to control socket {}: {} — {hint}",
        path.display(), cause_text(error)
    )]
    Connect {
        /// The socket path.
        path: PathBuf,
        /// Why (in the message, not as a source: the message already says it in words).
        error: io::Error,
        /// What to do about it ([`connect_hint`]).
        hint: &'static str,
    },
    /// The connection failed mid-request.
    #[error("control socket {}: {source}", path.display())]
    Io {
        /// The socket path.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The server accepted the connection but did not answer in time.
    #[error(
        "control socket {}: no answer within {secs} s; the switch may be busy or hung (check its \
         log), or give more time with --timeout",
        path.display()
    )]
    NoAnswer {
        /// The socket path.
        path: PathBuf,
        /// How long the client waited.
        secs: u64,
    },
    /// The server's answer is not a response line.
    #[error("control socket {}: unexpected answer {answer:?}", path.display())]
    BadResponse {
        /// The socket path.
        path: PathBuf,
        /// The start of the answer.
        answer: String,
    },
}

/// The cause in a few words (without the OS's error number).
fn cause_text(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::NotFound => "no such file".into(),
        io::ErrorKind::ConnectionRefused => "connection refused".into(),
        io::ErrorKind::PermissionDenied => "permission denied".into(),
        _ => e.to_string(),
    }
}

/// What to do when the control socket cannot be reached, by the cause.
pub fn connect_hint(kind: io::ErrorKind) -> &'static str {
    match kind {
        io::ErrorKind::NotFound => {
            "is `vswitch run` running? use --ctl PATH or VSWITCH_CTL to name its control socket"
        }
        io::ErrorKind::ConnectionRefused => {
            "nothing listens there (a switch that stopped?); start `vswitch run`, or use --ctl \
             PATH or VSWITCH_CTL for another switch"
        }
        io::ErrorKind::PermissionDenied => {
            "the socket is mode 0600, owned by the user running the switch: run this as that \
             user (or root)"
        }
        _ => "is `vswitch run` running? use --ctl PATH or VSWITCH_CTL to name its control socket",
    }
}
