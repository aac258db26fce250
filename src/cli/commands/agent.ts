/** `waggle agent`: run the node agent (or remove everything it made with --cleanup). */
import type { Command } from 'commander';
import pino from 'pino';
import { CONFIG_KEYS, envName, loadAgentConfig } from '../../agent/config.js';

export function registerAgent(program: Command): void {
  const cmd = program
    .command('agent')
    .description('run the node agent (root; one per node; state survives restarts)')
    .option('--config <file>', 'YAML config file (keys are the flag names below)')
    .option('--cleanup', 'remove everything the agent ever created (endpoints, pinned programs and maps, state) and exit');
  const help: Record<keyof typeof CONFIG_KEYS, string> = {
    'node-name': 'name of this node (default: the host name)',
    'state-dir': 'directory of the persisted state (default /var/lib/waggle)',
    'bpffs-root': 'bpffs directory for pinned maps and links, mounted if needed (default /sys/fs/bpf/waggle)',
    'cgroup-root': 'cgroup v2 directory for socket hooks (default: the cgroup2 mount)',
    'api-socket': 'unix socket of the API (default /var/run/waggle/waggle.sock)',
    'http-listen': 'HOST:PORT for health, metrics and the UI; port 0 picks one (default 127.0.0.1:9962)',
    'pod-cidr': 'endpoint address pool; repeat for one IPv4 and one IPv6 CIDR (default 10.200.0.0/16 and fd00:200::/64)',
    'service-cidr': 'ClusterIP pool for Services without one; repeat for one IPv4 and one IPv6 CIDR (default 10.96.0.0/16 and fd00:96::/112)',
    'maglev-table-size': 'entries of each Maglev lookup table, a prime (default 16381)',
    'node-port-range': 'ports NodePort Services may use (default 30000-32767)',
    devices: 'host devices that take NodePort traffic from outside the node; repeat or comma-separate (default none: NodePorts answer only on the node itself)',
    'flow-buffer': 'flows kept for `waggle observe` (default 4096)',
    'ct-gc-interval': 'seconds between conntrack garbage collections (default 30)',
    'log-level': 'trace, debug, info, warn or error (default info)',
  };
  for (const flag of Object.keys(CONFIG_KEYS) as (keyof typeof CONFIG_KEYS)[]) {
    const text = `${help[flag]} [env ${envName(flag)}]`;
    const repeat = (v: string, prev: string[] | undefined): string[] => [...(prev ?? []), v];
    if (flag === 'pod-cidr' || flag === 'service-cidr') cmd.option(`--${flag} <cidr>`, text, repeat);
    else if (flag === 'devices') cmd.option(`--${flag} <name>`, text, repeat);
    else cmd.option(`--${flag} <value>`, text);
  }
  cmd.action(async (opts: Record<string, unknown>) => {
    const flags: Record<string, unknown> = {};
    for (const flag of Object.keys(CONFIG_KEYS)) {
      const key = flag.replace(/-([a-z])/g, (_, c: string) => c.toUpperCase());
      if (opts[key] !== undefined) flags[flag] = opts[key];
    }
    const cfg = loadAgentConfig({ ...(typeof opts.config === 'string' ? { configFile: opts.config } : {}), flags });
    const log = pino({ level: cfg.logLevel, base: { node: cfg.nodeName } });
    if (opts.cleanup) {
      const { cleanupAgent } = await import('../../agent/agent.js');
      const removed = cleanupAgent(cfg, log);
      process.stdout.write(`removed ${removed.length} endpoint(s)${removed.length ? `: ${removed.join(', ')}` : ''}, pinned objects under ${cfg.bpffsRoot}, state in ${cfg.stateDir}\n`);
      return;
    }
    const { startAgent } = await import('../../agent/agent.js');
    const agent = await startAgent(cfg, log);
    await new Promise<void>((resolve) => {
      const stop = (sig: string): void => {
        log.info({ signal: sig }, 'stopping');
        void agent.stop().then(resolve);
      };
      process.once('SIGTERM', () => stop('SIGTERM'));
      process.once('SIGINT', () => stop('SIGINT'));
    });
  });
}
