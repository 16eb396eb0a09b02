//! The test guest against a backend built on rust-vmm's vhost-user-backend crate (the library
//! the switch itself uses): config space through GET_CONFIG, and a backend that answers
//! GET_CONFIG with the spec's failure reply (size 0) must give an error, never a hang.

mod common;

use std::io::Result as IoResult;
use std::sync::mpsc;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use vhost::vhost_user::message::VhostUserProtocolFeatures;
use vhost_user_backend::{VhostUserBackendMut, VhostUserDaemon, VringRwLock};
use vm_memory::{GuestMemoryAtomic, GuestMemoryMmap};
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::event::{
    new_event_consumer_and_notifier, EventConsumer, EventFlag, EventNotifier,
};
use vswitch_testguest::features::{EVENT_IDX, MAC, MRG_RXBUF, MTU, PROTOCOL_FEATURES, VERSION_1};
use vswitch_testguest::{GuestConfig, TestGuest};

struct ConfigBackend {
    config: Vec<u8>,
}

impl VhostUserBackendMut for ConfigBackend {
    type Bitmap = ();
    type Vring = VringRwLock;

    fn num_queues(&self) -> usize {
        2
    }
    fn max_queue_size(&self) -> usize {
        1024
    }
    fn features(&self) -> u64 {
        VERSION_1 | MAC | MTU | MRG_RXBUF | EVENT_IDX | PROTOCOL_FEATURES
    }
    fn protocol_features(&self) -> VhostUserProtocolFeatures {
        VhostUserProtocolFeatures::MQ
            | VhostUserProtocolFeatures::REPLY_ACK
            | VhostUserProtocolFeatures::CONFIG
    }
    fn set_event_idx(&mut self, _enabled: bool) {}
    // Without an exit event the daemon's handler joins its vring workers forever on drop.
    fn exit_event(&self, _thread_index: usize) -> Option<(EventConsumer, EventNotifier)> {
        new_event_consumer_and_notifier(EventFlag::empty()).ok()
    }
    fn get_config(&self, offset: u32, size: u32) -> Vec<u8> {
        let (o, s) = (offset as usize, size as usize);
        self.config
            .get(o..o + s)
            .map(<[u8]>::to_vec)
            .unwrap_or_default()
    }
    fn update_memory(&mut self, _mem: GuestMemoryAtomic<GuestMemoryMmap>) -> IoResult<()> {
        Ok(())
    }
    fn handle_event(
        &mut self,
        _device_event: u16,
        _evset: EventSet,
        _vrings: &[VringRwLock],
        _thread_id: usize,
    ) -> IoResult<()> {
        Ok(())
    }
}

/// Serves one connection on `sock` in a thread.
fn spawn_backend(sock: std::path::PathBuf, config: Vec<u8>) -> std::thread::JoinHandle<()> {
    let backend = Arc::new(RwLock::new(ConfigBackend { config }));
    let mut daemon = VhostUserDaemon::new(
        "testguest-config".into(),
        backend,
        GuestMemoryAtomic::new(GuestMemoryMmap::new()),
    )
    .unwrap();
    std::thread::spawn(move || {
        let _ = daemon.serve(sock);
    })
}

/// Runs `f` in a thread and fails the test if it does not finish in time (catches hangs).
fn within<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(Duration::from_secs(20))
        .expect("the guest hung talking to the backend")
}

#[test]
fn config_space_via_get_config() {
    let dir = common::TempDir::new("cfg");
    let sock = dir.path("b.sock");
    let mut config = vec![0x52, 0x54, 0x00, 0xaa, 0xbb, 0xcc];
    config.extend_from_slice(&1u16.to_le_bytes()); // status: link up
    config.extend_from_slice(&1u16.to_le_bytes()); // max_virtqueue_pairs
    config.extend_from_slice(&1500u16.to_le_bytes()); // mtu
    let backend = spawn_backend(sock.clone(), config.clone());
    let (mac, mtu, read, feats, proto, qn) = within(move || {
        let mut g = TestGuest::connect(&sock, GuestConfig::default()).unwrap();
        let read = g.read_config().unwrap();
        (
            g.mac(),
            g.config_mtu(),
            read,
            g.features(),
            g.protocol_features(),
            g.queue_num(),
        )
    });
    assert_eq!(mac, [0x52, 0x54, 0x00, 0xaa, 0xbb, 0xcc]);
    assert_eq!(mtu, Some(1500));
    assert_eq!(read, config);
    assert_eq!(
        feats,
        VERSION_1 | MAC | MTU | MRG_RXBUF | EVENT_IDX | PROTOCOL_FEATURES
    );
    assert_eq!(proto, 0x1 | 0x8 | 0x200);
    assert_eq!(qn, Some(2));
    backend.join().unwrap();
}

#[test]
fn failed_get_config_is_an_error_not_a_hang() {
    let dir = common::TempDir::new("cfg0");
    let sock = dir.path("b.sock");
    let backend = spawn_backend(sock.clone(), Vec::new());
    let (mac, err) = within(move || {
        let mut g = TestGuest::connect(&sock, GuestConfig::default()).unwrap();
        let err = g.read_config().unwrap_err().to_string();
        // The session is still usable after the failed request.
        g.post_rx(8).unwrap();
        (g.mac(), err)
    });
    assert_eq!(
        mac,
        GuestConfig::default().mac,
        "falls back to the configured MAC"
    );
    assert!(err.contains("GET_CONFIG"), "{err}");
    backend.join().unwrap();
}
