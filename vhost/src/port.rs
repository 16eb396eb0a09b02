//! A port: one vhost-user socket that outlives its frontends.
//!
//! `listen` role: the port creates the socket and serves one frontend at a time, accepting the
//! next one when it goes away (QEMU's default, Cloud Hypervisor's `vhost_mode=client`).
//! `connect` role: the frontend created the socket; the port connects, and reconnects with
//! backoff whenever the frontend goes away (QEMU `server=on`, Cloud Hypervisor
//! `vhost_mode=server`). Each connection gets a fresh daemon, rings and worker thread.

use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use log::{debug, info, warn};
use vhost::vhost_user::Listener;
use vhost_user_backend::{ShutdownHandle, VhostUserDaemon};
use vm_memory::GuestMemoryAtomic as Gma;
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::eventfd::EventFd;

use crate::backend::{capture_event_id, fault_event_id, NetBackend};
use crate::drain::{TxCursor, TxPass};
use crate::error::PortError;
use crate::frame::FrameBatch;
use crate::mem_table::{MemLimits, MemTableGuard};
use crate::memory::{GuestMemory, GuestMemoryAtomic};
use crate::migrate_msgs::MigrationMsgs;
use crate::queues::QueuePairSnapshot;
use crate::rx::RxQueue;
use crate::shim::ShimEndpoint;
use crate::socket::{FileId, DEFAULT_SOCKET_MODE};
use crate::stats::{PortStats, PortStatsSnapshot};
use crate::tx::TxScratch;

/// Who creates the socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SocketRole {
    /// The port creates the socket and the frontend connects.
    #[default]
    Listen,
    /// The frontend created the socket; the port connects and reconnects.
    Connect,
}

/// Most queue pairs (RX/TX) a port may offer (`PortConfig::queue_pairs`): virtqueues
/// 0..2N, pair k being RX 2k and TX 2k+1 (docs/multiqueue.md).
pub const MAX_QUEUE_PAIRS: u16 = 16;

/// How long a new connection's port thread waits for its worker thread to publish the rings
/// before serving the frontend: a hang guard (the worker does it as soon as it first runs).
const PUBLISH_WAIT: Duration = Duration::from_secs(5);

/// Static configuration of a port.
#[derive(Debug, Clone)]
pub struct PortConfig {
    /// Name, used in logs and thread names.
    pub name: String,
    /// Unix socket path.
    pub socket: PathBuf,
    /// Socket role.
    pub role: SocketRole,
    /// MAC address offered in the config space (VIRTIO_NET_F_MAC), if any.
    pub mac: Option<[u8; 6]>,
    /// MTU offered in the config space.
    pub mtu: u16,
    /// Largest ring the frontend may configure.
    pub max_queue_size: u16,
    /// Queue pairs offered (1..=[`MAX_QUEUE_PAIRS`]): with more than one, VIRTIO_NET_F_MQ
    /// (and CTRL_VQ, which the frontend serves itself) and `max_virtqueue_pairs` = N.
    pub queue_pairs: u16,
    /// Written (one `write(1)`) when the guest kicks its TX queue after
    /// [`PortHandle::arm_tx`]: the doorbell of the thread that drains this port, which then
    /// polls it ([`PortHandle::poll_tx`]). `None`: that thread polls without sleeping.
    pub tx_doorbell: Option<Arc<EventFd>>,
    /// Limits on the guest memory one frontend may map (region count, total size).
    pub mem_limits: MemLimits,
    /// Permissions of the socket the port creates (listen role), whatever the umask.
    pub socket_mode: u32,
    /// Called when the frontend asks for the guest to be announced (SEND_RARP, after a live
    /// migration). `None`: the request is acknowledged and ignored.
    pub announce: Option<Announce>,
}

/// The hook of [`PortConfig::announce`]: called on the port's relay thread with the guest's
/// MAC (as the frontend sent it: hostile); it must not block for long.
#[derive(Clone)]
pub struct Announce(pub Arc<dyn Fn([u8; 6]) + Send + Sync>);

