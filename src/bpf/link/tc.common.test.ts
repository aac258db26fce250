/**
 * One suite, run against both kinds of TC attachment (tcx links and classic
 * clsact filters): real traffic between two private namespaces joined by a
 * veth, counted by counter_tc on namespace B's end.
 */
import assert from 'node:assert/strict';
import { readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, test, type TestContext } from 'node:test';
import { Collection, type LoadOptions } from '../object.js';
import { u32 } from '../codec.js';
import { PerCpuMap } from '../map.js';
import { bpfObjectPath } from '../../datapath/objects.js';
import { counterValue, type CounterValue } from '../../datapath/codecs/counter.js';
import { inNetns } from '../../netlink/netns.js';
import { libcCalls } from '../sys.js';
import { Link, LinkType } from './link.js';
import { attachTc, type TcAttachment } from './tc.js';
import { attachTcx, supportsTcx, type TcDirection } from './tcx.js';
import { Cleanup } from '../../../test/helpers/netns.js';
import { loadCounter as loadCounterProgram, pairTopology, type PairTopology } from '../../../test/helpers/pair.js';
import { mountTempBpffs } from '../../../test/helpers/bpffs.js';
import { requireTools, skipUnlessRoot } from '../../../test/helpers/root.js';
import { ping, tcpExchange, udpExchange } from '../../../test/helpers/traffic.js';

const ICMP = 1;
const TCP = 6;
const UDP = 17;
const ICMPV6 = 58;
const PROTOCOLS = [ICMP, TCP, UDP, ICMPV6] as const;

const cleanup = new Cleanup();
after(() => cleanup.run());

let subnet = 40;

type Topology = PairTopology;

function topology(tag: string): Topology {
  return pairTopology(cleanup, tag, subnet++);
}

function loadCounter(options: LoadOptions = {}): ReturnType<typeof loadCounterProgram> {
  return loadCounterProgram(cleanup, 'counter_tc', options);
}

type Counts = Record<number, number>;

function snapshot(counters: PerCpuMap<number, CounterValue>): Counts {
  const out: Counts = {};
  for (const p of PROTOCOLS) out[p] = counters.lookupSum(p)?.packets ?? 0;
  return out;
}

function delta(before: Counts, now: Counts): Counts {
  const out: Counts = {};
  for (const p of PROTOCOLS) out[p] = (now[p] ?? 0) - (before[p] ?? 0);
  return out;
}

/** Releases an attachment on cleanup, whatever state the test left it in. */
function track(a: TcAttachment | Link): void {
  cleanup.add(() => { if (!a.isClosed) a.detach(); }, 'TC attachment');
}

function guard(t: TestContext): boolean {
  return skipUnlessRoot(t) || requireTools(t, 'ip', 'ping');
}

/**
 * True (skipped) only on a kernel older than 6.6, which has no tcx; a 6.6+
 * kernel without tcx is a failure, not a skip.
 */
function skipWithoutTcx(t: TestContext): boolean {
  if (supportsTcx()) return false;
  const [major = 0, minor = 0] = readFileSync('/proc/sys/kernel/osrelease', 'utf8').split('.').map((x) => parseInt(x, 10));
  if (major > 6 || (major === 6 && minor >= 6)) throw new Error(`kernel ${major}.${minor} should support tcx links, but the probe says it does not`);
  t.skip(`kernel ${major}.${minor} has no tcx (needs 6.6)`);
  return true;
}

function tcSuite(mode: 'tcx' | 'clsact'): void {
  describe(`TC attachment (${mode})`, () => {
    const attach = (topo: Topology, program: Parameters<typeof attachTc>[0], direction: TcDirection): TcAttachment =>
      // ifindexB only means something inside namespace B.
      inNetns(topo.b.path, () => attachTc(program, topo.ifindexB, direction, { mode }));

    test('ingress counts ICMP, ICMPv6, TCP and UDP; after detach nothing is counted', async (t) => {
      if (guard(t)) return;
      if (mode === 'tcx' && skipWithoutTcx(t)) return;
      const topo = topology(`${mode}i`);
      const { coll, counters } = loadCounter();
      const att = attach(topo, coll.program('tc_count'), 'ingress');
      track(att);
      assert.equal(att.kind, mode);

      const before = snapshot(counters);
      assert.equal(await ping(topo.a, topo.b4, 5), 5);
      assert.equal(await ping(topo.a, topo.b6, 5), 5);
      assert.equal(await tcpExchange(topo.a, topo.b, topo.b4, 7101, 2000), 2000);
      assert.equal(await udpExchange(topo.a, topo.b, topo.b4, 7102, 4), 4);
      const moved = delta(before, snapshot(counters));
      assert.ok((moved[ICMP] ?? 0) >= 5, `ICMP echo requests counted at B ingress: ${moved[ICMP]}`);
      assert.ok((moved[ICMPV6] ?? 0) >= 5, `ICMPv6 packets counted at B ingress: ${moved[ICMPV6]}`);
      assert.ok((moved[TCP] ?? 0) >= 3, `TCP segments (SYN, ACK+data, FIN at least) at B ingress: ${moved[TCP]}`);
      assert.ok((moved[UDP] ?? 0) >= 4, `UDP datagrams at B ingress: ${moved[UDP]}`);

      // Detach from outside namespace B: the attachment knows where it lives.
      att.detach();
      assert.equal(att.isClosed, true);
      const afterDetach = snapshot(counters);
      assert.equal(await ping(topo.a, topo.b4, 3), 3);
      assert.equal(await ping(topo.a, topo.b6, 3), 3);
      assert.equal(await tcpExchange(topo.a, topo.b, topo.b4, 7103, 2000), 2000);
      assert.equal(await udpExchange(topo.a, topo.b, topo.b4, 7104, 3), 3);
      assert.deepEqual(delta(afterDetach, snapshot(counters)), { [ICMP]: 0, [TCP]: 0, [UDP]: 0, [ICMPV6]: 0 });
    });

    test('egress counts the echo replies B sends', async (t) => {
      if (guard(t)) return;
      if (mode === 'tcx' && skipWithoutTcx(t)) return;
      const topo = topology(`${mode}e`);
      const { coll, counters } = loadCounter({ constants: { count_protocol: ICMP } });
      const att = attach(topo, coll.program('tc_count'), 'egress');
      track(att);

      const before = snapshot(counters);
      assert.equal(await ping(topo.a, topo.b4, 4), 4);
      assert.equal(await ping(topo.a, topo.b6, 2), 2);
      const moved = delta(before, snapshot(counters));
      assert.ok((moved[ICMP] ?? 0) >= 4, `ICMP echo replies counted at B egress: ${moved[ICMP]}`);
      // count_protocol = ICMP: the program saw ICMPv6 but did not count it.
      assert.equal(moved[ICMPV6], 0);

      att.detach();
      const afterDetach = snapshot(counters);
      assert.equal(await ping(topo.a, topo.b4, 2), 2);
      assert.equal(delta(afterDetach, snapshot(counters))[ICMP], 0);
    });
  });
}

