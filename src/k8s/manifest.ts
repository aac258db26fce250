/**
 * What every parser of Kubernetes-style manifests (policies, namespaces,
 * services, endpoint slices) shares: the error that lists every problem of an
 * apply, and how a document is named in those problems.
 */

/** One or more documents are invalid; `problems` lists every problem, each naming its document and field. */
export class ManifestError extends Error {
  readonly problems: string[];

  constructor(problems: string[]) {
    super(problems.join('; '));
    this.name = 'ManifestError';
    this.problems = problems;
  }
}

export function isObject(v: unknown): v is Record<string, unknown> {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}

/** `where (Kind "name")`, with what is known of the document (`apiVersion/Kind` with `withApiVersion`). */
export function describeDocument(doc: unknown, where: string, withApiVersion = false): string {
  if (!isObject(doc)) return where;
  const kind = typeof doc.kind === 'string' ? doc.kind : undefined;
  const api = typeof doc.apiVersion === 'string' ? doc.apiVersion : undefined;
  const meta = doc.metadata;
  const name = isObject(meta) && typeof meta.name === 'string' ? meta.name : undefined;
  const what = [withApiVersion && api && kind ? `${api}/${kind}` : kind, name === undefined ? undefined : JSON.stringify(name)]
    .filter((x) => x !== undefined).join(' ');
  return what === '' ? where : `${where} (${what})`;
}
