/**
 * NodePort services with a real agent, real endpoints and real traffic:
 *
 * 1. from outside the node: a client in its own network namespace, joined to
 *    the node by a veth pair whose node end is the agent's `--devices`
 *    device, reaches a NodePort service on the node's address over TCP and
 *    UDP, IPv4 and IPv6; connections spread over both backends, the backends
 *    see the client's own address and the client sees the node address and
 *    node port as its peer;
 * 2. policy applies to the backends after translation: a policy that admits
 *    only cluster traffic drops the outside client (a flow says so), an
 *    allow for `world` lets it in again;
 * 3. from the node itself (a process in the agent's cgroup): the socket
 *    programs balance the node port on the node's address;
 * 4. ICMP errors are translated too: a backend's "port unreachable" for a
 *    UDP node port reaches the outside client as an error about the node
 *    port (ECONNREFUSED on its connected socket);
 * 5. a node address added while the agent runs gets the node ports, and
 *    loses them when it goes;
 * 6. an agent restarted without `--devices` detaches the device program:
 *    the node's own stack answers (connection refused).
 *
 * The "outside" is a namespace this test creates; every address it uses
 * lives on its veth pair or in endpoint namespaces. Everything is removed
 * afterwards.
 */
import { after, test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { TestAgent } from './helpers/agent.js';
import { Cleanup, createOutside, ip, outsideLink, type Netns } from './helpers/netns.js';
import { requireTools, skipUnlessRoot } from './helpers/root.js';
import { childEnv, stop as stopChild } from './helpers/traffic.js';

const cleanup = new Cleanup();
after(() => cleanup.run());

const PID = process.pid;
/** The outside link: the node's end is the agent's --devices. */
const LINK = outsideLink('wgnp', 251);
const { hostDev: HOST_DEV, node4: NODE4, node6: NODE6, client4: CLIENT4, client6: CLIENT6 } = LINK;
const NODE_PORT = 30080;
const NODE_PORT_UDP = 30053;
/** A UDP node port whose backends have no listener on the target port. */
const NODE_PORT_CLOSED = 30054;

interface Endpoint { name: string; ipv4: string; ipv6: string; netnsPath: string }

/** Answers each TCP connection and UDP datagram with its name and the address it saw the client at. */
const SERVER = `
const name = process.argv[1];
const plain = (a) => a.replace(/^::ffff:/, '');
require('net').createServer((s) => { s.on('error', () => {}); s.on('data', () => s.write(name + ' ' + plain(s.remoteAddress) + '\\n')); }).listen(8080, '::');
const u = require('dgram').createSocket({ type: 'udp6' });
u.on('message', (m, r) => u.send(name + ' ' + plain(r.address), r.port, r.address));
u.bind(5353, '::', () => console.log('ready'));
`;

/** For each request (JSON [{proto, addr, port, n}]): n fresh connections or sockets, one JSON line per answer. */
const CLIENT = `
const reqs = JSON.parse(process.argv[1]);
const net = require('net'), dgram = require('dgram');
const plain = (a) => a.replace(/^::ffff:/, '');
const one = (r) => new Promise((done) => {
  let sock;
  const t = setTimeout(() => { if (r.proto === 'tcp') sock.destroy(); else sock.close(); done({ error: 'timeout' }); }, 2000);
  const answer = (d, addr, port) => { const [who, saw] = String(d).trim().split(' '); return { who, saw, peer: plain(addr) + ':' + port }; };
  if (r.proto === 'tcp') {
    const s = sock = net.connect(r.port, r.addr, () => s.write('hi'));
    s.on('data', (d) => { clearTimeout(t); const a = answer(d, s.remoteAddress, s.remotePort); s.destroy(); done(a); });
    s.on('error', (e) => { clearTimeout(t); done({ error: e.code || e.message }); });
  } else {
    const u = sock = dgram.createSocket(r.addr.includes(':') ? 'udp6' : 'udp4');
    u.on('message', (m, ri) => { clearTimeout(t); u.close(); done(answer(m, ri.address, ri.port)); });
    u.on('error', (e) => { clearTimeout(t); u.close(); done({ error: e.code || e.message }); });
    // A connected socket hears ICMP errors about its datagrams (ECONNREFUSED).
    if (r.proto === 'udp-connected') u.connect(r.port, r.addr, () => u.send('hi'));
    else u.send('hi', r.port, r.addr);
  }
});
(async () => { for (const r of reqs) for (let i = 0; i < r.n; i++) console.log(JSON.stringify({ ...r, ...(await one(r)) })); })();
`;

interface Request { proto: 'tcp' | 'udp' | 'udp-connected'; addr: string; port: number; n: number }
interface Answer extends Request { who?: string; saw?: string; peer?: string; error?: string }

interface Env {
  agent: TestAgent;
  dir: string;
  outside: Netns;
  web: Endpoint[];
}

const parseAnswers = (out: string): Answer[] => out.trim().split('\n').filter(Boolean).map((l) => JSON.parse(l) as Answer);

/** Runs CLIENT in the outside namespace. */
function askFromOutside(e: Env, reqs: Request[]): Answer[] {
  const r = spawnSync('nsenter', [`--net=${e.outside.path}`, '--', process.execPath, '-e', CLIENT, JSON.stringify(reqs)], { encoding: 'utf8', timeout: 120_000, env: childEnv() });
  assert.equal(r.status, 0, r.stderr);
  return parseAnswers(r.stdout);
}

/** Runs CLIENT on the node, in the agent's cgroup (where its socket programs apply). */
function askFromNode(e: Env, reqs: Request[]): Answer[] {
  const cgroup = e.agent.cgroup;
  assert.ok(cgroup, 'the test agent has its own cgroup');
  const r = spawnSync('sh', ['-c', 'echo $$ > "$1/cgroup.procs" && shift && exec "$@"', 'sh', cgroup.path, process.execPath, '-e', CLIENT, JSON.stringify(reqs)],
    { encoding: 'utf8', timeout: 120_000, env: childEnv() });
  assert.equal(r.status, 0, r.stderr);
  return parseAnswers(r.stdout);
}

async function createEnv(): Promise<Env> {
  const dir = mkdtempSync(join(tmpdir(), 'waggle-np-'));
  cleanup.add(() => rmSync(dir, { recursive: true, force: true }), `temp dir ${dir}`);
  const outside = createOutside(cleanup, 'wg-np-out', LINK);
  const agent = new TestAgent({ extraArgs: ['--devices', HOST_DEV] });
  cleanup.add(() => agent.remove(), `agent ${agent.nodeName}`);
  await agent.start();
  const web = [1, 2].map((i) => JSON.parse(agent.ok(['endpoint', 'create', `np-${PID}-web${i}`, '--labels', 'app=web', '--namespace', 'shop', '-o', 'json'])) as Endpoint);
  for (const w of web) {
    const child: ChildProcess = spawn('nsenter', [`--net=${w.netnsPath}`, '--', process.execPath, '-e', SERVER, w.name], { stdio: ['ignore', 'pipe', 'pipe'], env: childEnv() });
    cleanup.add(() => stopChild(child), `server in ${w.name}`);
    await new Promise<void>((resolve, reject) => {
      child.stdout?.once('data', () => resolve());
      child.once('exit', (c) => reject(new Error(`server in ${w.name} exited (${c})`)));
    });
  }
  const file = join(dir, 'web.yaml');
  writeFileSync(file, `apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  type: NodePort
  selector: {app: web}
  ipFamilyPolicy: RequireDualStack
  ports:
  - {name: http, port: 80, targetPort: 8080, nodePort: ${NODE_PORT}}
  - {name: dns, port: 53, targetPort: 5353, protocol: UDP, nodePort: ${NODE_PORT_UDP}}
  - {name: closed, port: 54, targetPort: 5999, protocol: UDP, nodePort: ${NODE_PORT_CLOSED}}
`);
  agent.ok(['apply', '-f', file]);
  return { agent, dir, outside, web };
}

let envPromise: Promise<Env> | undefined;
async function env(t: TestContext): Promise<Env | undefined> {
  if (skipUnlessRoot(t) || requireTools(t, 'ip', 'nsenter')) return undefined;
  envPromise ??= createEnv();
  return envPromise;
}

const bracket = (a: string): string => (a.includes(':') ? `[${a}]` : a);

test('NodePort from outside the node: TCP and UDP, IPv4 and IPv6, spread over both backends; the backends see the client, the client sees the node port', async (t) => {
  const e = await env(t);
  if (!e) return;
  const status = JSON.parse(e.agent.ok(['status', '-o', 'json'])) as { services: { devices: string[]; nodeAddresses: string[] } };
  assert.deepEqual(status.services.devices, [HOST_DEV]);
  for (const addr of [NODE4, NODE6]) assert.ok(status.services.nodeAddresses.includes(addr), `status lists node address ${addr}: ${status.services.nodeAddresses.join(', ')}`);
  assert.match(e.agent.ok(['status']), new RegExp(`NodePort: +on .*${NODE4.replace(/\./g, '\\.')}.*; from outside through ${HOST_DEV}`));
  const svc = JSON.parse(e.agent.ok(['service', 'get', 'web', '-n', 'shop', '-o', 'json'])) as { frontends: { kind: string; address: string; port: number }[] };
  for (const addr of [NODE4, NODE6]) {
    assert.ok(svc.frontends.some((f) => f.kind === 'NodePort' && f.address === addr && f.port === NODE_PORT), `a NodePort frontend on ${addr}: ${JSON.stringify(svc.frontends)}`);
  }
  const answers = askFromOutside(e, [
    { proto: 'tcp', addr: NODE4, port: NODE_PORT, n: 16 }, { proto: 'tcp', addr: NODE6, port: NODE_PORT, n: 16 },
    { proto: 'udp', addr: NODE4, port: NODE_PORT_UDP, n: 16 }, { proto: 'udp', addr: NODE6, port: NODE_PORT_UDP, n: 16 },
  ]);
  assert.equal(answers.length, 64);
  for (const [proto, addr, port, client] of [
    ['tcp', NODE4, NODE_PORT, CLIENT4], ['tcp', NODE6, NODE_PORT, CLIENT6], ['udp', NODE4, NODE_PORT_UDP, CLIENT4], ['udp', NODE6, NODE_PORT_UDP, CLIENT6],
  ] as const) {
    const mine = answers.filter((a) => a.proto === proto && a.addr === addr);
    assert.deepEqual(mine.filter((a) => a.error).map((a) => a.error), [], `${proto} ${bracket(addr)}:${port}: no errors`);
    assert.deepEqual(new Set(mine.map((a) => a.who)), new Set(e.web.map((w) => w.name)), `${proto} ${bracket(addr)}:${port} reached both backends`);
    for (const a of mine) {
      assert.equal(a.peer, `${addr}:${port}`, `${proto}: the client's peer is the node address and node port`);
      assert.equal(a.saw, client, `${proto}: the backend sees the client's own address (no SNAT)`);
    }
  }
  // The flows: world → backend, translated (naming the service), and the replies out to the network.
  const flows = e.agent.ok(['observe', '-o', 'json', '--ip', CLIENT4, '--protocol', 'tcp', '--last', '1000']).trim().split('\n')
    .map((l) => (JSON.parse(l) as { flow: { trace_observation_point?: string; source?: { identity?: number }; destination_service?: { name: string }; is_reply?: boolean } }).flow);
  const inbound = flows.filter((f) => f.trace_observation_point === 'TO_ENDPOINT');
  const replies = flows.filter((f) => f.trace_observation_point === 'TO_NETWORK');
  assert.ok(inbound.length > 0 && inbound.every((f) => f.source?.identity === 2 && f.destination_service?.name === 'web'), `inbound flows from world name the service: ${JSON.stringify(inbound.slice(0, 2))}`);
  assert.ok(replies.length > 0 && replies.every((f) => f.is_reply === true), `replies leave TO_NETWORK: ${JSON.stringify(replies.slice(0, 2))}`);
});

test('NodePort from outside meets the backends\' policy after translation: cluster-only drops the outside client, an allow for world lets it in', async (t) => {
  const e = await env(t);
  if (!e) return;
  const file = join(e.dir, 'policy.yaml');
  const policy = (entities: string): string => `apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: web-ingress, namespace: shop}
spec:
  endpointSelector: {matchLabels: {app: web}}
  ingress:
  - fromEntities: [${entities}]
    toPorts: [{ports: [{port: "8080", protocol: TCP}]}]
`;
  writeFileSync(file, policy('cluster'));
  e.agent.ok(['apply', '-f', file]);
  try {
    const since = new Date().toISOString();
    const denied = askFromOutside(e, [{ proto: 'tcp', addr: NODE4, port: NODE_PORT, n: 2 }]);
    assert.deepEqual(denied.map((a) => a.error), ['timeout', 'timeout'], 'the outside client is dropped');
    const drops = e.agent.ok(['observe', '-o', 'json', '--since', since, '--verdict', 'DROPPED', '--ip', CLIENT4]).trim().split('\n').filter(Boolean)
      .map((l) => (JSON.parse(l) as { flow: { drop_reason_desc?: string; l4?: { TCP?: { destination_port?: number } }; source?: { identity?: number } } }).flow);
    assert.ok(drops.length > 0, 'the drop is a flow');
    for (const d of drops) {
      assert.equal(d.drop_reason_desc, 'POLICY_DENIED');
      assert.equal(d.l4?.TCP?.destination_port, 8080, 'the drop names the backend port');
      assert.equal(d.source?.identity, 2, 'from world');
    }
    writeFileSync(file, policy('cluster, world'));
    e.agent.ok(['apply', '-f', file]);
    const allowed = askFromOutside(e, [{ proto: 'tcp', addr: NODE4, port: NODE_PORT, n: 4 }]);
    assert.deepEqual(allowed.filter((a) => a.error).map((a) => a.error), [], 'world may reach 8080 now');
  } finally {
    e.agent.ok(['delete', '-f', file]);
  }
});

test('NodePort from the node itself: the socket programs balance the node address and node port', async (t) => {
  const e = await env(t);
  if (!e) return;
  const answers = askFromNode(e, [{ proto: 'tcp', addr: NODE4, port: NODE_PORT, n: 16 }, { proto: 'udp', addr: NODE6, port: NODE_PORT_UDP, n: 16 }]);
  for (const [proto, addr, port] of [['tcp', NODE4, NODE_PORT], ['udp', NODE6, NODE_PORT_UDP]] as const) {
    const mine = answers.filter((a) => a.proto === proto);
    assert.deepEqual(mine.filter((a) => a.error).map((a) => a.error), [], `${proto}: no errors`);
    assert.deepEqual(new Set(mine.map((a) => a.who)), new Set(e.web.map((w) => w.name)), `${proto} ${bracket(addr)}:${port} from the node reached both backends`);
    for (const a of mine) assert.equal(a.peer, `${addr}:${port}`, `${proto}: the peer is the node port`);
  }
});

test('a backend\'s ICMP error reaches the outside client translated: UDP to a node port with no listener behind it is refused at once, IPv4 and IPv6', async (t) => {
  const e = await env(t);
  if (!e) return;
  // The backend's "port unreachable" quotes client → backend:5999; only with the quote
  // translated to the node address and node port does the client's socket hear it.
  const answers = askFromOutside(e, [
    { proto: 'udp-connected', addr: NODE4, port: NODE_PORT_CLOSED, n: 2 }, { proto: 'udp-connected', addr: NODE6, port: NODE_PORT_CLOSED, n: 2 },
    { proto: 'udp-connected', addr: NODE4, port: NODE_PORT_UDP, n: 1 },
  ]);
  assert.deepEqual(answers.map((a) => [a.addr, a.port, a.error]), [
    [NODE4, NODE_PORT_CLOSED, 'ECONNREFUSED'], [NODE4, NODE_PORT_CLOSED, 'ECONNREFUSED'],
    [NODE6, NODE_PORT_CLOSED, 'ECONNREFUSED'], [NODE6, NODE_PORT_CLOSED, 'ECONNREFUSED'],
    [NODE4, NODE_PORT_UDP, undefined],
  ], 'refused where nothing listens; answered where something does');
});

test('a node address added while the agent runs gets the node ports (and loses them when removed)', async (t) => {
  const e = await env(t);
  if (!e) return;
  const extra4 = NODE4.replace(/\.1$/, '.3');
  const frontendsOn = (addr: string): number => (JSON.parse(e.agent.ok(['service', 'get', 'web', '-n', 'shop', '-o', 'json'])) as { frontends: { kind: string; address: string }[] })
    .frontends.filter((f) => f.kind === 'NodePort' && f.address === addr).length;
  /** Waits (bounded) until `cond` holds; the agent compares the node's addresses every 2 s. */
  const eventually = async (cond: () => boolean, what: string): Promise<void> => {
    for (let i = 0; i < 100 && !cond(); i++) await sleep(200);
    assert.ok(cond(), what);
  };
  assert.equal(frontendsOn(extra4), 0);
  ip(['addr', 'add', `${extra4}/24`, 'dev', HOST_DEV]);
  try {
    await eventually(() => frontendsOn(extra4) === 3, `NodePort frontends on the new address ${extra4}`);
    const answers = askFromOutside(e, [{ proto: 'tcp', addr: extra4, port: NODE_PORT, n: 4 }]);
    assert.deepEqual(answers.map((a) => [a.error, a.peer]), Array(4).fill([undefined, `${extra4}:${NODE_PORT}`]), 'the new address answers on the node port');
  } finally {
    ip(['addr', 'del', `${extra4}/24`, 'dev', HOST_DEV]);
  }
  await eventually(() => frontendsOn(extra4) === 0, 'the frontends go with the address');
});

test('an agent restarted without --devices takes the device program off (the node\'s own stack answers the node port); with it again, NodePort is back', async (t) => {
  const e = await env(t);
  if (!e) return;
  await e.agent.stop();
  // While the agent is down the pinned link keeps NodePort working.
  const down = askFromOutside(e, [{ proto: 'tcp', addr: NODE4, port: NODE_PORT, n: 2 }]);
  assert.deepEqual(down.filter((a) => a.error).map((a) => a.error), [], 'NodePort works while the agent is down');
  const withoutDevices = e.agent.flags.filter((f, i, all) => f !== '--devices' && all[i - 1] !== '--devices');
  assert.equal(withoutDevices.length, e.agent.flags.length - 2);
  await e.agent.start(20_000, withoutDevices);
  const status = JSON.parse(e.agent.ok(['status', '-o', 'json'])) as { services: { devices: string[] } };
  assert.deepEqual(status.services.devices, []);
  const refused = askFromOutside(e, [{ proto: 'tcp', addr: NODE4, port: NODE_PORT, n: 1 }]);
  assert.deepEqual(refused.map((a) => a.error), ['ECONNREFUSED'], 'nothing translates: the node has no listener on the node port');
  await e.agent.stop();
  await e.agent.start();
  const back = askFromOutside(e, [{ proto: 'tcp', addr: NODE4, port: NODE_PORT, n: 20 }]);
  assert.deepEqual(back.filter((a) => a.error).map((a) => a.error), [], 'NodePort from outside works again');
  assert.deepEqual(new Set(back.map((a) => a.who)), new Set(e.web.map((w) => w.name)));
});
