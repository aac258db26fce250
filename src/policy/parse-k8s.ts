/**
 * Kubernetes `networking.k8s.io/v1` NetworkPolicy → internal policy model, plus
 * the pieces shared with parse-cilium.ts: problem paths, zod issue wording,
 * label selectors, CIDRs and object metadata.
 */
import { z } from 'zod';
import { labelKeyProblem, labelValueProblem } from '../endpoint/labels.js';
import { cidrContains, parseCidr, type Cidr } from '../ipam/cidr.js';
import {
  NAMESPACE_LABEL, NAMESPACE_LABELS_PREFIX,
  type LabelSelector, type Peer, type Policy, type PolicyRule, type PortRule, type SelectorRequirement,
} from './types.js';

// ---------------------------------------------------------------- shared

/** Problems found in one document, each `field.path: what is wrong`. */
export type Problems = string[];

/** Appends `key` to a field path: `a.b`, `a[0]`, `a["example.com/x"]`. */
export function at(path: string, key: string | number): string {
  if (typeof key === 'number') return `${path}[${key}]`;
  if (!/^[A-Za-z_$][\w$]*$/.test(key)) return `${path}[${JSON.stringify(key)}]`;
  return path === '' ? key : `${path}.${key}`;
}

export function problem(problems: Problems, path: string, message: string): void {
  problems.push(path === '' ? message : `${path}: ${message}`);
}

const article = (t: string): string => (/^[aeiou]/.test(t) ? `an ${t}` : `a ${t}`);

function issueProblems(issue: z.ZodIssue): string[] {
  const path = issue.path.reduce<string>((p, k) => at(p, k), '');
  const with_ = (m: string): string => (path === '' ? m : `${path}: ${m}`);
  switch (issue.code) {
    case z.ZodIssueCode.unrecognized_keys:
      return issue.keys.map((k) => `${at(path, k)}: unknown field`);
    case z.ZodIssueCode.invalid_type:
      if (issue.received === 'undefined') return [with_('required')];
      return [with_(`must be ${article(issue.expected)}, got ${issue.received}${issue.expected === 'string' && issue.received !== 'object' && issue.received !== 'array' ? ' (quote the value)' : ''}`)];
    case z.ZodIssueCode.invalid_enum_value:
      return [with_(`must be one of ${issue.options.join(', ')}, got ${JSON.stringify(issue.received)}`)];
    case z.ZodIssueCode.invalid_literal:
      return [with_(`must be ${JSON.stringify(issue.expected)}, got ${JSON.stringify(issue.received)}`)];
    default:
      return [with_(issue.message)];
  }
}

/** JSON `null` is an absent field (as in Kubernetes); returns a copy without null-valued object fields. */
export function withoutNulls(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(withoutNulls);
  if (v !== null && typeof v === 'object') {
    return Object.fromEntries(Object.entries(v).filter(([, x]) => x !== null).map(([k, x]) => [k, withoutNulls(x)]));
  }
  return v;
}

/** Validates the shape of `value`; on failure records every issue and returns undefined. */
export function check<T>(schema: z.ZodType<T, z.ZodTypeDef, unknown>, value: unknown, problems: Problems): T | undefined {
  const r = schema.safeParse(withoutNulls(value));
  if (r.success) return r.data;
  problems.push(...r.error.issues.flatMap(issueProblems));
  return undefined;
}

const DNS_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
const DNS_LABEL = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/;

export const dnsSubdomain = z.string().max(253, 'must be at most 253 characters')
  .regex(DNS_SUBDOMAIN, 'must be a DNS subdomain: lower-case letters, digits, - and ., starting and ending with a letter or digit');
export const dnsLabel = z.string()
  .regex(DNS_LABEL, 'must be a DNS label: 1-63 lower-case letters, digits and -, starting and ending with a letter or digit');

