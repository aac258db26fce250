/**
 * Namespaces and their labels, as namespaceSelector and Cilium's namespace
 * labels see them. A namespace exists implicitly once it is named (by an
 * endpoint, a policy, `namespace label`): it always carries
 * `kubernetes.io/metadata.name: NAME`, as Kubernetes sets it, and the store
 * keeps only the labels given on top of that. Every change is validated in
 * full before anything changes, and persisted.
 */
import { z } from 'zod';
import { StateStore } from '../agent/state-store.js';
import { labelKeyProblem, labelValueProblem } from '../endpoint/labels.js';
import { NAMESPACE_NAME_LABEL } from './types.js';

export interface NamespaceInfo {
  name: string;
  /** Sorted by key; always includes `kubernetes.io/metadata.name`. */
  labels: Record<string, string>;
}

export class NamespaceError extends Error {
  readonly code: string;
  constructor(code: string, message: string) {
    super(message);
    this.name = 'NamespaceError';
    this.code = code;
  }
}

const DNS_LABEL = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/;

/** Why `name` is not a valid namespace name (an RFC 1123 DNS label), or undefined when it is. */
export function namespaceNameProblem(name: string): string | undefined {
  if (!DNS_LABEL.test(name)) return `namespace name ${JSON.stringify(name)} must be 1-63 characters of lowercase letters, digits and -, starting and ending with a letter or digit`;
  return undefined;
}

const stateSchema = z.object({
  version: z.literal(1),
  /** Namespace name → its labels, without the metadata.name label. */
  namespaces: z.record(z.string(), z.record(z.string(), z.string())),
}).superRefine((s, ctx) => {
  for (const [name, labels] of Object.entries(s.namespaces)) {
    const problem = namespaceNameProblem(name)
      ?? Object.entries(labels).map(([k, v]) => (k === NAMESPACE_NAME_LABEL ? `label ${k} is not stored` : labelKeyProblem(k) ?? labelValueProblem(k, v))).find((p) => p !== undefined);
    if (problem) ctx.addIssue({ code: z.ZodIssueCode.custom, path: ['namespaces', name], message: problem });
  }
});

type State = z.infer<typeof stateSchema>;

