//! A guest's configuration (NICs, memory, kernel command line) and the QEMU command line it
//! makes: the harness's own or an example launch script's.

use crate::assets::GuestAssets;
use crate::util::check_socket_path;
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Who creates the vhost-user socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SocketRole {
    /// QEMU connects to a socket the backend listens on (switch `mode=listen`), and reconnects
    /// every second when the backend goes away (`reconnect=1`). QEMU blocks before booting the
    /// guest until the first connection succeeds.
    Client,
    /// QEMU creates and listens on the socket (`server=on,wait=off`); the backend connects
    /// (switch `mode=connect`). QEMU still waits for that connection before the guest runs.
    Server,
}

/// One virtio-net NIC backed by vhost-user. The first NIC is the guest's eth0, the second eth1.
#[derive(Debug, Clone)]
pub struct NicConfig {
    pub socket: PathBuf,
    pub role: SocketRole,
    /// e.g. "52:54:00:00:00:01"
    pub mac: String,
    /// IPv4 address with prefix, e.g. "10.0.0.1/24"; None leaves the interface without one.
    pub ip: Option<String>,
    /// Extra `-device virtio-net-pci` properties, e.g. "mrg_rxbuf=off,csum=off".
    pub device_opts: String,
    /// Queue pairs (`-netdev vhost-user,...,queues=N`; with more than one, the device gets
    /// `mq=on`). MSI-X stays off (`vectors=0`: QEMU 7.2 under TCG crashes with it).
    pub queues: u16,
}

impl NicConfig {
    pub fn new(socket: impl Into<PathBuf>, role: SocketRole, mac: &str, ip: Option<&str>) -> Self {
        Self {
            socket: socket.into(),
            role,
            mac: mac.to_string(),
            ip: ip.map(str::to_string),
            device_opts: String::new(),
            queues: 1,
        }
    }
}

/// Everything needed to start a guest. `GuestConfig::new(name).nic(...)`.
#[derive(Debug, Clone)]
pub struct GuestConfig {
    /// A short name: used for QEMU's `-name`, the hostname, log prefixes and file names.
    pub name: String,
    pub nics: Vec<NicConfig>,
    /// Guest RAM in MiB (the memfd backend has the same size).
    pub memory_mb: u32,
    /// Virtual CPUs (`-smp`; default 1).
    pub cpus: u32,
    /// Appended to the kernel command line.
    pub extra_cmdline: String,
    /// Appended to QEMU's arguments.
    pub extra_args: Vec<String>,
    /// Where to write the serial console (default: `<name>.console.log` next to the first
    /// NIC's socket). QEMU's stderr goes to the same place with `.stderr` appended.
    pub console_log: Option<PathBuf>,
    /// Kernel and initramfs; default [`guest_assets()`](crate::assets::guest_assets).
    pub assets: Option<GuestAssets>,
    /// Start QEMU through the example launch script a user would paste
    /// (`examples/qemu-listen.sh` for a [`SocketRole::Client`] NIC, `examples/qemu-connect.sh`
    /// for [`SocketRole::Server`]) instead of the harness's own command line. One NIC;
    /// `device_opts` and `extra_args` are not used.
    pub via_example_script: bool,
}

impl GuestConfig {
    pub fn new(name: &str) -> Self {
        Self {
            name: name.to_string(),
            nics: Vec::new(),
            memory_mb: 256,
            cpus: 1,
            extra_cmdline: String::new(),
            extra_args: Vec::new(),
            console_log: None,
            assets: None,
            via_example_script: false,
        }
    }

    /// Configs of guests `vm1`, `vm2`, ...: guest i a QEMU client ([`SocketRole::Client`]) of
    /// `socks[i]` with MAC `macs[i]` and address `ips[i]/24` (as many as the shortest list).
    pub fn client_vms(socks: &[PathBuf], macs: &[&str], ips: &[&str]) -> Vec<Self> {
        socks
            .iter()
            .zip(macs)
            .zip(ips)
            .enumerate()
            .map(|(i, ((sock, mac), ip))| {
                Self::new(&format!("vm{}", i + 1)).nic(
                    sock,
                    SocketRole::Client,
                    mac,
                    &format!("{ip}/24"),
                )
            })
            .collect()
    }

    /// Adds a vhost-user NIC (eth0 first, then eth1).
    pub fn nic(
        mut self,
        socket: impl Into<PathBuf>,
        role: SocketRole,
        mac: &str,
        ip: &str,
    ) -> Self {
        self.nics.push(NicConfig::new(socket, role, mac, Some(ip)));
        self
    }

