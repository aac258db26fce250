/** `waggle observe`: flows from the agent, Hubble-style. */
import type { Command } from 'commander';
import { apiSocketPath, stream } from '../client.js';
import { outputFormat, UsageError } from '../errors.js';
import { compactLine, type HubbleRecord } from '../../observe/hubble.js';

export function registerObserve(program: Command): void {
  program.command('observe')
    .description('show flows: the last ones, or follow them live')
    .option('--last <n>', 'show the last N flows (default: all kept, or none with --follow)')
    .option('-f, --follow', 'keep printing new flows until interrupted')
    .option('-o, --output <format>', 'compact or json (one Hubble flow object per line)', 'compact')
    .option('--api-socket <path>', 'the agent\'s API socket [env WAGGLE_API_SOCKET]')
    .action(async (opts: { last?: string; follow?: boolean; output: string; apiSocket?: string }) => {
      const output = outputFormat(opts.output, ['compact', 'json'] as const);
      if (opts.last !== undefined && !/^[1-9]\d*$/.test(opts.last)) throw new UsageError(`--last must be a positive integer, got ${opts.last}`);
      const q = new URLSearchParams();
      if (opts.last) q.set('last', opts.last);
      if (opts.follow) q.set('follow', 'true');
      const abort = new AbortController();
      // `waggle observe | head`: a closed pipe ends the command quietly.
      process.stdout.on('error', (err: NodeJS.ErrnoException) => {
        if (err.code === 'EPIPE') { abort.abort(); process.exit(0); }
        throw err;
      });
      const onSignal = (): void => abort.abort();
      process.once('SIGINT', onSignal);
      process.once('SIGTERM', onSignal);
      try {
        await stream(apiSocketPath(opts.apiSocket), `/v1/flows?${q}`, (value) => {
          const r = value as HubbleRecord;
          if (output === 'json') process.stdout.write(`${JSON.stringify(r)}\n`);
          else if ('flow' in r) process.stdout.write(`${compactLine(r.flow)}\n`);
          else process.stdout.write(`${r.time}: ${r.lost_events.num_events_lost} events lost (${r.lost_events.source})\n`);
        }, abort.signal);
      } finally {
        process.off('SIGINT', onSignal);
        process.off('SIGTERM', onSignal);
      }
    });
}
