/**
 * The service load-balancing maps from the agent's side (bpf/include/lb.h,
 * bpf/lib/lb_select.h): {@link LbMapWriter} keeps `lb_services`,
 * `lb_backends`, `lb_maglev` (with one Maglev table per Maglev service) and
 * `lb_affinity` equal to a desired state, writing only the difference, in an
 * order that never lets the datapath read a half-written service; and
 * {@link readLbState} lists what the maps hold (`waggle bpf lb list`).
 *
 * Ordering of one apply (the datapath reads concurrently at every step):
 *  1. backends that are new or changed (so every name written later resolves);
 *  2. Maglev tables that are new, grow or change in place (before slot 0
 *     turns LB_F_MAGLEV on or raises maglev_size: `hash % maglev_size` always
 *     indexes a table at least that large);
 *  3. backend slots 1..count, then slot 0 (count rises only after its slots
 *     exist; shrinking counts are written before the extra slots go);
 *  4. deletions: slot 0 of removed services, then slots past the new count;
 *  5. Maglev tables that shrink (after slot 0 lowered maglev_size) and tables
 *     of services that are gone, no longer Maglev or have no backend;
 *  6. affinity entries that name a backend the service no longer has, or a
 *     service that no longer has affinity;
 *  7. backends no longer wanted (nothing names them any more).
 *
 * Maglev tables are BPF_MAP_TYPE_ARRAY maps (u32 → backend ID, max_entries =
 * table size, flags BPF_F_INNER_MAP | BPF_F_MMAPABLE as the template in
 * lb_select.h). A table of the same size is updated in place through a shared
 * mapping (only the entries that change, each one aligned 32-bit store, so the
 * datapath reads either the old or the new backend of an entry, both valid);
 * a new or resized table is filled before it is put into `lb_maglev`. Updates
 * of the outer map wait for an RCU grace period (~8 ms here) per syscall, so
 * they are batched: one wait per apply, not one per service. The kernel keeps
 * array values 8-byte aligned: entry e is the u32 at byte 8·e of the mapping,
 * and a table costs M × 8 bytes (+ a page).
 *
 * Cost: the writer keeps one record per backend and per frontend (last
 * validated input, desired value, what the map holds) and finds each input's
 * record at the position it had in the last state before trying a Map lookup,
 * so an apply in which little changed costs a few comparisons per entry
 * (~15–30 ms for 10,000 services × 10 backends here, warm); only changed
 * inputs are parsed, encoded and written. Treat the state as a value: a
 * changed backend or frontend must differ in its fields (mutating an object in
 * place is fine, the fields are compared).
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { u32 } from '../bpf/codec.js';
import { BpfMap, mapInfo } from '../bpf/map.js';
import { BpfSyscallError, BpfUsageError } from '../bpf/errors.js';
import { check, closeFd } from '../bpf/fd.js';
import { bpf, errno, isMapFailed, libcCalls, pageSize, viewOf } from '../bpf/sys.js';
import { Cmd, MapType } from '../bpf/types.js';
import { lbNatMaps } from './lxc.js';
import { LB_NAT_ENTRY_SERVICE_ID_OFFSET, type LbNatEntry, type LbNatKey } from './codecs/lb-nat.js';
import {
  LB_AF_INET, LB_AF_INET6, LB_BACKEND_F_TERMINATING, LB_BACKENDS_MAX, LB_FLAGS, LB_MAGLEV_INNER_FLAGS, LB_MAGLEV_MAX, LB_PROTO,
  LB_SERVICE_KEY_SLOT_OFFSET, LB_SERVICES_MAX, lbAddrBytes, lbAddrText, lbAffinity, lbAffinityKey, lbBackend, lbProtoName,
  lbService, lbServiceKey, type LbAffinity, type LbAffinityKey, type LbBackend, type LbProto, type LbService, type LbServiceKey,
} from './codecs/lb.js';
import {
  MAGLEV_DEFAULT_TABLE_SIZE, checkMaglevTableSize, maglevBackendTable, maglevIdentity, type MaglevBackend,
} from '../service/maglev.js';

/** The pinned maps the writer works on (pin them from an object that includes lb_select.h). */
export const LB_MAPS = ['lb_services', 'lb_backends', 'lb_maglev', 'lb_affinity'] as const;

export function lbServicesMap(pinDir: string): BpfMap<LbServiceKey, LbService> {
  return BpfMap.openPinned(join(pinDir, 'lb_services'), lbServiceKey, lbService);
}

export function lbBackendsMap(pinDir: string): BpfMap<number, LbBackend> {
  return BpfMap.openPinned(join(pinDir, 'lb_backends'), u32, lbBackend);
}

/** service ID → inner map: updates take a table's descriptor, lookups return its map ID. */
export function lbMaglevMap(pinDir: string): BpfMap<number, number> {
  return BpfMap.openPinned(join(pinDir, 'lb_maglev'), u32, u32);
}

export function lbAffinityMap(pinDir: string): BpfMap<LbAffinityKey, LbAffinity> {
  return BpfMap.openPinned(join(pinDir, 'lb_affinity'), lbAffinityKey, lbAffinity);
}

// ---- desired state ---------------------------------------------------------

export interface LbFrontendFlags {
  /** Pick by the service's Maglev table (consistent hashing) instead of a random slot. */
  maglev: boolean;
  /** sessionAffinity: ClientIP (for `affinityTimeout` seconds). */
  affinity: boolean;
  /** The frontend is a NodePort (a node address). */
  nodePort: boolean;
  /** Only node-local backends (externalTrafficPolicy/internalTrafficPolicy Local). */
  local: boolean;
}

/** One frontend (address, port, protocol) of a service, as the datapath should serve it. */
export interface LbFrontend {
  /** The service's number (lb_maglev / lb_affinity key, rev-NAT); 1..2^32−1. Frontends may share one if their Maglev backends agree. */
  serviceId: number;
  family: 4 | 6;
  addr: string;
  /** 1..65535, host order. */
  port: number;
  proto: LbProto;
  flags: LbFrontendFlags;
  /** Seconds a client stays with its backend (flags.affinity); ignored without affinity. */
  affinityTimeout: number;
  /** IDs of the backends taking new connections, in slot order (slot i+1 = backends[i]); each must be in the state's backends. */
  backends: readonly number[];
}

/** One backend (lb_backends entry). A terminating one keeps its entry (existing connections) but should be in no frontend's `backends`. */
export interface LbBackendEntry {
  /** 1..2^32−1, stable for the backend's life. */
  id: number;
  family: 4 | 6;
  addr: string;
  port: number;
  proto: LbProto;
  terminating: boolean;
}

