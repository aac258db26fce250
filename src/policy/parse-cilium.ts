/**
 * Cilium `cilium.io/v2` CiliumNetworkPolicy and CiliumClusterwideNetworkPolicy
 * → internal policy model, with Cilium's own validation rules (see Cilium's
 * pkg/policy/api/rule_validation.go and pkg/k8s/apis/cilium.io/utils).
 */
import { z } from 'zod';
import { labelKeyProblem } from '../endpoint/labels.js';
import {
  at, check, checkEndPort, cidrPeer, convertSelector, dnsSubdomain, inNamespace, isPortName, labelSelectorSchema, metadataSchema,
  parseCidrAt, problem, type KeyMapper, type Problems,
} from './parse-k8s.js';
import {
  NAMESPACE_LABEL, NAMESPACE_LABELS_PREFIX,
  type Direction, type Entity, type IcmpRule, type L7Rules, type LabelSelector, type Peer, type Policy, type PolicyRule, type PortRule,
} from './types.js';

const ENTITIES: readonly Entity[] = ['world', 'host', 'cluster', 'all', 'remote-node', 'health', 'unmanaged', 'init', 'kube-apiserver', 'ingress'];

/** Cilium's ICMP type names (pkg/policy/api/icmp.go). */
const ICMP_TYPES: Record<'IPv4' | 'IPv6', Record<string, number>> = {
  IPv4: {
    EchoReply: 0, DestinationUnreachable: 3, Redirect: 5, Echo: 8, EchoRequest: 8, RouterAdvertisement: 9, RouterSelection: 10,
    RouterSolicitation: 10, TimeExceeded: 11, ParameterProblem: 12, Timestamp: 13, TimestampReply: 14, Photuris: 40,
    ExtendedEchoRequest: 42, ExtendedEchoReply: 43,
  },
  IPv6: {
    DestinationUnreachable: 1, PacketTooBig: 2, TimeExceeded: 3, ParameterProblem: 4, EchoRequest: 128, EchoReply: 129,
    MulticastListenerQuery: 130, MulticastListenerReport: 131, MulticastListenerDone: 132, RouterSolicitation: 133,
    RouterAdvertisement: 134, NeighborSolicitation: 135, NeighborAdvertisement: 136, RedirectMessage: 137, RouterRenumbering: 138,
    ICMPNodeInformationQuery: 139, ICMPNodeInformationResponse: 140, InverseNeighborDiscoverySolicitation: 141,
    InverseNeighborDiscoveryAdvertisement: 142, HomeAgentAddressDiscoveryRequest: 144, HomeAgentAddressDiscoveryReply: 145,
    MobilePrefixSolicitation: 146, MobilePrefixAdvertisement: 147, DuplicateAddressRequestCodeSuffix: 157,
    DuplicateAddressConfirmationCodeSuffix: 158, ExtendedEchoRequest: 160, ExtendedEchoReply: 161,
  },
};

// Fields Cilium has that Waggle does not implement: accepted by the schema so the message can say so.
const later = z.unknown().optional();

const fqdnSchema = z.object({ matchName: z.string().optional(), matchPattern: z.string().optional() }).strict();

const httpSchema = z.object({
  method: z.string().optional(),
  path: z.string().optional(),
  host: z.string().optional(),
  headers: z.array(z.string()).optional(),
  headerMatches: z.array(z.object({
    name: z.string(),
    value: z.string().optional(),
    mismatch: z.enum(['LOG', 'ADD', 'DELETE', 'REPLACE']).optional(),
    secret: z.object({ namespace: z.string().optional(), name: z.string() }).strict().optional(),
  }).strict()).optional(),
}).strict();

const portRuleSchema = z.object({
  ports: z.array(z.object({ port: z.unknown().optional(), endPort: z.number().int().optional(), protocol: z.string().optional() }).strict())
    .max(40, 'at most 40 ports').optional(),
  rules: z.object({ http: z.array(httpSchema).optional(), dns: z.array(fqdnSchema).optional(), kafka: later, l7proto: later, l7: later }).strict().optional(),
  serverNames: later, listener: later, terminatingTLS: later, originatingTLS: later,
}).strict();

