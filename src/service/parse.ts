/**
 * Kubernetes `v1 Service` and `discovery.k8s.io/v1 EndpointSlice` documents →
 * the service model (types.ts), validated as the Kubernetes API server
 * validates them, strictly (unknown fields are errors), with every problem
 * naming its document and field. Kubernetes fields and values Waggle does not
 * handle (LoadBalancer, ExternalName, externalIPs, SCTP, FQDN slices) are
 * refused with a reason rather than ignored.
 *
 * Checks that need no agent state but span documents, or need the agent's
 * configuration (service CIDRs, node-port range), are in `checkServiceSet`.
 */
import { z } from 'zod';
import { labelKeyProblem, labelValueProblem } from '../endpoint/labels.js';
import { cidrContains, cidrSize, formatAddress, parseAddress, parseCidr, type Cidr, type Family } from '../ipam/cidr.js';
import { describeDocument, isObject, ManifestError } from '../k8s/manifest.js';
import { at, check, dnsSubdomain, metadataSchema, problem, type Problems } from '../policy/parse-k8s.js';
import {
  CILIUM_LB_ALGORITHM_ANNOTATION, DEFAULT_AFFINITY_TIMEOUT_SECONDS, LB_ALGORITHM_ANNOTATION, MAX_AFFINITY_TIMEOUT_SECONDS,
  SERVICE_NAME_LABEL, WAGGLE_SERVICE_ANNOTATION_PREFIX,
  type EndpointConditions, type EndpointSliceSpec, type IpFamily, type IpFamilyPolicy, type LbAlgorithm, type ObjectReference,
  type ServicePort, type ServiceProtocol, type ServiceResource, type ServiceSpec, type ServiceType, type SessionAffinity,
  type SliceEndpoint, type SlicePort, type TrafficPolicy,
  serviceResourceKey,
} from './types.js';

/** The apiVersion of each kind this parser handles. */
export const SERVICE_API: Readonly<Record<'Service' | 'EndpointSlice', string>> = {
  Service: 'v1',
  EndpointSlice: 'discovery.k8s.io/v1',
};

/** Is this a document for the service parser (`v1 Service` or `discovery.k8s.io/v1 EndpointSlice`)? */
export function isServiceKind(apiVersion: unknown, kind: unknown): boolean {
  return (kind === 'Service' || kind === 'EndpointSlice') && SERVICE_API[kind] === apiVersion;
}

/** Where a document came from: `source` (a file name, `-`) and its 0-based position in that stream (reported 1-based, "document N"). */
export interface DocumentLocation {
  source: string;
  index: number;
}

// ---------------------------------------------------------------- shared pieces

const DNS_LABEL = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/;
const DNS_LABEL_TEXT = 'must be a DNS label: 1-63 lower-case letters, digits and -, starting and ending with a letter or digit';
const DNS_1035 = /^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$/;
const DNS_1035_TEXT = 'must be a DNS-1035 label: 1-63 lower-case letters, digits and -, starting with a letter and ending with a letter or digit';

const dns1035 = z.string().regex(DNS_1035, DNS_1035_TEXT);

/** Object metadata, plus the fields the API server and controllers fill in (accepted and ignored). */
function meta(name: z.ZodString) {
  return metadataSchema(name).extend({
    generateName: z.string().optional(),
    selfLink: z.string().optional(),
    ownerReferences: z.array(z.unknown()).optional(),
    finalizers: z.array(z.string()).optional(),
    deletionTimestamp: z.string().optional(),
    deletionGracePeriodSeconds: z.number().optional(),
  });
}

/** Checks a string against a set of values; `refused` maps known-but-unsupported values to the reason. */
function oneOf<T extends string>(value: string, allowed: readonly T[], path: string, problems: Problems, refused: Record<string, string> = {}): T | undefined {
  if ((allowed as readonly string[]).includes(value)) return value as T;
  const why = refused[value];
  problem(problems, path, why ?? `must be one of ${allowed.join(', ')}, got ${JSON.stringify(value)}`);
  return undefined;
}

const PROTOCOLS = ['TCP', 'UDP'] as const;
const REFUSED_PROTOCOLS = { SCTP: 'SCTP is not supported yet (TCP or UDP)' };

function protocolOf(value: string | undefined, path: string, problems: Problems): ServiceProtocol | undefined {
  return oneOf(value ?? 'TCP', PROTOCOLS, path, problems, REFUSED_PROTOCOLS);
}

function portNumber(value: unknown, path: string, problems: Problems): number | undefined {
  if (value === undefined) { problem(problems, path, 'required'); return undefined; }
  if (typeof value === 'number' && Number.isInteger(value) && value >= 1 && value <= 65535) return value;
  problem(problems, path, `must be a port number 1-65535, got ${JSON.stringify(value)}`);
  return undefined;
}

/** Why `s` is not an IANA service name (a named port), or undefined. */
function portNameProblem(s: string): string | undefined {
  if (s.length > 15) return 'at most 15 characters';
  if (!/^[a-z0-9-]+$/.test(s)) return 'only lower-case letters, digits and -';
  if (!/[a-z]/.test(s)) return 'at least one letter';
  if (s.startsWith('-') || s.endsWith('-') || s.includes('--')) return 'no - at either end and no --';
  return undefined;
}

