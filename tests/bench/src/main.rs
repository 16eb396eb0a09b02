//! `vswitch-bench`: the end-to-end benchmark (issue 7, docs/performance.md).
//!
//! Third-party frontends — DPDK's virtio PMD (dpdk-testpmd txonly → rxonly over
//! `net_virtio_user`) and Linux guests in QEMU running iperf3 — and the project's own
//! in-process vhost-user test guest generate and sink traffic through each forwarder in turn —
//! this switch (event-driven and busy-poll), DPDK testpmd io forwarding, Open vSwitch with
//! DPDK — plus a memcpy baseline, all in one run with the same frontends and core
//! placement; and across two hosts (network namespaces joined by a veth pair), two switches
//! joined by uplinks beside the Linux kernel's own VXLAN path. Prints tables (Markdown), and
//! optionally writes JSON and a PNG plot.
//!
//! `cargo run --release -p vswitch-bench -- [--quick] [--json out.json] [--plot out.png]
//! [--scenario NAME]...`

mod frames;
mod frontends;
mod generator;
mod kernel_vxlan;
mod memcpy;
mod netns;
mod peers;
mod plot;
mod report;
mod runner;
mod scenario;
mod sys;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Parser;

use generator::TrafficOpts;
use peers::{
    Ctx, KERNEL_VXLAN, MEMCPY, OVS, OVS_TSO, TESTPMD, TESTPMD_TSO, VSWITCH, VSWITCH_DOT1AD,
    VSWITCH_DOT1AD_XDP, VSWITCH_POLL, VSWITCH_VXLAN,
};
use report::{Report, Row};
use scenario::{Kind, Scenario};

/// End-to-end benchmark of vswitch against memcpy, DPDK testpmd and OVS-DPDK.
#[derive(Parser, Debug)]
#[command(name = "vswitch-bench")]
struct Args {
    /// Short run: 0.5 s warm-up and a 1 s window per measurement.
    #[arg(long)]
    quick: bool,
    /// Write every result as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Draw Mpps and forwarder cost per scenario and peer into this PNG.
    #[arg(long)]
    plot: Option<PathBuf>,
    /// Run only these scenarios (repeatable or comma-separated; see --list).
    #[arg(long, value_delimiter = ',')]
    scenario: Vec<String>,
    /// Run only these peers (vswitch, vswitch-poll, memcpy, testpmd, ovs-dpdk; iperf3 TCP with
    /// offloads also: testpmd-tso, ovs-dpdk-tso; two-host scenarios: vswitch-vxlan,
    /// vswitch-dot1ad, vswitch-dot1ad-xdp, kernel-vxlan).
    #[arg(long, value_delimiter = ',')]
    peer: Vec<String>,
    /// List the scenarios and exit.
    #[arg(long)]
    list: bool,
    /// Entries per virtqueue of every guest (power of two, 256..=32768).
    #[arg(long, default_value_t = 4096)]
    queue_size: u16,
    /// Measurement window in seconds (default 3, 1 with --quick).
    #[arg(long)]
    duration: Option<f64>,
    /// Warm-up in seconds (default 1, 0.5 with --quick).
    #[arg(long)]
    warmup: Option<f64>,
    /// CPU of the forwarder.
    #[arg(long, default_value_t = 0)]
    fwd_cpu: usize,
    /// CPU of the generator and sink threads.
    #[arg(long, default_value_t = 1)]
    gen_cpu: usize,
    /// Most frames a generator queues per step, i.e. per kick (0: every free TX slot). Larger
    /// bursts make every forwarder's rate bimodal on this machine (docs/perf-history.md).
    #[arg(long, default_value_t = 64)]
    max_batch: usize,
    /// Drive generators and sinks from separate threads (both on the generator CPU, yielding
    /// to each other when idle) instead of one thread driving every guest.
    #[arg(long)]
    split_threads: bool,
    /// Measure every scenario/peer this many times and keep the best (highest Mpps) run: on a
    /// shared machine the best run is the least disturbed one.
    #[arg(long, default_value_t = 1)]
    repeat: u32,
    /// Before each measurement, wait up to this many seconds for other processes of the
    /// machine to use less than 20 % of a CPU (0: do not wait). The table shows the load that
    /// was there anyway ("other load").
    #[arg(long, default_value_t = 0.0)]
    wait_quiet: f64,
    /// Do not try to install missing DPDK/OVS packages (ci/bench-peers.sh).
    #[arg(long)]
    no_install: bool,
    /// Extra devargs for both DPDK virtio-user frontends of the dpdk-* scenarios, e.g.
    /// `in_order=0` or `packed_vq=1`.
    #[arg(long, default_value = "")]
    virtio_user_args: String,
}

