/**
 * Flow filters with Hubble's meaning: inside one filter every field must match
 * (AND) and a field matches when any of its values does (OR); a flow is shown
 * when it matches any `include` filter (or there is none) and no `exclude`
 * filter. The CLI, the API and the web UI share this one model, and the agent
 * evaluates it over its stored flows so clients never download the store.
 */
import { z } from 'zod';
import { parseCidr, type ParsedCidr } from '../netlink/message.js';
import type { EndpointView } from './hubble.js';

/** Hubble's verdict names (Waggle's datapath produces FORWARDED and DROPPED). */
export const VERDICTS = ['FORWARDED', 'DROPPED', 'ERROR', 'AUDIT', 'REDIRECTED', 'TRACED', 'TRANSLATED'] as const;
export type VerdictName = (typeof VERDICTS)[number];

/** Event types as `hubble observe --type` names them; `trace:POINT` narrows to one observation point. */
export const EVENT_TYPES = ['trace', 'drop', 'policy-verdict', 'l7', 'trace:from-endpoint', 'trace:to-endpoint', 'trace:to-stack'] as const;
export type EventTypeName = (typeof EVENT_TYPES)[number];

/** `--protocol` values: L4 protocols (`icmp` is either family) and L7 ones. */
export const PROTOCOLS = ['tcp', 'udp', 'sctp', 'icmp', 'icmpv4', 'icmpv6', 'http', 'dns'] as const;
export type ProtocolName = (typeof PROTOCOLS)[number];

export const TRAFFIC_DIRECTIONS = ['ingress', 'egress'] as const;

/**
 * One filter. `source*` / `destination*` look at one end; the unprefixed
 * field (`ip`, `endpoint`, `label`, `namespace`, `identity`, `port`) matches
 * when either end does. IPs may be CIDRs; endpoints are `name` or
 * `namespace/name`; labels are selectors (`app=web`, `k8s:app=web`, `app`,
 * `!app`, `app!=web`, `app in (a,b)`, `app notin (a,b)`, comma = AND).
 */
export interface FlowFilter {
  sourceIp?: string[];
  destinationIp?: string[];
  ip?: string[];
  sourceEndpoint?: string[];
  destinationEndpoint?: string[];
  endpoint?: string[];
  sourceLabel?: string[];
  destinationLabel?: string[];
  label?: string[];
  sourceNamespace?: string[];
  destinationNamespace?: string[];
  namespace?: string[];
  sourceIdentity?: number[];
  destinationIdentity?: number[];
  identity?: number[];
  sourcePort?: number[];
  destinationPort?: number[];
  port?: number[];
  protocol?: ProtocolName[];
  verdict?: VerdictName[];
  type?: EventTypeName[];
  trafficDirection?: (typeof TRAFFIC_DIRECTIONS)[number][];
}

/** What a client asks the agent for. */
export interface FlowQuery {
  include: FlowFilter[];
  exclude: FlowFilter[];
  /** Wall-clock bounds, ms since the epoch (inclusive). */
  sinceMs?: number;
  untilMs?: number;
  /** The last N matching flows (all kept when absent; none before live ones with follow and no last). */
  last?: number;
  follow: boolean;
}

/** A filter the user wrote wrong; the message names the field and the value. */
export class FilterError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'FilterError';
  }
}

const strings = z.array(z.string().min(1)).min(1);
const port = z.number().int().min(0).max(65535);
const identity = z.number().int().min(0).max(0xffffffff);
export const flowFilterSchema = z.object({
  sourceIp: strings, destinationIp: strings, ip: strings,
  sourceEndpoint: strings, destinationEndpoint: strings, endpoint: strings,
  sourceLabel: strings, destinationLabel: strings, label: strings,
  sourceNamespace: strings, destinationNamespace: strings, namespace: strings,
  sourceIdentity: z.array(identity).min(1), destinationIdentity: z.array(identity).min(1), identity: z.array(identity).min(1),
  sourcePort: z.array(port).min(1), destinationPort: z.array(port).min(1), port: z.array(port).min(1),
  protocol: z.array(z.enum(PROTOCOLS)).min(1),
  verdict: z.array(z.enum(VERDICTS)).min(1),
  type: z.array(z.enum(EVENT_TYPES)).min(1),
  trafficDirection: z.array(z.enum(TRAFFIC_DIRECTIONS)).min(1),
}).partial().strict();

