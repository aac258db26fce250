// SPDX-License-Identifier: GPL-2.0
/* Emits one struct test_event per packet into a ring buffer. Run through
 * BPF_PROG_TEST_RUN with a repeat count to produce N records in order. */
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include "test_event.h"
#include "btf_export.h"

BTF_EXPORT(struct test_event, test_event);

/* Written into every record's tag field. */
const volatile __u8 tag = 0;

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 20);
} events SEC(".maps");

/* [0]: next sequence number; [1]: records that did not fit in the ring. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, __u64);
} event_state SEC(".maps");

SEC("tc")
int emit_event(struct __sk_buff *skb)
{
	__u32 seq_key = 0, lost_key = 1;
	__u64 *seq = bpf_map_lookup_elem(&event_state, &seq_key);
	__u64 *lost = bpf_map_lookup_elem(&event_state, &lost_key);
	struct test_event *e;

	if (!seq || !lost)
		return TC_ACT_SHOT;
	e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		__sync_fetch_and_add(lost, 1);
		return TC_ACT_SHOT;
	}
	e->seq = __sync_fetch_and_add(seq, 1);
	e->timestamp = bpf_ktime_get_ns();
	e->cpu = bpf_get_smp_processor_id();
	e->pkt_len = skb->len;
	e->ifindex = skb->ifindex;
	e->protocol = skb->protocol;
	e->tag = tag;
	e->pad = 0;
	if (bpf_skb_load_bytes(skb, 0, e->payload, sizeof(e->payload)) < 0)
		__builtin_memset(e->payload, 0, sizeof(e->payload));
	bpf_ringbuf_submit(e, 0);
	return TC_ACT_OK;
}

char LICENSE[] SEC("license") = "GPL";
