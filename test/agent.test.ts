/**
 * `waggle agent` as a real process, driven through the `waggle` CLI and its
 * API socket, with real traffic between endpoint namespaces:
 *
 * 1. three endpoints: ICMP, TCP and UDP between every ordered pair over IPv4
 *    and IPv6; Hubble flows with the right endpoints, labels and verdicts; the
 *    tcx programs attached to each host-side veth;
 * 2. anti-spoofing: a foreign source address (and a foreign MAC) never arrives,
 *    and shows as a DROPPED flow with the right drop reason;
 * 3. an agent restart in the middle of a TCP stream does not break it;
 * 4. bad input: a one-sentence error, the right exit code, nothing created;
 * 5. 1,000 create/delete cycles leak nothing (links, namespaces, descriptors,
 *    map entries, pins);
 * 6. `waggle agent --cleanup` removes everything.
 *
 * Traffic stays between the endpoint namespaces the tests create, on the pod
 * CIDRs TestAgent picks (10.199.x.0/24, fd99:x::/64).
 */
import { after, test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { closeFd } from '../src/bpf/fd.js';
import { linkInfo, LinkType } from '../src/bpf/link/link.js';
import { bpf } from '../src/bpf/sys.js';
import { AttachType, Cmd } from '../src/bpf/types.js';
import { hostIfnameFor } from '../src/endpoint/plumbing.js';
import { apiRequest, CLI, TestAgent } from './helpers/agent.js';
import { Cleanup, createNetns, endpointNs, ip, listNetns, type Netns } from './helpers/netns.js';
import { requireTools, skipUnlessRoot } from './helpers/root.js';
import { childEnv, ping, stop as stopChild, tcpExchange, udpExchange } from './helpers/traffic.js';

const cleanup = new Cleanup();
after(() => cleanup.run());

const PID = process.pid;
/** What this file's agents made, for the final check that nothing is left. */
const made = { dirs: new Set<string>(), ifnames: new Set<string>() };
const TOOLS = ['ip', 'ping', 'bpftool', 'nsenter'];

// ---------------------------------------------------------------------------
// Helpers

/** What `waggle endpoint get -o json` prints. */
interface Endpoint {
  id: number;
  name: string;
  namespace: string;
  labels: Record<string, string>;
  netnsPath: string;
  netnsCreated: boolean;
  hostIfname: string;
  hostIfindex: number;
  hostMac: string;
  mac: string;
  ipv4?: string;
  ipv6?: string;
  state: string;
  problem?: string;
}

interface FlowEndpoint {
  ID?: number;
  namespace?: string;
  labels?: string[];
  pod_name?: string;
}

/** The parts of a Hubble flow the tests look at (`hubble observe -o json`). */
interface Flow {
  time: string;
  uuid: string;
  verdict: string;
  drop_reason?: number;
  drop_reason_desc?: string;
  IP?: { source: string; destination: string; ipVersion: string };
  l4?: Record<string, Record<string, unknown>>;
  source?: FlowEndpoint;
  destination?: FlowEndpoint;
  Type: string;
  node_name: string;
  event_type: { type: number; sub_type?: number };
  traffic_direction?: string;
  trace_observation_point?: string;
  is_reply?: boolean;
  interface?: { index: number; name?: string };
  Summary: string;
}

interface FlowRecord {
  flow: Flow;
  node_name: string;
  time: string;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Polls `fn` until it returns a value other than undefined, or throws with `what` after `timeoutMs`. */
async function waitFor<T>(what: string, fn: () => T | undefined, timeoutMs = 10_000, stepMs = 250): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = fn();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(stepMs);
  }
}


/** Starts a TestAgent and registers its removal (stop + `waggle agent --cleanup`). */
async function startAgent(opts: ConstructorParameters<typeof TestAgent>[0] = {}): Promise<TestAgent> {
  const agent = new TestAgent(opts);
  made.dirs.add(agent.dir);
  cleanup.add(() => agent.remove(), `agent ${agent.nodeName}`);
  await agent.start();
  return agent;
}

const pinDirOf = (agent: TestAgent): string => join(agent.dir, 'bpffs', 'maps');

function createEndpoint(agent: TestAgent, name: string, labels: string, namespace: string, extra: string[] = []): Endpoint {
  const out = agent.ok(['endpoint', 'create', name, '--labels', labels, '-n', namespace, '-o', 'json', ...extra]);
  const ep = JSON.parse(out) as Endpoint;
  made.ifnames.add(ep.hostIfname);
  return ep;
}

function getEndpoint(agent: TestAgent, name: string): Endpoint {
  return JSON.parse(agent.ok(['endpoint', 'get', name, '-o', 'json'])) as Endpoint;
}

function listEndpoints(agent: TestAgent): Endpoint[] {
  return JSON.parse(agent.ok(['endpoint', 'list', '-o', 'json'])) as Endpoint[];
}

/** Every record `waggle observe -o json` prints (all the agent keeps). */
function observe(agent: TestAgent, extra: string[] = []): unknown[] {
  const out = agent.ok(['observe', '-o', 'json', ...extra]);
  return out.split('\n').filter((l) => l.trim() !== '').map((l) => JSON.parse(l) as unknown);
}

function flowsOf(records: unknown[]): Flow[] {
  return records.filter((r): r is FlowRecord => typeof r === 'object' && r !== null && 'flow' in r).map((r) => r.flow);
}

/** Names of the links in the node's namespace. */
function nodeLinks(): string[] {
  return (JSON.parse(ip(['-j', 'link', 'show'])) as { ifname: string }[]).map((l) => l.ifname);
}

function linkIfindex(ifname: string): number | undefined {
  const r = spawnSync('ip', ['-j', 'link', 'show', 'dev', ifname], { encoding: 'utf8', timeout: 10_000 });
  if (r.status !== 0) return undefined;
  return (JSON.parse(r.stdout) as { ifindex: number }[])[0]?.ifindex;
}

function bpftoolJson<T>(args: string[]): T {
  const r = spawnSync('bpftool', ['-j', ...args], { encoding: 'utf8', timeout: 30_000 });
  if (r.status !== 0) throw new Error(`bpftool ${args.join(' ')} failed (${r.status}): ${r.stderr}${r.stdout}`);
  return JSON.parse(r.stdout) as T;
}

/** Ids of all BPF links the kernel has now (`bpftool link show`). */
function kernelLinkIds(): Set<number> {
  return new Set(bpftoolJson<{ id: number }[]>(['link', 'show']).map((l) => l.id));
}

function kernelProgIds(): Set<number> {
  return new Set(bpftoolJson<{ id: number }[]>(['prog', 'show']).map((p) => p.id));
}

function kernelMapIds(): Set<number> {
  return new Set(bpftoolJson<{ id: number }[]>(['map', 'show']).map((m) => m.id));
}

/** A tcx link as the kernel describes it. */
interface TcxLink {
  id: number;
  programId: number;
  programName: string;
  ifindex: number;
  attachType: number | undefined;
}

/**
 * Every tcx link the kernel has on `ifindex`, found by walking the kernel's
 * link ids (BPF_LINK_GET_NEXT_ID): Debian's bpftool 7.1 shows neither tcx
 * links' devices nor tcx hooks in `bpftool net`, and this does not depend on
 * where the agent pins its links.
 */
function tcxLinksOn(ifindex: number): TcxLink[] {
  const out: TcxLink[] = [];
  const attr = Buffer.alloc(12);
  let id = 0;
  for (;;) {
    attr.fill(0);
    attr.writeUInt32LE(id, 0);
    if (bpf(Cmd.LinkGetNextId, attr) < 0) break; // ENOENT: no more links
    id = attr.readUInt32LE(4);
    attr.fill(0);
    attr.writeUInt32LE(id, 0);
    const fd = bpf(Cmd.LinkGetFdById, attr);
    if (fd < 0) continue; // gone meanwhile
    try {
      const info = linkInfo(fd);
      if (info.type === LinkType.Tcx && info.ifindex === ifindex) {
        out.push({ id: info.id, programId: info.programId, programName: '', ifindex, attachType: info.attachType });
      }
    } finally {
      closeFd(fd);
    }
  }
  for (const l of out) l.programName = bpftoolJson<{ name: string }>(['prog', 'show', 'id', String(l.programId)]).name;
  return out;
}