/** The whole desired content of the load-balancing maps. */
export interface LbDesiredState {
  frontends: readonly LbFrontend[];
  backends: readonly LbBackendEntry[];
}

/** A desired state the maps cannot hold; `field` names the offending input (`frontends[3].port`). Nothing was written. */
export class LbStateError extends Error {
  readonly field: string;
  constructor(field: string, message: string) {
    super(`${field}: ${message}`);
    this.name = 'LbStateError';
    this.field = field;
  }
}

export interface LbMapWriterOptions {
  /** Entries of every Maglev table: a prime up to LB_MAGLEV_TABLE_MAX (131071). Default 16381. */
  maglevTableSize?: number;
}

/** What the last {@link LbMapWriter.apply} did. */
export interface LbSyncStats {
  /** Wall time of the whole apply (validation, Maglev computation and syscalls). */
  ms: number;
  /** Of which computing Maglev tables. */
  maglevComputeMs: number;
  /** Desired sizes. */
  frontends: number;
  backends: number;
  maglevTables: number;
  /** `lb_services` entries written / deleted (slot 0 and backend slots). */
  serviceEntriesWritten: number;
  serviceEntriesDeleted: number;
  backendsWritten: number;
  backendsDeleted: number;
  /** Tables created (new service, turned Maglev, resized), changed in place, deleted. */
  maglevTablesCreated: number;
  maglevTablesUpdated: number;
  maglevTablesDeleted: number;
  /** Table entries written (whole new tables plus changed entries of tables updated in place). */
  maglevEntriesWritten: number;
  affinityDeleted: number;
  /** `lb_nat` / `lb_rev_nat` entries of services that are gone (per-packet translations nothing will use). */
  natDeleted: number;
}

// ---- internal state --------------------------------------------------------

const KEY_SIZE = lbServiceKey.size;
const VALUE_SIZE = lbService.size;
const ENOENT = 2;
const PROT_READ = 1;
const PROT_WRITE = 2;
const MAP_SHARED = 1;
/** u32 words per array element: the kernel rounds an array's value size up to 8 bytes. */
const TABLE_STRIDE = 2;

/**
 * One backend ID as the writer knows it: its last validated input (a cache:
 * an unchanged input is not parsed again), the value that input asks for,
 * and what `lb_backends` holds.
 */
interface BackendRec {
  id: number;
  /** The last plan whose state named it, and where (a hint for the next plan). */
  gen: number;
  index: number;
  input: { family: 4 | 6; addr: string; port: number; proto: LbProto; terminating: boolean } | undefined;
  want: LbBackend | undefined;
  /** Its Maglev identity, made when first needed. */
  identity: string | undefined;
  /** The entry in lb_backends (undefined: none). */
  have: LbBackend | undefined;
}

/** One frontend (slot-0 key) as the writer knows it: what it should be and what `lb_services` holds. */
interface FrontendRec {
  /** The key's bytes (slot 0) as a latin1 string: the record's identity. */
  text: string;
  key: Buffer;
  /** Input spellings (addr|port|proto|family) that map to this record. */
  inputKeys: string[];
  /** The last input that named it (a frontend at the same place in the next state is checked against it). */
  input: { addr: string; port: number; proto: LbProto; family: 4 | 6 } | undefined;
  /** The last plan whose state named it, and where. */
  gen: number;
  index: number;
  /** Slot 0 and backend IDs the last plan asked for; `ids` validated in epoch `idsEpoch`. */
  want: LbService | undefined;
  ids: number[];
  idsEpoch: number;
  /** Slot 0 in the map, and slot i+1 → backend ID (−1: no entry). */
  svc: LbService | undefined;
  slots: number[];
}

interface TableCur {
  mapId: number;
  size: number;
  /** BPF_F_MMAPABLE (every table this writer creates; an older one is replaced). */
  mmapable: boolean;
  /** What the table was computed from, once known (undefined after a reload: compare the entries). */
  signature: string | undefined;
}

interface TableWant {
  size: number;
  backends: MaglevBackend[];
  signature: string;
}

interface Plan {
  gen: number;
  frontends: FrontendRec[];
  backends: BackendRec[];
  /** Backends whose map entry differs from what they want; frontends whose slots or slot 0 may. */
  dirtyBackends: BackendRec[];
  dirtyFrontends: FrontendRec[];
  /** Backends of the previous plan that this one does not name. */
  goneBackends: BackendRec[];
  tables: Map<number, TableWant>;
  affinity: Map<number, Set<number>>;
}

function identityOf(b: BackendRec): string {
  const v = b.want as LbBackend;
  if (b.identity === undefined) b.identity = maglevIdentity(lbAddrText(v.family, v.addr), v.port, lbProtoName(v.proto));
  return b.identity;
}

const sameService = (a: LbService, b: LbService): boolean =>
  a.backendId === b.backendId && a.serviceId === b.serviceId && a.count === b.count && a.flags === b.flags
  && a.affinityTimeout === b.affinityTimeout && a.maglevSize === b.maglevSize;

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

const sameBackend = (a: LbBackend, b: LbBackend): boolean =>
  a.port === b.port && a.proto === b.proto && a.family === b.family && a.flags === b.flags && sameBytes(a.addr, b.addr);

/** The frontend part of a raw key (slot zeroed) as a Map key: the key's bytes as latin1. */
function frontendText(key: Buffer, offset = 0): string {
  const slot = offset + LB_SERVICE_KEY_SLOT_OFFSET;
  return `${key.toString('latin1', offset, slot)}\0\0${key.toString('latin1', slot + 2, offset + KEY_SIZE)}`;
}

/** Opens the map with kernel ID `id` (`BPF_MAP_GET_FD_BY_ID`); returns its descriptor. */
function mapFdById(id: number): number {
  const attr = Buffer.alloc(12);
  attr.writeUInt32LE(id, 0);
  return check(bpf(Cmd.MapGetFdById, attr), () => `open map id ${id}`);
}

/**
 * Runs `fn` on a read-write mapping of mmapable array `fd` (`size` u32
 * values). The kernel stores array elements 8-byte aligned, so entry e is
 * `view[2 * e]` (the odd words are padding).
 */
