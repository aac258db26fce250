/**
 * Policy YAML/JSON → internal policy model (types.ts). Accepts Kubernetes
 * NetworkPolicy (parse-k8s.ts), CiliumNetworkPolicy and
 * CiliumClusterwideNetworkPolicy (parse-cilium.ts), `v1` Namespace documents
 * (their labels) and `v1` List wrappers; anything else is reported as
 * unsupported. Validation is strict (unknown fields are errors) and every
 * problem names its document and field.
 */
import { parseAllDocuments } from 'yaml';
import { z } from 'zod';
import { convertCiliumPolicy } from './parse-cilium.js';
import { at, check, convertNetworkPolicy, dnsLabel, metadataSchema, problem, type Problems } from './parse-k8s.js';
import { labelKeyProblem, labelValueProblem } from '../endpoint/labels.js';
import { NAMESPACE_NAME_LABEL, policyKey, type Policy } from './types.js';
import { describeDocument as describe, isObject, ManifestError } from '../k8s/manifest.js';
import { convertServiceDocument, isServiceKind, SERVICE_API } from '../service/parse.js';
import { serviceResourceKey, type EndpointSliceSpec, type ServiceResource, type ServiceSpec } from '../service/types.js';

export interface ParsedDocuments {
  policies: Policy[];
  /** `kind: Namespace` documents: their labels, for namespace selectors. */
  namespaces: { name: string; labels: Record<string, string> }[];
  /** `v1` Service and `discovery.k8s.io/v1` EndpointSlice documents. */
  services: ServiceSpec[];
  slices: EndpointSliceSpec[];
  /** Documents of kinds (or apiVersions) Waggle does not handle, one sentence each. */
  unsupported: string[];
}

const POLICY_API: Record<string, string> = {
  NetworkPolicy: 'networking.k8s.io/v1',
  CiliumNetworkPolicy: 'cilium.io/v2',
  CiliumClusterwideNetworkPolicy: 'cilium.io/v2',
};

const namespaceSchema = z.object({
  apiVersion: z.literal('v1'),
  kind: z.literal('Namespace'),
  metadata: metadataSchema(dnsLabel),
  spec: z.object({ finalizers: z.array(z.string()).optional() }).strict().optional(),
  status: z.unknown().optional(),
}).strict();

type Outcome =
  | { type: 'policy'; policy: Policy }
  | { type: 'namespace'; name: string; labels: Record<string, string> }
  | { type: 'service'; resource: ServiceResource }
  | { type: 'list'; items: unknown[] }
  | { type: 'unsupported'; message: string }
  | { type: 'invalid' };

function convertNamespace(doc: unknown, problems: Problems): Outcome {
  const ns = check(namespaceSchema, doc, problems);
  if (!ns) return { type: 'invalid' };
  const labels = ns.metadata.labels ?? {};
  for (const [k, v] of Object.entries(labels)) {
    const p = labelKeyProblem(k) ?? labelValueProblem(k, v);
    if (p) problem(problems, at('metadata.labels', k), p);
    else if (k === NAMESPACE_NAME_LABEL && v !== ns.metadata.name) problem(problems, at('metadata.labels', k), `must be the namespace's name ${JSON.stringify(ns.metadata.name)}`);
  }
  if (ns.metadata.namespace !== undefined) problem(problems, 'metadata.namespace', 'must not be set: a Namespace is not namespaced');
  return problems.length > 0 ? { type: 'invalid' } : { type: 'namespace', name: ns.metadata.name, labels: { ...labels } };
}

