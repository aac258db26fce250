/**
 * Maglev table population (src/service/maglev.ts) against the paper
 * (Eisenbud et al., NSDI 2016):
 *  - Table 1 (section 3.4): the worked example with 3 backends, M = 7, before
 *    and after B1 is removed, reproduced entry by entry;
 *  - section 3.4: "M > 100·N ensures at most a 1% difference in hash space";
 *    Pseudocode 1 fills round-robin, so every backend has ⌊M/N⌋ or ⌈M/N⌉
 *    entries (Fig. 11: "almost perfect load balancing" whatever the size);
 *  - section 3.4 / Fig. 12: removing a backend moves all of its entries (the
 *    minimum, 1/N of the table) and "a few" more; the larger the table
 *    relative to N the closer to the minimum. Figures printed with
 *    t.diagnostic; the bounds below hold with margin for these inputs.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  MAGLEV_DEFAULT_TABLE_SIZE, MAGLEV_MAX_TABLE_SIZE, MaglevError, checkMaglevTableSize, isPrime, maglevBackendTable, maglevIdentity,
  maglevMoved, maglevPermutation, maglevPopulate, maglevShares, maglevTable, murmur3_32, type MaglevPermutation,
} from './maglev.js';

const ident = (i: number): string => maglevIdentity(`10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`, 8080, 'TCP');
const names = (n: number, from = 0): string[] => Array.from({ length: n }, (_, i) => ident(from + i));

/** Pseudocode 1 written out literally (explicit permutation matrix), to check the fast version against. */
function naivePopulate(perms: readonly MaglevPermutation[], m: number): number[] {
  const permutation = perms.map((p) => Array.from({ length: m }, (_, j) => (p.offset + j * p.skip) % m));
  const next = perms.map(() => 0);
  const entry = new Array<number>(m).fill(-1);
  let n = 0;
  for (;;) {
    for (let i = 0; i < perms.length; i++) {
      let c = (permutation[i] as number[])[next[i] as number] as number;
      while ((entry[c] as number) >= 0) {
        next[i] = (next[i] as number) + 1;
        c = (permutation[i] as number[])[next[i] as number] as number;
      }
      entry[c] = i;
      next[i] = (next[i] as number) + 1;
      n++;
      if (n === m) return entry;
    }
  }
}

test('MurmurHash3 x86_32 gives the reference test vectors', () => {
  const vectors: [string, number, number][] = [
    ['', 0, 0], ['', 1, 0x514e28b7], ['', 0xffffffff, 0x81f16f39], ['a', 0, 0x3c2569b2], ['ab', 0, 0x9bbfd75f], ['abc', 0, 0xb3dd93fa],
    ['hello', 0, 0x248bfa47], ['aaaa', 0x9747b28c, 0x5a97808a], ['Hello, world!', 0x9747b28c, 0x24884cba],
    ['The quick brown fox jumps over the lazy dog', 0, 0x2e4ff723],
    ['The quick brown fox jumps over the lazy dog', 0x9747b28c, 0x2fa826cd],
  ];
  for (const [s, seed, want] of vectors) assert.equal(murmur3_32(s, seed), want, `murmur3_32(${JSON.stringify(s)}, ${seed.toString(16)})`);
  assert.equal(murmur3_32(new Uint8Array([0, 0, 0, 0]), 0), 0x2362f9de);
  // Strings hash as UTF-8.
  assert.equal(murmur3_32('é', 7), murmur3_32(new Uint8Array([0xc3, 0xa9]), 7));
});

test('table size: a prime up to LB_MAGLEV_TABLE_MAX', () => {
  assert.equal(MAGLEV_DEFAULT_TABLE_SIZE, 16381);
  assert.ok(isPrime(16381) && isPrime(65537) && isPrime(131071) && isPrime(2) && isPrime(7));
  assert.ok(!isPrime(1) && !isPrime(0) && !isPrime(16383) && !isPrime(65536) && !isPrime(131073) && !isPrime(7.5));
  for (const m of [7, 251, 16381, 65537, MAGLEV_MAX_TABLE_SIZE]) assert.equal(checkMaglevTableSize(m), m);
  assert.throws(() => checkMaglevTableSize(16384), (e: unknown) => e instanceof MaglevError && /must be a prime/.test(e.message) && /16381, 16411/.test(e.message));
  assert.throws(() => checkMaglevTableSize(262139), /2\.\.131071/);
  assert.throws(() => checkMaglevTableSize(0), /2\.\.131071/);
  assert.throws(() => checkMaglevTableSize(16381.5), /2\.\.131071/);
  assert.throws(() => maglevTable(['a'], 100), /must be a prime/);
  assert.throws(() => maglevTable(names(8), 7), /8 backends do not fit a Maglev table of 7 entries/);
  assert.throws(() => maglevTable(['a', 'b', 'a'], 7), /identity "a" appears twice/);
});

