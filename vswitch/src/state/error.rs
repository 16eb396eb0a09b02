//! [`StateError`]: why the state file cannot be used or written, or a port cannot start, and
//! what to do.

use std::io;
use std::path::PathBuf;

use thiserror::Error;

use crate::config::ConfigError;
use crate::SwitchError;

/// What to do about a state file that cannot be used: the same advice for every refusal.
fn advice(path: &std::path::Path) -> String {
    format!(
        "the switch did not start rather than guess which channel each VM is on; fix the file, \
         or remove it (rm {}) to start from the configuration's ports, channels and policy",
        path.display()
    )
}

/// `" (restored from the state file)"` after a port's name when it came from there.
fn restored_note(restored: &bool) -> &'static str {
    if *restored {
        " (restored from the state file)"
    } else {
        ""
    }
}

/// A state file that cannot be used (nothing was started), cannot be written, or names a port
/// that cannot start.
#[derive(Debug, Error)]
pub enum StateError {
    /// `--state` / `[switch] state` names a place where no state file can be written.
    #[error("state file {}: {reason}", path.display())]
    BadPath {
        /// The path given.
        path: PathBuf,
        /// What is wrong, and what to do.
        reason: String,
    },
    /// The file exists but cannot be read.
    #[error("cannot read state file {}: {source}; {}", path.display(), advice(path))]
    Unreadable {
        /// The state file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The file is not a state file the switch wrote, or it is unsafe to trust.
    #[error("state file {} {reason}; {}", path.display(), advice(path))]
    Refused {
        /// The state file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A port or the policy in the file is not valid (checked as the configuration is).
    #[error("{source}; {}", advice(path))]
    Invalid {
        /// The state file.
        path: PathBuf,
        /// The refusal, naming the item of the file.
        #[source]
        source: Box<ConfigError>,
    },
    /// The file cannot be written.
    #[error(
        "cannot write state file {}: {source}; check that its directory exists, is writable by \
         the switch's user and has space",
        path.display()
    )]
    Write {
        /// The state file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A port of the configuration or of the state file could not start.
    #[error("cannot start port {name:?}{}", restored_note(.restored))]
    StartPort {
        /// The port's name.
        name: String,
        /// It came from the state file, not the configuration.
        restored: bool,
        /// Why.
        #[source]
        source: SwitchError,
    },
}
