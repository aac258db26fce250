/**
 * IP-fragmented UDP datagrams through a real agent, real endpoints and real
 * traffic. Every datagram is 4000 or 12000 bytes of random data, so with the
 * MTU of 1500 on every link the sender's kernel splits it into IPv4 fragments
 * or IPv6 Fragment-header fragments; the server answers with the length and
 * the SHA-256 of what it reassembled, in a datagram as large as the request
 * (so the reply is fragmented too), whose tail repeats the request's tail.
 * Each case also sends a small, unfragmented datagram, which shows that the
 * path itself works:
 *
 * 1. between two endpoints without a policy (the baseline): every datagram
 *    arrives intact, IPv4 and IPv6, and the kernels' counters show that the
 *    client and the server really sent fragments;
 * 2. a CiliumNetworkPolicy that lets the client reach the server only on UDP
 *    port 5000: the fragmented datagrams to 5000 arrive intact (the later
 *    fragments belong to an allowed datagram), and a datagram to port 5001,
 *    where the server listens too, gets no answer;
 * 3. a UDP ClusterIP service (IPv4 and IPv6, service port 53 → 5000 on two
 *    backend endpoints) from a client process in the client endpoint's
 *    namespace but outside the agent's cgroup, so the endpoint program
 *    translates every packet, fragments included: the answers come from the
 *    service address and are intact;
 * 4. the same service as a NodePort from outside the node (a namespace joined
 *    by a veth whose node end is the agent's `--devices` device, MTU 1500):
 *    the answers come from the node address and node port, intact, and the
 *    backends saw the client's own address.
 *
 * Addresses: the pod CIDRs TestAgent picks, the service CIDRs 10.98.0.0/24 and
 * fd00:98::/120 (only in the agent's maps), and 10.252.X.0/24 / fd00:252:X::/64
 * on the outside veth this file creates. Everything is removed afterwards.
 */
