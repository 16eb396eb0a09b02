//! Open vSwitch with DPDK, a private instance: its own database, ovsdb-server and the DPDK
//! build of ovs-vswitchd in a run directory of ours, no hugepages (`--no-huge --legacy-mem`,
//! per-port memory), one PMD thread on the forwarder CPU, a netdev bridge with two
//! `dpdkvhostuser` ports (OVS listens) and the default NORMAL (MAC learning) flow.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

use super::proc::{self, Proc};
use super::testpmd::number_after;
use super::{Cost, Ctx, Forwarder, Window};
use crate::scenario::Topology;
use crate::sys;

const VSWITCHD: &str = "/usr/lib/openvswitch-switch-dpdk/ovs-vswitchd-dpdk";
const SCHEMA: &str = "/usr/share/openvswitch/vswitch.ovsschema";
/// Bridge name (also the name of the tap device the netdev datapath creates for it).
const BRIDGE: &str = "vsbench0";
/// The tap the userspace datapath creates for itself.
const DP_TAP: &str = "ovs-netdev";

/// Why OVS-DPDK cannot run here, if it cannot.
pub fn unavailable() -> Option<String> {
    let missing: Vec<&str> = [
        ("ovsdb-tool", sys::find_binary("ovsdb-tool").is_some()),
        (
            "ovsdb-server",
            sys::find_binary("ovsdb-server")
                .or_else(|| sys::find_binary("/usr/sbin/ovsdb-server"))
                .is_some(),
        ),
        ("ovs-vsctl", sys::find_binary("ovs-vsctl").is_some()),
        ("ovs-appctl", sys::find_binary("ovs-appctl").is_some()),
        (VSWITCHD, Path::new(VSWITCHD).exists()),
        (SCHEMA, Path::new(SCHEMA).exists()),
    ]
    .into_iter()
    .filter(|(_, ok)| !ok)
    .map(|(n, _)| n)
    .collect();
    (!missing.is_empty()).then(|| {
        format!(
            "missing {} (Debian package openvswitch-switch-dpdk; ci/bench-peers.sh installs it)",
            missing.join(", ")
        )
    })
}

fn link_exists(name: &str) -> bool {
    Path::new("/sys/class/net").join(name).exists()
}

/// A private OVS-DPDK for one scenario.
pub struct Ovs {
    dir: PathBuf,
    db: Option<Proc>,
    vswitchd: Option<Proc>,
    sockets: Vec<PathBuf>,
    /// Taps that did not exist before this instance (deleted on drop).
    own_taps: Vec<&'static str>,
    fwd_cpu: usize,
    tsc_mhz: Option<f64>,
    /// `userspace-tso-enable=true`.
    tso: bool,
}

impl Ovs {
    fn cmd(&self, prog: &str) -> Command {
        let mut c = Command::new(prog);
        for v in ["OVS_RUNDIR", "OVS_LOGDIR", "OVS_DBDIR", "OVS_SYSCONFDIR"] {
            c.env(v, &self.dir);
        }
        c.env("RUNTIME_DIRECTORY", &self.dir);
        c
    }

    fn vsctl(&self, args: &[&str]) -> Result<String> {
        let mut c = self.cmd("ovs-vsctl");
        c.arg(format!("--db=unix:{}", self.dir.join("db.sock").display()))
            .arg("--timeout=120")
            .args(args);
        proc::run(&mut c, &format!("ovs-vsctl {}", args.join(" ")))
    }

    fn appctl(&self, args: &[&str]) -> Result<String> {
        let mut c = self.cmd("ovs-appctl");
        c.arg("-t")
            .arg(self.dir.join("ovs-vswitchd.ctl"))
            .args(args);
        proc::run(&mut c, &format!("ovs-appctl {}", args.join(" ")))
    }

