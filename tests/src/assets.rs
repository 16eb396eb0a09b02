//! The guest kernel and initramfs, built by `ci/build-guest.sh` once per test process.

use anyhow::{anyhow, bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// Paths of a bootable test guest.
#[derive(Debug, Clone)]
pub struct GuestAssets {
    /// Uncompressed `vmlinux` (PVH entry; falls back to a copy of vmlinuz, see `kernel_kind`).
    pub kernel: PathBuf,
    /// `initramfs.cpio.gz` with busybox, virtio-net modules, iperf3 and the harness `/init`.
    pub initrd: PathBuf,
    /// "vmlinux" or "vmlinuz" (the latter only when extraction failed: boots ~7 s slower).
    pub kernel_kind: String,
}

/// The repository root (the parent of this crate's manifest directory).
pub fn repo_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

/// Builds (or finds cached) guest assets: runs `ci/build-guest.sh build/guest` the first time it
/// is called in a process and returns the same result afterwards. The script caches across
/// processes and serialises concurrent builds with a lock, so parallel test processes are fine.
///
/// `VSW_GUEST_KERNEL` and `VSW_GUEST_INITRD`, when both set, are used as they are instead.
pub fn guest_assets() -> Result<GuestAssets> {
    static ASSETS: OnceLock<std::result::Result<GuestAssets, String>> = OnceLock::new();
    ASSETS
        .get_or_init(|| build_assets().map_err(|e| format!("{e:#}")))
        .clone()
        .map_err(|e| anyhow!("guest assets unavailable: {e}"))
}

fn build_assets() -> Result<GuestAssets> {
    if let (Ok(k), Ok(i)) = (
        std::env::var("VSW_GUEST_KERNEL"),
        std::env::var("VSW_GUEST_INITRD"),
    ) {
        let (kernel, initrd) = (PathBuf::from(k), PathBuf::from(i));
        for p in [&kernel, &initrd] {
            if !p.is_file() {
                bail!(
                    "{} (from VSW_GUEST_KERNEL/VSW_GUEST_INITRD) does not exist",
                    p.display()
                );
            }
        }
        return Ok(GuestAssets {
            kernel,
            initrd,
            kernel_kind: "given".into(),
        });
    }
    let root = repo_root();
    let script = root.join("ci/build-guest.sh");
    let outdir = root.join("build/guest");
    if !script.is_file() {
        bail!("{} not found", script.display());
    }
    let out = Command::new("bash")
        .arg(&script)
        .arg(&outdir)
        .output()
        .with_context(|| format!("running {}", script.display()))?;
    if !out.status.success() {
        bail!(
            "{} failed ({}):\n{}{}",
            script.display(),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let kernel = outdir.join("vmlinux");
    let initrd = outdir.join("initramfs.cpio.gz");
    for p in [&kernel, &initrd] {
        if !p.is_file() {
            bail!(
                "{} succeeded but {} is missing",
                script.display(),
                p.display()
            );
        }
    }
    let kernel_kind = std::fs::read_to_string(outdir.join("kernel-kind"))
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into());
    Ok(GuestAssets {
        kernel,
        initrd,
        kernel_kind,
    })
}

/// What every QEMU guest test starts with: QEMU present (else an error saying so), the guest
/// image built (its kernel printed), a scratch directory named after `tag` and socket paths
/// `vm1.sock..vmN.sock`.
pub fn qemu_scratch(tag: &str, vms: usize) -> Result<(crate::ScratchDir, Vec<PathBuf>)> {
    let names: Vec<String> = (1..=vms).map(|i| format!("vm{i}")).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    qemu_scratch_named(tag, &names)
}

/// [`qemu_scratch`] with socket paths `NAME.sock`, one for each of `names`, in that order.
pub fn qemu_scratch_named(tag: &str, names: &[&str]) -> Result<(crate::ScratchDir, Vec<PathBuf>)> {
    crate::find_binary("qemu-system-x86_64").context("the QEMU tests need QEMU")?;
    let assets = guest_assets()?;
    eprintln!(
        "guest kernel {} ({})",
        assets.kernel.display(),
        assets.kernel_kind
    );
    let dir = crate::ScratchDir::new(tag)?;
    let socks = names
        .iter()
        .map(|n| dir.socket_path(&format!("{n}.sock")))
        .collect::<Result<Vec<_>>>()?;
    Ok((dir, socks))
}
