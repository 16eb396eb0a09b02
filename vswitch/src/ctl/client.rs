//! The client side: one request, one response.

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use super::proto::{Request, Response};
use super::CtlError;

/// Longest response accepted (metrics and FDB listings can be large).
const MAX_RESPONSE: u64 = 64 << 20;

/// Sends `req` to the server at `path` and returns its response.
pub fn request(path: &Path, req: &Request, timeout: Duration) -> Result<Response, CtlError> {
    let io_err = |source: std::io::Error| match source.kind() {
        // A read or write timeout: the switch is there but does not answer.
        ErrorKind::WouldBlock | ErrorKind::TimedOut => CtlError::NoAnswer {
            path: path.to_path_buf(),
            secs: timeout.as_secs(),
        },
        _ => CtlError::Io {
            path: path.to_path_buf(),
            source,
        },
    };
    let mut stream = UnixStream::connect(path).map_err(|error| CtlError::Connect {
        path: path.to_path_buf(),
        hint: super::connect_hint(error.kind()),
        error,
    })?;
    stream.set_read_timeout(Some(timeout)).map_err(io_err)?;
    stream.set_write_timeout(Some(timeout)).map_err(io_err)?;
    let line = req.to_line().map_err(CtlError::Encode)?;
    stream.write_all(line.as_bytes()).map_err(io_err)?;
    let mut answer = Vec::new();
    BufReader::new(stream)
        .take(MAX_RESPONSE)
        .read_until(b'\n', &mut answer)
        .map_err(io_err)?;
    serde_json::from_slice(&answer).map_err(|_| CtlError::BadResponse {
        path: path.to_path_buf(),
        answer: String::from_utf8_lossy(&answer[..answer.len().min(200)]).into_owned(),
    })
}
