/**
 * The endpoint manager: creates, lists, deletes and restores the node's
 * endpoints. Each operation is all or nothing: a failed create undoes every
 * step it made. State (endpoints and, through them, IP allocations) is
 * persisted atomically after every change.
 */
import { existsSync, statSync } from 'node:fs';
import type { Logger } from 'pino';
import { ApiError } from '../agent/api-server.js';
import { StateStore } from '../agent/state-store.js';
import { Ipam, IpamError } from '../ipam/ipam.js';
import {
  attachEndpoint, detachEndpointPrograms, endpointAttached, endpointsMap, loadEndpointDatapath,
  type EndpointConfig, type EndpointDatapath,
} from '../datapath/lxc.js';
import { join } from 'node:path';
import { agentState, type AgentState, type CreateEndpointRequest, type EndpointRecord } from './model.js';
import { hubbleLabels } from './labels.js';
import {
  configureEndpointNetns, configureNodeSide, createEndpointNetns, createEndpointVeth, deleteLink, deleteNamedNetns,
  getLink, hostIfnameFor, isNetnsFile, Undo, type NetnsHandle,
} from './plumbing.js';
import type { EndpointView } from '../observe/hubble.js';

/**
 * What the endpoint manager needs from the policy side: identities for
 * labels, and policy written for the endpoint set before a new endpoint's
 * programs run. Without hooks (tests of plumbing alone) endpoints get no
 * identity and no policy: everything is allowed.
 */
export interface EndpointPolicyHooks {
  acquireIdentity(labels: Record<string, string>, namespace: string): number;
  releaseIdentity(identity: number): void;
  /** Identities of the endpoints found at start, in order (reference counts rebuilt). */
  restoreIdentities(users: { labels: Record<string, string>; namespace: string }[]): number[];
  /** Resolves and writes policy and ipcache for exactly these endpoints (calls back setPolicyFlags). */
  sync(records: EndpointRecord[]): void;
  /** The ENDPOINT_F_POLICY_* flags of an endpoint after the last sync. */
  flagsOf(endpointId: number): number;
  /** Drops the conntrack state of a deleted endpoint's addresses. */
  forgetConnections(ips: string[]): void;
}

export interface EndpointManagerOptions {
  nodeName: string;
  stateDir: string;
  /** bpffs directory where the datapath's maps and links are pinned. */
  pinDir: string;
  podCidrs: readonly string[];
  log: Logger;
  policy?: EndpointPolicyHooks;
}

/** An endpoint as the API shows it. */
export interface EndpointStatus extends EndpointRecord {
  state: 'ready' | 'not-ready';
  problem?: string;
}

const MAX_ENDPOINT_ID = 65535;

function sameFile(a: string, b: string): boolean {
  const x = statSync(a), y = statSync(b);
  return x.dev === y.dev && x.ino === y.ino;
}

export class EndpointManager {
  private readonly opts: EndpointManagerOptions;
  private readonly store: StateStore<AgentState>;
  private readonly ipam: Ipam;
  private readonly endpoints = new Map<string, EndpointRecord>();
  private readonly problems = new Map<string, string>();
  private viewIndex: { byId: Map<number, EndpointView>; byIp: Map<string, EndpointView> } | undefined;
  /** Serialises mutations: the API handles one create/delete at a time. */
  private queue: Promise<unknown> = Promise.resolve();
  /** The endpoint programs, loaded (or found pinned) once on first use and shared by every endpoint. */
  private datapathHandle: EndpointDatapath | undefined;

  constructor(opts: EndpointManagerOptions) {
    this.opts = opts;
    this.store = new StateStore(join(opts.stateDir, 'state.json'), agentState, () => ({ version: 1, endpoints: [] }));
    this.ipam = new Ipam(opts.podCidrs);
  }

  /** Addresses of the node's virtual router (the endpoints' gateway). */
  get router(): { ipv4?: string; ipv6?: string } {
    return { ipv4: this.ipam.routerAddress(4), ipv6: this.ipam.routerAddress(6) };
  }

  private serial<T>(fn: () => T | Promise<T>): Promise<T> {
    const run = this.queue.then(fn, fn);
    this.queue = run.catch(() => undefined);
    return run;
  }

  private readonly changeListeners: (() => void)[] = [];

  /** Calls `fn` after each change of the endpoint set (created, deleted, restored). */
  onChange(fn: () => void): void {
    this.changeListeners.push(fn);
  }

  private changed(): void {
    for (const fn of this.changeListeners) fn();
  }

  private save(): void {
    this.store.save({ version: 1, endpoints: [...this.endpoints.values()].sort((a, b) => a.id - b.id) });
  }

