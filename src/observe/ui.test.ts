/**
 * The UI's HTTP surface on a real listener (loopback, port 0), fed synthetic
 * flows: static files, content types, the CSP, path and host checks, the map
 * API and its events, and the flow stream with its 400 on a bad filter. The
 * page itself in a browser against a real agent: test/ui.test.ts.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { request, type Server } from 'node:http';
import { createHttpServer, listen } from '../agent/http-server.js';
import type { FlowEvent } from '../datapath/codecs/flow-event.js';
import type { EndpointView } from './hubble.js';
import { FlowPipeline } from './pipeline.js';
import type { MapSnapshot } from './service-map.js';
import { addr, flowEventBytes } from './test-events.js';
import { createUi, CSP, staticPath, UI_DIR, type AgentUi } from './ui.js';

const CLIENT: EndpointView = { id: 1, name: 'client', namespace: 'shop', labels: ['k8s:app=client'], identity: 256 };
const WEB: EndpointView = { id: 2, name: 'web', namespace: 'shop', labels: ['k8s:app=web'], identity: 257 };

let server: Server;
let base: URL;
let ui: AgentUi;
let pipeline: FlowPipeline;

function send(fields: Partial<FlowEvent> = {}): void {
  const buf = flowEventBytes(fields);
  pipeline.ingest(new DataView(buf.buffer, buf.byteOffset, buf.byteLength), 0);
}

before(async () => {
  const eps = [CLIENT, WEB];
  pipeline = new FlowPipeline(100, {
    nodeName: 'node-ui', endpoint: (id) => eps.find((e) => e.id === id), endpointByIp: () => undefined,
    rule: () => undefined, identityLabels: () => undefined,
  });
  ui = createUi({ nodeName: 'node-ui', flows: pipeline, endpoints: () => eps }, { mapIntervalMs: 50 });
  server = createHttpServer([ui.handler], (err) => { throw err; });
  base = new URL(await listen(server, '127.0.0.1:0'));
  send({ flags: 0x01 });
  send({ type: 1, verdict: 2, dropReason: 133, obsPoint: 0, srcEndpoint: 1, dstEndpoint: 2 });
});

after(async () => {
  ui.close();
  server.closeAllConnections();
  await new Promise<void>((r) => server.close(() => r()));
});

interface Answer { status: number; headers: Record<string, string | string[] | undefined>; body: string }

/** One request with the path sent exactly as given (no client-side normalising). */
function get(path: string, opts: { method?: string; host?: string } = {}): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = request({ host: base.hostname, port: base.port, path, method: opts.method ?? 'GET', agent: false, headers: opts.host ? { host: opts.host } : {} }, (res) => {
      let body = '';
      res.setEncoding('utf8').on('data', (d: string) => { body += d; }).on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
    });
    req.on('error', reject);
    req.end();
  });
}

/** Reads server-sent events from `path` until `until` says stop; returns the data lines' JSON. */
function events<T>(path: string, until: (got: T[]) => boolean, timeoutMs = 5000): Promise<T[]> {
  return new Promise((resolve, reject) => {
    const got: T[] = [];
    const req = request({ host: base.hostname, port: base.port, path, agent: false }, (res) => {
      if (res.statusCode !== 200) { reject(new Error(`${path}: ${res.statusCode}`)); return; }
      let buf = '';
      res.setEncoding('utf8').on('data', (d: string) => {
        buf += d;
        let i;
        while ((i = buf.indexOf('\n\n')) >= 0) {
          const chunk = buf.slice(0, i);
          buf = buf.slice(i + 2);
          for (const line of chunk.split('\n')) if (line.startsWith('data: ')) got.push(JSON.parse(line.slice(6)) as T);
          if (until(got)) { clearTimeout(timer); req.destroy(); resolve(got); return; }
        }
      });
      res.on('end', () => { clearTimeout(timer); resolve(got); });
    });
    const timer = setTimeout(() => { req.destroy(); reject(new Error(`${path}: timed out with ${got.length} events`)); }, timeoutMs);
    req.on('error', (err) => { if (!req.destroyed) reject(err); });
    req.end();
  });
}

test('the page and its files: content types, CSP, no caching surprises', async () => {
  const page = await get('/');
  assert.equal(page.status, 200);
  assert.equal(page.headers['content-type'], 'text/html; charset=utf-8');
  assert.equal(page.headers['content-security-policy'], CSP);
  assert.match(CSP, /script-src 'self'/);
  assert.doesNotMatch(CSP, /unsafe/);
  assert.equal(page.headers['x-content-type-options'], 'nosniff');
  assert.match(page.body, /<script type="module" src="\/ui\/app\.js"><\/script>/);
  for (const [path, type] of [['/ui/app.js', 'text/javascript; charset=utf-8'], ['/ui/map.js', 'text/javascript; charset=utf-8'],
    ['/ui/flows.js', 'text/javascript; charset=utf-8'], ['/ui/style.css', 'text/css; charset=utf-8'], ['/ui/favicon.svg', 'image/svg+xml'], ['/favicon.ico', 'image/svg+xml']] as const) {
    const r = await get(path);
    assert.equal(r.status, 200, path);
    assert.equal(r.headers['content-type'], type, path);
    assert.ok(r.body.length > 0, path);
  }
  const head = await get('/ui/app.js', { method: 'HEAD' });
  assert.equal(head.status, 200);
  assert.equal(head.body, '');
  const post = await get('/', { method: 'POST' });
  assert.equal(post.status, 405);
  assert.equal(post.headers.allow, 'GET, HEAD');
});

