import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PolicyRepository, PolicyRepositoryError } from './repository.js';
import { StateError } from '../agent/state-store.js';
import type { Policy, PolicyKind } from './types.js';

function tempState(t: { after: (fn: () => void) => void }): string {
  const dir = mkdtempSync(join(tmpdir(), 'waggle-policy-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  return join(dir, 'policies.json');
}

/** A minimal policy: allow ingress from `app=<from>` to `app=<name>`. */
function policy(kind: PolicyKind, name: string, namespace: string | undefined, from = 'client'): Policy {
  const subject = { requirements: [{ key: 'app', operator: 'In' as const, values: [name] }] };
  return {
    kind, name, ...(namespace === undefined ? {} : { namespace }),
    subjects: [subject],
    defaultDeny: { ingress: true, egress: false },
    rules: [{
      direction: 'ingress', action: 'allow', index: 0, ports: [], icmps: [],
      peers: [{ kind: 'endpoints', selector: { requirements: [{ key: 'app', operator: 'In', values: [from] }] } }],
    }],
    notEnforced: [],
    source: { kind, metadata: { name, namespace }, spec: { from } },
  };
}

const np = (name: string, from?: string) => policy('NetworkPolicy', name, 'default', from);
const cnp = (name: string, from?: string) => policy('CiliumNetworkPolicy', name, 'default', from);
const ccnp = (name: string, from?: string) => policy('CiliumClusterwideNetworkPolicy', name, undefined, from);

test('apply creates, configures and leaves unchanged, counting revisions', (t) => {
  const r = new PolicyRepository(tempState(t));
  assert.equal(r.revision, 0);
  assert.deepEqual(r.apply([np('a'), ccnp('b')]), { created: ['NetworkPolicy/default/a', 'CiliumClusterwideNetworkPolicy//b'], configured: [], unchanged: [] });
  assert.equal(r.revision, 1);
  assert.deepEqual(r.apply([np('a'), ccnp('b', 'other'), cnp('c')]), {
    created: ['CiliumNetworkPolicy/default/c'], configured: ['CiliumClusterwideNetworkPolicy//b'], unchanged: ['NetworkPolicy/default/a'],
  });
  assert.equal(r.revision, 2, 'one apply, one revision');
  assert.deepEqual(r.apply([np('a')]), { created: [], configured: [], unchanged: ['NetworkPolicy/default/a'] });
  assert.equal(r.revision, 2, 'nothing changed, no new revision');
  assert.deepEqual(r.get('CiliumClusterwideNetworkPolicy', 'b')?.policy.source.spec, { from: 'other' });
  assert.deepEqual(r.list().map((p) => [p.policy.kind, p.policy.namespace, p.policy.name]), [
    ['CiliumClusterwideNetworkPolicy', undefined, 'b'],
    ['CiliumNetworkPolicy', 'default', 'c'],
    ['NetworkPolicy', 'default', 'a'],
  ]);
});

test('numbers are stable and the lowest free one is given', (t) => {
  const r = new PolicyRepository(tempState(t));
  r.apply([np('a'), np('b'), np('c')]);
  assert.deepEqual(['a', 'b', 'c'].map((n) => r.get('NetworkPolicy', n, 'default')?.id), [1, 2, 3]);
  r.apply([np('b', 'changed')]);
  assert.equal(r.get('NetworkPolicy', 'b', 'default')?.id, 2, 'an update keeps its number');
  r.delete([{ kind: 'NetworkPolicy', namespace: 'default', name: 'a' }, { kind: 'NetworkPolicy', namespace: 'default', name: 'c' }]);
  r.apply([np('d'), np('e'), np('f')]);
  assert.deepEqual(['d', 'e', 'f'].map((n) => r.get('NetworkPolicy', n, 'default')?.id), [1, 3, 4]);
  assert.equal(r.byId(2)?.policy.name, 'b');
  assert.equal(r.byId(5), undefined);
});

test('policies, numbers and revision persist across instances', (t) => {
  const path = tempState(t);
  const a = new PolicyRepository(path);
  a.apply([np('a'), ccnp('b')]);
  a.apply([cnp('c')]);
  const given = cnp('c');
  const b = new PolicyRepository(path);
  assert.equal(b.revision, 2);
  assert.deepEqual(b.list(), a.list());
  assert.deepEqual(b.get('CiliumNetworkPolicy', 'c', 'default'), { id: 3, policy: given });
  assert.deepEqual(b.apply([cnp('c'), ccnp('b')]).unchanged, ['CiliumNetworkPolicy/default/c', 'CiliumClusterwideNetworkPolicy//b'], 'compared in JSON form (undefined fields dropped)');
  assert.equal(b.revision, 2);
  const reparsed = { ...cnp('c'), notEnforced: ['a newer parser notes something'] };
  assert.deepEqual(b.apply([reparsed]).unchanged, ['CiliumNetworkPolicy/default/c'], 'same source');
  assert.deepEqual(b.get('CiliumNetworkPolicy', 'c', 'default')?.policy.notEnforced, ['a newer parser notes something'], 'the new parse is kept');
  assert.equal(b.revision, 3);
  const doc = JSON.parse(readFileSync(path, 'utf8')) as { version: number; revision: number; policies: unknown[] };
  assert.equal(doc.version, 1);
  assert.equal(doc.policies.length, 3);
});

test('a duplicate or invalid policy in one apply rejects the whole apply', (t) => {
  const path = tempState(t);
  const r = new PolicyRepository(path);
  r.apply([np('a')]);
  assert.throws(() => r.apply([np('a', 'x'), cnp('new'), np('a', 'y')]),
    (e: unknown) => e instanceof PolicyRepositoryError && e.code === 'DUPLICATE_POLICY' && /NetworkPolicy default\/a is given more than once/.test(e.message));
  assert.throws(() => r.apply([cnp('new'), policy('NetworkPolicy', 'x', undefined)]), /NetworkPolicy x needs a namespace/);
  assert.throws(() => r.apply([cnp('new'), policy('CiliumClusterwideNetworkPolicy', 'x', 'default')]), /cluster-wide and cannot have a namespace/);
  assert.throws(() => r.apply([cnp('new'), { ...np('z'), rules: undefined } as unknown as Policy]), (e: unknown) => e instanceof PolicyRepositoryError && e.code === 'INVALID_POLICY' && /invalid at rules/.test(e.message));
  assert.equal(r.revision, 1);
  assert.deepEqual(r.list().map((p) => p.policy.name), ['a']);
  assert.deepEqual(r.get('NetworkPolicy', 'a', 'default')?.policy.source.spec, { from: 'client' });
  assert.equal(new PolicyRepository(path).revision, 1, 'nothing written');
});

test('delete reports what was deleted and what was not found', (t) => {
  const path = tempState(t);
  const r = new PolicyRepository(path);
  r.apply([np('a'), cnp('a'), ccnp('c')]);
  assert.deepEqual(r.delete([
    { kind: 'NetworkPolicy', namespace: 'default', name: 'a' },
    { kind: 'NetworkPolicy', namespace: 'other', name: 'a' },
    { kind: 'CiliumClusterwideNetworkPolicy', namespace: 'ignored', name: 'c' },
  ]), { deleted: ['NetworkPolicy/default/a', 'CiliumClusterwideNetworkPolicy//c'], notFound: ['NetworkPolicy/other/a'] });
  assert.equal(r.revision, 2);
  assert.deepEqual(r.delete([{ kind: 'NetworkPolicy', namespace: 'default', name: 'a' }]), { deleted: [], notFound: ['NetworkPolicy/default/a'] });
  assert.equal(r.revision, 2, 'nothing deleted, no new revision');
  assert.deepEqual(new PolicyRepository(path).list().map((p) => p.policy.kind), ['CiliumNetworkPolicy']);
});

test('get without a kind finds the one policy with the name, or asks for the kind', (t) => {
  const r = new PolicyRepository(tempState(t));
  r.apply([np('web'), cnp('web'), cnp('api'), ccnp('global')]);
  assert.equal(r.get(undefined, 'api', 'default')?.policy.kind, 'CiliumNetworkPolicy');
  assert.equal(r.get(undefined, 'global')?.policy.kind, 'CiliumClusterwideNetworkPolicy');
  assert.equal(r.get(undefined, 'global', 'default')?.policy.kind, 'CiliumClusterwideNetworkPolicy', 'cluster-wide policies are found from any namespace');
  assert.equal(r.get(undefined, 'api', 'other'), undefined);
  assert.equal(r.get(undefined, 'missing', 'default'), undefined);
  assert.throws(() => r.get(undefined, 'web', 'default'), (e: unknown) => e instanceof PolicyRepositoryError && e.code === 'AMBIGUOUS_POLICY'
    && /several policies are named web: NetworkPolicy default\/web, CiliumNetworkPolicy default\/web; give the kind/.test(e.message));
  assert.equal(r.get('NetworkPolicy', 'web', 'default')?.id, 1);
});

test('a corrupt state file is refused, naming the field', (t) => {
  const path = tempState(t);
  const r = new PolicyRepository(path);
  r.apply([np('a'), np('b')]);
  const doc = JSON.parse(readFileSync(path, 'utf8')) as { policies: { id: number; policy: Record<string, unknown> }[] };
  const [first, second] = doc.policies as [typeof doc.policies[0], typeof doc.policies[0]];
  writeFileSync(path, JSON.stringify({ ...doc, policies: [first, { ...second, id: first.id }] }));
  assert.throws(() => new PolicyRepository(path), (e: unknown) => e instanceof StateError && /policies\.1\.id: policy number 1 appears twice/.test(e.message));
  writeFileSync(path, JSON.stringify({ ...doc, policies: [first, { ...second, policy: { ...second.policy, defaultDeny: undefined } }] }));
  assert.throws(() => new PolicyRepository(path), (e: unknown) => e instanceof StateError && /policies\.1\.policy\.defaultDeny/.test(e.message));
  writeFileSync(path, JSON.stringify({ ...doc, revision: -1 }));
  assert.throws(() => new PolicyRepository(path), StateError);
});
