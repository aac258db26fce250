/* Per-packet service translation state of the endpoint programs (the load
 * balancing that the socket programs cannot do: connections from processes
 * outside the agent's cgroup). Two LRU hash maps with the same key and value
 * layout, written by the datapath (the agent only reads them, or deletes
 * entries of a service it removes):
 *
 *   lb_nat      the original tuple (client -> service address:port) -> the
 *               backend chosen for the connection; later packets of the
 *               connection keep that backend while it is in `lb_backends`
 *               (even when terminating).
 *   lb_rev_nat  the reply tuple after translation (backend -> client, or for
 *               hairpin backend -> service address) -> the service
 *               address:port the reply's source is rewritten to.
 *
 * The host device program (bpf/netdev.bpf.c) writes the same entries for
 * NodePort connections that arrive from outside the node.
 *
 * Ports and addresses are in network order, as in the packet and in
 * bpf/include/lb.h. Sizes: LB_NAT_MAX (lb.h) entries each.
 * Mirrored by src/datapath/codecs/lb-nat.ts (checked against BTF by a test). */
#ifndef WAGGLE_LB_NAT_H
#define WAGGLE_LB_NAT_H

#include <linux/types.h>

/* A connection's tuple as the packet carries it. Unused bytes are zero. */
struct lb_nat_key {
	__u8 saddr[16];  /* network order; IPv4 in the first 4 bytes */
	__u8 daddr[16];
	__u16 sport;     /* network order */
	__u16 dport;     /* network order */
	__u8 proto;      /* IPPROTO_TCP / IPPROTO_UDP */
	__u8 family;     /* AF_INET or AF_INET6 */
	__u16 pad;
};

/* lb_nat_entry.flags */
#define LB_NAT_F_HAIRPIN 0x01 /* the client is its own backend: the source is
			       * rewritten to the service address as well
			       * (lb_nat), and the reply's destination back to
			       * the client (lb_rev_nat: the reply's source) */

struct lb_nat_entry {
	__u8 addr[16];      /* lb_nat: the backend's address when chosen;
			     * lb_rev_nat: the service address (the reply's new source) */
	__u16 port;         /* network order; lb_nat: the backend's port; lb_rev_nat: the service port */
	__u8 flags;         /* LB_NAT_F_* */
	__u8 pad;
	__u32 backend_id;   /* lb_backends key */
	__u32 service_id;   /* lb_service.service_id (slot 0) */
	__u32 ifindex;      /* a NodePort connection from outside the node: the
			     * host device it came in on (bpf/netdev.bpf.c), which
			     * its replies leave through; 0 for a connection
			     * from a local endpoint */
};

#endif
