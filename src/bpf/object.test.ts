import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { Collection, encodeConstant, formatObjectSpec, mapDifferences, readObjectSpec } from './object.js';
import { BpfMap, PerCpuMap } from './map.js';
import { Program } from './program.js';
import { u32, u64n } from './codec.js';
import { BpfUsageError, IncompatibleMapError, VerifierError } from './errors.js';
import { MapType, ProgramType } from './types.js';
import { bpfObjectPath } from '../datapath/objects.js';
import { counterValue } from '../datapath/codecs/counter.js';
import { skipUnlessRoot } from '../../test/helpers/root.js';
import { mountTempBpffs, type TempBpffs } from '../../test/helpers/bpffs.js';

/** An Ethernet + IPv4 frame of `len` bytes carrying IP protocol `proto`. */
function ipv4Frame(proto: number, len = 64): Buffer {
  const f = Buffer.alloc(len);
  f.writeUInt16BE(0x0800, 12);
  f[14] = 0x45;
  f.writeUInt16BE(len - 14, 16);
  f[22] = 64;
  f[23] = proto;
  return f;
}

describe('object specs (no privileges needed)', () => {
  test('lists maps, programs and constants of an object', () => {
    const spec = readObjectSpec(bpfObjectPath('sock_test'));
    assert.equal(spec.name, 'sock_test');
    assert.deepEqual(spec.programs.map((p) => p.section).sort(), [
      'cgroup/connect4', 'cgroup/connect6', 'cgroup/getpeername4', 'cgroup/getpeername6',
      'cgroup/recvmsg4', 'cgroup/recvmsg6', 'cgroup/sendmsg4', 'cgroup/sendmsg6',
    ]);
    assert.ok(spec.programs.every((p) => p.type === ProgramType.CgroupSockAddr && p.instructions > 0));
    const calls = spec.maps.find((m) => m.name === 'hook_calls');
    assert.deepEqual(calls && { type: calls.type, keySize: calls.keySize, valueSize: calls.valueSize, maxEntries: calls.maxEntries },
      { type: MapType.Array, keySize: 4, valueSize: 8, maxEntries: 16 });
    assert.deepEqual(spec.constants.map((c) => [c.name, c.size, c.typeName]), [
      ['vip4', 4, '__u32'], ['backend4', 4, '__u32'], ['vip6', 16, '__u32[4]'], ['backend6', 16, '__u32[4]'],
      ['vip_port', 2, '__u16'], ['backend_port', 2, '__u16'],
    ]);
    const text = formatObjectSpec(spec);
    assert.match(text, /program sock_connect4: cgroup_sock_addr \(section cgroup\/connect4\)/);
    assert.match(text, /constant vip6: __u32\[4\] \(16 B at \.rodata\+8\)/);
  });

  test('a spec is deterministic', () => {
    assert.deepEqual(readObjectSpec(bpfObjectPath('maps_test')), readObjectSpec(bpfObjectPath('maps_test')));
  });

  test('a missing object names the fix', () => {
    assert.throws(() => readObjectSpec('/nonexistent/x.bpf.o'), /does not exist: run npm run build/);
  });

  test('constants are encoded by size and range-checked', () => {
    assert.deepEqual([...encodeConstant('a', 4, 0x01020304)], [4, 3, 2, 1]);
    assert.deepEqual([...encodeConstant('a', 2, -1)], [0xff, 0xff]);
    assert.deepEqual([...encodeConstant('a', 8, 5n)], [5, 0, 0, 0, 0, 0, 0, 0]);
    assert.deepEqual([...encodeConstant('a', 8, [1, 2])], [1, 0, 0, 0, 2, 0, 0, 0]);
    assert.deepEqual([...encodeConstant('a', 1, true)], [1]);
    assert.throws(() => encodeConstant('a', 1, 256), /256 does not fit in 8 bits/);
    assert.throws(() => encodeConstant('a', 4, new Uint8Array(3)), /expected 4 bytes, got 3/);
    assert.throws(() => encodeConstant('a', 4, 1.5), /not an integer/);
  });

  test('map differences are reported field by field', () => {
    const a = { name: 'm', type: MapType.Hash, keySize: 4, valueSize: 8, maxEntries: 10, flags: 0 };
    assert.deepEqual(mapDifferences(a, a), []);
    assert.deepEqual(mapDifferences(a, { ...a, type: MapType.LruHash, valueSize: 16, flags: 1 }).map((d) => d.field), ['type', 'valueSize', 'flags']);
  });
});

