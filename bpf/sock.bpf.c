// SPDX-License-Identifier: GPL-2.0
/* Socket-level service load balancing at the cgroup v2 sock_addr hooks.
 *
 * Attached (by src/datapath/sock.ts) to the agent's cgroup root, so it runs
 * for every socket created below it:
 *
 * - connect4/6 (TCP, connected UDP): a connect to a service frontend
 *   (lb_services) is sent to one of its backends by rewriting the address the
 *   application passed. The kernel then connects to the backend directly: no
 *   per-packet NAT, no conntrack entry for the translation.
 * - sendmsg4/6 (unconnected UDP): the same, per datagram, with the backend
 *   kept per socket and service (lb_sock_udp) so that one socket talks to one
 *   backend while that backend lasts.
 * - recvmsg4/6 (UDP) and getpeername4/6: the backend's address is shown as
 *   the service address the application asked for (lb_sock_revnat), so it
 *   never learns that it talks to a backend.
 *
 * Backend choice is lb_select (bpf/lib/lb_select.h): session affinity (keyed
 * by the client's network namespace: see LB_AFFINITY_NETNS), else Maglev,
 * else a random slot. The Maglev hash is lb_hash3 over the socket cookie and
 * the service port and protocol: a socket has no source port yet at connect
 * time, so the 5-tuple does not exist; the cookie is unique per socket and
 * fixed for its life, so the same socket (a reconnect, every datagram of an
 * unconnected UDP socket) hashes to the same table entry while distinct
 * sockets spread over the table.
 *
 * A service with no backend taking connections refuses: connect() and
 * sendmsg() fail with ECONNREFUSED (bpf_set_retval), as Kubernetes expects of
 * a service without endpoints (kube-proxy rejects with ICMP port
 * unreachable, which a TCP client sees as ECONNREFUSED).
 *
 * IPv4-mapped IPv6 (an IPv6 socket connecting or sending to ::ffff:VIP) is
 * looked up as the IPv4 service and rewritten to ::ffff:BACKEND; its reverse
 * entries are stored as IPv4. The kernel runs only the *6 hook for such a
 * connect, and the *4 hook for such a sendmsg: both end up in the same form.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "lb.h"
#include "lb_select.h"
#include "lb_sock.h"

#define AF_INET 2
#define AF_INET6 10
#define IPPROTO_TCP 6
#define IPPROTO_UDP 17
#define ECONNREFUSED 111

/* An address as the application passed it (or the kernel reports it). */
struct sock_addr {
	__u8 addr[16];  /* network order; IPv4 (also v4-mapped) in the first 4 bytes */
	__u16 port;     /* network order */
	__u8 family;    /* AF_INET for IPv4 and IPv4-mapped IPv6 */
	__u8 mapped;    /* an IPv6 hook seeing ::ffff:a.b.c.d */
};

static __always_inline void read_addr(struct bpf_sock_addr *ctx, const int v6, struct sock_addr *a)
{
	__u32 w[4] = {};

	__builtin_memset(a, 0, sizeof(*a));
	a->port = (__u16)ctx->user_port;
	if (!v6) {
		w[0] = ctx->user_ip4;
		__builtin_memcpy(a->addr, w, 4);
		a->family = AF_INET;
		return;
	}
	w[0] = ctx->user_ip6[0];
	w[1] = ctx->user_ip6[1];
	w[2] = ctx->user_ip6[2];
	w[3] = ctx->user_ip6[3];
	if (w[0] == 0 && w[1] == 0 && w[2] == bpf_htonl(0xffff)) {
		__builtin_memcpy(a->addr, &w[3], 4);
		a->family = AF_INET;
		a->mapped = 1;
		return;
	}
	__builtin_memcpy(a->addr, w, 16);
	a->family = AF_INET6;
}

