//! The `vswitch` binary: started with ports and a control socket, queried with `vswitch ctl`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use super::switch_stats::Stats;
use crate::bin_util::{run_to_end, Running};

/// A switch port for [`Vswitch::start`].
#[derive(Debug, Clone)]
pub struct Port {
    pub name: &'static str,
    pub socket: PathBuf,
    pub channel: u16,
    pub mac: Option<&'static str>,
    /// `mode=connect` (the frontend listens, `server=1`), else `mode=listen`.
    pub connect: bool,
}

/// The `vswitch` binary, running `run` with ports and a control socket; killed on drop.
pub struct Vswitch {
    run: Option<Running>,
    ctl: PathBuf,
}

impl Vswitch {
    /// Starts `vswitch run` with `ports` and `--ctl DIR/ctl.sock`; returns once the control
    /// socket and every listening port's socket exist.
    pub fn start(dir: &Path, ports: &[Port]) -> Vswitch {
        let ctl = dir.join("ctl.sock");
        let mut args = Vec::new();
        let mut ready = vec![ctl.clone()];
        for p in ports {
            let mut spec = format!(
                "--port={},socket={},channel={},mode={}",
                p.name,
                p.socket.display(),
                p.channel,
                if p.connect { "connect" } else { "listen" }
            );
            if let Some(mac) = p.mac {
                spec.push_str(&format!(",mac={mac}"));
            }
            args.push(spec);
            if !p.connect {
                ready.push(p.socket.clone());
            }
        }
        args.push(format!("--ctl={}", ctl.display()));
        args.push("--log-level=info".into());
        let run = Running::start(&args, &ready);
        Vswitch {
            run: Some(run),
            ctl,
        }
    }

    pub fn pid(&self) -> i32 {
        self.run.as_ref().map_or(0, Running::pid)
    }

    fn ctl_json(&self, cmd: &str) -> Value {
        let ctl = self.ctl.display().to_string();
        let out = run_to_end(&["ctl", "--ctl", &ctl, "--json", cmd]);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "vswitch ctl {cmd} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("ctl {cmd}: {e}: {text}"))
    }

    /// `vswitch ctl stats`.
    pub fn stats(&self) -> Stats {
        Stats(self.ctl_json("stats"))
    }

    /// Whether a frontend is attached to port `name` (`vswitch ctl ports`).
    pub fn connected(&self, name: &str) -> bool {
        let ports = self.ctl_json("ports");
        let p = ports
            .as_array()
            .and_then(|a| a.iter().find(|p| p["name"] == name))
            .unwrap_or_else(|| panic!("no port {name}: {ports}"));
        p["connected"]
            .as_bool()
            .unwrap_or_else(|| panic!("no 'connected' for {name}: {p}"))
    }

    /// The FDB's port for `mac` in channel `svid` (`vswitch ctl fdb`).
    pub fn fdb_port(&self, svid: u16, mac: &str) -> Option<String> {
        let fdb = self.ctl_json("fdb");
        fdb.as_array()?
            .iter()
            .find(|e| e["channel"] == svid && e["mac"].as_str().is_some_and(|m| m == mac))
            .and_then(|e| e["port"].as_str().map(str::to_owned))
    }

    /// CPU time (user + system) the switch process has used so far.
    pub fn cpu_time(&self) -> Duration {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid()))
            .unwrap_or_else(|e| panic!("/proc/{}/stat: {e}", self.pid()));
        // Fields after the parenthesised command name: state is field 3; utime, stime 14, 15.
        let rest = &stat[stat.rfind(')').expect("stat format") + 2..];
        let f: Vec<&str> = rest.split_whitespace().collect();
        let ticks: u64 =
            f[11].parse::<u64>().expect("utime") + f[12].parse::<u64>().expect("stime");
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
        Duration::from_nanos(ticks * 1_000_000_000 / hz)
    }

    /// SIGTERM; asserts a clean exit and returns its log (with the final counters).
    pub fn stop(mut self) -> String {
        let run = self.run.take().expect("running");
        let (status, log) = run.stop_with(libc::SIGTERM);
        assert!(status.success(), "vswitch exited with {status}:\n{log}");
        log
    }
}

impl Drop for Vswitch {
    fn drop(&mut self) {
        // Running kills its child by PID on drop.
        self.run.take();
    }
}