const icmpSchema = z.object({
  fields: z.array(z.object({ family: z.enum(['IPv4', 'IPv6']).optional(), type: z.unknown() }).strict()).max(40, 'at most 40 types').optional(),
}).strict();

const cidrRuleSchema = z.object({ cidr: z.string().optional(), except: z.array(z.string()).optional(), cidrGroupRef: later, cidrGroupSelector: later }).strict();

const l4 = { toPorts: z.array(portRuleSchema).optional(), icmps: z.array(icmpSchema).optional() };
const ingressSchema = z.object({
  fromEndpoints: z.array(labelSelectorSchema).optional(), fromEntities: z.array(z.string()).optional(),
  fromCIDR: z.array(z.string()).optional(), fromCIDRSet: z.array(cidrRuleSchema).optional(),
  fromRequires: later, fromNodes: later, fromGroups: later, authentication: later, ...l4,
}).strict();
const egressSchema = z.object({
  toEndpoints: z.array(labelSelectorSchema).optional(), toEntities: z.array(z.string()).optional(),
  toCIDR: z.array(z.string()).optional(), toCIDRSet: z.array(cidrRuleSchema).optional(), toFQDNs: z.array(fqdnSchema).optional(),
  toRequires: later, toNodes: later, toGroups: later, toServices: later, authentication: later, ...l4,
}).strict();
type RuleInput = z.infer<typeof ingressSchema> & z.infer<typeof egressSchema>;

const specSchema = z.object({
  endpointSelector: labelSelectorSchema.optional(),
  nodeSelector: later,
  ingress: z.array(ingressSchema).optional(),
  ingressDeny: z.array(ingressSchema).optional(),
  egress: z.array(egressSchema).optional(),
  egressDeny: z.array(egressSchema).optional(),
  enableDefaultDeny: z.object({ ingress: z.boolean().optional(), egress: z.boolean().optional() }).strict().optional(),
  description: z.string().optional(),
  labels: z.array(z.object({ key: z.string(), value: z.string().optional(), source: z.string().optional() }).strict()).optional(),
}).strict();
type SpecInput = z.infer<typeof specSchema>;

const ciliumPolicySchema = z.object({
  apiVersion: z.literal('cilium.io/v2'),
  kind: z.enum(['CiliumNetworkPolicy', 'CiliumClusterwideNetworkPolicy']),
  metadata: metadataSchema(dnsSubdomain),
  spec: specSchema.optional(),
  specs: z.array(specSchema).optional(),
  status: z.unknown().optional(),
}).strict();

const UNSUPPORTED: Record<string, string> = {
  fromRequires: 'fromRequires is not supported',
  toRequires: 'toRequires is not supported',
  fromNodes: 'fromNodes (node selectors) is not supported',
  toNodes: 'toNodes (node selectors) is not supported',
  fromGroups: 'fromGroups (cloud provider groups) is not supported',
  toGroups: 'toGroups (cloud provider groups) is not supported',
  toServices: 'toServices is not supported; select the service\'s endpoints with toEndpoints',
  authentication: 'authentication (mutual authentication) is not supported',
};

/**
 * Cilium selector keys: an optional source prefix `k8s:` or `any:` (removed);
 * `reserved:` labels only through entities. Namespace-label keys
 * (`io.cilium.k8s.namespace.labels.K`) are validated on K.
 */
const ciliumKey: KeyMapper = (key, path, problems) => {
  let k = key;
  const colon = key.indexOf(':');
  if (colon >= 0) {
    const source = key.slice(0, colon);
    k = key.slice(colon + 1);
    if (source === 'reserved') {
      problem(problems, path, `reserved labels (${JSON.stringify(key)}) cannot be used in selectors; use fromEntities/toEntities (e.g. "${k}")`);
      return undefined;
    }
    if (source !== 'k8s' && source !== 'any') {
      problem(problems, path, `label source ${JSON.stringify(source)} is not supported (use k8s: or any:, or no prefix)`);
      return undefined;
    }
  }
  const p = labelKeyProblem(k.startsWith(NAMESPACE_LABELS_PREFIX) ? k.slice(NAMESPACE_LABELS_PREFIX.length) : k);
  if (p) { problem(problems, path, p); return undefined; }
  return k;
};

