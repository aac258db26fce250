/**
 * The agent's flow store: a bounded ring of the last N flows. A flow is kept
 * as the datapath wrote it (the 96-byte `struct flow_event`) plus references
 * to what enrichment found (endpoints, deciding rules) and its wall-clock
 * time, so storing one costs a copy, not an object graph; Hubble JSON is built
 * only for the flows a client asks for. Lost-event records live in the same
 * ring, in order. Filters read stored flows through {@link StoredFlow}.
 */
import { formatIPv6 } from '../bpf/codec.js';
import { FLOW_EVENT_SIZE, flowEvent } from '../datapath/codecs/flow-event.js';
import type { FlowFields } from './filter.js';
import { toHubbleFlow, type EndpointView, type HubbleRecord } from './hubble.js';

/** A policy rule as flows name it. */
export interface RuleRef {
  kind: string;
  name: string;
  namespace?: string;
  index: number;
}

/** What enrichment attached to one flow when it was seen. */
export interface FlowRefs {
  observer: EndpointView | undefined;
  src: EndpointView | undefined;
  dst: EndpointView | undefined;
  egressRule: RuleRef | undefined;
  ingressRule: RuleRef | undefined;
  /** The service a translated flow went to (per-packet load balancing), if any. */
  service?: ServiceRef | undefined;
}

/** A service as flows name it (Hubble's `destination_service`). */
export interface ServiceRef {
  name: string;
  namespace: string;
}

/** What the store needs to turn a stored flow back into Hubble JSON. */
export interface StoreContext {
  nodeName: string;
  /** Cilium-style labels of a non-endpoint identity (`reserved:world`, `cidr:…`). */
  identityLabels(identity: number): string[] | undefined;
}

/** Where a lost-events record came from (Hubble's LostEventSource names). */
export type LostEventSource = 'PERF_EVENT_RING_BUFFER' | 'OBSERVER_EVENTS_QUEUE' | 'HUBBLE_RING_BUFFER';

const KIND_FLOW = 1;
const KIND_LOST = 2;
const NO_LABELS: readonly string[] = [];
const FLAG_INGRESS = 0x04;
const FLAG_EGRESS = 0x08;

/** Called for each record added; `seq` identifies it in the store. */
export type StoreListener = (seq: number) => void;

/** A flow's uuid: the agent's random prefix and the flow's sequence number. */
const uuidPrefix = [...crypto.getRandomValues(new Uint8Array(6))].map((b) => b.toString(16).padStart(2, '0')).join('');
function uuidOf(seq: number): string {
  const c = seq.toString(16).padStart(16, '0');
  return `${uuidPrefix.slice(0, 8)}-${uuidPrefix.slice(8, 12)}-4${c.slice(0, 3)}-8${c.slice(3, 6)}-${c.slice(4, 16)}`;
}

export class FlowStore {
  readonly capacity: number;
  private readonly ctx: StoreContext;
  private readonly raw: Uint8Array;
  private readonly rawView: DataView;
  private readonly kind: Uint8Array;
  private readonly wallMs: Float64Array;
  private readonly observer: (EndpointView | undefined)[];
  private readonly src: (EndpointView | undefined)[];
  private readonly dst: (EndpointView | undefined)[];
  private readonly egressRule: (RuleRef | undefined)[];
  private readonly ingressRule: (RuleRef | undefined)[];
  /** Sparse: only translated flows have one. */
  private readonly service = new Map<number, ServiceRef>();
  private readonly lost: ({ source: LostEventSource; count: number } | undefined)[];
  /** Sequence number of the next record; record `seq` lives in slot `seq % capacity`. */
  private nextSeq = 0;
  private flowCount = 0;
  private readonly listeners = new Set<StoreListener>();

  constructor(capacity: number, ctx: StoreContext) {
    if (!Number.isInteger(capacity) || capacity < 1) throw new Error(`flow buffer must be a positive integer, got ${capacity}`);
    this.capacity = capacity;
    this.ctx = ctx;
    const buf = new ArrayBuffer(capacity * FLOW_EVENT_SIZE);
    this.raw = new Uint8Array(buf);
    this.rawView = new DataView(buf);
    this.kind = new Uint8Array(capacity);
    this.wallMs = new Float64Array(capacity);
    this.observer = new Array<EndpointView | undefined>(capacity);
    this.src = new Array<EndpointView | undefined>(capacity);
    this.dst = new Array<EndpointView | undefined>(capacity);
    this.egressRule = new Array<RuleRef | undefined>(capacity);
    this.ingressRule = new Array<RuleRef | undefined>(capacity);
    this.lost = new Array<{ source: LostEventSource; count: number } | undefined>(capacity);
  }

