/**
 * Maglev consistent hashing: the lookup-table population of Eisenbud et al.,
 * "Maglev: A Fast and Reliable Software Network Load Balancer" (NSDI 2016),
 * section 3.4, Pseudocode 1.
 *
 * Every backend has a preference list over the M table entries, a
 * permutation given by two hashes of the backend's identity:
 *
 *   offset = h1(name) mod M,  skip = h2(name) mod (M − 1) + 1,
 *   permutation[j] = (offset + j × skip) mod M        (M prime: a full cycle)
 *
 * Backends take turns claiming their next preferred entry that is still
 * empty until the table is full, so every backend ends with ⌊M/N⌋ or ⌈M/N⌉
 * entries, and removing a backend moves its own entries plus only a few
 * others. A connection's hash modulo M picks the entry.
 *
 * The table depends only on the backends' identities (a stable string such as
 * "10.0.0.5:8080/TCP") and M: not on their order, IDs or the node, so every
 * node computes the same table. h1 and h2 are MurmurHash3 x86_32 of the UTF-8
 * identity with two fixed seeds; changing the hash or the seeds changes every
 * table (a golden test pins them). Pure logic, no I/O.
 */

/** Default table size (a prime; Cilium's default too). */
export const MAGLEV_DEFAULT_TABLE_SIZE = 16381;
/** Largest table size: `LB_MAGLEV_TABLE_MAX` in bpf/include/lb.h. */
export const MAGLEV_MAX_TABLE_SIZE = 131071;
/** Seeds of MurmurHash3 for h1 (offset) and h2 (skip). Part of the table format: never change them. */
export const MAGLEV_SEED_OFFSET = 0x4d41474c; // "MAGL"
export const MAGLEV_SEED_SKIP = 0x45565748; // "EVWH"

/** A bad table size or backend list. */
export class MaglevError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'MaglevError';
  }
}

/** Whether `n` is a prime (trial division; n ≤ 2^53). */
export function isPrime(n: number): boolean {
  if (!Number.isInteger(n) || n < 2) return false;
  if (n % 2 === 0) return n === 2;
  for (let d = 3; d * d <= n; d += 2) if (n % d === 0) return false;
  return true;
}

/** Checks a table size: a prime in 2..MAGLEV_MAX_TABLE_SIZE. Returns it. */
export function checkMaglevTableSize(m: number): number {
  if (!Number.isInteger(m) || m < 2 || m > MAGLEV_MAX_TABLE_SIZE) {
    throw new MaglevError(`Maglev table size must be a prime in 2..${MAGLEV_MAX_TABLE_SIZE}, got ${String(m)}`);
  }
  if (!isPrime(m)) {
    throw new MaglevError(`Maglev table size must be a prime (so every skip visits every entry), got ${m}; `
      + 'primes near it: ' + nearPrimes(m).join(', '));
  }
  return m;
}

function nearPrimes(m: number): number[] {
  let lo = m - 1;
  while (lo > 2 && !isPrime(lo)) lo--;
  let hi = m + 1;
  while (!isPrime(hi)) hi++;
  return [lo, hi].filter((p) => p >= 2 && p <= MAGLEV_MAX_TABLE_SIZE);
}

const encoder = new TextEncoder();

