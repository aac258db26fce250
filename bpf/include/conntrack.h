/* The `ct` map: stateful connection tracking for IPv4 and IPv6, one LRU hash
 * keyed by the connection's original-direction tuple. A packet matches its
 * connection by its own tuple (original direction) or by its reversed tuple
 * (a reply). Entries expire by `expires_ns`; the agent garbage-collects them.
 * The entry also carries monitor aggregation state (when each direction was
 * last reported) and the rules that allowed the connection.
 * Mirrored by src/datapath/codecs/conntrack.ts (checked against BTF by a test). */
#ifndef WAGGLE_CONNTRACK_H
#define WAGGLE_CONNTRACK_H

#include <linux/types.h>

#define CT_MAX 131072

/* Lifetimes (seconds), as Cilium's defaults. */
#define CT_LIFETIME_TCP 21600     /* established TCP */
#define CT_LIFETIME_SYN 60        /* TCP before the handshake completes */
#define CT_LIFETIME_CLOSE 10      /* TCP after RST, or FIN in both directions */
#define CT_LIFETIME_NONTCP 60     /* UDP, ICMP echo, SCTP, other */

struct ct_key {
	__u8 saddr[16];   /* network order; IPv4 in the first 4 bytes */
	__u8 daddr[16];
	__u16 sport;      /* host order; ICMP echo: the identifier in both ports */
	__u16 dport;
	__u8 proto;
	__u8 family;      /* AF_INET or AF_INET6 */
	__u16 pad;
};

/* ct_entry.flags */
#define CT_F_SEEN_REPLY 0x01   /* a packet went in the reply direction */
#define CT_F_TX_FIN 0x02       /* FIN in the original direction */
#define CT_F_RX_FIN 0x04       /* FIN in the reply direction */
#define CT_F_RST 0x08          /* RST in either direction */
#define CT_F_SERVICE 0x10      /* opened by a packet the endpoint programs translated to a
				* service backend (bpf/include/lb_nat.h): its replies are
				* translated back; the tuple is the translated one */

struct ct_entry {
	__u64 expires_ns;         /* bpf_ktime_get_ns() after which the entry is dead */
	__u64 last_report_fwd;    /* last trace event of the original direction */
	__u64 last_report_rev;    /* ... of the reply direction */
	__u64 packets_fwd;
	__u64 bytes_fwd;
	__u64 packets_rev;
	__u64 bytes_rev;
	__u64 created_ns;
	__u32 policy_revision;    /* policy_state.revision the connection was last checked against */
	__u32 src_identity;
	__u32 dst_identity;
	__u32 egress_cookie;      /* the rule of the source's egress policy that allowed it (0: none) */
	__u32 ingress_cookie;     /* the rule of the destination's ingress policy */
	__u16 flags;              /* CT_F_* */
	__u8 tcp_flags_fwd;       /* TCP flags seen in the original direction (OR) */
	__u8 tcp_flags_rev;
};

#endif