/**
 * Asserts Waggle's from_endpoint (tcx ingress) and to_endpoint (tcx egress),
 * and nothing else, run on the endpoint's host-side veth. Returns the links.
 */
function assertAttached(ep: Endpoint): TcxLink[] {
  assert.equal(linkIfindex(ep.hostIfname), ep.hostIfindex, `${ep.hostIfname} is the host side of ${ep.name}`);
  const links = tcxLinksOn(ep.hostIfindex);
  const summary = links.map((l) => `${l.programName}@${l.attachType === AttachType.TcxIngress ? 'ingress' : l.attachType === AttachType.TcxEgress ? 'egress' : l.attachType}`).sort();
  assert.deepEqual(summary, ['from_endpoint@ingress', 'to_endpoint@egress'], `tcx programs on ${ep.hostIfname} (${ep.name})`);
  const listed = new Set(bpftoolJson<{ id: number }[]>(['link', 'show']).map((l) => l.id));
  for (const l of links) {
    assert.ok(listed.has(l.id), `bpftool link show lists link ${l.id}`);
    assert.equal(bpftoolJson<{ type: string }>(['prog', 'show', 'id', String(l.programId)]).type, 'sched_cls');
  }
  return links.sort((x, y) => x.programName.localeCompare(y.programName));
}

/** Every file under `dir` (relative paths), sorted: what is pinned on a bpffs. */
function walk(dir: string, rel = ''): string[] {
  if (!existsSync(join(dir, rel))) return [];
  return readdirSync(join(dir, rel), { withFileTypes: true }).flatMap((e) => {
    const r = rel ? `${rel}/${e.name}` : e.name;
    return e.isDirectory() ? [`${r}/`, ...walk(dir, r)] : [r];
  }).sort();
}

/** The kernel ids of what is pinned under `dir`, by kind. */
function pinnedIds(dir: string): { maps: number[]; progs: number[]; links: number[] } {
  const ids = { maps: [] as number[], progs: [] as number[], links: [] as number[] };
  for (const f of walk(dir).filter((x) => !x.endsWith('/'))) {
    for (const [kind, key] of [['map', 'maps'], ['prog', 'progs'], ['link', 'links']] as const) {
      const r = spawnSync('bpftool', ['-j', kind, 'show', 'pinned', join(dir, f)], { encoding: 'utf8', timeout: 10_000 });
      if (r.status === 0) {
        ids[key].push((JSON.parse(r.stdout) as { id: number }).id);
        break;
      }
    }
  }
  return ids;
}


/** Asserts a CLI failure: exit code `code` and exactly one line `waggle: …` on stderr matching `message`. */
function assertCliError(r: { code: number; stdout: string; stderr: string }, code: number, message: RegExp, what: string): void {
  assert.equal(r.code, code, `${what}: exit code (stderr: ${r.stderr})`);
  assert.equal(r.stdout, '', `${what}: nothing on stdout`);
  const lines = r.stderr.split('\n').filter((l) => l !== '');
  assert.equal(lines.length, 1, `${what}: one line on stderr, got:\n${r.stderr}`);
  assert.match(lines[0] as string, /^waggle: \S/, `${what}: stderr starts with "waggle: "`);
  assert.match(lines[0] as string, message, `${what}: stderr names the problem`);
}



/** A `node -e SCRIPT PARAMS` process in `ns` whose stdout is JSON lines, collected as they come. */
class JsonLinesProcess {
  readonly child: ChildProcess;
  readonly events: Record<string, unknown>[] = [];
  stderr = '';
  private buf = '';
  readonly exited: Promise<number | null>;

  constructor(ns: Netns, script: string, params: object) {
    this.child = ns.spawn([process.execPath, '-e', script, JSON.stringify(params)], { env: childEnv() });
    cleanup.add(() => stopChild(this.child), `process ${this.child.pid} in ${ns.name}`);
    this.child.stdout?.setEncoding('utf8').on('data', (d: string) => {
      this.buf += d;
      let nl: number;
      while ((nl = this.buf.indexOf('\n')) >= 0) {
        const line = this.buf.slice(0, nl);
        this.buf = this.buf.slice(nl + 1);
        if (line.trim()) this.events.push(JSON.parse(line) as Record<string, unknown>);
      }
    });
    this.child.stderr?.setEncoding('utf8').on('data', (d: string) => { this.stderr += d; });
    this.exited = new Promise((resolve) => this.child.once('exit', (code) => resolve(code)));
  }

  find(event: string): Record<string, unknown> | undefined {
    return this.events.find((e) => e.event === event);
  }

  all(event: string): Record<string, unknown>[] {
    return this.events.filter((e) => e.event === event);
  }
}

/** Pings from inside `ns` with `-I source`; resolves to the replies received. */
function pingFrom(ns: string, source: string, dst: string, count: number): number {
  const r = spawnSync('ip', ['netns', 'exec', ns, 'ping', dst.includes(':') ? '-6' : '-4', '-n', '-c', String(count), '-W', '1', '-i', '0.2', '-I', source, dst],
    { encoding: 'utf8', timeout: 5_000 + count * 1_500 });
  const m = /(\d+) (?:packets )?received/.exec(r.stdout);
  if (!m) throw new Error(`ping -I ${source} ${dst} in ${ns} gave no summary (exit ${r.status}): ${r.stdout}${r.stderr}`);
  return Number(m[1]);
}

// ---------------------------------------------------------------------------
// 1. Connectivity and flows