  private status(r: EndpointRecord): EndpointStatus {
    const problem = this.problems.get(r.name);
    return { ...r, state: problem ? 'not-ready' : 'ready', ...(problem ? { problem } : {}) };
  }

  list(): EndpointStatus[] {
    return [...this.endpoints.values()].sort((a, b) => a.id - b.id).map((r) => this.status(r));
  }

  get(name: string): EndpointStatus {
    const r = this.endpoints.get(name);
    if (!r) throw new ApiError(404, 'ENDPOINT_NOT_FOUND', `no endpoint named ${name}`);
    return this.status(r);
  }

  /** Flow-enrichment views by ID and by address, built once per change of the endpoint set. */
  private views(): { byId: Map<number, EndpointView>; byIp: Map<string, EndpointView> } {
    if (!this.viewIndex) {
      const byId = new Map<number, EndpointView>();
      const byIp = new Map<string, EndpointView>();
      for (const r of this.endpoints.values()) {
        const v: EndpointView = { id: r.id, name: r.name, namespace: r.namespace, labels: hubbleLabels(r.labels, r.namespace), hostIfname: r.hostIfname };
        byId.set(r.id, v);
        for (const ip of [r.ipv4, r.ipv6]) if (ip) byIp.set(ip, v);
      }
      this.viewIndex = { byId, byIp };
    }
    return this.viewIndex;
  }

  /** Endpoint by datapath ID, for flow enrichment (called per flow event). */
  view(id: number): EndpointView | undefined {
    return this.views().byId.get(id);
  }

  /** Every local endpoint as flow enrichment sees it. */
  allViews(): EndpointView[] {
    return [...this.views().byId.values()];
  }

  /** Endpoint by address, for flow enrichment. */
  viewByIp(ip: string): EndpointView | undefined {
    return this.views().byIp.get(ip);
  }

  get count(): number {
    return this.endpoints.size;
  }

  ipamUsage(): ReturnType<Ipam['usage']> {
    return this.ipam.usage();
  }

  private nextId(): number {
    const used = new Set([...this.endpoints.values()].map((r) => r.id));
    for (let id = 1; id <= MAX_ENDPOINT_ID; id++) if (!used.has(id)) return id;
    throw new ApiError(409, 'ENDPOINT_IDS_EXHAUSTED', `all ${MAX_ENDPOINT_ID} endpoint IDs are in use`);
  }

  private writeMapEntries(r: EndpointRecord): void {
    const map = endpointsMap(this.opts.pinDir);
    try {
      for (const ip of [r.ipv4, r.ipv6]) {
        if (ip) map.update(ip, { ifindex: r.hostIfindex, endpointId: r.id, mac: r.mac, nodeMac: r.hostMac, flags: this.flagsOf(r.id), identity: r.identity ?? 0 });
      }
    } finally {
      map.close();
    }
  }

  private deleteMapEntries(r: Pick<EndpointRecord, 'ipv4' | 'ipv6'>): void {
    if (!existsSync(join(this.opts.pinDir, 'endpoints'))) return;
    const map = endpointsMap(this.opts.pinDir);
    try {
      for (const ip of [r.ipv4, r.ipv6]) if (ip) map.delete(ip);
    } finally {
      map.close();
    }
  }

  /** The agent's endpoint programs: loaded, or reused from their pins, on first use. */
  private datapath(): EndpointDatapath {
    this.datapathHandle ??= loadEndpointDatapath({
      pinDir: this.opts.pinDir,
      ...(this.router.ipv4 ? { routerIpv4: this.router.ipv4 } : {}),
      ...(this.router.ipv6 ? { routerIpv6: this.router.ipv6 } : {}),
    });
    return this.datapathHandle;
  }

  private flagsOf(id: number): number {
    return this.opts.policy?.flagsOf(id) ?? 0;
  }

  private endpointConfig(r: EndpointRecord): EndpointConfig {
    return {
      endpointId: r.id, hostIfindex: r.hostIfindex, mac: r.mac, hostMac: r.hostMac,
      identity: r.identity ?? 0, policyFlags: this.flagsOf(r.id),
      ...(r.ipv4 ? { ipv4: r.ipv4 } : {}), ...(r.ipv6 ? { ipv6: r.ipv6 } : {}),
    };
  }

  /** Every endpoint record (for the policy engine). */
  records(): EndpointRecord[] {
    return [...this.endpoints.values()];
  }

