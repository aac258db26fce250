/* The record the endpoint programs write into the `events` ring buffer, one
 * per traced or dropped packet. Numbers follow Hubble's flow.proto and
 * Cilium's monitor API so the flow decoder maps them one to one.
 * Mirrored by src/datapath/codecs/flow-event.ts (checked against BTF by a test). */
#ifndef WAGGLE_FLOW_EVENT_H
#define WAGGLE_FLOW_EVENT_H

#include <linux/types.h>

/* flow_event.type (Cilium monitor message types). */
#define FLOW_EVENT_DROP 1
#define FLOW_EVENT_TRACE 4
#define FLOW_EVENT_POLICY_VERDICT 5

/* flow_event.obs_point (Hubble TraceObservationPoint). */
#define OBS_TO_STACK 3       /* handed to the node's network stack */
#define OBS_FROM_ENDPOINT 5  /* seen leaving an endpoint (drops before any decision) */
#define OBS_TO_ENDPOINT 101  /* delivered to an endpoint */
#define OBS_TO_NETWORK 11    /* sent out of a host device (a NodePort reply to an outside client) */

/* flow_event.verdict (Hubble Verdict). */
#define VERDICT_FORWARDED 1
#define VERDICT_DROPPED 2

/* flow_event.family: 0 when the packet is not IP (e.g. ARP). */
#define FLOW_FAMILY_IPV4 2  /* AF_INET */
#define FLOW_FAMILY_IPV6 10 /* AF_INET6 */

/* flow_event.tcp_flags bits (the TCP header's flag byte). */
#define FLOW_TCP_FIN 0x01
#define FLOW_TCP_SYN 0x02
#define FLOW_TCP_RST 0x04
#define FLOW_TCP_PSH 0x08
#define FLOW_TCP_ACK 0x10
#define FLOW_TCP_URG 0x20
#define FLOW_TCP_ECE 0x40
#define FLOW_TCP_CWR 0x80

/* flow_event.flags */
#define FLOW_F_REPLY_KNOWN 0x01  /* conntrack knows the direction: FLOW_F_IS_REPLY is meaningful */
#define FLOW_F_IS_REPLY 0x02     /* the packet belongs to the reply direction of its connection */
#define FLOW_F_INGRESS 0x04      /* policy verdicts and policy drops: decided by ingress policy */
#define FLOW_F_EGRESS 0x08       /* ... by egress policy */
#define FLOW_F_TRANSLATED 0x10   /* service load balancing translated the packet (per-packet
				  * DNAT, or the reverse on a reply); `line` then holds the
				  * service ID (lb_service.service_id, low 16 bits) */

/* 96 bytes. Multi-byte numbers are host byte order; addresses network order. */
struct flow_event {
	__u64 time_ns;       /* bpf_ktime_get_ns(): CLOCK_MONOTONIC */
	__u32 endpoint_id;   /* the endpoint whose program observed the packet */
	__u32 ifindex;       /* the device of the hook that observed it */
	__u32 src_endpoint;  /* endpoint ID of the source, 0 when not local */
	__u32 dst_endpoint;  /* endpoint ID of the destination, 0 when not local */
	__u32 src_identity;  /* security identity of the source, 0 when not known */
	__u32 dst_identity;  /* ... of the destination */
	__u32 egress_cookie; /* the rule of the source's egress policy that decided (0: none) */
	__u32 ingress_cookie;/* the rule of the destination's ingress policy that decided */
	__u32 pkt_len;       /* skb->len */
	__u16 drop_reason;   /* drop_reasons.h; 0 for traces */
	__u16 line;          /* source line of the drop in the program; 0 for traces;
			      * with FLOW_F_TRANSLATED: the service ID instead */
	__u8 type;           /* FLOW_EVENT_* */
	__u8 obs_point;      /* OBS_* */
	__u8 verdict;        /* VERDICT_* */
	__u8 family;         /* FLOW_FAMILY_*, 0 for non-IP */
	__u8 ip_proto;       /* IPPROTO_* of the L4 header, 0 when unknown */
	__u8 tcp_flags;      /* FLOW_TCP_* */
	__u8 icmp_type;      /* ICMP/ICMPv6 only */
	__u8 icmp_code;      /* ICMP/ICMPv6 only */
	__u16 src_port;      /* TCP/UDP/SCTP only */
	__u16 dst_port;      /* TCP/UDP/SCTP only */
	__u16 eth_proto;     /* the Ethernet type (0x0800, 0x86dd, 0x0806, ...) */
	__u8 match_type;     /* POLICY_MATCH_* of the deciding rule (policy verdicts, policy drops) */
	__u8 flags;          /* FLOW_F_* */
	__u8 src_addr[16];   /* IPv4 in the first 4 bytes */
	__u8 dst_addr[16];
};

#endif
