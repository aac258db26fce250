/**
 * The agent's services: the stored Services and EndpointSlices (persisted in
 * the state directory), ClusterIP and node port allocation, and the datapath
 * state they resolve to, written through a {@link ServiceDatapath}.
 *
 * Changes are all or nothing: {@link ServiceManager.prepare} checks a change
 * against everything stored (Kubernetes' validation, conflicts, pools) and
 * computes the datapath state without touching anything; {@link
 * ServiceManager.commit} writes the datapath and only then keeps and persists
 * the change. Endpoints coming and going re-resolve selector-based services
 * ({@link ServiceManager.resync}).
 */
import { join } from 'node:path';
import { z } from 'zod';
import { StateStore } from '../agent/state-store.js';
import { ManifestError } from '../k8s/manifest.js';
import { addressFamily } from '../ipam/cidr.js';
import { ClusterIpPool } from './cluster-ip.js';
import { checkServiceSet } from './parse.js';
import { IdTable, resolveServices, type ResolvedState, type ServiceEndpoint } from './resolve.js';
import { serviceResourceKey, type EndpointSliceSpec, type ServiceSpec } from './types.js';

/** Writes resolved services into the datapath (the LB maps). */
export interface ServiceDatapath {
  write(state: ResolvedState): void;
}

export interface ServiceManagerOptions {
  stateDir: string;
  serviceCidrs: readonly string[];
  nodePortRange: readonly [number, number];
  endpoints(): ServiceEndpoint[];
  nodeAddresses(): string[];
  datapath?: ServiceDatapath;
}

export interface ServiceRef {
  kind: 'Service' | 'EndpointSlice';
  name: string;
  namespace: string;
}

/** A checked change, ready to commit. */
export interface ServicePlan {
  services: ServiceSpec[];
  slices: EndpointSliceSpec[];
  frontendIds: IdTable;
  backendIds: IdTable;
  state: ResolvedState;
  created: string[];
  updated: string[];
  unchanged: string[];
  deleted: string[];
  warnings: string[];
}

const stateSchema = z.object({
  version: z.literal(1),
  services: z.array(z.custom<ServiceSpec>((v) => typeof v === 'object' && v !== null && (v as { kind?: unknown }).kind === 'Service')),
  slices: z.array(z.custom<EndpointSliceSpec>((v) => typeof v === 'object' && v !== null && (v as { kind?: unknown }).kind === 'EndpointSlice')),
  frontendIds: z.record(z.number().int().min(1)),
  backendIds: z.record(z.number().int().min(1)),
});
type ServiceState = z.infer<typeof stateSchema>;

const MAX_FRONTEND_ID = 65535;

const keyOf = (r: { kind: string; namespace: string; name: string }): string => serviceResourceKey(r as ServiceSpec);

export class ServiceManager {
  private readonly opts: ServiceManagerOptions;
  private readonly store: StateStore<ServiceState>;
  private readonly pool: ClusterIpPool;
  private services: ServiceSpec[];
  private slices: EndpointSliceSpec[];
  private frontendIds: IdTable;
  private backendIds: IdTable;
  private current: ResolvedState = { frontends: [], backends: [] };

  constructor(opts: ServiceManagerOptions) {
    this.opts = opts;
    this.pool = new ClusterIpPool(opts.serviceCidrs);
    this.store = new StateStore(join(opts.stateDir, 'services.json'), stateSchema, () => ({ version: 1 as const, services: [], slices: [], frontendIds: {}, backendIds: {} }));
    const s = this.store.load();
    this.services = s.services;
    this.slices = s.slices;
    // Frontend IDs fit the 16 bits a flow event carries them in.
    this.frontendIds = new IdTable(s.frontendIds, MAX_FRONTEND_ID);
    this.backendIds = new IdTable(s.backendIds);
  }

  /** Resolves the stored services against the endpoints now and writes the datapath (at start and after endpoint changes). */
  resync(): ResolvedState {
    const frontendIds = this.frontendIds.copy();
    const backendIds = this.backendIds.copy();
    const state = this.resolve(this.services, this.slices, frontendIds, backendIds);
    this.opts.datapath?.write(state);
    this.frontendIds = frontendIds;
    this.backendIds = backendIds;
    this.current = state;
    this.byFrontend = undefined;
    this.persist();
    return state;
  }

