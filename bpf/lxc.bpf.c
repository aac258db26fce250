// SPDX-License-Identifier: GPL-2.0
/* The endpoint datapath: the two programs on an endpoint's host-side veth.
 *
 *   from_endpoint  tcx ingress of the host-side veth: packets leaving the endpoint
 *   to_endpoint    tcx egress of the host-side veth: packets the node's stack
 *                  sends to the endpoint
 *
 * The endpoint's default gateway is a virtual router address reached at the
 * host-side veth's MAC: from_endpoint answers ARP and neighbor solicitations
 * for it, so the host side needs neither an address nor a bridge. Packets to
 * another local endpoint go straight into that endpoint's namespace with
 * bpf_redirect_peer; everything else goes to the node's stack.
 *
 * One object serves every endpoint: the endpoint's identity comes in as
 * load-time constants. The maps are shared by all endpoints (the agent pins
 * them). Per-packet work is O(1): a fixed parse, one hash lookup of the
 * destination, one per-CPU counter, one LRU lookup for event aggregation.
 */
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/in.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "btf_export.h"
#include "eth.h"
#include "arp.h"
#include "ndp.h"
#include "endpoints.h"
#include "flow.h"
#include "drop.h"

BTF_EXPORT(struct flow_event, flow_event);

/* The endpoint these programs serve (set per endpoint at load time).
 * Addresses are in network byte order; zero means "no address of that family". */
const volatile __u32 endpoint_id = 0;
const volatile __u32 ep_ipv4 = 0;
const volatile __u32 ep_ipv6[4] = {};
/* The endpoint's MAC, and the host-side veth's MAC (the router MAC it sees). */
const volatile __u8 ep_mac[ETH_ALEN] = {};
const volatile __u8 host_mac[ETH_ALEN] = {};
/* The virtual gateway addresses the endpoint routes through. */
const volatile __u32 router_ipv4 = 0;
const volatile __u32 router_ipv6[4] = {};

static __always_inline int ipv6_eq_const(const __u8 *a, const volatile __u32 *b)
{
	__u32 w[4];

	__builtin_memcpy(w, a, 16);
	return w[0] == b[0] && w[1] == b[1] && w[2] == b[2] && w[3] == b[3];
}

static __always_inline int handle_arp(struct __sk_buff *skb, struct pkt_info *pi)
{
	void *data = pkt_data(skb), *data_end = pkt_end(skb);
	struct ethhdr *eth = data;
	struct arp_eth_ipv4 *arp = (void *)(eth + 1);
	__be32 spa, tpa;

	if ((void *)(arp + 1) > data_end || !arp_is_eth_ipv4(arp))
		return drop(skb, pi, DROP_INVALID_PACKET_DROPPED);
	__builtin_memcpy(&spa, arp->spa, 4);
	__builtin_memcpy(&tpa, arp->tpa, 4);
	__builtin_memcpy(pi->saddr, &spa, 4);
	__builtin_memcpy(pi->daddr, &tpa, 4);
	if (!mac_eq(arp->sha, ep_mac))
		return drop(skb, pi, DROP_INVALID_SOURCE_MAC);
	/* 0.0.0.0 is an ARP probe (RFC 5227). */
	if (spa != ep_ipv4 && spa != 0)
		return drop(skb, pi, DROP_INVALID_SOURCE_IP);
	if (arp->op == bpf_htons(ARPOP_REQUEST) && tpa == router_ipv4 && router_ipv4 != 0) {
		arp_make_reply(eth, arp, host_mac, router_ipv4);
		metrics_count(REASON_FORWARDED, pi->direction, skb->len);
		return bpf_redirect(skb->ifindex, 0);
	}
	/* Other ARP (gratuitous announcements, ...): the stack ignores it. */
	metrics_count(REASON_FORWARDED, pi->direction, skb->len);
	return TC_ACT_OK;
}

