/**
 * The flow pipeline, end to end (issue: "events/s decoded + enriched +
 * stored on one core, goal ≥ 1,000,000 flows/s; memory per stored flow; the
 * agent's CPU at 10,000 flows/s; `observe --follow` latency"). Needs root.
 *
 * 1. ingest (observe-ingest.ts): real `struct flow_event` records written by
 *    the datapath's own programs (bpf/lxc.bpf.c under BPF_PROG_TEST_RUN with
 *    a repeat count: local and world traces, policy verdicts with rule
 *    cookies, policy and spoofing drops, IPv4 and IPv6) into the real
 *    `events` ring (16 MiB), drained by the real reader
 *    (src/bpf/ringbuf.ts) into FlowPipeline.ingest with agent-like
 *    enrichment (100 endpoint views, rule lookups, identity labels). Each
 *    slice refills the ring (untimed) and times one drain of 120,000 records;
 *    contenders run in interleaved rounds, medians reported:
 *      drainOnly             the reader alone (no-op callback);
 *      ingest                into a 1,000,000-flow store: THE GOAL FIGURE;
 *      ingestDefaultCapacity into a 4,096-flow store (the agent's default);
 *      ingestCachedRules     as `ingest`, with one rule object per cookie
 *                            (today's PolicyEngine.ruleOf builds one per call);
 *      ingestServiceMap      + the web UI's service map (src/observe/service-map.ts)
 *                            on the pipeline's `onFlow` hook;
 *      ingestFollow          + one `--follow` subscriber with a label filter
 *                            matching 10 % (matcher per flow, Hubble JSON line
 *                            per match, as src/observe/stream.ts does; no socket).
 * 2. memory (observe-memory.ts, in `node --expose-gc` children): a
 *    FlowPipeline of 100,000 and 1,000,000 filled with varied records;
 *    (heapUsed + external) after GC, minus before, per stored flow
 *    (`external` includes `arrayBuffers`), against keeping one Hubble JSON
 *    object per flow (`store.record(seq)` objects in an array).
 * 3. agent CPU at 10,000 flows/s and 4. `observe --follow` latency
 *    (observe-agent.ts): a real `waggle agent` with endpoints a and b, a UDP
 *    sender in a's namespace; CPU from /proc/PID/stat over windows with and
 *    without traffic; latency from sending a packet to reading the
 *    `observe --follow -o json` line that names it (median, p99).
 *
 * Everything made is removed at the end, also on failure (bpffs, namespaces,
 * the agent with `waggle agent --cleanup`, child processes).
 *
 * Run: npm run bench -- observe [--json]
 *      (OBSERVE_PARTS=ingest,memory,agent picks parts; default all)
 */
import { execFileSync } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { formatRate, printReport } from './lib.js';
import { BIG_CAPACITY, DEFAULT_CAPACITY, RECORDS_PER_SLICE, RING_BYTES, ROUNDS, measureIngest } from './observe-ingest.js';
import type { MemoryFigures } from './observe-memory.js';
import { FLOOD_RATE, IDLE_SECONDS, LOAD_SECONDS, PROBES, SPACING_MS, WINDOWS, measureAgent } from './observe-agent.js';

const GOAL_FLOWS_PER_SEC = 1_000_000;
const MEMORY_JS = join(dirname(fileURLToPath(import.meta.url)), 'observe-memory.js');

function memoryChild(capacity: number, rules: 'fresh' | 'cached', objects: boolean): MemoryFigures {
  const out = execFileSync(process.execPath, ['--expose-gc', '--max-old-space-size=16384', MEMORY_JS, String(capacity), rules, ...(objects ? ['objects'] : [])], {
    encoding: 'utf8', timeout: 600_000, stdio: ['ignore', 'pipe', 'inherit'],
  });
  return JSON.parse(out.trim().split('\n').pop() as string) as MemoryFigures;
}

const round = (x: number, digits = 0): number => Number(x.toFixed(digits));

