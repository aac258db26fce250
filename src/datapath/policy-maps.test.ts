/**
 * Conntrack garbage collection on a real `ct` map (pinned on a private bpffs,
 * created from the datapath object): expired entries go, live ones stay, and a
 * table larger than one batch is handled.
 */
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { Collection } from '../bpf/object.js';
import { bpfObjectPath } from './objects.js';
import { LXC_OBJECT, SHARED_MAPS } from './lxc.js';
import { ctGarbageCollect, ctMap } from './policy-maps.js';
import type { CtEntry, CtKey } from './codecs/conntrack.js';
import { skipUnlessRoot } from '../../test/helpers/root.js';
import { mountTempBpffs, type TempBpffs } from '../../test/helpers/bpffs.js';

let fs: TempBpffs | undefined;
after(() => fs?.unmount());

const key = (i: number): CtKey => ({
  saddr: Uint8Array.from([10, 0, (i >> 8) & 0xff, i & 0xff, ...new Array<number>(12).fill(0)]),
  daddr: Uint8Array.from([10, 1, 0, 1, ...new Array<number>(12).fill(0)]),
  sport: 1024 + (i % 60000), dport: 80, proto: 6, family: 2,
});
const entry = (expiresNs: number): CtEntry => ({
  expiresNs, lastReportFwd: 0, lastReportRev: 0, packetsFwd: 1, bytesFwd: 60, packetsRev: 0, bytesRev: 0, createdNs: 1,
  policyRevision: 1, srcIdentity: 256, dstIdentity: 257, egressCookie: 0, ingressCookie: 0, flags: 0, tcpFlagsFwd: 2, tcpFlagsRev: 0,
});

test('conntrack GC deletes exactly the expired entries, over more than one batch', (t) => {
  if (skipUnlessRoot(t)) return;
  fs = mountTempBpffs();
  const pinDir = join(fs.path, 'maps');
  Collection.load(bpfObjectPath(LXC_OBJECT), { programs: [], pinMaps: SHARED_MAPS, pinDir }).close();
  const ct = ctMap(pinDir);
  try {
    const now = 5_000_000_000_000;
    const n = 10_000;
    // Every third entry expired (one exactly at `now`, which counts as expired).
    ct.updateBatch(Array.from({ length: n }, (_, i) => [key(i), entry(i % 3 === 0 ? now - (i === 0 ? 0 : 1000) : now + 1_000_000)] as [CtKey, CtEntry]));
    const r = ctGarbageCollect(ct, now);
    const expired = Math.ceil(n / 3);
    assert.deepEqual(r, { deleted: expired, alive: n - expired });
    const left = ct.lookupBatch();
    assert.equal(left.length, n - expired);
    assert.ok(left.every(([, v]) => v.expiresNs > now));
    assert.deepEqual(ctGarbageCollect(ct, now), { deleted: 0, alive: n - expired });
  } finally {
    ct.close();
  }
});
