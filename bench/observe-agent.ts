/**
 * Parts 3 and 4 of bench/observe.ts, against a real `waggle agent` process
 * (TestAgent: temp state dir, private bpffs, API socket, pod CIDR; removed
 * with `waggle agent --cleanup` at the end, also on failure or Ctrl-C) with
 * two endpoints `a` and `b` made by `waggle endpoint create`.
 *
 * 3. Agent CPU at 10,000 flows/s: a UDP sender inside a's namespace
 *    (observe-traffic.ts via nsenter) sends FLOOD_RATE packets/s to b, each
 *    to the next of FLOOD_PORTS destination ports, so each packet is one
 *    traced flow (a new connection at first, later one whose last trace is
 *    over the 1 s trace interval old; b's ICMP port-unreachable answers are
 *    rate-limited by b's kernel and aggregated by the datapath). Windows of
 *    LOAD_SECONDS with traffic alternate with IDLE_SECONDS without, so both
 *    see the same machine speed; per window: the agent's CPU time
 *    (utime + stime of /proc/PID/stat, all threads) and the flows it stored
 *    (`flows.flowsSeen` of GET /v1/status, what `waggle status -o json`
 *    prints).
 * 4. `observe --follow` latency: `waggle observe --follow -o json
 *    --api-socket S` as a child; single UDP packets from a to b, each to its
 *    own destination port, SPACING_MS apart; latency = the time the child's
 *    stdout line naming that port is read here − the time the sender took
 *    just before sending (both CLOCK_MONOTONIC). No other traffic meanwhile.
 *    PROBES spans over 30 s so the window always holds one of the agent's
 *    conntrack GC passes (every --ct-gc-interval, 30 s; synchronous on the
 *    agent's main thread, over the ~20,000 entries part 3 left): the tail
 *    latency includes it, and the report says when the slowest probe was sent.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { CLI, apiOk, TestAgent } from '../test/helpers/agent.js';
import { Cleanup, listNetns } from '../test/helpers/netns.js';
import { median } from './lib.js';

const HERE = dirname(fileURLToPath(import.meta.url));
const TRAFFIC = join(HERE, 'observe-traffic.js');

export const FLOOD_RATE = 10_000;
const FLOOD_PORT_BASE = 20_000;
const FLOOD_PORTS = 20_000;
export const LOAD_SECONDS = 4;
export const IDLE_SECONDS = 3;
export const WINDOWS = 3;
const PROBE_BASE = 41_000;
/** 1,600 probes 20 ms apart take over 32 s: the window always includes a conntrack GC pass of the agent (every 30 s by default). */
export const PROBES = 1600;
export const SPACING_MS = 20;

export interface AgentFigures {
  /** Agent CPU, % of one core, per window with traffic (median) and without. */
  cpuLoadPct: number;
  cpuIdlePct: number;
  cpuLoadPctSamples: number[];
  cpuIdlePctSamples: number[];
  /** Flows the agent stored per second in the windows with traffic (median), and packets sent per second. */
  flowsPerSec: number;
  packetsPerSec: number;
  flowsPerSecSamples: number[];
  /** Flows stored over the load windows / packets sent in them. */
  flowsPerPacket: number;
  /** Agent CPU per flow, µs ((load − idle) CPU / flows). */
  cpuUsPerFlow: number;
  lostRingBuffer: number;
  rssMiB: number;
  /** Context switches of the agent's threads per second, with traffic and without (medians): about its wake-ups. */
  ctxSwitchesPerSecLoad: number;
  ctxSwitchesPerSecIdle: number;
  /** How busy the whole machine (2 cores, every process) was during the load windows and during the probes, %. */
  machineBusyPctLoad: number;
  machineBusyPctProbes: number;
  /** Follow latency, ms. */
  followMedianMs: number;
  followP99Ms: number;
  followMinMs: number;
  followMaxMs: number;
  followSamples: number;
  followMissing: number;
  /** Probes slower than 20 ms (one probe spacing). */
  followOver20ms: number;
  /** When the slowest probe was sent, seconds after the agent started. */
  followWorstAtSec: number;
  /** Seconds the probe phase started and ended after the agent started. */
  followWindowSec: [number, number];
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

function percentile(xs: readonly number[], p: number): number {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.ceil((p / 100) * s.length) - 1)] as number;
}

const CLK_TCK = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;

/** utime + stime of process `pid` (all its threads), seconds. */
function cpuSeconds(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(f[11]) + Number(f[12])) / CLK_TCK;
}

