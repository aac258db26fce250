/* Conntrack, policy and delivery into a local endpoint: the part of the
 * per-packet pipeline the endpoint programs (bpf/lxc.bpf.c) and the host
 * device program (bpf/netdev.bpf.c) share. After the caller has parsed the
 * packet and translated a service address (bpf/lib/lb_xlate.h):
 *
 *   conntrack_and_policy_call()  established and reply packets pass on their
 *                                conntrack entry; a new connection needs the
 *                                source's egress and the destination's ingress
 *                                policy to allow it, then gets an entry
 *   forward_ipv4/6()             into a local endpoint's namespace with
 *                                bpf_redirect_peer (router MACs, TTL - 1),
 *                                which skips that endpoint's own hooks: its
 *                                ingress policy was applied above
 *   forward_to_network()         out of a host device (a NodePort reply)
 */
#ifndef WAGGLE_LIB_DELIVER_H
#define WAGGLE_LIB_DELIVER_H

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
#include "identity.h"
#include "policy_verdict.h"
#include "ct.h"
#include "lb_xlate.h"
/* Returned by conntrack_and_policy() when the packet may go on. */
#define CTP_CONTINUE (-1)

/* The port policy rules match: the destination port, or for ICMP the type
 * and code (type << 8 | code). */
static __always_inline __u16 policy_port(__u8 proto, __u16 dport, __u8 icmp_type, __u8 icmp_code)
{
	if (proto == IPPROTO_ICMP || proto == IPPROTO_ICMPV6)
		return (__u16)icmp_type << 8 | icmp_code;
	return dport;
}

/* Emits a policy-verdict event for one enforcement point. */
static __always_inline void emit_verdict(struct __sk_buff *skb, struct pkt_info *pi, __u8 dir_flag,
					 int ret, __u32 src_ep, __u32 dst_ep)
{
	__u8 flags = pi->flags;

	pi->flags = (flags & ~(FLOW_F_INGRESS | FLOW_F_EGRESS)) | dir_flag;
	emit_event(skb, pi, FLOW_EVENT_POLICY_VERDICT, 0, ret ? VERDICT_DROPPED : VERDICT_FORWARDED,
		   (__u16)ret, src_ep, dst_ep, 0);
	pi->flags = flags;
}

/* The policy decision on a connection from (src_ep, pi->src_identity) to
 * (dst_ep, pi->dst_identity): the source's egress policy when the source is a
 * local endpoint with policy in that direction (src_flags), then the
 * destination's ingress policy likewise; an endpoint no policy selects in a
 * direction allows everything there without a lookup. Fills pi's cookies and match type; on a denial pi->flags names the
 * deciding direction. With `skb`, emits a policy-verdict event for every
 * enforcement point a policy decided (not for the allow-all of an endpoint
 * without policy). Returns 0 or a drop reason. */
static __always_inline int policy_decide(struct __sk_buff *skb, struct pkt_info *pi, __u32 src_ep,
					 __u32 src_flags, __u32 dst_ep, __u32 dst_flags, __u8 proto,
					 __u16 port)
{
	__u8 mt = POLICY_MATCH_NONE;
	int ret;

	pi->egress_cookie = 0;
	pi->ingress_cookie = 0;
	pi->match_type = POLICY_MATCH_NONE;
	pi->flags &= ~(FLOW_F_INGRESS | FLOW_F_EGRESS);
	if (src_ep && (src_flags & ENDPOINT_F_POLICY_EGRESS)) {
		ret = policy_lookup(src_ep, POLICY_EGRESS, pi->dst_identity, proto, port,
				    &pi->egress_cookie, &pi->match_type);
		if (skb && (ret || pi->egress_cookie))
			emit_verdict(skb, pi, FLOW_F_EGRESS, ret, src_ep, dst_ep);
		if (ret) {
			pi->flags |= FLOW_F_EGRESS;
			return ret;
		}
	}
	if (dst_ep && (dst_flags & ENDPOINT_F_POLICY_INGRESS)) {
		ret = policy_lookup(dst_ep, POLICY_INGRESS, pi->src_identity, proto, port,
				    &pi->ingress_cookie, &mt);
		if (ret || pi->ingress_cookie || !pi->egress_cookie)
			pi->match_type = mt;
		if (skb && (ret || pi->ingress_cookie))
			emit_verdict(skb, pi, FLOW_F_INGRESS, ret, src_ep, dst_ep);
		if (ret) {
			pi->flags |= FLOW_F_INGRESS;
			return ret;
		}
	}
	return 0;
}

