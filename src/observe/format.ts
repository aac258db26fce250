/**
 * The text forms of `waggle observe`, as `hubble observe -o compact|table|dict`
 * prints flows: compact (one line per flow, coloured on a terminal), table
 * (aligned columns) and dict (one `KEY: value` per line, records separated by
 * dashes). `-o json` is the record itself, one per line. Lost-event records
 * are printed in every format. The printers return text rather than writing
 * it, so they are pure and the command decides where the text goes.
 */
import type { HubbleEndpoint, HubbleFlow, HubbleRecord } from './hubble.js';

export const OUTPUT_FORMATS = ['compact', 'json', 'table', 'dict'] as const;
export type OutputFormat = (typeof OUTPUT_FORMATS)[number];

export const COLOR_MODES = ['auto', 'always', 'never'] as const;
export type ColorMode = (typeof COLOR_MODES)[number];

export interface PrintOptions {
  /** ANSI colours (see useColor). */
  color?: boolean;
  /** Show the node that saw each flow (`--print-node-name`). */
  nodeName?: boolean;
}

/**
 * Whether to colour: `always` and `never` say so; `auto` colours a terminal
 * unless NO_COLOR is set (to anything but the empty string) or TERM is `dumb`.
 */
export function useColor(mode: ColorMode, isTTY: boolean, env: Record<string, string | undefined> = {}): boolean {
  if (mode === 'always') return true;
  if (mode === 'never') return false;
  return isTTY && !env.NO_COLOR && env.TERM !== 'dumb';
}

// ---- coloured text ------------------------------------------------------

type Color = 'red' | 'green' | 'yellow' | 'cyan';
const SGR: Record<Color, number> = { red: 31, green: 32, yellow: 33, cyan: 36 };

/** A piece of text, plain or in a colour. */
type Segment = string | readonly [string, Color];
/** Text made of segments, so a table can measure it without the escape codes. */
type Cell = readonly Segment[];

function render(cell: Cell, color: boolean): string {
  return cell.map((s) => (typeof s === 'string' ? s : color && s[0] ? `\x1b[${SGR[s[1]]}m${s[0]}\x1b[0m` : s[0])).join('');
}

function width(cell: Cell): number {
  return cell.reduce((n, s) => n + (typeof s === 'string' ? s : s[0]).length, 0);
}

// ---- the parts of a flow ------------------------------------------------

/** `2026-01-02 15:04:05.123` from an ISO time (UTC, as the agent sends it). */
export function formatTime(iso: string): string {
  return iso.replace('T', ' ').replace('Z', '');
}

/** `ns/name (ip:port)` for a local endpoint, `ip:port` (`[ip]:port` for IPv6) for anything else. */
function peer(ep: HubbleEndpoint | undefined, ip: string | undefined, port: number | undefined): Cell {
  const portPart: Segment[] = port ? [':', [String(port), 'yellow']] : [];
  if (ep?.pod_name) {
    const who: Segment = [`${ep.namespace}/${ep.pod_name}`, 'cyan'];
    if (!ip) return [who];
    const addr: Segment[] = ip.includes(':') ? ['[', [ip, 'cyan'], ']'] : [[ip, 'cyan']];
    return [who, ' (', ...addr, ...portPart, ')'];
  }
  if (!ip) return ['(no IP)', ...portPart];
  return ip.includes(':') && port ? ['[', [ip, 'cyan'], ']', ...portPart] : [[ip, 'cyan'], ...portPart];
}

const MATCH_NAMES = ['none', 'L3-Only', 'L3-L4', 'L4-Only', 'all'];

interface FlowParts {
  source: Cell;
  destination: Cell;
  /** `to-endpoint`, `drop`, `policy-verdict:L3-L4 INGRESS`, … */
  type: string;
  /** `FORWARDED`, `ALLOWED` (policy verdicts), `DROPPED (REASON)`. */
  verdict: Cell;
  /** The policy that decided, `CiliumNetworkPolicy shop/allow-web`, or ''. */
  policy: string;
  summary: string;
}

