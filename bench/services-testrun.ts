/**
 * Part "testrun" of the services benchmark: the endpoint program's
 * per-packet cost (bpf/lxc.bpf.c from_endpoint with its per-packet service
 * translation, bpf/lib/lb_xlate.h) under BPF_PROG_TEST_RUN, with 10, 1,000
 * and 10,000 services × 10 backends in the maps. Goal: flat.
 *
 * One copy of the endpoint datapath per size (loadEndpointDatapath, own maps
 * in its own directory of a private bpffs), the LB maps written by the real
 * LbMapWriter (bench/services-rules.ts waggleState: random selection), all
 * run on one end of a veth pair in a throw-away namespace whose ifindex has
 * an `lxc_config` entry (client endpoint 10.199.200.7, no policy). Paths, per
 * size:
 *   established first / last  a TCP ACK of a connection to the first / last
 *              service's VIP that the program already translated (primed by a
 *              SYN): lb_services hit, lb_nat hit, lb_backends, DNAT with
 *              checksum updates, conntrack hit on the translated tuple
 *   new first / last  a SYN from a source port never used before: lb_services,
 *              backend selection, lb_nat + lb_rev_nat inserts, conntrack
 *              create, trace event
 *   plain      a TCP ACK of a connection to an address that is no service
 *              (10.199.98.200:80): the lb_services miss + conntrack hit
 * The program rewrites the packet it translates, so a `repeat` count would
 * run later iterations on the already translated packet: every measurement
 * is one run (repeat 1) of the original frame, the kernel's duration of that
 * run (it includes the test-run timer's own two clock reads, the same for
 * every path); a sample is the median of `calls` runs; samples of every path
 * and size interleave in rounds (rotated order), and the figures are medians
 * over rounds. Checked before measuring: the SYN and the ACK to each VIP
 * leave translated to one of its 10 backends on the service's backend port
 * with valid checksums (TC_ACT_OK: the backends are not local endpoints),
 * the ACK to the same backend as its SYN; the plain packet leaves
 * untouched.
 */
import { join } from 'node:path';
import { inNetns } from '../src/netlink/netns.js';
import { loadEndpointDatapath, lxcConfigOf, openEvents, type EndpointDatapath } from '../src/datapath/lxc.js';
import { LbMapWriter } from '../src/datapath/lb-maps.js';
import { policyStateMap, writePolicyRevision } from '../src/datapath/policy-maps.js';
import { ACK, SYN, TC_ACT_OK, eth, ipv4, parseFrame, skbCtx, tcp, withL4Checksum } from '../src/datapath/test-frames.js';
import type { RingBuffer } from '../src/bpf/ringbuf.js';
import type { TestRunResult } from '../src/bpf/program.js';
import { mountTempBpffs } from '../test/helpers/bpffs.js';
import { createNetns, createVethPair, ifindexIn, type Cleanup } from '../test/helpers/netns.js';
import { median } from './lib.js';
import { BACKEND_NET, backendPort, SERVICE_PORT, vipOf, waggleState } from './services-rules.js';

export interface TestrunConfig {
  sizes: number[];
  per: number;
  rounds: number;
  /** Runs per sample (each one run of the program). */
  calls: number;
}

export const TESTRUN_PATHS = ['establishedFirst', 'establishedLast', 'newFirst', 'newLast', 'plain'] as const;
export type TestrunPath = (typeof TESTRUN_PATHS)[number];

export interface TestrunResult {
  rounds: number;
  calls: number;
  /** Median ns per packet by path and size, with min / max over rounds. */
  ns: Record<TestrunPath, Record<number, { median: number; min: number; max: number }>>;
  /** Per path: largest median / smallest median over the sizes. */
  maxOverMin: Record<TestrunPath, number>;
  /** Per path and size: median over rounds of (ns / the smallest size's ns in the same round). */
  pairedVsSmallest: Record<TestrunPath, Record<number, number>>;
  /** The writer's apply time per size (ms). */
  applyMs: Record<number, number>;
}

const EP = { id: 7, ip: '10.199.200.7', mac: '02:00:00:00:00:07', hostMac: '02:00:00:00:01:07', identity: 60000 };
const PLAIN_DST = '10.199.98.200';
const TCP = 6;

function frame(dst: string, sport: number, dport: number, flags: number): Buffer {
  return eth(EP.hostMac, EP.mac, 0x0800, ipv4(EP.ip, dst, TCP, withL4Checksum(EP.ip, dst, TCP, tcp(sport, dport, flags))));
}

interface Size {
  n: number;
  dp: EndpointDatapath;
  rb: RingBuffer;
  frames: Record<'establishedFirst' | 'establishedLast' | 'plain', Buffer>;
  nextPort: number;
}

