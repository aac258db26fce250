import { test } from 'node:test';
import assert from 'node:assert/strict';
import { FlowPipeline } from './pipeline.js';
import type { EndpointView } from './hubble.js';
import { addr, flowEventBytes } from './test-events.js';

const eps = new Map<number, EndpointView>([
  [1, { id: 1, name: 'client', namespace: 'shop', labels: ['k8s:app=client'], identity: 256 }],
  [2, { id: 2, name: 'web', namespace: 'shop', labels: ['k8s:app=web'], identity: 257 }],
]);

function pipeline(capacity: number): FlowPipeline {
  return new FlowPipeline(capacity, {
    nodeName: 'node-1',
    endpoint: (id) => eps.get(id),
    endpointByIp: (ip) => [...eps.values()].find((v) => (v.id === 1 && ip === '10.0.0.2') || (v.id === 2 && ip === '10.0.0.3')),
    rule: (cookie) => (cookie === 0x10001 ? { kind: 'CiliumNetworkPolicy', name: 'allow-web', namespace: 'shop', index: 0 } : undefined),
    identityLabels: (id) => (id === 2 ? ['reserved:world'] : undefined),
  });
}

function feed(p: FlowPipeline, fields: Parameters<typeof flowEventBytes>[0]): void {
  const b = flowEventBytes(fields);
  p.ingest(new DataView(b.buffer, b.byteOffset, b.byteLength), 0);
}

test('stores flows as raw records and rebuilds Hubble JSON on demand', () => {
  const p = pipeline(8);
  const before = Date.now();
  feed(p, { ingressCookie: 0x10001, matchType: 2, flags: 0x05 });
  const rec = p.store.record(p.store.firstSeq);
  assert.ok('flow' in rec);
  const f = rec.flow;
  assert.equal(f.verdict, 'FORWARDED');
  assert.equal(f.source?.pod_name, 'client');
  assert.equal(f.destination?.pod_name, 'web');
  assert.deepEqual(f.ingress_allowed_by?.map((x) => x.name), ['allow-web']);
  assert.equal(f.node_name, 'node-1');
  assert.match(f.time, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z$/);
  const t = Date.parse(f.time);
  assert.ok(t >= before - 1000 && t <= Date.now() + 1000, `time ${f.time} is now`);
  // The same flow read twice is the same flow (uuid stable).
  const again = p.store.record(p.store.firstSeq);
  assert.ok('flow' in again && again.flow.uuid === f.uuid);
});

test('translated flows name their service: destination for the client, source for the reply', () => {
  const p = new FlowPipeline(4, {
    nodeName: 'n', endpoint: (id) => eps.get(id), endpointByIp: () => undefined, rule: () => undefined, identityLabels: () => undefined,
    service: (id) => (id === 7 ? { name: 'web', namespace: 'shop' } : undefined),
  });
  for (const fields of [{ flags: 0x10 | 0x01, line: 7 }, { flags: 0x10 | 0x01 | 0x02, line: 7 }, { flags: 0x01, line: 7 }]) {
    const b = flowEventBytes(fields);
    p.ingest(new DataView(b.buffer, b.byteOffset, b.byteLength), 0);
  }
  const [req, reply, plain] = [0, 1, 2].map((seq) => p.store.record(seq));
  assert.ok(req && 'flow' in req && reply && 'flow' in reply && plain && 'flow' in plain);
  assert.deepEqual(req.flow.destination_service, { name: 'web', namespace: 'shop' });
  assert.deepEqual(reply.flow.source_service, { name: 'web', namespace: 'shop' });
  assert.equal(plain.flow.destination_service, undefined);
});

test('keeps the last N records in order, lost-event records included', () => {
  const p = pipeline(3);
  for (let port = 1; port <= 4; port++) feed(p, { dstPort: port });
  p.recordLost('PERF_EVENT_RING_BUFFER', 7);
  const s = p.store;
  assert.equal(s.size, 3);
  assert.equal(s.seen, 4);
  const kept = [];
  for (let seq = s.firstSeq; seq < s.endSeq; seq++) kept.push(s.record(seq));
  assert.deepEqual(kept.map((r) => ('flow' in r ? r.flow.l4?.TCP?.destination_port : `lost ${r.lost_events.num_events_lost}`)), [3, 4, 'lost 7']);
  assert.equal(p.stats().lostRingBuffer, 7);
  assert.throws(() => pipeline(0), /positive integer/);
});

test('a peer the datapath did not name is found by address, unless its identity is reserved', () => {
  const p = pipeline(4);
  feed(p, { srcEndpoint: 0, srcIdentity: 0 });
  feed(p, { dstEndpoint: 0, dstIdentity: 2, dstAddr: addr('10.0.0.3') });
  const a = p.store.record(0);
  const b = p.store.record(1);
  assert.ok('flow' in a && 'flow' in b);
  assert.equal(a.flow.source?.pod_name, 'client');
  assert.equal(b.flow.destination?.pod_name, undefined);
  assert.deepEqual(b.flow.destination?.labels, ['reserved:world']);
});

test('an endpoint deleted after its flow still names that flow', () => {
  const p = pipeline(4);
  feed(p, {});
  const web = eps.get(2)!;
  eps.delete(2);
  try {
    const r = p.store.record(0);
    assert.ok('flow' in r && r.flow.destination?.pod_name === 'web');
  } finally {
    eps.set(2, web);
  }
});

test('counts flows by type, verdict and protocol and policy verdicts by direction and match', () => {
  const p = pipeline(16);
  feed(p, {});
  feed(p, {});
  feed(p, { type: 1, verdict: 2, dropReason: 133, ipProto: 17 });
  feed(p, { type: 5, verdict: 1, matchType: 2, flags: 0x04 });
  feed(p, { type: 5, verdict: 2, matchType: 0, flags: 0x08 });
  const s = p.stats();
  const count = (type: string, verdict: string, protocol: string): number =>
    s.flows.find((c) => c.type === type && c.verdict === verdict && c.protocol === protocol)?.count ?? 0;
  assert.equal(count('trace', 'FORWARDED', 'TCP'), 2);
  assert.equal(count('drop', 'DROPPED', 'UDP'), 1);
  assert.deepEqual(s.policyVerdicts.map((v) => `${v.direction}/${v.match}/${v.action}=${v.count}`).sort(),
    ['egress/none/denied=1', 'ingress/l3-l4/allowed=1']);
  assert.equal(s.flowsSeen, 5);
  assert.equal(s.storeBytes, 16 * 96);
});

test('subscribers see each new record by sequence number', () => {
  const p = pipeline(4);
  const seen: number[] = [];
  const stop = p.store.subscribe((seq) => seen.push(seq));
  feed(p, {});
  p.recordLost('PERF_EVENT_RING_BUFFER', 1);
  stop();
  feed(p, {});
  assert.deepEqual(seen, [0, 1]);
});
