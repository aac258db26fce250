/* Per-packet service load balancing for the endpoint programs: the
 * translation of connections to a service address that the socket programs
 * did not translate (processes outside the agent's cgroup), over the maps of
 * bpf/include/lb.h and bpf/include/lb_nat.h.
 *
 *   lb_nat_forward()  a packet to a service frontend: the connection's backend
 *                     (kept in `lb_nat`, else chosen by lb_select), then the
 *                     destination rewritten to it (DNAT). For hairpin (the
 *                     client is the backend) the source is rewritten to the
 *                     service address too, or the endpoint would get a packet
 *                     from its own address (a martian it drops).
 *   lb_nat_reverse()  a reply of a translated connection (after conntrack,
 *                     which tracks the translated tuple): its source back to
 *                     the service address and port (and, for hairpin, its
 *                     destination back to the client), from `lb_rev_nat`.
 *
 * Checksums are updated incrementally: the TCP/UDP checksum with
 * bpf_l4_csum_replace, BPF_F_PSEUDO_HDR for the addresses (the pseudo-header,
 * IPv6 by a precomputed difference over the 16 bytes), so CHECKSUM_PARTIAL
 * packets stay right; the IPv4 header checksum inline. Addresses and ports
 * are written in place (no store helper). A UDP/IPv4 checksum of 0 (none)
 * stays 0 (BPF_F_MARK_MANGLED_0).
 *
 * Per packet: one `lb_services` lookup for every TCP/UDP packet an endpoint
 * sends; for a service, one `lb_nat` and one `lb_backends` lookup (a new
 * connection adds lb_select and two updates); for a reply of a translated
 * connection (its conntrack entry has CT_F_SERVICE), one `lb_rev_nat` lookup.
 * Nothing loops over services or backends. */
#ifndef WAGGLE_LIB_LB_XLATE_H
#define WAGGLE_LIB_LB_XLATE_H

#include <linux/bpf.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <stddef.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "drop_reasons.h"
#include "eth.h"
#include "flow.h"
#include "lb.h"
#include "lb_nat.h"
#include "lb_select.h"

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, LB_NAT_MAX);
	__type(key, struct lb_nat_key);
	__type(value, struct lb_nat_entry);
} lb_nat SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, LB_NAT_MAX);
	__type(key, struct lb_nat_key);
	__type(value, struct lb_nat_entry);
} lb_rev_nat SEC(".maps");

/* Offsets of the addresses in the frame (Ethernet, then IPv4 or IPv6). */
#define LB_IPV4_SADDR_OFF (ETH_HLEN + offsetof(struct iphdr, saddr))
#define LB_IPV4_DADDR_OFF (ETH_HLEN + offsetof(struct iphdr, daddr))
#define LB_IPV4_CSUM_OFF (ETH_HLEN + offsetof(struct iphdr, check))
#define LB_IPV6_SADDR_OFF (ETH_HLEN + offsetof(struct ipv6hdr, saddr))
#define LB_IPV6_DADDR_OFF (ETH_HLEN + offsetof(struct ipv6hdr, daddr))

/* Addresses are 16 bytes at 4-byte aligned offsets everywhere here (pkt_info,
 * map keys and values, the scratch area): copied and compared by words, not
 * byte by byte as a memcpy of __u8 arrays would be. */
static __always_inline void lb_copy16(void *dst, const void *src)
{
	__u32 *d = dst;
	const __u32 *s = src;

	d[0] = s[0];
	d[1] = s[1];
	d[2] = s[2];
	d[3] = s[3];
}

static __always_inline int lb_addr_eq(const void *a, const void *b)
{
	const __u32 *x = a, *y = b;

	return ((x[0] ^ y[0]) | (x[1] ^ y[1]) | (x[2] ^ y[2]) | (x[3] ^ y[3])) == 0;
}

/* A tuple key; addresses are 16 bytes (IPv4 zero-padded, as pkt_info holds them). */
static __always_inline void lb_nat_tuple(struct lb_nat_key *k, __u8 family, __u8 proto, const __u8 *saddr,
					 const __u8 *daddr, __u16 sport_be, __u16 dport_be)
{
	lb_copy16(k->saddr, saddr);
	lb_copy16(k->daddr, daddr);
	k->sport = sport_be;
	k->dport = dport_be;
	k->proto = proto;
	k->family = family;
	k->pad = 0;
}

