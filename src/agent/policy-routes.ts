/** The agent's API routes for policies, namespaces, identities, `policy trace` and the policy datapath maps. */
import { isIP } from 'node:net';
import { z } from 'zod';
import { ApiError, type Router } from './api-server.js';
import { describeIssues } from '../endpoint/model.js';
import type { EndpointManager } from '../endpoint/manager.js';
import { parseLabels } from '../endpoint/labels.js';
import { formatIPv6 } from '../bpf/codec.js';
import { ctEntries, ctMap, monotonicNs } from '../datapath/policy-maps.js';
import { cidrContains, parseAddress, parseCidr } from '../ipam/cidr.js';
import { CT_FLAGS } from '../datapath/codecs/conntrack.js';
import type { PolicyEngine } from '../policy/engine.js';
import { parsePolicyDocuments } from '../policy/parse.js';
import { ManifestError } from '../k8s/manifest.js';
import type { ServiceManager, ServicePlan } from '../service/manager.js';
import { parseTracePort, tracePolicy, type TraceParty } from '../policy/trace.js';
import { ReservedIdentity, type Entity, type PolicyKind } from '../policy/types.js';

export interface PolicyRouteContext {
  policy: PolicyEngine;
  endpoints: EndpointManager;
  pinDir: string;
  /** Services and EndpointSlices in the same apply/delete (absent: reported as unsupported). */
  services?: ServiceManager;
}

/** Checks the services of an apply or delete; a bad one fails the whole request before anything changes. */
function prepareServices(ctx: PolicyRouteContext, change: Parameters<ServiceManager['prepare']>[0]): ServicePlan | undefined {
  const any = (change.services?.length ?? 0) + (change.slices?.length ?? 0) + (change.deletes?.length ?? 0) > 0;
  if (!any || !ctx.services) return undefined;
  try {
    return ctx.services.prepare(change);
  } catch (err) {
    if (err instanceof ManifestError) throw new ApiError(400, 'INVALID_SERVICE', `${err.problems.join('; ')} (nothing was changed)`);
    throw new ApiError(400, 'INVALID_SERVICE', `${(err as Error).message} (nothing was changed)`);
  }
}

/** Turns the policy stores' coded errors into API errors. */
function storeError(err: unknown): never {
  const e = err as { code?: unknown; message?: string };
  if (err instanceof ApiError) throw err;
  if (typeof e.code === 'string') {
    const status = /^(INVALID|BAD)/.test(e.code) ? 400 : /NOT_FOUND/.test(e.code) ? 404 : 409;
    throw new ApiError(status, e.code, e.message ?? String(err));
  }
  throw err;
}

const documentsBody = z.object({
  files: z.array(z.object({
    /** The YAML (or JSON) text: one or more documents. */
    text: z.string(),
    /** Where it came from (a file name, `-`), for error messages. */
    source: z.string().min(1),
  }).strict()).min(1),
}).strict();

const labelsBody = z.object({
  labels: z.record(z.string()).default({}),
  overwrite: z.boolean().default(false),
  remove: z.array(z.string()).default([]),
}).strict();

const partySchema = z.object({
  endpoint: z.string().min(1).optional(),
  labels: z.string().optional(),
  namespace: z.string().min(1).optional(),
  ip: z.string().optional(),
  entity: z.enum(['host', 'world', 'unmanaged', 'health', 'init', 'remote-node', 'kube-apiserver', 'ingress']).optional(),
}).strict();

const traceBody = z.object({
  from: partySchema,
  to: partySchema,
  dport: z.string().min(1),
}).strict();

function parseBody<T>(schema: z.ZodType<T, z.ZodTypeDef, unknown>, body: unknown, what: string): T {
  const r = schema.safeParse(body ?? {});
  if (!r.success) throw new ApiError(400, 'BAD_REQUEST', describeIssues(r.error, what));
  return r.data;
}