/** Parses an address as the API server accepts it (IPv4 without leading zeros, IPv6 without a zone); undefined when it is not one. */
function ipOf(text: string): { family: Family; value: bigint; text: string } | undefined {
  if (text.includes('.') && !text.includes(':') && text.split('.').some((o) => /^0\d/.test(o))) return undefined;
  try {
    const a = parseAddress(text);
    return { ...a, text: formatAddress(a.family, a.value) };
  } catch {
    return undefined;
  }
}

const familyName = (f: Family): IpFamily => (f === 4 ? 'IPv4' : 'IPv6');

function checkLabels(labels: Record<string, string>, path: string, problems: Problems): void {
  for (const [k, v] of Object.entries(labels)) {
    const p = labelKeyProblem(k) ?? labelValueProblem(k, v);
    if (p) problem(problems, at(path, k), p);
  }
}

/** Kubernetes treats absent, "", [] and 0 alike for optional fields. */
const isSet = (v: unknown): boolean => v !== undefined && v !== '' && v !== 0 && !(Array.isArray(v) && v.length === 0);

// ---------------------------------------------------------------- Service

const servicePortSchema = z.object({
  name: z.string().optional(),
  protocol: z.string().optional(),
  appProtocol: z.string().optional(),
  port: z.unknown().optional(),
  targetPort: z.unknown().optional(),
  nodePort: z.unknown().optional(),
}).strict();

const serviceSchema = z.object({
  apiVersion: z.literal('v1'),
  kind: z.literal('Service'),
  metadata: meta(dns1035),
  spec: z.object({
    type: z.string().optional(),
    ports: z.array(servicePortSchema).optional(),
    selector: z.record(z.string()).optional(),
    clusterIP: z.string().optional(),
    clusterIPs: z.array(z.string()).optional(),
    ipFamilies: z.array(z.string()).optional(),
    ipFamilyPolicy: z.string().optional(),
    sessionAffinity: z.string().optional(),
    sessionAffinityConfig: z.object({
      clientIP: z.object({ timeoutSeconds: z.unknown().optional() }).strict().optional(),
    }).strict().optional(),
    externalTrafficPolicy: z.string().optional(),
    internalTrafficPolicy: z.string().optional(),
    publishNotReadyAddresses: z.boolean().optional(),
    // Kubernetes fields Waggle does not handle: refused with a reason (UNSUPPORTED_SPEC_FIELDS).
    externalIPs: z.unknown().optional(),
    externalName: z.unknown().optional(),
    loadBalancerIP: z.unknown().optional(),
    loadBalancerSourceRanges: z.unknown().optional(),
    loadBalancerClass: z.unknown().optional(),
    allocateLoadBalancerNodePorts: z.unknown().optional(),
    healthCheckNodePort: z.unknown().optional(),
    trafficDistribution: z.unknown().optional(),
  }).strict(),
  status: z.unknown().optional(),
}).strict();

type ServiceInput = z.infer<typeof serviceSchema>;

const LOAD_BALANCER_ONLY = 'only for type LoadBalancer, which Waggle does not support';
const UNSUPPORTED_SPEC_FIELDS: Record<string, string> = {
  externalIPs: 'not supported (Waggle serves cluster IPs and node ports)',
  externalName: 'only for type ExternalName, which Waggle does not support',
  loadBalancerIP: LOAD_BALANCER_ONLY,
  loadBalancerSourceRanges: LOAD_BALANCER_ONLY,
  loadBalancerClass: LOAD_BALANCER_ONLY,
  allocateLoadBalancerNodePorts: LOAD_BALANCER_ONLY,
  healthCheckNodePort: LOAD_BALANCER_ONLY,
  trafficDistribution: 'not supported yet',
};

const REFUSED_TYPES = {
  LoadBalancer: 'LoadBalancer is not supported (Waggle handles ClusterIP and NodePort services)',
  ExternalName: 'ExternalName is not supported (Waggle handles ClusterIP and NodePort services)',
};