test('three endpoints: ICMP, TCP and UDP between every ordered pair over IPv4 and IPv6, with Hubble flows', { timeout: 300_000 }, async (t) => {
  if (skipUnlessRoot(t) || requireTools(t, ...TOOLS)) return;
  t.after(() => cleanup.run());
  const agent = await startAgent();
  const namespace = `team-${PID}`;
  const specs = [
    { name: `con-${PID}-a`, app: 'alpha', labels: 'app=alpha,tier=front' },
    { name: `con-${PID}-b`, app: 'beta', labels: 'app=beta,tier=back' },
    { name: `con-${PID}-c`, app: 'gamma', labels: 'app=gamma' },
  ];
  const eps = specs.map((s) => createEndpoint(agent, s.name, s.labels, namespace));

  // What the agent says, and what the kernel has.
  const [v4cidr, v6cidr] = agent.podCidrs as [string, string];
  const v4prefix = v4cidr.replace(/\.0\/24$/, '.');
  const v6prefix = v6cidr.replace(/::\/64$/, '::');
  const netnsNow = listNetns();
  for (const [i, ep] of eps.entries()) {
    const s = specs[i] as (typeof specs)[number];
    assert.equal(ep.name, s.name);
    assert.equal(ep.namespace, namespace);
    assert.equal(ep.labels.app, s.app);
    assert.equal(ep.state, 'ready');
    assert.equal(ep.netnsPath, `/var/run/netns/${s.name}`);
    assert.equal(ep.netnsCreated, true);
    assert.ok(ep.ipv4?.startsWith(v4prefix), `${ep.ipv4} is in ${v4cidr}`);
    assert.ok(ep.ipv6?.startsWith(v6prefix), `${ep.ipv6} is in ${v6cidr}`);
    assert.ok(netnsNow.includes(s.name), `ip netns list shows ${s.name}`);
    assert.deepEqual(getEndpoint(agent, s.name), ep);
    const inside = endpointNs(s.name).exec(['ip', '-j', 'addr', 'show', 'dev', 'eth0']);
    assert.ok(inside.includes(`"${ep.ipv4}"`) && inside.includes(`"${ep.ipv6}"`), `eth0 in ${s.name} has ${ep.ipv4} and ${ep.ipv6}`);
    assertAttached(ep);
  }
  assert.deepEqual(listEndpoints(agent).map((e) => e.name), specs.map((s) => s.name));
  assert.equal(new Set(eps.map((e) => e.hostIfname)).size, 3);

  // `waggle exec` runs inside the endpoint and passes the exit code on.
  const [first, second] = eps as [Endpoint, Endpoint, Endpoint];
  const ex = agent.cli(['exec', first.name, '--', 'ping', '-c1', '-W2', second.ipv4 as string]);
  assert.equal(ex.code, 0, ex.stdout + ex.stderr);
  assert.match(ex.stdout, /1 received/);
  assert.equal(agent.cli(['exec', first.name, '--', 'sh', '-c', 'exit 3']).code, 3);

  // Real traffic between every ordered pair, both families.
  const expected: { src: Endpoint; dst: Endpoint; family: 4 | 6; tcpPort: number; udpPort: number }[] = [];
  let k = 0;
  for (const src of eps) {
    for (const dst of eps) {
      if (src === dst) continue;
      for (const family of [4, 6] as const) {
        const addr = (family === 4 ? dst.ipv4 : dst.ipv6) as string;
        const tcpPort = 21000 + k * 2;
        const udpPort = tcpPort + 1;
        k++;
        const what = `${src.name} → ${dst.name} IPv${family}`;
        assert.equal(await ping(endpointNs(src.name), addr, 2), 2, `${what}: ping`);
        assert.equal(await tcpExchange(endpointNs(src.name), endpointNs(dst.name), addr, tcpPort, 64 * 1024), 64 * 1024, `${what}: TCP`);
        assert.equal(await udpExchange(endpointNs(src.name), endpointNs(dst.name), addr, udpPort, 3), 3, `${what}: UDP`);
        expected.push({ src, dst, family, tcpPort, udpPort });
      }
    }
  }

  // Every exchange shows in `waggle observe -o json`.
  const find = (flows: Flow[], e: (typeof expected)[number], proto: 'ICMP' | 'TCP' | 'UDP', reply = false): Flow | undefined => {
    const [from, to] = reply ? [e.dst, e.src] : [e.src, e.dst];
    const srcIp = e.family === 4 ? from.ipv4 : from.ipv6;
    const dstIp = e.family === 4 ? to.ipv4 : to.ipv6;
    const icmp = e.family === 4 ? 'ICMPv4' : 'ICMPv6';
    return flows.find((f) => {
      if (f.IP?.source !== srcIp || f.IP?.destination !== dstIp || f.verdict !== 'FORWARDED') return false;
      // Zero values are omitted, as in Hubble's JSON: an ICMPv4 echo reply (type 0) is `"ICMPv4":{}`.
      if (proto === 'ICMP') return f.l4?.[icmp] !== undefined && (f.l4[icmp].type ?? 0) === (e.family === 4 ? (reply ? 0 : 8) : (reply ? 129 : 128));
      const l4 = f.l4?.[proto];
      if (!l4) return false;
      const port = proto === 'TCP' ? e.tcpPort : e.udpPort;
      return reply ? l4.source_port === port : l4.destination_port === port;
    });
  };
  const missing = (flows: Flow[]): string[] => expected.flatMap((e) => (['ICMP', 'TCP', 'UDP'] as const)
    .flatMap((p) => [false, true].map((reply) => (find(flows, e, p, reply) ? '' : `${reply ? 'reply to ' : ''}${p} ${e.src.name} → ${e.dst.name} IPv${e.family}`))))
    .filter((s) => s !== '');
  let records: unknown[] = [];
  await waitFor('a flow for every exchange', () => {
    records = observe(agent);
    return missing(flowsOf(records)).length === 0 ? true : undefined;
  }, 15_000, 500).catch((err: Error) => {
    throw new Error(`${err.message}; missing: ${missing(flowsOf(records)).join('; ')}`);
  });

  // Hubble's JSON shape.
  for (const r of records) {
    assert.ok(typeof r === 'object' && r !== null);
    const rec = r as Record<string, unknown>;
    assert.ok('flow' in rec || 'lost_events' in rec, `a flow or lost-events record: ${JSON.stringify(r)}`);
    assert.equal(rec.node_name, agent.nodeName);
    assert.match(String(rec.time), /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+Z$/);
  }
  const flows = flowsOf(records);
  const hubbleLabels = (ep: Endpoint): string[] => [
    ...Object.entries(ep.labels).map(([key, v]) => `k8s:${key}=${v}`), `k8s:io.kubernetes.pod.namespace=${namespace}`,
  ].sort();
  const checkEndpoint = (got: FlowEndpoint | undefined, ep: Endpoint, what: string): void => {
    assert.ok(got, `${what}: endpoint present`);
    assert.equal(got.pod_name, ep.name, `${what}: pod_name`);
    assert.equal(got.namespace, namespace, `${what}: namespace`);
    assert.equal(got.ID, ep.id, `${what}: ID`);
    assert.deepEqual(got.labels, hubbleLabels(ep), `${what}: labels`);
    assert.ok(got.labels?.includes(`k8s:app=${ep.labels.app}`), `${what}: k8s:app label`);
  };
  for (const e of expected) {
    for (const proto of ['ICMP', 'TCP', 'UDP'] as const) {
      for (const reply of [false, true]) {
        const f = find(flows, e, proto, reply) as Flow;
        const [from, to] = reply ? [e.dst, e.src] : [e.src, e.dst];
        const what = `${reply ? 'reply ' : ''}${proto} ${from.name} → ${to.name} IPv${e.family}`;
        checkEndpoint(f.source, from, `${what} source`);
        checkEndpoint(f.destination, to, `${what} destination`);
        assert.equal(f.IP?.ipVersion, e.family === 4 ? 'IPv4' : 'IPv6', `${what}: IP.ipVersion`);
        assert.equal(f.Type, 'L3_L4');
        assert.equal(f.node_name, agent.nodeName);
        assert.equal(f.verdict, 'FORWARDED');
        assert.equal(f.drop_reason_desc, undefined);
        // Seen by the sender's from_endpoint as it hands the packet to the receiver.
        assert.equal(f.traffic_direction, 'EGRESS', `${what}: traffic_direction`);
        assert.equal(f.trace_observation_point, 'TO_ENDPOINT', `${what}: trace_observation_point`);
        assert.equal(f.event_type.type, 4, `${what}: a trace event`);
        assert.deepEqual(f.interface, { index: from.hostIfindex, name: from.hostIfname }, `${what}: interface`);
        assert.match(f.uuid, /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-8[0-9a-f]{3}-[0-9a-f]{12}$/);
        if (proto === 'ICMP') {
          assert.match(f.Summary, new RegExp(`^ICMPv${e.family} Echo${reply ? 'Reply' : 'Request'}$`), `${what}: Summary`);
          assert.equal(f.is_reply, reply, `${what}: is_reply`);
        } else if (proto === 'UDP') {
          assert.equal(f.Summary, 'UDP');
        } else {
          assert.match(f.Summary, /^TCP Flags: /);
        }
      }
    }
    // The TCP handshake: the client's SYN and the server's SYN-ACK.
    const srcIp = e.family === 4 ? e.src.ipv4 : e.src.ipv6;
    const syn = flows.find((f) => f.IP?.source === srcIp && f.l4?.TCP?.destination_port === e.tcpPort
      && (f.l4.TCP.flags as Record<string, boolean> | undefined)?.SYN === true);
    assert.ok(syn, `SYN ${e.src.name} → ${e.dst.name}:${e.tcpPort} IPv${e.family}`);
    assert.deepEqual(syn.l4?.TCP?.flags, { SYN: true });
    assert.equal(syn.Summary, 'TCP Flags: SYN');
    assert.equal(syn.is_reply, false);
    const synAck = flows.find((f) => f.IP?.destination === srcIp && f.l4?.TCP?.source_port === e.tcpPort
      && (f.l4.TCP.flags as Record<string, boolean> | undefined)?.SYN === true);
    assert.ok(synAck, `SYN-ACK to ${e.src.name} from :${e.tcpPort} IPv${e.family}`);
    assert.deepEqual(synAck.l4?.TCP?.flags, { SYN: true, ACK: true });
    assert.equal(synAck.is_reply, true);
  }
  assert.equal(flows.filter((f) => f.verdict === 'DROPPED').length, 0,
    `no drops: ${JSON.stringify(flows.filter((f) => f.verdict === 'DROPPED'))}`);

  // --last N gives the last N records, the same ones.
  const last5 = observe(agent, ['--last', '5']);
  assert.equal(last5.length, 5);
  const compact = agent.ok(['observe', '--last', '3']).trim().split('\n');
  assert.equal(compact.length, 3);
});

// ---------------------------------------------------------------------------
// 2. Anti-spoofing

