/**
 * The web UI in a real browser against a real agent and real traffic.
 *
 * One agent and three endpoints — client (app=client) and web (app=web) in
 * namespace ui-shop, outsider (app=outsider) in ui-other — and headless
 * Chromium (Debian's `chromium`, driven by playwright-core) on the agent's
 * HTTP listener:
 *
 * 1. the map shows the three endpoints in their namespaces;
 * 2. a TCP exchange client → web becomes one forwarded edge client → web
 *    (replies count on it; there is no web → client edge) and forwarded rows
 *    in the flow table;
 * 3. a CiliumNetworkPolicy lets only app=client reach web; outsider → web is
 *    dropped in the kernel and becomes a dropped edge with POLICY_DENIED, and a
 *    DROPPED row;
 * 4. the table's verdict filter leaves only dropped rows, also for flows that
 *    arrive afterwards; clicking a node filters by that endpoint; a bad filter
 *    shows the agent's 400 message;
 * 5. the page raises no script errors and no CSP violations;
 * 6. the HTTP surface of the real agent: CSP, a bad filter's 400, no path out
 *    of ui/.
 *
 * A screenshot of the page is kept at test-artifacts/ui-service-map.png.
 * Traffic stays between the endpoint namespaces, on the pod CIDRs TestAgent
 * picks; the agent, its endpoints, the browser and its profile directory are
 * removed even when a step fails.
 */
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium, type BrowserContext, type Page } from 'playwright-core';
import { TestAgent } from './helpers/agent.js';
import { Cleanup, endpointNs, listNetns } from './helpers/netns.js';
import { requireTools, skipUnlessRoot } from './helpers/root.js';
import { tcpExchange } from './helpers/traffic.js';

const cleanup = new Cleanup();
after(() => cleanup.run());

/** The repository root (this file runs as dist/test/ui.test.js). */
const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
export const SCREENSHOT = join(ROOT, 'test-artifacts', 'ui-service-map.png');
const CHROMIUM = '/usr/bin/chromium';
/** Without these, Chromium on a machine without internet keeps trying its background services. */
const CHROMIUM_ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync'];
const PID = process.pid;
const SHOP = 'ui-shop';
const OTHER = 'ui-other';
const PORT = 8080;
/** How long the page may take to show what the agent saw (it updates within ~0.3 s). */
const UI_TIMEOUT_MS = 15_000;

interface Endpoint {
  id: number;
  name: string;
  namespace: string;
  ipv4: string;
}


/** PIDs of processes whose command line mentions `text` (the browser's profile directory). */
function processesWith(text: string): number[] {
  const pids: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      if (readFileSync(`/proc/${entry}/cmdline`, 'utf8').includes(text)) pids.push(Number(entry));
    } catch {
      // gone meanwhile
    }
  }
  return pids;
}

/** One HTTP request to the agent's listener with the path sent as given. */
function httpGet(base: string, path: string): Promise<{ status: number; headers: Record<string, unknown>; body: string }> {
  const u = new URL(base);
  return new Promise((resolvePromise, reject) => {
    const req = request({ host: u.hostname, port: u.port, path, agent: false }, (res) => {
      let body = '';
      res.setEncoding('utf8').on('data', (d: string) => { body += d; }).on('end', () => resolvePromise({ status: res.statusCode ?? 0, headers: res.headers, body }));
    });
    req.on('error', reject);
    req.setTimeout(10_000, () => req.destroy(new Error(`GET ${path}: no answer in 10 s`)));
    req.end();
  });
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Polls `fn` (which reads the page) until it returns true; throws naming `what` after {@link UI_TIMEOUT_MS}. */
async function until(what: string, fn: () => Promise<boolean>, timeoutMs = UI_TIMEOUT_MS): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await fn())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(100);
  }
}

/** Waits until the edge `sel` shows at least `min` flows of `verdict` (and a line of that colour). */
async function waitForEdge(page: Page, sel: string, verdict: 'forwarded' | 'dropped', min: number): Promise<void> {
  const edge = page.locator(sel);
  await until(`${sel} with ${min}+ ${verdict} flows`, async () =>
    (await edge.count()) === 1
    && Number(await edge.getAttribute(`data-${verdict}`)) >= min
    && (await edge.locator(`path[data-verdict="${verdict}"]`).count()) === 1);
}

interface Row { verdict: string; source: string; destination: string }

/** The flow table's rows, newest first. */
function rows(page: Page): Promise<Row[]> {
  return page.locator('#flows tbody tr').evaluateAll((trs) => trs.map((tr) => ({
    verdict: tr.getAttribute('data-verdict') ?? '', source: tr.getAttribute('data-source') ?? '', destination: tr.getAttribute('data-destination') ?? '',
  })));
}