const filterListSchema = z.object({
  include: z.array(flowFilterSchema).default([]),
  exclude: z.array(flowFilterSchema).default([]),
}).strict();

// ---- the fields a filter reads ------------------------------------------

/** What a matcher reads from one stored flow (the store's cursor implements it). */
export interface FlowFields {
  /** Monitor event type: 1 drop, 4 trace, 5 policy verdict, 129 L7. */
  readonly type: number;
  /** Trace observation point (OBS_*), 0 when none. */
  readonly obsPoint: number;
  /** 1 forwarded, 2 dropped. */
  readonly verdict: number;
  /** AF_INET (2), AF_INET6 (10) or 0 (not IP). */
  readonly family: number;
  readonly ipProto: number;
  readonly srcPort: number;
  readonly dstPort: number;
  /** FLOW_F_* bits (direction, reply). */
  readonly flags: number;
  readonly srcIdentity: number;
  readonly dstIdentity: number;
  /** 4 or 16 address bytes, network order (empty when not IP). */
  srcAddr(): Uint8Array;
  dstAddr(): Uint8Array;
  /** Local endpoints at the ends, as they were when the flow was seen. */
  readonly src: EndpointView | undefined;
  readonly dst: EndpointView | undefined;
  /** The flow's traffic direction as Hubble reports it. */
  readonly direction: 'INGRESS' | 'EGRESS' | undefined;
  /** Labels of the ends: endpoint labels, or the identity's labels (`reserved:world`). */
  srcLabels(): readonly string[];
  dstLabels(): readonly string[];
}

// ---- label selectors ----------------------------------------------------

/** One selector term; `source` undefined matches a label of any source. */
type LabelTerm =
  | { op: 'exists' | 'absent'; key: string; source: string | undefined }
  | { op: 'in' | 'notin'; key: string; source: string | undefined; values: string[] };

/** A label split once: `source:key=value`. */
interface SplitLabel { source: string; key: string; value: string }

/** `source:key=value` → its parts (a label without a source has source ''). */
function splitLabel(label: string): SplitLabel {
  const eq = label.indexOf('=');
  const k = eq < 0 ? label : label.slice(0, eq);
  const value = eq < 0 ? '' : label.slice(eq + 1);
  const colon = k.indexOf(':');
  return colon < 0 ? { source: '', key: k, value } : { source: k.slice(0, colon), key: k.slice(colon + 1), value };
}

/** Label lists are shared by every flow of an endpoint: split each list once. */
const splitCache = new WeakMap<readonly string[], SplitLabel[]>();
function splitLabels(labels: readonly string[]): SplitLabel[] {
  let split = splitCache.get(labels);
  if (!split) {
    split = labels.map(splitLabel);
    splitCache.set(labels, split);
  }
  return split;
}

/** A selector key: `source:key`, `any:key` or `key` (any source). */
function termKey(text: string): { key: string; source: string | undefined } {
  const colon = text.indexOf(':');
  if (colon < 0) return { key: text, source: undefined };
  const source = text.slice(0, colon);
  return { key: text.slice(colon + 1), source: source === 'any' ? undefined : source };
}

const LABEL_KEY = /^[A-Za-z0-9_.\-/:]+$/;
const LABEL_VALUE = /^[A-Za-z0-9_.\-/:]*$/;

