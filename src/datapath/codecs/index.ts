/**
 * Every TypeScript codec of a struct in bpf/include/, with an object whose BTF
 * describes that struct. The BTF test checks each against the compiled C.
 */
import type { StructCodec } from '../../bpf/codec.js';
import { counterValue } from './counter.js';
import { testEvent } from './test-event.js';
import { endpointInfo, endpointKey } from './endpoint.js';
import { flowEvent } from './flow-event.js';
import { metricsValue } from './metrics.js';
import { ipcacheKey, ipcacheValue } from './ipcache.js';
import { policyKeyRaw, policyState, policyValue } from './policy.js';
import { ctEntry, ctKey } from './conntrack.js';
import { lxcConfig } from './lxc-config.js';
import { lbNatEntry, lbNatKey } from './lb-nat.js';
import { lbAffinity, lbAffinityKey, lbBackend, lbService, lbServiceKey } from './lb.js';

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
  { header: 'metrics.h', object: 'lxc', codec: metricsValue as StructCodec<object> },
  { header: 'lxc_config.h', object: 'lxc', codec: lxcConfig as StructCodec<object> },
  { header: 'ipcache.h', object: 'lxc', codec: ipcacheKey as StructCodec<object> },
  { header: 'ipcache.h', object: 'lxc', codec: ipcacheValue as StructCodec<object> },
  { header: 'policy.h', object: 'lxc', codec: policyKeyRaw as StructCodec<object> },
  { header: 'policy.h', object: 'lxc', codec: policyValue as StructCodec<object> },
  { header: 'policy.h', object: 'lxc', codec: policyState as StructCodec<object> },
  { header: 'conntrack.h', object: 'lxc', codec: ctKey as StructCodec<object> },
  { header: 'conntrack.h', object: 'lxc', codec: ctEntry as StructCodec<object> },
  { header: 'lb_nat.h', object: 'lxc', codec: lbNatKey as StructCodec<object> },
  { header: 'lb_nat.h', object: 'lxc', codec: lbNatEntry as StructCodec<object> },
  { header: 'lb.h', object: 'lb_test', codec: lbServiceKey as StructCodec<object> },
  { header: 'lb.h', object: 'lb_test', codec: lbService as StructCodec<object> },
  { header: 'lb.h', object: 'lb_test', codec: lbBackend as StructCodec<object> },
  { header: 'lb.h', object: 'lb_test', codec: lbAffinityKey as StructCodec<object> },
  { header: 'lb.h', object: 'lb_test', codec: lbAffinity as StructCodec<object> },
];

export * from './counter.js';
export * from './test-event.js';
export * from './endpoint.js';
export * from './flow-event.js';
export * from './metrics.js';
export * from './lxc-config.js';
export * from './ipcache.js';
export * from './policy.js';
export * from './conntrack.js';
export * from './lb-nat.js';
export * from './lb.js';
