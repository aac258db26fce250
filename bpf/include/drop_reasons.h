/* Drop reasons: why the datapath dropped a packet. One numbered table.
 *
 * The numbers and names are Hubble's (cilium/cilium api/v1/flow/flow.proto,
 * enum DropReason), so dashboards, alerts and `hubble observe` habits carry
 * over: a flow event's drop_reason and the `metrics` map key use them as they
 * are. Some of Hubble's names are historical (the number's meaning in Cilium's
 * datapath changed while the proto name stayed); the description says what
 * the number means.
 *
 * Mirrored by src/datapath/drop-reasons.ts; a unit test parses this file and
 * fails unless the TypeScript table matches it line for line.
 *
 * Rules:
 * - never renumber, never reuse a number, even once nothing emits it;
 * - one line per reason: `#define DROP_<NAME> <n> / * <HUBBLE_NAME>: <description> * /`
 *   where <NAME> is the Hubble name (names that already start with DROP_ are
 *   not prefixed twice);
 * - 159 is absent from Hubble's enum (Cilium used it for an unsupported
 *   service protocol); Waggle leaves it unassigned.
 */
#ifndef WAGGLE_DROP_REASONS_H
#define WAGGLE_DROP_REASONS_H

/* Not a drop: forwarded packets are counted in `metrics` under reason 0
 * (Hubble's DROP_REASON_UNKNOWN, "no drop"). */
#define REASON_FORWARDED 0

