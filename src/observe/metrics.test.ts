/**
 * `/metrics` served by a real HTTP listener: the families, their types and
 * values from a real flow pipeline (no privileges), and — as root — from real
 * pinned maps on a private bpffs with known contents: datapath counters summed
 * over CPUs, and the fill of hash, LRU and LPM trie maps counted exactly.
 */
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Server } from 'node:http';
import { createHttpServer, listen } from '../agent/http-server.js';
import { BpfMap, mapInfo, type MapInfo } from '../bpf/map.js';
import { closeFd, getPinned } from '../bpf/fd.js';
import { Collection } from '../bpf/object.js';
import type { Codec } from '../bpf/codec.js';
import { LXC_OBJECT, metricsMap, SHARED_MAPS } from '../datapath/lxc.js';
import { bpfObjectPath } from '../datapath/objects.js';
import { ipcacheMap } from '../datapath/policy-maps.js';
import { dropReasonCode } from '../datapath/drop-reasons.js';
import { METRIC_EGRESS, METRIC_EVENT_LOST, METRIC_INGRESS } from '../datapath/codecs/metrics.js';
import { FlowPipeline } from './pipeline.js';
import { flowEventBytes } from './test-events.js';
import { createAgentMetrics, MAP_FILL_MAX_AGE_MS, type AgentMetrics, type MetricsSources } from './metrics.js';
import { skipUnlessRoot } from '../../test/helpers/root.js';
import { mountTempBpffs } from '../../test/helpers/bpffs.js';

/** One sample of parse-prometheus-text-format's output (counters and gauges). */
interface Family {
  name: string;
  help: string;
  type: string;
  metrics: { value?: string; labels?: Record<string, string> }[];
}
const parsePrometheus = createRequire(import.meta.url)('parse-prometheus-text-format') as (text: string) => Family[];

const cleanups: (() => void | Promise<void>)[] = [];
after(async () => { for (const c of cleanups.reverse()) await c(); });

async function serve(metrics: AgentMetrics): Promise<string> {
  const server: Server = createHttpServer([metrics.handler], (err) => { throw err; });
  const url = await listen(server, '127.0.0.1:0');
  cleanups.push(() => new Promise<void>((r) => { server.closeAllConnections(); server.close(() => r()); }));
  return url;
}

async function scrape(url: string): Promise<Map<string, Family>> {
  const res = await fetch(`${url}/metrics`);
  assert.equal(res.status, 200);
  assert.equal(res.headers.get('content-type'), 'text/plain; version=0.0.4; charset=utf-8');
  const text = await res.text();
  assert.doesNotMatch(text, / Nan$/m, 'NaN spelled as the text format spells it');
  return new Map(parsePrometheus(text).map((f) => [f.name, f]));
}

/** The value of the series of `name` whose labels are exactly `labels` (undefined when absent). */
function value(families: Map<string, Family>, name: string, labels: Record<string, string> = {}): number | undefined {
  const f = families.get(name);
  assert.ok(f, `family ${name} present`);
  const want = JSON.stringify(Object.entries(labels).sort());
  const m = f.metrics.find((s) => JSON.stringify(Object.entries(s.labels ?? {}).sort()) === want);
  return m?.value === undefined ? undefined : Number(m.value);
}

function pipeline(): FlowPipeline {
  return new FlowPipeline(16, {
    nodeName: 'node-1', endpoint: () => undefined, endpointByIp: () => undefined, rule: () => undefined, identityLabels: () => undefined,
  });
}

function feed(p: FlowPipeline, fields: Parameters<typeof flowEventBytes>[0]): void {
  const b = flowEventBytes(fields);
  p.ingest(new DataView(b.buffer, b.byteOffset, b.byteLength), 0);
}

function sources(pinDir: string, p: FlowPipeline, counts = { endpoints: 0, identities: 0, policies: 0 }): MetricsSources {
  return { pinDir, observe: () => p.stats(), endpoints: () => counts.endpoints, identities: () => counts.identities, policies: () => counts.policies };
}

