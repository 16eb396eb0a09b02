//! The control server: a Unix socket (mode 0600), one thread per client (at most
//! [`MAX_CLIENTS`]), requests read with a size limit, an idle timeout between requests and a
//! deadline per request (not per byte: a client trickling bytes cannot keep its slot).

use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use log::{debug, info, warn};
use vswitch_vhost::socket::Probe;

use super::handler::{self, Context};
use super::proto::{parse_request, Response, MAX_LINE};
use super::CtlError;
use crate::uplink::UplinkConfig;
use crate::Switch;

/// Most clients served at once; more are told so and disconnected.
pub const MAX_CLIENTS: usize = 16;
/// A client silent for this long between requests is disconnected.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// A request must be complete (its newline received) this long after its first byte.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
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
    /// serves `sw`, whose configured uplinks are `uplinks`, from a thread.
    pub fn start(
        path: &Path,
        sw: Arc<Switch>,
        uplinks: Vec<UplinkConfig>,
    ) -> Result<CtlServer, CtlError> {
        let listener = bind(path)?;
        let stop = Arc::new(AtomicBool::new(false));
        let clients: Arc<Mutex<Vec<Client>>> = Arc::default();
        let ctx = Arc::new(Context {
            ctl_path: path.to_path_buf(),
            uplinks,
        });
        let (s, c) = (stop.clone(), clients.clone());
        let thread = thread::Builder::new()
            .name("ctl-accept".into())
            .spawn(move || accept_loop(&listener, &sw, &ctx, &s, &c))
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
    // A non-blocking probe: a listener with a full backlog must not hang the start.
    match vswitch_vhost::socket::probe(path) {
        Ok(Probe::Live) => {
            return Err(CtlError::InUse {
                path: path.to_path_buf(),
            })
        }
        Ok(Probe::Stale) => std::fs::remove_file(path).map_err(|e| bind_err(path, e))?,
        Ok(Probe::NotASocket) => {
            return Err(CtlError::NotASocket {
                path: path.to_path_buf(),
            })
        }
        Ok(Probe::Absent) | Err(_) => {}
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
    ctx: &Arc<Context>,
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
        if let Err(e) = admit(stream, sw, ctx, clients) {
            debug!("control API: client not served: {e}");
        }
    }
}

fn admit(
    mut stream: UnixStream,
    sw: &Arc<Switch>,
    ctx: &Arc<Context>,
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
    let (sw, ctx) = (sw.clone(), ctx.clone());
    let thread = thread::Builder::new()
        .name("ctl-client".into())
        .spawn(move || serve(stream, &sw, &ctx))?;
    list.push(Client {
        stream: keep,
        thread,
    });
    Ok(())
}

/// Serves one client until it closes, idles out, or sends an oversized line, then hangs up
/// (the accept loop's clone of the stream would otherwise keep the connection open).
fn serve(stream: UnixStream, sw: &Switch, ctx: &Context) {
    let Ok(writer) = stream.try_clone() else {
        let _ = stream.shutdown(std::net::Shutdown::Both);
        return;
    };
    serve_lines(&stream, writer, sw, ctx);
    let _ = stream.shutdown(std::net::Shutdown::Both);
}

fn serve_lines(stream: &UnixStream, mut writer: UnixStream, sw: &Switch, ctx: &Context) {
    let mut reader = RequestReader::new(stream);
    let mut line = Vec::with_capacity(256);
    loop {
        line.clear();
        let complete = match reader.next(&mut line) {
            Ok(Some(complete)) => complete,
            Ok(None) => return,
            Err(e) => {
                debug!("control API: client dropped: {e}");
                if e.kind() == io::ErrorKind::TimedOut {
                    let resp = Response::err(e.to_string());
                    let _ = writer.write_all(resp.to_line().as_bytes());
                }
                return;
            }
        };
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
                handler::handle(sw, ctx, req)
            }
            Err(e) => Response::err(e),
        };
        if writer.write_all(resp.to_line().as_bytes()).is_err() || !complete {
            return;
        }
    }
}

/// Reads request lines: up to [`IDLE_TIMEOUT`] for a request to start, then up to
/// [`REQUEST_TIMEOUT`] in all for it to end, however the bytes trickle in.
struct RequestReader<'a> {
    stream: &'a UnixStream,
    /// Bytes received after the last line returned.
    pending: Vec<u8>,
}

impl<'a> RequestReader<'a> {
    fn new(stream: &'a UnixStream) -> Self {
        RequestReader {
            stream,
            pending: Vec::new(),
        }
    }

    /// Appends the next line (with its newline when `Some(true)`) to `line`. `Some(false)`:
    /// the client closed after a partial line, or the line is longer than a request may be.
    /// `None`: closed between requests. A timeout is an error of kind `TimedOut`.
    fn next(&mut self, line: &mut Vec<u8>) -> io::Result<Option<bool>> {
        let limit = MAX_LINE + 2; // the line, "\r\n"
        let mut started: Option<Instant> = None;
        let mut buf = [0u8; 4096];
        loop {
            if let Some(pos) = self.pending.iter().position(|&b| b == b'\n') {
                line.extend(self.pending.drain(..=pos));
                return Ok(Some(true));
            }
            if self.pending.len() > limit {
                line.append(&mut self.pending);
                return Ok(Some(false));
            }
            if !self.pending.is_empty() && started.is_none() {
                started = Some(Instant::now());
            }
            let wait = match started {
                None => IDLE_TIMEOUT,
                Some(t) => {
                    let left = REQUEST_TIMEOUT.saturating_sub(t.elapsed());
                    if left.is_zero() {
                        return Err(request_timeout());
                    }
                    left
                }
            };
            self.stream.set_read_timeout(Some(wait))?;
            match (&mut &*self.stream).read(&mut buf) {
                Ok(0) if self.pending.is_empty() => return Ok(None),
                Ok(0) => {
                    line.append(&mut self.pending);
                    return Ok(Some(false));
                }
                Ok(n) => self.pending.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e)
                    if started.is_some()
                        && matches!(
                            e.kind(),
                            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                        ) =>
                {
                    return Err(request_timeout())
                }
                Err(e) => return Err(e),
            }
        }
    }
}

fn request_timeout() -> io::Error {
    io::Error::new(
        io::ErrorKind::TimedOut,
        format!(
            "request not complete within {} s of its first byte: send each request as one \
             line at once",
            REQUEST_TIMEOUT.as_secs()
        ),
    )
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
