//! The state file on disk: read with limits and checks (it is input), written atomically.
//!
//! Hand-written rather than with a crate (tempfile's `persist`, atomicwrites): the temporary
//! file has one fixed name beside the state file, so a crash leaves at most one, which the next
//! start removes; it is created fresh (`O_EXCL`, `O_NOFOLLOW`, mode 0600) so nothing planted
//! at that name is followed or truncated; and the directory is fsynced after the rename.

use std::ffi::{CString, OsString};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};

use log::info;

use super::error::StateError;

/// Largest state file read (65536 ports with long paths fit several times over).
pub const MAX_BYTES: u64 = 64 << 20;

/// Where the next version is written before it is renamed over the state file.
pub fn temp_path(path: &Path) -> PathBuf {
    let mut s = OsString::from(path.as_os_str());
    s.push(".tmp");
    PathBuf::from(s)
}

/// Where a state file replaced by an edited configuration is kept.
pub fn replaced_path(path: &Path) -> PathBuf {
    let mut s = OsString::from(path.as_os_str());
    s.push(".replaced");
    PathBuf::from(s)
}

fn dir_of(path: &Path) -> &Path {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    }
}

/// Checks, before anything starts, that the state file can be written at `path`.
pub fn check_path(path: &Path) -> Result<(), StateError> {
    let bad = |reason: String| StateError::BadPath {
        path: path.to_path_buf(),
        reason,
    };
    let bytes = path.as_os_str().as_bytes();
    if bytes.is_empty() || bytes.contains(&0) {
        return Err(bad("the path is empty or contains a NUL byte".into()));
    }
    let names_a_file = bytes.last() != Some(&b'/')
        && matches!(path.components().next_back(), Some(Component::Normal(_)));
    if !names_a_file {
        return Err(bad(
            "the path names a directory; add a file name, e.g. /var/lib/vswitch/state.json".into(),
        ));
    }
    let dir = dir_of(path);
    match fs::metadata(dir) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => return Err(bad(format!("{} is not a directory", dir.display()))),
        Err(e) => {
            return Err(bad(format!(
                "its directory {} cannot be used ({e}); create it (mkdir -p {})",
                dir.display(),
                dir.display()
            )))
        }
    }
    let writable = CString::new(dir.as_os_str().as_bytes())
        // SAFETY: `c` is a valid NUL-terminated string for the duration of the call.
        .map(|c| unsafe { libc::access(c.as_ptr(), libc::W_OK | libc::X_OK) } == 0)
        .unwrap_or(false);
    if !writable {
        return Err(bad(format!(
            "directory {} is not writable by this user; choose another directory or fix its \
             permissions",
            dir.display()
        )));
    }
    Ok(())
}

/// Removes a temporary file a crash left mid-write (the state file itself is intact: the
/// temporary one only replaces it by rename once complete).
pub fn remove_leftover(path: &Path) {
    let tmp = temp_path(path);
    let is_file = fs::symlink_metadata(&tmp).is_ok_and(|m| !m.is_dir());
    if is_file && fs::remove_file(&tmp).is_ok() {
        info!(
            "removed {} (an unfinished write of the state file, left by a crash)",
            tmp.display()
        );
    }
}

/// Reads the state file: `None` if there is none. Refuses anything but a regular file of this
/// user (or root) that only its owner may write, and files over [`MAX_BYTES`].
pub fn read(path: &Path) -> Result<Option<Vec<u8>>, StateError> {
    let refused = |reason: String| StateError::Refused {
        path: path.to_path_buf(),
        reason,
    };
    let unreadable = |source| StateError::Unreadable {
        path: path.to_path_buf(),
        source,
    };
    // O_NONBLOCK: opening a FIFO planted there must not block the start.
    let f = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path);
    let f = match f {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            return Err(refused(
                "is a symbolic link; the switch replaces the state file by rename, so it must \
                 be a regular file"
                    .into(),
            ))
        }
        Err(e) => return Err(unreadable(e)),
    };
    let m = f.metadata().map_err(unreadable)?;
    if !m.file_type().is_file() {
        return Err(refused(
            "is not a regular file (a directory, socket, FIFO or device is there)".into(),
        ));
    }
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    if m.uid() != me && m.uid() != 0 {
        return Err(refused(format!(
            "is owned by uid {}, neither the switch's user (uid {me}) nor root; it decides \
             which channel each VM is on, so only they may own it",
            m.uid()
        )));
    }
    if m.mode() & 0o022 != 0 {
        return Err(refused(format!(
            "may be written by other users (mode {:04o}); it decides which channel each VM is \
             on, so only its owner may write it (chmod 600)",
            m.mode() & 0o7777
        )));
    }
    let too_large = |len: u64| {
        refused(format!(
            "is {len} bytes long, more than a state file can be ({MAX_BYTES} bytes)"
        ))
    };
    if m.len() > MAX_BYTES {
        return Err(too_large(m.len()));
    }
    let mut bytes = Vec::with_capacity(m.len() as usize);
    f.take(MAX_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(unreadable)?;
    if bytes.len() as u64 > MAX_BYTES {
        return Err(too_large(bytes.len() as u64));
    }
    Ok(Some(bytes))
}

/// Replaces the state file with `bytes`: the file at `path` is, at every instant and after a
/// crash at any point, either the old version or the new one, complete. Returns once the new
/// version is durable (file and directory entry synced).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = temp_path(path);
    match fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let written = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()
    })();
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    if let Err(e) = fs::rename(&tmp, path) {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    File::open(dir_of(path))?.sync_all()
}

/// Moves the state file aside to [`replaced_path`] (durably).
pub fn move_aside(path: &Path) -> io::Result<PathBuf> {
    let to = replaced_path(path);
    fs::rename(path, &to)?;
    File::open(dir_of(path))?.sync_all()?;
    Ok(to)
}
