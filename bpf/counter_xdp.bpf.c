// SPDX-License-Identifier: GPL-2.0
/* Counts frames per IP protocol at XDP, then returns a load-time verdict.
 * Used by the library's tests, benchmarks and `waggle selfcheck`. */
#include "pkt_count.h"

/* Only frames of this IP protocol are counted; 0 counts everything. */
const volatile __u32 count_protocol = 0;
/* XDP action returned for every frame (XDP_PASS by default). */
const volatile __u32 verdict = XDP_PASS;

SEC("xdp")
int xdp_count(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u32 key = counter_key(data, data_end);

	if (count_protocol == 0 || key == count_protocol)
		counter_add(key, data_end - data);
	return verdict;
}

char LICENSE[] SEC("license") = "GPL";