function sorted(labels: Record<string, string>): Record<string, string> {
  return Object.fromEntries(Object.entries(labels).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
}

function sameLabels(a: Record<string, string>, b: Record<string, string>): boolean {
  const ka = Object.keys(a);
  return ka.length === Object.keys(b).length && ka.every((k) => Object.hasOwn(b, k) && a[k] === b[k]);
}

function checkName(name: string): void {
  const problem = namespaceNameProblem(name);
  if (problem) throw new NamespaceError('INVALID_NAMESPACE', problem);
}

function checkLabel(key: string, value: string): void {
  const problem = labelKeyProblem(key) ?? labelValueProblem(key, value);
  if (problem) throw new NamespaceError('INVALID_LABEL', problem);
}

export class NamespaceStore {
  private readonly store: StateStore<State>;
  /** Namespaces named explicitly (labelled or applied), with their labels minus metadata.name. */
  private namespaces: Map<string, Record<string, string>>;

  constructor(statePath: string) {
    this.store = new StateStore(statePath, stateSchema, () => ({ version: 1, namespaces: {} }));
    this.namespaces = new Map(Object.entries(this.store.load().namespaces).map(([n, l]) => [n, sorted(l)]));
  }

  /**
   * Sets and removes labels of a namespace, like `kubectl label ns`: changing
   * the value of an existing label needs `overwrite`; removing a label it does
   * not have is not an error. `kubernetes.io/metadata.name` cannot be changed
   * or removed (setting it to the namespace's name is allowed: no change).
   */
  label(name: string, labels: Record<string, string>, opts: { overwrite?: boolean; remove?: string[] } = {}): NamespaceInfo {
    checkName(name);
    const remove = opts.remove ?? [];
    const current = this.namespaces.get(name) ?? {};
    for (const [k, v] of Object.entries(labels)) {
      checkLabel(k, v);
      if (k === NAMESPACE_NAME_LABEL) {
        if (v !== name) throw new NamespaceError('IMMUTABLE_LABEL', `label ${NAMESPACE_NAME_LABEL} of namespace ${name} is its name and cannot be changed`);
        continue;
      }
      const old = Object.hasOwn(current, k) ? current[k] : undefined;
      if (old !== undefined && old !== v && !opts.overwrite) {
        throw new NamespaceError('LABEL_EXISTS', `namespace ${name} already has label ${k}=${old}; overwrite to change it to ${JSON.stringify(v)}`);
      }
    }
    for (const k of remove) {
      const problem = labelKeyProblem(k);
      if (problem) throw new NamespaceError('INVALID_LABEL', problem);
      if (k === NAMESPACE_NAME_LABEL) throw new NamespaceError('IMMUTABLE_LABEL', `label ${NAMESPACE_NAME_LABEL} of namespace ${name} cannot be removed`);
      if (Object.hasOwn(labels, k)) throw new NamespaceError('INVALID_LABEL', `label ${k} cannot be both set and removed`);
    }
    const next: Record<string, string> = { ...current };
    for (const [k, v] of Object.entries(labels)) if (k !== NAMESPACE_NAME_LABEL) next[k] = v;
    for (const k of remove) delete next[k];
    const stored = this.namespaces.has(name);
    if (stored ? !sameLabels(current, next) : Object.keys(next).length > 0) this.commit(name, sorted(next));
    return this.get(name);
  }

  /**
   * Sets the whole label set of a namespace (a YAML `kind: Namespace` apply).
   * `kubernetes.io/metadata.name`, when given, must be the namespace's name.
   */
  replace(name: string, labels: Record<string, string>): 'created' | 'configured' | 'unchanged' {
    checkName(name);
    const next: Record<string, string> = {};
    for (const [k, v] of Object.entries(labels)) {
      checkLabel(k, v);
      if (k === NAMESPACE_NAME_LABEL) {
        if (v !== name) throw new NamespaceError('IMMUTABLE_LABEL', `label ${NAMESPACE_NAME_LABEL} of namespace ${name} must be ${JSON.stringify(name)}, not ${JSON.stringify(v)}`);
        continue;
      }
      next[k] = v;
    }
    const current = this.namespaces.get(name);
    if (current !== undefined && sameLabels(current, next)) return 'unchanged';
    this.commit(name, sorted(next));
    return current === undefined ? 'created' : 'configured';
  }

  /** Forgets a namespace's labels (it still exists implicitly while named elsewhere). Returns whether it had been stored. */
  delete(name: string): boolean {
    if (!this.namespaces.has(name)) return false;
    this.commit(name, undefined);
    return true;
  }

  /** A namespace with its labels (a never-labelled one has just `kubernetes.io/metadata.name`). */
  get(name: string): NamespaceInfo {
    checkName(name);
    return { name, labels: this.labelsOf(name) };
  }

  /** A namespace's labels, sorted by key, including `kubernetes.io/metadata.name`. */
  labelsOf(name: string): Record<string, string> {
    return sorted({ ...(this.namespaces.get(name) ?? {}), [NAMESPACE_NAME_LABEL]: name });
  }

  /** Every stored namespace and every one of `extraNames` (e.g. namespaces of endpoints), sorted by name. */
  list(extraNames: string[] = []): NamespaceInfo[] {
    const names = [...new Set([...this.namespaces.keys(), ...extraNames])].sort();
    return names.map((name) => ({ name, labels: this.labelsOf(name) }));
  }

  /** Sets (or with undefined, removes) one namespace, persisting before the change becomes visible. */
  private commit(name: string, labels: Record<string, string> | undefined): void {
    const next = new Map(this.namespaces);
    if (labels === undefined) next.delete(name);
    else next.set(name, labels);
    const namespaces: Record<string, Record<string, string>> = {};
    for (const n of [...next.keys()].sort()) namespaces[n] = next.get(n) as Record<string, string>;
    this.store.save({ version: 1, namespaces });
    this.namespaces = next;
  }
}