/** clusterIP / clusterIPs / ipFamilies / ipFamilyPolicy → the model's address fields (Kubernetes' rules and defaulting). */
function serviceAddresses(spec: ServiceInput['spec'], type: ServiceType | undefined, problems: Problems):
  { headless: boolean; clusterIPs: string[]; ipFamilies: IpFamily[]; ipFamilyPolicy: IpFamilyPolicy } | undefined {
  const before = problems.length;
  const single = spec.clusterIP ?? '';
  let texts = spec.clusterIPs ?? [];
  // Only clusterIPs[0] has a path of its own when the document wrote clusterIP alone.
  const onlyClusterIP = (spec.clusterIPs ?? []).length === 0;
  const ipPath = (i: number): string => (i === 0 && onlyClusterIP ? 'spec.clusterIP' : at('spec.clusterIPs', i));
  if (texts.length === 0 && single !== '') texts = [single];
  else if (texts.length > 0 && single !== '' && single !== texts[0]) {
    problem(problems, 'spec.clusterIPs[0]', `must be the same as spec.clusterIP (${JSON.stringify(single)}), got ${JSON.stringify(texts[0])}`);
  }

  const headless = texts[0] === 'None';
  const ips: { family: Family; text: string }[] = [];
  if (texts.length > 2) problem(problems, 'spec.clusterIPs', `must have at most 2 addresses (one per IP family), got ${texts.length}`);
  texts.forEach((t, i) => {
    if (t === 'None') {
      if (i > 0) problem(problems, ipPath(i), '"None" (headless) may only be the first entry');
      return;
    }
    if (headless) { problem(problems, ipPath(i), 'must not be set when spec.clusterIPs[0] is "None" (headless)'); return; }
    const ip = ipOf(t);
    if (!ip) { problem(problems, ipPath(i), `must be an IP address (or "None" for a headless service), got ${JSON.stringify(t)}`); return; }
    if (i === 1 && ips[0]?.family === ip.family) problem(problems, ipPath(i), `must be of the other IP family than ${ips[0].text} (both are ${familyName(ip.family)})`);
    ips.push(ip);
  });
  if (headless && type === 'NodePort') problem(problems, ipPath(0), '"None" (headless) is not allowed for NodePort services');

  const families: IpFamily[] = [];
  (spec.ipFamilies ?? []).forEach((f, i) => {
    const p = at('spec.ipFamilies', i);
    const fam = oneOf(f, ['IPv4', 'IPv6'] as const, p, problems);
    if (!fam) return;
    if (families.includes(fam)) problem(problems, p, `${fam} is listed twice`);
    else families.push(fam);
  });
  if ((spec.ipFamilies ?? []).length > 2) problem(problems, 'spec.ipFamilies', `must have at most 2 families, got ${(spec.ipFamilies ?? []).length}`);
  ips.forEach((ip, i) => {
    const want = families[i];
    if (want !== undefined && want !== familyName(ip.family)) problem(problems, ipPath(i), `${ip.text} is ${familyName(ip.family)} but spec.ipFamilies[${i}] is ${want}`);
  });

  let policy: IpFamilyPolicy | undefined;
  if (spec.ipFamilyPolicy !== undefined) {
    policy = oneOf(spec.ipFamilyPolicy, ['SingleStack', 'PreferDualStack', 'RequireDualStack'] as const, 'spec.ipFamilyPolicy', problems);
  } else {
    policy = ips.length === 2 || families.length === 2 ? 'RequireDualStack' : 'SingleStack';
  }
  if (policy === 'SingleStack') {
    if (ips.length === 2) problem(problems, 'spec.ipFamilyPolicy', 'must be PreferDualStack or RequireDualStack when spec.clusterIPs has two addresses');
    if (families.length === 2) problem(problems, 'spec.ipFamilyPolicy', 'must be PreferDualStack or RequireDualStack when spec.ipFamilies has two families');
  }
  if (problems.length > before || policy === undefined) return undefined;

  const resolved = [...families];
  for (const ip of ips) if (!resolved.includes(familyName(ip.family))) resolved.push(familyName(ip.family));
  if (resolved.length === 0) resolved.push('IPv4');
  if (policy !== 'SingleStack' && resolved.length === 1) resolved.push(resolved[0] === 'IPv4' ? 'IPv6' : 'IPv4');
  return { headless, clusterIPs: ips.map((ip) => ip.text), ipFamilies: resolved, ipFamilyPolicy: policy };
}

