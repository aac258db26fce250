/**
 * Services through a real agent with real endpoints and real traffic:
 *
 * 1. a ClusterIP Service with a selector: TCP and UDP, IPv4 and IPv6, from a
 *    workload in the agent's cgroup (`waggle exec`: socket-level balancing)
 *    spread over every backend, and the client sees the service address as
 *    its peer;
 * 2. session affinity (ClientIP): one client, one backend;
 * 3. EndpointSlices with Maglev: a terminating backend gets no new
 *    connections while its open connection keeps working; removing a backend
 *    leaves the connections on the others alone;
 * 4. a service without backends refuses connections;
 * 5. endpoints coming and going update a selector service's backends;
 * 6. bad input (invalid YAML values, a ClusterIP clash, an address outside
 *    the service CIDR): a clear error and nothing applied.
 *
 * Traffic stays between the endpoint namespaces on the pod CIDRs TestAgent
 * picks; service addresses come from the agent's service CIDR and exist only
 * in its maps. Everything is removed afterwards.
 */
import { after, test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { CLI, TestAgent } from './helpers/agent.js';
import { Cleanup, listNetns } from './helpers/netns.js';
import { requireTools, skipUnlessRoot } from './helpers/root.js';
import { childEnv, stop as stopChild } from './helpers/traffic.js';

const cleanup = new Cleanup();
after(() => cleanup.run());

const PID = process.pid;
const SERVICE_CIDRS = ['10.97.0.0/24', 'fd00:97::/120'];

interface Endpoint { name: string; namespace: string; ipv4: string; ipv6: string; netnsPath: string }
interface ServiceView {
  name: string; namespace: string; clusterIPs: string[];
  frontends: { kind: string; address: string; port: number; protocol: string; backends: { address: string; state: string }[] }[];
}

/** Answers every TCP connection and UDP datagram with its own name. */
const SERVER = `
const name = process.argv[1];
require('net').createServer((s) => { s.on('error', () => {}); s.on('data', () => s.write(name + '\\n')); }).listen(8080, '::');
const u = require('dgram').createSocket({ type: 'udp6' });
u.on('message', (m, r) => u.send(name, r.port, r.address));
u.bind(5353, '::', () => console.log('ready'));
`;

/**
 * Runs in the client: for each request of argv (JSON [{proto, addr, port, n}]) makes n
 * fresh connections (TCP) or sockets (UDP, unconnected sendto) and prints one JSON line
 * per answer: {who, peer}.
 */
const CLIENT = `
const reqs = JSON.parse(process.argv[1]);
const net = require('net'), dgram = require('dgram');
const one = (r) => new Promise((done) => {
  const t = setTimeout(() => done({ error: 'timeout' }), 3000);
  if (r.proto === 'tcp') {
    const s = net.connect(r.port, r.addr, () => s.write('hi'));
    s.on('data', (d) => { const peer = s.remoteAddress + ':' + s.remotePort; clearTimeout(t); s.destroy(); done({ who: String(d).trim(), peer }); });
    s.on('error', (e) => { clearTimeout(t); done({ error: e.code || e.message }); });
  } else {
    const u = dgram.createSocket(r.addr.includes(':') ? 'udp6' : 'udp4');
    u.on('message', (m, ri) => { clearTimeout(t); u.close(); done({ who: String(m), peer: ri.address + ':' + ri.port }); });
    u.on('error', (e) => { clearTimeout(t); done({ error: e.code || e.message }); });
    u.send('hi', r.port, r.addr);
  }
});
(async () => { for (const r of reqs) for (let i = 0; i < r.n; i++) console.log(JSON.stringify({ ...r, ...(await one(r)) })); })();
`;

/** A client holding one TCP connection: prints the backend's answer to each line on stdin. */
const HOLDER = `
const s = require('net').connect(Number(process.argv[2]), process.argv[1], () => s.write('hi'));
s.on('data', (d) => console.log(String(d).trim()));
s.on('error', (e) => console.log('error ' + (e.code || e.message)));
s.on('close', () => console.log('closed'));
require('readline').createInterface({ input: process.stdin }).on('line', () => s.write('again'));
`;

interface Answer { proto: string; addr: string; port: number; who?: string; peer?: string; error?: string }

interface Env {
  agent: TestAgent;
  dir: string;
  web: Endpoint[];
  client: Endpoint;
}

function apply(e: Env, name: string, yaml: string): { code: number; stdout: string; stderr: string } {
  const file = join(e.dir, `${name}.yaml`);
  writeFileSync(file, yaml);
  return e.agent.cli(['apply', '-f', file]);
}

function service(e: Env, name: string, ns = 'shop'): ServiceView {
  return JSON.parse(e.agent.ok(['service', 'get', name, '-n', ns, '-o', 'json'])) as ServiceView;
}

/** Runs CLIENT inside the client endpoint, in the agent's cgroup (`waggle exec`). */
function ask(e: Env, reqs: { proto: 'tcp' | 'udp'; addr: string; port: number; n: number }[]): Answer[] {
  const out = e.agent.ok(['exec', e.client.name, '--', process.execPath, '-e', CLIENT, JSON.stringify(reqs)]);
  return out.trim().split('\n').filter(Boolean).map((l) => JSON.parse(l) as Answer);
}

async function createEnv(): Promise<Env> {
  const dir = mkdtempSync(join(tmpdir(), 'waggle-svc-'));
  cleanup.add(() => rmSync(dir, { recursive: true, force: true }), `temp dir ${dir}`);
  const agent = new TestAgent({ extraArgs: SERVICE_CIDRS.flatMap((c) => ['--service-cidr', c]) });
  cleanup.add(() => agent.remove(), `agent ${agent.nodeName}`);
  await agent.start();
  const create = (name: string, labels: string): Endpoint =>
    JSON.parse(agent.ok(['endpoint', 'create', `svc-${PID}-${name}`, '--labels', labels, '--namespace', 'shop', '-o', 'json'])) as Endpoint;
  const web = [1, 2, 3].map((i) => create(`web${i}`, 'app=web'));
  const client = create('client', 'app=client');
  const servers: ChildProcess[] = [];
  for (const w of web) {
    const child = spawn('nsenter', [`--net=${w.netnsPath}`, '--', process.execPath, '-e', SERVER, w.name], { stdio: ['ignore', 'pipe', 'pipe'], env: childEnv() });
    servers.push(child);
    cleanup.add(() => stopChild(child), `server in ${w.name}`);
    await new Promise<void>((resolve, reject) => {
      child.stdout?.once('data', () => resolve());
      child.once('exit', (c) => reject(new Error(`server in ${w.name} exited (${c})`)));
    });
  }
  return { agent, dir, web, client };
}

let envPromise: Promise<Env> | undefined;
async function env(t: TestContext): Promise<Env | undefined> {
  if (skipUnlessRoot(t) || requireTools(t, 'ip', 'nsenter')) return undefined;
  envPromise ??= createEnv();
  return envPromise;
}

const WEB_SERVICE = `apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  selector: {app: web}
  ipFamilyPolicy: RequireDualStack
  ports:
  - {name: http, port: 80, targetPort: 8080}
  - {name: dns, port: 53, targetPort: 5353, protocol: UDP}
`;

const bracket = (a: string): string => (a.includes(':') ? `[${a}]` : a);

test('a ClusterIP service spreads TCP and UDP over every backend, IPv4 and IPv6, and the client sees the service address', async (t) => {
  const e = await env(t);
  if (!e) return;
  const r = apply(e, 'web', WEB_SERVICE);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /Service\/shop\/web created/);
  const svc = service(e, 'web');
  assert.equal(svc.clusterIPs.length, 2);
  const [v4, v6] = svc.clusterIPs as [string, string];
  assert.ok(v4.startsWith('10.97.0.') && v6.startsWith('fd00:97::'), `ClusterIPs from the service CIDRs: ${svc.clusterIPs}`);
  for (const f of svc.frontends) assert.equal(f.backends.length, 3, `${f.address}:${f.port} has the three web endpoints`);
  const answers = ask(e, [
    { proto: 'tcp', addr: v4, port: 80, n: 30 }, { proto: 'tcp', addr: v6, port: 80, n: 30 },
    { proto: 'udp', addr: v4, port: 53, n: 30 }, { proto: 'udp', addr: v6, port: 53, n: 30 },
  ]);
  assert.equal(answers.length, 120);
  for (const [proto, addr, port] of [['tcp', v4, 80], ['tcp', v6, 80], ['udp', v4, 53], ['udp', v6, 53]] as const) {
    const mine = answers.filter((a) => a.proto === proto && a.addr === addr);
    assert.deepEqual(mine.filter((a) => a.error).map((a) => a.error), [], `${proto} ${addr}: no errors`);
    assert.deepEqual(new Set(mine.map((a) => a.who)), new Set(e.web.map((w) => w.name)), `${proto} ${bracket(addr)}:${port} reached every backend`);
    for (const a of mine) assert.equal(a.peer, `${addr}:${port}`, `${proto}: the peer is the service address`);
  }
});

