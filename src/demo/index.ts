/**
 * `waggle demo`: the whole product in one run. It starts an agent with its own
 * temporary state, creates labelled endpoints, runs real traffic between them
 * (an HTTP server in one, clients in the others), prints the flows as they
 * happen, applies a CiliumNetworkPolicy that lets only the clients reach the
 * web server and shows an outsider's connection dropped by it (with the
 * `policy trace` that explains why), balances a NodePort Service for a client
 * in the node and one outside it, shows a spoofed packet dropped with its
 * reason, shows flows filtered by the agent and the drop counters of its
 * Prometheus metrics, serves the live web UI while it runs, and removes
 * everything on exit or Ctrl-C.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { call, stream } from '../cli/client.js';
import { spawnAgent } from '../agent/process.js';
import { encodeFlowQuery } from '../observe/filter.js';
import { compactLine, isControlFlow, type HubbleRecord } from '../observe/hubble.js';
import type { EndpointStatus } from '../endpoint/manager.js';
import { createOutside, type Outside } from './outside.js';
import { cgroup2Root } from '../datapath/sock.js';

export interface DemoOptions {
  /** Seconds of traffic (0: until Ctrl-C). */
  durationSeconds: number;
  /** Prefix of the endpoint (and namespace) names. */
  prefix: string;
  /** Pod CIDRs of the demo agent (private ranges that exist only inside the demo's namespaces). */
  podCidrs: string[];
  /** Where the agent serves metrics and the web UI (the default port, or any free one when it is taken). */
  httpListen?: string;
  out: (line: string) => void;
}

const CLI = fileURLToPath(new URL('../cli/main.js', import.meta.url));
const HTTP_PORT = 8080;
const NODE_PORT = 30080;
/** The demo's "outside the node": a namespace on 10.202.0.0/24 and fd00:202::/64 (node .1, client .2). */
const OUTSIDE_NET = { ipv4: '10.202.0', ipv6: 'fd00:202' };

const serverScript = (name: string): string => `
const http = require('http');
let n = 0;
http.createServer((req, res) => { n++; res.end('hello from ${name}, request ' + n + ', you are ' + req.socket.remoteAddress.replace(/^::ffff:/, '') + '\\n'); })
  .listen(${HTTP_PORT}, '::', () => console.log('ready'));`;

/** A NodePort Service in front of every app=web endpoint (a ClusterIP too). */
const demoService = (namespace: string): string => `apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: ${namespace}
spec:
  type: NodePort
  selector:
    app: web
  ports:
  - name: http
    port: 80
    targetPort: ${HTTP_PORT}
    nodePort: ${NODE_PORT}
`;

/**
 * Calls http://HOST:PORT/ n times (a new connection each) and prints who
 * answered, the peer address its socket saw and the address the servers saw it at.
 */
const serviceProbeScript = (host: string, port: number, n: number): string => `
const net = require('net');
const counts = {}; const peers = new Set(); const seen = new Set();
const one = () => new Promise((done) => {
  const s = net.connect(${port}, '${host}', () => s.write('GET / HTTP/1.0\\r\\n\\r\\n'));
  const t = setTimeout(() => { s.destroy(); counts['timeout'] = (counts['timeout'] || 0) + 1; done(); }, 2000);
  let d = '';
  s.on('data', (x) => { d += x; });
  s.on('end', () => {
    clearTimeout(t);
    peers.add(s.remoteAddress.replace(/^::ffff:/, '') + ':' + s.remotePort);
    const m = /hello from (\\S+), request \\d+, you are (\\S+)/.exec(d);
    const who = m ? m[1] : '?'; counts[who] = (counts[who] || 0) + 1; if (m) seen.add(m[2]);
    done();
  });
  s.on('error', (e) => { clearTimeout(t); counts['error ' + e.code] = (counts['error ' + e.code] || 0) + 1; done(); });
});
(async () => { for (let i = 0; i < ${n}; i++) await one(); console.log(JSON.stringify({ counts, peers: [...peers], seen: [...seen] })); })();`;

