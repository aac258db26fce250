/**
 * The agent's configuration: defaults, then the YAML file given by --config,
 * then WAGGLE_* environment variables, then flags. Validated once, at start,
 * with errors that name the field and where it came from.
 */
import { readFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { isAbsolute } from 'node:path';
import { parse as parseYaml } from 'yaml';
import { z } from 'zod';
import { cidrContains, parseCidr, type Cidr } from '../ipam/cidr.js';
import { Ipam } from '../ipam/ipam.js';

/** Default path of the agent's API socket; every client command uses it unless told otherwise. */
export const DEFAULT_API_SOCKET = '/var/run/waggle/waggle.sock';

export class ConfigError extends Error {
  readonly code = 'CONFIG_INVALID';
  constructor(message: string) {
    super(message);
    this.name = 'ConfigError';
  }
}

const absolutePath = z.string().min(1).refine((p) => isAbsolute(p), 'must be an absolute path');

const listen = z.string().refine((s) => {
  const m = /^(\[[0-9a-fA-F:.]+\]|[^:[\]]+):(\d{1,5})$/.exec(s);
  return m !== null && Number(m[2]) <= 65535;
}, 'must be HOST:PORT (port 0 picks a free port)');

const cidr = z.string().superRefine((s, ctx) => {
  try { parseCidr(s); } catch (err) { ctx.addIssue({ code: z.ZodIssueCode.custom, message: (err as Error).message }); }
});

function isPrime(n: number): boolean {
  if (n < 2) return false;
  for (let d = 2; d * d <= n; d++) if (n % d === 0) return false;
  return true;
}

/** The validated agent configuration. */
export const agentConfigSchema = z.object({
  nodeName: z.string().regex(/^[a-z0-9]([-a-z0-9.]{0,61}[a-z0-9])?$/, 'must be a DNS label: lower-case letters, digits, - and .'),
  stateDir: absolutePath,
  bpffsRoot: absolutePath,
  cgroupRoot: absolutePath.optional(),
  apiSocket: absolutePath,
  httpListen: listen,
  podCidr: z.array(cidr).min(1, 'needs one IPv4 and/or one IPv6 CIDR').max(2),
  serviceCidr: z.array(cidr).min(1, 'needs one IPv4 and/or one IPv6 CIDR').max(2),
  maglevTableSize: z.number().int().min(251).max(131071).refine(isPrime, 'must be a prime (e.g. 251, 1021, 4093, 16381, 65521, 131071)'),
  nodePortRange: z.string().regex(/^\d{1,5}-\d{1,5}$/, 'must be FIRST-LAST, e.g. 30000-32767').refine((r) => {
    const [a, b] = r.split('-').map(Number) as [number, number];
    return a >= 1 && b <= 65535 && a <= b;
  }, 'must be a range of ports within 1-65535, first not after last'),
  devices: z.array(z.string().regex(/^[^/\s:]{1,15}$/, 'must be a network device name (1-15 characters, no /, : or spaces)'))
    .refine((d) => new Set(d).size === d.length, 'names a device twice'),
  flowBuffer: z.number().int().min(1).max(1_000_000),
  ctGcIntervalSeconds: z.number().int().min(1).max(3600),
  logLevel: z.enum(['trace', 'debug', 'info', 'warn', 'error', 'fatal']),
}).strict().superRefine((c, ctx) => {
  try { new Ipam(c.podCidr); } catch (err) { ctx.addIssue({ code: z.ZodIssueCode.custom, path: ['podCidr'], message: (err as Error).message }); }
  let services: Cidr[];
  let pods: Cidr[];
  try {
    services = c.serviceCidr.map(parseCidr);
    pods = c.podCidr.map(parseCidr);
  } catch (err) {
    ctx.addIssue({ code: z.ZodIssueCode.custom, path: ['serviceCidr'], message: (err as Error).message });
    return;
  }
  if (new Set(services.map((s) => s.family)).size !== services.length) {
    ctx.addIssue({ code: z.ZodIssueCode.custom, path: ['serviceCidr'], message: 'needs at most one IPv4 and one IPv6 CIDR' });
  }
  for (const s of services) {
    const p = pods.find((p) => p.family === s.family && (cidrContains(p, s.family, s.base) || cidrContains(s, p.family, p.base)));
    if (p) ctx.addIssue({ code: z.ZodIssueCode.custom, path: ['serviceCidr'], message: `${s.text} overlaps the pod CIDR ${p.text}` });
  }
});

export type AgentConfig = z.infer<typeof agentConfigSchema>;

/** Flag name (as on the command line and as the YAML key) → config field. */
export const CONFIG_KEYS = {
  'node-name': 'nodeName',
  'state-dir': 'stateDir',
  'bpffs-root': 'bpffsRoot',
  'cgroup-root': 'cgroupRoot',
  'api-socket': 'apiSocket',
  'http-listen': 'httpListen',
  'pod-cidr': 'podCidr',
  'service-cidr': 'serviceCidr',
  'maglev-table-size': 'maglevTableSize',
  'node-port-range': 'nodePortRange',
  devices: 'devices',
  'flow-buffer': 'flowBuffer',
  'ct-gc-interval': 'ctGcIntervalSeconds',
  'log-level': 'logLevel',
} as const satisfies Record<string, keyof AgentConfig>;

type FlagName = keyof typeof CONFIG_KEYS;
const fieldToFlag = new Map<string, FlagName>(Object.entries(CONFIG_KEYS).map(([f, k]) => [k, f as FlagName]));

/** `WAGGLE_NODE_NAME` for `node-name`. */
export function envName(flag: string): string {
  return `WAGGLE_${flag.toUpperCase().replace(/-/g, '_')}`;
}

/** The defaults (node name from the host name). */
export function defaultConfig(): AgentConfig {
  return {
    nodeName: hostname().toLowerCase().replace(/[^a-z0-9.-]/g, '-').replace(/^-+|-+$/g, '') || 'node',
    stateDir: '/var/lib/waggle',
    bpffsRoot: '/sys/fs/bpf/waggle',
    apiSocket: DEFAULT_API_SOCKET,
    httpListen: '127.0.0.1:9962',
    podCidr: ['10.200.0.0/16', 'fd00:200::/64'],
    serviceCidr: ['10.96.0.0/16', 'fd00:96::/112'],
    maglevTableSize: 16381,
    nodePortRange: '30000-32767',
    devices: [],
    flowBuffer: 4096,
    ctGcIntervalSeconds: 30,
    logLevel: 'info',
  };
}

type Raw = Record<string, unknown>;

function coerce(flag: FlagName, value: unknown, source: string): unknown {
  const field = CONFIG_KEYS[flag];
  if (field === 'podCidr' || field === 'serviceCidr' || field === 'devices') {
    const split = (v: string): string[] => v.split(',').map((s) => s.trim()).filter((s) => s !== '');
    if (Array.isArray(value)) return value.flatMap((v: unknown) => (typeof v === 'string' ? split(v) : [v]));
    if (typeof value === 'string') return split(value);
    return value;
  }
  if ((field === 'flowBuffer' || field === 'ctGcIntervalSeconds' || field === 'maglevTableSize') && typeof value === 'string') {
    if (!/^\d+$/.test(value)) throw new ConfigError(`${source}: ${flag} must be a whole number, got ${JSON.stringify(value)}`);
    return Number(value);
  }
  return value;
}

function fromYaml(path: string): Raw {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw new ConfigError(`cannot read config file ${path}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
  let doc: unknown;
  try {
    doc = parseYaml(text);
  } catch (err) {
    throw new ConfigError(`config file ${path} is not valid YAML: ${(err as Error).message.split('\n')[0]}`);
  }
  if (doc === null || doc === undefined) return {};
  if (typeof doc !== 'object' || Array.isArray(doc)) throw new ConfigError(`config file ${path} must be a YAML mapping of option: value`);
  const out: Raw = {};
  for (const [key, value] of Object.entries(doc as Raw)) {
    if (!(key in CONFIG_KEYS)) {
      throw new ConfigError(`config file ${path}: unknown option ${JSON.stringify(key)} (known: ${Object.keys(CONFIG_KEYS).join(', ')})`);
    }
    out[CONFIG_KEYS[key as FlagName]] = coerce(key as FlagName, value, `config file ${path}`);
  }
  return out;
}

function fromEnv(env: NodeJS.ProcessEnv): Raw {
  const out: Raw = {};
  for (const flag of Object.keys(CONFIG_KEYS) as FlagName[]) {
    const v = env[envName(flag)];
    if (v !== undefined && v !== '') out[CONFIG_KEYS[flag]] = coerce(flag, v, envName(flag));
  }
  return out;
}

function fromFlags(flags: Partial<Record<FlagName, unknown>>): Raw {
  const out: Raw = {};
  for (const [flag, v] of Object.entries(flags) as [FlagName, unknown][]) {
    if (v !== undefined) out[CONFIG_KEYS[flag]] = coerce(flag, v, `--${flag}`);
  }
  return out;
}

/**
 * Builds the configuration from its sources and validates it. Throws a
 * {@link ConfigError} naming every bad field (by its flag name) and its source.
 */
export function loadAgentConfig(opts: {
  configFile?: string;
  env?: NodeJS.ProcessEnv;
  flags?: Partial<Record<FlagName, unknown>>;
}): AgentConfig {
  const layers: [string, Raw][] = [['default', defaultConfig() as unknown as Raw]];
  if (opts.configFile) layers.push([`config file ${opts.configFile}`, fromYaml(opts.configFile)]);
  layers.push(['environment', fromEnv(opts.env ?? process.env)]);
  layers.push(['flags', fromFlags(opts.flags ?? {})]);
  const merged: Raw = {};
  const sourceOf = new Map<string, string>();
  for (const [source, layer] of layers) {
    for (const [k, v] of Object.entries(layer)) {
      merged[k] = v;
      sourceOf.set(k, source);
    }
  }
  const result = agentConfigSchema.safeParse(merged);
  if (!result.success) {
    const problems = result.error.issues.map((i) => {
      const field = String(i.path[0] ?? '');
      const flag = fieldToFlag.get(field) ?? field;
      const src = sourceOf.get(field);
      return `${flag}${src && src !== 'default' ? ` (from ${src === 'environment' ? envName(flag) : src})` : ''}: ${i.message}`;
    });
    throw new ConfigError(`invalid configuration: ${problems.join('; ')}`);
  }
  return result.data;
}
