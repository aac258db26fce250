/**
 * The stored policies: every applied policy, keyed by kind + namespace + name,
 * with a stable number (1..65535) that names it in rule cookies. Changes are
 * all or nothing and persisted in one write; `revision` counts them.
 */
import { isDeepStrictEqual } from 'node:util';
import { z } from 'zod';
import { StateStore } from '../agent/state-store.js';
import { policyKey, type Policy, type PolicyKind, type StoredPolicy } from './types.js';

export const MAX_POLICY_ID = 65535;

export class PolicyRepositoryError extends Error {
  readonly code: string;
  constructor(code: string, message: string) {
    super(message);
    this.name = 'PolicyRepositoryError';
    this.code = code;
  }
}

/** What names a policy. The namespace of a CiliumClusterwideNetworkPolicy is ignored. */
export interface PolicyRef {
  kind: PolicyKind;
  namespace?: string;
  name: string;
}

const KINDS = ['NetworkPolicy', 'CiliumNetworkPolicy', 'CiliumClusterwideNetworkPolicy'] as const;
const CLUSTERWIDE: PolicyKind = 'CiliumClusterwideNetworkPolicy';

/** The minimal shape of a stored policy (its parts are the parser's business). */
const policyShape = z.object({
  kind: z.enum(KINDS),
  name: z.string().min(1),
  namespace: z.string().min(1).optional(),
  subjects: z.array(z.object({ requirements: z.array(z.unknown()) }).passthrough()),
  defaultDeny: z.object({ ingress: z.boolean(), egress: z.boolean() }),
  rules: z.array(z.object({ index: z.number().int().nonnegative() }).passthrough()),
  notEnforced: z.array(z.string()),
  source: z.record(z.string(), z.unknown()),
}).passthrough();

const policySchema = z.custom<Policy>().superRefine((v, ctx) => {
  const r = policyShape.safeParse(v);
  if (!r.success) {
    for (const i of r.error.issues) ctx.addIssue({ code: z.ZodIssueCode.custom, path: i.path, message: i.message });
    return;
  }
  const problem = scopeProblem(v);
  if (problem) ctx.addIssue({ code: z.ZodIssueCode.custom, path: ['namespace'], message: problem });
});

const stateSchema = z.object({
  version: z.literal(1),
  revision: z.number().int().nonnegative(),
  policies: z.array(z.object({
    id: z.number().int().min(1).max(MAX_POLICY_ID),
    policy: policySchema,
  })),
}).superRefine((s, ctx) => {
  const ids = new Set<number>();
  const keys = new Set<string>();
  s.policies.forEach((p, i) => {
    if (ids.has(p.id)) ctx.addIssue({ code: z.ZodIssueCode.custom, path: ['policies', i, 'id'], message: `policy number ${p.id} appears twice` });
    ids.add(p.id);
    const key = policyKey(p.policy);
    if (keys.has(key)) ctx.addIssue({ code: z.ZodIssueCode.custom, path: ['policies', i, 'policy'], message: `policy ${key} appears twice` });
    keys.add(key);
  });
});

type State = z.infer<typeof stateSchema>;

/** Why a policy's namespace does not suit its kind, or undefined. */
function scopeProblem(p: Pick<Policy, 'kind' | 'namespace' | 'name'>): string | undefined {
  if (p.kind === CLUSTERWIDE) return p.namespace === undefined ? undefined : `${p.kind} ${p.name} is cluster-wide and cannot have a namespace`;
  return p.namespace === undefined || p.namespace === '' ? `${p.kind} ${p.name} needs a namespace` : undefined;
}

function refKey(r: PolicyRef): string {
  return policyKey(r.kind === CLUSTERWIDE ? { kind: r.kind, name: r.name } : r);
}

