//! Integration test harness.
//!
//! - [`frontend`]: a vhost-user frontend in a child process, to SIGKILL ([`FrontendProcess`]).
//! - [`libvirt`]: a private libvirt (its QEMU driver in session mode) and its domains ([`Libvirt`]).
//! - [`netns`]: hosts as network namespaces joined by veth pairs ([`Netns`]).
//! - [`qemu`]: real QEMU guests (TCG) attached over vhost-user, driven through their serial
//!   console ([`QemuGuest`]), booted from the assets `ci/build-guest.sh` makes ([`guest_assets`]).
//! - [`switch`]: the `vswitch` binary as a child process ([`Vswitch`]): ports, `vswitch ctl`
//!   counters ([`Stats`]), kill and restart.
//! - [`testpmd`]: DPDK testpmd as a reference vhost-user forwarder ([`Testpmd`]).
//! - [`usage`]: a process's descriptors, threads and memory from /proc ([`ProcUsage`]).
//! - [`util`]: scratch directories, binary lookup, waiting helpers.
//!
//! Environment knobs (all optional):
//! - `VSW_GUEST_CONSOLE=1`: copy every guest's serial console to stderr as it arrives.
//! - `VSW_KEEP_SCRATCH=1`: keep scratch directories (console logs, sockets) after a test.
//! - `VSW_GUEST_KERNEL` + `VSW_GUEST_INITRD`: boot these instead of building with
//!   `ci/build-guest.sh`.
//! - `VSW_QEMU`, `VSW_TESTPMD`: paths of `qemu-system-x86_64` and `dpdk-testpmd`.
//! - `VSWITCH_BIN`: the `vswitch` binary (default: `vswitch` in this test binary's target dir).

pub mod assets;
pub mod frontend;
pub mod libvirt;
pub mod netns;
pub mod qemu;
pub mod switch;
pub mod testpmd;
pub mod usage;
pub mod util;

pub use assets::{guest_assets, qemu_scratch, qemu_scratch_named, repo_root, GuestAssets};
pub use frontend::FrontendProcess;
pub use libvirt::{libvirt_binaries, Domain, Libvirt};
pub use netns::Netns;
pub use qemu::{
    virtio_net_feature_names, GuestConfig, NicConfig, QemuGuest, SocketRole, BASE_FEATURES,
};
pub use switch::{vswitch_binary, Counters, PortMode, Stats, Vswitch, VswitchPort};
pub use testpmd::{Testpmd, TestpmdPort};
pub use usage::{MemTolerance, ProcUsage};
pub use util::{find_binary, OrPanic, ScratchDir};