const ALL_PEERS: [&str; 11] = [
    VSWITCH,
    VSWITCH_POLL,
    MEMCPY,
    TESTPMD,
    TESTPMD_TSO,
    OVS,
    OVS_TSO,
    VSWITCH_VXLAN,
    VSWITCH_DOT1AD,
    VSWITCH_DOT1AD_XDP,
    KERNEL_VXLAN,
];

fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    if let Err(e) = real_main() {
        eprintln!("vswitch-bench: {e:#}");
        std::process::exit(1);
    }
}

/// Peers that cannot run at all, with the exact reason.
fn unavailable(args: &Args) -> Vec<(String, String)> {
    let check = || {
        let mut v = Vec::new();
        if let Some(why) = peers::testpmd::unavailable() {
            v.push((TESTPMD.to_string(), why.clone()));
            v.push((TESTPMD_TSO.to_string(), why));
        }
        if let Some(why) = peers::ovs::unavailable() {
            v.push((OVS.to_string(), why.clone()));
            v.push((OVS_TSO.to_string(), why));
        }
        v
    };
    let mut v = check();
    // SAFETY: geteuid has no preconditions and cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    if !v.is_empty() && !args.no_install {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../ci/bench-peers.sh");
        if root && script.exists() {
            println!("installing the reference peers: {}", script.display());
            match std::process::Command::new("bash").arg(&script).status() {
                Ok(s) if s.success() => v = check(),
                Ok(s) => println!("{} failed ({s})", script.display()),
                Err(e) => println!("cannot run {}: {e}", script.display()),
            }
        }
    }
    if !root && !v.iter().any(|(p, _)| p == OVS) {
        for p in [OVS, OVS_TSO] {
            v.push((
                p.to_string(),
                "needs root (the netdev datapath creates tap devices)".into(),
            ));
        }
    }
    v
}

fn select_scenarios(args: &Args) -> Result<Vec<Scenario>> {
    let all = scenario::all();
    if args.scenario.is_empty() {
        return Ok(all);
    }
    for n in &args.scenario {
        if !all.iter().any(|s| &s.name == n) {
            let names: Vec<&str> = all.iter().map(|s| s.name.as_str()).collect();
            bail!("unknown scenario {n}; known: {}", names.join(", "));
        }
    }
    Ok(all
        .into_iter()
        .filter(|s| args.scenario.contains(&s.name))
        .collect())
}

