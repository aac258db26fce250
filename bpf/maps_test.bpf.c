// SPDX-License-Identifier: GPL-2.0
/* One map of every type the library supports, declared with BTF, plus a
 * program that uses the LPM trie and the prog array. Used by the library's
 * spec, pinning and map tests. */
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>

struct lpm_v4_key {
	__u32 prefixlen;
	__u32 addr;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, __u32);
	__type(value, __u64);
} hash_map SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 1024);
	__type(key, __u64);
	__type(value, __u64);
} lru_map SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 16);
	__type(key, __u32);
	__type(value, __u64);
} array_map SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 1024);
	__type(key, __u32);
	__type(value, __u64);
} percpu_hash_map SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 1024);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct lpm_v4_key);
	__type(value, __u32);
} lpm_map SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PROG_ARRAY);
	__uint(max_entries, 4);
	__type(key, __u32);
	__type(value, __u32);
} prog_array SEC(".maps");

struct inner_map {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 64);
	__type(key, __u32);
	__type(value, __u32);
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH_OF_MAPS);
	__uint(max_entries, 8);
	__type(key, __u32);
	__array(values, struct inner_map);
} hash_of_maps SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, 8);
	__type(key, __u32);
	__array(values, struct inner_map);
} array_of_maps SEC(".maps");

/* Looks up the packet's (IPv4, at offset 26 of an Ethernet frame) source in
 * lpm_map and returns the value found, or tail-calls prog_array[0]. */
SEC("tc")
int lpm_lookup(struct __sk_buff *skb)
{
	struct lpm_v4_key key = { .prefixlen = 32 };
	__u32 *value;

	if (bpf_skb_load_bytes(skb, 26, &key.addr, sizeof(key.addr)) < 0)
		return TC_ACT_SHOT;
	value = bpf_map_lookup_elem(&lpm_map, &key);
	if (value)
		return *value;
	bpf_tail_call(skb, &prog_array, 0);
	return TC_ACT_UNSPEC;
}

/* Tail-call target: returns a fixed verdict. */
SEC("tc")
int tail_target(struct __sk_buff *skb)
{
	return 42;
}

char LICENSE[] SEC("license") = "GPL";
