/**
 * The CLI's client for the agent API (HTTP/JSON over the agent's unix socket).
 */
import { request } from 'node:http';
import { DEFAULT_API_SOCKET } from '../agent/config.js';

/** An error answered by the agent (exit code 1), or the agent could not be reached. */
export class ClientError extends Error {
  readonly code: string;
  readonly status: number;
  constructor(status: number, code: string, message: string) {
    super(message);
    this.name = 'ClientError';
    this.code = code;
    this.status = status;
  }
}

/** The socket to use: the flag, then WAGGLE_API_SOCKET, then the default. */
export function apiSocketPath(flag?: string): string {
  return flag ?? process.env.WAGGLE_API_SOCKET ?? DEFAULT_API_SOCKET;
}

function unreachable(socket: string, err: NodeJS.ErrnoException): ClientError {
  const why = err.code === 'ENOENT' ? 'no agent is listening there (is `waggle agent` running?)'
    : err.code === 'EACCES' ? 'permission denied (the API is root only)'
    : err.code === 'ECONNREFUSED' ? 'the agent is not running (stale socket)' : err.message;
  return new ClientError(0, 'AGENT_UNREACHABLE', `cannot reach the agent at ${socket}: ${why}`);
}

/** One JSON request/response. Throws ClientError with the agent's message. */
export function call<T>(socket: string, method: string, path: string, body?: unknown): Promise<T> {
  return new Promise((resolve, reject) => {
    const payload = body === undefined ? undefined : JSON.stringify(body);
    // agent: false: one connection per request; a pooled keep-alive socket the
    // agent closes while we are busy elsewhere would fail the next request (EPIPE).
    const req = request({ socketPath: socket, method, path, agent: false, headers: payload ? { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) } : {} }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        let doc: unknown;
        try { doc = text ? JSON.parse(text) : {}; } catch { doc = { error: { code: 'BAD_RESPONSE', message: text } }; }
        if ((res.statusCode ?? 500) >= 400) {
          const e = (doc as { error?: { code?: string; message?: string } }).error;
          reject(new ClientError(res.statusCode ?? 500, e?.code ?? 'ERROR', e?.message ?? `the agent answered ${res.statusCode}`));
        } else {
          resolve(doc as T);
        }
      });
    });
    req.on('error', (err) => reject(unreachable(socket, err)));
    if (payload) req.write(payload);
    req.end();
  });
}

/** Streams NDJSON lines from `path` to `onLine` until the agent ends the stream or `signal` aborts. */
export function stream(socket: string, path: string, onLine: (value: unknown) => void, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    const req = request({ socketPath: socket, method: 'GET', path, signal, agent: false }, (res) => {
      if ((res.statusCode ?? 500) >= 400) {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          let msg = Buffer.concat(chunks).toString('utf8');
          try { msg = (JSON.parse(msg) as { error: { message: string } }).error.message; } catch { /* keep text */ }
          reject(new ClientError(res.statusCode ?? 500, 'ERROR', msg));
        });
        return;
      }
      let buf = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => {
        buf += chunk;
        let nl: number;
        while ((nl = buf.indexOf('\n')) >= 0) {
          const line = buf.slice(0, nl);
          buf = buf.slice(nl + 1);
          if (line.trim()) onLine(JSON.parse(line));
        }
      });
      res.on('end', () => resolve());
      res.on('error', (err) => (signal?.aborted ? resolve() : reject(err)));
    });
    req.on('error', (err: NodeJS.ErrnoException) => {
      if (signal?.aborted) resolve();
      else reject(unreachable(socket, err));
    });
    req.end();
  });
}
