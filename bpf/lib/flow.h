/* What the endpoint programs report: flow events into the `events` ring
 * buffer and packet counts into the per-CPU `metrics` array.
 *
 * Monitor aggregation keeps the per-packet cost low under load: a trace
 * (forwarded packet) event is emitted only for the first packet of a
 * connection in each direction, for TCP segments carrying SYN, FIN or RST, or
 * when the direction's last event is at least `trace_interval_ns` old (1 s by
 * default). For connection-tracked traffic the conntrack entry holds that
 * state (no extra lookup); other traffic (ICMP errors, link-scope control)
 * uses the `flow_seen` LRU map, keyed by the 5-tuple plus the observing
 * endpoint and observation point. Drops are never aggregated (see drop.h).
 * Every packet is counted in `metrics`. */
#ifndef WAGGLE_LIB_FLOW_H
#define WAGGLE_LIB_FLOW_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <linux/icmpv6.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "drop_reasons.h"
#include "eth.h"
#include "endpoints.h"
#include "flow_event.h"
#include "frag.h"
#include "metrics.h"

/* Shortest gap between two trace events of one flow (ns); 0 traces every packet. */
const volatile __u64 trace_interval_ns = 1000000000ULL;

#define EVENTS_RING_SIZE (4 << 20)
#define FLOW_SEEN_MAX 65536

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, EVENTS_RING_SIZE);
} events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, METRICS_MAX);
	__type(key, __u32);
	__type(value, struct metrics_value);
} metrics SEC(".maps");

/* Key of `flow_seen`: one direction of one flow as one endpoint observes it. */
struct flow_seen_key {
	__u8 saddr[16];
	__u8 daddr[16];
	__u16 sport;        /* ICMP: type << 8 | code; not IP: the Ethernet type */
	__u16 dport;
	__u8 proto;
	__u8 family;
	__u8 obs_point;
	__u8 pad;
	__u32 endpoint_id;
};

/* Value: bpf_ktime_get_ns() of the flow's last trace event. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, FLOW_SEEN_MAX);
	__type(key, struct flow_seen_key);
	__type(value, __u64);
} flow_seen SEC(".maps");

/* What a program learned about the packet it handles, for events and metrics. */
struct pkt_info {
	__u8 saddr[16];
	__u8 daddr[16];
	__u32 endpoint_id;  /* the observing endpoint (from `lxc_config`; 0 when unknown) */
	__u16 eth_proto;    /* host order */
	__u16 sport;        /* host order */
	__u16 dport;
	__u8 direction;     /* METRIC_INGRESS or METRIC_EGRESS */
	__u8 family;        /* FLOW_FAMILY_*, 0 when not IP */
	__u8 proto;
	__u8 tcp_flags;
	__u8 icmp_type;
	__u8 icmp_code;
	__u8 l4_ok;         /* the L4 fields are known: from the header, or for a later fragment from frag_track() */
	__u8 fragment;      /* FRAG_*: FRAG_LATER has no L4 header (l4_off is 0) */
	__u16 l4_off;       /* offset of the L4 header from the start of the frame */
	__u8 match_type;    /* POLICY_MATCH_* of the deciding rule */
	__u8 flags;         /* FLOW_F_* for the event */
	__u16 icmp_id;      /* ICMP echo identifier (host order) */
	__u32 src_identity;
	__u32 dst_identity;
	__u32 egress_cookie;
	__u32 ingress_cookie;
	__u32 service_id;   /* with FLOW_F_TRANSLATED: the service (reported in flow_event.line) */
	__u32 frag_id;      /* with `fragment`: the datagram's identification (as on the wire) */
};

/* Counts one packet of `len` bytes under (reason, direction). */
static __always_inline void metrics_count(__u16 reason, __u8 direction, __u32 len)
{
	__u32 index = METRICS_INDEX(reason, direction);
	struct metrics_value *v = bpf_map_lookup_elem(&metrics, &index);

	if (v) {
		v->packets++;
		v->bytes += len;
	}
}

