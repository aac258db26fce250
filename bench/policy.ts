/**
 * Policy benchmark: what identity-based policy costs in the datapath and in
 * the control plane, with Linux's iptables and nftables side by side.
 *
 *   1.  testrun   the endpoint program's ns/packet (BPF_PROG_TEST_RUN) with 1,
 *                 100 and 10,000 policy entries and 10,000 ipcache entries, on
 *                 a conntrack hit and on a packet the policy decides every
 *                 time (bench/policy-testrun.ts); goal: flat (max/min ≤ 1.10)
 *   2.  wire      ns/packet on one core for real traffic through iptables,
 *                 nftables (a linear chain and a set) and Waggle as the rules
 *                 grow 10 → 10,000 (bench/policy-wire.ts)
 *   3.  stateful  packets/s and TCP transactions/s, Waggle with policy and
 *                 conntrack against a bridge (br_netfilter) or router namespace
 *                 with iptables conntrack and 1,000 rules (bench/policy-wire.ts);
 *                 goal ≥ 1.5×. Its bound rides along: Waggle's pair without
 *                 policy and the Linux topology without a firewall
 *   4a. engine    PolicyEngine.sync for 1,000 endpoints × 1,000 rules: full
 *                 recompute (goal ≤ 1 s) and an incremental re-sync
 *                 (bench/policy-control.ts)
 *   4b. enforce   `waggle apply` returning → enforcement on the wire, 100
 *                 endpoints of a real agent (bench/policy-control.ts); goal ≤ 100 ms
 *
 * They run in the order 1, 4a, 4b, then 2 and 3 together (one agent and one
 * set of namespaces), and are reported in the order above. The traffic comes
 * from a small C tool compiled at start (bench/policy-tool.ts).
 *
 * Every figure is measured in this run; the method is printed next to it.
 * Sizes, rounds and the parts to run come from environment variables (see
 * {@link readConfig}); e.g. a quick run:
 *
 *   POLICY_BENCH_PARTS=testrun,engine POLICY_BENCH_ENGINE_ENDPOINTS=100 node dist/bench/run.js policy
 *
 * Everything made here (namespaces, veths, bpffs mounts, agents, processes;
 * iptables/nft state lives in the benchmark's own namespaces) is removed at
 * the end, on error and on SIGINT/SIGTERM. Nothing touches the root
 * namespace's firewall or sysctls, and traffic stays inside the namespaces
 * made here (10.199.0.0/16). Needs root.
 */
import { availableParallelism } from 'node:os';
import { BenchCleanup, buildTool, checkAborted, killChildren, r1, r3, runInterruptible, scope, verdict, type Tool } from './policy-tool.js';
import { runTestrun, type TestrunConfig, type TestrunResult } from './policy-testrun.js';
import { runWire, type WireConfig, type WireResult } from './policy-wire.js';
import { runEngine, runEnforce, type EngineConfig, type EngineResult, type EnforceConfig, type EnforceResult } from './policy-control.js';

const PARTS = ['testrun', 'wire', 'stateful', 'engine', 'enforce'] as const;
type Part = (typeof PARTS)[number];

interface Config {
  parts: Set<Part>;
  testrun: TestrunConfig;
  wire: WireConfig;
  engine: EngineConfig;
  enforce: EnforceConfig;
}

function envList(name: string, def: string): string[] {
  return (process.env[name] ?? def).split(',').map((s) => s.trim()).filter((s) => s !== '');
}

/** POLICY_BENCH_STATEFUL_LINUX: the Linux side of part 3. */
function statefulLinux(): 'bridge' | 'router' {
  const v = process.env.POLICY_BENCH_STATEFUL_LINUX ?? 'bridge';
  if (v !== 'bridge' && v !== 'router') throw new Error(`POLICY_BENCH_STATEFUL_LINUX must be bridge or router, got ${JSON.stringify(v)}`);
  return v;
}

