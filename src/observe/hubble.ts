/**
 * Turns datapath flow events into Hubble's flow JSON (the `hubble observe -o
 * json` shape: keys as in flow.proto, enums as names, zero values omitted), so
 * tools that read Hubble read Waggle.
 */
import { formatIPv6 } from '../bpf/codec.js';
import { dropReasonName } from '../datapath/drop-reasons.js';
import { FLOW_FLAGS, OBS_POINT_NAMES, type FlowEvent } from '../datapath/codecs/flow-event.js';

const FLOW_F_REPLY_KNOWN = FLOW_FLAGS.REPLY_KNOWN;
const FLOW_F_IS_REPLY = FLOW_FLAGS.IS_REPLY;
const FLOW_F_INGRESS = FLOW_FLAGS.INGRESS;
const FLOW_F_EGRESS = FLOW_FLAGS.EGRESS;

/** The decoded ring buffer record (bpf/include/flow_event.h); `line` is not needed here. */
export type FlowEventRecord = Omit<FlowEvent, 'line'>;

/** What the agent knows about a local endpoint, for enrichment. */
export interface EndpointView {
  id: number;
  name: string;
  namespace: string;
  labels: string[];
  /** Security identity (0 until identities exist). */
  identity?: number;
  hostIfname?: string;
}

export interface HubbleEndpoint {
  ID?: number;
  identity?: number;
  namespace?: string;
  labels?: string[];
  pod_name?: string;
}

/** A policy as Hubble names it in `*_allowed_by` / `*_denied_by`. */
export interface HubblePolicy {
  name: string;
  namespace?: string;
  kind: string;
  labels: string[];
}

export interface HubbleFlow {
  time: string;
  uuid: string;
  verdict: 'FORWARDED' | 'DROPPED';
  drop_reason?: number;
  drop_reason_desc?: string;
  IP?: { source: string; destination: string; ipVersion: 'IPv4' | 'IPv6' };
  l4?: Record<string, Record<string, unknown>>;
  source?: HubbleEndpoint;
  destination?: HubbleEndpoint;
  Type: 'L3_L4';
  policy_match_type?: number;
  egress_allowed_by?: HubblePolicy[];
  ingress_allowed_by?: HubblePolicy[];
  egress_denied_by?: HubblePolicy[];
  ingress_denied_by?: HubblePolicy[];
  node_name: string;
  /** Per-packet service translation: the service the client addressed (Hubble's fields). */
  source_service?: { name: string; namespace: string };
  destination_service?: { name: string; namespace: string };
  event_type: { type: number; sub_type?: number };
  traffic_direction?: 'INGRESS' | 'EGRESS';
  trace_observation_point?: string;
  is_reply?: boolean;
  interface?: { index: number; name?: string };
  Summary: string;
}

/** One line of `waggle observe -o json`. */
export type HubbleRecord =
  | { flow: HubbleFlow; node_name: string; time: string }
  | { lost_events: { source: string; num_events_lost: number }; node_name: string; time: string };

const TCP_FLAG_NAMES: [number, string][] = [[0x01, 'FIN'], [0x02, 'SYN'], [0x04, 'RST'], [0x08, 'PSH'], [0x10, 'ACK'], [0x20, 'URG'], [0x40, 'ECE'], [0x80, 'CWR']];
const ICMP4: Record<number, string> = { 0: 'EchoReply', 3: 'DestinationUnreachable', 8: 'EchoRequest', 11: 'TimeExceeded' };
const ICMP6: Record<number, string> = { 1: 'DestinationUnreachable', 3: 'TimeExceeded', 128: 'EchoRequest', 129: 'EchoReply', 130: 'MulticastListenerQuery', 131: 'MulticastListenerReport', 132: 'MulticastListenerDone', 133: 'RouterSolicitation', 134: 'RouterAdvertisement', 135: 'NeighborSolicitation', 136: 'NeighborAdvertisement', 143: 'MulticastListenerReportV2' };

function address(family: number, bytes: Uint8Array): string {
  return family === 2 ? `${bytes[0]}.${bytes[1]}.${bytes[2]}.${bytes[3]}` : formatIPv6(bytes);
}

