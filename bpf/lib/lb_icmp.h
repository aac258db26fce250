/* ICMP errors about connections the per-packet load balancer translated.
 * An error quotes the packet that caused it, and the host receiving the error
 * finds its socket by the quoted tuple, so the quote must show the addresses
 * that host knows:
 *
 *   from the backend's side (lb_reverse: "port unreachable" from a backend
 *   with no listener, "packet too big" from a hop towards it): the quote is
 *   client → backend:port; the client knows client → service:port. The quoted
 *   destination (address and port) becomes the service's, and the error's
 *   own source too when it is the backend itself. Found in `lb_rev_nat`.
 *
 *   from the client's side (lb_forward: "packet too big" from a router on
 *   the way out to a NodePort client, "port unreachable" from a client that
 *   went away): the quote is service:port → client; the backend knows
 *   backend:port → client. The quoted source becomes the backend's, and the
 *   error's destination too when it is the service address. Found in
 *   `lb_nat`, and only when the connection came in where the error does (the
 *   same host device, or from an endpoint for an endpoint's connection).
 *
 * Only TCP and UDP quotes are translated; a hairpin connection's errors
 * (the client is the backend) pass as they are. The ICMP checksum follows
 * every change (ICMPv6 also for its pseudo-header), the quoted IPv4 header's
 * checksum too; the quoted TCP/UDP checksum is left as it is: the receiver
 * of an error does not verify it (and the usual 8-byte quote of a TCP header
 * does not even hold it). Rare packets: loads and stores go through helpers.
 */
#ifndef WAGGLE_LIB_LB_ICMP_H
#define WAGGLE_LIB_LB_ICMP_H

#include <linux/bpf.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <stddef.h>
#include <bpf/bpf_helpers.h>
#include "ct.h"
#include "flow.h"
#include "lb_xlate.h"

/* Replaces the 16 bytes at `off` (an IPv6 address), `from` being what is
 * there, by `to`, with the ICMPv6 checksum at `csum_off` (`csum_flags`
 * BPF_F_PSEUDO_HDR when the address is in its pseudo-header). */
static __always_inline int lb_icmp_store16(struct __sk_buff *skb, __u32 off, const __u8 *from, const __u8 *to,
					   __u32 csum_off, __u64 csum_flags)
{
	if (bpf_l4_csum_replace(skb, csum_off, 0, lb_csum_diff16((const __u32 *)from, (const __u32 *)to), csum_flags) < 0 ||
	    bpf_skb_store_bytes(skb, off, to, 16, 0) < 0)
		return DROP_ERROR_WRITING_TO_PACKET;
	return 0;
}

/* The error's own address at `off`: IPv4 with its header checksum (ICMP has
 * no pseudo-header), IPv6 with the ICMPv6 checksum's pseudo-header. Returns 0
 * or a drop reason. */
static __always_inline int lb_icmp_outer_addr(struct __sk_buff *skb, int v4, __u32 off, const __u8 *from,
					      const __u8 *to, __u32 csum_off)
{
	if (v4) {
		__u32 old = *(const __u32 *)from, new = *(const __u32 *)to;

		if (bpf_l3_csum_replace(skb, ETH_HLEN + offsetof(struct iphdr, check), old, new, 4) < 0 ||
		    bpf_skb_store_bytes(skb, off, &new, 4, 0) < 0)
			return DROP_ERROR_WRITING_TO_PACKET;
		return 0;
	}
	return lb_icmp_store16(skb, off, from, to, csum_off, BPF_F_PSEUDO_HDR);
}

/* An address at `off` in the quoted header, which the ICMP checksum covers;
 * a quoted IPv4 header's own checksum at `quoted_csum_off` changes with it
 * (and the ICMP checksum with that). Returns 0 or a drop reason. */
static __always_inline int lb_icmp_quoted_addr(struct __sk_buff *skb, int v4, __u32 off, const __u8 *from,
					       const __u8 *to, __u32 csum_off, __u32 quoted_csum_off)
{
	if (v4) {
		__u32 old = *(const __u32 *)from, new = *(const __u32 *)to;
		__u16 check, fixed;

		if (bpf_skb_load_bytes(skb, quoted_csum_off, &check, 2) < 0)
			return DROP_INVALID_PACKET_DROPPED;
		fixed = ~lb_csum_fold((__u64)(__u16)~check + (__u32)~old + new);
		if (bpf_l4_csum_replace(skb, csum_off, old, new, 4) < 0 ||
		    bpf_l4_csum_replace(skb, csum_off, check, fixed, 2) < 0 ||
		    bpf_skb_store_bytes(skb, quoted_csum_off, &fixed, 2, 0) < 0 ||
		    bpf_skb_store_bytes(skb, off, &new, 4, 0) < 0)
			return DROP_ERROR_WRITING_TO_PACKET;
		return 0;
	}
	return lb_icmp_store16(skb, off, from, to, csum_off, 0);
}

/* Translates the ICMP error in `pi` (icmp_is_error) about a translated
 * connection: `reply` 1 for an error from the backend's side, 0 for one from
 * the client's side arriving on host device `from_ifindex` (0: from an
 * endpoint). On success `pi` has FLOW_F_TRANSLATED and the service; from the
 * client's side its destination is the backend when the error's was the
 * service address. Returns LB_REV_NONE (nothing to do), LB_REV_DONE,
 * LB_REV_NODEPORT (from the backend's side, about a NodePort connection from
 * outside: out through lb_rev_ifindex()) or a drop reason. A BPF subprogram. */