function withTableView<T>(fd: number, size: number, fn: (view: Uint32Array) => T): T {
  const page = pageSize();
  const len = Math.ceil((size * TABLE_STRIDE * 4) / page) * page;
  const ptr = libcCalls.mmap(null, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (isMapFailed(ptr)) throw new BpfSyscallError(`mmap Maglev table (fd ${fd}, ${size} entries)`, errno());
  try {
    return fn(new Uint32Array(viewOf(ptr, len), 0, size * TABLE_STRIDE));
  } finally {
    libcCalls.munmap(ptr, len);
  }
}

/** Creates an empty Maglev table of `size` entries for service `serviceId`. */
function createTable(serviceId: number, size: number): BpfMap<number, number> {
  return BpfMap.create({
    name: `lbmg_${serviceId}`.slice(0, 15), type: MapType.Array, keySize: 4, valueSize: 4, maxEntries: size, flags: LB_MAGLEV_INNER_FLAGS,
  }, u32, u32);
}

/** Deletes `count` raw keys; keys that vanished meanwhile (ENOENT) do not fail it. Returns how many were deleted. */
function deleteRaw<K, V>(map: BpfMap<K, V>, keys: Buffer, count: number): number {
  if (count === 0) return 0;
  try {
    return map.deleteBatchRaw(keys, count);
  } catch (err) {
    if (!(err instanceof BpfSyscallError && err.errno === ENOENT)) throw err;
    let n = 0;
    const ks = map.info.keySize;
    for (let i = 0; i < count; i++) if (map.delete(map.keyCodec.decode(keys, i * ks))) n++;
    return n;
  }
}

/** Puts tables into the outer map: one batch (one RCU wait), or one by one where batches are not supported. */
function updateOuter(outer: BpfMap<number, number>, entries: [number, number][]): void {
  if (entries.length === 0) return;
  if (entries.length > 1) {
    try {
      outer.updateBatch(entries);
      return;
    } catch (err) {
      if (!(err instanceof BpfSyscallError && ['EINVAL', 'ENOTSUPP', 'EOPNOTSUPP'].includes(err.errnoName))) throw err;
    }
  }
  for (const [k, fd] of entries) outer.update(k, fd);
}

function deleteOuter(outer: BpfMap<number, number>, serviceIds: number[]): void {
  if (serviceIds.length === 0) return;
  if (serviceIds.length > 1) {
    try {
      outer.deleteBatch(serviceIds);
      return;
    } catch (err) {
      if (!(err instanceof BpfSyscallError && ['ENOENT', 'EINVAL', 'ENOTSUPP', 'EOPNOTSUPP'].includes(err.errnoName))) throw err;
    }
  }
  for (const sid of serviceIds) outer.delete(sid);
}

/** A field name, or how to make it (only on error: the hot path builds no strings). */
type Field = string | (() => string);
const fieldName = (f: Field): string => (typeof f === 'string' ? f : f());

function checkUint(field: Field, v: unknown, min: number, max: number): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) {
    throw new LbStateError(fieldName(field), `must be an integer in ${min}..${max}, got ${JSON.stringify(v)}`);
  }
  return v;
}

function checkFamily(field: Field, v: unknown): 4 | 6 {
  if (v !== 4 && v !== 6) throw new LbStateError(fieldName(field), `must be 4 or 6, got ${JSON.stringify(v)}`);
  return v;
}

function checkProto(field: Field, v: unknown): number {
  if (v !== 'TCP' && v !== 'UDP') throw new LbStateError(fieldName(field), `must be "TCP" or "UDP", got ${JSON.stringify(v)}`);
  return LB_PROTO[v];
}

function checkAddr(field: Field, family: 4 | 6, v: unknown): Uint8Array {
  if (typeof v !== 'string') throw new LbStateError(fieldName(field), `must be an IPv${family} address, got ${JSON.stringify(v)}`);
  try {
    return lbAddrBytes(family, v);
  } catch {
    throw new LbStateError(fieldName(field), `must be an IPv${family} address, got ${JSON.stringify(v)}`);
  }
}

// ---- the writer ------------------------------------------------------------

/**
 * Keeps the load-balancing maps pinned in a directory equal to a desired
 * state. It starts from what the maps hold (a restarted agent converges
 * without rewriting, and without dropping a connection), then remembers what
 * it wrote. After a failed syscall it reads the maps again on the next apply.
 */
export class LbMapWriter {
  readonly maglevTableSize: number;
  private readonly services: BpfMap<LbServiceKey, LbService>;
  private readonly backendMap: BpfMap<number, LbBackend>;
  private readonly maglev: BpfMap<number, number>;
  private readonly affinityMap: BpfMap<LbAffinityKey, LbAffinity>;
  private readonly natMaps: BpfMap<LbNatKey, LbNatEntry>[];
  /** Service IDs of the last plan (undefined: not known yet, e.g. after a restart). */
  private serviceIds: Set<number> | undefined;
  private backends = new Map<number, BackendRec>();
  private frontends = new Map<string, FrontendRec>();
  private frontendInputs = new Map<string, FrontendRec>();
  private tables = new Map<number, TableCur>();
  /** service ID → backends its affinity entries may name; undefined: unknown (prune on the next apply). */
  private affinity: Map<number, Set<number>> | undefined;
  /** Plan counter (records remember the last plan that named them). */
  private gen = 0;
  /** The records of the last plan's backends and frontends, in its order (hints for the next plan). */
  private lastBackends: BackendRec[] = [];
  private lastFrontends: FrontendRec[] = [];
  private lastGen = -1;
  /** Bumped when a plan fails validation: frontends' backend lists are then checked in full again. */
  private epoch = 0;
  private stale = false;
  private last: LbSyncStats | undefined;

  private constructor(pinDir: string, options: LbMapWriterOptions) {
    this.maglevTableSize = checkMaglevTableSize(options.maglevTableSize ?? MAGLEV_DEFAULT_TABLE_SIZE);
    const opened: { close(): void }[] = [];
    try {
      this.services = lbServicesMap(pinDir);
      opened.push(this.services);
      this.backendMap = lbBackendsMap(pinDir);
      opened.push(this.backendMap);
      this.maglev = lbMaglevMap(pinDir);
      opened.push(this.maglev);
      this.affinityMap = lbAffinityMap(pinDir);
      opened.push(this.affinityMap);
      // The endpoint programs' translation maps, when they are pinned here too (an agent's are).
      if (existsSync(join(pinDir, 'lb_nat'))) {
        const { nat, revNat } = lbNatMaps(pinDir);
        this.natMaps = [nat, revNat];
        opened.push(nat, revNat);
      } else {
        this.natMaps = [];
      }
      this.reload();
    } catch (err) {
      for (const m of opened) m.close();
      throw err;
    }
  }

  /** Opens the writer on the maps pinned in `pinDir` (see {@link LB_MAPS}) and reads what they hold. */
  static open(pinDir: string, options: LbMapWriterOptions = {}): LbMapWriter {
    return new LbMapWriter(pinDir, options);
  }

  /** What the last apply did, or undefined before the first. */
  get lastSync(): LbSyncStats | undefined {
    return this.last;
  }

