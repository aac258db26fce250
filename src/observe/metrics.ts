/**
 * Prometheus metrics on the agent's HTTP listener (`GET /metrics`, text
 * format 0.0.4), from a private prom-client registry. Every value is read at
 * scrape time:
 *
 * - datapath counters from the pinned per-CPU `metrics` array (one batch
 *   lookup per scrape): forwarded and dropped packets and bytes by drop
 *   reason (Hubble's names) and direction (Cilium's `INGRESS`/`EGRESS`: the
 *   hook that counted the packet — `EGRESS` is the endpoint's veth ingress,
 *   packets leaving the endpoint, `INGRESS` packets the node's stack sends to
 *   it), and events the ring buffer had no room for;
 * - the flow pipeline's counts (flows by type, verdict and protocol; policy
 *   verdicts by direction, match type and action; flows a slow client missed;
 *   the flow store's fill);
 * - endpoints, identities and policies;
 * - the fill of the shared BPF maps that have a meaningful one (hash, LRU hash,
 *   LPM trie): entries, capacity and their ratio. Counting walks the maps
 *   (batch lookups where the map type has them), so counts are cached for
 *   {@link MAP_FILL_MAX_AGE_MS} and a count yields to the event loop between
 *   chunks: a scrape never blocks the agent for long. Arrays are preallocated
 *   (always "full") and the ring buffer has no entries: neither is reported.
 * - prom-client's default Node.js metrics, prefixed `waggle_` (event-loop lag,
 *   resident memory, heap, CPU, file descriptors, GC).
 *
 * Labels are low-cardinality by construction: no addresses, ports or endpoint
 * names, only small enums and the fixed list of map names.
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { Counter, Gauge, Registry, collectDefaultMetrics } from 'prom-client';
import type { HttpHandler } from '../agent/http-server.js';
import type { ObserveStats } from './pipeline.js';
import { BpfSyscallError } from '../bpf/errors.js';
import { closeFd, getPinned } from '../bpf/fd.js';
import { mapInfo, type MapInfo, type PerCpuMap } from '../bpf/map.js';
import { addressOf, bpf, errno, numPossibleCpus } from '../bpf/sys.js';
import { Cmd, MapType, isPerCpu } from '../bpf/types.js';
import { metricsMap, SHARED_MAPS } from '../datapath/lxc.js';
import { METRIC_EGRESS, METRIC_EVENT_LOST, METRIC_INGRESS, METRICS_MAX, type MetricsKey, type MetricsValue } from '../datapath/codecs/metrics.js';
import { dropReasonName, REASON_FORWARDED } from '../datapath/drop-reasons.js';

/** What the metrics read from the running agent. */
export interface MetricsSources {
  /** The agent's bpffs pin directory (shared maps live here). */
  pinDir: string;
  observe(): ObserveStats;
  endpoints(): number;
  identities(): number;
  policies(): number;
}

export interface AgentMetrics {
  handler: HttpHandler;
  close(): void;
}

/** How old map fill counts may be before a scrape counts again (ms). */
export const MAP_FILL_MAX_AGE_MS = 5_000;

/** The `direction` label of a datapath metrics direction (Cilium's names). */
const DIRECTIONS: Record<number, string> = { [METRIC_INGRESS]: 'INGRESS', [METRIC_EGRESS]: 'EGRESS' };
const directionName = (d: number): string => DIRECTIONS[d] ?? 'UNKNOWN';

/** Policy verdict actions as Hubble's `hubble_policy_verdicts_total` names them (the verdict, lower case). */
const ACTIONS: Record<string, string> = { allowed: 'forwarded', denied: 'dropped' };

const ENOENT = 2;
const EINVAL = 22;
const EOPNOTSUPP = 95;
/** The kernel's internal ENOTSUPP: a map type without batch operations. */
const ENOTSUPP = 524;
const batchUnsupported = (e: number): boolean => e === EINVAL || e === EOPNOTSUPP || e === ENOTSUPP;

/** Entries per batch lookup while counting, and keys per slice of a key walk, between yields to the event loop. */
const COUNT_CHUNK = 4096;
const WALK_SLICE = 8192;

const yieldToLoop = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

/** A u64 counter as a number (exact below 2^53). */
const u64 = (b: Buffer, o: number): number => b.readUInt32LE(o) + b.readUInt32LE(o + 4) * 4294967296;

