/**
 * A fast reachability prober for policy tests.
 *
 * One long-lived server per network namespace listens on every test port (TCP:
 * sends one byte on accept, then echoes; UDP: echoes each datagram). One
 * prober process per source namespace then tries every target at once (TCP
 * connect + first byte, UDP echo, ICMP echo through `ping`) with a short
 * timeout and prints one JSON object of outcomes. A long-lived "stream"
 * client keeps a TCP connection exchanging a byte every interval, for
 * revocation tests.
 *
 * Processes run in a namespace through `nsenter --net=PATH` (or in the node's
 * namespace without a path). Every function that starts a process that
 * outlives it returns the ChildProcess: kill it with `stop()` from traffic.ts
 * (register that with a Cleanup right away). Destinations are checked: only
 * the tests' pod ranges (10.199.0.0/16, fd99::/16) and the benchmarking test
 * nets (198.18.0.0/15, 2001:2::/48) may be probed.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { BlockList, isIPv4, isIPv6 } from 'node:net';
import { join } from 'node:path';
import { childEnv, stop } from './traffic.js';

const ALLOWED = new BlockList();
ALLOWED.addSubnet('10.199.0.0', 16, 'ipv4');
ALLOWED.addSubnet('198.18.0.0', 15, 'ipv4');
ALLOWED.addSubnet('fd99::', 16, 'ipv6');
ALLOWED.addSubnet('2001:2::', 48, 'ipv6');

/** Throws unless `addr` is an IP address in the ranges probes may use. */
export function checkProbeAddress(addr: string): 4 | 6 {
  const family = isIPv4(addr) ? 4 : isIPv6(addr) ? 6 : undefined;
  if (family === undefined || !ALLOWED.check(addr, family === 4 ? 'ipv4' : 'ipv6')) {
    throw new Error(`refusing to probe ${addr}: only 10.199.0.0/16, fd99::/16, 198.18.0.0/15 and 2001:2::/48 are test addresses`);
  }
  return family;
}

const SERVER_JS = `'use strict';
const net = require('net');
const dgram = require('dgram');
const p = JSON.parse(process.argv[2]);
const fail = (e) => { console.error(e.message); process.exit(2); };
let ready = 0;
const total = p.bind.length * (p.tcp.length + p.udp.length);
const up = () => { if (++ready === total) console.log('listening'); };
for (const host of p.bind) {
  for (const port of p.tcp) {
    const srv = net.createServer((s) => {
      s.on('error', () => {});
      s.write('x');
      s.on('data', (d) => s.write(d));
    });
    srv.on('error', fail);
    srv.listen({ host, port, ipv6Only: false }, up);
  }
  for (const port of p.udp) {
    const s = dgram.createSocket({ type: host.includes(':') ? 'udp6' : 'udp4', ipv6Only: false });
    s.on('error', fail);
    s.on('message', (m, r) => s.send(m, r.port, r.address));
    s.bind({ port, address: host }, up);
  }
}
`;

