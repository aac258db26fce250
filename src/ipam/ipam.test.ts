import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Ipam, IpamError } from './ipam.js';
import { parseCidr, formatAddress, parseAddress } from './cidr.js';

test('CIDR parsing names what is wrong', () => {
  assert.equal(parseCidr('10.200.0.0/16').text, '10.200.0.0/16');
  assert.equal(parseCidr('fd00:200::/64').text, 'fd00:200::/64');
  assert.throws(() => parseCidr('10.200.0.1/16'), /has host bits set \(did you mean 10.200.0.0\/16\?\)/);
  assert.throws(() => parseCidr('10.200.0.0'), /not a CIDR/);
  assert.throws(() => parseCidr('10.200.0.0/33'), /too long for IPv4/);
  assert.throws(() => parseCidr('banana/8'), /not an IP address/);
  assert.equal(formatAddress(6, parseAddress('fd00::1').value), 'fd00::1');
});

test('allocates lowest free addresses, skipping network, router and broadcast', () => {
  const ipam = new Ipam(['10.200.0.0/29', 'fd00:200::/120']);
  assert.equal(ipam.routerAddress(4), '10.200.0.1');
  assert.equal(ipam.routerAddress(6), 'fd00:200::1');
  assert.deepEqual(ipam.allocate('a'), { 4: '10.200.0.2', 6: 'fd00:200::2' });
  assert.deepEqual(ipam.allocate('b'), { 4: '10.200.0.3', 6: 'fd00:200::3' });
  assert.equal(ipam.release('10.200.0.2'), true);
  assert.equal(ipam.release('10.200.0.2'), false);
  assert.deepEqual(ipam.usage().map((u) => [u.cidr, u.used, u.capacity]), [['10.200.0.0/29', 1, 5n], ['fd00:200::/120', 2, 254n]]);
});

test('never hands out an address twice, and refuses clearly when exhausted', () => {
  const ipam = new Ipam(['10.200.0.0/29']);
  const seen = new Set<string>();
  for (let i = 0; i < 5; i++) {
    const a = ipam.allocate(`ep${i}`)[4] as string;
    assert.ok(!seen.has(a), `${a} handed out twice`);
    seen.add(a);
  }
  assert.ok(!seen.has('10.200.0.7') && !seen.has('10.200.0.0') && !seen.has('10.200.0.1'));
  assert.throws(() => ipam.allocate('more'), (e: unknown) => e instanceof IpamError && e.code === 'IPAM_EXHAUSTED' && /10.200.0.0\/29 is exhausted: all 5 endpoint addresses are in use/.test(e.message));
  ipam.release('10.200.0.4');
  assert.equal(ipam.allocate('again')[4], '10.200.0.4');
});

test('dual-stack allocation is all or nothing', () => {
  const ipam = new Ipam(['10.200.0.0/30', 'fd00:200::/64']);
  ipam.allocate('a');
  assert.throws(() => ipam.allocate('b'), IpamError);
  assert.equal(ipam.usage().find((u) => u.family === 6)?.used, 1, 'the IPv6 address of the failed allocation was given back');
});

test('state round-trips through claim, and claims are checked', () => {
  const a = new Ipam(['10.200.0.0/24', 'fd00:200::/64']);
  a.allocate('x');
  a.allocate('y');
  const b = new Ipam(['10.200.0.0/24', 'fd00:200::/64']);
  for (const [addr, owner] of Object.entries(a.state().allocations)) b.claim(addr, owner);
  assert.deepEqual(b.state(), a.state());
  assert.deepEqual(b.allocate('z'), { 4: '10.200.0.4', 6: 'fd00:200::4' });
  assert.throws(() => b.claim('10.200.0.2', 'other'), /already allocated to x/);
  assert.throws(() => b.claim('10.201.0.2', 'other'), /not an endpoint address of the pod CIDRs/);
  assert.throws(() => b.claim('10.200.0.1', 'other'), /not an endpoint address/);
});

test('bad pool configuration is refused', () => {
  assert.throws(() => new Ipam([]), /no pod CIDR configured/);
  assert.throws(() => new Ipam(['10.0.0.0/24', '10.1.0.0/24']), /more than one IPv4 pod CIDR/);
  assert.throws(() => new Ipam(['10.0.0.0/31']), /too small/);
});
