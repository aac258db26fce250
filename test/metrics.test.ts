/**
 * `GET /metrics` of a real agent process, with real traffic between real
 * endpoints: the answer is Prometheus text (checked line by line against the
 * exposition format, and read with a parser), every `waggle_*` family has its
 * type, no label carries an address, and the counters move by what was sent:
 *
 * - pings between two endpoints and from the node to one: forwarded packets
 *   and bytes in both directions grow by at least what was sent;
 * - pings that an egress policy denies: the drop counters of POLICY_DENIED
 *   grow by exactly the packets (and their bytes) sent, as do the flows and
 *   policy verdicts the agent decoded from the ring buffer;
 * - endpoints, policies and the fill of the shared maps (lxc_config, ipcache,
 *   ct) follow what the agent holds.
 *
 * Only deltas between two scrapes are compared. Traffic stays between the
 * endpoint namespaces and the node, on the pod CIDRs TestAgent picks
 * (10.199.x.0/24); `agent.remove()` takes everything away even on failure.
 */
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createRequire } from 'node:module';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { CT_MAX } from '../src/datapath/codecs/conntrack.js';
import { TestAgent } from './helpers/agent.js';
import { Cleanup, endpointNs, listNetns } from './helpers/netns.js';
import { requireTools, skipUnlessRoot } from './helpers/root.js';
import { checkTestAddress, ping } from './helpers/traffic.js';

const cleanup = new Cleanup();
after(() => cleanup.run());

const PID = process.pid;
const TOOLS = ['ip', 'ping'];
/** An IPv4 ICMP echo (56 bytes of data) as the TC hooks count it: Ethernet 14 + IP 20 + ICMP 8 + 56. */
const ECHO_FRAME_BYTES = 98;

// ---------------------------------------------------------------------------
// The exposition format

/** One family as parse-prometheus-text-format returns it (counters and gauges carry `value`). */
interface ParsedFamily {
  name: string;
  help: string;
  type: string;
  metrics: { value?: string; labels?: Record<string, string> }[];
}
const parsePrometheus = createRequire(import.meta.url)('parse-prometheus-text-format') as (text: string) => ParsedFamily[];