  /** Reads the maps into the writer's picture of them. */
  private reload(): void {
    this.frontends.clear();
    this.frontendInputs.clear();
    this.services.lookupBatchRaw((keys, values, n) => {
      for (let i = 0; i < n; i++) {
        const text = frontendText(keys, i * KEY_SIZE);
        const slot = keys.readUInt16LE(i * KEY_SIZE + LB_SERVICE_KEY_SLOT_OFFSET);
        let f = this.frontends.get(text);
        if (!f) {
          f = {
            text, key: Buffer.from(text, 'latin1'), inputKeys: [], input: undefined, gen: 0, index: -1, want: undefined, ids: [], idsEpoch: -1, svc: undefined, slots: [],
          };
          this.frontends.set(text, f);
        }
        if (slot === 0) f.svc = lbService.decode(values, i * VALUE_SIZE);
        else {
          while (f.slots.length < slot) f.slots.push(-1);
          f.slots[slot - 1] = values.readUInt32LE(i * VALUE_SIZE + lbService.members.backendId.offset);
        }
      }
    });
    this.backends.clear();
    for (const [id, have] of this.backendMap.lookupBatch()) {
      this.backends.set(id, { id, gen: 0, index: -1, input: undefined, want: undefined, identity: undefined, have });
    }
    this.tables.clear();
    for (const [sid, mapId] of this.maglev.lookupBatch()) {
      const fd = mapFdById(mapId);
      try {
        const info = mapInfo(fd);
        const usable = info.type === MapType.Array && info.keySize === 4 && info.valueSize === 4;
        this.tables.set(sid, {
          mapId, size: usable ? info.maxEntries : 0, mmapable: usable && info.flags === LB_MAGLEV_INNER_FLAGS, signature: undefined,
        });
      } finally {
        closeFd(fd);
      }
    }
    this.affinity = undefined;
    this.lastBackends = [];
    this.lastFrontends = [];
    this.lastGen = -1;
    this.epoch++;
    this.stale = false;
  }

  /** Validates a changed backend input into its map value. */
  private static backendValue(b: LbBackendEntry, i: number): LbBackend {
    const family = checkFamily(() => `backends[${i}].family`, b.family);
    const addr = checkAddr(() => `backends[${i}].addr`, family, b.addr);
    const port = checkUint(() => `backends[${i}].port`, b.port, 1, 0xffff);
    const proto = checkProto(() => `backends[${i}].proto`, b.proto);
    if (typeof b.terminating !== 'boolean') throw new LbStateError(`backends[${i}].terminating`, `must be a boolean, got ${JSON.stringify(b.terminating)}`);
    return { addr, port, proto, family: family === 4 ? LB_AF_INET : LB_AF_INET6, flags: b.terminating ? LB_BACKEND_F_TERMINATING : 0 };
  }

  /**
   * Validates `state` and works out what the maps should hold; throws
   * {@link LbStateError} before anything is written. Work per entry is a
   * lookup and a few comparisons when the entry did not change.
   */
  private plan(state: LbDesiredState): Plan {
    const epoch = this.epoch;
    try {
      return this.planIn(state);
    } catch (err) {
      this.epoch = epoch + 1;
      throw err;
    }
  }