impl std::fmt::Debug for Announce {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Announce(..)")
    }
}

impl PortConfig {
    /// A port with defaults: no MAC, MTU 1500, rings up to 32768, no TX doorbell.
    pub fn new(name: impl Into<String>, socket: impl Into<PathBuf>, role: SocketRole) -> Self {
        PortConfig {
            name: name.into(),
            socket: socket.into(),
            role,
            mac: None,
            mtu: 1500,
            max_queue_size: 32768,
            queue_pairs: 1,
            tx_doorbell: None,
            mem_limits: MemLimits::default(),
            socket_mode: DEFAULT_SOCKET_MODE,
            announce: None,
        }
    }

    /// Longest frame accepted from the guest: MTU plus Ethernet header plus two VLAN tags
    /// (a guest's own tags are payload to the switch).
    pub fn max_frame_len(&self) -> usize {
        usize::from(self.mtu) + 14 + 8
    }
}

impl PortShared {
    /// Ends the current frontend connection (the port then waits for the next one).
    pub(crate) fn end_connection(&self) {
        if let Ok(g) = self.conn.lock() {
            if let Some(h) = g.as_ref() {
                h.shutdown();
            }
        }
    }
}

pub(crate) struct PortShared {
    pub(crate) cfg: PortConfig,
    pub(crate) rx: RxQueue,
    pub(crate) tx: ArcSwapOption<TxPoller>,
    pub(crate) stats: Arc<PortStats>,
    /// Numbers the connections (see `TxCursor`): the last one given.
    conns: AtomicU64,
    stop: AtomicBool,
    connected: AtomicBool,
    conn: Mutex<Option<ShutdownHandle>>,
    /// A clone of the current frontend socket: shutting it down ends the relay at once,
    /// whatever the frontend is doing.
    frontend: Mutex<Option<UnixStream>>,
}

/// A cheap, cloneable reference to a port: its RX queue, counters and state.
#[derive(Clone)]
pub struct PortHandle(Arc<PortShared>);

impl PortHandle {
    /// The port's RX queue: deliver frames into its guest.
    pub fn rx(&self) -> &RxQueue {
        &self.0.rx
    }
    /// Port name.
    pub fn name(&self) -> &str {
        &self.0.cfg.name
    }
    /// Static configuration.
    pub fn config(&self) -> &PortConfig {
        &self.0.cfg
    }
    /// Counters.
    pub fn stats(&self) -> PortStatsSnapshot {
        self.0.stats.snapshot()
    }
    /// Counters of each queue pair the port offers (`queue_pairs` of them, pair 0 first).
    pub fn queue_stats(&self) -> Vec<QueuePairSnapshot> {
        self.0
            .stats
            .queues
            .snapshot(usize::from(self.0.cfg.queue_pairs))
    }
    /// True while a frontend is connected.
    pub fn is_connected(&self) -> bool {
        self.0.connected.load(Ordering::Acquire)
    }

    /// True while the guest's TX ring is parked as broken: its avail index jumped by more
    /// than the ring size. Counted once and logged; nothing on it is looked at until the
    /// frontend resets the ring or reconnects.
    pub fn is_tx_broken(&self) -> bool {
        self.0
            .tx
            .load()
            .as_ref()
            .is_some_and(|p| p.backend.tx_broken())
    }

