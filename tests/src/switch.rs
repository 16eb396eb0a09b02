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

use crate::util::{check_socket_path, find_bytes, terminate_child, wait_until, OutputBuf};
use anyhow::{bail, Context, Result};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long [`Vswitch::start`] waits for the control socket and the listen-role sockets.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// Who creates a port's socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortMode {
    /// The switch creates the socket; the frontend connects (QEMU client, CH `vhost_mode=client`).
    Listen,
    /// The frontend created the socket; the switch connects (QEMU `server=on`, CH
    /// `vhost_mode=server`).
    Connect,
}

impl PortMode {
    fn as_str(self) -> &'static str {
        match self {
            PortMode::Listen => "listen",
            PortMode::Connect => "connect",
        }
    }
}

/// One `--port` of the switch.
#[derive(Debug, Clone)]
pub struct VswitchPort {
    pub name: String,
    pub socket: PathBuf,
    pub channel: u16,
    pub mac: Option<String>,
    pub mode: PortMode,
}

impl VswitchPort {
    /// A `mode=listen` port.
    pub fn listen(name: &str, socket: impl Into<PathBuf>, channel: u16) -> Self {
        Self {
            name: name.to_string(),
            socket: socket.into(),
            channel,
            mac: None,
            mode: PortMode::Listen,
        }
    }

    /// A `mode=connect` port.
    pub fn connect(name: &str, socket: impl Into<PathBuf>, channel: u16) -> Self {
        Self {
            mode: PortMode::Connect,
            ..Self::listen(name, socket, channel)
        }
    }

    /// Sets the VM's MAC (`mac=`: offered in the config space, source-locked).
    pub fn mac(mut self, mac: &str) -> Self {
        self.mac = Some(mac.to_string());
        self
    }

    /// The `--port` value.
    pub fn spec(&self) -> Result<String> {
        let sock = self
            .socket
            .to_str()
            .with_context(|| format!("socket path {} is not UTF-8", self.socket.display()))?;
        if sock.contains(',') || self.name.contains(',') {
            bail!(
                "port {:?} / socket {sock}: ',' separates --port keys",
                self.name
            );
        }
        let mut s = format!(
            "{},socket={sock},channel={},mode={}",
            self.name,
            self.channel,
            self.mode.as_str()
        );
        if let Some(mac) = &self.mac {
            s.push_str(",mac=");
            s.push_str(mac);
        }
        Ok(s)
    }
}

/// Finds the `vswitch` binary: `$VSWITCH_BIN`, else `vswitch` in the cargo target directory
/// this test binary was built into (`target/<profile>/deps/<test>` or
/// `target/<profile>/examples/<example>` → `target/<profile>/vswitch`).
pub fn vswitch_binary() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("VSWITCH_BIN") {
        let p = PathBuf::from(p);
        if !p.is_file() {
            bail!("$VSWITCH_BIN is {}, which is not a file", p.display());
        }
        return Ok(p);
    }
    let exe = std::env::current_exe().context("finding the current executable")?;
    let candidates: Vec<PathBuf> = exe
        .ancestors()
        .skip(1)
        .take(2)
        .map(|d| d.join("vswitch"))
        .collect();
    for c in &candidates {
        if c.is_file() {
            return Ok(c.clone());
        }
    }
    bail!(
        "the vswitch binary was not found (looked at {}): build it with `cargo build -p vswitch` \
         (`cargo nextest run --workspace` builds it), or set $VSWITCH_BIN",
        candidates
            .iter()
            .map(|c| c.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    )
}

/// A running `vswitch run`. SIGKILLed by PID on drop.
pub struct Vswitch {
    bin: PathBuf,
    args: Vec<String>,
    ports: Vec<VswitchPort>,
    ctl: PathBuf,
    dir: PathBuf,
    log: PathBuf,
    child: Option<Child>,
    out: Arc<OutputBuf>,
    readers: Vec<JoinHandle<()>>,
    starts: u32,
}