test('the web UI shows the live service map and flows of real traffic in a real browser', { timeout: 240_000 }, async (t) => {
  if (skipUnlessRoot(t)) return;
  if (requireTools(t, 'ip', 'chromium')) return;

  const agent = new TestAgent();
  cleanup.add(() => agent.remove(), `agent ${agent.nodeName}`);
  await agent.start();
  assert.match(agent.url, /^http:\/\/127\.0\.0\.1:\d+$/);

  const create = (name: string, labels: string, ns: string): Endpoint =>
    JSON.parse(agent.ok(['endpoint', 'create', name, '--labels', labels, '--namespace', ns, '-o', 'json'])) as Endpoint;
  const client = create(`ui-${PID}-client`, 'app=client', SHOP);
  const web = create(`ui-${PID}-web`, 'app=web', SHOP);
  const outsider = create(`ui-${PID}-outsider`, 'app=outsider', OTHER);
  const ref = (e: Endpoint): string => `${e.namespace}/${e.name}`;

  // The browser, with a profile of its own that goes with it.
  const profile = mkdtempSync(join(tmpdir(), 'waggle-ui-chromium-'));
  cleanup.add(() => rmSync(profile, { recursive: true, force: true }), `browser profile ${profile}`);
  const context: BrowserContext = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS, viewport: { width: 1400, height: 1000 },
  });
  let closed = false;
  const closeBrowser = async (): Promise<void> => {
    if (closed) return;
    closed = true;
    await context.close();
  };
  cleanup.add(closeBrowser, 'browser');
  const page = context.pages()[0] ?? await context.newPage();
  const problems: string[] = [];
  page.on('pageerror', (err) => problems.push(`page error: ${err.message}`));
  // The one error the browser logs by design: the 400 of the bad filter below (a failed resource load).
  page.on('console', (m) => { if (m.type() === 'error' && !/status of 400 \(Bad Request\)/.test(m.text())) problems.push(`console error: ${m.text()}`); });

  await t.test('the map shows the endpoints, in their namespaces', async () => {
    await page.goto(agent.url);
    for (const e of [client, web, outsider]) await page.locator(`[data-endpoint="${ref(e)}"]`).waitFor({ timeout: UI_TIMEOUT_MS });
    await page.locator('#map-status[data-state="live"]').waitFor({ timeout: UI_TIMEOUT_MS });
    await page.locator('#flow-status[data-state="live"]').waitFor({ timeout: UI_TIMEOUT_MS });
    assert.equal(await page.locator(`.ns-title[data-namespace="${SHOP}"]`).textContent(), `namespace ${SHOP}`);
    assert.equal(await page.locator(`.ns-title[data-namespace="${OTHER}"]`).textContent(), `namespace ${OTHER}`);
    assert.equal(await page.locator(`.app-title[data-namespace="${SHOP}"]`).allTextContents().then((t) => t.join(' ')), 'app=client app=web');
    assert.match(await page.title(), new RegExp(agent.nodeName));
  });

  const forwardedEdge = `[data-edge="${ref(client)}->${ref(web)}"]`;
  const droppedEdge = `[data-edge="${ref(outsider)}->${ref(web)}"]`;

  await t.test('a TCP exchange between two endpoints is a forwarded edge and forwarded rows', async () => {
    assert.equal(await tcpExchange(endpointNs(client.name), endpointNs(web.name), web.ipv4, PORT, 2000), 2000);
    await waitForEdge(page, forwardedEdge, 'forwarded', 1);
    const edge = page.locator(forwardedEdge);
    assert.equal(await edge.getAttribute('data-verdict'), 'forwarded');
    assert.equal(await edge.getAttribute('data-dropped'), '0');
    assert.ok(Number(await edge.getAttribute('data-forwarded')) >= 2, 'the SYN and its SYN-ACK (a reply) at least');
    assert.match(await edge.locator('.label').textContent() ?? '', /^✓\d+$/);
    assert.equal(await page.locator(`[data-edge="${ref(web)}->${ref(client)}"]`).count(), 0, 'replies count on the client → server edge');
    await page.locator(`#flows tbody tr[data-verdict="FORWARDED"][data-source="${ref(client)}"][data-destination="${ref(web)}"]`).first().waitFor({ timeout: UI_TIMEOUT_MS });
  });

  await t.test('a connection a policy drops is a dropped edge and a DROPPED row', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'waggle-ui-policy-'));
    cleanup.add(() => rmSync(dir, { recursive: true, force: true }), `policy dir ${dir}`);
    const file = join(dir, 'web-allow-client.yaml');
    writeFileSync(file, `apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata:
  name: web-allow-client
  namespace: ${SHOP}
spec:
  endpointSelector:
    matchLabels:
      app: web
  ingress:
  - fromEndpoints:
    - matchLabels:
        app: client
`);
    agent.ok(['apply', '-f', file]);
    assert.equal(await tcpExchange(endpointNs(outsider.name), endpointNs(web.name), web.ipv4, PORT, 100, { timeoutMs: 1500 }), 0, 'outsider must not reach web');
    await waitForEdge(page, droppedEdge, 'dropped', 1);
    const edge = page.locator(droppedEdge);
    assert.equal(await edge.getAttribute('data-verdict'), 'dropped');
    assert.equal(await edge.getAttribute('data-forwarded'), '0');
    assert.match(await edge.locator('.label').textContent() ?? '', /^✗\d+$/);
    assert.match(await edge.locator('title').textContent() ?? '', /POLICY_DENIED/);
    const row = page.locator(`#flows tbody tr[data-verdict="DROPPED"][data-source="${ref(outsider)}"][data-destination="${ref(web)}"]`).first();
    await row.waitFor({ timeout: UI_TIMEOUT_MS });
    assert.match(await row.locator('td.verdict').textContent() ?? '', /DROPPED \(POLICY_DENIED\)/);
    // The client is still allowed: its edge stays forwarded only.
    assert.equal(await tcpExchange(endpointNs(client.name), endpointNs(web.name), web.ipv4, PORT, 100), 100);

    mkdirSync(dirname(SCREENSHOT), { recursive: true });
    await page.screenshot({ path: SCREENSHOT, fullPage: true });
    console.log(`screenshot: ${SCREENSHOT}`);
    t.diagnostic(`screenshot: ${SCREENSHOT}`);
  });

  await t.test('the table\'s filters: verdict DROPPED leaves only drops, live too; a node click filters by endpoint; a bad filter says why', async () => {
    await page.selectOption('#f-verdict', 'DROPPED');
    await page.click('#f-apply');
    await until('only DROPPED rows', async () => {
      const rs = await rows(page);
      return rs.length > 0 && rs.every((r) => r.verdict === 'DROPPED');
    });
    assert.match(page.url(), /\?filter=/, 'the filter is in the page address');
    const before = (await rows(page)).length;
    // Forwarded traffic, then one more drop: when the drop's rows are there, the forwarded flows (earlier) were filtered out.
    assert.equal(await tcpExchange(endpointNs(client.name), endpointNs(web.name), web.ipv4, PORT, 100), 100);
    assert.equal(await tcpExchange(endpointNs(outsider.name), endpointNs(web.name), web.ipv4, PORT, 100, { timeoutMs: 1500 }), 0);
    await until('the new drop\'s rows', async () => (await rows(page)).length > before);
    const dropped = await rows(page);
    assert.ok(dropped.every((r) => r.verdict === 'DROPPED'), JSON.stringify(dropped.filter((r) => r.verdict !== 'DROPPED')));

    // Clicking a node shows that endpoint's flows (either end).
    await page.click('#f-reset');
    await page.locator(`[data-endpoint="${ref(client)}"]`).click();
    assert.equal(await page.inputValue('#f-endpoint'), ref(client));
    await until(`only rows of ${ref(client)}`, async () => {
      const rs = await rows(page);
      return rs.length > 0 && rs.every((r) => r.source === ref(client) || r.destination === ref(client));
    });

    // A filter the agent rejects: its message, and the table waits for a good one.
    await page.fill('#f-ip', 'not-an-ip');
    await page.click('#f-apply');
    const error = page.locator('#filter-error');
    await error.waitFor({ state: 'visible', timeout: UI_TIMEOUT_MS });
    assert.match(await error.textContent() ?? '', /ip: "not-an-ip" is not an IP address or CIDR/);
    assert.equal(await page.locator('#flow-status').getAttribute('data-state'), 'error');
    await page.fill('#f-ip', '');
    await page.click('#f-apply');
    await error.waitFor({ state: 'hidden', timeout: UI_TIMEOUT_MS });
  });

  await t.test('the agent\'s listener: CSP on the page, 400 for a bad filter, nothing outside ui/', async () => {
    const home = await httpGet(agent.url, '/');
    assert.equal(home.status, 200);
    assert.match(String(home.headers['content-security-policy']), /default-src 'none'; script-src 'self'/);
    const bad = await httpGet(agent.url, `/api/flows?${new URLSearchParams({ filter: '{"include":[{"port":["x"]}]}' })}`);
    assert.equal(bad.status, 400);
    assert.match(bad.body, /^filter: include\.0\.port\.0: /);
    for (const path of ['/ui/../package.json', '/ui/..%2fpackage.json', '/ui/%2e%2e/%2e%2e/package.json', '/ui/nothing.js']) {
      assert.equal((await httpGet(agent.url, path)).status, 404, path);
    }
    const map = JSON.parse((await httpGet(agent.url, '/api/map')).body) as { edges: { forwarded: number; dropped: number }[] };
    assert.ok(map.edges.some((e) => e.dropped > 0) && map.edges.some((e) => e.forwarded > 0));
  });

  assert.deepEqual(problems, [], 'the page ran without script errors or CSP violations');
  await closeBrowser();
  assert.deepEqual(processesWith(profile), [], 'no browser process is left');
});

test('nothing is left behind: namespaces of this file\'s endpoints', async (t) => {
  if (skipUnlessRoot(t)) return;
  await cleanup.run();
  assert.deepEqual(listNetns().filter((n) => n.startsWith(`ui-${PID}-`)), []);
});