/** Object metadata: what the parser reads plus the fields the API server fills in (accepted and ignored). */
export function metadataSchema(name: z.ZodString) {
  return z.object({
    name,
    namespace: dnsLabel.optional(),
    labels: z.record(z.string()).optional(),
    annotations: z.record(z.string()).optional(),
    uid: z.string().optional(),
    resourceVersion: z.string().optional(),
    generation: z.number().optional(),
    creationTimestamp: z.string().optional(),
    managedFields: z.array(z.unknown()).optional(),
  }).strict();
}

export const labelSelectorSchema = z.object({
  matchLabels: z.record(z.string()).optional(),
  matchExpressions: z.array(z.object({
    key: z.string(),
    operator: z.enum(['In', 'NotIn', 'Exists', 'DoesNotExist']),
    values: z.array(z.string()).optional(),
  }).strict()).optional(),
}).strict();
export type LabelSelectorInput = z.infer<typeof labelSelectorSchema>;

/**
 * Turns a selector key into a label-view key, or records why it cannot and
 * returns undefined. `path` names the key for messages.
 */
export type KeyMapper = (key: string, path: string, problems: Problems) => string | undefined;

/** Plain Kubernetes label keys, optionally rewritten with `prefix`. */
export function plainKey(prefix = ''): KeyMapper {
  return (key, path, problems) => {
    const p = labelKeyProblem(key);
    if (p) { problem(problems, path, p); return undefined; }
    return prefix + key;
  };
}

/** Converts a Kubernetes label selector, validating keys, values and operator/values combinations. */
export function convertSelector(sel: LabelSelectorInput, path: string, problems: Problems, mapKey: KeyMapper): LabelSelector {
  const requirements: SelectorRequirement[] = [];
  for (const [k, v] of Object.entries(sel.matchLabels ?? {})) {
    const p = at(at(path, 'matchLabels'), k);
    const key = mapKey(k, p, problems);
    const vp = labelValueProblem(k, v);
    if (vp) problem(problems, p, vp);
    if (key !== undefined) requirements.push({ key, operator: 'In', values: [v] });
  }
  (sel.matchExpressions ?? []).forEach((e, i) => {
    const p = at(at(path, 'matchExpressions'), i);
    const key = mapKey(e.key, at(p, 'key'), problems);
    const values = e.values ?? [];
    if (e.operator === 'In' || e.operator === 'NotIn') {
      if (values.length === 0) problem(problems, at(p, 'values'), `must be non-empty when operator is ${e.operator}`);
      values.forEach((v, j) => { const vp = labelValueProblem(e.key, v); if (vp) problem(problems, at(at(p, 'values'), j), vp); });
      if (key !== undefined) requirements.push({ key, operator: e.operator, values: [...values] });
    } else {
      if (values.length > 0) problem(problems, at(p, 'values'), `must be empty when operator is ${e.operator}`);
      if (key !== undefined) requirements.push({ key, operator: e.operator });
    }
  });
  return { requirements };
}

/** `io.kubernetes.pod.namespace In [ns]`. */
export function inNamespace(ns: string): SelectorRequirement {
  return { key: NAMESPACE_LABEL, operator: 'In', values: [ns] };
}

/**
 * Parses a CIDR (canonical text out); `bareAddress` also accepts a plain
 * address as a full-length prefix (Cilium's fromCIDR/toCIDR do).
 */
export function parseCidrAt(text: string, path: string, problems: Problems, bareAddress = false): Cidr | undefined {
  const t = bareAddress && !text.includes('/') ? `${text}/${text.includes(':') ? 128 : 32}` : text;
  try {
    return parseCidr(t);
  } catch (e) {
    problem(problems, path, (e as Error).message);
    return undefined;
  }
}

/**
 * A CIDR peer with exceptions. Each exception must lie inside `cidr` (same
 * family, prefix at least as long; `strict`: longer, as Kubernetes requires).
 */