/** Parses every file; all problems of all files in one error (nothing is applied then). */
function parseDocuments(body: unknown, servicesHandled: boolean): ReturnType<typeof parsePolicyDocuments> {
  const { files } = parseBody(documentsBody, body, 'invalid request');
  const out: ReturnType<typeof parsePolicyDocuments> = { policies: [], namespaces: [], services: [], slices: [], unsupported: [] };
  const problems: string[] = [];
  for (const f of files) {
    try {
      const d = parsePolicyDocuments(f.text, f.source);
      out.policies.push(...d.policies);
      out.namespaces.push(...d.namespaces);
      out.services.push(...d.services);
      out.slices.push(...d.slices);
      out.unsupported.push(...d.unsupported);
    } catch (err) {
      if (!(err instanceof ManifestError)) throw err;
      problems.push(...err.problems);
    }
  }
  if (problems.length) throw new ApiError(400, 'INVALID_POLICY', `${problems.join('; ')} (nothing was changed)`);
  if (!servicesHandled) {
    for (const r of [...out.services, ...out.slices]) out.unsupported.push(`${r.kind} ${r.namespace}/${r.name}: services are not handled by this agent`);
    out.services = [];
    out.slices = [];
  }
  return out;
}

/** Identity of an address as the datapath decides it: its longest prefix in the ipcache (endpoints, the node, CIDR rules), or world. */
function identityOfIp(ctx: PolicyRouteContext, ip: string): number {
  const addr = parseAddress(ip);
  let best: { len: number; identity: number } | undefined;
  for (const { prefix, identity } of ctx.policy.ipcacheEntries()) {
    const p = parseCidr(prefix);
    if ((!best || p.prefix > best.len) && cidrContains(p, addr.family, addr.value)) best = { len: p.prefix, identity };
  }
  return best?.identity ?? ReservedIdentity.world;
}

function party(ctx: PolicyRouteContext, p: z.infer<typeof partySchema>, side: 'from' | 'to'): TraceParty {
  const given = [p.endpoint, p.labels, p.ip, p.entity].filter((x) => x !== undefined).length;
  if (given !== 1) throw new ApiError(400, 'BAD_REQUEST', `--${side}-*: give exactly one of an endpoint, labels, an IP or an entity`);
  if (p.endpoint !== undefined) {
    const r = ctx.endpoints.records().find((x) => x.name === p.endpoint);
    if (!r) throw new ApiError(404, 'ENDPOINT_NOT_FOUND', `no endpoint named ${p.endpoint}`);
    return { kind: 'endpoint', name: r.name, endpointId: r.id, ...(r.identity ? { identity: r.identity } : {}), labels: r.labels, namespace: r.namespace };
  }
  if (p.labels !== undefined) {
    let labels: Record<string, string>;
    try {
      labels = parseLabels(p.labels);
    } catch (err) {
      throw new ApiError(400, 'BAD_LABELS', `--${side}-labels: ${(err as Error).message}`);
    }
    const namespace = p.namespace ?? 'default';
    return { kind: 'endpoint', name: `${namespace}/{${p.labels}}`, labels, namespace };
  }
  if (p.ip !== undefined) {
    if (!isIP(p.ip)) throw new ApiError(400, 'BAD_REQUEST', `--${side}-ip: not an IP address: ${JSON.stringify(p.ip)}`);
    const ep = ctx.endpoints.viewByIp(p.ip);
    if (ep) return party(ctx, { endpoint: ep.name }, side);
    return { kind: 'peer', name: p.ip, identity: identityOfIp(ctx, p.ip) };
  }
  const entity = p.entity as Exclude<Entity, 'cluster' | 'all'>;
  return { kind: 'peer', name: `reserved:${entity}`, identity: ReservedIdentity[entity] };
}

function addrText(family: number, a: Uint8Array): string {
  return family === 2 ? Array.from(a.subarray(0, 4)).join('.') : formatIPv6(a);
}

const PROTO_NAMES: Record<number, string> = { 1: 'ICMP', 6: 'TCP', 17: 'UDP', 58: 'ICMPv6', 132: 'SCTP' };

function ctState(flags: number, proto: number): string {
  if (proto !== 6) return flags & CT_FLAGS.SEEN_REPLY ? 'replied' : 'new';
  if (flags & CT_FLAGS.RST) return 'reset';
  if ((flags & (CT_FLAGS.TX_FIN | CT_FLAGS.RX_FIN)) === (CT_FLAGS.TX_FIN | CT_FLAGS.RX_FIN)) return 'closing';
  if (flags & (CT_FLAGS.TX_FIN | CT_FLAGS.RX_FIN)) return 'half-closed';
  return flags & CT_FLAGS.SEEN_REPLY ? 'established' : 'syn-sent';
}

