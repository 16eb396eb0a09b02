//! The demo that `ci/demo.sh` runs: the switch's main job with real guests, on two hosts.
//!
//! 1. builds two hosts as network namespaces, `vswdemo-a` and `vswdemo-b` (a stale one left by
//!    a crashed run is deleted first), joined by a veth pair, the underlay: 10.77.0.1/24 in A,
//!    10.77.0.2/24 in B;
//! 2. starts a switch in each, as users do (`ip netns exec NS vswitch run ...`, the `vswitch`
//!    binary next to this program: `target/release/vswitch`):
//!    host A: `--config examples/demo.toml --ctl RUN_DIR/ctl.sock` (vm1, vm2 on channel 100,
//!    vm3, vm4 on 200, a VXLAN uplink to 10.77.0.2); host B: `--config
//!    examples/demo-host-b.toml --ctl RUN_DIR/host-b/ctl.sock` (vm5 on 100, vm6 on 200, a VXLAN
//!    uplink to 10.77.0.1);
//! 3. asks each switch for its ports and uplinks (`vswitch ctl ports`) and boots one QEMU guest
//!    (TCG, memfd shared memory, the image `ci/build-guest.sh` builds) per port, in the root
//!    namespace (vhost-user sockets are files), in the socket role each port asks for: all six
//!    in one IP subnet (10.10.0.N/24 for the N-th port, host A's first), with the MTU the
//!    uplinks carry for guests (`mtu` in `ctl ports`: 1450 for VXLAN). The guests get the
//!    smaller MTU rather than giving the underlay a larger one because that is the setting users
//!    need on a fabric of MTU 1500, the one the README documents;
//! 4. pings every guest from every other one, inside the guests, and prints who reached whom;
//! 5. prints each switch's counters per port, per uplink and per channel (`vswitch ctl stats`),
//!    and the frames that crossed the underlay each way;
//! 6. shuts down: guests killed, both switches stopped with SIGTERM (exit status 0 expected),
//!    their sockets checked gone, the namespaces deleted.
//!
//! Exit status 0 when the matrix is exactly "same channel: yes, on one host and across hosts;
//! other channel: no" and frames crossed the uplinks both ways, 1 when not, 2 when the demo
//! could not run. Ctrl-C (or SIGTERM) kills the guests and the switches and deletes the
//! namespaces.
//!
//! ```text
//! demo [CONFIG_A CONFIG_B]   (default: examples/demo.toml examples/demo-host-b.toml)
//! ```
//! Environment: `VSWITCH_DEMO_DIR` (default /run/vswitch-demo: host A's run directory, host B's
//! is its `host-b`; they must match the sockets in the configurations), `VSWITCH_BIN` (the
//! switch binary), `VSW_GUEST_CONSOLE=1` (show the guests' consoles).

mod hosts;
mod matrix;
mod signals;

use anyhow::{Context, Result};
use hosts::{Host, Underlay, Vm, NETNS_A, NETNS_B, UNDERLAY_A, UNDERLAY_B};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};
use vswitch_tests::{guest_assets, repo_root, GuestAssets, GuestConfig, QemuGuest, Stats};

const BOOT: Duration = Duration::from_secs(240);

