/** Output helpers shared by the CLI's commands. */
import type { Command } from 'commander';

/** Adds `--api-socket` to a client command. */
export function apiOption(cmd: Command): Command {
  return cmd.option('--api-socket <path>', 'the agent\'s API socket [env WAGGLE_API_SOCKET]');
}

/** Left-aligned columns, two spaces apart; the first row is the header. */
export function table(rows: string[][]): string {
  const widths = rows[0]?.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length))) ?? [];
  return rows.map((r) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i] ?? 0))).join('  ')).join('\n');
}

/** `k=v,k=v`, or `-` for none. */
export function formatLabels(l: Record<string, string>): string {
  return Object.entries(l).map(([k, v]) => `${k}=${v}`).join(',') || '-';
}

/** Prints a value as pretty JSON, or as the text `text()` makes. */
export function print(value: unknown, output: string, text: () => string): void {
  process.stdout.write(`${output === 'json' ? JSON.stringify(value, null, 2) : text()}\n`);
}
