//! Prometheus over HTTP: `GET /metrics` on `--metrics ADDR` answers the exposition of
//! [`Switch::prometheus`]; every other path is 404.
//!
//! Requests are parsed by `httparse` (hyper's parser). The server is small on purpose and
//! bounded everywhere: one accept thread, at most [`MAX_CONNECTIONS`] served at once (more are
//! answered 503 and closed), a request of at most [`MAX_REQUEST`] bytes (more: 431), complete
//! within [`REQUEST_TIMEOUT`] of the connection (slow clients are dropped), one request per
//! connection.
//!
//! Why not a server crate: the small ones (`tiny_http`) have no read timeout and no bound on
//! connections, so one slow scraper could hold a thread for ever; the complete ones (hyper, axum)
//! bring an async runtime into a process that has none. Parsing, the part that is easy to get
//! wrong, is `httparse`'s; what is written here is the accept loop and its limits.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use log::{debug, info, warn};
use thiserror::Error;

use crate::Switch;

/// Connections served at once; more are answered 503.
pub const MAX_CONNECTIONS: usize = 8;
/// Longest request (request line and headers) accepted, bytes.
pub const MAX_REQUEST: usize = 8 * 1024;
/// A request must be complete this long after the connection is accepted.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// A client that does not read the answer for this long is dropped.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// How often the accept loop looks at the stop flag.
const POLL: Duration = Duration::from_millis(100);
/// Most headers a request may carry.
const MAX_HEADERS: usize = 32;

/// Why the metrics endpoint could not start.
#[derive(Debug, Error)]
pub enum MetricsError {
    /// The address cannot be bound.
    #[error(
        "cannot serve metrics on {addr}: {source}; choose a free local address with --metrics \
         (or [switch] metrics), e.g. 127.0.0.1:9471"
    )]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// No thread could be started.
    #[error("cannot start the metrics thread: {0}")]
    Thread(#[source] io::Error),
}

/// A running metrics endpoint. Dropping it stops it.
pub struct MetricsServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl MetricsServer {
    /// Binds `addr` and serves `sw`'s metrics from a thread.
    pub fn start(addr: SocketAddr, sw: Arc<Switch>) -> Result<MetricsServer, MetricsError> {
        let bind_err = |source| MetricsError::Bind { addr, source };
        let listener = TcpListener::bind(addr).map_err(bind_err)?;
        listener.set_nonblocking(true).map_err(bind_err)?;
        let addr = listener.local_addr().map_err(bind_err)?;
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let thread = thread::Builder::new()
            .name("metrics-http".into())
            .spawn(move || accept_loop(&listener, &sw, &s))
            .map_err(MetricsError::Thread)?;
        info!("metrics at http://{addr}/metrics");
        Ok(MetricsServer {
            addr,
            stop,
            thread: Some(thread),
        })
    }

    /// The address served (with the port the kernel chose, if 0 was asked).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting and waits for the accept thread (connections in progress end within
    /// [`REQUEST_TIMEOUT`] + the write timeout on their own).
    pub fn shutdown(mut self) {
        self.stop_inner();
    }

    fn stop_inner(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.stop_inner();
    }
}

fn accept_loop(listener: &TcpListener, sw: &Arc<Switch>, stop: &AtomicBool) {
    let active = Arc::new(AtomicUsize::new(0));
    while !stop.load(Ordering::Acquire) {
        let (stream, peer) = match listener.accept() {
            Ok(c) => c,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                thread::sleep(POLL);
                continue;
            }
            Err(e) => {
                // EMFILE and the like: back off rather than spin.
                warn!("metrics: accept failed: {e}");
                thread::sleep(POLL);
                continue;
            }
        };
        if active.load(Ordering::Acquire) >= MAX_CONNECTIONS {
            debug!("metrics: {peer}: too many connections, answered 503");
            refuse_busy(stream);
            continue;
        }
        active.fetch_add(1, Ordering::AcqRel);
        let (sw, done) = (sw.clone(), active.clone());
        let spawned = thread::Builder::new()
            .name("metrics-conn".into())
            .spawn(move || {
                if let Err(e) = serve(stream, &sw) {
                    debug!("metrics: {peer}: {e}");
                }
                done.fetch_sub(1, Ordering::AcqRel);
            });
        if let Err(e) = spawned {
            active.fetch_sub(1, Ordering::AcqRel);
            warn!("metrics: cannot start a connection thread: {e}");
        }
    }
}

/// How long the accept thread waits for a refused client's request before answering 503.
const REFUSE_WAIT: Duration = Duration::from_millis(50);

/// Answers 503 on the accept thread, briefly: whatever of the request arrived within
/// [`REFUSE_WAIT`] is read first, so that closing does not reset the connection before the
/// client has read the answer.
fn refuse_busy(mut stream: TcpStream) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(REFUSE_WAIT));
    let _ = stream.set_write_timeout(Some(REFUSE_WAIT));
    let mut buf = [0u8; 1024];
    let _ = stream.read(&mut buf);
    let _ = stream.write_all(&response(503, TEXT, b"too many connections\n"));
    let _ = stream.shutdown(std::net::Shutdown::Write);
}