test('no way out of ui/: traversal, hidden and unknown files are 404', async () => {
  for (const path of ['/ui/../package.json', '/ui/..%2f..%2fpackage.json', '/ui/%2e%2e/package.json', '/ui/%2e%2e%2fpackage.json', '/ui/..%5cpackage.json',
    '/ui/.%2e/src/observe/ui.ts', '/ui/tsconfig.json', '/ui/nope.js', '/ui/', '/ui/%00.js', '/ui/%zz.js', '/api/nothing', '/ui']) {
    const r = await get(path);
    assert.equal(r.status, 404, `${path} → ${r.status}`);
    assert.doesNotMatch(r.body, /"name": "waggle"|compilerOptions/, path);
  }
  assert.equal(staticPath(UI_DIR, '../package.json'), undefined);
  assert.equal(staticPath(UI_DIR, 'a/%2e%2e/x.js'), undefined);
  assert.equal(staticPath(UI_DIR, 'app.js'), `${UI_DIR}app.js`);
  // Paths the UI does not own are left to the next handler (here: the server's 404).
  assert.equal((await get('/metrics')).body, 'not found\n');
});

test('a Host that is not this machine is refused (DNS rebinding)', async () => {
  assert.equal((await get('/api/map', { host: 'evil.example:9962' })).status, 403);
  assert.equal((await get('/api/map', { host: 'localhost:9962' })).status, 200);
  assert.equal((await get('/api/map', { host: '[::1]:9962' })).status, 200);
  assert.equal((await get('/api/map', { host: `${base.hostname}:${base.port}` })).status, 200);
});

test('GET /api/map and /api/endpoints', async () => {
  const r = await get('/api/map');
  assert.equal(r.status, 200);
  assert.equal(r.headers['content-type'], 'application/json; charset=utf-8');
  const snap = JSON.parse(r.body) as MapSnapshot;
  assert.equal(snap.nodeName, 'node-ui');
  assert.deepEqual(snap.nodes.map((n) => n.name), ['client', 'web']);
  assert.equal(snap.edges.length, 1);
  assert.deepEqual([snap.edges[0]?.forwarded, snap.edges[0]?.dropped], [1, 1]);
  const eps = JSON.parse((await get('/api/endpoints')).body) as { name: string; namespace: string }[];
  assert.deepEqual(eps.map((e) => `${e.namespace}/${e.name}`), ['shop/client', 'shop/web']);
});

test('GET /api/map/events: a snapshot at once, another when flows change the map', async () => {
  let sent = false;
  const got = await events<MapSnapshot>('/api/map/events', (snaps) => {
    if (snaps.length === 1 && !sent) {
      sent = true;
      send({ srcEndpoint: 2, dstEndpoint: 1, dstPort: 8080, srcAddr: addr('10.0.0.3'), dstAddr: addr('10.0.0.2') });
    }
    return snaps.some((s) => s.edges.length === 2);
  });
  assert.equal(got[0]?.edges.length, 1);
  assert.ok(got.at(-1)?.edges.some((e) => e.id === 'endpoint:2->endpoint:1' && e.forwarded === 1));
});

test('GET /api/flows: the agent API\'s query as server-sent events; a bad filter is a 400 saying why', async () => {
  const drops = await events<{ flow: { verdict: string } }>(`/api/flows?${new URLSearchParams({ filter: JSON.stringify({ include: [{ verdict: ['DROPPED'] }] }) })}`, () => false);
  assert.deepEqual(drops.map((r) => r.flow.verdict), ['DROPPED']);
  const last = await events<{ flow: { uuid: string } }>('/api/flows?last=2', () => false);
  assert.equal(last.length, 2);
  let live = 0;
  const followed = await events<{ flow: { l4: { TCP: { destination_port: number } } } }>('/api/flows?follow=true', (got) => {
    if (live++ === 0) setTimeout(() => send({ dstPort: 9999 }), 50);
    return got.length > 0;
  });
  assert.equal(followed[0]?.flow.l4.TCP.destination_port, 9999);

  const bad = await get('/api/flows?filter=nope');
  assert.equal(bad.status, 400);
  assert.equal(bad.body, 'filter: not valid JSON\n');
  const badIp = await get(`/api/flows?${new URLSearchParams({ filter: JSON.stringify({ include: [{ ip: ['not-an-ip'] }] }) })}`);
  assert.equal(badIp.status, 400);
  assert.match(badIp.body, /ip: "not-an-ip" is not an IP address or CIDR/);
  assert.equal((await get('/api/flows?last=0')).status, 400);
});

test('close() ends the live streams', async () => {
  const pipeline2 = new FlowPipeline(10, { nodeName: 'n', endpoint: () => undefined, endpointByIp: () => undefined, rule: () => undefined, identityLabels: () => undefined });
  const ui2 = createUi({ nodeName: 'n', flows: pipeline2, endpoints: () => [] });
  const srv = createHttpServer([ui2.handler], (err) => { throw err; });
  const url = new URL(await listen(srv, '127.0.0.1:0'));
  try {
    const ended = new Promise<string>((resolve, reject) => {
      const req = request({ host: url.hostname, port: url.port, path: '/api/map/events', agent: false }, (res) => {
        let body = '';
        res.setEncoding('utf8').on('data', (d: string) => { body += d; if (body.includes('\n\n')) ui2.close(); }).on('end', () => resolve(body));
      });
      req.on('error', reject);
      req.end();
    });
    assert.match(await ended, /event: map\ndata: \{/);
  } finally {
    srv.closeAllConnections();
    await new Promise<void>((r) => srv.close(() => r()));
  }
});
