import { test } from 'node:test';
import assert from 'node:assert/strict';
import { array, be16, bytes, formatIPv6, ipv4, ipv6, mac, parseIPv6, struct, u16, u32, u64, u64n, u8 } from './codec.js';
import { BpfUsageError } from './errors.js';

function roundTrip<T>(codec: { size: number; encode(v: T, b: Buffer, o: number): void; decode(b: Buffer, o: number): T }, v: T): T {
  const b = Buffer.alloc(codec.size + 3);
  codec.encode(v, b, 3);
  return codec.decode(b, 3);
}

test('integer codecs round-trip and reject out-of-range values', () => {
  assert.equal(roundTrip(u8, 255), 255);
  assert.equal(roundTrip(u16, 65535), 65535);
  assert.equal(roundTrip(u32, 0xffffffff), 0xffffffff);
  assert.equal(roundTrip(u64, 2n ** 64n - 1n), 2n ** 64n - 1n);
  assert.equal(roundTrip(u64n, 2 ** 53 - 1), 2 ** 53 - 1);
  assert.throws(() => u8.encode(256, Buffer.alloc(1), 0), BpfUsageError);
  assert.throws(() => u32.encode(-1, Buffer.alloc(4), 0), BpfUsageError);
  assert.throws(() => u16.encode(1.5, Buffer.alloc(2), 0), BpfUsageError);
});

test('be16 stores network byte order', () => {
  const b = Buffer.alloc(2);
  be16.encode(0x1f90, b, 0);
  assert.deepEqual([...b], [0x1f, 0x90]);
});

test('IPv4 and MAC codecs', () => {
  const b = Buffer.alloc(4);
  ipv4.encode('10.1.2.3', b, 0);
  assert.deepEqual([...b], [10, 1, 2, 3]);
  assert.equal(ipv4.decode(b, 0), '10.1.2.3');
  assert.throws(() => ipv4.encode('10.1.2', b, 0), /not an IPv4 address/);
  assert.throws(() => ipv4.encode('10.1.2.256', b, 0), /not an IPv4 address/);
  assert.equal(roundTrip(mac, '02:00:0a:ff:00:01'), '02:00:0a:ff:00:01');
  assert.throws(() => mac.encode('02:00:0a', Buffer.alloc(6), 0), /not a MAC address/);
});

test('IPv6 parsing and canonical formatting', () => {
  assert.equal(roundTrip(ipv6, '::1'), '::1');
  assert.equal(roundTrip(ipv6, 'fd00::1:0:0:2'), 'fd00::1:0:0:2');
  assert.equal(roundTrip(ipv6, '2001:db8:0:0:1:0:0:1'), '2001:db8::1:0:0:1');
  assert.equal(roundTrip(ipv6, '::ffff:10.0.0.1'), '::ffff:a00:1');
  assert.equal(roundTrip(ipv6, '1:2:3:4:5:6:7:8'), '1:2:3:4:5:6:7:8');
  assert.equal(formatIPv6(new Uint8Array(16)), '::');
  assert.throws(() => parseIPv6('1::2::3'), /not an IPv6 address/);
  assert.throws(() => parseIPv6('1:2:3'), /not an IPv6 address/);
  assert.throws(() => parseIPv6('12345::'), /not an IPv6 address/);
  assert.throws(() => parseIPv6('1:2:3:4:5:6:7::8'), /not an IPv6 address/);
});

test('struct codec places members at their offsets and zeroes padding', () => {
  interface S { a: number; b: bigint; tail: number[] }
  const s = struct<S>('s', 24, {
    a: { offset: 0, codec: u8 },
    b: { offset: 8, codec: u64 },
    tail: { offset: 16, codec: array(u16, 2) },
  });
  const buf = Buffer.alloc(24, 0xff);
  s.encode({ a: 1, b: 2n, tail: [3, 4] }, buf, 0);
  assert.deepEqual([...buf.subarray(0, 8)], [1, 0, 0, 0, 0, 0, 0, 0]);
  assert.deepEqual(s.decode(buf, 0), { a: 1, b: 2n, tail: [3, 4] });
  assert.throws(() => s.encode({ a: 1 } as unknown as S, buf, 0), /member b is missing/);
  assert.throws(() => struct('t', 4, { x: { offset: 2, codec: u32 } }), /ends past the struct size/);
});

test('bytes codec checks its length', () => {
  assert.deepEqual([...roundTrip(bytes(3), new Uint8Array([1, 2, 3]))], [1, 2, 3]);
  assert.throws(() => bytes(3).encode(new Uint8Array(2), Buffer.alloc(3), 0), /expected 3 bytes/);
});
