/**
 * Part 1 of bench/observe.ts: flow ingest on one core, from records the
 * kernel wrote.
 *
 * The datapath's own programs (bpf/lxc.bpf.c `from_endpoint` /
 * `to_endpoint`, loaded once with loadEndpointDatapath as the agent does,
 * pinned under a private bpffs) run under BPF_PROG_TEST_RUN with a repeat
 * count on eight devices of a throw-away namespace (skb->ifindex picks each
 * device's `lxc_config` entry, i.e. the observing endpoint). The frames are
 * a mix of local TCP/UDP (IPv4 and IPv6) traces, traces to and from the
 * world, policy verdicts (allow and deny rules with cookies), policy drops
 * and spoofed-source drops, so every record is a real `struct flow_event`
 * in the real `events` ring. `trace_interval_ns` is 0 so a repeated packet
 * of an established connection is traced every time (monitor aggregation
 * off), and the ring is 16 MiB (the agent's default is 4 MiB, see
 * DEFAULT_EVENTS_SIZE) so one slice holds RECORDS_PER_SLICE records.
 *
 * Each slice refills the ring (untimed), then times one drain by the real
 * reader (src/bpf/ringbuf.ts RingBuffer.consume) into FlowPipeline.ingest,
 * as the agent's `ring.start((view, offset) => flows.ingest(view, offset))`
 * does on each wake-up. Enrichment sources: 100 endpoint views in Maps by ID
 * and address, cookie → rule as PolicyEngine.ruleOf builds it, identity
 * labels (observe-sources.ts).
 */
import { join } from 'node:path';
import type { PerCpuMap } from '../src/bpf/map.js';
import { inNetns } from '../src/netlink/netns.js';
import {
  endpointsMap, loadEndpointDatapath, lxcConfigOf, metricsMap, openEvents, type EndpointDatapath,
} from '../src/datapath/lxc.js';
import { policyMap, policyStateMap, writePolicyRevision } from '../src/datapath/policy-maps.js';
import { METRIC_EVENT_LOST, type MetricsKey, type MetricsValue } from '../src/datapath/codecs/metrics.js';
import { FLOW_EVENT_SIZE } from '../src/datapath/codecs/flow-event.js';
import {
  TC_ACT_OK, TC_ACT_REDIRECT, TC_ACT_SHOT, drainEvents, eth, ipv4, ipv6, skbCtx, tcp, udp,
} from '../src/datapath/test-frames.js';
import { FlowPipeline } from '../src/observe/pipeline.js';
import { compileMatcher } from '../src/observe/filter.js';
import { ServiceMap } from '../src/observe/service-map.js';
import { mountTempBpffs } from '../test/helpers/bpffs.js';
import { Cleanup, createNetns, createVethPair, ifindexIn } from '../test/helpers/netns.js';
import { interleave, pairedRatio, type RateSummary } from './lib.js';
import { BENCH_ENDPOINTS, benchSources, cookieOf, type BenchEndpoint } from './observe-sources.js';

/** The events ring: 16 MiB holds 161,319 records of 96 + 8 bytes. */
export const RING_BYTES = 16 << 20;
/** Records per timed drain (fits the ring with room to spare). */
export const RECORDS_PER_SLICE = 120_000;
/** Packets per testRun call per unit of a kind's weight (a TTL of 255 allows up to 254 repeats of a forwarded frame). */
const UNIT = 50;
export const ROUNDS = 15;
/** Store capacity of the goal figure: the agent's largest --flow-buffer. */
export const BIG_CAPACITY = 1_000_000;
/** The agent's default --flow-buffer. */
export const DEFAULT_CAPACITY = 4096;
const RECORD_STRIDE = FLOW_EVENT_SIZE + 8;

const SAME_MAC = '02:00:00:00:aa:aa';
const F_EGRESS = 0x2;
const TCP = 6;
const UDP = 17;
const SYN = 0x02;

/** The eight endpoints the datapath knows (devices in the test-run namespace): bench endpoints 11..18. */
const DP_IDS = [11, 12, 13, 14, 15, 16, 17, 18];
const ep = (k: number): BenchEndpoint => BENCH_ENDPOINTS[(DP_IDS[k] as number) - 1] as BenchEndpoint;

interface Kind {
  name: string;
  program: 'from_endpoint' | 'to_endpoint';
  /** Index of the observing endpoint's device. */
  dev: number;
  frame: Buffer;
  /** Repeats per round, in units. */
  weight: number;
  retval: number;
  /** Event types per packet once the connection exists (the first packet of an allowed one adds a policy verdict). */
  events: number[];
}

