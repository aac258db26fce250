// @ts-check
/* global document, EventSource */
/**
 * The Waggle web UI: the service map (server-sent events from
 * /api/map/events) and the flow table (/api/flows). Served by the agent on its
 * HTTP listener; no dependencies, no build step.
 */
import { FlowTable } from './flows.js';
import { nodeRef, ServiceMapView } from './map.js';

/** @typedef {import('./map.js').Selection} Selection */
/** @typedef {import('../src/observe/service-map.js').MapSnapshot} MapSnapshot */

/**
 * @template {HTMLElement} T
 * @param {string} id
 * @returns {T}
 */
function byId(id) {
  const e = document.getElementById(id);
  if (!e) throw new Error(`the page has no #${id}`);
  return /** @type {T} */ (e);
}

const flows = new FlowTable({
  form: byId('filter'),
  tbody: /** @type {HTMLTableElement} */ (byId('flows')).tBodies[0] ?? /** @type {HTMLTableElement} */ (byId('flows')).createTBody(),
  status: byId('flow-status'),
  error: byId('filter-error'),
  pause: byId('flows-pause'),
  clear: byId('flows-clear'),
  caption: byId('flows-caption'),
});

/** Clicking the map filters the flows: a node's flows, or an edge's. @param {Selection} s */
function select(s) {
  if (s.kind === 'edge') {
    const end = (/** @type {import('./map.js').MapNode} */ n) => (n.kind === 'endpoint' ? { ref: nodeRef(n) } : { identity: String(n.identity) });
    const from = end(s.from);
    const to = end(s.to);
    // The filter model has no "source identity" field in the form: fall back to either-end fields.
    if (from.ref && to.ref) flows.setFilter({ from: from.ref, to: to.ref });
    else if (from.ref) flows.setFilter({ endpoint: from.ref, ...(to.identity ? { identity: to.identity } : {}) });
    else if (to.ref) flows.setFilter({ endpoint: to.ref, ...(from.identity ? { identity: from.identity } : {}) });
    else flows.setFilter({ identity: [from.identity, to.identity].join(', ') });
  } else if (s.node.kind === 'endpoint') {
    flows.setFilter({ endpoint: nodeRef(s.node) });
  } else {
    flows.setFilter({ identity: String(s.node.identity) });
  }
}

const view = new ServiceMapView(byId('map'), select);
const mapStatus = byId('map-status');
const summary = byId('map-summary');

/** @param {MapSnapshot} snap */
function show(snap) {
  byId('node-name').textContent = `node ${snap.nodeName}`;
  document.title = `Waggle — ${snap.nodeName}`;
  const endpoints = snap.nodes.filter((n) => n.kind === 'endpoint' && n.live !== false).length;
  const drops = snap.edges.reduce((a, e) => a + e.dropped, 0);
  summary.textContent = `${endpoints} endpoint${endpoints === 1 ? '' : 's'}, ${snap.edges.length} connection${snap.edges.length === 1 ? '' : 's'}, ${snap.flows} flows counted, ${drops} dropped`;
  view.render(snap);
}

const events = new EventSource('/api/map/events');
events.addEventListener('map', (ev) => {
  mapStatus.dataset.state = 'live';
  mapStatus.textContent = 'map: live';
  show(/** @type {MapSnapshot} */ (JSON.parse(/** @type {MessageEvent<string>} */ (ev).data)));
});
events.addEventListener('error', () => {
  mapStatus.dataset.state = 'reconnecting';
  mapStatus.textContent = 'map: reconnecting';
});

flows.start();