/** Runs CLIENT inside the client endpoint's namespace but outside the agent's cgroup: the endpoint program translates per packet. */
function askPerPacket(e: Env, reqs: { proto: 'tcp' | 'udp'; addr: string; port: number; n: number }[]): Answer[] {
  const r = spawnSync('nsenter', [`--net=${e.client.netnsPath}`, '--', process.execPath, '-e', CLIENT, JSON.stringify(reqs)], { encoding: 'utf8', timeout: 120_000, env: childEnv() });
  return r.stdout.trim().split('\n').filter(Boolean).map((l) => JSON.parse(l) as Answer);
}

test('without socket-level balancing (a process outside the cgroup) the endpoint program translates per packet, and policy sees the backend', async (t) => {
  const e = await env(t);
  if (!e) return;
  const [v4, v6] = service(e, 'web').clusterIPs as [string, string];
  // Only app=client may reach app=web, and only on 8080: the service port 80 is allowed
  // because policy decides on the translated packet (backend address and port).
  const file = join(e.dir, 'web-policy.yaml');
  writeFileSync(file, `apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: web-from-clients, namespace: shop}
spec:
  endpointSelector: {matchLabels: {app: web}}
  ingress:
  - fromEndpoints: [{matchLabels: {app: client}}]
    toPorts: [{ports: [{port: "8080", protocol: TCP}]}]
`);
  e.agent.ok(['apply', '-f', file]);
  const since = new Date().toISOString();
  try {
    const answers = askPerPacket(e, [
      { proto: 'tcp', addr: v4, port: 80, n: 24 }, { proto: 'tcp', addr: v6, port: 80, n: 24 },
      { proto: 'udp', addr: v4, port: 53, n: 3 },
    ]);
    for (const addr of [v4, v6]) {
      const mine = answers.filter((a) => a.proto === 'tcp' && a.addr === addr);
      assert.deepEqual(mine.filter((a) => a.error).map((a) => a.error), [], `tcp ${addr}: no errors`);
      assert.deepEqual(new Set(mine.map((a) => a.who)), new Set(e.web.map((w) => w.name)), `per-packet ${addr}: every backend`);
      for (const a of mine) assert.equal(a.peer, `${addr}:80`, 'the reply comes from the service address');
    }
    // Flows of translated connections name the service (Hubble's destination_service / source_service).
    const flows = e.agent.ok(['observe', '-o', 'json', '--since', since, '--from-endpoint', e.client.name, '--to-port', '8080', '--protocol', 'tcp'])
      .trim().split('\n').map((l) => (JSON.parse(l) as { flow: { destination_service?: { name: string; namespace: string } } }).flow);
    assert.ok(flows.length > 0 && flows.every((f) => f.destination_service?.name === 'web' && f.destination_service.namespace === 'shop'),
      `translated flows name the service: ${JSON.stringify(flows.slice(0, 2))}`);
    // UDP 5353 is not in the policy: dropped after translation.
    assert.ok(answers.filter((a) => a.proto === 'udp').every((a) => a.error === 'timeout'), 'UDP to the backend port the policy does not allow is dropped');
    const drops = e.agent.ok(['observe', '-o', 'json', '--verdict', 'DROPPED', '--from-endpoint', e.client.name, '--protocol', 'udp', '--to-port', '5353']);
    assert.ok(drops.includes('POLICY_DENIED'), 'the drop names the backend port 5353, not the service port 53');
  } finally {
    e.agent.ok(['delete', '-f', file]);
  }
});

