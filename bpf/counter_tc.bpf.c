// SPDX-License-Identifier: GPL-2.0
/* Counts packets per IP protocol at TC (ingress or egress, tcx or clsact),
 * then returns a load-time verdict. */
#include <linux/pkt_cls.h>
#include "pkt_count.h"

/* Only packets of this IP protocol are counted; 0 counts everything. */
const volatile __u32 count_protocol = 0;
/* TC action returned for every packet (TC_ACT_OK by default). */
const volatile __s32 verdict = TC_ACT_OK;

SEC("tc")
int tc_count(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	__u32 key = counter_key(data, data_end);

	if (count_protocol == 0 || key == count_protocol)
		counter_add(key, skb->len);
	return verdict;
}

char LICENSE[] SEC("license") = "GPL";
