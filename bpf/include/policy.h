/* The `policy` maps: every endpoint's resolved L3/L4 policy. A key is
 * (endpoint, direction, peer identity) exactly, then the IP protocol and the
 * destination port as a prefix, so port ranges are a few prefixes and "any
 * port" / "any protocol" are shorter prefixes. Entries for one exact
 * protocol and port live in the `policy_exact` hash (prefixlen always
 * POLICY_PREFIX_FULL); all others (ranges, any port, any protocol, ICMP types)
 * in the `policy` LPM trie. An exact entry is the longest possible match, so a
 * packet's verdict is, for its peer identity and then identity 0 (any peer):
 * the exact entry, else the longest prefix — a deny from either wins. The
 * common case (rules on single ports) costs hash lookups whatever the number
 * of rules; a trie's walk grows with its size, and only range and wildcard
 * entries are in it. An endpoint no policy selects in a direction gets an
 * allow-all entry.
 *
 * `policy_state` holds the policy revision: the agent bumps it after writing
 * a change, and a conntrack entry made under an older revision is checked
 * again on its next packet (so revoked connections are cut).
 * Mirrored by src/datapath/codecs/policy.ts (checked against BTF by a test). */
#ifndef WAGGLE_POLICY_H
#define WAGGLE_POLICY_H

#include <linux/types.h>

#define POLICY_MAX 1048576

#define POLICY_INGRESS 1
#define POLICY_EGRESS 2

/* Prefix bits of the exact part (endpoint_id, direction, pad, identity), and
 * of the exact part plus protocol and pad2 (a port prefix adds to that). */
#define POLICY_PREFIX_EXACT 64
#define POLICY_PREFIX_PROTO 80
#define POLICY_PREFIX_FULL 96

struct policy_key {
	__u32 prefixlen;
	__u16 endpoint_id;  /* big endian, like every field after prefixlen */
	__u8 direction;     /* POLICY_INGRESS or POLICY_EGRESS */
	__u8 pad;
	__u32 identity;     /* big endian; 0 = any peer */
	__u8 proto;         /* IPPROTO_*; ignored (outside the prefix) for "any protocol" */
	__u8 pad2;
	__u16 dport;        /* big endian; ICMP: type << 8 | code */
};

/* policy_value.match_type: Hubble's policy match types. */
#define POLICY_MATCH_NONE 0
#define POLICY_MATCH_L3_ONLY 1
#define POLICY_MATCH_L3_L4 2
#define POLICY_MATCH_L4_ONLY 3
#define POLICY_MATCH_ALL 4

struct policy_value {
	__u32 cookie;       /* the rule that decided: policy number << 16 | rule index + 1; 0 = no policy */
	__u8 deny;          /* 1: a deny rule */
	__u8 match_type;    /* POLICY_MATCH_* */
	__u16 pad;
};

/* The single entry of the `policy_state` array. */
struct policy_state {
	__u32 revision;
	__u32 pad;
};

#endif
