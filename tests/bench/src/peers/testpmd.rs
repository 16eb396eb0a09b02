//! DPDK testpmd: two `net_vhost` ports (testpmd creates the sockets), io forwarding (no
//! switching, no checks), its forwarding lcore busy-polling the forwarder CPU, driven through
//! its interactive prompt so that its cycle counters cover exactly our window.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{anyhow, bail, Result};

use super::proc::Proc;
use super::{Cost, Ctx, Forwarder, Window};
use crate::scenario::Topology;
use crate::sys;

/// A running testpmd for one scenario.
pub struct Testpmd {
    p: Proc,
    sockets: Vec<PathBuf>,
    tsc_mhz: Option<f64>,
}

/// Why testpmd cannot run here, if it cannot.
pub fn unavailable() -> Option<String> {
    sys::find_binary("dpdk-testpmd")
        .is_none()
        .then(|| "dpdk-testpmd not found on PATH (Debian package dpdk-dev; ci/bench-peers.sh installs it)".into())
}

impl Testpmd {
    /// Starts testpmd with one vhost port per topology port (two); with `tso` the ports offer
    /// TSO to the guests (`net_vhost` devarg `tso=1`: HOST_TSO4/6 besides the checksum
    /// offloads the vhost library offers anyway).
    pub fn start(topo: &Topology, ctx: &Ctx, dir: &Path, tso: bool) -> Result<Self> {
        if topo.ports.len() != 2 {
            bail!("testpmd io forwarding is measured with two ports only");
        }
        let bin = sys::find_binary("dpdk-testpmd")
            .ok_or_else(|| anyhow!(unavailable().unwrap_or_default()))?;
        let sockets = super::socket_paths(dir, 2);
        // stdout into a pipe is block-buffered: line-buffer it so replies arrive in time.
        let mut cmd = match sys::find_binary("stdbuf") {
            Some(sb) => {
                let mut c = Command::new(sb);
                c.arg("-oL").arg(&bin);
                c
            }
            None => Command::new(&bin),
        };
        // lcore 0 (main, idle at the prompt) shares the generator CPU; lcore 1 forwards.
        cmd.arg(format!("--lcores=0@{},1@{}", ctx.gen_cpu, ctx.fwd_cpu))
            .args(["--no-pci", "--no-huge", "-m", "1024"])
            .arg(format!(
                "--file-prefix=vswbench{}-{}",
                std::process::id(),
                dir.file_name()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_default()
            ));
        for (i, s) in sockets.iter().enumerate() {
            cmd.arg("--vdev").arg(format!(
                "net_vhost{i},iface={},queues=1,client=0{}",
                s.display(),
                if tso { ",tso=1" } else { "" }
            ));
        }
        cmd.args([
            "--",
            "-i",
            "--forward-mode=io",
            "--nb-cores=1",
            "--rxq=1",
            "--txq=1",
            "--rxd=4096",
            "--txd=4096",
            "--total-num-mbufs=65536",
            "--record-core-cycles",
        ])
        .env("RUNTIME_DIRECTORY", dir)
        .env("XDG_RUNTIME_DIR", dir);
        let mut p = Proc::spawn("dpdk-testpmd", cmd, &dir.join("testpmd.log"))?;
        log::info!("testpmd pid {}", p.pid());
        p.wait_for(0, "testpmd> ", Duration::from_secs(30))?;
        for s in &sockets {
            let t0 = std::time::Instant::now();
            while !s.exists() {
                if t0.elapsed() > Duration::from_secs(5) {
                    bail!("testpmd did not create {}:\n{}", s.display(), p.tail(20));
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        Ok(Testpmd {
            p,
            sockets,
            tsc_mhz: ctx.tsc_mhz,
        })
    }

    fn command(&mut self, cmd: &str, until: &str) -> Result<String> {
        let from = self.p.output_len();
        self.p.send_line(cmd)?;
        let out = self.p.wait_for(from, until, Duration::from_secs(10))?;
        Ok(out)
    }
}

/// The number after `key` in `text` (up to the next space, ')' or end of line).
pub fn number_after(text: &str, key: &str) -> Option<f64> {
    let i = text.rfind(key)? + key.len();
    let rest = text[i..].trim_start();
    let end = rest
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

impl Forwarder for Testpmd {
    fn sockets(&self) -> &[PathBuf] {
        &self.sockets
    }

    fn pids(&mut self) -> Vec<u32> {
        vec![self.p.pid()]
    }

    fn after_connect(&mut self, _topo: &Topology) -> Result<()> {
        self.command("start", "testpmd> ")?;
        Ok(())
    }

    fn begin_window(&mut self) -> Result<()> {
        self.command("clear fwd stats all", "testpmd> ")?;
        Ok(())
    }

    fn end_window(&mut self, w: &Window) -> Result<Cost> {
        let out = self.command("show fwd stats all", "testpmd> ")?;
        let acc = out
            .rfind("Accumulated forward statistics")
            .map_or(out.as_str(), |i| &out[i..]);
        let mut notes = Vec::new();
        if let (Some(rxd), Some(txd)) = (
            number_after(acc, "RX-dropped:"),
            number_after(acc, "TX-dropped:"),
        ) {
            if rxd + txd > 0.0 {
                notes.push(format!("testpmd drops in window: RX {rxd}, TX {txd}"));
            }
        }
        let cycles = number_after(&out, "CPU cycles/packet=");
        let total = number_after(&out, "(total cycles=");
        let mhz = out
            .rfind(" MHz Clock")
            .and_then(|end| number_after(&out[..end], ") at "))
            .or(self.tsc_mhz);
        if cycles.is_none() {
            notes.push(format!(
                "no 'CPU cycles/packet' line in testpmd's output: {}",
                out.lines().last().unwrap_or("")
            ));
        }
        Ok(Cost {
            ns_per_pkt: cycles.zip(mhz).map(|(c, m)| c * 1000.0 / m),
            cycles_per_pkt: cycles,
            busy_share: total.zip(mhz).map(|(t, m)| t / (m * 1e6 * w.secs)),
            source: format!(
                "testpmd --record-core-cycles (busy cycles, TSC {} MHz)",
                mhz.map_or("?".into(), |m| format!("{m:.0}"))
            ),
            notes,
            counted: number_after(acc, "TX-packets:").map(|n| (n as u64, "testpmd TX-packets")),
        })
    }
}

impl Drop for Testpmd {
    fn drop(&mut self) {
        let _ = self.p.send_line("stop");
        let _ = self.p.send_line("quit");
        self.p.stop(Duration::from_secs(5));
    }
}
