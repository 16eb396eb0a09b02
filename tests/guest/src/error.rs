//! Errors of the test guest.

use std::io;
use std::path::PathBuf;

/// Everything that can go wrong while setting up or driving a [`crate::TestGuest`].
#[derive(Debug, thiserror::Error)]
pub enum GuestError {
    /// The configuration cannot be used (the message says which field and why).
    #[error("invalid guest configuration: {0}")]
    Config(String),
    /// Creating, sizing or mapping the memfd that backs guest memory failed.
    #[error("guest memory setup failed: {0}")]
    Memory(String),
    /// No backend accepted a connection on the socket before the deadline.
    #[error("could not connect to vhost-user socket {path}: {source} (gave up after the connect timeout)")]
    Connect {
        /// Socket path.
        path: PathBuf,
        /// Last error seen.
        source: io::Error,
    },
    /// Creating the listening socket, or accepting the backend's connection, failed.
    #[error("listening on vhost-user socket {path} failed: {source}")]
    Listen {
        /// Socket path.
        path: PathBuf,
        /// Underlying error (TimedOut when no backend connected in time).
        source: io::Error,
    },
    /// A vhost-user request failed or the backend answered it with an error.
    #[error("vhost-user {request} failed: {source}")]
    Protocol {
        /// The request being made (e.g. "SET_MEM_TABLE").
        request: &'static str,
        /// Error from the vhost crate.
        source: vhost::Error,
    },
    /// The backend does not offer something the guest cannot work without.
    #[error("backend lacks a required capability: {0}")]
    Unsupported(String),
    /// Creating or signalling an eventfd failed.
    #[error("eventfd operation failed: {0}")]
    EventFd(io::Error),
    /// Not enough free descriptors in the TX ring (the device has not returned enough chains).
    #[error("TX ring full: need {needed} free descriptors, {free} available")]
    TxRingFull {
        /// Descriptors needed for this frame.
        needed: usize,
        /// Descriptors free right now (after reclaiming).
        free: usize,
    },
    /// A frame does not fit the requested layout.
    #[error("frame of {len} bytes does not fit layout {layout}: {why}")]
    FrameTooLarge {
        /// Frame length in bytes.
        len: usize,
        /// Layout that was requested.
        layout: String,
        /// Why it does not fit.
        why: String,
    },
    /// A guest-physical range lies outside guest memory.
    #[error("guest address range {addr:#x}+{len} lies outside guest memory ({size} bytes)")]
    OutOfBounds {
        /// Start of the range.
        addr: u64,
        /// Length of the range.
        len: u64,
        /// Guest memory size.
        size: u64,
    },
    /// The scratch allocator has no room left.
    #[error("scratch area exhausted: asked for {asked} bytes, {left} left (raise GuestConfig::mem_size)")]
    ScratchExhausted {
        /// Bytes requested.
        asked: usize,
        /// Bytes left in the scratch area.
        left: u64,
    },
    /// A raw descriptor placement refers to a slot that is out of range or already in use.
    #[error("descriptor slot {index} cannot be used: {why}")]
    BadSlot {
        /// The descriptor table index.
        index: u16,
        /// Why it cannot be used.
        why: &'static str,
    },
}

impl GuestError {
    pub(crate) fn protocol(request: &'static str) -> impl FnOnce(vhost::Error) -> GuestError {
        move |source| GuestError::Protocol { request, source }
    }
}