  /** What the datapath holds now. */
  get state(): ResolvedState {
    return this.current;
  }

  private byFrontend: Map<number, { name: string; namespace: string }> | undefined;

  /** The service a datapath frontend ID belongs to (translated flows carry the ID). */
  serviceOfFrontend(id: number): { name: string; namespace: string } | undefined {
    if (!this.byFrontend) {
      this.byFrontend = new Map(this.current.frontends.map((f) => {
        const slash = f.service.indexOf('/');
        return [f.id, { namespace: f.service.slice(0, slash), name: f.service.slice(slash + 1) }];
      }));
    }
    return this.byFrontend.get(id);
  }

  list(): ServiceSpec[] {
    return this.services;
  }

  listSlices(): EndpointSliceSpec[] {
    return this.slices;
  }

  get(namespace: string, name: string): ServiceSpec | undefined {
    return this.services.find((s) => s.namespace === namespace && s.name === name);
  }

  /**
   * Checks applying `services` and `slices` (created or replaced) and deleting
   * `deletes`, with ClusterIPs and node ports filled in; throws ManifestError
   * listing every problem. Changes nothing.
   */
  prepare(change: { services?: ServiceSpec[]; slices?: EndpointSliceSpec[]; deletes?: ServiceRef[] }, locate?: (r: ServiceSpec | EndpointSliceSpec) => string | undefined): ServicePlan {
    const created: string[] = [];
    const updated: string[] = [];
    const unchanged: string[] = [];
    const deleted: string[] = [];
    const gone = new Set((change.deletes ?? []).map(keyOf));
    for (const d of change.deletes ?? []) {
      const have = d.kind === 'Service' ? this.get(d.namespace, d.name) : this.slices.find((s) => s.namespace === d.namespace && s.name === d.name);
      if (have) deleted.push(keyOf(d));
    }
    const incoming = [...(change.services ?? []), ...(change.slices ?? [])];
    const replaced = new Set(incoming.map(keyOf));
    const keptServices = this.services.filter((s) => !gone.has(keyOf(s)) && !replaced.has(keyOf(s)));
    const keptSlices = this.slices.filter((s) => !gone.has(keyOf(s)) && !replaced.has(keyOf(s)));

    const takenIps = new Set(keptServices.flatMap((s) => s.clusterIPs));
    const takenPorts = new Set(keptServices.flatMap((s) => s.ports.flatMap((p) => (p.nodePort ? [p.nodePort] : []))));
    // What the incoming services ask for explicitly is not free for the others to be given.
    for (const svc of change.services ?? []) {
      for (const ip of svc.clusterIPs) takenIps.add(ip);
      for (const p of svc.ports) if (p.nodePort) takenPorts.add(p.nodePort);
    }
    const newServices: ServiceSpec[] = [];
    const problems: string[] = [];
    for (const svc of change.services ?? []) {
      const old = this.get(svc.namespace, svc.name);
      const filled = this.fill(svc, old, takenIps, takenPorts, problems, locate);
      newServices.push(filled);
      const key = keyOf(svc);
      if (!old) created.push(key);
      else if (JSON.stringify(old) === JSON.stringify(filled)) unchanged.push(key);
      else updated.push(key);
    }
    for (const sl of change.slices ?? []) {
      const old = this.slices.find((s) => s.namespace === sl.namespace && s.name === sl.name);
      const key = keyOf(sl);
      if (!old) created.push(key);
      else if (JSON.stringify(old) === JSON.stringify(sl)) unchanged.push(key);
      else updated.push(key);
    }
    if (problems.length) throw new ManifestError(problems);
    const services = [...keptServices, ...newServices];
    const slices = [...keptSlices, ...(change.slices ?? [])];
    const check = checkServiceSet(services, slices, {
      serviceCidrs: this.opts.serviceCidrs, nodePortRange: this.opts.nodePortRange,
      ...(locate ? { locate } : {}),
    });
    if (check.errors.length) throw new ManifestError(check.errors);
    const frontendIds = this.frontendIds.copy();
    const backendIds = this.backendIds.copy();
    const state = this.resolve(services, slices, frontendIds, backendIds);
    return { services, slices, frontendIds, backendIds, state, created, updated, unchanged, deleted, warnings: check.warnings };
  }

