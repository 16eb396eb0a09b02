//! The demo's two hosts: network namespaces joined by a veth pair (the underlay), a `vswitch` in
//! each, and the VM ports and uplinks each switch reports.

use crate::signals;
use anyhow::{bail, Context, Result};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::Duration;
use vswitch_tests::netns::{veth, Netns};
use vswitch_tests::{SocketRole, Vswitch};

/// The namespaces' names, fixed so that users can look inside (`ip netns exec vswdemo-a ...`).
pub const NETNS_A: &str = "vswdemo-a";
pub const NETNS_B: &str = "vswdemo-b";
/// The veth pair's interface name on both sides, and its addresses: the uplinks' `local` and
/// `remote` in examples/demo.toml and examples/demo-host-b.toml.
const UNDERLAY_IF: &str = "veth0";
pub const UNDERLAY_A: &str = "10.77.0.1/24";
pub const UNDERLAY_B: &str = "10.77.0.2/24";

/// Two namespaces joined by a veth pair with an address on each side.
pub struct Underlay {
    pub a: Netns,
    pub b: Netns,
}

impl Underlay {
    /// Creates `vswdemo-a` and `vswdemo-b` (replacing stale ones left by a crashed run) and the
    /// veth pair between them.
    pub fn build() -> Result<Underlay> {
        for name in [NETNS_A, NETNS_B] {
            if Netns::exists(name) {
                println!("  network namespace {name} left by an earlier run: deleting it");
            }
        }
        let a = Netns::named(NETNS_A)?;
        signals::remember_netns(NETNS_A);
        let b = Netns::named(NETNS_B)?;
        signals::remember_netns(NETNS_B);
        veth(
            &a,
            UNDERLAY_IF,
            Some(UNDERLAY_A),
            &b,
            UNDERLAY_IF,
            Some(UNDERLAY_B),
        )
        .context("joining the namespaces with a veth pair")?;
        Ok(Underlay { a, b })
    }

    /// Deletes both namespaces (with the veth pair) and checks they are gone.
    pub fn remove(self) -> Result<()> {
        let Underlay { a, b } = self;
        drop(a);
        drop(b);
        for name in [NETNS_A, NETNS_B] {
            signals::forget_netns(name);
            if Netns::exists(name) {
                bail!("network namespace {name} was not deleted");
            }
        }
        Ok(())
    }
}

/// One VM port of a switch, as `vswitch ctl ports` describes it, and the guest behind it.
#[derive(Debug, Clone)]
pub struct Vm {
    /// The host it is on: "A" or "B".
    pub host: &'static str,
    pub name: String,
    pub socket: PathBuf,
    pub channel: u16,
    pub mac: String,
    pub role: SocketRole,
    pub ip: String,
}

impl Vm {
    /// Its IPv4 address without the prefix.
    pub fn addr(&self) -> &str {
        self.ip.split('/').next().unwrap_or(&self.ip)
    }
}

/// One uplink of a switch, as `vswitch ctl ports` describes it.
#[derive(Debug, Clone)]
pub struct UplinkRow {
    pub name: String,
    /// What it runs over: "vxlan 10.77.0.1:4789 -> 10.77.0.2", "dot1ad on eth1".
    pub wire: String,
    pub channels: String,
    /// The MTU it carries for guests.
    pub mtu: Option<u16>,
}

/// A host: its switch (running in its namespace), run directory, VM ports and uplinks.
pub struct Host {
    pub label: &'static str,
    pub netns: String,
    pub sw: Vswitch,
    pub run_dir: PathBuf,
    pub vms: Vec<Vm>,
    pub uplinks: Vec<UplinkRow>,
}

impl Host {
    /// Starts `ip netns exec NETNS vswitch run --ctl RUN_DIR/ctl.sock --config CONFIG` and reads
    /// its ports; the N-th VM port gets 10.10.0.(first_ip + N)/24.
    pub fn start(
        label: &'static str,
        netns: &Netns,
        config: &Path,
        run_dir: &Path,
        first_ip: usize,
    ) -> Result<Host> {
        let cfg = config.to_str().context("configuration path is not UTF-8")?;
        let sw = Vswitch::start_in(Some(netns.name()), run_dir, &[], &["--config", cfg])
            .with_context(|| format!("starting host {label}'s switch"))?;
        signals::remember_pid(sw.pid());
        let list = sw.ctl_json(&["ports"])?;
        let list = list
            .as_array()
            .context("`vswitch ctl ports` did not answer a list")?;
        // Uplinks are listed after the VM ports; the demo's guests are behind the VM ports.
        let (uplinks, vms): (Vec<&Value>, Vec<&Value>) = list
            .iter()
            .partition(|p| p.get("kind").and_then(Value::as_str) == Some("uplink"));
        let vms = vms
            .iter()
            .enumerate()
            .map(|(i, p)| vm_of(label, p, first_ip + i))
            .collect::<Result<Vec<_>>>()?;
        let uplinks = uplinks
            .iter()
            .map(|u| uplink_of(u))
            .collect::<Result<Vec<_>>>()?;
        if vms.is_empty() {
            bail!("host {label}: {} has no VM port", config.display());
        }
        if uplinks.is_empty() {
            bail!(
                "host {label}: {} has no [[uplink]]: the hosts would not be joined",
                config.display()
            );
        }
        Ok(Host {
            label,
            netns: netns.name().to_owned(),
            sw,
            run_dir: run_dir.to_path_buf(),
            vms,
            uplinks,
        })
    }

