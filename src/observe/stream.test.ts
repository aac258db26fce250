import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, get, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { encodeFlowQuery, parseFlowQuery, type FlowQuery } from './filter.js';
import type { HubbleRecord } from './hubble.js';
import { FlowPipeline } from './pipeline.js';
import { serveFlows } from './stream.js';
import { flowEventBytes } from './test-events.js';

const pipeline = new FlowPipeline(100_000, {
  nodeName: 'n', endpoint: () => undefined, endpointByIp: () => undefined, rule: () => undefined, identityLabels: () => undefined,
});
function feed(fields: Parameters<typeof flowEventBytes>[0] = {}): void {
  const b = flowEventBytes(fields);
  pipeline.ingest(new DataView(b.buffer, b.byteOffset, b.byteLength), 0);
}

let server: Server;
let base = '';
before(async () => {
  server = createServer((req, res) => {
    const q = parseFlowQuery(new URL(req.url ?? '/', 'http://x').searchParams);
    void serveFlows(pipeline.store, q, res, { format: 'ndjson', onSkipped: (n) => pipeline.countBackpressure(n) });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}/flows?`;
});
after(() => { server.closeAllConnections(); server.close(); });

function open(q: Partial<FlowQuery>): Promise<IncomingMessage> {
  return new Promise((resolve, reject) => get(`${base}${encodeFlowQuery(q)}`, resolve).on('error', reject));
}

/** Reads NDJSON records until `n` arrived (or the stream ends), then closes it. */
async function read(res: IncomingMessage, n = Infinity): Promise<HubbleRecord[]> {
  const out: HubbleRecord[] = [];
  let buf = '';
  for await (const chunk of res) {
    buf += String(chunk);
    let nl: number;
    while ((nl = buf.indexOf('\n')) >= 0) {
      out.push(JSON.parse(buf.slice(0, nl)) as HubbleRecord);
      buf = buf.slice(nl + 1);
    }
    if (out.length >= n) { res.destroy(); break; }
  }
  return out;
}

const port = (r: HubbleRecord): number | string => ('flow' in r ? (r.flow.l4?.TCP?.destination_port as number) : 'lost');

test('history: all matching flows, or the last N, filtered by the agent', async () => {
  for (let p = 1; p <= 10; p++) feed({ dstPort: p, ...(p % 2 ? {} : { type: 1, verdict: 2, dropReason: 133 }) });
  assert.equal((await read(await open({}))).length, 10);
  assert.deepEqual((await read(await open({ include: [{ verdict: ['DROPPED'] }] }))).map(port), [2, 4, 6, 8, 10]);
  assert.deepEqual((await read(await open({ include: [{ verdict: ['DROPPED'] }], last: 2 }))).map(port), [8, 10]);
  assert.deepEqual((await read(await open({ exclude: [{ verdict: ['DROPPED'] }, { destinationPort: [1] }] }))).map(port), [3, 5, 7, 9]);
  assert.deepEqual((await read(await open({ untilMs: Date.now() - 60_000 }))), []);
  assert.equal((await read(await open({ sinceMs: Date.now() - 60_000 }))).length, 10);
});

test('follow: only new matching flows, then lost-event records as they come', async () => {
  const res = await open({ follow: true, include: [{ destinationPort: [7777] }] });
  const got = read(res, 2);
  feed({ dstPort: 1 });
  feed({ dstPort: 7777 });
  pipeline.recordLost('PERF_EVENT_RING_BUFFER', 3);
  const recs = await got;
  assert.deepEqual(recs.map(port), [7777, 'lost']);
});

test('a client that stops reading loses flows, is told how many, and the agent counts them', async () => {
  const res = await open({ follow: true, include: [{ destinationPort: [9000] }] });
  res.pause();
  const sent = 40_000;
  const skippedBefore = pipeline.stats().lostBackpressure;
  for (let i = 0; i < sent; i++) feed({ dstPort: 9000, srcPort: i % 65536 });
  const skipped = pipeline.stats().lostBackpressure - skippedBefore;
  assert.ok(skipped > 0, 'the agent skipped flows for the paused client');
  res.resume();
  // Once it has caught up: every flow it was sent, then the count of those it was not.
  const recs = await read(res, sent - skipped + 1);
  const last = recs[recs.length - 1]!;
  assert.ok('lost_events' in last, 'the last record says flows were lost');
  assert.equal(last.lost_events.source, 'OBSERVER_EVENTS_QUEUE');
  assert.equal(last.lost_events.num_events_lost, skipped);
  assert.equal(recs.filter((r) => 'flow' in r).length, sent - skipped);
});