/* Delivers to a local endpoint: router MACs, TTL - 1 with the checksum fixed. */
static __always_inline int forward_ipv4(struct __sk_buff *skb, struct pkt_info *pi,
					const struct endpoint_info *dst)
{
	void *data = pkt_data(skb), *data_end = pkt_end(skb);
	struct ethhdr *eth = data;
	struct iphdr *ip = (void *)(eth + 1);
	__u32 ifindex = dst->ifindex, dst_id = dst->endpoint_id;
	__u16 old, new;

	if ((void *)(ip + 1) > data_end)
		return drop(skb, pi, DROP_INVALID_PACKET_DROPPED);
	if (ip->ttl <= 1)
		return drop(skb, pi, DROP_TTL_EXCEEDED);
	__builtin_memcpy(eth->h_source, dst->node_mac, ETH_ALEN);
	__builtin_memcpy(eth->h_dest, dst->mac, ETH_ALEN);
	/* TTL and protocol form one 16-bit word of the header checksum. */
	old = *(__u16 *)&ip->ttl;
	ip->ttl--;
	new = *(__u16 *)&ip->ttl;
	if (bpf_l3_csum_replace(skb, ETH_HLEN + offsetof(struct iphdr, check), old, new, 2) < 0)
		return drop(skb, pi, DROP_ERROR_WHILE_CORRECTING_L3_CHECKSUM);
	trace_forward(skb, pi, OBS_TO_ENDPOINT, endpoint_id, dst_id);
	return bpf_redirect_peer(ifindex, 0);
}

static __always_inline int handle_ipv4(struct __sk_buff *skb, struct pkt_info *pi)
{
	void *data = pkt_data(skb), *data_end = pkt_end(skb);
	struct iphdr *ip = data + ETH_HLEN;
	struct endpoint_info *dst;
	__be32 saddr, daddr;

	if ((void *)(ip + 1) > data_end)
		return drop(skb, pi, DROP_INVALID_PACKET_DROPPED);
	parse_ipv4(pi, ip, data_end);
	if (ip->version != 4 || ip->ihl < 5)
		return drop(skb, pi, DROP_INVALID_PACKET_DROPPED);
	saddr = ip->saddr;
	daddr = ip->daddr;
	if (saddr != ep_ipv4 || ep_ipv4 == 0)
		return drop(skb, pi, DROP_INVALID_SOURCE_IP);
	dst = lookup_endpoint4(daddr);
	if (dst)
		return forward_ipv4(skb, pi, dst);
	trace_forward(skb, pi, OBS_TO_STACK, endpoint_id, 0);
	return TC_ACT_OK;
}

/* Delivers to a local endpoint: router MACs, hop limit - 1. */
static __always_inline int forward_ipv6(struct __sk_buff *skb, struct pkt_info *pi,
					const struct endpoint_info *dst)
{
	void *data = pkt_data(skb), *data_end = pkt_end(skb);
	struct ethhdr *eth = data;
	struct ipv6hdr *ip6 = (void *)(eth + 1);
	__u32 ifindex = dst->ifindex, dst_id = dst->endpoint_id;

	if ((void *)(ip6 + 1) > data_end)
		return drop(skb, pi, DROP_INVALID_PACKET_DROPPED);
	if (ip6->hop_limit <= 1)
		return drop(skb, pi, DROP_TTL_EXCEEDED);
	__builtin_memcpy(eth->h_source, dst->node_mac, ETH_ALEN);
	__builtin_memcpy(eth->h_dest, dst->mac, ETH_ALEN);
	ip6->hop_limit--;
	trace_forward(skb, pi, OBS_TO_ENDPOINT, endpoint_id, dst_id);
	return bpf_redirect_peer(ifindex, 0);
}

/* ICMPv6 messages that are sent from link-local or unspecified addresses
 * before (or instead of) the endpoint's own address: router solicitation and
 * advertisement, neighbor solicitation and advertisement, redirect (133-137),
 * and MLD queries and reports (130-132, 143). */
static __always_inline int icmp6_link_control(const struct pkt_info *pi)
{
	if (pi->proto != IPPROTO_ICMPV6)
		return 0;
	return (pi->icmp_type >= 130 && pi->icmp_type <= 137) || pi->icmp_type == 143;
}

