import { test } from 'node:test';
import assert from 'node:assert/strict';
import { portInPrefix, portMask, portRangeToPrefixes, prefixContains, prefixRange, type PortPrefix } from './ports.js';

/** Deterministic PRNG (mulberry32). */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Reference: the canonical minimal cover by recursion over the prefix tree. */
function referenceCover(first: number, last: number, base = 0, len = 0): PortPrefix[] {
  const size = 2 ** (16 - len);
  const end = base + size - 1;
  if (end < first || base > last) return [];
  if (base >= first && end <= last) return [{ port: base, prefixLen: len }];
  return [...referenceCover(first, last, base, len + 1), ...referenceCover(first, last, base + size / 2, len + 1)];
}

test('single ports, the full range and ranges from the brief', () => {
  assert.deepEqual(portRangeToPrefixes(80, 80), [{ port: 80, prefixLen: 16 }]);
  assert.deepEqual(portRangeToPrefixes(0, 65535), [{ port: 0, prefixLen: 0 }]);
  assert.deepEqual(portRangeToPrefixes(0, 0), [{ port: 0, prefixLen: 16 }]);
  assert.deepEqual(portRangeToPrefixes(65535, 65535), [{ port: 65535, prefixLen: 16 }]);
  const all = portRangeToPrefixes(1, 65535);
  assert.equal(all.length, 16);
  assert.deepEqual(all, Array.from({ length: 16 }, (_, i) => ({ port: 2 ** i, prefixLen: 16 - i })));
  assert.deepEqual(portRangeToPrefixes(1024, 65535), [
    { port: 1024, prefixLen: 6 },
    { port: 2048, prefixLen: 5 },
    { port: 4096, prefixLen: 4 },
    { port: 8192, prefixLen: 3 },
    { port: 16384, prefixLen: 2 },
    { port: 32768, prefixLen: 1 },
  ]);
  assert.deepEqual(portRangeToPrefixes(8080, 8083), [{ port: 8080, prefixLen: 14 }]);
  assert.deepEqual(portRangeToPrefixes(8079, 8084), [
    { port: 8079, prefixLen: 16 },
    { port: 8080, prefixLen: 14 },
    { port: 8084, prefixLen: 16 },
  ]);
});

test('rejects empty and out-of-range ranges', () => {
  assert.throws(() => portRangeToPrefixes(81, 80), RangeError);
  assert.throws(() => portRangeToPrefixes(-1, 80), RangeError);
  assert.throws(() => portRangeToPrefixes(0, 65536), RangeError);
  assert.throws(() => portRangeToPrefixes(1.5, 80), RangeError);
});

test('property: random ranges are covered exactly once, nothing outside, minimally', () => {
  const rand = rng(12345);
  const counts = new Uint8Array(65536);
  for (let iter = 0; iter < 400; iter++) {
    let first: number;
    let last: number;
    if (iter % 4 === 0) {
      // short ranges near interesting boundaries
      first = Math.floor(rand() * 65536);
      last = Math.min(65535, first + Math.floor(rand() * 40));
    } else {
      const a = Math.floor(rand() * 65536);
      const b = Math.floor(rand() * 65536);
      first = Math.min(a, b);
      last = Math.max(a, b);
    }
    const prefixes = portRangeToPrefixes(first, last);
    counts.fill(0);
    for (const p of prefixes) {
      assert.ok(p.prefixLen >= 0 && p.prefixLen <= 16);
      assert.equal(p.port & portMask(p.prefixLen), p.port, 'host bits are zero');
      const r = prefixRange(p.port, p.prefixLen);
      for (let port = r.first; port <= r.last; port++) counts[port]! += 1;
    }
    for (let port = 0; port < 65536; port++) {
      const expected = port >= first && port <= last ? 1 : 0;
      if (counts[port] !== expected) assert.fail(`range ${first}-${last}: port ${port} covered ${counts[port]} times`);
    }
    assert.deepEqual(prefixes, referenceCover(first, last), `range ${first}-${last} is the minimal cover`);
    assert.ok(prefixes.length <= 30);
  }
});

test('prefix containment', () => {
  assert.equal(prefixContains(0, 0, 12345, 16), true);
  assert.equal(prefixContains(1024, 6, 1024, 6), true);
  assert.equal(prefixContains(1024, 6, 2047, 16), true);
  assert.equal(prefixContains(1024, 6, 2048, 16), false);
  assert.equal(prefixContains(1024, 6, 1024, 5), false, 'a longer prefix cannot contain a shorter one');
  assert.equal(prefixContains(80, 16, 80, 16), true);
  assert.equal(prefixContains(80, 16, 81, 16), false);
  assert.equal(portInPrefix(0x0803, 0x0800, 8), true);
  assert.equal(portInPrefix(0x0903, 0x0800, 8), false);
  assert.deepEqual(prefixRange(1024, 6), { first: 1024, last: 2047 });
  assert.deepEqual(prefixRange(0, 0), { first: 0, last: 65535 });
  assert.equal(portMask(0), 0);
  assert.equal(portMask(16), 0xffff);
  assert.equal(portMask(8), 0xff00);
});
