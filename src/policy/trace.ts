/**
 * `waggle policy trace`: the verdict the datapath would give a new connection
 * from one party to another, and which rule of which policy decided it, for
 * the source's egress and the destination's ingress. It runs the same
 * resolution the agent writes into the maps and the TypeScript mirror of the
 * datapath lookup (lookup.ts), so its answer is the verdict real traffic gets.
 */
import type { PolicyEngine } from './engine.js';
import { lookupVerdict } from './lookup.js';
import { prepare, resolveEndpointPolicy } from './resolve.js';
import { IPPROTO } from './resolve.js';
import type { EndpointPolicy, IdentityInfo, RuleRef } from './types.js';

/** One end of a traced connection. */
export type TraceParty =
  /** A (local or hypothetical) endpoint: its policy applies. */
  | { kind: 'endpoint'; name: string; endpointId?: number; identity?: number; labels: Record<string, string>; namespace: string }
  /** Anything else (the host, the world, a CIDR): only its identity matters. */
  | { kind: 'peer'; name: string; identity: number };

export interface DirectionTrace {
  /** The endpoint whose policy was consulted. */
  endpoint: string;
  /** Whether some policy selects the endpoint in this direction. */
  policySelected: boolean;
  verdict: 'allowed' | 'denied';
  /** `allow` (a rule allowed), `deny-rule` (a deny rule matched), `no-rule` (default deny), `no-policy` (nothing selects it: allowed). */
  reason: 'allow' | 'deny-rule' | 'no-rule' | 'no-policy';
  rule?: RuleRef;
  matchType: number;
}

export interface TraceResult {
  from: { name: string; identity: number };
  to: { name: string; identity: number };
  protocol: string;
  port: number;
  egress?: DirectionTrace;
  ingress?: DirectionTrace;
  verdict: 'allowed' | 'denied';
}

/** Placeholder identity of a hypothetical endpoint (labels no endpoint has). */
const HYPOTHETICAL_IDENTITY = 0xfffff0;

const PROTO_NUMBERS: Record<string, number> = { tcp: IPPROTO.tcp, udp: IPPROTO.udp, sctp: IPPROTO.sctp, icmp: IPPROTO.icmp, icmpv6: IPPROTO.icmpv6 };

/** Parses `80/tcp`, `53/udp`, `8/icmp` (ICMP: the type); throws naming the problem. */
export function parseTracePort(text: string): { proto: number; protocol: string; port: number } {
  const m = /^(\d+)(?:\/([a-zA-Z0-9]+))?$/.exec(text.trim());
  const protocol = (m?.[2] ?? 'tcp').toLowerCase();
  const proto = PROTO_NUMBERS[protocol];
  if (!m || proto === undefined) throw new Error(`--dport must look like 80/tcp, 53/udp, 132/sctp or 8/icmp (ICMP type), got ${JSON.stringify(text)}`);
  const port = Number(m[1]);
  const icmp = proto === IPPROTO.icmp || proto === IPPROTO.icmpv6;
  if (icmp ? port > 255 : port < 1 || port > 65535) throw new Error(`--dport ${text}: ${icmp ? 'ICMP type must be 0-255' : 'port must be 1-65535'}`);
  return { proto, protocol, port: icmp ? port << 8 : port };
}

function sameLabels(a: Record<string, string>, b: Record<string, string>): boolean {
  const ka = Object.keys(a);
  return ka.length === Object.keys(b).length && ka.every((k) => b[k] === a[k]);
}

function directionTrace(engine: PolicyEngine, policy: EndpointPolicy, dir: 'ingress' | 'egress', endpoint: string, peer: number, proto: number, port: number): DirectionTrace {
  const selected = policy.enforced[dir] || policy[dir].some((e) => e.cookie !== 0);
  if (!selected) return { endpoint, policySelected: false, verdict: 'allowed', reason: 'no-policy', matchType: 0 };
  const v = lookupVerdict(policy[dir], peer, proto, port);
  const rule = v.cookie ? engine.ruleOf(v.cookie) : undefined;
  return { endpoint, policySelected: true, verdict: v.verdict, reason: v.reason, matchType: v.matchType, ...(rule ? { rule } : {}) };
}

/** Traces a new connection from `from` to `to` on `proto`/`port` (ICMP: type << 8). */
export function tracePolicy(engine: PolicyEngine, from: TraceParty, to: TraceParty, proto: number, protocol: string, port: number): TraceResult {
  const infos: IdentityInfo[] = engine.identityInfos();
  const identityOf = (p: TraceParty): number => {
    if (p.kind === 'peer') return p.identity;
    if (p.identity !== undefined) return p.identity;
    const view = engine.labelView(p.labels, p.namespace);
    const known = infos.find((i) => i.reserved === undefined && i.cidr === undefined && sameLabels(i.labels, view));
    if (known) return known.id;
    infos.push({ id: HYPOTHETICAL_IDENTITY + infos.length, labels: view });
    return HYPOTHETICAL_IDENTITY + infos.length - 1;
  };
  const fromId = identityOf(from);
  const toId = identityOf(to);
  const prepared = prepare({ policies: engine.repo.list(), identities: infos });
  const policyOf = (p: Extract<TraceParty, { kind: 'endpoint' }>, identity: number): EndpointPolicy =>
    resolveEndpointPolicy(prepared, { endpointId: p.endpointId ?? 0, identity, labels: engine.labelView(p.labels, p.namespace) });

  const result: TraceResult = { from: { name: from.name, identity: fromId }, to: { name: to.name, identity: toId }, protocol, port: proto === IPPROTO.icmp || proto === IPPROTO.icmpv6 ? port >> 8 : port, verdict: 'allowed' };
  if (from.kind === 'endpoint') result.egress = directionTrace(engine, policyOf(from, fromId), 'egress', from.name, toId, proto, port);
  if (to.kind === 'endpoint') result.ingress = directionTrace(engine, policyOf(to, toId), 'ingress', to.name, fromId, proto, port);
  if (result.egress?.verdict === 'denied' || result.ingress?.verdict === 'denied') result.verdict = 'denied';
  return result;
}