export async function runTestrun(cfg: TestrunConfig, cleanup: Cleanup, progress: (s: string) => void): Promise<TestrunResult> {
  const fs = mountTempBpffs();
  cleanup.add(() => fs.unmount(), 'unmount the test-run bpffs');
  const ns = createNetns('wgsvc-tr');
  cleanup.add(() => ns.remove(), 'remove the test-run netns');
  createVethPair({ a: { netns: ns, name: 'wgstr0' }, b: { netns: ns, name: 'wgstr1' } });
  const ifindex = ifindexIn(ns, 'wgstr0');
  const ctx = skbCtx(ifindex);

  const sizes: Size[] = [];
  const applyMs: Record<number, number> = {};
  for (const n of cfg.sizes) {
    const pinDir = join(fs.path, `n${n}`);
    const dp = loadEndpointDatapath({ pinDir, routerIpv4: '10.199.250.1' });
    cleanup.add(() => dp.close(), `close the datapath of ${n} services`);
    dp.config.update(ifindex, lxcConfigOf({ endpointId: EP.id, hostIfindex: ifindex, ipv4: EP.ip, mac: EP.mac, hostMac: EP.hostMac, identity: EP.identity }));
    const state = policyStateMap(pinDir);
    try { writePolicyRevision(state, 1); } finally { state.close(); }
    const writer = LbMapWriter.open(pinDir);
    try {
      applyMs[n] = writer.apply(waggleState(n, cfg.per)).ms;
    } finally {
      writer.close();
    }
    const rb = openEvents(pinDir);
    cleanup.add(() => rb.close(), `close the events of ${n} services`);
    const last = n - 1;
    const frames = {
      establishedFirst: frame(vipOf(0), 40000, SERVICE_PORT, ACK),
      establishedLast: frame(vipOf(last), 40001, SERVICE_PORT, ACK),
      plain: frame(PLAIN_DST, 40002, SERVICE_PORT, ACK),
    };
    // Prime the three connections and check what the program does with them.
    inNetns(ns.path, () => {
      const run = (f: Buffer): TestRunResult => dp.program('from_endpoint').testRun({ data: f, ctx });
      for (const [s, sport, name] of [[0, 40000, 'first'], [last, 40001, 'last']] as const) {
        const syn = run(frame(vipOf(s), sport, SERVICE_PORT, SYN));
        const ack = run(frame(vipOf(s), sport, SERVICE_PORT, ACK));
        for (const [what, r] of [['SYN', syn], ['ACK', ack]] as const) {
          if (r.retval !== TC_ACT_OK) throw new Error(`${n} services: ${what} to the ${name} service returned ${r.retval}, not TC_ACT_OK`);
          const p = parseFrame(r.data);
          if (!p.dst.startsWith(`${BACKEND_NET}.`) || p.dport !== backendPort(s) || !p.ipChecksumOk || !p.l4ChecksumOk) {
            throw new Error(`${n} services: ${what} to the ${name} service left as ${p.dst}:${p.dport} (checksums ${p.ipChecksumOk}/${p.l4ChecksumOk}): not translated to a backend`);
          }
        }
        if (parseFrame(syn.data).dst !== parseFrame(ack.data).dst) throw new Error(`${n} services: the ACK went to another backend than its SYN`);
      }
      run(frame(PLAIN_DST, 40002, SERVICE_PORT, SYN));
      const plain = run(frames.plain);
      const p = parseFrame(plain.data);
      if (plain.retval !== TC_ACT_OK || p.dst !== PLAIN_DST || p.dport !== SERVICE_PORT) throw new Error(`${n} services: the plain packet returned ${plain.retval} as ${p.dst}:${p.dport}`);
    });
    sizes.push({ n, dp, rb, frames, nextPort: 1024 });
    progress(`  testrun: datapath with ${n} services × ${cfg.per} backends loaded (writer ${applyMs[n]?.toFixed(0)} ms) and checked`);
  }

  const samples = Object.fromEntries(TESTRUN_PATHS.map((p) => [p, {} as Record<number, number[]>])) as Record<TestrunPath, Record<number, number[]>>;
  const contenders = sizes.flatMap((sz) => TESTRUN_PATHS.map((path) => ({ sz, path })));
  const warmup = 2;
  const durations = new Array<number>(cfg.calls);
  for (let round = -warmup; round < cfg.rounds; round++) {
    const r0 = Math.max(round, 0);
    for (const sz of sizes) sz.rb.skip();
    for (let k = 0; k < contenders.length; k++) {
      const { sz, path } = contenders[(k + r0 * 3) % contenders.length] as (typeof contenders)[number];
      const prog = sz.dp.program('from_endpoint');
      const vip = path === 'newFirst' ? vipOf(0) : vipOf(sz.n - 1);
      const news = path === 'newFirst' || path === 'newLast'
        ? Array.from({ length: cfg.calls }, () => frame(vip, sz.nextPort++, SERVICE_PORT, SYN))
        : undefined;
      if (sz.nextPort > 39000) throw new Error('too many new connections for the source port range: fewer rounds or calls');
      const fixed = news ? undefined : sz.frames[path as 'establishedFirst' | 'establishedLast' | 'plain'];
      inNetns(ns.path, () => {
        for (let i = 0; i < cfg.calls; i++) {
          const r = prog.testRun({ data: news ? (news[i] as Buffer) : (fixed as Buffer), ctx });
          if (r.retval !== TC_ACT_OK) throw new Error(`${path} with ${sz.n} services returned ${r.retval}`);
          durations[i] = r.durationNs;
        }
      });
      if (round >= 0) ((samples[path][sz.n] ??= [])).push(median(durations));
    }
    await new Promise((r) => setImmediate(r));
  }

  const ns0: TestrunResult['ns'] = Object.fromEntries(TESTRUN_PATHS.map((p) => [p, {}])) as TestrunResult['ns'];
  const maxOverMin = {} as Record<TestrunPath, number>;
  const paired = Object.fromEntries(TESTRUN_PATHS.map((p) => [p, {}])) as Record<TestrunPath, Record<number, number>>;
  const smallest = cfg.sizes[0] as number;
  for (const p of TESTRUN_PATHS) {
    for (const n of cfg.sizes) {
      const xs = samples[p][n] as number[];
      ns0[p][n] = { median: median(xs), min: Math.min(...xs), max: Math.max(...xs) };
      paired[p][n] = median(xs.map((x, i) => x / ((samples[p][smallest] as number[])[i] as number)));
    }
    const meds = cfg.sizes.map((n) => ns0[p][n]?.median as number);
    maxOverMin[p] = Math.max(...meds) / Math.min(...meds);
  }
  return { rounds: cfg.rounds, calls: cfg.calls, ns: ns0, maxOverMin, pairedVsSmallest: paired, applyMs };
}
