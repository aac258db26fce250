/**
 * Per-packet service load balancing in the endpoint programs (bpf/lxc.bpf.c,
 * bpf/lib/lb_xlate.h over the maps of bpf/include/lb.h and lb_nat.h): crafted
 * frames through BPF_PROG_TEST_RUN on the devices of a throw-away namespace,
 * with the service maps written directly (the codecs of ./codecs/lb.ts) and
 * the rewritten frames parsed and their checksums verified.
 *
 * Three local endpoints: A (the client), B and C (backends); R is a backend
 * elsewhere (reached through the node's stack). Every test starts from empty
 * service, translation, conntrack, policy and ipcache maps and endpoints
 * without policy.
 */
import { after, before, beforeEach, describe, test, type TestContext } from 'node:test';
import type { ChildProcess } from 'node:child_process';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { formatIPv6, parseIPv6, u32 } from '../bpf/codec.js';
import { closeFd } from '../bpf/fd.js';
import { BpfMap } from '../bpf/map.js';
import { bpf } from '../bpf/sys.js';
import type { RingBuffer } from '../bpf/ringbuf.js';
import { MapType } from '../bpf/types.js';
import { inNetns } from '../netlink/netns.js';
import { isRoot, skipUnlessRoot } from '../../test/helpers/root.js';
import { mountTempBpffs, type TempBpffs } from '../../test/helpers/bpffs.js';
import { Cleanup, type Netns } from '../../test/helpers/netns.js';
import { childEnv, stop } from '../../test/helpers/traffic.js';
import {
  attachEndpoint, detachEndpointPrograms, endpointsMap, lbNatMaps, loadEndpointDatapath, openEvents, type EndpointDatapath,
} from './lxc.js';
import { loadHostDeviceProgram } from './netdev.js';
import { writePolicyRevision } from './policy-maps.js';
import type { PolicyKey, PolicyValue } from './codecs/policy.js';
import { CT_FLAGS, type CtEntry, type CtKey } from './codecs/conntrack.js';
import {
  LB_BACKEND_F_TERMINATING, LB_FLAGS, LB_MAGLEV_INNER_FLAGS, lbAddrBytes, lbAffinity, lbAffinityKey, lbBackend, lbFamily, lbService,
  lbServiceKey, type LbAffinity, type LbAffinityKey, type LbBackend, type LbService, type LbServiceKey,
} from './codecs/lb.js';
import { LB_NAT_F_HAIRPIN, type LbNatEntry, type LbNatKey } from './codecs/lb-nat.js';
import { FLOW_EVENT_DROP, FLOW_EVENT_TRACE, FLOW_FLAGS } from './codecs/flow-event.js';
import { dropReasonCode } from './drop-reasons.js';
import {
  ACK, SYN, TC_ACT_OK, TC_ACT_REDIRECT, drainEvents, eth, fragmentDatagram, icmpError, ipv4, ipv4L4Checksum, ipv6, ipv6L4Checksum,
  parseFragment, parseFrame, parseIcmpError, skbCtx, tcp, udp, withL4Checksum, type ParsedFrame,
} from './test-frames.js';
import { DatapathHarness, assertDropped, only, vethEndpoints, type Run, type TestEndpoint, type VethEndpoint } from './test-harness.js';

const TCP = 6;
const UDP = 17;
const IDENTITY_WORLD = 2;
const F_INGRESS = 0x1;
const F_EGRESS = 0x2;
const NO_BACKEND = dropReasonCode('SERVICE_BACKEND_NOT_FOUND');
const POLICY_DENIED = dropReasonCode('POLICY_DENIED');
const CT_CANNOT_CREATE = dropReasonCode('CT_CANNOT_CREATE_ENTRY_FROM_PACKET');
const NOT_LOCAL = dropReasonCode('NO_MATCHING_LOCAL_CONTAINER_FOUND');
const FRAG_NOT_FOUND = dropReasonCode('FIRST_LOGICAL_DATAGRAM_FRAGMENT_NOT_FOUND');
const { REPLY_KNOWN, IS_REPLY, TRANSLATED, EGRESS, INGRESS } = FLOW_FLAGS;

type Ep = TestEndpoint;

const A: Ep = { id: 31, ipv4: '10.199.230.21', ipv6: 'fd99:230::21', mac: '02:00:00:00:00:31', hostMac: '02:00:00:00:01:31', identity: 4031, ifindex: 0 };
const B: Ep = { id: 32, ipv4: '10.199.230.22', ipv6: 'fd99:230::22', mac: '02:00:00:00:00:32', hostMac: '02:00:00:00:01:32', identity: 4032, ifindex: 0 };
const C: Ep = { id: 33, ipv4: '10.199.230.23', ipv6: 'fd99:230::23', mac: '02:00:00:00:00:33', hostMac: '02:00:00:00:01:33', identity: 4033, ifindex: 0 };
/** A backend that is not a local endpoint. */
const R = { ipv4: '10.199.231.5', ipv6: 'fd99:231::5' };

const VIP4 = '10.199.240.10';
const VIP6 = 'fd99:240::10';
/** NodePort: a node address, a client outside the node and the host device it comes in on. */
const NODE4 = '10.199.245.1';
const NODE6 = 'fd99:245::1';
const CLIENT4 = '10.199.246.50';
const CLIENT6 = 'fd99:246::50';
const CLIENT_MAC = '02:00:00:00:02:50';
const DEV = { mac: '02:00:00:00:02:01', ifindex: 0 };

/** Backend IDs: B, C, R and A (hairpin) on port 8080, IPv4 and IPv6. */
const BE = { B4: 1, C4: 2, R4: 3, A4: 4, B4_PORT0: 5, B6: 11, C6: 12, R6: 13, A6: 14 } as const;
const BACKENDS: Record<number, { ip: string; port: number }> = {
  [BE.B4]: { ip: B.ipv4, port: 8080 }, [BE.C4]: { ip: C.ipv4, port: 8080 }, [BE.R4]: { ip: R.ipv4, port: 8080 },
  [BE.A4]: { ip: A.ipv4, port: 8080 }, [BE.B4_PORT0]: { ip: B.ipv4, port: 0 },
  [BE.B6]: { ip: B.ipv6, port: 8080 }, [BE.C6]: { ip: C.ipv6, port: 8080 }, [BE.R6]: { ip: R.ipv6, port: 8080 },
  [BE.A6]: { ip: A.ipv6, port: 8080 },
};

/** IPv6 text as the frame parser prints it. */
const norm = (ip: string): string => (ip.includes(':') ? formatIPv6(parseIPv6(ip)) : ip);
const addr16 = (ip: string): Uint8Array => lbAddrBytes(ip.includes(':') ? 6 : 4, ip);
const famOf = (ip: string): number => lbFamily(ip.includes(':') ? 6 : 4);

/** A frame leaving endpoint `ep` for dst (TCP/UDP checksum filled in). */
function out(ep: Ep, dst: string, proto: number, l4: Buffer): Buffer {
  if (dst.includes(':')) return eth(ep.hostMac, ep.mac, 0x86dd, ipv6(ep.ipv6, dst, proto, withL4Checksum(ep.ipv6, dst, proto, l4)));
  return eth(ep.hostMac, ep.mac, 0x0800, ipv4(ep.ipv4, dst, proto, withL4Checksum(ep.ipv4, dst, proto, l4)));
}
/** A frame the node's stack sends to endpoint `ep` from src. */
function inbound(ep: Ep, src: string, proto: number, l4: Buffer): Buffer {
  if (src.includes(':')) return eth(ep.mac, ep.hostMac, 0x86dd, ipv6(src, ep.ipv6, proto, withL4Checksum(src, ep.ipv6, proto, l4)));
  return eth(ep.mac, ep.hostMac, 0x0800, ipv4(src, ep.ipv4, proto, withL4Checksum(src, ep.ipv4, proto, l4)));
}

/** lb_hash3 of bpf/lib/lb_select.h (Jenkins' lookup3 final mix). */
function lbHash3(a0: number, b0: number, c0: number): number {
  const rol = (w: number, s: number): number => ((w << s) | (w >>> (32 - s))) >>> 0;
  let a = (a0 + 0xdeadbeef + 12) >>> 0;
  let b = (b0 + 0xdeadbeef + 12) >>> 0;
  let c = (c0 + 0xdeadbeef + 12) >>> 0;
  c = ((c ^ b) >>> 0) - rol(b, 14) >>> 0;
  a = ((a ^ c) >>> 0) - rol(c, 11) >>> 0;
  b = ((b ^ a) >>> 0) - rol(a, 25) >>> 0;
  c = ((c ^ b) >>> 0) - rol(b, 16) >>> 0;
  a = ((a ^ c) >>> 0) - rol(c, 4) >>> 0;
  b = ((b ^ a) >>> 0) - rol(a, 14) >>> 0;
  c = ((c ^ b) >>> 0) - rol(b, 24) >>> 0;
  return c;
}