/** Only endpoints labelled app=client may reach the web server, on its HTTP port. */
const demoPolicy = (namespace: string): string => `apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata:
  name: web-allow-clients
  namespace: ${namespace}
spec:
  endpointSelector:
    matchLabels:
      app: web
  ingress:
  - fromEndpoints:
    - matchLabels:
        app: client
    toPorts:
    - ports:
      - port: "${HTTP_PORT}"
        protocol: TCP
  - fromEntities:
    - world
    toPorts:
    - ports:
      - port: "${HTTP_PORT}"
        protocol: TCP
`;

/** One HTTP request with a short timeout; prints what happened. */
const probeScript = (target: string): string => `
const http = require('http');
const req = http.get({ host: '${target}', port: ${HTTP_PORT}, path: '/', timeout: 1500 }, (res) => { res.resume(); console.log('answered ' + res.statusCode); });
req.on('timeout', () => { console.log('no answer (timed out)'); req.destroy(); });
req.on('error', (e) => { if (!req.destroyed || e.code !== 'ECONNRESET') console.log('failed: ' + e.message); });`;

const clientScript = (target: string, everyMs: number): string => `
const http = require('http');
setInterval(() => {
  http.get('http://${target.includes(':') ? `[${target}]` : target}:${HTTP_PORT}/', (res) => { res.resume(); })
    .on('error', (e) => console.error(e.message));
}, ${everyMs});`;

/** The demo's web UI port: the agent's default, so the address is easy to remember. */
const DEMO_HTTP_PORT = 9962;

/** `host:port` when that port is free, else `host:0` (the agent picks one and says which). */
function freeListenAddress(host: string, port: number): Promise<string> {
  return new Promise((resolve) => {
    const probe = createServer();
    probe.once('error', () => resolve(`${host}:0`));
    probe.listen(port, host, () => probe.close(() => resolve(`${host}:${port}`)));
  });
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const t = setTimeout(resolve, ms);
    signal.addEventListener('abort', () => { clearTimeout(t); resolve(); }, { once: true });
  });
}

