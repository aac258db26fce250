/* Ethernet and packet-access helpers shared by the endpoint programs. */
#ifndef WAGGLE_LIB_ETH_H
#define WAGGLE_LIB_ETH_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#ifndef ETH_ALEN
#define ETH_ALEN 6
#endif

/* Bytes of headers the programs read directly: Ethernet, the longest IPv4
 * header or an IPv6 header with one hop-by-hop header, and an L4 header. */
#define PKT_HEADROOM_PULL 128

static __always_inline void *pkt_data(const struct __sk_buff *skb)
{
	return (void *)(long)skb->data;
}

static __always_inline void *pkt_end(const struct __sk_buff *skb)
{
	return (void *)(long)skb->data_end;
}

/* Makes sure the headers are in the linear part of the skb so they can be
 * read directly. Costs nothing when they already are (the common case). */
static __always_inline void pkt_pull_headers(struct __sk_buff *skb)
{
	__u32 linear = (__u32)(skb->data_end - skb->data);
	__u32 want = skb->len < PKT_HEADROOM_PULL ? skb->len : PKT_HEADROOM_PULL;

	if (linear < want)
		bpf_skb_pull_data(skb, want);
}

static __always_inline int mac_eq(const __u8 *a, const volatile __u8 *b)
{
	return a[0] == b[0] && a[1] == b[1] && a[2] == b[2] &&
	       a[3] == b[3] && a[4] == b[4] && a[5] == b[5];
}

static __always_inline void mac_copy(__u8 *dst, const volatile __u8 *src)
{
	dst[0] = src[0];
	dst[1] = src[1];
	dst[2] = src[2];
	dst[3] = src[3];
	dst[4] = src[4];
	dst[5] = src[5];
}

#endif
