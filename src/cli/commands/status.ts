/** `waggle status`: what the agent says about itself. */
import type { Command } from 'commander';
import { apiSocketPath, call } from '../client.js';
import { outputFormat } from '../errors.js';

interface Status {
  version: string;
  nodeName: string;
  uptimeSeconds: number;
  endpoints: number;
  router: { ipv4?: string; ipv6?: string };
  ipam: { family: number; cidr: string; used: number; capacity: string }[];
  flows: { flowsSeen: number; stored: number; capacity: number; lostRingBuffer: number; lostBackpressure: number };
  policy: { policies: number; identities: number; lastSync?: { revision: number; ms: number } };
  services?: { services: number; frontends: number; backends: number; socketLb: string; devices: string[]; nodeAddresses?: string[] };
  bpffsRoot: string;
}

export function registerStatus(program: Command): void {
  program.command('status')
    .description('show the agent\'s state: node, endpoints, address pools, flows, policy, services')
    .option('-o, --output <format>', 'text or json', 'text')
    .option('--api-socket <path>', 'the agent\'s API socket [env WAGGLE_API_SOCKET]')
    .action(async (opts: { output: string; apiSocket?: string }) => {
      const output = outputFormat(opts.output, ['text', 'json'] as const);
      const s = await call<Status>(apiSocketPath(opts.apiSocket), 'GET', '/v1/status');
      if (output === 'json') {
        process.stdout.write(`${JSON.stringify(s, null, 2)}\n`);
        return;
      }
      process.stdout.write([
        `Node:       ${s.nodeName} (waggle ${s.version}, up ${s.uptimeSeconds} s)`,
        `Endpoints:  ${s.endpoints}`,
        `Router:     ${[s.router.ipv4, s.router.ipv6].filter(Boolean).join(', ')}`,
        ...s.ipam.map((p) => `IPv${p.family} pool: ${p.cidr} (${p.used} of ${p.capacity} in use)`),
        `Flows:      ${s.flows.flowsSeen} seen, ${s.flows.stored} of the last ${s.flows.capacity} kept`,
        `Lost:       ${s.flows.lostRingBuffer} events (ring buffer full), ${s.flows.lostBackpressure} flows (clients reading too slowly)`,
        `Policy:     ${s.policy.policies} policies, ${s.policy.identities} identities${s.policy.lastSync ? `, revision ${s.policy.lastSync.revision} (last computed in ${s.policy.lastSync.ms} ms)` : ''}`,
        ...(s.services ? [
          `Services:   ${s.services.services} services, ${s.services.frontends} frontends, ${s.services.backends} backends; socket LB on ${s.services.socketLb}`,
          `NodePort:   on ${s.services.nodeAddresses?.length ? s.services.nodeAddresses.join(', ') : 'no node address'}; ${s.services.devices.length > 0 ? `from outside through ${s.services.devices.join(', ')}` : 'from this node only (no --devices)'}`,
        ] : []),
        `bpffs:      ${s.bpffsRoot}`,
      ].join('\n') + '\n');
    });
}
