/**
 * The web UI on the agent's HTTP listener: the page and its assets (the
 * package's `ui/` directory), and the live data it reads.
 *
 *   GET /                   the page (ui/index.html)
 *   GET /ui/FILE            its scripts, styles and icon (ui/FILE)
 *   GET /api/endpoints      local endpoints (JSON)
 *   GET /api/map            the service map now (JSON, {@link MapSnapshot})
 *   GET /api/map/events     the service map as server-sent events: a snapshot at
 *                           once, then a new one at most every {@link MAP_INTERVAL_MS}
 *                           while something changes
 *   GET /api/flows?QUERY    flows as server-sent events (`data: <Hubble JSON>`), with
 *                           the agent API's query string (filter, since, until, last,
 *                           follow); a bad query is a 400 with the reason
 *
 * Every answer carries a Content-Security-Policy that allows only this
 * origin's scripts, styles and connections. Requests whose Host header is
 * neither an IP address nor this machine's name are refused (a web page
 * elsewhere cannot read flows by rebinding its DNS name to the listener).
 */
import { readFile } from 'node:fs/promises';
import { hostname } from 'node:os';
import { extname, resolve, sep } from 'node:path';
import { fileURLToPath } from 'node:url';
import { isIP } from 'node:net';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { HttpHandler } from '../agent/http-server.js';
import { FilterError, parseFlowQuery } from './filter.js';
import type { EndpointView } from './hubble.js';
import type { FlowPipeline } from './pipeline.js';
import { ServiceMap } from './service-map.js';
import { serveFlows } from './stream.js';

export interface UiSources {
  nodeName: string;
  flows: FlowPipeline;
  /** Local endpoints now. */
  endpoints(): EndpointView[];
}

export interface UiOptions {
  /** Where the page's files are (default: the package's `ui/` directory). */
  uiDir?: string;
  /** Least time between two service map events to one client (ms). */
  mapIntervalMs?: number;
  /** Most clients of the live endpoints at once (flows and map together). */
  maxStreams?: number;
}

export interface AgentUi {
  handler: HttpHandler;
  /** The service map the UI draws (fed by the flow pipeline). */
  map: ServiceMap;
  close(): void;
}

export const MAP_INTERVAL_MS = 300;
const KEEPALIVE_MS = 15_000;
/** A map client whose socket holds more than this skips snapshots until it drains. */
const MAP_MAX_BUFFERED = 1 << 20;

/** The package's ui/ directory: dist/src/observe/ui.js → ../../../ui. */
export const UI_DIR = fileURLToPath(new URL('../../../ui/', import.meta.url));

const CONTENT_TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
  '.ico': 'image/x-icon',
};

export const CSP = [
  "default-src 'none'",
  "script-src 'self'",
  "style-src 'self'",
  "img-src 'self' data:",
  "connect-src 'self'",
  "base-uri 'none'",
  "form-action 'none'",
  "frame-ancestors 'none'",
].join('; ');

const SECURITY_HEADERS: Record<string, string> = {
  'content-security-policy': CSP,
  'x-content-type-options': 'nosniff',
  'referrer-policy': 'no-referrer',
  'x-frame-options': 'DENY',
};

function send(res: ServerResponse, status: number, type: string, body: string | Buffer, extra: Record<string, string> = {}, head = false): void {
  res.writeHead(status, { ...SECURITY_HEADERS, 'content-type': type, 'content-length': String(Buffer.byteLength(body)), 'cache-control': 'no-cache', ...extra });
  res.end(head ? undefined : body);
}

function text(res: ServerResponse, status: number, message: string, extra: Record<string, string> = {}): void {
  send(res, status, 'text/plain; charset=utf-8', `${message}\n`, extra);
}

function json(res: ServerResponse, value: unknown, head = false): void {
  send(res, 200, 'application/json; charset=utf-8', JSON.stringify(value), {}, head);
}

