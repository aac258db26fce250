/* The per-CPU `metrics` array: packets and bytes per verdict reason and
 * direction, counted by the endpoint programs on every packet. The index is
 * METRICS_INDEX(reason, direction): an array, not a hash, so counting a
 * packet is a direct per-CPU access with no hashing.
 * Mirrored by src/datapath/codecs/metrics.ts (checked against BTF by a test). */
#ifndef WAGGLE_METRICS_H
#define WAGGLE_METRICS_H

#include <linux/types.h>

/* Directions, seen from the endpoint (Cilium's numbering). */
#define METRIC_INGRESS 1      /* towards the endpoint (to_endpoint) */
#define METRIC_EGRESS 2       /* leaving the endpoint (from_endpoint) */
/* Events that did not fit in the ring buffer: counted here, per reason,
 * instead of being silently lost. */
#define METRIC_EVENT_LOST 3

/* reason: REASON_FORWARDED (0) or a DROP_* reason (< 256). */
#define METRICS_INDEX(reason, direction) ((((__u32)(direction) & 3) << 8) | ((__u32)(reason) & 0xff))
#define METRICS_MAX 1024

struct metrics_value {
	__u64 packets;
	__u64 bytes;
};

#endif
