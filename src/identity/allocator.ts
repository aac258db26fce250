/**
 * Security identities, numbered as Cilium numbers them: reserved identities
 * (1..8), endpoint identities (FIRST_ENDPOINT_IDENTITY..LAST_ENDPOINT_IDENTITY),
 * one per distinct label set + namespace and shared by every endpoint with it,
 * and node-local CIDR identities (from FIRST_CIDR_IDENTITY).
 *
 * Numbers and what they stand for are persisted after every change, so they
 * are stable across agent restarts. Reference counts are not persisted: at
 * start the agent calls `restore` with every endpoint it has, which rebuilds
 * them (and frees identities nobody uses any more).
 *
 * New numbers come from a cyclic cursor: the lowest never-used number first,
 * and only once the range is used up does allocation wrap around to reuse
 * freed numbers, so a recently freed number is reused as late as possible
 * (a stale number in a flow or a datapath map then rarely names a new owner).
 */
import { z } from 'zod';
import { StateStore } from '../agent/state-store.js';
import { hubbleLabels, labelKeyProblem, labelValueProblem } from '../endpoint/labels.js';
import { FIRST_CIDR_IDENTITY, FIRST_ENDPOINT_IDENTITY, LAST_ENDPOINT_IDENTITY, ReservedIdentity } from '../policy/types.js';

/** Last node-local identity (Cilium's local scope: 2^24 identities from 0x01000000). */
export const LAST_CIDR_IDENTITY = 0x01ffffff;

export type IdentityKind = 'reserved' | 'endpoint' | 'cidr';

export interface IdentityRecord {
  id: number;
  kind: IdentityKind;
  /** Cilium-style label strings, sorted: `reserved:host`; `k8s:app=web`, `k8s:io.kubernetes.pod.namespace=default`; `cidr:10.0.0.0/8`, `reserved:world`. */
  labels: string[];
  /** Endpoint identities: the namespace. */
  namespace?: string;
  /** CIDR identities: the prefix. */
  cidr?: string;
  /** Endpoint identities: how many endpoints use it (0 for other kinds). */
  references: number;
}

export class IdentityError extends Error {
  readonly code: string;
  constructor(code: string, message: string) {
    super(message);
    this.name = 'IdentityError';
    this.code = code;
  }
}

export interface IdentityAllocatorOptions {
  /** Endpoint identity range (defaults FIRST_ENDPOINT_IDENTITY..LAST_ENDPOINT_IDENTITY; smaller ranges are for tests). */
  firstEndpoint?: number;
  lastEndpoint?: number;
  /** CIDR identity range (defaults FIRST_CIDR_IDENTITY..LAST_CIDR_IDENTITY). */
  firstCidr?: number;
  lastCidr?: number;
}

const labelsSchema = z.record(z.string(), z.string());

const stateSchema = z.object({
  version: z.literal(1),
  /** Where the search for the next endpoint number starts. */
  nextEndpoint: z.number().int().positive(),
  /** Where the search for the next CIDR number starts. */
  nextCidr: z.number().int().positive(),
  endpoints: z.array(z.object({
    id: z.number().int().positive(),
    namespace: z.string().min(1),
    labels: labelsSchema,
  })),
  cidrs: z.array(z.object({
    id: z.number().int().positive(),
    prefix: z.string().min(1),
  })),
}).superRefine((s, ctx) => {
  const ids = new Set<number>();
  const keys = new Set<string>();
  s.endpoints.forEach((e, i) => {
    if (ids.has(e.id)) ctx.addIssue({ code: z.ZodIssueCode.custom, path: ['endpoints', i, 'id'], message: `identity ${e.id} appears twice` });
    ids.add(e.id);
    const key = endpointKey(e.labels, e.namespace);
    if (keys.has(key)) ctx.addIssue({ code: z.ZodIssueCode.custom, path: ['endpoints', i], message: `label set of identity ${e.id} appears twice` });
    keys.add(key);
  });
  const prefixes = new Set<string>();
  s.cidrs.forEach((c, i) => {
    if (ids.has(c.id)) ctx.addIssue({ code: z.ZodIssueCode.custom, path: ['cidrs', i, 'id'], message: `identity ${c.id} appears twice` });
    ids.add(c.id);
    if (prefixes.has(c.prefix)) ctx.addIssue({ code: z.ZodIssueCode.custom, path: ['cidrs', i, 'prefix'], message: `prefix ${c.prefix} appears twice` });
    prefixes.add(c.prefix);
  });
});