/** Host names a browser may use to reach the UI: IP addresses, localhost and this machine's names. */
function hostAllowed(host: string | undefined, names: ReadonlySet<string>): boolean {
  if (host === undefined) return true;
  const m = /^(?:\[([^\]]+)\]|([^:]*))(?::\d+)?$/.exec(host.trim().toLowerCase());
  if (!m) return false;
  const name = m[1] ?? m[2] ?? '';
  if (m[1] !== undefined) return isIP(name) === 6;
  return isIP(name) === 4 || name === 'localhost' || name.endsWith('.localhost') || names.has(name.replace(/\.$/, ''));
}

/**
 * The file under `dir` that `/ui/REST` names, or undefined when REST is not a
 * plain relative path of known file type (`..`, `.`, empty segments, encoded
 * slashes, backslashes and NULs are refused).
 */
export function staticPath(dir: string, rest: string): string | undefined {
  const parts = rest.split('/');
  const decoded: string[] = [];
  for (const p of parts) {
    let d: string;
    try { d = decodeURIComponent(p); } catch { return undefined; }
    if (d === '' || d === '.' || d === '..' || /[/\\\0]/.test(d) || d.startsWith('.')) return undefined;
    decoded.push(d);
  }
  if (!CONTENT_TYPES[extname(decoded[decoded.length - 1] ?? '')]) return undefined;
  const root = resolve(dir);
  const file = resolve(root, ...decoded);
  return file.startsWith(root + sep) ? file : undefined;
}

interface MapClient {
  res: ServerResponse;
  /** Missed a snapshot while its socket was full: gets the next one even without a change. */
  behind: boolean;
}