  /**
   * Writes the endpoints' ENDPOINT_F_POLICY_* flags into their `lxc_config`
   * and `endpoints` entries where they differ (called by the policy engine
   * between writing new policy entries and removing old ones). Endpoints not
   * attached yet are skipped: attaching writes their flags.
   */
  setPolicyFlags(flags: ReadonlyMap<number, number>): void {
    if (!this.datapathHandle) return;
    const cfg = this.datapathHandle.config;
    const eps = endpointsMap(this.opts.pinDir);
    try {
      for (const r of this.endpoints.values()) {
        const want = flags.get(r.id) ?? 0;
        const have = cfg.lookup(r.hostIfindex);
        if (!have || have.endpointId !== r.id) continue;
        if (have.flags !== want) cfg.update(r.hostIfindex, { ...have, flags: want });
        for (const ip of [r.ipv4, r.ipv6]) {
          if (!ip) continue;
          const info = eps.lookup(ip);
          if (info && info.flags !== want) eps.update(ip, { ...info, flags: want });
        }
      }
    } finally {
      eps.close();
    }
  }

  private attach(r: EndpointRecord): void {
    const att = attachEndpoint(this.datapath(), this.endpointConfig(r));
    // Pinned tcx links keep the programs attached without our handles.
    if (att.pinnedAt) { att.ingress.close(); att.egress.close(); }
  }

  /** Creates an endpoint: namespace, veth, addresses, routes, programs, map entries. */
  create(req: CreateEndpointRequest): Promise<EndpointStatus> {
    return this.serial(() => this.createNow(req));
  }

  private createNow(req: CreateEndpointRequest): EndpointStatus {
    const { log } = this.opts;
    if (this.endpoints.has(req.name)) throw new ApiError(409, 'ENDPOINT_EXISTS', `an endpoint named ${req.name} already exists`);
    if (req.netns !== undefined && !isNetnsFile(req.netns)) {
      throw new ApiError(400, 'BAD_NETNS', `${req.netns} is not a network namespace (expected e.g. /var/run/netns/NAME or /proc/PID/ns/net)`);
    }
    if (req.netns !== undefined && sameFile(req.netns, '/proc/self/ns/net')) {
      throw new ApiError(400, 'BAD_NETNS', `${req.netns} is the node's own network namespace: an endpoint needs a namespace of its own`);
    }
    const id = this.nextId();
    let ips: { 4?: string; 6?: string };
    try {
      ips = this.ipam.allocate(req.name);
    } catch (err) {
      if (err instanceof IpamError) throw new ApiError(409, err.code, err.message);
      throw err;
    }
    const undo = new Undo();
    undo.push(() => { for (const ip of Object.values(ips)) if (ip) this.ipam.release(ip); });
    try {
      let netns: NetnsHandle;
      try {
        netns = req.netns !== undefined ? { path: req.netns, created: false } : createEndpointNetns(req.name, undo);
      } catch (err) {
        if ((err as { code?: string }).code === 'NETNS_EXISTS') throw new ApiError(409, 'NETNS_EXISTS', (err as Error).message);
        throw err;
      }
      const hostIfname = hostIfnameFor(this.opts.nodeName, req.name);
      let veth;
      try {
        veth = createEndpointVeth(hostIfname, netns.path, undo);
      } catch (err) {
        if ((err as { code?: string }).code === 'LINK_EXISTS') throw new ApiError(409, 'LINK_EXISTS', (err as Error).message);
        throw err;
      }
      const policy = this.opts.policy;
      const identity = policy?.acquireIdentity(req.labels, req.namespace);
      if (policy && identity !== undefined) undo.push(() => policy.releaseIdentity(identity));
      const record: EndpointRecord = {
        id, name: req.name, namespace: req.namespace, labels: req.labels,
        netnsPath: netns.path, netnsCreated: netns.created,
        hostIfname, hostIfindex: veth.hostIfindex, hostMac: veth.hostMac, mac: veth.mac,
        ...(ips[4] ? { ipv4: ips[4] } : {}), ...(ips[6] ? { ipv6: ips[6] } : {}),
        ...(identity !== undefined ? { identity } : {}),
        createdAt: new Date().toISOString(),
      };
      if (policy) {
        // Its policy (and everyone's rules about its identity) before its first packet.
        undo.push(() => policy.sync(this.records()));
        policy.sync([...this.records(), record]);
      }
      configureEndpointNetns(netns.path, { ipv4: record.ipv4, ipv6: record.ipv6, routerIpv4: this.router.ipv4, routerIpv6: this.router.ipv6 });
      configureNodeSide(record.hostIfindex, record.mac, [record.ipv4, record.ipv6].filter((x): x is string => !!x));
      undo.push(() => { detachEndpointPrograms(this.opts.pinDir, id); });
      this.attach(record);
      undo.push(() => this.deleteMapEntries(record));
      this.writeMapEntries(record);
      this.endpoints.set(record.name, record);
      this.viewIndex = undefined;
      undo.push(() => { this.endpoints.delete(record.name); this.viewIndex = undefined; });
      this.save();
      undo.clear();
      log.info({ endpoint: record.name, id, ipv4: record.ipv4, ipv6: record.ipv6, hostIfname }, 'endpoint created');
      this.changed();
      return this.status(record);
    } catch (err) {
      undo.run((e) => log.warn({ err: e.message, endpoint: req.name }, 'undo step failed'));
      throw err;
    }
  }

