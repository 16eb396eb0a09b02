//! `vsw-frontend ROLE SOCKET MAC PEER_MAC INCARNATION`: a vhost-user frontend (the in-process
//! test guest of `vswitch-testguest`) in its own process, for tests that SIGKILL frontends.
//!
//! ROLE `client` connects to SOCKET (a switch port in `mode=listen`); `server` creates SOCKET
//! and waits for the switch (`mode=connect`). Once the device is set up and RX buffers are
//! posted it prints `READY`, then until killed streams frames to PEER_MAC and answers pings
//! (see `vswitch_tests::frontend`). It dies with its parent (PR_SET_PDEATHSIG), so a failing
//! test leaves nothing behind.

use anyhow::{bail, Context, Result};
use std::io::Write;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;
use vswitch_testguest::{EthFrame, GuestConfig, TestGuest};
use vswitch_tests::frontend::{PING, PONG, STREAM};

/// Frames per stream burst, and the pause between bursts: a steady stream that keeps frames
/// in both rings without taking a core of the 2-core test machine.
const BURST: usize = 16;
const PAUSE: Duration = Duration::from_millis(2);

fn main() -> ExitCode {
    // SAFETY: prctl(PR_SET_PDEATHSIG) only sets a flag on this process.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
    }
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vsw-frontend: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn parse_mac(s: &str) -> Result<[u8; 6]> {
    let bytes: Vec<u8> = s
        .split(':')
        .map(|b| u8::from_str_radix(b, 16))
        .collect::<Result<_, _>>()
        .with_context(|| format!("bad MAC {s:?}"))?;
    bytes
        .try_into()
        .map_err(|_| anyhow::anyhow!("bad MAC {s:?}: not 6 bytes"))
}

fn run() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [role, socket, mac, peer, incarnation] = args.as_slice() else {
        bail!("usage: vsw-frontend client|server SOCKET MAC PEER_MAC INCARNATION");
    };
    let (mac, peer) = (parse_mac(mac)?, parse_mac(peer)?);
    let incarnation: u32 = incarnation.parse().context("bad INCARNATION")?;
    let cfg = GuestConfig {
        mac,
        connect_timeout: Duration::from_secs(30),
        ..GuestConfig::default()
    };
    let socket = Path::new(socket);
    let mut g = match role.as_str() {
        "client" => TestGuest::connect(socket, cfg),
        "server" => TestGuest::listen(socket, cfg),
        _ => bail!("ROLE must be client or server, not {role:?}"),
    }
    .with_context(|| format!("setting up the device on {}", socket.display()))?;
    g.post_rx(256).context("posting RX buffers")?;
    let mut out = std::io::stdout();
    writeln!(out, "READY").and_then(|_| out.flush())?;

    let filler = EthFrame::new(peer, mac, STREAM, &incarnation.to_be_bytes()).build();
    let burst = vec![filler.as_slice(); BURST];
    loop {
        while let Some(f) = g.recv(Duration::ZERO) {
            let Some(e) = EthFrame::parse(&f) else {
                continue;
            };
            if e.ethertype == PING && e.dst == mac {
                let pong = EthFrame::new(e.src, mac, PONG, &e.payload).build();
                g.send_batch(&[&pong]).context("answering a ping")?;
            }
        }
        g.send_batch(&burst).context("streaming")?;
        std::thread::sleep(PAUSE);
    }
}
