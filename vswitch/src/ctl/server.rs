//! The control server: a Unix socket (mode 0600), one thread per client (at most
//! [`MAX_CLIENTS`]), requests read with a size limit and an idle timeout.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use log::{debug, info, warn};

use super::handler;
use super::proto::{parse_request, Response, MAX_LINE};
use super::CtlError;
use crate::Switch;

/// Most clients served at once; more are told so and disconnected.
pub const MAX_CLIENTS: usize = 16;
/// A client silent for this long is disconnected.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// A client that does not read its responses for this long is disconnected.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// How often the accept loop looks at the stop flag.
const POLL_MS: i32 = 200;

struct Client {
    stream: UnixStream,
    thread: JoinHandle<()>,
}

/// A running control server. Dropping it stops it.
pub struct CtlServer {
    path: PathBuf,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    clients: Arc<Mutex<Vec<Client>>>,
}

impl CtlServer {
    /// Binds `path` (replacing a stale socket, refusing a live one or any other file) and
    /// serves `sw` from a thread.
    pub fn start(path: &Path, sw: Arc<Switch>) -> Result<CtlServer, CtlError> {
        let listener = bind(path)?;
        let stop = Arc::new(AtomicBool::new(false));
        let clients: Arc<Mutex<Vec<Client>>> = Arc::default();
        let (s, c, p) = (stop.clone(), clients.clone(), path.to_path_buf());
        let thread = thread::Builder::new()
            .name("ctl-accept".into())
            .spawn(move || accept_loop(&listener, &sw, &p, &s, &c))
            .map_err(CtlError::Thread)?;
        info!("control API listening on {}", path.display());
        Ok(CtlServer {
            path: path.to_path_buf(),
            stop,
            thread: Some(thread),
            clients,
        })
    }

    /// The socket path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Stops accepting, disconnects every client, waits for the threads and removes the socket.
    pub fn shutdown(mut self) {
        self.stop_inner();
    }

    fn stop_inner(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let clients: Vec<Client> = match self.clients.lock() {
            Ok(mut g) => g.drain(..).collect(),
            Err(p) => p.into_inner().drain(..).collect(),
        };
        for c in clients {
            let _ = c.stream.shutdown(std::net::Shutdown::Both);
            let _ = c.thread.join();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

impl Drop for CtlServer {
    fn drop(&mut self) {
        if self.thread.is_some() {
            self.stop_inner();
        }
    }
}

fn bind(path: &Path) -> Result<UnixListener, CtlError> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => {
            if UnixStream::connect(path).is_ok() {
                return Err(CtlError::InUse {
                    path: path.to_path_buf(),
                });
            }
            std::fs::remove_file(path).map_err(|e| bind_err(path, e))?;
        }
        Ok(_) => {
            return Err(CtlError::NotASocket {
                path: path.to_path_buf(),
            })
        }
        Err(_) => {}
    }
    let listener = UnixListener::bind(path).map_err(|e| bind_err(path, e))?;
    // Owner only; peers are also checked by uid on accept, which closes the window between
    // bind and chmod.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| bind_err(path, e))?;
    listener
        .set_nonblocking(true)
        .map_err(|e| bind_err(path, e))?;
    Ok(listener)
}

fn bind_err(path: &Path, source: io::Error) -> CtlError {
    CtlError::Bind {
        path: path.to_path_buf(),
        source,
    }
}

fn accept_loop(
    listener: &UnixListener,
    sw: &Arc<Switch>,
    path: &Path,
    stop: &AtomicBool,
    clients: &Mutex<Vec<Client>>,
) {
    while !stop.load(Ordering::Acquire) {
        if !wait_readable(listener.as_raw_fd()) {
            continue;
        }
        let stream = match listener.accept() {
            Ok((s, _)) => s,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => {
                warn!("control API: accept failed: {e}");
                thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        if let Err(e) = admit(stream, sw, path, clients) {
            debug!("control API: client not served: {e}");
        }
    }
}

fn admit(
    mut stream: UnixStream,
    sw: &Arc<Switch>,
    path: &Path,
    clients: &Mutex<Vec<Client>>,
) -> io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(IDLE_TIMEOUT))?;
    stream.set_write_timeout(Some(WRITE_TIMEOUT))?;
    if !peer_allowed(&stream) {
        let resp = Response::err(
            "permission denied: only the switch's user or root may use the control API",
        );
        return stream.write_all(resp.to_line().as_bytes());
    }
    let mut list = match clients.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    };
    // Reap finished clients.
    let (done, live): (Vec<Client>, Vec<Client>) =
        list.drain(..).partition(|c| c.thread.is_finished());
    *list = live;
    for c in done {
        let _ = c.thread.join();
    }
    if list.len() >= MAX_CLIENTS {
        let resp = Response::err(format!(
            "too many control clients (at most {MAX_CLIENTS}); try again later"
        ));
        return stream.write_all(resp.to_line().as_bytes());
    }
    let keep = stream.try_clone()?;
    let (sw, path) = (sw.clone(), path.to_path_buf());
    let thread = thread::Builder::new()
        .name("ctl-client".into())
        .spawn(move || serve(stream, &sw, &path))?;
    list.push(Client {
        stream: keep,
        thread,
    });
    Ok(())
}

/// Serves one client until it closes, idles out, or sends an oversized line, then hangs up
/// (the accept loop's clone of the stream would otherwise keep the connection open).
fn serve(stream: UnixStream, sw: &Switch, ctl_path: &Path) {
    let Ok(writer) = stream.try_clone() else {
        let _ = stream.shutdown(std::net::Shutdown::Both);
        return;
    };
    serve_lines(&stream, writer, sw, ctl_path);
    let _ = stream.shutdown(std::net::Shutdown::Both);
}

fn serve_lines(stream: &UnixStream, mut writer: UnixStream, sw: &Switch, ctl_path: &Path) {
    let mut reader = BufReader::new(stream);
    let mut line = Vec::with_capacity(256);
    loop {
        line.clear();
        let limit = (MAX_LINE + 2) as u64; // the line, "\r\n"
        match (&mut reader).take(limit).read_until(b'\n', &mut line) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) => {
                debug!("control API: client dropped: {e}");
                return;
            }
        }
        let complete = line.last() == Some(&b'\n');
        if complete {
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
        }
        if line.len() > MAX_LINE {
            let resp = Response::err(format!(
                "request too long: a request is one line of at most {MAX_LINE} bytes"
            ));
            let _ = writer.write_all(resp.to_line().as_bytes());
            return;
        }
        if line.iter().all(u8::is_ascii_whitespace) {
            if complete {
                continue;
            }
            return;
        }
        let resp = match parse_request(&line) {
            Ok(req) => {
                debug!("control API: {req:?}");
                handler::handle(sw, ctl_path, req)
            }
            Err(e) => Response::err(e),
        };
        if writer.write_all(resp.to_line().as_bytes()).is_err() || !complete {
            return;
        }
    }
}

/// True if the peer runs as this process's user or as root.
fn peer_allowed(stream: &UnixStream) -> bool {
    let mut cred = libc::ucred {
        pid: 0,
        uid: u32::MAX,
        gid: u32::MAX,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: `cred` and `len` are valid for writes and `len` is the size of `cred`.
    let r = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    r == 0 && (cred.uid == me || cred.uid == 0)
}

/// Waits up to [`POLL_MS`] for a pending connection.
fn wait_readable(fd: i32) -> bool {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: `pfd` is a valid pollfd for the duration of the call and nfds is 1.
    let r = unsafe { libc::poll(&mut pfd, 1, POLL_MS) };
    r > 0
}
