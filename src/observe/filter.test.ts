import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  compileFilter, compileMatcher, encodeFlowQuery, FilterError, labelsMatch, parseFlowQuery, parseLabelSelector, parseTimeBound,
  type FlowFields,
} from './filter.js';
import { FlowPipeline } from './pipeline.js';
import type { EndpointView } from './hubble.js';
import { addr, flowEventBytes } from './test-events.js';

const eps = new Map<number, EndpointView>([
  [1, { id: 1, name: 'client', namespace: 'shop', labels: ['k8s:app=client', 'k8s:tier=front'], identity: 256 }],
  [2, { id: 2, name: 'web', namespace: 'shop', labels: ['k8s:app=web'], identity: 257 }],
  [3, { id: 3, name: 'db', namespace: 'data', labels: ['k8s:app=db'], identity: 258 }],
]);

/** Stores one flow and returns a cursor on it. */
function flow(fields: Parameters<typeof flowEventBytes>[0]): FlowFields {
  const p = new FlowPipeline(2, {
    nodeName: 'n', endpoint: (id) => eps.get(id), endpointByIp: () => undefined, rule: () => undefined,
    identityLabels: (id) => (id === 2 ? ['reserved:world'] : undefined),
  });
  const b = flowEventBytes(fields);
  p.ingest(new DataView(b.buffer, b.byteOffset, b.byteLength), 0);
  return p.store.cursor().at(0);
}

const synToWeb = flow({});
const dropToWorld = flow({ type: 1, verdict: 2, dropReason: 133, dstEndpoint: 0, dstIdentity: 2, ipProto: 17, dstPort: 53, dstAddr: addr('192.0.2.9'), flags: 0x08 });
const v6ToDb = flow({ family: 10, endpointId: 3, dstEndpoint: 3, dstIdentity: 258, srcAddr: addr('fd00::2'), dstAddr: addr('fd00::3'), dstPort: 5432 });
const policyVerdict = flow({ type: 5, matchType: 2, flags: 0x04 });
const ping = flow({ ipProto: 1, icmpType: 8, srcPort: 0, dstPort: 0 });
const all = { synToWeb, dropToWorld, v6ToDb, policyVerdict, ping };

function matching(filter: Parameters<typeof compileFilter>[0]): string[] {
  const m = compileFilter(filter);
  return Object.entries(all).filter(([, f]) => m(f)).map(([k]) => k);
}

test('each field, on one end or either end', () => {
  assert.deepEqual(matching({ sourceIp: ['10.0.0.2'] }), ['synToWeb', 'dropToWorld', 'policyVerdict', 'ping']);
  assert.deepEqual(matching({ destinationIp: ['192.0.2.0/24'] }), ['dropToWorld']);
  assert.deepEqual(matching({ ip: ['fd00::/64'] }), ['v6ToDb']);
  assert.deepEqual(matching({ destinationEndpoint: ['shop/web'] }), ['synToWeb', 'policyVerdict', 'ping']);
  assert.deepEqual(matching({ destinationEndpoint: ['db'] }), ['v6ToDb']);
  assert.deepEqual(matching({ endpoint: ['data/db'] }), ['v6ToDb']);
  assert.deepEqual(matching({ destinationNamespace: ['data'] }), ['v6ToDb']);
  assert.deepEqual(matching({ namespace: ['shop'] }), Object.keys(all));
  assert.deepEqual(matching({ destinationLabel: ['reserved:world'] }), ['dropToWorld']);
  assert.deepEqual(matching({ sourceLabel: ['app=client,tier in (front, back)'] }), Object.keys(all));
  assert.deepEqual(matching({ destinationLabel: ['k8s:app=db', 'app=web'] }), ['synToWeb', 'v6ToDb', 'policyVerdict', 'ping']);
  assert.deepEqual(matching({ destinationIdentity: [2] }), ['dropToWorld']);
  assert.deepEqual(matching({ destinationPort: [53, 5432] }), ['dropToWorld', 'v6ToDb']);
  assert.deepEqual(matching({ port: [40000] }), ['synToWeb', 'dropToWorld', 'v6ToDb', 'policyVerdict']);
  assert.deepEqual(matching({ protocol: ['udp'] }), ['dropToWorld']);
  assert.deepEqual(matching({ protocol: ['icmp'] }), ['ping']);
  assert.deepEqual(matching({ protocol: ['icmpv6'] }), []);
  assert.deepEqual(matching({ verdict: ['DROPPED'] }), ['dropToWorld']);
  assert.deepEqual(matching({ type: ['drop'] }), ['dropToWorld']);
  assert.deepEqual(matching({ type: ['policy-verdict'] }), ['policyVerdict']);
  assert.deepEqual(matching({ type: ['trace:to-endpoint'] }), ['synToWeb', 'v6ToDb', 'ping']);
  assert.deepEqual(matching({ trafficDirection: ['ingress'] }), ['synToWeb', 'v6ToDb', 'policyVerdict', 'ping']);
});

