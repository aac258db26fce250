import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseServiceDocument } from './parse.js';
import { IdTable, resolveServices, type ServiceEndpoint } from './resolve.js';
import type { EndpointSliceSpec, ServiceSpec } from './types.js';

const svc = (doc: Record<string, unknown>): ServiceSpec => parseServiceDocument({ apiVersion: 'v1', kind: 'Service', ...doc }, 'test') as ServiceSpec;
const slice = (doc: Record<string, unknown>): EndpointSliceSpec => parseServiceDocument({ apiVersion: 'discovery.k8s.io/v1', kind: 'EndpointSlice', ...doc }, 'test') as EndpointSliceSpec;

const endpoints: ServiceEndpoint[] = [
  { name: 'web-1', namespace: 'shop', labels: { app: 'web' }, ipv4: '10.200.0.2', ipv6: 'fd00:200::2' },
  { name: 'web-2', namespace: 'shop', labels: { app: 'web', tier: 'x' }, ipv4: '10.200.0.3', ipv6: 'fd00:200::3' },
  { name: 'web-other-ns', namespace: 'other', labels: { app: 'web' }, ipv4: '10.200.0.4' },
  { name: 'db', namespace: 'shop', labels: { app: 'db' }, ipv4: '10.200.0.5' },
];

test('selector services take the matching local endpoints of their namespace, per family and port', () => {
  const web = svc({
    metadata: { name: 'web', namespace: 'shop', annotations: { 'service.waggle.io/lb-algorithm': 'maglev' } },
    spec: { selector: { app: 'web' }, clusterIPs: ['10.96.0.10', 'fd00:96::10'], ipFamilies: ['IPv4', 'IPv6'], ports: [{ name: 'http', port: 80, targetPort: 8080 }], sessionAffinity: 'ClientIP' },
  });
  const fIds = new IdTable();
  const bIds = new IdTable();
  const r = resolveServices({ services: [web], slices: [], endpoints, nodeAddresses: [], frontendIds: fIds, backendIds: bIds });
  assert.deepEqual(r.frontends.map((f) => `${f.addr}:${f.port}/${f.proto} ${f.active.length} maglev=${f.maglev} aff=${f.affinityTimeout}`),
    ['10.96.0.10:80/TCP 2 maglev=true aff=10800', 'fd00:96::10:80/TCP 2 maglev=true aff=10800']);
  assert.deepEqual(r.backends.map((b) => `${b.addr}:${b.port}`).sort(), ['10.200.0.2:8080', '10.200.0.3:8080', 'fd00:200::2:8080', 'fd00:200::3:8080']);
  // Stable IDs: resolving again gives the same numbers.
  const again = resolveServices({ services: [web], slices: [], endpoints, nodeAddresses: [], frontendIds: fIds, backendIds: bIds });
  assert.deepEqual(again, r);
  // An endpoint gone: its backend ID is released, the others keep theirs.
  const fewer = resolveServices({ services: [web], slices: [], endpoints: endpoints.filter((e) => e.name !== 'web-1'), nodeAddresses: [], frontendIds: fIds, backendIds: bIds });
  const kept = r.backends.filter((b) => !b.addr.endsWith('::2') && b.addr !== '10.200.0.2');
  assert.deepEqual(fewer.backends, kept);
});

test('slices: ready backends are active, serving+terminating ones terminating, others left out; named ports', () => {
  const api = svc({ metadata: { name: 'api', namespace: 'shop' }, spec: { clusterIP: '10.96.0.20', ports: [{ name: 'grpc', port: 9000, targetPort: 'grpc', protocol: 'TCP' }] } });
  const s = slice({
    metadata: { name: 'api-1', namespace: 'shop', labels: { 'kubernetes.io/service-name': 'api' } },
    addressType: 'IPv4',
    ports: [{ name: 'grpc', port: 9443, protocol: 'TCP' }],
    endpoints: [
      { addresses: ['10.1.0.1'], conditions: { ready: true } },
      { addresses: ['10.1.0.2'], conditions: { ready: false, serving: true, terminating: true } },
      { addresses: ['10.1.0.3'], conditions: { ready: false, serving: false, terminating: true } },
      { addresses: ['10.1.0.4'], conditions: { ready: false } },
    ],
  });
  const r = resolveServices({ services: [api], slices: [s], endpoints, nodeAddresses: [], frontendIds: new IdTable(), backendIds: new IdTable() });
  const f = r.frontends[0]!;
  const addr = (id: number): string => r.backends.find((b) => b.id === id)!.addr;
  assert.deepEqual(f.active.map(addr), ['10.1.0.1']);
  assert.deepEqual(f.terminating.map(addr), ['10.1.0.2']);
  assert.ok(r.backends.every((b) => b.port === 9443));
  assert.equal(r.backends.find((b) => b.addr === '10.1.0.2')?.terminating, true);
});

test('NodePort frontends on every node address of the service families; headless services get none', () => {
  const np = svc({ metadata: { name: 'np', namespace: 'shop' }, spec: { type: 'NodePort', clusterIP: '10.96.0.30', selector: { app: 'db' }, externalTrafficPolicy: 'Local', ports: [{ port: 5432, nodePort: 30432 }] } });
  const headless = svc({ metadata: { name: 'h', namespace: 'shop' }, spec: { clusterIP: 'None', selector: { app: 'db' }, ports: [{ port: 1 }] } });
  const r = resolveServices({ services: [np, headless], slices: [], endpoints, nodeAddresses: ['192.168.1.10', 'fd12::1'], frontendIds: new IdTable(), backendIds: new IdTable() });
  assert.deepEqual(r.frontends.map((f) => `${f.kind} ${f.addr}:${f.port} local=${f.local}`), ['ClusterIP 10.96.0.30:5432 local=false', 'NodePort 192.168.1.10:30432 local=true']);
  assert.equal(new Set(r.frontends.map((f) => f.id)).size, 2);
});

test('IdTable: numbers stable while in use, released ones reused', () => {
  const t = new IdTable({ a: 1, c: 3 });
  assert.equal(t.id('b'), 2);
  assert.equal(t.id('d'), 4);
  assert.equal(t.id('a'), 1);
  t.retain(new Set(['c', 'd']));
  assert.ok([1, 2].includes(t.id('e')));
  assert.equal(new Set([t.id('c'), t.id('d'), t.id('e')]).size, 3);
  assert.throws(() => { const small = new IdTable({}, 1); small.id('x'); small.id('y'); }, /no free ID/);
});
