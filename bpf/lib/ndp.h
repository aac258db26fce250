/* IPv6 neighbor discovery responder: answers an endpoint's Neighbor
 * Solicitation for its router IPv6 address with a Neighbor Advertisement
 * carrying the host-side veth's MAC (RFC 4861 sections 4.3, 4.4 and 7.2.4). */
#ifndef WAGGLE_LIB_NDP_H
#define WAGGLE_LIB_NDP_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ipv6.h>
#include <linux/icmpv6.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "eth.h"

#define NDP_NS 135
#define NDP_NA 136
#define NDP_OPT_TARGET_LLADDR 2
#define NDP_HOP_LIMIT 255

/* Neighbor Advertisement flags (first word after the ICMPv6 header). */
#define NA_F_ROUTER 0x80000000
#define NA_F_SOLICITED 0x40000000
#define NA_F_OVERRIDE 0x20000000

/* A Neighbor Solicitation as it follows the IPv6 header (options not included). */
struct ndp_ns {
	__u8 type;
	__u8 code;
	__be16 checksum;
	__be32 reserved;
	__u8 target[16];
};

/* The Neighbor Advertisement the responder sends: 32 bytes of ICMPv6. */
struct ndp_na {
	__u8 type;
	__u8 code;
	__be16 checksum;
	__be32 flags;
	__u8 target[16];
	__u8 opt_type;   /* NDP_OPT_TARGET_LLADDR */
	__u8 opt_len;    /* in units of 8 bytes: 1 */
	__u8 opt_mac[ETH_ALEN];
};

/* The IPv6 pseudo-header that ICMPv6 checksums cover (RFC 8200 section 8.1). */
struct ipv6_pseudo_hdr {
	__u8 saddr[16];
	__u8 daddr[16];
	__be32 len;
	__be32 nexthdr;
};

/* Frame of the reply: Ethernet + IPv6 + the advertisement. */
#define NDP_NA_FRAME_LEN (ETH_HLEN + sizeof(struct ipv6hdr) + sizeof(struct ndp_na))

static __always_inline int ipv6_is_unspecified(const __u8 *a)
{
	__u64 hi, lo;

	__builtin_memcpy(&hi, a, 8);
	__builtin_memcpy(&lo, a + 8, 8);
	return (hi | lo) == 0;
}

/* fe80::/10 */
static __always_inline int ipv6_is_link_local(const __u8 *a)
{
	return a[0] == 0xfe && (a[1] & 0xc0) == 0x80;
}

static __always_inline __u16 csum_fold(__u64 sum)
{
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return (__u16)~sum;
}

/*
 * Replaces the whole frame of the Neighbor Solicitation with the Neighbor
 * Advertisement "`target` is at `mac`", sent from `target` to `ns_src` (or
 * to all nodes, unsolicited, when the solicitation came from :: during
 * duplicate address detection), from `mac` to `req_mac`. The checksum is
 * computed with bpf_csum_diff over the pseudo-header and the message.
 * Returns 0, or a negative error when the packet could not be rewritten.
 */
static __always_inline int ndp_reply_na(struct __sk_buff *skb, const __u8 *req_mac,
					const __u8 *ns_src, const volatile __u32 *target,
					const volatile __u8 *mac)
{
	struct ethhdr eth = {};
	struct ipv6hdr ip6 = {};
	struct ndp_na na = {};
	struct ipv6_pseudo_hdr ph = {};
	int dad = ipv6_is_unspecified(ns_src);
	__s64 sum;

	if (dad) {
		/* 33:33:00:00:00:01, ff02::1 */
		eth.h_dest[0] = 0x33;
		eth.h_dest[1] = 0x33;
		eth.h_dest[5] = 0x01;
		ip6.daddr.in6_u.u6_addr8[0] = 0xff;
		ip6.daddr.in6_u.u6_addr8[1] = 0x02;
		ip6.daddr.in6_u.u6_addr8[15] = 0x01;
	} else {
		__builtin_memcpy(eth.h_dest, req_mac, ETH_ALEN);
		__builtin_memcpy(&ip6.daddr, ns_src, 16);
	}
	mac_copy(eth.h_source, mac);
	eth.h_proto = bpf_htons(ETH_P_IPV6);

	ip6.version = 6;
	ip6.payload_len = bpf_htons(sizeof(na));
	ip6.nexthdr = IPPROTO_ICMPV6;
	ip6.hop_limit = NDP_HOP_LIMIT;
	ip6.saddr.in6_u.u6_addr32[0] = target[0];
	ip6.saddr.in6_u.u6_addr32[1] = target[1];
	ip6.saddr.in6_u.u6_addr32[2] = target[2];
	ip6.saddr.in6_u.u6_addr32[3] = target[3];

	na.type = NDP_NA;
	na.flags = bpf_htonl(NA_F_ROUTER | NA_F_OVERRIDE | (dad ? 0 : NA_F_SOLICITED));
	__builtin_memcpy(na.target, &ip6.saddr, 16);
	na.opt_type = NDP_OPT_TARGET_LLADDR;
	na.opt_len = 1;
	mac_copy(na.opt_mac, mac);

	__builtin_memcpy(ph.saddr, &ip6.saddr, 16);
	__builtin_memcpy(ph.daddr, &ip6.daddr, 16);
	ph.len = bpf_htonl(sizeof(na));
	ph.nexthdr = bpf_htonl(IPPROTO_ICMPV6);
	sum = bpf_csum_diff(NULL, 0, (__be32 *)&ph, sizeof(ph), 0);
	if (sum < 0)
		return (int)sum;
	sum = bpf_csum_diff(NULL, 0, (__be32 *)&na, sizeof(na), (__wsum)sum);
	if (sum < 0)
		return (int)sum;
	na.checksum = csum_fold((__u64)sum);

	if (skb->len != NDP_NA_FRAME_LEN) {
		int r = bpf_skb_change_tail(skb, NDP_NA_FRAME_LEN, 0);

		if (r < 0)
			return r;
	}
	if (bpf_skb_store_bytes(skb, 0, &eth, ETH_HLEN, 0) < 0 ||
	    bpf_skb_store_bytes(skb, ETH_HLEN, &ip6, sizeof(ip6), 0) < 0 ||
	    bpf_skb_store_bytes(skb, ETH_HLEN + sizeof(ip6), &na, sizeof(na), 0) < 0)
		return -1;
	return 0;
}

#endif
