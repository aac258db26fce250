/* The `ipcache` map: IP prefix -> security identity, for every address the
 * datapath must name: local endpoints (/32, /128), the node's own addresses
 * (identity host) and the prefixes of CIDR policy rules (CIDR identities).
 * An address without an entry is `world`. Longest prefix wins.
 * Mirrored by src/datapath/codecs/ipcache.ts (checked against BTF by a test). */
#ifndef WAGGLE_IPCACHE_H
#define WAGGLE_IPCACHE_H

#include <linux/types.h>

#define IPCACHE_MAX 65536

/* Reserved identities (Cilium's numbers). */
#define IDENTITY_UNKNOWN 0
#define IDENTITY_HOST 1
#define IDENTITY_WORLD 2

/* IPCACHE_PREFIX_FIXED: bits of the key before the address (family + pad),
 * always part of the prefix: prefixlen = IPCACHE_PREFIX_FIXED + address bits. */
#define IPCACHE_PREFIX_FIXED 32

struct ipcache_key {
	__u32 prefixlen; /* LPM prefix length in bits, counting from `family` */
	__u8 family;     /* AF_INET (2) or AF_INET6 (10) */
	__u8 pad[3];
	__u8 addr[16];   /* network order; IPv4 in the first 4 bytes */
};

struct ipcache_value {
	__u32 identity;
	__u32 flags;     /* none defined yet, keep 0 */
};

#endif