  get nodeName(): string {
    return this.ctx.nodeName;
  }

  /** Flows seen since the agent started (lost-event records not counted). */
  get seen(): number {
    return this.flowCount;
  }

  /** Records (flows and lost-event records) currently kept. */
  get size(): number {
    return Math.min(this.nextSeq, this.capacity);
  }

  /** Sequence number of the oldest record kept. */
  get firstSeq(): number {
    return this.nextSeq - this.size;
  }

  /** Sequence number the next record will get. */
  get endSeq(): number {
    return this.nextSeq;
  }

  /**
   * Stores one flow event (FLOW_EVENT_SIZE bytes at `offset` of `bytes`) with
   * its enrichment and wall-clock time. Returns its sequence number.
   */
  addFlow(bytes: Uint8Array, offset: number, timeMs: number, refs: FlowRefs): number {
    const seq = this.nextSeq++;
    const slot = seq % this.capacity;
    this.raw.set(bytes.subarray(offset, offset + FLOW_EVENT_SIZE), slot * FLOW_EVENT_SIZE);
    this.kind[slot] = KIND_FLOW;
    this.wallMs[slot] = timeMs;
    this.observer[slot] = refs.observer;
    this.src[slot] = refs.src;
    this.dst[slot] = refs.dst;
    this.egressRule[slot] = refs.egressRule;
    this.ingressRule[slot] = refs.ingressRule;
    if (refs.service) this.service.set(slot, refs.service);
    else if (this.service.size) this.service.delete(slot);
    this.lost[slot] = undefined;
    this.flowCount++;
    if (this.listeners.size) for (const l of this.listeners) l(seq);
    return seq;
  }

  /** Stores a lost-events record (events that never became flows). */
  addLost(source: LostEventSource, count: number, timeMs = Date.now()): number {
    const seq = this.nextSeq++;
    const slot = seq % this.capacity;
    this.kind[slot] = KIND_LOST;
    this.wallMs[slot] = timeMs;
    this.observer[slot] = this.src[slot] = this.dst[slot] = undefined;
    this.egressRule[slot] = this.ingressRule[slot] = undefined;
    if (this.service.size) this.service.delete(slot);
    this.lost[slot] = { source, count };
    if (this.listeners.size) for (const l of this.listeners) l(seq);
    return seq;
  }

  /** Whether `seq` is still kept. */
  has(seq: number): boolean {
    return seq >= this.firstSeq && seq < this.nextSeq;
  }

  /** Whether record `seq` is a lost-events record rather than a flow. */
  isLost(seq: number): boolean {
    return this.kind[seq % this.capacity] === KIND_LOST;
  }

  /** Wall-clock time of record `seq`, ms since the epoch. */
  timeOf(seq: number): number {
    return this.wallMs[seq % this.capacity]!;
  }

  /** A reusable cursor for reading stored flows (see {@link StoredFlow.at}). */
  cursor(): StoredFlow {
    return new StoredFlow(this);
  }

  /** Calls `fn` with the sequence number of every new record until the returned function is called. */
  subscribe(fn: StoreListener): () => void {
    this.listeners.add(fn);
    return () => { this.listeners.delete(fn); };
  }

  /** Hubble JSON for record `seq` (a flow or a lost-events record). */
  record(seq: number): HubbleRecord {
    const slot = seq % this.capacity;
    const time = isoNs(this.wallMs[slot]!);
    const lost = this.lost[slot];
    if (this.kind[slot] === KIND_LOST && lost) {
      return { lost_events: { source: lost.source, num_events_lost: lost.count }, node_name: this.ctx.nodeName, time };
    }
    const e = flowEvent.decode(Buffer.from(this.raw.buffer, this.raw.byteOffset, this.raw.byteLength), slot * FLOW_EVENT_SIZE);
    const src = this.src[slot];
    const dst = this.dst[slot];
    const observer = this.observer[slot];
    const byId = (id: number): EndpointView | undefined =>
      id === 0 ? undefined : id === e.srcEndpoint ? src : id === e.dstEndpoint ? dst : id === e.endpointId ? observer : undefined;
    const egress = this.egressRule[slot];
    const ingress = this.ingressRule[slot];
    const flow = toHubbleFlow(e, this.ctx.nodeName, byId, (ip) => (e.srcEndpoint === 0 && src && ipOf(e.family, e.srcAddr) === ip ? src : e.dstEndpoint === 0 && dst && ipOf(e.family, e.dstAddr) === ip ? dst : undefined), {
      identityLabels: (id) => this.ctx.identityLabels(id),
      rule: (cookie) => (cookie === e.egressCookie ? egress : cookie === e.ingressCookie ? ingress : undefined),
    }, { time, uuid: uuidOf(seq) });
    const service = this.service.get(slot);
    // The client's packets go to the service; the backend's replies come from it.
    if (service) flow[flow.is_reply ? 'source_service' : 'destination_service'] = service;
    return { flow, node_name: this.ctx.nodeName, time };
  }