function envInt(name: string, def: number, min = 1): number {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return def;
  const v = Number(raw);
  if (!Number.isInteger(v) || v < min) throw new Error(`${name} must be an integer >= ${min}, got ${JSON.stringify(raw)}`);
  return v;
}

function envSizes(name: string, def: string): number[] {
  const sizes = envList(name, def).map(Number);
  if (sizes.length === 0 || sizes.some((n) => !Number.isInteger(n) || n < 1)) throw new Error(`${name} must be a comma-separated list of positive integers`);
  return [...new Set(sizes)].sort((a, b) => a - b);
}

/**
 * The configuration, from the environment (defaults in brackets):
 * POLICY_BENCH_PARTS [testrun,wire,stateful,engine,enforce];
 * testrun: POLICY_BENCH_TESTRUN_SIZES [1,100,10000], _TESTRUN_IDENTITIES [10000],
 *   _TESTRUN_REPEAT [5000], _TESTRUN_ROUNDS [61];
 * wire: _WIRE_SIZES [10,100,1000,10000], _WIRE_LINUX [iptables,iptables-legacy,nft,nft-set],
 *   _WIRE_KINDS [udp,raw], _WIRE_ROUNDS [7], _WIRE_SLICE_MS [100] (per slice; each contender slice
 *   is paired with a baseline slice);
 * stateful: _STATEFUL_RULES [1000], _STATEFUL_ROUNDS [7], _STATEFUL_UDP_MS [500], _STATEFUL_RR_MS [1000],
 *   _STATEFUL_LINUX [bridge] (bridge: the issue's bridge + br_netfilter; router: a router namespace);
 * engine: _ENGINE_ENDPOINTS [1000], _ENGINE_RULES [1000], _ENGINE_REPEATS [5];
 * enforce: _ENFORCE_ENDPOINTS [100], _ENFORCE_REPEATS [5].
 */
function readConfig(): Config {
  const parts = envList('POLICY_BENCH_PARTS', PARTS.join(','));
  for (const p of parts) if (!(PARTS as readonly string[]).includes(p)) throw new Error(`POLICY_BENCH_PARTS: no part ${p} (have ${PARTS.join(', ')})`);
  const linux = envList('POLICY_BENCH_WIRE_LINUX', 'iptables,iptables-legacy,nft,nft-set');
  for (const l of linux) if (!['iptables', 'iptables-legacy', 'nft', 'nft-set'].includes(l)) throw new Error(`POLICY_BENCH_WIRE_LINUX: no ${l}`);
  const kinds = envList('POLICY_BENCH_WIRE_KINDS', 'udp,raw');
  for (const k of kinds) if (!['udp', 'raw'].includes(k)) throw new Error(`POLICY_BENCH_WIRE_KINDS: no ${k}`);
  return {
    parts: new Set(parts as Part[]),
    testrun: {
      sizes: envSizes('POLICY_BENCH_TESTRUN_SIZES', '1,100,10000'),
      identities: envInt('POLICY_BENCH_TESTRUN_IDENTITIES', 10000, 2),
      repeat: envInt('POLICY_BENCH_TESTRUN_REPEAT', 5000),
      rounds: envInt('POLICY_BENCH_TESTRUN_ROUNDS', 61),
    },
    wire: {
      wire: parts.includes('wire'),
      stateful: parts.includes('stateful'),
      sizes: envSizes('POLICY_BENCH_WIRE_SIZES', '10,100,1000,10000'),
      linux: linux as WireConfig['linux'],
      kinds: kinds as WireConfig['kinds'],
      rounds: envInt('POLICY_BENCH_WIRE_ROUNDS', 7),
      sliceMs: envInt('POLICY_BENCH_WIRE_SLICE_MS', 100, 20),
      statefulRules: envInt('POLICY_BENCH_STATEFUL_RULES', 1000),
      statefulRounds: envInt('POLICY_BENCH_STATEFUL_ROUNDS', 7),
      statefulUdpMs: envInt('POLICY_BENCH_STATEFUL_UDP_MS', 500, 20),
      statefulRrMs: envInt('POLICY_BENCH_STATEFUL_RR_MS', 1000, 20),
      statefulLinux: statefulLinux(),
    },
    engine: {
      endpoints: envInt('POLICY_BENCH_ENGINE_ENDPOINTS', 1000),
      rules: envInt('POLICY_BENCH_ENGINE_RULES', 1000),
      repeats: envInt('POLICY_BENCH_ENGINE_REPEATS', 5),
    },
    enforce: {
      endpoints: envInt('POLICY_BENCH_ENFORCE_ENDPOINTS', 100, 2),
      repeats: envInt('POLICY_BENCH_ENFORCE_REPEATS', 5),
    },
  };
}