#define DROP_INVALID_SOURCE_MAC 130 /* INVALID_SOURCE_MAC: source MAC is not the endpoint's */
#define DROP_INVALID_DESTINATION_MAC 131 /* INVALID_DESTINATION_MAC: destination MAC is not acceptable */
#define DROP_INVALID_SOURCE_IP 132 /* INVALID_SOURCE_IP: source IP is not the endpoint's (spoofed) */
#define DROP_POLICY_DENIED 133 /* POLICY_DENIED: no policy rule allows the flow */
#define DROP_INVALID_PACKET_DROPPED 134 /* INVALID_PACKET_DROPPED: malformed or truncated packet */
#define DROP_CT_TRUNCATED_OR_INVALID_HEADER 135 /* CT_TRUNCATED_OR_INVALID_HEADER: conntrack could not parse the headers */
#define DROP_CT_MISSING_TCP_ACK_FLAG 136 /* CT_MISSING_TCP_ACK_FLAG: fragmentation needed (historical Hubble name) */
#define DROP_CT_UNKNOWN_L4_PROTOCOL 137 /* CT_UNKNOWN_L4_PROTOCOL: conntrack does not know the L4 protocol */
#define DROP_CT_CANNOT_CREATE_ENTRY_FROM_PACKET 138 /* CT_CANNOT_CREATE_ENTRY_FROM_PACKET: conntrack could not create an entry (retired in Cilium) */
#define DROP_UNSUPPORTED_L3_PROTOCOL 139 /* UNSUPPORTED_L3_PROTOCOL: neither ARP, IPv4 nor IPv6 */
#define DROP_MISSED_TAIL_CALL 140 /* MISSED_TAIL_CALL: the tail call target is missing */
#define DROP_ERROR_WRITING_TO_PACKET 141 /* ERROR_WRITING_TO_PACKET: rewriting the packet failed */
#define DROP_UNKNOWN_L4_PROTOCOL 142 /* UNKNOWN_L4_PROTOCOL: L4 protocol not handled */
#define DROP_UNKNOWN_ICMPV4_CODE 143 /* UNKNOWN_ICMPV4_CODE: ICMPv4 code not handled */
#define DROP_UNKNOWN_ICMPV4_TYPE 144 /* UNKNOWN_ICMPV4_TYPE: ICMPv4 type not handled */
#define DROP_UNKNOWN_ICMPV6_CODE 145 /* UNKNOWN_ICMPV6_CODE: ICMPv6 code not handled */
#define DROP_UNKNOWN_ICMPV6_TYPE 146 /* UNKNOWN_ICMPV6_TYPE: ICMPv6 type not handled */
#define DROP_ERROR_RETRIEVING_TUNNEL_KEY 147 /* ERROR_RETRIEVING_TUNNEL_KEY: reading the tunnel key failed */
#define DROP_ERROR_RETRIEVING_TUNNEL_OPTIONS 148 /* ERROR_RETRIEVING_TUNNEL_OPTIONS: reading tunnel options failed (retired in Cilium) */
#define DROP_INVALID_GENEVE_OPTION 149 /* INVALID_GENEVE_OPTION: bad Geneve option (retired in Cilium) */
#define DROP_UNKNOWN_L3_TARGET_ADDRESS 150 /* UNKNOWN_L3_TARGET_ADDRESS: no route to the destination address */
#define DROP_STALE_OR_UNROUTABLE_IP 151 /* STALE_OR_UNROUTABLE_IP: destination is not a local or routable address */
#define DROP_NO_MATCHING_LOCAL_CONTAINER_FOUND 152 /* NO_MATCHING_LOCAL_CONTAINER_FOUND: no local endpoint has the address (retired in Cilium) */
#define DROP_ERROR_WHILE_CORRECTING_L3_CHECKSUM 153 /* ERROR_WHILE_CORRECTING_L3_CHECKSUM: updating the IP checksum failed */
#define DROP_ERROR_WHILE_CORRECTING_L4_CHECKSUM 154 /* ERROR_WHILE_CORRECTING_L4_CHECKSUM: updating the L4 checksum failed */
#define DROP_CT_MAP_INSERTION_FAILED 155 /* CT_MAP_INSERTION_FAILED: the conntrack map is full or the insert failed */
#define DROP_INVALID_IPV6_EXTENSION_HEADER 156 /* INVALID_IPV6_EXTENSION_HEADER: IPv6 extension header chain not handled */
#define DROP_IP_FRAGMENTATION_NOT_SUPPORTED 157 /* IP_FRAGMENTATION_NOT_SUPPORTED: fragmented packet where fragments are not handled */
#define DROP_SERVICE_BACKEND_NOT_FOUND 158 /* SERVICE_BACKEND_NOT_FOUND: service has no backend */
#define DROP_NO_TUNNEL_OR_ENCAPSULATION_ENDPOINT 160 /* NO_TUNNEL_OR_ENCAPSULATION_ENDPOINT: no tunnel endpoint for the destination */
#define DROP_FAILED_TO_INSERT_INTO_PROXYMAP 161 /* FAILED_TO_INSERT_INTO_PROXYMAP: NAT46/64 is not enabled (historical Hubble name) */
#define DROP_REACHED_EDT_RATE_LIMITING_DROP_HORIZON 162 /* REACHED_EDT_RATE_LIMITING_DROP_HORIZON: bandwidth limit: packet too far in the future */
#define DROP_UNKNOWN_CONNECTION_TRACKING_STATE 163 /* UNKNOWN_CONNECTION_TRACKING_STATE: conntrack returned an unknown state */
#define DROP_LOCAL_HOST_IS_UNREACHABLE 164 /* LOCAL_HOST_IS_UNREACHABLE: the local host cannot be reached */
#define DROP_NO_CONFIGURATION_AVAILABLE_TO_PERFORM_POLICY_DECISION 165 /* NO_CONFIGURATION_AVAILABLE_TO_PERFORM_POLICY_DECISION: endpoint configuration missing for a policy decision */
#define DROP_UNSUPPORTED_L2_PROTOCOL 166 /* UNSUPPORTED_L2_PROTOCOL: link-layer protocol not handled */
#define DROP_NO_MAPPING_FOR_NAT_MASQUERADE 167 /* NO_MAPPING_FOR_NAT_MASQUERADE: no NAT mapping for a masqueraded reply */
#define DROP_UNSUPPORTED_PROTOCOL_FOR_NAT_MASQUERADE 168 /* UNSUPPORTED_PROTOCOL_FOR_NAT_MASQUERADE: protocol cannot be masqueraded */
#define DROP_FIB_LOOKUP_FAILED 169 /* FIB_LOOKUP_FAILED: the kernel route lookup failed */
#define DROP_ENCAPSULATION_TRAFFIC_IS_PROHIBITED 170 /* ENCAPSULATION_TRAFFIC_IS_PROHIBITED: encapsulated traffic is not allowed here */
#define DROP_INVALID_IDENTITY 171 /* INVALID_IDENTITY: security identity is invalid */
#define DROP_UNKNOWN_SENDER 172 /* UNKNOWN_SENDER: sender is not known */
#define DROP_NAT_NOT_NEEDED 173 /* NAT_NOT_NEEDED: no NAT needed (internal, not a real drop) */
#define DROP_IS_A_CLUSTERIP 174 /* IS_A_CLUSTERIP: ClusterIP address used outside a service flow */
#define DROP_FIRST_LOGICAL_DATAGRAM_FRAGMENT_NOT_FOUND 175 /* FIRST_LOGICAL_DATAGRAM_FRAGMENT_NOT_FOUND: first fragment of the datagram not seen */
#define DROP_FORBIDDEN_ICMPV6_MESSAGE 176 /* FORBIDDEN_ICMPV6_MESSAGE: ICMPv6 message not allowed */
#define DROP_DENIED_BY_LB_SRC_RANGE_CHECK 177 /* DENIED_BY_LB_SRC_RANGE_CHECK: source outside the load balancer's allowed ranges */
#define DROP_SOCKET_LOOKUP_FAILED 178 /* SOCKET_LOOKUP_FAILED: proxy socket lookup failed */
#define DROP_SOCKET_ASSIGN_FAILED 179 /* SOCKET_ASSIGN_FAILED: assigning the proxy socket failed */
#define DROP_PROXY_REDIRECTION_NOT_SUPPORTED_FOR_PROTOCOL 180 /* PROXY_REDIRECTION_NOT_SUPPORTED_FOR_PROTOCOL: protocol cannot go to the proxy */
#define DROP_POLICY_DENY 181 /* POLICY_DENY: an explicit deny rule matched */
#define DROP_VLAN_FILTERED 182 /* VLAN_FILTERED: VLAN not allowed by the VLAN filter */
#define DROP_INVALID_VNI 183 /* INVALID_VNI: wrong VNI from a VTEP */
#define DROP_INVALID_TC_BUFFER 184 /* INVALID_TC_BUFFER: reading or writing the skb control buffer failed */
#define DROP_NO_SID 185 /* NO_SID: no SRv6 SID for the address */
#define DROP_MISSING_SRV6_STATE 186 /* MISSING_SRV6_STATE: SRv6 state lost across a tail call (retired in Cilium) */
#define DROP_NAT46 187 /* NAT46: IPv4 to IPv6 translation failed */
#define DROP_NAT64 188 /* NAT64: IPv6 to IPv4 translation failed */
#define DROP_AUTH_REQUIRED 189 /* AUTH_REQUIRED: policy requires authentication not done yet */
#define DROP_CT_NO_MAP_FOUND 190 /* CT_NO_MAP_FOUND: conntrack map missing */
#define DROP_SNAT_NO_MAP_FOUND 191 /* SNAT_NO_MAP_FOUND: NAT map missing */
#define DROP_INVALID_CLUSTER_ID 192 /* INVALID_CLUSTER_ID: cluster ID is invalid */
#define DROP_UNSUPPORTED_PROTOCOL_FOR_DSR_ENCAP 193 /* UNSUPPORTED_PROTOCOL_FOR_DSR_ENCAP: protocol cannot be DSR-encapsulated */
#define DROP_NO_EGRESS_GATEWAY 194 /* NO_EGRESS_GATEWAY: no egress gateway for the flow */
#define DROP_UNENCRYPTED_TRAFFIC 195 /* UNENCRYPTED_TRAFFIC: traffic that must be encrypted is not */
#define DROP_TTL_EXCEEDED 196 /* TTL_EXCEEDED: TTL or hop limit would reach zero */
#define DROP_NO_NODE_ID 197 /* NO_NODE_ID: no node ID for the destination node */
#define DROP_RATE_LIMITED 198 /* DROP_RATE_LIMITED: rate limited */
#define DROP_IGMP_HANDLED 199 /* IGMP_HANDLED: IGMP message handled by the datapath */
#define DROP_IGMP_SUBSCRIBED 200 /* IGMP_SUBSCRIBED: IGMP subscription handled by the datapath */
#define DROP_MULTICAST_HANDLED 201 /* MULTICAST_HANDLED: multicast packet handled by the datapath */
#define DROP_HOST_NOT_READY 202 /* DROP_HOST_NOT_READY: host datapath not loaded yet */
#define DROP_EP_NOT_READY 203 /* DROP_EP_NOT_READY: endpoint policy program not loaded yet */
#define DROP_NO_EGRESS_IP 204 /* DROP_NO_EGRESS_IP: no egress IP configured */
#define DROP_PUNT_PROXY 205 /* DROP_PUNT_PROXY: handed to the proxy (not a real drop) */
#define DROP_NO_DEVICE 206 /* DROP_NO_DEVICE: no device to send the packet out of */

#endif
