/* The 64-byte record emitted by events_test.bpf.c into its ring buffer.
 * Mirrored by src/datapath/codecs/test-event.ts (checked against BTF by a test). */
#ifndef WAGGLE_TEST_EVENT_H
#define WAGGLE_TEST_EVENT_H

#include <linux/types.h>

struct test_event {
	__u64 seq;        /* global sequence number, starts at 0 */
	__u64 timestamp;  /* bpf_ktime_get_ns() */
	__u32 cpu;
	__u32 pkt_len;
	__u32 ifindex;
	__u16 protocol;   /* skb->protocol, network byte order */
	__u8 tag;         /* load-time constant, identifies the producer */
	__u8 pad;
	__u8 payload[32]; /* first bytes of the packet */
};

#endif