function servicePorts(spec: ServiceInput['spec'], type: ServiceType | undefined, headless: boolean, problems: Problems): ServicePort[] {
  const input = spec.ports ?? [];
  if (input.length === 0 && !headless) problem(problems, 'spec.ports', 'required: at least one port (only a headless service may have none)');
  const out: ServicePort[] = [];
  const names = new Map<string, number>();
  const ports = new Map<string, number>();
  const nodePorts = new Map<string, number>();
  input.forEach((p, i) => {
    const path = at('spec.ports', i);
    const name = p.name ?? '';
    if (name === '') {
      if (input.length > 1) problem(problems, at(path, 'name'), 'required when the service has more than one port');
    } else if (!DNS_LABEL.test(name)) {
      problem(problems, at(path, 'name'), DNS_LABEL_TEXT);
    } else if (names.has(name)) {
      problem(problems, at(path, 'name'), `${JSON.stringify(name)} is already the name of spec.ports[${names.get(name)}]`);
    } else {
      names.set(name, i);
    }
    const protocol = protocolOf(p.protocol, at(path, 'protocol'), problems);
    const port = portNumber(p.port, at(path, 'port'), problems);

    let targetPort: number | string | undefined = port;
    if (isSet(p.targetPort)) {
      const tp = p.targetPort;
      const tpPath = at(path, 'targetPort');
      if (typeof tp === 'string') {
        const why = portNameProblem(tp);
        if (why === undefined) targetPort = tp;
        else {
          targetPort = undefined;
          problem(problems, tpPath, /^\d+$/.test(tp)
            ? `must be a port number or a port name, got the string ${JSON.stringify(tp)} (write the number without quotes)`
            : `must be a port number 1-65535 or a port name (an IANA service name: ${why}), got ${JSON.stringify(tp)}`);
        }
      } else {
        targetPort = portNumber(tp, tpPath, problems);
      }
    }

    let nodePort: number | undefined;
    if (isSet(p.nodePort)) {
      const npPath = at(path, 'nodePort');
      nodePort = portNumber(p.nodePort, npPath, problems);
      if (nodePort !== undefined && type === 'ClusterIP') {
        problem(problems, npPath, 'may only be set when spec.type is NodePort');
        nodePort = undefined;
      }
    }

    if (protocol === undefined || port === undefined || targetPort === undefined) return;
    const key = `${port}/${protocol}`;
    const first = ports.get(key);
    if (first !== undefined) problem(problems, path, `${key} is already served by spec.ports[${first}]`);
    else ports.set(key, i);
    if (nodePort !== undefined) {
      const nkey = `${nodePort}/${protocol}`;
      const firstNp = nodePorts.get(nkey);
      if (firstNp !== undefined) problem(problems, at(path, 'nodePort'), `${nkey} is already the node port of spec.ports[${firstNp}]`);
      else nodePorts.set(nkey, i);
    }
    out.push({
      name, protocol, port, targetPort,
      ...(nodePort !== undefined ? { nodePort } : {}),
      ...(p.appProtocol !== undefined && p.appProtocol !== '' ? { appProtocol: p.appProtocol } : {}),
    });
  });
  return out;
}

function lbAlgorithmOf(annotations: Record<string, string>, problems: Problems): LbAlgorithm | undefined {
  for (const k of Object.keys(annotations)) {
    if (k.startsWith(WAGGLE_SERVICE_ANNOTATION_PREFIX) && k !== LB_ALGORITHM_ANNOTATION) {
      problem(problems, at('metadata.annotations', k), `unknown Waggle annotation (known: ${LB_ALGORITHM_ANNOTATION})`);
    }
  }
  const read = (key: string): LbAlgorithm | undefined => {
    const v = annotations[key];
    return v === undefined ? undefined : oneOf(v, ['random', 'maglev'] as const, at('metadata.annotations', key), problems);
  };
  const waggle = read(LB_ALGORITHM_ANNOTATION);
  const cilium = read(CILIUM_LB_ALGORITHM_ANNOTATION);
  if (waggle !== undefined && cilium !== undefined && waggle !== cilium) {
    problem(problems, at('metadata.annotations', LB_ALGORITHM_ANNOTATION), `${JSON.stringify(waggle)} contradicts ${CILIUM_LB_ALGORITHM_ANNOTATION}: ${JSON.stringify(cilium)}; give one`);
  }
  return waggle ?? cilium;
}

function convertService(doc: unknown, problems: Problems): ServiceSpec | undefined {
  const svc = check(serviceSchema, doc, problems);
  if (!svc) return undefined;
  const before = problems.length;
  const { metadata, spec } = svc;

  checkLabels(metadata.labels ?? {}, 'metadata.labels', problems);
  const lbAlgorithm = lbAlgorithmOf(metadata.annotations ?? {}, problems);

  const rawType = spec.type ?? 'ClusterIP';
  const type = oneOf(rawType, ['ClusterIP', 'NodePort'] as const, 'spec.type', problems, REFUSED_TYPES);
  for (const [field, why] of Object.entries(UNSUPPORTED_SPEC_FIELDS)) {
    if (!isSet((spec as Record<string, unknown>)[field])) continue;
    if (type === undefined && (why === LOAD_BALANCER_ONLY || field === 'externalName')) continue; // the type's own problem says it
    problem(problems, at('spec', field), why);
  }

  const addresses = serviceAddresses(spec, type, problems);
  const ports = servicePorts(spec, type, addresses?.headless ?? false, problems);

  let selector: Record<string, string> | undefined;
  if (spec.selector !== undefined && Object.keys(spec.selector).length > 0) {
    checkLabels(spec.selector, 'spec.selector', problems);
    selector = { ...spec.selector };
  }

  const sessionAffinity = oneOf<SessionAffinity>(spec.sessionAffinity ?? 'None', ['None', 'ClientIP'], 'spec.sessionAffinity', problems);
  let timeout: number | undefined;
  if (sessionAffinity === 'ClientIP') {
    const t = spec.sessionAffinityConfig?.clientIP?.timeoutSeconds ?? DEFAULT_AFFINITY_TIMEOUT_SECONDS;
    if (typeof t === 'number' && Number.isInteger(t) && t >= 1 && t <= MAX_AFFINITY_TIMEOUT_SECONDS) timeout = t;
    else problem(problems, 'spec.sessionAffinityConfig.clientIP.timeoutSeconds', `must be a whole number of seconds 1-${MAX_AFFINITY_TIMEOUT_SECONDS}, got ${JSON.stringify(t)}`);
  } else if (sessionAffinity === 'None' && spec.sessionAffinityConfig !== undefined) {
    problem(problems, 'spec.sessionAffinityConfig', 'must not be set when spec.sessionAffinity is None');
  }

  const trafficPolicies = ['Cluster', 'Local'] as const;
  let externalTrafficPolicy: TrafficPolicy | undefined = 'Cluster';
  if (spec.externalTrafficPolicy !== undefined) {
    externalTrafficPolicy = oneOf(spec.externalTrafficPolicy, trafficPolicies, 'spec.externalTrafficPolicy', problems);
    if (type === 'ClusterIP') problem(problems, 'spec.externalTrafficPolicy', 'may only be set for NodePort services (it applies to traffic to node ports)');
  }
  const internalTrafficPolicy = oneOf(spec.internalTrafficPolicy ?? 'Cluster', trafficPolicies, 'spec.internalTrafficPolicy', problems);

  if (problems.length > before || !type || !addresses || !sessionAffinity || !externalTrafficPolicy || !internalTrafficPolicy) return undefined;
  return {
    kind: 'Service',
    name: metadata.name,
    namespace: metadata.namespace ?? 'default',
    ...(metadata.uid !== undefined ? { uid: metadata.uid } : {}),
    labels: { ...(metadata.labels ?? {}) },
    type,
    ...addresses,
    ports,
    ...(selector !== undefined ? { selector } : {}),
    sessionAffinity,
    ...(timeout !== undefined ? { sessionAffinityTimeoutSeconds: timeout } : {}),
    externalTrafficPolicy,
    internalTrafficPolicy,
    publishNotReadyAddresses: spec.publishNotReadyAddresses ?? false,
    ...(lbAlgorithm !== undefined ? { lbAlgorithm } : {}),
  };
}