static __noinline int lb_icmp_xlate(struct __sk_buff *skb, struct pkt_info *pi, int reply, __u32 from_ifindex)
{
	__u32 csum_off = (__u32)pi->l4_off + 2, quote = (__u32)pi->l4_off + 8, quote_l4, addr_off, outer_off;
	int v4 = pi->family == FLOW_FAMILY_IPV4, ret;
	struct lb_xlate_scratch *s;
	struct lb_nat_entry *found;
	__be16 ports[2], old_port;
	__u8 vihl, proto, *old_addr;

	if (!pi->l4_ok || pi->fragment == FRAG_LATER)
		return LB_REV_NONE;
	s = lb_scratch();
	if (!s)
		return LB_REV_NONE;
	/* The quote's source in s->client, its destination in s->vip. */
	__builtin_memset(s->client, 0, 16);
	__builtin_memset(s->vip, 0, 16);
	/* Field by field into the scratch area: the headers would not fit the
	 * stack beside the calling program's frame. */
	if (bpf_skb_load_bytes(skb, quote, &vihl, 1) < 0)
		return LB_REV_NONE;
	if (v4) {
		if ((vihl >> 4) != 4 || (vihl & 0xf) < 5 ||
		    bpf_skb_load_bytes(skb, quote + offsetof(struct iphdr, protocol), &proto, 1) < 0 ||
		    bpf_skb_load_bytes(skb, quote + offsetof(struct iphdr, saddr), s->client, 4) < 0 ||
		    bpf_skb_load_bytes(skb, quote + offsetof(struct iphdr, daddr), s->vip, 4) < 0)
			return LB_REV_NONE;
		quote_l4 = quote + (vihl & 0xf) * 4;
		addr_off = quote + (reply ? offsetof(struct iphdr, daddr) : offsetof(struct iphdr, saddr));
		outer_off = reply ? LB_IPV4_SADDR_OFF : LB_IPV4_DADDR_OFF;
	} else {
		if ((vihl >> 4) != 6 ||
		    bpf_skb_load_bytes(skb, quote + offsetof(struct ipv6hdr, nexthdr), &proto, 1) < 0 ||
		    bpf_skb_load_bytes(skb, quote + offsetof(struct ipv6hdr, saddr), s->client, 16) < 0 ||
		    bpf_skb_load_bytes(skb, quote + offsetof(struct ipv6hdr, daddr), s->vip, 16) < 0)
			return LB_REV_NONE;
		quote_l4 = quote + sizeof(struct ipv6hdr);
		addr_off = quote + (reply ? offsetof(struct ipv6hdr, daddr) : offsetof(struct ipv6hdr, saddr));
		outer_off = reply ? LB_IPV6_SADDR_OFF : LB_IPV6_DADDR_OFF;
	}
	if ((proto != IPPROTO_TCP && proto != IPPROTO_UDP) || bpf_skb_load_bytes(skb, quote_l4, ports, 4) < 0)
		return LB_REV_NONE;
	/* The quoted packet went the other way: its reverse is the tuple the maps know. */
	lb_nat_tuple(&s->key, pi->family, proto, s->vip, s->client, ports[1], ports[0]);
	if (reply)
		found = bpf_map_lookup_elem(&lb_rev_nat, &s->key);
	else
		found = bpf_map_lookup_elem(&lb_nat, &s->key);
	if (!found || (found->flags & LB_NAT_F_HAIRPIN) || (!reply && found->ifindex != from_ifindex))
		return LB_REV_NONE;
	s->rev = *found;
	old_addr = reply ? s->vip : s->client;
	old_port = reply ? ports[1] : ports[0];

	/* The error's own address first (it compares with the quote's, unchanged yet). */
	if (lb_addr_eq(reply ? pi->saddr : pi->daddr, old_addr)) {
		ret = lb_icmp_outer_addr(skb, v4, outer_off, old_addr, s->rev.addr, csum_off);
		if (ret)
			return ret;
		if (!reply)
			lb_copy16(pi->daddr, s->rev.addr);
	}
	ret = lb_icmp_quoted_addr(skb, v4, addr_off, old_addr, s->rev.addr, csum_off, quote + offsetof(struct iphdr, check));
	if (ret)
		return ret;
	if (old_port != s->rev.port) {
		if (bpf_l4_csum_replace(skb, csum_off, old_port, s->rev.port, 2) < 0 ||
		    bpf_skb_store_bytes(skb, quote_l4 + (reply ? 2 : 0), &s->rev.port, 2, 0) < 0)
			return DROP_ERROR_WRITING_TO_PACKET;
	}
	pi->flags |= FLOW_F_TRANSLATED;
	pi->service_id = s->rev.service_id;
	return reply && s->rev.ifindex ? LB_REV_NODEPORT : LB_REV_DONE;
}

/* Service translation of what an endpoint or a host device sends towards a
 * backend: a TCP/UDP packet to a frontend (lb_nat_forward) or an ICMP error
 * about a translated connection. Returns 0 or a drop reason. */
static __always_inline int lb_forward(struct __sk_buff *skb, struct pkt_info *pi, __u32 from_ifindex)
{
	int ret;

	if (!icmp_is_error(pi))
		return lb_nat_forward(skb, pi, from_ifindex);
	ret = lb_icmp_xlate(skb, pi, 0, from_ifindex);
	return ret >= DROP_INVALID_SOURCE_MAC ? ret : 0;
}

/* Reverse translation of a reply of a translated connection, or of an ICMP
 * error about one (conntrack said "related" with CT_F_SERVICE). Returns
 * LB_REV_* or a drop reason, as lb_nat_reverse(). */
static __always_inline int lb_reverse(struct __sk_buff *skb, struct pkt_info *pi)
{
	if (icmp_is_error(pi))
		return lb_icmp_xlate(skb, pi, 1, 0);
	return lb_nat_reverse(skb, pi);
}

#endif
