//! Target `config`: the TOML configuration file and the flags, parsed and validated as
//! `vswitch run` does before anything starts.
//!
//! Input: NUL-separated pieces: the first is the file's text, each further one a flag: a
//! `--port` spec, or `up=SPEC` for `--uplink`, `cores=LIST` for `--poll-cores`, `ctl=PATH` for
//! `--ctl`, `level=L` for `--log-level` (up to 8 flags). Invalid UTF-8 is replaced, as reading
//! a file would refuse it before parsing.
//!
//! Properties: nothing panics; every refusal has a message; an accepted configuration has at
//! least one port or uplink unless it names a state file (ports then come from the state or
//! the API), unique names among ports and uplinks, unique sockets, and at least one event
//! thread.

use std::collections::HashSet;
use std::path::Path;

use vswitch::config::{socket_key, Config, Sources};

/// Runs one input; panics when a property does not hold.
pub fn run(data: &[u8]) {
    let mut pieces = data.split(|&b| b == 0);
    let text = String::from_utf8_lossy(pieces.next().unwrap_or_default());
    let mut src = Sources::default();
    for p in pieces.take(8) {
        let p = String::from_utf8_lossy(p).into_owned();
        if let Some(v) = p.strip_prefix("cores=") {
            src.poll_cores = Some(v.to_owned());
        } else if let Some(v) = p.strip_prefix("ctl=") {
            src.ctl = Some(v.into());
        } else if let Some(v) = p.strip_prefix("level=") {
            src.log_level = Some(v.to_owned());
        } else if let Some(v) = p.strip_prefix("up=") {
            src.uplinks.push(v.to_owned());
        } else {
            src.ports.push(p);
        }
    }
    let path = Path::new("fuzz.toml");
    match Config::from_text(Some((path, &text)), &src) {
        Ok(c) => {
            assert!(
                !c.ports.is_empty() || !c.uplinks.is_empty() || c.state.is_some(),
                "no ports, no uplinks and no state file"
            );
            let names: HashSet<_> = c
                .ports
                .iter()
                .map(|p| p.name.as_str())
                .chain(c.uplinks.iter().map(|u| u.spec.name.as_str()))
                .collect();
            assert_eq!(names.len(), c.ports.len() + c.uplinks.len(), "unique names");
            let socks: HashSet<_> = c.ports.iter().map(|p| socket_key(&p.socket)).collect();
            assert_eq!(socks.len(), c.ports.len(), "unique sockets");
            assert!(c.settings.event_threads >= 1);
        }
        Err(e) => {
            let msg = e.to_string();
            assert!(!msg.is_empty());
        }
    }
}
