//! Creating a listening socket at a path without ever taking over a live one, with explicit
//! permissions.
//!
//! * A socket file that something still listens on (another vswitch, another program) is never
//!   unlinked: [`probe`] connects to it without blocking, and a socket that answers, or whose
//!   backlog is full, is live. Only a socket that refuses connections (left by a process that
//!   died, e.g. a switch restarted by systemd) is replaced.
//! * The socket appears at its path with its final mode: it is bound under a temporary name in
//!   the same directory, chmod-ed, and renamed into place with `RENAME_NOREPLACE`, so that no
//!   one can connect while it still has the umask's mode, and a socket created at the path
//!   between the probe and the rename is not replaced either.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::PortError;

/// Mode of a port's socket unless configured otherwise: its owner and group may connect
/// (run the hypervisor as that group, or as the switch's user), nobody else.
pub const DEFAULT_SOCKET_MODE: u32 = 0o660;

/// What is at a socket path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probe {
    /// Nothing.
    Absent,
    /// A socket that a process listens on.
    Live,
    /// A socket nobody listens on (its process died).
    Stale,
    /// Something that is not a socket (a file, a directory, a symlink).
    NotASocket,
}

/// Looks at `path` without blocking and without changing anything.
pub fn probe(path: &Path) -> io::Result<Probe> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Probe::Absent),
        Err(e) => return Err(e),
    };
    if !meta.file_type().is_socket() {
        return Ok(Probe::NotASocket);
    }
    match connect_nonblocking(path) {
        Ok(_) => Ok(Probe::Live),
        Err(e) => match e.raw_os_error() {
            // A listener whose backlog is full: someone listens.
            Some(libc::EAGAIN) | Some(libc::EINPROGRESS) => Ok(Probe::Live),
            Some(libc::ECONNREFUSED) => Ok(Probe::Stale),
            Some(libc::ENOENT) => Ok(Probe::Absent),
            _ => Err(e),
        },
    }
}

/// Connects to the socket at `path` without ever waiting: a listener whose backlog is full
/// gives `EAGAIN` at once instead of blocking the caller. The stream is left non-blocking.
pub fn connect_nonblocking(path: &Path) -> io::Result<UnixStream> {
    let addr = sockaddr(path)?;
    // SAFETY: socket() has no memory-safety preconditions.
    let fd = unsafe {
        libc::socket(
            libc::AF_UNIX,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a new descriptor that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: `addr` is a valid sockaddr_un and the length given is its size.
    let r = unsafe {
        libc::connect(
            fd.as_raw_fd(),
            (&addr as *const libc::sockaddr_un).cast(),
            std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(UnixStream::from(fd))
    } else {
        Err(io::Error::last_os_error())
    }
}

fn sockaddr(path: &Path) -> io::Result<libc::sockaddr_un> {
    // SAFETY: sockaddr_un is plain data; all zeroes is a valid (empty) address.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    let bytes = path.as_os_str().as_bytes();
    if bytes.len() >= addr.sun_path.len() || bytes.contains(&0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "path too long for a Unix socket, or contains a NUL byte",
        ));
    }
    for (d, s) in addr.sun_path.iter_mut().zip(bytes) {
        *d = *s as libc::c_char;
    }
    Ok(addr)
}

/// The identity of the socket file a port created, so that a stop removes that file only,
/// never one that replaced it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FileId {
    dev: u64,
    ino: u64,
}

impl FileId {
    fn of(path: &Path) -> io::Result<FileId> {
        let m = std::fs::symlink_metadata(path)?;
        Ok(FileId {
            dev: m.dev(),
            ino: m.ino(),
        })
    }

    /// Removes `path` if it is still this file.
    pub(crate) fn remove(self, path: &Path) {
        if FileId::of(path).is_ok_and(|now| now == self) {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Creates a listening socket at `path` with permissions `mode` (see the module doc).
pub(crate) fn bind(path: &Path, mode: u32) -> Result<(UnixListener, FileId), PortError> {
    let bind_err = |e: io::Error| PortError::Bind(path.to_path_buf(), e);
    if let Some(dir) = path.parent() {
        if !dir.as_os_str().is_empty() && !dir.is_dir() {
            return Err(PortError::SocketDir(path.to_path_buf()));
        }
    }
    match probe(path).map_err(bind_err)? {
        Probe::Absent => {}
        Probe::Live => return Err(PortError::InUse(path.to_path_buf())),
        Probe::NotASocket => return Err(PortError::NotASocket(path.to_path_buf())),
        Probe::Stale => {
            log::info!("{}: replacing a stale socket", path.display());
            match std::fs::remove_file(path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(bind_err(e)),
            }
        }
    }
    let perms = std::fs::Permissions::from_mode(mode);
    let listener = match temp_path(path) {
        Some(tmp) => {
            let l = UnixListener::bind(&tmp).map_err(bind_err)?;
            let placed =
                std::fs::set_permissions(&tmp, perms).and_then(|()| rename_noreplace(&tmp, path));
            if let Err(e) = placed {
                let _ = std::fs::remove_file(&tmp);
                return Err(match e.raw_os_error() {
                    Some(libc::EEXIST) => PortError::InUse(path.to_path_buf()),
                    _ => bind_err(e),
                });
            }
            l
        }
        // No room for a temporary name next to a path this long: bind in place (bind itself
        // refuses an existing path) and set the mode right after.
        None => {
            let l = UnixListener::bind(path).map_err(|e| match e.kind() {
                io::ErrorKind::AddrInUse => PortError::InUse(path.to_path_buf()),
                _ => bind_err(e),
            })?;
            if let Err(e) = std::fs::set_permissions(path, perms) {
                let _ = std::fs::remove_file(path);
                return Err(bind_err(e));
            }
            l
        }
    };
    let id = FileId::of(path).map_err(bind_err)?;
    listener.set_nonblocking(true).map_err(bind_err)?;
    Ok((listener, id))
}

/// A fresh name in `path`'s directory for binding before the rename, if it fits a
/// `sockaddr_un`.
fn temp_path(path: &Path) -> Option<PathBuf> {
    static N: AtomicU64 = AtomicU64::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let name = format!(".vswitch-{}-{n}.tmp", std::process::id());
    let tmp = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.join(name),
        _ => PathBuf::from(name),
    };
    (tmp.as_os_str().len() < 108).then_some(tmp)
}

fn rename_noreplace(from: &Path, to: &Path) -> io::Result<()> {
    let cstr = |p: &Path| {
        CString::new(p.as_os_str().as_bytes())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))
    };
    let (from, to) = (cstr(from)?, cstr(to)?);
    // SAFETY: both are valid NUL-terminated strings for the duration of the call.
    let r = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            from.as_ptr(),
            libc::AT_FDCWD,
            to.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}
