/* Per-protocol packet counting shared by the XDP and TC counter programs. */
#ifndef WAGGLE_LIB_PKT_COUNT_H
#define WAGGLE_LIB_PKT_COUNT_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "counter.h"

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, COUNTER_ENTRIES);
	__type(key, __u32);
	__type(value, struct counter_value);
} counters SEC(".maps");

/* Returns the counter key of the frame in [data, data_end). */
static __always_inline __u32 counter_key(void *data, void *data_end)
{
	struct ethhdr *eth = data;

	if ((void *)(eth + 1) > data_end)
		return COUNTER_KEY_NON_IP;
	if (eth->h_proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = (void *)(eth + 1);

		if ((void *)(ip + 1) > data_end)
			return COUNTER_KEY_NON_IP;
		return ip->protocol;
	}
	if (eth->h_proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = (void *)(eth + 1);

		if ((void *)(ip6 + 1) > data_end)
			return COUNTER_KEY_NON_IP;
		return ip6->nexthdr;
	}
	return COUNTER_KEY_NON_IP;
}

static __always_inline void counter_add(__u32 key, __u64 bytes)
{
	struct counter_value *v = bpf_map_lookup_elem(&counters, &key);

	if (!v)
		return;
	v->packets++;
	v->bytes += bytes;
}

#endif
