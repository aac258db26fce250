/**
 * The TypeScript mirror of the datapath policy decision (used by
 * `waggle policy trace` and tests). Per direction the datapath keeps entries
 * keyed (identity, proto, port/prefixLen) and does two longest-prefix lookups,
 * one with the peer's identity and one with identity 0:
 *
 * - the identity must be equal;
 * - an entry with proto 0 matches every protocol (and ignores its port) and is
 *   shorter than any protocol-specific entry;
 * - a protocol-specific entry matches when the port lies in its prefix; a
 *   longer prefix is a better match.
 *
 * If either best match is a deny the packet is denied by it; otherwise if either
 * is an allow it is allowed (the peer-identity match is reported when both
 * are); otherwise it is denied with no rule.
 */
import { portInPrefix } from './ports.js';
import { PolicyMatchType, type PolicyEntry } from './types.js';

export type Verdict = {
  verdict: 'allowed' | 'denied';
  reason: 'allow' | 'deny-rule' | 'no-rule';
  entry?: PolicyEntry;
  matchType: number;
  cookie: number;
};

/** LPM length of an entry below the identity: proto 0 → 0, else 1 + port prefix length. */
function matchLength(e: PolicyEntry): number {
  return e.proto === 0 ? 0 : 1 + e.portPrefixLen;
}

function entryMatches(e: PolicyEntry, proto: number, port: number): boolean {
  return e.proto === 0 || (e.proto === proto && portInPrefix(port, e.port, e.portPrefixLen));
}

/**
 * Is `a` a better match than `b`? Longer wins. Equal lengths only occur for
 * malformed input (duplicate keys, proto-0 entries with different ports); then
 * a deny wins, then the lower cookie, so the answer is deterministic.
 */
function better(a: PolicyEntry, b: PolicyEntry): boolean {
  const la = matchLength(a);
  const lb = matchLength(b);
  if (la !== lb) return la > lb;
  if (a.deny !== b.deny) return a.deny;
  return a.cookie < b.cookie;
}

/** The longest-prefix match among `candidates` (all of one identity) for (proto, port). */
function bestOf(candidates: readonly PolicyEntry[] | undefined, proto: number, port: number): PolicyEntry | undefined {
  let best: PolicyEntry | undefined;
  if (!candidates) return undefined;
  for (const e of candidates) {
    if (!entryMatches(e, proto, port)) continue;
    if (!best || better(e, best)) best = e;
  }
  return best;
}

/** The longest-prefix match for `identity` (exact) among `entries`. */
export function bestMatch(entries: readonly PolicyEntry[], identity: number, proto: number, port: number): PolicyEntry | undefined {
  let best: PolicyEntry | undefined;
  for (const e of entries) {
    if (e.identity !== identity || !entryMatches(e, proto, port)) continue;
    if (!best || better(e, best)) best = e;
  }
  return best;
}

function decide(peerMatch: PolicyEntry | undefined, anyMatch: PolicyEntry | undefined): Verdict {
  const deny = peerMatch?.deny ? peerMatch : anyMatch?.deny ? anyMatch : undefined;
  if (deny) return { verdict: 'denied', reason: 'deny-rule', entry: deny, matchType: deny.matchType, cookie: deny.cookie };
  const allow = peerMatch ?? anyMatch;
  if (allow) return { verdict: 'allowed', reason: 'allow', entry: allow, matchType: allow.matchType, cookie: allow.cookie };
  return { verdict: 'denied', reason: 'no-rule', matchType: PolicyMatchType.none, cookie: 0 };
}

/**
 * The datapath's verdict for traffic with `peerIdentity`, IP protocol `proto`
 * and destination port `port` (for ICMP pass `type << 8 | code`; for protocols
 * without ports pass 0).
 */
export function lookupVerdict(entries: readonly PolicyEntry[], peerIdentity: number, proto: number, port: number): Verdict {
  const peerMatch = bestMatch(entries, peerIdentity, proto, port);
  const anyMatch = peerIdentity === 0 ? undefined : bestMatch(entries, 0, proto, port);
  return decide(peerMatch, anyMatch);
}

/** `lookupVerdict` over entries indexed by identity, for many lookups against one entry set. */
export class PolicyLookupIndex {
  private readonly byIdentity = new Map<number, PolicyEntry[]>();

  constructor(entries: readonly PolicyEntry[]) {
    for (const e of entries) {
      let list = this.byIdentity.get(e.identity);
      if (!list) this.byIdentity.set(e.identity, (list = []));
      list.push(e);
    }
  }

  lookup(peerIdentity: number, proto: number, port: number): Verdict {
    const peerMatch = bestOf(this.byIdentity.get(peerIdentity), proto, port);
    const anyMatch = peerIdentity === 0 ? undefined : bestOf(this.byIdentity.get(0), proto, port);
    return decide(peerMatch, anyMatch);
  }
}
