//! The control protocol: one JSON request per line, one JSON response per line.
//!
//! ```text
//! {"cmd": "ports"}                                   -> {"ok": true, "result": [...]}
//! {"cmd": "add-port", "spec": "vm3,socket=/run/vm3.sock,channel=100"}
//! {"cmd": "add-port", "spec": {"name": "vm3", "socket": "/run/vm3.sock", "channel": 100}}
//! {"cmd": "remove-port", "name": "vm3"}
//! {"cmd": "associate", "name": "vm3", "channel": 200}
//! {"cmd": "disassociate", "name": "vm3"}
//! {"cmd": "set-rate", "name": "vm3", "rate": 100, "burst": 64, "pps": 100000}  (none: unlimited)
//! {"cmd": "capture-start", "name": "vm3", "file": "/tmp/vm3.pcap", "direction": "both",
//!  "count": 1000, "snaplen": 128}
//! {"cmd": "capture-stop", "name": "vm3"} {"cmd": "captures"}
//! {"cmd": "fdb"} {"cmd": "stats"} {"cmd": "channels"} {"cmd": "metrics"} {"cmd": "policy"}
//! {"cmd": "set-policy", "allow": [[100, 200]]}
//! anything refused                                   -> {"ok": false, "error": "..."}
//! ```

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::config::RawNumber;

/// Longest request line accepted, in bytes (without the newline).
pub const MAX_LINE: usize = 64 * 1024;

/// A control request: built by the client (`vswitch ctl`), parsed by the server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Request {
    /// List ports.
    Ports {},
    /// Add a port: `spec` is `NAME,key=value,...` text or an object with a `[[port]]` table's
    /// keys.
    AddPort {
        /// The port.
        spec: Value,
        /// The port is the incoming side of a live migration of this VM port's guest (same
        /// MAC, same channel): see docs/migration.md.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        migration_of: Option<String>,
    },
    /// Remove a port by name.
    RemovePort {
        /// Port name.
        name: String,
    },
    /// Move a port's VM to a channel.
    Associate {
        /// Port name.
        name: String,
        /// S-VID, as a number or text.
        channel: Value,
    },
    /// Take a port's VM off its channel.
    Disassociate {
        /// Port name.
        name: String,
    },
    /// Start capturing a port into a new pcap file.
    CaptureStart {
        /// Port (or uplink) name.
        name: String,
        /// The file (absolute; created by the switch, never overwritten).
        file: String,
        /// `rx`, `tx` or `both` (default).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        direction: Option<String>,
        /// Stop after this many frames.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        count: Option<u64>,
        /// Bytes kept per frame (64..=65535, default 65535).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        snaplen: Option<u32>,
    },
    /// Stop a port's capture (its file is complete when the answer comes).
    CaptureStop {
        /// Port name.
        name: String,
    },
    /// The running captures and their counts.
    Captures {},
    /// Replace a VM port's transmit rate limit (none given: unlimited).
    SetRate {
        /// Port name.
        name: String,
        /// Mbit/s.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        rate: Option<RawNumber>,
        /// Burst of `rate`, KB.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        burst: Option<RawNumber>,
        /// Frames per second.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pps: Option<RawNumber>,
    },
    /// The learned addresses.
    Fdb {},
    /// Counters per port and per channel.
    Stats {},
    /// The channel table: which ports are on which channel.
    Channels {},
    /// Counters as Prometheus text.
    Metrics {},
    /// The delivery policy.
    Policy {},
    /// Replace the delivery policy's extra pairs.
    SetPolicy {
        /// Directed pairs `[from, to]`; empty for isolation only.
        allow: Vec<Vec<RawNumber>>,
    },
}

impl Request {
    /// The request as one line of JSON, with its newline: what the client sends.
    pub fn to_line(&self) -> Result<String, serde_json::Error> {
        let mut s = serde_json::to_string(self)?;
        s.push('\n');
        Ok(s)
    }
}

/// A response line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Response {
    /// True on success.
    pub ok: bool,
    /// The result, on success.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub result: Option<Value>,
    /// What went wrong, on failure.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub error: Option<String>,
}

impl Response {
    /// A success.
    pub fn ok(result: Value) -> Response {
        Response {
            ok: true,
            result: Some(result),
            error: None,
        }
    }

    /// A failure.
    pub fn err(error: impl Into<String>) -> Response {
        Response {
            ok: false,
            result: None,
            error: Some(error.into()),
        }
    }