// ---------------------------------------------------------------- EndpointSlice

const MAX_SLICE_ENDPOINTS = 1000;
const MAX_ENDPOINT_ADDRESSES = 100;
const MAX_SLICE_PORTS = 20000;

const nameRef = z.object({ name: z.string() }).strict();

const sliceEndpointSchema = z.object({
  addresses: z.array(z.string()),
  conditions: z.object({
    ready: z.boolean().optional(),
    serving: z.boolean().optional(),
    terminating: z.boolean().optional(),
  }).strict().optional(),
  hostname: z.string().optional(),
  targetRef: z.object({
    kind: z.string().optional(),
    namespace: z.string().optional(),
    name: z.string().optional(),
    uid: z.string().optional(),
    apiVersion: z.string().optional(),
    resourceVersion: z.string().optional(),
    fieldPath: z.string().optional(),
  }).strict().optional(),
  nodeName: z.string().optional(),
  zone: z.string().optional(),
  hints: z.object({ forZones: z.array(nameRef).optional(), forNodes: z.array(nameRef).optional() }).strict().optional(),
  deprecatedTopology: z.record(z.string()).optional(),
}).strict();

const slicePortSchema = z.object({
  name: z.string().optional(),
  protocol: z.string().optional(),
  port: z.unknown().optional(),
  appProtocol: z.string().optional(),
}).strict();

const sliceSchema = z.object({
  apiVersion: z.literal('discovery.k8s.io/v1'),
  kind: z.literal('EndpointSlice'),
  metadata: meta(dnsSubdomain),
  addressType: z.string(),
  endpoints: z.array(sliceEndpointSchema).optional(),
  ports: z.array(slicePortSchema).optional(),
}).strict();

/** Ranges the API server refuses as endpoint addresses (ValidateEndpointIP), with how to name them. */
const FORBIDDEN_ENDPOINT_RANGES: [Cidr, string][] = [
  [parseCidr('0.0.0.0/32'), 'the unspecified address'],
  [parseCidr('::/128'), 'the unspecified address'],
  [parseCidr('127.0.0.0/8'), 'in the loopback range 127.0.0.0/8'],
  [parseCidr('::1/128'), 'the loopback address'],
  [parseCidr('169.254.0.0/16'), 'in the link-local range 169.254.0.0/16'],
  [parseCidr('fe80::/10'), 'in the link-local range fe80::/10'],
  [parseCidr('224.0.0.0/24'), 'in the link-local multicast range 224.0.0.0/24'],
  [parseCidr('ff02::/16'), 'in the link-local multicast range ff02::/16'],
];

function endpointAddress(text: string, addressType: IpFamily, path: string, problems: Problems): string | undefined {
  const ip = ipOf(text);
  if (!ip || familyName(ip.family) !== addressType) {
    problem(problems, path, `must be an ${addressType} address (the slice's addressType), got ${JSON.stringify(text)}`);
    return undefined;
  }
  const bad = FORBIDDEN_ENDPOINT_RANGES.find(([c]) => cidrContains(c, ip.family, ip.value));
  if (bad) { problem(problems, path, `${ip.text} is ${bad[1]}: not a valid endpoint address`); return undefined; }
  return ip.text;
}

