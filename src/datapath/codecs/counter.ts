/** Codec of `struct counter_value` (bpf/include/counter.h). */
import { struct, u64n, type StructCodec } from '../../bpf/codec.js';

/** Packets and bytes counted for one IP protocol on one CPU. */
export interface CounterValue {
  packets: number;
  bytes: number;
}

export const counterValue: StructCodec<CounterValue> = struct<CounterValue>('counter_value', 16, {
  packets: { offset: 0, codec: u64n },
  bytes: { offset: 8, codec: u64n },
});

/** Key of frames that are not IPv4/IPv6 (`COUNTER_KEY_NON_IP`). */
export const COUNTER_KEY_NON_IP = 256;
/** Entries of the `counters` map (`COUNTER_ENTRIES`). */
export const COUNTER_ENTRIES = 257;
