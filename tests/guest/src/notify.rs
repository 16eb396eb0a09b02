//! Notifications: call counts, kicks, EVENT_IDX and flag-based interrupt suppression, and
//! reconnecting to a restarted backend.

use crate::error::GuestError;
use crate::frontend;
use crate::guest::{TestGuest, RX_QUEUE, TX_QUEUE};
use crate::vring::DriverQueue;

use vhost::vhost_user::Frontend;

impl TestGuest {
    fn queue(&mut self, queue: usize) -> Option<&mut DriverQueue> {
        match queue {
            RX_QUEUE => Some(&mut self.rx.q),
            TX_QUEUE => Some(&mut self.tx.q),
            _ => None,
        }
    }

    /// How many call-eventfd signals the backend sent on `queue` (0 = RX, 1 = TX) so far.
    /// Signals consumed while `recv`/`wait_tx_used` waited are included.
    pub fn calls_received(&mut self, queue: usize) -> u64 {
        self.queue(queue).map_or(0, |q| q.calls())
    }

    /// How many kicks the guest sent on `queue`.
    pub fn kicks_sent(&mut self, queue: usize) -> u64 {
        self.queue(queue).map_or(0, |q| q.kicks())
    }

    /// Kicks `queue` unconditionally.
    pub fn kick(&mut self, queue: usize) -> Result<(), GuestError> {
        match self.queue(queue) {
            Some(q) => q.kick_now(),
            None => Err(GuestError::Config(format!("no queue {queue}"))),
        }
    }

    /// Pins the RX `used_event` (EVENT_IDX): the device should signal only when its used index
    /// passes `idx`. Stays pinned until [`TestGuest::auto_used_event`].
    pub fn set_rx_used_event(&mut self, idx: u16) -> Result<(), GuestError> {
        self.rx.q.pin_used_event(&self.mem, Some(idx))
    }

    /// Pins the TX `used_event` (EVENT_IDX).
    pub fn set_tx_used_event(&mut self, idx: u16) -> Result<(), GuestError> {
        self.tx.q.pin_used_event(&self.mem, Some(idx))
    }

    /// Returns `queue` to the automatic `used_event` (re-armed to the next entry on consume).
    pub fn auto_used_event(&mut self, queue: usize) -> Result<(), GuestError> {
        let mem = &self.mem;
        match queue {
            RX_QUEUE => self.rx.q.pin_used_event(mem, None),
            TX_QUEUE => self.tx.q.pin_used_event(mem, None),
            _ => Err(GuestError::Config(format!("no queue {queue}"))),
        }
    }

    /// Next used index the guest will consume on `queue` (useful to compute `used_event`s).
    pub fn last_used_idx(&self, queue: usize) -> u16 {
        if queue == RX_QUEUE {
            self.rx.q.last_used()
        } else {
            self.tx.q.last_used()
        }
    }

    /// Sets VRING_AVAIL_F_NO_INTERRUPT on `queue` (suppression without EVENT_IDX).
    pub fn set_no_interrupt(&mut self, queue: usize, on: bool) -> Result<(), GuestError> {
        let mem = &self.mem;
        match queue {
            RX_QUEUE => self.rx.q.set_no_interrupt(mem, on),
            TX_QUEUE => self.tx.q.set_no_interrupt(mem, on),
            _ => Err(GuestError::Config(format!("no queue {queue}"))),
        }
    }

    /// Reconnects after the backend went away (or to force a fresh session): a new socket in
    /// the same role (connect again, or accept on the kept listener), the full handshake again,
    /// and the rings resume where the device's used index stands, keeping posted RX buffers and
    /// queued TX chains. Both queues are kicked afterwards.
    pub fn reconnect(&mut self) -> Result<(), GuestError> {
        let timeout = self.cfg.connect_timeout;
        let sock = match &self.listener {
            Some(l) => frontend::accept_one(l, &self.path, timeout)?,
            None => frontend::connect_socket(&self.path, timeout)?,
        };
        let mut raw = sock.try_clone().map_err(|e| GuestError::Connect {
            path: self.path.clone(),
            source: e,
        })?;
        self.fe = Frontend::from_stream(sock, self.cfg.virtqueues());
        self.sock = raw.try_clone().map_err(|e| GuestError::Connect {
            path: self.path.clone(),
            source: e,
        })?;
        let neg = frontend::negotiate(
            &mut self.fe,
            &mut raw,
            self.cfg.want_features,
            self.cfg.want_protocol_features,
        )?;
        if neg.features != self.neg.features {
            return Err(GuestError::Unsupported(format!(
                "after reconnect the negotiated features changed from {:#x} to {:#x}",
                self.neg.features, neg.features
            )));
        }
        self.neg = neg;
        self.rx.q.calls();
        self.tx.q.calls();
        self.start_device()?;
        self.rx.q.kick_now()?;
        self.tx.q.kick_now()
    }

    /// Stops and sets up one queue again on the same connection, as a driver that resets its
    /// ring does: GET_VRING_BASE, then SET_VRING_NUM / BASE (the device's used index) / ADDR /
    /// KICK / CALL and SET_VRING_ENABLE. Returns the base the backend reported.
    pub fn restart_queue(&mut self, queue: usize) -> Result<u32, GuestError> {
        use vhost::VhostBackend;
        let vq = self.cfg.first_virtqueue() + queue;
        let stopped = self
            .fe
            .get_vring_base(vq)
            .map_err(GuestError::protocol("GET_VRING_BASE"))?;
        let q = match queue {
            RX_QUEUE => &self.rx.q,
            TX_QUEUE => &self.tx.q,
            _ => return Err(GuestError::Config(format!("no queue {queue}"))),
        };
        let start = frontend::QueueStart {
            index: vq,
            ring: q.ring,
            base: q.device_used_idx(&self.mem)?,
            kick: &q.kick,
            call: self.cfg.call_fd.then_some(&q.call),
        };
        frontend::start_queue(&mut self.fe, &self.mem, self.neg.protocol, &start)?;
        frontend::enable_queue(&mut self.fe, self.neg.features, self.neg.protocol, vq, true)?;
        Ok(stopped)
    }

    /// Closes the socket (dropping the guest does the same).
    pub fn disconnect(self) {
        drop(self);
    }
}

impl Drop for TestGuest {
    /// Removes the socket file the guest created in `listen` mode (the socket itself closes
    /// when the frontend drops).
    fn drop(&mut self) {
        if self.listener.is_some() {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}
