/**
 * The policy datapath's maps from the agent's side (bpf/include/ipcache.h,
 * policy.h, conntrack.h): opening the pins, writing desired state as a diff
 * against what is in the map, the policy revision, and conntrack listing and
 * garbage collection.
 */
import { join } from 'node:path';
import { u32 } from '../bpf/codec.js';
import { BpfMap } from '../bpf/map.js';
import { BpfSyscallError } from '../bpf/errors.js';
import { ipcachePrefix, ipcacheValue, type IpcacheValue } from './codecs/ipcache.js';
import { policyKey, policyState, policyValue, type PolicyKey, type PolicyState, type PolicyValue } from './codecs/policy.js';
import { ctEntry, ctKey, type CtEntry, type CtKey } from './codecs/conntrack.js';

export function ipcacheMap(pinDir: string): BpfMap<string, IpcacheValue> {
  return BpfMap.openPinned(join(pinDir, 'ipcache'), ipcachePrefix, ipcacheValue);
}

export function policyMap(pinDir: string): BpfMap<PolicyKey, PolicyValue> {
  return BpfMap.openPinned(join(pinDir, 'policy'), policyKey, policyValue);
}

/** The single-port policy entries (hash; see bpf/include/policy.h). */
export function policyExactMap(pinDir: string): BpfMap<PolicyKey, PolicyValue> {
  return BpfMap.openPinned(join(pinDir, 'policy_exact'), policyKey, policyValue);
}

/** Whether a policy entry goes into `policy_exact` (one protocol, one port) rather than the trie. */
export function isExactPolicyKey(k: PolicyKey): boolean {
  return k.proto !== 0 && k.portPrefixLen === 16;
}

export function policyStateMap(pinDir: string): BpfMap<number, PolicyState> {
  return BpfMap.openPinned(join(pinDir, 'policy_state'), u32, policyState);
}

export function ctMap(pinDir: string): BpfMap<CtKey, CtEntry> {
  return BpfMap.openPinned(join(pinDir, 'ct'), ctKey, ctEntry);
}

/** The text form of a policy key, for diffing and display. */
export function policyKeyText(k: PolicyKey): string {
  const port = k.proto === 0 ? '*' : k.portPrefixLen === 0 ? `${k.proto}/*` : `${k.proto}/${k.port}/${k.portPrefixLen}`;
  return `${k.endpointId} ${k.direction} ${k.identity} ${port}`;
}

/**
 * Keeps a map equal to a desired state, writing only the difference. It
 * starts from what the map holds (so a restarted agent converges without
 * rewriting), then remembers what it wrote. Upserts and deletes are separate
 * steps so a caller can order them around other writes.
 */
export class MapSync<K, V> {
  private current = new Map<string, { key: K; value: V }>();

  /**
   * `batch`: write and delete with the batch syscalls (one call per few
   * thousand entries); only for map types that have them (hash, array).
   */
  constructor(
    private readonly map: BpfMap<K, V>,
    private readonly keyText: (k: K) => string,
    private readonly same: (a: V, b: V) => boolean,
    private readonly batch = false,
  ) {
    for (const [key, value] of map.entries()) this.current.set(keyText(key), { key, value });
  }

  get size(): number {
    return this.current.size;
  }

  /** Writes every desired entry that is missing or different; returns how many. */
  upsert(desired: ReadonlyMap<string, { key: K; value: V }>): number {
    const changed: [string, { key: K; value: V }][] = [];
    for (const [text, want] of desired) {
      const have = this.current.get(text);
      if (!have || !this.same(have.value, want.value)) changed.push([text, want]);
    }
    if (this.batch && changed.length > 1) this.map.updateBatch(changed.map(([, e]) => [e.key, e.value] as const));
    else for (const [, e] of changed) this.map.update(e.key, e.value);
    for (const [text, e] of changed) this.current.set(text, e);
    return changed.length;
  }

  /** Deletes every entry not desired; returns how many. */
  prune(desired: ReadonlyMap<string, unknown>): number {
    const gone = [...this.current].filter(([text]) => !desired.has(text));
    if (this.batch && gone.length > 1) this.map.deleteBatch(gone.map(([, e]) => e.key));
    else for (const [, e] of gone) this.map.delete(e.key);
    for (const [text] of gone) this.current.delete(text);
    return gone.length;
  }

  entries(): IterableIterator<{ key: K; value: V }> {
    return this.current.values();
  }

  close(): void {
    this.map.close();
  }
}

/** The current policy revision in `policy_state`. */
export function readPolicyRevision(map: BpfMap<number, PolicyState>): number {
  return map.lookup(0)?.revision ?? 0;
}

/** Sets the policy revision: conntrack entries made under another revision are checked again. */
export function writePolicyRevision(map: BpfMap<number, PolicyState>, revision: number): void {
  map.update(0, { revision: revision >>> 0 });
}

/** CLOCK_MONOTONIC in ns: the clock of bpf_ktime_get_ns(). */
export function monotonicNs(): number {
  return Number(process.hrtime.bigint());
}

/** Every conntrack entry (batched reads). */
export function ctEntries(map: BpfMap<CtKey, CtEntry>): [CtKey, CtEntry][] {
  return map.lookupBatch();
}

/** Deletes the conntrack entries with `addr` (16 bytes; IPv4 in the first 4, family `family`) at either end. */
export function ctForgetAddress(map: BpfMap<CtKey, CtEntry>, family: number, addr: Uint8Array): number {
  const same = (a: Uint8Array): boolean => a.every((b, i) => b === addr[i]);
  const dead = map.lookupBatch().filter(([k]) => k.family === family && (same(k.saddr) || same(k.daddr))).map(([k]) => k);
  return dead.length ? map.deleteBatch(dead) : 0;
}

/** Deletes expired conntrack entries; returns how many. */
export function ctGarbageCollect(map: BpfMap<CtKey, CtEntry>, now = monotonicNs()): { deleted: number; alive: number } {
  // Raw: only the expiry (u64 at offset 0 of the value) is read and only dead
  // keys are copied, so a full table costs two syscalls per 4096 entries and
  // no objects (decoding every entry stalled the agent for ~10 µs an entry).
  const ks = map.info.keySize;
  const vs = map.info.valueSize;
  let dead = Buffer.alloc(4096 * ks);
  let deadCount = 0;
  let alive = 0;
  map.lookupBatchRaw((keys, values, n) => {
    for (let i = 0; i < n; i++) {
      const expires = values.readUInt32LE(i * vs + 4) * 4294967296 + values.readUInt32LE(i * vs);
      if (expires > now) { alive++; continue; }
      if ((deadCount + 1) * ks > dead.length) {
        const bigger = Buffer.alloc(dead.length * 2);
        dead.copy(bigger);
        dead = bigger;
      }
      keys.copy(dead, deadCount * ks, i * ks, (i + 1) * ks);
      deadCount++;
    }
  });
  if (!deadCount) return { deleted: 0, alive };
  try {
    return { deleted: map.deleteBatchRaw(dead, deadCount), alive };
  } catch (err) {
    // An entry the LRU evicted meanwhile fails the batch: delete the rest one by one.
    if (!(err instanceof BpfSyscallError && err.errnoName === 'ENOENT')) throw err;
    let deleted = 0;
    for (let i = 0; i < deadCount; i++) if (map.delete(map.keyCodec.decode(dead, i * ks))) deleted++;
    return { deleted, alive };
  }
}
