/**
 * Serves a flow query to one client over HTTP: the matching kept flows, then
 * (with follow) new ones as they arrive. Filtering happens here, in the agent.
 * Used by the API (NDJSON) and the web UI (server-sent events).
 *
 * A client that reads too slowly is not allowed to grow the agent's memory:
 * while its socket holds more than {@link MAX_BUFFERED} bytes, matching flows
 * are skipped and counted, and once it catches up it gets a LOST_EVENTS record
 * (source OBSERVER_EVENTS_QUEUE) saying how many it missed.
 */
import type { ServerResponse } from 'node:http';
import { compileMatcher, type FlowQuery } from './filter.js';
import type { HubbleRecord } from './hubble.js';
import type { FlowStore } from './store.js';

export const MAX_BUFFERED = 4 << 20;

export interface StreamOptions {
  format: 'ndjson' | 'sse';
  /** Told how many flows this client missed because it was slow. */
  onSkipped?: (count: number) => void;
  /** Headers written before the first record. */
  headers?: Record<string, string>;
}

function encode(format: StreamOptions['format'], r: HubbleRecord): string {
  const json = JSON.stringify(r);
  return format === 'sse' ? `data: ${json}\n\n` : `${json}\n`;
}

/**
 * Streams `q` from `store` to `res`; resolves when the stream ends (history
 * written without follow, the client went away, or `until` passed).
 */
export function serveFlows(store: FlowStore, q: FlowQuery, res: ServerResponse, opts: StreamOptions): Promise<void> {
  const match = compileMatcher(q.include, q.exclude);
  const cur = store.cursor();
  const wanted = (seq: number): boolean => {
    const t = store.timeOf(seq);
    if (q.sinceMs !== undefined && t < q.sinceMs) return false;
    if (q.untilMs !== undefined && t > q.untilMs) return false;
    return store.isLost(seq) || match(cur.at(seq));
  };
  res.writeHead(200, {
    'content-type': opts.format === 'sse' ? 'text/event-stream' : 'application/x-ndjson',
    'cache-control': 'no-cache',
    ...opts.headers,
  });
  if (opts.format === 'sse') res.write(': waggle flows\n\n');
  else res.flushHeaders();

  // History: the last `last` matching flows kept (all of them without `last`;
  // none with follow and no `last`, as `hubble observe --follow` does).
  const end = store.endSeq;
  const history: number[] = [];
  const limit = q.last ?? (q.follow ? 0 : Infinity);
  for (let seq = end - 1; seq >= store.firstSeq && history.length < limit; seq--) {
    if (wanted(seq)) history.push(seq);
  }
  history.reverse();

  return new Promise<void>((resolve) => {
    let closed = false;
    let skipped = 0;
    const pending: number[] = [];
    let pumping = true;
    let unsubscribe = (): void => {};
    const finish = (): void => {
      if (closed) return;
      closed = true;
      unsubscribe();
      if (!res.writableEnded) res.end();
      resolve();
    };
    res.on('close', finish);

    const flushLost = (): void => {
      if (!skipped || closed) return;
      res.write(encode(opts.format, { lost_events: { source: 'OBSERVER_EVENTS_QUEUE', num_events_lost: skipped }, node_name: store.nodeName, time: new Date().toISOString() }));
      skipped = 0;
    };
    const deliver = (seq: number): void => {
      if (res.writableLength > MAX_BUFFERED) {
        // Tell the client what it missed as soon as it has caught up.
        if (!skipped) res.once('drain', flushLost);
        skipped++;
        opts.onSkipped?.(1);
        return;
      }
      flushLost();
      res.write(encode(opts.format, store.record(seq)));
    };

    if (q.follow) {
      unsubscribe = store.subscribe((seq) => {
        if (closed) return;
        if (q.untilMs !== undefined && store.timeOf(seq) > q.untilMs) { finish(); return; }
        if (!wanted(seq)) return;
        if (pumping) pending.push(seq);
        else deliver(seq);
      });
    }

    // Written in slices that wait for the socket to drain, so a large store
    // never sits in memory twice.
    let i = 0;
    const pump = (): void => {
      while (!closed && i < history.length) {
        const seq = history[i++]!;
        if (!store.has(seq)) continue;
        if (!res.write(encode(opts.format, store.record(seq)))) {
          res.once('drain', pump);
          return;
        }
      }
      if (closed) return;
      if (!q.follow) { finish(); return; }
      pumping = false;
      for (const seq of pending.splice(0)) if (store.has(seq)) deliver(seq);
    };
    pump();
  });
}
