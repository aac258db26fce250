/**
 * Parts 2 and 3 of the policy benchmark: real traffic between namespaces,
 * through Linux's filters and through Waggle, side by side in one run.
 *
 * Linux paths (no bridge, so no br_netfilter): for every contender a client
 * namespace, a "router" namespace and a server namespace made here, joined by
 * two veth pairs; client 10.199.(64+2k).2/24 → router (ip_forward on, in its
 * own namespace only) → server 10.199.(65+2k).2/24. The rules sit in the
 * router's FORWARD hook, policy drop: N non-matching per-peer rules
 * (source 10.199.x.y/32 → the server, UDP 5001) and then the accepting one
 * (client → server, any protocol), written as
 *   - iptables: /usr/sbin/iptables (on this system the nf_tables backend), by iptables-restore;
 *   - iptables-legacy: the x_tables backend, by iptables-legacy-restore;
 *   - nft: one rule per peer in a base chain (a linear chain, as users write it);
 *   - nft-set: the same peers as elements of a concatenated set (saddr . daddr .
 *     dport), plus a (saddr . daddr) set for the client: two set lookups.
 * The baseline router has no rules at all (no table).
 *
 * Waggle: a real `waggle agent` (TestAgent); per size a client and a server
 * endpoint; the server's CiliumNetworkPolicy has N fromCIDR /32 rules (UDP
 * 5001, the same non-matching peers) and one fromEndpoints rule admitting the
 * client (any protocol): N + 1 ingress entries, N CIDR identities in the
 * ipcache. The baseline pair has no policy.
 *
 * Part 2 (one core): the sender is pinned to CPU 0 and everything the packet
 * does in the kernel (the veths, the router or the eBPF program, delivery)
 * runs there too, in its softirq; ns/packet = 1e9 / (packets that reached the
 * server's IP layer per second of sending: Ip.InReceives of the server's
 * namespace). The server holds a socket that is never read, so packets end
 * at the socket without an ICMP error. Two kinds of packets:
 *   - udp: one flow; Waggle decides it once and then hits conntrack;
 *   - raw: IP protocol 253, which Waggle's conntrack does not track: every
 *     packet gets the full policy decision in all mechanisms.
 *
 * Part 3: UDP from two senders (one per CPU) to a reading server, counted at
 * the server's socket (Udp.InDatagrams + RcvbufErrors), and a TCP 1-byte
 * request/response loop (client CPU 0, server CPU 1), for Waggle's pair with
 * the part-3 rule count against a router whose FORWARD chain starts with
 * `-m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT` and then has the
 * rules (iptables as installed).
 */
import { execFileSync } from 'node:child_process';
import { basename } from 'node:path';
import { apiOk } from '../test/helpers/agent.js';
import { createNetns, createVethPair, ip, type Cleanup, type Netns } from '../test/helpers/netns.js';
import { median } from './lib.js';
import { checkAddrs, ksoftirqdPid, LineProcess, runIn, settle, snmp, spawnIn, startAgent, stopChild, taskRuntimeNs, type Tool } from './policy-tool.js';

export type LinuxMech = 'iptables' | 'iptables-legacy' | 'nft' | 'nft-set';
export type Kind = 'udp' | 'raw';

export interface WireConfig {
  wire: boolean;
  stateful: boolean;
  sizes: number[];
  linux: LinuxMech[];
  kinds: Kind[];
  rounds: number;
  sliceMs: number;
  statefulRules: number;
  statefulRounds: number;
  statefulUdpMs: number;
  statefulRrMs: number;
  /** The Linux side of the stateful comparison: `bridge` (the issue's: one L2 segment, br_netfilter hands bridged packets to iptables) or `router`. */
  statefulLinux: 'bridge' | 'router';
}

interface Spread { median: number; min: number; max: number; samples: number[] }

/** ns/packet of every contender of one kind of traffic. */
export interface Table {
  routerBase: number;
  waggleBase: number;
  /** ns/packet by mechanism and size. */
  ns: Record<string, Record<number, number>>;
  /** ns/packet above the mechanism's own baseline (no rules, or no policy). */
  extra: Record<string, Record<number, number>>;
}

export interface WireResult {
  wire?: {
    rounds: number;
    method: string[];
    /** Linux mechanisms left out because their tools are not installed. */
    skipped: string[];
    /** By kind: ns/packet from CPU time, and from the wall-clock rate. */
    kinds: Partial<Record<Kind, { cpu: Table; wall: Table }>>;
    /** Waggle: ms the agent took to apply each size's policy. */
    applyMs: Record<number, number>;
  };
  stateful?: {
    rounds: number;
    method: string[];
    udp: { waggle: Spread; linux: Spread; ratio: number; paired: number; loss: { waggle: number; linux: number }; routerEstablished: number; routerWalked: number };
    /** UDP whose server answers each batch once: two-way flows, conntrack ESTABLISHED on the Linux router. */
    udpEcho: { waggle: Spread; linux: Spread; ratio: number; paired: number; routerEstablished: number; routerWalked: number };
    rr: { waggle: Spread; linux: Spread; ratio: number; paired: number };
    bound: StatefulBound;
  };
}

