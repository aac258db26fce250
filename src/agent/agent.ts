/**
 * `waggle agent`: wires configuration, the datapath's shared maps, the
 * endpoint manager, the flow reader and the API. SIGTERM/SIGINT stop the
 * agent and leave the datapath running (links and maps are pinned); a new
 * agent re-adopts them.
 */
import { existsSync, mkdirSync, rmSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import pino, { type Logger } from 'pino';
import { ensureBpffs, isBpffs, unmountBpffs } from '../bpf/bpffs.js';
import { Collection } from '../bpf/object.js';
import type { RingBuffer } from '../bpf/ringbuf.js';
import { bpfObjectPath } from '../datapath/objects.js';
import { LXC_OBJECT, metricsMap, openEvents, SHARED_MAPS } from '../datapath/lxc.js';
import { EndpointManager } from '../endpoint/manager.js';
import { Ipam } from '../ipam/ipam.js';
import { PolicyEngine } from '../policy/engine.js';
import { ctGarbageCollect, ctMap } from '../datapath/policy-maps.js';
import { addPolicyRoutes } from './policy-routes.js';
import { FlowPipeline } from '../observe/pipeline.js';
import { createHttpServer, listen } from './http-server.js';
import { addServiceRoutes } from './service-routes.js';
import { attachSocketLb } from '../datapath/sock.js';
import { attachHostDevices } from '../datapath/netdev.js';
import { LbMapWriter, readLbState, type LbDesiredState } from '../datapath/lb-maps.js';
import { listAddresses } from '../netlink/addr.js';
import { ServiceManager } from '../service/manager.js';
import type { ResolvedState } from '../service/resolve.js';
import { createAgentMetrics, lostEventCount, readDatapathCounters } from '../observe/metrics.js';
import { createUi } from '../observe/ui.js';
import { VERSION } from '../version.js';
import { ApiError, serveApi, socketInUse } from './api-server.js';
import { agentRoutes } from './routes.js';
import { watchAddresses } from './address-watch.js';
import type { AgentConfig } from './config.js';

/** How often the node's addresses are compared with the last ones seen (src/agent/address-watch.ts). */
const NODE_ADDRESS_POLL_MS = 2000;

/** The node's own addresses NodePort services answer on (global scope; not the endpoints' virtual router). */
function nodeAddresses(router: readonly string[]): string[] {
  return [...new Set(listAddresses().filter((a) => a.scope === 'universe' && !router.includes(a.address) && !a.address.startsWith('fe80:')).map((a) => a.address))];
}

/** The service manager's resolved state in the LB map writer's terms. */
function toLbState(state: ResolvedState): LbDesiredState {
  return {
    frontends: state.frontends.map((f) => ({
      serviceId: f.id, family: f.family, addr: f.addr, port: f.port, proto: f.proto,
      flags: { maglev: f.maglev, affinity: f.affinityTimeout !== undefined, nodePort: f.kind === 'NodePort', local: f.local },
      affinityTimeout: f.affinityTimeout ?? 0,
      backends: f.active,
    })),
    backends: state.backends,
  };
}

/** Creates the datapath's shared maps (pinned) if they do not exist yet. */
function ensureSharedMaps(pinDir: string): void {
  Collection.load(bpfObjectPath(LXC_OBJECT), { programs: [], pinMaps: SHARED_MAPS, pinDir }).close();
}

export interface RunningAgent {
  stop(): Promise<void>;
  log: Logger;
}

/** Starts the agent; resolves once it serves its API. */
export async function startAgent(cfg: AgentConfig, log: Logger = pino({ level: cfg.logLevel, base: { node: cfg.nodeName } })): Promise<RunningAgent> {
  if (process.getuid?.() !== 0) log.warn('not running as root: the datapath needs CAP_BPF, CAP_NET_ADMIN and CAP_SYS_ADMIN');
  // Before touching any state: another agent answering on our socket owns it all.
  if (await socketInUse(cfg.apiSocket)) {
    throw new ApiError(409, 'AGENT_RUNNING', `another agent is already serving ${cfg.apiSocket}: stop it or choose another --api-socket`);
  }
  mkdirSync(cfg.stateDir, { recursive: true, mode: 0o700 });
  const mounted = ensureBpffs(cfg.bpffsRoot, { mount: true });
  if (mounted) log.info({ bpffs: cfg.bpffsRoot }, 'mounted a BPF filesystem');
  const pinDir = join(cfg.bpffsRoot, 'maps');
  ensureSharedMaps(pinDir);
  // NodePort from outside the node: the host device program on --devices
  // (every device checked first; links of devices no longer configured go).
  const hostDevices = attachHostDevices({ pinDir, devices: cfg.devices });
  if (hostDevices.length > 0) log.info({ devices: hostDevices.map((d) => `${d.device} (${d.state})`) }, 'NodePort services reachable from outside through these devices');
  else log.info('no --devices: NodePort services answer only on this node');

  const ipam = new Ipam(cfg.podCidr);
  const routerAddresses = [ipam.routerAddress(4), ipam.routerAddress(6)].filter((a): a is string => a !== undefined);
  const policy = new PolicyEngine({ stateDir: cfg.stateDir, pinDir, log, extraHostAddresses: routerAddresses });
  const endpoints = new EndpointManager({
    nodeName: cfg.nodeName, stateDir: cfg.stateDir, pinDir, podCidrs: cfg.podCidr, log,
    policy: {
      acquireIdentity: (labels, namespace) => policy.identities.acquire(labels, namespace),
      releaseIdentity: (id) => { policy.identities.release(id); },
      restoreIdentities: (users) => policy.identities.restore(users),
      sync: (records) => { policy.sync(records); },
      flagsOf: (id) => policy.flagsOf(id),
      forgetConnections: (ips) => { policy.forgetConnections(ips); },
    },
  });
  policy.bind({ records: () => endpoints.records(), setPolicyFlags: (flags) => endpoints.setPolicyFlags(flags) });

  // Services: socket-level load balancing on the cgroup root (it also creates
  // the pinned lb maps), per-packet load balancing in the endpoint programs,
  // both reading the maps the service manager writes.
  const socketLb = attachSocketLb({ pinDir, ...(cfg.cgroupRoot ? { cgroupPath: cfg.cgroupRoot } : {}) });
  log.info({ cgroup: socketLb.cgroupPath }, 'socket load balancing attached');
  const lbWriter = LbMapWriter.open(pinDir, { maglevTableSize: cfg.maglevTableSize });
  const [portFirst, portLast] = cfg.nodePortRange.split('-').map(Number) as [number, number];
  const services = new ServiceManager({
    stateDir: cfg.stateDir, serviceCidrs: cfg.serviceCidr, nodePortRange: [portFirst, portLast],
    endpoints: () => endpoints.records().map((r) => ({ name: r.name, namespace: r.namespace, labels: r.labels, ...(r.ipv4 ? { ipv4: r.ipv4 } : {}), ...(r.ipv6 ? { ipv6: r.ipv6 } : {}) })),
    nodeAddresses: () => nodeAddresses(routerAddresses),
    datapath: { write: (state) => { lbWriter.apply(toLbState(state)); } },
  });
  endpoints.onChange(() => {
    try {
      services.resync();
    } catch (err) {
      log.error({ err: (err as Error).message }, 'updating service backends failed');
    }
  });
  endpoints.restore();
  log.info({ endpoints: endpoints.count, router: endpoints.router, policies: policy.repo.list().length, services: services.list().length }, 'restored endpoints, policy and services');
  // NodePort frontends follow the node's addresses.
  const addressWatch = watchAddresses({
    read: () => nodeAddresses(routerAddresses),
    onChange: (addresses) => {
      log.info({ addresses }, 'node addresses changed: updating NodePort frontends');
      services.resync();
    },
    onError: (err) => log.error({ err: err.message }, 'following the node addresses failed'),
    intervalMs: NODE_ADDRESS_POLL_MS,
  });

  // Conntrack garbage collection: expired entries out of the map.
  const ct = ctMap(pinDir);
  const ctTimer = setInterval(() => {
    try {
      const r = ctGarbageCollect(ct);
      if (r.deleted) log.debug(r, 'conntrack entries collected');
    } catch (err) {
      log.error({ err: (err as Error).message }, 'conntrack garbage collection failed');
    }
  }, cfg.ctGcIntervalSeconds * 1000);
  ctTimer.unref();
  const flows = new FlowPipeline(cfg.flowBuffer, {
    nodeName: cfg.nodeName,
    endpoint: (id) => endpoints.view(id),
    endpointByIp: (ip) => endpoints.viewByIp(ip),
    rule: (cookie) => policy.ruleOf(cookie),
    identityLabels: (id) => policy.identities.get(id)?.labels,
    service: (id) => services.serviceOfFrontend(id),
  });
  const ring: RingBuffer = openEvents(pinDir);
  ring.start((view, offset) => { flows.ingest(view, offset); },
    { onError: (err: unknown) => log.error({ err: (err as Error).message }, 'flow reader stopped') });
  const metrics = metricsMap(pinDir);
  const lostEvents = (): number => lostEventCount(readDatapathCounters(metrics));
  let lostSeen = lostEvents();
  const lostTimer = setInterval(() => {
    const now = lostEvents();
    if (now > lostSeen) {
      flows.recordLost('PERF_EVENT_RING_BUFFER', now - lostSeen);
      lostSeen = now;
    }
  }, 1000);
  lostTimer.unref();

  const started = Date.now();
  const status = (): Record<string, unknown> => ({
    uptimeSeconds: Math.round((Date.now() - started) / 1000),
    endpoints: endpoints.count,
    router: endpoints.router,
    ipam: endpoints.ipamUsage().map((u) => ({ ...u, capacity: u.capacity.toString() })),
    flows: (({ flows: _f, policyVerdicts: _p, ...figures }) => figures)(flows.stats()),
    policy: { policies: policy.repo.list().length, identities: policy.identities.list().length, lastSync: policy.lastSyncResult },
    services: { services: services.list().length, frontends: services.state.frontends.length, backends: services.state.backends.length, socketLb: socketLb.cgroupPath, devices: hostDevices.map((d) => d.device), nodeAddresses: addressWatch.addresses() },
    bpffsRoot: cfg.bpffsRoot,
  });
  /** Timers off and map/ring handles closed (the pinned datapath itself keeps running). */
  const releaseDatapath = async (): Promise<void> => {
    clearInterval(lostTimer);
    clearInterval(ctTimer);
    addressWatch.stop();
    ct.close();
    policy.close();
    lbWriter.close();
    metrics.close();
    await ring.stop();
    ring.close();
  };
  let api: Awaited<ReturnType<typeof serveApi>>;
  try {
    const routes = addServiceRoutes(
      addPolicyRoutes(agentRoutes({ nodeName: cfg.nodeName, endpoints, flows, status }), { policy, endpoints, pinDir, services }),
      services, () => readLbState(pinDir),
    );
    api = await serveApi(cfg.apiSocket, routes, (err) => log.error({ err: err.message, stack: err.stack }, 'API handler failed'));
  } catch (err) {
    await releaseDatapath();
    throw err;
  }
  log.info({ socket: cfg.apiSocket }, 'API listening');

  const agentMetrics = createAgentMetrics({
    pinDir,
    observe: () => flows.stats(),
    endpoints: () => endpoints.count,
    identities: () => policy.identities.list().length,
    policies: () => policy.repo.list().length,
  });
  const ui = createUi({ nodeName: cfg.nodeName, flows, endpoints: () => endpoints.allViews() });
  const http = createHttpServer([agentMetrics.handler, ui.handler], (err) => log.error({ err: err.message, stack: err.stack }, 'HTTP handler failed'));
  const url = await listen(http, cfg.httpListen);
  log.info({ url }, `listening on ${url}`);
  log.info({ version: VERSION }, 'agent ready');

  return {
    log,
    async stop() {
      await releaseDatapath();
      await new Promise<void>((r) => api.close(() => r()));
      rmSync(cfg.apiSocket, { force: true });
      agentMetrics.close();
      ui.close();
      http.closeAllConnections();
      await new Promise<void>((r) => http.close(() => r()));
      log.info('agent stopped; the datapath keeps running');
    },
  };
}

/**
 * `waggle agent --cleanup`: removes everything the agent ever created —
 * endpoints (veths, namespaces it made), pinned programs and maps, the bpffs
 * mount if it made one, the state and the API socket.
 */
export function cleanupAgent(cfg: AgentConfig, log: Logger): string[] {
  const pinDir = join(cfg.bpffsRoot, 'maps');
  const endpoints = new EndpointManager({ nodeName: cfg.nodeName, stateDir: cfg.stateDir, pinDir, podCidrs: cfg.podCidr, log });
  const removed = endpoints.cleanupAll();
  if (existsSync(cfg.bpffsRoot)) {
    // Unlinking the pins detaches links and frees maps nothing else holds. (A
    // bpffs root also shows the kernel's maps.debug/progs.debug: not ours.)
    rmSync(pinDir, { recursive: true, force: true });
    const isMountPoint = statSync(cfg.bpffsRoot).dev !== statSync(dirname(cfg.bpffsRoot)).dev;
    if (isMountPoint && isBpffs(cfg.bpffsRoot)) unmountBpffs(cfg.bpffsRoot);
    rmSync(cfg.bpffsRoot, { recursive: true, force: true });
  }
  rmSync(cfg.stateDir, { recursive: true, force: true });
  rmSync(cfg.apiSocket, { force: true });
  return removed;
}
