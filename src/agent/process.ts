/**
 * Starting `waggle agent` as a child process and waiting until it serves its
 * API: used by `waggle demo` and by the tests and benchmarks.
 */
import { spawn, type ChildProcess } from 'node:child_process';

/** A started agent: its process and the HTTP address it logged. */
export interface AgentProcess {
  child: ChildProcess;
  url: string;
}

/**
 * Spawns `node CLI agent ...args` and resolves once it logs "agent ready".
 * Every chunk of its output also goes to `onOutput` (for the whole life of the
 * process). Rejects when it exits first or is not ready within `timeoutMs`.
 */
export function spawnAgent(cli: string, args: readonly string[], opts: { timeoutMs?: number; onOutput?: (text: string) => void } = {}): Promise<AgentProcess> {
  const child = spawn(process.execPath, [cli, 'agent', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  const timeoutMs = opts.timeoutMs ?? 30_000;
  return new Promise((resolve, reject) => {
    let log = '';
    let url = '';
    let ready = false;
    const lastLine = (): string => log.trim().split('\n').pop() ?? '';
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`the agent did not become ready in ${timeoutMs} ms:\n${log}`));
    }, timeoutMs);
    const onData = (chunk: Buffer): void => {
      const text = chunk.toString('utf8');
      opts.onOutput?.(text);
      if (ready) return;
      log += text;
      const m = /listening on (http:\/\/[^"\s]+)/.exec(log);
      if (m) url = m[1] as string;
      if (log.includes('"agent ready"')) {
        ready = true;
        clearTimeout(timer);
        resolve({ child, url });
      }
    };
    child.stdout?.on('data', onData);
    child.stderr?.on('data', onData);
    child.once('exit', (code) => {
      clearTimeout(timer);
      if (!ready) reject(new Error(`the agent exited (${code ?? 'signal'}) before it was ready: ${lastLine()}`));
    });
  });
}