/**
 * The ceiling of the stateful comparison, measured in the same rounds: per
 * kind of traffic, Waggle's pair without any policy (its own floor: what a
 * policy costing nothing would reach) and the Linux topology without a
 * firewall, each over the Linux path with its firewall.
 */
export type StatefulBound = Record<'udp' | 'udpEcho' | 'rr', { waggleBare: Spread; linuxBare: Spread; waggleBareOverLinux: number; linuxBareOverLinux: number }>;

const UDP_PORT = 5001;
const STATEFUL_UDP_PORT = 5002;
const RR_PORT = 5003;
const ECHO_UDP_PORT = 5004;
const RAW_PROTO = 253;

const peerIp = (i: number): string => `10.199.${i >> 8}.${i & 255}`;

/** A client → server path: where to send from and to, and where to count. */
interface Path {
  label: string;
  client: string;
  server: string;
  clientAddr: string;
  serverAddr: string;
  serverNsPath: string;
  /** Linux paths: the router namespace's name. */
  router?: string;
}

const spread = (xs: number[]): Spread => ({ median: median(xs), min: Math.min(...xs), max: Math.max(...xs), samples: xs });

function pairedRatio(a: number[], b: number[]): number {
  return median(a.map((x, i) => x / (b[i] as number)));
}

function nsExec(ns: Netns, cmd: string[], input?: string, timeoutMs = 120_000): string {
  return execFileSync('ip', ['netns', 'exec', ns.name, ...cmd], { encoding: 'utf8', input, timeout: timeoutMs, stdio: ['pipe', 'pipe', 'pipe'], maxBuffer: 64 << 20 });
}

/** The iptables-restore text of a FORWARD chain: [conntrack rule,] N peer rules, the client rule; policy drop. */
function iptablesRules(n: number, client: string, server: string, conntrack: boolean): string {
  const lines = ['*filter', ':INPUT ACCEPT [0:0]', ':FORWARD DROP [0:0]', ':OUTPUT ACCEPT [0:0]'];
  if (conntrack) lines.push('-A FORWARD -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT');
  for (let i = 0; i < n; i++) lines.push(`-A FORWARD -s ${peerIp(i)}/32 -d ${server}/32 -p udp -m udp --dport ${UDP_PORT} -j ACCEPT`);
  lines.push(`-A FORWARD -s ${client}/32 -d ${server}/32 -j ACCEPT`, 'COMMIT', '');
  return lines.join('\n');
}

function nftRules(n: number, client: string, server: string, sets: boolean): string {
  const out = ['table ip waggle_bench {'];
  if (sets) {
    const elems = Array.from({ length: n }, (_, i) => `${peerIp(i)} . ${server} . ${UDP_PORT}`);
    out.push('  set peers_udp {', '    type ipv4_addr . ipv4_addr . inet_service', ...(n > 0 ? [`    elements = { ${elems.join(', ')} }`] : []), '  }');
    out.push('  set peers_l3 {', '    type ipv4_addr . ipv4_addr', `    elements = { ${client} . ${server} }`, '  }');
  }
  out.push('  chain forward {', '    type filter hook forward priority 0; policy drop;');
  if (sets) {
    out.push('    ip saddr . ip daddr . udp dport @peers_udp accept', '    ip saddr . ip daddr @peers_l3 accept');
  } else {
    for (let i = 0; i < n; i++) out.push(`    ip saddr ${peerIp(i)} ip daddr ${server} udp dport ${UDP_PORT} accept`);
    out.push(`    ip saddr ${client} ip daddr ${server} accept`);
  }
  out.push('  }', '}', '');
  return out.join('\n');
}

let pathIndex = 0;

/**
 * Client and server namespaces on one Linux bridge (in a third namespace),
 * one subnet; br_netfilter (bridge-nf-call-iptables, per namespace) hands the
 * bridged packets to that namespace's iptables FORWARD chain, where `rules`
 * go. The path the issue names for the stateful comparison. With `filter`
 * false the bridge hands nothing to netfilter: the topology's own floor.
 */
