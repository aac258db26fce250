/**
 * Part 4 of the policy benchmark: the control plane.
 *
 * (a) {@link runEngine}: PolicyEngine.sync against a temporary bpffs (the
 *     endpoint datapath loaded there, so the pinned maps are real) with
 *     synthetic endpoint records. Shape (for E endpoints, R rules):
 *     A = E / 10 apps of 10 replicas, every endpoint its own identity (labels
 *     app=app-K, replica=r-J in namespace bench); ceil(R / 10)
 *     CiliumNetworkPolicies of 10 ingress rules, policy k selecting app-(k mod A),
 *     rule j allowing fromEndpoints app-(k+j+1 mod A) on TCP 8000+j. The
 *     endpoint source writes the ENDPOINT_F_POLICY_* flags into `lxc_config`
 *     and `endpoints` entries as the endpoint manager does (entries filled
 *     first, with fake ifindexes). Timed: the first sync (empty maps), full
 *     recomputes with nothing changed, and incremental changes (one policy's
 *     first rule moves to another port and back: repo.apply + sync, as the
 *     API's apply does), plus resolving alone (prepare + resolve, no map I/O).
 * (b) {@link runEnforce}: a real `waggle agent` (TestAgent) with E endpoints;
 *     a server endpoint runs a TCP listener, a client endpoint runs connect
 *     probes (50 ms timeout, 1 ms apart, CLOCK_MONOTONIC start times written to
 *     a file); `waggle apply -f deny.yaml` (the real CLI) adds an ingressDeny
 *     of the client to the server; measured from the CLI's exit to the start of
 *     the first failed probe; then `waggle delete -f deny.yaml` and the first
 *     allowed probe again.
 */
import { spawnSync } from 'node:child_process';
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { pino } from 'pino';
import { endpointsMap, loadEndpointDatapath } from '../src/datapath/lxc.js';
import type { EndpointRecord } from '../src/endpoint/model.js';
import { PolicyEngine } from '../src/policy/engine.js';
import { parsePolicyDocuments } from '../src/policy/parse.js';
import { prepare, resolveEndpointPolicy } from '../src/policy/resolve.js';
import { apiOk, CLI, type TestAgent } from '../test/helpers/agent.js';
import { mountTempBpffs } from '../test/helpers/bpffs.js';
import type { Cleanup } from '../test/helpers/netns.js';
import { median } from './lib.js';
import { checkAddrs, settle, spawnIn, startAgent, stopChild, type Tool } from './policy-tool.js';

export interface EngineConfig {
  endpoints: number;
  rules: number;
  repeats: number;
}

interface Spread { median: number; min: number; max: number }

export interface EngineResult {
  method: string[];
  endpoints: number;
  rules: number;
  identities: number;
  policyEntries: number;
  ipcacheEntries: number;
  coldMs: number;
  recomputeMs: Spread;
  incrementalMs: Spread;
  incrementalWritten: number;
  incrementalRemoved: number;
  resolveMs: number;
}

const spread = (xs: number[]): Spread => ({ median: median(xs), min: Math.min(...xs), max: Math.max(...xs) });
const msSince = (t0: bigint): number => Number(process.hrtime.bigint() - t0) / 1e6;

const RULES_PER_POLICY = 10;

function enginePolicy(k: number, apps: number, rules: number, firstPort = 8000): Record<string, unknown> {
  const ingress = [];
  for (let j = 0; j < rules; j++) {
    ingress.push({
      fromEndpoints: [{ matchLabels: { app: `app-${(k + j + 1) % apps}` } }],
      toPorts: [{ ports: [{ port: String((j === 0 ? firstPort : 8000) + j), protocol: 'TCP' }] }],
    });
  }
  return {
    apiVersion: 'cilium.io/v2', kind: 'CiliumNetworkPolicy',
    metadata: { name: `bench-${k}`, namespace: 'bench' },
    spec: { endpointSelector: { matchLabels: { app: `app-${k % apps}` } }, ingress },
  };
}

const hex2 = (n: number): string => (n & 255).toString(16).padStart(2, '0');

