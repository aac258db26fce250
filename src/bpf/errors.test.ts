import { test } from 'node:test';
import assert from 'node:assert/strict';
import { BpfSyscallError, IncompatibleMapError, UnsupportedFeatureError, VerifierError, errnoName, verifierExcerpt } from './errors.js';

test('errno names and hints', () => {
  assert.equal(errnoName(1), 'EPERM');
  assert.equal(errnoName(2), 'ENOENT');
  assert.equal(errnoName(9999), 'errno 9999');
  const e = new BpfSyscallError('create hash map x', 1);
  assert.equal(e.code, 'BPF_ERR_SYSCALL');
  assert.equal(e.errnoName, 'EPERM');
  assert.match(e.message, /^create hash map x: EPERM \(run as root, or grant CAP_BPF and CAP_NET_ADMIN/);
});

test('verifier excerpt keeps the useful end of the log', () => {
  const log = ['0: R1=ctx() R10=fp0', '1: (71) r1 = *(u8 *)(r1 +12)', 'invalid access to packet, off=12 size=1', '', 'processed 2 insns (limit 1000000)', 'verification time 12 usec'].join('\n');
  assert.equal(verifierExcerpt(log, 2), '1: (71) r1 = *(u8 *)(r1 +12)\ninvalid access to packet, off=12 size=1');
  const v = new VerifierError('prog_x', 13, log);
  assert.equal(v.code, 'BPF_ERR_VERIFIER');
  assert.match(v.message, /the verifier rejected program prog_x \(EACCES\):\n/);
  assert.equal(v.log, log);
});

test('incompatible map and unsupported feature messages', () => {
  const e = new IncompatibleMapError('ct4', '/sys/fs/bpf/ct4', [{ field: 'maxEntries', pinned: 10, wanted: 20 }]);
  assert.equal(e.code, 'BPF_ERR_MAP_INCOMPATIBLE');
  assert.match(e.message, /pinned map \/sys\/fs\/bpf\/ct4 does not match map ct4 \(maxEntries: pinned 10, wanted 20\)/);
  const u = new UnsupportedFeatureError('tcx links', '6.6');
  assert.match(u.message, /tcx links is not supported by this kernel \(needs Linux 6.6 or later\)/);
});