test('Table 1 of the paper: 3 backends, M = 7, before and after B1 is removed', () => {
  // Permutations of Table 1: B0 offset 3 skip 4, B1 offset 0 skip 2, B2 offset 3 skip 1.
  const b0 = { offset: 3, skip: 4 }, b1 = { offset: 0, skip: 2 }, b2 = { offset: 3, skip: 1 };
  assert.deepEqual(Array.from(maglevPopulate([b0, b1, b2], 7)), [1, 0, 1, 0, 2, 2, 0]); // B1 B0 B1 B0 B2 B2 B0
  assert.deepEqual(Array.from(maglevPopulate([b0, b2], 7)).map((i) => [0, 2][i]), [0, 0, 0, 0, 2, 2, 2]); // B0 B0 B0 B0 B2 B2 B2
  // B1's entries (0, 2) move, and so does entry 6 (B0 → B2): the "slightly more than the minimum" of section 3.4.
  assert.equal(maglevMoved([1, 0, 1, 0, 2, 2, 0], [0, 0, 0, 0, 2, 2, 2]), 3);
  assert.deepEqual(Array.from(maglevPopulate([], 7)), [-1, -1, -1, -1, -1, -1, -1]);
  assert.throws(() => maglevPopulate([{ offset: 0, skip: 7 }], 7), /skip 7/);
});

test('the fast population equals Pseudocode 1 written out', () => {
  for (const [n, m] of [[1, 7], [3, 13], [5, 101], [10, 1021], [40, 4093], [257, 4093]] as const) {
    const perms = names(n).map((s) => maglevPermutation(s, m));
    assert.deepEqual(Array.from(maglevPopulate(perms, m)), naivePopulate(perms, m), `N=${n} M=${m}`);
  }
});

test('permutations: offset in 0..M−1, skip in 1..M−1, from the identity only', () => {
  for (const m of [7, 16381, 65537]) {
    for (const s of names(200)) {
      const p = maglevPermutation(s, m);
      assert.ok(p.offset >= 0 && p.offset < m && p.skip >= 1 && p.skip < m);
    }
  }
  const a = maglevPermutation('10.0.0.5:8080/TCP', 16381);
  assert.deepEqual(maglevPermutation('10.0.0.5:8080/TCP', 16381), a);
  assert.notDeepEqual(maglevPermutation('10.0.0.5:8080/UDP', 16381), a);
  assert.equal(maglevIdentity('10.0.0.5', 8080, 'TCP'), '10.0.0.5:8080/TCP');
  assert.equal(maglevIdentity('fd00::5', 53, 'UDP'), '[fd00::5]:53/UDP');
});

test('golden table: the hash, the seeds and the fill order never change (every node and version computes the same table)', () => {
  const t = maglevTable(names(5), 16381);
  // FNV-1a over the entries: a fingerprint of the whole table.
  let h = 0x811c9dc5;
  for (const e of t) h = Math.imul(h ^ e, 0x01000193) >>> 0;
  assert.deepEqual(Array.from(t.subarray(0, 16)), GOLDEN_HEAD);
  assert.equal(h, GOLDEN_FNV);
});

test('the table depends on the backends, not on their order or IDs', () => {
  const list = names(10);
  const shuffled = [list[7], list[2], list[9], list[0], list[5], list[1], list[8], list[3], list[6], list[4]] as string[];
  const a = maglevTable(list, 16381);
  const b = maglevTable(shuffled, 16381);
  for (let e = 0; e < 16381; e++) assert.equal(list[a[e] as number], shuffled[b[e] as number]);
  const ids1 = maglevBackendTable(list.map((identity, i) => ({ id: 100 + i, identity })), 16381);
  const ids2 = maglevBackendTable(shuffled.map((identity) => ({ id: 100 + list.indexOf(identity), identity })), 16381);
  assert.deepEqual(ids1, ids2);
  assert.deepEqual(Array.from(new Set(ids1)).sort((x, y) => x - y), list.map((_, i) => 100 + i));
  assert.deepEqual(maglevBackendTable([], 7), new Uint32Array(7));
});