/** MurmurHash3 x86_32 (Austin Appleby) of `data` (a string is hashed as UTF-8) with `seed`; an unsigned 32-bit result. */
export function murmur3_32(data: Uint8Array | string, seed: number): number {
  const bytes = typeof data === 'string' ? encoder.encode(data) : data;
  const c1 = 0xcc9e2d51;
  const c2 = 0x1b873593;
  const len = bytes.length;
  const blocks = len & ~3;
  let h = seed | 0;
  for (let i = 0; i < blocks; i += 4) {
    let k = (bytes[i] as number) | ((bytes[i + 1] as number) << 8) | ((bytes[i + 2] as number) << 16) | ((bytes[i + 3] as number) << 24);
    k = Math.imul(k, c1);
    k = (k << 15) | (k >>> 17);
    k = Math.imul(k, c2);
    h ^= k;
    h = (h << 13) | (h >>> 19);
    h = (Math.imul(h, 5) + 0xe6546b64) | 0;
  }
  const tail = len & 3;
  if (tail > 0) {
    let k = 0;
    if (tail === 3) k ^= (bytes[blocks + 2] as number) << 16;
    if (tail >= 2) k ^= (bytes[blocks + 1] as number) << 8;
    k ^= bytes[blocks] as number;
    k = Math.imul(k, c1);
    k = (k << 15) | (k >>> 17);
    k = Math.imul(k, c2);
    h ^= k;
  }
  h ^= len;
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

/** A backend's preference list: permutation[j] = (offset + j × skip) mod M. */
export interface MaglevPermutation {
  offset: number;
  skip: number;
}

/** The permutation of backend `identity` in a table of `m` entries (m prime). */
export function maglevPermutation(identity: string, m: number): MaglevPermutation {
  const bytes = encoder.encode(identity);
  return {
    offset: murmur3_32(bytes, MAGLEV_SEED_OFFSET) % m,
    skip: (murmur3_32(bytes, MAGLEV_SEED_SKIP) % (m - 1)) + 1,
  };
}

/**
 * Pseudocode 1 of the paper: fills a table of `m` entries from the backends'
 * permutations, taking turns in the given order. Entry → index into `perms`.
 * Every skip must be in 1..m−1 and m prime. With no backends the table is all −1.
 */
export function maglevPopulate(perms: readonly MaglevPermutation[], m: number): Int32Array {
  const n = perms.length;
  const entry = new Int32Array(m).fill(-1);
  if (n === 0) return entry;
  const next = new Int32Array(n); // (offset + next[i] × skip) mod m, kept as a position
  const skip = new Int32Array(n);
  perms.forEach((p, i) => {
    if (!Number.isInteger(p.offset) || p.offset < 0 || p.offset >= m) throw new MaglevError(`offset ${p.offset} of backend ${i} is not in 0..${m - 1}`);
    if (!Number.isInteger(p.skip) || p.skip < 1 || p.skip >= m) throw new MaglevError(`skip ${p.skip} of backend ${i} is not in 1..${m - 1}`);
    next[i] = p.offset;
    skip[i] = p.skip;
  });
  let filled = 0;
  for (;;) {
    for (let i = 0; i < n; i++) {
      const s = skip[i] as number;
      let c = next[i] as number;
      while ((entry[c] as number) >= 0) {
        c += s;
        if (c >= m) c -= m;
      }
      entry[c] = i;
      c += s;
      if (c >= m) c -= m;
      next[i] = c;
      if (++filled === m) return entry;
    }
  }
}

/**
 * The Maglev table of `identities` with `m` entries: entry → index into
 * `identities`. The backends take turns in the order of their identities
 * (sorted by UTF-16 code units), so the table does not depend on the order
 * they are given in. Identities must be distinct; at most m of them.
 */
export function maglevTable(identities: readonly string[], m: number = MAGLEV_DEFAULT_TABLE_SIZE): Int32Array {
  checkMaglevTableSize(m);
  if (identities.length > m) throw new MaglevError(`${identities.length} backends do not fit a Maglev table of ${m} entries`);
  const order = identities.map((_, i) => i).sort((a, b) => {
    const x = identities[a] as string, y = identities[b] as string;
    return x < y ? -1 : x > y ? 1 : 0;
  });
  for (let i = 1; i < order.length; i++) {
    if (identities[order[i] as number] === identities[order[i - 1] as number]) {
      throw new MaglevError(`backend identity ${JSON.stringify(identities[order[i] as number])} appears twice`);
    }
  }
  const sorted = maglevPopulate(order.map((i) => maglevPermutation(identities[i] as string, m)), m);
  for (let e = 0; e < m; e++) sorted[e] = order[sorted[e] as number] as number;
  return sorted;
}

/** A backend as the table needs it: its ID (the table's value) and its identity (what places it). */
export interface MaglevBackend {
  id: number;
  identity: string;
}

/** The table of `backends` as backend IDs (what `lb_maglev`'s inner arrays hold); all zero with no backends. */
export function maglevBackendTable(backends: readonly MaglevBackend[], m: number = MAGLEV_DEFAULT_TABLE_SIZE): Uint32Array {
  const index = maglevTable(backends.map((b) => b.identity), m);
  const out = new Uint32Array(m);
  if (backends.length === 0) return out;
  const ids = backends.map((b) => b.id);
  for (let e = 0; e < m; e++) out[e] = ids[index[e] as number] as number;
  return out;
}

/** The stable identity of a backend: `10.0.0.5:8080/TCP`, `[fd00::5]:8080/UDP` (canonical address text). */
export function maglevIdentity(addr: string, port: number, proto: string): string {
  return addr.includes(':') ? `[${addr}]:${port}/${proto}` : `${addr}:${port}/${proto}`;
}

/** Entries per backend index of a table (index → count), for checks and reports. */
export function maglevShares(table: ArrayLike<number>, backends: number): number[] {
  const counts = new Array<number>(backends).fill(0);
  for (let e = 0; e < table.length; e++) {
    const b = table[e] as number;
    if (b >= 0 && b < backends) counts[b] = (counts[b] as number) + 1;
  }
  return counts;
}

/** Entries whose backend differs between two tables of the same size. */
export function maglevMoved(before: ArrayLike<number>, after: ArrayLike<number>): number {
  if (before.length !== after.length) throw new MaglevError(`tables of ${before.length} and ${after.length} entries cannot be compared`);
  let moved = 0;
  for (let e = 0; e < before.length; e++) if (before[e] !== after[e]) moved++;
  return moved;
}
