/**
 * `waggle observe`: flows from the agent, Hubble-style. The filters are
 * evaluated by the agent (`GET /v1/flows?filter=…`), so only matching flows
 * cross the socket; the arguments are read by ./observe-args.ts, in order,
 * because `--not` applies to the flag after it.
 */
import { Command, Option, type ParseOptionsResult } from 'commander';
import { apiSocketPath, stream } from '../client.js';
import { OBSERVE_FLAGS, parseObserveArgs } from '../observe-args.js';
import { encodeFlowQuery } from '../../observe/filter.js';
import { createPrinter, useColor } from '../../observe/format.js';
import type { HubbleRecord } from '../../observe/hubble.js';

/** A command that keeps the arguments it was given, in order. */
class OrderedArgsCommand extends Command {
  orderedArgs: string[] = [];
  override parseOptions(argv: string[]): ParseOptionsResult {
    this.orderedArgs = [...argv];
    return super.parseOptions(argv);
  }
}

const HELP_AFTER = `
Filters combine as in hubble observe: values of one flag are alternatives
(--from-ip A --from-ip B: from A or B), different flags must all match
(--from-endpoint client --port 80), and --not negates the one filter flag
after it (--not --verdict FORWARDED hides forwarded flows). Lost-event
records are always printed.

Examples:
  waggle observe --last 20 --verdict DROPPED
  waggle observe -f --to-endpoint shop/web --port 8080 -o table
  waggle observe --since 5m --label app=client --not --protocol icmp
  waggle observe --from-ip 10.200.0.0/24 --type policy-verdict -o json`;

export function registerObserve(program: Command): void {
  const cmd = new OrderedArgsCommand('observe');
  cmd.copyInheritedSettings(program);
  // The flags fill a few screens: after a usage error, point at them instead.
  cmd.showHelpAfterError('(waggle observe --help lists the flags)');
  cmd.description('show flows: the last ones, or follow them live; filter them as hubble observe does');
  for (const f of OBSERVE_FLAGS) {
    const value = f.value ? ` <${f.value}>` : '';
    cmd.addOption(new Option(`${f.short ? `-${f.short}, ` : ''}--${f.long}${value}`, f.description).helpGroup(`${f.group}:`));
    // Aliases are accepted and described on the main flag.
    for (const a of f.aliases ?? []) cmd.addOption(new Option(`--${a}${value}`).hideHelp());
  }
  cmd.addHelpOption(new Option('-h, --help', 'display help for command').helpGroup('Other:'));
  cmd.addHelpText('after', HELP_AFTER);
  cmd.action(async () => {
    const args = parseObserveArgs(cmd.orderedArgs);
    const printer = createPrinter(args.output, {
      color: useColor(args.color, process.stdout.isTTY === true, process.env),
      nodeName: args.printNodeName,
      streaming: args.query.follow,
    });
    const write = (text: string): void => { if (text) process.stdout.write(text); };
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
      await stream(apiSocketPath(args.apiSocket), `/v1/flows?${encodeFlowQuery(args.query)}`, (value) => {
        write(printer.record(value as HubbleRecord));
      }, abort.signal);
      // A table without --follow is printed once its widths are known (also after Ctrl-C).
      write(printer.end());
    } finally {
      process.off('SIGINT', onSignal);
      process.off('SIGTERM', onSignal);
    }
  });
  program.addCommand(cmd);
}
