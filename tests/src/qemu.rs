//! Real QEMU guests (TCG) attached to a vhost-user backend, driven through the serial console.
//!
//! The guest is the one `ci/build-guest.sh` builds: its `/init` configures eth0 from the kernel
//! command line, prints `VSW-READY` and then runs the line protocol described in `ci/guest/init`
//! (`N COMMAND` in; `VSW-BEGIN-N`, output, `VSW-DONE-N RC` out).
//!
//! QEMU 7.2 facts this module encodes (see `shared/notes/guests.md`): TCG only (`-accel tcg
//! -cpu max`); guest memory must be shareable with the backend (memfd with `share=on`); the
//! vhost-user virtio-net device needs `vectors=0` (MSI-X makes QEMU 7.2 segfault under TCG).

use crate::assets::{guest_assets, GuestAssets};
use crate::util::{check_socket_path, find_binary, find_bytes, kill_child, OutputBuf};
use anyhow::{bail, Context, Result};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

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
}

impl NicConfig {
    pub fn new(socket: impl Into<PathBuf>, role: SocketRole, mac: &str, ip: Option<&str>) -> Self {
        Self {
            socket: socket.into(),
            role,
            mac: mac.to_string(),
            ip: ip.map(str::to_string),
            device_opts: String::new(),
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
    /// Appended to the kernel command line.
    pub extra_cmdline: String,
    /// Appended to QEMU's arguments.
    pub extra_args: Vec<String>,
    /// Where to write the serial console (default: `<name>.console.log` next to the first
    /// NIC's socket). QEMU's stderr goes to the same place with `.stderr` appended.
    pub console_log: Option<PathBuf>,
    /// Kernel and initramfs; default [`guest_assets()`].
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
            extra_cmdline: String::new(),
            extra_args: Vec::new(),
            console_log: None,
            assets: None,
            via_example_script: false,
        }
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
        let mut cmdline = format!(
            "console=ttyS0 quiet panic=-1 vsw.console=harness vsw.hostname={}",
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
            "1",
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
            let extra = if nic.device_opts.is_empty() {
                String::new()
            } else {
                format!(",{}", nic.device_opts)
            };
            args.extend([
                "-chardev".into(),
                format!("socket,id=vhu{i},path={sock}{role}"),
                "-netdev".into(),
                format!("vhost-user,id=net{i},chardev=vhu{i}"),
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
fn example_script_command(
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

/// A running QEMU guest. Killed (SIGKILL by PID) on drop.
pub struct QemuGuest {
    name: String,
    child: Child,
    stdin: Option<ChildStdin>,
    console: Arc<OutputBuf>,
    stderr: Arc<OutputBuf>,
    readers: Vec<JoinHandle<()>>,
    started: Instant,
    ready_at: Option<Duration>,
    next_cmd: u64,
    console_log: PathBuf,
}

impl std::fmt::Debug for QemuGuest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QemuGuest")
            .field("name", &self.name)
            .field("pid", &self.child.id())
            .field("console_log", &self.console_log)
            .finish()
    }
}

impl QemuGuest {
    /// One guest with one NIC: the common case.
    pub fn boot(
        name: &str,
        socket: impl Into<PathBuf>,
        role: SocketRole,
        mac: &str,
        ip: &str,
    ) -> Result<Self> {
        Self::spawn(GuestConfig::new(name).nic(socket, role, mac, ip))
    }

    /// Starts QEMU. Returns at once; call [`wait_ready`](Self::wait_ready) before commands.
    pub fn spawn(cfg: GuestConfig) -> Result<Self> {
        let qemu = find_binary("qemu-system-x86_64")?;
        let assets = match &cfg.assets {
            Some(a) => a.clone(),
            None => guest_assets()?,
        };
        let (mut cmd, args) = if cfg.via_example_script {
            example_script_command(&cfg, &assets, &qemu)?
        } else {
            let args = cfg.qemu_args(&assets)?;
            let mut cmd = Command::new(&qemu);
            cmd.args(&args);
            (cmd, args)
        };
        let console_log = match &cfg.console_log {
            Some(p) => p.clone(),
            None => cfg
                .nics
                .first()
                .and_then(|n| n.socket.parent().map(Path::to_path_buf))
                .map(|d| d.join(format!("{}.console.log", cfg.name)))
                .unwrap_or_else(|| {
                    std::env::temp_dir().join(format!(
                        "{}-{}.console.log",
                        cfg.name,
                        std::process::id()
                    ))
                }),
        };
        let log = std::fs::File::create(&console_log)
            .with_context(|| format!("creating {}", console_log.display()))?;
        let mut err_path = console_log.clone().into_os_string();
        err_path.push(".stderr");
        let err_log = std::fs::File::create(&err_path)
            .with_context(|| format!("creating {}", PathBuf::from(&err_path).display()))?;

        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {}", qemu.display()))?;
        let (Some(stdin), Some(stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            kill_child(&mut child);
            bail!("QEMU's stdio pipes were not created");
        };
        let echo = std::env::var("VSW_GUEST_CONSOLE").is_ok_and(|v| v == "1");
        let (console, h1) = OutputBuf::collect(stdout, Some(log), echo.then(|| cfg.name.clone()));
        let (stderr_buf, h2) = OutputBuf::collect(
            stderr,
            Some(err_log),
            echo.then(|| format!("{} qemu", cfg.name)),
        );
        log::info!(
            "{}: started QEMU pid {} ({} {})",
            cfg.name,
            child.id(),
            qemu.display(),
            args.join(" ")
        );
        Ok(Self {
            name: cfg.name,
            child,
            stdin: Some(stdin),
            console,
            stderr: stderr_buf,
            readers: vec![h1, h2],
            started: Instant::now(),
            ready_at: None,
            next_cmd: 1,
            console_log,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// QEMU's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The file the serial console is copied to.
    pub fn console_log(&self) -> &Path {
        &self.console_log
    }

    /// Everything the guest printed on its console so far.
    pub fn console_text(&self) -> String {
        self.console.text()
    }

    /// Waits for the guest's `VSW-READY` line; returns the time since QEMU was started.
    pub fn wait_ready(&mut self, timeout: Duration) -> Result<Duration> {
        if let Some(t) = self.ready_at {
            return Ok(t);
        }
        let deadline = Instant::now() + timeout;
        let found = self
            .console
            .wait_for(0, deadline, |d| find_bytes(d, b"VSW-READY\n"))
            .map_err(|e| self.failure(&format!("waiting for VSW-READY: {e}")))?;
        if found.is_none() {
            return Err(self.failure(&format!("no VSW-READY within {timeout:?}")));
        }
        let t = self.started.elapsed();
        self.ready_at = Some(t);
        Ok(t)
    }

    /// Runs one line of shell in the guest; returns its exit status and combined
    /// stdout+stderr. The command runs in `sh -c` with stdin from /dev/null; it must not contain
    /// a newline. After a timeout the guest's console is out of step: kill the guest.
    pub fn run(&mut self, cmd: &str, timeout: Duration) -> Result<(i32, String)> {
        if cmd.contains('\n') || cmd.contains('\r') {
            bail!("guest command must be a single line: {cmd:?}");
        }
        if cmd.len() > 3500 {
            bail!(
                "guest command longer than the tty's line buffer allows ({} bytes)",
                cmd.len()
            );
        }
        self.wait_ready(timeout)?;
        let n = self.next_cmd;
        self.next_cmd += 1;
        let begin = format!("VSW-BEGIN-{n}\n");
        let done = format!("VSW-DONE-{n} ");
        let from = self.console.len();
        let stdin = self
            .stdin
            .as_mut()
            .with_context(|| format!("{}: guest was killed", self.name))?;
        stdin
            .write_all(format!("{n} {cmd}\n").as_bytes())
            .and_then(|_| stdin.flush())
            .with_context(|| format!("{}: writing to the serial console", self.name))?;
        let deadline = Instant::now() + timeout;
        let res = self.console.wait_for(from, deadline, |d| {
            let b = find_bytes(d, begin.as_bytes())?;
            let body = &d[b + begin.len()..];
            let e = find_bytes(body, done.as_bytes())?;
            let rest = &body[e + done.len()..];
            let nl = rest.iter().position(|&c| c == b'\n')?;
            let rc = std::str::from_utf8(&rest[..nl])
                .ok()?
                .trim()
                .parse::<i32>()
                .ok()?;
            Some((rc, String::from_utf8_lossy(&body[..e]).into_owned()))
        });
        match res {
            Ok(Some(r)) => Ok(r),
            Ok(None) => Err(self.failure(&format!(
                "command {cmd:?} did not finish within {timeout:?}"
            ))),
            Err(e) => Err(self.failure(&format!("command {cmd:?}: {e}"))),
        }
    }

    /// Runs a command and fails unless it exits 0; returns its output.
    pub fn run_ok(&mut self, cmd: &str, timeout: Duration) -> Result<String> {
        let (rc, out) = self.run(cmd, timeout)?;
        if rc != 0 {
            bail!("{}: {cmd:?} exited {rc}:\n{out}", self.name);
        }
        Ok(out)
    }

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

    /// The virtio feature bits negotiated for eth0 (bit N = feature N).
    pub fn features(&mut self) -> Result<u64> {
        self.features_of("eth0")
    }

    /// The negotiated virtio feature bits of a virtio-net interface, read from
    /// `/sys/class/net/IFACE/device/features` (a string of '0'/'1', bit 0 first).
    pub fn features_of(&mut self, iface: &str) -> Result<u64> {
        let out = self.run_ok(
            &format!("cat /sys/class/net/{iface}/device/features"),
            Duration::from_secs(30),
        )?;
        parse_features(out.trim())
            .with_context(|| format!("{}: parsing features {:?}", self.name, out.trim()))
    }

    /// Kills QEMU (SIGKILL to its PID) and reaps it. Idempotent.
    pub fn kill(&mut self) {
        self.stdin = None;
        kill_child(&mut self.child);
        for h in self.readers.drain(..) {
            let _ = h.join();
        }
    }

    /// True while QEMU runs.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// An error with the context a failing test needs: QEMU's status and stderr, the console's
    /// last lines, and where the full log is.
    fn failure(&mut self, what: &str) -> anyhow::Error {
        let status = match self.child.try_wait() {
            Ok(Some(s)) => format!("QEMU exited: {s}"),
            Ok(None) => "QEMU still running".to_string(),
            Err(e) => format!("QEMU status unknown: {e}"),
        };
        let stderr = self.stderr.tail(20);
        anyhow::anyhow!(
            "{}: {what} ({status})\n--- QEMU stderr ---\n{stderr}\n--- console (last 30 lines; \
             full log {}) ---\n{}",
            self.name,
            self.console_log.display(),
            self.console.tail(30)
        )
    }
}

impl Drop for QemuGuest {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Parses sysfs's virtio `features` string: '0'/'1' characters, bit 0 first.
pub fn parse_features(s: &str) -> Result<u64> {
    let mut v = 0u64;
    for (i, c) in s.chars().enumerate() {
        match c {
            '0' => {}
            '1' if i < 64 => v |= 1 << i,
            '1' => bail!("feature bit {i} set, beyond 64"),
            _ => bail!("unexpected character {c:?} in features"),
        }
    }
    if s.is_empty() {
        bail!("empty features string");
    }
    Ok(v)
}

/// Names of the virtio-net (and transport) feature bits set in `f`.
pub fn virtio_net_feature_names(f: u64) -> Vec<String> {
    const NAMES: &[(u32, &str)] = &[
        (0, "CSUM"),
        (1, "GUEST_CSUM"),
        (2, "CTRL_GUEST_OFFLOADS"),
        (3, "MTU"),
        (5, "MAC"),
        (6, "GSO"),
        (7, "GUEST_TSO4"),
        (8, "GUEST_TSO6"),
        (9, "GUEST_ECN"),
        (10, "GUEST_UFO"),
        (11, "HOST_TSO4"),
        (12, "HOST_TSO6"),
        (13, "HOST_ECN"),
        (14, "HOST_UFO"),
        (15, "MRG_RXBUF"),
        (16, "STATUS"),
        (17, "CTRL_VQ"),
        (18, "CTRL_RX"),
        (19, "CTRL_VLAN"),
        (20, "CTRL_RX_EXTRA"),
        (21, "GUEST_ANNOUNCE"),
        (22, "MQ"),
        (23, "CTRL_MAC_ADDR"),
        (24, "NOTIFY_ON_EMPTY"),
        (27, "ANY_LAYOUT"),
        (28, "RING_INDIRECT_DESC"),
        (29, "RING_EVENT_IDX"),
        (30, "PROTOCOL_FEATURES"),
        (32, "VERSION_1"),
        (33, "ACCESS_PLATFORM"),
        (34, "RING_PACKED"),
        (35, "IN_ORDER"),
        (36, "ORDER_PLATFORM"),
        (37, "SR_IOV"),
        (38, "NOTIFICATION_DATA"),
        (61, "RSC_EXT"),
        (62, "STANDBY"),
        (63, "SPEED_DUPLEX"),
    ];
    (0..64)
        .filter(|b| f & (1u64 << b) != 0)
        .map(|b| {
            NAMES
                .iter()
                .find(|(n, _)| *n == b)
                .map(|(_, s)| s.to_string())
                .unwrap_or_else(|| format!("bit{b}"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn features_parse_bit0_first() {
        assert_eq!(parse_features("1000").unwrap(), 1);
        assert_eq!(parse_features("0000000000000001").unwrap(), 1 << 15);
        assert!(parse_features("10x").is_err());
        assert!(parse_features("").is_err());
        let names = virtio_net_feature_names((1 << 15) | (1 << 32));
        assert_eq!(names, vec!["MRG_RXBUF", "VERSION_1"]);
    }

    #[test]
    fn qemu_args_roles() {
        let assets = GuestAssets {
            kernel: "/k".into(),
            initrd: "/i".into(),
            kernel_kind: "vmlinux".into(),
        };
        let cfg = GuestConfig::new("a")
            .nic(
                "/tmp/s0",
                SocketRole::Client,
                "52:54:00:00:00:01",
                "10.0.0.1/24",
            )
            .nic(
                "/tmp/s1",
                SocketRole::Server,
                "52:54:00:00:00:02",
                "10.0.1.1/24",
            );
        let args = cfg.qemu_args(&assets).unwrap().join(" ");
        assert!(args.contains("socket,id=vhu0,path=/tmp/s0,reconnect=1"));
        assert!(args.contains("socket,id=vhu1,path=/tmp/s1,server=on,wait=off"));
        assert!(args.contains("vectors=0"));
        assert!(args.contains("vsw.ip=10.0.0.1/24"));
        assert!(args.contains("vsw.ip1=10.0.1.1/24"));
        assert!(args.contains("memory-backend-memfd,id=mem,size=256M,share=on"));
    }
}
