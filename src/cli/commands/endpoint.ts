/** `waggle endpoint create|list|get|delete` and `waggle exec`. */
import { spawn } from 'node:child_process';
import type { Command } from 'commander';
import { apiSocketPath, call } from '../client.js';
import { outputFormat, UsageError } from '../errors.js';
import { apiOption, formatLabels, print, table } from '../format.js';
import { parseLabels } from '../../endpoint/labels.js';
import type { EndpointStatus } from '../../endpoint/manager.js';

function describe(e: EndpointStatus): string {
  return [
    `Name:       ${e.name}`,
    `ID:         ${e.id}`,
    `Namespace:  ${e.namespace}`,
    `Labels:     ${formatLabels(e.labels)}`,
    `Identity:   ${e.identity ?? '-'}`,
    `IPv4:       ${e.ipv4 ?? '-'}`,
    `IPv6:       ${e.ipv6 ?? '-'}`,
    `MAC:        ${e.mac}`,
    `Interface:  ${e.hostIfname} (ifindex ${e.hostIfindex}, MAC ${e.hostMac})`,
    `Netns:      ${e.netnsPath}${e.netnsCreated ? '' : ' (adopted)'}`,
    `State:      ${e.state}${e.problem ? ` (${e.problem})` : ''}`,
    `Created:    ${e.createdAt}`,
  ].join('\n');
}

export function registerEndpoint(program: Command): void {
  const ep = program.command('endpoint').description('manage the workloads attached to this node');

  apiOption(ep.command('create')
    .argument('<name>', 'endpoint name (a DNS label)')
    .option('-l, --labels <k=v,...>', 'labels, e.g. app=web,tier=front', '')
    .option('-n, --namespace <ns>', 'namespace of the endpoint', 'default')
    .option('--netns <path>', 'adopt this network namespace instead of creating one')
    .option('-o, --output <format>', 'text or json', 'text')
    .description('create an endpoint: a network namespace, a veth pair, addresses and the datapath programs'))
    .action(async (name: string, opts: { labels: string; namespace: string; netns?: string; output: string; apiSocket?: string }) => {
      const output = outputFormat(opts.output, ['text', 'json'] as const);
      let labels: Record<string, string>;
      try { labels = parseLabels(opts.labels); } catch (err) { throw new UsageError((err as Error).message); }
      const e = await call<EndpointStatus>(apiSocketPath(opts.apiSocket), 'POST', '/v1/endpoints', { name, namespace: opts.namespace, labels, ...(opts.netns ? { netns: opts.netns } : {}) });
      print(e, output, () => `endpoint ${e.name} created (ID ${e.id}, ${[e.ipv4, e.ipv6].filter(Boolean).join(', ')})`);
    });

  apiOption(ep.command('list')
    .option('-o, --output <format>', 'text or json', 'text')
    .description('list the endpoints'))
    .action(async (opts: { output: string; apiSocket?: string }) => {
      const output = outputFormat(opts.output, ['text', 'json'] as const);
      const list = await call<EndpointStatus[]>(apiSocketPath(opts.apiSocket), 'GET', '/v1/endpoints');
      print(list, output, () => table([
        ['NAME', 'ID', 'NAMESPACE', 'IPV4', 'IPV6', 'LABELS', 'STATE'],
        ...list.map((e) => [e.name, String(e.id), e.namespace, e.ipv4 ?? '-', e.ipv6 ?? '-', formatLabels(e.labels), e.state]),
      ]));
    });

  apiOption(ep.command('get')
    .argument('<name>')
    .option('-o, --output <format>', 'text or json', 'text')
    .description('show one endpoint'))
    .action(async (name: string, opts: { output: string; apiSocket?: string }) => {
      const output = outputFormat(opts.output, ['text', 'json'] as const);
      const e = await call<EndpointStatus>(apiSocketPath(opts.apiSocket), 'GET', `/v1/endpoints/${encodeURIComponent(name)}`);
      print(e, output, () => describe(e));
    });

  apiOption(ep.command('delete')
    .argument('<name>')
    .option('-o, --output <format>', 'text or json', 'text')
    .description('delete an endpoint and everything made for it'))
    .action(async (name: string, opts: { output: string; apiSocket?: string }) => {
      const output = outputFormat(opts.output, ['text', 'json'] as const);
      const r = await call<{ deleted: string }>(apiSocketPath(opts.apiSocket), 'DELETE', `/v1/endpoints/${encodeURIComponent(name)}`);
      print(r, output, () => `endpoint ${r.deleted} deleted`);
    });

  apiOption(program.command('exec')
    .argument('<name>', 'endpoint')
    .argument('<command...>', 'command and arguments (after --)')
    .description('run a command inside an endpoint\'s network namespace, in the agent\'s cgroup (so service addresses are balanced at connect time)'))
    .action(async (name: string, command: string[], opts: { apiSocket?: string }) => {
      const socket = apiSocketPath(opts.apiSocket);
      const e = await call<EndpointStatus>(socket, 'GET', `/v1/endpoints/${encodeURIComponent(name)}`);
      const status = await call<{ services?: { socketLb?: string } }>(socket, 'GET', '/v1/status');
      const cgroup = status.services?.socketLb;
      // The shell joins the cgroup, then becomes nsenter (same PID), which becomes the command.
      const args = cgroup
        ? ['-c', 'echo $$ > "$1/cgroup.procs" && shift && exec nsenter "$@"', 'waggle-exec', cgroup, `--net=${e.netnsPath}`, '--', ...command]
        : ['-c', 'exec nsenter "$@"', 'waggle-exec', `--net=${e.netnsPath}`, '--', ...command];
      const child = spawn('/bin/sh', args, { stdio: 'inherit' });
      const code = await new Promise<number>((resolve) => {
        child.once('error', (err) => { process.stderr.write(`waggle: cannot run nsenter: ${err.message}\n`); resolve(1); });
        child.once('exit', (c, sig) => resolve(c ?? (sig ? 128 : 1)));
      });
      process.exitCode = code;
    });
}
