import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { BpfMap, PerCpuMap, sumValues } from './map.js';
import { Collection } from './object.js';
import { struct, u32, u64, u64n } from './codec.js';
import { BpfSyscallError, BpfUsageError } from './errors.js';
import { MapType } from './types.js';
import { numPossibleCpus } from './sys.js';
import { bpfObjectPath } from '../datapath/objects.js';
import { skipUnlessRoot } from '../../test/helpers/root.js';

const toClose: { close(): void }[] = [];
after(() => { for (const c of toClose.reverse()) c.close(); });
function keep<T extends { close(): void }>(x: T): T { toClose.push(x); return x; }

interface LpmKey { prefixlen: number; addr: string }
const lpmKey = struct<LpmKey>('lpm_v4_key', 8, {
  prefixlen: { offset: 0, codec: u32 },
  addr: { offset: 4, codec: { size: 4, encode: (v: string, b: Buffer, o: number) => b.set(v.split('.').map(Number), o), decode: (b: Buffer, o: number) => [...b.subarray(o, o + 4)].join('.') } },
});

describe('typed maps on the kernel', () => {
  for (const type of [MapType.Hash, MapType.LruHash] as const) {
    test(`${MapType[type]}: update modes, lookup, delete, iterate thousands`, (t) => {
      if (skipUnlessRoot(t)) return;
      const m = keep(BpfMap.create({ name: 't_hash', type, keySize: 4, valueSize: 8, maxEntries: 8192, flags: 0 }, u32, u64));
      assert.equal(m.lookup(1), undefined);
      m.update(1, 10n, 'noexist');
      assert.equal(m.lookup(1), 10n);
      assert.throws(() => m.update(1, 11n, 'noexist'), (e: unknown) => e instanceof BpfSyscallError && e.errnoName === 'EEXIST' && /t_hash/.test(e.message));
      m.update(1, 12n, 'exist');
      assert.equal(m.lookup(1), 12n);
      assert.throws(() => m.update(2, 1n, 'exist'), (e: unknown) => e instanceof BpfSyscallError && e.errnoName === 'ENOENT');
      assert.equal(m.delete(1), true);
      assert.equal(m.delete(1), false);
      for (let i = 0; i < 5000; i++) m.update(i, BigInt(i) * 3n);
      const seen = new Map<number, bigint>();
      for (const [k, v] of m.entries()) seen.set(k, v);
      assert.equal(seen.size, 5000);
      for (let i = 0; i < 5000; i++) assert.equal(seen.get(i), BigInt(i) * 3n);
      assert.equal(m.count(), 5000);
    });
  }

  test('hash: batch update, lookup and delete', (t) => {
    if (skipUnlessRoot(t)) return;
    const m = keep(BpfMap.create({ name: 't_batch', type: MapType.Hash, keySize: 4, valueSize: 8, maxEntries: 65536, flags: 0 }, u32, u64n));
    const entries: [number, number][] = Array.from({ length: 20000 }, (_, i) => [i, i * 7]);
    assert.equal(m.updateBatch(entries), 20000);
    assert.equal(m.lookup(19999), 19999 * 7);
    const all = m.lookupBatch(1000);
    assert.equal(all.length, 20000);
    assert.deepEqual(new Map(all).get(12345), 12345 * 7);
    assert.equal(m.deleteBatch(entries.slice(0, 15000).map(([k]) => k)), 15000);
    assert.equal(m.count(), 5000);
    assert.equal(m.lookup(0), undefined);
    assert.throws(() => m.updateBatch([[1, 1], [2, 2]], 'exist'), /batch update in map t_batch/);
    let drained = 0;
    m.lookupBatchRaw((_k, _v, n) => { drained += n; }, 512, true);
    assert.equal(drained, 5000);
    assert.equal(m.count(), 0);
  });

  test('array: fixed keys, out-of-range key fails with a named errno', (t) => {
    if (skipUnlessRoot(t)) return;
    const m = keep(BpfMap.create({ name: 't_array', type: MapType.Array, keySize: 4, valueSize: 8, maxEntries: 16, flags: 0 }, u32, u64n));
    assert.equal(m.lookup(3), 0);
    m.update(3, 99);
    assert.equal(m.lookup(3), 99);
    assert.equal(m.lookup(16), undefined);
    assert.throws(() => m.update(16, 1), (e: unknown) => e instanceof BpfSyscallError && e.errnoName === 'E2BIG');
    assert.equal(m.count(), 16);
    assert.equal(m.lookupBatch().length, 16);
    assert.throws(() => m.clear(), BpfUsageError);
  });

  for (const type of [MapType.PerCpuArray, MapType.PerCpuHash, MapType.LruPerCpuHash] as const) {
    test(`${MapType[type]}: one value per possible CPU, summed on request`, (t) => {
      if (skipUnlessRoot(t)) return;
      const m = keep(PerCpuMap.create({ name: 't_percpu', type, keySize: 4, valueSize: 8, maxEntries: 64, flags: 0 }, u32, u64n));
      const cpus = numPossibleCpus();
      assert.equal(m.cpus, cpus);
      const values = Array.from({ length: cpus }, (_, i) => (i + 1) * 10);
      m.update(5, values);
      assert.deepEqual(m.lookup(5), values);
      assert.equal(m.lookupSum(5), values.reduce((a, b) => a + b, 0));
      m.updateAll(6, 2);
      assert.equal(m.lookupSum(6), 2 * cpus);
      assert.throws(() => m.update(7, [1]), /expected \d+ per-CPU values/);
      const batch = m.lookupBatch();
      assert.ok(batch.some(([k, v]) => k === 5 && v.length === cpus));
    });
  }

  test('a per-CPU map cannot be opened as a plain map, nor with a wrong codec size', (t) => {
    if (skipUnlessRoot(t)) return;
    const m = keep(PerCpuMap.create({ name: 't_pc2', type: MapType.PerCpuArray, keySize: 4, valueSize: 8, maxEntries: 4, flags: 0 }, u32, u64n));
    assert.throws(() => new BpfMap(m.fd, u32, u64n), /is per-CPU: open it as a PerCpuMap/);
    const h = keep(BpfMap.create({ name: 't_h2', type: MapType.Hash, keySize: 4, valueSize: 8, maxEntries: 4, flags: 0 }, u32, u64n));
    assert.throws(() => BpfMap.create({ name: 't_h3', type: MapType.Hash, keySize: 8, valueSize: 8, maxEntries: 4, flags: 0 }, u32, u64n), /key codec is 4 bytes, the map's key is 8/);
    assert.ok(h.fd > 0);
  });

  test('sumValues adds numbers, bigints and objects member-wise', () => {
    assert.equal(sumValues([1, 2, 3]), 6);
    assert.equal(sumValues([1n, 2n]), 3n);
    assert.deepEqual(sumValues([{ a: 1, b: 2n }, { a: 3, b: 4n }]), { a: 4, b: 6n });
    assert.throws(() => sumValues([]), BpfUsageError);
  });

  describe('maps declared in an object', () => {
    let c: Collection | undefined;
    const load = (): Collection => { c ??= keep(Collection.load(bpfObjectPath('maps_test'))); return c; };

    test('LPM trie: longest prefix wins, and the program sees it', (t) => {
      if (skipUnlessRoot(t)) return;
      const lpm = keep(load().map('lpm_map', lpmKey, u32));
      lpm.update({ prefixlen: 8, addr: '10.0.0.0' }, 1);
      lpm.update({ prefixlen: 16, addr: '10.1.0.0' }, 2);
      lpm.update({ prefixlen: 24, addr: '10.1.2.0' }, 3);
      assert.equal(lpm.lookup({ prefixlen: 32, addr: '10.1.2.3' }), 3);
      assert.equal(lpm.lookup({ prefixlen: 32, addr: '10.1.9.9' }), 2);
      assert.equal(lpm.lookup({ prefixlen: 32, addr: '10.200.0.1' }), 1);
      assert.equal(lpm.lookup({ prefixlen: 32, addr: '11.0.0.1' }), undefined);
      assert.equal(lpm.count(), 3);
      const frame = Buffer.alloc(64);
      frame.writeUInt16BE(0x0800, 12);
      Buffer.from([10, 1, 2, 77]).copy(frame, 26);
      assert.equal(load().program('lpm_lookup').testRun({ data: frame }).retval, 3);
      Buffer.from([10, 1, 7, 7]).copy(frame, 26);
      assert.equal(load().program('lpm_lookup').testRun({ data: frame }).retval, 2);
    });

    test('prog array: a tail call reaches the program stored in it', (t) => {
      if (skipUnlessRoot(t)) return;
      const coll = load();
      const progs = keep(coll.map('prog_array', u32, u32));
      const lpm = keep(coll.map('lpm_map', lpmKey, u32));
      lpm.clear();
      const frame = Buffer.alloc(64);
      frame.writeUInt16BE(0x0800, 12);
      assert.equal(coll.program('lpm_lookup').testRun({ data: frame }).retval, 0xffffffff, 'no tail call target: TC_ACT_UNSPEC');
      progs.update(0, coll.program('tail_target').fd);
      assert.equal(coll.program('lpm_lookup').testRun({ data: frame }).retval, 42);
      assert.ok(progs.lookup(0) !== undefined, 'lookup returns the program id');
    });

    test('hash-of-maps and array-of-maps hold inner maps', (t) => {
      if (skipUnlessRoot(t)) return;
      const coll = load();
      const spec = coll.spec.maps.find((m) => m.name === 'hash_of_maps');
      assert.equal(spec?.innerMap?.type, MapType.Hash);
      for (const name of ['hash_of_maps', 'array_of_maps']) {
        const outer = keep(coll.map(name, u32, u32));
        const inner = keep(BpfMap.create({ name: 'inner', type: MapType.Hash, keySize: 4, valueSize: 4, maxEntries: 64, flags: 0 }, u32, u32));
        outer.update(1, inner.fd);
        const id = outer.lookup(1);
        assert.equal(id, inner.info.id, `${name} returns the inner map's id`);
        const wrong = keep(BpfMap.create({ name: 'wrong', type: MapType.Array, keySize: 4, valueSize: 4, maxEntries: 64, flags: 0 }, u32, u32));
        assert.throws(() => outer.update(2, wrong.fd), (e: unknown) => e instanceof BpfSyscallError && e.errnoName === 'EINVAL');
      }
    });
  });
});