function flowParts(f: HubbleFlow): FlowParts {
  const l4 = f.l4 ? Object.values(f.l4)[0] : undefined;
  const sport = typeof l4?.source_port === 'number' ? l4.source_port : undefined;
  const dport = typeof l4?.destination_port === 'number' ? l4.destination_port : undefined;
  const policyVerdict = f.event_type.type === 5;
  const type = policyVerdict ? `policy-verdict:${MATCH_NAMES[f.policy_match_type ?? 0] ?? 'none'} ${f.traffic_direction ?? ''}`
    : f.trace_observation_point ? f.trace_observation_point.toLowerCase().replace(/_/g, '-') : f.verdict === 'DROPPED' ? 'drop' : '';
  const verdict: Cell = f.verdict === 'DROPPED' ? [[`DROPPED (${f.drop_reason_desc ?? f.drop_reason})`, 'red']]
    : [[policyVerdict ? 'ALLOWED' : 'FORWARDED', 'green']];
  const by = [...(f.ingress_denied_by ?? []), ...(f.egress_denied_by ?? []), ...(policyVerdict ? [...(f.ingress_allowed_by ?? []), ...(f.egress_allowed_by ?? [])] : [])][0];
  return {
    source: peer(f.source, f.IP?.source, sport),
    destination: peer(f.destination, f.IP?.destination, dport),
    type,
    verdict,
    policy: by ? `${by.kind} ${by.namespace ? `${by.namespace}/` : ''}${by.name}` : '',
    summary: f.Summary,
  };
}

type LostRecord = Extract<HubbleRecord, { lost_events: unknown }>;

function lostText(r: LostRecord): string {
  const n = r.lost_events.num_events_lost;
  return `${n} ${n === 1 ? 'event' : 'events'} lost`;
}

// ---- compact ------------------------------------------------------------

/**
 * One readable line per flow, like `hubble observe -o compact`:
 * `TIME [NODE]: SOURCE -> DESTINATION TYPE VERDICT (SUMMARY)`.
 */
export function compactLine(f: HubbleFlow, opts: PrintOptions = {}): string {
  const p = flowParts(f);
  const color = opts.color === true;
  const node = opts.nodeName ? ` [${f.node_name}]` : '';
  const rule = p.policy ? ` by ${p.policy}` : '';
  return `${formatTime(f.time)}${node}: ${render(p.source, color)} -> ${render(p.destination, color)} ${p.type} ${render(p.verdict, color)}${rule} (${p.summary})`;
}

/** A lost-events record in compact form: `TIME [NODE]: N events lost (SOURCE)`. */
export function compactLostLine(r: LostRecord, opts: PrintOptions = {}): string {
  const node = opts.nodeName ? ` [${r.node_name}]` : '';
  return `${formatTime(r.time)}${node}: ${render([[`${lostText(r)} (${r.lost_events.source})`, 'yellow']], opts.color === true)}`;
}

// ---- table --------------------------------------------------------------

function tableHeader(opts: PrintOptions): Cell[] {
  return ['TIMESTAMP', ...(opts.nodeName ? ['NODE'] : []), 'SOURCE', 'DESTINATION', 'TYPE', 'VERDICT', 'SUMMARY'].map((h) => [h]);
}

function tableRow(r: HubbleRecord, opts: PrintOptions): Cell[] {
  const node: Cell[] = opts.nodeName ? [[r.node_name]] : [];
  if ('flow' in r) {
    const p = flowParts(r.flow);
    return [[formatTime(r.flow.time)], ...node, p.source, p.destination, [p.type], p.verdict,
      [p.policy ? `${p.summary}; by ${p.policy}` : p.summary]];
  }
  return [[formatTime(r.time)], ...node, [r.lost_events.source], [], [['EVENTS LOST', 'yellow']], [], [lostText(r)]];
}

function tableLine(cells: readonly Cell[], widths: readonly number[], color: boolean): string {
  return cells.map((c, i) => {
    const text = render(c, color);
    return i === cells.length - 1 ? text : text + ' '.repeat(Math.max(0, (widths[i] ?? 0) - width(c)));
  }).join('  ').trimEnd();
}