const UDP_SINK = `
const dgram = require('dgram');
const p = JSON.parse(process.argv[1]);
const out = (o) => process.stdout.write(JSON.stringify(o) + '\\n');
let ready = 0;
for (const [type, addr] of [['udp4', p.v4], ['udp6', p.v6]]) {
  const s = dgram.createSocket(type);
  s.on('message', (m, r) => out({ event: 'message', from: r.address, text: m.toString() }));
  s.on('error', (e) => { out({ event: 'error', error: e.message }); process.exit(2); });
  s.bind(p.port, addr, () => { if (++ready === 2) out({ event: 'listening' }); });
}
`;

const UDP_SEND = `
const dgram = require('dgram');
const p = JSON.parse(process.argv[1]);
const s = dgram.createSocket(p.to.includes(':') ? 'udp6' : 'udp4');
s.bind(0, p.from, () => {
  let n = 0;
  const next = () => {
    if (n === p.count) { s.close(); return; }
    s.send(p.text, p.port, p.to, (err) => { if (err) { console.error(err.message); process.exit(1); } n++; setTimeout(next, 50); });
  };
  next();
});
`;

test('spoofing: traffic from an address or MAC that is not the endpoint\'s is dropped and shown as DROPPED', { timeout: 120_000 }, async (t) => {
  if (skipUnlessRoot(t) || requireTools(t, ...TOOLS)) return;
  t.after(() => cleanup.run());
  const agent = await startAgent();
  const a = createEndpoint(agent, `spf-${PID}-a`, 'app=attacker', 'spoof');
  const b = createEndpoint(agent, `spf-${PID}-b`, 'app=victim', 'spoof');
  const [v4cidr, v6cidr] = agent.podCidrs as [string, string];
  const fake4 = v4cidr.replace(/\.0\/24$/, '.200');
  const fake6 = v6cidr.replace(/::\/64$/, '::200');
  assert.ok(!listEndpoints(agent).some((e) => e.ipv4 === fake4 || e.ipv6 === fake6));

  // `waggle observe --follow -o json` streams the flows live.
  const follow = spawn(process.execPath, [CLI, 'observe', '--follow', '-o', 'json'], {
    env: { ...childEnv(), WAGGLE_API_SOCKET: agent.apiSocket }, stdio: ['ignore', 'pipe', 'pipe'],
  });
  cleanup.add(() => stopChild(follow), `observe --follow (${follow.pid})`);
  let followed = '';
  follow.stdout?.setEncoding('utf8').on('data', (d: string) => { followed += d; });
  const followExit = new Promise<{ code: number | null; signal: string | null }>((resolve) => follow.once('exit', (code, signal) => resolve({ code, signal })));
  await sleep(500);

  // Control: the real addresses work (and resolve the gateway first).
  assert.equal(await ping(endpointNs(a.name), b.ipv4 as string, 1), 1);
  assert.equal(await ping(endpointNs(a.name), b.ipv6 as string, 1), 1);

  // A second address on the attacker's eth0, inside its namespace only.
  ip(['-n', a.name, 'addr', 'add', `${fake4}/32`, 'dev', 'eth0']);
  ip(['-n', a.name, 'addr', 'add', `${fake6}/128`, 'dev', 'eth0', 'nodad']);

  const sink = new JsonLinesProcess(endpointNs(b.name), UDP_SINK, { v4: b.ipv4, v6: b.ipv6, port: 9999 });
  await waitFor('the UDP sink to listen', () => sink.find('listening') ?? (sink.find('error') ? (() => { throw new Error(sink.stderr); })() : undefined));
  const send = (from: string, to: string, text: string): void => {
    const r = spawnSync('ip', ['netns', 'exec', a.name, process.execPath, '-e', UDP_SEND, JSON.stringify({ from, to, port: 9999, count: 3, text })],
      { encoding: 'utf8', timeout: 10_000, env: childEnv() });
    assert.equal(r.status, 0, `send from ${from}: ${r.stderr}`);
  };
  send(fake4, b.ipv4 as string, 'spoofed-v4');
  send(fake6, b.ipv6 as string, 'spoofed-v6');
  assert.equal(pingFrom(a.name, fake4, b.ipv4 as string, 2), 0, 'spoofed IPv4 ping gets no reply');
  assert.equal(pingFrom(a.name, fake6, b.ipv6 as string, 2), 0, 'spoofed IPv6 ping gets no reply');
  send(a.ipv4 as string, b.ipv4 as string, 'genuine-v4');
  send(a.ipv6 as string, b.ipv6 as string, 'genuine-v6');
  await waitFor('the genuine datagrams', () => (sink.all('message').filter((m) => String(m.text).startsWith('genuine')).length === 6 ? true : undefined));
  await sleep(300);
  const got = sink.all('message');
  assert.deepEqual(got.filter((m) => String(m.text).startsWith('spoofed')), [], 'no spoofed datagram arrived');
  assert.deepEqual(new Set(got.map((m) => m.from)), new Set([a.ipv4, a.ipv6]), 'datagrams came only from the real addresses');

  // The drops in `waggle observe -o json`.
  const dropFor = (flows: Flow[], src: string, dst: string, proto: string): Flow | undefined => flows.find((f) => f.verdict === 'DROPPED'
    && f.IP?.source === src && f.IP.destination === dst && f.l4?.[proto] !== undefined);
  let flows: Flow[] = [];
  await waitFor('DROPPED flows for the spoofed packets', () => {
    flows = flowsOf(observe(agent));
    return [[fake4, b.ipv4, 'UDP'], [fake6, b.ipv6, 'UDP'], [fake4, b.ipv4, 'ICMPv4'], [fake6, b.ipv6, 'ICMPv6']]
      .every(([s, d, p]) => dropFor(flows, s as string, d as string, p as string)) ? true : undefined;
  });
  for (const [src, dst, proto, family] of [[fake4, b.ipv4, 'UDP', 'IPv4'], [fake6, b.ipv6, 'UDP', 'IPv6'], [fake4, b.ipv4, 'ICMPv4', 'IPv4'], [fake6, b.ipv6, 'ICMPv6', 'IPv6']] as const) {
    const f = dropFor(flows, src, dst as string, proto) as Flow;
    const what = `spoofed ${proto} ${src} → ${dst}`;
    assert.equal(f.verdict, 'DROPPED', what);
    assert.equal(f.drop_reason_desc, 'INVALID_SOURCE_IP', what);
    assert.equal(f.drop_reason, 132, what);
    assert.equal(f.event_type.type, 1, `${what}: a drop event`);
    assert.equal(f.IP?.ipVersion, family);
    assert.equal(f.source?.pod_name, a.name, `${what}: seen leaving ${a.name}`);
    assert.equal(f.source?.namespace, 'spoof');
    assert.ok(f.source?.labels?.includes('k8s:app=attacker'));
    assert.equal(f.traffic_direction, 'EGRESS');
    assert.deepEqual(f.interface, { index: a.hostIfindex, name: a.hostIfname });
    if (proto === 'UDP') assert.equal(f.l4?.UDP?.destination_port, 9999);
  }
  // The follower saw the drops as they happened, and stops cleanly on SIGINT.
  await waitFor('the drops in observe --follow', () => (followed.split('\n').filter((l) => l.trim() !== '')
    .map((l) => JSON.parse(l) as FlowRecord)
    .some((r) => r.flow?.verdict === 'DROPPED' && r.flow.drop_reason_desc === 'INVALID_SOURCE_IP' && r.flow.IP?.source === fake4) ? true : undefined));
  follow.kill('SIGINT');
  assert.deepEqual(await Promise.race([followExit, sleep(5_000).then(() => 'still running')]), { code: 0, signal: null }, 'observe --follow exits 0 on SIGINT');

  // The genuine datagrams were forwarded, not dropped.
  assert.ok(flows.some((f) => f.verdict === 'FORWARDED' && f.IP?.source === a.ipv4 && f.l4?.UDP?.destination_port === 9999));
  assert.ok(!flows.some((f) => f.verdict === 'DROPPED' && (f.IP?.source === a.ipv4 || f.IP?.source === a.ipv6)), 'no genuine packet dropped');

  // A foreign source MAC: everything from the endpoint is dropped until the MAC is back.
  ip(['-n', a.name, 'addr', 'del', `${fake4}/32`, 'dev', 'eth0']);
  ip(['-n', a.name, 'addr', 'del', `${fake6}/128`, 'dev', 'eth0']);
  ip(['-n', a.name, 'link', 'set', 'eth0', 'address', '02:00:00:00:be:ef']);
  try {
    assert.equal(await ping(endpointNs(a.name), b.ipv4 as string, 2), 0, 'ping with a foreign MAC gets no reply');
  } finally {
    ip(['-n', a.name, 'link', 'set', 'eth0', 'address', a.mac]);
  }
  await waitFor('a DROPPED flow with INVALID_SOURCE_MAC', () => flowsOf(observe(agent)).find((f) => f.verdict === 'DROPPED'
    && f.drop_reason_desc === 'INVALID_SOURCE_MAC' && f.source?.pod_name === a.name));
  assert.equal(await ping(endpointNs(a.name), b.ipv4 as string, 2), 2, 'with its own MAC back, the endpoint reaches its peer again');
  assert.equal(await ping(endpointNs(a.name), b.ipv6 as string, 2), 2);
});