fn main() -> ExitCode {
    signals::install();
    let t0 = Instant::now();
    match run() {
        Ok(true) => {
            println!("demo: OK ({:.0?})", t0.elapsed());
            ExitCode::SUCCESS
        }
        Ok(false) => {
            println!(
                "demo: FAILED: the reachability matrix is not the expected one, or no frames \
                 crossed the uplinks"
            );
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

/// The configuration given as argument `arg`, else `default` in this checkout.
fn config_path(arg: Option<std::ffi::OsString>, default: &str) -> Result<PathBuf> {
    let p = arg.map_or_else(|| repo_root().join(default), PathBuf::from);
    std::fs::canonicalize(&p).with_context(|| format!("configuration {}", p.display()))
}

fn run() -> Result<bool> {
    let t0 = Instant::now();
    let mut args = std::env::args_os().skip(1);
    let config_a = config_path(args.next(), "examples/demo.toml")?;
    let config_b = config_path(args.next(), "examples/demo-host-b.toml")?;
    let run_a =
        PathBuf::from(std::env::var("VSWITCH_DEMO_DIR").unwrap_or("/run/vswitch-demo".into()));
    let run_b = run_a.join("host-b");
    std::fs::create_dir_all(&run_b)
        .with_context(|| format!("creating the run directory {}", run_b.display()))?;

    step(t0, "guest image (ci/build-guest.sh)");
    let assets = guest_assets()?;
    println!(
        "kernel {} ({}), initramfs {}",
        assets.kernel.display(),
        assets.kernel_kind,
        assets.initrd.display()
    );

    step(
        t0,
        &format!("two hosts: network namespaces {NETNS_A} and {NETNS_B}, joined by a veth pair"),
    );
    let underlay = Underlay::build()?;
    println!("  {NETNS_A}: underlay {UNDERLAY_A}\n  {NETNS_B}: underlay {UNDERLAY_B}");

    step(
        t0,
        &format!(
            "starting the switches: ip netns exec {NETNS_A} vswitch run --config {}, ip netns \
             exec {NETNS_B} vswitch run --config {}",
            config_a.display(),
            config_b.display()
        ),
    );
    let mut a = Host::start("A", &underlay.a, &config_a, &run_a, 1)?;
    let mut b = Host::start("B", &underlay.b, &config_b, &run_b, a.vms.len() + 1)?;
    a.describe();
    b.describe();

    let vms: Vec<Vm> = a.vms.iter().chain(&b.vms).cloned().collect();
    step(
        t0,
        &format!(
            "booting {} QEMU guests (TCG, memfd memory, in the root namespace)",
            vms.len()
        ),
    );
    let mut guests = Vec::new();
    for host in [&a, &b] {
        for vm in &host.vms {
            guests.push(boot(vm, &host.run_dir, host.guest_mtu(), &assets)?);
        }
    }
    for (g, vm) in guests.iter_mut().zip(&vms) {
        let t = g.wait_ready(BOOT)?;
        let mtu = g.run_ok("cat /sys/class/net/eth0/mtu", Duration::from_secs(30))?;
        println!(
            "  {} up after {t:.1?}: eth0 {} mtu {} on channel {} (host {})",
            vm.name,
            vm.ip,
            mtu.trim(),
            vm.channel,
            vm.host
        );
    }
    for host in [&a, &b] {
        let names: Vec<&str> = host.vms.iter().map(|v| v.name.as_str()).collect();
        host.sw.wait_connected(&names, Duration::from_secs(60))?;
    }

    step(
        t0,
        "pinging every guest from every other one (from inside the guests)",
    );
    let reached = matrix::ping(&mut guests, &vms)?;
    let matrix_ok = matrix::print(&vms, &reached);

    step(t0, "switch counters (vswitch ctl stats, per host)");
    let stats_a = a.sw.stats()?;
    let stats_b = b.sw.stats()?;
    for (host, stats) in [(&a, &stats_a), (&b, &stats_b)] {
        println!("host {} ({}):", host.label, host.netns);
        print!("{}", stats.summary());
    }
    let crossed = print_crossing(&stats_a, &stats_b);
    let refused: u64 = [&stats_a, &stats_b]
        .iter()
        .flat_map(|s| &s.channels)
        .map(|c| c.counters.dropped("channel_mismatch"))
        .sum();
    println!(
        "in = frames from the VM (uplink: from the wire), out = frames delivered to it (uplink: \
         sent on the wire), flooded = copies planned by flooding (always within the sender's \
         channel).\nFrames refused by the delivery check (channel_mismatch), both hosts: \
         {refused}: flooding and forwarding never even planned a copy across channels."
    );

    step(t0, "shutting down");
    for g in &mut guests {
        let pid = g.pid();
        g.kill();
        signals::forget_pid(Some(pid));
    }
    println!("guests stopped");
    a.stop()?;
    b.stop()?;
    underlay.remove()?;
    println!("network namespaces {NETNS_A} and {NETNS_B} deleted (with the veth pair)");
    let ok = matrix_ok && crossed;
    if ok {
        b.cleanup();
        a.cleanup();
    } else {
        println!("logs kept in {}", run_a.display());
    }
    Ok(ok)
}

/// Starts the guest behind `vm`, its console logged in `run_dir`.
fn boot(vm: &Vm, run_dir: &Path, mtu: Option<u16>, assets: &GuestAssets) -> Result<QemuGuest> {
    let mut cfg = GuestConfig::new(&vm.name).nic(&vm.socket, vm.role, &vm.mac, &vm.ip);
    cfg.console_log = Some(run_dir.join(format!("{}.console.log", vm.name)));
    cfg.assets = Some(assets.clone());
    if let Some(mtu) = mtu {
        cfg.extra_cmdline = format!("vsw.mtu={mtu}");
    }
    let g = QemuGuest::spawn(cfg)?;
    signals::remember_pid(Some(g.pid()));
    Ok(g)
}

/// Prints the frames each host's uplinks sent and received; returns whether frames crossed both
/// ways.
fn print_crossing(a: &Stats, b: &Stats) -> bool {
    let sum = |s: &Stats, f: fn(&vswitch_tests::Counters) -> u64| -> u64 {
        s.uplinks.iter().map(|u| f(&u.switch)).sum()
    };
    let (a_out, a_in) = (sum(a, |c| c.out_frames), sum(a, |c| c.in_frames));
    let (b_out, b_in) = (sum(b, |c| c.out_frames), sum(b, |c| c.in_frames));
    println!("frames across the underlay (one VXLAN datagram each, VNI = channel):");
    println!("  A -> B: host A's uplinks sent {a_out}, host B's uplinks received {b_in}");
    println!("  B -> A: host B's uplinks sent {b_out}, host A's uplinks received {a_in}");
    let ok = a_out > 0 && b_in > 0 && b_out > 0 && a_in > 0;
    if !ok {
        println!("UNEXPECTED: an uplink counted no frames in one direction");
    }
    ok
}
