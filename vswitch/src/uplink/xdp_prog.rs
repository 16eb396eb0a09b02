//! The XDP program of an AF_XDP uplink (`vswitch/bpf/xsk_redirect.c`, compiled into the
//! binary by `build.rs` when clang was there): loaded and attached with aya, it redirects each
//! frame the interface receives on queue Q to the AF_XDP socket in `xsks_map[Q]`, and passes
//! the frame to the kernel's stack when no socket is there. Detached when dropped (the
//! attachment is a BPF link owned by this process: it also goes when the process dies).

use std::os::fd::RawFd;

use aya::maps::XskMap;
use aya::programs::{Xdp, XdpMode};
use aya::Ebpf;

/// Bytes aligned for the ELF reader (it reads headers in place).
#[repr(C, align(8))]
struct Aligned<T: ?Sized>(T);

/// The program's object file, when this build has one.
#[cfg(vswitch_xdp_prog)]
static OBJECT: Option<&Aligned<[u8]>> = Some(&Aligned(*include_bytes!(concat!(
    env!("OUT_DIR"),
    "/xsk_redirect.o"
))));
#[cfg(not(vswitch_xdp_prog))]
static OBJECT: Option<&Aligned<[u8]>> = None;

/// The program's function and map names in the object.
const PROGRAM: &str = "xsk_redirect";
const MAP: &str = "xsks_map";

/// Why the program could not run on an interface: a sentence for the uplink's log line.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ProgError(String);

/// The program, attached to one interface.
pub struct XdpProg {
    /// Holds the program, its map and its attachment.
    ebpf: Ebpf,
    /// Attached in the driver (native XDP), not in the kernel's generic path.
    pub native: bool,
}

impl XdpProg {
    /// Loads the program and attaches it to interface `ifindex`: natively when the driver
    /// supports XDP, else in generic (SKB) mode.
    pub fn attach(ifindex: u32) -> Result<XdpProg, ProgError> {
        let object = OBJECT.ok_or_else(|| {
            ProgError(
                "this build has no XDP program (clang was not found when vswitch was built; \
                 install clang, e.g. with ci/install-deps.sh, and rebuild)"
                    .into(),
            )
        })?;
        let mut ebpf = Ebpf::load(&object.0)
            .map_err(|e| ProgError(format!("loading the XDP program: {e}")))?;
        let prog: &mut Xdp = ebpf
            .program_mut(PROGRAM)
            .ok_or_else(|| ProgError(format!("the XDP object has no program {PROGRAM}")))?
            .try_into()
            .map_err(|e| ProgError(format!("{PROGRAM} is not an XDP program: {e}")))?;
        prog.load()
            .map_err(|e| ProgError(format!("the kernel refused the XDP program: {e}")))?;
        let native = match prog.attach_to_if_index(ifindex, XdpMode::Driver) {
            Ok(_) => true,
            Err(native_err) => {
                prog.attach_to_if_index(ifindex, XdpMode::Skb)
                    .map_err(|e| {
                        ProgError(format!(
                            "attaching the XDP program failed: native: {native_err}; generic: \
                             {e} (another XDP program on the interface?)"
                        ))
                    })?;
                false
            }
        };
        Ok(XdpProg { ebpf, native })
    }

    /// Sends queue `queue`'s frames to the AF_XDP socket `fd` (bound to that queue).
    pub fn redirect(&mut self, queue: u32, fd: RawFd) -> Result<(), ProgError> {
        let map = self
            .ebpf
            .map_mut(MAP)
            .ok_or_else(|| ProgError(format!("the XDP object has no map {MAP}")))?;
        let mut xsks =
            XskMap::try_from(map).map_err(|e| ProgError(format!("{MAP} is not an XSKMAP: {e}")))?;
        xsks.set(queue, fd, 0)
            .map_err(|e| ProgError(format!("putting the AF_XDP socket in {MAP}: {e}")))
    }
}