function linuxBridgePath(label: string, cleanup: Cleanup, rules: (bridgeNs: Netns, client: string, server: string) => void, filter = true): Path {
  const k = pathIndex++;
  if (64 + 2 * k + 1 > 255) throw new Error('too many Linux paths');
  const net = `10.199.${64 + 2 * k}`;
  const c = createNetns('wglb-pc');
  cleanup.add(() => c.remove(), `remove ${c.name}`);
  const b = createNetns('wglb-pb');
  cleanup.add(() => b.remove(), `remove ${b.name}`);
  const s = createNetns('wglb-ps');
  cleanup.add(() => s.remove(), `remove ${s.name}`);
  createVethPair({ a: { netns: c, name: 'eth0', addrs: [`${net}.2/24`] }, b: { netns: b, name: 'pc' } });
  createVethPair({ a: { netns: s, name: 'eth0', addrs: [`${net}.3/24`] }, b: { netns: b, name: 'ps' } });
  ip(['-n', b.name, 'link', 'add', 'br0', 'type', 'bridge']);
  for (const port of ['pc', 'ps']) ip(['-n', b.name, 'link', 'set', port, 'master', 'br0']);
  ip(['-n', b.name, 'link', 'set', 'br0', 'up']);
  const nf = '/proc/sys/net/bridge/bridge-nf-call-iptables';
  const want = filter ? '1' : '0';
  const on = nsExec(b, ['sh', '-c', `test -e ${nf} && echo ${want} > ${nf} && cat ${nf}`]).trim();
  if (on !== want) throw new Error(`br_netfilter is not available in ${b.name} (${nf}): the bridge path would not filter`);
  const client = `${net}.2`;
  const server = `${net}.3`;
  checkAddrs(client, server);
  rules(b, client, server);
  return { label, client: c.name, server: s.name, clientAddr: client, serverAddr: server, serverNsPath: s.path, router: b.name };
}

/** Client, router and server namespaces; the router's rules as `rules` says. */
function linuxPath(label: string, cleanup: Cleanup, rules: (router: Netns, client: string, server: string) => void): Path {
  const k = pathIndex++;
  if (64 + 2 * k + 1 > 255) throw new Error('too many Linux paths');
  const cNet = `10.199.${64 + 2 * k}`;
  const sNet = `10.199.${65 + 2 * k}`;
  const c = createNetns('wglb-pc');
  cleanup.add(() => c.remove(), `remove ${c.name}`);
  const r = createNetns('wglb-pr');
  cleanup.add(() => r.remove(), `remove ${r.name}`);
  const s = createNetns('wglb-ps');
  cleanup.add(() => s.remove(), `remove ${s.name}`);
  createVethPair({ a: { netns: c, name: 'eth0', addrs: [`${cNet}.2/24`] }, b: { netns: r, name: 'vc', addrs: [`${cNet}.1/24`] } });
  createVethPair({ a: { netns: s, name: 'eth0', addrs: [`${sNet}.2/24`] }, b: { netns: r, name: 'vs', addrs: [`${sNet}.1/24`] } });
  ip(['-n', c.name, 'route', 'add', 'default', 'via', `${cNet}.1`]);
  ip(['-n', s.name, 'route', 'add', 'default', 'via', `${sNet}.1`]);
  nsExec(r, ['sysctl', '-qw', 'net.ipv4.ip_forward=1']);
  const client = `${cNet}.2`;
  const server = `${sNet}.2`;
  checkAddrs(client, server);
  rules(r, client, server);
  return { label, client: c.name, server: s.name, clientAddr: client, serverAddr: server, serverNsPath: s.path, router: r.name };
}

function loadLinuxRules(mech: LinuxMech, n: number, conntrack = false) {
  return (router: Netns, client: string, server: string): void => {
    if (mech === 'iptables' || mech === 'iptables-legacy') {
      nsExec(router, [mech === 'iptables' ? 'iptables-restore' : 'iptables-legacy-restore'], iptablesRules(n, client, server, conntrack));
      const listed = nsExec(router, [mech === 'iptables' ? 'iptables' : 'iptables-legacy', '-S', 'FORWARD']).trim().split('\n').length;
      const want = n + 2 + (conntrack ? 1 : 0);
      if (listed !== want) throw new Error(`${mech} in ${router.name}: FORWARD lists ${listed} lines, expected ${want}`);
    } else {
      nsExec(router, ['nft', '-f', '-'], nftRules(n, client, server, mech === 'nft-set'));
    }
  };
}

