/**
 * ELF objects: a plain {@link ObjectSpec} read from the file (no privileges,
 * nothing touches the kernel), and a {@link Collection} of live maps and
 * programs loaded from it with load-time constants, map sizes and pins.
 */
import { existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { cString, isNull, libbpfCalls, viewOf, type Pointer } from './sys.js';
import { BpfError, BpfSyscallError, BpfUsageError, IncompatibleMapError, VerifierError, type MapFieldDifference } from './errors.js';
import { captureLibbpfLog, libbpfLogMark, libbpfLogSince } from './libbpf-log.js';
import { closeFd, getPinned, pinFd } from './fd.js';
import { BpfMap, PerCpuMap, mapInfo, type MapShape } from './map.js';
import { Program } from './program.js';
import { Btf, type DatasecVar } from './btf.js';
import { AttachType, MapType, ProgramType, mapTypeName, programTypeName } from './types.js';
import type { Codec } from './codec.js';

/** A map as the object declares it. */
export interface MapSpec extends MapShape {
  /** libbpf-internal maps (`.rodata`, `.data`, `.bss`) hold global variables. */
  internal: boolean;
  /** For map-in-map: the inner map's shape. */
  innerMap?: MapShape;
}

/** A program as the object declares it. */
export interface ProgramSpec {
  name: string;
  section: string;
  type: ProgramType;
  expectedAttachType: AttachType | number;
  instructions: number;
}

/** A `const volatile` global set before load (lives in `.rodata`). */
export type ConstantSpec = DatasecVar;

/** Everything an object file declares: printable, deterministic, no kernel involved. */
export interface ObjectSpec {
  path: string;
  name: string;
  maps: MapSpec[];
  programs: ProgramSpec[];
  constants: ConstantSpec[];
}

/** A value for a load-time constant: an integer, a boolean, raw bytes or an array of integers. */
export type ConstantValue = number | bigint | boolean | Uint8Array | readonly number[];

/** How to load an object. */
export interface LoadOptions {
  /** Values for `const volatile` globals, by variable name. */
  constants?: Record<string, ConstantValue>;
  /** Overrides of map sizes, by map name. */
  maxEntries?: Record<string, number>;
  /**
   * Pin these maps (by name; `'all'` for every non-internal map) under `pinDir`.
   * An existing pin is reused when it matches the spec field by field and
   * rejected with {@link IncompatibleMapError} when it does not.
   */
  pinMaps?: readonly string[] | 'all';
  /** bpffs directory for pinned maps (required with `pinMaps`). */
  pinDir?: string;
  /** Load only these programs (default: all). */
  programs?: readonly string[];
  /** Verifier log buffer per program, bytes (default 1 MiB; the log is kept only on failure). */
  verifierLogSize?: number;
}

function withObject<T>(path: string, fn: (obj: Pointer) => T): T {
  captureLibbpfLog();
  if (!existsSync(path)) throw new BpfUsageError(`BPF object ${path} does not exist: run npm run build`);
  const mark = libbpfLogMark();
  const obj = libbpfCalls.objectOpenFile(path, null);
  if (isNull(obj)) {
    const log = libbpfLogSince(mark).join('\n');
    throw new BpfError('BPF_ERR_OPEN', `cannot open BPF object ${path}${log ? `:\n${log}` : ''}`);
  }
  try {
    return fn(obj);
  } finally {
    libbpfCalls.objectClose(obj);
  }
}

function* mapsOf(obj: Pointer): Generator<Pointer> {
  let m = libbpfCalls.objectNextMap(obj, null);
  while (!isNull(m)) {
    yield m;
    m = libbpfCalls.objectNextMap(obj, m);
  }
}

function* programsOf(obj: Pointer): Generator<Pointer> {
  let p = libbpfCalls.objectNextProgram(obj, null);
  while (!isNull(p)) {
    yield p;
    p = libbpfCalls.objectNextProgram(obj, p);
  }
}

function shapeOf(m: Pointer): MapShape {
  return {
    name: cString(libbpfCalls.mapName(m)),
    type: libbpfCalls.mapType(m) as MapType,
    keySize: libbpfCalls.mapKeySize(m) as number,
    valueSize: libbpfCalls.mapValueSize(m) as number,
    maxEntries: libbpfCalls.mapMaxEntries(m) as number,
    flags: libbpfCalls.mapFlags(m) as number,
  };
}

function mapSpecOf(m: Pointer): MapSpec {
  const spec: MapSpec = { ...shapeOf(m), internal: libbpfCalls.mapIsInternal(m) as boolean };
  const inner = libbpfCalls.mapInnerMap(m);
  if (!isNull(inner)) spec.innerMap = shapeOf(inner);
  return spec;
}

function programSpecOf(p: Pointer): ProgramSpec {
  return {
    name: cString(libbpfCalls.programName(p)),
    section: cString(libbpfCalls.programSectionName(p)),
    type: libbpfCalls.programType(p) as ProgramType,
    expectedAttachType: libbpfCalls.programExpectedAttachType(p) as number,
    instructions: Number(libbpfCalls.programInsnCount(p)),
  };
}

function constantsOf(obj: Pointer): ConstantSpec[] {
  const h = libbpfCalls.objectBtf(obj);
  if (isNull(h)) return [];
  return Btf.borrowed(h).datasec('.rodata');
}

/** Reads what an object file declares. Needs no privileges. */
export function readObjectSpec(path: string): ObjectSpec {
  return withObject(path, (obj) => ({
    path,
    name: cString(libbpfCalls.objectName(obj)),
    maps: [...mapsOf(obj)].map(mapSpecOf),
    programs: [...programsOf(obj)].map(programSpecOf),
    constants: constantsOf(obj),
  }));
}

/** Describes a spec as text, one line per map, program and constant. */
export function formatObjectSpec(spec: ObjectSpec): string {
  const lines = [`object ${spec.name} (${spec.path})`];
  for (const m of spec.maps) {
    lines.push(`  map ${m.name}: ${mapTypeName(m.type)} key ${m.keySize} B, value ${m.valueSize} B, ${m.maxEntries} entries, flags 0x${m.flags.toString(16)}${m.internal ? ' (internal)' : ''}`);
  }
  for (const p of spec.programs) {
    lines.push(`  program ${p.name}: ${programTypeName(p.type)} (section ${p.section}), ${p.instructions} instructions`);
  }
  for (const c of spec.constants) lines.push(`  constant ${c.name}: ${c.typeName} (${c.size} B at .rodata+${c.offset})`);
  return lines.join('\n');
}

/** Differences between a live map and the shape that wants to reuse it. */
export function mapDifferences(live: MapShape, wanted: MapShape): MapFieldDifference[] {
  const out: MapFieldDifference[] = [];
  if (live.type !== wanted.type) out.push({ field: 'type', pinned: mapTypeName(live.type), wanted: mapTypeName(wanted.type) });
  if (live.keySize !== wanted.keySize) out.push({ field: 'keySize', pinned: live.keySize, wanted: wanted.keySize });
  if (live.valueSize !== wanted.valueSize) out.push({ field: 'valueSize', pinned: live.valueSize, wanted: wanted.valueSize });
  if (live.maxEntries !== wanted.maxEntries) out.push({ field: 'maxEntries', pinned: live.maxEntries, wanted: wanted.maxEntries });
  if (live.flags !== wanted.flags) out.push({ field: 'flags', pinned: `0x${live.flags.toString(16)}`, wanted: `0x${wanted.flags.toString(16)}` });
  return out;
}

/** Encodes `value` into the bytes of a constant of `size` bytes. */
export function encodeConstant(name: string, size: number, value: ConstantValue): Uint8Array {
  const out = Buffer.alloc(size);
  const bad = (why: string): never => { throw new BpfUsageError(`constant ${name} (${size} bytes): ${why}`); };
  if (value instanceof Uint8Array) {
    if (value.length !== size) bad(`expected ${size} bytes, got ${value.length}`);
    out.set(value);
  } else if (Array.isArray(value)) {
    const list = value as readonly number[];
    if (list.length === 0 || size % list.length !== 0) bad(`an array of ${list.length} does not divide ${size} bytes`);
    const each = size / list.length;
    list.forEach((v, i) => out.set(encodeConstant(`${name}[${i}]`, each, v), i * each));
  } else if (typeof value === 'boolean') {
    out[0] = value ? 1 : 0;
  } else if (typeof value === 'bigint') {
    if (size !== 8) bad('a bigint needs an 8-byte constant');
    if (value < -(2n ** 63n) || value >= 2n ** 64n) bad('out of range');
    out.writeBigUInt64LE(BigInt.asUintN(64, value));
  } else if (typeof value === 'number') {
    if (!Number.isInteger(value)) bad(`not an integer: ${value}`);
    const bits = size * 8;
    if (size > 8 || ![1, 2, 4, 8].includes(size)) bad('not an integer-sized constant; pass bytes');
    const big = BigInt(value);
    if (big < -(2n ** BigInt(bits - 1)) || big >= 2n ** BigInt(bits)) bad(`${value} does not fit in ${bits} bits`);
    const u = BigInt.asUintN(bits, big);
    for (let i = 0; i < size; i++) out[i] = Number((u >> BigInt(8 * i)) & 0xffn);
  } else {
    bad('unsupported value');
  }
  return out;
}

/** A map of a loaded collection, not yet typed. Type it with {@link Collection.map}. */
interface LoadedMap {
  spec: MapSpec;
  fd: number;
  pinnedAt?: string;
}

/** Live maps and programs loaded from one object. Close it to release the handles. */
export class Collection {
  readonly spec: ObjectSpec;
  readonly programs: ReadonlyMap<string, Program>;
  private readonly maps: ReadonlyMap<string, LoadedMap>;
  private closed = false;

  private constructor(spec: ObjectSpec, maps: Map<string, LoadedMap>, programs: Map<string, Program>) {
    this.spec = spec;
    this.maps = maps;
    this.programs = programs;
  }

  /**
   * Opens, configures, verifies and loads `path`. All or nothing: on error
   * nothing stays loaded. A load the verifier abandoned because signals kept
   * arriving (EAGAIN) is tried again, up to three times.
   */
  static load(path: string, options: LoadOptions = {}): Collection {
    for (let attempt = 1; ; attempt++) {
      try {
        return Collection.loadOnce(path, options);
      } catch (err) {
        if (attempt >= 3 || !(err instanceof BpfSyscallError) || err.errno !== EAGAIN) throw err;
      }
    }
  }

  private static loadOnce(path: string, options: LoadOptions): Collection {
    const spec = readObjectSpec(path);
    return withObject(path, (obj) => {
      const mark = libbpfLogMark();
      const reusedFds: number[] = [];
      try {
        const maps = [...mapsOf(obj)];
        const progs = [...programsOf(obj)];
        configureMaxEntries(maps, options.maxEntries ?? {});
        // libbpf frees inner-map templates during load: describe the maps now.
        const mapSpecs = maps.map(mapSpecOf);
        setConstants(maps, spec.constants, options.constants ?? {});
        const pinPlan = planPins(maps, options);
        for (const { map, path: pinPath } of pinPlan) {
          if (!existsSync(pinPath)) continue;
          const fd = getPinned(pinPath, 'map');
          reusedFds.push(fd);
          const differences = mapDifferences(mapInfo(fd), shapeOf(map));
          if (differences.length > 0) throw new IncompatibleMapError(shapeOf(map).name, pinPath, differences);
          const r = libbpfCalls.mapReuseFd(map, fd) as number;
          if (r < 0) throw new BpfSyscallError(`reuse pinned map ${pinPath}`, -r);
        }
        const wanted = options.programs ? new Set(options.programs) : undefined;
        if (wanted) {
          const names = new Set(spec.programs.map((p) => p.name));
          for (const w of wanted) if (!names.has(w)) throw new BpfUsageError(`object ${path} has no program ${w} (it has ${[...names].join(', ')})`);
        }
        const logSize = options.verifierLogSize ?? 1 << 20;
        const logs = new Map<string, Buffer>();
        for (const p of progs) {
          const name = cString(libbpfCalls.programName(p));
          if (wanted && !wanted.has(name)) {
            libbpfCalls.programSetAutoload(p, false);
            continue;
          }
          // libbpf writes into the buffer only when a load fails (it then retries with a log).
          const buf = Buffer.allocUnsafe(logSize);
          buf[0] = 0;
          logs.set(name, buf);
          libbpfCalls.programSetLogBuf(p, buf, logSize);
        }
        const r = libbpfCalls.objectLoad(obj) as number;
        if (r < 0) throw loadError(path, -r, logs, libbpfLogSince(mark));

        const loadedMaps = new Map<string, LoadedMap>();
        for (const [i, m] of maps.entries()) {
          const mapSpec = mapSpecs[i] as MapSpec;
          const fd = dupFd(libbpfCalls.mapFd(m) as number, `map ${mapSpec.name}`);
          loadedMaps.set(mapSpec.name, { spec: mapSpec, fd });
        }
        for (const { map, path: pinPath } of pinPlan) {
          const entry = loadedMaps.get(shapeOf(map).name);
          if (!entry) continue;
          if (!existsSync(pinPath)) pinFd(entry.fd, pinPath, `map ${entry.spec.name}`);
          entry.pinnedAt = pinPath;
        }
        const programs = new Map<string, Program>();
        for (const p of progs) {
          const ps = programSpecOf(p);
          if (wanted && !wanted.has(ps.name)) continue;
          programs.set(ps.name, new Program(dupFd(libbpfCalls.programFd(p) as number, `program ${ps.name}`), ps.name, ps.type, ps.expectedAttachType));
        }
        return new Collection({ ...spec, maps: [...loadedMaps.values()].map((m) => m.spec) }, loadedMaps, programs);
      } finally {
        for (const fd of reusedFds) closeFd(fd);
      }
    });
  }

  private loaded(name: string): LoadedMap {
    if (this.closed) throw new BpfUsageError('collection is closed');
    const m = this.maps.get(name);
    if (!m) throw new BpfUsageError(`no map ${name} (maps: ${[...this.maps.keys()].join(', ')})`);
    return m;
  }

  /** Names of the loaded maps. */
  get mapNames(): string[] {
    return [...this.maps.keys()];
  }

  /** Where map `name` is pinned, if it is. */
  pinPath(name: string): string | undefined {
    return this.loaded(name).pinnedAt;
  }

  /** Raw descriptor of map `name` (owned by the collection). */
  mapFd(name: string): number {
    return this.loaded(name).fd;
  }

  /** A typed handle on map `name` (its own descriptor; close it when done). */
  map<K, V>(name: string, key: Codec<K>, value: Codec<V>): BpfMap<K, V> {
    return new BpfMap(dupFd(this.loaded(name).fd, `map ${name}`), key, value);
  }

  /** A typed handle on per-CPU map `name` (its own descriptor). */
  perCpuMap<K, V>(name: string, key: Codec<K>, value: Codec<V>): PerCpuMap<K, V> {
    return new PerCpuMap(dupFd(this.loaded(name).fd, `map ${name}`), key, value);
  }

  /** Program `name`; throws listing the programs when absent. */
  program(name: string): Program {
    const p = this.programs.get(name);
    if (!p) throw new BpfUsageError(`no program ${name} (programs: ${[...this.programs.keys()].join(', ')})`);
    return p;
  }

  /** Closes every handle of the collection. Pinned maps and attached programs stay in the kernel. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const m of this.maps.values()) closeFd(m.fd);
    for (const p of this.programs.values()) p.close();
  }
}

function dupFd(fd: number, what: string): number {
  if (fd < 0) throw new BpfUsageError(`${what} has no descriptor (was it loaded?)`);
  return Program.dup(fd, what);
}

function configureMaxEntries(maps: Pointer[], sizes: Record<string, number>): void {
  const byName = new Map(maps.map((m) => [cString(libbpfCalls.mapName(m)), m]));
  for (const [name, n] of Object.entries(sizes)) {
    const m = byName.get(name);
    if (!m) throw new BpfUsageError(`maxEntries: no map ${name} (maps: ${[...byName.keys()].join(', ')})`);
    if (!Number.isInteger(n) || n <= 0) throw new BpfUsageError(`maxEntries.${name}: must be a positive integer, got ${n}`);
    const r = libbpfCalls.mapSetMaxEntries(m, n) as number;
    if (r < 0) throw new BpfSyscallError(`set max entries of map ${name}`, -r);
  }
}

function setConstants(maps: Pointer[], specs: ConstantSpec[], values: Record<string, ConstantValue>): void {
  const names = Object.keys(values);
  if (names.length === 0) return;
  const rodata = maps.find((m) => (libbpfCalls.mapIsInternal(m) as boolean) && cString(libbpfCalls.mapName(m)).endsWith('.rodata'));
  if (!rodata) throw new BpfUsageError(`the object has no .rodata constants (asked for ${names.join(', ')})`);
  const size = [0];
  const ptr = libbpfCalls.mapInitialValue(rodata, size);
  if (isNull(ptr)) throw new BpfUsageError('cannot reach the .rodata initial value');
  const bytes = new Uint8Array(viewOf(ptr, size[0] as number));
  const encoded = names.map((name) => {
    const c = specs.find((s) => s.name === name);
    if (!c) throw new BpfUsageError(`no constant ${name} (constants: ${specs.map((s) => s.name).join(', ') || 'none'})`);
    return { c, data: encodeConstant(name, c.size, values[name] as ConstantValue) };
  });
  // Encode every value before writing any, so a bad one changes nothing.
  for (const { c, data } of encoded) bytes.set(data, c.offset);
}

function planPins(maps: Pointer[], options: LoadOptions): { map: Pointer; path: string }[] {
  if (!options.pinMaps) return [];
  if (!options.pinDir) throw new BpfUsageError('pinMaps needs pinDir (a directory on a bpffs)');
  const byName = new Map(maps.filter((m) => !(libbpfCalls.mapIsInternal(m) as boolean)).map((m) => [cString(libbpfCalls.mapName(m)), m]));
  const names = options.pinMaps === 'all' ? [...byName.keys()] : options.pinMaps;
  mkdirSync(options.pinDir, { recursive: true });
  return names.map((name) => {
    const map = byName.get(name);
    if (!map) throw new BpfUsageError(`pinMaps: no map ${name} (maps: ${[...byName.keys()].join(', ')})`);
    return { map, path: join(options.pinDir as string, name) };
  });
}

const EAGAIN = 11;

function loadError(path: string, errno: number, logs: Map<string, Buffer>, libbpfLog: string[]): BpfError {
  if (errno === EAGAIN) {
    // The verifier gives up when a signal is pending; that is no rejection.
    return new BpfSyscallError(`load BPF object ${path} (the verifier was interrupted by signals)`, errno);
  }
  for (const [name, buf] of logs) {
    const end = buf.indexOf(0);
    const log = buf.subarray(0, end < 0 ? buf.length : end).toString('utf8');
    if (log.trim().length > 0) return new VerifierError(name, errno, log);
  }
  const err = new BpfSyscallError(`load BPF object ${path}`, errno);
  if (libbpfLog.length > 0) err.message += `\nlibbpf: ${libbpfLog.slice(-6).join('\nlibbpf: ')}`;
  return err;
}