/** Parses a label selector; throws FilterError naming what is wrong. */
export function parseLabelSelector(text: string): LabelTerm[] {
  const terms: LabelTerm[] = [];
  // Split on commas outside parentheses.
  const parts: string[] = [];
  let depth = 0;
  let cur = '';
  for (const ch of text) {
    if (ch === '(') depth++;
    if (ch === ')') depth--;
    if (ch === ',' && depth === 0) { parts.push(cur); cur = ''; } else cur += ch;
  }
  parts.push(cur);
  const bad = (why: string): FilterError => new FilterError(`label selector ${JSON.stringify(text)}: ${why}`);
  for (const raw of parts) {
    const part = raw.trim();
    if (!part) throw bad('empty term');
    let m: RegExpMatchArray | null;
    if ((m = part.match(/^(\S+)\s+(in|notin)\s*\(([^)]*)\)$/))) {
      const values = m[3]!.split(',').map((v) => v.trim());
      if (!LABEL_KEY.test(m[1]!) || values.some((v) => !LABEL_VALUE.test(v))) throw bad(`bad term ${JSON.stringify(part)}`);
      terms.push({ op: m[2] as 'in' | 'notin', ...termKey(m[1]!), values });
    } else if ((m = part.match(/^([^=!\s]+)\s*(==|=|!=)\s*(\S*)$/))) {
      if (!LABEL_KEY.test(m[1]!) || !LABEL_VALUE.test(m[3]!)) throw bad(`bad term ${JSON.stringify(part)}`);
      terms.push({ op: m[2] === '!=' ? 'notin' : 'in', ...termKey(m[1]!), values: [m[3]!] });
    } else if ((m = part.match(/^!\s*(\S+)$/))) {
      if (!LABEL_KEY.test(m[1]!)) throw bad(`bad key ${JSON.stringify(m[1])}`);
      terms.push({ op: 'absent', ...termKey(m[1]!) });
    } else if (LABEL_KEY.test(part)) {
      terms.push({ op: 'exists', ...termKey(part) });
    } else {
      throw bad(`cannot read ${JSON.stringify(part)} (use key=value, key!=value, key, !key, key in (a,b) or key notin (a,b))`);
    }
  }
  return terms;
}

/** Whether `labels` (`source:key=value` strings) satisfy every term. */
export function labelsMatch(terms: readonly LabelTerm[], labels: readonly string[]): boolean {
  const split = splitLabels(labels);
  for (const t of terms) {
    let found = false;
    let valueOk = false;
    for (const l of split) {
      if (l.key !== t.key || (t.source !== undefined && l.source !== t.source)) continue;
      found = true;
      if (t.op === 'in' && t.values.includes(l.value)) valueOk = true;
      if (t.op === 'notin' && t.values.includes(l.value)) return false;
    }
    if (t.op === 'exists' && !found) return false;
    if (t.op === 'absent' && found) return false;
    if (t.op === 'in' && !valueOk) return false;
  }
  return true;
}

// ---- compiling ----------------------------------------------------------

type Check = (f: FlowFields) => boolean;

function cidrMatches(c: ParsedCidr, family: number, addr: Uint8Array): boolean {
  if ((c.family === 4 ? 2 : 10) !== family) return false;
  let bits = c.prefixLen;
  for (let i = 0; bits > 0; i++, bits -= 8) {
    const mask = bits >= 8 ? 0xff : (0xff << (8 - bits)) & 0xff;
    if (((addr[i] ?? 0) & mask) !== ((c.bytes[i] ?? 0) & mask)) return false;
  }
  return true;
}

function parseIps(field: string, values: string[]): ParsedCidr[] {
  return values.map((v) => {
    try {
      return parseCidr(v);
    } catch {
      throw new FilterError(`${field}: ${JSON.stringify(v)} is not an IP address or CIDR`);
    }
  });
}

function endpointMatches(want: string, view: EndpointView | undefined): boolean {
  if (!view) return false;
  const slash = want.indexOf('/');
  return slash < 0 ? view.name === want : view.namespace === want.slice(0, slash) && view.name === want.slice(slash + 1);
}

const TYPE_CHECKS: Record<EventTypeName, Check> = {
  trace: (f) => f.type === 4,
  drop: (f) => f.type === 1,
  'policy-verdict': (f) => f.type === 5,
  l7: (f) => f.type === 129,
  'trace:from-endpoint': (f) => f.type === 4 && f.obsPoint === 5,
  'trace:to-endpoint': (f) => f.type === 4 && f.obsPoint === 101,
  'trace:to-stack': (f) => f.type === 4 && f.obsPoint === 3,
};

