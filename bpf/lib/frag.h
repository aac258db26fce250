/* Fragment tracking: later fragments of an IP datagram carry no L4 header,
 * yet conntrack, policy and service translation key on the datagram's ports.
 * The first fragment (IPv4: MF set at offset 0; IPv6: a Fragment header at
 * offset 0 with M set) leaves its ports, ICMP type, code and identifier in
 * `frag_ports` under (family, protocol, source, destination, identification);
 * a later fragment gets them back from there and is then handled like its
 * first fragment: same conntrack entry, same verdict, same backend. Only the
 * IP header of a later fragment is ever rewritten (lb_xlate.h): the L4
 * checksum, in the first fragment, covers the whole datagram.
 *
 * A later fragment whose first fragment was not seen here (lost, reordered,
 * or evicted from the LRU map) cannot be told apart from a port-less packet;
 * frag_track() says DROP_FIRST_LOGICAL_DATAGRAM_FRAGMENT_NOT_FOUND for it
 * rather than let a datagram's tail pass a port rule its head was held to.
 *
 * Per packet: nothing for an unfragmented packet; one map update for a first
 * fragment, one lookup for a later one. Not pinned: the fragments of a
 * datagram all pass the same hook, so each program object keeps its own. */
#ifndef WAGGLE_LIB_FRAG_H
#define WAGGLE_LIB_FRAG_H

#include <linux/bpf.h>
#include <linux/in.h>
#include <bpf/bpf_helpers.h>
#include "drop_reasons.h"

#define FRAG_MAX 8192

/* pkt_info.fragment */
#define FRAG_NONE 0
#define FRAG_LATER 1 /* a non-first fragment: no L4 header in this packet */
#define FRAG_FIRST 2 /* the first fragment of a fragmented datagram */

struct frag_key {
	__u8 saddr[16];
	__u8 daddr[16];
	__u32 id; /* IPv4: the 16-bit identification; IPv6: the Fragment header's 32 bits (as on the wire) */
	__u8 proto;
	__u8 family;
	__u16 pad;
};

/* The L4 fields of the first fragment, as parse_l4 filled them (host order). */
struct frag_ports {
	__u16 sport;
	__u16 dport;
	__u8 icmp_type;
	__u8 icmp_code;
	__u16 icmp_id;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, FRAG_MAX);
	__type(key, struct frag_key);
	__type(value, struct frag_ports);
} frag_ports SEC(".maps");

/* Whether a datagram of this protocol has L4 fields rules and translation use. */
static __always_inline int frag_has_ports(__u8 proto)
{
	return proto == IPPROTO_TCP || proto == IPPROTO_UDP || proto == IPPROTO_SCTP || proto == IPPROTO_ICMP ||
	       proto == IPPROTO_ICMPV6;
}

#endif
