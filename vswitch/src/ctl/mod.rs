//! The control API: a Unix socket speaking one JSON request / response per line
//! ([`proto`]), served by [`CtlServer`] and used by `vswitch ctl` through [`request`].

mod client;
pub mod handler;
pub mod proto;
mod server;

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
        "cannot connect to control socket {}: {source}; is `vswitch run --ctl {}` running, and \
         may this user open the socket?",
        path.display(), path.display()
    )]
    Connect {
        /// The socket path.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
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