    /// One pass over the guest's TX ring, if a frontend is connected: hands each batch of
    /// frames it transmitted to `each` (the frames stay in guest memory, valid during the call
    /// only), then returns the buffers to the guest. Never asks the guest to kick (see
    /// [`PortHandle::arm_tx`]).
    ///
    /// The caller is the one thread that drains this port: it owns `cursor` (this port's,
    /// kept between passes) and `scratch` (its own, for any port). A closure rather than a
    /// returned batch: the batch borrows the ring (locked) and a snapshot of guest memory, and
    /// the buffers go back to the guest right after `each` returns.
    #[inline]
    pub fn poll_tx(
        &self,
        cursor: &mut TxCursor,
        scratch: &mut TxScratch,
        mut each: impl FnMut(&FrameBatch<'_>),
    ) -> TxPass {
        match self.0.tx.load().as_ref() {
            Some(p) => {
                cursor.follow(p.backend.conn());
                p.backend.drain_tx(&p.vrings, cursor, scratch, &mut each)
            }
            None => TxPass::default(),
        }
    }

    /// Before the draining thread sleeps: asks the guest to kick its TX queues on their next
    /// frame (a kick rings [`PortConfig::tx_doorbell`]). Returns true if frames arrived
    /// meanwhile (poll again).
    pub fn arm_tx(&self, cursor: &mut TxCursor) -> bool {
        match self.0.tx.load().as_ref() {
            Some(p) => {
                cursor.follow(p.backend.conn());
                let mut pending = false;
                for (k, vring) in p.vrings.iter().enumerate() {
                    pending |= p.backend.arm_tx(vring, cursor.queue(k));
                }
                pending
            }
            None => false,
        }
    }
}

/// The TX rings of the current connection (queue pair order), for a polling thread.
pub(crate) struct TxPoller {
    pub(crate) backend: NetBackend,
    pub(crate) vrings: Vec<crate::memory::Vring>,
}

/// A running port. Dropping it stops it.
pub struct NetPort {
    shared: Arc<PortShared>,
    thread: Option<JoinHandle<()>>,
    /// The socket file this port created (listen role), removed at stop if still there.
    socket_file: Option<FileId>,
}

impl NetPort {
    /// Starts a port: in the listen role the socket exists when this returns.
    pub fn start(cfg: PortConfig) -> Result<NetPort, PortError> {
        if !(256..=32768).contains(&cfg.max_queue_size) || !cfg.max_queue_size.is_power_of_two() {
            return Err(PortError::QueueSize(cfg.max_queue_size));
        }
        if !(1..=MAX_QUEUE_PAIRS).contains(&cfg.queue_pairs) {
            return Err(PortError::QueuePairs(cfg.queue_pairs));
        }
        if !cfg.mem_limits.is_valid() {
            return Err(PortError::MemLimits(cfg.mem_limits));
        }
        let (listener, socket_file) = match cfg.role {
            SocketRole::Listen => {
                let (l, id) = crate::socket::bind(&cfg.socket, cfg.socket_mode)?;
                (Some(Listener::from(l)), Some(id))
            }
            SocketRole::Connect => (None, None),
        };
        let shared = Arc::new(PortShared {
            cfg,
            rx: RxQueue::default(),
            tx: ArcSwapOption::empty(),
            stats: Arc::new(PortStats::default()),
            conns: AtomicU64::new(0),
            stop: AtomicBool::new(false),
            connected: AtomicBool::new(false),
            conn: Mutex::new(None),
            frontend: Mutex::new(None),
        });
        let s = shared.clone();
        let thread = thread::Builder::new()
            .name(format!("port-{}", shared.cfg.name))
            .spawn(move || match listener {
                Some(l) => listen_loop(&s, l),
                None => connect_loop(&s),
            })
            .map_err(PortError::Thread)?;
        Ok(NetPort {
            shared,
            thread: Some(thread),
            socket_file,
        })
    }

    /// A handle to this port.
    pub fn handle(&self) -> PortHandle {
        PortHandle(self.shared.clone())
    }

    /// Stops serving: closes the current connection, removes the socket (listen role) and
    /// waits for the port thread.
    pub fn stop(mut self) {
        self.stop_inner();
    }

    /// Asks the port to stop without waiting for it (see [`NetPort::stop`]): stopping many
    /// ports is then as quick as stopping one.
    pub fn request_stop(&self) {
        self.shared.stop.store(true, Ordering::Release);
        if let Ok(g) = self.shared.conn.lock() {
            if let Some(h) = g.as_ref() {
                h.shutdown();
            }
        }
        // The relay may be waiting on the frontend (bounded, but a stop need not wait).
        shutdown_frontend(&self.shared);
    }