    /// Starts the instance and creates the two vhost-user sockets.
    /// With `tso`, `other_config:userspace-tso-enable=true` (set before ovs-vswitchd starts)
    /// and `dpdkvhostuserclient` ports (the frontend listens, OVS connects): OVS 3.1 asks the
    /// vhost library for external buffers, without which it offers no host TSO, only on
    /// client ports.
    pub fn start(topo: &Topology, ctx: &Ctx, dir: &Path, tso: bool) -> Result<Self> {
        if topo.ports.len() != 2 {
            bail!("OVS-DPDK is measured with two ports only");
        }
        if let Some(why) = unavailable() {
            bail!(why);
        }
        if link_exists(BRIDGE) {
            bail!("a network device named {BRIDGE} already exists: not touching it");
        }
        let own_taps = [BRIDGE, DP_TAP]
            .into_iter()
            .filter(|t| !link_exists(t))
            .collect();
        let mut me = Ovs {
            dir: dir.to_path_buf(),
            db: None,
            vswitchd: None,
            sockets: vec![dir.join("vhu0"), dir.join("vhu1")],
            own_taps,
            fwd_cpu: ctx.fwd_cpu,
            tsc_mhz: ctx.tsc_mhz,
            tso,
        };
        me.launch().context("setting up OVS-DPDK")?;
        Ok(me)
    }

    fn launch(&mut self) -> Result<()> {
        let d = self.dir.clone();
        let mut c = self.cmd("ovsdb-tool");
        c.arg("create").arg(d.join("conf.db")).arg(SCHEMA);
        proc::run(&mut c, "ovsdb-tool create")?;
        let server = sys::find_binary("ovsdb-server")
            .or_else(|| sys::find_binary("/usr/sbin/ovsdb-server"))
            .ok_or_else(|| anyhow!("ovsdb-server not found"))?;
        let mut c = self.cmd(&server.to_string_lossy());
        c.arg(d.join("conf.db"))
            .arg(format!("--remote=punix:{}", d.join("db.sock").display()))
            .arg(format!(
                "--pidfile={}",
                d.join("ovsdb-server.pid").display()
            ))
            .arg(format!(
                "--unixctl={}",
                d.join("ovsdb-server.ctl").display()
            ))
            .arg(format!(
                "--log-file={}",
                d.join("ovsdb-server.log").display()
            ));
        self.db = Some(Proc::spawn("ovsdb-server", c, &d.join("ovsdb-server.out"))?);
        wait_path(
            &d.join("db.sock"),
            Duration::from_secs(10),
            self.db.as_mut(),
        )?;
        self.vsctl(&["--no-wait", "init"])?;
        let mask = format!("other_config:pmd-cpu-mask={:#x}", 1u64 << self.fwd_cpu);
        let tso = format!("other_config:userspace-tso-enable={}", self.tso);
        self.vsctl(&[
            "--no-wait",
            "set",
            "Open_vSwitch",
            ".",
            "other_config:dpdk-init=true",
            "other_config:dpdk-extra=--no-huge --legacy-mem -m 1024 --no-pci",
            "other_config:per-port-memory=true",
            &mask,
            &tso,
        ])?;
        let mut c = self.cmd(VSWITCHD);
        c.arg(format!("unix:{}", d.join("db.sock").display()))
            .arg(format!(
                "--pidfile={}",
                d.join("ovs-vswitchd.pid").display()
            ))
            .arg(format!(
                "--unixctl={}",
                d.join("ovs-vswitchd.ctl").display()
            ))
            .arg(format!(
                "--log-file={}",
                d.join("ovs-vswitchd.log").display()
            ));
        self.vswitchd = Some(Proc::spawn(
            "ovs-vswitchd-dpdk",
            c,
            &d.join("ovs-vswitchd.out"),
        )?);
        let ctl = d.join("ovs-vswitchd.ctl");
        wait_path(&ctl, Duration::from_secs(60), self.vswitchd.as_mut())
            .map_err(|e| self.explain(e))?;
        self.vsctl(&[
            "add-br",
            BRIDGE,
            "--",
            "set",
            "bridge",
            BRIDGE,
            "datapath_type=netdev",
        ])
        .map_err(|e| self.explain(e))?;
        for (i, s) in self.sockets.clone().iter().enumerate() {
            let name = format!("vhu{i}");
            let server_path = format!("options:vhost-server-path={}", s.display());
            let mut args = vec!["add-port", BRIDGE, &name, "--", "set", "Interface", &name];
            match self.tso {
                true => args.extend(["type=dpdkvhostuserclient", server_path.as_str()]),
                false => args.push("type=dpdkvhostuser"),
            }
            self.vsctl(&args).map_err(|e| self.explain(e))?;
            if !self.tso {
                wait_path(s, Duration::from_secs(20), self.vswitchd.as_mut())
                    .map_err(|e| self.explain(e))?;
            }
        }
        Ok(())
    }

