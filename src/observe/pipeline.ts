/**
 * Ring buffer record → enrichment → flow store, with the counters metrics
 * read. Per event: one copy into the store, a few map lookups for endpoints
 * and rules, and array increments; no objects are built (Hubble JSON is made
 * only when a client asks, see store.ts).
 */
import { FLOW_EVENT_SIZE } from '../datapath/codecs/flow-event.js';
import { formatIPv6 } from '../bpf/codec.js';
import type { EndpointView } from './hubble.js';
import { FlowStore, type LostEventSource, type RuleRef, type ServiceRef, type StoredFlow } from './store.js';

/** What enrichment asks the rest of the agent. */
export interface EnrichmentSources {
  nodeName: string;
  /** Local endpoint by datapath ID. */
  endpoint(id: number): EndpointView | undefined;
  /** Local endpoint by address (text form). */
  endpointByIp(ip: string): EndpointView | undefined;
  /** The rule behind a datapath policy cookie. */
  rule(cookie: number): RuleRef | undefined;
  /** Labels of an identity (reserved, CIDR or endpoint). */
  identityLabels(identity: number): string[] | undefined;
  /** The service behind a frontend ID (translated flows carry it). */
  service?(frontendId: number): ServiceRef | undefined;
}

/** Flow counts by event type, verdict and protocol (for `waggle_flows_processed_total`). */
export interface FlowCount {
  type: 'drop' | 'trace' | 'policy-verdict' | 'l7' | 'other';
  verdict: 'FORWARDED' | 'DROPPED' | 'OTHER';
  protocol: 'TCP' | 'UDP' | 'SCTP' | 'ICMPv4' | 'ICMPv6' | 'other-ip' | 'non-ip';
  count: number;
}

/** Policy verdict events by direction, match type and action (`waggle_policy_verdicts_total`). */
export interface PolicyVerdictCount {
  direction: 'ingress' | 'egress' | 'unknown';
  match: 'none' | 'l3-only' | 'l3-l4' | 'l4-only' | 'all';
  action: 'allowed' | 'denied';
  count: number;
}

/** The pipeline's figures, for `waggle status` and `/metrics`. */
export interface ObserveStats {
  /** Flows decoded and stored since the agent started. */
  flowsSeen: number;
  /** Records now kept, and the most that are. */
  stored: number;
  capacity: number;
  /** Events the datapath could not put in the ring buffer (it was full). */
  lostRingBuffer: number;
  /** Flows not delivered to a client that read too slowly. */
  lostBackpressure: number;
  /** Bytes the store holds for its flows (fixed at start). */
  storeBytes: number;
  flows: FlowCount[];
  policyVerdicts: PolicyVerdictCount[];
}

const TYPE_NAMES: FlowCount['type'][] = ['drop', 'trace', 'policy-verdict', 'l7', 'other'];
const VERDICT_NAMES: FlowCount['verdict'][] = ['OTHER', 'FORWARDED', 'DROPPED'];
const PROTO_NAMES: FlowCount['protocol'][] = ['non-ip', 'TCP', 'UDP', 'SCTP', 'ICMPv4', 'ICMPv6', 'other-ip'];
const MATCH_NAMES: PolicyVerdictCount['match'][] = ['none', 'l3-only', 'l3-l4', 'l4-only', 'all'];
const DIRECTION_NAMES: PolicyVerdictCount['direction'][] = ['unknown', 'ingress', 'egress'];

function typeIndex(type: number): number {
  return type === 1 ? 0 : type === 4 ? 1 : type === 5 ? 2 : type === 129 ? 3 : 4;
}

function protoIndex(family: number, proto: number): number {
  if (family !== 2 && family !== 10) return 0;
  switch (proto) {
    case 6: return 1;
    case 17: return 2;
    case 132: return 3;
    case 1: return 4;
    case 58: return 5;
    default: return 6;
  }
}

/** Endpoint identities are 256..65535; reserved and CIDR identities never name a local endpoint. */
function mayBeEndpoint(identity: number): boolean {
  return identity === 0 || (identity >= 256 && identity < 16777216);
}

export type FlowHook = (flow: StoredFlow, seq: number) => void;

export class FlowPipeline {
  readonly store: FlowStore;
  private readonly sources: EnrichmentSources;
  private view: DataView = new DataView(new ArrayBuffer(0));
  private bytes: Uint8Array = new Uint8Array(0);
  private readonly flowCounts = new Float64Array(TYPE_NAMES.length * VERDICT_NAMES.length * PROTO_NAMES.length);
  private readonly verdictCounts = new Float64Array(DIRECTION_NAMES.length * MATCH_NAMES.length * 2);
  private lostRing = 0;
  private lostSlow = 0;
  private readonly hooks: FlowHook[] = [];
  private readonly cursor: StoredFlow;
  /** Wall-clock ms minus CLOCK_MONOTONIC ms (bpf_ktime_get_ns and process.hrtime share that clock). */
  private clockOffsetMs = 0;
  private sinceClock = 0;

  constructor(capacity: number, sources: EnrichmentSources) {
    this.sources = sources;
    this.store = new FlowStore(capacity, { nodeName: sources.nodeName, identityLabels: (id) => sources.identityLabels(id) });
    this.cursor = this.store.cursor();
    this.syncClock();
  }

  private syncClock(): void {
    this.clockOffsetMs = Date.now() - Number(process.hrtime.bigint()) / 1e6;
  }

