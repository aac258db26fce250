import { test } from 'node:test';
import assert from 'node:assert/strict';
import { FlowStore } from './store.js';
import type { HubbleRecord } from './hubble.js';

const rec = (n: number): HubbleRecord => ({ lost_events: { source: 'test', num_events_lost: n }, node_name: 'n', time: 't' });

test('keeps the last N records in order and feeds subscribers', () => {
  const s = new FlowStore(3);
  const live: number[] = [];
  const stop = s.subscribe((r) => { if ('lost_events' in r) live.push(r.lost_events.num_events_lost); });
  for (let i = 1; i <= 5; i++) s.add(rec(i));
  const nums = (rs: HubbleRecord[]): number[] => rs.map((r) => ('lost_events' in r ? r.lost_events.num_events_lost : -1));
  assert.deepEqual(nums(s.last()), [3, 4, 5]);
  assert.deepEqual(nums(s.last(2)), [4, 5]);
  assert.deepEqual(nums(s.last(10)), [3, 4, 5]);
  assert.equal(s.seen, 5);
  stop();
  s.add(rec(6));
  assert.deepEqual(live, [1, 2, 3, 4, 5]);
  assert.throws(() => new FlowStore(0), /positive integer/);
});