    fn stop_inner(&mut self) {
        self.request_stop();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        if let Some(id) = self.socket_file.take() {
            id.remove(&self.shared.cfg.socket);
        }
    }
}

impl Drop for NetPort {
    fn drop(&mut self) {
        if self.thread.is_some() {
            self.stop_inner();
        }
    }
}

/// Waits until the listener has a connection pending, or the port is stopped.
fn wait_readable(shared: &PortShared, fd: i32) -> bool {
    loop {
        if shared.stop.load(Ordering::Acquire) {
            return false;
        }
        let mut pfd = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: `pfd` is a valid pollfd for the duration of the call and nfds is 1.
        let r = unsafe { libc::poll(&mut pfd, 1, 200) };
        if r > 0 {
            return true;
        }
    }
}

type Daemon = VhostUserDaemon<NetBackend>;

fn new_daemon(shared: &Arc<PortShared>) -> Result<(Daemon, NetBackend), PortError> {
    let mem: GuestMemoryAtomic = Gma::new(GuestMemory::new());
    let conn = shared.conns.fetch_add(1, Ordering::Relaxed) + 1;
    let backend = NetBackend::new(shared.clone(), conn).map_err(PortError::Thread)?;
    let daemon = VhostUserDaemon::new(shared.cfg.name.clone(), backend.clone(), mem)
        .map_err(|e| PortError::Daemon(e.to_string()))?;
    // Ask the worker to publish its rings now, before any kick: a frontend may never kick its
    // RX queue (DPDK does not), yet others must be able to deliver into it.
    let num_queues = usize::from(shared.cfg.queue_pairs) * 2;
    let id = capture_event_id(num_queues);
    if let Some(h) = daemon.get_epoll_handlers().first() {
        h.register_listener(
            backend.fault_fd().as_raw_fd(),
            EventSet::IN,
            u64::from(fault_event_id(num_queues)),
        )
        .map_err(PortError::Thread)?;
        h.register_listener(
            backend.capture_fd().as_raw_fd(),
            EventSet::IN,
            u64::from(id),
        )
        .map_err(PortError::Thread)?;
        backend.capture_fd().write(1).map_err(PortError::Thread)?;
        // The rings are published by the worker thread, the frontend's messages answered by
        // another: without this wait a frontend could finish its setup (every message acked)
        // and post RX buffers before its RX ring is published, and frames sent to it meanwhile
        // would be dropped (counted as no_rx_buffer), on a busy host for many milliseconds.
        // The frontend's messages wait in the socket until the daemon starts, after this.
        if !backend.wait_rings_published(PUBLISH_WAIT) {
            warn!(
                "{}: the rings were not published within {PUBLISH_WAIT:?}: frames to this \
                 frontend are dropped until they are",
                shared.cfg.name
            );
        }
    }
    Ok((daemon, backend))
}

/// Serves one connection until it ends, then retires its worker thread.
fn serve_connection(shared: &PortShared, daemon: &mut Daemon) {
    shared.connected.store(true, Ordering::Release);
    PortStats::add(&shared.stats.connections, 1);
    if let Ok(mut g) = shared.conn.lock() {
        *g = daemon.shutdown_handle();
        // A stop requested between accept and here found no handle to shut down: the
        // connection would then wait for a frontend that may never speak.
        if shared.stop.load(Ordering::Acquire) {
            if let Some(h) = g.as_ref() {
                h.shutdown();
            }
        }
    }
    info!("{}: frontend connected", shared.cfg.name);
    if let Err(e) = daemon.wait() {
        debug!("{}: connection ended: {e}", shared.cfg.name);
    }
    info!("{}: frontend disconnected", shared.cfg.name);
    if let Ok(mut g) = shared.conn.lock() {
        *g = None;
    }
    shared.rx.publish(None);
    shared.tx.store(None);
    shared.connected.store(false, Ordering::Release);
    for h in daemon.get_epoll_handlers() {
        h.send_exit_event();
    }
}

fn listen_loop(shared: &Arc<PortShared>, listener: Listener) {
    let fd = listener.as_raw_fd();
    while wait_readable(shared, fd) {
        match listener.accept() {
            Ok(Some(frontend)) => serve_stream(shared, frontend),
            Ok(None) => {}
            Err(e) => {
                warn!("{}: accept failed: {e}", shared.cfg.name);
                thread::sleep(Duration::from_millis(200));
            }
        }
    }
}

fn connect_loop(shared: &Arc<PortShared>) {
    let path = &shared.cfg.socket;
    let mut backoff = Duration::from_millis(50);
    while !shared.stop.load(Ordering::Acquire) {
        // Never a blocking connect: a frontend whose backlog is full must not hold the port
        // thread (and so its stop).
        match crate::socket::connect_nonblocking(path) {
            Ok(frontend) => {
                serve_stream(shared, frontend);
                // A short pause after every connection: a frontend that drops each connection
                // at once must not turn this into a busy loop.
                backoff = Duration::from_millis(50);
                thread::sleep(backoff);
            }
            Err(e) => {
                debug!("{}: connect to {}: {e}", shared.cfg.name, path.display());
                thread::sleep(backoff);
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
        }
    }
}

/// Serves one frontend connection with a fresh daemon, through the [`shim`](crate::shim) relay.
fn serve_stream(shared: &Arc<PortShared>, frontend: UnixStream) {
    let (daemon, backend) = match new_daemon(shared) {
        Ok(d) => d,
        Err(e) => {
            warn!("{}: cannot create daemon: {e}", shared.cfg.name);
            thread::sleep(Duration::from_millis(200));
            return;
        }
    };
    // Dropping the daemon joins its worker thread; only then are its exit fds unused.
    let migration = MigrationMsgs {
        name: shared.cfg.name.clone(),
        log: backend.inner().log.clone(),
        announce: shared.cfg.announce.clone(),
    };
    run_daemon(shared, frontend, daemon, migration);
    backend.release_exit_fds();
}

fn run_daemon(
    shared: &Arc<PortShared>,
    frontend: UnixStream,
    mut daemon: Daemon,
    migration: MigrationMsgs,
) {
    let mut shim = match ShimEndpoint::new(&shared.cfg.name) {
        Ok(s) => s,
        Err(e) => {
            warn!("{}: cannot create the relay socket: {e}", shared.cfg.name);
            retire(&daemon);
            thread::sleep(Duration::from_millis(200));
            return;
        }
    };
    if let Err(e) = daemon.start(&mut shim.listener) {
        warn!("{}: cannot start the daemon: {e}", shared.cfg.name);
        retire(&daemon);
        return;
    }
    // Kept so that a stop (or the daemon's end) can end the relay at once. Without a clone
    // the relay still ends, within its bounded waits.
    if let (Ok(mut g), Ok(clone)) = (shared.frontend.lock(), frontend.try_clone()) {
        *g = Some(clone);
    }
    if shared.stop.load(Ordering::Acquire) {
        shutdown_frontend(shared);
    }
    // If the relay thread cannot start, both its sockets are closed and the daemon's
    // connection ends at once.
    let guard = MemTableGuard::new(
        shared.cfg.mem_limits,
        shared.cfg.name.clone(),
        shared.stats.clone(),
    );
    let relay = shim
        .relay(
            frontend,
            shared.cfg.name.clone(),
            guard,
            shared.stats.clone(),
            migration,
        )
        .map_err(|e| warn!("{}: cannot start the relay: {e}", shared.cfg.name))
        .ok();
    serve_connection(shared, &mut daemon);
    // The daemon is done: nothing more to relay, whatever the frontend is in the middle of.
    shutdown_frontend(shared);
    if let Ok(mut g) = shared.frontend.lock() {
        *g = None;
    }
    if let Some(h) = relay {
        let _ = h.join();
    }
}

/// Shuts the current frontend socket down (the relay then ends at once).
fn shutdown_frontend(shared: &PortShared) {
    if let Ok(g) = shared.frontend.lock() {
        if let Some(s) = g.as_ref() {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }
}

/// Stops the worker threads of a daemon that never served a connection.
fn retire(daemon: &Daemon) {
    for h in daemon.get_epoll_handlers() {
        h.send_exit_event();
    }
}