    /// The MTU to give this host's guests: the smallest one its uplinks carry for guests.
    pub fn guest_mtu(&self) -> Option<u16> {
        self.uplinks.iter().filter_map(|u| u.mtu).min()
    }

    /// Prints the switch, its ports and uplinks, and the line it logged for each uplink (which
    /// path it runs on).
    pub fn describe(&self) {
        println!(
            "host {} (netns {}): vswitch pid {:?}, log {}",
            self.label,
            self.netns,
            self.sw.pid(),
            self.sw.log_path().display()
        );
        for vm in &self.vms {
            println!(
                "  port   {:<5} channel {:<4} mac {} socket {} ({})",
                vm.name,
                vm.channel,
                vm.mac,
                vm.socket.display(),
                match vm.role {
                    SocketRole::Client => "switch listens, QEMU connects",
                    SocketRole::Server => "QEMU listens (server=on), switch connects",
                }
            );
        }
        let log = self.sw.output();
        for u in &self.uplinks {
            println!(
                "  uplink {:<5} {}, channels {}, guests' MTU {}",
                u.name,
                u.wire,
                u.channels,
                u.mtu.map_or("-".into(), |m| m.to_string())
            );
            let needle = format!("uplink {}:", u.name);
            if let Some(line) = log.lines().find(|l| l.contains(&needle)) {
                let from = line.find(&needle).unwrap_or(0);
                println!("         switch log: {}", &line[from..]);
            }
        }
    }

    /// SIGTERMs the switch; checks it exited with status 0 and removed its sockets (those of
    /// listen-role ports and the control socket).
    pub fn stop(&mut self) -> Result<ExitStatus> {
        let pid = self.sw.pid();
        let status = self.sw.terminate(Duration::from_secs(10))?;
        signals::forget_pid(pid);
        let ctl = self.sw.ctl_path().to_path_buf();
        let left: Vec<String> = self
            .vms
            .iter()
            .filter(|v| v.role == SocketRole::Client)
            .map(|v| &v.socket)
            .chain([&ctl])
            .filter(|p| p.exists())
            .map(|p| p.display().to_string())
            .collect();
        println!(
            "host {}: vswitch exited ({status}); sockets left behind: {left:?}",
            self.label
        );
        if !status.success() {
            bail!(
                "host {}: vswitch exited with {status} on SIGTERM",
                self.label
            );
        }
        if !left.is_empty() {
            bail!(
                "host {}: the switch left its sockets behind: {left:?}",
                self.label
            );
        }
        Ok(status)
    }

    /// Removes what the demo put in the run directory, and the directory if that leaves it
    /// empty.
    pub fn cleanup(&self) {
        let mut files = vec![self.sw.log_path().to_path_buf()];
        for v in &self.vms {
            files.push(self.run_dir.join(format!("{}.console.log", v.name)));
            files.push(self.run_dir.join(format!("{}.console.log.stderr", v.name)));
            if v.role == SocketRole::Server {
                // QEMU created it and is gone: nobody else removes it.
                files.push(v.socket.clone());
            }
        }
        for f in files {
            let _ = std::fs::remove_file(f);
        }
        let _ = std::fs::remove_dir(&self.run_dir);
    }
}

fn vm_of(host: &'static str, p: &Value, n: usize) -> Result<Vm> {
    let s = |k: &str| p.get(k).and_then(Value::as_str).map(str::to_string);
    let name = s("name").context("port without a name")?;
    let mac = s("mac").with_context(|| format!("port {name} has no mac= (the demo needs one)"))?;
    let channel = p
        .get("channel")
        .and_then(Value::as_u64)
        .and_then(|c| u16::try_from(c).ok())
        .with_context(|| format!("port {name} is on no channel"))?;
    let role = match s("role").as_deref() {
        Some("connect") => SocketRole::Server,
        _ => SocketRole::Client,
    };
    Ok(Vm {
        host,
        socket: PathBuf::from(s("socket").context("port without a socket")?),
        name,
        channel,
        mac,
        role,
        ip: format!("10.10.0.{n}/24"),
    })
}

fn uplink_of(u: &Value) -> Result<UplinkRow> {
    let s = |k: &str| u.get(k).and_then(Value::as_str).map(str::to_string);
    let name = s("name").context("uplink without a name")?;
    let transport = s("transport").unwrap_or("?".into());
    let wire = match (s("interface"), s("local")) {
        (Some(ifname), _) => format!("{transport} on {ifname}"),
        (None, Some(local)) => {
            let remotes: Vec<&str> = u
                .get("remotes")
                .and_then(Value::as_array)
                .map(|r| r.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            format!("{transport} {local} -> {}", remotes.join(", "))
        }
        (None, None) => transport,
    };
    Ok(UplinkRow {
        wire,
        channels: s("channels").unwrap_or("?".into()),
        mtu: u
            .get("mtu")
            .and_then(Value::as_u64)
            .and_then(|m| u16::try_from(m).ok()),
        name,
    })
}