// ---------------------------------------------------------------------------
// Datapath counters

/** Packets and bytes per `metrics` array index (`direction << 8 | reason`). */
export interface DatapathSnapshot {
  packets: Float64Array;
  bytes: Float64Array;
}

/** Reads the whole per-CPU `metrics` array, summed over CPUs. */
export function readDatapathCounters(map: PerCpuMap<MetricsKey, MetricsValue>): DatapathSnapshot {
  const packets = new Float64Array(METRICS_MAX);
  const bytes = new Float64Array(METRICS_MAX);
  const cpus = map.cpus;
  const stride = Math.ceil(map.valueCodec.size / 8) * 8;
  const perEntry = stride * cpus;
  try {
    map.lookupBatchRaw((keys, values, n) => {
      for (let i = 0; i < n; i++) {
        const index = keys.readUInt32LE(i * 4);
        if (index >= METRICS_MAX) continue;
        let p = 0;
        let b = 0;
        for (let c = 0; c < cpus; c++) {
          const o = i * perEntry + c * stride;
          p += u64(values, o);
          b += u64(values, o + 8);
        }
        packets[index] = p;
        bytes[index] = b;
      }
    }, METRICS_MAX);
  } catch (err) {
    if (!(err instanceof BpfSyscallError && batchUnsupported(err.errno))) throw err;
    for (const [k, v] of map.entries()) {
      const index = (k.direction << 8) | k.reason;
      packets[index] = v.reduce((a, x) => a + x.packets, 0);
      bytes[index] = v.reduce((a, x) => a + x.bytes, 0);
    }
  }
  return { packets, bytes };
}

/** Events the datapath could not put in the ring buffer (direction METRIC_EVENT_LOST). */
export function lostEventCount(dp: DatapathSnapshot): number {
  let n = 0;
  for (let reason = 0; reason < 256; reason++) n += dp.packets[(METRIC_EVENT_LOST << 8) | reason] ?? 0;
  return n;
}

// ---------------------------------------------------------------------------
// BPF map fill

/** Map types whose number of entries says how full they are. */
const COUNTED_TYPES = new Set<number>([MapType.Hash, MapType.LruHash, MapType.PerCpuHash, MapType.LruPerCpuHash, MapType.LpmTrie]);

interface MapFill {
  entries: number;
  capacity: number;
}

/** One pinned map held open for counting its entries. */
class CountedMap {
  readonly name: string;
  readonly fd: number;
  readonly info: MapInfo;
  /** False once the kernel said this map type has no batch lookup. */
  private batch = true;

  constructor(name: string, fd: number, info: MapInfo) {
    this.name = name;
    this.fd = fd;
    this.info = info;
  }

  /**
   * Counts the entries: batch lookups where the map type has them, else a
   * key walk. Yields to the event loop between chunks; `alive()` false stops
   * it (the descriptor is about to close). Approximate while the datapath
   * adds and removes entries, never more than the capacity.
   */
  async count(alive: () => boolean): Promise<number | undefined> {
    if (this.batch) {
      const n = await this.countBatch(alive);
      if (n !== undefined || !alive()) return n;
      this.batch = false;
    }
    return this.countWalk(alive);
  }

  /** Batch lookups of COUNT_CHUNK entries; undefined when the map type has none. */
  private async countBatch(alive: () => boolean): Promise<number | undefined> {
    const ks = this.info.keySize;
    const vs = isPerCpu(this.info.type) ? Math.ceil(this.info.valueSize / 8) * 8 * numPossibleCpus() : this.info.valueSize;
    const keys = Buffer.alloc(COUNT_CHUNK * ks);
    const values = Buffer.alloc(COUNT_CHUNK * vs);
    // The batch token: a bucket index for hash maps, a key for others.
    const inTok = Buffer.alloc(Math.max(ks, 8));
    const outTok = Buffer.alloc(Math.max(ks, 8));
    const attr = Buffer.alloc(56);
    attr.writeBigUInt64LE(BigInt(addressOf(outTok)), 8);
    attr.writeBigUInt64LE(BigInt(addressOf(keys)), 16);
    attr.writeBigUInt64LE(BigInt(addressOf(values)), 24);
    attr.writeUInt32LE(this.fd, 36);
    let total = 0;
    for (let first = true; ; first = false) {
      if (!alive()) return undefined;
      attr.writeBigUInt64LE(first ? 0n : BigInt(addressOf(inTok)), 0);
      attr.writeUInt32LE(COUNT_CHUNK, 32);
      const r = bpf(Cmd.MapLookupBatch, attr);
      const err = r < 0 ? errno() : 0;
      if (r < 0 && err !== ENOENT) {
        if (first && batchUnsupported(err)) return undefined;
        throw new BpfSyscallError(`count the entries of map ${this.name} (batch lookup)`, err);
      }
      total += attr.readUInt32LE(32);
      if (r < 0) return Math.min(total, this.info.maxEntries);
      outTok.copy(inTok);
      await yieldToLoop();
    }
  }

