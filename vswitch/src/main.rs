//! The `vswitch` binary.
//!
//! ```text
//! vswitch run [--config FILE] [--port SPEC]... [--uplink SPEC]... [--ctl PATH] [--metrics ADDR] [--log-level LEVEL] [--stats-interval SECS]
//!   SPEC = NAME,socket=PATH,channel=SVID[,mac=MAC][,mode=listen|connect|vepa][,mac-limit=N][,mtu=N][,queues=N]
//!          [,rate=MBIT[,burst=KB]][,pps=N]
//!   uplink SPEC = NAME,kind=dot1ad,interface=IF[,channels=LIST][,reflective-relay=on|off][,mac-limit=N][,mtu=N]
//!               | NAME,kind=vxlan,local=IP[:PORT],remote=IP[,remote=IP...][,channels=LIST][,mac-limit=N][,mtu=N]
//! vswitch ctl [--ctl PATH] [--json] <command> [args]
//! vswitch completions bash|zsh|fish|elvish|powershell
//! vswitch manpage
//! ```
//!
//! The control socket: `--ctl PATH`, else `VSWITCH_CTL`, else `[switch] ctl` of the config
//! file (`ctl --config FILE`), else `/run/vswitch/ctl.sock`.
//!
//! Exit codes: 0 success; 1 a failure at run time (a port, an uplink or the control socket
//! could not start, an error answer from the control API); 2 invalid input (nothing was
//! started).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::mpsc;
use std::sync::Arc;
use std::thread;

use anyhow::Context;
use clap::{Args, CommandFactory, Parser, Subcommand};
use log::{error, info, LevelFilter};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

mod ctl_cli;

use vswitch::config::{Config, Sources, CTL_ENV, DEFAULT_CTL};
use vswitch::ctl::CtlServer;
use vswitch::metrics_http::MetricsServer;
use vswitch::state::Plan;
use vswitch::stats::transport_text;
use vswitch::uplink::{self, UplinkConfig};
use vswitch::Switch;

/// Exit code for invalid input.
const EXIT_USAGE: u8 = 2;

#[derive(Parser, Debug)]
#[command(
    name = "vswitch",
    version,
    about = "A vhost-user virtual switch with 802.1Qbg S-channels: VMs on different channels never see each other's frames."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the switch until SIGINT or SIGTERM.
    Run(RunArgs),
    /// Talk to a running switch's control API: tables for people, --json for scripts.
    Ctl(ctl_cli::CtlArgs),
    /// Print a shell completion script, e.g. `vswitch completions bash >
    /// /etc/bash_completion.d/vswitch`.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff), e.g. `vswitch manpage | man -l -`.
    Manpage,
}

const RUN_HELP: &str = "\
Ports come from --config FILE (first) and --port flags (then). SPEC keys:
  socket=PATH       vhost-user socket (unique)
  channel=SVID      the VM's S-channel, 1..=4094
  mac=MAC           the VM's unicast MAC: other source MACs are dropped (source_spoof)
  mode=listen       the switch creates the socket (QEMU default; Cloud Hypervisor vhost_mode=client)
  mode=connect      the frontend created it (QEMU server=on; Cloud Hypervisor vhost_mode=server)
  mode=vepa         802.1Qbg VEPA (socket role listen): every frame goes to the adjacent bridge
                    over an uplink carrying the channel (channel-mode=vepa with mode=connect)
  mac-limit=N       most MACs this port may have learned at once
  mtu=N             MTU offered to the guest, 68..=9000 (default 1500)
  queues=N          queue pairs offered to the guest (multiqueue), 1..=16 (default 1); give QEMU
                    the same (-netdev vhost-user,...,queues=N -device virtio-net-pci,mq=on)
  socket-mode=MODE  permissions of the socket, octal (default [switch] socket_mode, 0660)
  rate=MBIT         most the VM may send, Mbit/s; excess frames are dropped (policed)
  burst=KB          depth of the rate= bucket (default 10 ms at the rate, at least 16 KiB)
  pps=N             most frames per second the VM may send