test('fields AND, values OR, includes OR, excludes win', () => {
  assert.deepEqual(matching({ protocol: ['tcp'], destinationNamespace: ['shop'] }), ['synToWeb', 'policyVerdict']);
  const m = compileMatcher([{ verdict: ['DROPPED'] }, { protocol: ['icmp'] }], [{ protocol: ['udp'] }]);
  assert.deepEqual(Object.entries(all).filter(([, f]) => m(f)).map(([k]) => k), ['ping']);
  const none = compileMatcher([], [{ type: ['trace'] }]);
  assert.deepEqual(Object.entries(all).filter(([, f]) => none(f)).map(([k]) => k), ['dropToWorld', 'policyVerdict']);
});

test('label selectors', () => {
  const labels = ['k8s:app=web', 'k8s:io.kubernetes.pod.namespace=shop', 'reserved:host'];
  assert.ok(labelsMatch(parseLabelSelector('app=web'), labels));
  assert.ok(labelsMatch(parseLabelSelector('k8s:app==web'), labels));
  assert.ok(!labelsMatch(parseLabelSelector('other:app=web'), labels));
  assert.ok(labelsMatch(parseLabelSelector('reserved:host'), labels));
  assert.ok(labelsMatch(parseLabelSelector('!tier, app notin (db)'), labels));
  assert.ok(!labelsMatch(parseLabelSelector('app!=web'), labels));
  assert.ok(!labelsMatch(parseLabelSelector('app in (db,cache)'), labels));
  assert.throws(() => parseLabelSelector('app=web,'), /empty term/);
  assert.throws(() => parseLabelSelector('app = = web'), FilterError);
});

test('time bounds: durations and timestamps', () => {
  assert.equal(parseTimeBound('90s', 100_000), 10_000);
  assert.equal(parseTimeBound('1h30m', 6_000_000), 600_000);
  assert.equal(parseTimeBound('2026-01-02T03:04:05Z'), Date.UTC(2026, 0, 2, 3, 4, 5));
  assert.throws(() => parseTimeBound('yesterday'), /neither a duration .* nor a timestamp/);
});

test('the query string round-trips and bad queries name what is wrong', () => {
  const q = { include: [{ sourceIp: ['10.0.0.0/8'], verdict: ['DROPPED' as const] }], exclude: [{ port: [53] }], sinceMs: 1_000_000, last: 5, follow: true };
  const back = parseFlowQuery(encodeFlowQuery(q));
  assert.deepEqual(back, { ...q });
  const bad = (qs: string): string => {
    try { parseFlowQuery(new URLSearchParams(qs)); } catch (err) { assert.ok(err instanceof FilterError); return err.message; }
    throw new Error(`accepted ${qs}`);
  };
  assert.match(bad('filter=nope'), /not valid JSON/);
  assert.match(bad(`filter=${encodeURIComponent('{"include":[{"verdict":["MAYBE"]}]}')}`), /include\.0\.verdict\.0/);
  assert.match(bad(`filter=${encodeURIComponent('{"include":[{"colour":["red"]}]}')}`), /colour/);
  assert.match(bad(`filter=${encodeURIComponent('{"include":[{"sourceIp":["10.0.0.300"]}]}')}`), /ip: "10\.0\.0\.300" is not an IP address or CIDR/);
  assert.match(bad(`filter=${encodeURIComponent('{"include":[{"label":["a b c"]}]}')}`), /label selector/);
  assert.match(bad('last=0'), /last must be a positive integer/);
  assert.match(bad('since=soon'), /neither a duration/);
  assert.match(bad('since=2026-01-02T00:00:00Z&until=2026-01-01T00:00:00Z'), /since is after until/);
});
