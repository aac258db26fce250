/** The agent's service API: what is stored, and what the datapath does with it. */
import { ApiError, type Router } from './api-server.js';
import type { ServiceManager } from '../service/manager.js';
import type { ResolvedBackend, ResolvedFrontend } from '../service/resolve.js';
import type { ServiceSpec } from '../service/types.js';

export interface ServiceFrontendView {
  kind: ResolvedFrontend['kind'];
  address: string;
  port: number;
  protocol: string;
  portName: string;
  algorithm: 'maglev' | 'random';
  affinityTimeoutSeconds?: number;
  backends: { address: string; port: number; state: 'active' | 'terminating' }[];
}

/** One service with its frontends and backends as the datapath holds them. */
export interface ServiceView extends ServiceSpec {
  frontends: ServiceFrontendView[];
}

function view(mgr: ServiceManager, svc: ServiceSpec): ServiceView {
  const key = `${svc.namespace}/${svc.name}`;
  const backends = new Map<number, ResolvedBackend>(mgr.state.backends.map((b) => [b.id, b]));
  const be = (id: number, state: 'active' | 'terminating'): ServiceFrontendView['backends'][number] => {
    const b = backends.get(id);
    return { address: b?.addr ?? '?', port: b?.port ?? 0, state };
  };
  const frontends = mgr.state.frontends.filter((f) => f.service === key).map((f): ServiceFrontendView => ({
    kind: f.kind, address: f.addr, port: f.port, protocol: f.proto, portName: f.portName,
    algorithm: f.maglev ? 'maglev' : 'random',
    ...(f.affinityTimeout !== undefined ? { affinityTimeoutSeconds: f.affinityTimeout } : {}),
    backends: [...f.active.map((id) => be(id, 'active')), ...f.terminating.map((id) => be(id, 'terminating'))],
  }));
  return { ...svc, frontends };
}

export function addServiceRoutes(router: Router, services: ServiceManager, readLb: () => unknown): Router {
  return router
    .add('GET', '/v1/services', () => services.list().map((s) => view(services, s)))
    .add('GET', '/v1/services/:namespace/:name', (req) => {
      const svc = services.get(req.params.namespace as string, req.params.name as string);
      if (!svc) throw new ApiError(404, 'SERVICE_NOT_FOUND', `no service ${req.params.namespace}/${req.params.name}`);
      return view(services, svc);
    })
    .add('GET', '/v1/endpointslices', () => services.listSlices())
    .add('GET', '/v1/bpf/lb', () => readLb());
}
