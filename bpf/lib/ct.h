/* Connection tracking over the `ct` map (bpf/include/conntrack.h).
 *
 * One entry per connection, keyed by its original-direction tuple; a packet
 * finds it by its own tuple (original direction) or its reversed tuple (a
 * reply). TCP state is what the datapath needs to pick a lifetime: SYN-only
 * until a reply is seen, established, closing after RST or FIN both ways.
 * An entry past `expires_ns` counts as absent (the agent removes it later). */
#ifndef WAGGLE_LIB_CT_H
#define WAGGLE_LIB_CT_H

#include <linux/bpf.h>
#include <linux/in.h>
#include <bpf/bpf_helpers.h>
#include "conntrack.h"
#include "flow.h"

#define NSEC_PER_SEC 1000000000ULL

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, CT_MAX);
	__type(key, struct ct_key);
	__type(value, struct ct_entry);
} ct SEC(".maps");

enum ct_dir {
	CT_NEW = 0,
	CT_FORWARD = 1,
	CT_REPLY = 2,
};

#define TCP_FLAGS_STATE (FLOW_TCP_SYN | FLOW_TCP_ACK | FLOW_TCP_RST | FLOW_TCP_FIN)

static __always_inline int icmp_is_echo(const struct pkt_info *pi)
{
	if (pi->proto == IPPROTO_ICMP)
		return pi->icmp_type == 8 || pi->icmp_type == 0;
	if (pi->proto == IPPROTO_ICMPV6)
		return pi->icmp_type == 128 || pi->icmp_type == 129;
	return 0;
}

/* Whether the packet belongs to a trackable connection: TCP, UDP, SCTP with
 * their ports, ICMP echo request/reply with its identifier. */
static __always_inline int ct_trackable(const struct pkt_info *pi)
{
	if (!pi->l4_ok)
		return 0;
	switch (pi->proto) {
	case IPPROTO_TCP:
	case IPPROTO_UDP:
	case IPPROTO_SCTP:
		return 1;
	case IPPROTO_ICMP:
	case IPPROTO_ICMPV6:
		return icmp_is_echo(pi);
	}
	return 0;
}

/* The packet's own tuple. */
static __always_inline void ct_tuple(struct ct_key *key, const struct pkt_info *pi)
{
	__builtin_memcpy(key->saddr, pi->saddr, 16);
	__builtin_memcpy(key->daddr, pi->daddr, 16);
	key->proto = pi->proto;
	key->family = pi->family;
	key->pad = 0;
	if (pi->proto == IPPROTO_ICMP || pi->proto == IPPROTO_ICMPV6) {
		key->sport = pi->icmp_id;
		key->dport = pi->icmp_id;
	} else {
		key->sport = pi->sport;
		key->dport = pi->dport;
	}
}

static __always_inline void ct_reverse(struct ct_key *rev, const struct ct_key *key)
{
	__builtin_memcpy(rev->saddr, key->daddr, 16);
	__builtin_memcpy(rev->daddr, key->saddr, 16);
	rev->sport = key->dport;
	rev->dport = key->sport;
	rev->proto = key->proto;
	rev->family = key->family;
	rev->pad = 0;
}

/* Whether the packet may belong to its connection in direction `dir`. An
 * ICMP echo key has the identifier in both ports, so it is the same both ways:
 * a request matches only as the original direction and a reply only as the
 * reply. Otherwise a peer's own echo request with the identifier of a ping
 * it answers would pass as that ping's reply, past the peer's policy. */
static __always_inline int ct_dir_possible(const struct pkt_info *pi, int dir)
{
	if (pi->proto == IPPROTO_ICMP)
		return pi->icmp_type == (dir == CT_FORWARD ? 8 : 0);
	if (pi->proto == IPPROTO_ICMPV6)
		return pi->icmp_type == (dir == CT_FORWARD ? 128 : 129);
	return 1;
}

/* Finds the packet's connection. On return `key` is the connection's key
 * (original direction) whether or not an entry was found, and `dir` says how
 * the packet relates to it. */