const PROTOCOL_CHECKS: Record<ProtocolName, Check> = {
  tcp: (f) => f.ipProto === 6 && f.family !== 0,
  udp: (f) => f.ipProto === 17 && f.family !== 0,
  sctp: (f) => f.ipProto === 132 && f.family !== 0,
  icmp: (f) => (f.ipProto === 1 && f.family === 2) || (f.ipProto === 58 && f.family === 10),
  icmpv4: (f) => f.ipProto === 1 && f.family === 2,
  icmpv6: (f) => f.ipProto === 58 && f.family === 10,
  // L7 records arrive with the L7 proxy; until then nothing is HTTP or DNS.
  http: (f) => f.type === 129,
  dns: (f) => f.type === 129,
};

const VERDICT_NUMBERS: Record<VerdictName, number> = { FORWARDED: 1, DROPPED: 2, ERROR: 3, AUDIT: 4, REDIRECTED: 5, TRACED: 6, TRANSLATED: 7 };

/** Source and destination sides of a field plus "either end". */
function sided<T>(
  checks: Check[],
  values: { source?: T[]; destination?: T[]; either?: T[] },
  prepare: (v: T[]) => (f: FlowFields, side: 'src' | 'dst') => boolean,
): void {
  if (values.source) { const m = prepare(values.source); checks.push((f) => m(f, 'src')); }
  if (values.destination) { const m = prepare(values.destination); checks.push((f) => m(f, 'dst')); }
  if (values.either) { const m = prepare(values.either); checks.push((f) => m(f, 'src') || m(f, 'dst')); }
}

/** Compiles one filter into a predicate; throws FilterError on a bad value. */
export function compileFilter(filter: FlowFilter): Check {
  const checks: Check[] = [];
  sided(checks, { source: filter.sourceIp, destination: filter.destinationIp, either: filter.ip }, (vs) => {
    const cidrs = parseIps('ip', vs);
    return (f, side) => {
      if (f.family === 0) return false;
      const addr = side === 'src' ? f.srcAddr() : f.dstAddr();
      return cidrs.some((c) => cidrMatches(c, f.family, addr));
    };
  });
  sided(checks, { source: filter.sourceEndpoint, destination: filter.destinationEndpoint, either: filter.endpoint }, (vs) =>
    (f, side) => vs.some((v) => endpointMatches(v, side === 'src' ? f.src : f.dst)));
  sided(checks, { source: filter.sourceLabel, destination: filter.destinationLabel, either: filter.label }, (vs) => {
    const selectors = vs.map(parseLabelSelector);
    return (f, side) => {
      const labels = side === 'src' ? f.srcLabels() : f.dstLabels();
      return selectors.some((s) => labelsMatch(s, labels));
    };
  });
  sided(checks, { source: filter.sourceNamespace, destination: filter.destinationNamespace, either: filter.namespace }, (vs) =>
    (f, side) => { const v = side === 'src' ? f.src : f.dst; return v !== undefined && vs.includes(v.namespace); });
  sided(checks, { source: filter.sourceIdentity, destination: filter.destinationIdentity, either: filter.identity }, (vs) =>
    (f, side) => vs.includes(side === 'src' ? f.srcIdentity : f.dstIdentity));
  sided(checks, { source: filter.sourcePort, destination: filter.destinationPort, either: filter.port }, (vs) =>
    (f, side) => (f.ipProto === 6 || f.ipProto === 17 || f.ipProto === 132) && f.family !== 0 && vs.includes(side === 'src' ? f.srcPort : f.dstPort));
  if (filter.protocol) { const cs = filter.protocol.map((p) => PROTOCOL_CHECKS[p]); checks.push((f) => cs.some((c) => c(f))); }
  if (filter.verdict) { const ns = filter.verdict.map((v) => VERDICT_NUMBERS[v]); checks.push((f) => ns.includes(f.verdict)); }
  if (filter.type) { const cs = filter.type.map((t) => TYPE_CHECKS[t]); checks.push((f) => cs.some((c) => c(f))); }
  if (filter.trafficDirection) {
    const ds = filter.trafficDirection.map((d) => d.toUpperCase());
    checks.push((f) => f.direction !== undefined && ds.includes(f.direction));
  }
  return (f) => {
    for (const c of checks) if (!c(f)) return false;
    return true;
  };
}

