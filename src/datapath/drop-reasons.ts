/**
 * Drop reasons: the mirror of bpf/include/drop_reasons.h, Hubble's numbers
 * and names (cilium/cilium api/v1/flow/flow.proto, enum DropReason), so
 * dashboards and `hubble observe` habits carry over. A unit test parses the C
 * header and fails unless this table matches it exactly: change both together,
 * never renumber or reuse a number.
 */

/** One drop reason: its number in events and metrics, Hubble's name, what it means. */
export interface DropReasonInfo {
  readonly code: number;
  /** Hubble's enum name (what `drop_reason_desc` shows). */
  readonly name: string;
  readonly description: string;
}

/** Reason 0 in the `metrics` map: the packet was forwarded (Hubble's DROP_REASON_UNKNOWN). */
export const REASON_FORWARDED = 0;

/** Every drop reason, in number order. */
export const DROP_REASONS: readonly DropReasonInfo[] = [
  { code: 130, name: 'INVALID_SOURCE_MAC', description: 'source MAC is not the endpoint\'s' },
  { code: 131, name: 'INVALID_DESTINATION_MAC', description: 'destination MAC is not acceptable' },
  { code: 132, name: 'INVALID_SOURCE_IP', description: 'source IP is not the endpoint\'s (spoofed)' },
  { code: 133, name: 'POLICY_DENIED', description: 'no policy rule allows the flow' },
  { code: 134, name: 'INVALID_PACKET_DROPPED', description: 'malformed or truncated packet' },
  { code: 135, name: 'CT_TRUNCATED_OR_INVALID_HEADER', description: 'conntrack could not parse the headers' },
  { code: 136, name: 'CT_MISSING_TCP_ACK_FLAG', description: 'fragmentation needed (historical Hubble name)' },
  { code: 137, name: 'CT_UNKNOWN_L4_PROTOCOL', description: 'conntrack does not know the L4 protocol' },
  { code: 138, name: 'CT_CANNOT_CREATE_ENTRY_FROM_PACKET', description: 'conntrack could not create an entry (retired in Cilium)' },
  { code: 139, name: 'UNSUPPORTED_L3_PROTOCOL', description: 'neither ARP, IPv4 nor IPv6' },
  { code: 140, name: 'MISSED_TAIL_CALL', description: 'the tail call target is missing' },
  { code: 141, name: 'ERROR_WRITING_TO_PACKET', description: 'rewriting the packet failed' },
  { code: 142, name: 'UNKNOWN_L4_PROTOCOL', description: 'L4 protocol not handled' },
  { code: 143, name: 'UNKNOWN_ICMPV4_CODE', description: 'ICMPv4 code not handled' },
  { code: 144, name: 'UNKNOWN_ICMPV4_TYPE', description: 'ICMPv4 type not handled' },
  { code: 145, name: 'UNKNOWN_ICMPV6_CODE', description: 'ICMPv6 code not handled' },
  { code: 146, name: 'UNKNOWN_ICMPV6_TYPE', description: 'ICMPv6 type not handled' },
  { code: 147, name: 'ERROR_RETRIEVING_TUNNEL_KEY', description: 'reading the tunnel key failed' },
  { code: 148, name: 'ERROR_RETRIEVING_TUNNEL_OPTIONS', description: 'reading tunnel options failed (retired in Cilium)' },
  { code: 149, name: 'INVALID_GENEVE_OPTION', description: 'bad Geneve option (retired in Cilium)' },
  { code: 150, name: 'UNKNOWN_L3_TARGET_ADDRESS', description: 'no route to the destination address' },
  { code: 151, name: 'STALE_OR_UNROUTABLE_IP', description: 'destination is not a local or routable address' },
  { code: 152, name: 'NO_MATCHING_LOCAL_CONTAINER_FOUND', description: 'no local endpoint has the address (retired in Cilium)' },
  { code: 153, name: 'ERROR_WHILE_CORRECTING_L3_CHECKSUM', description: 'updating the IP checksum failed' },
  { code: 154, name: 'ERROR_WHILE_CORRECTING_L4_CHECKSUM', description: 'updating the L4 checksum failed' },
  { code: 155, name: 'CT_MAP_INSERTION_FAILED', description: 'the conntrack map is full or the insert failed' },
  { code: 156, name: 'INVALID_IPV6_EXTENSION_HEADER', description: 'IPv6 extension header chain not handled' },
  { code: 157, name: 'IP_FRAGMENTATION_NOT_SUPPORTED', description: 'fragmented packet where fragments are not handled' },
  { code: 158, name: 'SERVICE_BACKEND_NOT_FOUND', description: 'service has no backend' },
  { code: 160, name: 'NO_TUNNEL_OR_ENCAPSULATION_ENDPOINT', description: 'no tunnel endpoint for the destination' },
  { code: 161, name: 'FAILED_TO_INSERT_INTO_PROXYMAP', description: 'NAT46/64 is not enabled (historical Hubble name)' },
  { code: 162, name: 'REACHED_EDT_RATE_LIMITING_DROP_HORIZON', description: 'bandwidth limit: packet too far in the future' },
  { code: 163, name: 'UNKNOWN_CONNECTION_TRACKING_STATE', description: 'conntrack returned an unknown state' },
  { code: 164, name: 'LOCAL_HOST_IS_UNREACHABLE', description: 'the local host cannot be reached' },
  { code: 165, name: 'NO_CONFIGURATION_AVAILABLE_TO_PERFORM_POLICY_DECISION', description: 'endpoint configuration missing for a policy decision' },
  { code: 166, name: 'UNSUPPORTED_L2_PROTOCOL', description: 'link-layer protocol not handled' },
  { code: 167, name: 'NO_MAPPING_FOR_NAT_MASQUERADE', description: 'no NAT mapping for a masqueraded reply' },
  { code: 168, name: 'UNSUPPORTED_PROTOCOL_FOR_NAT_MASQUERADE', description: 'protocol cannot be masqueraded' },
  { code: 169, name: 'FIB_LOOKUP_FAILED', description: 'the kernel route lookup failed' },
  { code: 170, name: 'ENCAPSULATION_TRAFFIC_IS_PROHIBITED', description: 'encapsulated traffic is not allowed here' },
  { code: 171, name: 'INVALID_IDENTITY', description: 'security identity is invalid' },
  { code: 172, name: 'UNKNOWN_SENDER', description: 'sender is not known' },
  { code: 173, name: 'NAT_NOT_NEEDED', description: 'no NAT needed (internal, not a real drop)' },
  { code: 174, name: 'IS_A_CLUSTERIP', description: 'ClusterIP address used outside a service flow' },
  { code: 175, name: 'FIRST_LOGICAL_DATAGRAM_FRAGMENT_NOT_FOUND', description: 'first fragment of the datagram not seen' },
  { code: 176, name: 'FORBIDDEN_ICMPV6_MESSAGE', description: 'ICMPv6 message not allowed' },
  { code: 177, name: 'DENIED_BY_LB_SRC_RANGE_CHECK', description: 'source outside the load balancer\'s allowed ranges' },
  { code: 178, name: 'SOCKET_LOOKUP_FAILED', description: 'proxy socket lookup failed' },
  { code: 179, name: 'SOCKET_ASSIGN_FAILED', description: 'assigning the proxy socket failed' },
  { code: 180, name: 'PROXY_REDIRECTION_NOT_SUPPORTED_FOR_PROTOCOL', description: 'protocol cannot go to the proxy' },
  { code: 181, name: 'POLICY_DENY', description: 'an explicit deny rule matched' },
  { code: 182, name: 'VLAN_FILTERED', description: 'VLAN not allowed by the VLAN filter' },
  { code: 183, name: 'INVALID_VNI', description: 'wrong VNI from a VTEP' },
  { code: 184, name: 'INVALID_TC_BUFFER', description: 'reading or writing the skb control buffer failed' },
  { code: 185, name: 'NO_SID', description: 'no SRv6 SID for the address' },
  { code: 186, name: 'MISSING_SRV6_STATE', description: 'SRv6 state lost across a tail call (retired in Cilium)' },
  { code: 187, name: 'NAT46', description: 'IPv4 to IPv6 translation failed' },
  { code: 188, name: 'NAT64', description: 'IPv6 to IPv4 translation failed' },
  { code: 189, name: 'AUTH_REQUIRED', description: 'policy requires authentication not done yet' },
  { code: 190, name: 'CT_NO_MAP_FOUND', description: 'conntrack map missing' },
  { code: 191, name: 'SNAT_NO_MAP_FOUND', description: 'NAT map missing' },
  { code: 192, name: 'INVALID_CLUSTER_ID', description: 'cluster ID is invalid' },
  { code: 193, name: 'UNSUPPORTED_PROTOCOL_FOR_DSR_ENCAP', description: 'protocol cannot be DSR-encapsulated' },
  { code: 194, name: 'NO_EGRESS_GATEWAY', description: 'no egress gateway for the flow' },
  { code: 195, name: 'UNENCRYPTED_TRAFFIC', description: 'traffic that must be encrypted is not' },
  { code: 196, name: 'TTL_EXCEEDED', description: 'TTL or hop limit would reach zero' },
  { code: 197, name: 'NO_NODE_ID', description: 'no node ID for the destination node' },
  { code: 198, name: 'DROP_RATE_LIMITED', description: 'rate limited' },
  { code: 199, name: 'IGMP_HANDLED', description: 'IGMP message handled by the datapath' },
  { code: 200, name: 'IGMP_SUBSCRIBED', description: 'IGMP subscription handled by the datapath' },
  { code: 201, name: 'MULTICAST_HANDLED', description: 'multicast packet handled by the datapath' },
  { code: 202, name: 'DROP_HOST_NOT_READY', description: 'host datapath not loaded yet' },
  { code: 203, name: 'DROP_EP_NOT_READY', description: 'endpoint policy program not loaded yet' },
  { code: 204, name: 'DROP_NO_EGRESS_IP', description: 'no egress IP configured' },
  { code: 205, name: 'DROP_PUNT_PROXY', description: 'handed to the proxy (not a real drop)' },
  { code: 206, name: 'DROP_NO_DEVICE', description: 'no device to send the packet out of' },
];

const byCode: ReadonlyMap<number, DropReasonInfo> = new Map(DROP_REASONS.map((r) => [r.code, r]));
const byName: ReadonlyMap<string, DropReasonInfo> = new Map(DROP_REASONS.map((r) => [r.name, r]));

/** The reason numbered `code`, or undefined when the table has none. */
export function dropReason(code: number): DropReasonInfo | undefined {
  return byCode.get(code);
}

/** The number of the reason Hubble calls `name` (e.g. `INVALID_SOURCE_IP` → 132). Throws on an unknown name. */
export function dropReasonCode(name: string): number {
  const r = byName.get(name);
  if (!r) throw new Error(`unknown drop reason ${JSON.stringify(name)}`);
  return r.code;
}

/**
 * Hubble's name for reason `code`: `DROP_REASON_UNKNOWN` for 0 (no drop), the
 * table's name, or `UNKNOWN_DROP_REASON_<code>` for a number the table lacks.
 */
export function dropReasonName(code: number): string {
  if (code === REASON_FORWARDED) return 'DROP_REASON_UNKNOWN';
  return byCode.get(code)?.name ?? `UNKNOWN_DROP_REASON_${code}`;
}