    /// Adds the last lines of ovs-vswitchd's log to an error.
    fn explain(&self, e: anyhow::Error) -> anyhow::Error {
        let log = std::fs::read_to_string(self.dir.join("ovs-vswitchd.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        let tail = lines[lines.len().saturating_sub(15)..].join("\n");
        anyhow!("{e:#}\n--- ovs-vswitchd.log (last lines) ---\n{tail}")
    }
}

fn wait_path(p: &Path, timeout: Duration, owner: Option<&mut Proc>) -> Result<()> {
    let t0 = Instant::now();
    let mut owner = owner;
    while !p.exists() {
        if let Some(o) = owner.as_deref_mut() {
            if !o.running() {
                bail!(
                    "process exited before creating {}:\n{}",
                    p.display(),
                    o.tail(15)
                );
            }
        }
        if t0.elapsed() > timeout {
            bail!("{} did not appear within {timeout:?}", p.display());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

impl Forwarder for Ovs {
    fn sockets(&self) -> &[PathBuf] {
        &self.sockets
    }

    fn frontend_listens(&self) -> bool {
        self.tso
    }

    /// NORMAL floods to the bridge's own port until it learns a destination, and a sink never
    /// sends: put both guests' MACs in the FDB.
    fn after_connect(&mut self, topo: &Topology) -> Result<()> {
        for (i, p) in topo.ports.iter().enumerate() {
            let m = p.mac;
            let mac = format!(
                "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
                m[0], m[1], m[2], m[3], m[4], m[5]
            );
            self.appctl(&["fdb/add", BRIDGE, &format!("vhu{i}"), "0", &mac])?;
        }
        Ok(())
    }

    fn pids(&mut self) -> Vec<u32> {
        self.db
            .iter()
            .chain(self.vswitchd.iter())
            .map(Proc::pid)
            .collect()
    }

    fn begin_window(&mut self) -> Result<()> {
        self.appctl(&["dpif-netdev/pmd-stats-clear"])?;
        Ok(())
    }

    fn end_window(&mut self, w: &Window) -> Result<Cost> {
        let out = self.appctl(&["dpif-netdev/pmd-stats-show"])?;
        let key = format!("core_id {}:", self.fwd_cpu);
        let block = out.find(&key).map_or(out.as_str(), |i| &out[i..]);
        // This PMD's block ends where the next PMD's or the main thread's begins.
        let block = block[key.len().min(block.len())..]
            .split("pmd thread")
            .next()
            .and_then(|b| b.split("main thread").next())
            .unwrap_or("");
        let cycles = number_after(block, "avg processing cycles per packet:");
        let busy = number_after(block, "processing cycles:");
        let mhz = self.tsc_mhz;
        let mut notes = Vec::new();
        if cycles.is_none() {
            notes.push(format!(
                "no 'avg processing cycles per packet' in pmd-stats-show: {}",
                out.lines().take(3).collect::<Vec<_>>().join(" / ")
            ));
        }
        if let Some(n) = number_after(block, "miss with success upcall:") {
            if n > 0.0 {
                notes.push(format!("{n} upcalls in window"));
            }
        }
        Ok(Cost {
            ns_per_pkt: cycles.zip(mhz).map(|(c, m)| c * 1000.0 / m),
            cycles_per_pkt: cycles,
            busy_share: busy.zip(mhz).map(|(b, m)| b / (m * 1e6 * w.secs)),
            source: "ovs-appctl dpif-netdev/pmd-stats-show (processing cycles)".into(),
            notes,
            counted: number_after(block, "packets received:")
                .map(|n| (n as u64, "packets received by the OVS PMD")),
        })
    }
}

impl Drop for Ovs {
    fn drop(&mut self) {
        if let Some(mut v) = self.vswitchd.take() {
            let _ = self.appctl(&["exit"]);
            v.stop(Duration::from_secs(5));
        }
        if let Some(mut db) = self.db.take() {
            db.stop(Duration::ZERO);
        }
        for t in &self.own_taps {
            if link_exists(t) {
                let mut c = Command::new("ip");
                c.args(["link", "del", t]);
                if let Err(e) = proc::run(&mut c, &format!("ip link del {t}")) {
                    eprintln!("warning: could not delete the {t} tap OVS left: {e:#}");
                }
            }
        }
    }
}