export function createUi(sources: UiSources, opts: UiOptions = {}): AgentUi {
  const dir = opts.uiDir ?? UI_DIR;
  const intervalMs = opts.mapIntervalMs ?? MAP_INTERVAL_MS;
  const maxStreams = opts.maxStreams ?? 64;
  const store = sources.flows.store;
  const map = new ServiceMap(store, { nodeName: sources.nodeName, endpoints: () => sources.endpoints() });
  const detach = sources.flows.onFlow(map.hook);
  const hostNames = new Set([hostname().toLowerCase(), hostname().toLowerCase().split('.')[0] ?? '', sources.nodeName.toLowerCase()].filter(Boolean));

  const streams = new Set<ServerResponse>();
  const mapClients = new Set<MapClient>();
  let timer: NodeJS.Timeout | undefined;
  let keepalive: NodeJS.Timeout | undefined;
  let sentVersion = -1;
  let sentEndpoints = '';
  let closed = false;

  const endpointsKey = (): string => sources.endpoints().map((v) => `${v.id}:${v.identity ?? 0}:${v.name}:${v.namespace}:${v.labels.join(',')}`).join('|');

  /** One snapshot for all map clients, when the map or the endpoints changed (or a client is behind). */
  const tick = (): void => {
    const eps = endpointsKey();
    const changed = map.version !== sentVersion || eps !== sentEndpoints;
    if (!changed && ![...mapClients].some((c) => c.behind)) return;
    const payload = `event: map\ndata: ${JSON.stringify(map.snapshot())}\n\n`;
    sentVersion = map.version;
    sentEndpoints = eps;
    for (const c of mapClients) {
      if (!changed && !c.behind) continue;
      if (c.res.writableLength > MAP_MAX_BUFFERED) { c.behind = true; continue; }
      c.behind = false;
      c.res.write(payload);
    }
  };

  const startTimers = (): void => {
    if (timer) return;
    timer = setInterval(tick, intervalMs);
    keepalive = setInterval(() => { for (const c of mapClients) if (c.res.writableLength < MAP_MAX_BUFFERED) c.res.write(': keepalive\n\n'); }, KEEPALIVE_MS);
  };
  const stopTimers = (): void => {
    clearInterval(timer);
    clearInterval(keepalive);
    timer = keepalive = undefined;
  };

  const track = (res: ServerResponse): boolean => {
    if (streams.size >= maxStreams) {
      text(res, 503, `too many live UI connections (${maxStreams}); close some tabs`, { 'retry-after': '5' });
      return false;
    }
    streams.add(res);
    res.on('close', () => { streams.delete(res); });
    return true;
  };

  const mapEvents = (res: ServerResponse): void => {
    if (!track(res)) return;
    res.writeHead(200, { ...SECURITY_HEADERS, 'content-type': 'text/event-stream', 'cache-control': 'no-cache', 'x-accel-buffering': 'no' });
    const client: MapClient = { res, behind: false };
    res.write(`retry: 2000\nevent: map\ndata: ${JSON.stringify(map.snapshot())}\n\n`);
    mapClients.add(client);
    startTimers();
    res.on('close', () => {
      mapClients.delete(client);
      if (mapClients.size === 0) stopTimers();
    });
  };

  const flowEvents = (res: ServerResponse, url: URL): void => {
    let q;
    try {
      q = parseFlowQuery(url.searchParams);
    } catch (err) {
      if (err instanceof FilterError) { text(res, 400, err.message); return; }
      throw err;
    }
    if (!track(res)) return;
    void serveFlows(store, q, res, {
      format: 'sse',
      onSkipped: (n) => { sources.flows.countBackpressure(n); },
      headers: { ...SECURITY_HEADERS, 'x-accel-buffering': 'no' },
    });
  };

  const staticFile = async (res: ServerResponse, file: string | undefined, head: boolean): Promise<void> => {
    if (file === undefined) { text(res, 404, 'not found'); return; }
    let body: Buffer;
    try {
      body = await readFile(file);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOENT' || code === 'EISDIR' || code === 'ENOTDIR') { text(res, 404, 'not found'); return; }
      throw err;
    }
    send(res, 200, CONTENT_TYPES[extname(file)]!, body, {}, head);
  };

  const handler: HttpHandler = async (req: IncomingMessage, res: ServerResponse, url: URL) => {
    const path = url.pathname;
    const ours = path === '/' || path === '/index.html' || path === '/favicon.ico' || path === '/ui' || path.startsWith('/ui/') || path === '/api' || path.startsWith('/api/');
    if (!ours) return false;
    if (closed) { text(res, 503, 'the agent is stopping'); return true; }
    if (!hostAllowed(req.headers.host, hostNames)) {
      text(res, 403, `Host ${JSON.stringify(req.headers.host)} is not this agent: open the UI by IP address, localhost or the machine's name`);
      return true;
    }
    const method = req.method ?? 'GET';
    if (method !== 'GET' && method !== 'HEAD') { text(res, 405, `${method} is not allowed here`, { allow: 'GET, HEAD' }); return true; }
    const head = method === 'HEAD';
    switch (path) {
      case '/':
      case '/index.html':
        await staticFile(res, resolve(dir, 'index.html'), head);
        return true;
      case '/favicon.ico':
        await staticFile(res, resolve(dir, 'favicon.svg'), head);
        return true;
      case '/api/endpoints':
        json(res, sources.endpoints().map((v) => ({ id: v.id, name: v.name, namespace: v.namespace, labels: v.labels, identity: v.identity ?? 0 })), head);
        return true;
      case '/api/map':
        json(res, map.snapshot(), head);
        return true;
      case '/api/map/events':
      case '/api/flows':
        // HEAD: the headers a stream would start with, and no stream.
        if (head) send(res, 200, 'text/event-stream', '', {}, true);
        else if (path === '/api/flows') flowEvents(res, url);
        else mapEvents(res);
        return true;
    }
    if (path.startsWith('/ui/')) {
      await staticFile(res, staticPath(dir, path.slice('/ui/'.length)), head);
      return true;
    }
    text(res, 404, 'not found');
    return true;
  };

  return {
    handler,
    map,
    close() {
      closed = true;
      stopTimers();
      map.close();
      detach();
      for (const res of streams) if (!res.writableEnded) res.end();
      streams.clear();
      mapClients.clear();
    },
  };
}
