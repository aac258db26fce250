import { test } from 'node:test';
import assert from 'node:assert/strict';
import { compactLine, isControlFlow, toHubbleFlow, type EndpointView, type FlowEventRecord } from './hubble.js';

const base: FlowEventRecord = {
  timeNs: Number(process.hrtime.bigint()), endpointId: 1, ifindex: 7, srcEndpoint: 1, dstEndpoint: 2, pktLen: 60,
  dropReason: 0, type: 4, obsPoint: 101, verdict: 1, family: 2, ipProto: 6, tcpFlags: 0x02, icmpType: 0, icmpCode: 0,
  srcPort: 40000, dstPort: 80, ethProto: 0x0800,
  srcIdentity: 0, dstIdentity: 0, egressCookie: 0, ingressCookie: 0, matchType: 0, flags: 0,
  srcAddr: Uint8Array.from([10, 0, 0, 2, ...new Array<number>(12).fill(0)]),
  dstAddr: Uint8Array.from([10, 0, 0, 3, ...new Array<number>(12).fill(0)]),
};
const eps: Record<number, EndpointView> = {
  1: { id: 1, name: 'client', namespace: 'shop', labels: ['k8s:app=client'], hostIfname: 'wgl1' },
  2: { id: 2, name: 'web', namespace: 'shop', labels: ['k8s:app=web'], hostIfname: 'wgl2' },
};
const lookup = (id: number): EndpointView | undefined => eps[id];

test('a forwarded TCP SYN in Hubble JSON', () => {
  const f = toHubbleFlow(base, 'node-1', lookup);
  assert.equal(f.verdict, 'FORWARDED');
  assert.deepEqual(f.IP, { source: '10.0.0.2', destination: '10.0.0.3', ipVersion: 'IPv4' });
  assert.deepEqual(f.l4, { TCP: { source_port: 40000, destination_port: 80, flags: { SYN: true } } });
  assert.deepEqual(f.source, { ID: 1, namespace: 'shop', labels: ['k8s:app=client'], pod_name: 'client' });
  assert.equal(f.destination?.pod_name, 'web');
  assert.equal(f.Type, 'L3_L4');
  assert.equal(f.node_name, 'node-1');
  assert.equal(f.trace_observation_point, 'TO_ENDPOINT');
  assert.equal(f.traffic_direction, 'EGRESS');
  assert.equal(f.is_reply, false);
  assert.deepEqual(f.interface, { index: 7, name: 'wgl1' });
  assert.equal(f.Summary, 'TCP Flags: SYN');
  assert.equal(f.drop_reason_desc, undefined, 'zero values are left out');
  assert.ok(Math.abs(Date.parse(f.time) - Date.now()) < 5000, 'monotonic time becomes wall-clock time');
  assert.match(compactLine(f), /shop\/client \(10\.0\.0\.2:40000\) -> shop\/web \(10\.0\.0\.3:80\) to-endpoint FORWARDED \(TCP Flags: SYN\)$/);
});

test('a drop carries Hubble\'s reason and finds the peer by address', () => {
  const f = toHubbleFlow({ ...base, verdict: 2, type: 1, dropReason: 132, dstEndpoint: 0, obsPoint: 5, ipProto: 1, icmpType: 8, tcpFlags: 0 }, 'n', lookup,
    (ip) => (ip === '10.0.0.3' ? eps[2] : undefined));
  assert.equal(f.verdict, 'DROPPED');
  assert.equal(f.drop_reason, 132);
  assert.equal(f.drop_reason_desc, 'INVALID_SOURCE_IP');
  assert.deepEqual(f.event_type, { type: 1, sub_type: 132 });
  assert.deepEqual(f.l4, { ICMPv4: { type: 8 } });
  assert.equal(f.destination?.pod_name, 'web');
  assert.equal(f.trace_observation_point, undefined, 'Hubble names observation points on traces only');
  assert.match(compactLine(f), / drop DROPPED \(INVALID_SOURCE_IP\) \(ICMPv4 EchoRequest\)$/);
});

test('IPv6, UDP and control traffic', () => {
  const v6 = toHubbleFlow({ ...base, family: 10, ipProto: 17, srcAddr: Uint8Array.from([0xfd, 0, ...new Array<number>(13).fill(0), 2]), dstAddr: Uint8Array.from([0xfd, 0, ...new Array<number>(13).fill(0), 3]) }, 'n', lookup);
  assert.deepEqual(v6.IP, { source: 'fd00::2', destination: 'fd00::3', ipVersion: 'IPv6' });
  assert.deepEqual(v6.l4, { UDP: { source_port: 40000, destination_port: 80 } });
  const ns = toHubbleFlow({ ...base, family: 10, ipProto: 58, icmpType: 135, tcpFlags: 0 }, 'n', lookup);
  assert.ok(isControlFlow(ns));
  assert.equal(ns.Summary, 'ICMPv6 NeighborSolicitation');
  const arp = toHubbleFlow({ ...base, family: 0, ipProto: 0, ethProto: 0x0806 }, 'n', lookup);
  assert.equal(arp.IP, undefined);
  assert.ok(isControlFlow(arp));
  assert.ok(!isControlFlow(v6));
});

test('policy fields: identities, the rules that allowed a flow, reply from conntrack', () => {
  const policy = {
    identityLabels: (id: number): string[] | undefined => (id === 2 ? ['reserved:world'] : undefined),
    rule: (cookie: number) => (cookie === 0x10001 ? { kind: 'CiliumNetworkPolicy', name: 'allow-web', namespace: 'shop', index: 0 } : undefined),
  };
  const f = toHubbleFlow({ ...base, srcIdentity: 300, dstIdentity: 301, ingressCookie: 0x10001, matchType: 2, flags: 0x01 }, 'n', lookup, undefined, policy);
  assert.equal(f.source?.identity, 300);
  assert.equal(f.destination?.identity, 301);
  assert.equal(f.is_reply, false);
  assert.equal(f.policy_match_type, 2);
  assert.equal(f.ingress_allowed_by?.[0]?.name, 'allow-web');
  assert.equal(f.ingress_allowed_by?.[0]?.kind, 'CiliumNetworkPolicy');
  assert.ok(f.ingress_allowed_by?.[0]?.labels.includes('waggle:rule-index=0'));
  assert.equal(f.egress_allowed_by, undefined);
});

test('a deny-rule drop names the deny rule and the direction; a world peer shows its identity labels', () => {
  const policy = {
    identityLabels: (id: number): string[] | undefined => (id === 2 ? ['reserved:world'] : undefined),
    rule: (cookie: number) => (cookie === 0x20003 ? { kind: 'CiliumClusterwideNetworkPolicy', name: 'no-world', index: 2 } : undefined),
  };
  const f = toHubbleFlow({ ...base, type: 1, verdict: 2, dropReason: 181, dstEndpoint: 0, dstIdentity: 2, egressCookie: 0x20003, flags: 0x08, dstAddr: Uint8Array.from([192, 0, 2, 1, ...new Array<number>(12).fill(0)]) }, 'n', lookup, undefined, policy);
  assert.equal(f.drop_reason_desc, 'POLICY_DENY');
  assert.equal(f.traffic_direction, 'EGRESS');
  assert.deepEqual(f.destination, { identity: 2, labels: ['reserved:world'] });
  assert.equal(f.egress_denied_by?.[0]?.name, 'no-world');
  assert.equal(f.egress_denied_by?.[0]?.namespace, undefined);
  assert.equal(f.egress_allowed_by, undefined);
});
