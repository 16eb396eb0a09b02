//! [`TestGuest`]: the in-process virtio-net driver on a vhost-user socket.

use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use vhost::vhost_user::Frontend;

use crate::config::GuestConfig;
use crate::error::GuestError;
use crate::features::{net_hdr_len, EVENT_IDX, INDIRECT_DESC, MAC, MRG_RXBUF, NET_HDR_V1_LEN};
use crate::frontend::{self, Negotiated, QueueStart, NET_CONFIG_LEN};
use crate::memory::GuestMem;
use crate::rx::{RxPoll, RxQueue};
use crate::tx::{TxLayout, TxQueue, INDIRECT_AREA};
use crate::vring::{DriverQueue, RingAddrs};

/// Index of the RX virtqueue.
pub const RX_QUEUE: usize = 0;
/// Index of the TX virtqueue.
pub const TX_QUEUE: usize = 1;

/// An in-process virtio-net guest driving one RX and one TX split virtqueue over a vhost-user
/// socket (queue 0 = RX, queue 1 = TX). Dropping it closes the socket.
pub struct TestGuest {
    // Declared first so the socket closes before guest memory is unmapped.
    pub(crate) fe: Frontend,
    pub(crate) sock: UnixStream,
    pub(crate) mem: GuestMem,
    pub(crate) rx: RxQueue,
    pub(crate) tx: TxQueue,
    pub(crate) neg: Negotiated,
    pub(crate) cfg: GuestConfig,
    pub(crate) listener: Option<UnixListener>,
    pub(crate) path: PathBuf,
    pub(crate) scratch_next: u64,
    pub(crate) scratch_end: u64,
    hdr_len: usize,
}

/// Where everything lives in guest memory.
struct Layout {
    rx_ring: RingAddrs,
    tx_ring: RingAddrs,
    rx_bufs: u64,
    tx_slots: u64,
    indirect: u64,
    scratch: u64,
}

fn align_up(v: u64, a: u64) -> u64 {
    v.div_ceil(a) * a
}

impl Layout {
    fn plan(cfg: &GuestConfig) -> Result<Self, GuestError> {
        let q = cfg.queue_size;
        if q == 0 || !q.is_power_of_two() || q > 32768 {
            return Err(GuestError::Config(format!(
                "queue_size {q} must be a power of two in 1..=32768"
            )));
        }
        if cfg.rx_buffer_size < NET_HDR_V1_LEN as u32 || cfg.tx_buffer_size < 64 {
            return Err(GuestError::Config(format!(
                "rx_buffer_size {} must be >= {NET_HDR_V1_LEN} and tx_buffer_size {} >= 64",
                cfg.rx_buffer_size, cfg.tx_buffer_size
            )));
        }
        let (rx_ring, end) = RingAddrs::layout(0, q);
        let (tx_ring, end) = RingAddrs::layout(end, q);
        let qn = u64::from(q);
        let rx_bufs = align_up(end, 4096);
        let tx_slots = align_up(rx_bufs + qn * u64::from(cfg.rx_buffer_size), 4096);
        let indirect = align_up(tx_slots + qn * u64::from(cfg.tx_buffer_size), 4096);
        let scratch = align_up(indirect + qn * INDIRECT_AREA, 4096);
        if scratch + 4096 > cfg.mem_size as u64 {
            return Err(GuestError::Config(format!(
                "mem_size {} too small: rings, {q} RX buffers of {} and {q} TX slots of {} need {} bytes plus scratch; raise mem_size",
                cfg.mem_size, cfg.rx_buffer_size, cfg.tx_buffer_size, scratch + 4096
            )));
        }
        Ok(Layout {
            rx_ring,
            tx_ring,
            rx_bufs,
            tx_slots,
            indirect,
            scratch,
        })
    }
}

