import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { FlowEvent } from '../datapath/codecs/flow-event.js';
import type { EndpointView } from './hubble.js';
import { FlowPipeline } from './pipeline.js';
import { ServiceMap, type MapSnapshot, type ServiceMapOptions } from './service-map.js';
import { addr, flowEventBytes } from './test-events.js';

const CLIENT: EndpointView = { id: 1, name: 'client', namespace: 'shop', labels: ['k8s:app=client', 'k8s:io.kubernetes.pod.namespace=shop'], identity: 256 };
const WEB: EndpointView = { id: 2, name: 'web', namespace: 'shop', labels: ['k8s:app=web', 'k8s:io.kubernetes.pod.namespace=shop'], identity: 257 };
const OUTSIDER: EndpointView = { id: 3, name: 'outsider', namespace: 'other', labels: ['k8s:app=outsider', 'k8s:io.kubernetes.pod.namespace=other'], identity: 258 };
const IDLE: EndpointView = { id: 4, name: 'idle', namespace: 'shop', labels: ['k8s:io.kubernetes.pod.namespace=shop'], identity: 259 };

const IDENTITY_LABELS: Record<number, string[]> = {
  1: ['reserved:host'],
  2: ['reserved:world'],
  16777217: ['cidr:198.18.0.0/24', 'reserved:world'],
  300: ['k8s:app=db', 'k8s:io.kubernetes.pod.namespace=data'],
};

const REPLY_KNOWN = 0x01;
const IS_REPLY = 0x02;

interface Env {
  pipeline: FlowPipeline;
  map: ServiceMap;
  endpoints: EndpointView[];
  send(fields: Partial<FlowEvent>): void;
  snap(): MapSnapshot;
}

function env(opts: ServiceMapOptions = {}, endpoints: EndpointView[] = [CLIENT, WEB, OUTSIDER, IDLE]): Env {
  const live = [...endpoints];
  const byId = (id: number): EndpointView | undefined => live.find((e) => e.id === id);
  const pipeline = new FlowPipeline(1000, {
    nodeName: 'node-1',
    endpoint: byId,
    endpointByIp: () => undefined,
    rule: () => undefined,
    identityLabels: (id) => IDENTITY_LABELS[id],
  });
  const map = new ServiceMap(pipeline.store, { endpoints: () => live, ...opts });
  pipeline.onFlow(map.hook);
  return {
    pipeline, map, endpoints: live,
    send(fields) {
      const buf = flowEventBytes(fields);
      pipeline.ingest(new DataView(buf.buffer, buf.byteOffset, buf.byteLength), 0);
    },
    snap: () => map.snapshot(),
  };
}

/** A TCP connection client:40000 → web:80 as the datapath reports it: SYN, its policy verdict, SYN-ACK (a reply), FIN. */
function tcpConnection(e: Env): void {
  e.send({ srcEndpoint: 1, dstEndpoint: 2, endpointId: 1, srcIdentity: 256, dstIdentity: 257, tcpFlags: 0x02, flags: REPLY_KNOWN });
  e.send({ type: 5, srcEndpoint: 1, dstEndpoint: 2, endpointId: 2, srcIdentity: 256, dstIdentity: 257, flags: 0x04 });
  e.send({ srcEndpoint: 2, dstEndpoint: 1, endpointId: 2, srcIdentity: 257, dstIdentity: 256, srcPort: 80, dstPort: 40000, tcpFlags: 0x12, flags: REPLY_KNOWN | IS_REPLY,
    srcAddr: addr('10.0.0.3'), dstAddr: addr('10.0.0.2') });
  e.send({ srcEndpoint: 1, dstEndpoint: 2, endpointId: 1, srcIdentity: 256, dstIdentity: 257, tcpFlags: 0x11, flags: REPLY_KNOWN });
}

test('a TCP connection is one edge from client to server; replies count on it, policy verdicts do not', () => {
  const e = env();
  tcpConnection(e);
  const s = e.snap();
  assert.equal(s.nodeName, 'node-1');
  assert.equal(s.edges.length, 1, JSON.stringify(s.edges));
  const edge = s.edges[0]!;
  assert.equal(edge.id, 'endpoint:1->endpoint:2');
  assert.equal(edge.from, 'endpoint:1');
  assert.equal(edge.to, 'endpoint:2');
  assert.equal(edge.forwarded, 3);
  assert.equal(edge.dropped, 0);
  assert.deepEqual(edge.dropReasons, {});
  assert.deepEqual(edge.ports, [{ protocol: 'TCP', port: 80, flows: 2 }]);
  assert.ok(edge.lastSeen >= edge.firstSeen && Math.abs(edge.lastSeen - Date.now()) < 5000, 'wall-clock times');
  assert.equal(s.flows, 3);
});