  /**
   * Walks the keys (`BPF_MAP_GET_NEXT_KEY`) in slices. A key deleted during
   * a pause makes the kernel start over from the first key: seeing the first
   * key again restarts the count (a few times at most).
   */
  private async countWalk(alive: () => boolean): Promise<number | undefined> {
    const ks = this.info.keySize;
    const cur = Buffer.alloc(Math.max(ks, 8));
    const next = Buffer.alloc(Math.max(ks, 8));
    const firstKey = Buffer.alloc(ks);
    const attr = Buffer.alloc(24);
    attr.writeUInt32LE(this.fd, 0);
    attr.writeBigUInt64LE(0n, 8); // NULL: start at the first key
    attr.writeBigUInt64LE(BigInt(addressOf(next)), 16);
    const curAddr = BigInt(addressOf(cur));
    let n = 0;
    let restarts = 0;
    for (;;) {
      if (bpf(Cmd.MapGetNextKey, attr) < 0) {
        const err = errno();
        if (err === ENOENT) return Math.min(n, this.info.maxEntries);
        throw new BpfSyscallError(`count the entries of map ${this.name} (key walk)`, err);
      }
      if (n === 0 && restarts === 0) {
        next.copy(firstKey, 0, 0, ks);
      } else if (next.compare(firstKey, 0, ks, 0, ks) === 0) {
        if (++restarts > 3) return Math.min(n, this.info.maxEntries);
        n = 0;
      }
      n++;
      next.copy(cur);
      attr.writeBigUInt64LE(curAddr, 8);
      if (n % WALK_SLICE === 0) {
        await yieldToLoop();
        if (!alive()) return undefined;
      }
    }
  }

  close(): void {
    closeFd(this.fd);
  }
}

/** Entries and capacity of the shared maps, counted at most every MAP_FILL_MAX_AGE_MS. */
class MapFillCache {
  private readonly pinDir: string;
  private readonly maps = new Map<string, CountedMap>();
  /** Names whose pin is there but not a counted map type (arrays, the ring buffer). */
  private readonly skipped = new Set<string>();
  private fills = new Map<string, MapFill>();
  private countedAt = -Infinity;
  private running: Promise<void> | undefined;
  private closed = false;

  constructor(pinDir: string) {
    this.pinDir = pinDir;
  }

  /** The fills, counted afresh when the last count is too old (concurrent callers share one count). */
  async get(): Promise<ReadonlyMap<string, MapFill>> {
    if (this.closed) return new Map();
    if (performance.now() - this.countedAt >= MAP_FILL_MAX_AGE_MS) {
      this.running ??= this.refresh().finally(() => { this.running = undefined; });
      await this.running;
    }
    return this.fills;
  }

  private open(): void {
    for (const name of SHARED_MAPS) {
      if (this.maps.has(name) || this.skipped.has(name)) continue;
      const path = join(this.pinDir, name);
      if (!existsSync(path)) continue;
      const fd = getPinned(path, 'map');
      let info: MapInfo;
      try {
        info = mapInfo(fd);
      } catch (err) {
        closeFd(fd);
        throw err;
      }
      if (COUNTED_TYPES.has(info.type)) {
        this.maps.set(name, new CountedMap(name, fd, info));
      } else {
        closeFd(fd);
        this.skipped.add(name);
      }
    }
  }

