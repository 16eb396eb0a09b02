//! Captures of ports (`ctl capture start|stop|list`): at most one per port.

use std::sync::Arc;

use log::info;

use super::Switch;
use crate::capture::{Capture, CaptureError, CaptureOptions, CaptureStatus};
use crate::error::SwitchError;

impl Switch {
    /// Starts capturing port (or uplink) `name` into a new pcap file.
    pub fn capture_start(&self, name: &str, opts: &CaptureOptions) -> Result<(), SwitchError> {
        let mut captures = self.lock_captures();
        if captures.contains_key(name) {
            return Err(CaptureError::Running(name.to_owned()).into());
        }
        let point = {
            let table = self.core.ports.load();
            let id = table
                .find(name)
                .ok_or_else(|| SwitchError::NoSuchPort(name.to_owned()))?;
            let entry = table
                .get(id)
                .ok_or_else(|| SwitchError::NoSuchPort(name.to_owned()))?;
            Arc::clone(&entry.tap)
        };
        let capture = Capture::start(point, opts)?;
        captures.insert(name.to_owned(), capture);
        info!(
            "capture of {name} ({:?}) into {} started",
            opts.direction,
            opts.file.display()
        );
        Ok(())
    }

    /// Stops the capture of `name`: every frame captured is in the file when this returns.
    pub fn capture_stop(&self, name: &str) -> Result<CaptureStatus, SwitchError> {
        let capture = self
            .lock_captures()
            .remove(name)
            .ok_or_else(|| CaptureError::NotRunning(name.to_owned()))?;
        let status = capture.stop(name)?;
        info!(
            "capture of {name} stopped: {} frames in {}, {} not captured",
            status.captured, status.file, status.not_captured
        );
        Ok(status)
    }

    /// The captures and their counts.
    pub fn captures(&self) -> Vec<CaptureStatus> {
        let mut list: Vec<CaptureStatus> = self
            .lock_captures()
            .iter()
            .map(|(name, c)| c.status(name))
            .collect();
        list.sort_by(|a, b| a.port.cmp(&b.port));
        list
    }

    pub(super) fn lock_captures(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, Capture>> {
        self.captures.lock().unwrap_or_else(|e| e.into_inner())
    }
}