test('nodes: every local endpoint (talking or not), grouped by namespace and app label', () => {
  const e = env();
  tcpConnection(e);
  const s = e.snap();
  assert.deepEqual(s.nodes.map((n) => `${n.group} ${n.name}`), ['other/outsider outsider', 'shop/ idle', 'shop/client client', 'shop/web web']);
  const web = s.nodes.find((n) => n.name === 'web')!;
  assert.deepEqual(web, {
    id: 'endpoint:2', kind: 'endpoint', name: 'web', namespace: 'shop', app: 'web', group: 'shop/web',
    labels: WEB.labels, identity: 257, endpointId: 2, live: true,
  });
});

test('a dropped flow counts as a drop with its reason', () => {
  const e = env();
  e.send({ type: 1, verdict: 2, dropReason: 133, obsPoint: 0, srcEndpoint: 3, dstEndpoint: 2, endpointId: 3, srcIdentity: 258, dstIdentity: 257, tcpFlags: 0x02 });
  e.send({ type: 5, verdict: 2, dropReason: 133, srcEndpoint: 3, dstEndpoint: 2, endpointId: 3, srcIdentity: 258, dstIdentity: 257, tcpFlags: 0x02 });
  e.send({ type: 1, verdict: 2, dropReason: 133, obsPoint: 0, srcEndpoint: 3, dstEndpoint: 2, endpointId: 3, srcIdentity: 258, dstIdentity: 257, tcpFlags: 0x02 });
  const [edge] = e.snap().edges;
  assert.equal(edge?.id, 'endpoint:3->endpoint:2');
  assert.equal(edge?.dropped, 2);
  assert.equal(edge?.forwarded, 0);
  assert.deepEqual(edge?.dropReasons, { POLICY_DENIED: 2 });
});

test('peers that are not local endpoints are their identities: host, world, CIDR, another node\'s endpoint, unknown', () => {
  const e = env();
  const out = { srcEndpoint: 1, endpointId: 1, srcIdentity: 256, dstEndpoint: 0, obsPoint: 3 };
  e.send({ ...out, dstIdentity: 2, ipProto: 17, dstPort: 53, dstAddr: addr('198.18.0.10') });
  e.send({ ...out, dstIdentity: 16777217, dstAddr: addr('198.18.0.200'), dstPort: 443 });
  e.send({ ...out, dstIdentity: 300, dstAddr: addr('10.1.0.5'), dstPort: 5432 });
  e.send({ srcEndpoint: 0, endpointId: 2, srcIdentity: 1, dstEndpoint: 2, dstIdentity: 257, srcAddr: addr('198.18.0.1'), ipProto: 1, icmpType: 8, tcpFlags: 0 });
  e.send({ ...out, type: 1, verdict: 2, dropReason: 132, dstIdentity: 0 });
  const s = e.snap();
  const node = (id: string) => s.nodes.find((n) => n.id === id);
  assert.deepEqual(node('identity:2'), { id: 'identity:2', kind: 'reserved', name: 'world', namespace: '', app: '', group: '/', labels: ['reserved:world'], identity: 2 });
  assert.equal(node('identity:1')?.name, 'host');
  assert.equal(node('identity:16777217')?.kind, 'cidr');
  assert.equal(node('identity:16777217')?.name, '198.18.0.0/24');
  assert.deepEqual([node('identity:300')?.kind, node('identity:300')?.name, node('identity:300')?.namespace, node('identity:300')?.group], ['remote', 'db', 'data', 'data/db']);
  assert.equal(node('identity:0')?.kind, 'unknown');
  const edges = Object.fromEntries(s.edges.map((x) => [x.id, x]));
  assert.deepEqual(edges['endpoint:1->identity:2']?.ports, [{ protocol: 'UDP', port: 53, flows: 1 }]);
  assert.deepEqual(edges['identity:1->endpoint:2']?.ports, [{ protocol: 'ICMPv4', port: 0, flows: 1 }]);
  assert.deepEqual(edges['endpoint:1->identity:0']?.dropReasons, { INVALID_SOURCE_IP: 1 });
  // Sorted by namespace: the outside ('' namespace) first; the page draws them in a box of their own.
  assert.equal(s.nodes[0]?.namespace, '');
});

