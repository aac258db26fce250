import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { RingBuffer } from './ringbuf.js';
import { Collection } from './object.js';
import { u32, u64n } from './codec.js';
import { BpfUsageError } from './errors.js';
import type { BpfMap } from './map.js';
import { bpfObjectPath } from '../datapath/objects.js';
import { TEST_EVENT_SIZE, testEvent } from '../datapath/codecs/test-event.js';
import { skipUnlessRoot } from '../../test/helpers/root.js';

const toClose: { close(): void }[] = [];
after(() => { for (const c of toClose.reverse()) c.close(); });
function keep<T extends { close(): void }>(x: T): T { toClose.push(x); return x; }

const TAG = 7;

/** A 64-byte Ethernet/IPv4/UDP frame (10.0.0.1:1234 -> 10.0.0.2:5678). */
function frame(): Buffer {
  const f = Buffer.alloc(64);
  Buffer.from([0x02, 0, 0, 0, 0, 2]).copy(f, 0); // dst MAC
  Buffer.from([0x02, 0, 0, 0, 0, 1]).copy(f, 6); // src MAC
  f.writeUInt16BE(0x0800, 12); // IPv4
  f[14] = 0x45; // version 4, IHL 5
  f.writeUInt16BE(64 - 14, 16); // total length
  f[22] = 64; // TTL
  f[23] = 17; // UDP
  Buffer.from([10, 0, 0, 1, 10, 0, 0, 2]).copy(f, 26);
  f.writeUInt16BE(1234, 34);
  f.writeUInt16BE(5678, 36);
  f.writeUInt16BE(64 - 34, 38); // UDP length
  for (let i = 42; i < 64; i++) f[i] = i;
  return f;
}

interface Producer {
  coll: Collection;
  state: BpfMap<number, number>;
  emit(n: number): void;
  lost(): number;
}

function producer(maxEntries?: number): Producer {
  const coll = keep(Collection.load(bpfObjectPath('events_test'), {
    constants: { tag: TAG },
    ...(maxEntries ? { maxEntries: { events: maxEntries } } : {}),
  }));
  const state = keep(coll.map('event_state', u32, u64n));
  const prog = coll.program('emit_event');
  const data = frame();
  return {
    coll,
    state,
    emit: (n) => { prog.testRun({ data, repeat: n }); },
    lost: () => state.lookup(1) ?? 0,
  };
}

/** seq of a record, read straight from the ring. */
function seqAt(view: DataView, offset: number): number {
  return view.getUint32(offset, true) + view.getUint32(offset + 4, true) * 0x100000000;
}

async function waitFor(cond: () => boolean, ms: number): Promise<boolean> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) return false;
    await sleep(5);
  }
  return true;
}