/* Rewrites the hook's address to `addr` (family as `as` says) and `port`. */
static __always_inline void write_addr(struct bpf_sock_addr *ctx, const int v6, const struct sock_addr *as,
				       const __u8 *addr, __u16 port)
{
	__u32 w[4];

	__builtin_memcpy(w, addr, 16);
	if (!v6) {
		ctx->user_ip4 = w[0];
	} else if (as->mapped) {
		ctx->user_ip6[3] = w[0]; /* keeps ::ffff: */
	} else {
		ctx->user_ip6[0] = w[0];
		ctx->user_ip6[1] = w[1];
		ctx->user_ip6[2] = w[2];
		ctx->user_ip6[3] = w[3];
	}
	ctx->user_port = port;
}

static __always_inline int refuse(void)
{
	lb_sock_count(LB_SOCK_STAT_NO_BACKEND);
	bpf_set_retval(-ECONNREFUSED);
	return 0;
}

/* A backend of `svc` for this socket, or NULL when none is usable. */
static __always_inline struct lb_backend *select_backend(struct bpf_sock_addr *ctx, struct lb_service_key *key,
							 const struct lb_service *svc, const struct sock_addr *dst,
							 __u8 proto, __u64 cookie, __u32 *id)
{
	__u8 client[16] = {};
	struct lb_backend *be;
	__u32 hash;

	if (svc->flags & LB_F_AFFINITY) {
		__u64 netns = bpf_get_netns_cookie(ctx);

		__builtin_memcpy(client, &netns, 8);
	}
	hash = lb_hash3((__u32)cookie, (__u32)(cookie >> 32), ((__u32)bpf_ntohs(dst->port) << 16) | proto);
	be = lb_select(key, svc, client, LB_AFFINITY_NETNS, hash, id);
	if (!be || be->family != dst->family)
		return NULL;
	return be;
}

/* Remembers that this socket's `be` is the service at `dst`. */
static __always_inline void revnat_update(__u64 cookie, const struct lb_backend *be, const struct sock_addr *dst,
					  __u32 service_id)
{
	struct lb_sock_revnat_key k = {};
	struct lb_sock_revnat v = {};
	struct lb_sock_revnat *old;
	__u32 a[4], b[4];

	k.cookie = cookie;
	k.port = be->port;
	k.family = be->family;
	if (be->family == AF_INET)
		__builtin_memcpy(k.addr, be->addr, 4);
	else
		__builtin_memcpy(k.addr, be->addr, 16);
	__builtin_memcpy(v.addr, dst->addr, 16);
	v.port = dst->port;
	v.family = dst->family;
	v.service_id = service_id;
	old = bpf_map_lookup_elem(&lb_sock_revnat, &k);
	if (old) {
		__builtin_memcpy(a, old->addr, 16);
		__builtin_memcpy(b, v.addr, 16);
		if (old->port == v.port && old->family == v.family && old->service_id == v.service_id &&
		    a[0] == b[0] && a[1] == b[1] && a[2] == b[2] && a[3] == b[3])
			return; /* every datagram of a UDP socket: no write when nothing changed */
	}
	if (bpf_map_update_elem(&lb_sock_revnat, &k, &v, BPF_ANY))
		lb_sock_count(LB_SOCK_STAT_REVNAT_FULL);
}

static __always_inline int sock_connect(struct bpf_sock_addr *ctx, const int v6)
{
	struct lb_service_key key;
	struct sock_addr dst;
	struct lb_service *svc;
	struct lb_backend *be;
	__u32 proto = ctx->protocol, id = 0;
	__u64 cookie;

	if (proto != IPPROTO_TCP && proto != IPPROTO_UDP)
		return 1;
	read_addr(ctx, v6, &dst);
	svc = lb_lookup_service(&key, dst.family, dst.addr, dst.port, proto);
	if (!svc)
		return 1;
	cookie = bpf_get_socket_cookie(ctx);
	be = select_backend(ctx, &key, svc, &dst, proto, cookie, &id);
	if (!be)
		return refuse();
	revnat_update(cookie, be, &dst, svc->service_id);
	write_addr(ctx, v6, &dst, be->addr, be->port);
	lb_sock_count(LB_SOCK_STAT_CONNECT_XLATE);
	return 1;
}