test('/metrics: families with their types, pipeline counts, gauges, method and path handling', async () => {
  const p = pipeline();
  feed(p, {}); // TCP trace, forwarded
  feed(p, {});
  feed(p, { type: 1, verdict: 2, dropReason: 133, ipProto: 1, tcpFlags: 0 }); // ICMP drop
  feed(p, { type: 5, verdict: 2, dropReason: 133, matchType: 0, flags: 0x08 }); // egress policy verdict, denied, no match
  feed(p, { type: 5, verdict: 1, matchType: 2, flags: 0x04 }); // ingress policy verdict, allowed, L3-L4
  p.recordLost('PERF_EVENT_RING_BUFFER', 3);
  p.countBackpressure(7);
  const counts = { endpoints: 4, identities: 12, policies: 2 };
  const noDir = mkdtempSync(join(tmpdir(), 'waggle-metrics-'));
  cleanups.push(() => rmSync(noDir, { recursive: true, force: true }));
  const metrics = createAgentMetrics(sources(join(noDir, 'maps'), p, counts));
  cleanups.push(() => metrics.close());
  const url = await serve(metrics);

  const m = await scrape(url);
  const types: Record<string, string> = {
    waggle_forward_count_total: 'COUNTER', waggle_forward_bytes_total: 'COUNTER', waggle_drop_count_total: 'COUNTER',
    waggle_drop_bytes_total: 'COUNTER', waggle_lost_events_total: 'COUNTER', waggle_flows_processed_total: 'COUNTER',
    waggle_policy_verdicts_total: 'COUNTER', waggle_flow_store_flows: 'GAUGE', waggle_flow_store_capacity: 'GAUGE',
    waggle_endpoints: 'GAUGE', waggle_identities: 'GAUGE', waggle_policies: 'GAUGE', waggle_bpf_map_entries: 'GAUGE',
    waggle_bpf_map_capacity: 'GAUGE', waggle_bpf_map_pressure: 'GAUGE', waggle_process_resident_memory_bytes: 'GAUGE',
    waggle_nodejs_eventloop_lag_seconds: 'GAUGE',
  };
  for (const [name, type] of Object.entries(types)) assert.equal(m.get(name)?.type, type, name);
  for (const name of m.keys()) assert.match(name, /^waggle_[a-z0-9_]+$/);

  assert.equal(value(m, 'waggle_flows_processed_total', { type: 'trace', verdict: 'FORWARDED', protocol: 'TCP' }), 2);
  assert.equal(value(m, 'waggle_flows_processed_total', { type: 'drop', verdict: 'DROPPED', protocol: 'ICMPv4' }), 1);
  assert.equal(value(m, 'waggle_flows_processed_total', { type: 'policy-verdict', verdict: 'DROPPED', protocol: 'TCP' }), 1);
  assert.equal(value(m, 'waggle_policy_verdicts_total', { direction: 'egress', match: 'none', action: 'dropped' }), 1);
  assert.equal(value(m, 'waggle_policy_verdicts_total', { direction: 'ingress', match: 'l3-l4', action: 'forwarded' }), 1);
  // Without the pinned maps the ring buffer's losses come from the pipeline.
  assert.equal(value(m, 'waggle_lost_events_total', { source: 'perf_event_ring_buffer' }), 3);
  assert.equal(value(m, 'waggle_lost_events_total', { source: 'observer_events_queue' }), 7);
  assert.equal(value(m, 'waggle_flow_store_flows'), 6); // five flows and one lost-events record
  assert.equal(value(m, 'waggle_flow_store_capacity'), 16);
  assert.equal(value(m, 'waggle_endpoints'), 4);
  assert.equal(value(m, 'waggle_identities'), 12);
  assert.equal(value(m, 'waggle_policies'), 2);
  // No datapath here: the datapath families are declared but have no series.
  assert.deepEqual(m.get('waggle_forward_count_total')?.metrics, []);
  assert.deepEqual(m.get('waggle_bpf_map_entries')?.metrics, []);
  assert.ok((value(m, 'waggle_process_resident_memory_bytes') ?? 0) > 0);

  // Counters follow their sources; gauges follow the agent.
  feed(p, {});
  counts.endpoints = 5;
  const m2 = await scrape(url);
  assert.equal(value(m2, 'waggle_flows_processed_total', { type: 'trace', verdict: 'FORWARDED', protocol: 'TCP' }), 3);
  assert.equal(value(m2, 'waggle_endpoints'), 5);

  const post = await fetch(`${url}/metrics`, { method: 'POST' });
  assert.equal(post.status, 405);
  assert.equal(post.headers.get('allow'), 'GET, HEAD');
  await post.text();
  const head = await fetch(`${url}/metrics`, { method: 'HEAD' });
  assert.equal(head.status, 200);
  assert.equal(await head.text(), '');
  const other = await fetch(`${url}/metricsx`);
  assert.equal(other.status, 404, 'other paths are left to the next handler');
  await other.text();
});

