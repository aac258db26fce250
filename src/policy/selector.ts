/**
 * Label selectors over the flat label view of an identity (see types.ts):
 * Kubernetes semantics, one matcher for every policy kind.
 */
import { NAMESPACE_LABEL, NAMESPACE_LABELS_PREFIX, type LabelSelector, type SelectorRequirement } from './types.js';

function has(labels: Record<string, string>, key: string): boolean {
  return Object.prototype.hasOwnProperty.call(labels, key);
}

/** Does one requirement hold for `labels`? Unknown operators never match (fail closed). */
export function matchesRequirement(req: SelectorRequirement, labels: Record<string, string>): boolean {
  const present = has(labels, req.key);
  switch (req.operator) {
    case 'In':
      return present && (req.values ?? []).includes(labels[req.key] as string);
    case 'NotIn':
      return !present || !(req.values ?? []).includes(labels[req.key] as string);
    case 'Exists':
      return present;
    case 'DoesNotExist':
      return !present;
    default:
      return false;
  }
}

/**
 * Kubernetes label selector semantics: every requirement must hold; NotIn
 * holds when the key is absent; no requirements match everything.
 */
export function matchesSelector(sel: LabelSelector, labels: Record<string, string>): boolean {
  for (const req of sel.requirements) if (!matchesRequirement(req, labels)) return false;
  return true;
}

/** A string equal for selectors with the same requirements in the same order (a cache key). */
export function selectorKey(sel: LabelSelector): string {
  return JSON.stringify(sel.requirements.map((r) => [r.key, r.operator, r.values ?? null]));
}

/**
 * The label view of an endpoint: its own labels, plus
 * `io.kubernetes.pod.namespace: namespace` and
 * `io.cilium.k8s.namespace.labels.K: V` per namespace label. Endpoint labels
 * using those reserved keys are dropped, so an endpoint cannot claim another
 * namespace or namespace labels.
 */
export function identityLabelView(
  endpointLabels: Record<string, string>,
  namespace: string,
  namespaceLabels: Record<string, string>,
): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(endpointLabels)) {
    if (k === NAMESPACE_LABEL || k.startsWith(NAMESPACE_LABELS_PREFIX)) continue;
    out[k] = v;
  }
  out[NAMESPACE_LABEL] = namespace;
  for (const [k, v] of Object.entries(namespaceLabels)) out[NAMESPACE_LABELS_PREFIX + k] = v;
  return out;
}