/* Reads the L4 header at `l4` (ports, TCP flags, ICMP type and code). */
static __always_inline void parse_l4(struct pkt_info *pi, void *l4, void *data_end)
{
	switch (pi->proto) {
	case IPPROTO_TCP: {
		struct tcphdr *th = l4;

		if ((void *)(th + 1) > data_end)
			return;
		pi->sport = bpf_ntohs(th->source);
		pi->dport = bpf_ntohs(th->dest);
		pi->tcp_flags = ((__u8 *)th)[13];
		pi->l4_ok = 1;
		return;
	}
	case IPPROTO_UDP:
	case IPPROTO_SCTP: {
		/* Both start with the source and destination ports. */
		__be16 *ports = l4;

		if ((void *)(ports + 2) > data_end)
			return;
		pi->sport = bpf_ntohs(ports[0]);
		pi->dport = bpf_ntohs(ports[1]);
		pi->l4_ok = 1;
		return;
	}
	case IPPROTO_ICMP:
	case IPPROTO_ICMPV6: {
		__u8 *ic = l4;

		if ((void *)(ic + 8) > data_end) {
			if ((void *)(ic + 2) <= data_end) {
				pi->icmp_type = ic[0];
				pi->icmp_code = ic[1];
			}
			return;
		}
		pi->icmp_type = ic[0];
		pi->icmp_code = ic[1];
		pi->icmp_id = (__u16)ic[4] << 8 | ic[5];
		pi->l4_ok = 1;
		return;
	}
	}
}

/* Fills `pi` from the IPv4 header `ip` (bounds already checked) and returns
 * the L4 header, or NULL for a non-first fragment or a bad header length. */
static __always_inline void *parse_ipv4(struct pkt_info *pi, struct iphdr *ip, void *data_end)
{
	__u32 ihl = ip->ihl;
	void *l4;

	pi->family = FLOW_FAMILY_IPV4;
	pi->proto = ip->protocol;
	__builtin_memcpy(pi->saddr, &ip->saddr, 4);
	__builtin_memcpy(pi->daddr, &ip->daddr, 4);
	if (ihl < 5)
		return NULL;
	/* Only the first fragment carries the L4 header. */
	if (ip->frag_off & bpf_htons(0x1fff)) {
		pi->fragment = FRAG_LATER;
		pi->frag_id = ip->id;
		return NULL;
	}
	if (ip->frag_off & bpf_htons(0x2000)) {
		pi->fragment = FRAG_FIRST;
		pi->frag_id = ip->id;
	}
	l4 = (void *)ip + ihl * 4;
	pi->l4_off = ETH_HLEN + ihl * 4;
	parse_l4(pi, l4, data_end);
	return l4;
}

/* Fills `pi` from the IPv6 header `ip6` (bounds already checked). One
 * hop-by-hop options header is skipped (MLD carries one), then one Fragment
 * header (see frag.h); other extension headers leave the L4 fields empty.
 * Returns the L4 header or NULL. */
static __always_inline void *parse_ipv6(struct pkt_info *pi, struct ipv6hdr *ip6, void *data_end)
{
	__u8 *l4 = (void *)(ip6 + 1);
	__u8 nexthdr = ip6->nexthdr;

	pi->family = FLOW_FAMILY_IPV6;
	__builtin_memcpy(pi->saddr, &ip6->saddr, 16);
	__builtin_memcpy(pi->daddr, &ip6->daddr, 16);
	if (nexthdr == IPPROTO_HOPOPTS) {
		if ((void *)(l4 + 2) > data_end)
			return NULL;
		nexthdr = l4[0];
		l4 += ((__u32)l4[1] + 1) * 8;
	}
	if (nexthdr == IPPROTO_FRAGMENT) {
		__u16 off_m;

		if ((void *)(l4 + 8) > data_end)
			return NULL;
		nexthdr = l4[0];
		off_m = (__u16)l4[2] << 8 | l4[3];
		__builtin_memcpy(&pi->frag_id, l4 + 4, 4);
		l4 += 8;
		/* Offset 0 without M is an atomic fragment: a whole datagram. */
		if (off_m & 0xfff8) {
			pi->proto = nexthdr;
			pi->fragment = FRAG_LATER;
			return NULL;
		}
		if (off_m & 1)
			pi->fragment = FRAG_FIRST;
	}
	pi->l4_off = ETH_HLEN + (__u16)(l4 - (__u8 *)ip6);
	pi->proto = nexthdr;
	if (nexthdr != IPPROTO_TCP && nexthdr != IPPROTO_UDP && nexthdr != IPPROTO_ICMPV6)
		return NULL;
	parse_l4(pi, l4, data_end);
	return l4;
}