/* Identities of a new flow's ends: given (non-zero) or from the ipcache. */
static __always_inline void resolve_identities(struct pkt_info *pi, __u32 src_identity, __u32 dst_identity)
{
	pi->src_identity = src_identity ? src_identity : ipcache_identity(pi->family, pi->saddr);
	pi->dst_identity = dst_identity ? dst_identity : ipcache_identity(pi->family, pi->daddr);
}

/* A connection made under an older policy revision: decided again in its
 * original direction, with identities and endpoints looked up afresh (a CIDR
 * rule may have given a peer a new identity). On a denial the entry is
 * deleted, so a revoked connection is cut at its next packet either way. */
static __always_inline int ct_recheck(struct pkt_info *pi, struct ct_entry *e, const struct ct_key *key,
				      int reply, __u32 revision)
{
	struct endpoint_info *s = lookup_endpoint(key->family, key->saddr);
	struct endpoint_info *d = lookup_endpoint(key->family, key->daddr);
	__u32 src_ep, dst_ep, src_flags, dst_flags, src_id, dst_id;
	__u8 echo_type = key->proto == IPPROTO_ICMP ? 8 : 128;
	__u16 port = key->proto == IPPROTO_ICMP || key->proto == IPPROTO_ICMPV6 ? (__u16)echo_type << 8 : key->dport;
	int ret;

	/* A hairpin connection's source is the service address; its real
	 * source is the destination endpoint itself. */
	if (!s && d && (e->flags & CT_F_SERVICE) &&
	    lb_nat_is_hairpin(key->family, key->proto, key->saddr, key->daddr, key->sport, key->dport))
		s = d;
	src_ep = s ? s->endpoint_id : 0;
	dst_ep = d ? d->endpoint_id : 0;
	src_flags = s ? s->flags : 0;
	dst_flags = d ? d->flags : 0;
	src_id = s ? s->identity : ipcache_identity(key->family, key->saddr);
	dst_id = d ? d->identity : ipcache_identity(key->family, key->daddr);

	pi->src_identity = src_id;
	pi->dst_identity = dst_id;
	ret = policy_decide(NULL, pi, src_ep, src_flags, dst_ep, dst_flags, key->proto, port);
	if (reply) {
		pi->src_identity = dst_id;
		pi->dst_identity = src_id;
	}
	if (ret) {
		bpf_map_delete_elem(&ct, key);
		return ret;
	}
	e->policy_revision = revision;
	e->src_identity = src_id;
	e->dst_identity = dst_id;
	e->egress_cookie = pi->egress_cookie;
	e->ingress_cookie = pi->ingress_cookie;
	return 0;
}

/* Conntrack and policy for an IP packet from (src_ep, src_identity) to
 * (dst_ep, dst_identity); an endpoint of 0 is not local, an identity of 0 is
 * looked up in the ipcache when needed; the flags are the endpoints'
 * ENDPOINT_F_POLICY_*. Established and reply packets pass on
 * their conntrack entry; a new connection needs the policy to allow it and
 * gets an entry (marked CT_F_SERVICE when service translation opened it).
 * `*report` says whether to emit a trace event (-1: no conntrack state, the
 * caller aggregates with flow_seen); `*ct_flags` gets the entry's flags.
 * Returns CTP_CONTINUE or the program's verdict for a dropped packet. */
