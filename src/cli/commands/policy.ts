/**
 * `waggle apply|delete -f`, `waggle policy list|get|trace`,
 * `waggle namespace label|list|get`, `waggle identity list`, and the policy
 * datapath listings `waggle bpf policy get|ct list|ipcache list`.
 */
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import type { Command } from 'commander';
import { stringify as toYaml } from 'yaml';
import { apiSocketPath, call } from '../client.js';
import { outputFormat, UsageError } from '../errors.js';
import { apiOption, formatLabels, print, table } from '../format.js';
import { parseLabels } from '../../endpoint/labels.js';
import type { IdentityRecord } from '../../identity/allocator.js';
import type { NamespaceInfo } from '../../policy/namespaces.js';
import type { TraceResult, DirectionTrace } from '../../policy/trace.js';

interface ApplyResult {
  created: string[];
  configured: string[];
  unchanged: string[];
  namespaces: { name: string; result: string }[];
  unsupported: string[];
  notEnforced: { policy: string; notes: string[] }[];
}

interface DeleteResult {
  deleted: string[];
  notFound: string[];
  namespaces: string[];
  unsupported: string[];
}

/** The files behind `-f`: a file, every *.yaml/*.yml/*.json of a directory (sorted), or `-` (stdin). */
function readSources(paths: string[]): { text: string; source: string }[] {
  if (paths.length === 0) throw new UsageError('give at least one -f FILE|DIR|-');
  const out: { text: string; source: string }[] = [];
  for (const p of paths) {
    if (p === '-') {
      out.push({ text: readFileSync(0, 'utf8'), source: 'stdin' });
      continue;
    }
    let st;
    try {
      st = statSync(p);
    } catch (err) {
      throw new UsageError(`cannot read ${p}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
    }
    if (st.isDirectory()) {
      const files = readdirSync(p).filter((f) => /\.(ya?ml|json)$/.test(f)).sort();
      if (files.length === 0) throw new UsageError(`${p} has no .yaml, .yml or .json files`);
      for (const f of files) out.push({ text: readFileSync(join(p, f), 'utf8'), source: join(p, f) });
    } else {
      out.push({ text: readFileSync(p, 'utf8'), source: p });
    }
  }
  return out;
}

/** `CiliumNetworkPolicy/shop/allow-web` from the repository's `kind/namespace/name` key. */
function policyName(key: string): string {
  const [kind, ns, name] = key.split('/');
  return ns ? `${kind}/${ns}/${name}` : `${kind}/${name}`;
}

const MATCH_TYPES = ['none', 'L3-only', 'L3/L4', 'L4-only', 'all'];

function describeDirection(title: string, d: DirectionTrace | undefined): string {
  if (!d) return `${title}: not checked (not a local endpoint)`;
  const verdict = d.verdict.toUpperCase();
  if (d.reason === 'no-policy') return `${title} (${d.endpoint}): ${verdict}: no policy selects it`;
  if (d.reason === 'no-rule') return `${title} (${d.endpoint}): ${verdict}: selected by policy, no rule allows it (default deny)`;
  const r = d.rule;
  const rule = r ? `${r.kind} ${r.namespace ? `${r.namespace}/` : ''}${r.name} rule ${r.index}` : 'the allow-all of an unselected direction';
  return `${title} (${d.endpoint}): ${verdict} by ${d.reason === 'deny-rule' ? 'deny rule of ' : ''}${rule} (match ${MATCH_TYPES[d.matchType] ?? d.matchType})`;
}

interface PartyOptions { Endpoint?: string; Labels?: string; Namespace?: string; Ip?: string; Entity?: string }

function partyOf(opts: Record<string, string | undefined>, side: 'from' | 'to'): Record<string, string> {
  const get = (k: keyof PartyOptions): string | undefined => opts[`${side}${k}`];
  const given = (['Endpoint', 'Labels', 'Ip', 'Entity'] as const).filter((k) => get(k) !== undefined);
  if (given.length !== 1) throw new UsageError(`give exactly one of --${side}-endpoint, --${side}-labels, --${side}-ip, --${side}-entity`);
  if (get('Namespace') !== undefined && get('Labels') === undefined) throw new UsageError(`--${side}-namespace goes with --${side}-labels`);
  const out: Record<string, string> = {};
  if (get('Endpoint') !== undefined) out.endpoint = get('Endpoint') as string;
  if (get('Labels') !== undefined) {
    try { parseLabels(get('Labels') as string); } catch (err) { throw new UsageError(`--${side}-labels: ${(err as Error).message}`); }
    out.labels = get('Labels') as string;
    if (get('Namespace') !== undefined) out.namespace = get('Namespace') as string;
  }
  if (get('Ip') !== undefined) out.ip = get('Ip') as string;
  if (get('Entity') !== undefined) out.entity = get('Entity') as string;
  return out;
}

export function registerPolicy(program: Command, bpf: Command): void {
  const fileOption = (cmd: Command): Command => cmd.option('-f, --filename <path>', 'a YAML/JSON file, a directory of them, or - for stdin (repeatable)', (v: string, prev: string[] = []) => [...prev, v]);

  apiOption(fileOption(program.command('apply'))
    .option('-o, --output <format>', 'text or json', 'text')
    .description('apply Kubernetes NetworkPolicy, CiliumNetworkPolicy, CiliumClusterwideNetworkPolicy and Namespace documents (all or nothing)'))
    .action(async (opts: { filename?: string[]; output: string; apiSocket?: string }) => {
      const output = outputFormat(opts.output, ['text', 'json'] as const);
      const files = readSources(opts.filename ?? []);
      const r = await call<ApplyResult>(apiSocketPath(opts.apiSocket), 'POST', '/v1/apply', { files });
      print(r, output, () => [
        ...r.created.map((k) => `${policyName(k)} created`),
        ...r.configured.map((k) => `${policyName(k)} configured`),
        ...r.unchanged.map((k) => `${policyName(k)} unchanged`),
        ...r.namespaces.map((n) => `namespace/${n.name} ${n.result}`),
        ...r.notEnforced.flatMap((n) => n.notes.map((note) => `warning: ${n.policy}: ${note}`)),
        ...r.unsupported.map((u) => `skipped: ${u}`),
      ].join('\n') || 'nothing to apply');
    });

  apiOption(fileOption(program.command('delete'))
    .option('-o, --output <format>', 'text or json', 'text')
    .description('delete the policies (and namespace labels) named in the documents'))
    .action(async (opts: { filename?: string[]; output: string; apiSocket?: string }) => {
      const output = outputFormat(opts.output, ['text', 'json'] as const);
      const files = readSources(opts.filename ?? []);
      const r = await call<DeleteResult>(apiSocketPath(opts.apiSocket), 'POST', '/v1/delete', { files });
      print(r, output, () => [
        ...r.deleted.map((k) => `${policyName(k)} deleted`),
        ...r.notFound.map((k) => `${policyName(k)} not found`),
        ...r.namespaces.map((n) => `namespace/${n} labels removed`),
        ...r.unsupported.map((u) => `skipped: ${u}`),
      ].join('\n') || 'nothing to delete');
      if (r.notFound.length && !r.deleted.length) process.exitCode = 1;
    });

  const pol = program.command('policy').description('inspect and debug network policy');
  apiOption(pol.command('list')
    .option('-o, --output <format>', 'text or json', 'text')
    .description('list the applied policies'))
    .action(async (opts: { output: string; apiSocket?: string }) => {
      const output = outputFormat(opts.output, ['text', 'json'] as const);
      const list = await call<{ id: number; kind: string; name: string; namespace?: string; rules: number; defaultDeny: { ingress: boolean; egress: boolean }; notEnforced: string[] }[]>(apiSocketPath(opts.apiSocket), 'GET', '/v1/policies');
      print(list, output, () => table([
        ['KIND', 'NAMESPACE', 'NAME', 'RULES', 'DEFAULT-DENY', 'NOTES'],
        ...list.map((p) => [p.kind, p.namespace ?? '-', p.name, String(p.rules),
          [p.defaultDeny.ingress ? 'ingress' : '', p.defaultDeny.egress ? 'egress' : ''].filter(Boolean).join(',') || '-',
          p.notEnforced.length ? `${p.notEnforced.length} not enforced` : '-']),
      ]));
    });

  apiOption(pol.command('get')
    .argument('<name>')
    .option('-n, --namespace <ns>', 'namespace of the policy (not for cluster-wide policies)')
    .option('--kind <kind>', 'NetworkPolicy, CiliumNetworkPolicy or CiliumClusterwideNetworkPolicy (when names collide)')
    .option('-o, --output <format>', 'yaml or json', 'yaml')
    .description('show a policy as applied (yaml: the document; json: the document and how Waggle reads it)'))
    .action(async (name: string, opts: { namespace?: string; kind?: string; output: string; apiSocket?: string }) => {
      const output = outputFormat(opts.output, ['yaml', 'json'] as const);
      const q = new URLSearchParams({ name, ...(opts.namespace ? { namespace: opts.namespace } : {}), ...(opts.kind ? { kind: opts.kind } : {}) });
      const p = await call<{ source: unknown }>(apiSocketPath(opts.apiSocket), 'GET', `/v1/policy?${q.toString()}`);
      process.stdout.write(output === 'json' ? `${JSON.stringify(p, null, 2)}\n` : toYaml(p.source));
    });

  const trace = pol.command('trace')
    .requiredOption('--dport <port/proto>', 'destination port and protocol: 80/tcp, 53/udp, 8/icmp (ICMP type)')
    .option('-o, --output <format>', 'text or json', 'text')
    .description('the verdict a new connection would get, and the rule that decides it, at the source\'s egress and the destination\'s ingress');
  for (const side of ['from', 'to'] as const) {
    trace.option(`--${side}-endpoint <name>`, `the ${side === 'from' ? 'source' : 'destination'} is this endpoint`)
      .option(`--${side}-labels <k=v,...>`, 'an endpoint with these labels (need not exist)')
      .option(`--${side}-namespace <ns>`, `namespace for --${side}-labels (default "default")`)
      .option(`--${side}-ip <ip>`, 'an address (an endpoint\'s, the node\'s, or outside: its CIDR identity or world)')
      .option(`--${side}-entity <name>`, 'host, world, unmanaged, health, init, remote-node, kube-apiserver or ingress');
  }
  apiOption(trace).action(async (opts: Record<string, string | undefined>) => {
    const output = outputFormat(opts.output ?? 'text', ['text', 'json'] as const);
    const body = { from: partyOf(opts, 'from'), to: partyOf(opts, 'to'), dport: opts.dport };
    const r = await call<TraceResult>(apiSocketPath(opts.apiSocket), 'POST', '/v1/policy/trace', body);
    print(r, output, () => [
      `From ${r.from.name} (identity ${r.from.identity}) to ${r.to.name} (identity ${r.to.identity}), ${r.protocol === 'icmp' || r.protocol === 'icmpv6' ? `${r.protocol} type ${r.port}` : `${r.port}/${r.protocol}`}`,
      describeDirection('Egress', r.egress),
      describeDirection('Ingress', r.ingress),
      `Final verdict: ${r.verdict.toUpperCase()}`,
    ].join('\n'));
  });

  const ns = program.command('namespace').description('namespaces and their labels (for namespaceSelector)');
  apiOption(ns.command('label')
    .argument('<namespace>')
    .argument('<labels...>', 'k=v to set, k- to remove (like kubectl label)')
    .option('--overwrite', 'allow changing the value of an existing label')
    .option('-o, --output <format>', 'text or json', 'text')
    .description('set or remove labels of a namespace; policies selecting by them take effect at once'))
    .action(async (name: string, args: string[], opts: { overwrite?: boolean; output: string; apiSocket?: string }) => {
      const output = outputFormat(opts.output, ['text', 'json'] as const);
      const remove = args.filter((a) => /^[^=]+-$/.test(a)).map((a) => a.slice(0, -1));
      const set = args.filter((a) => !/^[^=]+-$/.test(a));
      let labels: Record<string, string>;
      try { labels = parseLabels(set.join(',')); } catch (err) { throw new UsageError((err as Error).message); }
      const r = await call<NamespaceInfo>(apiSocketPath(opts.apiSocket), 'POST', `/v1/namespaces/${encodeURIComponent(name)}/labels`, { labels, overwrite: opts.overwrite === true, remove });
      print(r, output, () => `namespace/${r.name} labeled (${formatLabels(r.labels)})`);
    });
  apiOption(ns.command('list')
    .option('-o, --output <format>', 'text or json', 'text')
    .description('list namespaces (those with labels or endpoints)'))
    .action(async (opts: { output: string; apiSocket?: string }) => {
      const output = outputFormat(opts.output, ['text', 'json'] as const);
      const list = await call<NamespaceInfo[]>(apiSocketPath(opts.apiSocket), 'GET', '/v1/namespaces');
      print(list, output, () => table([['NAME', 'LABELS'], ...list.map((n) => [n.name, formatLabels(n.labels)])]));
    });
  apiOption(ns.command('get')
    .argument('<namespace>')
    .option('-o, --output <format>', 'text or json', 'text')
    .description('show a namespace and its labels'))
    .action(async (name: string, opts: { output: string; apiSocket?: string }) => {
      const output = outputFormat(opts.output, ['text', 'json'] as const);
      const n = await call<NamespaceInfo>(apiSocketPath(opts.apiSocket), 'GET', `/v1/namespaces/${encodeURIComponent(name)}`);
      print(n, output, () => `Name:    ${n.name}\nLabels:  ${formatLabels(n.labels)}`);
    });

  apiOption(program.command('identity').command('list')
    .option('-o, --output <format>', 'text or json', 'text')
    .description('list security identities: reserved, endpoint (by labels) and CIDR'))
    .action(async (opts: { output: string; apiSocket?: string }) => {
      const output = outputFormat(opts.output, ['text', 'json'] as const);
      const list = await call<IdentityRecord[]>(apiSocketPath(opts.apiSocket), 'GET', '/v1/identities');
      print(list, output, () => table([['ID', 'KIND', 'REFS', 'LABELS'], ...list.map((i) => [String(i.id), i.kind, String(i.references), i.labels.join(' ')])]));
    });

  apiOption(bpf.command('policy').command('get')
    .argument('<endpoint>', 'endpoint name or ID')
    .option('-o, --output <format>', 'text or json', 'text')
    .description('the endpoint\'s entries in the datapath policy map'))
    .action(async (endpoint: string, opts: { output: string; apiSocket?: string }) => {
      const output = outputFormat(opts.output, ['text', 'json'] as const);
      const r = await call<{ endpoint: string; id: number; identity: number; flags: number; entries: { direction: string; identity: number; protocol: string; port: string; verdict: string; matchType: number; rule?: string }[] }>(apiSocketPath(opts.apiSocket), 'GET', `/v1/bpf/policy/${encodeURIComponent(endpoint)}`);
      const dirs = [r.flags & 1 ? 'ingress' : '', r.flags & 2 ? 'egress' : ''].filter(Boolean).join(', ') || 'none (everything allowed)';
      print(r, output, () => `endpoint ${r.endpoint} (ID ${r.id}, identity ${r.identity}); policy enforced: ${dirs}\n${table([
        ['DIRECTION', 'IDENTITY', 'PROTO', 'PORT', 'VERDICT', 'MATCH', 'RULE'],
        ...r.entries.map((e) => [e.direction, e.identity === 0 ? 'ANY' : String(e.identity), e.protocol, e.port, e.verdict, MATCH_TYPES[e.matchType] ?? String(e.matchType), e.rule ?? '-']),
      ])}`);
    });
  apiOption(bpf.command('ct').command('list')
    .option('-o, --output <format>', 'text or json', 'text')
    .description('live connection-tracking entries'))
    .action(async (opts: { output: string; apiSocket?: string }) => {
      const output = outputFormat(opts.output, ['text', 'json'] as const);
      const list = await call<{ protocol: string; source: string; sourcePort: number; destination: string; destinationPort: number; state: string; expiresInSeconds: number; srcIdentity: number; dstIdentity: number }[]>(apiSocketPath(opts.apiSocket), 'GET', '/v1/bpf/ct');
      print(list, output, () => table([
        ['PROTO', 'SOURCE', 'DESTINATION', 'STATE', 'EXPIRES', 'IDENTITIES'],
        ...list.map((c) => [c.protocol, `${c.source}:${c.sourcePort}`, `${c.destination}:${c.destinationPort}`, c.state, `${c.expiresInSeconds}s`, `${c.srcIdentity} -> ${c.dstIdentity}`]),
      ]));
    });
  apiOption(bpf.command('ipcache').command('list')
    .option('-o, --output <format>', 'text or json', 'text')
    .description('the datapath\'s prefix → identity map'))
    .action(async (opts: { output: string; apiSocket?: string }) => {
      const output = outputFormat(opts.output, ['text', 'json'] as const);
      const list = await call<{ prefix: string; identity: number }[]>(apiSocketPath(opts.apiSocket), 'GET', '/v1/bpf/ipcache');
      print(list, output, () => table([['PREFIX', 'IDENTITY'], ...list.map((e) => [e.prefix, String(e.identity)])]));
    });
}
