//! Network checks run in the guest: ping and iperf3.

use super::guest::QemuGuest;
use anyhow::{bail, Context, Result};
use std::time::{Duration, Instant};

impl QemuGuest {
    /// `ping -c COUNT` from the guest (busybox ping); true if at least one reply came back.
    /// Takes about COUNT + 1 seconds when nothing answers (`-W 2`: busybox otherwise waits 10 s
    /// for a late reply after the last request, whatever `-w` says).
    pub fn ping(&mut self, ip: &str, count: u32) -> Result<bool> {
        let count = count.max(1);
        let deadline = count + 2;
        let (rc, _) = self.run(
            &format!("ping -c {count} -w {deadline} -W 2 -q {ip}"),
            Duration::from_secs(u64::from(deadline) + 30),
        )?;
        Ok(rc == 0)
    }

    /// Pings `ip` once a second until a reply comes back or `timeout` passes; returns the time
    /// it took. For waiting until a path through the backend works (link up, ARP resolved).
    pub fn wait_ping(&mut self, ip: &str, timeout: Duration) -> Result<Duration> {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if self.ping(ip, 1)? {
                return Ok(start.elapsed());
            }
        }
        bail!("{}: no ping reply from {ip} within {timeout:?}", self.name)
    }

    /// Starts `iperf3 -s` in the background in this guest (one server per guest).
    pub fn iperf3_server(&mut self) -> Result<()> {
        self.run_ok(
            "iperf3 -s -D -1 >/dev/null 2>&1 || iperf3 -s -D",
            Duration::from_secs(30),
        )?;
        Ok(())
    }

    /// Runs an iperf3 TCP client against `server_ip` for `secs` seconds; returns the receiver's
    /// throughput in bit/s (iperf3's JSON `end.sum_received.bits_per_second`).
    pub fn iperf3_client(&mut self, server_ip: &str, secs: u32, extra: &str) -> Result<f64> {
        let out = self.run_ok(
            &format!("iperf3 -J -c {server_ip} -t {secs} {extra}"),
            Duration::from_secs(u64::from(secs) + 60),
        )?;
        let v: serde_json::Value = serde_json::from_str(out.trim())
            .with_context(|| format!("{}: iperf3 output is not JSON:\n{out}", self.name))?;
        v.pointer("/end/sum_received/bits_per_second")
            .and_then(serde_json::Value::as_f64)
            .with_context(|| {
                format!(
                    "{}: no end.sum_received in iperf3 output:\n{out}",
                    self.name
                )
            })
    }
}
