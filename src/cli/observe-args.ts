/**
 * `waggle observe`'s command line → a FlowQuery and output options, with
 * `hubble observe`'s meaning: repeating a filter flag ORs its values,
 * different filter flags AND, and `--not` negates the one filter flag after
 * it. Because `--not` is positional, this parser reads the arguments itself,
 * in order (commander only lists the flags in --help and rejects unknown
 * ones); it is pure, so every rule is unit-tested.
 *
 * The flags that are not negated form one include filter; each negated flag
 * is an exclude filter of its own, so a flow is hidden when it matches any of
 * them (`--not --verdict FORWARDED --not --port 53` hides both).
 */
import {
  compileFilter, EVENT_TYPES, FilterError, parseTimeBound, PROTOCOLS, TRAFFIC_DIRECTIONS, VERDICTS,
  type FlowFilter, type FlowQuery,
} from '../observe/filter.js';
import { COLOR_MODES, OUTPUT_FORMATS, type ColorMode, type OutputFormat } from '../observe/format.js';
import { UsageError } from './errors.js';

/** What a value of a filter flag is. */
type ValueKind = 'ip' | 'endpoint' | 'label' | 'namespace' | 'identity' | 'port' | 'protocol' | 'verdict' | 'type' | 'direction';

export type FlagGroup = 'Filters' | 'Time and count' | 'Output' | 'Other';

/** One flag of `waggle observe`. */
export interface ObserveFlag {
  /** The long name without dashes. */
  long: string;
  short?: string;
  /** Other long names (Hubble's `--pod` for `--endpoint`). */
  aliases?: string[];
  /** The value's placeholder in --help; a flag without one is a switch. */
  value?: string;
  description: string;
  group: FlagGroup;
  /** For filter flags: the FlowFilter field the value goes to, and what it is. */
  filter?: { field: keyof FlowFilter; kind: ValueKind };
}

type Side = 'from' | 'to' | 'either';
const SIDE_TEXT: Record<Side, string> = { from: 'from', to: 'to', either: 'from or to' };

function sided(
  name: string, aliases: string[] | undefined, value: string, kind: ValueKind,
  fields: Record<Side, keyof FlowFilter>, what: (direction: string) => string,
  short?: string,
): ObserveFlag[] {
  return (['from', 'to', 'either'] as const).map((side) => {
    const other = aliases?.map((a) => (side === 'either' ? a : `${side}-${a}`));
    return {
      long: side === 'either' ? name : `${side}-${name}`,
      ...(side === 'either' && short ? { short } : {}),
      ...(other ? { aliases: other } : {}),
      value,
      description: what(SIDE_TEXT[side]) + (other ? ` (also ${other.map((a) => `--${a}`).join(', ')})` : ''),
      group: 'Filters' as const,
      filter: { field: fields[side], kind },
    };
  });
}

/** Every flag, in --help order. */
export const OBSERVE_FLAGS: readonly ObserveFlag[] = [
  { long: 'not', description: 'negate the filter flag that follows (--not --verdict FORWARDED); each negated flag hides what it matches', group: 'Filters' },
  ...sided('ip', undefined, 'ip', 'ip', { from: 'sourceIp', to: 'destinationIp', either: 'ip' },
    (dir) => `flows ${dir} this IP address or CIDR`),
  ...sided('endpoint', ['pod'], 'name', 'endpoint', { from: 'sourceEndpoint', to: 'destinationEndpoint', either: 'endpoint' },
    (dir) => `flows ${dir} this local endpoint: NAME or NAMESPACE/NAME`),
  ...sided('label', undefined, 'selector', 'label', { from: 'sourceLabel', to: 'destinationLabel', either: 'label' },
    (dir) => `flows ${dir} peers whose labels match this selector (app=web, k8s:app=web, app, !app, app!=web, app in (a,b); comma = and)`),
  ...sided('namespace', undefined, 'namespace', 'namespace', { from: 'sourceNamespace', to: 'destinationNamespace', either: 'namespace' },
    (dir) => `flows ${dir} endpoints in this namespace`, 'n'),
  ...sided('identity', undefined, 'id', 'identity', { from: 'sourceIdentity', to: 'destinationIdentity', either: 'identity' },
    (dir) => `flows ${dir} this numeric security identity`),
  ...sided('port', undefined, 'port', 'port', { from: 'sourcePort', to: 'destinationPort', either: 'port' },
    (dir) => `TCP, UDP or SCTP flows ${dir} this port`),
  { long: 'protocol', value: 'proto', description: `flows of this protocol: ${PROTOCOLS.join(', ')}`, group: 'Filters', filter: { field: 'protocol', kind: 'protocol' } },
  { long: 'verdict', value: 'verdict', description: `flows with this verdict: ${VERDICTS.join(', ')}`, group: 'Filters', filter: { field: 'verdict', kind: 'verdict' } },
  { long: 'type', short: 't', value: 'type', description: `events of this type: ${EVENT_TYPES.join(', ')}`, group: 'Filters', filter: { field: 'type', kind: 'type' } },
  { long: 'traffic-direction', value: 'dir', description: 'flows in this direction: ingress or egress', group: 'Filters', filter: { field: 'trafficDirection', kind: 'direction' } },
  { long: 'since', value: 'time', description: 'flows since this time: a duration back from now (30s, 5m, 1h30m, 2d) or a timestamp (2026-01-02T15:04:05Z)', group: 'Time and count' },
  { long: 'until', value: 'time', description: 'flows until this time (same forms as --since)', group: 'Time and count' },
  { long: 'last', value: 'n', description: 'the last N matching flows (default: all kept; with --follow, none before the live ones)', group: 'Time and count' },
  { long: 'follow', short: 'f', description: 'keep printing new flows until interrupted', group: 'Time and count' },
  { long: 'output', short: 'o', value: 'format', description: 'compact (default), json (one Hubble record per line; also jsonpb), table or dict', group: 'Output' },
  { long: 'color', value: 'when', description: 'colour compact, table and dict output: auto (default: on a terminal, unless NO_COLOR is set), always or never', group: 'Output' },
  { long: 'print-node-name', description: 'show the node that saw each flow', group: 'Output' },
  { long: 'api-socket', value: 'path', description: 'the agent\'s API socket [env WAGGLE_API_SOCKET]', group: 'Other' },
];

