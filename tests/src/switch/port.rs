//! One `--port` of the switch: its name, socket, channel, MAC and role.

use anyhow::{bail, Context, Result};
use std::path::PathBuf;

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
    /// Queue pairs (`queues=`, written when more than one).
    pub queues: u16,
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
            queues: 1,
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

    /// Sets the queue pairs offered (`queues=`).
    pub fn queues(mut self, n: u16) -> Self {
        self.queues = n;
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
        if self.queues > 1 {
            s.push_str(&format!(",queues={}", self.queues));
        }
        Ok(s)
    }
}