static __always_inline int conntrack_and_policy(struct __sk_buff *skb, struct pkt_info *pi,
						__u32 src_ep, __u32 src_identity, __u32 src_flags,
						__u32 dst_ep, __u32 dst_identity, __u32 dst_flags,
						int *report, __u32 *ct_flags)
{
	__u16 port = policy_port(pi->proto, pi->dport, pi->icmp_type, pi->icmp_code);
	__u32 revision = policy_revision();
	__u64 now = bpf_ktime_get_ns();
	struct ct_entry *e;
	struct ct_key key;
	int dir, ret;

	if (!ct_trackable(pi)) {
		if (!pi->l4_ok && !pi->fragment &&
		    (pi->proto == IPPROTO_TCP || pi->proto == IPPROTO_UDP || pi->proto == IPPROTO_SCTP))
			return drop_policy(skb, pi, DROP_CT_TRUNCATED_OR_INVALID_HEADER, src_ep, dst_ep);
		/* An ICMP error about a tracked connection passes with it. */
		if (icmp_is_error(pi) && ct_related(skb, pi, now, ct_flags)) {
			resolve_identities(pi, src_identity, dst_identity);
			pi->flags |= FLOW_F_REPLY_KNOWN | FLOW_F_IS_REPLY;
			*report = -1;
			return CTP_CONTINUE;
		}
		/* No connection to track (other ICMP, other protocols, and
		 * their fragments): every packet is decided by policy. */
		resolve_identities(pi, src_identity, dst_identity);
		ret = policy_decide(NULL, pi, src_ep, src_flags, dst_ep, dst_flags, pi->proto, port);
		if (ret)
			return drop_policy(skb, pi, ret, src_ep, dst_ep);
		*report = -1;
		return CTP_CONTINUE;
	}
	e = ct_lookup(pi, &key, &dir, now);
	if (e) {
		int reply = dir == CT_REPLY;

		if (e->policy_revision != revision) {
			ret = ct_recheck(pi, e, &key, reply, revision);
			if (ret)
				return drop_policy(skb, pi, ret, src_ep, dst_ep);
		} else {
			pi->src_identity = reply ? e->dst_identity : e->src_identity;
			pi->dst_identity = reply ? e->src_identity : e->dst_identity;
			pi->egress_cookie = e->egress_cookie;
			pi->ingress_cookie = e->ingress_cookie;
		}
		pi->flags |= FLOW_F_REPLY_KNOWN | (reply ? FLOW_F_IS_REPLY : 0);
		*report = ct_update(e, pi, reply, skb->len, now);
		*ct_flags = e->flags;
		return CTP_CONTINUE;
	}
	if (pi->proto == IPPROTO_TCP && !tcp_can_open(pi->tcp_flags)) {
		resolve_identities(pi, src_identity, dst_identity);
		return drop_policy(skb, pi, DROP_CT_CANNOT_CREATE_ENTRY_FROM_PACKET, src_ep, dst_ep);
	}
	resolve_identities(pi, src_identity, dst_identity);
	ret = policy_decide(skb, pi, src_ep, src_flags, dst_ep, dst_flags, pi->proto, port);
	if (ret)
		return drop_policy(skb, pi, ret, src_ep, dst_ep);
	ct_create(&key, pi, revision, skb->len, now);
	if (pi->flags & FLOW_F_TRANSLATED) {
		e = bpf_map_lookup_elem(&ct, &key);
		if (e)
			e->flags |= CT_F_SERVICE;
	}
	pi->flags |= FLOW_F_REPLY_KNOWN;
	*report = 1;
	return CTP_CONTINUE;
}

/* The two ends of a packet for conntrack_and_policy_call(), and what it
 * found: whether to report, the conntrack entry's flags (0: none). */
struct ctp_ends {
	__u32 src_ep;
	__u32 src_identity;
	__u32 src_flags;
	__u32 dst_ep;
	__u32 dst_identity;
	__u32 dst_flags;
	int report;
	__u32 ct_flags;
};

/* conntrack_and_policy() as a BPF subprogram (the arguments in `ends`): its
 * keys and entries live in its own stack frame, so the inlined frame of the
 * calling program stays small enough for the other subprograms it calls
 * (service translation) within the 512-byte stack. */
static __noinline int conntrack_and_policy_call(struct __sk_buff *skb, struct pkt_info *pi, struct ctp_ends *ends)
{
	return conntrack_and_policy(skb, pi, ends->src_ep, ends->src_identity, ends->src_flags, ends->dst_ep,
				    ends->dst_identity, ends->dst_flags, &ends->report, &ends->ct_flags);
}

