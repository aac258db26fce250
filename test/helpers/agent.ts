/**
 * Runs `waggle agent` as a real process for tests and benchmarks, with its own
 * state directory, bpffs, API socket and port, and runs CLI commands against it.
 * `remove()` stops it and runs `waggle agent --cleanup`, so nothing is left.
 */
import { spawnSync, type ChildProcess } from 'node:child_process';
import { request } from 'node:http';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createCgroup, type TestCgroup } from './cgroup.js';
import { spawnAgent } from '../../src/agent/process.js';

/** The compiled CLI entry point (dist/src/cli/main.js). */
export const CLI = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', 'src', 'cli', 'main.js');

let counter = 0;

export interface AgentOptions {
  nodeName?: string;
  /** Pod CIDRs (default: a private /24 and /64 unique to this agent). */
  podCidrs?: string[];
  flowBuffer?: number;
  extraArgs?: string[];
}

export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

export class TestAgent {
  readonly dir: string;
  readonly nodeName: string;
  readonly apiSocket: string;
  readonly podCidrs: string[];
  /** The agent's flags (also what `waggle agent --cleanup` needs to find what it made). */
  readonly flags: readonly string[];
  private proc: ChildProcess | undefined;
  private logText = '';
  /** The http address the agent printed (`http://127.0.0.1:PORT`). */
  url = '';
  /** The agent's own cgroup root (socket load balancing applies to processes in it, e.g. `waggle exec`). */
  readonly cgroup: TestCgroup | undefined;

  constructor(opts: AgentOptions = {}) {
    const n = counter++;
    this.dir = mkdtempSync(join(tmpdir(), 'waggle-agent-'));
    this.nodeName = opts.nodeName ?? `test-${process.pid}-${n}`;
    this.apiSocket = join(this.dir, 'api.sock');
    const octet = 100 + ((process.pid + n) % 100);
    this.podCidrs = opts.podCidrs ?? [`10.199.${octet}.0/24`, `fd99:${octet.toString(16)}::/64`];
    // Its own cgroup root when running as root, so its socket hooks touch only its processes.
    this.cgroup = process.getuid?.() === 0 ? createCgroup('waggle-agent') : undefined;
    this.flags = [
      '--node-name', this.nodeName,
      ...(this.cgroup ? ['--cgroup-root', this.cgroup.path] : []),
      '--state-dir', join(this.dir, 'state'),
      '--bpffs-root', join(this.dir, 'bpffs'),
      '--api-socket', this.apiSocket,
      '--http-listen', '127.0.0.1:0',
      ...this.podCidrs.flatMap((c) => ['--pod-cidr', c]),
      ...(opts.flowBuffer ? ['--flow-buffer', String(opts.flowBuffer)] : []),
      ...(opts.extraArgs ?? []),
    ];
  }

  /** The agent's log so far (JSON lines). */
  get log(): string {
    return this.logText;
  }

  get pid(): number | undefined {
    return this.proc?.pid;
  }

  /** Starts the agent process (with its own flags unless told others) and waits until it serves its API. */
  async start(timeoutMs = 20_000, flags: readonly string[] = this.flags): Promise<void> {
    // A restart appends to the earlier log; readiness is judged on this start's output only.
    try {
      const started = await spawnAgent(CLI, [...flags], { timeoutMs, onOutput: (text) => { this.logText += text; } });
      this.proc = started.child;
      this.url = started.url;
    } catch (err) {
      throw new Error(`${(err as Error).message}\n${this.logText}`);
    }
  }

  /** Sends SIGTERM and waits for the process to exit. */
  async stop(): Promise<number | null> {
    const p = this.proc;
    if (!p || p.exitCode !== null || p.signalCode !== null) {
      this.proc = undefined;
      return p?.exitCode ?? null;
    }
    this.proc = undefined;
    return new Promise((resolvePromise) => {
      const kill = setTimeout(() => p.kill('SIGKILL'), 10_000);
      p.once('exit', (code) => { clearTimeout(kill); resolvePromise(code); });
      p.kill('SIGTERM');
    });
  }

  /** Runs `waggle ARGS --api-socket …` synchronously. */
  cli(args: string[], opts: { timeoutMs?: number; input?: string } = {}): CliResult {
    const r = spawnSync(process.execPath, [CLI, ...args], {
      encoding: 'utf8',
      env: { ...process.env, WAGGLE_API_SOCKET: this.apiSocket },
      timeout: opts.timeoutMs ?? 60_000,
      maxBuffer: 256 << 20,
      ...(opts.input !== undefined ? { input: opts.input } : {}),
    });
    return { code: r.status ?? 1, stdout: r.stdout ?? '', stderr: r.stderr ?? '' };
  }

  /** Like {@link cli}, throwing when the command fails; returns stdout. */
  ok(args: string[]): string {
    const r = this.cli(args);
    if (r.code !== 0) throw new Error(`waggle ${args.join(' ')} exited ${r.code}: ${r.stderr}`);
    return r.stdout;
  }

  /** Stops the agent, runs `waggle agent --cleanup` and removes the temp directory. */
  async remove(): Promise<void> {
    await this.stop();
    const r = spawnSync(process.execPath, [CLI, 'agent', '--cleanup', ...this.flags], { encoding: 'utf8', timeout: 120_000 });
    rmSync(this.dir, { recursive: true, force: true });
    this.cgroup?.remove();
    if (r.status !== 0) throw new Error(`waggle agent --cleanup failed: ${r.stderr}`);
  }
}

/** One JSON request to an agent's API over its unix socket: the status and the parsed body. */
export function apiRequest<T = unknown>(socket: string, method: string, path: string, body?: unknown): Promise<{ status: number; body: T }> {
  return new Promise((resolve, reject) => {
    const payload = body === undefined ? undefined : JSON.stringify(body);
    // agent: false — no pooled keep-alive socket that the agent may close
    // while this process is busy (the next request would fail with EPIPE).
    const req = request({
      socketPath: socket, method, path, agent: false,
      headers: payload ? { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) } : {},
    }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        try {
          resolve({ status: res.statusCode ?? 0, body: (text ? JSON.parse(text) : {}) as T });
        } catch (err) {
          reject(new Error(`${method} ${path}: answer is not JSON (${(err as Error).message}): ${text}`));
        }
      });
      res.on('error', reject);
    });
    req.on('error', reject);
    req.setTimeout(60_000, () => req.destroy(new Error(`${method} ${path}: no answer in 60 s`)));
    if (payload) req.write(payload);
    req.end();
  });
}

/** Like {@link apiRequest}, rejecting unless the agent answered 200; resolves to the body. */
export async function apiOk<T = unknown>(socket: string, method: string, path: string, body?: unknown): Promise<T> {
  const r = await apiRequest<T>(socket, method, path, body);
  if (r.status !== 200) throw new Error(`${method} ${path} → ${r.status}: ${JSON.stringify(r.body)}`);
  return r.body;
}
