/* Ethernet and packet-access helpers shared by the endpoint programs. */
#ifndef WAGGLE_LIB_ETH_H
#define WAGGLE_LIB_ETH_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#ifndef ETH_ALEN
#define ETH_ALEN 6
#endif

/* What to pull when the headers cannot be sized from the linear data (or
 * carry IPv6 hop-by-hop options): Ethernet, the longest IPv4 header or an
 * IPv6 header with one hop-by-hop header, and an L4 header. */
#define PKT_HEADROOM_PULL 128

/* Bytes of an L4 header that the programs read directly after the IP header:
 * TCP and UDP headers (ports, flags), the SCTP ports, the ICMPv4 header (type,
 * code, echo identifier), and for ICMPv6 a neighbor solicitation up to its
 * target address. */
#define PKT_L4_TCP 20
#define PKT_L4_UDP 8
#define PKT_L4_ICMP 8
#define PKT_L4_ICMPV6 24
#define PKT_L4_SCTP 4
/* An Ethernet/IPv4 ARP packet. */
#define PKT_ARP_LEN 28

static __always_inline void *pkt_data(const struct __sk_buff *skb)
{
	return (void *)(long)skb->data;
}

static __always_inline void *pkt_end(const struct __sk_buff *skb)
{
	return (void *)(long)skb->data_end;
}

static __always_inline __u32 pkt_l4_len(__u8 proto)
{
	switch (proto) {
	case IPPROTO_TCP:
		return PKT_L4_TCP;
	case IPPROTO_UDP:
		return PKT_L4_UDP;
	case IPPROTO_ICMP:
		return PKT_L4_ICMP;
	case IPPROTO_ICMPV6:
		return PKT_L4_ICMPV6;
	case IPPROTO_SCTP:
		return PKT_L4_SCTP;
	}
	return 0;
}

/* How many bytes from the start of the frame the programs read directly:
 * exactly the headers of this packet (Ethernet, IP with its options, the L4
 * fields), sized from the linear data, which holds at least the Ethernet and
 * IP headers in all but odd cases; those get PKT_HEADROOM_PULL. */
static __always_inline __u32 pkt_headers_len(void *data, void *data_end)
{
	struct ethhdr *eth = data;

	if ((void *)(eth + 1) > data_end)
		return PKT_HEADROOM_PULL;
	switch (eth->h_proto) {
	case bpf_htons(ETH_P_IP): {
		struct iphdr *ip = (void *)(eth + 1);

		if ((void *)(ip + 1) > data_end)
			return PKT_HEADROOM_PULL;
		/* Later fragments carry no L4 header; the programs read none. */
		if (ip->frag_off & bpf_htons(0x1fff))
			return ETH_HLEN + ip->ihl * 4;
		return ETH_HLEN + ip->ihl * 4 + pkt_l4_len(ip->protocol);
	}
	case bpf_htons(ETH_P_IPV6): {
		struct ipv6hdr *ip6 = (void *)(eth + 1);

		if ((void *)(ip6 + 1) > data_end || ip6->nexthdr == IPPROTO_HOPOPTS || ip6->nexthdr == IPPROTO_FRAGMENT)
			return PKT_HEADROOM_PULL;
		return ETH_HLEN + sizeof(*ip6) + pkt_l4_len(ip6->nexthdr);
	}
	case bpf_htons(ETH_P_ARP):
		return ETH_HLEN + PKT_ARP_LEN;
	}
	return ETH_HLEN;
}

/* Makes sure the headers the programs read are in the linear part of the
 * skb. Pulls (bpf_skb_pull_data: a pskb pull, maybe a reallocation) only when
 * they are not: never for a packet that is linear as a whole, and not for
 * the usual TCP segment whose headers are linear and payload is in page
 * fragments (pulling a fixed 128 bytes would copy payload on every one). */
static __always_inline void pkt_pull_headers(struct __sk_buff *skb)
{
	void *data = pkt_data(skb), *data_end = pkt_end(skb);
	__u32 linear = (__u32)(data_end - data);
	__u32 len = skb->len;
	__u32 want;

	if (linear >= len)
		return;
	want = pkt_headers_len(data, data_end);
	if (want > len)
		want = len;
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
