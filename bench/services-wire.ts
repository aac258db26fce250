/**
 * Part "wire" of the services benchmark: connection rate and request latency
 * to a service through Waggle and through kube-proxy's rule shapes (iptables
 * mode, nftables mode), side by side in one run, with the same 10 / 1,000 /
 * 10,000 services loaded, measured on the first and the last service.
 *
 * Namespaces (all made here, 10.199.0.0/16 only):
 *   server    the backends' addresses 10.199.99.1 … .10 (on its loopback device), and one
 *             TCP server (bench/services-tool.ts `serve`, pinned to CPU 1) listening on
 *             0.0.0.0 at the backend ports of every measured service
 *   clients   one per contender group, each joined to the server namespace by its own
 *             veth pair (client 10.199.(100+k).2/24, default route via .1 on the server
 *             side): the clients of different mechanisms never share a namespace, so
 *             Waggle's clients do not walk iptables rules and Linux's clients do not
 *             run Waggle's programs; every client talks to the same server namespace
 * Contenders, per size N (services 0..N−1 × 10 backends, bench/services-rules.ts):
 *   waggle    socket-level load balancing: bpf/sock.bpf.c attached (attachSocketLb) to a
 *             cgroup v2 made here that holds only the client process, over LB maps in a
 *             private bpffs written by LbMapWriter; connect() to the VIP is rewritten to a
 *             backend in the cgroup hook, so packets carry the backend's address and no
 *             per-packet NAT or conntrack happens anywhere
 *   iptables  kube-proxy's iptables-mode rules in the client namespace (nat OUTPUT →
 *             KUBE-SERVICES → KUBE-SVC → KUBE-SEP DNAT; netfilter conntrack + NAT)
 *   nft       kube-proxy's nftables-mode table in the client namespace (output hooks)
 *   (iptables-legacy when asked)
 *   direct    (once) a client connecting to one backend address directly: the floor
 * The client (bench/services-tool.ts `crr`, pinned to CPU 0, one process per group
 * kept running) loops: connect, 32-byte request, 64-byte response, close with RST;
 * a slice runs it for `sliceMs` against the first (service 0) or the last (service
 * N−1) service's VIP:80 and reports connections/s and the latency percentiles of
 * connect + request + response; the CPU time the client and the server ran meanwhile
 * (with the softirq work of the packets they send, which runs in their context), per
 * connection, is the cost figure that other work on the machine disturbs least. Every slice checks that every answer came from the
 * service's backend port and counts the distinct backends that answered. A round runs
 * the direct client, then per target (first, last) one block of every size's
 * contenders, each size's mechanisms back to back, the orders rotating from round to
 * round; figures are medians over rounds, ratios both as ratios of medians and as
 * medians of per-round ratios (compared slices are at most one block apart).
 */
import { join } from 'node:path';
import { attachSocketLb, detachSocketLb, socketLbStats } from '../src/datapath/sock.js';
import { LbMapWriter } from '../src/datapath/lb-maps.js';
import { mountTempBpffs } from '../test/helpers/bpffs.js';
import { createCgroup } from '../test/helpers/cgroup.js';
import { createNetns, createVethPair, ip, type Cleanup, type Netns } from '../test/helpers/netns.js';
import { median } from './lib.js';
import { checkAddrs, LineProcess, settle, spawnIn, stopChild, taskRuntimeNs } from './policy-tool.js';
import { checkRuleset, linuxAvailable, loadRuleset, rulesetText, type LinuxMech } from './services-linux.js';
import { backendAddr, backendPort, SERVICE_PORT, vipOf, waggleState } from './services-rules.js';
import type { CrrResult, ServicesTool } from './services-tool.js';

export interface WireConfig {
  sizes: number[];
  per: number;
  linux: LinuxMech[];
  rounds: number;
  sliceMs: number;
}

export type WireMech = 'waggle' | LinuxMech | 'direct';
export type Target = 'first' | 'last';

