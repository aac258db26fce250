/**
 * Shared benchmark helpers.
 *
 * The machines these run on change speed by 3–4× within seconds (shared
 * hosts, frequency scaling), so a benchmark that times contender A for a
 * while and then contender B compares two different machines. Instead,
 * {@link interleave} runs short slices of every contender in turn, round after
 * round, and summarises each by its median rate; {@link pairedRatio} compares
 * two contenders round by round (slices of one round ran seconds apart at
 * most, on the same "machine"), which is steadier than a ratio of medians.
 *
 * @example
 * const r = interleave({
 *   fast: { setup: refill, run: () => drainFast() },
 *   slow: { setup: refill, run: () => drainSlow() },
 * }, { rounds: 15 });
 * console.log(formatReport('drain', r, { 'fast / slow': pairedRatio(r.fast, r.slow) }));
 */

/** A contender's timed work: returns how many items it processed. */
export type TimedRun = () => number;

/** A contender with untimed preparation. */
export interface SliceSpec {
  /** Runs before every timed slice, untimed (e.g. refill the queue the slice drains). */
  setup?: () => void;
  /** The timed work; returns how many items it processed (0 items is an error). */
  run: TimedRun;
  /** Runs after every timed slice, untimed (e.g. check the result). */
  teardown?: () => void;
}

/** A contender: a bare timed function or a {@link SliceSpec}. */
export type Slice = TimedRun | SliceSpec;

/** How {@link interleave} runs. */
export interface InterleaveOptions {
  /** Timed rounds; each runs every slice once. */
  rounds: number;
  /** Untimed rounds before them, for JIT warm-up (default 2). */
  warmup?: number;
  /** Called after each round with its index and the rates measured (items/s by name). */
  onRound?: (round: number, rates: Record<string, number>) => void;
}

/** The rates one contender reached, in items per second. */
export interface RateSummary {
  /** Median over the rounds. */
  median: number;
  min: number;
  max: number;
  /** One rate per round, in round order (index i of every contender is the same round). */
  samples: number[];
}

/** Median of `xs` (mean of the middle two for an even count); NaN for none. */
export function median(xs: readonly number[]): number {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 === 1 ? (s[mid] as number) : ((s[mid - 1] as number) + (s[mid] as number)) / 2;
}

function summarise(samples: number[]): RateSummary {
  return { median: median(samples), min: Math.min(...samples), max: Math.max(...samples), samples };
}

function asSpec(slice: Slice): SliceSpec {
  return typeof slice === 'function' ? { run: slice } : slice;
}

function timeSlice(name: string, spec: SliceSpec): number {
  spec.setup?.();
  const t0 = process.hrtime.bigint();
  const items = spec.run();
  const ns = Number(process.hrtime.bigint() - t0);
  spec.teardown?.();
  if (!(items > 0)) throw new Error(`benchmark slice ${name} processed ${items} items`);
  return (items * 1e9) / Math.max(ns, 1);
}

/**
 * The result of {@link interleave}: one {@link RateSummary} per slice, with the
 * same keys (optional slices give optional results).
 */
export type InterleaveResult<S> = { [K in keyof S]: RateSummary };

/**
 * Runs every slice once per round, `rounds` times (after `warmup` untimed
 * rounds), rotating the order each round so no contender always runs first,
 * and returns each contender's rates (items/s) with their median. Entries
 * that are `undefined` (optional contenders that are unavailable) are left
 * out of the run and of the result.
 */
export function interleave<S extends Record<string, Slice | undefined>>(slices: S, options: number | InterleaveOptions): InterleaveResult<S> {
  const opts: InterleaveOptions = typeof options === 'number' ? { rounds: options } : options;
  const names = Object.keys(slices).filter((n) => slices[n] !== undefined);
  if (names.length === 0) throw new Error('interleave: no slices');
  if (!Number.isInteger(opts.rounds) || opts.rounds < 1) throw new Error(`interleave: rounds must be a positive integer, got ${opts.rounds}`);
  const specs = names.map((n) => asSpec(slices[n] as Slice));
  const samples = names.map((): number[] => []);
  const warmup = opts.warmup ?? 2;
  for (let round = -warmup; round < opts.rounds; round++) {
    const rates: Record<string, number> = {};
    for (let k = 0; k < names.length; k++) {
      const i = (k + Math.max(round, 0)) % names.length;
      const name = names[i] as string;
      const rate = timeSlice(name, specs[i] as SliceSpec);
      rates[name] = rate;
      if (round >= 0) (samples[i] as number[]).push(rate);
    }
    if (round >= 0) opts.onRound?.(round, rates);
  }
  const out: Record<string, RateSummary> = {};
  names.forEach((n, i) => { out[n] = summarise(samples[i] as number[]); });
  return out as InterleaveResult<S>;
}

/**
 * Median over rounds of `a`'s rate divided by `b`'s rate in the same round.
 * Both must come from the same {@link interleave} call.
 */
export function pairedRatio(a: RateSummary, b: RateSummary): number {
  const n = Math.min(a.samples.length, b.samples.length);
  const ratios: number[] = [];
  for (let i = 0; i < n; i++) ratios.push((a.samples[i] as number) / (b.samples[i] as number));
  return median(ratios);
}

/** `12.3 M/s`, `456 k/s`, `789 /s` (with `unit`: `12.3 M records/s`). */
export function formatRate(perSecond: number, unit = ''): string {
  const u = unit ? ` ${unit}` : '';
  if (!Number.isFinite(perSecond)) return `-${u}/s`;
  if (perSecond >= 1e9) return `${(perSecond / 1e9).toFixed(2)} G${u}/s`;
  if (perSecond >= 1e6) return `${(perSecond / 1e6).toFixed(2)} M${u}/s`;
  if (perSecond >= 1e3) return `${(perSecond / 1e3).toFixed(1)} k${u}/s`;
  return `${perSecond.toFixed(0)}${u ? u : ' '}/s`;
}

/**
 * A readable table: one line per contender (median, min–max over the rounds),
 * then the named ratios (e.g. from {@link pairedRatio}).
 */
export function formatReport(
  title: string,
  results: Record<string, RateSummary>,
  ratios: Record<string, number> = {},
  unit = '',
): string {
  const names = Object.keys(results);
  const width = Math.max(...names.map((n) => n.length), ...Object.keys(ratios).map((n) => n.length), 8);
  const rounds = Math.max(0, ...names.map((n) => results[n]?.samples.length ?? 0));
  const lines = [`${title} (median of ${rounds} interleaved rounds; min – max)`];
  for (const n of names) {
    const r = results[n] as RateSummary;
    lines.push(`  ${n.padEnd(width)}  ${formatRate(r.median, unit).padStart(18)}   (${formatRate(r.min)} – ${formatRate(r.max)})`);
  }
  for (const [n, v] of Object.entries(ratios)) lines.push(`  ${n.padEnd(width)}  ${`${v.toFixed(2)}×`.padStart(18)}`);
  return lines.join('\n');
}

/** Prints {@link formatReport} to stdout. */
export function printReport(
  title: string,
  results: Record<string, RateSummary>,
  ratios: Record<string, number> = {},
  unit = '',
): void {
  process.stdout.write(`${formatReport(title, results, ratios, unit)}\n`);
}