impl std::fmt::Debug for Vswitch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vswitch")
            .field("pid", &self.child.as_ref().map(Child::id))
            .field("ctl", &self.ctl)
            .field("log", &self.log)
            .finish()
    }
}

impl Vswitch {
    /// Starts `vswitch run --port ... --ctl DIR/ctl.sock` with its log in `DIR/vswitch.log`;
    /// returns once the control API answers and every listen-role socket exists.
    pub fn start(dir: &Path, ports: &[VswitchPort]) -> Result<Self> {
        Self::start_with(dir, ports, &[])
    }

    /// Like [`start`](Self::start) with extra `vswitch run` arguments (e.g. `--config FILE`,
    /// whose listen-role sockets are then not waited for unless also in `ports`).
    pub fn start_with(dir: &Path, ports: &[VswitchPort], extra: &[&str]) -> Result<Self> {
        let bin = vswitch_binary()?;
        let ctl = dir.join("ctl.sock");
        check_socket_path(&ctl)?;
        let ctl_s = ctl
            .to_str()
            .with_context(|| format!("{} is not UTF-8", ctl.display()))?;
        let mut args: Vec<String> = vec!["run".into(), "--ctl".into(), ctl_s.into()];
        for p in ports {
            check_socket_path(&p.socket)?;
            args.push("--port".into());
            args.push(p.spec()?);
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        let mut me = Self {
            bin,
            args,
            ports: ports.to_vec(),
            ctl,
            dir: dir.to_path_buf(),
            log: dir.join("vswitch.log"),
            child: None,
            out: Arc::new(OutputBuf::default()),
            readers: Vec::new(),
            starts: 0,
        };
        me.spawn()?;
        Ok(me)
    }

    fn spawn(&mut self) -> Result<()> {
        // A log per start, so that a restart's log is not mixed with the first one's.
        let log = if self.starts == 0 {
            self.dir.join("vswitch.log")
        } else {
            self.dir.join(format!("vswitch.{}.log", self.starts))
        };
        self.starts += 1;
        let logf =
            std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let mut child = Command::new(&self.bin)
            .args(&self.args)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or("info".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {}", self.bin.display()))?;
        log::info!(
            "vswitch pid {}: {} {}",
            child.id(),
            self.bin.display(),
            self.args.join(" ")
        );
        let Some(stderr) = child.stderr.take() else {
            crate::util::kill_child(&mut child);
            bail!("vswitch's stderr pipe was not created");
        };
        let echo = std::env::var("VSW_GUEST_CONSOLE").is_ok_and(|v| v == "1");
        let (out, h) = OutputBuf::collect(stderr, Some(logf), echo.then(|| "vswitch".into()));
        self.out = out;
        self.readers.push(h);
        self.child = Some(child);
        self.log = log;

        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                bail!(
                    "vswitch exited during startup ({status}):\n{}",
                    self.out.tail(30)
                );
            }
            let listening = self
                .ports
                .iter()
                .filter(|p| p.mode == PortMode::Listen)
                .all(|p| p.socket.exists());
            if listening && self.ctl.exists() && self.ctl_raw(&["ports"]).is_ok() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                let tail = self.out.tail(30);
                self.kill();
                bail!(
                    "vswitch did not start within {START_TIMEOUT:?} (control socket {} and \
                     listen sockets):\n{tail}",
                    self.ctl.display()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The process id of the current `vswitch run`, if running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The control socket.
    pub fn ctl_path(&self) -> &Path {
        &self.ctl
    }

    /// The current run's log file.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// Everything the current run logged so far.
    pub fn output(&self) -> String {
        self.out.text()
    }

    /// The last `n` log lines of the current run.
    pub fn log_tail(&self, n: usize) -> String {
        self.out.tail(n)
    }

    /// Waits until the current run's log contains `needle`.
    pub fn wait_log(&self, needle: &str, timeout: Duration) -> Result<bool> {
        let found = self.out.wait_for(0, Instant::now() + timeout, |d| {
            find_bytes(d, needle.as_bytes())
        });
        Ok(found?.is_some())
    }

    fn ctl_raw(&self, args: &[&str]) -> Result<String> {
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

    /// Runs a `vswitch ctl` command whose answer is JSON.
    pub fn ctl_json(&self, args: &[&str]) -> Result<Value> {
        let out = self.ctl_raw(args)?;
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

    /// How many file descriptors the switch process has open (from /proc), if it runs.
    pub fn open_fds(&self) -> Option<usize> {
        let pid = self.pid()?;
        std::fs::read_dir(format!("/proc/{pid}/fd"))
            .ok()
            .map(|d| d.count())
    }

    /// True while the switch process runs.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// SIGKILLs the switch (by PID) and reaps it: a crash, nothing cleaned up. Idempotent.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            crate::util::kill_child(&mut c);
        }
        for h in self.readers.drain(..) {
            let _ = h.join();
        }
    }

    /// SIGTERMs the switch and waits for it to exit (SIGKILL after `grace`); returns its exit
    /// status.
    pub fn terminate(&mut self, grace: Duration) -> Result<ExitStatus> {
        let mut c = self.child.take().context("vswitch is not running")?;
        terminate_child(&mut c, grace);
        let status = c.wait().context("reaping vswitch")?;
        for h in self.readers.drain(..) {
            let _ = h.join();
        }
        Ok(status)
    }

    /// Kills the switch (SIGKILL) and starts it again with the same arguments; returns once the
    /// control API answers. Frontends reconnect by themselves (listen role) or are reconnected
    /// (connect role).
    pub fn restart(&mut self) -> Result<()> {
        self.kill();
        self.spawn()
    }
}

impl Drop for Vswitch {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Switch counters of a port or a channel (the `switch` / `counters` objects of `ctl stats`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counters {
    pub in_frames: u64,
    pub in_bytes: u64,
    pub out_frames: u64,
    pub out_bytes: u64,
    pub flooded: u64,
    /// Drops by reason: channel_mismatch, no_rx_buffer, bad_descriptor, oversize,
    /// unknown_channel, mac_limit, source_spoof.
    pub drops: BTreeMap<String, u64>,
}

impl Counters {
    fn from_json(v: &Value) -> Result<Self> {
        let n = |k: &str| {
            v.get(k)
                .and_then(Value::as_u64)
                .with_context(|| format!("counter {k} missing in {v}"))
        };
        let drops = v
            .get("drops")
            .and_then(Value::as_object)
            .with_context(|| format!("drops missing in {v}"))?
            .iter()
            .map(|(k, x)| (k.clone(), x.as_u64().unwrap_or(0)))
            .collect();
        Ok(Self {
            in_frames: n("in_frames")?,
            in_bytes: n("in_bytes")?,
            out_frames: n("out_frames")?,
            out_bytes: n("out_bytes")?,
            flooded: n("flooded")?,
            drops,
        })
    }

    /// Drops for one reason (0 when the reason is unknown).
    pub fn dropped(&self, reason: &str) -> u64 {
        self.drops.get(reason).copied().unwrap_or(0)
    }

    /// All drops.
    pub fn total_drops(&self) -> u64 {
        self.drops.values().sum()
    }

    /// "reason=n reason=n" for the non-zero drop reasons, or "-".
    pub fn drops_text(&self) -> String {
        let v: Vec<String> = self
            .drops
            .iter()
            .filter(|(_, n)| **n != 0)
            .map(|(k, n)| format!("{k}={n}"))
            .collect();
        if v.is_empty() {
            "-".into()
        } else {
            v.join(" ")
        }
    }
}

/// One port in `ctl stats`.
#[derive(Debug, Clone)]
pub struct PortStats {
    pub name: String,
    pub channel: Option<u16>,
    /// Switch-level counters: in = frames from the guest, out = frames delivered to it.
    pub switch: Counters,
    /// The vhost-user port's own counters (connections, to_guest_frames, rx_no_buffer, ...).
    pub port: BTreeMap<String, u64>,
}

/// One channel in `ctl stats`.
#[derive(Debug, Clone)]
pub struct ChannelStats {
    pub channel: u16,
    pub ports: u64,
    pub counters: Counters,
}

/// `vswitch ctl stats`, parsed.
#[derive(Debug, Clone)]
pub struct Stats {
    pub ports: Vec<PortStats>,
    pub channels: Vec<ChannelStats>,
    /// The answer as it came.
    pub raw: Value,
}

impl Stats {
    /// Parses the JSON `vswitch ctl stats` prints.
    pub fn from_json(raw: Value) -> Result<Self> {
        let mut ports = Vec::new();
        for p in raw
            .get("ports")
            .and_then(Value::as_array)
            .context("stats: no ports list")?
        {
            let name = p
                .get("name")
                .and_then(Value::as_str)
                .context("stats: port without a name")?
                .to_string();
            let channel = p
                .get("channel")
                .and_then(Value::as_u64)
                .and_then(|c| u16::try_from(c).ok());
            let switch = Counters::from_json(p.get("switch").context("stats: no switch")?)
                .with_context(|| format!("stats of port {name}"))?;
            let port = p
                .get("port")
                .and_then(Value::as_object)
                .map(|o| {
                    o.iter()
                        .filter_map(|(k, v)| v.as_u64().map(|n| (k.clone(), n)))
                        .collect()
                })
                .unwrap_or_default();
            ports.push(PortStats {
                name,
                channel,
                switch,
                port,
            });
        }
        let mut channels = Vec::new();
        for c in raw
            .get("channels")
            .and_then(Value::as_array)
            .context("stats: no channels list")?
        {
            let channel = c
                .get("channel")
                .and_then(Value::as_u64)
                .and_then(|c| u16::try_from(c).ok())
                .context("stats: channel without an id")?;
            let counters = Counters::from_json(c.get("counters").context("stats: no counters")?)
                .with_context(|| format!("stats of channel {channel}"))?;
            channels.push(ChannelStats {
                channel,
                ports: c.get("ports").and_then(Value::as_u64).unwrap_or(0),
                counters,
            });
        }
        Ok(Self {
            ports,
            channels,
            raw,
        })
    }

    /// The named port's counters.
    pub fn port(&self, name: &str) -> Result<&PortStats> {
        self.ports
            .iter()
            .find(|p| p.name == name)
            .with_context(|| format!("no port {name} in the stats"))
    }

    /// A channel's counters.
    pub fn channel(&self, id: u16) -> Result<&ChannelStats> {
        self.channels
            .iter()
            .find(|c| c.channel == id)
            .with_context(|| format!("no channel {id} in the stats"))
    }

    /// A table: one line per port and per channel (in/out frames, flooded, drops by reason).
    pub fn summary(&self) -> String {
        let mut s = format!(
            "{:<10} {:>7} {:>10} {:>10} {:>8}  drops\n",
            "port", "channel", "in", "out", "flooded"
        );
        for p in &self.ports {
            s.push_str(&format!(
                "{:<10} {:>7} {:>10} {:>10} {:>8}  {}\n",
                p.name,
                p.channel.map(|c| c.to_string()).unwrap_or("-".into()),
                p.switch.in_frames,
                p.switch.out_frames,
                p.switch.flooded,
                p.switch.drops_text()
            ));
        }
        s.push_str(&format!(
            "{:<10} {:>7} {:>10} {:>10} {:>8}  drops\n",
            "channel", "ports", "in", "out", "flooded"
        ));
        for c in &self.channels {
            s.push_str(&format!(
                "{:<10} {:>7} {:>10} {:>10} {:>8}  {}\n",
                c.channel,
                c.ports,
                c.counters.in_frames,
                c.counters.out_frames,
                c.counters.flooded,
                c.counters.drops_text()
            ));
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
                 "ports":[{{"channel":100,"name":"a","port":{{"connections":1}},"switch":{c}}}]}}"#
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
