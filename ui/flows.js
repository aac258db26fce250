// @ts-check
/* global document, location, history, fetch, setTimeout, clearTimeout, AbortController, URLSearchParams, TextDecoderStream */
/**
 * The live flow table: `GET /api/flows?QUERY` read as server-sent events
 * (fetch + a stream reader, so a bad filter's 400 message can be shown), the
 * newest flow on top, at most {@link MAX_ROWS} rows. The filter form has the
 * fields of `waggle observe` and builds the same query string the agent API
 * takes (`filter={"include":[…]}` or, with "not", `{"exclude":[…]}`).
 */

/** @typedef {import('../src/observe/hubble.js').HubbleRecord} HubbleRecord */
/** @typedef {import('../src/observe/hubble.js').HubbleFlow} HubbleFlow */
/** @typedef {import('../src/observe/hubble.js').HubbleEndpoint} HubbleEndpoint */
/** @typedef {import('../src/observe/filter.js').FlowFilter} FlowFilter */
/** @typedef {{ include?: FlowFilter[], exclude?: FlowFilter[] }} FilterList */

export const MAX_ROWS = 500;
const RETRY_MS = 2000;

/**
 * Form fields and the filter fields they fill. Lists are comma separated,
 * except the label selector (its commas mean AND).
 * @type {[string, keyof FlowFilter, 'list' | 'one' | 'numbers'][]}
 */
const FIELDS = [
  ['endpoint', 'endpoint', 'list'],
  ['from', 'sourceEndpoint', 'list'],
  ['to', 'destinationEndpoint', 'list'],
  ['namespace', 'namespace', 'list'],
  ['label', 'label', 'one'],
  ['ip', 'ip', 'list'],
  ['port', 'port', 'numbers'],
  ['identity', 'identity', 'numbers'],
  ['protocol', 'protocol', 'one'],
  ['verdict', 'verdict', 'one'],
  ['type', 'type', 'one'],
];

/**
 * @param {HTMLFormElement} form
 * @param {string} name
 * @returns {HTMLInputElement}
 */
function field(form, name) {
  return /** @type {HTMLInputElement} */ (form.elements.namedItem(name));
}

/**
 * Reads the form into a filter list; throws an Error with a message for the user.
 * @param {HTMLFormElement} form
 * @returns {FilterList}
 */
export function filterFromForm(form) {
  /** @type {Record<string, unknown>} */
  const f = {};
  for (const [name, key, kind] of FIELDS) {
    const raw = field(form, name).value.trim();
    if (!raw) continue;
    if (kind === 'one') { f[key] = [raw]; continue; }
    const items = raw.split(',').map((s) => s.trim()).filter(Boolean);
    if (kind === 'numbers') {
      const bad = items.find((s) => !/^\d+$/.test(s));
      if (bad !== undefined) throw new Error(`${name}: ${JSON.stringify(bad)} is not a number`);
      f[key] = items.map(Number);
    } else {
      f[key] = items;
    }
  }
  if (Object.keys(f).length === 0) return {};
  return field(form, 'not').checked ? { exclude: [/** @type {FlowFilter} */ (f)] } : { include: [/** @type {FlowFilter} */ (f)] };
}

/**
 * Fills the form from a filter list (the first filter; what the form can show).
 * @param {HTMLFormElement} form
 * @param {FilterList} list
 */
export function fillForm(form, list) {
  form.reset();
  const not = !list.include?.length && !!list.exclude?.length;
  const f = (not ? list.exclude?.[0] : list.include?.[0]) ?? {};
  for (const [name, key] of FIELDS) {
    const v = f[key];
    if (Array.isArray(v)) field(form, name).value = v.join(', ');
  }
  field(form, 'not').checked = not;
}

/** @param {FilterList} list */
function filterParam(list) {
  return list.include?.length || list.exclude?.length ? JSON.stringify({ include: list.include ?? [], exclude: list.exclude ?? [] }) : '';
}

