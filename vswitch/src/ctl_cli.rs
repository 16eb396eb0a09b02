//! `vswitch ctl`: the control API's client (a module of the binary). Answers print as aligned
//! tables ([`vswitch::ctl::show`]) or, with `--json`, as the API's JSON result, pretty-printed
//! (the form scripts parse). `metrics` prints the Prometheus text (with `--json`, as a JSON
//! string).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use serde_json::Value;

use vswitch::config::{ctl_from_file, RawNumber, CTL_ENV, DEFAULT_CTL};
use vswitch::ctl::proto::Request;
use vswitch::ctl::{self, show};

use super::EXIT_USAGE;

#[derive(Args, Debug)]
pub struct CtlArgs {
    /// The running switch's control socket. Default: VSWITCH_CTL, else [switch] ctl of
    /// --config FILE, else /run/vswitch/ctl.sock.
    #[arg(long, value_name = "PATH", global = true)]
    ctl: Option<PathBuf>,
    /// Read the control socket's path from this configuration file's [switch] ctl.
    #[arg(long, value_name = "FILE", global = true)]
    config: Option<PathBuf>,
    /// Print the answer as JSON (for scripts) instead of a table.
    #[arg(long, global = true)]
    json: bool,
    /// Seconds to wait for the answer.
    #[arg(long, value_name = "SECS", default_value_t = 30, global = true)]
    timeout: u64,
    #[command(subcommand)]
    command: CtlCommand,
}

