/* The per-CPU `metrics` map: packets and bytes per verdict reason and
 * direction, counted by the endpoint programs on every packet.
 * Mirrored by src/datapath/codecs/metrics.ts (checked against BTF by a test). */
#ifndef WAGGLE_METRICS_H
#define WAGGLE_METRICS_H

#include <linux/types.h>

/* metrics_key.direction, seen from the endpoint (Cilium's numbering). */
#define METRIC_INGRESS 1      /* towards the endpoint (to_endpoint) */
#define METRIC_EGRESS 2       /* leaving the endpoint (from_endpoint) */
/* Events that did not fit in the ring buffer: counted here, per reason,
 * instead of being silently lost. */
#define METRIC_EVENT_LOST 3

/* Entries of the `metrics` map. */
#define METRICS_MAX 1024

struct metrics_key {
	__u16 reason;    /* REASON_FORWARDED (0) or a DROP_* reason */
	__u8 direction;  /* METRIC_* */
	__u8 pad;
};

struct metrics_value {
	__u64 packets;
	__u64 bytes;
};

#endif