  private planIn(state: LbDesiredState): Plan {
    const m = this.maglevTableSize;
    const gen = ++this.gen;
    if (!state || !Array.isArray(state.frontends as unknown) || !Array.isArray(state.backends as unknown)) {
      throw new LbStateError('state', 'must have frontends and backends arrays');
    }
    if (state.backends.length > LB_BACKENDS_MAX) throw new LbStateError('backends', `${state.backends.length} backends, the map holds ${LB_BACKENDS_MAX}`);
    const backends: BackendRec[] = new Array<BackendRec>(state.backends.length);
    /** Backend IDs a frontend's unchanged list may no longer use: gone, or of another family now. */
    const suspects = new Set<number>();
    // Where the last state had the backend now at i is i + shift: look there before the Map.
    const last = this.lastBackends;
    const lastGen = this.lastGen;
    let shift = 0;
    let fromLast = 0;
    const dirtyBackends: BackendRec[] = [];
    for (let i = 0; i < state.backends.length; i++) {
      const b = state.backends[i] as LbBackendEntry;
      if (b === null || typeof b !== 'object') throw new LbStateError(`backends[${i}]`, 'must be an object');
      const id = b.id;
      let r = last[i + shift];
      if (r === undefined || r.id !== id) {
        if (!Number.isInteger(id) || id < 1 || id > 0xffffffff) checkUint(`backends[${i}].id`, id, 1, 0xffffffff);
        r = this.backends.get(id);
        if (r && r.index >= 0 && last[r.index] === r) shift = r.index - i;
      }
      if (r && r.gen === gen) throw new LbStateError(`backends[${i}].id`, `backend ${id} appears twice`);
      if (!r) {
        r = { id, gen: 0, index: -1, input: undefined, want: undefined, identity: undefined, have: undefined };
        this.backends.set(id, r);
      }
      const inp = r.input;
      if (!inp || inp.addr !== b.addr || inp.family !== b.family || inp.port !== b.port || inp.proto !== b.proto || inp.terminating !== b.terminating) {
        const want = LbMapWriter.backendValue(b, i);
        if (r.want && r.want.family !== want.family) suspects.add(id);
        r.input = { family: b.family, addr: b.addr, port: b.port, proto: b.proto, terminating: b.terminating };
        r.want = want;
        r.identity = undefined;
      }
      if (r.gen === lastGen) fromLast++;
      r.gen = gen;
      r.index = i; // a record visited here is not looked up by index again (it would be a duplicate)
      backends[i] = r;
      if (r.have !== r.want) dirtyBackends.push(r);
    }
    const goneBackends: BackendRec[] = [];
    if (fromLast < last.length) for (const r of last) if (r.gen !== gen) goneBackends.push(r);
    for (const r of goneBackends) suspects.add(r.id);

    const frontends: FrontendRec[] = new Array<FrontendRec>(state.frontends.length);
    const dirtyFrontends: FrontendRec[] = [];
    const lastFrontends = this.lastFrontends;
    let fshift = 0;
    const tables = new Map<number, TableWant>();
    const tableOwner = new Map<number, string>();
    const affinity = new Map<number, Set<number>>();
    let entries = 0;
    for (let i = 0; i < state.frontends.length; i++) {
      const f = state.frontends[i] as LbFrontend;
      const at = (): string => `frontends[${i}]`;
      if (f === null || typeof f !== 'object') throw new LbStateError(at(), 'must be an object');
      const serviceId = checkUint(() => `${at()}.serviceId`, f.serviceId, 1, 0xffffffff);
      const family = checkFamily(() => `${at()}.family`, f.family);
      let r = lastFrontends[i + fshift];
      let inp = r?.input;
      if (!r || !inp || inp.addr !== f.addr || inp.port !== f.port || inp.proto !== f.proto || inp.family !== family) {
        const inputKey = `${f.addr}|${f.port}|${f.proto}|${family}`;
        r = this.frontendInputs.get(inputKey);
        if (r && r.index >= 0 && lastFrontends[r.index] === r) fshift = r.index - i;
        if (!r) r = this.frontendRec(f, family, inputKey, at);
        inp = r.input;
        if (!inp || inp.addr !== f.addr || inp.port !== f.port || inp.proto !== f.proto || inp.family !== family) {
          r.input = { addr: f.addr, port: f.port, proto: f.proto, family };
        }
      }
      if (r.gen === gen) throw new LbStateError(at(), `frontend ${f.addr} port ${f.port}/${f.proto} appears twice`);
      r.gen = gen;
      r.index = i;

      const fl = f.flags as Partial<LbFrontendFlags> | undefined;
      if (!fl || typeof fl !== 'object') throw new LbStateError(`${at()}.flags`, 'must be an object { maglev, affinity, nodePort, local }');
      if (typeof fl.maglev !== 'boolean' || typeof fl.affinity !== 'boolean' || typeof fl.nodePort !== 'boolean' || typeof fl.local !== 'boolean') {
        for (const name of ['maglev', 'affinity', 'nodePort', 'local'] as const) {
          if (typeof fl[name] !== 'boolean') throw new LbStateError(`${at()}.flags.${name}`, `must be a boolean, got ${JSON.stringify(fl[name])}`);
        }
      }
      const affinityTimeout = fl.affinity ? checkUint(() => `${at()}.affinityTimeout`, f.affinityTimeout, 1, 0xffffffff) : 0;
      const ids: readonly number[] = f.backends;
      if (!Array.isArray(ids as unknown)) throw new LbStateError(`${at()}.backends`, 'must be an array of backend IDs');
      if (ids.length > 0xffff) throw new LbStateError(`${at()}.backends`, `${ids.length} backends, a service holds at most 65535`);
      // The same list as last time, checked then: only the backends that left or changed family need a look.
      let same = r.idsEpoch === this.epoch && r.ids.length === ids.length;
      for (let j = 0; same && j < ids.length; j++) if (r.ids[j] !== ids[j]) same = false;
      if (same && suspects.size > 0) for (let j = 0; same && j < ids.length; j++) if (suspects.has(ids[j] as number)) same = false;
      if (!same) {
        const fam = family === 4 ? LB_AF_INET : LB_AF_INET6;
        const seen = ids.length > 16 ? new Set<number>() : undefined;
        for (let j = 0; j < ids.length; j++) {
          const id = ids[j] as number;
          const b = this.backends.get(id);
          if (!b || b.gen !== gen) throw new LbStateError(`${at()}.backends[${j}]`, `backend ${JSON.stringify(id)} is not in backends`);
          if (seen ? seen.has(id) : ids.indexOf(id) < j) throw new LbStateError(`${at()}.backends[${j}]`, `backend ${id} appears twice`);
          seen?.add(id);
          if ((b.want as LbBackend).family !== fam) throw new LbStateError(`${at()}.backends[${j}]`, `backend ${id} is IPv${family === 4 ? 6 : 4}, the frontend IPv${family}`);
        }
        r.ids = ids.slice();
        r.idsEpoch = this.epoch;
      }
      // An unchanged list was written by the last apply (a failed one bumps the epoch): only slot 0 may differ.
      let dirty = !same || r.slots.length !== ids.length;
      const flags = (fl.maglev ? LB_FLAGS.MAGLEV : 0) | (fl.affinity ? LB_FLAGS.AFFINITY : 0)
        | (fl.nodePort ? LB_FLAGS.NODEPORT : 0) | (fl.local ? LB_FLAGS.LOCAL : 0);
      const maglevSize = fl.maglev ? m : 0;
      const w = r.want;
      if (!w || w.serviceId !== serviceId || w.count !== ids.length || w.flags !== flags || w.affinityTimeout !== affinityTimeout || w.maglevSize !== maglevSize) {
        r.want = { backendId: 0, serviceId, count: ids.length, flags, affinityTimeout, maglevSize };
      }
      if (r.svc !== r.want) dirty = true;
      if (dirty) dirtyFrontends.push(r);
      frontends[i] = r;
      entries += 1 + ids.length;
      if (fl.maglev && ids.length > 0) {
        if (ids.length > m) throw new LbStateError(`${at()}.backends`, `${ids.length} backends do not fit a Maglev table of ${m} entries`);
        const list = ids.map((id) => ({ id, identity: identityOf(this.backends.get(id) as BackendRec) }))
          .sort((a, b) => (a.identity < b.identity ? -1 : a.identity > b.identity ? 1 : 0));
        for (let j = 1; j < list.length; j++) {
          const x = list[j - 1] as MaglevBackend, y = list[j] as MaglevBackend;
          if (x.identity === y.identity) throw new LbStateError(`${at()}.backends`, `backends ${x.id} and ${y.id} are the same address ${y.identity}`);
        }
        const signature = `${m}|${list.map((b) => `${b.identity}=${b.id}`).join(',')}`;
        const other = tables.get(serviceId);
        if (other && other.signature !== signature) {
          throw new LbStateError(`${at()}.backends`, `service ${serviceId} has a Maglev table with other backends already (${tableOwner.get(serviceId) ?? ''}); frontends sharing a service ID must share their backends`);
        }
        tables.set(serviceId, { size: m, backends: list, signature });
        tableOwner.set(serviceId, at());
      }
      if (fl.affinity) {
        let set = affinity.get(serviceId);
        if (!set) affinity.set(serviceId, (set = new Set()));
        for (const id of ids) set.add(id);
      }
    }
    if (entries > LB_SERVICES_MAX) throw new LbStateError('frontends', `${entries} lb_services entries (frontends + backend slots), the map holds ${LB_SERVICES_MAX}`);
    if (tables.size > LB_MAGLEV_MAX) throw new LbStateError('frontends', `${tables.size} Maglev services, lb_maglev holds ${LB_MAGLEV_MAX}`);
    this.lastBackends = backends;
    this.lastFrontends = frontends;
    this.lastGen = gen;
    return { gen, frontends, backends, dirtyBackends, dirtyFrontends, goneBackends, tables, affinity };
  }