// ---------------------------------------------------------------------------
// 3. Agent restart under a live TCP stream

const STREAM_SERVER = `
const net = require('net');
const p = JSON.parse(process.argv[1]);
const out = (o) => process.stdout.write(JSON.stringify(o) + '\\n');
let conns = 0;
const srv = net.createServer((s) => {
  conns++;
  let received = 0;
  let bad = -1;
  out({ event: 'accept', conns, remoteAddress: s.remoteAddress, remotePort: s.remotePort });
  const tick = setInterval(() => out({ event: 'progress', received, t: Date.now() }), 100);
  s.on('data', (d) => {
    // Byte i of the stream is floor(i / chunk) & 0xff: catches lost or duplicated data.
    for (let i = 0; i < d.length && bad < 0; i += 4093) if (d[i] !== (Math.floor((received + i) / p.chunkSize) & 0xff)) bad = received + i;
    received += d.length;
  });
  s.on('end', () => { clearInterval(tick); out({ event: 'end', received, bad, t: Date.now() }); s.end(String(received)); });
  s.on('error', (e) => { clearInterval(tick); out({ event: 'error', error: e.message, code: e.code }); });
});
srv.on('error', (e) => { out({ event: 'error', error: e.message }); process.exit(2); });
srv.listen(p.port, p.addr, () => out({ event: 'listening' }));
`;

const STREAM_CLIENT = `
const net = require('net');
const p = JSON.parse(process.argv[1]);
const out = (o) => process.stdout.write(JSON.stringify(o) + '\\n');
let sent = 0, writes = 0, reply = '', localPort;
const s = net.connect({ host: p.addr, port: p.port }, () => {
  localPort = s.localPort;
  out({ event: 'connected', localAddress: s.localAddress, localPort });
  const timer = setInterval(() => {
    if (writes >= p.chunks) { clearInterval(timer); s.end(); return; }
    s.write(Buffer.alloc(p.chunkSize, writes & 0xff));
    sent += p.chunkSize;
    writes++;
  }, p.intervalMs);
});
s.on('data', (d) => { reply += d.toString(); });
s.on('error', (e) => { out({ event: 'error', error: e.message, code: e.code }); process.exitCode = 1; });
s.on('close', (hadError) => out({ event: 'done', sent, writes, reply, hadError, localPort }));
setTimeout(() => { out({ event: 'error', error: 'timeout' }); process.exit(1); }, p.timeoutMs).unref();
`;

test('agent restart (SIGTERM, start again) in the middle of TCP streams does not break them', { timeout: 120_000 }, async (t) => {
  if (skipUnlessRoot(t) || requireTools(t, ...TOOLS)) return;
  t.after(() => cleanup.run());
  const agent = await startAgent();
  const a = createEndpoint(agent, `rst-${PID}-a`, 'app=client', 'restart');
  const b = createEndpoint(agent, `rst-${PID}-b`, 'app=server', 'restart');
  const linksBefore = [assertAttached(a), assertAttached(b)].flat().map((l) => l.id);

  const CHUNK = 1 << 20;
  const CHUNKS = 120; // 1 MiB every 50 ms for 6 s
  const streams = ([[4, b.ipv4, 7101], [6, b.ipv6, 7102]] as const).map(([family, addr, port]) => ({
    family,
    server: new JsonLinesProcess(endpointNs(b.name), STREAM_SERVER, { addr, port, chunkSize: CHUNK }),
    client: undefined as JsonLinesProcess | undefined,
    addr: addr as string,
    port,
  }));
  for (const s of streams) await waitFor(`stream server IPv${s.family} to listen`, () => s.server.find('listening') ?? (s.server.find('error') ? (() => { throw new Error(JSON.stringify(s.server.events) + s.server.stderr); })() : undefined));
  for (const s of streams) {
    s.client = new JsonLinesProcess(endpointNs(a.name), STREAM_CLIENT, { addr: s.addr, port: s.port, chunkSize: CHUNK, chunks: CHUNKS, intervalMs: 50, timeoutMs: 60_000 });
  }
  const received = (s: (typeof streams)[number]): number => Number(s.server.all('progress').at(-1)?.received ?? 0);
  await waitFor('both streams to carry data', () => (streams.every((s) => received(s) >= 8 * CHUNK) ? true : undefined), 15_000, 50);

  // Stop the agent mid-stream; the datapath keeps forwarding without it.
  const stoppedAt = Date.now();
  const atStop = streams.map(received);
  assert.equal(await agent.stop(), 0, 'the agent exits 0 on SIGTERM');
  assert.ok(!existsSync(agent.apiSocket), 'the stopped agent removed its API socket');
  await sleep(1_000);
  const whileDown = streams.map(received);
  for (const [i, s] of streams.entries()) {
    assert.ok((whileDown[i] as number) > (atStop[i] as number), `IPv${s.family} stream moved on while no agent ran (${atStop[i]} → ${whileDown[i]} bytes)`);
  }

  // Start it again.
  const logBefore = agent.log.length;
  await agent.start();
  // TestAgent.start() looks for "agent ready" in the whole log, which already has the first start's: wait for the new one.
  await waitFor('the restarted agent to be ready', () => (agent.log.slice(logBefore).includes('"agent ready"') ? true : undefined), 20_000, 50);
  const restartedAt = Date.now();
  t.diagnostic(`agent down for ${restartedAt - stoppedAt} ms, stream bytes at stop ${atStop.join('/')}`);
  const atStart = streams.map(received);

  for (const s of streams) {
    const client = s.client as JsonLinesProcess;
    const code = await Promise.race([client.exited, sleep(60_000).then(() => 'timeout' as const)]);
    assert.equal(code, 0, `IPv${s.family} client exited cleanly: ${JSON.stringify(client.events.filter((e) => e.event !== 'progress'))} ${client.stderr}`);
    assert.deepEqual(client.all('error'), [], `IPv${s.family} client saw no error`);
    const connected = client.find('connected');
    const done = client.find('done');
    assert.ok(connected && done, `IPv${s.family} client connected and finished`);
    assert.equal(done.hadError, false);
    assert.equal(done.writes, CHUNKS);
    assert.equal(done.sent, CHUNK * CHUNKS);
    assert.equal(done.reply, String(CHUNK * CHUNKS), `IPv${s.family}: the server confirms every byte`);
    const accepts = s.server.all('accept');
    assert.equal(accepts.length, 1, `IPv${s.family}: one connection, no reconnect`);
    assert.equal(accepts[0]?.remotePort, connected.localPort, `IPv${s.family}: the same connection throughout`);
    assert.equal(String(accepts[0]?.remoteAddress).replace(/^::ffff:/, ''), s.family === 4 ? a.ipv4 : a.ipv6);
    const end = s.server.find('end');
    assert.ok(end, `IPv${s.family}: server saw the end of the stream`);
    assert.equal(end.received, CHUNK * CHUNKS, `IPv${s.family}: server received every byte`);
    assert.equal(end.bad, -1, `IPv${s.family}: the bytes arrived in order, intact`);
    assert.deepEqual(s.server.all('error'), []);
    assert.ok(Number(end.t) > restartedAt, `IPv${s.family}: the stream was still running after the restart`);
  }
  for (const [i, s] of streams.entries()) {
    assert.ok((atStart[i] as number) < CHUNK * CHUNKS, `IPv${s.family}: the restart happened mid-stream (${atStart[i]} bytes by then)`);
  }

  // The second start restored the endpoints and kept the programs that ran.
  const secondLog = agent.log.slice(logBefore).split('\n').filter((l) => l.trim().startsWith('{')).map((l) => JSON.parse(l) as Record<string, unknown>);
  const restored = secondLog.find((l) => l.msg === 'restored endpoints, policy and services');
  assert.ok(restored, `"restored endpoints, policy and services" in the second start's log:\n${agent.log.slice(logBefore)}`);
  assert.equal(restored.endpoints, 2);
  assert.deepEqual(secondLog.filter((l) => Number(l.level) >= 40).map((l) => l.msg), [], 'no warnings or errors on restart');
  const eps = listEndpoints(agent);
  assert.deepEqual(eps.map((e) => [e.name, e.state]), [[a.name, 'ready'], [b.name, 'ready']]);
  assert.deepEqual(eps.map((e) => [e.ipv4, e.ipv6, e.hostIfindex]), [[a.ipv4, a.ipv6, a.hostIfindex], [b.ipv4, b.ipv6, b.hostIfindex]]);
  const linksAfter = [assertAttached(a), assertAttached(b)].flat().map((l) => l.id);
  assert.deepEqual(linksAfter, linksBefore, 'the same tcx links as before the restart');

  // The restarted agent reads flows again.
  assert.equal(await ping(endpointNs(a.name), b.ipv4 as string, 1), 1);
  await waitFor('a flow seen by the restarted agent', () => flowsOf(observe(agent)).find((f) => f.IP?.source === a.ipv4
    && f.l4?.ICMPv4?.type === 8 && f.source?.pod_name === a.name && f.destination?.pod_name === b.name));
});

