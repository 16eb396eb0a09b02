#!/usr/bin/env bash
# Builds the test guest used by the QEMU integration tests and the examples, from Debian packages
# already on this machine (ci/install-deps.sh installs them): no downloads.
#
#   ci/build-guest.sh [OUTDIR]        (default: build/guest under the repository root)
#
# Produces in OUTDIR:
#   vmlinux            the kernel of the installed linux-image-amd64, decompressed: QEMU boots it
#                      through its PVH entry, ~7 s faster under TCG than the self-decompressing
#                      vmlinuz (falls back to a copy of vmlinuz when extraction fails)
#   initramfs.cpio.gz  busybox-static, the virtio-net modules, iperf3 and ci/guest/init
#   kernel-version     the kernel release the modules belong to
# Rebuilds only when the inputs changed (kernel release, this script, ci/guest/*, busybox and
# iperf3 versions). Environment: KVER=RELEASE picks a kernel when several are installed;
# FORCE=1 rebuilds unconditionally. Needs root (Debian's /boot/vmlinuz-* is mode 0600).
set -euo pipefail

die() { echo "build-guest: error: $*" >&2; exit 1; }
log() { echo "build-guest: $*" >&2; }

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$SCRIPT_DIR/.." && pwd)
GUEST_DIR="$SCRIPT_DIR/guest"
OUTDIR=${1:-$REPO_ROOT/build/guest}
mkdir -p "$OUTDIR" || die "cannot create $OUTDIR"
OUTDIR=$(cd "$OUTDIR" && pwd)

for tool in cpio gzip sha256sum ldd; do
  command -v "$tool" >/dev/null 2>&1 || die "'$tool' not found (run ci/install-deps.sh as root)"
done
BUSYBOX=/bin/busybox
[ -x "$BUSYBOX" ] || die "$BUSYBOX missing: install busybox-static (ci/install-deps.sh)"
# The guest has no libc of its own for busybox: it must be the static build.
bb_ldd=$(LC_ALL=C ldd "$BUSYBOX" 2>&1 || true)
case "$bb_ldd" in
  *"not a dynamic executable"* | *"statically linked"*) ;;
  *) die "$BUSYBOX is dynamically linked: install busybox-static, not busybox (ci/install-deps.sh)" ;;
esac
IPERF3=$(command -v iperf3 || true)
[ -n "$IPERF3" ] || die "iperf3 not found: install iperf3 (ci/install-deps.sh)"

