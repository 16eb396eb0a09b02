//! The `vswitch` binary as a child process: started with ports and a control socket, queried
//! through `vswitch ctl` (JSON), killed by PID on drop, restartable.
//!
//! ```no_run
//! # fn main() -> anyhow::Result<()> {
//! use vswitch_tests::{ScratchDir, Vswitch, VswitchPort};
//! let dir = ScratchDir::new("example")?;
//! let sw = Vswitch::start(
//!     dir.path(),
//!     &[VswitchPort::listen("vm1", dir.join("vm1.sock"), 100).mac("52:54:00:00:00:01")],
//! )?;
//! let stats = sw.stats()?;
//! println!("{}", stats.summary());
//! # Ok(()) }
//! ```
//!
//! - `port`: the `--port` values ([`VswitchPort`]).
//! - `process`: the process, started, killed and restarted ([`Vswitch`]).
//! - `ctl`: the `vswitch ctl` client (JSON answers, connected ports).
//! - `stats`: the counters of `vswitch ctl stats` ([`Stats`]).

mod ctl;
mod port;
mod process;
mod stats;

pub use port::{PortMode, VswitchPort};
pub use process::{vswitch_binary, Vswitch};
pub use stats::{ChannelStats, Counters, PortStats, Stats, UplinkStats};

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    #[test]
    fn port_spec() {
        let p = VswitchPort::connect("vm2", "/tmp/x/vm2.sock", 200).mac("52:54:00:00:00:02");
        assert_eq!(
            p.spec().unwrap(),
            "vm2,socket=/tmp/x/vm2.sock,channel=200,mode=connect,mac=52:54:00:00:00:02"
        );
        assert!(VswitchPort::listen("a,b", "/s", 1).spec().is_err());
    }

    #[test]
    fn stats_parse() {
        let c = r#"{"drops":{"channel_mismatch":2,"source_spoof":0},"flooded":3,"in_bytes":10,
                    "in_frames":1,"out_bytes":20,"out_frames":2}"#;
        let raw: Value = serde_json::from_str(&format!(
            r#"{{"channels":[{{"channel":100,"counters":{c},"ports":2}}],
                 "ports":[{{"channel":100,"name":"a","port":{{"connections":1}},"switch":{c}}}],
                 "uplinks":[]}}"#
        ))
        .unwrap();
        let s = Stats::from_json(raw).unwrap();
        assert_eq!(s.port("a").unwrap().switch.dropped("channel_mismatch"), 2);
        assert_eq!(s.port("a").unwrap().port["connections"], 1);
        assert_eq!(s.channel(100).unwrap().counters.flooded, 3);
        assert_eq!(
            s.channel(100).unwrap().counters.drops_text(),
            "channel_mismatch=2"
        );
        assert!(s.summary().contains("channel_mismatch=2"));
        assert!(s.port("b").is_err());
    }
}
