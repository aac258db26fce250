// @ts-check
/* global document, ResizeObserver */
/**
 * The service map as SVG: a box per namespace (and one for the host, world and
 * CIDRs), endpoints grouped by `app` label inside, an arrow per observed
 * connection from client to server — green for forwarded flows, red (dashed)
 * for dropped ones, with both counts. Every node and edge carries data
 * attributes (data-endpoint="ns/name", data-edge="A->B", data-verdict,
 * data-forwarded, data-dropped) for tests and tools.
 */

/** @typedef {import('../src/observe/service-map.js').MapSnapshot} MapSnapshot */
/** @typedef {import('../src/observe/service-map.js').MapNode} MapNode */
/** @typedef {import('../src/observe/service-map.js').MapEdge} MapEdge */
/** @typedef {{ x: number, y: number }} Point */
/** @typedef {{ kind: 'node', node: MapNode } | { kind: 'edge', edge: MapEdge, from: MapNode, to: MapNode }} Selection */

const SVG = 'http://www.w3.org/2000/svg';
const SLOT_W = 138;
const SLOT_H = 70;
const RADIUS = 15;
const PAD = 14;
const NS_TITLE = 26;
const APP_TITLE = 16;
const GAP = 26;
const MAX_COLS = 4;
const OUTSIDE_TITLE = 'outside: host, world, CIDRs';
const GLYPHS = /** @type {Record<string, string>} */ ({ endpoint: '', remote: 'R', reserved: '', cidr: '/', unknown: '?' });
const RESERVED_GLYPHS = /** @type {Record<string, string>} */ ({ host: 'H', world: 'W', 'world-ipv4': 'W', 'world-ipv6': 'W', 'remote-node': 'N' });

/**
 * How a node is named in data-endpoint / data-edge: `namespace/name` for
 * endpoints (and other nodes' endpoints), the name (`world`, `host`, a CIDR)
 * otherwise.
 * @param {MapNode} n
 */
export function nodeRef(n) {
  return n.namespace ? `${n.namespace}/${n.name}` : n.name;
}

/**
 * @param {string} tag
 * @param {Record<string, string | number>} [attrs]
 * @param {string} [text]
 * @returns {SVGElement}
 */
function el(tag, attrs = {}, text) {
  const e = /** @type {SVGElement} */ (document.createElementNS(SVG, tag));
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
  if (text !== undefined) e.textContent = text;
  return e;
}

/**
 * Positions: namespaces as boxes laid out left to right (wrapping at
 * `width`); inside each, a column per app group (up to four side by side,
 * then another row of groups), its endpoints stacked in the column.
 * @param {MapNode[]} nodes sorted by namespace, app, name
 * @param {number} width
 */