export function addPolicyRoutes(router: Router, ctx: PolicyRouteContext): Router {
  const { policy } = ctx;
  const ruleText = (cookie: number): string | undefined => {
    const r = cookie ? policy.ruleOf(cookie) : undefined;
    return r ? `${r.kind}/${r.namespace ? `${r.namespace}/` : ''}${r.name}#${r.index}` : undefined;
  };
  return router
    .add('POST', '/v1/apply', (req) => {
      const docs = parseDocuments(req.body, ctx.services !== undefined);
      const servicePlan = prepareServices(ctx, { services: docs.services, slices: docs.slices });
      // What this apply replaces, to put back if writing the datapath fails (e.g. a full map).
      const before = docs.policies.map((p) => policy.repo.get(p.kind, p.name, p.namespace)?.policy);
      const nsBefore = docs.namespaces.map((n) => ({ name: n.name, labels: policy.namespaces.list().find((x) => x.name === n.name)?.labels }));
      let result;
      try {
        result = policy.repo.apply(docs.policies);
      } catch (err) {
        storeError(err);
      }
      const namespaces = docs.namespaces.map((n) => ({ name: n.name, result: policy.namespaces.replace(n.name, n.labels) }));
      let sync;
      try {
        sync = policy.sync();
        if (servicePlan) ctx.services?.commit(servicePlan);
      } catch (err) {
        const created = docs.policies.filter((_, i) => before[i] === undefined);
        policy.repo.delete(created.map((p) => ({ kind: p.kind, name: p.name, ...(p.namespace !== undefined ? { namespace: p.namespace } : {}) })));
        const old = before.filter((p): p is NonNullable<typeof p> => p !== undefined);
        if (old.length) policy.repo.apply(old);
        for (const n of nsBefore) {
          if (n.labels) policy.namespaces.replace(n.name, n.labels);
          else policy.namespaces.delete(n.name);
        }
        policy.sync();
        throw new ApiError(500, 'DATAPATH_WRITE_FAILED', `the datapath could not take this change (${(err as Error).message}); nothing was applied`);
      }
      const notEnforced = docs.policies.filter((p) => p.notEnforced.length).map((p) => ({ policy: `${p.kind}/${p.namespace ? `${p.namespace}/` : ''}${p.name}`, notes: p.notEnforced }));
      return {
        created: [...(result?.created ?? []), ...(servicePlan?.created ?? [])],
        configured: [...(result?.configured ?? []), ...(servicePlan?.updated ?? [])],
        unchanged: [...(result?.unchanged ?? []), ...(servicePlan?.unchanged ?? [])],
        namespaces, unsupported: docs.unsupported, notEnforced, warnings: servicePlan?.warnings ?? [], revision: sync.revision,
      };
    })
    .add('POST', '/v1/delete', (req) => {
      const docs = parseDocuments(req.body, ctx.services !== undefined);
      const refs = [...docs.services, ...docs.slices].map((r) => ({ kind: r.kind, name: r.name, namespace: r.namespace }));
      const servicePlan = prepareServices(ctx, { deletes: refs });
      if (servicePlan) {
        try {
          ctx.services?.commit(servicePlan);
        } catch (err) {
          throw new ApiError(500, 'DATAPATH_WRITE_FAILED', `the datapath could not take this change (${(err as Error).message}); nothing was deleted`);
        }
      }
      const result = policy.deletePolicies(docs.policies.map((p) => ({ kind: p.kind, name: p.name, ...(p.namespace !== undefined ? { namespace: p.namespace } : {}) })));
      const namespaces = docs.namespaces.filter((n) => policy.namespaces.delete(n.name)).map((n) => n.name);
      if (namespaces.length) policy.sync();
      const serviceKeys = refs.map((r) => `${r.kind}/${r.namespace}/${r.name}`);
      const deletedServices = servicePlan?.deleted ?? [];
      return {
        deleted: [...result.deleted, ...deletedServices],
        notFound: [...result.notFound, ...serviceKeys.filter((k) => !deletedServices.includes(k))],
        namespaces, unsupported: docs.unsupported,
      };
    })
    .add('GET', '/v1/policies', () => policy.repo.list().map(({ id, policy: p }) => ({
      id, kind: p.kind, name: p.name, ...(p.namespace !== undefined ? { namespace: p.namespace } : {}),
      rules: p.rules.length, defaultDeny: p.defaultDeny, notEnforced: p.notEnforced,
    })))
    .add('GET', '/v1/policy', (req) => {
      const name = req.query.get('name');
      if (!name) throw new ApiError(400, 'BAD_QUERY', 'name is required');
      const kind = (req.query.get('kind') ?? undefined) as PolicyKind | undefined;
      let stored;
      try {
        stored = policy.repo.get(kind, name, req.query.get('namespace') ?? undefined);
      } catch (err) {
        storeError(err);
      }
      if (!stored) throw new ApiError(404, 'POLICY_NOT_FOUND', `no policy named ${name}${req.query.get('namespace') ? ` in namespace ${req.query.get('namespace')}` : ''}`);
      return { id: stored.id, ...stored.policy };
    })
    .add('GET', '/v1/namespaces', () => policy.namespaces.list([...new Set(ctx.endpoints.records().map((r) => r.namespace))]))
    .add('GET', '/v1/namespaces/:name', (req) => {
      try {
        return policy.namespaces.get(req.params.name as string);
      } catch (err) {
        return storeError(err);
      }
    })
    .add('POST', '/v1/namespaces/:name/labels', (req) => {
      const b = parseBody(labelsBody, req.body, 'invalid namespace labels');
      let ns;
      try {
        ns = policy.namespaces.label(req.params.name as string, b.labels, { overwrite: b.overwrite, remove: b.remove });
      } catch (err) {
        storeError(err);
      }
      const sync = policy.sync();
      return { ...ns, revision: sync.revision };
    })
    .add('GET', '/v1/identities', () => policy.identities.list())
    .add('POST', '/v1/policy/trace', (req) => {
      const b = parseBody(traceBody, req.body, 'invalid trace');
      let port;
      try {
        port = parseTracePort(b.dport);
      } catch (err) {
        throw new ApiError(400, 'BAD_REQUEST', (err as Error).message);
      }
      const from = party(ctx, b.from, 'from');
      const to = party(ctx, b.to, 'to');
      return tracePolicy(policy, from, to, port.proto, port.protocol, port.port);
    })
    .add('GET', '/v1/bpf/policy/:endpoint', (req) => {
      const r = ctx.endpoints.records().find((x) => x.name === req.params.endpoint || String(x.id) === req.params.endpoint);
      if (!r) throw new ApiError(404, 'ENDPOINT_NOT_FOUND', `no endpoint named ${req.params.endpoint}`);
      const entries = policy.datapathEntries(r.id).map(({ key, value }) => ({
        direction: key.direction, identity: key.identity,
        protocol: key.proto === 0 ? 'ANY' : PROTO_NAMES[key.proto] ?? String(key.proto),
        port: key.proto === 0 || key.portPrefixLen === 0 ? 'ANY' : key.portPrefixLen === 16 ? String(key.port) : `${key.port}/${key.portPrefixLen}`,
        verdict: value.deny ? 'deny' : 'allow', matchType: value.matchType, cookie: value.cookie,
        ...(ruleText(value.cookie) ? { rule: ruleText(value.cookie) } : {}),
      }));
      return { endpoint: r.name, id: r.id, identity: r.identity, flags: policy.flagsOf(r.id), entries };
    })
    .add('GET', '/v1/bpf/ipcache', () => policy.ipcacheEntries())
    .add('GET', '/v1/bpf/ct', () => {
      const map = ctMap(ctx.pinDir);
      try {
        const now = monotonicNs();
        return ctEntries(map).filter(([, v]) => v.expiresNs > now).map(([k, v]) => ({
          protocol: PROTO_NAMES[k.proto] ?? String(k.proto),
          source: addrText(k.family, k.saddr), sourcePort: k.sport,
          destination: addrText(k.family, k.daddr), destinationPort: k.dport,
          state: ctState(v.flags, k.proto),
          expiresInSeconds: Math.round((v.expiresNs - now) / 1e9),
          srcIdentity: v.srcIdentity, dstIdentity: v.dstIdentity,
          packets: { forward: v.packetsFwd, reply: v.packetsRev }, bytes: { forward: v.bytesFwd, reply: v.bytesRev },
          ...(ruleText(v.egressCookie) ? { egressAllowedBy: ruleText(v.egressCookie) } : {}),
          ...(ruleText(v.ingressCookie) ? { ingressAllowedBy: ruleText(v.ingressCookie) } : {}),
        }));
      } finally {
        map.close();
      }
    });
}
