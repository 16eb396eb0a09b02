//! testpmd's `--vdev` arguments: virtio-user and pcap ports.

use std::path::{Path, PathBuf};

use super::QUEUE_SIZE;

/// One `--vdev` of testpmd. Port ids follow the order of the vdevs.
#[derive(Debug, Clone)]
pub enum Vdev {
    /// A virtio-user port: `server == false` connects to a listening switch port;
    /// `server == true` (`server=1`) creates the socket and the switch connects to it.
    VirtioUser {
        socket: PathBuf,
        mac: String,
        server: bool,
        /// `packed_vq=1`: ask for packed virtqueues (VIRTIO_F_RING_PACKED).
        packed: bool,
    },
    /// Frames read from a pcap file, once or (`infinite`) over and over.
    PcapRx { file: PathBuf, infinite: bool },
    /// Frames written to a pcap file (nothing received).
    PcapTx { file: PathBuf },
}

impl Vdev {
    pub fn virtio_user(socket: &Path, mac: &str, server: bool) -> Vdev {
        Vdev::VirtioUser {
            socket: socket.to_path_buf(),
            mac: mac.to_owned(),
            server,
            packed: false,
        }
    }

    /// [`Vdev::virtio_user`] with packed virtqueues (`packed_vq=1`).
    pub fn virtio_user_packed(socket: &Path, mac: &str, server: bool) -> Vdev {
        Vdev::VirtioUser {
            socket: socket.to_path_buf(),
            mac: mac.to_owned(),
            server,
            packed: true,
        }
    }

    pub(super) fn devargs(&self, index: usize) -> String {
        fn s(p: &Path) -> &str {
            let s = p.to_str().expect("UTF-8 path");
            assert!(!s.contains(','), "path {s} contains ','");
            s
        }
        match self {
            Vdev::VirtioUser {
                socket,
                mac,
                server,
                packed,
            } => format!(
                "net_virtio_user{index},path={},queues=1,mac={mac},queue_size={QUEUE_SIZE}{}{}",
                s(socket),
                if *server { ",server=1" } else { "" },
                if *packed { ",packed_vq=1" } else { "" }
            ),
            Vdev::PcapRx { file, infinite } => format!(
                "net_pcap{index},rx_pcap={}{}",
                s(file),
                if *infinite { ",infinite_rx=1" } else { "" }
            ),
            Vdev::PcapTx { file } => format!("net_pcap{index},tx_pcap={}", s(file)),
        }
    }
}
