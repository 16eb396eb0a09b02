//! Packet capture of one port into a pcap file (`vswitch ctl capture start PORT --file PATH`),
//! like `ovs-tcpdump` or VPP's `pcap trace`.
//!
//! The datapath never waits for it: a port's [`TapPoint`] is one relaxed load per batch while no
//! capture runs; while one runs, the batch's frames are copied (once per batch under one lock)
//! into slots allocated when the capture started ([`pool`]) and a writer thread ([`writer`])
//! empties them into the file every few milliseconds. When no slot is free the frame is counted
//! as not captured, never delayed.
//!
//! Directions are the port's, as the switch sees it: `rx` = frames the switch received from the
//! port (what the guest or the wire sent, before any check), `tx` = frames the switch sent to it
//! (frames the delivery check admitted to the port; one then dropped for want of RX buffers is
//! in the capture too, and counted `no_rx_buffer`). Every captured frame carries its channel as
//! an 802.1ad S-tag (TPID 0x88a8, VID = channel) inserted after the MAC addresses, so
//! `tcpdump -e` prints `ethertype 802.1Q-QinQ (0x88a8), vlan <channel>`; guests never see that
//! tag, it exists only in the capture.

mod pool;
mod writer;

use std::fs::{File, OpenOptions};
use std::io::BufWriter;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwapOption;
use pcap_file::pcap::{PcapHeader, PcapWriter};
use pcap_file::DataLink;
use serde::Serialize;
use vswitch_channels::ChannelId;
use vswitch_vhost::FrameBatch;

use pool::Pool;

/// Default snap length: whole frames.
pub const DEFAULT_SNAPLEN: u32 = 65535;
/// Longest frame stored whole (a 9000-byte MTU frame with its Ethernet header and the S-tag);
/// longer frames are cut there, their original length kept in the record.
const MAX_SLOT: usize = 9000 + 18 + 4;
/// The snap length written in the file's header (tcpdump's `MAXIMUM_SNAPLEN`).
const FILE_SNAPLEN: u32 = 262_144;
/// The S-tag's TPID.
const TPID_8021AD: [u8; 2] = [0x88, 0xa8];

/// Which frames of a port are captured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// Frames the switch received from the port.
    Rx,
    /// Frames the switch sent to the port.
    Tx,
    /// Both.
    Both,
}

impl Direction {
    fn covers(self, d: Direction) -> bool {
        self == Direction::Both || self == d
    }
}

impl FromStr for Direction {
    type Err = CaptureError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "rx" => Ok(Direction::Rx),
            "tx" => Ok(Direction::Tx),
            "both" => Ok(Direction::Both),
            other => Err(CaptureError::BadDirection(other.chars().take(32).collect())),
        }
    }
}

/// What to capture, where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaptureOptions {
    /// The pcap file: created by the switch, never overwritten.
    pub file: PathBuf,
    /// Which frames.
    pub direction: Direction,
    /// Stop after this many frames.
    pub count: Option<u64>,
    /// Bytes kept of each frame (S-tag included).
    pub snaplen: u32,
}

