/**
 * The load-balancing map writer (src/datapath/lb-maps.ts) on real maps
 * pinned on a private bpffs from bpf/lb_test.bpf.c, and the contract with the
 * datapath's selection (bpf/lib/lb_select.h): the test object's XDP program
 * runs lb_lookup_service + lb_select under BPF_PROG_TEST_RUN on what the
 * writer wrote. Checked after every syscall the writer makes: the datapath
 * never finds a slot missing, a backend missing or a Maglev table too small.
 */
import { after, beforeEach, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { u32, u64n } from '../bpf/codec.js';
import { BpfMap } from '../bpf/map.js';
import { Collection, readObjectSpec } from '../bpf/object.js';
import type { Program } from '../bpf/program.js';
import { bpfObjectPath } from './objects.js';
import {
  LB_AF_INET, LB_AF_INET6, LB_AFFINITY_MAX, LB_BACKEND_F_TERMINATING, LB_BACKENDS_MAX, LB_FLAGS, LB_MAGLEV_INNER_FLAGS, LB_MAGLEV_MAX,
  LB_MAGLEV_TABLE_MAX, LB_NAT_MAX, LB_SERVICES_MAX, lbAddrBytes, type LbAffinity, type LbAffinityKey,
} from './codecs/lb.js';
import {
  LB_MAPS, LbMapWriter, LbStateError, lbAffinityMap, lbServicesMap, readLbState,
  type LbBackendEntry, type LbDesiredState, type LbFrontend, type LbServiceView, type LbState,
} from './lb-maps.js';
import { lbNatMaps } from './lxc.js';
import type { LbNatEntry, LbNatKey } from './codecs/lb-nat.js';
import { maglevBackendTable, maglevIdentity } from '../service/maglev.js';
import { isRoot, skipUnlessRoot } from '../../test/helpers/root.js';
import { mountTempBpffs, type TempBpffs } from '../../test/helpers/bpffs.js';

const OBJECT = 'lb_test';
const includeDir = join(dirname(dirname(bpfObjectPath('x'))), '..', 'bpf', 'include');

test('the TypeScript constants are lb.h\'s, and the Maglev table flags are lb_select.h\'s template\'s', () => {
  const header = readFileSync(join(includeDir, 'lb.h'), 'utf8');
  const define = (name: string): number => {
    const m = new RegExp(`^#define ${name}\\s+(0x[0-9a-fA-F]+|\\d+)`, 'm').exec(header);
    assert.ok(m, `lb.h defines ${name}`);
    return Number(m[1]);
  };
  assert.equal(LB_SERVICES_MAX, define('LB_SERVICES_MAX'));
  assert.equal(LB_BACKENDS_MAX, define('LB_BACKENDS_MAX'));
  assert.equal(LB_MAGLEV_MAX, define('LB_MAGLEV_MAX'));
  assert.equal(LB_MAGLEV_TABLE_MAX, define('LB_MAGLEV_TABLE_MAX'));
  assert.equal(LB_AFFINITY_MAX, define('LB_AFFINITY_MAX'));
  assert.equal(LB_NAT_MAX, define('LB_NAT_MAX'));
  assert.equal(LB_FLAGS.MAGLEV, define('LB_F_MAGLEV'));
  assert.equal(LB_FLAGS.AFFINITY, define('LB_F_AFFINITY'));
  assert.equal(LB_FLAGS.NODEPORT, define('LB_F_NODEPORT'));
  assert.equal(LB_FLAGS.LOCAL, define('LB_F_LOCAL'));
  assert.equal(LB_BACKEND_F_TERMINATING, define('LB_BACKEND_F_TERMINATING'));
  const spec = readObjectSpec(bpfObjectPath(OBJECT));
  const outer = spec.maps.find((m) => m.name === 'lb_maglev');
  assert.equal(outer?.innerMap?.flags, LB_MAGLEV_INNER_FLAGS);
  assert.equal(outer?.innerMap?.keySize, 4);
  assert.equal(outer?.innerMap?.valueSize, 4);
  for (const name of LB_MAPS) assert.ok(spec.maps.some((m) => m.name === name), `${OBJECT} declares ${name}`);
});

// ---- desired states ---------------------------------------------------------

const off = { maglev: false, affinity: false, nodePort: false, local: false };

function backend(id: number, terminating = false): LbBackendEntry {
  return { id, family: 4, addr: `10.20.${(id >> 8) & 255}.${id & 255}`, port: 8000 + (id % 1000), proto: 'TCP', terminating };
}
function backend6(id: number): LbBackendEntry {
  return { id, family: 6, addr: `fd00:20::${id.toString(16)}`, port: 9000, proto: 'UDP', terminating: false };
}
function frontend(serviceId: number, backends: number[], flags: Partial<LbFrontend['flags']> = {}, extra: Partial<LbFrontend> = {}): LbFrontend {
  return {
    serviceId, family: 4, addr: `10.96.0.${serviceId}`, port: 80, proto: 'TCP', flags: { ...off, ...flags }, affinityTimeout: 0, backends, ...extra,
  };
}

/** What readLbState should say for `state` (the writer's contract, written out independently). */
function expected(state: LbDesiredState, m: number): Omit<LbState, 'affinity'> {
  const byId = new Map(state.backends.map((b) => [b.id, b]));
  const services: LbServiceView[] = state.frontends.map((f) => ({
    family: f.family, addr: f.addr, port: f.port, proto: f.proto, hasSlot0: true, serviceId: f.serviceId, count: f.backends.length,
    flags: { ...f.flags }, affinityTimeout: f.flags.affinity ? f.affinityTimeout : 0, maglevSize: f.flags.maglev ? m : 0,
    backends: [...f.backends], extraSlots: [],
  }));
  services.sort((a, b) => a.serviceId - b.serviceId || a.family - b.family || (a.addr < b.addr ? -1 : a.addr > b.addr ? 1 : 0) || a.port - b.port);
  const tables = new Map<number, number[]>();
  for (const f of state.frontends) {
    if (!f.flags.maglev || f.backends.length === 0) continue;
    const list = f.backends.map((id) => {
      const b = byId.get(id) as LbBackendEntry;
      return { id, identity: maglevIdentity(b.addr, b.port, b.proto) };
    });
    tables.set(f.serviceId, Array.from(maglevBackendTable(list, m)));
  }
  return {
    services,
    backends: state.backends.map((b) => ({ id: b.id, family: b.family, addr: b.addr, port: b.port, proto: b.proto, terminating: b.terminating }))
      .sort((a, b) => a.id - b.id),
    maglev: [...tables].sort(([a], [b]) => a - b).map(([serviceId, entries]) => {
      const shares: Record<number, number> = {};
      for (const id of entries) shares[id] = (shares[id] ?? 0) + 1;
      return { serviceId, mapId: 0, size: m, shares, entries };
    }),
  };
}

function assertMapsHold(pinDir: string, state: LbDesiredState, m: number): LbState {
  const got = readLbState(pinDir, { maglevEntries: true });
  const want = expected(state, m);
  assert.deepEqual(got.services, want.services, 'lb_services');
  assert.deepEqual(got.backends, want.backends, 'lb_backends');
  assert.deepEqual(got.maglev.map((t) => ({ ...t, mapId: 0 })), want.maglev, 'lb_maglev');
  return got;
}

// ---- the datapath's invariants, checked after every syscall of the writer ----

/**
 * What lb_select needs at every instant: slot 0's count slots exist, every
 * slot and table entry names a backend in lb_backends, a Maglev service with
 * backends has a table of at least maglev_size entries.
 */
function datapathInvariants(pinDir: string): string[] {
  const problems: string[] = [];
  const s = readLbState(pinDir, { maglevEntries: true });
  const backends = new Set(s.backends.map((b) => b.id));
  const tables = new Map(s.maglev.map((t) => [t.serviceId, t]));
  for (const f of s.services) {
    const name = `${f.addr}:${f.port}/${f.proto}`;
    if (!f.hasSlot0) continue; // orphan slots are unreachable
    f.backends.forEach((id, i) => {
      if (id === 0) problems.push(`${name}: slot ${i + 1} of ${f.count} missing`);
      else if (!backends.has(id)) problems.push(`${name}: slot ${i + 1} names missing backend ${id}`);
    });
    if (f.flags.maglev && f.count > 0) {
      const t = tables.get(f.serviceId);
      if (!t) problems.push(`${name}: Maglev service ${f.serviceId} without a table`);
      else {
        if (t.size < f.maglevSize) problems.push(`${name}: table of ${t.size} entries, maglev_size ${f.maglevSize}`);
        for (const id of Object.keys(t.shares)) if (!backends.has(Number(id))) problems.push(`${name}: table names missing backend ${id}`);
      }
    }
  }
  return problems;
}

type Patched = 'update' | 'delete' | 'updateBatch' | 'deleteBatch' | 'updateBatchRaw' | 'deleteBatchRaw';

/** Runs `fn` with every map write checked against the datapath's invariants (and counted). */
function checkingEveryWrite<T>(pinDir: string, fn: () => T): { result: T; writes: number; problems: string[] } {
  const proto = BpfMap.prototype as unknown as Record<Patched, (...args: unknown[]) => unknown>;
  const saved = new Map<Patched, (...args: unknown[]) => unknown>();
  const problems: string[] = [];
  let writes = 0;
  let inside = false;
  for (const name of ['update', 'delete', 'updateBatch', 'deleteBatch', 'updateBatchRaw', 'deleteBatchRaw'] as Patched[]) {
    const original = proto[name];
    saved.set(name, original);
    proto[name] = function (this: BpfMap<unknown, unknown>, ...args: unknown[]): unknown {
      const r = original.apply(this, args);
      if (!inside) {
        inside = true;
        try {
          writes++;
          for (const p of datapathInvariants(pinDir)) problems.push(`after ${name} on ${this.name}: ${p}`);
        } finally {
          inside = false;
        }
      }
      return r;
    };
  }
  try {
    return { result: fn(), writes, problems };
  } finally {
    for (const [name, original] of saved) proto[name] = original;
  }
}

// ---- the test program ----------------------------------------------------------

const LB_TEST_OK = 0;
const LB_TEST_NO_SERVICE = 1;
const LB_TEST_NO_BACKEND = 2;

interface Pick { status: number; backendId: number; backendPort: number; backendFlags: number }

function request(f: { family: 4 | 6; addr: string; port: number; proto: 'TCP' | 'UDP' }, client: string, hash: number): Buffer {
  const b = Buffer.alloc(64);
  b.set(lbAddrBytes(f.family, f.addr), 0);
  b.set(lbAddrBytes(f.family, client), 16);
  b.writeUInt32LE(hash >>> 0, 32);
  b.writeUInt16BE(f.port, 36);
  b[38] = f.proto === 'TCP' ? 6 : 17;
  b[39] = f.family === 4 ? LB_AF_INET : LB_AF_INET6;
  return b;
}

describe('LB map writer on pinned maps, and lb_select on what it wrote', () => {
  let fs: TempBpffs | undefined;
  let pinDir = '';
  let coll: Collection | undefined;
  let prog: Program;
  let hits: BpfMap<number, number>;
  let writer: LbMapWriter | undefined;
  const M = 16381;

  function pick(f: LbFrontend, client = f.family === 4 ? '192.0.2.1' : '2001:db8::1', hash = 0, repeat = 1): Pick {
    const r = prog.testRun({ data: request(f, client, hash), repeat });
    assert.equal(r.retval, 2, 'XDP_PASS');
    return { status: r.data.readUInt32LE(40), backendId: r.data.readUInt32LE(44), backendPort: r.data.readUInt16BE(48), backendFlags: r.data[50] as number };
  }
  /** Backend ID → how often it was chosen in `repeat` runs. */
  function spread(f: LbFrontend, repeat: number, client = f.family === 4 ? '192.0.2.1' : '2001:db8::1'): Map<number, number> {
    hits.clear();
    pick(f, client, 0, repeat);
    return new Map(hits.lookupBatch());
  }
  function freshMaps(): void {
    writer?.close();
    writer = undefined;
    hits?.close();
    coll?.close();
    coll = undefined;
    fs?.unmount();
    fs = mountTempBpffs();
    pinDir = join(fs.path, 'maps');
    coll = Collection.load(bpfObjectPath(OBJECT), { pinMaps: LB_MAPS, pinDir });
    // The endpoint programs' translation maps beside them, as in an agent.
    Collection.load(bpfObjectPath('lxc'), { programs: [], pinMaps: ['lb_nat', 'lb_rev_nat'], pinDir }).close();
    prog = coll.program('lb_test_select');
    hits = coll.map('lb_test_hits', u32, u64n);
  }

  beforeEach(() => {
    if (!isRoot) return;
    freshMaps();
    writer = LbMapWriter.open(pinDir, { maglevTableSize: M });
  });
  after(() => {
    writer?.close();
    hits?.close();
    coll?.close();
    fs?.unmount();
  });

  const w = (): LbMapWriter => writer as LbMapWriter;

  test('a full state is written exactly; applying it again, or from a restarted writer, writes nothing', (t) => {
    if (skipUnlessRoot(t)) return;
    const state: LbDesiredState = {
      backends: [backend(1), backend(2), backend(3), backend(4, true), backend(5), backend(6), backend6(7), backend6(8)],
      frontends: [
        frontend(1, [1, 2, 3]),
        frontend(2, [5, 6, 1], { maglev: true }),
        frontend(3, [2, 3], { affinity: true, nodePort: true }, { affinityTimeout: 10800, port: 30080 }),
        frontend(4, [7, 8], { local: true }, { family: 6, addr: 'fd00:96::4', port: 53, proto: 'UDP' }),
        frontend(5, [], { maglev: true }),
      ],
    };
    const { result: stats, problems } = checkingEveryWrite(pinDir, () => w().apply(state));
    assert.deepEqual(problems, []);
    assertMapsHold(pinDir, state, M);
    assert.equal(stats.backendsWritten, 8);
    assert.equal(stats.serviceEntriesWritten, 5 + 3 + 3 + 2 + 2);
    assert.equal(stats.maglevTablesCreated, 1);
    assert.equal(stats.maglevEntriesWritten, M);
    assert.equal(stats.serviceEntriesDeleted + stats.backendsDeleted + stats.maglevTablesDeleted, 0);
    assert.deepEqual(w().lastSync, stats);
    // The raw entries, once, without readLbState.
    const services = lbServicesMap(pinDir);
    try {
      const key = { addr: lbAddrBytes(4, '10.96.0.2'), port: 80, proto: 6, family: LB_AF_INET, slot: 0 };
      assert.deepEqual(services.lookup(key), { backendId: 0, serviceId: 2, count: 3, flags: LB_FLAGS.MAGLEV, affinityTimeout: 0, maglevSize: M });
      assert.deepEqual(services.lookup({ ...key, slot: 3 }), { backendId: 1, serviceId: 0, count: 0, flags: 0, affinityTimeout: 0, maglevSize: 0 });
      assert.equal(services.lookup({ ...key, slot: 4 }), undefined);
    } finally {
      services.close();
    }

    const again = w().apply(state);
    assert.equal(again.serviceEntriesWritten + again.backendsWritten + again.maglevEntriesWritten + again.maglevTablesCreated, 0);
    assert.equal(again.maglevComputeMs, 0, 'unchanged tables are not even computed');
    w().close();
    writer = LbMapWriter.open(pinDir, { maglevTableSize: M });
    const restarted = w().apply(state);
    assert.equal(restarted.serviceEntriesWritten + restarted.backendsWritten + restarted.maglevEntriesWritten + restarted.maglevTablesCreated, 0);
    assert.equal(restarted.serviceEntriesDeleted + restarted.backendsDeleted + restarted.maglevTablesDeleted, 0);
    assertMapsHold(pinDir, state, M);
    t.diagnostic(`first apply ${stats.ms.toFixed(2)} ms, again ${again.ms.toFixed(2)} ms, after a restart ${restarted.ms.toFixed(2)} ms`);
  });

  test('per-packet translation entries of a removed service go; those of services that stay are kept', (t) => {
    if (skipUnlessRoot(t)) return;
    const state: LbDesiredState = { backends: [backend(1), backend(2)], frontends: [frontend(1, [1]), frontend(2, [2])] };
    w().apply(state);
    const { nat, revNat } = lbNatMaps(pinDir);
    try {
      const key = (sport: number): LbNatKey => ({ saddr: lbAddrBytes(4, '10.0.0.9'), daddr: lbAddrBytes(4, '10.96.0.1'), sport, dport: 80, proto: 6, family: LB_AF_INET });
      const entry = (serviceId: number): LbNatEntry => ({ addr: lbAddrBytes(4, '10.0.1.1'), port: 8080, flags: 0, backendId: serviceId, serviceId, ifindex: 0 });
      for (const m of [nat, revNat]) {
        m.update(key(1000), entry(1));
        m.update(key(2000), entry(2));
      }
      assert.equal(w().apply(state).natDeleted, 0, 'nothing removed, nothing scanned away');
      const stats = w().apply({ backends: [backend(1)], frontends: [frontend(1, [1])] });
      assert.equal(stats.natDeleted, 2);
      for (const m of [nat, revNat]) {
        assert.equal(m.lookup(key(1000))?.serviceId, 1, 'the remaining service keeps its connections');
        assert.equal(m.lookup(key(2000)), undefined, 'the removed service\'s entry is gone');
      }
    } finally {
      nat.close();
      revNat.close();
    }
  });

  test('changes leave exactly the desired entries, and the datapath never sees a half-written service', (t) => {
    if (skipUnlessRoot(t)) return;
    const all = Array.from({ length: 12 }, (_, i) => backend(i + 1));
    const steps: [string, LbDesiredState][] = [];
    let state: LbDesiredState = {
      backends: all.slice(0, 8),
      frontends: [frontend(1, [1, 2, 3]), frontend(2, [4, 5, 6], { maglev: true }), frontend(3, [7, 8], { affinity: true }, { affinityTimeout: 60 })],
    };
    steps.push(['initial', state]);
    const next = (name: string, change: (s: LbDesiredState) => LbDesiredState): void => {
      state = change(state);
      steps.push([name, state]);
    };
    const edit = (s: LbDesiredState, sid: number, f: (fe: LbFrontend) => LbFrontend): LbDesiredState =>
      ({ ...s, frontends: s.frontends.map((fe) => (fe.serviceId === sid ? f(fe) : fe)) });
    next('backend added to a random and a Maglev service', (s) => edit(edit({ ...s, backends: [...s.backends, all[8] as LbBackendEntry] }, 1, (f) => ({ ...f, backends: [...f.backends, 9] })), 2, (f) => ({ ...f, backends: [...f.backends, 9] })));
    next('backend removed from both (slot count shrinks)', (s) => edit(edit({ ...s, backends: s.backends.filter((b) => b.id !== 2) }, 1, (f) => ({ ...f, backends: f.backends.filter((id) => id !== 2) })), 2, (f) => f));
    next('backend terminating: out of the slots and the table, kept in lb_backends', (s) => edit(edit({ ...s, backends: s.backends.map((b) => (b.id === 5 ? { ...b, terminating: true } : b)) }, 2, (f) => ({ ...f, backends: f.backends.filter((id) => id !== 5) })), 1, (f) => f));
    next('terminating backend gone', (s) => ({ ...s, backends: s.backends.filter((b) => b.id !== 5) }));
    next('Maglev off', (s) => edit(s, 2, (f) => ({ ...f, flags: { ...f.flags, maglev: false } })));
    next('Maglev on again, affinity on', (s) => edit(s, 2, (f) => ({ ...f, flags: { ...f.flags, maglev: true, affinity: true }, affinityTimeout: 30 })));
    next('affinity off', (s) => edit(s, 3, (f) => ({ ...f, flags: { ...f.flags, affinity: false } })));
    next('slots reordered and replaced', (s) => edit({ ...s, backends: [...s.backends, all[9] as LbBackendEntry, all[10] as LbBackendEntry] }, 1, (f) => ({ ...f, backends: [10, 11, ...[...f.backends].reverse()] })));
    next('service removed (its only backends go too)', (s) => ({ frontends: s.frontends.filter((f) => f.serviceId !== 3), backends: s.backends.filter((b) => b.id !== 7 && b.id !== 8) }));
    next('Maglev service removed, random service emptied', (s) => {
      const emptied = edit(s, 1, (f) => ({ ...f, backends: [] }));
      return { ...emptied, frontends: emptied.frontends.filter((f) => f.serviceId !== 2) };
    });
    next('backend address changed under the same ID', (s) => ({ ...s, backends: s.backends.map((b) => (b.id === 1 ? { ...b, port: 1234 } : b)) }));
    next('everything removed', () => ({ frontends: [], backends: [] }));
    for (const [name, s] of steps) {
      const { result: stats, problems, writes } = checkingEveryWrite(pinDir, () => w().apply(s));
      assert.deepEqual(problems, [], name);
      assertMapsHold(pinDir, s, M);
      t.diagnostic(`${name}: ${writes} map writes; services +${stats.serviceEntriesWritten}/−${stats.serviceEntriesDeleted}, backends +${stats.backendsWritten}/−${stats.backendsDeleted}, `
        + `tables created ${stats.maglevTablesCreated} updated ${stats.maglevTablesUpdated} deleted ${stats.maglevTablesDeleted} (${stats.maglevEntriesWritten} entries), ${stats.ms.toFixed(2)} ms`);
    }
    const empty = readLbState(pinDir);
    assert.deepEqual(empty, { services: [], backends: [], maglev: [], affinity: [] });
  });

  test('ordering: grown slots before slot 0, shrunk slots after it, new backends first, removed backends last', (t) => {
    if (skipUnlessRoot(t)) return;
    w().apply({ backends: [backend(1), backend(2), backend(3)], frontends: [frontend(1, [1, 2, 3])] });
    const log: string[] = [];
    const proto = BpfMap.prototype as unknown as Record<string, (...args: unknown[]) => unknown>;
    const originals = { updateBatchRaw: proto.updateBatchRaw, deleteBatchRaw: proto.deleteBatchRaw } as Record<string, (...args: unknown[]) => unknown>;
    for (const name of Object.keys(originals)) {
      proto[name] = function (this: BpfMap<unknown, unknown>, ...args: unknown[]): unknown {
        const [keys, second, third] = args as [Buffer, Buffer | number, number | undefined];
        const count = typeof second === 'number' ? second : third as number;
        const what: string[] = [];
        for (let i = 0; i < count; i++) {
          if (this.name === 'lb_services') what.push(`slot${keys.readUInt16LE(i * 24 + 20)}`);
          else if (this.name === 'lb_backends') what.push(`b${keys.readUInt32LE(i * 4)}`);
        }
        log.push(`${this.name} ${name.startsWith('update') ? 'write' : 'delete'} ${what.join(',')}`);
        return (originals[name] as (...a: unknown[]) => unknown).apply(this, args);
      };
    }
    try {
      log.length = 0;
      w().apply({ backends: [backend(1), backend(2), backend(3), backend(4), backend(5)], frontends: [frontend(1, [1, 2, 3, 4, 5])] });
      assert.deepEqual(log, ['lb_backends write b4,b5', 'lb_services write slot4,slot5', 'lb_services write slot0']);
      log.length = 0;
      w().apply({ backends: [backend(1), backend(2)], frontends: [frontend(1, [1, 2])] });
      assert.deepEqual(log, ['lb_services write slot0', 'lb_services delete slot3,slot4,slot5', 'lb_backends delete b3,b4,b5']);
      log.length = 0;
      w().apply({ backends: [], frontends: [] });
      assert.deepEqual(log, ['lb_services delete slot0', 'lb_services delete slot1,slot2', 'lb_backends delete b1,b2']);
    } finally {
      Object.assign(proto, originals);
    }
    t.diagnostic('writes in order: backends, slots, slot 0, (deletes) slot 0, slots, backends');
  });

  test('Maglev table size: a new size swaps tables in the safe order; the size must be a prime', (t) => {
    if (skipUnlessRoot(t)) return;
    const state: LbDesiredState = { backends: [backend(1), backend(2), backend(3)], frontends: [frontend(1, [1, 2, 3], { maglev: true })] };
    w().apply(state);
    const firstId = readLbState(pinDir).maglev[0]?.mapId;
    for (const size of [1021, 65537, LB_MAGLEV_TABLE_MAX, 7]) {
      w().close();
      writer = LbMapWriter.open(pinDir, { maglevTableSize: size });
      const { result: stats, problems } = checkingEveryWrite(pinDir, () => w().apply(state));
      assert.deepEqual(problems, [], `to ${size}`);
      assert.equal(stats.maglevTablesCreated, 1);
      const s = assertMapsHold(pinDir, state, size);
      assert.notEqual(s.maglev[0]?.mapId, firstId);
    }
    assert.throws(() => LbMapWriter.open(pinDir, { maglevTableSize: 16383 }), /must be a prime/);
    assert.throws(() => LbMapWriter.open(pinDir, { maglevTableSize: 262147 }), /2\.\.131071/);
  });

  test('bad states are rejected naming the field, and nothing is written', (t) => {
    if (skipUnlessRoot(t)) return;
    const good: LbDesiredState = { backends: [backend(1), backend(2)], frontends: [frontend(1, [1, 2])] };
    w().apply(good);
    const bad: [string, LbDesiredState, RegExp][] = [
      ['unknown backend', { ...good, frontends: [frontend(1, [1, 3])] }, /^frontends\[0\]\.backends\[1\]: backend 3 is not in backends/],
      ['duplicate slot', { ...good, frontends: [frontend(1, [1, 1])] }, /frontends\[0\]\.backends\[1\]: backend 1 appears twice/],
      ['bad port', { ...good, frontends: [frontend(1, [1], {}, { port: 0 })] }, /frontends\[0\]\.port: must be an integer in 1\.\.65535/],
      ['bad address', { ...good, frontends: [frontend(1, [1], {}, { addr: '10.96.0.300' })] }, /frontends\[0\]\.addr: must be an IPv4 address/],
      ['family mismatch', { ...good, frontends: [frontend(1, [1], {}, { family: 6, addr: 'fd00::1' })] }, /backend 1 is IPv4, the frontend IPv6/],
      ['duplicate frontend', { ...good, frontends: [frontend(1, [1]), frontend(1, [2])] }, /frontends\[1\]: frontend 10\.96\.0\.1 port 80\/TCP appears twice/],
      ['service ID 0', { ...good, frontends: [frontend(0, [1], {}, { addr: '10.96.0.9' })] }, /frontends\[0\]\.serviceId/],
      ['affinity without timeout', { ...good, frontends: [frontend(1, [1], { affinity: true })] }, /frontends\[0\]\.affinityTimeout/],
      ['duplicate backend ID', { ...good, backends: [backend(1), backend(1)] }, /backends\[1\]\.id: backend 1 appears twice/],
      ['bad protocol', { ...good, backends: [{ ...backend(1), proto: 'SCTP' as 'TCP' }, backend(2)] }, /backends\[0\]\.proto/],
      ['same address twice in a Maglev service', { backends: [backend(1), { ...backend(1), id: 2 }], frontends: [frontend(1, [1, 2], { maglev: true })] }, /backends 1 and 2 are the same address/],
      ['one service ID, two Maglev tables', { ...good, frontends: [frontend(1, [1], { maglev: true }), frontend(1, [2], { maglev: true }, { port: 81 })] }, /frontends\[1\]\.backends: service 1 has a Maglev table with other backends/],
    ];
    for (const [name, state, message] of bad) {
      assert.throws(() => w().apply(state), (e: unknown) => e instanceof LbStateError && message.test(e.message), name);
    }
    assertMapsHold(pinDir, good, M);
    // Two frontends of one service may share a table when their backends agree.
    const shared: LbDesiredState = { ...good, frontends: [frontend(1, [1, 2], { maglev: true }), frontend(1, [2, 1], { maglev: true, nodePort: true }, { port: 30001 })] };
    w().apply(shared);
    assertMapsHold(pinDir, shared, M);
  });

  test('datapath: random selection spreads over the slots and never picks a terminating backend', (t) => {
    if (skipUnlessRoot(t)) return;
    const f4 = frontend(1, [1, 2, 3, 5]);
    const f6 = frontend(2, [7, 8], {}, { family: 6, addr: 'fd00:96::2', port: 53, proto: 'UDP' });
    w().apply({ backends: [backend(1), backend(2), backend(3), backend(4, true), backend(5), backend6(7), backend6(8)], frontends: [f4, f6] });
    const runs = 20000;
    const got = spread(f4, runs);
    assert.deepEqual([...got.keys()].sort(), [1, 2, 3, 5]);
    for (const [id, n] of got) assert.ok(Math.abs(n / runs - 0.25) < 0.02, `backend ${id}: ${n} of ${runs}`);
    const one = pick(f4);
    assert.equal(one.status, LB_TEST_OK);
    assert.equal(one.backendPort, 8000 + one.backendId);
    const got6 = spread(f6, 4000);
    assert.deepEqual([...got6.keys()].sort(), [7, 8]);
    for (const [, n] of got6) assert.ok(Math.abs(n / 4000 - 0.5) < 0.04);
    assert.equal(pick({ ...f4, port: 81 }).status, LB_TEST_NO_SERVICE);
    // One backend removed: its slot goes, the others share its load.
    w().apply({ backends: [backend(1), backend(2), backend(3)], frontends: [frontend(1, [1, 3, 2])] });
    const after3 = spread(f4, runs);
    assert.deepEqual([...after3.keys()].sort(), [1, 2, 3]);
    for (const [, n] of after3) assert.ok(Math.abs(n / runs - 1 / 3) < 0.02);
    w().apply({ backends: [backend(1)], frontends: [frontend(1, [])] });
    assert.equal(pick(f4).status, LB_TEST_NO_BACKEND);
    t.diagnostic(`random spread over 4 backends in ${runs} runs: ${[...got].map(([id, n]) => `${id}:${n}`).join(' ')}`);
  });

  test('datapath: a Maglev service picks table[hash % M], the table the writer computed, also after a change', (t) => {
    if (skipUnlessRoot(t)) return;
    const bs = Array.from({ length: 10 }, (_, i) => backend(i + 1));
    const state: LbDesiredState = { backends: bs, frontends: [frontend(1, bs.map((b) => b.id), { maglev: true })] };
    w().apply(state);
    const tableOf = (ids: number[]): Uint32Array => maglevBackendTable(ids.map((id) => ({ id, identity: maglevIdentity(backend(id).addr, backend(id).port, 'TCP') })), M);
    let table = tableOf(bs.map((b) => b.id));
    const f = state.frontends[0] as LbFrontend;
    const hashes = Array.from({ length: 300 }, (_, i) => Math.imul(i + 1, 0x9e3779b1) >>> 0);
    for (const h of hashes) assert.equal(pick(f, '192.0.2.1', h).backendId, table[h % M], `hash ${h}`);
    // Backend 4 terminating: its entries go to the others, the rest stay (consistent hashing).
    const before = hashes.map((h) => pick(f, '192.0.2.1', h).backendId);
    w().apply({ backends: bs.map((b) => (b.id === 4 ? { ...b, terminating: true } : b)), frontends: [{ ...f, backends: bs.map((b) => b.id).filter((id) => id !== 4) }] });
    const stats = w().lastSync;
    assert.equal(stats?.maglevTablesUpdated, 1, 'updated in place');
    assert.equal(stats?.maglevTablesCreated, 0);
    table = tableOf(bs.map((b) => b.id).filter((id) => id !== 4));
    let kept = 0, wasFour = 0;
    hashes.forEach((h, i) => {
      const now = pick(f, '192.0.2.1', h).backendId;
      assert.equal(now, table[h % M]);
      assert.notEqual(now, 4);
      if (before[i] === 4) wasFour++;
      else if (now === before[i]) kept++;
    });
    assert.ok(kept >= 0.85 * (hashes.length - wasFour), `${kept} of ${hashes.length - wasFour} connections not on backend 4 stayed`);
    t.diagnostic(`after backend 4 left: ${kept} of ${hashes.length - wasFour} other hashes kept their backend; ${stats?.maglevEntriesWritten} of ${M} entries rewritten in place`);
  });

  test('datapath: session affinity holds a client to its backend, and is dropped when that backend leaves the service', (t) => {
    if (skipUnlessRoot(t)) return;
    const f = frontend(1, [1, 2, 3], { affinity: true }, { affinityTimeout: 600 });
    w().apply({ backends: [backend(1), backend(2), backend(3)], frontends: [f] });
    const got = spread(f, 500, '192.0.2.7');
    assert.equal(got.size, 1, 'one client, one backend');
    const [chosen] = [...got.keys()] as [number];
    const other = spread(f, 3000, '198.51.100.0'); // another client is held too
    assert.equal(other.size, 1);
    const aff = readLbState(pinDir).affinity;
    assert.deepEqual(aff.map((a) => [a.serviceId, a.client, a.backendId]).sort(), [[1, '192.0.2.7', chosen], [1, '198.51.100.0', [...other.keys()][0]]].sort());
    assert.ok(aff.every((a) => a.idleSeconds < 5));
    // Many clients still spread.
    hits.clear();
    for (let c = 0; c < 600; c++) pick(f, `203.0.113.${c % 250}`, 0);
    assert.equal(hits.lookupBatch().length, 3);
    // The chosen backend terminates: the writer drops the affinity entries naming it; new picks avoid it.
    const rest = [1, 2, 3].filter((id) => id !== chosen);
    const stats = w().apply({ backends: [1, 2, 3].map((id) => backend(id, id === chosen)), frontends: [{ ...f, backends: rest }] });
    assert.ok(stats.affinityDeleted >= 1);
    assert.ok(readLbState(pinDir).affinity.every((a) => a.backendId !== chosen));
    const again = spread(f, 300, '192.0.2.7');
    assert.equal(again.size, 1);
    assert.ok(rest.includes([...again.keys()][0] as number));
    // The datapath itself skips an affinity entry naming a terminating backend.
    const am = lbAffinityMap(pinDir);
    try {
      const key: LbAffinityKey = { client: lbAddrBytes(4, '192.0.2.99'), serviceId: 1, family: LB_AF_INET };
      const value: LbAffinity = { lastUsedNs: Number(process.hrtime.bigint()), backendId: chosen };
      am.update(key, value);
      assert.notEqual(pick(f, '192.0.2.99').backendId, chosen);
    } finally {
      am.close();
    }
    // Affinity off: every entry of the service goes.
    const off2 = w().apply({ backends: [1, 2, 3].map((id) => backend(id, id === chosen)), frontends: [{ ...f, flags: { ...f.flags, affinity: false }, backends: rest }] });
    assert.ok(off2.affinityDeleted >= 1);
    assert.deepEqual(readLbState(pinDir).affinity, []);
    t.diagnostic(`client held to backend ${chosen} over 500 connections; ${stats.affinityDeleted} affinity entries dropped when it terminated`);
  });

  test('scale: 10,000 services × 10 backends (random selection), then one backend change', (t) => {
    if (skipUnlessRoot(t)) return;
    const services = 10000, per = 10;
    const backends: LbBackendEntry[] = [];
    const frontends: LbFrontend[] = [];
    for (let s = 0; s < services; s++) {
      const ids: number[] = [];
      for (let b = 0; b < per; b++) {
        const id = s * per + b + 1;
        backends.push({ id, family: 4, addr: `10.${(id >> 16) & 255}.${(id >> 8) & 255}.${id & 255}`, port: 8080, proto: 'TCP', terminating: false });
        ids.push(id);
      }
      frontends.push({ serviceId: s + 1, family: 4, addr: `172.16.${s >> 8}.${s & 255}`, port: 80, proto: 'TCP', flags: { ...off }, affinityTimeout: 0, backends: ids });
    }
    const state: LbDesiredState = { frontends, backends };
    const first = w().apply(state);
    assert.equal(first.serviceEntriesWritten, services * (per + 1));
    assert.equal(first.backendsWritten, services * per);
    // One backend replaced in one service at a time (a pod restarted: new ID and address), ten times:
    // the first few run while the JIT and the GC still work off the first apply.
    let current = state;
    const changes: number[] = [];
    for (let k = 0; k < 10; k++) {
      const service = 501 + 1000 * k;
      const old = (service - 1) * per + 1;
      const newId = services * per + 1 + k;
      current = {
        backends: [...current.backends.filter((b) => b.id !== old), { id: newId, family: 4, addr: `10.250.0.${k + 1}`, port: 8080, proto: 'TCP', terminating: false }],
        frontends: current.frontends.map((f) => (f.serviceId === service ? { ...f, backends: f.backends.map((id) => (id === old ? newId : id)) } : f)),
      };
      const change = w().apply(current);
      assert.equal(change.serviceEntriesWritten, 1);
      assert.equal(change.backendsWritten, 1);
      assert.equal(change.backendsDeleted, 1);
      assert.equal(change.serviceEntriesDeleted, 0);
      changes.push(change.ms);
    }
    const noop = w().apply(current);
    assert.equal(noop.serviceEntriesWritten + noop.backendsWritten, 0);
    w().close();
    const t0 = performance.now();
    writer = LbMapWriter.open(pinDir, { maglevTableSize: M });
    const openMs = performance.now() - t0;
    const restarted = w().apply(current);
    assert.equal(restarted.serviceEntriesWritten + restarted.backendsWritten + restarted.serviceEntriesDeleted + restarted.backendsDeleted, 0);
    const f = current.frontends[500] as LbFrontend;
    assert.deepEqual([...spread(f, 2000).keys()].sort((a, b) => a - b), [...f.backends].sort((a, b) => a - b));
    t.diagnostic(`10,000 services × 10 backends: first apply ${first.ms.toFixed(0)} ms (${first.serviceEntriesWritten} service entries, ${first.backendsWritten} backends); `
      + `one backend change ${changes.map((ms) => ms.toFixed(1)).join(', ')} ms (ten in a row; median of the last five ${[...changes.slice(5)].sort((a, b) => a - b)[2]?.toFixed(1)} ms); no-op apply ${noop.ms.toFixed(1)} ms; `
      + `restart: writer open (reads the maps) ${openMs.toFixed(0)} ms + first apply ${restarted.ms.toFixed(0)} ms (nothing written)`);
  });

  test('scale: 1,000 Maglev services × 10 backends, then one backend change', (t) => {
    if (skipUnlessRoot(t)) return;
    const services = 1000, per = 10;
    const backends: LbBackendEntry[] = [];
    const frontends: LbFrontend[] = [];
    for (let s = 0; s < services; s++) {
      const ids = Array.from({ length: per }, (_, b) => s * per + b + 1);
      for (const id of ids) backends.push({ id, family: 4, addr: `10.${(id >> 16) & 255}.${(id >> 8) & 255}.${id & 255}`, port: 8080, proto: 'TCP', terminating: false });
      frontends.push({ serviceId: s + 1, family: 4, addr: `172.17.${s >> 8}.${s & 255}`, port: 443, proto: 'TCP', flags: { ...off, maglev: true }, affinityTimeout: 0, backends: ids });
    }
    const first = w().apply({ frontends, backends });
    assert.equal(first.maglevTablesCreated, services);
    const changed: LbDesiredState = {
      backends: backends.filter((b) => b.id !== 77),
      frontends: frontends.map((f) => (f.serviceId === 8 ? { ...f, backends: f.backends.filter((id) => id !== 77) } : f)),
    };
    const change = w().apply(changed);
    assert.equal(change.maglevTablesUpdated, 1);
    w().close();
    writer = LbMapWriter.open(pinDir, { maglevTableSize: M });
    const restarted = w().apply(changed);
    assert.equal(restarted.maglevEntriesWritten, 0);
    assert.equal(restarted.maglevTablesCreated, 0);
    t.diagnostic(`1,000 Maglev services (M=${M}): first apply ${first.ms.toFixed(0)} ms (computing ${first.maglevComputeMs.toFixed(0)} ms); `
      + `one backend change ${change.ms.toFixed(1)} ms (${change.maglevEntriesWritten} entries rewritten); after a restart ${restarted.ms.toFixed(0)} ms (recomputes and compares every table)`);
  });
});
