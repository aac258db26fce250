import { test } from 'node:test';
import assert from 'node:assert/strict';
import { hubbleLabels, parseLabels, validateLabels } from './labels.js';

test('parses Kubernetes-style labels', () => {
  assert.deepEqual(parseLabels('app=web,tier=front'), { app: 'web', tier: 'front' });
  assert.deepEqual(parseLabels('example.com/team=net,empty='), { 'example.com/team': 'net', empty: '' });
  assert.deepEqual(parseLabels(''), {});
});

test('names the malformed label', () => {
  assert.throws(() => parseLabels('app'), /malformed label "app": expected key=value/);
  assert.throws(() => parseLabels('=web'), /malformed label "=web"/);
  assert.throws(() => parseLabels('app=we b'), /label app: value "we b" must be/);
  assert.throws(() => parseLabels('-app=web'), /label key "-app" must be/);
  assert.throws(() => parseLabels('Bad_Prefix/app=x'), /invalid prefix/);
  assert.throws(() => parseLabels('a=1,a=2'), /label a is given twice/);
  assert.throws(() => parseLabels(`k=${'x'.repeat(64)}`), /at most 63/);
  assert.throws(() => validateLabels({ app: 3 }), /value must be a string/);
});

test('Hubble label strings', () => {
  assert.deepEqual(hubbleLabels({ app: 'web' }, 'default'), ['k8s:app=web', 'k8s:io.kubernetes.pod.namespace=default']);
});
