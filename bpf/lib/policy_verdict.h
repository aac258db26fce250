/* Policy verdicts from the `policy_exact` hash and the `policy` LPM trie
 * (bpf/include/policy.h): per decision, the best entry for the peer's
 * identity and for identity 0 (any peer); a deny from either wins. Only new connections (and connections
 * made under an older policy revision) are decided here; conntrack carries the
 * rest. */
#ifndef WAGGLE_LIB_POLICY_VERDICT_H
#define WAGGLE_LIB_POLICY_VERDICT_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "policy.h"
#include "drop_reasons.h"

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, POLICY_MAX);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct policy_key);
	__type(value, struct policy_value);
} policy SEC(".maps");

/* Single-port entries (see bpf/include/policy.h); no preallocation: the
 * memory follows the entries. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, POLICY_MAX);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct policy_key);
	__type(value, struct policy_value);
} policy_exact SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct policy_state);
} policy_state SEC(".maps");

/* The entry deciding `key`: its exact single-port entry, else its longest prefix. */
static __always_inline struct policy_value *policy_match(struct policy_key *key)
{
	struct policy_value *v = bpf_map_lookup_elem(&policy_exact, key);

	return v ? v : bpf_map_lookup_elem(&policy, key);
}

/* The current policy revision (0 before the agent wrote any). */
static __always_inline __u32 policy_revision(void)
{
	__u32 zero = 0;
	struct policy_state *s = bpf_map_lookup_elem(&policy_state, &zero);

	return s ? s->revision : 0;
}

/* Endpoint `endpoint_id`'s verdict in `direction` on traffic with the peer
 * `identity`, IP protocol `proto` and destination port (ICMP: type << 8 |
 * code) `dport`. Returns 0 (allowed), DROP_POLICY_DENY (a deny rule) or
 * DROP_POLICY_DENIED (no rule allows it); `cookie` and `match_type` name the
 * deciding entry (0 when none). */
static __always_inline int policy_lookup(__u32 endpoint_id, __u8 direction, __u32 identity, __u8 proto,
					 __u16 dport, __u32 *cookie, __u8 *match_type)
{
	struct policy_key key = {
		.prefixlen = POLICY_PREFIX_FULL,
		.endpoint_id = bpf_htons((__u16)endpoint_id),
		.direction = direction,
		.identity = bpf_htonl(identity),
		.proto = proto,
		.dport = bpf_htons(dport),
	};
	struct policy_value *exact, *any;

	exact = policy_match(&key);
	if (exact && exact->deny)
		goto deny_exact;
	any = NULL;
	if (identity != 0) {
		key.identity = 0;
		any = policy_match(&key);
		if (any && any->deny) {
			*cookie = any->cookie;
			*match_type = any->match_type;
			return DROP_POLICY_DENY;
		}
	}
	if (exact) {
		*cookie = exact->cookie;
		*match_type = exact->match_type;
		return 0;
	}
	if (any) {
		*cookie = any->cookie;
		*match_type = any->match_type;
		return 0;
	}
	*cookie = 0;
	*match_type = POLICY_MATCH_NONE;
	return DROP_POLICY_DENIED;
deny_exact:
	*cookie = exact->cookie;
	*match_type = exact->match_type;
	return DROP_POLICY_DENY;
}

#endif