    /// The QEMU command line (without the binary) this config produces.
    pub fn qemu_args(&self, assets: &GuestAssets) -> Result<Vec<String>> {
        if self.name.is_empty() || self.name.contains([',', '/']) {
            bail!(
                "guest name {:?} must be non-empty without ',' or '/'",
                self.name
            );
        }
        if self.nics.len() > 2 {
            bail!("the guest's /init configures at most two NICs (eth0, eth1)");
        }
        let m = self.memory_mb;
        // no_timer_check: under TCG on a loaded host the kernel's boot-time check of the
        // IO-APIC timer can see too few ticks and panic ("IO-APIC + timer doesn't work").
        let mut cmdline = format!(
            "console=ttyS0 quiet panic=-1 no_timer_check vsw.console=harness vsw.hostname={}",
            hostname_of(&self.name)
        );
        let mut args: Vec<String> = [
            "-name",
            &self.name,
            "-accel",
            "tcg",
            "-cpu",
            "max",
            "-smp",
            &self.cpus.max(1).to_string(),
            "-m",
            &format!("{m}M"),
            "-object",
            &format!("memory-backend-memfd,id=mem,size={m}M,share=on"),
            "-numa",
            "node,memdev=mem",
            "-nodefaults",
            "-no-user-config",
            "-display",
            "none",
            "-monitor",
            "none",
            "-serial",
            "stdio",
            "-no-reboot",
            "-kernel",
            &path_arg(&assets.kernel)?,
            "-initrd",
            &path_arg(&assets.initrd)?,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        for (i, nic) in self.nics.iter().enumerate() {
            check_socket_path(&nic.socket)?;
            let sock = path_arg(&nic.socket)?;
            let role = match nic.role {
                SocketRole::Client => ",reconnect=1",
                SocketRole::Server => ",server=on,wait=off",
            };
            let suffix = if i == 0 { String::new() } else { i.to_string() };
            if let Some(ip) = &nic.ip {
                cmdline.push_str(&format!(" vsw.ip{suffix}={ip}"));
            }
            cmdline.push_str(&format!(" vsw.mac{suffix}={}", nic.mac));
            let mut extra = if nic.device_opts.is_empty() {
                String::new()
            } else {
                format!(",{}", nic.device_opts)
            };
            let queues = if nic.queues > 1 {
                extra.push_str(",mq=on");
                format!(",queues={}", nic.queues)
            } else {
                String::new()
            };
            args.extend([
                "-chardev".into(),
                format!("socket,id=vhu{i},path={sock}{role}"),
                "-netdev".into(),
                format!("vhost-user,id=net{i},chardev=vhu{i}{queues}"),
                "-device".into(),
                format!(
                    "virtio-net-pci,netdev=net{i},mac={},vectors=0{extra}",
                    nic.mac
                ),
            ]);
        }
        if !self.extra_cmdline.is_empty() {
            cmdline.push(' ');
            cmdline.push_str(&self.extra_cmdline);
        }
        args.push("-append".into());
        args.push(cmdline);
        args.extend(self.extra_args.iter().cloned());
        Ok(args)
    }
}

/// `bash examples/qemu-{listen,connect}.sh SOCKET MAC IP` with the harness's console mode
/// (APPEND overrides the script's `vsw.console=interactive`); the script execs QEMU, so the
/// child's PID is QEMU's. Returns the command and its arguments (for logs).
pub(super) fn example_script_command(
    cfg: &GuestConfig,
    assets: &GuestAssets,
    qemu: &Path,
) -> Result<(Command, Vec<String>)> {
    let [nic] = cfg.nics.as_slice() else {
        bail!("example scripts boot guests with exactly one NIC");
    };
    let script = crate::assets::repo_root().join(match nic.role {
        SocketRole::Client => "examples/qemu-listen.sh",
        SocketRole::Server => "examples/qemu-connect.sh",
    });
    check_socket_path(&nic.socket)?;
    let mut args = vec![path_arg(&script)?, path_arg(&nic.socket)?, nic.mac.clone()];
    args.extend(nic.ip.clone());
    let append = format!(
        "vsw.console=harness vsw.hostname={} {}",
        hostname_of(&cfg.name),
        cfg.extra_cmdline
    );
    let mut cmd = Command::new("bash");
    cmd.args(&args)
        .env("KERNEL", &assets.kernel)
        .env("INITRD", &assets.initrd)
        .env("MEM", cfg.memory_mb.to_string())
        .env("QEMU", qemu)
        .env("APPEND", append.trim_end());
    Ok((cmd, args))
}

fn hostname_of(name: &str) -> String {
    let h: String = name
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .take(32)
        .collect();
    if h.is_empty() {
        "vswguest".into()
    } else {
        h
    }
}

/// A QEMU option value that is a path: must be UTF-8 and must not contain ',' (QEMU's option
/// separator).
fn path_arg(p: &Path) -> Result<String> {
    let s = p
        .to_str()
        .with_context(|| format!("path {} is not UTF-8", p.display()))?;
    if s.contains(',') {
        bail!("path {s} contains ',', which QEMU options cannot carry");
    }
    Ok(s.to_string())
}
