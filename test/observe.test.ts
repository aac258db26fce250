/**
 * `waggle observe` against a real agent with real flows between real
 * endpoints (TCP, UDP, ICMP over IPv4 and IPv6, and connections a policy
 * drops):
 *
 * 1. every filter flag and its `--not` negation: what a filter returns all
 *    satisfies it (checked on the Hubble JSON, independently of the agent's
 *    matcher), what its negation returns none does, and together they are
 *    exactly all the flows; repeated flags OR, different flags AND;
 * 2. `--since`/`--until` bound by time, `--last N` is the newest N;
 * 3. the output formats: JSON with Hubble's field names, table, dict, compact;
 * 4. `--follow` delivers a new flow within 1 s (the bound);
 * 5. an induced ring buffer overflow (the agent stopped with SIGSTOP while a
 *    flood of dropped packets arrives) shows up as lost events in
 *    `waggle status`, in `/metrics` and as a LOST_EVENTS record in the stream;
 * 6. bad filters: exit 2 and one clear sentence.
 *
 * All queries after the traffic carry `--until` the end of the traffic, so the
 * set of flows they see does not move. Traffic stays between the endpoint
 * namespaces on the pod CIDRs TestAgent picks; everything is removed after.
 */
import { after, test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { HubbleFlow, HubbleRecord } from '../src/observe/hubble.js';
import { CLI, TestAgent } from './helpers/agent.js';
import { Cleanup, endpointNs, listNetns, type Netns } from './helpers/netns.js';
import { requireTools, skipUnlessRoot } from './helpers/root.js';
import { childEnv, ping, stop as stopChild, tcpExchange, udpExchange } from './helpers/traffic.js';

const cleanup = new Cleanup();
after(() => cleanup.run());

const PID = process.pid;
const TOOLS = ['ip', 'ping'];

interface Endpoint { name: string; namespace: string; ipv4: string; ipv6: string; hostIfname: string; netnsPath: string }

interface Env {
  agent: TestAgent;
  dir: string;
  a: Endpoint;
  b: Endpoint;
  c: Endpoint;
  /** A quiet moment between the first and the second half of the traffic. */
  midMs: number;
  /** After all traffic (every query is bounded by it). */
  endMs: number;
  all: HubbleFlow[];
}


const POLICY = (web: string) => `apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata:
  name: db-from-web
  namespace: data
spec:
  endpointSelector:
    matchLabels:
      app: db
  ingress:
  - fromEndpoints:
    - matchLabels:
        app: ${web}
        k8s:io.kubernetes.pod.namespace: shop
`;

function records(agent: TestAgent, args: string[]): HubbleRecord[] {
  const out = agent.ok(['observe', '-o', 'json', ...args]);
  return out.split('\n').filter(Boolean).map((l) => JSON.parse(l) as HubbleRecord);
}

function flowsOf(recs: HubbleRecord[]): HubbleFlow[] {
  return recs.flatMap((r) => ('flow' in r ? [r.flow] : []));
}

async function createEnv(): Promise<Env> {
  const dir = mkdtempSync(join(tmpdir(), 'waggle-observe-'));
  cleanup.add(() => rmSync(dir, { recursive: true, force: true }), `temp dir ${dir}`);
  const agent = new TestAgent({ flowBuffer: 100_000 });
  cleanup.add(() => agent.remove(), `agent ${agent.nodeName}`);
  await agent.start();
  const create = (name: string, labels: string, ns: string): Endpoint =>
    JSON.parse(agent.ok(['endpoint', 'create', `obs-${PID}-${name}`, '--labels', labels, '--namespace', ns, '-o', 'json'])) as Endpoint;
  const a = create('a', 'app=client', 'shop');
  const b = create('b', 'app=web', 'shop');
  const c = create('c', 'app=db', 'data');
  writeFileSync(join(dir, 'policy.yaml'), POLICY('web'));
  agent.ok(['apply', '-f', join(dir, 'policy.yaml')]);
  const [na, nb, nc] = [a, b, c].map((e) => endpointNs(e.name)) as [Netns, Netns, Netns];

  // First half: ICMP both families, TCP and UDP between a and b.
  assert.equal(await ping(na, b.ipv4, 2), 2);
  assert.equal(await ping(na, c.ipv6, 2), 0, 'a is not web: the policy drops its pings to c');
  assert.equal(await tcpExchange(na, nb, b.ipv4, 8080, 1000), 1000);
  await sleep(300);
  const midMs = Date.now();
  await sleep(300);
  // Second half: UDP over IPv6, a dropped TCP connection, web reaching db.
  assert.equal(await udpExchange(na, nb, b.ipv6, 5353, 2), 2);
  assert.equal(await tcpExchange(na, nc, c.ipv4, 5432, 100, { timeoutMs: 1500 }), 0);
  assert.equal(await tcpExchange(nb, nc, c.ipv4, 5432, 100), 100);
  await sleep(500);
  const endMs = Date.now();
  const all = flowsOf(records(agent, ['--until', new Date(endMs).toISOString()]));
  return { agent, dir, a, b, c, midMs, endMs, all };
}

let envPromise: Promise<Env> | undefined;
async function env(t: TestContext): Promise<Env | undefined> {
  if (skipUnlessRoot(t) || requireTools(t, ...TOOLS)) return undefined;
  envPromise ??= createEnv();
  return envPromise;
}

const until = (e: Env): string[] => ['--until', new Date(e.endMs).toISOString()];
const ports = (f: HubbleFlow): number[] => {
  const l4 = f.l4 ? Object.values(f.l4)[0] : undefined;
  return [l4?.source_port, l4?.destination_port].filter((p): p is number => typeof p === 'number');
};

/** The filter's flows all satisfy `pred`, its negation's none do, and together they are all flows. */
function checkFilter(e: Env, args: string[], pred: (f: HubbleFlow) => boolean, what: string): void {
  const got = flowsOf(records(e.agent, [...args, ...until(e)]));
  const negArgs = args[0] === '--not' ? args.slice(1) : ['--not', ...args];
  const neg = flowsOf(records(e.agent, [...negArgs, ...until(e)]));
  assert.ok(got.length > 0, `${what}: matched nothing`);
  for (const f of got) assert.ok(pred(f), `${what}: ${f.Summary} ${JSON.stringify(f.IP)} should not match`);
  if (args.length === 2 || (args[0] === '--not' && args.length === 3)) {
    for (const f of neg) assert.ok(!pred(f), `${what} negated: ${f.Summary} ${JSON.stringify(f.IP)} should not match`);
    assert.deepEqual([...got, ...neg].map((f) => f.uuid).sort(), e.all.map((f) => f.uuid).sort(), `${what}: filter + negation = all flows`);
  }
  // The same flows the whole set shows under the same predicate (nothing missed).
  assert.deepEqual(got.map((f) => f.uuid).sort(), e.all.filter(pred).map((f) => f.uuid).sort(), `${what}: all matching flows returned`);
}

test('every filter and its negation, against real flows', async (t) => {
  const e = await env(t);
  if (!e) return;
  const v6prefix = e.agent.podCidrs[1]!.split('::')[0]!;
  const cases: [string[], (f: HubbleFlow) => boolean][] = [
    [['--from-endpoint', `shop/${e.a.name}`], (f) => f.source?.pod_name === e.a.name],
    [['--to-endpoint', e.c.name], (f) => f.destination?.pod_name === e.c.name],
    [['--from-label', 'app=client'], (f) => f.source?.labels?.includes('k8s:app=client') === true],
    [['--to-label', 'k8s:app=db'], (f) => f.destination?.labels?.includes('k8s:app=db') === true],
    [['--from-ip', e.a.ipv4], (f) => f.IP?.source === e.a.ipv4],
    [['--to-ip', e.agent.podCidrs[1]!], (f) => f.IP?.destination.startsWith(`${v6prefix}:`) === true],
    [['--from-namespace', 'shop'], (f) => f.source?.namespace === 'shop'],
    [['--to-namespace', 'data'], (f) => f.destination?.namespace === 'data'],
    [['--port', '8080'], (f) => ports(f).includes(8080)],
    [['--protocol', 'udp'], (f) => f.l4?.UDP !== undefined],
    [['--protocol', 'ICMP'], (f) => f.l4?.ICMPv4 !== undefined || f.l4?.ICMPv6 !== undefined],
    [['--verdict', 'DROPPED'], (f) => f.verdict === 'DROPPED'],
    [['--type', 'drop'], (f) => f.event_type.type === 1],
    [['--type', 'trace'], (f) => f.event_type.type === 4],
    [['--type', 'policy-verdict'], (f) => f.event_type.type === 5],
  ];
  for (const [args, pred] of cases) checkFilter(e, args, pred, args.join(' '));
  // Negating the first of two filters: the second still applies.
  checkFilter(e, ['--not', '--verdict', 'DROPPED', '--to-namespace', 'data'],
    (f) => f.verdict !== 'DROPPED' && f.destination?.namespace === 'data', 'not dropped, to data');
});

test('repeated flags OR, different flags AND', async (t) => {
  const e = await env(t);
  if (!e) return;
  checkFilter(e, ['--protocol', 'tcp', '--protocol', 'udp'], (f) => f.l4?.TCP !== undefined || f.l4?.UDP !== undefined, 'tcp or udp');
  checkFilter(e, ['--from-namespace', 'shop', '--protocol', 'tcp', '--verdict', 'DROPPED'],
    (f) => f.source?.namespace === 'shop' && f.l4?.TCP !== undefined && f.verdict === 'DROPPED', 'shop, tcp, dropped');
  const drops = flowsOf(records(e.agent, ['--verdict', 'DROPPED', ...until(e)]));
  assert.ok(drops.some((f) => f.drop_reason_desc === 'POLICY_DENIED' && f.destination?.pod_name === e.c.name && f.l4?.TCP?.destination_port === 5432),
    'the TCP connection from a to c was dropped by policy');
  assert.ok(drops.every((f) => f.source?.pod_name !== e.b.name || f.destination?.pod_name !== e.c.name), 'web reaching db was not dropped');
});

test('--since, --until and --last', async (t) => {
  const e = await env(t);
  if (!e) return;
  const mid = new Date(e.midMs).toISOString();
  const before = flowsOf(records(e.agent, ['--until', mid]));
  const afterMid = flowsOf(records(e.agent, ['--since', mid, ...until(e)]));
  assert.ok(before.length > 0 && afterMid.length > 0);
  for (const f of before) assert.ok(Date.parse(f.time) <= e.midMs, `${f.time} is not after ${mid}`);
  for (const f of afterMid) assert.ok(Date.parse(f.time) >= e.midMs - 1 && Date.parse(f.time) <= e.endMs + 1);
  assert.deepEqual([...before, ...afterMid].map((f) => f.uuid).sort(), e.all.map((f) => f.uuid).sort());
  assert.ok(before.some((f) => f.l4?.ICMPv4) && !before.some((f) => f.l4?.UDP), 'ICMP came before, UDP after');
  assert.ok(afterMid.some((f) => f.l4?.UDP));
  const last3 = flowsOf(records(e.agent, ['--last', '3', ...until(e)]));
  assert.deepEqual(last3.map((f) => f.uuid), e.all.slice(-3).map((f) => f.uuid));
  // A duration: everything happened in the last ten minutes.
  assert.equal(flowsOf(records(e.agent, ['--since', '10m', ...until(e)])).length, e.all.length);
});

test('output formats: Hubble JSON field names, table, dict, compact', async (t) => {
  const e = await env(t);
  if (!e) return;
  const drop = e.all.find((f) => f.verdict === 'DROPPED' && f.l4?.TCP);
  assert.ok(drop);
  for (const key of ['time', 'uuid', 'verdict', 'drop_reason_desc', 'IP', 'l4', 'source', 'destination', 'Type', 'node_name', 'event_type', 'traffic_direction', 'Summary']) {
    assert.ok(key in drop, `a dropped flow has ${key}`);
  }
  assert.ok(e.all.some((f) => f.is_reply === true) && e.all.some((f) => f.is_reply === false), 'is_reply on both sides');
  const args = ['--to-endpoint', e.c.name, ...until(e)];
  const n = flowsOf(records(e.agent, args)).length;
  const table = e.agent.ok(['observe', '-o', 'table', ...args]).trimEnd().split('\n');
  assert.match(table[0]!, /^TIMESTAMP\s+SOURCE\s+DESTINATION\s+TYPE\s+VERDICT\s+SUMMARY/);
  assert.equal(table.length, n + 1);
  const dict = e.agent.ok(['observe', '-o', 'dict', '--print-node-name', ...args]);
  assert.equal(dict.match(/^\s*VERDICT: /gm)?.length, n);
  assert.equal(dict.match(new RegExp(`^\\s*NODE: ${e.agent.nodeName}$`, 'gm'))?.length, n);
  const compact = e.agent.ok(['observe', ...args]).trimEnd().split('\n');
  assert.equal(compact.length, n);
  assert.ok(compact.some((l) => l.includes('DROPPED (POLICY_DENIED)')));
  assert.ok(!compact.join('\n').includes('\x1b['), 'no colour when stdout is not a terminal');
});

/** A sender inside an endpoint: each line `ADDR PORT` on stdin sends one UDP datagram and prints the time it was sent. */
const SENDER = `
const dgram = require('dgram');
const s4 = dgram.createSocket('udp4');
require('readline').createInterface({ input: process.stdin }).on('line', (l) => {
  const [addr, port] = l.split(' ');
  s4.send(Buffer.from('x'), Number(port), addr, () => console.log(Date.now()));
});
`;

function lines(child: ChildProcess, onLine: (l: string) => void): void {
  let buf = '';
  child.stdout?.on('data', (d: Buffer) => {
    buf += d.toString();
    let nl: number;
    while ((nl = buf.indexOf('\n')) >= 0) { onLine(buf.slice(0, nl)); buf = buf.slice(nl + 1); }
  });
}

test('--follow delivers a new flow within 1 s', async (t) => {
  const e = await env(t);
  if (!e) return;
  const follower = spawn(process.execPath, [CLI, 'observe', '--follow', '-o', 'json', '--to-port', '7777', '--to-port', '7778'], { env: { ...childEnv(), WAGGLE_API_SOCKET: e.agent.apiSocket }, stdio: ['ignore', 'pipe', 'pipe'] });
  cleanup.add(() => stopChild(follower), 'observe --follow');
  const sender = endpointNs(e.a.name).spawn([process.execPath, '-e', SENDER], { env: childEnv() });
  cleanup.add(() => stopChild(sender), 'UDP sender');
  const got: { port: number; at: number }[] = [];
  lines(follower, (l) => {
    const r = JSON.parse(l) as HubbleRecord;
    if ('flow' in r && r.flow.l4?.UDP) got.push({ port: r.flow.l4.UDP.destination_port as number, at: Date.now() });
  });
  const sentAt: number[] = [];
  lines(sender, (l) => sentAt.push(Number(l)));
  // Until the stream is up: datagrams to 7777, one every 200 ms.
  for (let i = 0; i < 50 && !got.some((g) => g.port === 7777); i++) {
    sender.stdin?.write(`${e.b.ipv4} 7777\n`);
    await sleep(200);
  }
  assert.ok(got.some((g) => g.port === 7777), 'the follower printed a flow');
  const n = sentAt.length;
  sender.stdin?.write(`${e.b.ipv4} 7778\n`);
  for (let i = 0; i < 100 && !got.some((g) => g.port === 7778); i++) await sleep(20);
  const line = got.find((g) => g.port === 7778);
  assert.ok(line, 'the new flow arrived');
  for (let i = 0; i < 50 && sentAt.length <= n; i++) await sleep(10);
  const latency = line.at - sentAt[n]!;
  t.diagnostic(`send → printed line: ${latency} ms`);
  assert.ok(latency < 1000, `delivered after ${latency} ms`);
  await stopChild(sender);
  await stopChild(follower);
});

const FLOOD = `
const dgram = require('dgram');
const [addr, port, count] = process.argv.slice(1);
const s = dgram.createSocket('udp4');
let sent = 0;
const burst = () => {
  for (let i = 0; i < 500 && sent < Number(count); i++, sent++) s.send(Buffer.alloc(8), Number(port), addr);
  if (sent < Number(count)) setImmediate(burst); else setTimeout(() => { console.log(sent); process.exit(0); }, 200);
};
burst();
`;

test('an induced ring buffer overflow shows as lost events in status, metrics and the stream', async (t) => {
  const e = await env(t);
  if (!e) return;
  const status = (): { lostRingBuffer: number } => (JSON.parse(e.agent.ok(['status', '-o', 'json'])) as { flows: { lostRingBuffer: number } }).flows;
  assert.equal(status().lostRingBuffer, 0, 'nothing lost before');
  const pid = e.agent.pid;
  assert.ok(pid);
  // Stopped, the agent reads nothing: 120,000 dropped datagrams (one drop
  // event each) overflow the 4 MiB ring (about 40,000 records).
  process.kill(pid, 'SIGSTOP');
  try {
    const flood = endpointNs(e.a.name).spawn([process.execPath, '-e', FLOOD, e.c.ipv4, '6000', '120000'], { env: childEnv() });
    const done = new Promise<number | null>((r) => flood.once('exit', r));
    assert.equal(await done, 0);
  } finally {
    process.kill(pid, 'SIGCONT');
  }
  let lost = 0;
  for (let i = 0; i < 100 && lost === 0; i++) { await sleep(100); lost = status().lostRingBuffer; }
  assert.ok(lost > 0, 'status counts the lost events');
  const metrics = await (await fetch(`${e.agent.url}/metrics`)).text();
  const m = /^waggle_lost_events_total\{source="perf_event_ring_buffer"\} (\d+)$/m.exec(metrics);
  assert.ok(m, 'metrics has the ring buffer lost-events counter');
  assert.ok(Number(m[1]) >= lost, `metrics says ${m[1]}, status ${lost}`);
  // Lost-event records pass every filter (they are not flows): `--type l7` matches no flow here,
  // so only they come back (the flood itself is tens of thousands of flows).
  const lostRecs = records(e.agent, ['--type', 'l7', '--since', '5m']).filter((r): r is Extract<HubbleRecord, { lost_events: unknown }> => 'lost_events' in r);
  assert.ok(lostRecs.some((r) => r.lost_events.source === 'PERF_EVENT_RING_BUFFER'));
  assert.equal(lostRecs.filter((r) => r.lost_events.source === 'PERF_EVENT_RING_BUFFER').reduce((a, r) => a + r.lost_events.num_events_lost, 0), status().lostRingBuffer);
  assert.ok(records(e.agent, ['--verdict', 'FORWARDED', '--type', 'trace', '--since', '5m']).some((r) => 'lost_events' in r), 'shown under any filter');
});

test('bad filters: exit 2, one clear sentence, nothing streamed', async (t) => {
  const e = await env(t);
  if (!e) return;
  const bad: [string[], RegExp][] = [
    [['--from-ip', '10.0.0.300'], /--from-ip.*10\.0\.0\.300/],
    [['--verdict', 'MAYBE'], /--verdict.*MAYBE.*FORWARDED/],
    [['--type', 'bogus'], /--type.*bogus/],
    [['--port', '70000'], /--port.*70000/],
    [['--since', 'yesterday'], /--since.*yesterday/],
    [['--last', '0'], /--last/],
    [['--not'], /--not/],
  ];
  for (const [args, re] of bad) {
    const r = e.agent.cli(['observe', ...args]);
    assert.equal(r.code, 2, `${args.join(' ')} exits 2 (got ${r.code}: ${r.stderr})`);
    assert.match(r.stderr, re);
    assert.equal(r.stdout, '');
  }
});

test('nothing is left behind', async (t) => {
  if (skipUnlessRoot(t)) return;
  await cleanup.run();
  envPromise = undefined;
  assert.deepEqual(listNetns().filter((n) => n.startsWith(`obs-${PID}-`)), []);
});