  /** @internal cursor access */
  readonly internals = {
    raw: (): Uint8Array => this.raw,
    view: (): DataView => this.rawView,
    observer: (slot: number) => this.observer[slot],
    src: (slot: number) => this.src[slot],
    dst: (slot: number) => this.dst[slot],
    identityLabels: (id: number): readonly string[] => this.ctx.identityLabels(id) ?? NO_LABELS,
  };
}

function ipOf(family: number, bytes: Uint8Array): string | undefined {
  if (family === 2) return `${bytes[0]}.${bytes[1]}.${bytes[2]}.${bytes[3]}`;
  if (family !== 10) return undefined;
  return formatIPv6(bytes);
}

/** ISO 8601 with nanosecond digits, as Hubble prints times. */
function isoNs(ms: number): string {
  const whole = Math.floor(ms);
  const base = new Date(whole).toISOString(); // ...ss.mmmZ
  const sub = Math.round((ms - whole) * 1e6).toString().padStart(6, '0').slice(0, 6);
  return `${base.slice(0, -1)}${sub}Z`;
}

/**
 * A flyweight over one stored flow: {@link at} moves it; the fields read the
 * stored bytes directly. One cursor serves a whole scan.
 */
export class StoredFlow implements FlowFields {
  private slot = 0;
  private base = 0;
  private readonly raw: Uint8Array;
  private readonly dv: DataView;

  constructor(private readonly store: FlowStore) {
    this.raw = store.internals.raw();
    this.dv = store.internals.view();
  }

  /** Points the cursor at record `seq` (which must be a kept flow). */
  at(seq: number): this {
    this.slot = seq % this.store.capacity;
    this.base = this.slot * FLOW_EVENT_SIZE;
    return this;
  }

  get endpointId(): number { return this.dv.getUint32(this.base + 8, true); }
  get srcEndpoint(): number { return this.dv.getUint32(this.base + 16, true); }
  get dstEndpoint(): number { return this.dv.getUint32(this.base + 20, true); }
  get srcIdentity(): number { return this.dv.getUint32(this.base + 24, true); }
  get dstIdentity(): number { return this.dv.getUint32(this.base + 28, true); }
  get pktLen(): number { return this.dv.getUint32(this.base + 40, true); }
  get dropReason(): number { return this.dv.getUint16(this.base + 44, true); }
  get type(): number { return this.raw[this.base + 48]!; }
  get obsPoint(): number { return this.raw[this.base + 49]!; }
  get verdict(): number { return this.raw[this.base + 50]!; }
  get family(): number { return this.raw[this.base + 51]!; }
  get ipProto(): number { return this.raw[this.base + 52]!; }
  get tcpFlags(): number { return this.raw[this.base + 53]!; }
  get icmpType(): number { return this.raw[this.base + 54]!; }
  get srcPort(): number { return this.dv.getUint16(this.base + 56, true); }
  get dstPort(): number { return this.dv.getUint16(this.base + 58, true); }
  get matchType(): number { return this.raw[this.base + 62]!; }
  get flags(): number { return this.raw[this.base + 63]!; }
  srcAddr(): Uint8Array { return this.raw.subarray(this.base + 64, this.base + 64 + (this.family === 2 ? 4 : this.family === 10 ? 16 : 0)); }
  dstAddr(): Uint8Array { return this.raw.subarray(this.base + 80, this.base + 80 + (this.family === 2 ? 4 : this.family === 10 ? 16 : 0)); }
  get src(): EndpointView | undefined { return this.store.internals.src(this.slot); }
  get dst(): EndpointView | undefined { return this.store.internals.dst(this.slot); }
  get observer(): EndpointView | undefined { return this.store.internals.observer(this.slot); }
  get direction(): 'INGRESS' | 'EGRESS' | undefined {
    const f = this.flags;
    if (f & FLAG_INGRESS) return 'INGRESS';
    if (f & FLAG_EGRESS) return 'EGRESS';
    if (!this.observer) return undefined;
    const ep = this.endpointId;
    return this.dstEndpoint === ep && this.srcEndpoint !== ep ? 'INGRESS' : 'EGRESS';
  }
  srcLabels(): readonly string[] { return this.src?.labels ?? this.store.internals.identityLabels(this.srcIdentity); }
  dstLabels(): readonly string[] { return this.dst?.labels ?? this.store.internals.identityLabels(this.dstIdentity); }
}