/* Fragment tracking (frag.h), once the packet's source is known to be
 * genuine: a first fragment leaves its L4 fields for the later ones; a later
 * fragment gets them (and l4_ok) back. Returns 0, or for a later fragment of
 * a datagram with ports whose first fragment was not seen,
 * DROP_FIRST_LOGICAL_DATAGRAM_FRAGMENT_NOT_FOUND. */
static __noinline int frag_track_slow(struct pkt_info *pi)
{
	struct frag_ports *found;
	struct frag_key key;

	if (!frag_has_ports(pi->proto))
		return 0;
	__builtin_memcpy(key.saddr, pi->saddr, 16);
	__builtin_memcpy(key.daddr, pi->daddr, 16);
	key.id = pi->frag_id;
	key.proto = pi->proto;
	key.family = pi->family;
	key.pad = 0;
	if (pi->fragment == FRAG_FIRST) {
		struct frag_ports first = {
			.sport = pi->sport,
			.dport = pi->dport,
			.icmp_type = pi->icmp_type,
			.icmp_code = pi->icmp_code,
			.icmp_id = pi->icmp_id,
		};

		if (pi->l4_ok)
			bpf_map_update_elem(&frag_ports, &key, &first, BPF_ANY);
		return 0;
	}
	found = bpf_map_lookup_elem(&frag_ports, &key);
	if (!found)
		return DROP_FIRST_LOGICAL_DATAGRAM_FRAGMENT_NOT_FOUND;
	pi->sport = found->sport;
	pi->dport = found->dport;
	pi->icmp_type = found->icmp_type;
	pi->icmp_code = found->icmp_code;
	pi->icmp_id = found->icmp_id;
	pi->l4_ok = 1;
	return 0;
}

/* The common case inline; the map work in a BPF subprogram, whose stack does
 * not add to the calling program's frame. */
static __always_inline int frag_track(struct pkt_info *pi)
{
	return pi->fragment == FRAG_NONE ? 0 : frag_track_slow(pi);
}

/* Writes one event into the ring buffer; a full ring is counted in `metrics`. */
static __always_inline void emit_event(struct __sk_buff *skb, const struct pkt_info *pi, __u8 type,
				       __u8 obs_point, __u8 verdict, __u16 reason, __u32 src_ep,
				       __u32 dst_ep, __u16 line)
{
	struct flow_event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);

	if (!e) {
		metrics_count(reason, METRIC_EVENT_LOST, skb->len);
		return;
	}
	e->time_ns = bpf_ktime_get_ns();
	/* Ingress policy is the destination endpoint's: it observes the verdict. */
	e->endpoint_id = (pi->flags & FLOW_F_INGRESS) && dst_ep && dst_ep != pi->endpoint_id &&
				 type != FLOW_EVENT_TRACE ? dst_ep : pi->endpoint_id;
	e->src_identity = pi->src_identity;
	e->dst_identity = pi->dst_identity;
	e->egress_cookie = pi->egress_cookie;
	e->ingress_cookie = pi->ingress_cookie;
	e->match_type = pi->match_type;
	e->flags = pi->flags;
	e->ifindex = skb->ifindex;
	e->src_endpoint = src_ep;
	e->dst_endpoint = dst_ep;
	e->pkt_len = skb->len;
	e->drop_reason = reason;
	e->line = (pi->flags & FLOW_F_TRANSLATED) ? (__u16)pi->service_id : line;
	e->type = type;
	e->obs_point = obs_point;
	e->verdict = verdict;
	e->family = pi->family;
	e->ip_proto = pi->proto;
	e->tcp_flags = pi->tcp_flags;
	e->icmp_type = pi->icmp_type;
	e->icmp_code = pi->icmp_code;
	e->src_port = pi->sport;
	e->dst_port = pi->dport;
	e->eth_proto = pi->eth_proto;
	__builtin_memcpy(e->src_addr, pi->saddr, 16);
	__builtin_memcpy(e->dst_addr, pi->daddr, 16);
	bpf_ringbuf_submit(e, 0);
}