  private async refresh(): Promise<void> {
    this.open();
    const fills = new Map<string, MapFill>();
    const alive = (): boolean => !this.closed;
    for (const [name, m] of this.maps) {
      const entries = await m.count(alive);
      if (entries === undefined) return;
      fills.set(name, { entries, capacity: m.info.maxEntries });
    }
    this.fills = fills;
    this.countedAt = performance.now();
  }

  close(): void {
    this.closed = true;
    // A count in progress checks `closed` after every pause, before its next syscall.
    for (const m of this.maps.values()) m.close();
    this.maps.clear();
  }
}

// ---------------------------------------------------------------------------
// The registry

type Labels<L extends string> = Partial<Record<L, string>>;

/** A counter whose series are set from a monotonic source at every scrape. */
function sourcedCounter<L extends string>(
  registry: Registry, name: string, help: string, labelNames: readonly L[], read: () => Iterable<readonly [Labels<L>, number]>,
): Counter<L> {
  const c: Counter<L> = new Counter<L>({
    name, help, labelNames, registers: [registry],
    collect() {
      c.reset();
      for (const [labels, value] of read()) c.inc(labels, value);
    },
  });
  return c;
}

/** A gauge whose series are set at every scrape (`read` may wait, e.g. for a map count). */
function sourcedGauge<L extends string>(
  registry: Registry, name: string, help: string, labelNames: readonly L[],
  read: () => Iterable<readonly [Labels<L>, number]> | Promise<Iterable<readonly [Labels<L>, number]>>,
): Gauge<L> {
  const g: Gauge<L> = new Gauge<L>({
    name, help, labelNames, registers: [registry],
    async collect() {
      const values = await read();
      g.reset();
      for (const [labels, value] of values) g.set(labels, value);
    },
  });
  return g;
}