test('ARP and IPv6 neighbour discovery / MLD are not counted; ICMPv6 echo is', () => {
  const e = env();
  e.send({ family: 0, ipProto: 0, ethProto: 0x0806, srcEndpoint: 1, dstEndpoint: 0, dstIdentity: 1 });
  for (const icmpType of [133, 135, 136, 143, 130]) {
    e.send({ family: 10, ipProto: 58, icmpType, tcpFlags: 0, srcEndpoint: 1, dstEndpoint: 0, dstIdentity: 1, srcAddr: addr('fe80::1'), dstAddr: addr('ff02::2') });
  }
  const before = e.map.version;
  assert.equal(e.snap().edges.length, 0);
  e.send({ family: 10, ipProto: 58, icmpType: 128, tcpFlags: 0, srcAddr: addr('fd00::2'), dstAddr: addr('fd00::3'), flags: REPLY_KNOWN });
  e.send({ family: 10, ipProto: 58, icmpType: 129, tcpFlags: 0, srcEndpoint: 2, dstEndpoint: 1, srcAddr: addr('fd00::3'), dstAddr: addr('fd00::2'), flags: REPLY_KNOWN | IS_REPLY });
  const s = e.snap();
  assert.ok(e.map.version > before, 'a counted flow is a change');
  assert.equal(s.edges.length, 1);
  assert.equal(s.edges[0]?.id, 'endpoint:1->endpoint:2');
  assert.equal(s.edges[0]?.forwarded, 2);
  assert.deepEqual(s.edges[0]?.ports, [{ protocol: 'ICMPv6', port: 0, flows: 1 }]);
});

test('edges stay within the limit: the least recently seen go first', () => {
  const e = env({ maxEdges: 10 });
  for (let i = 0; i < 25; i++) {
    e.send({ srcEndpoint: 1, endpointId: 1, srcIdentity: 256, dstEndpoint: 0, dstIdentity: 16777300 + i, obsPoint: 3, timeNs: Number(process.hrtime.bigint()) + i * 1e6 });
  }
  const s = e.snap();
  assert.ok(s.edges.length <= 10, `${s.edges.length} edges`);
  assert.ok(s.evictedEdges >= 15);
  assert.ok(s.edges.some((x) => x.to === 'identity:16777324'), 'the newest edge is kept');
  assert.ok(!s.edges.some((x) => x.to === 'identity:16777300'), 'the oldest edge is gone');
  assert.equal(s.nodes.filter((n) => n.kind === 'cidr').length, s.edges.length, 'peers without edges go with them');
});

test('a deleted endpoint stays (not live) while its edges are recent, then goes with them', () => {
  const e = env({ deletedRetentionMs: 60_000 });
  tcpConnection(e);
  e.endpoints.splice(e.endpoints.findIndex((v) => v.id === 1), 1);
  let s = e.snap();
  assert.equal(s.nodes.find((n) => n.id === 'endpoint:1')?.live, false);
  assert.equal(s.edges.length, 1);
  s = e.map.snapshot(Date.now() + 120_000);
  assert.equal(s.nodes.find((n) => n.id === 'endpoint:1'), undefined);
  assert.equal(s.edges.length, 0);
  assert.equal(s.nodes.find((n) => n.id === 'endpoint:2')?.live, true);
});

test('close() stops counting', () => {
  const e = env();
  e.map.close();
  tcpConnection(e);
  assert.equal(e.snap().edges.length, 0);
});

test('cost per flow on the ingest path (a figure, not a pass/fail)', (t) => {
  const e = env();
  const buf = flowEventBytes({ srcEndpoint: 1, dstEndpoint: 2, endpointId: 2, srcIdentity: 256, dstIdentity: 257, flags: REPLY_KNOWN });
  const store = e.pipeline.store;
  for (let i = 0; i < 1000; i++) store.addFlow(buf, 0, Date.now(), { observer: WEB, src: CLIENT, dst: WEB, egressRule: undefined, ingressRule: undefined });
  const cur = store.cursor();
  for (let i = 0; i < 200_000; i++) { const seq = store.firstSeq + (i % 1000); e.map.add(cur.at(seq), seq); } // warm up
  const n = 1_000_000;
  const start = process.hrtime.bigint();
  for (let i = 0; i < n; i++) {
    const seq = store.firstSeq + (i % 1000);
    e.map.add(cur.at(seq), seq);
  }
  const ns = Number(process.hrtime.bigint() - start) / n;
  t.diagnostic(`ServiceMap.add: ${ns.toFixed(0)} ns per flow`);
  assert.equal(e.snap().edges[0]?.forwarded, n + 200_000);
});