/** Waggle's per-peer policy for a server: N fromCIDR /32 rules on UDP 5001, then the client on any protocol. */
function wagglePolicy(n: number, serverApp: string, clientApp: string): string {
  const ingress: unknown[] = [{ fromEndpoints: [{ matchLabels: { app: clientApp } }] }];
  for (let i = 0; i < n; i++) ingress.push({ fromCIDR: [`${peerIp(i)}/32`], toPorts: [{ ports: [{ port: String(UDP_PORT), protocol: 'UDP' }] }] });
  return JSON.stringify({
    apiVersion: 'cilium.io/v2', kind: 'CiliumNetworkPolicy',
    metadata: { name: `per-peer-${n}`, namespace: 'bench' },
    spec: { endpointSelector: { matchLabels: { app: serverApp } }, ingress },
  });
}

interface FloodResult { sent: number; ns: number; errors: number }

/** A sender kept running for one path and kind, pinned to CPU 0: floods for the time asked. */
async function floodSender(tool: Tool, p: Path, kind: Kind, cleanup: Cleanup): Promise<LineProcess> {
  const cmd = kind === 'udp'
    ? [tool.path, 'flood-loop', 'udp', p.clientAddr, '40000', p.serverAddr, String(UDP_PORT)]
    : [tool.path, 'flood-loop', 'raw', p.clientAddr, p.serverAddr, String(RAW_PROTO)];
  const child = spawnIn(p.client, cmd, { cpu: 0, stdin: 'pipe' });
  cleanup.add(() => stopChild(child), `stop the ${kind} sender of ${p.label}`);
  const lp = new LineProcess(child, `${kind} sender of ${p.label}`);
  await lp.ask('1', 10_000);
  return lp;
}

/**
 * One one-core flood slice: packets per second that reached the server's IP
 * layer (wall clock), and the CPU time per packet: what the sender and
 * ksoftirqd/0 ran meanwhile (without IRQ time accounting, softirq work done
 * in the sender's context is charged to the sender), per packet received.
 */
async function floodSlice(sender: LineProcess, p: Path, kind: Kind, ms: number, softirqPid: number): Promise<{ rate: number; cpuNs: number }> {
  const pid = sender.child.pid as number;
  const before = snmp(p.serverNsPath)['Ip.InReceives'] as number;
  const cpu0 = taskRuntimeNs(pid) + taskRuntimeNs(softirqPid);
  const r = JSON.parse(await sender.ask(String(ms), ms + 15_000)) as FloodResult;
  const cpu = taskRuntimeNs(pid) + taskRuntimeNs(softirqPid) - cpu0;
  const got = (snmp(p.serverNsPath)['Ip.InReceives'] as number) - before;
  if (!(r.sent > 0) || got < r.sent * 0.01) throw new Error(`${kind} flood over ${p.label}: sent ${r.sent}, the server received ${got}`);
  return { rate: (got * 1e9) / r.ns, cpuNs: cpu / got };
}

async function startServers(tool: Tool, p: Path, cleanup: Cleanup, what: { sinks: Kind[]; stateful: boolean }): Promise<void> {
  const cmds: { cmd: string[]; cpu?: number }[] = [];
  if (what.sinks.includes('udp')) cmds.push({ cmd: [tool.path, 'sink', 'udp', p.serverAddr, String(UDP_PORT)] });
  if (what.sinks.includes('raw')) cmds.push({ cmd: [tool.path, 'sink', 'raw', p.serverAddr, String(RAW_PROTO)] });
  if (what.stateful) {
    cmds.push({ cmd: [tool.path, 'udp-recv', p.serverAddr, String(STATEFUL_UDP_PORT)] });
    cmds.push({ cmd: [tool.path, 'udp-recv', p.serverAddr, String(ECHO_UDP_PORT), 'echo'] });
    cmds.push({ cmd: [tool.path, 'rr-server', p.serverAddr, String(RR_PORT)], cpu: 1 });
  }
  for (const c of cmds) {
    const child = spawnIn(p.server, c.cmd, c.cpu !== undefined ? { cpu: c.cpu } : {});
    cleanup.add(() => stopChild(child), `stop ${c.cmd[1]} in ${p.server}`);
    await settle(child, `${c.cmd[1]} in ${p.server}`, 50);
  }
}

/** Part 3's UDP slice: two senders, one per CPU; packets per second that reached the server's socket. */
async function statefulUdpSlice(tool: Tool, p: Path, ms: number, echo = false): Promise<{ rate: number; loss: number }> {
  const count = (): number => {
    const s = snmp(p.serverNsPath);
    return (s['Udp.InDatagrams'] as number) + (s['Udp.RcvbufErrors'] as number);
  };
  const before = count();
  const outs = await Promise.all([0, 1].map((cpu) => runIn(p.client,
    [tool.path, 'udp-flood', p.clientAddr, String((echo ? 40003 : 40001) + cpu), p.serverAddr, String(echo ? ECHO_UDP_PORT : STATEFUL_UDP_PORT), String(ms)],
    { cpu, timeoutMs: ms + 15_000 })));
  // Give the reader a moment to drain what is queued.
  await new Promise((r) => setTimeout(r, 20));
  const got = count() - before;
  const rs = outs.map((o) => JSON.parse(o) as FloodResult);
  const sent = rs.reduce((s, r) => s + r.sent, 0);
  const ns = Math.max(...rs.map((r) => r.ns));
  if (got < sent * 0.01) throw new Error(`stateful UDP over ${p.label}: sent ${sent}, the server received ${got}`);
  return { rate: (got * 1e9) / ns, loss: 1 - got / sent };
}