# --- which kernel -------------------------------------------------------------------------------
if [ -z "${KVER:-}" ]; then
  # The newest release that has both an image in /boot and its modules.
  KVER=$(for v in /boot/vmlinuz-*; do
    v=${v#/boot/vmlinuz-}
    [ -f "/lib/modules/$v/modules.dep" ] && echo "$v"
  done | sort -V | tail -n 1 || true)
  [ -n "$KVER" ] || die "no /boot/vmlinuz-* with matching /lib/modules: install linux-image-amd64 (ci/install-deps.sh)"
fi
VMLINUZ=/boot/vmlinuz-$KVER
MODDIR=/lib/modules/$KVER
[ -f "$VMLINUZ" ] || die "$VMLINUZ not found"
[ -r "$VMLINUZ" ] || die "$VMLINUZ is not readable (Debian installs it mode 0600): run as root"
[ -f "$MODDIR/modules.dep" ] || die "$MODDIR/modules.dep not found"

# --- cache key ----------------------------------------------------------------------------------
pkgver() { dpkg-query -W -f='${Version}' "$1" 2>/dev/null || echo unknown; }
KEY=$( {
  echo "kernel $KVER $(stat -c '%s %Y' "$VMLINUZ")"
  echo "busybox $(pkgver busybox-static) iperf3 $(pkgver iperf3)"
  sha256sum "${BASH_SOURCE[0]}"
  find "$GUEST_DIR" -type f -print0 | sort -z | xargs -0 sha256sum
} | sha256sum | cut -d' ' -f1)

exec 9>"$OUTDIR/.lock"
flock 9 # concurrent test processes: one builds, the others wait and then find it cached
if [ "${FORCE:-0}" != 1 ] && [ -f "$OUTDIR/.key" ] && [ "$(cat "$OUTDIR/.key")" = "$KEY" ] &&
  [ -s "$OUTDIR/vmlinux" ] && [ -s "$OUTDIR/initramfs.cpio.gz" ]; then
  log "up to date ($OUTDIR, kernel $KVER)"
  exit 0
fi

WORK=$(mktemp -d "$OUTDIR/.work.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

# --- vmlinux ------------------------------------------------------------------------------------
# vmlinuz is a boot stub followed by the compressed kernel. Find each known compression magic and
# try to decompress from there, keeping the first result that is an ELF file (the method of the
# kernel's scripts/extract-vmlinux).
is_elf() { [ "$(head -c 4 "$1" 2>/dev/null | od -An -c | tr -d ' \n')" = '177ELF' ]; }
try_extract() { # MAGIC(grep -P escape) DECOMPRESSOR...
  local magic=$1 off
  shift
  command -v "$1" >/dev/null 2>&1 || return 1
  for off in $(LC_ALL=C grep -obUaP "$magic" "$VMLINUZ" 2>/dev/null | cut -d: -f1 | head -n 20); do
    tail -c +$((off + 1)) "$VMLINUZ" | "$@" >"$WORK/vmlinux" 2>/dev/null || true
    if is_elf "$WORK/vmlinux"; then
      log "vmlinux: $(basename "$VMLINUZ") payload at offset $off, decompressed with $1"
      return 0
    fi
  done
  return 1
}
if try_extract '\xfd7zXZ\x00' xz -dc --single-stream ||
  try_extract '\x28\xb5\x2f\xfd' zstd -dc ||
  try_extract '\x1f\x8b\x08' gzip -dc ||
  try_extract '\x02\x21\x4c\x18' lz4 -dc ||
  try_extract '\x5d\x00\x00\x00' xz -dc --format=lzma ||
  try_extract 'BZh' bzip2 -dc; then
  KERNEL_KIND=vmlinux
else
  log "warning: could not extract vmlinux from $VMLINUZ; using the compressed kernel (boots ~7 s slower)"
  cp "$VMLINUZ" "$WORK/vmlinux"
  KERNEL_KIND=vmlinuz
fi

# --- initramfs ----------------------------------------------------------------------------------
ROOT=$WORK/root
mkdir -p "$ROOT"/{bin,sbin,usr/bin,usr/sbin,etc,proc,sys,dev,tmp,run,root,lib/modules}
cp "$BUSYBOX" "$ROOT/bin/busybox"
cp "$GUEST_DIR/init" "$ROOT/init"
chmod 0755 "$ROOT/init" "$ROOT/bin/busybox"
chmod 1777 "$ROOT/tmp"
ln -s busybox "$ROOT/bin/sh"
echo "root:x:0:0:root:/root:/bin/sh" >"$ROOT/etc/passwd"
echo "root:x:0:" >"$ROOT/etc/group"
printf '127.0.0.1 localhost\n' >"$ROOT/etc/hosts"

# Modules: the wanted ones plus everything modules.dep says they need, dependencies first.
WANTED="virtio virtio_ring virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci failover net_failover virtio_net"
declare -A DEPS=() SEEN=()
ORDER=()
while IFS= read -r line; do
  mod=${line%%:*}
  DEPS[$mod]=${line#*:}
done <"$MODDIR/modules.dep"
modpath() { # module name -> path relative to MODDIR
  local p
  for p in "${!DEPS[@]}"; do
    local b=${p##*/}
    b=${b%%.ko*}
    [ "${b//-/_}" = "${1//-/_}" ] && { echo "$p"; return 0; }
  done
  return 1
}
visit() { # path
  local p=$1 d
  [ -n "${SEEN[$p]:-}" ] && return 0
  SEEN[$p]=1
  for d in ${DEPS[$p]}; do visit "$d"; done
  ORDER+=("$p")
}
for m in $WANTED; do
  p=$(modpath "$m") || {
    # Built into the kernel (modules.builtin) is fine; otherwise the guest has no network.
    grep -q "/$m.ko" "$MODDIR/modules.builtin" 2>/dev/null && continue
    die "module $m not found in $MODDIR/modules.dep"
  }
  visit "$p"
done
: >"$ROOT/etc/vsw-modules"
for p in "${ORDER[@]}"; do
  src=$MODDIR/$p
  name=${p##*/}
  [ -f "$src" ] || die "$src listed in modules.dep but missing"
  case "$name" in # busybox insmod wants plain .ko files
    *.ko) cp "$src" "$ROOT/lib/modules/$name" ;;
    *.ko.xz) xz -dc "$src" >"$ROOT/lib/modules/${name%.xz}"; name=${name%.xz} ;;
    *.ko.zst) zstd -qdc "$src" >"$ROOT/lib/modules/${name%.zst}"; name=${name%.zst} ;;
    *.ko.gz) gzip -dc "$src" >"$ROOT/lib/modules/${name%.gz}"; name=${name%.gz} ;;
    *) die "unknown module format: $src" ;;
  esac
  echo "$name" >>"$ROOT/etc/vsw-modules"
done
log "modules: $(tr '\n' ' ' <"$ROOT/etc/vsw-modules")"

# iperf3 and the shared libraries it links (ldd), at their own paths.
copy_with_libs() { # binary
  local bin=$1 lib
  mkdir -p "$ROOT$(dirname "$bin")"
  cp -L "$bin" "$ROOT$bin"
  for lib in $(ldd "$bin" | grep -oE '/[^ ]+' || true); do
    [ -e "$lib" ] || continue
    mkdir -p "$ROOT$(dirname "$lib")"
    cp -L "$lib" "$ROOT$lib"
  done
}
copy_with_libs "$IPERF3"
[ "$IPERF3" = /usr/bin/iperf3 ] || ln -sf "$IPERF3" "$ROOT/usr/bin/iperf3"

(cd "$ROOT" && find . -print0 | LC_ALL=C sort -z |
  cpio --null --create --format=newc --owner=0:0 --quiet) | gzip -1 >"$WORK/initramfs.cpio.gz"

# --- publish ------------------------------------------------------------------------------------
mv -f "$WORK/vmlinux" "$OUTDIR/vmlinux"
mv -f "$WORK/initramfs.cpio.gz" "$OUTDIR/initramfs.cpio.gz"
echo "$KVER" >"$OUTDIR/kernel-version"
echo "$KERNEL_KIND" >"$OUTDIR/kernel-kind"
echo "$KEY" >"$OUTDIR/.key"
log "built $OUTDIR/vmlinux ($KERNEL_KIND) and $OUTDIR/initramfs.cpio.gz for kernel $KVER"
