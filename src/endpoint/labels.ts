/**
 * Endpoint labels, with Kubernetes label syntax: `key=value` pairs where a key
 * is an optional DNS-subdomain prefix and `/`, then a name of at most 63
 * characters; values are at most 63 characters of [A-Za-z0-9._-], starting and
 * ending alphanumeric (or empty).
 */
export type Labels = Record<string, string>;

const NAME = /^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$/;
const PREFIX = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
const VALUE = /^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$/;

/** Why `key` is not a valid label key, or undefined when it is. */
export function labelKeyProblem(key: string): string | undefined {
  const slash = key.indexOf('/');
  const prefix = slash >= 0 ? key.slice(0, slash) : undefined;
  const name = slash >= 0 ? key.slice(slash + 1) : key;
  if (prefix !== undefined && (prefix.length > 253 || !PREFIX.test(prefix))) return `label key ${JSON.stringify(key)} has an invalid prefix (a DNS subdomain)`;
  if (!NAME.test(name)) return `label key ${JSON.stringify(key)} must be 1-63 characters of letters, digits, -, _ and ., starting and ending with a letter or digit`;
  return undefined;
}

/** Why `value` is not a valid label value, or undefined when it is. */
export function labelValueProblem(key: string, value: string): string | undefined {
  if (!VALUE.test(value)) return `label ${key}: value ${JSON.stringify(value)} must be at most 63 characters of letters, digits, -, _ and ., starting and ending with a letter or digit`;
  return undefined;
}

/** Parses `k=v[,k=v…]`; throws naming the first bad label. */
export function parseLabels(text: string): Labels {
  const out: Labels = {};
  if (text.trim() === '') return out;
  for (const part of text.split(',')) {
    const eq = part.indexOf('=');
    if (eq <= 0) throw new Error(`malformed label ${JSON.stringify(part)}: expected key=value`);
    const key = part.slice(0, eq).trim();
    const value = part.slice(eq + 1).trim();
    const problem = labelKeyProblem(key) ?? labelValueProblem(key, value);
    if (problem) throw new Error(problem);
    if (key in out) throw new Error(`label ${key} is given twice`);
    out[key] = value;
  }
  return out;
}

/** Checks a labels object from an API body; throws naming the first bad label. */
export function validateLabels(labels: Record<string, unknown>): Labels {
  const out: Labels = {};
  for (const [k, v] of Object.entries(labels)) {
    if (typeof v !== 'string') throw new Error(`label ${k}: value must be a string`);
    const problem = labelKeyProblem(k) ?? labelValueProblem(k, v);
    if (problem) throw new Error(problem);
    out[k] = v;
  }
  return out;
}

/** `k8s:app=web` style strings, sorted, as Hubble shows labels. */
export function hubbleLabels(labels: Labels, namespace: string): string[] {
  return [
    ...Object.entries(labels).map(([k, v]) => `k8s:${k}=${v}`),
    `k8s:io.kubernetes.pod.namespace=${namespace}`,
  ].sort();
}
