/** `waggle service list|get`, `waggle bpf lb list`: services and what the datapath does with them. */
import type { Command } from 'commander';
import { apiSocketPath, call } from '../client.js';
import { outputFormat } from '../errors.js';
import { apiOption, print, table } from '../format.js';
import type { ServiceView } from '../../agent/service-routes.js';

const frontendText = (f: ServiceView['frontends'][number]): string => `${f.address.includes(':') ? `[${f.address}]` : f.address}:${f.port}/${f.protocol}`;

export function registerService(program: Command, bpf: Command): void {
  const svc = program.command('service').alias('svc').description('inspect load-balanced services (apply them with `waggle apply -f`)');
  apiOption(svc.command('list')
    .option('-o, --output <format>', 'text or json', 'text')
    .description('list the services, their addresses and backends'))
    .action(async (opts: { output: string; apiSocket?: string }) => {
      const output = outputFormat(opts.output, ['text', 'json'] as const);
      const list = await call<ServiceView[]>(apiSocketPath(opts.apiSocket), 'GET', '/v1/services');
      print(list, output, () => (list.length === 0 ? 'no services' : table([
        ['NAMESPACE', 'NAME', 'TYPE', 'CLUSTER-IP', 'PORTS', 'BACKENDS', 'ALGORITHM'],
        ...list.map((s) => {
          // Backends per frontend (the most any ClusterIP frontend has: per family and port they are the same endpoints).
          const active = Math.max(0, ...s.frontends.filter((f) => f.kind === 'ClusterIP').map((f) => f.backends.filter((b) => b.state === 'active').length));
          return [
            s.namespace, s.name, s.type, s.headless ? 'None' : s.clusterIPs.join(','),
            s.ports.map((p) => `${p.port}${p.nodePort ? `:${p.nodePort}` : ''}/${p.protocol}`).join(','),
            String(active), s.lbAlgorithm ?? 'random',
          ];
        }),
      ])));
    });
  apiOption(svc.command('get')
    .argument('<name>', 'the service')
    .option('-n, --namespace <ns>', 'its namespace', 'default')
    .option('-o, --output <format>', 'text or json', 'text')
    .description('show one service: its frontends and each one\'s backends'))
    .action(async (name: string, opts: { namespace: string; output: string; apiSocket?: string }) => {
      const output = outputFormat(opts.output, ['text', 'json'] as const);
      const s = await call<ServiceView>(apiSocketPath(opts.apiSocket), 'GET', `/v1/services/${encodeURIComponent(opts.namespace)}/${encodeURIComponent(name)}`);
      print(s, output, () => [
        `Name:       ${s.namespace}/${s.name}`,
        `Type:       ${s.type}${s.headless ? ' (headless: not load-balanced)' : ''}`,
        `ClusterIPs: ${s.clusterIPs.join(', ') || 'None'}`,
        `Selector:   ${s.selector ? Object.entries(s.selector).map(([k, v]) => `${k}=${v}`).join(',') : '(none: EndpointSlices)'}`,
        `Affinity:   ${s.sessionAffinity}${s.sessionAffinity === 'ClientIP' ? ` (${s.sessionAffinityTimeoutSeconds ?? 10800} s)` : ''}`,
        `Algorithm:  ${s.lbAlgorithm ?? 'random'}`,
        ...s.frontends.flatMap((f) => [
          `${f.kind} ${frontendText(f)}${f.portName ? ` (${f.portName})` : ''}:`,
          ...(f.backends.length ? f.backends.map((b) => `  -> ${b.address.includes(':') ? `[${b.address}]` : b.address}:${b.port}${b.state === 'terminating' ? ' (terminating)' : ''}`) : ['  (no backends: connections are refused)']),
        ]),
      ].join('\n'));
    });

  const lb = bpf.command('lb').description('the datapath\'s service load-balancing maps');
  apiOption(lb.command('list')
    .option('-o, --output <format>', 'text or json', 'json')
    .description('the lb maps as written: services (slots), backends, Maglev tables'))
    .action(async (opts: { output: string; apiSocket?: string }) => {
      const output = outputFormat(opts.output, ['json'] as const);
      const state = await call<unknown>(apiSocketPath(opts.apiSocket), 'GET', '/v1/bpf/lb');
      print(state, output, () => JSON.stringify(state, null, 2));
    });
}