const PROBER_JS = `'use strict';
const net = require('net');
const dgram = require('dgram');
const { spawn } = require('child_process');
const p = JSON.parse(process.argv[2]);
const out = {};
let pending = p.targets.length;
const finish = () => { process.stdout.write(JSON.stringify(out) + '\\n', () => process.exit(0)); };
const done = (id, outcome) => {
  if (id in out) return;
  out[id] = outcome;
  if (--pending === 0) finish();
};
if (pending === 0) finish();
// A timer that fires after the process was not scheduled for a while must not win against
// I/O that completed meanwhile: decide in the check phase, after pending I/O was handled.
const later = (ms, fn) => setTimeout(() => setImmediate(fn), ms);
for (const t of p.targets) {
  if (t.proto === 'tcp') {
    // Allowed: the handshake completes within the timeout (the kernels answer, whatever the
    // processes do) and the server's greeting byte follows; the greeting may take longer
    // on a busy machine. Denied: no handshake (the datapath drops silently).
    const s = net.connect({ host: t.addr, port: t.port, ...(t.bind ? { localAddress: t.bind } : {}) });
    let connected = false;
    let greet;
    const timer = later(p.timeoutMs, () => { if (!connected) { s.destroy(); done(t.id, 'timeout'); } });
    s.once('connect', () => {
      connected = true;
      clearTimeout(timer);
      greet = later(p.greetingMs, () => { s.destroy(); done(t.id, 'error: connected, but no greeting from the server in ' + p.greetingMs + ' ms'); });
    });
    s.once('data', () => { clearTimeout(timer); clearTimeout(greet); s.destroy(); done(t.id, 'ok'); });
    s.on('error', (e) => { clearTimeout(timer); clearTimeout(greet); s.destroy(); done(t.id, 'error: ' + (e.code || e.message)); });
  } else if (t.proto === 'udp') {
    const s = dgram.createSocket(t.addr.includes(':') ? 'udp6' : 'udp4');
    const payload = Buffer.from('probe ' + t.id);
    let resend;
    let finished = false;
    const end = (outcome) => { if (finished) return; finished = true; clearInterval(resend); clearTimeout(timer); try { s.close(); } catch {} done(t.id, outcome); };
    const timer = later(p.timeoutMs, () => end('timeout'));
    s.on('message', (m) => { if (m.equals(payload)) end('ok'); });
    s.on('error', (e) => end('error: ' + (e.code || e.message)));
    s.bind({ port: 0, ...(t.bind ? { address: t.bind } : {}) }, () => {
      const send = () => s.send(payload, t.port, t.addr, () => {});
      send();
      resend = setInterval(send, Math.max(100, Math.floor(p.timeoutMs / 3)));
    });
  } else {
    const args = ['-' + (t.addr.includes(':') ? 6 : 4), '-n', '-q', '-c', '1', '-W', String(p.timeoutMs / 1000), ...(t.bind ? ['-I', t.bind] : []), t.addr];
    const c = spawn('ping', args, { stdio: ['ignore', 'ignore', 'pipe'] });
    let err = '';
    c.stderr.on('data', (d) => { err += d; });
    c.on('error', (e) => done(t.id, 'error: ' + e.message));
    c.on('close', (code) => done(t.id, code === 0 ? 'ok' : code === 1 ? 'timeout' : 'error: ping exited ' + code + ': ' + err.trim()));
  }
}
`;

const STREAM_JS = `'use strict';
const net = require('net');
const p = JSON.parse(process.argv[2]);
let received = 0;
let sent = 0;
let greeted = false;
const say = (o) => process.stdout.write(JSON.stringify(o) + '\\n');
const s = net.connect({ host: p.addr, port: p.port });
s.setNoDelay(true);
s.on('data', (d) => {
  if (!greeted) { greeted = true; d = d.subarray(1); say({ event: 'connected', localPort: s.localPort }); }
  received += d.length;
  if (d.length) say({ event: 'echo', received });
});
s.on('error', (e) => say({ event: 'error', error: e.code || e.message }));
s.on('close', () => say({ event: 'closed' }));
setInterval(() => {
  if (!greeted || s.destroyed) return;
  sent++;
  const at = Date.now();
  s.write('.');
  say({ event: 'sent', sent, at });
}, p.intervalMs);
`;

/** One probe: `id` names it in the result. ICMP probes send one echo request (`port` is ignored). */
export interface ProbeTarget {
  id: string;
  proto: 'tcp' | 'udp' | 'icmp';
  addr: string;
  port: number;
  /** Local source address to bind (for namespaces with several addresses). */
  bind?: string;
}

/** `ok` (answered), `timeout` (no answer: dropped), or `error: …` (anything else, e.g. refused). */
export type ProbeOutcome = 'ok' | 'timeout' | `error: ${string}`;

/** Where the scripts are; create once per test file with {@link writeProbeScripts}. */
export interface ProbeScripts {
  server: string;
  prober: string;
  stream: string;
}

