/**
 * Every TypeScript codec of a struct in bpf/include/, with an object whose BTF
 * describes that struct. The BTF test checks each against the compiled C.
 */
import type { StructCodec } from '../../bpf/codec.js';
import { counterValue } from './counter.js';
import { testEvent } from './test-event.js';

export interface SharedStruct {
  /** The header in bpf/include/ that defines the struct. */
  header: string;
  /** A compiled object (dist/bpf/NAME.bpf.o) whose BTF has the struct. */
  object: string;
  codec: StructCodec<object>;
}

export const sharedStructs: readonly SharedStruct[] = [
  { header: 'counter.h', object: 'counter_tc', codec: counterValue as StructCodec<object> },
  { header: 'test_event.h', object: 'events_test', codec: testEvent as StructCodec<object> },
];

export * from './counter.js';
export * from './test-event.js';