/** What `waggle observe` was asked for. */
export interface ObserveArgs {
  query: FlowQuery;
  output: OutputFormat;
  color: ColorMode;
  printNodeName: boolean;
  apiSocket?: string;
}

const byLong = new Map<string, ObserveFlag>();
const byShort = new Map<string, ObserveFlag>();
for (const f of OBSERVE_FLAGS) {
  byLong.set(f.long, f);
  for (const a of f.aliases ?? []) byLong.set(a, f);
  if (f.short) byShort.set(f.short, f);
}

/** One flag as written (`name` is how the user spelled it, for messages) and its value. */
interface Token { flag: ObserveFlag; name: string; value?: string }

/** Splits the arguments into flags and values: `--flag value`, `--flag=value`, `-o json`, `-ojson`, `-fo json`. */
function tokenize(argv: readonly string[]): Token[] {
  const tokens: Token[] = [];
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (arg === '--' || !arg.startsWith('-') || arg === '-') {
      const extra = arg === '--' ? argv[i + 1] : arg;
      if (extra === undefined) continue;
      throw new UsageError(`waggle observe takes no arguments, got ${JSON.stringify(extra)} (filters are flags, like --from-endpoint ${extra})`);
    }
    if (arg.startsWith('--')) {
      const eq = arg.indexOf('=');
      const name = eq < 0 ? arg : arg.slice(0, eq);
      const flag = byLong.get(name.slice(2));
      if (!flag) throw new UsageError(`unknown option ${name} (see waggle observe --help)`);
      if (!flag.value) {
        if (eq >= 0) throw new UsageError(`${name} takes no value, got ${JSON.stringify(arg.slice(eq + 1))}`);
        tokens.push({ flag, name });
        continue;
      }
      const value = eq >= 0 ? arg.slice(eq + 1) : argv[++i];
      if (value === undefined) throw new UsageError(`${name} needs a value (${name} <${flag.value}>)`);
      tokens.push({ flag, name, value });
      continue;
    }
    // A group of short flags; the first that takes a value takes the rest of the group or the next argument.
    for (let j = 1; j < arg.length; j++) {
      const name = `-${arg[j]!}`;
      const flag = byShort.get(arg[j]!);
      if (!flag) throw new UsageError(`unknown option ${name} (see waggle observe --help)`);
      if (!flag.value) {
        tokens.push({ flag, name });
        continue;
      }
      const value = j + 1 < arg.length ? arg.slice(j + 1) : argv[++i];
      if (value === undefined) throw new UsageError(`${name} needs a value (${name} <${flag.value}>)`);
      tokens.push({ flag, name, value });
      break;
    }
  }
  return tokens;
}

const DNS_LABEL = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/;

function oneOf<T extends string>(name: string, value: string, allowed: readonly T[], what: string, normal: string): T {
  if ((allowed as readonly string[]).includes(normal)) return normal as T;
  throw new UsageError(`${name}: unknown ${what} ${JSON.stringify(value)} (use ${allowed.join(', ')})`);
}