/* The connection's hash for Maglev: lb_hash3 over the source address, the
 * destination address (IPv6: each folded to 32 bits by XOR of its words, all
 * words in host order) and the ports (sport << 16 | dport, host order). */
static __always_inline __u32 lb_tuple_hash(const struct pkt_info *pi)
{
	const __u32 *s = (const void *)pi->saddr, *d = (const void *)pi->daddr;
	__u32 a, b;

	if (pi->family == FLOW_FAMILY_IPV4) {
		a = bpf_ntohl(s[0]);
		b = bpf_ntohl(d[0]);
	} else {
		a = bpf_ntohl(s[0]) ^ bpf_ntohl(s[1]) ^ bpf_ntohl(s[2]) ^ bpf_ntohl(s[3]);
		b = bpf_ntohl(d[0]) ^ bpf_ntohl(d[1]) ^ bpf_ntohl(d[2]) ^ bpf_ntohl(d[3]);
	}
	return lb_hash3(a, b, (__u32)pi->sport << 16 | pi->dport);
}

/* Offset of the TCP or UDP checksum in the frame. */
static __always_inline __u32 lb_l4_csum_off(const struct pkt_info *pi)
{
	return (__u32)pi->l4_off + (pi->proto == IPPROTO_TCP ? 16 : 6);
}

static __always_inline __u64 lb_l4_csum_flags(const struct pkt_info *pi)
{
	return pi->proto == IPPROTO_UDP ? BPF_F_MARK_MANGLED_0 : 0;
}

/* Ones' complement arithmetic (RFC 1071; byte-order independent): `sum`
 * of 32-bit words folded to 16 bits, and the 32-bit sum of replacing the
 * words `from` by `to` (what bpf_csum_diff would give, without the call). */
static __always_inline __u16 lb_csum_fold(__u64 sum)
{
	sum = (sum & 0xffffffff) + (sum >> 32);
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return (__u16)((sum & 0xffff) + (sum >> 16));
}

static __always_inline __u32 lb_csum_diff16(const __u32 *from, const __u32 *to)
{
	__u64 sum = (__u64)(__u32)~from[0] + (__u32)~from[1] + (__u32)~from[2] + (__u32)~from[3] +
		    to[0] + to[1] + to[2] + to[3];

	sum = (sum & 0xffffffff) + (sum >> 32);
	return (__u32)((sum & 0xffffffff) + (sum >> 32));
}

/* Rewrites the address at frame offset `off` (the IPv4 or IPv6 source or
 * destination) from `from` to `to` (4 or 16 bytes by family), with the
 * checksums: the TCP/UDP checksum through bpf_l4_csum_replace with
 * BPF_F_PSEUDO_HDR (right for CHECKSUM_PARTIAL packets too), the IPv4
 * header checksum and the address itself written in place. A later fragment
 * has no L4 header: its first fragment's checksum, over the whole datagram,
 * took the change. Returns 0 or a drop reason. */
static __always_inline int lb_rewrite_addr(struct __sk_buff *skb, const struct pkt_info *pi, __u32 off,
					   const __u8 *from, const __u8 *to)
{
	__u32 csum_off = lb_l4_csum_off(pi);
	__u64 flags = lb_l4_csum_flags(pi) | BPF_F_PSEUDO_HDR;
	int l4 = pi->fragment != FRAG_LATER;
	void *data, *data_end;

	if (pi->family == FLOW_FAMILY_IPV4) {
		__u32 old = *(const __u32 *)from, new = *(const __u32 *)to;
		struct iphdr *ip;
		__u32 *addr;

		if (l4 && bpf_l4_csum_replace(skb, csum_off, old, new, flags | 4) < 0)
			return DROP_ERROR_WHILE_CORRECTING_L4_CHECKSUM;
		data = pkt_data(skb);
		data_end = pkt_end(skb);
		ip = data + ETH_HLEN;
		addr = data + off;
		if ((void *)(ip + 1) > data_end || (void *)(addr + 1) > data_end)
			return DROP_ERROR_WRITING_TO_PACKET;
		ip->check = ~lb_csum_fold((__u64)(__u16)~ip->check + (__u32)~old + new);
		*addr = new;
		return 0;
	} else {
		/* No IPv6 header checksum: only the pseudo-header's sum moves. */
		__u32 diff = lb_csum_diff16((const __u32 *)from, (const __u32 *)to);
		__u32 *addr;

		if (l4 && bpf_l4_csum_replace(skb, csum_off, 0, diff, flags) < 0)
			return DROP_ERROR_WHILE_CORRECTING_L4_CHECKSUM;
		data = pkt_data(skb);
		data_end = pkt_end(skb);
		addr = data + off;
		if ((void *)(addr + 4) > data_end)
			return DROP_ERROR_WRITING_TO_PACKET;
		lb_copy16(addr, to);
		return 0;
	}
}

