//! Cloud Hypervisor guests attached to the `vswitch` binary.
//!
//! Cloud Hypervisor is not in any package registry reachable here: the test finds it through
//! `$CH_BIN` or on PATH, and without it prints one line saying so and returns (the only skip in
//! the suite). Linux does not boot under these machines' nested KVM, so the guest is the
//! project's tiny PVH virtio-net guest (`tests/vnetguest`), built by `ci/build-vnetguest.sh` into
//! `build/vnetguest/vnetguest.elf`. VMs are started with `examples/cloud-hypervisor.sh`, as a user
//! would.
//!
//! In each role (`vhost_mode=client` with switch ports `mode=listen`, then `vhost_mode=server`
//! with `mode=connect`): a and b on channel 100 ping each other; c on channel 200 tries to reach
//! a and never resolves it; the guests negotiated MRG_RXBUF and EVENT_IDX; the switch delivered
//! nothing on channel 200.

use anyhow::{bail, Context, Result};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use vswitch_tests::{find_binary, repo_root, OrPanic, PortMode, ScratchDir, Vswitch, VswitchPort};

const RESULT_TIMEOUT: Duration = Duration::from_secs(120);
const MRG_RXBUF: u64 = 1 << 15;
const EVENT_IDX: u64 = 1 << 29;

/// The Cloud Hypervisor binary: `$CH_BIN` (must then exist), else `cloud-hypervisor` on PATH.
fn cloud_hypervisor() -> Result<Option<PathBuf>> {
    if let Some(p) = std::env::var_os("CH_BIN") {
        let p = PathBuf::from(p);
        if !p.is_file() {
            bail!("$CH_BIN is {}, which is not a file", p.display());
        }
        return Ok(Some(p));
    }
    Ok(find_binary("cloud-hypervisor").ok())
}

/// Builds (or finds up to date) `build/vnetguest/vnetguest.elf` with `ci/build-vnetguest.sh`.
fn build_vnetguest() -> Result<PathBuf> {
    let root = repo_root();
    let script = root.join("ci/build-vnetguest.sh");
    let out = root.join("build/vnetguest");
    let res = Command::new("bash")
        .arg(&script)
        .arg(&out)
        .output()
        .with_context(|| format!("running {}", script.display()))?;
    if !res.status.success() {
        bail!(
            "{} failed ({}):\n{}{}",
            script.display(),
            res.status,
            String::from_utf8_lossy(&res.stdout),
            String::from_utf8_lossy(&res.stderr)
        );
    }
    let elf = out.join("vnetguest.elf");
    if !elf.is_file() {
        bail!(
            "{} succeeded but {} is missing",
            script.display(),
            elf.display()
        );
    }
    Ok(elf)
}

/// A Cloud Hypervisor VM running the tiny guest, started through examples/cloud-hypervisor.sh.
/// SIGKILLed (by PID: the script execs Cloud Hypervisor) on drop.
struct ChVm {
    name: String,
    child: Child,
    serial: PathBuf,
    log: PathBuf,
}

impl ChVm {
    #[allow(clippy::too_many_arguments)]
    fn start(
        ch: &Path,
        kernel: &Path,
        dir: &Path,
        name: &str,
        socket: &Path,
        mode: &str,
        mac: &str,
        cmdline: &str,
    ) -> Result<Self> {
        let serial = dir.join(format!("{name}.serial"));
        let log = dir.join(format!("{name}.ch.log"));
        let logf = std::fs::File::create(&log)?;
        let script = repo_root().join("examples/cloud-hypervisor.sh");
        let child = Command::new("bash")
            .arg(&script)
            .arg(socket)
            .arg(mac)
            .arg(mode)
            .env("CH", ch)
            .env("KERNEL", kernel)
            .env("INITRD", "")
            .env("CMDLINE", format!("{cmdline} tag={name}"))
            .env("SERIAL", format!("file={}", serial.display()))
            .stdin(Stdio::null())
            .stdout(logf.try_clone()?)
            .stderr(logf)
            .spawn()
            .with_context(|| format!("starting {}", script.display()))?;
        Ok(Self {
            name: name.to_string(),
            child,
            serial,
            log,
        })
    }

