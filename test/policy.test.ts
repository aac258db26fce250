/**
 * Network policy with a real agent, real endpoints and real traffic.
 *
 * One agent and four endpoints in two namespaces (prod: web, api; dev:
 * client, devapi — devapi has the same `app=api` label as api) serve every
 * test; each test starts from no policy and no namespace labels. Beside the
 * endpoints there are two parties that are not endpoints:
 *
 * - host: the node itself, at 198.18.0.1 / 2001:2::1 on the node side of a
 *   veth this file creates (identity host);
 * - world / world-x: an "external" namespace behind that veth, at
 *   198.18.0.10 / 2001:2::10 and 198.18.0.200 / 2001:2::8010 (world-x lies in
 *   the `except` ranges of the ipBlock test). The node forwards between it and
 *   the endpoints because forwarding is switched on for exactly the input
 *   devices involved (the node-side veth and each endpoint's host-side veth),
 *   never globally. IPv6 forwarding per device needs the kernel's
 *   `force_forwarding` (Linux 6.17+); without it the world cells are IPv4 only.
 *
 * Every matrix case applies policies (Kubernetes NetworkPolicy,
 * CiliumNetworkPolicy, CiliumClusterwideNetworkPolicy), probes every ordered
 * pair of distinct parties (an endpoint on at least one side) on TCP 80, 8000,
 * 8100, UDP 53, 8000 and ICMP echo, over IPv4 and IPv6, compares the whole
 * observed matrix with the expected one, then asks `policy trace` about every
 * cell and compares its verdicts with what the traffic got. Traffic from an
 * endpoint to itself never reaches the datapath (it stays on the namespace's
 * loopback), so those cells are not part of the matrices.
 *
 * The cases: no policy; default-deny ingress and egress (NetworkPolicy); allow
 * by pod label (CNP, NetworkPolicy egress); by namespace label, following
 * `waggle namespace label` changes at once; pod AND namespace selector in one
 * peer; ipBlock with except; port ranges (endPort); deny rules overriding
 * allows (CNP ingressDeny/egressDeny); entities host, world and cluster (CNP,
 * CCNP); ICMP rules (CNP icmps); a policy updated and then deleted; L7 rules
 * (accepted, reported as not enforced, L4 part enforced) — each with its
 * matrix and `policy trace` for every cell; drops in `waggle observe -o json`
 * (POLICY_DENIED, POLICY_DENY with the deny policy named); revocation cutting
 * established TCP connections for good while an unrelated change does not;
 * replies of allowed connections passing while the reverse direction is
 * denied; bad input (exit 1, one sentence naming document and field, nothing
 * applied).
 *
 * Addresses used: the agent's pod CIDRs (10.199.x.0/24, fd99:x::/64) and the
 * benchmarking nets 198.18.0.0/24 and 2001:2::/64, all inside namespaces and
 * devices this file creates.
 */
