/**
 * Typed BPF maps. A {@link BpfMap} pairs a live map (its descriptor) with a
 * codec for its key and its value. Single-element operations reuse one
 * attribute buffer per map, so the hot path allocates nothing but the decoded
 * value; batch operations move thousands of entries per syscall.
 */
import { addressOf, bpf, bpfAt, errno, numPossibleCpus } from './sys.js';
import { BpfSyscallError, BpfUsageError } from './errors.js';
import { check, closeFd, getPinned, infoName, objectInfo, pinFd } from './fd.js';
import { Cmd, MapType, isPerCpu, mapTypeName } from './types.js';
import type { Codec } from './codec.js';

const ENOENT = 2;

/** What `update` may do: overwrite or insert (`any`), insert only, or overwrite only. */
export type UpdateMode = 'any' | 'noexist' | 'exist';
const updateFlags: Record<UpdateMode, number> = { any: 0, noexist: 1, exist: 2 };

/** The kernel's description of a live map. */
export interface MapInfo {
  name: string;
  type: MapType;
  id: number;
  keySize: number;
  valueSize: number;
  maxEntries: number;
  flags: number;
}

/** What a map is, independent of any live object. */
export interface MapShape {
  name: string;
  type: MapType;
  keySize: number;
  valueSize: number;
  maxEntries: number;
  flags: number;
}

/** Reads the kernel's description of the map behind `fd`. */
export function mapInfo(fd: number): MapInfo {
  const b = objectInfo(fd, 88, 'map');
  return {
    type: b.readUInt32LE(0),
    id: b.readUInt32LE(4),
    keySize: b.readUInt32LE(8),
    valueSize: b.readUInt32LE(12),
    maxEntries: b.readUInt32LE(16),
    flags: b.readUInt32LE(20),
    name: infoName(b, 24),
  };
}

/** Creates a map in the kernel (no BTF); returns its descriptor. */
export function createMapFd(shape: MapShape & { innerMapFd?: number }): number {
  const attr = Buffer.alloc(72);
  attr.writeUInt32LE(shape.type, 0);
  attr.writeUInt32LE(shape.keySize, 4);
  attr.writeUInt32LE(shape.valueSize, 8);
  attr.writeUInt32LE(shape.maxEntries, 12);
  attr.writeUInt32LE(shape.flags, 16);
  attr.writeUInt32LE(shape.innerMapFd ?? 0, 20);
  attr.write(shape.name.slice(0, 15), 28, 'utf8');
  return check(bpf(Cmd.MapCreate, attr), () => `create ${mapTypeName(shape.type)} map ${shape.name}`);
}

/** Sums per-CPU values: numbers and bigints add, objects add member by member. */
export function sumValues<V>(values: readonly V[]): V {
  if (values.length === 0) throw new BpfUsageError('cannot sum zero per-CPU values');
  const add = (a: unknown, b: unknown): unknown => {
    if (typeof a === 'number' && typeof b === 'number') return a + b;
    if (typeof a === 'bigint' && typeof b === 'bigint') return a + b;
    if (a && b && typeof a === 'object' && typeof b === 'object' && !ArrayBuffer.isView(a)) {
      const out: Record<string, unknown> = Array.isArray(a) ? [] as unknown as Record<string, unknown> : {};
      for (const k of Object.keys(a)) out[k] = add((a as Record<string, unknown>)[k], (b as Record<string, unknown>)[k]);
      return out;
    }
    throw new BpfUsageError('per-CPU values can be summed only when they are numbers, bigints or objects of them');
  };
  return values.slice(1).reduce<unknown>((acc, v) => add(acc, v), values[0]) as V;
}

/**
 * Shared machinery of typed maps: descriptor, attribute buffers, key encoding,
 * iteration and batches. `V` is what one lookup returns.
 */
abstract class MapBase<K, V> {
  readonly fd: number;
  readonly info: MapInfo;
  readonly keyCodec: Codec<K>;
  /** Bytes of one value as the kernel copies it (all CPUs for per-CPU maps). */
  protected readonly valueBytes: number;
  private readonly attr = Buffer.alloc(32);
  private readonly attrAddr: number;
  protected readonly keyBuf: Buffer;
  private readonly nextKeyBuf: Buffer;
  protected readonly valueBuf: Buffer;
  private closed = false;