/**
 * Cilium scopes a peer selector of a namespaced policy to the policy's
 * namespace unless it names a namespace or namespace labels itself.
 */
function scopePeer(sel: LabelSelector, ns: string | undefined): LabelSelector {
  if (ns === undefined || sel.requirements.some((r) => r.key === NAMESPACE_LABEL || r.key.startsWith(NAMESPACE_LABELS_PREFIX))) return sel;
  return { requirements: [...sel.requirements, inNamespace(ns)] };
}

function portNumber(v: unknown, path: string, problems: Problems): number | undefined {
  const n = typeof v === 'string' && /^\d{1,5}$/.test(v) ? Number(v) : v;
  if (typeof n === 'number' && Number.isInteger(n) && n >= 0 && n <= 65535) return n;
  if (v === undefined || v === '') problem(problems, path, 'required (a port number, or "0" for every port)');
  else if (typeof v === 'string' && isPortName(v)) problem(problems, path, `named ports are not supported (got ${JSON.stringify(v)}); give the port number`);
  else problem(problems, path, `must be a port number 0-65535 (0: every port), got ${JSON.stringify(v)}`);
  return undefined;
}

function icmpType(v: unknown, family: 'IPv4' | 'IPv6', path: string, problems: Problems): number | undefined {
  const n = typeof v === 'string' && /^\d{1,3}$/.test(v) ? Number(v) : v;
  if (typeof n === 'number' && Number.isInteger(n) && n >= 0 && n <= 255) return n;
  if (typeof v === 'string' && Object.hasOwn(ICMP_TYPES[family], v)) return ICMP_TYPES[family][v];
  problem(problems, path, v === undefined ? 'required' : typeof v === 'string' && !/^\d+$/.test(v)
    ? `unknown ${family === 'IPv4' ? 'ICMP' : 'ICMPv6'} type name ${JSON.stringify(v)} (e.g. ${family === 'IPv4' ? 'EchoRequest, EchoReply, DestinationUnreachable, TimeExceeded' : 'EchoRequest, EchoReply, PacketTooBig, NeighborSolicitation'})`
    : `must be an ICMP type 0-255 or a type name, got ${JSON.stringify(v)}`);
  return undefined;
}

// Cilium's matchName / matchPattern patterns, written without nested quantifiers.
const MATCH_NAME = /^[-a-zA-Z0-9_]+(\.[-a-zA-Z0-9_]+)*\.?$/;
const MATCH_PATTERN = /^[-a-zA-Z0-9_*]+(\.[-a-zA-Z0-9_*]+)*\.?$/;

function checkFqdn(s: z.infer<typeof fqdnSchema>, path: string, problems: Problems): void {
  if ((s.matchName === undefined) === (s.matchPattern === undefined)) {
    problem(problems, path, 'must have exactly one of matchName and matchPattern');
  } else if (s.matchName !== undefined && (s.matchName.length > 255 || !MATCH_NAME.test(s.matchName))) {
    problem(problems, at(path, 'matchName'), `must be a DNS name, got ${JSON.stringify(s.matchName)}`);
  } else if (s.matchPattern !== undefined && (s.matchPattern.length > 255 || !MATCH_PATTERN.test(s.matchPattern))) {
    problem(problems, at(path, 'matchPattern'), `must be a DNS name pattern (letters, digits, -, _, * and .), got ${JSON.stringify(s.matchPattern)}`);
  }
}

function checkHttp(h: z.infer<typeof httpSchema>, path: string, problems: Problems): void {
  for (const f of ['method', 'path'] as const) {
    const v = h[f];
    if (v === undefined) continue;
    try { new RegExp(v); } catch { problem(problems, at(path, f), `must be a regular expression, got ${JSON.stringify(v)}`); }
  }
  (h.headerMatches ?? []).forEach((m, i) => {
    if (m.name === '') problem(problems, at(at(at(path, 'headerMatches'), i), 'name'), 'must not be empty');
    if (m.secret && m.secret.name === '') problem(problems, at(at(at(at(path, 'headerMatches'), i), 'secret'), 'name'), 'must not be empty');
  });
}