/** The connection hash of bpf/lib/lb_xlate.h lb_tuple_hash (IPv6 addresses folded by XOR of their words). */
function tupleHash(src: string, dst: string, sport: number, dport: number): number {
  const fold = (ip: string): number => {
    const b = Buffer.from(addr16(ip));
    return ip.includes(':') ? (b.readUInt32BE(0) ^ b.readUInt32BE(4) ^ b.readUInt32BE(8) ^ b.readUInt32BE(12)) >>> 0 : b.readUInt32BE(0);
  };
  return lbHash3(fold(src), fold(dst), ((sport << 16) | dport) >>> 0);
}

function natKey(src: string, dst: string, proto: number, sport: number, dport: number): LbNatKey {
  return { saddr: addr16(src), daddr: addr16(dst), sport, dport, proto, family: famOf(src) };
}

function ctKeyOf(src: string, dst: string, proto: number, sport: number, dport: number): CtKey {
  return { saddr: addr16(src), daddr: addr16(dst), sport, dport, proto, family: famOf(src) };
}

const cleanup = new Cleanup();
after(() => cleanup.run());

describe('per-packet service load balancing in the endpoint programs (BPF_PROG_TEST_RUN)', () => {
  let h: DatapathHarness;
  let pinDir: string;
  let services: BpfMap<LbServiceKey, LbService>;
  let backends: BpfMap<number, LbBackend>;
  let maglev: BpfMap<number, number>;
  let affinity: BpfMap<LbAffinityKey, LbAffinity>;
  let nat: BpfMap<LbNatKey, LbNatEntry>;
  let revNat: BpfMap<LbNatKey, LbNatEntry>;
  let ct: BpfMap<CtKey, CtEntry>;
  let policy: BpfMap<PolicyKey, PolicyValue>;

  const setFlags = (ep: Ep, flags: number): void => h.setFlags(ep, flags);

  function rule(ep: Ep, direction: 'ingress' | 'egress', identity: number, proto: number, port: number, cookie: number): void {
    policy.update({ endpointId: ep.id, direction, identity, proto, port, portPrefixLen: 16 }, { cookie, deny: 0, matchType: 2 });
  }

  function writeBackend(id: number, flags = 0): void {
    const b = BACKENDS[id];
    assert.ok(b, `backend ${id}`);
    backends.update(id, { addr: addr16(b.ip), port: b.port, proto: TCP, family: famOf(b.ip), flags });
  }

  interface Svc {
    id: number;
    vip: string;
    port: number;
    proto: number;
    /** Backends taking new connections (slots 1..n). */
    backends: number[];
    flags?: number;
    affinityTimeout?: number;
    maglevSize?: number;
  }

  const svcKey = (s: Svc, slot: number): LbServiceKey => ({ addr: addr16(s.vip), port: s.port, proto: s.proto, family: famOf(s.vip), slot });

  /** Writes the service's slot 0 and one slot per backend (removing slots beyond them), and the backends. */
  function writeService(s: Svc): void {
    for (const id of s.backends) if (backends.lookup(id) === undefined) writeBackend(id);
    services.update(svcKey(s, 0), {
      backendId: 0, serviceId: s.id, count: s.backends.length, flags: s.flags ?? 0, affinityTimeout: s.affinityTimeout ?? 0, maglevSize: s.maglevSize ?? 0,
    });
    s.backends.forEach((id, i) => services.update(svcKey(s, i + 1), { backendId: id, serviceId: 0, count: 0, flags: 0, affinityTimeout: 0, maglevSize: 0 }));
    for (let slot = s.backends.length + 1; slot <= 8; slot++) services.delete(svcKey(s, slot));
  }

  /** A Maglev table for service `id` (an inner array map in `lb_maglev`). */
  function writeMaglev(id: number, table: number[]): void {
    const inner = BpfMap.create({ name: 'test_maglev', type: MapType.Array, keySize: 4, valueSize: 4, maxEntries: table.length, flags: LB_MAGLEV_INNER_FLAGS }, u32, u32);
    try {
      table.forEach((b, i) => inner.update(i, b));
      maglev.update(id, inner.fd);
    } finally {
      inner.close();
    }
  }

  const from = (ep: Ep, frame: Buffer): Run => h.from(ep, frame);
  const to = (ep: Ep, frame: Buffer): Run => h.to(ep, frame);
  /** Loads the host device program for test `t`; returns a runner of frames arriving on DEV. */
  function hostDevice(t: TestContext): (frame: Buffer) => Run {
    const loaded = loadHostDeviceProgram(pinDir);
    t.after(() => loaded.close());
    return (frame) => h.run(loaded.program, DEV, frame);
  }

  /** The rewritten frame, with both checksums verified. */
  function frameOf(r: Run, what: string): ParsedFrame {
    const p = parseFrame(r.data);
    assert.ok(p.ipChecksumOk, `${what}: IPv4 header checksum`);
    assert.ok(p.l4ChecksumOk, `${what}: TCP/UDP checksum (0x${p.l4Checksum.toString(16)})`);
    return p;
  }

  const endpointOf = (ip: string): Ep | undefined => [A, B, C].find((e) => e.ipv4 === ip || norm(e.ipv6) === norm(ip));

  /** Sends a SYN (TCP) or datagram (UDP) from `ep` to vip:port; returns the frame as it left and the backend it went to. */
  function open(ep: Ep, vip: string, port: number, sport: number, proto = TCP): { r: Run; p: ParsedFrame } {
    const r = from(ep, out(ep, vip, proto, proto === TCP ? tcp(sport, port, SYN) : udp(sport, port)));
    assert.ok(r.retval === TC_ACT_REDIRECT || r.retval === TC_ACT_OK, `${vip}:${port} from ${sport}: forwarded (retval ${r.retval}, events ${JSON.stringify(r.events.map((e) => e.dropReasonName))})`);
    const p = frameOf(r, `${vip}:${port} from ${sport}`);
    return { r, p };
  }

  before(() => {
    if (!isRoot) return;
    h = DatapathHarness.open(cleanup, 'wg-lb-run', [A, B, C, DEV]);
    ({ pinDir, ct, policy } = h);
    services = BpfMap.openPinned(join(pinDir, 'lb_services'), lbServiceKey, lbService);
    cleanup.add(() => services.close(), 'lb_services');
    backends = BpfMap.openPinned(join(pinDir, 'lb_backends'), u32, lbBackend);
    cleanup.add(() => backends.close(), 'lb_backends');
    maglev = BpfMap.openPinned(join(pinDir, 'lb_maglev'), u32, u32);
    cleanup.add(() => maglev.close(), 'lb_maglev');
    affinity = BpfMap.openPinned(join(pinDir, 'lb_affinity'), lbAffinityKey, lbAffinity);
    cleanup.add(() => affinity.close(), 'lb_affinity');
    ({ nat, revNat } = lbNatMaps(pinDir));
    cleanup.add(() => { nat.close(); revNat.close(); }, 'lb_nat maps');
  });

  beforeEach(() => {
    if (!isRoot) return;
    for (const m of [services, backends, maglev, affinity, nat, revNat] as BpfMap<unknown, unknown>[]) m.clear();
    h.reset();
    setFlags(A, 0);
    setFlags(B, 0);
    setFlags(C, 0);
  });

  test('a SYN to a service is DNATed to a backend with valid checksums and redirected into it; the connection keeps its backend; the reply leaves with the service as source', (t) => {
    if (skipUnlessRoot(t)) return;
    writeService({ id: 7, vip: VIP4, port: 80, proto: TCP, backends: [BE.B4, BE.C4] });
    const { r, p } = open(A, VIP4, 80, 50000);
    assert.equal(r.retval, TC_ACT_REDIRECT, 'into a local backend');
    const be = endpointOf(p.dst);
    assert.ok(be === B || be === C, `DNAT to B or C, got ${p.dst}`);
    assert.deepEqual([p.src, p.sport, p.dport, p.ethDst, p.ttl], [A.ipv4, 50000, 8080, be.mac, 63]);
    const trace = only(r.events, FLOW_EVENT_TRACE);
    assert.deepEqual(
      [trace.flags, trace.line, trace.srcIp, trace.dstIp, trace.dstPort, trace.dstEndpoint, trace.dstIdentity, trace.srcIdentity],
      [REPLY_KNOWN | TRANSLATED, 7, A.ipv4, be.ipv4, 8080, be.id, be.identity, A.identity],
      'the trace shows the translated tuple, the backend\'s identity and the service ID',
    );
    const fwd = nat.lookup(natKey(A.ipv4, VIP4, TCP, 50000, 80));
    assert.ok(fwd, 'lb_nat entry for the original tuple');
    assert.deepEqual([fwd.backendId, fwd.serviceId, fwd.port, fwd.flags, Buffer.from(fwd.addr).equals(Buffer.from(addr16(be.ipv4)))], [be === B ? BE.B4 : BE.C4, 7, 8080, 0, true]);
    const rev = revNat.lookup(natKey(be.ipv4, A.ipv4, TCP, 8080, 50000));
    assert.ok(rev, 'lb_rev_nat entry for the reply tuple');
    assert.deepEqual([Buffer.from(rev.addr).equals(Buffer.from(addr16(VIP4))), rev.port, rev.serviceId], [true, 80, 7]);
    assert.equal(ct.lookup(ctKeyOf(A.ipv4, be.ipv4, TCP, 50000, 8080))?.flags, CT_FLAGS.SERVICE, 'conntrack tracks the translated tuple, marked as a service connection');

    for (let i = 0; i < 5; i++) {
      const next = from(A, out(A, VIP4, TCP, tcp(50000, 80, ACK)));
      assert.equal(next.retval, TC_ACT_REDIRECT);
      assert.equal(frameOf(next, `packet ${i}`).dst, be.ipv4, 'the same backend');
    }

    const reply = from(be, out(be, A.ipv4, TCP, tcp(8080, 50000, SYN | ACK)));
    assert.equal(reply.retval, TC_ACT_REDIRECT, 'into the client');
    const q = frameOf(reply, 'reply');
    assert.deepEqual([q.src, q.sport, q.dst, q.dport, q.ethDst], [VIP4, 80, A.ipv4, 50000, A.mac], 'the reply comes from the service');
    const rt = only(reply.events, FLOW_EVENT_TRACE);
    assert.deepEqual([rt.flags, rt.line, rt.srcIp, rt.srcPort, rt.srcIdentity, rt.dstEndpoint], [REPLY_KNOWN | IS_REPLY | TRANSLATED, 7, be.ipv4, 8080, be.identity, A.id]);
    assert.equal(ct.lookup(ctKeyOf(A.ipv4, be.ipv4, TCP, 50000, 8080))?.packetsRev, 1, 'conntrack counted the reply on the translated tuple');
  });

  test('only replies of translated connections are translated back: a stale lb_rev_nat entry leaves a direct connection alone', (t) => {
    if (skipUnlessRoot(t)) return;
    // What an earlier translated connection on the same ports could have left behind.
    revNat.update(natKey(B.ipv4, A.ipv4, TCP, 8080, 50100), { addr: addr16(VIP4), port: 80, flags: 0, backendId: BE.B4, serviceId: 7, ifindex: 0 });
    assert.equal(from(A, out(A, B.ipv4, TCP, tcp(50100, 8080, SYN))).retval, TC_ACT_REDIRECT);
    assert.equal(ct.lookup(ctKeyOf(A.ipv4, B.ipv4, TCP, 50100, 8080))?.flags, 0, 'a direct connection is not marked');
    const reply = from(B, out(B, A.ipv4, TCP, tcp(8080, 50100, SYN | ACK)));
    assert.equal(reply.retval, TC_ACT_REDIRECT);
    const q = frameOf(reply, 'direct reply');
    assert.deepEqual([q.src, q.sport], [B.ipv4, 8080], 'untouched');
    assert.equal(only(reply.events, FLOW_EVENT_TRACE).flags & TRANSLATED, 0);
  });

  test('random selection spreads connections over every backend, local (redirected) and remote (to the stack)', (t) => {
    if (skipUnlessRoot(t)) return;
    writeService({ id: 8, vip: VIP4, port: 80, proto: TCP, backends: [BE.B4, BE.C4, BE.R4] });
    const counts = new Map<string, number>();
    const n = 300;
    for (let i = 0; i < n; i++) {
      const { r, p } = open(A, VIP4, 80, 51000 + i);
      assert.equal(r.retval, p.dst === R.ipv4 ? TC_ACT_OK : TC_ACT_REDIRECT, `${p.dst}: verdict`);
      counts.set(p.dst, (counts.get(p.dst) ?? 0) + 1);
    }
    assert.deepEqual([...counts.keys()].sort(), [B.ipv4, C.ipv4, R.ipv4].sort());
    for (const [ip, c] of counts) assert.ok(c >= 60, `${ip}: ${c} of ${n} connections`);
    t.diagnostic(`spread over 3 backends: ${JSON.stringify(Object.fromEntries(counts))}`);
    assert.equal(nat.count(), n);
    assert.equal(revNat.count(), n);
  });

  test('Maglev: the backend is the table\'s entry at hash(tuple) % size, IPv4 and IPv6', (t) => {
    if (skipUnlessRoot(t)) return;
    const table4 = [BE.B4, BE.C4, BE.R4, BE.C4, BE.B4, BE.R4, BE.R4, BE.B4, BE.C4, BE.C4, BE.B4, BE.R4, BE.B4];
    writeService({ id: 9, vip: VIP4, port: 80, proto: TCP, backends: [BE.B4, BE.C4, BE.R4], flags: LB_FLAGS.MAGLEV, maglevSize: table4.length });
    writeMaglev(9, table4);
    const table6 = [BE.B6, BE.C6, BE.C6, BE.R6, BE.B6, BE.R6, BE.C6];
    writeService({ id: 10, vip: VIP6, port: 80, proto: TCP, backends: [BE.B6, BE.C6, BE.R6], flags: LB_FLAGS.MAGLEV, maglevSize: table6.length });
    writeMaglev(10, table6);
    const seen = new Set<number>();
    for (let sport = 52000; sport < 52040; sport++) {
      const want4 = table4[tupleHash(A.ipv4, VIP4, sport, 80) % table4.length] as number;
      seen.add(want4);
      assert.equal(open(A, VIP4, 80, sport).p.dst, BACKENDS[want4]?.ip, `IPv4 sport ${sport}`);
      const want6 = table6[tupleHash(A.ipv6, VIP6, sport, 80) % table6.length] as number;
      assert.equal(open(A, VIP6, 80, sport).p.dst, norm(BACKENDS[want6]?.ip ?? ''), `IPv6 sport ${sport}`);
    }
    assert.equal(seen.size, 3, 'the connections used every backend');
    // A Maglev service without its table has no backend to give.
    maglev.delete(9);
    assertDropped(from(A, out(A, VIP4, TCP, tcp(52100, 80, SYN))), NO_BACKEND, 'no Maglev table');
  });

  test('sessionAffinity: every connection of a client goes to its first backend, recorded in lb_affinity', (t) => {
    if (skipUnlessRoot(t)) return;
    writeService({ id: 11, vip: VIP4, port: 80, proto: TCP, backends: [BE.B4, BE.C4, BE.R4], flags: LB_FLAGS.AFFINITY, affinityTimeout: 300 });
    const first = open(A, VIP4, 80, 53000).p.dst;
    for (let sport = 53001; sport < 53030; sport++) assert.equal(open(A, VIP4, 80, sport).p.dst, first, `sport ${sport}`);
    const aff = affinity.lookup({ client: addr16(A.ipv4), serviceId: 11, family: famOf(A.ipv4) });
    assert.ok(aff);
    assert.equal(BACKENDS[aff.backendId]?.ip, first);
  });

  test('a terminating backend keeps its connection but gets no new ones', (t) => {
    if (skipUnlessRoot(t)) return;
    const svc: Svc = { id: 12, vip: VIP4, port: 80, proto: TCP, backends: [BE.B4, BE.C4] };
    writeService(svc);
    const x = open(A, VIP4, 80, 54000).p.dst;
    const [xId, otherId] = x === B.ipv4 ? [BE.B4, BE.C4] : [BE.C4, BE.B4];
    // The agent marks it terminating and takes its slot away.
    writeBackend(xId, LB_BACKEND_F_TERMINATING);
    writeService({ ...svc, backends: [otherId] });
    for (let i = 0; i < 3; i++) {
      const r = from(A, out(A, VIP4, TCP, tcp(54000, 80, ACK)));
      assert.equal(r.retval, TC_ACT_REDIRECT);
      assert.equal(frameOf(r, 'existing').dst, x, 'the existing connection stays on the terminating backend');
    }
    const xe = endpointOf(x) as Ep;
    assert.equal(frameOf(from(xe, out(xe, A.ipv4, TCP, tcp(8080, 54000, SYN | ACK))), 'reply').src, VIP4, 'its replies are translated');
    for (let sport = 54001; sport < 54031; sport++) assert.equal(open(A, VIP4, 80, sport).p.dst, BACKENDS[otherId]?.ip, `new connection ${sport}`);
  });

  test('a removed backend: its connection is re-selected (TCP mid-stream then finds no conntrack entry and is dropped; UDP moves on); other connections are untouched', (t) => {
    if (skipUnlessRoot(t)) return;
    const svc: Svc = { id: 13, vip: VIP4, port: 80, proto: TCP, backends: [BE.B4, BE.C4] };
    writeService(svc);
    // Two connections, one on each backend.
    const conns = new Map<string, number>();
    for (let sport = 55000; conns.size < 2 && sport < 55100; sport++) {
      const dst = open(A, VIP4, 80, sport).p.dst;
      if (!conns.has(dst)) conns.set(dst, sport);
    }
    assert.equal(conns.size, 2);
    const xSport = conns.get(B.ipv4) as number;
    const otherSport = conns.get(C.ipv4) as number;
    backends.delete(BE.B4);
    writeService({ ...svc, backends: [BE.C4] });
    // The connection on C does not notice.
    const other = from(A, out(A, VIP4, TCP, tcp(otherSport, 80, ACK)));
    assert.equal(other.retval, TC_ACT_REDIRECT);
    assert.equal(frameOf(other, 'other connection').dst, C.ipv4);
    // The one on B is re-selected to C, where conntrack has no entry for a mid-stream segment.
    assertDropped(from(A, out(A, VIP4, TCP, tcp(xSport, 80, ACK))), CT_CANNOT_CREATE, 'mid-stream segment after re-selection');
    assert.equal(nat.lookup(natKey(A.ipv4, VIP4, TCP, xSport, 80))?.backendId, BE.C4, 'lb_nat now names C');
    assert.equal(revNat.lookup(natKey(B.ipv4, A.ipv4, TCP, 8080, xSport)), undefined, 'the reverse entry of B is gone');
    assert.ok(revNat.lookup(natKey(C.ipv4, A.ipv4, TCP, 8080, xSport)), 'C\'s reverse entry');
    // The client's next SYN on the same tuple connects to C.
    const again = from(A, out(A, VIP4, TCP, tcp(xSport, 80, SYN)));
    assert.equal(again.retval, TC_ACT_REDIRECT);
    assert.equal(frameOf(again, 'new SYN').dst, C.ipv4);

    // UDP: the flow moves to the remaining backend and goes on.
    const usvc: Svc = { id: 14, vip: VIP4, port: 53, proto: UDP, backends: [BE.B4] };
    writeService(usvc);
    assert.equal(open(A, VIP4, 53, 5353, UDP).p.dst, B.ipv4);
    backends.delete(BE.B4);
    writeService({ ...usvc, backends: [BE.C4] });
    const moved = from(A, out(A, VIP4, UDP, udp(5353, 53)));
    assert.equal(moved.retval, TC_ACT_REDIRECT);
    assert.deepEqual([frameOf(moved, 'UDP after removal').dst, frameOf(moved, 'UDP').dport], [C.ipv4, 8080]);
  });

  test('a service without a backend drops with SERVICE_BACKEND_NOT_FOUND', (t) => {
    if (skipUnlessRoot(t)) return;
    writeService({ id: 15, vip: VIP4, port: 80, proto: TCP, backends: [] });
    const e = assertDropped(from(A, out(A, VIP4, TCP, tcp(56000, 80, SYN))), NO_BACKEND, 'empty service');
    assert.deepEqual([e.dstIp, e.dstPort, e.srcEndpoint, e.flags & TRANSLATED], [VIP4, 80, A.id, 0]);
    writeService({ id: 16, vip: VIP6, port: 80, proto: UDP, backends: [] });
    assertDropped(from(A, out(A, VIP6, UDP, udp(56000, 80))), NO_BACKEND, 'empty IPv6 UDP service');
    assert.equal(nat.count(), 0);
    // Another port of the address is no service: untouched, to the stack.
    const other = from(A, out(A, VIP4, TCP, tcp(56001, 81, SYN)));
    assert.equal(other.retval, TC_ACT_OK);
    assert.equal(frameOf(other, 'not a service').dst, VIP4);
  });

  test('policy decides on the backend\'s identity and port: allowing the service address does not allow a denied backend', (t) => {
    if (skipUnlessRoot(t)) return;
    writeService({ id: 17, vip: VIP4, port: 80, proto: TCP, backends: [BE.B4] });
    setFlags(A, F_EGRESS);
    // The service address (world, port 80) is allowed; B's identity on 8080 is not.
    rule(A, 'egress', IDENTITY_WORLD, TCP, 80, 0x1701);
    const e = assertDropped(from(A, out(A, VIP4, TCP, tcp(57000, 80, SYN))), POLICY_DENIED, 'backend not allowed');
    assert.deepEqual(
      [e.flags & (EGRESS | TRANSLATED), e.dstIp, e.dstPort, e.dstIdentity, e.dstEndpoint, e.line],
      [EGRESS | TRANSLATED, B.ipv4, 8080, B.identity, B.id, 17],
    );
    rule(A, 'egress', B.identity, TCP, 8080, 0x1702);
    assert.equal(from(A, out(A, VIP4, TCP, tcp(57001, 80, SYN))).retval, TC_ACT_REDIRECT, 'allowed for B\'s identity on 8080');
    // B's ingress policy: A's identity on 8080.
    setFlags(B, F_INGRESS | F_EGRESS);
    const i = assertDropped(from(A, out(A, VIP4, TCP, tcp(57002, 80, SYN))), POLICY_DENIED, 'B\'s ingress');
    assert.equal(i.flags & INGRESS, INGRESS);
    rule(B, 'ingress', A.identity, TCP, 8080, 0x1703);
    assert.equal(from(A, out(A, VIP4, TCP, tcp(57003, 80, SYN))).retval, TC_ACT_REDIRECT);
    // B's reply passes as a reply although B's egress allows nothing.
    const reply = from(B, out(B, A.ipv4, TCP, tcp(8080, 57003, SYN | ACK)));
    assert.equal(reply.retval, TC_ACT_REDIRECT);
    assert.equal(frameOf(reply, 'reply').src, VIP4);
  });

  test('IPv6: TCP and UDP translated both ways with valid checksums', (t) => {
    if (skipUnlessRoot(t)) return;
    writeService({ id: 18, vip: VIP6, port: 80, proto: TCP, backends: [BE.B6, BE.C6] });
    const { r, p } = open(A, VIP6, 80, 58000);
    assert.equal(r.retval, TC_ACT_REDIRECT);
    const be = endpointOf(p.dst) as Ep;
    assert.ok(be === B || be === C, p.dst);
    assert.deepEqual([p.src, p.dport, p.ttl, p.ethDst], [norm(A.ipv6), 8080, 63, be.mac]);
    assert.equal(only(r.events, FLOW_EVENT_TRACE).flags, REPLY_KNOWN | TRANSLATED);
    const next = from(A, out(A, VIP6, TCP, tcp(58000, 80, ACK)));
    assert.equal(frameOf(next, 'next').dst, norm(be.ipv6));
    const reply = from(be, out(be, A.ipv6, TCP, tcp(8080, 58000, SYN | ACK)));
    assert.equal(reply.retval, TC_ACT_REDIRECT);
    const q = frameOf(reply, 'IPv6 reply');
    assert.deepEqual([q.src, q.sport, q.dst, q.dport], [norm(VIP6), 80, norm(A.ipv6), 58000]);

    writeService({ id: 19, vip: VIP6, port: 53, proto: UDP, backends: [BE.C6] });
    const u = open(A, VIP6, 53, 5300, UDP).p;
    assert.deepEqual([u.dst, u.dport], [norm(C.ipv6), 8080]);
    const ureply = from(C, out(C, A.ipv6, UDP, udp(8080, 5300)));
    assert.equal(ureply.retval, TC_ACT_REDIRECT);
    const uq = frameOf(ureply, 'IPv6 UDP reply');
    assert.deepEqual([uq.src, uq.sport], [norm(VIP6), 53]);
  });

  test('UDP over IPv4 without a checksum keeps none; a backend port of 0 keeps the service port', (t) => {
    if (skipUnlessRoot(t)) return;
    writeService({ id: 20, vip: VIP4, port: 53, proto: UDP, backends: [BE.B4] });
    const bare = eth(A.hostMac, A.mac, 0x0800, ipv4(A.ipv4, VIP4, UDP, udp(5400, 53)));
    const r = from(A, bare);
    assert.equal(r.retval, TC_ACT_REDIRECT);
    const p = frameOf(r, 'no checksum');
    assert.deepEqual([p.dst, p.dport, p.l4Checksum], [B.ipv4, 8080, 0]);
    writeService({ id: 21, vip: VIP4, port: 80, proto: TCP, backends: [BE.B4_PORT0] });
    assert.deepEqual([open(A, VIP4, 80, 5401).p.dst, open(A, VIP4, 80, 5402).p.dport], [B.ipv4, 80]);
  });

  test('hairpin: a client that is its own backend gets the service address as source, and its reply goes back to itself from the service', (t) => {
    if (skipUnlessRoot(t)) return;
    writeService({ id: 22, vip: VIP4, port: 80, proto: TCP, backends: [BE.A4] });
    setFlags(A, F_INGRESS | F_EGRESS);
    rule(A, 'egress', A.identity, TCP, 8080, 0x2201);
    rule(A, 'ingress', A.identity, TCP, 8080, 0x2202);
    const { r, p } = open(A, VIP4, 80, 59000);
    assert.equal(r.retval, TC_ACT_REDIRECT, 'back into A');
    assert.deepEqual([p.src, p.sport, p.dst, p.dport, p.ethDst], [VIP4, 59000, A.ipv4, 8080, A.mac], 'SNAT to the service address, DNAT to A');
    const trace = only(r.events, FLOW_EVENT_TRACE);
    assert.deepEqual([trace.srcIdentity, trace.dstIdentity, trace.dstEndpoint, trace.flags & TRANSLATED], [A.identity, A.identity, A.id, TRANSLATED]);
    assert.equal(nat.lookup(natKey(A.ipv4, VIP4, TCP, 59000, 80))?.flags, LB_NAT_F_HAIRPIN);
    assert.ok(revNat.lookup(natKey(A.ipv4, VIP4, TCP, 8080, 59000)), 'reverse entry keyed by A → service address');
    assert.ok(ct.lookup(ctKeyOf(VIP4, A.ipv4, TCP, 59000, 8080)), 'conntrack tracks service address → A');
    const reply = from(A, out(A, VIP4, TCP, tcp(8080, 59000, SYN | ACK)));
    assert.equal(reply.retval, TC_ACT_REDIRECT);
    const q = frameOf(reply, 'hairpin reply');
    assert.deepEqual([q.src, q.sport, q.dst, q.dport, q.ethDst], [VIP4, 80, A.ipv4, 59000, A.mac]);
    assert.equal(only(reply.events, FLOW_EVENT_TRACE).flags, REPLY_KNOWN | IS_REPLY | TRANSLATED);
    // A policy revision re-checks the connection with A as its source (not the service address's world identity).
    writePolicyRevision(h.state, 2);
    const later = from(A, out(A, VIP4, TCP, tcp(59000, 80, ACK)));
    assert.equal(later.retval, TC_ACT_REDIRECT, 're-checked and still allowed');
    assert.equal(ct.lookup(ctKeyOf(VIP4, A.ipv4, TCP, 59000, 8080))?.srcIdentity, A.identity);

    // A client port that is also a port of the service address: the reply is still a reply.
    writeService({ id: 23, vip: VIP4, port: 59001, proto: TCP, backends: [BE.B4] });
    assert.equal(open(A, VIP4, 80, 59001).p.src, VIP4);
    const collide = from(A, out(A, VIP4, TCP, tcp(8080, 59001, SYN | ACK)));
    assert.equal(collide.retval, TC_ACT_REDIRECT);
    assert.deepEqual([frameOf(collide, 'colliding reply').dst, frameOf(collide, 'colliding reply').sport], [A.ipv4, 80]);

    // IPv6 hairpin.
    writeService({ id: 24, vip: VIP6, port: 80, proto: TCP, backends: [BE.A6] });
    setFlags(A, 0);
    const h6 = open(A, VIP6, 80, 59100).p;
    assert.deepEqual([h6.src, h6.dst, h6.dport], [norm(VIP6), norm(A.ipv6), 8080]);
    const r6 = frameOf(from(A, out(A, VIP6, TCP, tcp(8080, 59100, SYN | ACK))), 'IPv6 hairpin reply');
    assert.deepEqual([r6.src, r6.sport, r6.dst, r6.dport], [norm(VIP6), 80, norm(A.ipv6), 59100]);
  });

  test('a backend elsewhere: the SYN goes to the stack DNATed; its reply, coming from the stack, is translated in to_endpoint', (t) => {
    if (skipUnlessRoot(t)) return;
    writeService({ id: 25, vip: VIP4, port: 80, proto: TCP, backends: [BE.R4] });
    const { r, p } = open(A, VIP4, 80, 60000);
    assert.equal(r.retval, TC_ACT_OK);
    assert.deepEqual([p.dst, p.dport], [R.ipv4, 8080]);
    const reply = to(A, inbound(A, R.ipv4, TCP, tcp(8080, 60000, SYN | ACK)));
    assert.equal(reply.retval, TC_ACT_OK);
    const q = frameOf(reply, 'reply from the stack');
    assert.deepEqual([q.src, q.sport, q.dst, q.dport], [VIP4, 80, A.ipv4, 60000]);
    assert.deepEqual([only(reply.events, FLOW_EVENT_TRACE).flags, only(reply.events, FLOW_EVENT_TRACE).line], [REPLY_KNOWN | IS_REPLY | TRANSLATED, 25]);
    // Traffic from R that is no reply of a translated connection is left alone.
    const plain = to(A, inbound(A, R.ipv4, TCP, tcp(8080, 60001, SYN)));
    assert.equal(plain.retval, TC_ACT_OK);
    assert.equal(frameOf(plain, 'plain').src, R.ipv4);

    writeService({ id: 26, vip: VIP6, port: 80, proto: TCP, backends: [BE.R6] });
    assert.equal(open(A, VIP6, 80, 60002).p.dst, norm(R.ipv6));
    const q6 = frameOf(to(A, inbound(A, R.ipv6, TCP, tcp(8080, 60002, SYN | ACK))), 'IPv6 reply from the stack');
    assert.deepEqual([q6.src, q6.sport], [norm(VIP6), 80]);
  });

  test('NodePort from outside (from_netdev on a host device): DNAT into a local backend keeping the client address; the reply leaves through that device from the node address and node port', (t) => {
    if (skipUnlessRoot(t)) return;
    const netdev = hostDevice(t);
    const outside = (client: string, dst: string, proto: number, l4: Buffer): Buffer => (dst.includes(':')
      ? eth(DEV.mac, CLIENT_MAC, 0x86dd, ipv6(client, dst, proto, withL4Checksum(client, dst, proto, l4)))
      : eth(DEV.mac, CLIENT_MAC, 0x0800, ipv4(client, dst, proto, withL4Checksum(client, dst, proto, l4))));
    writeService({ id: 40, vip: NODE4, port: 30080, proto: TCP, backends: [BE.B4, BE.C4], flags: LB_FLAGS.NODEPORT });

    const r = netdev(outside(CLIENT4, NODE4, TCP, tcp(41000, 30080, SYN)));
    assert.equal(r.retval, TC_ACT_REDIRECT, `into the backend (events ${JSON.stringify(r.events.map((e) => e.dropReasonName))})`);
    const p = frameOf(r, 'NodePort SYN');
    const be = endpointOf(p.dst);
    assert.ok(be === B || be === C, `DNAT to B or C, got ${p.dst}`);
    assert.deepEqual([p.src, p.sport, p.dport, p.ethDst, p.ttl], [CLIENT4, 41000, 8080, be.mac, 63], 'the client address is kept (no SNAT)');
    const trace = only(r.events, FLOW_EVENT_TRACE);
    assert.deepEqual([trace.flags, trace.line, trace.srcIdentity, trace.dstEndpoint, trace.obsPointName], [REPLY_KNOWN | TRANSLATED, 40, IDENTITY_WORLD, be.id, 'TO_ENDPOINT']);
    assert.equal(revNat.lookup(natKey(be.ipv4, CLIENT4, TCP, 8080, 41000))?.ifindex, DEV.ifindex, 'the reply entry names the device');
    assert.equal(ct.lookup(ctKeyOf(CLIENT4, be.ipv4, TCP, 41000, 8080))?.flags, CT_FLAGS.SERVICE);

    const reply = from(be, out(be, CLIENT4, TCP, tcp(8080, 41000, SYN | ACK)));
    assert.equal(reply.retval, TC_ACT_REDIRECT, 'out of the device (bpf_redirect_neigh), not to the stack');
    const q = frameOf(reply, 'NodePort reply');
    assert.deepEqual([q.src, q.sport, q.dst, q.dport, q.ttl], [NODE4, 30080, CLIENT4, 41000, 63]);
    const rt = only(reply.events, FLOW_EVENT_TRACE);
    assert.deepEqual([rt.flags, rt.line, rt.obsPointName], [REPLY_KNOWN | IS_REPLY | TRANSLATED, 40, 'TO_NETWORK']);
    // The next packet of the connection keeps its backend.
    assert.equal(frameOf(netdev(outside(CLIENT4, NODE4, TCP, tcp(41000, 30080, ACK))), 'ACK').dst, be.ipv4);

    // A ClusterIP frontend is not reachable from outside; other traffic to the node passes untouched.
    writeService({ id: 41, vip: VIP4, port: 80, proto: TCP, backends: [BE.B4] });
    for (const [dst, port] of [[VIP4, 80], [NODE4, 22], [NODE4, 30081]] as const) {
      const frame = outside(CLIENT4, dst, TCP, tcp(41001, port, SYN));
      const pass = netdev(frame);
      assert.equal(pass.retval, TC_ACT_OK, `${dst}:${port} goes to the stack`);
      assert.ok(pass.data.equals(frame), `${dst}:${port} untouched`);
      assert.equal(pass.events.length, 0);
    }
    // UDP and IPv6.
    writeService({ id: 42, vip: NODE6, port: 30053, proto: UDP, backends: [BE.B6], flags: LB_FLAGS.NODEPORT });
    const u = netdev(outside(CLIENT6, NODE6, UDP, udp(41002, 30053)));
    assert.equal(u.retval, TC_ACT_REDIRECT);
    assert.deepEqual([frameOf(u, 'IPv6 UDP').dst, frameOf(u, 'IPv6 UDP').dport], [norm(B.ipv6), 8080]);
    const uq = frameOf(from(B, out(B, CLIENT6, UDP, udp(8080, 41002))), 'IPv6 UDP reply');
    assert.deepEqual([uq.src, uq.sport, uq.ttl], [norm(NODE6), 30053, 63]);

    // The backend's ingress policy decides with the client's identity (world).
    setFlags(B, F_INGRESS);
    writeService({ id: 43, vip: NODE4, port: 30090, proto: TCP, backends: [BE.B4], flags: LB_FLAGS.NODEPORT });
    const denied = assertDropped(netdev(outside(CLIENT4, NODE4, TCP, tcp(41003, 30090, SYN))), POLICY_DENIED, 'world without an ingress rule');
    assert.deepEqual([denied.dstIp, denied.dstPort], [B.ipv4, 8080], 'the drop names the backend');
    rule(B, 'ingress', IDENTITY_WORLD, TCP, 8080, 77);
    assert.equal(netdev(outside(CLIENT4, NODE4, TCP, tcp(41004, 30090, SYN))).retval, TC_ACT_REDIRECT, 'allowed once world may reach 8080');

    // A backend that is no endpoint on this node cannot be reached from outside.
    writeService({ id: 44, vip: NODE4, port: 30091, proto: TCP, backends: [BE.R4], flags: LB_FLAGS.NODEPORT });
    assertDropped(netdev(outside(CLIENT4, NODE4, TCP, tcp(41005, 30091, SYN))), NOT_LOCAL, 'remote backend');
  });

  test('fragments: a UDP datagram to a service is translated as a whole (head: address, port, checksum; tail: the same backend address) and so is its fragmented reply, IPv4 and IPv6; a tail without its head is dropped', (t) => {
    if (skipUnlessRoot(t)) return;
    /** Runs the fragments of one UDP datagram from `ep` to dst:dport; returns the reassembled datagram as it left. */
    const sendFragmented = (ep: Ep, src: string, dst: string, sport: number, dport: number, id: number): { retvals: number[]; src: string; dst: string; l4: Buffer; ipOk: boolean } => {
      const l4 = withL4Checksum(src, dst, UDP, udp(sport, dport, Buffer.from(Array.from({ length: 2500 }, (_, i) => i & 0xff))));
      const type = src.includes(':') ? 0x86dd : 0x0800;
      const runs = fragmentDatagram(src, dst, UDP, l4, id, 1000).map((ip) => from(ep, eth(ep.hostMac, ep.mac, type, ip)));
      const parts = runs.map((r) => parseFragment(r.data)).sort((a, b) => a.offset - b.offset);
      const first = parts[0] as ReturnType<typeof parseFragment>;
      assert.ok(parts.every((f) => f.src === first.src && f.dst === first.dst), `every fragment of ${dst}:${dport} got the same addresses: ${JSON.stringify(parts.map((f) => [f.src, f.dst]))}`);
      return { retvals: runs.map((r) => r.retval), src: first.src, dst: first.dst, l4: Buffer.concat(parts.map((f) => f.payload)), ipOk: parts.every((f) => f.ipChecksumOk) };
    };
    const l4Ok = (src: string, dst: string, l4: Buffer): boolean => (src.includes(':')
      ? ipv6L4Checksum(Buffer.from(parseIPv6(src)), Buffer.from(parseIPv6(dst)), UDP, l4)
      : ipv4L4Checksum(Buffer.from(src.split('.').map(Number)), Buffer.from(dst.split('.').map(Number)), UDP, l4)) === 0;

    for (const [v, vip, be, id, client, sport] of [[4, VIP4, BE.B4, 1, A.ipv4, 47000], [6, VIP6, BE.B6, 2, A.ipv6, 47001]] as const) {
      writeService({ id: 50 + id, vip, port: 53, proto: UDP, backends: [be] });
      const q = sendFragmented(A, client, vip, sport, 53, 0x4000 + id);
      assert.deepEqual(q.retvals, [TC_ACT_REDIRECT, TC_ACT_REDIRECT, TC_ACT_REDIRECT], `IPv${v}: every fragment into the backend`);
      const backend = v === 4 ? B.ipv4 : norm(B.ipv6);
      assert.deepEqual([q.dst, q.l4.readUInt16BE(2), q.ipOk], [backend, 8080, true], `IPv${v}: DNAT of every fragment, the port in the head`);
      assert.ok(l4Ok(q.src, q.dst, q.l4), `IPv${v}: the reassembled datagram's UDP checksum verifies with the backend's address`);
      assert.equal(q.l4.length, 2508);

      const a = sendFragmented(B, v === 4 ? B.ipv4 : B.ipv6, client, 8080, sport, 0x5000 + id);
      assert.deepEqual(a.retvals, [TC_ACT_REDIRECT, TC_ACT_REDIRECT, TC_ACT_REDIRECT], `IPv${v}: every fragment of the reply into the client`);
      assert.deepEqual([a.src, a.l4.readUInt16BE(0), a.ipOk], [v === 4 ? VIP4 : norm(VIP6), 53, true], `IPv${v}: the reply comes from the service`);
      assert.ok(l4Ok(a.src, a.dst, a.l4), `IPv${v}: the reply's checksum verifies`);
      assert.equal(ct.lookup(ctKeyOf(client, v === 4 ? B.ipv4 : B.ipv6, UDP, sport, 8080))?.packetsRev, 3, `IPv${v}: all reply fragments on the connection`);

      // The tail of a datagram to the service whose head was never seen: not translated anywhere.
      const l4 = udp(sport + 10, 53, Buffer.alloc(2500, 1));
      const tail = fragmentDatagram(client, vip, UDP, l4, 0x6000 + id, 1000).slice(1);
      for (const ip of tail) {
        const r = from(A, eth(A.hostMac, A.mac, v === 4 ? 0x0800 : 0x86dd, ip));
        assertDropped(r, FRAG_NOT_FOUND, `IPv${v}: a tail without its head`);
      }
    }
  });

  test('ICMP errors about translated connections are translated too: a backend\'s port unreachable reaches the client quoting the service (ClusterIP and NodePort, IPv4 and IPv6); a router\'s packet too big for a NodePort reply reaches the backend quoting it', (t) => {
    if (skipUnlessRoot(t)) return;
    const netdev = hostDevice(t);
    /** The IP packet `ep` received (the translated frame) as an ICMP error would quote it: header and 8 bytes. */
    const quoteOf = (frame: Buffer): Buffer => {
      const ip = frame.subarray(14);
      const hl = frame.readUInt16BE(12) === 0x0800 ? ((ip[0] as number) & 0x0f) * 4 : 40;
      return Buffer.from(ip.subarray(0, hl + 8));
    };
    const unreachable = (v6: boolean): [number, number] => (v6 ? [1, 4] : [3, 3]);
    const typeOf = (ip: string): number => (ip.includes(':') ? 0x86dd : 0x0800);

    // ClusterIP, per packet: A → service → B; B's stack answers "port unreachable".
    for (const [vip, be, client, sport] of [[VIP4, BE.B4, A.ipv4, 48000], [VIP6, BE.B6, A.ipv6, 48001]] as const) {
      const v6 = vip.includes(':');
      writeService({ id: 60 + (v6 ? 1 : 0), vip, port: 53, proto: UDP, backends: [be] });
      const q = from(A, out(A, vip, UDP, udp(sport, 53)));
      assert.equal(q.retval, TC_ACT_REDIRECT);
      const bAddr = v6 ? B.ipv6 : B.ipv4;
      const err = from(B, eth(B.hostMac, B.mac, typeOf(vip), icmpError(bAddr, client, ...unreachable(v6), quoteOf(q.data))));
      assert.equal(err.retval, TC_ACT_REDIRECT, `IPv${v6 ? 6 : 4}: the error goes into the client (events ${JSON.stringify(err.events.map((e) => e.dropReasonName))})`);
      const e = parseIcmpError(err.data);
      assert.deepEqual(
        [e.src, e.dst, e.quote.src, e.quote.dst, e.quote.sport, e.quote.dport, e.icmpChecksumOk, e.quote.ipChecksumOk],
        [norm(vip), norm(client), norm(client), norm(vip), sport, 53, true, true],
        `IPv${v6 ? 6 : 4}: from the service, quoting the client's packet to the service, checksums right`,
      );
      assert.equal(only(err.events, FLOW_EVENT_TRACE).flags & TRANSLATED, TRANSLATED);
    }

    // NodePort from outside: the error leaves through the device, from the node address.
    for (const [node, client, be, sport] of [[NODE4, CLIENT4, BE.B4, 48010], [NODE6, CLIENT6, BE.B6, 48011]] as const) {
      const v6 = node.includes(':');
      writeService({ id: 70 + (v6 ? 1 : 0), vip: node, port: 30053, proto: UDP, backends: [be], flags: LB_FLAGS.NODEPORT });
      const l4 = withL4Checksum(client, node, UDP, udp(sport, 30053));
      const q = netdev(eth(DEV.mac, CLIENT_MAC, typeOf(node), v6 ? ipv6(client, node, UDP, l4) : ipv4(client, node, UDP, l4)));
      assert.equal(q.retval, TC_ACT_REDIRECT, 'into the backend');
      const bAddr = v6 ? B.ipv6 : B.ipv4;
      const err = from(B, eth(B.hostMac, B.mac, typeOf(node), icmpError(bAddr, client, ...unreachable(v6), quoteOf(q.data))));
      assert.equal(err.retval, TC_ACT_REDIRECT, 'out of the device');
      assert.equal(only(err.events, FLOW_EVENT_TRACE).obsPointName, 'TO_NETWORK');
      const e = parseIcmpError(err.data);
      assert.deepEqual(
        [e.src, e.quote.dst, e.quote.dport, e.quote.src, e.icmpChecksumOk, e.quote.ipChecksumOk],
        [norm(node), norm(node), 30053, norm(client), true, true],
        `IPv${v6 ? 6 : 4}: the outside client sees an error from the node port it used`,
      );

      // A router between the node and the client: "packet too big" about the reply (node:30053 → client).
      const reply = from(B, out(B, client, UDP, udp(8080, sport)));
      assert.equal(reply.retval, TC_ACT_REDIRECT);
      const router = v6 ? 'fd99:246::1' : '10.199.246.1';
      const [type, code] = v6 ? [2, 0] : [3, 4];
      const ptb = netdev(eth(DEV.mac, CLIENT_MAC, typeOf(node), icmpError(router, node, type, code, quoteOf(reply.data))));
      assert.equal(ptb.retval, TC_ACT_REDIRECT, `IPv${v6 ? 6 : 4}: the router's error goes into the backend (events ${JSON.stringify(ptb.events.map((x) => x.dropReasonName))})`);
      const p = parseIcmpError(ptb.data);
      assert.deepEqual(
        [p.src, p.dst, p.quote.src, p.quote.sport, p.quote.dst, p.quote.dport, p.icmpChecksumOk, p.quote.ipChecksumOk],
        [norm(router), norm(bAddr), norm(bAddr), 8080, norm(client), sport, true, true],
        `IPv${v6 ? 6 : 4}: to the backend, quoting its own reply`,
      );
      // The same error about a port nobody connected from passes to the node's stack untouched.
      const stray = eth(DEV.mac, CLIENT_MAC, typeOf(node), icmpError(router, node, type, code, quoteOf(out(B, client, UDP, udp(8080, sport + 100)).subarray(0))));
      const s2 = netdev(stray);
      assert.equal(s2.retval, TC_ACT_OK);
      assert.ok(s2.data.equals(stray), 'untouched');
    }
  });

  test('figures: ns per packet under test_run, an established connection through a service vs directly (diagnostic only)', (t) => {
    if (skipUnlessRoot(t)) return;
    writeService({ id: 27, vip: VIP4, port: 80, proto: TCP, backends: [BE.B4] });
    assert.equal(from(A, out(A, B.ipv4, TCP, tcp(61000, 8080, SYN))).retval, TC_ACT_REDIRECT);
    assert.equal(from(A, out(A, VIP4, TCP, tcp(61001, 80, SYN))).retval, TC_ACT_REDIRECT);
    const plain = out(A, B.ipv4, TCP, tcp(61000, 8080, ACK));
    const viaService = out(A, VIP4, TCP, tcp(61001, 80, ACK));
    const reply = out(B, A.ipv4, TCP, tcp(8080, 61001, ACK));
    const replyPlain = out(B, A.ipv4, TCP, tcp(8080, 61000, ACK));
    const n = 5000;
    // The kernel's own run-time statistics (BPF_ENABLE_STATS while the fd is open): the programs' time
    // alone, without test_run's set-up of each skb.
    const statsFd = bpf(32 /* BPF_ENABLE_STATS */, Buffer.alloc(8) /* BPF_STATS_RUN_TIME */);
    if (statsFd < 0) {
      t.diagnostic('BPF_ENABLE_STATS unavailable: no figures');
      return;
    }
    const prog = h.dp.program('from_endpoint');
    const measure = (ep: Ep, frame: Buffer): number => inNetns(h.runNs.path, () => {
      const ctx = skbCtx(ep.ifindex);
      const before = prog.info();
      for (let i = 0; i < n; i++) prog.testRun({ data: frame, ctx, ctxOutSize: 256 });
      const after = prog.info();
      return Math.round((after.runTimeNs - before.runTimeNs) / (after.runCount - before.runCount));
    });
    let figures: Record<string, number>;
    try {
      figures = {
        plain: measure(A, plain), service: measure(A, viaService), replyPlain: measure(B, replyPlain), replyService: measure(B, reply),
      };
    } finally {
      closeFd(statsFd);
    }
    h.rb.skip();
    t.diagnostic(`ns/packet (kernel run-time stats; established TCP ACK, from_endpoint): ${JSON.stringify(figures)}`);
  });
});

