/**
 * Test-only helpers for network namespaces and veth pairs, built on iproute2 (`ip`).
 *
 * Every namespace made here is private to the test that made it; register its
 * `remove()` with a {@link Cleanup} right after creating it.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';

/** Default timeout for a synchronous command, in milliseconds. */
const DEFAULT_TIMEOUT_MS = 10_000;

/** Longest interface name the kernel accepts (IFNAMSIZ - 1). */
export const MAX_IFNAME_LEN = 15;

let counter = 0;

/** Options for {@link Netns.exec}. */
export interface ExecOptions {
  /** Text written to the command's stdin. */
  input?: string;
  /** Kill the command after this many milliseconds (default 10 000). */
  timeoutMs?: number;
}

/** A network namespace created by {@link createNetns}. */
export interface Netns {
  /** Namespace name, as shown by `ip netns list`. */
  readonly name: string;
  /** Bind-mount path of the namespace (`/var/run/netns/NAME`), usable with setns(2). */
  readonly path: string;
  /** Runs `ip netns exec NAME ...cmd` synchronously and returns its stdout; throws on a non-zero exit. */
  exec(cmd: string[], opts?: ExecOptions): string;
  /**
   * Spawns `ip netns exec NAME ...cmd` with piped stdio (and `opts.env`, default
   * the current environment). `ip` execs the command in place, so the child's PID
   * is the command's PID: kill it with `child.kill()`.
   */
  spawn(cmd: string[], opts?: { env?: NodeJS.ProcessEnv }): ChildProcess;
  /** Deletes the namespace (and every veth end inside it). Safe to call more than once. */
  remove(): void;
}

/** One end of a veth pair as requested from {@link createVethPair}. */
export interface VethEndSpec {
  /** Namespace the end lives in. */
  netns: Netns;
  /** Interface name (at most 15 characters). */
  name: string;
  /** Addresses in CIDR notation, IPv4 or IPv6, e.g. `10.199.1.1/24`, `fd99:1::1/64`. */
  addrs?: string[];
}

/** One end of a created veth pair. */
export interface VethEnd {
  readonly netns: Netns;
  readonly name: string;
  /** Addresses assigned, in CIDR notation. */
  readonly addrs: readonly string[];
}

/** A veth pair created by {@link createVethPair}. */
export interface VethPair {
  readonly a: VethEnd;
  readonly b: VethEnd;
  /** Deletes the pair (deleting one end deletes both). Safe to call more than once, and after its namespace is gone. */
  remove(): void;
}

/**
 * Runs `ip ...args` synchronously and returns stdout.
 * Throws an Error whose message includes the command and its stderr on failure.
 */
export function ip(args: string[], opts: ExecOptions = {}): string {
  return execFileSync('ip', args, {
    encoding: 'utf8',
    input: opts.input,
    timeout: opts.timeoutMs ?? DEFAULT_TIMEOUT_MS,
    stdio: ['pipe', 'pipe', 'pipe'],
  });
}

/** Names of all network namespaces known to `ip netns list`. */
export function listNetns(): string[] {
  return ip(['netns', 'list'])
    .split('\n')
    .map((line) => line.trim().split(/\s+/)[0] ?? '')
    .filter((name) => name !== '');
}

/**
 * Creates a network namespace named `${prefix}-${process.pid}-${n}` and brings up `lo` in it.
 * @param prefix - short, recognisable prefix (the name is not used as an interface name).
 */
export function createNetns(prefix: string): Netns {
  counter += 1;
  const name = `${prefix}-${process.pid}-${counter}`;
  ip(['netns', 'add', name]);
  let removed = false;
  const netns: Netns = {
    name,
    path: `/var/run/netns/${name}`,
    exec: (cmd, opts) => ip(['netns', 'exec', name, ...cmd], opts),
    spawn: (cmd, opts) => spawn('ip', ['netns', 'exec', name, ...cmd], {
      stdio: ['pipe', 'pipe', 'pipe'],
      env: opts?.env ?? process.env,
    }),
    remove: () => {
      if (removed) return;
      removed = true;
      if (listNetns().includes(name)) ip(['netns', 'del', name]);
    },
  };
  try {
    ip(['-n', name, 'link', 'set', 'lo', 'up']);
  } catch (err) {
    netns.remove();
    throw err;
  }
  return netns;
}

function checkIfname(name: string): void {
  if (name.length === 0 || name.length > MAX_IFNAME_LEN || /[\s/:]/.test(name)) {
    throw new Error(`invalid interface name ${JSON.stringify(name)}: need 1-${MAX_IFNAME_LEN} chars, no space, '/' or ':'`);
  }
}

function configureEnd(end: VethEndSpec): void {
  for (const addr of end.addrs ?? []) {
    const extra = addr.includes(':') ? ['nodad'] : [];
    ip(['-n', end.netns.name, 'addr', 'add', addr, 'dev', end.name, ...extra]);
  }
  ip(['-n', end.netns.name, 'link', 'set', end.name, 'up']);
}

/**
 * Creates a veth pair with each end directly inside its namespace, assigns the
 * addresses (IPv6 with `nodad`, so they are usable at once) and sets both links up.
 * Both ends may be in the same namespace if their names differ.
 */