  /** Writes the plan's datapath state, then keeps and persists it. If the write fails nothing is kept (the caller reports it). */
  commit(plan: ServicePlan): void {
    try {
      this.opts.datapath?.write(plan.state);
    } catch (err) {
      // Put back what the datapath held before (best effort), then report.
      try { this.opts.datapath?.write(this.current); } catch { /* the original error says more */ }
      throw err;
    }
    this.services = plan.services;
    this.slices = plan.slices;
    this.frontendIds = plan.frontendIds;
    this.backendIds = plan.backendIds;
    this.current = plan.state;
    this.byFrontend = undefined;
    this.persist();
  }

  private persist(): void {
    this.store.save({ version: 1, services: this.services, slices: this.slices, frontendIds: this.frontendIds.toJSON(), backendIds: this.backendIds.toJSON() });
  }

  private resolve(services: ServiceSpec[], slices: EndpointSliceSpec[], frontendIds: IdTable, backendIds: IdTable): ResolvedState {
    return resolveServices({ services, slices, endpoints: this.opts.endpoints(), nodeAddresses: this.opts.nodeAddresses(), frontendIds, backendIds });
  }

  /** A service with its ClusterIPs and node ports: given, kept from the stored version, or allocated. */
  private fill(svc: ServiceSpec, old: ServiceSpec | undefined, takenIps: Set<string>, takenPorts: Set<number>, problems: string[], locate?: (r: ServiceSpec) => string | undefined): ServiceSpec {
    const where = `${locate?.(svc) ?? ''}${locate?.(svc) ? ' ' : ''}(Service "${svc.namespace}/${svc.name}")`;
    const out: ServiceSpec = structuredClone(svc);
    if (!svc.headless) {
      const ips = [...svc.clusterIPs];
      for (const fam of svc.ipFamilies) {
        const family = fam === 'IPv4' ? 4 : 6;
        if (ips.some((ip) => addressFamily(ip) === family)) continue;
        const keep = old?.clusterIPs.find((ip) => addressFamily(ip) === family);
        if (keep && !takenIps.has(keep)) { ips.push(keep); takenIps.add(keep); continue; }
        if (!this.pool.range(family)) {
          if (svc.ipFamilyPolicy === 'PreferDualStack') continue;
          problems.push(`${where}: spec.ipFamilies: no IPv${family} service CIDR is configured (--service-cidr)`);
          continue;
        }
        try {
          const ip = this.pool.allocate(family, takenIps);
          ips.push(ip);
          takenIps.add(ip);
        } catch (err) {
          problems.push(`${where}: spec.clusterIPs: ${(err as Error).message}`);
        }
      }
      if (old && svc.clusterIPs.length && old.clusterIPs.length && svc.clusterIPs[0] !== old.clusterIPs[0]) {
        problems.push(`${where}: spec.clusterIP: may not change (${old.clusterIPs[0]} → ${svc.clusterIPs[0]}); delete the Service first`);
      }
      out.clusterIPs = ips;
      out.ipFamilies = ips.map((ip) => (addressFamily(ip) === 6 ? 'IPv6' : 'IPv4'));
    }
    if (svc.type === 'NodePort') {
      const [first, last] = this.opts.nodePortRange;
      out.ports = out.ports.map((p, i) => {
        if (p.nodePort) return p;
        const same = old?.ports.find((o) => o.name === p.name && o.protocol === p.protocol)?.nodePort;
        // One port number for TCP and UDP of the same service port name is Kubernetes' habit; keep it simple: one each.
        if (same !== undefined && !takenPorts.has(same)) { takenPorts.add(same); return { ...p, nodePort: same }; }
        for (let n = first; n <= last; n++) {
          if (!takenPorts.has(n)) { takenPorts.add(n); return { ...p, nodePort: n }; }
        }
        problems.push(`${where}: spec.ports[${i}].nodePort: no free node port left in ${first}-${last}`);
        return p;
      });
    }
    return out;
  }
}
