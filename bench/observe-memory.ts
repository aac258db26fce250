/**
 * Part 2 of bench/observe.ts, run in a child process with a fresh heap:
 *
 *   node --expose-gc dist/bench/observe-memory.js CAPACITY [fresh|cached] [objects]
 *
 * Fills a FlowPipeline of CAPACITY with CAPACITY varied records
 * (observe-sources.ts) and prints one JSON line: the memory the store holds
 * (V8 heap used + external memory, which includes ArrayBuffers, after full
 * GCs) empty and filled, per stored flow. With `objects`, it then also keeps
 * one Hubble JSON object per stored flow (`store.record(seq)` in an array,
 * what a store of decoded flows would hold) and reports what those cost per
 * flow on top. `cached` makes enrichment return one rule object per cookie
 * instead of a new one per flow (see SourcesOptions).
 */
import { FLOW_EVENT_SIZE } from '../src/datapath/codecs/flow-event.js';
import { FlowPipeline } from '../src/observe/pipeline.js';
import type { HubbleRecord } from '../src/observe/hubble.js';
import { benchSources, variedRecords } from './observe-sources.js';

const POOL = 10_000;

export interface MemoryFigures {
  capacity: number;
  rules: 'fresh' | 'cached';
  /** Bytes the empty store allocated (its fixed arrays). */
  emptyBytes: number;
  /** Bytes the filled store holds. */
  filledBytes: number;
  /** filledBytes / capacity. */
  bytesPerFlow: number;
  /** With `objects`: bytes of one Hubble JSON object per flow, on top of the store. */
  objectBytesPerFlow?: number;
  /** Mean length of one flow's JSON line (`JSON.stringify(record)`), bytes. */
  jsonLineBytes: number;
  fillMs: number;
}

function used(): number {
  const m = process.memoryUsage();
  // `external` already includes `arrayBuffers` (Node's docs): adding both would count the store's buffer twice.
  return m.heapUsed + m.external;
}

async function settle(): Promise<number> {
  const gc = (globalThis as { gc?: () => void }).gc;
  if (!gc) throw new Error('run with node --expose-gc');
  for (let i = 0; i < 4; i++) {
    gc();
    await new Promise((r) => setImmediate(r));
  }
  return used();
}

async function main(): Promise<void> {
  const capacity = Number(process.argv[2]);
  const rules = process.argv[3] === 'cached' ? 'cached' : 'fresh';
  const objects = process.argv.includes('objects');
  if (!Number.isInteger(capacity) || capacity < 1) throw new Error(`usage: observe-memory.js CAPACITY [fresh|cached] [objects]`);
  const sources = benchSources('bench-node', { rules });
  const pool = variedRecords(POOL);
  const view = new DataView(pool.buffer, pool.byteOffset, pool.byteLength);
  // Warm the code paths (and their one-time allocations) on a small pipeline first.
  const warm = new FlowPipeline(1000, sources);
  for (let i = 0; i < 5000; i++) warm.ingest(view, (i % POOL) * FLOW_EVENT_SIZE);
  JSON.stringify(warm.store.record(warm.store.endSeq - 1));

  const m0 = await settle();
  const p = new FlowPipeline(capacity, sources);
  const m1 = await settle();
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < capacity; i++) p.ingest(view, (i % POOL) * FLOW_EVENT_SIZE);
  const fillMs = Number(process.hrtime.bigint() - t0) / 1e6;
  const m2 = await settle();
  if (p.store.size !== capacity) throw new Error(`store holds ${p.store.size}, expected ${capacity}`);

  let jsonBytes = 0;
  const sample = Math.min(capacity, 10_000);
  for (let s = p.store.endSeq - sample; s < p.store.endSeq; s++) jsonBytes += JSON.stringify(p.store.record(s)).length + 1;

  const out: MemoryFigures = {
    capacity, rules, emptyBytes: m1 - m0, filledBytes: m2 - m0, bytesPerFlow: (m2 - m0) / capacity, jsonLineBytes: jsonBytes / sample, fillMs,
  };
  if (objects) {
    const kept: HubbleRecord[] = new Array<HubbleRecord>(capacity);
    for (let s = p.store.firstSeq, i = 0; s < p.store.endSeq; s++, i++) kept[i] = p.store.record(s);
    const m3 = await settle();
    out.objectBytesPerFlow = (m3 - m2) / capacity;
    if (kept.length !== capacity) throw new Error('lost objects');
  }
  if (p.store.size !== capacity || warm.store.size === 0) throw new Error('unreachable');
  process.stdout.write(`${JSON.stringify(out)}\n`);
}

await main();
