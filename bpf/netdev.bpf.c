// SPDX-License-Identifier: GPL-2.0
/* The host device program: tcx ingress of the node's external devices (the
 * agent's --devices), for what arrives from outside the node.
 *
 *   from_netdev  a TCP/UDP packet to a NodePort frontend (a node address and
 *                node port in `lb_services`, LB_F_NODEPORT) is translated to
 *                the connection's backend (bpf/lib/lb_xlate.h, the entries
 *                remembering this device), then meets conntrack and the
 *                backend's ingress policy (the client's identity from the
 *                ipcache: world for an outside address) and goes straight
 *                into the backend's namespace with bpf_redirect_peer.
 *                An ICMP error about such a connection's reply (a router's
 *                "packet too big") is translated into one about the
 *                backend's own reply and delivered to it (bpf/lib/lb_icmp.h);
 *                later fragments follow their first (bpf/lib/frag.h).
 *                Everything else (the node's own traffic, ARP, neighbour
 *                discovery, other ports) passes to the node's stack untouched.
 *
 * The reply leaves the backend through its own from_endpoint program:
 * conntrack matches it, the reverse translation gives it the node address and
 * port as source, and since its entry names this device it is sent out here
 * (bpf_redirect_neigh). The client's address is kept all the way (no SNAT):
 * the backend sees who connected, as externalTrafficPolicy: Local promises,
 * and every backend is on this node.
 *
 * A backend that is not an endpoint on this node (an EndpointSlice address
 * elsewhere) cannot be reached this way: such packets are dropped with
 * NO_MATCHING_LOCAL_CONTAINER_FOUND rather than handed to a stack that would
 * send the reply around the translation.
 *
 * Per packet: a fixed parse and one `lb_services` lookup for TCP/UDP; a
 * NodePort packet adds what the endpoint programs do for a service packet.
 */
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/in.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "eth.h"
#include "endpoints.h"
#include "flow.h"
#include "drop.h"
#include "lb_xlate.h"
#include "deliver.h"
#include "lb_icmp.h"

/* After the IP header was parsed into `pi`: the NodePort path, or the stack. */
static __always_inline int netdev_nodeport(struct __sk_buff *skb, struct pkt_info *pi)
{
	struct ctp_ends ends = { .report = -1 };
	struct endpoint_info *dst;
	int ret;

	/* A later fragment whose head was not seen here is no NodePort
	 * datagram this program translated: the stack's. */
	if (frag_track(pi) || (!lb_nat_candidate(pi) && !icmp_is_error(pi)))
		return TC_ACT_OK;
	ret = lb_forward(skb, pi, skb->ifindex);
	if (ret)
		return drop(skb, pi, ret);
	if (!(pi->flags & FLOW_F_TRANSLATED))
		return TC_ACT_OK;
	dst = lookup_endpoint(pi->family, pi->daddr);
	if (!dst)
		return drop(skb, pi, DROP_NO_MATCHING_LOCAL_CONTAINER_FOUND);
	ends.dst_ep = dst->endpoint_id;
	ends.dst_identity = dst->identity;
	ends.dst_flags = dst->flags;
	ret = conntrack_and_policy_call(skb, pi, &ends);
	if (ret != CTP_CONTINUE)
		return ret;
	if (pi->family == FLOW_FAMILY_IPV4)
		return forward_ipv4(skb, pi, dst, ends.report);
	return forward_ipv6(skb, pi, dst, ends.report);
}

SEC("tc")
int from_netdev(struct __sk_buff *skb)
{
	struct pkt_info pi = { .direction = METRIC_INGRESS };
	void *data, *data_end;
	struct ethhdr *eth;

	data = pkt_data(skb);
	data_end = pkt_end(skb);
	eth = data;
	if ((void *)(eth + 1) > data_end)
		return TC_ACT_OK;
	if (eth->h_proto != bpf_htons(ETH_P_IP) && eth->h_proto != bpf_htons(ETH_P_IPV6))
		return TC_ACT_OK;
	pkt_pull_headers(skb);
	data = pkt_data(skb);
	data_end = pkt_end(skb);
	eth = data;
	if ((void *)(eth + 1) > data_end)
		return TC_ACT_OK;
	pi.eth_proto = bpf_ntohs(eth->h_proto);
	if (eth->h_proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = (void *)(eth + 1);

		if ((void *)(ip + 1) > data_end || ip->version != 4 || ip->ihl < 5)
			return TC_ACT_OK;
		parse_ipv4(&pi, ip, data_end);
	} else {
		struct ipv6hdr *ip6 = (void *)(eth + 1);

		if ((void *)(ip6 + 1) > data_end || ip6->version != 6)
			return TC_ACT_OK;
		parse_ipv6(&pi, ip6, data_end);
	}
	return netdev_nodeport(skb, &pi);
}

char LICENSE[] SEC("license") = "GPL";