// ---------------------------------------------------------------------------
// 4. Bad input

test('bad input: a one-sentence error, the right exit code, and nothing created', { timeout: 180_000 }, async (t) => {
  if (skipUnlessRoot(t) || requireTools(t, ...TOOLS)) return;
  t.after(() => cleanup.run());
  const agent = await startAgent();
  const ok = createEndpoint(agent, `bad-${PID}-ok`, 'app=keep', 'bad');
  const mapPath = join(pinDirOf(agent), 'endpoints');

  // What must not change.
  const snapshot = (): unknown => ({
    endpoints: listEndpoints(agent),
    netns: listNetns().filter((n) => n.includes(String(PID))).sort(),
    hostLink: linkIfindex(ok.hostIfname),
    pins: walk(pinDirOf(agent)),
    map: bpftoolJson<unknown[]>(['map', 'dump', 'pinned', mapPath]).length,
  });
  const baseline = snapshot();
  const notCreated = (name: string): void => {
    assert.ok(!listNetns().includes(name), `no namespace ${name}`);
    assert.ok(!nodeLinks().includes(hostIfnameFor(agent.nodeName, name)), `no link for ${name}`);
    assert.deepEqual(snapshot(), baseline, `nothing changed after the failed ${name}`);
  };

  // Unknown endpoint.
  assertCliError(agent.cli(['endpoint', 'get', `nope-${PID}`]), 1, new RegExp(`no endpoint named nope-${PID}`), 'get unknown');
  assertCliError(agent.cli(['endpoint', 'delete', `nope-${PID}`]), 1, new RegExp(`no endpoint named nope-${PID}`), 'delete unknown');
  assertCliError(agent.cli(['exec', `nope-${PID}`, '--', 'true']), 1, new RegExp(`no endpoint named nope-${PID}`), 'exec unknown');
  notCreated(`nope-${PID}`);

  // Duplicate name: refused, and the existing endpoint is untouched.
  assertCliError(agent.cli(['endpoint', 'create', ok.name, '--labels', 'app=other', '-n', 'bad']), 1, new RegExp(`${ok.name} already exists`), 'duplicate');
  assert.deepEqual(getEndpoint(agent, ok.name), ok);
  assertAttached(ok);
  assert.deepEqual(snapshot(), baseline);

  // Malformed labels: a usage error, caught before the agent is asked.
  assertCliError(agent.cli(['endpoint', 'create', `bad-${PID}-l`, '--labels', 'app']), 2, /malformed label "app": expected key=value/, 'labels without =');
  notCreated(`bad-${PID}-l`);
  assertCliError(agent.cli(['endpoint', 'create', `bad-${PID}-l`, '--labels', 'app=-x-']), 2, /label app: value "-x-"/, 'bad label value');
  assertCliError(agent.cli(['endpoint', 'create', `bad-${PID}-l`, '--labels', 'app=a,app=b']), 2, /label app is given twice/, 'repeated label');
  notCreated(`bad-${PID}-l`);

  // Invalid names and namespaces: the agent refuses them.
  for (const name of ['Bad_Name', 'trail-', 'a'.repeat(64), 'dot.ted']) {
    assertCliError(agent.cli(['endpoint', 'create', name, '--labels', 'app=x']), 1, /invalid endpoint: name: must be a DNS label/, `name ${name}`);
    notCreated(name);
  }
  assertCliError(agent.cli(['endpoint', 'create', `bad-${PID}-n`, '-n', 'Not_A_Namespace']), 1, /invalid endpoint: namespace: must be a DNS label/, 'bad namespace');
  notCreated(`bad-${PID}-n`);

  // --netns that is not a network namespace.
  assertCliError(agent.cli(['endpoint', 'create', `bad-${PID}-f`, '--netns', '/etc/hostname']), 1, /\/etc\/hostname is not a network namespace/, '--netns file');
  notCreated(`bad-${PID}-f`);

  // --netns of a namespace that already has an eth0 (another endpoint's, or the node's own): refused.
  assertCliError(agent.cli(['endpoint', 'create', `bad-${PID}-f`, '--netns', ok.netnsPath]), 1, new RegExp(`${ok.netnsPath} already has an interface eth0`), '--netns of an endpoint');
  notCreated(`bad-${PID}-f`);
  const nodeEth0 = linkIfindex('eth0');
  if (nodeEth0 !== undefined) {
    assertCliError(agent.cli(['endpoint', 'create', `bad-${PID}-f`, '--netns', '/proc/1/ns/net']), 1, /\/proc\/1\/ns\/net/, '--netns of the node');
    notCreated(`bad-${PID}-f`);
    assert.equal(linkIfindex('eth0'), nodeEth0, 'the node\'s eth0 is untouched');
  }

  // A network namespace of that name exists already (not the agent's): refused, and left alone.
  const squatter = `bad-${PID}-sq`;
  ip(['netns', 'add', squatter]);
  cleanup.add(() => { if (listNetns().includes(squatter)) ip(['netns', 'del', squatter]); }, `netns ${squatter}`);
  assertCliError(agent.cli(['endpoint', 'create', squatter]), 1, new RegExp(`a network namespace named ${squatter} already exists`), 'netns exists');
  assert.ok(listNetns().includes(squatter), 'the existing namespace is still there');
  assert.equal(ip(['-n', squatter, '-o', 'link', 'show']).trim().split('\n').length, 1, 'nothing was added to it');
  ip(['netns', 'del', squatter]);
  notCreated(squatter);

  // Unknown output formats and bad flags: usage errors.
  assertCliError(agent.cli(['endpoint', 'list', '-o', 'yaml']), 2, /unknown output format yaml/, 'list -o yaml');
  assertCliError(agent.cli(['endpoint', 'get', ok.name, '-o', 'xml']), 2, /unknown output format xml/, 'get -o xml');
  assertCliError(agent.cli(['endpoint', 'create', `bad-${PID}-o`, '-o', 'yaml']), 2, /unknown output format yaml/, 'create -o yaml');
  notCreated(`bad-${PID}-o`);
  assertCliError(agent.cli(['observe', '-o', 'yaml']), 2, /unknown output format "yaml"/, 'observe -o yaml');
  assertCliError(agent.cli(['observe', '--last', '0']), 2, /--last must be a positive integer/, 'observe --last 0');

  // No agent at the socket.
  assertCliError(agent.cli(['endpoint', 'list', '--api-socket', join(agent.dir, 'nothing.sock')]), 1, /cannot reach the agent at .*no agent is listening there/, 'no agent');

  assert.deepEqual(snapshot(), baseline);
  assertAttached(ok);
});