test('session affinity: one client stays on one backend', async (t) => {
  const e = await env(t);
  if (!e) return;
  assert.equal(apply(e, 'sticky', `apiVersion: v1
kind: Service
metadata: {name: sticky, namespace: shop}
spec:
  selector: {app: web}
  sessionAffinity: ClientIP
  sessionAffinityConfig: {clientIP: {timeoutSeconds: 600}}
  ports: [{port: 80, targetPort: 8080}]
`).code, 0);
  const vip = service(e, 'sticky').clusterIPs[0]!;
  const answers = ask(e, [{ proto: 'tcp', addr: vip, port: 80, n: 20 }]);
  assert.equal(answers.filter((a) => a.who).length, 20);
  assert.equal(new Set(answers.map((a) => a.who)).size, 1, `one backend for the client: ${answers.map((a) => a.who)}`);
});

test('EndpointSlices with Maglev: terminating and removed backends disturb only their own connections', async (t) => {
  const e = await env(t);
  if (!e) return;
  const slice = (states: Record<string, 'ready' | 'terminating'>): string => `apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: api-1, namespace: shop, labels: {kubernetes.io/service-name: api}}
addressType: IPv4
ports: [{name: http, port: 8080, protocol: TCP}]
endpoints:
${e.web.filter((w) => states[w.name]).map((w) => `- addresses: [${w.ipv4}]
  conditions: {ready: ${states[w.name] === 'ready'}, serving: true, terminating: ${states[w.name] === 'terminating'}}`).join('\n')}
`;
  const svcYaml = `apiVersion: v1
kind: Service
metadata:
  name: api
  namespace: shop
  annotations: {service.waggle.io/lb-algorithm: maglev}
spec:
  ports: [{name: http, port: 80, targetPort: http}]
---
`;
  const [w1, w2, w3] = e.web as [Endpoint, Endpoint, Endpoint];
  const r = apply(e, 'api', svcYaml + slice({ [w1.name]: 'ready', [w2.name]: 'ready', [w3.name]: 'ready' }));
  assert.equal(r.code, 0, r.stderr);
  const vip = service(e, 'api').clusterIPs[0]!;
  assert.equal(new Set(ask(e, [{ proto: 'tcp', addr: vip, port: 80, n: 40 }]).map((a) => a.who)).size, 3, 'Maglev spreads new connections');

  // Hold one connection on each backend (new connections until each backend has one).
  const holders = new Map<string, { child: ChildProcess; lines: string[] }>();
  for (let i = 0; i < 60 && holders.size < 3; i++) {
    const child = spawn(process.execPath, [CLI, 'exec', e.client.name, '--', process.execPath, '-e', HOLDER, vip, '80'], { env: { ...childEnv(), WAGGLE_API_SOCKET: e.agent.apiSocket }, stdio: ['pipe', 'pipe', 'pipe'] });
    cleanup.add(() => stopChild(child), 'connection holder');
    const lines: string[] = [];
    let buf = '';
    child.stdout?.on('data', (d: Buffer) => { buf += d.toString(); const parts = buf.split('\n'); buf = parts.pop() ?? ''; lines.push(...parts); });
    for (let k = 0; k < 100 && lines.length === 0; k++) await sleep(30);
    const who = lines[0];
    if (who && !holders.has(who) && !who.startsWith('error')) holders.set(who, { child, lines });
    else await stopChild(child);
  }
  assert.equal(holders.size, 3, 'a held connection on each backend');
  const still = async (who: string): Promise<string | undefined> => {
    const h = holders.get(who)!;
    const n = h.lines.length;
    h.child.stdin?.write('again\n');
    for (let k = 0; k < 100 && h.lines.length === n; k++) await sleep(30);
    return h.lines[n];
  };

  // web2 terminating: no new connections to it, its held connection still answers.
  assert.equal(apply(e, 'api', svcYaml + slice({ [w1.name]: 'ready', [w2.name]: 'terminating', [w3.name]: 'ready' })).code, 0);
  const fe = service(e, 'api').frontends[0]!;
  assert.deepEqual(fe.backends.filter((b) => b.state === 'terminating').map((b) => b.address), [w2.ipv4]);
  const after1 = ask(e, [{ proto: 'tcp', addr: vip, port: 80, n: 40 }]).map((a) => a.who);
  assert.ok(!after1.includes(w2.name), 'the terminating backend gets no new connection');
  assert.deepEqual(new Set(after1), new Set([w1.name, w3.name]));
  assert.equal(await still(w2.name), w2.name, 'the terminating backend finishes its connection');

  // web3 removed: the connections on web1 and web2 are untouched.
  assert.equal(apply(e, 'api', svcYaml + slice({ [w1.name]: 'ready', [w2.name]: 'terminating' })).code, 0);
  assert.deepEqual(new Set(ask(e, [{ proto: 'tcp', addr: vip, port: 80, n: 20 }]).map((a) => a.who)), new Set([w1.name]));
  assert.equal(await still(w1.name), w1.name);
  assert.equal(await still(w2.name), w2.name);
  for (const h of holders.values()) await stopChild(h.child);
});