export interface WireFigures {
  /** Connections per second (connect + request + response + close). */
  rate: { median: number; min: number; max: number; samples: number[] };
  /** CPU time per connection (ns): client + server during the slice, per connection completed. */
  cpuNs: { median: number; samples: number[] };
  /** Latency of connect + request + response, ns: medians over rounds of each slice's p50 / p99. */
  p50: number;
  p99: number;
  errors: number;
  /** Distinct backends that answered (over all slices). */
  backends: number;
}

export interface WireResult {
  rounds: number;
  sliceMs: number;
  /** By mechanism, size and target. `direct` has size 0 and target first. */
  figures: Partial<Record<WireMech, Record<number, Partial<Record<Target, WireFigures>>>>>;
  /** Seconds each Linux ruleset took to load here (not when handed over by the control part). */
  loadSeconds: Partial<Record<LinuxMech, Record<number, number>>>;
  /** Waggle: the writer's ms per size; connections the socket programs translated. */
  waggleApplyMs: Record<number, number>;
  waggleTranslated: number;
  skipped: LinuxMech[];
}

interface Group {
  mech: WireMech;
  n: number;
  ns: Netns;
  client?: LineProcess;
  pinDir?: string;
}

interface Contender {
  group: Group;
  target: Target;
  addr: string;
  port: number;
  wantPort: number;
  rate: number[];
  /** CPU ns per connection. */
  cpu: number[];
  p50: number[];
  p99: number[];
  errors: number;
  backends: number;
}

/** Parallel executions in one round fit in this many ms at most (slice + warm-up + overhead). */
async function slice(c: Contender, ms: number): Promise<CrrResult> {
  const client = c.group.client as LineProcess;
  const r = JSON.parse(await client.ask(`${ms} ${c.addr} ${c.port} ${c.wantPort}`, ms + 60_000)) as CrrResult;
  const what = `${c.group.mech} ${c.group.n} ${c.target}`;
  if (!(r.n > 0)) throw new Error(`${what}: no connection completed (${r.errors} failed)`);
  if (r.wrongPort > 0) throw new Error(`${what}: ${r.wrongPort} answers came from another port than ${c.wantPort}: not the service's backends`);
  return r;
}