  /** The record of a frontend not seen under this spelling before (validates its key). */
  private frontendRec(f: LbFrontend, family: 4 | 6, inputKey: string, at: () => string): FrontendRec {
    const addr = checkAddr(() => `${at()}.addr`, family, f.addr);
    const port = checkUint(() => `${at()}.port`, f.port, 1, 0xffff);
    const proto = checkProto(() => `${at()}.proto`, f.proto);
    const key = Buffer.alloc(KEY_SIZE);
    lbServiceKey.encode({ addr, port, proto, family: family === 4 ? LB_AF_INET : LB_AF_INET6, slot: 0 }, key, 0);
    const text = key.toString('latin1');
    let r = this.frontends.get(text);
    if (!r) {
      r = { text, key, inputKeys: [], input: undefined, gen: 0, index: -1, want: undefined, ids: [], idsEpoch: -1, svc: undefined, slots: [] };
      this.frontends.set(text, r);
    }
    r.inputKeys.push(inputKey);
    this.frontendInputs.set(inputKey, r);
    return r;
  }

  /**
   * Makes the maps hold exactly `state`, writing only the difference, in the
   * order described at the top of this file. Throws {@link LbStateError}
   * (nothing written) for a state the maps cannot hold.
   */
  apply(state: LbDesiredState): LbSyncStats {
    const t0 = performance.now();
    if (this.stale) this.reload();
    const plan = this.plan(state);
    const stats: LbSyncStats = {
      ms: 0, maglevComputeMs: 0, frontends: plan.frontends.length, backends: plan.backends.length, maglevTables: plan.tables.size,
      serviceEntriesWritten: 0, serviceEntriesDeleted: 0, backendsWritten: 0, backendsDeleted: 0,
      maglevTablesCreated: 0, maglevTablesUpdated: 0, maglevTablesDeleted: 0, maglevEntriesWritten: 0, affinityDeleted: 0, natDeleted: 0,
    };
    let late: [number, BpfMap<number, number>][] = [];
    try {
      stats.backendsWritten = this.writeBackends(plan);
      late = this.writeTables(plan, stats);
      stats.serviceEntriesWritten = this.writeServices(plan);
      stats.serviceEntriesDeleted = this.deleteServices(plan);
      this.finishTables(plan, late, stats);
      stats.affinityDeleted = this.pruneAffinity(plan);
      stats.natDeleted = this.pruneNat(plan);
      stats.backendsDeleted = this.deleteBackends(plan);
    } catch (err) {
      this.stale = true;
      throw err;
    } finally {
      for (const [, inner] of late) inner.close();
    }
    stats.ms = performance.now() - t0;
    this.last = stats;
    return stats;
  }

  /** Step 1: new and changed backends. Returns how many were written. */
  private writeBackends(plan: Plan): number {
    const changed: BackendRec[] = [];
    for (const r of plan.dirtyBackends) {
      if (r.have === r.want) continue;
      if (r.have && sameBackend(r.have, r.want as LbBackend)) r.have = r.want; // the same object next time
      else changed.push(r);
    }
    if (changed.length > 0) this.backendMap.updateBatch(changed.map((r) => [r.id, r.want as LbBackend] as const));
    for (const r of changed) r.have = r.want;
    return changed.length;
  }

  /**
   * Step 2: tables that are new, grow, or change in place. Returns the new
   * tables that must wait until slot 0 lowered maglev_size (step 5).
   */
  private writeTables(plan: Plan, stats: LbSyncStats): [number, BpfMap<number, number>][] {
    const early: [number, BpfMap<number, number>][] = [];
    const late: [number, BpfMap<number, number>][] = [];
    try {
      for (const [sid, want] of plan.tables) {
        const cur = this.tables.get(sid);
        if (cur && cur.mmapable && cur.size === want.size && cur.signature === want.signature) continue;
        const tc = performance.now();
        const table = maglevBackendTable(want.backends, want.size);
        stats.maglevComputeMs += performance.now() - tc;
        if (cur && cur.mmapable && cur.size === want.size) {
          const fd = mapFdById(cur.mapId);
          try {
            const info = mapInfo(fd);
            if (info.maxEntries !== want.size || info.flags !== LB_MAGLEV_INNER_FLAGS) throw new BpfUsageError(`Maglev table of service ${sid} (map id ${cur.mapId}) changed under the writer`);
            const written = withTableView(fd, want.size, (view) => {
              let n = 0;
              for (let e = 0; e < want.size; e++) {
                const v = table[e] as number;
                if (view[e * TABLE_STRIDE] !== v) {
                  view[e * TABLE_STRIDE] = v;
                  n++;
                }
              }
              return n;
            });
            if (written > 0) stats.maglevTablesUpdated++;
            stats.maglevEntriesWritten += written;
          } finally {
            closeFd(fd);
          }
          cur.signature = want.signature;
          continue;
        }
        const inner = createTable(sid, want.size);
        (cur && cur.size > want.size ? late : early).push([sid, inner]);
        withTableView(inner.fd, want.size, (view) => {
          for (let e = 0; e < want.size; e++) view[e * TABLE_STRIDE] = table[e] as number;
        });
        stats.maglevTablesCreated++;
        stats.maglevEntriesWritten += want.size;
      }
      this.putTables(early, plan);
    } catch (err) {
      for (const [, inner] of late) inner.close();
      throw err;
    } finally {
      for (const [, inner] of early) inner.close();
    }
    return late;
  }

  /** Puts new tables into `lb_maglev` and remembers them. Closes nothing. */
  private putTables(tables: [number, BpfMap<number, number>][], plan: Plan): void {
    updateOuter(this.maglev, tables.map(([sid, inner]) => [sid, inner.fd]));
    for (const [sid, inner] of tables) {
      const want = plan.tables.get(sid) as TableWant;
      this.tables.set(sid, { mapId: inner.info.id, size: want.size, mmapable: true, signature: want.signature });
    }
  }