/** The predicate for a whole query: any include (or none given) and no exclude. */
export function compileMatcher(include: readonly FlowFilter[], exclude: readonly FlowFilter[]): Check {
  const inc = include.map(compileFilter);
  const exc = exclude.map(compileFilter);
  if (!inc.length && !exc.length) return () => true;
  return (f) => (inc.length === 0 || inc.some((m) => m(f))) && !exc.some((m) => m(f));
}

// ---- the wire form (query string) ---------------------------------------

/** `--since`/`--until` values: a duration back from now (`30s`, `5m`, `2h`, `1d`, `1h30m`) or an RFC 3339 timestamp. */
export function parseTimeBound(text: string, nowMs = Date.now()): number {
  const t = text.trim();
  if (/^(\d+(\.\d+)?(ms|s|m|h|d))+$/.test(t)) {
    const unit: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };
    let ms = 0;
    for (const m of t.matchAll(/(\d+(?:\.\d+)?)(ms|s|m|h|d)/g)) ms += Number(m[1]) * unit[m[2]!]!;
    return nowMs - ms;
  }
  if (/^\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})?)?$/.test(t)) {
    const ms = Date.parse(t.replace(' ', 'T'));
    if (Number.isFinite(ms)) return ms;
  }
  throw new FilterError(`${JSON.stringify(text)} is neither a duration (like 30s, 5m, 1h30m) nor a timestamp (like 2026-01-02T15:04:05Z)`);
}

/** Encodes a query as the agent API's query string (`GET /v1/flows?…`). */
export function encodeFlowQuery(q: Partial<FlowQuery>): URLSearchParams {
  const p = new URLSearchParams();
  if (q.include?.length || q.exclude?.length) p.set('filter', JSON.stringify({ include: q.include ?? [], exclude: q.exclude ?? [] }));
  if (q.sinceMs !== undefined) p.set('since', new Date(q.sinceMs).toISOString());
  if (q.untilMs !== undefined) p.set('until', new Date(q.untilMs).toISOString());
  if (q.last !== undefined) p.set('last', String(q.last));
  if (q.follow) p.set('follow', 'true');
  return p;
}

function describeZod(err: z.ZodError): string {
  return err.issues.map((i) => `${i.path.join('.') || 'filter'}: ${i.message}`).join('; ');
}

/**
 * Decodes and checks the API's query string; throws FilterError naming the
 * first thing wrong (so the agent answers 400 and streams nothing).
 */
export function parseFlowQuery(p: URLSearchParams): FlowQuery {
  const q: FlowQuery = { include: [], exclude: [], follow: false };
  const filter = p.get('filter');
  if (filter !== null) {
    let doc: unknown;
    try { doc = JSON.parse(filter); } catch { throw new FilterError('filter: not valid JSON'); }
    const parsed = filterListSchema.safeParse(doc);
    if (!parsed.success) throw new FilterError(`filter: ${describeZod(parsed.error)}`);
    q.include = parsed.data.include as FlowFilter[];
    q.exclude = parsed.data.exclude as FlowFilter[];
    // Compile once here so bad IPs and selectors fail the request, not the stream.
    compileMatcher(q.include, q.exclude);
  }
  const since = p.get('since');
  if (since !== null) q.sinceMs = parseTimeBound(since);
  const until = p.get('until');
  if (until !== null) q.untilMs = parseTimeBound(until);
  const last = p.get('last');
  if (last !== null) {
    if (!/^[1-9]\d*$/.test(last)) throw new FilterError(`last must be a positive integer, got ${JSON.stringify(last)}`);
    q.last = Number(last);
  }
  const follow = p.get('follow');
  if (follow !== null) {
    if (!['true', '1', 'false', '0'].includes(follow)) throw new FilterError(`follow must be true or false, got ${JSON.stringify(follow)}`);
    q.follow = follow === 'true' || follow === '1';
  }
  if (q.sinceMs !== undefined && q.untilMs !== undefined && q.sinceMs > q.untilMs) {
    throw new FilterError('since is after until: nothing can match');
  }
  return q;
}
