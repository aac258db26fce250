import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ManifestError } from '../k8s/manifest.js';
import { parsePolicyDocuments } from '../policy/parse.js';
import { ServiceManager } from './manager.js';
import type { ResolvedState, ServiceEndpoint } from './resolve.js';

const dirs: string[] = [];
after(() => { for (const d of dirs) rmSync(d, { recursive: true, force: true }); });

function setup(endpoints: ServiceEndpoint[] = []): { mgr: (dir?: string) => ServiceManager; written: ResolvedState[]; dir: string } {
  const dir = mkdtempSync(join(tmpdir(), 'waggle-svc-'));
  dirs.push(dir);
  const written: ResolvedState[] = [];
  const mgr = (d = dir): ServiceManager => new ServiceManager({
    stateDir: d, serviceCidrs: ['10.96.0.0/24', 'fd00:96::/120'], nodePortRange: [30000, 30002],
    endpoints: () => endpoints, nodeAddresses: () => ['192.168.7.1'], datapath: { write: (s) => { written.push(s); } },
  });
  return { mgr, written, dir };
}

function docs(yaml: string): ReturnType<typeof parsePolicyDocuments> {
  return parsePolicyDocuments(yaml, 'test.yaml');
}

const web = (extra = ''): string => `apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: 8080}]
${extra}`;

test('apply allocates ClusterIPs and node ports, keeps them on re-apply, persists them', () => {
  const eps: ServiceEndpoint[] = [{ name: 'w1', namespace: 'shop', labels: { app: 'web' }, ipv4: '10.200.0.2', ipv6: 'fd00:200::2' }];
  const { mgr, written, dir } = setup(eps);
  const m = mgr();
  const d = docs(`${web()}---
apiVersion: v1
kind: Service
metadata: {name: np, namespace: shop}
spec:
  type: NodePort
  ipFamilyPolicy: PreferDualStack
  selector: {app: web}
  ports: [{port: 443, targetPort: 8443}]
`);
  const plan = m.prepare({ services: d.services });
  assert.deepEqual(plan.created, ['Service/shop/web', 'Service/shop/np']);
  m.commit(plan);
  assert.deepEqual(m.get('shop', 'web')?.clusterIPs, ['10.96.0.1']);
  assert.deepEqual(m.get('shop', 'np')?.clusterIPs, ['10.96.0.2', 'fd00:96::1']);
  assert.equal(m.get('shop', 'np')?.ports[0]?.nodePort, 30000);
  const state = written.at(-1)!;
  assert.deepEqual(state.frontends.map((f) => `${f.kind} ${f.addr}:${f.port} ${f.active.length}`), [
    'ClusterIP 10.96.0.1:80 1', 'ClusterIP 10.96.0.2:443 1', 'ClusterIP fd00:96::1:443 1', 'NodePort 192.168.7.1:30000 1',
  ]);
  // Re-applying the same YAML changes nothing; a new manager reads the same state.
  const again = m.prepare({ services: docs(web()).services });
  assert.deepEqual([again.created, again.updated, again.unchanged], [[], [], ['Service/shop/web']]);
  const reopened = mgr(dir);
  assert.deepEqual(reopened.list(), m.list());
  assert.deepEqual(reopened.resync(), state);
});

test('conflicts and exhausted pools are refused with nothing applied', () => {
  const { mgr, written } = setup();
  const m = mgr();
  m.commit(m.prepare({ services: docs(web('  clusterIP: 10.96.0.9\n')).services }));
  const n = written.length;
  const clash = docs(`apiVersion: v1
kind: Service
metadata: {name: other, namespace: shop}
spec:
  clusterIP: 10.96.0.9
  ports: [{port: 80}]
`);
  assert.throws(() => m.prepare({ services: clash.services }), (e: unknown) => e instanceof ManifestError && /10\.96\.0\.9/.test(e.message));
  assert.throws(() => m.prepare({ services: docs(web('  clusterIP: 10.96.0.10\n')).services }), /may not change/);
  const many = [1, 2, 3, 4].map((i) => `apiVersion: v1
kind: Service
metadata: {name: np${i}, namespace: shop}
spec:
  type: NodePort
  ports: [{port: 80}]
`).join('---\n');
  assert.throws(() => m.prepare({ services: docs(many).services }), /no free node port left in 30000-30002/);
  assert.equal(written.length, n, 'nothing written');
  assert.deepEqual(m.list().map((s) => s.name), ['web']);
});

test('delete, and a failed datapath write keeps the old state', () => {
  const { mgr } = setup();
  const m = mgr();
  m.commit(m.prepare({ services: docs(web()).services }));
  const plan = m.prepare({ deletes: [{ kind: 'Service', namespace: 'shop', name: 'web' }, { kind: 'Service', namespace: 'shop', name: 'nope' }] });
  assert.deepEqual(plan.deleted, ['Service/shop/web']);
  const failing = new ServiceManager({
    stateDir: mkdtempSync(join(tmpdir(), 'waggle-svc-')), serviceCidrs: ['10.96.0.0/24'], nodePortRange: [30000, 30002],
    endpoints: () => [], nodeAddresses: () => [], datapath: { write: () => { throw new Error('map full'); } },
  });
  assert.throws(() => failing.commit(failing.prepare({ services: docs(web()).services })), /map full/);
  assert.deepEqual(failing.list(), []);
  m.commit(plan);
  assert.deepEqual(m.list(), []);
});