function convertSlice(doc: unknown, problems: Problems): EndpointSliceSpec | undefined {
  const s = check(sliceSchema, doc, problems);
  if (!s) return undefined;
  const before = problems.length;
  const labels = s.metadata.labels ?? {};
  checkLabels(labels, 'metadata.labels', problems);
  const serviceName = labels[SERVICE_NAME_LABEL];
  const labelPath = at('metadata.labels', SERVICE_NAME_LABEL);
  if (serviceName === undefined) problem(problems, labelPath, 'required: the name of the Service these are the endpoints of');
  else if (!DNS_1035.test(serviceName)) problem(problems, labelPath, `${DNS_1035_TEXT} (a Service name), got ${JSON.stringify(serviceName)}`);

  const addressType = oneOf(s.addressType, ['IPv4', 'IPv6'] as const, 'addressType', problems,
    { FQDN: 'FQDN is not supported (Waggle load-balances to IPv4 and IPv6 addresses)' });

  const inputEndpoints = s.endpoints ?? [];
  if (inputEndpoints.length > MAX_SLICE_ENDPOINTS) problem(problems, 'endpoints', `must have at most ${MAX_SLICE_ENDPOINTS} entries, got ${inputEndpoints.length}`);
  const endpoints: SliceEndpoint[] = [];
  inputEndpoints.forEach((e, i) => {
    const path = at('endpoints', i);
    const ap = at(path, 'addresses');
    if (e.addresses.length === 0) problem(problems, ap, 'must have at least one address');
    if (e.addresses.length > MAX_ENDPOINT_ADDRESSES) problem(problems, ap, `must have at most ${MAX_ENDPOINT_ADDRESSES} addresses, got ${e.addresses.length}`);
    const addresses = addressType === undefined ? [] : e.addresses
      .map((a, j) => endpointAddress(a, addressType, at(ap, j), problems))
      .filter((a): a is string => a !== undefined);
    if (e.hostname !== undefined && !DNS_LABEL.test(e.hostname)) problem(problems, at(path, 'hostname'), DNS_LABEL_TEXT);
    if (e.nodeName !== undefined) {
      const r = dnsSubdomain.safeParse(e.nodeName);
      if (!r.success) problem(problems, at(path, 'nodeName'), `${r.error.issues[0]?.message ?? 'invalid'} (a node name)`);
    }
    const ready = e.conditions?.ready ?? true;
    const conditions: EndpointConditions = {
      ready,
      serving: e.conditions?.serving ?? ready,
      terminating: e.conditions?.terminating ?? false,
    };
    let targetRef: ObjectReference | undefined;
    if (e.targetRef) {
      const { kind, namespace, name, uid } = e.targetRef;
      targetRef = {
        ...(kind !== undefined ? { kind } : {}), ...(namespace !== undefined ? { namespace } : {}),
        ...(name !== undefined ? { name } : {}), ...(uid !== undefined ? { uid } : {}),
      };
    }
    endpoints.push({
      addresses, conditions,
      ...(e.hostname !== undefined ? { hostname: e.hostname } : {}),
      ...(e.nodeName !== undefined ? { nodeName: e.nodeName } : {}),
      ...(e.zone !== undefined ? { zone: e.zone } : {}),
      ...(targetRef !== undefined ? { targetRef } : {}),
    });
  });

  const inputPorts = s.ports ?? [];
  if (inputPorts.length > MAX_SLICE_PORTS) problem(problems, 'ports', `must have at most ${MAX_SLICE_PORTS} entries, got ${inputPorts.length}`);
  const ports: SlicePort[] = [];
  const names = new Map<string, number>();
  inputPorts.forEach((p, i) => {
    const path = at('ports', i);
    const name = p.name ?? '';
    if (name !== '' && !DNS_LABEL.test(name)) problem(problems, at(path, 'name'), DNS_LABEL_TEXT);
    else if (names.has(name)) problem(problems, at(path, 'name'), `${JSON.stringify(name)} is already the name of ports[${names.get(name)}]`);
    else names.set(name, i);
    const protocol = protocolOf(p.protocol, at(path, 'protocol'), problems);
    let port: number | undefined;
    if (p.port === undefined) {
      problem(problems, at(path, 'port'), 'required: Waggle needs the backends\' port number (kube-proxy ignores a slice port without one, too)');
    } else {
      port = portNumber(p.port, at(path, 'port'), problems);
    }
    if (protocol === undefined || port === undefined) return;
    ports.push({ name, protocol, port, ...(p.appProtocol !== undefined && p.appProtocol !== '' ? { appProtocol: p.appProtocol } : {}) });
  });

  if (problems.length > before || addressType === undefined || serviceName === undefined) return undefined;
  return {
    kind: 'EndpointSlice',
    name: s.metadata.name,
    namespace: s.metadata.namespace ?? 'default',
    ...(s.metadata.uid !== undefined ? { uid: s.metadata.uid } : {}),
    serviceName,
    addressType,
    endpoints,
    ports,
  };
}

// ---------------------------------------------------------------- documents

/**
 * Converts one decoded document, recording its problems (field paths without
 * the document prefix, as the policy parser's converters do). Undefined when
 * it has any problem. For use inside a multi-document parser; see
 * `parseServiceDocument` for a single document.
 */
