/**
 * Test-only generators of real traffic between test namespaces.
 *
 * Every process is started with `ip netns exec`, is killed by PID when done and
 * is bounded by a timeout, so a dropped flow cannot hang a test. Destinations
 * must lie in the test ranges 10.199.0.0/16 or fd99::/16.
 */
import type { ChildProcess } from 'node:child_process';
import { BlockList, isIPv4, isIPv6 } from 'node:net';
import type { Netns } from './netns.js';

const TEST_RANGES = new BlockList();
TEST_RANGES.addSubnet('10.199.0.0', 16, 'ipv4');
TEST_RANGES.addSubnet('fd99::', 16, 'ipv6');

/**
 * Returns the address family of `addr` (4 or 6), throwing unless `addr` is an IP
 * address inside the test ranges 10.199.0.0/16 or fd99::/16.
 */
export function checkTestAddress(addr: string): 4 | 6 {
  const family = isIPv4(addr) ? 4 : isIPv6(addr) ? 6 : undefined;
  if (family === undefined || !TEST_RANGES.check(addr, family === 4 ? 'ipv4' : 'ipv6')) {
    throw new Error(`refusing to send traffic to ${addr}: tests may only use 10.199.0.0/16 and fd99::/16`);
  }
  return family;
}

/** Environment for child Node processes, without the node:test marker of the parent. */
export function childEnv(): NodeJS.ProcessEnv {
  const env = { ...process.env };
  delete env.NODE_TEST_CONTEXT;
  return env;
}

interface RunResult {
  code: number | null;
  stdout: string;
  stderr: string;
  timedOut: boolean;
}

/** Kills `child` (by PID) if it still runs and waits for it to exit, at most 5 s. */
export async function stop(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => {
    child.once('exit', () => resolve());
    setTimeout(resolve, 5_000).unref();
  });
  child.kill('SIGKILL');
  await exited;
}

/** Runs `cmd` in `ns` to completion, killing it after `timeoutMs`. */
function runIn(ns: Netns, cmd: string[], timeoutMs: number): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = ns.spawn(cmd, { env: childEnv() });
    let stdout = '';
    let stderr = '';
    let timedOut = false;
    child.stdout?.setEncoding('utf8').on('data', (d: string) => { stdout += d; });
    child.stderr?.setEncoding('utf8').on('data', (d: string) => { stderr += d; });
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, timeoutMs);
    child.once('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    child.once('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr, timedOut });
    });
  });
}

/** Starts `node -e script JSON(params)` in `ns` and resolves once it prints `listening`. */
async function startServer(ns: Netns, script: string, params: object): Promise<ChildProcess> {
  const child = ns.spawn([process.execPath, '-e', script, JSON.stringify(params)], { env: childEnv() });
  try {
    await new Promise<void>((resolve, reject) => {
      let stdout = '';
      let stderr = '';
      const timer = setTimeout(() => reject(new Error(`server in ${ns.name} not listening after 10 s: ${stderr}`)), 10_000);
      const settle = (err?: Error): void => {
        clearTimeout(timer);
        if (err) reject(err);
        else resolve();
      };
      child.stdout?.setEncoding('utf8').on('data', (d: string) => {
        stdout += d;
        if (stdout.includes('listening')) settle();
      });
      child.stderr?.setEncoding('utf8').on('data', (d: string) => { stderr += d; });
      child.once('error', (err) => settle(err));
      child.once('exit', (code) => settle(new Error(`server in ${ns.name} exited (${code}) before listening: ${stderr}`)));
    });
  } catch (err) {
    await stop(child);
    throw err;
  }
  return child;
}

/**
 * Pings `addr` from inside `netns` (`ping -c count -W 1 -i 0.2`, IPv4 or IPv6).
 * Resolves to the number of replies received; packet loss is not an error, but a
 * ping that prints no summary (e.g. network unreachable) or hangs throws.
 */
export async function ping(netns: Netns, addr: string, count: number): Promise<number> {
  const family = checkTestAddress(addr);
  const timeoutMs = 5_000 + count * 1_200;
  const res = await runIn(netns, ['ping', `-${family}`, '-n', '-c', String(count), '-W', '1', '-i', '0.2', addr], timeoutMs);
  const m = /(\d+) (?:packets )?received/.exec(res.stdout);
  if (res.timedOut || m?.[1] === undefined) {
    throw new Error(`ping ${addr} in ${netns.name} gave no summary (exit ${res.code}${res.timedOut ? ', timed out' : ''}): ${res.stdout}${res.stderr}`);
  }
  return Number(m[1]);
}

const TCP_SERVER = `
const net = require('net');
const p = JSON.parse(process.argv[1]);
const srv = net.createServer((s) => { s.on('error', () => {}); s.pipe(s); });
srv.on('error', (e) => { console.error(e.message); process.exit(2); });
srv.listen(p.port, p.addr, () => console.log('listening'));
`;