describe('inNetns', () => {
  test('runs synchronously inside the namespace and always comes back', (t) => {
    if (guard(t)) return;
    const topo = topology('ns');
    const self = (): bigint => statSync('/proc/thread-self/ns/net', { bigint: true }).ino;
    const home = self();
    const target = statSync(topo.b.path, { bigint: true }).ino;
    assert.notEqual(home, target);

    assert.equal(inNetns(topo.b.path, self), target);
    assert.equal(self(), home);
    // Interface names resolve in the caller's namespace: only inside B does B's veth exist.
    const name = topo.b.exec(['ip', '-o', 'link', 'show']).match(/^\d+: (wlk\d+b)@/m)?.[1] ?? '';
    assert.equal(inNetns(topo.b.path, () => libcCalls.ifNameToIndex(name) as number), topo.ifindexB);

    assert.throws(() => inNetns(topo.b.path, () => { throw new Error('boom inside'); }), /boom inside/);
    assert.equal(self(), home);
    assert.throws(() => inNetns(topo.b.path, async () => 1), /only synchronous code/);
    assert.equal(self(), home);
    assert.throws(() => inNetns('/nonexistent/netns', () => 1), /open network namespace \/nonexistent\/netns: ENOENT/);
  });
});

tcSuite('tcx');
tcSuite('clsact');

describe('tcx links pin', () => {
  test('a pinned tcx link survives closing every handle, reopens from the pin and detaches', async (t) => {
    if (guard(t) || requireTools(t, 'mount', 'umount')) return;
    if (skipWithoutTcx(t)) return;
    const topo = topology('pin');
    const fs = mountTempBpffs();
    cleanup.add(() => fs.unmount(), `bpffs ${fs.path}`);
    const mapDir = join(fs.path, 'maps');
    const linkPin = join(fs.path, 'tc_count_link');

    const coll = Collection.load(bpfObjectPath('counter_tc'), { pinMaps: ['counters'], pinDir: mapDir });
    cleanup.add(() => coll.close(), 'counter_tc collection');
    const link = inNetns(topo.b.path, () => attachTcx(coll.program('tc_count'), topo.ifindexB, 'ingress'));
    track(link);
    const programId = coll.program('tc_count').info().id;
    link.pin(linkPin);
    assert.equal(link.pinPath, linkPin);

    // Close everything: the program, the maps, the link handle. The pin keeps it all.
    link.close();
    coll.close();

    const counters = PerCpuMap.openPinned(join(mapDir, 'counters'), u32, counterValue);
    cleanup.add(() => counters.close(), 'pinned counters map');
    let before = snapshot(counters);
    assert.equal(await ping(topo.a, topo.b4, 3), 3);
    assert.ok((delta(before, snapshot(counters))[ICMP] ?? 0) >= 3, 'still counting with every handle closed');

    const reopened = Link.openPinned(linkPin);
    track(reopened);
    assert.equal(reopened.type, LinkType.Tcx);
    assert.equal(reopened.programId, programId);
    const info = reopened.info();
    assert.equal(info.ifindex, topo.ifindexB);
    before = snapshot(counters);
    assert.equal(await ping(topo.a, topo.b6, 2), 2);
    assert.ok((delta(before, snapshot(counters))[ICMPV6] ?? 0) >= 2, 'counted through the reopened link');

    // Detach ends the attachment although the link is pinned.
    reopened.detach();
    before = snapshot(counters);
    assert.equal(await ping(topo.a, topo.b4, 2), 2);
    assert.equal(delta(before, snapshot(counters))[ICMP], 0);

    // What stays is a defunct pinned link: it no longer names a device.
    const defunct = Link.openPinned(linkPin);
    cleanup.add(() => defunct.close(), 'defunct link handle');
    assert.equal(defunct.info().ifindex, 0);
    defunct.unpin();
    defunct.close();
  });
});