export function createVethPair(opts: { a: VethEndSpec; b: VethEndSpec }): VethPair {
  const { a, b } = opts;
  checkIfname(a.name);
  checkIfname(b.name);
  ip(['link', 'add', 'name', a.name, 'netns', a.netns.name, 'type', 'veth',
    'peer', 'name', b.name, 'netns', b.netns.name]);
  let removed = false;
  const pair: VethPair = {
    a: { netns: a.netns, name: a.name, addrs: [...(a.addrs ?? [])] },
    b: { netns: b.netns, name: b.name, addrs: [...(b.addrs ?? [])] },
    remove: () => {
      if (removed) return;
      removed = true;
      if (!listNetns().includes(a.netns.name)) return; // the namespace took the pair with it
      const present = JSON.parse(ip(['-n', a.netns.name, '-j', 'link', 'show'])) as unknown;
      if (Array.isArray(present) && present.some((l: unknown) => isLink(l) && l.ifname === a.name)) {
        ip(['-n', a.netns.name, 'link', 'del', a.name]);
      }
    },
  };
  try {
    configureEnd(a);
    configureEnd(b);
  } catch (err) {
    pair.remove();
    throw err;
  }
  return pair;
}

interface LinkJson {
  ifindex: number;
  ifname: string;
}

function isLink(v: unknown): v is LinkJson {
  return typeof v === 'object' && v !== null
    && typeof (v as Record<string, unknown>).ifindex === 'number'
    && typeof (v as Record<string, unknown>).ifname === 'string';
}

/** Interface index of `ifname` inside `netns` (from `ip -j link show`). Throws if absent. */
export function ifindexIn(netns: Netns, ifname: string): number {
  const parsed = JSON.parse(ip(['-n', netns.name, '-j', 'link', 'show', 'dev', ifname])) as unknown;
  const link = Array.isArray(parsed) ? parsed.find((l: unknown) => isLink(l) && l.ifname === ifname) : undefined;
  if (!isLink(link)) throw new Error(`interface ${ifname} not found in netns ${netns.name}`);
  return link.ifindex;
}

/** Address part of a CIDR string: `10.199.1.1/24` becomes `10.199.1.1`. */
export function addrOf(cidr: string): string {
  const slash = cidr.indexOf('/');
  return slash === -1 ? cidr : cidr.slice(0, slash);
}

/** A step of a {@link Cleanup}. */
export type CleanupFn = () => void | Promise<void>;

/**
 * A stack of cleanup steps. Register a step right after each creation, and call
 * `run()` from node:test `after()` so resources go even when a test fails.
 */
export class Cleanup {
  private readonly steps: { fn: CleanupFn; label: string }[] = [];

  /** Pushes a step; `label` names it in error logs. */
  add(fn: CleanupFn, label = fn.name || 'cleanup step'): void {
    this.steps.push({ fn, label });
  }

  /**
   * Runs and removes all steps, last added first. A failing step is logged to
   * stderr and does not stop the others. Resolves to the errors caught (empty if none).
   */
  async run(): Promise<unknown[]> {
    const errors: unknown[] = [];
    for (let step = this.steps.pop(); step !== undefined; step = this.steps.pop()) {
      try {
        await step.fn();
      } catch (err) {
        errors.push(err);
        console.error(`cleanup: ${step.label} failed:`, err);
      }
    }
    return errors;
  }
}

/**
 * The namespace of an endpoint (the agent names it after the endpoint) as a
 * {@link Netns} for the traffic helpers. The agent owns it: `remove` does nothing.
 */
export function endpointNs(name: string): Netns {
  return {
    name,
    path: `/var/run/netns/${name}`,
    exec: (cmd, opts) => ip(['netns', 'exec', name, ...cmd], opts),
    spawn: (cmd, opts) => spawn('ip', ['netns', 'exec', name, ...cmd], { stdio: ['pipe', 'pipe', 'pipe'], env: opts?.env ?? process.env }),
    remove: () => undefined,
  };
}

/**
 * A link to a namespace standing in for a machine outside the node: the
 * node's end `hostDev` (`<tag><pid>`, for the agent's --devices) with node4 /
 * node6, the far end eth0 with client4 / client6, on 10.<second>.X.0/24 and
 * fd00:<second>:X::/64, X derived from this process's PID.
 */
export interface OutsideLink { hostDev: string; node4: string; node6: string; client4: string; client6: string }

export function outsideLink(tag: string, second: number): OutsideLink {
  const x = 10 + (process.pid % 200);
  return {
    hostDev: `${tag}${process.pid % 100000}`,
    node4: `10.${second}.${x}.1`, node6: `fd00:${second}:${x.toString(16)}::1`,
    client4: `10.${second}.${x}.2`, client6: `fd00:${second}:${x.toString(16)}::2`,
  };
}

/** Creates the outside namespace (named from `prefix`) and `link` (MTU 1500 both ends), both removed by `cleanup`. */
export function createOutside(cleanup: Cleanup, prefix: string, link: OutsideLink): Netns {
  const outside = createNetns(prefix);
  cleanup.add(() => outside.remove(), `netns ${outside.name}`);
  ip(['link', 'add', 'name', link.hostDev, 'mtu', '1500', 'type', 'veth', 'peer', 'name', 'eth0', 'mtu', '1500', 'netns', outside.name]);
  cleanup.add(() => {
    try {
      ip(['link', 'del', link.hostDev]);
    } catch {
      // gone with the namespace (a veth pair goes with either end)
    }
  }, `link ${link.hostDev}`);
  ip(['addr', 'add', `${link.node4}/24`, 'dev', link.hostDev]);
  ip(['addr', 'add', `${link.node6}/64`, 'dev', link.hostDev, 'nodad']);
  ip(['link', 'set', link.hostDev, 'up']);
  outside.exec(['ip', 'addr', 'add', `${link.client4}/24`, 'dev', 'eth0']);
  outside.exec(['ip', 'addr', 'add', `${link.client6}/64`, 'dev', 'eth0', 'nodad']);
  outside.exec(['ip', 'link', 'set', 'eth0', 'up']);
  outside.exec(['ip', 'link', 'set', 'lo', 'up']);
  return outside;
}