    /// Waits for the serial line starting with `VNET-<what>` and returns its key=value fields.
    fn wait_line(&mut self, what: &str, timeout: Duration) -> Result<HashMap<String, String>> {
        let prefix = format!("VNET-{what} ");
        let deadline = Instant::now() + timeout;
        loop {
            let text = std::fs::read_to_string(&self.serial).unwrap_or_default();
            // Only complete lines: the guest writes its serial port a byte at a time.
            let complete = &text[..text.rfind('\n').map_or(0, |i| i + 1)];
            if let Some(l) = complete.lines().find(|l| l.starts_with(&prefix)) {
                return Ok(l
                    .split_whitespace()
                    .filter_map(|kv| kv.split_once('='))
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect());
            }
            let exited = self.child.try_wait().ok().flatten();
            if exited.is_some() || Instant::now() >= deadline {
                bail!(
                    "{}: no {prefix}line {} ({exited:?})\n--- serial ---\n{text}\n--- cloud-hypervisor \
                     ---\n{}",
                    self.name,
                    if exited.is_some() { "before Cloud Hypervisor exited" } else { "in time" },
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for ChVm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn num(f: &HashMap<String, String>, k: &str) -> u64 {
    let v = f.get(k).map(String::as_str).unwrap_or("");
    match v.strip_prefix("0x") {
        Some(h) => u64::from_str_radix(h, 16),
        None => v.parse(),
    }
    .unwrap_or_else(|_| panic!("field {k}={v:?} in {f:?}"))
}

/// One role: switch, three VMs, checks.
fn scenario(ch: &Path, kernel: &Path, mode: PortMode) {
    let (ch_mode, tag) = match mode {
        PortMode::Listen => ("client", "chc"),
        PortMode::Connect => ("server", "chs"),
    };
    let t0 = Instant::now();
    let dir = ScratchDir::new(tag).or_panic();
    let sock = |n: &str| dir.socket_path(&format!("{n}.sock")).or_panic();
    let (sa, sb, sc) = (sock("a"), sock("b"), sock("c"));
    let (ma, mb, mc) = (
        "52:54:00:00:10:0a",
        "52:54:00:00:10:0b",
        "52:54:00:00:20:0c",
    );
    let port = |n: &str, s: &Path, c: u16, m: &str| match mode {
        PortMode::Listen => VswitchPort::listen(n, s, c).mac(m),
        PortMode::Connect => VswitchPort::connect(n, s, c).mac(m),
    };
    let sw = Vswitch::start(
        dir.path(),
        &[
            port("a", &sa, 100, ma),
            port("b", &sb, 100, mb),
            port("c", &sc, 200, mc),
        ],
    )
    .or_panic();

    let common = "count=5 interval_ms=200 hold_s=120 mrg=1 eventidx=1";
    let mut a = ChVm::start(
        ch,
        kernel,
        dir.path(),
        "a",
        &sa,
        ch_mode,
        ma,
        &format!("ip=10.20.0.1 peer=10.20.0.2 {common}"),
    )
    .or_panic();
    let mut b = ChVm::start(
        ch,
        kernel,
        dir.path(),
        "b",
        &sb,
        ch_mode,
        mb,
        &format!("ip=10.20.0.2 peer=10.20.0.1 {common}"),
    )
    .or_panic();
    // c (channel 200) tries to resolve and ping a for 6 s.
    let mut c = ChVm::start(
        ch,
        kernel,
        dir.path(),
        "c",
        &sc,
        ch_mode,
        mc,
        &format!("ip=10.20.0.3 peer=10.20.0.1 arp_s=6 {common}"),
    )
    .or_panic();

    for vm in [&mut a, &mut b, &mut c] {
        let f = vm.wait_line("FEATURES", RESULT_TIMEOUT).or_panic();
        let driver = num(&f, "driver");
        eprintln!("[{ch_mode}] {}: negotiated {driver:#x}", vm.name);
        assert!(driver & MRG_RXBUF != 0, "{}: no MRG_RXBUF: {f:?}", vm.name);
        assert!(driver & EVENT_IDX != 0, "{}: no EVENT_IDX: {f:?}", vm.name);
    }
    for (vm, peer) in [(&mut a, "b"), (&mut b, "a")] {
        let arp = vm.wait_line("ARP", RESULT_TIMEOUT).or_panic();
        let r = vm.wait_line("PING-RESULT", RESULT_TIMEOUT).or_panic();
        eprintln!(
            "[{ch_mode}] {} -> {peer}: ARP after {} ms, {}/{} replies, rtt avg {} us",
            vm.name,
            num(&arp, "wait_ms"),
            num(&r, "rx"),
            num(&r, "tx"),
            num(&r, "rtt_avg_us")
        );
        assert_eq!(num(&arp, "ok"), 1, "{} did not resolve {peer}", vm.name);
        assert!(
            num(&r, "rx") > 0,
            "{} got no reply from {peer}: {r:?}",
            vm.name
        );
    }
    let arp = c.wait_line("ARP", RESULT_TIMEOUT).or_panic();
    let r = c.wait_line("PING-RESULT", RESULT_TIMEOUT).or_panic();
    eprintln!(
        "[{ch_mode}] c (channel 200) -> a: ARP ok={} after {} tries; {} replies",
        num(&arp, "ok"),
        num(&arp, "tries"),
        num(&r, "rx")
    );
    assert_eq!(
        num(&arp, "ok"),
        0,
        "c (channel 200) resolved a (channel 100)"
    );
    assert_eq!(num(&r, "rx"), 0);

    let s = sw.stats().or_panic();
    eprintln!("[{ch_mode}] switch counters:\n{}", s.summary());
    let c200 = &s.channel(200).or_panic().counters;
    assert!(
        c200.in_frames >= num(&arp, "tries"),
        "c's ARP requests did not enter channel 200: {c200:?}"
    );
    assert_eq!(c200.out_frames, 0, "frames delivered on channel 200");
    assert_eq!(s.port("c").or_panic().switch.out_frames, 0);
    let c100 = &s.channel(100).or_panic().counters;
    assert!(c100.out_frames > 0 && c100.flooded > 0);
    eprintln!("[{ch_mode}] done in {:.1?}", t0.elapsed());
}

#[test]
fn cloud_hypervisor_guests_through_the_switch() {
    let ch = match cloud_hypervisor().or_panic() {
        Some(p) => p,
        None => {
            println!(
                "cloud_hypervisor: SKIPPED: needs the cloud-hypervisor binary (not in any package \
                 registry here): set CH_BIN=/path/to/cloud-hypervisor or put it on PATH"
            );
            return;
        }
    };
    assert!(
        Path::new("/dev/kvm").exists(),
        "Cloud Hypervisor ({}) needs /dev/kvm",
        ch.display()
    );
    let kernel = build_vnetguest().or_panic();
    eprintln!(
        "cloud-hypervisor {}, guest {}",
        ch.display(),
        kernel.display()
    );
    scenario(&ch, &kernel, PortMode::Listen);
    scenario(&ch, &kernel, PortMode::Connect);
}
