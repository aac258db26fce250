import { test } from 'node:test';
import assert from 'node:assert/strict';
import { identityLabelView, matchesRequirement, matchesSelector, selectorKey } from './selector.js';
import { NAMESPACE_LABEL, NAMESPACE_LABELS_PREFIX, type LabelSelector, type SelectorOperator } from './types.js';

const labels = { app: 'web', tier: 'front', empty: '' };

function one(key: string, operator: SelectorOperator, values?: string[]): LabelSelector {
  return { requirements: [values ? { key, operator, values } : { key, operator }] };
}

test('In matches a present key with a listed value only', () => {
  assert.equal(matchesSelector(one('app', 'In', ['web']), labels), true);
  assert.equal(matchesSelector(one('app', 'In', ['db', 'web']), labels), true);
  assert.equal(matchesSelector(one('app', 'In', ['db']), labels), false);
  assert.equal(matchesSelector(one('missing', 'In', ['web']), labels), false);
  assert.equal(matchesSelector(one('empty', 'In', ['']), labels), true);
  assert.equal(matchesSelector(one('app', 'In', []), labels), false);
});

test('NotIn matches when the key is absent or its value is not listed', () => {
  assert.equal(matchesSelector(one('app', 'NotIn', ['db']), labels), true);
  assert.equal(matchesSelector(one('app', 'NotIn', ['web']), labels), false);
  assert.equal(matchesSelector(one('missing', 'NotIn', ['web']), labels), true);
});

test('Exists and DoesNotExist look at the key only', () => {
  assert.equal(matchesSelector(one('tier', 'Exists'), labels), true);
  assert.equal(matchesSelector(one('empty', 'Exists'), labels), true);
  assert.equal(matchesSelector(one('missing', 'Exists'), labels), false);
  assert.equal(matchesSelector(one('missing', 'DoesNotExist'), labels), true);
  assert.equal(matchesSelector(one('tier', 'DoesNotExist'), labels), false);
});

test('requirements are ANDed; an empty selector matches everything', () => {
  const sel: LabelSelector = {
    requirements: [
      { key: 'app', operator: 'In', values: ['web'] },
      { key: 'tier', operator: 'NotIn', values: ['back'] },
    ],
  };
  assert.equal(matchesSelector(sel, labels), true);
  assert.equal(matchesSelector(sel, { app: 'web', tier: 'back' }), false);
  assert.equal(matchesSelector(sel, { tier: 'front' }), false);
  assert.equal(matchesSelector({ requirements: [] }, {}), true);
  assert.equal(matchesSelector({ requirements: [] }, labels), true);
});

test('inherited object properties are not labels; unknown operators fail closed', () => {
  assert.equal(matchesSelector(one('toString', 'Exists'), {}), false);
  assert.equal(matchesSelector(one('constructor', 'DoesNotExist'), {}), true);
  assert.equal(matchesRequirement({ key: 'app', operator: 'Bogus' as SelectorOperator, values: ['web'] }, labels), false);
});

test('identityLabelView adds the namespace and its labels', () => {
  const view = identityLabelView({ app: 'web' }, 'prod', { team: 'a', 'kubernetes.io/metadata.name': 'prod' });
  assert.deepEqual(view, {
    app: 'web',
    [NAMESPACE_LABEL]: 'prod',
    [`${NAMESPACE_LABELS_PREFIX}team`]: 'a',
    [`${NAMESPACE_LABELS_PREFIX}kubernetes.io/metadata.name`]: 'prod',
  });
  assert.equal(matchesSelector(one(`${NAMESPACE_LABELS_PREFIX}team`, 'In', ['a']), view), true);
  assert.equal(matchesSelector(one(NAMESPACE_LABEL, 'In', ['default']), view), false);
});

test('identityLabelView drops endpoint labels that would spoof the namespace', () => {
  const view = identityLabelView({ app: 'x', [NAMESPACE_LABEL]: 'kube-system', [`${NAMESPACE_LABELS_PREFIX}team`]: 'admin' }, 'dev', {});
  assert.deepEqual(view, { app: 'x', [NAMESPACE_LABEL]: 'dev' });
});

test('selectorKey tells different selectors apart', () => {
  assert.equal(selectorKey(one('app', 'In', ['web'])), selectorKey(one('app', 'In', ['web'])));
  assert.notEqual(selectorKey(one('app', 'In', ['web'])), selectorKey(one('app', 'NotIn', ['web'])));
  assert.notEqual(selectorKey(one('app', 'In', ['web'])), selectorKey(one('app', 'In', ['db'])));
  assert.notEqual(selectorKey(one('app', 'Exists')), selectorKey({ requirements: [] }));
});
