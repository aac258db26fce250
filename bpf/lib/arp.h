/* ARP responder: answers an endpoint's ARP request for its router IPv4
 * address with the host-side veth's MAC, so the endpoint's gateway needs no
 * address on the host side and no bridge. */
#ifndef WAGGLE_LIB_ARP_H
#define WAGGLE_LIB_ARP_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "eth.h"

/* From <linux/if_arp.h>, which pulls in glibc's <sys/socket.h> (and with it
 * headers a BPF target build may not have). */
#define ARPHRD_ETHER 1
#define ARPOP_REQUEST 1
#define ARPOP_REPLY 2

/* An Ethernet/IPv4 ARP packet (RFC 826), as it follows the Ethernet header. */
struct arp_eth_ipv4 {
	__be16 htype;
	__be16 ptype;
	__u8 hlen;
	__u8 plen;
	__be16 op;
	__u8 sha[ETH_ALEN];
	__u8 spa[4];
	__u8 tha[ETH_ALEN];
	__u8 tpa[4];
} __attribute__((packed));

/* Is `arp` (bounds checked) an Ethernet/IPv4 ARP packet? */
static __always_inline int arp_is_eth_ipv4(const struct arp_eth_ipv4 *arp)
{
	return arp->htype == bpf_htons(ARPHRD_ETHER) && arp->ptype == bpf_htons(ETH_P_IP) &&
	       arp->hlen == ETH_ALEN && arp->plen == 4;
}

/* Turns the ARP request in place into the reply "`ip` is at `mac`", addressed
 * to the requester. The caller sends it back where it came from. */
static __always_inline void arp_make_reply(struct ethhdr *eth, struct arp_eth_ipv4 *arp,
					   const volatile __u8 *mac, __be32 ip)
{
	__u8 req_mac[ETH_ALEN];
	__u8 req_ip[4];

	__builtin_memcpy(req_mac, arp->sha, ETH_ALEN);
	__builtin_memcpy(req_ip, arp->spa, 4);

	__builtin_memcpy(eth->h_dest, req_mac, ETH_ALEN);
	mac_copy(eth->h_source, mac);
	arp->op = bpf_htons(ARPOP_REPLY);
	mac_copy(arp->sha, mac);
	__builtin_memcpy(arp->spa, &ip, 4);
	__builtin_memcpy(arp->tha, req_mac, ETH_ALEN);
	__builtin_memcpy(arp->tpa, req_ip, 4);
}

#endif