import { after, test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { TestAgent } from './helpers/agent.js';
import { Cleanup, createOutside, listNetns, outsideLink, type Netns } from './helpers/netns.js';
import { requireTools, skipUnlessRoot } from './helpers/root.js';
import { childEnv, stop as stopChild } from './helpers/traffic.js';

const cleanup = new Cleanup();
after(() => cleanup.run());

const PID = process.pid;
const SERVICE_CIDRS = ['10.98.0.0/24', 'fd00:98::/120'];
/** The outside link: the node's end is the agent's --devices. */
const LINK = outsideLink('wgfr', 252);
const { hostDev: HOST_DEV, node4: NODE4, node6: NODE6, client4: CLIENT4, client6: CLIENT6 } = LINK;
const SERVICE_PORT = 53;
const NODE_PORT = 31553;
/** The port the policy allows, and one the server listens on that it does not. */
const ALLOWED_PORT = 5000;
const OTHER_PORT = 5001;
/** Sizes of the fragmented datagrams (3 and 9 fragments at MTU 1500) and of the unfragmented one. */
const BIG = 4000;
const BIGGER = 12000;
const SMALL = 200;
/** How long a client waits for each answer: a lost fragment shows as {error: 'timeout'}. */
const ANSWER_TIMEOUT_MS = 2000;

interface Endpoint { name: string; ipv4: string; ipv6: string; netnsPath: string }

/**
 * Listens on UDP 5000 and 5001 (both families). Answers each datagram with a
 * 256-byte JSON header (its name, the sender's address as seen,
 * the datagram's length and SHA-256), padded with spaces, followed by the
 * datagram's bytes after the first 256: a reply as large as the request.
 */
const SERVER = `
const name = process.argv[1];
const crypto = require('crypto'), dgram = require('dgram');
const HEAD = 256;
const plain = (a) => a.replace(/^::ffff:/, '');
let up = 0;
for (const port of [${ALLOWED_PORT}, ${OTHER_PORT}]) {
  const u = dgram.createSocket({ type: 'udp6', ipv6Only: false });
  u.on('error', (e) => { console.error(e.message); process.exit(2); });
  u.on('message', (m, r) => {
    const head = Buffer.alloc(HEAD, ' ');
    head.write(JSON.stringify({ who: name, saw: plain(r.address), len: m.length, sha: crypto.createHash('sha256').update(m).digest('hex') }));
    u.send(Buffer.concat([head, m.subarray(HEAD)]), r.port, r.address);
  });
  u.bind(port, '::', () => { if (++up === 2) console.log('ready'); });
}
`;

/**
 * For each request of argv (JSON [{id, addr, port, size, n}]) sends n datagrams of
 * `size` random bytes, each from a fresh socket, and waits for each answer (after a
 * lost one, the rest of that request is not sent, so a broken path fails fast).
 * Prints its own cgroup first, then one JSON line per datagram: what the answer
 * said and whether it matches what was sent, or {error}.
 */
const CLIENT = `
const reqs = JSON.parse(process.argv[1]);
const crypto = require('crypto'), dgram = require('dgram'), fs = require('fs');
const HEAD = 256;
const plain = (a) => a.replace(/^::ffff:/, '');
console.log(JSON.stringify({ cgroup: fs.readFileSync('/proc/self/cgroup', 'utf8').trim() }));
const one = (r) => new Promise((done) => {
  const sent = crypto.randomBytes(r.size);
  const sha = crypto.createHash('sha256').update(sent).digest('hex');
  const u = dgram.createSocket(r.addr.includes(':') ? 'udp6' : 'udp4');
  let finished = false;
  const end = (res) => { if (finished) return; finished = true; clearTimeout(t); try { u.close(); } catch {} done(res); };
  const t = setTimeout(() => end({ error: 'timeout' }), ${ANSWER_TIMEOUT_MS});
  u.on('message', (m, ri) => {
    let h;
    try { h = JSON.parse(m.subarray(0, HEAD).toString()); } catch { return end({ error: 'bad reply header (' + m.length + ' bytes)' }); }
    end({ who: h.who, saw: h.saw, peer: plain(ri.address) + ':' + ri.port, len: h.len, sameHash: h.sha === sha,
      replyLen: m.length, sameTail: m.subarray(HEAD).equals(sent.subarray(HEAD)) });
  });
  u.on('error', (e) => end({ error: e.code || e.message }));
  u.send(sent, r.port, r.addr);
});
(async () => {
  for (const r of reqs) {
    let lost = false;
    for (let i = 0; i < r.n; i++) {
      const a = lost ? { error: 'not sent: an earlier one was lost' } : await one(r);
      lost ||= a.error === 'timeout';
      console.log(JSON.stringify({ id: r.id, size: r.size, ...a }));
    }
  }
})();
`;

interface Request { id: string; addr: string; port: number; size: number; n: number }
interface Answer {
  id: string; size: number; error?: string;
  who?: string; saw?: string; peer?: string; len?: number; sameHash?: boolean; replyLen?: number; sameTail?: boolean;
}

interface Env {
  agent: TestAgent;
  dir: string;
  outside: Netns;
  client: Endpoint;
  servers: Endpoint[];
}

/** Runs CLIENT in the namespace at `netnsPath`, from the test process: outside the agent's cgroup. */
function ask(e: Env, netnsPath: string, reqs: Request[]): Answer[] {
  const r = spawnSync('nsenter', [`--net=${netnsPath}`, '--', process.execPath, '-e', CLIENT, JSON.stringify(reqs)],
    { encoding: 'utf8', timeout: 120_000, env: childEnv() });
  assert.equal(r.status, 0, `client exited ${r.status}: ${r.stderr}`);
  const [first, ...lines] = r.stdout.trim().split('\n').filter(Boolean);
  const { cgroup } = JSON.parse(first ?? '{}') as { cgroup?: string };
  const agentCgroup = e.agent.cgroup ? basename(e.agent.cgroup.path) : undefined;
  assert.ok(cgroup && agentCgroup && !cgroup.includes(agentCgroup), `the client runs outside the agent's cgroup ${agentCgroup}: ${cgroup}`);
  return lines.map((l) => JSON.parse(l) as Answer);
}

/** The agent's last drops of the address family of `addr` since `since`, for assertion messages. */
function drops(e: Env, since: string, addr: string): string {
  const r = e.agent.cli(['observe', '--since', since, '--verdict', 'DROPPED', '--ip', addr.includes(':') ? '::/0' : '0.0.0.0/0', '--last', '6']);
  return r.stdout.trim() ? `\nthe agent's last drops:\n${r.stdout.trim()}` : `\n(no drops in waggle observe${r.code === 0 ? '' : `: ${r.stderr.trim()}`})`;
}

const bracket = (a: string): string => (a.includes(':') ? `[${a}]` : a);

/**
 * Asserts that every datagram of every request was answered intact: the
 * server reassembled the whole datagram (length and hash) and the whole reply
 * came back (its length and tail); `check` adds per-answer assertions. Every
 * request is judged before failing, so the message says which sizes and
 * families went through and which did not, with the agent's last drops.
 */
function assertIntact(e: Env, answers: Answer[], reqs: Request[], since: string, check?: (a: Answer, req: Request) => void): void {
  const problems: string[] = [];
  const families = new Set<string>();
  for (const req of reqs) {
    const mine = answers.filter((a) => a.id === req.id);
    const what = `${req.size}-byte datagrams to ${bracket(req.addr)}:${req.port}`;
    const failed = mine.filter((a) => a.error);
    try {
      assert.equal(mine.length, req.n, 'one result per datagram');
      assert.deepEqual(failed.map((a) => a.error), [], `${failed.length} of ${req.n} not answered`);
      for (const a of mine) {
        assert.deepEqual({ len: a.len, sameHash: a.sameHash, replyLen: a.replyLen, sameTail: a.sameTail },
          { len: req.size, sameHash: true, replyLen: Math.max(req.size, 256), sameTail: true },
          `the server got the whole datagram and the whole reply came back: ${JSON.stringify(a)}`);
        check?.(a, req);
      }
    } catch (err) {
      if (!(err instanceof assert.AssertionError)) throw err;
      problems.push(`${what}: ${err.message.split('\n')[0]}${failed.length ? ` (${failed.map((a) => a.error).join(', ')})` : ''}`);
      families.add(req.addr);
    }
  }
  if (problems.length > 0) {
    const ok = reqs.length - problems.length;
    assert.fail(`${problems.length} of ${reqs.length} requests failed (${ok} went through):\n  ${problems.join('\n  ')}${[...families].map((a) => drops(e, since, a)).join('')}`);
  }
}

/** The MTU of `ifname` in the namespace at `netnsPath`. */
function mtuIn(netnsPath: string, ifname: string): number {
  const out = spawnSync('nsenter', [`--net=${netnsPath}`, '--', 'ip', '-j', 'link', 'show', 'dev', ifname], { encoding: 'utf8', timeout: 10_000 });
  return (JSON.parse(out.stdout) as { mtu: number }[])[0]?.mtu ?? 0;
}

/** How many fragments the kernel of the namespace at `netnsPath` has created so far (IPv4 FragCreates, Ip6FragCreates). */
function fragCreates(netnsPath: string): { v4: number; v6: number } {
  const read = (file: string): string => {
    const r = spawnSync('nsenter', [`--net=${netnsPath}`, '--', 'cat', file], { encoding: 'utf8', timeout: 10_000 });
    assert.equal(r.status, 0, `cat ${file}: ${r.stderr}`);
    return r.stdout;
  };
  const [names, values] = read('/proc/net/snmp').split('\n').filter((l) => l.startsWith('Ip: ')).map((l) => l.split(/\s+/));
  const v4 = Number(values?.[names?.indexOf('FragCreates') ?? -1]);
  const v6 = Number(/^Ip6FragCreates\s+(\d+)$/m.exec(read('/proc/net/snmp6'))?.[1]);
  assert.ok(Number.isInteger(v4) && Number.isInteger(v6), `fragment counters of ${netnsPath}: ${v4}, ${v6}`);
  return { v4, v6 };
}

async function createEnv(): Promise<Env> {
  const dir = mkdtempSync(join(tmpdir(), 'waggle-frag-'));
  cleanup.add(() => rmSync(dir, { recursive: true, force: true }), `temp dir ${dir}`);
  const outside = createOutside(cleanup, 'wg-fr-out', LINK);
  const agent = new TestAgent({ extraArgs: ['--devices', HOST_DEV, ...SERVICE_CIDRS.flatMap((c) => ['--service-cidr', c])] });
  cleanup.add(() => agent.remove(), `agent ${agent.nodeName}`);
  await agent.start();
  const create = (name: string, labels: string): Endpoint =>
    JSON.parse(agent.ok(['endpoint', 'create', `frag-${PID}-${name}`, '--labels', labels, '--namespace', 'frag', '-o', 'json'])) as Endpoint;
  const client = create('client', 'app=frag-client');
  const servers = [create('server1', 'app=frag-server'), create('server2', 'app=frag-server')];
  for (const s of servers) {
    const child: ChildProcess = spawn('nsenter', [`--net=${s.netnsPath}`, '--', process.execPath, '-e', SERVER, s.name], { stdio: ['ignore', 'pipe', 'pipe'], env: childEnv() });
    cleanup.add(() => stopChild(child), `server in ${s.name}`);
    let stderr = '';
    child.stderr?.setEncoding('utf8').on('data', (d: string) => { stderr += d; });
    await new Promise<void>((resolve, reject) => {
      child.stdout?.once('data', () => resolve());
      child.once('exit', (c) => reject(new Error(`server in ${s.name} exited (${c}): ${stderr}`)));
    });
  }
  const file = join(dir, 'service.yaml');
  writeFileSync(file, `apiVersion: v1
kind: Service
metadata: {name: frag, namespace: frag}
spec:
  type: NodePort
  selector: {app: frag-server}
  ipFamilyPolicy: RequireDualStack
  ports:
  - {name: dgram, port: ${SERVICE_PORT}, targetPort: ${ALLOWED_PORT}, protocol: UDP, nodePort: ${NODE_PORT}}
`);
  agent.ok(['apply', '-f', file]);
  return { agent, dir, outside, client, servers };
}

let envPromise: Promise<Env> | undefined;
async function env(t: TestContext): Promise<Env | undefined> {
  if (skipUnlessRoot(t) || requireTools(t, 'ip', 'nsenter')) return undefined;
  envPromise ??= createEnv();
  return envPromise;
}

/** The requests of a case: a small datagram, three of BIG bytes and one of BIGGER bytes, to addr:port. */
function requests(tag: string, addr: string, port: number): Request[] {
  return [
    { id: `${tag} small`, addr, port, size: SMALL, n: 1 },
    { id: `${tag} big`, addr, port, size: BIG, n: 3 },
    { id: `${tag} bigger`, addr, port, size: BIGGER, n: 1 },
  ];
}

test('between endpoints without a policy, fragmented UDP datagrams arrive intact both ways (IPv4 and IPv6)', async (t) => {
  const e = await env(t);
  if (!e) return;
  // Every link on the way has MTU 1500, so the 4000-byte datagrams are fragmented.
  assert.equal(mtuIn(e.client.netnsPath, 'eth0'), 1500, 'the client endpoint\'s MTU');
  assert.equal(mtuIn(e.servers[0]!.netnsPath, 'eth0'), 1500, 'the server endpoint\'s MTU');
  const server = e.servers[0]!;
  const since = new Date().toISOString();
  const before = { client: fragCreates(e.client.netnsPath), server: fragCreates(server.netnsPath) };
  const reqs = [...requests('v4', server.ipv4, ALLOWED_PORT), ...requests('v6', server.ipv6, ALLOWED_PORT)];
  const answers = ask(e, e.client.netnsPath, reqs);
  assertIntact(e, answers, reqs, since, (a, req) => {
    assert.equal(a.who, server.name, `answered by ${server.name}, not ${a.who}`);
    assert.equal(a.peer, `${req.addr}:${ALLOWED_PORT}`, `the answer comes from the server's address, not ${a.peer}`);
    assert.equal(a.saw, req.addr.includes(':') ? e.client.ipv6 : e.client.ipv4, `the server saw the client's address, not ${a.saw}`);
  });
  // The kernels really fragmented: per family, 3 × 3 fragments of the 4000-byte datagrams and 9 of the
  // 12000-byte one, sent by the client and again by the server for the replies.
  const afterwards = { client: fragCreates(e.client.netnsPath), server: fragCreates(server.netnsPath) };
  for (const side of ['client', 'server'] as const) {
    for (const family of ['v4', 'v6'] as const) {
      const made = afterwards[side][family] - before[side][family];
      assert.ok(made >= 18, `the ${side}'s kernel made ${made} ${family === 'v4' ? 'IPv4' : 'IPv6'} fragments, expected at least 18`);
    }
  }
});

test('a policy allowing only UDP 5000: fragmented datagrams to 5000 arrive intact, a datagram to 5001 is dropped (IPv4 and IPv6)', async (t) => {
  const e = await env(t);
  if (!e) return;
  const server = e.servers[0]!;
  const file = join(e.dir, 'policy.yaml');
  writeFileSync(file, `apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: frag-server-udp, namespace: frag}
spec:
  endpointSelector: {matchLabels: {app: frag-server}}
  ingress:
  - fromEndpoints: [{matchLabels: {app: frag-client}}]
    toPorts: [{ports: [{port: "${ALLOWED_PORT}", protocol: UDP}]}]
`);
  const r = e.agent.cli(['apply', '-f', file]);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /CiliumNetworkPolicy\/frag\/frag-server-udp created/);
  try {
    const since = new Date().toISOString();
    const reqs = [...requests('v4', server.ipv4, ALLOWED_PORT), ...requests('v6', server.ipv6, ALLOWED_PORT)];
    const denied: Request[] = [
      { id: 'v4 other port', addr: server.ipv4, port: OTHER_PORT, size: SMALL, n: 1 },
      { id: 'v6 other port', addr: server.ipv6, port: OTHER_PORT, size: SMALL, n: 1 },
    ];
    const answers = ask(e, e.client.netnsPath, [...denied, ...reqs]);
    // The policy is in force: the port it does not allow gets no answer, although the server listens there.
    for (const req of denied) {
      assert.deepEqual(answers.filter((a) => a.id === req.id).map((a) => a.error ?? `answered by ${a.who}`), ['timeout'],
        `${req.id}: a datagram to ${bracket(req.addr)}:${OTHER_PORT} is dropped by the policy`);
    }
    const denials = e.agent.ok(['observe', '--since', since, '--verdict', 'DROPPED', '--to-port', String(OTHER_PORT), '-o', 'json']);
    assert.match(denials, /POLICY_DENIED/, `the drops to port ${OTHER_PORT} are policy drops: ${denials}`);
    assertIntact(e, answers, reqs, since, (a, req) => {
      assert.equal(a.who, server.name, `answered by ${server.name}, not ${a.who}`);
      assert.equal(a.peer, `${req.addr}:${ALLOWED_PORT}`, `the answer comes from the server's address, not ${a.peer}`);
    });
  } finally {
    e.agent.ok(['delete', '-f', file]);
  }
});

