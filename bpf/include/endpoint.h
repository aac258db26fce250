/* The `endpoints` map: every local endpoint's addresses, shared by all
 * endpoint programs (pinned by the agent) and written by TypeScript.
 * Mirrored by src/datapath/codecs/endpoint.ts (checked against BTF by a test). */
#ifndef WAGGLE_ENDPOINT_H
#define WAGGLE_ENDPOINT_H

#include <linux/types.h>

/* endpoint_key.family: the address family, as the socket API numbers it. */
#define ENDPOINT_FAMILY_IPV4 2  /* AF_INET */
#define ENDPOINT_FAMILY_IPV6 10 /* AF_INET6 */

/* endpoint_info.flags: the endpoint has policy entries in that direction
 * (`policy` map) and its traffic is looked up there; without the flag no
 * policy selects it in that direction and everything is allowed. */
#define ENDPOINT_F_POLICY_INGRESS 0x1
#define ENDPOINT_F_POLICY_EGRESS 0x2

/* Entries of the `endpoints` hash map. */
#define ENDPOINTS_MAX 65536

/* One address of an endpoint. Unused bytes (pad, addr[4..15] for IPv4) are zero. */
struct endpoint_key {
	__u8 family;   /* ENDPOINT_FAMILY_IPV4 or ENDPOINT_FAMILY_IPV6 */
	__u8 pad[3];
	__u8 addr[16]; /* network byte order; IPv4 in the first 4 bytes */
};

/* Where the endpoint is and how to reach it at layer 2. */
struct endpoint_info {
	__u32 ifindex;     /* the host-side veth of the endpoint (node namespace) */
	__u32 endpoint_id; /* the agent's endpoint ID, 1..65535 */
	__u8 mac[6];       /* the endpoint's own MAC (its eth0 inside its namespace) */
	__u8 node_mac[6];  /* the host-side veth's MAC: the endpoint's router MAC */
	__u32 flags;       /* ENDPOINT_F_* */
	__u32 identity;    /* the endpoint's security identity */
};

#endif
