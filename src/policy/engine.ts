/**
 * The agent's policy control loop: policies, namespaces and identities in,
 * datapath state out. Every change (a policy applied or deleted, a namespace
 * relabelled, an endpoint created or deleted) recomputes the desired state
 * (resolve.ts, pure) and writes only the difference into the pinned maps:
 *
 *   1. new and changed `policy` and `ipcache` entries,
 *   2. the endpoints' ENDPOINT_F_POLICY_* flags (through the endpoint manager),
 *   3. removal of entries no longer wanted,
 *   4. a new policy revision, so every conntrack entry is checked again on
 *      its next packet and connections the new policy denies are cut.
 */
import type { Logger } from 'pino';
import { join } from 'node:path';
import { IdentityAllocator } from '../identity/allocator.js';
import { listAddresses } from '../netlink/addr.js';
import type { BpfMap } from '../bpf/map.js';
import type { IpcacheValue } from '../datapath/codecs/ipcache.js';
import type { PolicyKey, PolicyState, PolicyValue } from '../datapath/codecs/policy.js';
import {
  ctForgetAddress, ctMap, ipcacheMap, isExactPolicyKey, MapSync, policyExactMap, policyKeyText, policyMap, policyStateMap,
  readPolicyRevision, writePolicyRevision,
} from '../datapath/policy-maps.js';
import { parseIp } from '../netlink/message.js';
import type { EndpointRecord } from '../endpoint/model.js';
import { NamespaceStore } from './namespaces.js';
import { PolicyRepository, type PolicyRef } from './repository.js';
import { prepare, referencedCidrs, resolveEndpointPolicy, type PreparedPolicies } from './resolve.js';
import { identityLabelView } from './selector.js';
import {
  decodeCookie, ReservedIdentity, type EndpointPolicy, type IdentityInfo, type PolicyEntry, type RuleRef, type StoredPolicy,
} from './types.js';

/** ENDPOINT_F_POLICY_INGRESS / _EGRESS (bpf/include/endpoint.h). */
export const POLICY_FLAG_INGRESS = 0x1;
export const POLICY_FLAG_EGRESS = 0x2;

export interface PolicyEngineOptions {
  stateDir: string;
  pinDir: string;
  log: Logger;
  /** Addresses that are the node's own but on no device (the virtual router). */
  extraHostAddresses?: string[];
}

export interface SyncResult {
  /** Policy map entries written / removed, ipcache entries written / removed. */
  policyWritten: number;
  policyRemoved: number;
  ipcacheWritten: number;
  ipcacheRemoved: number;
  revision: number;
  ms: number;
}

/** The endpoints the engine works on, and how to set their flags in the datapath. */
export interface EndpointSource {
  records(): EndpointRecord[];
  /** Writes each endpoint's ENDPOINT_F_POLICY_* flags (endpoints not yet in the maps are skipped). */
  setPolicyFlags(flags: ReadonlyMap<number, number>): void;
}

function entryKey(endpointId: number, direction: 'ingress' | 'egress', e: PolicyEntry): PolicyKey {
  return { endpointId, direction, identity: e.identity, proto: e.proto, port: e.port, portPrefixLen: e.portPrefixLen };
}

/** Whether an endpoint's policy in one direction needs lookups (some policy selects it there). */
function needsLookup(p: EndpointPolicy, dir: 'ingress' | 'egress'): boolean {
  return p.enforced[dir] || p[dir].some((e) => e.cookie !== 0);
}

export class PolicyEngine {
  readonly identities: IdentityAllocator;
  readonly namespaces: NamespaceStore;
  readonly repo: PolicyRepository;
  private readonly opts: PolicyEngineOptions;
  /** Range and wildcard entries (LPM trie) and single-port entries (hash). */
  private readonly policy: MapSync<PolicyKey, PolicyValue>;
  private readonly policyExact: MapSync<PolicyKey, PolicyValue>;
  private readonly ipcache: MapSync<string, IpcacheValue>;
  private readonly state: BpfMap<number, PolicyState>;
  private readonly ruleRefs = new Map<number, { stored: StoredPolicy; ref: RuleRef }>();
  private source: EndpointSource | undefined;
  private resolved = new Map<number, EndpointPolicy>();
  private prepared: PreparedPolicies | undefined;
  private flags = new Map<number, number>();
  private lastSync: SyncResult | undefined;