impl TestGuest {
    /// Connects to a backend listening on `path` (retrying until `connect_timeout`) and sets the
    /// device up. No RX buffers are posted yet: call [`TestGuest::post_rx`].
    pub fn connect(path: &Path, cfg: GuestConfig) -> Result<Self, GuestError> {
        let sock = frontend::connect_socket(path, cfg.connect_timeout)?;
        Self::establish(sock, path, cfg, None)
    }

    /// Creates the socket at `path` (QEMU `server=on`) and accepts one backend connection.
    pub fn listen(path: &Path, cfg: GuestConfig) -> Result<Self, GuestError> {
        let listener = frontend::bind_listener(path)?;
        let sock = frontend::accept_one(&listener, path, cfg.connect_timeout)?;
        Self::establish(sock, path, cfg, Some(listener))
    }

    fn establish(
        sock: UnixStream,
        path: &Path,
        cfg: GuestConfig,
        listener: Option<UnixListener>,
    ) -> Result<Self, GuestError> {
        let layout = Layout::plan(&cfg)?;
        let mem = GuestMem::new(cfg.mem_size)?;
        let mut raw = sock.try_clone().map_err(|e| GuestError::Connect {
            path: path.to_path_buf(),
            source: e,
        })?;
        let mut fe = Frontend::from_stream(sock, cfg.virtqueues());
        let neg = frontend::negotiate(
            &mut fe,
            &mut raw,
            cfg.want_features,
            cfg.want_protocol_features,
        )?;
        log::debug!(
            "negotiated features {:#x} (offered {:#x}), protocol {:#x}",
            neg.features,
            neg.offered,
            neg.protocol
        );
        let event_idx = neg.features & EVENT_IDX != 0;
        let hdr_len = net_hdr_len(neg.features);
        let rxq = DriverQueue::new(&mem, layout.rx_ring, cfg.rx_base, event_idx)?;
        let txq = DriverQueue::new(&mem, layout.tx_ring, cfg.tx_base, event_idx)?;
        let rx = RxQueue::new(
            rxq,
            layout.rx_bufs,
            cfg.rx_buffer_size,
            hdr_len,
            neg.features & MRG_RXBUF != 0,
        );
        let tx = TxQueue::new(
            txq,
            layout.tx_slots,
            cfg.tx_buffer_size,
            layout.indirect,
            neg.features & INDIRECT_DESC != 0,
        );
        let mut g = TestGuest {
            fe,
            sock: raw,
            mem,
            rx,
            tx,
            neg,
            listener,
            path: path.to_path_buf(),
            scratch_next: layout.scratch,
            scratch_end: cfg.mem_size as u64,
            hdr_len,
            cfg,
        };
        g.start_device()?;
        Ok(g)
    }

    /// SET_MEM_TABLE, the per-queue messages and SET_VRING_ENABLE, using the rings' current
    /// indices as the base.
    pub(crate) fn start_device(&mut self) -> Result<(), GuestError> {
        frontend::set_mem_table(&mut self.fe, &self.mem, self.neg.protocol)?;
        let first = self.cfg.first_virtqueue();
        for (index, q) in [(RX_QUEUE, &self.rx.q), (TX_QUEUE, &self.tx.q)] {
            let start = QueueStart {
                index: first + index,
                ring: q.ring,
                base: q.device_used_idx(&self.mem)?,
                kick: &q.kick,
                call: self.cfg.call_fd.then_some(&q.call),
            };
            frontend::start_queue(&mut self.fe, &self.mem, self.neg.protocol, &start)?;
        }
        for index in [RX_QUEUE, TX_QUEUE] {
            frontend::enable_queue(
                &mut self.fe,
                self.neg.features,
                self.neg.protocol,
                first + index,
                true,
            )?;
        }
        Ok(())
    }

    /// Negotiated virtio features (offered & wanted).
    pub fn features(&self) -> u64 {
        self.neg.features
    }

    /// Features the backend offered.
    pub fn offered_features(&self) -> u64 {
        self.neg.offered
    }

