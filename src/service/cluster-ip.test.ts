import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ClusterIpPool } from './cluster-ip.js';

test('allocates the lowest free address per family and knows its ranges', () => {
  const pool = new ClusterIpPool(['10.96.0.0/30', 'fd00:96::/126']);
  assert.equal(pool.allocate(4, new Set()), '10.96.0.1');
  assert.equal(pool.allocate(4, new Set(['10.96.0.1'])), '10.96.0.2');
  assert.throws(() => pool.allocate(4, new Set(['10.96.0.1', '10.96.0.2'])), /10\.96\.0\.0\/30 has no free address left/);
  assert.equal(pool.allocate(6, new Set(['fd00:96::1'])), 'fd00:96::2');
  assert.ok(pool.contains('10.96.0.3'));
  assert.ok(!pool.contains('10.97.0.1'));
  assert.ok(!pool.contains('fd00:97::1'));
  assert.throws(() => new ClusterIpPool(['10.96.0.0/16']).allocate(6, new Set()), /no IPv6 service CIDR/);
});