type State = z.infer<typeof stateSchema>;

interface EndpointIdentity {
  id: number;
  namespace: string;
  /** Sorted by key. */
  labels: Record<string, string>;
  references: number;
}

/** The sharing key of an endpoint identity: sorted labels plus namespace. */
function endpointKey(labels: Record<string, string>, namespace: string): string {
  return JSON.stringify([namespace, Object.entries(labels).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))]);
}

function sortedLabels(labels: Record<string, string>): Record<string, string> {
  return Object.fromEntries(Object.entries(labels).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
}

const RESERVED: [string, number][] = Object.entries(ReservedIdentity).filter(([, id]) => id !== ReservedIdentity.unknown);

export class IdentityAllocator {
  private readonly store: StateStore<State>;
  private readonly firstEndpoint: number;
  private readonly lastEndpoint: number;
  private readonly firstCidr: number;
  private readonly lastCidr: number;
  private nextEndpoint: number;
  private nextCidr: number;
  private readonly endpoints = new Map<number, EndpointIdentity>();
  private readonly byKey = new Map<string, number>();
  private readonly cidrs = new Map<number, string>();
  private readonly byPrefix = new Map<string, number>();

  constructor(statePath: string, opts: IdentityAllocatorOptions = {}) {
    this.firstEndpoint = opts.firstEndpoint ?? FIRST_ENDPOINT_IDENTITY;
    this.lastEndpoint = opts.lastEndpoint ?? LAST_ENDPOINT_IDENTITY;
    this.firstCidr = opts.firstCidr ?? FIRST_CIDR_IDENTITY;
    this.lastCidr = opts.lastCidr ?? LAST_CIDR_IDENTITY;
    if (this.firstEndpoint > this.lastEndpoint || this.firstCidr > this.lastCidr) throw new RangeError('identity range is empty');
    this.store = new StateStore(statePath, stateSchema, () => ({ version: 1, nextEndpoint: this.firstEndpoint, nextCidr: this.firstCidr, endpoints: [], cidrs: [] }));
    const s = this.store.load();
    this.nextEndpoint = s.nextEndpoint;
    this.nextCidr = s.nextCidr;
    for (const e of s.endpoints) {
      const labels = sortedLabels(e.labels);
      this.endpoints.set(e.id, { id: e.id, namespace: e.namespace, labels, references: 0 });
      this.byKey.set(endpointKey(labels, e.namespace), e.id);
    }
    for (const c of s.cidrs) {
      this.cidrs.set(c.id, c.prefix);
      this.byPrefix.set(c.prefix, c.id);
    }
  }

  /**
   * The identity for an endpoint with these labels in this namespace, taking
   * one reference to it (allocated when no endpoint has it yet).
   */
  acquire(labels: Record<string, string>, namespace: string): number {
    checkEndpoint(labels, namespace);
    const key = endpointKey(labels, namespace);
    const existing = this.byKey.get(key);
    if (existing !== undefined) {
      (this.endpoints.get(existing) as EndpointIdentity).references++;
      return existing;
    }
    const id = this.allocateEndpointNumber();
    const before = this.nextEndpoint;
    this.nextEndpoint = id + 1;
    this.endpoints.set(id, { id, namespace, labels: sortedLabels(labels), references: 1 });
    this.byKey.set(key, id);
    try {
      this.persist();
    } catch (err) {
      this.endpoints.delete(id);
      this.byKey.delete(key);
      this.nextEndpoint = before;
      throw err;
    }
    return id;
  }

  /**
   * Drops one reference to an endpoint identity; the identity is freed when
   * its last reference goes. Returns whether it was freed. Unknown numbers
   * and numbers of other kinds are ignored (false).
   */
  release(id: number): boolean {
    const e = this.endpoints.get(id);
    if (e === undefined || e.references === 0) return false;
    if (e.references > 1) {
      e.references--;
      return false;
    }
    const key = endpointKey(e.labels, e.namespace);
    this.endpoints.delete(id);
    this.byKey.delete(key);
    try {
      this.persist();
    } catch (err) {
      this.endpoints.set(id, e);
      this.byKey.set(key, id);
      throw err;
    }
    return true;
  }

  /**
   * Rebuilds reference counts from every existing endpoint (call once at
   * start): label sets known from the state file keep their numbers, new ones
   * are allocated, and identities no endpoint uses are freed. Returns the
   * identity of each user, in order.
   */
  restore(users: { labels: Record<string, string>; namespace: string }[]): number[] {
    for (const u of users) checkEndpoint(u.labels, u.namespace);
    const counts = new Map<string, { n: number; labels: Record<string, string>; namespace: string }>();
    for (const u of users) {
      const key = endpointKey(u.labels, u.namespace);
      const c = counts.get(key);
      if (c) c.n++;
      else counts.set(key, { n: 1, labels: u.labels, namespace: u.namespace });
    }
    // Work on copies so a failure (exhaustion, a failed write) changes nothing.
    const endpoints = new Map<number, EndpointIdentity>();
    const byKey = new Map<string, number>();
    let next = this.nextEndpoint;
    for (const [key, c] of counts) {
      const id = this.byKey.get(key);
      if (id === undefined) continue;
      const e = this.endpoints.get(id) as EndpointIdentity;
      endpoints.set(id, { ...e, references: c.n });
      byKey.set(key, id);
    }
    for (const [key, c] of counts) {
      if (byKey.has(key)) continue;
      const id = this.findFree(next, this.firstEndpoint, this.lastEndpoint, (n) => endpoints.has(n), 'endpoint');
      next = id + 1;
      endpoints.set(id, { id, namespace: c.namespace, labels: sortedLabels(c.labels), references: c.n });
      byKey.set(key, id);
    }
    const old = { endpoints: new Map(this.endpoints), byKey: new Map(this.byKey), next: this.nextEndpoint };
    this.replaceMaps(endpoints, byKey, next);
    try {
      this.persist();
    } catch (err) {
      this.replaceMaps(old.endpoints, old.byKey, old.next);
      throw err;
    }
    return users.map((u) => byKey.get(endpointKey(u.labels, u.namespace)) as number);
  }

  /**
   * Makes exactly `prefixes` have CIDR identities: prefixes already present
   * keep their numbers, new ones get numbers, the others are freed. Returns
   * the prefixes added and removed (sorted).
   */
  syncCidrs(prefixes: string[]): { added: string[]; removed: string[] } {
    const wanted = new Set(prefixes);
    const added = [...wanted].filter((p) => !this.byPrefix.has(p)).sort();
    const removed = [...this.byPrefix.keys()].filter((p) => !wanted.has(p)).sort();
    if (added.length === 0 && removed.length === 0) return { added, removed };
    const cidrs = new Map(this.cidrs);
    const byPrefix = new Map(this.byPrefix);
    for (const p of removed) {
      cidrs.delete(byPrefix.get(p) as number);
      byPrefix.delete(p);
    }
    let next = this.nextCidr;
    for (const p of added) {
      const id = this.findFree(next, this.firstCidr, this.lastCidr, (n) => cidrs.has(n), 'CIDR');
      next = id + 1;
      cidrs.set(id, p);
      byPrefix.set(p, id);
    }
    const old = { cidrs: new Map(this.cidrs), byPrefix: new Map(this.byPrefix), next: this.nextCidr };
    this.replaceCidrs(cidrs, byPrefix, next);
    try {
      this.persist();
    } catch (err) {
      this.replaceCidrs(old.cidrs, old.byPrefix, old.next);
      throw err;
    }
    return { added, removed };
  }

  /** The identity of a CIDR prefix in the synced set. */
  cidrIdentity(prefix: string): number | undefined {
    return this.byPrefix.get(prefix);
  }

  get(id: number): IdentityRecord | undefined {
    const reserved = RESERVED.find(([, n]) => n === id);
    if (reserved) return { id, kind: 'reserved', labels: [`reserved:${reserved[0]}`], references: 0 };
    const e = this.endpoints.get(id);
    if (e) return { id, kind: 'endpoint', labels: hubbleLabels(e.labels, e.namespace), namespace: e.namespace, references: e.references };
    const prefix = this.cidrs.get(id);
    if (prefix !== undefined) return { id, kind: 'cidr', labels: [`cidr:${prefix}`, 'reserved:world'], cidr: prefix, references: 0 };
    return undefined;
  }

  /** Every identity, by number. */
  list(): IdentityRecord[] {
    const ids = [...RESERVED.map(([, n]) => n), ...this.endpoints.keys(), ...this.cidrs.keys()].sort((a, b) => a - b);
    return ids.map((id) => this.get(id) as IdentityRecord);
  }

  /** An endpoint identity's labels (a copy, sorted by key) and namespace. */
  labelsOf(id: number): { labels: Record<string, string>; namespace: string } | undefined {
    const e = this.endpoints.get(id);
    return e && { labels: { ...e.labels }, namespace: e.namespace };
  }

  private allocateEndpointNumber(): number {
    return this.findFree(this.nextEndpoint, this.firstEndpoint, this.lastEndpoint, (n) => this.endpoints.has(n), 'endpoint');
  }

  /** The first free number from `start` upwards, wrapping to `first` after `last`. */
  private findFree(start: number, first: number, last: number, used: (n: number) => boolean, what: string): number {
    const size = last - first + 1;
    let n = start < first || start > last ? first : start;
    for (let i = 0; i < size; i++) {
      if (!used(n)) return n;
      n = n === last ? first : n + 1;
    }
    throw new IdentityError('IDENTITY_EXHAUSTED', `all ${size} ${what} identities (${first}..${last}) are in use`);
  }

  private replaceMaps(endpoints: Map<number, EndpointIdentity>, byKey: Map<string, number>, next: number): void {
    this.endpoints.clear();
    for (const [k, v] of endpoints) this.endpoints.set(k, v);
    this.byKey.clear();
    for (const [k, v] of byKey) this.byKey.set(k, v);
    this.nextEndpoint = next;
  }

  private replaceCidrs(cidrs: Map<number, string>, byPrefix: Map<string, number>, next: number): void {
    this.cidrs.clear();
    for (const [k, v] of cidrs) this.cidrs.set(k, v);
    this.byPrefix.clear();
    for (const [k, v] of byPrefix) this.byPrefix.set(k, v);
    this.nextCidr = next;
  }

  private persist(): void {
    this.store.save({
      version: 1,
      nextEndpoint: this.nextEndpoint,
      nextCidr: this.nextCidr,
      endpoints: [...this.endpoints.values()].sort((a, b) => a.id - b.id).map((e) => ({ id: e.id, namespace: e.namespace, labels: e.labels })),
      cidrs: [...this.cidrs].sort(([a], [b]) => a - b).map(([id, prefix]) => ({ id, prefix })),
    });
  }
}

function checkEndpoint(labels: Record<string, string>, namespace: string): void {
  if (namespace === '') throw new IdentityError('INVALID_LABELS', 'an endpoint identity needs a namespace');
  for (const [k, v] of Object.entries(labels)) {
    const problem = labelKeyProblem(k) ?? labelValueProblem(k, v);
    if (problem) throw new IdentityError('INVALID_LABELS', problem);
  }
}