test('bad input: an exhausted pool refuses the next endpoint with IPAM_EXHAUSTED and leaves the first untouched', { timeout: 120_000 }, async (t) => {
  if (skipUnlessRoot(t) || requireTools(t, ...TOOLS)) return;
  t.after(() => cleanup.run());
  // Octets 0-99 (TestAgent's defaults use 100-199): a /30 has one endpoint address after the router.
  const octet = PID % 100;
  const agent = await startAgent({ podCidrs: [`10.199.${octet}.0/30`, `fd99:${octet.toString(16)}::/64`] });
  const first = createEndpoint(agent, `ipam-${PID}-1`, 'app=one', 'ipam');
  assert.equal(first.ipv4, `10.199.${octet}.2`);
  const status = async (): Promise<{ family: number; used: number }[]> => (await apiRequest<{ ipam: { family: number; used: number }[] }>(agent.apiSocket, 'GET', '/v1/status')).body.ipam;
  assert.deepEqual((await status()).map((u) => [u.family, u.used]), [[4, 1], [6, 1]]);

  const second = `ipam-${PID}-2`;
  assertCliError(agent.cli(['endpoint', 'create', second, '--labels', 'app=two']), 1, new RegExp(`pod CIDR 10\\.199\\.${octet}\\.0/30 is exhausted`), 'exhausted pool');
  const r = await apiRequest<{ error: { code: string; message: string } }>(agent.apiSocket, 'POST', '/v1/endpoints', { name: second, labels: { app: 'two' } });
  assert.equal(r.status, 409);
  assert.equal(r.body.error.code, 'IPAM_EXHAUSTED');
  assert.ok(!listNetns().includes(second));
  assert.ok(!nodeLinks().includes(hostIfnameFor(agent.nodeName, second)));
  // The IPv6 address taken before IPv4 ran out was given back.
  assert.deepEqual((await status()).map((u) => [u.family, u.used]), [[4, 1], [6, 1]]);
  assert.deepEqual(listEndpoints(agent), [first]);
  assertAttached(first);
  assert.equal(await ping(endpointNs(first.name), first.ipv4 as string, 1), 1, 'the first endpoint still works');

  // Freeing the address makes room again.
  agent.ok(['endpoint', 'delete', first.name]);
  const again = createEndpoint(agent, second, 'app=two', 'ipam');
  assert.equal(again.ipv4, `10.199.${octet}.2`);
});

test('bad input: an invalid config file stops the agent at once with exit code 2 naming the field', { timeout: 120_000 }, async (t) => {
  if (skipUnlessRoot(t)) return;
  t.after(() => cleanup.run());
  const dir = mkdtempSync(join(tmpdir(), 'waggle-badcfg-'));
  made.dirs.add(dir);
  const flags = ['--state-dir', join(dir, 'state'), '--bpffs-root', join(dir, 'bpffs'), '--api-socket', join(dir, 'api.sock'), '--http-listen', '127.0.0.1:0', '--node-name', `badcfg-${PID}`];
  cleanup.add(() => {
    // Only if an agent got as far as making something.
    if (existsSync(join(dir, 'state')) || existsSync(join(dir, 'bpffs'))) spawnSync(process.execPath, [CLI, 'agent', '--cleanup', ...flags], { timeout: 60_000 });
    rmSync(dir, { recursive: true, force: true });
  }, `config dir ${dir}`);

  const cases: [string, string, string[], RegExp][] = [
    ['not YAML', 'pod-cidr: [10.199.1.0/24\nnode-name: x\n', [], /is not valid YAML/],
    ['a list, not a mapping', '- pod-cidr\n', [], /must be a YAML mapping/],
    ['unknown key', 'podcidr: 10.199.1.0/24\n', [], /unknown option "podcidr"/],
    ['bad CIDR', 'pod-cidr:\n  - 10.199.300.0/24\n', [], /pod-cidr \(from config file .*\): /],
    ['CIDR too small', 'pod-cidr: 10.199.1.0/31\n', [], /pod-cidr.*too small/],
    ['two IPv4 CIDRs', 'pod-cidr: [10.199.1.0/24, 10.199.2.0/24]\n', [], /pod-cidr.*more than one IPv4/],
    ['bad flow-buffer', 'pod-cidr: 10.199.1.0/24\nflow-buffer: lots\n', [], /flow-buffer/],
    ['bad log level', 'pod-cidr: 10.199.1.0/24\nlog-level: loud\n', [], /log-level \(from config file/],
    ['relative state dir from a flag', 'pod-cidr: 10.199.1.0/24\n', ['--state-dir', 'relative/dir'], /state-dir \(from flags\): must be an absolute path/],
    ['missing file', '', [], /cannot read config file .*ENOENT/],
  ];
  for (const [what, yaml, extra, message] of cases) {
    const file = join(dir, `${what.replace(/\W+/g, '-')}.yaml`);
    if (what !== 'missing file') writeFileSync(file, yaml);
    const r = spawnSync(process.execPath, [CLI, 'agent', '--config', file, ...flags, ...extra], { encoding: 'utf8', timeout: 20_000 });
    assert.equal(r.error, undefined, `${what}: the agent must not start (${r.error?.message})`);
    assertCliError({ code: r.status ?? -1, stdout: r.stdout, stderr: r.stderr }, 2, message, what);
    assert.match(r.stderr, /invalid configuration|config file/, what);
    for (const made of ['state', 'bpffs', 'api.sock']) assert.ok(!existsSync(join(dir, made)), `${what}: ${made} not created`);
  }
});

test('a second agent with the same API socket refuses to start and exits, without touching the running one', {
  timeout: 60_000,
}, async (t) => {
  if (skipUnlessRoot(t) || requireTools(t, ...TOOLS)) return;
  t.after(() => cleanup.run());
  const agent = await startAgent();
  const ep = createEndpoint(agent, `dup-${PID}-a`, 'app=a', 'dup');
  const stateFile = join(agent.dir, 'state', 'state.json');
  const stateBefore = readFileSync(stateFile, 'utf8');
  const r = spawnSync(process.execPath, [CLI, 'agent', ...agent.flags], { encoding: 'utf8', timeout: 15_000 });
  assert.equal(r.error, undefined, `the second agent must exit on its own (${r.error?.message}); it printed: ${r.stdout}${r.stderr}`);
  assertCliError({ code: r.status ?? -1, stdout: '', stderr: r.stderr }, 1, /another agent is already serving/, 'second agent');
  assert.ok(!r.stdout.includes('restored endpoints'), `the second agent must not restore the running agent's endpoints:\n${r.stdout}`);
  assert.equal(readFileSync(stateFile, 'utf8'), stateBefore, 'the running agent\'s state file is untouched');
  assert.deepEqual(getEndpoint(agent, ep.name), ep);
});

// ---------------------------------------------------------------------------
// 5. Lifecycle: nothing leaks across 1,000 create/delete cycles

function fdCount(pid: number): number {
  return readdirSync(`/proc/${pid}/fd`).length;
}

function rssKb(pid: number): number {
  return Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? 0);
}

