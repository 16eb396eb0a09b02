//! The vhost-user messages of live migration, answered by the relay (`shim`) itself.
//!
//! vhost-user-backend 0.24 cannot serve them for this port: SET_LOG_BASE installs vm-memory
//! bitmaps (which the datapath's own host-address writes bypass, and which the port's
//! bitmap-less memory type refuses), and the `vhost` crate rejects SET_LOG_FD and SEND_RARP as
//! unknown, ending the connection. So the relay takes them out of the stream:
//!
//! - SET_LOG_BASE (protocol feature LOG_SHMFD): maps the log QEMU shares (memory file, offset,
//!   size) into the connection's [`DirtyLog`]; answered with the same body, as QEMU waits for.
//!   A log that cannot be mapped ends the connection (QEMU then fails the migration, the
//!   guest keeps running on the source).
//! - SET_LOG_FD: the eventfd written after a batch marked pages.
//! - SEND_RARP (protocol feature RARP): after a migration, QEMU on the destination asks the
//!   backend to announce the guest's MAC; the port calls its [`Announce`] hook.

use std::os::fd::{AsFd, AsRawFd, FromRawFd, IntoRawFd, OwnedFd};

use log::{debug, info, warn};
use vhost::vhost_user::message::FrontendReq;
use vmm_sys_util::eventfd::EventFd;

use crate::dirty_log::{DirtyLog, LogError, LogMap};
use crate::port::Announce;
use std::sync::Arc;

/// What the relay needs to answer the migration messages of one connection.
pub(crate) struct MigrationMsgs {
    pub(crate) name: String,
    pub(crate) log: Arc<DirtyLog>,
    pub(crate) announce: Option<Announce>,
}

/// What became of a message.
pub(crate) enum Handled {
    /// Not a migration message: relay it.
    NotMine,
    /// Answered here: send this reply body (if any) with the request's code.
    Reply(Option<Vec<u8>>),
    /// Refused: the connection ends.
    Refused(LogError),
}

impl MigrationMsgs {
    /// Handles `request` (payload and descriptors as received) if it is a migration message.
    /// `ack` is true when the frontend asked for a REPLY_ACK.
    pub(crate) fn handle(
        &self,
        request: u32,
        payload: &[u8],
        fds: &mut Vec<OwnedFd>,
        ack: bool,
    ) -> Handled {
        let ok = || Handled::Reply(ack.then(|| 0u64.to_le_bytes().to_vec()));
        match FrontendReq::try_from(request) {
            Ok(FrontendReq::SET_LOG_BASE) => {
                let (Some(size), Some(offset), 1) =
                    (u64_at(payload, 0), u64_at(payload, 8), fds.len())
                else {
                    warn!("{}: SET_LOG_BASE without a size, offset and one memory file: ending the connection", self.name);
                    return Handled::Refused(LogError::BadSize(0));
                };
                match LogMap::map(fds[0].as_fd(), offset, size) {
                    Ok(map) => {
                        info!("{}: dirty log of {size} bytes mapped", self.name);
                        self.log.set_map(map);
                        // QEMU reads the reply whether or not it asked for one.
                        Handled::Reply(Some(payload[..16].to_vec()))
                    }
                    Err(e) => {
                        warn!(
                            "{}: SET_LOG_BASE refused: {e}; ending the connection",
                            self.name
                        );
                        Handled::Refused(e)
                    }
                }
            }
            Ok(FrontendReq::SET_LOG_FD) => {
                match fds.pop().map(eventfd) {
                    Some(Some(fd)) => {
                        self.log.set_changed_fd(fd);
                        debug!("{}: log eventfd set", self.name);
                    }
                    _ => warn!("{}: SET_LOG_FD without an eventfd: ignored", self.name),
                }
                ok()
            }
            Ok(FrontendReq::SEND_RARP) => {
                match payload.get(..6) {
                    Some(m) => {
                        let mut mac = [0u8; 6];
                        mac.copy_from_slice(m);
                        info!(
                            "{}: frontend asks to announce {}",
                            self.name,
                            mac.iter()
                                .map(|b| format!("{b:02x}"))
                                .collect::<Vec<_>>()
                                .join(":")
                        );
                        if let Some(a) = &self.announce {
                            (a.0)(mac);
                        }
                    }
                    None => warn!("{}: SEND_RARP without a MAC: ignored", self.name),
                }
                ok()
            }
            _ => Handled::NotMine,
        }
    }
}

/// `fd` as a non-blocking eventfd, if it is one: the datapath writes it, and a full pipe or a
/// saturated blocking eventfd the frontend passed must never hold a datapath thread.
fn eventfd(fd: OwnedFd) -> Option<EventFd> {
    let link = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())).ok()?;
    if link.as_os_str() != "anon_inode:[eventfd]" {
        return None;
    }
    // SAFETY: F_GETFL/F_SETFL on a descriptor we own.
    let ok = unsafe {
        let fl = libc::fcntl(fd.as_raw_fd(), libc::F_GETFL);
        fl >= 0 && libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, fl | libc::O_NONBLOCK) == 0
    };
    if !ok {
        return None;
    }
    // SAFETY: the descriptor is an eventfd we own; EventFd takes it over.
    Some(unsafe { EventFd::from_raw_fd(fd.into_raw_fd()) })
}

fn u64_at(p: &[u8], at: usize) -> Option<u64> {
    let b = p.get(at..at + 8)?;
    let mut a = [0u8; 8];
    a.copy_from_slice(b);
    Some(u64::from_le_bytes(a))
}