  protected constructor(fd: number, keyCodec: Codec<K>, valueBytes: number) {
    this.fd = fd;
    this.info = mapInfo(fd);
    this.keyCodec = keyCodec;
    this.valueBytes = valueBytes;
    this.keyBuf = Buffer.alloc(Math.max(this.info.keySize, 8));
    this.nextKeyBuf = Buffer.alloc(Math.max(this.info.keySize, 8));
    this.valueBuf = Buffer.alloc(Math.max(valueBytes, 8));
    this.attr.writeUInt32LE(fd, 0);
    this.attr.writeBigUInt64LE(BigInt(addressOf(this.keyBuf)), 8);
    this.attr.writeBigUInt64LE(BigInt(addressOf(this.valueBuf)), 16);
    this.attrAddr = addressOf(this.attr);
    if (keyCodec.size !== this.info.keySize) {
      closeFd(fd);
      throw new BpfUsageError(`map ${this.info.name}: key codec is ${keyCodec.size} bytes, the map's key is ${this.info.keySize}`);
    }
  }

  /** The map's name as the kernel knows it. */
  get name(): string {
    return this.info.name;
  }

  protected abstract encodeValue(value: V, buf: Buffer, offset: number): void;
  protected abstract decodeValue(buf: Buffer, offset: number): V;

  private fail(op: string): never {
    throw new BpfSyscallError(`${op} in map ${this.info.name}`, errno());
  }

  /** `size` 16 passes only fd and key: the kernel rejects non-zero fields a command does not use. */
  private call(cmd: number, flags: number, size = 32): number {
    this.attr.writeUInt32LE(flags, 24);
    return bpfAt(cmd, this.attrAddr, size);
  }

  /** The value stored under `key`, or undefined when there is none. */
  lookup(key: K): V | undefined {
    this.keyCodec.encode(key, this.keyBuf, 0);
    if (this.call(Cmd.MapLookupElem, 0) < 0) {
      if (errno() === ENOENT) return undefined;
      this.fail('lookup');
    }
    return this.decodeValue(this.valueBuf, 0);
  }

  /** Stores `value` under `key`; `mode` chooses insert-only or overwrite-only. */
  update(key: K, value: V, mode: UpdateMode = 'any'): void {
    this.keyCodec.encode(key, this.keyBuf, 0);
    this.encodeValue(value, this.valueBuf, 0);
    if (this.call(Cmd.MapUpdateElem, updateFlags[mode]) < 0) this.fail(`update (${mode})`);
  }

  /** Removes `key`; returns false when it was not there. */
  delete(key: K): boolean {
    this.keyCodec.encode(key, this.keyBuf, 0);
    if (this.call(Cmd.MapDeleteElem, 0, 16) < 0) {
      if (errno() === ENOENT) return false;
      this.fail('delete');
    }
    return true;
  }

  /** Every key, in the kernel's order (`BPF_MAP_GET_NEXT_KEY`). */
  *keys(): Generator<K> {
    const attr = Buffer.alloc(32);
    const cur = Buffer.alloc(this.keyBuf.length);
    const next = this.nextKeyBuf;
    attr.writeUInt32LE(this.fd, 0);
    attr.writeBigUInt64LE(0n, 8); // NULL key: start from the first
    attr.writeBigUInt64LE(BigInt(addressOf(next)), 16);
    const curAddr = BigInt(addressOf(cur));
    for (;;) {
      if (bpf(Cmd.MapGetNextKey, attr) < 0) {
        if (errno() === ENOENT) return;
        this.fail('iterate');
      }
      const key = this.keyCodec.decode(next, 0);
      next.copy(cur);
      attr.writeBigUInt64LE(curAddr, 8);
      yield key;
    }
  }

  /** Every entry; entries deleted while iterating are skipped. */
  *entries(): Generator<[K, V]> {
    for (const key of this.keys()) {
      const value = this.lookup(key);
      if (value !== undefined) yield [key, value];
    }
  }

  /** Number of entries (walks the keys). */
  count(): number {
    let n = 0;
    const it = this.keys();
    while (!it.next().done) n++;
    return n;
  }

  private batchAttr(keys: Buffer, values: Buffer | null, count: number, flags: number): Buffer {
    const attr = Buffer.alloc(56);
    attr.writeBigUInt64LE(BigInt(addressOf(keys)), 16);
    if (values) attr.writeBigUInt64LE(BigInt(addressOf(values)), 24);
    attr.writeUInt32LE(count, 32);
    attr.writeUInt32LE(this.fd, 36);
    attr.writeBigUInt64LE(BigInt(flags), 40);
    return attr;
  }

  /** Writes `count` pre-encoded keys and values in one syscall; returns how many were written. */
  updateBatchRaw(keys: Buffer, values: Buffer, count: number, mode: UpdateMode = 'any'): number {
    if (count === 0) return 0;
    const attr = this.batchAttr(keys, values, count, updateFlags[mode]);
    if (bpf(Cmd.MapUpdateBatch, attr) < 0) {
      const done = attr.readUInt32LE(32);
      throw new BpfSyscallError(`batch update in map ${this.info.name} (stopped after ${done} of ${count})`, errno());
    }
    return attr.readUInt32LE(32);
  }

