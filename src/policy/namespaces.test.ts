import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { NamespaceError, NamespaceStore, namespaceNameProblem } from './namespaces.js';
import { StateError } from '../agent/state-store.js';

function tempState(t: { after: (fn: () => void) => void }): string {
  const dir = mkdtempSync(join(tmpdir(), 'waggle-ns-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  return join(dir, 'namespaces.json');
}

const isCode = (code: string, re: RegExp) => (e: unknown) => e instanceof NamespaceError && e.code === code && re.test(e.message);

test('a never-labelled namespace exists with just its name label', (t) => {
  const s = new NamespaceStore(tempState(t));
  assert.deepEqual(s.get('default'), { name: 'default', labels: { 'kubernetes.io/metadata.name': 'default' } });
  assert.deepEqual(s.labelsOf('kube-system'), { 'kubernetes.io/metadata.name': 'kube-system' });
  assert.deepEqual(s.list(), []);
  assert.throws(() => s.get('Bad_Name'), isCode('INVALID_NAMESPACE', /namespace name "Bad_Name" must be/));
  assert.equal(namespaceNameProblem('a'.repeat(63)), undefined);
  assert.match(namespaceNameProblem('a'.repeat(64)) ?? '', /1-63 characters/);
  assert.match(namespaceNameProblem('-a') ?? '', /starting and ending/);
});

test('label sets, overwrites only when asked, removes, and persists', (t) => {
  const path = tempState(t);
  const s = new NamespaceStore(path);
  assert.deepEqual(s.label('prod', { team: 'a', env: 'prod' }), {
    name: 'prod', labels: { env: 'prod', 'kubernetes.io/metadata.name': 'prod', team: 'a' },
  });
  assert.throws(() => s.label('prod', { team: 'b', tier: 'x' }), isCode('LABEL_EXISTS', /namespace prod already has label team=a; overwrite to change it to "b"/));
  assert.equal(s.labelsOf('prod').tier, undefined, 'nothing changed');
  s.label('prod', { team: 'a' }); // same value: fine without overwrite
  s.label('prod', { team: 'b', tier: 'x' }, { overwrite: true });
  assert.equal(s.labelsOf('prod').team, 'b');
  s.label('prod', {}, { remove: ['env', 'missing'] });
  assert.deepEqual(s.labelsOf('prod'), { 'kubernetes.io/metadata.name': 'prod', team: 'b', tier: 'x' });
  assert.deepEqual(new NamespaceStore(path).get('prod'), s.get('prod'), 'persisted');
  const doc = JSON.parse(readFileSync(path, 'utf8')) as { version: number; namespaces: Record<string, unknown> };
  assert.deepEqual(doc, { version: 1, namespaces: { prod: { team: 'b', tier: 'x' } } });
});

test('label validates everything before changing anything', (t) => {
  const s = new NamespaceStore(tempState(t));
  s.label('dev', { a: '1' });
  assert.throws(() => s.label('dev', { b: '2', 'bad key': 'x' }), isCode('INVALID_LABEL', /label key "bad key"/));
  assert.throws(() => s.label('dev', { b: '2', c: 'bad value!' }), isCode('INVALID_LABEL', /label c: value "bad value!"/));
  assert.throws(() => s.label('dev', { b: '2', 'kubernetes.io/metadata.name': 'other' }), isCode('IMMUTABLE_LABEL', /cannot be changed/));
  assert.throws(() => s.label('dev', { b: '2' }, { remove: ['kubernetes.io/metadata.name'] }), isCode('IMMUTABLE_LABEL', /cannot be removed/));
  assert.throws(() => s.label('dev', { b: '2' }, { remove: ['b'] }), /both set and removed/);
  assert.throws(() => s.label('Dev', { b: '2' }), isCode('INVALID_NAMESPACE', /"Dev"/));
  assert.deepEqual(s.labelsOf('dev'), { a: '1', 'kubernetes.io/metadata.name': 'dev' });
  s.label('dev', { 'kubernetes.io/metadata.name': 'dev', constructor: 'x' });
  assert.deepEqual(s.labelsOf('dev'), { a: '1', constructor: 'x', 'kubernetes.io/metadata.name': 'dev' });
});

test('list gives labelled namespaces and the extra names, sorted', (t) => {
  const s = new NamespaceStore(tempState(t));
  s.label('zeta', { x: '1' });
  s.label('empty', {}); // nothing to set: not stored
  s.replace('alpha', {});
  assert.deepEqual(s.list(['default', 'zeta']), [
    { name: 'alpha', labels: { 'kubernetes.io/metadata.name': 'alpha' } },
    { name: 'default', labels: { 'kubernetes.io/metadata.name': 'default' } },
    { name: 'zeta', labels: { 'kubernetes.io/metadata.name': 'zeta', x: '1' } },
  ]);
  assert.equal(s.delete('zeta'), true);
  assert.equal(s.delete('zeta'), false);
  assert.deepEqual(s.list().map((n) => n.name), ['alpha']);
});

test('replace sets the whole label set and forces the name label', (t) => {
  const path = tempState(t);
  const s = new NamespaceStore(path);
  assert.equal(s.replace('web', { team: 'a', env: 'dev' }), 'created');
  assert.equal(s.replace('web', { env: 'dev', team: 'a', 'kubernetes.io/metadata.name': 'web' }), 'unchanged');
  assert.equal(s.replace('web', { team: 'b' }), 'configured');
  assert.deepEqual(s.labelsOf('web'), { 'kubernetes.io/metadata.name': 'web', team: 'b' });
  assert.throws(() => s.replace('web', { team: 'c', 'kubernetes.io/metadata.name': 'api' }), isCode('IMMUTABLE_LABEL', /must be "web", not "api"/));
  assert.throws(() => s.replace('web', { team: 'c', 'x/': 'y' }), isCode('INVALID_LABEL', /label key "x\/"/));
  assert.deepEqual(new NamespaceStore(path).labelsOf('web'), { 'kubernetes.io/metadata.name': 'web', team: 'b' });
});

test('a corrupt state file is refused', (t) => {
  const path = tempState(t);
  writeFileSync(path, JSON.stringify({ version: 1, namespaces: { Bad: {} } }));
  assert.throws(() => new NamespaceStore(path), (e: unknown) => e instanceof StateError && /namespaces\.Bad: namespace name "Bad"/.test(e.message));
  writeFileSync(path, JSON.stringify({ version: 1, namespaces: { ok: { 'bad key': 'x' } } }));
  assert.throws(() => new NamespaceStore(path), StateError);
  writeFileSync(path, JSON.stringify({ version: 1 }));
  assert.throws(() => new NamespaceStore(path), StateError);
});