    /// Negotiated vhost-user protocol features.
    pub fn protocol_features(&self) -> u64 {
        self.neg.protocol
    }

    /// The backend's GET_QUEUE_NUM answer, if MQ was negotiated.
    pub fn queue_num(&self) -> Option<u64> {
        self.neg.queue_num
    }

    /// Length of the virtio-net header in use (12 with VERSION_1 or MRG_RXBUF).
    pub fn net_hdr_len(&self) -> usize {
        self.hdr_len
    }

    /// Reads the device config space (mac, status, max_virtqueue_pairs, mtu: 12 bytes) with
    /// GET_CONFIG. Needs the CONFIG protocol feature.
    pub fn read_config(&mut self) -> Result<Vec<u8>, GuestError> {
        let c = frontend::read_config(&mut self.sock, NET_CONFIG_LEN)?;
        self.neg.config = Some(c.clone());
        Ok(c)
    }

    /// Config space read during setup, if the backend supports CONFIG.
    pub fn config(&self) -> Option<&[u8]> {
        self.neg.config.as_deref()
    }

    /// The guest's MAC: the device's (config space) when MAC was negotiated and config was
    /// readable, else `GuestConfig::mac`.
    pub fn mac(&self) -> [u8; 6] {
        match &self.neg.config {
            Some(c) if self.neg.features & MAC != 0 && c.len() >= 6 => {
                [c[0], c[1], c[2], c[3], c[4], c[5]]
            }
            _ => self.cfg.mac,
        }
    }

    /// MTU from config space, when readable.
    pub fn config_mtu(&self) -> Option<u16> {
        let c = self.neg.config.as_ref()?;
        Some(u16::from_le_bytes([*c.get(10)?, *c.get(11)?]))
    }

    /// Guest memory size in bytes.
    pub fn mem_size(&self) -> u64 {
        self.mem.size()
    }

    /// The configuration this guest was built with.
    pub fn guest_config(&self) -> &GuestConfig {
        &self.cfg
    }

    /// Posts up to `n` RX buffers of `rx_buffer_size` bytes; kicks if the device wants it.
    /// Returns how many were posted (limited by free descriptors).
    pub fn post_rx(&mut self, n: usize) -> Result<usize, GuestError> {
        self.rx.post(&self.mem, n)
    }

    /// RX buffers currently posted and not yet returned.
    pub fn rx_posted(&self) -> usize {
        self.rx.posted()
    }

    /// Sends one frame (zeroed virtio-net header in its own descriptor), kicking as the device
    /// asks (EVENT_IDX avail_event or NO_NOTIFY).
    pub fn send(&mut self, frame: &[u8]) -> Result<(), GuestError> {
        self.send_with_layout(frame, TxLayout::HeaderSeparate)
    }

    /// Sends one frame with a chosen descriptor layout.
    pub fn send_with_layout(&mut self, frame: &[u8], layout: TxLayout) -> Result<(), GuestError> {
        let hdr = [0u8; NET_HDR_V1_LEN];
        self.send_with_header(&hdr[..self.hdr_len], frame, layout)
    }

    /// Sends one frame with a caller-supplied virtio-net header (e.g. checksum/GSO fields).
    pub fn send_with_header(
        &mut self,
        hdr: &[u8],
        frame: &[u8],
        layout: TxLayout,
    ) -> Result<(), GuestError> {
        self.tx.enqueue(&self.mem, hdr, frame, layout)?;
        self.tx.q.publish(&self.mem)?;
        self.tx.q.notify(&self.mem)?;
        Ok(())
    }

    /// Sends as many of `frames` as fit in the TX ring (reclaiming completed chains first),
    /// with one publish and at most one kick. Returns how many were queued.
    pub fn send_batch(&mut self, frames: &[&[u8]]) -> Result<usize, GuestError> {
        let hdr = [0u8; NET_HDR_V1_LEN];
        self.send_batch_with_header(&hdr[..self.hdr_len], frames)
    }