/**
 * The mix. Every packet's source MAC is the same and every endpoint's node
 * MAC too, so a frame the program forwarded (MACs rewritten in place) passes
 * the MAC check again on the next repeat; TTL / hop limit 255 for the same
 * reason. Events per round: 20 units; `source label app=<E3>` matches kind
 * `trace udp world` only: 2/20 = 10 %.
 */
function kinds(): Kind[] {
  const [e0, e1, e2, e3, e4, e5, e6] = [0, 1, 2, 3, 4, 5, 6].map(ep) as [BenchEndpoint, BenchEndpoint, BenchEndpoint, BenchEndpoint, BenchEndpoint, BenchEndpoint, BenchEndpoint];
  const out4 = (src: string, dst: string, proto: number, l4: Buffer): Buffer => eth(SAME_MAC, SAME_MAC, 0x0800, ipv4(src, dst, proto, l4, 255));
  const out6 = (src: string, dst: string, proto: number, l4: Buffer): Buffer => eth(SAME_MAC, SAME_MAC, 0x86dd, ipv6(src, dst, proto, l4, 255));
  return [
    { name: 'trace tcp local', program: 'from_endpoint', dev: 2, frame: out4(e2.ipv4, e4.ipv4, TCP, tcp(41000, 8080, SYN)), weight: 3, retval: TC_ACT_REDIRECT, events: [4] },
    { name: 'trace udp6 local', program: 'from_endpoint', dev: 5, frame: out6(e5.ipv6, e6.ipv6, UDP, udp(41001, 5353)), weight: 3, retval: TC_ACT_REDIRECT, events: [4] },
    { name: 'trace udp world', program: 'from_endpoint', dev: 3, frame: out4(e3.ipv4, '192.0.2.53', UDP, udp(41002, 53)), weight: 2, retval: TC_ACT_OK, events: [4] },
    { name: 'policy allow tcp', program: 'from_endpoint', dev: 0, frame: out4(e0.ipv4, e2.ipv4, TCP, tcp(41003, 80, SYN)), weight: 2, retval: TC_ACT_REDIRECT, events: [4] },
    { name: 'policy deny udp', program: 'from_endpoint', dev: 0, frame: out4(e0.ipv4, e3.ipv4, UDP, udp(41004, 53)), weight: 2, retval: TC_ACT_SHOT, events: [5, 1] },
    { name: 'spoofed source', program: 'from_endpoint', dev: 7, frame: out4('10.199.221.250', e1.ipv4, UDP, udp(41005, 9000)), weight: 1, retval: TC_ACT_SHOT, events: [1] },
    { name: 'ingress from world', program: 'to_endpoint', dev: 1, frame: eth(SAME_MAC, SAME_MAC, 0x0800, ipv4('198.51.100.7', e1.ipv4, TCP, tcp(41006, 8443, SYN), 255)), weight: 3, retval: TC_ACT_OK, events: [4] },
    { name: 'policy allow world', program: 'from_endpoint', dev: 1, frame: out4(e1.ipv4, '203.0.113.5', TCP, tcp(41007, 443, SYN)), weight: 2, retval: TC_ACT_OK, events: [4] },
  ];
}

/** The figures of part 1 (rates in flows/s). */
export interface IngestResult {
  results: Record<'drainOnly' | 'ingest' | 'ingestDefaultCapacity' | 'ingestCachedRules' | 'ingestServiceMap' | 'ingestFollow', RateSummary>;
  /** Edges the service map counted. */
  serviceMapEdges: number;
  ratios: Record<string, number>;
  /** Share of records the follow filter matched. */
  followMatchShare: number;
  /** Mean bytes of one JSON line the follow subscriber encoded. */
  followLineBytes: number;
  /** Records per slice actually drained (median). */
  recordsPerSlice: number;
  /** Mix of the records, from the pipeline's counters (`type/verdict/protocol` → share). */
  mix: Record<string, number>;
}

function lostEvents(metrics: PerCpuMap<MetricsKey, MetricsValue>): number {
  let lost = 0;
  for (const [k, v] of metrics.entries()) if (k.direction === METRIC_EVENT_LOST) lost += v.reduce((a, x) => a + x.packets, 0);
  return lost;
}

