import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { Collection } from './object.js';
import { programInfo, TEST_XDP_LIVE_FRAMES } from './program.js';
import { attachXdp } from './link/xdp.js';
import { u32 } from './codec.js';
import { BpfSyscallError, BpfUsageError } from './errors.js';
import { ProgramType } from './types.js';
import { inNetns } from '../netlink/netns.js';
import { bpfObjectPath } from '../datapath/objects.js';
import { counterValue } from '../datapath/codecs/counter.js';
import { skipUnlessRoot } from '../../test/helpers/root.js';
import { Cleanup, createNetns, createVethPair, ifindexIn } from '../../test/helpers/netns.js';

function udpFrame(dstMac: Buffer, srcMac: Buffer, len = 64): Buffer {
  const f = Buffer.alloc(len);
  dstMac.copy(f, 0);
  srcMac.copy(f, 6);
  f.writeUInt16BE(0x0800, 12);
  f[14] = 0x45;
  f.writeUInt16BE(len - 14, 16);
  f[22] = 64;
  f[23] = 17;
  Buffer.from([10, 199, 240, 1]).copy(f, 26);
  Buffer.from([10, 199, 240, 2]).copy(f, 30);
  f.writeUInt16BE(9, 34);
  f.writeUInt16BE(9, 36);
  f.writeUInt16BE(len - 34, 38);
  return f;
}

describe('BPF_PROG_TEST_RUN', () => {
  const cleanup = new Cleanup();
  after(() => cleanup.run());

  test('returns the verdict, the packet, the context and a duration', (t) => {
    if (skipUnlessRoot(t)) return;
    const coll = Collection.load(bpfObjectPath('events_test'));
    cleanup.add(() => coll.close());
    const prog = coll.program('emit_event');
    const frame = udpFrame(Buffer.alloc(6, 0xaa), Buffer.alloc(6, 0xbb));
    const skb = Buffer.alloc(192); // struct __sk_buff
    skb.writeUInt32LE(7, 8); // mark: carried through to ctx out
    const r = prog.testRun({ data: frame, ctx: skb, repeat: 10 });
    assert.equal(r.retval, 0, 'TC_ACT_OK');
    assert.deepEqual(r.data, frame, 'the packet comes back unchanged');
    assert.equal(r.ctx?.readUInt32LE(8), 7);
    assert.ok(r.durationNs >= 0);
    const info = programInfo(prog.fd);
    assert.equal(info.type, ProgramType.SchedCls);
    assert.equal(info.name, 'emit_event');
    assert.match(info.tag, /^[0-9a-f]{16}$/);
    assert.throws(() => prog.testRun({ data: frame, repeat: 0 }), BpfUsageError);
    assert.throws(() => prog.testRun({ data: Buffer.alloc(4) }), (e: unknown) => e instanceof BpfSyscallError && e.errnoName === 'EINVAL' && /test run of program emit_event/.test(e.message));
  });

  test('XDP live frames send real frames through a device', (t) => {
    if (skipUnlessRoot(t)) return;
    const a = createNetns('wg-live');
    cleanup.add(() => a.remove());
    const b = createNetns('wg-live');
    cleanup.add(() => b.remove());
    createVethPair({ a: { netns: a, name: 'wlive-a' }, b: { netns: b, name: 'wlive-b' } });
    const ifA = ifindexIn(a, 'wlive-a');
    const ifB = ifindexIn(b, 'wlive-b');
    const macB = Buffer.from(JSON.parse(b.exec(['ip', '-j', 'link', 'show', 'wlive-b']))[0].address.split(':').map((x: string) => parseInt(x, 16)));

    const counter = Collection.load(bpfObjectPath('counter_xdp'), { constants: { verdict: 1 /* XDP_DROP */ } });
    cleanup.add(() => counter.close());
    const link = inNetns(b.path, () => attachXdp(counter.program('xdp_count'), ifB, { mode: 'driver' }));
    cleanup.add(() => link.close());
    // veth delivers frames redirected into it only when its peer (B) runs XDP, as it does here.
    const gen = Collection.load(bpfObjectPath('pktgen_xdp'), { constants: { out_ifindex: ifA } });
    cleanup.add(() => gen.close());

    const frames = 100_000;
    const frame = udpFrame(macB, Buffer.from([2, 0, 0, 0, 0, 1]));
    const r = inNetns(a.path, () => gen.program('xdp_send').sendLiveFrames(frame, frames, ifA));
    assert.equal(r.retval, 0);
    const counters = counter.perCpuMap('counters', u32, counterValue);
    cleanup.add(() => counters.close());
    const got = counters.lookupSum(17)?.packets ?? 0;
    assert.ok(got >= frames * 0.99, `B's XDP counted ${got} of ${frames} frames sent from A`);
    assert.equal(TEST_XDP_LIVE_FRAMES, 2);
  });
});