export function convertServiceDocument(doc: unknown, problems: Problems): ServiceResource | undefined {
  if (!isObject(doc)) {
    problem(problems, '', `must be a mapping with apiVersion and kind, got ${Array.isArray(doc) ? 'a list' : JSON.stringify(doc)}`);
    return undefined;
  }
  if (doc.kind === 'Service') return convertService(doc, problems);
  if (doc.kind === 'EndpointSlice') return convertSlice(doc, problems);
  problem(problems, 'kind', `must be Service (${SERVICE_API.Service}) or EndpointSlice (${SERVICE_API.EndpointSlice}), got ${JSON.stringify(doc.kind)}`);
  return undefined;
}

/**
 * Parses one decoded Kubernetes Service or EndpointSlice document. Throws
 * ManifestError listing every problem, each as
 * `svc.yaml document 2 (Service "web"): spec.ports[0].port: …`.
 * `where` is a DocumentLocation or the prefix text itself (e.g.
 * `svc.yaml document 1 item 3` for an item of a List).
 */
export function parseServiceDocument(doc: unknown, where: DocumentLocation | string): ServiceResource {
  const w = typeof where === 'string' ? where : `${where.source} document ${where.index + 1}`;
  const problems: Problems = [];
  const out = convertServiceDocument(doc, problems);
  if (!out) throw new ManifestError(problems.map((p) => `${describeDocument(doc, w)}: ${p}`));
  return out;
}

// ---------------------------------------------------------------- cross-document checks

export interface ServiceSetOptions {
  /** The agent's service CIDRs (one IPv4 and/or one IPv6): cluster IPs must lie inside. */
  serviceCidrs: readonly string[];
  /** First and last node port, inclusive (Kubernetes' default: 30000-32767). */
  nodePortRange: readonly [number, number];
  /**
   * Where a resource came from ("svc.yaml document 2"), for messages;
   * undefined for resources already stored (named `Service "ns/name"`).
   */
  locate?: (r: ServiceResource) => string | undefined;
}

export interface ServiceSetProblems {
  /** The set cannot be applied. */
  errors: string[];
  /** Allowed, but probably not what was meant (endpoints that nothing uses). */
  warnings: string[];
}

/**
 * The EndpointSlice port that gives the backend port of a Service port: the
 * one with the same name and protocol (kube-proxy's rule). With slices, the
 * slice port's number is the backend port and `targetPort` is not used (the
 * slice's writer resolved it).
 */
export function slicePortFor(port: Pick<ServicePort, 'name' | 'protocol'>, slice: Pick<EndpointSliceSpec, 'ports'>): SlicePort | undefined {
  return slice.ports.find((p) => p.name === port.name && p.protocol === port.protocol);
}

const portText = (p: Pick<ServicePort, 'name' | 'port' | 'protocol'>): string => `${p.name === '' ? '' : `${JSON.stringify(p.name)} `}${p.port}/${p.protocol}`;

/**
 * Checks a whole set of services and slices, as the agent would hold them
 * after an apply (stored ones not replaced, plus the new ones; earlier
 * entries win, and a conflict is reported on the later one), against each
 * other and the agent's configuration:
 *
 * errors: the same resource twice; a cluster IP outside the service CIDRs
 * (or the CIDR's network or IPv4 broadcast address), or used by two
 * services; a requested IP family without a service CIDR (except the second
 * family of PreferDualStack); a node port outside the range, or used by two
 * services (a node port belongs to one service, whatever the protocol, as in
 * Kubernetes; one service may use it for TCP and UDP); a named targetPort on
 * a service with a selector and no EndpointSlice to resolve it (local
 * endpoints have no named ports).
 *
 * warnings: a slice whose Service is not in the set; a slice of the other IP
 * family than the service has; a slice port that matches no service port; a
 * service port that none of its slices has (it has no backends). Headless
 * services get no port warnings (nothing is load-balanced).
 *
 * Throws a plain Error when `opts.serviceCidrs` is not a list of CIDRs (a
 * configuration bug, not bad input).
 */