function compare(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

function byKindNamespaceName(a: StoredPolicy, b: StoredPolicy): number {
  return compare(a.policy.kind, b.policy.kind) || compare(a.policy.namespace ?? '', b.policy.namespace ?? '') || compare(a.policy.name, b.policy.name);
}

/** `Kind namespace/name` (or `Kind name`), as messages name a policy. */
function describe(p: Pick<Policy, 'kind' | 'namespace' | 'name'>): string {
  return p.namespace === undefined ? `${p.kind} ${p.name}` : `${p.kind} ${p.namespace}/${p.name}`;
}

export class PolicyRepository {
  private readonly store: StateStore<State>;
  private byKey: Map<string, StoredPolicy>;
  private ids: Map<number, StoredPolicy>;
  private rev: number;

  constructor(statePath: string) {
    this.store = new StateStore(statePath, stateSchema, () => ({ version: 1, revision: 0, policies: [] }));
    const s = this.store.load();
    this.rev = s.revision;
    this.byKey = new Map(s.policies.map((p) => [policyKey(p.policy), { id: p.id, policy: p.policy }]));
    this.ids = new Map([...this.byKey.values()].map((p) => [p.id, p]));
  }

  /** Incremented on every change (persisted). */
  get revision(): number {
    return this.rev;
  }

  /**
   * Creates or updates every policy given (by kind/namespace/name), all or
   * nothing. A new policy gets the lowest free number; an updated one keeps
   * its own. A policy whose source is the stored one is `unchanged`. The
   * result lists policy keys (`kind/namespace/name`) in the order given.
   */
  apply(policies: Policy[]): { created: string[]; configured: string[]; unchanged: string[] } {
    const seen = new Set<string>();
    for (const p of policies) {
      const r = policyShape.safeParse(p);
      if (!r.success) {
        const i = r.error.issues[0];
        throw new PolicyRepositoryError('INVALID_POLICY', `policy ${describe(p)} is invalid at ${i?.path.join('.') || '(root)'}: ${i?.message ?? 'unknown problem'}`);
      }
      const problem = scopeProblem(p);
      if (problem) throw new PolicyRepositoryError('INVALID_POLICY', problem);
      const key = policyKey(p);
      if (seen.has(key)) throw new PolicyRepositoryError('DUPLICATE_POLICY', `${describe(p)} is given more than once`);
      seen.add(key);
    }
    const out = { created: [] as string[], configured: [] as string[], unchanged: [] as string[] };
    const byKey = new Map(this.byKey);
    const ids = new Map(this.ids);
    let changed = false;
    let next = 1;
    // What is stored is the policy's JSON form (as it is after a restart), compared in that form too.
    for (const p of policies.map((q) => JSON.parse(JSON.stringify(q)) as Policy)) {
      const key = policyKey(p);
      const old = byKey.get(key);
      if (old && isDeepStrictEqual(old.policy.source, p.source)) {
        out.unchanged.push(key);
        // The same document parsed anew (e.g. by a newer parser): keep the new parse.
        if (isDeepStrictEqual(old.policy, p)) continue;
      } else {
        (old ? out.configured : out.created).push(key);
      }
      let id = old?.id;
      if (id === undefined) {
        while (next <= MAX_POLICY_ID && ids.has(next)) next++;
        if (next > MAX_POLICY_ID) throw new PolicyRepositoryError('POLICY_LIMIT', `cannot store ${describe(p)}: all ${MAX_POLICY_ID} policy numbers are in use`);
        id = next;
      }
      const stored: StoredPolicy = { id, policy: p };
      byKey.set(key, stored);
      ids.set(id, stored);
      changed = true;
    }
    if (changed) this.commit(byKey, ids);
    return out;
  }

  /** Deletes the named policies; those not stored are reported, not an error. Keys as `apply` gives them. */
  delete(refs: PolicyRef[]): { deleted: string[]; notFound: string[] } {
    const out = { deleted: [] as string[], notFound: [] as string[] };
    const byKey = new Map(this.byKey);
    const ids = new Map(this.ids);
    for (const r of refs) {
      const key = refKey(r);
      const old = byKey.get(key);
      if (old === undefined) {
        if (!out.deleted.includes(key) && !out.notFound.includes(key)) out.notFound.push(key);
        continue;
      }
      byKey.delete(key);
      ids.delete(old.id);
      out.deleted.push(key);
    }
    if (out.deleted.length > 0) this.commit(byKey, ids);
    return out;
  }

  /** Every stored policy, sorted by kind, namespace and name. Do not modify what it returns. */
  list(): StoredPolicy[] {
    return [...this.byKey.values()].sort(byKindNamespaceName);
  }

  /**
   * A stored policy by name. Without a kind, every kind is looked at (in
   * `namespace` for namespaced kinds; cluster-wide policies have none) and
   * several matches are an error asking for the kind.
   */
  get(kind: PolicyKind | undefined, name: string, namespace?: string): StoredPolicy | undefined {
    if (kind !== undefined) return this.byKey.get(refKey({ kind, name, namespace }));
    const found = KINDS.map((k) => this.byKey.get(refKey({ kind: k, name, namespace }))).filter((p): p is StoredPolicy => p !== undefined);
    if (found.length > 1) {
      throw new PolicyRepositoryError('AMBIGUOUS_POLICY', `several policies are named ${name}: ${found.map((p) => describe(p.policy)).join(', ')}; give the kind`);
    }
    return found[0];
  }

  /** A stored policy by its number. */
  byId(id: number): StoredPolicy | undefined {
    return this.ids.get(id);
  }

  /** Persists the new state, then makes it current (a failed write changes nothing). */
  private commit(byKey: Map<string, StoredPolicy>, ids: Map<number, StoredPolicy>): void {
    const revision = this.rev + 1;
    const policies = [...byKey.values()].sort(byKindNamespaceName).map((p) => ({ id: p.id, policy: p.policy }));
    this.store.save({ version: 1, revision, policies });
    this.byKey = byKey;
    this.ids = ids;
    this.rev = revision;
  }
}