/** Context switches (voluntary + involuntary) of all threads of `pid`. */
function ctxSwitches(pid: number): number {
  let n = 0;
  for (const t of readdirSync(`/proc/${pid}/task`)) {
    try {
      const st = readFileSync(`/proc/${pid}/task/${t}/status`, 'utf8');
      for (const m of st.matchAll(/^(?:non)?voluntary_ctxt_switches:\s+(\d+)/gm)) n += Number(m[1]);
    } catch { /* thread gone */ }
  }
  return n;
}

/** Busy and total jiffies of the whole machine (/proc/stat), for how busy it was meanwhile (other processes included). */
function machineJiffies(): { busy: number; total: number } {
  const f = (readFileSync('/proc/stat', 'utf8').split('\n')[0] as string).trim().split(/\s+/).slice(1).map(Number);
  const total = f.reduce((a, x) => a + x, 0);
  const idle = (f[3] ?? 0) + (f[4] ?? 0);
  return { busy: total - idle, total };
}

function rssMiB(pid: number): number {
  const m = /^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) / 1024 : NaN;
}

/** A line-oriented child: send a command, await the first answer line starting with a prefix. */
class LineChild {
  private waiters: { prefix: string; resolve: (line: string) => void }[] = [];
  readonly lines: string[] = [];
  stderr = '';
  constructor(readonly child: ChildProcess, private readonly what: string) {
    child.stdin?.on('error', () => undefined); // EPIPE after the child died: reported by the waits below
    child.stderr?.on('data', (c: Buffer) => { this.stderr += c.toString(); });
    createInterface({ input: child.stdout! }).on('line', (line) => {
      const i = this.waiters.findIndex((w) => line.startsWith(w.prefix));
      if (i >= 0) this.waiters.splice(i, 1)[0]!.resolve(line);
      else this.lines.push(line);
    });
  }
  wait(prefix: string, timeoutMs = 10_000): Promise<string> {
    const held = this.lines.findIndex((l) => l.startsWith(prefix));
    if (held >= 0) return Promise.resolve(this.lines.splice(held, 1)[0]!);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`${this.what}: no "${prefix}" answer in ${timeoutMs} ms (exit ${this.child.exitCode}; stderr: ${this.stderr.trim()})`)), timeoutMs);
      this.waiters.push({ prefix, resolve: (l) => { clearTimeout(timer); resolve(l); } });
    });
  }
  send(line: string, prefix: string): Promise<string> {
    const p = this.wait(prefix);
    this.child.stdin?.write(`${line}\n`);
    return p;
  }
}

