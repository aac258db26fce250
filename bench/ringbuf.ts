/**
 * Ring buffer consumption on one core: 64-byte `struct test_event` records
 * drained and decoded into JS objects by
 *
 * - `reader`: the hand-written mmap reader (src/bpf/ringbuf.ts), decoding
 *   straight from the ring's DataView;
 * - `raw`: the same reader walking headers only (no callback, no decode): the
 *   ceiling;
 * - `libbpf`: libbpf's `ring_buffer__consume` calling a koffi callback per
 *   record, which views the record (`koffi.view`) and decodes it the same way;
 * - `libbpfNoop`: the same with an empty callback (the cost of the per-record
 *   native → JS call alone; informative).
 *
 * Each slice refills a 16 MiB ring (untimed, `BPF_PROG_TEST_RUN` with a repeat
 * count), then times one drain. Needs root.
 *
 * Run: node -e "import('./dist/bench/ringbuf.js').then(m=>m.run({json:false}))"
 */
import { Collection } from '../src/bpf/object.js';
import { RingBuffer } from '../src/bpf/ringbuf.js';
import { u32, u64n } from '../src/bpf/codec.js';
import { libbpfRingBufferNew, viewOf } from '../src/bpf/sys.js';
import { bpfObjectPath } from '../src/datapath/objects.js';
import { TEST_EVENT_SIZE, type TestEvent } from '../src/datapath/codecs/test-event.js';
import { formatRate, interleave, pairedRatio, printReport } from './lib.js';

/** Ring size: 16 MiB holds 233,016 records of 64 + 8 bytes. */
const RING_BYTES = 16 << 20;
/** Records per slice (fits in the ring with room to spare, so none is lost). */
const RECORDS = 200_000;
/** Records per `libbpf` slice: that path is ~50× slower, this keeps its slices short too. */
const LIBBPF_RECORDS = 20_000;
/** testRun repeat per call while refilling. */
const CHUNK = 50_000;
const ROUNDS = 15;
const TWO_32 = 0x100000000;

let bytesView: DataView | undefined;
let bytes: Uint8Array = new Uint8Array(0);

/**
 * Decodes one record into a fresh object. `payload` is a copy (the ring memory
 * is reused once the callback returns), sliced from a byte view of the same
 * memory, which is cached while the DataView stays the same.
 */
function decodeEvent(v: DataView, o: number): TestEvent {
  if (v !== bytesView) {
    bytesView = v;
    bytes = new Uint8Array(v.buffer, v.byteOffset, v.byteLength);
  }
  return {
    seq: v.getUint32(o, true) + v.getUint32(o + 4, true) * TWO_32,
    timestamp: v.getUint32(o + 8, true) + v.getUint32(o + 12, true) * TWO_32,
    cpu: v.getUint32(o + 16, true),
    pktLen: v.getUint32(o + 20, true),
    ifindex: v.getUint32(o + 24, true),
    protocol: v.getUint16(o + 28, true),
    tag: v.getUint8(o + 30),
    payload: bytes.slice(o + 32, o + 64),
  };
}

function frame(): Buffer {
  const f = Buffer.alloc(64);
  f.writeUInt16BE(0x0800, 12);
  f[14] = 0x45;
  f.writeUInt16BE(50, 16);
  f[22] = 64;
  f[23] = 17;
  return f;
}

/** Runs the benchmark; prints a report unless `json`, and returns the figures (records/s and ratios). */
export async function run(opts: { json: boolean }): Promise<Record<string, number>> {
  if (process.getuid?.() !== 0) throw new Error('bench/ringbuf needs root (it loads a BPF program)');
  const coll = Collection.load(bpfObjectPath('events_test'), { constants: { tag: 7 }, maxEntries: { events: RING_BYTES } });
  const state = coll.map('event_state', u32, u64n);
  const prog = coll.program('emit_event');
  const rb = RingBuffer.open(coll.mapFd('events'), { lostCounter: () => state.lookup(1) ?? 0 });
  const data = frame();

  let produced = 0;
  let last: TestEvent | undefined;
  const fill = (records: number) => (): void => {
    if (rb.pending() !== 0) throw new Error('ring not empty before refill');
    for (let left = records; left > 0; left -= CHUNK) prog.testRun({ data, repeat: Math.min(CHUNK, left) });
    produced += records;
  };
  const check = (): void => {
    if (last === undefined || last.seq !== produced - 1 || last.tag !== 7) {
      throw new Error(`decode check failed: last seq ${last?.seq}, expected ${produced - 1}`);
    }
  };

  const onRecord = (view: DataView, offset: number): void => { last = decodeEvent(view, offset); };
  const libbpf = libbpfRingBufferNew(coll.mapFd('events'), (ptr, size) => {
    last = decodeEvent(new DataView(viewOf(ptr, size)), 0);
    return 0;
  });
  const libbpfNoop = libbpfRingBufferNew(coll.mapFd('events'), () => 0);

  try {
    const results = interleave({
      reader: { setup: fill(RECORDS), run: () => rb.consume(onRecord), teardown: check },
      raw: { setup: fill(RECORDS), run: () => rb.skip() },
      libbpf: { setup: fill(LIBBPF_RECORDS), run: () => libbpf.consume(), teardown: check },
      libbpfNoop: { setup: fill(RECORDS), run: () => libbpfNoop.consume() },
    }, { rounds: ROUNDS, warmup: 2 });

    const lost = state.lookup(1) ?? 0;
    if (lost !== 0) throw new Error(`${lost} records were lost while filling: the ring is too small for ${RECORDS}`);
    const figures: Record<string, number> = {
      readerRecordsPerSec: results.reader.median,
      rawRecordsPerSec: results.raw.median,
      libbpfRecordsPerSec: results.libbpf.median,
      libbpfNoopRecordsPerSec: results.libbpfNoop.median,
      readerOverLibbpf: pairedRatio(results.reader, results.libbpf),
      readerOverRaw: pairedRatio(results.reader, results.raw),
      recordsPerSlice: RECORDS,
      libbpfRecordsPerSlice: LIBBPF_RECORDS,
      recordBytes: TEST_EVENT_SIZE,
      rounds: ROUNDS,
    };
    if (!opts.json) {
      printReport(`ring buffer: drain + decode ${TEST_EVENT_SIZE}-byte records (${RECORDS} per slice, libbpf ${LIBBPF_RECORDS}), 16 MiB ring`, results, {
        'reader / libbpf': figures.readerOverLibbpf as number,
        'reader / raw': figures.readerOverRaw as number,
      }, 'records');
      const target = 5e6;
      process.stdout.write(`  reader ${results.reader.median >= target ? 'meets' : 'MISSES'} the ${formatRate(target, 'records')} target\n`);
    }
    return figures;
  } finally {
    libbpf.free();
    libbpfNoop.free();
    rb.close();
    state.close();
    coll.close();
  }
}
