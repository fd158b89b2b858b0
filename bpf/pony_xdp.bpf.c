/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * pony_xdp: the XDP program of Pony's AF_XDP NIC (crate pony-xdp).
 *
 * Attached to one interface, it looks at every received frame once:
 *
 *   Ethernet, IPv4 (not a fragment), UDP to pony_ip:pony_port
 *       -> bpf_redirect_map(xsks, rx queue): the AF_XDP socket bound to the
 *          queue the frame arrived on (counted in PONY_XDP_REDIRECT); with no
 *          socket on that queue the frame goes to the kernel (PONY_XDP_NO_XSK)
 *   anything else (ARP, ICMP, IPv6, other ports, truncated frames)
 *       -> XDP_PASS, the kernel's stack as if no program were attached
 *          (PONY_XDP_PASS)
 *
 * pony_ip and pony_port are read-only data set by the loader before load, so
 * the verifier sees constants. Every header access is bounds-checked against
 * data_end before it is read, as the verifier requires.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

/* Not in vmlinux.h (they are macros in the uapi headers). */
#define PONY_ETH_P_IP 0x0800
#define PONY_IP_MF 0x2000
#define PONY_IP_OFFSET 0x1fff

/* Counter slots of pony_counters; pony-xdp's program.rs has the same order. */
enum pony_counter {
	PONY_XDP_REDIRECT = 0,
	PONY_XDP_PASS = 1,
	PONY_XDP_NO_XSK = 2,
	PONY_XDP_NR_COUNTERS = 3,
};

/* Destination, in network byte order; 0.0.0.0 matches any local address. */
const volatile __u32 pony_ip = 0;
const volatile __u16 pony_port = 0;

struct {
	__uint(type, BPF_MAP_TYPE_XSKMAP);
	__uint(max_entries, 64);
	__type(key, __u32);
	__type(value, __u32);
} pony_xsks SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, PONY_XDP_NR_COUNTERS);
	__type(key, __u32);
	__type(value, __u64);
} pony_counters SEC(".maps");

static __always_inline int count(__u32 slot, int verdict)
{
	__u64 *n = bpf_map_lookup_elem(&pony_counters, &slot);

	if (n)
		*n += 1;
	return verdict;
}

/* Whether the frame is a UDP datagram to Pony's address and port. */
static __always_inline bool is_pony(void *data, void *data_end)
{
	struct ethhdr *eth = data;
	struct iphdr *ip;
	struct udphdr *udp;
	__u32 ihl;

	if ((void *)(eth + 1) > data_end)
		return false;
	if (eth->h_proto != bpf_htons(PONY_ETH_P_IP))
		return false;
	ip = (void *)(eth + 1);
	if ((void *)(ip + 1) > data_end)
		return false;
	if (ip->protocol != IPPROTO_UDP)
		return false;
	/* A fragment's payload has no UDP header of its own: the kernel reassembles. */
	if (ip->frag_off & bpf_htons(PONY_IP_MF | PONY_IP_OFFSET))
		return false;
	if (pony_ip && ip->daddr != pony_ip)
		return false;
	ihl = ip->ihl * 4;
	if (ihl < sizeof(*ip))
		return false;
	udp = (void *)ip + ihl;
	if ((void *)(udp + 1) > data_end)
		return false;
	return udp->dest == pony_port;
}

SEC("xdp")
int pony_xdp(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	int verdict;

	if (!is_pony(data, data_end))
		return count(PONY_XDP_PASS, XDP_PASS);
	/* XDP_PASS as the default: no socket on this queue means the kernel gets it. */
	verdict = bpf_redirect_map(&pony_xsks, ctx->rx_queue_index, XDP_PASS);
	if (verdict == XDP_REDIRECT)
		return count(PONY_XDP_REDIRECT, verdict);
	return count(PONY_XDP_NO_XSK, verdict);
}

char _license[] SEC("license") = "GPL";