function reportTestrun(cfg: TestrunConfig, r: TestrunResult, figures: Record<string, number>, out: string[]): void {
  const GOAL = 1.1;
  for (const [path, res] of [['CtHit', r.ctHit], ['Policy', r.policy]] as const) {
    for (const n of cfg.sizes) figures[`testrun${path}${n}Ns`] = res.bySize[n]?.median ?? NaN;
    figures[`testrun${path}MaxOverMin`] = r3(res.maxOverMin);
    for (const n of cfg.sizes) figures[`testrun${path}${n}PairedRatio`] = r3(res.pairedVsSmallest[n] ?? NaN);
  }
  out.push(
    `1. endpoint program per packet (BPF_PROG_TEST_RUN of from_endpoint, kernel ns/packet, ${cfg.repeat} runs per call;`,
    `   median of ${r.rounds} interleaved rounds, the sizes of a path back to back in a rotating order; min – max) with ${cfg.identities} ipcache entries (identities)`,
    `   method: one datapath per size in a temp bpffs, maps filled through the codecs, run on a veth of a throw-away netns;`,
    `   (a) UDP packet of an established connection: conntrack hit (checked: its ct entry counted every run);`,
    `   (b) ICMP timestamp (untracked): every run resolves the peer in the ipcache and does the policy decision (hash, then trie; peer and any peer)`,
    `       (checked: allowed by its rule, no ct entry made, the same packet to a peer without a rule is dropped)`,
  );
  const w = Math.max(...cfg.sizes.map((n) => String(n).length));
  for (const [label, res] of [['(a) ct hit', r.ctHit], ['(b) policy', r.policy]] as const) {
    const cells = cfg.sizes.map((n) => {
      const s = res.bySize[n];
      return s ? `${String(n).padStart(w)} ${n === 1 ? 'entry: ' : 'entries:'} ${s.median} ns (${s.min} – ${s.max})` : '';
    });
    out.push(`   ${label}  ${cells.join('   ')}`);
    out.push(`   ${' '.repeat(label.length)}  max/min of medians ${res.maxOverMin.toFixed(3)} (goal <= ${GOAL}: ${verdict(res.maxOverMin <= GOAL)}); `
      + `per-round ratio to ${cfg.sizes[0]} ${cfg.sizes[0] === 1 ? 'entry' : 'entries'} (median): ${cfg.sizes.map((n) => `${n}: ${(res.pairedVsSmallest[n] ?? NaN).toFixed(3)}`).join(', ')}`);
  }
}

function fmtNs(x: number | undefined): string {
  return x === undefined || !Number.isFinite(x) ? '-' : `${Math.round(x)}`;
}