/** What flow enrichment can ask about identities and policy rules. */
export interface PolicyContext {
  /** Cilium-style labels of an identity (`reserved:world`, `cidr:10.0.0.0/8`, …). */
  identityLabels(identity: number): string[] | undefined;
  /** The rule behind a datapath cookie. */
  rule(cookie: number): { kind: string; name: string; namespace?: string; index: number } | undefined;
}

function endpoint(view: EndpointView | undefined, identity: number, policy: PolicyContext | undefined): HubbleEndpoint | undefined {
  if (!view) {
    if (!identity) return undefined;
    const labels = policy?.identityLabels(identity);
    return { identity, ...(labels?.length ? { labels } : {}) };
  }
  const out: HubbleEndpoint = { ID: view.id };
  if (identity || view.identity) out.identity = identity || view.identity;
  out.namespace = view.namespace;
  out.labels = view.labels;
  out.pod_name = view.name;
  return out;
}

function hubblePolicy(rule: { kind: string; name: string; namespace?: string; index: number }): HubblePolicy {
  const labels = [
    `k8s:io.cilium.k8s.policy.derived-from=${rule.kind}`,
    `k8s:io.cilium.k8s.policy.name=${rule.name}`,
    ...(rule.namespace !== undefined ? [`k8s:io.cilium.k8s.policy.namespace=${rule.namespace}`] : []),
    `waggle:rule-index=${rule.index}`,
  ];
  return { name: rule.name, ...(rule.namespace !== undefined ? { namespace: rule.namespace } : {}), kind: rule.kind, labels };
}

/** Converts monotonic event times (bpf_ktime_get_ns) to wall-clock ISO time. */
export function monotonicToIso(timeNs: number): string {
  const nowMono = Number(process.hrtime.bigint());
  const wallMs = Date.now() - (nowMono - timeNs) / 1e6;
  return new Date(wallMs).toISOString();
}

let counter = 0;
/** A unique flow id (random prefix per process, then a counter). */
const uuidPrefix = [...crypto.getRandomValues(new Uint8Array(8))].map((b) => b.toString(16).padStart(2, '0')).join('');
function nextUuid(): string {
  const c = (counter++).toString(16).padStart(16, '0');
  return `${uuidPrefix.slice(0, 8)}-${uuidPrefix.slice(8, 12)}-4${uuidPrefix.slice(13, 16)}-8${c.slice(1, 4)}-${c.slice(4, 16)}`;
}

/**
 * Builds the Hubble flow for one event. `lookup` finds local endpoints by ID;
 * `lookupIp` by address, for peers the datapath did not name (a drop decided
 * before the destination lookup).
 */