/** Any bytes of the map's key or value size (entries for counting only). */
const raw = (size: number): Codec<Buffer> => ({
  size, encode: (v, b, o) => { v.copy(b, o, 0, size); }, decode: (b, o) => Buffer.from(b.subarray(o, o + size)),
});

/** Key size, value size and capacity of a pinned map. */
function shape(path: string): MapInfo {
  const fd = getPinned(path, 'map');
  try {
    return mapInfo(fd);
  } finally {
    closeFd(fd);
  }
}

function fillRaw(path: string, n: number, keySize: number, valueSize: number, from = 0): void {
  const m = BpfMap.openPinned(path, raw(keySize), raw(valueSize));
  try {
    const entries: [Buffer, Buffer][] = [];
    for (let i = from; i < from + n; i++) {
      const k = Buffer.alloc(keySize);
      k.writeUInt32LE(i + 1, 0);
      entries.push([k, Buffer.alloc(valueSize)]);
    }
    m.updateBatch(entries);
  } finally {
    m.close();
  }
}

test('/metrics on pinned maps: datapath counters summed over CPUs, map fill counted exactly and cached', async (t) => {
  if (skipUnlessRoot(t)) return;
  const fs = mountTempBpffs();
  cleanups.push(() => fs.unmount());
  const pinDir = join(fs.path, 'maps');
  Collection.load(bpfObjectPath(LXC_OBJECT), { programs: [], pinMaps: SHARED_MAPS, pinDir }).close();

  // Known datapath counters, different on every CPU.
  const dm = metricsMap(pinDir);
  const cpus = dm.cpus;
  const perCpu = (packets: number, bytes: number): { packets: number; bytes: number }[] =>
    Array.from({ length: cpus }, (_, c) => ({ packets: packets + c, bytes: bytes + 100 * c }));
  const sum = (x: number, step: number): number => cpus * x + step * (cpus * (cpus - 1)) / 2;
  const policyDenied = dropReasonCode('POLICY_DENIED');
  const spoofed = dropReasonCode('INVALID_SOURCE_IP');
  dm.update({ reason: 0, direction: METRIC_EGRESS }, perCpu(10, 1000));
  dm.update({ reason: 0, direction: METRIC_INGRESS }, perCpu(5, 500));
  dm.update({ reason: policyDenied, direction: METRIC_EGRESS }, perCpu(3, 294));
  dm.update({ reason: spoofed, direction: METRIC_INGRESS }, perCpu(1, 98));
  dm.update({ reason: policyDenied, direction: METRIC_EVENT_LOST }, perCpu(2, 196));
  dm.close();

  // Known fill: a hash map (batch lookups over several chunks), an LRU map and an LPM trie (key walk).
  const lxc = shape(join(pinDir, 'lxc_config'));
  fillRaw(join(pinDir, 'lxc_config'), 3, lxc.keySize, lxc.valueSize);
  const ct = shape(join(pinDir, 'ct'));
  fillRaw(join(pinDir, 'ct'), 9000, ct.keySize, ct.valueSize);
  const ipc = ipcacheMap(pinDir);
  for (let i = 1; i <= 5; i++) ipc.update(`10.9.0.${i}/32`, { identity: 256 + i, flags: 0 });
  ipc.update('fd00:9::/64', { identity: 2, flags: 0 });
  ipc.close();

  const metrics = createAgentMetrics(sources(pinDir, pipeline()));
  cleanups.push(() => metrics.close());
  const url = await serve(metrics);
  const m = await scrape(url);

  assert.equal(value(m, 'waggle_forward_count_total', { direction: 'EGRESS' }), sum(10, 1));
  assert.equal(value(m, 'waggle_forward_bytes_total', { direction: 'EGRESS' }), sum(1000, 100));
  assert.equal(value(m, 'waggle_forward_count_total', { direction: 'INGRESS' }), sum(5, 1));
  assert.equal(value(m, 'waggle_drop_count_total', { reason: 'POLICY_DENIED', direction: 'EGRESS' }), sum(3, 1));
  assert.equal(value(m, 'waggle_drop_bytes_total', { reason: 'POLICY_DENIED', direction: 'EGRESS' }), sum(294, 100));
  assert.equal(value(m, 'waggle_drop_count_total', { reason: 'INVALID_SOURCE_IP', direction: 'INGRESS' }), sum(1, 1));
  assert.equal(m.get('waggle_drop_count_total')?.metrics.length, 2, 'only reasons that dropped something');
  assert.equal(value(m, 'waggle_lost_events_total', { source: 'perf_event_ring_buffer' }), sum(2, 1), 'lost events from the datapath');

  const entries = (name: string): number | undefined => value(m, 'waggle_bpf_map_entries', { map_name: name });
  assert.equal(entries('lxc_config'), 3);
  assert.equal(entries('ct'), 9000);
  assert.equal(entries('ipcache'), 6);
  assert.equal(entries('endpoints'), 0);
  assert.equal(entries('policy'), 0);
  assert.equal(entries('policy_exact'), 0);
  assert.equal(entries('flow_seen'), 0);
  assert.equal(value(m, 'waggle_bpf_map_capacity', { map_name: 'ct' }), ct.maxEntries);
  assert.equal(value(m, 'waggle_bpf_map_pressure', { map_name: 'ct' }), 9000 / ct.maxEntries);
  const named = new Set(m.get('waggle_bpf_map_capacity')?.metrics.map((s) => s.labels?.map_name));
  for (const name of ['events', 'metrics', 'policy_state']) assert.ok(!named.has(name), `${name}: arrays and the ring buffer have no fill`);

  // Counts are cached: a scrape right after sees the same fill; counters are read live.
  const countedBefore = performance.now();
  fillRaw(join(pinDir, 'ct'), 10, ct.keySize, ct.valueSize, 9000);
  const dm2 = metricsMap(pinDir);
  dm2.update({ reason: 0, direction: METRIC_EGRESS }, perCpu(11, 1000));
  dm2.close();
  const m2 = await scrape(url);
  assert.equal(value(m2, 'waggle_forward_count_total', { direction: 'EGRESS' }), sum(11, 1));
  const ct2 = value(m2, 'waggle_bpf_map_entries', { map_name: 'ct' });
  if (performance.now() - countedBefore < MAP_FILL_MAX_AGE_MS) assert.equal(ct2, 9000, 'cached');
  else assert.ok(ct2 === 9000 || ct2 === 9010);

  metrics.close();
  const closed = await fetch(`${url}/metrics`);
  assert.equal(closed.status, 200, 'a closed registry still answers, empty');
  await closed.text();
});
