/**
 * `waggle selfcheck`: proves this machine can run Waggle's datapath. It checks
 * privileges and kernel features, loads the counter programs, attaches them
 * (XDP and TC) in a throw-away pair of network namespaces, passes real ICMP,
 * ICMPv6 and TCP traffic, prints what the kernel counted, detaches, shows the
 * counting stopped, and removes everything it made.
 */
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Collection } from '../bpf/object.js';
import { ensureBpffs, unmountBpffs } from '../bpf/bpffs.js';
import { attachXdp } from '../bpf/link/xdp.js';
import { attachTc, type TcAttachment } from '../bpf/link/tc.js';
import type { Link } from '../bpf/link/link.js';
import type { PerCpuMap } from '../bpf/map.js';
import { u32 } from '../bpf/codec.js';
import { inNetns } from '../netlink/netns.js';
import { bpfObjectPath } from '../datapath/objects.js';
import { counterValue, type CounterValue } from '../datapath/codecs/counter.js';
import { createTopology, execIn, ifindexIn, type Topology } from './topology.js';
import { netnsPathFor } from '../endpoint/plumbing.js';

type Log = (line: string) => void;

const PROTOCOLS: [number, string][] = [[1, 'ICMP'], [6, 'TCP'], [17, 'UDP'], [58, 'ICMPv6']];

/** Kernel release as [major, minor]. */
function kernelVersion(): [number, number, string] {
  const release = readFileSync('/proc/sys/kernel/osrelease', 'utf8').trim();
  const m = /^(\d+)\.(\d+)/.exec(release);
  return [Number(m?.[1] ?? 0), Number(m?.[2] ?? 0), release];
}

function cgroup2Mount(): string | undefined {
  for (const line of readFileSync('/proc/self/mounts', 'utf8').split('\n')) {
    const [, dir, type] = line.split(' ');
    if (type === 'cgroup2' && dir) return dir;
  }
  return undefined;
}

/** A TCP transfer of `bytes` from namespace A to a server in namespace B; returns the bytes B received. */
async function tcpTransfer(topo: Topology, bytes: number): Promise<number> {
  const port = 18081;
  const server = `const s=require('net').createServer(c=>{let n=0;c.on('data',d=>n+=d.length);c.on('end',()=>{c.end(String(n));s.close()})}).listen(${port},'${topo.addrB4}',()=>console.log('up'));setTimeout(()=>process.exit(1),10000)`;
  const client = `const c=require('net').connect(${port},'${topo.addrB4}',()=>c.end(Buffer.alloc(${bytes})));let r='';c.on('data',d=>r+=d);c.on('close',()=>console.log(r));c.on('error',e=>{console.error(e.message);process.exit(1)});setTimeout(()=>process.exit(1),10000)`;
  const child = spawn('nsenter', [`--net=${netnsPathFor(topo.nsB)}`, '--', process.execPath, '-e', server], { stdio: ['ignore', 'pipe', 'ignore'] });
  try {
    await new Promise<void>((resolve, reject) => {
      child.stdout.once('data', () => resolve());
      child.once('exit', (code) => reject(new Error(`the TCP server in ${topo.nsB} exited (${code ?? 'signal'})`)));
    });
    return Number(execIn(topo.nsA, [process.execPath, '-e', client]).stdout.trim()) || 0;
  } finally {
    child.kill();
  }
}

function pings(topo: Topology, addr: string, count: number): number {
  const r = execIn(topo.nsA, ['ping', '-c', String(count), '-i', '0.2', '-W', '1', addr]);
  const m = /(\d+) received/.exec(r.stdout);
  return Number(m?.[1] ?? 0);
}

/**
 * Runs the self-check, printing each step with `log`. Returns true when every
 * step passed. Everything created is removed, also on failure.
 */
