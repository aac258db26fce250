/** Codec of `struct flow_event` (bpf/include/flow_event.h): the endpoint programs' ring buffer record. */
import { bytes, struct, u16, u32, u64n, u8, type StructCodec } from '../../bpf/codec.js';

/** `FLOW_EVENT_DROP` (Cilium's monitor message type). */
export const FLOW_EVENT_DROP = 1;
/** `FLOW_EVENT_TRACE`. */
export const FLOW_EVENT_TRACE = 4;
/** `FLOW_EVENT_POLICY_VERDICT`. */
export const FLOW_EVENT_POLICY_VERDICT = 5;

/**
 * `FLOW_F_*`: flow_event.flags. `TRANSLATED`: service load balancing translated
 * the packet (DNAT to a backend, or the reply's source back to the service);
 * the record's `line` then holds the service ID (its low 16 bits).
 */
export const FLOW_FLAGS = { REPLY_KNOWN: 0x01, IS_REPLY: 0x02, INGRESS: 0x04, EGRESS: 0x08, TRANSLATED: 0x10 } as const;

/** `OBS_TO_STACK` (Hubble TraceObservationPoint TO_STACK). */
export const OBS_TO_STACK = 3;
/** `OBS_FROM_ENDPOINT`. */
export const OBS_FROM_ENDPOINT = 5;
/** `OBS_TO_ENDPOINT`. */
export const OBS_TO_ENDPOINT = 101;
/** `OBS_TO_NETWORK`: sent out of a host device (a NodePort reply to a client outside the node). */
export const OBS_TO_NETWORK = 11;
/** Hubble's TraceObservationPoint name of each `OBS_*`. */
export const OBS_POINT_NAMES: Readonly<Record<number, string>> = {
  [OBS_TO_STACK]: 'TO_STACK', [OBS_FROM_ENDPOINT]: 'FROM_ENDPOINT', [OBS_TO_ENDPOINT]: 'TO_ENDPOINT', [OBS_TO_NETWORK]: 'TO_NETWORK',
};

/** `VERDICT_FORWARDED` (Hubble Verdict). */
export const VERDICT_FORWARDED = 1;
/** `VERDICT_DROPPED`. */
export const VERDICT_DROPPED = 2;

/** `FLOW_FAMILY_IPV4` (AF_INET). */
export const FLOW_FAMILY_IPV4 = 2;
/** `FLOW_FAMILY_IPV6` (AF_INET6). */
export const FLOW_FAMILY_IPV6 = 10;

/** `FLOW_TCP_*`: the TCP header's flag bits. */
export const TCP_FLAGS = { FIN: 0x01, SYN: 0x02, RST: 0x04, PSH: 0x08, ACK: 0x10, URG: 0x20, ECE: 0x40, CWR: 0x80 } as const;

/** Size of one record. */
export const FLOW_EVENT_SIZE = 96;

/** One record as the datapath writes it. */
export interface FlowEvent {
  /** bpf_ktime_get_ns(): CLOCK_MONOTONIC nanoseconds. */
  timeNs: number;
  endpointId: number;
  ifindex: number;
  srcEndpoint: number;
  dstEndpoint: number;
  /** Security identities of the ends (0 when not known). */
  srcIdentity: number;
  dstIdentity: number;
  /** The rules (cookies) of the source's egress and the destination's ingress policy that decided (0: none). */
  egressCookie: number;
  ingressCookie: number;
  pktLen: number;
  dropReason: number;
  /** Source line of the drop in bpf/lxc.bpf.c (0 for traces); with `FLOW_FLAGS.TRANSLATED` the service ID instead. */
  line: number;
  type: number;
  obsPoint: number;
  verdict: number;
  family: number;
  ipProto: number;
  tcpFlags: number;
  icmpType: number;
  icmpCode: number;
  srcPort: number;
  dstPort: number;
  ethProto: number;
  /** `POLICY_MATCH_*` of the deciding rule. */
  matchType: number;
  /** `FLOW_F_*`. */
  flags: number;
  srcAddr: Uint8Array;
  dstAddr: Uint8Array;
}

export const flowEvent: StructCodec<FlowEvent> = struct<FlowEvent>('flow_event', FLOW_EVENT_SIZE, {
  timeNs: { offset: 0, codec: u64n },
  endpointId: { offset: 8, codec: u32 },
  ifindex: { offset: 12, codec: u32 },
  srcEndpoint: { offset: 16, codec: u32 },
  dstEndpoint: { offset: 20, codec: u32 },
  srcIdentity: { offset: 24, codec: u32 },
  dstIdentity: { offset: 28, codec: u32 },
  egressCookie: { offset: 32, codec: u32 },
  ingressCookie: { offset: 36, codec: u32 },
  pktLen: { offset: 40, codec: u32 },
  dropReason: { offset: 44, codec: u16 },
  line: { offset: 46, codec: u16 },
  type: { offset: 48, codec: u8 },
  obsPoint: { offset: 49, codec: u8 },
  verdict: { offset: 50, codec: u8 },
  family: { offset: 51, codec: u8 },
  ipProto: { offset: 52, codec: u8 },
  tcpFlags: { offset: 53, codec: u8 },
  icmpType: { offset: 54, codec: u8 },
  icmpCode: { offset: 55, codec: u8 },
  srcPort: { offset: 56, codec: u16 },
  dstPort: { offset: 58, codec: u16 },
  ethProto: { offset: 60, codec: u16 },
  matchType: { offset: 62, codec: u8 },
  flags: { offset: 63, codec: u8 },
  srcAddr: { offset: 64, codec: bytes(16) },
  dstAddr: { offset: 80, codec: bytes(16) },
});