  constructor(opts: PolicyEngineOptions) {
    this.opts = opts;
    this.identities = new IdentityAllocator(join(opts.stateDir, 'identities.json'));
    this.namespaces = new NamespaceStore(join(opts.stateDir, 'namespaces.json'));
    this.repo = new PolicyRepository(join(opts.stateDir, 'policies.json'));
    const sameVerdict = (a: PolicyValue, b: PolicyValue): boolean => a.cookie === b.cookie && a.deny === b.deny && a.matchType === b.matchType;
    this.policy = new MapSync(policyMap(opts.pinDir), policyKeyText, sameVerdict);
    this.policyExact = new MapSync(policyExactMap(opts.pinDir), policyKeyText, sameVerdict, true);
    this.ipcache = new MapSync(ipcacheMap(opts.pinDir), (k) => k, (a, b) => a.identity === b.identity && a.flags === b.flags);
    this.state = policyStateMap(opts.pinDir);
  }

  bind(source: EndpointSource): void {
    this.source = source;
  }

  close(): void {
    this.policy.close();
    this.policyExact.close();
    this.ipcache.close();
    this.state.close();
  }

  get lastSyncResult(): SyncResult | undefined {
    return this.lastSync;
  }

  /** The ENDPOINT_F_POLICY_* flags of an endpoint as of the last sync (0 if unknown). */
  flagsOf(endpointId: number): number {
    return this.flags.get(endpointId) ?? 0;
  }

  /** The resolved policy of an endpoint as of the last sync. */
  endpointPolicy(endpointId: number): EndpointPolicy | undefined {
    return this.resolved.get(endpointId);
  }

  /** Every identity the resolver knows: reserved, endpoint (with its label view), CIDR. */
  identityInfos(): IdentityInfo[] {
    const out: IdentityInfo[] = [];
    for (const r of this.identities.list()) {
      if (r.kind === 'reserved') {
        const name = (Object.entries(ReservedIdentity) as [keyof typeof ReservedIdentity, number][]).find(([, id]) => id === r.id)?.[0];
        out.push({ id: r.id, labels: {}, ...(name ? { reserved: name } : {}) });
      } else if (r.kind === 'cidr' && r.cidr) {
        out.push({ id: r.id, labels: {}, cidr: r.cidr });
      } else {
        const l = this.identities.labelsOf(r.id);
        if (l) out.push({ id: r.id, labels: identityLabelView(l.labels, l.namespace, this.namespaces.labelsOf(l.namespace)) });
      }
    }
    return out;
  }

  /** The label view of an endpoint (its labels, its namespace and the namespace's labels). */
  labelView(labels: Record<string, string>, namespace: string): Record<string, string> {
    return identityLabelView(labels, namespace, this.namespaces.labelsOf(namespace));
  }

  /** The policies and identities prepared for resolution (cached until the next sync). */
  preparedPolicies(): PreparedPolicies {
    this.prepared ??= prepare({ policies: this.repo.list(), identities: this.identityInfos() });
    return this.prepared;
  }

  /** The node's own addresses (identity host). */
  private hostAddresses(): string[] {
    const out = new Set<string>(this.opts.extraHostAddresses ?? []);
    for (const a of listAddresses()) out.add(a.address);
    return [...out];
  }

