//! Real QEMU guests (TCG) attached to a vhost-user backend, driven through the serial console.
//!
//! The guest is the one `ci/build-guest.sh` builds: its `/init` configures eth0 from the kernel
//! command line, prints `VSW-READY` and then runs the line protocol described in `ci/guest/init`
//! (`N COMMAND` in; `VSW-BEGIN-N`, output, `VSW-DONE-N RC` out).
//!
//! QEMU 7.2 facts this module encodes (see `shared/notes/guests.md`): TCG only (`-accel tcg
//! -cpu max`); guest memory must be shareable with the backend (memfd with `share=on`); the
//! vhost-user virtio-net device needs `vectors=0` (MSI-X makes QEMU 7.2 segfault under TCG).
//!
//! - `config`: what a guest is made of ([`GuestConfig`]) and the QEMU command line.
//! - `guest`: the QEMU process ([`QemuGuest`]): spawned, killed, its failures explained.
//! - `console`: the serial console's line protocol (commands and their output).
//! - `net`: ping and iperf3 from the guest.
//! - `features`: the virtio feature bits the guest negotiated.

mod config;
mod console;
mod features;
mod guest;
mod net;

pub use config::{GuestConfig, NicConfig, SocketRole};
pub use features::{parse_features, virtio_net_feature_names, BASE_FEATURES};
pub use guest::QemuGuest;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::assets::GuestAssets;

    #[test]
    fn features_parse_bit0_first() {
        assert_eq!(parse_features("1000").unwrap(), 1);
        assert_eq!(parse_features("0000000000000001").unwrap(), 1 << 15);
        assert!(parse_features("10x").is_err());
        assert!(parse_features("").is_err());
        let names = virtio_net_feature_names((1 << 15) | (1 << 32));
        assert_eq!(names, vec!["MRG_RXBUF", "VERSION_1"]);
    }

    #[test]
    fn qemu_args_roles() {
        let assets = GuestAssets {
            kernel: "/k".into(),
            initrd: "/i".into(),
            kernel_kind: "vmlinux".into(),
        };
        let cfg = GuestConfig::new("a")
            .nic(
                "/tmp/s0",
                SocketRole::Client,
                "52:54:00:00:00:01",
                "10.0.0.1/24",
            )
            .nic(
                "/tmp/s1",
                SocketRole::Server,
                "52:54:00:00:00:02",
                "10.0.1.1/24",
            );
        let args = cfg.qemu_args(&assets).unwrap().join(" ");
        assert!(args.contains("socket,id=vhu0,path=/tmp/s0,reconnect=1"));
        assert!(args.contains("socket,id=vhu1,path=/tmp/s1,server=on,wait=off"));
        assert!(args.contains("vectors=0"));
        assert!(args.contains("vsw.ip=10.0.0.1/24"));
        assert!(args.contains("vsw.ip1=10.0.1.1/24"));
        assert!(args.contains("memory-backend-memfd,id=mem,size=256M,share=on"));
    }
}