import { after, test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { apiOk, apiRequest, CLI, TestAgent } from './helpers/agent.js';
import { Cleanup, createNetns, ip, listNetns, type Netns } from './helpers/netns.js';
import { probe, startProbeServer, startStream, writeProbeScripts, type ProbeOutcome, type ProbeScripts, type ProbeTarget, type Stream } from './helpers/probe.js';
import { requireTools, skipUnlessRoot } from './helpers/root.js';
import { stop } from './helpers/traffic.js';

const cleanup = new Cleanup();
after(() => cleanup.run());

const PID = process.pid;
const TOOLS = ['ip', 'ping', 'nsenter'];
/** How long a probe waits for an answer; a dropped packet is silent, so this is what a denied cell costs. */
const PROBE_TIMEOUT_MS = 700;
/** The second chance of a cell that should have been answered (see checkMatrix). */
const RETRY_TIMEOUT_MS = 3_000;
const TCP_PORTS = [80, 8000, 8100];
const UDP_PORTS = [53, 8000];

/** Per-file state that must not leak: what the final test checks. */
const made = { dirs: new Set<string>(), links: new Set<string>(), netns: new Set<string>() };

// ---------------------------------------------------------------------------
// The parties

/** What `waggle endpoint get -o json` prints (the parts used here). */
interface Endpoint {
  id: number;
  name: string;
  namespace: string;
  labels: Record<string, string>;
  netnsPath: string;
  hostIfname: string;
  ipv4: string;
  ipv6: string;
}

type PartyName = 'web' | 'api' | 'client' | 'devapi' | 'host' | 'world' | 'world-x';

/** Something that sends and receives probes: an endpoint, the node, or an external address. */
interface Party {
  name: PartyName;
  kind: 'endpoint' | 'host' | 'world';
  /** Namespace of the process that probes from it (undefined: the node's). */
  netnsPath: string | undefined;
  v4: string;
  v6: string;
  /** Probes from it bind its address (its namespace has others). */
  bind: boolean;
  /** Endpoints only. */
  endpoint?: Endpoint;
  /** Endpoints only: the Kubernetes namespace. */
  ns?: string;
}

const ENDPOINT_SPECS = [
  { name: 'web', ns: 'prod', labels: 'app=web,tier=front' },
  { name: 'api', ns: 'prod', labels: 'app=api,tier=back' },
  { name: 'client', ns: 'dev', labels: 'app=client' },
  { name: 'devapi', ns: 'dev', labels: 'app=api,tier=back' },
] as const;

interface Env {
  agent: TestAgent;
  dir: string;
  scripts: ProbeScripts;
  ext: Netns;
  /** The node side of the external namespace's veth. */
  nodeIf: string;
  parties: Record<PartyName, Party>;
  endpoints: Party[];
  /** Whether IPv6 to and from the external namespace is forwarded (per-device force_forwarding). */
  ipv6World: boolean;
  /** Every policy file applied so far (the reset deletes them). */
  applied: Set<string>;
}

function setDeviceSysctl(path: string, value: string): void {
  writeFileSync(join('/proc/sys', path), value);
}

function linkExists(name: string): boolean {
  return spawnSync('ip', ['link', 'show', 'dev', name], { stdio: 'ignore', timeout: 10_000 }).status === 0;
}

/** Switches on forwarding of packets that come in on `dev` (IPv4; IPv6 when the kernel can do it per device). */
function enableForwarding(dev: string, ipv6: boolean): void {
  setDeviceSysctl(`net/ipv4/conf/${dev}/forwarding`, '1');
  if (ipv6) setDeviceSysctl(`net/ipv6/conf/${dev}/force_forwarding`, '1');
}

async function startServer(scripts: ProbeScripts, netnsPath: string | undefined, bind: string[], what: string): Promise<ChildProcess> {
  const child = await startProbeServer(scripts, netnsPath, { bind, tcp: TCP_PORTS, udp: UDP_PORTS });
  cleanup.add(() => stop(child), `probe server in ${what} (${child.pid})`);
  return child;
}

async function createEnv(): Promise<Env> {
  const dir = mkdtempSync(join(tmpdir(), 'waggle-policy-'));
  made.dirs.add(dir);
  cleanup.add(() => rmSync(dir, { recursive: true, force: true }), `temp dir ${dir}`);
  const scripts = writeProbeScripts(dir);

  // The external namespace and its veth to the node.
  const ext = createNetns('polext');
  made.netns.add(ext.name);
  cleanup.add(() => ext.remove(), `netns ${ext.name}`);
  const nodeIf = `pxt${PID % 1_000_000}`;
  ip(['link', 'add', nodeIf, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', ext.name]);
  made.links.add(nodeIf);
  cleanup.add(() => { if (linkExists(nodeIf)) ip(['link', 'del', nodeIf]); }, `link ${nodeIf}`);
  ip(['addr', 'add', '198.18.0.1/24', 'dev', nodeIf]);
  ip(['addr', 'add', '2001:2::1/64', 'dev', nodeIf, 'nodad']);
  ip(['link', 'set', nodeIf, 'up']);
  for (const a of ['198.18.0.10/24', '198.18.0.200/24']) ext.exec(['ip', 'addr', 'add', a, 'dev', 'eth0']);
  for (const a of ['2001:2::10/64', '2001:2::8010/64']) ext.exec(['ip', 'addr', 'add', a, 'dev', 'eth0', 'nodad']);
  ext.exec(['ip', 'link', 'set', 'eth0', 'up']);
  ext.exec(['ip', 'route', 'add', 'default', 'via', '198.18.0.1']);
  ext.exec(['ip', '-6', 'route', 'add', 'default', 'via', '2001:2::1']);
  // IPv6 forwarding per input device exists only with force_forwarding (Linux 6.17+); the
  // global switch is off limits, so without it the world cells are IPv4 only.
  const ipv6World = existsSync(`/proc/sys/net/ipv6/conf/${nodeIf}/force_forwarding`);
  enableForwarding(nodeIf, ipv6World);

  const agent = new TestAgent({ flowBuffer: 50_000 });
  made.dirs.add(agent.dir);
  cleanup.add(() => agent.remove(), `agent ${agent.nodeName}`);
  await agent.start();

  const parties = {} as Record<PartyName, Party>;
  for (const s of ENDPOINT_SPECS) {
    const ep = JSON.parse(agent.ok(['endpoint', 'create', `pol-${PID}-${s.name}`, '--labels', s.labels, '--namespace', s.ns, '-o', 'json'])) as Endpoint;
    made.links.add(ep.hostIfname);
    made.netns.add(ep.name);
    const got = JSON.parse(agent.ok(['endpoint', 'get', ep.name, '-o', 'json'])) as Endpoint;
    assert.equal(got.netnsPath, ep.netnsPath);
    enableForwarding(ep.hostIfname, ipv6World);
    parties[s.name] = { name: s.name, kind: 'endpoint', netnsPath: ep.netnsPath, v4: ep.ipv4, v6: ep.ipv6, bind: false, endpoint: ep, ns: s.ns };
  }
  parties.host = { name: 'host', kind: 'host', netnsPath: undefined, v4: '198.18.0.1', v6: '2001:2::1', bind: true };
  parties.world = { name: 'world', kind: 'world', netnsPath: ext.path, v4: '198.18.0.10', v6: '2001:2::10', bind: true };
  parties['world-x'] = { name: 'world-x', kind: 'world', netnsPath: ext.path, v4: '198.18.0.200', v6: '2001:2::8010', bind: true };
  const endpoints = ENDPOINT_SPECS.map((s) => parties[s.name]);

  await Promise.all([
    ...endpoints.map((p) => startServer(scripts, p.netnsPath, ['::'], p.name)),
    // Several addresses per family there: a socket per address, so UDP answers come from the address asked.
    startServer(scripts, ext.path, ['198.18.0.10', '198.18.0.200', '2001:2::10', '2001:2::8010'], 'the external namespace'),
    startServer(scripts, undefined, ['198.18.0.1', '2001:2::1'], 'the node namespace'),
  ]);
  return { agent, dir, scripts, ext, nodeIf, parties, endpoints, ipv6World, applied: new Set() };
}

let envPromise: Promise<Env> | undefined;

/** The shared agent, endpoints and servers (made by the first test that needs them), with no policy and no namespace labels. */
async function env(t: TestContext): Promise<Env | undefined> {
  if (skipUnlessRoot(t) || requireTools(t, ...TOOLS)) return undefined;
  envPromise ??= createEnv();
  const e = await envPromise;
  if (!e.ipv6World) t.diagnostic('no per-device IPv6 forwarding (force_forwarding) on this kernel: world cells are IPv4 only');
  reset(e);
  return e;
}

// ---------------------------------------------------------------------------
// Policies and namespaces

/** Writes `yaml` to DIR/NAME.yaml and applies it with `waggle apply -f`; returns stdout. */
function apply(e: Env, name: string, yaml: string): string {
  const file = join(e.dir, `${name}.yaml`);
  writeFileSync(file, yaml);
  e.applied.add(file);
  const r = e.agent.cli(['apply', '-f', file]);
  assert.equal(r.code, 0, `waggle apply -f ${name}.yaml: ${r.stderr}`);
  return r.stdout;
}

interface PolicyListItem {
  id: number;
  kind: string;
  name: string;
  namespace?: string;
  rules: number;
  defaultDeny: { ingress: boolean; egress: boolean };
  notEnforced: string[];
}

function policyList(e: Env): PolicyListItem[] {
  return JSON.parse(e.agent.ok(['policy', 'list', '-o', 'json'])) as PolicyListItem[];
}

interface NamespaceInfo {
  name: string;
  labels: Record<string, string>;
}

/** Deletes every policy this file applied and every namespace label it set. */
function reset(e: Env): void {
  if (policyList(e).length > 0) {
    const r = e.agent.cli(['delete', ...[...e.applied].flatMap((f) => ['-f', f])]);
    assert.ok(r.code === 0 || r.code === 1, `waggle delete: ${r.stderr}`);
  }
  assert.deepEqual(policyList(e), [], 'no policy left after the reset');
  for (const ns of JSON.parse(e.agent.ok(['namespace', 'list', '-o', 'json'])) as NamespaceInfo[]) {
    const extra = Object.keys(ns.labels).filter((k) => k !== 'kubernetes.io/metadata.name');
    if (extra.length) e.agent.ok(['namespace', 'label', ns.name, ...extra.map((k) => `${k}-`)]);
  }
}

function labelNamespace(e: Env, ns: string, labels: string[], overwrite = false): NamespaceInfo {
  return JSON.parse(e.agent.ok(['namespace', 'label', ns, ...labels, ...(overwrite ? ['--overwrite'] : []), '-o', 'json'])) as NamespaceInfo;
}

// ---------------------------------------------------------------------------
// Matrices

type Proto = 'tcp' | 'udp' | 'icmp';

interface Service {
  proto: Proto;
  /** 0 for ICMP (echo). */
  port: number;
}

const SERVICES: Service[] = [
  ...TCP_PORTS.map((port) => ({ proto: 'tcp' as const, port })),
  ...UDP_PORTS.map((port) => ({ proto: 'udp' as const, port })),
  { proto: 'icmp', port: 0 },
];

interface Cell {
  src: Party;
  dst: Party;
  svc: Service;
  family: 4 | 6;
}

type Verdict = 'allowed' | 'denied';
type Matrix = Record<string, Verdict>;

const svcName = (s: Service): string => (s.proto === 'icmp' ? 'icmp-echo' : `${s.proto}/${s.port}`);
const cellKey = (c: Cell): string => `${c.src.name} → ${c.dst.name} ${svcName(c.svc)} IPv${c.family}`;
const addrOf = (p: Party, family: 4 | 6): string => (family === 4 ? p.v4 : p.v6);

/** Cell predicates for expectations. */
const tcp = (c: Cell, port?: number): boolean => c.svc.proto === 'tcp' && (port === undefined || c.svc.port === port);
const udp = (c: Cell, port?: number): boolean => c.svc.proto === 'udp' && (port === undefined || c.svc.port === port);
const icmp = (c: Cell): boolean => c.svc.proto === 'icmp';
const isEp = (p: Party): boolean => p.kind === 'endpoint';

interface MatrixCase {
  title: string;
  /** Which parties take part besides the endpoints (default: none). */
  extra?: PartyName[];
  /** Whether the cell's traffic should get through. */
  expect: (c: Cell) => boolean;
}

function cellsOf(e: Env, m: MatrixCase): Cell[] {
  const parties = [...e.endpoints, ...(m.extra ?? []).map((n) => e.parties[n])];
  const cells: Cell[] = [];
  for (const src of parties) {
    for (const dst of parties) {
      if (src === dst || (!isEp(src) && !isEp(dst))) continue;
      for (const family of [4, 6] as const) {
        if (family === 6 && !e.ipv6World && (src.kind === 'world' || dst.kind === 'world')) continue;
        for (const svc of SERVICES) cells.push({ src, dst, svc, family });
      }
    }
  }
  return cells;
}

/** Differences between two matrices, one line per cell. */
function diff(actual: Matrix, expected: Matrix, what: [string, string]): string {
  const keys = [...new Set([...Object.keys(actual), ...Object.keys(expected)])].sort();
  return keys.filter((k) => actual[k] !== expected[k]).map((k) => `  ${k}: ${what[0]} ${actual[k]}, ${what[1]} ${expected[k]}`).join('\n');
}

function sortedMatrix(entries: [string, Verdict][]): Matrix {
  return Object.fromEntries(entries.sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
}

/** Sends every cell's traffic (one prober per source, all targets at once); the verdict each got. */
async function observeMatrix(e: Env, cells: Cell[], timeoutMs: number): Promise<Matrix> {
  const bySource = new Map<Party, Cell[]>();
  for (const c of cells) bySource.set(c.src, [...(bySource.get(c.src) ?? []), c]);
  const results = await Promise.all([...bySource].map(async ([src, list]) => {
    const targets: ProbeTarget[] = list.map((c) => ({
      id: cellKey(c), proto: c.svc.proto, addr: addrOf(c.dst, c.family), port: c.svc.port,
      ...(src.bind ? { bind: addrOf(src, c.family) } : {}),
    }));
    return probe(e.scripts, src.netnsPath, targets, timeoutMs);
  }));
  const outcomes: Record<string, ProbeOutcome> = Object.assign({}, ...results) as Record<string, ProbeOutcome>;
  const errors = Object.entries(outcomes).filter(([, o]) => o !== 'ok' && o !== 'timeout');
  assert.deepEqual(errors, [], 'every probe was answered or timed out (a dropped packet is silent); anything else is a broken test setup');
  for (const c of cells) assert.ok(cellKey(c) in outcomes, `the prober reported ${cellKey(c)}`);
  return sortedMatrix(cells.map((c) => [cellKey(c), outcomes[cellKey(c)] === 'ok' ? 'allowed' : 'denied']));
}

interface TraceDirection {
  verdict: Verdict;
  reason: string;
  rule?: { kind: string; name: string; namespace?: string; index: number };
  matchType: number;
}

interface TraceResult {
  verdict: Verdict;
  from: { name: string; identity: number };
  to: { name: string; identity: number };
  egress?: TraceDirection;
  ingress?: TraceDirection;
}

function traceParty(p: Party, family: 4 | 6): Record<string, string> {
  return p.endpoint ? { endpoint: p.endpoint.name } : { ip: addrOf(p, family) };
}

function traceDport(c: Cell): string {
  if (c.svc.proto === 'icmp') return c.family === 4 ? '8/icmp' : '128/icmpv6';
  return `${c.svc.port}/${c.svc.proto}`;
}

function traceCell(e: Env, c: Cell): Promise<TraceResult> {
  return apiOk<TraceResult>(e.agent.apiSocket, 'POST', '/v1/policy/trace', {
    from: traceParty(c.src, c.family), to: traceParty(c.dst, c.family), dport: traceDport(c),
  });
}

/** `policy trace` for every cell (a few requests at a time). */
async function traceMatrix(e: Env, cells: Cell[]): Promise<Matrix> {
  const out: [string, Verdict][] = [];
  let next = 0;
  await Promise.all(Array.from({ length: 8 }, async () => {
    while (next < cells.length) {
      const c = cells[next++] as Cell;
      out.push([cellKey(c), (await traceCell(e, c)).verdict]);
    }
  }));
  return sortedMatrix(out);
}

/**
 * The whole reachability matrix, observed with real traffic, against the
 * expected one; then `policy trace` for every cell against what the traffic got.
 */
async function checkMatrix(t: TestContext, e: Env, m: MatrixCase): Promise<Matrix> {
  const cells = cellsOf(e, m);
  let observed = await observeMatrix(e, cells, PROBE_TIMEOUT_MS);
  // An answer proves a cell allowed; a missing one may also mean the machine was too busy to
  // answer in time. Cells expected allowed that got no answer are probed once more, patiently.
  const retry = cells.filter((c) => observed[cellKey(c)] === 'denied' && m.expect(c));
  if (retry.length > 0) {
    t.diagnostic(`${m.title}: ${retry.length} cells expected allowed got no answer in ${PROBE_TIMEOUT_MS} ms; probing them again with ${RETRY_TIMEOUT_MS} ms`);
    observed = sortedMatrix(Object.entries({ ...observed, ...await observeMatrix(e, retry, RETRY_TIMEOUT_MS) }));
  }
  const expected = sortedMatrix(cells.map((c) => [cellKey(c), m.expect(c) ? 'allowed' : 'denied']));
  const allowed = Object.values(observed).filter((v) => v === 'allowed').length;
  t.diagnostic(`${m.title}: ${cells.length} cells, ${allowed} allowed`);
  assert.deepEqual(observed, expected, `${m.title}: the traffic got\n${diff(observed, expected, ['observed', 'expected'])}`);
  const traced = await traceMatrix(e, cells);
  assert.deepEqual(traced, observed, `${m.title}: policy trace disagrees with the traffic\n${diff(traced, observed, ['trace', 'traffic'])}`);
  return observed;
}

// ---------------------------------------------------------------------------
// Flows

interface FlowPolicy {
  name: string;
  namespace?: string;
  kind: string;
  labels: string[];
}

interface Flow {
  time: string;
  verdict: string;
  drop_reason_desc?: string;
  IP?: { source: string; destination: string };
  l4?: Record<string, Record<string, unknown>>;
  event_type: { type: number; sub_type?: number };
  traffic_direction?: string;
  policy_match_type?: number;
  egress_denied_by?: FlowPolicy[];
  ingress_denied_by?: FlowPolicy[];
  egress_allowed_by?: FlowPolicy[];
  ingress_allowed_by?: FlowPolicy[];
  Summary: string;
}

/** The flows since `since` (ms since the epoch) of those the agent keeps (`waggle observe -o json`; more output than TestAgent.cli buffers). */
function flows(e: Env, since: number): Flow[] {
  const r = spawnSync(process.execPath, [CLI, 'observe', '-o', 'json'], {
    encoding: 'utf8', env: { ...process.env, WAGGLE_API_SOCKET: e.agent.apiSocket }, timeout: 60_000, maxBuffer: 512 * 1024 * 1024,
  });
  assert.equal(r.status, 0, `waggle observe: ${r.error?.message ?? r.stderr}`);
  return r.stdout.split('\n').filter((l) => l.trim() !== '')
    .map((l) => JSON.parse(l) as { flow?: Flow }).flatMap((r) => (r.flow && Date.parse(r.flow.time) >= since ? [r.flow] : []));
}

/** Flows of the cell's first packet (IPv4 TCP or UDP to the cell's port). */
function flowsOfCell(all: Flow[], src: Party, dst: Party, proto: 'TCP' | 'UDP', port: number): Flow[] {
  return all.filter((f) => f.IP?.source === src.v4 && f.IP?.destination === dst.v4 && f.l4?.[proto]?.destination_port === port);
}

const POLICY_VERDICT_EVENT = 5;

/** A drop of the cell's traffic, and the policy-verdict event that came with it. */
function assertDropped(all: Flow[], src: Party, dst: Party, port: number, want: { reason: 'POLICY_DENIED' | 'POLICY_DENY'; direction: 'INGRESS' | 'EGRESS'; deniedBy?: { name: string; namespace?: string; kind: string } }): void {
  const what = `${src.name} → ${dst.name} tcp/${port}`;
  const mine = flowsOfCell(all, src, dst, 'TCP', port);
  const drops = mine.filter((f) => f.verdict === 'DROPPED' && f.event_type.type !== POLICY_VERDICT_EVENT);
  assert.ok(drops.length > 0, `${what}: a DROPPED flow in waggle observe; flows of the cell: ${JSON.stringify(mine)}`);
  const verdicts = mine.filter((f) => f.verdict === 'DROPPED' && f.event_type.type === POLICY_VERDICT_EVENT);
  assert.ok(verdicts.length > 0, `${what}: a policy-verdict event (type 5) with verdict DROPPED; flows: ${JSON.stringify(mine)}`);
  for (const f of [...drops, ...verdicts]) {
    assert.equal(f.drop_reason_desc, want.reason, `${what}: drop_reason_desc of ${JSON.stringify(f)}`);
    assert.equal(f.traffic_direction, want.direction, `${what}: traffic_direction`);
    const deniedBy = want.direction === 'INGRESS' ? f.ingress_denied_by : f.egress_denied_by;
    if (want.deniedBy) {
      assert.equal(deniedBy?.length, 1, `${what}: ${want.direction.toLowerCase()}_denied_by names one policy: ${JSON.stringify(f)}`);
      const { name, namespace, kind } = deniedBy?.[0] as FlowPolicy;
      assert.deepEqual({ name, namespace, kind }, want.deniedBy, `${what}: the deny policy`);
      assert.ok(deniedBy?.[0]?.labels.includes(`k8s:io.cilium.k8s.policy.name=${want.deniedBy.name}`), `${what}: policy labels`);
    } else {
      assert.equal(f.ingress_denied_by, undefined, `${what}: no rule denied it, so no ingress_denied_by`);
      assert.equal(f.egress_denied_by, undefined, `${what}: no egress_denied_by`);
    }
  }
}

// ---------------------------------------------------------------------------
// YAML

const np = (name: string, ns: string, spec: string): string =>
  `apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: ${name}\n  namespace: ${ns}\nspec:\n${spec}`;
const cnp = (name: string, ns: string, spec: string): string =>
  `apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata:\n  name: ${name}\n  namespace: ${ns}\nspec:\n${spec}`;
const ccnp = (name: string, spec: string): string =>
  `apiVersion: cilium.io/v2\nkind: CiliumClusterwideNetworkPolicy\nmetadata:\n  name: ${name}\nspec:\n${spec}`;

// ---------------------------------------------------------------------------
// Matrices

test('no policy: every party reaches every other on every port, IPv4 and IPv6', { timeout: 120_000 }, async (t) => {
  const e = await env(t);
  if (!e) return;
  await checkMatrix(t, e, { title: 'no policy', extra: ['host', 'world'], expect: () => true });
});

test('default-deny ingress (NetworkPolicy): nothing reaches prod, prod reaches everything; drops show POLICY_DENIED', { timeout: 120_000 }, async (t) => {
  const e = await env(t);
  if (!e) return;
  assert.match(apply(e, 'deny-ingress', np('default-deny-ingress', 'prod', '  podSelector: {}\n  policyTypes: [Ingress]\n')),
    /NetworkPolicy\/prod\/default-deny-ingress created/);
  assert.deepEqual(policyList(e).map((p) => [p.kind, p.namespace, p.name, p.defaultDeny]),
    [['NetworkPolicy', 'prod', 'default-deny-ingress', { ingress: true, egress: false }]]);
  const bpfPolicy = JSON.parse(e.agent.ok(['bpf', 'policy', 'get', e.parties.web.endpoint?.name as string, '-o', 'json'])) as { flags: number };
  assert.equal(bpfPolicy.flags, 1, 'web: ingress policy enforced, egress not');
  const since = Date.now();
  await checkMatrix(t, e, {
    title: 'default-deny ingress', extra: ['host', 'world'],
    expect: (c) => c.dst.ns !== 'prod',
  });
  const all = flows(e, since);
  assertDropped(all, e.parties.client, e.parties.web, 80, { reason: 'POLICY_DENIED', direction: 'INGRESS' });
  assertDropped(all, e.parties.api, e.parties.web, 8000, { reason: 'POLICY_DENIED', direction: 'INGRESS' });
  assertDropped(all, e.parties.host, e.parties.api, 80, { reason: 'POLICY_DENIED', direction: 'INGRESS' });
  assertDropped(all, e.parties.world, e.parties.api, 8100, { reason: 'POLICY_DENIED', direction: 'INGRESS' });
});

test('default-deny egress (NetworkPolicy): dev reaches nothing, yet everything reaches dev', { timeout: 120_000 }, async (t) => {
  const e = await env(t);
  if (!e) return;
  apply(e, 'deny-egress', np('default-deny-egress', 'dev', '  podSelector: {}\n  policyTypes: [Egress]\n'));
  const since = Date.now();
  await checkMatrix(t, e, {
    title: 'default-deny egress', extra: ['host', 'world'],
    expect: (c) => c.src.ns !== 'dev',
  });
  const all = flows(e, since);
  assertDropped(all, e.parties.client, e.parties.web, 80, { reason: 'POLICY_DENIED', direction: 'EGRESS' });
  assertDropped(all, e.parties.devapi, e.parties.world, 8000, { reason: 'POLICY_DENIED', direction: 'EGRESS' });
});

test('allow by pod label: CNP fromEndpoints (scoped to its namespace) and NetworkPolicy egress podSelector', { timeout: 120_000 }, async (t) => {
  const e = await env(t);
  if (!e) return;
  apply(e, 'web-from-api', cnp('web-from-api', 'prod', [
    '  endpointSelector: {matchLabels: {app: web}}',
    '  ingress:',
    '  - fromEndpoints:',
    '    - matchLabels: {app: api}',
    '',
  ].join('\n')));
  apply(e, 'client-egress', np('client-egress', 'dev', [
    '  podSelector: {matchLabels: {app: client}}',
    '  policyTypes: [Egress]',
    '  egress:',
    '  - to:',
    '    - podSelector: {matchLabels: {app: api}}',
    '',
  ].join('\n')));
  await checkMatrix(t, e, {
    title: 'allow by pod label', extra: ['host', 'world'],
    // web takes only prod's api (a CNP selector stays in its namespace: not devapi);
    // client may only talk to dev's api.
    expect: (c) => (c.src.name !== 'client' || c.dst.name === 'devapi') && (c.dst.name !== 'web' || c.src.name === 'api'),
  });
  // The CLI's trace with labels of endpoints that need not exist: the namespace decides.
  const trace = (ns: string): TraceResult => JSON.parse(e.agent.ok(['policy', 'trace', '--from-labels', 'app=api', '--from-namespace', ns,
    '--to-endpoint', e.parties.web.endpoint?.name as string, '--dport', '80/tcp', '-o', 'json'])) as TraceResult;
  const fromProd = trace('prod');
  assert.equal(fromProd.verdict, 'allowed');
  assert.deepEqual(fromProd.ingress?.rule, { kind: 'CiliumNetworkPolicy', name: 'web-from-api', namespace: 'prod', index: 0 });
  const fromDev = trace('dev');
  assert.equal(fromDev.verdict, 'denied');
  assert.equal(fromDev.ingress?.reason, 'no-rule');
  const text = e.agent.ok(['policy', 'trace', '--from-endpoint', e.parties.client.endpoint?.name as string, '--to-endpoint', e.parties.web.endpoint?.name as string, '--dport', '80/tcp']);
  assert.match(text, /Final verdict: DENIED/);
});

test('allow by namespace label: selectors follow `waggle namespace label` at once', { timeout: 180_000 }, async (t) => {
  const e = await env(t);
  if (!e) return;
  assert.deepEqual(labelNamespace(e, 'dev', ['team=blue']).labels, { 'kubernetes.io/metadata.name': 'dev', team: 'blue' });
  apply(e, 'web-from-blue', np('web-from-blue', 'prod', [
    '  podSelector: {matchLabels: {app: web}}',
    '  ingress:',
    '  - from:',
    '    - namespaceSelector: {matchLabels: {team: blue}}',
    '',
  ].join('\n')));
  apply(e, 'devapi-from-blue', cnp('devapi-from-blue', 'dev', [
    '  endpointSelector: {matchLabels: {app: api}}',
    '  ingress:',
    '  - fromEndpoints:',
    '    - matchLabels: {io.cilium.k8s.namespace.labels.team: blue}',
    '',
  ].join('\n')));
  const blue = (ns: string[]) => (c: Cell): boolean =>
    !['web', 'devapi'].includes(c.dst.name) || ns.includes(c.src.ns ?? '');
  await checkMatrix(t, e, { title: 'dev is team=blue', expect: blue(['dev']) });

  // Without --overwrite a label keeps its value.
  const r = e.agent.cli(['namespace', 'label', 'dev', 'team=red']);
  assert.equal(r.code, 1, `relabel without --overwrite: ${r.stdout}${r.stderr}`);
  assert.match(r.stderr, /overwrite/);
  labelNamespace(e, 'dev', ['team=red'], true);
  await checkMatrix(t, e, { title: 'dev relabelled team=red', expect: blue([]) });

  labelNamespace(e, 'prod', ['team=blue']);
  const listed = JSON.parse(e.agent.ok(['namespace', 'list', '-o', 'json'])) as NamespaceInfo[];
  assert.deepEqual(listed.filter((n) => ['dev', 'prod'].includes(n.name)).map((n) => [n.name, n.labels.team]), [['dev', 'red'], ['prod', 'blue']]);
  assert.equal((JSON.parse(e.agent.ok(['namespace', 'get', 'prod', '-o', 'json'])) as NamespaceInfo).labels.team, 'blue');
  await checkMatrix(t, e, { title: 'prod labelled team=blue', expect: blue(['prod']) });

  e.agent.ok(['namespace', 'label', 'prod', 'team-']);
  await checkMatrix(t, e, { title: 'team label removed from prod', expect: blue([]) });
});

test('pod and namespace selector in one peer (AND), and a second peer (OR)', { timeout: 120_000 }, async (t) => {
  const e = await env(t);
  if (!e) return;
  labelNamespace(e, 'dev', ['team=blue']);
  apply(e, 'api-from-blue-clients', np('api-from-blue-clients', 'prod', [
    '  podSelector: {matchLabels: {app: api}}',
    '  policyTypes: [Ingress]',
    '  ingress:',
    '  - from:',
    '    - podSelector: {matchLabels: {app: client}}',
    '      namespaceSelector: {matchLabels: {team: blue}}',
    '    - podSelector:',
    '        matchExpressions:',
    '        - {key: app, operator: In, values: [web, other]}',
    '        - {key: tier, operator: Exists}',
    '',
  ].join('\n')));
  await checkMatrix(t, e, {
    title: 'pod + namespace selector', extra: ['host'],
    // client (dev, blue) matches the first peer; devapi (blue, not a client) neither; web (prod, tier) the second.
    expect: (c) => c.dst.name !== 'api' || ['client', 'web'].includes(c.src.name),
  });
});

test('ipBlock with except: CIDR rules match outside addresses only, not endpoints or the node', { timeout: 120_000 }, async (t) => {
  const e = await env(t);
  if (!e) return;
  const blocks = [
    '    - ipBlock: {cidr: 198.18.0.0/24, except: [198.18.0.128/25]}',
    '    - ipBlock: {cidr: "2001:2::/64", except: ["2001:2::8000/113"]}',
  ];
  apply(e, 'client-egress-cidr', np('client-egress-cidr', 'dev', [
    '  podSelector: {matchLabels: {app: client}}', '  policyTypes: [Egress]', '  egress:', '  - to:', ...blocks, '',
  ].join('\n')));
  apply(e, 'web-ingress-cidr', np('web-ingress-cidr', 'prod', [
    '  podSelector: {matchLabels: {app: web}}', '  policyTypes: [Ingress]', '  ingress:', '  - from:', ...blocks, '',
  ].join('\n')));
  const ipcache = JSON.parse(e.agent.ok(['bpf', 'ipcache', 'list', '-o', 'json'])) as { prefix: string; identity: number }[];
  for (const prefix of ['198.18.0.0/24', '198.18.0.128/25', '2001:2::/64', '2001:2::8000/113']) {
    const entry = ipcache.find((x) => x.prefix === prefix);
    assert.ok(entry && entry.identity >= 16777217, `ipcache has ${prefix} with a CIDR identity: ${JSON.stringify(entry)}`);
  }
  assert.equal(ipcache.find((x) => x.prefix === '198.18.0.1/32')?.identity, 1, 'the node\'s address inside the block is identity host');
  const identities = JSON.parse(e.agent.ok(['identity', 'list', '-o', 'json'])) as { id: number; kind: string }[];
  assert.ok(identities.filter((i) => i.kind === 'cidr').length >= 4, 'identity list shows the CIDR identities');
  await checkMatrix(t, e, {
    title: 'ipBlock with except', extra: ['host', 'world', 'world-x'],
    // 198.18.0.1 (host) lies in the block but is the node; 198.18.0.200 lies in the except range.
    expect: (c) => (c.src.name !== 'client' || c.dst.name === 'world') && (c.dst.name !== 'web' || c.src.name === 'world'),
  });
  // The CLI's trace from an outside address takes its CIDR identity; the world entity is not in the block.
  const trace = (from: string[]): TraceResult => JSON.parse(e.agent.ok(['policy', 'trace', ...from,
    '--to-endpoint', e.parties.web.endpoint?.name as string, '--dport', '8100/tcp', '-o', 'json'])) as TraceResult;
  const fromIp = trace(['--from-ip', '198.18.0.10']);
  assert.equal(fromIp.verdict, 'allowed');
  assert.ok(fromIp.from.identity >= 16777217, `198.18.0.10 has a CIDR identity: ${fromIp.from.identity}`);
  assert.deepEqual(fromIp.ingress?.rule, { kind: 'NetworkPolicy', name: 'web-ingress-cidr', namespace: 'prod', index: 0 });
  assert.equal(fromIp.egress, undefined, 'no egress side for an outside address');
  assert.equal(trace(['--from-ip', '198.18.0.200']).verdict, 'denied');
  const fromWorld = trace(['--from-entity', 'world']);
  assert.equal(fromWorld.verdict, 'denied');
  assert.equal(fromWorld.from.identity, 2);
});

test('port ranges (endPort): CNP TCP 8000-8099 and NetworkPolicy UDP 7999-8001, from any peer', { timeout: 120_000 }, async (t) => {
  const e = await env(t);
  if (!e) return;
  apply(e, 'api-port-range', cnp('api-port-range', 'prod', [
    '  endpointSelector: {matchLabels: {app: api}}',
    '  ingress:',
    '  - toPorts:',
    '    - ports:',
    '      - {port: "8000", endPort: 8099, protocol: TCP}',
    '',
  ].join('\n')));
  apply(e, 'web-udp-range', np('web-udp-range', 'prod', [
    '  podSelector: {matchLabels: {app: web}}',
    '  ingress:',
    '  - ports:',
    '    - {protocol: UDP, port: 7999, endPort: 8001}',
    '',
  ].join('\n')));
  await checkMatrix(t, e, {
    title: 'port ranges', extra: ['host', 'world'],
    expect: (c) => (c.dst.name !== 'api' || tcp(c, 8000)) && (c.dst.name !== 'web' || udp(c, 8000)),
  });
});

test('deny overrides allow (CNP ingressDeny, egressDeny): POLICY_DENY with the deny policy in *_denied_by', { timeout: 120_000 }, async (t) => {
  const e = await env(t);
  if (!e) return;
  apply(e, 'web-allow-cluster', cnp('web-allow-cluster', 'prod', [
    '  endpointSelector: {matchLabels: {app: web}}',
    '  ingress:',
    '  - fromEntities: [cluster]',
    '',
  ].join('\n')));
  apply(e, 'web-deny', cnp('web-deny', 'prod', [
    '  endpointSelector: {matchLabels: {app: web}}',
    '  ingressDeny:',
    '  - fromEndpoints:',
    '    - matchLabels: {k8s:io.kubernetes.pod.namespace: dev, app: client}',
    '  - fromEndpoints:',
    '    - matchLabels: {app: api}',
    '    toPorts:',
    '    - ports:',
    '      - {port: "8000", protocol: ANY}',
    '',
  ].join('\n')));
  // Egress too: client may go anywhere but to the node.
  apply(e, 'client-not-host', cnp('client-not-host', 'dev', [
    '  endpointSelector: {matchLabels: {app: client}}',
    '  egress:',
    '  - toEntities: [all]',
    '  egressDeny:',
    '  - toEntities: [host]',
    '',
  ].join('\n')));
  const since = Date.now();
  await checkMatrix(t, e, {
    title: 'deny overrides allow', extra: ['host', 'world'],
    expect: (c) => !(c.src.name === 'client' && c.dst.kind === 'host') && (c.dst.name !== 'web'
      || (c.src.kind !== 'world' && c.src.name !== 'client' && !(c.src.name === 'api' && (tcp(c, 8000) || udp(c, 8000))))),
  });
  const all = flows(e, since);
  const deniedBy = { name: 'web-deny', namespace: 'prod', kind: 'CiliumNetworkPolicy' };
  assertDropped(all, e.parties.client, e.parties.web, 80, { reason: 'POLICY_DENY', direction: 'INGRESS', deniedBy });
  assertDropped(all, e.parties.api, e.parties.web, 8000, { reason: 'POLICY_DENY', direction: 'INGRESS', deniedBy });
  assertDropped(all, e.parties.world, e.parties.web, 80, { reason: 'POLICY_DENIED', direction: 'INGRESS' });
  assertDropped(all, e.parties.client, e.parties.host, 8100, { reason: 'POLICY_DENY', direction: 'EGRESS', deniedBy: { name: 'client-not-host', namespace: 'dev', kind: 'CiliumNetworkPolicy' } });
  // An allowed connection's policy verdict names the allowing policy.
  const allowed = flowsOfCell(all, e.parties.devapi, e.parties.web, 'TCP', 80).filter((f) => f.event_type.type === POLICY_VERDICT_EVENT);
  assert.ok(allowed.length > 0, 'a policy-verdict event for devapi → web tcp/80');
  for (const f of allowed) {
    assert.equal(f.verdict, 'FORWARDED');
    assert.deepEqual(f.ingress_allowed_by?.map((p) => p.name), ['web-allow-cluster']);
  }
  // The trace names the rule.
  const cell = (src: Party, port: number): Cell => ({ src, dst: e.parties.web, svc: { proto: 'tcp', port }, family: 4 });
  const tr = await traceCell(e, cell(e.parties.api, 8000));
  assert.equal(tr.ingress?.reason, 'deny-rule');
  assert.deepEqual(tr.ingress?.rule, { kind: 'CiliumNetworkPolicy', name: 'web-deny', namespace: 'prod', index: 1 });
  const tc = await traceCell(e, cell(e.parties.client, 80));
  assert.deepEqual(tc.ingress?.rule, { kind: 'CiliumNetworkPolicy', name: 'web-deny', namespace: 'prod', index: 0 });
  const ta = await traceCell(e, cell(e.parties.api, 80));
  assert.equal(ta.ingress?.reason, 'allow');
  assert.equal(ta.ingress?.rule?.name, 'web-allow-cluster');
});

test('entities: host, world and cluster (CNP and a CiliumClusterwideNetworkPolicy)', { timeout: 120_000 }, async (t) => {
  const e = await env(t);
  if (!e) return;
  apply(e, 'web-from-host', cnp('web-from-host', 'prod', '  endpointSelector: {matchLabels: {app: web}}\n  ingress:\n  - fromEntities: [host]\n'));
  apply(e, 'client-to-world', cnp('client-to-world', 'dev', '  endpointSelector: {matchLabels: {app: client}}\n  egress:\n  - toEntities: [world]\n'));
  assert.match(apply(e, 'api-from-cluster', ccnp('api-from-cluster', '  endpointSelector: {matchLabels: {app: api}}\n  ingress:\n  - fromEntities: [cluster]\n')),
    /CiliumClusterwideNetworkPolicy\/api-from-cluster created/);
  await checkMatrix(t, e, {
    title: 'entities', extra: ['host', 'world'],
    expect: (c) => (c.src.name !== 'client' || c.dst.kind === 'world')
      && (c.dst.name !== 'web' || c.src.kind === 'host')
      // The clusterwide policy selects app=api in every namespace: api and devapi.
      && (!['api', 'devapi'].includes(c.dst.name) || c.src.kind !== 'world'),
  });
  const fromHost = JSON.parse(e.agent.ok(['policy', 'trace', '--from-entity', 'host', '--to-endpoint', e.parties.web.endpoint?.name as string,
    '--dport', '53/udp', '-o', 'json'])) as TraceResult;
  assert.equal(fromHost.verdict, 'allowed');
  assert.deepEqual(fromHost.ingress?.rule, { kind: 'CiliumNetworkPolicy', name: 'web-from-host', namespace: 'prod', index: 0 });
  const toWorld = JSON.parse(e.agent.ok(['policy', 'trace', '--from-endpoint', e.parties.client.endpoint?.name as string, '--to-entity', 'world',
    '--dport', '1/icmp', '-o', 'json'])) as TraceResult;
  assert.equal(toWorld.verdict, 'allowed');
  assert.equal(toWorld.egress?.rule?.name, 'client-to-world');
});

test('ICMP rules (CNP icmps): echo allowed by type and family only', { timeout: 120_000 }, async (t) => {
  const e = await env(t);
  if (!e) return;
  apply(e, 'api-icmp', cnp('api-icmp', 'prod', [
    '  endpointSelector: {matchLabels: {app: api}}',
    '  ingress:',
    '  - fromEndpoints:',
    '    - matchLabels: {k8s:io.kubernetes.pod.namespace: dev}',
    '    icmps:',
    '    - fields:',
    '      - {type: 8, family: IPv4}',
    '      - {type: EchoRequest, family: IPv6}',
    '  - toPorts:',
    '    - ports: [{port: "80", protocol: TCP}]',
    '',
  ].join('\n')));
  apply(e, 'client-icmp4', cnp('client-icmp4', 'dev', [
    '  endpointSelector: {matchLabels: {app: client}}',
    '  egress:',
    '  - icmps:',
    '    - fields: [{type: 8}]',
    '',
  ].join('\n')));
  await checkMatrix(t, e, {
    title: 'ICMP rules', extra: ['host', 'world'],
    // client may only send IPv4 echo requests; api takes echo from dev and TCP 80 from anyone.
    expect: (c) => (c.src.name !== 'client' || (icmp(c) && c.family === 4))
      && (c.dst.name !== 'api' || (icmp(c) && c.src.ns === 'dev') || tcp(c, 80)),
  });
});

test('a policy updated and deleted mid-test takes effect at once', { timeout: 120_000 }, async (t) => {
  const e = await env(t);
  if (!e) return;
  const v1 = np('web-policy', 'prod', [
    '  podSelector: {matchLabels: {app: web}}',
    '  ingress:',
    '  - from: [{podSelector: {matchLabels: {app: api}}}]',
    '    ports: [{port: 80}]',
    '',
  ].join('\n'));
  assert.match(apply(e, 'web-policy', v1), /web-policy created/);
  await checkMatrix(t, e, { title: 'web-policy v1', extra: ['host'], expect: (c) => c.dst.name !== 'web' || (c.src.name === 'api' && tcp(c, 80)) });

  const v2 = np('web-policy', 'prod', [
    '  podSelector: {matchLabels: {app: web}}',
    '  ingress:',
    '  - from: [{namespaceSelector: {}}]',
    '    ports: [{port: 53, protocol: UDP}]',
    '',
  ].join('\n'));
  assert.match(apply(e, 'web-policy', v2), /NetworkPolicy\/prod\/web-policy configured/);
  assert.match(apply(e, 'web-policy', v2), /NetworkPolicy\/prod\/web-policy unchanged/);
  const got = JSON.parse(e.agent.ok(['policy', 'get', 'web-policy', '-n', 'prod', '-o', 'json'])) as { source: { spec: { ingress: unknown[] } } };
  assert.deepEqual(got.source.spec.ingress, [{ from: [{ namespaceSelector: {} }], ports: [{ port: 53, protocol: 'UDP' }] }]);
  assert.match(e.agent.ok(['policy', 'get', 'web-policy', '-n', 'prod']), /protocol: UDP/);
  // namespaceSelector {} is every endpoint of every namespace, not the node.
  await checkMatrix(t, e, { title: 'web-policy v2', extra: ['host'], expect: (c) => c.dst.name !== 'web' || (isEp(c.src) && udp(c, 53)) });

  const del = e.agent.cli(['delete', '-f', join(e.dir, 'web-policy.yaml')]);
  assert.equal(del.code, 0, del.stderr);
  assert.match(del.stdout, /NetworkPolicy\/prod\/web-policy deleted/);
  assert.deepEqual(policyList(e), []);
  await checkMatrix(t, e, { title: 'web-policy deleted', extra: ['host'], expect: () => true });
});

test('L7 rules are accepted, reported as not enforced, and their L4 part is enforced', { timeout: 120_000 }, async (t) => {
  const e = await env(t);
  if (!e) return;
  const out = apply(e, 'web-l7', cnp('web-l7', 'prod', [
    '  endpointSelector: {matchLabels: {app: web}}',
    '  ingress:',
    '  - fromEndpoints: [{matchLabels: {app: api}}]',
    '    toPorts:',
    '    - ports: [{port: "80", protocol: TCP}]',
    '      rules:',
    '        http:',
    '        - {method: GET, path: /}',
    '',
  ].join('\n')));
  assert.match(out, /CiliumNetworkPolicy\/prod\/web-l7 created/);
  assert.match(out, /^warning: CiliumNetworkPolicy\/prod\/web-l7: .*HTTP rules .*not .*enforced/m, `apply says the HTTP rules are not enforced:\n${out}`);
  assert.deepEqual(policyList(e).map((p) => [p.name, p.notEnforced.length]), [['web-l7', 1]]);
  assert.match(e.agent.ok(['policy', 'list']), /1 not enforced/);
  await checkMatrix(t, e, { title: 'L7 rule (L4 part)', expect: (c) => c.dst.name !== 'web' || (c.src.name === 'api' && tcp(c, 80)) });
});

// ---------------------------------------------------------------------------
// Connections over time

test('revoking access cuts established connections at their next packet, for good; other changes do not', { timeout: 120_000 }, async (t) => {
  const e = await env(t);
  if (!e) return;
  const { web, api, client, devapi } = e.parties;
  apply(e, 'api-deny-all', np('api-deny-all', 'prod', '  podSelector: {matchLabels: {app: api}}\n  policyTypes: [Ingress]\n'));
  const allowYaml = (ports: number[]): string => cnp('api-from-web', 'prod', [
    '  endpointSelector: {matchLabels: {app: api}}',
    '  ingress:',
    '  - fromEndpoints: [{matchLabels: {app: web}}]',
    '    toPorts:',
    `    - ports: [${ports.map((p) => `{port: "${p}", protocol: TCP}`).join(', ')}]`,
    '',
  ].join('\n'));
  apply(e, 'api-from-web', allowYaml([80, 8000]));

  const open = async (from: Party, to: Party, family: 4 | 6, port: number): Promise<Stream> => {
    const s = await startStream(e.scripts, from.netnsPath, addrOf(to, family), port, 100);
    cleanup.add(() => stop(s.child), `stream ${from.name} → ${to.name}:${port} (${s.child.pid})`);
    return s;
  };
  const cut80v4 = await open(web, api, 4, 80);
  const cut80v6 = await open(web, api, 6, 80);
  const cut8000 = await open(web, api, 4, 8000);
  // Untouched by any policy here: the clock the others are measured against.
  const clock = await open(client, devapi, 6, 8000);
  const streams = [cut80v4, cut80v6, cut8000, clock];
  await Promise.all(streams.map((s) => s.waitForEchoes(5, 10_000)));

  interface CtEntry { protocol: string; source: string; sourcePort: number; destination: string; destinationPort: number; state: string; ingressAllowedBy?: string }
  const ctList = (): CtEntry[] => JSON.parse(e.agent.ok(['bpf', 'ct', 'list', '-o', 'json'])) as CtEntry[];
  const ct = ctList();
  const entry = ct.find((c) => c.protocol === 'TCP' && c.source === web.v4 && c.sourcePort === cut80v4.localPort && c.destination === api.v4 && c.destinationPort === 80);
  assert.ok(entry, `bpf ct list has web → api:80: ${JSON.stringify(ct)}`);
  assert.equal(entry.state, 'established');
  assert.equal(entry.ingressAllowedBy, 'CiliumNetworkPolicy/prod/api-from-web#0');

  /** Waits until the clock stream has `n` more echoes: time measured in packets that get through. */
  const clockTicks = (n: number): Promise<void> => clock.waitForEchoes(clock.received + n, 10_000);

  // Any change makes the datapath check every connection again: one that still allows them keeps them.
  apply(e, 'unrelated', cnp('unrelated', 'dev', '  endpointSelector: {matchLabels: {app: client}}\n  ingress:\n  - fromEntities: [host]\n'));
  await Promise.all(streams.map((s) => s.waitForEchoes(s.received + 5, 10_000)));

  // Changed: port 80 no longer allowed. Both port 80 connections stop; the port 8000 one goes on.
  // The client timestamps every byte it writes: none written after `apply` returned may come back.
  apply(e, 'api-from-web', allowYaml([8000]));
  const changedAt = Date.now();
  const sentAtChange = cut80v4.sent;
  await clockTicks(10);
  await cut8000.waitForEchoes(cut8000.received + 5, 10_000);
  for (const [s, what] of [[cut80v4, 'IPv4'], [cut80v6, 'IPv6']] as const) {
    assert.equal(s.echoedWrittenAfter(changedAt), 0, `web → api:80 over ${what}: no byte written after the policy changed came back`);
  }
  assert.ok(cut8000.echoedWrittenAfter(changedAt) >= 5, 'web → api:8000 goes on');
  // Revoking the last allowing policy: the port 8000 connection stops too.
  const del = e.agent.cli(['delete', '-f', join(e.dir, 'api-from-web.yaml')]);
  assert.equal(del.code, 0, del.stderr);
  const deletedAt = Date.now();
  await clockTicks(10);
  assert.equal(cut8000.echoedWrittenAfter(deletedAt), 0, 'web → api:8000: no byte written after the policy was deleted came back');
  // And none of them recovers (TCP keeps retransmitting meanwhile).
  const settled = [cut80v4, cut80v6, cut8000].map((s) => s.received);
  await clockTicks(20);
  assert.deepEqual([cut80v4, cut80v6, cut8000].map((s) => s.received), settled, 'no revoked connection got through again');
  assert.ok(cut80v4.sent >= sentAtChange + 10, `the revoked connection kept writing (${sentAtChange} → ${cut80v4.sent})`);
  assert.deepEqual(ctList().filter((c) => c.source === web.v4 && c.sourcePort === cut80v4.localPort), [], 'the revoked connection has no conntrack entry left');
  // A new connection is refused too.
  const fresh = await probe(e.scripts, web.netnsPath, [{ id: 'new', proto: 'tcp', addr: api.v4, port: 8000 }], PROBE_TIMEOUT_MS);
  assert.equal(fresh.new, 'timeout');
  for (const s of streams) await stop(s.child);
});

test('replies of allowed connections pass while new connections the other way are denied', { timeout: 120_000 }, async (t) => {
  const e = await env(t);
  if (!e) return;
  const { web, api } = e.parties;
  // web: nothing may connect to it; it may connect to prod's api only.
  apply(e, 'web-isolated', np('web-isolated', 'prod', [
    '  podSelector: {matchLabels: {app: web}}',
    '  policyTypes: [Ingress, Egress]',
    '  egress:',
    '  - to: [{podSelector: {matchLabels: {app: api}}}]',
    '',
  ].join('\n')));
  const streams: Stream[] = [];
  for (const family of [4, 6] as const) {
    const s = await startStream(e.scripts, web.netnsPath, addrOf(api, family), 8100, 100);
    cleanup.add(() => stop(s.child), `stream web → api IPv${family} (${s.child.pid})`);
    streams.push(s);
  }
  await Promise.all(streams.map((s) => s.waitForEchoes(3, 10_000)));
  const before = streams.map((s) => s.received);
  // While api's attempts to connect to web time out, web's own connections get api's answers.
  await checkMatrix(t, e, {
    title: 'web isolated but for its egress to api', extra: ['host'],
    expect: (c) => (c.src.name !== 'web' || c.dst.name === 'api') && c.dst.name !== 'web',
  });
  await Promise.all(streams.map((s, i) => s.waitForEchoes((before[i] as number) + 5, 10_000)));
  for (const s of streams) assert.deepEqual(s.errors, []);
  for (const s of streams) await stop(s.child);
});

// ---------------------------------------------------------------------------
// Bad input

test('bad input: exit 1, one sentence naming the document and field, nothing applied', { timeout: 120_000 }, async (t) => {
  const e = await env(t);
  if (!e) return;
  // Something to leave untouched.
  apply(e, 'keep', cnp('keep', 'prod', '  endpointSelector: {matchLabels: {app: web}}\n  ingress:\n  - fromEntities: [host]\n'));
  const before = policyList(e);
  const keepBefore = e.agent.ok(['policy', 'get', 'keep', '-n', 'prod', '-o', 'json']);
  const good = (name: string): string => cnp(name, 'prod', '  endpointSelector: {matchLabels: {app: api}}\n  ingress:\n  - fromEntities: [world]\n');

  const cases: [string, string, RegExp][] = [
    ['invalid YAML', 'apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: broken\n',
      /document 1 line \d+: YAML syntax error/],
    ['unknown field', np('bad-field', 'prod', '  podSelector: {}\n  ingres: []\n'),
      /document 1 \(NetworkPolicy "bad-field"\): spec\.ingres: unknown field/],
    ['wrong type', np('bad-type', 'prod', '  podSelector: {}\n  policyTypes: Ingress\n'),
      /document 1 \(NetworkPolicy "bad-type"\): spec\.policyTypes: must be an array, got string/],
    ['bad selector operator', np('bad-op', 'prod', '  podSelector:\n    matchExpressions:\n    - {key: app, operator: Equals, values: [web]}\n'),
      /document 1 \(NetworkPolicy "bad-op"\): spec\.podSelector\.matchExpressions\[0\]\.operator: must be one of In, NotIn, Exists, DoesNotExist, got "Equals"/],
    ['bad CIDR', np('bad-cidr', 'prod', '  podSelector: {}\n  policyTypes: [Egress]\n  egress:\n  - to:\n    - ipBlock: {cidr: 198.18.0.0/33}\n'),
      /document 1 \(NetworkPolicy "bad-cidr"\): spec\.egress\[0\]\.to\[0\]\.ipBlock\.cidr: /],
    ['bad CIDR in a CNP', cnp('bad-cidr2', 'prod', '  endpointSelector: {}\n  egress:\n  - toCIDRSet:\n    - {cidr: 198.18.0.300/24}\n'),
      /document 1 \(CiliumNetworkPolicy "bad-cidr2"\): spec\.egress\[0\]\.toCIDRSet\[0\]\.cidr: /],
    ['only the 2nd of 3 documents bad', `${good('good-one')}---\n${cnp('bad-second', 'prod', '  endpointSelector: {}\n  ingress:\n  - fromEntities: [galaxy]\n')}---\n${good('keep')}`,
      /document 2 \(CiliumNetworkPolicy "bad-second"\): spec\.ingress\[0\]\.fromEntities\[0\]: unknown entity "galaxy"/],
  ];
  for (const [what, yaml, message] of cases) {
    const file = join(e.dir, `bad-${what.replace(/\W+/g, '-')}.yaml`);
    writeFileSync(file, yaml);
    const r = e.agent.cli(['apply', '-f', file]);
    assert.equal(r.code, 1, `${what}: exit code (stdout: ${r.stdout}, stderr: ${r.stderr})`);
    assert.equal(r.stdout, '', `${what}: nothing on stdout`);
    const lines = r.stderr.split('\n').filter((l) => l !== '');
    assert.equal(lines.length, 1, `${what}: one line on stderr, got:\n${r.stderr}`);
    assert.match(lines[0] as string, /^waggle: \S/, `${what}: stderr starts with "waggle: "`);
    assert.ok((lines[0] as string).includes(file), `${what}: stderr names the file: ${lines[0]}`);
    assert.match(lines[0] as string, message, `${what}: stderr names the document and field`);
    assert.deepEqual(policyList(e), before, `${what}: nothing applied`);
  }
  assert.equal(e.agent.ok(['policy', 'get', 'keep', '-n', 'prod', '-o', 'json']), keepBefore, 'the 3rd document did not change "keep"');

  // The same through the API: 400, nothing applied.
  const r = await apiRequest<{ error: { code: string; message: string } }>(e.agent.apiSocket, 'POST', '/v1/apply', {
    files: [{ text: good('api-good'), source: 'a.yaml' }, { text: np('api-bad', 'prod', '  podSelector: {}\n  policyTypes: [Sideways]\n'), source: 'b.yaml' }],
  });
  assert.equal(r.status, 400);
  assert.equal(r.body.error.code, 'INVALID_POLICY');
  assert.match(r.body.error.message, /b\.yaml document 1 \(NetworkPolicy "api-bad"\): spec\.policyTypes\[0\]: /);
  assert.deepEqual(policyList(e), before, 'API: nothing applied');
  // The policy that stayed still works: web takes the host only.
  await checkMatrix(t, e, { title: 'after the bad input', extra: ['host'], expect: (c) => c.dst.name !== 'web' || c.src.kind === 'host' });
});

// ---------------------------------------------------------------------------

test('nothing is left behind: namespaces, links, directories', async (t) => {
  if (skipUnlessRoot(t)) return;
  await cleanup.run();
  const netns = listNetns();
  assert.deepEqual([...made.netns].filter((n) => netns.includes(n)), [], 'no namespace of this file');
  assert.deepEqual([...made.links].filter((l) => linkExists(l)), [], 'no link of this file');
  assert.deepEqual([...made.dirs].filter((d) => existsSync(d)), [], 'no directory of this file');
});