describe('ring buffer reader', () => {
  test('delivers every record once, in order, as zero-copy views', (t) => {
    if (skipUnlessRoot(t)) return;
    const N = 10000;
    const p = producer();
    const rb = keep(RingBuffer.open(p.coll.mapFd('events'), { lostCounter: p.lost }));
    assert.equal(rb.size, 1 << 20);
    assert.equal(rb.consume(() => assert.fail('empty ring delivered a record')), 0);

    p.emit(N);
    assert.equal(rb.pending(), N * (TEST_EVENT_SIZE + 8));
    const seqs: number[] = [];
    const ref = frame();
    let first = true;
    // A bounded drain first, then the rest through Buffer views.
    assert.equal(rb.consume((view, offset, length) => {
      assert.equal(length, TEST_EVENT_SIZE);
      assert.equal(offset % 8, 0);
      seqs.push(seqAt(view, offset));
      assert.equal(view.getUint8(offset + 30), TAG);
    }, 100), 100);
    assert.equal(rb.consumeBuffers((buf) => {
      assert.equal(buf.length, TEST_EVENT_SIZE);
      const e = testEvent.decode(buf, 0);
      seqs.push(e.seq);
      assert.equal(e.tag, TAG);
      if (first) {
        first = false;
        assert.equal(e.pktLen, 64);
        assert.equal(e.protocol, 0x0008); // htons(ETH_P_IP) read little-endian
        assert.deepEqual(Buffer.from(e.payload), ref.subarray(0, 32));
        assert.ok(e.timestamp > 0);
      }
    }), N - 100);

    assert.equal(seqs.length, N);
    for (let i = 0; i < N; i++) if (seqs[i] !== i) assert.fail(`record ${i} has seq ${seqs[i]}`);
    assert.equal(rb.pending(), 0);
    assert.equal(rb.consume(() => assert.fail('drained ring delivered a record')), 0);
    assert.deepEqual(rb.stats(), { records: N, discarded: 0, bytes: N * TEST_EVENT_SIZE, malformed: 0, lost: 0 });
    assert.equal(p.state.lookup(1), 0);
    assert.equal(p.state.lookup(0), N);
  });

  test('a full ring: the producer counts what it dropped, records + lost = produced', (t) => {
    if (skipUnlessRoot(t)) return;
    const N = 1000;
    const p = producer(4096);
    const rb = keep(RingBuffer.open(p.coll.mapFd('events'), { lostCounter: p.lost }));
    assert.equal(rb.size, 4096);
    p.emit(N);
    const seqs: number[] = [];
    const n = rb.consume((view, offset) => { seqs.push(seqAt(view, offset)); });
    const s = rb.stats();
    assert.ok(n > 0 && n < N, `${n} records from a one-page ring`);
    assert.equal(n, Math.floor(4096 / (TEST_EVENT_SIZE + 8)));
    assert.ok((s.lost ?? 0) > 0, 'lost counter is positive');
    assert.equal(s.records + (s.lost ?? 0), N);
    assert.deepEqual(seqs, Array.from({ length: n }, (_, i) => i), 'the records that fit are the first ones, in order');
    // Space is free again once consumed.
    p.emit(10);
    assert.equal(rb.consume(() => undefined), 10);
    assert.equal(rb.stats().lost, N - n);
  });

  test('records that wrap around the end of the ring read contiguously (double mapping)', (t) => {
    if (skipUnlessRoot(t)) return;
    const p = producer(4096);
    const rb = keep(RingBuffer.open(p.coll.mapFd('events'), { lostCounter: p.lost }));
    const ref = frame().subarray(0, 32);
    let next = 0;
    let wrapped = 0;
    for (let round = 0; round < 40; round++) {
      p.emit(33); // 33 × 72 B: never a multiple of the ring, so records straddle its end
      rb.consumeBuffers((buf) => {
        const e = testEvent.decode(buf, 0);
        assert.equal(e.seq, next++);
        assert.equal(e.tag, TAG);
        assert.deepEqual(Buffer.from(e.payload), ref);
        const at = (e.seq * (TEST_EVENT_SIZE + 8)) % 4096; // no losses: record i starts at i × 72
        if (at + TEST_EVENT_SIZE + 8 > 4096) wrapped++;
      });
    }
    assert.equal(next, 40 * 33);
    assert.ok(wrapped >= 10, `${wrapped} records straddled the end of the ring`);
    assert.deepEqual(rb.stats(), { records: 40 * 33, discarded: 0, bytes: 40 * 33 * TEST_EVENT_SIZE, malformed: 0, lost: 0 });
  });

  test('a throwing callback consumes its record and the error propagates', (t) => {
    if (skipUnlessRoot(t)) return;
    const p = producer();
    const rb = keep(RingBuffer.open(p.coll.mapFd('events')));
    p.emit(5);
    const seen: number[] = [];
    assert.throws(() => rb.consume((view, offset) => {
      const seq = seqAt(view, offset);
      seen.push(seq);
      if (seq === 2) throw new Error('boom');
    }), /boom/);
    assert.deepEqual(seen, [0, 1, 2]);
    rb.consume((view, offset) => { seen.push(seqAt(view, offset)); });
    assert.deepEqual(seen, [0, 1, 2, 3, 4]);
    assert.equal(rb.stats().records, 5);
    assert.equal('lost' in rb.stats(), false);
  });

  test('rejects maps that are not ring buffers; close is idempotent, also from a callback', (t) => {
    if (skipUnlessRoot(t)) return;
    const p = producer();
    assert.throws(() => RingBuffer.open(p.coll.mapFd('event_state')), (e: unknown) => e instanceof BpfUsageError && /not a ring buffer/.test(e.message));
    const rb = RingBuffer.open(p.coll.mapFd('events'));
    p.emit(3);
    let calls = 0;
    assert.equal(rb.consume(() => { calls++; rb.close(); }, 1), 1);
    assert.equal(calls, 1);
    rb.close();
    assert.throws(() => rb.consume(() => undefined), /closed/);
    // The collection's descriptor is still good: a new reader sees the two records left.
    const rb2 = keep(RingBuffer.open(p.coll.mapFd('events')));
    assert.equal(rb2.skip(), 2);
  });

  test('start() waits off the main thread: bursts arrive in order and the event loop keeps running', async (t) => {
    if (skipUnlessRoot(t)) return;
    const p = producer();
    const rb = keep(RingBuffer.open(p.coll.mapFd('events'), { lostCounter: p.lost }));
    const seqs: number[] = [];
    let ticks = 0;
    const interval = setInterval(() => { ticks++; }, 5);
    try {
      rb.start((view, offset) => { seqs.push(seqAt(view, offset)); }, { pollTimeoutMs: 100 });
      assert.equal(rb.isRunning, true);
      assert.throws(() => rb.start(() => undefined), /already running/);

      // Idle: the reader is blocked in epoll_wait on a worker, timers still fire.
      const idleStart = ticks;
      await sleep(200);
      assert.ok(ticks - idleStart >= 10, `only ${ticks - idleStart} ticks of 5 ms in 200 ms while the reader waited`);
      assert.equal(seqs.length, 0);

      const bursts = [1, 250, 1000, 37, 3000];
      let total = 0;
      for (const n of bursts) {
        p.emit(n);
        total += n;
        const want = total;
        assert.ok(await waitFor(() => seqs.length >= want, 5000), `burst of ${n}: got ${seqs.length} of ${want}`);
        await sleep(20);
      }
      assert.equal(seqs.length, total);
      for (let i = 0; i < total; i++) if (seqs[i] !== i) assert.fail(`record ${i} has seq ${seqs[i]}`);

      const stopStart = Date.now();
      await rb.stop();
      assert.ok(Date.now() - stopStart < 500, `stop took ${Date.now() - stopStart} ms: it should wake the pending wait`);
      assert.equal(rb.isRunning, false);
      // Stopped: records stay in the ring for a later consume.
      p.emit(4);
      await sleep(50);
      assert.equal(seqs.length, total);
      assert.equal(rb.consume((view, offset) => { seqs.push(seqAt(view, offset)); }), 4);
      assert.deepEqual(rb.stats(), { records: total + 4, discarded: 0, bytes: (total + 4) * TEST_EVENT_SIZE, malformed: 0, lost: 0 });
    } finally {
      clearInterval(interval);
      await rb.stop();
    }
  });

  test('wake-ups come from epoll, not from the poll timeout', async (t) => {
    if (skipUnlessRoot(t)) return;
    const p = producer();
    const rb = keep(RingBuffer.open(p.coll.mapFd('events')));
    let got = 0;
    rb.start(() => { got++; }, { pollTimeoutMs: 10_000 });
    try {
      await sleep(100); // the reader is now parked in a 10 s epoll_wait
      const t0 = Date.now();
      p.emit(10);
      assert.ok(await waitFor(() => got === 10, 3000), 'records arrived');
      const latency = Date.now() - t0;
      assert.ok(latency < 2000, `wake-up took ${latency} ms (a timeout would take ~10000)`);
    } finally {
      const t1 = Date.now();
      await rb.stop();
      assert.ok(Date.now() - t1 < 1000, 'stop does not wait for the 10 s poll timeout');
    }
    // And it can start again after a stop.
    rb.start(() => { got++; });
    p.emit(5);
    assert.ok(await waitFor(() => got === 15, 3000));
    await rb.stop();
  });

  test('a callback error stops the loop and reaches onError', async (t) => {
    if (skipUnlessRoot(t)) return;
    const p = producer();
    const rb = keep(RingBuffer.open(p.coll.mapFd('events')));
    let caught: unknown;
    rb.start(() => { throw new Error('bad record'); }, { pollTimeoutMs: 50, onError: (e) => { caught = e; } });
    p.emit(2);
    assert.ok(await waitFor(() => caught !== undefined, 2000));
    assert.match((caught as Error).message, /bad record/);
    assert.equal(rb.isRunning, false);
    await rb.stop();
    assert.equal(rb.skip(), 1, 'the record after the bad one is still there');
  });
});