const TCP_CLIENT = `
const net = require('net');
const p = JSON.parse(process.argv[1]);
const sent = Buffer.alloc(p.bytes);
for (let i = 0; i < sent.length; i++) sent[i] = (i * 31 + 7) & 0xff;
const chunks = [];
let got = 0;
let done = false;
const finish = (err) => {
  if (done) return;
  done = true;
  const recv = Buffer.concat(chunks);
  let same = 0;
  while (same < recv.length && same < sent.length && recv[same] === sent[same]) same++;
  console.log(JSON.stringify({ received: recv.length, same, error: err ? String(err.message) : null }));
  process.exit(0);
};
const s = net.connect({ host: p.addr, port: p.port }, () => s.end(sent));
s.on('data', (d) => { chunks.push(d); got += d.length; if (got >= sent.length) { s.destroy(); finish(); } });
s.on('end', () => finish());
s.on('error', (e) => finish(e));
setTimeout(() => finish(new Error('timeout')), p.timeoutMs);
`;

/** Options for {@link tcpExchange} and {@link udpExchange}. */
export interface ExchangeOptions {
  /** How long the client waits for echoes, in ms (default 5000). Processes are killed 5 s later at most. */
  timeoutMs?: number;
}

function parseClientResult(res: RunResult, what: string): { received: number; same: number; error: string | null } {
  const line = res.stdout.trim().split('\n').pop() ?? '';
  try {
    return JSON.parse(line) as { received: number; same: number; error: string | null };
  } catch {
    throw new Error(`${what} client gave no result (exit ${res.code}${res.timedOut ? ', timed out' : ''}): ${res.stdout}${res.stderr}`);
  }
}

/**
 * Starts a TCP echo server on `addr`:`port` inside `serverNs`, connects from
 * `clientNs`, sends `bytes` bytes and reads the echo. Resolves to the number of
 * bytes echoed back (fewer, down to 0, if the flow is dropped or refused).
 * Throws if echoed data differs from what was sent, or a process fails to run.
 */
export async function tcpExchange(
  clientNs: Netns, serverNs: Netns, addr: string, port: number, bytes: number, opts: ExchangeOptions = {},
): Promise<number> {
  checkTestAddress(addr);
  const timeoutMs = opts.timeoutMs ?? 5_000;
  const server = await startServer(serverNs, TCP_SERVER, { addr, port });
  try {
    const res = await runIn(clientNs, [process.execPath, '-e', TCP_CLIENT, JSON.stringify({ addr, port, bytes, timeoutMs })], timeoutMs + 5_000);
    const r = parseClientResult(res, 'TCP');
    if (r.same < Math.min(r.received, bytes)) throw new Error(`TCP echo differs from sent data at byte ${r.same}`);
    return Math.min(r.same, bytes);
  } finally {
    await stop(server);
  }
}

const UDP_SERVER = `
const dgram = require('dgram');
const p = JSON.parse(process.argv[1]);
const s = dgram.createSocket(p.family === 6 ? 'udp6' : 'udp4');
s.on('message', (m, r) => s.send(m, r.port, r.address));
s.on('error', (e) => { console.error(e.message); process.exit(2); });
s.bind(p.port, p.addr, () => console.log('listening'));
`;

const UDP_CLIENT = `
const dgram = require('dgram');
const p = JSON.parse(process.argv[1]);
const s = dgram.createSocket(p.family === 6 ? 'udp6' : 'udp4');
const payload = (n) => { const b = Buffer.alloc(p.size, n & 0xff); b.writeUInt32BE(n, 0); return b; };
let n = -1;
let echoed = 0;
let timer;
const finish = (err) => {
  console.log(JSON.stringify({ received: echoed, same: echoed, error: err ? String(err.message) : null }));
  process.exit(0);
};
const next = () => {
  clearTimeout(timer);
  n++;
  if (n >= p.count) return finish();
  s.send(payload(n), p.port, p.addr, () => {});
  timer = setTimeout(next, p.waitMs);
};
s.on('message', (m) => { if (m.equals(payload(n))) { echoed++; next(); } });
s.on('error', (e) => finish(e));
next();
`;

/**
 * Starts a UDP echo server on `addr`:`port` inside `serverNs` and, from `clientNs`,
 * sends `count` datagrams of `size` bytes (default 64, minimum 4) one at a time,
 * waiting for each echo up to `timeoutMs / count` (min 200 ms). Resolves to the
 * number of datagrams echoed back intact.
 */
export async function udpExchange(
  clientNs: Netns, serverNs: Netns, addr: string, port: number, count: number,
  opts: ExchangeOptions & { size?: number } = {},
): Promise<number> {
  const family = checkTestAddress(addr);
  const size = Math.max(4, opts.size ?? 64);
  const timeoutMs = opts.timeoutMs ?? 5_000;
  const waitMs = Math.max(200, Math.floor(timeoutMs / Math.max(1, count)));
  const server = await startServer(serverNs, UDP_SERVER, { addr, port, family });
  try {
    const params = { addr, port, family, count, size, waitMs };
    const res = await runIn(clientNs, [process.execPath, '-e', UDP_CLIENT, JSON.stringify(params)], waitMs * count + 5_000);
    return parseClientResult(res, 'UDP').same;
  } finally {
    await stop(server);
  }
}