/* Monitor aggregation: should this forwarded packet produce a trace event? */
static __always_inline int flow_should_trace(const struct pkt_info *pi, __u8 obs_point)
{
	struct flow_seen_key key = {};
	__u64 now = bpf_ktime_get_ns();
	__u64 *last;

	__builtin_memcpy(key.saddr, pi->saddr, 16);
	__builtin_memcpy(key.daddr, pi->daddr, 16);
	if (pi->family == 0) {
		key.sport = pi->eth_proto;
	} else if (pi->proto == IPPROTO_ICMP || pi->proto == IPPROTO_ICMPV6) {
		key.sport = (__u16)pi->icmp_type << 8 | pi->icmp_code;
	} else {
		key.sport = pi->sport;
		key.dport = pi->dport;
	}
	key.proto = pi->proto;
	key.family = pi->family;
	key.obs_point = obs_point;
	key.endpoint_id = pi->endpoint_id;

	last = bpf_map_lookup_elem(&flow_seen, &key);
	if (!last) {
		bpf_map_update_elem(&flow_seen, &key, &now, BPF_ANY);
		return 1;
	}
	if (pi->proto == IPPROTO_TCP && (pi->tcp_flags & (FLOW_TCP_SYN | FLOW_TCP_FIN | FLOW_TCP_RST))) {
		*last = now;
		return 1;
	}
	if (now - *last >= trace_interval_ns) {
		*last = now;
		return 1;
	}
	return 0;
}

/* Resolves a source address to a local endpoint ID (0 when not local). */
static __always_inline __u32 local_endpoint_id(const struct pkt_info *pi, const __u8 *addr)
{
	struct endpoint_info *ep;

	if (pi->family != FLOW_FAMILY_IPV4 && pi->family != FLOW_FAMILY_IPV6)
		return 0;
	ep = lookup_endpoint(pi->family, addr);
	return ep ? ep->endpoint_id : 0;
}

/* trace_forward()'s src_ep/dst_ep when the caller knows the address is not a
 * local endpoint's (it has just looked it up): reported as 0, not looked up. */
#define TRACE_EP_NONE 0xffffffffU

/* Records a forwarded packet: counts it and, when `report` says so, emits a
 * trace event. A zero src_ep/dst_ep is resolved from the endpoints map only
 * when an event is actually emitted; TRACE_EP_NONE is reported as 0. */
static __always_inline void trace_forward_report(struct __sk_buff *skb, const struct pkt_info *pi,
						 __u8 obs_point, __u32 src_ep, __u32 dst_ep, int report)
{
	metrics_count(REASON_FORWARDED, pi->direction, skb->len);
	if (!report)
		return;
	if (!src_ep)
		src_ep = local_endpoint_id(pi, pi->saddr);
	else if (src_ep == TRACE_EP_NONE)
		src_ep = 0;
	if (!dst_ep)
		dst_ep = local_endpoint_id(pi, pi->daddr);
	else if (dst_ep == TRACE_EP_NONE)
		dst_ep = 0;
	emit_event(skb, pi, FLOW_EVENT_TRACE, obs_point, VERDICT_FORWARDED, 0, src_ep, dst_ep, 0);
}

/* The same for traffic without a conntrack entry: aggregated by `flow_seen`. */
static __always_inline void trace_forward(struct __sk_buff *skb, const struct pkt_info *pi,
					  __u8 obs_point, __u32 src_ep, __u32 dst_ep)
{
	trace_forward_report(skb, pi, obs_point, src_ep, dst_ep, flow_should_trace(pi, obs_point));
}

#endif