function layout(nodes, width) {
  /** @type {Map<string, Map<string, MapNode[]>>} */
  const namespaces = new Map();
  for (const n of nodes) {
    const ns = n.namespace;
    if (!namespaces.has(ns)) namespaces.set(ns, new Map());
    const apps = /** @type {Map<string, MapNode[]>} */ (namespaces.get(ns));
    // Outside any namespace (host, world, CIDRs) every node is a group of its own: side by side.
    const key = ns === '' ? `\0${n.id}` : n.app;
    if (!apps.has(key)) apps.set(key, []);
    /** @type {MapNode[]} */ (apps.get(key)).push(n);
  }
  // Namespaced boxes first (sorted), the outside box ('' namespace) last.
  const order = [...namespaces.keys()].sort((a, b) => (a === '' ? 1 : b === '' ? -1 : a < b ? -1 : a > b ? 1 : 0));
  /** @type {Map<string, Point>} */
  const pos = new Map();
  /** @type {{ ns: string, x: number, y: number, w: number, h: number, apps: { app: string, x: number, y: number }[] }[]} */
  const boxes = [];
  let x = GAP / 2;
  let y = GAP / 2;
  let rowH = 0;
  for (const ns of order) {
    const groups = [.../** @type {Map<string, MapNode[]>} */ (namespaces.get(ns))];
    const cols = Math.min(MAX_COLS, groups.length);
    /** Rows of groups: each as tall as its tallest group. @type {number[]} */
    const rowHeights = [];
    // Every other column sits half a slot lower, so that an edge between two
    // groups of a row does not run through the groups between them.
    const stagger = cols > 2 ? SLOT_H / 2 : 0;
    for (let i = 0; i < groups.length; i += cols) {
      rowHeights.push(APP_TITLE + stagger + Math.max(...groups.slice(i, i + cols).map(([, m]) => m.length)) * SLOT_H);
    }
    const title = ns ? `namespace ${ns}` : OUTSIDE_TITLE;
    const w = Math.max(cols * SLOT_W, title.length * 8) + 2 * PAD;
    const h = NS_TITLE + rowHeights.reduce((a, b) => a + b, 0) + PAD / 2;
    if (x > GAP / 2 && x + w > width) { x = GAP / 2; y += rowH + GAP; rowH = 0; }
    const box = { ns, x, y, w, h, apps: /** @type {{ app: string, x: number, y: number }[]} */ ([]) };
    let gy = y + NS_TITLE;
    groups.forEach(([app, members], i) => {
      const col = i % cols;
      if (i > 0 && col === 0) gy += rowHeights[i / cols - 1] ?? 0;
      const gx = x + PAD + col * SLOT_W;
      box.apps.push({ app: ns ? app : '', x: gx, y: gy + (col % 2 ? stagger : 0) });
      const gyOff = col % 2 ? stagger : 0;
      members.forEach((n, j) => pos.set(n.id, { x: gx + SLOT_W / 2, y: gy + gyOff + APP_TITLE + j * SLOT_H + RADIUS + 6 }));
    });
    boxes.push(box);
    x += w + GAP;
    rowH = Math.max(rowH, h);
  }
  const totalW = Math.max(width, ...boxes.map((b) => b.x + b.w + GAP / 2));
  return { pos, boxes, width: totalW, height: y + rowH + GAP / 2 };
}

/**
 * A curve from a to b bending by `bend` (a fraction of the distance) to the
 * right of the direction of travel (a left-to-right edge arcs up, away from
 * the names under the nodes; the way back arcs down), trimmed so it starts
 * and ends at the circles.
 * @param {Point} a @param {Point} b @param {number} bend
 */
function curve(a, b, bend) {
  if (a.x === b.x && a.y === b.y) {
    const r = RADIUS;
    return { d: `M ${a.x - r * 0.6} ${a.y - r * 0.8} C ${a.x - r * 2.5} ${a.y - r * 4}, ${a.x + r * 2.5} ${a.y - r * 4}, ${a.x + r * 0.6} ${a.y - r * 0.8}`, mid: { x: a.x, y: a.y - r * 3.2 } };
  }
  const dx = b.x - a.x;
  const dy = b.y - a.y;
  const dist = Math.hypot(dx, dy);
  const off = Math.max(18, Math.min(90, dist * bend));
  const c = { x: (a.x + b.x) / 2 + (dy / dist) * off, y: (a.y + b.y) / 2 - (dx / dist) * off };
  /** @param {Point} p @param {Point} toward @param {number} by */
  const trim = (p, toward, by) => {
    const l = Math.hypot(toward.x - p.x, toward.y - p.y) || 1;
    return { x: p.x + ((toward.x - p.x) / l) * by, y: p.y + ((toward.y - p.y) / l) * by };
  };
  const s = trim(a, c, RADIUS + 2);
  const e = trim(b, c, RADIUS + 5);
  const onCurve = { x: 0.25 * s.x + 0.5 * c.x + 0.25 * e.x, y: 0.25 * s.y + 0.5 * c.y + 0.25 * e.y };
  // The label sits just outside the bend, clear of the line.
  const mid = { x: onCurve.x + (dy / dist) * 10, y: onCurve.y - (dx / dist) * 10 };
  return { d: `M ${s.x.toFixed(1)} ${s.y.toFixed(1)} Q ${c.x.toFixed(1)} ${c.y.toFixed(1)} ${e.x.toFixed(1)} ${e.y.toFixed(1)}`, mid };
}

