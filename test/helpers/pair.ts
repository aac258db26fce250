/**
 * Two private namespaces A and B joined by a veth, with IPv4 and IPv6
 * addresses in 10.199.N.0/24 and fd99:N::/64, plus a counter program loaded
 * for counting what reaches B. Everything is registered with `cleanup`.
 */
import { Collection, type LoadOptions } from '../../src/bpf/object.js';
import type { PerCpuMap } from '../../src/bpf/map.js';
import { u32 } from '../../src/bpf/codec.js';
import { bpfObjectPath } from '../../src/datapath/objects.js';
import { counterValue, type CounterValue } from '../../src/datapath/codecs/counter.js';
import { createNetns, createVethPair, ifindexIn, type Cleanup, type Netns } from './netns.js';

export interface PairTopology {
  a: Netns;
  b: Netns;
  /** ifindex of B's veth end, inside namespace B. */
  ifindexB: number;
  ifnameB: string;
  b4: string;
  b6: string;
}

/** Creates the pair for subnet `n` (1..254; unique per test file). */
export function pairTopology(cleanup: Cleanup, tag: string, n: number): PairTopology {
  const a = createNetns(`wlk-${tag}-a`);
  cleanup.add(() => a.remove(), `netns ${a.name}`);
  const b = createNetns(`wlk-${tag}-b`);
  cleanup.add(() => b.remove(), `netns ${b.name}`);
  const pair = createVethPair({
    a: { netns: a, name: `wlk${n}a`, addrs: [`10.199.${n}.1/24`, `fd99:${n}::1/64`] },
    b: { netns: b, name: `wlk${n}b`, addrs: [`10.199.${n}.2/24`, `fd99:${n}::2/64`] },
  });
  cleanup.add(() => pair.remove(), `veth wlk${n}`);
  return { a, b, ifindexB: ifindexIn(b, `wlk${n}b`), ifnameB: `wlk${n}b`, b4: `10.199.${n}.2`, b6: `fd99:${n}::2` };
}

/** Loads counter_xdp or counter_tc and opens its per-CPU `counters` map. */
export function loadCounter(cleanup: Cleanup, object: 'counter_xdp' | 'counter_tc', options: LoadOptions = {}): { coll: Collection; counters: PerCpuMap<number, CounterValue> } {
  const coll = Collection.load(bpfObjectPath(object), options);
  cleanup.add(() => coll.close(), `${object} collection`);
  const counters = coll.perCpuMap('counters', u32, counterValue);
  cleanup.add(() => counters.close(), 'counters map');
  return { coll, counters };
}
