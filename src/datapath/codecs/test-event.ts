/** Codec of `struct test_event` (bpf/include/test_event.h), the ring buffer test record. */
import { bytes, struct, u16, u32, u64n, u8, type StructCodec } from '../../bpf/codec.js';

/** One record of the ring buffer producer used by tests and benchmarks. */
export interface TestEvent {
  seq: number;
  timestamp: number;
  cpu: number;
  pktLen: number;
  ifindex: number;
  /** skb->protocol as the kernel stores it (network byte order read as little-endian). */
  protocol: number;
  tag: number;
  payload: Uint8Array;
}

export const TEST_EVENT_SIZE = 64;

export const testEvent: StructCodec<TestEvent> = struct<TestEvent>('test_event', TEST_EVENT_SIZE, {
  seq: { offset: 0, codec: u64n },
  timestamp: { offset: 8, codec: u64n },
  cpu: { offset: 16, codec: u32 },
  pktLen: { offset: 20, codec: u32 },
  ifindex: { offset: 24, codec: u32 },
  protocol: { offset: 28, codec: u16 },
  tag: { offset: 30, codec: u8 },
  payload: { offset: 32, codec: bytes(32) },
});
