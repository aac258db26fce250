/* The one exit for dropped packets: `return drop(skb, pi, DROP_...);`
 * emits a drop event (always: drops are rare and must be visible; never
 * aggregated), counts the packet in `metrics` under (reason, direction), and
 * returns TC_ACT_SHOT. The event carries the source line of the call. */
#ifndef WAGGLE_LIB_DROP_H
#define WAGGLE_LIB_DROP_H

#include <linux/pkt_cls.h>
#include "drop_reasons.h"
#include "flow.h"

static __always_inline int drop_packet(struct __sk_buff *skb, const struct pkt_info *pi,
				       __u16 reason, __u16 line)
{
	__u8 obs = pi->direction == METRIC_EGRESS ? OBS_FROM_ENDPOINT : OBS_TO_ENDPOINT;
	__u32 src_ep = pi->direction == METRIC_EGRESS ? pi->endpoint_id : 0;
	__u32 dst_ep = pi->direction == METRIC_INGRESS ? pi->endpoint_id : 0;

	metrics_count(reason, pi->direction, skb->len);
	emit_event(skb, pi, FLOW_EVENT_DROP, obs, VERDICT_DROPPED, reason, src_ep, dst_ep, line);
	return TC_ACT_SHOT;
}

#define drop(skb, pi, reason) drop_packet(skb, pi, reason, __LINE__)

/* A drop by policy: the event names both endpoints (0 when not local), the
 * deciding rule (pi's cookies, match type) and the direction (pi->flags). */
static __always_inline int drop_by_policy(struct __sk_buff *skb, const struct pkt_info *pi,
					  __u16 reason, __u32 src_ep, __u32 dst_ep, __u16 line)
{
	__u8 obs = pi->direction == METRIC_EGRESS ? OBS_FROM_ENDPOINT : OBS_TO_ENDPOINT;

	metrics_count(reason, pi->direction, skb->len);
	emit_event(skb, pi, FLOW_EVENT_DROP, obs, VERDICT_DROPPED, reason, src_ep, dst_ep, line);
	return TC_ACT_SHOT;
}

#define drop_policy(skb, pi, reason, src_ep, dst_ep) drop_by_policy(skb, pi, reason, src_ep, dst_ep, __LINE__)

#endif