  /** Calls `hook` for every flow stored (the service map listens here) until the returned function is called. */
  onFlow(hook: FlowHook): () => void {
    this.hooks.push(hook);
    return () => {
      const i = this.hooks.indexOf(hook);
      if (i >= 0) this.hooks.splice(i, 1);
    };
  }

  /** Ingests one `struct flow_event` record at `offset` of `dv` (the ring buffer's view). */
  ingest(dv: DataView, offset: number): void {
    if (dv !== this.view) {
      this.view = dv;
      this.bytes = new Uint8Array(dv.buffer, dv.byteOffset, dv.byteLength);
    }
    const bytes = this.bytes;
    const o = offset;
    if (++this.sinceClock >= 4096) { this.sinceClock = 0; this.syncClock(); }
    const timeMs = (dv.getUint32(o + 4, true) * 4294967296 + dv.getUint32(o, true)) / 1e6 + this.clockOffsetMs;
    const s = this.sources;
    const endpointId = dv.getUint32(o + 8, true);
    const srcId = dv.getUint32(o + 16, true);
    const dstId = dv.getUint32(o + 20, true);
    const egressCookie = dv.getUint32(o + 32, true);
    const ingressCookie = dv.getUint32(o + 36, true);
    const type = bytes[offset + 48]!;
    const verdict = bytes[offset + 50]!;
    const family = bytes[offset + 51]!;
    const proto = bytes[offset + 52]!;
    const observer = endpointId ? s.endpoint(endpointId) : undefined;
    let src = srcId ? (srcId === endpointId ? observer : s.endpoint(srcId)) : undefined;
    let dst = dstId ? (dstId === endpointId ? observer : s.endpoint(dstId)) : undefined;
    if (!src && family !== 0 && mayBeEndpoint(dv.getUint32(o + 24, true))) src = s.endpointByIp(textIp(family, bytes, offset + 64));
    if (!dst && family !== 0 && mayBeEndpoint(dv.getUint32(o + 28, true))) dst = s.endpointByIp(textIp(family, bytes, offset + 80));
    const flags = bytes[offset + 63]!;
    const seq = this.store.addFlow(bytes, offset, timeMs, {
      observer, src, dst,
      egressRule: egressCookie ? s.rule(egressCookie) : undefined,
      ingressRule: ingressCookie ? s.rule(ingressCookie) : undefined,
      // Translated flows carry the frontend ID where drops carry a source line.
      service: flags & 0x10 && s.service ? s.service(dv.getUint16(o + 46, true)) : undefined,
    });
    const v = verdict <= 2 ? verdict : 0;
    this.flowCounts[(typeIndex(type) * VERDICT_NAMES.length + v) * PROTO_NAMES.length + protoIndex(family, proto)]! += 1;
    if (type === 5) {
      const dir = flags & 0x04 ? 1 : flags & 0x08 ? 2 : 0;
      const match = Math.min(bytes[offset + 62]!, 4);
      this.verdictCounts[(dir * MATCH_NAMES.length + match) * 2 + (verdict === 2 ? 1 : 0)]! += 1;
    }
    if (this.hooks.length) {
      this.cursor.at(seq);
      for (const h of this.hooks) h(this.cursor, seq);
    }
  }

  /** Events the datapath lost (ring buffer full): counted and stored as a LOST_EVENTS record. */
  recordLost(source: LostEventSource, count: number): void {
    if (count <= 0) return;
    if (source === 'PERF_EVENT_RING_BUFFER') this.lostRing += count;
    this.store.addLost(source, count);
  }

  /** Flows a slow client did not get (the stream tells that client with its own LOST_EVENTS record). */
  countBackpressure(count: number): void {
    this.lostSlow += count;
  }

  stats(): ObserveStats {
    const flows: FlowCount[] = [];
    this.flowCounts.forEach((count, i) => {
      if (!count) return;
      const p = i % PROTO_NAMES.length;
      const rest = (i - p) / PROTO_NAMES.length;
      const v = rest % VERDICT_NAMES.length;
      const t = (rest - v) / VERDICT_NAMES.length;
      flows.push({ type: TYPE_NAMES[t]!, verdict: VERDICT_NAMES[v]!, protocol: PROTO_NAMES[p]!, count });
    });
    const policyVerdicts: PolicyVerdictCount[] = [];
    this.verdictCounts.forEach((count, i) => {
      if (!count) return;
      const a = i % 2;
      const rest = (i - a) / 2;
      const m = rest % MATCH_NAMES.length;
      const d = (rest - m) / MATCH_NAMES.length;
      policyVerdicts.push({ direction: DIRECTION_NAMES[d]!, match: MATCH_NAMES[m]!, action: a ? 'denied' : 'allowed', count });
    });
    return {
      flowsSeen: this.store.seen,
      stored: this.store.size,
      capacity: this.store.capacity,
      lostRingBuffer: this.lostRing,
      lostBackpressure: this.lostSlow,
      storeBytes: this.store.capacity * FLOW_EVENT_SIZE,
      flows,
      policyVerdicts,
    };
  }
}

function textIp(family: number, bytes: Uint8Array, at: number): string {
  if (family === 2) return `${bytes[at]}.${bytes[at + 1]}.${bytes[at + 2]}.${bytes[at + 3]}`;
  return formatIPv6(bytes.subarray(at, at + 16));
}
