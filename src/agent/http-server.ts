/**
 * The agent's HTTP listener (`--http-listen`): health, Prometheus metrics and
 * the web UI. Each part is a handler that answers the paths it owns.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

/** Answers the request and returns true, or returns false to let the next handler try. */
export type HttpHandler = (req: IncomingMessage, res: ServerResponse, url: URL) => boolean | Promise<boolean>;

function healthz(req: IncomingMessage, res: ServerResponse, url: URL): boolean {
  if (url.pathname !== '/healthz') return false;
  res.writeHead(200, { 'content-type': 'text/plain' });
  res.end('ok\n');
  return true;
}

export function createHttpServer(handlers: HttpHandler[], onError: (err: Error) => void): Server {
  const all = [healthz, ...handlers];
  return createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://agent');
    void (async () => {
      for (const h of all) if (await h(req, res, url)) return;
      res.writeHead(404, { 'content-type': 'text/plain' });
      res.end('not found\n');
    })().catch((err: unknown) => {
      onError(err as Error);
      if (!res.headersSent) res.writeHead(500, { 'content-type': 'text/plain' });
      if (!res.writableEnded) res.end('internal error\n');
    });
  });
}

/** Listens on `host:port` (port 0 picks one); resolves with the URL actually served. */
export function listen(server: Server, hostPort: string): Promise<string> {
  const i = hostPort.lastIndexOf(':');
  const host = hostPort.slice(0, i).replace(/^\[|\]$/g, '');
  const port = Number(hostPort.slice(i + 1));
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      const a = server.address() as AddressInfo;
      resolve(`http://${a.family === 'IPv6' ? `[${a.address}]` : a.address}:${a.port}`);
    });
  });
}