/** ARP, neighbour discovery and MLD (as the agent's isControlFlow). @param {HubbleFlow} f */
function isControl(f) {
  if (f.Summary === 'ARP') return true;
  const t = f.l4?.ICMPv6?.type;
  return typeof t === 'number' && t >= 130 && t <= 143;
}

/**
 * @param {string} tag
 * @param {string} [cls]
 * @param {string} [text]
 */
function h(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

/**
 * One end of a flow: `ns/name` with its address, or the address with the identity's name.
 * @param {HubbleEndpoint | undefined} ep @param {string | undefined} ip @param {number | undefined} port
 */
function peer(ep, ip, port) {
  const td = h('td', 'peer');
  const addr = ip ? `${ip.includes(':') ? `[${ip}]` : ip}${port ? `:${port}` : ''}` : '';
  if (ep?.pod_name) {
    td.append(h('span', 'peer-ns', `${ep.namespace}/`), document.createTextNode(ep.pod_name));
    if (addr) td.append(h('span', 'muted', ` ${addr}`));
  } else {
    const named = ep?.labels?.find((l) => l.startsWith('reserved:'))?.slice('reserved:'.length);
    td.append(document.createTextNode(addr || '(no IP)'));
    if (named) td.append(h('span', 'muted', ` (${named})`));
  }
  td.title = [ep?.identity !== undefined ? `identity ${ep.identity}` : '', ...(ep?.labels ?? [])].filter(Boolean).join('\n');
  return td;
}

const TYPE_NAMES = /** @type {Record<number, string>} */ ({ 1: 'drop', 4: 'trace', 5: 'policy-verdict', 129: 'l7' });

/** @param {HubbleFlow} f */
function typeText(f) {
  const t = TYPE_NAMES[f.event_type.type] ?? `type ${f.event_type.type}`;
  if (f.trace_observation_point) return `${t} ${f.trace_observation_point.toLowerCase().replace(/_/g, '-')}`;
  if (f.event_type.type === 5 && f.traffic_direction) return `${t} ${f.traffic_direction.toLowerCase()}`;
  return t;
}

/** @param {HubbleFlow} f */
function l4Text(f) {
  if (!f.l4) return '';
  const [proto, body] = Object.entries(f.l4)[0] ?? ['', {}];
  if (typeof body.source_port === 'number') return `${proto} ${body.source_port} → ${body.destination_port}`;
  return proto;
}

/** @param {string} iso */
function timeText(iso) {
  const d = new Date(iso.slice(0, 23) + 'Z');
  if (Number.isNaN(d.getTime())) return iso;
  const p = (/** @type {number} */ n, w = 2) => String(n).padStart(w, '0');
  return `${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}.${p(d.getMilliseconds(), 3)}`;
}

/** @param {HubbleFlow} f */
function summaryText(f) {
  const parts = [f.Summary];
  const by = [...(f.ingress_denied_by ?? []), ...(f.egress_denied_by ?? [])][0];
  const allowed = [...(f.ingress_allowed_by ?? []), ...(f.egress_allowed_by ?? [])][0];
  if (by) parts.push(`denied by ${by.namespace ? `${by.namespace}/` : ''}${by.name}`);
  else if (allowed) parts.push(`allowed by ${allowed.namespace ? `${allowed.namespace}/` : ''}${allowed.name}`);
  if (f.is_reply) parts.push('reply');
  return parts.join(' · ');
}

/** @param {HubbleRecord} r */
function row(r) {
  const tr = h('tr');
  if ('lost_events' in r) {
    tr.className = 'lost';
    tr.dataset.verdict = 'LOST';
    const td = /** @type {HTMLTableCellElement} */ (h('td', '', `${r.lost_events.num_events_lost} events lost (${r.lost_events.source})`));
    td.colSpan = 6;
    tr.append(h('td', 'time', timeText(r.time)), td);
    return tr;
  }
  const f = r.flow;
  const l4 = f.l4 ? Object.values(f.l4)[0] : undefined;
  const sport = typeof l4?.source_port === 'number' ? l4.source_port : undefined;
  const dport = typeof l4?.destination_port === 'number' ? l4.destination_port : undefined;
  tr.dataset.verdict = f.verdict;
  tr.dataset.type = String(f.event_type.type);
  tr.dataset.uuid = f.uuid;
  if (f.source?.pod_name) tr.dataset.source = `${f.source.namespace}/${f.source.pod_name}`;
  if (f.destination?.pod_name) tr.dataset.destination = `${f.destination.namespace}/${f.destination.pod_name}`;
  const time = h('td', 'time', timeText(f.time));
  time.title = f.time;
  tr.append(
    time,
    peer(f.source, f.IP?.source, sport),
    peer(f.destination, f.IP?.destination, dport),
    h('td', 'l4', l4Text(f)),
    h('td', 'verdict', f.verdict === 'DROPPED' ? `DROPPED (${f.drop_reason_desc ?? f.drop_reason})` : f.verdict),
    h('td', 'type', typeText(f)),
    h('td', 'summary', summaryText(f)),
  );
  const rule = [...(f.ingress_denied_by ?? []), ...(f.egress_denied_by ?? []), ...(f.ingress_allowed_by ?? []), ...(f.egress_allowed_by ?? [])][0];
  if (rule) /** @type {HTMLElement} */ (tr.lastElementChild).title = `${rule.kind} ${rule.namespace ? `${rule.namespace}/` : ''}${rule.name}`;
  return tr;
}

export class FlowTable {
  /**
   * @param {{ form: HTMLFormElement, tbody: HTMLTableSectionElement, status: HTMLElement, error: HTMLElement,
   *           pause: HTMLButtonElement, clear: HTMLButtonElement, caption: HTMLElement }} parts
   */
  constructor(parts) {
    this.parts = parts;
    /** @type {FilterList} */
    this.filter = {};
    /** @type {AbortController | undefined} */
    this.abort = undefined;
    /** @type {ReturnType<typeof setTimeout> | undefined} */
    this.retryTimer = undefined;
    /** Time of the newest flow shown (a reconnect asks for flows since then). @type {string | undefined} */
    this.newest = undefined;
    /** @type {Set<string>} */
    this.uuids = new Set();
    this.paused = false;
    /** @type {HubbleRecord[]} */
    this.held = [];
    this.generation = 0;

    parts.form.addEventListener('submit', (ev) => { ev.preventDefault(); this.apply(); });
    // The Reset button (not form.reset(), which fillForm and setFilter use too): clear, then apply.
    parts.form.querySelector('button[type="reset"]')?.addEventListener('click', () => { setTimeout(() => this.apply(), 0); });
    field(parts.form, 'control').addEventListener('change', () => this.apply());
    parts.pause.addEventListener('click', () => this.setPaused(!this.paused));
    parts.clear.addEventListener('click', () => { this.parts.tbody.replaceChildren(); this.uuids.clear(); this.held = []; this.updateCaption(); });
  }

  /** Starts with the filter in the page's address (`?filter=…`), if any. */
  start() {
    const text = new URLSearchParams(location.search).get('filter');
    if (text) {
      try { fillForm(this.parts.form, /** @type {FilterList} */ (JSON.parse(text))); } catch { /* a hand-edited address: start unfiltered */ }
    }
    this.apply();
  }

  /**
   * Replaces the filter with these form values and applies it.
   * @param {Record<string, string>} values
   */
  setFilter(values) {
    this.parts.form.reset();
    for (const [k, v] of Object.entries(values)) field(this.parts.form, k).value = v;
    this.apply();
  }

  apply() {
    try {
      this.filter = filterFromForm(this.parts.form);
    } catch (err) {
      this.showError(/** @type {Error} */ (err).message);
      return;
    }
    const param = filterParam(this.filter);
    history.replaceState(null, '', param ? `?${new URLSearchParams({ filter: param })}` : location.pathname);
    this.parts.tbody.replaceChildren();
    this.uuids.clear();
    this.held = [];
    this.newest = undefined;
    this.updateCaption();
    this.connect();
  }

  /** @param {string} message */
  showError(message) {
    this.parts.error.textContent = message;
    this.parts.error.hidden = false;
    this.setStatus('error', 'flows: bad filter');
  }

  /** @param {string} state @param {string} text */
  setStatus(state, text) {
    this.parts.status.dataset.state = state;
    this.parts.status.textContent = text;
  }

  /** @param {boolean} paused */
  setPaused(paused) {
    this.paused = paused;
    this.parts.pause.setAttribute('aria-pressed', String(paused));
    this.parts.pause.textContent = paused ? 'Resume' : 'Pause';
    if (!paused) {
      for (const r of this.held.splice(0)) this.show(r);
    }
    this.updateCaption();
  }

  updateCaption() {
    const n = this.parts.tbody.rows.length;
    this.parts.caption.textContent = `Newest first; ${n} shown (at most ${MAX_ROWS})${this.paused ? `, paused: ${this.held.length} waiting` : ''}.`;
  }

  async connect() {
    clearTimeout(this.retryTimer);
    this.abort?.abort();
    const ctrl = new AbortController();
    this.abort = ctrl;
    const gen = ++this.generation;
    const params = new URLSearchParams();
    const param = filterParam(this.filter);
    if (param) params.set('filter', param);
    params.set('follow', 'true');
    params.set('last', String(MAX_ROWS));
    if (this.newest) params.set('since', this.newest);
    this.setStatus('connecting', 'flows: connecting');
    /** @type {Response} */
    let res;
    try {
      res = await fetch(`/api/flows?${params}`, { signal: ctrl.signal, headers: { accept: 'text/event-stream' }, cache: 'no-store' });
    } catch {
      if (gen === this.generation) this.retry();
      return;
    }
    if (gen !== this.generation) return;
    if (!res.ok || !res.body) {
      const message = (await res.text().catch(() => '')).trim() || `HTTP ${res.status}`;
      if (res.status === 400) this.showError(message);
      else this.retry();
      return;
    }
    this.parts.error.hidden = true;
    this.setStatus('live', 'flows: live');
    const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
    let buf = '';
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += value;
        let i;
        while ((i = buf.indexOf('\n\n')) >= 0) {
          const chunk = buf.slice(0, i);
          buf = buf.slice(i + 2);
          for (const line of chunk.split('\n')) if (line.startsWith('data: ')) this.receive(/** @type {HubbleRecord} */ (JSON.parse(line.slice(6))));
        }
      }
    } catch {
      // aborted, or the connection broke: see below
    }
    if (gen === this.generation) this.retry();
  }

  retry() {
    this.setStatus('reconnecting', 'flows: reconnecting');
    clearTimeout(this.retryTimer);
    this.retryTimer = setTimeout(() => { void this.connect(); }, RETRY_MS);
  }

  /** @param {HubbleRecord} r */
  receive(r) {
    if ('flow' in r) {
      if (this.uuids.has(r.flow.uuid)) return;
      if (!field(this.parts.form, 'control').checked && isControl(r.flow)) return;
      this.newest = r.time;
    }
    if (this.paused) {
      this.held.push(r);
      if (this.held.length > MAX_ROWS) this.held.shift();
      this.updateCaption();
      return;
    }
    this.show(r);
  }

  /** @param {HubbleRecord} r */
  show(r) {
    const body = this.parts.tbody;
    if ('flow' in r) this.uuids.add(r.flow.uuid);
    body.prepend(row(r));
    while (body.rows.length > MAX_ROWS) {
      const last = /** @type {HTMLTableRowElement} */ (body.lastElementChild);
      if (last.dataset.uuid) this.uuids.delete(last.dataset.uuid);
      last.remove();
    }
    this.updateCaption();
  }
}