/* Rewrites the source (`which` 0) or destination (1) port (network order);
 * nothing for a later fragment, which has none. */
static __always_inline int lb_rewrite_port(struct __sk_buff *skb, const struct pkt_info *pi, int which,
					   __u16 from, __u16 to)
{
	__u32 off = (__u32)pi->l4_off + (which ? 2 : 0);
	void *data, *data_end;
	__u16 *port;

	if (from == to || pi->fragment == FRAG_LATER)
		return 0;
	if (bpf_l4_csum_replace(skb, lb_l4_csum_off(pi), from, to, lb_l4_csum_flags(pi) | 2) < 0)
		return DROP_ERROR_WHILE_CORRECTING_L4_CHECKSUM;
	/* Headers end within the first 4 KiB (IPv4 options, one IPv6 hop-by-hop header). */
	if (off > 4096)
		return DROP_ERROR_WRITING_TO_PACKET;
	data = pkt_data(skb);
	data_end = pkt_end(skb);
	port = data + off;
	if ((void *)(port + 1) > data_end)
		return DROP_ERROR_WRITING_TO_PACKET;
	*port = to;
	return 0;
}

/* Whether the packet can be translated at all: TCP or UDP with its ports. */
static __always_inline int lb_nat_candidate(const struct pkt_info *pi)
{
	return pi->l4_ok && (pi->proto == IPPROTO_TCP || pi->proto == IPPROTO_UDP);
}

/* Working memory of lb_nat_forward / lb_nat_reverse once a packet is known
 * to need them. The calling program's frame and a subprogram's must fit in
 * the 512-byte BPF stack together, so the translation keeps its keys and
 * entries here (one per CPU; a program runs to its end on one CPU). Not
 * pinned: each load has its own. */
struct lb_xlate_scratch {
	struct lb_nat_key key;
	struct lb_nat_key rkey;
	struct lb_nat_entry fwd;
	struct lb_nat_entry rev;
	__u8 vip[16];
	__u8 client[16];
} __attribute__((aligned(8)));

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct lb_xlate_scratch);
} lb_xlate_scratch SEC(".maps");

static __always_inline struct lb_xlate_scratch *lb_scratch(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&lb_xlate_scratch, &zero);
}

/* Service translation of a packet an endpoint sends, before conntrack and
 * policy (which then see the translated tuple: the backend's address and
 * identity). Not a service: nothing happens. A connection found in `lb_nat`
 * keeps its backend while that is in `lb_backends` with the same address
 * (terminating or not); otherwise (a new connection, or its backend was
 * removed) lb_select chooses one and both entries are written anew. On
 * success `pi` holds the translated tuple, FLOW_F_TRANSLATED and the service
 * ID. `from_ifindex` is 0 for a packet from a local endpoint (every service
 * translates); for a packet that arrived on host device `from_ifindex` only
 * NodePort frontends translate, and the connection's entries remember the
 * device (its replies leave through it). Returns 0 or a drop reason
 * (DROP_SERVICE_BACKEND_NOT_FOUND: the service has no backend taking
 * connections). A BPF subprogram: its stack does not add to the caller's
 * inlined frame. */