  /** Writes many entries with as few syscalls as the kernel allows. */
  updateBatch(entries: Iterable<readonly [K, V]>, mode: UpdateMode = 'any'): number {
    const list = Array.isArray(entries) ? entries as (readonly [K, V])[] : [...entries];
    const ks = this.info.keySize, vs = this.valueBytes;
    const keys = Buffer.alloc(list.length * ks);
    const values = Buffer.alloc(list.length * vs);
    list.forEach(([k, v], i) => {
      this.keyCodec.encode(k, keys, i * ks);
      this.encodeValue(v, values, i * vs);
    });
    return this.updateBatchRaw(keys, values, list.length, mode);
  }

  /** Deletes many keys in one syscall; a missing key fails the batch with ENOENT. */
  deleteBatch(keys: Iterable<K>): number {
    const list = [...keys];
    if (list.length === 0) return 0;
    const ks = this.info.keySize;
    const buf = Buffer.alloc(list.length * ks);
    list.forEach((k, i) => this.keyCodec.encode(k, buf, i * ks));
    return this.deleteBatchRaw(buf, list.length);
  }

  /** Deletes `count` raw keys (entry i at i*keySize of `keys`) in one syscall; a missing key fails the batch with ENOENT. */
  deleteBatchRaw(keys: Buffer, count: number): number {
    if (count === 0) return 0;
    if (keys.length < count * this.info.keySize) throw new BpfUsageError(`deleteBatchRaw: ${count} keys need ${count * this.info.keySize} bytes, got ${keys.length}`);
    const attr = this.batchAttr(keys, null, count, 0);
    if (bpf(Cmd.MapDeleteBatch, attr) < 0) {
      const done = attr.readUInt32LE(32);
      throw new BpfSyscallError(`batch delete in map ${this.info.name} (stopped after ${done} of ${count})`, errno());
    }
    return attr.readUInt32LE(32);
  }

  /**
   * Reads every entry in chunks of `chunk` entries per syscall, calling `onChunk`
   * with the raw keys and values (entry i at i*keySize / i*valueBytes).
   * With `andDelete`, the entries read are removed in the same syscall.
   */
  lookupBatchRaw(onChunk: (keys: Buffer, values: Buffer, count: number) => void, chunk = 4096, andDelete = false): number {
    const ks = this.info.keySize, vs = this.valueBytes;
    const keys = Buffer.alloc(chunk * ks);
    const values = Buffer.alloc(chunk * vs);
    // The hash table's batch token is a bucket index (u32); 8 bytes covers every map type.
    const inTok = Buffer.alloc(Math.max(ks, 8));
    const outTok = Buffer.alloc(Math.max(ks, 8));
    const attr = this.batchAttr(keys, values, chunk, 0);
    attr.writeBigUInt64LE(BigInt(addressOf(outTok)), 8);
    let total = 0;
    let first = true;
    const cmd = andDelete ? Cmd.MapLookupAndDeleteBatch : Cmd.MapLookupBatch;
    for (;;) {
      attr.writeBigUInt64LE(first ? 0n : BigInt(addressOf(inTok)), 0);
      attr.writeUInt32LE(chunk, 32);
      const r = bpf(cmd, attr);
      const err = r < 0 ? errno() : 0;
      const n = attr.readUInt32LE(32);
      if (r < 0 && err !== ENOENT) {
        throw new BpfSyscallError(`batch lookup in map ${this.info.name}`, err);
      }
      if (n > 0) onChunk(keys, values, n);
      total += n;
      if (r < 0) return total; // ENOENT: no more entries
      outTok.copy(inTok);
      first = false;
    }
  }

  /** Every entry, read with batch syscalls (falls back to iteration where unsupported). */
  lookupBatch(chunk = 4096): [K, V][] {
    const out: [K, V][] = [];
    const ks = this.info.keySize, vs = this.valueBytes;
    try {
      this.lookupBatchRaw((keys, values, n) => {
        for (let i = 0; i < n; i++) out.push([this.keyCodec.decode(keys, i * ks), this.decodeValue(values, i * vs)]);
      }, chunk);
    } catch (err) {
      if (err instanceof BpfSyscallError && (err.errnoName === 'EINVAL' || err.errnoName === 'ENOTSUPP' || err.errnoName === 'EOPNOTSUPP')) {
        return [...this.entries()];
      }
      throw err;
    }
    return out;
  }

  /** Removes every entry (batch where supported). Returns how many were removed. */
  clear(): number {
    if (this.info.type === MapType.Array || this.info.type === MapType.PerCpuArray) {
      throw new BpfUsageError(`map ${this.info.name}: array entries cannot be deleted`);
    }
    const keys = [...this.keys()];
    let n = 0;
    for (const k of keys) if (this.delete(k)) n++;
    return n;
  }