function reportWire(cfg: WireConfig, r: WireResult, figures: Record<string, number>, out: string[]): void {
  if (r.wire) {
    const wr = r.wire;
    out.push(
      `2. per-packet cost on the wire as rules grow: ns/packet on one core (CPU time, and wall clock), median of ${wr.rounds} rounds`,
      ...wr.method.map((m) => `   ${m}`),
      ...(wr.skipped.length ? [`   skipped (not installed): ${wr.skipped.join(', ')}`] : []),
    );
    for (const kind of cfg.kinds) {
      const both = wr.kinds[kind];
      if (!both) continue;
      const kk = kind === 'udp' ? 'Udp' : 'Raw';
      out.push(`   ${kind === 'udp' ? 'UDP, one flow (Waggle: conntrack hit after the first packet; iptables/nft: no conntrack, every packet walks the rules)' : 'raw IP protocol 253 (untracked by Waggle\'s conntrack: every packet decided by the rules in all of them)'}`);
      for (const [which, k, suffix] of [['CPU ns/packet', both.cpu, 'CpuNs'], ['wall ns/packet', both.wall, 'WallNs']] as const) {
        out.push(`   ${which.padEnd(16)}${cfg.sizes.map((n) => `N=${n}`.padStart(17)).join('')}`);
        out.push(`   ${'(no rules)'.padEnd(16)}linux router ${fmtNs(k.routerBase)}, waggle endpoints without policy ${fmtNs(k.waggleBase)}`);
        figures[`wire${kk}RouterBase${suffix}`] = Math.round(k.routerBase);
        figures[`wire${kk}WaggleBase${suffix}`] = Math.round(k.waggleBase);
        for (const mech of Object.keys(k.ns)) {
          const base = mech === 'waggle' ? k.waggleBase : k.routerBase;
          const row = cfg.sizes.map((n) => {
            const extra = k.extra[mech]?.[n];
            const v = extra === undefined ? undefined : base + extra;
            return `${fmtNs(v)} (${extra !== undefined && extra < 0 ? '-' : '+'}${fmtNs(extra !== undefined ? Math.abs(extra) : undefined)})`.padStart(17);
          });
          out.push(`   ${mech.padEnd(16)}${row.join('')}`);
          const mk = mech.replace(/(^|-)([a-z])/g, (_m: string, _d: string, c: string) => c.toUpperCase());
          for (const n of cfg.sizes) {
            figures[`wire${kk}${mk}${n}${suffix}`] = Math.round(base + (k.extra[mech]?.[n] ?? NaN));
            figures[`wire${kk}${mk}${n}Extra${suffix}`] = Math.round(k.extra[mech]?.[n] ?? NaN);
            figures[`wire${kk}${mk}${n}Own${suffix}`] = Math.round(k.ns[mech]?.[n] ?? NaN);
          }
        }
      }
    }
    out.push(
      '   (in brackets: the median of the paired differences to the same path without rules / policy measured next to it, i.e. the',
      '   rule set\'s cost per packet; outside: the baseline\'s median plus that difference. JSON: ...Own... is the contender\'s own median)',
    );
    if (Object.keys(wr.applyMs).length) {
      out.push(`   Waggle: agent API apply of the per-peer policy (fromCIDR /32 rules + 1), request to answer (the agent re-syncs every policy):`);
      out.push(`   ${Object.entries(wr.applyMs).map(([n, ms]) => `N=${n}: ${Math.round(ms)} ms`).join(', ')}`);
      for (const [n, ms] of Object.entries(wr.applyMs)) figures[`wireWaggleApply${n}Ms`] = Math.round(ms);
    }
  }
  if (r.stateful) {
    const s = r.stateful;
    if (r.wire) out.push('');
    const GOAL = 1.5;
    const walkedShare = s.udp.routerWalked / Math.max(1, s.udp.routerWalked + s.udp.routerEstablished);
    const line = (x: { waggle: { median: number; min: number; max: number }; linux: { median: number; min: number; max: number } }, unit: string): string =>
      `waggle ${Math.round(x.waggle.median)} ${unit} (${Math.round(x.waggle.min)} – ${Math.round(x.waggle.max)}), linux ${Math.round(x.linux.median)} ${unit} (${Math.round(x.linux.min)} – ${Math.round(x.linux.max)})`;
    const ratio = (x: { ratio: number; paired: number }): string =>
      `ratio of medians ${x.ratio.toFixed(2)}x (median of per-round ratios ${x.paired.toFixed(2)}x); goal >= ${GOAL}x: ${verdict(x.ratio >= GOAL)}`;
    out.push(
      `3. stateful throughput, Waggle (policy + conntrack) vs a Linux ${cfg.statefulLinux === 'bridge' ? 'bridge (br_netfilter)' : 'router namespace'} with iptables conntrack and ${cfg.statefulRules} rules`,
      `   (median of ${s.rounds} interleaved rounds; min – max)`,
      ...s.method.map((m) => `   ${m}`),
      `   UDP one-way, 2 senders (one per CPU) + a reader:  ${line(s.udp, 'pkt/s')}`,
      `      ${ratio(s.udp)}`,
      `      ${cfg.statefulLinux} rule counters: ${s.udp.routerEstablished} packets matched the ESTABLISHED rule, ${s.udp.routerWalked} walked all ${cfg.statefulRules} rules`,
      `      to the client's (${(100 * walkedShare).toFixed(1)}%): one-way UDP never sees a reply, so netfilter's conntrack keeps it NEW, while`,
      '      Waggle\'s conntrack entry covers the forward direction from the first packet (no policy lookup after it).',
      `   UDP two-way (the reader answers each batch once):  ${line(s.udpEcho, 'pkt/s')}`,
      `      ${ratio(s.udpEcho)}`,
      `      ${cfg.statefulLinux} rule counters: ${s.udpEcho.routerEstablished} packets matched ESTABLISHED, ${s.udpEcho.routerWalked} walked the rules`,
      `   TCP request/response (1 byte, one connection):  ${line(s.rr, '/s')}`,
      `      ${ratio(s.rr)}`,
      `   UDP loss (1 − received / sent, median, one-way): waggle ${(100 * s.udp.loss.waggle).toFixed(1)}%, linux ${(100 * s.udp.loss.linux).toFixed(1)}%`,
    );
    const b = s.bound;
    const kinds = [['one-way UDP', b.udp], ['two-way UDP', b.udpEcho], ['request/response', b.rr]] as const;
    out.push(
      `   bound, measured in the same rounds: Waggle's pair WITHOUT policy over the Linux path with its firewall (the most a policy costing nothing`,
      `      could reach on Waggle's path): ${kinds.map(([k, x]) => `${k} ${x.waggleBareOverLinux.toFixed(2)}x`).join(', ')};`,
      `      the Linux topology without its firewall over the same with it: ${kinds.map(([k, x]) => `${k} ${x.linuxBareOverLinux.toFixed(2)}x`).join(', ')}`,
    );
    const missed = [s.udp.ratio < GOAL ? 'one-way UDP' : '', s.udpEcho.ratio < GOAL ? 'two-way UDP' : '', s.rr.ratio < GOAL ? 'TCP request/response' : ''].filter(Boolean);
    if (missed.length) out.push(`   NOTE: the ${GOAL}x goal is NOT met on ${missed.join(' and ')}.`);
    const capped = kinds.filter(([, x]) => x.waggleBareOverLinux < GOAL).map(([k]) => k);
    if (capped.length) out.push(`   NOTE: on ${capped.join(' and ')} even Waggle without any policy stays under ${GOAL}x the Linux path: the goal is out of reach there on this machine.`);
    Object.assign(figures, {
      statefulRules: cfg.statefulRules,
      statefulLinuxIsBridge: cfg.statefulLinux === 'bridge' ? 1 : 0,
      statefulUdpWagglePps: Math.round(s.udp.waggle.median),
      statefulUdpLinuxPps: Math.round(s.udp.linux.median),
      statefulUdpRatioOfMedians: r3(s.udp.ratio),
      statefulUdpPairedRatio: r3(s.udp.paired),
      statefulUdpLossWaggle: r3(s.udp.loss.waggle),
      statefulUdpLossLinux: r3(s.udp.loss.linux),
      statefulUdpRouterWalkedShare: r3(walkedShare),
      statefulUdpEchoWagglePps: Math.round(s.udpEcho.waggle.median),
      statefulUdpEchoLinuxPps: Math.round(s.udpEcho.linux.median),
      statefulUdpEchoRatioOfMedians: r3(s.udpEcho.ratio),
      statefulUdpEchoPairedRatio: r3(s.udpEcho.paired),
      statefulRrWagglePerSec: Math.round(s.rr.waggle.median),
      statefulRrLinuxPerSec: Math.round(s.rr.linux.median),
      statefulRrRatioOfMedians: r3(s.rr.ratio),
      statefulRrPairedRatio: r3(s.rr.paired),
      statefulGoalMet: s.udp.ratio >= GOAL && s.udpEcho.ratio >= GOAL && s.rr.ratio >= GOAL ? 1 : 0,
      statefulBoundUdpWaggleBareOverLinux: r3(b.udp.waggleBareOverLinux),
      statefulBoundUdpEchoWaggleBareOverLinux: r3(b.udpEcho.waggleBareOverLinux),
      statefulBoundRrWaggleBareOverLinux: r3(b.rr.waggleBareOverLinux),
      statefulBoundUdpLinuxBareOverLinux: r3(b.udp.linuxBareOverLinux),
      statefulBoundUdpEchoLinuxBareOverLinux: r3(b.udpEcho.linuxBareOverLinux),
      statefulBoundRrLinuxBareOverLinux: r3(b.rr.linuxBareOverLinux),
    });
  }
}