/** Writes the server, prober and stream scripts into `dir` (a temp directory the caller owns). */
export function writeProbeScripts(dir: string): ProbeScripts {
  const scripts = { server: join(dir, 'server.cjs'), prober: join(dir, 'prober.cjs'), stream: join(dir, 'stream.cjs') };
  writeFileSync(scripts.server, SERVER_JS);
  writeFileSync(scripts.prober, PROBER_JS);
  writeFileSync(scripts.stream, STREAM_JS);
  return scripts;
}

/** Spawns `node SCRIPT JSON(params)` in the namespace at `netnsPath` (the node's own namespace when undefined). */
function spawnNode(netnsPath: string | undefined, script: string, params: object): ChildProcess {
  const argv = [process.execPath, script, JSON.stringify(params)];
  const [cmd, ...args] = netnsPath ? ['nsenter', `--net=${netnsPath}`, ...argv] : argv;
  return spawn(cmd as string, args, { stdio: ['ignore', 'pipe', 'pipe'], env: childEnv() });
}

export interface ServerOptions {
  /** Addresses to listen on (`::` = every address of both families). */
  bind: string[];
  tcp: number[];
  udp: number[];
}

/**
 * Starts the probe server in a namespace and resolves once every socket
 * listens. The caller stops it (by PID, with `stop()`).
 */
export async function startProbeServer(scripts: ProbeScripts, netnsPath: string | undefined, opts: ServerOptions): Promise<ChildProcess> {
  const child = spawnNode(netnsPath, scripts.server, opts);
  try {
    await new Promise<void>((resolve, reject) => {
      let stdout = '';
      let stderr = '';
      const timer = setTimeout(() => reject(new Error(`probe server in ${netnsPath ?? 'the node namespace'} not listening after 10 s: ${stderr}`)), 10_000);
      child.stdout?.setEncoding('utf8').on('data', (d: string) => {
        stdout += d;
        if (stdout.includes('listening')) {
          clearTimeout(timer);
          resolve();
        }
      });
      child.stderr?.setEncoding('utf8').on('data', (d: string) => { stderr += d; });
      child.once('error', (err) => { clearTimeout(timer); reject(err); });
      child.once('exit', (code) => { clearTimeout(timer); reject(new Error(`probe server in ${netnsPath ?? 'the node namespace'} exited (${code}): ${stderr}`)); });
    });
  } catch (err) {
    await stop(child);
    throw err;
  }
  return child;
}

/** How long a TCP probe waits for the server's greeting once the handshake completed. */
const GREETING_MS = 5_000;

/**
 * Runs one prober in the namespace at `netnsPath` against every target at
 * once; resolves to the outcome of each target by id. Each probe waits
 * `timeoutMs` for an answer (TCP: the handshake; then up to 5 s for the
 * server's greeting); the process is killed if it runs 5 s longer than that.
 */
export async function probe(scripts: ProbeScripts, netnsPath: string | undefined, targets: ProbeTarget[], timeoutMs: number): Promise<Record<string, ProbeOutcome>> {
  for (const t of targets) {
    checkProbeAddress(t.addr);
    if (t.bind) checkProbeAddress(t.bind);
  }
  const child = spawnNode(netnsPath, scripts.prober, { targets, timeoutMs, greetingMs: GREETING_MS });
  try {
    const { code, stdout, stderr } = await new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve, reject) => {
      let stdout = '';
      let stderr = '';
      const timer = setTimeout(() => child.kill('SIGKILL'), Math.max(timeoutMs, GREETING_MS) + 5_000);
      child.stdout?.setEncoding('utf8').on('data', (d: string) => { stdout += d; });
      child.stderr?.setEncoding('utf8').on('data', (d: string) => { stderr += d; });
      child.once('error', (err) => { clearTimeout(timer); reject(err); });
      child.once('close', (c) => { clearTimeout(timer); resolve({ code: c, stdout, stderr }); });
    });
    try {
      return JSON.parse(stdout) as Record<string, ProbeOutcome>;
    } catch {
      throw new Error(`prober in ${netnsPath ?? 'the node namespace'} gave no result (exit ${code}): ${stdout}${stderr}`);
    }
  } finally {
    await stop(child);
  }
}

