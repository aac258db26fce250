/**
 * Map operations from TypeScript on a 64k-entry hash map (u32 → u64):
 * batch update/lookup/delete, single-element update/lookup/delete, iteration.
 * Single-element lookups are compared, in the same interleaved rounds, with a
 * naive path (libbpf's bpf_map_lookup_elem through koffi with Buffers) and with
 * the syscall floor (the same lookups from a C loop). Needs root.
 */
import koffi from 'koffi';
import { BpfMap } from '../src/bpf/map.js';
import { MapType } from '../src/bpf/types.js';
import { u32, u64n } from '../src/bpf/codec.js';
import { interleave, pairedRatio, printReport, type RateSummary, type Slice } from './lib.js';
import { loadNativeFloor } from './native.js';

const ENTRIES = 65536;
const SINGLE = 20_000;
const ROUNDS = 11;

export async function run(opts: { json: boolean }): Promise<Record<string, number>> {
  const map = BpfMap.create({ name: 'bench_hash', type: MapType.Hash, keySize: 4, valueSize: 8, maxEntries: ENTRIES, flags: 0 }, u32, u64n);
  try {
    const keys = Buffer.alloc(ENTRIES * 4);
    const values = Buffer.alloc(ENTRIES * 8);
    const keyList: number[] = [];
    const entries: [number, number][] = [];
    for (let i = 0; i < ENTRIES; i++) {
      keys.writeUInt32LE(i, i * 4);
      values.writeUInt32LE(i * 3, i * 8);
      keyList.push(i);
      entries.push([i, i * 3]);
    }
    const refill = (): void => { map.updateBatchRaw(keys, values, ENTRIES); };
    refill();

    const libbpf = koffi.load('libbpf.so.1');
    const naiveLookup = libbpf.func('int bpf_map_lookup_elem(int fd, const void *key, void *value)');
    const nk = Buffer.alloc(4), nv = Buffer.alloc(8);
    const floor = loadNativeFloor();
    let cursor = 0;

    const singleSlices: Record<string, Slice> = {
      lookup: () => { for (let i = 0; i < SINGLE; i++) map.lookup((cursor++) & 0xffff); return SINGLE; },
      update: () => { for (let i = 0; i < SINGLE; i++) { const k = (cursor++) & 0xffff; map.update(k, k); } return SINGLE; },
      delete: { setup: refill, run: () => { for (let i = 0; i < SINGLE; i++) map.delete(i); return SINGLE; } },
      naiveLookup: () => {
        for (let i = 0; i < SINGLE; i++) {
          nk.writeUInt32LE((cursor++) & 0xffff, 0);
          naiveLookup(map.fd, nk, nv);
          void nv.readUInt32LE(0);
        }
        return SINGLE;
      },
    };
    if (typeof floor !== 'string') singleSlices.cLookupFloor = () => { floor.lookup(map.fd, SINGLE, ENTRIES); return SINGLE; };
    const single = interleave(singleSlices, ROUNDS);

    const batchSlices: Record<string, Slice> = {
      batchUpdateRaw: () => map.updateBatchRaw(keys, values, ENTRIES),
      batchUpdate: () => map.updateBatch(entries),
      batchLookupRaw: () => map.lookupBatchRaw(() => undefined, 8192),
      batchLookup: () => map.lookupBatch(8192).length,
      batchDelete: { setup: refill, run: () => map.deleteBatch(keyList) },
      iterate: { setup: refill, run: () => map.count() },
    };
    if (typeof floor !== 'string') batchSlices.cBatchUpdateFloor = () => floor.updateBatch(map.fd, keys, values, ENTRIES);
    const batch = interleave(batchSlices, ROUNDS);
    refill();

    const figures: Record<string, number> = {};
    for (const [k, v] of Object.entries({ ...single, ...batch })) figures[`${k}PerSec`] = Math.round(v.median);
    const s = (k: string): RateSummary => single[k] as RateSummary;
    const b = (k: string): RateSummary => batch[k] as RateSummary;
    figures.lookupVsNaive = pairedRatio(s('lookup'), s('naiveLookup'));
    if (single.cLookupFloor) {
      figures.lookupVsCFloor = pairedRatio(s('lookup'), s('cLookupFloor'));
      figures.cFloorLookupNs = Math.round(1e9 / s('cLookupFloor').median);
    }
    if (batch.cBatchUpdateFloor) figures.batchUpdateVsCFloor = pairedRatio(b('batchUpdateRaw'), b('cBatchUpdateFloor'));
    figures.lookupNs = Math.round(1e9 / s('lookup').median);
    if (!opts.json) {
      printReport(`single-element operations on a ${ENTRIES}-entry hash map`, single, {
        'lookup / naive koffi+libbpf': figures.lookupVsNaive,
        ...(figures.lookupVsCFloor ? { 'lookup / C syscall loop': figures.lookupVsCFloor } : {}),
      }, 'ops');
      if (typeof floor === 'string') process.stdout.write(`  (no C floor: ${floor})\n`);
      printReport(`batch operations and iteration, ${ENTRIES} entries per slice`, batch,
        figures.batchUpdateVsCFloor ? { 'batch update / C batch update': figures.batchUpdateVsCFloor } : {}, 'entries');
      process.stdout.write(`  goals: batch update >= 4 M entries/s (now ${(figures.batchUpdateRawPerSec as number / 1e6).toFixed(2)} M raw, ${(figures.batchUpdatePerSec as number / 1e6).toFixed(2)} M encoding from JS; the same syscall from C: ${((figures.cBatchUpdateFloorPerSec ?? NaN) / 1e6).toFixed(2)} M);\n`
        + `         single-element >= 1 M ops/s (now lookup ${figures.lookupNs} ns; the bpf() syscall alone costs ${figures.cFloorLookupNs ?? '?'} ns from C here)\n`);
    }
    return figures;
  } finally {
    map.close();
  }
}