static __always_inline struct ct_entry *ct_lookup(const struct pkt_info *pi, struct ct_key *key,
						  int *dir, __u64 now)
{
	struct ct_key rev;
	struct ct_entry *e;

	ct_tuple(key, pi);
	e = ct_dir_possible(pi, CT_FORWARD) ? bpf_map_lookup_elem(&ct, key) : NULL;
	if (e && e->expires_ns > now) {
		*dir = CT_FORWARD;
		return e;
	}
	ct_reverse(&rev, key);
	e = ct_dir_possible(pi, CT_REPLY) ? bpf_map_lookup_elem(&ct, &rev) : NULL;
	if (e && e->expires_ns > now) {
		*key = rev;
		*dir = CT_REPLY;
		return e;
	}
	*dir = CT_NEW;
	return NULL;
}

/* ICMP errors (destination unreachable, packet too big, time exceeded,
 * parameter problem) quote the packet that caused them. */
static __always_inline int icmp_is_error(const struct pkt_info *pi)
{
	if (pi->proto == IPPROTO_ICMP)
		return pi->icmp_type == 3 || pi->icmp_type == 11 || pi->icmp_type == 12;
	if (pi->proto == IPPROTO_ICMPV6)
		return pi->icmp_type >= 1 && pi->icmp_type <= 4;
	return 0;
}

/* Whether an ICMP error is about a tracked connection ("related", as
 * netfilter says): the quoted packet's tuple, either way round, has a live
 * entry. Path-MTU discovery and port-unreachable answers then work under any
 * policy, while an error about nothing known is left to policy. `*flags`
 * gets the entry's flags (CT_F_SERVICE: the error is about a translated
 * connection). Rare packets: the quoted headers are copied out with
 * bpf_skb_load_bytes. */
static __always_inline int ct_related(struct __sk_buff *skb, const struct pkt_info *pi, __u64 now, __u32 *flags)
{
	struct ct_key key = { .family = pi->family }, rev;
	struct ct_entry *e;
	__u32 off = (__u32)pi->l4_off + 8;

	if (pi->fragment == FRAG_LATER)
		return 0;
	if (pi->family == FLOW_FAMILY_IPV4) {
		struct iphdr inner;

		if (bpf_skb_load_bytes(skb, off, &inner, sizeof(inner)) < 0 || inner.version != 4 || inner.ihl < 5)
			return 0;
		key.proto = inner.protocol;
		__builtin_memcpy(key.saddr, &inner.saddr, 4);
		__builtin_memcpy(key.daddr, &inner.daddr, 4);
		off += inner.ihl * 4;
	} else {
		struct ipv6hdr inner;

		if (bpf_skb_load_bytes(skb, off, &inner, sizeof(inner)) < 0 || inner.version != 6)
			return 0;
		key.proto = inner.nexthdr;
		__builtin_memcpy(key.saddr, &inner.saddr, 16);
		__builtin_memcpy(key.daddr, &inner.daddr, 16);
		off += sizeof(inner);
	}
	switch (key.proto) {
	case IPPROTO_TCP:
	case IPPROTO_UDP:
	case IPPROTO_SCTP: {
		__be16 ports[2];

		if (bpf_skb_load_bytes(skb, off, ports, sizeof(ports)) < 0)
			return 0;
		key.sport = bpf_ntohs(ports[0]);
		key.dport = bpf_ntohs(ports[1]);
		break;
	}
	case IPPROTO_ICMP:
	case IPPROTO_ICMPV6: {
		__u8 ic[8];

		/* Only an echo request has a connection to be about. */
		if (bpf_skb_load_bytes(skb, off, ic, sizeof(ic)) < 0 || ic[0] != (key.proto == IPPROTO_ICMP ? 8 : 128))
			return 0;
		key.sport = (__u16)ic[4] << 8 | ic[5];
		key.dport = key.sport;
		break;
	}
	default:
		return 0;
	}
	e = bpf_map_lookup_elem(&ct, &key);
	if (!e || e->expires_ns <= now) {
		ct_reverse(&rev, &key);
		e = bpf_map_lookup_elem(&ct, &rev);
		if (!e || e->expires_ns <= now)
			return 0;
	}
	*flags = e->flags;
	return 1;
}