#[derive(Subcommand, Debug)]
enum CtlCommand {
    /// The ports: channel, mode, MAC, state, frames received (RX) and delivered (TX), drops;
    /// then the uplinks.
    Ports,
    /// The uplinks: transport, channels carried, counters.
    Uplinks,
    /// Counters per port, per uplink and per channel, and drops by reason.
    Stats,
    /// The learned (and static) addresses.
    Fdb,
    /// The channel table: which ports are on which channel.
    Channels,
    /// Counters in the Prometheus text format.
    Metrics,
    /// Show the delivery policy.
    Policy,
    /// Replace the policy's extra directed pairs: FROM:TO lets frames of channel FROM reach
    /// VMs on channel TO. No pairs: isolation only.
    SetPolicy {
        /// Pairs such as 100:200.
        #[arg(value_name = "FROM:TO")]
        pairs: Vec<String>,
    },
    /// Add a port: NAME,socket=PATH,channel=SVID[,...] as for `run --port`.
    AddPort {
        /// The port spec.
        spec: String,
        /// The port is the incoming side of a live migration of this port's guest (same MAC,
        /// same channel; the MAC moves to it when it announces the guest).
        #[arg(long, value_name = "PORT")]
        migration_of: Option<String>,
    },
    /// Remove a port.
    RemovePort {
        /// Port name.
        name: String,
    },
    /// Move a port's VM to channel SVID.
    Associate {
        /// Port name.
        name: String,
        /// The channel's S-VID (1..=4094).
        svid: String,
    },
    /// Take a port's VM off its channel.
    Disassociate {
        /// Port name.
        name: String,
    },
    /// Capture a port's frames into a pcap file (read with tcpdump -r, Wireshark).
    #[command(subcommand)]
    Capture(CaptureCommand),
    /// Limit what a VM may send (frames beyond are dropped and counted `policed`); with no
    /// limit given, remove its limits.
    SetRate {
        /// Port name.
        name: String,
        /// Mbit/s.
        #[arg(long, value_name = "MBIT")]
        rate: Option<String>,
        /// Bucket depth of --rate, KB (default: 10 ms at the rate, at least 16 KiB).
        #[arg(long, value_name = "KB")]
        burst: Option<String>,
        /// Frames per second.
        #[arg(long, value_name = "N")]
        pps: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
enum CaptureCommand {
    /// Start capturing PORT into a new file: each frame with its channel as an 802.1ad S-tag.
    Start {
        /// Port or uplink name.
        port: String,
        /// The pcap file to create (never overwritten).
        #[arg(long, value_name = "PATH")]
        file: PathBuf,
        /// rx: frames the switch received from the port; tx: frames it sent to the port.
        #[arg(long, default_value = "both", value_parser = ["rx", "tx", "both"])]
        direction: String,
        /// Stop after N frames.
        #[arg(long, value_name = "N")]
        count: Option<u64>,
        /// Bytes kept per frame (64..=65535).
        #[arg(long, value_name = "N")]
        snaplen: Option<u32>,
    },
    /// Stop capturing PORT: the file is complete when this returns.
    Stop {
        /// Port or uplink name.
        port: String,
    },
    /// The running captures and their counts.
    List,
}

/// Runs one `vswitch ctl` command.
pub fn run(args: CtlArgs) -> anyhow::Result<ExitCode> {
    let req = match &args.command {
        CtlCommand::Ports | CtlCommand::Uplinks => Request::Ports {},
        CtlCommand::Stats => Request::Stats {},
        CtlCommand::Fdb => Request::Fdb {},
        CtlCommand::Channels => Request::Channels {},
        CtlCommand::Metrics => Request::Metrics {},
        CtlCommand::Policy => Request::Policy {},
        CtlCommand::SetPolicy { pairs } => match parse_pairs(pairs) {
            Ok(allow) => Request::SetPolicy { allow },
            Err(e) => {
                eprintln!("vswitch: error: {e}");
                return Ok(ExitCode::from(EXIT_USAGE));
            }
        },
        CtlCommand::AddPort { spec, migration_of } => Request::AddPort {
            spec: Value::String(spec.clone()),
            migration_of: migration_of.clone(),
        },
        CtlCommand::RemovePort { name } => Request::RemovePort { name: name.clone() },
        CtlCommand::Associate { name, svid } => Request::Associate {
            name: name.clone(),
            channel: Value::String(svid.clone()),
        },
        CtlCommand::Disassociate { name } => Request::Disassociate { name: name.clone() },
        CtlCommand::Capture(CaptureCommand::Start {
            port,
            file,
            direction,
            count,
            snaplen,
        }) => Request::CaptureStart {
            name: port.clone(),
            // The switch resolves nothing against its own working directory.
            file: std::path::absolute(file)
                .with_context(|| format!("capture file {}", file.display()))?
                .to_string_lossy()
                .into_owned(),
            direction: Some(direction.clone()),
            count: *count,
            snaplen: *snaplen,
        },
        CtlCommand::Capture(CaptureCommand::Stop { port }) => {
            Request::CaptureStop { name: port.clone() }
        }
        CtlCommand::Capture(CaptureCommand::List) => Request::Captures {},
        CtlCommand::SetRate {
            name,
            rate,
            burst,
            pps,
        } => Request::SetRate {
            name: name.clone(),
            rate: rate.clone().map(RawNumber::Text),
            burst: burst.clone().map(RawNumber::Text),
            pps: pps.clone().map(RawNumber::Text),
        },
    };
    let path = socket_path(&args)?;
    let timeout = Duration::from_secs(args.timeout.max(1));
    let ask = |req: &Request| -> anyhow::Result<Value> {
        let resp = ctl::request(&path, req, timeout)?;
        match (resp.ok, resp.result, resp.error) {
            (true, result, _) => Ok(result.unwrap_or(Value::Null)),
            (false, _, error) => bail!("{}", error.unwrap_or_else(|| "request refused".into())),
        }
    };
    let result = ask(&req)?;
    let text = match (&args.command, args.json) {
        (CtlCommand::Metrics, false) => match &result {
            Value::String(text) => text.clone(),
            other => pretty(other)?,
        },
        (CtlCommand::Uplinks, true) => pretty(&Value::Array(
            rows(&result)
                .into_iter()
                .filter(|r| r["kind"] == "uplink")
                .collect(),
        ))?,
        (_, true) => pretty(&result)?,
        // The tables with counters ask for them too; a failure there leaves the counters out.
        (CtlCommand::Ports, false) => show::ports(&result, ask(&Request::Stats {}).ok().as_ref()),
        (CtlCommand::Uplinks, false) => {
            show::uplinks(&result, ask(&Request::Stats {}).ok().as_ref())
        }
        (CtlCommand::Stats, false) => show::stats(&result),
        (CtlCommand::Fdb, false) => show::fdb(&result),
        (CtlCommand::Channels, false) => show::channels(&result),
        (CtlCommand::Policy | CtlCommand::SetPolicy { .. }, false) => show::policy(&result),
        (CtlCommand::Capture(CaptureCommand::List), false) => show::captures(&result),
        (_, false) => show::done(&result),
    };
    print!("{text}");
    Ok(ExitCode::SUCCESS)
}

fn rows(v: &Value) -> Vec<Value> {
    v.as_array().cloned().unwrap_or_default()
}

fn pretty(v: &Value) -> anyhow::Result<String> {
    let mut text = serde_json::to_string_pretty(v).context("cannot format the answer")?;
    text.push('\n');
    Ok(text)
}

/// `--ctl`, else `VSWITCH_CTL`, else `[switch] ctl` of `--config`, else the default.
fn socket_path(args: &CtlArgs) -> anyhow::Result<PathBuf> {
    if let Some(p) = &args.ctl {
        return Ok(p.clone());
    }
    if let Some(p) = std::env::var_os(CTL_ENV).filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(p));
    }
    if let Some(file) = &args.config {
        if let Some(p) = ctl_from_file(file)? {
            return Ok(p);
        }
    }
    Ok(PathBuf::from(DEFAULT_CTL))
}

/// `100:200` pairs as `[["100", "200"]]`, sent as typed (checked by the server).
fn parse_pairs(pairs: &[String]) -> Result<Vec<Vec<RawNumber>>, String> {
    pairs
        .iter()
        .map(|p| match p.split_once(':') {
            Some((a, b)) if !a.is_empty() && !b.is_empty() => Ok(vec![
                RawNumber::Text(a.to_owned()),
                RawNumber::Text(b.to_owned()),
            ]),
            _ => Err(format!(
                "policy pair {p:?} is not FROM:TO; write e.g. 100:200 (frames of channel 100 may \
                 reach VMs on channel 200)"
            )),
        })
        .collect()
}