Uplinks (trunks to other hosts, each frame with its channel on the wire) come from [[uplink]]
tables (first) and --uplink flags (then):
  NAME,kind=dot1ad,interface=IF[,channels=LIST][,reflective-relay=on|off][,mac-limit=N][,mtu=N]
      802.1ad S-tag (TPID 0x88a8, S-VID = channel) on interface IF; reflective-relay=on lets a
      frame go back out on its channel (the bridge side of VEPA)
  NAME,kind=vxlan,local=IP[:PORT],remote=IP[,remote=IP...][,channels=LIST][,mac-limit=N][,mtu=N]
      VXLAN (UDP port 4789 unless given), VNI = channel, to every remote VTEP listed
  channels=LIST     channels and ranges joined by '+', e.g. 100+200-299 (default: 1-4094)
  mtu=N             MTU to give the guests whose traffic crosses it (default 1500 for dot1ad:
                    the interface carries mtu+4; 1450 for vxlan: the underlay carries mtu+50)

The control socket: --ctl PATH, else the environment's VSWITCH_CTL, else [switch] ctl, else
/run/vswitch/ctl.sock (its directory is created if missing). Metrics: --metrics ADDR or
[switch] metrics serves Prometheus text at http://ADDR/metrics (off by default).

FILE (TOML; every table optional, unknown keys are errors):
  [switch]
  ctl = \"/run/vswitch/ctl.sock\"
  metrics = \"127.0.0.1:9471\"
  stats_interval_s = 10
  log_level = \"info\"
  poll_cores = [2, 3]    # optional busy-poll CPUs (default: event-driven)
  event_threads = 1      # event mode: datapath threads serving the ports (default 1)
  max_mem_regions = 64   # guest memory regions one frontend may map, 1..=509 (default 64)
  max_mem_mib = 1048576  # guest memory one frontend may map, MiB (default 1 TiB)
  state = \"/var/lib/vswitch/state.json\"  # keep API changes across restarts (docs/state.md)
  socket_mode = \"0660\"  # permissions of the ports' sockets (octal text)
  [fdb]
  aging_s = 300
  mac_limit = 4096
  capacity = 131072
  [policy]
  allow = [[100, 200]]   # directed: frames of channel 100 may reach VMs on channel 200
  [[port]]
  name = \"vm1\"
  socket = \"/run/vswitch/vm1.sock\"
  channel = 100
  mac = \"52:54:00:00:00:01\"
  mode = \"listen\"
  mac-limit = 64
  mtu = 1500
  queues = 1             # queue pairs (multiqueue), 1..=16
  [[uplink]]
  name = \"up0\"
  kind = \"dot1ad\"          # or \"vxlan\" with local = \"192.0.2.1\" and remote = [\"192.0.2.2\"]
  interface = \"eth1\"
  channels = [100, \"200-299\"]  # optional: every channel when left out
  reflective-relay = false

Exit codes: 0 stopped by SIGINT/SIGTERM; 1 a port, an uplink or the control socket could not
start; 2 invalid configuration (nothing was started).
";

#[derive(Args, Debug)]
#[command(after_long_help = RUN_HELP)]
struct RunArgs {
    /// TOML file with [[port]], [[uplink]], [policy], [fdb] and [switch] tables.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// A port: NAME,socket=PATH,channel=SVID[,mac=MAC][,mode=listen|connect|vepa][,mac-limit=N][,mtu=N][,queues=N].
    /// Repeat for more ports; they are added after the file's ports.
    #[arg(long = "port", value_name = "SPEC")]
    ports: Vec<String>,
    /// An uplink: NAME,kind=dot1ad,interface=IF[,...] or
    /// NAME,kind=vxlan,local=IP[:PORT],remote=IP[,remote=IP...][,...] (see --help).
    /// Repeat for more uplinks; they are added after the file's uplinks.
    #[arg(long = "uplink", value_name = "SPEC")]
    uplinks: Vec<String>,
    /// Serve the control API on this Unix socket (mode 0600). Default: VSWITCH_CTL, else
    /// [switch] ctl, else /run/vswitch/ctl.sock.
    #[arg(long, value_name = "PATH")]
    ctl: Option<PathBuf>,
    /// Serve Prometheus metrics at http://ADDR/metrics, e.g. 127.0.0.1:9471 (default: off,
    /// or [switch] metrics).
    #[arg(long, value_name = "ADDR")]
    metrics: Option<String>,
    /// off, error, warn, info, debug or trace (default: RUST_LOG, else info).
    #[arg(long, value_name = "LEVEL")]
    log_level: Option<String>,
    /// Log the counters every SECS seconds (and always at shutdown).
    #[arg(long, value_name = "SECS")]
    stats_interval: Option<u64>,
    /// Busy-poll: one thread pinned to each listed CPU (e.g. 2,3) drains the ports' rings
    /// instead of waiting for guest kicks. Costs those CPUs entirely.
    #[arg(long, value_name = "CPUS")]
    poll_cores: Option<String>,
    /// Event mode (no --poll-cores): datapath threads serving the ports round-robin; each
    /// polls while its ports are busy and sleeps until a guest kicks (default 1).
    #[arg(long, value_name = "N")]
    event_threads: Option<u64>,
    /// Save the ports, channels and policy set through the control API to this file and
    /// start from it next time (docs/state.md). Default: not saved.
    #[arg(long, value_name = "PATH")]
    state: Option<PathBuf>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => run(args),
        Command::Ctl(args) => ctl_cli::run(args),
        Command::Completions { shell } => {
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "vswitch",
                &mut std::io::stdout(),
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Manpage => clap_mangen::Man::new(Cli::command())
            .render(&mut std::io::stdout())
            .map(|()| ExitCode::SUCCESS)
            .context("cannot write the man page"),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("vswitch: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let sources = Sources {
        file: args.config,
        ports: args.ports,
        uplinks: args.uplinks,
        ctl: args.ctl,
        ctl_env: std::env::var_os(CTL_ENV)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from),
        metrics: args.metrics,
        log_level: args.log_level,
        stats_interval_s: args.stats_interval,
        poll_cores: args.poll_cores,
        event_threads: args.event_threads,
        state: args.state,
    };
    let cfg = match Config::load(&sources) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("vswitch: error: {e}");
            return Ok(ExitCode::from(EXIT_USAGE));
        }
    };
    init_logging(cfg.log_level);
    let plan = match Plan::new(&cfg) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("vswitch: error: {e}");
            return Ok(ExitCode::from(EXIT_USAGE));
        }
    };
    // Before anything is created, so that a signal always finds a handler that cleans up.
    let mut signals =
        Signals::new([SIGINT, SIGTERM]).context("cannot install the SIGINT/SIGTERM handlers")?;

    let sw = Switch::new(cfg.settings.clone(), plan.policy().clone());
    let servers = match start(&sw, &cfg, plan) {
        Ok(s) => s,
        Err(e) => {
            error!("{e:#}");
            sw.shutdown();
            return Err(e);
        }
    };
    info!(
        "vswitch running: {} port(s), {} uplink(s), control API at {}{}; SIGINT or SIGTERM to stop",
        sw.ports().len(),
        sw.uplinks().len(),
        servers.ctl.path().display(),
        servers
            .metrics
            .as_ref()
            .map(|m| format!(", metrics at http://{}/metrics", m.addr()))
            .unwrap_or_default()
    );

    let (stop_tx, stop_rx) = mpsc::channel::<()>();
    let stats_thread = match cfg.stats_interval {
        Some(every) => {
            let sw = sw.clone();
            Some(
                thread::Builder::new()
                    .name("stats-log".into())
                    .spawn(move || {
                        while let Err(mpsc::RecvTimeoutError::Timeout) = stop_rx.recv_timeout(every)
                        {
                            log_stats(&sw, "counters");
                        }
                    })
                    .context("cannot start the stats thread")?,
            )
        }
        None => None,
    };

    let signal = signals.forever().next();
    info!(
        "{}: shutting down",
        match signal {
            Some(SIGINT) => "SIGINT",
            Some(SIGTERM) => "SIGTERM",
            _ => "signal",
        }
    );
    drop(stop_tx);
    if let Some(t) = stats_thread {
        let _ = t.join();
    }
    if let Some(m) = servers.metrics {
        m.shutdown();
    }
    servers.ctl.shutdown();
    log_stats(&sw, "final counters");
    sw.shutdown();
    info!("stopped");
    Ok(ExitCode::SUCCESS)
}

