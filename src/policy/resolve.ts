/**
 * The policy resolver: turns stored policies and the known identities into the
 * datapath policy-map entries of each endpoint (see PolicyEntry in types.ts and
 * lookup.ts for how the datapath reads them). Pure logic, no I/O.
 *
 * Semantics (Kubernetes NetworkPolicy + Cilium):
 * - a policy applies to an endpoint when one of its `subjects` selectors
 *   matches the endpoint's label view; it puts the endpoint into default deny in
 *   the directions of its `defaultDeny`;
 * - each rule of an applicable policy adds entries (peer identity × L4 key);
 * - entries with the same key merge (deny beats allow, then lowest cookie);
 * - an allow entry covered by a deny entry of the same identity becomes a deny
 *   (a longer allow would otherwise hide the deny under longest-prefix match);
 * - a direction without default deny gets the allow-all entry (identity 0,
 *   proto 0) unless a deny holds that exact key.
 */
import { formatAddress, parseAddress, type Family } from '../ipam/cidr.js';
import { portRangeToPrefixes, prefixContains } from './ports.js';
import { matchesSelector, selectorKey } from './selector.js';
import {
  PolicyMatchType,
  ReservedIdentity,
  ruleCookie,
  type Direction,
  type EndpointPolicy,
  type IdentityInfo,
  type LabelSelector,
  type Peer,
  type Policy,
  type PolicyEntry,
  type PolicyRule,
  type StoredPolicy,
} from './types.js';

export interface ResolveInput {
  policies: StoredPolicy[];
  /** Every known identity: reserved ones, endpoint identities (labels = label view), CIDR identities (cidr set). */
  identities: IdentityInfo[];
}

export interface ResolveSubject {
  endpointId: number;
  identity: number;
  /** The endpoint's label view (see identityLabelView). */
  labels: Record<string, string>;
}

/** An L4 part of an entry key. */
interface L4Key {
  proto: number;
  port: number;
  prefixLen: number;
}

export const IPPROTO = { any: 0, icmp: 1, tcp: 6, udp: 17, icmpv6: 58, sctp: 132 } as const;

const PROTOCOLS: Record<string, number[]> = {
  TCP: [IPPROTO.tcp],
  UDP: [IPPROTO.udp],
  SCTP: [IPPROTO.sctp],
  ANY: [IPPROTO.tcp, IPPROTO.udp, IPPROTO.sctp],
};

/** A parsed CIDR prefix (host bits cleared). */
interface Prefix {
  family: Family;
  base: bigint;
  len: number;
  text: string;
}

/**
 * Parses `addr/len` (or a bare address: a host prefix) into canonical form,
 * clearing host bits; undefined when it is not a prefix.
 */
export function canonicalPrefix(text: string): Prefix | undefined {
  const m = /^([^/]+)(?:\/(\d{1,3}))?$/.exec(text.trim());
  if (!m) return undefined;
  let addr: { family: Family; value: bigint };
  try {
    addr = parseAddress(m[1] as string);
  } catch {
    return undefined;
  }
  const bits = addr.family === 4 ? 32 : 128;
  const len = m[2] === undefined ? bits : Number(m[2]);
  if (len > bits) return undefined;
  const host = BigInt(bits - len);
  const base = (addr.value >> host) << host;
  return { family: addr.family, base, len, text: `${formatAddress(addr.family, base)}/${len}` };
}

/** Is `inner` inside `outer` (same family, at least as long, same leading bits)? */
function prefixInside(inner: Prefix, outer: Prefix): boolean {
  if (inner.family !== outer.family || inner.len < outer.len) return false;
  const shift = BigInt((inner.family === 4 ? 32 : 128) - outer.len);
  return inner.base >> shift === outer.base >> shift;
}

/**
 * Every `cidr` and `except` prefix of CIDR peers, canonical (host bits
 * cleared), without duplicates, sorted by family, address and length: the
 * prefixes the agent allocates CIDR identities for before resolving. Texts
 * that are not prefixes are left out (they select nothing).
 */
export function referencedCidrs(policies: Policy[]): string[] {
  const seen = new Map<string, Prefix>();
  const add = (text: string): void => {
    const p = canonicalPrefix(text);
    if (p && !seen.has(p.text)) seen.set(p.text, p);
  };
  for (const policy of policies) {
    for (const rule of policy.rules) {
      for (const peer of rule.peers) {
        if (peer.kind !== 'cidr') continue;
        add(peer.cidr);
        for (const e of peer.except) add(e);
      }
    }
  }
  return [...seen.values()]
    .sort((a, b) => a.family - b.family || (a.base < b.base ? -1 : a.base > b.base ? 1 : 0) || a.len - b.len)
    .map((p) => p.text);
}