/** A long-lived TCP connection sending one byte every interval and counting the echoes. */
export interface Stream {
  readonly child: ChildProcess;
  /** Echoed bytes so far. */
  readonly received: number;
  /**
   * How many of the bytes written after `ms` (wall-clock ms since the epoch, taken by the
   * client as it wrote them) came back: bytes come back in order, so the n-th echoed byte
   * is the n-th written one. Unlike arrival times, write times do not depend on when a
   * busy machine gets round to reading.
   */
  echoedWrittenAfter(ms: number): number;
  /** Bytes written so far. */
  readonly sent: number;
  /** Whether the connection was established (the server's greeting arrived). */
  readonly connected: boolean;
  /** The client's port (once connected). */
  readonly localPort: number;
  /** Errors the client reported (e.g. ETIMEDOUT), in order. */
  readonly errors: string[];
  /** Resolves once `received` reaches `n`; rejects after `timeoutMs`. */
  waitForEchoes(n: number, timeoutMs: number): Promise<void>;
}

/**
 * Opens a stream from the namespace at `netnsPath` to `addr`:`port` (a probe
 * server) and resolves once connected. The caller stops it with `stop(stream.child)`.
 */
export async function startStream(scripts: ProbeScripts, netnsPath: string | undefined, addr: string, port: number, intervalMs = 100): Promise<Stream> {
  checkProbeAddress(addr);
  const child = spawnNode(netnsPath, scripts.stream, { addr, port, intervalMs });
  let received = 0;
  let sent = 0;
  let connected = false;
  let localPort = 0;
  const writtenAt: number[] = [];
  const errors: string[] = [];
  const waiters: (() => void)[] = [];
  let buf = '';
  child.stdout?.setEncoding('utf8').on('data', (d: string) => {
    buf += d;
    let nl: number;
    while ((nl = buf.indexOf('\n')) >= 0) {
      const ev = JSON.parse(buf.slice(0, nl)) as { event: string; received?: number; sent?: number; error?: string; localPort?: number; at?: number };
      buf = buf.slice(nl + 1);
      if (ev.event === 'connected') {
        connected = true;
        localPort = ev.localPort ?? 0;
      }
      if (ev.event === 'echo') received = ev.received ?? received;
      if (ev.event === 'sent') {
        sent = ev.sent ?? sent;
        writtenAt.push(ev.at ?? 0);
      }
      if (ev.event === 'error') errors.push(ev.error ?? '?');
      for (const w of waiters.splice(0)) w();
    }
  });
  const stream: Stream = {
    child,
    get received() { return received; },
    echoedWrittenAfter: (ms) => writtenAt.slice(0, received).filter((at) => at > ms).length,
    get sent() { return sent; },
    get connected() { return connected; },
    get localPort() { return localPort; },
    errors,
    waitForEchoes: (n, timeoutMs) => new Promise((resolve, reject) => {
      const deadline = setTimeout(() => reject(new Error(`stream to ${addr}:${port}: ${received} echoes after ${timeoutMs} ms, wanted ${n} (errors: ${errors.join(', ') || 'none'})`)), timeoutMs);
      const check = (): void => {
        if (received >= n) {
          clearTimeout(deadline);
          resolve();
        } else {
          waiters.push(check);
        }
      };
      check();
    }),
  };
  try {
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`stream to ${addr}:${port} not connected after 5 s (errors: ${errors.join(', ') || 'none'})`)), 5_000);
      const check = (): void => {
        if (connected) {
          clearTimeout(timer);
          resolve();
        } else {
          waiters.push(check);
        }
      };
      child.once('exit', (code) => { clearTimeout(timer); reject(new Error(`stream client exited (${code}) before connecting`)); });
      check();
    });
  } catch (err) {
    await stop(child);
    throw err;
  }
  return stream;
}