test('balance: every backend has ⌊M/N⌋ or ⌈M/N⌉ entries (Fig. 11: almost perfect balance at any table size)', (t) => {
  for (const m of [16381, 65537]) {
    for (const n of [1, 3, 10, 100, 1000]) {
      const shares = maglevShares(maglevTable(names(n), m), n);
      const lo = Math.floor(m / n), hi = Math.ceil(m / n);
      assert.ok(shares.every((s) => s === lo || s === hi), `M=${m} N=${n}: shares ${Math.min(...shares)}..${Math.max(...shares)}`);
      assert.equal(shares.reduce((a, b) => a + b, 0), m);
      const worst = Math.max(...shares.map((s) => Math.abs(s * n / m - 1)));
      // Section 3.4: M > 100·N keeps every share within 1% of 1/N.
      if (m > 100 * n) assert.ok(worst <= 0.01, `M=${m} N=${n}: share off by ${(100 * worst).toFixed(2)}%`);
      t.diagnostic(`M=${m} N=${n}: entries per backend ${Math.min(...shares)}..${Math.max(...shares)} (max/min ${(Math.max(...shares) / Math.min(...shares)).toFixed(4)}), worst share ${(100 * worst).toFixed(3)}% off 1/N`);
    }
  }
});

/** Removes backend `r` of `list`: entries moved in all, and of those how many were r's. */
function removal(list: string[], r: number, m: number): { moved: number; own: number; before: Int32Array; after: Int32Array; rest: string[] } {
  const before = maglevTable(list, m);
  const rest = list.filter((_, i) => i !== r);
  const after = maglevTable(rest, m);
  let moved = 0, own = 0;
  for (let e = 0; e < m; e++) {
    if (list[before[e] as number] === rest[after[e] as number]) continue;
    moved++;
    if (before[e] === r) own++;
  }
  return { moved, own, before, after, rest };
}

/**
 * Disruption on removing one backend. The removed backend's entries all move
 * (exactly its ⌊M/N⌋..⌈M/N⌉, the minimum); the rest is the cascade of
 * Pseudocode 1, which shrinks as M/N grows (Fig. 12: the larger table is the
 * more resilient one). Bounds (× the minimum 1/N) for these inputs:
 * M/N ≥ 1000: ≤ 1.15×; M/N ≥ 100: ≤ 3×.
 */
test('removing one of N backends moves its 1/N of the entries and only a few more (Fig. 12)', (t) => {
  for (const m of [16381, 65537]) {
    const sum: Record<number, number> = {};
    for (const n of [3, 10, 100]) {
      const list = names(n);
      const trials = Math.min(n, 10);
      let worst = 0, total = 0, ownMin = 1;
      for (let k = 0; k < trials; k++) {
        const r = Math.floor((k * n) / trials);
        const { moved, own, before, after, rest } = removal(list, r, m);
        const share = maglevShares(before, n)[r] as number;
        assert.equal(own, share, `M=${m} N=${n}: every entry of the removed backend moves`);
        // Every entry now names a remaining backend, and they stay balanced.
        const shares = maglevShares(after, n - 1);
        assert.ok(shares.every((s) => s === Math.floor(m / (n - 1)) || s === Math.ceil(m / (n - 1))));
        assert.equal(rest.length, n - 1);
        const ratio = (moved / m) * n;
        worst = Math.max(worst, ratio);
        total += ratio;
        ownMin = Math.min(ownMin, own / moved);
      }
      const bound = m / n >= 1000 ? 1.15 : 3;
      assert.ok(worst >= 1 && worst <= bound, `M=${m} N=${n}: moved ${worst.toFixed(3)}× the minimum, bound ${bound}`);
      if (m / n >= 1000) assert.ok(ownMin >= 0.85, `M=${m} N=${n}: only ${(100 * ownMin).toFixed(1)}% of the moved entries were the removed backend's`);
      sum[n] = total / trials;
      t.diagnostic(`M=${m} N=${n}: removing one backend moves ${(100 * total / trials / n).toFixed(2)}% of the entries on average `
        + `(minimum ${(100 / n).toFixed(2)}%, ${(total / trials).toFixed(3)}×; worst ${worst.toFixed(3)}×); `
        + `≥ ${(100 * ownMin).toFixed(1)}% of the moved entries were the removed backend's`);
    }
    assert.ok((sum[3] as number) <= (sum[10] as number) && (sum[10] as number) <= (sum[100] as number), 'disruption grows as M/N shrinks');
  }
  // The larger table is the more resilient (Fig. 12), N = 100.
  const small = removal(names(100), 42, 16381), large = removal(names(100), 42, 65537);
  assert.ok(large.moved / 65537 < small.moved / 16381);
});

