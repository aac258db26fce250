#!/usr/bin/env node
/**
 * The `waggle` command. Exit codes: 0 success, 1 the operation failed,
 * 2 usage error. Errors go to stderr as one sentence (details with --verbose).
 */
import { Command, CommanderError } from 'commander';
import { VERSION } from '../version.js';
import { UsageError } from './errors.js';
import { registerAgent } from './commands/agent.js';
import { registerEndpoint } from './commands/endpoint.js';
import { registerObserve } from './commands/observe.js';
import { registerStatus } from './commands/status.js';
import { registerPolicy } from './commands/policy.js';
import { registerService } from './commands/service.js';

const program = new Command();
program
  .name('waggle')
  .description('eBPF networking, security and observability for Linux workloads')
  .version(VERSION, '-V, --version', 'print the version')
  .option('--verbose', 'print error details')
  .showHelpAfterError()
  .exitOverride();

program
  .command('selfcheck')
  .description('check this machine can run the datapath: load, attach in a throw-away namespace, pass traffic, count it (root)')
  .action(async () => {
    const { runSelfcheck } = await import('../selfcheck/index.js');
    const ok = await runSelfcheck((line) => process.stdout.write(`${line}\n`));
    process.exitCode = ok ? 0 : 1;
  });

program
  .command('demo')
  .description('see Waggle work: an agent, labelled endpoints, real traffic and its flows, then a clean exit (root)')
  .option('--duration <seconds>', 'seconds of traffic; 0 runs until Ctrl-C', '15')
  .option('--prefix <name>', 'prefix of the endpoint names', 'demo')
  .action(async (opts: { duration: string; prefix: string }) => {
    if (!/^\d+$/.test(opts.duration)) throw new UsageError(`--duration must be a whole number of seconds, got ${opts.duration}`);
    const { runDemo } = await import('../demo/index.js');
    const ok = await runDemo({
      durationSeconds: Number(opts.duration),
      prefix: opts.prefix,
      podCidrs: ['10.201.0.0/24', 'fd00:201::/64'],
      out: (line) => process.stdout.write(`${line}\n`),
    });
    process.exitCode = ok ? 0 : 1;
  });

const bpf = program.command('bpf').description('inspect eBPF objects and kernel state');
bpf
  .command('spec')
  .argument('<object>', 'a compiled BPF object (.bpf.o) or the name of one of Waggle\'s (e.g. counter_xdp)')
  .option('-o, --output <format>', 'text or json', 'text')
  .description('print the maps, programs and load-time constants an object declares (no privileges needed)')
  .action(async (object: string, opts: { output: string }) => {
    const { readObjectSpec, formatObjectSpec } = await import('../bpf/object.js');
    const { bpfObjectPath } = await import('../datapath/objects.js');
    if (opts.output !== 'text' && opts.output !== 'json') throw new UsageError(`unknown output format ${opts.output} (text or json)`);
    const spec = readObjectSpec(object.includes('/') || object.endsWith('.o') ? object : bpfObjectPath(object));
    process.stdout.write(opts.output === 'json' ? `${JSON.stringify(spec, null, 2)}\n` : `${formatObjectSpec(spec)}\n`);
  });

registerAgent(program);
registerEndpoint(program);
registerObserve(program);
registerStatus(program);
registerPolicy(program, bpf);
registerService(program, bpf);

async function main(): Promise<void> {
  try {
    await program.parseAsync(process.argv);
  } catch (err) {
    if (err instanceof CommanderError) {
      process.exitCode = err.exitCode === 0 ? 0 : 2;
      return;
    }
    const verbose = program.opts<{ verbose?: boolean }>().verbose === true;
    const e = err as Error;
    process.stderr.write(`waggle: ${e.message.split('\n')[0] ?? e.message}\n`);
    if (verbose && e.stack) process.stderr.write(`${e.stack}\n`);
    process.exitCode = err instanceof UsageError || (err instanceof Error && err.name === 'ConfigError') ? 2 : 1;
  }
}

await main();