test('a UDP ClusterIP service translated per packet (a client outside the agent\'s cgroup): fragmented datagrams reach the backends intact and the answers come from the service address', async (t) => {
  const e = await env(t);
  if (!e) return;
  const svc = JSON.parse(e.agent.ok(['service', 'get', 'frag', '-n', 'frag', '-o', 'json'])) as { clusterIPs: string[] };
  assert.equal(svc.clusterIPs.length, 2, `dual-stack ClusterIPs: ${svc.clusterIPs}`);
  const [v4, v6] = svc.clusterIPs as [string, string];
  assert.ok(v4.startsWith('10.98.0.') && v6.startsWith('fd00:98::'), `ClusterIPs from the service CIDRs: ${svc.clusterIPs}`);
  const since = new Date().toISOString();
  const reqs = [...requests('v4', v4, SERVICE_PORT), ...requests('v6', v6, SERVICE_PORT)];
  const answers = ask(e, e.client.netnsPath, reqs);
  const names = e.servers.map((s) => s.name);
  assertIntact(e, answers, reqs, since, (a, req) => {
    assert.ok(names.includes(a.who ?? ''), `answered by a backend: ${a.who}`);
    assert.equal(a.peer, `${req.addr}:${SERVICE_PORT}`, `the answer comes from the service address and port, not ${a.peer}`);
  });
});