export function cidrPeer(cidrText: string, except: string[], path: string, cidrKey: string, problems: Problems, strict: boolean): Peer | undefined {
  const cidr = parseCidrAt(cidrText, at(path, cidrKey), problems);
  const out: string[] = [];
  except.forEach((e, i) => {
    const p = at(at(path, 'except'), i);
    const ex = parseCidrAt(e, p, problems);
    if (!ex || !cidr) return;
    const inside = ex.family === cidr.family && cidrContains(cidr, ex.family, ex.base) && (strict ? ex.prefix > cidr.prefix : ex.prefix >= cidr.prefix);
    if (!inside) problem(problems, p, `${ex.text} must lie inside ${cidr.text}${strict ? ' (a strict subset of cidr)' : ''}`);
    else out.push(ex.text);
  });
  return cidr ? { kind: 'cidr', cidr: cidr.text, except: out } : undefined;
}

/** Does this value look like an IANA service name (a named port)? */
export function isPortName(v: string): boolean {
  return /[a-z]/i.test(v) && /^[a-z0-9]([a-z0-9-]*[a-z0-9])?$/i.test(v);
}

/** Checks `endPort` against `port` (both numbers); returns it when valid. */
export function checkEndPort(endPort: number | undefined, port: number, path: string, problems: Problems): number | undefined {
  if (endPort === undefined) return undefined;
  if (endPort < port || endPort > 65535) {
    problem(problems, at(path, 'endPort'), `must be between port (${port}) and 65535, got ${endPort}`);
    return undefined;
  }
  return endPort;
}

// ---------------------------------------------------------------- NetworkPolicy

const k8sPortSchema = z.object({
  protocol: z.enum(['TCP', 'UDP', 'SCTP']).optional(),
  port: z.unknown().optional(),
  endPort: z.number().int().optional(),
}).strict();

const k8sPeerSchema = z.object({
  podSelector: labelSelectorSchema.optional(),
  namespaceSelector: labelSelectorSchema.optional(),
  ipBlock: z.object({ cidr: z.string(), except: z.array(z.string()).optional() }).strict().optional(),
}).strict();

const networkPolicySchema = z.object({
  apiVersion: z.literal('networking.k8s.io/v1'),
  kind: z.literal('NetworkPolicy'),
  metadata: metadataSchema(dnsSubdomain),
  spec: z.object({
    podSelector: labelSelectorSchema,
    policyTypes: z.array(z.enum(['Ingress', 'Egress'])).optional(),
    ingress: z.array(z.object({ from: z.array(k8sPeerSchema).optional(), ports: z.array(k8sPortSchema).optional() }).strict()).optional(),
    egress: z.array(z.object({ to: z.array(k8sPeerSchema).optional(), ports: z.array(k8sPortSchema).optional() }).strict()).optional(),
  }).strict(),
}).strict();

function k8sPort(p: z.infer<typeof k8sPortSchema>, path: string, problems: Problems): PortRule | undefined {
  const protocol = p.protocol ?? 'TCP';
  if (p.port === undefined) {
    if (p.endPort !== undefined) problem(problems, at(path, 'endPort'), 'requires port');
    return { protocol };
  }
  const pp = at(path, 'port');
  if (typeof p.port === 'string') {
    problem(problems, pp, isPortName(p.port)
      ? `named ports are not supported (got ${JSON.stringify(p.port)}); give the port number`
      : `must be a port number 1-65535, got ${JSON.stringify(p.port)}`);
    return undefined;
  }
  if (typeof p.port !== 'number' || !Number.isInteger(p.port) || p.port < 1 || p.port > 65535) {
    problem(problems, pp, `must be a port number 1-65535, got ${JSON.stringify(p.port)}`);
    return undefined;
  }
  const endPort = checkEndPort(p.endPort, p.port, path, problems);
  return endPort === undefined ? { protocol, port: p.port } : { protocol, port: p.port, endPort };
}