function reportEngine(cfg: EngineConfig, r: EngineResult, figures: Record<string, number>, out: string[]): void {
  const GOAL_MS = 1000;
  out.push(
    `4a. control plane: PolicyEngine.sync on ${r.endpoints} endpoints x ${r.rules} rules (temp bpffs, synthetic endpoint records)`,
    ...r.method.map((m) => `   ${m}`),
    `   result: ${r.identities} identities, ${r.policyEntries} policy-map entries, ${r.ipcacheEntries} ipcache entries`,
    `   first sync (compute + write everything into empty maps)   ${r.coldMs.toFixed(0)} ms   (goal <= ${GOAL_MS} ms: ${verdict(r.coldMs <= GOAL_MS)})`,
    `   full recompute, nothing changed (median of ${cfg.repeats})      ${r.recomputeMs.median.toFixed(0)} ms   (${r.recomputeMs.min.toFixed(0)} – ${r.recomputeMs.max.toFixed(0)}; goal <= ${GOAL_MS} ms: ${verdict(r.recomputeMs.median <= GOAL_MS)})`,
    `   incremental: one policy's port changed (median of ${cfg.repeats})   ${r.incrementalMs.median.toFixed(0)} ms   (${r.incrementalMs.min.toFixed(0)} – ${r.incrementalMs.max.toFixed(0)}; `
      + `${r.incrementalWritten} entries written, ${r.incrementalRemoved} removed per change)`,
    `   of which resolving alone (prepare + resolve every endpoint, no map I/O, median)   ${r.resolveMs.toFixed(0)} ms`,
  );
  Object.assign(figures, {
    engineEndpoints: r.endpoints,
    engineRules: r.rules,
    engineIdentities: r.identities,
    enginePolicyEntries: r.policyEntries,
    engineIpcacheEntries: r.ipcacheEntries,
    engineColdSyncMs: r1(r.coldMs),
    engineRecomputeMs: r1(r.recomputeMs.median),
    engineIncrementalMs: r1(r.incrementalMs.median),
    engineIncrementalWritten: r.incrementalWritten,
    engineIncrementalRemoved: r.incrementalRemoved,
    engineResolveMs: r1(r.resolveMs),
  });
}