/** Checks and normalizes one filter value; the error names the flag and the value. */
function filterValue(name: string, kind: ValueKind, value: string): string | number {
  const q = JSON.stringify(value);
  if (value.trim() === '') throw new UsageError(`${name} needs a value, got an empty one`);
  switch (kind) {
    case 'ip':
      try {
        compileFilter({ ip: [value] });
      } catch (err) {
        if (err instanceof FilterError) throw new UsageError(`${name}: ${q} is not an IP address or CIDR`);
        throw err;
      }
      return value;
    case 'label':
      try {
        compileFilter({ label: [value] });
      } catch (err) {
        if (err instanceof FilterError) throw new UsageError(`${name}: ${err.message}`);
        throw err;
      }
      return value;
    case 'endpoint': {
      const parts = value.split('/');
      if (parts.length > 2 || !parts.every((p) => DNS_LABEL.test(p))) {
        throw new UsageError(`${name}: ${q} is not an endpoint (NAME or NAMESPACE/NAME, lower-case letters, digits and -)`);
      }
      return value;
    }
    case 'namespace':
      if (!DNS_LABEL.test(value)) throw new UsageError(`${name}: ${q} is not a namespace name (lower-case letters, digits and -)`);
      return value;
    case 'identity':
      if (!/^\d{1,10}$/.test(value) || Number(value) > 0xffffffff) throw new UsageError(`${name}: ${q} is not a numeric security identity`);
      return Number(value);
    case 'port':
      if (!/^\d{1,5}$/.test(value) || Number(value) > 65535) throw new UsageError(`${name}: ${q} is not a port number (0-65535)`);
      return Number(value);
    case 'protocol':
      return oneOf(name, value, PROTOCOLS, 'protocol', value.toLowerCase());
    case 'verdict':
      return oneOf(name, value, VERDICTS, 'verdict', value.toUpperCase());
    case 'type':
      return oneOf(name, value, EVENT_TYPES, 'event type', value.toLowerCase());
    case 'direction':
      return oneOf(name, value, TRAFFIC_DIRECTIONS, 'traffic direction', value.toLowerCase());
  }
}

function addValue(filter: FlowFilter, field: keyof FlowFilter, value: string | number): void {
  const list = (filter[field] ?? []) as (string | number)[];
  if (!list.includes(value)) list.push(value);
  (filter as Record<string, (string | number)[]>)[field] = list;
}

function timeBound(name: string, value: string, nowMs: number): number {
  try {
    return parseTimeBound(value, nowMs);
  } catch (err) {
    if (err instanceof FilterError) throw new UsageError(`${name}: ${err.message}`);
    throw err;
  }
}

/**
 * Reads `waggle observe`'s arguments (those after `observe`), in order.
 * Throws UsageError (exit code 2) naming the flag and the value at the first
 * thing wrong. `nowMs` is the "now" that durations count back from.
 */
export function parseObserveArgs(argv: readonly string[], nowMs = Date.now()): ObserveArgs {
  const include: FlowFilter = {};
  const exclude: FlowFilter[] = [];
  const query: FlowQuery = { include: [], exclude, follow: false };
  const out: ObserveArgs = { query, output: 'compact', color: 'auto', printNodeName: false };
  let since: { name: string; value: string; ms: number } | undefined;
  let until: { name: string; value: string; ms: number } | undefined;
  let negate: Token | undefined;
  for (const t of tokenize(argv)) {
    const { flag, name } = t;
    const value = t.value ?? '';
    if (flag.long === 'not') {
      if (negate) throw new UsageError(`${negate.name} ${name}: two --not in a row; --not negates the one filter flag after it`);
      negate = t;
      continue;
    }
    if (flag.filter) {
      const v = filterValue(name, flag.filter.kind, value);
      if (negate) {
        const f: FlowFilter = {};
        addValue(f, flag.filter.field, v);
        exclude.push(f);
        negate = undefined;
      } else {
        addValue(include, flag.filter.field, v);
      }
      continue;
    }
    if (negate) throw new UsageError(`${negate.name} must be followed by a filter flag, not ${name}`);
    switch (flag.long) {
      case 'since':
        since = { name, value, ms: timeBound(name, value, nowMs) };
        break;
      case 'until':
        until = { name, value, ms: timeBound(name, value, nowMs) };
        break;
      case 'last':
        if (!/^[1-9]\d*$/.test(value) || !Number.isSafeInteger(Number(value))) throw new UsageError(`${name} must be a positive integer, got ${JSON.stringify(value)}`);
        query.last = Number(value);
        break;
      case 'follow':
        query.follow = true;
        break;
      case 'output': {
        const format = value === 'jsonpb' ? 'json' : value;
        if (!(OUTPUT_FORMATS as readonly string[]).includes(format)) throw new UsageError(`unknown output format ${JSON.stringify(value)} (use ${OUTPUT_FORMATS.join(', ')})`);
        out.output = format as OutputFormat;
        break;
      }
      case 'color':
        if (!(COLOR_MODES as readonly string[]).includes(value)) throw new UsageError(`${name} must be ${COLOR_MODES.join(', ')}, got ${JSON.stringify(value)}`);
        out.color = value as ColorMode;
        break;
      case 'print-node-name':
        out.printNodeName = true;
        break;
      case 'api-socket':
        if (value === '') throw new UsageError(`${name} needs a path, got an empty one`);
        out.apiSocket = value;
        break;
    }
  }
  if (negate) throw new UsageError(`${negate.name} must be followed by a filter flag (like --not --verdict FORWARDED), but nothing follows it`);
  if (Object.keys(include).length > 0) query.include = [include];
  if (since) query.sinceMs = since.ms;
  if (until) query.untilMs = until.ms;
  if (since && until && since.ms > until.ms) {
    throw new UsageError(`${since.name} ${since.value} is after ${until.name} ${until.value}: no flow can match`);
  }
  return out;
}