export async function measureIngest(log: (line: string) => void): Promise<IngestResult> {
  if (process.getuid?.() !== 0) throw new Error('bench observe (ingest) needs root: it loads the datapath programs');
  const cleanup = new Cleanup();
  // Ctrl-C: the namespace and the bpffs go too (the timed rounds are synchronous: this runs once they yield).
  const onSignal = (): void => {
    process.stderr.write('bench observe: interrupted, cleaning up …\n');
    void cleanup.run().finally(() => process.exit(130));
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  try {
    const fs = mountTempBpffs();
    cleanup.add(() => fs.unmount(), 'bpffs');
    const pinDir = join(fs.path, 'waggle');
    const dp: EndpointDatapath = loadEndpointDatapath({
      pinDir, routerIpv4: '10.199.250.1', routerIpv6: 'fd99:250::1', traceIntervalNs: 0, eventsSize: RING_BYTES,
    });
    cleanup.add(() => dp.close(), 'endpoint datapath');
    const rb = openEvents(pinDir);
    cleanup.add(() => rb.close(), 'events reader');
    const metrics = metricsMap(pinDir);
    cleanup.add(() => metrics.close(), 'metrics map');
    const runNs = createNetns('wg-obs-run');
    cleanup.add(() => runNs.remove(), 'test-run netns');
    const ifindex: number[] = [];
    for (let p = 0; p < DP_IDS.length / 2; p++) {
      createVethPair({ a: { netns: runNs, name: `wgo${p}a` }, b: { netns: runNs, name: `wgo${p}b` } });
      ifindex.push(ifindexIn(runNs, `wgo${p}a`), ifindexIn(runNs, `wgo${p}b`));
    }

    // Datapath state: lxc_config per device, all 100 endpoints in `endpoints`, a few policy entries.
    const flagsOf = (k: number): number => (k === 0 || k === 1 ? F_EGRESS : 0);
    DP_IDS.forEach((_, k) => {
      const e = ep(k);
      dp.config.update(ifindex[k] as number, lxcConfigOf({
        endpointId: e.id, hostIfindex: ifindex[k] as number, ipv4: e.ipv4, ipv6: e.ipv6, mac: SAME_MAC, hostMac: SAME_MAC, identity: e.identity, policyFlags: flagsOf(k),
      }));
    });
    const eps = endpointsMap(pinDir);
    try {
      for (const e of BENCH_ENDPOINTS) {
        const k = DP_IDS.indexOf(e.id);
        const info = { ifindex: k >= 0 ? ifindex[k] as number : 1, endpointId: e.id, mac: SAME_MAC, nodeMac: SAME_MAC, flags: k >= 0 ? flagsOf(k) : 0, identity: e.identity };
        eps.update(e.ipv4, info);
        eps.update(e.ipv6, info);
      }
    } finally {
      eps.close();
    }
    const policy = policyMap(pinDir);
    const state = policyStateMap(pinDir);
    try {
      writePolicyRevision(state, 1);
      // E0 egress: allow E2 on TCP 80; deny E3 on UDP 53. E1 egress: allow any peer on TCP 443.
      policy.update({ endpointId: ep(0).id, direction: 'egress', identity: ep(2).identity, proto: TCP, port: 80, portPrefixLen: 16 }, { cookie: cookieOf(3, 0), deny: 0, matchType: 2 });
      policy.update({ endpointId: ep(0).id, direction: 'egress', identity: ep(3).identity, proto: UDP, port: 53, portPrefixLen: 16 }, { cookie: cookieOf(4, 1), deny: 1, matchType: 2 });
      policy.update({ endpointId: ep(1).id, direction: 'egress', identity: 0, proto: TCP, port: 443, portPrefixLen: 16 }, { cookie: cookieOf(5, 2), deny: 0, matchType: 3 });
    } finally {
      policy.close();
      state.close();
    }

    const mix = kinds();
    const ctxs = mix.map((k) => skbCtx(ifindex[k.dev] as number));
    // Check every kind once: verdict and events as designed (also opens the connections).
    inNetns(runNs.path, () => {
      rb.skip();
      mix.forEach((k, i) => {
        for (let rep = 0; rep < 2; rep++) {
          const r = dp.program(k.program).testRun({ data: k.frame, ctx: ctxs[i] as Buffer, ctxOutSize: 256 });
          const types = drainEvents(rb).map((e) => e.type);
          if (r.retval !== k.retval) throw new Error(`bench observe: ${k.name}: verdict ${r.retval}, expected ${k.retval}`);
          if (rep === 1 && types.join() !== k.events.join()) throw new Error(`bench observe: ${k.name}: events ${types.join()}, expected ${k.events.join()}`);
        }
      });
    });

    const lostBefore = lostEvents(metrics);
    /** Refills the ring with about `target` records (untimed); returns how many are waiting. */
    const fill = (target: number): number => {
      if (rb.pending() !== 0) throw new Error('ring not empty before refill');
      inNetns(runNs.path, () => {
        while (rb.pending() / RECORD_STRIDE < target) {
          mix.forEach((k, i) => {
            dp.program(k.program).testRun({ data: k.frame, ctx: ctxs[i] as Buffer, ctxOutSize: 256, repeat: k.weight * UNIT });
          });
        }
      });
      if (lostEvents(metrics) !== lostBefore) throw new Error('records were lost while filling: the ring is too small');
      return rb.pending() / RECORD_STRIDE;
    };

    const nodeName = 'bench-node';
    const sources = benchSources(nodeName);
    const pBig = new FlowPipeline(BIG_CAPACITY, sources);
    const pDefault = new FlowPipeline(DEFAULT_CAPACITY, sources);
    const pCached = new FlowPipeline(BIG_CAPACITY, benchSources(nodeName, { rules: 'cached' }));
    const pFollow = new FlowPipeline(BIG_CAPACITY, sources);
    const pMap = new FlowPipeline(BIG_CAPACITY, sources);

    // A `waggle observe --follow` client with a filter, as serveFlows (src/observe/stream.ts) runs it per stored
    // flow: match on the stored record, and for a match build the Hubble JSON line (no socket write).
    const followApp = `k8s:app=${ep(3).app}`;
    let followSeen = 0;
    let followMatched = 0;
    let followBytes = 0;
    const subscribe = (p: FlowPipeline): void => {
      const store = p.store;
      const match = compileMatcher([{ sourceLabel: [followApp] }], []);
      const cur = store.cursor();
      store.subscribe((seq) => {
        followSeen++;
        if (store.isLost(seq) || match(cur.at(seq))) {
          followMatched++;
          followBytes += JSON.stringify(store.record(seq)).length + 1;
        }
      });
    };
    subscribe(pFollow);
    // The web UI's service map (src/observe/service-map.ts) on the pipeline's onFlow hook.
    const serviceMap = new ServiceMap(pMap.store, { nodeName });
    pMap.onFlow(serviceMap.hook);

    let waiting = 0;
    const drained: number[] = [];
    const slice = (run: () => number): { setup: () => void; run: () => number; teardown: () => void } => ({
      setup: () => { waiting = fill(RECORDS_PER_SLICE); },
      run,
      teardown: () => {
        if (rb.pending() !== 0) throw new Error('the drain left records in the ring');
        drained.push(waiting);
      },
    });
    const checked = (p: FlowPipeline) => (): number => {
      const before = p.store.seen;
      const n = rb.consume((view, offset) => { p.ingest(view, offset); });
      if (p.store.seen - before !== n) throw new Error(`pipeline stored ${p.store.seen - before} flows of ${n} records`);
      return n;
    };
    const noop = (): void => {};

    log(`  ingest: ${ROUNDS} rounds of 6 slices of ${RECORDS_PER_SLICE} records each …`);
    const results = interleave({
      drainOnly: slice(() => rb.consume(noop)),
      ingest: slice(checked(pBig)),
      ingestDefaultCapacity: slice(checked(pDefault)),
      ingestCachedRules: slice(checked(pCached)),
      ingestServiceMap: slice(checked(pMap)),
      ingestFollow: slice(checked(pFollow)),
    }, { rounds: ROUNDS, warmup: 2 });

    const stats = pBig.stats();
    const total = stats.flows.reduce((a, f) => a + f.count, 0);
    const mixShares: Record<string, number> = {};
    for (const f of stats.flows) mixShares[`${f.type}/${f.verdict}/${f.protocol}`] = f.count / total;
    const sorted = [...drained].sort((a, b) => a - b);
    return {
      results,
      ratios: {
        'ingest / drainOnly': pairedRatio(results.ingest, results.drainOnly),
        'ingestServiceMap / ingest': pairedRatio(results.ingestServiceMap, results.ingest),
        'ingestFollow / ingest': pairedRatio(results.ingestFollow, results.ingest),
        'ingestDefaultCapacity / ingest': pairedRatio(results.ingestDefaultCapacity, results.ingest),
        'ingestCachedRules / ingest': pairedRatio(results.ingestCachedRules, results.ingest),
      },
      followMatchShare: followMatched / Math.max(followSeen, 1),
      followLineBytes: followBytes / Math.max(followMatched, 1),
      recordsPerSlice: sorted[sorted.length >> 1] ?? 0,
      mix: mixShares,
      serviceMapEdges: serviceMap.edges,
    };
  } finally {
    const errors = await cleanup.run();
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    if (errors.length) process.stderr.write(`bench observe: ${errors.length} cleanup step(s) failed\n`);
  }
}