const METRIC_NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL_PAIR = /^([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\\\|\\"|\\n)*)"/;
const NUMBER = /^(?:[+-]?(?:\d+\.?\d*(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?)|[+-]?Inf|NaN)$/;
const TYPES = new Set(['counter', 'gauge', 'histogram', 'summary', 'untyped']);

/** A sample: its metric name, labels and value. */
interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

/**
 * Checks `text` line by line against the Prometheus text format 0.0.4 and
 * returns each family's type and samples: names and label names valid, label
 * values properly quoted and escaped, values numbers, one TYPE per family
 * before its samples, a family's samples together and named after it (with
 * `_bucket`/`_sum`/`_count` only for histograms and summaries), no series twice.
 */
function checkExposition(text: string): Map<string, { type: string; samples: Sample[] }> {
  assert.ok(text.endsWith('\n'), 'the text ends with a newline');
  const families = new Map<string, { type: string; help: boolean; samples: Sample[] }>();
  const series = new Set<string>();
  const done = new Set<string>();
  let current: string | undefined;
  const lines = text.slice(0, -1).split('\n');
  for (const [i, line] of lines.entries()) {
    const where = `line ${i + 1}: ${JSON.stringify(line)}`;
    if (line === '') continue;
    if (line.startsWith('#')) {
      const m = /^# (HELP|TYPE) (\S+) ?(.*)$/.exec(line);
      if (!m) continue; // a comment
      const [, kind, name, rest] = m as unknown as [string, string, string, string];
      assert.match(name, METRIC_NAME, where);
      const f = families.get(name) ?? { type: 'untyped', help: false, samples: [] };
      assert.ok(!done.has(name) && f.samples.length === 0, `${where}: ${kind} before the family's samples`);
      if (kind === 'TYPE') {
        assert.ok(TYPES.has(rest), `${where}: a known type`);
        assert.ok(!families.get(name)?.type || families.get(name)?.type === 'untyped', `${where}: one TYPE per family`);
        f.type = rest;
      } else {
        assert.ok(!f.help, `${where}: one HELP per family`);
        assert.ok(!/\\[^\\n]/.test(rest.replace(/\\\\/g, '')), `${where}: HELP escapes only \\\\ and \\n`);
        f.help = true;
      }
      families.set(name, f);
      if (current !== undefined && current !== name) done.add(current);
      current = name;
      continue;
    }
    const nameMatch = /^[a-zA-Z_:][a-zA-Z0-9_:]*/.exec(line);
    assert.ok(nameMatch, `${where}: starts with a metric name`);
    const name = nameMatch[0];
    let rest = line.slice(name.length);
    const labels: Record<string, string> = {};
    if (rest.startsWith('{')) {
      rest = rest.slice(1);
      while (!rest.startsWith('}')) {
        const lm = LABEL_PAIR.exec(rest);
        assert.ok(lm, `${where}: a label pair`);
        const [all, lname, lvalue] = lm as unknown as [string, string, string];
        assert.ok(!(lname in labels), `${where}: label ${lname} once`);
        labels[lname] = lvalue.replace(/\\(.)/g, (_, c: string) => (c === 'n' ? '\n' : c));
        rest = rest.slice(all.length);
        if (rest.startsWith(',')) rest = rest.slice(1);
        else assert.ok(rest.startsWith('}'), `${where}: labels separated by commas`);
      }
      rest = rest.slice(1);
    }
    const vm = /^ (\S+)(?: (-?\d+))?$/.exec(rest);
    assert.ok(vm, `${where}: a value (and optional timestamp) after one space`);
    assert.match(vm[1] as string, NUMBER, `${where}: the value is a number`);
    const family = [name, name.replace(/_(bucket|sum|count)$/, '')].find((n) => families.has(n));
    assert.ok(family, `${where}: a sample of a declared family`);
    const f = families.get(family) as { type: string; samples: Sample[] };
    if (family !== name) assert.ok(f.type === 'histogram' || f.type === 'summary', `${where}: suffix ${name.slice(family.length)} only on histograms and summaries`);
    if (f.type === 'histogram' && name.endsWith('_bucket')) assert.ok('le' in labels, `${where}: a bucket has le`);
    assert.ok(!done.has(family), `${where}: the samples of ${family} are together`);
    if (current !== undefined && current !== family) done.add(current);
    current = family;
    const key = `${name}${JSON.stringify(Object.entries(labels).sort())}`;
    assert.ok(!series.has(key), `${where}: series given once`);
    series.add(key);
    f.samples.push({ name, labels, value: Number(vm[1]) });
  }
  return new Map([...families].map(([n, f]) => [n, { type: f.type, samples: f.samples }]));
}

/** One scrape: the families, checked and parsed. */
type Scrape = Map<string, { type: string; samples: Sample[] }>;

async function scrape(url: string): Promise<Scrape> {
  const res = await fetch(`${url}/metrics`);
  const text = await res.text();
  assert.equal(res.status, 200, text);
  assert.match(res.headers.get('content-type') ?? '', /^text\/plain; version=0\.0\.4/);
  const checked = checkExposition(text);
  // A second, independent reader agrees on families, types and values.
  const parsed = parsePrometheus(text);
  assert.deepEqual(parsed.map((f) => f.name).sort(), [...checked.keys()].sort(), 'the parser finds the same families');
  for (const f of parsed) {
    const mine = checked.get(f.name);
    assert.equal(f.type.toLowerCase(), mine?.type, `${f.name}: type`);
    if (mine?.type !== 'counter' && mine?.type !== 'gauge') continue;
    assert.deepEqual(f.metrics.map((s) => [s.labels ?? {}, Number(s.value)]), mine.samples.map((s) => [s.labels, s.value]), `${f.name}: samples`);
  }
  return checked;
}

/** The sum of the series of `name` whose labels include `labels` (0 when there are none). */
function total(s: Scrape, name: string, labels: Record<string, string> = {}): number {
  const f = s.get(name);
  assert.ok(f, `family ${name} is there`);
  return f.samples.filter((x) => x.name === name && Object.entries(labels).every(([k, v]) => x.labels[k] === v)).reduce((a, x) => a + x.value, 0);
}

/** The value of the single series of `name` with exactly these labels, or undefined. */
function single(s: Scrape, name: string, labels: Record<string, string> = {}): number | undefined {
  const want = JSON.stringify(Object.entries(labels).sort());
  return s.get(name)?.samples.find((x) => x.name === name && JSON.stringify(Object.entries(x.labels).sort()) === want)?.value;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Scrapes until `ok` holds (flows reach the pipeline asynchronously; map fill is cached a few seconds). */
async function scrapeUntil(url: string, what: string, ok: (s: Scrape) => boolean, timeoutMs = 30_000): Promise<Scrape> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const s = await scrape(url);
    if (ok(s)) return s;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(250);
  }
}

// ---------------------------------------------------------------------------
// Endpoints and traffic

interface Endpoint {
  name: string;
  hostIfname: string;
  ipv4?: string;
  ipv6?: string;
}


/** Pings `addr` from the node's own namespace; resolves to the replies received. */
function pingFromNode(addr: string, count: number): number {
  checkTestAddress(addr);
  const r = spawnSync('ping', ['-4', '-n', '-c', String(count), '-W', '1', '-i', '0.2', addr], { encoding: 'utf8', timeout: 5_000 + count * 1_500 });
  const m = /(\d+) (?:packets )?received/.exec(r.stdout);
  if (!m) throw new Error(`ping ${addr} from the node gave no summary (exit ${r.status}): ${r.stdout}${r.stderr}`);
  return Number(m[1]);
}

/** Families, their types and the agent's own datapath label values. */
const FAMILIES: Record<string, string> = {
  waggle_forward_count_total: 'counter',
  waggle_forward_bytes_total: 'counter',
  waggle_drop_count_total: 'counter',
  waggle_drop_bytes_total: 'counter',
  waggle_lost_events_total: 'counter',
  waggle_flows_processed_total: 'counter',
  waggle_policy_verdicts_total: 'counter',
  waggle_flow_store_flows: 'gauge',
  waggle_flow_store_capacity: 'gauge',
  waggle_endpoints: 'gauge',
  waggle_identities: 'gauge',
  waggle_policies: 'gauge',
  waggle_bpf_map_entries: 'gauge',
  waggle_bpf_map_capacity: 'gauge',
  waggle_bpf_map_pressure: 'gauge',
  waggle_process_resident_memory_bytes: 'gauge',
  waggle_process_cpu_seconds_total: 'counter',
  waggle_nodejs_eventloop_lag_seconds: 'gauge',
  waggle_nodejs_eventloop_lag_p99_seconds: 'gauge',
  waggle_nodejs_heap_size_used_bytes: 'gauge',
};

const IPV4 = /\b\d{1,3}(\.\d{1,3}){3}\b/;
const IPV6 = /[0-9a-f]{0,4}:[0-9a-f]{0,4}:[0-9a-f:]*/i;

test('/metrics parses as Prometheus text and its counters match the traffic that was sent', { timeout: 300_000 }, async (t) => {
  if (skipUnlessRoot(t) || requireTools(t, ...TOOLS)) return;
  t.after(() => cleanup.run());
  const agent = new TestAgent({ nodeName: `metrics-${PID}` });
  cleanup.add(() => agent.remove(), `agent ${agent.nodeName}`);
  await agent.start();
  const create = (name: string, labels: string): Endpoint =>
    JSON.parse(agent.ok(['endpoint', 'create', name, '--labels', labels, '-n', 'metrics', '-o', 'json'])) as Endpoint;
  const a = create(`met-${PID}-a`, 'app=client');
  const b = create(`met-${PID}-b`, 'app=server');
  const bIp = b.ipv4 as string;

  // --- The format, the families, the gauges.
  const s0 = await scrape(agent.url);
  for (const [name, type] of Object.entries(FAMILIES)) assert.equal(s0.get(name)?.type, type, `${name} has TYPE ${type}`);
  for (const [name, f] of s0) {
    assert.match(name, /^waggle_/, 'every family is waggle_*');
    for (const x of f.samples) {
      for (const [k, v] of Object.entries(x.labels)) {
        assert.ok(!IPV4.test(v) && !IPV6.test(v), `${x.name}{${k}="${v}"}: no addresses in labels`);
      }
    }
  }
  assert.equal(single(s0, 'waggle_endpoints'), 2);
  assert.equal(single(s0, 'waggle_policies'), 0);
  assert.ok((single(s0, 'waggle_identities') ?? 0) >= 2, 'at least the two endpoints\' identities');
  assert.equal(single(s0, 'waggle_flow_store_capacity'), 4096);
  assert.ok((single(s0, 'waggle_process_resident_memory_bytes') ?? 0) > 10 * 2 ** 20, 'the agent\'s RSS');
  assert.ok((single(s0, 'waggle_nodejs_eventloop_lag_seconds') ?? -1) >= 0);
  assert.equal(single(s0, 'waggle_bpf_map_entries', { map_name: 'lxc_config' }), 2, 'one lxc_config entry per endpoint');
  assert.ok((single(s0, 'waggle_bpf_map_entries', { map_name: 'ipcache' }) ?? 0) > 0, 'the ipcache has entries');
  assert.equal(single(s0, 'waggle_bpf_map_capacity', { map_name: 'ct' }), CT_MAX);
  for (const f of ['waggle_bpf_map_entries', 'waggle_bpf_map_capacity', 'waggle_bpf_map_pressure']) {
    assert.deepEqual(s0.get(f)?.samples.map((x) => x.labels.map_name).sort(),
      ['ct', 'endpoints', 'flow_seen', 'ipcache', 'lb_affinity', 'lb_backends', 'lb_nat', 'lb_rev_nat', 'lb_services', 'lxc_config', 'policy', 'policy_exact'], `${f}: the shared maps with a fill`);
  }
  for (const x of s0.get('waggle_bpf_map_pressure')?.samples ?? []) assert.ok(x.value >= 0 && x.value <= 1, `${x.labels.map_name} pressure in [0, 1]`);
  assert.deepEqual(s0.get('waggle_lost_events_total')?.samples.map((x) => x.labels.source).sort(), ['observer_events_queue', 'perf_event_ring_buffer']);
  assert.deepEqual(s0.get('waggle_forward_count_total')?.samples.map((x) => x.labels.direction).sort(), ['EGRESS', 'INGRESS']);

  // --- Forwarded: endpoint to endpoint (counted once, leaving the sender: EGRESS) and node to endpoint (INGRESS).
  const N = 5;
  const K = 3;
  assert.equal(await ping(endpointNs(a.name), bIp, N), N, 'a reaches b');
  assert.equal(pingFromNode(a.ipv4 as string, K), K, 'the node reaches a');
  const s1 = await scrape(agent.url);
  const delta = (later: Scrape, earlier: Scrape, name: string, labels: Record<string, string> = {}): number =>
    total(later, name, labels) - total(earlier, name, labels);
  assert.ok(delta(s1, s0, 'waggle_forward_count_total', { direction: 'EGRESS' }) >= 2 * N + K, 'echo requests a → b, replies b → a and a → node');
  assert.ok(delta(s1, s0, 'waggle_forward_bytes_total', { direction: 'EGRESS' }) >= (2 * N + K) * ECHO_FRAME_BYTES);
  assert.ok(delta(s1, s0, 'waggle_forward_count_total', { direction: 'INGRESS' }) >= K, 'echo requests node → a');
  assert.ok(delta(s1, s0, 'waggle_forward_bytes_total', { direction: 'INGRESS' }) >= K * ECHO_FRAME_BYTES);
  assert.equal(delta(s1, s0, 'waggle_drop_count_total', { reason: 'POLICY_DENIED' }), 0, 'no policy yet: no policy drops');
  const traced = await scrapeUntil(agent.url, 'trace flows of the pings', (s) =>
    delta(s, s0, 'waggle_flows_processed_total', { type: 'trace', verdict: 'FORWARDED', protocol: 'ICMPv4' }) >= 2);
  assert.ok(total(traced, 'waggle_flow_store_flows') > 0);
  const ct = await scrapeUntil(agent.url, 'conntrack entries of the pings in waggle_bpf_map_entries',
    (s) => (single(s, 'waggle_bpf_map_entries', { map_name: 'ct' }) ?? 0) > 0);
  assert.ok((single(ct, 'waggle_bpf_map_pressure', { map_name: 'ct' }) ?? 0) > 0);

  // --- Dropped: a's egress policy allows nothing towards b; every echo request is dropped where it leaves a.
  const policy = join(agent.dir, 'deny-egress.yaml');
  writeFileSync(policy, [
    'apiVersion: cilium.io/v2',
    'kind: CiliumNetworkPolicy',
    'metadata:',
    '  name: client-egress-nowhere',
    '  namespace: metrics',
    'spec:',
    '  endpointSelector: {matchLabels: {app: client}}',
    '  egress:',
    '  - toEndpoints:',
    '    - matchLabels: {app: nobody}',
    '',
  ].join('\n'));
  agent.ok(['apply', '-f', policy]);
  const s2 = await scrape(agent.url);
  assert.equal(single(s2, 'waggle_policies'), 1);
  const M = 4;
  assert.equal(await ping(endpointNs(a.name), bIp, M), 0, 'the policy drops a → b');
  // The datapath counts synchronously: exact at once.
  const s3 = await scrape(agent.url);
  assert.equal(delta(s3, s2, 'waggle_drop_count_total', { reason: 'POLICY_DENIED', direction: 'EGRESS' }), M, 'one drop per echo request');
  assert.equal(delta(s3, s2, 'waggle_drop_bytes_total', { reason: 'POLICY_DENIED', direction: 'EGRESS' }), M * ECHO_FRAME_BYTES);
  assert.equal(delta(s3, s2, 'waggle_drop_count_total'), M, 'no other drop');
  assert.equal(delta(s3, s2, 'waggle_drop_count_total', { direction: 'INGRESS' }), 0);
  // The flows reach the pipeline through the ring buffer: wait for them, then compare exactly.
  const s4 = await scrapeUntil(agent.url, `${M} drop flows and ${M} policy verdicts`, (s) =>
    delta(s, s2, 'waggle_flows_processed_total', { type: 'drop' }) >= M && delta(s, s2, 'waggle_policy_verdicts_total') >= M);
  assert.equal(delta(s4, s2, 'waggle_flows_processed_total', { type: 'drop', verdict: 'DROPPED', protocol: 'ICMPv4' }), M);
  assert.equal(delta(s4, s2, 'waggle_flows_processed_total', { type: 'drop' }), M);
  assert.equal(delta(s4, s2, 'waggle_flows_processed_total', { type: 'policy-verdict', verdict: 'DROPPED', protocol: 'ICMPv4' }), M);
  assert.equal(delta(s4, s2, 'waggle_policy_verdicts_total', { direction: 'egress', action: 'dropped' }), M);
  assert.equal(delta(s4, s2, 'waggle_policy_verdicts_total'), M, 'no other verdict');
  assert.equal(delta(s4, s0, 'waggle_lost_events_total'), 0, 'nothing lost at this rate');
  assert.equal(single(s4, 'waggle_endpoints'), 2);

  // Only GET (and HEAD) on /metrics.
  const post = await fetch(`${agent.url}/metrics`, { method: 'POST' });
  assert.equal(post.status, 405);
  await post.text();
});

test('nothing is left behind: no namespace or host-side veth of this run', async (t) => {
  if (skipUnlessRoot(t)) return;
  await cleanup.run();
  assert.deepEqual(listNetns().filter((n) => n.startsWith(`met-${PID}-`)), [], 'no endpoint namespace left');
  const r = spawnSync('ps', ['-eo', 'args'], { encoding: 'utf8' });
  assert.ok(!r.stdout.split('\n').some((l) => l.includes(`metrics-${PID}`)), 'no agent process of this run');
});