static __noinline int lb_nat_forward(struct __sk_buff *skb, struct pkt_info *pi, __u32 from_ifindex)
{
	struct lb_xlate_scratch *s;
	struct lb_service_key skey;
	struct lb_nat_entry *nat;
	struct lb_service *svc;
	struct lb_backend *be = NULL;
	__u16 sport, dport;
	__u32 backend_id = 0;
	int hairpin, ret;

	if (!lb_nat_candidate(pi))
		return 0;
	sport = bpf_htons(pi->sport);
	dport = bpf_htons(pi->dport);
	svc = lb_lookup_service(&skey, pi->family, pi->daddr, dport, pi->proto);
	if (!svc || (from_ifindex && !(svc->flags & LB_F_NODEPORT)))
		return 0;
	s = lb_scratch();
	if (!s)
		return 0;
	lb_copy16(s->vip, pi->daddr);
	lb_copy16(s->client, pi->saddr);
	lb_nat_tuple(&s->key, pi->family, pi->proto, s->client, s->vip, sport, dport);
	nat = bpf_map_lookup_elem(&lb_nat, &s->key);
	if (nat) {
		s->fwd = *nat;
		backend_id = s->fwd.backend_id;
		be = bpf_map_lookup_elem(&lb_backends, &backend_id);
		if (be && !lb_addr_eq(be->addr, s->fwd.addr))
			be = NULL;
		if (!be) {
			/* The backend was removed (or its ID now names another):
			 * its reverse entry goes, a new backend is chosen. */
			lb_nat_tuple(&s->rkey, pi->family, pi->proto, s->fwd.addr,
				     (s->fwd.flags & LB_NAT_F_HAIRPIN) ? s->vip : s->client, s->fwd.port, sport);
			bpf_map_delete_elem(&lb_rev_nat, &s->rkey);
		}
	} else {
		/* A reply of a hairpin connection whose client port happens to be
		 * a port of the same service address: not a new connection. */
		lb_nat_tuple(&s->rkey, pi->family, pi->proto, s->client, s->vip, sport, dport);
		if (bpf_map_lookup_elem(&lb_rev_nat, &s->rkey))
			return 0;
	}
	if (!be) {
		/* The tail of a datagram whose head chose no backend here. */
		if (pi->fragment == FRAG_LATER)
			return DROP_FIRST_LOGICAL_DATAGRAM_FRAGMENT_NOT_FOUND;
		be = lb_select(&skey, svc, s->client, pi->family, lb_tuple_hash(pi), &backend_id);
		if (!be || be->family != pi->family)
			return DROP_SERVICE_BACKEND_NOT_FOUND;
		lb_copy16(s->fwd.addr, be->addr);
		/* Port 0: the service's own port. */
		s->fwd.port = be->port ? be->port : dport;
		s->fwd.flags = lb_addr_eq(be->addr, s->client) ? LB_NAT_F_HAIRPIN : 0;
		s->fwd.pad = 0;
		s->fwd.backend_id = backend_id;
		s->fwd.service_id = svc->service_id;
		s->fwd.ifindex = from_ifindex;
		bpf_map_update_elem(&lb_nat, &s->key, &s->fwd, BPF_ANY);
		lb_copy16(s->rev.addr, s->vip);
		s->rev.port = dport;
		s->rev.flags = s->fwd.flags;
		s->rev.pad = 0;
		s->rev.backend_id = backend_id;
		s->rev.service_id = s->fwd.service_id;
		s->rev.ifindex = from_ifindex;
		lb_nat_tuple(&s->rkey, pi->family, pi->proto, s->fwd.addr,
			     (s->fwd.flags & LB_NAT_F_HAIRPIN) ? s->vip : s->client, s->fwd.port, sport);
		bpf_map_update_elem(&lb_rev_nat, &s->rkey, &s->rev, BPF_ANY);
	}
	hairpin = s->fwd.flags & LB_NAT_F_HAIRPIN;

	/* DNAT; for hairpin also the source to the service address. */
	if (pi->family == FLOW_FAMILY_IPV4) {
		ret = lb_rewrite_addr(skb, pi, LB_IPV4_DADDR_OFF, s->vip, s->fwd.addr);
		if (!ret && hairpin)
			ret = lb_rewrite_addr(skb, pi, LB_IPV4_SADDR_OFF, s->client, s->vip);
	} else {
		ret = lb_rewrite_addr(skb, pi, LB_IPV6_DADDR_OFF, s->vip, s->fwd.addr);
		if (!ret && hairpin)
			ret = lb_rewrite_addr(skb, pi, LB_IPV6_SADDR_OFF, s->client, s->vip);
	}
	if (!ret)
		ret = lb_rewrite_port(skb, pi, 1, dport, s->fwd.port);
	if (ret)
		return ret;
	lb_copy16(pi->daddr, s->fwd.addr);
	if (hairpin)
		lb_copy16(pi->saddr, s->vip);
	pi->dport = bpf_ntohs(s->fwd.port);
	pi->flags |= FLOW_F_TRANSLATED;
	pi->service_id = s->fwd.service_id;
	return 0;
}