/// Reads one request within the limits and answers it.
fn serve(mut stream: TcpStream, sw: &Switch) -> io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_write_timeout(Some(WRITE_TIMEOUT))?;
    let deadline = Instant::now() + REQUEST_TIMEOUT;
    let mut buf = vec![0u8; MAX_REQUEST];
    let mut len = 0;
    let (status, body, content_type) = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(io::ErrorKind::TimedOut, "request too slow"));
        }
        stream.set_read_timeout(Some(left))?;
        let n = stream.read(&mut buf[len..])?;
        if n == 0 {
            return Ok(());
        }
        len += n;
        match route(&buf[..len]) {
            Some(Route::Metrics) => {
                break (200, classic_text(&sw.prometheus()).into_bytes(), EXPOSITION)
            }
            Some(Route::Status(code, text)) => break (code, text.as_bytes().to_vec(), TEXT),
            None if len == buf.len() => {
                break (431, b"request too large\n".to_vec(), TEXT);
            }
            None => continue,
        }
    };
    let mut answer = response(status, content_type, &body);
    if is_head(&buf[..len]) {
        answer.truncate(answer.len() - body.len());
    }
    stream.write_all(&answer)
}

/// The classic Prometheus text format ([`classic_text`]), which Prometheus, promtool and
/// every other scraper read.
const EXPOSITION: &str = "text/plain; version=0.0.4; charset=utf-8";
const TEXT: &str = "text/plain; charset=utf-8";

/// prometheus-client's OpenMetrics text as the classic text format: a counter family's
/// `# HELP` and `# TYPE` name its samples (`x_total`, where OpenMetrics names the family `x`),
/// and no `# EOF`. The samples are unchanged.
pub fn classic_text(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len() + 16 * counters.len());
    for line in openmetrics.lines() {
        if line == "# EOF" {
            continue;
        }
        let meta = ["# HELP ", "# TYPE "]
            .into_iter()
            .find_map(|p| Some((p, line.strip_prefix(p)?)));
        match meta {
            Some((prefix, rest)) => {
                let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                let suffix = if counters.contains(name) {
                    "_total"
                } else {
                    ""
                };
                out.push_str(&format!("{prefix}{name}{suffix} {tail}"));
            }
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

#[derive(Debug, PartialEq, Eq)]
enum Route {
    Metrics,
    Status(u16, &'static str),
}

/// What to answer to the bytes received so far; `None` while the request is incomplete.
fn route(bytes: &[u8]) -> Option<Route> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(bytes) {
        Ok(httparse::Status::Partial) => None,
        Err(httparse::Error::TooManyHeaders) => {
            Some(Route::Status(431, "request has too many headers\n"))
        }
        Err(_) => Some(Route::Status(400, "malformed HTTP request\n")),
        Ok(httparse::Status::Complete(_)) => {
            let path = req.path.unwrap_or("");
            let path = path.split_once('?').map_or(path, |(p, _)| p);
            match (req.method, path) {
                (Some("GET" | "HEAD"), "/metrics") => Some(Route::Metrics),
                (Some("GET" | "HEAD"), _) => {
                    Some(Route::Status(404, "not found; metrics are at /metrics\n"))
                }
                _ => Some(Route::Status(405, "only GET /metrics is served\n")),
            }
        }
    }
}

fn is_head(bytes: &[u8]) -> bool {
    bytes.starts_with(b"HEAD ")
}

fn response(status: u16, content_type: &str, body: &[u8]) -> Vec<u8> {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "Error",
    };
    let mut out = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classic_text_names_counter_families_by_their_samples() {
        let om = "# HELP a Frames.\n# TYPE a counter\na_total{port=\"x\"} 1\n\
                  # HELP g Entries.\n# TYPE g gauge\ng 2\n# EOF\n";
        assert_eq!(
            classic_text(om),
            "# HELP a_total Frames.\n# TYPE a_total counter\na_total{port=\"x\"} 1\n\
             # HELP g Entries.\n# TYPE g gauge\ng 2\n"
        );
    }

    #[test]
    fn routes_only_get_metrics() {
        assert_eq!(
            route(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"),
            Some(Route::Metrics)
        );
        assert_eq!(
            route(b"GET /metrics?x=1 HTTP/1.0\r\n\r\n"),
            Some(Route::Metrics)
        );
        assert_eq!(
            route(b"HEAD /metrics HTTP/1.1\r\n\r\n"),
            Some(Route::Metrics)
        );
        assert_eq!(route(b"GET /metrics HTTP/1.1\r\nHost: x\r\n"), None);
        assert!(matches!(
            route(b"GET / HTTP/1.1\r\n\r\n"),
            Some(Route::Status(404, _))
        ));
        assert!(matches!(
            route(b"POST /metrics HTTP/1.1\r\n\r\n"),
            Some(Route::Status(405, _))
        ));
        assert!(matches!(
            route(b"\x00\x01 junk\r\n\r\n"),
            Some(Route::Status(400, _))
        ));
        let many = format!("GET /metrics HTTP/1.1\r\n{}\r\n", "a: b\r\n".repeat(40));
        assert!(matches!(
            route(many.as_bytes()),
            Some(Route::Status(431, _))
        ));
    }
}
