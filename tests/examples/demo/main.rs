//! The demo that `ci/demo.sh` runs: the switch's main job with real guests.
//!
//! 1. starts `vswitch run --config examples/demo.toml --ctl RUN_DIR/ctl.sock` (the `vswitch`
//!    binary next to this program: `target/release/vswitch`);
//! 2. asks the switch for its ports (`vswitch ctl ports`) and boots one QEMU guest (TCG, memfd
//!    shared memory, the image `ci/build-guest.sh` builds) per port, all in one IP subnet
//!    (10.10.0.N/24 for the N-th port), in the socket role each port asks for;
//! 3. pings every guest from every other one, inside the guests, and prints who reached whom;
//! 4. prints the switch's counters per port and per channel (`vswitch ctl stats`);
//! 5. shuts down: guests killed, the switch stopped with SIGTERM, its sockets checked gone.
//!
//! Exit status 0 when the matrix is exactly "same channel: yes, other channel: no", 1 when it is
//! not, 2 when the demo could not run.
//!
//! ```text
//! demo [CONFIG]          (default: examples/demo.toml of this checkout)
//! ```
//! Environment: `VSWITCH_DEMO_DIR` (default /run/vswitch-demo: must match the sockets in CONFIG),
//! `VSWITCH_BIN` (the switch binary), `VSW_GUEST_CONSOLE=1` (show the guests' consoles).

use anyhow::{bail, Context, Result};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::{Duration, Instant};
use vswitch_tests::{guest_assets, repo_root, GuestConfig, QemuGuest, SocketRole, Vswitch};

const BOOT: Duration = Duration::from_secs(240);

/// One port of the switch, as `vswitch ctl ports` describes it, and the guest behind it.
#[derive(Debug, Clone)]
struct Vm {
    name: String,
    socket: PathBuf,
    channel: u16,
    mac: String,
    role: SocketRole,
    ip: String,
}