export async function runEngine(cfg: EngineConfig, cleanup: Cleanup, progress: (s: string) => void): Promise<EngineResult> {
  const fs = mountTempBpffs();
  cleanup.add(() => fs.unmount(), 'unmount the engine bpffs');
  const stateDir = mkdtempSync(join(tmpdir(), 'waggle-bench-engine-'));
  cleanup.add(() => rmSync(stateDir, { recursive: true, force: true }), 'remove the engine state');
  const pinDir = join(fs.path, 'waggle');
  const dp = loadEndpointDatapath({ pinDir });
  cleanup.add(() => dp.close(), 'close the engine datapath');
  const engine = new PolicyEngine({ stateDir, pinDir, log: pino({ level: 'silent' }) });
  cleanup.add(() => engine.close(), 'close the engine');

  const E = cfg.endpoints;
  const apps = Math.max(1, Math.round(E / 10));
  const records: EndpointRecord[] = [];
  const eps = endpointsMap(pinDir);
  cleanup.add(() => eps.close(), 'close the endpoints map');
  for (let i = 0; i < E; i++) {
    const labels = { app: `app-${i % apps}`, replica: `r-${Math.floor(i / apps)}` };
    const id = i + 1;
    const mac = `02:00:00:${hex2(i >> 16)}:${hex2(i >> 8)}:${hex2(i)}`;
    const hostMac = `02:00:01:${hex2(i >> 16)}:${hex2(i >> 8)}:${hex2(i)}`;
    const r: EndpointRecord = {
      id, name: `ep-${i}`, namespace: 'bench', labels, netnsPath: `/var/run/netns/bench-ep-${i}`, netnsCreated: false,
      hostIfname: `wgb${i}`, hostIfindex: 100000 + i, hostMac, mac,
      ipv4: `10.198.${i >> 8}.${i & 255}`, ipv6: `fd98::${(i >> 8).toString(16)}:${(i & 255).toString(16)}`,
      identity: engine.identities.acquire(labels, 'bench'), createdAt: new Date(0).toISOString(),
    };
    records.push(r);
    dp.config.update(r.hostIfindex, { endpointId: id, ipv4: r.ipv4 as string, ipv6: r.ipv6 as string, mac, hostMac, flags: 0, identity: r.identity as number });
    for (const ip of [r.ipv4, r.ipv6] as string[]) eps.update(ip, { ifindex: r.hostIfindex, endpointId: id, mac, nodeMac: hostMac, flags: 0, identity: r.identity as number });
  }
  // As EndpointManager.setPolicyFlags: look every endpoint up, write the flags that changed.
  const setPolicyFlags = (flags: ReadonlyMap<number, number>): void => {
    for (const r of records) {
      const want = flags.get(r.id) ?? 0;
      const have = dp.config.lookup(r.hostIfindex);
      if (!have || have.endpointId !== r.id) continue;
      if (have.flags !== want) dp.config.update(r.hostIfindex, { ...have, flags: want });
      for (const ip of [r.ipv4, r.ipv6]) {
        if (!ip) continue;
        const info = eps.lookup(ip);
        if (info && info.flags !== want) eps.update(ip, { ...info, flags: want });
      }
    }
  };
  engine.bind({ records: () => records, setPolicyFlags });

  const policies = Math.ceil(cfg.rules / RULES_PER_POLICY);
  const docs = Array.from({ length: policies }, (_, k) => enginePolicy(k, apps, Math.min(RULES_PER_POLICY, cfg.rules - k * RULES_PER_POLICY)));
  const parsed = parsePolicyDocuments(docs.map((d) => JSON.stringify(d)).join('\n---\n'), 'bench');
  engine.repo.apply(parsed.policies);
  progress(`  engine: ${E} endpoint records, ${parsed.policies.length} policies with ${cfg.rules} rules stored`);

  await new Promise((r) => setImmediate(r));
  let t0 = process.hrtime.bigint();
  const cold = engine.sync();
  const coldMs = msSince(t0);
  const identities = new Set(records.map((r) => r.identity)).size;

  const recompute: number[] = [];
  const yieldNow = (): Promise<void> => new Promise((r) => setImmediate(r));
  for (let i = 0; i < cfg.repeats; i++) {
    await yieldNow();
    t0 = process.hrtime.bigint();
    const s = engine.sync();
    recompute.push(msSince(t0));
    // (ipcache entries of the node's own addresses may change under us: other processes add and remove addresses.)
    if (s.policyWritten + s.policyRemoved !== 0) throw new Error(`a sync without policy changes wrote ${JSON.stringify(s)}`);
  }

  const incremental: number[] = [];
  let written = 0;
  let removed = 0;
  const variants = [9000, 8000].map((port) => parsePolicyDocuments(JSON.stringify(enginePolicy(0, apps, Math.min(RULES_PER_POLICY, cfg.rules), port)), 'bench').policies);
  for (let i = 0; i < cfg.repeats; i++) {
    const v = variants[i % 2] as typeof variants[0];
    await yieldNow();
    t0 = process.hrtime.bigint();
    const a = engine.repo.apply(v);
    const s = engine.sync();
    incremental.push(msSince(t0));
    if (a.configured.length !== 1) throw new Error(`changing one policy configured ${a.configured.length}`);
    written = s.policyWritten;
    removed = s.policyRemoved;
  }

  const resolve: number[] = [];
  for (let i = 0; i < cfg.repeats; i++) {
    await yieldNow();
    t0 = process.hrtime.bigint();
    const prepared = prepare({ policies: engine.repo.list(), identities: engine.identityInfos() });
    for (const r of records) resolveEndpointPolicy(prepared, { endpointId: r.id, identity: r.identity as number, labels: engine.labelView(r.labels, r.namespace) });
    resolve.push(msSince(t0));
  }

  return {
    method: [
      `method: ${E} endpoint records (${apps} apps x ${Math.round(E / apps)} replicas, each its own identity), ${policies} CiliumNetworkPolicies of`,
      `${RULES_PER_POLICY} ingress rules (policy k selects app k, each rule allows one other app on one TCP port: 10 identities per rule),`,
      'flags written to lxc_config/endpoints as the endpoint manager does; wall time around engine.sync() (and repo.apply for the change)',
    ],
    endpoints: E,
    rules: cfg.rules,
    identities,
    policyEntries: cold.policyWritten,
    ipcacheEntries: cold.ipcacheWritten,
    coldMs,
    recomputeMs: spread(recompute),
    incrementalMs: spread(incremental),
    incrementalWritten: written,
    incrementalRemoved: removed,
    resolveMs: median(resolve),
  };
}

