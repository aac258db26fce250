/**
 * The agent's API: HTTP/JSON over a unix socket (mode 0600, root only). Every
 * CLI command goes through it. A handler returns a JSON value (200), throws an
 * {@link ApiError} (its status and code), or streams NDJSON itself.
 */
import { chmodSync, existsSync, mkdirSync, unlinkSync } from 'node:fs';
import { createConnection } from 'node:net';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { dirname } from 'node:path';

/** An error the API reports to the client: HTTP status, stable code, one sentence. */
export class ApiError extends Error {
  readonly status: number;
  readonly code: string;
  constructor(status: number, code: string, message: string) {
    super(message);
    this.name = 'ApiError';
    this.status = status;
    this.code = code;
  }
}

/** What a route handler gets. */
export interface ApiRequest {
  method: string;
  path: string;
  params: Record<string, string>;
  query: URLSearchParams;
  body: unknown;
  raw: IncomingMessage;
  res: ServerResponse;
}

/** Returns a JSON value, or `STREAMED` when it wrote the response itself. */
export type Handler = (req: ApiRequest) => unknown | Promise<unknown>;
export const STREAMED = Symbol('streamed');

interface Route { method: string; pattern: RegExp; names: string[]; handler: Handler }

/** A tiny router: `GET /v1/endpoints/:name`. */
export class Router {
  private readonly routes: Route[] = [];

  add(method: string, path: string, handler: Handler): this {
    const names: string[] = [];
    const pattern = new RegExp(`^${path.replace(/:(\w+)/g, (_, n: string) => { names.push(n); return '([^/]+)'; })}$`);
    this.routes.push({ method, pattern, names, handler });
    return this;
  }

  match(method: string, path: string): { handler: Handler; params: Record<string, string> } | 'method' | undefined {
    let pathMatched = false;
    for (const r of this.routes) {
      const m = r.pattern.exec(path);
      if (!m) continue;
      pathMatched = true;
      if (r.method !== method) continue;
      const params: Record<string, string> = {};
      r.names.forEach((n, i) => { params[n] = decodeURIComponent(m[i + 1] as string); });
      return { handler: r.handler, params };
    }
    return pathMatched ? 'method' : undefined;
  }
}

/** Policy files can be large (thousands of rules); anything bigger is refused before it is parsed. */
const MAX_BODY = 32 << 20;

async function readBody(req: IncomingMessage): Promise<unknown> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req) {
    size += (chunk as Buffer).length;
    if (size > MAX_BODY) throw new ApiError(413, 'BODY_TOO_LARGE', `request body over ${MAX_BODY} bytes`);
    chunks.push(chunk as Buffer);
  }
  if (size === 0) return undefined;
  try {
    return JSON.parse(Buffer.concat(chunks).toString('utf8'));
  } catch (err) {
    throw new ApiError(400, 'BAD_JSON', `request body is not valid JSON: ${(err as Error).message}`);
  }
}

function send(res: ServerResponse, status: number, value: unknown): void {
  const body = `${JSON.stringify(value)}\n`;
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
  res.end(body);
}

/** Is something already answering on the unix socket at `path`? */
export function socketInUse(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const c = createConnection(path);
    c.once('connect', () => { c.destroy(); resolve(true); });
    c.once('error', () => resolve(false));
  });
}

/**
 * Serves `router` on the unix socket `path` (created 0600). Refuses to start when
 * another process already answers there; removes a stale socket file.
 */
export async function serveApi(path: string, router: Router, onError: (err: Error) => void): Promise<Server> {
  mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
  if (existsSync(path)) {
    if (await socketInUse(path)) throw new ApiError(409, 'AGENT_RUNNING', `another agent is already serving ${path}: stop it or choose another --api-socket`);
    unlinkSync(path);
  }
  const server = createServer((req, res) => {
    void (async () => {
      const url = new URL(req.url ?? '/', 'http://waggle');
      try {
        const found = router.match(req.method ?? 'GET', url.pathname);
        if (found === undefined) throw new ApiError(404, 'NOT_FOUND', `no API route ${url.pathname}`);
        if (found === 'method') throw new ApiError(405, 'METHOD_NOT_ALLOWED', `${req.method} is not allowed on ${url.pathname}`);
        const body = await readBody(req);
        const result = await found.handler({ method: req.method ?? 'GET', path: url.pathname, params: found.params, query: url.searchParams, body, raw: req, res });
        if (result !== STREAMED) send(res, 200, result ?? {});
      } catch (err) {
        if (err instanceof ApiError) {
          send(res, err.status, { error: { code: err.code, message: err.message } });
        } else {
          onError(err as Error);
          const e = err as Error & { code?: unknown };
          send(res, 500, { error: { code: typeof e.code === 'string' ? e.code : 'INTERNAL', message: e.message } });
        }
      }
    })();
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    const oldMask = process.umask(0o177);
    server.listen(path, () => { process.umask(oldMask); resolve(); });
  });
  chmodSync(path, 0o600);
  return server;
}