  /**
   * Recomputes everything and writes the difference. `records` defaults to
   * the bound endpoint source's (an endpoint being created is passed in
   * before it is attached, so its policy is in place for its first packet).
   */
  sync(records: EndpointRecord[] = this.source?.records() ?? []): SyncResult {
    const started = performance.now();
    this.identities.syncCidrs(referencedCidrs(this.repo.list().map((s) => s.policy)));
    this.prepared = undefined;
    const prepared = this.preparedPolicies();

    const desiredPolicy = new Map<string, { key: PolicyKey; value: PolicyValue }>();
    const desiredExact = new Map<string, { key: PolicyKey; value: PolicyValue }>();
    const flags = new Map<number, number>();
    const resolved = new Map<number, EndpointPolicy>();
    for (const r of records) {
      if (r.identity === undefined) continue;
      const p = resolveEndpointPolicy(prepared, { endpointId: r.id, identity: r.identity, labels: this.labelView(r.labels, r.namespace) });
      resolved.set(r.id, p);
      let f = 0;
      for (const dir of ['ingress', 'egress'] as const) {
        if (!needsLookup(p, dir)) continue;
        f |= dir === 'ingress' ? POLICY_FLAG_INGRESS : POLICY_FLAG_EGRESS;
        for (const e of p[dir]) {
          const key = entryKey(r.id, dir, e);
          (isExactPolicyKey(key) ? desiredExact : desiredPolicy)
            .set(policyKeyText(key), { key, value: { cookie: e.cookie, deny: e.deny ? 1 : 0, matchType: e.matchType } });
        }
      }
      flags.set(r.id, f);
    }

    const desiredIpcache = new Map<string, { key: string; value: IpcacheValue }>();
    const put = (prefix: string, identity: number): void => { desiredIpcache.set(prefix, { key: prefix, value: { identity, flags: 0 } }); };
    for (const c of this.identities.list()) if (c.kind === 'cidr' && c.cidr) put(c.cidr, c.id);
    for (const ip of this.hostAddresses()) put(ip.includes(':') ? `${ip}/128` : `${ip}/32`, ReservedIdentity.host);
    for (const r of records) {
      if (r.identity === undefined) continue;
      if (r.ipv4) put(`${r.ipv4}/32`, r.identity);
      if (r.ipv6) put(`${r.ipv6}/128`, r.identity);
    }

    const policyWritten = this.policy.upsert(desiredPolicy) + this.policyExact.upsert(desiredExact);
    const ipcacheWritten = this.ipcache.upsert(desiredIpcache);
    this.source?.setPolicyFlags(flags);
    const policyRemoved = this.policy.prune(desiredPolicy) + this.policyExact.prune(desiredExact);
    const ipcacheRemoved = this.ipcache.prune(desiredIpcache);
    const revision = (readPolicyRevision(this.state) + 1) >>> 0;
    writePolicyRevision(this.state, revision);
    this.resolved = resolved;
    this.flags = flags;
    const result = { policyWritten, policyRemoved, ipcacheWritten, ipcacheRemoved, revision, ms: Math.round((performance.now() - started) * 10) / 10 };
    this.lastSync = result;
    this.opts.log.debug(result, 'policy synced');
    return result;
  }

  /** Entries currently in the policy map for one endpoint (what the datapath looks up). */
  datapathEntries(endpointId: number): { key: PolicyKey; value: PolicyValue }[] {
    return [...this.policyExact.entries(), ...this.policy.entries()].filter((e) => e.key.endpointId === endpointId);
  }

  /** Entries of the ipcache as written. */
  ipcacheEntries(): { prefix: string; identity: number }[] {
    return [...this.ipcache.entries()].map((e) => ({ prefix: e.key, identity: e.value.identity }));
  }

  /** The policy rule behind a datapath cookie, for flows and traces. */
  ruleOf(cookie: number): RuleRef | undefined {
    const c = decodeCookie(cookie);
    if (!c) return undefined;
    const stored = this.repo.byId(c.policyId);
    if (!stored) return undefined;
    // Flow enrichment asks per event: one shared object per cookie while its policy stays the same.
    const cached = this.ruleRefs.get(cookie);
    if (cached?.stored === stored) return cached.ref;
    const p = stored.policy;
    const ref: RuleRef = { kind: p.kind, name: p.name, ...(p.namespace !== undefined ? { namespace: p.namespace } : {}), index: c.index };
    if (this.ruleRefs.size >= 65536) this.ruleRefs.clear();
    this.ruleRefs.set(cookie, { stored, ref });
    return ref;
  }

  /**
   * Forgets the connections of addresses that no longer belong to an
   * endpoint (it was deleted), so a new endpoint given the same address later
   * inherits none of them.
   */
  forgetConnections(ips: string[]): number {
    const map = ctMap(this.opts.pinDir);
    try {
      let n = 0;
      for (const ip of ips) {
        const p = parseIp(ip);
        const addr = new Uint8Array(16);
        addr.set(p.bytes);
        n += ctForgetAddress(map, p.family === 4 ? 2 : 10, addr);
      }
      return n;
    } finally {
      map.close();
    }
  }

  /** Deletes policies by reference and re-syncs. */
  deletePolicies(refs: PolicyRef[]): { deleted: string[]; notFound: string[] } {
    const r = this.repo.delete(refs);
    if (r.deleted.length) this.sync();
    return r;
  }
}
