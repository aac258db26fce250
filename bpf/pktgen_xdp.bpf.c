// SPDX-License-Identifier: GPL-2.0
/* Sends every frame out of a load-time device. Run through BPF_PROG_TEST_RUN
 * in XDP live-frames mode it is a packet generator: each test-run repeat
 * transmits one real frame (tests and benchmarks use it in place of pktgen). */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

/* ifindex the frames leave through (in the caller's network namespace). */
const volatile __u32 out_ifindex = 0;

SEC("xdp")
int xdp_send(struct xdp_md *ctx)
{
	return bpf_redirect(out_ifindex, 0);
}

char LICENSE[] SEC("license") = "GPL";
