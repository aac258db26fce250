/* Packet counters shared by the counter programs and TypeScript.
 * Mirrored by src/datapath/codecs/counter.ts (checked against BTF by a test). */
#ifndef WAGGLE_COUNTER_H
#define WAGGLE_COUNTER_H

#include <linux/types.h>

/* Value of the per-CPU `counters` array; the key is the IP protocol number
 * (0..255) of the packet, COUNTER_KEY_NON_IP for frames that are not IP. */
struct counter_value {
	__u64 packets;
	__u64 bytes;
};

#define COUNTER_KEY_NON_IP 256
#define COUNTER_ENTRIES 257

#endif
