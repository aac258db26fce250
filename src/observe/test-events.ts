/**
 * Builds `struct flow_event` records in memory, for unit tests and the
 * observe benchmark (the agent reads the same bytes from the ring buffer).
 */
import { FLOW_EVENT_SIZE, flowEvent, type FlowEvent } from '../datapath/codecs/flow-event.js';
import { parseIp } from '../netlink/message.js';

/** A TCP SYN from endpoint 1 (10.0.0.2:40000) to endpoint 2 (10.0.0.3:80), seen at to-endpoint. */
export const BASE_EVENT: FlowEvent = {
  timeNs: 0, endpointId: 2, ifindex: 7, srcEndpoint: 1, dstEndpoint: 2, pktLen: 60,
  dropReason: 0, line: 0, type: 4, obsPoint: 101, verdict: 1, family: 2, ipProto: 6, tcpFlags: 0x02, icmpType: 0, icmpCode: 0,
  srcPort: 40000, dstPort: 80, ethProto: 0x0800,
  srcIdentity: 256, dstIdentity: 257, egressCookie: 0, ingressCookie: 0, matchType: 0, flags: 0,
  srcAddr: addr('10.0.0.2'), dstAddr: addr('10.0.0.3'),
};

/** 16 address bytes for an IPv4 or IPv6 address, as flow_event holds them. */
export function addr(ip: string): Uint8Array {
  const out = new Uint8Array(16);
  out.set(parseIp(ip).bytes);
  return out;
}

/** One encoded record: BASE_EVENT with `fields` changed; timeNs defaults to now. */
export function flowEventBytes(fields: Partial<FlowEvent> = {}): Buffer {
  const buf = Buffer.alloc(FLOW_EVENT_SIZE);
  flowEvent.encode({ ...BASE_EVENT, timeNs: Number(process.hrtime.bigint()), ...fields }, buf, 0);
  return buf;
}