/* Reverse translation of a conntrack reply (call it after conntrack, which
 * matched the reply on the translated tuple): when `lb_rev_nat` has the
 * packet's tuple, the source becomes the service address and port again, and
 * for hairpin the destination becomes the client (the packet's own source).
 * `pi` keeps the tuple conntrack saw (the real ends, for events) and gets
 * FLOW_F_TRANSLATED and the service ID. Returns 0 (nothing to do), 1 (done),
 * 2 (done, hairpin: the destination changed), 3 (done, a NodePort connection
 * from outside: the reply leaves through host device lb_rev_ifindex()) or a
 * drop reason (>= 130). */
#define LB_REV_NONE 0
#define LB_REV_DONE 1
#define LB_REV_HAIRPIN 2
#define LB_REV_NODEPORT 3

static __noinline __attribute__((unused)) int lb_nat_reverse(struct __sk_buff *skb, struct pkt_info *pi)
{
	struct lb_xlate_scratch *s;
	struct lb_nat_entry *found;
	__u16 sport;
	int ret, done = LB_REV_DONE;

	if (!lb_nat_candidate(pi))
		return LB_REV_NONE;
	s = lb_scratch();
	if (!s)
		return LB_REV_NONE;
	sport = bpf_htons(pi->sport);
	lb_nat_tuple(&s->rkey, pi->family, pi->proto, pi->saddr, pi->daddr, sport, bpf_htons(pi->dport));
	found = bpf_map_lookup_elem(&lb_rev_nat, &s->rkey);
	if (!found)
		return LB_REV_NONE;
	s->rev = *found;
	if (s->rev.flags & LB_NAT_F_HAIRPIN) {
		ret = lb_rewrite_addr(skb, pi, pi->family == FLOW_FAMILY_IPV4 ? LB_IPV4_DADDR_OFF : LB_IPV6_DADDR_OFF,
				      pi->daddr, pi->saddr);
		if (ret)
			return ret;
		done = LB_REV_HAIRPIN;
	}
	ret = lb_rewrite_addr(skb, pi, pi->family == FLOW_FAMILY_IPV4 ? LB_IPV4_SADDR_OFF : LB_IPV6_SADDR_OFF,
			      pi->saddr, s->rev.addr);
	if (!ret)
		ret = lb_rewrite_port(skb, pi, 0, sport, s->rev.port);
	if (ret)
		return ret;
	pi->flags |= FLOW_F_TRANSLATED;
	pi->service_id = s->rev.service_id;
	if (done == LB_REV_DONE && s->rev.ifindex)
		done = LB_REV_NODEPORT;
	return done;
}

/* After lb_nat_reverse() said LB_REV_NODEPORT: the host device the reply
 * leaves through (0: none known). */
static __always_inline __u32 lb_rev_ifindex(void)
{
	struct lb_xlate_scratch *s = lb_scratch();

	return s ? s->rev.ifindex : 0;
}

/* For a conntrack entry's policy re-check: whether the connection `key`
 * (original direction; ports in host order, as conntrack keeps them) is a
 * hairpin connection, whose source address is the service's and whose real
 * source is the destination endpoint itself. */
static __always_inline int lb_nat_is_hairpin(__u8 family, __u8 proto, const __u8 *saddr, const __u8 *daddr,
					     __u16 sport, __u16 dport)
{
	struct lb_nat_entry *rev;
	struct lb_nat_key key;

	if (proto != IPPROTO_TCP && proto != IPPROTO_UDP)
		return 0;
	lb_nat_tuple(&key, family, proto, daddr, saddr, bpf_htons(dport), bpf_htons(sport));
	rev = bpf_map_lookup_elem(&lb_rev_nat, &key);
	return rev && (rev->flags & LB_NAT_F_HAIRPIN);
}

#endif