test('adding a backend: it takes about 1/(N+1) of the table, nearly all from the others evenly', (t) => {
  for (const [n, m] of [[3, 16381], [10, 16381], [10, 65537], [100, 65537]] as const) {
    const list = names(n);
    const grown = [...list, ident(n)];
    const before = maglevTable(list, m), after = maglevTable(grown, m);
    let moved = 0, toNew = 0;
    for (let e = 0; e < m; e++) {
      if (list[before[e] as number] === grown[after[e] as number]) continue;
      moved++;
      if (after[e] === n) toNew++;
    }
    const newShare = maglevShares(after, n + 1)[n] as number;
    assert.equal(toNew, newShare, 'every entry of the new backend moved to it');
    assert.ok(Math.abs(newShare - m / (n + 1)) <= 1);
    const ratio = (moved / m) * (n + 1);
    assert.ok(ratio >= 1 && ratio <= (m / n >= 1000 ? 1.15 : 3), `N=${n} M=${m}: adding moved ${ratio.toFixed(3)}× the minimum`);
    t.diagnostic(`M=${m} N=${n}→${n + 1}: ${(100 * moved / m).toFixed(2)}% of the entries moved (minimum ${(100 / (n + 1)).toFixed(2)}%), ${(100 * toNew / moved).toFixed(1)}% of them to the new backend`);
  }
});

test('a terminating backend leaves the table like a removed one, and coming back restores the table exactly', () => {
  const list = names(10);
  const m = 16381;
  const full = maglevTable(list, m);
  const { after, rest } = removal(list, 4, m);
  assert.ok(!Array.from(after).some((i) => rest[i] === list[4]));
  const back = maglevTable([...rest, list[4] as string], m);
  for (let e = 0; e < m; e++) assert.equal([...rest, list[4]][back[e] as number], list[full[e] as number]);
});

test('Fig. 12 shape: k of 1000 backends fail at once, M = 65537', (t) => {
  const m = 65537;
  const list = names(1000);
  const before = maglevTable(list, m);
  let previous = 0;
  for (const k of [1, 10, 50, 100]) {
    const rest = list.slice(k);
    const after = maglevTable(rest, m);
    let moved = 0;
    for (let e = 0; e < m; e++) if (list[before[e] as number] !== rest[after[e] as number]) moved++;
    const pct = (100 * moved) / m;
    assert.ok(pct >= (100 * k) / 1000 && pct > previous);
    previous = pct;
    t.diagnostic(`M=65537 N=1000, ${k} backends fail: ${pct.toFixed(2)}% of the entries change (minimum ${(k / 10).toFixed(1)}%)`);
  }
});

test('speed: tables for 10 backends', (t) => {
  const backends = names(10).map((identity, i) => ({ id: i + 1, identity }));
  for (let i = 0; i < 30; i++) maglevBackendTable(backends, 16381); // warm up the JIT
  const runs = 200;
  let start = performance.now();
  for (let i = 0; i < runs; i++) maglevBackendTable(backends, 16381);
  const per = (performance.now() - start) / runs;
  start = performance.now();
  for (let s = 0; s < 1000; s++) {
    maglevBackendTable(Array.from({ length: 10 }, (_, i) => ({ id: s * 10 + i + 1, identity: maglevIdentity(`10.${s >> 8}.${s & 255}.${i}`, 8080, 'TCP') })), 16381);
  }
  const thousand = performance.now() - start;
  start = performance.now();
  for (let i = 0; i < 20; i++) maglevBackendTable(backends, 65537);
  const large = (performance.now() - start) / 20;
  t.diagnostic(`M=16381, N=10: ${per.toFixed(3)} ms per table; 1,000 services: ${thousand.toFixed(0)} ms; M=65537, N=10: ${large.toFixed(3)} ms per table`);
});

const GOLDEN_HEAD = [2, 0, 3, 4, 1, 2, 4, 2, 4, 3, 4, 0, 2, 3, 4, 0];
const GOLDEN_FNV = 0x54daed2f;
