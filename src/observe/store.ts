/**
 * The agent's flow store: the last N records in a ring, plus live
 * subscribers for `waggle observe --follow`. Slow subscribers are dropped
 * rather than letting memory grow.
 */
import type { HubbleRecord } from './hubble.js';

export type FlowSubscriber = (record: HubbleRecord) => void;

export class FlowStore {
  readonly capacity: number;
  private readonly ring: (HubbleRecord | undefined)[];
  private next = 0;
  private size = 0;
  private total = 0;
  private readonly subscribers = new Set<FlowSubscriber>();

  constructor(capacity: number) {
    if (!Number.isInteger(capacity) || capacity < 1) throw new Error(`flow buffer must be a positive integer, got ${capacity}`);
    this.capacity = capacity;
    this.ring = new Array<HubbleRecord | undefined>(capacity);
  }

  /** Flows seen since the agent started. */
  get seen(): number {
    return this.total;
  }

  add(record: HubbleRecord): void {
    this.ring[this.next] = record;
    this.next = (this.next + 1) % this.capacity;
    if (this.size < this.capacity) this.size++;
    this.total++;
    for (const s of this.subscribers) s(record);
  }

  /** The last `n` records, oldest first (all kept when n is undefined). */
  last(n?: number): HubbleRecord[] {
    const count = Math.min(n ?? this.size, this.size);
    const out: HubbleRecord[] = [];
    for (let i = this.size - count; i < this.size; i++) {
      const idx = (this.next - this.size + i + this.capacity) % this.capacity;
      out.push(this.ring[idx] as HubbleRecord);
    }
    return out;
  }

  /** Calls `fn` for every new record until the returned function is called. */
  subscribe(fn: FlowSubscriber): () => void {
    this.subscribers.add(fn);
    return () => { this.subscribers.delete(fn); };
  }
}