  /** Step 3: backend slots, then slot 0 entries. Returns entries written. */
  private writeServices(plan: Plan): number {
    let slotCount = 0;
    let headCount = 0;
    for (const r of plan.dirtyFrontends) {
      for (let i = 0; i < r.ids.length; i++) if (r.slots[i] !== r.ids[i]) slotCount++;
      if (r.svc !== r.want && (!r.svc || !sameService(r.svc, r.want as LbService))) headCount++;
    }
    const keys = Buffer.alloc(Math.max(slotCount, headCount) * KEY_SIZE);
    const values = Buffer.alloc(Math.max(slotCount, headCount) * VALUE_SIZE);
    const slotValue: LbService = { backendId: 0, serviceId: 0, count: 0, flags: 0, affinityTimeout: 0, maglevSize: 0 };
    let n = 0;
    if (slotCount > 0) {
      for (const r of plan.dirtyFrontends) {
        for (let i = 0; i < r.ids.length; i++) {
          const id = r.ids[i] as number;
          if (r.slots[i] === id) continue;
          r.key.copy(keys, n * KEY_SIZE);
          keys.writeUInt16LE(i + 1, n * KEY_SIZE + LB_SERVICE_KEY_SLOT_OFFSET);
          slotValue.backendId = id;
          lbService.encode(slotValue, values, n * VALUE_SIZE);
          n++;
        }
      }
      this.services.updateBatchRaw(keys, values, n);
      for (const r of plan.dirtyFrontends) {
        while (r.slots.length < r.ids.length) r.slots.push(-1);
        for (let i = 0; i < r.ids.length; i++) r.slots[i] = r.ids[i] as number;
      }
    }
    let h = 0;
    if (headCount > 0) {
      for (const r of plan.dirtyFrontends) {
        if (r.svc === r.want || (r.svc && sameService(r.svc, r.want as LbService))) continue;
        r.key.copy(keys, h * KEY_SIZE);
        lbService.encode(r.want as LbService, values, h * VALUE_SIZE);
        h++;
      }
      this.services.updateBatchRaw(keys, values, h);
    }
    for (const r of plan.dirtyFrontends) r.svc = r.want;
    return n + h;
  }

  /** Step 4: slot 0 of removed services, then slots past each service's count. Returns entries deleted. */
  private deleteServices(plan: Plan): number {
    const gen = plan.gen;
    const heads: Buffer[] = [];
    const slots: Buffer[] = [];
    for (const r of this.frontends.values()) {
      if (r.gen !== gen && r.svc) heads.push(r.key);
      const count = r.gen === gen ? r.ids.length : 0;
      for (let i = count; i < r.slots.length; i++) {
        if (r.slots[i] === -1) continue;
        const k = Buffer.from(r.key);
        k.writeUInt16LE(i + 1, LB_SERVICE_KEY_SLOT_OFFSET);
        slots.push(k);
      }
    }
    let deleted = 0;
    if (heads.length > 0) {
      deleted += deleteRaw(this.services, Buffer.concat(heads), heads.length);
      for (const r of this.frontends.values()) if (r.gen !== gen) r.svc = undefined;
    }
    if (slots.length > 0) deleted += deleteRaw(this.services, Buffer.concat(slots), slots.length);
    for (const [text, r] of this.frontends) {
      if (r.gen === gen) {
        if (r.slots.length > r.ids.length) r.slots.length = r.ids.length;
        continue;
      }
      this.frontends.delete(text);
      for (const k of r.inputKeys) if (this.frontendInputs.get(k) === r) this.frontendInputs.delete(k);
    }
    return deleted;
  }

  /** Step 5: shrunken tables swapped in (the caller closes them), unwanted tables removed. */
  private finishTables(plan: Plan, late: [number, BpfMap<number, number>][], stats: LbSyncStats): void {
    this.putTables(late, plan);
    const gone = [...this.tables.keys()].filter((sid) => !plan.tables.has(sid));
    deleteOuter(this.maglev, gone);
    for (const sid of gone) this.tables.delete(sid);
    stats.maglevTablesDeleted = gone.length;
  }

  /** Step 6: affinity entries that no longer hold. Scans `lb_affinity` only when a service lost affinity or a backend. */
  private pruneAffinity(plan: Plan): number {
    const before = this.affinity;
    let needed = before === undefined;
    if (before) {
      for (const [sid, ids] of before) {
        const now = plan.affinity.get(sid);
        if (!now || [...ids].some((id) => !now.has(id))) {
          needed = true;
          break;
        }
      }
    }
    this.affinity = undefined;
    let deleted = 0;
    if (needed) {
      const ks = this.affinityMap.info.keySize;
      const vs = this.affinityMap.info.valueSize;
      const dead: Buffer[] = [];
      this.affinityMap.lookupBatchRaw((keys, values, n) => {
        for (let i = 0; i < n; i++) {
          const sid = keys.readUInt32LE(i * ks + 16);
          const backend = values.readUInt32LE(i * vs + 8);
          if (!plan.affinity.get(sid)?.has(backend)) dead.push(Buffer.from(keys.subarray(i * ks, (i + 1) * ks)));
        }
      });
      deleted = deleteRaw(this.affinityMap, Buffer.concat(dead), dead.length);
    }
    this.affinity = plan.affinity;
    return deleted;
  }

  /**
   * Step 6b: per-packet translation entries (`lb_nat`, `lb_rev_nat`) of
   * services that are gone, so a later service reusing an ID or an address
   * meets none of them. Scans both maps only when a service ID went (or after
   * a restart, once).
   */
  private pruneNat(plan: Plan): number {
    const now = new Set<number>();
    for (const f of plan.frontends) if (f.want) now.add(f.want.serviceId);
    const before = this.serviceIds;
    this.serviceIds = now;
    if (this.natMaps.length === 0 || (before && ![...before].some((sid) => !now.has(sid)))) return 0;
    let deleted = 0;
    for (const map of this.natMaps) {
      const ks = map.info.keySize;
      const vs = map.info.valueSize;
      const dead: Buffer[] = [];
      map.lookupBatchRaw((keys, values, n) => {
        for (let i = 0; i < n; i++) {
          if (!now.has(values.readUInt32LE(i * vs + LB_NAT_ENTRY_SERVICE_ID_OFFSET))) dead.push(Buffer.from(keys.subarray(i * ks, (i + 1) * ks)));
        }
      });
      deleted += deleteRaw(map, Buffer.concat(dead), dead.length);
    }
    return deleted;
  }

  /** Step 7: backends nothing names any more. */
  private deleteBackends(plan: Plan): number {
    if (this.backends.size === plan.backends.length) return 0;
    // Usually the previous plan's leftovers; a full sweep finds records of failed plans and of the maps as read.
    let gone = plan.goneBackends;
    if (this.backends.size - plan.backends.length !== gone.length) {
      gone = [];
      for (const r of this.backends.values()) if (r.gen !== plan.gen) gone.push(r);
    }
    const present = gone.filter((r) => r.have !== undefined);
    const keys = Buffer.alloc(present.length * 4);
    present.forEach((r, i) => keys.writeUInt32LE(r.id, i * 4));
    const n = deleteRaw(this.backendMap, keys, present.length);
    for (const r of gone) this.backends.delete(r.id);
    return n;
  }

  /** Closes the map handles; the maps and tables stay pinned. */
  close(): void {
    this.services.close();
    this.backendMap.close();
    this.maglev.close();
    this.affinityMap.close();
    for (const m of this.natMaps) m.close();
  }
}