// ---------------------------------------------------------------------------

export interface EnforceConfig {
  endpoints: number;
  repeats: number;
}

export interface EnforceResult {
  method: string[];
  endpoints: number;
  delays: number[];
  delayMedian: number;
  delayMax: number;
  lastOkMedian: number;
  cliMedian: number;
  syncMedian: number;
  restoreMedian: number;
}

interface Probe { start: bigint; ok: boolean }

const PROBE_PORT = 5003;

function readProbes(path: string): Probe[] {
  const out: Probe[] = [];
  for (const line of readFileSync(path, 'utf8').split('\n')) {
    const m = /^(\d+) (OK|FAIL) \d+$/.exec(line);
    if (m) out.push({ start: BigInt(m[1] as string), ok: m[2] === 'OK' });
  }
  return out;
}

/** Waits until `pred` holds for the probes (polling the file), at most `timeoutMs`. */
async function waitProbes<T>(path: string, pred: (p: Probe[]) => T | undefined, timeoutMs: number, what: string): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = pred(readProbes(path));
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`probes: ${what} not seen in ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

function runCli(agent: TestAgent, args: string[]): { ms: number; started: bigint; returned: bigint } {
  const t0 = process.hrtime.bigint();
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', env: { ...process.env, WAGGLE_API_SOCKET: agent.apiSocket }, timeout: 60_000 });
  const returned = process.hrtime.bigint();
  if (r.status !== 0) throw new Error(`waggle ${args.join(' ')} exited ${r.status}: ${r.stderr}`);
  return { ms: Number(returned - t0) / 1e6, started: t0, returned };
}

/** `ms` of the agent's "policy synced" debug lines, in order. */
function syncTimes(log: string): number[] {
  const out: number[] = [];
  for (const line of log.split('\n')) {
    if (!line.includes('"policy synced"')) continue;
    try {
      const ms = (JSON.parse(line) as { ms?: unknown }).ms;
      if (typeof ms === 'number') out.push(ms);
    } catch {
      // not a whole JSON line
    }
  }
  return out;
}

export async function runEnforce(cfg: EnforceConfig, tool: Tool, cleanup: Cleanup, progress: (s: string) => void): Promise<EnforceResult> {
  const dir = mkdtempSync(join(tmpdir(), 'waggle-bench-enforce-'));
  cleanup.add(() => rmSync(dir, { recursive: true, force: true }), 'remove the enforce files');
  const agent = await startAgent({ nodeName: `benchpol-${process.pid}`, extraArgs: ['--log-level', 'debug'] }, cleanup, 'remove the enforce agent');
  const created: { name: string; ipv4: string; netns: string }[] = [];
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < cfg.endpoints; i++) {
    const app = i === 0 ? 'server' : i === 1 ? 'client' : `filler-${i % 10}`;
    const name = `pol-enf-${i}`;
    const ep = await apiOk(agent.apiSocket, 'POST', '/v1/endpoints', { name, namespace: 'bench', labels: { app } }) as { ipv4?: string; netnsPath: string };
    if (!ep.ipv4) throw new Error(`endpoint ${name} has no IPv4 address`);
    created.push({ name, ipv4: ep.ipv4, netns: basename(ep.netnsPath) });
  }
  progress(`  enforce: ${cfg.endpoints} endpoints created in ${(msSince(t0) / 1000).toFixed(1)} s`);
  const [server, client] = created as [typeof created[0], typeof created[0]];
  checkAddrs(server.ipv4, client.ipv4);

  // Policy in place before measuring: the server admits the client on the probe port only.
  const allow = join(dir, 'allow.yaml');
  writeFileSync(allow, [
    'apiVersion: cilium.io/v2', 'kind: CiliumNetworkPolicy', 'metadata: {name: server-allow, namespace: bench}',
    'spec:', '  endpointSelector: {matchLabels: {app: server}}', '  ingress:',
    '  - fromEndpoints: [{matchLabels: {app: client}}]', `    toPorts: [{ports: [{port: "${PROBE_PORT}", protocol: TCP}]}]`, '',
  ].join('\n'));
  const deny = join(dir, 'deny.yaml');
  writeFileSync(deny, [
    'apiVersion: cilium.io/v2', 'kind: CiliumNetworkPolicy', 'metadata: {name: client-deny, namespace: bench}',
    'spec:', '  endpointSelector: {matchLabels: {app: server}}', '  ingressDeny:',
    '  - fromEndpoints: [{matchLabels: {app: client}}]', '',
  ].join('\n'));
  runCli(agent, ['apply', '-f', allow]);

  const srv = spawnIn(server.netns, [tool.path, 'rr-server', server.ipv4, String(PROBE_PORT)]);
  cleanup.add(() => stopChild(srv), 'stop the probe server');
  await settle(srv, 'probe server');
  const probeFile = join(dir, 'probes.txt');
  const fd = openSync(probeFile, 'w');
  const probe = spawnIn(client.netns, [tool.path, 'probe', server.ipv4, String(PROBE_PORT), '50', '1000'], { stdout: fd });
  closeSync(fd);
  cleanup.add(() => stopChild(probe), 'stop the prober');
  await settle(probe, 'prober');

  const steady = (n: number, ok: boolean, after: bigint) => (ps: Probe[]): true | undefined => {
    const tail = ps.filter((p) => p.start > after).slice(-n);
    return tail.length === n && tail.every((p) => p.ok === ok) ? true : undefined;
  };
  await waitProbes(probeFile, steady(20, true, 0n), 10_000, '20 allowed probes in a row');

  const delays: number[] = [];
  const lastOks: number[] = [];
  const clis: number[] = [];
  const restores: number[] = [];
  const syncsBefore = syncTimes(agent.log).length;
  for (let rep = 0; rep < cfg.repeats; rep++) {
    const applied = runCli(agent, ['apply', '-f', deny]);
    clis.push(applied.ms);
    const t = applied.returned;
    const firstFail = await waitProbes(probeFile, (ps) => {
      // The first failed probe that started after the CLI did (every probe before passed).
      const i = ps.findIndex((p) => !p.ok && p.start > applied.started);
      return i >= 0 ? { fail: ps[i] as Probe, lastOk: [...ps.slice(0, i)].reverse().find((p) => p.ok) } : undefined;
    }, 10_000, 'a failed probe after the deny');
    delays.push(Number(firstFail.fail.start - t) / 1e6);
    if (firstFail.lastOk) lastOks.push(Number(firstFail.lastOk.start - t) / 1e6);
    await waitProbes(probeFile, steady(3, false, firstFail.fail.start - 1n), 10_000, 'three failed probes in a row after the deny');

    const deleted = runCli(agent, ['delete', '-f', deny]);
    const firstOk = await waitProbes(probeFile, (ps) => ps.find((p) => p.ok && p.start > firstFail.fail.start), 10_000, 'an allowed probe after deleting the deny');
    restores.push(Number(firstOk.start - deleted.returned) / 1e6);
    await waitProbes(probeFile, steady(20, true, firstOk.start - 1n), 10_000, '20 allowed probes in a row after deleting the deny');
    progress(`  enforce: repeat ${rep + 1}/${cfg.repeats}: first failed probe ${(delays.at(-1) as number).toFixed(1)} ms after apply returned`);
  }
  const syncs = syncTimes(agent.log).slice(syncsBefore);
  return {
    method: [
      `method: real \`waggle agent\` (TestAgent) with ${cfg.endpoints} endpoints (a server, a client, ${cfg.endpoints - 2} fillers) and a policy`,
      `admitting the client to the server on TCP ${PROBE_PORT}; the client runs TCP connect probes to the server (50 ms timeout,`,
      '1 ms between probes, start times from CLOCK_MONOTONIC into a file); `waggle apply -f` (the CLI, spawned) adds an ingressDeny',
      'of the client; delay = start of the first failed probe - the moment the CLI exited (negative: enforced before it exited,',
      'the agent syncs before it answers); then `waggle delete -f` restores and the probes must pass again before the next repeat',
    ],
    endpoints: cfg.endpoints,
    delays,
    delayMedian: median(delays),
    delayMax: Math.max(...delays),
    lastOkMedian: median(lastOks),
    cliMedian: median(clis),
    syncMedian: median(syncs),
    restoreMedian: median(restores),
  };
}