/// The servers beside the datapath: the control API, and the metrics endpoint if asked for.
struct Servers {
    ctl: CtlServer,
    metrics: Option<MetricsServer>,
}

/// Opens every uplink, adds every port (from the configuration or the state file), saves the
/// state, then starts the control server and the metrics endpoint. On error, what was started
/// is left for the caller's `shutdown`.
fn start(sw: &Arc<Switch>, cfg: &Config, plan: Plan) -> anyhow::Result<Servers> {
    // Uplinks first: one that cannot open stops the start before any VM socket exists.
    for up in &cfg.uplinks {
        start_uplink(sw, up)?;
    }
    plan.start_ports(sw)?;
    plan.keep(sw)?;
    let path = match &cfg.ctl {
        Some(path) => path.clone(),
        None => default_ctl()?,
    };
    let ctl = CtlServer::start(&path, sw.clone(), cfg.uplinks.clone())
        .context("cannot start the control API")?;
    let metrics = match cfg.metrics {
        Some(addr) => Some(MetricsServer::start(addr, sw.clone())?),
        None => None,
    };
    Ok(Servers { ctl, metrics })
}

/// The default control socket, with its directory created (mode 0755) if missing, as a
/// service manager's runtime directory would be.
fn default_ctl() -> anyhow::Result<PathBuf> {
    use std::os::unix::fs::DirBuilderExt;
    let path = PathBuf::from(DEFAULT_CTL);
    if let Some(dir) = path.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(dir)
            .with_context(|| {
                format!(
                    "cannot create {} for the default control socket; run as root, or name \
                     another socket with --ctl PATH, {CTL_ENV} or [switch] ctl",
                    dir.display()
                )
            })?;
    }
    Ok(path)
}