export async function runWire(
  cfg: WireConfig,
  tool: ServicesTool,
  cleanup: Cleanup,
  progress: (s: string) => void,
  handed: Partial<Record<LinuxMech, { n: number; ns: Netns }>> = {},
): Promise<WireResult> {
  const skipped = cfg.linux.filter((m) => !linuxAvailable(m));
  const linux = cfg.linux.filter((m) => !skipped.includes(m));
  const per = cfg.per;
  for (let j = 0; j < per; j++) checkAddrs(backendAddr(j));
  for (const n of cfg.sizes) checkAddrs(vipOf(0), vipOf(n - 1));

  // The server namespace: the backends' addresses and one server.
  const srv = createNetns('wgsvc-srv');
  cleanup.add(() => srv.remove(), `remove ${srv.name}`);
  for (let j = 0; j < per; j++) ip(['-n', srv.name, 'addr', 'add', `${backendAddr(j)}/32`, 'dev', 'lo']);
  const ports = [...new Set(cfg.sizes.flatMap((n) => [backendPort(0), backendPort(n - 1)]))];
  const server = spawnIn(srv.name, [tool.path, 'serve', ports.join(',')], { cpu: 1 });
  cleanup.add(() => stopChild(server), 'stop the server');
  await settle(server, 'the services server', 100);

  let k = 0;
  const attach = (g: Group): void => {
    if (100 + k > 127) throw new Error('too many client namespaces');
    const net = `10.199.${100 + k}`;
    k++;
    createVethPair({ a: { netns: g.ns, name: 'eth0', addrs: [`${net}.2/24`] }, b: { netns: srv, name: `c${k}`, addrs: [`${net}.1/24`] } });
    ip(['-n', g.ns.name, 'route', 'add', 'default', 'via', `${net}.1`]);
    checkAddrs(`${net}.2`);
  };
  const groups: Group[] = [];
  const newGroup = (mech: WireMech, n: number, prefix: string): Group => {
    const ns = createNetns(prefix);
    cleanup.add(() => ns.remove(), `remove ${ns.name}`);
    const g: Group = { mech, n, ns };
    attach(g);
    groups.push(g);
    return g;
  };

  newGroup('direct', 0, 'wgsvc-cd');

  // Waggle: per size a bpffs directory, a cgroup with the socket programs, the maps written.
  const fs = mountTempBpffs();
  cleanup.add(() => fs.unmount(), 'unmount the wire bpffs');
  const waggleApplyMs: Record<number, number> = {};
  const cgroups = new Map<Group, ReturnType<typeof createCgroup>>();
  for (const n of cfg.sizes) {
    const g = newGroup('waggle', n, 'wgsvc-cw');
    const pinDir = join(fs.path, `w${n}`);
    g.pinDir = pinDir;
    const cg = createCgroup('wgsvc-lb');
    cleanup.add(() => cg.remove(), `remove cgroup ${cg.path}`);
    cgroups.set(g, cg);
    cleanup.add(() => { detachSocketLb(pinDir, { removeMaps: true }); }, `detach the socket programs of ${n} services`);
    attachSocketLb({ pinDir, cgroupPath: cg.path });
    const writer = LbMapWriter.open(pinDir);
    try {
      waggleApplyMs[n] = writer.apply(waggleState(n, per)).ms;
    } finally {
      writer.close();
    }
    progress(`  wire: Waggle socket LB with ${n} services on cgroup ${cg.path} (writer ${waggleApplyMs[n]?.toFixed(0)} ms)`);
  }

  // Linux: per mechanism and size a client namespace with the rules (or the one the control part loaded).
  const loadSeconds: WireResult['loadSeconds'] = {};
  for (const mech of linux) {
    for (const n of cfg.sizes) {
      const h = handed[mech];
      if (h && h.n === n) {
        const g: Group = { mech, n, ns: h.ns };
        attach(g);
        groups.push(g);
        progress(`  wire: ${mech} with ${n} services: the control part's namespace ${h.ns.name}`);
        continue;
      }
      const g = newGroup(mech, n, `wgsvc-c${mech === 'nft' ? 'n' : mech === 'iptables' ? 'i' : 'l'}`);
      const text = rulesetText(mech, n, per);
      progress(`  wire: loading ${mech} with ${n} services…`);
      const ms = await loadRuleset(mech, g.ns.name, text);
      await checkRuleset(mech, g.ns.name, n, per);
      (loadSeconds[mech] ??= {})[n] = ms / 1000;
      progress(`  wire: ${mech} with ${n} services loaded in ${(ms / 1000).toFixed(1)} s`);
    }
  }

  // One client per group, pinned to CPU 0 (Waggle's moved into its cgroup before its first connect).
  for (const g of groups) {
    const child = spawnIn(g.ns.name, [tool.path, 'crr'], { cpu: 0, stdin: 'pipe' });
    cleanup.add(() => stopChild(child), `stop the client in ${g.ns.name}`);
    const cg = cgroups.get(g);
    if (cg) cg.addProcess(child.pid as number);
    g.client = new LineProcess(child, `client ${g.mech} ${g.n}`);
  }

  const contenders: Contender[] = [];
  const mk = (group: Group, target: Target, addr: string, port: number, wantPort: number): void => {
    contenders.push({ group, target, addr, port, wantPort, rate: [], cpu: [], p50: [], p99: [], errors: 0, backends: 0 });
  };
  for (const g of groups) {
    if (g.mech === 'direct') {
      mk(g, 'first', backendAddr(0), backendPort(0), backendPort(0));
      continue;
    }
    mk(g, 'first', vipOf(0), SERVICE_PORT, backendPort(0));
    mk(g, 'last', vipOf(g.n - 1), SERVICE_PORT, backendPort(g.n - 1));
  }

  // A short check of every contender: answers from the backends, spread over all of them.
  for (const c of contenders) {
    const r = await slice(c, 100);
    const want = c.group.mech === 'direct' ? 1 : per;
    if (r.backends !== want) throw new Error(`${c.group.mech} ${c.group.n} ${c.target}: ${r.backends} distinct backends answered ${r.n} connections, expected ${want}`);
  }
  progress(`  wire: ${contenders.length} contenders checked (every answer from the service's backends, all ${per} used); ${cfg.rounds} rounds of ${cfg.sliceMs} ms slices`);

  // CPU time of the client and the server: without IRQ time accounting, the softirq work of the packets they send
  // (veth delivery, netfilter, conntrack, NAT) runs in their context and is charged to them. The softirq threads are
  // left out: on this shared machine they also run other work's packets.
  const serverPid = server.pid as number;
  const cpuNow = (c: Contender): number => taskRuntimeNs(serverPid) + taskRuntimeNs(c.group.client?.child.pid as number);

  // A round: the direct client, then per target a block of every size's contenders, each size's mechanisms back to back;
  // the order of targets, sizes and mechanisms rotates from round to round. Compared slices are at most a block apart.
  const sizes = cfg.sizes;
  const mechOrder = [...new Set(contenders.filter((c) => c.group.mech !== 'direct').map((c) => c.group.mech))];
  const find = (mech: WireMech, n: number, target: Target): Contender | undefined =>
    contenders.find((c) => c.group.mech === mech && c.group.n === n && c.target === target);
  for (let round = -1; round < cfg.rounds; round++) {
    const r0 = Math.max(round, 0);
    const order: Contender[] = contenders.filter((c) => c.group.mech === 'direct');
    const targets: Target[] = r0 % 2 === 0 ? ['first', 'last'] : ['last', 'first'];
    for (const t of targets) {
      for (let i = 0; i < sizes.length; i++) {
        const n = sizes[(i + r0) % sizes.length] as number;
        for (let j = 0; j < mechOrder.length; j++) {
          const c = find(mechOrder[(j + r0) % mechOrder.length] as WireMech, n, t);
          if (c) order.push(c);
        }
      }
    }
    for (const c of order) {
      const cpu0 = cpuNow(c);
      const r = await slice(c, cfg.sliceMs);
      const cpu = cpuNow(c) - cpu0;
      if (round < 0) continue;
      c.rate.push((r.n * 1e9) / r.ns);
      c.cpu.push(cpu / r.n);
      c.p50.push(r.p50);
      c.p99.push(r.p99);
      c.errors += r.errors;
      c.backends = Math.max(c.backends, r.backends);
    }
    if (round >= 0) {
      const w = contenders.filter((c) => c.group.mech === 'waggle' && c.target === 'last').map((c) => `${c.group.n}: ${Math.round(c.rate.at(-1) as number)}`).join(', ');
      progress(`  wire: round ${round + 1}/${cfg.rounds} done (waggle last service, conn/s: ${w})`);
    }
  }

  let translated = 0;
  for (const g of groups) if (g.pinDir) translated += socketLbStats(g.pinDir).connectTranslated;
  if (translated === 0) throw new Error('the socket programs translated no connect()');

  const figures: WireResult['figures'] = {};
  for (const c of contenders) {
    const byN = (figures[c.group.mech] ??= {});
    (byN[c.group.n] ??= {})[c.target] = {
      rate: { median: median(c.rate), min: Math.min(...c.rate), max: Math.max(...c.rate), samples: c.rate },
      cpuNs: { median: median(c.cpu), samples: c.cpu },
      p50: median(c.p50), p99: median(c.p99), errors: c.errors, backends: c.backends,
    };
  }
  return { rounds: cfg.rounds, sliceMs: cfg.sliceMs, figures, loadSeconds, waggleApplyMs, waggleTranslated: translated, skipped };
}