export async function runSelfcheck(log: Log): Promise<boolean> {
  const cleanups: (() => void)[] = [];
  let ok = true;
  const check = (pass: boolean, text: string): void => {
    log(`  ${pass ? '✓' : '✗'} ${text}`);
    if (!pass) ok = false;
  };
  try {
    const [major, minor, release] = kernelVersion();
    log(`Waggle self-check on Linux ${release}, Node ${process.version}`);
    const root = process.getuid?.() === 0;
    check(root, root ? 'running as root' : 'not root: run as root (or with CAP_BPF, CAP_NET_ADMIN, CAP_SYS_ADMIN)');
    if (!root) return false;
    check(major > 6 || (major === 6 && minor >= 1), `kernel ${major}.${minor} (needs 6.1 or later)`);
    check(existsSync('/sys/kernel/btf/vmlinux'), 'kernel BTF at /sys/kernel/btf/vmlinux');
    const cg = cgroup2Mount();
    check(cg !== undefined, cg ? `cgroup v2 mounted at ${cg}` : 'no cgroup v2 mount found (needed later for socket load balancing)');

    const work = mkdtempSync(join(tmpdir(), 'waggle-selfcheck-'));
    cleanups.push(() => rmSync(work, { recursive: true, force: true }));
    const bpffs = join(work, 'bpffs');
    const mounted = ensureBpffs(bpffs, { mount: true });
    if (mounted) cleanups.push(() => unmountBpffs(bpffs));
    check(true, `bpffs ${mounted ? 'mounted' : 'found'} at ${bpffs}`);

    const xdp = Collection.load(bpfObjectPath('counter_xdp'), { pinMaps: ['counters'], pinDir: join(bpffs, 'xdp') });
    cleanups.push(() => xdp.close());
    const tc = Collection.load(bpfObjectPath('counter_tc'), { pinMaps: ['counters'], pinDir: join(bpffs, 'tc') });
    cleanups.push(() => tc.close());
    check(true, `loaded counter_xdp and counter_tc (maps pinned under ${bpffs})`);

    const topo = createTopology();
    cleanups.push(() => topo.remove());
    check(true, `namespaces ${topo.nsA} (${topo.addrA4}, ${topo.addrA6}) and ${topo.nsB} (${topo.addrB4}, ${topo.addrB6}) joined by a veth pair`);

    const ifindex = ifindexIn(topo.nsB, topo.devB);
    let xdpLink: Link | undefined;
    let tcLink: TcAttachment | undefined;
    inNetns(netnsPathFor(topo.nsB), () => {
      xdpLink = attachXdp(xdp.program('xdp_count'), ifindex, { mode: 'generic' });
      tcLink = attachTc(tc.program('tc_count'), ifindex, 'ingress');
    });
    cleanups.push(() => { xdpLink?.close(); tcLink?.close(); });
    check(true, `attached XDP (generic mode) and TC ingress (${tcLink?.kind ?? '?'}) to ${topo.devB} in ${topo.nsB}`);

    const xdpCounts = xdp.perCpuMap('counters', u32, counterValue);
    const tcCounts = tc.perCpuMap('counters', u32, counterValue);
    cleanups.push(() => { xdpCounts.close(); tcCounts.close(); });
    const snapshot = (m: PerCpuMap<number, CounterValue>): Map<number, CounterValue> =>
      new Map(PROTOCOLS.map(([p]) => [p, m.lookupSum(p) ?? { packets: 0, bytes: 0 }]));

    const got4 = pings(topo, topo.addrB4, 5);
    const got6 = pings(topo, topo.addrB6, 5);
    const tcpBytes = await tcpTransfer(topo, 65536);
    check(got4 === 5 && got6 === 5 && tcpBytes === 65536,
      `traffic A → B: ${got4}/5 IPv4 pings, ${got6}/5 IPv6 pings, TCP ${tcpBytes}/65536 bytes`);

    const xs = snapshot(xdpCounts);
    const ts = snapshot(tcCounts);
    log('    what the kernel counted on the way into B:');
    log(`      ${'protocol'.padEnd(9)}${'XDP packets'.padStart(12)}${'XDP bytes'.padStart(12)}${'TC packets'.padStart(12)}${'TC bytes'.padStart(12)}`);
    for (const [p, name] of PROTOCOLS) {
      const x = xs.get(p) as CounterValue, t = ts.get(p) as CounterValue;
      log(`      ${name.padEnd(9)}${String(x.packets).padStart(12)}${String(x.bytes).padStart(12)}${String(t.packets).padStart(12)}${String(t.bytes).padStart(12)}`);
    }
    const seen = (s: Map<number, CounterValue>, p: number): number => (s.get(p) as CounterValue).packets;
    check(seen(xs, 1) >= 5 && seen(xs, 58) >= 5 && seen(xs, 6) > 0 && seen(ts, 1) >= 5 && seen(ts, 58) >= 5 && seen(ts, 6) > 0,
      'XDP and TC counted every ping and the TCP segments');

    xdpLink?.detach();
    tcLink?.detach();
    pings(topo, topo.addrB4, 3);
    const after = snapshot(xdpCounts), afterTc = snapshot(tcCounts);
    check(seen(after, 1) === seen(xs, 1) && seen(afterTc, 1) === seen(ts, 1), 'detached: 3 more pings passed uncounted');
    return ok;
  } catch (err) {
    check(false, (err as Error).message);
    return false;
  } finally {
    for (const c of cleanups.reverse()) {
      try { c(); } catch (err) { log(`  ! cleanup: ${(err as Error).message}`); }
    }
    log(ok ? '  ✓ removed namespaces, links, pins and the bpffs mount' : '  (cleaned up)');
    log(ok ? 'self-check passed' : 'self-check FAILED');
  }
}