export async function run(opts: { json: boolean }): Promise<Record<string, number>> {
  const parts = new Set((process.env.OBSERVE_PARTS ?? 'ingest,memory,agent').split(',').map((s) => s.trim()));
  const log = (line: string): void => { if (!opts.json) process.stdout.write(`${line}\n`); };
  const figures: Record<string, number> = {};
  const out: string[] = [];

  if (parts.has('ingest')) {
    const r = await measureIngest(log);
    const ingest = r.results.ingest.median;
    Object.assign(figures, {
      ingestFlowsPerSec: round(ingest),
      ingestNsPerFlow: round(1e9 / ingest, 1),
      drainOnlyRecordsPerSec: round(r.results.drainOnly.median),
      ingestDefaultCapacityFlowsPerSec: round(r.results.ingestDefaultCapacity.median),
      ingestCachedRulesFlowsPerSec: round(r.results.ingestCachedRules.median),
      ingestFollowFlowsPerSec: round(r.results.ingestFollow.median),
      ingestServiceMapFlowsPerSec: round(r.results.ingestServiceMap.median),
      ingestOverDrainOnly: round(r.ratios['ingest / drainOnly'] as number, 3),
      followOverIngest: round(r.ratios['ingestFollow / ingest'] as number, 3),
      serviceMapOverIngest: round(r.ratios['ingestServiceMap / ingest'] as number, 3),
      defaultCapacityOverIngest: round(r.ratios['ingestDefaultCapacity / ingest'] as number, 3),
      cachedRulesOverIngest: round(r.ratios['ingestCachedRules / ingest'] as number, 3),
      followMatchShare: round(r.followMatchShare, 4),
      followLineBytes: round(r.followLineBytes),
      ingestGoalFlowsPerSec: GOAL_FLOWS_PER_SEC,
      ingestGoalMet: ingest >= GOAL_FLOWS_PER_SEC ? 1 : 0,
      ingestRecordsPerSlice: r.recordsPerSlice,
      ingestRounds: ROUNDS,
    });
    if (!opts.json) {
      printReport(`flow ingest on one core: lxc.bpf.c records in a ${RING_BYTES >> 20} MiB ring → RingBuffer.consume → FlowPipeline.ingest, ~${RECORDS_PER_SLICE} records per drain`, r.results, r.ratios, 'flows');
      out.push(
        `  goal: ingest into a ${BIG_CAPACITY.toLocaleString('en-US')}-flow store ${formatRate(ingest, 'flows')} (${(1e9 / ingest).toFixed(0)} ns/flow) `
        + `${ingest >= GOAL_FLOWS_PER_SEC ? 'MEETS' : 'MISSES'} the ${formatRate(GOAL_FLOWS_PER_SEC, 'flows')} goal`
        + ` (default store of ${DEFAULT_CAPACITY}: ${formatRate(r.results.ingestDefaultCapacity.median, 'flows')})`,
        `  service map: ${r.serviceMapEdges} edges; follow filter matched ${(r.followMatchShare * 100).toFixed(1)} % of flows (mean JSON line ${r.followLineBytes.toFixed(0)} B)`,
        `  record mix: ${Object.entries(r.mix).sort((x, y) => y[1] - x[1]).map(([k, v]) => `${k} ${(v * 100).toFixed(0)}%`).join(', ')}`,
      );
      process.stdout.write(`${out.splice(0).join('\n')}\n`);
    }
  }

  if (parts.has('memory')) {
    log('  memory: filling stores in child processes …');
    const small = memoryChild(100_000, 'fresh', true);
    const big = memoryChild(1_000_000, 'fresh', true);
    const cached = memoryChild(1_000_000, 'cached', false);
    Object.assign(figures, {
      bytesPerFlow100k: round(small.bytesPerFlow, 1),
      bytesPerFlow1M: round(big.bytesPerFlow, 1),
      emptyBytesPerFlow1M: round(big.emptyBytes / big.capacity, 1),
      bytesPerFlow1MCachedRules: round(cached.bytesPerFlow, 1),
      hubbleObjectBytesPerFlow100k: round(small.objectBytesPerFlow ?? NaN, 1),
      hubbleObjectBytesPerFlow1M: round(big.objectBytesPerFlow ?? NaN, 1),
      hubbleObjectsOverStore1M: round((big.objectBytesPerFlow ?? NaN) / big.bytesPerFlow, 2),
      jsonLineBytes: round(big.jsonLineBytes),
      storeMiB1M: round(big.filledBytes / 2 ** 20, 1),
    });
    if (!opts.json) {
      const row = (label: string, m: MemoryFigures): string =>
        `  ${label.padEnd(34)} ${m.bytesPerFlow.toFixed(0).padStart(6)} B/flow  (${(m.filledBytes / 2 ** 20).toFixed(1)} MiB; empty store ${(m.emptyBytes / m.capacity).toFixed(0)} B/flow)`
        + (m.objectBytesPerFlow !== undefined ? `   Hubble objects instead: ${m.objectBytesPerFlow.toFixed(0)} B/flow (${(m.objectBytesPerFlow / m.bytesPerFlow).toFixed(1)}x)` : '');
      process.stdout.write(`memory per stored flow ((heapUsed + external) after GC, varied records)\n${[
        row('store 100,000', small),
        row('store 1,000,000', big),
        row('store 1,000,000, rule objects cached', cached),
        `  one flow as a JSON line: ${big.jsonLineBytes.toFixed(0)} B`,
      ].join('\n')}\n`);
    }
  }

  if (parts.has('agent')) {
    const a = await measureAgent(log);
    Object.assign(figures, {
      agentCpuPctAt10k: round(a.cpuLoadPct, 1),
      agentCpuIdlePct: round(a.cpuIdlePct, 1),
      agentFlowsPerSec: round(a.flowsPerSec),
      agentPacketsPerSec: round(a.packetsPerSec),
      agentFlowsPerPacket: round(a.flowsPerPacket, 3),
      agentCpuUsPerFlow: round(a.cpuUsPerFlow, 2),
      agentLostRingBuffer: a.lostRingBuffer,
      agentRssMiB: round(a.rssMiB, 1),
      agentCtxSwitchesPerSec: round(a.ctxSwitchesPerSecLoad),
      agentCtxSwitchesPerSecIdle: round(a.ctxSwitchesPerSecIdle),
      machineBusyPctLoad: round(a.machineBusyPctLoad, 1),
      machineBusyPctProbes: round(a.machineBusyPctProbes, 1),
      followLatencyMedianMs: round(a.followMedianMs, 3),
      followLatencyP99Ms: round(a.followP99Ms, 3),
      followLatencyMinMs: round(a.followMinMs, 3),
      followLatencyMaxMs: round(a.followMaxMs, 3),
      followLatencySamples: a.followSamples,
      followLatencyMissing: a.followMissing,
      followLatencyOver20ms: a.followOver20ms,
      followLatencyWorstAtSec: round(a.followWorstAtSec, 2),
    });
    if (!opts.json) {
      const list = (xs: number[]): string => xs.map((x) => x.toFixed(1)).join(', ');
      process.stdout.write(`agent (real process, endpoints a → b, UDP at ${FLOOD_RATE} packets/s; ${WINDOWS} windows of ${LOAD_SECONDS} s loaded / ${IDLE_SECONDS} s idle, medians)\n${[
        `  flows stored              ${formatRate(a.flowsPerSec, 'flows')}   (${a.flowsPerPacket.toFixed(2)} per packet sent; windows: ${a.flowsPerSecSamples.map((x) => x.toFixed(0)).join(', ')})`,
        `  agent CPU at that rate    ${a.cpuLoadPct.toFixed(1)} % of one core   (windows: ${list(a.cpuLoadPctSamples)})`,
        `  agent CPU idle            ${a.cpuIdlePct.toFixed(1)} %   (windows: ${list(a.cpuIdlePctSamples)})`,
        `  CPU per flow              ${a.cpuUsPerFlow.toFixed(1)} µs ((loaded − idle) / flows)`,
        `  agent context switches    ${a.ctxSwitchesPerSecLoad.toFixed(0)} /s (idle ${a.ctxSwitchesPerSecIdle.toFixed(0)} /s): ~${(a.flowsPerSec / Math.max(a.ctxSwitchesPerSecLoad - a.ctxSwitchesPerSecIdle, 1)).toFixed(1)} flows per extra switch`,
        `  ring buffer losses        ${a.lostRingBuffer}   agent RSS ${a.rssMiB.toFixed(0)} MiB   machine (2 cores, all processes) ${a.machineBusyPctLoad.toFixed(0)} % busy`,
        `observe --follow -o json latency, packet sent → line read (${a.followSamples} of ${PROBES} probes, ${SPACING_MS} ms apart, no other traffic)`,
        `  median ${a.followMedianMs.toFixed(2)} ms   p99 ${a.followP99Ms.toFixed(2)} ms   (min ${a.followMinMs.toFixed(2)}, max ${a.followMaxMs.toFixed(2)}; machine ${a.machineBusyPctProbes.toFixed(0)} % busy meanwhile)`,
        `  ${a.followOver20ms} probes over 20 ms; the slowest sent ${a.followWorstAtSec.toFixed(1)} s after the agent started (probes ran ${a.followWindowSec[0].toFixed(0)}–${a.followWindowSec[1].toFixed(0)} s; conntrack GC runs every 30 s on the agent's main thread)`,
      ].join('\n')}\n`);
    }
  }
  return figures;
}