static __always_inline int handle_ipv6(struct __sk_buff *skb, struct pkt_info *pi)
{
	void *data = pkt_data(skb), *data_end = pkt_end(skb);
	struct ethhdr *eth = data;
	struct ipv6hdr *ip6 = (void *)(eth + 1);
	struct endpoint_info *dst;
	__u8 *l4;
	int own_src;

	if ((void *)(ip6 + 1) > data_end)
		return drop(skb, pi, DROP_INVALID_PACKET_DROPPED);
	l4 = parse_ipv6(pi, ip6, data_end);
	if (ip6->version != 6)
		return drop(skb, pi, DROP_INVALID_PACKET_DROPPED);
	own_src = ipv6_eq_const(pi->saddr, ep_ipv6) && !ipv6_is_unspecified(pi->saddr);

	/* Neighbor solicitation for the router: answer it here. */
	if (l4 && pi->proto == IPPROTO_ICMPV6 && pi->icmp_type == NDP_NS && pi->icmp_code == 0 &&
	    ip6->nexthdr == IPPROTO_ICMPV6 && ip6->hop_limit == NDP_HOP_LIMIT) {
		struct ndp_ns *ns = (void *)(ip6 + 1);

		if ((void *)(ns + 1) > data_end)
			return drop(skb, pi, DROP_INVALID_PACKET_DROPPED);
		if (ipv6_eq_const(ns->target, router_ipv6) && !ipv6_is_unspecified(ns->target)) {
			__u8 req_mac[ETH_ALEN];
			__u8 ns_src[16];

			if (!own_src && !ipv6_is_link_local(pi->saddr) && !ipv6_is_unspecified(pi->saddr))
				return drop(skb, pi, DROP_INVALID_SOURCE_IP);
			__builtin_memcpy(req_mac, eth->h_source, ETH_ALEN);
			__builtin_memcpy(ns_src, pi->saddr, 16);
			if (ndp_reply_na(skb, req_mac, ns_src, router_ipv6, host_mac) < 0)
				return drop(skb, pi, DROP_ERROR_WRITING_TO_PACKET);
			metrics_count(REASON_FORWARDED, pi->direction, skb->len);
			return bpf_redirect(skb->ifindex, 0);
		}
	}

	if (!own_src) {
		/* Link-scope control traffic may come from fe80::/10 or ::, and
		 * only ever goes to the node's stack. */
		if ((ipv6_is_link_local(pi->saddr) || ipv6_is_unspecified(pi->saddr)) &&
		    icmp6_link_control(pi)) {
			trace_forward(skb, pi, OBS_TO_STACK, endpoint_id, 0);
			return TC_ACT_OK;
		}
		return drop(skb, pi, DROP_INVALID_SOURCE_IP);
	}
	dst = lookup_endpoint6(pi->daddr);
	if (dst)
		return forward_ipv6(skb, pi, dst);
	trace_forward(skb, pi, OBS_TO_STACK, endpoint_id, 0);
	return TC_ACT_OK;
}

/* tcx ingress of the endpoint's host-side veth: packets leaving the endpoint. */
SEC("tc")
int from_endpoint(struct __sk_buff *skb)
{
	struct pkt_info pi = { .endpoint_id = endpoint_id, .direction = METRIC_EGRESS };
	struct ethhdr *eth;
	void *data_end;

	pkt_pull_headers(skb);
	eth = pkt_data(skb);
	data_end = pkt_end(skb);
	if ((void *)(eth + 1) > data_end)
		return drop(skb, &pi, DROP_INVALID_PACKET_DROPPED);
	pi.eth_proto = bpf_ntohs(eth->h_proto);
	if (!mac_eq(eth->h_source, ep_mac))
		return drop(skb, &pi, DROP_INVALID_SOURCE_MAC);

	switch (eth->h_proto) {
	case bpf_htons(ETH_P_IP):
		return handle_ipv4(skb, &pi);
	case bpf_htons(ETH_P_IPV6):
		return handle_ipv6(skb, &pi);
	case bpf_htons(ETH_P_ARP):
		return handle_arp(skb, &pi);
	default:
		return drop(skb, &pi, DROP_UNSUPPORTED_L3_PROTOCOL);
	}
}

/* tcx egress of the endpoint's host-side veth: packets the node's stack sends
 * to the endpoint. Traced (with aggregation) and passed on. */
SEC("tc")
int to_endpoint(struct __sk_buff *skb)
{
	struct pkt_info pi = { .endpoint_id = endpoint_id, .direction = METRIC_INGRESS };
	struct ethhdr *eth;
	void *data_end;

	pkt_pull_headers(skb);
	eth = pkt_data(skb);
	data_end = pkt_end(skb);
	if ((void *)(eth + 1) > data_end) {
		metrics_count(REASON_FORWARDED, pi.direction, skb->len);
		return TC_ACT_OK;
	}
	pi.eth_proto = bpf_ntohs(eth->h_proto);
	if (eth->h_proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = (void *)(eth + 1);

		if ((void *)(ip + 1) <= data_end)
			parse_ipv4(&pi, ip, data_end);
	} else if (eth->h_proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = (void *)(eth + 1);

		if ((void *)(ip6 + 1) <= data_end)
			parse_ipv6(&pi, ip6, data_end);
	}
	trace_forward(skb, &pi, OBS_TO_ENDPOINT, 0, endpoint_id);
	return TC_ACT_OK;
}

char LICENSE[] SEC("license") = "GPL";
