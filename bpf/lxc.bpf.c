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
 * One pair of loaded programs serves every endpoint on the node: the agent
 * loads (and pins) them once and attaches the same programs to every
 * endpoint's veth. Which endpoint a packet belongs to comes from the
 * `lxc_config` map, keyed by the veth's ifindex (skb->ifindex at both hooks);
 * a device without an entry has its packets dropped. Only what is per agent
 * (the virtual router's addresses, the trace interval) is a load-time
 * constant. The maps are shared by all endpoints (the agent pins them).
 *
 * Every IP packet meets conntrack (bpf/lib/ct.h) and, when it opens a
 * connection, policy (bpf/lib/policy_verdict.h): the source's egress policy
 * if it is a local endpoint, the destination's ingress policy if that is one
 * — both here, before bpf_redirect_peer skips the destination's own hooks.
 * Identities come from lxc_config / the endpoints map, or the ipcache for
 * other addresses. Established and reply packets pass on their conntrack
 * entry unless the policy revision moved since it was checked.
 *
 * Service load balancing per packet (bpf/lib/lb_xlate.h) serves what the
 * socket programs cannot see (processes outside the agent's cgroup). In
 * from_endpoint, after anti-spoofing, a TCP/UDP packet to a service frontend
 * (an address that is no local endpoint) is translated to the connection's
 * backend (DNAT, kept in `lb_nat`) before anything else: delivery, conntrack
 * and policy all see the backend, so conntrack tracks the translated tuple and policy decides on the
 * backend's identity and port; the entry is marked CT_F_SERVICE. A reply is
 * matched by conntrack on that same translated tuple (backend -> client, a
 * reply: it passes as one), and only then, when its entry is so marked, is
 * its source rewritten back to the service (`lb_rev_nat`): in from_endpoint
 * when the backend is local, in to_endpoint when the reply came from the
 * stack. Hairpin (a client that is its own backend) gets the service
 * address as source as well, and its reply goes back into the client. The
 * reply of a NodePort connection from outside the node (translated by
 * bpf/netdev.bpf.c) leaves through the host device it came in on. ICMP
 * errors about translated connections are translated both ways
 * (bpf/lib/lb_icmp.h). Later fragments of a datagram take the ports of its
 * first fragment (bpf/lib/frag.h) for all of the above.
 *
 * Per-packet work is O(1): the config lookup, a fixed parse, one hash lookup
 * of the destination, one service lookup (TCP/UDP from an endpoint to an
 * address that is no local endpoint: never a service frontend), one or
 * two conntrack lookups, a per-CPU counter; a service packet adds the
 * `lb_nat` and `lb_backends` lookups, its reply one `lb_rev_nat` lookup; a new
 * connection adds hash and trie lookups that do not depend on the number of
 * rules, services or backends. Headers are pulled into the linear area only
 * when they are not there already.
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
#include "identity.h"
#include "policy_verdict.h"
#include "ct.h"
#include "lxc_config.h"
#include "lb_xlate.h"
#include "deliver.h"
#include "lb_icmp.h"

BTF_EXPORT(struct flow_event, flow_event);

/* Host-side veth ifindex -> the endpoint behind it (written by the agent). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, LXC_CONFIG_MAX);
	__type(key, __u32);
	__type(value, struct lxc_config);
} lxc_config SEC(".maps");

/* The endpoint behind host-side veth `ifindex`, or NULL. */
static __always_inline const struct lxc_config *lookup_lxc_config(__u32 ifindex)
{
	return bpf_map_lookup_elem(&lxc_config, &ifindex);
}

/* The virtual gateway addresses every endpoint routes through (per agent, set
 * at load time). Network byte order; zero means "none of that family". */
const volatile __u32 router_ipv4 = 0;
const volatile __u32 router_ipv6[4] = {};

static __always_inline int ipv6_eq_const(const __u8 *a, const volatile __u32 *b)
{
	__u32 w[4];

	__builtin_memcpy(w, a, 16);
	return w[0] == b[0] && w[1] == b[1] && w[2] == b[2] && w[3] == b[3];
}

static __always_inline int ipv6_eq(const __u8 *a, const __u8 *b)
{
	__u64 a0, a1, b0, b1;

	__builtin_memcpy(&a0, a, 8);
	__builtin_memcpy(&a1, a + 8, 8);
	__builtin_memcpy(&b0, b, 8);
	__builtin_memcpy(&b1, b + 8, 8);
	return a0 == b0 && a1 == b1;
}

/* Fills `pi` from whatever headers of the frame are there (for events). */
static __always_inline void parse_frame(struct pkt_info *pi, void *data, void *data_end)
{
	struct ethhdr *eth = data;

	if ((void *)(eth + 1) > data_end)
		return;
	pi->eth_proto = bpf_ntohs(eth->h_proto);
	if (eth->h_proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = (void *)(eth + 1);

		if ((void *)(ip + 1) <= data_end)
			parse_ipv4(pi, ip, data_end);
	} else if (eth->h_proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = (void *)(eth + 1);

		if ((void *)(ip6 + 1) <= data_end)
			parse_ipv6(pi, ip6, data_end);
	}
}

/* A packet on a device the agent has no endpoint for (attached by mistake,
 * or its entry removed before the programs were detached): dropped. */
static __always_inline int drop_unconfigured(struct __sk_buff *skb, struct pkt_info *pi)
{
	parse_frame(pi, pkt_data(skb), pkt_end(skb));
	return drop(skb, pi, DROP_NO_CONFIGURATION_AVAILABLE_TO_PERFORM_POLICY_DECISION);
}

static __always_inline int handle_arp(struct __sk_buff *skb, struct pkt_info *pi,
				      const struct lxc_config *cfg)
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
	if (!mac_eq(arp->sha, cfg->mac))
		return drop(skb, pi, DROP_INVALID_SOURCE_MAC);
	/* 0.0.0.0 is an ARP probe (RFC 5227). */
	if (spa != cfg->ipv4 && spa != 0)
		return drop(skb, pi, DROP_INVALID_SOURCE_IP);
	if (arp->op == bpf_htons(ARPOP_REQUEST) && tpa == router_ipv4 && router_ipv4 != 0) {
		arp_make_reply(eth, arp, cfg->host_mac, router_ipv4);
		metrics_count(REASON_FORWARDED, pi->direction, skb->len);
		return bpf_redirect(skb->ifindex, 0);
	}
	/* Other ARP (gratuitous announcements, ...): the stack ignores it. */
	metrics_count(REASON_FORWARDED, pi->direction, skb->len);
	return TC_ACT_OK;
}

/* After anti-spoofing and service translation: conntrack and policy, the
 * reverse translation of a reply, then into the local destination endpoint
 * `dst` (redirected into its namespace) or to the node's stack. */
static __always_inline int deliver_from_endpoint(struct __sk_buff *skb, struct pkt_info *pi,
						 const struct lxc_config *cfg, const struct endpoint_info *dst)
{
	struct ctp_ends ends = {
		.src_ep = cfg->endpoint_id,
		.src_identity = cfg->identity,
		.src_flags = cfg->flags,
		.dst_ep = dst ? dst->endpoint_id : 0,
		.dst_identity = dst ? dst->identity : 0,
		.dst_flags = dst ? dst->flags : 0,
	};
	int report, ret;

	ret = conntrack_and_policy_call(skb, pi, &ends);
	if (ret != CTP_CONTINUE)
		return ret;
	report = ends.report;
	/* The reply of a translated connection (or an ICMP error about one, not
	 * translated towards the backend already): its source back to the service. */
	if ((pi->flags & FLOW_F_IS_REPLY) && (ends.ct_flags & CT_F_SERVICE) && !(pi->flags & FLOW_F_TRANSLATED)) {
		ret = lb_reverse(skb, pi);
		if (ret >= DROP_INVALID_SOURCE_MAC)
			return drop(skb, pi, ret);
		/* A hairpin reply goes back into the endpoint it came from. */
		if (ret == LB_REV_HAIRPIN)
			dst = lookup_endpoint(pi->family, pi->saddr);
		/* A NodePort client outside the node: out of the device it came in on. */
		if (ret == LB_REV_NODEPORT) {
			__u32 ifindex = lb_rev_ifindex();

			if (ifindex)
				return forward_to_network(skb, pi, ifindex, report);
		}
	}
	if (dst) {
		if (pi->family == FLOW_FAMILY_IPV4)
			return forward_ipv4(skb, pi, dst, report);
		return forward_ipv6(skb, pi, dst, report);
	}
	/* Not local (the lookup just said so): no second lookup for the event. */
	if (report < 0)
		trace_forward(skb, pi, OBS_TO_STACK, pi->endpoint_id, TRACE_EP_NONE);
	else
		trace_forward_report(skb, pi, OBS_TO_STACK, pi->endpoint_id, TRACE_EP_NONE, report);
	return TC_ACT_OK;
}

static __always_inline int handle_ipv4(struct __sk_buff *skb, struct pkt_info *pi,
				       const struct lxc_config *cfg)
{
	void *data = pkt_data(skb), *data_end = pkt_end(skb);
	struct iphdr *ip = data + ETH_HLEN;
	struct endpoint_info *dst;
	__be32 saddr, daddr;
	int ret;

	if ((void *)(ip + 1) > data_end)
		return drop(skb, pi, DROP_INVALID_PACKET_DROPPED);
	parse_ipv4(pi, ip, data_end);
	if (ip->version != 4 || ip->ihl < 5)
		return drop(skb, pi, DROP_INVALID_PACKET_DROPPED);
	saddr = ip->saddr;
	if (saddr != cfg->ipv4 || cfg->ipv4 == 0)
		return drop(skb, pi, DROP_INVALID_SOURCE_IP);
	ret = frag_track(pi);
	if (ret)
		return drop(skb, pi, ret);
	/* A local endpoint's address is never a service frontend: only
	 * traffic to other addresses looks for a service. */
	__builtin_memcpy(&daddr, pi->daddr, 4);
	dst = lookup_endpoint4(daddr);
	if (!dst) {
		ret = lb_forward(skb, pi, 0);
		if (ret)
			return drop(skb, pi, ret);
		if (pi->flags & FLOW_F_TRANSLATED) {
			__builtin_memcpy(&daddr, pi->daddr, 4);
			dst = lookup_endpoint4(daddr);
		}
	}
	return deliver_from_endpoint(skb, pi, cfg, dst);
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

/* answer_router_ns(): the solicitation is not for the router address. */
#define NS_NOT_FOR_ROUTER (-1)

/* A neighbor solicitation (IPv6 header and ICMPv6 type already checked):
 * answered with a neighbor advertisement when it asks for the router
 * address. A BPF subprogram: its headers and byte-wise address compares stay
 * out of the program's own stack frame. Returns the program's verdict or
 * NS_NOT_FOR_ROUTER. */
static __noinline int answer_router_ns(struct __sk_buff *skb, struct pkt_info *pi,
				       const struct lxc_config *cfg, int own_src)
{
	void *data = pkt_data(skb), *data_end = pkt_end(skb);
	struct ethhdr *eth = data;
	struct ndp_ns *ns = data + ETH_HLEN + sizeof(struct ipv6hdr);
	__u8 req_mac[ETH_ALEN];
	__u8 ns_src[16];

	if ((void *)(ns + 1) > data_end)
		return drop(skb, pi, DROP_INVALID_PACKET_DROPPED);
	if (!ipv6_eq_const(ns->target, router_ipv6) || ipv6_is_unspecified(ns->target))
		return NS_NOT_FOR_ROUTER;
	if (!own_src && !ipv6_is_link_local(pi->saddr) && !ipv6_is_unspecified(pi->saddr))
		return drop(skb, pi, DROP_INVALID_SOURCE_IP);
	__builtin_memcpy(req_mac, eth->h_source, ETH_ALEN);
	__builtin_memcpy(ns_src, pi->saddr, 16);
	if (ndp_reply_na(skb, req_mac, ns_src, router_ipv6, cfg->host_mac) < 0)
		return drop(skb, pi, DROP_ERROR_WRITING_TO_PACKET);
	metrics_count(REASON_FORWARDED, pi->direction, skb->len);
	return bpf_redirect(skb->ifindex, 0);
}

static __always_inline int handle_ipv6(struct __sk_buff *skb, struct pkt_info *pi,
				       const struct lxc_config *cfg)
{
	void *data = pkt_data(skb), *data_end = pkt_end(skb);
	struct ethhdr *eth = data;
	struct ipv6hdr *ip6 = (void *)(eth + 1);
	struct endpoint_info *dst;
	__u8 *l4;
	int own_src, ret;

	if ((void *)(ip6 + 1) > data_end)
		return drop(skb, pi, DROP_INVALID_PACKET_DROPPED);
	l4 = parse_ipv6(pi, ip6, data_end);
	if (ip6->version != 6)
		return drop(skb, pi, DROP_INVALID_PACKET_DROPPED);
	own_src = ipv6_eq(pi->saddr, cfg->ipv6) && !ipv6_is_unspecified(pi->saddr);

	/* Neighbor solicitation for the router: answered here. */
	if (l4 && pi->proto == IPPROTO_ICMPV6 && pi->icmp_type == NDP_NS && pi->icmp_code == 0 &&
	    ip6->nexthdr == IPPROTO_ICMPV6 && ip6->hop_limit == NDP_HOP_LIMIT) {
		ret = answer_router_ns(skb, pi, cfg, own_src);
		if (ret != NS_NOT_FOR_ROUTER)
			return ret;
	}

	if (!own_src) {
		/* Link-scope control traffic may come from fe80::/10 or ::, and
		 * only ever goes to the node's stack. */
		if ((ipv6_is_link_local(pi->saddr) || ipv6_is_unspecified(pi->saddr)) &&
		    icmp6_link_control(pi)) {
			trace_forward(skb, pi, OBS_TO_STACK, pi->endpoint_id, 0);
			return TC_ACT_OK;
		}
		return drop(skb, pi, DROP_INVALID_SOURCE_IP);
	}
	/* Link-scope control from the endpoint's own address (to multicast
	 * groups): the node's stack only, no policy. */
	if (icmp6_link_control(pi)) {
		trace_forward(skb, pi, OBS_TO_STACK, pi->endpoint_id, TRACE_EP_NONE);
		return TC_ACT_OK;
	}
	ret = frag_track(pi);
	if (ret)
		return drop(skb, pi, ret);
	dst = lookup_endpoint6(pi->daddr);
	if (!dst) {
		ret = lb_forward(skb, pi, 0);
		if (ret)
			return drop(skb, pi, ret);
		if (pi->flags & FLOW_F_TRANSLATED)
			dst = lookup_endpoint6(pi->daddr);
	}
	return deliver_from_endpoint(skb, pi, cfg, dst);
}

/* tcx ingress of the endpoint's host-side veth: packets leaving the endpoint. */
SEC("tc")
int from_endpoint(struct __sk_buff *skb)
{
	struct pkt_info pi = { .direction = METRIC_EGRESS };
	const struct lxc_config *cfg;
	struct ethhdr *eth;
	void *data_end;

	pkt_pull_headers(skb);
	cfg = lookup_lxc_config(skb->ifindex);
	if (!cfg)
		return drop_unconfigured(skb, &pi);
	pi.endpoint_id = cfg->endpoint_id;
	eth = pkt_data(skb);
	data_end = pkt_end(skb);
	if ((void *)(eth + 1) > data_end)
		return drop(skb, &pi, DROP_INVALID_PACKET_DROPPED);
	pi.eth_proto = bpf_ntohs(eth->h_proto);
	if (!mac_eq(eth->h_source, cfg->mac))
		return drop(skb, &pi, DROP_INVALID_SOURCE_MAC);

	switch (eth->h_proto) {
	case bpf_htons(ETH_P_IP):
		return handle_ipv4(skb, &pi, cfg);
	case bpf_htons(ETH_P_IPV6):
		return handle_ipv6(skb, &pi, cfg);
	case bpf_htons(ETH_P_ARP):
		return handle_arp(skb, &pi, cfg);
	default:
		return drop(skb, &pi, DROP_UNSUPPORTED_L3_PROTOCOL);
	}
}

/* tcx egress of the endpoint's host-side veth: packets the node's stack sends
 * to the endpoint. Traced (with aggregation) and passed on. */
SEC("tc")
int to_endpoint(struct __sk_buff *skb)
{
	struct pkt_info pi = { .direction = METRIC_INGRESS };
	const struct lxc_config *cfg;
	int report = -1, ret;

	pkt_pull_headers(skb);
	cfg = lookup_lxc_config(skb->ifindex);
	if (!cfg)
		return drop_unconfigured(skb, &pi);
	pi.endpoint_id = cfg->endpoint_id;
	parse_frame(&pi, pkt_data(skb), pkt_end(skb));
	/* ARP and link-scope ICMPv6 from the node: plumbing, not workload traffic. */
	if (pi.family != 0 && !icmp6_link_control(&pi)) {
		struct endpoint_info *src = lookup_endpoint(pi.family, pi.saddr);
		struct ctp_ends ends = {
			.src_ep = src ? src->endpoint_id : 0,
			.src_identity = src ? src->identity : 0,
			.src_flags = src ? src->flags : 0,
			.dst_ep = cfg->endpoint_id,
			.dst_identity = cfg->identity,
			.dst_flags = cfg->flags,
			.report = -1,
		};

		ret = frag_track(&pi);
		if (ret)
			return drop(skb, &pi, ret);
		ret = conntrack_and_policy_call(skb, &pi, &ends);
		if (ret != CTP_CONTINUE)
			return ret;
		report = ends.report;
		/* The reply of a connection the endpoint made to a service whose
		 * backend is elsewhere: its source back to the service. */
		if ((pi.flags & FLOW_F_IS_REPLY) && (ends.ct_flags & CT_F_SERVICE)) {
			ret = lb_reverse(skb, &pi);
			if (ret >= DROP_INVALID_SOURCE_MAC)
				return drop(skb, &pi, ret);
		}
	}
	if (report < 0)
		trace_forward(skb, &pi, OBS_TO_ENDPOINT, 0, pi.endpoint_id);
	else
		trace_forward_report(skb, &pi, OBS_TO_ENDPOINT, 0, pi.endpoint_id, report);
	return TC_ACT_OK;
}

char LICENSE[] SEC("license") = "GPL";