/** Packet counters of the first FORWARD rule (the conntrack one) and of the last (the client's) in `router`. */
function forwardCounters(router: string): { established: number; walked: number } {
  const out = execFileSync('ip', ['netns', 'exec', router, 'iptables', '-L', 'FORWARD', '-v', '-x', '-n'], { encoding: 'utf8', maxBuffer: 64 << 20, timeout: 60_000 });
  const rules = out.split('\n').slice(2).filter((l) => l.trim() !== '').map((l) => Number(l.trim().split(/\s+/)[0]));
  return { established: rules[0] ?? NaN, walked: rules.at(-1) ?? NaN };
}

async function rrSlice(tool: Tool, p: Path, ms: number): Promise<number> {
  const r = JSON.parse(await runIn(p.client, [tool.path, 'rr-client', p.serverAddr, String(RR_PORT), String(ms)], { cpu: 0, timeoutMs: ms + 15_000 })) as { n: number; ns: number };
  if (!(r.n > 0)) throw new Error(`request/response over ${p.label}: ${JSON.stringify(r)}`);
  return (r.n * 1e9) / r.ns;
}

/** Whether `cmd` is on the PATH. */
function have(cmd: string): boolean {
  try {
    execFileSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

const MECH_TOOLS: Record<LinuxMech, string[]> = {
  iptables: ['iptables', 'iptables-restore'],
  'iptables-legacy': ['iptables-legacy', 'iptables-legacy-restore'],
  nft: ['nft'],
  'nft-set': ['nft'],
};

export async function runWire(wanted: WireConfig, tool: Tool, cleanup: Cleanup, progress: (s: string) => void): Promise<WireResult> {
  pathIndex = 0;
  const skipped = wanted.linux.filter((m) => !MECH_TOOLS[m].every(have));
  const cfg: WireConfig = { ...wanted, linux: wanted.linux.filter((m) => !skipped.includes(m)) };
  if (cfg.stateful && !MECH_TOOLS.iptables.every(have)) throw new Error('the stateful part needs iptables and iptables-restore');
  const sinks: Kind[] = cfg.wire ? cfg.kinds : [];
  const result: WireResult = {};

  // Linux paths.
  const linux: Record<string, Path> = {};
  if (cfg.wire) {
    linux.base = linuxPath('router (no rules)', cleanup, () => undefined);
    for (const mech of cfg.linux) {
      for (const n of cfg.sizes) {
        const t0 = Date.now();
        linux[`${mech}/${n}`] = linuxPath(`${mech} ${n}`, cleanup, loadLinuxRules(mech, n));
        if (n >= 1000) progress(`  wire: ${mech} with ${n} rules loaded in ${Date.now() - t0} ms`);
      }
    }
  }
  if (cfg.stateful) {
    linux.stateful = (cfg.statefulLinux === 'bridge' ? linuxBridgePath : linuxPath)(`iptables conntrack + ${cfg.statefulRules}`, cleanup, loadLinuxRules('iptables', cfg.statefulRules, true));
    // The bound: the same topology with no firewall at all.
    linux.statefulBare = cfg.statefulLinux === 'bridge'
      ? linuxBridgePath('bridge, no netfilter', cleanup, () => undefined, false)
      : linuxPath('router (no rules)', cleanup, () => undefined);
  }
  progress(`  wire: ${Object.keys(linux).length} Linux paths (client, router, server namespaces each) ready`);

  // Waggle: one agent, a client/server pair per size (and one without policy), the policies applied smallest first.
  const agent = await startAgent({ nodeName: `benchpolw-${process.pid}` }, cleanup, 'remove the wire agent');
  const waggleSizes = [...new Set([...(cfg.wire ? cfg.sizes : []), ...(cfg.stateful ? [cfg.statefulRules] : [])])].sort((a, b) => a - b);
  const waggle: Record<string, Path> = {};
  for (const key of [...(cfg.wire || cfg.stateful ? ['base'] : []), ...waggleSizes.map(String)]) {
    const eps: { ipv4: string; netns: string; path: string }[] = [];
    for (const side of ['cli', 'srv']) {
      const name = `pol-w-${key}-${side}`;
      const ep = await apiOk(agent.apiSocket, 'POST', '/v1/endpoints', { name, namespace: 'bench', labels: { app: `${side}-${key}` } }) as { ipv4?: string; netnsPath: string };
      if (!ep.ipv4) throw new Error(`endpoint ${name} has no IPv4 address`);
      checkAddrs(ep.ipv4);
      eps.push({ ipv4: ep.ipv4, netns: basename(ep.netnsPath), path: ep.netnsPath });
    }
    const [c, s] = eps as [typeof eps[0], typeof eps[0]];
    waggle[key] = { label: `waggle ${key}`, client: c.netns, server: s.netns, clientAddr: c.ipv4, serverAddr: s.ipv4, serverNsPath: s.path };
  }
  const applyMs: Record<number, number> = {};
  for (const n of waggleSizes) {
    const t0 = process.hrtime.bigint();
    await apiOk(agent.apiSocket, 'POST', '/v1/apply', { files: [{ text: wagglePolicy(n, `srv-${n}`, `cli-${n}`), source: `per-peer-${n}.json` }] });
    applyMs[n] = Number(process.hrtime.bigint() - t0) / 1e6;
    progress(`  wire: waggle policy with ${n} per-peer rules applied in ${Math.round(applyMs[n] as number)} ms`);
    const bpf = await apiOk(agent.apiSocket, 'GET', `/v1/bpf/policy/pol-w-${n}-srv`) as { entries: { direction: string }[]; flags: number };
    const ingress = bpf.entries.filter((e) => e.direction === 'ingress').length;
    if (ingress !== n + 1) throw new Error(`server of size ${n} has ${ingress} ingress policy entries, expected ${n + 1}`);
  }

  for (const p of Object.values(linux)) {
    const statefulPath = p === linux.stateful || p === linux.statefulBare;
    await startServers(tool, p, cleanup, { sinks: statefulPath ? [] : sinks, stateful: statefulPath });
  }
  for (const [key, p] of Object.entries(waggle)) {
    const statefulPair = cfg.stateful && (key === String(cfg.statefulRules) || key === 'base');
    const wirePair = cfg.wire && (key === 'base' || cfg.sizes.includes(Number(key)));
    await startServers(tool, p, cleanup, { sinks: wirePair ? sinks : [], stateful: statefulPair });
  }

  if (cfg.wire) {
    const softirqPid = ksoftirqdPid(0);
    interface Side { p: Path; sender: LineProcess }
    interface Contender { kind: Kind; mech: string; n: number; c: Side; base: Side; cpu: number[]; wall: number[]; cpuBase: number[]; wallBase: number[] }
    const side = async (p: Path, kind: Kind): Promise<Side> => ({ p, sender: await floodSender(tool, p, kind, cleanup) });
    const contenders: Contender[] = [];
    for (const kind of cfg.kinds) {
      const routerBase = await side(linux.base as Path, kind);
      const waggleBase = await side(waggle.base as Path, kind);
      for (const n of cfg.sizes) {
        for (const mech of cfg.linux) contenders.push({ kind, mech, n, c: await side(linux[`${mech}/${n}`] as Path, kind), base: routerBase, cpu: [], wall: [], cpuBase: [], wallBase: [] });
        contenders.push({ kind, mech: 'waggle', n, c: await side(waggle[String(n)] as Path, kind), base: waggleBase, cpu: [], wall: [], cpuBase: [], wallBase: [] });
      }
    }
    progress(`  wire: ${contenders.length} contenders, each measured next to its baseline, ${cfg.sliceMs} ms slices, ${cfg.rounds} rounds + 1 warm-up`);
    for (let round = -1; round < cfg.rounds; round++) {
      for (let k = 0; k < contenders.length; k++) {
        const ct = contenders[(k + Math.max(round, 0) * 7) % contenders.length] as Contender;
        const baseFirst = (round + k) % 2 === 0;
        const measure = (x: Side): Promise<{ rate: number; cpuNs: number }> => floodSlice(x.sender, x.p, ct.kind, cfg.sliceMs, softirqPid);
        const first = await measure(baseFirst ? ct.base : ct.c);
        const second = await measure(baseFirst ? ct.c : ct.base);
        const [b, c] = baseFirst ? [first, second] : [second, first];
        if (round < 0) continue;
        ct.cpu.push(c.cpuNs);
        ct.cpuBase.push(b.cpuNs);
        ct.wall.push(1e9 / c.rate);
        ct.wallBase.push(1e9 / b.rate);
      }
      progress(round < 0 ? '  wire: warm-up round done' : `  wire: round ${round + 1}/${cfg.rounds} done`);
    }
    // Waggle's conntrack: UDP flows tracked, protocol 253 never (so every such packet was decided by the policy).
    const ct = await apiOk(agent.apiSocket, 'GET', '/v1/bpf/ct') as { protocol: string; destinationPort: number }[];
    if (ct.some((e) => e.protocol === String(RAW_PROTO))) throw new Error(`Waggle made conntrack entries for protocol ${RAW_PROTO}`);
    if (cfg.kinds.includes('udp') && !ct.some((e) => e.protocol === 'UDP' && e.destinationPort === UDP_PORT)) throw new Error('Waggle has no conntrack entry of the UDP floods');
    const kinds: NonNullable<WireResult['wire']>['kinds'] = {};
    for (const kind of cfg.kinds) {
      const mine = contenders.filter((c) => c.kind === kind);
      const table = (v: 'cpu' | 'wall'): Table => {
        const vb = v === 'cpu' ? 'cpuBase' : 'wallBase';
        const ns: Record<string, Record<number, number>> = {};
        const extra: Record<string, Record<number, number>> = {};
        for (const c of mine) {
          (ns[c.mech] ??= {})[c.n] = median(c[v]);
          (extra[c.mech] ??= {})[c.n] = median(c[v].map((x, i) => x - (c[vb][i] as number)));
        }
        return {
          routerBase: median(mine.filter((c) => c.mech !== 'waggle').flatMap((c) => c[vb])),
          waggleBase: median(mine.filter((c) => c.mech === 'waggle').flatMap((c) => c[vb])),
          ns,
          extra,
        };
      };
      kinds[kind] = { cpu: table('cpu'), wall: table('wall') };
    }
    result.wire = {
      rounds: cfg.rounds,
      skipped,
      kinds,
      applyMs,
      method: [
        'method: per contender a client netns sending to a server netns; Linux: through a router netns (ip_forward, FORWARD policy drop,',
        'N non-matching per-peer rules "-s PEER/32 -d SERVER -p udp --dport 5001 -j ACCEPT", then "-s CLIENT -d SERVER -j ACCEPT";',
        'iptables = /usr/sbin/iptables (nf_tables backend here), iptables-legacy = x_tables, nft = one rule per peer in a base chain,',
        'nft-set = the peers in a concatenated set (saddr . daddr . dport) + a set for the client); Waggle: real agent endpoints, the',
        'server\'s CiliumNetworkPolicy with N fromCIDR /32 rules (UDP 5001) + fromEndpoints client (N+1 ingress entries; the peers\' CIDR',
        `identities are shared by the sizes: ${Math.max(...waggleSizes)} in the ipcache, and one policy trie holds every size's entries).`,
        'iptables-nft compiles each rule with the protocol check first, so a UDP packet evaluates more of every rule than a raw one;',
        'nft as written here compares the source address first.',
        `The sender (sendmmsg, 60-byte frames, one process per contender kept running) is pinned to CPU 0, so the whole path runs on`,
        `that core; ${cfg.sliceMs} ms slices; every contender slice runs right next to a slice of its baseline (the router without rules,`,
        'or the Waggle pair without policy; which goes first alternates), contenders in rotated order each round (the machine\'s speed',
        'drifts by tens of % within seconds: only the paired differences are steady). Counted: packets reaching the server\'s',
        'IP layer (Ip.InReceives). CPU ns/packet = CPU time of the sender + ksoftirqd/0 during the slice (this kernel has no IRQ time',
        'accounting: softirq work in the sender\'s context is charged to it) / packets: not inflated by other processes sharing the',
        'core (this VM also runs other work); wall ns/packet = 1e9 / (packets / sending time): includes time the core spent elsewhere.',
      ],
    };
  }

  if (cfg.stateful) {
    const wp = waggle[String(cfg.statefulRules)] as Path;
    const lp = linux.stateful as Path;
    const udp: Record<string, number[]> = { waggle: [], linux: [], waggleBare: [], linuxBare: [] };
    const loss: Record<string, number[]> = { waggle: [], linux: [], waggleBare: [], linuxBare: [] };
    const counted = { established: 0, walked: 0 };
    const echo: Record<string, number[]> = { waggle: [], linux: [], waggleBare: [], linuxBare: [] };
    const countedEcho = { established: 0, walked: 0 };
    const rr: Record<string, number[]> = { waggle: [], linux: [], waggleBare: [], linuxBare: [] };
    // The bounds ride along: Waggle's pair without policy, the Linux topology without a firewall.
    const contenders = [['waggle', wp], ['linux', lp], ['waggleBare', waggle.base as Path], ['linuxBare', linux.statefulBare as Path]] as const;
    for (let round = -1; round < cfg.statefulRounds; round++) {
      const order = round % 2 === 0 ? contenders : [...contenders].reverse();
      for (const [name, p] of order) {
        const c0 = p === lp && p.router ? forwardCounters(p.router) : undefined;
        const u = await statefulUdpSlice(tool, p, cfg.statefulUdpMs);
        if (round >= 0) { (udp[name] as number[]).push(u.rate); (loss[name] as number[]).push(u.loss); }
        if (c0 && p.router && round >= 0) {
          const c1 = forwardCounters(p.router);
          counted.established += c1.established - c0.established;
          counted.walked += c1.walked - c0.walked;
        }
      }
      for (const [name, p] of order) {
        const c0 = p === lp && p.router ? forwardCounters(p.router) : undefined;
        const u = await statefulUdpSlice(tool, p, cfg.statefulUdpMs, true);
        if (round >= 0) (echo[name] as number[]).push(u.rate);
        if (c0 && p.router && round >= 0) {
          const c1 = forwardCounters(p.router);
          countedEcho.established += c1.established - c0.established;
          countedEcho.walked += c1.walked - c0.walked;
        }
      }
      for (const [name, p] of order) {
        const t = await rrSlice(tool, p, cfg.statefulRrMs);
        if (round >= 0) (rr[name] as number[]).push(t);
      }
      progress(round < 0 ? '  stateful: warm-up round done'
        : `  stateful: round ${round + 1}/${cfg.statefulRounds}: udp waggle ${Math.round((udp.waggle as number[]).at(-1) as number)} / linux ${Math.round((udp.linux as number[]).at(-1) as number)} pkt/s, `
          + `two-way udp waggle ${Math.round((echo.waggle as number[]).at(-1) as number)} / linux ${Math.round((echo.linux as number[]).at(-1) as number)} pkt/s, `
          + `rr waggle ${Math.round((rr.waggle as number[]).at(-1) as number)} / linux ${Math.round((rr.linux as number[]).at(-1) as number)} /s`);
    }
    const u = { waggle: spread(udp.waggle as number[]), linux: spread(udp.linux as number[]) };
    const t = { waggle: spread(rr.waggle as number[]), linux: spread(rr.linux as number[]) };
    result.stateful = {
      rounds: cfg.statefulRounds,
      method: [
        `method: Waggle: the agent's client/server pair whose server has ${cfg.statefulRules} per-peer rules + the client rule (conntrack always on);`,
        cfg.statefulLinux === 'bridge'
          ? 'Linux: client and server namespaces on a bridge (in a third namespace; br_netfilter hands bridged packets to its iptables),'
          + ' FORWARD policy drop: "-m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT", then'
          : `Linux: client → router → server namespaces, FORWARD policy drop: "-m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT", then`,
        `${cfg.statefulRules} non-matching per-peer rules and the client rule (/usr/sbin/iptables). UDP: two senders (CPU 0 and CPU 1, sendmmsg,`,
        `60-byte frames, ${cfg.statefulUdpMs} ms) to a recvmmsg reader; counted at the server's socket (Udp.InDatagrams + RcvbufErrors);`,
        'the same with a reader that answers each batch of datagrams once (two-way flows, so netfilter marks them ESTABLISHED).',
        `TCP: one connection, 1-byte request/response, TCP_NODELAY, client on CPU 0, server on CPU 1, ${cfg.statefulRrMs} ms. Order alternates each round.`,
      ],
      udp: {
        ...u, ratio: u.waggle.median / u.linux.median, paired: pairedRatio(u.waggle.samples, u.linux.samples),
        loss: { waggle: median(loss.waggle as number[]), linux: median(loss.linux as number[]) },
        routerEstablished: counted.established, routerWalked: counted.walked,
      },
      udpEcho: {
        waggle: spread(echo.waggle as number[]), linux: spread(echo.linux as number[]),
        ratio: median(echo.waggle as number[]) / median(echo.linux as number[]), paired: pairedRatio(echo.waggle as number[], echo.linux as number[]),
        routerEstablished: countedEcho.established, routerWalked: countedEcho.walked,
      },
      rr: { ...t, ratio: t.waggle.median / t.linux.median, paired: pairedRatio(t.waggle.samples, t.linux.samples) },
      bound: Object.fromEntries(([['udp', udp], ['udpEcho', echo], ['rr', rr]] as const).map(([k, v]) => [k, {
        waggleBare: spread(v.waggleBare as number[]), linuxBare: spread(v.linuxBare as number[]),
        waggleBareOverLinux: median(v.waggleBare as number[]) / median(v.linux as number[]),
        linuxBareOverLinux: median(v.linuxBare as number[]) / median(v.linux as number[]),
      }])) as StatefulBound,
    };
  }
  return result;
}