/** @param {number} ms */
function ago(ms) {
  const s = Math.max(0, Math.round((Date.now() - ms) / 1000));
  return s < 60 ? `${s}s ago` : s < 3600 ? `${Math.round(s / 60)}m ago` : `${Math.round(s / 3600)}h ago`;
}

export class ServiceMapView {
  /**
   * @param {HTMLElement} container
   * @param {(s: Selection) => void} onSelect
   */
  constructor(container, onSelect) {
    this.container = container;
    this.onSelect = onSelect;
    /** @type {MapSnapshot | undefined} */
    this.snapshot = undefined;
    /** @type {string | undefined} */
    this.selected = undefined;
    /** @type {number | undefined} */
    this.lastWidth = undefined;
    new ResizeObserver(() => {
      const w = this.container.clientWidth;
      if (this.snapshot && Math.abs(w - (this.lastWidth ?? 0)) > 40) this.render(this.snapshot);
    }).observe(container);
  }

  /** @param {MapSnapshot} snap */
  render(snap) {
    this.snapshot = snap;
    const width = Math.max(480, this.container.clientWidth || 960);
    this.lastWidth = width;
    if (snap.nodes.length === 0) {
      this.container.replaceChildren(Object.assign(document.createElement('p'), { className: 'empty', textContent: 'No endpoints yet: create one with `waggle endpoint create`.' }));
      return;
    }
    const { pos, boxes, width: w, height: h } = layout(snap.nodes, width);
    const svg = el('svg', { viewBox: `0 0 ${w} ${h}`, width: w, height: h, role: 'img', 'aria-label': `service map: ${snap.nodes.length} nodes, ${snap.edges.length} edges` });
    const defs = el('defs');
    for (const v of ['forwarded', 'dropped']) {
      const m = el('marker', { id: `arrow-${v}`, viewBox: '0 0 10 10', refX: 8, refY: 5, markerWidth: 7, markerHeight: 7, orient: 'auto-start-reverse' });
      m.append(el('path', { d: 'M 0 0 L 10 5 L 0 10 z', class: `arrow-${v}` }));
      defs.append(m);
    }
    svg.append(defs);

    // Boxes, then their titles (with a halo), under the edges and their counts.
    const boxLayer = el('g', { class: 'boxes' });
    const titleLayer = el('g', { class: 'titles' });
    for (const b of boxes) {
      const g = el('g', { class: 'ns', 'data-namespace': b.ns });
      g.append(el('rect', { x: b.x, y: b.y, width: b.w, height: b.h, rx: 8, class: b.ns ? 'ns-box' : 'ns-box outside' }));
      boxLayer.append(g);
      titleLayer.append(el('text', { x: b.x + PAD, y: b.y + 18, class: 'ns-title', 'data-namespace': b.ns }, b.ns ? `namespace ${b.ns}` : OUTSIDE_TITLE));
      for (const a of b.apps) {
        if (a.app) titleLayer.append(el('text', { x: a.x + SLOT_W / 2, y: a.y + 11, class: 'app-title', 'data-namespace': b.ns }, `app=${a.app}`));
      }
    }
    svg.append(boxLayer);

    /** @type {Map<string, MapNode>} */
    const byId = new Map(snap.nodes.map((n) => [n.id, n]));
    const edgeLayer = el('g', { class: 'edges' });
    for (const e of snap.edges) {
      const from = byId.get(e.from);
      const to = byId.get(e.to);
      const a = pos.get(e.from);
      const b = pos.get(e.to);
      if (!from || !to || !a || !b) continue;
      const verdict = e.dropped && e.forwarded ? 'mixed' : e.dropped ? 'dropped' : 'forwarded';
      const g = el('g', {
        class: `edge${this.selected === `edge:${e.id}` ? ' selected' : ''}`, 'data-edge': `${nodeRef(from)}->${nodeRef(to)}`,
        'data-from': nodeRef(from), 'data-to': nodeRef(to), 'data-verdict': verdict, 'data-forwarded': e.forwarded, 'data-dropped': e.dropped,
      });
      const main = curve(a, b, 0.18);
      if (e.forwarded) g.append(el('path', { d: main.d, class: 'forwarded', 'data-verdict': 'forwarded', 'marker-end': 'url(#arrow-forwarded)' }));
      if (e.dropped) {
        const c = e.forwarded ? curve(a, b, 0.32) : main;
        g.append(el('path', { d: c.d, class: 'dropped', 'data-verdict': 'dropped', 'marker-end': 'url(#arrow-dropped)' }));
      }
      g.append(el('path', { d: main.d, class: 'hit' }));
      const label = el('text', { x: main.mid.x.toFixed(1), y: (main.mid.y + 4).toFixed(1), class: 'label' });
      if (e.forwarded) label.append(el('tspan', { class: 'n-forwarded' }, `✓${e.forwarded}`));
      if (e.forwarded && e.dropped) label.append(el('tspan', {}, ' '));
      if (e.dropped) label.append(el('tspan', { class: 'n-dropped' }, `✗${e.dropped}`));
      g.append(label);
      const reasons = Object.entries(e.dropReasons).map(([r, n]) => `${r} ×${n}`).join(', ');
      const ports = e.ports.map((p) => (p.port ? `${p.protocol}/${p.port}` : p.protocol) + ` ×${p.flows}`).join(', ');
      g.append(el('title', {}, `${nodeRef(from)} → ${nodeRef(to)}\nforwarded ${e.forwarded}, dropped ${e.dropped}${reasons ? ` (${reasons})` : ''}\n${ports ? `ports: ${ports}\n` : ''}last seen ${ago(e.lastSeen)}`));
      g.addEventListener('click', () => { this.selected = `edge:${e.id}`; this.onSelect({ kind: 'edge', edge: e, from, to }); this.render(snap); });
      edgeLayer.append(g);
    }

    const nodeLayer = el('g', { class: 'nodes' });
    for (const n of snap.nodes) {
      const p = pos.get(n.id);
      if (!p) continue;
      const gone = n.kind === 'endpoint' && n.live === false;
      /** @type {Record<string, string | number>} */
      const attrs = {
        class: `node kind-${n.kind}${gone ? ' gone' : ''}${this.selected === `node:${n.id}` ? ' selected' : ''}`,
        transform: `translate(${p.x} ${p.y})`, 'data-node': n.id, 'data-kind': n.kind, 'data-identity': n.identity, tabindex: 0,
      };
      if (n.kind === 'endpoint') attrs['data-endpoint'] = nodeRef(n);
      const g = el('g', attrs);
      g.append(el('circle', { r: RADIUS }));
      const glyph = n.kind === 'reserved' ? RESERVED_GLYPHS[n.name] ?? n.name.slice(0, 1).toUpperCase() : GLYPHS[n.kind] ?? '';
      if (glyph) g.append(el('text', { class: 'glyph', y: 0 }, glyph));
      const name = n.name.length > 20 ? `${n.name.slice(0, 19)}…` : n.name;
      g.append(el('text', { y: RADIUS + 15 }, name));
      const what = n.kind === 'endpoint' ? `endpoint ${n.endpointId}${gone ? ' (deleted)' : ''}` : n.kind;
      g.append(el('title', {}, `${nodeRef(n)} — ${what}, identity ${n.identity}\n${n.labels.join('\n')}`));
      const select = () => { this.selected = `node:${n.id}`; this.onSelect({ kind: 'node', node: n }); this.render(snap); };
      g.addEventListener('click', select);
      g.addEventListener('keydown', (ev) => { if (/** @type {KeyboardEvent} */ (ev).key === 'Enter') select(); });
      nodeLayer.append(g);
    }
    svg.append(titleLayer, edgeLayer, nodeLayer);
    this.container.replaceChildren(svg);
  }
}