    /// [`Self::send_batch`] with one caller-supplied virtio-net header for every frame (e.g. a
    /// TSO header, see [`crate::offload`]).
    pub fn send_batch_with_header(
        &mut self,
        hdr: &[u8],
        frames: &[&[u8]],
    ) -> Result<usize, GuestError> {
        // The ring areas are resolved once for the whole batch.
        let v = self.tx.q.view(&self.mem)?;
        // Fixed descriptor pairs take what they can; the rest (and any error) goes the general
        // way below.
        let mut sent = self.tx.enqueue_fixed_run(&self.mem, &v, hdr, frames);
        for f in &frames[sent..] {
            match self
                .tx
                .enqueue_in(&self.mem, &v, hdr, f, TxLayout::HeaderSeparate)
            {
                Ok(()) => sent += 1,
                Err(GuestError::TxRingFull { .. }) => break,
                Err(e) if sent == 0 => return Err(e),
                Err(e) => {
                    log::warn!("send_batch stopped after {sent} frames: {e}");
                    break;
                }
            }
        }
        if sent > 0 {
            self.tx.q.publish_in(&v);
            self.tx.q.notify_in(&v)?;
        }
        Ok(sent)
    }

    /// Consumes TX used entries and frees their descriptors; returns how many chains completed.
    pub fn reclaim_tx(&mut self) -> usize {
        self.tx.reclaim(&self.mem).unwrap_or_else(|e| {
            log::error!("reclaim_tx: {e}");
            0
        })
    }

    /// Free TX descriptors.
    pub fn tx_free(&self) -> usize {
        self.tx.free_count()
    }

    /// Waits until `n` TX chains have completed (counting from this call) or `timeout` passes.
    pub fn wait_tx_used(&mut self, n: usize, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut done = 0;
        loop {
            done += self.reclaim_tx();
            if done >= n {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            let slice = (deadline - now).min(Duration::from_millis(2));
            self.tx.q.wait_call(slice, self.cfg.call_fd);
        }
    }

    /// Next received frame without the virtio-net header (mergeable buffers reassembled), or
    /// `None` after `timeout`. Buffers it consumed are reposted.
    pub fn recv(&mut self, timeout: Duration) -> Option<Vec<u8>> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.rx.try_recv(&self.mem) {
                Ok(RxPoll::Frame(f)) => return Some(f),
                Ok(RxPoll::Skipped) => continue,
                Ok(RxPoll::Empty) => {}
                Err(e) => {
                    log::error!("recv: {e}");
                    return None;
                }
            }
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            let slice = (deadline - now).min(Duration::from_millis(2));
            self.rx.q.wait_call(slice, self.cfg.call_fd);
        }
    }

    /// Receives frames until none arrives for `quiet`.
    pub fn recv_all(&mut self, quiet: Duration) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        while let Some(f) = self.recv(quiet) {
            out.push(f);
        }
        out
    }

    /// The virtio-net header of the last frame `recv` returned (bytes 10..12 = num_buffers).
    pub fn last_rx_header(&self) -> Option<[u8; 12]> {
        self.rx.last_hdr
    }

    /// Benchmark sink: consumes all used RX entries, reposts the buffers, returns (frames,
    /// payload bytes). No allocation, at most one kick.
    pub fn rx_drain_count(&mut self) -> (u64, u64) {
        self.rx.drain_count(&self.mem).unwrap_or_else(|e| {
            log::error!("rx_drain_count: {e}");
            (0, 0)
        })
    }

    /// Used-ring entries from the device that were malformed (bogus id, oversize length,
    /// num_buffers 0...), RX and TX together. A correct backend keeps this at 0.
    pub fn device_errors(&self) -> u64 {
        self.rx.device_errors + self.tx.q.bogus_used
    }
}

// A guest can be moved into a test's worker thread.
const _: fn() = || {
    fn assert_send<T: Send>() {}
    assert_send::<TestGuest>();
};