/// Why a capture could not start, or failed.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    /// The file exists.
    #[error("capture file {0} exists: give a new file name (captures never overwrite a file)")]
    Exists(PathBuf),
    /// The file could not be created.
    #[error("cannot create capture file {0}: {1}")]
    Create(PathBuf, #[source] std::io::Error),
    /// Writing failed (disk full...).
    #[error("writing the capture failed: {0}")]
    Write(String),
    /// A capture of the port runs already.
    #[error("a capture of port {0:?} is running: stop it first (capture stop {0})")]
    Running(String),
    /// No capture of the port.
    #[error("no capture of port {0:?} is running (capture start {0} --file PATH)")]
    NotRunning(String),
    /// Not rx, tx or both.
    #[error("direction {0:?}: use rx, tx or both")]
    BadDirection(String),
    /// Snap length out of range.
    #[error("snaplen {0}: use 64..=65535")]
    BadSnaplen(u32),
    /// No writer thread.
    #[error("cannot start the capture's writer thread: {0}")]
    Thread(#[source] std::io::Error),
}

/// A capture in progress: its slots and its counts.
pub(crate) struct Tap {
    direction: Direction,
    /// Bytes kept of each frame (slot length).
    snap: usize,
    pool: Pool,
    /// Set by `stop`: the writer empties the slots and closes the file.
    stop: AtomicBool,
    /// Set when the count is reached or writing failed: nothing more is captured.
    done: AtomicBool,
}

impl Tap {
    fn finished(&self) -> bool {
        self.done.load(Ordering::Acquire)
    }

    fn halt(&self) {
        self.done.store(true, Ordering::Release);
    }

    /// Copies the frames `picks` of `batch` (frame `i` on channel `channel(i)`) into free slots.
    fn record(
        &self,
        batch: &FrameBatch<'_>,
        picks: impl Iterator<Item = usize>,
        channel: impl Fn(usize) -> ChannelId,
    ) {
        if self.finished() {
            return;
        }
        let ts = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let mut slots = self.pool.lock();
        for i in picks {
            if slots.remaining == 0 {
                self.halt();
                break;
            }
            let Some(mut slot) = slots.free.pop() else {
                slots.not_captured += 1;
                continue;
            };
            let f = batch.frame(i);
            let keep = self.snap.min(slot.data.len());
            let n = f.copy_to(&mut slot.data[4.min(keep)..keep]);
            // The S-tag after the MAC addresses: move them 4 bytes forward.
            if n >= 12 {
                slot.data.copy_within(4..16, 0);
                slot.data[12..14].copy_from_slice(&TPID_8021AD);
                slot.data[14..16].copy_from_slice(&channel(i).get().to_be_bytes());
            }
            slot.len = (n + 4).min(keep);
            slot.orig_len = u32::try_from(f.len() + 4).unwrap_or(u32::MAX);
            slot.ts = ts;
            slots.full.push_back(slot);
            slots.captured += 1;
            slots.remaining = slots.remaining.saturating_sub(1);
        }
    }
}

/// Where a port's frames are tapped: one per port, in its entry.
#[derive(Default)]
pub struct TapPoint {
    on: AtomicBool,
    tap: ArcSwapOption<Tap>,
}

impl TapPoint {
    /// Captures the frames `picks` of `batch` going in `dir` (see the module doc), if a capture
    /// of this port runs for that direction. One relaxed load when none runs.
    #[inline]
    pub fn capture(
        &self,
        dir: Direction,
        batch: &FrameBatch<'_>,
        picks: impl Iterator<Item = usize>,
        channel: impl Fn(usize) -> ChannelId,
    ) {
        if !self.on.load(Ordering::Relaxed) {
            return;
        }
        self.capture_running(dir, batch, picks, channel);
    }

    #[cold]
    fn capture_running(
        &self,
        dir: Direction,
        batch: &FrameBatch<'_>,
        picks: impl Iterator<Item = usize>,
        channel: impl Fn(usize) -> ChannelId,
    ) {
        let guard = self.tap.load();
        if let Some(tap) = guard.as_ref() {
            if tap.direction.covers(dir) {
                tap.record(batch, picks, channel);
            }
        }
    }

    fn attach(&self, tap: Arc<Tap>) {
        self.tap.store(Some(tap));
        self.on.store(true, Ordering::Release);
    }

    fn detach(&self) {
        self.on.store(false, Ordering::Release);
        self.tap.store(None);
    }
}

/// A running capture (control plane).
pub struct Capture {
    tap: Arc<Tap>,
    point: Arc<TapPoint>,
    file: PathBuf,
    writer: Option<JoinHandle<Result<u64, CaptureError>>>,
}

/// A capture's counts.
#[derive(Debug, Clone, Serialize)]
pub struct CaptureStatus {
    /// The port.
    pub port: String,
    /// The file.
    pub file: String,
    /// Which frames.
    pub direction: Direction,
    /// Frames captured so far.
    pub captured: u64,
    /// Frames not captured: no free slot (the writer fell behind).
    pub not_captured: u64,
    /// Still capturing (false once its count is reached).
    pub running: bool,
}

impl Capture {
    /// Starts capturing at `point` into a new file.
    pub fn start(point: Arc<TapPoint>, opts: &CaptureOptions) -> Result<Capture, CaptureError> {
        if !(64..=65535).contains(&opts.snaplen) {
            return Err(CaptureError::BadSnaplen(opts.snaplen));
        }
        let file = create(&opts.file)?;
        // The file's snap length is tcpdump's largest, whatever the capture's: some readers
        // (pcap-file among them) refuse a record whose original length exceeds the file's snap
        // length, which a cut frame's does. Frames are cut at `opts.snaplen` all the same.
        let header = PcapHeader {
            snaplen: FILE_SNAPLEN,
            datalink: DataLink::ETHERNET,
            ..PcapHeader::default()
        };
        let out = PcapWriter::with_header(BufWriter::with_capacity(1 << 20, file), header)
            .map_err(|e| CaptureError::Write(e.to_string()))?;
        let snap = (opts.snaplen as usize).min(MAX_SLOT);
        let pool = Pool::new(snap);
        pool.lock().remaining = opts.count.unwrap_or(u64::MAX);
        let tap = Arc::new(Tap {
            direction: opts.direction,
            snap,
            pool,
            stop: AtomicBool::new(false),
            done: AtomicBool::new(false),
        });
        let t = Arc::clone(&tap);
        let writer = std::thread::Builder::new()
            .name("capture".into())
            .spawn(move || writer::run(t, out).map(|w| w.frames))
            .map_err(CaptureError::Thread)?;
        point.attach(Arc::clone(&tap));
        Ok(Capture {
            tap,
            point,
            file: opts.file.clone(),
            writer: Some(writer),
        })
    }

    /// Its counts now.
    pub fn status(&self, port: &str) -> CaptureStatus {
        let slots = self.tap.pool.lock();
        CaptureStatus {
            port: port.to_owned(),
            file: self.file.display().to_string(),
            direction: self.tap.direction,
            captured: slots.captured,
            not_captured: slots.not_captured,
            running: !self.tap.finished(),
        }
    }

    /// Stops capturing, writes what was captured and closes the file; returns the final counts.
    pub fn stop(mut self, port: &str) -> Result<CaptureStatus, CaptureError> {
        self.point.detach();
        self.tap.halt();
        self.tap.stop.store(true, Ordering::Release);
        let written = match self.writer.take().map(|w| w.join()) {
            Some(Ok(r)) => r,
            Some(Err(_)) => Err(CaptureError::Write("the writer thread panicked".into())),
            None => Ok(0),
        };
        let mut status = self.status(port);
        status.running = false;
        written.map(|_| status)
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        self.point.detach();
        self.tap.halt();
        self.tap.stop.store(true, Ordering::Release);
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
    }
}

/// Creates the capture file: never an existing file, never through a symlink, owner-only.
fn create(path: &Path) -> Result<File, CaptureError> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => CaptureError::Exists(path.to_path_buf()),
            _ => CaptureError::Create(path.to_path_buf(), e),
        })
}