/** Kills `child` (by its PID, SIGTERM then SIGKILL) and waits for it to exit. */
async function stopChild(child: ChildProcess | undefined): Promise<void> {
  if (!child || child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  child.kill('SIGTERM');
  const t = setTimeout(() => child.kill('SIGKILL'), 3000);
  await exited;
  clearTimeout(t);
}

interface EndpointJson { name: string; ipv4?: string; netnsPath: string }

export async function measureAgent(log: (line: string) => void): Promise<AgentFigures> {
  if (process.getuid?.() !== 0) throw new Error('bench observe (agent) needs root');
  const cleanup = new Cleanup();
  const netnsOurs: string[] = [];
  const agent = new TestAgent({ nodeName: `bench-obs-${process.pid}` });
  cleanup.add(() => agent.remove(), 'agent (stop + waggle agent --cleanup)');
  let sender: ChildProcess | undefined;
  let observer: ChildProcess | undefined;
  cleanup.add(() => stopChild(sender), 'sender');
  cleanup.add(() => stopChild(observer), 'observe --follow');
  let interrupted = false;
  const onSignal = (): void => {
    if (interrupted) return;
    interrupted = true;
    process.stderr.write('bench observe: interrupted, cleaning up …\n');
    void cleanup.run().finally(() => process.exit(130));
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  try {
    await agent.start();
    const agentStart = process.hrtime.bigint();
    const pid = agent.pid;
    if (pid === undefined) throw new Error('agent has no PID');
    const sock = agent.apiSocket;
    // Endpoint names are also the names of the namespaces the agent creates: unique per run.
    const make = (app: string): EndpointJson => JSON.parse(agent.ok(['endpoint', 'create', `obs-${process.pid}-${app}`, '--labels', `app=${app}`, '-o', 'json'])) as EndpointJson;
    const a = make('a');
    netnsOurs.push(a.netnsPath);
    const b = make('b');
    netnsOurs.push(b.netnsPath);
    if (!b.ipv4) throw new Error('endpoint b has no IPv4 address');
    const status = async (): Promise<{ flowsSeen: number; lostRingBuffer: number }> =>
      ((await apiOk(sock, 'GET', '/v1/status')) as { flows: { flowsSeen: number; lostRingBuffer: number } }).flows;

    sender = spawn('nsenter', [`--net=${a.netnsPath}`, '--', process.execPath, TRAFFIC, b.ipv4, String(FLOOD_PORT_BASE), String(FLOOD_PORTS)], { stdio: ['pipe', 'pipe', 'pipe'] });
    const tx = new LineChild(sender, 'sender');
    await tx.wait('ready');
    const sentNow = async (): Promise<number> => Number((await tx.send('stat', 'stat')).split(' ')[2]);

    // ---- 3. CPU at FLOOD_RATE flows/s -----------------------------------
    log(`  agent: ${FLOOD_RATE} packets/s from a to b, ${WINDOWS} windows of ${LOAD_SECONDS} s with and ${IDLE_SECONDS} s without …`);
    const flows0 = (await status()).flowsSeen;
    await tx.send(`rate ${FLOOD_RATE}`, 'rate');
    await sleep(2000); // warm-up: ARP, JIT, first connections
    if ((await status()).flowsSeen - flows0 < FLOOD_RATE / 2) throw new Error('the agent stores (almost) no flows from the flood');
    const lost0 = (await status()).lostRingBuffer;
    const load: Window[] = [];
    const idle: Window[] = [];
    type Window = { cpu: number; flows: number; packets: number; sec: number; switches: number; busy: number };
    const window = async (seconds: number): Promise<Window> => {
      const [f0, p0] = [(await status()).flowsSeen, await sentNow()];
      const c0 = cpuSeconds(pid);
      const s0 = ctxSwitches(pid);
      const m0 = machineJiffies();
      const t0 = process.hrtime.bigint();
      await sleep(seconds * 1000);
      const c1 = cpuSeconds(pid);
      const s1 = ctxSwitches(pid);
      const m1 = machineJiffies();
      const sec = Number(process.hrtime.bigint() - t0) / 1e9;
      const [f1, p1] = [(await status()).flowsSeen, await sentNow()];
      return { cpu: (c1 - c0) / sec, flows: f1 - f0, packets: p1 - p0, sec, switches: (s1 - s0) / sec, busy: (m1.busy - m0.busy) / Math.max(m1.total - m0.total, 1) };
    };
    for (let w = 0; w < WINDOWS; w++) {
      if (w > 0) {
        await tx.send(`rate ${FLOOD_RATE}`, 'rate');
        await sleep(500);
      }
      load.push(await window(LOAD_SECONDS));
      await tx.send('rate 0', 'rate');
      await sleep(500);
      idle.push(await window(IDLE_SECONDS));
    }
    const lostRingBuffer = (await status()).lostRingBuffer - lost0;
    const rss = rssMiB(pid);

    // ---- 4. observe --follow latency --------------------------------------
    log(`  follow: ${PROBES} single packets ${SPACING_MS} ms apart through observe --follow -o json …`);
    observer = spawn(process.execPath, [CLI, 'observe', '--follow', '-o', 'json', '--api-socket', sock], { stdio: ['ignore', 'pipe', 'pipe'] });
    let observeErr = '';
    observer.stderr?.on('data', (c: Buffer) => { observeErr += c.toString(); });
    const arrivals = new Map<number, bigint>();
    createInterface({ input: observer.stdout! }).on('line', (line) => {
      const now = process.hrtime.bigint();
      let r: { flow?: { IP?: { destination?: string }; l4?: { UDP?: { destination_port?: number } } } };
      try { r = JSON.parse(line) as typeof r; } catch { return; }
      const port = r.flow?.l4?.UDP?.destination_port;
      if (port !== undefined && r.flow?.IP?.destination === b.ipv4 && !arrivals.has(port)) arrivals.set(port, now);
    });
    // Connected once a probe comes back.
    let connected = false;
    for (let i = 0; i < 100 && !connected; i++) {
      await tx.send(`probe ${PROBE_BASE - 100 + i}`, 'probe');
      await sleep(100);
      connected = arrivals.has(PROBE_BASE - 100 + i) || [...arrivals.keys()].some((p) => p >= PROBE_BASE - 100 && p < PROBE_BASE);
      if (observer.exitCode !== null) throw new Error(`observe --follow exited ${observer.exitCode}: ${observeErr}`);
    }
    if (!connected) throw new Error(`observe --follow printed none of the warm-up probes in 10 s: ${observeErr}`);
    const sentAt = new Map<number, bigint>();
    const probeJiffies = machineJiffies();
    const probeStartSec = Number(process.hrtime.bigint() - agentStart) / 1e9;
    for (let i = 0; i < PROBES; i++) {
      const port = PROBE_BASE + i;
      const answer = await tx.send(`probe ${port}`, `probe ${port} `);
      sentAt.set(port, BigInt(answer.split(' ')[2] as string));
      await sleep(SPACING_MS);
    }
    const probeJiffiesEnd = machineJiffies();
    const probeEndSec = Number(process.hrtime.bigint() - agentStart) / 1e9;
    for (let waited = 0; waited < 3000 && [...sentAt.keys()].some((p) => !arrivals.has(p)); waited += 100) await sleep(100);
    const latencies: number[] = [];
    let worst = { ms: -1, atSec: NaN };
    for (const [port, t] of sentAt) {
      const got = arrivals.get(port);
      if (got === undefined) continue;
      const ms = Number(got - t) / 1e6;
      latencies.push(ms);
      if (ms > worst.ms) worst = { ms, atSec: Number(t - agentStart) / 1e9 };
      if (process.env.OBSERVE_DEBUG && ms > 20) process.stderr.write(`probe ${port}: ${ms.toFixed(1)} ms, sent ${(Number(t - agentStart) / 1e9).toFixed(2)} s after the agent started\n`);
    }
    if (process.env.OBSERVE_DEBUG) process.stderr.write(`latencies in order: ${latencies.map((x) => x.toFixed(1)).join(' ')}\n`);
    if (latencies.length === 0) throw new Error('no probe came back through observe --follow');

    const cpuLoad = load.map((w) => w.cpu * 100);
    const flowsPerSec = load.map((w) => w.flows / w.sec);
    const totalFlows = load.reduce((s, w) => s + w.flows, 0);
    const totalPackets = load.reduce((s, w) => s + w.packets, 0);
    const cpuIdle = idle.map((w) => w.cpu * 100);
    const netCpuPerSec = (median(cpuLoad) - median(cpuIdle)) / 100;
    return {
      cpuLoadPct: median(cpuLoad),
      cpuIdlePct: median(cpuIdle),
      cpuLoadPctSamples: cpuLoad,
      cpuIdlePctSamples: cpuIdle,
      flowsPerSec: median(flowsPerSec),
      packetsPerSec: median(load.map((w) => w.packets / w.sec)),
      flowsPerSecSamples: flowsPerSec,
      flowsPerPacket: totalFlows / Math.max(totalPackets, 1),
      cpuUsPerFlow: (netCpuPerSec / median(flowsPerSec)) * 1e6,
      lostRingBuffer,
      rssMiB: rss,
      ctxSwitchesPerSecLoad: median(load.map((w) => w.switches)),
      ctxSwitchesPerSecIdle: median(idle.map((w) => w.switches)),
      machineBusyPctLoad: median(load.map((w) => w.busy * 100)),
      machineBusyPctProbes: ((probeJiffiesEnd.busy - probeJiffies.busy) / Math.max(probeJiffiesEnd.total - probeJiffies.total, 1)) * 100,
      followMedianMs: median(latencies),
      followP99Ms: percentile(latencies, 99),
      followMinMs: Math.min(...latencies),
      followMaxMs: Math.max(...latencies),
      followSamples: latencies.length,
      followMissing: PROBES - latencies.length,
      followOver20ms: latencies.filter((x) => x > 20).length,
      followWorstAtSec: worst.atSec,
      followWindowSec: [probeStartSec, probeEndSec],
    };
  } finally {
    if (sender && sender.exitCode === null) sender.stdin?.end();
    const errors = await cleanup.run();
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    const left = netnsOurs.filter((path) => listNetns().some((n) => path.endsWith(`/${n}`)));
    if (left.length) process.stderr.write(`bench observe: network namespaces left behind: ${left.join(', ')}\n`);
    if (errors.length) process.stderr.write(`bench observe: ${errors.length} cleanup step(s) failed\n`);
  }
}
