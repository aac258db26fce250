/* Service load balancing maps, shared by the socket programs (cgroup hooks)
 * and the endpoint programs (per-packet translation), written by the agent.
 *
 * A service is a frontend (address, port, protocol). Its entries in
 * `lb_services`: slot 0 describes the service (how many backends, how to pick
 * one); slots 1..count name the backends that take new connections (a
 * terminating backend has no slot but stays in `lb_backends`, so its existing
 * connections keep working). Maglev services also have a lookup table in
 * `lb_maglev` (service_id → array of backend IDs).
 * Mirrored by src/datapath/codecs/lb.ts (checked against BTF by a test). */
#ifndef WAGGLE_LB_H
#define WAGGLE_LB_H

#include <linux/types.h>

#define LB_SERVICES_MAX 262144    /* slot entries: services × (backends + 1) */
#define LB_BACKENDS_MAX 131072
#define LB_MAGLEV_MAX 8192        /* Maglev services */
#define LB_MAGLEV_TABLE_MAX 131071 /* largest table size (a prime) the inner maps hold */
#define LB_AFFINITY_MAX 65536
#define LB_NAT_MAX 131072         /* translated connections (per-packet LB) */

/* lb_service.flags */
#define LB_F_MAGLEV 0x01          /* pick by the Maglev table, not at random */
#define LB_F_AFFINITY 0x02        /* sessionAffinity: ClientIP */
#define LB_F_NODEPORT 0x04        /* frontend is a NodePort (node addresses) */
#define LB_F_LOCAL 0x08           /* only node-local backends (trafficPolicy Local) */

/* lb_backend.flags */
#define LB_BACKEND_F_TERMINATING 0x01 /* no new connections; existing ones continue */

struct lb_service_key {
	__u8 addr[16];   /* network order; IPv4 in the first 4 bytes */
	__u16 port;      /* network order, as in the packet */
	__u8 proto;      /* IPPROTO_TCP / IPPROTO_UDP */
	__u8 family;     /* AF_INET or AF_INET6 */
	__u16 slot;      /* 0: the service; 1..count: its backends */
	__u16 pad;
};

struct lb_service {
	__u32 backend_id;       /* slot > 0: the backend (lb_backends key) */
	__u32 service_id;       /* slot 0: the service's number (lb_maglev, lb_affinity, rev-NAT) */
	__u16 count;            /* slot 0: backends with a slot (taking new connections) */
	__u8 flags;             /* slot 0: LB_F_* */
	__u8 pad;
	__u32 affinity_timeout; /* slot 0: seconds (LB_F_AFFINITY) */
	__u32 maglev_size;      /* slot 0: entries of its Maglev table (LB_F_MAGLEV) */
};

struct lb_backend {
	__u8 addr[16];   /* network order; IPv4 in the first 4 bytes */
	__u16 port;      /* network order */
	__u8 proto;
	__u8 family;
	__u8 flags;      /* LB_BACKEND_F_* */
	__u8 pad[3];
};

/* Session affinity: the backend a client was last sent to for a service. */
struct lb_affinity_key {
	__u8 client[16];
	__u32 service_id;
	__u8 family;
	__u8 pad[3];
};

struct lb_affinity {
	__u64 last_used_ns;  /* bpf_ktime_get_ns() */
	__u32 backend_id;
	__u32 pad;
};

#endif
