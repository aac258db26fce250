/**
 * Every TypeScript codec of a struct in bpf/include/, with an object whose BTF
 * describes that struct. The BTF test checks each against the compiled C.
 */
import type { StructCodec } from '../../bpf/codec.js';
import { counterValue } from './counter.js';
import { testEvent } from './test-event.js';
import { endpointInfo, endpointKey } from './endpoint.js';
import { flowEvent } from './flow-event.js';
import { metricsKey, metricsValue } from './metrics.js';
import { lxcConfig } from './lxc-config.js';

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
  { header: 'endpoint.h', object: 'lxc', codec: endpointKey as StructCodec<object> },
  { header: 'endpoint.h', object: 'lxc', codec: endpointInfo as StructCodec<object> },
  { header: 'flow_event.h', object: 'lxc', codec: flowEvent as StructCodec<object> },
  { header: 'metrics.h', object: 'lxc', codec: metricsKey as StructCodec<object> },
  { header: 'metrics.h', object: 'lxc', codec: metricsValue as StructCodec<object> },
  { header: 'lxc_config.h', object: 'lxc', codec: lxcConfig as StructCodec<object> },
];

export * from './counter.js';
export * from './test-event.js';
export * from './endpoint.js';
export * from './flow-event.js';
export * from './metrics.js';
export * from './lxc-config.js';
