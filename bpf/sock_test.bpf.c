// SPDX-License-Identifier: GPL-2.0
/* cgroup v2 sock_addr hooks: translate one virtual address to one backend
 * (connect/sendmsg) and back (recvmsg/getpeername), counting every call.
 * Addresses and ports are load-time constants in network byte order. */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

const volatile __u32 vip4 = 0;
const volatile __u32 backend4 = 0;
const volatile __u32 vip6[4] = {};
const volatile __u32 backend6[4] = {};
const volatile __u16 vip_port = 0;     /* network byte order */
const volatile __u16 backend_port = 0; /* network byte order */

enum hook {
	HOOK_CONNECT4, HOOK_CONNECT6, HOOK_SENDMSG4, HOOK_SENDMSG6,
	HOOK_RECVMSG4, HOOK_RECVMSG6, HOOK_GETPEERNAME4, HOOK_GETPEERNAME6,
	HOOK_MAX,
};

/* Calls per hook (index: enum hook) and translations per hook (+HOOK_MAX). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2 * HOOK_MAX);
	__type(key, __u32);
	__type(value, __u64);
} hook_calls SEC(".maps");

static __always_inline void count(__u32 hook, int translated)
{
	__u64 *v = bpf_map_lookup_elem(&hook_calls, &hook);

	if (v)
		__sync_fetch_and_add(v, 1);
	if (!translated)
		return;
	hook += HOOK_MAX;
	v = bpf_map_lookup_elem(&hook_calls, &hook);
	if (v)
		__sync_fetch_and_add(v, 1);
}

/* user_port holds the port in network byte order in its low 16 bits. */
static __always_inline int translate4(struct bpf_sock_addr *ctx, __u32 from, __u16 from_port,
				       __u32 to, __u16 to_port)
{
	if (ctx->user_ip4 != from || (__u16)ctx->user_port != from_port)
		return 0;
	ctx->user_ip4 = to;
	ctx->user_port = to_port;
	return 1;
}

static __always_inline int same6(struct bpf_sock_addr *ctx, const volatile __u32 *a)
{
	return ctx->user_ip6[0] == a[0] && ctx->user_ip6[1] == a[1] &&
	       ctx->user_ip6[2] == a[2] && ctx->user_ip6[3] == a[3];
}

static __always_inline int translate6(struct bpf_sock_addr *ctx, const volatile __u32 *from,
				       __u16 from_port, const volatile __u32 *to, __u16 to_port)
{
	if (!same6(ctx, from) || (__u16)ctx->user_port != from_port)
		return 0;
	ctx->user_ip6[0] = to[0];
	ctx->user_ip6[1] = to[1];
	ctx->user_ip6[2] = to[2];
	ctx->user_ip6[3] = to[3];
	ctx->user_port = to_port;
	return 1;
}

SEC("cgroup/connect4")
int sock_connect4(struct bpf_sock_addr *ctx)
{
	count(HOOK_CONNECT4, translate4(ctx, vip4, vip_port, backend4, backend_port));
	return 1;
}

SEC("cgroup/connect6")
int sock_connect6(struct bpf_sock_addr *ctx)
{
	count(HOOK_CONNECT6, translate6(ctx, vip6, vip_port, backend6, backend_port));
	return 1;
}

SEC("cgroup/sendmsg4")
int sock_sendmsg4(struct bpf_sock_addr *ctx)
{
	count(HOOK_SENDMSG4, translate4(ctx, vip4, vip_port, backend4, backend_port));
	return 1;
}

SEC("cgroup/sendmsg6")
int sock_sendmsg6(struct bpf_sock_addr *ctx)
{
	count(HOOK_SENDMSG6, translate6(ctx, vip6, vip_port, backend6, backend_port));
	return 1;
}

SEC("cgroup/recvmsg4")
int sock_recvmsg4(struct bpf_sock_addr *ctx)
{
	count(HOOK_RECVMSG4, translate4(ctx, backend4, backend_port, vip4, vip_port));
	return 1;
}

SEC("cgroup/recvmsg6")
int sock_recvmsg6(struct bpf_sock_addr *ctx)
{
	count(HOOK_RECVMSG6, translate6(ctx, backend6, backend_port, vip6, vip_port));
	return 1;
}

SEC("cgroup/getpeername4")
int sock_getpeername4(struct bpf_sock_addr *ctx)
{
	count(HOOK_GETPEERNAME4, translate4(ctx, backend4, backend_port, vip4, vip_port));
	return 1;
}

SEC("cgroup/getpeername6")
int sock_getpeername6(struct bpf_sock_addr *ctx)
{
	count(HOOK_GETPEERNAME6, translate6(ctx, backend6, backend_port, vip6, vip_port));
	return 1;
}

char LICENSE[] SEC("license") = "GPL";