/** Runs the demo; resolves true when every step worked. */
export async function runDemo(opts: DemoOptions): Promise<boolean> {
  const { out } = opts;
  const dir = mkdtempSync(join(tmpdir(), 'waggle-demo-'));
  const socket = join(dir, 'api.sock');
  let outside: Outside;
  try {
    outside = createOutside(`${opts.prefix}-outside`, `${opts.prefix.slice(0, 11)}-ext`, OUTSIDE_NET);
  } catch (err) {
    rmSync(dir, { recursive: true, force: true });
    out(`✗ could not create the outside namespace: ${(err as Error).message}`);
    return false;
  }
  // The agent's socket programs go on a cgroup of the demo's own, which its
  // workloads join: on the cgroup2 root they would also balance the outside
  // client, which stands in for another machine.
  const cgroup = join(cgroup2Root(), `waggle-demo-${process.pid}`);
  mkdirSync(cgroup, { recursive: true });
  const agentFlags = [
    '--devices', outside.device, '--cgroup-root', cgroup,
    '--node-name', 'demo-node', '--state-dir', join(dir, 'state'), '--bpffs-root', join(dir, 'bpffs'),
    '--api-socket', socket, '--http-listen', opts.httpListen ?? await freeListenAddress('127.0.0.1', DEMO_HTTP_PORT),
    ...opts.podCidrs.flatMap((c) => ['--pod-cidr', c]),
  ];
  const children: ChildProcess[] = [];
  const stop = new AbortController();
  // The live flow stream ends before the closing summary, so its lines do not run into the summary's.
  const followStop = new AbortController();
  stop.signal.addEventListener('abort', () => followStop.abort(), { once: true });
  const onSignal = (): void => { out('\n(interrupted: cleaning up)'); stop.abort(); };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  let ok = true;
  let agent: ChildProcess | undefined;
  try {
    out('▶ starting a Waggle agent with its own temporary state');
    const started = await spawnAgent(CLI, agentFlags, { timeoutMs: 60_000 });
    agent = started.child;
    const url = started.url;
    out(`  agent ready; the web UI (live service map and flows) at ${url}/ and Prometheus metrics at ${url}/metrics`);
    if (opts.durationSeconds > 0) out('  (open the UI now to watch; `waggle demo --duration 0` keeps everything running until Ctrl-C)');

    const names = { web: `${opts.prefix}-web`, web2: `${opts.prefix}-web-2`, c1: `${opts.prefix}-client-1`, c2: `${opts.prefix}-client-2`, outsider: `${opts.prefix}-outsider` };
    const create = (name: string, labels: Record<string, string>): Promise<EndpointStatus> =>
      call<EndpointStatus>(socket, 'POST', '/v1/endpoints', { name, namespace: 'demo', labels });
    out('▶ creating five endpoints (a network namespace and a veth each, the shared eBPF programs attached)');
    const web = await create(names.web, { app: 'web', tier: 'frontend' });
    const web2 = await create(names.web2, { app: 'web', tier: 'frontend' });
    const c1 = await create(names.c1, { app: 'client' });
    const c2 = await create(names.c2, { app: 'client' });
    const outsider = await create(names.outsider, { app: 'outsider' });
    for (const e of [web, web2, c1, c2, outsider]) out(`  ${e.name.padEnd(24)} ID ${String(e.id).padEnd(3)} ${e.ipv4 ?? ''}  ${e.ipv6 ?? ''}  labels ${Object.entries(e.labels).map(([k, v]) => `${k}=${v}`).join(',')}`);

    out('▶ flows as they happen (waggle observe --follow; ARP and neighbour discovery not shown):');
    let hidden = 0;
    void stream(socket, '/v1/flows?follow=true', (v) => {
      const r = v as HubbleRecord;
      if ('flow' in r && r.flow.verdict === 'FORWARDED' && isControlFlow(r.flow)) { hidden++; return; }
      out(`  ${'flow' in r ? compactLine(r.flow) : `${r.lost_events.num_events_lost} events lost`}`);
    }, followStop.signal).catch(() => undefined);

    /** Runs a script in a network namespace; `inCgroup`: in the agent's cgroup (where its socket programs balance services). */
    const inNs = (e: { netnsPath: string }, script: string, inCgroup = true): ChildProcess => {
      const nsenter = [`--net=${e.netnsPath}`, '--', process.execPath, '-e', script];
      const child = inCgroup
        ? spawn('sh', ['-c', 'echo $$ > "$1/cgroup.procs" && shift && exec nsenter "$@"', 'demo', cgroup, ...nsenter], { stdio: ['ignore', 'pipe', 'pipe'] })
        : spawn('nsenter', nsenter, { stdio: ['ignore', 'pipe', 'pipe'] });
      children.push(child);
      return child;
    };
    /** Runs a probe script in a namespace; resolves to its parsed JSON line (or says what it printed). */
    const probeJson = async <T>(where: { netnsPath: string }, script: string, inCgroup = true): Promise<T | string> => {
      const child = inNs(where, script, inCgroup);
      let text = '';
      child.stdout?.on('data', (d: Buffer) => { text += d.toString(); });
      await new Promise<void>((resolve) => child.once('exit', () => resolve()));
      try {
        return JSON.parse(text) as T;
      } catch {
        return text.trim() || 'nothing';
      }
    };
    type ProbeResult = { counts: Record<string, number>; peers: string[]; seen: string[] };
    const answeredBy = (r: ProbeResult): string => Object.entries(r.counts).map(([k, v]) => `${k} ×${v}`).join(', ');
    for (const w of [web, web2]) {
      const server = inNs(w, serverScript(w.name));
      await new Promise<void>((resolve, reject) => {
        server.stdout?.once('data', () => resolve());
        server.once('exit', (code) => reject(new Error(`the web server in ${w.name} exited (${code})`)));
      });
    }
    out(`  (HTTP servers listen in ${web.name} and ${web2.name}; ${c1.name} calls ${web.name} over IPv4, ${c2.name} over IPv6)`);
    if (web.ipv4) inNs(c1, clientScript(web.ipv4, 700));
    if (web.ipv6) inNs(c2, clientScript(web.ipv6, 900));

    const seconds = opts.durationSeconds;
    // Half the traffic before the policy, half after (until Ctrl-C with --duration 0).
    await sleep(seconds > 0 ? (seconds * 1000) / 2 : 5000, stop.signal);

    if (!stop.signal.aborted && web.ipv4) {
      const runProbe = async (from: EndpointStatus): Promise<string> => {
        const child = inNs(from, probeScript(web.ipv4 as string));
        let text = '';
        child.stdout?.on('data', (d: Buffer) => { text += d.toString(); });
        await new Promise<void>((resolve) => child.once('exit', () => resolve()));
        return text.trim();
      };
      out(`▶ before any policy, ${outsider.name} (app=outsider) reaches the web server too: ${await runProbe(outsider)}`);
      out(`▶ waggle apply -f web-allow-clients.yaml: only app=client (and clients outside the cluster: world) may reach app=web, on TCP ${HTTP_PORT}`);
      const applied = await call<{ created: string[] }>(socket, 'POST', '/v1/apply', { files: [{ text: demoPolicy('demo'), source: 'web-allow-clients.yaml' }] });
      out(`  ${applied.created.join(', ')} created: enforced in the kernel, for new connections and established ones`);
      out(`▶ ${outsider.name} tries again: ${await runProbe(outsider)} (the clients keep working)`);
      const trace = await call<{ verdict: string; ingress?: { reason: string } }>(socket, 'POST', '/v1/policy/trace', { from: { endpoint: outsider.name }, to: { endpoint: web.name }, dport: `${HTTP_PORT}/tcp` });
      out(`▶ waggle policy trace --from-endpoint ${outsider.name} --to-endpoint ${web.name} --dport ${HTTP_PORT}/tcp: ${trace.verdict.toUpperCase()} (${trace.ingress?.reason === 'no-rule' ? 'web is selected by a policy and no rule allows the outsider' : trace.ingress?.reason ?? ''})`);

      out(`▶ waggle apply -f web-service.yaml: a NodePort Service "web" in front of every app=web endpoint (port 80 and node port ${NODE_PORT} → ${HTTP_PORT})`);
      await call(socket, 'POST', '/v1/apply', { files: [{ text: demoService('demo'), source: 'web-service.yaml' }] });
      const svc = await call<{ clusterIPs: string[]; frontends: { backends: { address: string }[] }[] }>(socket, 'GET', '/v1/services/demo/web');
      const vip = svc.clusterIPs[0] as string;
      out(`  service demo/web: ClusterIP ${vip}, backends ${[...new Set(svc.frontends.flatMap((f) => f.backends.map((b) => b.address)))].join(', ')}`);
      const inside = await probeJson<ProbeResult>(c1, serviceProbeScript(vip, 80, 16));
      if (typeof inside === 'string') {
        out(`✗ the service probe said: ${inside}`);
        ok = false;
      } else {
        out(`▶ ${c1.name} opens 16 connections to http://${vip}/: answered by ${answeredBy(inside)}; the peer its sockets saw: ${inside.peers.join(', ')} (balanced at connect time in eBPF, no per-packet NAT)`);
      }
      const outsideProbe = await probeJson<ProbeResult>({ netnsPath: outside.path }, serviceProbeScript(outside.node.ipv4, NODE_PORT, 16), false);
      if (typeof outsideProbe === 'string') {
        out(`✗ the NodePort probe said: ${outsideProbe}`);
        ok = false;
      } else {
        out(`▶ a client outside the node (namespace ${outside.name}, ${outside.client.ipv4}) opens 16 connections to the node port http://${outside.node.ipv4}:${NODE_PORT}/ through device ${outside.device}: answered by ${answeredBy(outsideProbe)}; the servers saw ${outsideProbe.seen.join(', ')} (translated per packet by the device's eBPF program, the client's address kept)`);
      }
    }
    await sleep(seconds > 0 ? (seconds * 1000) / 2 : 2 ** 31 - 1, stop.signal);

    if (!stop.signal.aborted && c1.ipv4 && web.ipv4) {
      // c1 has talked IPv4 through the router already, so it sends the spoofed packet at once.
      const spoof = c1.ipv4.replace(/\.(\d+)$/, (_, n: string) => `.${((Number(n) + 100) % 250) + 2}`);
      out(`▶ ${c1.name} now pings ${web.name} from ${spoof}, an address that is not its own: the datapath drops it`);
      spawnSync('nsenter', [`--net=${c1.netnsPath}`, 'ip', 'addr', 'add', `${spoof}/32`, 'dev', 'eth0'], { stdio: 'ignore' });
      spawnSync('nsenter', [`--net=${c1.netnsPath}`, 'ping', '-c', '1', '-W', '1', '-I', spoof, web.ipv4], { stdio: 'ignore', timeout: 5000 });
      await sleep(500, stop.signal);
    }
    followStop.abort();
    const status = await call<{ flows: { flowsSeen: number; lostRingBuffer: number } }>(socket, 'GET', '/v1/status');
    out(`▶ ${status.flows.flowsSeen} flows observed (${hidden} ARP/neighbour-discovery flows not shown), ${status.flows.lostRingBuffer} events lost.`);
    out('▶ waggle observe --verdict DROPPED --last 3 (the agent filters its stored flows):');
    await stream(socket, `/v1/flows?${encodeFlowQuery({ include: [{ verdict: ['DROPPED'] }], last: 3 })}`, (v) => {
      const r = v as HubbleRecord;
      if ('flow' in r) out(`  ${compactLine(r.flow)}`);
    });
    const metrics = await (await fetch(`${url}/metrics`)).text();
    out(`▶ curl ${url}/metrics | grep waggle_drop_count_total:`);
    for (const line of metrics.split('\n').filter((l) => l.startsWith('waggle_drop_count_total{'))) out(`  ${line}`);
    out('  Try it yourself: sudo waggle agent, then waggle endpoint create web --labels app=web (see README)');
  } catch (err) {
    ok = false;
    out(`✗ ${(err as Error).message}`);
  } finally {
    stop.abort();
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    for (const c of children) if (c.exitCode === null) c.kill('SIGKILL');
    if (agent && agent.exitCode === null) {
      await new Promise<void>((resolve) => { agent?.once('exit', () => resolve()); agent?.kill('SIGTERM'); });
    }
    const r = spawnSync(process.execPath, [CLI, 'agent', '--cleanup', ...agentFlags], { encoding: 'utf8', timeout: 120_000 });
    if (r.status !== 0) { ok = false; out(`✗ cleanup failed: ${r.stderr.trim()}`); }
    try {
      rmdirSync(cgroup);
    } catch (err) {
      ok = false;
      out(`✗ removing the cgroup ${cgroup} failed: ${(err as Error).message}`);
    }
    try {
      outside.remove();
    } catch (err) {
      ok = false;
      out(`✗ removing ${outside.name} failed: ${(err as Error).message}`);
    }
    rmSync(dir, { recursive: true, force: true });
    out(ok ? '▶ removed the endpoints, their namespaces, the pinned programs and the agent\'s state' : '(cleaned up)');
  }
  return ok;
}