/** Reserved identities that `cluster` includes besides endpoint identities (not world). */
const CLUSTER_RESERVED = [
  ReservedIdentity.host,
  ReservedIdentity.unmanaged,
  ReservedIdentity.health,
  ReservedIdentity.init,
  ReservedIdentity['remote-node'],
  ReservedIdentity['kube-apiserver'],
  ReservedIdentity.ingress,
];

function matchTypeOf(identity: number, proto: number): number {
  if (identity !== 0) return proto === 0 ? PolicyMatchType.l3Only : PolicyMatchType.l3l4;
  return proto === 0 ? PolicyMatchType.all : PolicyMatchType.l4Only;
}

function entryKey(e: { identity: number; proto: number; port: number; portPrefixLen: number }): string {
  return `${e.identity}:${e.proto}:${e.port}:${e.portPrefixLen}`;
}

/** The L4 keys a rule matches: every protocol when it names no ports and no ICMP types. */
export function ruleL4Keys(rule: Pick<PolicyRule, 'ports' | 'icmps'>): L4Key[] {
  if (rule.ports.length === 0 && rule.icmps.length === 0) return [{ proto: 0, port: 0, prefixLen: 0 }];
  const out = new Map<string, L4Key>();
  const add = (k: L4Key): void => {
    out.set(`${k.proto}:${k.port}:${k.prefixLen}`, k);
  };
  for (const pr of rule.ports) {
    const protos = PROTOCOLS[pr.protocol] ?? [];
    const first = pr.port ?? 0;
    // No port, or port 0 without a range (Cilium's "every port"): the whole protocol.
    const prefixes =
      pr.port === undefined || (first === 0 && (pr.endPort === undefined || pr.endPort === 0))
        ? [{ port: 0, prefixLen: 0 }]
        : portRangeToPrefixes(first, pr.endPort !== undefined && pr.endPort > first ? pr.endPort : first);
    for (const proto of protos) for (const p of prefixes) add({ proto, port: p.port, prefixLen: p.prefixLen });
  }
  for (const ic of rule.icmps) {
    if (!Number.isInteger(ic.type) || ic.type < 0 || ic.type > 255) continue;
    add({ proto: ic.family === 'IPv6' ? IPPROTO.icmpv6 : IPPROTO.icmp, port: ic.type << 8, prefixLen: 8 });
  }
  return [...out.values()];
}

interface DirectionResult {
  entries: PolicyEntry[];
  enforced: boolean;
}

/**
 * Policies and identities prepared for resolving many endpoints: caches the
 * identity set of each selector and peer, the entries of each rule, the
 * policies applying to each label view and the result for each set of
 * applicable policies. A snapshot: prepare again when policies or identities
 * change.
 */
export class PreparedPolicies {
  readonly policies: readonly StoredPolicy[];
  private readonly endpointIdentities: { id: number; labels: Record<string, string> }[] = [];
  private readonly cidrIdentities: { id: number; prefix: Prefix }[] = [];
  private readonly selectorCache = new Map<string, number[]>();
  private readonly cidrPeerCache = new Map<string, number[]>();
  private readonly ruleCache = new Map<string, PolicyEntry[]>();
  private readonly applicableCache = new Map<string, number[]>();
  private readonly resultCache = new Map<string, { ingress: DirectionResult; egress: DirectionResult }>();

  constructor(input: ResolveInput) {
    this.policies = input.policies.slice();
    for (const ident of input.identities) {
      if (ident.cidr !== undefined) {
        const prefix = canonicalPrefix(ident.cidr);
        if (prefix) this.cidrIdentities.push({ id: ident.id, prefix });
      } else if (ident.reserved === undefined) {
        this.endpointIdentities.push({ id: ident.id, labels: ident.labels });
      }
    }
    // By family and address, so the identities inside a prefix are one contiguous run.
    this.cidrIdentities.sort((a, b) => a.prefix.family - b.prefix.family || (a.prefix.base < b.prefix.base ? -1 : a.prefix.base > b.prefix.base ? 1 : a.prefix.len - b.prefix.len));
  }

