//! State that survives a restart: the ports, channels and policy set through the control API
//! are saved to a state file (`--state PATH`, `[switch] state`) before the API acknowledges
//! the change, and restored when the switch starts again. docs/state.md is the operator's
//! view; in short:
//!
//! - **No state file yet**: the switch starts from the configuration and writes one.
//! - **A state file written over the same configuration** (its `config` record equals the
//!   configuration's ports and policy now): the switch starts from the state file; the
//!   configuration's ports and policy are not applied.
//! - **The configuration's ports or policy were edited since**: the edit is the newer intent;
//!   the switch starts from the configuration and keeps the old file as `PATH.replaced`.
//! - **A state file that cannot be read, is not a state file, or has an invalid port or
//!   policy**: the switch does not start (exit 2) and says why; it never falls back to the
//!   configuration silently, which could put a VM back on a channel the manager took it off.
//!
//! Writes ([`record`]) are serialized: one control change at a time is applied and the whole
//! state saved (atomically, `file::write_atomic`) before the next one starts, so the file
//! always holds the state after the last acknowledged change, or after the one in flight.

mod error;
mod file;
mod format;
#[cfg(test)]
mod tests;

use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};

use log::{error, info, warn};
use vswitch_channels::Policy;

use crate::config::Config;
use crate::Switch;
pub use error::StateError;
use format::{Contents, Restore};

/// Where the ports and policy a switch starts with come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// No state file is kept (no `--state`).
    Config,
    /// A state file is kept but there is none yet.
    NoStateFile,
    /// The state file, written over the same configuration.
    StateFile,
    /// The configuration, edited since the state file was written.
    ConfigChanged,
}

/// What the switch starts with, and the journal that keeps the state file afterwards.
pub struct Plan {
    ports: Vec<Restore>,
    policy: Policy,
    source: Source,
    journal: Option<Journal>,
}

impl Plan {
    /// Combines the configuration with the state file, if one is kept (see the module doc).
    /// Reads the file and checks it; starts nothing.
    pub fn new(cfg: &Config) -> Result<Plan, StateError> {
        let from_config = |source, journal| Plan {
            ports: cfg
                .ports
                .iter()
                .map(|s| Restore {
                    spec: s.clone(),
                    channel: Some(s.channel),
                })
                .collect(),
            policy: cfg.policy.clone(),
            source,
            journal,
        };
        let Some(path) = &cfg.state else {
            return Ok(from_config(Source::Config, None));
        };
        file::check_path(path)?;
        file::remove_leftover(path);
        let journal = Journal {
            path: path.clone(),
            config: Contents::of_config(&cfg.ports, &cfg.policy),
            lock: Mutex::new(()),
        };
        let Some(bytes) = file::read(path)? else {
            return Ok(from_config(Source::NoStateFile, Some(journal)));
        };
        let parsed = format::parse(path, &bytes)?;
        if parsed.config != format::to_value(&journal.config) {
            return Ok(from_config(Source::ConfigChanged, Some(journal)));
        }
        let saved = parsed.check(path, cfg.ctl.as_deref(), &cfg.uplinks)?;
        Ok(Plan {
            ports: saved.ports,
            policy: saved.policy,
            source: Source::StateFile,
            journal: Some(journal),
        })
    }

    /// The policy to start with.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// Logs where the ports and policy come from, and adds the ports.
    pub fn start_ports(&self, sw: &Switch) -> Result<(), StateError> {
        let path = self.journal.as_ref().map(|j| j.path.as_path());
        match (self.source, path) {
            (Source::StateFile, Some(p)) => info!(
                "restoring {} port(s), their channels and the policy from state file {} (the \
                 configuration's ports and policy are unchanged since it was written)",
                self.ports.len(),
                p.display()
            ),
            (Source::NoStateFile, Some(p)) => info!(
                "no state file at {} yet: starting from the configuration; changes made \
                 through the control API will be saved there",
                p.display()
            ),
            (Source::ConfigChanged, Some(p)) => warn!(
                "the configuration's ports or policy changed since state file {} was written: \
                 starting from the configuration; the changes made through the control API \
                 before are not applied (the old file is kept as {})",
                p.display(),
                file::replaced_path(p).display()
            ),
            _ => {}
        }
        let restored = self.source == Source::StateFile;
        for r in &self.ports {
            let name = &r.spec.name;
            let added = match r.channel {
                Some(c) => {
                    let mut spec = r.spec.clone();
                    spec.channel = c;
                    sw.add_port(spec)
                }
                None => sw.add_port_unassociated(r.spec.clone()),
            };
            added.map_err(|source| StateError::StartPort {
                name: name.clone(),
                restored,
                source,
            })?;
        }
        Ok(())
    }

    /// Writes the state the switch now runs and, from now on, saves every control change
    /// ([`record`]). Call once the ports are up and before the control API starts.
    pub fn keep(self, sw: &Switch) -> Result<(), StateError> {
        let Some(journal) = self.journal else {
            return Ok(());
        };
        if self.source == Source::ConfigChanged {
            match file::move_aside(&journal.path) {
                Ok(to) => info!("old state file kept as {}", to.display()),
                Err(source) => {
                    return Err(StateError::Write {
                        path: journal.path.clone(),
                        source,
                    })
                }
            }
        }
        journal.save(sw)?;
        if JOURNAL.set(journal).is_err() {
            warn!("a state file is already kept by this process; this one is not");
        }
        Ok(())
    }
}

/// The process's state file, once [`Plan::keep`] ran. One per process: the control server's
/// client threads reach the handler without a context to carry it in.
static JOURNAL: OnceLock<Journal> = OnceLock::new();

/// Keeps the state file.
struct Journal {
    path: PathBuf,
    /// The configuration's ports and policy, recorded in every version of the file.
    config: Contents,
    /// Held while a change is applied and saved: one writer at a time.
    lock: Mutex<()>,
}

impl Journal {
    /// Writes what `sw` runs now.
    fn save(&self, sw: &Switch) -> Result<(), StateError> {
        let bytes = format::render(&Contents::of_switch(sw), &self.config);
        file::write_atomic(&self.path, &bytes).map_err(|source| StateError::Write {
            path: self.path.clone(),
            source,
        })
    }

    fn record<T>(
        &self,
        sw: &Switch,
        change: impl FnOnce() -> Result<T, String>,
    ) -> Result<T, String> {
        let _one_at_a_time = match self.lock.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        let out = change()?;
        if let Err(e) = self.save(sw) {
            error!("{e}");
            return Err(format!(
                "the change was made but could not be saved, so a restart would undo it: {e}; \
                 the next change that succeeds saves the whole state"
            ));
        }
        Ok(out)
    }
}

/// Runs one control-API change and, when a state file is kept, saves the whole state before
/// returning, so that the caller acknowledges only what is durable. Changes are serialized.
/// A change that fails is not saved; one that is made but cannot be saved is reported as an
/// error (it is in effect until the switch restarts).
pub fn record<T>(sw: &Switch, change: impl FnOnce() -> Result<T, String>) -> Result<T, String> {
    match JOURNAL.get() {
        Some(j) => j.record(sw, change),
        None => change(),
    }
}
