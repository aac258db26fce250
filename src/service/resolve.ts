/**
 * Services → what the datapath holds: one frontend per (address, port,
 * protocol) a client can reach — every ClusterIP × service port, and every
 * node address × node port — each with the backends that take new
 * connections and the terminating ones that only finish theirs.
 *
 * Backends come from the service's EndpointSlices (ready → active; serving and
 * terminating → terminating; anything else is left out), or, for a service
 * with a selector and no slices, from the local endpoints of its namespace
 * whose labels match (all active).
 *
 * IDs (frontends and backends) are stable: the same frontend or backend keeps
 * its number across changes and restarts ({@link IdTable}), so the datapath's
 * entries of untouched services never move.
 */
import { addressFamily } from '../ipam/cidr.js';
import { slicePortFor } from './parse.js';
import type { EndpointSliceSpec, ServicePort, ServiceSpec } from './types.js';

/** A local endpoint as services see it. */
export interface ServiceEndpoint {
  name: string;
  namespace: string;
  labels: Record<string, string>;
  ipv4?: string;
  ipv6?: string;
}

export type Protocol = 'TCP' | 'UDP';

export interface ResolvedBackend {
  id: number;
  family: 4 | 6;
  addr: string;
  port: number;
  proto: Protocol;
  /** Finishing its connections; takes no new ones. */
  terminating: boolean;
}

export interface ResolvedFrontend {
  id: number;
  /** `namespace/name` of the service. */
  service: string;
  portName: string;
  kind: 'ClusterIP' | 'NodePort';
  family: 4 | 6;
  addr: string;
  port: number;
  proto: Protocol;
  maglev: boolean;
  /** Session affinity timeout in seconds (ClientIP affinity), absent without affinity. */
  affinityTimeout?: number;
  /** trafficPolicy Local (only node-local backends; every backend here is local or from a slice). */
  local: boolean;
  /** Backend IDs taking new connections, in a stable order (by backend key). */
  active: number[];
  /** Backend IDs finishing their connections. */
  terminating: number[];
}

export interface ResolvedState {
  frontends: ResolvedFrontend[];
  backends: ResolvedBackend[];
}

/** Stable numbers for keys: a key keeps its number while in use; released numbers are reused first. O(1) per key. */
export class IdTable {
  private readonly byKey = new Map<string, number>();
  private readonly free: number[] = [];
  private next = 1;

  constructor(entries: Record<string, number> = {}, private readonly max = 0xffffffff) {
    const used = new Set<number>();
    for (const [k, id] of Object.entries(entries)) {
      this.byKey.set(k, id);
      used.add(id);
      if (id >= this.next) this.next = id + 1;
    }
    for (let id = this.next - 1; id >= 1; id--) if (!used.has(id)) this.free.push(id);
  }

  id(key: string): number {
    const have = this.byKey.get(key);
    if (have !== undefined) return have;
    const id = this.free.pop() ?? this.next++;
    if (id > this.max) throw new Error(`no free ID left (at most ${this.max})`);
    this.byKey.set(key, id);
    return id;
  }

  /** Releases every key not in `keep`. */
  retain(keep: ReadonlySet<string>): void {
    for (const [k, id] of this.byKey) {
      if (!keep.has(k)) {
        this.byKey.delete(k);
        this.free.push(id);
      }
    }
  }

  toJSON(): Record<string, number> {
    return Object.fromEntries(this.byKey);
  }

  copy(): IdTable {
    return new IdTable(this.toJSON(), this.max);
  }
}

export interface ResolveInput {
  services: readonly ServiceSpec[];
  slices: readonly EndpointSliceSpec[];
  endpoints: readonly ServiceEndpoint[];
  /** Node addresses NodePort frontends listen on. */
  nodeAddresses: readonly string[];
  frontendIds: IdTable;
  backendIds: IdTable;
}

function familyOf(ip: string): 4 | 6 {
  return addressFamily(ip) === 6 ? 6 : 4;
}

function selects(selector: Record<string, string>, labels: Record<string, string>): boolean {
  return Object.entries(selector).every(([k, v]) => labels[k] === v);
}

