/* The `endpoints` map, shared by every endpoint's programs: local endpoint
 * address -> where to deliver it. Declared once here so every object that
 * includes it declares the same map (the agent pins it). */
#ifndef WAGGLE_LIB_ENDPOINTS_H
#define WAGGLE_LIB_ENDPOINTS_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "endpoint.h"

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, ENDPOINTS_MAX);
	__type(key, struct endpoint_key);
	__type(value, struct endpoint_info);
} endpoints SEC(".maps");

/* The local endpoint that owns the IPv4 address `addr` (network order), if any. */
static __always_inline struct endpoint_info *lookup_endpoint4(__be32 addr)
{
	struct endpoint_key key = { .family = ENDPOINT_FAMILY_IPV4 };

	__builtin_memcpy(key.addr, &addr, 4);
	return bpf_map_lookup_elem(&endpoints, &key);
}

/* The local endpoint that owns the IPv6 address `addr`, if any. */
static __always_inline struct endpoint_info *lookup_endpoint6(const __u8 *addr)
{
	struct endpoint_key key = { .family = ENDPOINT_FAMILY_IPV6 };

	__builtin_memcpy(key.addr, addr, 16);
	return bpf_map_lookup_elem(&endpoints, &key);
}

/* The local endpoint that owns `addr` (4 or 16 bytes by `family`), if any. */
static __always_inline struct endpoint_info *lookup_endpoint(__u8 family, const __u8 *addr)
{
	struct endpoint_key key = { .family = family };

	if (family == ENDPOINT_FAMILY_IPV4)
		__builtin_memcpy(key.addr, addr, 4);
	else
		__builtin_memcpy(key.addr, addr, 16);
	return bpf_map_lookup_elem(&endpoints, &key);
}

#endif
