/* The `lxc_config` map: who is behind each endpoint's host-side veth, keyed
 * by that veth's ifindex (skb->ifindex at both of its hooks). One pair of
 * endpoint programs serves every endpoint: the agent writes an endpoint's
 * entry before it attaches the programs to the endpoint's veth, and removes
 * it after detaching them. A packet on a device without an entry is dropped
 * (DROP_NO_CONFIGURATION_AVAILABLE_TO_PERFORM_POLICY_DECISION).
 * Mirrored by src/datapath/codecs/lxc-config.ts (checked against BTF by a test). */
#ifndef WAGGLE_LXC_CONFIG_H
#define WAGGLE_LXC_CONFIG_H

#include <linux/types.h>

/* lxc_config.flags: as ENDPOINT_F_POLICY_* (the same endpoint's flags). */
#define LXC_CONFIG_F_POLICY_INGRESS 0x1
#define LXC_CONFIG_F_POLICY_EGRESS 0x2

/* Entries of the `lxc_config` hash map (one per endpoint, like `endpoints`). */
#define LXC_CONFIG_MAX 65536

/* One endpoint's identity. Addresses in network byte order; an all-zero
 * address means "no address of that family". */
struct lxc_config {
	__u32 endpoint_id;  /* the agent's endpoint ID, 1..65535 */
	__be32 ipv4;        /* the endpoint's IPv4 address */
	__u8 ipv6[16];      /* the endpoint's IPv6 address */
	__u8 mac[6];        /* the endpoint's own MAC (its eth0) */
	__u8 host_mac[6];   /* the host-side veth's MAC: the router MAC the endpoint sees */
	__u32 flags;        /* LXC_CONFIG_F_* */
	__u32 identity;     /* the endpoint's security identity */
};

#endif