/** Backends of one service port in one family: [key, backend-without-id][] in key order. */
function backendsOf(svc: ServiceSpec, port: ServicePort, family: 4 | 6, input: ResolveInput): { addr: string; port: number; terminating: boolean }[] {
  const slices = input.slices.filter((s) => s.namespace === svc.namespace && s.serviceName === svc.name && (s.addressType === 'IPv4' ? 4 : 6) === family);
  const out = new Map<string, { addr: string; port: number; terminating: boolean }>();
  if (slices.length > 0) {
    for (const slice of slices) {
      const sp = slicePortFor(port, slice);
      if (!sp) continue;
      for (const e of slice.endpoints) {
        const c = e.conditions;
        const terminating = !c.ready;
        if (!c.ready && !(c.serving && c.terminating) && !svc.publishNotReadyAddresses) continue;
        for (const addr of e.addresses) {
          const key = `${addr}|${sp.port}`;
          const prev = out.get(key);
          // The same address in two slices: ready wins.
          if (!prev || (prev.terminating && !terminating)) out.set(key, { addr, port: sp.port, terminating: svc.publishNotReadyAddresses ? false : terminating });
        }
      }
    }
  } else if (svc.selector && typeof port.targetPort === 'number') {
    for (const ep of input.endpoints) {
      if (ep.namespace !== svc.namespace || !selects(svc.selector, ep.labels)) continue;
      const addr = family === 4 ? ep.ipv4 : ep.ipv6;
      if (addr) out.set(`${addr}|${port.targetPort}`, { addr, port: port.targetPort, terminating: false });
    }
  }
  return [...out.entries()].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)).map(([, v]) => v);
}

/** The datapath state of `input.services`; IDs of vanished frontends and backends are released. */
export function resolveServices(input: ResolveInput): ResolvedState {
  const frontends: ResolvedFrontend[] = [];
  const backends = new Map<number, ResolvedBackend>();
  const frontendKeys = new Set<string>();
  const backendKeys = new Set<string>();
  for (const svc of input.services) {
    if (svc.headless) continue;
    const service = `${svc.namespace}/${svc.name}`;
    for (const port of svc.ports) {
      const addresses: { kind: 'ClusterIP' | 'NodePort'; addr: string; port: number }[] = svc.clusterIPs.map((addr) => ({ kind: 'ClusterIP' as const, addr, port: port.port }));
      if (svc.type === 'NodePort' && port.nodePort) {
        for (const addr of input.nodeAddresses) addresses.push({ kind: 'NodePort', addr, port: port.nodePort });
      }
      for (const a of addresses) {
        const family = familyOf(a.addr);
        if (a.kind === 'NodePort' && !svc.clusterIPs.some((ip) => familyOf(ip) === family)) continue;
        const fkey = `${a.addr}|${a.port}|${port.protocol}`;
        frontendKeys.add(fkey);
        const active: number[] = [];
        const terminating: number[] = [];
        for (const b of backendsOf(svc, port, family, input)) {
          const bkey = `${b.addr}|${b.port}|${port.protocol}`;
          backendKeys.add(bkey);
          const id = input.backendIds.id(bkey);
          const prev = backends.get(id);
          // One backend behind several frontends: terminating only if it is terminating everywhere.
          backends.set(id, { id, family, addr: b.addr, port: b.port, proto: port.protocol, terminating: (prev?.terminating ?? true) && b.terminating });
          (b.terminating ? terminating : active).push(id);
        }
        frontends.push({
          id: input.frontendIds.id(fkey), service, portName: port.name, kind: a.kind, family, addr: a.addr, port: a.port, proto: port.protocol,
          maglev: svc.lbAlgorithm === 'maglev',
          ...(svc.sessionAffinity === 'ClientIP' ? { affinityTimeout: svc.sessionAffinityTimeoutSeconds ?? 10800 } : {}),
          local: a.kind === 'NodePort' ? svc.externalTrafficPolicy === 'Local' : svc.internalTrafficPolicy === 'Local',
          active, terminating,
        });
      }
    }
  }
  input.frontendIds.retain(frontendKeys);
  input.backendIds.retain(backendKeys);
  return { frontends, backends: [...backends.values()].sort((a, b) => a.id - b.id) };
}