export function checkServiceSet(services: readonly ServiceSpec[], slices: readonly EndpointSliceSpec[], opts: ServiceSetOptions): ServiceSetProblems {
  const errors: string[] = [];
  const warnings: string[] = [];
  const cidrs = opts.serviceCidrs.map((c) => parseCidr(c));
  const cidrText = cidrs.map((c) => c.text).join(', ') || 'none';
  const [npFirst, npLast] = opts.nodePortRange;

  const locate = (r: ServiceResource): string | undefined => opts.locate?.(r);
  const subject = (r: ServiceResource): string => {
    const where = locate(r);
    return where === undefined ? `${r.kind} "${r.namespace}/${r.name}"` : `${where} (${r.kind} ${JSON.stringify(r.name)})`;
  };
  const other = (r: ServiceResource): string => {
    const where = locate(r);
    return `${r.kind} "${r.namespace}/${r.name}"${where === undefined ? '' : ` (${where})`}`;
  };
  const say = (list: string[], r: ServiceResource, path: string, message: string): void => {
    list.push(`${subject(r)}: ${path === '' ? '' : `${path}: `}${message}`);
  };

  const unique = <T extends ServiceResource>(items: readonly T[]): T[] => {
    const seen = new Map<string, T>();
    const out: T[] = [];
    for (const r of items) {
      const first = seen.get(serviceResourceKey(r));
      if (first) { say(errors, r, '', `defines the same ${r.kind} as ${other(first)}`); continue; }
      seen.set(serviceResourceKey(r), r);
      out.push(r);
    }
    return out;
  };
  const svcs = unique(services);
  const sls = unique(slices);

  const slicesOf = new Map<string, EndpointSliceSpec[]>();
  for (const s of sls) {
    const key = `${s.namespace}/${s.serviceName}`;
    slicesOf.set(key, [...(slicesOf.get(key) ?? []), s]);
  }

  const ipOwner = new Map<string, ServiceSpec>();
  const nodePortOwner = new Map<number, { svc: ServiceSpec; index: number }>();
  for (const svc of svcs) {
    const ipPath = (i: number): string => (i === 0 ? 'spec.clusterIP' : at('spec.clusterIPs', i));
    if (!svc.headless) {
      svc.ipFamilies.forEach((f, i) => {
        if (i === 1 && svc.ipFamilyPolicy === 'PreferDualStack') return;
        if (!cidrs.some((c) => familyName(c.family) === f)) {
          say(errors, svc, 'spec.ipFamilies', `${f} is requested${svc.ipFamilyPolicy === 'RequireDualStack' ? ' (RequireDualStack)' : ''} but no service CIDR is ${f} (service CIDRs: ${cidrText})`);
        }
      });
    }
    svc.clusterIPs.forEach((text, i) => {
      const ip = parseAddress(text);
      const cidr = cidrs.find((c) => cidrContains(c, ip.family, ip.value));
      if (!cidr) { say(errors, svc, ipPath(i), `${text} is outside the service CIDRs (${cidrText})`); return; }
      const last = cidr.base + cidrSize(cidr) - 1n;
      if (ip.value === cidr.base && cidrSize(cidr) > 2n) { say(errors, svc, ipPath(i), `${text} is the network address of ${cidr.text} (reserved)`); return; }
      if (cidr.family === 4 && ip.value === last && cidrSize(cidr) > 2n) { say(errors, svc, ipPath(i), `${text} is the broadcast address of ${cidr.text} (reserved)`); return; }
      const owner = ipOwner.get(text);
      if (owner) say(errors, svc, ipPath(i), `${text} is already the cluster IP of ${other(owner)}`);
      else ipOwner.set(text, svc);
    });

    const key = `${svc.namespace}/${svc.name}`;
    const own = slicesOf.get(key) ?? [];
    svc.ports.forEach((p, i) => {
      const path = at('spec.ports', i);
      if (p.nodePort !== undefined) {
        if (p.nodePort < npFirst || p.nodePort > npLast) say(errors, svc, at(path, 'nodePort'), `${p.nodePort} is outside the node-port range ${npFirst}-${npLast}`);
        else {
          const owner = nodePortOwner.get(p.nodePort);
          if (owner && owner.svc !== svc) say(errors, svc, at(path, 'nodePort'), `${p.nodePort} is already the node port of ${other(owner.svc)} (spec.ports[${owner.index}])`);
          else if (!owner) nodePortOwner.set(p.nodePort, { svc, index: i });
        }
      }
      if (typeof p.targetPort === 'string' && svc.selector !== undefined && own.length === 0) {
        say(errors, svc, at(path, 'targetPort'), `the named port ${JSON.stringify(p.targetPort)} can only be resolved by an EndpointSlice of this service, and there is none (endpoints selected by labels have no named ports); give the port number`);
      }
      if (!svc.headless && own.length > 0 && !own.some((s) => slicePortFor(p, s))) {
        say(warnings, svc, path, `${portText(p)}: none of its EndpointSlices has a port named ${JSON.stringify(p.name)} (${p.protocol}), so it has no backends`);
      }
    });
  }

  const byKey = new Map(svcs.map((s) => [`${s.namespace}/${s.name}`, s]));
  for (const s of sls) {
    const svc = byKey.get(`${s.namespace}/${s.serviceName}`);
    if (!svc) {
      say(warnings, s, '', `no Service ${JSON.stringify(s.serviceName)} in namespace ${JSON.stringify(s.namespace)}: its endpoints are unused until there is one`);
      continue;
    }
    if (svc.headless) continue;
    if (!svc.ipFamilies.includes(s.addressType)) {
      say(warnings, s, 'addressType', `${s.addressType}, but ${other(svc)} has only ${svc.ipFamilies.join(', ')}: its endpoints are unused`);
      continue;
    }
    s.ports.forEach((p, i) => {
      if (!svc.ports.some((sp) => slicePortFor(sp, { ports: [p] }))) {
        say(warnings, s, at('ports', i), `${other(svc)} has no port named ${JSON.stringify(p.name)} (${p.protocol}): ignored`);
      }
    });
  }
  return { errors, warnings };
}
