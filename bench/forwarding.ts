/**
 * Forwarding between two endpoints on one node, Waggle against a plain Linux
 * bridge, side by side in one run:
 *
 * - waggle: two endpoints created by a real `waggle agent` (TestAgent) through
 *   its API: each a namespace with eth0, host-side veth with the tcx programs
 *   of bpf/lxc.bpf.c, local delivery with bpf_redirect_peer (routed: TTL - 1);
 * - bridge: two namespaces whose veths are ports of a Linux bridge that lives
 *   in a separate "node" namespace made here (never the root namespace),
 *   addresses in 10.199.250.0/24. bridge-nf-call-ip(6)tables is switched off
 *   in that namespace, so the baseline is the bridge alone (the fastest it goes).
 *
 * Two measurements, each a short slice alternating between the pairs, round
 * after round (the order flips every round; one untimed warm-up round):
 * (a) TCP throughput: `iperf3 -c -t 2 -J` against `iperf3 -s -1`, one stream;
 * (b) request/response: one TCP connection (TCP_NODELAY), 1-byte request,
 *     1-byte answer, as many as fit in 2 s (a tiny Python client/server pair):
 *     transactions per second.
 * Clients run on CPU 0 and servers on CPU 1 (taskset) for both pairs alike.
 * Reported: medians, min–max, and waggle/bridge (median of the per-round
 * ratios, and the ratio of the medians), and iperf3's retransmits. Goal: ≥ 1.0× on both.
 *
 * Everything made here (agent, endpoints, namespaces, processes) is removed
 * in `finally`, also on error. Needs root, iperf3 and python3.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { basename } from 'node:path';
import { readFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { apiOk, TestAgent } from '../test/helpers/agent.js';
import { Cleanup, createNetns, createVethPair, ip } from '../test/helpers/netns.js';
import { checkTestAddress, stop as stopChild } from '../test/helpers/traffic.js';
import { median, pairedRatio, printReport, type RateSummary } from './lib.js';

const ROUNDS = 7;
const WARMUP_ROUNDS = 1;
const SLICE_SECONDS = 2;
const IPERF_PORT = 5201;
const RR_PORT = 5202;
const BRIDGE_ADDRS = ['10.199.250.1', '10.199.250.2'] as const;

/**
 * CPU pinning (`taskset -c`): the client on the first CPU, the server on the
 * second, for both pairs alike. Unpinned, the scheduler's placement of the two
 * processes (same CPU or not, migrations mid-run) swings a slice by ±30%.
 */
const PIN = availableParallelism() >= 2 ? { client: ['taskset', '-c', '0'], server: ['taskset', '-c', '1'] } : { client: [], server: [] };

/** A namespace known by its `ip netns` name. */
interface Ns { name: string }

/** A server/client pair of namespaces and the server's address. */
interface Pair { label: string; client: Ns; server: Ns; serverAddr: string }

const children = new Set<ChildProcess>();

function spawnIn(ns: Ns, cmd: string[]): ChildProcess {
  const child = spawn('ip', ['netns', 'exec', ns.name, ...cmd], { stdio: ['ignore', 'pipe', 'pipe'] });
  children.add(child);
  child.once('exit', () => children.delete(child));
  return child;
}


/** Runs `cmd` in `ns` to completion (killed after `timeoutMs`); resolves to stdout, rejects on failure. */
function runIn(ns: Ns, cmd: string[], timeoutMs: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawnIn(ns, cmd);
    let stdout = '';
    let stderr = '';
    child.stdout?.setEncoding('utf8').on('data', (d: string) => { stdout += d; });
    child.stderr?.setEncoding('utf8').on('data', (d: string) => { stderr += d; });
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.once('error', (err) => { clearTimeout(timer); reject(err); });
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      if (code === 0) resolve(stdout);
      else reject(new Error(`${cmd.join(' ')} in ${ns.name} exited ${code ?? signal}: ${stderr.trim() || stdout.trim()}`));
    });
  });
}