function reportEnforce(r: EnforceResult, figures: Record<string, number>, out: string[]): void {
  const GOAL_MS = 100;
  out.push(
    `4b. apply → enforcement on the wire, real agent with ${r.endpoints} endpoints (${r.delays.length} repeats)`,
    ...r.method.map((m) => `   ${m}`),
    `   per repeat, ms from \`waggle apply\` returning to the start of the first failed probe: ${r.delays.map((d) => d.toFixed(1)).join(', ')}`,
    `   median ${r.delayMedian.toFixed(1)} ms, max ${r.delayMax.toFixed(1)} ms (goal <= ${GOAL_MS} ms: ${verdict(r.delayMax <= GOAL_MS)}); `
      + `the probe before it (still allowed) started ${r.lastOkMedian.toFixed(1)} ms from the return (median)`,
    `   \`waggle apply\` itself (process start to exit) median ${r.cliMedian.toFixed(0)} ms; agent sync (its log) median ${r.syncMedian.toFixed(1)} ms`,
    `   after \`waggle delete\` of the deny: first allowed probe ${r.restoreMedian.toFixed(1)} ms from its return (median)`,
  );
  Object.assign(figures, {
    enforceEndpoints: r.endpoints,
    enforceDelayMsMedian: r1(r.delayMedian),
    enforceDelayMsMax: r1(r.delayMax),
    enforceLastAllowedMsMedian: r1(r.lastOkMedian),
    enforceApplyCliMsMedian: r1(r.cliMedian),
    enforceAgentSyncMsMedian: r1(r.syncMedian),
    enforceRestoreMsMedian: r1(r.restoreMedian),
  });
}