function k8sPeer(peer: z.infer<typeof k8sPeerSchema>, path: string, ns: string, problems: Problems): Peer | undefined {
  if (peer.ipBlock) {
    if (peer.podSelector || peer.namespaceSelector) {
      problem(problems, path, 'ipBlock cannot be combined with podSelector or namespaceSelector in one peer');
      return undefined;
    }
    return cidrPeer(peer.ipBlock.cidr, peer.ipBlock.except ?? [], at(path, 'ipBlock'), 'cidr', problems, true);
  }
  if (!peer.podSelector && !peer.namespaceSelector) {
    problem(problems, path, 'must specify podSelector, namespaceSelector or ipBlock');
    return undefined;
  }
  const requirements: SelectorRequirement[] = [];
  if (peer.podSelector) requirements.push(...convertSelector(peer.podSelector, at(path, 'podSelector'), problems, plainKey()).requirements);
  if (peer.namespaceSelector) {
    requirements.push(...convertSelector(peer.namespaceSelector, at(path, 'namespaceSelector'), problems, plainKey(NAMESPACE_LABELS_PREFIX)).requirements);
  } else {
    requirements.push(inNamespace(ns));
  }
  return { kind: 'endpoints', selector: { requirements } };
}

/** Converts a NetworkPolicy document (already known to be `networking.k8s.io/v1`); undefined when it has problems. */
export function convertNetworkPolicy(doc: unknown, problems: Problems): Omit<Policy, 'source'> | undefined {
  const np = check(networkPolicySchema, doc, problems);
  if (!np) return undefined;
  const before = problems.length;
  const ns = np.metadata.namespace ?? 'default';
  const spec = np.spec;

  // Kubernetes defaulting: no policyTypes means Ingress, plus Egress when there are egress rules.
  const types = spec.policyTypes?.length ? spec.policyTypes : (spec.egress?.length ? ['Ingress', 'Egress'] : ['Ingress']);
  if (new Set(types).size !== types.length) problem(problems, 'spec.policyTypes', 'must not repeat a type');
  const ingress = types.includes('Ingress');
  const egress = types.includes('Egress');

  const subject = convertSelector(spec.podSelector, 'spec.podSelector', problems, plainKey());
  const rules: PolicyRule[] = [];
  const notEnforced: string[] = [];
  let index = 0;
  const direction = (dir: 'ingress' | 'egress', list: { peers?: z.infer<typeof k8sPeerSchema>[]; ports?: z.infer<typeof k8sPortSchema>[] }[], enabled: boolean, peerKey: string): void => {
    if (list.length > 0 && !enabled) {
      notEnforced.push(`spec.${dir}: ignored because spec.policyTypes does not include ${dir === 'ingress' ? 'Ingress' : 'Egress'} (as in Kubernetes)`);
      index += list.length;
      return;
    }
    list.forEach((r, i) => {
      const path = at(at('spec', dir), i);
      const peers = (r.peers ?? []).map((p, j) => k8sPeer(p, at(at(path, peerKey), j), ns, problems)).filter((p): p is Peer => p !== undefined);
      const ports = (r.ports ?? []).map((p, j) => k8sPort(p, at(at(path, 'ports'), j), problems)).filter((p): p is PortRule => p !== undefined);
      rules.push({ direction: dir, action: 'allow', peers: (r.peers ?? []).length === 0 ? [{ kind: 'any' }] : peers, ports, icmps: [], index: index++ });
    });
  };
  direction('ingress', (spec.ingress ?? []).map((r) => ({ peers: r.from, ports: r.ports })), ingress, 'from');
  direction('egress', (spec.egress ?? []).map((r) => ({ peers: r.to, ports: r.ports })), egress, 'to');

  if (problems.length > before) return undefined;
  return {
    kind: 'NetworkPolicy',
    name: np.metadata.name,
    namespace: ns,
    subjects: [{ requirements: [...subject.requirements, inNamespace(ns)] }],
    defaultDeny: { ingress, egress },
    rules,
    notEnforced,
  };
}