test('1,000 endpoint create/delete cycles through the API leak nothing', { timeout: 900_000 }, async (t: TestContext) => {
  if (skipUnlessRoot(t) || requireTools(t, ...TOOLS)) return;
  t.after(() => cleanup.run());
  const agent = await startAgent();
  const pid = agent.pid as number;
  const CYCLES = 1000;
  const prefix = `lc-${PID}-`;
  const ifnames = new Set<string>();
  let fdsAfter10 = 0;
  let rssAfter10 = 0;
  let pinsAfter10: string[] = [];
  const started = Date.now();
  for (let i = 0; i < CYCLES; i++) {
    const name = `${prefix}${i}`;
    const c = await apiRequest<Endpoint>(agent.apiSocket, 'POST', '/v1/endpoints', { name, namespace: 'cycle', labels: { app: 'cycle', n: String(i) } });
    assert.equal(c.status, 200, `cycle ${i}: create: ${JSON.stringify(c.body)}`);
    assert.equal(c.body.state, 'ready');
    ifnames.add(c.body.hostIfname);
    made.ifnames.add(c.body.hostIfname);
    const d = await apiRequest<{ deleted: string }>(agent.apiSocket, 'DELETE', `/v1/endpoints/${name}`);
    assert.equal(d.status, 200, `cycle ${i}: delete: ${JSON.stringify(d.body)}`);
    assert.equal(d.body.deleted, name);
    if (i === 9) {
      fdsAfter10 = fdCount(pid);
      rssAfter10 = rssKb(pid);
      pinsAfter10 = walk(pinDirOf(agent));
    }
  }
  const seconds = (Date.now() - started) / 1000;
  const fds = fdCount(pid);
  const rss = rssKb(pid);
  t.diagnostic(`${CYCLES} cycles in ${seconds.toFixed(1)} s (${(seconds * 1000 / CYCLES).toFixed(0)} ms each); fds ${fdsAfter10} → ${fds}; RSS ${rssAfter10} → ${rss} kB`);
  if (seconds > 180) t.diagnostic(`WARNING: ${CYCLES} cycles took more than 3 minutes (${seconds.toFixed(0)} s)`);

  assert.equal(ifnames.size, CYCLES, 'a host interface name per endpoint');
  const links = nodeLinks();
  assert.deepEqual(links.filter((l) => ifnames.has(l)), [], 'no host-side veth left');
  assert.deepEqual(links.filter((l) => l.startsWith('wgl')).filter((l) => ifnames.has(l)), []);
  assert.deepEqual(listNetns().filter((n) => n.startsWith(prefix)), [], 'no endpoint namespace left');
  assert.ok(fds <= fdsAfter10 + 4, `open descriptors did not grow: ${fdsAfter10} after 10 cycles, ${fds} after ${CYCLES}`);
  assert.deepEqual(bpftoolJson<unknown[]>(['map', 'dump', 'pinned', join(pinDirOf(agent), 'endpoints')]), [], 'the endpoints map is empty');
  // So is every other per-endpoint (plain hash) map the agent pinned.
  for (const f of walk(pinDirOf(agent)).filter((x) => !x.endsWith('/'))) {
    const m = spawnSync('bpftool', ['-j', 'map', 'show', 'pinned', join(pinDirOf(agent), f)], { encoding: 'utf8', timeout: 10_000 });
    if (m.status === 0 && (JSON.parse(m.stdout) as { type: string }).type === 'hash') {
      assert.deepEqual(bpftoolJson<unknown[]>(['map', 'dump', 'pinned', join(pinDirOf(agent), f)]), [], `the pinned map ${f} is empty`);
    }
  }
  assert.deepEqual(walk(join(pinDirOf(agent), 'lxc')), [], 'no pinned link directories left under lxc/');
  assert.deepEqual(walk(pinDirOf(agent)), pinsAfter10, 'the same pins as after 10 cycles');
  assert.deepEqual(listEndpoints(agent), []);
  const st = await apiRequest<{ endpoints: number; ipam: { used: number }[] }>(agent.apiSocket, 'GET', '/v1/status');
  assert.equal(st.body.endpoints, 0);
  assert.deepEqual(st.body.ipam.map((u) => u.used), [0, 0], 'every address given back');
  const state = JSON.parse(readFileSync(join(agent.dir, 'state', 'state.json'), 'utf8')) as { endpoints: unknown[] };
  assert.deepEqual(state.endpoints, []);
});

// ---------------------------------------------------------------------------
// 6. Cleanup

test('waggle agent --cleanup removes namespaces, links, programs, pins, the bpffs mount and the state', { timeout: 120_000 }, async (t) => {
  if (skipUnlessRoot(t) || requireTools(t, ...TOOLS)) return;
  t.after(() => cleanup.run());
  const agent = await startAgent();
  const a = createEndpoint(agent, `cln-${PID}-a`, 'app=a', 'clean');
  const b = createEndpoint(agent, `cln-${PID}-b`, 'app=b', 'clean');
  // An adopted namespace: its endpoint plumbing goes, the namespace (ours) stays.
  const adoptedNs = createNetns('cln-adopt');
  cleanup.add(() => adoptedNs.remove(), `netns ${adoptedNs.name}`);
  const c = createEndpoint(agent, `cln-${PID}-c`, 'app=c', 'clean', ['--netns', adoptedNs.path]);
  assert.equal(c.netnsCreated, false);
  assert.equal(c.netnsPath, adoptedNs.path);
  assert.equal(await ping(endpointNs(a.name), b.ipv4 as string, 1), 1);
  assert.equal(await ping(adoptedNs, a.ipv6 as string, 1), 1);

  const eps = [a, b, c];
  const links = eps.flatMap((e) => assertAttached(e));
  const bpffs = join(agent.dir, 'bpffs');
  const pinned = pinnedIds(bpffs);
  const linkIds = [...new Set([...links.map((l) => l.id), ...pinned.links])];
  const progIds = [...new Set([...links.map((l) => l.programId), ...pinned.progs])];
  const mapIds = pinned.maps;
  assert.ok(mapIds.length >= 4, `the shared maps are pinned: ${walk(bpffs).join(', ')}`);
  assert.ok(readFileSync('/proc/self/mounts', 'utf8').split('\n').some((l) => l.split(' ')[1] === bpffs && l.split(' ')[2] === 'bpf'), 'the agent mounted its bpffs');

  assert.equal(await agent.stop(), 0);
  // Stopped: the datapath still runs.
  assert.equal(await ping(endpointNs(a.name), b.ipv6 as string, 1), 1);

  const r = spawnSync(process.execPath, [CLI, 'agent', '--cleanup', ...agent.flags], { encoding: 'utf8', timeout: 120_000 });
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, new RegExp(`removed 3 endpoint\\(s\\): ${a.name}, ${b.name}, ${c.name}`));

  const netns = listNetns();
  assert.ok(!netns.includes(a.name) && !netns.includes(b.name), 'the namespaces the agent made are gone');
  assert.ok(netns.includes(adoptedNs.name), 'the adopted namespace is left to its owner');
  assert.deepEqual(JSON.parse(adoptedNs.exec(['ip', '-j', 'link', 'show'])).map((l: { ifname: string }) => l.ifname), ['lo'], 'its eth0 is gone');
  const nodeNow = nodeLinks();
  for (const e of eps) assert.ok(!nodeNow.includes(e.hostIfname), `${e.hostIfname} is gone`);
  assert.ok(!readFileSync('/proc/self/mounts', 'utf8').split('\n').some((l) => l.split(' ')[1] === bpffs), 'the bpffs is unmounted');
  for (const p of ['state', 'bpffs', 'api.sock']) assert.ok(!existsSync(join(agent.dir, p)), `${p} is gone`);
  // The kernel objects go once nothing refers to them (freeing is deferred).
  await waitFor('the links, programs and maps to be freed', () => {
    const [l, p, m] = [kernelLinkIds(), kernelProgIds(), kernelMapIds()];
    return linkIds.every((x) => !l.has(x)) && progIds.every((x) => !p.has(x)) && mapIds.every((x) => !m.has(x)) ? true : undefined;
  }, 10_000, 250).catch(() => {
    const [l, p, m] = [kernelLinkIds(), kernelProgIds(), kernelMapIds()];
    throw new Error(`left in the kernel: links ${linkIds.filter((x) => l.has(x))}, programs ${progIds.filter((x) => p.has(x))}, maps ${mapIds.filter((x) => m.has(x))}`);
  });

  // Cleaning up again finds nothing and succeeds.
  const again = spawnSync(process.execPath, [CLI, 'agent', '--cleanup', ...agent.flags], { encoding: 'utf8', timeout: 60_000 });
  assert.equal(again.status, 0, again.stderr);
  assert.match(again.stdout, /removed 0 endpoint\(s\)/);
});

// ---------------------------------------------------------------------------

test('nothing is left behind: namespaces, links, bpffs mounts, directories', async (t) => {
  if (skipUnlessRoot(t)) return;
  await cleanup.run();
  assert.deepEqual(listNetns().filter((n) => n.includes(`-${PID}-`)), [], 'no namespace of this run');
  const links = nodeLinks();
  assert.deepEqual(links.filter((l) => made.ifnames.has(l)), [], 'no host-side veth of this run');
  const mounts = readFileSync('/proc/self/mounts', 'utf8').split('\n').map((l) => l.split(' ')[1] ?? '');
  assert.deepEqual(mounts.filter((m) => [...made.dirs].some((d) => m.startsWith(d))), [], 'no bpffs of this run mounted');
  assert.deepEqual([...made.dirs].filter((d) => existsSync(d)), [], 'no agent directory left');
});