interface RuleContext {
  kind: Policy['kind'];
  /** The policy's namespace; undefined for clusterwide policies. */
  ns: string | undefined;
  problems: Problems;
  notEnforced: string[];
}

function convertRule(r: RuleInput, path: string, direction: Direction, deny: boolean, index: number, ctx: RuleContext): PolicyRule {
  const { problems } = ctx;
  const from = direction === 'ingress' ? 'from' : 'to';
  for (const [field, message] of Object.entries(UNSUPPORTED)) {
    if (r[field as keyof RuleInput] !== undefined) problem(problems, at(path, field), message);
  }
  const fqdns = r.toFQDNs ?? [];
  if (deny && fqdns.length > 0) problem(problems, at(path, 'toFQDNs'), 'deny rules cannot use toFQDNs');

  const l3 = {
    [`${from}Endpoints`]: (r.fromEndpoints ?? r.toEndpoints ?? []).length,
    [`${from}Entities`]: (r.fromEntities ?? r.toEntities ?? []).length,
    [`${from}CIDR`]: (r.fromCIDR ?? r.toCIDR ?? []).length,
    [`${from}CIDRSet`]: (r.fromCIDRSet ?? r.toCIDRSet ?? []).length,
    toFQDNs: fqdns.length,
  };
  const used = Object.keys(l3).filter((k) => (l3[k] ?? 0) > 0);
  if (used.length > 1) problem(problems, path, `combining ${used.join(' and ')} in one rule is not supported (as in Cilium); use separate rules`);

  const peers: Peer[] = [];
  (r.fromEndpoints ?? r.toEndpoints ?? []).forEach((s, i) => {
    const p = at(at(path, `${from}Endpoints`), i);
    peers.push({ kind: 'endpoints', selector: scopePeer(convertSelector(s, p, problems, ciliumKey), ctx.ns) });
  });
  (r.fromEntities ?? r.toEntities ?? []).forEach((e, i) => {
    const p = at(at(path, `${from}Entities`), i);
    if ((ENTITIES as readonly string[]).includes(e)) peers.push({ kind: 'entity', entity: e as Entity });
    else if (e === 'world-ipv4' || e === 'world-ipv6') problem(problems, p, `entity ${e} is not supported yet; use world`);
    else if (e !== 'none') problem(problems, p, `unknown entity ${JSON.stringify(e)} (one of ${[...ENTITIES, 'none'].join(', ')})`);
  });
  (r.fromCIDR ?? r.toCIDR ?? []).forEach((c, i) => {
    const cidr = parseCidrAt(c, at(at(path, `${from}CIDR`), i), problems, true);
    if (cidr) peers.push({ kind: 'cidr', cidr: cidr.text, except: [] });
  });
  (r.fromCIDRSet ?? r.toCIDRSet ?? []).forEach((c, i) => {
    const p = at(at(path, `${from}CIDRSet`), i);
    if (c.cidrGroupRef !== undefined || c.cidrGroupSelector !== undefined) {
      problem(problems, p, 'cidrGroupRef and cidrGroupSelector (CiliumCIDRGroup) are not supported; give cidr');
    } else if (c.cidr === undefined) {
      problem(problems, at(p, 'cidr'), 'required');
    } else {
      const peer = cidrPeer(c.cidr, c.except ?? [], p, 'cidr', problems, false);
      if (peer) peers.push(peer);
    }
  });
  fqdns.forEach((f, i) => checkFqdn(f, at(at(path, 'toFQDNs'), i), problems));

  const l7: Required<L7Rules> = { http: [], dns: [], fqdns: [...fqdns] };
  const ports: PortRule[] = [];
  const toPorts = r.toPorts ?? [];
  toPorts.forEach((pr, i) => {
    const pp = at(at(path, 'toPorts'), i);
    for (const f of ['serverNames', 'listener', 'terminatingTLS', 'originatingTLS'] as const) {
      if (pr[f] !== undefined) problem(problems, at(pp, f), `${f} is not supported`);
    }
    const list = pr.ports ?? [];
    if (list.length === 0) problem(problems, at(pp, 'ports'), 'must list at least one port');
    const rules = pr.rules;
    const http = rules?.http;
    const dns = rules?.dns;
    list.forEach((p, j) => {
      const path2 = at(at(pp, 'ports'), j);
      const protocol = p.protocol ?? 'ANY';
      if (protocol === 'ICMP' || protocol === 'ICMPv6') problem(problems, at(path2, 'protocol'), 'use icmps for ICMP rules');
      else if (!['TCP', 'UDP', 'SCTP', 'ANY'].includes(protocol)) problem(problems, at(path2, 'protocol'), `must be one of TCP, UDP, SCTP, ANY, got ${JSON.stringify(protocol)}`);
      const port = portNumber(p.port, at(path2, 'port'), problems);
      if (port === undefined) return;
      if (http && protocol !== 'TCP') problem(problems, at(path2, 'protocol'), `HTTP rules only apply to TCP (not ${protocol}); set protocol: TCP`);
      if ((http || dns) && port === 0) problem(problems, at(path2, 'port'), 'L7 rules cannot be used with port 0');
      const proto = protocol as PortRule['protocol'];
      if (port === 0) {
        if (p.endPort !== undefined && p.endPort !== 0) problem(problems, at(path2, 'endPort'), 'needs a non-zero port');
        ports.push({ protocol: proto });
        return;
      }
      const endPort = checkEndPort(p.endPort, port, path2, problems);
      if (dns && endPort !== undefined && endPort > port) problem(problems, at(path2, 'endPort'), 'DNS rules do not support port ranges');
      ports.push(endPort === undefined ? { protocol: proto, port } : { protocol: proto, port, endPort });
    });
    if (!rules) return;
    if (deny) { problem(problems, at(pp, 'rules'), 'deny rules cannot have L7 rules'); return; }
    for (const f of ['kafka', 'l7proto', 'l7'] as const) {
      if (rules[f] !== undefined) problem(problems, at(at(pp, 'rules'), f), `${f} rules are not supported`);
    }
    if (http && dns) problem(problems, at(pp, 'rules'), 'must have only one kind of L7 rules (http or dns)');
    if (dns && direction === 'ingress') problem(problems, at(at(pp, 'rules'), 'dns'), 'DNS rules are not allowed on ingress');
    (http ?? []).forEach((h, j) => { checkHttp(h, at(at(at(pp, 'rules'), 'http'), j), problems); l7.http.push(h); });
    (dns ?? []).forEach((d, j) => { checkFqdn(d, at(at(at(pp, 'rules'), 'dns'), j), problems); l7.dns.push(d); });
  });

  const icmps: IcmpRule[] = [];
  (r.icmps ?? []).forEach((ir, i) => {
    const ip = at(at(path, 'icmps'), i);
    const fields = ir.fields ?? [];
    if (fields.length === 0) problem(problems, at(ip, 'fields'), 'must list at least one ICMP type');
    fields.forEach((f, j) => {
      const family = f.family ?? 'IPv4';
      const type = icmpType(f.type, family, at(at(at(ip, 'fields'), j), 'type'), problems);
      if (type !== undefined) icmps.push({ family, type });
    });
  });
  if (toPorts.length > 0 && (r.icmps ?? []).length > 0) problem(problems, path, 'toPorts and icmps cannot be combined in one rule (as in Cilium); use separate rules');

  // No L3 field at all: an L4-only rule (any peer) when it has ports or ICMP types; `- {}` matches nothing.
  const anyPeer = used.length === 0 && (toPorts.length > 0 || icmps.length > 0);
  const rule: PolicyRule = { direction, action: deny ? 'deny' : 'allow', peers: anyPeer ? [{ kind: 'any' }] : peers, ports, icmps, index };
  const name = `${direction} rule ${index}`;
  if (l7.http.length > 0) ctx.notEnforced.push(`${name}: HTTP rules are parsed but not yet enforced (the L4 part of the rule is enforced)`);
  if (l7.dns.length > 0) ctx.notEnforced.push(`${name}: DNS rules are parsed but not yet enforced (the L4 part of the rule is enforced)`);
  if (l7.fqdns.length > 0) ctx.notEnforced.push(`${name}: toFQDNs are parsed but not yet enforced (the rule allows no traffic until they are)`);
  const present = Object.fromEntries(Object.entries(l7).filter(([, v]) => v.length > 0));
  if (Object.keys(present).length > 0) rule.l7 = present;
  return rule;
}

