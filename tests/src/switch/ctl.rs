//! The `vswitch ctl` client: commands over the control socket, their (JSON) answers.

use super::process::Vswitch;
use super::stats::Stats;
use crate::util::wait_until;
use anyhow::{bail, Context, Result};
use serde_json::Value;
use std::process::{Command, Stdio};
use std::time::Duration;

impl Vswitch {
    pub(super) fn ctl_raw(&self, args: &[&str]) -> Result<String> {
        let out = Command::new(&self.bin)
            .arg("ctl")
            .arg("--ctl")
            .arg(&self.ctl)
            .arg("--timeout")
            .arg("10")
            .args(args)
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("running {} ctl", self.bin.display()))?;
        if !out.status.success() {
            bail!(
                "vswitch ctl {} failed ({}): {}{}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Runs `vswitch ctl --ctl CTL ARGS...` and returns its standard output.
    pub fn ctl(&self, args: &[&str]) -> Result<String> {
        self.ctl_raw(args)
    }

    /// Runs a `vswitch ctl --json` command.
    pub fn ctl_json(&self, args: &[&str]) -> Result<Value> {
        let mut json = vec!["--json"];
        json.extend_from_slice(args);
        let out = self.ctl_raw(&json)?;
        serde_json::from_str(&out)
            .with_context(|| format!("vswitch ctl {}: not JSON:\n{out}", args.join(" ")))
    }

    /// The counters (`vswitch ctl stats`).
    pub fn stats(&self) -> Result<Stats> {
        Stats::from_json(self.ctl_json(&["stats"])?)
    }

    /// Names of the ports whose frontend is connected (`vswitch ctl ports`, `connected`).
    pub fn connected_ports(&self) -> Result<Vec<String>> {
        let v = self.ctl_json(&["ports"])?;
        let list = v.as_array().context("`ctl ports` did not answer a list")?;
        Ok(list
            .iter()
            .filter(|p| p.get("connected").and_then(Value::as_bool) == Some(true))
            .filter_map(|p| p.get("name").and_then(Value::as_str).map(str::to_string))
            .collect())
    }

    /// Polls until every port in `names` has a connected frontend.
    pub fn wait_connected(&self, names: &[&str], timeout: Duration) -> Result<()> {
        let mut last = Vec::new();
        let ok = wait_until(timeout, Duration::from_millis(100), || {
            last = self.connected_ports().unwrap_or_default();
            names.iter().all(|n| last.iter().any(|c| c == n))
        });
        if !ok {
            bail!(
                "ports {names:?} not all connected within {timeout:?} (connected: {last:?})\n{}",
                self.out.tail(20)
            );
        }
        Ok(())
    }

    /// Polls until port `name` has no connected frontend (the switch saw it go away).
    pub fn wait_disconnected(&self, name: &str, timeout: Duration) -> Result<()> {
        let mut last = Vec::new();
        let ok = wait_until(timeout, Duration::from_millis(20), || {
            // A failed query proves nothing: keep asking.
            match self.connected_ports() {
                Ok(c) => {
                    last = c;
                    !last.iter().any(|c| c == name)
                }
                Err(_) => false,
            }
        });
        if !ok {
            bail!(
                "port {name} still connected after {timeout:?} (connected: {last:?})\n{}",
                self.out.tail(20)
            );
        }
        Ok(())
    }
}
