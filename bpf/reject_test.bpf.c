// SPDX-License-Identifier: GPL-2.0
/* A program the verifier must reject: it reads packet memory without a
 * bounds check. The library's tests expect a VerifierError naming
 * `unchecked_read` with "invalid access to packet" in the log excerpt. */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

SEC("xdp")
int unchecked_read(struct xdp_md *ctx)
{
	unsigned char *data = (void *)(long)ctx->data;

	return data[12] == 0x08 ? XDP_PASS : XDP_DROP;
}

char LICENSE[] SEC("license") = "GPL";