/** Waits until something listens on TCP `port` inside `ns` (polling `ss`). */
async function waitListening(ns: Ns, port: number, server: ChildProcess, timeoutMs = 5_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const out = ip(['netns', 'exec', ns.name, 'ss', '-Hltn', `sport = :${port}`]);
    if (out.trim() !== '') return;
    if (server.exitCode !== null) throw new Error(`server in ${ns.name} exited ${server.exitCode} before listening on ${port}`);
    if (Date.now() > deadline) throw new Error(`nothing listens on ${port} in ${ns.name} after ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** One iperf3 run from `pair.client` to `pair.server`: bits per second received, and the sender's retransmits. */
async function iperfSlice(pair: Pair): Promise<{ bps: number; retransmits: number }> {
  const srv = spawnIn(pair.server, [...PIN.server, 'iperf3', '-s', '-1', '-B', pair.serverAddr, '-p', String(IPERF_PORT)]);
  try {
    await waitListening(pair.server, IPERF_PORT, srv);
    const out = await runIn(pair.client, [...PIN.client, 'iperf3', '-c', pair.serverAddr, '-p', String(IPERF_PORT), '-t', String(SLICE_SECONDS), '-J'], (SLICE_SECONDS + 15) * 1000);
    const r = JSON.parse(out) as { error?: string; end?: { sum_received?: { bits_per_second?: number }; sum_sent?: { retransmits?: number } } };
    const bps = r.end?.sum_received?.bits_per_second;
    if (r.error || typeof bps !== 'number' || !(bps > 0)) throw new Error(`iperf3 over ${pair.label}: ${r.error ?? 'no sum_received in its JSON'}`);
    return { bps, retransmits: r.end?.sum_sent?.retransmits ?? NaN };
  } finally {
    await stopChild(srv);
  }
}

const RR_SERVER = `
import socket, sys
addr, port = sys.argv[1], int(sys.argv[2])
s = socket.socket(socket.AF_INET6 if ':' in addr else socket.AF_INET)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((addr, port))
s.listen(1)
c, _ = s.accept()
c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
recv, send = c.recv, c.send
while True:
    b = recv(1)
    if not b:
        break
    send(b)
`;

const RR_CLIENT = `
import json, socket, sys, time
addr, port, secs = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
c = socket.create_connection((addr, port), timeout=10)
c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
recv, send, now = c.recv, c.send, time.perf_counter
for _ in range(200):  # untimed: the first packets resolve neighbours and warm caches
    send(b'x')
    if not recv(1):
        sys.exit('server closed')
n = 0
t0 = now()
end = t0 + secs
while True:
    send(b'x')
    if not recv(1):
        sys.exit('server closed')
    n += 1
    if now() >= end:
        break
print(json.dumps({'n': n, 'secs': now() - t0}))
`;

/** One request/response run; transactions per second. */
async function rrSlice(pair: Pair, python: string): Promise<number> {
  const srv = spawnIn(pair.server, [...PIN.server, python, '-c', RR_SERVER, pair.serverAddr, String(RR_PORT)]);
  try {
    await waitListening(pair.server, RR_PORT, srv);
    const out = await runIn(pair.client, [...PIN.client, python, '-c', RR_CLIENT, pair.serverAddr, String(RR_PORT), String(SLICE_SECONDS)], (SLICE_SECONDS + 15) * 1000);
    const r = JSON.parse(out) as { n: number; secs: number };
    if (!(r.n > 0 && r.secs > 0)) throw new Error(`request/response over ${pair.label}: ${out}`);
    return r.n / r.secs;
  } finally {
    await stopChild(srv);
  }
}


/** CPU seconds (user + system) `pid` has used so far. */
function cpuSeconds(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  // utime and stime are fields 14 and 15 of the whole line: 12 and 13 after "pid (comm) ".
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

function summarise(samples: number[]): RateSummary {
  return { median: median(samples), min: Math.min(...samples), max: Math.max(...samples), samples };
}

/** The Python the benchmark's children run (resolved once: pyenv shims need the caller's environment). */
function findPython(): string {
  return execFileSync('python3', ['-c', 'import sys; print(sys.executable)'], { encoding: 'utf8' }).trim();
}

export async function run(opts: { json: boolean }): Promise<Record<string, number>> {
  const python = findPython();
  execFileSync('iperf3', ['--version'], { stdio: 'ignore' });
  const cleanup = new Cleanup();
  try {
    // The Waggle pair: two endpoints of a real agent.
    const agent = new TestAgent({ nodeName: `benchfwd-${process.pid}` });
    cleanup.add(() => agent.remove(), 'agent.remove');
    await agent.start();
    const endpoints: { name: string; ipv4: string; netnsPath: string }[] = [];
    for (const side of ['a', 'b']) {
      const name = `wglb-fwd-${process.pid}-${side}`;
      const ep = await apiOk(agent.apiSocket, 'POST', '/v1/endpoints', { name, namespace: 'bench', labels: { app: `fwd-${side}` } }) as { ipv4?: string; netnsPath: string };
      cleanup.add(async () => { await apiOk(agent.apiSocket, 'DELETE', `/v1/endpoints/${name}`); }, `delete endpoint ${name}`);
      if (!ep.ipv4) throw new Error(`endpoint ${name} has no IPv4 address`);
      checkTestAddress(ep.ipv4);
      endpoints.push({ name, ipv4: ep.ipv4, netnsPath: ep.netnsPath });
    }
    const [wa, wb] = endpoints as [typeof endpoints[0], typeof endpoints[0]];
    const waggle: Pair = { label: 'waggle', client: { name: basename(wa.netnsPath) }, server: { name: basename(wb.netnsPath) }, serverAddr: wb.ipv4 };

    // The bridge pair: a "node" namespace holding br0, two namespaces on its ports.
    const node = createNetns('wglb-node');
    cleanup.add(() => node.remove(), 'remove node netns');
    const ba = createNetns('wglb-bra');
    cleanup.add(() => ba.remove(), 'remove bridge netns a');
    const bb = createNetns('wglb-brb');
    cleanup.add(() => bb.remove(), 'remove bridge netns b');
    for (const key of ['bridge-nf-call-iptables', 'bridge-nf-call-ip6tables']) {
      try {
        node.exec(['sysctl', '-qw', `net.bridge.${key}=0`]);
      } catch {
        // no br_netfilter: the bridge never calls iptables anyway
      }
    }
    ip(['-n', node.name, 'link', 'add', 'br0', 'type', 'bridge']);
    ip(['-n', node.name, 'link', 'set', 'br0', 'up']);
    for (const [ns, port, addr] of [[ba, 'vbra', BRIDGE_ADDRS[0]], [bb, 'vbrb', BRIDGE_ADDRS[1]]] as const) {
      checkTestAddress(addr);
      createVethPair({ a: { netns: node, name: port }, b: { netns: ns, name: 'eth0', addrs: [`${addr}/24`] } });
      ip(['-n', node.name, 'link', 'set', port, 'master', 'br0']);
    }
    const bridge: Pair = { label: 'bridge', client: ba, server: bb, serverAddr: BRIDGE_ADDRS[1] };

    // Interleaved slices: per round, iperf3 on both pairs, then request/response on both; order flips each round.
    const tcp: Record<string, number[]> = { waggle: [], bridge: [] };
    const rr: Record<string, number[]> = { waggle: [], bridge: [] };
    const retrans: Record<string, number[]> = { waggle: [], bridge: [] };
    const agentPid = agent.pid as number;
    let agentCpu = 0;
    let wall = 0;
    for (let round = -WARMUP_ROUNDS; round < ROUNDS; round++) {
      const order = round % 2 === 0 || round < 0 ? [waggle, bridge] : [bridge, waggle];
      const cpu0 = cpuSeconds(agentPid);
      const t0 = process.hrtime.bigint();
      for (const p of order) {
        const { bps, retransmits } = await iperfSlice(p);
        if (round >= 0) {
          (tcp[p.label] as number[]).push(bps);
          (retrans[p.label] as number[]).push(retransmits);
        }
      }
      for (const p of order) {
        const tps = await rrSlice(p, python);
        if (round >= 0) (rr[p.label] as number[]).push(tps);
      }
      if (round >= 0) {
        agentCpu += cpuSeconds(agentPid) - cpu0;
        wall += Number(process.hrtime.bigint() - t0) / 1e9;
      }
      if (!opts.json) {
        const last = (x: Record<string, number[]>, k: string): number => (x[k] as number[]).at(-1) ?? NaN;
        process.stderr.write(round < 0 ? '  (warm-up round done)\n'
          : `  round ${round + 1}/${ROUNDS}: tcp waggle ${(last(tcp, 'waggle') / 1e9).toFixed(2)} / bridge ${(last(tcp, 'bridge') / 1e9).toFixed(2)} Gbit/s `
            + `(retransmits ${last(retrans, 'waggle')} / ${last(retrans, 'bridge')}), `
            + `rr waggle ${last(rr, 'waggle').toFixed(0)} / bridge ${last(rr, 'bridge').toFixed(0)} /s\n`);
      }
    }

    const tcpRes = { waggle: summarise(tcp.waggle as number[]), bridge: summarise(tcp.bridge as number[]) };
    const rrRes = { waggle: summarise(rr.waggle as number[]), bridge: summarise(rr.bridge as number[]) };
    const figures: Record<string, number> = {
      tcpWaggleGbps: Number((tcpRes.waggle.median / 1e9).toFixed(3)),
      tcpBridgeGbps: Number((tcpRes.bridge.median / 1e9).toFixed(3)),
      tcpWaggleVsBridge: Number(pairedRatio(tcpRes.waggle, tcpRes.bridge).toFixed(3)),
      tcpRatioOfMedians: Number((tcpRes.waggle.median / tcpRes.bridge.median).toFixed(3)),
      tcpRetransmitsWaggle: median(retrans.waggle as number[]),
      tcpRetransmitsBridge: median(retrans.bridge as number[]),
      rrWagglePerSec: Math.round(rrRes.waggle.median),
      rrBridgePerSec: Math.round(rrRes.bridge.median),
      rrWaggleVsBridge: Number(pairedRatio(rrRes.waggle, rrRes.bridge).toFixed(3)),
      rrRatioOfMedians: Number((rrRes.waggle.median / rrRes.bridge.median).toFixed(3)),
      agentCpuPercent: Number(((100 * agentCpu) / wall).toFixed(2)),
    };
    if (!opts.json) {
      const verdict = (r: number): string => (r >= 1 ? 'met' : 'MISSED');
      printReport(`TCP throughput, one iperf3 stream, ${SLICE_SECONDS} s slices`, tcpRes,
        { 'waggle / bridge': figures.tcpWaggleVsBridge as number }, 'bit');
      printReport(`request/response, 1-byte TCP ping-pong, ${SLICE_SECONDS} s slices`, rrRes,
        { 'waggle / bridge': figures.rrWaggleVsBridge as number }, 'trans');
      process.stdout.write(
        `  goals: waggle / bridge >= 1.0x on both: throughput ${figures.tcpWaggleVsBridge}x (${verdict(figures.tcpWaggleVsBridge as number)}), `
        + `request/response ${figures.rrWaggleVsBridge}x (${verdict(figures.rrWaggleVsBridge as number)})\n`
        + `  (ratios are medians of per-round ratios; ratios of medians: ${figures.tcpRatioOfMedians}x, ${figures.rrRatioOfMedians}x)\n`
        + `  TCP retransmits per ${SLICE_SECONDS} s slice (median): waggle ${figures.tcpRetransmitsWaggle}, bridge ${figures.tcpRetransmitsBridge}\n`
        + `  agent CPU while measuring: ${figures.agentCpuPercent}% of one core\n`);
    }
    return figures;
  } finally {
    for (const child of [...children]) await stopChild(child);
    const errors = await cleanup.run();
    if (errors.length > 0) process.stderr.write(`forwarding: ${errors.length} cleanup step(s) failed\n`);
  }
}