static __always_inline int sock_sendmsg(struct bpf_sock_addr *ctx, const int v6)
{
	struct lb_sock_udp_key ukey = {};
	struct lb_service_key key;
	struct lb_sock_udp *sticky;
	struct lb_backend *be = NULL;
	struct lb_service *svc;
	struct sock_addr dst;
	__u32 id = 0;
	__u64 cookie;

	if (ctx->protocol != IPPROTO_UDP)
		return 1;
	read_addr(ctx, v6, &dst);
	svc = lb_lookup_service(&key, dst.family, dst.addr, dst.port, IPPROTO_UDP);
	if (!svc)
		return 1;
	cookie = bpf_get_socket_cookie(ctx);
	ukey.cookie = cookie;
	__builtin_memcpy(ukey.addr, dst.addr, 16);
	ukey.port = dst.port;
	ukey.family = dst.family;
	sticky = bpf_map_lookup_elem(&lb_sock_udp, &ukey);
	if (sticky && sticky->service_id == svc->service_id && svc->count > 0) {
		id = sticky->backend_id;
		be = bpf_map_lookup_elem(&lb_backends, &id);
		/* Same rule as an affinity entry: the backend must still be there and not terminating. */
		if (be && ((be->flags & LB_BACKEND_F_TERMINATING) || be->family != dst.family))
			be = NULL;
		if (be)
			lb_sock_count(LB_SOCK_STAT_UDP_STICKY);
	}
	if (!be) {
		struct lb_sock_udp choice = {};

		be = select_backend(ctx, &key, svc, &dst, IPPROTO_UDP, cookie, &id);
		if (!be)
			return refuse();
		choice.service_id = svc->service_id;
		choice.backend_id = id;
		bpf_map_update_elem(&lb_sock_udp, &ukey, &choice, BPF_ANY);
	}
	revnat_update(cookie, be, &dst, svc->service_id);
	write_addr(ctx, v6, &dst, be->addr, be->port);
	lb_sock_count(LB_SOCK_STAT_SENDMSG_XLATE);
	return 1;
}

/* recvmsg (the datagram's source) and getpeername (the peer): backend → service. */
static __always_inline int sock_revnat(struct bpf_sock_addr *ctx, const int v6)
{
	struct lb_sock_revnat_key k = {};
	struct lb_sock_revnat *rv;
	struct sock_addr src;

	read_addr(ctx, v6, &src);
	k.cookie = bpf_get_socket_cookie(ctx);
	__builtin_memcpy(k.addr, src.addr, 16);
	k.port = src.port;
	k.family = src.family;
	rv = bpf_map_lookup_elem(&lb_sock_revnat, &k);
	if (!rv || rv->family != src.family)
		return 1;
	write_addr(ctx, v6, &src, rv->addr, rv->port);
	lb_sock_count(LB_SOCK_STAT_REVNAT);
	return 1;
}

SEC("cgroup/connect4")
int lb_connect4(struct bpf_sock_addr *ctx)
{
	return sock_connect(ctx, 0);
}

SEC("cgroup/connect6")
int lb_connect6(struct bpf_sock_addr *ctx)
{
	return sock_connect(ctx, 1);
}

SEC("cgroup/sendmsg4")
int lb_sendmsg4(struct bpf_sock_addr *ctx)
{
	return sock_sendmsg(ctx, 0);
}

SEC("cgroup/sendmsg6")
int lb_sendmsg6(struct bpf_sock_addr *ctx)
{
	return sock_sendmsg(ctx, 1);
}

SEC("cgroup/recvmsg4")
int lb_recvmsg4(struct bpf_sock_addr *ctx)
{
	return sock_revnat(ctx, 0);
}

SEC("cgroup/recvmsg6")
int lb_recvmsg6(struct bpf_sock_addr *ctx)
{
	return sock_revnat(ctx, 1);
}

SEC("cgroup/getpeername4")
int lb_getpeername4(struct bpf_sock_addr *ctx)
{
	return sock_revnat(ctx, 0);
}

SEC("cgroup/getpeername6")
int lb_getpeername6(struct bpf_sock_addr *ctx)
{
	return sock_revnat(ctx, 1);
}

char LICENSE[] SEC("license") = "GPL";