// ---------------------------------------------------------------------------
// Real traffic: processes in endpoint namespaces (not in any agent cgroup) reach
// services through the attached endpoint programs alone.

type RealEp = VethEndpoint;

const ROUTER4 = '10.199.250.1';
const ROUTER6 = 'fd99:250::1';

/** Echo servers on every address, TCP (port) and UDP (port + 1); each accepted peer is printed as `peer ADDR`. */
const ECHO_SERVER = `
const net = require('net');
const dgram = require('dgram');
const p = JSON.parse(process.argv[1]);
const srv = net.createServer((s) => { console.log('peer ' + s.remoteAddress.replace(/^::ffff:/, '')); s.on('error', () => {}); s.pipe(s); });
srv.on('error', (e) => { console.error(e.message); process.exit(2); });
const u = dgram.createSocket({ type: 'udp6', ipv6Only: false });
u.on('message', (m, r) => u.send(m, r.port, r.address));
srv.listen({ port: p.port, host: '::', ipv6Only: false }, () => u.bind(p.port + 1, '::', () => console.log('listening')));
`;

/** `count` TCP connections to addr:port one after another, `bytes` echoed each; then UDP datagrams on a connected socket to udpPort. */
const SERVICE_CLIENT = `
const net = require('net');
const dgram = require('dgram');
const p = JSON.parse(process.argv[1]);
const out = { ok: 0, remote: [], udp: 0, errors: [] };
const one = () => new Promise((resolve) => {
  const sent = Buffer.alloc(p.bytes, 0x5a);
  let got = 0;
  const s = net.connect({ host: p.addr, port: p.port }, () => { out.remote.push(s.remoteAddress + ':' + s.remotePort); s.end(sent); });
  const t = setTimeout(() => { out.errors.push('timeout'); s.destroy(); resolve(); }, 3000);
  s.on('data', (d) => { got += d.length; });
  s.on('close', () => { clearTimeout(t); if (got === p.bytes) out.ok++; resolve(); });
  s.on('error', (e) => { out.errors.push(e.message); });
});
(async () => {
  for (let i = 0; i < p.count; i++) await one();
  if (p.udpPort) {
    const u = dgram.createSocket(p.addr.includes(':') ? 'udp6' : 'udp4');
    u.on('message', () => { out.udp++; });
    u.connect(p.udpPort, p.addr, () => { for (let i = 0; i < 3; i++) u.send(Buffer.from('ping' + i)); });
    await new Promise((r) => setTimeout(r, 500));
    u.close();
  }
  console.log(JSON.stringify(out));
  process.exit(0);
})();
`;

