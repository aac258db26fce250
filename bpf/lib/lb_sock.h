/* Socket-level load balancing (bpf/sock.bpf.c): the maps only the cgroup
 * sock_addr programs use, next to the service maps of lb_select.h.
 *
 * These structs never leave the socket programs except for listings, so they
 * live here rather than in bpf/include/; src/datapath/sock.ts has their codecs
 * and its test checks them against the BTF of sock.bpf.o. */
#ifndef WAGGLE_LIB_LB_SOCK_H
#define WAGGLE_LIB_LB_SOCK_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#define LB_SOCK_REVNAT_MAX 65536 /* translated sockets × backends they talked to */
#define LB_SOCK_UDP_MAX 65536    /* unconnected UDP sockets × services they send to */

/* Family of an lb_affinity_key whose `client` is a network namespace cookie
 * (8 bytes, host order) rather than an address: at connect time a socket
 * usually has no source address yet, so the socket programs key
 * sessionAffinity by the client's network namespace (as Cilium does). */
#define LB_AFFINITY_NETNS 0

/* Reverse translation of one socket: the backend it was sent to → the
 * service address it asked for, so recvmsg and getpeername show the latter.
 * IPv4-mapped IPv6 addresses are stored as IPv4 (family AF_INET). */
struct lb_sock_revnat_key {
	__u64 cookie;   /* bpf_get_socket_cookie() */
	__u8 addr[16];  /* backend address, network order; IPv4 in the first 4 bytes */
	__u16 port;     /* backend port, network order */
	__u8 family;    /* AF_INET / AF_INET6 */
	__u8 pad[5];
};

struct lb_sock_revnat {
	__u8 addr[16];     /* service address, network order; IPv4 in the first 4 bytes */
	__u16 port;        /* service port, network order */
	__u8 family;       /* AF_INET / AF_INET6 */
	__u8 pad;
	__u32 service_id;  /* lb_service.service_id (for listings) */
};

/* The backend an unconnected UDP socket sends one service's datagrams to. */
struct lb_sock_udp_key {
	__u64 cookie;   /* bpf_get_socket_cookie() */
	__u8 addr[16];  /* service address, network order; IPv4 in the first 4 bytes */
	__u16 port;     /* service port, network order */
	__u8 family;    /* AF_INET / AF_INET6 */
	__u8 pad[5];
};

struct lb_sock_udp {
	__u32 service_id; /* the service when chosen (a new service with the same address chooses again) */
	__u32 backend_id; /* lb_backends key */
};

/* lb_sock_stats indexes (per-CPU counters). */
enum lb_sock_stat {
	LB_SOCK_STAT_CONNECT_XLATE,    /* connect4/6 sent to a backend */
	LB_SOCK_STAT_SENDMSG_XLATE,    /* sendmsg4/6 datagram sent to a backend */
	LB_SOCK_STAT_NO_BACKEND,       /* connect/sendmsg refused: service without a usable backend */
	LB_SOCK_STAT_REVNAT,           /* recvmsg/getpeername shown the service address */
	LB_SOCK_STAT_REVNAT_FULL,      /* a lb_sock_revnat update failed */
	LB_SOCK_STAT_UDP_STICKY,       /* sendmsg reused its socket's backend */
	LB_SOCK_STAT_MAX,
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, LB_SOCK_REVNAT_MAX);
	__type(key, struct lb_sock_revnat_key);
	__type(value, struct lb_sock_revnat);
} lb_sock_revnat SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, LB_SOCK_UDP_MAX);
	__type(key, struct lb_sock_udp_key);
	__type(value, struct lb_sock_udp);
} lb_sock_udp SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, LB_SOCK_STAT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} lb_sock_stats SEC(".maps");

static __always_inline void lb_sock_count(__u32 stat)
{
	__u64 *v = bpf_map_lookup_elem(&lb_sock_stats, &stat);

	if (v)
		*v += 1;
}

#endif