  /** CIDR identities whose prefix lies inside `outer`: a binary search to the first, then the run (no scan of all). */
  private cidrIdentitiesInside(outer: Prefix): { id: number; prefix: Prefix }[] {
    const list = this.cidrIdentities;
    const last = outer.base + ((1n << BigInt((outer.family === 4 ? 32 : 128) - outer.len)) - 1n);
    let lo = 0;
    let hi = list.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      const m = (list[mid] as { prefix: Prefix }).prefix;
      if (m.family < outer.family || (m.family === outer.family && m.base < outer.base)) lo = mid + 1;
      else hi = mid;
    }
    const out: { id: number; prefix: Prefix }[] = [];
    for (let i = lo; i < list.length; i++) {
      const c = list[i] as { id: number; prefix: Prefix };
      if (c.prefix.family !== outer.family || c.prefix.base > last) break;
      if (c.prefix.len >= outer.len) out.push(c);
    }
    return out;
  }

  /** Endpoint identities whose label view `sel` matches (sorted). */
  selectorIdentities(sel: LabelSelector): number[] {
    const key = selectorKey(sel);
    let ids = this.selectorCache.get(key);
    if (!ids) {
      ids = this.endpointIdentities.filter((e) => matchesSelector(sel, e.labels)).map((e) => e.id);
      this.selectorCache.set(key, ids);
    }
    return ids;
  }

  private cidrPeerIdentities(cidr: string, except: string[]): number[] {
    const key = JSON.stringify([cidr, except]);
    let ids = this.cidrPeerCache.get(key);
    if (!ids) {
      ids = [];
      const outer = canonicalPrefix(cidr);
      if (outer) {
        const exc = except.map(canonicalPrefix).filter((p): p is Prefix => p !== undefined);
        for (const c of this.cidrIdentitiesInside(outer)) {
          if (!exc.some((x) => prefixInside(c.prefix, x))) ids.push(c.id);
        }
        if (outer.len === 0) ids.push(ReservedIdentity.world);
      }
      this.cidrPeerCache.set(key, ids);
    }
    return ids;
  }

  /** The identities a peer stands for (0 = any identity). */
  peerIdentities(peer: Peer): number[] {
    switch (peer.kind) {
      case 'any':
        return [0];
      case 'endpoints':
        return this.selectorIdentities(peer.selector);
      case 'cidr':
        return this.cidrPeerIdentities(peer.cidr, peer.except);
      case 'entity':
        switch (peer.entity) {
          case 'all':
            return [0];
          case 'world':
            return [ReservedIdentity.world, ...this.cidrIdentities.map((c) => c.id)];
          case 'cluster':
            return [...CLUSTER_RESERVED, ...this.endpointIdentities.map((e) => e.id)];
          case 'host':
          case 'remote-node':
          case 'health':
          case 'unmanaged':
          case 'init':
          case 'kube-apiserver':
          case 'ingress':
            return [ReservedIdentity[peer.entity]];
          default:
            return [];
        }
      default:
        return [];
    }
  }

  /** The (unmerged) entries of rule `ruleIdx` of stored policy `policyIdx`. */
  private ruleEntries(policyIdx: number, ruleIdx: number): PolicyEntry[] {
    const key = `${policyIdx}/${ruleIdx}`;
    let entries = this.ruleCache.get(key);
    if (entries) return entries;
    const stored = this.policies[policyIdx] as StoredPolicy;
    const rule = stored.policy.rules[ruleIdx] as PolicyRule;
    const ids = new Set<number>();
    for (const peer of rule.peers) for (const id of this.peerIdentities(peer)) ids.add(id);
    const l4 = ruleL4Keys(rule);
    const cookie = ruleCookie(stored.id, rule.index);
    const deny = rule.action === 'deny';
    entries = [];
    for (const identity of ids) {
      for (const k of l4) {
        entries.push({ identity, proto: k.proto, port: k.port, portPrefixLen: k.prefixLen, deny, matchType: matchTypeOf(identity, k.proto), cookie });
      }
    }
    this.ruleCache.set(key, entries);
    return entries;
  }

  /** Indices of the stored policies whose subjects select `labels`. */
  applicablePolicies(labels: Record<string, string>): number[] {
    const key = JSON.stringify(Object.entries(labels).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
    let idx = this.applicableCache.get(key);
    if (!idx) {
      idx = [];
      for (let i = 0; i < this.policies.length; i++) {
        const p = (this.policies[i] as StoredPolicy).policy;
        if (p.subjects.some((s) => matchesSelector(s, labels))) idx.push(i);
      }
      this.applicableCache.set(key, idx);
    }
    return idx;
  }

  private resolveDirection(applicable: number[], dir: Direction): DirectionResult {
    let enforced = false;
    const merged = new Map<string, PolicyEntry>();
    for (const pi of applicable) {
      const policy = (this.policies[pi] as StoredPolicy).policy;
      if (policy.defaultDeny[dir]) enforced = true;
      for (let ri = 0; ri < policy.rules.length; ri++) {
        if ((policy.rules[ri] as PolicyRule).direction !== dir) continue;
        for (const e of this.ruleEntries(pi, ri)) {
          const key = entryKey(e);
          const cur = merged.get(key);
          if (!cur || (e.deny && !cur.deny) || (e.deny === cur.deny && e.cookie < cur.cookie)) merged.set(key, { ...e });
        }
      }
    }
    if (!enforced) {
      const allowAll: PolicyEntry = { identity: 0, proto: 0, port: 0, portPrefixLen: 0, deny: false, matchType: PolicyMatchType.all, cookie: 0 };
      const key = entryKey(allowAll);
      if (!merged.has(key)) merged.set(key, allowAll);
    }
    const entries = [...merged.values()];
    applyDenyCoverage(entries);
    entries.sort(compareEntries);
    return { entries, enforced };
  }

  /** The resolved policy of one endpoint. */
  resolve(subject: ResolveSubject): EndpointPolicy {
    const applicable = this.applicablePolicies(subject.labels);
    const key = applicable.join(',');
    let r = this.resultCache.get(key);
    if (!r) {
      r = { ingress: this.resolveDirection(applicable, 'ingress'), egress: this.resolveDirection(applicable, 'egress') };
      this.resultCache.set(key, r);
    }
    return {
      endpointId: subject.endpointId,
      ingress: r.ingress.entries.map((e) => ({ ...e })),
      egress: r.egress.entries.map((e) => ({ ...e })),
      enforced: { ingress: r.ingress.enforced, egress: r.egress.enforced },
    };
  }
}