/** Classifies and converts one document, recording its problems (without the document prefix). */
function parseOne(doc: unknown, where: string, problems: Problems): Outcome {
  if (!isObject(doc)) {
    problem(problems, '', `must be a mapping with apiVersion and kind, got ${Array.isArray(doc) ? 'a list' : JSON.stringify(doc)}`);
    return { type: 'invalid' };
  }
  const { apiVersion, kind } = doc;
  if (typeof apiVersion !== 'string' || apiVersion === '') problem(problems, 'apiVersion', 'required (a string, e.g. cilium.io/v2)');
  if (typeof kind !== 'string' || kind === '') problem(problems, 'kind', 'required (a string, e.g. CiliumNetworkPolicy)');
  if (typeof apiVersion !== 'string' || typeof kind !== 'string' || problems.length > 0) return { type: 'invalid' };

  const unsupported = (why: string): Outcome => ({ type: 'unsupported', message: `${describe(doc, where, true)}: ${why}` });
  const wanted = POLICY_API[kind];
  if (wanted !== undefined) {
    if (apiVersion !== wanted) return unsupported(`apiVersion ${apiVersion} of ${kind} is not handled (use ${wanted})`);
    const converted = kind === 'NetworkPolicy' ? convertNetworkPolicy(doc, problems) : convertCiliumPolicy(doc, problems);
    if (!converted) return { type: 'invalid' };
    return { type: 'policy', policy: { ...converted, source: structuredClone(doc) } };
  }
  if (isServiceKind(apiVersion, kind)) {
    const resource = convertServiceDocument(doc, problems);
    return resource ? { type: 'service', resource } : { type: 'invalid' };
  }
  if (kind === 'Service' || kind === 'EndpointSlice') {
    return unsupported(`apiVersion ${apiVersion} of ${kind} is not handled (use ${SERVICE_API[kind]})`);
  }
  if (kind === 'Namespace' && apiVersion === 'v1') return convertNamespace(doc, problems);
  if (kind === 'List' && apiVersion === 'v1') {
    const extra = Object.keys(doc).filter((k) => !['apiVersion', 'kind', 'items', 'metadata'].includes(k));
    for (const k of extra) problem(problems, k, 'unknown field');
    if (!Array.isArray(doc.items)) problem(problems, 'items', 'required (a list of documents)');
    return problems.length > 0 ? { type: 'invalid' } : { type: 'list', items: doc.items as unknown[] };
  }
  return unsupported(kind === 'Namespace' || kind === 'List' ? `apiVersion ${apiVersion} of ${kind} is not handled (use v1)` : `kind ${kind} is not handled yet`);
}

/**
 * Parses one already-decoded document (e.g. a JSON API body). Returns
 * undefined when it is not a policy (another kind, or a Namespace or List);
 * throws ManifestError when it is invalid, or is a policy kind with an
 * apiVersion Waggle does not handle.
 */
export function parsePolicyObject(doc: unknown, where: string): Policy | undefined {
  const problems: Problems = [];
  const out = parseOne(doc, where, problems);
  if (out.type === 'invalid') throw new ManifestError(problems.map((p) => `${describe(doc, where)}: ${p}`));
  if (out.type === 'unsupported' && isObject(doc) && typeof doc.kind === 'string' && POLICY_API[doc.kind] !== undefined) {
    throw new ManifestError([out.message]);
  }
  return out.type === 'policy' ? out.policy : undefined;
}

/**
 * Parses multi-document YAML (or JSON). All or nothing: throws
 * ManifestError listing the problems of every bad document. Empty
 * documents are skipped; `kind: List` items count as documents of their own.
 */
export function parsePolicyDocuments(text: string, sourceName: string): ParsedDocuments {
  const result: ParsedDocuments = { policies: [], namespaces: [], services: [], slices: [], unsupported: [] };
  const errors: string[] = [];
  const seen = new Map<string, string>();

  const handle = (doc: unknown, where: string): void => {
    const problems: Problems = [];
    const out = parseOne(doc, where, problems);
    switch (out.type) {
      case 'invalid':
        errors.push(...problems.map((p) => `${describe(doc, where)}: ${p}`));
        return;
      case 'unsupported':
        result.unsupported.push(out.message);
        return;
      case 'list':
        out.items.forEach((item, i) => handle(item, `${where} item ${i + 1}`));
        return;
      case 'policy':
      case 'namespace':
      case 'service': {
        const key = out.type === 'policy' ? policyKey(out.policy) : out.type === 'service' ? serviceResourceKey(out.resource) : `Namespace//${out.name}`;
        const what = out.type === 'policy' ? out.policy.kind : out.type === 'service' ? out.resource.kind : 'Namespace';
        const first = seen.get(key);
        if (first !== undefined) {
          errors.push(`${describe(doc, where)}: defines the same ${what} as ${first}`);
          return;
        }
        seen.set(key, where.slice(sourceName.length + 1));
        if (out.type === 'policy') result.policies.push(out.policy);
        else if (out.type === 'service') {
          if (out.resource.kind === 'Service') result.services.push(out.resource);
          else result.slices.push(out.resource);
        } else result.namespaces.push({ name: out.name, labels: out.labels });
      }
    }
  };

  parseAllDocuments(text).forEach((d, i) => {
    const where = `${sourceName} document ${i + 1}`;
    const e = d.errors[0]; // later errors of a document are mostly consequences of the first
    if (e) {
      const line = e.linePos?.[0].line;
      const message = (e.message.split('\n')[0] ?? '').replace(/ at line \d+, column \d+:?$/, '');
      errors.push(`${where}${line === undefined ? '' : ` line ${line}`}: YAML syntax error: ${message}`);
      return;
    }
    let doc: unknown;
    try {
      doc = d.toJS({ maxAliasCount: 100 });
    } catch (e) {
      errors.push(`${where}: ${(e as Error).message}`);
      return;
    }
    if (doc === null || doc === undefined) return;
    handle(doc, where);
  });

  if (errors.length > 0) throw new ManifestError(errors);
  return result;
}