  /** Pins the map at `path` (on a bpffs). */
  pin(path: string): void {
    pinFd(this.fd, path, `map ${this.info.name}`);
  }

  /** Closes this handle; the map lives on while pinned or used by programs. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    closeFd(this.fd);
  }
}

/** A map whose value is one `V` (hash, LRU hash, array, LPM trie, prog array, map-in-map). */
export class BpfMap<K, V> extends MapBase<K, V> {
  readonly valueCodec: Codec<V>;

  /** Wraps a live map descriptor (the map takes ownership of `fd`). */
  constructor(fd: number, keyCodec: Codec<K>, valueCodec: Codec<V>) {
    super(fd, keyCodec, valueCodec.size);
    this.valueCodec = valueCodec;
    if (isPerCpu(this.info.type)) {
      closeFd(fd);
      throw new BpfUsageError(`map ${this.info.name} is per-CPU: open it as a PerCpuMap`);
    }
    if (valueCodec.size !== this.info.valueSize) {
      closeFd(fd);
      throw new BpfUsageError(`map ${this.info.name}: value codec is ${valueCodec.size} bytes, the map's value is ${this.info.valueSize}`);
    }
  }

  /** Creates a new map in the kernel. */
  static create<K, V>(shape: MapShape & { innerMapFd?: number }, key: Codec<K>, value: Codec<V>): BpfMap<K, V> {
    return new BpfMap(createMapFd(shape), key, value);
  }

  /** Opens a map pinned at `path`. */
  static openPinned<K, V>(path: string, key: Codec<K>, value: Codec<V>): BpfMap<K, V> {
    return new BpfMap(getPinned(path, 'map'), key, value);
  }

  protected encodeValue(value: V, buf: Buffer, offset: number): void {
    this.valueCodec.encode(value, buf, offset);
  }

  protected decodeValue(buf: Buffer, offset: number): V {
    return this.valueCodec.decode(buf, offset);
  }
}

/**
 * A per-CPU map: one `V` per possible CPU. `lookup` returns all of them;
 * `lookupSum` adds them up.
 */
export class PerCpuMap<K, V> extends MapBase<K, V[]> {
  readonly valueCodec: Codec<V>;
  readonly cpus: number;
  private readonly stride: number;

  constructor(fd: number, keyCodec: Codec<K>, valueCodec: Codec<V>) {
    const cpus = numPossibleCpus();
    const stride = Math.ceil(valueCodec.size / 8) * 8;
    super(fd, keyCodec, stride * cpus);
    this.valueCodec = valueCodec;
    this.cpus = cpus;
    this.stride = stride;
    if (!isPerCpu(this.info.type)) {
      closeFd(fd);
      throw new BpfUsageError(`map ${this.info.name} is not per-CPU (${mapTypeName(this.info.type)}): open it as a BpfMap`);
    }
    if (valueCodec.size !== this.info.valueSize) {
      closeFd(fd);
      throw new BpfUsageError(`map ${this.info.name}: value codec is ${valueCodec.size} bytes, the map's value is ${this.info.valueSize}`);
    }
  }

  static create<K, V>(shape: MapShape, key: Codec<K>, value: Codec<V>): PerCpuMap<K, V> {
    return new PerCpuMap(createMapFd(shape), key, value);
  }

  static openPinned<K, V>(path: string, key: Codec<K>, value: Codec<V>): PerCpuMap<K, V> {
    return new PerCpuMap(getPinned(path, 'map'), key, value);
  }

  protected encodeValue(values: V[], buf: Buffer, offset: number): void {
    if (values.length !== this.cpus) {
      throw new BpfUsageError(`map ${this.info.name}: expected ${this.cpus} per-CPU values, got ${values.length}`);
    }
    buf.fill(0, offset, offset + this.valueBytes);
    values.forEach((v, i) => this.valueCodec.encode(v, buf, offset + i * this.stride));
  }

  protected decodeValue(buf: Buffer, offset: number): V[] {
    const out = new Array<V>(this.cpus);
    for (let i = 0; i < this.cpus; i++) out[i] = this.valueCodec.decode(buf, offset + i * this.stride);
    return out;
  }

  /** Stores the same value on every CPU. */
  updateAll(key: K, value: V, mode: UpdateMode = 'any'): void {
    this.update(key, new Array<V>(this.cpus).fill(value), mode);
  }

  /** The values of every CPU added up, or undefined when the key is absent. */
  lookupSum(key: K): V | undefined {
    const values = this.lookup(key);
    return values === undefined ? undefined : sumValues(values);
  }
}