  /** Deletes an endpoint and everything made for it. */
  delete(name: string): Promise<{ deleted: string }> {
    return this.serial(() => {
      const r = this.endpoints.get(name);
      if (!r) throw new ApiError(404, 'ENDPOINT_NOT_FOUND', `no endpoint named ${name}`);
      this.teardown(r);
      this.endpoints.delete(name);
      this.viewIndex = undefined;
      this.problems.delete(name);
      this.save();
      const policy = this.opts.policy;
      if (policy) {
        policy.sync(this.records());
        if (r.identity !== undefined) policy.releaseIdentity(r.identity);
        policy.forgetConnections([r.ipv4, r.ipv6].filter((x): x is string => !!x));
      }
      this.opts.log.info({ endpoint: name, id: r.id }, 'endpoint deleted');
      this.changed();
      return { deleted: name };
    });
  }

  private teardown(r: EndpointRecord): void {
    this.deleteMapEntries(r);
    detachEndpointPrograms(this.opts.pinDir, r.id);
    deleteLink(r.hostIfname);
    if (r.netnsCreated) deleteNamedNetns(r.name);
    for (const ip of [r.ipv4, r.ipv6]) if (ip) this.ipam.release(ip);
  }

  /**
   * Reads the persisted endpoints and converges the kernel on them: missing
   * pieces are re-made, pinned programs that still run are kept (so traffic
   * keeps flowing across an agent restart), map entries are rewritten.
   */
  restore(): void {
    const state = this.store.load();
    for (const r of state.endpoints) {
      this.endpoints.set(r.name, r);
      this.viewIndex = undefined;
      for (const ip of [r.ipv4, r.ipv6]) if (ip) this.ipam.claim(ip, r.name);
    }
    const policy = this.opts.policy;
    if (policy) {
      const ids = policy.restoreIdentities(state.endpoints.map((r) => ({ labels: r.labels, namespace: r.namespace })));
      state.endpoints.forEach((r, i) => { r.identity = ids[i] as number; });
      policy.sync(state.endpoints);
    }
    for (const r of state.endpoints) {
      try {
        this.repair(r);
        this.problems.delete(r.name);
      } catch (err) {
        this.problems.set(r.name, (err as Error).message);
        this.opts.log.error({ endpoint: r.name, err: (err as Error).message }, 'endpoint could not be restored');
      }
    }
    this.save();
    this.changed();
  }

  private repair(r: EndpointRecord): void {
    const { log } = this.opts;
    if (!isNetnsFile(r.netnsPath)) {
      if (!r.netnsCreated) throw new Error(`its adopted network namespace ${r.netnsPath} is gone`);
      log.warn({ endpoint: r.name }, 'network namespace missing: re-creating it');
      const undo = new Undo();
      deleteLink(r.hostIfname);
      createEndpointNetns(r.name, undo);
    }
    const host = getLink(r.hostIfname);
    if (!host || host.ifindex !== r.hostIfindex) {
      log.warn({ endpoint: r.name }, 'veth missing or replaced: re-creating it');
      if (host) deleteLink(r.hostIfname);
      const veth = createEndpointVeth(r.hostIfname, r.netnsPath, new Undo());
      Object.assign(r, veth);
    }
    configureEndpointNetns(r.netnsPath, { ipv4: r.ipv4, ipv6: r.ipv6, routerIpv4: this.router.ipv4, routerIpv6: this.router.ipv6 }, true);
    configureNodeSide(r.hostIfindex, r.mac, [r.ipv4, r.ipv6].filter((x): x is string => !!x));
    if (!this.attached(r)) {
      log.warn({ endpoint: r.name }, 'programs not attached: attaching them');
      this.attach(r);
    }
    this.writeMapEntries(r);
  }

  /** Do the agent's programs run on the endpoint's veth (both pinned links), with its lxc_config entry? */
  private attached(r: EndpointRecord): boolean {
    return endpointAttached(this.datapath(), this.endpointConfig(r));
  }

  /** Removes every endpoint and its kernel objects (for `waggle agent --cleanup`). */
  cleanupAll(): string[] {
    const removed: string[] = [];
    const state = this.store.load();
    for (const r of state.endpoints) {
      try {
        this.teardown(r);
      } catch (err) {
        this.opts.log.warn({ endpoint: r.name, err: (err as Error).message }, 'cleanup step failed');
      }
      removed.push(r.name);
    }
    this.endpoints.clear();
    this.viewIndex = undefined;
    return removed;
  }
}