test('a NodePort from outside the node: fragmented datagrams reach the backends intact, the answers come from the node address and node port (IPv4 and IPv6)', async (t) => {
  const e = await env(t);
  if (!e) return;
  assert.equal(mtuIn(e.outside.path, 'eth0'), 1500, 'the outside link\'s MTU');
  const since = new Date().toISOString();
  const reqs = [...requests('v4', NODE4, NODE_PORT), ...requests('v6', NODE6, NODE_PORT)];
  const answers = ask(e, e.outside.path, reqs);
  const names = e.servers.map((s) => s.name);
  assertIntact(e, answers, reqs, since, (a, req) => {
    assert.ok(names.includes(a.who ?? ''), `answered by a backend: ${a.who}`);
    assert.equal(a.peer, `${req.addr}:${NODE_PORT}`, `the answer comes from the node address and node port, not ${a.peer}`);
    assert.equal(a.saw, req.addr.includes(':') ? CLIENT6 : CLIENT4, `the backend saw the outside client's address, not ${a.saw}`);
  });
});

test('nothing is left behind', async (t) => {
  if (skipUnlessRoot(t)) return;
  await cleanup.run();
  envPromise = undefined;
  assert.deepEqual(listNetns().filter((n) => n.startsWith(`frag-${PID}-`) || n.startsWith(`wg-fr-out-${PID}-`)), []);
  assert.notEqual(spawnSync('ip', ['link', 'show', 'dev', HOST_DEV], { stdio: 'ignore' }).status, 0, `link ${HOST_DEV} is gone`);
});