fn main() -> ExitCode {
    install_signal_handler();
    let t0 = Instant::now();
    match run() {
        Ok(true) => {
            println!("demo: OK ({:.0?})", t0.elapsed());
            ExitCode::SUCCESS
        }
        Ok(false) => {
            println!("demo: FAILED: the reachability matrix is not the expected one");
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("demo: error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn step(t0: Instant, what: &str) {
    println!("\n== {what} ({:.0?})", t0.elapsed());
}

fn run() -> Result<bool> {
    let t0 = Instant::now();
    let config = match std::env::args_os().nth(1) {
        Some(p) => PathBuf::from(p),
        None => repo_root().join("examples/demo.toml"),
    };
    let config = std::fs::canonicalize(&config)
        .with_context(|| format!("configuration {}", config.display()))?;
    let run_dir =
        PathBuf::from(std::env::var("VSWITCH_DEMO_DIR").unwrap_or("/run/vswitch-demo".into()));
    std::fs::create_dir_all(&run_dir)
        .with_context(|| format!("creating the run directory {}", run_dir.display()))?;

    step(t0, "guest image (ci/build-guest.sh)");
    let assets = guest_assets()?;
    println!(
        "kernel {} ({}), initramfs {}",
        assets.kernel.display(),
        assets.kernel_kind,
        assets.initrd.display()
    );

    let ctl = run_dir.join("ctl.sock");
    step(
        t0,
        &format!(
            "starting the switch: vswitch run --config {} --ctl {}",
            config.display(),
            ctl.display()
        ),
    );
    let cfg = config.to_str().context("configuration path is not UTF-8")?;
    let mut sw = Vswitch::start_with(&run_dir, &[], &["--config", cfg])?;
    remember_pid(sw.pid());
    println!(
        "vswitch pid {:?}, log {}",
        sw.pid(),
        sw.log_path().display()
    );
    let vms = ports(&sw)?;
    for vm in &vms {
        println!(
            "  port {:<5} channel {:<4} mac {} socket {} ({})",
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

    step(
        t0,
        &format!("booting {} QEMU guests (TCG, memfd memory)", vms.len()),
    );
    let mut guests = Vec::new();
    for vm in &vms {
        let mut cfg = GuestConfig::new(&vm.name).nic(&vm.socket, vm.role, &vm.mac, &vm.ip);
        cfg.console_log = Some(run_dir.join(format!("{}.console.log", vm.name)));
        cfg.assets = Some(assets.clone());
        let g = QemuGuest::spawn(cfg)?;
        remember_pid(Some(g.pid()));
        guests.push(g);
    }
    for (g, vm) in guests.iter_mut().zip(&vms) {
        let t = g.wait_ready(BOOT)?;
        println!(
            "  {} up after {t:.1?}: eth0 {} on channel {}",
            vm.name, vm.ip, vm.channel
        );
    }
    let names: Vec<&str> = vms.iter().map(|v| v.name.as_str()).collect();
    sw.wait_connected(&names, Duration::from_secs(60))?;

    step(
        t0,
        "pinging every guest from every other one (from inside the guests)",
    );
    let reached = ping_matrix(&mut guests, &vms)?;
    let ok = print_matrix(&vms, &reached);

    step(t0, "switch counters (vswitch ctl stats)");
    let stats = sw.stats()?;
    print!("{}", stats.summary());
    let across: u64 = stats
        .channels
        .iter()
        .map(|c| c.counters.dropped("channel_mismatch"))
        .sum();
    println!(
        "in = frames from the VM, out = frames delivered to it, flooded = copies planned by \
         flooding (always within the sender's channel).\nFrames refused by the delivery check \
         (channel_mismatch): {across}: flooding and forwarding never even planned a copy \
         across channels."
    );

    step(t0, "shutting down");
    for g in &mut guests {
        let pid = g.pid();
        g.kill();
        forget_pid(pid);
    }
    println!("guests stopped");
    let sw_pid = sw.pid();
    let status = sw.terminate(Duration::from_secs(10))?;
    forget_pid(sw_pid.unwrap_or(0));
    let left: Vec<String> = vms
        .iter()
        .map(|v| &v.socket)
        .chain([&ctl])
        .filter(|p| p.exists() && !matches!(role_of(&vms, p), Some(SocketRole::Server)))
        .map(|p| p.display().to_string())
        .collect();
    println!("vswitch exited ({status}); sockets left behind: {left:?}");
    if !status.success() {
        bail!("vswitch exited with {status} on SIGTERM");
    }
    if !left.is_empty() {
        bail!("the switch left its sockets behind: {left:?}");
    }
    if ok {
        cleanup(&run_dir, &vms);
    } else {
        println!("logs kept in {}", run_dir.display());
    }
    Ok(ok)
}

/// The role of the port whose socket is `p`.
fn role_of(vms: &[Vm], p: &Path) -> Option<SocketRole> {
    vms.iter().find(|v| v.socket == p).map(|v| v.role)
}

/// The switch's ports, with an IP for each guest: 10.10.0.N/24 for the N-th.
fn ports(sw: &Vswitch) -> Result<Vec<Vm>> {
    let v = sw.ctl_json(&["ports"])?;
    let list = v
        .as_array()
        .context("`vswitch ctl ports` did not answer a list")?;
    let mut vms = Vec::new();
    // Uplinks are listed after the VM ports; the demo's guests are behind the VM ports.
    let vm_rows = list
        .iter()
        .filter(|p| p.get("kind").and_then(Value::as_str) != Some("uplink"));
    for (i, p) in vm_rows.enumerate() {
        let s = |k: &str| p.get(k).and_then(Value::as_str).map(str::to_string);
        let name = s("name").context("port without a name")?;
        let mac =
            s("mac").with_context(|| format!("port {name} has no mac= (the demo needs one)"))?;
        let channel = p
            .get("channel")
            .and_then(Value::as_u64)
            .and_then(|c| u16::try_from(c).ok())
            .with_context(|| format!("port {name} is on no channel"))?;
        let role = match s("role").as_deref() {
            Some("connect") => SocketRole::Server,
            _ => SocketRole::Client,
        };
        vms.push(Vm {
            socket: PathBuf::from(s("socket").context("port without a socket")?),
            name,
            channel,
            mac,
            role,
            ip: format!("10.10.0.{}/24", i + 1),
        });
    }
    if vms.len() < 2 {
        bail!("the demo needs at least two ports");
    }
    Ok(vms)
}

fn addr(vm: &Vm) -> &str {
    vm.ip.split('/').next().unwrap_or(&vm.ip)
}

/// `reached[i][j]`: guest i got a ping reply from guest j. Every guest pings all the others at
/// once, and all guests run at once.
fn ping_matrix(guests: &mut [QemuGuest], vms: &[Vm]) -> Result<Vec<Vec<bool>>> {
    let targets: Vec<String> = vms.iter().map(|v| addr(v).to_string()).collect();
    let results: Vec<Result<Vec<bool>>> = std::thread::scope(|s| {
        let handles: Vec<_> = guests
            .iter_mut()
            .enumerate()
            .map(|(i, g)| {
                let targets = &targets;
                s.spawn(move || -> Result<Vec<bool>> {
                    let others: Vec<&str> = targets
                        .iter()
                        .enumerate()
                        .filter(|(j, _)| *j != i)
                        .map(|(_, t)| t.as_str())
                        .collect();
                    // Up to 3 requests within 5 s each; any reply counts.
                    let cmd = format!(
                        "for ip in {}; do (if ping -c 3 -w 5 -W 2 -q $ip >/dev/null 2>&1; \
                         then echo \"$ip yes\"; else echo \"$ip no\"; fi) & done; wait",
                        others.join(" ")
                    );
                    let out = g.run_ok(&cmd, Duration::from_secs(60))?;
                    targets
                        .iter()
                        .enumerate()
                        .map(|(j, t)| {
                            if j == i {
                                return Ok(false);
                            }
                            let line = out
                                .lines()
                                .find(|l| l.split_whitespace().next() == Some(t.as_str()))
                                .with_context(|| {
                                    format!("{}: no result for {t}:\n{out}", g.name())
                                })?;
                            Ok(line.ends_with(" yes"))
                        })
                        .collect()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("ping thread panicked")))
            })
            .collect()
    });
    results.into_iter().collect()
}

/// Prints the matrix; returns whether it is exactly the expected one.
fn print_matrix(vms: &[Vm], reached: &[Vec<bool>]) -> bool {
    let label = |v: &Vm| format!("{} ch{}", v.name, v.channel);
    let w = vms.iter().map(|v| label(v).len()).max().unwrap_or(8).max(8);
    println!("ping from (row) to (column): yes = replies came back");
    print!("{:w$}", "");
    for v in vms {
        print!("  {:>w$}", label(v));
    }
    println!();
    let mut ok = true;
    let mut wrong = Vec::new();
    for (i, a) in vms.iter().enumerate() {
        print!("{:w$}", label(a));
        for (j, b) in vms.iter().enumerate() {
            let cell = if i == j {
                "-".to_string()
            } else {
                let expected = a.channel == b.channel;
                if reached[i][j] != expected {
                    ok = false;
                    wrong.push(format!(
                        "{} -> {}: {} (expected {})",
                        a.name,
                        b.name,
                        if reached[i][j] { "yes" } else { "no" },
                        if expected { "yes" } else { "no" }
                    ));
                }
                let s = if reached[i][j] { "yes" } else { "no" };
                if reached[i][j] == expected {
                    s.to_string()
                } else {
                    format!("{s}(!)")
                }
            };
            print!("  {cell:>w$}");
        }
        println!();
    }
    if ok {
        println!("matrix as expected: within a channel yes, across channels no");
    } else {
        println!("UNEXPECTED: {}", wrong.join("; "));
    }
    ok
}

/// Removes what the demo put in the run directory, and the directory if that leaves it empty.
fn cleanup(run_dir: &Path, vms: &[Vm]) {
    let mut files = vec![run_dir.join("vswitch.log")];
    for v in vms {
        files.push(run_dir.join(format!("{}.console.log", v.name)));
        files.push(run_dir.join(format!("{}.console.log.stderr", v.name)));
        if v.role == SocketRole::Server {
            // QEMU created it and is gone: nobody else removes it.
            files.push(v.socket.clone());
        }
    }
    for f in files {
        let _ = std::fs::remove_file(f);
    }
    let _ = std::fs::remove_dir(run_dir);
}

// --- Ctrl-C: kill what we started -------------------------------------------------------------

static PIDS: [AtomicI32; 16] = [const { AtomicI32::new(0) }; 16];

fn remember_pid(pid: Option<u32>) {
    let Some(pid) = pid.and_then(|p| i32::try_from(p).ok()) else {
        return;
    };
    for slot in &PIDS {
        if slot
            .compare_exchange(0, pid, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
        {
            return;
        }
    }
}

fn forget_pid(pid: u32) {
    let Ok(pid) = i32::try_from(pid) else {
        return;
    };
    for slot in &PIDS {
        let _ = slot.compare_exchange(pid, 0, Ordering::SeqCst, Ordering::SeqCst);
    }
}

extern "C" fn on_signal(sig: libc::c_int) {
    for slot in &PIDS {
        let pid = slot.load(Ordering::SeqCst);
        if pid > 0 {
            // SAFETY: kill(2) is async-signal-safe; these are PIDs of our own children.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
        }
    }
    // SAFETY: _exit(2) is async-signal-safe.
    unsafe { libc::_exit(128 + sig) }
}

/// SIGINT/SIGTERM kill the guests and the switch this demo started, then exit.
fn install_signal_handler() {
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: installing a handler that only calls async-signal-safe functions.
        unsafe {
            libc::signal(sig, on_signal as *const () as libc::sighandler_t);
        }
    }
}