/** The agent's `/metrics`. Keep the result's handler on the HTTP listener; `close()` releases the map handles. */
export function createAgentMetrics(sources: MetricsSources): AgentMetrics {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry, prefix: 'waggle_' });

  let datapathMap: PerCpuMap<MetricsKey, MetricsValue> | undefined;
  let closed = false;
  /** The pinned metrics array, opened once (or as soon as it is there). */
  const datapath = (): PerCpuMap<MetricsKey, MetricsValue> | undefined => {
    if (!datapathMap && !closed && existsSync(join(sources.pinDir, 'metrics'))) datapathMap = metricsMap(sources.pinDir);
    return datapathMap;
  };
  const fill = new MapFillCache(sources.pinDir);

  // What one scrape reads once and every family shares.
  let dp: DatapathSnapshot | undefined;
  let obs: ObserveStats | undefined;

  function* forwarded(what: 'packets' | 'bytes'): Generator<readonly [Labels<'direction'>, number]> {
    if (!dp) return;
    for (const d of [METRIC_INGRESS, METRIC_EGRESS]) yield [{ direction: directionName(d) }, dp[what][(d << 8) | REASON_FORWARDED] ?? 0];
  }
  function* dropped(what: 'packets' | 'bytes'): Generator<readonly [Labels<'reason' | 'direction'>, number]> {
    if (!dp) return;
    for (let i = 0; i < METRICS_MAX; i++) {
      const reason = i & 0xff;
      const direction = i >> 8;
      if (reason === REASON_FORWARDED || direction === METRIC_EVENT_LOST || !dp.packets[i]) continue;
      yield [{ reason: dropReasonName(reason), direction: directionName(direction) }, dp[what][i] ?? 0];
    }
  }
  const ringBufferLost = (): number => {
    if (!dp) return obs?.lostRingBuffer ?? 0;
    return lostEventCount(dp);
  };

  sourcedCounter(registry, 'waggle_forward_count_total',
    'Packets the endpoint datapath forwarded, by direction (INGRESS: to an endpoint from the node\'s stack, EGRESS: leaving an endpoint)',
    ['direction'], () => forwarded('packets'));
  sourcedCounter(registry, 'waggle_forward_bytes_total',
    'Bytes (Ethernet frames) the endpoint datapath forwarded, by direction', ['direction'], () => forwarded('bytes'));
  sourcedCounter(registry, 'waggle_drop_count_total',
    'Packets the endpoint datapath dropped, by drop reason (Hubble\'s names) and direction', ['reason', 'direction'], () => dropped('packets'));
  sourcedCounter(registry, 'waggle_drop_bytes_total',
    'Bytes (Ethernet frames) the endpoint datapath dropped, by drop reason and direction', ['reason', 'direction'], () => dropped('bytes'));
  sourcedCounter(registry, 'waggle_lost_events_total',
    'Flow events lost: perf_event_ring_buffer (the datapath found the ring buffer full), observer_events_queue (flows a client read too slowly to get)',
    ['source'], () => (obs ? [
      [{ source: 'perf_event_ring_buffer' }, ringBufferLost()],
      [{ source: 'observer_events_queue' }, obs.lostBackpressure],
    ] : []));

  sourcedCounter(registry, 'waggle_flows_processed_total',
    'Flow events the agent decoded, by type (trace, drop, policy-verdict, ...), verdict and protocol',
    ['type', 'verdict', 'protocol'], () => (obs?.flows ?? []).map((f) => [{ type: f.type, verdict: f.verdict, protocol: f.protocol }, f.count] as const));
  sourcedCounter(registry, 'waggle_policy_verdicts_total',
    'Policy verdict events, by direction (ingress, egress), match type (l3-only, l3-l4, l4-only, all, none) and action (forwarded, dropped)',
    ['direction', 'match', 'action'],
    () => (obs?.policyVerdicts ?? []).map((v) => [{ direction: v.direction, match: v.match, action: ACTIONS[v.action] ?? v.action }, v.count] as const));
  sourcedGauge(registry, 'waggle_flow_store_flows', 'Flows the agent keeps for `waggle observe`', [],
    () => (obs ? [[{}, obs.stored]] : []));
  sourcedGauge(registry, 'waggle_flow_store_capacity', 'Most flows the agent keeps (--flow-buffer)', [],
    () => (obs ? [[{}, obs.capacity]] : []));

  sourcedGauge(registry, 'waggle_endpoints', 'Endpoints the agent manages', [], () => [[{}, sources.endpoints()]]);
  sourcedGauge(registry, 'waggle_identities', 'Security identities allocated (reserved, endpoint and CIDR identities)', [], () => [[{}, sources.identities()]]);
  sourcedGauge(registry, 'waggle_policies', 'Network policies loaded', [], () => [[{}, sources.policies()]]);

  const fills = async (f: (m: MapFill) => number): Promise<[Labels<'map_name'>, number][]> =>
    [...(await fill.get())].map(([name, m]) => [{ map_name: name }, f(m)]);
  sourcedGauge(registry, 'waggle_bpf_map_entries',
    `Entries in a shared BPF map (hash, LRU hash and LPM trie maps; counted at most every ${MAP_FILL_MAX_AGE_MS / 1000} s)`,
    ['map_name'], () => fills((m) => m.entries));
  sourcedGauge(registry, 'waggle_bpf_map_capacity', 'Most entries a shared BPF map holds (max_entries)', ['map_name'], () => fills((m) => m.capacity));
  sourcedGauge(registry, 'waggle_bpf_map_pressure', 'Fill of a shared BPF map: entries / capacity (1 is full)', ['map_name'],
    () => fills((m) => (m.capacity > 0 ? m.entries / m.capacity : 0)));

  /** One scrape: the shared snapshots, then every family (counters read the snapshots synchronously). */
  const scrape = async (): Promise<string> => {
    const map = datapath();
    dp = map ? readDatapathCounters(map) : undefined;
    obs = sources.observe();
    // prom-client 15 writes NaN (e.g. the event-loop lag mean of a scrape with no samples) as `Nan`;
    // the text format spells it `NaN`. Sample lines carry no timestamp, so the value ends the line.
    return (await registry.metrics()).replace(/^([^#\n].*) Nan$/gm, '$1 NaN');
  };

  const handler: HttpHandler = async (req, res, url) => {
    if (url.pathname !== '/metrics') return false;
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { 'content-type': 'text/plain', allow: 'GET, HEAD' });
      res.end('method not allowed: use GET\n');
      return true;
    }
    const body = await scrape();
    res.writeHead(200, { 'content-type': registry.contentType, 'content-length': Buffer.byteLength(body) });
    res.end(req.method === 'HEAD' ? undefined : body);
    return true;
  };

  return {
    handler,
    close() {
      if (closed) return;
      closed = true;
      fill.close();
      datapathMap?.close();
      datapathMap = undefined;
      registry.clear();
    },
  };
}