describe('per-packet service load balancing: real traffic between endpoint namespaces', () => {
  let node: Netns;
  let fs: TempBpffs;
  let pinDir: string;
  let dp: EndpointDatapath;
  const eps: RealEp[] = [];
  const servers: ChildProcess[] = [];
  const peers = new Map<number, string[]>();
  let services: BpfMap<LbServiceKey, LbService>;
  let backends: BpfMap<number, LbBackend>;
  let rb: RingBuffer;


  function service(id: number, vip: string, port: number, proto: number, backendIds: number[]): void {
    const key = { addr: addr16(vip), port, proto, family: famOf(vip), slot: 0 };
    services.update(key, { backendId: 0, serviceId: id, count: backendIds.length, flags: 0, affinityTimeout: 0, maglevSize: 0 });
    backendIds.forEach((b, i) => services.update({ ...key, slot: i + 1 }, { backendId: b, serviceId: 0, count: 0, flags: 0, affinityTimeout: 0, maglevSize: 0 }));
  }

  async function client(ep: RealEp, params: object): Promise<{ ok: number; remote: string[]; udp: number; errors: string[] }> {
    const child = ep.ns.spawn([process.execPath, '-e', SERVICE_CLIENT, JSON.stringify(params)], { env: childEnv() });
    let stdout = '';
    let stderr = '';
    child.stdout?.setEncoding('utf8').on('data', (d: string) => { stdout += d; });
    child.stderr?.setEncoding('utf8').on('data', (d: string) => { stderr += d; });
    const timer = setTimeout(() => child.kill('SIGKILL'), 30_000);
    await new Promise((resolve) => child.once('close', resolve));
    clearTimeout(timer);
    const line = stdout.trim().split('\n').pop() ?? '';
    try {
      return JSON.parse(line) as { ok: number; remote: string[]; udp: number; errors: string[] };
    } catch {
      throw new Error(`client gave no result: ${stdout}${stderr}`);
    }
  }

  before(async () => {
    if (!isRoot) return;
    fs = mountTempBpffs();
    cleanup.add(() => fs.unmount(), 'bpffs (real traffic)');
    pinDir = join(fs.path, 'waggle');
    const made = vethEndpoints(cleanup, { prefix: 'wg-lb', ifPrefix: 'wlb', count: 3, idBase: 120, address: (i) => ({ ipv4: `10.199.232.${10 + i}`, ipv6: `fd99:232::${10 + i}` }) });
    node = made.node;
    eps.push(...made.eps);
    dp = loadEndpointDatapath({ pinDir, routerIpv4: ROUTER4, routerIpv6: ROUTER6 });
    cleanup.add(() => dp.close(), 'endpoint datapath (real traffic)');
    const map = endpointsMap(pinDir);
    try {
      for (const ep of eps) {
        const cfg = { endpointId: ep.id, hostIfindex: ep.hostIfindex, ipv4: ep.ipv4, ipv6: ep.ipv6, mac: ep.mac, hostMac: ep.hostMac, identity: 5000 + ep.id };
        const att = inNetns(node.path, () => attachEndpoint(dp, cfg));
        cleanup.add(() => { detachEndpointPrograms(pinDir, ep.id); }, `links of endpoint ${ep.id}`);
        att.ingress.close();
        att.egress.close();
        const info = { ifindex: ep.hostIfindex, endpointId: ep.id, mac: ep.mac, nodeMac: ep.hostMac, flags: 0, identity: 5000 + ep.id };
        map.update(ep.ipv4, info);
        map.update(ep.ipv6, info);
        ep.ns.exec(['ip', 'addr', 'add', `${ep.ipv4}/32`, 'dev', 'eth0']);
        ep.ns.exec(['ip', '-6', 'addr', 'add', `${ep.ipv6}/128`, 'dev', 'eth0', 'nodad']);
        ep.ns.exec(['ip', 'route', 'add', ROUTER4, 'dev', 'eth0', 'scope', 'link']);
        ep.ns.exec(['ip', 'route', 'add', 'default', 'via', ROUTER4]);
        ep.ns.exec(['ip', '-6', 'route', 'add', ROUTER6, 'dev', 'eth0']);
        ep.ns.exec(['ip', '-6', 'route', 'add', 'default', 'via', ROUTER6]);
      }
    } finally {
      map.close();
    }
    services = BpfMap.openPinned(join(pinDir, 'lb_services'), lbServiceKey, lbService);
    cleanup.add(() => services.close(), 'lb_services (real traffic)');
    backends = BpfMap.openPinned(join(pinDir, 'lb_backends'), u32, lbBackend);
    cleanup.add(() => backends.close(), 'lb_backends (real traffic)');
    rb = openEvents(pinDir);
    cleanup.add(() => rb.close(), 'events reader (real traffic)');
    // Echo servers on port 8080 (TCP) and 8081 (UDP) in endpoints 2 and 3.
    for (const ep of eps.slice(1)) {
      const child = ep.ns.spawn([process.execPath, '-e', ECHO_SERVER, JSON.stringify({ port: 8080 })], { env: childEnv() });
      servers.push(child);
      cleanup.add(() => stop(child), `echo server in endpoint ${ep.id}`);
      const seen: string[] = [];
      peers.set(ep.id, seen);
      await new Promise<void>((resolve, reject) => {
        let buf = '';
        const timer = setTimeout(() => reject(new Error('echo server did not start')), 10_000);
        child.stdout?.setEncoding('utf8').on('data', (d: string) => {
          buf += d;
          for (const m of d.matchAll(/peer (\S+)/g)) seen.push(m[1] as string);
          if (buf.includes('listening')) {
            clearTimeout(timer);
            resolve();
          }
        });
        child.once('exit', (code) => reject(new Error(`echo server exited ${code}`)));
      });
    }
  });

  test('TCP and UDP to IPv4 and IPv6 services from an endpoint: spread over both backends, the client sees the service address, the backends the client\'s', async (t) => {
    if (skipUnlessRoot(t)) return;
    const [e1, e2, e3] = eps as [RealEp, RealEp, RealEp];
    const vip4 = '10.199.242.10';
    const vip6 = 'fd99:242::10';
    const ids = { e2v4: 101, e3v4: 102, e2v6: 103, e3v6: 104, e2u4: 105, e3u4: 106, e2u6: 107, e3u6: 108 };
    const be = (id: number, ip: string, port: number, proto: number): void => backends.update(id, { addr: addr16(ip), port, proto, family: famOf(ip), flags: 0 });
    be(ids.e2v4, e2.ipv4, 8080, TCP);
    be(ids.e3v4, e3.ipv4, 8080, TCP);
    be(ids.e2v6, e2.ipv6, 8080, TCP);
    be(ids.e3v6, e3.ipv6, 8080, TCP);
    be(ids.e2u4, e2.ipv4, 8081, UDP);
    be(ids.e3u4, e3.ipv4, 8081, UDP);
    be(ids.e2u6, e2.ipv6, 8081, UDP);
    be(ids.e3u6, e3.ipv6, 8081, UDP);
    service(201, vip4, 80, TCP, [ids.e2v4, ids.e3v4]);
    service(202, vip6, 80, TCP, [ids.e2v6, ids.e3v6]);
    service(203, vip4, 53, UDP, [ids.e2u4, ids.e3u4]);
    service(204, vip6, 53, UDP, [ids.e2u6, ids.e3u6]);
    rb.skip();
    for (const [vip, v] of [[vip4, 4], [vip6, 6]] as const) {
      for (const p of peers.values()) p.length = 0;
      const r = await client(e1, { addr: vip, port: 80, count: 20, bytes: 20_000, udpPort: 53 });
      assert.equal(r.ok, 20, `IPv${v}: 20 connections echoed (${JSON.stringify(r.errors)})`);
      assert.ok(r.remote.every((x) => x === `${vip}:80`), `IPv${v}: the client saw the service address: ${JSON.stringify(r.remote.slice(0, 3))}`);
      assert.equal(r.udp, 3, `IPv${v}: UDP answers arrive from the service address (a connected socket takes nothing else)`);
      const n2 = (peers.get(e2.id) ?? []).length;
      const n3 = (peers.get(e3.id) ?? []).length;
      assert.equal(n2 + n3, 20);
      assert.ok(n2 > 0 && n3 > 0, `IPv${v}: both backends served (${n2} / ${n3})`);
      const client4or6 = v === 4 ? e1.ipv4 : e1.ipv6;
      assert.ok([...(peers.get(e2.id) ?? []), ...(peers.get(e3.id) ?? [])].every((a) => a === client4or6), 'the backends saw the client\'s own address');
    }
    const events = drainEvents(rb);
    const translated = events.filter((e) => e.type === FLOW_EVENT_TRACE && (e.flags & TRANSLATED) !== 0);
    assert.ok(translated.some((e) => e.line === 201 && (e.flags & IS_REPLY) === 0 && e.srcEndpoint === e1.id), 'translated request traces name service 201');
    assert.ok(translated.some((e) => e.line === 201 && (e.flags & IS_REPLY) !== 0), 'translated replies too');
    assert.ok(translated.some((e) => e.line === 204), 'IPv6 UDP service 204');
    assert.ok(!events.some((e) => e.type === FLOW_EVENT_DROP), `no drops: ${JSON.stringify(events.filter((e) => e.type === FLOW_EVENT_DROP).map((e) => [e.dropReasonName, e.srcIp, e.dstIp]))}`);
  });

  test('hairpin: an endpoint reaches a service whose backend is itself, seen by its server as coming from the service address', async (t) => {
    if (skipUnlessRoot(t)) return;
    const e2 = eps[1] as RealEp;
    const vip4 = '10.199.242.20';
    const vip6 = 'fd99:242::20';
    backends.update(301, { addr: addr16(e2.ipv4), port: 8080, proto: TCP, family: famOf(e2.ipv4), flags: 0 });
    backends.update(302, { addr: addr16(e2.ipv6), port: 8080, proto: TCP, family: famOf(e2.ipv6), flags: 0 });
    service(301, vip4, 80, TCP, [301]);
    service(302, vip6, 80, TCP, [302]);
    for (const vip of [vip4, vip6]) {
      const seen = peers.get(e2.id) as string[];
      seen.length = 0;
      const r = await client(e2, { addr: vip, port: 80, count: 3, bytes: 5_000 });
      assert.equal(r.ok, 3, `${vip}: hairpin connections echoed (${JSON.stringify(r.errors)})`);
      assert.ok(r.remote.every((x) => x === `${vip}:80`));
      assert.deepEqual([...new Set(seen)], [norm(vip)], 'the server saw the service address as its peer');
    }
  });
});