/** Deterministic entry order: identity, proto, port, prefix length. */
export function compareEntries(a: PolicyEntry, b: PolicyEntry): number {
  return a.identity - b.identity || a.proto - b.proto || a.port - b.port || a.portPrefixLen - b.portPrefixLen || Number(b.deny) - Number(a.deny) || a.cookie - b.cookie;
}

/** Does deny entry `d` cover the L4 key of `a` (same identity assumed)? */
function covers(d: PolicyEntry, a: PolicyEntry): boolean {
  return d.proto === 0 || (d.proto === a.proto && prefixContains(d.port, d.portPrefixLen, a.port, a.portPrefixLen));
}

/**
 * Turns every allow entry covered by a deny entry of the same identity into a
 * deny, taking the cookie and match type of the most specific covering deny
 * (lowest cookie among equally specific ones): what longest-prefix match would
 * have found without the allow. In place.
 */
function applyDenyCoverage(entries: PolicyEntry[]): void {
  const denies = new Map<number, PolicyEntry[]>();
  for (const e of entries) {
    if (!e.deny) continue;
    let list = denies.get(e.identity);
    if (!list) denies.set(e.identity, (list = []));
    list.push(e);
  }
  if (denies.size === 0) return;
  const len = (e: PolicyEntry): number => (e.proto === 0 ? -1 : e.portPrefixLen);
  for (const a of entries) {
    if (a.deny) continue;
    const ds = denies.get(a.identity);
    if (!ds) continue;
    let best: PolicyEntry | undefined;
    for (const d of ds) {
      if (!covers(d, a)) continue;
      if (!best || len(d) > len(best) || (len(d) === len(best) && d.cookie < best.cookie)) best = d;
    }
    if (best) {
      a.deny = true;
      a.cookie = best.cookie;
      a.matchType = best.matchType;
    }
  }
}

/** Prepares policies and identities for resolving many endpoints. */
export function prepare(input: ResolveInput): PreparedPolicies {
  return new PreparedPolicies(input);
}

/** The resolved policy of one endpoint. */
export function resolveEndpointPolicy(input: ResolveInput | PreparedPolicies, subject: ResolveSubject): EndpointPolicy {
  const prepared = input instanceof PreparedPolicies ? input : prepare(input);
  return prepared.resolve(subject);
}

/** The resolved policy of every subject, by endpoint id. */
export function resolveAll(input: ResolveInput, subjects: ResolveSubject[]): Map<number, EndpointPolicy> {
  const prepared = prepare(input);
  const out = new Map<number, EndpointPolicy>();
  for (const s of subjects) out.set(s.endpointId, prepared.resolve(s));
  return out;
}
