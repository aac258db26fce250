/* The `ipcache` map (bpf/include/ipcache.h): the security identity of any
 * address. Shared by every endpoint program (the agent pins and writes it). */
#ifndef WAGGLE_LIB_IDENTITY_H
#define WAGGLE_LIB_IDENTITY_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "ipcache.h"
#include "flow_event.h"

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, IPCACHE_MAX);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct ipcache_key);
	__type(value, struct ipcache_value);
} ipcache SEC(".maps");

/* The identity of `addr` (4 or 16 bytes by `family`): its longest prefix in
 * the ipcache, or world. */
static __always_inline __u32 ipcache_identity(__u8 family, const __u8 *addr)
{
	struct ipcache_key key = { .family = family };
	struct ipcache_value *v;

	if (family == FLOW_FAMILY_IPV4) {
		key.prefixlen = IPCACHE_PREFIX_FIXED + 32;
		__builtin_memcpy(key.addr, addr, 4);
	} else {
		key.prefixlen = IPCACHE_PREFIX_FIXED + 128;
		__builtin_memcpy(key.addr, addr, 16);
	}
	v = bpf_map_lookup_elem(&ipcache, &key);
	return v ? v->identity : IDENTITY_WORLD;
}

#endif
