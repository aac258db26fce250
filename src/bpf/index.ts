/**
 * Waggle's eBPF library: load, configure, attach and talk to eBPF programs
 * from TypeScript. It knows nothing about Waggle; see README.md ("Architecture").
 */
export * from './errors.js';
export * from './codec.js';
export * from './types.js';
export { BpfMap, PerCpuMap, createMapFd, mapInfo, sumValues, type MapInfo, type MapShape, type UpdateMode } from './map.js';
export {
  Collection, readObjectSpec, formatObjectSpec, mapDifferences, encodeConstant,
  type ObjectSpec, type MapSpec, type ProgramSpec, type ConstantSpec, type ConstantValue, type LoadOptions,
} from './object.js';
export { Program, programInfo, TEST_RUN_ON_CPU, TEST_XDP_LIVE_FRAMES, type ProgramInfo, type TestRunOptions, type TestRunResult } from './program.js';
export { Btf, BtfKind, type BtfMember, type BtfType, type DatasecVar, type StructLayout } from './btf.js';
export { ensureBpffs, isBpffs, unmountBpffs } from './bpffs.js';
export * from './ringbuf.js';
export * from './link/index.js';