describe('loading objects', () => {
  const closers: { close(): void }[] = [];
  let fs: TempBpffs | undefined;
  after(() => {
    for (const c of closers.reverse()) c.close();
    fs?.unmount();
  });

  test('load-time constants configure one object many ways', (t) => {
    if (skipUnlessRoot(t)) return;
    const pass = Collection.load(bpfObjectPath('counter_xdp'), { constants: { verdict: 2, count_protocol: 17 } });
    const drop = Collection.load(bpfObjectPath('counter_xdp'), { constants: { verdict: 1 } });
    closers.push(pass, drop);
    assert.equal(pass.program('xdp_count').testRun({ data: ipv4Frame(6) }).retval, 2);
    assert.equal(drop.program('xdp_count').testRun({ data: ipv4Frame(6) }).retval, 1);
    const counters = pass.perCpuMap('counters', u32, counterValue);
    closers.push(counters);
    pass.program('xdp_count').testRun({ data: ipv4Frame(17), repeat: 100 });
    assert.deepEqual(counters.lookupSum(17), { packets: 100, bytes: 6400 });
    assert.deepEqual(counters.lookupSum(6), { packets: 0, bytes: 0 }, 'count_protocol=17 ignores TCP');
  });

  test('bad constants and unknown names fail before anything loads', (t) => {
    if (skipUnlessRoot(t)) return;
    assert.throws(() => Collection.load(bpfObjectPath('counter_xdp'), { constants: { nope: 1 } }), /no constant nope \(constants: count_protocol, verdict\)/);
    assert.throws(() => Collection.load(bpfObjectPath('counter_xdp'), { constants: { verdict: 2 ** 40 } }), /does not fit in 32 bits/);
    assert.throws(() => Collection.load(bpfObjectPath('counter_xdp'), { programs: ['nope'] }), /has no program nope/);
    assert.throws(() => Collection.load(bpfObjectPath('counter_xdp'), { maxEntries: { nope: 1 } }), /no map nope/);
  });

  test('the verifier rejection names the program and quotes the log', (t) => {
    if (skipUnlessRoot(t)) return;
    try {
      Collection.load(bpfObjectPath('reject_test'));
      assert.fail('the verifier accepted an unchecked packet read');
    } catch (err) {
      assert.ok(err instanceof VerifierError, String(err));
      assert.equal(err.program, 'unchecked_read');
      assert.equal(err.code, 'BPF_ERR_VERIFIER');
      assert.match(err.excerpt, /invalid access to packet/);
      assert.match(err.message, /the verifier rejected program unchecked_read \(EACCES\)/);
      assert.ok(err.log.length >= err.excerpt.length);
    }
  });

  test('map sizes are configuration', (t) => {
    if (skipUnlessRoot(t)) return;
    const c = Collection.load(bpfObjectPath('maps_test'), { maxEntries: { hash_map: 1000 } });
    closers.push(c);
    const m = c.map('hash_map', u32, u64n);
    closers.push(m);
    assert.equal(m.info.maxEntries, 1000);
  });

  test('pinned maps and programs survive every handle being dropped', (t) => {
    if (skipUnlessRoot(t)) return;
    fs ??= mountTempBpffs();
    const dir = join(fs.path, 'pins');
    const first = Collection.load(bpfObjectPath('counter_tc'), { pinMaps: 'all', pinDir: dir });
    assert.equal(first.pinPath('counters'), join(dir, 'counters'));
    first.program('tc_count').pin(join(dir, 'tc_count'));
    first.program('tc_count').testRun({ data: ipv4Frame(6), repeat: 5 });
    first.close();

    const reopened = PerCpuMap.openPinned(join(dir, 'counters'), u32, counterValue);
    closers.push(reopened);
    assert.deepEqual(reopened.lookupSum(6), { packets: 5, bytes: 320 });
    const prog = Program.openPinned(join(dir, 'tc_count'));
    closers.push(prog);
    assert.equal(prog.type, ProgramType.SchedCls);
    prog.testRun({ data: ipv4Frame(6), repeat: 5 });
    assert.deepEqual(reopened.lookupSum(6), { packets: 10, bytes: 640 });

    // A second load reuses the pinned map: its programs count into the same memory.
    const second = Collection.load(bpfObjectPath('counter_tc'), { pinMaps: ['counters'], pinDir: dir });
    closers.push(second);
    second.program('tc_count').testRun({ data: ipv4Frame(6), repeat: 5 });
    assert.deepEqual(reopened.lookupSum(6), { packets: 15, bytes: 960 });
  });

  test('a pinned map that no longer matches is reported field by field, not reused', (t) => {
    if (skipUnlessRoot(t)) return;
    fs ??= mountTempBpffs();
    const dir = join(fs.path, 'stale');
    const old = BpfMap.create({ name: 'counters', type: MapType.Array, keySize: 4, valueSize: 8, maxEntries: 10, flags: 0 }, u32, u64n);
    closers.push(old);
    Collection.load(bpfObjectPath('counter_tc'), { pinMaps: [], pinDir: dir }).close();
    old.pin(join(dir, 'counters'));
    try {
      Collection.load(bpfObjectPath('counter_tc'), { pinMaps: ['counters'], pinDir: dir });
      assert.fail('an incompatible pin was reused');
    } catch (err) {
      assert.ok(err instanceof IncompatibleMapError, String(err));
      assert.deepEqual(err.differences, [
        { field: 'type', pinned: 'array', wanted: 'per_cpu_array' },
        { field: 'valueSize', pinned: 8, wanted: 16 },
        { field: 'maxEntries', pinned: 10, wanted: 257 },
      ]);
      assert.match(err.message, /pinned map .*counters does not match map counters \(type: pinned array, wanted per_cpu_array; valueSize: pinned 8, wanted 16; maxEntries: pinned 10, wanted 257\)/);
    }
    assert.ok(existsSync(join(dir, 'counters')), 'the old pin is left alone');
  });

  test('pinning needs a directory', (t) => {
    if (skipUnlessRoot(t)) return;
    assert.throws(() => Collection.load(bpfObjectPath('counter_tc'), { pinMaps: 'all' }), BpfUsageError);
  });
});