// ---- listing ---------------------------------------------------------------

/** One frontend as the maps hold it. */
export interface LbServiceView {
  family: 4 | 6;
  addr: string;
  port: number;
  proto: string;
  /** False for backend slots whose slot 0 is missing (should not happen: the writer removes slot 0 first). */
  hasSlot0: boolean;
  serviceId: number;
  count: number;
  flags: LbFrontendFlags;
  affinityTimeout: number;
  maglevSize: number;
  /** Slots 1..count in order: backend IDs (0 where a slot is missing). */
  backends: number[];
  /** Slots beyond count (should be none). */
  extraSlots: { slot: number; backendId: number }[];
}

export interface LbBackendView {
  id: number;
  family: 4 | 6;
  addr: string;
  port: number;
  proto: string;
  terminating: boolean;
}

export interface LbMaglevView {
  serviceId: number;
  /** Kernel ID of the inner array. */
  mapId: number;
  size: number;
  /** Entries per backend ID. */
  shares: Record<number, number>;
  /** The whole table (with `maglevEntries`). */
  entries?: number[];
}

export interface LbAffinityView {
  serviceId: number;
  family: 4 | 6;
  client: string;
  backendId: number;
  lastUsedNs: number;
  /** Seconds since the last use, by CLOCK_MONOTONIC (bpf_ktime_get_ns). */
  idleSeconds: number;
}

/** Everything in the load-balancing maps, as plain objects (`waggle bpf lb list`). */
export interface LbState {
  services: LbServiceView[];
  backends: LbBackendView[];
  maglev: LbMaglevView[];
  affinity: LbAffinityView[];
}

const familyOf = (f: number): 4 | 6 => (f === LB_AF_INET6 ? 6 : 4);

/** Reads the maps pinned in `pinDir`. `maglevEntries`: include every table's entries (M numbers each). */
export function readLbState(pinDir: string, options: { maglevEntries?: boolean } = {}): LbState {
  const services = lbServicesMap(pinDir);
  const backendMap = lbBackendsMap(pinDir);
  const maglev = lbMaglevMap(pinDir);
  const affinityMap = lbAffinityMap(pinDir);
  try {
    const byFrontend = new Map<string, { key: LbServiceKey; svc?: LbService; slots: Map<number, number> }>();
    for (const [k, v] of services.lookupBatch()) {
      const text = `${k.family}|${lbAddrText(k.family, k.addr)}|${k.port}|${k.proto}`;
      let f = byFrontend.get(text);
      if (!f) byFrontend.set(text, (f = { key: k, slots: new Map() }));
      if (k.slot === 0) f.svc = v;
      else f.slots.set(k.slot, v.backendId);
    }
    const serviceViews: LbServiceView[] = [...byFrontend.values()].map(({ key, svc, slots }) => {
      const count = svc?.count ?? 0;
      const flags = svc?.flags ?? 0;
      return {
        family: familyOf(key.family), addr: lbAddrText(key.family, key.addr), port: key.port, proto: lbProtoName(key.proto),
        hasSlot0: svc !== undefined, serviceId: svc?.serviceId ?? 0, count,
        flags: {
          maglev: (flags & LB_FLAGS.MAGLEV) !== 0, affinity: (flags & LB_FLAGS.AFFINITY) !== 0,
          nodePort: (flags & LB_FLAGS.NODEPORT) !== 0, local: (flags & LB_FLAGS.LOCAL) !== 0,
        },
        affinityTimeout: svc?.affinityTimeout ?? 0, maglevSize: svc?.maglevSize ?? 0,
        backends: Array.from({ length: count }, (_, i) => slots.get(i + 1) ?? 0),
        extraSlots: [...slots].filter(([s]) => s > count).sort(([a], [b]) => a - b).map(([slot, backendId]) => ({ slot, backendId })),
      };
    });
    serviceViews.sort((a, b) => a.serviceId - b.serviceId || a.family - b.family || (a.addr < b.addr ? -1 : a.addr > b.addr ? 1 : 0) || a.port - b.port);

    const backendViews: LbBackendView[] = backendMap.lookupBatch().map(([id, b]) => ({
      id, family: familyOf(b.family), addr: lbAddrText(b.family, b.addr), port: b.port, proto: lbProtoName(b.proto),
      terminating: (b.flags & LB_BACKEND_F_TERMINATING) !== 0,
    })).sort((a, b) => a.id - b.id);

    const maglevViews: LbMaglevView[] = maglev.lookupBatch().map(([serviceId, mapId]) => {
      const table = new BpfMap(mapFdById(mapId), u32, u32);
      try {
        const size = table.info.maxEntries;
        const shares: Record<number, number> = {};
        const view: LbMaglevView = { serviceId, mapId, size, shares };
        const read = (entries: ArrayLike<number>, stride: number): void => {
          const all = options.maglevEntries ? new Array<number>(size) : undefined;
          // A table names few backends: count in small arrays, not per entry in an object.
          const ids: number[] = [];
          const counts: number[] = [];
          for (let e = 0; e < size; e++) {
            const id = entries[e * stride] as number;
            let k = ids.indexOf(id);
            if (k < 0) {
              k = ids.length;
              ids.push(id);
              counts.push(0);
            }
            counts[k] = (counts[k] as number) + 1;
            if (all) all[e] = id;
          }
          ids.forEach((id, k) => { shares[id] = counts[k] as number; });
          if (all) view.entries = all;
        };
        if (table.info.flags === LB_MAGLEV_INNER_FLAGS) withTableView(table.fd, size, (v) => read(v, TABLE_STRIDE));
        else read(table.lookupBatch().sort(([a], [b]) => a - b).map(([, v]) => v), 1);
        return view;
      } finally {
        table.close();
      }
    }).sort((a, b) => a.serviceId - b.serviceId);

    const now = Number(process.hrtime.bigint());
    const affinityViews: LbAffinityView[] = affinityMap.lookupBatch().map(([k, v]) => ({
      serviceId: k.serviceId, family: familyOf(k.family), client: lbAddrText(k.family, k.client), backendId: v.backendId,
      lastUsedNs: v.lastUsedNs, idleSeconds: Math.max(0, (now - v.lastUsedNs) / 1e9),
    })).sort((a, b) => a.serviceId - b.serviceId || (a.client < b.client ? -1 : a.client > b.client ? 1 : 0));
    return { services: serviceViews, backends: backendViews, maglev: maglevViews, affinity: affinityViews };
  } finally {
    services.close();
    backendMap.close();
    maglev.close();
    affinityMap.close();
  }
}