/* A TCP segment that may open a connection: SYN without ACK, RST or FIN. */
static __always_inline int tcp_can_open(__u8 flags)
{
	return (flags & TCP_FLAGS_STATE) == FLOW_TCP_SYN;
}

static __always_inline __u64 ct_lifetime_ns(__u16 ct_flags, __u8 proto)
{
	if (proto != IPPROTO_TCP)
		return CT_LIFETIME_NONTCP * NSEC_PER_SEC;
	if ((ct_flags & CT_F_RST) || (ct_flags & (CT_F_TX_FIN | CT_F_RX_FIN)) == (CT_F_TX_FIN | CT_F_RX_FIN))
		return CT_LIFETIME_CLOSE * NSEC_PER_SEC;
	if (ct_flags & CT_F_SEEN_REPLY)
		return CT_LIFETIME_TCP * NSEC_PER_SEC;
	return CT_LIFETIME_SYN * NSEC_PER_SEC;
}

/* Accounts a packet of an existing connection; returns whether it should be
 * reported (monitor aggregation: first reply, SYN/FIN/RST, or the direction's
 * last report older than trace_interval_ns). The lifetime is written only when
 * it moves by more than a second, so most packets only bump the counters. */
static __always_inline int ct_update(struct ct_entry *e, const struct pkt_info *pi, int reply,
				     __u32 len, __u64 now)
{
	__u8 tcp = pi->proto == IPPROTO_TCP ? pi->tcp_flags : 0;
	__u16 flags = e->flags;
	__u64 *last;
	__u64 life, expires;
	int report = 0;

	if (reply) {
		e->packets_rev++;
		e->bytes_rev += len;
		if (!(flags & CT_F_SEEN_REPLY)) {
			flags |= CT_F_SEEN_REPLY;
			report = 1;
		}
		if (tcp & FLOW_TCP_FIN)
			flags |= CT_F_RX_FIN;
		if ((e->tcp_flags_rev | tcp) != e->tcp_flags_rev)
			e->tcp_flags_rev |= tcp;
		last = &e->last_report_rev;
	} else {
		e->packets_fwd++;
		e->bytes_fwd += len;
		if (tcp & FLOW_TCP_FIN)
			flags |= CT_F_TX_FIN;
		if ((e->tcp_flags_fwd | tcp) != e->tcp_flags_fwd)
			e->tcp_flags_fwd |= tcp;
		last = &e->last_report_fwd;
	}
	if (tcp & FLOW_TCP_RST)
		flags |= CT_F_RST;
	if (tcp & (FLOW_TCP_SYN | FLOW_TCP_FIN | FLOW_TCP_RST))
		report = 1;
	if (flags != e->flags)
		e->flags = flags;
	if (report || now - *last >= trace_interval_ns) {
		*last = now;
		report = 1;
	}
	life = ct_lifetime_ns(flags, pi->proto);
	expires = now + life;
	if (expires > e->expires_ns + NSEC_PER_SEC ||
	    (life == CT_LIFETIME_CLOSE * NSEC_PER_SEC && expires < e->expires_ns))
		e->expires_ns = expires;
	return report;
}

/* Records a new connection opened by the packet `pi` (identities and cookies
 * already decided). */
static __always_inline void ct_create(const struct ct_key *key, const struct pkt_info *pi,
				      __u32 revision, __u32 len, __u64 now)
{
	struct ct_entry e = {
		.last_report_fwd = now,
		.created_ns = now,
		.packets_fwd = 1,
		.bytes_fwd = len,
		.policy_revision = revision,
		.src_identity = pi->src_identity,
		.dst_identity = pi->dst_identity,
		.egress_cookie = pi->egress_cookie,
		.ingress_cookie = pi->ingress_cookie,
		.tcp_flags_fwd = pi->proto == IPPROTO_TCP ? pi->tcp_flags : 0,
	};

	e.expires_ns = now + ct_lifetime_ns(0, pi->proto);
	bpf_map_update_elem(&ct, key, &e, BPF_ANY);
}

#endif