/**
 * Column widths a followed table starts with (TIMESTAMP, [NODE], SOURCE,
 * DESTINATION, TYPE, VERDICT): enough for typical flows; a longer value
 * widens its column from that row on.
 */
const STREAM_WIDTHS = { timestamp: 23, node: 12, peer: 36, type: 13, verdict: 9 };

/** The table of a whole result, columns as wide as their widest value (like hubble's tabwriter). */
export function formatTable(records: readonly HubbleRecord[], opts: PrintOptions = {}): string {
  if (records.length === 0) return '';
  const rows = [tableHeader(opts), ...records.map((r) => tableRow(r, opts))];
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((row) => (row[i] ? width(row[i]) : 0))));
  return rows.map((row) => `${tableLine(row, widths, opts.color === true)}\n`).join('');
}

// ---- dict ---------------------------------------------------------------

/** Records are separated by this line, as in `hubble observe -o dict`. */
export const DICT_SEPARATOR = '------------';

/** One record as `KEY: value` lines (keys right-aligned), each line ending in a newline. */
export function dictBlock(r: HubbleRecord, opts: PrintOptions = {}): string {
  const color = opts.color === true;
  const entries: [string, Cell][] = [];
  if ('flow' in r) {
    const p = flowParts(r.flow);
    entries.push(['TIMESTAMP', [formatTime(r.flow.time)]]);
    if (opts.nodeName) entries.push(['NODE', [r.node_name]]);
    entries.push(['SOURCE', p.source], ['DESTINATION', p.destination], ['TYPE', [p.type]], ['VERDICT', p.verdict]);
    if (p.policy) entries.push(['POLICY', [p.policy]]);
    entries.push(['SUMMARY', [p.summary]]);
  } else {
    entries.push(['TIMESTAMP', [formatTime(r.time)]]);
    if (opts.nodeName) entries.push(['NODE', [r.node_name]]);
    entries.push(['SOURCE', [r.lost_events.source]], ['TYPE', [['EVENTS LOST', 'yellow']]], ['SUMMARY', [lostText(r)]]);
  }
  return entries.map(([k, v]) => `${k.padStart(11)}: ${render(v, color)}\n`).join('');
}

// ---- printers -----------------------------------------------------------

/** Turns a stream of records into text. */
export interface RecordPrinter {
  /** The text to write for one record now ('' while a table is being collected). */
  record(r: HubbleRecord): string;
  /** The text to write when the stream ends (a collected table), often ''. */
  end(): string;
}

/**
 * A printer for one output format. A table is collected and printed at the
 * end with columns sized to fit, unless `streaming` (`--follow`): then the
 * header and each row are printed at once, in columns of STREAM_WIDTHS that
 * widen when a longer value arrives.
 */
export function createPrinter(format: OutputFormat, opts: PrintOptions & { streaming?: boolean } = {}): RecordPrinter {
  const color = opts.color === true;
  switch (format) {
    case 'json':
      return { record: (r) => `${JSON.stringify(r)}\n`, end: () => '' };
    case 'compact':
      return { record: (r) => `${'flow' in r ? compactLine(r.flow, opts) : compactLostLine(r, opts)}\n`, end: () => '' };
    case 'dict': {
      let first = true;
      return {
        record: (r) => {
          const sep = first ? '' : `${DICT_SEPARATOR}\n`;
          first = false;
          return sep + dictBlock(r, opts);
        },
        end: () => '',
      };
    }
    case 'table': {
      if (!opts.streaming) {
        const records: HubbleRecord[] = [];
        return { record: (r) => { records.push(r); return ''; }, end: () => formatTable(records, opts) };
      }
      const w = STREAM_WIDTHS;
      const widths = [w.timestamp, ...(opts.nodeName ? [w.node] : []), w.peer, w.peer, w.type, w.verdict, 0];
      let header = true;
      return {
        record: (r) => {
          const row = tableRow(r, opts);
          const head = header ? `${tableLine(tableHeader(opts), widths, color)}\n` : '';
          header = false;
          row.forEach((c, i) => { widths[i] = Math.max(widths[i] ?? 0, width(c)); });
          return `${head}${tableLine(row, widths, color)}\n`;
        },
        end: () => '',
      };
    }
  }
}