function convertSubject(spec: SpecInput, path: string, ctx: RuleContext): LabelSelector | undefined {
  const { problems } = ctx;
  if (spec.nodeSelector !== undefined) {
    problem(problems, at(path, 'nodeSelector'), 'nodeSelector (host policies) is not supported');
    return undefined;
  }
  if (!spec.endpointSelector) {
    problem(problems, at(path, 'endpointSelector'), 'required');
    return undefined;
  }
  const sel = convertSelector(spec.endpointSelector, at(path, 'endpointSelector'), problems, ciliumKey);
  if (ctx.ns === undefined) return sel;
  const own = inNamespace(ctx.ns);
  const other = sel.requirements.filter((r) => r.key === NAMESPACE_LABEL && JSON.stringify(r) !== JSON.stringify(own));
  if (other.length > 0) {
    problem(problems, at(path, 'endpointSelector'), `a ${ctx.kind} only selects endpoints in its own namespace ${JSON.stringify(ctx.ns)}; remove the ${NAMESPACE_LABEL} requirement`);
  }
  return { requirements: [...sel.requirements.filter((r) => r.key !== NAMESPACE_LABEL), own] };
}

/** Converts a CiliumNetworkPolicy or CiliumClusterwideNetworkPolicy (`cilium.io/v2`); undefined when it has problems. */
export function convertCiliumPolicy(doc: unknown, problems: Problems): Omit<Policy, 'source'> | undefined {
  const cp = check(ciliumPolicySchema, doc, problems);
  if (!cp) return undefined;
  const before = problems.length;
  const clusterwide = cp.kind === 'CiliumClusterwideNetworkPolicy';
  if (clusterwide && cp.metadata.namespace !== undefined) {
    problem(problems, 'metadata.namespace', 'must not be set: a CiliumClusterwideNetworkPolicy is not namespaced');
  }
  const ns = clusterwide ? undefined : cp.metadata.namespace ?? 'default';
  const ctx: RuleContext = { kind: cp.kind, ns, problems, notEnforced: [] };

  const specs: [SpecInput, string][] = [];
  if (cp.spec) specs.push([cp.spec, 'spec']);
  (cp.specs ?? []).forEach((s, i) => specs.push([s, at('specs', i)]));
  if (specs.length === 0) problem(problems, '', 'spec or specs is required');

  const rules: PolicyRule[] = [];
  const defaultDeny = { ingress: false, egress: false };
  let subject: LabelSelector | undefined;
  let index = 0;
  for (const [spec, path] of specs) {
    const sel = convertSubject(spec, path, ctx);
    if (sel && subject && JSON.stringify(sel) !== JSON.stringify(subject)) {
      problem(problems, at(path, 'endpointSelector'), 'specs with different endpointSelectors are not supported yet; split them into separate policies');
    }
    subject ??= sel;
    const groups = [
      ['ingress', 'ingress', false], ['ingressDeny', 'ingress', true], ['egress', 'egress', false], ['egressDeny', 'egress', true],
    ] as const;
    if (groups.every(([f]) => (spec[f] ?? []).length === 0)) {
      problem(problems, path, 'must have at least one of ingress, ingressDeny, egress, egressDeny (as in Cilium)');
    }
    for (const [field, direction, deny] of groups) {
      (spec[field] ?? []).forEach((r, i) => rules.push(convertRule(r, at(at(path, field), i), direction, deny, index++, ctx)));
    }
    // Cilium: a spec with rules in a direction puts its subjects in default deny there unless enableDefaultDeny says false.
    for (const direction of ['ingress', 'egress'] as const) {
      const has = (spec[direction] ?? []).length + (spec[`${direction}Deny`] ?? []).length > 0;
      if (has && spec.enableDefaultDeny?.[direction] !== false) defaultDeny[direction] = true;
    }
  }
  if (problems.length > before || !subject) return undefined;
  return {
    kind: cp.kind,
    name: cp.metadata.name,
    ...(ns === undefined ? {} : { namespace: ns }),
    subjects: [subject],
    defaultDeny,
    rules,
    notEnforced: ctx.notEnforced,
  };
}