/// Opens the transport of `up` and adds it to the switch.
fn start_uplink(sw: &Switch, up: &UplinkConfig) -> anyhow::Result<()> {
    let name = &up.spec.name;
    let io = uplink::open(up).context("an uplink could not start")?;
    sw.add_uplink(up.spec.clone(), io)
        .with_context(|| format!("cannot add uplink {name:?}"))?;
    info!(
        "uplink {name}: {}, channels {}, mtu {}, reflective relay {}",
        transport_text(&up.transport),
        vswitch::config::channel_ranges(&up.spec.channels),
        up.mtu,
        if up.spec.reflective_relay {
            "on"
        } else {
            "off"
        }
    );
    Ok(())
}

fn init_logging(level: Option<LevelFilter>) {
    let mut b = env_logger::Builder::new();
    match level {
        Some(l) => {
            b.filter_level(l);
        }
        None => match std::env::var("RUST_LOG") {
            Ok(spec) if !spec.trim().is_empty() => {
                b.parse_filters(&spec);
            }
            _ => {
                b.filter_level(LevelFilter::Info);
            }
        },
    }
    b.format_timestamp_millis();
    let _ = b.try_init();
}

fn log_stats(sw: &Switch, what: &str) {
    let lines = sw.stats().log_lines();
    info!("{what}: {} line(s)", lines.len());
    for line in lines {
        info!("{line}");
    }
}