export function toHubbleFlow(
  e: FlowEventRecord,
  nodeName: string,
  lookup: (id: number) => EndpointView | undefined,
  lookupIp: (ip: string) => EndpointView | undefined = () => undefined,
  policy?: PolicyContext,
  ids: { time?: string; uuid?: string } = {},
): HubbleFlow {
  const dropped = e.verdict === 2;
  const observer = lookup(e.endpointId);
  const flow: HubbleFlow = {
    time: ids.time ?? monotonicToIso(e.timeNs),
    uuid: ids.uuid ?? nextUuid(),
    verdict: dropped ? 'DROPPED' : 'FORWARDED',
    Type: 'L3_L4',
    node_name: nodeName,
    event_type: { type: e.type },
    Summary: '',
  };
  if (dropped) {
    flow.drop_reason = e.dropReason;
    flow.drop_reason_desc = dropReasonName(e.dropReason);
    flow.event_type.sub_type = e.dropReason;
  } else if (e.obsPoint) {
    flow.event_type.sub_type = e.obsPoint === 101 ? 0 : e.obsPoint;
  }
  if (e.family === 2 || e.family === 10) {
    flow.IP = { source: address(e.family, e.srcAddr), destination: address(e.family, e.dstAddr), ipVersion: e.family === 2 ? 'IPv4' : 'IPv6' };
  }
  const summary: string[] = [];
  if (e.ipProto === 6) {
    const flags: Record<string, boolean> = {};
    for (const [bit, name] of TCP_FLAG_NAMES) if (e.tcpFlags & bit) flags[name] = true;
    flow.l4 = { TCP: { source_port: e.srcPort, destination_port: e.dstPort, ...(Object.keys(flags).length ? { flags } : {}) } };
    summary.push(`TCP Flags: ${Object.keys(flags).join(', ') || 'none'}`);
    if ((e.tcpFlags & 0x12) === 0x12) flow.is_reply = true;
    else if (e.tcpFlags & 0x02) flow.is_reply = false;
  } else if (e.ipProto === 17 || e.ipProto === 132) {
    const name = e.ipProto === 17 ? 'UDP' : 'SCTP';
    flow.l4 = { [name]: { source_port: e.srcPort, destination_port: e.dstPort } };
    summary.push(name);
  } else if (e.ipProto === 1 || e.ipProto === 58) {
    const v6 = e.ipProto === 58;
    const body: Record<string, number> = {};
    if (e.icmpType) body.type = e.icmpType;
    if (e.icmpCode) body.code = e.icmpCode;
    flow.l4 = { [v6 ? 'ICMPv6' : 'ICMPv4']: body };
    const name = (v6 ? ICMP6 : ICMP4)[e.icmpType] ?? `type ${e.icmpType}`;
    summary.push(`${v6 ? 'ICMPv6' : 'ICMPv4'} ${name}`);
    if ((!v6 && e.icmpType === 0) || (v6 && e.icmpType === 129)) flow.is_reply = true;
    else if ((!v6 && e.icmpType === 8) || (v6 && e.icmpType === 128)) flow.is_reply = false;
  } else if (e.family === 0) {
    summary.push(e.ethProto === 0x0806 ? 'ARP' : `ethertype 0x${e.ethProto.toString(16).padStart(4, '0')}`);
  } else {
    summary.push(`IP protocol ${e.ipProto}`);
  }
  flow.Summary = summary.join(' ');
  const src = endpoint(lookup(e.srcEndpoint) ?? (flow.IP ? lookupIp(flow.IP.source) : undefined), e.srcIdentity, policy);
  const dst = endpoint(lookup(e.dstEndpoint) ?? (flow.IP ? lookupIp(flow.IP.destination) : undefined), e.dstIdentity, policy);
  if (src) flow.source = src;
  if (dst) flow.destination = dst;
  if (e.flags & FLOW_F_REPLY_KNOWN) flow.is_reply = (e.flags & FLOW_F_IS_REPLY) !== 0;
  if (e.flags & FLOW_F_INGRESS) flow.traffic_direction = 'INGRESS';
  else if (e.flags & FLOW_F_EGRESS) flow.traffic_direction = 'EGRESS';
  // Seen from the observing endpoint: leaving it is egress, reaching it is ingress.
  else if (observer) flow.traffic_direction = e.dstEndpoint === e.endpointId && e.srcEndpoint !== e.endpointId ? 'INGRESS' : 'EGRESS';
  if (e.matchType) flow.policy_match_type = e.matchType;
  const egressRule = e.egressCookie ? policy?.rule(e.egressCookie) : undefined;
  const ingressRule = e.ingressCookie ? policy?.rule(e.ingressCookie) : undefined;
  // A dropped flow's deciding rule is a deny rule (POLICY_DENY); POLICY_DENIED has none.
  if (egressRule) {
    if (dropped && e.flags & FLOW_F_EGRESS) flow.egress_denied_by = [hubblePolicy(egressRule)];
    else flow.egress_allowed_by = [hubblePolicy(egressRule)];
  }
  if (ingressRule) {
    if (dropped && e.flags & FLOW_F_INGRESS) flow.ingress_denied_by = [hubblePolicy(ingressRule)];
    else flow.ingress_allowed_by = [hubblePolicy(ingressRule)];
  }
  // Hubble names the observation point on trace events only.
  const obs = OBS_POINT_NAMES[e.obsPoint];
  if (obs && !dropped) flow.trace_observation_point = obs;
  if (e.ifindex) flow.interface = observer?.hostIfname ? { index: e.ifindex, name: observer.hostIfname } : { index: e.ifindex };
  return flow;
}

/** One readable line per flow, like `hubble observe` compact output (kept here for its users; colour and node names in ./format.ts). */
export { compactLine } from './format.js';

/** ARP, neighbour discovery, MLD and router discovery: link plumbing rather than workload traffic. */
export function isControlFlow(f: HubbleFlow): boolean {
  if (f.Summary === 'ARP') return true;
  const icmp6 = f.l4?.ICMPv6;
  const type = typeof icmp6?.type === 'number' ? icmp6.type : undefined;
  return type !== undefined && type >= 130 && type <= 143;
}
