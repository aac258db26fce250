import { test } from 'node:test';
import assert from 'node:assert/strict';
import { watchAddresses } from './address-watch.js';

test('watchAddresses: reports a changed set once, ignores order and duplicates, survives a failing read', () => {
  let current: string[] = ['10.0.0.1', 'fd00::1'];
  let fail = false;
  const changes: string[][] = [];
  const errors: string[] = [];
  const w = watchAddresses({
    read: () => { if (fail) throw new Error('netlink down'); return current; },
    onChange: (a) => changes.push([...a]),
    onError: (e) => errors.push(e.message),
    intervalMs: 60_000,
  });
  try {
    assert.equal(w.check(), false, 'the baseline is no change');
    current = ['fd00::1', '10.0.0.1', '10.0.0.1'];
    assert.equal(w.check(), false, 'order and duplicates do not count');
    current = ['10.0.0.1', 'fd00::1', '192.0.2.7'];
    assert.equal(w.check(), true, 'an added address');
    assert.deepEqual(w.addresses(), ['10.0.0.1', '192.0.2.7', 'fd00::1'], 'the set seen, sorted');
    assert.equal(w.check(), false, 'reported once');
    fail = true;
    assert.equal(w.check(), false);
    assert.deepEqual(errors, ['netlink down']);
    fail = false;
    current = ['fd00::1'];
    assert.equal(w.check(), true, 'removed addresses');
    assert.deepEqual(changes, [['10.0.0.1', 'fd00::1', '192.0.2.7'], ['fd00::1']]);
  } finally {
    w.stop();
  }
});

test('watchAddresses: a change whose update failed is offered again', () => {
  let current = ['10.0.0.1'];
  let refuse = true;
  const applied: string[][] = [];
  const w = watchAddresses({
    read: () => current,
    onChange: (a) => { if (refuse) throw new Error('map write failed'); applied.push([...a]); },
    onError: () => undefined,
    intervalMs: 60_000,
  });
  try {
    current = ['10.0.0.1', '10.0.0.2'];
    assert.equal(w.check(), false, 'the update failed');
    assert.deepEqual(w.addresses(), ['10.0.0.1'], 'not taken as seen');
    refuse = false;
    assert.equal(w.check(), true, 'offered again');
    assert.deepEqual(applied, [['10.0.0.1', '10.0.0.2']]);
  } finally {
    w.stop();
  }
});