    /// The response as one line of JSON, with its newline.
    pub fn to_line(&self) -> String {
        let mut s = serde_json::to_string(self).unwrap_or_else(|e| {
            format!("{{\"ok\":false,\"error\":\"cannot encode the response: {e}\"}}")
        });
        s.push('\n');
        s
    }
}

/// Parses one request line (without its newline).
pub fn parse_request(line: &[u8]) -> Result<Request, String> {
    serde_json::from_slice(line).map_err(|e| {
        format!(
            "malformed request: {e}; send one JSON object per line, e.g. {{\"cmd\": \"ports\"}}"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_command() {
        for (line, want) in [
            (r#"{"cmd":"ports"}"#, Request::Ports {}),
            (r#"{"cmd":"fdb"}"#, Request::Fdb {}),
            (r#"{"cmd":"stats"}"#, Request::Stats {}),
            (r#"{"cmd":"channels"}"#, Request::Channels {}),
            (r#"{"cmd":"metrics"}"#, Request::Metrics {}),
            (r#"{"cmd":"policy"}"#, Request::Policy {}),
            (
                r#"{"cmd":"remove-port","name":"vm1"}"#,
                Request::RemovePort { name: "vm1".into() },
            ),
            (
                r#"{"cmd":"disassociate","name":"vm1"}"#,
                Request::Disassociate { name: "vm1".into() },
            ),
            (
                r#"{"cmd":"associate","name":"vm1","channel":200}"#,
                Request::Associate {
                    name: "vm1".into(),
                    channel: Value::from(200),
                },
            ),
            (
                r#"{"cmd":"add-port","spec":"a,socket=/x,channel=1"}"#,
                Request::AddPort {
                    spec: Value::from("a,socket=/x,channel=1"),
                    migration_of: None,
                },
            ),
            (
                r#"{"cmd":"set-policy","allow":[[1,2]]}"#,
                Request::SetPolicy {
                    allow: vec![vec![RawNumber::Int(1), RawNumber::Int(2)]],
                },
            ),
        ] {
            assert_eq!(parse_request(line.as_bytes()), Ok(want), "{line}");
        }
    }

    #[test]
    fn requests_read_back_as_sent() {
        for (req, line) in [
            (Request::Ports {}, r#"{"cmd":"ports"}"#),
            (
                Request::SetPolicy { allow: vec![] },
                r#"{"cmd":"set-policy","allow":[]}"#,
            ),
            (
                Request::SetPolicy {
                    allow: vec![vec![RawNumber::Text("100".into()), RawNumber::Int(200)]],
                },
                r#"{"cmd":"set-policy","allow":[["100",200]]}"#,
            ),
            (
                Request::Associate {
                    name: "vm1".into(),
                    channel: Value::from("200"),
                },
                r#"{"cmd":"associate","name":"vm1","channel":"200"}"#,
            ),
            (
                Request::AddPort {
                    spec: Value::from("a,socket=/x,channel=1"),
                    migration_of: None,
                },
                r#"{"cmd":"add-port","spec":"a,socket=/x,channel=1"}"#,
            ),
        ] {
            let sent = req.to_line().expect("encodes");
            assert_eq!(sent, format!("{line}\n"));
            assert_eq!(parse_request(sent.trim_end().as_bytes()), Ok(req));
        }
    }

    #[test]
    fn refuses_malformed_requests_with_a_message() {
        for line in [
            "",
            "ports",
            "{",
            "[]",
            r#"{"cmd":"nope"}"#,
            r#"{"cmd":"ports","extra":1}"#,
            r#"{"cmd":"remove-port"}"#,
            r#"{"cmd":"remove-port","name":"a","extra":1}"#,
            r#"{"cmd":"stats","x":null}"#,
            r#"{"name":"vm1"}"#,
            "\u{0}\u{1}",
        ] {
            let e = parse_request(line.as_bytes()).expect_err(line);
            assert!(e.starts_with("malformed request"), "{e}");
        }
        assert!(parse_request(&[0xff, 0xfe]).is_err());
    }

    #[test]
    fn responses_are_single_lines() {
        let r = Response::ok(Value::from("a\nb"));
        let line = r.to_line();
        assert_eq!(line.matches('\n').count(), 1);
        assert_eq!(serde_json::from_str::<Response>(&line).ok(), Some(r));
        assert_eq!(
            Response::err("x").to_line(),
            "{\"ok\":false,\"error\":\"x\"}\n"
        );
    }
}
