#!/usr/bin/env python3
"""Writes the hand-made seed inputs of every fuzz target into corpus/<target>/seed-*.

Each input follows the format documented at the top of the target's harness module
(src/desc.rs, src/frame.rs, src/vhost_user.rs, src/ctl_request.rs, src/config_file.rs).
The committed corpora are these seeds plus what fuzzing found, minimized (ci/fuzz.sh merge).
Run from anywhere: python3 tests/fuzz/seeds.py
"""
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))


def write(target, name, data, where="corpus"):
    d = os.path.join(HERE, where, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "seed-" + name), "wb") as f:
        f.write(data)


def u8(v): return struct.pack("<B", v)
def u16(v): return struct.pack("<H", v)
def u32(v): return struct.pack("<I", v)
def u64(v): return struct.pack("<Q", v)


F_NEXT, F_WRITE, F_INDIRECT = 1, 2, 4


def desc(addr, length, flags=0, nxt=0):
    return u64(addr) + u32(length) + u16(flags) + u16(nxt)


def eth(length, dst=b"\xff" * 6, src=b"\x52\x54\x00\x00\x00\x01", et=0x0800):
    body = dst + src + struct.pack(">H", et)
    return body + bytes((i * 7) & 0xFF for i in range(length - len(body)))


# ---- desc_chain ---------------------------------------------------------------------------
# Memory image: TX desc 0x000, avail 0x100, used 0x140; RX desc 0x200, avail 0x300,
# used 0x340; TX buffers from 0x400; RX buffers (beyond the image, zeroed) from 0x2000.
def desc_header(flags, regions, size_log=4, max_frame=1522):
    head = u8(flags) + u8(len(regions) - 1)
    for pages, gap in regions:
        head += u8(pages - 1) + u8(gap)
    head += u16(max_frame)
    head += u8(size_log) + u16(0x000 // 16) + u16(0x100 // 2) + u16(0x140 // 4) + u16(0) + u16(0)
    head += u8(size_log) + u16(0x200 // 16) + u16(0x300 // 2) + u16(0x340 // 4) + u16(0) + u16(0)
    return head


def rings(img, chains, rx_bufs):
    """Writes TX descriptors (index -> bytes), the TX avail ring and the RX ring into img."""
    heads = []
    for head, entries in chains:
        for idx, d in entries:
            img[16 * idx:16 * idx + 16] = d
        heads.append(head)
    img[0x100:0x104] = u16(0) + u16(len(heads))
    for i, h in enumerate(heads):
        img[0x104 + 2 * i:0x106 + 2 * i] = u16(h)
    for i, (addr, length, fl) in enumerate(rx_bufs):
        img[0x200 + 16 * i:0x210 + 16 * i] = desc(addr, length, fl)
    img[0x300:0x304] = u16(0) + u16(len(rx_bufs))
    for i in range(len(rx_bufs)):
        img[0x304 + 2 * i:0x306 + 2 * i] = u16(i)


def desc_seeds():
    for flags, hdr, name in [(1, 12, "v1"), (0, 10, "legacy"), (3 | 4, 12, "mrg-eventidx")]:
        img = bytearray(0x1000)
        chains = []
        # One descriptor: header + frame.
        f = bytes(hdr) + eth(60)
        img[0x400:0x400 + len(f)] = f
        chains.append((0, [(0, desc(0x400, len(f)))]))
        # Header descriptor + frame descriptor.
        f2 = eth(100)
        img[0x520:0x520 + len(f2)] = f2
        chains.append((1, [(1, desc(0x500, hdr, F_NEXT, 2)), (2, desc(0x520, len(f2)))]))
        # Header and the frame's start, then the rest of the frame.
        f3 = eth(64)
        img[0x600:0x600 + hdr + 20] = bytes(hdr) + f3[:20]
        img[0x640:0x640 + 44] = f3[20:]
        chains.append((3, [(3, desc(0x600, hdr + 20, F_NEXT, 4)), (4, desc(0x640, 44))]))
        # An indirect table at 0x800 with two entries.
        img[0x800:0x810] = desc(0x880, hdr, F_NEXT, 1)
        img[0x810:0x820] = desc(0x8c0, 64)
        img[0x8c0:0x8c0 + 64] = eth(64)
        chains.append((5, [(5, desc(0x800, 32, F_INDIRECT))]))
        # A loop, a write-only buffer, a runt: refused.
        chains.append((6, [(6, desc(0x400, 8, F_NEXT, 6))]))
        chains.append((7, [(7, desc(0x400, 80, F_WRITE))]))
        chains.append((8, [(8, desc(0x400, hdr + 4))]))
        if flags & 2:
            rx = [(0x2000 + 0x40 * i, 0x40, F_WRITE) for i in range(16)]
        else:
            rx = [(0x2000 + 0x800 * i, 2048, F_WRITE) for i in range(8)]
        rings(img, chains, rx)
        write("desc_chain", name, desc_header(flags, [(16, 0)]) + bytes(img))
    # Two adjacent one-page regions, a frame straddling them in one descriptor.
    img = bytearray(0x1000)
    f = bytes(12) + eth(128)
    img[0x1000 - 40:0x1000] = f[:40]
    rings(img, [(1, [(1, desc(0x1000 - 40, len(f)))])], [(0x1800, 1024, F_WRITE)])
    write("desc_chain", "straddle", desc_header(1, [(1, 0), (1, 0)]) + bytes(img) + f[40:])


# ---- frame --------------------------------------------------------------------------------
def frame_seeds():
    f = eth(64)
    stag = f[:12] + b"\x88\xa8\x00\xc8" + f[12:]
    ctag = f[:12] + b"\x81\x00\x20\x05" + f[12:]
    qinq = f[:12] + b"\x88\xa8\x00\x64\x81\x00\x00\x07" + f[12:]
    for op in range(4):
        for name, fr in [("plain", f), ("stag", stag), ("ctag", ctag), ("qinq", qinq)]:
            write("frame", f"{op}-{name}", u8(op) + u16(len(fr)) + u16(100) + u8(3) + u8(4) + fr)
    write("frame", "short", u8(0) + u16(13) + u16(1) + u8(0) + u8(0) + f[:13])


# ---- vhost_user ---------------------------------------------------------------------------
UADDR = 0x7F00_0000_0000
GET_FEATURES, SET_FEATURES, SET_OWNER, SET_MEM_TABLE = 1, 2, 3, 5
SET_VRING_NUM, SET_VRING_ADDR, SET_VRING_BASE, GET_VRING_BASE = 8, 9, 10, 11
SET_VRING_KICK, SET_VRING_CALL = 12, 13
GET_PROTOCOL_FEATURES, SET_PROTOCOL_FEATURES, GET_QUEUE_NUM, SET_VRING_ENABLE = 15, 16, 17, 18
GET_CONFIG, GET_MAX_MEM_SLOTS, ADD_MEM_REG, REM_MEM_REG = 24, 36, 37, 38


def msg(req, payload=b"", fds=(), need_reply=False, size=None):
    op = 0
    if size is not None:
        op |= 0x20
    if fds:
        op |= 0x40
    out = u8(op) + u8(req) + u8(0x09 if need_reply else 0x01) + u16(len(payload))
    if size is not None:
        out += u16(size)
    if fds:
        out += u8(len(fds)) + bytes(fds)
    return out + payload


def memfd_kind(pages):
    return (pages - 1) * 2  # even: memfd of kind/2 % 64 + 1 pages


EVENTFD = 1


def write_memfd(which, off, data):
    out = b""
    for i in range(0, len(data), 255):
        chunk = data[i:i + 255]
        out += u8(6) + u8(which) + u32(off + i) + u8(len(chunk)) + chunk
    return out


def handshake(pages=16, region_size=None, features=(1 << 32) | (1 << 30) | (1 << 29) | (1 << 15)):
    region_size = region_size or pages * 4096
    s = msg(SET_OWNER) + msg(GET_FEATURES) + u8(7) + msg(GET_PROTOCOL_FEATURES) + u8(7)
    s += msg(SET_PROTOCOL_FEATURES, u64((1 << 0) | (1 << 3) | (1 << 9)))
    s += msg(GET_QUEUE_NUM) + msg(GET_CONFIG, u32(0) + u32(12) + u32(0) + bytes(12))
    s += msg(SET_FEATURES, u64(features), need_reply=True)
    region = u64(0) + u64(region_size) + u64(UADDR) + u64(0)
    s += msg(SET_MEM_TABLE, u32(1) + u32(0) + region, fds=[memfd_kind(pages)], need_reply=True)
    for q, base in [(0, 0x0000), (1, 0x4000)]:
        s += msg(SET_VRING_NUM, u32(q) + u32(16), need_reply=True)
        s += msg(SET_VRING_BASE, u32(q) + u32(0), need_reply=True)
        addr = u32(q) + u32(0) + u64(UADDR + base) + u64(UADDR + base + 0x200) + u64(UADDR + base + 0x100) + u64(0)
        s += msg(SET_VRING_ADDR, addr, need_reply=True)
        s += msg(SET_VRING_KICK, u64(q), fds=[EVENTFD], need_reply=True)
        s += msg(SET_VRING_CALL, u64(q), fds=[EVENTFD], need_reply=True)
        s += msg(SET_VRING_ENABLE, u32(q) + u32(1), need_reply=True)
    return s


def tx_ring_image():
    # TX ring at 0x4000: one single-descriptor frame at 0x5000; RX ring at 0 with 4 buffers.
    img = bytearray(0x2000)
    f = bytes(12) + eth(60)
    img[0x0000:0x0010] = desc(0x5000, len(f))
    img[0x0100:0x0106] = u16(0) + u16(1) + u16(0)
    img[0x1000:0x1000 + len(f)] = f
    rx = bytearray(0x200)
    for i in range(4):
        rx[16 * i:16 * i + 16] = desc(0x6000 + 0x800 * i, 2048, F_WRITE)
    rx[0x100:0x104] = u16(0) + u16(4)
    for i in range(4):
        rx[0x104 + 2 * i:0x106 + 2 * i] = u16(i)
    return bytes(img), bytes(rx)


def vhost_seeds():
    write("vhost_user", "handshake", handshake())
    tx, rx = tx_ring_image()
    # eventfds in order: q0 kick, q0 call, q1 kick, q1 call.
    traffic = handshake() + write_memfd(0, 0x0000, rx) + write_memfd(0, 0x4000, tx[:0x110]) \
        + write_memfd(0, 0x5000, tx[0x1000:0x1048]) + u8(4) + u8(2) + u8(7) * 10
    write("vhost_user", "traffic", traffic)
    write("vhost_user", "traffic-then-get-base",
          traffic + msg(GET_VRING_BASE, u32(1) + u32(0)) + msg(GET_VRING_BASE, u32(0) + u32(0)))
    # Issue 11 finding 1: the frontend shrinks its memfd after a valid setup, then kicks.
    write("vhost_user", "sigbus-truncate-after-setup",
          traffic + u8(5) + u8(0) + u8(0) + u8(4) + u8(2) + u8(7), where="crashes")
    # Issue 11 finding 1: a region larger than its file, the rings past the end of the file.
    big = handshake(pages=1, region_size=0x10000) + write_memfd(0, 0, rx[:0x110]) + u8(4) + u8(2) + u8(7)
    write("vhost_user", "sigbus-region-larger-than-file", big, where="crashes")
    write("vhost_user", "add-rem-region",
          handshake() + msg(GET_MAX_MEM_SLOTS) + msg(ADD_MEM_REG, u64(0) + u64(0x10000 + 0) + u64(0x10000) + u64(UADDR + 0x10000) + u64(0),
                                                  fds=[memfd_kind(16)], need_reply=True)
          + msg(REM_MEM_REG, u64(0) + u64(0x10000) + u64(0x10000) + u64(UADDR + 0x10000) + u64(0), need_reply=True))
    write("vhost_user", "partial-header", msg(SET_OWNER) + b"\x00\x03\x01")
    write("vhost_user", "size-mismatch", msg(SET_FEATURES, u64(1 << 32), size=4000))


# ---- ctl_request --------------------------------------------------------------------------
def ctl_seeds():
    lines = [
        '{"cmd":"ports"}', '{"cmd":"fdb"}', '{"cmd":"stats"}', '{"cmd":"channels"}',
        '{"cmd":"metrics"}', '{"cmd":"policy"}',
        '{"cmd":"add-port","spec":"vm3,socket=/tmp/vm3.sock,channel=100,mac=52:54:00:00:00:03"}',
        '{"cmd":"add-port","spec":{"name":"vm3","socket":"/tmp/vm3.sock","channel":"300","mode":"connect","mtu":9000}}',
        '{"cmd":"remove-port","name":"vm1"}', '{"cmd":"remove-port","name":"nope"}',
        '{"cmd":"associate","name":"vm1","channel":200}',
        '{"cmd":"associate","name":"vm2","channel":"4094"}',
        '{"cmd":"associate","name":"vm2","channel":1e308}',
        '{"cmd":"disassociate","name":"vm1"}',
        '{"cmd":"set-policy","allow":[[100,200],["200",100]]}',
        '{"cmd":"set-policy","allow":[[100]]}',
        '{"cmd":"ports","x":1}', '{"cmd":', '',
    ]
    for i, line in enumerate(lines):
        write("ctl_request", f"{i:02}", line.encode())


# ---- config -------------------------------------------------------------------------------
def config_seeds():
    full = """[switch]
ctl = "/tmp/vswitch-fuzz-ctl.sock"
stats_interval_s = 60
log_level = "info"
poll_cores = [1]
event_threads = 2

[fdb]
aging_s = 300
mac_limit = 4096
capacity = 131072

[policy]
allow = [[100, 200]]

[[port]]
name = "vm1"
socket = "/tmp/vm1.sock"
channel = 100
mac = "52:54:00:00:01:01"
mode = "listen"
mac-limit = 64
mtu = 1500

[[port]]
name = "vm2"
socket = "/tmp/vm2.sock"
channel = "200"
mode = "connect"
"""
    write("config", "full", full.encode())
    write("config", "flags", b"\0vm1,socket=/tmp/a.sock,channel=100,mac=52:54:00:00:00:01,mtu=9000"
          b"\0vm2,socket=/tmp/b.sock,channel=200,mode=connect,mac-limit=5\0cores=0,1\0level=debug")
    write("config", "dup", b'[[port]]\nname="a"\nsocket="/tmp/a.sock"\nchannel=1\n'
          b'[[port]]\nname="a"\nsocket="/tmp/./a.sock"\nchannel=2\n')
    write("config", "bad-values", b'[fdb]\naging_s = 0\n[policy]\nallow=[[1,2,3]]\n'
          b'[[port]]\nname="x"\nsocket="/tmp/x.sock"\nchannel=1e308\nmtu=-1\n')
    write("config", "unknown-key", b'[switch]\nnope = 1\n[[uplink]]\nname="u"\n')
    write("config", "uplinks", b'[[uplink]]\nname="u0"\nkind="dot1ad"\ninterface="lo"\n'
          b'channels=[100, "200-299"]\nreflective-relay=true\n'
          b'\0up=u1,kind=vxlan,local=127.0.0.1:4789,remote=127.0.0.2,remote=127.0.0.3,channels=100+200'
          b'\0vm1,socket=/tmp/a.sock,channel=100,mode=vepa')


if __name__ == "__main__":
    desc_seeds()
    frame_seeds()
    vhost_seeds()
    ctl_seeds()
    config_seeds()
