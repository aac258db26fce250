import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { IdentityAllocator, IdentityError } from './allocator.js';
import { StateError } from '../agent/state-store.js';
import { FIRST_CIDR_IDENTITY, FIRST_ENDPOINT_IDENTITY } from '../policy/types.js';

function tempState(t: { after: (fn: () => void) => void }): string {
  const dir = mkdtempSync(join(tmpdir(), 'waggle-identity-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  return join(dir, 'identities.json');
}

test('reserved identities are always there, with Cilium numbers and labels', (t) => {
  const a = new IdentityAllocator(tempState(t));
  assert.deepEqual(a.list().map((r) => [r.id, r.kind, r.labels, r.references]), [
    [1, 'reserved', ['reserved:host'], 0],
    [2, 'reserved', ['reserved:world'], 0],
    [3, 'reserved', ['reserved:unmanaged'], 0],
    [4, 'reserved', ['reserved:health'], 0],
    [5, 'reserved', ['reserved:init'], 0],
    [6, 'reserved', ['reserved:remote-node'], 0],
    [7, 'reserved', ['reserved:kube-apiserver'], 0],
    [8, 'reserved', ['reserved:ingress'], 0],
  ]);
  assert.equal(a.get(0), undefined);
  assert.equal(a.get(9), undefined);
});

test('endpoints with the same labels in the same namespace share one identity', (t) => {
  const a = new IdentityAllocator(tempState(t));
  const web = a.acquire({ app: 'web', tier: 'front' }, 'default');
  assert.equal(web, FIRST_ENDPOINT_IDENTITY);
  assert.equal(a.acquire({ tier: 'front', app: 'web' }, 'default'), web, 'label order does not matter');
  assert.notEqual(a.acquire({ app: 'web', tier: 'front' }, 'prod'), web, 'another namespace is another identity');
  assert.notEqual(a.acquire({ app: 'web' }, 'default'), web);
  assert.equal(a.acquire({}, 'default'), FIRST_ENDPOINT_IDENTITY + 3);
  assert.deepEqual(a.get(web), {
    id: web, kind: 'endpoint', namespace: 'default', references: 2,
    labels: ['k8s:app=web', 'k8s:io.kubernetes.pod.namespace=default', 'k8s:tier=front'],
  });
  assert.deepEqual(a.labelsOf(web), { labels: { app: 'web', tier: 'front' }, namespace: 'default' });
  assert.equal(a.labelsOf(1), undefined);
  assert.throws(() => a.acquire({ 'bad key!': 'x' }, 'default'), (e: unknown) => e instanceof IdentityError && /label key "bad key!"/.test(e.message));
  assert.throws(() => a.acquire({ app: 'web' }, ''), /needs a namespace/);
});

test('release frees an identity with its last user; freed numbers are reused only after wrapping', (t) => {
  const a = new IdentityAllocator(tempState(t), { firstEndpoint: 256, lastEndpoint: 259 });
  const x = a.acquire({ app: 'x' }, 'ns');
  a.acquire({ app: 'x' }, 'ns');
  assert.equal(a.release(x), false, 'still used');
  assert.equal(a.get(x)?.references, 1);
  assert.equal(a.release(x), true, 'freed');
  assert.equal(a.get(x), undefined);
  assert.equal(a.release(x), false, 'unknown numbers are ignored');
  assert.equal(a.release(1), false, 'reserved identities are not reference counted');
  assert.equal(a.acquire({ app: 'x' }, 'ns'), 257, 'a freed number is not reused while never-used ones remain');
  assert.equal(a.acquire({ app: 'y' }, 'ns'), 258);
  assert.equal(a.acquire({ app: 'z' }, 'ns'), 259);
  assert.equal(a.acquire({ app: 'w' }, 'ns'), 256, 'wraps around to reuse freed numbers');
  assert.throws(() => a.acquire({ app: 'v' }, 'ns'), (e: unknown) => e instanceof IdentityError && e.code === 'IDENTITY_EXHAUSTED' && /all 4 endpoint identities \(256\.\.259\) are in use/.test(e.message));
  assert.equal(a.acquire({ app: 'y' }, 'ns'), 258, 'existing identities can still be shared when the range is full');
  a.release(257);
  assert.equal(a.acquire({ app: 'v' }, 'ns'), 257);
});

test('numbers and label sets are stable across restarts; restore rebuilds reference counts and frees unused', (t) => {
  const path = tempState(t);
  const a = new IdentityAllocator(path);
  const web = a.acquire({ app: 'web' }, 'default');
  const db = a.acquire({ app: 'db' }, 'default');
  const old = a.acquire({ app: 'old' }, 'default');
  a.acquire({ app: 'web' }, 'default');

  const b = new IdentityAllocator(path);
  assert.deepEqual(b.labelsOf(web), { labels: { app: 'web' }, namespace: 'default' });
  const ids = b.restore([
    { labels: { app: 'web' }, namespace: 'default' },
    { labels: { app: 'web' }, namespace: 'default' },
    { labels: { app: 'web' }, namespace: 'default' },
    { labels: { app: 'db' }, namespace: 'default' },
    { labels: { app: 'new' }, namespace: 'default' },
  ]);
  assert.deepEqual(ids, [web, web, web, db, old + 1], 'known label sets keep their numbers; new ones get never-used numbers');
  assert.equal(b.get(web)?.references, 3);
  assert.equal(b.get(db)?.references, 1);
  assert.equal(b.get(old), undefined, 'no endpoint uses it any more');
  assert.equal(b.release(db), true);

  const c = new IdentityAllocator(path);
  assert.deepEqual(c.list().filter((r) => r.kind === 'endpoint').map((r) => [r.id, r.labels]), [
    [web, ['k8s:app=web', 'k8s:io.kubernetes.pod.namespace=default']],
    [old + 1, ['k8s:app=new', 'k8s:io.kubernetes.pod.namespace=default']],
  ]);
  assert.equal(c.acquire({ app: 'another' }, 'default'), old + 2, 'the allocation cursor is persisted too');
});

test('CIDR identities follow the synced set and keep their numbers', (t) => {
  const path = tempState(t);
  const a = new IdentityAllocator(path);
  assert.deepEqual(a.syncCidrs(['10.0.0.0/8', 'fd00::/64', '10.0.0.0/8']), { added: ['10.0.0.0/8', 'fd00::/64'], removed: [] });
  const ten = a.cidrIdentity('10.0.0.0/8') as number;
  const six = a.cidrIdentity('fd00::/64') as number;
  assert.deepEqual([ten, six].sort(), [FIRST_CIDR_IDENTITY, FIRST_CIDR_IDENTITY + 1]);
  assert.deepEqual(a.get(ten), { id: ten, kind: 'cidr', labels: ['cidr:10.0.0.0/8', 'reserved:world'], cidr: '10.0.0.0/8', references: 0 });
  assert.deepEqual(a.syncCidrs(['fd00::/64', '10.0.0.0/8']), { added: [], removed: [] });

  assert.deepEqual(a.syncCidrs(['fd00::/64', '192.168.0.0/16']), { added: ['192.168.0.0/16'], removed: ['10.0.0.0/8'] });
  assert.equal(a.cidrIdentity('fd00::/64'), six, 'stable while it stays in the set');
  assert.equal(a.cidrIdentity('10.0.0.0/8'), undefined);
  assert.equal(a.get(ten), undefined);
  assert.equal(a.cidrIdentity('192.168.0.0/16'), FIRST_CIDR_IDENTITY + 2, 'the freed number is not reused at once');

  const b = new IdentityAllocator(path);
  assert.equal(b.cidrIdentity('fd00::/64'), six);
  assert.equal(b.cidrIdentity('192.168.0.0/16'), FIRST_CIDR_IDENTITY + 2);
  assert.deepEqual(b.list().filter((r) => r.kind === 'cidr').map((r) => r.id), [six, FIRST_CIDR_IDENTITY + 2].sort((x, y) => x - y));
  assert.deepEqual(b.syncCidrs([]), { added: [], removed: ['192.168.0.0/16', 'fd00::/64'] });
  assert.deepEqual(new IdentityAllocator(path).list().filter((r) => r.kind === 'cidr'), []);
});

test('CIDR exhaustion is all or nothing', (t) => {
  const a = new IdentityAllocator(tempState(t), { firstCidr: 100, lastCidr: 101 });
  a.syncCidrs(['10.0.0.0/8']);
  assert.throws(() => a.syncCidrs(['10.0.0.0/8', '11.0.0.0/8', '12.0.0.0/8']), (e: unknown) => e instanceof IdentityError && e.code === 'IDENTITY_EXHAUSTED' && /all 2 CIDR identities/.test(e.message));
  assert.deepEqual(a.list().filter((r) => r.kind === 'cidr').map((r) => r.cidr), ['10.0.0.0/8'], 'nothing changed');
  assert.deepEqual(a.syncCidrs(['11.0.0.0/8', '12.0.0.0/8']), { added: ['11.0.0.0/8', '12.0.0.0/8'], removed: ['10.0.0.0/8'] });
});

test('the state file is persisted with a version and validated on load', (t) => {
  const path = tempState(t);
  const a = new IdentityAllocator(path);
  a.acquire({ app: 'web' }, 'default');
  const doc = JSON.parse(readFileSync(path, 'utf8')) as { version: number; endpoints: unknown[] };
  assert.equal(doc.version, 1);
  assert.equal(doc.endpoints.length, 1);
  writeFileSync(path, JSON.stringify({ ...doc, endpoints: [{ id: 256, namespace: 'a', labels: {} }, { id: 256, namespace: 'b', labels: {} }] }));
  assert.throws(() => new IdentityAllocator(path), (e: unknown) => e instanceof StateError && /endpoints\.1\.id: identity 256 appears twice/.test(e.message));
  writeFileSync(path, '{"version": 2}');
  assert.throws(() => new IdentityAllocator(path), StateError);
  writeFileSync(path, '{not json');
  assert.throws(() => new IdentityAllocator(path), StateError);
});
