// SPDX-License-Identifier: Apache-2.0
//
// The dot1ad uplink's XDP program: every frame the interface receives on queue Q goes to the
// AF_XDP socket in xsks_map[Q]; with no socket there, the frame goes on to the kernel's stack
// (XDP_PASS). Self-contained (no kernel or libbpf headers): built by vswitch/build.rs with
// `clang -target bpf`, loaded by the switch (aya) when the uplink opens.

typedef unsigned int __u32;
typedef unsigned long long __u64;

#define SEC(name) __attribute__((section(name), used))
// BTF-defined map fields, as libbpf's bpf_helpers.h writes them.
#define __uint(name, val) int(*name)[val]
#define __type(name, val) typeof(val) *name

// From the kernel's UAPI (linux/bpf.h): stable numbers.
#define BPF_MAP_TYPE_XSKMAP 17
#define XDP_PASS 2
#define BPF_FUNC_redirect_map 51

struct xdp_md {
	__u32 data;
	__u32 data_end;
	__u32 data_meta;
	__u32 ingress_ifindex;
	__u32 rx_queue_index;
	__u32 egress_ifindex;
};

static long (*bpf_redirect_map)(void *map, __u64 key, __u64 flags) = (void *)BPF_FUNC_redirect_map;

// One entry per receive queue; the switch binds queue 0 (entry 0).
struct {
	__uint(type, BPF_MAP_TYPE_XSKMAP);
	__uint(max_entries, 64);
	__type(key, __u32);
	__type(value, __u32);
} xsks_map SEC(".maps");

SEC("xdp")
int xsk_redirect(struct xdp_md *ctx)
{
	// The lower bits of flags are the action when the entry is empty (kernel 5.3+).
	return bpf_redirect_map(&xsks_map, ctx->rx_queue_index, XDP_PASS);
}

// bpf_redirect_map is not a GPL-only helper: the project's own licence.
char _license[] SEC("license") = "Apache-2.0";