export async function run(opts: { json: boolean }): Promise<Record<string, number>> {
  const cfg = readConfig();
  const progress = (s: string): void => { if (!opts.json) process.stderr.write(`${s}\n`); };
  const sections: Record<'testrun' | 'wire' | 'engine' | 'enforce', string[]> = { testrun: [], wire: [], engine: [], enforce: [] };
  const figures: Record<string, number> = { cpus: availableParallelism() };
  const cleanup = new BenchCleanup();
  let tool: Tool | undefined;
  return runInterruptible('policy', cleanup, async () => {
    if (cfg.parts.has('testrun')) {
      progress('policy: part 1, BPF_PROG_TEST_RUN');
      const { part, done } = scope(cleanup, 'testrun');
      const r = await runTestrun(cfg.testrun, part, progress);
      await done();
      reportTestrun(cfg.testrun, r, figures, sections.testrun);
    }
    checkAborted();
    if (cfg.parts.has('engine')) {
      progress('policy: part 4a, PolicyEngine.sync');
      const { part, done } = scope(cleanup, 'engine');
      const r = await runEngine(cfg.engine, part, progress);
      await done();
      reportEngine(cfg.engine, r, figures, sections.engine);
    }
    checkAborted();
    if (cfg.parts.has('enforce') || cfg.parts.has('wire') || cfg.parts.has('stateful')) {
      tool = buildTool();
      cleanup.add(() => tool?.remove(), 'remove the traffic tool');
    }
    checkAborted();
    if (cfg.parts.has('enforce')) {
      progress('policy: part 4b, apply → enforcement');
      const { part, done } = scope(cleanup, 'enforce');
      const r = await runEnforce(cfg.enforce, tool as Tool, part, progress);
      await killChildren();
      await done();
      reportEnforce(r, figures, sections.enforce);
    }
    checkAborted();
    if (cfg.parts.has('wire') || cfg.parts.has('stateful')) {
      progress('policy: parts 2 and 3, traffic through iptables, nftables and Waggle');
      const { part, done } = scope(cleanup, 'wire');
      const r = await runWire(cfg.wire, tool as Tool, part, progress);
      await killChildren();
      await done();
      reportWire(cfg.wire, r, figures, sections.wire);
    }
    const out = [sections.testrun, sections.wire, sections.engine, sections.enforce].filter((x) => x.length > 0).map((x) => x.join('\n'));
    if (!opts.json) process.stdout.write(`${out.join('\n\n')}\n`);
    return figures;
  });
}
