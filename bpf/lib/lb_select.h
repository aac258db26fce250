/* Service lookup and backend selection over the maps of bpf/include/lb.h,
 * shared by the socket programs and the endpoint programs. */
#ifndef WAGGLE_LIB_LB_SELECT_H
#define WAGGLE_LIB_LB_SELECT_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "lb.h"

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, LB_SERVICES_MAX);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct lb_service_key);
	__type(value, struct lb_service);
} lb_services SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, LB_BACKENDS_MAX);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, __u32);
	__type(value, struct lb_backend);
} lb_backends SEC(".maps");

/* service_id → its Maglev table (an array of backend IDs; the agent creates
 * one per Maglev service with the service's table size). BPF_F_INNER_MAP:
 * tables of any size (the agent's --maglev-table-size). BPF_F_MMAPABLE: the
 * agent writes a table through a shared mapping (~10 µs for 16381 entries,
 * where batch updates of an array take ~6 ms); inner maps must carry exactly
 * the template's flags (LB_MAGLEV_INNER_FLAGS in src/datapath/codecs/lb.ts). */
struct lb_maglev_inner {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 16381);
	__uint(map_flags, BPF_F_INNER_MAP | BPF_F_MMAPABLE);
	__type(key, __u32);
	__type(value, __u32);
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH_OF_MAPS);
	__uint(max_entries, LB_MAGLEV_MAX);
	__type(key, __u32);
	__array(values, struct lb_maglev_inner);
} lb_maglev SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, LB_AFFINITY_MAX);
	__type(key, struct lb_affinity_key);
	__type(value, struct lb_affinity);
} lb_affinity SEC(".maps");

/* Bob Jenkins' lookup3 final mix over three words (as the kernel's jhash_3words). */
static __always_inline __u32 lb_rol32(__u32 w, __u32 s)
{
	return (w << s) | (w >> (32 - s));
}

static __always_inline __u32 lb_hash3(__u32 a, __u32 b, __u32 c)
{
	a += 0xdeadbeef + 12;
	b += 0xdeadbeef + 12;
	c += 0xdeadbeef + 12;
	c ^= b; c -= lb_rol32(b, 14);
	a ^= c; a -= lb_rol32(c, 11);
	b ^= a; b -= lb_rol32(a, 25);
	c ^= b; c -= lb_rol32(b, 16);
	a ^= c; a -= lb_rol32(c, 4);
	b ^= a; b -= lb_rol32(a, 14);
	c ^= b; c -= lb_rol32(b, 24);
	return c;
}

/* The service at addr:port/proto (slot 0), or NULL. `key` is left filled for lb_select. */
static __always_inline struct lb_service *lb_lookup_service(struct lb_service_key *key, __u8 family,
							    const __u8 *addr, __u16 port_be, __u8 proto)
{
	__builtin_memset(key, 0, sizeof(*key));
	key->family = family;
	key->proto = proto;
	key->port = port_be;
	if (family == 2)
		__builtin_memcpy(key->addr, addr, 4);
	else
		__builtin_memcpy(key->addr, addr, 16);
	return bpf_map_lookup_elem(&lb_services, key);
}

/* A backend for a new connection to `svc` (found with `key`): the client's
 * affinity entry while it is fresh, else the Maglev table at `hash`, else a
 * random slot. NULL when the service has no backend taking connections.
 * `client` is the client's address (for affinity), `family` its family. */
static __always_inline struct lb_backend *lb_select(struct lb_service_key *key, const struct lb_service *svc,
						    const __u8 *client, __u8 family, __u32 hash,
						    __u32 *backend_id)
{
	struct lb_affinity_key akey = {};
	struct lb_affinity *aff = NULL;
	struct lb_backend *be;
	struct lb_service *slot;
	__u64 now = 0;
	__u32 id = 0;

	if (svc->count == 0)
		return NULL;
	if (svc->flags & LB_F_AFFINITY) {
		akey.service_id = svc->service_id;
		akey.family = family;
		if (family == 2)
			__builtin_memcpy(akey.client, client, 4);
		else
			__builtin_memcpy(akey.client, client, 16);
		now = bpf_ktime_get_ns();
		aff = bpf_map_lookup_elem(&lb_affinity, &akey);
		if (aff && now - aff->last_used_ns <= (__u64)svc->affinity_timeout * 1000000000ULL) {
			be = bpf_map_lookup_elem(&lb_backends, &aff->backend_id);
			if (be && !(be->flags & LB_BACKEND_F_TERMINATING)) {
				id = aff->backend_id;
				aff->last_used_ns = now;
				*backend_id = id;
				return be;
			}
		}
	}
	if (svc->flags & LB_F_MAGLEV) {
		__u32 sid = svc->service_id, index;
		void *table = bpf_map_lookup_elem(&lb_maglev, &sid);
		__u32 *entry;

		if (!table || svc->maglev_size == 0)
			return NULL;
		index = hash % svc->maglev_size;
		entry = bpf_map_lookup_elem(table, &index);
		if (!entry)
			return NULL;
		id = *entry;
	} else {
		key->slot = (__u16)(bpf_get_prandom_u32() % svc->count) + 1;
		slot = bpf_map_lookup_elem(&lb_services, key);
		key->slot = 0;
		if (!slot)
			return NULL;
		id = slot->backend_id;
	}
	be = bpf_map_lookup_elem(&lb_backends, &id);
	if (!be)
		return NULL;
	if (svc->flags & LB_F_AFFINITY) {
		struct lb_affinity fresh = { .last_used_ns = now, .backend_id = id };

		bpf_map_update_elem(&lb_affinity, &akey, &fresh, BPF_ANY);
	}
	*backend_id = id;
	return be;
}

#endif