test('endpoints coming and going update a selector service; no backend refuses the connection', async (t) => {
  const e = await env(t);
  if (!e) return;
  assert.equal(apply(e, 'lonely', `apiVersion: v1
kind: Service
metadata: {name: lonely, namespace: shop}
spec:
  selector: {app: later}
  ports: [{port: 80, targetPort: 8080}]
`).code, 0);
  const vip = service(e, 'lonely').clusterIPs[0]!;
  assert.deepEqual(ask(e, [{ proto: 'tcp', addr: vip, port: 80, n: 1 }]).map((a) => a.error), ['ECONNREFUSED']);
  const late = JSON.parse(e.agent.ok(['endpoint', 'create', `svc-${PID}-late`, '--labels', 'app=later', '--namespace', 'shop', '-o', 'json'])) as Endpoint;
  try {
    assert.deepEqual(service(e, 'lonely').frontends[0]?.backends.map((b) => b.address), [late.ipv4]);
  } finally {
    e.agent.ok(['endpoint', 'delete', late.name]);
  }
  assert.deepEqual(service(e, 'lonely').frontends[0]?.backends, []);
});

test('bad input: a clear error naming the problem, and nothing applied', async (t) => {
  const e = await env(t);
  if (!e) return;
  const before = e.agent.ok(['service', 'list', '-o', 'json']);
  const bad: [string, RegExp][] = [
    [`apiVersion: v1
kind: Service
metadata: {name: bad-port, namespace: shop}
spec:
  ports: [{port: 70000}]
`, /bad-port.*spec\.ports\[0\]\.port/],
    [`apiVersion: v1
kind: Service
metadata: {name: clash, namespace: shop}
spec:
  clusterIP: ${service(e, 'web').clusterIPs[0]}
  ports: [{port: 80}]
`, /clash.*already/],
    [`apiVersion: v1
kind: Service
metadata: {name: outside, namespace: shop}
spec:
  clusterIP: 10.250.0.1
  ports: [{port: 80}]
`, /outside.*10\.250\.0\.1.*service CIDR/],
    [`apiVersion: v1
kind: Service
metadata: {name: fine, namespace: shop}
spec:
  ports: [{port: 81}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: broken, namespace: shop, labels: {kubernetes.io/service-name: fine}}
addressType: IPv4
endpoints: [{addresses: [not-an-ip]}]
`, /broken.*endpoints\[0\]\.addresses\[0\]/],
  ];
  for (const [yaml, re] of bad) {
    const r = apply(e, 'bad', yaml);
    assert.equal(r.code, 1, `refused: ${yaml}`);
    assert.match(r.stderr, re);
    assert.match(r.stderr, /nothing was changed/);
  }
  assert.equal(e.agent.ok(['service', 'list', '-o', 'json']), before, 'no service was added or changed');
});

test('nothing is left behind', async (t) => {
  if (skipUnlessRoot(t)) return;
  await cleanup.run();
  envPromise = undefined;
  assert.deepEqual(listNetns().filter((n) => n.startsWith(`svc-${PID}-`)), []);
});
