/**
 * XDP links on a veth between two private namespaces: counter_xdp on B's end
 * counts A's pings in generic and driver mode, stops when detached, and a
 * drop verdict really drops.
 */
import assert from 'node:assert/strict';
import { after, describe, test, type TestContext } from 'node:test';
import type { LoadOptions } from '../object.js';
import type { PerCpuMap } from '../map.js';
import { BpfSyscallError } from '../errors.js';
import type { CounterValue } from '../../datapath/codecs/counter.js';
import { inNetns } from '../../netlink/netns.js';
import { LinkType, type Link } from './link.js';
import { attachXdp, type XdpMode } from './xdp.js';
import { Cleanup, createNetns, ifindexIn } from '../../../test/helpers/netns.js';
import { loadCounter as loadCounterProgram, pairTopology, type PairTopology } from '../../../test/helpers/pair.js';
import { requireTools, skipUnlessRoot } from '../../../test/helpers/root.js';
import { ping } from '../../../test/helpers/traffic.js';

const ICMP = 1;
const ICMPV6 = 58;
const XDP_DROP = 1;

const cleanup = new Cleanup();
after(() => cleanup.run());

let subnet = 60;

type Topology = PairTopology;

function topology(tag: string): Topology {
  return pairTopology(cleanup, tag, subnet++);
}

function loadCounter(options: LoadOptions = {}): ReturnType<typeof loadCounterProgram> {
  return loadCounterProgram(cleanup, 'counter_xdp', options);
}

function packets(counters: PerCpuMap<number, CounterValue>, protocol: number): number {
  return counters.lookupSum(protocol)?.packets ?? 0;
}

function track(link: Link): void {
  cleanup.add(() => { if (!link.isClosed) link.detach(); }, 'xdp link');
}

function guard(t: TestContext): boolean {
  return skipUnlessRoot(t) || requireTools(t, 'ip', 'ping');
}

/** Attach in B (where the ifindex means B's veth end), count pings, detach, count nothing. */
async function countsThenStops(t: TestContext, mode: XdpMode): Promise<void> {
  const topo = topology(`x${mode[0]}`);
  const { coll, counters } = loadCounter();
  let link: Link;
  try {
    link = inNetns(topo.b.path, () => attachXdp(coll.program('xdp_count'), topo.ifindexB, { mode }));
  } catch (err) {
    if (mode === 'driver' && err instanceof BpfSyscallError && err.errnoName === 'EOPNOTSUPP') {
      // A kernel whose veth lacks native XDP: the error must say what happened and what to do.
      assert.match(err.message, /EOPNOTSUPP/);
      assert.match(err.message, /driver mode/);
      assert.match(err.message, /try generic mode/);
      t.diagnostic('veth has no native XDP on this kernel: checked the error instead');
      return;
    }
    throw err;
  }
  track(link);
  assert.equal(link.type, LinkType.Xdp);
  assert.equal(link.info().ifindex, topo.ifindexB);
  assert.equal(link.programId, coll.program('xdp_count').info().id);
  const shown = topo.b.exec(['ip', '-d', 'link', 'show', 'dev', topo.ifnameB]);
  // iproute2 names the mode on the first line: `mtu 1500 xdp` or `mtu 1500 xdpgeneric`.
  assert.match(shown, mode === 'driver' ? /mtu \d+ xdp / : /mtu \d+ xdpgeneric /);

  const icmp = packets(counters, ICMP);
  const icmp6 = packets(counters, ICMPV6);
  assert.equal(await ping(topo.a, topo.b4, 5), 5);
  assert.equal(await ping(topo.a, topo.b6, 3), 3);
  assert.ok(packets(counters, ICMP) - icmp >= 5, `ICMP counted in ${mode} mode`);
  assert.ok(packets(counters, ICMPV6) - icmp6 >= 3, `ICMPv6 counted in ${mode} mode`);

  link.detach();
  const stopped = packets(counters, ICMP);
  assert.equal(await ping(topo.a, topo.b4, 3), 3);
  assert.equal(packets(counters, ICMP), stopped, 'nothing counted after detach');
}

describe('XDP links', () => {
  test('generic mode counts pings; detach stops the counting', async (t) => {
    if (guard(t)) return;
    await countsThenStops(t, 'generic');
  });

  test('driver mode on a veth counts pings (or fails naming EOPNOTSUPP and generic mode)', async (t) => {
    if (guard(t)) return;
    await countsThenStops(t, 'driver');
  });

  test('driver mode on a device without native XDP names the errno and suggests generic mode', async (t) => {
    if (guard(t)) return;
    // lo of a private namespace: no native XDP, nothing shared with the host.
    const ns = createNetns('wlk-xlo');
    cleanup.add(() => ns.remove(), `netns ${ns.name}`);
    const { coll } = loadCounter();
    const lo = ifindexIn(ns, 'lo');
    const err = inNetns(ns.path, () => {
      try {
        const l = attachXdp(coll.program('xdp_count'), lo, { mode: 'driver' });
        l.close();
        return undefined;
      } catch (e) {
        return e;
      }
    });
    assert.ok(err instanceof BpfSyscallError, `expected a BpfSyscallError, got ${String(err)}`);
    assert.equal(err.errnoName, 'EOPNOTSUPP');
    assert.match(err.message, new RegExp(`attach xdp_count to ifindex ${lo} \\(xdp, driver mode\\): EOPNOTSUPP`));
    assert.match(err.message, /try generic mode/);
  });

  test('an XDP_DROP verdict drops the pings it sees', async (t) => {
    if (guard(t)) return;
    const topo = topology('xdrop');
    const { coll, counters } = loadCounter({ constants: { verdict: XDP_DROP } });
    // Resolve ARP first: with ARP dropped too, A would never send an echo request.
    assert.equal(await ping(topo.a, topo.b4, 1), 1);
    const link = inNetns(topo.b.path, () => attachXdp(coll.program('xdp_count'), topo.ifindexB, { mode: 'generic' }));
    track(link);
    const icmp = packets(counters, ICMP);
    assert.equal(await ping(topo.a, topo.b4, 3), 0);
    assert.ok(packets(counters, ICMP) - icmp >= 3, 'the dropped echo requests were seen by the program');

    link.detach();
    assert.equal(await ping(topo.a, topo.b4, 2), 2, 'pings go through again once detached');
  });

  test('the mode is required', (t) => {
    if (guard(t)) return;
    const { coll } = loadCounter();
    assert.throws(
      () => attachXdp(coll.program('xdp_count'), 1, {} as unknown as { mode: XdpMode }),
      /mode must be 'driver' or 'generic'/,
    );
  });
});