fn real_main() -> Result<()> {
    let args = Args::parse();
    if args.list {
        for s in scenario::all() {
            println!(
                "{:<20} {:>5} B  {:<40} frontend: {}",
                s.name,
                s.frame_len,
                format!("{:?}", s.kind),
                s.frontend()
            );
        }
        return Ok(());
    }
    if !(256..=32768).contains(&args.queue_size) || !args.queue_size.is_power_of_two() {
        bail!("--queue-size must be a power of two in 256..=32768");
    }
    for p in &args.peer {
        if !ALL_PEERS.contains(&p.as_str()) {
            bail!("unknown peer {p}; known: {}", ALL_PEERS.join(", "));
        }
    }
    let mut scenarios = select_scenarios(&args)?;
    // Said once, after the banner.
    let mut skipped_two_host = None;
    if let Some(why) = netns::unavailable() {
        let names: Vec<&str> = scenarios
            .iter()
            .filter(|s| s.is_two_host())
            .map(|s| s.name.as_str())
            .collect();
        if !names.is_empty() {
            skipped_two_host = Some(format!(
                "two-host scenarios skipped ({}): {why}",
                names.join(", ")
            ));
            scenarios.retain(|s| !s.is_two_host());
        }
    }
    let cpus = sys::online_cpus();
    if args.fwd_cpu == args.gen_cpu || args.fwd_cpu >= cpus || args.gen_cpu >= cpus {
        bail!(
            "need two distinct online CPUs for forwarder ({}) and generator ({}); this machine has {cpus}",
            args.fwd_cpu,
            args.gen_cpu
        );
    }
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, stop.clone()).context("installing signal handlers")?;
    }
    let unavail = unavailable(&args);
    // The main thread (and the peers' control processes it starts) stays off the forwarder CPU.
    sys::pin_current_thread(args.gen_cpu)?;
    let (warmup, duration) = match args.quick {
        true => (args.warmup.unwrap_or(0.5), args.duration.unwrap_or(1.0)),
        false => (args.warmup.unwrap_or(1.0), args.duration.unwrap_or(3.0)),
    };
    let topts = TrafficOpts {
        queue_size: args.queue_size,
        warmup: Duration::from_secs_f64(warmup),
        duration: Duration::from_secs_f64(duration),
        gen_cpu: args.gen_cpu,
        split_threads: args.split_threads,
        max_batch: args.max_batch,
    };
    let run_dir = std::env::temp_dir().join(format!("vswb-{}", std::process::id()));
    std::fs::create_dir_all(&run_dir).with_context(|| format!("creating {}", run_dir.display()))?;
    let ctx = Ctx {
        dir: run_dir.clone(),
        fwd_cpu: args.fwd_cpu,
        gen_cpu: args.gen_cpu,
        tsc_mhz: sys::cpu_mhz(),
    };
    let meta = serde_json::json!({
        "cpu": sys::cpu_model(),
        "online_cpus": cpus,
        "tsc_mhz": ctx.tsc_mhz,
        "forwarder_cpu": args.fwd_cpu,
        "generator_sink_cpu": args.gen_cpu,
        "queue_size": args.queue_size,
        "warmup_s": warmup,
        "window_s": duration,
        "repeat": args.repeat,
        "loadavg_at_start": std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim(),
        "unix_time": std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        "git": git_head(),
    });
    println!(
        "vswitch-bench: {} ({} CPUs online, {} MHz)",
        sys::cpu_model(),
        cpus,
        ctx.tsc_mhz.map_or("?".into(), |m| format!("{m:.0}"))
    );
    println!(
        "core placement: forwarder (switch threads / testpmd forwarding lcore / OVS PMD / memcpy) on CPU {}; generator + sink threads, testpmd main lcore and this thread on CPU {} (affinity now {:?})",
        args.fwd_cpu,
        args.gen_cpu,
        sys::current_affinity()
    );
    println!(
        "rings {} entries, RX buffers/TX slots {} B, warm-up {warmup} s, window {duration} s, best of {}, source {}",
        args.queue_size,
        frames::BUF_SIZE,
        args.repeat.max(1),
        meta["git"].as_str().unwrap_or("?")
    );
    for (p, why) in &unavail {
        println!("peer {p} cannot run: {why}");
    }
    if let Some(line) = &skipped_two_host {
        println!("{line}");
    }
    let ropts = runner::RunOpts {
        peers: &args.peer,
        repeat: args.repeat.max(1),
        wait_quiet: args.wait_quiet,
        virtio_user_args: &args.virtio_user_args,
    };
    let rows = runner::run_all(&ropts, &scenarios, &unavail, &ctx, &topts, &stop);
    peers::vswitch::reap();
    let mut rows = rows;
    report::compute_ratios(&mut rows, &scenarios);
    let kind_of = |r: &Row| {
        scenarios
            .iter()
            .find(|s| s.name == r.scenario)
            .map(|s| s.kind)
    };
    let pick = |f: &dyn Fn(&Row) -> bool| rows.iter().filter(|r| f(r)).cloned().collect::<Vec<_>>();
    let dpdk = pick(&|r| kind_of(r) == Some(Kind::DpdkFrontends));
    let iperf = pick(&|r| matches!(kind_of(r), Some(Kind::Iperf3 { .. })));
    let two_host = pick(&|r| peers::TWO_HOST.contains(&r.peer.as_str()));
    let one_host = pick(&|r| {
        !peers::TWO_HOST.contains(&r.peer.as_str())
            && !kind_of(r).is_some_and(|k| matches!(k, Kind::DpdkFrontends | Kind::Iperf3 { .. }))
    });
    if !dpdk.is_empty() {
        println!(
            "\nFrontend: DPDK virtio-user generator (testpmd txonly) and sink (testpmd rxonly), both on CPU {}; forwarder on CPU {}. Rate: median of the sink's per-second Rx-pps.\n\n{}",
            args.gen_cpu,
            args.fwd_cpu,
            frontends::table::dpdk_table(&dpdk)
        );
    }
    if !iperf.is_empty() {
        println!(
            "\nFrontend: Linux virtio-net in two QEMU TCG guests (iperf3 client → server), both on CPU {}; forwarder on CPU {}.\n\n{}",
            args.gen_cpu,
            args.fwd_cpu,
            frontends::table::iperf_table(&iperf, &scenarios)
        );
    }
    if !one_host.is_empty() {
        println!(
            "\nFrontend (second instrument): the project's in-process test guest (vswitch-testguest) as generator and sink, CPU {}; forwarder on CPU {}.\n\n{}",
            args.gen_cpu,
            args.fwd_cpu,
            report::table(&one_host)
        );
    }
    if !two_host.is_empty() {
        println!("\n{}", report::two_host_table(&two_host));
    }
    let notes = report::notes(&rows);
    if !notes.is_empty() {
        println!("notes:\n{notes}");
    }
    if let Some(path) = &args.json {
        let r = Report {
            meta,
            unavailable: unavail.clone(),
            scenarios: &scenarios,
            rows: &rows,
        };
        std::fs::write(path, serde_json::to_string_pretty(&r)?)
            .with_context(|| format!("writing {}", path.display()))?;
        println!("JSON: {}", path.display());
    }
    if let Some(path) = &args.plot {
        // The plot shows the test guest's scenarios (the third-party ones have their tables).
        let own: Vec<Scenario> = scenarios
            .iter()
            .filter(|s| !s.is_third_party())
            .cloned()
            .collect();
        plot::draw(path, &own, &rows).context("drawing the plot")?;
        println!("plot: {}", path.display());
    }
    if let Err(e) = std::fs::remove_dir_all(&run_dir) {
        eprintln!("warning: could not remove {}: {e}", run_dir.display());
    }
    if stop.load(Ordering::Relaxed) {
        bail!("interrupted");
    }
    Ok(())
}

/// The commit the binary was built from, "+dirty" when the switch's sources had uncommitted
/// changes at run time.
fn git_head() -> Option<String> {
    let git = |args: &[&str]| {
        let o = std::process::Command::new("git")
            .args(args)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .ok()?;
        o.status
            .success()
            .then(|| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let head = git(&["rev-parse", "--short", "HEAD"])?;
    let dirty = git(&[
        "status",
        "--porcelain",
        "--",
        "../../vswitch/src",
        "../../vhost/src",
        "../../channels/src",
    ])
    .is_some_and(|s| !s.is_empty());
    Some(if dirty { format!("{head}+dirty") } else { head })
}