/* TTL - 1 with the header checksum updated in place, as the kernel's
 * ip_decrease_ttl() does: TTL is the high byte of a checksummed 16-bit word,
 * so the (complemented) checksum grows by 0x0100, with the end-around carry.
 * No helper call and no checksum recomputation. */
static __always_inline void ipv4_decrease_ttl(struct iphdr *ip)
{
	__u32 check = (__u32)ip->check;

	check += (__u32)bpf_htons(0x0100);
	ip->check = (__sum16)(check + (check >= 0xffff));
	ip->ttl--;
}

/* Delivers to a local endpoint: router MACs, TTL - 1 with the checksum fixed. */
static __always_inline int forward_ipv4(struct __sk_buff *skb, struct pkt_info *pi,
					const struct endpoint_info *dst, int report)
{
	void *data = pkt_data(skb), *data_end = pkt_end(skb);
	struct ethhdr *eth = data;
	struct iphdr *ip = (void *)(eth + 1);
	__u32 ifindex = dst->ifindex, dst_id = dst->endpoint_id;

	if ((void *)(ip + 1) > data_end)
		return drop(skb, pi, DROP_INVALID_PACKET_DROPPED);
	if (ip->ttl <= 1)
		return drop(skb, pi, DROP_TTL_EXCEEDED);
	__builtin_memcpy(eth->h_source, dst->node_mac, ETH_ALEN);
	__builtin_memcpy(eth->h_dest, dst->mac, ETH_ALEN);
	ipv4_decrease_ttl(ip);
	if (report < 0)
		trace_forward(skb, pi, OBS_TO_ENDPOINT, pi->endpoint_id, dst_id);
	else
		trace_forward_report(skb, pi, OBS_TO_ENDPOINT, pi->endpoint_id, dst_id, report);
	return bpf_redirect_peer(ifindex, 0);
}

/* Delivers to a local endpoint: router MACs, hop limit - 1. */
static __always_inline int forward_ipv6(struct __sk_buff *skb, struct pkt_info *pi,
					const struct endpoint_info *dst, int report)
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
	if (report < 0)
		trace_forward(skb, pi, OBS_TO_ENDPOINT, pi->endpoint_id, dst_id);
	else
		trace_forward_report(skb, pi, OBS_TO_ENDPOINT, pi->endpoint_id, dst_id, report);
	return bpf_redirect_peer(ifindex, 0);
}

/* Out of host device `ifindex` towards the network (the reply of a NodePort
 * connection from outside the node): TTL - 1, then bpf_redirect_neigh, whose
 * route and neighbour lookups fill the MACs; the node's forwarding sysctls
 * play no part. */
static __always_inline int forward_to_network(struct __sk_buff *skb, struct pkt_info *pi, __u32 ifindex,
					      int report)
{
	void *data = pkt_data(skb), *data_end = pkt_end(skb);

	if (pi->family == FLOW_FAMILY_IPV4) {
		struct iphdr *ip = data + ETH_HLEN;

		if ((void *)(ip + 1) > data_end)
			return drop(skb, pi, DROP_INVALID_PACKET_DROPPED);
		if (ip->ttl <= 1)
			return drop(skb, pi, DROP_TTL_EXCEEDED);
		ipv4_decrease_ttl(ip);
	} else {
		struct ipv6hdr *ip6 = data + ETH_HLEN;

		if ((void *)(ip6 + 1) > data_end)
			return drop(skb, pi, DROP_INVALID_PACKET_DROPPED);
		if (ip6->hop_limit <= 1)
			return drop(skb, pi, DROP_TTL_EXCEEDED);
		ip6->hop_limit--;
	}
	if (report < 0)
		trace_forward(skb, pi, OBS_TO_NETWORK, pi->endpoint_id, TRACE_EP_NONE);
	else
		trace_forward_report(skb, pi, OBS_TO_NETWORK, pi->endpoint_id, TRACE_EP_NONE, report);
	return bpf_redirect_neigh(ifindex, NULL, 0, 0);
}

#endif
